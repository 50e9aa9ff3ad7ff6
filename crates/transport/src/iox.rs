//! `iceoryx2`: Eclipse iceoryx2 (the `iceoryx2` crate, pure Rust) as a peer transport:
//! one publish-subscribe service of byte slices per direction, each frame a sample the
//! publisher loans from its shared-memory pool, fills by copy and sends; the subscriber
//! receives it in place and copies it out. With `wait = "spin"` a receiver busy-polls
//! `receive` (iceoryx2's own benchmark does); with `wait = "block"` every send also
//! notifies an event service of the direction and a receiver that finds nothing sleeps in
//! the event listener.
//!
//! Every file iceoryx2 makes is named after this endpoint: its shared memory under
//! /dev/shm starts with the endpoint's `ipcbench-iox-<pid>-<random>-` prefix (a later
//! harness removes what a killed one left, as for segments), its other files sit under
//! the run's private directory. Nodes do not catch signals (the harness does).
//!
//! Where iceoryx2 differs from the [`Tx`]/[`Rx`] contract, this module makes up the
//! difference, so a caller sees the trait's documented behaviour:
//! - **Back-pressure.** The publisher discards a sample a full subscriber buffer cannot
//!   take and says so (it reached no subscriber): `try_send` reports that as `Full`
//!   (nothing of the frame was sent), `send` tries again until there is room.
//! - **Peer exit.** A publisher that is gone leaves the service with no publisher: a
//!   receiver that finds nothing checks that, and the peer's process id from the
//!   handshake, at least every [`LIVENESS`], and reports `Disconnected` once every
//!   frame is taken.
//! - **Truncation.** A sample longer than the caller's buffer stays borrowed, so the next
//!   call with `needed` bytes receives it.
//! - **Framing.** Samples keep their length in iceoryx2's header: there is no length
//!   prefix of ours to corrupt.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;
use iceoryx2::sample::Sample;

use crate::{
    Endpoint, EndpointOptions, RecvError, RecvTimeoutError, Rx, SendError, SetupError, Transport,
    TransportKind, TryRecvError, TrySendError, Tx, WaitStrategy,
};

/// How often a waiting half checks that its peer still runs.
pub const LIVENESS: Duration = Duration::from_millis(50);

/// Samples a subscriber's buffer holds.
pub const BUFFER: usize = 16;

type S = ipc_threadsafe::Service;
type Bytes = [u8];

/// The handshake: a magic and the sender's process id.
const HELLO: &[u8; 9] = b"IPCB-IOX1";
const HELLO_LEN: usize = 13;

/// iceoryx2 as a peer transport.
#[derive(Debug, Clone, Copy)]
pub struct Iceoryx2;

fn invalid(what: &str, e: impl std::fmt::Debug) -> SetupError {
    SetupError::Invalid(format!("iceoryx2: {what}: {e:?}"))
}

/// Names an endpoint in `dir` (nothing is made until a side listens).
pub(crate) fn prepare(dir: &Path, opts: &EndpointOptions) -> Result<Endpoint, SetupError> {
    let root = dir.join("iox2");
    std::fs::create_dir(&root).map_err(|e| SetupError::io("mkdir", root.display(), e))?;
    Ok(Endpoint::Iceoryx2 {
        prefix: format!("{}-", crate::names::unique("iox")),
        root,
        max_frame: opts.max_frame,
        wait: match opts.wait {
            WaitStrategy::Block => WaitStrategy::Block,
            _ => WaitStrategy::Spin,
        },
    })
}

/// What both halves of a side keep alive: the node and the services (dropped after the
/// ports, which hold the last `Arc` of it).
struct Side {
    services: [iceoryx2::service::port_factory::publish_subscribe::PortFactory<S, Bytes, ()>; 2],
    _events: Option<[iceoryx2::service::port_factory::event::PortFactory<S>; 2]>,
    _node: Node<S>,
}

/// The ports of one side, before the handshake.
struct Ports {
    publisher: Publisher<S, Bytes, ()>,
    subscriber: Subscriber<S, Bytes, ()>,
    notifier: Option<Notifier<S>>,
    listener: Option<Listener<S>>,
    /// Index in `side.services` of the service this side subscribes to.
    inbound: usize,
    side: Arc<Side>,
    max_frame: usize,
    wait: WaitStrategy,
}

