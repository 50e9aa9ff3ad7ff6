//! Hostile configs: values that pass a type check but would make a run fail, panic, hang
//! or exhaust memory. Each must be refused by `validate` and by a run alike: exit 2, one
//! line naming file, line and key, nothing written, no segment, within seconds.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        Case {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs the harness with `args`, killed after 20 s (a hang is a failure, not a wait).
    fn harness(&self, args: &[&str]) -> (Output, Duration) {
        let tmp = self.path("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let t0 = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
            .args(args)
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        while child.try_wait().unwrap().is_none() {
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("the harness did not answer within 20 s: {args:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (child.wait_with_output().unwrap(), t0.elapsed())
    }

    /// Writes `config`, then checks `validate` and a run: both exit 2 within seconds with
    /// a line that names the file, `line` and `key` and contains `says`; the run writes
    /// nothing and leaves nothing in TMPDIR or /dev/shm.
    fn refused(&self, config: &str, line: usize, key: &str, says: &str) {
        let cfg = self.path("hostile.toml");
        std::fs::write(&cfg, config).unwrap();
        let want = format!("{}:{line}: key `{key}`: ", cfg.display());
        let out = self.path("out");
        let shm_before = segments();
        for args in [
            vec!["validate", "--config", cfg.to_str().unwrap()],
            vec![
                "--config",
                cfg.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        ] {
            let (o, took) = self.harness(&args);
            let err = String::from_utf8_lossy(&o.stderr).to_string();
            assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
            let hit = err.lines().any(|l| l.contains(&want) && l.contains(says));
            assert!(hit, "{args:?}: wanted `{want}...{says}`, got:\n{err}");
            assert!(took < Duration::from_secs(10), "{args:?} took {took:?}");
        }
        assert!(!out.exists(), "a refused config wrote {}", out.display());
        let left: Vec<_> = std::fs::read_dir(self.path("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left in TMPDIR: {left:?}");
        let new: Vec<_> = segments()
            .into_iter()
            .filter(|s| !shm_before.contains(s))
            .collect();
        assert!(new.is_empty(), "segments left: {new:?}");
    }
}

/// Our segments in /dev/shm.
fn segments() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("ipcbench"))
                .collect()
        })
        .unwrap_or_default()
}

const LAT: &str = "[[experiment]]\nname = \"h\"\nworkload = \"latency\"\nmsg_bytes = 64\n";

#[test]
fn durations_past_any_bound_are_refused() {
    let c = Case::new();
    c.refused(
        &format!("{LAT}transport = \"uds\"\ntimeout_s = 1e20\n"),
        6,
        "timeout_s",
        "out of range",
    );
    c.refused(
        &format!("{LAT}transport = \"queue\"\nretry_interval_s = 1e19\n"),
        6,
        "retry_interval_s",
        "out of range",
    );
    c.refused(
        "[[experiment]]\nname = \"t\"\nworkload = \"tasks\"\ntransport = \"queue\"\nidle_timeout_s = 1e300\n",
        5,
        "idle_timeout_s",
        "out of range",
    );
}

#[test]
fn runs_that_cannot_finish_inside_their_timeout_are_refused() {
    // A rate so small that one message takes longer than the run may last.
    let c = Case::new();
    c.refused(
        &format!("{LAT}transport = \"uds\"\nrate = 1e-9\n"),
        1,
        "timeout_s",
        "more than timeout_s = 120",
    );
    c.refused(
        "[[experiment]]\nname = \"v\"\nworkload = \"vectors\"\ntransport = \"uds\"\nduration_s = 600\ntimeout_s = 10\n",
        6,
        "timeout_s",
        "more than timeout_s = 10",
    );
    // The tasks original takes at least its bound, 1 s (every wait of the shipped file is 1 s).
    c.refused(
        "[[experiment]]\nname = \"t\"\nworkload = \"tasks\"\ntransport = \"queue\"\ntimeout_s = 0.5\n",
        5,
        "timeout_s",
        "more than timeout_s = 0.5",
    );
}

