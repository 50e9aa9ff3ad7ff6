//! `shm`: two lock-free SPSC rings ([`ipcbench_ring`]) in one shared segment under
//! /dev/shm, one per direction. The parent creates the segment (`O_EXCL`, mode 0600,
//! a unique name) and initialises both rings; each role maps it, claims its producer and
//! consumer sides with its pid, and waits for the peer to claim the others. A waiting
//! half checks about every millisecond that the peer's pid is alive, so a peer that
//! crashed (and never let go of its claim) is `Disconnected`, not a hang.
//!
//! Wait strategies: `spin` (busy-poll with a pause hint), `yield` (`sched_yield`
//! between polls) and `block` (spin for `spin_us`, then raise a waiter flag and sleep on
//! a futex on the peer's position word; the peer wakes it only when the flag is up). The
//! send and receive paths make no system call while the ring has room or data: the
//! liveness check runs only while waiting.
#![allow(unsafe_code)]

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipcbench_ring::{
    init, max_payload, region_len, Consumer, PopError, Producer, PushError, Region, LINE,
};

use crate::segment::Segment;
use crate::sys::{alive, futex_wait, futex_wake};
use crate::{
    Corruption, Endpoint, EndpointOptions, RecvError, RecvTimeoutError, SendError, SetupError,
    Transport, TransportKind, TryRecvError, TrySendError, WaitStrategy,
};

/// The longest frame an `shm` ring of `capacity` bytes carries.
pub fn shm_max_frame(capacity: usize) -> usize {
    max_payload(capacity)
}

/// Bytes one ring takes in the segment, rounded to whole 128-byte lines.
fn ring_bytes(capacity: usize) -> usize {
    region_len(capacity).div_ceil(LINE) * LINE
}

/// One ring's part of a shared segment.
#[derive(Debug, Clone)]
pub struct SegmentRegion {
    segment: Arc<Segment>,
    first_word: usize,
    words: usize,
}

// SAFETY: word `i` is the segment's word `first_word + i` (bounds-checked by slice
// indexing), byte offset `8 * i` of `raw()`; `write` and `read` copy through the same
// mapping, which lives as long as the Arc'd segment, and is page-aligned (so the
// 128-byte lines of the layout are real cache-line pairs: `first_word` is a multiple of 16).
unsafe impl Region for SegmentRegion {
    fn words(&self) -> usize {
        self.words
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.words, "ring word {i} out of its region");
        &self.segment.words()[self.first_word + i]
    }

    unsafe fn write(&self, at: usize, src: &[u8]) {
        // SAFETY: the caller keeps `at + src.len()` within this region, which lies within
        // the mapping; the ring protocol gives us these bytes alone, and another process
        // writing them anyway can only make us copy garbage, not access out of bounds.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                self.segment.base().add(self.first_word * 8 + at),
                src.len(),
            )
        }
    }

    unsafe fn read(&self, at: usize, dst: &mut [u8]) {
        // SAFETY: as in `write`: in bounds of this region of the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.segment.base().add(self.first_word * 8 + at),
                dst.as_mut_ptr(),
                dst.len(),
            )
        }
    }

    fn raw(&self) -> Option<NonNull<u8>> {
        // SAFETY: in bounds: `first_word` words fit the mapping.
        NonNull::new(unsafe { self.segment.base().add(self.first_word * 8) })
    }
}

