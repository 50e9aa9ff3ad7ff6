//! Endpoint specs: small serde values that the parent creates and hands to both roles.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

use crate::SetupError;

/// The largest frame a transport accepts unless configured otherwise (16 MiB).
pub const DEFAULT_MAX_FRAME: u32 = 16 << 20;

/// The transport kinds this build knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// A pair of named FIFOs, one per direction.
    Pipe,
    /// A Unix domain stream socket.
    Uds,
    /// TCP, loopback by default.
    Tcp,
    /// Two SPSC rings in one shared segment.
    Shm,
    /// ZeroMQ-like PUSH/PULL over one of the others.
    Queue,
    /// POSIX message queues, one per direction (a peer: the kernel's own queues).
    Mq,
    /// libzmq (a peer): PAIR, or PUSH/PULL one per direction, over ipc:// or tcp://.
    Zmq,
    /// Eclipse iceoryx2 (a peer): a publish-subscribe service per direction.
    Iceoryx2,
}

impl TransportKind {
    /// Every kind, in the order `harness list` shows them.
    pub const ALL: [TransportKind; 8] = [
        TransportKind::Pipe,
        TransportKind::Uds,
        TransportKind::Tcp,
        TransportKind::Shm,
        TransportKind::Queue,
        TransportKind::Mq,
        TransportKind::Zmq,
        TransportKind::Iceoryx2,
    ];

    /// The name used in configs and CSV files.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Pipe => "pipe",
            TransportKind::Uds => "uds",
            TransportKind::Tcp => "tcp",
            TransportKind::Shm => "shm",
            TransportKind::Queue => "queue",
            TransportKind::Mq => "mq",
            TransportKind::Zmq => "zmq",
            TransportKind::Iceoryx2 => "iceoryx2",
        }
    }

    /// One line on what the kind is.
    pub fn describe(self) -> &'static str {
        match self {
            TransportKind::Pipe => "two named FIFOs (one per direction), u32 length prefix",
            TransportKind::Uds => {
                "Unix domain stream socket in a private 0700 directory, u32 length prefix"
            }
            TransportKind::Tcp => {
                "TCP over loopback, TCP_NODELAY, OS-chosen port, u32 length prefix"
            }
            TransportKind::Shm => "two lock-free SPSC rings in one shared segment under /dev/shm",
            TransportKind::Queue => {
                "ZeroMQ-like PUSH/PULL over `over` (uds, tcp or shm): asynchronous sends with a high-water mark, block or drop after retries"
            }
            TransportKind::Mq => {
                "peer: POSIX message queues (mq_open, one per direction, mode 0600, unlinked after the run), mq_send/mq_timedreceive copying each frame; message size = the run's largest frame, depth `mq_depth`"
            }
            TransportKind::Zmq => {
                "peer: libzmq 4.3 (built from source by the zmq crate): `zmq_pattern` pair (one PAIR socket) or pushpull (PUSH/PULL, one per direction), over `over` uds (ipc://) or tcp; zmq_send/zmq_recv copying each frame; SNDHWM/RCVHWM = `hwm`"
            }
            TransportKind::Iceoryx2 => {
                "peer: Eclipse iceoryx2 0.10, a publish-subscribe service of byte slices per direction (subscriber buffer 16, history 0), each frame copied into a loaned sample and out of the received one; wait spin polls `receive`, block also notifies an event service and sleeps in its listener"
            }
        }
    }

    /// Whether this build has the kind (a peer behind a cargo feature may be left out).
    pub fn built(self) -> bool {
        let zmq = cfg!(feature = "zmq");
        let iceoryx2 = cfg!(feature = "iceoryx2");
        (self != TransportKind::Zmq || zmq) && (self != TransportKind::Iceoryx2 || iceoryx2)
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TransportKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TransportKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = TransportKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown transport `{s}` (known: {})", names.join(", "))
            })
    }
}

