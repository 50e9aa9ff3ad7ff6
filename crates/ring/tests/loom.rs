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

// ---- the MPMC queue of the chunk pool ---------------------------------------------------

use ipcbench_ring::{queue_words, Mpmc, QueueError};

/// Three threads with retry loops: bound the preemptions loom explores (the ring's own
/// tests above have two threads and run unbounded).
fn bounded() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.max_branches = 20_000;
    b
}

fn push_until(q: &Mpmc<'_, HeapRegion>, v: u64) {
    loop {
        match q.push(v) {
            Ok(()) => return,
            Err(QueueError::WouldBlock) => loom::thread::yield_now(),
            Err(e) => panic!("push {v}: {e}"),
        }
    }
}

fn pop_until(q: &Mpmc<'_, HeapRegion>) -> u64 {
    loop {
        match q.pop() {
            Ok(v) => return v,
            Err(QueueError::WouldBlock) => loom::thread::yield_now(),
            Err(e) => panic!("pop: {e}"),
        }
    }
}

#[test]
fn mpmc_two_producers_one_consumer_lose_and_duplicate_nothing() {
    bounded().check(|| {
        let region = Arc::new(HeapRegion::new(8 * queue_words(2)));
        Mpmc::new(&*region, 0, 2, 10).unwrap().init();
        let producers: Vec<_> = [[1], [3]]
            .into_iter()
            .map(|vals| {
                let r = region.clone();
                loom::thread::spawn(move || {
                    let q = Mpmc::new(&*r, 0, 2, 10).unwrap();
                    for v in vals {
                        push_until(&q, v);
                    }
                })
            })
            .collect();
        let q = Mpmc::new(&*region, 0, 2, 10).unwrap();
        let mut got: Vec<u64> = (0..2).map(|_| pop_until(&q)).collect();
        for p in producers {
            p.join().unwrap();
        }
        got.sort_unstable();
        assert_eq!(got, [1, 3]);
        assert_eq!(q.pop(), Err(QueueError::WouldBlock));
    });
}

#[test]
fn mpmc_one_producer_two_consumers_hand_out_each_value_once() {
    bounded().check(|| {
        let region = Arc::new(HeapRegion::new(8 * queue_words(2)));
        Mpmc::new(&*region, 0, 2, 10).unwrap().init();
        // Each consumer tries once, racing the producer (no spinning: two spinners could
        // keep loom busy forever); what they miss is popped after the joins.
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let r = region.clone();
                loom::thread::spawn(move || {
                    let q = Mpmc::new(&*r, 0, 2, 10).unwrap();
                    match q.pop() {
                        Ok(v) => Some(v),
                        Err(QueueError::WouldBlock) => None,
                        Err(e) => panic!("pop: {e}"),
                    }
                })
            })
            .collect();
        let q = Mpmc::new(&*region, 0, 2, 10).unwrap();
        for v in [5, 6] {
            push_until(&q, v);
        }
        let mut got: Vec<u64> = consumers
            .into_iter()
            .filter_map(|c| c.join().unwrap())
            .collect();
        while let Ok(v) = q.pop() {
            got.push(v);
        }
        got.sort_unstable();
        assert_eq!(got, [5, 6]);
        // Both cells were freed for the next lap: two more fit, a third does not.
        q.push(7).unwrap();
        q.push(8).unwrap();
        assert_eq!(q.push(9), Err(QueueError::WouldBlock));
    });
}
