//! `mq`: POSIX message queues as a peer transport, one queue per direction.
//!
//! The parent creates both queues ([`prepare`]: `mq_open` with `O_CREAT | O_EXCL`, mode
//! 0600, names `/ipcbench-mq-<pid>-<random>-ab` and `-ba`) with a message size of the
//! run's largest frame and a depth of `mq_depth` messages, and writes their names to
//! `mq.names` in the run's directory so that a later harness can unlink what a killed one
//! left; [`Endpoint::cleanup`] unlinks them when the run ends.
//!
//! Where the queues differ from the [`Tx`]/[`Rx`] contract, this module makes up the
//! difference, so a caller sees the trait's documented behaviour:
//! - **Peer exit.** A queue has no notion of its peer: a receiver whose sender died would
//!   wait forever. Frames go at priority 1; a sending half that is dropped puts an empty
//!   message at priority 0 after them, its goodbye, which the peer reads as
//!   `Disconnected` once every frame is taken (and its own sending half then reports
//!   `Disconnected` too). A peer killed before it could say goodbye is found by its
//!   process id, exchanged in the handshake: every blocking wait wakes at least every
//!   [`LIVENESS`] to check it still runs (a zombie counts as gone).
//! - **Truncation.** `mq_receive` refuses a buffer shorter than the queue's message size
//!   and consumes nothing; a message taken into this half's own buffer and found longer
//!   than the caller's stays there, so the next call with `needed` bytes receives it.
//! - **Framing.** Messages keep their boundaries in the kernel, so there is no length
//!   prefix of ours a peer could corrupt.
//!
//! System limits (`/proc/sys/fs/mqueue/msgsize_max` and `msg_max` for an unprivileged
//! user, the kernel's hard limits for root, and `RLIMIT_MSGQUEUE` for the bytes of all a
//! user's queues) are checked by [`check_limits`], which the harness calls when it reads a
//! config.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mqueue::{self, MQ_OFlag, MqAttr, MqdT};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;

use crate::peer::{Attempt, Hello, HELLO_LEN};
use crate::{
    Endpoint, EndpointOptions, RecvError, RecvTimeoutError, Rx, SendError, SetupError, Transport,
    TransportKind, TryRecvError, TrySendError, Tx,
};

pub use crate::peer::LIVENESS;

/// The file in a run's directory that names the queues made there.
pub const NAMES_FILE: &str = "mq.names";

/// The kernel's own ceilings (include/linux/ipc_namespace.h): what root may ask for.
const HARD_MSGSIZE_MAX: u64 = 16 << 20;
const HARD_MSG_MAX: u64 = 65_536;

/// The priority of every frame (and the hello).
const FRAME: u32 = 1;
/// The priority of a sender's goodbye: lower than any frame's, so it comes out after all
/// of them.
const GOODBYE: u32 = 0;

/// The handshake: a magic and the sender's process id.
const HELLO: Hello = Hello {
    magic: b"IPCB-MQ1",
    name: "mq",
};

/// The least message size a queue is made with (the handshake must fit).
const MIN_MSGSIZE: u32 = HELLO_LEN as u32;

/// POSIX message queues, one per direction.
#[derive(Debug, Clone, Copy)]
pub struct Mq;

/// The largest message size a queue may be made with here: the kernel's hard limit for a
/// process with CAP_SYS_RESOURCE, `/proc/sys/fs/mqueue/msgsize_max` for others.
pub fn msgsize_limit() -> u64 {
    if has_cap_sys_resource() {
        HARD_MSGSIZE_MAX
    } else {
        std::fs::read_to_string("/proc/sys/fs/mqueue/msgsize_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(8192)
    }
}

/// Which limit a queue's configuration breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitProblem {
    /// The message size (the run's largest frame) is over the system's.
    MsgSize(String),
    /// The depth, or the bytes of both queues, is over the system's.
    Depth(String),
}

