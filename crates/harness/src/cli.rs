//! The command line: `harness [--config FILE]`, `validate`, `list`, `calibrate`,
//! `render`, and the hidden role mode.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::anyhow;
use clap::{Parser, Subcommand};
use ipcbench_transport::dispatch::has_bare_baseline;
use ipcbench_transport::TransportKind;

use crate::exit::{print_stdout, UsageError, WriteError, EXIT_USAGE, EXIT_WRITE};
use crate::matrix::run_matrix;
use crate::spec::{RunSpec, COMMON};
use crate::{builtin, config, envinfo, role, workload};

#[derive(Parser, Debug)]
#[command(
    name = "harness",
    version,
    about = "ipcbench: benchmark IPC transports between pinned processes",
    long_about = "Runs an experiment matrix (or, with no --config, a built-in one-minute default) and writes \
                  summary.csv, .hgrm histograms and env.json under --out."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Experiment config (TOML); without it, the built-in default runs.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where results directories are created.
    #[arg(long, value_name = "DIR", default_value = "results")]
    out: PathBuf,
    /// Keep only runs whose KEY equals VALUE (e.g. transport=uds, msg_bytes=64, name=latency-shm); repeatable.
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    filters: Vec<String>,
    /// Divide counts and warm-ups by 10 (at least 100 and 10) for a quick look.
    #[arg(long)]
    quick: bool,
    /// The order of repetitions: `interleaved` runs repetition 0 of every point, then
    /// repetition 1 of every point, and so on, so a slow spell of the host lands on all
    /// points alike; `grouped` runs each point's repetitions one after another.
    #[arg(long, value_enum, default_value_t = Order::Interleaved)]
    order: Order,
}

/// The order of a matrix's repetitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Order {
    /// Repetition 0 of every point, then repetition 1, ...
    Interleaved,
    /// Every repetition of a point, then the next point.
    Grouped,
}

