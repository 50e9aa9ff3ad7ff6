//! ipcbench-ring: a lock-free single-producer single-consumer ring of variable-length byte
//! records, generic over its storage (a [`Region`]): heap memory in tests, a shared
//! mapping between two processes in use. No OS code; `no_std` + `alloc`.
//!
//! ```
//! use ipcbench_ring::{init, Consumer, HeapRegion, Producer, PopError, region_len};
//! use std::num::NonZeroU32;
//! use std::sync::Arc;
//!
//! let region = Arc::new(HeapRegion::new(region_len(4096)));
//! init(&*region, 4096).unwrap();
//! let token = NonZeroU32::new(1).unwrap();
//! let mut tx = Producer::attach(region.clone(), token).unwrap();
//! let mut rx = Consumer::attach(region, token).unwrap();
//! tx.try_push(b"hello").unwrap();
//! let mut buf = [0u8; 16];
//! assert_eq!(rx.try_pop(&mut buf), Ok(5));
//! assert_eq!(&buf[..5], b"hello");
//! assert_eq!(rx.try_pop(&mut buf), Err(PopError::Empty));
//! ```
//!
//! # Layout
//!
//! ```text
//! byte 0    header line: magic, version, capacity, producer claim, consumer claim
//! byte 128  head: the consumer's position (bytes consumed), on a line of its own
//! byte 256  tail: the producer's position (bytes produced), on a line of its own
//! byte 384  data: `capacity` bytes (a power of two)
//! ```
//!
//! Positions are monotonic `u64` byte counts; `position & (capacity - 1)` is the index.
//! 128-byte lines, not 64: x86 prefetchers pull cache lines in pairs (crossbeam's
//! `CachePadded` does the same).
//!
//! # Records and the publication protocol
//!
//! A record is an 8-byte header word, `len | stamp << 32`, then the payload padded to 8
//! bytes. The stamp is `(position >> 3) | 1` truncated to 32 bits: it changes every lap and
//! is never 0. A record that does not fit before the end of the data is preceded by a wrap
//! marker (`len = u32::MAX`) and starts at index 0.
//!
//! The consumer learns that a record is ready from its header, in the same cache line as
//! the start of its payload, not from the producer's position on a line of its own: one
//! cache-line transfer per small message. For that to be sound the consumer must never
//! mistake old bytes for a header, so the producer zeroes the header slot *after* the
//! record before it publishes the record. The word at the consumer's position is then
//! always either 0 (empty) or a header with the expected stamp; anything else is
//! [`Corruption`], never a guess.
//!
//! Producer, per record at position `t`: check space (reloading the consumer's published
//! head with Acquire only when the ring looks full), zero the next header slot, copy the
//! payload, then store the header with Release; a wrap marker is stored (Release) after
//! the record it leads to. The consumer loads the header at its position with Acquire,
//! validates it, copies the payload out, and publishes its head with Release in batches
//! (a quarter of the ring, or whenever it finds the ring empty). While it is behind the
//! producer it also asks the CPU to prefetch records a few ahead, within what the
//! producer's position (read once per window, Relaxed: a hint only) says is written.
//!
//! Everything read from the region is untrusted: a broken or hostile peer can write any
//! value anywhere, and the result is [`Corruption`], never a panic, an out-of-bounds
//! access or undefined behaviour.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;
#[cfg(test)]
extern crate std;

use core::fmt;
use core::num::NonZeroU32;

pub mod mpmc;
mod region;
mod sync;

pub use mpmc::{queue_words, Mpmc, QueueError};
pub use region::{HeapRegion, Region};
use sync::Ordering;

/// `IPCBRING`, little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"IPCBRING");
/// Layout version; a peer with another one is refused.
pub const VERSION: u64 = 1;
/// Bytes of a cache-line pair.
pub const LINE: usize = 128;
/// Where the data starts.
pub const DATA_OFFSET: usize = 3 * LINE;
/// Smallest capacity.
pub const MIN_CAPACITY: usize = 64;
/// Largest capacity (lengths and stamps fit 32 bits).
pub const MAX_CAPACITY: usize = 1 << 31;

const W_MAGIC: usize = 0;
const W_VERSION: usize = 1;
const W_CAPACITY: usize = 2;
const W_PRODUCER: usize = 3;
const W_CONSUMER: usize = 4;
/// Set by a consumer about to sleep until the tail moves (the blocking wait).
const W_CONSUMER_WAITING: usize = 5;
/// Set by a producer about to sleep until the head moves.
const W_PRODUCER_WAITING: usize = 6;
const W_HEAD: usize = LINE / 8;
const W_TAIL: usize = 2 * LINE / 8;
const HEADER: usize = 8;
const WRAP: u32 = u32::MAX;
/// A claim word: 0 free, a token while held, CLOSED once its holder let go.
const CLOSED: u64 = u64::MAX;

// The layout the docs promise, checked at compile time.
const _: () = assert!(W_HEAD * 8 == LINE && W_TAIL * 8 == 2 * LINE && DATA_OFFSET == 3 * LINE);
const _: () = assert!(
    W_PRODUCER_WAITING * 8 + 8 <= LINE,
    "header fields fit the first line"
);
const _: () = assert!(MIN_CAPACITY.is_power_of_two() && MAX_CAPACITY.is_power_of_two());

/// Bytes a region needs for a ring of `capacity` data bytes.
pub const fn region_len(capacity: usize) -> usize {
    DATA_OFFSET + capacity
}

/// Longest payload a ring of `capacity` bytes accepts: any record must fit an empty ring
/// wherever its position is, wrap waste and the zeroed next header included.
pub const fn max_payload(capacity: usize) -> usize {
    capacity / 2 - 2 * HEADER
}