/// Creates and initialises the segment for an `shm` endpoint (the parent's part).
pub(crate) fn prepare(opts: &EndpointOptions) -> Result<Endpoint, SetupError> {
    let capacity = opts.shm_capacity as usize;
    if !capacity.is_power_of_two()
        || !(ipcbench_ring::MIN_CAPACITY..=ipcbench_ring::MAX_CAPACITY).contains(&capacity)
    {
        return Err(SetupError::Invalid(format!(
            "shm capacity {capacity} is not a power of two in 64..=2^31"
        )));
    }
    if opts.max_frame as usize > max_payload(capacity) {
        return Err(SetupError::Invalid(format!(
            "max_frame {} does not fit an shm ring of {capacity} bytes (at most {})",
            opts.max_frame,
            max_payload(capacity)
        )));
    }
    let path: PathBuf = crate::names::shm_dir().join(crate::names::unique("shm"));
    // Allocated and mapped in full now (and by each role when it opens it), so no page
    // fault lands in a timed part: a 4 MiB ring's first lap otherwise takes one every
    // 57 records of 64 B, which set the p99.9 of a 64 B round trip at over 1 µs.
    let segment = Segment::create_with(&path, 2 * ring_bytes(capacity), true)?;
    let segment = Arc::new(segment);
    for ring in 0..2 {
        let region = region_of(&segment, ring, capacity);
        init(&region, capacity)
            .map_err(|e| SetupError::Invalid(format!("initialising {}: {e}", path.display())))?;
    }
    // The roles map it by name; the parent removes it with `Endpoint::cleanup`.
    match Arc::try_unwrap(segment) {
        Ok(s) => s.persist(),
        Err(_) => {
            return Err(SetupError::Invalid(
                "segment still shared after setup".into(),
            ))
        }
    }
    Ok(Endpoint::Shm {
        path,
        capacity: capacity as u32,
        max_frame: opts.max_frame,
        wait: opts.wait,
        spin_us: opts.spin_us,
    })
}

fn region_of(segment: &Arc<Segment>, ring: usize, capacity: usize) -> SegmentRegion {
    SegmentRegion {
        segment: segment.clone(),
        first_word: ring * ring_bytes(capacity) / 8,
        words: ring_bytes(capacity) / 8,
    }
}

/// Rate limit for the liveness check on the non-blocking paths: a caller polling
/// `try_send`/`try_recv` pays the `kill(pid, 0)` system call once per 1024 polls that
/// find the ring full or empty, not on every one. (Blocking waits check on their own
/// schedule, about every millisecond.)
#[derive(Debug, Default)]
struct TryPolls(u32);

impl TryPolls {
    fn due(&mut self) -> bool {
        self.0 = self.0.wrapping_add(1);
        self.0 % 1024 == 0
    }
}

/// How a half waits: the strategy and, for `block`, the spin budget before sleeping.
#[derive(Debug, Clone, Copy)]
struct Wait {
    strategy: WaitStrategy,
    budget: Duration,
}

/// What to do after one more failed attempt.
#[derive(Debug, PartialEq, Eq)]
enum Pause {
    /// Try again.
    Again,
    /// Try again, but look at the peer and the clock first (about every millisecond).
    Check,
    /// The spin budget is spent: raise the flag and sleep on the futex.
    Sleep,
}

/// Polls between attempts; says when to look at the clock and the peer, or to sleep.
struct Waiter {
    wait: Wait,
    polls: u32,
    spin_until: Option<Instant>,
}

impl Waiter {
    fn new(wait: Wait) -> Waiter {
        Waiter {
            wait,
            polls: 0,
            spin_until: None,
        }
    }

    fn pause(&mut self) -> Pause {
        self.polls = self.polls.wrapping_add(1);
        match self.wait.strategy {
            WaitStrategy::Spin => {
                std::hint::spin_loop();
                if self.polls % (1 << 14) == 0 {
                    Pause::Check
                } else {
                    Pause::Again
                }
            }
            WaitStrategy::Yield => {
                std::thread::yield_now();
                if self.polls % 256 == 0 {
                    Pause::Check
                } else {
                    Pause::Again
                }
            }
            WaitStrategy::Block => {
                // The clock is read once at the start and then every 64 polls.
                let until = *self
                    .spin_until
                    .get_or_insert_with(|| Instant::now() + self.wait.budget);
                if self.polls % 64 == 0 && Instant::now() >= until {
                    return Pause::Sleep;
                }
                std::hint::spin_loop();
                Pause::Again
            }
        }
    }
}

/// Longest single futex sleep: a dead peer or a deadline is noticed within it.
const SLEEP: Duration = Duration::from_millis(10);

