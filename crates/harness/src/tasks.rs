//! The `tasks` workload in the harness: its data (the shipped files, files named in the
//! config, or generated), its plan (a client-gateway link and, per worker slot, a task
//! endpoint and a result endpoint, all prepared here so that every file is removed when
//! the run ends), its roles, and the check of what they report.
//!
//! The gateway starts each worker as a process of this same binary (`__role`, its job on
//! stdin, then `go`) in the gateway's process group: the runner's kill of the gateway's
//! group takes the workers with it, and a worker dies with its gateway
//! (`PR_SET_PDEATHSIG`).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use ipcbench_transport::queue::Acceptor;
use ipcbench_transport::{Endpoint, EndpointOptions, Transport, TransportKind, WaitStrategy};
use ipcbench_workloads::tasks::{self, TasksParams, WorkerExit, Workers};
use ipcbench_workloads::tasks_data::{self, Answer, ClientLine, Command as Cmd};
use ipcbench_workloads::tasks_exec::TaskKind;
use ipcbench_workloads::WorkloadError;

use crate::config::RunSpec;
use crate::role::{emit, wait_for_go};
use crate::runner::{RolePlan, RunPlan};
use crate::wire::{RoleEvent, RoleJob, RoleReport, RoleTask, TasksRole, GO};

/// The original's client file, built in (`client_file = ""`).
pub const CLIENT_512: &str = include_str!("../../../bench-configs/data/client_512.txt");
/// The original's gateway file, built in (`server_file = ""`).
pub const SERVER_512: &str = include_str!("../../../bench-configs/data/server_512.txt");

/// A run's data: the two files' text and names.
#[derive(Debug, Clone)]
pub struct Data {
    /// `ip:command` lines.
    pub client: String,
    /// Its name in messages.
    pub client_name: String,
    /// `ip:command:response:wait_s` lines.
    pub server: String,
    /// Its name in messages.
    pub server_name: String,
}

impl Data {
    /// The parsed lines and table; an error names the file and line.
    #[allow(clippy::type_complexity)]
    pub fn parse(
        &self,
    ) -> Result<(Vec<ClientLine>, HashMap<(Ipv4Addr, Cmd), Answer>), tasks_data::DataError> {
        Ok((
            tasks_data::parse_client(&self.client_name, &self.client)?,
            tasks_data::parse_server(&self.server_name, &self.server)?,
        ))
    }
}

/// The data a run uses: generated, read from the configured files, or the shipped files.
/// `Err` is a message naming the key (and, for a bad line, the file and line).
pub fn data(spec: &RunSpec) -> Result<Data, (String, &'static str)> {
    let n = spec.int("generate");
    if n > 0 {
        let (low, high) = (spec.float("gen_low_s"), spec.float("gen_high_s"));
        if high < low {
            return Err((
                format!("gen_high_s {high} is below gen_low_s {low}"),
                "gen_high_s",
            ));
        }
        let g = tasks_data::generate(n as usize, low, high, spec.int("seed") as u64);
        return Ok(Data {
            client: g.client,
            client_name: format!("generated client lines (seed {})", spec.int("seed")),
            server: g.server,
            server_name: format!("generated gateway lines (seed {})", spec.int("seed")),
        });
    }
    let read = |key: &'static str, builtin: &str, name: &str| {
        let path = spec.text(key);
        if path.is_empty() {
            return Ok((builtin.to_string(), name.to_string()));
        }
        std::fs::read_to_string(path)
            .map(|t| (t, path.to_string()))
            .map_err(|e| (format!("cannot read {path}: {e}"), key))
    };
    let (client, client_name) = read("client_file", CLIENT_512, "client_512.txt (built in)")?;
    let (server, server_name) = read("server_file", SERVER_512, "server_512.txt (built in)")?;
    let d = Data {
        client,
        client_name,
        server,
        server_name,
    };
    match d.parse() {
        Ok(_) => Ok(d),
        Err(e) => {
            let key = if e.file == d.client_name {
                "client_file"
            } else {
                "server_file"
            };
            Err((e.to_string(), key))
        }
    }
}

/// The roles' parameters for `spec`.
pub fn params(spec: &RunSpec) -> TasksParams {
    let kind = match spec.text("kind") {
        "cpu" => TaskKind::Cpu {
            iterations: spec.int("iterations") as u64,
        },
        "cpu_ms" => TaskKind::CpuMs {
            ms: spec.float("cpu_ms"),
        },
        _ => TaskKind::Io,
    };
    TasksParams {
        batch: spec.int("batch") as u32,
        max_workers: spec.int("max_workers") as u32,
        threads: spec.flag("threads"),
        kind,
        wait_s: spec.float("wait_s"),
        hwm: spec.int("hwm") as u32,
        policy: spec.queue_policy(),
        kill_worker_after: spec.int("kill_worker_after") as u32,
        idle_timeout_s: spec.float("idle_timeout_s"),
        timeout_ms: spec.timeout.as_millis() as u64,
    }
}