/// Puts `runs` (in the config's order, each point's repetitions together) in `order`.
pub fn order_runs(runs: &mut [RunSpec], order: Order) {
    if order == Order::Interleaved {
        // A stable sort: within a repetition, the config's order of points.
        runs.sort_by_key(|r| r.rep);
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse a config, expand its matrix and check its cores; run nothing. The runs are
    /// listed in the order a run takes them (`--order`).
    Validate {
        /// The config to check.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Transports, workloads and their parameters.
    List {
        /// As the Markdown tables of docs/parameters.md.
        #[arg(long)]
        markdown: bool,
    },
    /// Measure the hardware floor and the bare system-call baselines.
    Calibrate {
        /// The two cores to measure between (default: the first two usable).
        #[arg(long, value_delimiter = ',', value_name = "A,B")]
        cores: Option<Vec<usize>>,
        /// Where the results directory is created.
        #[arg(long, value_name = "DIR", default_value = "results")]
        out: PathBuf,
    },
    /// Render a pingpong log as a PNG: the image after its first N pixels.
    Render {
        /// The `[pos, colour]` log a pingpong run wrote (results/.../pingpong/<run>.log).
        #[arg(long, value_name = "FILE")]
        log: PathBuf,
        /// Pixels to draw (default: all).
        #[arg(long, value_name = "N")]
        upto: Option<u64>,
        /// The PNG to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Compare two results directories point by point: each figure's change of median
    /// with its interval, and a verdict; exit code 1 when a point got slower.
    Compare {
        /// The results directory to compare with.
        base: PathBuf,
        /// The results directory compared.
        new: PathBuf,
        /// Changes within this many percent are no change, whatever the intervals.
        #[arg(long, default_value_t = 5.0, value_name = "PCT")]
        threshold: f64,
        /// Also write every figure's comparison to this CSV file.
        #[arg(long, value_name = "FILE")]
        csv: Option<PathBuf>,
    },
    /// Remove the segments and run directories left by harness runs that are gone
    /// (killed, or on a machine that lost power); a run still going keeps its own.
    Clean,
    /// Internal: run one role of a run (spawned by the harness).
    #[command(name = "__role", hide = true)]
    Role,
}

/// The `harness` binary's main.
pub fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("__role") {
        return role::main();
    }
    let cli = Cli::parse();
    if matches!(cli.command, None | Some(Command::Calibrate { .. })) {
        crate::matrix::catch_stops();
    }
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            if let Some(u) = e.downcast_ref::<UsageError>() {
                note!("harness: {u}");
                ExitCode::from(EXIT_USAGE)
            } else if e.downcast_ref::<WriteError>().is_some() {
                note!("harness: {e:#}");
                ExitCode::from(EXIT_WRITE)
            } else {
                note!("harness: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::Role) => Ok(role::main()),
        Some(Command::Render { log, upto, out }) => {
            let n = crate::workload::pingpong::render_command(&log, upto, &out)
                .map_err(|e| UsageError(format!("render: {e:#}")))?;
            note!("harness: rendered {n} pixels into {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Compare {
            base,
            new,
            threshold,
            csv,
        }) => {
            let slower = crate::compare::run(&base, &new, threshold, csv.as_ref())?;
            Ok(if slower {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Some(Command::Clean) => {
            let swept = crate::leftovers::sweep();
            let mut text = String::new();
            for p in &swept.removed {
                text += &format!("removed {}\n", p.display());
            }
            text += &format!(
                "{} removed; {} in use by harness runs still going\n",
                swept.removed.len(),
                swept.in_use
            );
            print_stdout(&text);
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::List { markdown }) => {
            print_stdout(&if markdown {
                parameters_markdown()
            } else {
                list_text()
            });
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Validate { config }) => {
            let (label, text) = read_config(&config)?;
            let mut runs = parse_config(&label, &text)?;
            // In the order a run takes them (`--order`; repetitions interleaved by default).
            order_runs(&mut runs, cli.order);
            let mut text = format!("{label}: ok, {} runs\n", runs.len());
            for r in &runs {
                text += &format!(
                    "  {:<40} cores {:?}  timeout {:?}\n",
                    r.run_id,
                    r.common.cores,
                    r.timeout()
                );
            }
            print_stdout(&text);
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Calibrate { cores, out }) => {
            let usable = envinfo::usable_cores();
            let pair = match cores.as_deref() {
                Some([a, b]) => [*a, *b],
                Some(other) => {
                    return Err(UsageError(format!(
                        "--cores: expected two cores A,B, got {} ({other:?})",
                        other.len()
                    ))
                    .into())
                }
                None => envinfo::default_pair(&usable),
            };
            for c in pair {
                if !usable.contains(&c) {
                    return Err(UsageError(format!(
                        "--cores: core {c} is not usable on this machine (usable: {usable:?})"
                    ))
                    .into());
                }
            }
            let text = builtin::calibrate_config(pair);
            let runs = parse_config("calibrate", &text)?;
            run_matrix("calibrate", &text, runs, &out)
        }
        None => {
            let (stem, label, text) = match &cli.config {
                Some(path) => {
                    let (label, text) = read_config(path)?;
                    let stem = path
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "config".into());
                    (stem, label, text)
                }
                None => (
                    "default".to_string(),
                    "built-in default".to_string(),
                    builtin::DEFAULT_CONFIG.to_string(),
                ),
            };
            let mut runs = parse_config(&label, &text)?;
            runs = apply_filters(runs, &cli.filters)?;
            if cli.quick {
                for r in &mut runs {
                    r.point.quick();
                }
            }
            order_runs(&mut runs, cli.order);
            run_matrix(&stem, &text, runs, &cli.out)
        }
    }
}

fn read_config(path: &Path) -> anyhow::Result<(String, String)> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("{label}: cannot read config: {e}")))?;
    Ok((label, text))
}

fn parse_config(label: &str, text: &str) -> anyhow::Result<Vec<RunSpec>> {
    config::parse(label, text, &envinfo::usable_cores()).map_err(|errs| {
        let lines: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        anyhow!(UsageError(lines.join("\nharness: ")))
    })
}

fn apply_filters(runs: Vec<RunSpec>, filters: &[String]) -> anyhow::Result<Vec<RunSpec>> {
    let mut runs = runs;
    for f in filters {
        let Some((key, value)) = f.split_once('=') else {
            return Err(UsageError(format!("--filter {f:?}: expected KEY=VALUE")).into());
        };
        let known = matches!(key, "rep" | "run_id" | "experiment") || config::known_anywhere(key);
        if !known {
            return Err(UsageError(format!(
                "--filter {f:?}: no parameter `{key}` (see `harness list`)"
            ))
            .into());
        }
        runs.retain(|r| config::matches(r, key, value));
    }
    if runs.is_empty() {
        return Err(UsageError(format!("--filter {}: no run matches", filters.join(" "))).into());
    }
    Ok(runs)
}

/// `harness list`: transports, waits, the common keys and each workload's, from the
/// same tables the config reader checks against.
pub fn list_text() -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "Transports:");
    for t in TransportKind::ALL {
        let bare = if !t.built() {
            " (NOT IN THIS BUILD: built without its cargo feature)"
        } else if has_bare_baseline(t) {
            " (bare baseline: bare = true)"
        } else {
            ""
        };
        let _ = writeln!(s, "  {:<10} {}{bare}", t.name(), t.describe());
    }
    let _ = writeln!(s, "\nWait strategies (key `wait`, column `wait`):");
    let _ = writeln!(
        s,
        "  spin       shm: busy-poll with a pause hint; each spinning role needs a core of its own"
    );
    let _ = writeln!(
        s,
        "  yield      shm: poll with sched_yield; roles may share a core"
    );
    let _ = writeln!(
        s,
        "  block      shm: spin `spin_us`, then sleep on a futex; woken only when flagged"
    );
    let _ = writeln!(
        s,
        "  kernel     pipe, uds and tcp block in the kernel (set for them whatever `wait` says)"
    );
    let _ = writeln!(s, "\nKeys of every experiment:");
    for d in COMMON {
        let _ = writeln!(s, "{}", d.list_line());
    }
    for w in workload::REGISTRY {
        let _ = writeln!(
            s,
            "\nWorkload `{}`: {}\n  roles ({})",
            w.name(),
            w.describe(),
            w.roles_text()
        );
        for d in w.params() {
            let _ = writeln!(s, "{}", d.list_line());
        }
    }
    let _ = writeln!(s, "\nA list value sweeps the key: msg_bytes = [64, 1024] makes two runs; cores = [[0, 1], [0, 0]] sweeps placements.");
    s
}