/// Why two queues (one per direction) of `msgsize` bytes and `depth` messages cannot be
/// had here, every reason at once, each naming the limit. Reads the limits of this
/// system and process.
pub fn check_limits(msgsize: u64, depth: u32) -> Vec<LimitProblem> {
    // The kernel lifts its sysctl limits for CAP_SYS_RESOURCE, not for uid 0 as such.
    let privileged = has_cap_sys_resource();
    let read = |p: &str| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    let msgsize = msgsize.max(u64::from(MIN_MSGSIZE));
    let mut out = Vec::new();
    if depth == 0 {
        out.push(LimitProblem::Depth(
            "mq_depth 0: a queue holds at least one message".into(),
        ));
    }
    let size_max = msgsize_limit();
    let (depth_max, depth_what) = if privileged {
        (
            HARD_MSG_MAX,
            "the kernel's hard limit with CAP_SYS_RESOURCE (HARD_MSGMAX)",
        )
    } else {
        (
            read("/proc/sys/fs/mqueue/msg_max").unwrap_or(10),
            "/proc/sys/fs/mqueue/msg_max",
        )
    };
    if msgsize > size_max {
        let what = if privileged {
            "the kernel's hard limit with CAP_SYS_RESOURCE (HARD_MSGSIZEMAX)"
        } else {
            "/proc/sys/fs/mqueue/msgsize_max"
        };
        out.push(LimitProblem::MsgSize(format!(
            "a POSIX message queue's message size is at most {size_max} bytes here ({what}); this run's largest frame is {msgsize}"
        )));
    }
    if u64::from(depth) > depth_max {
        out.push(LimitProblem::Depth(format!(
            "mq_depth {depth} is over {depth_max}, the most messages a POSIX queue may hold here ({depth_what})"
        )));
    }
    let sized = msgsize.min(size_max);
    let need = 2 * queue_bytes(sized, depth);
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MSGQUEUE) {
        Ok((_, hard)) if need > hard && !privileged => out.push(LimitProblem::Depth(format!(
            "two queues of {depth} messages of {sized} bytes need {need} bytes, over RLIMIT_MSGQUEUE ({hard} bytes, `ulimit -q`): lower mq_depth or the frame size"
        ))),
        Ok(_) => {}
        Err(e) => out.push(LimitProblem::Depth(format!("reading RLIMIT_MSGQUEUE: {e}"))),
    }
    out
}

/// Whether this process may exceed the queue limits (CAP_SYS_RESOURCE, bit 24, in its
/// effective capabilities).
fn has_cap_sys_resource() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_string();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

/// The bytes the kernel charges to `RLIMIT_MSGQUEUE` for one queue (ipc/mqueue.c: the
/// messages, a pointer each and a tree node each).
fn queue_bytes(msgsize: u64, depth: u32) -> u64 {
    let depth = u64::from(depth);
    depth * msgsize + depth * 8 + depth.min(HARD_MSG_MAX) * 64
}

/// Raises this process's `RLIMIT_MSGQUEUE` to `need` bytes if it is lower (up to the hard
/// limit, or past it for root).
fn raise_rlimit(need: u64) -> Result<(), SetupError> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_MSGQUEUE)
        .map_err(|e| SetupError::io("getrlimit", "RLIMIT_MSGQUEUE", e))?;
    if soft >= need {
        return Ok(());
    }
    setrlimit(Resource::RLIMIT_MSGQUEUE, need, hard.max(need)).map_err(|e| {
        SetupError::Invalid(format!(
            "two POSIX queues need {need} bytes, over RLIMIT_MSGQUEUE ({soft} bytes, hard {hard}): {e}"
        ))
    })
}

fn cname(name: &str) -> Result<CString, SetupError> {
    CString::new(name).map_err(|_| SetupError::Invalid(format!("queue name {name:?}")))
}

/// Creates both queues of an endpoint in `dir` (see the module's documentation).
pub(crate) fn prepare(dir: &Path, opts: &EndpointOptions) -> Result<Endpoint, SetupError> {
    let msgsize = opts.max_frame.max(MIN_MSGSIZE);
    if let Some(p) = check_limits(u64::from(msgsize), opts.mq_depth)
        .into_iter()
        .next()
    {
        let (LimitProblem::MsgSize(why) | LimitProblem::Depth(why)) = p;
        return Err(SetupError::Invalid(why));
    }
    raise_rlimit(2 * queue_bytes(u64::from(msgsize), opts.mq_depth))?;
    let base = format!("/{}", crate::names::unique("mq"));
    let (a_to_b, b_to_a) = (format!("{base}-ab"), format!("{base}-ba"));
    // Named before they exist: a harness killed between the two opens leaves nothing a
    // later one cannot find.
    let listed = format!("{a_to_b}\n{b_to_a}\n");
    std::fs::write(dir.join(NAMES_FILE), listed)
        .map_err(|e| SetupError::io("writing", dir.join(NAMES_FILE).display(), e))?;
    let attr = MqAttr::new(0, i64::from(opts.mq_depth), i64::from(msgsize), 0);
    let made = Endpoint::Mq {
        a_to_b: a_to_b.clone(),
        b_to_a: b_to_a.clone(),
        max_frame: opts.max_frame,
        depth: opts.mq_depth,
    };
    for name in [&a_to_b, &b_to_a] {
        let c = cname(name)?;
        match mqueue::mq_open(
            c.as_c_str(),
            MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDWR,
            Mode::S_IRUSR | Mode::S_IWUSR,
            Some(&attr),
        ) {
            Ok(q) => {
                let _ = mqueue::mq_close(q);
            }
            Err(e) => {
                made.cleanup();
                return Err(SetupError::io("mq_open", name, e));
            }
        }
    }
    Ok(made)
}

