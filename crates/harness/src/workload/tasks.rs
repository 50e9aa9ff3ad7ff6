//! The `tasks` workload in the harness: its data (the shipped files, files named in the
//! config, or generated), its plan (a client-gateway link and, per worker slot, a task
//! endpoint and a result endpoint, all prepared here so that every file is removed when
//! the run ends), its roles, and the check of what they report.
//!
//! The gateway's workers are processes forked (without exec) by a small server the
//! gateway forks first thing (see [`ForkServer`]); each runs its job as a role process
//! would. They stay in the gateway's process group, so the runner's kill of the group
//! takes them with it, and each dies with its server, the server with the gateway
//! (`PR_SET_PDEATHSIG`).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Read, Write};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use ipcbench_transport::dispatch::{self, WithTransport};
use ipcbench_transport::queue::Acceptor;
use ipcbench_transport::{
    Endpoint, EndpointOptions, Transport, TransportKind, WaitStrategy, ZmqPattern,
};
use ipcbench_workloads::tasks::{self, TasksParams, WorkerExit, Workers};
use ipcbench_workloads::tasks_data::{self, Answer, ClientLine, Command as Cmd};
use ipcbench_workloads::tasks_exec::TaskKind;
use ipcbench_workloads::WorkloadError;
use serde::{Deserialize, Serialize};

use crate::floor::Floor;
use crate::params::{self, p, ParamDef, ParamType, Value, SEED};
use crate::runner::{RolePlan, RunOutcome, RunPlan};
use crate::spec::{
    About, After, Checking, Column, Common, FloorUse, Frame, Machine, Point, Prepared, Problem,
    Roles, RowFloor, RunSpec, Workload,
};
use crate::wire::{emit, wait_for_go, RoleEvent, RoleJob, RoleReport};

/// The original's client file, built in (`client_file = ""`).
pub const CLIENT_512: &str = include_str!("../../../../bench-configs/data/client_512.txt");
/// The original's gateway file, built in (`server_file = ""`).
pub const SERVER_512: &str = include_str!("../../../../bench-configs/data/server_512.txt");

/// The largest data file read: 16 MiB (the shipped ones are 10 KiB).
pub const MAX_DATA_BYTES: u64 = 16 << 20;

/// The registry's entry.
#[derive(Debug)]
pub struct Tasks;

const NAME: &str = "tasks";

const PARAMS: &[ParamDef] = &[
    p(
        "batch",
        ParamType::Int { min: 1, max: 65_536 },
        Some("16"),
        "lines per batch",
    ),
    p(
        "max_workers",
        ParamType::Int { min: 1, max: 256 },
        Some("32"),
        "most worker processes at once (started lazily)",
    ),
    p(
        "threads",
        ParamType::Bool,
        Some("true"),
        "a worker runs its batch one thread per command (false: one after another)",
    ),
    p(
        "kind",
        ParamType::Choice(&["io", "cpu", "cpu_ms"]),
        Some("\"io\""),
        "per command: io sleeps its wait, cpu spins `iterations` loop turns, cpu_ms spins `cpu_ms` of CPU time",
    ),
    p(
        "iterations",
        ParamType::Int {
            min: 1,
            max: 1_000_000_000_000,
        },
        Some("2000000"),
        "kind = \"cpu\": loop iterations per command (the original: 2,000,000)",
    ),
    p(
        "cpu_ms",
        ParamType::Float {
            min: 0.0,
            max: 3_600_000.0,
        },
        Some("70"),
        "kind = \"cpu_ms\": CPU milliseconds per command (the original's loop took about 70 ms)",
    ),
    p(
        "wait_s",
        ParamType::Float {
            min: 0.0,
            max: 3600.0,
        },
        Some("0"),
        "if > 0, every io command sleeps this long instead of the data file's wait",
    ),
    p(
        "client_file",
        ParamType::Path,
        Some("\"\""),
        "the client's ip:command lines (empty: the shipped client_512.txt)",
    ),
    p(
        "server_file",
        ParamType::Path,
        Some("\"\""),
        "the gateway's ip:command:response:wait_s lines (empty: the shipped server_512.txt)",
    ),
    p(
        "generate",
        ParamType::Int { min: 0, max: 1_000_000 },
        Some("0"),
        "if > 0, generate this many lines instead of reading files, waits uniform in [gen_low_s, gen_high_s]",
    ),
    p(
        "gen_low_s",
        ParamType::Float {
            min: 0.0,
            max: 3600.0,
        },
        Some("1"),
        "generate: shortest wait",
    ),
    p(
        "gen_high_s",
        ParamType::Float {
            min: 0.0,
            max: 3600.0,
        },
        Some("3"),
        "generate: longest wait",
    ),
    p("seed", SEED, Some("1"), "generate: the waits' seed"),
    p(
        "kill_worker_after",
        ParamType::Int {
            min: 0,
            max: 1_000_000,
        },
        Some("0"),
        "fault injection: kill the worker that takes the N-th batch, mid-batch (0: none)",
    ),
    p(
        "idle_timeout_s",
        ParamType::Float {
            min: 0.001,
            max: crate::params::MAX_SECONDS,
        },
        Some("10"),
        "a worker without a batch for this long leaves (is reaped)",
    ),
];

