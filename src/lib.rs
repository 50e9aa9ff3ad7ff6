//! ipcbench: a lock-free IPC benchmarking toolkit. This root package re-exports the
//! crates (ring ← transport ← workloads ← harness) and owns the `harness` binary.
#![forbid(unsafe_code)]

pub use ipcbench_harness as harness;
pub use ipcbench_ring as ring;
pub use ipcbench_transport as transport;
pub use ipcbench_workloads as workloads;
