//! `pingpong`: two stateless agents paint a W×H image one pixel per turn (docs/workloads.md §3).
//!
//! All state lives in the *canvas*, a shared segment of 32-bit words: a header (magic,
//! version, size, seed, status), the positions in generation order, the colours in
//! generation order, and a bitmap of which agent painted each iteration. An agent keeps
//! nothing between turns: it learns that it is its turn from the message the other agent
//! sends over the transport under test, reads the canvas, paints one pixel and hands the
//! turn back with a message carrying the iteration and the pixel, which the receiver checks
//! against the canvas.
//!
//! Picking is O(1) per pixel with no retries and exactly uniform: an incremental
//! Fisher–Yates shuffle over the W·H positions and another over the 2^24 colours. At
//! iteration `i` the painter draws `j` uniformly in `[i, N)` and swaps entries `i` and `j`;
//! entries `0..=i` are then the picks in generation order, so the shuffle arrays *are* the
//! log. An entry holds `value + 1`, and 0 means "still its own index", so the arrays need
//! no initialisation: a zero-filled segment is a fresh canvas. The random numbers
//! come from a counter-based generator (SplitMix64 of the seed and the iteration), so a run
//! is reproducible from its seed and the agents need no generator state either.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use ipcbench_transport::segment::Segment;
use serde::{Deserialize, Serialize};

use crate::{monotonic_ns, new_histogram, splitmix, Measurement, Rx, Tx, WorkloadError};

/// Number of 24-bit colours, and the most pixels an image may have (each colour once).
pub const COLOURS: u32 = 1 << 24;
/// Canvas magic: "IPPC".
pub const MAGIC: u32 = 0x4350_5049;
/// Canvas layout version.
pub const VERSION: u32 = 1;
/// Header words (128 bytes).
pub const HEADER_WORDS: usize = 32;
const W_MAGIC: usize = 0;
const W_VERSION: usize = 1;
const W_WIDTH: usize = 2;
const W_HEIGHT: usize = 3;
const W_SEED_LO: usize = 4;
const W_SEED_HI: usize = 5;
/// Pixels painted so far (the next iteration to paint).
const W_ITERATION: usize = 6;
/// Whose turn: 0 ping, 1 pong, 2 done.
const W_TURN: usize = 7;
/// Turn value once every pixel is painted.
pub const DONE: u32 = 2;

/// Bytes of one handoff message: iteration, position, colour, send time (0: not sampled).
pub const MSG_BYTES: usize = 24;

/// Parameters of a pingpong run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingpongParams {
    /// Image width.
    pub width: u32,
    /// Image height.
    pub height: u32,
    /// Seed of the picks.
    pub seed: u64,
}

impl PingpongParams {
    /// W·H, checked against [`COLOURS`] (each pixel needs a colour of its own).
    pub fn pixels(&self) -> Result<u32, WorkloadError> {
        let n = u64::from(self.width) * u64::from(self.height);
        if n == 0 || n > u64::from(COLOURS) {
            return Err(WorkloadError::Param(format!(
                "a {}x{} image has {n} pixels: it needs 1 to 2^24 ({COLOURS}), one colour each",
                self.width, self.height
            )));
        }
        Ok(n as u32)
    }

    /// Every `sample`-th handoff is timed (all of them up to 2^20 pixels), so the clock's
    /// own cost stays a small share of a turn and the histogram holds about a million
    /// samples at most.
    pub fn sample_every(&self) -> u32 {
        let n = self.pixels().unwrap_or(1);
        (n >> 20).max(1).next_power_of_two()
    }
}

/// Words of a canvas for `pixels` pixels: header, positions, colours, painter bitmap.
pub fn canvas_words(pixels: u32) -> usize {
    let n = pixels as usize;
    // Even, so the byte length is a multiple of 8.
    (HEADER_WORDS + n + COLOURS as usize + n.div_ceil(32)).next_multiple_of(2)
}