fn open(endpoint: &Endpoint, listens: bool) -> Result<Ports, SetupError> {
    let Endpoint::Iceoryx2 {
        prefix,
        root,
        max_frame,
        wait,
    } = endpoint
    else {
        return Err(SetupError::WrongKind {
            expected: TransportKind::Iceoryx2,
            found: endpoint.kind(),
        });
    };
    set_log_level(LogLevel::Fatal);
    let mut config = Config::default();
    config.global.prefix = FileName::new(prefix.as_bytes()).map_err(|e| invalid("prefix", e))?;
    let mut root_text = root.to_string_lossy().into_owned();
    root_text.push('/');
    config.global.set_root_path(
        &iceoryx2::prelude::Path::new(root_text.as_bytes()).map_err(|e| invalid("root path", e))?,
    );
    let node = NodeBuilder::new()
        .config(&config)
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<S>()
        .map_err(|e| invalid("node", e))?;
    let name = |dir: &str| -> Result<ServiceName, SetupError> {
        ServiceName::new(&format!("ipcbench/{dir}")).map_err(|e| invalid("service name", e))
    };
    let service = |dir: &str| {
        node.service_builder(&name(dir)?)
            .publish_subscribe::<Bytes>()
            .max_publishers(1)
            .max_subscribers(1)
            .history_size(0)
            .subscriber_max_buffer_size(BUFFER)
            .enable_safe_overflow(false)
            .open_or_create()
            .map_err(|e| invalid("publish-subscribe service", e))
    };
    let services = [service("a2b")?, service("b2a")?];
    let events = match wait {
        WaitStrategy::Block => {
            let event = |dir: &str| {
                node.service_builder(&name(dir)?)
                    .event()
                    .open_or_create()
                    .map_err(|e| invalid("event service", e))
            };
            Some([event("a2b-event")?, event("b2a-event")?])
        }
        _ => None,
    };
    let (out, inbound) = if listens { (0, 1) } else { (1, 0) };
    let publisher = services[out]
        .publisher_builder()
        .initial_max_slice_len((*max_frame as usize).max(HELLO_LEN))
        .backpressure_strategy(BackpressureStrategy::DiscardData)
        .create()
        .map_err(|e| invalid("publisher", e))?;
    let subscriber = services[inbound]
        .subscriber_builder()
        .buffer_size(BUFFER)
        .create()
        .map_err(|e| invalid("subscriber", e))?;
    let (notifier, listener) = match &events {
        Some(ev) => (
            Some(
                ev[out]
                    .notifier_builder()
                    .create()
                    .map_err(|e| invalid("notifier", e))?,
            ),
            Some(
                ev[inbound]
                    .listener_builder()
                    .create()
                    .map_err(|e| invalid("listener", e))?,
            ),
        ),
        None => (None, None),
    };
    Ok(Ports {
        publisher,
        subscriber,
        notifier,
        listener,
        inbound,
        side: Arc::new(Side {
            services,
            _events: events,
            _node: node,
        }),
        max_frame: *max_frame as usize,
        wait: *wait,
    })
}

fn hello() -> [u8; HELLO_LEN] {
    let mut h = [0u8; HELLO_LEN];
    h[..9].copy_from_slice(HELLO);
    h[9..].copy_from_slice(&std::process::id().to_le_bytes());
    h
}

/// Publishes one frame (and notifies, with block waits); `Ok(false)` when it reached no
/// subscriber (a full buffer, or none connected yet).
fn publish(
    publisher: &Publisher<S, Bytes, ()>,
    notifier: Option<&Notifier<S>>,
    frame: &[u8],
) -> Result<bool, SendError> {
    let sample = publisher
        .loan_slice_uninit(frame.len())
        .map_err(|_| SendError::Io(nix::errno::Errno::ENOMEM))?;
    let sample = sample.write_from_slice(frame);
    let reached = sample
        .send()
        .map_err(|_| SendError::Io(nix::errno::Errno::EIO))?;
    if reached > 0 {
        if let Some(n) = notifier {
            let _ = n.notify();
        }
    }
    Ok(reached > 0)
}

