//! `cargo bench`: round-trip latency and one-way throughput of every transport across
//! message sizes, timed with `iter_custom` against a peer *process* pinned to another
//! core (this bench binary run again with `IPCBENCH_BENCH_PEER` set), plus the bare
//! system-call round trip at 64 B that the framed transports are compared with.
//! Placement: this process on core 0, the peer on core 1; shm waits by spinning. The
//! ring alone is benched between two threads pinned the same way.
//! Correctness is checked once before timing. Figures are machine-specific.

// Bench code: a failed unwrap aborts the bench with its message.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use ipcbench::transport::dispatch::{
    dispatch, dispatch_bare, dispatch_kind, has_bare_baseline, WithStream, WithTransport,
};
use ipcbench::transport::{
    baseline, Endpoint, EndpointOptions, RecvError, Rx, StreamRx, StreamTx, Transport,
    TransportKind, Tx,
};

const PEER: &str = "IPCBENCH_BENCH_PEER";
const ENDPOINT: &str = "IPCBENCH_BENCH_ENDPOINT";
const SIZE: &str = "IPCBENCH_BENCH_SIZE";
const SIZES: [usize; 4] = [64, 1024, 16 * 1024, 64 * 1024];
const SETUP: Duration = Duration::from_secs(20);
const BENCH_CORE: usize = 0;
const PEER_CORE: usize = 1;

/// Pins the calling thread. Not guarded by `core_affinity::get_core_ids()`: that lists
/// only the cores of the current mask, and a peer spawned by an already pinned process
/// inherits a one-core mask.
fn pin(core: usize) {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        eprintln!("warning: cannot pin to core {core}; this bench's placement is not what it says");
    }
}

// ---- the peer process -------------------------------------------------------------------

fn peer<T: Transport>(mode: &str, endpoint: &Endpoint) -> Result<(), String> {
    let (mut tx, mut rx) = T::connect(endpoint, SETUP).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 20];
    let gone = |e: RecvError| {
        if e == RecvError::Disconnected {
            Ok(())
        } else {
            Err(e.to_string())
        }
    };
    match mode {
        "echo" => loop {
            let n = match rx.recv(&mut buf) {
                Ok(n) => n,
                Err(e) => return gone(e),
            };
            tx.send(&buf[..n]).map_err(|e| e.to_string())?;
        },
        "sink" => {
            // Counts frames; an empty frame asks for the count since the last one.
            let mut count = 0u64;
            loop {
                match rx.recv(&mut buf) {
                    Ok(0) => {
                        tx.send(&count.to_le_bytes()).map_err(|e| e.to_string())?;
                        count = 0;
                    }
                    Ok(_) => count += 1,
                    Err(e) => return gone(e),
                }
            }
        }
        other => Err(format!("unknown peer mode {other}")),
    }
}

