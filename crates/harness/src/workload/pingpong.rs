//! The harness's side of `pingpong`: the canvas segment (created before the run, checked
//! and removed after it), the `[pos, colour]` log file, PNG rendering (`harness render`),
//! and the original's published times.
//!
//! Log format (little-endian; documented in results/README.md): the 8 bytes `IPPLOG1\0`,
//! then width, height and the number of entries as u32, then one 6-byte entry per pixel
//! in generation order: the position (y·W + x) in 3 bytes, the colour (R<<16 | G<<8 | B)
//! in 3 bytes. Both fit 24 bits because an image has at most 2^24 pixels.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;
use std::io::BufRead;

use anyhow::{anyhow, bail, Context};
use ipcbench_transport::segment::Segment;
use ipcbench_transport::{Endpoint, Rx, Tx};
use ipcbench_workloads::pingpong::{self, Canvas, PingpongParams, Pixel};
use ipcbench_workloads::Measurement;
use serde::{Deserialize, Serialize};

use super::{pair_plan, run_pair, PairRole};
use crate::floor::Floor;
use crate::params::{self, p, ParamDef, ParamType, Value, SEED};
use crate::runner::{RolePlan, RunOutcome, RunPlan, Status};
use crate::spec::{
    About, After, Checking, Column, Common, FloorUse, Frame, Machine, Point, Prepared, Problem,
    Roles, RowFloor, RunSpec, Workload,
};
use crate::wire::{RoleJob, RoleReport};

/// The registry's entry.
#[derive(Debug)]
pub struct Pingpong;

const NAME: &str = "pingpong";
const ROLES: &[&str] = &["ping", "pong"];

const SIDE: ParamType = ParamType::Int {
    min: 0,
    max: 1 << 24,
};

const PARAMS: &[ParamDef] = &[
    p(
        "size",
        ParamType::Int {
            min: 1,
            max: 1 << 24,
        },
        None,
        "image side: a size x size image (at most 2^24 pixels: one colour each)",
    ),
    p(
        "width",
        SIDE,
        Some("0"),
        "image width, if not size (0 = size)",
    ),
    p(
        "height",
        SIDE,
        Some("0"),
        "image height, if not size (0 = size)",
    ),
    p(
        "seed",
        SEED,
        Some("1"),
        "seed of the picks: a run is reproducible from it",
    ),
    p(
        "artefacts",
        ParamType::Bool,
        Some("true"),
        "write the [pos, colour] log and the final PNG into the results",
    ),
];

const COLUMNS: &[Column] = &[
    Column {
        name: "width",
        doc: "image width",
    },
    Column {
        name: "height",
        doc: "image height",
    },
    Column {
        name: "pixels",
        doc: "width x height",
    },
    Column {
        name: "ns_per_pixel",
        doc: "duration over pixels",
    },
    Column {
        name: "pick_ns",
        doc: "the pick measured alone",
    },
    Column {
        name: "speedup_vs_original",
        doc: "the original's time over ours",
    },
];

/// `pingpong`'s parameters, typed (keys and docs: [`PARAMS`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    size: u32,
    width: u32,
    height: u32,
    seed: u64,
    artefacts: bool,
}

impl Params {
    /// Image size and seed, as the agents take them.
    fn image(&self) -> PingpongParams {
        let side = |v: u32| if v == 0 { self.size } else { v };
        PingpongParams {
            width: side(self.width),
            height: side(self.height),
            seed: self.seed,
        }
    }
}

/// What a pingpong agent is to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Task {
    endpoint: Endpoint,
    /// Ping (paints the even iterations, measures) or pong.
    ping: bool,
    /// The canvas segment the parent created.
    canvas: PathBuf,
    params: PingpongParams,
}

const ABOUT: About = About {
    name: NAME,
    describe: "two agents paint a WxH image one pixel per turn (unused position, unused colour), handing the turn over the transport; every pixel checked",
    roles: "one core each, in order: ping, pong",
    params: PARAMS,
    columns: COLUMNS,
    headline: Some(("ns_per_pixel", false)),
};

