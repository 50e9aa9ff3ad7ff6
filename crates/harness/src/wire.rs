//! What the parent and a role process say to each other: JSON lines. The parent writes
//! the [`RoleJob`] as the first line of the role's stdin and later `go`; the role writes
//! [`RoleEvent`]s on its stdout. Below the messages, the role's side of the steps
//! ([`emit`], [`connected`], [`wait_for_go`], [`finish`]), which every workload's roles
//! use.

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use ipcbench_transport::{Endpoint, Link};
use ipcbench_workloads::Measurement;
use serde::{Deserialize, Serialize};

/// The line that releases every role at once (the start barrier).
pub const GO: &str = "go";

/// What one role process is to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleJob {
    /// The run it belongs to.
    pub run_id: String,
    /// Role name (`client`, `server`, ...).
    pub role: String,
    /// Core to pin to.
    pub core: Option<usize>,
    /// The harness's pid: the role exits if its parent is gone (0 for a role started
    /// through a launcher, whose parent is the launcher).
    pub parent_pid: i32,
    /// Bound on connecting and on waiting for `go`.
    pub setup_timeout_ms: u64,
    /// Whose code runs the role: a workload's name, or [`crate::floor::FLOOR`].
    pub workload: String,
    /// The work, as that workload wrote it.
    pub task: serde_json::Value,
    /// What the first (listening) role resolved, for the others: its endpoint, then the
    /// further ones it listens on, in order. Empty for the first role.
    #[serde(default)]
    pub resolved: Vec<Endpoint>,
}

impl RoleJob {
    /// The task as its workload's type.
    pub fn task<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_value(self.task.clone()).with_context(|| {
            format!(
                "decoding the task of {} for role {}",
                self.workload, self.role
            )
        })
    }

    /// The endpoint a connecting role uses: what the first role resolved, or `own`.
    pub fn peer_endpoint<'a>(&'a self, own: &'a Endpoint) -> &'a Endpoint {
        self.resolved.first().unwrap_or(own)
    }

    /// Setup's bound.
    pub fn setup_timeout(&self) -> Duration {
        Duration::from_millis(self.setup_timeout_ms)
    }
}

/// What a role reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RoleEvent {
    /// Set up and pinned; a listening role gives the endpoint the others must use.
    Ready {
        /// Resolved endpoint (listening roles only).
        endpoint: Option<Endpoint>,
        /// Further resolved endpoints, for a role that listens for several peers (the
        /// `buffer` acquirer in copy mode: one per worker, in worker order).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        more: Vec<Endpoint>,
    },
    /// Connected to its peer(s); waiting for `go`.
    Connected,
    /// Finished, with what it measured.
    Done(RoleReport),
    /// Failed, with why.
    Failed {
        /// One line on what went wrong.
        message: String,
    },
}

/// A [`Measurement`] in transit.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoleReport {
    /// Messages measured.
    pub count: u64,
    /// Payload bytes measured.
    pub bytes: u64,
    /// Measured wall time, ns.
    pub duration_ns: u64,
    /// HdrHistogram V2 encoding, hex.
    pub histogram: Option<String>,
    /// Workload-specific figures.
    pub metrics: Vec<(String, f64)>,
    /// The CPU this role's process used from the start barrier to its end, as a share
    /// of that wall time (100: one core busy throughout, as a spinning wait keeps it).
    #[serde(default)]
    pub cpu_pct: Option<f64>,
}

impl RoleReport {
    /// Packs a measurement.
    pub fn from_measurement(m: &Measurement) -> anyhow::Result<RoleReport> {
        let histogram = match &m.histogram {
            Some(h) => {
                let mut bytes = Vec::new();
                V2Serializer::new()
                    .serialize(h, &mut bytes)
                    .map_err(|e| anyhow!("encoding histogram: {e:?}"))?;
                Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
            }
            None => None,
        };
        Ok(RoleReport {
            count: m.count,
            bytes: m.bytes,
            duration_ns: m.duration.as_nanos() as u64,
            histogram,
            metrics: m.metrics.clone(),
            cpu_pct: None,
        })
    }

    /// Unpacks the histogram, if there is one.
    pub fn histogram(&self) -> anyhow::Result<Option<Histogram<u64>>> {
        let Some(hex) = &self.histogram else {
            return Ok(None);
        };
        if hex.len() % 2 != 0 {
            return Err(anyhow!("histogram encoding has odd length"));
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .context("histogram encoding is not hex")?;
        let h = Deserializer::new()
            .deserialize(&mut &bytes[..])
            .map_err(|e| anyhow!("decoding histogram: {e:?}"))?;
        Ok(Some(h))
    }

    /// A named metric.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }
}

// ---- the role's side ----------------------------------------------------------------

/// Writes one event line to the harness (or, for a forked worker, to /dev/null).
pub fn emit(event: &RoleEvent) -> anyhow::Result<()> {
    let line = serde_json::to_string(event)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|_| out.flush())
        .context("writing to the harness")
}

/// Reports `ready` for a role that listens on nothing (it connects, or needs no transport).
pub fn emit_ready() -> anyhow::Result<()> {
    emit(&RoleEvent::Ready {
        endpoint: None,
        more: vec![],
    })
}

/// When this process passed the start barrier: the wall clock and its CPU time then.
static WINDOW: std::sync::OnceLock<(std::time::Instant, Duration)> = std::sync::OnceLock::new();

/// This process's CPU time (every thread's), or `None` where the clock cannot be read.
fn process_cpu() -> Option<Duration> {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .ok()
        .map(Duration::from)
}

