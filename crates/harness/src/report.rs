//! Results: `DIR/<config-stem>-<UTC timestamp>/` with `summary.csv` (one row per run,
//! flushed as each run ends, and written again whole at the end with the floor columns set
//! against the matrix's reference), `histograms/<run_id>.hgrm` and `env.json`.
//! `results/README.md` is the schema.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hdrhistogram::Histogram;

use crate::exit::{write_whole, WriteError};
use crate::floor::Floor;
use crate::runner::{RunOutcome, Status};
use crate::spec::{Column, RunSpec};
use crate::wire::RoleReport;

/// The fixed columns of `summary.csv`, in order. A column never changes meaning.
pub const FIXED_COLUMNS: &[&str] = &[
    "run_id",
    "workload",
    "transport",
    "wait",
    "msg_bytes",
    "params",
    "cores",
    "rep",
    "status",
    "count",
    "duration_s",
    "msgs_per_s",
    "bytes_per_s",
    "p50_ns",
    "p90_ns",
    "p99_ns",
    "p999_ns",
    "max_ns",
    "mean_ns",
    "stdev_ns",
    "floor_ns",
    "ratio_to_floor",
];

/// UTC time as `YYYYMMDDTHHMMSSZ`.
pub fn utc_stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Creates `out/<stem>-<stamp>/` and its `histograms/`.
pub fn create_results_dir(out: &Path, stem: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create output directory {}", out.display()))?;
    let stamp = utc_stamp(SystemTime::now());
    for n in 0..100 {
        let name = if n == 0 {
            format!("{stem}-{stamp}")
        } else {
            format!("{stem}-{stamp}-{n}")
        };
        let dir = out.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::create_dir(dir.join("histograms"))
                    .with_context(|| format!("cannot create {}/histograms", dir.display()))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot create results directory {}", dir.display()))
            }
        }
    }
    anyhow::bail!(
        "cannot find a free results directory name under {}",
        out.display()
    )
}

/// The columns every row has after the workloads' own (added after the first release
/// of the fixed ones, so they come last): each role's CPU use over its measured window.
pub const CPU_COLUMNS: &[Column] = &[
    Column {
        name: "cpu0_pct",
        doc: "the first role's CPU over its window, % of one core",
    },
    Column {
        name: "cpu1_pct",
        doc: "the second role's CPU over its window, % of one core",
    },
    Column {
        name: "cpu_rest_pct",
        doc: "the other roles' CPU summed, % of one core",
    },
];

/// The columns after the CPU ones: the floor a row is compared with, and the host's
/// state around the run.
pub const WATCH_COLUMNS: &[Column] = &[
    Column {
        name: "floor_of",
        doc: "which floor floor_ns is",
    },
    Column {
        name: "floor_before_ns",
        doc: "the cache-line round trip just before the run",
    },
    Column {
        name: "floor_after_ns",
        doc: "the same just after it",
    },
    Column {
        name: "host_moved",
        doc: "1 when the host moved during the run",
    },
    Column {
        name: "retakes",
        doc: "times the run was taken again",
    },
    Column {
        name: "how",
        doc: "how the transport was used: its API, copy or loan, wait, and its own settings",
    },
];

/// The figures of one row.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Messages measured.
    pub count: Option<u64>,
    /// Seconds measured.
    pub duration_s: Option<f64>,
    /// Messages (or round trips) per second.
    pub msgs_per_s: Option<f64>,
    /// Payload bytes per second.
    pub bytes_per_s: Option<f64>,
    /// p50, p90, p99, p99.9, max, mean, stdev (ns).
    pub latency: Option<[f64; 7]>,
    /// The floor this row is compared with, ns.
    pub floor_ns: Option<f64>,
    /// p50 (latency) or time per message (throughput) over `floor_ns`.
    pub ratio: Option<f64>,
    /// Workload columns.
    pub metrics: Vec<(String, f64)>,
    /// Each role's CPU use over its window (percent of one core), in role order.
    pub cpu: Vec<Option<f64>>,
    /// Which floor `floor_ns` is.
    pub floor_of: Option<String>,
    /// For a row whose roles ran on more than one host: the bare TCP round trip between
    /// the same hosts (64 B, p50, ns), its floor in place of the cache-line round trip.
    pub host_floor_ns: Option<f64>,
    /// The host's state around the run: the cache-line round trip just before and just
    /// after it (ns), and whether it moved beyond [`crate::matrix::HOST_MOVED`].
    pub watch: Watch,
}

