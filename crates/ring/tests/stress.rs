//! Two threads, randomized record lengths (empty to the maximum), every byte of every
//! record checked, with copies and zero-copy loans/peeks mixed. Counts shrink under Miri.
#![cfg(not(loom))]
// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::num::NonZeroU32;
use std::sync::Arc;

use ipcbench_ring::{
    init, max_payload, region_len, Consumer, HeapRegion, PopError, Producer, PushError,
};

fn rng(seed: u64) -> u64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

fn record(seq: u64, max: usize, out: &mut Vec<u8>) {
    let r = rng(seq);
    // Mostly small records, now and then one up to the maximum.
    let len = if r % 16 == 0 {
        (r >> 8) as usize % (max + 1)
    } else {
        (r >> 8) as usize % 120.min(max + 1)
    };
    out.clear();
    out.extend((0..len).map(|i| (r >> (i % 56)) as u8 ^ i as u8));
}

fn stress(capacity: usize, count: u64) {
    let region = Arc::new(HeapRegion::new(region_len(capacity)));
    init(&*region, capacity).unwrap();
    let token = NonZeroU32::new(1).unwrap();
    let mut producer = Producer::attach(region.clone(), token).unwrap();
    let mut consumer = Consumer::attach(region, token).unwrap();
    let max = max_payload(capacity);

    let writer = std::thread::spawn(move || {
        let mut rec = Vec::new();
        for seq in 0..count {
            record(seq, max, &mut rec);
            loop {
                let result = if seq % 3 == 0 {
                    producer.loan(rec.len()).map(|mut loan| {
                        loan.as_mut_slice().unwrap().copy_from_slice(&rec);
                        loan.commit();
                    })
                } else {
                    producer.try_push(&rec)
                };
                match result {
                    Ok(()) => break,
                    Err(PushError::Full) => std::thread::yield_now(),
                    Err(e) => panic!("push {seq}: {e}"),
                }
            }
        }
    });

    let mut want = Vec::new();
    let mut buf = vec![0u8; max];
    for seq in 0..count {
        record(seq, max, &mut want);
        loop {
            let got = if seq % 5 == 0 {
                match consumer.try_peek() {
                    Ok(Some(rec)) => {
                        assert_eq!(&rec[..], &want[..], "record {seq} (peeked)");
                        Ok(())
                    }
                    Ok(None) => unreachable!("heap storage lends its bytes"),
                    Err(e) => Err(e),
                }
            } else {
                consumer
                    .try_pop(&mut buf)
                    .map(|n| assert_eq!(&buf[..n], &want[..], "record {seq}"))
            };
            match got {
                Ok(()) => break,
                Err(PopError::Empty) => std::thread::yield_now(),
                Err(e) => panic!("pop {seq}: {e}"),
            }
        }
    }
    writer.join().unwrap();
    assert_eq!(
        consumer.try_pop(&mut buf),
        Err(PopError::Disconnected),
        "nothing beyond the records sent"
    );
}

#[test]
fn two_threads_every_byte_small_ring() {
    stress(256, if cfg!(miri) { 300 } else { 200_000 });
}

#[test]
fn two_threads_every_byte_large_ring() {
    stress(1 << 16, if cfg!(miri) { 300 } else { 200_000 });
}
