//! The hidden role mode (`harness __role`): one process per role, pinned to its core. It
//! reads its job from stdin, sets up, reports `ready` and `connected`, waits for `go`,
//! runs, reports `done` with its measurement and exits. It dies with its parent
//! (`PR_SET_PDEATHSIG`), so no role outlives the harness.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use ipcbench_transport::segment::Segment;
use ipcbench_transport::{
    baseline, Endpoint, Pipe, Queue, Shm, StreamRx, StreamTx, Tcp, Transport, TransportKind, Uds,
};
use ipcbench_workloads::{
    buffer, latency, new_histogram, pingpong, throughput, vectors, Measurement,
};

use crate::wire::{RoleEvent, RoleJob, RoleReport, RoleTask, GO};

/// Writes one event line to the harness (or, for a worker, to the gateway's /dev/null).
pub(crate) fn emit(event: &RoleEvent) -> anyhow::Result<()> {
    let line = serde_json::to_string(event)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|_| out.flush())
        .context("writing to the harness")
}

/// Reports `ready` for a role that listens on nothing (it connects, or needs no transport).
fn emit_ready() -> anyhow::Result<()> {
    emit(&RoleEvent::Ready {
        endpoint: None,
        more: vec![],
    })
}

/// Runs the role mode; the process's exit code.
pub fn main() -> ExitCode {
    // If the harness dies, so do we.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let mut stdin = std::io::stdin().lock();
    let result = (|| -> anyhow::Result<RoleReport> {
        let mut line = String::new();
        stdin.read_line(&mut line).context("reading the job")?;
        let job: RoleJob = serde_json::from_str(&line).context("parsing the job")?;
        execute(&job, &mut stdin)
    })();
    ExitCode::from(finish(result))
}

/// Runs `job` in this process (a role process, or a worker the gateway's fork server
/// forked): checks that the parent is the one the job names, pins, runs the role.
pub(crate) fn execute(job: &RoleJob, stdin: &mut impl BufRead) -> anyhow::Result<RoleReport> {
    if nix::unistd::getppid().as_raw() != job.parent_pid {
        bail!("the harness (pid {}) is gone", job.parent_pid);
    }
    if let Some(core) = job.core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
            bail!("cannot pin role {} to core {core}", job.role);
        }
    }
    run(job, stdin)
}

/// Reports how a role ended; the exit code (0 done, 1 failed, 3 could not report).
pub(crate) fn finish(result: anyhow::Result<RoleReport>) -> u8 {
    match result {
        Ok(report) => match emit(&RoleEvent::Done(report)) {
            Ok(()) => 0,
            Err(_) => 3,
        },
        Err(e) => {
            let message = format!("{e:#}");
            eprintln!("role failed: {message}");
            let _ = emit(&RoleEvent::Failed { message });
            1
        }
    }
}

/// Blocks until the harness says `go` (the start barrier).
pub(crate) fn wait_for_go(stdin: &mut impl BufRead) -> anyhow::Result<()> {
    let mut line = String::new();
    stdin.read_line(&mut line).context("waiting for go")?;
    if line.trim() != GO {
        bail!("expected `{GO}` from the harness, got {:?}", line.trim());
    }
    Ok(())
}

/// Evaluates `$body` with the type `$t` standing for the transport of the endpoint
/// `$endpoint` (a `queue` endpoint: the queue over its transport): the one place a
/// configured kind turns into code generic over [`Transport`].
macro_rules! with_transport {
    ($endpoint:expr, $t:ident => $body:expr) => {{
        let ep: &Endpoint = $endpoint;
        match (ep.kind(), ep.base_kind()) {
            (TransportKind::Pipe, _) => {
                type $t = Pipe;
                $body
            }
            (TransportKind::Uds, _) => {
                type $t = Uds;
                $body
            }
            (TransportKind::Tcp, _) => {
                type $t = Tcp;
                $body
            }
            (TransportKind::Shm, _) => {
                type $t = Shm;
                $body
            }
            (TransportKind::Queue, TransportKind::Uds) => {
                type $t = Queue<Uds>;
                $body
            }
            (TransportKind::Queue, TransportKind::Tcp) => {
                type $t = Queue<Tcp>;
                $body
            }
            (TransportKind::Queue, TransportKind::Shm) => {
                type $t = Queue<Shm>;
                $body
            }
            (TransportKind::Queue, other) => bail!("queue does not run over {other}"),
        }
    }};
}

