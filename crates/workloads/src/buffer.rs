//! `buffer`: parallel acquisition into a shared chunk pool (docs/workloads.md §4), zero-copy
//! against copy.
//!
//! An acquirer fills chunks of `exemplars × elems` elements of one dtype; K workers
//! process them into private partial results and merge those into a shared result under
//! the pool's lock. Zero-copy: chunks live in the pool ([`Pool`]) and only their indices
//! move. Copy: the acquirer fills a private buffer and sends its bytes to the workers in
//! turn over a transport.
//!
//! Every chunk starts with a 16-byte header, its sequence number and the time it was
//! marked ready (`CLOCK_MONOTONIC` ns), then its rows. "Acquisition" copies one of
//! [`BLOCKS`] blocks drawn from the seed before the clock starts (an [`Acquisition`]), as
//! a frame grabber's DMA would deliver bytes: generating fresh random data would cost more than the pool
//! moves. The block for chunk `s` is `(s * 5 + 3) % BLOCKS`, so neighbours differ.
//!
//! Kinds: `sum` (per-column sums, cheap: the pool's own speed) and `transitions` (u32
//! codes below 512, one row per frame; code-to-code transitions between consecutive
//! frames counted into a 512×512 matrix). For `transitions` each chunk carries the
//! previous chunk's last frame as row 0, so the transitions that cross a chunk boundary
//! (which the original lost) are counted by the worker that takes the later chunk.
//!
//! Values are generated so every result is exact whatever the order of merging: integer
//! sums wrap modulo 2^64, and float data holds small integers, whose sums are exact in
//! f64. [`reference`] computes the result in one process from the same seed; the harness
//! compares.

use std::time::{Duration, Instant};

use ipcbench_transport::pool::{Pool, PoolError};
use serde::{Deserialize, Serialize};

use crate::{monotonic_ns, new_histogram, splitmix, Measurement, Rx, Tx, WorkloadError};

/// Pre-drawn blocks the acquirer copies chunks from.
pub const BLOCKS: u64 = 8;
/// Bytes of a chunk's header: sequence number, ready time.
pub const CHUNK_HEADER: usize = 16;
/// Codes of the `transitions` kind.
pub const CODES: usize = 512;
const END: u64 = u64::MAX;

/// Element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// u8
    U8,
    /// u16
    U16,
    /// i16
    I16,
    /// u32
    U32,
    /// f32
    F32,
    /// f64
    F64,
}

impl Dtype {
    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            Dtype::U8 => 1,
            Dtype::U16 | Dtype::I16 => 2,
            Dtype::U32 | Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }

    fn float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F64)
    }
}

/// What a worker computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Per-column sums.
    Sum,
    /// Code-to-code transitions between consecutive frames.
    Transitions,
}

/// Parameters of a buffer run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BufferParams {
    /// Element type.
    pub dtype: Dtype,
    /// Rows (frames) per chunk.
    pub exemplars: u32,
    /// Elements per row.
    pub elems: u32,
    /// Chunks produced.
    pub chunks: u64,
    /// Worker processes.
    pub workers: u32,
    /// Processing kind.
    pub kind: Kind,
    /// Seed of the data.
    pub seed: u64,
}

impl BufferParams {
    /// Rows a chunk holds: `exemplars`, plus the carried previous frame for `transitions`.
    pub fn rows(&self) -> usize {
        self.exemplars as usize + usize::from(self.kind == Kind::Transitions)
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.elems as usize * self.dtype.bytes()
    }

    /// Data bytes of a chunk (the exemplars, without header or carried row).
    pub fn data_bytes(&self) -> usize {
        self.exemplars as usize * self.row_bytes()
    }

    /// Bytes of a chunk in the pool or on the wire: header, rows, padded to 8.
    pub fn chunk_bytes(&self) -> usize {
        (CHUNK_HEADER + self.rows() * self.row_bytes()).next_multiple_of(8)
    }

    /// 64-bit words of the result.
    pub fn result_words(&self) -> usize {
        match self.kind {
            Kind::Sum => self.elems as usize,
            Kind::Transitions => CODES * CODES,
        }
    }

