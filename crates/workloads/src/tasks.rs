//! The `tasks` workload's roles (docs/workloads.md §2): a client pushes batches of lines to a
//! gateway, the gateway looks each line up and hands the batches to worker processes
//! first-free-first-served, and the workers push their results straight back to the
//! client, all over the `queue` sockets ([`ipcbench_transport::queue`]).
//!
//! - Client: [`client`]. Batches its lines in order (`batch`, default 16), pushes each as a
//!   `LINES` message, pulls results from every worker that connects, matches each to its
//!   batch id (a second result for a batch is counted as a duplicate and discarded), and
//!   when every batch is back tells the gateway the job is done. The makespan runs from
//!   just before the first push to the last result.
//! - Gateway: [`gateway`]. Pulls batches, skips and counts lines its table does not know,
//!   and pushes `TASK`s over a *reliable* PUSH: a worker asks for one batch at a time and
//!   acknowledges it once its result is on its way to the client, so the batch of a
//!   worker that dies is handed to another. Workers start lazily, one more whenever
//!   batches wait and no worker is free, up to `max_workers`; how a worker is started,
//!   killed or found dead is the caller's ([`Workers`]: the harness runs processes).
//!   When the client says the job is done, one poison pill (`DIE`) goes to each worker.
//! - Worker: [`worker`]. Runs each batch sequentially or one thread per command, pushes
//!   `TASK_DONE` to the client, then asks the gateway for the next. A worker idle for
//!   `idle_timeout_s` leaves (it is reaped; the gateway starts another if work comes).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ipcbench_transport::queue::{Acceptor, FullPolicy, Pull, PullError, Push, PushOptions};
use ipcbench_transport::Transport;

use crate::tasks_data::{Answer, ClientLine, Command};
use crate::tasks_exec::{run_batch, Message, TaskKind, Work};
use crate::{new_histogram, Measurement, WorkloadError};

/// Parameters shared by the three roles.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TasksParams {
    /// Lines per batch (the original: 16).
    pub batch: u32,
    /// Most workers at once (the original: 32).
    pub max_workers: u32,
    /// One thread per command (or one command after another).
    pub threads: bool,
    /// What a command does.
    pub kind: TaskKind,
    /// If > 0, every command's wait in seconds instead of the data file's.
    pub wait_s: f64,
    /// PUSH high-water mark (the original: 1000).
    pub hwm: u32,
    /// What a PUSH does when its queue is full.
    pub policy: FullPolicy,
    /// Kill the worker holding the `N`-th batch handed out (0: no fault).
    pub kill_worker_after: u32,
    /// A worker without a batch for this long leaves.
    pub idle_timeout_s: f64,
    /// Bound on the whole job, from the start.
    pub timeout_ms: u64,
}

/// A handshake with a peer that has arrived takes at most this long.
pub(crate) const HANDSHAKE: Duration = Duration::from_secs(5);
/// How long workers have to take their poison pills and leave when the gateway stops
/// early, before they are killed.
pub(crate) const PILL_GRACE: Duration = Duration::from_secs(2);

/// Largest message: a batch of `MAX_BATCH` commands, roughly.
pub(crate) const BUF: usize = 1 << 20;

impl TasksParams {
    pub(crate) fn deadline(&self, from: Instant) -> Instant {
        from + Duration::from_millis(self.timeout_ms)
    }
}

/// The bound on the makespan with a worker holding one batch at a time: rounds of
/// batches times the time of one batch (its longest command with threads, the sum of
/// its commands without). `waits` are the commands' waits in batch order.
pub fn ideal_s(waits: &[f64], batch: usize, workers: usize, threads: bool) -> f64 {
    let batch = batch.max(1);
    let times: Vec<f64> = waits
        .chunks(batch)
        .map(|b| {
            if threads {
                b.iter().copied().fold(0.0, f64::max)
            } else {
                b.iter().sum()
            }
        })
        .collect();
    // Workers take batches first-free: with equal batch times that is rounds of
    // `workers`; in general, greedy list scheduling in order (what first-free does).
    let mut free_at = vec![0.0f64; workers.max(1)];
    for t in times {
        let (i, _) = free_at
            .iter()
            .enumerate()
            .fold(
                (0, f64::INFINITY),
                |(bi, bv), (i, v)| {
                    if *v < bv {
                        (i, *v)
                    } else {
                        (bi, bv)
                    }
                },
            );
        free_at[i] += t;
    }
    free_at.into_iter().fold(0.0, f64::max)
}