const COLUMNS: &[Column] = &[
    Column {
        name: "makespan_s",
        doc: "first push to last result",
    },
    Column {
        name: "ideal_s",
        doc: "the bound",
    },
    Column {
        name: "makespan_over_ideal",
        doc: "makespan over the bound",
    },
    Column {
        name: "tasks",
        doc: "client lines",
    },
    Column {
        name: "batches",
        doc: "batches pushed",
    },
    Column {
        name: "results_ok",
        doc: "batches that came back",
    },
    Column {
        name: "duplicates",
        doc: "results received twice",
    },
    Column {
        name: "response_sum",
        doc: "sum of responses",
    },
    Column {
        name: "unknown",
        doc: "lines the gateway did not know",
    },
    Column {
        name: "redispatched",
        doc: "batches handed out again",
    },
    Column {
        name: "dropped",
        doc: "batches dropped by the full policy",
    },
    Column {
        name: "workers_started",
        doc: "workers started",
    },
    Column {
        name: "workers_peak",
        doc: "most workers at once",
    },
    Column {
        name: "workers_reaped",
        doc: "workers that left idle",
    },
    Column {
        name: "workers_killed",
        doc: "workers killed by the fault",
    },
    Column {
        name: "cpu_ms_per_command",
        doc: "CPU per command",
    },
];

/// What a command does, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Io,
    Cpu,
    CpuMs,
}

/// `tasks`' parameters, typed (keys and docs: [`PARAMS`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    batch: u32,
    max_workers: u32,
    threads: bool,
    kind: Kind,
    iterations: u64,
    cpu_ms: f64,
    wait_s: f64,
    client_file: String,
    server_file: String,
    generate: u32,
    gen_low_s: f64,
    gen_high_s: f64,
    seed: u64,
    kill_worker_after: u32,
    idle_timeout_s: f64,
}

/// A run's data: the two files' text and names, read and checked when the config is.
#[derive(Debug, Clone)]
struct Data {
    client: String,
    client_name: String,
    server: String,
    server_name: String,
    lines: Vec<ClientLine>,
    table: HashMap<(Ipv4Addr, Cmd), Answer>,
}

/// A point: its parameters and its data.
#[derive(Debug)]
struct TasksPoint {
    p: Params,
    /// `Err`: why the data cannot be had, and the key to blame (reported by validate).
    /// Shared by the points that read the same data.
    data: SharedData,
}

/// A point's data, or why there is none and the key to blame; shared.
type SharedData = std::sync::Arc<Result<Data, (String, &'static str)>>;

thread_local! {
    /// The data of the points read so far in this thread, by what decides it: a sweep
    /// of thousands of points over one file reads and parses it once. A config is read
    /// in one go, so what a file held when the config was read is what its runs use.
    static DATA: std::cell::RefCell<HashMap<String, SharedData>> =
        std::cell::RefCell::new(HashMap::new());
}

/// Reads a data file the config names: a regular file of at most [`MAX_DATA_BYTES`],
/// opened without blocking (a FIFO would hang the reader) and read to that bound.
fn read_data_file(path: &str) -> Result<String, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{path} is not a regular file"));
    }
    if meta.len() > MAX_DATA_BYTES {
        return Err(format!(
            "{path} has {} bytes: at most {MAX_DATA_BYTES} (16 MiB)",
            meta.len()
        ));
    }
    let mut text = String::new();
    file.take(MAX_DATA_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    if text.len() as u64 > MAX_DATA_BYTES {
        return Err(format!(
            "{path} grew past {MAX_DATA_BYTES} bytes while read"
        ));
    }
    Ok(text)
}

impl Params {
    /// The data a run uses: generated, read from the configured files, or the shipped
    /// files. `Err` is a message naming the key (and, for a bad line, the file and line).
    fn data(&self) -> Result<Data, (String, &'static str)> {
        let (client, client_name, server, server_name) = if self.generate > 0 {
            if self.gen_high_s < self.gen_low_s {
                return Err((
                    format!(
                        "gen_high_s {} is below gen_low_s {}",
                        self.gen_high_s, self.gen_low_s
                    ),
                    "gen_high_s",
                ));
            }
            let g = tasks_data::generate(
                self.generate as usize,
                self.gen_low_s,
                self.gen_high_s,
                self.seed,
            );
            (
                g.client,
                format!("generated client lines (seed {})", self.seed),
                g.server,
                format!("generated gateway lines (seed {})", self.seed),
            )
        } else {
            let read = |key: &'static str, path: &str, builtin: &str, name: &str| {
                if path.is_empty() {
                    return Ok((builtin.to_string(), name.to_string()));
                }
                read_data_file(path)
                    .map(|t| (t, path.to_string()))
                    .map_err(|m| (m, key))
            };
            let (c, cn) = read(
                "client_file",
                &self.client_file,
                CLIENT_512,
                "client_512.txt (built in)",
            )?;
            let (s, sn) = read(
                "server_file",
                &self.server_file,
                SERVER_512,
                "server_512.txt (built in)",
            )?;
            (c, cn, s, sn)
        };
        let lines = tasks_data::parse_client(&client_name, &client)
            .map_err(|e| (e.to_string(), "client_file"))?;
        if lines.is_empty() {
            return Err((
                format!("{client_name}: no client lines: nothing to run"),
                "client_file",
            ));
        }
        let table = tasks_data::parse_server(&server_name, &server)
            .map_err(|e| (e.to_string(), "server_file"))?;
        Ok(Data {
            client,
            client_name,
            server,
            server_name,
            lines,
            table,
        })
    }

    /// The roles' parameters.
    fn role_params(&self, common: &Common) -> TasksParams {
        let kind = match self.kind {
            Kind::Cpu => TaskKind::Cpu {
                iterations: self.iterations,
            },
            Kind::CpuMs => TaskKind::CpuMs { ms: self.cpu_ms },
            Kind::Io => TaskKind::Io,
        };
        TasksParams {
            batch: self.batch,
            max_workers: self.max_workers,
            threads: self.threads,
            kind,
            wait_s: self.wait_s,
            hwm: common.hwm,
            policy: common.queue_policy(),
            kill_worker_after: self.kill_worker_after,
            idle_timeout_s: self.idle_timeout_s,
            timeout_ms: common.timeout().as_millis() as u64,
        }
    }

    /// The makespan's bound, `None` for the cpu kinds (their time is what is measured,
    /// not given).
    fn ideal_s(&self, data: &Data) -> Option<f64> {
        if self.kind != Kind::Io {
            return None;
        }
        let waits: Vec<f64> = answered(&data.lines, &data.table)
            .map(|a| {
                if self.wait_s > 0.0 {
                    self.wait_s
                } else {
                    a.wait_s
                }
            })
            .collect();
        Some(tasks::ideal_s(
            &waits,
            self.batch as usize,
            self.max_workers as usize,
            self.threads,
        ))
    }

    /// Frames are batches: 16 bytes a command, a little header.
    fn frame(&self) -> usize {
        64 + 16 * self.batch as usize
    }
}