    /// Checks the combination.
    pub fn check(&self) -> Result<(), WorkloadError> {
        let bad = |m: String| Err(WorkloadError::Param(m));
        if self.exemplars == 0 || self.elems == 0 || self.chunks == 0 || self.workers == 0 {
            return bad("exemplars, elems, chunks and workers must be at least 1".into());
        }
        if self.kind == Kind::Transitions && self.dtype != Dtype::U32 {
            return bad("transitions needs dtype = \"u32\" (codes 0..512)".into());
        }
        Ok(())
    }
}

/// Element `i` of block `b`, as the bytes of `dtype` (little-endian). Floats hold small
/// integers, so every sum of them is exact.
fn element(p: &BufferParams, b: u64, i: u64, out: &mut [u8]) {
    let r = splitmix(p.seed ^ (b << 40), i);
    match (p.kind, p.dtype) {
        (Kind::Transitions, _) => out.copy_from_slice(&((r % CODES as u64) as u32).to_le_bytes()),
        (_, Dtype::U8) => out[0] = r as u8,
        (_, Dtype::U16) => out.copy_from_slice(&(r as u16).to_le_bytes()),
        (_, Dtype::I16) => out.copy_from_slice(&(r as i16).to_le_bytes()),
        (_, Dtype::U32) => out.copy_from_slice(&(r as u32).to_le_bytes()),
        (_, Dtype::F32) => out.copy_from_slice(&(((r % 2001) as f32) - 1000.0).to_le_bytes()),
        (_, Dtype::F64) => out.copy_from_slice(&(((r % 2001) as f64) - 1000.0).to_le_bytes()),
    }
}

/// The acquirer's source: the run's parameters and the [`BLOCKS`] blocks chunks are
/// copied from, drawn from the seed. Build it before the run's clock starts (the roles do
/// so before the harness says go): drawing the blocks is setup, not acquisition.
#[derive(Debug)]
pub struct Acquisition {
    p: BufferParams,
    blocks: Vec<Vec<u8>>,
}

impl Acquisition {
    /// Checks `p` and draws the blocks (`exemplars` rows each).
    pub fn new(p: &BufferParams) -> Result<Acquisition, WorkloadError> {
        p.check()?;
        let w = p.dtype.bytes();
        let blocks = (0..BLOCKS)
            .map(|b| {
                let mut v = vec![0u8; p.data_bytes()];
                for (i, e) in v.chunks_exact_mut(w).enumerate() {
                    element(p, b, i as u64, e);
                }
                v
            })
            .collect();
        Ok(Acquisition { p: *p, blocks })
    }

    /// The parameters it was drawn for.
    pub fn params(&self) -> &BufferParams {
        &self.p
    }

    /// Writes chunk `seq` into `chunk` (header, carried row, data); for `transitions` the
    /// carried row is the last row of chunk `seq - 1`, taken from its block.
    fn fill(&self, seq: u64, chunk: &mut [u8]) {
        let data = &self.blocks[block_of(seq)];
        chunk[..8].copy_from_slice(&seq.to_le_bytes());
        let mut at = CHUNK_HEADER;
        if self.p.kind == Kind::Transitions {
            let rb = self.p.row_bytes();
            if seq > 0 {
                let prev = &self.blocks[block_of(seq - 1)];
                chunk[at..at + rb].copy_from_slice(&prev[prev.len() - rb..]);
            }
            at += rb;
        }
        chunk[at..at + data.len()].copy_from_slice(data);
    }
}

/// Which block chunk `seq` is copied from.
pub fn block_of(seq: u64) -> usize {
    ((seq * 5 + 3) % BLOCKS) as usize
}

/// A private chunk buffer whose pages are touched now, before the clock, not by the
/// first chunk (zeroed memory would be mapped lazily).
fn touched(len: usize) -> Vec<u8> {
    vec![0xa5u8; len]
}

/// Writes the chunk's ready time into its header and returns it.
fn stamp_ready(chunk: &mut [u8]) -> u64 {
    let now = monotonic_ns();
    chunk[8..16].copy_from_slice(&now.to_le_bytes());
    now
}

fn word(b: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[i * 8..i * 8 + 8]);
    u64::from_le_bytes(w)
}

