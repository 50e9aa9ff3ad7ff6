//! The hidden role mode (`harness __role`): one process per role, pinned to its core. It
//! reads its job from stdin and hands it to the code its job names (a workload from the
//! registry, or the floor), which sets up, reports `ready` and `connected`, waits for
//! `go`, runs and returns its measurement; this reports it (`done`) and exits. It dies
//! with its parent (`PR_SET_PDEATHSIG`), so no role outlives the harness.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{anyhow, Context};

use crate::wire::{self, RoleJob, RoleReport};

/// Runs the role mode; the process's exit code.
pub fn main() -> ExitCode {
    // If the harness dies, so do we.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    report_panics();
    wire::ROLE_PROCESS.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut stdin = std::io::stdin().lock();
    let result = (|| -> anyhow::Result<RoleReport> {
        let mut line = String::new();
        stdin.read_line(&mut line).context("reading the job")?;
        let job: RoleJob = serde_json::from_str(&line).context("parsing the job")?;
        wire::take_up(&job)?;
        run(&job, &mut stdin)
    })();
    ExitCode::from(wire::finish(result))
}

/// A panic in a role (or a worker it forks) is reported to the harness as the role's
/// failure, with its message and where it happened, before the process dies; the
/// default hook still writes it (and a backtrace when asked) to the role's log.
fn report_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let _ = wire::emit(&wire::RoleEvent::Failed {
            message: format!("panicked{place}: {what}"),
        });
        default(info);
    }));
}

/// Fault injection for the fault suite (tests/faults.rs): a role whose name this variable
/// holds panics as it starts, as a bug in a workload would.
pub const FAULT_PANIC_ENV: &str = "IPCBENCH_FAULT_PANIC";

/// Runs `job` with the code it names.
fn run(job: &RoleJob, stdin: &mut dyn BufRead) -> anyhow::Result<RoleReport> {
    if std::env::var_os(FAULT_PANIC_ENV).is_some_and(|r| r == job.role.as_str()) {
        panic!("fault injected into role {} ({FAULT_PANIC_ENV})", job.role);
    }
    if job.workload == crate::floor::FLOOR {
        return crate::floor::role(job, stdin);
    }
    crate::workload::find(&job.workload)
        .ok_or_else(|| anyhow!("no workload `{}` in this build", job.workload))?
        .role(job, stdin)
}
