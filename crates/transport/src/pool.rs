//! A chunk pool in one shared segment (docs/workloads.md §4): `n_chunks` chunks of
//! `chunk_bytes`, a *free* and a *ready* queue of chunk indices (lock-free bounded MPMC
//! queues, [`ipcbench_ring::Mpmc`], living in the mapping as offsets), a per-chunk sequence
//! word, a result region of `result_words` 64-bit words guarded by a mutex, and the pids
//! of the roles, so a waiting role notices a dead peer.
//!
//! The acquirer takes a free chunk, fills it, and marks it ready; a worker takes a ready
//! chunk, reads it, and returns it to the free queue. Whoever holds a chunk index holds
//! the chunk: the queue's Release/Acquire hand-over orders the bytes written before with
//! the reads after. Waits spin briefly, then sleep on a futex (the queue's event counter,
//! bumped after each push when someone sleeps), in slices of at most 10 ms, checking the
//! deadline and that a peer that could end the wait is still alive.
//!
//! Everything read from the mapping is checked: a header that does not describe the file,
//! an index past `n_chunks`, a sequence a queue never writes, a lock owner that is not a
//! role of the pool: each is [`PoolError::Corrupt`], never an out-of-bounds access.
//!
//! # Layout (64-bit words; chunk data from a page boundary)
//!
//! ```text
//! 0      header: magic, version, n_chunks, chunk_bytes, result_words, workers
//! 16     result lock (owner pid), free-queue event counter and sleepers,
//!        ready-queue event counter and sleepers
//! 32     pids: acquirer, then one per worker (up to MAX_WORKERS)
//! 32+64  per-chunk sequence words (n_chunks, rounded up to a line)
//! ...    free queue, ready queue (ipcbench_ring::queue_words each)
//! ...    result region (result_words)
//! page   chunk i at data + i * chunk_bytes
//! ```
#![allow(unsafe_code)]

use std::path::Path;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipcbench_ring::{queue_words, Mpmc, QueueError};

use crate::segment::Segment;
use crate::sys::{alive, futex_wait, futex_wake};
use crate::SetupError;

/// Pool magic: "IPBPOOL1".
const MAGIC: u64 = 0x314c_4f4f_5050_4249;
const VERSION: u64 = 1;
/// Most workers a pool has room for.
pub const MAX_WORKERS: usize = 63;
const W_N_CHUNKS: usize = 2;
const W_CHUNK_BYTES: usize = 3;
const W_RESULT_WORDS: usize = 4;
const W_WORKERS: usize = 5;
const W_LOCK: usize = 16;
const W_FREE_EVENTS: usize = 17;
const W_FREE_SLEEPERS: usize = 18;
const W_READY_EVENTS: usize = 19;
const W_READY_SLEEPERS: usize = 20;
const W_PIDS: usize = 32;
const W_SEQS: usize = W_PIDS + 64;
const PAGE: usize = 4096;
/// Longest single futex sleep: a dead peer or a deadline is noticed within it.
const SLEEP: Duration = Duration::from_millis(10);
/// How long a wait polls before it sleeps.
const SPIN: Duration = Duration::from_micros(20);

/// The shape of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolShape {
    /// Chunks in the pool.
    pub n_chunks: u32,
    /// Bytes per chunk (a multiple of 8).
    pub chunk_bytes: u64,
    /// 64-bit words of the result region.
    pub result_words: u32,
    /// Worker roles (each gets an end marker).
    pub workers: u32,
}

fn line(words: usize) -> usize {
    words.div_ceil(16) * 16
}

impl PoolShape {
    fn free_cap(&self) -> usize {
        (self.n_chunks as usize).next_power_of_two().max(2)
    }
    fn ready_cap(&self) -> usize {
        (self.n_chunks as usize + self.workers as usize)
            .next_power_of_two()
            .max(2)
    }
    fn w_free(&self) -> usize {
        W_SEQS + line(self.n_chunks as usize)
    }
    fn w_ready(&self) -> usize {
        self.w_free() + line(queue_words(self.free_cap()))
    }
    fn w_result(&self) -> usize {
        self.w_ready() + line(queue_words(self.ready_cap()))
    }
    fn data_offset(&self) -> usize {
        ((self.w_result() + self.result_words as usize) * 8).next_multiple_of(PAGE)
    }