/// A worker's private partial result.
#[derive(Debug)]
pub struct Partial {
    words: Vec<u64>,
    kind: Kind,
    float: bool,
    /// `transitions`: the cells counted since the last merge, so a merge and a clear cost
    /// what the chunk touched, not the whole 512x512 matrix.
    touched: Vec<u32>,
}

impl Partial {
    /// An empty partial.
    pub fn new(p: &BufferParams) -> Partial {
        Partial {
            words: vec![0; p.result_words()],
            kind: p.kind,
            float: p.dtype.float(),
            touched: Vec::new(),
        }
    }

    fn clear(&mut self) {
        match self.kind {
            Kind::Transitions => {
                for &i in &self.touched {
                    self.words[i as usize] = 0;
                }
                self.touched.clear();
            }
            Kind::Sum => self.words.iter_mut().for_each(|w| *w = 0),
        }
    }

    /// Adds this partial into `into` (wrapping u64 for integers and counts, f64 bits
    /// for float sums).
    fn merge_into(&self, into: &[std::sync::atomic::AtomicU64]) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.kind == Kind::Transitions {
            for &i in &self.touched {
                let (dst, v) = (&into[i as usize], self.words[i as usize]);
                dst.store(dst.load(Relaxed).wrapping_add(v), Relaxed);
            }
            return;
        }
        for (dst, &v) in into.iter().zip(&self.words) {
            if v == 0 {
                continue;
            }
            let old = dst.load(Relaxed);
            let new = if self.float && self.kind == Kind::Sum {
                (f64::from_bits(old) + f64::from_bits(v)).to_bits()
            } else {
                old.wrapping_add(v)
            };
            dst.store(new, Relaxed);
        }
    }

    /// Adds this partial into the pool's result under its lock, then empties it.
    fn merge_locked(&mut self, pool: &Pool, deadline: Instant) -> Result<(), WorkloadError> {
        let guard = pool.lock_result(deadline).map_err(pool_err)?;
        self.merge_into(guard.words());
        drop(guard);
        self.clear();
        Ok(())
    }

    /// The result words.
    pub fn words(&self) -> &[u64] {
        &self.words
    }
}

/// A chunk's rows: what follows its header.
fn rows_of<'c>(p: &BufferParams, chunk: &'c [u8]) -> &'c [u8] {
    &chunk[CHUNK_HEADER..CHUNK_HEADER + p.rows() * p.row_bytes()]
}

/// Processes one chunk's rows (after its header) into `partial`. `has_prev` says whether
/// the carried row holds a frame (false for chunk 0).
fn process(p: &BufferParams, rows: &[u8], has_prev: bool, partial: &mut Partial) {
    let elems = p.elems as usize;
    match p.kind {
        Kind::Sum => sum_rows(p.dtype, rows, elems, &mut partial.words),
        Kind::Transitions => {
            let rb = p.row_bytes();
            let codes = |r: usize| {
                rows[r * rb..(r + 1) * rb]
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize % CODES)
            };
            let first = usize::from(!has_prev);
            for r in first..p.rows() - 1 {
                for (a, b) in codes(r).zip(codes(r + 1)) {
                    let cell = a * CODES + b;
                    if partial.words[cell] == 0 {
                        partial.touched.push(cell as u32);
                    }
                    partial.words[cell] += 1;
                }
            }
        }
    }
}

/// Per-column sums of `rows` into `acc`: integers wrapping in u64, floats as f64 bits.
fn sum_rows(dtype: Dtype, rows: &[u8], elems: usize, acc: &mut [u64]) {
    let rb = elems * dtype.bytes();
    match dtype {
        Dtype::U8 => {
            // u32 lanes, flushed every 2^24 rows at most: vectorises well.
            let mut lanes = vec![0u32; elems];
            for (n, row) in rows.chunks_exact(rb).enumerate() {
                for (l, &x) in lanes.iter_mut().zip(row) {
                    *l += u32::from(x);
                }
                if n % (1 << 24) == (1 << 24) - 1 {
                    flush(&mut lanes, acc);
                }
            }
            flush(&mut lanes, acc);
        }
        Dtype::U16 => sum_columns::<2>(rows, rb, acc, |c| u64::from(u16::from_le_bytes(c))),
        Dtype::I16 => sum_columns::<2>(rows, rb, acc, |c| i64::from(i16::from_le_bytes(c)) as u64),
        Dtype::U32 => sum_columns::<4>(rows, rb, acc, |c| u64::from(u32::from_le_bytes(c))),
        Dtype::F32 | Dtype::F64 => {
            let w = dtype.bytes();
            let mut sums: Vec<f64> = acc.iter().map(|b| f64::from_bits(*b)).collect();
            for row in rows.chunks_exact(rb) {
                for (s, c) in sums.iter_mut().zip(row.chunks_exact(w)) {
                    *s += if w == 4 {
                        f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    } else {
                        f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                    };
                }
            }
            for (a, s) in acc.iter_mut().zip(sums) {
                *a = s.to_bits();
            }
        }
    }
}

