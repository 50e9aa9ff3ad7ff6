//! Runs one point of the matrix: spawns each role as a child process of this binary in
//! its own process group, relays the listening role's resolved endpoint to the others,
//! waits until all are connected, releases them together (`go`), and collects their
//! reports. Every wait has a deadline; a role that fails, dies or overruns is reported
//! with its name and exit code or signal, and every role's process group is killed and
//! reaped before this returns.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::wire::{RoleEvent, RoleJob, RoleReport, GO};

/// Bound on spawning, connecting and reaching the start barrier.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// One role of a run.
#[derive(Debug, Clone)]
pub struct RolePlan {
    /// Role name.
    pub name: String,
    /// Core to pin to.
    pub core: Option<usize>,
    /// Whose code runs it (a workload's name, or the floor's).
    pub workload: &'static str,
    /// Its work, as that code reads it; the roles after the first also get what the first
    /// resolved ([`RoleJob::resolved`]).
    pub task: serde_json::Value,
    /// Where it runs, when not on this host: started through the host's launcher.
    pub host: Option<crate::hosts::Placement>,
}

impl RolePlan {
    /// A role running `workload`'s code on `task`.
    pub fn new(
        name: impl Into<String>,
        core: Option<usize>,
        workload: &'static str,
        task: &impl serde::Serialize,
    ) -> anyhow::Result<RolePlan> {
        let name = name.into();
        let task = serde_json::to_value(task)
            .with_context(|| format!("encoding the task of role {name}"))?;
        Ok(RolePlan {
            name,
            core,
            workload,
            task,
            host: None,
        })
    }
}

/// A private directory for one run's FIFOs, sockets and role logs (mode 0700), removed
/// when dropped.
pub fn run_dir() -> anyhow::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(&ipcbench_transport::names::prefix("run"))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .context("creating a private run directory")
}

/// A directory inside a run directory: the owner's alone (0700) whatever the umask.
pub fn private_dir(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// A new file inside a run directory: the owner's alone (0600) whatever the umask.
pub fn private_file(path: &Path) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// One run: its roles (the first one listens) and its bounds.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Run id.
    pub run_id: String,
    /// The roles.
    pub roles: Vec<RolePlan>,
    /// Bound on setup (spawn, connect, barrier).
    pub setup_timeout: Duration,
    /// Bound on the measured part, from `go`.
    pub timeout: Duration,
    /// The run's private directory (role logs go here).
    pub dir: PathBuf,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Every role reported.
    Ok,
    /// A role failed or died; which, and how.
    Failed(String),
    /// The run overran its bound.
    Timeout(String),
    /// Ctrl-C.
    Interrupted,
}

impl Status {
    /// The same status with `note` appended to its message (`failed: ...; logs in ...`).
    pub fn with_note(self, note: &str) -> Status {
        match self {
            Status::Failed(m) => Status::Failed(format!("{m}; {note}")),
            Status::Timeout(m) => Status::Timeout(format!("{m}; {note}")),
            other => other,
        }
    }

