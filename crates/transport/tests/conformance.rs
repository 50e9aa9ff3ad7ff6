//! The conformance suite: written once, generic over [`Transport`], instantiated for every
//! transport, and run across two processes. Each case's peer is this test binary run
//! again as a child (`--exact peer_entry`) with the case, the transport and the resolved
//! endpoint in its environment, as servo/ipc-channel does. A watchdog kills a peer that
//! outlives its bound, so no case can hang.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ipcbench_transport::dispatch::{dispatch, WithTransport};
use ipcbench_transport::{
    Corruption, Endpoint, EndpointOptions, LoanRx, LoanTx, QueueTx, RecvError, RecvTimeoutError,
    Rx, SendError, Shm, Transport, TransportKind, TryRecvError, TrySendError, Tx, TxLoan,
    WaitStrategy,
};

const ENV_CASE: &str = "IPCBENCH_CONFORMANCE_CASE";
const ENV_ENDPOINT: &str = "IPCBENCH_CONFORMANCE_ENDPOINT";
const ENV_DIR: &str = "IPCBENCH_CONFORMANCE_DIR";
const SETUP: Duration = Duration::from_secs(20);
const WATCHDOG: Duration = Duration::from_secs(60);
/// Largest frame in these tests: small enough to fill kernel buffers quickly.
const MAX: u32 = 256 * 1024;
const ORDER_FRAMES: u64 = if cfg!(debug_assertions) {
    20_000
} else {
    100_000
};

fn frame_for(seq: u64, buf: &mut Vec<u8>) {
    let len = 8 + (seq as usize * 7919) % 600;
    buf.clear();
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend((8..len).map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8));
}

fn send_ordered(tx: &mut impl Tx, n: u64) {
    let mut buf = Vec::new();
    for seq in 0..n {
        frame_for(seq, &mut buf);
        tx.send(&buf).unwrap_or_else(|e| panic!("send {seq}: {e}"));
    }
}

fn recv_ordered(rx: &mut impl Rx, n: u64) {
    let (mut expect, mut got) = (Vec::new(), vec![0u8; MAX as usize]);
    for seq in 0..n {
        frame_for(seq, &mut expect);
        let len = rx
            .recv(&mut got)
            .unwrap_or_else(|e| panic!("recv {seq}: {e}"));
        assert_eq!(
            &got[..len],
            &expect[..],
            "frame {seq} differs (lost, reordered or corrupted)"
        );
    }
}

/// Sizes on both sides of the receive path's 32 KiB switch, and the buffer's 64 KiB.
const MIXED: [usize; 12] = [
    8, 70_000, 100, 200_000, 5, 40_000, 33_000, 32_768, 32_769, 0, 65_536, 65_540,
];
const MIXED_ROUNDS: u64 = 20;

/// The `i`-th mixed size for a transport whose frames are at most `max` bytes: as it is,
/// or scaled down in proportion where `max` is below [`MAX`] (POSIX queues' limit).
fn mixed_len(i: usize, max: usize) -> usize {
    if max >= MAX as usize {
        MIXED[i]
    } else {
        MIXED[i] * max / MAX as usize
    }
}

fn mixed_frame(round: u64, i: usize, max: usize) -> Vec<u8> {
    let len = mixed_len(i, max);
    (0..len)
        .map(|j| {
            (j as u64)
                .wrapping_mul(7)
                .wrapping_add(round * 13 + i as u64) as u8
        })
        .collect()
}

fn send_mixed(tx: &mut impl Tx) {
    let max = tx.max_frame_len();
    for round in 0..MIXED_ROUNDS {
        for i in 0..MIXED.len() {
            tx.send(&mixed_frame(round, i, max)).unwrap();
        }
    }
}

/// Receives with recv, try_recv and recv_timeout in turn, so every path meets every size.
fn recv_mixed(rx: &mut impl Rx) {
    let max = rx.max_frame_len();
    let len = |i: usize| mixed_len(i, max);
    let mut buf = vec![0u8; MAX as usize];
    let mut small = [0u8; 100];
    for round in 0..MIXED_ROUNDS {
        for i in 0..MIXED.len() {
            if i > 0 && len(i - 1) > max / 8 && len(i) > small.len() && round % 2 == 1 {
                // Right after a large frame, a buffer too small for the next one: the
                // frame must stay queued, whole.
                assert_eq!(
                    rx.recv(&mut small),
                    Err(RecvError::Truncated { needed: len(i) }),
                    "round {round}, frame {i}"
                );
            }
            let n = match (round as usize + i) % 3 {
                0 => rx.recv(&mut buf).unwrap(),
                1 => loop {
                    match rx.try_recv(&mut buf) {
                        Ok(n) => break n,
                        Err(TryRecvError::Empty) => std::thread::yield_now(),
                        Err(e) => panic!("try_recv: {e}"),
                    }
                },
                _ => rx.recv_timeout(&mut buf, SETUP).unwrap(),
            };
            assert_eq!(
                &buf[..n],
                &mixed_frame(round, i, max)[..],
                "round {round}, frame {i} ({} bytes)",
                len(i)
            );
        }
    }
}