/// Per-column wrapping sums of `W`-byte integers. Four rows are added together before the
/// accumulator is touched: with one row at a time the loads and stores of `acc` (one
/// each per element) cost more than reading the chunk, and `sum` is meant to be cheap
/// next to moving the bytes.
fn sum_columns<const W: usize>(
    rows: &[u8],
    rb: usize,
    acc: &mut [u64],
    val: impl Fn([u8; W]) -> u64,
) {
    let v = |c: &[u8]| {
        let mut b = [0u8; W];
        b.copy_from_slice(c);
        val(b)
    };
    let mut quads = rows.chunks_exact(4 * rb);
    for q in &mut quads {
        let (r01, r23) = q.split_at(2 * rb);
        let (r0, r1) = r01.split_at(rb);
        let (r2, r3) = r23.split_at(rb);
        let cols = r0
            .chunks_exact(W)
            .zip(r1.chunks_exact(W))
            .zip(r2.chunks_exact(W))
            .zip(r3.chunks_exact(W));
        for (a, (((c0, c1), c2), c3)) in acc.iter_mut().zip(cols) {
            let s = v(c0)
                .wrapping_add(v(c1))
                .wrapping_add(v(c2))
                .wrapping_add(v(c3));
            *a = a.wrapping_add(s);
        }
    }
    for row in quads.remainder().chunks_exact(rb) {
        for (a, c) in acc.iter_mut().zip(row.chunks_exact(W)) {
            *a = a.wrapping_add(v(c));
        }
    }
}

fn flush(lanes: &mut [u32], acc: &mut [u64]) {
    for (a, l) in acc.iter_mut().zip(lanes.iter_mut()) {
        *a = a.wrapping_add(u64::from(*l));
        *l = 0;
    }
}

/// The result computed in one process from the same seed: what the merged result of any
/// run must equal.
pub fn reference(p: &BufferParams) -> Result<Vec<u64>, WorkloadError> {
    let source = Acquisition::new(p)?;
    let mut partial = Partial::new(p);
    let mut chunk = vec![0u8; p.chunk_bytes()];
    for seq in 0..p.chunks {
        source.fill(seq, &mut chunk);
        process(p, rows_of(p, &chunk), seq > 0, &mut partial);
    }
    Ok(partial.words)
}

fn pool_err(e: PoolError) -> WorkloadError {
    WorkloadError::Integrity(e.to_string())
}

/// Where the acquirer's time went, in ns: waiting for a free chunk (pool), filling chunks,
/// handing them over (copy: the transport's send, its waits for room included).
#[derive(Debug, Default)]
struct AcquirerTimes {
    free_wait: u64,
    fill: u64,
    send: u64,
}

/// The acquirer with the zero-copy pool: fills free chunks in place, marks them ready,
/// then one end marker per worker. `free_wait_ns`: time spent waiting for a free chunk;
/// `fill_ns`: time spent filling them (the chunk's ready stamp ends it).
pub fn acquirer(
    pool: &Pool,
    source: &Acquisition,
    deadline: Instant,
) -> Result<Measurement, WorkloadError> {
    let p = source.params();
    let mut times = AcquirerTimes::default();
    let start = Instant::now();
    for seq in 0..p.chunks {
        let t = monotonic_ns();
        let mut c = pool.take_free(deadline).map_err(pool_err)?;
        let got = monotonic_ns();
        times.free_wait += got.saturating_sub(t);
        let bytes = c.bytes_mut();
        source.fill(seq, bytes);
        times.fill += stamp_ready(bytes).saturating_sub(got);
        c.publish(seq).map_err(pool_err)?;
    }
    pool.end().map_err(pool_err)?;
    Ok(acquirer_measurement(p, start.elapsed(), &times))
}

