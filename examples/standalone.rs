//! Stand-alone round trips of each library peer, written the way each library's own
//! examples and benchmarks use it, with nothing of ipcbench's transports: the yardstick
//! that tells whether the harness handicaps a peer. Two processes (this program runs
//! itself as the echo), pinned to cores 0 and 1, 64-byte messages, a warm-up, then each
//! round trip timed; prints the p50 and p99.
//!
//! ```sh
//! cargo run --release --example standalone -- zmq-ipc      # libzmq PAIR over ipc://
//! cargo run --release --example standalone -- zmq-tcp      # libzmq PAIR over tcp://127.0.0.1
//! cargo run --release --example standalone -- iox-poll     # iceoryx2, busy-polling receive
//! cargo run --release --example standalone -- iox-poll-ts  # the same, its thread-safe ports
//! cargo run --release --example standalone -- iox-event    # iceoryx2 with its event service
//! cargo run --release --example standalone -- mq           # POSIX message queues
//! cargo run --release --example standalone -- uds          # a Unix stream socket, read/write
//! ```
#![forbid(unsafe_code)]
// A measuring tool: a failure is a message and an exit.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};

use iceoryx2::prelude::{ipc, ipc_threadsafe};
use std::time::{Duration, Instant};

const MSG: usize = 64;
const WARMUP: usize = 1_000;
const COUNT: usize = 20_000;
const ECHO: &str = "IPCBENCH_STANDALONE_ECHO";
const PLACE: &str = "IPCBENCH_STANDALONE_PLACE";

fn pin(core: usize) {
    core_affinity::set_for_current(core_affinity::CoreId { id: core });
}

/// A round trip: send `msg`, wait for the echo into `msg`.
trait Client {
    fn round_trip(&mut self, msg: &mut [u8]);
}

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| {
        eprintln!("usage: standalone zmq-ipc|zmq-tcp|iox-poll|iox-poll-ts|iox-event|mq|uds");
        std::process::exit(2)
    });
    if let Ok(place) = std::env::var(ECHO) {
        pin(1);
        echo(&which, &place);
        return;
    }
    pin(0);
    let dir = tempfile::tempdir().unwrap();
    let place = dir.path().join("x").to_string_lossy().into_owned();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg(&which)
        .env(ECHO, &place)
        .env(PLACE, &place)
        .spawn()
        .unwrap();
    let mut client = client(&which, &place);
    let mut msg = vec![7u8; MSG];
    for _ in 0..WARMUP {
        client.round_trip(&mut msg);
    }
    let mut ns: Vec<u64> = Vec::with_capacity(COUNT);
    for _ in 0..COUNT {
        let t = Instant::now();
        client.round_trip(&mut msg);
        ns.push(t.elapsed().as_nanos() as u64);
    }
    drop(client);
    let _ = child.wait();
    // What iceoryx2 keeps in /dev/shm past its nodes.
    let prefix = iox_prefix(&place);
    for e in std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    ns.sort_unstable();
    println!(
        "{which}: {COUNT} round trips of {MSG} B: p50 {:.2} µs, p99 {:.2} µs",
        ns[ns.len() / 2] as f64 / 1000.0,
        ns[ns.len() * 99 / 100] as f64 / 1000.0
    );
}

fn client(which: &str, place: &str) -> Box<dyn Client> {
    match which {
        "zmq-ipc" | "zmq-tcp" => Box::new(zmq_side(which, place, true)),
        "iox-poll" | "iox-event" => {
            Box::new(Iox::<ipc::Service>::new(which == "iox-event", true, place))
        }
        "iox-poll-ts" => Box::new(Iox::<ipc_threadsafe::Service>::new(false, true, place)),
        "mq" => Box::new(Mq::new(place, true)),
        "uds" => Box::new(uds(place, true)),
        other => {
            eprintln!("unknown: {other}");
            std::process::exit(2)
        }
    }
}

