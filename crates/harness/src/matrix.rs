//! Runs a matrix: the floors first, `env.json`, then each run in turn (plan, execute,
//! clean up, check, report), a row of `summary.csv` as each run ends, a progress bar,
//! and the closing table.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

use crate::envinfo;
use crate::exit::{print_stdout, UsageError, EXIT_INTERRUPTED};
use crate::floor::{self, Floor};
use crate::points;
use crate::report::{self, Summary, TableRow, Watch};
use crate::runner::{self, RunOutcome, Status};
use crate::spec::{Checking, FloorUse, Prepared, RunSpec};
use crate::wire::RoleReport;

/// Set by Ctrl-C, SIGTERM or SIGHUP once [`catch_stops`] has run.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Turns Ctrl-C, SIGTERM and SIGHUP into a flag the matrix checks: called first thing by
/// the commands that run roles, so a stop that comes during setup is seen too.
pub fn catch_stops() {
    // If a handler is already set (a second matrix in one process), keep the first.
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
}

/// Runs `runs` and writes their results under `out/<stem>-<stamp>/`.
pub fn run_matrix(
    stem: &str,
    config_text: &str,
    runs: Vec<RunSpec>,
    out: &Path,
) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("locating the harness binary")?;
    catch_stops();
    let interrupted: &AtomicBool = &INTERRUPTED;
    let swept = crate::leftovers::sweep();
    if !swept.removed.is_empty() {
        note!(
            "harness: removed {} segments and run directories left by harness runs that are gone",
            swept.removed.len()
        );
    }
    let results =
        report::create_results_dir(out, stem).map_err(|e| UsageError(format!("{e:#}")))?;
    note!(
        "harness: {} runs; results in {}",
        runs.len(),
        results.display()
    );

    // Per pair of cores: the reference the runs are watched against (the median of the
    // samples at the start), and every sample taken, at the start and around the runs:
    // the rows are compared at the end with the median of them all.
    let mut floors: BTreeMap<[usize; 2], Floor> = BTreeMap::new();
    let mut samples: BTreeMap<[usize; 2], Vec<Floor>> = BTreeMap::new();
    for r in &runs {
        let pair = r.core_pair();
        if floors.contains_key(&pair) || interrupted.load(Ordering::Relaxed) {
            continue;
        }
        match reference_floor(&exe, pair, interrupted) {
            Ok((f, taken)) => {
                samples.insert(pair, taken);
                note!(
                    "harness: floor on cores {}-{} (median of {REFERENCE_SAMPLES} samples): cache-line round trip {:.0} ns (a line each way; timed one at a time, p50 {:.0} ns; \
                     one line both ways {:.0} ns), line stream {}, clock read {:.1} ns, memcpy {:.1} GB/s; \
                     stalls {:.2} % of the time, {:.0}/s over 10 µs, {:.1}/s over 1 ms",
                    pair[0], pair[1], f.rtt_ns, f.rtt_p50_ns, f.one_line_rtt_ns, f.stream_text(), f.clock_read_ns, f.memcpy_gb_s, f.stall_pct,
                    f.stalls_10us_per_s, f.stalls_1ms_per_s
                );
                floors.insert(pair, f);
            }
            Err(e) => note!("harness: {e:#} (floor columns left empty)"),
        }
    }
    let damon = envinfo::damon();
    if let Some(d) = &damon {
        note!(
            "harness: note: the kernel's DAMON is monitoring memory here ({d}); its thread \
             (kdamond) preempts the role on whichever core it runs, which can show in latency \
             tails (results/README.md, \"Machine notes\")"
        );
    }
    let write_env = |floors: &BTreeMap<[usize; 2], Floor>, watch: &serde_json::Value| {
        envinfo::env_json(
            &results.join("env.json"),
            config_text,
            &runs,
            floors,
            damon.as_deref(),
            watch,
        )
    };
    write_env(&floors, &serde_json::Value::Null)?;
    // The round trips taken around every run, by pair of cores: how the host moved over
    // the matrix beside the reference at the start (env.json, at the end).
    let mut around: BTreeMap<[usize; 2], Vec<f64>> = BTreeMap::new();

    let mut summary = Summary::create(
        &results.join("summary.csv"),
        runs.iter().flat_map(|r| r.workload.columns()),
    )?;
    let bar = indicatif::ProgressBar::new(runs.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} runs, {elapsed} elapsed  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // Every row written, to be set against the final reference at the end.
    let mut rows: Vec<Row> = Vec::new();
    // The bare TCP round trip between each placement of roles on hosts, once measured.
    let mut host_floors: BTreeMap<String, Option<f64>> = BTreeMap::new();
    // Each point's headline (or p50, or msgs/s) in its runs so far that ended ok.
    let mut seen: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut failed = 0;
    // The harness's own private memory after each run that left it something to check.
    let mut peak_private_kib = 0u64;
    for (i, spec) in runs.iter().enumerate() {
        if interrupted.load(Ordering::Relaxed) {
            break;
        }
        bar.set_message(spec.run_id.clone());
        let reference = floors.get(&spec.core_pair()).copied();
        let watched = spec.point.floor_use() == FloorUse::CoreTransfers;
        let mut watch = Watch::default();
        // A run during which the host moved (the floor taken just before and just after
        // it differ, or differ from the reference, by more than HOST_MOVED) is taken
        // again, at most `retakes` times; the row keeps the last take and says how many.
        let (outcome, after, dir) = loop {
            let before = match (watched, reference) {
                (true, Some(r)) => quick_floor(&exe, &r, interrupted),
                _ => None,
            };
            watch.before_ns = before.map(|f| f.rtt_ns);
            if interrupted.load(Ordering::Relaxed) {
                break (interrupted_outcome(), None, runner::run_dir()?);
            }
            let (outcome, mut after, dir) = run_once(&exe, spec, &results, interrupted, &bar)?;
            let after_floor = match (watched, reference, &outcome.status) {
                (true, Some(r), Status::Ok) => quick_floor(&exe, &r, interrupted).map(|f| Floor {
                    rtt_ns: f.rtt_ns * test_floor_scale(),
                    ..f
                }),
                _ => None,
            };
            watch.after_ns = after_floor.map(|f| f.rtt_ns);
            watch.moved = match (reference, watch.before_ns, watch.after_ns) {
                (Some(r), Some(b), Some(a)) => {
                    moved(a, b) || moved(b, r.rtt_ns) || moved(a, r.rtt_ns)
                }
                _ => false,
            };
            if watch.moved
                && watch.retakes < spec.common.retakes
                && outcome.status == Status::Ok
                && !interrupted.load(Ordering::Relaxed)
            {
                watch.retakes += 1;
                tell(&bar, format!(
                    "harness: {}: the host moved during the run (cache-line round trip {:.0} ns before, {:.0} after, {:.0} for the matrix): taken again ({} of {})",
                    spec.run_id,
                    watch.before_ns.unwrap_or(0.0),
                    watch.after_ns.unwrap_or(0.0),
                    reference.map_or(0.0, |r| r.rtt_ns),
                    watch.retakes,
                    spec.common.retakes
                ));
                if let Some(a) = after.as_mut() {
                    a.discard();
                }
                continue;
            }
            // A run whose figure falls far outside what its point's earlier runs gave is
            // taken again too.
            let far = match (
                &outcome.status,
                report::figures(spec, &outcome, reference.as_ref()),
            ) {
                (Status::Ok, Ok((f, _))) => outlier(
                    seen.get(&spec.point_id).map_or(&[][..], Vec::as_slice),
                    points::primary_value(spec, &f),
                ),
                _ => None,
            };
            if let Some(why) = far {
                if watch.retakes < spec.common.retakes && !interrupted.load(Ordering::Relaxed) {
                    watch.retakes += 1;
                    tell(
                        &bar,
                        format!(
                            "harness: {}: {why}: taken again ({} of {})",
                            spec.run_id, watch.retakes, spec.common.retakes
                        ),
                    );
                    if let Some(a) = after.as_mut() {
                        a.discard();
                    }
                    continue;
                }
            }
            // The kept take's samples count towards the final reference.
            samples
                .entry(spec.core_pair())
                .or_default()
                .extend(before.into_iter().chain(after_floor));
            break (outcome, after, dir);
        };
        let floor = reference;
        around
            .entry(spec.core_pair())
            .or_default()
            .extend(watch.before_ns.into_iter().chain(watch.after_ns));
        let mut after = after;
        if outcome.status == Status::Interrupted {
            for w in &outcome.last_words {
                note!("harness: {}: {w}", spec.run_id);
            }
            // No row will say what its artefacts are: they go.
            if let Some(a) = after.as_mut() {
                a.discard();
            }
            break;
        }
        let (mut figures, hist) = match report::figures(spec, &outcome, floor.as_ref()) {
            Ok(mut x) => {
                x.0.watch = watch;
                if spec.crosses_hosts() {
                    x.0.host_floor_ns =
                        host_floor(&mut host_floors, spec, &exe, &results, interrupted, &bar);
                    if let Some(Some(report)) = outcome.reports.first() {
                        report::set_floor(spec, report, &mut x.0, floor.as_ref());
                    }
                }
                x
            }
            Err(e) => {
                let status = Status::Failed(format!("bad report: {e:#}"));
                summary
                    .row(spec, &status, &Default::default())
                    .map_err(|e| stopped_writing(e, &summary))?;
                rows.push(Row {
                    spec,
                    status,
                    figures: Default::default(),
                    report: None,
                });
                failed += 1;
                continue;
            }
        };
        let mut outcome = outcome;
        if let (Some(a), Status::Ok) = (after.as_mut(), &outcome.status) {
            let how = Checking {
                exe: &exe,
                interrupted,
            };
            if let Err(why) = a.check(&outcome, &mut figures.metrics, &how) {
                outcome.status = Status::Failed(why);
            }
            peak_private_kib = peak_private_kib.max(envinfo::own_private_kib().unwrap_or(0));
        }
        if let (Some(a), false) = (after.as_mut(), outcome.status == Status::Ok) {
            a.discard();
        }
        // Its segments (a canvas, a pool) are removed here.
        drop(after);
        // A run that did not end ok keeps its roles' logs in the results, and its status
        // says where; then the FIFOs, sockets and logs of the run go.
        if outcome.status != Status::Ok {
            if let Some(kept) = keep_logs(dir.path(), &results, &spec.run_id) {
                outcome.status = outcome.status.with_note(&format!("logs in {kept}"));
            }
        }
        drop(dir);
        // The row first: it is what the run measured; its histogram follows.
        summary
            .row(spec, &outcome.status, &figures)
            .map_err(|e| stopped_writing(e, &summary))?;
        if let Some(h) = &hist {
            report::write_hgrm(
                &results
                    .join("histograms")
                    .join(format!("{}.hgrm", spec.run_id)),
                h,
            )
            .map_err(|e| stopped_writing(e, &summary))?;
        }
        if outcome.status != Status::Ok {
            failed += 1;
        }
        let line = format!(
            "[{}/{}] {}: {}{}",
            i + 1,
            runs.len(),
            spec.run_id,
            outcome.status.text(),
            figures
                .latency
                .map(|l| format!(", p50 {:.2} µs", l[0] / 1000.0))
                .unwrap_or_default()
        );
        tell(&bar, line);
        bar.inc(1);
        if let (Status::Ok, Some(v)) = (&outcome.status, points::primary_value(spec, &figures)) {
            seen.entry(spec.point_id.clone()).or_default().push(v);
        }
        rows.push(Row {
            spec,
            report: outcome
                .reports
                .first()
                .cloned()
                .flatten()
                .map(|r| RoleReport {
                    histogram: None,
                    ..r
                }),
            status: outcome.status,
            figures,
        });
    }
    bar.finish_and_clear();
    // One reference per pair of cores for every row: the median of all the samples taken
    // over the matrix, at the start and around the runs (its range and count in env.json).
    let watched_floors = floors.clone();
    for (pair, taken) in &samples {
        if let (Some(f), Some(m)) = (floors.get_mut(pair), Floor::median_of(taken)) {
            *f = m;
        }
    }
    for row in &mut rows {
        if let (Some(report), true) = (&row.report, row.figures.floor_ns.is_some()) {
            let floor = floors.get(&row.spec.core_pair());
            report::set_floor(row.spec, report, &mut row.figures, floor);
        }
    }
    if !rows.is_empty() {
        summary
            .rewrite(rows.iter().map(|r| (r.spec, &r.status, &r.figures)))
            .map_err(|e| stopped_writing(e, &summary))?;
    }
    write_env(&floors, &floor_watch(&watched_floors, &around))?;
    let results_of_runs: Vec<points::RunResult> = rows
        .iter()
        .map(|r| points::RunResult::of(r.spec, r.status == Status::Ok, &r.figures))
        .collect();
    let table: Vec<TableRow> = rows
        .into_iter()
        .map(|r| TableRow {
            run_id: r.spec.run_id.clone(),
            status: r.status.text(),
            figures: r.figures,
        })
        .collect();
    // Every point summed up over its repetitions (also after Ctrl-C, from the runs done).
    let points = points::summarize(&results_of_runs);
    if !points.is_empty() {
        points::write(&results.join("points.csv"), &points)?;
    }
    if points.iter().any(|p| p.runs > 1) {
        print_stdout(&points::table_text(&points));
    } else {
        print_stdout(&report::table_text(&table));
    }
    if peak_private_kib > 0 {
        note!(
            "harness: its own private memory after the checks: at most {:.1} MiB (RssAnon)",
            peak_private_kib as f64 / 1024.0
        );
    }
    if interrupted.load(Ordering::Relaxed) {
        note!(
            "harness: interrupted after {} of {} runs; every role stopped and its files removed; completed rows are in {}",
            table.len(),
            runs.len(),
            results.display()
        );
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    print_stdout(&format!("\nresults: {}\n", results.display()));
    if failed > 0 {
        note!(
            "harness: {failed} of {} runs did not end ok (see the status column)",
            runs.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// A results file could not be written: the matrix stops (the next rows would not fit
/// either), saying what is whole on disk; the error goes on to the exit code.
fn stopped_writing(e: anyhow::Error, summary: &Summary) -> anyhow::Error {
    note!(
        "harness: stopped: a results file could not be written; {} rows are whole in {}",
        summary.rows(),
        summary.path().display()
    );
    e
}

/// Copies the role logs (`*.stderr`) of a run that did not end ok from its run
/// directory into `results/logs/<run_id>/`; the directory relative to `results`, or
/// `None` when there was nothing to keep or it could not be written.
fn keep_logs(dir: &Path, results: &Path, run_id: &str) -> Option<String> {
    let rel = format!("logs/{run_id}");
    let to = results.join(&rel);
    let mut kept = 0;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "stderr") && path.is_file() {
            if kept == 0 {
                std::fs::create_dir_all(&to).ok()?;
            }
            std::fs::copy(&path, to.join(entry.file_name())).ok()?;
            kept += 1;
        }
    }
    (kept > 0).then_some(rel)
}

/// Floor samples a matrix's reference floor is the median of: one full calibration and
/// quick round trips after it.
pub const REFERENCE_SAMPLES: usize = 5;

/// How far (a factor, either way) the floor may move before a run counts as taken while
/// the host moved.
pub const HOST_MOVED: f64 = 1.5;

/// For env.json: per pair of cores, the round trips taken around the runs (count,
/// median and range) beside the reference, and whether they moved from it by more than
/// [`HOST_MOVED`] over the matrix.
fn floor_watch(
    floors: &BTreeMap<[usize; 2], Floor>,
    watched: &BTreeMap<[usize; 2], Vec<f64>>,
) -> serde_json::Value {
    let pairs: Vec<serde_json::Value> = watched
        .iter()
        .filter_map(|(pair, samples)| {
            let i = crate::stats::median_interval(samples)?;
            let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
            let max = samples.iter().copied().fold(0.0, f64::max);
            let reference = floors.get(pair).map(|f| f.rtt_ns);
            Some(serde_json::json!({
                "cores": pair,
                "samples": samples.len(),
                "rtt_median_ns": i.median,
                "rtt_range_ns": [min, max],
                "reference_rtt_ns": reference,
                "moved_over_the_matrix": reference.is_some_and(|r| moved(i.median, r)),
            }))
        })
        .collect();
    serde_json::Value::Array(pairs)
}

/// A line above the progress bar, or on stderr where there is no bar (not a terminal).
fn tell(bar: &indicatif::ProgressBar, line: String) {
    if bar.is_hidden() {
        note!("{line}");
    } else {
        bar.println(line);
    }
}

/// How far outside its point's earlier runs a run's figure may fall before it is taken
/// again: this many times the width of their interval (at least 5 % of their median)
/// beyond either end.
pub const OUTLIER_WIDTHS: f64 = 3.0;

/// Why `value` is an outlier among `earlier` (at least three of them), if it is.
fn outlier(earlier: &[f64], value: Option<f64>) -> Option<String> {
    let v = value?;
    if earlier.len() < 3 {
        return None;
    }
    let i = crate::stats::median_interval(earlier)?;
    let w = (i.high - i.low).max(0.05 * i.median.abs());
    let (lo, hi) = (i.low - OUTLIER_WIDTHS * w, i.high + OUTLIER_WIDTHS * w);
    (v < lo || v > hi).then(|| {
        format!(
            "its figure {v:.4} is far outside its point's earlier runs ({:.4} [{:.4}, {:.4}])",
            i.median, i.low, i.high
        )
    })
}

fn moved(now: f64, then: f64) -> bool {
    then > 0.0 && !(1.0 / HOST_MOVED..=HOST_MOVED).contains(&(now / then))
}

/// The reference floor of a pair of cores at the start of a matrix: the full
/// calibration, its round trips and line stream the median of [`REFERENCE_SAMPLES`]
/// samples; and the samples.
fn reference_floor(
    exe: &Path,
    pair: [usize; 2],
    interrupted: &AtomicBool,
) -> anyhow::Result<(Floor, Vec<Floor>)> {
    let first = floor::calibrate(exe, pair, interrupted)?;
    let mut samples = vec![first];
    for _ in 1..REFERENCE_SAMPLES {
        if interrupted.load(Ordering::Relaxed) {
            break;
        }
        samples.push(floor::refresh(exe, &first, interrupted)?);
    }
    Ok((Floor::median_of(&samples).unwrap_or(first), samples))
}

/// The round trips and line stream measured now on `reference`'s cores (a few tens of
/// milliseconds), `None` if they could not be.
fn quick_floor(exe: &Path, reference: &Floor, interrupted: &AtomicBool) -> Option<Floor> {
    floor::refresh(exe, reference, interrupted).ok()
}

/// A row written to `summary.csv`, kept to be set against the final reference.
struct Row<'a> {
    spec: &'a RunSpec,
    status: Status,
    figures: report::Figures,
    /// The measuring role's report, its histogram dropped.
    report: Option<RoleReport>,
}

