//! What the end-to-end tests share: the harness's role processes seen through /proc.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, dead_code)]

/// Pids of the live children of `parent` (the role processes).
pub fn children(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(')').map(|x| x.1) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[1].parse::<u32>() == Ok(parent) && fields[0] != "Z" {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out
}

pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}
