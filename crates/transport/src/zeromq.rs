//! `zmq`: libzmq (through the `zmq` crate, which builds libzmq 4.3 from source) as a peer
//! transport: a `PAIR` socket, or a `PUSH`/`PULL` pair of sockets (one per direction),
//! over `ipc://` (a socket file in the run's private directory) or `tcp://` (loopback
//! unless configured, an OS-chosen port).
//!
//! Side A binds, side B connects; each frame is one ZeroMQ message, sent with `zmq_send`
//! (libzmq copies it) and received with `zmq_recv` into the caller's buffer. Both sides'
//! high-water marks (`SNDHWM`, `RCVHWM`) are the `hwm` key's; a receiving socket refuses
//! messages over the largest frame (`MAXMSGSIZE`); `LINGER` is 10 s, so a closing side
//! waits at most that long for its last messages to leave (a slow reader loses nothing,
//! a dead one holds nothing for ever).
//!
//! Where ZeroMQ differs from the [`Tx`]/[`Rx`] contract, this module makes up the
//! difference, so a caller sees the trait's documented behaviour:
//! - **Peer exit.** ZeroMQ reconnects quietly and never tells a socket that its peer is
//!   gone. A sending half that is dropped sends a goodbye, a two-part message whose first
//!   part is empty (every frame is one part), which the peer reads as `Disconnected` after
//!   every frame before it, and acknowledges; a side whose halves are both dropped waits
//!   (at most 5 s, and only while the peer runs) for that acknowledgement before its
//!   sockets close, since libzmq may drop what a receiver has not read yet when its
//!   sender disconnects; a peer killed before it could say goodbye is found by its
//!   process id, exchanged in the handshake: blocking waits wake at least every
//!   [`LIVENESS`] to check it still runs, and once it is gone `Disconnected` comes after
//!   200 ms with nothing arriving (what it sent may still be in the kernel or libzmq's
//!   I/O thread). (Between hosts a process id means nothing: this
//!   check is for roles on one host.)
//! - **Truncation.** `zmq_recv` into a short buffer drops the rest of the message; a
//!   buffer shorter than the largest frame is therefore filled from a message taken whole
//!   into this half's own `zmq::Message`, and a message longer than the buffer stays
//!   there for the next call with `needed` bytes.
//! - **Framing.** Messages keep their boundaries in libzmq: there is no length prefix of
//!   ours to corrupt.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;

pub mod pattern;

use crate::peer::{Attempt, Hello, HELLO_LEN};
use crate::{
    Endpoint, EndpointOptions, RecvError, RecvTimeoutError, Rx, SendError, SetupError, Transport,
    TransportKind, TryRecvError, TrySendError, Tx, ZmqPattern,
};

pub use crate::peer::LIVENESS;

/// How long frames of a peer that is gone may still take to arrive.
const GRACE: Duration = Duration::from_millis(200);

/// How long a closing socket waits for its last messages to leave, ms: a slow reader
/// (a loaded machine) must not lose the end of a stream, and a dead one must not hold
/// the process for ever.
const LINGER_MS: i32 = 10_000;

/// How long a dropped sending half waits for room for its goodbye (checking that the
/// peer still runs).
const GOODBYE_WAIT: Duration = Duration::from_secs(5);

/// The handshake: a magic and the sender's process id.
const HELLO: Hello = Hello {
    magic: b"IPCB-ZMQ",
    name: "zmq",
};

/// The longest `ipc://` path libzmq takes (a Unix socket's `sun_path`, less its NUL).
const IPC_PATH_MAX: usize = 107;

/// libzmq as a peer transport.
#[derive(Debug, Clone, Copy)]
pub struct Zmq;

fn errno(e: zmq::Error) -> Errno {
    Errno::from_raw(e.to_raw())
}

fn setup(what: &'static str, target: &str, e: zmq::Error) -> SetupError {
    SetupError::io(what, target, std::io::Error::from_raw_os_error(e.to_raw()))
}

