//! Roles on other hosts, tested without a second machine: two network namespaces joined
//! by a veth pair, made and removed by the test itself, the launcher `ip netns exec`.
//! Root only (and `ip`, `tc`, `nft` on the PATH); skipped with a message otherwise.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Two namespaces `a` and `b` joined by a veth pair, removed when dropped.
struct Netns {
    a: String,
    b: String,
    va: String,
    vb: String,
    ip_a: String,
    ip_b: String,
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().unwrap()
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

impl Netns {
    /// The pair, or why it cannot be made here.
    fn new(tag: &str) -> Result<Netns, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("not root".into());
        }
        for tool in ["ip", "tc", "nft"] {
            if !on_path(tool) {
                return Err(format!("no `{tool}` on the PATH"));
            }
        }
        let id = std::process::id() % 10_000;
        let n = Netns {
            a: format!("ipcb-{tag}-a-{id}"),
            b: format!("ipcb-{tag}-b-{id}"),
            va: format!("ia{tag}{id}"),
            vb: format!("ib{tag}{id}"),
            ip_a: format!("10.213.{}.1", id % 250),
            ip_b: format!("10.213.{}.2", id % 250),
        };
        // Each step an `ip` command line (names and addresses have no spaces).
        let steps = [
            format!("netns add {}", n.a),
            format!("netns add {}", n.b),
            format!("link add {} type veth peer name {}", n.va, n.vb),
            format!("link set {} netns {}", n.va, n.a),
            format!("link set {} netns {}", n.vb, n.b),
            format!("-n {} addr add {}/24 dev {}", n.a, n.ip_a, n.va),
            format!("-n {} addr add {}/24 dev {}", n.b, n.ip_b, n.vb),
            format!("-n {} link set {} up", n.a, n.va),
            format!("-n {} link set {} up", n.b, n.vb),
            format!("-n {} link set lo up", n.a),
            format!("-n {} link set lo up", n.b),
        ];
        for step in steps {
            let args: Vec<&str> = step.split_whitespace().collect();
            let o = ip(&args);
            if !o.status.success() {
                return Err(format!(
                    "ip {step}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
        }
        Ok(n)
    }

    /// The pair, or `None` with the reason printed (the test is then skipped).
    fn or_skip(tag: &str) -> Option<Netns> {
        Netns::new(tag)
            .map_err(|why| eprintln!("skipped: {why}"))
            .ok()
    }

    /// The `[hosts]` tables of the two namespaces.
    fn hosts(&self) -> String {
        format!(
            "[hosts.a]\nlauncher = [\"ip\", \"netns\", \"exec\", \"{}\"]\naddress = \"{}\"\nclock = \"shared\"\ninterface = \"{}\"\n\n\
             [hosts.b]\nlauncher = [\"ip\", \"netns\", \"exec\", \"{}\"]\naddress = \"{}\"\nclock = \"shared\"\ninterface = \"{}\"\n\n\
             [hosts.b_own]\nlauncher = [\"ip\", \"netns\", \"exec\", \"{}\"]\naddress = \"{}\"\n\n",
            self.a, self.ip_a, self.va, self.b, self.ip_b, self.vb, self.b, self.ip_b
        )
    }

    /// What is left of our shaping in namespace `ns` on `dev`: its qdisc and nft tables.
    fn shaping_left(ns: &str, dev: &str) -> String {
        let q = ip(&["netns", "exec", ns, "tc", "qdisc", "show", "dev", dev]);
        let t = ip(&["netns", "exec", ns, "nft", "list", "tables"]);
        let mut left = String::new();
        let qdisc = String::from_utf8_lossy(&q.stdout);
        if qdisc.contains("tbf") || qdisc.contains("netem") {
            left.push_str(&qdisc);
        }
        let tables = String::from_utf8_lossy(&t.stdout);
        if tables.contains("ipcbench_") {
            left.push_str(&tables);
        }
        left
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Removing a namespace removes its end of the veth pair, and the pair with it.
        let _ = ip(&["netns", "del", &self.a]);
        let _ = ip(&["netns", "del", &self.b]);
    }
}

/// The harness started with `args`, its TMPDIR `dir/tmp`.
fn start(dir: &Path, args: &[&str]) -> std::process::Child {
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits at most `bound` for `child` to end; what it wrote.
fn finish(mut child: std::process::Child, bound: Duration) -> Output {
    let deadline = Instant::now() + bound;
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the harness did not end in {bound:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn harness(dir: &Path, args: &[&str]) -> Output {
    finish(start(dir, args), Duration::from_secs(300))
}

/// Waits until `find` gives at least `n` processes that stay for 0.7 s (the floor's
/// ping and pong come and go in less).
fn stable(find: impl Fn() -> Vec<u32>, n: usize, what: &str) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = find();
        if p.len() >= n {
            std::thread::sleep(Duration::from_millis(700));
            if find() == p {
                return p;
            }
        }
        assert!(Instant::now() < deadline, "{what}: never started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rows(out: &Path) -> (Vec<String>, Vec<csv::StringRecord>) {
    let dir: PathBuf = std::fs::read_dir(out)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut r = csv::Reader::from_path(dir.join("summary.csv")).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
    (header, r.records().map(|x| x.unwrap()).collect())
}

#[test]
fn roles_across_two_namespaces_over_tcp_with_the_link_shaped_and_restored() {
    let Some(ns) = Netns::or_skip("x") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("hosts.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}[[experiment]]\nname = \"rtt\"\nworkload = \"latency\"\ntransport = [\"tcp\", \"queue\"]\nover = \"tcp\"\n\
             hosts = [[\"a\", \"a\"], [\"a\", \"b\"]]\nmsg_bytes = 64\ncount = 2000\nwarmup = 100\n\n\
             [[experiment]]\nname = \"lossy\"\nworkload = \"latency\"\ntransport = \"tcp\"\nhosts = [\"a\", \"b\"]\n\
             link = \"loss 1%\"\nmsg_bytes = 64\ncount = 2000\nwarmup = 100\n\n\
             [[experiment]]\nname = \"rate\"\nworkload = \"throughput\"\ntransport = \"tcp\"\nhosts = [\"a\", \"b\"]\n\
             link = \"rate 100mbit\"\nmsg_bytes = 65536\ncount = 400\n\n\
             [[experiment]]\nname = \"vec\"\nworkload = \"vectors\"\ntransport = \"tcp\"\nhosts = [\"a\", \"b_own\"]\n\
             count = 2000\nrate = 1000\n",
            ns.hosts()
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = harness(
        dir.path(),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let (header, rows) = rows(&out);
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    assert_eq!(rows.len(), 7, "{rows:?}");
    for r in &rows {
        assert_eq!(&r[col("status")], "ok", "{r:?}");
    }
    let how: Vec<&str> = rows.iter().map(|r| &r[col("how")]).collect();
    assert!(how.iter().any(|h| h.contains("hosts a→b")), "{how:?}");
    assert!(how.iter().any(|h| h.contains("hosts a→a")), "{how:?}");
    assert!(how.iter().any(|h| h.contains("link loss 1%")), "{how:?}");
    assert!(
        how.iter().any(|h| h.contains("link rate 100mbit")),
        "{how:?}"
    );
    // Vectors between hosts with their own clocks: half round trips, and the row says so.
    let vec = rows
        .iter()
        .find(|r| r[col("run_id")].contains("vec"))
        .unwrap();
    assert!(
        vec[col("how")].contains("one-way figures are half round trips"),
        "{vec:?}"
    );
    assert!(vec[col("p50_ns")].parse::<f64>().unwrap() > 0.0, "{vec:?}");
    assert_eq!(
        vec[col("drops_injected")],
        vec[col("drops_detected")],
        "{vec:?}"
    );
    // A row across the pair is compared with the bare TCP round trip between the same
    // hosts; a row on one host with the cache-line round trip.
    for r in &rows {
        let of = &r[col("floor_of")];
        if r[col("how")].contains("hosts a→b") {
            assert!(of.starts_with("bare TCP round trip a→b"), "{r:?}");
            assert!(r[col("floor_ns")].parse::<f64>().unwrap() > 0.0, "{r:?}");
        } else {
            assert!(!of.contains("TCP"), "{r:?}");
        }
    }
    // 100 Mbit/s is 12.5 MB/s: the shaped stream is held to it (within 10 %), far below
    // the veth's own rate.
    let rate = rows
        .iter()
        .find(|r| r[col("run_id")].contains("rate"))
        .map(|r| r[col("bytes_per_s")].parse::<f64>().unwrap())
        .unwrap();
    assert!(rate < 12.5e6 * 1.1, "{rate} B/s over a 100 Mbit/s link");
    // Every shaping removed, in both namespaces.
    assert_eq!(Netns::shaping_left(&ns.a, &ns.va), "");
    assert_eq!(Netns::shaping_left(&ns.b, &ns.vb), "");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("tmp")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_launcher_that_fails_fails_its_run_naming_the_host_and_the_matrix_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[hosts.nowhere]\nlauncher = [\"/nonexistent/launcher\", \"-x\"]\n\n\
         [hosts.refuses]\nlauncher = [\"false\"]\n\n\
         [[experiment]]\nname = \"gone\"\nworkload = \"latency\"\ntransport = \"tcp\"\nhosts = [[\"local\", \"nowhere\"], [\"local\", \"refuses\"]]\n\
         msg_bytes = 64\ncount = 100\ntimeout_s = 30\n\n\
         [[experiment]]\nname = \"after\"\nworkload = \"latency\"\ntransport = \"tcp\"\nmsg_bytes = 64\ncount = 100\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = harness(
        dir.path(),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let (header, rows) = rows(&out);
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let status: Vec<&str> = rows.iter().map(|r| &r[col("status")]).collect();
    assert_eq!(status.len(), 3, "{status:?}");
    assert!(
        status[0].starts_with("failed") && status[1].starts_with("failed"),
        "{status:?}"
    );
    assert!(err.contains("/nonexistent/launcher"), "{err}");
    assert!(status[1].contains("on refuses"), "{status:?}");
    assert_eq!(status[2], "ok", "{status:?}");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("tmp")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_delay_is_refused_where_the_kernel_has_no_netem_never_imitated() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("d.toml");
    std::fs::write(
        &cfg,
        "[hosts.b]\nlauncher = [\"ip\", \"netns\", \"exec\", \"b\"]\ninterface = \"vb\"\n\n\
         [[experiment]]\nname = \"d\"\nworkload = \"latency\"\ntransport = \"tcp\"\nhosts = [\"local\", \"b\"]\n\
         link = \"delay 1ms\"\nmsg_bytes = 64\n",
    )
    .unwrap();
    let o = harness(dir.path(), &["validate", "--config", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    if ipcbench_harness::hosts::kernel_has("sch_netem") || !on_path("tc") {
        eprintln!("skipped: this kernel has netem (or there is no tc): nothing to refuse");
        return;
    }
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("key `link`") && err.contains("sch_netem"),
        "{err}"
    );
}

#[test]
fn what_cannot_cross_hosts_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = "[hosts.b]\nlauncher = [\"ip\", \"netns\", \"exec\", \"b\"]\n\n";
    for (body, key, says) in [
        (
            "transport = \"uds\"\nhosts = [\"local\", \"b\"]\nmsg_bytes = 64\n",
            "hosts",
            "cannot cross hosts",
        ),
        (
            "transport = \"tcp\"\nhosts = [\"local\", \"c\"]\nmsg_bytes = 64\n",
            "hosts",
            "no host `c`",
        ),
        (
            "transport = \"tcp\"\nhosts = [\"local\", \"b\"]\nlink = \"loss 1%\"\nmsg_bytes = 64\n",
            "link",
            "interface",
        ),
        (
            "transport = \"tcp\"\nlink = \"jitter 3ms\"\nmsg_bytes = 64\n",
            "link",
            "rate, loss or delay",
        ),
    ] {
        let cfg = dir.path().join("c.toml");
        std::fs::write(
            &cfg,
            format!("{hosts}[[experiment]]\nname = \"x\"\nworkload = \"latency\"\n{body}"),
        )
        .unwrap();
        let o = harness(dir.path(), &["validate", "--config", cfg.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{body}: {err}");
        assert!(
            err.contains(&format!("key `{key}`")) && err.contains(says),
            "{body}: {err}"
        );
    }
}

/// Processes in namespace `ns`.
fn pids_in(ns: &str) -> Vec<u32> {
    let o = ip(&["netns", "pids", ns]);
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn a_remote_role_killed_or_the_link_cut_fails_its_run_and_nothing_is_left() {
    let Some(ns) = Netns::or_skip("f") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("long.toml");
    // 30 s of paced round trips across the pair (bounded at 45 s), then a run on this
    // host that must still end ok.
    std::fs::write(
        &cfg,
        format!(
            "{}[[experiment]]\nname = \"long\"\nworkload = \"latency\"\ntransport = \"tcp\"\nhosts = [\"a\", \"b\"]\n\
             msg_bytes = 64\ncount = 60000\nrate = 2000\nwarmup = 0\ntimeout_s = 45\n\n\
             [[experiment]]\nname = \"after\"\nworkload = \"latency\"\ntransport = \"tcp\"\nmsg_bytes = 64\ncount = 200\n",
            ns.hosts()
        ),
    )
    .unwrap();
    for fault in ["kill the remote role", "cut the link"] {
        let out = dir.path().join(format!("out-{}", fault.len()));
        let tmp = dir.path().join("tmp");
        let h = start(
            dir.path(),
            &[
                "--config",
                cfg.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        );
        // The role in b, once it runs.
        let remote = stable(|| pids_in(&ns.b), 1, fault);
        if fault == "kill the remote role" {
            for p in &remote {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*p as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        } else {
            let o = ip(&["-n", &ns.b, "link", "set", &ns.vb, "down"]);
            assert!(o.status.success());
        }
        let o = finish(h, Duration::from_secs(120));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{fault}: {err}");
        let (header, rows) = rows(&out);
        let col = |n: &str| header.iter().position(|h| h == n).unwrap();
        let status: Vec<&str> = rows.iter().map(|r| &r[col("status")]).collect();
        assert!(
            status[0].starts_with("failed") || status[0].starts_with("timeout"),
            "{fault}: {status:?}"
        );
        assert_eq!(status[1], "ok", "{fault}: {status:?}");
        if fault == "kill the remote role" {
            assert!(status[0].contains("on b"), "{fault}: {status:?}");
        }
        // Nothing left in either namespace, nor in TMPDIR.
        assert!(
            pids_in(&ns.a).is_empty(),
            "{fault}: {:?} left in a",
            pids_in(&ns.a)
        );
        assert!(
            pids_in(&ns.b).is_empty(),
            "{fault}: {:?} left in b",
            pids_in(&ns.b)
        );
        let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
        assert!(left.is_empty(), "{fault}: {left:?}");
        let _ = ip(&["-n", &ns.b, "link", "set", &ns.vb, "up"]);
    }
}

/// Processes whose environment names `tmpdir` as TMPDIR, whose command line has
/// `__role` and that run in a session other than this test's: the role processes of one
/// test's harness started out of its reach.
fn roles_of(tmpdir: &Path) -> Vec<u32> {
    let own = nix::unistd::getsid(None).unwrap().as_raw() as u32;
    let marker = format!("TMPDIR={}", tmpdir.display());
    common::processes()
        .into_iter()
        .filter(|p| {
            let cmd = std::fs::read(format!("/proc/{}/cmdline", p.pid)).unwrap_or_default();
            let env = std::fs::read(format!("/proc/{}/environ", p.pid)).unwrap_or_default();
            p.session != own
                && String::from_utf8_lossy(&cmd).contains("__role")
                && env.split(|b| *b == 0).any(|v| v == marker.as_bytes())
        })
        .map(|p| p.pid)
        .collect()
}

#[test]
fn a_role_started_out_of_reach_of_the_harness_dies_when_its_stdin_closes() {
    // `setsid --wait` starts the role in a session of its own: neither the harness's kill
    // of the launcher's group nor the role's parent-death signal reaches it, as with a
    // role started over ssh. Only its stdin closing tells it the harness is gone.
    if !on_path("setsid") {
        eprintln!("skipped: no `setsid` on the PATH");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    let cfg = dir.path().join("far.toml");
    std::fs::write(
        &cfg,
        "[hosts.far]\nlauncher = [\"setsid\", \"--wait\"]\n\n\
         [[experiment]]\nname = \"far\"\nworkload = \"latency\"\ntransport = \"tcp\"\nhosts = [\"far\", \"far\"]\n\
         msg_bytes = 64\ncount = 60000\nrate = 2000\nwarmup = 0\ntimeout_s = 60\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let mut h = start(
        dir.path(),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    // Both roles of the run.
    let roles = stable(|| roles_of(&tmp), 2, "the far roles");
    h.kill().unwrap();
    h.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !roles_of(&tmp).is_empty() {
        assert!(
            Instant::now() < deadline,
            "roles {:?} (of {roles:?}) outlived the harness",
            roles_of(&tmp)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
