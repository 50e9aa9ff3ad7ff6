//! `latency`: ping-pong round trips. The client stamps a sequence number into each message,
//! the echo sends it back unchanged, the client checks the number and length and records
//! the round trip. Warm-up round trips are not recorded.
//!
//! With `rate > 0` the client runs open-loop: message *k* is due at `start + k / rate`, and
//! its latency is measured from that intended time, not from when it was actually sent, so
//! a stall shows up in every message it delayed (no coordinated omission).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use ipcbench_transport::{LoanRx, LoanTx, TxLoan};

use crate::{
    check_msg_bytes, fill_pattern, new_histogram, seq_of, stamp, wait_until, Measurement, Rx, Tx,
    WorkloadError, SEQ_BYTES,
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
    /// Zero-copy: [`client_in_place`] and [`echo_in_place`] instead of [`client`] and
    /// [`echo`] (for transports with loans). The harness picks the functions from it.
    #[serde(default)]
    pub zero_copy: bool,
}

/// The measuring side: sends, waits for the echo, records the round trip. The message is
/// copied in from the client's buffer and out into another.
pub fn client<T: Tx, R: Rx>(
    tx: &mut T,
    rx: &mut R,
    p: &LatencyParams,
) -> Result<Measurement, WorkloadError> {
    check_msg_bytes(p.msg_bytes)?;
    let mut out = vec![0u8; p.msg_bytes];
    let mut back = vec![0u8; p.msg_bytes];
    fill_pattern(&mut out, 0x1a7e);
    measure(p, |seq| {
        stamp(&mut out, seq);
        tx.send(&out)?;
        let n = rx.recv(&mut back)?;
        check_echo(seq, n, &back, out.len())
    })
}

/// The measuring side, zero-copy: each message is a loan from the transport in which
/// the client writes the sequence number in place (the rest of the payload is whatever
/// the slot held: nothing is copied, as for a producer that builds its message in the
/// transport's memory); the echo is read in place.
pub fn client_in_place<T: LoanTx, R: LoanRx>(
    tx: &mut T,
    rx: &mut R,
    p: &LatencyParams,
) -> Result<Measurement, WorkloadError> {
    check_msg_bytes(p.msg_bytes)?;
    measure(p, |seq| {
        let mut loan = tx.loan(p.msg_bytes)?;
        stamp(&mut loan, seq);
        loan.commit();
        let back = rx.recv_borrowed()?;
        check_echo(seq, back.len(), &back, p.msg_bytes)
    })
}

fn check_echo(seq: u64, n: usize, back: &[u8], len: usize) -> Result<(), WorkloadError> {
    if n != len || n < SEQ_BYTES || seq_of(back) != seq {
        return Err(WorkloadError::Integrity(format!(
            "round trip {seq}: echo of {n} bytes with sequence {}, expected {len} bytes with sequence {seq}",
            if n >= SEQ_BYTES { seq_of(back) } else { u64::MAX },
        )));
    }
    Ok(())
}

/// Runs the warm-up and the measured round trips (`round_trip(seq)` does one), closed or
/// open loop, into a histogram.
fn measure(
    p: &LatencyParams,
    mut round_trip: impl FnMut(u64) -> Result<(), WorkloadError>,
) -> Result<Measurement, WorkloadError> {
    if !(p.rate >= 0.0 && p.rate.is_finite()) {
        return Err(WorkloadError::Param(format!(
            "rate {} must be a finite number >= 0",
            p.rate
        )));
    }
    let mut hist = new_histogram();
    for seq in 0..p.warmup {
        round_trip(seq)?;
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
        round_trip(seq)?;
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

/// The echoing side, zero-copy: reads each message in place and answers with a loan in
/// which it writes the sequence number it read (the payload is not copied).
pub fn echo_in_place<T: LoanTx, R: LoanRx>(
    tx: &mut T,
    rx: &mut R,
    p: &LatencyParams,
) -> Result<Measurement, WorkloadError> {
    check_msg_bytes(p.msg_bytes)?;
    let start = Instant::now();
    for _ in 0..p.warmup + p.count {
        let frame = rx.recv_borrowed()?;
        let n = frame.len();
        if n < SEQ_BYTES {
            return Err(WorkloadError::Integrity(format!(
                "a {n}-byte message has no sequence number"
            )));
        }
        let seq = seq_of(&frame);
        drop(frame);
        let mut reply = tx.loan(n)?;
        stamp(&mut reply, seq);
        reply.commit();
    }
    Ok(Measurement {
        count: p.count,
        bytes: p.count * p.msg_bytes as u64,
        duration: start.elapsed(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test, with its message.
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::over_shm;

    const P: LatencyParams = LatencyParams {
        msg_bytes: 100,
        count: 5_000,
        warmup: 100,
        rate: 0.0,
        zero_copy: true,
    };

    #[test]
    fn in_place_round_trips_are_all_recorded() {
        let (m, e) = over_shm(
            1024,
            |tx, rx| client_in_place(tx, rx, &P).unwrap(),
            |tx, rx| echo_in_place(tx, rx, &P).unwrap(),
        );
        assert_eq!(m.count, 5_000);
        assert_eq!(m.histogram.unwrap().len(), 5_000);
        assert_eq!(e.count, 5_000);
    }

    #[test]
    fn an_echo_with_the_wrong_sequence_fails_the_in_place_client() {
        let (e, ()) = over_shm(
            1024,
            |tx, rx| client_in_place(tx, rx, &P).unwrap_err(),
            |tx, rx| {
                let mut buf = [0u8; 100];
                // Until the client, failed, lets go of the rings.
                while let Ok(n) = rx.recv(&mut buf) {
                    let seq = seq_of(&buf) + u64::from(seq_of(&buf) == 7);
                    stamp(&mut buf, seq);
                    if tx.send(&buf[..n]).is_err() {
                        break;
                    }
                }
            },
        );
        assert!(
            matches!(&e, WorkloadError::Integrity(m) if m.contains("round trip 7")),
            "{e}"
        );
    }
}
