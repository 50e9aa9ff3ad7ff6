//! The `queue` transport: ZeroMQ-like PUSH and PULL sockets over any point-to-point
//! connections (uds, tcp, shm, pipe: anything with a [`Tx`] and an [`Rx`]).
//!
//! - [`Outbox`]: the PUSH side's outgoing queue, a bounded FIFO (the high-water mark) that
//!   a sender fills without waiting for the peers. When it is full the policy decides:
//!   `Block` (wait for room, up to a bound) or `Retry` (wait `interval`, at most `retries`
//!   times, then give the frame up; every frame given up is counted, never lost silently).
//! - [`Push`]: an outbox and a drain thread that hands each frame to a peer that asked for
//!   one (first-free, not round-robin). Peers can join at any time ([`Push::add_peer`]);
//!   with `reliable`, a frame stays owed until its peer acknowledges it, and the frames
//!   owed by a peer that goes away are queued again for the others.
//! - [`Pull`]: fair-queues frames from any number of peers, asking each for more with
//!   credits (automatically on receipt, or when the caller says it is done).
//! - [`Acceptor`]: a set of listening endpoints that peers connect to when they like.
//! - [`QueueTx`] (with [`Queue`]): the point-to-point form, one PUSH to one PULL, as a
//!   [`crate::Transport`] like the others.
//!
//! The back channel (PULL to PUSH) carries control frames of single bytes: `C` (credit:
//! send me one more frame) and `K` (acknowledged: I am done with the oldest frame you
//! sent me that I had not acknowledged yet).

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
    /// Threads waiting for a frame, and for room: a side wakes the other only when it
    /// waits (a condvar's notify is a system call even with nobody to wake).
    empty_waiters: usize,
    full_waiters: usize,
    /// The drain waits for a batch to fill (see [`Outbox::linger`]): a push wakes it only
    /// once `wake_at` frames are queued.
    lingering: bool,
}

/// What a thread waits for in an outbox.
#[derive(Clone, Copy)]
enum Waiting {
    Frame,
    Room,
}

/// A bounded FIFO of frames between a sender and a drain thread.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    not_empty: Condvar,
    not_full: Condvar,
    hwm: usize,
    policy: FullPolicy,
    /// Frames queued at which a push wakes a lingering drain.
    wake_at: usize,
}

impl Outbox {
    /// An outbox holding at most `hwm` frames (at least 1).
    pub fn new(hwm: usize, policy: FullPolicy) -> Outbox {
        Outbox::batched(hwm, policy, 1)
    }

    /// [`Outbox::new`] for a drain that writes batches: while it lingers, a push wakes it
    /// only once `batch` frames are queued (or the high-water mark is reached).
    pub fn batched(hwm: usize, policy: FullPolicy, batch: usize) -> Outbox {
        let hwm = hwm.max(1);
        Outbox {
            state: Mutex::new(State::default()),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            hwm,
            policy,
            wake_at: batch.clamp(1, hwm),
        }
    }

    /// Waits at most `timeout` until `frames` are queued (or the outbox is closed), the
    /// pushes meanwhile waking this thread only at the batch size given to
    /// [`Outbox::batched`]: a drain gathering a batch.
    pub fn linger(&self, frames: usize, timeout: Duration) {
        let mut st = self.lock();
        let end = Instant::now() + timeout;
        st.lingering = true;
        while st.frames.len() < frames && !st.closed {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = self.wait(st, Waiting::Frame, left);
        }
        st.lingering = false;
    }