fn recv_exact(rx: &mut impl Rx, want: &[u8]) {
    let mut buf = vec![0u8; MAX as usize];
    let n = rx
        .recv_timeout(&mut buf, SETUP)
        .unwrap_or_else(|e| panic!("waiting for {want:?}: {e}"));
    assert_eq!(&buf[..n], want);
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 + 7) as u8).collect()
}

fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + SETUP;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---- the cases: what the test process does, and what its peer does ---------------------

fn parent_case(case: &str, tx: &mut (impl Tx + 'static), rx: &mut impl Rx, dir: &Path) {
    match case {
        "order_kept" => {
            send_ordered(tx, ORDER_FRAMES);
            recv_ordered(rx, ORDER_FRAMES);
        }
        "mixed_sizes" => {
            send_mixed(tx);
            recv_mixed(rx);
        }
        "empty_frames" => {
            tx.send(&[]).unwrap();
            tx.send(b"x").unwrap();
            tx.send(&[]).unwrap();
            recv_exact(rx, b"");
            recv_exact(rx, b"done");
        }
        "max_and_over_max" => {
            let max = tx.max_frame_len();
            assert_eq!(max, max_of(&*tx));
            assert_eq!(max, rx.max_frame_len());
            tx.send(&pattern(max)).unwrap();
            let over = pattern(max + 1);
            assert_eq!(
                tx.send(&over),
                Err(SendError::FrameTooLarge { len: max + 1, max })
            );
            assert_eq!(
                tx.try_send(&over),
                Err(TrySendError::Send(SendError::FrameTooLarge {
                    len: max + 1,
                    max
                }))
            );
            // Nothing of the refused frame went out: the stream is still in step.
            tx.send(b"after").unwrap();
            recv_exact(rx, b"done");
        }
        "truncated_keeps_frame" => {
            tx.send(&pattern(100)).unwrap();
            recv_exact(rx, b"done");
        }
        "peer_exit_is_disconnected" => {
            let mut buf = [0u8; 16];
            let t0 = Instant::now();
            assert_eq!(
                rx.recv_timeout(&mut buf, SETUP),
                Err(RecvTimeoutError::Recv(RecvError::Disconnected))
            );
            assert!(t0.elapsed() < SETUP);
            assert_eq!(
                rx.recv(&mut buf),
                Err(RecvError::Disconnected),
                "and it stays disconnected"
            );
            // The first sends may land in a kernel buffer; within a few the peer's absence shows.
            let mut result = Ok(());
            for _ in 0..1000 {
                // Frames large enough to fill a shared ring, which takes them while the
                // peer's absence is not yet known, as a kernel buffer does.
                result = tx.send(&pattern(chunk_len(tx.max_frame_len())));
                if result.is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(result, Err(SendError::Disconnected));
        }
        "try_on_empty_and_full" => {
            let mut buf = vec![0u8; MAX as usize];
            assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Empty));
            assert_eq!(
                rx.recv_timeout(&mut buf, Duration::from_millis(50)),
                Err(RecvTimeoutError::Timeout)
            );
            let chunk = pattern(chunk_len(tx.max_frame_len()));
            let mut accepted = 0u64;
            // Fill until Full stays Full: a library with an I/O thread of its own (libzmq)
            // goes on moving queued messages into the kernel after it said Full, so it
            // takes more a moment later although the peer reads nothing.
            loop {
                match tx.try_send(&chunk) {
                    Ok(()) => accepted += 1,
                    Err(TrySendError::Full) => {
                        std::thread::sleep(Duration::from_millis(200));
                        match tx.try_send(&chunk) {
                            Ok(()) => accepted += 1,
                            Err(TrySendError::Full) => break,
                            Err(e) => panic!("try_send: {e}"),
                        }
                    }
                    Err(e) => panic!("try_send: {e}"),
                }
                assert!(accepted < 100_000, "try_send never reported Full");
            }
            assert!(accepted > 0);
            assert_eq!(
                tx.try_send(&chunk),
                Err(TrySendError::Full),
                "still full while the peer sleeps"
            );
            std::fs::write(dir.join("drain"), b"").unwrap();
            // A frame the kernel took only part of goes out whole with flush.
            tx.flush().unwrap();
            tx.send(b"end").unwrap();
            let n = rx.recv_timeout(&mut buf, SETUP).unwrap();
            assert_eq!(
                &buf[..n],
                &accepted.to_le_bytes(),
                "the peer got every accepted frame"
            );
        }
        "garbage_length_is_corrupt" => {
            let mut buf = vec![0u8; 64];
            let e = rx.recv_timeout(&mut buf, SETUP).unwrap_err();
            // A stream reports the impossible length, a ring the impossible header; both
            // stay corrupt afterwards rather than resynchronise on garbage.
            assert!(
                matches!(
                    e,
                    RecvTimeoutError::Recv(RecvError::Corrupt(
                        Corruption::LengthTooLarge { .. } | Corruption::Ring(_)
                    ))
                ),
                "got {e:?}"
            );
            assert!(
                matches!(rx.recv(&mut buf), Err(RecvError::Corrupt(_))),
                "still corrupt"
            );
        }
        "foreign_message_is_one_frame" => {
            // A peer whose messages keep their boundaries in the library or the kernel
            // has no length prefix of ours to corrupt: what another sender puts in is
            // one whole frame, neither more nor less.
            let mut buf = vec![0u8; 64];
            let n = rx.recv_timeout(&mut buf, SETUP).unwrap();
            assert_eq!(&buf[..n], FOREIGN);
            recv_exact(rx, b"after");
        }
        "foreign_peer_is_refused" => {
            // A PAIR socket has one peer: a second sender that connects is not heard.
            recv_exact(rx, b"after");
        }
        other => panic!("unknown case {other}"),
    }
}

