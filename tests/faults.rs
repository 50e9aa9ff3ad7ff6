//! The fault suite: real harness runs, broken on purpose while they go, as a hostile user
//! or a broken peer would break them. After each fault: the harness exited by itself
//! with the documented code, the status column says what happened, every finished run's
//! row is on disk and parses, and no role process, segment or run directory is left.
//!
//! Each test counts the faults it injects in its name's comment; `.ci/run` runs the
//! suite with the other tests.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod common;
use common::{alive, children, group};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The fault tests take turns: each starts pinned, spinning roles on both cores, and two
/// at once would starve each other into timeouts that are not the faults under test.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// One harness invocation in a scratch directory of its own (TMPDIR, --out, logs).
struct Run {
    dir: tempfile::TempDir,
    child: Child,
    /// Every role process seen while it ran.
    seen: Vec<u32>,
}

fn scratch() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("tmp")).unwrap();
    d
}

/// Starts `harness --config CONFIG --out OUT` with stdout and stderr to files.
fn start(config: &str, env: &[(&str, &str)]) -> Run {
    let dir = scratch();
    let cfg = dir.path().join("fault.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut cmd = harness(&dir);
    cmd.args([
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        dir.path().join("out").to_str().unwrap(),
    ])
    .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
    .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    Run {
        dir,
        child,
        seen: vec![],
    }
}

fn harness(dir: &tempfile::TempDir) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_harness"));
    c.env("TMPDIR", dir.path().join("tmp")).stdin(Stdio::null());
    c
}

fn signal(pid: u32, s: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), s);
}

impl Run {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// Waits until the run in progress has `n` roles that stay half a second (the
    /// floor's two processes come and go in tens of milliseconds), past the summary's
    /// creation; their pids.
    fn roles(&mut self, n: usize) -> Vec<u32> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                Instant::now() < deadline,
                "roles never started: {}",
                self.stderr()
            );
            if let Some(s) = self.child.try_wait().unwrap() {
                panic!(
                    "the harness ended ({s}) before its roles: {}",
                    self.stderr()
                );
            }
            let started = std::fs::read_dir(self.out())
                .map(|mut d| d.any(|e| e.unwrap().path().join("summary.csv").exists()))
                .unwrap_or(false);
            let c = children(self.pid());
            if started && c.len() >= n {
                std::thread::sleep(Duration::from_millis(500));
                if children(self.pid()) == c {
                    self.seen.extend(&c);
                    return c;
                }
                continue;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) for the harness to exit by itself; its exit code.
    fn exit_code(&mut self, bound: Duration) -> Option<i32> {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the harness did not exit within {bound:?}:\n{}",
                    self.stderr()
                );
            }
            self.seen.extend(children(self.pid()));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// The results directory (one per invocation).
    fn results(&self) -> PathBuf {
        let dirs: Vec<_> = std::fs::read_dir(self.out())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        dirs[0].clone()
    }

    /// Every row of summary.csv, each with as many fields as the header.
    fn statuses(&self) -> Vec<String> {
        let mut r = csv::Reader::from_path(self.results().join("summary.csv")).unwrap();
        let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
        let at = header.iter().position(|h| h == "status").unwrap();
        r.records()
            .map(|rec| {
                let rec = rec.unwrap();
                assert_eq!(rec.len(), header.len(), "a row cut short: {rec:?}");
                rec[at].to_string()
            })
            .collect()
    }

    /// The ending of a fault in the first of two runs (`then_ok`): the harness exits 1 by
    /// itself within `bound`, the first run's status starts with `starts`, the second is
    /// ok, nothing is left; the statuses, for further checks.
    fn first_broke_then_ok(&mut self, bound: Duration, starts: &str, context: &str) -> Vec<String> {
        let code = self.exit_code(bound);
        assert_eq!(code, Some(1), "{context}: {}", self.stderr());
        let s = self.statuses();
        assert_eq!(s.len(), 2, "{context}: {s:?}");
        assert!(s[0].starts_with(starts), "{context}: {s:?}");
        assert_eq!(s[1], "ok", "{context}");
        self.assert_clean();
        s
    }

    /// Kills the harness with SIGKILL and waits (at most 10 s) for its `roles` to die
    /// with it.
    fn kill_harness(&mut self, roles: &[u32]) {
        signal(self.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        while roles.iter().any(|p| alive(*p)) {
            assert!(Instant::now() < deadline, "roles outlived a killed harness");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Nothing left: no role process, no segment of this harness, no run directory.
    fn assert_clean(&self) {
        for pid in &self.seen {
            assert!(!alive(*pid), "role {pid} outlived the harness");
        }
        let tag = format!("-{}-", self.pid());
        let segments: Vec<String> = std::fs::read_dir("/dev/shm")
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("ipcbench-") && n.contains(&tag))
                    .collect()
            })
            .unwrap_or_default();
        assert!(segments.is_empty(), "segments left: {segments:?}");
        let left: Vec<_> = std::fs::read_dir(self.dir.path().join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    }
}

