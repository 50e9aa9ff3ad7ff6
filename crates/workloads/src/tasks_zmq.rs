//! The `tasks` workload's roles over real ZeroMQ (libzmq `PUSH`/`PULL` sockets,
//! [`ipcbench_transport::zmq_pattern`]), as the original ran: the replay on its own
//! transport, beside the one over our `queue` ([`crate::tasks`]).
//!
//! The sockets are the original's: the client's `PUSH` to the gateway's `PULL`, the
//! gateway's `PUSH` to every worker's `PULL`, every worker's `PUSH` to the client's
//! `PULL`. The messages, the look-up, the batches and the client's account are the same
//! code as over `queue`; what differs is what ZeroMQ does and does not do:
//! - **Round-robin, not first-free.** A `PUSH` deals messages to its peers in turn, so a
//!   worker that connects late gets nothing dealt before it, and one that connects first
//!   gets everything. The gateway therefore starts all `max_workers` workers at once and
//!   deals no batch until every one has done its handshake (libzmq's socket monitor). With
//!   equal batch times (the original's 1 s each) that is the first-free bound; with
//!   unequal ones it can be worse, and the row shows it.
//! - **No redelivery.** What a `PUSH` dealt to a worker that dies is lost. A worker that
//!   ends before its poison pill stops the job (an integrity error naming it) rather than
//!   leaving the client waiting; `kill_worker_after` and idle reaping need `queue`.
//! - **No word of a peer leaving**, except the monitor's disconnection: the gateway
//!   treats its client's as the client gone.
//! - **No addressing.** A `PUSH` cannot hand a message to a given worker, nor put it ahead
//!   of what it already dealt, so the poison pills go as the ZeroMQ guide's task workers
//!   get their kill signal: on a `PUB` control socket every worker subscribes to. A
//!   worker checks it before it takes each batch, so on Ctrl-C it leaves after the batch
//!   in hand, and the batches dealt to it and not begun stay undone. A subscriber hears
//!   only what is sent after its subscription has reached the `PUB`, so the gateway says
//!   it again every 100 ms until every worker has left.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ipcbench_transport::queue::FullPolicy;
use ipcbench_transport::zmq_pattern::Socket;
use ipcbench_transport::{RecvError, RecvTimeoutError, TrySendError};

use crate::tasks::{
    lines_frame, overdue, read_client, run_task, stopped_because, FromClient, GatewayCounts, Tally,
    TasksParams, WorkerExit, Workers, BUF, HANDSHAKE, LEAVING, PILL_GRACE,
};
use crate::tasks_data::{Answer, ClientLine, Command};
use crate::tasks_exec::Message;
use crate::{Measurement, WorkloadError};

/// How long the gateway waits for the workers to take their pill before it says it
/// again (for a subscription that had not reached it yet).
const PILL_AGAIN: Duration = Duration::from_millis(100);

/// How often an idle worker looks at its control socket.
const CONTROL_EVERY: Duration = Duration::from_millis(20);

/// How long a connection's end may take to be seen: frames still in flight when a
/// peer's disconnection is reported.
const GRACE: Duration = Duration::from_millis(200);

/// Sends `frame` under `policy`: `Ok(true)` sent, `Ok(false)` given up (full for the
/// policy's whole patience).
fn push(s: &mut Socket, frame: &[u8], policy: FullPolicy) -> Result<bool, WorkloadError> {
    let (mut waits_left, step) = match policy {
        FullPolicy::Block { timeout } => (1u32, timeout),
        FullPolicy::Retry { interval, retries } => (retries, interval),
    };
    loop {
        match s.try_send(frame) {
            Ok(()) => return Ok(true),
            Err(TrySendError::Full) => {}
            Err(TrySendError::Send(e)) => {
                return Err(WorkloadError::Integrity(format!("zmq send: {e}")))
            }
        }
        if waits_left == 0 {
            return Ok(false);
        }
        waits_left -= 1;
        match policy {
            // Room is taken as soon as it is there.
            FullPolicy::Block { .. } => {
                let end = Instant::now() + step;
                while Instant::now() < end && !s.wait_writable(end - Instant::now()) {}
                if s.try_send(frame).is_ok() {
                    return Ok(true);
                }
                return Ok(false);
            }
            // The whole interval, then the next attempt (as the original, and `queue`).
            FullPolicy::Retry { .. } => std::thread::sleep(step),
        }
    }
}

