//! ipcbench-transport: how ipcbench moves frames between two processes.
//!
//! A transport is a pair of halves split by direction, [`Tx`] and [`Rx`], both taking
//! `&mut self`. Setup is separate from transfer: the parent process prepares an
//! [`Endpoint`] (creating FIFOs, choosing a socket path or a loopback address), one role
//! *listens* on it and hands the resolved endpoint back to the parent, the other role
//! *connects*. Every transport here frames with a little-endian `u32` length prefix and
//! checks it: a claimed length over the maximum is [`Corruption::LengthTooLarge`], never an
//! allocation of what the peer claims.
//!
//! ```
//! use std::time::Duration;
//! use ipcbench_transport::{Endpoint, EndpointOptions, Rx, Transport, TransportKind, Tx, Uds};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let spec = Endpoint::prepare(TransportKind::Uds, dir.path(), &EndpointOptions::default()).unwrap();
//! let listener = Uds::listen(&spec).unwrap();
//! let resolved = Uds::resolved(&listener);
//! // In ipcbench the connecting side is another process; a thread shows the same calls.
//! let peer = std::thread::spawn(move || {
//!     let (mut tx, mut rx) = Uds::connect(&resolved, Duration::from_secs(5)).unwrap();
//!     let mut buf = [0u8; 64];
//!     let n = rx.recv(&mut buf).unwrap();
//!     tx.send(&buf[..n]).unwrap();
//! });
//! let (mut tx, mut rx) = Uds::accept(listener, Duration::from_secs(5)).unwrap();
//! tx.send(b"ping").unwrap();
//! let mut buf = [0u8; 64];
//! let n = rx.recv(&mut buf).unwrap();
//! assert_eq!(&buf[..n], b"ping");
//! peer.join().unwrap();
//! ```
#![deny(unsafe_code)]

use std::time::Duration;

pub mod baseline;
pub mod dispatch;
mod endpoint;
mod error;
#[cfg(feature = "iceoryx2")]
mod iox;
pub mod mq;
pub mod names;
mod peer;
pub mod pool;
pub mod process;
pub mod queue;
pub mod segment;
mod shm;
mod stream;
mod sys;
#[cfg(feature = "zmq")]
mod zeromq;

pub use endpoint::{
    Endpoint, EndpointOptions, TransportKind, WaitStrategy, ZmqPattern, DEFAULT_MAX_FRAME,
};
pub use error::{
    Corruption, RecvError, RecvTimeoutError, SendError, SetupError, TryRecvError, TrySendError,
};
#[cfg(feature = "iceoryx2")]
pub use iox::{Iceoryx2, Iceoryx2Local, IoxRx, IoxRxOf, IoxTx, IoxTxOf};
pub use mq::{Mq, MqRx, MqTx};
pub use queue::{Queue, QueueTx};
pub use shm::{shm_max_frame, SegmentRegion, Shm, ShmFrame, ShmListener, ShmLoan, ShmRx, ShmTx};
pub use stream::{Pipe, StreamRx, StreamTx, Tcp, Uds};
#[cfg(feature = "zmq")]
pub use zeromq::pattern as zmq_pattern;
#[cfg(feature = "zmq")]
pub use zeromq::{Zmq, ZmqRx, ZmqTx};

/// Samples an `iceoryx2` subscriber buffers (its service's `subscriber_max_buffer_size`).
pub const IOX_BUFFER: usize = 16;

/// The sending half of a transport.
pub trait Tx {
    /// Sends one frame, blocking until the transport has accepted all of it.
    fn send(&mut self, frame: &[u8]) -> Result<(), SendError>;
    /// Sends one frame if the transport can accept it now; never blocks.
    ///
    /// `Err(TrySendError::Full)` means nothing of the frame was sent. `Ok` means the frame
    /// is accepted whole, but on a stream transport its tail may wait inside this half
    /// (the kernel took only part of it); it goes out, ahead of anything else, with the
    /// next `send`, `try_send` or [`Tx::flush`]. A caller that stops sending and waits for
    /// an answer calls `flush` first, as with a buffered writer.
    fn try_send(&mut self, frame: &[u8]) -> Result<(), TrySendError>;
    /// Sends `frames` in order, as `send` would each, with as few system calls as the
    /// transport can (a stream writes them all with one `writev`). Every frame's length
    /// is checked before any is sent.
    fn send_batch(&mut self, frames: &[&[u8]]) -> Result<(), SendError> {
        for f in frames {
            self.send(f)?;
        }
        Ok(())
    }
    /// Blocks until every accepted frame has been handed to the transport.
    fn flush(&mut self) -> Result<(), SendError> {
        Ok(())
    }
    /// The longest frame this half accepts.
    fn max_frame_len(&self) -> usize;
}

