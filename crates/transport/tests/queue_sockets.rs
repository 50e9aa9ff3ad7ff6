//! PUSH and PULL sockets over real connections (Unix sockets, threads standing in for the
//! processes): first-free distribution, fair queueing, a peer that leaves, and frames
//! that nobody can take anymore being counted.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use ipcbench_transport::queue::{
    Acceptor, AckMode, FullPolicy, Pull, PullError, Push, PushOptions,
};
use ipcbench_transport::{
    Endpoint, EndpointOptions, StreamRx, StreamTx, Transport, TransportKind, Uds,
};

const T: Duration = Duration::from_secs(20);

/// `n` connected pairs: (this side, the other side).
fn pairs(dir: &std::path::Path, n: usize) -> Vec<((StreamTx, StreamRx), (StreamTx, StreamRx))> {
    (0..n)
        .map(|i| {
            let sub = dir.join(format!("c{i}"));
            std::fs::create_dir(&sub).unwrap();
            let spec =
                Endpoint::prepare(TransportKind::Uds, &sub, &EndpointOptions::default()).unwrap();
            let listener = Uds::listen(&spec).unwrap();
            let resolved = Uds::resolved(&listener);
            let other = std::thread::spawn(move || Uds::connect(&resolved, T).unwrap());
            let mine = Uds::accept(listener, T).unwrap();
            (mine, other.join().unwrap())
        })
        .collect()
}

fn frame(seq: u64) -> [u8; 8] {
    seq.to_le_bytes()
}

/// Receives until every peer is gone; sleeps `pause` after each frame.
fn drain(mut pull: Pull<StreamTx, StreamRx>, pause: Duration) -> Vec<u64> {
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match pull.recv_timeout(&mut buf, T) {
            Ok(n) => {
                assert_eq!(n, 8);
                got.push(u64::from_le_bytes(buf[..8].try_into().unwrap()));
                std::thread::sleep(pause);
            }
            Err(PullError::Disconnected) => return got,
            Err(e) => panic!("pull: {e}"),
        }
    }
}

#[test]
fn a_free_worker_is_served_first_and_every_frame_arrives_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mine, theirs): (Vec<_>, Vec<_>) = pairs(dir.path(), 3).into_iter().unzip();
    let workers: Vec<_> = theirs
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let pause = Duration::from_millis(if i == 0 { 5 } else { 0 });
            std::thread::spawn(move || drain(Pull::new(vec![p], 1), pause))
        })
        .collect();
    let mut push = Push::new(mine, 1000, FullPolicy::default());
    for seq in 0..600 {
        push.send(&frame(seq)).unwrap();
    }
    assert!(push.finish(T), "everything delivered");
    let got: Vec<Vec<u64>> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let all: BTreeSet<u64> = got.iter().flatten().copied().collect();
    assert_eq!(all.len(), 600, "each frame exactly once");
    assert_eq!(got.iter().map(Vec::len).sum::<usize>(), 600);
    // The slow worker (5 ms a frame) asked for far fewer than its share of 200.
    assert!(got[0].len() < 100, "slow worker got {}", got[0].len());
}

#[test]
fn pull_fair_queues_its_peers_and_keeps_each_ones_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mine, theirs): (Vec<_>, Vec<_>) = pairs(dir.path(), 3).into_iter().unzip();
    // Three pushers, each with 100 frames queued before the puller asks for any.
    let pushes: Vec<Push<StreamTx, StreamRx>> = theirs
        .into_iter()
        .enumerate()
        .map(|(id, p)| {
            let push = Push::new(vec![p], 1000, FullPolicy::default());
            for k in 0..100u64 {
                push.send(&frame(id as u64 * 1000 + k)).unwrap();
            }
            push
        })
        .collect();
    // A window of 100: every pusher can hand all its frames over; once they have, each
    // peer has frames waiting and the order is the PULL side's alone.
    let mut pull = Pull::new(mine, 100);
    let t0 = std::time::Instant::now();
    while pushes.iter().any(|p| p.backlog() > 0) && t0.elapsed() < T {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut buf = [0u8; 8];
    let mut got = Vec::new();
    for _ in 0..300 {
        pull.recv_timeout(&mut buf, T).unwrap();
        got.push(u64::from_le_bytes(buf));
    }
    for id in 0..3u64 {
        let mine: Vec<u64> = got.iter().copied().filter(|s| s / 1000 == id).collect();
        assert_eq!(mine, (0..100).map(|k| id * 1000 + k).collect::<Vec<_>>());
    }
    // Fair: the peers are served in turn.
    let turns: Vec<u64> = got[..9].iter().map(|s| s / 1000).collect();
    assert_eq!(turns, [0, 1, 2, 0, 1, 2, 0, 1, 2], "{:?}", &got[..9]);
    for mut p in pushes {
        assert!(p.finish(T));
    }
}