/// The first segment of `kind` this harness made, once it exists.
fn segment_of(pid: u32, kind: &str) -> PathBuf {
    let prefix = format!("ipcbench-{kind}-{pid}-");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(e) = std::fs::read_dir("/dev/shm")
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        {
            return e.path();
        }
        assert!(Instant::now() < deadline, "no {kind} segment appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A config: the faulty run first, then a short one that must still end ok.
fn then_ok(first: &str) -> String {
    format!(
        "[defaults]\ntimeout_s = 60\n\n{first}\n\n[[experiment]]\nname = \"after\"\nworkload = \"latency\"\ntransport = \"uds\"\nmsg_bytes = 64\ncount = 200\nwarmup = 10\n"
    )
}

/// A run of each workload that lasts long enough to be broken, over `transport`.
fn long_run(workload: &str, transport: &str) -> String {
    let t = format!("transport = \"{transport}\"");
    let body = match workload {
        "latency" => format!("{t}\nmsg_bytes = 64\ncount = 50000\nrate = 2000\nwarmup = 0"),
        "throughput" => format!("{t}\nmsg_bytes = 64\ncount = 100000000\nwarmup = 0"),
        "pingpong" => format!("{t}\nsize = 4096\nartefacts = false"),
        "vectors" => format!("{t}\nrate = 1000\nduration_s = 30"),
        "buffer" => format!(
            "{t}\nzero_copy = {}\nwait = \"block\"\nchunks = 100000000\nexemplars = 100\nelems = 100",
            transport == "shm"
        ),
        "tasks" => format!("{t}\nover = \"{}\"\ngenerate = 64\ngen_low_s = 5\ngen_high_s = 5\nmax_workers = 2\nbatch = 4", if transport == "shm" { "shm" } else { "uds" }),
        other => panic!("no long run of {other}"),
    };
    // Tasks runs over the queue, or over ZeroMQ's own PUSH/PULL.
    let t = match (workload, transport) {
        ("tasks", "zmq") => body.replace(&t, &format!("{t}\nzmq_pattern = \"pushpull\"")),
        ("tasks", _) => body.replace(&t, "transport = \"queue\""),
        _ => body,
    };
    format!("[[experiment]]\nname = \"long\"\nworkload = \"{workload}\"\n{t}")
}

const WORKLOADS: &[&str] = &[
    "latency",
    "throughput",
    "pingpong",
    "vectors",
    "buffer",
    "tasks",
];

/// Faults: SIGKILL of the second role of every workload over shm and over uds (12).
#[test]
fn a_killed_role_of_any_workload_fails_its_run_and_the_matrix_goes_on() {
    let _turn = one_at_a_time();
    for transport in ["shm", "uds"] {
        for w in WORKLOADS {
            let mut run = start(&then_ok(&long_run(w, transport)), &[]);
            let roles = run.roles(2);
            signal(roles[1], Signal::SIGKILL);
            let at = format!("{w} over {transport}");
            let s = run.first_broke_then_ok(Duration::from_secs(90), "failed: ", &at);
            assert!(s[0].contains("SIGKILL"), "{at}: {s:?}");
            assert!(s[0].contains("logs in logs/"), "{at}: {s:?}");
        }
    }
}

/// Faults: SIGSTOP of a role over shm and over pipe (2).
#[test]
fn a_stopped_role_times_out_and_is_killed() {
    let _turn = one_at_a_time();
    for transport in ["shm", "pipe"] {
        // Closed loop, far more round trips than 4 s hold.
        let cfg = then_ok(&format!(
            "[[experiment]]\nname = \"long\"\nworkload = \"latency\"\ntransport = \"{transport}\"\n\
             msg_bytes = 64\ncount = 100000000\nwarmup = 0\ntimeout_s = 4"
        ));
        let mut run = start(&cfg, &[]);
        let roles = run.roles(2);
        signal(roles[0], Signal::SIGSTOP);
        run.first_broke_then_ok(Duration::from_secs(60), "timeout: ", transport);
    }
}

/// Faults: a role that panics (1).
#[test]
fn a_role_that_panics_says_where_and_keeps_its_log() {
    let _turn = one_at_a_time();
    let mut run = start(
        &then_ok(&long_run("latency", "uds")),
        &[("IPCBENCH_FAULT_PANIC", "server")],
    );
    // The panic is the server's, in both runs; each fails with the message and place.
    assert_eq!(run.exit_code(Duration::from_secs(60)), Some(1));
    let s = run.statuses();
    assert!(
        s[0].contains("server") && s[0].contains("panicked at") && s[0].contains("role.rs:"),
        "{s:?}"
    );
    assert!(s[0].contains("fault injected into role server"), "{s:?}");
    let logs = run.results().join("logs").join("000-long-uds-r0");
    let log = std::fs::read_to_string(logs.join("server.stderr")).unwrap();
    assert!(log.contains("fault injected"), "{log}");
    run.assert_clean();
}

/// Faults: SIGINT or SIGTERM to the harness at setup, mid-run and while it reports,
/// at spread moments (8).
#[test]
fn the_harness_stopped_at_any_moment_leaves_whole_rows_and_nothing_else() {
    let _turn = one_at_a_time();
    let cfg = "[[experiment]]\nname = \"s\"\nworkload = \"latency\"\ntransport = [\"uds\", \"shm\", \"pipe\"]\nmsg_bytes = 64\ncount = 3000\nwarmup = 10\n";
    for (i, delay_ms) in [20u64, 60, 300, 800, 1500, 2200, 2900, 3600]
        .iter()
        .enumerate()
    {
        let sig = if i % 2 == 0 {
            Signal::SIGINT
        } else {
            Signal::SIGTERM
        };
        let mut run = start(cfg, &[]);
        std::thread::sleep(Duration::from_millis(*delay_ms));
        run.seen.extend(children(run.pid()));
        signal(run.pid(), sig);
        let code = run.exit_code(Duration::from_secs(60));
        assert!(
            matches!(code, Some(0) | Some(130)),
            "{sig} after {delay_ms} ms: {code:?}\n{}",
            run.stderr()
        );
        if run.out().exists() && run.results().join("summary.csv").exists() {
            for s in run.statuses() {
                assert_eq!(s, "ok", "{sig} after {delay_ms} ms");
            }
        }
        run.assert_clean();
    }
}

/// Faults: the canvas truncated under a pingpong run, over uds and shm (2).
#[test]
fn a_canvas_truncated_mid_run_fails_the_run_not_the_harness() {
    let _turn = one_at_a_time();
    for transport in ["uds", "shm"] {
        truncated_mid_run(&long_run("pingpong", transport), "canvas", 4096);
    }
}

/// Faults: the pool truncated under a buffer run (1).
#[test]
fn a_pool_truncated_mid_run_fails_the_run_not_the_harness() {
    let _turn = one_at_a_time();
    truncated_mid_run(&long_run("buffer", "shm"), "pool", 0);
}

/// Runs `first` then a short run, shrinks `first`'s segment of `kind` to `len` bytes once
/// its roles run, and checks that the first run failed, the second passed, the harness
/// exited 1 by itself and nothing is left.
fn truncated_mid_run(first: &str, kind: &str, len: u64) {
    let mut run = start(&then_ok(first), &[]);
    let segment = segment_of(run.pid(), kind);
    run.roles(2);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len)
        .unwrap();
    run.first_broke_then_ok(Duration::from_secs(90), "failed: ", kind);
}

/// Faults: garbage written over an shm run's rings (1).
#[test]
fn garbage_over_the_rings_is_reported_as_corruption() {
    let _turn = one_at_a_time();
    let mut run = start(&then_ok(&long_run("latency", "shm")), &[]);
    let seg = segment_of(run.pid(), "shm");
    run.roles(2);
    // Written over in place (not truncated: a shrunk segment is the test above).
    let len = std::fs::metadata(&seg).unwrap().len() as usize;
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all(&vec![0x5au8; len]).unwrap();
    }
    let s = run.first_broke_then_ok(Duration::from_secs(90), "failed: ", "garbage");
    assert!(s[0].contains("corrupt"), "{s:?}");
}