/// The largest frame a transport's endpoint is made with in these tests: [`MAX`], or a
/// POSIX queue's message size limit where that is lower.
fn max_of(tx: &dyn std::any::Any) -> usize {
    if tx.is::<ipcbench_transport::MqTx>() {
        mq_max()
    } else {
        MAX as usize
    }
}

fn mq_max() -> usize {
    (MAX as usize).min(ipcbench_transport::mq::msgsize_limit() as usize)
}

/// The frames that fill a transport: 64 KiB, or its largest frame if smaller.
fn chunk_len(max: usize) -> usize {
    max.min(64 * 1024)
}

/// What a foreign sender puts straight into a peer library's queue.
const FOREIGN: &[u8] = b"foreign message";

fn peer_case(case: &str, tx: &mut impl Tx, rx: &mut impl Rx, dir: &Path, garbage: &dyn Fn()) {
    match case {
        "order_kept" => {
            recv_ordered(rx, ORDER_FRAMES);
            send_ordered(tx, ORDER_FRAMES);
        }
        "mixed_sizes" => {
            recv_mixed(rx);
            send_mixed(tx);
        }
        "empty_frames" => {
            recv_exact(rx, b"");
            recv_exact(rx, b"x");
            recv_exact(rx, b"");
            tx.send(&[]).unwrap();
            tx.send(b"done").unwrap();
        }
        "max_and_over_max" => {
            recv_exact(rx, &pattern(rx.max_frame_len()));
            recv_exact(rx, b"after");
            tx.send(b"done").unwrap();
        }
        "truncated_keeps_frame" => {
            let mut small = [0u8; 10];
            assert_eq!(
                rx.recv(&mut small),
                Err(RecvError::Truncated { needed: 100 })
            );
            assert_eq!(
                rx.try_recv(&mut small),
                Err(TryRecvError::Recv(RecvError::Truncated { needed: 100 }))
            );
            let mut big = [0u8; 100];
            assert_eq!(rx.recv(&mut big), Ok(100));
            assert_eq!(
                &big[..],
                &pattern(100)[..],
                "the frame survives a too-small buffer"
            );
            tx.send(b"done").unwrap();
        }
        "peer_exit_is_disconnected" => std::process::exit(0),
        "try_on_empty_and_full" => {
            wait_for_file(&dir.join("drain"));
            let chunk = pattern(chunk_len(rx.max_frame_len()));
            let mut buf = vec![0u8; MAX as usize];
            let mut n_frames = 0u64;
            loop {
                let n = rx.recv_timeout(&mut buf, SETUP).unwrap();
                if &buf[..n] == b"end" {
                    break;
                }
                assert_eq!(&buf[..n], &chunk[..], "frame {n_frames} intact");
                n_frames += 1;
            }
            tx.send(&n_frames.to_le_bytes()).unwrap();
        }
        "garbage_length_is_corrupt" => {
            garbage();
            std::thread::sleep(Duration::from_millis(200));
        }
        "foreign_message_is_one_frame" | "foreign_peer_is_refused" => {
            garbage();
            tx.send(b"after").unwrap();
        }
        other => panic!("unknown case {other}"),
    }
}

// ---- zero-copy: loans and borrowed frames (the transports that have them) --------------

/// Sends the ordered frames written in place; every 7th is first loaned, scribbled on and
/// dropped, which must send nothing.
fn loan_ordered(tx: &mut impl LoanTx, n: u64) {
    let mut buf = Vec::new();
    for seq in 0..n {
        frame_for(seq, &mut buf);
        if seq % 7 == 0 {
            let mut cancelled = tx.loan(buf.len()).unwrap();
            cancelled.fill(0xee);
        }
        let mut loan = tx
            .loan(buf.len())
            .unwrap_or_else(|e| panic!("loan {seq}: {e}"));
        assert_eq!(loan.len(), buf.len());
        loan.copy_from_slice(&buf);
        loan.commit();
    }
}

/// Receives the ordered frames in place, checking each one.
fn borrow_ordered(rx: &mut impl LoanRx, n: u64) {
    let mut expect = Vec::new();
    for seq in 0..n {
        frame_for(seq, &mut expect);
        let frame = rx
            .recv_borrowed()
            .unwrap_or_else(|e| panic!("recv_borrowed {seq}: {e}"));
        assert_eq!(
            &frame[..],
            &expect[..],
            "frame {seq} differs (lost, reordered, corrupted or a cancelled loan sent)"
        );
    }
}