/// The receiving half of a transport.
pub trait Rx {
    /// Receives one frame into `buf`, blocking until one arrives; returns its length.
    ///
    /// A frame longer than `buf` is `Err(RecvError::Truncated { needed })` and stays
    /// queued: a second call with a buffer of `needed` bytes receives it whole.
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, RecvError>;
    /// Receives one frame if a whole one is there now; never blocks.
    fn try_recv(&mut self, buf: &mut [u8]) -> Result<usize, TryRecvError>;
    /// Receives one frame, waiting at most `timeout` for it.
    fn recv_timeout(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, RecvTimeoutError>;
    /// The longest frame this half can receive.
    fn max_frame_len(&self) -> usize;
}

/// Zero-copy sending, for the transports that can: the frame is written in place in the
/// transport's own memory instead of being copied in from a buffer.
pub trait LoanTx: Tx {
    /// A writable frame inside the transport.
    type Loan<'a>: TxLoan
    where
        Self: 'a;
    /// Waits for room for a `len`-byte frame and lends it out (its bytes are whatever the
    /// memory held: write all of them). [`TxLoan::commit`] sends it; dropping the loan
    /// sends nothing.
    fn loan(&mut self, len: usize) -> Result<Self::Loan<'_>, SendError>;
}

/// A frame lent by [`LoanTx::loan`]: its bytes, then `commit`.
pub trait TxLoan: std::ops::DerefMut<Target = [u8]> {
    /// Sends the frame as it now stands.
    fn commit(self);
}

/// Zero-copy receiving, for the transports that can: the frame is read in place.
pub trait LoanRx: Rx {
    /// A received frame borrowed from the transport; dropping it frees its room.
    type Frame<'a>: std::ops::Deref<Target = [u8]>
    where
        Self: 'a;
    /// Waits for the next frame and lends it in place.
    fn recv_borrowed(&mut self) -> Result<Self::Frame<'_>, RecvError>;
}

/// How the two halves of a connection are set up from an [`Endpoint`], for a role that
/// keeps both on its own thread: every [`Transport`] (through the blanket impl), and the
/// setups whose halves cannot move between threads ([`Iceoryx2Local`]).
pub trait Link {
    /// The sending half.
    type Tx: Tx;
    /// The receiving half.
    type Rx: Rx;
    /// A bound, not yet connected, listening side.
    type Listener;
    /// Binds or opens the listening side of `endpoint`.
    fn listen(endpoint: &Endpoint) -> Result<Self::Listener, SetupError>;
    /// The endpoint the connecting side must use.
    fn resolved(listener: &Self::Listener) -> Endpoint;
    /// Waits at most `timeout` for the peer, then checks the handshake.
    fn accept(
        listener: Self::Listener,
        timeout: Duration,
    ) -> Result<(Self::Tx, Self::Rx), SetupError>;
    /// Connects to a listening peer, retrying until `timeout`, then checks the handshake.
    fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<(Self::Tx, Self::Rx), SetupError>;
}

impl<T: Transport> Link for T {
    type Tx = T::Tx;
    type Rx = T::Rx;
    type Listener = T::Listener;
    fn listen(endpoint: &Endpoint) -> Result<Self::Listener, SetupError> {
        T::listen(endpoint)
    }
    fn resolved(listener: &Self::Listener) -> Endpoint {
        T::resolved(listener)
    }
    fn accept(
        listener: Self::Listener,
        timeout: Duration,
    ) -> Result<(Self::Tx, Self::Rx), SetupError> {
        T::accept(listener, timeout)
    }
    fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<(Self::Tx, Self::Rx), SetupError> {
        T::connect(endpoint, timeout)
    }
}

/// A kind of transport: how its two halves are set up from an [`Endpoint`].
///
/// The harness matches on the configured [`TransportKind`] once and calls code generic
/// over `T: Transport`, so timed loops use the concrete halves, never `dyn`.
pub trait Transport {
    /// Which kind this is.
    const KIND: TransportKind;
    /// The sending half.
    type Tx: Tx + Send + 'static;
    /// The receiving half.
    type Rx: Rx + Send + 'static;
    /// A bound, not yet connected, listening side.
    type Listener: Send;

    /// Creates what an endpoint of this kind needs inside `dir` (see
    /// [`Endpoint::prepare`]).
    fn prepare(dir: &std::path::Path, opts: &EndpointOptions) -> Result<Endpoint, SetupError> {
        Endpoint::prepare(Self::KIND, dir, opts)
    }
    /// Binds or opens the listening side of `endpoint`.
    fn listen(endpoint: &Endpoint) -> Result<Self::Listener, SetupError>;
    /// The endpoint the connecting side must use (a TCP port the OS chose, for example).
    fn resolved(listener: &Self::Listener) -> Endpoint;
    /// Waits at most `timeout` for the peer, then checks the handshake.
    fn accept(
        listener: Self::Listener,
        timeout: Duration,
    ) -> Result<(Self::Tx, Self::Rx), SetupError>;
    /// Completes the connection if the peer has already arrived and said its part of the
    /// handshake; otherwise gives the listener back at once (keeping a peer that has
    /// connected but not said hello yet, for the next call). Never waits for the peer
    /// (except a FIFO pair's opening: `pipe` completes with [`Transport::accept`] once the
    /// peer has opened its end); a peer whose hello has not come `timeout` after it
    /// connected is an error. For a role that listens for peers that come and go at their
    /// own pace (`queue`'s workers).
    #[allow(clippy::type_complexity)]
    fn try_accept(
        listener: Self::Listener,
        timeout: Duration,
    ) -> Result<Result<(Self::Tx, Self::Rx), Self::Listener>, SetupError>;
    /// A descriptor that turns readable when [`Transport::try_accept`] on `listener` may
    /// get further (a peer connecting, or the hello of one it holds), so that many
    /// listeners can be watched with one `poll`; `None` for a kind without one (call
    /// `try_accept` to know).
    fn accept_fd(listener: &Self::Listener) -> Option<std::os::fd::BorrowedFd<'_>> {
        let _ = listener;
        None
    }
    /// Connects to a listening peer, retrying until `timeout`, then checks the handshake.
    fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<(Self::Tx, Self::Rx), SetupError>;
}