    /// Waits at most `left` for a frame or for room, counted among those waiting for it
    /// (a push or take notifies only when someone waits).
    fn wait<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        what: Waiting,
        left: Duration,
    ) -> MutexGuard<'a, State> {
        let (cv, count): (&Condvar, fn(&mut State) -> &mut usize) = match what {
            Waiting::Frame => (&self.not_empty, |s| &mut s.empty_waiters),
            Waiting::Room => (&self.not_full, |s| &mut s.full_waiters),
        };
        *count(&mut st) += 1;
        let mut st = cv
            .wait_timeout(st, left)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
        *count(&mut st) -= 1;
        st
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
                self.enqueue(st, frame, false);
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
                st = self.wait(st, Waiting::Room, left);
                if matches!(self.policy, FullPolicy::Block { .. }) && st.frames.len() < self.hwm {
                    break;
                }
            }
        }
    }

    /// Takes the oldest frame into `out` (its previous contents replaced), waiting at most
    /// `timeout`; `false` if none came (or the outbox is closed and empty).
    pub fn take(&self, out: &mut Vec<u8>, timeout: Duration) -> bool {
        let (mut st, ready) = self.wait_for_frame(self.lock(), timeout);
        let Some(frame) = st.frames.pop_front().filter(|_| ready) else {
            return false;
        };
        let old = std::mem::replace(out, frame);
        st.spare.push(old);
        st.counts.taken += 1;
        let wake = st.full_waiters > 0;
        drop(st);
        if wake {
            self.not_full.notify_one();
        }
        true
    }

    /// Takes the oldest frames into `out` (empty on entry), without waiting: at least
    /// one if any is queued, then more while fewer than `max_frames` and fewer than
    /// `max_bytes` are taken. Give the buffers back with [`Outbox::give_back`].
    pub fn take_batch(&self, out: &mut Vec<Vec<u8>>, max_frames: usize, max_bytes: usize) {
        let mut st = self.lock();
        let mut bytes = 0;
        while out.len() < max_frames.max(1) && (out.is_empty() || bytes < max_bytes) {
            let Some(frame) = st.frames.pop_front() else {
                break;
            };
            bytes += frame.len();
            out.push(frame);
        }
        st.counts.taken += out.len() as u64;
        let wake = st.full_waiters > 0 && !out.is_empty();
        drop(st);
        if wake {
            self.not_full.notify_all();
        }
    }

    /// Returns the buffers of frames taken by [`Outbox::take_batch`] (`frames` is left
    /// empty), for new frames to reuse.
    pub fn give_back(&self, frames: &mut Vec<Vec<u8>>) {
        self.lock().spare.append(frames);
    }

    /// Puts a frame back at the head of the queue, whatever the high-water mark (it was
    /// accepted once already: a departed peer's unacknowledged frame, say).
    pub fn push_front(&self, frame: Vec<u8>) {
        let mut st = self.lock();
        st.frames.push_front(frame);
        let wake = st.empty_waiters > 0;
        drop(st);
        if wake {
            self.not_empty.notify_one();
        }
    }

    /// Queues a copy of `frame` if there is room now; `false` if the queue is full (or
    /// closed).
    pub fn try_push(&self, frame: &[u8]) -> bool {
        let st = self.lock();
        if st.closed || st.frames.len() >= self.hwm {
            return false;
        }
        self.enqueue(st, frame, false);
        true
    }

    /// Queues a copy of `frame` ahead of every frame waiting, whatever the high-water mark
    /// (a control frame, such as a poison pill, that must not wait behind the work).
    pub fn push_first(&self, frame: &[u8]) -> Result<(), OutboxError> {
        let st = self.lock();
        if st.closed {
            return Err(OutboxError::Closed);
        }
        self.enqueue(st, frame, true);
        Ok(())
    }

    /// Queues a copy of `frame` (in a reused buffer), at the back or, `first`, at the
    /// front, and wakes the drain.
    fn enqueue(&self, mut st: MutexGuard<'_, State>, frame: &[u8], first: bool) {
        let mut buf = st.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(frame);
        if first {
            st.frames.push_front(buf);
        } else {
            st.frames.push_back(buf);
        }
        st.counts.accepted += 1;
        let wake = st.empty_waiters > 0 && (!st.lingering || st.frames.len() >= self.wake_at);
        drop(st);
        if wake {
            self.not_empty.notify_one();
        }
    }

    /// Waits until a frame is queued, the outbox is closed or `timeout` has passed (the
    /// clock is read only if it has to wait); the guard, and whether a frame is there.
    fn wait_for_frame<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        timeout: Duration,
    ) -> (MutexGuard<'a, State>, bool) {
        let mut end: Option<Instant> = None;
        loop {
            if !st.frames.is_empty() {
                return (st, true);
            }
            let end = *end.get_or_insert_with(|| Instant::now() + timeout);
            let left = end.saturating_duration_since(Instant::now());
            if st.closed || left.is_zero() {
                return (st, false);
            }
            st = self.wait(st, Waiting::Frame, left);
        }
    }

    /// Waits at most `timeout` until a frame is queued (or the outbox is closed); `true`
    /// if one is.
    pub fn wait_frame(&self, timeout: Duration) -> bool {
        self.wait_for_frame(self.lock(), timeout).1
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.lock().frames.is_empty()
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
    fn a_frame_pushed_first_goes_ahead_of_a_full_queue() {
        let o = Outbox::new(
            2,
            FullPolicy::Block {
                timeout: Duration::from_millis(1),
            },
        );
        o.push(b"a").unwrap();
        o.push(b"b").unwrap();
        o.push_first(b"pill").unwrap();
        let mut buf = Vec::new();
        for want in [&b"pill"[..], b"a", b"b"] {
            assert!(o.take(&mut buf, Duration::ZERO));
            assert_eq!(buf, want);
        }
        assert_eq!(o.counts().accepted, 3);
        o.close();
        assert_eq!(o.push_first(b"late"), Err(OutboxError::Closed));
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
    fn a_lingering_drain_gathers_its_batch_or_takes_what_is_there_at_its_bound() {
        let o = Arc::new(Outbox::batched(100, FullPolicy::default(), 4));
        // Nothing queued and nobody pushing: the linger ends at its bound, empty.
        o.linger(4, Duration::from_millis(5));
        let mut got = Vec::new();
        o.take_batch(&mut got, 4, usize::MAX);
        assert!(got.is_empty());
        // One frame only: taken at the bound.
        o.push(b"a").unwrap();
        o.linger(4, Duration::from_millis(5));
        o.take_batch(&mut got, 4, usize::MAX);
        assert_eq!(got, vec![b"a".to_vec()]);
        o.give_back(&mut got);
        // Four frames pushed by another thread: the linger ends with the batch whole
        // (long before its bound), and the batch comes out in order.
        let o2 = o.clone();
        let pusher = std::thread::spawn(move || {
            for i in 0..4u8 {
                std::thread::sleep(Duration::from_millis(2));
                o2.push(&[i]).unwrap();
            }
        });
        o.linger(4, Duration::from_secs(30));
        pusher.join().unwrap();
        o.take_batch(&mut got, 16, usize::MAX);
        assert_eq!(got, (0..4u8).map(|i| vec![i]).collect::<Vec<_>>());
        // A byte bound cuts a batch, but never below one frame.
        o.give_back(&mut got);
        o.push(&[9u8; 10]).unwrap();
        o.push(&[8u8; 10]).unwrap();
        o.take_batch(&mut got, 16, 5);
        assert_eq!(got.len(), 1);
        assert_eq!(o.counts().taken, 6);
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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use crate::{RecvError, Rx, SetupError, TryRecvError, Tx};

/// Control byte: one more frame, please.
const CREDIT: u8 = b'C';
/// Control byte: done with the oldest unacknowledged frame.
const ACK: u8 = b'K';
/// A control frame carries at most this many bytes.
const MAX_CONTROL: usize = 64;

/// A peer of a [`Push`], as [`Push::add_peer`] named it.
pub type PeerId = u64;

/// Options of a [`Push`] socket.
#[derive(Debug, Clone, Copy)]
pub struct PushOptions {
    /// Most frames queued (the high-water mark; the original's: 1000).
    pub hwm: usize,
    /// What a send does when the queue is full.
    pub policy: FullPolicy,
    /// Keep each frame until its peer acknowledges it, and give a departed peer's
    /// unacknowledged frames to the others.
    pub reliable: bool,
    /// With a fixed set of peers ([`Push::new`]): once all are gone, what is queued is
    /// undeliverable and sends fail. Otherwise frames wait for the next peer to join.
    pub fixed: bool,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            hwm: 1000,
            policy: FullPolicy::default(),
            reliable: false,
            fixed: false,
        }
    }
}

/// What a [`Push`] has counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushCounts {
    /// Frames accepted by `send`.
    pub accepted: u64,
    /// Frames given up by the full-queue policy.
    pub dropped: u64,
    /// Frames handed to a peer's transport (a redelivered frame counts again).
    pub delivered: u64,
    /// Frames owed by a departed peer and queued again (`reliable` only).
    pub redelivered: u64,
    /// Frames lost because no peer was left to take them (fixed peer sets, or at
    /// [`Push::finish`]).
    pub undeliverable: u64,
    /// Frames still queued.
    pub queued: u64,
}