/// The client's account of its batches: when each was sent, which came back, and what
/// the results said (shared by the roles over `queue` and over ZeroMQ).
#[derive(Debug)]
pub(crate) struct Tally {
    submitted: BTreeMap<u32, Instant>,
    done: BTreeSet<u32>,
    duplicates: u64,
    sum: i64,
    cpu_ns: u64,
    commands: u64,
    workers_seen: BTreeSet<u32>,
    hist: hdrhistogram::Histogram<u64>,
    start: Instant,
    last: Instant,
}

impl Tally {
    /// A tally whose makespan runs from `start`.
    pub(crate) fn new(start: Instant) -> Tally {
        Tally {
            submitted: BTreeMap::new(),
            done: BTreeSet::new(),
            duplicates: 0,
            sum: 0,
            cpu_ns: 0,
            commands: 0,
            workers_seen: BTreeSet::new(),
            hist: new_histogram(),
            start,
            last: start,
        }
    }

    /// Batch `id` was queued at `at`.
    pub(crate) fn sent(&mut self, id: u32, at: Instant) {
        self.submitted.insert(id, at);
    }

    /// Every batch sent has its result.
    pub(crate) fn complete(&self) -> bool {
        self.done.len() >= self.submitted.len()
    }

    /// Takes one message from a worker: a result for a batch sent (a second one is
    /// counted as a duplicate and dropped); anything else is an integrity error.
    pub(crate) fn take(&mut self, frame: &[u8]) -> Result<(), WorkloadError> {
        let now = Instant::now();
        match Message::decode(frame)? {
            Message::TaskDone {
                id,
                worker,
                result,
                cpu_ns: c,
            } => {
                let Some(at) = self.submitted.get(&id) else {
                    return Err(WorkloadError::Integrity(format!(
                        "a result for batch {id}, which was never sent"
                    )));
                };
                if !self.done.insert(id) {
                    self.duplicates += 1;
                    return Ok(());
                }
                let _ = self.hist.record((now - *at).as_nanos().max(1) as u64);
                self.sum += result;
                self.cpu_ns += c.iter().sum::<u64>();
                self.commands += c.len() as u64;
                self.workers_seen.insert(worker);
                self.last = now;
                Ok(())
            }
            other => Err(WorkloadError::Integrity(format!(
                "the client got {other:?} instead of a result"
            ))),
        }
    }

    /// The error of a job whose results did not all come within `timeout_ms`.
    pub(crate) fn missing(&self, timeout_ms: u64) -> WorkloadError {
        let missing: Vec<u32> = self
            .submitted
            .keys()
            .filter(|id| !self.done.contains(id))
            .copied()
            .collect();
        WorkloadError::Integrity(format!(
            "{} of {} batches had no result within {timeout_ms} ms (first missing: {:?})",
            missing.len(),
            self.submitted.len(),
            &missing[..missing.len().min(8)]
        ))
    }

    /// The client's measurement: `tasks` lines in `batches` batches, `dropped` of them
    /// given up by the full-queue policy.
    pub(crate) fn measurement(self, tasks: usize, batches: usize, dropped: u64) -> Measurement {
        let makespan = self.last - self.start;
        Measurement {
            histogram: Some(self.hist),
            count: self.done.len() as u64,
            bytes: 0,
            duration: makespan,
            metrics: vec![
                ("makespan_s".into(), makespan.as_secs_f64()),
                ("tasks".into(), tasks as f64),
                ("batches".into(), batches as f64),
                ("results_ok".into(), self.done.len() as f64),
                ("duplicates".into(), self.duplicates as f64),
                ("response_sum".into(), self.sum as f64),
                ("dropped".into(), dropped as f64),
                (
                    "cpu_ms_per_command".into(),
                    if self.commands > 0 {
                        self.cpu_ns as f64 / self.commands as f64 / 1e6
                    } else {
                        0.0
                    },
                ),
                ("workers_seen".into(), self.workers_seen.len() as f64),
            ],
        }
    }
}

/// A batch's frame: `LINES` with its id.
pub(crate) fn lines_frame(id: usize, lines: &[ClientLine]) -> Vec<u8> {
    Message::Lines {
        id: id as u32,
        lines: lines.to_vec(),
    }
    .encode()
}