const fn pad8(n: usize) -> usize {
    (n + 7) & !7
}

fn stamp(position: u64) -> u32 {
    ((position >> 3) as u32) | 1
}

/// Why a region cannot be used as a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachError {
    /// The region is smaller than its header says it needs.
    TooSmall {
        /// Bytes the region has.
        len: usize,
        /// Bytes the capacity needs.
        needed: usize,
    },
    /// Not a ring (wrong magic).
    BadMagic(u64),
    /// A ring of another layout version.
    BadVersion(u64),
    /// The capacity is not a power of two in range.
    BadCapacity(u64),
    /// The other process of this side holds it already.
    Claimed,
}

/// Why a record could not be pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// No room now; nothing was written.
    Full,
    /// The payload exceeds [`max_payload`].
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The ring's maximum.
        max: usize,
    },
    /// The consumer has let go of the ring.
    Disconnected,
    /// The consumer's published position is impossible.
    Corrupt(Corruption),
}

/// Why a record could not be popped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopError {
    /// Nothing to read now.
    Empty,
    /// The next record is longer than the buffer; it stays queued.
    Truncated {
        /// The record's length.
        needed: usize,
    },
    /// The producer let go and everything it wrote has been read.
    Disconnected,
    /// The region holds something the protocol cannot have written.
    Corrupt(Corruption),
}

/// What was found broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// The word at the consumer's position is neither 0 nor a header for that position.
    BadHeader {
        /// The consumer's position.
        position: u64,
        /// The word found there.
        word: u64,
    },
    /// A header's length does not fit the ring.
    BadLength {
        /// The record's position.
        position: u64,
        /// The length it claims.
        len: u32,
    },
    /// The consumer's published position is behind what it already released, or ahead of
    /// what was produced.
    BadHead {
        /// The position read.
        head: u64,
        /// The producer's own position.
        tail: u64,
    },
    /// The ring's header (magic, version, capacity) is no longer the one `init` wrote: the
    /// region was overwritten, so what its claims say of the peer cannot be believed.
    BadRingHeader {
        /// The header word (0 magic, 1 version, 2 capacity).
        word: u32,
        /// What it holds now.
        found: u64,
    },
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::BadHeader { position, word } => {
                write!(
                    f,
                    "word {word:#018x} at position {position} is not a record header"
                )
            }
            Corruption::BadLength { position, len } => {
                write!(
                    f,
                    "record at position {position} claims {len} bytes, which do not fit the ring"
                )
            }
            Corruption::BadHead { head, tail } => {
                write!(
                    f,
                    "consumer position {head} is impossible with producer position {tail}"
                )
            }
            Corruption::BadRingHeader { word, found } => {
                write!(
                    f,
                    "the ring's header was overwritten (word {word} holds {found:#018x}): not what this ring wrote"
                )
            }
        }
    }
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachError::TooSmall { len, needed } => {
                write!(f, "region of {len} bytes, the ring needs {needed}")
            }
            AttachError::BadMagic(m) => write!(f, "not an ipcbench ring (magic {m:#018x})"),
            AttachError::BadVersion(v) => {
                write!(f, "ring layout version {v}, this build speaks {VERSION}")
            }
            AttachError::BadCapacity(c) => write!(
                f,
                "capacity {c} is not a power of two in {MIN_CAPACITY}..={MAX_CAPACITY}"
            ),
            AttachError::Claimed => f.write_str("this side of the ring is already claimed"),
        }
    }
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Full => f.write_str("ring full"),
            PushError::TooLarge { len, max } => {
                write!(f, "payload of {len} bytes exceeds the ring's maximum {max}")
            }
            PushError::Disconnected => f.write_str("consumer disconnected"),
            PushError::Corrupt(c) => write!(f, "corrupt ring: {c}"),
        }
    }
}

impl fmt::Display for PopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PopError::Empty => f.write_str("ring empty"),
            PopError::Truncated { needed } => {
                write!(f, "record of {needed} bytes does not fit the buffer")
            }
            PopError::Disconnected => f.write_str("producer disconnected"),
            PopError::Corrupt(c) => write!(f, "corrupt ring: {c}"),
        }
    }
}

impl core::error::Error for AttachError {}
impl core::error::Error for PushError {}
impl core::error::Error for PopError {}

/// Writes a fresh ring header into `region` and zeroes the rest. The region must not be
/// in use by any producer or consumer.
pub fn init<R: Region + ?Sized>(region: &R, capacity: usize) -> Result<(), AttachError> {
    if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
        return Err(AttachError::BadCapacity(capacity as u64));
    }
    let needed = region_len(capacity);
    if region.words() * 8 < needed {
        return Err(AttachError::TooSmall {
            len: region.words() * 8,
            needed,
        });
    }
    for i in 0..needed / 8 {
        region.word(i).store(0, Ordering::Relaxed);
    }
    region.word(W_VERSION).store(VERSION, Ordering::Relaxed);
    region
        .word(W_CAPACITY)
        .store(capacity as u64, Ordering::Relaxed);
    // SYNC: Release pairs with the Acquire load of the magic in `Shared::attach`: whoever
    // sees the magic sees the zeroed region, the version and the capacity.
    region.word(W_MAGIC).store(MAGIC, Ordering::Release);
    Ok(())
}

/// What both halves hold: the region and its validated geometry.
#[derive(Debug)]
struct Shared<R: Region> {
    region: R,
    capacity: usize,
    mask: u64,
    claim: usize,
    peer_claim: usize,
}

