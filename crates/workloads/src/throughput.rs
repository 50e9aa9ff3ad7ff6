//! `throughput`: a one-way stream. The sender cycles through four pre-generated payloads,
//! stamping each frame with its sequence number; the receiver checks every sequence
//! number, every length and every payload byte against what was sent (an exact compare,
//! stronger than a checksum and, through the C library's vectorised `memcmp`, about 60 GB/s
//! here: cheap beside the transport's own copy), then acknowledges the last frame. The
//! sender's clock runs from its first measured send to that acknowledgement.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::{
    check_msg_bytes, fill_pattern, seq_of, stamp, Measurement, Rx, Tx, WorkloadError, SEQ_BYTES,
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
    let expected = patterns(p.msg_bytes);
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
        if buf[SEQ_BYTES..] != expected[seq as usize % PATTERNS][SEQ_BYTES..] {
            return Err(WorkloadError::Integrity(format!(
                "frame {seq}: payload differs from what was sent"
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

#[cfg(test)]
mod tests {
    use super::*;
    use ipcbench_transport::{Endpoint, EndpointOptions, Transport, TransportKind, Uds};
    use std::time::Duration;

    /// Runs the real receiver against a sender that alters frame 7 with `corrupt`.
    fn receive_with_fault(
        corrupt: impl FnOnce(&mut Vec<u8>, &mut u64) + Send + 'static,
    ) -> Result<Measurement, WorkloadError> {
        let dir = tempfile::tempdir().unwrap();
        let spec =
            Endpoint::prepare(TransportKind::Uds, dir.path(), &EndpointOptions::default()).unwrap();
        let listener = Uds::listen(&spec).unwrap();
        let resolved = Uds::resolved(&listener);
        let p = ThroughputParams {
            msg_bytes: 256,
            count: 20,
            warmup: 2,
        };
        let sender = std::thread::spawn(move || {
            let (mut tx, _rx) = Uds::connect(&resolved, Duration::from_secs(5)).unwrap();
            let bufs = patterns(p.msg_bytes);
            let mut corrupt = Some(corrupt);
            let mut seq = 0u64;
            while seq < p.warmup + p.count {
                let mut frame = bufs[seq as usize % PATTERNS].clone();
                let mut this = seq;
                if seq == 7 {
                    if let Some(c) = corrupt.take() {
                        c(&mut frame, &mut this);
                    }
                }
                stamp(&mut frame, this);
                if tx.send(&frame).is_err() {
                    break;
                }
                seq += 1;
            }
        });
        let (mut tx, mut rx) = Uds::accept(listener, Duration::from_secs(5)).unwrap();
        let result = receiver(&mut tx, &mut rx, &p);
        drop((tx, rx));
        sender.join().unwrap();
        result
    }

    fn integrity_message(r: Result<Measurement, WorkloadError>) -> String {
        match r {
            Err(WorkloadError::Integrity(m)) => m,
            other => panic!("expected an integrity failure, got {other:?}"),
        }
    }

    #[test]
    fn a_flipped_payload_byte_fails_the_run() {
        let m = integrity_message(receive_with_fault(|f, _| f[200] ^= 1));
        assert_eq!(m, "frame 7: payload differs from what was sent");
    }

    #[test]
    fn a_lost_frame_fails_the_run() {
        let m = integrity_message(receive_with_fault(|_, seq| *seq += 1));
        assert_eq!(
            m,
            "frame 7: sequence number 8 (lost, duplicated or reordered)"
        );
    }

    #[test]
    fn a_short_frame_fails_the_run() {
        let m = integrity_message(receive_with_fault(|f, _| f.truncate(100)));
        assert_eq!(m, "frame 7: 100 bytes, expected 256");
    }
}
