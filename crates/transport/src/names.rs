//! Names of what a run leaves in shared places (segments under /dev/shm, run directories
//! under the temporary directory): `ipcbench-<kind>-<pid>-<random>`. The random part means
//! nobody can create a name before a run does (segments are created `O_EXCL`, so a name
//! taken in advance would block the run); the pid says whose it is, so a later harness can
//! remove what a killed one left ([`owner`]).

use std::io::Read;
use std::path::PathBuf;

/// What every name starts with.
pub const PREFIX: &str = "ipcbench-";

/// A fresh name for a `kind` of thing (`shm`, `pool`, `canvas`, `floor`, `run`) of this
/// process.
pub fn unique(kind: &str) -> String {
    format!("{PREFIX}{kind}-{}-{:016x}", std::process::id(), random())
}

/// The prefix of this process's names of `kind`, for a caller that adds its own random
/// suffix (a temporary directory).
pub fn prefix(kind: &str) -> String {
    format!("{PREFIX}{kind}-{}-", std::process::id())
}

/// The kind and the creating pid of a name [`unique`] or [`prefix`] made; `None` for
/// another name.
pub fn owner(name: &str) -> Option<(&str, u32)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (kind, rest) = rest.split_once('-')?;
    let (pid, _) = rest.split_once('-')?;
    if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_lowercase()) {
        return None;
    }
    Some((kind, pid.parse().ok()?))
}

/// Where segments go: /dev/shm, or the temporary directory on a machine without it.
pub fn shm_dir() -> PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// 64 bits from the kernel's random source; the clock and a counter where it cannot be
/// read (the name is still unique, only no longer unguessable).
fn random() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return u64::from_le_bytes(b);
    }
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos
        ^ COUNTER
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .rotate_left(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_whose_they_are_and_are_not_guessable() {
        let a = unique("shm");
        let b = unique("shm");
        assert_ne!(a, b);
        assert_eq!(owner(&a), Some(("shm", std::process::id())));
        assert_eq!(
            owner(&format!("{}abc123", prefix("run"))),
            Some(("run", std::process::id()))
        );
        assert_eq!(owner("ipcbench-ack"), None);
        assert_eq!(owner("ipcbench-shm-x-1"), None);
        assert_eq!(owner("other-shm-1-2"), None);
        // 16 hex digits of randomness after the pid.
        let tail = a.rsplit('-').next().unwrap_or("");
        assert_eq!(tail.len(), 16);
    }
}
