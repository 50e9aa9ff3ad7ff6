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

/// Runs `job` with the code it names.
fn run(job: &RoleJob, stdin: &mut dyn BufRead) -> anyhow::Result<RoleReport> {
    if job.workload == crate::floor::FLOOR {
        return crate::floor::role(job, stdin);
    }
    crate::workload::find(&job.workload)
        .ok_or_else(|| anyhow!("no workload `{}` in this build", job.workload))?
        .role(job, stdin)
}
