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
        let (mut waits_left, step, deadline) = match self.policy {
            FullPolicy::Block { timeout } => (u32::MAX, timeout, Some(Instant::now() + timeout)),
            FullPolicy::Retry { interval, retries } => (retries, interval, None),
        };
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
            let wait = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => step,
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
                if deadline.is_some() && st.frames.len() < self.hwm {
                    break;
                }
            }
        }
    }

    /// Takes the oldest frame into `out` (its previous contents replaced), waiting at most
    /// `timeout`; `false` if none came (or the outbox is closed and empty).
    pub fn take(&self, out: &mut Vec<u8>, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
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