/// Raises `flag` before one last look and a sleep.
///
/// SYNC: the SeqCst store and fence pair with the SeqCst fence the other side issues
/// between publishing and loading this flag (`wake_if_waiting`): either it sees the flag
/// and wakes us, or the look that follows this call sees what it published.
fn raise(flag: &AtomicU64) {
    flag.store(1, Ordering::SeqCst);
    fence(Ordering::SeqCst);
}

/// After publishing: wakes the peer if it raised its flag to sleep on `word`.
fn wake_if_waiting(flag: &AtomicU64, word: &AtomicU64) {
    // SYNC: pairs with the SeqCst store and fence in `raise_and_recheck`.
    fence(Ordering::SeqCst);
    if flag.load(Ordering::Relaxed) != 0 {
        futex_wake(word);
    }
}

/// The sending half of an `shm` endpoint.
#[derive(Debug)]
pub struct ShmTx {
    producer: Producer<SegmentRegion>,
    try_polls: TryPolls,
    wait: Wait,
    max_frame: usize,
}

/// The receiving half of an `shm` endpoint.
#[derive(Debug)]
pub struct ShmRx {
    consumer: Consumer<SegmentRegion>,
    try_polls: TryPolls,
    wait: Wait,
    max_frame: usize,
}

/// A peer whose claim says it is gone: `Disconnected`, unless the header the claim sits
/// in is no longer the ring's, and then the claim is garbage: `Corrupt`.
fn gone(header: Result<(), ipcbench_ring::Corruption>) -> SendError {
    match header {
        Ok(()) => SendError::Disconnected,
        Err(c) => SendError::Corrupt(Corruption::Ring(c)),
    }
}

fn push_error(e: PushError) -> SendError {
    match e {
        PushError::Full => SendError::Io(nix::errno::Errno::EAGAIN),
        PushError::TooLarge { len, max } => SendError::FrameTooLarge { len, max },
        PushError::Disconnected => SendError::Disconnected,
        PushError::Corrupt(c) => SendError::Corrupt(Corruption::Ring(c)),
    }
}

fn pop_error(e: PopError) -> RecvError {
    match e {
        PopError::Empty => RecvError::Io(nix::errno::Errno::EAGAIN),
        PopError::Truncated { needed } => RecvError::Truncated { needed },
        PopError::Disconnected => RecvError::Disconnected,
        PopError::Corrupt(c) => RecvError::Corrupt(Corruption::Ring(c)),
    }
}

impl ShmTx {
    /// Retries `attempt` until it is not `Full`, waiting as the strategy says; checks
    /// about every millisecond that the consumer is still alive.
    #[inline]
    fn push_with<T>(
        &mut self,
        len: usize,
        mut attempt: impl FnMut(&mut Producer<SegmentRegion>) -> Result<T, PushError>,
    ) -> Result<T, SendError> {
        if len > self.max_frame {
            return Err(SendError::FrameTooLarge {
                len,
                max: self.max_frame,
            });
        }
        let mut waiter = Waiter::new(self.wait);
        loop {
            let result = match attempt(&mut self.producer) {
                Err(PushError::Full) => match waiter.pause() {
                    Pause::Again => continue,
                    Pause::Check => Err(PushError::Full),
                    Pause::Sleep => {
                        let head = self.producer.head_word();
                        let seen = head.load(Ordering::Acquire) as u32;
                        raise(self.producer.waiting_flag());
                        let result = attempt(&mut self.producer);
                        if matches!(result, Err(PushError::Full)) {
                            futex_wait(self.producer.head_word(), seen, SLEEP);
                        }
                        self.producer.waiting_flag().store(0, Ordering::Relaxed);
                        result
                    }
                },
                other => other,
            };
            match result {
                Ok(t) => return Ok(t),
                Err(PushError::Full) => {
                    if !alive(self.producer.consumer_token()) {
                        return Err(gone(self.producer.check_header()));
                    }
                }
                Err(e) => return Err(push_error(e)),
            }
        }
    }
}