/// The answers the client's lines get from the table (the lines it does not know get
/// none), in order.
fn answered<'a>(
    lines: &'a [ClientLine],
    table: &'a HashMap<(Ipv4Addr, Cmd), Answer>,
) -> impl Iterator<Item = &'a Answer> {
    lines.iter().filter_map(|l| table.get(&(l.ip, l.command)))
}

/// Which `tasks` role a process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TasksRole {
    /// Pushes batches, pulls results.
    Client,
    /// Looks lines up, starts workers, hands out batches.
    Gateway,
    /// Runs batches; started by the gateway on slot `slot`.
    Worker {
        /// Its slot (and worker id).
        slot: u32,
    },
}

/// What a tasks role is to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Task {
    role: TasksRole,
    /// The client-gateway link (the client listens on it).
    link: Endpoint,
    /// Result slots, one per worker (the client listens on them; a worker gets its own
    /// only).
    results: Vec<Endpoint>,
    /// Task slots, one per worker (the gateway listens on them; a worker gets its own
    /// only).
    tasks: Vec<Endpoint>,
    /// Over ZeroMQ: the gateway's control socket (its `PUB` of the poison pill).
    #[serde(default)]
    control: Option<Endpoint>,
    /// Cores the workers take in turn (the gateway's list).
    worker_cores: Vec<usize>,
    /// The client's lines (client) or the table (gateway), as file text.
    data: String,
    /// The data's file name, for messages.
    data_name: String,
    params: TasksParams,
}

const ABOUT: About = About {
    name: NAME,
    describe: "a client pushes batches of lines to a gateway, which hands them first-free to lazily started worker processes that sleep (or spin) per command and push results straight back; makespan against the bound",
    roles: "client, gateway, then the workers the gateway starts; they take the `cores` in turn",
    params: PARAMS,
    columns: COLUMNS,
    headline: Some(("makespan_s", false)),
};

impl Workload for Tasks {
    fn about(&self) -> &'static About {
        &ABOUT
    }
    fn point(&self, values: &BTreeMap<String, Value>) -> Result<Box<dyn Point>, String> {
        let p: Params = params::deserialize(PARAMS, values)?;
        // Every data file is read and every line checked now, not when the run starts.
        // Keyed by what decides the data, the files' identity and change time included,
        // so a file rewritten between two reads in one process is read again.
        let stamp = |path: &str| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(path)
                .map(|m| (m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
                .ok()
        };
        let key = format!(
            "{:?}",
            (
                &p.client_file,
                stamp(&p.client_file),
                &p.server_file,
                stamp(&p.server_file),
                p.generate,
                p.gen_low_s.to_bits(),
                p.gen_high_s.to_bits(),
                p.seed
            )
        );
        let data = DATA.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.len() > 64 {
                cache.clear();
            }
            cache
                .entry(key)
                .or_insert_with(|| std::sync::Arc::new(p.data()))
                .clone()
        });
        Ok(Box::new(TasksPoint { p, data }))
    }
    fn role(&self, job: &RoleJob, stdin: &mut dyn BufRead) -> anyhow::Result<RoleReport> {
        let task: Task = job.task()?;
        #[cfg(feature = "zmq")]
        if matches!(task.link, Endpoint::Zmq { .. }) {
            return zmq_role(job, &task, stdin);
        }
        dispatch::dispatch(
            &task.link,
            Role {
                job,
                task: &task,
                stdin,
            },
        )?
    }
}