    /// Bytes of the whole segment.
    pub fn segment_bytes(&self) -> Option<usize> {
        (self.n_chunks as usize)
            .checked_mul(usize::try_from(self.chunk_bytes).ok()?)?
            .checked_add(self.data_offset())
    }

    fn check(&self) -> Result<(), String> {
        if self.n_chunks == 0 || self.n_chunks > 1 << 20 {
            return Err(format!("{} chunks: 1 to 2^20", self.n_chunks));
        }
        if self.chunk_bytes == 0 || self.chunk_bytes % 8 != 0 {
            return Err(format!(
                "a chunk of {} bytes: a positive multiple of 8",
                self.chunk_bytes
            ));
        }
        if self.workers == 0 || self.workers as usize > MAX_WORKERS {
            return Err(format!("{} workers: 1 to {MAX_WORKERS}", self.workers));
        }
        if self.segment_bytes().is_none() {
            return Err("the pool does not fit the address space".into());
        }
        Ok(())
    }
}

/// Why a pool operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The mapping holds something the protocol never writes.
    #[error("pool corrupt: {0}")]
    Corrupt(String),
    /// Every peer that could end this wait is gone.
    #[error("the pool's other side is gone")]
    Disconnected,
    /// The wait passed its deadline.
    #[error("timed out waiting on the pool")]
    Timeout,
}

impl From<QueueError> for PoolError {
    fn from(e: QueueError) -> Self {
        PoolError::Corrupt(e.to_string())
    }
}

/// Which role a process plays in a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolRole {
    /// The one acquirer.
    Acquirer,
    /// Worker number `i` (from 0).
    Worker(u32),
}

/// A pool mapped into this process.
#[derive(Debug)]
pub struct Pool {
    seg: Segment,
    shape: PoolShape,
    /// Chunks this process holds now: a corrupt queue that hands the same index out
    /// twice is caught here, never turned into two views of the same bytes.
    held: Vec<std::sync::atomic::AtomicBool>,
}

impl Pool {
    /// Creates the segment (`O_EXCL`, 0600), lays out the header, both queues (every chunk
    /// free) and a zero result. The creator removes the file when dropped.
    pub fn create(path: &Path, shape: PoolShape) -> Result<Pool, SetupError> {
        shape.check().map_err(SetupError::Invalid)?;
        let bytes = shape
            .segment_bytes()
            .ok_or_else(|| SetupError::Invalid("pool too large".into()))?;
        let seg = Segment::create_with(path, bytes, true)?;
        let pool = Pool::new(seg, shape);
        let w = pool.seg.words();
        for (i, v) in [
            (W_N_CHUNKS, u64::from(shape.n_chunks)),
            (W_CHUNK_BYTES, shape.chunk_bytes),
            (W_RESULT_WORDS, u64::from(shape.result_words)),
            (W_WORKERS, u64::from(shape.workers)),
            (1, VERSION),
        ] {
            w[i].store(v, Ordering::Relaxed);
        }
        let free = pool.free()?;
        free.init();
        pool.ready()?.init();
        for i in 0..u64::from(shape.n_chunks) {
            free.push(i)
                .map_err(|e| SetupError::Invalid(e.to_string()))?;
        }
        // SYNC: Release pairs with the Acquire load of the magic in `open`: a process that
        // sees the magic sees the whole initial state.
        w[0].store(MAGIC, Ordering::Release);
        Ok(pool)
    }