/// Faults: stdout and stderr closed under the harness (1), and a reader that leaves
/// after three lines, as `| head -3` does (1).
#[test]
fn closed_output_streams_stop_no_run() {
    let _turn = one_at_a_time();
    let cfg = "[[experiment]]\nname = \"c\"\nworkload = \"latency\"\ntransport = [\"uds\", \"shm\"]\nmsg_bytes = 64\ncount = 2000\n";
    for lines in [0usize, 3] {
        let dir = scratch();
        std::fs::write(dir.path().join("c.toml"), cfg).unwrap();
        let out = dir.path().join("out");
        let mut child = harness(&dir)
            .args([
                "--config",
                dir.path().join("c.toml").to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        if lines > 0 {
            use std::io::BufRead;
            let mut r = std::io::BufReader::new(stderr);
            for _ in 0..lines {
                let mut l = String::new();
                r.read_line(&mut l).unwrap();
            }
        }
        drop(child.stdout.take());
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "the harness hung");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(0));
        let results = std::fs::read_dir(&out)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut r = csv::Reader::from_path(results.join("summary.csv")).unwrap();
        let n = r
            .records()
            .filter(|x| x.as_ref().unwrap().get(8) == Some("ok"))
            .count();
        assert_eq!(n, 2);
    }
}