fn run(job: &RoleJob, stdin: &mut impl BufRead) -> anyhow::Result<RoleReport> {
    let setup = Duration::from_millis(job.setup_timeout_ms);
    match &job.task {
        RoleTask::Floor {
            segment,
            ping,
            iterations,
            same_core,
            quick,
        } => {
            let seg = Segment::open(segment, FLOOR_SEGMENT_BYTES)?;
            emit_ready()?;
            emit(&RoleEvent::Connected)?;
            wait_for_go(stdin)?;
            let m = floor(&seg, *ping, *iterations, *same_core, *quick)?;
            RoleReport::from_measurement(&m)
        }
        RoleTask::Pingpong {
            endpoint,
            ping,
            canvas,
            params,
            ..
        } => {
            let n = params.pixels()?;
            let seg = Segment::open_with(canvas, pingpong::canvas_bytes(n), true)?;
            let canvas = pingpong::Canvas::attach(seg.words32(), params)?;
            with_transport!(endpoint, T => connected::<T>(
                job,
                endpoint,
                setup,
                stdin,
                |tx, rx| pingpong_agent(tx, rx, &canvas, params, *ping)
            ))
        }
        RoleTask::Buffer {
            endpoints,
            worker,
            pool,
            params,
            timeout_ms,
        } => {
            let pool = ipcbench_transport::pool::Pool::open(pool)?;
            let bound = Duration::from_millis(*timeout_ms);
            match endpoints.first() {
                None => buffer_pool_role(&pool, *worker, params, bound, stdin),
                Some(ep) => with_transport!(ep, T => buffer_copy_role::<T>(
                    &pool, endpoints, *worker, params, setup, bound, stdin
                )),
            }
        }
        RoleTask::Vectors {
            endpoint,
            producer,
            params,
            out_dir,
            ..
        } => with_transport!(endpoint, T => connected::<T>(
            job,
            endpoint,
            setup,
            stdin,
            |tx, rx| vectors_role(tx, rx, *producer, params, out_dir, &job.run_id)
        )),
        RoleTask::Latency { endpoint, bare, .. } | RoleTask::Throughput { endpoint, bare, .. } => {
            match (endpoint.kind(), *bare) {
                (TransportKind::Shm, false) if in_place(&job.task) => {
                    in_place_role(job, endpoint, setup, stdin)
                }
                (_, false) => with_transport!(endpoint, T => framed_role::<T>(
                    job, endpoint, setup, stdin
                )),
                (TransportKind::Pipe, true) => bare_role::<Pipe>(job, endpoint, setup, stdin),
                (TransportKind::Uds, true) => bare_role::<Uds>(job, endpoint, setup, stdin),
                (TransportKind::Tcp, true) => bare_role::<Tcp>(job, endpoint, setup, stdin),
                (kind @ (TransportKind::Shm | TransportKind::Queue), true) => {
                    bail!("{kind} has no bare baseline")
                }
            }
        }
        RoleTask::Tasks { link, .. } => {
            with_transport!(link, X => crate::tasks::role::<X>(job, setup, stdin))
        }
    }
}

/// One pingpong agent; ping also measures the pick alone afterwards (on a private
/// canvas of the same size, at most 2^20 pixels), for the floor comparison.
fn pingpong_agent(
    tx: &mut impl ipcbench_transport::Tx,
    rx: &mut impl ipcbench_transport::Rx,
    canvas: &pingpong::Canvas<'_>,
    params: &pingpong::PingpongParams,
    ping: bool,
) -> anyhow::Result<Measurement> {
    let mut m = pingpong::agent(tx, rx, canvas, params, ping)?;
    if ping {
        let pick = pingpong::pick_cost(params, 1 << 20)?;
        m.metrics.push(("pick_ns".into(), pick));
    }
    Ok(m)
}

/// A vectors role; the consumer writes its batches and timeline into `out_dir`.
fn vectors_role(
    tx: &mut impl ipcbench_transport::Tx,
    rx: &mut impl ipcbench_transport::Rx,
    producer: bool,
    params: &vectors::VectorsParams,
    out_dir: &std::path::Path,
    run_id: &str,
) -> anyhow::Result<Measurement> {
    if producer {
        return Ok(vectors::producer(tx, rx, params)?);
    }
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let open = |kind: &str| -> anyhow::Result<std::io::BufWriter<std::fs::File>> {
        let path = out_dir.join(format!("{run_id}.{kind}.csv"));
        let f =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(std::io::BufWriter::with_capacity(1 << 16, f))
    };
    let mut out = vectors::Outputs {
        batches: open("batches")?,
        timeline: open("timeline")?,
    };
    Ok(vectors::consumer(tx, rx, params, &mut out)?)
}

