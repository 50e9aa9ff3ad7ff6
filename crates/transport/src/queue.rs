//! The `queue` transport's building blocks (ZeroMQ-like PUSH/PULL, issue 4). So far: the
//! PUSH side's outgoing queue, [`Outbox`]: a bounded FIFO (the high-water mark) that a
//! sender fills without waiting for the peers, and that a drain thread empties towards
//! them. When it is full the policy decides: `Block` (wait for room, up to a bound) or
//! `Retry` (wait `interval`, at most `retries` times, then give the frame up; every frame
//! given up is counted, never lost silently). The sockets and their peers come next.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What a full outbox does with one more frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum FullPolicy {
    /// Wait for room, at most `timeout`.
    Block {
        /// Longest wait for one frame.
        timeout: Duration,
    },
    /// Wait `interval`, at most `retries` times, then give the frame up (counted).
    Retry {
        /// Wait between attempts (the original: 1 s).
        interval: Duration,
        /// Attempts after the first (the original: 10).
        retries: u32,
    },
}

impl Default for FullPolicy {
    /// The original's: retry every second, ten times.
    fn default() -> Self {
        FullPolicy::Retry {
            interval: Duration::from_secs(1),
            retries: 10,
        }
    }
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OutboxError {
    /// Full for the whole of the policy's patience: the frame was given up (and counted).
    #[error("the send queue stayed full; the frame was dropped ({dropped} so far)")]
    Dropped {
        /// Frames given up so far, this one included.
        dropped: u64,
    },
    /// The outbox was closed (its peers are gone or the socket shut down).
    #[error("the send queue is closed")]
    Closed,
}

/// Frames counted by an outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Frames accepted into the queue.
    pub accepted: u64,
    /// Frames taken out by the drain side.
    pub taken: u64,
    /// Frames given up by the `Retry` policy (or refused by `Block` after its timeout).
    pub dropped: u64,
    /// Frames still queued.
    pub queued: u64,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Vec<u8>>,
    /// Buffers of taken frames, reused for new ones (no allocation per frame once warm).
    spare: Vec<Vec<u8>>,
    closed: bool,
    counts: OutboxCounts,
}

/// A bounded FIFO of frames between a sender and a drain thread.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    not_empty: Condvar,
    not_full: Condvar,
    hwm: usize,
    policy: FullPolicy,
}

impl Outbox {
    /// An outbox holding at most `hwm` frames (at least 1).
    pub fn new(hwm: usize, policy: FullPolicy) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            hwm: hwm.max(1),
            policy,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a copy of `frame`, or applies the policy when the queue is full.
    pub fn push(&self, frame: &[u8]) -> Result<(), OutboxError> {
        let mut st = self.lock();
        let (mut waits_left, step) = match self.policy {
            FullPolicy::Block { timeout } => (u32::MAX, timeout),
            FullPolicy::Retry { interval, retries } => (retries, interval),
        };
        // `Block`'s deadline, read from the clock only once the queue is found full.
        let mut deadline: Option<Instant> = None;
        loop {
            if st.closed {
                return Err(OutboxError::Closed);
            }
            if st.frames.len() < self.hwm {
                let mut buf = st.spare.pop().unwrap_or_default();
                buf.clear();
                buf.extend_from_slice(frame);
                st.frames.push_back(buf);
                st.counts.accepted += 1;
                drop(st);
                self.not_empty.notify_one();
                return Ok(());
            }
            let wait = match self.policy {
                FullPolicy::Block { timeout } => deadline
                    .get_or_insert_with(|| Instant::now() + timeout)
                    .saturating_duration_since(Instant::now()),
                FullPolicy::Retry { .. } => step,
            };
            if waits_left == 0 || wait.is_zero() {
                st.counts.dropped += 1;
                return Err(OutboxError::Dropped {
                    dropped: st.counts.dropped,
                });
            }
            waits_left = waits_left.saturating_sub(1);
            // `Retry` waits its whole interval before the next attempt (as the original
            // did), even if room appears sooner; `Block` takes the room as soon as it is
            // there.
            let end = Instant::now() + wait;
            loop {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() || st.closed {
                    break;
                }
                st = self
                    .not_full
                    .wait_timeout(st, left)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
                if matches!(self.policy, FullPolicy::Block { .. }) && st.frames.len() < self.hwm {
                    break;
                }
            }
        }
    }

