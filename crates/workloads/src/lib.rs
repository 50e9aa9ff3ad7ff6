//! ipcbench-workloads: each workload is a set of roles written against the transport
//! traits only ([`Tx`], [`Rx`]), returning a [`Measurement`]. Nothing here reads a config,
//! spawns a process or writes a file: the harness does.
//!
//! ```
//! use std::time::Duration;
//! use ipcbench_transport::{Endpoint, EndpointOptions, Transport, TransportKind, Uds};
//! use ipcbench_workloads::latency::{self, LatencyParams};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let spec = Endpoint::prepare(TransportKind::Uds, dir.path(), &EndpointOptions::default()).unwrap();
//! let listener = Uds::listen(&spec).unwrap();
//! let resolved = Uds::resolved(&listener);
//! let params = LatencyParams { msg_bytes: 64, count: 100, warmup: 10, rate: 0.0, zero_copy: false };
//! let echo = std::thread::spawn(move || {
//!     let (mut tx, mut rx) = Uds::connect(&resolved, Duration::from_secs(5)).unwrap();
//!     latency::echo(&mut tx, &mut rx, &params).unwrap()
//! });
//! let (mut tx, mut rx) = Uds::accept(listener, Duration::from_secs(5)).unwrap();
//! let m = latency::client(&mut tx, &mut rx, &params).unwrap();
//! assert_eq!(m.count, 100);
//! assert_eq!(m.histogram.unwrap().len(), 100);
//! echo.join().unwrap();
//! ```
#![forbid(unsafe_code)]

use std::time::Duration;

use hdrhistogram::Histogram;
use ipcbench_transport::{RecvError, SendError};

pub mod buffer;
pub mod latency;
pub mod pingpong;
pub mod tasks;
pub mod tasks_data;
pub mod tasks_exec;
#[cfg(feature = "zmq")]
pub mod tasks_zmq;
pub mod throughput;
pub mod vectors;

pub use ipcbench_transport::{Rx, Tx};

/// Highest latency a histogram records exactly (60 s, in ns); longer ones saturate.
pub const HISTOGRAM_MAX_NS: u64 = 60_000_000_000;

/// A new latency histogram in nanoseconds, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts (1 <= low, high >= 2 * low, sigfig <= 5):
    // nothing a user or a peer sends can make this fail.
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_NS, 3).expect("constant histogram bounds are valid")
}

/// What one role measured.
#[derive(Debug, Clone, Default)]
pub struct Measurement {
    /// Latencies in nanoseconds, if this role times individual messages.
    pub histogram: Option<Histogram<u64>>,
    /// Messages measured (warm-up excluded).
    pub count: u64,
    /// Payload bytes measured.
    pub bytes: u64,
    /// Wall time of the measured part.
    pub duration: Duration,
    /// Workload-specific figures, by CSV column name.
    pub metrics: Vec<(String, f64)>,
}

