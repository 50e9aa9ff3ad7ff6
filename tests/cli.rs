//! End-to-end tests: the `harness` binary run as a user runs it. Each test gets its own
//! TMPDIR and output directory and checks that no run directory or role process is left.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod common;
use common::{alive, children};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const FIXED: &str = "run_id,workload,transport,wait,msg_bytes,params,cores,rep,status,count,duration_s,msgs_per_s,bytes_per_s,p50_ns,p90_ns,p99_ns,p999_ns,max_ns,mean_ns,stdev_ns,floor_ns,ratio_to_floor";

/// The columns every row has after the workloads' own.
const CPU: &str =
    "cpu0_pct,cpu1_pct,cpu_rest_pct,floor_of,floor_before_ns,floor_after_ns,host_moved,retakes,how";

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn tmp(&self) -> PathBuf {
        let t = self.path("tmp");
        std::fs::create_dir_all(&t).unwrap();
        t
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }
    fn harness(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_harness"));
        c.args(args).env("TMPDIR", self.tmp()).stdin(Stdio::null());
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        let mut child = self
            .harness(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_bounded(&mut child, Duration::from_secs(240));
        child.wait_with_output().unwrap()
    }
    /// `harness --config CFG --out OUT`.
    /// Writes `text` as the config `name`, runs it into `out/`, checks that the harness
    /// succeeded; the results directory, and its summary's header and rows.
    fn run_ok(&self, name: &str, text: &str) -> (PathBuf, Vec<String>, Vec<csv::StringRecord>) {
        let cfg = self.write(name, text);
        let out = self.path("out");
        let o = self.run_config(&cfg, &out);
        assert!(o.status.success(), "{}", stderr(&o));
        let dir = results_dir(&out);
        let (header, rows) = summary(&dir);
        (dir, header, rows)
    }

    fn run_config(&self, cfg: &Path, out: &Path) -> Output {
        self.run(&[
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
    }
    /// No run directory and no segment of ours is left behind.
    fn assert_clean(&self) {
        let left: Vec<_> = std::fs::read_dir(self.tmp())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left behind in TMPDIR: {left:?}");
    }
}

fn wait_bounded(child: &mut Child, bound: Duration) {
    let deadline = Instant::now() + bound;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("harness did not finish within {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Waits until `parent` has at least `n` children that stay for half a second: the
/// ping and pong of the floor taken before a run come and go in tens of milliseconds.
fn wait_for_roles(parent: u32, n: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = children(parent);
        if c.len() >= n {
            std::thread::sleep(Duration::from_millis(500));
            if children(parent) == c {
                return c;
            }
            continue;
        }
        assert!(Instant::now() < deadline, "roles never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn results_dir(out: &Path) -> PathBuf {
    let dirs: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        dirs.len(),
        1,
        "one results directory per invocation: {dirs:?}"
    );
    dirs[0].clone()
}

/// `summary.csv` with whatever columns it has: its header and its rows.
fn summary(dir: &Path) -> (Vec<String>, Vec<csv::StringRecord>) {
    let mut r = csv::Reader::from_path(dir.join("summary.csv")).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
    (header, r.records().map(|x| x.unwrap()).collect())
}

/// Segments in /dev/shm whose names start with `prefix` (a kind only one test creates,
/// since the tests run side by side).
fn shm_left(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn rows(dir: &Path) -> Vec<csv::StringRecord> {
    let (header, rows) = summary(dir);
    assert_eq!(
        header.join(","),
        format!("{FIXED},{CPU}"),
        "fixed columns, in order, then the CPU columns"
    );
    rows
}

const SMALL: &str = r#"
[defaults]
cores = [0, 1]
timeout_s = 60

[[experiment]]
name = "lat"
workload = "latency"
transport = ["pipe", "uds", "tcp"]
msg_bytes = [64, 70000]
count = 200
warmup = 20

[[experiment]]
name = "tp"
workload = "throughput"
transport = ["pipe", "uds", "tcp"]
msg_bytes = 4096
count = 2000
warmup = 10

[[experiment]]
name = "bare"
workload = "latency"
transport = "uds"
msg_bytes = 64
count = 100
bare = true

[[experiment]]
name = "shm"
workload = "latency"
transport = "shm"
wait = ["spin", "yield", "block"]
msg_bytes = 64
count = 2000
"#;

#[test]
fn small_matrix_writes_every_result_file() {
    let s = Scratch::new();
    let cfg = s.write("small.toml", SMALL);
    let out = s.path("out");
    let o = s.run_config(&cfg, &out);
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = results_dir(&out);
    assert!(
        dir.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("small-2"),
        "{dir:?}"
    );
    let rows = rows(&dir);
    assert_eq!(rows.len(), 6 + 3 + 1 + 3);
    for r in &rows {
        assert_eq!(&r[8], "ok", "{r:?}");
        let wait = if &r[2] == "shm" {
            ["spin", "yield", "block"].contains(&&r[3])
        } else {
            &r[3] == "kernel"
        };
        assert!(wait, "wait column: {r:?}");
        assert!(r[9].parse::<u64>().unwrap() > 0);
        assert!(
            r[20].parse::<f64>().unwrap() > 0.0,
            "floor_ns filled: {r:?}"
        );
        // Each of the two roles' CPU share over its window: a number, at most the two
        // cores a role's threads could have used.
        for at in [22, 23] {
            let cpu: f64 = r[at].parse().unwrap();
            assert!((0.0..=250.0).contains(&cpu), "cpu column {at}: {r:?}");
        }
        assert_eq!(&r[24], "", "no third role: {r:?}");
        if &r[1] == "latency" {
            let p50: f64 = r[13].parse().unwrap();
            let p99: f64 = r[15].parse().unwrap();
            assert!(p50 > 0.0 && p99 >= p50, "{r:?}");
            assert!(dir
                .join("histograms")
                .join(format!("{}.hgrm", &r[0]))
                .is_file());
        } else {
            assert!(r[12].parse::<f64>().unwrap() > 0.0, "bytes_per_s: {r:?}");
        }
    }
    let env: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("env.json")).unwrap()).unwrap();
    let floor = &env["floors"][0];
    for key in ["rtt_ns", "rtt_p50_ns", "one_line_rtt_ns", "stream_ns"] {
        assert!(floor[key].as_f64().unwrap() > 0.0, "{key}: {floor}");
    }
    // A throughput row is compared with one cache-resident copy of its message or one
    // line handed between the cores, whichever costs more, of the matrix's reference
    // floor (the one in env.json).
    let sizes = [
        64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
    ];
    let copy_ns: Vec<f64> = floor["copy_ns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let stream_ns = floor["stream_ns"].as_f64().unwrap();
    for r in rows.iter().filter(|r| &r[1] == "throughput") {
        let (msg_bytes, msgs_per_s, floor_ns, ratio): (f64, f64, f64, f64) = (
            r[4].parse().unwrap(),
            r[11].parse().unwrap(),
            r[20].parse().unwrap(),
            r[21].parse().unwrap(),
        );
        let at = sizes.iter().position(|s| *s >= msg_bytes).unwrap_or(7);
        let want = (copy_ns[at] * msg_bytes / sizes[at]).max(stream_ns);
        // summary.csv writes floor_ns with one decimal: up to 0.05 ns off.
        assert!(
            (floor_ns - want).abs() <= 0.05 + 1e-9 * want,
            "{want}: {r:?}"
        );
        let per_msg = 1e9 / msgs_per_s;
        let tolerance = ratio * (1e-3 + 0.05 / floor_ns);
        assert!((ratio - per_msg / floor_ns).abs() <= tolerance, "{r:?}");
    }
    // A latency row is compared with the matrix's reference floor, timed as the row is
    // (one round trip at a time): its ratio is its p50 over that.
    for r in rows.iter().filter(|r| &r[1] == "latency") {
        let (p50, floor_ns, ratio): (f64, f64, f64) = (
            r[13].parse().unwrap(),
            r[20].parse().unwrap(),
            r[21].parse().unwrap(),
        );
        assert!((ratio - p50 / floor_ns).abs() < 1e-3, "{r:?}");
    }
    let stalls = floor["stall_pct"].as_f64().unwrap();
    assert!((0.0..100.0).contains(&stalls), "{stalls}");
    assert!(floor["stalls_10us_per_s"].as_f64().unwrap() >= 0.0);
    assert!(env["config"].as_str().unwrap().contains("name = \"tp\""));
    assert!(env["kernel"].as_str().unwrap().starts_with("Linux"));
    s.assert_clean();
}

#[test]
fn bad_config_is_one_line_per_problem_exit_2_and_nothing_written() {
    let s = Scratch::new();
    let cfg = s.write(
        "bad.toml",
        "[[experiment]]\nname = \"x\"\nworkload = \"latency\"\ntransport = \"uds\"\nmsg_bytes = 64\ncount = \"many\"\nbogus = 1\ncores = [0, 99]\n",
    );
    let out = s.path("out");
    let o = s.run_config(&cfg, &out);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    let f = cfg.display();
    assert!(
        e.contains(&format!("{f}:6: key `count`: expected integer")),
        "{e}"
    );
    assert!(
        e.contains(&format!("{f}:7: key `bogus`: unknown key")),
        "{e}"
    );
    assert!(
        e.contains(&format!("{f}:8: key `cores`: core 99 is not usable")),
        "{e}"
    );
    assert!(!out.exists(), "nothing is written for a bad config");
    s.assert_clean();
}

#[test]
fn other_bad_input_exits_2() {
    let s = Scratch::new();
    let o = s.run(&["--config", "/nonexistent/x.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("/nonexistent/x.toml: cannot read config"),
        "{}",
        stderr(&o)
    );

    let cfg = s.write("ok.toml", "[[experiment]]\nname = \"x\"\nworkload = \"latency\"\ntransport = \"uds\"\nmsg_bytes = 64\ncount = 10\n");
    let blocker = s.write("a-file", "");
    let out = blocker.join("sub");
    let o = s.run_config(&cfg, &out);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot create output directory"),
        "{}",
        stderr(&o)
    );

    let o = s.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "--filter",
        "transport=tcp",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no run matches"), "{}", stderr(&o));
    let o = s.run(&["--config", cfg.to_str().unwrap(), "--filter", "colour=blue"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no parameter `colour`"),
        "{}",
        stderr(&o)
    );
    let o = s.run(&["--bogus-flag"]);
    assert_eq!(o.status.code(), Some(2));
    let o = s.run(&["calibrate", "--cores", "0,1,1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("expected two cores"), "{}", stderr(&o));
    let o = s.run(&["calibrate", "--cores", "0,77"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("core 77 is not usable"),
        "{}",
        stderr(&o)
    );
    s.assert_clean();
}

#[test]
fn validate_and_list_run_nothing() {
    let s = Scratch::new();
    let cfg = s.write("small.toml", SMALL);
    let o = s.run(&["validate", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("ok, 13 runs"), "{text}");
    assert!(text.contains("000-lat-pipe-64B-r0"), "{text}");
    let o = s.run(&["list"]);
    let text = String::from_utf8_lossy(&o.stdout);
    for word in [
        "pipe",
        "uds",
        "tcp",
        "latency",
        "throughput",
        "msg_bytes",
        "rate",
        "client, server",
    ] {
        assert!(text.contains(word), "list lacks {word}: {text}");
    }
    s.assert_clean();
}

const LONG_THEN_SHORT: &str = r#"
[[experiment]]
name = "long"
workload = "latency"
transport = "uds"
msg_bytes = 64
count = 1000000000
timeout_s = 120

[[experiment]]
name = "short"
workload = "latency"
transport = "pipe"
msg_bytes = 64
count = 100
"#;

/// Starts the harness on `config` and waits until its first run's roles are up: past
/// calibration (summary.csv exists once it is done), both roles spawned and settled.
fn start_long_run(s: &Scratch, config: &str) -> (Child, PathBuf, Vec<u32>) {
    let cfg = s.write("long.toml", config);
    let out = s.path("out");
    let h = s
        .harness(&[
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_dir(&out)
        .map(|mut d| d.any(|e| e.unwrap().path().join("summary.csv").exists()))
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "the matrix never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let roles = wait_for_roles(h.id(), 2);
    std::thread::sleep(Duration::from_millis(300));
    (h, out, roles)
}

#[test]
fn a_killed_role_is_reported_and_the_matrix_goes_on() {
    let s = Scratch::new();
    let (mut h, out, roles) = start_long_run(&s, LONG_THEN_SHORT);
    let server = roles[1];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_bounded(&mut h, Duration::from_secs(60));
    let o = h.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "some run failed: {}", stderr(&o));
    let rows = rows(&results_dir(&out));
    assert_eq!(rows.len(), 2, "the matrix went on after the failure");
    assert!(rows[0][8].starts_with("failed: "), "{:?}", rows[0]);
    assert!(
        rows[0][8].contains("server (killed by SIGKILL)"),
        "{:?}",
        &rows[0][8]
    );
    assert_eq!(&rows[1][8], "ok");
    for pid in roles {
        assert!(!alive(pid), "role {pid} outlived its run");
    }
    s.assert_clean();
}

#[test]
fn a_run_past_its_timeout_is_killed_and_reported() {
    let s = Scratch::new();
    let cfg = s.write(
        "t.toml",
        &LONG_THEN_SHORT.replace("timeout_s = 120", "timeout_s = 1.5"),
    );
    let out = s.path("out");
    let t0 = Instant::now();
    let o = s.run_config(&cfg, &out);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(t0.elapsed() < Duration::from_secs(60));
    let rows = rows(&results_dir(&out));
    assert!(
        rows[0][8].starts_with("timeout: client, server still running"),
        "{:?}",
        &rows[0][8]
    );
    assert_eq!(&rows[1][8], "ok");
    s.assert_clean();
}

fn stop_with(signal: nix::sys::signal::Signal) {
    let s = Scratch::new();
    let (mut h, _out, roles) = start_long_run(&s, LONG_THEN_SHORT);
    let roles: Vec<u32> = roles.into_iter().chain(children(h.id())).collect();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(h.id() as i32), signal).unwrap();
    wait_bounded(&mut h, Duration::from_secs(30));
    let o = h.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(stderr(&o).contains("interrupted"), "{}", stderr(&o));
    for pid in roles {
        assert!(!alive(pid), "role {pid} outlived {signal}");
    }
    s.assert_clean();
}

#[test]
fn ctrl_c_stops_every_role_and_removes_run_files() {
    stop_with(nix::sys::signal::Signal::SIGINT);
}

#[test]
fn sigterm_cleans_up_like_ctrl_c() {
    stop_with(nix::sys::signal::Signal::SIGTERM);
}

#[test]
fn pingpong_paints_checks_and_renders_over_a_kernel_transport_and_shm() {
    let s = Scratch::new();
    let (dir, header, rows) = s.run_ok(
        "pp.toml",
        "[[experiment]]\nname = \"pp\"\nworkload = \"pingpong\"\ntransport = [\"pipe\", \"shm\"]\nsize = 56\n\n\
         [[experiment]]\nname = \"wide\"\nworkload = \"pingpong\"\ntransport = \"uds\"\nsize = 1\nwidth = 9\nheight = 4\nseed = 7\n",
    );
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!(&row[col("status")], "ok", "{row:?}");
        let pixels: f64 = row[col("pixels")].parse().unwrap();
        let w: f64 = row[col("width")].parse().unwrap();
        let h: f64 = row[col("height")].parse().unwrap();
        assert_eq!(pixels, w * h);
        assert_eq!(row[col("count")].parse::<f64>().unwrap(), pixels);
        assert!(row[col("ns_per_pixel")].parse::<f64>().unwrap() > 0.0);
        assert!(row[col("pick_ns")].parse::<f64>().unwrap() > 0.0);
        assert!(
            row[col("p50_ns")].parse::<f64>().unwrap() > 0.0,
            "handoff histogram"
        );
        let log = dir.join("pingpong").join(format!("{}.log", &row[0]));
        assert_eq!(
            std::fs::metadata(&log).unwrap().len(),
            20 + 6 * pixels as u64,
            "6 bytes per pixel after a 20-byte header"
        );
        assert!(dir
            .join("pingpong")
            .join(format!("{}.png", &row[0]))
            .is_file());
    }
    assert_eq!(&rows[2][col("width")], "9.000");
    // 56x56 is one of the original's sizes.
    assert!(rows[0][col("speedup_vs_original")].parse::<f64>().unwrap() > 0.0);
    assert!(rows[2][col("speedup_vs_original")].is_empty());

    // Render any step; a step past the log, or a file that is no log, is a usage error.
    let log = dir.join("pingpong").join(format!("{}.log", &rows[0][0]));
    let png = s.path("half.png");
    let ok = s.run(&[
        "render",
        "--log",
        log.to_str().unwrap(),
        "--upto",
        "1568",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    let past = s.run(&[
        "render",
        "--log",
        log.to_str().unwrap(),
        "--upto",
        "3137",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert_eq!(past.status.code(), Some(2), "{}", stderr(&past));
    assert!(
        stderr(&past).contains("holds 3136 pixels"),
        "{}",
        stderr(&past)
    );
    let not_log = s.run(&[
        "render",
        "--log",
        s.path("pp.toml").to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
    ]);
    assert_eq!(not_log.status.code(), Some(2));
    assert!(stderr(&not_log).contains("pp.toml"), "{}", stderr(&not_log));
    s.assert_clean();
    let canvases = shm_left("ipcbench-canvas-");
    assert!(canvases.is_empty(), "canvas segments left: {canvases:?}");
}

#[test]
fn vectors_detects_every_drop_and_writes_its_batches_and_timeline() {
    let s = Scratch::new();
    let (dir, header, rows) = s.run_ok(
        "vec.toml",
        "[[experiment]]\nname = \"v\"\nworkload = \"vectors\"\ntransport = [\"uds\", \"shm\"]\n\
         duration_s = 1\nrate = 2000\nlow_s = 0.1\nhigh_s = 0.2\nnoise = [\"drop-interval\", \"burst\"]\n\
         burst = 3\ndtype = \"f32\"\ndisplay_interval_s = 0.2\n",
    );
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(rows.len(), 4);
    for row in &rows {
        assert_eq!(&row[col("status")], "ok", "{row:?}");
        let num = |c: &str| row[col(c)].parse::<f64>().unwrap();
        let injected = num("drops_injected");
        assert!(injected >= 3.0, "{row:?}");
        assert_eq!(num("drops_detected"), injected);
        assert_eq!(num("extrapolated"), injected);
        assert_eq!(num("vectors_sent"), num("vectors_received"));
        assert_eq!(
            num("vectors_sent") + injected,
            2000.0,
            "a second of 2000/s slots"
        );
        assert_eq!(num("rate_target_hz"), 2000.0);
        assert!(num("rate_achieved_hz") > 0.0 && num("p50_ns") > 0.0);
        for kind in ["batches", "timeline"] {
            let f = dir.join("vectors").join(format!("{}.{kind}.csv", &row[0]));
            let text = std::fs::read_to_string(&f).unwrap();
            assert!(text.lines().count() > 2, "{}", f.display());
        }
        let batches =
            std::fs::read_to_string(dir.join("vectors").join(format!("{}.batches.csv", &row[0])))
                .unwrap();
        // 2000 slots, extrapolated ones included: 20 batches of 100.
        assert_eq!(batches.lines().count(), 21);
    }
    s.assert_clean();
}

#[test]
fn vectors_config_errors_name_their_keys() {
    let s = Scratch::new();
    let cfg = s.write(
        "bad.toml",
        "[[experiment]]\nname = \"v\"\nworkload = \"vectors\"\ntransport = \"uds\"\nlow_s = 3\nhigh_s = 2\ndtype = \"f16\"\n",
    );
    let o = s.run(&["validate", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("bad.toml:7: key `dtype`: unknown dtype `f16` (known: f64, f32)"),
        "{e}"
    );
    assert!(
        e.contains("bad.toml:6: key `high_s`: must be larger than low_s"),
        "{e}"
    );
}

#[test]
fn buffer_results_are_exact_zero_copy_and_by_copy_with_more_workers_than_cores() {
    let s = Scratch::new();
    let (_, header, rows) = s.run_ok(
        "buf.toml",
        "[[experiment]]\nname = \"pool\"\nworkload = \"buffer\"\ntransport = \"shm\"\n\
         kind = [\"sum\", \"transitions\"]\ndtype = \"u32\"\nexemplars = 40\nelems = 64\nchunks = 60\nworkers = 4\n\n\
         [[experiment]]\nname = \"copy\"\nworkload = \"buffer\"\ntransport = [\"uds\", \"shm\"]\nzero_copy = false\n\
         wait = \"block\"\ndtype = \"i16\"\nexemplars = 40\nelems = 64\nchunks = 60\nworkers = 3\n",
    );
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(rows.len(), 4);
    for row in &rows {
        assert_eq!(&row[col("status")], "ok", "{row:?}");
        assert_eq!(&row[col("chunks")], "60.000");
        assert!(row[col("gb_per_s")].parse::<f64>().unwrap() > 0.0);
        assert!(
            row[col("p50_ns")].parse::<f64>().unwrap() > 0.0,
            "chunk latency"
        );
        // acquirer + workers, on cores 0, 1, 0, 1, ...
        assert!(row[col("cores")].starts_with("0;1;0;1"), "{row:?}");
    }
    s.assert_clean();
    let pools = shm_left("ipcbench-pool-");
    assert!(pools.is_empty(), "pool segments left: {pools:?}");

    // Spinning copy roles beyond one per core are refused, naming the key.
    let bad = s.write(
        "bad.toml",
        "[[experiment]]\nname = \"b\"\nworkload = \"buffer\"\ntransport = \"shm\"\nzero_copy = false\nworkers = 3\n",
    );
    let o = s.run(&["validate", "--config", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("key `wait`: buffer by copy over shm"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn tasks_deliver_every_result_once_even_when_a_worker_is_killed() {
    let s = Scratch::new();
    let (_, header, rows) = s.run_ok(
        "t.toml",
        r#"
[[experiment]]
name = "tasks-kill"
workload = "tasks"
transport = "queue"
over = ["uds", "shm"]
# A batch lasts 0.3 s, so the worker killed is still in it even when the gateway is
# scheduled late on a loaded machine (with 0.05 s it once had finished: nothing to redo).
wait_s = 0.3
kill_worker_after = 5
timeout_s = 60
"#,
    );
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(&r[col("status")], "ok", "{r:?}");
        assert!(r[col("transport")].starts_with("queue-"), "{r:?}");
        let num = |name: &str| r[col(name)].parse::<f64>().unwrap();
        assert_eq!(num("results_ok"), 32.0);
        assert_eq!(num("batches"), 32.0);
        assert_eq!(num("response_sum"), 512.0);
        assert_eq!(num("workers_killed"), 1.0);
        assert!(num("redispatched") >= 1.0, "{r:?}");
        assert_eq!(num("dropped"), 0.0);
        // The killed worker's batch costs about one more batch time, not a timeout.
        assert!(num("makespan_s") < 5.0, "{r:?}");
    }
    s.assert_clean();
}

#[test]
fn tasks_over_real_zeromq_deal_every_batch_once_to_workers_all_started_first() {
    let s = Scratch::new();
    let (_, header, rows) = s.run_ok(
        "t.toml",
        r#"
[[experiment]]
name = "tasks-zmq"
workload = "tasks"
transport = "zmq"
zmq_pattern = "pushpull"
over = ["uds", "tcp"]
max_workers = 8
wait_s = 0.1
timeout_s = 60
"#,
    );
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(&r[col("status")], "ok", "{r:?}");
        assert!(r[col("transport")].starts_with("zmq-pushpull-"), "{r:?}");
        assert!(r[col("how")].contains("libzmq PUSH/PULL"), "{r:?}");
        let num = |name: &str| r[col(name)].parse::<f64>().unwrap();
        assert_eq!(num("results_ok"), 32.0);
        assert_eq!(num("response_sum"), 512.0);
        assert_eq!(num("duplicates"), 0.0);
        assert_eq!(num("dropped"), 0.0);
        // All eight at once.
        assert_eq!(num("workers_started"), 8.0);
    }
    s.assert_clean();
}

#[test]
fn ctrl_c_hands_every_tasks_worker_a_poison_pill() {
    // Over the queue and over ZeroMQ's own PUSH/PULL.
    for transport in [
        "transport = \"queue\"",
        "transport = \"zmq\"\nzmq_pattern = \"pushpull\"",
    ] {
        ctrl_c_over(transport);
    }
}

fn ctrl_c_over(transport: &str) {
    let s = Scratch::new();
    // 320 batches of 0.2 s on 8 threaded workers (a 10-s job), interrupted once the
    // workers run: each takes its pill when its batch is done, ahead of the batches left
    // (over ZeroMQ, after the batches already dealt to it).
    let (mut h, _out, roles) = start_long_run(
        &s,
        &format!(
            r#"
[[experiment]]
name = "tasks-int"
workload = "tasks"
{transport}
over = "uds"
generate = 5120
max_workers = 8
wait_s = 0.2
timeout_s = 120
"#
        ),
    );
    // The gateway's fork server and its workers.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (server, workers) = loop {
        let found = roles.iter().flat_map(|r| children(*r)).find_map(|srv| {
            let w = children(srv);
            (w.len() >= 4).then_some((srv, w))
        });
        if let Some(f) = found {
            break f;
        }
        assert!(Instant::now() < deadline, "no workers started");
        std::thread::sleep(Duration::from_millis(20));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    wait_bounded(&mut h, Duration::from_secs(30));
    let o = h.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(
        err.contains("gateway: stopped: interrupted: poison pills sent to the")
            && err.contains("all left"),
        "{err}"
    );
    for pid in roles.into_iter().chain([server]).chain(workers) {
        assert!(!alive(pid), "{pid} outlived Ctrl-C");
    }
    s.assert_clean();
}

#[test]
fn tasks_data_errors_name_the_file_and_line() {
    let s = Scratch::new();
    let data = s.write("client.txt", "137.72.95.1:foo\n137.72.95.999:bar\n");
    let cfg = s.write(
        "t.toml",
        &format!(
            "[[experiment]]\nname = \"t\"\nworkload = \"tasks\"\ntransport = \"queue\"\nclient_file = \"{}\"\n",
            data.display()
        ),
    );
    let out = s.path("out");
    let o = s.run_config(&cfg, &out);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("key `client_file`")
            && err.contains("client.txt:2: `137.72.95.999` is not an IPv4 address"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
    let cfg = s.write(
        "u.toml",
        "[[experiment]]\nname = \"t\"\nworkload = \"tasks\"\ntransport = \"uds\"\n",
    );
    let o = s.run_config(&cfg, &out);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("u.toml:4: key `transport`: tasks runs over queue sockets"),
        "{}",
        stderr(&o)
    );
}
