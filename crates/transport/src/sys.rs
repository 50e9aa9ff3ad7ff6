//! The few system calls the shared-memory code needs beyond the mapping: futex wait and
//! wake on a word of a shared mapping, and liveness checks of a peer process.
#![allow(unsafe_code)]

use std::sync::atomic::AtomicU64;
use std::time::Duration;

// The futex word is the low half of a u64 position, which is its first 4 bytes only on a
// little-endian machine.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "the futex wait needs a little-endian machine"
);

/// Sleeps while the low 32 bits of `word` equal `expected`, for at most `timeout`.
pub(crate) fn futex_wait(word: &AtomicU64, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: the address is that of a live, 8-byte aligned AtomicU64 in the shared mapping
    // (its first 4 bytes are its low half: checked little-endian above); FUTEX_WAIT only
    // reads it, atomically, and `ts` outlives the call. Not FUTEX_PRIVATE: the word is
    // shared between processes. Any error (a changed value, a timeout, a signal) just
    // returns; the caller looks again.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr().cast::<u32>(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        );
    }
}

/// Wakes every process sleeping on `word`.
pub(crate) fn futex_wake(word: &AtomicU64) {
    // SAFETY: as in `futex_wait`; FUTEX_WAKE does not touch the word's memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr().cast::<u32>(),
            libc::FUTEX_WAKE,
            i32::MAX,
        );
    }
}

/// Whether the process holding a claim (its pid as token) still runs.
pub(crate) fn alive(token: Option<u64>) -> bool {
    match token {
        None => false,
        Some(0) => true,
        Some(pid) => {
            let Ok(pid) = i32::try_from(pid) else {
                return false;
            };
            !matches!(
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
                Err(nix::errno::Errno::ESRCH)
            )
        }
    }
}

/// Whether process `pid` is gone (or a zombie waiting to be reaped).
pub(crate) fn gone(pid: u32) -> bool {
    if pid == 0 || !alive(Some(u64::from(pid))) {
        return true;
    }
    // "pid (comm) S ...": the state follows the last ')'.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let (_, rest) = s.rsplit_once(')')?;
            rest.trim_start().chars().next()
        })
        .is_some_and(|state| state == 'Z' || state == 'X')
}
