//! Roles on other hosts, started through a launcher the user already runs (`ssh`, `ip
//! netns exec`, `srun`, `kubectl exec`): no agent of ours. A role is the same child
//! process as on this host, its job on stdin and its events on stdout; the launcher
//! carries both.
//!
//! ```toml
//! [hosts.nsb]
//! launcher = ["ip", "netns", "exec", "nsb"]   # the command prefix that starts a process there
//! harness = "/usr/local/bin/harness"          # this binary's path there (default: the same as here)
//! address = "10.77.0.2"                       # what its roles' network endpoints bind to
//! clock = "shared"                            # "shared" with this host's, or "own" (default)
//! interface = "vethb"                         # the link `link` shapes, on that host
//!
//! [[experiment]]
//! hosts = ["local", "nsb"]                    # a host per role, as `cores` (a list of lists sweeps)
//! ```
//!
//! `local` is this host and needs no table. Endpoints bind to the address of the host of
//! the role that listens, only when a config names one; loopback stays the default.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The name of this host.
pub const LOCAL: &str = "local";

/// Whether a host's clock is this host's (one-way times are then meaningful across it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Clock {
    /// The same clock as this host's (namespaces of one machine, PTP-synchronised hosts
    /// the user vouches for).
    Shared,
    /// Its own clock: only round trips are reported across it.
    #[default]
    Own,
}

/// A `[hosts.NAME]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// The command prefix that starts a process there.
    pub launcher: Vec<String>,
    /// The harness binary there (default: this binary's path).
    #[serde(default)]
    pub harness: Option<String>,
    /// What the network endpoints of roles there bind to.
    #[serde(default)]
    pub address: Option<IpAddr>,
    /// Whether its clock is this host's.
    #[serde(default)]
    pub clock: Clock,
    /// The network interface `link` shapes, there.
    #[serde(default)]
    pub interface: Option<String>,
}

/// The hosts a config names, by name.
pub type Hosts = BTreeMap<String, Host>;

/// A host table's problems (empty: fine).
pub fn check(name: &str, host: &Host) -> Vec<String> {
    let mut out = Vec::new();
    if name == LOCAL {
        out.push(format!("`{LOCAL}` is this host and takes no table"));
    }
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        out.push(format!(
            "host name `{name}`: letters, digits, `-`, `_` and `.` only"
        ));
    }
    if host.launcher.is_empty() || host.launcher[0].is_empty() {
        out.push("`launcher` is the command that starts a process there: a non-empty list".into());
    }
    if host
        .launcher
        .iter()
        .chain(host.harness.iter())
        .chain(host.interface.iter())
        .any(|a| a.chars().any(char::is_control) || a.len() > 4096)
    {
        out.push("a launcher word, harness path or interface with control characters, or over 4096 bytes".into());
    }
    if let Some(i) = &host.interface {
        if i.is_empty() || i.len() > 15 || i.contains('/') || i.chars().any(char::is_whitespace) {
            out.push(format!("interface `{i}` is not a network interface name"));
        }
    }
    out
}

/// One role's host as the runner needs it: how to start a process there.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// The host's name.
    pub name: String,
    /// The launcher and the harness path: the command before `__role`.
    pub command: Vec<String>,
}

impl Placement {
    /// The placement of a role on `host` named `name`; `exe` is this binary.
    pub fn new(name: &str, host: &Host, exe: &std::path::Path) -> Placement {
        let mut command = host.launcher.clone();
        command.push(
            host.harness
                .clone()
                .unwrap_or_else(|| exe.to_string_lossy().into_owned()),
        );
        Placement {
            name: name.to_string(),
            command,
        }
    }
}

/// How an experiment shapes the link between its hosts (the `link` key), applied on the
/// interface of every host of a run that names one, for the run's length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shaping {
    /// As it is.
    None,
    /// A token-bucket rate, bits per second (`tc qdisc ... tbf`).
    Rate(u64),
    /// Drops this percentage of packets at random (an nftables `numgen random` rule).
    Loss(f64),
    /// Delays every packet this many milliseconds (`tc qdisc ... netem`, where the kernel
    /// has it).
    Delay(f64),
}

