//! What a harness that was killed (`kill -9`, a machine that lost power) left behind:
//! its segments in /dev/shm and its run directories. Their names say whose they are
//! (`ipcbench_transport::names`); at the start of every matrix, and on `harness clean`,
//! those of ours whose creator is gone are removed. A creator still running keeps its
//! own, and another user's are never touched.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use ipcbench_transport::names;

/// The kinds of segment the harness and its transports make (`iox`: iceoryx2's, named
/// with an endpoint's prefix).
const SEGMENTS: &[&str] = &["shm", "pool", "canvas", "floor", "iox"];

/// What a sweep removed, and what it left because its creator still runs.
#[derive(Debug, Default)]
pub struct Swept {
    /// Removed: their creator is gone.
    pub removed: Vec<PathBuf>,
    /// Left: their creator (another harness) still runs.
    pub in_use: usize,
}

/// Whether process `pid` exists (a process of another user counts).
fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Removes the segments and run directories of this user whose creator is gone.
pub fn sweep() -> Swept {
    let me = std::process::id();
    let uid = nix::unistd::geteuid().as_raw();
    let mut swept = Swept::default();
    let places = [
        (names::shm_dir(), SEGMENTS),
        (std::env::temp_dir(), &["run"][..]),
    ];
    for (dir, kinds) in places {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some((kind, pid)) = name.to_str().and_then(names::owner) else {
                continue;
            };
            // symlink_metadata: a link planted under one of our names is not followed.
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if !kinds.contains(&kind) || meta.uid() != uid || pid == me {
                continue;
            }
            if alive(pid) {
                swept.in_use += 1;
                continue;
            }
            let path = entry.path();
            let gone = if meta.is_dir() {
                // The POSIX queues the run made are listed in its directory.
                unlink_queues(&path, 3);
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if gone.is_ok() {
                swept.removed.push(path);
            }
        }
    }
    swept
}

/// Unlinks the POSIX queues listed in `dir` and its subdirectories (to `depth` levels;
/// links not followed).
fn unlink_queues(dir: &std::path::Path, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() && depth > 0 {
            unlink_queues(&entry.path(), depth - 1);
        } else if kind.is_file() && entry.file_name() == ipcbench_transport::mq::NAMES_FILE {
            ipcbench_transport::mq::unlink_listed(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_dead_creator_left_goes_and_a_live_ones_stays() {
        // A pid that cannot be running: above the kernel's pid_max (at most 2^22).
        let dead = 4_194_304 + 17;
        let shm = names::shm_dir();
        let stale = shm.join(format!("{}pool-{dead}-00000000deadbeef", names::PREFIX));
        let ours = shm.join(names::unique("pool"));
        let live = shm.join(format!("{}pool-1-00000000feedface", names::PREFIX));
        let other = shm.join(format!("{}pool-{dead}", names::PREFIX)); // not one of our names
        for p in [&stale, &ours, &live, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        let run = std::env::temp_dir().join(format!("{}run-{dead}-abcdef", names::PREFIX));
        std::fs::create_dir_all(run.join("w0")).unwrap();
        let swept = sweep();
        let gone = |p: &PathBuf| !p.exists();
        assert!(gone(&stale) && gone(&run), "{swept:?}");
        assert!(swept.removed.contains(&stale) && swept.removed.contains(&run));
        // This process's own, pid 1's (alive), and a name that is not ours stay.
        assert!(!gone(&ours) && !gone(&live) && !gone(&other));
        for p in [&ours, &live, &other] {
            std::fs::remove_file(p).unwrap();
        }
    }
}