fn acquirer_measurement(p: &BufferParams, elapsed: Duration, t: &AcquirerTimes) -> Measurement {
    Measurement {
        histogram: None,
        count: p.chunks,
        bytes: p.chunks * p.data_bytes() as u64,
        duration: elapsed,
        metrics: vec![
            ("free_wait_ns".into(), t.free_wait as f64),
            ("fill_ns".into(), t.fill as f64),
            ("send_ns".into(), t.send as f64),
        ],
    }
}

/// A worker with the zero-copy pool: takes ready chunks until an end marker, processes
/// each into its partial, returns the chunk, merges the partial under the lock.
/// Measures each chunk's latency from ready to processed and its own waits.
pub fn worker(
    pool: &Pool,
    p: &BufferParams,
    deadline: Instant,
) -> Result<Measurement, WorkloadError> {
    p.check()?;
    let mut partial = Partial::new(p);
    let mut hist = new_histogram();
    let (mut wait, mut chunks) = (Duration::ZERO, 0u64);
    let start = Instant::now();
    loop {
        let t = Instant::now();
        let Some(c) = pool.take_ready(deadline).map_err(pool_err)? else {
            break;
        };
        wait += t.elapsed();
        let bytes = c.bytes();
        let (seq, ready) = (word(bytes, 0), word(bytes, 1));
        if seq != c.seq() || seq >= p.chunks {
            return Err(WorkloadError::Integrity(format!(
                "chunk {} says sequence {seq}, the pool {}",
                c.index(),
                c.seq()
            )));
        }
        process(p, rows_of(p, bytes), seq > 0, &mut partial);
        c.release().map_err(pool_err)?;
        hist.saturating_record(monotonic_ns().saturating_sub(ready));
        partial.merge_locked(pool, deadline)?;
        chunks += 1;
    }
    Ok(worker_measurement(p, hist, chunks, start.elapsed(), wait))
}

fn worker_measurement(
    p: &BufferParams,
    hist: hdrhistogram::Histogram<u64>,
    chunks: u64,
    elapsed: Duration,
    wait: Duration,
) -> Measurement {
    Measurement {
        histogram: Some(hist),
        count: chunks,
        bytes: chunks * p.data_bytes() as u64,
        duration: elapsed,
        metrics: vec![
            ("ready_wait_ns".into(), wait.as_nanos() as f64),
            ("worker_chunks".into(), chunks as f64),
        ],
    }
}

/// The acquirer in copy mode: fills a private chunk and sends its bytes to worker
/// `seq % K` over that worker's transport; then an end frame to each. `fill_ns` and
/// `send_ns`: its time filling and sending (`free_wait_ns` is 0: a full transport's wait
/// is inside the send).
pub fn copy_acquirer<T: Tx>(
    txs: &mut [T],
    source: &Acquisition,
) -> Result<Measurement, WorkloadError> {
    let p = source.params();
    if txs.len() != p.workers as usize {
        return Err(WorkloadError::Param(format!(
            "{} transports for {} workers",
            txs.len(),
            p.workers
        )));
    }
    let mut chunk = touched(p.chunk_bytes());
    let mut times = AcquirerTimes::default();
    let start = Instant::now();
    let mut t = monotonic_ns();
    for seq in 0..p.chunks {
        source.fill(seq, &mut chunk);
        let ready = stamp_ready(&mut chunk);
        times.fill += ready.saturating_sub(t);
        txs[(seq % u64::from(p.workers)) as usize].send(&chunk)?;
        t = monotonic_ns();
        times.send += t.saturating_sub(ready);
    }
    let mut end = [0u8; CHUNK_HEADER];
    end[..8].copy_from_slice(&END.to_le_bytes());
    for tx in txs.iter_mut() {
        tx.send(&end)?;
        tx.flush()?;
    }
    Ok(acquirer_measurement(p, start.elapsed(), &times))
}

