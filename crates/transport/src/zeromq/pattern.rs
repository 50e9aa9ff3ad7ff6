//! ZeroMQ's own `PUSH`/`PULL` pattern (and `PUB`/`SUB` beside it for control), for a workload that replays an original built on
//! it (`tasks`): one socket per end, any number of peers per socket, and ZeroMQ's own
//! rules, not the [`Tx`](crate::Tx)/[`Rx`](crate::Rx) contract:
//! - a `PUSH` hands each message to the next of its connected peers that has room
//!   (round-robin), and waits (or says full) while none has;
//! - a `PULL` takes from its peers in turn (fair queuing);
//! - a peer that leaves is never reported, and what was queued for it is lost.
//!
//! What this module adds is what a benchmark needs around them: bounded waits, typed
//! errors, a buffer-size check (`Truncated`, the message kept for the next call), and a
//! count of the peers whose handshake is done ([`Socket::peers`], from libzmq's socket
//! monitor), so a `PUSH` can wait until every worker is there before it deals messages
//! out. The addresses are an [`Endpoint::Zmq`]'s `a` (an `ipc://` path or `tcp://host:*`,
//! see [`Endpoint::prepare`]); its `hwm` and `max_frame` set `SNDHWM`/`RCVHWM` and
//! `MAXMSGSIZE`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{errno, last_endpoint, ms, setup, LINGER_MS};
use crate::{
    Endpoint, RecvError, RecvTimeoutError, SendError, SetupError, TransportKind, TrySendError,
};

/// Which end of the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Deals messages out to its peers in turn.
    Push,
    /// Takes messages from its peers in turn.
    Pull,
    /// Sends every message to all its subscribers (a control channel: ZeroMQ's way to
    /// reach every worker at once, where a `PUSH` reaches one).
    Pub,
    /// Takes every message its `PUB` sends after this subscriber's subscription reached
    /// it (subscribed to everything).
    Sub,
}

/// One `PUSH` or `PULL` socket with its monitor.
pub struct Socket {
    sock: zmq::Socket,
    /// libzmq's events of `sock`: handshakes done, peers disconnected.
    monitor: zmq::Socket,
    /// Peers whose handshake is done, less those that disconnected since.
    peers: usize,
    /// The message a short buffer could not take, kept for the next call.
    held: Option<zmq::Message>,
    max_frame: usize,
    target: String,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("zmq::pattern::Socket")
            .field("target", &self.target)
            .field("peers", &self.peers)
            .finish()
    }
}

/// Numbers the monitors of a process (their `inproc://` names must differ).
static MONITORS: AtomicU64 = AtomicU64::new(0);

fn address(endpoint: &Endpoint) -> Result<(&str, u32, u32), SetupError> {
    match endpoint {
        Endpoint::Zmq {
            a, max_frame, hwm, ..
        } => Ok((a, *max_frame, *hwm)),
        other => Err(SetupError::WrongKind {
            expected: TransportKind::Zmq,
            found: other.kind(),
        }),
    }
}

impl Socket {
    /// Opens a socket of `kind` in `ctx` (one context per process), its monitor watching
    /// before any connection can happen.
    fn open(ctx: &Context, kind: Kind, endpoint: &Endpoint) -> Result<Socket, SetupError> {
        let (a, max_frame, hwm) = address(endpoint)?;
        let target = a.to_string();
        let sock = super::socket(
            &ctx.0,
            match kind {
                Kind::Push => zmq::PUSH,
                Kind::Pull => zmq::PULL,
                Kind::Pub => zmq::PUB,
                Kind::Sub => zmq::SUB,
            },
            max_frame,
            hwm,
            &target,
        )?;
        if kind == Kind::Sub {
            sock.set_subscribe(b"")
                .map_err(|e| setup("zmq_setsockopt", &target, e))?;
        }
        let name = format!(
            "inproc://ipcbench-monitor-{}",
            MONITORS.fetch_add(1, Ordering::Relaxed)
        );
        let events =
            zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32 | zmq::SocketEvent::DISCONNECTED as i32;
        sock.monitor(&name, events)
            .map_err(|e| setup("zmq_socket_monitor", &target, e))?;
        let monitor = ctx
            .0
            .socket(zmq::PAIR)
            .map_err(|e| setup("zmq_socket", &target, e))?;
        monitor
            .connect(&name)
            .map_err(|e| setup("zmq_connect", &name, e))?;
        Ok(Socket {
            sock,
            monitor,
            peers: 0,
            held: None,
            max_frame: max_frame as usize,
            target,
        })
    }