/// A buffer role over the zero-copy pool.
fn buffer_pool_role(
    pool: &ipcbench_transport::pool::Pool,
    worker: Option<u32>,
    params: &buffer::BufferParams,
    bound: Duration,
    stdin: &mut impl BufRead,
) -> anyhow::Result<RoleReport> {
    use ipcbench_transport::pool::PoolRole;
    pool.register(worker.map_or(PoolRole::Acquirer, PoolRole::Worker))?;
    // The acquirer draws its blocks before it says it is ready: setup, off the clock.
    let source = worker
        .is_none()
        .then(|| buffer::Acquisition::new(params))
        .transpose()?;
    emit_ready()?;
    emit(&RoleEvent::Connected)?;
    wait_for_go(stdin)?;
    let deadline = Instant::now() + bound;
    let m = match &source {
        Some(source) => buffer::acquirer(pool, source, deadline)?,
        None => buffer::worker(pool, params, deadline)?,
    };
    RoleReport::from_measurement(&m)
}

/// A buffer role in copy mode: the acquirer listens on one endpoint per worker and sends
/// chunks over them; a worker connects to its own. The pool holds only the result.
fn buffer_copy_role<T: Transport>(
    pool: &ipcbench_transport::pool::Pool,
    endpoints: &[Endpoint],
    worker: Option<u32>,
    params: &buffer::BufferParams,
    setup: Duration,
    bound: Duration,
    stdin: &mut impl BufRead,
) -> anyhow::Result<RoleReport> {
    use ipcbench_transport::pool::PoolRole;
    pool.register(worker.map_or(PoolRole::Acquirer, PoolRole::Worker))?;
    let m = match worker {
        None => {
            // Drawn before ready, as in the pool role: setup, off the clock.
            let source = buffer::Acquisition::new(params)?;
            let listeners = endpoints
                .iter()
                .map(T::listen)
                .collect::<Result<Vec<_>, _>>()?;
            let mut resolved = listeners.iter().map(T::resolved);
            emit(&RoleEvent::Ready {
                endpoint: resolved.next(),
                more: resolved.collect(),
            })?;
            let mut txs = Vec::with_capacity(listeners.len());
            for l in listeners {
                txs.push(T::accept(l, setup)?.0);
            }
            emit(&RoleEvent::Connected)?;
            wait_for_go(stdin)?;
            buffer::copy_acquirer(&mut txs, &source)?
        }
        Some(w) => {
            let ep = endpoints
                .first()
                .ok_or_else(|| anyhow!("worker {w} has no endpoint"))?;
            emit_ready()?;
            let (_tx, mut rx) = T::connect(ep, setup)?;
            emit(&RoleEvent::Connected)?;
            wait_for_go(stdin)?;
            buffer::copy_worker(&mut rx, pool, params, Instant::now() + bound)?
        }
    };
    RoleReport::from_measurement(&m)
}

/// Whether the task asks for the zero-copy (loan) variant.
fn in_place(task: &RoleTask) -> bool {
    matches!(task, RoleTask::Latency { params, .. } if params.zero_copy)
}

fn connect<T: Transport>(
    endpoint: &Endpoint,
    listen: bool,
    setup: Duration,
) -> anyhow::Result<(T::Tx, T::Rx)> {
    let halves = if listen {
        let listener = T::listen(endpoint)?;
        emit(&RoleEvent::Ready {
            endpoint: Some(T::resolved(&listener)),
            more: vec![],
        })?;
        T::accept(listener, setup)?
    } else {
        emit_ready()?;
        T::connect(endpoint, setup)?
    };
    emit(&RoleEvent::Connected)?;
    Ok(halves)
}

