//! Points: the runs of one point of the matrix (its repetitions) summed up as the median
//! of each figure with its 95% interval ([`crate::stats`]) and a stability verdict;
//! written to `points.csv` beside `summary.csv`, shown in the closing table, and read
//! back by `harness compare`. results/README.md documents the columns.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::exit::{write_whole, WriteError};
use crate::report::Figures;
use crate::spec::RunSpec;
use crate::stats::{median_interval, Interval};

/// A figure every point may have, and whether more of it is better.
#[derive(Debug, Clone, Copy)]
pub struct Figure {
    /// Its column (in summary.csv and, with `_low` and `_high`, in points.csv).
    pub name: &'static str,
    /// Rates are better higher, latencies and times lower.
    pub higher_is_better: bool,
}

/// The figures of every point, in column order.
pub const FIGURES: &[Figure] = &[
    Figure {
        name: "p50_ns",
        higher_is_better: false,
    },
    Figure {
        name: "p99_ns",
        higher_is_better: false,
    },
    Figure {
        name: "p999_ns",
        higher_is_better: false,
    },
    Figure {
        name: "msgs_per_s",
        higher_is_better: true,
    },
    Figure {
        name: "bytes_per_s",
        higher_is_better: true,
    },
    Figure {
        name: "ratio_to_floor",
        higher_is_better: false,
    },
];

/// A point's spread beyond which it is not called stable: ±5 % around the median.
pub const STABLE_WITHIN: f64 = 0.05;

/// The figure a run's point rests its verdict on, in that run: the workload's headline,
/// else p50, else msgs/s.
pub fn primary_value(spec: &RunSpec, f: &Figures) -> Option<f64> {
    if let Some((name, _)) = spec.workload.about().headline {
        return f.metrics.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    }
    f.latency.map(|l| l[0]).or(f.msgs_per_s)
}

/// What one finished run gives its point.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The point.
    pub key: PointKey,
    /// Whether it ended `ok` (only those count in the figures).
    pub ok: bool,
    /// Each figure it has, by name (those of [`FIGURES`] and the workload's headline).
    pub values: Vec<(String, f64)>,
    /// Whether the host moved during it (after its retakes).
    pub host_moved: bool,
}

/// What names a point: the same in every repetition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PointKey {
    /// The run id without its number and repetition.
    pub point_id: String,
    /// The workload.
    pub workload: String,
    /// The transport as the CSV names it.
    pub transport: String,
    /// The wait column.
    pub wait: String,
    /// The msg_bytes column.
    pub msg_bytes: String,
    /// The params column.
    pub params: String,
    /// The cores column.
    pub cores: String,
    /// The workload's headline figure, if it has one of its own.
    pub headline: Option<(String, bool)>,
}

impl RunResult {
    /// A finished run's contribution.
    pub fn of(spec: &RunSpec, ok: bool, f: &Figures) -> RunResult {
        let mut values = Vec::new();
        if let Some(l) = f.latency {
            values.extend([
                ("p50_ns".to_string(), l[0]),
                ("p99_ns".to_string(), l[2]),
                ("p999_ns".to_string(), l[3]),
            ]);
        }
        for (name, v) in [
            ("msgs_per_s", f.msgs_per_s),
            ("bytes_per_s", f.bytes_per_s),
            ("ratio_to_floor", f.ratio),
        ] {
            if let Some(v) = v {
                values.push((name.to_string(), v));
            }
        }
        let headline = spec.workload.about().headline;
        if let Some((name, _)) = headline {
            if let Some((_, v)) = f.metrics.iter().find(|(k, _)| k == name) {
                values.push((name.to_string(), *v));
            }
        }
        RunResult {
            key: PointKey {
                point_id: spec.point_id.clone(),
                workload: spec.workload.name().to_string(),
                transport: spec.common.transport_label(),
                wait: spec.wait_label.clone(),
                msg_bytes: spec
                    .point
                    .msg_bytes()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
                params: spec.params_label.clone(),
                cores: spec
                    .role_cores()
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(";"),
                headline: headline.map(|(n, h)| (n.to_string(), h)),
            },
            ok,
            values,
            host_moved: f.watch.moved,
        }
    }
}

/// One point summed up.
#[derive(Debug, Clone)]
pub struct Point {
    /// What names it.
    pub key: PointKey,
    /// Its runs.
    pub runs: usize,
    /// Those that ended ok.
    pub runs_ok: usize,
    /// Each figure's median and interval over the runs that ended ok.
    pub figures: BTreeMap<String, Interval>,
    /// Runs that ended ok although the host moved during them, after every retake.
    pub host_moved: usize,
}

impl Point {
    /// The figure its verdict rests on: the workload's headline, else p50, else msgs/s.
    pub fn primary(&self) -> Option<(&str, &Interval)> {
        let names = self
            .key
            .headline
            .iter()
            .map(|(n, _)| n.as_str())
            .chain(["p50_ns", "msgs_per_s"]);
        for n in names {
            if let Some(i) = self.figures.get(n) {
                return Some((n, i));
            }
        }
        None
    }