/// The floor watched around a run, and the retakes it caused.
#[derive(Debug, Clone, Copy, Default)]
pub struct Watch {
    /// The round trip just before the run, ns.
    pub before_ns: Option<f64>,
    /// Just after it, ns.
    pub after_ns: Option<f64>,
    /// Whether the host moved during the run (the kept run, after its retakes).
    pub moved: bool,
    /// Times the run was taken again because the host moved.
    pub retakes: u32,
}

/// Computes a row's figures from the measuring role's report (the first role).
pub fn figures(
    spec: &RunSpec,
    outcome: &RunOutcome,
    floor: Option<&Floor>,
) -> anyhow::Result<(Figures, Option<Histogram<u64>>)> {
    let mut f = Figures::default();
    if outcome.status != Status::Ok {
        return Ok((f, None));
    }
    let Some(Some(report)) = outcome.reports.first() else {
        return Ok((f, None));
    };
    let secs = report.duration_ns as f64 / 1e9;
    f.cpu = outcome
        .reports
        .iter()
        .map(|r| r.as_ref().and_then(|r| r.cpu_pct))
        .collect();
    f.count = Some(report.count);
    f.duration_s = Some(secs);
    if secs > 0.0 {
        f.msgs_per_s = Some(report.count as f64 / secs);
        f.bytes_per_s = Some(report.bytes as f64 / secs);
    }
    // Every role's histogram, merged (pingpong's agents each time the handoffs to them).
    let mut hist = report.histogram()?;
    for other in outcome.reports.iter().skip(1).flatten() {
        match (hist.as_mut(), other.histogram()?) {
            (Some(h), Some(o)) => {
                h.add(&o)
                    .map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?;
            }
            (None, Some(o)) => hist = Some(o),
            _ => {}
        }
    }
    if let Some(h) = &hist {
        f.latency = Some([
            h.value_at_quantile(0.5) as f64,
            h.value_at_quantile(0.9) as f64,
            h.value_at_quantile(0.99) as f64,
            h.value_at_quantile(0.999) as f64,
            h.max() as f64,
            h.mean(),
            h.stdev(),
        ]);
    }
    set_floor(spec, report, &mut f, floor);
    // Every role's figures; the first role's win where two name the same one.
    f.metrics = report.metrics.clone();
    for other in outcome.reports.iter().skip(1).flatten() {
        for (k, v) in &other.metrics {
            if !f.metrics.iter().any(|(m, _)| m == k) {
                f.metrics.push((k.clone(), *v));
            }
        }
    }
    Ok((f, hist))
}

/// Sets a row's floor columns (`floor_ns`, `ratio_to_floor`, `floor_of`) from `floor`:
/// when the row is made, and again at the end of the matrix against the reference taken
/// over the whole matrix. `report` is the measuring role's (its histogram not needed).
pub fn set_floor(spec: &RunSpec, report: &RoleReport, f: &mut Figures, floor: Option<&Floor>) {
    if spec.crosses_hosts() {
        // This host's cache-line round trip says nothing of a link between hosts: the
        // floor is the bare TCP round trip between the same hosts, measured by the
        // matrix before the first such run; p50 over it for round trips.
        f.floor_ns = f.host_floor_ns;
        f.ratio = match (f.host_floor_ns, f.latency) {
            (Some(ns), Some(l)) if ns > 0.0 && spec.workload.about().name == "latency" => {
                Some(l[0] / ns)
            }
            _ => None,
        };
        f.floor_of = Some(match f.host_floor_ns {
            Some(_) => format!(
                "bare TCP round trip {} (64 B, p50)",
                spec.common.hosts.join("→")
            ),
            None => "none: the bare TCP round trip between these hosts failed".into(),
        });
        return;
    }
    let row = floor.and_then(|fl| spec.point.floor(fl, report, f.latency.map(|l| l[0])));
    f.floor_ns = row.as_ref().map(|r| r.ns);
    f.ratio = row.as_ref().and_then(|r| r.ratio);
    f.floor_of = row.map(|r| r.of);
}

fn num(x: Option<f64>, decimals: usize) -> String {
    x.map(|v| format!("{v:.decimals$}")).unwrap_or_default()
}

/// `summary.csv`, one row per run, each written whole as its run ends: a row that cannot
/// be written (a full disk) is taken back, so the file always parses.
#[derive(Debug)]
pub struct Summary {
    file: File,
    path: PathBuf,
    /// Bytes of whole rows written so far.
    len: u64,
    /// Rows written so far (the header not counted).
    rows: usize,
    metric_columns: Vec<String>,
}