    /// Maps an existing pool and checks its header against its file.
    pub fn open(path: &Path) -> Result<Pool, SetupError> {
        let len = std::fs::metadata(path)
            .map_err(|e| SetupError::io("stat pool", path.display(), e))?
            .len();
        let len = usize::try_from(len).map_err(|_| SetupError::Invalid("pool too large".into()))?;
        let seg = Segment::open_with(path, len, true)?;
        let w = seg.words();
        let bad = |m: String| SetupError::Invalid(format!("{}: {m}", path.display()));
        // SYNC: Acquire pairs with the Release store of the magic in `create`.
        if w.len() < W_SEQS || w[0].load(Ordering::Acquire) != MAGIC {
            return Err(bad("not a pool (bad magic)".into()));
        }
        let get = |i: usize| w[i].load(Ordering::Relaxed);
        if get(1) != VERSION {
            return Err(bad(format!("pool version {}, expected {VERSION}", get(1))));
        }
        let small = |i: usize| {
            u32::try_from(get(i)).map_err(|_| bad(format!("header word {i} is {}", get(i))))
        };
        let shape = PoolShape {
            n_chunks: small(W_N_CHUNKS)?,
            chunk_bytes: get(W_CHUNK_BYTES),
            result_words: small(W_RESULT_WORDS)?,
            workers: small(W_WORKERS)?,
        };
        shape.check().map_err(bad)?;
        if shape.segment_bytes() != Some(len) {
            return Err(bad(format!(
                "{len} bytes, but the header describes {:?}",
                shape.segment_bytes()
            )));
        }
        Ok(Pool::new(seg, shape))
    }

    fn new(seg: Segment, shape: PoolShape) -> Pool {
        let held = (0..shape.n_chunks)
            .map(|_| std::sync::atomic::AtomicBool::new(false))
            .collect();
        Pool { seg, shape, held }
    }

    /// Marks `idx` held by this process; an index already held is corruption.
    fn hold(&self, idx: u32) -> Result<(), PoolError> {
        if self.held[idx as usize].swap(true, Ordering::Relaxed) {
            return Err(PoolError::Corrupt(format!(
                "chunk {idx} handed out while this process holds it"
            )));
        }
        Ok(())
    }

    fn unhold(&self, idx: u32) {
        self.held[idx as usize].store(false, Ordering::Relaxed);
    }

    /// The segment's file.
    pub fn path(&self) -> &Path {
        self.seg.path()
    }

    /// The pool's shape.
    pub fn shape(&self) -> PoolShape {
        self.shape
    }

    fn free(&self) -> Result<Mpmc<'_, [AtomicU64]>, SetupError> {
        let max = u64::from(self.shape.n_chunks) - 1;
        self.queue(self.shape.w_free(), self.shape.free_cap(), max)
    }

    fn ready(&self) -> Result<Mpmc<'_, [AtomicU64]>, SetupError> {
        // Values: a chunk index, or `n_chunks` for the end marker.
        let max = u64::from(self.shape.n_chunks);
        self.queue(self.shape.w_ready(), self.shape.ready_cap(), max)
    }

    fn queue(
        &self,
        base: usize,
        cap: usize,
        max: u64,
    ) -> Result<Mpmc<'_, [AtomicU64]>, SetupError> {
        Mpmc::new(self.seg.words(), base, cap, max)
            .ok_or_else(|| SetupError::Invalid("a queue does not fit the pool".into()))
    }

    /// Records this process's pid as `role`, so peers can tell when it is gone.
    pub fn register(&self, role: PoolRole) -> Result<(), PoolError> {
        let slot = self.pid_slot(role)?;
        slot.store(u64::from(std::process::id()), Ordering::Release);
        Ok(())
    }

    fn pid_slot(&self, role: PoolRole) -> Result<&AtomicU64, PoolError> {
        let i = match role {
            PoolRole::Acquirer => 0,
            PoolRole::Worker(w) if w < self.shape.workers => 1 + w as usize,
            PoolRole::Worker(w) => {
                return Err(PoolError::Corrupt(format!(
                    "worker {w} of a pool for {}",
                    self.shape.workers
                )))
            }
        };
        Ok(&self.seg.words()[W_PIDS + i])
    }

    fn any_alive(&self, roles: impl Iterator<Item = PoolRole>) -> bool {
        roles.into_iter().any(|r| {
            self.pid_slot(r)
                .map(|s| alive(Some(s.load(Ordering::Acquire))))
                .unwrap_or(false)
        })
    }

    fn workers(&self) -> impl Iterator<Item = PoolRole> {
        (0..self.shape.workers).map(PoolRole::Worker)
    }
}

