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
//! - **Back-pressure.** A publisher facing a full subscriber buffer asks its handler:
//!   `try_send` has it discard the sample (`Full`: nothing of the frame was sent); `send`
//!   and a loan's `commit` have it retry until there is room, as long as the peer runs.
//! - **Peer exit.** A publisher that is gone leaves the service with no publisher: a
//!   receiver that finds nothing checks that, and the peer's process id from the
//!   handshake, at least every [`LIVENESS`], and reports `Disconnected` once every
//!   frame is taken.
//! - **Truncation.** A sample longer than the caller's buffer stays borrowed, so the next
//!   call with `needed` bytes receives it.
//! - **Loans.** [`LoanTx`]/[`LoanRx`] lend the sample itself: a frame written in place in
//!   the publisher's pool, and read in place in the received sample (`zero_copy`).
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
use iceoryx2::service::Service;

use crate::peer::{Hello, HELLO_LEN};
use crate::{
    Endpoint, EndpointOptions, LoanRx, LoanTx, RecvError, RecvTimeoutError, Rx, SendError,
    SetupError, Transport, TransportKind, TryRecvError, TrySendError, Tx, TxLoan, WaitStrategy,
};

pub use crate::peer::LIVENESS;

/// Samples a subscriber's buffer holds.
pub const BUFFER: usize = crate::IOX_BUFFER;

/// The service of the [`Transport`]: thread-safe ports, so the halves are `Send`.
type Threadsafe = ipc_threadsafe::Service;
type Bytes = [u8];

/// The handshake: a magic and the sender's process id.
const HELLO: Hello = Hello {
    magic: b"IPCB-IOX",
    name: "iceoryx2",
};

/// How a publisher meets a full subscriber buffer, decided per send by its half: give up
/// at once (`try_send`: `Full`), or retry while the peer runs (`send`, `commit`).
#[derive(Debug, Default)]
struct Flow {
    /// Give up at once rather than wait for room.
    give_up: std::sync::atomic::AtomicBool,
    /// The peer's process id once the handshake is done (0 before).
    peer: std::sync::atomic::AtomicU32,
    /// The handler found the peer gone (a frame was given up).
    lost: std::sync::atomic::AtomicBool,
}

impl Flow {
    /// iceoryx2's back-pressure handler: called while the subscriber's buffer is full.
    fn decide(
        &self,
        info: &iceoryx2::port::BackpressureInfo,
    ) -> iceoryx2::port::BackpressureAction {
        use iceoryx2::port::BackpressureAction;
        use std::sync::atomic::Ordering::Relaxed;
        if self.give_up.load(Relaxed) {
            return BackpressureAction::DiscardData;
        }
        let peer = self.peer.load(Relaxed);
        if info.retries % 1024 == 1023 && peer != 0 && crate::sys::gone(peer) {
            self.lost.store(true, Relaxed);
            return BackpressureAction::DiscardDataAndFail;
        }
        if info.retries > 64 {
            // The subscriber is slow: stop burning the core it may share.
            std::thread::sleep(Duration::from_micros(20));
        }
        BackpressureAction::Retry
    }
}

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
struct Side<S: Service> {
    services: [iceoryx2::service::port_factory::publish_subscribe::PortFactory<S, Bytes, ()>; 2],
    _events: Option<[iceoryx2::service::port_factory::event::PortFactory<S>; 2]>,
    _node: Node<S>,
}

/// The ports of one side, before the handshake.
struct Ports<S: Service> {
    publisher: Publisher<S, Bytes, ()>,
    flow: Arc<Flow>,
    subscriber: Subscriber<S, Bytes, ()>,
    notifier: Option<Notifier<S>>,
    listener: Option<Listener<S>>,
    /// Index in `side.services` of the service this side subscribes to.
    inbound: usize,
    side: Arc<Side<S>>,
    max_frame: usize,
    wait: WaitStrategy,
}