    /// The text of the CSV `status` column.
    pub fn text(&self) -> String {
        match self {
            Status::Ok => "ok".into(),
            Status::Failed(m) => format!("failed: {m}"),
            Status::Timeout(m) => format!("timeout: {m}"),
            Status::Interrupted => "interrupted".into(),
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct RunOutcome {
    /// How it ended.
    pub status: Status,
    /// Each role's report, in role order.
    pub reports: Vec<Option<RoleReport>>,
    /// When the run was stopped (Ctrl-C, its bound): what each role that said something
    /// as it went said, as `role: message`.
    pub last_words: Vec<String>,
}

enum Msg {
    Event(usize, RoleEvent),
    Garbage(usize, String),
    Eof(usize),
}

struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
    reader: Option<std::thread::JoinHandle<()>>,
    ready: Option<Vec<ipcbench_transport::Endpoint>>,
    connected: bool,
    done: Option<RoleReport>,
    failed: Option<String>,
    eof: bool,
    status: Option<ExitStatus>,
}

impl Proc {
    fn broken(&self) -> bool {
        self.failed.is_some() || (self.eof && self.done.is_none())
    }
}

fn spawn(
    idx: usize,
    exe: &Path,
    host: Option<&crate::hosts::Placement>,
    job: &RoleJob,
    dir: &Path,
    events: Sender<Msg>,
) -> anyhow::Result<Proc> {
    let log = dir.join(format!("{}.stderr", job.role));
    let err = private_file(&log)?;
    // On another host: its launcher, then the harness there.
    let (mut command, name) = match host {
        Some(h) => {
            let mut c = Command::new(&h.command[0]);
            c.args(&h.command[1..]);
            (c, format!("{} on {}", job.role, h.name))
        }
        None => (Command::new(exe), job.role.clone()),
    };
    let mut child = command
        .arg("__role")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| match host {
            Some(h) => format!(
                "starting role {name} with its launcher `{}`",
                h.command.join(" ")
            ),
            None => format!("spawning role {} ({})", job.role, exe.display()),
        })?;
    let mut stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let line = serde_json::to_string(job)?;
    if let Some(s) = stdin.as_mut() {
        // A role that died at once shows up as EOF on its stdout; no need to fail here.
        let _ = writeln!(s, "{line}").and_then(|_| s.flush());
    }
    let reader = stdout.map(|out| {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let msg = match serde_json::from_str::<RoleEvent>(&line) {
                    Ok(ev) => Msg::Event(idx, ev),
                    Err(_) => Msg::Garbage(idx, line),
                };
                if events.send(msg).is_err() {
                    return;
                }
            }
            let _ = events.send(Msg::Eof(idx));
        })
    });
    Ok(Proc {
        name,
        child,
        stdin,
        log,
        reader,
        ready: None,
        connected: false,
        done: None,
        failed: None,
        eof: false,
        status: None,
    })
}

enum Stop {
    Broken,
    Timeout,
    Interrupted,
}

/// Applies messages until `until` holds, a role breaks, the deadline passes or Ctrl-C.
fn pump(
    procs: &mut [Proc],
    events: &Receiver<Msg>,
    deadline: Instant,
    interrupted: &AtomicBool,
    until: impl Fn(&[Proc]) -> bool,
) -> Result<(), Stop> {
    loop {
        if procs.iter().any(Proc::broken) {
            return Err(Stop::Broken);
        }
        if until(procs) {
            return Ok(());
        }
        if interrupted.load(Ordering::Relaxed) {
            return Err(Stop::Interrupted);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Stop::Timeout);
        }
        let slice = (deadline - now).min(Duration::from_millis(100));
        match events.recv_timeout(slice) {
            Ok(msg) => apply(procs, msg),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Err(Stop::Broken),
        }
    }
}

fn apply(procs: &mut [Proc], msg: Msg) {
    match msg {
        Msg::Event(i, ev) => match ev {
            RoleEvent::Ready { endpoint, more } => {
                procs[i].ready = Some(endpoint.into_iter().chain(more).collect())
            }
            RoleEvent::Connected => procs[i].connected = true,
            RoleEvent::Done(r) => procs[i].done = Some(r),
            RoleEvent::Failed { message } => procs[i].failed = Some(message),
        },
        Msg::Garbage(i, line) => {
            procs[i].failed = Some(format!(
                "unexpected output from the role: {:?}",
                truncate(&line, 120)
            ));
        }
        Msg::Eof(i) => procs[i].eof = true,
    }
}

/// After one role broke: lets the others say how they ended, for at most `within`.
fn drain(procs: &mut [Proc], events: &Receiver<Msg>, within: Duration) {
    let deadline = Instant::now() + within;
    while !procs.iter().all(|p| p.done.is_some() || p.broken()) {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(msg) => apply(procs, msg),
            Err(_) => return,
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n).collect::<String>() + "…"
    }
}