/// Makes the addresses of a `zmq` endpoint in `dir` (see the module's documentation).
pub(crate) fn prepare(
    dir: &std::path::Path,
    opts: &EndpointOptions,
) -> Result<Endpoint, SetupError> {
    let addr = |name: &str| -> Result<String, SetupError> {
        match opts.over {
            TransportKind::Uds => {
                let path = dir.join(name);
                let text = path.to_string_lossy().into_owned();
                if text.len() > IPC_PATH_MAX {
                    return Err(SetupError::Invalid(format!(
                        "ipc path {text} is over {IPC_PATH_MAX} bytes (set TMPDIR to a shorter directory)"
                    )));
                }
                Ok(format!("ipc://{text}"))
            }
            TransportKind::Tcp => Ok(match opts.tcp_host {
                std::net::IpAddr::V4(ip) => format!("tcp://{ip}:*"),
                std::net::IpAddr::V6(ip) => format!("tcp://[{ip}]:*"),
            }),
            other => Err(SetupError::Invalid(format!(
                "zmq runs over uds (ipc://) or tcp, not {other}"
            ))),
        }
    };
    Ok(Endpoint::Zmq {
        pattern: opts.zmq_pattern,
        a: addr("zmq-a.sock")?,
        b: addr("zmq-b.sock")?,
        max_frame: opts.max_frame,
        hwm: opts.hwm,
    })
}

type Shared = Arc<Mutex<zmq::Socket>>;

/// The sockets of one side: where it sends and where it receives (the same `PAIR`
/// socket, or a `PUSH` and a `PULL`). Fields drop in order: the sockets before the
/// context, whose end waits for them.
struct Sockets {
    send: Shared,
    recv: Shared,
    ctx: zmq::Context,
}

fn lock(s: &Shared) -> MutexGuard<'_, zmq::Socket> {
    // A panic while holding it cannot leave a socket half changed: take it anyway.
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn socket(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    max_frame: u32,
    hwm: u32,
    target: &str,
) -> Result<zmq::Socket, SetupError> {
    let s = ctx
        .socket(kind)
        .map_err(|e| setup("zmq_socket", target, e))?;
    let hwm = i32::try_from(hwm).unwrap_or(i32::MAX);
    s.set_sndhwm(hwm)
        .and_then(|_| s.set_rcvhwm(hwm))
        .and_then(|_| s.set_linger(LINGER_MS))
        // The hello is the largest message besides frames.
        .and_then(|_| s.set_maxmsgsize(i64::from(max_frame).max(HELLO_LEN as i64)))
        .map_err(|e| setup("zmq_setsockopt", target, e))?;
    Ok(s)
}

fn parts(endpoint: &Endpoint) -> Result<(ZmqPattern, &str, &str, u32, u32), SetupError> {
    match endpoint {
        Endpoint::Zmq {
            pattern,
            a,
            b,
            max_frame,
            hwm,
        } => Ok((*pattern, a, b, *max_frame, *hwm)),
        other => Err(SetupError::WrongKind {
            expected: TransportKind::Zmq,
            found: other.kind(),
        }),
    }
}

fn last_endpoint(s: &zmq::Socket, target: &str) -> Result<String, SetupError> {
    s.get_last_endpoint()
        .map_err(|e| setup("zmq_getsockopt", target, e))?
        .map_err(|_| SetupError::Invalid(format!("{target}: bound address is not UTF-8")))
}