/// Blocks until the harness says `go` (the start barrier); the role's CPU window
/// starts here.
pub fn wait_for_go(stdin: &mut dyn BufRead) -> anyhow::Result<()> {
    let mut line = String::new();
    stdin.read_line(&mut line).context("waiting for go")?;
    if line.trim() != GO {
        bail!("expected `{GO}` from the harness, got {:?}", line.trim());
    }
    if let Some(cpu) = process_cpu() {
        let _ = WINDOW.set((std::time::Instant::now(), cpu));
    }
    watch_stdin();
    Ok(())
}

/// Set by the role mode's entry ([`crate::role::main`]).
pub static ROLE_PROCESS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// After `go` the harness writes nothing more to a role; it closes the role's stdin only
/// when it is done with it (or gone: killed, or its launcher's session cut). Then the
/// role and its helpers end at once, on any host: a role started through `ssh` or
/// `kubectl exec` has no other way to learn that the harness is gone.
fn watch_stdin() {
    use std::os::fd::AsFd;
    // Only in a role process (its stdin the harness's pipe, its group its own), never in
    // a test that runs role code in its own process.
    if !ROLE_PROCESS.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(|| {
            let stdin = std::io::stdin();
            let mut buf = [0u8; 64];
            loop {
                match nix::unistd::read(stdin.as_fd(), &mut buf) {
                    Ok(0) => break,
                    Err(nix::errno::Errno::EINTR) | Ok(_) => {}
                    Err(_) => break,
                }
            }
            // The role leads its process group: its helpers (the tasks workers) go too.
            let _ =
                nix::sys::signal::killpg(nix::unistd::getpgrp(), nix::sys::signal::Signal::SIGKILL);
        });
}

/// The CPU share of this process since the start barrier, percent.
fn cpu_since_go() -> Option<f64> {
    let (t0, c0) = WINDOW.get()?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = process_cpu()?.saturating_sub(*c0).as_secs_f64();
    (wall > 0.0).then(|| cpu / wall * 100.0)
}

/// Checks that the parent is the one the job names and pins this process: the first
/// step of every role.
pub fn take_up(job: &RoleJob) -> anyhow::Result<()> {
    if job.parent_pid != 0 && nix::unistd::getppid().as_raw() != job.parent_pid {
        bail!("the harness (pid {}) is gone", job.parent_pid);
    }
    if let Some(core) = job.core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
            bail!("cannot pin role {} to core {core}", job.role);
        }
    }
    Ok(())
}

/// Reports how a role ended; the exit code (0 done, 1 failed, 3 could not report).
pub fn finish(result: anyhow::Result<RoleReport>) -> u8 {
    match result {
        Ok(mut report) => match emit(&RoleEvent::Done({
            report.cpu_pct = cpu_since_go();
            report
        })) {
            Ok(()) => 0,
            Err(_) => 3,
        },
        Err(e) => {
            let message = format!("{e:#}");
            eprintln!("role failed: {message}");
            let _ = emit(&RoleEvent::Failed { message });
            1
        }
    }
}

/// Listens on `endpoint` (reporting what it resolved) or connects to it, and reports
/// `connected`.
pub fn connect<T: Link>(
    endpoint: &Endpoint,
    listen: bool,
    setup: Duration,
) -> anyhow::Result<(T::Tx, T::Rx)> {
    let halves = if listen {
        let listener = T::listen(endpoint)?;
        emit(&RoleEvent::Ready {
            endpoint: Some(T::resolved(&listener)),
            more: vec![],
        })?;
        T::accept(listener, setup)?
    } else {
        emit_ready()?;
        T::connect(endpoint, setup)?
    };
    emit(&RoleEvent::Connected)?;
    Ok(halves)
}

/// A two-role workload's role: the first role listens on `endpoint`, the other connects
/// to what it resolved; both wait for the start barrier, then run `work` on the halves.
pub fn connected<T: Link>(
    job: &RoleJob,
    endpoint: &Endpoint,
    listen: bool,
    stdin: &mut dyn BufRead,
    work: impl FnOnce(&mut T::Tx, &mut T::Rx) -> anyhow::Result<Measurement>,
) -> anyhow::Result<RoleReport> {
    let endpoint = if listen {
        endpoint
    } else {
        job.peer_endpoint(endpoint)
    };
    let (mut tx, mut rx) = connect::<T>(endpoint, listen, job.setup_timeout())?;
    wait_for_go(stdin)?;
    RoleReport::from_measurement(&work(&mut tx, &mut rx)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_survives_the_trip() {
        let mut h = ipcbench_workloads::new_histogram();
        for v in [100u64, 2_000, 35_000, 35_000, 9_000_000] {
            h.record(v).unwrap();
        }
        let m = Measurement {
            histogram: Some(h.clone()),
            count: 5,
            ..Default::default()
        };
        let report = RoleReport::from_measurement(&m).unwrap();
        let json = serde_json::to_string(&RoleEvent::Done(report)).unwrap();
        let RoleEvent::Done(back) = serde_json::from_str(&json).unwrap() else {
            panic!("wrong event")
        };
        let h2 = back.histogram().unwrap().unwrap();
        assert_eq!(h2.len(), 5);
        assert_eq!(h2.value_at_quantile(0.5), h.value_at_quantile(0.5));
        assert_eq!(h2.max(), h.max());
    }

    #[test]
    fn garbage_histogram_is_an_error_not_a_panic() {
        let r = RoleReport {
            histogram: Some("zz1".into()),
            ..Default::default()
        };
        assert!(r.histogram().is_err());
        let r = RoleReport {
            histogram: Some("00ff".into()),
            ..Default::default()
        };
        assert!(r.histogram().is_err());
    }
}