impl Workload for Pingpong {
    fn about(&self) -> &'static About {
        &ABOUT
    }
    fn point(&self, values: &BTreeMap<String, Value>) -> Result<Box<dyn Point>, String> {
        Ok(Box::new(params::deserialize::<Params>(PARAMS, values)?))
    }
    fn role(&self, job: &RoleJob, stdin: &mut dyn BufRead) -> anyhow::Result<RoleReport> {
        if job.role == CHECK_ROLE {
            return check_role(job, stdin);
        }
        let task: Task = job.task()?;
        let n = task.params.pixels()?;
        let seg = Segment::open_with(&task.canvas, pingpong::canvas_bytes(n), true)?;
        let canvas = Canvas::attach(seg.words32(), &task.params)?;
        run_pair(
            job,
            &Agent {
                task: &task,
                canvas: &canvas,
            },
            stdin,
        )
    }
}

/// One pingpong agent; ping also measures the pick alone afterwards (on a private
/// canvas of the same size, at most 2^20 pixels), for the floor comparison.
struct Agent<'a> {
    task: &'a Task,
    canvas: &'a Canvas<'a>,
}

impl PairRole for Agent<'_> {
    fn endpoint(&self) -> &Endpoint {
        &self.task.endpoint
    }
    fn listens(&self) -> bool {
        self.task.ping
    }
    fn work(&self, tx: &mut impl Tx, rx: &mut impl Rx) -> anyhow::Result<Measurement> {
        let (params, ping) = (&self.task.params, self.task.ping);
        let mut m = pingpong::agent(tx, rx, self.canvas, params, ping)?;
        if ping {
            let pick = pingpong::pick_cost(params, 1 << 20)?;
            m.metrics.push(("pick_ns".into(), pick));
        }
        Ok(m)
    }
}

impl Point for Params {
    fn roles(&self) -> Roles {
        Roles::Fixed(ROLES)
    }
    fn largest_frame(&self, _: &Common) -> Option<Frame> {
        Some(Frame {
            bytes: pingpong::MSG_BYTES as u64,
            key: "size",
            what: format!("a turn of {} bytes", pingpong::MSG_BYTES),
            raises_max_frame: false,
        })
    }
    fn validate(&self, _: &Common, _: &Machine) -> Vec<Problem> {
        let img = self.image();
        let pixels = u64::from(img.width) * u64::from(img.height);
        if pixels > 1 << 24 {
            // The error goes to the key that set the too-large side.
            let key = if self.width != 0 {
                "width"
            } else if self.height != 0 {
                "height"
            } else {
                "size"
            };
            return vec![Problem::new(
                key,
                format!(
                    "a {}x{} image has {pixels} pixels, more than the 2^24 colours (each pixel needs one of its own)",
                    img.width, img.height
                ),
            )];
        }
        vec![]
    }
    fn floor_use(&self) -> FloorUse {
        FloorUse::CoreTransfers
    }
    fn floor(&self, floor: &Floor, report: &RoleReport, _: Option<f64>) -> Option<RowFloor> {
        // A turn's lower bound: one one-way handoff (half the cache-line round trip)
        // plus the pick measured alone.
        let bound = floor.rtt_ns / 2.0 + report.metric("pick_ns").unwrap_or(0.0);
        Some(RowFloor {
            ns: bound,
            ratio: super::per_op_ratio(report, bound),
            of: "half the cache-line round trip and the pick alone".into(),
        })
    }
    fn plan(&self, run: &RunSpec, dir: &Path, results: &Path) -> anyhow::Result<Prepared> {
        let image = self.image();
        // The canvas first: it removes itself if what follows fails.
        let canvas = create_canvas(&image)?;
        let path = canvas.path().to_path_buf();
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let (plan, endpoint) = pair_plan(run, dir, NAME, ROLES, |endpoint, ping| Task {
            endpoint: endpoint.clone(),
            ping,
            canvas: path.clone(),
            params: image,
        })?;
        Ok(Prepared {
            plan,
            endpoints: vec![endpoint],
            after: Some(Box::new(Painted {
                canvas,
                file,
                image,
                out_dir: results.join("pingpong"),
                run_id: run.run_id.clone(),
                artefacts: self.artefacts,
                dir: dir.to_path_buf(),
                timeout: run.timeout().max(std::time::Duration::from_secs(60)),
            })),
        })
    }
}