/// The gateway's look-up of a batch's lines: the work of each line the table knows; the
/// others are counted in `unknown`.
pub(crate) fn look_up(
    lines: Vec<ClientLine>,
    table: &HashMap<(Ipv4Addr, Command), Answer>,
    p: &TasksParams,
    unknown: &mut u64,
) -> Vec<Work> {
    let mut work = Vec::with_capacity(lines.len());
    for l in lines {
        match table.get(&(l.ip, l.command)) {
            Some(a) => work.push(Work {
                response: a.response,
                wait_s: if p.wait_s > 0.0 { p.wait_s } else { a.wait_s },
            }),
            None => *unknown += 1,
        }
    }
    work
}

/// What a frame from the client asks of the gateway.
pub(crate) enum FromClient {
    /// Hand out this `TASK` frame (the batch's lines looked up).
    Task {
        /// The batch.
        id: u32,
        /// Its `TASK` frame.
        frame: Vec<u8>,
    },
    /// Every result is back: the pills may go.
    JobDone,
}

/// Reads a frame from the client: a batch, looked up (unknown lines counted in
/// `unknown`), or the end of the job; anything else is an integrity error.
pub(crate) fn read_client(
    frame: &[u8],
    table: &HashMap<(Ipv4Addr, Command), Answer>,
    p: &TasksParams,
    unknown: &mut u64,
) -> Result<FromClient, WorkloadError> {
    match Message::decode(frame)? {
        Message::Lines { id, lines } => {
            let work = look_up(lines, table, p, unknown);
            Ok(FromClient::Task {
                id,
                frame: Message::Task { id, work }.encode(),
            })
        }
        Message::JobDone => Ok(FromClient::JobDone),
        other => Err(WorkloadError::Integrity(format!(
            "the gateway got {other:?} from the client"
        ))),
    }
}

/// How long the workers have to take their pills and go once the job is done.
pub(crate) const LEAVING: Duration = Duration::from_secs(10);

/// A worker's run of batch `id`: its `TASK_DONE` frame.
pub(crate) fn run_task(id: u32, index: u32, work: &[Work], p: &TasksParams) -> Vec<u8> {
    let (result, cpu) = run_batch(work, p.kind, p.threads);
    Message::TaskDone {
        id,
        worker: index,
        result,
        cpu_ns: cpu.iter().map(|d| d.as_nanos() as u64).collect(),
    }
    .encode()
}

/// The client: pushes every batch to the gateway over `gateway`, pulls the results from
/// the workers that connect on `results`, and says when the job is done.
pub fn client<X: Transport>(
    gateway: (X::Tx, X::Rx),
    results: &mut Acceptor<X>,
    lines: &[ClientLine],
    p: &TasksParams,
) -> Result<Measurement, WorkloadError> {
    let mut push = Push::new(vec![gateway], p.hwm as usize, p.policy);
    let mut pull: Pull<X::Tx, X::Rx> =
        Pull::open(p.hwm.max(1), ipcbench_transport::queue::AckMode::OnReceipt);
    let batches: Vec<&[ClientLine]> = lines.chunks(p.batch.max(1) as usize).collect();
    let start = Instant::now();
    let mut tally = Tally::new(start);
    let deadline = p.deadline(start);
    for (id, b) in batches.iter().enumerate() {
        let frame = lines_frame(id, b);
        let at = Instant::now();
        match push.send(&frame) {
            Ok(()) => tally.sent(id as u32, at),
            // Given up by the full-queue policy: counted (`dropped`), never waited for.
            Err(ipcbench_transport::queue::OutboxError::Dropped { .. }) => {}
            Err(e) => {
                return Err(WorkloadError::Integrity(format!(
                    "push to the gateway: {e}"
                )))
            }
        }
    }
    let mut buf = vec![0u8; BUF];
    while !tally.complete() {
        for (_, tx, rx) in results.poll(HANDSHAKE).map_err(setup)? {
            pull.add_peer(tx, rx);
        }
        match pull.recv_timeout(&mut buf, Duration::from_millis(1)) {
            Ok(n) => tally.take(&buf[..n])?,
            Err(PullError::Timeout | PullError::Disconnected) => {
                if Instant::now() >= deadline {
                    return Err(tally.missing(p.timeout_ms));
                }
            }
            Err(PullError::Truncated { needed }) => {
                return Err(WorkloadError::Integrity(format!(
                    "a result of {needed} bytes (at most {BUF})"
                )))
            }
        }
    }
    // Job complete: the gateway sends the poison pills.
    let _ = push.send(&Message::JobDone.encode());
    push.finish(Duration::from_secs(5));
    Ok(tally.measurement(lines.len(), batches.len(), push.counts().dropped))
}