/// The bare echo: the stream transports' system calls, nothing of ours.
fn bare_peer<T: Transport<Tx = StreamTx, Rx = StreamRx>>(
    endpoint: &Endpoint,
) -> Result<(), String> {
    let (tx, rx) = T::connect(endpoint, SETUP).map_err(|e| e.to_string())?;
    let size: usize = std::env::var(SIZE)
        .map_err(|e| e.to_string())?
        .parse()
        .map_err(|_| "bad size")?;
    let mut msg = vec![0u8; size];
    loop {
        match baseline::echo(&tx, &rx, &mut msg, 1) {
            Ok(()) => {}
            Err(baseline::BaselineError::Recv(RecvError::Disconnected)) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn run_peer(mode: &str) -> Result<(), String> {
    pin(PEER_CORE);
    let endpoint: Endpoint =
        serde_json::from_str(&std::env::var(ENDPOINT).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    struct Framed<'a>(&'a str, &'a Endpoint);
    impl WithTransport for Framed<'_> {
        type Output = Result<(), String>;
        fn call<T: Transport>(self) -> Self::Output {
            peer::<T>(self.0, self.1)
        }
    }
    struct Bare<'a>(&'a Endpoint);
    impl WithStream for Bare<'_> {
        type Output = Result<(), String>;
        fn call<T: Transport<Tx = StreamTx, Rx = StreamRx>>(self) -> Self::Output {
            bare_peer::<T>(self.0)
        }
    }
    let run = if mode == "bare-echo" {
        dispatch_bare(endpoint.kind(), Bare(&endpoint))
    } else {
        dispatch(&endpoint, Framed(mode, &endpoint))
    };
    run.map_err(|e| e.to_string())?
}

// ---- the measuring side -----------------------------------------------------------------

/// Frames up to 1 MiB, or a POSIX queue's message size limit where that is lower (sizes
/// above it are left out for `mq`).
fn max_frame<T: Transport>() -> u32 {
    if T::KIND == ipcbench::transport::TransportKind::Mq {
        (1u64 << 20).min(ipcbench::transport::mq::msgsize_limit()) as u32
    } else {
        1 << 20
    }
}

struct Peer<T: Transport> {
    tx: T::Tx,
    rx: T::Rx,
    child: Child,
    endpoint: Endpoint,
    _dir: tempfile::TempDir,
}

impl<T: Transport> Peer<T> {
    fn start(mode: &str, size: usize) -> Peer<T> {
        let dir = tempfile::tempdir().unwrap();
        // Frames up to 1 MiB; shm rings of 4 MiB (the kernel transports ignore it).
        let opts = EndpointOptions {
            max_frame: max_frame::<T>(),
            shm_capacity: 4 << 20,
            // A queue waits for room (its default retry policy sleeps a second).
            policy: ipcbench::transport::queue::FullPolicy::Block { timeout: SETUP },
            ..Default::default()
        };
        let spec = T::prepare(dir.path(), &opts).unwrap();
        let listener = T::listen(&spec).unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .env(PEER, mode)
            .env(
                ENDPOINT,
                serde_json::to_string(&T::resolved(&listener)).unwrap(),
            )
            .env(SIZE, size.to_string())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, rx) = T::accept(listener, SETUP).unwrap();
        Peer {
            tx,
            rx,
            child,
            endpoint: spec,
            _dir: dir,
        }
    }

    fn stop(self) {
        let Peer {
            tx,
            rx,
            mut child,
            endpoint,
            _dir,
        } = self;
        drop((tx, rx));
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("bench peer did not exit");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(child.wait().unwrap().success(), "bench peer failed");
        endpoint.cleanup();
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

fn bench_transport<T: Transport>(c: &mut Criterion) {
    let mut p = Peer::<T>::start("echo", 0);
    let name = &match &p.endpoint {
        Endpoint::Queue { over, .. } => format!("queue-{}", over.kind()),
        other => other.kind().to_string(),
    };
    let mut group = c.benchmark_group("roundtrip");
    for size in SIZES
        .into_iter()
        .filter(|s| *s <= max_frame::<T>() as usize)
    {
        let msg = pattern(size);
        let mut back = vec![0u8; size];
        p.tx.send(&msg).unwrap();
        assert_eq!(p.rx.recv(&mut back).unwrap(), size);
        assert_eq!(back, msg, "{name} echo of {size} bytes differs");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    p.tx.send(&msg).unwrap();
                    p.rx.recv(&mut back).unwrap();
                }
                t.elapsed()
            })
        });
    }
    group.finish();
    p.stop();

    let mut p = Peer::<T>::start("sink", 0);
    let mut group = c.benchmark_group("throughput");
    for size in SIZES
        .into_iter()
        .filter(|s| *s <= max_frame::<T>() as usize)
    {
        let msg = pattern(size);
        let mut ack = [0u8; 8];
        let mut stream = |tx: &mut T::Tx, rx: &mut T::Rx, n: u64| {
            for _ in 0..n {
                tx.send(&msg).unwrap();
            }
            tx.send(&[]).unwrap();
            assert_eq!(rx.recv(&mut ack).unwrap(), 8);
            assert_eq!(
                u64::from_le_bytes(ack),
                n,
                "{name}: the sink counted every frame"
            );
        };
        stream(&mut p.tx, &mut p.rx, 100);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                stream(&mut p.tx, &mut p.rx, iters);
                t.elapsed()
            })
        });
    }
    group.finish();
    p.stop();
}

fn bench_bare<T: Transport<Tx = StreamTx, Rx = StreamRx>>(c: &mut Criterion) {
    let size = 64;
    let p = Peer::<T>::start("bare-echo", size);
    let mut msg = pattern(size);
    baseline::roundtrips(&p.tx, &p.rx, &mut msg, 1, |_| {}).unwrap();
    assert_eq!(msg, pattern(size), "bare echo differs");
    let mut group = c.benchmark_group("bare_roundtrip");
    group.bench_with_input(BenchmarkId::new(T::KIND.name(), size), &size, |b, _| {
        b.iter_custom(|iters| baseline::roundtrips(&p.tx, &p.rx, &mut msg, iters, |_| {}).unwrap())
    });
    group.finish();
    p.stop();
}