impl Point for TasksPoint {
    fn roles(&self) -> Roles {
        Roles::Spread {
            count: 2 + self.p.max_workers.max(1) as usize,
        }
    }
    fn largest_frame(&self, _: &Common) -> Option<Frame> {
        // Its endpoints are sized for its batches whatever max_frame and shm_capacity say.
        None
    }
    fn spins(&self, _: &Common) -> bool {
        // Its shm halves block whatever `wait` says.
        false
    }
    fn wait_label(&self) -> Option<&'static str> {
        Some("block")
    }
    fn least_s(&self, _: &Common) -> Option<f64> {
        self.data
            .as_ref()
            .as_ref()
            .ok()
            .and_then(|d| self.p.ideal_s(d))
    }
    fn validate(&self, common: &Common, _: &Machine) -> Vec<Problem> {
        let mut out = Vec::new();
        match common.transport {
            TransportKind::Queue => {}
            TransportKind::Zmq if cfg!(feature = "zmq") => {
                if common.zmq_pattern != ZmqPattern::PushPull {
                    out.push(Problem::new(
                        "zmq_pattern",
                        "tasks over zmq replays the original's PUSH/PULL sockets: set zmq_pattern = \"pushpull\"",
                    ));
                }
                if self.p.kill_worker_after > 0 {
                    out.push(Problem::new(
                        "kill_worker_after",
                        "ZeroMQ's PUSH never hands a dead worker's batch to another (the original's fault): killing a worker needs transport = \"queue\"",
                    ));
                }
            }
            TransportKind::Zmq => out.push(Problem::new(
                "transport",
                "tasks over zmq needs the harness built with its `zmq` feature",
            )),
            _ => out.push(Problem::new(
                "transport",
                "tasks runs over queue sockets (transport = \"queue\", over = \"uds\", \"tcp\" or \"shm\") or over real ZeroMQ (transport = \"zmq\", zmq_pattern = \"pushpull\", over = \"uds\" or \"tcp\")",
            )),
        }
        if let Err((m, key)) = self.data.as_ref() {
            out.push(Problem::new(key, m.clone()));
        }
        out
    }
    fn how_note(&self, common: &Common) -> Option<&'static str> {
        Some(if common.transport == TransportKind::Zmq {
            "the original's sockets: every worker started at once, batches dealt in turn by the gateway's PUSH, the poison pill published on a PUB"
        } else {
            "batches handed first-free to lazily started workers over a reliable PUSH (redelivered if a worker dies)"
        })
    }
    fn uses_policy(&self, common: &Common) -> bool {
        matches!(common.transport, TransportKind::Queue | TransportKind::Zmq)
    }
    fn floor_use(&self) -> FloorUse {
        FloorUse::None
    }
    fn floor(&self, _: &Floor, _: &RoleReport, _: Option<f64>) -> Option<RowFloor> {
        // The bound on the makespan is the workload's own (`ideal_s`), not the machine's.
        None
    }
    fn plan(&self, run: &RunSpec, dir: &Path, _results: &Path) -> anyhow::Result<Prepared> {
        let d = self
            .data
            .as_ref()
            .as_ref()
            .map_err(|(m, k)| anyhow::anyhow!("{k}: {m}"))?;
        let p = self.p.role_params(&run.common);
        let over = run.common.over;
        let frame = self.p.frame();
        let mut opts = EndpointOptions {
            max_frame: frame.max(4096) as u32,
            shm_capacity: (4 * frame).next_power_of_two().max(64 << 10) as u32,
            wait: WaitStrategy::Block,
            spin_us: run.common.spin_us,
            ..Default::default()
        };
        // Over ZeroMQ, one socket each where the queue has a slot per worker.
        let zmq = run.common.transport == TransportKind::Zmq;
        let kind = if zmq {
            opts.over = over;
            opts.zmq_pattern = ZmqPattern::PushPull;
            opts.hwm = run.common.hwm;
            TransportKind::Zmq
        } else {
            over
        };
        // The client listens on the link and the results (at its host's address, the
        // workers on the gateway's host connect to it); the gateway on the tasks and the
        // control (its workers are on its host: loopback).
        let mut client_opts = opts.clone();
        if let Some(addr) = run.bind_address(0) {
            client_opts.tcp_host = addr;
        }
        let mut made = super::Made::default();
        let mut prepare = |name: String, opts: &EndpointOptions| -> anyhow::Result<Endpoint> {
            let sub = dir.join(name);
            crate::runner::private_dir(&sub)?;
            made.prepare(kind, &sub, opts)
        };
        let n = if zmq { 1 } else { slots(&p) };
        let link = prepare("link".into(), &client_opts)?;
        let control = if zmq {
            Some(prepare("control".into(), &opts)?)
        } else {
            None
        };
        let results = (0..n)
            .map(|k| prepare(format!("r{k}"), &client_opts))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let tasks_eps = (0..n)
            .map(|k| prepare(format!("t{k}"), &opts))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let cores = run.role_cores();
        let task = |role: TasksRole, data: &str, name: &str| Task {
            role,
            link: link.clone(),
            results: results.clone(),
            tasks: tasks_eps.clone(),
            control: control.clone(),
            worker_cores: cores.iter().skip(2).copied().collect(),
            data: data.to_string(),
            data_name: name.to_string(),
            params: p,
        };
        let roles = vec![
            RolePlan::new(
                "client",
                cores.first().copied(),
                NAME,
                &task(TasksRole::Client, &d.client, &d.client_name),
            )?,
            RolePlan::new(
                "gateway",
                cores.get(1).copied(),
                NAME,
                &task(TasksRole::Gateway, &d.server, &d.server_name),
            )?,
        ];
        let endpoints = std::iter::once(link.clone())
            .chain(control.iter().cloned())
            .chain(results.iter().cloned())
            .chain(tasks_eps.iter().cloned())
            .collect();
        // Whole: the endpoints are the run's now.
        made.keep();
        Ok(Prepared {
            plan: RunPlan {
                run_id: run.run_id.clone(),
                roles,
                setup_timeout: run.setup_timeout(),
                timeout: run.timeout(),
                dir: dir.to_path_buf(),
            },
            endpoints,
            after: Some(Box::new(Check {
                ideal: self.p.ideal_s(d),
                want: answered(&d.lines, &d.table)
                    .map(|a| i128::from(a.response))
                    .sum(),
                kill: self.p.kill_worker_after > 0,
            })),
        })
    }
}