impl<R: Region> Shared<R> {
    fn attach(region: R, claim: usize, token: NonZeroU32) -> Result<Shared<R>, AttachError> {
        let len = region.words() * 8;
        if len < DATA_OFFSET {
            return Err(AttachError::TooSmall {
                len,
                needed: DATA_OFFSET,
            });
        }
        // SYNC: Acquire pairs with the Release store of the magic in `init`.
        let magic = region.word(W_MAGIC).load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(AttachError::BadMagic(magic));
        }
        let version = region.word(W_VERSION).load(Ordering::Relaxed);
        if version != VERSION {
            return Err(AttachError::BadVersion(version));
        }
        let capacity = region.word(W_CAPACITY).load(Ordering::Relaxed);
        if !capacity.is_power_of_two()
            || capacity < MIN_CAPACITY as u64
            || capacity > MAX_CAPACITY as u64
        {
            return Err(AttachError::BadCapacity(capacity));
        }
        let capacity = capacity as usize;
        if len < region_len(capacity) {
            return Err(AttachError::TooSmall {
                len,
                needed: region_len(capacity),
            });
        }
        // SYNC: AcqRel: Acquire sees a previous holder's release; Release publishes ours.
        region
            .word(claim)
            .compare_exchange(
                0,
                u64::from(token.get()),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .map_err(|_| AttachError::Claimed)?;
        let peer_claim = if claim == W_PRODUCER {
            W_CONSUMER
        } else {
            W_PRODUCER
        };
        Ok(Shared {
            region,
            capacity,
            mask: capacity as u64 - 1,
            claim,
            peer_claim,
        })
    }

    /// The header word of the record at `position`.
    fn slot(&self, position: u64) -> &sync::AtomicU64 {
        self.region
            .word((DATA_OFFSET + (position & self.mask) as usize) / 8)
    }

    /// Whether the header still holds what `init` wrote and `attach` checked: before a
    /// side believes what the header's claims say of its peer (gone, or let go), it makes
    /// sure the header is the ring's and not bytes a broken peer wrote over it.
    fn header_intact(&self) -> Result<(), Corruption> {
        let want = [MAGIC, VERSION, self.capacity as u64];
        for (word, want) in [W_MAGIC, W_VERSION, W_CAPACITY].into_iter().zip(want) {
            let found = self.region.word(word).load(Ordering::Relaxed);
            if found != want {
                return Err(Corruption::BadRingHeader {
                    word: word as u32,
                    found,
                });
            }
        }
        Ok(())
    }

    fn peer_closed(&self) -> bool {
        // SYNC: Acquire pairs with the peer's Release store of CLOSED in `Drop`, so every
        // record it published before letting go is visible after this load.
        self.region.word(self.peer_claim).load(Ordering::Acquire) == CLOSED
    }

    /// The owner token the peer holds its side with (0: none yet, `None`: let go). The
    /// transport uses it to check that a peer process still lives.
    fn peer_token(&self) -> Option<u64> {
        match self.region.word(self.peer_claim).load(Ordering::Relaxed) {
            CLOSED => None,
            t => Some(t),
        }
    }
}

impl<R> Drop for Shared<R>
where
    R: Region,
{
    fn drop(&mut self) {
        // SYNC: Release pairs with the peer's Acquire in `peer_closed`: everything this
        // side did happens before the peer sees it gone.
        self.region
            .word(self.claim)
            .store(CLOSED, Ordering::Release);
    }
}

/// The producing half. `Send`, not `Sync`, and every operation takes `&mut self`, so
/// there is one producer.
#[derive(Debug)]
pub struct Producer<R: Region> {
    shared: Shared<R>,
    /// Our position: everything before it is written.
    tail: u64,
    /// The consumer's published position, as last loaded.
    cached_head: u64,
}

impl<R: Region> Producer<R> {
    /// Claims the producing side of an initialised ring. `token` identifies the owner
    /// (the transport passes its pid) and is what the consumer sees in the claim word.
    pub fn attach(region: R, token: NonZeroU32) -> Result<Producer<R>, AttachError> {
        let shared = Shared::attach(region, W_PRODUCER, token)?;
        // A fresh ring starts at 0; the positions are only ever read, never trusted blindly.
        let tail = shared.region.word(W_TAIL).load(Ordering::Relaxed);
        let head = shared.region.word(W_HEAD).load(Ordering::Acquire);
        Ok(Producer {
            shared,
            tail,
            cached_head: head,
        })
    }

    /// The ring's data capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// The longest payload this ring accepts.
    pub fn max_payload(&self) -> usize {
        max_payload(self.shared.capacity)
    }

    /// The consumer's owner token (`None` once it let go; `Some(0)` before it attached).
    pub fn consumer_token(&self) -> Option<u64> {
        self.shared.peer_token()
    }

    /// `Err` when the ring's header is no longer what `init` wrote (see
    /// [`Corruption::BadRingHeader`]): check it before believing what the header's claims
    /// say of the peer.
    pub fn check_header(&self) -> Result<(), Corruption> {
        self.shared.header_intact()
    }

    /// The word the consumer publishes its position in (for a futex wait, say).
    pub fn head_word(&self) -> &sync::AtomicU64 {
        self.shared.region.word(W_HEAD)
    }

    /// The word this producer publishes its position in: the consumer sleeps on it.
    pub fn tail_word(&self) -> &sync::AtomicU64 {
        self.shared.region.word(W_TAIL)
    }

    /// The flag this producer raises before sleeping until the head moves.
    pub fn waiting_flag(&self) -> &sync::AtomicU64 {
        self.shared.region.word(W_PRODUCER_WAITING)
    }