#[test]
fn a_peer_that_leaves_is_noticed_and_the_rest_go_to_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (mine, theirs): (Vec<_>, Vec<_>) = pairs(dir.path(), 2).into_iter().unzip();
    let mut theirs = theirs.into_iter();
    let (a, b) = (theirs.next().unwrap(), theirs.next().unwrap());
    let stayer =
        std::thread::spawn(move || drain(Pull::new(vec![a], 1), Duration::from_micros(200)));
    let leaver = std::thread::spawn(move || {
        let mut pull = Pull::new(vec![b], 1);
        let mut buf = [0u8; 8];
        let got: Vec<u64> = (0..10)
            .map(|_| {
                pull.recv_timeout(&mut buf, T).unwrap();
                u64::from_le_bytes(buf)
            })
            .collect();
        got // the connection closes here
    });
    let mut push = Push::new(mine, 1000, FullPolicy::default());
    for seq in 0..300 {
        push.send(&frame(seq)).unwrap();
    }
    let left = leaver.join().unwrap();
    assert!(push.finish(T));
    let stayed = stayer.join().unwrap();
    let delivered = push.delivered();
    assert_eq!(
        delivered.iter().sum::<u64>(),
        300,
        "every frame was delivered to someone"
    );
    // What the leaver was sent but never read: at most the one its last credit asked for.
    assert!(
        delivered[1] - left.len() as u64 <= 1,
        "{delivered:?} vs {}",
        left.len()
    );
    assert_eq!(
        stayed.len() + left.len() + (delivered[1] as usize - left.len()),
        300
    );
}

