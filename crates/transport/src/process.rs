//! Process creation that std does not offer: forking a process that has a single thread,
//! whose child may then do anything its parent could. The tasks gateway forks a small
//! server this way, which forks the workers: a fork cost about a fifth of an exec of the
//! harness binary on this VM (0.2-0.3 ms against 1.2-1.4 ms of CPU).
#![allow(unsafe_code)]

use nix::unistd::{ForkResult, Pid};

/// Which side of a fork this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// The new process.
    Child,
    /// The process that forked, with the child's pid.
    Parent(Pid),
}

/// Why a fork was not made.
#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    /// More than one thread: the child of a threaded process may call only
    /// async-signal-safe functions until it execs, so this fork is refused.
    #[error("cannot fork a process that runs {0} threads")]
    Threaded(usize),
    /// `/proc/self/status` could not be read or did not name a thread count.
    #[error("cannot count this process's threads: {0}")]
    Count(String),
    /// The fork itself failed.
    #[error("fork: {0}")]
    Fork(#[from] nix::errno::Errno),
}

/// The calling process's thread count, from `/proc/self/status`.
pub fn threads() -> Result<usize, ForkError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| ForkError::Count(format!("/proc/self/status: {e}")))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| ForkError::Count("no `Threads:` line in /proc/self/status".into()))
}

/// Forks the calling process, which must have a single thread (counted first; a process
/// with more is refused with [`ForkError::Threaded`]).
pub fn fork_single_threaded() -> Result<Forked, ForkError> {
    let n = threads()?;
    if n != 1 {
        return Err(ForkError::Threaded(n));
    }
    // SAFETY: fork's hazard is a child of a threaded process that calls a function
    // another thread held a lock in at the time of the fork. This process has exactly one
    // thread, the caller (counted just above; only a thread of this process could start
    // another, and this one is here), so no lock can be held by anyone else and the child
    // is an ordinary single-threaded process.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => Ok(Forked::Child),
        ForkResult::Parent { child } => Ok(Forked::Parent(child)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threaded_process_is_refused() {
        // The test harness runs this on a thread of its own, beside the main one.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            let _ = rx.recv();
        });
        assert!(matches!(
            fork_single_threaded(),
            Err(ForkError::Threaded(n)) if n >= 2
        ));
        drop(tx);
        assert!(other.join().is_ok());
    }

    #[test]
    fn threads_counts_this_process() {
        assert!(matches!(threads(), Ok(n) if n >= 1));
    }
}
