//! Error types: one enum per operation. The hot-path ones are `Copy` and allocation-free;
//! setup errors carry the path or address they concern.

use nix::errno::Errno;

/// Why a frame read from the peer cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// The length prefix claims more than the agreed maximum frame length.
    #[error("length prefix {len} exceeds the maximum frame length {max}")]
    LengthTooLarge {
        /// The claimed length.
        len: u64,
        /// The agreed maximum.
        max: usize,
    },
    /// The stream already failed earlier and cannot be resynchronised.
    #[error("stream broken by an earlier corrupt frame")]
    Broken,
    /// A shared-memory ring holds something its protocol cannot have written.
    #[error("shared ring: {0}")]
    Ring(ipcbench_ring::Corruption),
}

/// Error from [`crate::Tx::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The receiving side is gone.
    #[error("peer disconnected")]
    Disconnected,
    /// The frame is longer than [`crate::Tx::max_frame_len`]; nothing was sent.
    #[error("frame of {len} bytes exceeds the maximum frame length {max}")]
    FrameTooLarge {
        /// The frame's length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The shared state the frame would go into is corrupt.
    #[error("corrupt transport: {0}")]
    Corrupt(Corruption),
    /// A `queue` send queue stayed full for the whole of its policy's patience: the frame
    /// was given up, and counted.
    #[error("the send queue stayed full; frame dropped ({dropped} so far)")]
    Dropped {
        /// Frames given up so far, this one included.
        dropped: u64,
    },
    /// Any other system error.
    #[error("send failed: {0}")]
    Io(Errno),
}

/// Error from [`crate::Tx::try_send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError {
    /// The transport cannot take the frame now; nothing was sent.
    #[error("transport full")]
    Full,
    /// A failure that a blocking send would have had too.
    #[error(transparent)]
    Send(#[from] SendError),
}

/// Error from [`crate::Rx::recv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The sending side is gone and everything it sent has been received.
    #[error("peer disconnected")]
    Disconnected,
    /// The next frame is longer than the buffer given; it stays queued.
    #[error("frame of {needed} bytes does not fit the receive buffer")]
    Truncated {
        /// The buffer length that would hold the frame.
        needed: usize,
    },
    /// The peer wrote something that is not a valid frame.
    #[error("corrupt frame: {0}")]
    Corrupt(Corruption),
    /// Any other system error.
    #[error("receive failed: {0}")]
    Io(Errno),
}

/// Error from [`crate::Rx::try_recv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// No whole frame is there now.
    #[error("no frame available")]
    Empty,
    /// A failure that a blocking receive would have had too.
    #[error(transparent)]
    Recv(#[from] RecvError),
}

/// Error from [`crate::Rx::recv_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvTimeoutError {
    /// No whole frame arrived in time.
    #[error("timed out waiting for a frame")]
    Timeout,
    /// A failure that a blocking receive would have had too.
    #[error(transparent)]
    Recv(#[from] RecvError),
}

/// Error while preparing, listening on or connecting to an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A system call on a named resource failed.
    #[error("{what} {target}: {source}")]
    Io {
        /// What was being done ("mkfifo", "bind", "connect to", ...).
        what: &'static str,
        /// The path or address concerned.
        target: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The peer did not appear in time.
    #[error("{what} {target}: no peer within {timeout_ms} ms")]
    Timeout {
        /// What was being waited for.
        what: &'static str,
        /// The path or address concerned.
        target: String,
        /// How long was waited.
        timeout_ms: u128,
    },
    /// The peer answered, but not with an ipcbench handshake that matches ours.
    #[error("handshake with {target} failed: {reason}")]
    Handshake {
        /// The path or address concerned.
        target: String,
        /// What did not match.
        reason: String,
    },
    /// The endpoint is of another transport kind than the one asked to use it.
    #[error("endpoint is for transport `{found}`, not `{expected}`")]
    WrongKind {
        /// The kind that was asked.
        expected: crate::TransportKind,
        /// The endpoint's kind.
        found: crate::TransportKind,
    },
    /// An option is out of its range.
    #[error("invalid endpoint option: {0}")]
    Invalid(String),
}

impl SetupError {
    pub(crate) fn io(
        what: &'static str,
        target: impl std::fmt::Display,
        source: impl Into<std::io::Error>,
    ) -> Self {
        SetupError::Io {
            what,
            target: target.to_string(),
            source: source.into(),
        }
    }
}