/// The checks after a run.
struct Check {
    ideal: Option<f64>,
    /// The sum of responses the client must see: each of its lines the table knows.
    want: i128,
    kill: bool,
}

impl After for Check {
    /// The columns computed here (the bound), and why the run fails if it does: a batch
    /// without a result, a wrong sum, a worker that failed, a frame dropped.
    fn check(
        &mut self,
        _: &RunOutcome,
        metrics: &mut Vec<(String, f64)>,
        _: &Checking<'_>,
    ) -> Result<(), String> {
        let get = |k: &str| metrics.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        let mut extra = Vec::new();
        if let (Some(ideal), Some(makespan)) = (self.ideal, get("makespan_s")) {
            extra.push(("ideal_s".to_string(), ideal));
            if ideal > 0.0 {
                extra.push(("makespan_over_ideal".to_string(), makespan / ideal));
            }
        }
        let mut why = Vec::new();
        if get("results_ok") != get("batches") {
            why.push(format!(
                "{} of {} batches came back",
                get("results_ok").unwrap_or(0.0),
                get("batches").unwrap_or(0.0)
            ));
        }
        if let Some(got) = get("response_sum") {
            if self.want as f64 != got {
                why.push(format!("sum of responses {got}, expected {}", self.want));
            }
        }
        if get("workers_failed").unwrap_or(0.0) > 0.0 {
            why.push(format!(
                "{} workers failed (see the gateway's log)",
                get("workers_failed").unwrap_or(0.0)
            ));
        }
        if get("dropped").unwrap_or(0.0) > 0.0 {
            why.push(format!(
                "{} batches dropped by the full-queue policy",
                get("dropped").unwrap_or(0.0)
            ));
        }
        if self.kill && get("workers_killed").unwrap_or(0.0) < 1.0 {
            why.push("kill_worker_after was set but no worker was killed".into());
        }
        metrics.extend(extra);
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join("; "))
        }
    }
}

/// Worker slots: the most workers at once, and as many again for replacements (a worker
/// killed or reaped frees no slot; past the last one the gateway makes do with those it
/// has).
pub fn slots(p: &TasksParams) -> usize {
    2 * p.max_workers.max(1) as usize
}

/// A tasks role over the transport `X` (the one under the queue).
struct Role<'a> {
    job: &'a RoleJob,
    task: &'a Task,
    stdin: &'a mut dyn BufRead,
}

impl WithTransport for Role<'_> {
    type Output = anyhow::Result<RoleReport>;
    fn call<X: Transport>(self) -> Self::Output {
        let (job, t, stdin) = (self.job, self.task, self.stdin);
        let setup = job.setup_timeout();
        let params = &t.params;
        match t.role {
            TasksRole::Client => {
                let lines = tasks_data::parse_client(&t.data_name, &t.data)?;
                let listener = X::listen(&t.link)?;
                let mut acceptor = Acceptor::<X>::listen(&t.results)?;
                emit(&RoleEvent::Ready {
                    endpoint: Some(X::resolved(&listener)),
                    more: acceptor.resolved().to_vec(),
                })?;
                let gateway = X::accept(listener, setup)?;
                emit(&RoleEvent::Connected)?;
                wait_for_go(stdin)?;
                let m = tasks::client::<X>(gateway, &mut acceptor, &lines, params)?;
                RoleReport::from_measurement(&m)
            }
            TasksRole::Gateway => {
                // The client listened on the link and on every result slot.
                let (link, results) = match job.resolved.split_first() {
                    Some((link, results)) => (link, results),
                    None => (&t.link, &t.results[..]),
                };
                // First, while this process has a single thread: the workers' fork server.
                let mut procs = ForkServer::start(job, &t.worker_cores, *params)?;
                // The runner stops a run (Ctrl-C, its bound) with SIGTERM to each role
                // first: the gateway then hands every worker a poison pill before it goes.
                static STOP: AtomicBool = AtomicBool::new(false);
                ctrlc::set_handler(|| STOP.store(true, Ordering::Relaxed))
                    .context("installing the gateway's SIGTERM handler")?;
                let table = tasks_data::parse_server(&t.data_name, &t.data)?;
                let mut acceptor = Acceptor::<X>::listen(&t.tasks)?;
                emit(&RoleEvent::Ready {
                    endpoint: None,
                    more: vec![],
                })?;
                let client = X::connect(link, setup)?;
                emit(&RoleEvent::Connected)?;
                wait_for_go(stdin)?;
                procs.tasks = acceptor.resolved().to_vec();
                procs.results = results.to_vec();
                let r =
                    tasks::gateway::<X>(client, &mut acceptor, &table, &mut procs, params, &STOP);
                // Whatever happened, no worker outlives its gateway.
                procs.stop();
                RoleReport::from_measurement(&r?)
            }
            TasksRole::Worker { slot } => {
                let (Some(to_g), Some(to_c)) = (t.tasks.first(), t.results.first()) else {
                    anyhow::bail!("worker {slot} has no endpoints");
                };
                // Forked by the gateway's server when it needs it: no barrier to wait at.
                let to_gateway = X::connect(to_g, setup)?;
                // Connected while the first batch runs (see `tasks::worker`).
                let to_c = to_c.clone();
                let to_client = std::thread::spawn(move || {
                    X::connect(&to_c, setup)
                        .map_err(|e| WorkloadError::Param(format!("connecting to the client: {e}")))
                });
                let exit = tasks::worker::<X>(slot, to_gateway, to_client, params)?;
                RoleReport::from_measurement(&ipcbench_workloads::Measurement {
                    metrics: vec![("left".into(), f64::from(u8::from(exit == WorkerExit::Idle)))],
                    ..Default::default()
                })
            }
        }
    }
}