fn parent_loan_case(case: &str, tx: &mut impl LoanTx, rx: &mut impl LoanRx) {
    match case {
        // More than a ring's worth each way, so both sides wait for room and for data
        // (with `block`: sleep and are woken by a commit or a released frame).
        "loans_in_order" => {
            loan_ordered(tx, ORDER_FRAMES);
            borrow_ordered(rx, ORDER_FRAMES);
            // Loans and copies mix on the same ring.
            tx.send(b"copied").unwrap();
            let mut buf = [0u8; 16];
            assert_eq!(rx.recv_timeout(&mut buf, SETUP), Ok(4));
            assert_eq!(&buf[..4], b"done");
        }
        "loan_over_max" => {
            let max = tx.max_frame_len();
            assert_eq!(
                tx.loan(max + 1).err(),
                Some(SendError::FrameTooLarge { len: max + 1, max })
            );
            let mut loan = tx.loan(max).unwrap();
            loan.copy_from_slice(&pattern(max));
            loan.commit();
            recv_exact(rx, b"done");
        }
        "loan_peer_exit" => {
            let t0 = Instant::now();
            assert_eq!(rx.recv_borrowed().err(), Some(RecvError::Disconnected));
            assert!(t0.elapsed() < SETUP);
            let mut result = Ok(());
            for _ in 0..1000 {
                result = tx.loan(64 * 1024).map(|l| l.commit());
                if result.is_err() {
                    break;
                }
            }
            assert_eq!(result, Err(SendError::Disconnected));
        }
        other => panic!("unknown case {other}"),
    }
}

fn peer_loan_case(case: &str, tx: &mut impl LoanTx, rx: &mut impl LoanRx) {
    match case {
        "loans_in_order" => {
            borrow_ordered(rx, ORDER_FRAMES);
            loan_ordered(tx, ORDER_FRAMES);
            let frame = rx.recv_borrowed().unwrap();
            assert_eq!(&frame[..], b"copied");
            drop(frame);
            tx.send(b"done").unwrap();
        }
        "loan_over_max" => {
            let frame = rx.recv_borrowed().unwrap();
            assert_eq!(&frame[..], &pattern(MAX as usize)[..]);
            drop(frame);
            tx.send(b"done").unwrap();
        }
        "loan_peer_exit" => std::process::exit(0),
        other => panic!("unknown case {other}"),
    }
}

// ---- the two-process plumbing ----------------------------------------------------------

/// Removes what the endpoint made outside the test's directory, also when a case fails.
struct Cleanup(Endpoint);
impl Drop for Cleanup {
    fn drop(&mut self) {
        self.0.cleanup();
    }
}

fn run_case<T: Transport>(case: &str, wait: WaitStrategy) {
    run_case_with::<T>(case, wait, |tx, rx, dir| parent_case(case, tx, rx, dir));
}

fn run_case_with<T: Transport>(
    case: &str,
    wait: WaitStrategy,
    parent: impl FnOnce(&mut T::Tx, &mut T::Rx, &Path),
) {
    let dir = tempfile::tempdir().unwrap();
    let opts = EndpointOptions {
        max_frame: MAX,
        shm_capacity: 4 * MAX,
        wait,
        // A queue holds up to 64 frames of its own besides the transport's buffer.
        hwm: 64,
        // Wait for room as long as the peer is there (the default retry policy sleeps a
        // whole second whenever the queue is full, as the original did).
        policy: ipcbench_transport::queue::FullPolicy::Block { timeout: SETUP },
        ..Default::default()
    };
    let opts = EndpointOptions {
        max_frame: if T::KIND == TransportKind::Mq {
            mq_max() as u32
        } else {
            MAX
        },
        ..opts
    };
    let spec = T::prepare(dir.path(), &opts).unwrap();
    let _cleanup = Cleanup(spec.clone());
    let listener = T::listen(&spec).unwrap();
    let resolved = serde_json::to_string(&T::resolved(&listener)).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "peer_entry", "--nocapture", "--test-threads=1"])
        .env(ENV_CASE, case)
        .env(ENV_ENDPOINT, resolved)
        .env(ENV_DIR, dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (done_tx, done_rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = done_tx.send(());
        out
    });
    let guard = Watchdog(pid);
    let (mut tx, mut rx) = T::accept(listener, SETUP).unwrap();
    parent(&mut tx, &mut rx, dir.path());
    drop((tx, rx));
    if done_rx.recv_timeout(WATCHDOG).is_err() {
        panic!(
            "peer for {case} over {} did not finish within {WATCHDOG:?}",
            T::KIND
        );
    }
    std::mem::forget(guard);
    let out = waiter.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "peer for {case} over {} failed: {}\n{}",
        T::KIND,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills the peer if the test side panics, so no process outlives its test.
struct Watchdog(nix::unistd::Pid);
impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGKILL);
    }
}