fn echo(which: &str, place: &str) {
    let mut buf = vec![0u8; MSG];
    match which {
        "zmq-ipc" | "zmq-tcp" => {
            let z = zmq_side(which, place, false);
            for _ in 0..WARMUP + COUNT {
                let n = z.0.recv_into(&mut buf, 0).unwrap();
                z.0.send(&buf[..n], 0).unwrap();
            }
        }
        "iox-poll" | "iox-event" => {
            let i = Iox::<ipc::Service>::new(which == "iox-event", false, place);
            for _ in 0..WARMUP + COUNT {
                i.receive(&mut buf);
                i.send(&buf);
            }
        }
        "iox-poll-ts" => {
            let i = Iox::<ipc_threadsafe::Service>::new(false, false, place);
            for _ in 0..WARMUP + COUNT {
                i.receive(&mut buf);
                i.send(&buf);
            }
        }
        "mq" => {
            let q = Mq::new(place, false);
            for _ in 0..WARMUP + COUNT {
                let mut prio = 0;
                let n = nix::mqueue::mq_receive(&q.rx, &mut buf, &mut prio).unwrap();
                nix::mqueue::mq_send(&q.tx, &buf[..n], 0).unwrap();
            }
        }
        "uds" => {
            let mut s = uds(place, false);
            for _ in 0..WARMUP + COUNT {
                s.0.read_exact(&mut buf).unwrap();
                s.0.write_all(&buf).unwrap();
            }
        }
        _ => {}
    }
}

// ---- libzmq: a PAIR socket each side, blocking send and receive ------------------------

