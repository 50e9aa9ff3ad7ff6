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

/// Writes a line to stderr, like `eprintln!`, but a stderr that went away (closed, a
/// reader that left, a full disk) stops the line, never the harness: the runs and their
/// results go on.
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::exit::write_line(&mut std::io::stderr(), &format!($($arg)*))
    };
}

pub mod builtin;
pub mod cli;
pub mod compare;
pub mod config;
pub mod envinfo;
pub mod exit;
pub mod floor;
pub mod hosts;
pub mod leftovers;
pub mod matrix;
pub mod params;
pub mod points;
pub mod report;
pub mod role;
pub mod runner;
pub mod spec;
pub mod stats;
pub mod wire;
pub mod workload;

pub use cli::main;
pub use exit::{UsageError, EXIT_INTERRUPTED, EXIT_USAGE};