/// A tasks role over real ZeroMQ (`ipcbench_workloads::tasks_zmq`): the client binds a
/// `PUSH` on the link and a `PULL` for the results, the gateway connects a `PULL` to the
/// link and binds a `PUSH` for the tasks and a `PUB` for the poison pill, every worker
/// connects to all three.
#[cfg(feature = "zmq")]
fn zmq_role(job: &RoleJob, t: &Task, stdin: &mut dyn BufRead) -> anyhow::Result<RoleReport> {
    use ipcbench_transport::zmq_pattern::{Context, Kind, Socket};
    use ipcbench_workloads::tasks_zmq;
    let setup = job.setup_timeout();
    let params = &t.params;
    let first = |eps: &[Endpoint], what: &str| -> anyhow::Result<Endpoint> {
        eps.first()
            .cloned()
            .with_context(|| format!("the {what} endpoint is missing"))
    };
    match t.role {
        TasksRole::Client => {
            let lines = tasks_data::parse_client(&t.data_name, &t.data)?;
            let ctx = Context::new();
            let (mut link, link_at) = Socket::bind(&ctx, Kind::Push, &t.link)?;
            let (mut results, results_at) =
                Socket::bind(&ctx, Kind::Pull, &first(&t.results, "results")?)?;
            emit(&RoleEvent::Ready {
                endpoint: Some(link_at),
                more: vec![results_at],
            })?;
            link.wait_peers(1, setup)?;
            emit(&RoleEvent::Connected)?;
            wait_for_go(stdin)?;
            let m = tasks_zmq::client(&mut link, &mut results, &lines, params)?;
            RoleReport::from_measurement(&m)
        }
        TasksRole::Gateway => {
            let (link, results) = match job.resolved.split_first() {
                Some((link, results)) => (link.clone(), first(results, "results")?),
                None => (t.link.clone(), first(&t.results, "results")?),
            };
            // First, while this process has a single thread (libzmq's context starts
            // one): the workers' fork server.
            let mut procs = ForkServer::start(job, &t.worker_cores, *params)?;
            static STOP: AtomicBool = AtomicBool::new(false);
            ctrlc::set_handler(|| STOP.store(true, Ordering::Relaxed))
                .context("installing the gateway's SIGTERM handler")?;
            let table = tasks_data::parse_server(&t.data_name, &t.data)?;
            let ctx = Context::new();
            let (mut tasks, tasks_at) = Socket::bind(&ctx, Kind::Push, &first(&t.tasks, "tasks")?)?;
            let control = t
                .control
                .as_ref()
                .context("the control endpoint is missing")?;
            let (mut control, control_at) = Socket::bind(&ctx, Kind::Pub, control)?;
            emit(&RoleEvent::Ready {
                endpoint: None,
                more: vec![],
            })?;
            let mut from_client = Socket::connect(&ctx, Kind::Pull, &link)?;
            from_client.wait_peers(1, setup)?;
            emit(&RoleEvent::Connected)?;
            wait_for_go(stdin)?;
            // Every worker connects to the same two sockets.
            let n = slots(params);
            procs.tasks = vec![tasks_at; n];
            procs.results = vec![results; n];
            procs.control = Some(control_at);
            let r = tasks_zmq::gateway(
                &mut from_client,
                &mut tasks,
                &mut control,
                &table,
                &mut procs,
                params,
                &STOP,
            );
            procs.stop();
            RoleReport::from_measurement(&r?)
        }
        TasksRole::Worker { slot } => {
            let ctx = Context::new();
            let mut from_gateway = Socket::connect(&ctx, Kind::Pull, &first(&t.tasks, "tasks")?)?;
            let control = t
                .control
                .as_ref()
                .context("the control endpoint is missing")?;
            let mut control = Socket::connect(&ctx, Kind::Sub, control)?;
            let mut to_client = Socket::connect(&ctx, Kind::Push, &first(&t.results, "results")?)?;
            tasks_zmq::worker(
                slot,
                &mut from_gateway,
                &mut control,
                &mut to_client,
                params,
            )?;
            RoleReport::from_measurement(&ipcbench_workloads::Measurement {
                metrics: vec![("left".into(), 0.0)],
                ..Default::default()
            })
        }
    }
}