#[derive(Debug, Default)]
struct PushShared {
    /// Frames delivered to each peer, by id.
    per_peer: Mutex<HashMap<PeerId, u64>>,
    delivered: AtomicU64,
    redelivered: AtomicU64,
    undeliverable: AtomicU64,
    live_peers: AtomicU64,
    /// Peers holding at least one credit (free for a frame).
    free_peers: AtomicU64,
    /// The drain holds a frame no peer has asked for yet.
    holding: AtomicBool,
    /// Frames owed by peers (sent, not acknowledged; `reliable` only).
    owed: AtomicU64,
    /// The peer the latest frame went to (`u64::MAX`: none yet).
    last_peer: AtomicU64,
}

enum Command<T, R> {
    Add(PeerId, T, R),
    Gone(PeerId),
}

/// A PUSH socket: `send` queues a frame (the outbox's policy applies when it is full) and
/// returns; a drain thread hands each frame to a peer that has asked for one (a PULL peer
/// sends a credit whenever it is ready for the next frame), so a free peer is served
/// first, not blindly in turn. A peer whose connection ends, or that the owner reports
/// gone ([`Push::peer_gone`]), leaves the set; with `reliable` its unacknowledged frames
/// go to the others.
pub struct Push<T: Tx + Send + 'static, R: Rx + Send + 'static> {
    outbox: Arc<Outbox>,
    shared: Arc<PushShared>,
    commands: mpsc::Sender<Command<T, R>>,
    next_id: PeerId,
    drain: Option<std::thread::JoinHandle<()>>,
}

impl<T: Tx + Send + 'static, R: Rx + Send + 'static> std::fmt::Debug for Push<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Push")
            .field("counts", &self.counts())
            .finish()
    }
}

impl<T: Tx + Send + 'static, R: Rx + Send + 'static> Push<T, R> {
    /// A PUSH socket over a fixed set of `peers` (each a connection: frames go out on its
    /// `Tx`, credits come back on its `Rx`); peer ids are their indices.
    pub fn new(peers: Vec<(T, R)>, hwm: usize, policy: FullPolicy) -> Push<T, R> {
        let mut push = Push::open(PushOptions {
            hwm,
            policy,
            reliable: false,
            fixed: true,
        });
        for (t, r) in peers {
            push.add_peer(t, r);
        }
        push
    }

    /// A PUSH socket with no peers yet.
    pub fn open(opts: PushOptions) -> Push<T, R> {
        let outbox = Arc::new(Outbox::new(opts.hwm, opts.policy));
        let shared = Arc::new(PushShared {
            last_peer: AtomicU64::new(u64::MAX),
            ..Default::default()
        });
        let (commands, inbox) = mpsc::channel();
        let (o, s) = (outbox.clone(), shared.clone());
        let drain = std::thread::spawn(move || {
            Drain {
                peers: Vec::new(),
                next: 0,
                outbox: &o,
                shared: &s,
                opts,
                inbox,
                ever_had_peers: false,
            }
            .run()
        });
        Push {
            outbox,
            shared,
            commands,
            next_id: 0,
            drain: Some(drain),
        }
    }

    /// Adds a peer; frames go to it once it asks for them.
    pub fn add_peer(&mut self, tx: T, rx: R) -> PeerId {
        let id = self.next_id;
        self.next_id += 1;
        self.shared.live_peers.fetch_add(1, Ordering::Relaxed);
        // The drain lives as long as `self`: the channel cannot be closed here.
        let _ = self.commands.send(Command::Add(id, tx, rx));
        id
    }

    /// Reports a peer gone (its process died, say, where its transport cannot tell).
    pub fn peer_gone(&self, id: PeerId) {
        let _ = self.commands.send(Command::Gone(id));
    }

    /// Queues `frame` for the next free peer.
    pub fn send(&self, frame: &[u8]) -> Result<(), OutboxError> {
        self.outbox.push(frame)
    }

    /// Queues `frame` ahead of every frame waiting, for the next free peer, whatever the
    /// high-water mark (see [`Outbox::push_first`]).
    pub fn send_first(&self, frame: &[u8]) -> Result<(), OutboxError> {
        self.outbox.push_first(frame)
    }

    /// Frames delivered to each peer so far, by peer id.
    pub fn delivered(&self) -> Vec<u64> {
        let map = self
            .shared
            .per_peer
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let n = map.keys().max().map_or(0, |m| *m + 1);
        (0..n).map(|i| map.get(&i).copied().unwrap_or(0)).collect()
    }

    /// Everything counted so far.
    pub fn counts(&self) -> PushCounts {
        let o = self.outbox.counts();
        PushCounts {
            accepted: o.accepted,
            dropped: o.dropped,
            delivered: self.shared.delivered.load(Ordering::Relaxed),
            redelivered: self.shared.redelivered.load(Ordering::Relaxed),
            undeliverable: self.shared.undeliverable.load(Ordering::Relaxed),
            queued: o.queued,
        }
    }