/// With `block`: wakes a consumer that sleeps waiting for data. Free otherwise.
#[inline]
fn after_push(producer: &Producer<SegmentRegion>, strategy: WaitStrategy) {
    if strategy == WaitStrategy::Block {
        wake_if_waiting(producer.peer_waiting_flag(), producer.tail_word());
    }
}

/// With `block`: wakes a producer that sleeps waiting for room, after publishing what
/// we read. Free otherwise.
#[inline]
fn after_pop(consumer: &mut Consumer<SegmentRegion>, strategy: WaitStrategy) {
    if strategy == WaitStrategy::Block {
        fence(Ordering::SeqCst);
        if consumer.peer_waiting_flag().load(Ordering::Relaxed) != 0 {
            consumer.publish();
            wake_if_waiting(consumer.peer_waiting_flag(), consumer.head_word());
        }
    }
}

impl crate::Tx for ShmTx {
    fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        self.push_with(frame.len(), |p| p.try_push(frame))?;
        after_push(&self.producer, self.wait.strategy);
        Ok(())
    }

    fn try_send(&mut self, frame: &[u8]) -> Result<(), TrySendError> {
        if frame.len() > self.max_frame {
            return Err(SendError::FrameTooLarge {
                len: frame.len(),
                max: self.max_frame,
            }
            .into());
        }
        match self.producer.try_push(frame) {
            Ok(()) => {
                after_push(&self.producer, self.wait.strategy);
                Ok(())
            }
            Err(PushError::Full)
                if self.try_polls.due() && !alive(self.producer.consumer_token()) =>
            {
                Err(gone(self.producer.check_header()).into())
            }
            Err(PushError::Full) => Err(TrySendError::Full),
            Err(e) => Err(push_error(e).into()),
        }
    }

    fn max_frame_len(&self) -> usize {
        self.max_frame
    }
}

/// A frame being written in place in the ring; see [`crate::TxLoan`].
#[derive(Debug)]
pub struct ShmLoan<'a> {
    loan: ipcbench_ring::Loan<'a, SegmentRegion>,
    strategy: WaitStrategy,
}

impl std::ops::Deref for ShmLoan<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // A segment region always lends its bytes (`SegmentRegion::raw` is `Some`).
        self.loan.as_slice().unwrap_or_default()
    }
}

impl std::ops::DerefMut for ShmLoan<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // A segment region always lends its bytes (`SegmentRegion::raw` is `Some`).
        self.loan.as_mut_slice().unwrap_or_default()
    }
}

impl crate::TxLoan for ShmLoan<'_> {
    fn commit(self) {
        let producer = self.loan.commit();
        after_push(producer, self.strategy);
    }
}

impl crate::LoanTx for ShmTx {
    type Loan<'a> = ShmLoan<'a>;

    fn loan(&mut self, len: usize) -> Result<ShmLoan<'_>, SendError> {
        self.push_with(len, |p| p.ready(len))?;
        let loan = self.producer.loan(len).map_err(push_error)?;
        Ok(ShmLoan {
            loan,
            strategy: self.wait.strategy,
        })
    }
}

