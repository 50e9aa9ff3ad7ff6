//! `throughput`: a one-way stream. The sender cycles through four pre-generated payloads,
//! stamping each frame with its sequence number; the receiver checks every sequence
//! number, every length and a checksum of every payload, then acknowledges the last frame.
//! The sender's clock runs from its first measured send to that acknowledgement.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::{
    check_msg_bytes, checksum, fill_pattern, seq_of, stamp, Measurement, Rx, Tx, WorkloadError,
    SEQ_BYTES,
};

/// Parameters of a throughput run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThroughputParams {
    /// Message size in bytes (at least 8: the sequence number).
    pub msg_bytes: usize,
    /// Messages measured.
    pub count: u64,
    /// Messages sent before the clock starts.
    pub warmup: u64,
}

const PATTERNS: usize = 4;

fn patterns(msg_bytes: usize) -> Vec<Vec<u8>> {
    (0..PATTERNS)
        .map(|i| {
            let mut b = vec![0u8; msg_bytes];
            fill_pattern(&mut b, 0x7b0 + i as u64);
            b
        })
        .collect()
}

const ACK: &[u8] = b"ipcbench-ack";

/// Streams `warmup + count` frames and waits for the receiver's acknowledgement.
pub fn sender<T: Tx, R: Rx>(
    tx: &mut T,
    rx: &mut R,
    p: &ThroughputParams,
) -> Result<Measurement, WorkloadError> {
    check_msg_bytes(p.msg_bytes)?;
    let mut bufs = patterns(p.msg_bytes);
    for seq in 0..p.warmup {
        let b = &mut bufs[seq as usize % PATTERNS];
        stamp(b, seq);
        tx.send(b)?;
    }
    let start = Instant::now();
    for seq in p.warmup..p.warmup + p.count {
        let b = &mut bufs[seq as usize % PATTERNS];
        stamp(b, seq);
        tx.send(b)?;
    }
    let mut ack = [0u8; 16];
    let n = rx.recv(&mut ack)?;
    let duration = start.elapsed();
    if &ack[..n] != ACK {
        return Err(WorkloadError::Integrity(
            "the receiver's acknowledgement is not what it should be".into(),
        ));
    }
    Ok(Measurement {
        count: p.count,
        bytes: p.count * p.msg_bytes as u64,
        duration,
        ..Default::default()
    })
}

/// Receives and checks `warmup + count` frames, then acknowledges.
pub fn receiver<T: Tx, R: Rx>(
    tx: &mut T,
    rx: &mut R,
    p: &ThroughputParams,
) -> Result<Measurement, WorkloadError> {
    check_msg_bytes(p.msg_bytes)?;
    let expected: Vec<u64> = patterns(p.msg_bytes)
        .iter()
        .map(|b| checksum(&b[SEQ_BYTES..]))
        .collect();
    let mut buf = vec![0u8; p.msg_bytes];
    let mut start = Instant::now();
    for seq in 0..p.warmup + p.count {
        if seq == p.warmup {
            start = Instant::now();
        }
        let n = rx.recv(&mut buf)?;
        if n != p.msg_bytes {
            return Err(WorkloadError::Integrity(format!(
                "frame {seq}: {n} bytes, expected {}",
                p.msg_bytes
            )));
        }
        let got = seq_of(&buf);
        if got != seq {
            return Err(WorkloadError::Integrity(format!(
                "frame {seq}: sequence number {got} (lost, duplicated or reordered)"
            )));
        }
        if checksum(&buf[SEQ_BYTES..]) != expected[seq as usize % PATTERNS] {
            return Err(WorkloadError::Integrity(format!(
                "frame {seq}: payload checksum mismatch"
            )));
        }
    }
    let duration = start.elapsed();
    tx.send(ACK)?;
    Ok(Measurement {
        count: p.count,
        bytes: p.count * p.msg_bytes as u64,
        duration,
        ..Default::default()
    })
}