    /// The flag the consumer raises before sleeping until the tail moves; a producer in
    /// the blocking wait checks it after publishing (a SeqCst fence between) and wakes
    /// the tail word if it is set.
    pub fn peer_waiting_flag(&self) -> &sync::AtomicU64 {
        self.shared.region.word(W_CONSUMER_WAITING)
    }

    /// Bytes free for records, after reloading the consumer's position if `need` more
    /// than the cached view offers.
    #[inline]
    fn reserve(&mut self, need: u64) -> Result<(), PushError> {
        let cap = self.shared.capacity as u64;
        if self.tail - self.cached_head + need <= cap {
            return Ok(());
        }
        // SYNC: Acquire pairs with the consumer's Release store of its head in `publish`:
        // the space it released is no longer read once we see the new head.
        let head = self.shared.region.word(W_HEAD).load(Ordering::Acquire);
        if head < self.cached_head || head > self.tail {
            return Err(PushError::Corrupt(Corruption::BadHead {
                head,
                tail: self.tail,
            }));
        }
        self.cached_head = head;
        if self.tail - head + need <= cap {
            Ok(())
        } else if self.shared.peer_closed() {
            self.shared.header_intact().map_err(PushError::Corrupt)?;
            Err(PushError::Disconnected)
        } else {
            Err(PushError::Full)
        }
    }

    /// Checks the length and makes sure the room for a `len`-byte record is free;
    /// returns the wrap waste before it.
    #[inline]
    fn room(&mut self, len: usize) -> Result<u64, PushError> {
        let max = self.max_payload();
        if len > max {
            return Err(PushError::TooLarge { len, max });
        }
        let need = (HEADER + pad8(len)) as u64;
        let idx = self.tail & self.shared.mask;
        let waste = if idx + need > self.shared.capacity as u64 {
            self.shared.capacity as u64 - idx
        } else {
            0
        };
        // The record, any wrap waste before it, and the zeroed header slot after it.
        self.reserve(waste + need + HEADER as u64)?;
        Ok(waste)
    }

    /// `Ok` if a `len`-byte record fits now (a following [`Producer::loan`] of that
    /// length then succeeds); the errors of `loan` otherwise. Publishes nothing.
    #[inline]
    pub fn ready(&mut self, len: usize) -> Result<(), PushError> {
        self.room(len).map(|_| ())
    }

    /// Reserves room for a `len`-byte payload and lends it out; [`Loan::commit`]
    /// publishes it, dropping the loan publishes nothing.
    #[inline]
    pub fn loan(&mut self, len: usize) -> Result<Loan<'_, R>, PushError> {
        let waste = self.room(len)?;
        Ok(Loan {
            start: self.tail + waste,
            waste,
            len,
            producer: self,
        })
    }

    /// Copies `payload` in as one record, if there is room now.
    pub fn try_push(&mut self, payload: &[u8]) -> Result<(), PushError> {
        let loan = self.loan(payload.len())?;
        let at = DATA_OFFSET + (loan.start & loan.producer.shared.mask) as usize + HEADER;
        // SAFETY: the loan reserved [start, start + HEADER + pad8(len)) for us alone (the
        // consumer released it: `reserve` checked against its published head) and
        // `loan` placed it wholly before the end of the data, so `at..at + len` is
        // inside the region and nobody else touches it until we publish.
        unsafe { loan.producer.shared.region.write(at, payload) };
        loan.commit();
        Ok(())
    }
}

/// A reserved, unpublished record. Write the payload with [`Loan::write`] or
/// [`Loan::as_mut_slice`], then [`Loan::commit`].
#[derive(Debug)]
pub struct Loan<'a, R: Region> {
    producer: &'a mut Producer<R>,
    /// Position of the record header (after any wrap waste).
    start: u64,
    waste: u64,
    len: usize,
}

impl<'a, R: Region> Loan<'a, R> {
    fn payload_offset(&self) -> usize {
        DATA_OFFSET + (self.start & self.producer.shared.mask) as usize + HEADER
    }

    /// The payload length asked for.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `bytes` into the payload at `offset`. Panics if it does not fit the loan:
    /// a caller bug, not something a peer can cause.
    pub fn write(&mut self, offset: usize, bytes: &[u8]) {
        assert!(
            offset <= self.len && bytes.len() <= self.len - offset,
            "write past the loan"
        );
        // SAFETY: in bounds of the reserved, unpublished record (see `try_push`).
        unsafe {
            self.producer
                .shared
                .region
                .write(self.payload_offset() + offset, bytes)
        };
    }

    /// The payload in place, read-only (as written so far; zeroes or older bytes before).
    pub fn as_slice(&self) -> Option<&[u8]> {
        let base = self.producer.shared.region.raw()?;
        // SAFETY: as in `as_mut_slice`; the `&self` borrow keeps the bytes unwritten
        // through this loan while the slice lives.
        Some(unsafe {
            core::slice::from_raw_parts(base.as_ptr().add(self.payload_offset()), self.len)
        })
    }

