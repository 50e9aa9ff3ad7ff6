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
use crate::report::{self, Summary, TableRow};
use crate::runner::{self, RunOutcome, Status};
use crate::spec::{Checking, FloorUse, Prepared, RunSpec};

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

    let mut floors: BTreeMap<[usize; 2], Floor> = BTreeMap::new();
    for r in &runs {
        let pair = r.core_pair();
        if floors.contains_key(&pair) || interrupted.load(Ordering::Relaxed) {
            continue;
        }
        match floor::calibrate(&exe, pair, interrupted) {
            Ok(f) => {
                note!(
                    "harness: floor on cores {}-{}: cache-line round trip {:.0} ns (a line each way; timed one at a time, p50 {:.0} ns; \
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
    envinfo::env_json(
        &results.join("env.json"),
        config_text,
        &runs,
        &floors,
        damon.as_deref(),
    )?;

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
    let mut table = Vec::new();
    let mut results_of_runs = Vec::new();
    let mut failed = 0;
    // The harness's own private memory after each run that left it something to check.
    let mut peak_private_kib = 0u64;
    for (i, spec) in runs.iter().enumerate() {
        if interrupted.load(Ordering::Relaxed) {
            break;
        }
        bar.set_message(spec.run_id.clone());
        let floor = row_floor(&exe, spec, &floors, interrupted, &bar);
        if interrupted.load(Ordering::Relaxed) {
            break;
        }
        let dir = runner::run_dir()?;
        let (outcome, after) = match spec.point.plan(spec, dir.path(), &results) {
            Ok(Prepared {
                plan,
                endpoints,
                after,
            }) => {
                let tick = || {
                    if let Some(p) = after.as_ref().and_then(|a| a.progress()) {
                        bar.set_message(p);
                    }
                };
                let outcome = runner::execute_with(&exe, &plan, interrupted, &tick);
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
            Ok(x) => x,
            Err(e) => {
                let status = Status::Failed(format!("bad report: {e:#}"));
                summary
                    .row(spec, &status, &Default::default())
                    .map_err(|e| stopped_writing(e, &summary))?;
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
        if bar.is_hidden() {
            note!("{line}");
        } else {
            bar.println(line);
        }
        bar.inc(1);
        results_of_runs.push(points::RunResult::of(
            spec,
            outcome.status == Status::Ok,
            &figures,
        ));
        table.push(TableRow {
            run_id: spec.run_id.clone(),
            status: outcome.status.text(),
            figures,
        });
    }
    bar.finish_and_clear();
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

/// The floor a run's row is compared with: for rows compared with transfers between the
/// cores, the round trips and line stream measured again just before it (this host moves
/// its virtual cores now and then); else the one from the start of the matrix.
fn row_floor(
    exe: &Path,
    spec: &RunSpec,
    floors: &BTreeMap<[usize; 2], Floor>,
    interrupted: &AtomicBool,
    bar: &indicatif::ProgressBar,
) -> Option<Floor> {
    let start = floors.get(&spec.core_pair())?;
    if spec.point.floor_use() != FloorUse::CoreTransfers {
        return Some(*start);
    }
    match floor::refresh(exe, start, interrupted) {
        Ok(fresh) => {
            // Worth a note: a figure that moved by more than 1.5x either way.
            let moved = |now: f64, then: f64| !(1.0 / 1.5..=1.5).contains(&(now / then));
            if moved(fresh.rtt_ns, start.rtt_ns) {
                bar.println(format!(
                    "harness: {}: the cache-line round trip is {:.0} ns now, {:.0} ns at the start \
                     (the host moved the cores); this row is compared with the new one",
                    spec.run_id, fresh.rtt_ns, start.rtt_ns
                ));
            }
            if let (Some(now), Some(then), Some(_)) =
                (fresh.stream_ns, start.stream_ns, spec.point.msg_bytes())
            {
                if moved(now, then) {
                    bar.println(format!(
                        "harness: {}: the line stream takes {now:.1} ns per line now, {then:.1} ns at the start \
                         (the host moved the cores); this row is compared with the new one",
                        spec.run_id
                    ));
                }
            }
            Some(fresh)
        }
        Err(e) => {
            bar.println(format!(
                "harness: {}: {e:#} (compared with the floor from the start)",
                spec.run_id
            ));
            Some(*start)
        }
    }
}