/// Faults: --out on a full filesystem (1); skipped where a tmpfs cannot be mounted.
#[test]
fn a_full_disk_stops_with_its_path_and_leaves_whole_files() {
    let _turn = one_at_a_time();
    let dir = scratch();
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=16k",
            "tmpfs",
            full.to_str().unwrap(),
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(full.clone());
    let cfg = dir.path().join("f.toml");
    std::fs::write(
        &cfg,
        "[[experiment]]\nname = \"f\"\nworkload = \"latency\"\ntransport = \"uds\"\nmsg_bytes = [64, 128, 256, 512, 1024, 2048, 4096, 8192]\ncount = 300\nwarmup = 10\n",
    )
    .unwrap();
    let o = harness(&dir)
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            full.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(74), "{err}");
    assert!(
        err.contains("cannot write ") && err.contains(full.to_str().unwrap()),
        "{err}"
    );
    assert!(err.contains("No space left"), "{err}");
    let results = std::fs::read_dir(&full)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut r = csv::Reader::from_path(results.join("summary.csv")).unwrap();
    let width = r.headers().unwrap().len();
    let rows: Vec<_> = r.records().map(|x| x.unwrap()).collect();
    assert!(!rows.is_empty(), "the rows measured before stay");
    assert!(rows.iter().all(|x| x.len() == width && &x[8] == "ok"));
    for e in walk(&results) {
        assert!(
            std::fs::metadata(&e).unwrap().len() > 0,
            "empty file left: {}",
            e.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Faults: a run under umask 000 (1): its directories are 0700 and its files 0600.
#[test]
fn run_directories_are_private_whatever_the_umask() {
    let _turn = one_at_a_time();
    let dir = scratch();
    let cfg = dir.path().join("u.toml");
    std::fs::write(
        &cfg,
        then_ok(
            &long_run("buffer", "uds")
                .replace("zero_copy = false", "zero_copy = false\nworkers = 2"),
        ),
    )
    .unwrap();
    let sh = format!(
        "umask 000; exec '{}' --config '{}' --out '{}'",
        env!("CARGO_BIN_EXE_harness"),
        cfg.display(),
        dir.path().join("out").display()
    );
    let child = Command::new("sh")
        .args(["-c", &sh])
        .env("TMPDIR", dir.path().join("tmp"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut run = Run {
        dir,
        child,
        seen: vec![],
    };
    let roles = run.roles(3);
    let tmp = run.dir.path().join("tmp");
    let runs: Vec<PathBuf> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let mut checked = 0;
    for p in std::iter::once(runs[0].clone()).chain(walk_all(&runs[0])) {
        let mode = std::fs::symlink_metadata(&p).unwrap().permissions().mode() & 0o777;
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} is {mode:o}", p.display());
        checked += 1;
    }
    assert!(
        checked >= 4,
        "directory, worker directories, sockets and logs: {checked}"
    );
    signal(roles[1], Signal::SIGKILL);
    assert_eq!(run.exit_code(Duration::from_secs(60)), Some(1));
    run.assert_clean();
}

fn walk_all(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        out.push(p.clone());
        if p.is_dir() {
            out.extend(walk_all(&p));
        }
    }
    out
}

/// Faults: `kill -9` of the harness mid-run (1): what it left is swept by `harness clean`.
#[test]
fn what_a_killed_harness_leaves_is_swept() {
    let _turn = one_at_a_time();
    let mut run = start(&long_run("pingpong", "shm"), &[]);
    let canvas = segment_of(run.pid(), "canvas");
    let roles = run.roles(2);
    // The roles die with it (their parent-death signal)...
    run.kill_harness(&roles);
    // ...but its segments and run directory stay, until the next harness sweeps them.
    assert!(canvas.exists());
    let o = harness(&run.dir).arg("clean").output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert!(text.contains(canvas.to_str().unwrap()), "{text}");
    assert!(!canvas.exists());
    run.assert_clean();
}

/// Faults: a vectors run interrupted (1): its CSVs go with it.
#[test]
fn an_interrupted_vectors_run_leaves_no_orphan_files() {
    let _turn = one_at_a_time();
    let mut run = start(&long_run("vectors", "uds"), &[]);
    run.roles(2);
    std::thread::sleep(Duration::from_millis(500));
    signal(run.pid(), Signal::SIGINT);
    assert_eq!(run.exit_code(Duration::from_secs(60)), Some(130));
    let vectors = run.results().join("vectors");
    let left: Vec<_> = std::fs::read_dir(&vectors)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "orphan files: {left:?}");
    run.assert_clean();
}

/// Faults: render pointed at its own log, at a FIFO, and at a log with a bad entry (3).
#[test]
fn render_never_destroys_its_log_hangs_or_leaves_half_an_image() {
    let _turn = one_at_a_time();
    let dir = scratch();
    let log = dir.path().join("x.log");
    // A valid 2x2 log whose last entry points outside the image.
    let mut bytes = b"IPPLOG1\0".to_vec();
    for v in [2u32, 2, 4] {
        bytes.extend(v.to_le_bytes());
    }
    for (pos, colour) in [(0u32, 1u32), (1, 2), (2, 3), (9, 4)] {
        bytes.extend(&pos.to_le_bytes()[..3]);
        bytes.extend(&colour.to_le_bytes()[..3]);
    }
    std::fs::write(&log, &bytes).unwrap();
    let render = |log: &Path, out: &Path| {
        let mut c = harness(&dir)
            .args([
                "render",
                "--log",
                log.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("render hung on {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    assert_eq!(render(&log, &log), Some(2));
    assert_eq!(std::fs::read(&log).unwrap(), bytes, "the log was touched");
    let fifo = dir.path().join("f.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    assert_eq!(render(&fifo, &dir.path().join("f.png")), Some(2));
    let png = dir.path().join("bad.png");
    assert_eq!(render(&log, &png), Some(2));
    assert!(!png.exists(), "a partial image was left");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.to_string_lossy().contains("ipcbench-render")),
        "a temporary image was left: {names:?}"
    );
}

/// The POSIX queues a harness's runs have open now, read from the `mq.names` files in its
/// run directories (the queues' own directory, /dev/mqueue, may not be mounted).
fn queue_names(run: &Run) -> Vec<String> {
    walk_all(&run.dir.path().join("tmp"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "mq.names"))
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn queue_exists(name: &str) -> bool {
    let c = std::ffi::CString::new(name).unwrap();
    match nix::mqueue::mq_open(
        c.as_c_str(),
        nix::mqueue::MQ_OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
        None,
    ) {
        Ok(q) => {
            let _ = nix::mqueue::mq_close(q);
            true
        }
        Err(nix::errno::Errno::ENOENT) => false,
        Err(e) => panic!("mq_open {name}: {e}"),
    }
}

/// Faults over POSIX queues (2): a killed role fails its run, the queues go and the
/// matrix goes on; a killed harness's queues are unlinked by the next one.
#[test]
fn posix_queues_go_with_their_run_and_with_a_killed_harness() {
    let _turn = one_at_a_time();
    let mut run = start(&then_ok(&long_run("latency", "mq")), &[]);
    let roles = run.roles(2);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut names = queue_names(&run);
    while names.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no mq.names in the run directory"
        );
        std::thread::sleep(Duration::from_millis(10));
        names = queue_names(&run);
    }
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| queue_exists(n)));
    signal(roles[1], Signal::SIGKILL);
    let s = run.first_broke_then_ok(Duration::from_secs(90), "failed: ", "latency over mq");
    assert!(s[0].contains("SIGKILL"), "{s:?}");
    assert!(
        names.iter().all(|n| !queue_exists(n)),
        "queues left: {names:?}"
    );

    let mut run = start(&long_run("latency", "mq"), &[]);
    let roles = run.roles(2);
    let names = queue_names(&run);
    assert_eq!(names.len(), 2, "{names:?}");
    run.kill_harness(&roles);
    assert!(
        names.iter().all(|n| queue_exists(n)),
        "the queues stay until a sweep"
    );
    let o = harness(&run.dir).arg("clean").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        names.iter().all(|n| !queue_exists(n)),
        "queues left: {names:?}"
    );
    run.assert_clean();
}