    /// `host unstable`, `stable`, `noisy (±x%)`, or why there is no verdict.
    pub fn stability(&self) -> String {
        if self.host_moved > 0 {
            return format!(
                "host unstable ({} of {} runs)",
                self.host_moved, self.runs_ok
            );
        }
        match self.primary() {
            None => "no figure".into(),
            Some((_, i)) if i.n < 2 => "one run".into(),
            Some((_, i)) if i.relative_half_width() <= STABLE_WITHIN => "stable".into(),
            Some((_, i)) => format!("noisy (±{:.0}%)", i.relative_half_width() * 100.0),
        }
    }
}

/// The points of `runs`, in the order their first run came.
pub fn summarize(runs: &[RunResult]) -> Vec<Point> {
    let mut order: Vec<PointKey> = Vec::new();
    let mut groups: BTreeMap<PointKey, Vec<&RunResult>> = BTreeMap::new();
    for r in runs {
        if !groups.contains_key(&r.key) {
            order.push(r.key.clone());
        }
        groups.entry(r.key.clone()).or_default().push(r);
    }
    order
        .into_iter()
        .map(|key| {
            let rs = &groups[&key];
            let ok: Vec<&&RunResult> = rs.iter().filter(|r| r.ok).collect();
            let mut names: Vec<&str> = FIGURES.iter().map(|f| f.name).collect();
            if let Some((h, _)) = &key.headline {
                names.push(h);
            }
            let figures = names
                .into_iter()
                .filter_map(|n| {
                    let vals: Vec<f64> = ok
                        .iter()
                        .filter_map(|r| r.values.iter().find(|(k, _)| k == n).map(|(_, v)| *v))
                        .collect();
                    median_interval(&vals).map(|i| (n.to_string(), i))
                })
                .collect();
            Point {
                runs: rs.len(),
                runs_ok: ok.len(),
                host_moved: ok.iter().filter(|r| r.host_moved).count(),
                figures,
                key,
            }
        })
        .collect()
}

/// The columns of points.csv, in order.
pub fn columns() -> Vec<String> {
    let mut c: Vec<String> = [
        "point_id",
        "workload",
        "transport",
        "wait",
        "msg_bytes",
        "params",
        "cores",
        "runs",
        "runs_ok",
        "ci_level",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for f in FIGURES {
        c.extend([
            f.name.to_string(),
            format!("{}_low", f.name),
            format!("{}_high", f.name),
        ]);
    }
    c.extend(
        [
            "headline",
            "headline_value",
            "headline_low",
            "headline_high",
            "stability",
        ]
        .map(String::from),
    );
    c
}

fn num(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.3}")).unwrap_or_default()
}

/// Writes `points.csv`.
pub fn write(path: &Path, points: &[Point]) -> Result<(), WriteError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut records = vec![columns()];
    for p in points {
        let k = &p.key;
        let level = p.primary().map(|(_, i)| i.level);
        let mut r = vec![
            k.point_id.clone(),
            k.workload.clone(),
            k.transport.clone(),
            k.wait.clone(),
            k.msg_bytes.clone(),
            k.params.clone(),
            k.cores.clone(),
            p.runs.to_string(),
            p.runs_ok.to_string(),
            num(level),
        ];
        for f in FIGURES {
            let i = p.figures.get(f.name);
            r.extend([
                num(i.map(|i| i.median)),
                num(i.map(|i| i.low)),
                num(i.map(|i| i.high)),
            ]);
        }
        let h = k
            .headline
            .as_ref()
            .and_then(|(n, _)| p.figures.get(n).map(|i| (n, i)));
        r.extend([
            h.map(|(n, _)| n.clone()).unwrap_or_default(),
            num(h.map(|(_, i)| i.median)),
            num(h.map(|(_, i)| i.low)),
            num(h.map(|(_, i)| i.high)),
            p.stability(),
        ]);
        records.push(r);
    }
    for r in &records {
        w.write_record(r).map_err(|e| WriteError {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
    }
    let bytes = w.into_inner().map_err(|e| WriteError {
        path: path.to_path_buf(),
        source: e.into_error(),
    })?;
    write_whole(path, &bytes)
}

/// The closing table of points run more than once: each primary figure as
/// `median [low, high]`.
pub fn table_text(points: &[Point]) -> String {
    let mut s = String::new();
    let id_w = points
        .iter()
        .map(|p| p.key.point_id.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(
        s,
        "{:<id_w$}  {:>5}  {:<14} {:>34}  {:>22}  stability",
        "point", "ok", "figure", "median [95% interval]", "×floor"
    );
    for p in points {
        let (name, fig) = match p.primary() {
            Some((n, i)) => (
                n.to_string(),
                format!("{} [{}, {}]", g(i.median), g(i.low), g(i.high)),
            ),
            None => ("-".into(), "-".into()),
        };
        let ratio = p
            .figures
            .get("ratio_to_floor")
            .map(|i| format!("{:.2} [{:.2}, {:.2}]", i.median, i.low, i.high))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "{:<id_w$}  {:>5}  {:<14} {:>34}  {:>22}  {}",
            p.key.point_id,
            format!("{}/{}", p.runs_ok, p.runs),
            name,
            fig,
            ratio,
            p.stability()
        );
    }
    s
}

/// A figure in four significant digits.
pub fn g(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = (3 - x.abs().log10().floor() as i32).max(0) as usize;
    format!("{x:.digits$}")
}