    /// A socket of `kind` bound to `endpoint`'s address; the endpoint with the address
    /// bound (a TCP port the OS chose).
    pub fn bind(
        ctx: &Context,
        kind: Kind,
        endpoint: &Endpoint,
    ) -> Result<(Socket, Endpoint), SetupError> {
        let s = Socket::open(ctx, kind, endpoint)?;
        s.sock
            .bind(&s.target)
            .map_err(|e| setup("zmq_bind", &s.target, e))?;
        let mut resolved = endpoint.clone();
        if let Endpoint::Zmq { a, .. } = &mut resolved {
            *a = last_endpoint(&s.sock, &s.target)?;
        }
        Ok((s, resolved))
    }

    /// A socket of `kind` connecting to `endpoint`'s address (libzmq connects in the
    /// background and retries: see [`Socket::wait_peers`]).
    pub fn connect(ctx: &Context, kind: Kind, endpoint: &Endpoint) -> Result<Socket, SetupError> {
        let s = Socket::open(ctx, kind, endpoint)?;
        s.sock
            .connect(&s.target)
            .map_err(|e| setup("zmq_connect", &s.target, e))?;
        Ok(s)
    }

    /// The peers whose handshake is done and that have not disconnected since, as far as
    /// the events read so far tell. A message sent after this returns `n` goes to one of
    /// those `n` (libzmq attaches a peer before it reports its handshake).
    pub fn peers(&mut self) -> usize {
        while let Ok(parts) = self.monitor.recv_multipart(zmq::DONTWAIT) {
            let Some(head) = parts.first().filter(|h| h.len() >= 2) else {
                continue;
            };
            let event = zmq::SocketEvent::from_raw(u16::from_ne_bytes([head[0], head[1]]));
            if event == zmq::SocketEvent::HANDSHAKE_SUCCEEDED {
                self.peers += 1;
            } else if event == zmq::SocketEvent::DISCONNECTED {
                self.peers = self.peers.saturating_sub(1);
            }
        }
        self.peers
    }

    /// Waits at most `timeout` until at least `n` peers are there; `Err(Timeout)` naming
    /// how many came.
    pub fn wait_peers(&mut self, n: usize, timeout: Duration) -> Result<(), SetupError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.peers() >= n {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SetupError::Timeout {
                    what: if n == 1 {
                        "the peer on"
                    } else {
                        "every peer on"
                    },
                    target: format!("{} ({} of {n} came)", self.target, self.peers),
                    timeout_ms: timeout.as_millis(),
                });
            }
            let _ = self
                .monitor
                .poll(zmq::POLLIN, ms(left.min(Duration::from_millis(50))));
        }
    }

    /// Queues `frame` if some peer has room now (`Full` otherwise, nothing queued; a
    /// `PUB` never says `Full`: a subscriber with no room misses the message).
    pub fn try_send(&mut self, frame: &[u8]) -> Result<(), TrySendError> {
        if frame.len() > self.max_frame {
            return Err(SendError::FrameTooLarge {
                len: frame.len(),
                max: self.max_frame,
            }
            .into());
        }
        match self.sock.send(frame, zmq::DONTWAIT) {
            Ok(()) => Ok(()),
            Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => Err(TrySendError::Full),
            Err(e) => Err(SendError::Io(errno(e)).into()),
        }
    }

    /// Waits at most `timeout` until some peer has room for a message; whether one has.
    pub fn wait_writable(&self, timeout: Duration) -> bool {
        self.sock.poll(zmq::POLLOUT, ms(timeout)).unwrap_or(0) > 0
    }

    /// Receives one message into `buf`, waiting at most `timeout`. A message longer than
    /// `buf` is `Truncated { needed }` and kept for the next call.
    pub fn recv_timeout(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, RecvTimeoutError> {
        let msg = match self.held.take() {
            Some(m) => m,
            None => {
                let deadline = Instant::now() + timeout;
                loop {
                    match self.sock.recv_msg(zmq::DONTWAIT) {
                        Ok(m) => break m,
                        Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                return Err(RecvTimeoutError::Timeout);
                            }
                            let _ = self.sock.poll(zmq::POLLIN, ms(left));
                        }
                        Err(e) => return Err(RecvError::Io(errno(e)).into()),
                    }
                }
            }
        };
        if msg.len() > buf.len() {
            let needed = msg.len();
            self.held = Some(msg);
            return Err(RecvError::Truncated { needed }.into());
        }
        buf[..msg.len()].copy_from_slice(&msg);
        Ok(msg.len())
    }

    /// Drops what is still queued when the socket closes, instead of waiting up to
    /// [`Socket::LINGER`] for a peer to take it (a peer that is gone never will).
    pub fn abandon_unsent(&self) -> Result<(), SendError> {
        self.sock.set_linger(0).map_err(|e| SendError::Io(errno(e)))
    }

    /// How long a dropped socket waits for its last messages to leave.
    pub const LINGER: Duration = Duration::from_millis(LINGER_MS as u64);
}

/// The context of a process's sockets (libzmq's I/O thread). It ends when the last of
/// its sockets is dropped, after their `LINGER`.
#[derive(Clone)]
pub struct Context(zmq::Context);