/// A worker in copy mode: receives chunks until the end frame, processes each, merges
/// under the pool's lock (the pool holds only the result here).
pub fn copy_worker<R: Rx>(
    rx: &mut R,
    pool: &Pool,
    p: &BufferParams,
    deadline: Instant,
) -> Result<Measurement, WorkloadError> {
    p.check()?;
    let mut partial = Partial::new(p);
    let mut hist = new_histogram();
    let mut buf = touched(p.chunk_bytes());
    let (mut wait, mut chunks) = (Duration::ZERO, 0u64);
    let start = Instant::now();
    loop {
        let t = Instant::now();
        let n = rx.recv(&mut buf)?;
        wait += t.elapsed();
        if n < CHUNK_HEADER {
            return Err(WorkloadError::Integrity(format!("a {n}-byte chunk")));
        }
        let (seq, ready) = (word(&buf, 0), word(&buf, 1));
        if seq == END {
            break;
        }
        if n != p.chunk_bytes() || seq >= p.chunks {
            return Err(WorkloadError::Integrity(format!(
                "chunk {seq}: {n} bytes, expected {}",
                p.chunk_bytes()
            )));
        }
        process(p, rows_of(p, &buf), seq > 0, &mut partial);
        hist.saturating_record(monotonic_ns().saturating_sub(ready));
        partial.merge_locked(pool, deadline)?;
        chunks += 1;
    }
    Ok(worker_measurement(p, hist, chunks, start.elapsed(), wait))
}

