//! The `block` wait of `shm`: after its spin budget a receiver with nothing to read sleeps
//! (its thread's CPU time stays a small share of the wall time, where spinning would use
//! all of it), and a send wakes it. Behaviour, with bounds far from the measured values:
//! the figures themselves are printed, not asserted.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use ipcbench_transport::{
    Endpoint, EndpointOptions, RecvTimeoutError, Rx, Shm, Transport, TransportKind, Tx,
    WaitStrategy,
};
use nix::time::{clock_gettime, ClockId};

fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

struct Cleanup(Endpoint);
impl Drop for Cleanup {
    fn drop(&mut self) {
        self.0.cleanup();
    }
}

#[test]
fn a_blocked_receiver_sleeps_and_a_send_wakes_it() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EndpointOptions {
        shm_capacity: 1 << 16,
        max_frame: 1024,
        wait: WaitStrategy::Block,
        spin_us: 50,
        ..Default::default()
    };
    let spec = Endpoint::prepare(TransportKind::Shm, dir.path(), &opts).unwrap();
    let _cleanup = Cleanup(spec.clone());
    let listener = Shm::listen(&spec).unwrap();
    let resolved = Shm::resolved(&listener);
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let sender = std::thread::spawn(move || {
        let (mut tx, _rx) = Shm::connect(&resolved, Duration::from_secs(5)).unwrap();
        go_rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        tx.send(b"wake up").unwrap();
        go_rx.recv().unwrap();
    });
    let (_tx, mut rx) = Shm::accept(listener, Duration::from_secs(5)).unwrap();
    let mut buf = [0u8; 64];

    // Nothing to read for a second (IPCBENCH_IDLE_S=5 for the 5-second measurement).
    let idle = std::env::var("IPCBENCH_IDLE_S")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| (0.1..=60.0).contains(s))
        .unwrap_or(1.0);
    let (cpu0, t0) = (thread_cpu(), Instant::now());
    assert_eq!(
        rx.recv_timeout(&mut buf, Duration::from_secs_f64(idle)),
        Err(RecvTimeoutError::Timeout)
    );
    let (cpu, wall) = (thread_cpu() - cpu0, t0.elapsed());
    let share = cpu.as_secs_f64() / wall.as_secs_f64();
    eprintln!(
        "idle block wait: {:.3} ms of CPU in {:.3} s ({:.2} % of a core)",
        cpu.as_secs_f64() * 1e3,
        wall.as_secs_f64(),
        share * 100.0
    );
    assert!(
        share < 0.25,
        "a blocked receiver must sleep, not spin: {:.1} % of a core",
        share * 100.0
    );

    // A blocking receive that sleeps until the sender, 300 ms later, sends.
    go_tx.send(()).unwrap();
    let (cpu0, t0) = (thread_cpu(), Instant::now());
    let n = rx.recv(&mut buf).unwrap();
    let (cpu, wall) = (thread_cpu() - cpu0, t0.elapsed());
    assert_eq!(&buf[..n], b"wake up");
    eprintln!(
        "woken after {:.1} ms, {:.3} ms of CPU",
        wall.as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e3
    );
    assert!(
        cpu.as_secs_f64() < 0.25 * wall.as_secs_f64(),
        "it slept while waiting"
    );
    go_tx.send(()).unwrap();
    sender.join().unwrap();
}