/// How a shared-memory half waits for its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WaitStrategy {
    /// Busy-poll with a pause hint: lowest latency, one core per waiting role.
    Spin,
    /// Poll with `sched_yield`: shares a core, at a system call per poll.
    Yield,
    /// Spin for a bounded budget, then raise a waiter flag and sleep on a futex on the
    /// peer's position word; the peer wakes it only when the flag is raised.
    Block,
}

impl WaitStrategy {
    /// The name used in configs and CSV files.
    pub fn name(self) -> &'static str {
        match self {
            WaitStrategy::Spin => "spin",
            WaitStrategy::Yield => "yield",
            WaitStrategy::Block => "block",
        }
    }
}

/// Options for [`Endpoint::prepare`].
#[derive(Debug, Clone)]
pub struct EndpointOptions {
    /// Largest frame either side may send.
    pub max_frame: u32,
    /// Address TCP listens on; the port is always chosen by the OS.
    pub tcp_host: IpAddr,
    /// Data bytes of each `shm` ring: a power of two holding at least two maximum frames.
    pub shm_capacity: u32,
    /// How `shm` halves wait.
    pub wait: WaitStrategy,
    /// With [`WaitStrategy::Block`]: how long to spin before sleeping, microseconds.
    pub spin_us: u32,
    /// What a `queue` endpoint runs over.
    pub over: TransportKind,
    /// A `queue` sender's high-water mark, frames.
    pub hwm: u32,
    /// What a `queue` sender does when its queue is full.
    pub policy: crate::queue::FullPolicy,
    /// Frames a `queue` sender writes per system call (1: each straight out when nothing
    /// is queued; more: all queued and written in batches).
    pub batch: u32,
    /// Messages each `mq` queue holds.
    pub mq_depth: u32,
    /// The sockets of a `zmq` endpoint (its `over` and `hwm` are the queue's keys).
    pub zmq_pattern: ZmqPattern,
}

/// The ZeroMQ sockets of a `zmq` endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZmqPattern {
    /// One PAIR socket each side, both directions.
    Pair,
    /// A PUSH and a PULL socket each side, one per direction.
    PushPull,
}

impl ZmqPattern {
    /// The name used in configs and CSV files.
    pub fn name(self) -> &'static str {
        match self {
            ZmqPattern::Pair => "pair",
            ZmqPattern::PushPull => "pushpull",
        }
    }
}

impl Default for EndpointOptions {
    fn default() -> Self {
        EndpointOptions {
            max_frame: DEFAULT_MAX_FRAME,
            tcp_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            shm_capacity: 64 << 20,
            wait: WaitStrategy::Spin,
            spin_us: 50,
            over: TransportKind::Uds,
            hwm: 1000,
            policy: crate::queue::FullPolicy::default(),
            batch: 1,
            mq_depth: 10,
            zmq_pattern: ZmqPattern::Pair,
        }
    }
}