fn describe_exit(status: Option<ExitStatus>) -> String {
    match status {
        None => "still running, killed".into(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(sig)) => match Signal::try_from(sig) {
                Ok(sig) => format!("killed by {sig}"),
                Err(_) => format!("killed by signal {sig}"),
            },
            _ => format!("{s}"),
        },
    }
}

/// What a role's log says of its end: a panic's place and message where there was one
/// (not the backtrace note after it), else the last line.
fn last_log_line(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    if let Some(i) = lines.iter().rposition(|l| l.contains("panicked at")) {
        let place = lines[i].trim().trim_end_matches(':');
        let what = lines.get(i + 1).map_or("", |l| l.trim());
        return Some(truncate(&format!("{place}: {what}"), 300));
    }
    lines
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| truncate(l.trim(), 200))
}

/// Waits a little for a role that closed its output to exit, so its status can be told.
fn reap_soon(p: &mut Proc, within: Duration) {
    let deadline = Instant::now() + within;
    while p.status.is_none() && Instant::now() < deadline {
        match p.child.try_wait() {
            Ok(Some(s)) => p.status = Some(s),
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => break,
        }
    }
}

fn failure_text(procs: &mut [Proc]) -> String {
    let mut parts = Vec::new();
    for p in procs.iter_mut().filter(|p| p.broken()) {
        reap_soon(p, Duration::from_secs(2));
        let why = p.failed.clone().or_else(|| last_log_line(&p.log));
        parts.push(match why {
            Some(w) => format!("{} ({}): {w}", p.name, describe_exit(p.status)),
            None => format!("{} ({})", p.name, describe_exit(p.status)),
        });
    }
    parts.join("; ")
}

