//! How the harness ends and speaks: its exit codes, the error for bad input, and
//! writing to a stdout that may have gone away.

use std::io::Write;

/// Exit code for bad input (config, arguments, output directory).
pub const EXIT_USAGE: u8 = 2;
/// Exit code after Ctrl-C.
pub const EXIT_INTERRUPTED: u8 = 130;
/// Exit code when a results file could not be written (a full disk, a lost mount):
/// sysexits' EX_IOERR. What was written before stays, whole.
pub const EXIT_WRITE: u8 = 74;

/// A results file that could not be written whole; the file is left as it was before
/// the write (a file that would be left empty or partial is removed).
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}", path.display())]
pub struct WriteError {
    /// The file.
    pub path: std::path::PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Writes `bytes` as the whole new file `path`: on failure nothing is left of it.
pub fn write_whole(path: &std::path::Path, bytes: &[u8]) -> Result<(), WriteError> {
    let result = std::fs::File::create(path).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_data()
    });
    result.map_err(|source| {
        let _ = std::fs::remove_file(path);
        WriteError {
            path: path.to_path_buf(),
            source,
        }
    })
}

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