/// Which queue.
#[derive(Debug, Clone, Copy)]
enum Which {
    Free,
    Ready,
}

impl Pool {
    fn side(
        &self,
        which: Which,
    ) -> Result<(Mpmc<'_, [AtomicU64]>, &AtomicU64, &AtomicU64), PoolError> {
        let w = self.seg.words();
        let q = match which {
            Which::Free => self.free(),
            Which::Ready => self.ready(),
        }
        .map_err(|e| PoolError::Corrupt(e.to_string()))?;
        Ok(match which {
            Which::Free => (q, &w[W_FREE_EVENTS], &w[W_FREE_SLEEPERS]),
            Which::Ready => (q, &w[W_READY_EVENTS], &w[W_READY_SLEEPERS]),
        })
    }

    /// Pushes `v` and wakes sleepers of that queue, if any. The queues have room for
    /// every index (and every end marker), so a queue that stays full is corruption; but
    /// the cell we need can still be held by a consumer that claimed it and was then
    /// preempted before its release store (a lap ago, while others went round): we retry
    /// for up to 10 s, which a preempted process outlives only if it is stopped for good.
    fn push_wake(&self, which: Which, v: u64) -> Result<(), PoolError> {
        let (q, events, sleepers) = self.side(which)?;
        let mut until: Option<Instant> = None;
        loop {
            match q.push(v) {
                Ok(()) => break,
                Err(QueueError::WouldBlock) => {
                    let end =
                        *until.get_or_insert_with(|| Instant::now() + Duration::from_secs(10));
                    if Instant::now() >= end {
                        return Err(PoolError::Corrupt(format!(
                            "{which:?} queue stayed full: more indices in flight than chunks"
                        )));
                    }
                    std::thread::yield_now();
                }
                Err(e) => return Err(e.into()),
            }
        }
        // SYNC: this SeqCst fence pairs with the one a waiter issues after raising the
        // sleeper count: either we see its count and wake it, or its re-check sees our push.
        fence(Ordering::SeqCst);
        if sleepers.load(Ordering::Relaxed) > 0 {
            events.fetch_add(1, Ordering::Release);
            futex_wake(events);
        }
        Ok(())
    }

    /// Pops from `which`, waiting until `deadline`: polls for [`SPIN`], then sleeps on the
    /// queue's event counter in slices of at most 10 ms. `peers_alive` says whether anyone
    /// who could push is still running.
    fn wait_pop(
        &self,
        which: Which,
        deadline: Instant,
        peers_alive: impl Fn() -> bool,
    ) -> Result<u64, PoolError> {
        let (q, events, sleepers) = self.side(which)?;
        // The clock is read only once the queue was found empty.
        let mut start: Option<Instant> = None;
        let mut polls = 0u32;
        loop {
            match q.pop() {
                Ok(v) => return Ok(v),
                Err(QueueError::WouldBlock) => {}
                Err(e) => return Err(e.into()),
            }
            let start = *start.get_or_insert_with(Instant::now);
            polls = polls.wrapping_add(1);
            if polls % 64 != 0 || start.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let seen = events.load(Ordering::Acquire) as u32;
            sleepers.fetch_add(1, Ordering::SeqCst);
            // SYNC: pairs with the fence in `push_wake` (see there).
            fence(Ordering::SeqCst);
            let again = q.pop();
            if matches!(again, Err(QueueError::WouldBlock)) {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .min(SLEEP);
                futex_wait(events, seen, left);
            }
            sleepers.fetch_sub(1, Ordering::SeqCst);
            match again {
                Ok(v) => return Ok(v),
                Err(QueueError::WouldBlock) => {}
                Err(e) => return Err(e.into()),
            }
            if !peers_alive() {
                // What they pushed before they went is still ours.
                return match q.pop() {
                    Ok(v) => Ok(v),
                    Err(QueueError::WouldBlock) => Err(PoolError::Disconnected),
                    Err(e) => Err(e.into()),
                };
            }
            if Instant::now() >= deadline {
                return Err(PoolError::Timeout);
            }
        }
    }