/// The name of the role that checks a canvas after a run.
const CHECK_ROLE: &str = "check";

/// What the check role is to do: the checks of [`check_and_save`], in a process of its
/// own, so that a canvas another process shrank faults there, not in the harness.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckTask {
    canvas: PathBuf,
    image: PingpongParams,
    out_dir: PathBuf,
    run_id: String,
    artefacts: bool,
}

/// The check role: maps the canvas, checks every pixel, writes the log and the PNG.
fn check_role(job: &RoleJob, stdin: &mut dyn BufRead) -> anyhow::Result<RoleReport> {
    let t: CheckTask = job.task()?;
    crate::wire::emit_ready()?;
    crate::wire::emit(&crate::wire::RoleEvent::Connected)?;
    crate::wire::wait_for_go(stdin)?;
    let n = t.image.pixels()?;
    let seg = Segment::open_with(&t.canvas, pingpong::canvas_bytes(n), false)?;
    check_and_save(&seg, &t.image, &t.out_dir, &t.run_id, t.artefacts)?;
    RoleReport::from_measurement(&Measurement::default())
}

/// A run's canvas, checked after the run and removed when dropped. The harness never
/// touches its mapping once the agents have it: progress is read through the file, and
/// the check runs in a role process of its own.
struct Painted {
    canvas: Segment,
    /// The canvas's file, for progress.
    file: File,
    image: PingpongParams,
    out_dir: PathBuf,
    run_id: String,
    artefacts: bool,
    /// The run's private directory (the check role's log goes there).
    dir: PathBuf,
    timeout: std::time::Duration,
}

impl After for Painted {
    fn progress(&self) -> Option<String> {
        use std::os::unix::fs::FileExt;
        let total = u64::from(self.image.width) * u64::from(self.image.height);
        let mut word = [0u8; 4];
        self.file
            .read_exact_at(&mut word, pingpong::PROGRESS_BYTE)
            .ok()?;
        let done = u32::from_le_bytes(word);
        Some(format!("{}: {done}/{total} pixels", self.run_id))
    }

    fn check(
        &mut self,
        outcome: &RunOutcome,
        metrics: &mut Vec<(String, f64)>,
        how: &Checking<'_>,
    ) -> Result<(), String> {
        let task = CheckTask {
            canvas: self.canvas.path().to_path_buf(),
            image: self.image,
            out_dir: self.out_dir.clone(),
            run_id: self.run_id.clone(),
            artefacts: self.artefacts,
        };
        let role =
            RolePlan::new(CHECK_ROLE, None, NAME, &task).map_err(|e| format!("check: {e:#}"))?;
        let plan = RunPlan {
            run_id: self.run_id.clone(),
            roles: vec![role],
            setup_timeout: crate::runner::SETUP_TIMEOUT,
            timeout: self.timeout,
            dir: self.dir.clone(),
        };
        let checked = crate::runner::execute(how.exe, &plan, how.interrupted);
        if checked.status != Status::Ok {
            return Err(format!("check: {}", checked.status.text()));
        }
        metrics.extend(pingpong_metrics(&self.image, outcome));
        Ok(())
    }
}

/// The pingpong columns of a run that passed its checks.
fn pingpong_metrics(p: &PingpongParams, outcome: &RunOutcome) -> Vec<(String, f64)> {
    let pixels = u64::from(p.width) * u64::from(p.height);
    let secs = outcome
        .reports
        .first()
        .and_then(|r| r.as_ref())
        .map_or(0.0, |r| r.duration_ns as f64 / 1e9);
    let mut m = vec![
        ("width".to_string(), f64::from(p.width)),
        ("height".to_string(), f64::from(p.height)),
        ("pixels".to_string(), pixels as f64),
    ];
    if secs > 0.0 {
        m.push(("ns_per_pixel".into(), secs * 1e9 / pixels as f64));
        if let Some(orig) = original_s(p.width, p.height) {
            m.push(("speedup_vs_original".into(), orig / secs));
        }
    }
    m
}