/// Unlinks both queues of an endpoint (what `Endpoint::cleanup` does for `mq`).
pub(crate) fn unlink(a_to_b: &str, b_to_a: &str) {
    for name in [a_to_b, b_to_a] {
        if let Ok(c) = CString::new(name) {
            let _ = mqueue::mq_unlink(c.as_c_str());
        }
    }
}

/// Unlinks the queues a run directory's [`NAMES_FILE`] lists (only names of ours): for the
/// harness's sweep of what a killed run left. Returns how many were removed.
pub fn unlink_listed(file: &Path) -> usize {
    let Ok(text) = std::fs::read_to_string(file) else {
        return 0;
    };
    let mut removed = 0;
    for name in text.lines() {
        let ours = name
            .strip_prefix('/')
            .is_some_and(|n| crate::names::owner(n).is_some_and(|(k, _)| k == "mq"));
        if !ours {
            continue;
        }
        if let Ok(c) = CString::new(name) {
            if mqueue::mq_unlink(c.as_c_str()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// An open queue descriptor, closed when dropped (nix's `MqdT` is not).
#[derive(Debug)]
struct Mqd(Option<MqdT>);

impl Mqd {
    fn get(&self) -> &MqdT {
        // Some until dropped.
        self.0.as_ref().expect("an open queue descriptor")
    }
}

impl Drop for Mqd {
    fn drop(&mut self) {
        if let Some(q) = self.0.take() {
            let _ = mqueue::mq_close(q);
        }
    }
}

/// The open queues of one side: where it sends, where it receives (each opened twice, to
/// block and not to block), and the peer's process id once the handshake is done.
#[derive(Debug)]
struct Opened {
    send: Mqd,
    recv: Mqd,
    recv_nb: Mqd,
    max_frame: usize,
    msgsize: usize,
}

fn open(name: &str, flags: MQ_OFlag) -> Result<Mqd, SetupError> {
    mqueue::mq_open(cname(name)?.as_c_str(), flags, Mode::empty(), None)
        .map(|q| Mqd(Some(q)))
        .map_err(|e| SetupError::io("mq_open", name, e))
}

fn open_side(endpoint: &Endpoint, listens: bool) -> Result<Opened, SetupError> {
    let Endpoint::Mq {
        a_to_b,
        b_to_a,
        max_frame,
        ..
    } = endpoint
    else {
        return Err(SetupError::WrongKind {
            expected: TransportKind::Mq,
            found: endpoint.kind(),
        });
    };
    let (out, inn) = if listens {
        (a_to_b, b_to_a)
    } else {
        (b_to_a, a_to_b)
    };
    let send = open(out, MQ_OFlag::O_WRONLY | MQ_OFlag::O_NONBLOCK)?;
    let recv = open(inn, MQ_OFlag::O_RDONLY)?;
    let recv_nb = open(inn, MQ_OFlag::O_RDONLY | MQ_OFlag::O_NONBLOCK)?;
    let attr = mqueue::mq_getattr(recv.get()).map_err(|e| SetupError::io("mq_getattr", inn, e))?;
    Ok(Opened {
        send,
        recv,
        recv_nb,
        max_frame: *max_frame as usize,
        msgsize: attr.msgsize() as usize,
    })
}

/// Waits at most `timeout` for the peer's hello on `q`; its process id.
fn take_hello(
    q: &MqdT,
    msgsize: usize,
    timeout: Duration,
    target: &str,
) -> Result<u32, SetupError> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; msgsize];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(SetupError::Timeout {
                what: "the hello of the peer on",
                target: target.to_string(),
                timeout_ms: timeout.as_millis(),
            });
        }
        let mut prio = 0;
        match timed_receive(q, &mut buf, &mut prio, (deadline - now).min(LIVENESS)) {
            Ok(n) => return HELLO.parse(&buf[..n], target),
            Err(Errno::ETIMEDOUT | Errno::EINTR | Errno::EAGAIN) => continue,
            Err(e) => return Err(SetupError::io("mq_receive", target, e)),
        }
    }
}