    /// Peers still connected.
    pub fn live_peers(&self) -> u64 {
        self.shared.live_peers.load(Ordering::Relaxed)
    }

    /// Peers that have asked for a frame and not been sent one yet.
    pub fn free_peers(&self) -> u64 {
        self.shared.free_peers.load(Ordering::Relaxed)
    }

    /// Frames waiting for a free peer (queued, or held by the drain).
    pub fn backlog(&self) -> u64 {
        self.outbox.counts().queued + u64::from(self.shared.holding.load(Ordering::Relaxed))
    }

    /// The peer the latest frame was delivered to.
    pub fn last_peer(&self) -> Option<PeerId> {
        Some(self.shared.last_peer.load(Ordering::Relaxed)).filter(|p| *p != u64::MAX)
    }

    /// Frames sent and not acknowledged yet (`reliable` only).
    pub fn owed(&self) -> u64 {
        self.shared.owed.load(Ordering::Relaxed)
    }

    /// Waits at most `timeout` until every queued frame is handed to a peer; `true` if
    /// that happened.
    pub fn flush(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        let mut pause = Duration::from_micros(5);
        loop {
            if self.backlog() == 0 {
                return true;
            }
            if Instant::now() >= end || (self.outbox_closed() && self.live_peers() == 0) {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }

    fn outbox_closed(&self) -> bool {
        self.outbox.lock().closed
    }

    /// Delivers everything queued (waiting at most `timeout`), then stops the drain
    /// thread; what is left is counted undeliverable. `true` if the queue emptied.
    pub fn finish(&mut self, timeout: Duration) -> bool {
        let emptied = self.flush(timeout);
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

impl<T: Tx + Send + 'static, R: Rx + Send + 'static> Drop for Push<T, R> {
    fn drop(&mut self) {
        self.stop();
    }
}

struct PushPeer<T, R> {
    id: PeerId,
    tx: T,
    rx: R,
    credit: u32,
    /// Frames sent and not acknowledged (`reliable` only), oldest first.
    owed: VecDeque<Vec<u8>>,
}

/// The drain thread's state.
struct Drain<'a, T, R> {
    peers: Vec<PushPeer<T, R>>,
    next: usize,
    outbox: &'a Outbox,
    shared: &'a PushShared,
    opts: PushOptions,
    inbox: mpsc::Receiver<Command<T, R>>,
    ever_had_peers: bool,
}

impl<T: Tx, R: Rx> Drain<'_, T, R> {
    fn run(mut self) {
        let mut frame: Option<Vec<u8>> = None;
        let mut spare = Vec::new();
        let mut idle = 0u32;
        loop {
            self.commands();
            self.collect();
            if self.opts.fixed && self.ever_had_peers && self.peers.is_empty() {
                // Nobody left to take anything: what is held and queued is lost, counted.
                let mut lost = u64::from(frame.is_some());
                self.outbox.close();
                while self.outbox.take(&mut spare, Duration::ZERO) {
                    lost += 1;
                }
                self.shared.holding.store(false, Ordering::Relaxed);
                self.shared.undeliverable.fetch_add(lost, Ordering::Relaxed);
                return;
            }
            if frame.is_none() {
                let mut buf = std::mem::take(&mut spare);
                // Wait briefly for a frame, then go round to read credits again.
                if self.outbox.take(&mut buf, Duration::from_millis(2)) {
                    frame = Some(buf);
                    idle = 0;
                } else {
                    spare = buf;
                    if self.outbox_closed() {
                        self.shared
                            .undeliverable
                            .fetch_add(self.outbox.counts().queued, Ordering::Relaxed);
                        return;
                    }
                    continue;
                }
            }
            if let Some(f) = frame.take() {
                match self.deliver(f) {
                    Ok(buf) => {
                        spare = buf;
                        idle = 0;
                        self.shared.holding.store(false, Ordering::Relaxed);
                    }
                    Err(f) => {
                        frame = Some(f);
                        self.shared.holding.store(true, Ordering::Relaxed);
                        if self.outbox_closed() {
                            let queued = self.outbox.counts().queued;
                            self.shared
                                .undeliverable
                                .fetch_add(queued + 1, Ordering::Relaxed);
                            self.shared.holding.store(false, Ordering::Relaxed);
                            return;
                        }
                        // No peer is free: poll for credits quickly at first, then every
                        // 50 µs, and after about 0.1 s of waiting every millisecond (a
                        // gateway whose workers are all busy costs next to no CPU).
                        idle = idle.saturating_add(1);
                        if idle < 64 {
                            std::thread::yield_now();
                        } else {
                            std::thread::sleep(Duration::from_micros(if idle < 2048 {
                                50
                            } else {
                                1000
                            }));
                        }
                    }
                }
            }
        }
    }

    fn outbox_closed(&self) -> bool {
        self.outbox.lock().closed
    }

    fn commands(&mut self) {
        while let Ok(c) = self.inbox.try_recv() {
            match c {
                Command::Add(id, tx, rx) => {
                    self.ever_had_peers = true;
                    self.peers.push(PushPeer {
                        id,
                        tx,
                        rx,
                        credit: 0,
                        owed: VecDeque::new(),
                    });
                }
                Command::Gone(id) => {
                    if let Some(i) = self.peers.iter().position(|p| p.id == id) {
                        // What it said before it went (its last acknowledgement, say)
                        // still counts; then it goes, whatever its transport can tell.
                        self.collect_one(i);
                        self.remove(i);
                    }
                }
            }
        }
    }

    /// Takes peer `i` out of the set; with `reliable`, what it owed is queued again.
    fn remove(&mut self, i: usize) {
        let p = self.peers.swap_remove(i);
        self.shared.live_peers.fetch_sub(1, Ordering::Relaxed);
        let owed = p.owed.len() as u64;
        if owed > 0 {
            self.shared.owed.fetch_sub(owed, Ordering::Relaxed);
            self.shared.redelivered.fetch_add(owed, Ordering::Relaxed);
            // Oldest first at the head of the queue.
            for f in p.owed.into_iter().rev() {
                self.outbox.push_front(f);
            }
        }
        self.update_free();
    }

    fn update_free(&self) {
        let free = self.peers.iter().filter(|p| p.credit > 0).count();
        self.shared.free_peers.store(free as u64, Ordering::Relaxed);
    }

    /// Reads every control frame waiting on every peer; a peer whose connection ended or
    /// that sent something else is removed.
    fn collect(&mut self) {
        let mut i = 0;
        while i < self.peers.len() {
            if self.collect_one(i) {
                self.remove(i);
            } else {
                i += 1;
            }
        }
        self.update_free();
    }

    /// Reads the control frames waiting on peer `i`; `true` if it is broken or gone.
    fn collect_one(&mut self, i: usize) -> bool {
        let mut probe = [0u8; MAX_CONTROL];
        let p = &mut self.peers[i];
        loop {
            match p.rx.try_recv(&mut probe) {
                Ok(0) => return true,
                Ok(n) => {
                    for &b in &probe[..n] {
                        match b {
                            CREDIT => p.credit = p.credit.saturating_add(1),
                            ACK if self.opts.reliable => {
                                if p.owed.pop_front().is_some() {
                                    self.shared.owed.fetch_sub(1, Ordering::Relaxed);
                                }
                            }
                            ACK => {}
                            _ => return true,
                        }
                    }
                }
                Err(TryRecvError::Empty) => return false,
                Err(_) => return true,
            }
        }
    }

    /// Sends `frame` to the first free peer after the last one served; gives the frame
    /// back if no peer is free, or the emptied buffer once it went out.
    fn deliver(&mut self, frame: Vec<u8>) -> Result<Vec<u8>, Vec<u8>> {
        loop {
            let n = self.peers.len();
            let Some(i) = (0..n)
                .map(|k| (self.next + k) % n.max(1))
                .find(|&i| self.peers[i].credit > 0)
            else {
                return Err(frame);
            };
            let p = &mut self.peers[i];
            match p.tx.send(&frame) {
                Ok(()) => {
                    p.credit -= 1;
                    let id = p.id;
                    self.next = i + 1;
                    self.shared.last_peer.store(id, Ordering::Relaxed);
                    self.shared.delivered.fetch_add(1, Ordering::Relaxed);
                    *self
                        .shared
                        .per_peer
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(id)
                        .or_default() += 1;
                    let spare = if self.opts.reliable {
                        self.peers[i].owed.push_back(frame);
                        self.shared.owed.fetch_add(1, Ordering::Relaxed);
                        Vec::new()
                    } else {
                        frame
                    };
                    self.update_free();
                    return Ok(spare);
                }
                Err(_) => {
                    // Gone between its credit and our send: try another peer.
                    self.remove(i);
                }
            }
        }
    }
}

/// When a [`Pull`] asks its peers for more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// On receipt of each frame: acknowledge it and ask for one more.
    OnReceipt,
    /// When the caller says so ([`Pull::done`]): a free worker asks for the next frame
    /// only once it has finished the last one.
    Manual,
}

struct PullPeer<T, R> {
    tx: T,
    rx: R,
    alive: bool,
}

/// A PULL socket: receives from any number of PUSH peers, fair-queued (the peers are
/// polled in turn, starting after the one served last), and asks each peer for more
/// with credits: `window` at first, then one per frame taken (or per [`Pull::done`]).
pub struct Pull<T: Tx, R: Rx> {
    peers: Vec<PullPeer<T, R>>,
    next: usize,
    window: u32,
    mode: AckMode,
    /// The peer the last frame came from.
    last: Option<usize>,
}

impl<T: Tx, R: Rx> std::fmt::Debug for Pull<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pull")
            .field("peers", &self.peers.len())
            .field("live", &self.live_peers())
            .finish()
    }
}