/// The socket, and its context (kept alive while the socket is used).
struct Zmq(zmq::Socket, #[allow(dead_code)] zmq::Context);

fn zmq_side(which: &str, place: &str, binds: bool) -> Zmq {
    let ctx = zmq::Context::new();
    let s = ctx.socket(zmq::PAIR).unwrap();
    let addr = if which == "zmq-ipc" {
        format!("ipc://{place}.zmq")
    } else {
        "tcp://127.0.0.1:45713".to_string()
    };
    if binds {
        s.bind(&addr).unwrap();
    } else {
        s.connect(&addr).unwrap();
    }
    Zmq(s, ctx)
}

impl Client for Zmq {
    fn round_trip(&mut self, msg: &mut [u8]) {
        self.0.send(&*msg, 0).unwrap();
        self.0.recv_into(msg, 0).unwrap();
    }
}

// ---- iceoryx2: a publish-subscribe service per direction, as its benchmark has it ------

fn iox_prefix(place: &str) -> String {
    format!("standalone-{}-", place.replace('/', "_"))
}

struct Iox<IoxService: iceoryx2::prelude::Service> {
    publisher: iceoryx2::port::publisher::Publisher<IoxService, [u8], ()>,
    subscriber: iceoryx2::port::subscriber::Subscriber<IoxService, [u8], ()>,
    notifier: Option<iceoryx2::port::notifier::Notifier<IoxService>>,
    listener: Option<iceoryx2::port::listener::Listener<IoxService>>,
    _node: iceoryx2::prelude::Node<IoxService>,
}

impl<IoxService: iceoryx2::prelude::Service> Iox<IoxService> {
    fn new(events: bool, client: bool, place: &str) -> Self {
        use iceoryx2::prelude::*;
        // Its files in the temporary directory and its shared memory under a prefix of
        // this run, removed at the end (iceoryx2 keeps a management segment).
        let mut config = Config::default();
        config.global.prefix = FileName::new(iox_prefix(place).as_bytes()).unwrap();
        config
            .global
            .set_root_path(&Path::new(format!("{place}-iox/").as_bytes()).unwrap());
        let node = NodeBuilder::new()
            .config(&config)
            .create::<IoxService>()
            .unwrap();
        let service = |name: &str| {
            node.service_builder(&ServiceName::new(name).unwrap())
                .publish_subscribe::<[u8]>()
                .open_or_create()
                .unwrap()
        };
        let (a2b, b2a) = (service("standalone/a2b"), service("standalone/b2a"));
        let (out, inn) = if client { (&a2b, &b2a) } else { (&b2a, &a2b) };
        let publisher = out
            .publisher_builder()
            .initial_max_slice_len(MSG)
            .create()
            .unwrap();
        let subscriber = inn.subscriber_builder().create().unwrap();
        let (notifier, listener) = if events {
            let event = |name: &str| {
                node.service_builder(&ServiceName::new(name).unwrap())
                    .event()
                    .open_or_create()
                    .unwrap()
            };
            let (ea, eb) = (event("standalone/a2b-ev"), event("standalone/b2a-ev"));
            let (eo, ei) = if client { (&ea, &eb) } else { (&eb, &ea) };
            (
                Some(eo.notifier_builder().create().unwrap()),
                Some(ei.listener_builder().create().unwrap()),
            )
        } else {
            (None, None)
        };
        // Both sides connected before the first sample.
        while out.dynamic_config().number_of_subscribers() == 0
            || inn.dynamic_config().number_of_publishers() == 0
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        Iox {
            publisher,
            subscriber,
            notifier,
            listener,
            _node: node,
        }
    }

    fn send(&self, msg: &[u8]) {
        let s = self.publisher.loan_slice_uninit(msg.len()).unwrap();
        s.write_from_slice(msg).send().unwrap();
        if let Some(n) = &self.notifier {
            n.notify().unwrap();
        }
    }

    fn receive(&self, msg: &mut [u8]) {
        loop {
            if let Some(s) = self.subscriber.receive().unwrap() {
                msg.copy_from_slice(s.payload());
                return;
            }
            match &self.listener {
                Some(l) => {
                    l.timed_wait(|_| {}, Duration::from_millis(100)).unwrap();
                }
                None => std::hint::spin_loop(),
            }
        }
    }
}

impl<IoxService: iceoryx2::prelude::Service> Client for Iox<IoxService> {
    fn round_trip(&mut self, msg: &mut [u8]) {
        self.send(msg);
        self.receive(msg);
    }
}

// ---- POSIX message queues: one per direction, blocking mq_send/mq_receive ---------------

struct Mq {
    tx: nix::mqueue::MqdT,
    rx: nix::mqueue::MqdT,
    buf: Vec<u8>,
    names: Option<[std::ffi::CString; 2]>,
}

impl Mq {
    fn new(place: &str, client: bool) -> Mq {
        use nix::mqueue::{mq_open, MQ_OFlag, MqAttr};
        use nix::sys::stat::Mode;
        let tag = place.replace('/', "_");
        let names = [format!("/sa{tag}ab"), format!("/sa{tag}ba")]
            .map(|n| std::ffi::CString::new(n).unwrap());
        let attr = MqAttr::new(0, 10, MSG as i64, 0);
        let open = |n: &std::ffi::CString, flags| {
            mq_open(
                n.as_c_str(),
                flags | MQ_OFlag::O_CREAT,
                Mode::S_IRUSR | Mode::S_IWUSR,
                Some(&attr),
            )
            .unwrap()
        };
        let (out, inn) = if client { (0, 1) } else { (1, 0) };
        Mq {
            tx: open(&names[out], MQ_OFlag::O_WRONLY),
            rx: open(&names[inn], MQ_OFlag::O_RDONLY),
            buf: vec![0u8; MSG],
            names: client.then_some(names),
        }
    }
}

impl Drop for Mq {
    fn drop(&mut self) {
        for n in self.names.iter().flatten() {
            let _ = nix::mqueue::mq_unlink(n.as_c_str());
        }
    }
}

impl Client for Mq {
    fn round_trip(&mut self, msg: &mut [u8]) {
        nix::mqueue::mq_send(&self.tx, msg, 0).unwrap();
        let mut prio = 0;
        nix::mqueue::mq_receive(&self.rx, &mut self.buf, &mut prio).unwrap();
        msg.copy_from_slice(&self.buf);
    }
}

// ---- a Unix stream socket ----------------------------------------------------------------

struct Uds(std::os::unix::net::UnixStream);

fn uds(place: &str, client: bool) -> Uds {
    let path = format!("{place}.sock");
    if client {
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        Uds(l.accept().unwrap().0)
    } else {
        loop {
            if let Ok(s) = std::os::unix::net::UnixStream::connect(&path) {
                return Uds(s);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Client for Uds {
    fn round_trip(&mut self, msg: &mut [u8]) {
        self.0.write_all(msg).unwrap();
        self.0.read_exact(msg).unwrap();
    }
}