    fn chunk_ptr(&self, idx: u32) -> *mut u8 {
        let off = self.shape.data_offset() + idx as usize * self.shape.chunk_bytes as usize;
        // SAFETY (of the arithmetic): `idx < n_chunks` (checked by the queues' value bound
        // and by `hold`), so the offset is inside the segment, whose length `open` checked.
        self.seg.base().wrapping_add(off)
    }

    fn seq_word(&self, idx: u32) -> &AtomicU64 {
        &self.seg.words()[W_SEQS + idx as usize]
    }

    /// Takes a free chunk for the acquirer, waiting until `deadline` while every chunk is
    /// in use (workers return them).
    pub fn take_free(&self, deadline: Instant) -> Result<FreeChunk<'_>, PoolError> {
        let v = self.wait_pop(Which::Free, deadline, || self.any_alive(self.workers()))?;
        let idx = self.index(v)?;
        self.hold(idx)?;
        Ok(FreeChunk { pool: self, idx })
    }

    /// Takes a ready chunk for a worker, waiting until `deadline`; `None` is an end marker
    /// (the acquirer is done: this worker should stop).
    pub fn take_ready(&self, deadline: Instant) -> Result<Option<ReadyChunk<'_>>, PoolError> {
        let v = self.wait_pop(Which::Ready, deadline, || {
            self.any_alive(std::iter::once(PoolRole::Acquirer))
        })?;
        if v == u64::from(self.shape.n_chunks) {
            return Ok(None);
        }
        let idx = self.index(v)?;
        self.hold(idx)?;
        Ok(Some(ReadyChunk { pool: self, idx }))
    }

    fn index(&self, v: u64) -> Result<u32, PoolError> {
        u32::try_from(v)
            .ok()
            .filter(|i| *i < self.shape.n_chunks)
            .ok_or_else(|| {
                PoolError::Corrupt(format!("chunk index {v} of {}", self.shape.n_chunks))
            })
    }

    /// Puts one end marker per worker on the ready queue (after the last chunk).
    pub fn end(&self) -> Result<(), PoolError> {
        for _ in 0..self.shape.workers {
            self.push_wake(Which::Ready, u64::from(self.shape.n_chunks))?;
        }
        Ok(())
    }

    /// Locks the result region, waiting (yielding) until `deadline`; a lock held by a
    /// process that is gone is an error (its merge may be half done).
    pub fn lock_result(&self, deadline: Instant) -> Result<ResultGuard<'_>, PoolError> {
        let lock = &self.seg.words()[W_LOCK];
        let me = u64::from(std::process::id());
        let mut tries = 0u32;
        loop {
            // SYNC: Acquire pairs with the Release store that unlocks (ResultGuard::drop):
            // the previous holder's merge is visible to us.
            match lock.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Ok(ResultGuard { pool: self }),
                Err(owner) => {
                    tries = tries.wrapping_add(1);
                    if tries % 256 == 0 {
                        if !alive(Some(owner)) {
                            return Err(PoolError::Corrupt(format!(
                                "the result lock is held by process {owner}, which is gone"
                            )));
                        }
                        if Instant::now() >= deadline {
                            return Err(PoolError::Timeout);
                        }
                    }
                    std::thread::yield_now();
                }
            }
        }
    }
}

/// A free chunk held by the acquirer: fill it, then [`FreeChunk::publish`].
#[derive(Debug)]
pub struct FreeChunk<'a> {
    pool: &'a Pool,
    idx: u32,
}