    /// The payload in place, for storage that can lend its bytes (heap, shared mapping).
    pub fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        let base = self.producer.shared.region.raw()?;
        // SAFETY: the record's payload bytes are reserved for this loan alone (see
        // `try_push`), in bounds, and the `&mut self` borrow keeps them ours for as long
        // as the slice lives.
        Some(unsafe {
            core::slice::from_raw_parts_mut(base.as_ptr().add(self.payload_offset()), self.len)
        })
    }

    /// Publishes the record; gives the producer back (to wake a sleeping peer, say).
    #[inline]
    pub fn commit(self) -> &'a mut Producer<R> {
        let p = self.producer;
        let pos = self.start;
        let next = pos + (HEADER + pad8(self.len)) as u64;
        // Zero the header slot after the record first (reserved: `loan` counted it), so
        // the consumer finds 0 there, never older bytes.
        p.shared.slot(next).store(0, Ordering::Relaxed);
        let word = self.len as u64 | u64::from(stamp(pos)) << 32;
        // SYNC: Release pairs with the consumer's Acquire load of this header in
        // `Consumer::next`: the payload and the zeroed next slot are visible with it.
        p.shared.slot(pos).store(word, Ordering::Release);
        if self.waste > 0 {
            let marker = u64::from(WRAP) | u64::from(stamp(p.tail)) << 32;
            // SYNC: Release pairs with the same Acquire: a consumer that sees the wrap
            // marker also sees the record at index 0 it leads to.
            p.shared.slot(p.tail).store(marker, Ordering::Release);
        }
        p.tail = next;
        // SYNC: Release pairs with an Acquire load of the tail by a waiting consumer (the
        // blocking wait strategy); readiness itself travels in the record header.
        p.shared.region.word(W_TAIL).store(next, Ordering::Release);
        p
    }
}

/// The consuming half. `Send`, not `Sync`, `&mut self`: one consumer.
#[derive(Debug)]
pub struct Consumer<R: Region> {
    shared: Shared<R>,
    /// Our position: everything before it is read.
    head: u64,
    /// The position last published to the producer.
    published: u64,
    /// The last look found the ring empty: we have caught up with the producer (no
    /// prefetch, and no look at its position).
    caught_up: bool,
    /// The producer's position as last read: the records before it are written. Only
    /// prefetch hints are drawn from it, so whatever a peer wrote there is harmless.
    #[cfg_attr(
        not(all(target_arch = "x86_64", not(loom), not(miri))),
        allow(dead_code)
    )]
    known_tail: u64,
    /// Lines prefetched so far (tests check that the hint ran).
    #[cfg(test)]
    prefetched: u64,
}

/// A record found at the consumer's position.
enum Next {
    Record { at: usize, len: usize, end: u64 },
    Empty,
}

impl<R: Region> Consumer<R> {
    /// Claims the consuming side of an initialised ring.
    pub fn attach(region: R, token: NonZeroU32) -> Result<Consumer<R>, AttachError> {
        let shared = Shared::attach(region, W_CONSUMER, token)?;
        let head = shared.region.word(W_HEAD).load(Ordering::Relaxed);
        Ok(Consumer {
            shared,
            head,
            published: head,
            caught_up: true,
            known_tail: head,
            #[cfg(test)]
            prefetched: 0,
        })
    }

    /// The ring's data capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// `Err` when the ring's header is no longer what `init` wrote (see
    /// [`Corruption::BadRingHeader`]): check it before believing what the header's claims
    /// say of the peer.
    pub fn check_header(&self) -> Result<(), Corruption> {
        self.shared.header_intact()
    }

    /// The producer's owner token (`None` once it let go; `Some(0)` before it attached).
    pub fn producer_token(&self) -> Option<u64> {
        self.shared.peer_token()
    }

    /// The word the producer publishes its position in (for a futex wait, say).
    pub fn tail_word(&self) -> &sync::AtomicU64 {
        self.shared.region.word(W_TAIL)
    }

    /// The word this consumer publishes its position in: the producer sleeps on it.
    pub fn head_word(&self) -> &sync::AtomicU64 {
        self.shared.region.word(W_HEAD)
    }

    /// The flag this consumer raises before sleeping until the tail moves.
    pub fn waiting_flag(&self) -> &sync::AtomicU64 {
        self.shared.region.word(W_CONSUMER_WAITING)
    }

    /// The flag the producer raises before sleeping until the head moves; the consumer
    /// checks it after publishing its head and wakes the head word if it is set.
    pub fn peer_waiting_flag(&self) -> &sync::AtomicU64 {
        self.shared.region.word(W_PRODUCER_WAITING)
    }

    /// Tells the producer about everything read so far.
    pub fn publish(&mut self) {
        if self.published != self.head {
            // SYNC: Release pairs with the producer's Acquire load of the head in
            // `Producer::reserve`: our reads of the released bytes happen before it reuses them.
            self.shared
                .region
                .word(W_HEAD)
                .store(self.head, Ordering::Release);
            self.published = self.head;
        }
    }

    /// Finds the record at our position, following a wrap marker, validating everything.
    #[inline]
    fn next(&mut self) -> Result<Next, PopError> {
        for _ in 0..2 {
            let position = self.head;
            // SYNC: Acquire pairs with the producer's Release store of the header in
            // `Loan::commit`.
            let word = self.shared.slot(position).load(Ordering::Acquire);
            if word == 0 {
                return Ok(Next::Empty);
            }
            let (len, st) = (word as u32, (word >> 32) as u32);
            if st != stamp(position) {
                return Err(PopError::Corrupt(Corruption::BadHeader { position, word }));
            }
            let idx = (position & self.shared.mask) as usize;
            if len == WRAP {
                if idx == 0 {
                    return Err(PopError::Corrupt(Corruption::BadLength { position, len }));
                }
                self.head += (self.shared.capacity - idx) as u64;
                continue;
            }
            let n = len as usize;
            if n > max_payload(self.shared.capacity)
                || idx + HEADER + pad8(n) > self.shared.capacity
            {
                return Err(PopError::Corrupt(Corruption::BadLength { position, len }));
            }
            return Ok(Next::Record {
                at: DATA_OFFSET + idx + HEADER,
                len: n,
                end: position + (HEADER + pad8(n)) as u64,
            });
        }
        // Two wrap markers in a row: the producer never writes that.
        Err(PopError::Corrupt(Corruption::BadLength {
            position: self.head,
            len: WRAP,
        }))
    }