/// Opens side A (binds) or B (connects) of `endpoint`; for A, the endpoint with the
/// addresses it bound (a TCP port the OS chose).
fn open(endpoint: &Endpoint, listens: bool) -> Result<(Sockets, Endpoint), SetupError> {
    let (pattern, a, b, max_frame, hwm) = parts(endpoint)?;
    let ctx = zmq::Context::new();
    let target = endpoint.to_string();
    let mut resolved = endpoint.clone();
    let sockets = match pattern {
        ZmqPattern::Pair => {
            let s = socket(&ctx, zmq::PAIR, max_frame, hwm, &target)?;
            if listens {
                s.bind(a).map_err(|e| setup("zmq_bind", a, e))?;
                if let Endpoint::Zmq { a: ra, .. } = &mut resolved {
                    *ra = last_endpoint(&s, a)?;
                }
            } else {
                s.connect(a).map_err(|e| setup("zmq_connect", a, e))?;
            }
            let s = Arc::new(Mutex::new(s));
            Sockets {
                send: s.clone(),
                recv: s,
                ctx,
            }
        }
        ZmqPattern::PushPull => {
            // A pulls on `a` and pushes on `b`; B the other way round.
            let push = socket(&ctx, zmq::PUSH, max_frame, hwm, &target)?;
            let pull = socket(&ctx, zmq::PULL, max_frame, hwm, &target)?;
            if listens {
                pull.bind(a).map_err(|e| setup("zmq_bind", a, e))?;
                push.bind(b).map_err(|e| setup("zmq_bind", b, e))?;
                if let Endpoint::Zmq { a: ra, b: rb, .. } = &mut resolved {
                    *ra = last_endpoint(&pull, a)?;
                    *rb = last_endpoint(&push, b)?;
                }
            } else {
                push.connect(a).map_err(|e| setup("zmq_connect", a, e))?;
                pull.connect(b).map_err(|e| setup("zmq_connect", b, e))?;
            }
            Sockets {
                send: Arc::new(Mutex::new(push)),
                recv: Arc::new(Mutex::new(pull)),
                ctx,
            }
        }
    };
    Ok((sockets, resolved))
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(60_000) as i64
}

fn send_hello(
    s: &Shared,
    deadline: Instant,
    target: &str,
    timeout: Duration,
) -> Result<(), SetupError> {
    loop {
        let sock = lock(s);
        match sock.send(&HELLO.bytes()[..], zmq::DONTWAIT) {
            Ok(()) => return Ok(()),
            Err(zmq::Error::EAGAIN) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(SetupError::Timeout {
                        what: "room for the hello on",
                        target: target.to_string(),
                        timeout_ms: timeout.as_millis(),
                    });
                }
                let _ = sock.poll(zmq::POLLOUT, ms(left.min(LIVENESS)));
            }
            Err(e) => return Err(setup("zmq_send", target, e)),
        }
    }
}

/// Waits until `deadline` for the peer's hello; its process id. `None` for a deadline
/// already past with no hello there.
fn take_hello(s: &Shared, deadline: Instant, target: &str) -> Result<Option<u32>, SetupError> {
    let mut buf = [0u8; HELLO_LEN + 1];
    loop {
        let sock = lock(s);
        match sock.recv_into(&mut buf, zmq::DONTWAIT) {
            Ok(n) => return HELLO.parse(&buf[..n.min(buf.len())], target).map(Some),
            Err(zmq::Error::EAGAIN) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(None);
                }
                let _ = sock.poll(zmq::POLLIN, ms(left.min(LIVENESS)));
            }
            Err(e) => return Err(setup("zmq_recv", target, e)),
        }
    }
}

/// What both halves of a side share: the sockets, the peer, and the end of the
/// conversation. When both halves are gone it waits (bounded) for the peer to have read
/// everything (see [`Side`]'s `Drop`) before the sockets close.
struct Side {
    send: Shared,
    recv: Shared,
    peer: u32,
    /// The peer said goodbye, or is gone.
    closed: AtomicBool,
    /// The peer acknowledged this side's goodbye: it read every frame before it.
    acked: AtomicBool,
    /// Fields drop in order: the sockets above before the context, whose end waits for
    /// them.
    _ctx: zmq::Context,
}

/// The two-part messages of the end of a conversation (no frame has two parts): a
/// sending half's goodbye, and the acknowledgement of one.
const BYE: &[u8] = b"bye";
const ACK: &[u8] = b"ack";