impl Summary {
    /// Creates the file with the fixed columns and the columns the runs' workloads
    /// declare, in the order they first appear.
    pub fn create<'a>(
        path: &Path,
        columns: impl IntoIterator<Item = &'a Column>,
    ) -> anyhow::Result<Summary> {
        let mut metric_columns: Vec<String> = Vec::new();
        for c in columns {
            if !metric_columns.iter().any(|m| m == c.name) {
                metric_columns.push(c.name.to_string());
            }
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(path)
            .map_err(|source| WriteError {
                path: path.to_path_buf(),
                source,
            })?;
        let mut summary = Summary {
            file,
            path: path.to_path_buf(),
            len: 0,
            rows: 0,
            metric_columns,
        };
        let header = summary.header();
        if let Err(e) = summary.append(&header) {
            // Not even the header: no empty file stays.
            let _ = std::fs::remove_file(path);
            return Err(e.into());
        }
        Ok(summary)
    }

    /// Appends one record whole, or takes back what of it reached the file.
    fn append(&mut self, record: &[String]) -> Result<(), WriteError> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let bytes = w
            .write_record(record)
            .map_err(std::io::Error::other)
            .and_then(|_| w.into_inner().map_err(|e| e.into_error()));
        let result = bytes.and_then(|b| {
            self.file.write_all(&b)?;
            self.file.sync_data()?;
            Ok(b.len() as u64)
        });
        match result {
            Ok(n) => {
                self.len += n;
                Ok(())
            }
            Err(source) => {
                let _ = self.file.set_len(self.len);
                Err(WriteError {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// The rows written so far.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one run.
    pub fn row(&mut self, spec: &RunSpec, status: &Status, f: &Figures) -> anyhow::Result<()> {
        let rec = self.record(spec, status, f);
        self.append(&rec)?;
        self.rows += 1;
        Ok(())
    }

    /// Writes the file anew with `rows` (the same runs, their floor columns set against
    /// the matrix's final reference): written whole beside it, then renamed over it, so a
    /// failure leaves the rows as they were.
    pub fn rewrite<'a>(
        &mut self,
        rows: impl IntoIterator<Item = (&'a RunSpec, &'a Status, &'a Figures)>,
    ) -> anyhow::Result<()> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(self.header())?;
        let mut n = 0;
        for (spec, status, f) in rows {
            w.write_record(self.record(spec, status, f))?;
            n += 1;
        }
        let bytes = w.into_inner().map_err(|e| e.into_error())?;
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let new = self.path.with_file_name(format!(".{name}.new"));
        write_whole(&new, &bytes)?;
        std::fs::rename(&new, &self.path).map_err(|source| {
            let _ = std::fs::remove_file(&new);
            WriteError {
                path: self.path.clone(),
                source,
            }
        })?;
        self.len = bytes.len() as u64;
        self.rows = n;
        Ok(())
    }

    fn header(&self) -> Vec<String> {
        FIXED_COLUMNS
            .iter()
            .map(|c| c.to_string())
            .chain(self.metric_columns.iter().cloned())
            .chain(CPU_COLUMNS.iter().map(|c| c.name.to_string()))
            .chain(WATCH_COLUMNS.iter().map(|c| c.name.to_string()))
            .collect()
    }

    fn record(&self, spec: &RunSpec, status: &Status, f: &Figures) -> Vec<String> {
        let lat = |i: usize, d: usize| num(f.latency.map(|l| l[i]), d);
        let mut rec = vec![
            spec.run_id.clone(),
            spec.workload.name().to_string(),
            spec.common.transport_label(),
            spec.wait_label.clone(),
            spec.point
                .msg_bytes()
                .map(|m| m.to_string())
                .unwrap_or_default(),
            spec.params_label.clone(),
            spec.role_cores()
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(";"),
            spec.rep.to_string(),
            status.text(),
            f.count.map(|c| c.to_string()).unwrap_or_default(),
            num(f.duration_s, 6),
            num(f.msgs_per_s, 1),
            num(f.bytes_per_s, 1),
            lat(0, 0),
            lat(1, 0),
            lat(2, 0),
            lat(3, 0),
            lat(4, 0),
            lat(5, 1),
            lat(6, 1),
            num(f.floor_ns, 1),
            num(f.ratio, 3),
        ];
        for c in &self.metric_columns {
            rec.push(num(
                f.metrics.iter().find(|(k, _)| k == c).map(|(_, v)| *v),
                3,
            ));
        }
        let cpu = |i: usize| f.cpu.get(i).copied().flatten();
        let rest: Vec<f64> = f.cpu.iter().skip(2).flatten().copied().collect();
        rec.extend([
            num(cpu(0), 1),
            num(cpu(1), 1),
            num((!rest.is_empty()).then(|| rest.iter().sum()), 1),
            f.floor_of.clone().unwrap_or_default(),
            num(f.watch.before_ns, 1),
            num(f.watch.after_ns, 1),
            if f.watch.before_ns.is_some() {
                u8::from(f.watch.moved).to_string()
            } else {
                String::new()
            },
            f.watch.retakes.to_string(),
            spec.how(),
        ]);
        rec
    }

    /// Runs written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// Writes a histogram as an HdrHistogram percentile distribution (`.hgrm`), values in
/// microseconds, as HdrHistogram's own `outputPercentileDistribution` lays it out.
pub fn write_hgrm(path: &Path, h: &Histogram<u64>) -> anyhow::Result<()> {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let us = v.value_iterated_to() as f64 / 1000.0;
        if q < 1.0 {
            let _ = writeln!(
                s,
                "{us:>12.3} {q:>2.12} {:>10} {:>14.2}",
                v.count_since_last_iteration(),
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(
                s,
                "{us:>12.3} {q:>2.12} {:>10}",
                v.count_since_last_iteration()
            );
        }
    }
    let _ = writeln!(
        s,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(
        s,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64 / 1000.0,
        h.len()
    );
    // HdrHistogram's sub-bucket count: enough to resolve `sigfig` decimal digits.
    let sub_buckets = (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two();
    let _ = writeln!(
        s,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        sub_buckets
    );
    Ok(write_whole(path, s.as_bytes())?)
}

/// One line per run for the closing summary table.
#[derive(Debug, Clone)]
pub struct TableRow {
    /// Run id.
    pub run_id: String,
    /// Status text.
    pub status: String,
    /// Figures.
    pub figures: Figures,
}

/// The closing summary table.
pub fn table_text(rows: &[TableRow]) -> String {
    let mut s = String::new();
    let id_w = rows
        .iter()
        .map(|r| r.run_id.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(
        s,
        "{:<id_w$}  {:<8} {:>10} {:>10} {:>10} {:>12} {:>10} {:>8}",
        "run", "status", "p50 µs", "p99 µs", "p99.9 µs", "msgs/s", "MB/s", "×floor"
    );
    for r in rows {
        let f = &r.figures;
        let us = |i: usize| {
            f.latency
                .map(|l| format!("{:.2}", l[i] / 1000.0))
                .unwrap_or_else(|| "-".into())
        };
        let status = if r.status.len() > 8 {
            r.status.split(':').next().unwrap_or("failed").to_string()
        } else {
            r.status.clone()
        };
        let _ = writeln!(
            s,
            "{:<id_w$}  {:<8} {:>10} {:>10} {:>10} {:>12} {:>10} {:>8}",
            r.run_id,
            status,
            us(0),
            us(2),
            us(3),
            f.msgs_per_s
                .map(|x| format!("{x:.0}"))
                .unwrap_or_else(|| "-".into()),
            f.bytes_per_s
                .map(|x| format!("{:.1}", x / 1e6))
                .unwrap_or_else(|| "-".into()),
            f.ratio
                .map(|x| format!("{x:.1}"))
                .unwrap_or_else(|| "-".into()),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamp_is_civil_time() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101T000000Z");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_795_323_189);
        assert_eq!(utc_stamp(t), "20261122T045309Z");
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(utc_stamp(leap), "20000229T000000Z");
    }

    #[test]
    fn hgrm_lists_percentiles_and_totals() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = ipcbench_workloads::new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let p = dir.path().join("x.hgrm");
        write_hgrm(&p, &h).unwrap();
        let text = std::fs::read_to_string(p).unwrap();
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
        assert!(text.contains("Total count    =         1000]"));
        assert!(text.contains("SubBuckets     =         2048]"), "{text}");
        let last_value = text
            .lines()
            .rev()
            .find(|l| !l.starts_with('#') && !l.trim().is_empty())
            .unwrap();
        assert!(
            last_value.trim_start().starts_with("1000.447")
                || last_value.trim_start().starts_with("1000."),
            "{last_value}"
        );
    }
}