impl Shaping {
    /// Reads `""`, `"rate 100mbit"`, `"loss 1%"` or `"delay 1ms"`.
    pub fn parse(text: &str) -> Result<Shaping, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Shaping::None);
        }
        let (what, value) = text
            .split_once(char::is_whitespace)
            .ok_or("expected `rate <n>mbit`, `loss <p>%` or `delay <n>ms`")?;
        let value = value.trim();
        let number = |v: &str, unit: &str| -> Result<f64, String> {
            v.strip_suffix(unit)
                .and_then(|n| n.trim().parse::<f64>().ok())
                .filter(|n| n.is_finite() && *n > 0.0)
                .ok_or_else(|| format!("`{v}`: expected a positive number followed by `{unit}`"))
        };
        match what {
            "rate" => {
                for (unit, scale) in [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)] {
                    if value.ends_with(unit) {
                        let bits = number(value, unit)? * scale;
                        if !(8_000.0..=100e9).contains(&bits) {
                            return Err("a rate from 8kbit to 100gbit".into());
                        }
                        return Ok(Shaping::Rate(bits as u64));
                    }
                }
                Err(format!("`{value}`: a rate in kbit, mbit or gbit"))
            }
            "loss" => {
                let p = number(value, "%")?;
                if p >= 100.0 {
                    return Err("a loss under 100%".into());
                }
                Ok(Shaping::Loss(p))
            }
            "delay" => {
                let ms = number(value, "ms")?;
                if ms > 10_000.0 {
                    return Err("a delay of at most 10000ms".into());
                }
                Ok(Shaping::Delay(ms))
            }
            other => Err(format!("`{other}`: rate, loss or delay")),
        }
    }
}

/// What this machine lacks to apply `shaping`, if anything: a shaping the kernel
/// cannot do is refused, never imitated in user space.
pub fn missing_tool(shaping: Shaping) -> Option<String> {
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    };
    match shaping {
        Shaping::None => None,
        Shaping::Rate(_) if !on_path("tc") => {
            Some("rate shaping needs `tc` (iproute2) on this machine".into())
        }
        Shaping::Loss(_) if !on_path("nft") => {
            Some("loss needs `nft` (the nftables package) on this machine".into())
        }
        Shaping::Delay(_) if !on_path("tc") => {
            Some("delay needs `tc` (iproute2) on this machine".into())
        }
        Shaping::Delay(_) if !kernel_has("sch_netem") => Some(
            "delay needs the kernel's netem qdisc (sch_netem), which this kernel has not: not faked in user space"
                .into(),
        ),
        _ => None,
    }
}

/// Whether the running kernel has module `name`, built in or loadable.
pub fn kernel_has(name: &str) -> bool {
    if std::path::Path::new("/sys/module").join(name).exists() {
        return true;
    }
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let base = std::path::Path::new("/lib/modules").join(release.trim());
    let listed = |file: &str| {
        std::fs::read_to_string(base.join(file))
            .is_ok_and(|t| t.lines().any(|l| l.contains(&format!("/{name}.ko"))))
    };
    listed("modules.dep") || listed("modules.builtin")
}