#[test]
fn frames_that_do_not_fit_their_ring_are_refused_on_every_path() {
    let c = Case::new();
    // The queue over shm: the ring under it must carry the message too.
    c.refused(
        "[[experiment]]\nname = \"q\"\nworkload = \"latency\"\ntransport = \"queue\"\nover = \"shm\"\nshm_capacity = 4096\nmsg_bytes = 8192\n",
        7,
        "msg_bytes",
        "does not fit an shm ring of 4096 bytes",
    );
    c.refused(
        "[[experiment]]\nname = \"q\"\nworkload = \"throughput\"\ntransport = \"shm\"\nshm_capacity = 1024\nmsg_bytes = 1000\n",
        6,
        "msg_bytes",
        "does not fit an shm ring",
    );
    c.refused(
        "[[experiment]]\nname = \"v\"\nworkload = \"vectors\"\ntransport = \"shm\"\nshm_capacity = 4096\nsize = 4096\n",
        6,
        "size",
        "does not fit an shm ring",
    );
}

#[test]
fn data_files_that_are_not_small_regular_files_are_refused() {
    let c = Case::new();
    let tasks = |key: &str, path: &Path| {
        format!(
            "[[experiment]]\nname = \"t\"\nworkload = \"tasks\"\ntransport = \"queue\"\n{key} = \"{}\"\n",
            path.display()
        )
    };
    // A FIFO: reading it would block until a writer came.
    let fifo = c.path("data.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    c.refused(
        &tasks("client_file", &fifo),
        5,
        "client_file",
        "not a regular file",
    );
    // A device that never ends.
    c.refused(
        &tasks("server_file", Path::new("/dev/zero")),
        5,
        "server_file",
        "not a regular file",
    );
    // A directory.
    c.refused(
        &tasks("client_file", c.dir.path()),
        5,
        "client_file",
        "not a regular file",
    );
    // Larger than the bound (sparse: no disk used).
    let big = c.path("big.txt");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    c.refused(&tasks("client_file", &big), 5, "client_file", "at most");
    // Empty: nothing to run is not a run that passed.
    let empty = c.path("empty.txt");
    std::fs::write(&empty, "").unwrap();
    c.refused(
        &tasks("client_file", &empty),
        5,
        "client_file",
        "no client lines",
    );
}