/// The makespan's bound for `spec`, `None` for the cpu kinds (their time is what is
/// measured, not given).
pub fn ideal_s(spec: &RunSpec, d: &Data) -> Option<f64> {
    let p = params(spec);
    if p.kind != TaskKind::Io {
        return None;
    }
    let (lines, table) = d.parse().ok()?;
    let waits: Vec<f64> = lines
        .iter()
        .filter_map(|l| table.get(&(l.ip, l.command)))
        .map(|a| if p.wait_s > 0.0 { p.wait_s } else { a.wait_s })
        .collect();
    Some(tasks::ideal_s(
        &waits,
        p.batch as usize,
        p.max_workers as usize,
        p.threads,
    ))
}

/// The sum of responses the client must see: each of its lines the table knows.
pub fn expected_sum(d: &Data) -> Option<i64> {
    let (lines, table) = d.parse().ok()?;
    Some(
        lines
            .iter()
            .filter_map(|l| table.get(&(l.ip, l.command)))
            .map(|a| a.response)
            .sum(),
    )
}

/// Worker slots: the most workers at once, and as many again for replacements (a worker
/// killed or reaped frees no slot; past the last one the gateway makes do with those it
/// has).
pub fn slots(p: &TasksParams) -> usize {
    2 * p.max_workers.max(1) as usize
}