fn open<S: Service>(endpoint: &Endpoint, listens: bool) -> Result<Ports<S>, SetupError> {
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
    let flow = Arc::new(Flow::default());
    let decides = flow.clone();
    let publisher = services[out]
        .publisher_builder()
        .initial_max_slice_len((*max_frame as usize).max(HELLO_LEN))
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .set_backpressure_handler(move |info: &iceoryx2::port::BackpressureInfo| {
            decides.decide(info)
        })
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
        flow,
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

/// Publishes one frame (and notifies, with block waits); `Ok(false)` when it reached no
/// subscriber (a full buffer, or none connected yet).
fn publish<S: Service>(
    publisher: &Publisher<S, Bytes, ()>,
    notifier: Option<&Notifier<S>>,
    frame: &[u8],
) -> Result<bool, SendError> {
    let sample = publisher
        .loan_slice_uninit(frame.len())
        .map_err(|_| SendError::Io(nix::errno::Errno::ENOMEM))?;
    let sample = sample.write_from_slice(frame);
    // Undeliverable: the handler gave up on a peer that is gone.
    let reached = sample.send().map_err(|_| SendError::Disconnected)?;
    if reached > 0 {
        if let Some(n) = notifier {
            let _ = n.notify();
        }
    }
    Ok(reached > 0)
}

fn handshake<S: Service>(
    p: &Ports<S>,
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
        p.flow
            .give_up
            .store(true, std::sync::atomic::Ordering::Relaxed);
        loop {
            match publish(&p.publisher, p.notifier.as_ref(), &HELLO.bytes()) {
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
            Ok(Some(s)) => break HELLO.parse(s.payload(), target)?,
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

fn halves<S: Service>(p: Ports<S>, peer: u32) -> (IoxTxOf<S>, IoxRxOf<S>) {
    let Ports {
        publisher,
        flow,
        subscriber,
        notifier,
        listener,
        inbound,
        side,
        max_frame,
        wait,
    } = p;
    flow.peer.store(peer, std::sync::atomic::Ordering::Relaxed);
    flow.give_up
        .store(false, std::sync::atomic::Ordering::Relaxed);
    (
        IoxTxOf {
            publisher,
            flow,
            notifier,
            peer,
            outbound: 1 - inbound,
            max_frame,
            side: side.clone(),
        },
        IoxRxOf {
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

/// The sending half of an `iceoryx2` endpoint, over the service `S`.
pub struct IoxTxOf<S: Service> {
    publisher: Publisher<S, Bytes, ()>,
    flow: Arc<Flow>,
    notifier: Option<Notifier<S>>,
    peer: u32,
    /// Index in `side.services` of the service this half publishes on.
    outbound: usize,
    max_frame: usize,
    side: Arc<Side<S>>,
}

/// The receiving half of an `iceoryx2` endpoint, over the service `S`.
pub struct IoxRxOf<S: Service> {
    /// A sample longer than the caller's buffer, kept for the next call.
    held: Option<Sample<S, Bytes, ()>>,
    subscriber: Subscriber<S, Bytes, ()>,
    listener: Option<Listener<S>>,
    peer: u32,
    inbound: usize,
    max_frame: usize,
    wait: WaitStrategy,
    closed: bool,
    side: Arc<Side<S>>,
}

impl<S: Service> std::fmt::Debug for IoxTxOf<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoxTx").field("peer", &self.peer).finish()
    }
}

impl<S: Service> std::fmt::Debug for IoxRxOf<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoxRx").field("peer", &self.peer).finish()
    }
}

impl<S: Service> IoxTxOf<S> {
    /// Whether the peer's subscriber is gone, or the peer itself.
    fn peer_left(&self) -> bool {
        self.side.services[self.outbound]
            .dynamic_config()
            .number_of_subscribers()
            == 0
            || crate::sys::gone(self.peer)
    }

    fn checked(&self, len: usize) -> Result<(), SendError> {
        if len > self.max_frame {
            return Err(SendError::FrameTooLarge {
                len,
                max: self.max_frame,
            });
        }
        Ok(())
    }
}

impl<S: Service> Tx for IoxTxOf<S> {
    fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        self.checked(frame.len())?;
        // Waits for room in the handler (give_up is false outside try_send).
        if publish(&self.publisher, self.notifier.as_ref(), frame)? {
            Ok(())
        } else {
            // No subscriber at all: the peer's went.
            Err(SendError::Disconnected)
        }
    }
    fn try_send(&mut self, frame: &[u8]) -> Result<(), TrySendError> {
        use std::sync::atomic::Ordering::Relaxed;
        self.checked(frame.len())?;
        self.flow.give_up.store(true, Relaxed);
        let sent = publish(&self.publisher, self.notifier.as_ref(), frame);
        self.flow.give_up.store(false, Relaxed);
        if sent? {
            Ok(())
        } else if self.peer_left() {
            Err(SendError::Disconnected.into())
        } else {
            Err(TrySendError::Full)
        }
    }
    fn max_frame_len(&self) -> usize {
        self.max_frame
    }
}

impl<S: Service> IoxRxOf<S> {
    /// Whether the peer's publisher is gone, or the peer itself.
    fn peer_left(&self) -> bool {
        self.side.services[self.inbound]
            .dynamic_config()
            .number_of_publishers()
            == 0
            || crate::sys::gone(self.peer)
    }

    /// The next sample if one is there now (a held one first).
    fn poll_sample(&mut self) -> Result<Option<Sample<S, Bytes, ()>>, RecvError> {
        if let Some(s) = self.held.take() {
            return Ok(Some(s));
        }
        if self.closed {
            return Err(RecvError::Disconnected);
        }
        self.subscriber
            .receive()
            .map_err(|_| RecvError::Io(nix::errno::Errno::EIO))
    }

    /// Nothing was there: `Disconnected` if the peer left and nothing is left of what it
    /// sent, else what is left, or `None` while the peer is there.
    fn left(&mut self) -> Result<Option<Sample<S, Bytes, ()>>, RecvError> {
        if !self.peer_left() {
            return Ok(None);
        }
        match self.poll_sample()? {
            Some(s) => Ok(Some(s)),
            None => {
                self.closed = true;
                Err(RecvError::Disconnected)
            }
        }
    }

    /// Waits for a sample until `deadline` (spinning or in the event listener).
    fn next_sample(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<Sample<S, Bytes, ()>>, RecvError> {
        // The clock is read only once a poll found nothing, and while spinning every
        // SPINS_PER_CLOCK polls: a sample that is there costs no clock read.
        const SPINS_PER_CLOCK: u32 = 256;
        if let Some(s) = self.poll_sample()? {
            return Ok(Some(s));
        }
        let mut checked = Instant::now();
        let mut spins = 0u32;
        loop {
            if let Some(s) = self.poll_sample()? {
                return Ok(Some(s));
            }
            let spinning = !matches!((&self.listener, self.wait), (Some(_), WaitStrategy::Block));
            if spinning {
                spins += 1;
                if spins % SPINS_PER_CLOCK != 0 {
                    std::hint::spin_loop();
                    continue;
                }
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return self.left();
            }
            match (&self.listener, self.wait) {
                (Some(l), WaitStrategy::Block) => {
                    let mut slice = LIVENESS;
                    if let Some(d) = deadline {
                        slice = slice.min(d.saturating_duration_since(now));
                    }
                    if l.timed_wait(|_| {}, slice).unwrap_or(0) == 0 {
                        if let Some(s) = self.left()? {
                            return Ok(Some(s));
                        }
                    }
                }
                _ => {
                    std::hint::spin_loop();
                    if now.duration_since(checked) >= LIVENESS {
                        checked = now;
                        if let Some(s) = self.left()? {
                            return Ok(Some(s));
                        }
                    }
                }
            }
        }
    }

    /// Copies a sample out, or keeps it when it is longer than `buf`.
    fn copy_out(&mut self, s: Sample<S, Bytes, ()>, buf: &mut [u8]) -> Result<usize, RecvError> {
        let m: &[u8] = s.payload();
        let n = m.len();
        if n > buf.len() {
            self.held = Some(s);
            return Err(RecvError::Truncated { needed: n });
        }
        buf[..n].copy_from_slice(m);
        Ok(n)
    }
}

impl<S: Service> Rx for IoxRxOf<S> {
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, RecvError> {
        loop {
            if let Some(s) = self.next_sample(None)? {
                return self.copy_out(s, buf);
            }
        }
    }
    fn try_recv(&mut self, buf: &mut [u8]) -> Result<usize, TryRecvError> {
        let s = match self.poll_sample()? {
            Some(s) => s,
            None => self.left()?.ok_or(TryRecvError::Empty)?,
        };
        Ok(self.copy_out(s, buf)?)
    }
    fn recv_timeout(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, RecvTimeoutError> {
        match self.next_sample(Some(Instant::now() + timeout))? {
            Some(s) => Ok(self.copy_out(s, buf)?),
            None => Err(RecvTimeoutError::Timeout),
        }
    }
    fn max_frame_len(&self) -> usize {
        self.max_frame
    }
}

/// The listening side: its node and ports made, waiting for the peer's hello.
pub struct IoxListenerOf<S: Service> {
    ports: Ports<S>,
    endpoint: Endpoint,
}

impl<S: Service> std::fmt::Debug for IoxListenerOf<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoxListener")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// The sending half of the [`Iceoryx2`] transport.
pub type IoxTx = IoxTxOf<Threadsafe>;
/// The receiving half of the [`Iceoryx2`] transport.
pub type IoxRx = IoxRxOf<Threadsafe>;
/// The listening side of the [`Iceoryx2`] transport.
pub type IoxListener = IoxListenerOf<Threadsafe>;

fn listen<S: Service>(endpoint: &Endpoint) -> Result<IoxListenerOf<S>, SetupError> {
    Ok(IoxListenerOf {
        ports: open(endpoint, true)?,
        endpoint: endpoint.clone(),
    })
}

fn accept<S: Service>(
    listener: IoxListenerOf<S>,
    timeout: Duration,
) -> Result<(IoxTxOf<S>, IoxRxOf<S>), SetupError> {
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

fn connect<S: Service>(
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<(IoxTxOf<S>, IoxRxOf<S>), SetupError> {
    let target = endpoint.to_string();
    let ports = open(endpoint, false)?;
    let peer = handshake(&ports, Instant::now() + timeout, &target, timeout, true)?;
    Ok(halves(ports, peer))
}

impl Transport for Iceoryx2 {
    const KIND: TransportKind = TransportKind::Iceoryx2;
    type Tx = IoxTx;
    type Rx = IoxRx;
    type Listener = IoxListener;

    fn listen(endpoint: &Endpoint) -> Result<IoxListener, SetupError> {
        listen(endpoint)
    }
    fn resolved(listener: &IoxListener) -> Endpoint {
        listener.endpoint.clone()
    }
    fn accept(listener: IoxListener, timeout: Duration) -> Result<(IoxTx, IoxRx), SetupError> {
        accept(listener, timeout)
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
        connect(endpoint, timeout)
    }
}

/// iceoryx2 for two roles that each use both halves on one thread (the harness's
/// latency and throughput roles): the local `ipc` service, whose ports are not `Send` and
/// skip the thread-safe ports' locking, as iceoryx2's own benchmarks and a single-threaded
/// application use it. A [`Link`](crate::Link), not a [`Transport`]: its halves cannot go
/// to other threads.
#[derive(Debug, Clone, Copy)]
pub struct Iceoryx2Local;

impl crate::Link for Iceoryx2Local {
    type Tx = IoxTxOf<ipc::Service>;
    type Rx = IoxRxOf<ipc::Service>;
    type Listener = IoxListenerOf<ipc::Service>;

    fn listen(endpoint: &Endpoint) -> Result<Self::Listener, SetupError> {
        listen(endpoint)
    }
    fn resolved(listener: &Self::Listener) -> Endpoint {
        listener.endpoint.clone()
    }
    fn accept(
        listener: Self::Listener,
        timeout: Duration,
    ) -> Result<(Self::Tx, Self::Rx), SetupError> {
        accept(listener, timeout)
    }
    fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<(Self::Tx, Self::Rx), SetupError> {
        connect(endpoint, timeout)
    }
}

/// A frame lent in place: a sample of the publisher's pool, sent by `commit`.
pub struct IoxLoan<'a, S: Service> {
    sample: iceoryx2::sample_mut::SampleMut<S, Bytes, ()>,
    notifier: Option<&'a Notifier<S>>,
}

impl<S: Service> std::fmt::Debug for IoxLoan<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoxLoan")
            .field("len", &self.sample.payload().len())
            .finish()
    }
}

impl<S: Service> std::ops::Deref for IoxLoan<'_, S> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.sample.payload()
    }
}

impl<S: Service> std::ops::DerefMut for IoxLoan<'_, S> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.sample.payload_mut()
    }
}