    fn empty(&mut self) -> PopError {
        self.caught_up = true;
        self.publish();
        if self.shared.peer_closed() {
            // The producer published everything before letting go: look once more.
            // SYNC: Acquire, as in `next`, after the Acquire in `peer_closed`.
            if self.shared.slot(self.head).load(Ordering::Acquire) == 0 {
                return match self.shared.header_intact() {
                    Ok(()) => PopError::Disconnected,
                    Err(c) => PopError::Corrupt(c),
                };
            }
        }
        PopError::Empty
    }

    #[inline]
    fn consumed(&mut self, end: u64) {
        self.head = end;
        if self.head - self.published >= (self.shared.capacity / 4) as u64 {
            self.publish();
        }
    }

    /// `Ok` if a record is there now (a following [`Consumer::try_peek`] or a large
    /// enough [`Consumer::try_pop`] then returns it); the errors of `try_pop` otherwise.
    #[inline]
    pub fn ready(&mut self) -> Result<(), PopError> {
        match self.next()? {
            Next::Empty => Err(self.empty()),
            Next::Record { .. } => Ok(()),
        }
    }

    /// Copies the next record into `buf`, if there is one now.
    pub fn try_pop(&mut self, buf: &mut [u8]) -> Result<usize, PopError> {
        match self.next()? {
            Next::Empty => Err(self.empty()),
            Next::Record { len, .. } if len > buf.len() => Err(PopError::Truncated { needed: len }),
            Next::Record { at, len, end } => {
                // SAFETY: `next` validated that the record lies inside the data area; the
                // producer published it (Acquire above) and will not touch it until we
                // publish a head past `end`.
                unsafe { self.shared.region.read(at, &mut buf[..len]) };
                self.consumed(end);
                if !self.caught_up {
                    self.prefetch_written(end);
                }
                self.caught_up = false;
                Ok(len)
            }
        }
    }

    /// While the producer is ahead (the last look did not find the ring empty), asks the
    /// CPU to start fetching up to `PREFETCH` bytes from `AHEAD` bytes past `end`
    /// (where the next record starts), so that the lines of the records after the next
    /// one cross from the producer's core while this one still works on the record just
    /// popped. Only bytes the producer has written are fetched: a line it is still to
    /// write, pulled here, would make its store fetch the line back. Its position is read
    /// again only once we have passed the one we knew (one read per window of records,
    /// not one per record). A hint only: it reads nothing into the program and never
    /// faults; a no-op for storage that cannot lend its bytes, off x86_64, and under loom
    /// and Miri.
    #[inline]
    fn prefetch_written(&mut self, end: u64) {
        #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
        if let Some(base) = self.shared.region.raw() {
            use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            /// Bytes asked for: a 400-byte record's worth, ...
            const PREFETCH: u64 = 512;
            /// ... this far past the record's end (four or five such records ahead: a
            /// line from the other core takes longer to arrive than one record takes to
            /// process).
            const AHEAD: u64 = 2048;
            if self.known_tail <= end {
                // SYNC: Relaxed: a hint, no read of the data depends on it (the records
                // themselves are still found through their headers' Acquire loads).
                self.known_tail = self.shared.region.word(W_TAIL).load(Ordering::Relaxed);
            }
            let from = end + AHEAD;
            let to = self.known_tail.min(from + PREFETCH);
            let mut at = from;
            while at < to {
                let idx = (at & self.shared.mask) as usize;
                // SAFETY: `idx` < capacity, so `DATA_OFFSET + idx` lies inside the region
                // `raw` points to (its `Region` promise); a prefetch reads nothing into the
                // program and cannot fault, whatever the peer wrote there.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(base.as_ptr().add(DATA_OFFSET + idx).cast()) };
                at += 64;
                #[cfg(test)]
                {
                    self.prefetched += 1;
                }
            }
        }
        #[cfg(not(all(target_arch = "x86_64", not(loom), not(miri))))]
        let _ = end;
    }

    /// Lends the next record in place, for storage that can lend its bytes; dropping the
    /// guard releases it. `Ok(None)`: the storage cannot lend (use [`Consumer::try_pop`]).
    #[inline]
    pub fn try_peek(&mut self) -> Result<Option<Peeked<'_, R>>, PopError> {
        let Some(base) = self.shared.region.raw() else {
            return Ok(None);
        };
        match self.next()? {
            Next::Empty => Err(self.empty()),
            Next::Record { at, len, end } => {
                // SAFETY: as in `try_pop`: validated in bounds, published, and not reused
                // by the producer before the guard (which borrows us mutably) is dropped.
                let bytes = unsafe { core::slice::from_raw_parts(base.as_ptr().add(at), len) };
                Ok(Some(Peeked {
                    bytes,
                    end,
                    consumer: Some(self),
                }))
            }
        }
    }
}

/// A record lent in place by [`Consumer::try_peek`]; dropping it releases the record.
#[derive(Debug)]
pub struct Peeked<'a, R: Region> {
    bytes: &'a [u8],
    end: u64,
    /// `Some` until released (by `release` or the drop).
    consumer: Option<&'a mut Consumer<R>>,
}

impl<'a, R: Region> Peeked<'a, R> {
    /// Releases the record, as dropping it does, and gives the consumer back (to wake a
    /// sleeping producer, say).
    #[inline]
    pub fn release(mut self) -> Option<&'a mut Consumer<R>> {
        let consumer = self.consumer.take()?;
        consumer.consumed(self.end);
        Some(consumer)
    }
}

impl<R: Region> core::ops::Deref for Peeked<'_, R> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes
    }
}

impl<R: Region> Drop for Peeked<'_, R> {
    fn drop(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            consumer.consumed(self.end);
        }
    }
}