fn send_two_part(s: &zmq::Socket, second: &[u8]) -> bool {
    s.send(&[][..], zmq::DONTWAIT | zmq::SNDMORE).is_ok() && s.send(second, zmq::DONTWAIT).is_ok()
}

impl Side {
    fn peer_left(&self) -> bool {
        self.closed.load(Ordering::Relaxed) || crate::sys::gone(self.peer)
    }

    /// The peer's goodbye was read: acknowledge it (best effort: a peer that gets no
    /// answer stops waiting when its bound runs out).
    fn acknowledge(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let sock = lock(&self.send);
        let _ = send_two_part(&sock, ACK);
    }
}

impl Drop for Side {
    /// Both halves are gone: until the peer has acknowledged this side's goodbye (so it
    /// read every frame; libzmq may drop what a receiver has not read when its sender
    /// disconnects), read what comes, answering the peer's own goodbye, for at most
    /// [`GOODBYE_WAIT`] and only while the peer runs.
    fn drop(&mut self) {
        let deadline = Instant::now() + GOODBYE_WAIT;
        let mut msg = zmq::Message::new();
        while !self.acked.load(Ordering::Relaxed)
            && Instant::now() < deadline
            && !crate::sys::gone(self.peer)
        {
            let sock = lock(&self.recv);
            match sock.recv(&mut msg, zmq::DONTWAIT) {
                Ok(()) if msg.is_empty() && sock.get_rcvmore().unwrap_or(false) => {
                    let _ = sock.recv(&mut msg, zmq::DONTWAIT);
                    if &msg[..] == ACK {
                        self.acked.store(true, Ordering::Relaxed);
                    } else {
                        drop(sock);
                        self.acknowledge();
                    }
                }
                // A frame nobody will read.
                Ok(()) => {}
                Err(_) => {
                    let _ = sock.poll(zmq::POLLIN, ms(LIVENESS));
                }
            }
        }
    }
}

/// The sending half of a `zmq` endpoint.
pub struct ZmqTx {
    side: Arc<Side>,
    max_frame: usize,
}

/// The receiving half of a `zmq` endpoint.
pub struct ZmqRx {
    side: Arc<Side>,
    max_frame: usize,
    /// A message taken whole and not yet handed over (its length in `held`).
    msg: zmq::Message,
    held: Option<usize>,
    /// When the peer was first found gone, since the last frame.
    gone_since: Option<Instant>,
}

impl std::fmt::Debug for ZmqTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZmqTx")
            .field("peer", &self.side.peer)
            .finish()
    }
}

impl std::fmt::Debug for ZmqRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZmqRx")
            .field("peer", &self.side.peer)
            .finish()
    }
}

fn halves(s: Sockets, peer: u32, max_frame: usize) -> (ZmqTx, ZmqRx) {
    let Sockets { send, recv, ctx } = s;
    let side = Arc::new(Side {
        send,
        recv,
        peer,
        closed: AtomicBool::new(false),
        acked: AtomicBool::new(false),
        _ctx: ctx,
    });
    (
        ZmqTx {
            side: side.clone(),
            max_frame,
        },
        ZmqRx {
            side,
            max_frame,
            msg: zmq::Message::new(),
            held: None,
            gone_since: None,
        },
    )
}

impl Tx for ZmqTx {
    fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        loop {
            match self.try_send(frame) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full) => {
                    let ready = lock(&self.side.send).poll(zmq::POLLOUT, ms(LIVENESS));
                    if !matches!(ready, Ok(n) if n > 0) && self.side.peer_left() {
                        return Err(SendError::Disconnected);
                    }
                }
                Err(TrySendError::Send(e)) => return Err(e),
            }
        }
    }
    fn try_send(&mut self, frame: &[u8]) -> Result<(), TrySendError> {
        if frame.len() > self.max_frame {
            return Err(SendError::FrameTooLarge {
                len: frame.len(),
                max: self.max_frame,
            }
            .into());
        }
        match lock(&self.side.send).send(frame, zmq::DONTWAIT) {
            Ok(()) => Ok(()),
            Err(zmq::Error::EAGAIN) => {
                if self.side.peer_left() {
                    Err(SendError::Disconnected.into())
                } else {
                    Err(TrySendError::Full)
                }
            }
            Err(e) => Err(SendError::Io(errno(e)).into()),
        }
    }
    fn max_frame_len(&self) -> usize {
        self.max_frame
    }
}