impl Context {
    /// A new context.
    pub fn new() -> Context {
        Context(zmq::Context::new())
    }
}

impl Default for Context {
    fn default() -> Self {
        Context::new()
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("zmq::pattern::Context")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{EndpointOptions, ZmqPattern};

    fn endpoint(dir: &std::path::Path, over: TransportKind, max_frame: u32) -> Endpoint {
        let opts = EndpointOptions {
            over,
            zmq_pattern: ZmqPattern::PushPull,
            max_frame,
            hwm: 100,
            ..Default::default()
        };
        Endpoint::prepare(TransportKind::Zmq, dir, &opts).unwrap()
    }

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn a_push_deals_to_every_peer_in_turn_once_all_are_there() {
        for over in [TransportKind::Uds, TransportKind::Tcp] {
            let dir = tempfile::tempdir().unwrap();
            let ctx = Context::new();
            let (mut push, ep) =
                Socket::bind(&ctx, Kind::Push, &endpoint(dir.path(), over, 64)).unwrap();
            let mut pulls: Vec<Socket> = (0..3)
                .map(|_| Socket::connect(&ctx, Kind::Pull, &ep).unwrap())
                .collect();
            push.wait_peers(3, T).unwrap();
            for i in 0..6u8 {
                push.try_send(&[i]).unwrap();
            }
            let mut buf = [0u8; 64];
            let mut got = Vec::new();
            for p in &mut pulls {
                let a = p.recv_timeout(&mut buf, T).unwrap();
                let first = buf[..a].to_vec();
                let b = p.recv_timeout(&mut buf, T).unwrap();
                got.push((first, buf[..b].to_vec()));
                assert!(matches!(
                    p.recv_timeout(&mut buf, Duration::from_millis(50)),
                    Err(RecvTimeoutError::Timeout)
                ));
            }
            // Two each, three apart: round-robin.
            for (a, b) in &got {
                assert_eq!(b[0], a[0] + 3, "{over}: {got:?}");
            }
        }
    }

    #[test]
    fn a_pub_reaches_every_subscriber() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context::new();
        let (mut publ, ep) = Socket::bind(
            &ctx,
            Kind::Pub,
            &endpoint(dir.path(), TransportKind::Uds, 64),
        )
        .unwrap();
        let mut subs: Vec<Socket> = (0..3)
            .map(|_| Socket::connect(&ctx, Kind::Sub, &ep).unwrap())
            .collect();
        publ.wait_peers(3, T).unwrap();
        let mut buf = [0u8; 64];
        // A subscription reaches the PUB a little after the handshake: say it again until
        // each has heard it once.
        for s in &mut subs {
            loop {
                publ.try_send(b"die").unwrap();
                if let Ok(n) = s.recv_timeout(&mut buf, Duration::from_millis(20)) {
                    assert_eq!(&buf[..n], b"die");
                    break;
                }
            }
        }
    }

    #[test]
    fn a_short_buffer_is_truncated_and_the_message_kept() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context::new();
        let (mut pull, ep) = Socket::bind(
            &ctx,
            Kind::Pull,
            &endpoint(dir.path(), TransportKind::Uds, 64),
        )
        .unwrap();
        let mut push = Socket::connect(&ctx, Kind::Push, &ep).unwrap();
        push.wait_peers(1, T).unwrap();
        push.try_send(&[7u8; 40]).unwrap();
        let mut small = [0u8; 8];
        assert!(matches!(
            pull.recv_timeout(&mut small, T),
            Err(RecvTimeoutError::Recv(RecvError::Truncated { needed: 40 }))
        ));
        let mut big = [0u8; 64];
        assert_eq!(pull.recv_timeout(&mut big, T).unwrap(), 40);
        assert_eq!(big[..40], [7u8; 40]);
        assert!(matches!(
            push.try_send(&[0u8; 65]),
            Err(TrySendError::Send(SendError::FrameTooLarge { .. }))
        ));
    }

    #[test]
    fn waiting_for_peers_that_never_come_is_bounded_and_says_how_many_came() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context::new();
        let (mut push, ep) = Socket::bind(
            &ctx,
            Kind::Push,
            &endpoint(dir.path(), TransportKind::Uds, 64),
        )
        .unwrap();
        let _one = Socket::connect(&ctx, Kind::Pull, &ep).unwrap();
        let e = push.wait_peers(2, Duration::from_millis(300)).unwrap_err();
        assert!(e.to_string().contains("1 of 2 came"), "{e}");
        // A PUSH with no room anywhere says Full, and never blocks.
        let (mut lonely, _) = Socket::bind(
            &ctx,
            Kind::Push,
            &endpoint(dir.path(), TransportKind::Tcp, 64),
        )
        .unwrap();
        assert!(matches!(lonely.try_send(b"x"), Err(TrySendError::Full)));
    }
}