fn run_peer<T: Transport>(case: &str, endpoint: &Endpoint, dir: &Path) {
    let (mut tx, mut rx) = T::connect(endpoint, SETUP).unwrap();
    if case == "order_kept" {
        // The other side sends at once; the handshake must not have read any of it.
        std::thread::sleep(Duration::from_millis(100));
        if let Some(n) = stream_buffered(&rx) {
            assert_eq!(n, 0, "setup left data in the receive buffer");
        }
    }
    let garbage = garbage_writer(&tx, endpoint);
    peer_case(case, &mut tx, &mut rx, dir, &*garbage);
}

/// How a peer breaks the protocol on purpose: an impossible length prefix on a stream, an
/// impossible record header in a shared ring.
trait Garbage {
    fn garbage_writer(&self, endpoint: &Endpoint) -> Box<dyn Fn()>;
}
impl Garbage for ipcbench_transport::StreamTx {
    fn garbage_writer(&self, _: &Endpoint) -> Box<dyn Fn()> {
        let fd = self.fd().try_clone_to_owned().unwrap();
        Box::new(move || {
            let claim = (MAX + 1).to_le_bytes();
            assert_eq!(nix::unistd::write(&fd, &claim).unwrap(), 4);
        })
    }
}
impl Garbage for ipcbench_transport::ShmTx {
    fn garbage_writer(&self, endpoint: &Endpoint) -> Box<dyn Fn()> {
        let Endpoint::Shm { path, capacity, .. } = endpoint.clone() else {
            panic!("not an shm endpoint")
        };
        Box::new(move || {
            // The peer (side B) produces into ring 1; its first record header sits at the
            // start of that ring's data.
            let ring = ipcbench_ring::region_len(capacity as usize).div_ceil(ipcbench_ring::LINE)
                * ipcbench_ring::LINE;
            let seg = ipcbench_transport::segment::Segment::open(&path, 2 * ring).unwrap();
            let word = (ring + ipcbench_ring::DATA_OFFSET) / 8;
            seg.words()[word].store(0xbad0_bad0_0000_0010, std::sync::atomic::Ordering::Release);
        })
    }
}

impl<T: Tx + Garbage + Send + 'static> Garbage for QueueTx<T> {
    fn garbage_writer(&self, endpoint: &Endpoint) -> Box<dyn Fn()> {
        let inner = match endpoint {
            Endpoint::Queue { over, .. } => over,
            other => other,
        };
        self.inner().garbage_writer(inner)
    }
}

/// The garbage writer of a sending half, found by its concrete type (the peer is generic
/// over `Transport` alone, as the one dispatch calls it).
fn garbage_writer(tx: &dyn std::any::Any, endpoint: &Endpoint) -> Box<dyn Fn()> {
    use ipcbench_transport::{ShmTx, StreamTx};
    if let Some(t) = tx.downcast_ref::<StreamTx>() {
        t.garbage_writer(endpoint)
    } else if let Some(t) = tx.downcast_ref::<ShmTx>() {
        t.garbage_writer(endpoint)
    } else if let Some(t) = tx.downcast_ref::<QueueTx<StreamTx>>() {
        t.garbage_writer(endpoint)
    } else if let Some(t) = tx.downcast_ref::<QueueTx<ShmTx>>() {
        t.garbage_writer(endpoint)
    } else if let Endpoint::Mq { b_to_a, .. } = endpoint {
        // Side B's queue, opened afresh as any other process of this user could.
        let name = std::ffi::CString::new(b_to_a.as_str()).unwrap();
        Box::new(move || {
            use nix::mqueue::{mq_open, mq_send, MQ_OFlag};
            let q = mq_open(
                name.as_c_str(),
                MQ_OFlag::O_WRONLY,
                nix::sys::stat::Mode::empty(),
                None,
            )
            .unwrap();
            // At the priority of frames (a message at 0 is a sender's goodbye).
            mq_send(&q, FOREIGN, 1).unwrap();
            nix::mqueue::mq_close(q).unwrap();
        })
    } else if let Some(w) = zmq_garbage(endpoint) {
        w
    } else if let Some(w) = iox_garbage(endpoint) {
        w
    } else {
        panic!("no garbage writer for this transport's sending half")
    }
}

/// A second publisher on side B's service, from a node of its own: refused, since each
/// direction's service takes one publisher.
#[cfg(feature = "iceoryx2")]
fn iox_garbage(endpoint: &Endpoint) -> Option<Box<dyn Fn()>> {
    use iceoryx2::prelude::*;
    let Endpoint::Iceoryx2 { prefix, root, .. } = endpoint.clone() else {
        return None;
    };
    Some(Box::new(move || {
        let mut config = Config::default();
        config.global.prefix = FileName::new(prefix.as_bytes()).unwrap();
        let root = format!("{}/", root.display());
        config
            .global
            .set_root_path(&iceoryx2::prelude::Path::new(root.as_bytes()).unwrap());
        let node = NodeBuilder::new()
            .config(&config)
            .signal_handling_mode(SignalHandlingMode::Disabled)
            .create::<ipc_threadsafe::Service>()
            .unwrap();
        let service = node
            .service_builder(&ServiceName::new("ipcbench/b2a").unwrap())
            .publish_subscribe::<[u8]>()
            .open()
            .unwrap();
        assert!(
            service.publisher_builder().create().is_err(),
            "a second publisher was let in"
        );
    }))
}