impl<T: Tx, R: Rx> Pull<T, R> {
    /// A PULL socket over `peers`; each is sent `window` credits at once (1: take one
    /// frame at a time, first-free); frames are acknowledged on receipt.
    pub fn new(peers: Vec<(T, R)>, window: u32) -> Pull<T, R> {
        let mut pull = Pull::open(window, AckMode::OnReceipt);
        for (t, r) in peers {
            pull.add_peer(t, r);
        }
        pull
    }

    /// A PULL socket over `peers` taking one frame at a time from each and asking for the
    /// next only when the caller is [`Pull::done`] with it (a first-free worker).
    pub fn new_manual(peers: Vec<(T, R)>) -> Pull<T, R> {
        let mut pull = Pull::open(1, AckMode::Manual);
        for (t, r) in peers {
            pull.add_peer(t, r);
        }
        pull
    }

    /// A PULL socket with no peers yet.
    pub fn open(window: u32, mode: AckMode) -> Pull<T, R> {
        Pull {
            peers: Vec::new(),
            next: 0,
            window: window.max(1),
            mode,
            last: None,
        }
    }

    /// Adds a peer and asks it for `window` frames; its index.
    pub fn add_peer(&mut self, mut tx: T, rx: R) -> usize {
        let credits = [CREDIT; MAX_CONTROL];
        let mut left = self.window as usize;
        let mut alive = true;
        while left > 0 && alive {
            let n = left.min(MAX_CONTROL);
            alive = tx.send(&credits[..n]).is_ok();
            left -= n;
        }
        self.peers.push(PullPeer { tx, rx, alive });
        self.peers.len() - 1
    }

    /// Peers still connected.
    pub fn live_peers(&self) -> usize {
        self.peers.iter().filter(|p| p.alive).count()
    }

