//! What the library peers (`mq`, `zmq`, `iceoryx2`) share: the handshake that tells each
//! side the other's process id (their libraries do not say when a peer is gone), and the
//! receive loops built on one bounded attempt, which wake at least every
//! [`LIVENESS`] to check the peer.

use std::time::{Duration, Instant};

use crate::{RecvError, RecvTimeoutError, SetupError, TryRecvError};

/// How often a waiting half of a peer checks that its peer still runs.
pub const LIVENESS: Duration = Duration::from_millis(50);

/// Bytes of a hello: an 8-byte magic naming the peer, then the sender's process id.
pub const HELLO_LEN: usize = 12;

/// The hello of one kind of peer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hello {
    /// The 8-byte magic (`IPCB-MQ1`, ...).
    pub magic: &'static [u8; 8],
    /// The peer's name in errors.
    pub name: &'static str,
}

impl Hello {
    /// This process's hello.
    pub fn bytes(self) -> [u8; HELLO_LEN] {
        let mut h = [0u8; HELLO_LEN];
        h[..8].copy_from_slice(self.magic);
        h[8..].copy_from_slice(&std::process::id().to_le_bytes());
        h
    }

    /// The peer's process id from its hello `m`.
    pub fn parse(self, m: &[u8], target: &str) -> Result<u32, SetupError> {
        if m.len() != HELLO_LEN || &m[..8] != self.magic {
            return Err(SetupError::Handshake {
                target: target.to_string(),
                reason: format!(
                    "expected an ipcbench {} hello, got {} bytes",
                    self.name,
                    m.len()
                ),
            });
        }
        Ok(u32::from_le_bytes([m[8], m[9], m[10], m[11]]))
    }
}

/// A receiving half that can make one receive, waiting at most `wait` (or not at all),
/// and say `Ok(None)` when nothing came; the loops below give it the `Rx` methods.
pub(crate) trait Attempt {
    fn attempt(
        &mut self,
        buf: &mut [u8],
        wait: Option<Duration>,
    ) -> Result<Option<usize>, RecvError>;
}

/// `Rx::recv` from attempts of at most [`LIVENESS`].
pub(crate) fn recv(rx: &mut impl Attempt, buf: &mut [u8]) -> Result<usize, RecvError> {
    loop {
        if let Some(n) = rx.attempt(buf, Some(LIVENESS))? {
            return Ok(n);
        }
    }
}

/// `Rx::try_recv` from one attempt that does not wait.
pub(crate) fn try_recv(rx: &mut impl Attempt, buf: &mut [u8]) -> Result<usize, TryRecvError> {
    rx.attempt(buf, None)?.ok_or(TryRecvError::Empty)
}

/// `Rx::recv_timeout` from attempts of at most [`LIVENESS`] until `timeout`.
pub(crate) fn recv_timeout(
    rx: &mut impl Attempt,
    buf: &mut [u8],
    timeout: Duration,
) -> Result<usize, RecvTimeoutError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Some(n) = rx.attempt(buf, Some(left.min(LIVENESS)))? {
            return Ok(n);
        }
        if left.is_zero() {
            return Err(RecvTimeoutError::Timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_says_whose_it_is_and_is_checked() {
        let h = Hello {
            magic: b"IPCB-TST",
            name: "test",
        };
        assert_eq!(h.parse(&h.bytes(), "t").ok(), Some(std::process::id()));
        let other = Hello {
            magic: b"IPCB-OTH",
            name: "other",
        };
        assert!(h.parse(&other.bytes(), "t").is_err());
        assert!(h.parse(&h.bytes()[..11], "t").is_err());
    }
}