#[cfg(not(feature = "iceoryx2"))]
fn iox_garbage(_: &Endpoint) -> Option<Box<dyn Fn()>> {
    None
}

/// A foreign sender of side B's kind, connected to side A's address.
#[cfg(not(feature = "zmq"))]
fn zmq_garbage(_: &Endpoint) -> Option<Box<dyn Fn()>> {
    None
}

#[cfg(feature = "zmq")]
fn zmq_garbage(endpoint: &Endpoint) -> Option<Box<dyn Fn()>> {
    if let Endpoint::Zmq { pattern, a, .. } = endpoint {
        // Another socket of the kind side B has, connected to side A's address from a
        // context of its own, as any other process could.
        let (pattern, a) = (*pattern, a.clone());
        Some(Box::new(move || {
            let ctx = zmq::Context::new();
            let kind = match pattern {
                ipcbench_transport::ZmqPattern::Pair => zmq::PAIR,
                ipcbench_transport::ZmqPattern::PushPull => zmq::PUSH,
            };
            let s = ctx.socket(kind).unwrap();
            s.set_linger(1000).unwrap();
            s.connect(&a).unwrap();
            // PUSH blocks until connected; a refused PAIR may never take it.
            let _ = s.send_with_timeout(FOREIGN);
            // Delivered before what side B's own socket sends next.
            std::thread::sleep(Duration::from_millis(300));
        }))
    } else {
        None
    }
}

/// How much a receiving half has read ahead of its caller, found by its concrete type.
fn stream_buffered(rx: &dyn std::any::Any) -> Option<usize> {
    use ipcbench_transport::{ShmRx, StreamRx};
    if let Some(r) = rx.downcast_ref::<StreamRx>() {
        r.stream_buffered()
    } else if let Some(r) = rx.downcast_ref::<ShmRx>() {
        r.stream_buffered()
    } else if rx.is::<ipcbench_transport::MqRx>() || is_zmq_rx(rx) || is_iox_rx(rx) {
        // Messages, not a stream: nothing is read ahead.
        None
    } else {
        panic!("no read-ahead report for this transport's receiving half")
    }
}

#[cfg(feature = "iceoryx2")]
fn is_iox_rx(rx: &dyn std::any::Any) -> bool {
    rx.is::<ipcbench_transport::IoxRx>()
}

#[cfg(not(feature = "iceoryx2"))]
fn is_iox_rx(_: &dyn std::any::Any) -> bool {
    false
}

#[cfg(feature = "zmq")]
fn is_zmq_rx(rx: &dyn std::any::Any) -> bool {
    rx.is::<ipcbench_transport::ZmqRx>()
}

#[cfg(not(feature = "zmq"))]
fn is_zmq_rx(_: &dyn std::any::Any) -> bool {
    false
}

/// Stream transports tell how much they have read ahead of the caller.
trait StreamBuffered {
    fn stream_buffered(&self) -> Option<usize>;
}
impl StreamBuffered for ipcbench_transport::StreamRx {
    fn stream_buffered(&self) -> Option<usize> {
        Some(self.buffered())
    }
}
impl StreamBuffered for ipcbench_transport::ShmRx {
    fn stream_buffered(&self) -> Option<usize> {
        None
    }
}

/// Entry point of the peer process; a no-op when run as an ordinary test.
#[test]
fn peer_entry() {
    let (Ok(case), Ok(endpoint), Ok(dir)) = (
        std::env::var(ENV_CASE),
        std::env::var(ENV_ENDPOINT),
        std::env::var(ENV_DIR),
    ) else {
        return;
    };
    let endpoint: Endpoint = serde_json::from_str(&endpoint).unwrap();
    let dir = PathBuf::from(dir);
    if case.starts_with("loan") {
        match endpoint.kind() {
            TransportKind::Shm => {
                let (mut tx, mut rx) = Shm::connect(&endpoint, SETUP).unwrap();
                peer_loan_case(&case, &mut tx, &mut rx);
            }
            #[cfg(feature = "iceoryx2")]
            TransportKind::Iceoryx2 => {
                let (mut tx, mut rx) =
                    ipcbench_transport::Iceoryx2::connect(&endpoint, SETUP).unwrap();
                peer_loan_case(&case, &mut tx, &mut rx);
            }
            other => panic!("{other} lends no frames"),
        }
        return;
    }
    struct Peer<'a>(&'a str, &'a Endpoint, &'a std::path::Path);
    impl WithTransport for Peer<'_> {
        type Output = ();
        fn call<T: Transport>(self) {
            run_peer::<T>(self.0, self.1, self.2)
        }
    }
    dispatch(&endpoint, Peer(&case, &endpoint, &dir)).unwrap();
}