fn recv_error(what: &str, e: RecvError) -> WorkloadError {
    match e {
        RecvError::Truncated { needed } => {
            WorkloadError::Integrity(format!("{what} of {needed} bytes (at most {BUF})"))
        }
        other => WorkloadError::Integrity(format!("{what}: {other}")),
    }
}

/// The client: pushes every batch over `to_gateway` (bound, the gateway connected),
/// pulls the results on `results` (bound, every worker connects), and tells the gateway
/// when the job is done.
pub fn client(
    to_gateway: &mut Socket,
    results: &mut Socket,
    lines: &[ClientLine],
    p: &TasksParams,
) -> Result<Measurement, WorkloadError> {
    let batches: Vec<&[ClientLine]> = lines.chunks(p.batch.max(1) as usize).collect();
    let start = Instant::now();
    let mut tally = Tally::new(start);
    let deadline = p.deadline(start);
    let mut dropped = 0u64;
    for (id, b) in batches.iter().enumerate() {
        let at = Instant::now();
        if push(to_gateway, &lines_frame(id, b), p.policy)? {
            tally.sent(id as u32, at);
        } else {
            // Given up by the full-queue policy: counted (`dropped`), never waited for.
            dropped += 1;
        }
    }
    let mut buf = vec![0u8; BUF];
    while !tally.complete() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(tally.missing(p.timeout_ms));
        }
        match results.recv_timeout(&mut buf, left.min(Duration::from_millis(100))) {
            Ok(n) => tally.take(&buf[..n])?,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Recv(e)) => return Err(recv_error("a result", e)),
        }
    }
    // Job complete: the gateway sends the poison pills.
    let pill = FullPolicy::Block {
        timeout: Duration::from_secs(5),
    };
    let _ = push(to_gateway, &Message::JobDone.encode(), pill)?;
    Ok(tally.measurement(lines.len(), batches.len(), dropped))
}