/// Faults over the library peers (5): a role of each killed mid-run fails its run and
/// the matrix goes on with nothing left (tasks over ZeroMQ: its client or its gateway,
/// and no worker outlives them); a killed harness's iceoryx2 memory is swept.
#[test]
fn a_killed_role_over_a_library_peer_fails_its_run_and_nothing_is_left() {
    let _turn = one_at_a_time();
    for transport in ["zmq", "iceoryx2"] {
        let mut run = start(&then_ok(&long_run("latency", transport)), &[]);
        let roles = run.roles(2);
        signal(roles[1], Signal::SIGKILL);
        let at = format!("latency over {transport}");
        let s = run.first_broke_then_ok(Duration::from_secs(90), "failed: ", &at);
        assert!(s[0].contains("SIGKILL"), "{at}: {s:?}");
    }
    // Tasks over ZeroMQ: the gateway killed while its workers sleep; no worker is left.
    for victim in [0, 1] {
        let mut run = start(&then_ok(&long_run("tasks", "zmq")), &[]);
        let roles = run.roles(2);
        let gateway = roles[1];
        // Its two workers, started at once, are in its process group.
        let deadline = Instant::now() + Duration::from_secs(30);
        while group(gateway).len() < 4 {
            assert!(Instant::now() < deadline, "the workers never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        signal(roles[victim], Signal::SIGKILL);
        let at = format!("tasks over zmq, role {victim} killed");
        let s = run.first_broke_then_ok(Duration::from_secs(90), "failed: ", &at);
        assert!(s[0].contains("SIGKILL"), "{at}: {s:?}");
        assert!(group(gateway).is_empty(), "{at}: {:?} left", group(gateway));
        run.assert_clean();
    }
    let mut run = start(&long_run("latency", "iceoryx2"), &[]);
    let memory = segment_of(run.pid(), "iox");
    let roles = run.roles(2);
    run.kill_harness(&roles);
    assert!(memory.exists(), "iceoryx2's memory stays until a sweep");
    let o = harness(&run.dir).arg("clean").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    run.assert_clean();
}