/// The ring alone, between two threads pinned to cores 0 and 1 (no process, no
/// transport): a round trip over two rings, and one-way push/pop, at 64 B.
fn bench_ring(c: &mut Criterion) {
    use ipcbench::ring::{init, region_len, Consumer, HeapRegion, PopError, Producer};
    use std::num::NonZeroU32;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const CAP: usize = 1 << 16;
    let ring = || {
        let r = Arc::new(HeapRegion::new(region_len(CAP)));
        init(&*r, CAP).unwrap();
        let t = NonZeroU32::new(1).unwrap();
        (
            Producer::attach(r.clone(), t).unwrap(),
            Consumer::attach(r, t).unwrap(),
        )
    };
    let pop = |c: &mut Consumer<Arc<HeapRegion>>, buf: &mut [u8]| loop {
        match c.try_pop(buf) {
            Ok(n) => return Some(n),
            Err(PopError::Empty) => std::hint::spin_loop(),
            Err(_) => return None,
        }
    };
    let push = |p: &mut Producer<Arc<HeapRegion>>, msg: &[u8]| {
        while p.try_push(msg).is_err() {
            std::hint::spin_loop();
        }
    };
    let msg = pattern(64);
    let mut group = c.benchmark_group("ring");
    group.throughput(Throughput::Bytes(64));

    // Round trip: an echo thread on core 1.
    let ((mut to_tx, to_rx), (back_tx, mut back_rx)) = (ring(), ring());
    let stop = Arc::new(AtomicBool::new(false));
    let echo = {
        let stop = stop.clone();
        let (mut rx, mut tx) = (to_rx, back_tx);
        std::thread::spawn(move || {
            pin(PEER_CORE);
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                match rx.try_pop(&mut buf) {
                    Ok(n) => push(&mut tx, &buf[..n]),
                    Err(PopError::Empty) => std::hint::spin_loop(),
                    Err(_) => return,
                }
            }
        })
    };
    let mut buf = [0u8; 64];
    push(&mut to_tx, &msg);
    assert_eq!(pop(&mut back_rx, &mut buf), Some(64));
    assert_eq!(buf[..], msg[..], "ring echo differs");
    group.bench_function(BenchmarkId::new("roundtrip", 64), |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                push(&mut to_tx, &msg);
                pop(&mut back_rx, &mut buf);
            }
            t.elapsed()
        })
    });
    stop.store(true, Ordering::Relaxed);
    echo.join().unwrap();

    // One way: a draining thread on core 1 acknowledges each batch.
    let ((mut tx, mut rx), (mut ack_tx, mut ack_rx)) = (ring(), ring());
    let drain = std::thread::spawn(move || {
        pin(PEER_CORE);
        let mut buf = [0u8; 64];
        let mut count = 0u64;
        while let Some(n) = pop(&mut rx, &mut buf) {
            if n == 0 {
                push(&mut ack_tx, &count.to_le_bytes());
                count = 0;
            } else {
                count += 1;
            }
        }
    });
    group.bench_function(BenchmarkId::new("one_way", 64), |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                push(&mut tx, &msg);
            }
            push(&mut tx, &[]);
            let mut ack = [0u8; 8];
            pop(&mut ack_rx, &mut ack);
            assert_eq!(u64::from_le_bytes(ack), iters, "every record drained");
            t.elapsed()
        })
    });
    group.finish();
    drop(tx);
    drain.join().unwrap();
}

fn main() {
    if let Ok(mode) = std::env::var(PEER) {
        if let Err(e) = run_peer(&mode) {
            eprintln!("bench peer ({mode}): {e}");
            std::process::exit(1);
        }
        return;
    }
    pin(BENCH_CORE);
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench_ring(&mut c);
    // Every transport through the one dispatch (the queue over uds, its default), and
    // the bare baseline of every transport that has one.
    struct Framed<'a>(&'a mut Criterion);
    impl WithTransport for Framed<'_> {
        type Output = ();
        fn call<T: Transport>(self) {
            bench_transport::<T>(self.0)
        }
    }
    struct Bare<'a>(&'a mut Criterion);
    impl WithStream for Bare<'_> {
        type Output = ();
        fn call<T: Transport<Tx = StreamTx, Rx = StreamRx>>(self) {
            bench_bare::<T>(self.0)
        }
    }
    for kind in TransportKind::ALL {
        if has_bare_baseline(kind) {
            dispatch_bare(kind, Bare(&mut c)).unwrap();
        }
    }
    for kind in TransportKind::ALL {
        dispatch_kind(kind, TransportKind::Uds, Framed(&mut c)).unwrap();
    }
    c.final_summary();
}
