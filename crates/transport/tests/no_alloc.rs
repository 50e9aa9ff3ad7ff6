//! No heap allocation per message: a counting global allocator counts the allocations
//! made by the measuring thread while it sends and receives, after a warm-up.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use ipcbench_transport::{
    Endpoint, EndpointOptions, Pipe, Rx, Shm, Tcp, Transport, TryRecvError, TrySendError, Tx, Uds,
};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Per thread: the tests run in parallel, and each counts only its own thread.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator, which upholds
// GlobalAlloc's contract; counting touches only an atomic and a const thread-local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: `ptr` came from this allocator (hence System) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (hence System) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SIZES: [usize; 3] = [64, 4096, 65536];
const ROUNDS: usize = 500;

fn round_trips(tx: &mut impl Tx, rx: &mut impl Rx, out: &[u8], back: &mut [u8], n: usize) {
    for _ in 0..n {
        tx.send(out).unwrap();
        assert_eq!(rx.recv(back).unwrap(), out.len());
        // The non-blocking paths too: try_send may say Full, try_recv may say Empty.
        loop {
            match tx.try_send(out) {
                Ok(()) => break,
                Err(TrySendError::Full) => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        // A frame the kernel took only part of waits in the sending half until flushed.
        tx.flush().unwrap();
        loop {
            match rx.try_recv(back) {
                Ok(len) => {
                    assert_eq!(len, out.len());
                    break;
                }
                Err(TryRecvError::Empty) => std::hint::spin_loop(),
                Err(e) => panic!("{e}"),
            }
        }
    }
}

fn no_allocation_per_message<T: Transport>() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EndpointOptions {
        shm_capacity: 1 << 20,
        max_frame: 1 << 18,
        ..Default::default()
    };
    let spec = Endpoint::prepare(T::KIND, dir.path(), &opts).unwrap();
    let _cleanup = Cleanup(spec.clone());
    let listener = T::listen(&spec).unwrap();
    let resolved = T::resolved(&listener);
    let echo = std::thread::spawn(move || {
        let (mut tx, mut rx) = T::connect(&resolved, Duration::from_secs(10)).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        while let Ok(n) = rx.recv(&mut buf) {
            if tx.send(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let (mut tx, mut rx) = T::accept(listener, Duration::from_secs(10)).unwrap();
    for size in SIZES {
        let out = vec![0xa5u8; size];
        let mut back = vec![0u8; size];
        round_trips(&mut tx, &mut rx, &out, &mut back, 50);
        ALLOCATIONS.with(|a| a.set(0));
        COUNTING.with(|c| c.set(true));
        round_trips(&mut tx, &mut rx, &out, &mut back, ROUNDS);
        COUNTING.with(|c| c.set(false));
        let n = ALLOCATIONS.with(Cell::get);
        assert_eq!(
            n,
            0,
            "{} allocated {n} times in {} messages of {size} bytes",
            T::KIND,
            4 * ROUNDS
        );
    }
    drop((tx, rx));
    echo.join().unwrap();
}

#[test]
fn pipe_sends_and_receives_without_allocating() {
    no_allocation_per_message::<Pipe>();
}

#[test]
fn uds_sends_and_receives_without_allocating() {
    no_allocation_per_message::<Uds>();
}

#[test]
fn tcp_sends_and_receives_without_allocating() {
    no_allocation_per_message::<Tcp>();
}

#[test]
fn shm_sends_and_receives_without_allocating() {
    no_allocation_per_message::<Shm>();
}

/// Removes the shm segment, also when the test fails.
struct Cleanup(Endpoint);
impl Drop for Cleanup {
    fn drop(&mut self) {
        self.0.cleanup();
    }
}

#[test]
fn the_counter_counts() {
    COUNTING.with(|c| c.set(true));
    let before = ALLOCATIONS.with(Cell::get);
    let v = std::hint::black_box(vec![1u8; 100]);
    COUNTING.with(|c| c.set(false));
    assert!(ALLOCATIONS.with(Cell::get) > before);
    drop(v);
}
