//! The workloads, one module each, listed once in [`REGISTRY`]: `harness list`, the
//! config reader, the matrix, the report and the role processes all find them here.
//!
//! Adding a workload: its roles in `ipcbench-workloads` (written against the transport
//! traits only), a module here implementing [`Workload`] and [`Point`] (its typed keys,
//! checks, plan, floor and columns), one line in [`REGISTRY`], a config under
//! `bench-configs/` and its columns in `results/README.md`. See docs/architecture.md.
//!
//! [`Point`]: crate::spec::Point

use crate::spec::Workload;

pub mod buffer;
pub mod latency;
pub mod pingpong;
pub mod tasks;
pub mod throughput;
pub mod vectors;

/// Every workload, in `harness list` order.
pub static REGISTRY: &[&dyn Workload] = &[
    &latency::Latency,
    &throughput::Throughput,
    &pingpong::Pingpong,
    &vectors::Vectors,
    &buffer::Buffer,
    &tasks::Tasks,
];

/// The workload named `name`.
pub fn find(name: &str) -> Option<&'static dyn Workload> {
    REGISTRY.iter().copied().find(|w| w.name() == name)
}

/// The workloads' names, for messages.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|w| w.name()).collect()
}