/// Bytes of a canvas for `pixels` pixels. Canvases are allocated and mapped in full
/// before a run (`fallocate`, `MAP_POPULATE`), so no first-touch page fault (a few
/// microseconds each here) lands in the timed part and small images measure the handoff,
/// not the kernel's page allocator; a 5x5 image pays the 64 MiB colour array for it.
pub fn canvas_bytes(pixels: u32) -> usize {
    canvas_words(pixels) * 4
}

/// Writes the header of a zero-filled canvas (the arrays need nothing: 0 is identity).
pub fn init_canvas(words: &[AtomicU32], p: &PingpongParams) -> Result<(), WorkloadError> {
    let n = p.pixels()?;
    if words.len() < canvas_words(n) {
        return Err(WorkloadError::Param(format!(
            "a canvas of {} words is too small for {n} pixels",
            words.len()
        )));
    }
    let put = |i: usize, v: u32| words[i].store(v, Ordering::Relaxed);
    put(W_VERSION, VERSION);
    put(W_WIDTH, p.width);
    put(W_HEIGHT, p.height);
    put(W_SEED_LO, p.seed as u32);
    put(W_SEED_HI, (p.seed >> 32) as u32);
    put(W_ITERATION, 0);
    put(W_TURN, 0);
    // SYNC: Release pairs with the Acquire load of the magic in `Canvas::attach`.
    words[W_MAGIC].store(MAGIC, Ordering::Release);
    Ok(())
}

/// Where [`progress`]'s word sits in the canvas, in bytes: for a reader that reads the
/// canvas through its file rather than a mapping (a mapping of a file another process
/// can shrink faults on access). Little-endian, as the canvas's words are here.
pub const PROGRESS_BYTE: u64 = (W_ITERATION * 4) as u64;

/// Pixels painted so far on a canvas (0 if the words are too few to be one): for a
/// progress display that reads the canvas while the agents paint.
pub fn progress(words: &[AtomicU32]) -> u32 {
    words
        .get(W_ITERATION)
        .map_or(0, |w| w.load(Ordering::Relaxed))
}

/// A number uniform in `0..bound` (`bound >= 1`) for draw `stream` of `iteration`, by
/// Lemire's multiply-and-reject. A rejection happens with probability below
/// `bound / 2^64` (< 1e-12 here); after 8 of them in a row (never seen) the last
/// product is taken.
pub fn draw(seed: u64, iteration: u32, stream: u32, bound: u32) -> u32 {
    let bound = u64::from(bound.max(1));
    let threshold = bound.wrapping_neg() % bound;
    let base = (u64::from(iteration) << 5) | (u64::from(stream) << 3);
    let mut product = 0u128;
    for attempt in 0..8 {
        product = u128::from(splitmix(seed, base | attempt)) * u128::from(bound);
        if (product as u64) >= threshold {
            break;
        }
    }
    (product >> 64) as u32
}

/// A canvas seen through its words; every value read from it is checked.
#[derive(Debug, Clone, Copy)]
pub struct Canvas<'a> {
    words: &'a [AtomicU32],
    width: u32,
    height: u32,
    pixels: u32,
    seed: u64,
}

/// What a role sees of the other agent's turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pixel {
    /// Position, y·W + x.
    pub pos: u32,
    /// Colour, R<<16 | G<<8 | B.
    pub colour: u32,
}

