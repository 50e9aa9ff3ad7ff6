//! What the machine is, for `env.json` and for the checks: usable cores, CPU, kernel,
//! governor, virtualisation, the kernel's DAMON monitor.

use std::collections::BTreeMap;
use std::path::Path;

use crate::floor::Floor;
use crate::spec::RunSpec;

/// The core ids this process may run on, sorted (at least one).
pub fn usable_cores() -> Vec<usize> {
    let mut ids: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort_unstable();
    if ids.is_empty() {
        ids.push(0);
    }
    ids
}

/// The default pair of cores for `calibrate`: the first two usable.
pub fn default_pair(usable: &[usize]) -> [usize; 2] {
    match usable {
        [a, b, ..] => [*a, *b],
        [a] => [*a, *a],
        [] => [0, 0],
    }
}

/// This process's private resident memory (`RssAnon`) in KiB, from /proc/self/status.
pub fn own_private_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn first_line_of(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// The running DAMON monitors (the kernel's data-access monitor, which some hosts use
/// for proactive reclaim), e.g. "paddr, sampling every 500 ms, scheme pageout"; `None`
/// when none runs or the sysfs interface is absent.
pub fn damon() -> Option<String> {
    let root = Path::new("/sys/kernel/mm/damon/admin/kdamonds");
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root).ok()?.flatten() {
        let k = entry.path();
        if read(&k.join("state")).as_deref() != Some("on") {
            continue;
        }
        let Ok(contexts) = std::fs::read_dir(k.join("contexts")) else {
            continue;
        };
        for c in contexts.flatten().map(|e| e.path()).filter(|p| p.is_dir()) {
            let ops = read(&c.join("operations")).unwrap_or_else(|| "?".into());
            let sample_ms = read(&c.join("monitoring_attrs/intervals/sample_us"))
                .and_then(|v| v.parse::<f64>().ok())
                .map_or_else(|| "?".into(), |us| format!("{}", us / 1000.0));
            let schemes: Vec<String> = std::fs::read_dir(c.join("schemes"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| read(&e.path().join("action")))
                .collect();
            let mut d = format!("{ops}, sampling every {sample_ms} ms");
            if !schemes.is_empty() {
                d += &format!(", scheme {}", schemes.join("+"));
            }
            found.push(d);
        }
    }
    (!found.is_empty()).then(|| found.join("; "))
}

/// Writes `env.json`: the machine, the toolchain, the commit, the floors and the config.
pub fn env_json(
    path: &Path,
    config_text: &str,
    runs: &[RunSpec],
    floors: &BTreeMap<[usize; 2], Floor>,
    damon: Option<&str>,
    watch: &serde_json::Value,
) -> anyhow::Result<()> {
    let uts = nix::sys::utsname::uname().ok();
    let mut cores_used: Vec<usize> = runs
        .iter()
        .flat_map(|r| r.common.cores.iter().copied())
        .collect();
    cores_used.sort_unstable();
    cores_used.dedup();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hypervisor = cpuinfo
        .lines()
        .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor"));
    let virt = std::fs::read_to_string("/sys/hypervisor/type")
        .ok()
        .map(|s| s.trim().to_string());
    let env = serde_json::json!({
        "ipcbench_version": env!("CARGO_PKG_VERSION"),
        "git_commit": env!("IPCBENCH_GIT_COMMIT"),
        "rustc": env!("IPCBENCH_RUSTC_VERSION"),
        "created_utc": crate::report::utc_stamp(std::time::SystemTime::now()),
        "cpu_model": first_line_of("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into()),
        "logical_cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "usable_cores": usable_cores(),
        "cores_used": cores_used,
        "kernel": uts.as_ref().map(|u| format!("{} {} {}", u.sysname().to_string_lossy(), u.release().to_string_lossy(), u.version().to_string_lossy())),
        "machine": uts.as_ref().map(|u| u.machine().to_string_lossy().into_owned()),
        "governor": std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").map(|s| s.trim().to_string()).unwrap_or_else(|_| "unavailable".into()),
        "damon": damon.unwrap_or("off or unavailable"),
        "virtualisation": if hypervisor { virt.unwrap_or_else(|| "hypervisor present".into()) } else { "none detected".into() },
        "floors": floors.values().collect::<Vec<_>>(),
        "floor_watch": watch,
        "runs": runs.len(),
        "config": config_text,
    });
    Ok(crate::exit::write_whole(
        path,
        serde_json::to_string_pretty(&env)?.as_bytes(),
    )?)
}