/// The log file's magic.
pub const LOG_MAGIC: &[u8; 8] = b"IPPLOG1\0";
const LOG_HEADER: usize = 20;
const LOG_ENTRY: usize = 6;

/// The original's published times (seconds) for square images, docs/workloads.md §3.
pub const ORIGINAL_S: &[(u32, f64)] = &[
    (56, 0.2),
    (128, 1.1),
    (256, 4.3),
    (512, 16.9),
    (1024, 66.8),
    (2048, 277.3),
    (4072, 1184.8),
];

/// The original's time for a `w`×`h` image, where it published one.
pub fn original_s(w: u32, h: u32) -> Option<f64> {
    ORIGINAL_S
        .iter()
        .find(|(s, _)| *s == w && *s == h)
        .map(|(_, t)| *t)
}

/// Creates and initialises the canvas of a run in `/dev/shm` (under a name nobody can
/// guess); removed when the returned segment is dropped.
pub fn create_canvas(p: &PingpongParams) -> anyhow::Result<Segment> {
    let n = p.pixels()?;
    let path =
        ipcbench_transport::names::shm_dir().join(ipcbench_transport::names::unique("canvas"));
    let seg = Segment::create_with(&path, pingpong::canvas_bytes(n), true)?;
    pingpong::init_canvas(seg.words32(), p)?;
    Ok(seg)
}

/// What the checks after a run produced: the artefacts written, if any.
#[derive(Debug, Default)]
pub struct Checked {
    /// The log file.
    pub log: Option<PathBuf>,
    /// The PNG of the final image.
    pub png: Option<PathBuf>,
}

/// The checks after a run (every position once, no colour twice, each agent its parity),
/// then, with `artefacts`, the log (read back and compared with the canvas) and the PNG.
/// Streams: its own memory stays a few MiB whatever the image size.
pub fn check_and_save(
    canvas_seg: &Segment,
    p: &PingpongParams,
    out_dir: &Path,
    run_id: &str,
    artefacts: bool,
) -> anyhow::Result<Checked> {
    let canvas = Canvas::attach(canvas_seg.words32(), p)?;
    pingpong::verify(&canvas)?;
    if !artefacts {
        return Ok(Checked::default());
    }
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let log = out_dir.join(format!("{run_id}.log"));
    write_log(&canvas, &log)?;
    let mut reader = LogReader::open(&log)?;
    if (reader.width, reader.height) != canvas.size() || reader.count != canvas.pixels() {
        bail!("{}: the log does not describe the canvas", log.display());
    }
    let mut i = 0u32;
    reader.for_each(reader.count, |px| {
        let on_canvas = canvas.pixel(i)?;
        if px != on_canvas {
            bail!("{}: entry {i} differs from the canvas", log.display());
        }
        i += 1;
        Ok(())
    })?;
    let png = out_dir.join(format!("{run_id}.png"));
    let (w, h) = canvas.size();
    render(w, h, &png, |f| {
        for i in 0..canvas.pixels() {
            f(canvas.pixel(i)?)?;
        }
        Ok(())
    })?;
    Ok(Checked {
        log: Some(log),
        png: Some(png),
    })
}

fn write_log(canvas: &Canvas<'_>, path: &Path) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let (width, height) = canvas.size();
    w.write_all(LOG_MAGIC)?;
    for v in [width, height, canvas.pixels()] {
        w.write_all(&v.to_le_bytes())?;
    }
    for i in 0..canvas.pixels() {
        let px = canvas.pixel(i)?;
        let (p, c) = (px.pos.to_le_bytes(), px.colour.to_le_bytes());
        w.write_all(&[p[0], p[1], p[2], c[0], c[1], c[2]])?;
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))
}

/// A pingpong log, header checked; its entries are streamed, each one checked.
#[derive(Debug)]
pub struct LogReader {
    path: PathBuf,
    /// Image width.
    pub width: u32,
    /// Image height.
    pub height: u32,
    /// Entries in the log.
    pub count: u32,
}