/// Where and how two roles meet. Side A listens (or opens first), side B connects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Endpoint {
    /// Two FIFOs created by the parent.
    Pipe {
        /// FIFO that side A writes and side B reads.
        a_to_b: PathBuf,
        /// FIFO that side B writes and side A reads.
        b_to_a: PathBuf,
        /// Largest frame.
        max_frame: u32,
    },
    /// A Unix socket path inside a private directory.
    Uds {
        /// Socket file path.
        path: PathBuf,
        /// Largest frame.
        max_frame: u32,
    },
    /// A TCP address; port 0 until side A has bound it.
    Tcp {
        /// Address to bind or connect to.
        addr: SocketAddr,
        /// Largest frame.
        max_frame: u32,
    },
    /// A shared segment holding two rings; ring 0 carries A to B, ring 1 B to A.
    Shm {
        /// The segment file (under /dev/shm), created by the parent.
        path: PathBuf,
        /// Data bytes of each ring.
        capacity: u32,
        /// Largest frame.
        max_frame: u32,
        /// How the halves wait.
        wait: WaitStrategy,
        /// Spin budget before sleeping (`block`), microseconds.
        #[serde(default)]
        spin_us: u32,
    },
    /// `queue` over another transport's endpoint.
    Queue {
        /// The endpoint it runs over.
        over: Box<Endpoint>,
        /// The sender's high-water mark, frames.
        hwm: u32,
        /// What a sender does when its queue is full.
        policy: crate::queue::FullPolicy,
        /// Frames the sender writes per system call (see [`crate::QueueTx::batched`]).
        #[serde(default = "one")]
        batch: u32,
    },
    /// Two POSIX message queues created by the parent.
    Mq {
        /// The queue side A sends on (a name starting with `/`).
        a_to_b: String,
        /// The queue side B sends on.
        b_to_a: String,
        /// Largest frame (each queue's message size is at least this).
        max_frame: u32,
        /// Messages each queue holds.
        depth: u32,
    },
    /// libzmq sockets: side A binds, side B connects.
    Zmq {
        /// Which sockets.
        pattern: ZmqPattern,
        /// `PAIR`: the one address; `PUSH`/`PULL`: where A pulls (B to A).
        a: String,
        /// `PUSH`/`PULL`: where A pushes (A to B); unused by `PAIR`.
        b: String,
        /// Largest frame.
        max_frame: u32,
        /// Send and receive high-water marks, messages.
        hwm: u32,
    },
    /// iceoryx2 services named by the parent.
    Iceoryx2 {
        /// What every file and service of the endpoint is named with.
        prefix: String,
        /// Where iceoryx2 keeps its files other than shared memory (in the run's
        /// directory).
        root: PathBuf,
        /// Largest frame.
        max_frame: u32,
        /// How a receiver waits: spin (poll) or block (an event service).
        wait: WaitStrategy,
    },
}

impl Endpoint {
    /// Creates what the endpoint needs inside `dir` (a private directory the caller owns
    /// and removes): the FIFOs for `pipe`, nothing yet for `uds` and `tcp`.
    pub fn prepare(
        kind: TransportKind,
        dir: &Path,
        opts: &EndpointOptions,
    ) -> Result<Endpoint, SetupError> {
        if opts.max_frame == 0 || opts.max_frame > u32::MAX - 8 {
            return Err(SetupError::Invalid(format!(
                "max_frame {} out of range",
                opts.max_frame
            )));
        }
        let max_frame = opts.max_frame;
        Ok(match kind {
            TransportKind::Pipe => {
                let a_to_b = dir.join("a_to_b.fifo");
                let b_to_a = dir.join("b_to_a.fifo");
                for p in [&a_to_b, &b_to_a] {
                    nix::unistd::mkfifo(p, Mode::S_IRUSR | Mode::S_IWUSR)
                        .map_err(|e| SetupError::io("mkfifo", p.display(), e))?;
                }
                Endpoint::Pipe {
                    a_to_b,
                    b_to_a,
                    max_frame,
                }
            }
            TransportKind::Uds => Endpoint::Uds {
                path: dir.join("uds.sock"),
                max_frame,
            },
            TransportKind::Tcp => Endpoint::Tcp {
                addr: SocketAddr::new(opts.tcp_host, 0),
                max_frame,
            },
            TransportKind::Shm => crate::shm::prepare(opts)?,
            TransportKind::Mq => crate::mq::prepare(dir, opts)?,
            #[cfg(feature = "zmq")]
            TransportKind::Zmq => crate::zeromq::prepare(dir, opts)?,
            #[cfg(not(feature = "zmq"))]
            TransportKind::Zmq => {
                return Err(SetupError::Invalid(
                    "zmq is not in this build (cargo feature `zmq`)".into(),
                ))
            }
            #[cfg(feature = "iceoryx2")]
            TransportKind::Iceoryx2 => crate::iox::prepare(dir, opts)?,
            #[cfg(not(feature = "iceoryx2"))]
            TransportKind::Iceoryx2 => {
                return Err(SetupError::Invalid(
                    "iceoryx2 is not in this build (cargo feature `iceoryx2`)".into(),
                ))
            }
            TransportKind::Queue => {
                if opts.over == TransportKind::Queue {
                    return Err(SetupError::Invalid(
                        "a queue cannot run over a queue".into(),
                    ));
                }
                Endpoint::Queue {
                    over: Box::new(Endpoint::prepare(opts.over, dir, opts)?),
                    hwm: opts.hwm,
                    policy: opts.policy,
                    batch: opts.batch.max(1),
                }
            }
        })
    }

