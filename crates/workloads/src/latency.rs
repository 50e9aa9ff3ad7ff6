//! `latency`: ping-pong round trips. The client stamps a sequence number into each message,
//! the echo sends it back unchanged, the client checks the number and length and records
//! the round trip. Warm-up round trips are not recorded.
//!
//! With `rate > 0` the client runs open-loop: message *k* is due at `start + k / rate`, and
//! its latency is measured from that intended time, not from when it was actually sent, so
//! a stall shows up in every message it delayed (no coordinated omission).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{
    check_msg_bytes, fill_pattern, new_histogram, seq_of, stamp, Measurement, Rx, Tx, WorkloadError,
};

/// Parameters of a latency run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyParams {
    /// Message size in bytes (at least 8: the sequence number).
    pub msg_bytes: usize,
    /// Round trips recorded.
    pub count: u64,
    /// Round trips before recording starts.
    pub warmup: u64,
    /// Messages per second in open-loop mode; 0 for closed loop (next send at once).
    pub rate: f64,
}

/// Sleeps, then spins, until `due`.
fn wait_until(due: Instant) {
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        let left = due - now;
        if left > Duration::from_micros(200) {
            std::thread::sleep(left - Duration::from_micros(100));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// The measuring side: sends, waits for the echo, records the round trip.
pub fn client<T: Tx, R: Rx>(
    tx: &mut T,
    rx: &mut R,
    p: &LatencyParams,
) -> Result<Measurement, WorkloadError> {
    check_msg_bytes(p.msg_bytes)?;
    if !(p.rate >= 0.0 && p.rate.is_finite()) {
        return Err(WorkloadError::Param(format!(
            "rate {} must be a finite number >= 0",
            p.rate
        )));
    }
    let mut out = vec![0u8; p.msg_bytes];
    let mut back = vec![0u8; p.msg_bytes];
    fill_pattern(&mut out, 0x1a7e);
    let mut hist = new_histogram();

    let mut round_trip = |seq: u64, out: &mut [u8], back: &mut [u8]| -> Result<(), WorkloadError> {
        stamp(out, seq);
        tx.send(out)?;
        let n = rx.recv(back)?;
        if n != out.len() || seq_of(back) != seq {
            return Err(WorkloadError::Integrity(format!(
                "round trip {seq}: echo of {n} bytes with sequence {}, expected {} bytes with sequence {seq}",
                if n >= 8 { seq_of(back) } else { u64::MAX },
                out.len()
            )));
        }
        Ok(())
    };

    for seq in 0..p.warmup {
        round_trip(seq, &mut out, &mut back)?;
    }
    let interval = if p.rate > 0.0 {
        Some(Duration::from_secs_f64(1.0 / p.rate))
    } else {
        None
    };
    let start = Instant::now();
    for k in 0..p.count {
        let seq = p.warmup + k;
        let base = match interval {
            Some(iv) => {
                let due = start + iv.mul_f64(k as f64);
                wait_until(due);
                due
            }
            None => Instant::now(),
        };
        round_trip(seq, &mut out, &mut back)?;
        hist.saturating_record(base.elapsed().as_nanos() as u64);
    }
    let duration = start.elapsed();
    Ok(Measurement {
        histogram: Some(hist),
        count: p.count,
        bytes: p.count * p.msg_bytes as u64,
        duration,
        metrics: Vec::new(),
    })
}

/// The echoing side: sends back each message as it came, `warmup + count` times.
pub fn echo<T: Tx, R: Rx>(
    tx: &mut T,
    rx: &mut R,
    p: &LatencyParams,
) -> Result<Measurement, WorkloadError> {
    check_msg_bytes(p.msg_bytes)?;
    let mut buf = vec![0u8; p.msg_bytes];
    let start = Instant::now();
    for _ in 0..p.warmup + p.count {
        let n = rx.recv(&mut buf)?;
        tx.send(&buf[..n])?;
    }
    Ok(Measurement {
        count: p.count,
        bytes: p.count * p.msg_bytes as u64,
        duration: start.elapsed(),
        ..Default::default()
    })
}