impl ShmRx {
    /// Retries `attempt` until it is not `Empty`, waiting as the strategy says (or not at
    /// all: `wait = false`), until `deadline`; checks about every millisecond that the
    /// producer is alive, and reads what it published before it died.
    #[inline]
    fn pop_with<T>(
        &mut self,
        deadline: Option<Instant>,
        wait: bool,
        mut attempt: impl FnMut(&mut Consumer<SegmentRegion>) -> Result<T, PopError>,
    ) -> Result<T, RecvTimeoutError> {
        let mut waiter = Waiter::new(self.wait);
        loop {
            let result = match attempt(&mut self.consumer) {
                Err(PopError::Empty) if wait => match waiter.pause() {
                    Pause::Again => continue,
                    Pause::Check => Err(PopError::Empty),
                    Pause::Sleep => {
                        let tail = self.consumer.tail_word();
                        let seen = tail.load(Ordering::Acquire) as u32;
                        raise(self.consumer.waiting_flag());
                        let result = attempt(&mut self.consumer);
                        if matches!(result, Err(PopError::Empty)) {
                            let left = deadline.map_or(SLEEP, |d| {
                                d.saturating_duration_since(Instant::now()).min(SLEEP)
                            });
                            futex_wait(self.consumer.tail_word(), seen, left);
                        }
                        self.consumer.waiting_flag().store(0, Ordering::Relaxed);
                        result
                    }
                },
                other => other,
            };
            match result {
                Ok(t) => return Ok(t),
                Err(PopError::Empty) => {
                    if (wait || self.try_polls.due()) && !alive(self.consumer.producer_token()) {
                        // Whatever it published before dying is still ours to read.
                        return match attempt(&mut self.consumer) {
                            Ok(t) => Ok(t),
                            Err(PopError::Empty) => match self.consumer.check_header() {
                                Ok(()) => Err(RecvError::Disconnected.into()),
                                Err(c) => Err(RecvError::Corrupt(Corruption::Ring(c)).into()),
                            },
                            Err(e) => Err(pop_error(e).into()),
                        };
                    }
                    if !wait || deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(RecvTimeoutError::Timeout);
                    }
                }
                Err(e) => return Err(pop_error(e).into()),
            }
        }
    }

    #[inline]
    fn recv_until(
        &mut self,
        buf: &mut [u8],
        deadline: Option<Instant>,
        wait: bool,
    ) -> Result<usize, RecvTimeoutError> {
        let n = self.pop_with(deadline, wait, |c| c.try_pop(buf))?;
        after_pop(&mut self.consumer, self.wait.strategy);
        Ok(n)
    }
}

fn timed_out(e: RecvTimeoutError) -> RecvError {
    match e {
        RecvTimeoutError::Recv(e) => e,
        RecvTimeoutError::Timeout => RecvError::Io(nix::errno::Errno::ETIMEDOUT),
    }
}

impl crate::Rx for ShmRx {
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, RecvError> {
        self.recv_until(buf, None, true).map_err(timed_out)
    }

    fn try_recv(&mut self, buf: &mut [u8]) -> Result<usize, TryRecvError> {
        self.recv_until(buf, None, false).map_err(|e| match e {
            RecvTimeoutError::Recv(e) => TryRecvError::Recv(e),
            RecvTimeoutError::Timeout => TryRecvError::Empty,
        })
    }

    fn recv_timeout(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, RecvTimeoutError> {
        self.recv_until(buf, Some(Instant::now() + timeout), true)
    }

    fn max_frame_len(&self) -> usize {
        self.max_frame
    }
}

/// A received frame lent in place from the ring; see [`crate::LoanRx`].
#[derive(Debug)]
pub struct ShmFrame<'a> {
    peeked: Option<ipcbench_ring::Peeked<'a, SegmentRegion>>,
    strategy: WaitStrategy,
}

impl std::ops::Deref for ShmFrame<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.peeked.as_deref().unwrap_or_default()
    }
}

impl Drop for ShmFrame<'_> {
    fn drop(&mut self) {
        if let Some(consumer) = self.peeked.take().and_then(|p| p.release()) {
            after_pop(consumer, self.strategy);
        }
    }
}

impl crate::LoanRx for ShmRx {
    type Frame<'a> = ShmFrame<'a>;

    fn recv_borrowed(&mut self) -> Result<ShmFrame<'_>, RecvError> {
        self.pop_with(None, true, |c| c.ready())
            .map_err(timed_out)?;
        match self.consumer.try_peek().map_err(pop_error)? {
            Some(peeked) => Ok(ShmFrame {
                peeked: Some(peeked),
                strategy: self.wait.strategy,
            }),
            // A segment region always lends its bytes (`SegmentRegion::raw` is `Some`).
            None => Err(RecvError::Io(nix::errno::Errno::EOPNOTSUPP)),
        }
    }
}