    /// Removes what [`Endpoint::prepare`] made outside the caller's directory (the
    /// `shm` segment under /dev/shm). Call it when the run ends, also when it failed.
    pub fn cleanup(&self) {
        match self {
            Endpoint::Shm { path, .. } => {
                let _ = std::fs::remove_file(path);
            }
            Endpoint::Queue { over, .. } => over.cleanup(),
            Endpoint::Mq { a_to_b, b_to_a, .. } => crate::mq::unlink(a_to_b, b_to_a),
            // iceoryx2 keeps some of its shared memory (its global management segment)
            // past its nodes: everything named with the endpoint's prefix goes.
            Endpoint::Iceoryx2 { prefix, .. } => {
                if let Ok(entries) = std::fs::read_dir(crate::names::shm_dir()) {
                    for e in entries.flatten() {
                        if e.file_name().to_string_lossy().starts_with(prefix.as_str()) {
                            let _ = std::fs::remove_file(e.path());
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// This endpoint's transport kind.
    pub fn kind(&self) -> TransportKind {
        match self {
            Endpoint::Pipe { .. } => TransportKind::Pipe,
            Endpoint::Uds { .. } => TransportKind::Uds,
            Endpoint::Tcp { .. } => TransportKind::Tcp,
            Endpoint::Shm { .. } => TransportKind::Shm,
            Endpoint::Queue { .. } => TransportKind::Queue,
            Endpoint::Mq { .. } => TransportKind::Mq,
            Endpoint::Zmq { .. } => TransportKind::Zmq,
            Endpoint::Iceoryx2 { .. } => TransportKind::Iceoryx2,
        }
    }

    /// The transport under a `queue` endpoint; this endpoint's own kind otherwise.
    pub fn base_kind(&self) -> TransportKind {
        match self {
            Endpoint::Queue { over, .. } => over.base_kind(),
            other => other.kind(),
        }
    }

    /// Largest frame either side may send.
    pub fn max_frame(&self) -> usize {
        match self {
            Endpoint::Pipe { max_frame, .. }
            | Endpoint::Uds { max_frame, .. }
            | Endpoint::Tcp { max_frame, .. }
            | Endpoint::Shm { max_frame, .. }
            | Endpoint::Mq { max_frame, .. }
            | Endpoint::Zmq { max_frame, .. }
            | Endpoint::Iceoryx2 { max_frame, .. } => *max_frame as usize,
            Endpoint::Queue { over, .. } => over.max_frame(),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Pipe { a_to_b, b_to_a, .. } => {
                write!(f, "pipe {} / {}", a_to_b.display(), b_to_a.display())
            }
            Endpoint::Uds { path, .. } => write!(f, "uds {}", path.display()),
            Endpoint::Tcp { addr, .. } => write!(f, "tcp {addr}"),
            Endpoint::Shm { path, wait, .. } => {
                write!(f, "shm {} ({})", path.display(), wait.name())
            }
            Endpoint::Queue {
                over, hwm, batch, ..
            } => write!(f, "queue (hwm {hwm}, batch {batch}) over {over}"),
            Endpoint::Mq {
                a_to_b,
                b_to_a,
                depth,
                ..
            } => {
                write!(f, "mq {a_to_b} / {b_to_a} (depth {depth})")
            }
            Endpoint::Zmq {
                pattern, a, b, hwm, ..
            } => match pattern {
                ZmqPattern::Pair => write!(f, "zmq pair {a} (hwm {hwm})"),
                ZmqPattern::PushPull => write!(f, "zmq push/pull {a} / {b} (hwm {hwm})"),
            },
            Endpoint::Iceoryx2 { prefix, wait, .. } => {
                write!(f, "iceoryx2 {prefix}* ({})", wait.name())
            }
        }
    }
}

fn one() -> u32 {
    1
}
