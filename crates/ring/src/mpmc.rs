//! A bounded multi-producer multi-consumer queue of small integers (chunk indices) in a
//! [`Region`]: Dmitry Vyukov's bounded MPMC queue, with every position and cell kept as
//! an offset into the region (never a pointer), so several processes can share it.
//!
//! # Layout (in words, from `base`)
//!
//! ```text
//! base + 0    enqueue position, on a 128-byte line of its own
//! base + 16   dequeue position, on a line of its own
//! base + 32   cells: cell i is two words, its sequence and its value
//! ```
//!
//! Cell `i` starts with sequence `i`. A producer that finds the cell at its position `p`
//! with sequence `p` claims the position (CAS on the enqueue position), writes the value,
//! and publishes with sequence `p + 1` (Release). A consumer that finds sequence `p + 1`
//! at its position `p` claims it, reads the value and frees the cell for the next lap with
//! sequence `p + capacity` (Release).
//!
//! Everything read from the region is untrusted: a value outside `0..=max_value`, or a
//! sequence that cannot occur, is [`QueueError::Corrupt`]; a loop that keeps losing to
//! impossible sequences gives up after a bound instead of spinning forever.

use core::fmt;

use crate::sync::Ordering;
use crate::Region;

/// Words a queue of `capacity` cells takes.
pub const fn queue_words(capacity: usize) -> usize {
    32 + 2 * capacity
}

const W_ENQ: usize = 0;
const W_DEQ: usize = 16;
const W_CELLS: usize = 32;
/// Attempts before an operation that keeps seeing impossible states reports `Corrupt`.
/// A legitimate retry means another party's operation completed, so with the handful of
/// processes sharing a pool this is never reached by honest contention.
const RETRIES: u32 = 1 << 12;

/// Why a queue operation did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// No free cell (push) or no value (pop) right now.
    WouldBlock,
    /// The shared words hold something the protocol never writes.
    Corrupt {
        /// The position involved.
        position: u64,
        /// The word found (a sequence or a value).
        word: u64,
    },
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueError::WouldBlock => f.write_str("the queue is full or empty"),
            QueueError::Corrupt { position, word } => {
                write!(f, "queue corrupt at position {position}: found {word:#x}")
            }
        }
    }
}

impl core::error::Error for QueueError {}

/// A view of one queue inside a region. Cheap to make; `Sync`: any number of threads or
/// processes may push and pop through their own views.
#[derive(Debug)]
pub struct Mpmc<'a, R: Region + ?Sized> {
    region: &'a R,
    base: usize,
    capacity: usize,
    max_value: u64,
}

impl<'a, R: Region + ?Sized> Mpmc<'a, R> {
    /// A view of the queue of `capacity` cells (a power of two, at least 2) at word `base`,
    /// carrying values `0..=max_value`. `None` if it does not fit the region.
    pub fn new(region: &'a R, base: usize, capacity: usize, max_value: u64) -> Option<Self> {
        let fits = base
            .checked_add(queue_words(capacity))
            .is_some_and(|end| end <= region.words());
        (capacity.is_power_of_two() && capacity >= 2 && fits).then_some(Mpmc {
            region,
            base,
            capacity,
            max_value,
        })
    }

    /// Writes the initial state (every cell free, both positions 0). Only while no one
    /// else uses the queue.
    pub fn init(&self) {
        for i in 0..self.capacity {
            self.seq(i as u64).store(i as u64, Ordering::Relaxed);
            self.value(i as u64).store(0, Ordering::Relaxed);
        }
        self.word(W_DEQ).store(0, Ordering::Relaxed);
        // SYNC: Release pairs with the Acquire loads of cell sequences in push/pop: a
        // process that sees the queue set up sees every cell's first sequence.
        self.word(W_ENQ).store(0, Ordering::Release);
    }