macro_rules! conformance {
    ($module:ident, $transport:ty, $wait:ident) => {
        conformance!($module, $transport, $wait, {
            #[test]
            fn garbage_length_is_corrupt() {
                super::run_case::<$transport>("garbage_length_is_corrupt", WAIT);
            }
        });
    };
    // A peer library whose messages keep their boundaries: instead of a corrupt length
    // (it has none of ours), a foreign sender's message arrives as one frame.
    ($module:ident, $transport:ty, $wait:ident, peer) => {
        conformance!($module, $transport, $wait, {
            #[test]
            fn foreign_message_is_one_frame() {
                super::run_case::<$transport>("foreign_message_is_one_frame", WAIT);
            }
        });
    };
    // A PAIR socket: a foreign sender is not heard at all.
    ($module:ident, $transport:ty, $wait:ident, pair_peer) => {
        conformance!($module, $transport, $wait, {
            #[test]
            fn foreign_peer_is_refused() {
                super::run_case::<$transport>("foreign_peer_is_refused", WAIT);
            }
        });
    };
    ($module:ident, $transport:ty, $wait:ident, { $($last:tt)* }) => {
        mod $module {
            use ipcbench_transport::WaitStrategy::$wait as WAIT;
            #[test]
            fn order_kept() {
                super::run_case::<$transport>("order_kept", WAIT);
            }
            #[test]
            fn mixed_sizes() {
                super::run_case::<$transport>("mixed_sizes", WAIT);
            }
            #[test]
            fn empty_frames() {
                super::run_case::<$transport>("empty_frames", WAIT);
            }
            #[test]
            fn max_and_over_max() {
                super::run_case::<$transport>("max_and_over_max", WAIT);
            }
            #[test]
            fn truncated_keeps_frame() {
                super::run_case::<$transport>("truncated_keeps_frame", WAIT);
            }
            #[test]
            fn peer_exit_is_disconnected() {
                super::run_case::<$transport>("peer_exit_is_disconnected", WAIT);
            }
            #[test]
            fn try_on_empty_and_full() {
                super::run_case::<$transport>("try_on_empty_and_full", WAIT);
            }
            $($last)*
        }
    };
}

// The wait strategy matters to shm only.
conformance!(pipe, ipcbench_transport::Pipe, Spin);
conformance!(uds, ipcbench_transport::Uds, Spin);
conformance!(tcp, ipcbench_transport::Tcp, Spin);
conformance!(shm_spin, ipcbench_transport::Shm, Spin);
conformance!(shm_yield, ipcbench_transport::Shm, Yield);
conformance!(shm_block, ipcbench_transport::Shm, Block);
// The point-to-point queue: one PUSH to one PULL over each transport it runs on.
conformance!(
    queue_uds,
    ipcbench_transport::Queue<ipcbench_transport::Uds>,
    Spin
);
conformance!(
    queue_tcp,
    ipcbench_transport::Queue<ipcbench_transport::Tcp>,
    Spin
);
conformance!(
    queue_shm,
    ipcbench_transport::Queue<ipcbench_transport::Shm>,
    Block
);
// The queue writing every frame in batches (`queue_batch`), over a stream and a ring.
conformance!(queue_uds_batched, crate::queue_batched::OverUds, Spin);
conformance!(queue_shm_batched, crate::queue_batched::OverShm, Block);

/// The queue with every frame queued and written up to 16 per system call: `Queue<X>`
/// prepared with that batch (the peer process dispatches on the endpoint, which carries
/// it).
mod queue_batched {
    use ipcbench_transport::{Endpoint, EndpointOptions, Queue, SetupError, Transport};
    use std::time::Duration;

    macro_rules! batched {
        ($name:ident, $over:ty) => {
            pub struct $name;
            impl Transport for $name {
                const KIND: ipcbench_transport::TransportKind =
                    ipcbench_transport::TransportKind::Queue;
                type Tx = <Queue<$over> as Transport>::Tx;
                type Rx = <Queue<$over> as Transport>::Rx;
                type Listener = <Queue<$over> as Transport>::Listener;
                fn prepare(
                    dir: &std::path::Path,
                    opts: &EndpointOptions,
                ) -> Result<Endpoint, SetupError> {
                    let opts = EndpointOptions {
                        batch: 16,
                        ..opts.clone()
                    };
                    Queue::<$over>::prepare(dir, &opts)
                }
                fn listen(e: &Endpoint) -> Result<Self::Listener, SetupError> {
                    Queue::<$over>::listen(e)
                }
                fn resolved(l: &Self::Listener) -> Endpoint {
                    Queue::<$over>::resolved(l)
                }
                fn accept(
                    l: Self::Listener,
                    t: Duration,
                ) -> Result<(Self::Tx, Self::Rx), SetupError> {
                    Queue::<$over>::accept(l, t)
                }
                #[allow(clippy::type_complexity)]
                fn try_accept(
                    l: Self::Listener,
                    t: Duration,
                ) -> Result<Result<(Self::Tx, Self::Rx), Self::Listener>, SetupError> {
                    Queue::<$over>::try_accept(l, t)
                }
                fn connect(e: &Endpoint, t: Duration) -> Result<(Self::Tx, Self::Rx), SetupError> {
                    Queue::<$over>::connect(e, t)
                }
            }
        };
    }
    batched!(OverUds, ipcbench_transport::Uds);
    batched!(OverShm, ipcbench_transport::Shm);
}

