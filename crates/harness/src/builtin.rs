//! Built-in configs: the default run (`harness` with no arguments) and the bare
//! baselines `harness calibrate` measures beside the floor.

/// `harness` with no arguments: latency and throughput over every transport, with the
/// bare system-call baselines beside them; about a minute on a 2-core machine.
pub const DEFAULT_CONFIG: &str = r#"# Built-in default: latency and throughput over every transport, about a minute.
[defaults]
cores = [0, 1]
timeout_s = 120

[[experiment]]
name = "latency"
workload = "latency"
transport = ["pipe", "uds", "tcp", "shm"]
msg_bytes = [64, 4096, 65536]
count = 5000
warmup = 500

[[experiment]]
name = "latency-bare"
workload = "latency"
transport = ["pipe", "uds", "tcp"]
msg_bytes = 64
count = 5000
warmup = 500
bare = true

[[experiment]]
name = "throughput"
workload = "throughput"
transport = ["pipe", "uds", "tcp", "shm"]
msg_bytes = [64, 4096, 65536]
count = 50000
warmup = 1000

[[experiment]]
name = "throughput-bare"
workload = "throughput"
transport = ["pipe", "uds", "tcp"]
msg_bytes = 65536
count = 50000
warmup = 1000
bare = true
"#;

/// `harness calibrate`: the bare baselines (the kernel's own cost) on the chosen cores.
pub fn calibrate_config(cores: [usize; 2]) -> String {
    format!(
        r#"[defaults]
cores = [{a}, {b}]
timeout_s = 120
bare = true

[[experiment]]
name = "bare-roundtrip"
workload = "latency"
transport = ["pipe", "uds", "tcp"]
msg_bytes = 64
count = 20000
warmup = 2000

[[experiment]]
name = "bare-stream"
workload = "throughput"
transport = ["pipe", "uds", "tcp"]
msg_bytes = 65536
count = 20000
warmup = 1000
"#,
        a = cores[0],
        b = cores[1]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_configs_are_valid() {
        let runs = crate::config::parse("default", DEFAULT_CONFIG, &[0, 1]).unwrap();
        assert!(runs
            .iter()
            .any(|r| r.common.transport == ipcbench_transport::TransportKind::Shm));
        let runs = crate::config::parse("calibrate", &calibrate_config([0, 1]), &[0, 1]).unwrap();
        assert!(runs
            .iter()
            .all(|r| r.labels["bare"] == crate::params::Value::Bool(true)));
    }
}
