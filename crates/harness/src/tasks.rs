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

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
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
use crate::wire::{RoleEvent, RoleJob, RoleReport, RoleTask, TasksRole};

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

/// The answers the client's lines get from the table (the lines it does not know get
/// none), in order.
fn answered<'a>(
    lines: &'a [ClientLine],
    table: &'a HashMap<(Ipv4Addr, Cmd), Answer>,
) -> impl Iterator<Item = &'a Answer> {
    lines.iter().filter_map(|l| table.get(&(l.ip, l.command)))
}

/// The makespan's bound for `spec`, `None` for the cpu kinds (their time is what is
/// measured, not given).
fn ideal_s(
    spec: &RunSpec,
    lines: &[ClientLine],
    table: &HashMap<(Ipv4Addr, Cmd), Answer>,
) -> Option<f64> {
    let p = params(spec);
    if p.kind != TaskKind::Io {
        return None;
    }
    let waits: Vec<f64> = answered(lines, table)
        .map(|a| if p.wait_s > 0.0 { p.wait_s } else { a.wait_s })
        .collect();
    Some(tasks::ideal_s(
        &waits,
        p.batch as usize,
        p.max_workers as usize,
        p.threads,
    ))
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
    // Read and parsed once (validation checked both already).
    let parsed = data(spec).ok().and_then(|d| d.parse().ok());
    let ideal = parsed.as_ref().and_then(|(l, t)| ideal_s(spec, l, t));
    if let (Some(ideal), Some(makespan)) = (ideal, get("makespan_s")) {
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
    // The sum of responses the client must see: each of its lines the table knows.
    let want = parsed
        .as_ref()
        .map(|(l, t)| answered(l, t).map(|a| a.response).sum::<i64>());
    if let (Some(want), Some(got)) = (want, get("response_sum")) {
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
            // First, while this process has a single thread: the workers' fork server.
            let mut procs = ForkServer::start(job, worker_cores)?;
            // The runner stops a run (Ctrl-C, its bound) with SIGTERM to each role first:
            // the gateway then hands every worker a poison pill before it goes.
            static STOP: AtomicBool = AtomicBool::new(false);
            ctrlc::set_handler(|| STOP.store(true, Ordering::Relaxed))
                .context("installing the gateway's SIGTERM handler")?;
            let table = tasks_data::parse_server(data_name, data)?;
            let mut acceptor = Acceptor::<X>::listen(task_eps)?;
            emit(&RoleEvent::Ready {
                endpoint: None,
                more: vec![],
            })?;
            let client = X::connect(link, setup)?;
            emit(&RoleEvent::Connected)?;
            wait_for_go(stdin)?;
            procs.tasks = acceptor.resolved().to_vec();
            procs.results.clone_from(results);
            let r = tasks::gateway::<X>(client, &mut acceptor, &table, &mut procs, params, &STOP);
            // Whatever happened, no worker outlives its gateway.
            procs.stop();
            RoleReport::from_measurement(&r?)
        }
        TasksRole::Worker { slot } => {
            let (Some(t), Some(r)) = (task_eps.first(), results.first()) else {
                anyhow::bail!("worker {slot} has no endpoints");
            };
            // Forked by the gateway's server when it needs it: no barrier to wait at.
            let to_gateway = X::connect(t, setup)?;
            let to_client = X::connect(r, setup)?;
            let exit = tasks::worker::<X>(*slot, to_gateway, to_client, params)?;
            RoleReport::from_measurement(&ipcbench_workloads::Measurement {
                metrics: vec![("left".into(), f64::from(u8::from(exit == WorkerExit::Idle)))],
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
    tasks: Vec<Endpoint>,
    results: Vec<Endpoint>,
    cores: Vec<usize>,
}

impl ForkServer {
    /// Forks the server; must be called while this process has one thread.
    fn start(job: &RoleJob, cores: &[usize]) -> anyhow::Result<ForkServer> {
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
                    tasks: Vec::new(),
                    results: Vec::new(),
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
        let RoleTask::Tasks { params, .. } = &self.job.task else {
            return Err(WorkloadError::Param("not a tasks job".into()));
        };
        let job = RoleJob {
            run_id: self.job.run_id.clone(),
            role: format!("worker{slot}"),
            core: (!self.cores.is_empty()).then(|| self.cores[slot % self.cores.len()]),
            parent_pid: self.pid.as_raw(),
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
            crate::role::execute(&job, &mut std::io::empty())
        });
    std::process::exit(i32::from(crate::role::finish(result)))
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