/// The gateway's workers: processes forked, without exec, by a server process that the
/// gateway forks as its first act, while it still has a single thread. An exec of this
/// binary cost 1.2-1.4 ms of CPU here (the loader, relocations, page faults at ~8 µs
/// each in this nested VM), a fork of the small server about 0.2 ms: with 32 workers
/// starting at once on two cores that is most of the gap between the makespan and its
/// bound. (Spawned from the gateway's threads, the workers also inherited the gateway's
/// pin and started one after another on its core.)
///
/// The server forks a worker per request, reports each one's exit status, kills one on
/// request, and when the gateway closes its request pipe kills what is left, reaps it and
/// exits. It dies with the gateway and each worker with it (`PR_SET_PDEATHSIG`); all stay
/// in the gateway's process group, so the runner's kill of the group takes them too.
struct ForkServer {
    pid: nix::unistd::Pid,
    /// Requests to the server: `S <slot> <job>`, `K <slot>`; closed: kill all and leave.
    requests: Option<std::fs::File>,
    /// The server's reports (`E <slot> <status>`, `F <slot>`), read without blocking.
    events: std::fs::File,
    /// The start of a report line not complete yet.
    partial: Vec<u8>,
    /// Slots started and not reported ended yet.
    live: std::collections::BTreeSet<usize>,
    /// Where the workers connect, and the gateway's job (the template of theirs).
    job: RoleJob,
    params: TasksParams,
    tasks: Vec<Endpoint>,
    results: Vec<Endpoint>,
    control: Option<Endpoint>,
    cores: Vec<usize>,
}