impl<'a> Canvas<'a> {
    /// Checks the header against the expected size and the words' length.
    pub fn attach(words: &'a [AtomicU32], p: &PingpongParams) -> Result<Canvas<'a>, WorkloadError> {
        let pixels = p.pixels()?;
        let corrupt = |what: String| Err(WorkloadError::Integrity(format!("canvas: {what}")));
        if words.len() < canvas_words(pixels) {
            return corrupt(format!(
                "{} words, need {}",
                words.len(),
                canvas_words(pixels)
            ));
        }
        // SYNC: Acquire pairs with the Release store of the magic in `init_canvas`.
        let magic = words[W_MAGIC].load(Ordering::Acquire);
        let get = |i: usize| words[i].load(Ordering::Relaxed);
        if magic != MAGIC || get(W_VERSION) != VERSION {
            return corrupt(format!("magic {magic:#x} version {}", get(W_VERSION)));
        }
        let seed = u64::from(get(W_SEED_LO)) | u64::from(get(W_SEED_HI)) << 32;
        if get(W_WIDTH) != p.width || get(W_HEIGHT) != p.height || seed != p.seed {
            return corrupt(format!(
                "{}x{} seed {seed}, expected {}x{} seed {}",
                get(W_WIDTH),
                get(W_HEIGHT),
                p.width,
                p.height,
                p.seed
            ));
        }
        Ok(Canvas {
            words,
            width: p.width,
            height: p.height,
            pixels,
            seed,
        })
    }

    /// Width, height.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// W·H.
    pub fn pixels(&self) -> u32 {
        self.pixels
    }

    /// Pixels painted so far.
    pub fn iteration(&self) -> u32 {
        // SYNC: Acquire pairs with the painter's Release store in `paint`; the turn
        // message (through the transport) orders it too.
        self.words[W_ITERATION].load(Ordering::Acquire)
    }

    /// Whose turn (0 ping, 1 pong) or [`DONE`].
    pub fn turn(&self) -> u32 {
        self.words[W_TURN].load(Ordering::Acquire)
    }

    fn pos_word(&self, i: u32) -> &AtomicU32 {
        &self.words[HEADER_WORDS + i as usize]
    }

    fn colour_word(&self, i: u32) -> &AtomicU32 {
        &self.words[HEADER_WORDS + self.pixels as usize + i as usize]
    }

    fn painter_word(&self, i: u32) -> &AtomicU32 {
        &self.words[HEADER_WORDS + self.pixels as usize + COLOURS as usize + (i / 32) as usize]
    }

    /// Entry `i` of a shuffle array (0 stands for `i` itself), checked against `bound`.
    fn entry(word: &AtomicU32, i: u32, bound: u32) -> Result<u32, WorkloadError> {
        match word.load(Ordering::Relaxed) {
            0 => Ok(i),
            v if v <= bound => Ok(v - 1),
            v => Err(WorkloadError::Integrity(format!(
                "canvas: entry {i} holds {v}, past {bound}"
            ))),
        }
    }

    /// The pixel painted at iteration `i`.
    pub fn pixel(&self, i: u32) -> Result<Pixel, WorkloadError> {
        if i >= self.pixels {
            return Err(WorkloadError::Integrity(format!(
                "iteration {i} is past the image's {} pixels",
                self.pixels
            )));
        }
        Ok(Pixel {
            pos: Self::entry(self.pos_word(i), i, self.pixels)?,
            colour: Self::entry(self.colour_word(i), i, COLOURS)?,
        })
    }

    /// Whether iteration `i` was painted by pong (its bit in the painter bitmap).
    pub fn painted_by_pong(&self, i: u32) -> bool {
        self.painter_word(i).load(Ordering::Relaxed) & (1 << (i % 32)) != 0
    }

    /// Swaps entries `i` and `j` of a shuffle array; returns the new entry `i`.
    fn swap(
        &self,
        word: impl Fn(u32) -> &'a AtomicU32,
        i: u32,
        j: u32,
        bound: u32,
    ) -> Result<u32, WorkloadError> {
        let picked = Self::entry(word(j), j, bound)?;
        if j != i {
            let old = Self::entry(word(i), i, bound)?;
            word(j).store(old + 1, Ordering::Relaxed);
        }
        word(i).store(picked + 1, Ordering::Relaxed);
        Ok(picked)
    }

    /// Touches the two shuffle entries iteration `i` will swap (known ahead: the draws
    /// depend on the seed and the iteration only), so their cache misses overlap the wait
    /// for the turn instead of lengthening it. Reads only; changes nothing.
    pub fn warm(&self, i: u32) {
        if i < self.pixels {
            let j = i + draw(self.seed, i, 0, self.pixels - i);
            let k = i + draw(self.seed, i, 1, COLOURS - i);
            std::hint::black_box(self.pos_word(j).load(Ordering::Relaxed));
            std::hint::black_box(self.colour_word(k).load(Ordering::Relaxed));
        }
    }

    /// Paints the next pixel as agent `agent` (0 ping, 1 pong): a free position and an
    /// unused colour, each uniform; then advances the status to the other agent's turn.
    pub fn paint(&self, agent: u32) -> Result<(u32, Pixel), WorkloadError> {
        let i = self.iteration();
        if i >= self.pixels || i % 2 != agent || self.turn() != agent {
            return Err(WorkloadError::Integrity(format!(
                "agent {agent} asked to paint at iteration {i} (turn {})",
                self.turn()
            )));
        }
        let j = i + draw(self.seed, i, 0, self.pixels - i);
        let k = i + draw(self.seed, i, 1, COLOURS - i);
        let pos = self.swap(|x| self.pos_word(x), i, j, self.pixels)?;
        let colour = self.swap(|x| self.colour_word(x), i, k, COLOURS)?;
        if agent == 1 {
            self.painter_word(i)
                .fetch_or(1 << (i % 32), Ordering::Relaxed);
        }
        let next = i + 1;
        let turn = if next == self.pixels { DONE } else { 1 - agent };
        self.words[W_TURN].store(turn, Ordering::Relaxed);
        // SYNC: Release pairs with the Acquire in `iteration`: the picks are visible with it.
        self.words[W_ITERATION].store(next, Ordering::Release);
        Ok((i, Pixel { pos, colour }))
    }
}

/// The handoff message: iteration, pixel, send time in ns (0: not timed).
fn encode(i: u32, px: Pixel, sent_ns: u64) -> [u8; MSG_BYTES] {
    let mut m = [0u8; MSG_BYTES];
    m[..8].copy_from_slice(&u64::from(i).to_le_bytes());
    m[8..12].copy_from_slice(&px.pos.to_le_bytes());
    m[12..16].copy_from_slice(&px.colour.to_le_bytes());
    m[16..24].copy_from_slice(&sent_ns.to_le_bytes());
    m
}

fn decode(m: &[u8]) -> Option<(u64, Pixel, u64)> {
    let m: &[u8; MSG_BYTES] = m.try_into().ok()?;
    let [a, b, c, d, e, f, g, h, p0, p1, p2, p3, c0, c1, c2, c3, t @ ..] = *m;
    Some((
        u64::from_le_bytes([a, b, c, d, e, f, g, h]),
        Pixel {
            pos: u32::from_le_bytes([p0, p1, p2, p3]),
            colour: u32::from_le_bytes([c0, c1, c2, c3]),
        },
        u64::from_le_bytes(t),
    ))
}

/// One agent: `ping` paints the even iterations (and the first), pong the odd ones. Each
/// turn taken is checked against the canvas; every `sample_every`-th handoff is timed
/// from the sender's clock read to the receipt. Returns when the image is complete.
pub fn agent<T: Tx, R: Rx>(
    tx: &mut T,
    rx: &mut R,
    canvas: &Canvas<'_>,
    p: &PingpongParams,
    ping: bool,
) -> Result<Measurement, WorkloadError> {
    let me = u32::from(!ping);
    let n = canvas.pixels();
    let sample = p.sample_every();
    let mut hist = new_histogram();
    let mut buf = [0u8; MSG_BYTES];
    let start = Instant::now();
    let mut painted = 0u64;
    let pixels = u64::from(n);
    let mut turn = |painted: &mut u64| -> Result<bool, WorkloadError> {
        let (i, px) = canvas.paint(me)?;
        *painted += 1;
        let stamp = if i % sample == 0 { monotonic_ns() } else { 0 };
        tx.send(&encode(i, px, stamp))?;
        // Our next turn is two iterations on.
        canvas.warm(i + 2);
        Ok(i + 1 == n)
    };
    if ping && turn(&mut painted)? {
        return Ok(done(hist, pixels, painted, start));
    }
    loop {
        let len = rx.recv(&mut buf)?;
        let received = monotonic_ns();
        let Some((i, px, sent)) = decode(&buf[..len]) else {
            return Err(WorkloadError::Integrity(format!(
                "a {len}-byte handoff message"
            )));
        };
        let expect = canvas.iteration().checked_sub(1);
        if Some(i) != expect.map(u64::from) || i % 2 == u64::from(me) {
            return Err(WorkloadError::Integrity(format!(
                "handoff for iteration {i}, the canvas is at {:?} and agent {me} paints the other parity",
                expect
            )));
        }
        let i = i as u32;
        let on_canvas = canvas.pixel(i)?;
        if on_canvas != px {
            return Err(WorkloadError::Integrity(format!(
                "iteration {i}: the message says {px:?}, the canvas {on_canvas:?}"
            )));
        }
        if sent != 0 {
            hist.saturating_record(received.saturating_sub(sent));
        }
        if i + 1 == n || turn(&mut painted)? {
            return Ok(done(hist, pixels, painted, start));
        }
    }
}

/// The agent's measurement: the whole image's pixels (and their handoff messages) over
/// its wall time, the handoffs it received, and how many pixels it painted itself.
fn done(
    hist: hdrhistogram::Histogram<u64>,
    pixels: u64,
    painted: u64,
    start: Instant,
) -> Measurement {
    Measurement {
        histogram: Some(hist),
        count: pixels,
        bytes: pixels * MSG_BYTES as u64,
        duration: start.elapsed(),
        metrics: vec![("painted".into(), painted as f64)],
    }
}

/// The cost of the pick alone: paints up to `limit` pixels of a private canvas of the
/// same size in one thread (no handoff); mean ns per pixel.
pub fn pick_cost(p: &PingpongParams, limit: u32) -> Result<f64, WorkloadError> {
    let n = p.pixels()?;
    let seg = Segment::anonymous_with(canvas_bytes(n), true)
        .map_err(|e| WorkloadError::Param(format!("canvas memory: {e}")))?;
    init_canvas(seg.words32(), p)?;
    let canvas = Canvas::attach(seg.words32(), p)?;
    let count = n.min(limit.max(1));
    let t0 = Instant::now();
    for i in 0..count {
        std::hint::black_box(canvas.paint(i % 2)?);
    }
    Ok(t0.elapsed().as_nanos() as f64 / f64::from(count))
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Pixels painted.
    pub pixels: u32,
    /// Distinct colours used (equal to `pixels`).
    pub colours: u32,
}

/// The checks after a run: the image is complete, every position painted exactly once, no
/// colour twice, and each agent painted the iterations of its parity.
pub fn verify(canvas: &Canvas<'_>) -> Result<Verified, WorkloadError> {
    let n = canvas.pixels();
    let fail = |m: String| Err(WorkloadError::Integrity(m));
    if canvas.iteration() != n || canvas.turn() != DONE {
        return fail(format!(
            "the image stopped at {} of {n} pixels (turn {})",
            canvas.iteration(),
            canvas.turn()
        ));
    }
    let mut positions = vec![0u64; (n as usize).div_ceil(64)];
    let mut colours = vec![0u64; (COLOURS as usize).div_ceil(64)];
    for i in 0..n {
        let px = canvas.pixel(i)?;
        let (w, b) = ((px.pos / 64) as usize, px.pos % 64);
        if positions[w] & (1 << b) != 0 {
            return fail(format!(
                "position {} painted twice (again at iteration {i})",
                px.pos
            ));
        }
        positions[w] |= 1 << b;
        let (w, b) = ((px.colour / 64) as usize, px.colour % 64);
        if colours[w] & (1 << b) != 0 {
            return fail(format!(
                "colour {:#08x} used twice (again at iteration {i})",
                px.colour
            ));
        }
        colours[w] |= 1 << b;
        if canvas.painted_by_pong(i) != (i % 2 == 1) {
            return fail(format!(
                "iteration {i} was painted by {}",
                if i % 2 == 1 { "ping" } else { "pong" }
            ));
        }
    }
    // n distinct positions below n: a permutation, so every position exactly once.
    Ok(Verified {
        pixels: n,
        colours: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canvas_for(p: &PingpongParams) -> Segment {
        let seg = Segment::anonymous(canvas_bytes(p.pixels().unwrap())).unwrap();
        init_canvas(seg.words32(), p).unwrap();
        seg
    }

    fn paint_all(p: &PingpongParams) -> Vec<Pixel> {
        let seg = canvas_for(p);
        let c = Canvas::attach(seg.words32(), p).unwrap();
        let out: Vec<Pixel> = (0..c.pixels()).map(|i| c.paint(i % 2).unwrap().1).collect();
        assert_eq!(verify(&c).unwrap().pixels, c.pixels());
        out
    }

    #[test]
    fn a_seed_reproduces_the_image_and_another_seed_does_not() {
        let p = PingpongParams {
            width: 7,
            height: 5,
            seed: 42,
        };
        let a = paint_all(&p);
        assert_eq!(a, paint_all(&p));
        assert_ne!(a, paint_all(&PingpongParams { seed: 43, ..p }));
    }

    #[test]
    fn every_position_once_and_colours_distinct_at_odd_sizes() {
        for (w, h) in [(1, 1), (5, 5), (3, 17), (64, 3)] {
            let px = paint_all(&PingpongParams {
                width: w,
                height: h,
                seed: 9,
            });
            let mut pos: Vec<u32> = px.iter().map(|p| p.pos).collect();
            pos.sort_unstable();
            assert_eq!(pos, (0..w * h).collect::<Vec<_>>());
            let mut col: Vec<u32> = px.iter().map(|p| p.colour).collect();
            col.sort_unstable();
            col.dedup();
            assert_eq!(col.len(), px.len());
            assert!(col.iter().all(|&c| c < COLOURS));
        }
    }

    /// Chi-square over many seeds: each position is equally likely at each iteration
    /// (checked at the first and a middle iteration of a 4x4 image), and the colour's
    /// top 4 bits are uniform over 16 cells. The critical value for 15 degrees of
    /// freedom at p = 0.001 is 37.7.
    #[test]
    fn picks_are_uniform_chi_square() {
        let (w, h) = (4u32, 4u32);
        let seeds = 16_000u64;
        let mut first = [0u64; 16];
        let mut middle = [0u64; 16];
        let mut hue = [0u64; 16];
        for seed in 0..seeds {
            let px = paint_all(&PingpongParams {
                width: w,
                height: h,
                seed,
            });
            first[px[0].pos as usize] += 1;
            middle[px[7].pos as usize] += 1;
            hue[(px[3].colour >> 20) as usize] += 1;
        }
        for (what, cells) in [("first", first), ("middle", middle), ("colour", hue)] {
            let expect = seeds as f64 / 16.0;
            let chi: f64 = cells
                .iter()
                .map(|&o| (o as f64 - expect).powi(2) / expect)
                .sum();
            assert!(chi < 37.7, "{what}: chi-square {chi:.1} over {cells:?}");
        }
    }

    /// Ping and `pong` over `shm`, threads in one process (the harness runs processes).
    fn over_shm(
        p: &PingpongParams,
        pong: impl FnOnce(
                &mut ipcbench_transport::ShmTx,
                &mut ipcbench_transport::ShmRx,
                &Canvas<'_>,
            ) -> Result<Measurement, WorkloadError>
            + Send,
    ) -> (
        Result<Measurement, WorkloadError>,
        Result<Measurement, WorkloadError>,
        Segment,
    ) {
        let seg = canvas_for(p);
        let canvas = Canvas::attach(seg.words32(), p).unwrap();
        let (a, b) = crate::testing::over_shm(
            64,
            |tx, rx| agent(tx, rx, &canvas, p, true),
            |tx, rx| pong(tx, rx, &canvas),
        );
        (a, b, seg)
    }

    #[test]
    fn two_agents_paint_the_whole_image_and_it_verifies() {
        let p = PingpongParams {
            width: 33,
            height: 17,
            seed: 5,
        };
        let (a, b, seg) = over_shm(&p, |tx, rx, c| agent(tx, rx, c, &p, false));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!((a.count, b.count), (561, 561));
        assert_eq!(a.metrics, vec![("painted".to_string(), 281.0)]);
        assert_eq!(b.metrics, vec![("painted".to_string(), 280.0)]);
        // Every handoff is timed at this size: 280 to ping, 281 to pong.
        assert_eq!(a.histogram.unwrap().len() + b.histogram.unwrap().len(), 561);
        let c = Canvas::attach(seg.words32(), &p).unwrap();
        assert_eq!(verify(&c).unwrap().pixels, 561);
    }

    #[test]
    fn a_handoff_that_disagrees_with_the_canvas_fails_the_agent() {
        let p = PingpongParams {
            width: 8,
            height: 8,
            seed: 5,
        };
        let (a, _, _) = over_shm(&p, |tx, rx, c| {
            let mut buf = [0u8; MSG_BYTES];
            rx.recv(&mut buf)?;
            let (i, px) = c.paint(1)?;
            // Claim another colour than the one painted.
            let lie = Pixel {
                colour: px.colour ^ 1,
                ..px
            };
            tx.send(&encode(i, lie, 0))?;
            // Wait for ping to give up (it lets go of the rings).
            let _ = rx.recv(&mut buf);
            Ok(Measurement::default())
        });
        let e = a.unwrap_err();
        assert!(
            e.to_string().contains("iteration 1: the message says"),
            "{e}"
        );
    }

    #[test]
    fn draws_stay_in_range() {
        for bound in [1u32, 2, 3, 1000, COLOURS] {
            for i in 0..1000 {
                assert!(draw(7, i, 0, bound) < bound);
            }
        }
    }

    #[test]
    fn a_corrupt_canvas_is_an_error_not_a_panic() {
        let p = PingpongParams {
            width: 4,
            height: 4,
            seed: 1,
        };
        let seg = canvas_for(&p);
        let words = seg.words32();
        let c = Canvas::attach(words, &p).unwrap();
        c.paint(0).unwrap();
        // A position entry past the image.
        words[HEADER_WORDS + 3].store(1000, Ordering::Relaxed);
        assert!(matches!(c.pixel(3), Err(WorkloadError::Integrity(_))));
        assert!(Canvas::attach(words, &PingpongParams { seed: 2, ..p }).is_err());
        words[W_MAGIC].store(0, Ordering::Relaxed);
        assert!(Canvas::attach(words, &p).is_err());
        // Out of turn.
        let seg = canvas_for(&p);
        let c = Canvas::attach(seg.words32(), &p).unwrap();
        assert!(c.paint(1).is_err());
        // Incomplete image fails verification.
        c.paint(0).unwrap();
        assert!(verify(&c).is_err());
    }

    #[test]
    fn too_many_pixels_is_refused() {
        let p = PingpongParams {
            width: 4097,
            height: 4096,
            seed: 1,
        };
        assert!(p.pixels().is_err());
        assert_eq!(
            PingpongParams {
                width: 4096,
                height: 4096,
                seed: 1
            }
            .pixels()
            .unwrap(),
            COLOURS
        );
    }
}
