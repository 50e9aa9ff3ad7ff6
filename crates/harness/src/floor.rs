//! The hardware floor between two pinned cores: what it is ([`Floor`]), how the parent
//! measures it ([`calibrate`], and [`refresh`] before each run), and the two roles that
//! measure it (a cache-line ping-pong over a shared segment, a one-way stream of lines,
//! the clock's cost, the stall loop and memcpy bandwidth).

use std::io::BufRead;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use ipcbench_transport::names;
use ipcbench_transport::segment::Segment;
use ipcbench_workloads::{new_histogram, Measurement};
use serde::{Deserialize, Serialize};

use crate::runner::{self, RolePlan, RunPlan, Status};
use crate::wire::{self, RoleJob, RoleReport};

/// The `workload` name of the floor's role jobs.
pub const FLOOR: &str = "floor";

/// The task of one floor role.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FloorTask {
    /// The segment the parent created.
    segment: std::path::PathBuf,
    /// Ping (measures) or pong.
    ping: bool,
    /// Round trips measured.
    iterations: u64,
    /// Both roles on one core: yield at every miss.
    same_core: bool,
    /// Only the round trips (taken again before each run): no clock cost, stall loop or
    /// memcpy.
    quick: bool,
}

/// Runs a floor role in a role process.
pub fn role(job: &RoleJob, stdin: &mut dyn BufRead) -> anyhow::Result<RoleReport> {
    let t: FloorTask = job.task()?;
    let seg = Segment::open(&t.segment, FLOOR_SEGMENT_BYTES)?;
    wire::emit_ready()?;
    wire::emit(&wire::RoleEvent::Connected)?;
    wire::wait_for_go(stdin)?;
    let m = floor(&seg, t.ping, t.iterations, t.same_core, t.quick)?;
    RoleReport::from_measurement(&m)
}

/// The hardware floor on one pair of cores (see `harness calibrate`).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Floor {
    /// Cores measured.
    pub cores: [usize; 2],
    /// Cache-line ping-pong round trip, one line written by each side (as a pair of
    /// channels has it), median of batch means, ns.
    pub rtt_ns: f64,
    /// The same round trip timed one at a time with the clock `latency` uses: the p50, ns.
    /// The floor of `latency` rows, which are timed that way.
    pub rtt_p50_ns: f64,
    /// For reference: the round trip on one line both sides write (it migrates whole,
    /// which no pair of one-way channels can do), median of batch means, ns.
    pub one_line_rtt_ns: f64,
    /// A one-way stream of 64-byte lines between the two cores, one line handed over per
    /// message (each flagged by a word stored last): ns per line, median of batch means.
    /// None on one core (the two processes would take turns, not stream).
    pub stream_ns: Option<f64>,
    /// Cost of one clock read, ns.
    pub clock_read_ns: f64,
    /// Single-core memcpy bandwidth, GB/s (10^9 bytes copied per second).
    pub memcpy_gb_s: f64,
    /// Share of time (%) a clock-reading loop on the measuring core lost in gaps over 1 µs.
    pub stall_pct: f64,
    /// Gaps over 10 µs per second in that loop.
    pub stalls_10us_per_s: f64,
    /// Gaps over 1 ms per second in that loop (another thread ran a scheduler slice).
    pub stalls_1ms_per_s: f64,
    /// One copy of a message of each of [`COPY_SIZES`] bytes between two buffers that
    /// stay in the core's caches: the least a message of that size costs a transport
    /// that copies it once, ns (the best of several batches).
    pub copy_ns: [f64; COPY_SIZES.len()],
    /// For a reference floor: the lowest and highest round trip (`rtt_ns`) of the samples
    /// it is the median of.
    pub rtt_range_ns: Option<[f64; 2]>,
    /// For a reference floor: how many samples it is the median of (at the start of the
    /// matrix and around its runs).
    pub samples: usize,
}

/// The message sizes whose cache-resident copy the floor measures.
pub const COPY_SIZES: [usize; 8] = [64, 256, 1024, 4096, 16384, 65536, 262_144, 1_048_576];

impl Floor {
    /// A lower bound on one cache-resident copy of `bytes`: the cost of the measured
    /// size at or above it (the largest, beyond them all) scaled to `bytes` by length. A
    /// shorter copy costs no less per byte, so the bound holds.
    pub fn copy_floor_ns(&self, bytes: u64) -> f64 {
        let at = COPY_SIZES
            .iter()
            .position(|s| *s as u64 >= bytes)
            .unwrap_or(COPY_SIZES.len() - 1);
        self.copy_ns[at] * bytes as f64 / COPY_SIZES[at] as f64
    }