/// Transport over two shared-memory rings.
#[derive(Debug, Clone, Copy)]
pub struct Shm;

/// A mapped segment with our sides claimed, waiting for the peer to claim its own.
#[derive(Debug)]
pub struct ShmListener {
    endpoint: Endpoint,
    tx: ShmTx,
    rx: ShmRx,
}

fn attach(endpoint: &Endpoint, side_a: bool) -> Result<ShmListener, SetupError> {
    let Endpoint::Shm {
        path,
        capacity,
        max_frame,
        wait,
        spin_us,
    } = endpoint
    else {
        return Err(SetupError::WrongKind {
            expected: TransportKind::Shm,
            found: endpoint.kind(),
        });
    };
    let capacity = *capacity as usize;
    if !capacity.is_power_of_two()
        || capacity < ipcbench_ring::MIN_CAPACITY
        || *max_frame as usize > max_payload(capacity)
    {
        return Err(SetupError::Invalid(format!(
            "shm endpoint {}: capacity {capacity}, max_frame {max_frame}",
            path.display()
        )));
    }
    let segment = Arc::new(Segment::open_with(path, 2 * ring_bytes(capacity), true)?);
    let token = NonZeroU32::new(std::process::id()).unwrap_or(NonZeroU32::MIN);
    let (out_ring, in_ring) = if side_a { (0, 1) } else { (1, 0) };
    let fail = |what: &str, e: ipcbench_ring::AttachError| SetupError::Handshake {
        target: path.display().to_string(),
        reason: format!("{what}: {e}"),
    };
    let producer = Producer::attach(region_of(&segment, out_ring, capacity), token)
        .map_err(|e| fail("sending ring", e))?;
    let consumer = Consumer::attach(region_of(&segment, in_ring, capacity), token)
        .map_err(|e| fail("receiving ring", e))?;
    let max_frame = *max_frame as usize;
    let wait = Wait {
        strategy: *wait,
        budget: Duration::from_micros(u64::from(*spin_us)),
    };
    Ok(ShmListener {
        endpoint: endpoint.clone(),
        tx: ShmTx {
            producer,
            try_polls: TryPolls::default(),
            wait,
            max_frame,
        },
        rx: ShmRx {
            consumer,
            try_polls: TryPolls::default(),
            wait,
            max_frame,
        },
    })
}

/// Whether the peer has claimed its sides of both rings. A side it has already let go
/// of counts as claimed (it can only let go of what it held): a peer that keeps one
/// half of the connection and drops the other has met us, and the dropped half reads as
/// disconnected from here on. Only a peer that let go of both before we saw it is an
/// error.
fn peer_arrived(l: &ShmListener) -> Result<bool, SetupError> {
    match (
        l.tx.producer.consumer_token(),
        l.rx.consumer.producer_token(),
    ) {
        (None, None) => Err(SetupError::Handshake {
            target: l.endpoint.to_string(),
            reason: "the peer let go before setup finished".into(),
        }),
        (a, b) => Ok(a != Some(0) && b != Some(0)),
    }
}