fn setup(e: ipcbench_transport::SetupError) -> WorkloadError {
    WorkloadError::Param(format!("accepting a worker: {e}"))
}

/// How the gateway's workers are started, killed and found gone: processes in the
/// harness, threads in tests.
pub trait Workers {
    /// Slots there are (worker `k` connects on slot `k`; a slot is used once).
    fn slots(&self) -> usize;
    /// Starts the worker of slot `slot`.
    fn start(&mut self, slot: usize) -> Result<(), WorkloadError>;
    /// Slots whose worker has ended since the last call, and whether it ended cleanly
    /// (exit status 0).
    fn exited(&mut self) -> Vec<(usize, bool)>;
    /// Kills the worker of slot `slot` at once (fault injection).
    fn kill(&mut self, slot: usize);
}

/// What the gateway counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayCounts {
    /// Lines its table did not know (skipped).
    pub unknown: u64,
    /// Batches handed out again after their worker died.
    pub redispatched: u64,
    /// Workers started.
    pub started: u64,
    /// Most workers alive at once.
    pub peak: u64,
    /// Workers that left idle before the job was done.
    pub reaped: u64,
    /// Workers killed by fault injection.
    pub killed: u64,
    /// Workers that ended with an error (besides the killed one).
    pub failed: u64,
}

/// What a gateway reports when its deadline passes with workers still there: stopping
/// early (the pills sent, how many took theirs), the pills not taken, or the job not done.
pub(crate) fn overdue(
    stopping: &Option<String>,
    interrupt: &AtomicBool,
    job_done: bool,
    pilled: usize,
    live: usize,
    p: &TasksParams,
) -> String {
    if let Some(why) = stopped_because(stopping, interrupt) {
        format!(
            "{why}: poison pills sent to the {pilled} workers running; {} took theirs \
             and left, {live} still busy {} s later were killed",
            pilled.saturating_sub(live),
            PILL_GRACE.as_secs()
        )
    } else if job_done {
        format!("{live} workers did not leave after their poison pill")
    } else {
        format!("the job was not done within {} ms", p.timeout_ms)
    }
}

impl GatewayCounts {
    /// The gateway's metrics.
    pub(crate) fn metrics(&self) -> Vec<(String, f64)> {
        vec![
            ("unknown".into(), self.unknown as f64),
            ("redispatched".into(), self.redispatched as f64),
            ("workers_started".into(), self.started as f64),
            ("workers_peak".into(), self.peak as f64),
            ("workers_reaped".into(), self.reaped as f64),
            ("workers_killed".into(), self.killed as f64),
            ("workers_failed".into(), self.failed as f64),
        ]
    }
}

/// Why the gateway stopped early, told when it reports it: an interrupt that arrived
/// while the workers took their pills wins over what was noticed first (on Ctrl-C every
/// role gets SIGTERM, and the client's leaving can be seen before the gateway's own
/// signal is).
pub(crate) fn stopped_because<'a>(
    stopping: &'a Option<String>,
    interrupt: &AtomicBool,
) -> Option<&'a str> {
    stopping.as_deref().map(|why| {
        if interrupt.load(Ordering::Relaxed) {
            "interrupted"
        } else {
            why
        }
    })
}