fn handshake(
    p: &Ports,
    deadline: Instant,
    target: &str,
    timeout: Duration,
    first: bool,
) -> Result<u32, SetupError> {
    let timed_out = |what: &'static str| SetupError::Timeout {
        what,
        target: target.to_string(),
        timeout_ms: timeout.as_millis(),
    };
    let send = || -> Result<(), SetupError> {
        loop {
            match publish(&p.publisher, p.notifier.as_ref(), &hello()) {
                Ok(true) => return Ok(()),
                Ok(false) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Ok(false) => return Err(timed_out("a subscriber for the hello on")),
                Err(e) => return Err(invalid("sending the hello", e)),
            }
        }
    };
    if first {
        send()?;
    }
    let peer = loop {
        match p.subscriber.receive() {
            Ok(Some(s)) => {
                let m: &[u8] = s.payload();
                if m.len() != HELLO_LEN || &m[..9] != HELLO {
                    return Err(SetupError::Handshake {
                        target: target.to_string(),
                        reason: format!(
                            "expected an ipcbench iceoryx2 hello, got {} bytes",
                            m.len()
                        ),
                    });
                }
                break u32::from_le_bytes([m[9], m[10], m[11], m[12]]);
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_micros(200)),
            Ok(None) => return Err(timed_out("the hello of the peer on")),
            Err(e) => return Err(invalid("receiving the hello", e)),
        }
    };
    if !first {
        send()?;
    }
    Ok(peer)
}

fn halves(p: Ports, peer: u32) -> (IoxTx, IoxRx) {
    let Ports {
        publisher,
        subscriber,
        notifier,
        listener,
        inbound,
        side,
        max_frame,
        wait,
    } = p;
    (
        IoxTx {
            publisher,
            notifier,
            peer,
            outbound: 1 - inbound,
            max_frame,
            side: side.clone(),
        },
        IoxRx {
            held: None,
            subscriber,
            listener,
            peer,
            inbound,
            max_frame,
            wait,
            closed: false,
            side,
        },
    )
}

/// The sending half of an `iceoryx2` endpoint.
pub struct IoxTx {
    publisher: Publisher<S, Bytes, ()>,
    notifier: Option<Notifier<S>>,
    peer: u32,
    /// Index in `side.services` of the service this half publishes on.
    outbound: usize,
    max_frame: usize,
    side: Arc<Side>,
}

/// The receiving half of an `iceoryx2` endpoint.
pub struct IoxRx {
    /// A sample longer than the caller's buffer, kept for the next call.
    held: Option<Sample<S, Bytes, ()>>,
    subscriber: Subscriber<S, Bytes, ()>,
    listener: Option<Listener<S>>,
    peer: u32,
    inbound: usize,
    max_frame: usize,
    wait: WaitStrategy,
    closed: bool,
    side: Arc<Side>,
}

impl std::fmt::Debug for IoxTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoxTx").field("peer", &self.peer).finish()
    }
}

impl std::fmt::Debug for IoxRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoxRx").field("peer", &self.peer).finish()
    }
}

impl IoxTx {
    /// Whether the peer's subscriber is gone, or the peer itself.
    fn peer_left(&self) -> bool {
        self.side.services[self.outbound]
            .dynamic_config()
            .number_of_subscribers()
            == 0
            || crate::mq::gone(self.peer)
    }
}

impl Tx for IoxTx {
    fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        let mut checked = Instant::now();
        let mut misses = 0u32;
        loop {
            match self.try_send(frame) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full) => {
                    misses += 1;
                    if misses < 64 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::sleep(Duration::from_micros(20));
                    }
                    if checked.elapsed() >= LIVENESS {
                        checked = Instant::now();
                        if self.peer_left() {
                            return Err(SendError::Disconnected);
                        }
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
        if publish(&self.publisher, self.notifier.as_ref(), frame)? {
            Ok(())
        } else if crate::mq::gone(self.peer) {
            Err(SendError::Disconnected.into())
        } else {
            Err(TrySendError::Full)
        }
    }
    fn max_frame_len(&self) -> usize {
        self.max_frame
    }
}

impl IoxRx {
    /// Whether the peer's publisher is gone, or the peer itself.
    fn peer_left(&self) -> bool {
        self.side.services[self.inbound]
            .dynamic_config()
            .number_of_publishers()
            == 0
            || crate::mq::gone(self.peer)
    }

    fn hand_over(&mut self, buf: &mut [u8]) -> Result<usize, RecvError> {
        let Some(s) = self.held.take() else {
            return Err(RecvError::Disconnected);
        };
        let m: &[u8] = s.payload();
        if m.len() > buf.len() {
            let needed = m.len();
            self.held = Some(s);
            return Err(RecvError::Truncated { needed });
        }
        let n = m.len();
        buf[..n].copy_from_slice(m);
        Ok(n)
    }