#[test]
fn a_matrix_too_large_is_counted_not_expanded() {
    let c = Case::new();
    let sizes: Vec<String> = (0..700).map(|i| (64 + i).to_string()).collect();
    let counts: Vec<String> = (0..500).map(|i| (1000 + i).to_string()).collect();
    let cfg = format!(
        "[[experiment]]\nname = \"big\"\nworkload = \"latency\"\ntransport = [\"uds\", \"tcp\"]\nmsg_bytes = [{}]\ncount = [{}]\n",
        sizes.join(", "),
        counts.join(", ")
    );
    let path = c.path("hostile.toml");
    std::fs::write(&path, cfg).unwrap();
    let (o, took) = c.harness(&["validate", "--config", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("hostile.toml:1: experiment `big` expands into 700000 runs: at most 10000"),
        "{err}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn names_that_make_paths_too_long_are_refused() {
    let c = Case::new();
    let long = "n".repeat(200);
    c.refused(
        &format!("[[experiment]]\nname = \"{long}\"\nworkload = \"latency\"\ntransport = \"uds\"\nmsg_bytes = 64\n"),
        2,
        "name",
        "must be 1 to 64",
    );
    // Within the name's bound, but swept values make the run id too long.
    let name = "n".repeat(60);
    let files: Vec<String> = (0..2)
        .map(|i| format!("\"{}/{i}{}\"", c.dir.path().display(), "x".repeat(120)))
        .collect();
    for i in 0..2 {
        std::fs::write(
            c.dir.path().join(format!("{i}{}", "x".repeat(120))),
            "10.0.0.1:1\n",
        )
        .unwrap();
    }
    c.refused(
        &format!(
            "[[experiment]]\nname = \"{name}\"\nworkload = \"tasks\"\ntransport = \"queue\"\nclient_file = [{}]\n",
            files.join(", ")
        ),
        2,
        "name",
        "run id",
    );
}

#[test]
fn combinations_a_workload_cannot_run_are_refused() {
    let c = Case::new();
    c.refused(
        "[[experiment]]\nname = \"b\"\nworkload = \"buffer\"\ntransport = \"shm\"\nkind = \"transitions\"\ndtype = \"u8\"\n",
        5,
        "kind",
        "transitions needs dtype = \"u32\"",
    );
    // Chunks that would take more memory than the machine has.
    c.refused(
        "[[experiment]]\nname = \"b\"\nworkload = \"buffer\"\ntransport = \"shm\"\nexemplars = 16777216\nelems = 16777216\ndtype = \"f64\"\n",
        5,
        "exemplars",
        "at most 268435456",
    );
    c.refused(
        &format!("{LAT}transport = \"tcp\"\nzero_copy = true\n"),
        6,
        "zero_copy",
        "needs a transport that lends its memory: shm or iceoryx2",
    );
    c.refused(
        &format!("{LAT}transport = \"shm\"\nbare = true\n"),
        6,
        "bare",
        "the bare baseline exists for pipe, uds, tcp only",
    );
    c.refused(
        "[[experiment]]\nname = \"q\"\nworkload = \"latency\"\ntransport = \"queue\"\nover = \"pipe\"\nmsg_bytes = 64\n",
        5,
        "over",
        "unknown over `pipe` (known: uds, tcp, shm)",
    );
}

#[test]
fn posix_queues_past_the_system_limits_are_refused_naming_the_limit() {
    if ipcbench_transport::mq::msgsize_limit() >= 16 << 20 {
        eprintln!("skipped: this process may make queues of any size (CAP_SYS_RESOURCE)");
        return;
    }
    let c = Case::new();
    c.refused(
        "[[experiment]]\nname = \"m\"\nworkload = \"latency\"\ntransport = \"mq\"\nmsg_bytes = 16777216\nmax_frame = 16777216\n",
        5,
        "msg_bytes",
        "msgsize_max",
    );
    c.refused(
        "[[experiment]]\nname = \"m\"\nworkload = \"throughput\"\ntransport = \"mq\"\nmsg_bytes = 64\nmq_depth = 65536\n",
        6,
        "mq_depth",
        "msg_max",
    );
}

#[test]
fn peers_asked_for_what_they_cannot_do_are_refused() {
    let c = Case::new();
    c.refused(
        "[[experiment]]\nname = \"z\"\nworkload = \"latency\"\ntransport = \"zmq\"\nover = \"shm\"\nmsg_bytes = 64\n",
        5,
        "over",
        "zmq runs over uds (ipc://) or tcp",
    );
    c.refused(
        "[[experiment]]\nname = \"i\"\nworkload = \"latency\"\ntransport = \"iceoryx2\"\nwait = \"yield\"\nmsg_bytes = 64\n",
        5,
        "wait",
        "spin (polling receive) or block (its event service)",
    );
    c.refused(
        "[[experiment]]\nname = \"z\"\nworkload = \"latency\"\ntransport = \"zmq\"\nzero_copy = true\nmsg_bytes = 64\n",
        5,
        "zero_copy",
        "lends its memory: shm or iceoryx2",
    );
    c.refused(
        "[[experiment]]\nname = \"m\"\nworkload = \"latency\"\ntransport = \"mq\"\nbare = true\nmsg_bytes = 64\n",
        5,
        "bare",
        "bare baseline",
    );
    c.refused(
        "[[experiment]]\nname = \"t\"\nworkload = \"tasks\"\ntransport = \"zmq\"\n",
        1,
        "zmq_pattern",
        "the original's PUSH/PULL sockets",
    );
    c.refused(
        "[[experiment]]\nname = \"t\"\nworkload = \"tasks\"\ntransport = \"zmq\"\nzmq_pattern = \"pushpull\"\nkill_worker_after = 3\n",
        6,
        "kill_worker_after",
        "never hands a dead worker's batch to another",
    );
    c.refused(
        "[[experiment]]\nname = \"t\"\nworkload = \"tasks\"\ntransport = \"iceoryx2\"\n",
        4,
        "transport",
        "or over real ZeroMQ",
    );
}
