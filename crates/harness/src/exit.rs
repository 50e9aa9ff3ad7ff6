//! How the harness ends and speaks: its exit codes, the error for bad input, and
//! writing to a stdout that may have gone away.

/// Exit code for bad input (config, arguments, output directory).
pub const EXIT_USAGE: u8 = 2;
/// Exit code after Ctrl-C.
pub const EXIT_INTERRUPTED: u8 = 130;
/// Bad input: reported as one line (or one per problem), exit code 2, nothing written.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Writes to stdout; a reader that went away (`| head`) ends the output, not the process.
pub(crate) fn print_stdout(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}