impl<S: Service> TxLoan for IoxLoan<'_, S> {
    fn commit(self) {
        // Waits for room in the handler as `send` does; a peer that went meanwhile loses
        // the frame, and the next `loan` reports it.
        if let Ok(reached) = self.sample.send() {
            if reached > 0 {
                if let Some(n) = self.notifier {
                    let _ = n.notify();
                }
            }
        }
    }
}

impl<S: Service + 'static> LoanTx for IoxTxOf<S> {
    type Loan<'a> = IoxLoan<'a, S>;

    fn loan(&mut self, len: usize) -> Result<IoxLoan<'_, S>, SendError> {
        self.checked(len)?;
        // A commit that found the peer gone gave its frame up: say so now.
        if self.flow.lost.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(SendError::Disconnected);
        }
        let sample = self
            .publisher
            .loan_slice_uninit(len)
            .map_err(|_| SendError::Io(nix::errno::Errno::ENOMEM))?;
        Ok(IoxLoan {
            sample: assume_bytes(sample),
            notifier: self.notifier.as_ref(),
        })
    }
}

/// A loaned sample's bytes as they are, as the other transports' loans lend theirs (the
/// caller writes what it sends; nothing is zeroed first).
#[allow(unsafe_code)]
fn assume_bytes<S: Service>(
    sample: iceoryx2::sample_mut_uninit::SampleMutUninit<S, [std::mem::MaybeUninit<u8>], ()>,
) -> iceoryx2::sample_mut::SampleMut<S, Bytes, ()> {
    // SAFETY: the payload lies in the publisher's data segment, a shared-memory mapping of
    // a file that ftruncate sized (zero-filled by the kernel) and that samples have been
    // written into since: every byte of it holds a value, and any value is a valid `u8`.
    // iceoryx2 types it `MaybeUninit` because it cannot know the payload type's validity;
    // for bytes, `assume_init` only states what the mapping guarantees.
    unsafe { sample.assume_init() }
}

/// A frame read in place: the received sample, released when dropped.
pub struct IoxFrame<S: Service> {
    sample: Sample<S, Bytes, ()>,
}

impl<S: Service> std::fmt::Debug for IoxFrame<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoxFrame")
            .field("len", &self.sample.payload().len())
            .finish()
    }
}

impl<S: Service> std::ops::Deref for IoxFrame<S> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.sample.payload()
    }
}

impl<S: Service + 'static> LoanRx for IoxRxOf<S> {
    type Frame<'a> = IoxFrame<S>;

    fn recv_borrowed(&mut self) -> Result<IoxFrame<S>, RecvError> {
        loop {
            if let Some(sample) = self.next_sample(None)? {
                return Ok(IoxFrame { sample });
            }
        }
    }
}