impl LogReader {
    /// Opens a log and checks its header against its length.
    pub fn open(path: &Path) -> anyhow::Result<LogReader> {
        use std::os::unix::fs::OpenOptionsExt;
        // Opened without blocking (a FIFO would wait for a writer) and refused unless it
        // is a regular file.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            bail!("{}: not a regular file", path.display());
        }
        let len = meta.len();
        let mut head = [0u8; LOG_HEADER];
        file.read_exact(&mut head)
            .map_err(|_| anyhow!("{}: too short for a pingpong log", path.display()))?;
        if &head[..8] != LOG_MAGIC {
            bail!("{}: not a pingpong log (bad magic)", path.display());
        }
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let (width, height, count) = (word(8), word(12), word(16));
        let n = u64::from(width) * u64::from(height);
        if n == 0 || n > u64::from(pingpong::COLOURS) || u64::from(count) > n {
            bail!(
                "{}: a {width}x{height} image with {count} entries is not possible",
                path.display()
            );
        }
        if len != (LOG_HEADER + LOG_ENTRY * count as usize) as u64 {
            bail!(
                "{}: {len} bytes, but the header promises {count} entries",
                path.display()
            );
        }
        Ok(LogReader {
            path: path.to_path_buf(),
            width,
            height,
            count,
        })
    }

    /// Calls `f` on the first `upto` entries in order (reading the file afresh).
    pub fn for_each(
        &mut self,
        upto: u32,
        mut f: impl FnMut(Pixel) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let path = &self.path;
        let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut head = [0u8; LOG_HEADER];
        file.read_exact(&mut head)?;
        let mut r = BufReader::with_capacity(1 << 20, file);
        let n = u64::from(self.width) * u64::from(self.height);
        let mut e = [0u8; LOG_ENTRY];
        for i in 0..upto.min(self.count) {
            r.read_exact(&mut e)
                .with_context(|| format!("{}: entry {i}", path.display()))?;
            let pos = u32::from_le_bytes([e[0], e[1], e[2], 0]);
            let colour = u32::from_le_bytes([e[3], e[4], e[5], 0]);
            if u64::from(pos) >= n {
                bail!(
                    "{}: entry {i} has position {pos}, outside the {}x{} image",
                    path.display(),
                    self.width,
                    self.height
                );
            }
            f(Pixel { pos, colour })?;
        }
        Ok(())
    }
}

/// Rows per band: at most this many RGB bytes are held at once.
const BAND_BYTES: usize = 4 << 20;

/// Writes a PNG (pos = y·W + x at column x, row y; unpainted pixels black) of the pixels
/// that `pixels` yields (to the callback it is given), in bands of rows, calling it once
/// per band, so memory stays at [`BAND_BYTES`] whatever the image size.
pub fn render(
    w: u32,
    h: u32,
    out: &Path,
    mut pixels: impl FnMut(&mut dyn FnMut(Pixel) -> anyhow::Result<()>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    // Written under a temporary name beside `out` and renamed when whole, so a failure
    // halfway leaves no partial image (and no temporary file: it is removed on drop).
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".ipcbench-render-")
        .suffix(".png")
        .tempfile_in(parent)
        .with_context(|| format!("creating a temporary file beside {}", out.display()))?;
    write_png(w, h, out, tmp.as_file(), &mut pixels)?;
    tmp.persist(out)
        .map_err(|e| anyhow!("writing {}: {}", out.display(), e.error))?;
    Ok(())
}