    /// Stops reading from peer `i` (its process is known to be gone).
    pub fn peer_gone(&mut self, i: usize) {
        if let Some(p) = self.peers.get_mut(i) {
            p.alive = false;
        }
    }

    /// With [`AckMode::Manual`]: acknowledges the last frame received and, if `more`,
    /// asks its peer for another.
    pub fn done(&mut self, more: bool) -> Result<(), crate::SendError> {
        let Some(i) = self.last.take() else {
            return Ok(());
        };
        let p = &mut self.peers[i];
        let r = p.tx.send(if more { b"KC" } else { b"K" });
        if r.is_err() {
            p.alive = false;
        }
        r
    }

    /// Receives the next frame from any peer into `buf`, waiting at most `timeout`.
    /// `Disconnected` once every peer that joined is gone.
    pub fn recv_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, PullError> {
        // The clock is read only once a first pass found nothing.
        let mut end: Option<Instant> = None;
        let mut idle = 0u32;
        loop {
            let n = self.peers.len();
            for k in 0..n {
                let i = (self.next + k) % n;
                let p = &mut self.peers[i];
                if !p.alive {
                    continue;
                }
                match p.rx.try_recv(buf) {
                    Ok(len) => {
                        if self.mode == AckMode::OnReceipt && p.tx.send(b"KC").is_err() {
                            p.alive = false;
                        }
                        self.next = i + 1;
                        self.last = Some(i);
                        return Ok(len);
                    }
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Recv(RecvError::Truncated { needed })) => {
                        return Err(PullError::Truncated { needed })
                    }
                    Err(TryRecvError::Recv(_)) => p.alive = false,
                }
            }
            if n > 0 && self.live_peers() == 0 {
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

/// Listening endpoints that peers connect to when they like, one peer each (slot `k` is
/// for the `k`-th peer its owner starts).
pub struct Acceptor<X: crate::Transport> {
    slots: Vec<Option<X::Listener>>,
    resolved: Vec<crate::Endpoint>,
}

impl<X: crate::Transport> std::fmt::Debug for Acceptor<X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("slots", &self.slots.len())
            .field("waiting", &self.waiting())
            .finish()
    }
}

impl<X: crate::Transport> Acceptor<X> {
    /// Listens on every endpoint.
    pub fn listen(endpoints: &[crate::Endpoint]) -> Result<Acceptor<X>, SetupError> {
        let slots = endpoints
            .iter()
            .map(|e| X::listen(e).map(Some))
            .collect::<Result<Vec<_>, _>>()?;
        let resolved = slots.iter().flatten().map(X::resolved).collect();
        Ok(Acceptor { slots, resolved })
    }

    /// The endpoints peers must connect to, slot by slot.
    pub fn resolved(&self) -> &[crate::Endpoint] {
        &self.resolved
    }

    /// Slots no peer has taken yet.
    pub fn waiting(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// The connections completed since the last call, with their slots; never waits for
    /// a peer that has not arrived (a handshake is bounded by `timeout`).
    #[allow(clippy::type_complexity)]
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<(usize, X::Tx, X::Rx)>, SetupError> {
        self.poll_slots(0..self.slots.len(), timeout)
    }

    /// [`Acceptor::poll`] on the given slots only (those whose peer is known to be on its
    /// way): an empty slot costs a system call per look on the socket transports.
    #[allow(clippy::type_complexity)]
    pub fn poll_slots(
        &mut self,
        slots: impl IntoIterator<Item = usize>,
        timeout: Duration,
    ) -> Result<Vec<(usize, X::Tx, X::Rx)>, SetupError> {
        let mut out = Vec::new();
        for k in self.ready(slots)? {
            let Some(slot) = self.slots.get_mut(k) else {
                continue;
            };
            let Some(l) = slot.take() else { continue };
            match X::try_accept(l, timeout)? {
                Ok((tx, rx)) => out.push((k, tx, rx)),
                Err(l) => *slot = Some(l),
            }
        }
        Ok(out)
    }

    /// Of `slots`, those still listening where `try_accept` may get further: one `poll`
    /// over the listeners that have a descriptor (a client watching 64 slots every
    /// millisecond made 64 `accept` calls each time), every one that has none.
    fn ready(&self, slots: impl IntoIterator<Item = usize>) -> Result<Vec<usize>, SetupError> {
        use nix::poll::{PollFd, PollFlags, PollTimeout};
        // Each listening slot, with its place among the descriptors if it has one.
        let mut looked: Vec<(usize, Option<usize>)> = Vec::new();
        let mut fds = Vec::new();
        for k in slots {
            let Some(Some(l)) = self.slots.get(k) else {
                continue;
            };
            let at = X::accept_fd(l).map(|fd| {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
                fds.len() - 1
            });
            looked.push((k, at));
        }
        if !fds.is_empty() {
            loop {
                match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
                    Ok(_) => break,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(SetupError::io("poll", "the listening endpoints", e)),
                }
            }
        }
        Ok(looked
            .into_iter()
            .filter(|(_, at)| match at {
                // Readable, hung up or in error: either way `try_accept` has news.
                Some(i) => fds
                    .get(*i)
                    .and_then(PollFd::revents)
                    .is_some_and(|r| !r.is_empty()),
                None => true,
            })
            .map(|(k, _)| k)
            .collect())
    }
}

// ---- the point-to-point form: a Transport -----------------------------------------------

/// The sending half of the point-to-point `queue`: one PUSH to one PULL over an underlying
/// transport's half `T`. `send` hands the frame straight to the transport when nothing is
/// queued and the transport can take it at once (the fast path: no thread hop, no copy
/// into the queue); otherwise the frame is queued (up to the high-water mark, then the
/// policy applies) and a drain thread sends it, in order. Flow control is the underlying
/// transport's (a full socket buffer or ring), so no credits travel back: the receiving
/// half is the underlying transport's own.
pub struct QueueTx<T: Tx + Send + 'static> {
    shared: Arc<QueueShared<T>>,
    drain: Option<std::thread::JoinHandle<()>>,
    max_frame: usize,
    /// Frames the drain writes per system call; above 1 every frame is queued (no fast
    /// path), as libzmq queues every message for its I/O thread.
    batch: usize,
}