#[test]
fn frames_nobody_can_take_are_counted_not_lost_silently() {
    let dir = tempfile::tempdir().unwrap();
    let (mine, theirs): (Vec<_>, Vec<_>) = pairs(dir.path(), 1).into_iter().unzip();
    drop(theirs); // the only peer is gone before it asked for anything
    let push = Push::new(mine, 1000, FullPolicy::default());
    let mut accepted = 0;
    for seq in 0..5 {
        if push.send(&frame(seq)).is_ok() {
            accepted += 1;
        }
    }
    // Wait for the drain to notice.
    let t0 = std::time::Instant::now();
    while push.live_peers() > 0 && t0.elapsed() < T {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    let counts = push.counts();
    assert_eq!(push.live_peers(), 0);
    assert_eq!(counts.accepted, accepted);
    assert_eq!(counts.undeliverable, accepted, "{counts:?}");
    assert!(push.send(&frame(9)).is_err(), "and further sends fail");
}

#[test]
fn a_reliable_push_gives_a_departed_workers_unfinished_frame_to_another() {
    let dir = tempfile::tempdir().unwrap();
    let (mine, theirs): (Vec<_>, Vec<_>) = pairs(dir.path(), 2).into_iter().unzip();
    let mut push = Push::open(PushOptions {
        reliable: true,
        ..Default::default()
    });
    for seq in 0..50 {
        push.send(&frame(seq)).unwrap();
    }
    // Frames wait for peers; they join afterwards.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(push.backlog(), 50);
    for (t, r) in mine {
        push.add_peer(t, r);
    }
    let mut theirs = theirs.into_iter();
    let (a, b) = (theirs.next().unwrap(), theirs.next().unwrap());
    // The crasher takes one frame, never finishes it, and goes away.
    let crasher = std::thread::spawn(move || {
        let mut pull = Pull::new_manual(vec![a]);
        let mut buf = [0u8; 8];
        pull.recv_timeout(&mut buf, T).unwrap();
        u64::from_le_bytes(buf)
    });
    let lost = crasher.join().unwrap();
    let worker = std::thread::spawn(move || {
        let mut pull = Pull::new_manual(vec![b]);
        let mut buf = [0u8; 8];
        let mut got = Vec::new();
        while got.len() < 50 {
            pull.recv_timeout(&mut buf, T).unwrap();
            got.push(u64::from_le_bytes(buf));
            pull.done(true).unwrap();
        }
        got
    });
    let got = worker.join().unwrap();
    let all: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(all.len(), 50, "every frame done once by the survivor");
    assert!(all.contains(&lost));
    let c = push.counts();
    assert_eq!(c.redelivered, 1, "{c:?}");
    assert_eq!(c.delivered, 51, "{c:?}");
    // The survivor's last acknowledgement arrives at the drain's next round.
    let t0 = std::time::Instant::now();
    while push.owed() > 0 && t0.elapsed() < T {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(push.owed(), 0);
    assert!(push.finish(T));
}

#[test]
fn an_acceptor_takes_peers_as_they_come_without_waiting_for_absent_ones() {
    let dir = tempfile::tempdir().unwrap();
    let specs: Vec<Endpoint> = (0..3)
        .map(|i| {
            let sub = dir.path().join(format!("s{i}"));
            std::fs::create_dir(&sub).unwrap();
            Endpoint::prepare(TransportKind::Uds, &sub, &EndpointOptions::default()).unwrap()
        })
        .collect();
    let mut acceptor = Acceptor::<Uds>::listen(&specs).unwrap();
    assert!(acceptor.poll(T).unwrap().is_empty(), "nobody yet: no wait");
    // Only slot 2's peer comes, and pushes one frame.
    let ep = acceptor.resolved()[2].clone();
    let peer = std::thread::spawn(move || {
        let (t, r) = Uds::connect(&ep, T).unwrap();
        let mut push = Push::new(vec![(t, r)], 10, FullPolicy::default());
        push.send(b"hello").unwrap();
        assert!(push.finish(T));
    });
    let mut pull: Pull<StreamTx, StreamRx> = Pull::open(4, AckMode::OnReceipt);
    let t0 = std::time::Instant::now();
    while pull.live_peers() == 0 && t0.elapsed() < T {
        for (slot, t, r) in acceptor.poll(T).unwrap() {
            assert_eq!(slot, 2);
            pull.add_peer(t, r);
        }
    }
    let mut buf = [0u8; 16];
    let n = pull.recv_timeout(&mut buf, T).unwrap();
    assert_eq!(&buf[..n], b"hello");
    peer.join().unwrap();
    assert_eq!(acceptor.waiting(), 2);
}

/// `try_accept` on a socket listener: a peer that has connected but not said hello yet is
/// held, not waited for (the call returns "not yet" although its timeout is long); a peer
/// that leaves before its hello is forgotten; a real peer is then taken.
fn try_accept_holds_a_silent_peer<X: Transport>(
    kind: TransportKind,
    raw: impl Fn(&Endpoint) -> Box<dyn std::any::Any>,
) {
    let dir = tempfile::tempdir().unwrap();
    let spec = Endpoint::prepare(kind, dir.path(), &EndpointOptions::default()).unwrap();
    let listener = X::listen(&spec).unwrap();
    let resolved = X::resolved(&listener);
    // Connected, silent.
    let silent = raw(&resolved);
    let listener = match X::try_accept(listener, T).unwrap() {
        Ok(_) => panic!("accepted a peer that never said hello"),
        Err(l) => l,
    };
    // Still silent: still not yet (and still no error).
    let listener = X::try_accept(listener, T).unwrap().err().unwrap();
    // It leaves without a word: forgotten, the slot waits for another.
    drop(silent);
    let mut listener = X::try_accept(listener, T).unwrap().err().unwrap();
    let peer = std::thread::spawn(move || {
        let (mut t, _r) = X::connect(&resolved, T).unwrap();
        ipcbench_transport::Tx::send(&mut t, b"after").unwrap();
        // Stay until the frame is read.
        std::thread::sleep(Duration::from_millis(200));
    });
    let t0 = std::time::Instant::now();
    let (_t, mut r) = loop {
        match X::try_accept(listener, T).unwrap() {
            Ok(pair) => break pair,
            Err(l) => listener = l,
        }
        assert!(t0.elapsed() < T, "the real peer was never taken");
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut buf = [0u8; 16];
    let n = ipcbench_transport::Rx::recv_timeout(&mut r, &mut buf, T).unwrap();
    assert_eq!(&buf[..n], b"after");
    peer.join().unwrap();
}

#[test]
fn uds_try_accept_holds_a_silent_peer_without_waiting() {
    try_accept_holds_a_silent_peer::<Uds>(TransportKind::Uds, |ep| {
        let Endpoint::Uds { path, .. } = ep else {
            panic!("not uds")
        };
        Box::new(std::os::unix::net::UnixStream::connect(path).unwrap())
    });
}

#[test]
fn tcp_try_accept_holds_a_silent_peer_without_waiting() {
    try_accept_holds_a_silent_peer::<ipcbench_transport::Tcp>(TransportKind::Tcp, |ep| {
        let Endpoint::Tcp { addr, .. } = ep else {
            panic!("not tcp")
        };
        Box::new(std::net::TcpStream::connect(addr).unwrap())
    });
}