/// Connects a workload role, waits for the start barrier, then runs `work` on the halves.
fn connected<T: Transport>(
    job: &RoleJob,
    endpoint: &Endpoint,
    setup: Duration,
    stdin: &mut impl BufRead,
    work: impl FnOnce(&mut T::Tx, &mut T::Rx) -> anyhow::Result<Measurement>,
) -> anyhow::Result<RoleReport> {
    let listen = match &job.task {
        RoleTask::Latency { listen, .. }
        | RoleTask::Throughput { listen, .. }
        | RoleTask::Pingpong { listen, .. }
        | RoleTask::Vectors { listen, .. } => *listen,
        _ => bail!("not a one-peer transport task"),
    };
    let (mut tx, mut rx) = connect::<T>(endpoint, listen, setup)?;
    wait_for_go(stdin)?;
    RoleReport::from_measurement(&work(&mut tx, &mut rx)?)
}

/// A framed workload role over any transport.
fn framed_role<T: Transport>(
    job: &RoleJob,
    endpoint: &Endpoint,
    setup: Duration,
    stdin: &mut impl BufRead,
) -> anyhow::Result<RoleReport> {
    connected::<T>(job, endpoint, setup, stdin, |tx, rx| {
        Ok(match &job.task {
            RoleTask::Latency {
                client: true,
                params,
                ..
            } => latency::client(tx, rx, params)?,
            RoleTask::Latency { params, .. } => latency::echo(tx, rx, params)?,
            RoleTask::Throughput {
                sender: true,
                params,
                ..
            } => throughput::sender(tx, rx, params)?,
            RoleTask::Throughput { params, .. } => throughput::receiver(tx, rx, params)?,
            _ => bail!("not a latency or throughput task"),
        })
    })
}

/// A latency role over shm with `zero_copy`: the message written and read in place.
fn in_place_role(
    job: &RoleJob,
    endpoint: &Endpoint,
    setup: Duration,
    stdin: &mut impl BufRead,
) -> anyhow::Result<RoleReport> {
    connected::<Shm>(job, endpoint, setup, stdin, |tx, rx| {
        Ok(match &job.task {
            RoleTask::Latency {
                client: true,
                params,
                ..
            } => latency::client_in_place(tx, rx, params)?,
            RoleTask::Latency { params, .. } => latency::echo_in_place(tx, rx, params)?,
            _ => bail!("zero_copy is a latency option"),
        })
    })
}

/// A bare-baseline role: the stream transports' system calls with nothing of ours.
fn bare_role<T>(
    job: &RoleJob,
    endpoint: &Endpoint,
    setup: Duration,
    stdin: &mut impl BufRead,
) -> anyhow::Result<RoleReport>
where
    T: Transport<Tx = StreamTx, Rx = StreamRx>,
{
    connected::<T>(job, endpoint, setup, stdin, |tx, rx| match &job.task {
        RoleTask::Latency { client, params, .. } => bare_latency(tx, rx, params, *client),
        RoleTask::Throughput { sender, params, .. } => bare_throughput(tx, rx, params, *sender),
        _ => bail!("not a latency or throughput task"),
    })
}

fn bare_latency(
    tx: &StreamTx,
    rx: &StreamRx,
    p: &latency::LatencyParams,
    client: bool,
) -> anyhow::Result<Measurement> {
    let mut msg = vec![0u8; p.msg_bytes];
    if client {
        baseline::roundtrips(tx, rx, &mut msg, p.warmup, |_| {})?;
        let mut h = new_histogram();
        let duration =
            baseline::roundtrips(tx, rx, &mut msg, p.count, |ns| h.saturating_record(ns))?;
        Ok(Measurement {
            histogram: Some(h),
            count: p.count,
            bytes: p.count * p.msg_bytes as u64,
            duration,
            metrics: vec![],
        })
    } else {
        baseline::echo(tx, rx, &mut msg, p.warmup + p.count)?;
        Ok(Measurement {
            count: p.count,
            ..Default::default()
        })
    }
}

fn bare_throughput(
    tx: &StreamTx,
    rx: &StreamRx,
    p: &throughput::ThroughputParams,
    sender: bool,
) -> anyhow::Result<Measurement> {
    let mut msg = vec![0u8; p.msg_bytes];
    ipcbench_workloads::fill_pattern(&mut msg, 1);
    if sender {
        baseline::stream_send(tx, rx, &msg, p.warmup)?;
        let duration = baseline::stream_send(tx, rx, &msg, p.count)?;
        Ok(Measurement {
            count: p.count,
            bytes: p.count * p.msg_bytes as u64,
            duration,
            ..Default::default()
        })
    } else {
        baseline::stream_recv(tx, rx, &mut msg, p.warmup)?;
        baseline::stream_recv(tx, rx, &mut msg, p.count)?;
        Ok(Measurement {
            count: p.count,
            ..Default::default()
        })
    }
}