    /// The median, key by key, of several floors of the same cores (the round trips and
    /// the line stream vary with the host's state; the rest is the first's).
    pub fn median_of(samples: &[Floor]) -> Option<Floor> {
        let first = *samples.first()?;
        let med = |f: &dyn Fn(&Floor) -> f64| {
            let v: Vec<f64> = samples.iter().map(f).collect();
            crate::stats::median_interval(&v).map_or(0.0, |i| i.median)
        };
        let stream: Vec<f64> = samples.iter().filter_map(|s| s.stream_ns).collect();
        let rtts = samples.iter().map(|s| s.rtt_ns);
        let range = [
            rtts.clone().fold(f64::INFINITY, f64::min),
            rtts.fold(0.0, f64::max),
        ];
        Some(Floor {
            rtt_range_ns: Some(range),
            samples: samples.len(),
            rtt_ns: med(&|f| f.rtt_ns),
            rtt_p50_ns: med(&|f| f.rtt_p50_ns),
            one_line_rtt_ns: med(&|f| f.one_line_rtt_ns),
            stream_ns: crate::stats::median_interval(&stream).map(|i| i.median),
            ..first
        })
    }
    /// The line stream for people: "12.3 ns per line", or why there is none.
    pub fn stream_text(&self) -> String {
        match self.stream_ns {
            Some(ns) => format!("{ns:.1} ns per line"),
            None => "not measured on one core".into(),
        }
    }
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
        copy_ns: {
            let mut c = [0.0; COPY_SIZES.len()];
            for (i, size) in COPY_SIZES.iter().enumerate() {
                c[i] = get(&format!("copy_{size}_ns"))?;
            }
            c
        },
        rtt_range_ns: None,
        samples: 1,
    })
}

/// The cache-line round trips and the line stream of `floor` measured again (a few tens
/// of milliseconds: no clock cost, stall loop or memcpy), for a run about to start: this host moves its
/// virtual cores now and then, and every transfer between them can cost four times more
/// for minutes at a time, so a floor from the start of the matrix may no longer be the
/// one a row was measured beside.
pub fn refresh(exe: &Path, floor: &Floor, interrupted: &AtomicBool) -> anyhow::Result<Floor> {
    let report = measure_floor(exe, floor.cores, true, interrupted)?;
    let (rtt_ns, rtt_p50_ns, one_line_rtt_ns) = round_trips(&report)?;
    Ok(Floor {
        rtt_ns,
        rtt_p50_ns,
        one_line_rtt_ns,
        stream_ns: report.metric("floor_stream_ns"),
        rtt_range_ns: None,
        samples: 1,
        ..*floor
    })
}

fn metric(report: &RoleReport, k: &str) -> anyhow::Result<f64> {
    report
        .metric(k)
        .ok_or_else(|| anyhow!("calibration: no {k}"))
}

/// The floor's round trips from ping's report: a line each way (batch means, and timed
/// one at a time), and one line both ways.
fn round_trips(report: &RoleReport) -> anyhow::Result<(f64, f64, f64)> {
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
) -> anyhow::Result<RoleReport> {
    let dir = runner::run_dir()?;
    let seg_path = names::shm_dir().join(names::unique("floor"));
    let _segment = Segment::create(&seg_path, FLOOR_SEGMENT_BYTES)?;
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
            .map(|(name, ping, core)| {
                let task = FloorTask {
                    segment: seg_path.clone(),
                    ping,
                    iterations,
                    same_core,
                    quick,
                };
                RolePlan::new(name, Some(core), FLOOR, &task)
            })
            .collect::<anyhow::Result<_>>()?,
        setup_timeout: crate::runner::SETUP_TIMEOUT,
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
    // Cache-resident copies of each message size: the same two buffers copied over and
    // over, 8 MiB a batch, the best batch of five.
    for size in COPY_SIZES {
        let (src, mut dst) = (vec![0x5au8; size], vec![0u8; size]);
        let reps = ((8 << 20) / size).max(8);
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..reps {
                dst.copy_from_slice(std::hint::black_box(&src));
                std::hint::black_box(&mut dst);
            }
            best = best.min(t.elapsed().as_nanos() as f64 / reps as f64);
        }
        m.metrics.push((format!("copy_{size}_ns"), best));
    }
    m.metrics.extend([
        ("clock_read_ns".into(), clock_ns),
        ("memcpy_gb_s".into(), memcpy_gb_s),
        ("stall_pct".into(), stall_pct),
        ("stalls_10us_per_s".into(), stalls_10us_per_s),
        ("stalls_1ms_per_s".into(), stalls_1ms_per_s),
    ]);
    Ok(m)
}
