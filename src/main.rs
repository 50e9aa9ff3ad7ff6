//! The `harness` binary: a thin main over `ipcbench-harness`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    ipcbench_harness::main()
}
