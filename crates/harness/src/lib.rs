//! ipcbench-harness: everything behind the `harness` binary — config, run matrix,
//! spawning and pinning roles, collecting their measurements, CSV and `.hgrm` output,
//! `calibrate`, `validate` and `list`. It is the only part of ipcbench that reads TOML,
//! spawns processes or writes result files.
//!
//! ```no_run
//! // The `harness` binary is a thin main over this crate:
//! fn main() -> std::process::ExitCode {
//!     ipcbench_harness::main()
//! }
//! ```
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};
use ipcbench_transport::segment::Segment;
use ipcbench_transport::{Endpoint, EndpointOptions, TransportKind, WaitStrategy};
use ipcbench_workloads::latency::LatencyParams;
use ipcbench_workloads::throughput::ThroughputParams;

pub mod buffer;
pub mod builtin;
pub mod catalog;
pub mod config;
pub mod pingpong;
pub mod report;
pub mod role;
pub mod runner;
pub mod tasks;
pub mod vectors;
pub mod wire;

use catalog::{WorkloadKind, COMMON};
use config::RunSpec;
use report::{Floor, Summary, TableRow};
use runner::{RolePlan, RunPlan, Status};
use wire::RoleTask;

/// Exit code for bad input (config, arguments, output directory).
pub const EXIT_USAGE: u8 = 2;
/// Exit code after Ctrl-C.
pub const EXIT_INTERRUPTED: u8 = 130;
/// Bound on spawning, connecting and reaching the start barrier.
pub(crate) const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Bad input: reported as one line (or one per problem), exit code 2, nothing written.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

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
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse a config, expand its matrix and check its cores; run nothing.
    Validate {
        /// The config to check.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Transports, workloads and their parameters.
    List,
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
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            if let Some(u) = e.downcast_ref::<UsageError>() {
                eprintln!("harness: {u}");
                ExitCode::from(EXIT_USAGE)
            } else {
                eprintln!("harness: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::Role) => Ok(role::main()),
        Some(Command::Render { log, upto, out }) => {
            let n = pingpong::render_command(&log, upto, &out)
                .map_err(|e| UsageError(format!("render: {e:#}")))?;
            eprintln!("harness: rendered {n} pixels into {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::List) => {
            print_stdout(&list_text());
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Validate { config }) => {
            let (label, text) = read_config(&config)?;
            let runs = parse_config(&label, &text)?;
            let mut text = format!("{label}: ok, {} runs\n", runs.len());
            for r in &runs {
                text += &format!(
                    "  {:<40} cores {:?}  timeout {:?}\n",
                    r.run_id, r.cores, r.timeout
                );
            }
            print_stdout(&text);
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Calibrate { cores, out }) => {
            let usable = usable_cores();
            let pair = match cores.as_deref() {
                Some([a, b]) => [*a, *b],
                Some(other) => {
                    return Err(UsageError(format!(
                        "--cores: expected two cores A,B, got {} ({other:?})",
                        other.len()
                    ))
                    .into())
                }
                None => default_pair(&usable),
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
                    for (key, floor) in [("count", 100), ("warmup", 10)] {
                        if let Some(config::Value::Int(v)) = r.values.get_mut(key) {
                            *v = (*v / 10).max(floor.min(*v));
                        }
                    }
                }
            }
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

fn usable_cores() -> Vec<usize> {
    let mut ids: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort_unstable();
    if ids.is_empty() {
        ids.push(0);
    }
    ids
}

fn default_pair(usable: &[usize]) -> [usize; 2] {
    match usable {
        [a, b, ..] => [*a, *b],
        [a] => [*a, *a],
        [] => [0, 0],
    }
}

fn parse_config(label: &str, text: &str) -> anyhow::Result<Vec<RunSpec>> {
    config::parse(label, text, &usable_cores()).map_err(|errs| {
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
        let known = matches!(key, "rep" | "run_id" | "experiment") || catalog::known_anywhere(key);
        if !known {
            return Err(UsageError(format!(
                "--filter {f:?}: no parameter `{key}` (see `harness list`)"
            ))
            .into());
        }
        runs.retain(|r| r.matches(key, value));
    }
    if runs.is_empty() {
        return Err(UsageError(format!("--filter {}: no run matches", filters.join(" "))).into());
    }
    Ok(runs)
}

fn list_text() -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "Transports:");
    for t in TransportKind::ALL {
        let _ = writeln!(s, "  {:<10} {}", t.name(), t.describe());
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
    for w in WorkloadKind::ALL {
        let roles = if w == WorkloadKind::Buffer {
            "acquirer, then `workers` workers; they take the `cores` in turn".to_string()
        } else if w == WorkloadKind::Tasks {
            "client, gateway, then the workers the gateway starts; they take the `cores` in turn"
                .to_string()
        } else {
            format!("one core each, in order: {}", w.roles().join(", "))
        };
        let _ = writeln!(
            s,
            "\nWorkload `{}`: {}\n  roles ({roles})",
            w.name(),
            w.describe(),
        );
        for d in w.params() {
            let _ = writeln!(s, "{}", d.list_line());
        }
    }
    let _ = writeln!(s, "\nA list value sweeps the key: msg_bytes = [64, 1024] makes two runs; cores = [[0, 1], [0, 0]] sweeps placements.");
    s
}

/// Writes to stdout; a reader that went away (`| head`) ends the output, not the process.
fn print_stdout(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

/// Builds the plan of one run: its roles, their cores and tasks, and its endpoint (which
/// comes back too, for [`Endpoint::cleanup`]).
/// What a run needs besides its roles: the endpoints to clean up after it, and the shared
/// segment the parent created (a pingpong canvas or a buffer pool).
struct Prepared {
    plan: RunPlan,
    endpoints: Vec<Endpoint>,
    canvas: Option<Segment>,
    pool: Option<ipcbench_transport::pool::Pool>,
}

fn plan_run(spec: &RunSpec, dir: &Path, results: &Path) -> anyhow::Result<Prepared> {
    if spec.workload == WorkloadKind::Tasks {
        let (plan, endpoints) = tasks::plan(spec, dir)?;
        return Ok(Prepared {
            plan,
            endpoints,
            canvas: None,
            pool: None,
        });
    }
    let mut opts = EndpointOptions {
        max_frame: spec.int("max_frame") as u32,
        ..Default::default()
    };
    if spec.transport == TransportKind::Queue {
        opts.over = spec
            .text("over")
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?;
        opts.hwm = spec.int("hwm") as u32;
        opts.policy = spec.queue_policy();
    }
    if spec.over_shm() {
        let capacity = spec.int("shm_capacity") as usize;
        opts.shm_capacity = capacity as u32;
        opts.max_frame = opts
            .max_frame
            .min(ipcbench_transport::shm_max_frame(capacity) as u32);
        opts.wait = match spec.values.get("wait") {
            Some(config::Value::Str(w)) if w == "yield" => WaitStrategy::Yield,
            Some(config::Value::Str(w)) if w == "block" => WaitStrategy::Block,
            _ => WaitStrategy::Spin,
        };
        opts.spin_us = spec.int("spin_us") as u32;
    }
    if spec.workload == WorkloadKind::Buffer {
        return plan_buffer(spec, dir, &opts);
    }
    let endpoint = Endpoint::prepare(spec.transport, dir, &opts)?;
    let msg_bytes = spec.msg_bytes().unwrap_or(0);
    let (count, warmup, bare) = (
        spec.int("count") as u64,
        spec.int("warmup") as u64,
        spec.flag("bare"),
    );
    let roles = spec.workload.roles();
    let canvas = match spec.workload {
        WorkloadKind::Pingpong => Some(pingpong::create_canvas(
            &pingpong::params(spec),
            dir,
            &spec.run_id,
        )?),
        _ => None,
    };
    let canvas_path = canvas.as_ref().map(|c| c.path().to_path_buf());
    let task = |first: bool| match spec.workload {
        WorkloadKind::Buffer | WorkloadKind::Tasks => {
            unreachable!("planned by plan_buffer and tasks::plan")
        }
        WorkloadKind::Vectors => RoleTask::Vectors {
            endpoint: endpoint.clone(),
            listen: first,
            producer: first,
            params: vectors::params(spec),
            out_dir: results.join("vectors"),
        },
        WorkloadKind::Pingpong => RoleTask::Pingpong {
            endpoint: endpoint.clone(),
            listen: first,
            ping: first,
            canvas: canvas_path.clone().unwrap_or_default(),
            params: pingpong::params(spec),
        },
        WorkloadKind::Latency => RoleTask::Latency {
            endpoint: endpoint.clone(),
            listen: first,
            client: first,
            params: LatencyParams {
                msg_bytes,
                count,
                warmup,
                rate: spec.float("rate"),
                zero_copy: spec.flag("zero_copy"),
            },
            bare,
        },
        WorkloadKind::Throughput => RoleTask::Throughput {
            endpoint: endpoint.clone(),
            listen: first,
            sender: first,
            params: ThroughputParams {
                msg_bytes,
                count,
                warmup,
            },
            bare,
        },
    };
    let plan = RunPlan {
        run_id: spec.run_id.clone(),
        roles: roles
            .iter()
            .enumerate()
            .map(|(i, name)| RolePlan {
                name: (*name).to_string(),
                core: spec.cores.get(i).copied(),
                task: task(i == 0),
            })
            .collect(),
        setup_timeout: SETUP_TIMEOUT.min(spec.timeout.max(Duration::from_secs(5))),
        timeout: spec.timeout,
        dir: dir.to_path_buf(),
    };
    Ok(Prepared {
        plan,
        endpoints: vec![endpoint],
        canvas,
        pool: None,
    })
}

/// A buffer run: the pool, one endpoint per worker in copy mode, the acquirer and the
/// workers spread over the configured cores in turn.
fn plan_buffer(spec: &RunSpec, dir: &Path, opts: &EndpointOptions) -> anyhow::Result<Prepared> {
    let p = buffer::params(spec);
    let zero_copy = spec.flag("zero_copy");
    let mut opts = opts.clone();
    if !zero_copy {
        // Frames are whole chunks.
        opts.max_frame = opts.max_frame.max(p.chunk_bytes() as u32);
    }
    let pool = buffer::create_pool(spec, dir, usable_cores().len())?;
    let endpoints = if zero_copy {
        Vec::new()
    } else {
        (0..p.workers)
            .map(|w| {
                let sub = dir.join(format!("w{w}"));
                std::fs::create_dir(&sub).with_context(|| format!("creating {}", sub.display()))?;
                Ok(Endpoint::prepare(spec.transport, &sub, &opts)?)
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let timeout_ms = spec.timeout.as_millis() as u64;
    let roles = std::iter::once(("acquirer".to_string(), None))
        .chain((0..p.workers).map(|w| (format!("worker{w}"), Some(w))))
        .enumerate()
        .map(|(i, (name, worker))| RolePlan {
            name,
            core: spec.role_cores().get(i).copied(),
            task: RoleTask::Buffer {
                endpoints: endpoints.clone(),
                worker,
                pool: pool.path().to_path_buf(),
                params: p,
                timeout_ms,
            },
        })
        .collect();
    Ok(Prepared {
        plan: RunPlan {
            run_id: spec.run_id.clone(),
            roles,
            setup_timeout: SETUP_TIMEOUT.min(spec.timeout.max(Duration::from_secs(5))),
            timeout: spec.timeout,
            dir: dir.to_path_buf(),
        },
        endpoints,
        canvas: None,
        pool: Some(pool),
    })
}

fn run_dir() -> anyhow::Result<tempfile::TempDir> {
    // tempfile creates the directory with mode 0700.
    tempfile::Builder::new()
        .prefix("ipcbench-run-")
        .tempdir()
        .context("creating a private run directory")
}

/// Measures the floor between two cores: a cache-line ping-pong between two pinned
/// processes over a shared segment, the clock's cost and memcpy bandwidth.
pub fn calibrate(exe: &Path, cores: [usize; 2], interrupted: &AtomicBool) -> anyhow::Result<Floor> {
    let report = measure_floor(exe, cores, false, interrupted)?;
    let get = |k: &str| metric(&report, k);
    let (rtt_ns, rtt_p50_ns, one_line_rtt_ns) = round_trips(&report)?;
    Ok(Floor {
        cores,
        rtt_ns,
        rtt_p50_ns,
        one_line_rtt_ns,
        stream_ns: report.metric("floor_stream_ns"),
        clock_read_ns: get("clock_read_ns")?,
        memcpy_gb_s: get("memcpy_gb_s")?,
        stall_pct: get("stall_pct")?,
        stalls_10us_per_s: get("stalls_10us_per_s")?,
        stalls_1ms_per_s: get("stalls_1ms_per_s")?,
    })
}

/// The cache-line round trips and the line stream of `floor` measured again (a few tens
/// of milliseconds: no clock cost, stall loop or memcpy), for a run about to start: this host moves its
/// virtual cores now and then, and every transfer between them can cost four times more
/// for minutes at a time, so a floor from the start of the matrix may no longer be the
/// one a row was measured beside.
pub fn refresh_floor(exe: &Path, floor: &Floor, interrupted: &AtomicBool) -> anyhow::Result<Floor> {
    let report = measure_floor(exe, floor.cores, true, interrupted)?;
    let (rtt_ns, rtt_p50_ns, one_line_rtt_ns) = round_trips(&report)?;
    Ok(Floor {
        rtt_ns,
        rtt_p50_ns,
        one_line_rtt_ns,
        stream_ns: report.metric("floor_stream_ns"),
        ..*floor
    })
}

fn metric(report: &wire::RoleReport, k: &str) -> anyhow::Result<f64> {
    report
        .metric(k)
        .ok_or_else(|| anyhow!("calibration: no {k}"))
}

/// The floor's round trips from ping's report: a line each way (batch means, and timed
/// one at a time), and one line both ways.
fn round_trips(report: &wire::RoleReport) -> anyhow::Result<(f64, f64, f64)> {
    Ok((
        metric(report, "floor_rtt_ns")?,
        metric(report, "floor_rtt_p50_ns")?,
        metric(report, "floor_one_line_rtt_ns")?,
    ))
}

/// Runs the ping and pong roles of the floor on `cores` and returns ping's report.
fn measure_floor(
    exe: &Path,
    cores: [usize; 2],
    quick: bool,
    interrupted: &AtomicBool,
) -> anyhow::Result<wire::RoleReport> {
    let dir = run_dir()?;
    let shm_dir = Path::new("/dev/shm");
    let base = if shm_dir.is_dir() {
        shm_dir.to_path_buf()
    } else {
        dir.path().to_path_buf()
    };
    let seg_path = base.join(format!(
        "ipcbench-floor-{}-{}",
        std::process::id(),
        cores[0] * 1000 + cores[1]
    ));
    let _segment = Segment::create(&seg_path, role::FLOOR_SEGMENT_BYTES)?;
    let same_core = cores[0] == cores[1];
    let iterations = match (same_core, quick) {
        (true, false) => 20_000,
        (true, true) => 5_000,
        (false, false) => 200_000,
        (false, true) => 50_000,
    };
    let plan = RunPlan {
        run_id: format!("floor-{}-{}", cores[0], cores[1]),
        roles: [("ping", true, cores[0]), ("pong", false, cores[1])]
            .into_iter()
            .map(|(name, ping, core)| RolePlan {
                name: name.into(),
                core: Some(core),
                task: RoleTask::Floor {
                    segment: seg_path.clone(),
                    ping,
                    iterations,
                    same_core,
                    quick,
                },
            })
            .collect(),
        setup_timeout: SETUP_TIMEOUT,
        timeout: Duration::from_secs(90),
        dir: dir.path().to_path_buf(),
    };
    let outcome = runner::execute(exe, &plan, interrupted);
    if outcome.status != Status::Ok {
        return Err(anyhow!(
            "calibration on cores {cores:?}: {}",
            outcome.status.text()
        ));
    }
    outcome
        .reports
        .first()
        .cloned()
        .flatten()
        .ok_or_else(|| anyhow!("calibration: no report"))
}

fn interrupted_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    // If a handler is already set (a second matrix in one process), keep the first.
    let _ = ctrlc::set_handler(move || f.store(true, Ordering::SeqCst));
    flag
}

fn run_matrix(
    stem: &str,
    config_text: &str,
    runs: Vec<RunSpec>,
    out: &Path,
) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("locating the harness binary")?;
    let interrupted = interrupted_flag();
    let results =
        report::create_results_dir(out, stem).map_err(|e| UsageError(format!("{e:#}")))?;
    eprintln!(
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
        match calibrate(&exe, pair, &interrupted) {
            Ok(f) => {
                eprintln!(
                    "harness: floor on cores {}-{}: cache-line round trip {:.0} ns (a line each way; timed one at a time, p50 {:.0} ns; \
                     one line both ways {:.0} ns), line stream {}, clock read {:.1} ns, memcpy {:.1} GB/s; \
                     stalls {:.2} % of the time, {:.0}/s over 10 µs, {:.1}/s over 1 ms",
                    pair[0], pair[1], f.rtt_ns, f.rtt_p50_ns, f.one_line_rtt_ns, f.stream_text(), f.clock_read_ns, f.memcpy_gb_s, f.stall_pct,
                    f.stalls_10us_per_s, f.stalls_1ms_per_s
                );
                floors.insert(pair, f);
            }
            Err(e) => eprintln!("harness: {e:#} (floor columns left empty)"),
        }
    }
    let damon = damon();
    if let Some(d) = &damon {
        eprintln!(
            "harness: note: the kernel's DAMON is monitoring memory here ({d}); its thread \
             (kdamond) preempts the role on whichever core it runs, which can show in latency \
             tails (results/README.md, \"Machine notes\")"
        );
    }
    env_json(
        &results.join("env.json"),
        config_text,
        &runs,
        &floors,
        damon.as_deref(),
    )?;

    let workloads: Vec<WorkloadKind> = runs.iter().map(|r| r.workload).collect();
    let mut summary = Summary::create(&results.join("summary.csv"), &workloads)?;
    let bar = indicatif::ProgressBar::new(runs.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} runs, {elapsed} elapsed  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut table = Vec::new();
    let mut failed = 0;
    // The harness's own private memory after each pingpong check (the canvas it reads is
    // shared memory, counted apart).
    let mut peak_private_kib = 0u64;
    for (i, spec) in runs.iter().enumerate() {
        if interrupted.load(Ordering::Relaxed) {
            break;
        }
        bar.set_message(spec.run_id.clone());
        let pair = spec.core_pair();
        let floor = match (
            floors.get(&pair),
            spec.workload.compared_with_core_transfers(),
        ) {
            (Some(f), true) => match refresh_floor(&exe, f, &interrupted) {
                Ok(fresh) => {
                    // Worth a note: a figure that moved by more than 1.5x either way.
                    let moved = |now: f64, then: f64| !(1.0 / 1.5..=1.5).contains(&(now / then));
                    if moved(fresh.rtt_ns, f.rtt_ns) {
                        bar.println(format!(
                            "harness: {}: the cache-line round trip is {:.0} ns now, {:.0} ns at the start \
                             (the host moved the cores); this row is compared with the new one",
                            spec.run_id, fresh.rtt_ns, f.rtt_ns
                        ));
                    }
                    if let (Some(now), Some(then)) = (fresh.stream_ns, f.stream_ns) {
                        if spec.workload == WorkloadKind::Throughput && moved(now, then) {
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
                    Some(*f)
                }
            },
            (f, _) => f.copied(),
        };
        if interrupted.load(Ordering::Relaxed) {
            break;
        }
        let dir = run_dir()?;
        let mut extra: Vec<(String, f64)> = Vec::new();
        let outcome = match plan_run(spec, dir.path(), &results) {
            Ok(Prepared {
                plan,
                endpoints,
                canvas,
                pool,
            }) => {
                let total = canvas.as_ref().map(|_| {
                    let p = pingpong::params(spec);
                    u64::from(p.width) * u64::from(p.height)
                });
                let tick = || {
                    if let (Some(c), Some(total)) = (&canvas, total) {
                        let done = ipcbench_workloads::pingpong::progress(c.words32());
                        bar.set_message(format!("{}: {done}/{total} pixels", spec.run_id));
                    }
                };
                let mut outcome = runner::execute_with(&exe, &plan, &interrupted, &tick);
                // Every role is gone now: remove the shm segments, if there are any.
                for e in &endpoints {
                    e.cleanup();
                }
                if let (Some(pool), runner::Status::Ok) = (&pool, &outcome.status) {
                    match buffer::check(spec, pool, &outcome) {
                        Ok(m) => extra = m,
                        Err(why) => outcome.status = Status::Failed(why),
                    }
                }
                // The pool segment is removed here.
                drop(pool);
                if let (Some(c), runner::Status::Ok) = (&canvas, &outcome.status) {
                    let p = pingpong::params(spec);
                    match pingpong::check_and_save(
                        c,
                        &p,
                        &results.join("pingpong"),
                        &spec.run_id,
                        spec.flag("artefacts"),
                    ) {
                        Ok(_) => {
                            extra = pingpong_metrics(&p, &outcome);
                            peak_private_kib =
                                peak_private_kib.max(pingpong::own_private_kib().unwrap_or(0));
                        }
                        Err(e) => outcome.status = Status::Failed(format!("check: {e:#}")),
                    }
                }
                // The canvas segment is removed here.
                drop(canvas);
                outcome
            }
            Err(e) => runner::RunOutcome {
                status: Status::Failed(format!("setup: {e:#}")),
                reports: vec![],
                last_words: vec![],
            },
        };
        // Removes the FIFOs, sockets and role logs of this run.
        drop(dir);
        if outcome.status == Status::Interrupted {
            for w in &outcome.last_words {
                eprintln!("harness: {}: {w}", spec.run_id);
            }
            break;
        }
        let (figures, hist) = match report::figures(spec, &outcome, floor.as_ref()) {
            Ok(x) => x,
            Err(e) => {
                let status = Status::Failed(format!("bad report: {e:#}"));
                summary.row(spec, &status, &Default::default())?;
                failed += 1;
                continue;
            }
        };
        if let Some(h) = &hist {
            report::write_hgrm(
                &results
                    .join("histograms")
                    .join(format!("{}.hgrm", spec.run_id)),
                h,
            )?;
        }
        let mut figures = figures;
        figures.metrics.extend(extra);
        let mut outcome = outcome;
        if spec.workload == WorkloadKind::Vectors && outcome.status == Status::Ok {
            if let Some(why) = vectors::check(&figures.metrics) {
                outcome.status = Status::Failed(why);
            }
        }
        if spec.workload == WorkloadKind::Tasks && outcome.status == Status::Ok {
            let (extra, why) = tasks::check(spec, &figures.metrics);
            figures.metrics.extend(extra);
            if let Some(why) = why {
                outcome.status = Status::Failed(why);
            }
        }
        summary.row(spec, &outcome.status, &figures)?;
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
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
        bar.inc(1);
        table.push(TableRow {
            run_id: spec.run_id.clone(),
            status: outcome.status.text(),
            figures,
        });
    }
    bar.finish_and_clear();
    print_stdout(&report::table_text(&table));
    if peak_private_kib > 0 {
        eprintln!(
            "harness: its own private memory after the pingpong checks: at most {:.1} MiB (RssAnon)",
            peak_private_kib as f64 / 1024.0
        );
    }
    if interrupted.load(Ordering::Relaxed) {
        eprintln!(
            "harness: interrupted after {} of {} runs; every role stopped and its files removed; completed rows are in {}",
            table.len(),
            runs.len(),
            results.display()
        );
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    print_stdout(&format!("\nresults: {}\n", results.display()));
    if failed > 0 {
        eprintln!(
            "harness: {failed} of {} runs did not end ok (see the status column)",
            runs.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The pingpong columns of a run that passed its checks.
fn pingpong_metrics(
    p: &ipcbench_workloads::pingpong::PingpongParams,
    outcome: &runner::RunOutcome,
) -> Vec<(String, f64)> {
    let pixels = u64::from(p.width) * u64::from(p.height);
    let secs = outcome
        .reports
        .first()
        .and_then(|r| r.as_ref())
        .map_or(0.0, |r| r.duration_ns as f64 / 1e9);
    let mut m = vec![
        ("width".to_string(), f64::from(p.width)),
        ("height".to_string(), f64::from(p.height)),
        ("pixels".to_string(), pixels as f64),
    ];
    if secs > 0.0 {
        m.push(("ns_per_pixel".into(), secs * 1e9 / pixels as f64));
        if let Some(orig) = pingpong::original_s(p.width, p.height) {
            m.push(("speedup_vs_original".into(), orig / secs));
        }
    }
    m
}

fn first_line_of(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// The running DAMON monitors (the kernel's data-access monitor, which some hosts use
/// for proactive reclaim), e.g. "paddr, sampling every 500 ms, scheme pageout"; `None`
/// when none runs or the sysfs interface is absent.
fn damon() -> Option<String> {
    let root = Path::new("/sys/kernel/mm/damon/admin/kdamonds");
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root).ok()?.flatten() {
        let k = entry.path();
        if read(&k.join("state")).as_deref() != Some("on") {
            continue;
        }
        let Ok(contexts) = std::fs::read_dir(k.join("contexts")) else {
            continue;
        };
        for c in contexts.flatten().map(|e| e.path()).filter(|p| p.is_dir()) {
            let ops = read(&c.join("operations")).unwrap_or_else(|| "?".into());
            let sample_ms = read(&c.join("monitoring_attrs/intervals/sample_us"))
                .and_then(|v| v.parse::<f64>().ok())
                .map_or_else(|| "?".into(), |us| format!("{}", us / 1000.0));
            let schemes: Vec<String> = std::fs::read_dir(c.join("schemes"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| read(&e.path().join("action")))
                .collect();
            let mut d = format!("{ops}, sampling every {sample_ms} ms");
            if !schemes.is_empty() {
                d += &format!(", scheme {}", schemes.join("+"));
            }
            found.push(d);
        }
    }
    (!found.is_empty()).then(|| found.join("; "))
}

fn env_json(
    path: &Path,
    config_text: &str,
    runs: &[RunSpec],
    floors: &BTreeMap<[usize; 2], Floor>,
    damon: Option<&str>,
) -> anyhow::Result<()> {
    let uts = nix::sys::utsname::uname().ok();
    let mut cores_used: Vec<usize> = runs.iter().flat_map(|r| r.cores.iter().copied()).collect();
    cores_used.sort_unstable();
    cores_used.dedup();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hypervisor = cpuinfo
        .lines()
        .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor"));
    let virt = std::fs::read_to_string("/sys/hypervisor/type")
        .ok()
        .map(|s| s.trim().to_string());
    let env = serde_json::json!({
        "ipcbench_version": env!("CARGO_PKG_VERSION"),
        "git_commit": env!("IPCBENCH_GIT_COMMIT"),
        "rustc": env!("IPCBENCH_RUSTC_VERSION"),
        "created_utc": report::utc_stamp(std::time::SystemTime::now()),
        "cpu_model": first_line_of("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into()),
        "logical_cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "usable_cores": usable_cores(),
        "cores_used": cores_used,
        "kernel": uts.as_ref().map(|u| format!("{} {} {}", u.sysname().to_string_lossy(), u.release().to_string_lossy(), u.version().to_string_lossy())),
        "machine": uts.as_ref().map(|u| u.machine().to_string_lossy().into_owned()),
        "governor": std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").map(|s| s.trim().to_string()).unwrap_or_else(|_| "unavailable".into()),
        "damon": damon.unwrap_or("off or unavailable"),
        "virtualisation": if hypervisor { virt.unwrap_or_else(|| "hypervisor present".into()) } else { "none detected".into() },
        "floors": floors.values().collect::<Vec<_>>(),
        "runs": runs.len(),
        "config": config_text,
    });
    std::fs::write(path, serde_json::to_string_pretty(&env)?)
        .with_context(|| format!("writing {}", path.display()))
}