// The peers: the libraries and kernel queues a user would otherwise pick.
conformance!(mq, ipcbench_transport::Mq, Block, peer);
#[cfg(feature = "iceoryx2")]
conformance!(iceoryx2_spin, ipcbench_transport::Iceoryx2, Spin, pair_peer);
#[cfg(feature = "iceoryx2")]
conformance!(
    iceoryx2_block,
    ipcbench_transport::Iceoryx2,
    Block,
    pair_peer
);
#[cfg(feature = "zmq")]
conformance!(zmq_pair_ipc, crate::zmq_setups::PairIpc, Block, pair_peer);
#[cfg(feature = "zmq")]
conformance!(zmq_pair_tcp, crate::zmq_setups::PairTcp, Block, pair_peer);
#[cfg(feature = "zmq")]
conformance!(
    zmq_pushpull_ipc,
    crate::zmq_setups::PushPullIpc,
    Block,
    peer
);
#[cfg(feature = "zmq")]
conformance!(
    zmq_pushpull_tcp,
    crate::zmq_setups::PushPullTcp,
    Block,
    peer
);

#[cfg(feature = "zmq")]
/// The zmq peer with each of its socket patterns over each of its transports: `Zmq`
/// prepared with those options (the peer process dispatches on the endpoint, which
/// carries them).
mod zmq_setups {
    use ipcbench_transport::{
        Endpoint, EndpointOptions, SetupError, Transport, TransportKind, Zmq, ZmqPattern,
    };
    use std::time::Duration;

    macro_rules! setup {
        ($name:ident, $pattern:ident, $over:ident) => {
            pub struct $name;
            impl Transport for $name {
                const KIND: TransportKind = TransportKind::Zmq;
                type Tx = <Zmq as Transport>::Tx;
                type Rx = <Zmq as Transport>::Rx;
                type Listener = <Zmq as Transport>::Listener;
                fn prepare(
                    dir: &std::path::Path,
                    opts: &EndpointOptions,
                ) -> Result<Endpoint, SetupError> {
                    let opts = EndpointOptions {
                        zmq_pattern: ZmqPattern::$pattern,
                        over: TransportKind::$over,
                        ..opts.clone()
                    };
                    Zmq::prepare(dir, &opts)
                }
                fn listen(e: &Endpoint) -> Result<Self::Listener, SetupError> {
                    Zmq::listen(e)
                }
                fn resolved(l: &Self::Listener) -> Endpoint {
                    Zmq::resolved(l)
                }
                fn accept(
                    l: Self::Listener,
                    t: Duration,
                ) -> Result<(Self::Tx, Self::Rx), SetupError> {
                    Zmq::accept(l, t)
                }
                #[allow(clippy::type_complexity)]
                fn try_accept(
                    l: Self::Listener,
                    t: Duration,
                ) -> Result<Result<(Self::Tx, Self::Rx), Self::Listener>, SetupError> {
                    Zmq::try_accept(l, t)
                }
                fn connect(e: &Endpoint, t: Duration) -> Result<(Self::Tx, Self::Rx), SetupError> {
                    Zmq::connect(e, t)
                }
            }
        };
    }
    setup!(PairIpc, Pair, Uds);
    setup!(PairTcp, Pair, Tcp);
    setup!(PushPullIpc, PushPull, Uds);
    setup!(PushPullTcp, PushPull, Tcp);
}

/// A send that gives up after a second (a foreign socket that is never connected).
#[cfg(feature = "zmq")]
trait SendWithTimeout {
    fn send_with_timeout(&self, m: &[u8]) -> Result<(), zmq::Error>;
}
#[cfg(feature = "zmq")]
impl SendWithTimeout for zmq::Socket {
    fn send_with_timeout(&self, m: &[u8]) -> Result<(), zmq::Error> {
        self.set_sndtimeo(1000)?;
        self.send(m, 0)
    }
}

macro_rules! loans {
    ($module:ident, $transport:ty, $wait:ident) => {
        mod $module {
            use ipcbench_transport::WaitStrategy::$wait as WAIT;
            fn run(case: &str) {
                super::run_case_with::<$transport>(case, WAIT, |tx, rx, _| {
                    super::parent_loan_case(case, tx, rx)
                });
            }
            #[test]
            fn loans_in_order() {
                run("loans_in_order");
            }
            #[test]
            fn loan_over_max() {
                run("loan_over_max");
            }
            #[test]
            fn loan_peer_exit() {
                run("loan_peer_exit");
            }
        }
    };
}

loans!(shm_spin_loans, ipcbench_transport::Shm, Spin);
loans!(shm_block_loans, ipcbench_transport::Shm, Block);
#[cfg(feature = "iceoryx2")]
loans!(iceoryx2_spin_loans, ipcbench_transport::Iceoryx2, Spin);
#[cfg(feature = "iceoryx2")]
loans!(iceoryx2_block_loans, ipcbench_transport::Iceoryx2, Block);