/// Runs `command` (a launcher's words and a tool's), with `input` on its stdin, waiting
/// at most 10 s; its stderr as the error.
fn run_tool(command: &[String], input: &str) -> Result<(), String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let what = command.join(" ");
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("`{what}`: {e}"))?;
    if let Some(mut s) = child.stdin.take() {
        let _ = s.write_all(input.as_bytes());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = (&mut e).take(4096).read_to_string(&mut err);
                }
                return Err(format!("`{what}` failed ({status}): {}", err.trim()));
            }
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{what}` did not end within 10 s"));
            }
        }
    }
}

/// A link shaped for one run: removed again when dropped (also when the run failed).
#[derive(Debug)]
pub struct Shaped {
    /// Per host: the launcher's words, the interface, and the shaping applied there.
    applied: Vec<(Vec<String>, String, Shaping)>,
    /// The nftables table of this harness (loss).
    table: String,
}

impl Shaped {
    /// Shapes the interface of every host in `names` whose table names one, as `link`
    /// says.
    pub fn apply(names: &[String], table: &Hosts, link: &str) -> Result<Shaped, String> {
        let mut shaped = Shaped {
            applied: Vec::new(),
            table: format!("ipcbench_{}", std::process::id()),
        };
        let shaping = Shaping::parse(link)?;
        if shaping == Shaping::None {
            return Ok(shaped);
        }
        let mut seen = std::collections::BTreeSet::new();
        for name in names {
            let Some(host) = table.get(name) else {
                continue;
            };
            let Some(interface) = &host.interface else {
                continue;
            };
            if !seen.insert(name.clone()) {
                continue;
            }
            // Recorded first: a failure part-way removes what was applied.
            shaped
                .applied
                .push((host.launcher.clone(), interface.clone(), shaping));
            shaped
                .add(&host.launcher, interface, shaping)
                .map_err(|e| format!("shaping `{link}` on host {name}: {e}"))?;
        }
        Ok(shaped)
    }

    fn tool(launcher: &[String], words: &[&str]) -> Vec<String> {
        launcher
            .iter()
            .cloned()
            .chain(words.iter().map(|w| w.to_string()))
            .collect()
    }

    /// `tc qdisc replace dev INTERFACE root QDISC...` there.
    fn qdisc(launcher: &[String], interface: &str, qdisc: &[&str]) -> Result<(), String> {
        let mut words = vec!["tc", "qdisc", "replace", "dev", interface, "root"];
        words.extend_from_slice(qdisc);
        run_tool(&Self::tool(launcher, &words), "")
    }

    fn add(&self, launcher: &[String], interface: &str, shaping: Shaping) -> Result<(), String> {
        match shaping {
            Shaping::None => Ok(()),
            Shaping::Rate(bits) => {
                // A bucket of 10 ms at the rate, at least 16 KiB (a few full frames).
                let burst = (bits / 8 / 100).max(16 << 10);
                let (rate, burst) = (format!("{bits}bit"), format!("{burst}b"));
                Self::qdisc(
                    launcher,
                    interface,
                    &["tbf", "rate", &rate, "burst", &burst, "latency", "100ms"],
                )
            }
            Shaping::Delay(ms) => {
                Self::qdisc(launcher, interface, &["netem", "delay", &format!("{ms}ms")])
            }
            Shaping::Loss(p) => {
                // Per 10 000: 1% drops when a random number below 10 000 is under 100.
                let under = (p * 100.0).round().max(1.0) as u64;
                let rules = format!(
                    "table inet {t} {{\n  chain loss {{\n    type filter hook output priority 0; policy accept;\n    oifname \"{interface}\" numgen random mod 10000 < {under} drop\n  }}\n}}\n",
                    t = self.table
                );
                run_tool(&Self::tool(launcher, &["nft", "-f", "-"]), &rules)
            }
        }
    }
}

impl Drop for Shaped {
    fn drop(&mut self) {
        for (launcher, interface, shaping) in self.applied.drain(..) {
            let words: Vec<&str> = match shaping {
                Shaping::None => continue,
                Shaping::Rate(_) | Shaping::Delay(_) => {
                    vec!["tc", "qdisc", "del", "dev", &interface, "root"]
                }
                Shaping::Loss(_) => vec!["nft", "delete", "table", "inet", &self.table],
            };
            if let Err(e) = run_tool(&Self::tool(&launcher, &words), "") {
                note!("harness: removing the link's shaping: {e}");
            }
        }
    }
}

/// The row's account of where the roles ran: `""` on this host alone, else each
/// role's host (`names`), the link's shaping, and which clock the figures use.
pub fn describe(names: &[String], table: &Hosts, link: &str) -> String {
    if names.iter().all(|h| h == LOCAL) && link.trim().is_empty() {
        return String::new();
    }
    let crosses = names.iter().any(|h| h != &names[0]);
    let mut out = format!("hosts {}", names.join("→"));
    if !link.trim().is_empty() {
        out.push_str(&format!(", link {}", link.trim()));
    }
    out.push_str(if !crosses {
        ", one host's clock"
    } else if shared_clock(names, table) {
        ", clocks shared (as configured)"
    } else {
        ", own clocks: one-way figures are half round trips"
    });
    out
}

/// Whether every host in `names` keeps this host's clock.
pub fn shared_clock(names: &[String], table: &Hosts) -> bool {
    names
        .iter()
        .all(|h| h == LOCAL || table.get(h).is_some_and(|t| t.clock == Clock::Shared))
}