impl ForkServer {
    /// Forks the server; must be called while this process has one thread.
    fn start(job: &RoleJob, cores: &[usize], params: TasksParams) -> anyhow::Result<ForkServer> {
        use ipcbench_transport::process::{fork_single_threaded, Forked};
        use nix::fcntl::OFlag;
        let (req_r, req_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("creating a pipe")?;
        let (ev_r, ev_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("creating a pipe")?;
        let gateway = nix::unistd::getpid();
        match fork_single_threaded().context("forking the workers' server")? {
            Forked::Child => {
                drop((req_w, ev_r));
                serve(gateway, req_r.into(), ev_w.into())
            }
            Forked::Parent(pid) => {
                drop((req_r, ev_w));
                let events = std::fs::File::from(ev_r);
                nix::fcntl::fcntl(&events, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
                    .context("making the server's report pipe non-blocking")?;
                Ok(ForkServer {
                    pid,
                    requests: Some(req_w.into()),
                    events,
                    partial: Vec::new(),
                    live: Default::default(),
                    job: job.clone(),
                    params,
                    tasks: Vec::new(),
                    results: Vec::new(),
                    control: None,
                    cores: cores.to_vec(),
                })
            }
        }
    }

    fn request(&mut self, line: &str) -> Result<(), WorkloadError> {
        let sent = self
            .requests
            .as_mut()
            .map(|r| writeln!(r, "{line}").is_ok());
        if sent == Some(true) {
            Ok(())
        } else {
            Err(WorkloadError::Param("the workers' server is gone".into()))
        }
    }

    /// Kills every worker, stops the server and reaps it (at most 5 s, then SIGKILL).
    fn stop(&mut self) {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        if self.requests.take().is_none() {
            return;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(WaitStatus::StillAlive) => {
                    let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
                    let _ = waitpid(self.pid, None);
                    return;
                }
                _ => return,
            }
        }
    }
}

impl Drop for ForkServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Workers for ForkServer {
    fn slots(&self) -> usize {
        self.tasks.len().min(self.results.len())
    }

    fn start(&mut self, slot: usize) -> Result<(), WorkloadError> {
        let task = Task {
            role: TasksRole::Worker { slot: slot as u32 },
            link: self.tasks[slot].clone(),
            results: vec![self.results[slot].clone()],
            tasks: vec![self.tasks[slot].clone()],
            control: self.control.clone(),
            worker_cores: vec![],
            data: String::new(),
            data_name: String::new(),
            params: self.params,
        };
        let task = serde_json::to_value(&task)
            .map_err(|e| WorkloadError::Param(format!("encoding worker {slot}'s task: {e}")))?;
        let job = RoleJob {
            run_id: self.job.run_id.clone(),
            role: format!("worker{slot}"),
            core: (!self.cores.is_empty()).then(|| self.cores[slot % self.cores.len()]),
            parent_pid: self.pid.as_raw(),
            setup_timeout_ms: self.job.setup_timeout_ms,
            workload: NAME.to_string(),
            task,
            resolved: vec![],
        };
        let line = serde_json::to_string(&job)
            .map_err(|e| WorkloadError::Param(format!("encoding worker {slot}'s job: {e}")))?;
        self.request(&format!("S {slot} {line}"))?;
        self.live.insert(slot);
        Ok(())
    }

    fn exited(&mut self) -> Vec<(usize, bool)> {
        use std::io::Read;
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        let server_gone = loop {
            match self.events.read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => self.partial.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                Err(_) => break true,
            }
        };
        while let Some(line) = take_line(&mut self.partial) {
            let text = String::from_utf8_lossy(&line);
            let mut words = text.split_whitespace();
            let (Some(kind), Some(slot)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(slot) = slot.parse::<usize>() else {
                continue;
            };
            let clean = kind == "E" && words.next() == Some("0");
            if self.live.remove(&slot) {
                out.push((slot, clean));
            }
        }
        if server_gone {
            // No server, no workers (they die with it): each one left ends uncleanly.
            out.extend(
                std::mem::take(&mut self.live)
                    .into_iter()
                    .map(|s| (s, false)),
            );
        }
        out
    }

    fn kill(&mut self, slot: usize) {
        let _ = self.request(&format!("K {slot}"));
    }
}

/// The first complete line in `buf` (with its newline), taken out of it; `None` while
/// the line is still being written.
fn take_line(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let end = buf.iter().position(|&b| b == b'\n')?;
    Some(buf.drain(..=end).collect())
}

/// The workers' server (see [`ForkServer`]); never returns.
fn serve(gateway: nix::unistd::Pid, requests: std::fs::File, events: std::fs::File) -> ! {
    use nix::sys::signal::{kill, Signal};
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if nix::unistd::getppid() != gateway {
        std::process::exit(1);
    }
    // Its stdout is the gateway's channel to the runner: not the server's, nor a worker's.
    if let Ok(null) = std::fs::File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
    // The gateway is pinned; the workers are not (or pin themselves).
    let _ = unpin();
    let me = nix::unistd::getpid();
    let mut server = Server {
        requests: Some(requests),
        events: Some(events),
        children: HashMap::new(),
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1 << 16];
    loop {
        // Block for a request while no worker runs; otherwise look for exits every 1 ms.
        let timeout = if server.children.is_empty() {
            nix::poll::PollTimeout::NONE
        } else {
            nix::poll::PollTimeout::from(1u8)
        };
        let readable = match server.requests.as_ref() {
            Some(r) => {
                let mut fds = [nix::poll::PollFd::new(
                    std::os::fd::AsFd::as_fd(r),
                    nix::poll::PollFlags::POLLIN,
                )];
                matches!(nix::poll::poll(&mut fds, timeout), Ok(n) if n > 0)
            }
            None => false,
        };
        if readable {
            use std::io::Read;
            let n = match server.requests.as_mut().map(|r| r.read(&mut chunk)) {
                Some(Ok(n)) => n,
                Some(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                _ => 0,
            };
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            while let Some(line) = take_line(&mut buf) {
                server.handle(me, &String::from_utf8_lossy(&line));
            }
        }
        // Reap every worker that ended.
        loop {
            match waitpid(None::<nix::unistd::Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => server.report_end(pid, code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => server.report_end(pid, 128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
    // The gateway is done with us: no worker outlives it.
    for pid in server.children.keys() {
        let _ = kill(*pid, Signal::SIGKILL);
    }
    for pid in server.children.keys() {
        let _ = waitpid(*pid, None);
    }
    std::process::exit(0)
}

/// The server's state.
struct Server {
    requests: Option<std::fs::File>,
    events: Option<std::fs::File>,
    /// Running workers by pid, with their slots.
    children: HashMap<nix::unistd::Pid, usize>,
}

impl Server {
    fn report(&mut self, line: &str) {
        if let Some(e) = self.events.as_mut() {
            let _ = writeln!(e, "{line}");
        }
    }

    fn report_end(&mut self, pid: nix::unistd::Pid, status: i32) {
        if let Some(slot) = self.children.remove(&pid) {
            self.report(&format!("E {slot} {status}"));
        }
    }

    fn handle(&mut self, me: nix::unistd::Pid, line: &str) {
        use ipcbench_transport::process::{fork_single_threaded, Forked};
        let mut words = line.trim_end().splitn(3, ' ');
        let (Some(kind), Some(slot)) = (words.next(), words.next()) else {
            return;
        };
        let Ok(slot) = slot.parse::<usize>() else {
            return;
        };
        match kind {
            "S" => match fork_single_threaded() {
                Ok(Forked::Child) => {
                    // The server's pipes are not the worker's.
                    drop((self.requests.take(), self.events.take()));
                    worker(me, words.next().unwrap_or(""))
                }
                Ok(Forked::Parent(pid)) => {
                    self.children.insert(pid, slot);
                }
                Err(e) => {
                    eprintln!("gateway: forking worker {slot}: {e}");
                    self.report(&format!("F {slot}"));
                }
            },
            "K" => {
                if let Some((pid, _)) = self.children.iter().find(|(_, s)| **s == slot) {
                    // Not reaped yet, so the pid is still this worker's.
                    let _ = nix::sys::signal::kill(*pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
            _ => {}
        }
    }
}

/// A forked worker: runs its job as a role process would and exits with its code.
fn worker(server: nix::unistd::Pid, job: &str) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let result = serde_json::from_str::<RoleJob>(job)
        .context("parsing the worker's job")
        .and_then(|job| {
            if nix::unistd::getppid() != server {
                anyhow::bail!("the workers' server is gone");
            }
            crate::wire::take_up(&job)?;
            Tasks.role(&job, &mut std::io::empty())
        });
    std::process::exit(i32::from(crate::wire::finish(result)))
}

/// Lets the calling thread run on every CPU the system allows it.
fn unpin() -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    for c in 0..nix::sched::CpuSet::count() {
        set.set(c)?;
    }
    // Pid 0: the calling thread.
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .context("letting the workers' server run on every CPU")
}