/// Waits until the peer has claimed its sides of both rings.
fn meet(l: ShmListener, timeout: Duration) -> Result<(ShmTx, ShmRx), SetupError> {
    let deadline = Instant::now() + timeout;
    loop {
        if peer_arrived(&l)? {
            return Ok((l.tx, l.rx));
        }
        if Instant::now() >= deadline {
            return Err(SetupError::Timeout {
                what: "wait for the peer on",
                target: l.endpoint.to_string(),
                timeout_ms: timeout.as_millis(),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

impl Transport for Shm {
    const KIND: TransportKind = TransportKind::Shm;
    type Tx = ShmTx;
    type Rx = ShmRx;
    type Listener = ShmListener;

    fn listen(endpoint: &Endpoint) -> Result<ShmListener, SetupError> {
        attach(endpoint, true)
    }

    fn resolved(listener: &ShmListener) -> Endpoint {
        listener.endpoint.clone()
    }

    fn accept(listener: ShmListener, timeout: Duration) -> Result<(ShmTx, ShmRx), SetupError> {
        meet(listener, timeout)
    }

    fn try_accept(
        listener: ShmListener,
        _timeout: Duration,
    ) -> Result<Result<(ShmTx, ShmRx), ShmListener>, SetupError> {
        // Claiming is the whole handshake: nothing further to wait for.
        Ok(if peer_arrived(&listener)? {
            Ok((listener.tx, listener.rx))
        } else {
            Err(listener)
        })
    }

    fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<(ShmTx, ShmRx), SetupError> {
        meet(attach(endpoint, false)?, timeout)
    }
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test, with its message.
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Rx, Tx};

    #[test]
    fn a_peer_that_drops_one_half_right_after_connecting_has_still_met_us() {
        let dir = tempfile::tempdir().unwrap();
        let opts = EndpointOptions {
            shm_capacity: 1 << 12,
            max_frame: 64,
            ..Default::default()
        };
        // Removed however the test ends (the segment lives in /dev/shm).
        struct Removed(Endpoint);
        impl Drop for Removed {
            fn drop(&mut self) {
                self.0.cleanup();
            }
        }
        let endpoint = Removed(Endpoint::prepare(TransportKind::Shm, dir.path(), &opts).unwrap());
        let endpoint = &endpoint.0;
        let listener = Shm::listen(endpoint).unwrap();
        // The accepting side polls about every millisecond; the peer connects and drops
        // its receiving half well within that.
        let acceptor = std::thread::spawn(move || Shm::accept(listener, Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(20));
        let (mut tx, rx) = Shm::connect(endpoint, Duration::from_secs(5)).unwrap();
        drop(rx);
        tx.send(b"still here").unwrap();
        let (atx, mut arx) = acceptor.join().unwrap().unwrap();
        let mut buf = [0u8; 64];
        let n = arx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"still here");
        // The half it dropped is gone for good (a send that finds room is still queued,
        // as on any transport; one that waits for room says Disconnected).
        assert_eq!(atx.producer.consumer_token(), None);
    }

    #[test]
    fn garbage_over_a_ring_header_is_corrupt_not_disconnected() {
        let dir = tempfile::tempdir().unwrap();
        let capacity = 1 << 12;
        let opts = EndpointOptions {
            shm_capacity: capacity as u32,
            max_frame: 64,
            ..Default::default()
        };
        struct Removed(Endpoint);
        impl Drop for Removed {
            fn drop(&mut self) {
                self.0.cleanup();
            }
        }
        let endpoint = Removed(Endpoint::prepare(TransportKind::Shm, dir.path(), &opts).unwrap());
        let endpoint = &endpoint.0;
        let listener = Shm::listen(endpoint).unwrap();
        let acceptor = std::thread::spawn(move || Shm::accept(listener, Duration::from_secs(5)));
        let (_tx, _rx) = Shm::connect(endpoint, Duration::from_secs(5)).unwrap();
        let (_atx, mut arx) = acceptor.join().unwrap().unwrap();
        // A stranger writes over the header line of ring 1 (B to A, the ring `arx` reads):
        // magic, version, capacity and both claims, so the producer's claim names no
        // live process.
        let Endpoint::Shm { path, .. } = endpoint else {
            panic!("not shm")
        };
        let seg = Segment::open(path, 2 * ring_bytes(capacity)).unwrap();
        let ring1 = ring_bytes(capacity) / 8;
        for w in 0..16 {
            seg.words()[ring1 + w].store(0x6a72_6261_6765_0000 + w as u64, Ordering::Relaxed);
        }
        let err = arx
            .recv_timeout(&mut [0u8; 64], Duration::from_secs(2))
            .unwrap_err();
        assert!(
            matches!(
                err,
                RecvTimeoutError::Recv(RecvError::Corrupt(Corruption::Ring(
                    ipcbench_ring::Corruption::BadRingHeader { word: 0, .. }
                )))
            ),
            "{err:?}"
        );
    }
}