/// How long roles have to leave after SIGTERM when a run is stopped (the tasks gateway
/// gives its workers 2 s to take their poison pills) before their groups are killed.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// Asks every role still running to stop (SIGTERM to the role's own process, not its
/// group: a role that has helpers, such as the tasks gateway, stops them its own way) and
/// waits at most `grace` for all of them to exit.
fn terminate(procs: &mut [Proc], grace: Duration) {
    for p in procs.iter_mut().filter(|p| p.status.is_none()) {
        let _ = nix::sys::signal::kill(Pid::from_raw(p.child.id() as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    for p in procs.iter_mut() {
        reap_soon(p, deadline.saturating_duration_since(Instant::now()));
    }
}

/// Kills every role's process group and reaps it.
fn cleanup(procs: &mut [Proc]) {
    for p in procs.iter_mut() {
        p.stdin.take();
        if p.status.is_none() {
            // Each role leads its own process group (pgid == pid): kill all of it.
            let _ = killpg(Pid::from_raw(p.child.id() as i32), Signal::SIGKILL);
            p.status = p.child.wait().ok();
        }
    }
    for p in procs.iter_mut() {
        if let Some(r) = p.reader.take() {
            let _ = r.join();
        }
    }
}

/// Runs `plan` with this binary (`exe`) as every role.
pub fn execute(exe: &Path, plan: &RunPlan, interrupted: &AtomicBool) -> RunOutcome {
    execute_with(exe, plan, interrupted, &|| {})
}

/// [`execute`], calling `tick` about every 100 ms while the roles run (for progress).
pub fn execute_with(
    exe: &Path,
    plan: &RunPlan,
    interrupted: &AtomicBool,
    tick: &dyn Fn(),
) -> RunOutcome {
    let mut procs: Vec<Proc> = Vec::new();
    let (tx, rx) = mpsc::channel();
    let status = run_phases(exe, plan, interrupted, &mut procs, &tx, &rx, tick);
    drop(tx);
    // On failure give the other roles a moment to report their side too.
    if matches!(status, Err(Stop::Broken)) {
        drain(&mut procs, &rx, Duration::from_millis(500));
    }
    let stopped = matches!(status, Err(Stop::Interrupted | Stop::Timeout));
    let mut last_words = Vec::new();
    if stopped {
        terminate(&mut procs, TERM_GRACE);
        drain(&mut procs, &rx, Duration::from_millis(200));
        last_words = procs
            .iter()
            .filter_map(|p| p.failed.as_ref().map(|m| format!("{}: {m}", p.name)))
            .collect();
    }
    let status = match status {
        Ok(()) => Status::Ok,
        Err(Stop::Interrupted) => Status::Interrupted,
        Err(Stop::Broken) => Status::Failed(failure_text(&mut procs)),
        Err(Stop::Timeout) => {
            let waiting: Vec<&str> = procs
                .iter()
                .filter(|p| p.done.is_none())
                .map(|p| p.name.as_str())
                .collect();
            let mut why = format!("{} still running after the run's bound", waiting.join(", "));
            for w in &last_words {
                why.push_str("; ");
                why.push_str(w);
            }
            Status::Timeout(why)
        }
    };
    cleanup(&mut procs);
    let mut reports: Vec<Option<RoleReport>> = procs.iter_mut().map(|p| p.done.take()).collect();
    reports.resize(plan.roles.len(), None);
    RunOutcome {
        status,
        reports,
        last_words,
    }
}

fn run_phases(
    exe: &Path,
    plan: &RunPlan,
    interrupted: &AtomicBool,
    procs: &mut Vec<Proc>,
    tx: &Sender<Msg>,
    rx: &Receiver<Msg>,
    tick: &dyn Fn(),
) -> Result<(), Stop> {
    let setup_deadline = Instant::now() + plan.setup_timeout;
    let parent_pid = std::process::id() as i32;
    let job = |i: usize, resolved: Vec<ipcbench_transport::Endpoint>| RoleJob {
        run_id: plan.run_id.clone(),
        role: plan.roles[i].name.clone(),
        core: plan.roles[i].core,
        // A role on another host has a launcher for a parent: it watches its stdin
        // instead (see `wire::wait_for_go`).
        parent_pid: if plan.roles[i].host.is_some() {
            0
        } else {
            parent_pid
        },
        setup_timeout_ms: plan.setup_timeout.as_millis() as u64,
        workload: plan.roles[i].workload.to_string(),
        task: plan.roles[i].task.clone(),
        resolved,
    };
    let spawn_or_fail = |procs: &mut Vec<Proc>, i: usize, resolved| -> Result<(), Stop> {
        match spawn(
            i,
            exe,
            plan.roles[i].host.as_ref(),
            &job(i, resolved),
            &plan.dir,
            tx.clone(),
        ) {
            Ok(p) => {
                procs.push(p);
                Ok(())
            }
            Err(e) => {
                // Report it as the role's failure; nothing of it is running.
                note!("harness: {e:#}");
                Err(Stop::Broken)
            }
        }
    };
    if plan.roles.is_empty() {
        return Ok(());
    }
    spawn_or_fail(procs, 0, vec![])?;
    pump(procs, rx, setup_deadline, interrupted, |p| {
        p[0].ready.is_some()
    })?;
    let resolved = procs[0].ready.clone().unwrap_or_default();
    for i in 1..plan.roles.len() {
        spawn_or_fail(procs, i, resolved.clone())?;
    }
    pump(procs, rx, setup_deadline, interrupted, |p| {
        p.iter().all(|p| p.connected)
    })?;
    for p in procs.iter_mut() {
        if let Some(s) = p.stdin.as_mut() {
            if writeln!(s, "{GO}").and_then(|_| s.flush()).is_err() {
                p.failed
                    .get_or_insert_with(|| "could not be told to start".into());
            }
        }
    }
    pump(procs, rx, Instant::now() + plan.timeout, interrupted, |p| {
        tick();
        p.iter().all(|p| p.done.is_some())
    })
}