impl FreeChunk<'_> {
    /// The chunk's index.
    pub fn index(&self) -> u32 {
        self.idx
    }

    /// The chunk's bytes, to fill in place.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.pool.shape.chunk_bytes as usize;
        // SAFETY: the index came off the free queue (Acquire), so no worker holds it until
        // we publish it (Release); it is in bounds (`index` checked it, `open` checked the
        // length); `hold` made this the only handle to it in this process and `&mut self`
        // the only view through the handle. A hostile process
        // writing the same bytes anyway can only make us read garbage values.
        unsafe { std::slice::from_raw_parts_mut(self.pool.chunk_ptr(self.idx), len) }
    }

    /// Marks the chunk ready with its sequence number (the order the acquirer filled it).
    pub fn publish(self, seq: u64) -> Result<(), PoolError> {
        // Ordered before the index by the queue's Release publication.
        self.pool.seq_word(self.idx).store(seq, Ordering::Relaxed);
        self.pool.unhold(self.idx);
        self.pool.push_wake(Which::Ready, u64::from(self.idx))
    }
}

/// A ready chunk held by a worker: read it, then [`ReadyChunk::release`].
#[derive(Debug)]
pub struct ReadyChunk<'a> {
    pool: &'a Pool,
    idx: u32,
}

impl ReadyChunk<'_> {
    /// The chunk's index.
    pub fn index(&self) -> u32 {
        self.idx
    }

    /// The sequence number the acquirer gave it.
    pub fn seq(&self) -> u64 {
        self.pool.seq_word(self.idx).load(Ordering::Relaxed)
    }

    /// The chunk's bytes.
    pub fn bytes(&self) -> &[u8] {
        let len = self.pool.shape.chunk_bytes as usize;
        // SAFETY: the index came off the ready queue (Acquire pairs with the acquirer's
        // Release push after it filled the chunk); the acquirer does not touch it until we
        // return it; in bounds and the only handle in this process, as in
        // `FreeChunk::bytes_mut`.
        unsafe { std::slice::from_raw_parts(self.pool.chunk_ptr(self.idx), len) }
    }

    /// Returns the chunk to the free queue.
    pub fn release(self) -> Result<(), PoolError> {
        self.pool.unhold(self.idx);
        self.pool.push_wake(Which::Free, u64::from(self.idx))
    }
}

/// The locked result region; unlocks when dropped.
#[derive(Debug)]
pub struct ResultGuard<'a> {
    pool: &'a Pool,
}

impl ResultGuard<'_> {
    /// The result's words (`result_words` of them).
    pub fn words(&self) -> &[AtomicU64] {
        let s = self.pool.shape;
        &self.pool.seg.words()[s.w_result()..s.w_result() + s.result_words as usize]
    }
}

impl Drop for ResultGuard<'_> {
    fn drop(&mut self) {
        // SYNC: Release pairs with the Acquire CAS in `lock_result`.
        self.pool.seg.words()[W_LOCK].store(0, Ordering::Release);
    }
}