impl Drop for ZmqTx {
    /// Says goodbye after every frame: waits for room at most [`GOODBYE_WAIT`], and not
    /// at all for a peer that is gone.
    fn drop(&mut self) {
        let sock = lock(&self.side.send);
        let deadline = Instant::now() + GOODBYE_WAIT;
        while !send_two_part(&sock, BYE) {
            if Instant::now() >= deadline || crate::sys::gone(self.side.peer) {
                // Nobody will acknowledge it.
                self.side.acked.store(true, Ordering::Relaxed);
                return;
            }
            let _ = sock.poll(zmq::POLLOUT, ms(LIVENESS));
        }
    }
}

impl Attempt for ZmqRx {
    /// One receive (waiting at most `wait`, or not at all): `Ok(None)` when nothing came.
    fn attempt(
        &mut self,
        buf: &mut [u8],
        wait: Option<Duration>,
    ) -> Result<Option<usize>, RecvError> {
        if let Some(len) = self.held {
            return self.hand_over(len, buf).map(Some);
        }
        if self.side.closed.load(Ordering::Relaxed) {
            return Err(RecvError::Disconnected);
        }
        let mut got = self.take(buf);
        if let (Ok(Taken::Nothing), Some(w)) = (&got, wait) {
            let _ = lock(&self.side.recv).poll(zmq::POLLIN, ms(w));
            got = self.take(buf);
        }
        match got {
            Ok(Taken::Nothing) => {
                if !crate::sys::gone(self.side.peer) {
                    return Ok(None);
                }
                // The peer is gone without a goodbye (killed), or its goodbye is still
                // on its way: what it sent may still be in the kernel or in libzmq's I/O
                // thread, so it counts as disconnected only after GRACE with nothing
                // arriving.
                let since = *self.gone_since.get_or_insert_with(Instant::now);
                if since.elapsed() < GRACE {
                    return Ok(None);
                }
                self.side.closed.store(true, Ordering::Relaxed);
                Err(RecvError::Disconnected)
            }
            Ok(Taken::Goodbye) => {
                self.side.acknowledge();
                Err(RecvError::Disconnected)
            }
            Ok(Taken::Direct(n)) => {
                self.gone_since = None;
                Ok(Some(n))
            }
            Ok(Taken::Held(n)) => {
                self.gone_since = None;
                self.hand_over(n, buf).map(Some)
            }
            Err(e) => Err(RecvError::Io(errno(e))),
        }
    }
}

impl ZmqRx {
    /// One receive that does not wait: into `buf` when it holds the largest frame, else
    /// whole into this half's own message. An acknowledgement of this side's goodbye is
    /// noted and passed over.
    fn take(&mut self, buf: &mut [u8]) -> Result<Taken, zmq::Error> {
        let sock = lock(&self.side.recv);
        let got = if buf.len() >= self.max_frame {
            sock.recv_into(buf, zmq::DONTWAIT).map(|n| (n, true))
        } else {
            sock.recv(&mut self.msg, zmq::DONTWAIT)
                .map(|()| (self.msg.len(), false))
        };
        let (n, direct) = match got {
            Ok(x) => x,
            Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => return Ok(Taken::Nothing),
            Err(e) => return Err(e),
        };
        if n == 0 && sock.get_rcvmore().unwrap_or(false) {
            let mut second = zmq::Message::new();
            let _ = sock.recv(&mut second, zmq::DONTWAIT);
            if &second[..] == ACK {
                self.side.acked.store(true, Ordering::Relaxed);
                return Ok(Taken::Nothing);
            }
            return Ok(Taken::Goodbye);
        }
        Ok(if direct {
            Taken::Direct(n.min(buf.len()))
        } else {
            Taken::Held(n)
        })
    }