    /// The number of cells.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn word(&self, i: usize) -> &crate::sync::AtomicU64 {
        self.region.word(self.base + i)
    }

    fn seq(&self, pos: u64) -> &crate::sync::AtomicU64 {
        self.word(W_CELLS + 2 * (pos as usize & (self.capacity - 1)))
    }

    fn value(&self, pos: u64) -> &crate::sync::AtomicU64 {
        self.word(W_CELLS + 2 * (pos as usize & (self.capacity - 1)) + 1)
    }

    /// Claims the next position of the counter at word `counter` whose cell's sequence is
    /// `position + ready`: `ready = 0` for a producer (a free cell), 1 for a consumer (a
    /// published value). `WouldBlock` if that cell is not ready yet (the queue is full or
    /// empty); `Corrupt` for a sequence the protocol never writes there, or if the
    /// position never settles.
    fn claim(&self, counter: usize, ready: u64) -> Result<u64, QueueError> {
        let cap = self.capacity as u64;
        let mut pos = self.word(counter).load(Ordering::Relaxed);
        for _ in 0..RETRIES {
            // SYNC: Acquire pairs with the Release store of this sequence by the other
            // side (push publishing a value, pop freeing the cell, or `init`): what it
            // did to the cell before is visible.
            let seq = self.seq(pos).load(Ordering::Acquire);
            let dif = seq.wrapping_sub(pos.wrapping_add(ready)) as i64;
            if dif == 0 {
                match self.word(counter).compare_exchange(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Ok(pos),
                    Err(now) => pos = now,
                }
            } else if dif < 0 {
                // The cell is a lap behind: full (push) or empty (pop), unless the
                // sequence is further behind than any lap.
                if dif < -(cap as i64) {
                    return Err(QueueError::Corrupt {
                        position: pos,
                        word: seq,
                    });
                }
                return Err(QueueError::WouldBlock);
            } else {
                // Another party took this position: catch up.
                pos = self.word(counter).load(Ordering::Relaxed);
            }
        }
        Err(QueueError::Corrupt {
            position: pos,
            word: self.seq(pos).load(Ordering::Relaxed),
        })
    }

    /// Appends `v` (at most `max_value`) if a cell is free now.
    pub fn push(&self, v: u64) -> Result<(), QueueError> {
        debug_assert!(v <= self.max_value, "pushing {v} past {}", self.max_value);
        let pos = self.claim(W_ENQ, 0)?;
        self.value(pos).store(v, Ordering::Relaxed);
        // SYNC: Release pairs with the consumer's Acquire load of this sequence in
        // `claim`: the value is visible with it.
        self.seq(pos).store(pos.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// Takes the oldest value if there is one now.
    pub fn pop(&self) -> Result<u64, QueueError> {
        let pos = self.claim(W_DEQ, 1)?;
        let v = self.value(pos).load(Ordering::Relaxed);
        // SYNC: Release pairs with the next lap's producer's Acquire load in `claim`: our
        // read of the value happens before it is overwritten.
        self.seq(pos)
            .store(pos.wrapping_add(self.capacity as u64), Ordering::Release);
        if v > self.max_value {
            return Err(QueueError::Corrupt {
                position: pos,
                word: v,
            });
        }
        Ok(v)
    }
}

#[cfg(all(test, not(loom)))]
// Test code: a failed unwrap is a failed test, with its message.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::HeapRegion;
    use alloc::sync::Arc;
    use alloc::vec::Vec;

    fn queue(region: &HeapRegion, cap: usize) -> Mpmc<'_, HeapRegion> {
        let q = Mpmc::new(region, 16, cap, 1000).unwrap();
        q.init();
        q
    }

    #[test]
    fn fifo_full_and_empty_across_laps() {
        let region = HeapRegion::new(8 * (16 + queue_words(4)));
        let q = queue(&region, 4);
        assert_eq!(q.pop(), Err(QueueError::WouldBlock));
        for lap in 0..5u64 {
            for i in 0..4 {
                q.push(lap * 10 + i).unwrap();
            }
            assert_eq!(q.push(999), Err(QueueError::WouldBlock));
            for i in 0..4 {
                assert_eq!(q.pop(), Ok(lap * 10 + i));
            }
            assert_eq!(q.pop(), Err(QueueError::WouldBlock));
        }
    }

    #[test]
    fn does_not_fit_or_bad_capacity_is_refused() {
        let region = HeapRegion::new(8 * queue_words(4));
        let last = region.words() - queue_words(4);
        assert!(Mpmc::new(&region, last, 4, 10).is_some());
        assert!(Mpmc::new(&region, last + 1, 4, 10).is_none());
        assert!(Mpmc::new(&region, 0, 3, 10).is_none());
        assert!(Mpmc::new(&region, 0, 1, 10).is_none());
    }

    #[test]
    fn garbage_is_corrupt_not_a_hang_or_a_bad_index() {
        let region = HeapRegion::new(8 * queue_words(4));
        let q = Mpmc::new(&region, 0, 4, 10).unwrap();
        q.init();
        q.push(3).unwrap();
        // A value past the maximum.
        region.word(W_CELLS + 1).store(77, Ordering::Relaxed);
        assert!(matches!(q.pop(), Err(QueueError::Corrupt { word: 77, .. })));
        // A sequence from the far future at the producer's position: it keeps catching up
        // with a position that never moves, and gives up.
        let q = Mpmc::new(&region, 0, 4, 10).unwrap();
        q.init();
        region.word(W_CELLS).store(1 << 40, Ordering::Relaxed);
        assert!(matches!(q.push(1), Err(QueueError::Corrupt { .. })));
        // A sequence from the far past.
        q.init();
        region.word(W_CELLS).store(0, Ordering::Relaxed);
        region.word(W_ENQ).store(1 << 40, Ordering::Relaxed);
        assert!(matches!(q.push(1), Err(QueueError::Corrupt { .. })));
        // Random words anywhere: never a panic, and values always in range.
        let mut x = 0x1234_5678_9abc_def0u64;
        for round in 0..if cfg!(miri) { 50 } else { 2000 } {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let w = (x % queue_words(4) as u64) as usize;
            region
                .word(w)
                .store(if round % 3 == 0 { x % 8 } else { x }, Ordering::Relaxed);
            if let Ok(v) = q.pop() {
                assert!(v <= 10);
            }
            let _ = q.push(x % 11);
        }
    }

    #[test]
    fn threads_lose_nothing_and_duplicate_nothing() {
        let region = Arc::new(HeapRegion::new(8 * queue_words(8)));
        Mpmc::new(&*region, 0, 8, 1 << 20).unwrap().init();
        let per = if cfg!(miri) { 100 } else { 20_000u64 };
        let producers: Vec<_> = (0..2u64)
            .map(|t| {
                let r = region.clone();
                std::thread::spawn(move || {
                    let q = Mpmc::new(&*r, 0, 8, 1 << 20).unwrap();
                    for i in 0..per {
                        while q.push(t * per + i).is_err() {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let r = region.clone();
                std::thread::spawn(move || {
                    let q = Mpmc::new(&*r, 0, 8, 1 << 20).unwrap();
                    let mut got = Vec::new();
                    while (got.len() as u64) < per {
                        match q.pop() {
                            Ok(v) => got.push(v),
                            Err(QueueError::WouldBlock) => std::thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                    got
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        let mut all: Vec<u64> = consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..2 * per).collect::<Vec<_>>());
    }
}