/// The plan of a tasks run: the endpoints (the link, then result slots, then task slots)
/// and the two roles the runner starts.
pub fn plan(spec: &RunSpec, dir: &Path) -> anyhow::Result<(RunPlan, Vec<Endpoint>)> {
    let d = data(spec).map_err(|(m, k)| anyhow::anyhow!("{k}: {m}"))?;
    let p = params(spec);
    let over: TransportKind = spec
        .text("over")
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    // Frames are batches: 16 bytes a command, a little header.
    let frame = 64 + 16 * p.batch as usize;
    let opts = EndpointOptions {
        max_frame: frame.max(4096) as u32,
        shm_capacity: (4 * frame).next_power_of_two().max(64 << 10) as u32,
        wait: WaitStrategy::Block,
        spin_us: spec.int("spin_us") as u32,
        ..Default::default()
    };
    let prepare = |name: String| -> anyhow::Result<Endpoint> {
        let sub = dir.join(name);
        std::fs::create_dir(&sub).with_context(|| format!("creating {}", sub.display()))?;
        Ok(Endpoint::prepare(over, &sub, &opts)?)
    };
    let n = slots(&p);
    let link = prepare("link".into())?;
    let results = (0..n)
        .map(|k| prepare(format!("r{k}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let tasks_eps = (0..n)
        .map(|k| prepare(format!("t{k}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cores = spec.role_cores();
    let task = |role: TasksRole, data: &str, name: &str| RoleTask::Tasks {
        role,
        link: link.clone(),
        results: results.clone(),
        tasks: tasks_eps.clone(),
        worker_cores: cores.iter().skip(2).copied().collect(),
        data: data.to_string(),
        data_name: name.to_string(),
        params: p,
    };
    let roles = vec![
        RolePlan {
            name: "client".into(),
            core: cores.first().copied(),
            task: task(TasksRole::Client, &d.client, &d.client_name),
        },
        RolePlan {
            name: "gateway".into(),
            core: cores.get(1).copied(),
            task: task(TasksRole::Gateway, &d.server, &d.server_name),
        },
    ];
    let endpoints = std::iter::once(link.clone())
        .chain(results.iter().cloned())
        .chain(tasks_eps.iter().cloned())
        .collect();
    Ok((
        RunPlan {
            run_id: spec.run_id.clone(),
            roles,
            setup_timeout: crate::SETUP_TIMEOUT.min(spec.timeout.max(Duration::from_secs(5))),
            timeout: spec.timeout,
            dir: dir.to_path_buf(),
        },
        endpoints,
    ))
}

/// The columns computed here (the bound), and why the run fails if it does: a batch
/// without a result, a wrong sum, a worker that failed, a frame dropped.
pub fn check(spec: &RunSpec, metrics: &[(String, f64)]) -> (Vec<(String, f64)>, Option<String>) {
    let get = |k: &str| metrics.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    let mut extra = Vec::new();
    let d = data(spec).ok();
    if let (Some(ideal), Some(makespan)) =
        (d.as_ref().and_then(|d| ideal_s(spec, d)), get("makespan_s"))
    {
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
    if let (Some(want), Some(got)) = (d.as_ref().and_then(expected_sum), get("response_sum")) {
        if want as f64 != got {
            why.push(format!("sum of responses {got}, expected {want}"));
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
    if spec.int("kill_worker_after") > 0 && get("workers_killed").unwrap_or(0.0) < 1.0 {
        why.push("kill_worker_after was set but no worker was killed".into());
    }
    (extra, (!why.is_empty()).then(|| why.join("; ")))
}

/// Runs a tasks role over the transport `X` (the one under the queue).
pub fn role<X: Transport>(
    job: &RoleJob,
    setup: Duration,
    stdin: &mut impl BufRead,
) -> anyhow::Result<RoleReport> {
    let RoleTask::Tasks {
        role,
        link,
        results,
        tasks: task_eps,
        worker_cores,
        data,
        data_name,
        params,
    } = &job.task
    else {
        anyhow::bail!("not a tasks job");
    };
    match role {
        TasksRole::Client => {
            let lines = tasks_data::parse_client(data_name, data)?;
            let listener = X::listen(link)?;
            let mut acceptor = Acceptor::<X>::listen(results)?;
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
            let table = tasks_data::parse_server(data_name, data)?;
            let mut acceptor = Acceptor::<X>::listen(task_eps)?;
            emit(&RoleEvent::Ready {
                endpoint: None,
                more: vec![],
            })?;
            let client = X::connect(link, setup)?;
            emit(&RoleEvent::Connected)?;
            wait_for_go(stdin)?;
            let mut procs = Procs::new(
                job.clone(),
                acceptor.resolved().to_vec(),
                results.clone(),
                worker_cores.clone(),
            )?;
            let r = tasks::gateway::<X>(client, &mut acceptor, &table, &mut procs, params);
            // Whatever happened, no worker outlives its gateway.
            procs.kill_all();
            RoleReport::from_measurement(&r?)
        }
        TasksRole::Worker { slot } => {
            let (Some(t), Some(r)) = (task_eps.first(), results.first()) else {
                anyhow::bail!("worker {slot} has no endpoints");
            };
            let to_gateway = X::connect(t, setup)?;
            let to_client = X::connect(r, setup)?;
            emit(&RoleEvent::Connected)?;
            wait_for_go(stdin)?;
            let exit = tasks::worker::<X>(*slot, to_gateway, to_client, params)?;
            RoleReport::from_measurement(&ipcbench_workloads::Measurement {
                metrics: vec![("left".into(), f64::from(u8::from(exit == WorkerExit::Idle)))],
                ..Default::default()
            })
        }
    }
}

/// The gateway's workers: processes of this binary, spawned by threads of their own
/// (creating a process costs about a millisecond on this VM, and 32 of them one after
/// another would delay the last worker by tens of milliseconds). A child dies with the
/// thread that spawned it (`PR_SET_PDEATHSIG` is per thread), so the spawner threads live
/// as long as the gateway does.
///
/// A child starts with its spawner's CPU affinity, and the gateway itself is pinned: so
/// each spawner sets its own first, to its workers' core when worker cores are configured
/// (slot `k` goes to spawner `k mod cores`), otherwise to every CPU. Left with the
/// gateway's, the spawners, the children's start-up and the gateway all shared one core
/// and the last of 32 workers was ready 35-50 ms late.
struct Procs {
    /// The gateway's own job, the template of each worker's.
    job: RoleJob,
    tasks: Vec<Endpoint>,
    results: Vec<Endpoint>,
    cores: Vec<usize>,
    /// One request queue per spawner thread.
    requests: Vec<std::sync::mpsc::Sender<(usize, String)>>,
    running: std::sync::Arc<std::sync::Mutex<BTreeMap<usize, Spawned>>>,
    spawners: Vec<std::thread::JoinHandle<()>>,
}

/// A worker as its spawner left it.
enum Spawned {
    Running(Child),
    /// The spawn failed (reported as an unclean exit).
    Failed,
}

/// Spawner threads when the workers float (no worker cores configured).
const SPAWNERS: usize = 2;

/// Sets the calling thread's CPU affinity to `core`, or to every CPU the system lets it
/// use when `None`.
fn set_affinity(core: Option<usize>) -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    match core {
        Some(c) => set.set(c)?,
        None => {
            for c in 0..nix::sched::CpuSet::count() {
                set.set(c)?;
            }
        }
    }
    // Pid 0: the calling thread.
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("setting a spawner's CPU affinity to {core:?}"))
}

impl Procs {
    fn new(
        job: RoleJob,
        tasks: Vec<Endpoint>,
        results: Vec<Endpoint>,
        cores: Vec<usize>,
    ) -> anyhow::Result<Procs> {
        let exe = std::env::current_exe().context("locating the harness binary")?;
        let running = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let pins: Vec<Option<usize>> = if cores.is_empty() {
            vec![None; SPAWNERS]
        } else {
            cores.iter().map(|&c| Some(c)).collect()
        };
        let mut requests = Vec::new();
        let mut spawners = Vec::new();
        for pin in pins {
            let (tx, rx) = std::sync::mpsc::channel::<(usize, String)>();
            let (running, exe) = (running.clone(), exe.clone());
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            spawners.push(std::thread::spawn(move || {
                let pinned = set_affinity(pin);
                let ok = pinned.is_ok();
                let _ = ready_tx.send(pinned);
                if !ok {
                    return;
                }
                while let Ok((slot, line)) = rx.recv() {
                    let spawned = spawn_worker(&exe, slot, &line);
                    if let Ok(mut map) = running.lock() {
                        map.insert(slot, spawned);
                    }
                }
            }));
            ready_rx
                .recv()
                .map_err(|_| anyhow::anyhow!("a spawner thread died at its start"))??;
            requests.push(tx);
        }
        Ok(Procs {
            job,
            tasks,
            results,
            cores,
            requests,
            running,
            spawners,
        })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, Spawned>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Kills every worker still running and stops the spawners.
    fn kill_all(&mut self) {
        self.requests.clear();
        for s in std::mem::take(&mut self.spawners) {
            let _ = s.join();
        }
        for (_, s) in std::mem::take(&mut *self.map()) {
            if let Spawned::Running(mut c) = s {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Starts one worker process with its job and `go` on its stdin.
fn spawn_worker(exe: &Path, slot: usize, line: &str) -> Spawned {
    match Command::new(exe)
        .arg("__role")
        .stdin(Stdio::piped())
        // Its events go nowhere (the gateway learns what it needs over the queue and from
        // the exit status); its stderr joins the gateway's.
        .stdout(Stdio::null())
        .spawn()
    {
        Ok(mut child) => {
            if let Some(mut stdin) = child.stdin.take() {
                // A worker that died at once shows up in `exited`.
                let _ = writeln!(stdin, "{line}\n{GO}");
            }
            Spawned::Running(child)
        }
        Err(e) => {
            eprintln!("gateway: spawning worker {slot}: {e}");
            Spawned::Failed
        }
    }
}

impl Workers for Procs {
    fn slots(&self) -> usize {
        self.tasks.len().min(self.results.len())
    }

    fn start(&mut self, slot: usize) -> Result<(), WorkloadError> {
        let RoleTask::Tasks { params, .. } = &self.job.task else {
            return Err(WorkloadError::Param("not a tasks job".into()));
        };
        let job = RoleJob {
            run_id: self.job.run_id.clone(),
            role: format!("worker{slot}"),
            core: (!self.cores.is_empty()).then(|| self.cores[slot % self.cores.len()]),
            parent_pid: std::process::id() as i32,
            setup_timeout_ms: self.job.setup_timeout_ms,
            task: RoleTask::Tasks {
                role: TasksRole::Worker { slot: slot as u32 },
                link: self.tasks[slot].clone(),
                results: vec![self.results[slot].clone()],
                tasks: vec![self.tasks[slot].clone()],
                worker_cores: vec![],
                data: String::new(),
                data_name: String::new(),
                params: *params,
            },
        };
        let line = serde_json::to_string(&job)
            .map_err(|e| WorkloadError::Param(format!("encoding worker {slot}'s job: {e}")))?;
        let n = self.requests.len().max(1);
        let sent = self
            .requests
            .get(slot % n)
            .map(|r| r.send((slot, line)).is_ok());
        if sent != Some(true) {
            return Err(WorkloadError::Param(format!(
                "starting worker {slot}: the spawner threads are gone"
            )));
        }
        Ok(())
    }

    fn exited(&mut self) -> Vec<(usize, bool)> {
        let mut out = Vec::new();
        self.map().retain(|slot, s| match s {
            Spawned::Running(c) => match c.try_wait() {
                Ok(Some(status)) => {
                    out.push((*slot, status.success()));
                    false
                }
                Ok(None) => true,
                Err(_) => {
                    out.push((*slot, false));
                    false
                }
            },
            Spawned::Failed => {
                out.push((*slot, false));
                false
            }
        });
        out
    }

    fn kill(&mut self, slot: usize) {
        if let Some(Spawned::Running(c)) = self.map().get_mut(&slot) {
            let _ = c.kill();
        }
    }
}
