//! How the harness ends and speaks: its exit codes, the error for bad input, and
//! writing to a stdout that may have gone away.

use std::io::Write;

/// Exit code for bad input (config, arguments, output directory).
pub const EXIT_USAGE: u8 = 2;
/// Exit code after Ctrl-C.
pub const EXIT_INTERRUPTED: u8 = 130;
/// Bad input: reported as one line (or one per problem), exit code 2, nothing written.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Writes `text` and a newline to `out`, ignoring a failure (see `note!`).
pub fn write_line(out: &mut impl std::io::Write, text: &str) {
    let _ = writeln!(out, "{text}").and_then(|_| out.flush());
}

/// Writes to stdout; a reader that went away (`| head`) ends the output, not the process.
pub(crate) fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}