#[cfg(all(test, not(loom)))]
// Test code: a failed unwrap is a failed test, with its message.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use alloc::sync::Arc;
    use alloc::vec;
    use alloc::vec::Vec;

    fn ring(
        capacity: usize,
    ) -> (
        Producer<Arc<HeapRegion>>,
        Consumer<Arc<HeapRegion>>,
        Arc<HeapRegion>,
    ) {
        let region = Arc::new(HeapRegion::new(region_len(capacity)));
        init(&*region, capacity).unwrap();
        let t = NonZeroU32::new(7).unwrap();
        (
            Producer::attach(region.clone(), t).unwrap(),
            Consumer::attach(region.clone(), t).unwrap(),
            region,
        )
    }

    fn payload(seq: usize, len: usize) -> Vec<u8> {
        (0..len).map(|i| (seq * 31 + i * 7) as u8).collect()
    }

    #[test]
    fn records_come_out_in_order_across_many_wraps() {
        let (mut p, mut c, _r) = ring(256);
        let mut buf = [0u8; 256];
        let lens = [0usize, 1, 7, 8, 9, 57, 100, max_payload(256)];
        for seq in 0..2000 {
            let len = lens[seq % lens.len()];
            p.try_push(&payload(seq, len)).unwrap();
            let n = c.try_pop(&mut buf).unwrap();
            assert_eq!(&buf[..n], &payload(seq, len)[..], "record {seq}");
            assert_eq!(c.try_pop(&mut buf), Err(PopError::Empty));
        }
    }

    #[test]
    fn a_consumer_behind_the_producer_reads_every_record_intact_across_wraps() {
        // The producer fills the ring and the consumer drains it to one record, over and
        // over: it never finds the ring empty, so it prefetches the written records ahead
        // of it (on x86_64), across the ring's end many times; what it reads must not
        // change.
        let (mut p, mut c, _r) = ring(4096);
        let mut buf = [0u8; 256];
        let (mut pushed, mut popped) = (0usize, 0usize);
        while popped < 20_000 {
            while p.try_push(&payload(pushed, 5 + pushed % 40)).is_ok() {
                pushed += 1;
            }
            while pushed - popped > 1 {
                let n = c.try_pop(&mut buf).unwrap();
                assert_eq!(
                    &buf[..n],
                    &payload(popped, 5 + popped % 40)[..],
                    "record {popped}"
                );
                popped += 1;
            }
        }
        assert!(!c.caught_up, "the consumer never caught up");
        if cfg!(all(target_arch = "x86_64", not(miri))) {
            assert!(c.prefetched > 0, "the hint never ran");
        }
        // Caught up, it prefetches nothing.
        while c.try_pop(&mut buf).is_ok() {}
        let before = c.prefetched;
        p.try_push(b"one").unwrap();
        assert_eq!(c.try_pop(&mut buf), Ok(3));
        assert_eq!(c.prefetched, before);
    }

    #[test]
    fn full_then_drained_and_truncation_keeps_the_record() {
        let (mut p, mut c, _r) = ring(256);
        let mut pushed = 0;
        while p.try_push(&payload(pushed, 24)).is_ok() {
            pushed += 1;
        }
        assert_eq!(p.try_push(&payload(pushed, 24)), Err(PushError::Full));
        assert!(
            pushed >= 6,
            "a 256-byte ring holds several 32-byte records, got {pushed}"
        );
        let mut small = [0u8; 10];
        assert_eq!(
            c.try_pop(&mut small),
            Err(PopError::Truncated { needed: 24 })
        );
        let mut buf = [0u8; 64];
        for seq in 0..pushed {
            assert_eq!(c.try_pop(&mut buf), Ok(24));
            assert_eq!(&buf[..24], &payload(seq, 24)[..]);
        }
        assert_eq!(c.try_pop(&mut buf), Err(PopError::Empty));
        p.try_push(b"again").unwrap();
        assert_eq!(c.try_pop(&mut buf), Ok(5));
    }

    #[test]
    fn too_large_is_refused_and_nothing_is_written() {
        let (mut p, mut c, _r) = ring(256);
        let max = max_payload(256);
        assert_eq!(
            p.try_push(&vec![0u8; max + 1]),
            Err(PushError::TooLarge { len: max + 1, max })
        );
        assert_eq!(c.try_pop(&mut [0u8; 8]), Err(PopError::Empty));
    }

    #[test]
    fn loans_and_peeks_are_zero_copy_and_a_dropped_loan_publishes_nothing() {
        let (mut p, mut c, _r) = ring(1024);
        {
            let mut loan = p.loan(5).unwrap();
            loan.as_mut_slice().unwrap().copy_from_slice(b"never");
        }
        assert_eq!(
            c.try_pop(&mut [0u8; 8]),
            Err(PopError::Empty),
            "a dropped loan publishes nothing"
        );
        let mut loan = p.loan(11).unwrap();
        loan.as_mut_slice().unwrap().copy_from_slice(b"hello world");
        loan.commit();
        p.try_push(b"next").unwrap();
        {
            let rec = c.try_peek().unwrap().unwrap();
            assert_eq!(&rec[..], b"hello world");
        }
        let mut buf = [0u8; 8];
        assert_eq!(c.try_pop(&mut buf), Ok(4));
        assert_eq!(&buf[..4], b"next");
    }

    #[test]
    fn a_closed_producer_is_disconnected_only_after_everything_is_read() {
        let (mut p, mut c, _r) = ring(256);
        p.try_push(b"last").unwrap();
        drop(p);
        let mut buf = [0u8; 8];
        assert_eq!(c.try_pop(&mut buf), Ok(4));
        assert_eq!(c.try_pop(&mut buf), Err(PopError::Disconnected));
    }

    #[test]
    fn a_closed_consumer_is_disconnected_when_the_ring_fills() {
        let (mut p, c, _r) = ring(256);
        drop(c);
        let mut result = Ok(());
        for seq in 0..100 {
            result = p.try_push(&payload(seq, 40));
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(PushError::Disconnected));
    }

    #[test]
    fn a_header_written_over_is_corrupt_not_a_departed_peer() {
        // The consumer "let go" by the claims, but the magic beside them is garbage too:
        // the claims are not to be believed.
        let (mut p, c, r) = ring(256);
        drop(c);
        r.word(W_MAGIC)
            .store(0xbad0_bad0_bad0_bad0, Ordering::Relaxed);
        let mut result = Ok(());
        for seq in 0..100 {
            result = p.try_push(&payload(seq, 40));
            if result.is_err() {
                break;
            }
        }
        assert_eq!(
            result,
            Err(PushError::Corrupt(Corruption::BadRingHeader {
                word: 0,
                found: 0xbad0_bad0_bad0_bad0
            }))
        );
        assert!(p.check_header().is_err());
        // The same from the consumer's side, with the capacity overwritten.
        let (p, mut c, r) = ring(256);
        drop(p);
        r.word(W_CAPACITY).store(3, Ordering::Relaxed);
        assert_eq!(
            c.try_pop(&mut [0u8; 8]),
            Err(PopError::Corrupt(Corruption::BadRingHeader {
                word: 2,
                found: 3
            }))
        );
    }

    #[test]
    fn attach_checks_the_header_and_the_claims() {
        let region = Arc::new(HeapRegion::new(region_len(256)));
        let t = NonZeroU32::new(1).unwrap();
        assert_eq!(
            Producer::attach(region.clone(), t).err(),
            Some(AttachError::BadMagic(0))
        );
        init(&*region, 256).unwrap();
        let p = Producer::attach(region.clone(), t).unwrap();
        assert_eq!(
            Producer::attach(region.clone(), t).err(),
            Some(AttachError::Claimed)
        );
        drop(p);
        region.word(W_VERSION).store(9, Ordering::Relaxed);
        assert_eq!(
            Consumer::attach(region.clone(), t).err(),
            Some(AttachError::BadVersion(9))
        );
        region.word(W_VERSION).store(VERSION, Ordering::Relaxed);
        region.word(W_CAPACITY).store(300, Ordering::Relaxed);
        assert_eq!(
            Consumer::attach(region.clone(), t).err(),
            Some(AttachError::BadCapacity(300))
        );
        region.word(W_CAPACITY).store(1 << 20, Ordering::Relaxed);
        assert!(matches!(
            Consumer::attach(region.clone(), t),
            Err(AttachError::TooSmall { .. })
        ));
        assert_eq!(init(&*region, 100), Err(AttachError::BadCapacity(100)));
        let small = HeapRegion::new(64);
        assert!(matches!(
            init(&small, 256),
            Err(AttachError::TooSmall { .. })
        ));
    }

    #[test]
    fn garbage_headers_and_lengths_are_corrupt_not_undefined() {
        let (mut p, mut c, r) = ring(256);
        let slot0 = DATA_OFFSET / 8;
        let mut buf = [0u8; 256];
        // A word that is not a header for position 0.
        r.word(slot0)
            .store(0xdead_beef_0000_0005, Ordering::Release);
        assert!(matches!(
            c.try_pop(&mut buf),
            Err(PopError::Corrupt(Corruption::BadHeader { position: 0, .. }))
        ));
        // A right stamp with a length running past the end of the data.
        r.word(slot0)
            .store(u64::from(stamp(0)) << 32 | 10_000, Ordering::Release);
        assert!(matches!(
            c.try_pop(&mut buf),
            Err(PopError::Corrupt(Corruption::BadLength { len: 10_000, .. }))
        ));
        // A wrap marker at index 0 (the producer never writes one there).
        r.word(slot0).store(
            u64::from(stamp(0)) << 32 | u64::from(WRAP),
            Ordering::Release,
        );
        assert!(matches!(
            c.try_pop(&mut buf),
            Err(PopError::Corrupt(Corruption::BadLength { .. }))
        ));
        // The consumer's published position beyond the producer's: the producer says so.
        r.word(slot0).store(0, Ordering::Release);
        for seq in 0..4 {
            p.try_push(&payload(seq, 40)).unwrap();
        }
        r.word(W_HEAD).store(u64::MAX / 2, Ordering::Release);
        let mut result = Ok(());
        for seq in 0..10 {
            result = p.try_push(&payload(seq, 40));
            if result.is_err() {
                break;
            }
        }
        assert!(
            matches!(result, Err(PushError::Corrupt(Corruption::BadHead { .. }))),
            "{result:?}"
        );
    }

    #[test]
    fn random_garbage_anywhere_never_panics() {
        // Whatever a hostile peer writes, every call returns; nothing panics or reads out
        // of bounds (Miri checks the latter).
        let (mut p, mut c, r) = ring(256);
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut buf = [0u8; 256];
        let rounds = if cfg!(miri) { 200 } else { 20_000 };
        for seq in 0..rounds {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let word = (x as usize) % r.words();
            if word != W_MAGIC && word != W_CAPACITY {
                r.word(word)
                    .store(x.rotate_left(seq % 64), Ordering::Release);
            }
            let _ = p.try_push(&payload(seq as usize, (x % 100) as usize));
            let _ = c.try_pop(&mut buf);
            let _ = c.try_peek().map(|g| g.map(|g| g.len()));
        }
    }
}