/// `docs/parameters.md`: every key as a table row, from the same tables (a test holds
/// the file to it).
pub fn parameters_markdown() -> String {
    use std::fmt::Write as _;
    let mut s = String::from(
        "# Parameters\n\nGenerated from the code (`harness list --markdown`); a test fails when this file and \
         the code disagree. A list value sweeps a key.\n\n## Keys of every experiment\n\n",
    );
    let header = "| key | type | default | what it does |\n|---|---|---|---|\n";
    s += header;
    for d in COMMON {
        let _ = writeln!(s, "{}", d.markdown_row());
    }
    for w in workload::REGISTRY {
        let _ = write!(
            s,
            "\n## `{}`\n\n{}.\n\nRoles: {}.\n\n{header}",
            w.name(),
            w.describe(),
            w.roles_text()
        );
        for d in w.params() {
            let _ = writeln!(s, "{}", d.markdown_row());
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetitions_are_interleaved_unless_grouped() {
        let text = "[[experiment]]\nname = \"a\"\nworkload = \"latency\"\ntransport = [\"uds\", \"tcp\"]\nmsg_bytes = 64\nrepetitions = 3\n";
        let ids = |order| {
            let mut runs = config::parse("t.toml", text, &[0, 1]).unwrap();
            order_runs(&mut runs, order);
            runs.iter()
                .map(|r| format!("{}/{}", r.point_id, r.rep))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(Order::Interleaved),
            ["a-uds/0", "a-tcp/0", "a-uds/1", "a-tcp/1", "a-uds/2", "a-tcp/2"]
        );
        assert_eq!(
            ids(Order::Grouped),
            ["a-uds/0", "a-uds/1", "a-uds/2", "a-tcp/0", "a-tcp/1", "a-tcp/2"]
        );
    }
}