/// The fault suite's and the stability tests' hook: `IPCBENCH_TEST_FLOOR_SCALE` scales
/// the round trip measured after each run, as a host that moved during it would.
fn test_floor_scale() -> f64 {
    std::env::var("IPCBENCH_TEST_FLOOR_SCALE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|x| x.is_finite() && *x > 0.0)
        .unwrap_or(1.0)
}

fn interrupted_outcome() -> RunOutcome {
    RunOutcome {
        status: Status::Interrupted,
        reports: vec![],
        last_words: vec![],
    }
}

/// One take of a run: its outcome, its checks after, and its private directory (removed
/// when dropped, after the checks).
type Take = (
    RunOutcome,
    Option<Box<dyn crate::spec::After>>,
    tempfile::TempDir,
);

/// The floor of a row whose roles ran on other hosts: the bare TCP round trip between
/// the same hosts and cores (64 B, 2000 round trips, p50, ns), measured the first time a
/// placement is seen and kept for the matrix. `None` if it could not be measured.
fn host_floor(
    cache: &mut BTreeMap<String, Option<f64>>,
    spec: &RunSpec,
    exe: &Path,
    results: &Path,
    interrupted: &AtomicBool,
    bar: &indicatif::ProgressBar,
) -> Option<f64> {
    let key = format!("{:?} {:?}", spec.common.hosts, spec.common.cores);
    if let Some(v) = cache.get(&key) {
        return *v;
    }
    let measured = (|| -> anyhow::Result<f64> {
        #[derive(serde::Serialize)]
        struct Tables<'a> {
            hosts: &'a crate::hosts::Hosts,
        }
        let mut text = toml::to_string(&Tables { hosts: &spec.hosts })?;
        let list = |v: Vec<String>| v.join(", ");
        text.push_str(&format!(
            "\n[[experiment]]\nname = \"host-floor\"\nworkload = \"latency\"\ntransport = \"tcp\"\nbare = true\nmsg_bytes = 64\ncount = 2000\nwarmup = 100\ntimeout_s = 60\nhosts = [{}]\ncores = [{}]\n",
            list(spec.common.hosts.iter().map(|h| format!("{h:?}")).collect()),
            list(spec.common.cores.iter().map(|c| c.to_string()).collect()),
        ));
        let probe =
            crate::config::parse("(host floor)", &text, &spec.common.cores).map_err(|e| {
                anyhow::anyhow!(
                    "{}",
                    e.iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })?;
        let probe = probe.first().context("no run")?;
        let (outcome, _, _dir) = run_once(exe, probe, results, interrupted, bar)?;
        if outcome.status != Status::Ok {
            anyhow::bail!("{:?}", outcome.status);
        }
        let (f, _) = report::figures(probe, &outcome, None)?;
        f.latency.map(|l| l[0]).context("no round trips")
    })();
    let v = match measured {
        Ok(ns) => Some(ns),
        Err(e) => {
            tell(
                bar,
                format!(
                    "harness: the bare TCP round trip between hosts {} could not be measured: {e:#}",
                    spec.common.hosts.join(", ")
                ),
            );
            None
        }
    };
    cache.insert(key, v);
    v
}

/// Plans and runs one take of `spec` in a private directory; its outcome, its checks
/// after, and the directory (removed when dropped, after the checks).
fn run_once(
    exe: &Path,
    spec: &RunSpec,
    results: &Path,
    interrupted: &AtomicBool,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Take> {
    let dir = runner::run_dir()?;
    // The link shaped for this run only (removed when `shaped` drops), before anything
    // is planned: a shaping that fails leaves no endpoint behind.
    let planned = crate::hosts::Shaped::apply(&spec.common.hosts, &spec.hosts, &spec.common.link)
        .map_err(anyhow::Error::msg)
        .and_then(|shaped| Ok((spec.point.plan(spec, dir.path(), results)?, shaped)));
    let (outcome, after) = match planned {
        Ok((
            Prepared {
                mut plan,
                endpoints,
                after,
            },
            _shaped,
        )) => {
            // Roles on other hosts start through their launcher.
            for (i, role) in plan.roles.iter_mut().enumerate() {
                if let Some(h) = spec.host(i) {
                    role.host = Some(crate::hosts::Placement::new(spec.host_name(i), h, exe));
                }
            }
            let tick = || {
                if let Some(p) = after.as_ref().and_then(|a| a.progress()) {
                    bar.set_message(p);
                }
            };
            let outcome = runner::execute_with(exe, &plan, interrupted, &tick);
            // Every role is gone now: remove the shm segments, if there are any.
            for e in &endpoints {
                e.cleanup();
            }
            (outcome, after)
        }
        Err(e) => (
            RunOutcome {
                status: Status::Failed(format!("setup: {e:#}")),
                reports: vec![],
                last_words: vec![],
            },
            None,
        ),
    };
    Ok((outcome, after, dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outlier_is_far_outside_three_or_more_earlier_runs() {
        let earlier = [100.0, 102.0, 98.0, 101.0];
        // Within a few widths of the interval: kept.
        assert_eq!(outlier(&earlier, Some(104.0)), None);
        assert_eq!(outlier(&earlier, Some(90.0)), None);
        // Far outside (the interval [98, 102], 5 % of 100 the least width): taken again.
        assert!(outlier(&earlier, Some(200.0)).is_some());
        assert!(outlier(&earlier, Some(50.0)).is_some());
        // Too few earlier runs to judge, or no figure.
        assert_eq!(outlier(&earlier[..2], Some(1000.0)), None);
        assert_eq!(outlier(&earlier, None), None);
    }

    #[test]
    fn the_host_moved_beyond_one_and_a_half_either_way() {
        assert!(!moved(140.0, 100.0));
        assert!(moved(160.0, 100.0));
        assert!(moved(60.0, 100.0));
        assert!(!moved(70.0, 100.0));
    }
}