// ---- the hardware floor ---------------------------------------------------------------

/// Size of the calibration segment: a page of control lines, then the stream's slots.
pub const FLOOR_SEGMENT_BYTES: usize = STREAM_SLOTS_AT * 8 + STREAM_SLOTS as usize * 64;
/// Round trips timed together, so the clock's own cost is spread thin.
const FLOOR_BATCH: u64 = 1000;
const STOP: u64 = u64::MAX;

/// Spins until `word` holds `want` (or STOP), yielding the core after every
/// `yield_every` misses: 1 when both roles share a core (the floor is then a context
/// switch), a few thousand otherwise (only to notice a dead peer).
fn await_value(
    word: &AtomicU64,
    want: impl Fn(u64) -> bool,
    deadline: Instant,
    yield_every: u32,
) -> anyhow::Result<u64> {
    let mut spins = 0u32;
    loop {
        // SYNC: Acquire pairs with the peer's Release store of the value we wait for.
        let v = word.load(Ordering::Acquire);
        if want(v) || v == STOP {
            return Ok(v);
        }
        spins = spins.wrapping_add(1);
        if spins % yield_every == 0 {
            if spins % 4096 == 0 && Instant::now() > deadline {
                bail!("the floor peer stopped answering");
            }
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// How long the stall loop runs.
const STALL_SPAN: Duration = Duration::from_secs(1);

/// What a clock-reading loop lost.
struct Stalls {
    span: Duration,
    lost: Duration,
    over_10us: u64,
    over_1ms: u64,
}

/// A loop that only reads the clock for `span`: every gap over 1 µs is time this core
/// was taken away (interrupts, the hypervisor, another thread's scheduler slice). Latency
/// tails below what this shows cannot be had on this machine.
fn stalls(span: Duration) -> Stalls {
    let (t0, mut last) = (Instant::now(), Instant::now());
    let mut s = Stalls {
        span: Duration::ZERO,
        lost: Duration::ZERO,
        over_10us: 0,
        over_1ms: 0,
    };
    while last.duration_since(t0) < span {
        let now = Instant::now();
        let gap = now - last;
        if gap > Duration::from_micros(1) {
            s.lost += gap;
            s.over_10us += u64::from(gap > Duration::from_micros(10));
            s.over_1ms += u64::from(gap > Duration::from_millis(1));
        }
        last = now;
    }
    s.span = last.duration_since(t0);
    s
}

/// Words of the calibration segment, each at the start of a 128-byte line pair of its own:
/// ping writes the first, pong answers on the second (or, in the one-line phase, on the
/// first).
const PING_WORD: usize = 16;
const PONG_WORD: usize = 32;
/// A value with this bit asks pong to answer on ping's own line (the one-line phase).
const ONE_LINE: u64 = 1 << 62;
/// A value with this bit asks pong to read the stream (the stream phase).
const STREAM: u64 = 1 << 61;
/// The stream phase: ping writes 64-byte lines in turn into a ring of `STREAM_SLOTS`
/// slots (in the segment's second page), each line's first word its number, stored
/// last; pong reads them in order and says how far it has read on a line of its own
/// (`STREAM_READ_WORD`) every `STREAM_RELEASE` lines. It is the least a stream of small
/// messages between the two cores costs: one line handed over per message.
const STREAM_READ_WORD: usize = 48;
const STREAM_SLOTS_AT: usize = 512;
const STREAM_SLOTS: u64 = 512;
const STREAM_RELEASE: u64 = 64;
/// Lines timed together, and how many such batches (their median mean is the figure).
const STREAM_BATCH: u64 = 16_384;
const STREAM_BATCHES: u64 = 5;
const _: () = assert!(STREAM_BATCH % STREAM_RELEASE == 0 && STREAM_SLOTS % STREAM_RELEASE == 0);
const _: () = assert!(STREAM_READ_WORD * 8 + 128 <= STREAM_SLOTS_AT * 8);

/// The stream's slot for line `i` (numbered from 1): 8 words on a 64-byte line.
fn stream_line(slots: &[AtomicU64], i: u64) -> anyhow::Result<&[AtomicU64]> {
    let at = ((i - 1) % STREAM_SLOTS) as usize * 8;
    slots
        .get(at..at + 8)
        .ok_or_else(|| anyhow!("calibration segment too small"))
}

/// Pong's side of the stream phase: reads every line, checks it, reports its progress.
fn read_stream(
    slots: &[AtomicU64],
    read: &AtomicU64,
    deadline: Instant,
    yield_every: u32,
) -> anyhow::Result<()> {
    for i in 1..=STREAM_BATCH * STREAM_BATCHES {
        let line = stream_line(slots, i)?;
        await_value(&line[0], |v| v == i, deadline, yield_every)?;
        // Relaxed: ordered after the Acquire load of the line's number in `await_value`.
        if line[1..].iter().any(|w| w.load(Ordering::Relaxed) != i) {
            bail!("the floor's stream line {i} arrived altered");
        }
        if i % STREAM_RELEASE == 0 {
            // SYNC: Release pairs with ping's Acquire load in `write_stream`: the lines
            // read so far are read before ping writes over them.
            read.store(i, Ordering::Release);
        }
    }
    Ok(())
}

/// Ping's side of the stream phase: the median over batches of the mean time per line.
fn write_stream(
    slots: &[AtomicU64],
    read: &AtomicU64,
    deadline: Instant,
    yield_every: u32,
) -> anyhow::Result<f64> {
    let mut read_upto = 0u64;
    let mut means = Vec::with_capacity(STREAM_BATCHES as usize);
    for b in 0..STREAM_BATCHES {
        let t0 = Instant::now();
        let end = (b + 1) * STREAM_BATCH;
        for i in b * STREAM_BATCH + 1..=end {
            if i.saturating_sub(read_upto) > STREAM_SLOTS {
                read_upto = await_value(
                    read,
                    |r| i.saturating_sub(r) <= STREAM_SLOTS,
                    deadline,
                    yield_every,
                )?;
            }
            let line = stream_line(slots, i)?;
            for w in &line[1..] {
                w.store(i, Ordering::Relaxed);
            }
            // SYNC: Release pairs with pong's Acquire load in `await_value` (from
            // `read_stream`): the line's other words are visible with its number.
            line[0].store(i, Ordering::Release);
        }
        read_upto = await_value(read, |r| r >= end, deadline, yield_every)?;
        means.push(t0.elapsed().as_nanos() as f64 / STREAM_BATCH as f64);
    }
    Ok(median(means))
}

/// The median of batch means (the upper one of an even count; 0 for none).
fn median(mut means: Vec<f64>) -> f64 {
    means.sort_by(f64::total_cmp);
    means.get(means.len() / 2).copied().unwrap_or(0.0)
}

/// The floor between two pinned processes, as a pair of channels has it: ping writes an
/// odd value on its own cache line, pong answers with the next even one on another line
/// (each line written by one side only, as every pair of one-way channels is). Ping
/// reports the median of batch means as `floor_rtt_ns` and, timed one round trip at a
/// time with the clock the `latency` workload uses, the histogram and its p50 as
/// `floor_rtt_p50_ns`; then, for reference, the same exchange on one line that both
/// sides write (`floor_one_line_rtt_ns`: the line then migrates whole, which no pair of
/// channels can do); then, between two cores, a one-way stream of 64-byte lines
/// (`floor_stream_ns`, ns per line); plus the clock's read cost and single-core memcpy
/// bandwidth.
fn floor(
    seg: &Segment,
    ping: bool,
    iterations: u64,
    same_core: bool,
    quick: bool,
) -> anyhow::Result<Measurement> {
    let yield_every = if same_core { 1 } else { 4096 };
    let word = |i: usize| {
        seg.words()
            .get(i)
            .ok_or_else(|| anyhow!("calibration segment too small"))
    };
    let (ping_word, pong_word) = (word(PING_WORD)?, word(PONG_WORD)?);
    let stream_read = word(STREAM_READ_WORD)?;
    let slots = seg
        .words()
        .get(STREAM_SLOTS_AT..)
        .ok_or_else(|| anyhow!("calibration segment too small"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    if !ping {
        let mut last = 0;
        loop {
            let v = await_value(
                ping_word,
                |v| v % 2 == 1 && v != last,
                deadline,
                yield_every,
            )?;
            if v == STOP {
                // Keep this core as busy as a spinning role would while ping measures
                // its stalls, so other threads must preempt one of the two.
                if !same_core && !quick {
                    stalls(STALL_SPAN);
                }
                return Ok(Measurement::default());
            }
            last = v;
            if v & STREAM != 0 {
                read_stream(slots, stream_read, deadline, yield_every)?;
                continue;
            }
            let answer = if v & ONE_LINE != 0 {
                ping_word
            } else {
                pong_word
            };
            // SYNC: Release pairs with ping's Acquire load in `await_value`.
            answer.store(v + 1, Ordering::Release);
        }
    }
    let mut n = 0u64;
    let mut round_trip = |one_line: bool| -> anyhow::Result<()> {
        n += 1;
        let (sent, answer) = if one_line {
            ((2 * n + 1) | ONE_LINE, ping_word)
        } else {
            (2 * n + 1, pong_word)
        };
        // SYNC: Release pairs with pong's Acquire load in `await_value`.
        ping_word.store(sent, Ordering::Release);
        await_value(answer, |x| x == sent + 1, deadline, yield_every)?;
        Ok(())
    };
    for _ in 0..iterations / 10 {
        round_trip(false)?;
    }
    let batches = (iterations / FLOOR_BATCH).max(1);
    let mut batch_medians = [0.0; 2];
    let mut duration = Duration::ZERO;
    for (one_line, batch_median) in [false, true].into_iter().zip(&mut batch_medians) {
        let mut means = Vec::with_capacity(batches as usize);
        let start = Instant::now();
        for _ in 0..batches {
            let t0 = Instant::now();
            for _ in 0..FLOOR_BATCH {
                round_trip(one_line)?;
            }
            means.push(t0.elapsed().as_nanos() as f64 / FLOOR_BATCH as f64);
        }
        if !one_line {
            duration = start.elapsed();
        }
        *batch_median = median(means);
    }
    // Each round trip timed on its own, as `latency` times them.
    let mut hist = new_histogram();
    for _ in 0..batches * FLOOR_BATCH {
        let t0 = Instant::now();
        round_trip(false)?;
        hist.saturating_record(t0.elapsed().as_nanos() as u64);
    }
    // Two processes sharing a core would stream by context switches: not a floor of
    // anything.
    let stream_ns = if same_core {
        None
    } else {
        // SYNC: Release pairs with pong's Acquire load in `await_value`.
        ping_word.store(STREAM | 1, Ordering::Release);
        Some(write_stream(slots, stream_read, deadline, yield_every)?)
    };
    // SYNC: Release pairs with pong's Acquire load; STOP ends its loop.
    ping_word.store(STOP, Ordering::Release);
    let [median, one_line_median] = batch_medians;
    let timed_p50 = hist.value_at_quantile(0.5) as f64;
    let mut m = Measurement {
        histogram: Some(hist),
        count: batches * FLOOR_BATCH,
        bytes: 0,
        duration,
        metrics: vec![
            ("floor_rtt_ns".into(), median),
            ("floor_rtt_p50_ns".into(), timed_p50),
            ("floor_one_line_rtt_ns".into(), one_line_median),
        ],
    };
    if let Some(ns) = stream_ns {
        m.metrics.push(("floor_stream_ns".into(), ns));
    }
    if quick {
        return Ok(m);
    }

    let clock_n = 1_000_000u32;
    let t0 = Instant::now();
    let mut sink = t0;
    for _ in 0..clock_n {
        sink = std::hint::black_box(Instant::now());
    }
    let clock_ns = sink.duration_since(t0).as_nanos() as f64 / f64::from(clock_n);

    let s = stalls(STALL_SPAN);
    let span = s.span.as_secs_f64();
    let stall_pct = s.lost.as_secs_f64() / span * 100.0;
    let stalls_10us_per_s = s.over_10us as f64 / span;
    let stalls_1ms_per_s = s.over_1ms as f64 / span;

    let len = 64 << 20;
    let src = vec![0x5au8; len];
    let mut dst = vec![0u8; len];
    let mut best = f64::MAX;
    for _ in 0..6 {
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        best = best.min(t.elapsed().as_secs_f64());
    }
    let memcpy_gb_s = len as f64 / best / 1e9;
    m.metrics.extend([
        ("clock_read_ns".into(), clock_ns),
        ("memcpy_gb_s".into(), memcpy_gb_s),
        ("stall_pct".into(), stall_pct),
        ("stalls_10us_per_s".into(), stalls_10us_per_s),
        ("stalls_1ms_per_s".into(), stalls_1ms_per_s),
    ]);
    Ok(m)
}