struct QueueShared<T> {
    /// The underlying half; the drain holds it while it sends one queued frame, so the
    /// fast path never overtakes a queued frame.
    tx: Mutex<T>,
    outbox: Outbox,
    /// Why the drain stopped (the peer left, say): every later send reports it.
    /// (Set once; reading it on every send is one atomic load.)
    failed: std::sync::OnceLock<crate::SendError>,
    /// Frames the drain could not send after a failure.
    undeliverable: AtomicU64,
}

impl<T: Tx + Send + 'static> std::fmt::Debug for QueueTx<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueTx")
            .field("counts", &self.shared.outbox.counts())
            .finish()
    }
}

impl<T: Tx + Send + 'static> QueueTx<T> {
    /// Wraps `tx` with a queue of `hwm` frames and `policy`; each send goes straight to
    /// `tx` when nothing is queued.
    pub fn new(tx: T, hwm: usize, policy: FullPolicy) -> QueueTx<T> {
        QueueTx::batched(tx, hwm, policy, 1)
    }

    /// [`QueueTx::new`], writing up to `batch` queued frames per system call; with
    /// `batch` above 1 every frame is queued and the drain thread writes them (at most
    /// [`BATCH_BYTES`] at a time), waiting up to [`BATCH_LINGER`] for a batch to fill
    /// (Nagle's trade: a lone frame waits that long, a stream goes out in batches).
    pub fn batched(tx: T, hwm: usize, policy: FullPolicy, batch: usize) -> QueueTx<T> {
        let batch = batch.max(1);
        let max_frame = tx.max_frame_len();
        let shared = Arc::new(QueueShared {
            tx: Mutex::new(tx),
            outbox: Outbox::batched(hwm, policy, batch),
            failed: std::sync::OnceLock::new(),
            undeliverable: AtomicU64::new(0),
        });
        let s = shared.clone();
        let drain = std::thread::spawn(move || s.drain(batch));
        QueueTx {
            shared,
            drain: Some(drain),
            max_frame,
            batch,
        }
    }

    /// The outbox's counts and the frames lost after the transport failed.
    pub fn counts(&self) -> (OutboxCounts, u64) {
        (
            self.shared.outbox.counts(),
            self.shared.undeliverable.load(Ordering::Relaxed),
        )
    }

    /// The underlying half, locked (for diagnostics and tests).
    pub fn inner(&self) -> MutexGuard<'_, T> {
        self.shared.lock_tx()
    }

    fn failure(&self) -> Option<crate::SendError> {
        self.shared.failed.get().copied()
    }

    /// The fast path: `Some` if the frame went straight out (or the transport failed).
    /// With `whole`, a tail the transport held back is sent before returning (`send`);
    /// without, it waits for the next call or `flush`, as `Tx::try_send` allows.
    fn direct(&self, frame: &[u8], whole: bool) -> Option<Result<(), crate::SendError>> {
        if self.batch > 1 {
            return None;
        }
        let mut tx = self.shared.tx.try_lock().ok()?;
        if !self.shared.outbox.is_empty() {
            return None;
        }
        match tx.try_send(frame) {
            // A stream transport may have taken only part of the frame and hold the tail
            // (see `Tx::try_send`). For `send` that tail must not wait for a later call,
            // which may never come (the caller may now wait for an answer): it goes out
            // now, blocking as the transport's own `send` would (nothing held: no system
            // call).
            Ok(()) if whole => Some(tx.flush()),
            Ok(()) => Some(Ok(())),
            Err(crate::TrySendError::Full) => None,
            Err(crate::TrySendError::Send(e)) => Some(Err(e)),
        }
    }

    fn check(&self, frame: &[u8]) -> Result<(), crate::SendError> {
        if frame.len() > self.max_frame {
            return Err(crate::SendError::FrameTooLarge {
                len: frame.len(),
                max: self.max_frame,
            });
        }
        match self.failure() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl<T: Tx + Send + 'static> QueueShared<T> {
    fn lock_tx(&self) -> MutexGuard<'_, T> {
        self.tx.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn drain(&self, batch: usize) {
        let mut frames: Vec<Vec<u8>> = Vec::with_capacity(batch);
        let mut frame = Vec::new();
        loop {
            if !self.outbox.wait_frame(Duration::from_millis(100)) {
                if self.outbox.lock().closed {
                    return;
                }
                continue;
            }
            if batch > 1 {
                // Gather a batch: the frames already queued, more up to BATCH_LINGER.
                self.outbox.linger(batch, BATCH_LINGER);
            }
            let mut tx = self.lock_tx();
            self.outbox.take_batch(&mut frames, batch, BATCH_BYTES);
            let sent = match frames.len() {
                0 => continue,
                1 => tx.send(&frames[0]),
                _ => {
                    let parts: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
                    tx.send_batch(&parts)
                }
            };
            let taken = frames.len() as u64;
            self.outbox.give_back(&mut frames);
            if let Err(e) = sent {
                // Nothing more can go out: say why at the next send, count what is lost
                // (the whole batch: part of it may have left, none of it is known to).
                let _ = self.failed.set(e);
                self.outbox.close();
                let mut lost = taken;
                while self.outbox.take(&mut frame, Duration::ZERO) {
                    lost += 1;
                }
                self.undeliverable.fetch_add(lost, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// The most bytes of frames the drain writes with one system call.
pub const BATCH_BYTES: usize = 64 << 10;

/// How long a batching drain waits for its batch to fill before it writes what it has:
/// the most a lone frame waits in a queue with `queue_batch` above 1.
pub const BATCH_LINGER: Duration = Duration::from_micros(100);

fn outbox_error(e: OutboxError, failed: Option<crate::SendError>) -> crate::SendError {
    match e {
        OutboxError::Dropped { dropped } => crate::SendError::Dropped { dropped },
        OutboxError::Closed => failed.unwrap_or(crate::SendError::Disconnected),
    }
}

impl<T: Tx + Send + 'static> Tx for QueueTx<T> {
    fn send(&mut self, frame: &[u8]) -> Result<(), crate::SendError> {
        self.check(frame)?;
        if let Some(r) = self.direct(frame, true) {
            return r;
        }
        self.shared
            .outbox
            .push(frame)
            .map_err(|e| outbox_error(e, self.failure()))
    }

    fn try_send(&mut self, frame: &[u8]) -> Result<(), crate::TrySendError> {
        self.check(frame)?;
        if let Some(r) = self.direct(frame, false) {
            return r.map_err(crate::TrySendError::Send);
        }
        if self.shared.outbox.try_push(frame) {
            Ok(())
        } else if let Some(e) = self.failure() {
            Err(crate::TrySendError::Send(e))
        } else {
            Err(crate::TrySendError::Full)
        }
    }

    fn flush(&mut self) -> Result<(), crate::SendError> {
        let mut pause = Duration::from_micros(2);
        loop {
            self.check(&[])?;
            {
                let mut tx = self.shared.lock_tx();
                // With the half locked the drain holds no frame: empty means all sent.
                if self.shared.outbox.is_empty() {
                    return tx.flush();
                }
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }

    fn max_frame_len(&self) -> usize {
        self.max_frame
    }
}

impl<T: Tx + Send + 'static> Drop for QueueTx<T> {
    fn drop(&mut self) {
        // Queued frames still go out (ZeroMQ's linger), for a bounded time: a peer that
        // stopped reading cannot hold the process; the drain thread is then left behind.
        self.shared.outbox.close();
        if let Some(d) = self.drain.take() {
            let end = Instant::now() + Duration::from_secs(5);
            while !d.is_finished() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(1));
            }
            if d.is_finished() {
                let _ = d.join();
            }
        }
    }
}

/// The point-to-point `queue` transport over the transport `X`: [`QueueTx`] to `X`'s
/// receiving half. Its endpoint wraps `X`'s ([`crate::Endpoint::Queue`]).
#[derive(Debug, Clone, Copy)]
pub struct Queue<X>(std::marker::PhantomData<X>);

/// A `queue` endpoint's parts: the underlying endpoint, the high-water mark, policy and
/// batch.
fn queue_parts(
    endpoint: &crate::Endpoint,
) -> Result<(&crate::Endpoint, usize, FullPolicy, usize), SetupError> {
    match endpoint {
        crate::Endpoint::Queue {
            over,
            hwm,
            policy,
            batch,
        } => Ok((over, *hwm as usize, *policy, *batch as usize)),
        other => Err(SetupError::WrongKind {
            expected: crate::TransportKind::Queue,
            found: other.kind(),
        }),
    }
}

/// A listening `queue` endpoint.
#[derive(Debug)]
pub struct QueueListener<L> {
    inner: L,
    endpoint: crate::Endpoint,
}

impl<X: crate::Transport> crate::Transport for Queue<X>
where
    X::Listener: std::fmt::Debug,
{
    const KIND: crate::TransportKind = crate::TransportKind::Queue;
    type Tx = QueueTx<X::Tx>;
    type Rx = X::Rx;
    type Listener = QueueListener<X::Listener>;

    fn prepare(
        dir: &std::path::Path,
        opts: &crate::EndpointOptions,
    ) -> Result<crate::Endpoint, SetupError> {
        Ok(crate::Endpoint::Queue {
            over: Box::new(X::prepare(dir, opts)?),
            hwm: opts.hwm,
            policy: opts.policy,
            batch: opts.batch.max(1),
        })
    }

    fn listen(endpoint: &crate::Endpoint) -> Result<Self::Listener, SetupError> {
        let (over, ..) = queue_parts(endpoint)?;
        Ok(QueueListener {
            inner: X::listen(over)?,
            endpoint: endpoint.clone(),
        })
    }

    fn resolved(listener: &Self::Listener) -> crate::Endpoint {
        match &listener.endpoint {
            crate::Endpoint::Queue {
                hwm, policy, batch, ..
            } => crate::Endpoint::Queue {
                over: Box::new(X::resolved(&listener.inner)),
                hwm: *hwm,
                policy: *policy,
                batch: *batch,
            },
            other => other.clone(),
        }
    }

    fn accept(
        listener: Self::Listener,
        timeout: Duration,
    ) -> Result<(Self::Tx, Self::Rx), SetupError> {
        let (_, hwm, policy, batch) = queue_parts(&listener.endpoint)?;
        let (tx, rx) = X::accept(listener.inner, timeout)?;
        Ok((QueueTx::batched(tx, hwm, policy, batch), rx))
    }

    fn try_accept(
        listener: Self::Listener,
        timeout: Duration,
    ) -> Result<Result<(Self::Tx, Self::Rx), Self::Listener>, SetupError> {
        let (_, hwm, policy, batch) = queue_parts(&listener.endpoint)?;
        let endpoint = listener.endpoint;
        Ok(match X::try_accept(listener.inner, timeout)? {
            Ok((tx, rx)) => Ok((QueueTx::batched(tx, hwm, policy, batch), rx)),
            Err(inner) => Err(QueueListener { inner, endpoint }),
        })
    }

    fn connect(
        endpoint: &crate::Endpoint,
        timeout: Duration,
    ) -> Result<(Self::Tx, Self::Rx), SetupError> {
        let (over, hwm, policy, batch) = queue_parts(endpoint)?;
        let (tx, rx) = X::connect(over, timeout)?;
        Ok((QueueTx::batched(tx, hwm, policy, batch), rx))
    }
}