impl Measurement {
    /// The workload-specific figure named `key`, if this role reported it.
    pub fn metric(&self, key: &str) -> Option<f64> {
        self.metrics.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// Why a role failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// Sending failed.
    #[error("send: {0}")]
    Send(#[from] SendError),
    /// Receiving failed.
    #[error("receive: {0}")]
    Recv(#[from] RecvError),
    /// What arrived is not what was sent.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// A parameter the role cannot work with.
    #[error("invalid parameter: {0}")]
    Param(String),
    /// Stopped before the end (Ctrl-C, or a peer that left): what was done about it.
    #[error("stopped: {0}")]
    Stopped(String),
}

/// Bytes at the start of every workload message that carry its sequence number.
pub const SEQ_BYTES: usize = 8;

pub(crate) fn check_msg_bytes(msg_bytes: usize) -> Result<(), WorkloadError> {
    if msg_bytes < SEQ_BYTES {
        return Err(WorkloadError::Param(format!(
            "msg_bytes {msg_bytes} is below {SEQ_BYTES} (the sequence number)"
        )));
    }
    Ok(())
}

pub(crate) fn stamp(buf: &mut [u8], seq: u64) {
    buf[..SEQ_BYTES].copy_from_slice(&seq.to_le_bytes());
}

pub(crate) fn seq_of(buf: &[u8]) -> u64 {
    let mut b = [0u8; SEQ_BYTES];
    b.copy_from_slice(&buf[..SEQ_BYTES]);
    u64::from_le_bytes(b)
}

/// The SplitMix64 output number `counter` of the stream seeded with `seed`: a
/// counter-based generator, so any draw can be made (or made again) from its index alone.
pub fn splitmix(seed: u64, counter: u64) -> u64 {
    let mut z = seed.wrapping_add(counter.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `buf` with a reproducible pseudo-random pattern (splitmix64 from `seed`).
pub fn fill_pattern(buf: &mut [u8], seed: u64) {
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let z = splitmix(seed, i as u64);
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
}

/// Timestamps that cross processes and are cheap enough to take for every message: the
/// CPU's time stamp counter where it is invariant (quanta checks; a read costs about 10 ns
/// here, against 25 ns for `clock_gettime`), else `CLOCK_MONOTONIC`. Raw readings from two
/// processes on one machine are comparable; only differences become nanoseconds.
#[derive(Debug, Clone)]
pub(crate) struct Ticks(quanta::Clock);

impl Ticks {
    pub(crate) fn new() -> Ticks {
        Ticks(quanta::Clock::new())
    }

    /// A raw reading.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.0.raw()
    }

    /// The raw ticks that span at least `ns` nanoseconds (to compare readings with a
    /// deadline without converting every reading).
    pub(crate) fn ticks_for(&self, ns: u64) -> u64 {
        const PROBE: u64 = 1 << 40;
        let probe_ns = self.0.delta_as_nanos(0, PROBE).max(1);
        (ns as u128 * PROBE as u128).div_ceil(probe_ns as u128) as u64
    }

    /// Nanoseconds from reading `from` to reading `to` (0 if `to` is not later).
    #[inline]
    pub(crate) fn ns(&self, from: u64, to: u64) -> u64 {
        if to <= from {
            0
        } else {
            self.0.delta_as_nanos(from, to)
        }
    }
}

/// `CLOCK_MONOTONIC` in ns: one clock for every process on the machine, so a timestamp
/// taken by one role can be compared with another role's.
pub(crate) fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Sleeps, then spins, until `due` (the last 100-200 µs spun, for an exact start).
pub(crate) fn wait_until(due: std::time::Instant) {
    loop {
        let now = std::time::Instant::now();
        if now >= due {
            return;
        }
        let left = due - now;
        if left > Duration::from_micros(200) {
            std::thread::sleep(left - Duration::from_micros(100));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Test plumbing shared by the workloads' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::time::Duration;

    use ipcbench_transport::{
        Endpoint, EndpointOptions, Shm, ShmRx, ShmTx, Transport, TransportKind,
    };

    /// Runs `a` (the listening side) and `b` on two threads joined by an `shm` pair; each
    /// side's halves are dropped as soon as its closure returns, so the other side sees
    /// the disconnect.
    pub fn over_shm<A: Send, B: Send>(
        max_frame: u32,
        a: impl FnOnce(&mut ShmTx, &mut ShmRx) -> A + Send,
        b: impl FnOnce(&mut ShmTx, &mut ShmRx) -> B + Send,
    ) -> (A, B) {
        let dir = tempfile::tempdir().unwrap();
        let opts = EndpointOptions {
            shm_capacity: (4 * max_frame).next_power_of_two().max(1 << 12),
            max_frame,
            ..Default::default()
        };
        let spec = Endpoint::prepare(TransportKind::Shm, dir.path(), &opts).unwrap();
        let listener = Shm::listen(&spec).unwrap();
        let resolved = Shm::resolved(&listener);
        let out = std::thread::scope(|sc| {
            let peer = sc.spawn(|| {
                let (mut tx, mut rx) = Shm::connect(&resolved, Duration::from_secs(5)).unwrap();
                b(&mut tx, &mut rx)
            });
            let (mut tx, mut rx) = Shm::accept(listener, Duration::from_secs(5)).unwrap();
            let ra = a(&mut tx, &mut rx);
            drop((tx, rx));
            (ra, peer.join().unwrap())
        });
        spec.cleanup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_reproducible_and_seed_dependent() {
        let (mut a, mut b, mut c) = (vec![0u8; 37], vec![0u8; 37], vec![0u8; 37]);
        fill_pattern(&mut a, 1);
        fill_pattern(&mut b, 1);
        fill_pattern(&mut c, 2);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn ticks_for_spans_at_least_the_nanoseconds_asked() {
        let t = Ticks::new();
        for ns in [1, 1_000, 500_000_000, 3_600_000_000_000] {
            let span = t.ticks_for(ns);
            assert!(t.ns(1_000, 1_000 + span) >= ns, "{ns} ns: {span} ticks");
            assert!(
                t.ns(1_000, 1_000 + span) <= ns + ns / 1000 + 1,
                "{ns} ns: {span} ticks"
            );
        }
    }
}
