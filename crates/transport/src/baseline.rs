//! Bare baselines: the same system calls the framed stream transports make (`sendmsg` or
//! `writev` to send, `read` to receive, on the same connected descriptors), with no
//! framing, no length check, no buffering and no sequence check. The harness runs them
//! beside the framed transports so that the cost of ipcbench's own work is visible
//! (`bare = true` in a `latency` or `throughput` experiment).
//!
//! They read the descriptor directly, so they must start right after setup, while
//! [`StreamRx::buffered`] is 0 (the handshake never reads past the peer's hello).

use std::io::IoSlice;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::{RecvError, SendError, StreamRx, StreamTx};

/// A failure in a bare baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BaselineError {
    /// Sending failed.
    #[error(transparent)]
    Send(#[from] SendError),
    /// Receiving failed.
    #[error(transparent)]
    Recv(#[from] RecvError),
}

fn write_all(tx: &StreamTx, buf: &[u8]) -> Result<(), SendError> {
    let mut off = 0;
    while off < buf.len() {
        match tx.write_blocking(&[IoSlice::new(&buf[off..])]) {
            Ok(n) => off += n,
            Err(Errno::EINTR) => {}
            Err(Errno::EPIPE | Errno::ECONNRESET) => return Err(SendError::Disconnected),
            Err(e) => return Err(SendError::Io(e)),
        }
    }
    Ok(())
}

fn read_exact(rx: &StreamRx, buf: &mut [u8]) -> Result<(), RecvError> {
    let mut off = 0;
    while off < buf.len() {
        match nix::unistd::read(rx.fd(), &mut buf[off..]) {
            Ok(0) => return Err(RecvError::Disconnected),
            Ok(n) => off += n,
            Err(Errno::EINTR) => {}
            Err(Errno::ECONNRESET) => return Err(RecvError::Disconnected),
            Err(e) => return Err(RecvError::Io(e)),
        }
    }
    Ok(())
}

/// `iterations` round trips of `msg.len()` bytes; `record` gets each one's nanoseconds.
pub fn roundtrips(
    tx: &StreamTx,
    rx: &StreamRx,
    msg: &mut [u8],
    iterations: u64,
    mut record: impl FnMut(u64),
) -> Result<Duration, BaselineError> {
    let start = Instant::now();
    for _ in 0..iterations {
        let t0 = Instant::now();
        write_all(tx, msg)?;
        read_exact(rx, msg)?;
        record(t0.elapsed().as_nanos() as u64);
    }
    Ok(start.elapsed())
}

/// The other side of [`roundtrips`]: echoes `iterations` messages of `msg.len()` bytes.
pub fn echo(
    tx: &StreamTx,
    rx: &StreamRx,
    msg: &mut [u8],
    iterations: u64,
) -> Result<(), BaselineError> {
    for _ in 0..iterations {
        read_exact(rx, msg)?;
        write_all(tx, msg)?;
    }
    Ok(())
}

/// Streams `count` messages, then waits for the receiver's one-byte acknowledgement.
/// Returns the time from the first write to the acknowledgement.
pub fn stream_send(
    tx: &StreamTx,
    rx: &StreamRx,
    msg: &[u8],
    count: u64,
) -> Result<Duration, BaselineError> {
    let start = Instant::now();
    for _ in 0..count {
        write_all(tx, msg)?;
    }
    read_exact(rx, &mut [0u8; 1])?;
    Ok(start.elapsed())
}

/// Receives `count` messages of `msg.len()` bytes, then acknowledges with one byte.
pub fn stream_recv(
    tx: &StreamTx,
    rx: &StreamRx,
    msg: &mut [u8],
    count: u64,
) -> Result<(), BaselineError> {
    for _ in 0..count {
        read_exact(rx, msg)?;
    }
    write_all(tx, &[1])?;
    Ok(())
}