/// The gateway: pulls batches on `from_client` (connected to the client), starts every
/// worker through `workers` at once, waits until all are connected to `to_workers`
/// (bound), then deals the batches out and, when the client says the job is done (or on
/// an interrupt), publishes the poison pill on `control` (bound) until all have left.
pub fn gateway(
    from_client: &mut Socket,
    to_workers: &mut Socket,
    control: &mut Socket,
    table: &HashMap<(Ipv4Addr, Command), Answer>,
    workers: &mut dyn Workers,
    p: &TasksParams,
    interrupt: &AtomicBool,
) -> Result<Measurement, WorkloadError> {
    let mut c = GatewayCounts::default();
    let n = (p.max_workers.max(1) as usize).min(workers.slots());
    let mut live: BTreeSet<usize> = BTreeSet::new();
    for slot in 0..n {
        workers.start(slot)?;
        live.insert(slot);
        c.started += 1;
    }
    c.peak = c.started;
    let start = Instant::now();
    let mut deadline = p.deadline(start);
    // Why the gateway is shutting down before the job is done.
    let mut stopping: Option<String> = None;
    // Every worker's handshake before the first batch is dealt (see the module's
    // documentation); the batches wait in this socket's queue meanwhile.
    let connected_by = Instant::now() + HANDSHAKE + Duration::from_millis(100) * n as u32;
    while to_workers.peers() < n {
        if let Some((slot, _)) = workers.exited().first() {
            live.remove(slot);
            c.failed += 1;
            stopping = Some(format!("worker {slot} ended before it connected"));
            break;
        }
        if interrupt.load(Ordering::Relaxed) {
            stopping = Some("interrupted".into());
            break;
        }
        if Instant::now() >= connected_by {
            stopping = Some(format!(
                "{} of {n} workers connected within {} ms",
                to_workers.peers(),
                (connected_by - start).as_millis()
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut job_done = false;
    let mut pills_at: Option<Instant> = None;
    let mut pilled = 0usize;
    let mut client_gone_at: Option<Instant> = None;
    let mut had_client = false;
    let mut buf = vec![0u8; BUF];
    loop {
        if stopping.is_none() {
            let mut wait = Duration::from_millis(1);
            loop {
                match from_client.recv_timeout(&mut buf, wait) {
                    Ok(n) => match read_client(&buf[..n], table, p, &mut c.unknown)? {
                        FromClient::Task { id, frame } => {
                            if !push(to_workers, &frame, p.policy)? {
                                return Err(WorkloadError::Integrity(format!(
                                    "push to the workers: batch {id} given up, every worker's queue full"
                                )));
                            }
                        }
                        FromClient::JobDone => {
                            job_done = true;
                            deadline = Instant::now() + LEAVING;
                        }
                    },
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Recv(e)) => return Err(recv_error("a batch", e)),
                }
                wait = Duration::ZERO;
            }
        }
        // The client's disconnection, once GRACE has passed with nothing more from it.
        let peers = from_client.peers();
        had_client |= peers > 0;
        if had_client && peers == 0 && !job_done && stopping.is_none() {
            let at = *client_gone_at.get_or_insert_with(Instant::now);
            if at.elapsed() >= GRACE {
                stopping = Some("the client left before the job was done".into());
            }
        }
        if stopping.is_none() && !job_done && interrupt.load(Ordering::Relaxed) {
            stopping = Some("interrupted".into());
        }
        for (slot, clean) in workers.exited() {
            live.remove(&slot);
            if pills_at.is_none() {
                c.failed += 1;
                stopping.get_or_insert_with(|| {
                    format!(
                        "worker {slot} ended ({}) before its poison pill: what ZeroMQ's PUSH \
                         dealt it is lost (no redelivery; use transport = \"queue\" for that)",
                        if clean { "exit 0" } else { "failed" }
                    )
                });
            } else if !clean {
                c.failed += 1;
            }
        }
        if stopping.is_some() && !job_done {
            // No more batches are dealt; the pills follow.
            job_done = true;
            deadline = Instant::now() + PILL_GRACE;
        }
        // The pill to every worker at once, again every PILL_AGAIN while any is there.
        if job_done && !live.is_empty() && pills_at.map_or(true, |t| t.elapsed() >= PILL_AGAIN) {
            if pills_at.is_none() {
                pilled = live.len();
            }
            if let Err(e) = control.try_send(&Message::Die.encode()) {
                return Err(WorkloadError::Integrity(format!(
                    "publishing the pill: {e}"
                )));
            }
            pills_at = Some(Instant::now());
        }
        if job_done && live.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let what = overdue(&stopping, interrupt, job_done, pilled, live.len(), p);
            for s in &live {
                workers.kill(*s);
            }
            return Err(stop_error(&stopping, interrupt, what));
        }
        if job_done {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    if let Some(why) = stopped_because(&stopping, interrupt) {
        let what = format!("{why}: poison pills sent to the {pilled} workers running; all left");
        return Err(stop_error(&stopping, interrupt, what));
    }
    Ok(Measurement {
        histogram: None,
        count: 0,
        bytes: 0,
        duration: start.elapsed(),
        metrics: c.metrics(),
    })
}

/// A stop for an interrupt or a client gone is `Stopped`; one for a worker lost or
/// missing is an integrity error.
fn stop_error(stopping: &Option<String>, interrupt: &AtomicBool, what: String) -> WorkloadError {
    let outside = interrupt.load(Ordering::Relaxed)
        || stopping
            .as_deref()
            .is_some_and(|w| w.starts_with("the client left"));
    if outside {
        WorkloadError::Stopped(what)
    } else {
        WorkloadError::Integrity(what)
    }
}

/// A worker: before each batch (and while it waits for room for a result), looks for
/// the poison pill on `control` (connected to the gateway's `PUB`) and leaves if it is
/// there; takes the batches dealt to it on
/// `from_gateway` (connected to the gateway), runs each and pushes its result on
/// `to_client` (connected to the client). No batch and no pill within the job's bound is
/// an error.
pub fn worker(
    index: u32,
    from_gateway: &mut Socket,
    control: &mut Socket,
    to_client: &mut Socket,
    p: &TasksParams,
) -> Result<WorkerExit, WorkloadError> {
    let mut buf = vec![0u8; BUF];
    let bound = Duration::from_millis(p.timeout_ms);
    let mut idle_since = Instant::now();
    loop {
        if pill(control, &mut buf)? {
            // Nothing still queued is wanted: after the job (every result taken) or on
            // an interrupt (the client gone), and a socket must not hold the worker's
            // exit for LINGER.
            let _ = to_client.abandon_unsent();
            return Ok(WorkerExit::Pill);
        }
        let n = match from_gateway.recv_timeout(&mut buf, CONTROL_EVERY) {
            Ok(n) => n,
            Err(RecvTimeoutError::Timeout) if idle_since.elapsed() < bound => continue,
            Err(RecvTimeoutError::Timeout) => {
                return Err(WorkloadError::Integrity(format!(
                    "no batch and no poison pill within {} ms",
                    p.timeout_ms
                )))
            }
            Err(RecvTimeoutError::Recv(e)) => return Err(recv_error("a batch", e)),
        };
        let (id, work) = match Message::decode(&buf[..n])? {
            Message::Task { id, work } => (id, work),
            other => return Err(WorkloadError::Integrity(format!("a worker got {other:?}"))),
        };
        let done = run_task(id, index, &work, p);
        // Room for the result, looking for the pill meanwhile: a client that is gone
        // (interrupted) takes nothing more.
        let until = Instant::now() + bound;
        loop {
            match to_client.try_send(&done) {
                Ok(()) => break,
                Err(TrySendError::Full) => {}
                Err(TrySendError::Send(e)) => {
                    return Err(WorkloadError::Integrity(format!("zmq send: {e}")))
                }
            }
            if pill(control, &mut buf)? {
                // The job is over without this result (see above).
                let _ = to_client.abandon_unsent();
                return Ok(WorkerExit::Pill);
            }
            if Instant::now() >= until {
                return Err(WorkloadError::Integrity(
                    "the client did not take a result in time".into(),
                ));
            }
            to_client.wait_writable(CONTROL_EVERY);
        }
        idle_since = Instant::now();
    }
}

/// Whether the poison pill is on `control` now.
fn pill(control: &mut Socket, buf: &mut [u8]) -> Result<bool, WorkloadError> {
    match control.recv_timeout(buf, Duration::ZERO) {
        Ok(n) => match Message::decode(&buf[..n])? {
            Message::Die => Ok(true),
            other => Err(WorkloadError::Integrity(format!(
                "a worker got {other:?} on the control socket"
            ))),
        },
        Err(RecvTimeoutError::Timeout) => Ok(false),
        Err(RecvTimeoutError::Recv(e)) => Err(recv_error("a control message", e)),
    }
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test, with its message.
    #![allow(clippy::unwrap_used)]
    use super::*;

    use crate::tasks_data::{generate, parse_client, parse_server};
    use crate::tasks_exec::TaskKind;
    use ipcbench_transport::zmq_pattern::{Context, Kind};
    use ipcbench_transport::{Endpoint, EndpointOptions, TransportKind, ZmqPattern};
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;

    fn endpoint(dir: &std::path::Path, name: &str) -> Endpoint {
        let sub = dir.join(name);
        std::fs::create_dir(&sub).unwrap();
        let opts = EndpointOptions {
            over: TransportKind::Uds,
            zmq_pattern: ZmqPattern::PushPull,
            max_frame: 1 << 16,
            hwm: 1000,
            ..Default::default()
        };
        Endpoint::prepare(TransportKind::Zmq, &sub, &opts).unwrap()
    }

    /// Workers as threads, each with its own context (as a process would have); slot 0
    /// ends at once (without connecting) when `fail_first` is set.
    struct Threads {
        tasks: Endpoint,
        control: Endpoint,
        results: Endpoint,
        p: TasksParams,
        fail_first: bool,
        running: BTreeMap<usize, JoinHandle<Result<WorkerExit, WorkloadError>>>,
        exits: Arc<Mutex<Vec<WorkerExit>>>,
    }

    impl Workers for Threads {
        fn slots(&self) -> usize {
            64
        }
        fn start(&mut self, slot: usize) -> Result<(), WorkloadError> {
            let (t, c, r, p) = (
                self.tasks.clone(),
                self.control.clone(),
                self.results.clone(),
                self.p,
            );
            let fail = self.fail_first && slot == 0;
            self.running.insert(
                slot,
                std::thread::spawn(move || {
                    if fail {
                        return Err(WorkloadError::Integrity("told to fail".into()));
                    }
                    let ctx = Context::new();
                    let mut from = Socket::connect(&ctx, Kind::Pull, &t).unwrap();
                    let mut control = Socket::connect(&ctx, Kind::Sub, &c).unwrap();
                    let mut to = Socket::connect(&ctx, Kind::Push, &r).unwrap();
                    worker(slot as u32, &mut from, &mut control, &mut to, &p)
                }),
            );
            Ok(())
        }
        fn exited(&mut self) -> Vec<(usize, bool)> {
            crate::tasks::tests::reap(&mut self.running, &self.exits)
        }
        fn kill(&mut self, _slot: usize) {}
    }

    fn params() -> TasksParams {
        TasksParams {
            batch: 8,
            max_workers: 4,
            threads: true,
            kind: TaskKind::Io,
            wait_s: 0.05,
            hwm: 1000,
            policy: FullPolicy::default(),
            kill_worker_after: 0,
            idle_timeout_s: 10.0,
            timeout_ms: 10_000,
        }
    }

    type Outcome = (
        Result<Measurement, WorkloadError>,
        Result<Measurement, WorkloadError>,
        Vec<WorkerExit>,
    );

    fn run(client_text: &str, server_text: &str, p: TasksParams, fail_first: bool) -> Outcome {
        run_with(client_text, server_text, p, fail_first, None)
    }

    /// [`run`], interrupting the gateway `interrupt_after` its start if given.
    fn run_with(
        client_text: &str,
        server_text: &str,
        p: TasksParams,
        fail_first: bool,
        interrupt_after: Option<Duration>,
    ) -> Outcome {
        let dir = tempfile::tempdir().unwrap();
        let client_ctx = Context::new();
        let (mut link, link_ep) =
            Socket::bind(&client_ctx, Kind::Push, &endpoint(dir.path(), "link")).unwrap();
        let (mut results, results_ep) =
            Socket::bind(&client_ctx, Kind::Pull, &endpoint(dir.path(), "r")).unwrap();
        let gateway_ctx = Context::new();
        let (mut tasks, tasks_ep) =
            Socket::bind(&gateway_ctx, Kind::Push, &endpoint(dir.path(), "t")).unwrap();
        let (mut control, control_ep) =
            Socket::bind(&gateway_ctx, Kind::Pub, &endpoint(dir.path(), "c")).unwrap();
        let exits = Arc::new(Mutex::new(Vec::new()));
        let mut workers = Threads {
            tasks: tasks_ep,
            control: control_ep,
            results: results_ep,
            p,
            fail_first,
            running: BTreeMap::new(),
            exits: exits.clone(),
        };
        let table = parse_server("server", server_text).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let gw = std::thread::spawn(move || {
            let stop = s2;
            let mut from = Socket::connect(&gateway_ctx, Kind::Pull, &link_ep).unwrap();
            let r = gateway(
                &mut from,
                &mut tasks,
                &mut control,
                &table,
                &mut workers,
                &p,
                &stop,
            );
            // Whatever happened, no worker outlives the test.
            while !workers.running.is_empty() {
                workers.exited();
                std::thread::sleep(Duration::from_millis(5));
            }
            r
        });
        let lines = parse_client("client", client_text).unwrap();
        link.wait_peers(1, Duration::from_secs(10)).unwrap();
        if let Some(after) = interrupt_after {
            let stop = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(after);
                stop.store(true, Ordering::Relaxed);
            });
        }
        let m = client(&mut link, &mut results, &lines, &p);
        let g = gw.join().unwrap();
        let exits = exits.lock().unwrap().clone();
        (m, g, exits)
    }

    #[test]
    fn every_batch_comes_back_once_dealt_in_turn_and_every_worker_takes_its_pill() {
        let g = generate(64, 1.0, 1.0, 0);
        let (m, gw, exits) = run(&g.client, &g.server, params(), false);
        let (m, gw) = (m.unwrap(), gw.unwrap());
        assert_eq!(m.metric("results_ok"), Some(8.0));
        assert_eq!(m.metric("response_sum"), Some(64.0));
        assert_eq!(m.metric("duplicates"), Some(0.0));
        // 8 batches dealt in turn to 4 workers all connected first: two each.
        assert_eq!(m.metric("workers_seen"), Some(4.0));
        assert_eq!(gw.metric("workers_started"), Some(4.0));
        assert_eq!(gw.metric("workers_failed"), Some(0.0));
        assert_eq!(exits.len(), 4);
        assert!(exits.iter().all(|e| *e == WorkerExit::Pill), "{exits:?}");
    }

    #[test]
    fn unknown_lines_are_skipped_and_counted() {
        let g = generate(16, 1.0, 1.0, 0);
        let server: String = g
            .server
            .lines()
            .take(10)
            .map(|l| format!("{l}\n"))
            .collect();
        let (m, gw, _) = run(&g.client, &server, params(), false);
        let (m, gw) = (m.unwrap(), gw.unwrap());
        assert_eq!(m.metric("results_ok"), Some(2.0));
        assert_eq!(m.metric("response_sum"), Some(10.0));
        assert_eq!(gw.metric("unknown"), Some(6.0));
    }

    #[test]
    fn an_interrupted_gateway_gets_every_worker_to_leave_after_its_batch_in_hand() {
        // 64 batches of 0.2 s dealt to 4 workers (16 each), interrupted in the first
        // round: each worker leaves when its batch in hand is done, its other 15 undone.
        let g = generate(512, 1.0, 1.0, 0);
        let p = TasksParams {
            wait_s: 0.2,
            timeout_ms: 5_000,
            ..params()
        };
        let (m, gw, exits) = run_with(
            &g.client,
            &g.server,
            p,
            false,
            Some(Duration::from_millis(100)),
        );
        let e = gw.unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, WorkloadError::Stopped(_)), "{msg}");
        assert!(
            msg.contains("interrupted") && msg.contains("all left"),
            "{msg}"
        );
        assert_eq!(exits.len(), 4, "{exits:?}");
        assert!(exits.iter().all(|e| *e == WorkerExit::Pill), "{exits:?}");
        assert!(m.is_err());
    }

    #[test]
    fn a_worker_lost_before_its_pill_stops_the_job_and_says_so() {
        let g = generate(64, 1.0, 1.0, 0);
        let p = TasksParams {
            timeout_ms: 4_000,
            ..params()
        };
        let (m, gw, _) = run(&g.client, &g.server, p, true);
        let e = gw.unwrap_err();
        assert!(matches!(e, WorkloadError::Integrity(_)), "{e}");
        assert!(e.to_string().contains("worker 0 ended"), "{e}");
        // The client, never told, gives up at its bound.
        assert!(m.is_err());
    }
}