/// `mq_timedreceive` with a relative timeout.
fn timed_receive(q: &MqdT, buf: &mut [u8], prio: &mut u32, wait: Duration) -> nix::Result<usize> {
    use nix::sys::time::TimeSpec;
    use nix::time::{clock_gettime, ClockId};
    let now = clock_gettime(ClockId::CLOCK_REALTIME)?;
    let until = now + TimeSpec::from_duration(wait);
    mqueue::mq_timedreceive(q, buf, prio, &until)
}

fn send_hello(q: &MqdT, deadline: Instant, target: &str) -> Result<(), SetupError> {
    loop {
        match mqueue::mq_send(q, &HELLO.bytes(), FRAME) {
            Ok(()) => return Ok(()),
            Err(Errno::EAGAIN) if Instant::now() < deadline => {
                let _ = wait_fd(q, PollFlags::POLLOUT, LIVENESS);
            }
            Err(e) => return Err(SetupError::io("mq_send", target, e)),
        }
    }
}

/// Polls a queue descriptor for `flags`, at most `wait`; whether it is ready.
fn wait_fd(q: &MqdT, flags: PollFlags, wait: Duration) -> bool {
    let mut fds = [PollFd::new(q.as_fd(), flags)];
    let ms = PollTimeout::try_from(wait.as_millis().min(60_000) as u32).unwrap_or(PollTimeout::MAX);
    matches!(nix::poll::poll(&mut fds, ms), Ok(n) if n > 0)
}

/// The sending half of an `mq` endpoint.
#[derive(Debug)]
pub struct MqTx {
    q: Mqd,
    peer: u32,
    /// Set by this side's receiving half when the peer said goodbye.
    closed: Arc<AtomicBool>,
    max_frame: usize,
}

/// The receiving half of an `mq` endpoint.
#[derive(Debug)]
pub struct MqRx {
    q: Mqd,
    q_nb: Mqd,
    peer: u32,
    /// The peer said goodbye (or is gone): shared with this side's sending half.
    closed: Arc<AtomicBool>,
    max_frame: usize,
    /// A message taken from the queue and not yet handed over: `buf[..len]`.
    held: Option<usize>,
    buf: Vec<u8>,
}

fn halves(o: Opened, peer: u32) -> (MqTx, MqRx) {
    let closed = Arc::new(AtomicBool::new(false));
    (
        MqTx {
            q: o.send,
            peer,
            closed: closed.clone(),
            max_frame: o.max_frame,
        },
        MqRx {
            q: o.recv,
            q_nb: o.recv_nb,
            peer,
            closed,
            max_frame: o.max_frame,
            held: None,
            buf: vec![0u8; o.msgsize],
        },
    )
}

impl Tx for MqTx {
    fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        loop {
            match self.try_send(frame) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full) => {
                    if !wait_fd(self.q.get(), PollFlags::POLLOUT, LIVENESS) && self.peer_left() {
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
        match mqueue::mq_send(self.q.get(), frame, FRAME) {
            Ok(()) => Ok(()),
            Err(Errno::EAGAIN) => {
                if self.peer_left() {
                    Err(SendError::Disconnected.into())
                } else {
                    Err(TrySendError::Full)
                }
            }
            Err(e) => Err(SendError::Io(e).into()),
        }
    }
    fn max_frame_len(&self) -> usize {
        self.max_frame
    }
}

impl MqTx {
    /// Whether the peer said goodbye or is gone.
    fn peer_left(&self) -> bool {
        self.closed.load(Ordering::Relaxed) || crate::sys::gone(self.peer)
    }
}

impl Drop for MqTx {
    /// Says goodbye: an empty message at [`GOODBYE`] priority, which the peer receives
    /// after every frame (lower priorities come out last). Waits at most [`LIVENESS`] for
    /// room; a peer that is gone learns it from its liveness check instead.
    fn drop(&mut self) {
        let deadline = Instant::now() + LIVENESS;
        while mqueue::mq_send(self.q.get(), &[], GOODBYE) == Err(Errno::EAGAIN)
            && Instant::now() < deadline
            && !self.peer_left()
        {
            wait_fd(self.q.get(), PollFlags::POLLOUT, Duration::from_millis(5));
        }
    }
}

impl MqRx {
    /// Hands over the held message if it fits `buf`.
    fn hand_over(&mut self, len: usize, buf: &mut [u8]) -> Result<usize, RecvError> {
        if len > buf.len() {
            self.held = Some(len);
            return Err(RecvError::Truncated { needed: len });
        }
        self.held = None;
        buf[..len].copy_from_slice(&self.buf[..len]);
        Ok(len)
    }

