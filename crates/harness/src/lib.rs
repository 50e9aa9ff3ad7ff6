//! ipcbench-harness: everything behind the `harness` binary — config, run matrix,
//! spawning and pinning roles, collecting their measurements, CSV and `.hgrm` output,
//! `calibrate`, `validate` and `list`. It is the only part of ipcbench that reads TOML,
//! spawns processes or writes result files.
//!
//! The modules, by concern (docs/architecture.md draws them):
//! - [`cli`]: the command line; [`matrix`]: running a matrix; [`report`]: its files;
//!   [`envinfo`]: the machine for `env.json`.
//! - [`config`] reads a config into [`spec::RunSpec`]s, checking every key against its
//!   [`params::ParamDef`]; [`workload`] lists the workloads (one module each).
//! - [`runner`] runs one plan's role processes; [`wire`] is what they say; [`role`] is
//!   the role process; [`floor`] measures the hardware floor.
//!
//! ```no_run
//! // The `harness` binary is a thin main over this crate:
//! fn main() -> std::process::ExitCode {
//!     ipcbench_harness::main()
//! }
//! ```
#![forbid(unsafe_code)]

use std::time::Duration;

pub mod builtin;
pub mod cli;
pub mod config;
pub mod envinfo;
pub mod floor;
pub mod matrix;
pub mod params;
pub mod report;
pub mod role;
pub mod runner;
pub mod spec;
pub mod wire;
pub mod workload;

pub use cli::main;

/// Exit code for bad input (config, arguments, output directory).
pub const EXIT_USAGE: u8 = 2;
/// Exit code after Ctrl-C.
pub const EXIT_INTERRUPTED: u8 = 130;
/// Bound on spawning, connecting and reaching the start barrier.
pub(crate) const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Bad input: reported as one line (or one per problem), exit code 2, nothing written.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

/// Writes to stdout; a reader that went away (`| head`) ends the output, not the process.
pub(crate) fn print_stdout(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}