    /// One receive that does not wait.
    fn take(&mut self, buf: &mut [u8]) -> Result<Option<usize>, RecvError> {
        if self.held.is_some() {
            return self.hand_over(buf).map(Some);
        }
        if self.closed {
            return Err(RecvError::Disconnected);
        }
        match self.subscriber.receive() {
            Ok(Some(s)) => {
                self.held = Some(s);
                self.hand_over(buf).map(Some)
            }
            Ok(None) => Ok(None),
            Err(_) => Err(RecvError::Io(nix::errno::Errno::EIO)),
        }
    }

    /// Nothing was there: whether the peer left (then `Disconnected` once the last
    /// frame is taken).
    fn left(&mut self, buf: &mut [u8]) -> Result<Option<usize>, RecvError> {
        if !self.peer_left() {
            return Ok(None);
        }
        match self.take(buf)? {
            Some(n) => Ok(Some(n)),
            None => {
                self.closed = true;
                Err(RecvError::Disconnected)
            }
        }
    }

    /// Waits for a sample until `deadline` (spinning or in the event listener).
    fn wait_until(
        &mut self,
        buf: &mut [u8],
        deadline: Option<Instant>,
    ) -> Result<Option<usize>, RecvError> {
        let mut checked = Instant::now();
        loop {
            if let Some(n) = self.take(buf)? {
                return Ok(Some(n));
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return self.left(buf);
            }
            match (&self.listener, self.wait) {
                (Some(l), WaitStrategy::Block) => {
                    let mut slice = LIVENESS;
                    if let Some(d) = deadline {
                        slice = slice.min(d.saturating_duration_since(now));
                    }
                    let woke = l.timed_wait(|_| {}, slice).unwrap_or(0);
                    if woke == 0 {
                        if let Some(n) = self.left(buf)? {
                            return Ok(Some(n));
                        }
                    }
                }
                _ => {
                    std::hint::spin_loop();
                    if now.duration_since(checked) >= LIVENESS {
                        checked = now;
                        if let Some(n) = self.left(buf)? {
                            return Ok(Some(n));
                        }
                    }
                }
            }
        }
    }
}

impl Rx for IoxRx {
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, RecvError> {
        loop {
            if let Some(n) = self.wait_until(buf, None)? {
                return Ok(n);
            }
        }
    }
    fn try_recv(&mut self, buf: &mut [u8]) -> Result<usize, TryRecvError> {
        match self.take(buf)? {
            Some(n) => Ok(n),
            None => match self.left(buf)? {
                Some(n) => Ok(n),
                None => Err(TryRecvError::Empty),
            },
        }
    }
    fn recv_timeout(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, RecvTimeoutError> {
        match self.wait_until(buf, Some(Instant::now() + timeout))? {
            Some(n) => Ok(n),
            None => Err(RecvTimeoutError::Timeout),
        }
    }
    fn max_frame_len(&self) -> usize {
        self.max_frame
    }
}

/// The listening side: its node and ports made, waiting for the peer's hello.
pub struct IoxListener {
    ports: Ports,
    endpoint: Endpoint,
}

impl std::fmt::Debug for IoxListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoxListener")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl Transport for Iceoryx2 {
    const KIND: TransportKind = TransportKind::Iceoryx2;
    type Tx = IoxTx;
    type Rx = IoxRx;
    type Listener = IoxListener;

    fn listen(endpoint: &Endpoint) -> Result<IoxListener, SetupError> {
        Ok(IoxListener {
            ports: open(endpoint, true)?,
            endpoint: endpoint.clone(),
        })
    }
    fn resolved(listener: &IoxListener) -> Endpoint {
        listener.endpoint.clone()
    }
    fn accept(listener: IoxListener, timeout: Duration) -> Result<(IoxTx, IoxRx), SetupError> {
        let target = listener.endpoint.to_string();
        let peer = handshake(
            &listener.ports,
            Instant::now() + timeout,
            &target,
            timeout,
            false,
        )?;
        Ok(halves(listener.ports, peer))
    }
    fn try_accept(
        listener: IoxListener,
        timeout: Duration,
    ) -> Result<Result<(IoxTx, IoxRx), IoxListener>, SetupError> {
        if !listener.ports.subscriber.has_samples().unwrap_or(false) {
            return Ok(Err(listener));
        }
        Self::accept(listener, timeout).map(Ok)
    }
    fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<(IoxTx, IoxRx), SetupError> {
        let target = endpoint.to_string();
        let ports = open(endpoint, false)?;
        let peer = handshake(&ports, Instant::now() + timeout, &target, timeout, true)?;
        Ok(halves(ports, peer))
    }
}