/// The gateway: pulls batches from the client over `client`, hands them to workers it
/// starts through `workers` (which connect on `tasks`), and sends the poison pills.
pub fn gateway<X: Transport>(
    client: (X::Tx, X::Rx),
    tasks: &mut Acceptor<X>,
    table: &HashMap<(Ipv4Addr, Command), Answer>,
    workers: &mut dyn Workers,
    p: &TasksParams,
    interrupt: &AtomicBool,
) -> Result<Measurement, WorkloadError> {
    let mut from_client = Pull::new(vec![client], p.hwm.max(1));
    let mut push: Push<X::Tx, X::Rx> = Push::open(PushOptions {
        hwm: p.hwm as usize,
        policy: p.policy,
        reliable: true,
        fixed: false,
    });
    let mut c = GatewayCounts::default();
    let mut live: BTreeSet<usize> = BTreeSet::new();
    let mut connected: HashMap<usize, u64> = HashMap::new();
    let mut next_slot = 0usize;
    let mut job_done = false;
    let mut pills_sent = false;
    // Why the gateway is shutting down before the job is done (Ctrl-C, the client gone).
    let mut stopping: Option<String> = None;
    let mut pilled = 0usize;
    let mut killed: Option<usize> = None;
    let mut buf = vec![0u8; BUF];
    let start = Instant::now();
    let mut deadline = p.deadline(start);
    loop {
        // Every frame the client has sent so far, then the rest of the round.
        let mut wait = Duration::from_millis(1);
        loop {
            match from_client.recv_timeout(&mut buf, wait) {
                Ok(n) => match read_client(&buf[..n], table, p, &mut c.unknown)? {
                    FromClient::Task { frame, .. } => {
                        if let Err(e) = push.send(&frame) {
                            return Err(WorkloadError::Integrity(format!(
                                "push to the workers: {e}"
                            )));
                        }
                    }
                    FromClient::JobDone => {
                        job_done = true;
                        deadline = Instant::now() + LEAVING;
                    }
                },
                Err(PullError::Timeout) => break,
                Err(PullError::Disconnected) if job_done => break,
                Err(PullError::Disconnected) => {
                    stopping = Some("the client left before the job was done".into());
                    break;
                }
                Err(PullError::Truncated { needed }) => {
                    return Err(WorkloadError::Integrity(format!(
                        "a batch of {needed} bytes (at most {BUF})"
                    )))
                }
            }
            wait = Duration::ZERO;
        }
        if stopping.is_none() && !job_done && interrupt.load(Ordering::Relaxed) {
            stopping = Some("interrupted".into());
        }
        if stopping.is_some() && !job_done {
            // No more batches are handed out or workers started; the pills follow.
            job_done = true;
            deadline = Instant::now() + PILL_GRACE;
        }
        // Only the slots of workers started and not connected yet.
        let starting: Vec<usize> = live
            .iter()
            .filter(|s| !connected.contains_key(s))
            .copied()
            .collect();
        for (slot, tx, rx) in tasks.poll_slots(starting, HANDSHAKE).map_err(setup)? {
            connected.insert(slot, push.add_peer(tx, rx));
        }
        for (slot, clean) in workers.exited() {
            live.remove(&slot);
            if let Some(peer) = connected.remove(&slot) {
                push.peer_gone(peer);
            }
            if killed == Some(slot) {
                // The fault we injected.
            } else if !clean {
                c.failed += 1;
            } else if !job_done {
                c.reaped += 1;
            }
        }
        if p.kill_worker_after > 0
            && killed.is_none()
            && push.counts().delivered >= u64::from(p.kill_worker_after)
        {
            // The worker that took the latest batch is in the middle of it.
            if let Some(peer) = push.last_peer() {
                if let Some((&slot, _)) = connected.iter().find(|(_, v)| **v == peer) {
                    workers.kill(slot);
                    killed = Some(slot);
                    c.killed += 1;
                }
            }
        }
        // One more worker whenever batches wait for more workers than are starting or free.
        let mut starting = live.iter().filter(|s| !connected.contains_key(s)).count() as u64;
        while !job_done
            && push.backlog() > starting + push.free_peers()
            && live.len() < p.max_workers as usize
            && next_slot < workers.slots()
        {
            starting += 1;
            workers.start(next_slot)?;
            live.insert(next_slot);
            next_slot += 1;
            c.started += 1;
            c.peak = c.peak.max(live.len() as u64);
        }
        if job_done && !pills_sent {
            // One pill per live worker: each takes one, acknowledges it and leaves. They go
            // ahead of any batch still waiting (when stopping early; a worker in the
            // middle of a batch takes its pill after it).
            for _ in 0..live.len() {
                let _ = push.send_first(&Message::Die.encode());
            }
            pilled = live.len();
            pills_sent = true;
        }
        if job_done && live.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let what = overdue(&stopping, interrupt, job_done, pilled, live.len(), p);
            for s in &live {
                workers.kill(*s);
            }
            return Err(if stopping.is_some() {
                WorkloadError::Stopped(what)
            } else {
                WorkloadError::Integrity(what)
            });
        }
    }
    if let Some(why) = stopped_because(&stopping, interrupt) {
        push.finish(Duration::ZERO);
        return Err(WorkloadError::Stopped(format!(
            "{why}: poison pills sent to the {pilled} workers running; all left"
        )));
    }
    c.redispatched = push.counts().redelivered;
    push.finish(Duration::from_millis(100));
    Ok(Measurement {
        histogram: None,
        count: 0,
        bytes: 0,
        duration: start.elapsed(),
        metrics: c.metrics(),
    })
}