    fn hand_over(&mut self, len: usize, buf: &mut [u8]) -> Result<usize, RecvError> {
        if len > buf.len() {
            self.held = Some(len);
            return Err(RecvError::Truncated { needed: len });
        }
        self.held = None;
        buf[..len].copy_from_slice(&self.msg[..len]);
        Ok(len)
    }
}

impl Rx for ZmqRx {
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, RecvError> {
        crate::peer::recv(self, buf)
    }
    fn try_recv(&mut self, buf: &mut [u8]) -> Result<usize, TryRecvError> {
        crate::peer::try_recv(self, buf)
    }
    fn recv_timeout(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, RecvTimeoutError> {
        crate::peer::recv_timeout(self, buf, timeout)
    }
    fn max_frame_len(&self) -> usize {
        self.max_frame
    }
}

/// What one receive took.
enum Taken {
    /// Nothing there now.
    Nothing,
    /// A frame of this many bytes, in the caller's buffer.
    Direct(usize),
    /// A frame of this many bytes, in this half's own message.
    Held(usize),
    /// The peer's goodbye.
    Goodbye,
}

/// The listening side: its sockets bound, waiting for the peer's hello.
pub struct ZmqListener {
    sockets: Sockets,
    resolved: Endpoint,
}

impl std::fmt::Debug for ZmqListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZmqListener")
            .field("resolved", &self.resolved)
            .finish()
    }
}

impl ZmqListener {
    fn finish(self, peer: u32, timeout: Duration) -> Result<(ZmqTx, ZmqRx), SetupError> {
        let target = self.resolved.to_string();
        send_hello(
            &self.sockets.send,
            Instant::now() + timeout,
            &target,
            timeout,
        )?;
        let max = self.resolved.max_frame();
        Ok(halves(self.sockets, peer, max))
    }
}

impl Transport for Zmq {
    const KIND: TransportKind = TransportKind::Zmq;
    type Tx = ZmqTx;
    type Rx = ZmqRx;
    type Listener = ZmqListener;

    fn listen(endpoint: &Endpoint) -> Result<ZmqListener, SetupError> {
        let (sockets, resolved) = open(endpoint, true)?;
        Ok(ZmqListener { sockets, resolved })
    }
    fn resolved(listener: &ZmqListener) -> Endpoint {
        listener.resolved.clone()
    }
    fn accept(listener: ZmqListener, timeout: Duration) -> Result<(ZmqTx, ZmqRx), SetupError> {
        let deadline = Instant::now() + timeout;
        let target = listener.resolved.to_string();
        match take_hello(&listener.sockets.recv, deadline, &target)? {
            Some(peer) => listener.finish(peer, timeout),
            None => Err(SetupError::Timeout {
                what: "the hello of the peer on",
                target,
                timeout_ms: timeout.as_millis(),
            }),
        }
    }
    fn try_accept(
        listener: ZmqListener,
        timeout: Duration,
    ) -> Result<Result<(ZmqTx, ZmqRx), ZmqListener>, SetupError> {
        let target = listener.resolved.to_string();
        match take_hello(&listener.sockets.recv, Instant::now(), &target)? {
            Some(peer) => listener.finish(peer, timeout).map(Ok),
            None => Ok(Err(listener)),
        }
    }
    fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<(ZmqTx, ZmqRx), SetupError> {
        let deadline = Instant::now() + timeout;
        let target = endpoint.to_string();
        let (sockets, _) = open(endpoint, false)?;
        send_hello(&sockets.send, deadline, &target, timeout)?;
        match take_hello(&sockets.recv, deadline, &target)? {
            Some(peer) => Ok(halves(sockets, peer, endpoint.max_frame())),
            None => Err(SetupError::Timeout {
                what: "the answer of the peer on",
                target,
                timeout_ms: timeout.as_millis(),
            }),
        }
    }
}