/// The merged result as plain words (after every role is done).
pub fn result_of(pool: &Pool) -> Vec<u64> {
    pool.result_unlocked()
        .iter()
        .map(|w| w.load(std::sync::atomic::Ordering::Acquire))
        .collect()
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test, with its message.
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ipcbench_transport::pool::{PoolRole, PoolShape};

    fn params(kind: Kind, dtype: Dtype) -> BufferParams {
        BufferParams {
            dtype,
            exemplars: 20,
            elems: 37,
            chunks: 50,
            workers: 3,
            kind,
            seed: 4,
        }
    }

    /// The acquirer's own times add up within its run: `fill_ns` counted, `send_ns` only
    /// by copy, `free_wait_ns` only with the pool.
    fn check_acquirer_times(m: &Measurement, zero_copy: bool) {
        let t = |k: &str| m.metric(k).unwrap();
        assert!(t("fill_ns") > 0.0, "{:?}", m.metrics);
        assert_eq!(t("send_ns") > 0.0, !zero_copy, "{:?}", m.metrics);
        if !zero_copy {
            assert_eq!(t("free_wait_ns"), 0.0);
        }
        let busy = t("fill_ns") + t("send_ns") + t("free_wait_ns");
        assert!(
            busy <= m.duration.as_nanos() as f64,
            "{busy} ns in a {:?} run",
            m.duration
        );
    }

    fn run_zero_copy(p: &BufferParams) -> (Vec<u64>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool");
        let pool = Pool::create(
            &path,
            PoolShape {
                n_chunks: 4,
                chunk_bytes: p.chunk_bytes() as u64,
                result_words: p.result_words() as u32,
                workers: p.workers,
            },
        )
        .unwrap();
        pool.register(PoolRole::Acquirer).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let processed: u64 = std::thread::scope(|sc| {
            let ws: Vec<_> = (0..p.workers)
                .map(|w| {
                    let path = path.clone();
                    sc.spawn(move || {
                        let pool = Pool::open(&path).unwrap();
                        pool.register(PoolRole::Worker(w)).unwrap();
                        worker(&pool, p, deadline).unwrap().count
                    })
                })
                .collect();
            let m = acquirer(&pool, &Acquisition::new(p).unwrap(), deadline).unwrap();
            check_acquirer_times(&m, true);
            ws.into_iter().map(|w| w.join().unwrap()).sum()
        });
        (result_of(&pool), processed)
    }

    #[test]
    fn zero_copy_results_equal_the_single_process_reference_for_every_dtype_and_kind() {
        for (kind, dtype) in [
            (Kind::Sum, Dtype::U8),
            (Kind::Sum, Dtype::U16),
            (Kind::Sum, Dtype::I16),
            (Kind::Sum, Dtype::U32),
            (Kind::Sum, Dtype::F32),
            (Kind::Sum, Dtype::F64),
            (Kind::Transitions, Dtype::U32),
        ] {
            let p = params(kind, dtype);
            let (got, processed) = run_zero_copy(&p);
            assert_eq!(processed, p.chunks, "{kind:?} {dtype:?}");
            assert_eq!(got, reference(&p).unwrap(), "{kind:?} {dtype:?}");
        }
    }

    #[test]
    fn column_sums_equal_a_plain_element_by_element_sum_for_any_row_count() {
        for dtype in [Dtype::U8, Dtype::U16, Dtype::I16, Dtype::U32] {
            let (elems, w) = (7usize, dtype.bytes());
            for rows in 0..=9usize {
                let bytes: Vec<u8> = (0..rows * elems * w)
                    .map(|i| splitmix(9, i as u64) as u8)
                    .collect();
                let mut want = vec![3u64; elems];
                for (i, c) in bytes.chunks_exact(w).enumerate() {
                    let v = match dtype {
                        Dtype::U8 => u64::from(c[0]),
                        Dtype::U16 => u64::from(u16::from_le_bytes([c[0], c[1]])),
                        Dtype::I16 => i64::from(i16::from_le_bytes([c[0], c[1]])) as u64,
                        _ => u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    };
                    want[i % elems] = want[i % elems].wrapping_add(v);
                }
                let mut got = vec![3u64; elems];
                sum_rows(dtype, &bytes, elems, &mut got);
                assert_eq!(got, want, "{dtype:?}, {rows} rows");
            }
        }
    }

    #[test]
    fn transitions_across_chunk_boundaries_are_counted() {
        let p = params(Kind::Transitions, Dtype::U32);
        let total: u64 = reference(&p).unwrap().iter().sum();
        // Every pair of consecutive frames of the whole stream, boundaries included.
        let frames = p.chunks * u64::from(p.exemplars);
        assert_eq!(total, (frames - 1) * u64::from(p.elems));
    }

    #[test]
    fn copy_mode_over_shm_equals_the_reference() {
        use ipcbench_transport::{Endpoint, EndpointOptions, Shm, Transport, TransportKind};
        let p = BufferParams {
            workers: 2,
            ..params(Kind::Transitions, Dtype::U32)
        };
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::create(
            &dir.path().join("pool"),
            PoolShape {
                n_chunks: 1,
                chunk_bytes: 8,
                result_words: p.result_words() as u32,
                workers: p.workers,
            },
        )
        .unwrap();
        let opts = EndpointOptions {
            shm_capacity: 1 << 16,
            max_frame: 1 << 14,
            ..Default::default()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let specs: Vec<Endpoint> = (0..2)
            .map(|_| Endpoint::prepare(TransportKind::Shm, dir.path(), &opts).unwrap())
            .collect();
        let listeners: Vec<_> = specs.iter().map(|s| Shm::listen(s).unwrap()).collect();
        let resolved: Vec<Endpoint> = listeners.iter().map(Shm::resolved).collect();
        std::thread::scope(|sc| {
            let pool = &pool;
            let ws: Vec<_> = resolved
                .iter()
                .map(|ep| {
                    sc.spawn(move || {
                        let (_tx, mut rx) = Shm::connect(ep, Duration::from_secs(5)).unwrap();
                        copy_worker(&mut rx, pool, &p, deadline).unwrap().count
                    })
                })
                .collect();
            let mut txs: Vec<_> = listeners
                .into_iter()
                .map(|l| Shm::accept(l, Duration::from_secs(5)).unwrap().0)
                .collect();
            let m = copy_acquirer(&mut txs, &Acquisition::new(&p).unwrap()).unwrap();
            check_acquirer_times(&m, false);
            let n: u64 = ws.into_iter().map(|w| w.join().unwrap()).sum();
            assert_eq!(n, p.chunks);
        });
        for s in &specs {
            s.cleanup();
        }
        assert_eq!(result_of(&pool), reference(&p).unwrap());
    }

    #[test]
    fn bad_combinations_are_refused() {
        assert!(params(Kind::Transitions, Dtype::U8).check().is_err());
        assert!(BufferParams {
            workers: 0,
            ..params(Kind::Sum, Dtype::U8)
        }
        .check()
        .is_err());
    }
}