/// The PNG of [`render`], into `file`.
fn write_png(
    w: u32,
    h: u32,
    out: &Path,
    file: &File,
    pixels: &mut impl FnMut(&mut dyn FnMut(Pixel) -> anyhow::Result<()>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let row = w as usize * 3;
    let band_rows = (BAND_BYTES / row.max(1)).max(1) as u32;
    let mut enc = png::Encoder::new(BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    let writing = || format!("writing {}", out.display());
    let mut writer = enc.write_header().with_context(writing)?;
    let mut stream = writer.stream_writer().with_context(writing)?;
    let mut band = vec![0u8; band_rows as usize * row];
    let mut top = 0u32;
    while top < h {
        let rows = band_rows.min(h - top);
        let (first, end) = (
            top as usize * w as usize,
            (top + rows) as usize * w as usize,
        );
        band.fill(0);
        pixels(&mut |px: Pixel| {
            let p = px.pos as usize;
            if p >= w as usize * h as usize {
                bail!("position {} is outside the {w}x{h} image", px.pos);
            }
            if (first..end).contains(&p) {
                let at = (p - first) * 3;
                band[at..at + 3].copy_from_slice(&[
                    (px.colour >> 16) as u8,
                    (px.colour >> 8) as u8,
                    px.colour as u8,
                ]);
            }
            Ok(())
        })?;
        stream
            .write_all(&band[..rows as usize * row])
            .with_context(writing)?;
        top += rows;
    }
    stream.finish().with_context(writing)?;
    Ok(())
}

/// `harness render`: the image after the first `upto` pixels of a log (all by default).
pub fn render_command(log: &Path, upto: Option<u64>, out: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut reader = LogReader::open(log)?;
    // The log is open: `out` naming the same file would destroy it.
    if let (Ok(l), Ok(o)) = (std::fs::metadata(log), std::fs::metadata(out)) {
        if (l.dev(), l.ino()) == (o.dev(), o.ino()) {
            bail!(
                "--out {} is the log itself: choose another file",
                out.display()
            );
        }
    }
    let n = match upto {
        Some(n) if n > u64::from(reader.count) => bail!(
            "--upto {n}: {} holds {} pixels",
            log.display(),
            reader.count
        ),
        Some(n) => n as u32,
        None => reader.count,
    };
    let (w, h) = (reader.width, reader.height);
    render(w, h, out, |f| reader.for_each(n, &mut *f))?;
    Ok(u64::from(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_round_trips_and_renders_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = PingpongParams {
            width: 6,
            height: 4,
            seed: 3,
        };
        let seg = create_canvas(&p).unwrap();
        let canvas = Canvas::attach(seg.words32(), &p).unwrap();
        for i in 0..24 {
            canvas.paint(i % 2).unwrap();
        }
        let got = check_and_save(&seg, &p, dir.path(), "run", true).unwrap();
        let log = got.log.unwrap();
        let mut r = LogReader::open(&log).unwrap();
        assert_eq!((r.width, r.height, r.count), (6, 4, 24));
        let mut px = Vec::new();
        r.for_each(24, |p| {
            px.push(p);
            Ok(())
        })
        .unwrap();
        assert_eq!(px[5], canvas.pixel(5).unwrap());
        assert!(got.png.unwrap().metadata().unwrap().len() > 0);
        let half = dir.path().join("half.png");
        assert_eq!(render_command(&log, Some(12), &half).unwrap(), 12);
        assert!(render_command(&log, Some(25), &half).is_err());

        let bytes = std::fs::read(&log).unwrap();
        let bad = dir.path().join("bad.log");
        std::fs::write(&bad, &bytes[..bytes.len() - 1]).unwrap();
        let e = LogReader::open(&bad).err().unwrap();
        assert!(e.to_string().contains("header promises"), "{e}");
        let mut wrong = bytes.clone();
        wrong[LOG_HEADER + 2] = 0xff; // a position far outside the image
        std::fs::write(&bad, &wrong).unwrap();
        let e = render_command(&bad, None, &half).unwrap_err();
        assert!(format!("{e:#}").contains("outside"), "{e:#}");
        std::fs::write(&bad, b"not a log at all, really").unwrap();
        let e = LogReader::open(&bad).err().unwrap();
        assert!(e.to_string().contains("magic"), "{e}");
    }

    #[test]
    fn an_unfinished_canvas_fails_the_checks() {
        let dir = tempfile::tempdir().unwrap();
        let p = PingpongParams {
            width: 5,
            height: 5,
            seed: 1,
        };
        let seg = create_canvas(&p).unwrap();
        Canvas::attach(seg.words32(), &p).unwrap().paint(0).unwrap();
        let e = check_and_save(&seg, &p, dir.path(), "run", true).unwrap_err();
        assert!(format!("{e:#}").contains("stopped at 1 of 25"), "{e:#}");
    }
}