    /// Takes the oldest frame into `out` (its previous contents replaced), waiting at most
    /// `timeout`; `false` if none came (or the outbox is closed and empty).
    pub fn take(&self, out: &mut Vec<u8>, timeout: Duration) -> bool {
        // The clock is read only if there is nothing to take at once.
        let mut end: Option<Instant> = None;
        let mut st = self.lock();
        loop {
            if let Some(frame) = st.frames.pop_front() {
                let old = std::mem::replace(out, frame);
                st.spare.push(old);
                st.counts.taken += 1;
                drop(st);
                self.not_full.notify_one();
                return true;
            }
            let end = *end.get_or_insert_with(|| Instant::now() + timeout);
            let left = end.saturating_duration_since(Instant::now());
            if st.closed || left.is_zero() {
                return false;
            }
            st = self
                .not_empty
                .wait_timeout(st, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Closes the outbox: pushes fail with `Closed`, waiters wake; queued frames can still
    /// be taken.
    pub fn close(&self) {
        self.lock().closed = true;
        self.not_full.notify_all();
        self.not_empty.notify_all();
    }

    /// The counts so far.
    pub fn counts(&self) -> OutboxCounts {
        let st = self.lock();
        OutboxCounts {
            queued: st.frames.len() as u64,
            ..st.counts
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn fifo_up_to_the_high_water_mark_then_retry_gives_up_and_counts() {
        let o = Outbox::new(
            3,
            FullPolicy::Retry {
                interval: Duration::from_millis(5),
                retries: 2,
            },
        );
        for i in 0..3u8 {
            o.push(&[i; 4]).unwrap();
        }
        let t0 = Instant::now();
        assert_eq!(o.push(&[9]), Err(OutboxError::Dropped { dropped: 1 }));
        // Two waits of the interval, then given up.
        assert!(t0.elapsed() >= Duration::from_millis(10));
        let mut buf = Vec::new();
        for i in 0..3u8 {
            assert!(o.take(&mut buf, Duration::ZERO));
            assert_eq!(buf, [i; 4]);
        }
        assert!(!o.take(&mut buf, Duration::from_millis(1)));
        assert_eq!(
            o.counts(),
            OutboxCounts {
                accepted: 3,
                taken: 3,
                dropped: 1,
                queued: 0
            }
        );
    }

    #[test]
    fn retry_succeeds_when_the_drain_makes_room_in_time() {
        let o = Arc::new(Outbox::new(
            1,
            FullPolicy::Retry {
                interval: Duration::from_millis(20),
                retries: 10,
            },
        ));
        o.push(b"a").unwrap();
        let drain = {
            let o = o.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                let mut buf = Vec::new();
                assert!(o.take(&mut buf, Duration::from_secs(5)));
                buf
            })
        };
        o.push(b"b").unwrap();
        assert_eq!(drain.join().unwrap(), b"a");
        assert_eq!(o.counts().dropped, 0);
    }

    #[test]
    fn block_waits_for_room_up_to_its_timeout_and_close_wakes_everyone() {
        let o = Arc::new(Outbox::new(
            1,
            FullPolicy::Block {
                timeout: Duration::from_secs(10),
            },
        ));
        o.push(b"x").unwrap();
        let short = Outbox::new(
            1,
            FullPolicy::Block {
                timeout: Duration::from_millis(20),
            },
        );
        short.push(b"x").unwrap();
        assert_eq!(short.push(b"y"), Err(OutboxError::Dropped { dropped: 1 }));
        let o2 = o.clone();
        let pusher = std::thread::spawn(move || o2.push(b"z"));
        std::thread::sleep(Duration::from_millis(20));
        let mut buf = Vec::new();
        assert!(o.take(&mut buf, Duration::ZERO));
        assert_eq!(pusher.join().unwrap(), Ok(()));
        o.close();
        assert_eq!(o.push(b"late"), Err(OutboxError::Closed));
        assert!(
            o.take(&mut buf, Duration::ZERO),
            "queued frames survive the close"
        );
        assert_eq!(buf, b"z");
        assert!(
            !o.take(&mut buf, Duration::from_secs(5)),
            "closed and empty: no wait"
        );
    }
}

// ---- PUSH and PULL over point-to-point connections ----------------------------------

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::{RecvError, Rx, TryRecvError, Tx};

/// The credit a PULL peer sends when it is ready for one more frame.
const CREDIT: &[u8] = b"C";

/// Counts a PUSH socket keeps besides its outbox's.
#[derive(Debug, Default)]
struct PushStats {
    /// Frames delivered to each peer.
    per_peer: Vec<AtomicU64>,
    /// Frames lost because every peer was gone (they were accepted, then undeliverable).
    undeliverable: AtomicU64,
    /// Peers still connected.
    live_peers: AtomicU64,
}

/// A PUSH socket: `send` queues a frame (the outbox's policy applies when it is full) and
/// returns; a drain thread hands each frame to a peer that has asked for one (a PULL peer
/// sends a credit whenever it is ready for the next frame), so a free peer is served
/// first, not blindly in turn. A peer that goes away is dropped from the set; when none is
/// left, what is still queued is counted as undeliverable and `send` fails.
#[derive(Debug)]
pub struct Push {
    outbox: Arc<Outbox>,
    stats: Arc<PushStats>,
    drain: Option<std::thread::JoinHandle<()>>,
}

impl Push {
    /// A PUSH socket over `peers` (each a connection: frames go out on its `Tx`, credits
    /// come back on its `Rx`).
    pub fn new<T, R>(peers: Vec<(T, R)>, hwm: usize, policy: FullPolicy) -> Push
    where
        T: Tx + Send + 'static,
        R: Rx + Send + 'static,
    {
        let outbox = Arc::new(Outbox::new(hwm, policy));
        let stats = Arc::new(PushStats {
            per_peer: peers.iter().map(|_| AtomicU64::new(0)).collect(),
            undeliverable: AtomicU64::new(0),
            live_peers: AtomicU64::new(peers.len() as u64),
        });
        let (o, s) = (outbox.clone(), stats.clone());
        let drain = std::thread::spawn(move || drain(peers, &o, &s));
        Push {
            outbox,
            stats,
            drain: Some(drain),
        }
    }

    /// Queues `frame` for the next free peer.
    pub fn send(&self, frame: &[u8]) -> Result<(), OutboxError> {
        self.outbox.push(frame)
    }

    /// Frames delivered to each peer so far.
    pub fn delivered(&self) -> Vec<u64> {
        self.stats
            .per_peer
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// The outbox's counts, and the frames that became undeliverable when every peer left.
    pub fn counts(&self) -> (OutboxCounts, u64) {
        (
            self.outbox.counts(),
            self.stats.undeliverable.load(Ordering::Relaxed),
        )
    }

    /// Peers still connected.
    pub fn live_peers(&self) -> u64 {
        self.stats.live_peers.load(Ordering::Relaxed)
    }

    /// Delivers everything queued (waiting at most `timeout`), then stops the drain thread.
    /// `true` if the queue emptied in time.
    pub fn finish(&mut self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while self.outbox.counts().queued > 0 && Instant::now() < end && self.live_peers() > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let emptied = self.outbox.counts().queued == 0;
        self.stop();
        emptied
    }

    fn stop(&mut self) {
        self.outbox.close();
        if let Some(d) = self.drain.take() {
            let _ = d.join();
        }
    }
}

impl Drop for Push {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The drain thread: frame by frame, waits for a peer with credit and sends to it.
fn drain<T: Tx, R: Rx>(mut peers: Vec<(T, R)>, outbox: &Outbox, stats: &PushStats) {
    let mut credit = vec![0u32; peers.len()];
    let mut alive = vec![true; peers.len()];
    let mut next = 0usize;
    let mut frame = Vec::new();
    let mut probe = [0u8; 8];
    loop {
        if !outbox.take(&mut frame, Duration::from_millis(10)) {
            if outbox.counts().queued == 0 && closed(outbox) {
                return;
            }
            // Keep collecting credits (and noticing departures) while idle.
            collect(&mut peers, &mut credit, &mut alive, stats, &mut probe);
            continue;
        }
        loop {
            collect(&mut peers, &mut credit, &mut alive, stats, &mut probe);
            if !alive.iter().any(|a| *a) {
                // Nobody left to take it: this frame and everything queued after it.
                stats.undeliverable.fetch_add(1, Ordering::Relaxed);
                outbox.close();
                while outbox.take(&mut frame, Duration::ZERO) {
                    stats.undeliverable.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            // The first peer with credit, searching from after the last one served.
            let n = peers.len();
            if let Some(i) = (0..n)
                .map(|k| (next + k) % n)
                .find(|&i| alive[i] && credit[i] > 0)
            {
                match peers[i].0.send(&frame) {
                    Ok(()) => {
                        credit[i] -= 1;
                        stats.per_peer[i].fetch_add(1, Ordering::Relaxed);
                        next = i + 1;
                        break;
                    }
                    Err(_) => {
                        // Gone between its credit and our send: try another peer.
                        alive[i] = false;
                        stats.live_peers.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

fn closed(outbox: &Outbox) -> bool {
    outbox.lock().closed
}

/// Reads every credit waiting on every live peer; a peer whose connection ended is marked
/// gone.
fn collect<T: Tx, R: Rx>(
    peers: &mut [(T, R)],
    credit: &mut [u32],
    alive: &mut [bool],
    stats: &PushStats,
    probe: &mut [u8],
) {
    for (i, (_, rx)) in peers.iter_mut().enumerate() {
        while alive[i] {
            match rx.try_recv(probe) {
                Ok(n) if &probe[..n] == CREDIT => credit[i] += 1,
                Ok(_) | Err(TryRecvError::Recv(RecvError::Truncated { .. })) => {
                    // Not a credit: a broken peer. Stop trusting it.
                    alive[i] = false;
                    stats.live_peers.fetch_sub(1, Ordering::Relaxed);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Recv(_)) => {
                    alive[i] = false;
                    stats.live_peers.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// A PULL socket: receives from any number of PUSH peers, fair-queued (the peers are
/// polled in turn, starting after the one served last), and asks each peer for one more
/// frame (a credit) after each frame it took from it.
#[derive(Debug)]
pub struct Pull<T: Tx, R: Rx> {
    peers: Vec<(T, R, bool)>,
    next: usize,
}

impl<T: Tx, R: Rx> Pull<T, R> {
    /// A PULL socket over `peers`; each is sent `window` credits at once (1: take one
    /// frame at a time, first-free).
    pub fn new(peers: Vec<(T, R)>, window: u32) -> Pull<T, R> {
        let mut peers: Vec<(T, R, bool)> = peers.into_iter().map(|(t, r)| (t, r, true)).collect();
        for p in &mut peers {
            for _ in 0..window.max(1) {
                if p.0.send(CREDIT).is_err() {
                    p.2 = false;
                }
            }
        }
        Pull { peers, next: 0 }
    }

    /// Peers still connected.
    pub fn live_peers(&self) -> usize {
        self.peers.iter().filter(|p| p.2).count()
    }

    /// Receives the next frame from any peer into `buf`, waiting at most `timeout`.
    /// `Disconnected` once every peer is gone and nothing is left to read.
    pub fn recv_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, PullError> {
        // The clock is read only once a first pass found nothing.
        let mut end: Option<Instant> = None;
        let mut idle = 0u32;
        loop {
            let n = self.peers.len();
            for k in 0..n {
                let i = (self.next + k) % n;
                let p = &mut self.peers[i];
                if !p.2 {
                    continue;
                }
                match p.1.try_recv(buf) {
                    Ok(len) => {
                        if p.0.send(CREDIT).is_err() {
                            p.2 = false;
                        }
                        self.next = i + 1;
                        return Ok(len);
                    }
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Recv(RecvError::Truncated { needed })) => {
                        return Err(PullError::Truncated { needed })
                    }
                    Err(TryRecvError::Recv(_)) => p.2 = false,
                }
            }
            if self.live_peers() == 0 {
                return Err(PullError::Disconnected);
            }
            if Instant::now() >= *end.get_or_insert_with(|| Instant::now() + timeout) {
                return Err(PullError::Timeout);
            }
            // Poll quickly at first, then back off to a sleep.
            idle = idle.saturating_add(1);
            if idle < 64 {
                std::hint::spin_loop();
            } else if idle < 1024 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    }
}

/// Why a PULL receive returned no frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PullError {
    /// Nothing arrived in time.
    #[error("no frame within the timeout")]
    Timeout,
    /// Every peer is gone.
    #[error("every peer is gone")]
    Disconnected,
    /// The next frame needs a buffer of `needed` bytes (it stays queued).
    #[error("the frame needs {needed} bytes")]
    Truncated {
        /// Bytes the frame needs.
        needed: usize,
    },
}