    /// One receive on `q` (blocking for at most `wait`, or not at all): into `buf` when it
    /// holds any message, else into this half's own buffer (then `held`). A message at
    /// [`GOODBYE`] priority is the peer's goodbye: `Ok(None)`.
    fn take(&mut self, buf: &mut [u8], wait: Option<Duration>) -> nix::Result<Option<usize>> {
        let mut prio = 0;
        let direct = buf.len() >= self.buf.len();
        let into: &mut [u8] = if direct { buf } else { &mut self.buf };
        let n = match wait {
            Some(w) => timed_receive(self.q.get(), into, &mut prio, w)?,
            None => mqueue::mq_receive(self.q_nb.get(), into, &mut prio)?,
        };
        if prio == GOODBYE {
            self.closed.store(true, Ordering::Relaxed);
            return Ok(None);
        }
        if !direct {
            self.held = Some(n);
        }
        Ok(Some(n))
    }

    /// What a take gave: the frame (or its truncation), or the peer's goodbye.
    fn taken(&mut self, got: Option<usize>, buf: &mut [u8]) -> Result<usize, RecvError> {
        match (got, self.held) {
            (None, _) => Err(RecvError::Disconnected),
            (Some(_), Some(len)) => self.hand_over(len, buf),
            (Some(n), None) => Ok(n),
        }
    }
}

impl Attempt for MqRx {
    fn attempt(
        &mut self,
        buf: &mut [u8],
        wait: Option<Duration>,
    ) -> Result<Option<usize>, RecvError> {
        if let Some(len) = self.held {
            return self.hand_over(len, buf).map(Some);
        }
        if self.closed.load(Ordering::Relaxed) {
            return Err(RecvError::Disconnected);
        }
        match self.take(buf, wait) {
            Ok(got) => self.taken(got, buf).map(Some),
            Err(Errno::EAGAIN | Errno::ETIMEDOUT | Errno::EINTR) => {
                if crate::sys::gone(self.peer) {
                    // Everything it sent first.
                    match self.take(buf, None) {
                        Ok(got) => self.taken(got, buf).map(Some),
                        Err(_) => {
                            self.closed.store(true, Ordering::Relaxed);
                            Err(RecvError::Disconnected)
                        }
                    }
                } else {
                    Ok(None)
                }
            }
            Err(e) => Err(RecvError::Io(e)),
        }
    }
}

impl Rx for MqRx {
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

/// The listening side: both queues open, waiting for the peer's hello.
#[derive(Debug)]
pub struct MqListener {
    endpoint: Endpoint,
    opened: Opened,
}

impl Transport for Mq {
    const KIND: TransportKind = TransportKind::Mq;
    type Tx = MqTx;
    type Rx = MqRx;
    type Listener = MqListener;

    fn listen(endpoint: &Endpoint) -> Result<MqListener, SetupError> {
        Ok(MqListener {
            endpoint: endpoint.clone(),
            opened: open_side(endpoint, true)?,
        })
    }
    fn resolved(listener: &MqListener) -> Endpoint {
        listener.endpoint.clone()
    }
    fn accept(listener: MqListener, timeout: Duration) -> Result<(MqTx, MqRx), SetupError> {
        let deadline = Instant::now() + timeout;
        let o = listener.opened;
        let target = listener.endpoint.to_string();
        let peer = take_hello(o.recv.get(), o.msgsize, timeout, &target)?;
        send_hello(o.send.get(), deadline, &target)?;
        Ok(halves(o, peer))
    }
    fn try_accept(
        listener: MqListener,
        timeout: Duration,
    ) -> Result<Result<(MqTx, MqRx), MqListener>, SetupError> {
        let mut buf = vec![0u8; listener.opened.msgsize];
        let mut prio = 0;
        match mqueue::mq_receive(listener.opened.recv_nb.get(), &mut buf, &mut prio) {
            Ok(n) => {
                let target = listener.endpoint.to_string();
                let peer = HELLO.parse(&buf[..n], &target)?;
                let o = listener.opened;
                send_hello(o.send.get(), Instant::now() + timeout, &target)?;
                Ok(Ok(halves(o, peer)))
            }
            Err(Errno::EAGAIN) => Ok(Err(listener)),
            Err(e) => Err(SetupError::io("mq_receive", &listener.endpoint, e)),
        }
    }
    fn accept_fd(listener: &MqListener) -> Option<std::os::fd::BorrowedFd<'_>> {
        Some(listener.opened.recv_nb.get().as_fd())
    }
    fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<(MqTx, MqRx), SetupError> {
        let deadline = Instant::now() + timeout;
        let target = endpoint.to_string();
        let o = open_side(endpoint, false)?;
        send_hello(o.send.get(), deadline, &target)?;
        let peer = take_hello(o.recv.get(), o.msgsize, timeout, &target)?;
        Ok(halves(o, peer))
    }
}