impl Pool {
    /// The result's words read through the segment's file, not the mapping: for a reader
    /// that must not fault if another process shrank the file (a short file is an error).
    pub fn read_result(&self) -> Result<Vec<u64>, SetupError> {
        use std::os::unix::fs::FileExt;
        let s = self.shape;
        let path = self.seg.path();
        let file =
            std::fs::File::open(path).map_err(|e| SetupError::io("open", path.display(), e))?;
        let mut bytes = vec![0u8; s.result_words as usize * 8];
        file.read_exact_at(&mut bytes, (s.w_result() * 8) as u64)
            .map_err(|e| SetupError::io("read the result of", path.display(), e))?;
        Ok(bytes
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]))
            .collect())
    }

    /// The result's words without the lock, for reading after every role is done.
    pub fn result_unlocked(&self) -> &[AtomicU64] {
        let s = self.shape;
        &self.seg.words()[s.w_result()..s.w_result() + s.result_words as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> PoolShape {
        PoolShape {
            n_chunks: 4,
            chunk_bytes: 64,
            result_words: 3,
            workers: 2,
        }
    }

    #[test]
    fn chunks_go_round_in_threads_and_end_markers_stop_the_workers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool");
        let pool = Pool::create(&path, shape()).unwrap();
        pool.register(PoolRole::Acquirer).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let n = 500u64;
        let seen = std::thread::scope(|sc| {
            let workers: Vec<_> = (0..2)
                .map(|w| {
                    let path = path.clone();
                    sc.spawn(move || {
                        let pool = Pool::open(&path).unwrap();
                        pool.register(PoolRole::Worker(w)).unwrap();
                        let mut seqs = Vec::new();
                        while let Some(c) = pool.take_ready(deadline).unwrap() {
                            let seq = c.seq();
                            assert!(c.bytes().iter().all(|b| *b == seq as u8), "chunk {seq}");
                            seqs.push(seq);
                            c.release().unwrap();
                            let g = pool.lock_result(deadline).unwrap();
                            let w0 = &g.words()[0];
                            w0.store(w0.load(Ordering::Relaxed) + seq, Ordering::Relaxed);
                        }
                        seqs
                    })
                })
                .collect();
            for seq in 0..n {
                let mut c = pool.take_free(deadline).unwrap();
                c.bytes_mut().fill(seq as u8);
                c.publish(seq).unwrap();
            }
            pool.end().unwrap();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect::<Vec<_>>()
        });
        let mut seen = seen;
        seen.sort_unstable();
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
        assert_eq!(
            pool.result_unlocked()[0].load(Ordering::Relaxed),
            n * (n - 1) / 2
        );
        drop(pool);
        assert!(!path.exists(), "the creator removes the pool");
    }

    #[test]
    fn a_bad_header_or_size_is_refused_and_a_wait_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool");
        let pool = Pool::create(&path, shape()).unwrap();
        let other = Pool::open(&path).unwrap();
        assert_eq!(other.shape(), shape());
        // Nothing is ready and the acquirer (us, registered) is alive: a timeout.
        pool.register(PoolRole::Acquirer).unwrap();
        let t0 = Instant::now();
        assert_eq!(
            other
                .take_ready(Instant::now() + Duration::from_millis(50))
                .err(),
            Some(PoolError::Timeout)
        );
        assert!(t0.elapsed() < Duration::from_secs(5));
        // A dead acquirer (a pid that cannot exist): disconnected, not a hang.
        pool.seg.words()[W_PIDS].store(u64::from(u32::MAX - 1), Ordering::Release);
        assert_eq!(
            other
                .take_ready(Instant::now() + Duration::from_secs(20))
                .err(),
            Some(PoolError::Disconnected)
        );
        // Header lies.
        pool.seg.words()[W_N_CHUNKS].store(5, Ordering::Relaxed);
        assert!(Pool::open(&path).is_err());
        pool.seg.words()[W_N_CHUNKS].store(4, Ordering::Relaxed);
        pool.seg.words()[0].store(7, Ordering::Relaxed);
        assert!(Pool::open(&path).is_err());
        assert!(PoolShape {
            n_chunks: 0,
            ..shape()
        }
        .check()
        .is_err());
        assert!(PoolShape {
            chunk_bytes: 12,
            ..shape()
        }
        .check()
        .is_err());
        assert!(PoolShape {
            workers: 0,
            ..shape()
        }
        .check()
        .is_err());
    }

    #[test]
    fn a_corrupt_index_or_a_double_hand_out_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool");
        let pool = Pool::create(&path, shape()).unwrap();
        pool.register(PoolRole::Acquirer).unwrap();
        pool.register(PoolRole::Worker(0)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let held = pool.take_free(deadline).unwrap();
        assert_eq!(held.index(), 0);
        // Another copy of index 0 on the free queue (a broken peer): refused while held.
        let (q, _, _) = pool.side(Which::Free).unwrap();
        for _ in 0..3 {
            let _ = q.pop();
        }
        q.push(0).unwrap();
        assert!(matches!(
            pool.take_free(deadline),
            Err(PoolError::Corrupt(_))
        ));
        // An index past the pool on the ready queue.
        let (r, _, _) = pool.side(Which::Ready).unwrap();
        let w = pool.shape.w_ready() + 32 + 1;
        r.push(1).unwrap();
        pool.seg.words()[w].store(99, Ordering::Relaxed);
        assert!(matches!(
            pool.take_ready(deadline),
            Err(PoolError::Corrupt(_))
        ));
        assert!(matches!(
            pool.register(PoolRole::Worker(7)),
            Err(PoolError::Corrupt(_))
        ));
    }
}
