//! Loom explores every interleaving (and the weak-memory outcomes loom models) of the
//! ring's publication protocol at capacities where wrap-around comes at once: the
//! smallest ring (64 bytes) holds only a few records. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p ipcbench-ring --test loom --release`.
#![cfg(loom)]
// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::num::NonZeroU32;

use ipcbench_ring::{init, region_len, Consumer, HeapRegion, PopError, Producer, PushError};
use loom::sync::Arc;

/// Records of these lengths, pushed by one thread and popped by another.
fn exchange(lens: &'static [usize]) {
    loom::model(move || {
        let region = Arc::new(HeapRegion::new(region_len(64)));
        init(&*region, 64).unwrap();
        let token = NonZeroU32::new(1).unwrap();
        let mut producer = Producer::attach(ArcRegion(region.clone()), token).unwrap();
        let mut consumer = Consumer::attach(ArcRegion(region), token).unwrap();
        let writer = loom::thread::spawn(move || {
            for (seq, &len) in lens.iter().enumerate() {
                let rec: Vec<u8> = (0..len).map(|i| (seq * 16 + i) as u8).collect();
                loop {
                    match producer.try_push(&rec) {
                        Ok(()) => break,
                        Err(PushError::Full) => loom::thread::yield_now(),
                        Err(e) => panic!("push {seq}: {e}"),
                    }
                }
            }
        });
        let mut buf = [0u8; 64];
        for (seq, &len) in lens.iter().enumerate() {
            loop {
                match consumer.try_pop(&mut buf) {
                    Ok(n) => {
                        assert_eq!(n, len, "record {seq}");
                        for (i, b) in buf[..n].iter().enumerate() {
                            assert_eq!(*b, (seq * 16 + i) as u8, "record {seq}, byte {i}");
                        }
                        break;
                    }
                    Err(PopError::Empty) => loom::thread::yield_now(),
                    Err(e) => panic!("pop {seq}: {e}"),
                }
            }
        }
        writer.join().unwrap();
    });
}

/// loom's Arc is not std's, so it needs its own forwarding impl.
struct ArcRegion(Arc<HeapRegion>);

// SAFETY: forwards to the pointee, which keeps the promises.
unsafe impl ipcbench_ring::Region for ArcRegion {
    fn words(&self) -> usize {
        self.0.words()
    }
    fn word(&self, i: usize) -> &loom::sync::atomic::AtomicU64 {
        self.0.word(i)
    }
    unsafe fn write(&self, at: usize, src: &[u8]) {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.0.write(at, src) }
    }
    unsafe fn read(&self, at: usize, dst: &mut [u8]) {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.0.read(at, dst) }
    }
}

#[test]
fn two_records_fit_then_wrap() {
    // 64-byte ring, max payload 16: records of 16 bytes (24 with header) force the third
    // to wait for space and to wrap.
    exchange(&[16, 16, 16]);
}

#[test]
fn small_and_empty_records_wrap() {
    exchange(&[0, 9, 1, 16]);
}