/// A worker's connection to the client, being made on a thread of its own.
pub type Connecting<X> =
    std::thread::JoinHandle<Result<(<X as Transport>::Tx, <X as Transport>::Rx), WorkloadError>>;

/// How a worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerExit {
    /// It took its poison pill.
    Pill,
    /// It was idle for `idle_timeout_s` and left.
    Idle,
}

/// A worker: takes batches from the gateway one at a time, runs them, pushes each result
/// to the client, and asks for the next.
pub fn worker<X: Transport>(
    index: u32,
    gateway: (X::Tx, X::Rx),
    client: Connecting<X>,
    p: &TasksParams,
) -> Result<WorkerExit, WorkloadError> {
    let mut pull = Pull::new_manual(vec![gateway]);
    // The connection to the client is made while the first batch runs: on a lossy link a
    // lost SYN costs a second, which would otherwise come before the batch.
    let mut client = Some(client);
    let mut push: Option<Push<X::Tx, X::Rx>> = None;
    let idle = Duration::from_secs_f64(p.idle_timeout_s.max(0.001));
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match pull.recv_timeout(&mut buf, idle) {
            Ok(n) => n,
            Err(PullError::Timeout) => {
                if let Some(push) = push.as_mut() {
                    push.finish(Duration::from_secs(5));
                }
                return Ok(WorkerExit::Idle);
            }
            Err(PullError::Disconnected) => {
                return Err(WorkloadError::Integrity("the gateway is gone".into()))
            }
            Err(PullError::Truncated { needed }) => {
                return Err(WorkloadError::Integrity(format!(
                    "a batch of {needed} bytes (at most {BUF})"
                )))
            }
        };
        match Message::decode(&buf[..n])? {
            Message::Task { id, work } => {
                let done = run_task(id, index, &work, p);
                if let Some(connecting) = client.take() {
                    let link = connecting.join().map_err(|_| {
                        WorkloadError::Integrity("connecting to the client failed (panic)".into())
                    })??;
                    push = Some(Push::new(vec![link], p.hwm as usize, p.policy));
                }
                let Some(push) = push.as_mut() else {
                    return Err(WorkloadError::Integrity(
                        "no connection to the client".into(),
                    ));
                };
                push.send(&done)
                    .map_err(|e| WorkloadError::Integrity(format!("push to the client: {e}")))?;
                // Acknowledge the batch only once its result is on its way.
                if !push.flush(Duration::from_millis(p.timeout_ms)) {
                    return Err(WorkloadError::Integrity(
                        "the client did not take a result in time".into(),
                    ));
                }
                pull.done(true)?;
            }
            Message::Die => {
                pull.done(false)?;
                if let Some(push) = push.as_mut() {
                    push.finish(Duration::from_secs(5));
                }
                return Ok(WorkerExit::Pill);
            }
            other => return Err(WorkloadError::Integrity(format!("a worker got {other:?}"))),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    // Test code: a failed unwrap is a failed test, with its message.
    #![allow(clippy::unwrap_used)]
    use super::*;

    use crate::tasks_data::{generate, parse_client, parse_server};
    use ipcbench_transport::{Endpoint, EndpointOptions, TransportKind, Uds};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;

    const T: Duration = Duration::from_secs(20);

    fn endpoint(dir: &std::path::Path, name: &str) -> Endpoint {
        let sub = dir.join(name);
        std::fs::create_dir(&sub).unwrap();
        Endpoint::prepare(TransportKind::Uds, &sub, &EndpointOptions::default()).unwrap()
    }

    /// Workers as threads: slot `k` connects to the gateway's and the client's slot `k`.
    struct Threads {
        to_gateway: Vec<Endpoint>,
        to_client: Vec<Endpoint>,
        p: TasksParams,
        running: BTreeMap<usize, JoinHandle<Result<WorkerExit, WorkloadError>>>,
        exits: Arc<Mutex<Vec<WorkerExit>>>,
    }

    impl Workers for Threads {
        fn slots(&self) -> usize {
            self.to_gateway.len()
        }
        fn start(&mut self, slot: usize) -> Result<(), WorkloadError> {
            let (g, c, p) = (
                self.to_gateway[slot].clone(),
                self.to_client[slot].clone(),
                self.p,
            );
            self.running.insert(
                slot,
                std::thread::spawn(move || {
                    let g = Uds::connect(&g, T).unwrap();
                    let c = std::thread::spawn(move || {
                        Uds::connect(&c, T).map_err(|e| WorkloadError::Param(e.to_string()))
                    });
                    worker::<Uds>(slot as u32, g, c, &p)
                }),
            );
            Ok(())
        }
        fn exited(&mut self) -> Vec<(usize, bool)> {
            reap(&mut self.running, &self.exits)
        }
        fn kill(&mut self, _slot: usize) {
            unreachable!("threads cannot be killed; the harness tests this with processes")
        }
    }

    /// Thread workers that have ended: each slot and whether it ended cleanly; how each
    /// clean one left goes to `exits` (the test's `Workers::exited`, over queue or zmq).
    pub(crate) fn reap(
        running: &mut BTreeMap<usize, JoinHandle<Result<WorkerExit, WorkloadError>>>,
        exits: &Mutex<Vec<WorkerExit>>,
    ) -> Vec<(usize, bool)> {
        let done: Vec<usize> = running
            .iter()
            .filter(|(_, h)| h.is_finished())
            .map(|(s, _)| *s)
            .collect();
        done.into_iter()
            .map(|s| {
                let r = running.remove(&s).unwrap().join().unwrap();
                if let Ok(e) = &r {
                    exits.lock().unwrap().push(*e);
                }
                (s, r.is_ok())
            })
            .collect()
    }

    fn params() -> TasksParams {
        TasksParams {
            batch: 8,
            max_workers: 4,
            threads: true,
            kind: TaskKind::Io,
            wait_s: 0.01,
            hwm: 1000,
            policy: FullPolicy::default(),
            kill_worker_after: 0,
            idle_timeout_s: 10.0,
            timeout_ms: 20_000,
        }
    }

    /// Runs client and gateway (threads) with thread workers; the two measurements and
    /// how the workers ended.
    fn run(
        client_text: &str,
        server_text: &str,
        p: TasksParams,
    ) -> (Measurement, Measurement, Vec<WorkerExit>) {
        let (m, g, exits) = run_with(client_text, server_text, p, None);
        (m.unwrap(), g.unwrap(), exits)
    }

    /// [`run`], interrupting the gateway `interrupt_after` its start if given; what client
    /// and gateway returned.
    #[allow(clippy::type_complexity)]
    fn run_with(
        client_text: &str,
        server_text: &str,
        p: TasksParams,
        interrupt_after: Option<Duration>,
    ) -> (
        Result<Measurement, WorkloadError>,
        Result<Measurement, WorkloadError>,
        Vec<WorkerExit>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let slots = 2 * p.max_workers as usize;
        let link = Uds::listen(&endpoint(dir.path(), "gw")).unwrap();
        let link_ep = Uds::resolved(&link);
        let listen = |prefix: &str| {
            Acceptor::<Uds>::listen(
                &(0..slots)
                    .map(|k| endpoint(dir.path(), &format!("{prefix}{k}")))
                    .collect::<Vec<_>>(),
            )
            .unwrap()
        };
        let (mut results, mut tasks) = (listen("r"), listen("t"));
        let exits = Arc::new(Mutex::new(Vec::new()));
        let mut workers = Threads {
            to_gateway: tasks.resolved().to_vec(),
            to_client: results.resolved().to_vec(),
            p,
            running: BTreeMap::new(),
            exits: exits.clone(),
        };
        let table = parse_server("server", server_text).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let gw = std::thread::spawn(move || {
            let c = Uds::connect(&link_ep, T).unwrap();
            gateway::<Uds>(c, &mut tasks, &table, &mut workers, &p, &s2)
        });
        let lines = parse_client("client", client_text).unwrap();
        let c = Uds::accept(link, T).unwrap();
        let client = std::thread::spawn(move || client::<Uds>(c, &mut results, &lines, &p));
        if let Some(after) = interrupt_after {
            std::thread::sleep(after);
            stop.store(true, Ordering::Relaxed);
        }
        let g = gw.join().unwrap();
        let m = client.join().unwrap();
        let exits = exits.lock().unwrap().clone();
        (m, g, exits)
    }

    fn metric(m: &Measurement, k: &str) -> f64 {
        m.metric(k).unwrap()
    }

    #[test]
    fn every_batch_comes_back_once_and_every_worker_takes_its_pill() {
        let g = generate(64, 1.0, 1.0, 0);
        let (m, gw, exits) = run(&g.client, &g.server, params());
        assert_eq!(metric(&m, "results_ok"), 8.0);
        assert_eq!(metric(&m, "batches"), 8.0);
        assert_eq!(metric(&m, "response_sum"), 64.0);
        assert_eq!(metric(&m, "duplicates"), 0.0);
        assert_eq!(m.histogram.as_ref().unwrap().len(), 8);
        assert_eq!(metric(&gw, "unknown"), 0.0);
        let started = metric(&gw, "workers_started");
        assert!((1.0..=4.0).contains(&started), "{started}");
        assert_eq!(exits.len() as f64, started);
        assert!(exits.iter().all(|e| *e == WorkerExit::Pill), "{exits:?}");
    }

    #[test]
    fn unknown_lines_are_skipped_and_counted() {
        let g = generate(16, 1.0, 1.0, 0);
        // The server knows only the first 10 pairs.
        let server: String = g
            .server
            .lines()
            .take(10)
            .map(|l| format!("{l}\n"))
            .collect();
        let (m, gw, _) = run(&g.client, &server, params());
        assert_eq!(metric(&m, "results_ok"), 2.0);
        assert_eq!(metric(&m, "response_sum"), 10.0);
        assert_eq!(metric(&gw, "unknown"), 6.0);
    }

    #[test]
    fn an_idle_worker_leaves_and_is_counted_as_reaped() {
        // One worker, batches of 1 with 0.2 s each, idle timeout 0.05 s: between batches
        // the worker is never idle that long, but max_workers 4 starts extra workers that
        // find nothing left to do once the backlog is gone.
        let g = generate(6, 1.0, 1.0, 0);
        let p = TasksParams {
            batch: 1,
            wait_s: 0.2,
            idle_timeout_s: 0.05,
            ..params()
        };
        let (m, gw, exits) = run(&g.client, &g.server, p);
        assert_eq!(metric(&m, "results_ok"), 6.0);
        let reaped = metric(&gw, "workers_reaped");
        assert_eq!(
            exits.iter().filter(|e| **e == WorkerExit::Idle).count() as f64,
            reaped
        );
        assert!(reaped >= 1.0, "{gw:?}");
    }

    #[test]
    fn an_interrupted_gateway_hands_every_worker_a_poison_pill() {
        // 8 batches of 0.3 s on 4 workers; the gateway is interrupted during the first
        // round: the pills go ahead of the 4 batches waiting, each worker takes one when
        // its batch is done, and the gateway says so.
        let g = generate(64, 1.0, 1.0, 0);
        let p = TasksParams {
            wait_s: 0.3,
            timeout_ms: 3_000,
            ..params()
        };
        let (m, gw, exits) = run_with(&g.client, &g.server, p, Some(Duration::from_millis(100)));
        let e = gw.unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, WorkloadError::Stopped(_)), "{msg}");
        assert!(
            msg.contains("interrupted") && msg.contains("all left"),
            "{msg}"
        );
        assert_eq!(exits.len(), 4, "{exits:?}");
        assert!(exits.iter().all(|e| *e == WorkerExit::Pill), "{exits:?}");
        // The client gets the first round's results only, and says so at its bound.
        assert!(m.is_err());
    }

    #[test]
    fn the_bound_matches_the_originals_table() {
        let waits = vec![1.0; 512];
        assert_eq!(ideal_s(&waits, 16, 32, true), 1.0);
        assert_eq!(ideal_s(&waits, 16, 8, true), 4.0);
        assert_eq!(ideal_s(&waits, 16, 32, false), 16.0);
        assert_eq!(ideal_s(&waits, 16, 1, true), 32.0);
        // Uneven: first-free in order.
        assert_eq!(ideal_s(&[3.0, 1.0, 1.0, 1.0], 1, 2, true), 3.0);
    }
}
