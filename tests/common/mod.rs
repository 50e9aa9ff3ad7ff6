//! What the end-to-end tests share: the harness's role processes seen through /proc.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, dead_code)]

/// A process as /proc/PID/stat has it: the fields after the command.
#[derive(Debug, Clone, Copy)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub pgrp: u32,
    pub session: u32,
}

/// Every process that has not ended (zombies left out).
pub fn processes() -> Vec<Proc> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the command in parentheses: state, ppid, pgrp, session.
        let Some(rest) = stat.rsplit_once(')').map(|x| x.1) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u32>().ok());
        if let (Some(&state), Some(ppid), Some(pgrp), Some(session)) =
            (f.first(), num(1), num(2), num(3))
        {
            if state != "Z" {
                out.push(Proc {
                    pid,
                    ppid,
                    pgrp,
                    session,
                });
            }
        }
    }
    out
}

/// Pids of the live children of `parent` (the role processes).
pub fn children(parent: u32) -> Vec<u32> {
    let mut out: Vec<u32> = processes()
        .into_iter()
        .filter(|p| p.ppid == parent)
        .map(|p| p.pid)
        .collect();
    out.sort_unstable();
    out
}

/// Pids of the live processes of process group `pgid`.
pub fn group(pgid: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|p| p.pgrp == pgid)
        .map(|p| p.pid)
        .collect()
}

pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}
