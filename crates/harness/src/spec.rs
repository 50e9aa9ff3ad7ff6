//! What one run is: the keys every experiment has ([`Common`]), a workload's typed point
//! ([`Point`]), and the [`RunSpec`] that joins them; and what a workload is to the harness
//! ([`Workload`]). The config reader makes these; the matrix, the report and the roles
//! use them. Nothing here looks a parameter up by its key.

use std::collections::BTreeMap;
use std::fmt;
use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use ipcbench_transport::queue::FullPolicy;
use ipcbench_transport::{Endpoint, EndpointOptions, TransportKind, WaitStrategy, ZmqPattern};
use serde::Deserialize;

use crate::floor::Floor;
use crate::params::{p, ParamDef, ParamType, Value, SECONDS};
use crate::runner::{RunOutcome, RunPlan};
use crate::wire::{RoleJob, RoleReport};

/// Keys every experiment has.
pub const COMMON: &[ParamDef] = &[
    p(
        "name",
        ParamType::Name,
        None,
        "experiment name, the prefix of its run ids",
    ),
    p("workload", ParamType::Name, None, "which workload to run"),
    p(
        "transport",
        ParamType::Transport,
        None,
        "transport(s) to run it over",
    ),
    p(
        "repetitions",
        ParamType::Int {
            min: 1,
            max: 10_000,
        },
        Some("1"),
        "runs of each point of the matrix",
    ),
    p(
        "retakes",
        ParamType::Int { min: 0, max: 10 },
        Some("2"),
        "times a run is taken again when the host moved during it (the floor before or after it off by 1.5x)",
    ),
    p(
        "timeout_s",
        ParamType::Float {
            min: 0.001,
            max: crate::params::MAX_SECONDS,
        },
        Some("120"),
        "a run still going after this long is killed and reported",
    ),
    p(
        "cores",
        ParamType::Cores,
        Some("[0, 1]"),
        "core per role, in role order ([[0, 1], [0, 0]] sweeps placements)",
    ),
    p(
        "hosts",
        ParamType::Hosts,
        Some("[\"local\"]"),
        "host per role, in role order (`local` or a [hosts.NAME] table; roles past the list take the last); [[\"local\", \"local\"], [\"local\", \"nsb\"]] sweeps placements",
    ),
    p(
        "link",
        ParamType::Link,
        Some("\"\""),
        "how the link between the run's hosts is shaped on each host's `interface` for the run: \"rate 100mbit\" (tbf), \"loss 1%\" (nftables), \"delay 1ms\" (netem, where the kernel has it)",
    ),
    p(
        "max_frame",
        ParamType::Int {
            min: 8,
            max: 1 << 30,
        },
        Some("16777216"),
        "largest frame the transport accepts, bytes",
    ),
    p(
        "wait",
        ParamType::Choice(&["spin", "yield", "block"]),
        Some("\"spin\""),
        "how shm roles wait: spin (a core each), yield, or block (spin spin_us, then sleep on a futex)",
    ),
    p(
        "shm_capacity",
        ParamType::Int {
            min: 64,
            max: 1 << 31,
        },
        Some("4194304"),
        "bytes of each shm ring (a power of two; frames up to half of it)",
    ),
    p(
        "spin_us",
        ParamType::Int {
            min: 0,
            max: 1_000_000,
        },
        Some("50"),
        "with wait = \"block\": microseconds to spin before sleeping",
    ),
    p(
        "over",
        ParamType::QueueOver,
        Some("\"uds\""),
        "with transport = \"queue\": the transport it runs over; with transport = \"zmq\": uds (ipc://) or tcp",
    ),
    p(
        "hwm",
        ParamType::Int {
            min: 1,
            max: 10_000_000,
        },
        Some("1000"),
        "queue: frames a sender queues before its full policy applies (the high-water mark); zmq: SNDHWM and RCVHWM",
    ),
    p(
        "policy",
        ParamType::Choice(&["retry", "block"]),
        Some("\"retry\""),
        "queue: on a full queue, retry (wait retry_interval_s, at most retries times, then drop and count) or block",
    ),
    p(
        "retry_interval_s",
        SECONDS,
        Some("1"),
        "queue, policy = \"retry\": wait between attempts (the original: 1 s)",
    ),
    p(
        "retries",
        ParamType::Int {
            min: 0,
            max: 1_000_000,
        },
        Some("10"),
        "queue, policy = \"retry\": attempts after the first (the original: 10)",
    ),
    p(
        "queue_batch",
        ParamType::Int {
            min: 1,
            max: 1024,
        },
        Some("1"),
        "queue: frames its sender writes per system call; 1 sends each straight out when nothing is queued (lowest latency), more queues every frame for the sending thread, which writes them in batches (throughput; a thread hop per message, as libzmq's I/O thread)",
    ),
    p(
        "zmq_pattern",
        ParamType::Choice(&["pair", "pushpull"]),
        Some("\"pair\""),
        "zmq: one PAIR socket each side, or a PUSH and a PULL (one per direction)",
    ),
    p(
        "mq_depth",
        ParamType::Int { min: 1, max: 65_536 },
        Some("10"),
        "mq: messages each POSIX queue holds (without CAP_SYS_RESOURCE at most /proc/sys/fs/mqueue/msg_max; both queues within RLIMIT_MSGQUEUE)",
    ),
];

/// How shm halves wait, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Wait {
    /// Busy-poll.
    Spin,
    /// Poll with `sched_yield`.
    Yield,
    /// Spin, then sleep on a futex.
    Block,
}

impl Wait {
    /// The transport's wait strategy.
    pub fn strategy(self) -> WaitStrategy {
        match self {
            Wait::Spin => WaitStrategy::Spin,
            Wait::Yield => WaitStrategy::Yield,
            Wait::Block => WaitStrategy::Block,
        }
    }
}

/// The queue's full policy, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Retry `retries` times, `retry_interval_s` apart, then drop.
    Retry,
    /// Wait for room as long as the run may last.
    Block,
}

/// The keys of [`COMMON`], typed, for one point of the matrix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Common {
    pub name: String,
    pub workload: String,
    pub transport: TransportKind,
    pub repetitions: u32,
    pub retakes: u32,
    pub timeout_s: f64,
    pub cores: Vec<usize>,
    pub hosts: Vec<String>,
    pub link: String,
    pub max_frame: u32,
    pub wait: Wait,
    pub shm_capacity: u32,
    pub spin_us: u32,
    pub over: TransportKind,
    pub hwm: u32,
    pub policy: Policy,
    pub retry_interval_s: f64,
    pub retries: u32,
    pub queue_batch: u32,
    pub mq_depth: u32,
    pub zmq_pattern: ZmqPattern,
}

impl Common {
    /// Whether the run's frames travel through shm rings: `shm` itself, or the queue over
    /// it.
    pub fn over_shm(&self) -> bool {
        self.transport == TransportKind::Shm
            || (self.transport == TransportKind::Queue && self.over == TransportKind::Shm)
    }

    /// Whether the run's halves wait as the `wait` key says: shm's rings (also under a
    /// queue) and iceoryx2's; the others wait in the kernel.
    pub fn own_wait(&self) -> bool {
        self.over_shm() || self.transport == TransportKind::Iceoryx2
    }

    /// Whether its roles busy-wait (then they need a core each).
    pub fn spinning(&self) -> bool {
        self.own_wait() && self.wait == Wait::Spin
    }

    /// The bound on the whole run.
    pub fn timeout(&self) -> Duration {
        // Bounded by MAX_SECONDS when the config was read.
        Duration::from_secs_f64(self.timeout_s)
    }

    /// The queue's full policy (`block` waits as long as the run may last).
    pub fn queue_policy(&self) -> FullPolicy {
        match self.policy {
            Policy::Block => FullPolicy::Block {
                timeout: self.timeout(),
            },
            Policy::Retry => FullPolicy::Retry {
                interval: Duration::from_secs_f64(self.retry_interval_s),
                retries: self.retries,
            },
        }
    }

    /// The endpoint options these keys ask for (a workload may change some: `tasks` sizes
    /// its own frames).
    pub fn endpoint_options(&self) -> EndpointOptions {
        let mut opts = EndpointOptions {
            max_frame: self.max_frame,
            ..Default::default()
        };
        if self.transport == TransportKind::Queue {
            opts.over = self.over;
            opts.hwm = self.hwm;
            opts.policy = self.queue_policy();
            opts.batch = self.queue_batch;
        }
        if self.transport == TransportKind::Mq {
            opts.mq_depth = self.mq_depth;
        }
        if self.transport == TransportKind::Iceoryx2 {
            opts.wait = self.wait.strategy();
        }
        if self.transport == TransportKind::Zmq {
            opts.over = self.over;
            opts.hwm = self.hwm;
            opts.zmq_pattern = self.zmq_pattern;
        }
        if self.over_shm() {
            opts.shm_capacity = self.shm_capacity;
            opts.max_frame = opts
                .max_frame
                .min(ipcbench_transport::shm_max_frame(self.shm_capacity as usize) as u32);
            opts.wait = self.wait.strategy();
            opts.spin_us = self.spin_us;
        }
        opts
    }

    /// The transport as the CSV names it: `queue-uds` for the queue over uds.
    pub fn transport_label(&self) -> String {
        match self.transport {
            TransportKind::Queue => format!("queue-{}", self.over),
            TransportKind::Zmq => format!(
                "zmq-{}-{}",
                self.zmq_pattern.name(),
                if self.over == TransportKind::Tcp {
                    "tcp"
                } else {
                    "ipc"
                }
            ),
            t => t.name().to_string(),
        }
    }
}

/// How a workload's roles take the configured cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roles {
    /// One core each, in this order (the first listens).
    Fixed(&'static [&'static str]),
    /// A coordinator (or two) and workers, `count` roles in all, taking the cores in turn.
    Spread {
        /// Roles in all.
        count: usize,
    },
}

/// A problem with one point, on one key.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The key the message is about (its line is the one reported).
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A problem on `key`.
    pub fn new(key: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            key,
            message: message.into(),
        }
    }
}

/// What the checks of a point may know of the machine.
#[derive(Debug, Clone)]
pub struct Machine {
    /// The core ids this process may run on.
    pub usable_cores: Vec<usize>,
}

/// The largest frame a run hands its transport, and the key that makes it so.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Bytes.
    pub bytes: u64,
    /// The key an error names.
    pub key: &'static str,
    /// What the frame is, for the message ("a 4096-byte message").
    pub what: String,
    /// The workload raises the endpoint's `max_frame` to carry it (only the ring's
    /// capacity limits it).
    pub raises_max_frame: bool,
}

/// The figures a workload compares with the floor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FloorUse {
    /// Transfers between the two cores (taken again before each run).
    CoreTransfers,
    /// Memcpy bandwidth only (the floor from the start of the matrix).
    Memcpy,
    /// A bound of its own.
    None,
}

/// One point of a workload, typed: its parameters, and what the harness does with them.
pub trait Point: fmt::Debug + Send + Sync {
    /// The message size, for the `msg_bytes` column.
    fn msg_bytes(&self) -> Option<u64> {
        None
    }
    /// How its roles take the cores.
    fn roles(&self) -> Roles;
    /// The largest frame it sends over the transport, if it sends any.
    fn largest_frame(&self, common: &Common) -> Option<Frame>;
    /// Whether its roles busy-wait with these common keys (then they need a core each).
    fn spins(&self, common: &Common) -> bool {
        common.spinning()
    }
    /// The least time a run of it takes, seconds, where it is known before the run (a
    /// paced stream, a set of sleeps): a run that cannot finish inside `timeout_s` is
    /// refused.
    fn least_s(&self, common: &Common) -> Option<f64> {
        let _ = common;
        None
    }
    /// Checks that involve more than one key; every problem, each on its key.
    fn validate(&self, common: &Common, machine: &Machine) -> Vec<Problem>;
    /// `--quick`: a tenth of the counts.
    fn quick(&mut self) {}
    /// The wait column when its shm halves wait otherwise than `wait` says.
    fn wait_label(&self) -> Option<&'static str> {
        None
    }
    /// Whether its frames are lent in place rather than copied (`zero_copy`).
    fn zero_copy(&self) -> bool {
        false
    }
    /// What the `how` column adds for this workload: how its roles use the transport,
    /// where that is its own (`tasks`: who gets the batches, how the pill travels).
    fn how_note(&self, common: &Common) -> Option<&'static str> {
        let _ = common;
        None
    }
    /// Whether the queue's full-policy keys (`policy`, `retry_interval_s`, `retries`)
    /// decide how it runs: over the queue; `tasks` over ZeroMQ too.
    fn uses_policy(&self, common: &Common) -> bool {
        common.transport == TransportKind::Queue
    }
    /// Which floor its rows are compared with.
    fn floor_use(&self) -> FloorUse;
    /// Its row's floor (ns per operation) and the ratio to it, from the measuring role's
    /// report and the row's p50.
    fn floor(&self, floor: &Floor, report: &RoleReport, p50: Option<f64>) -> Option<RowFloor>;
    /// Prepares a run in its private directory `dir`: endpoints, segments, the roles'
    /// tasks; `results` is the results directory, for artefacts.
    fn plan(&self, run: &RunSpec, dir: &Path, results: &Path) -> anyhow::Result<Prepared>;
}

/// A row's floor: what the least its operation costs on these cores is, what the row's
/// figure is over it, and which floor it is.
#[derive(Debug, Clone, PartialEq)]
pub struct RowFloor {
    /// The floor, ns per operation.
    pub ns: f64,
    /// The row's figure over it.
    pub ratio: Option<f64>,
    /// Which floor: the `floor_of` column.
    pub of: String,
}

/// A column a workload adds to `summary.csv`.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Its name.
    pub name: &'static str,
    /// What it holds (results/README.md documents it).
    pub doc: &'static str,
}

/// What a workload says of itself: for `harness list`, the docs and the CSV.
#[derive(Debug)]
pub struct About {
    /// Its name in configs and CSV.
    pub name: &'static str,
    /// One line on what it measures.
    pub describe: &'static str,
    /// Its roles, for `harness list`.
    pub roles: &'static str,
    /// Its own keys (beyond [`COMMON`]).
    pub params: &'static [ParamDef],
    /// The columns it adds to `summary.csv`, in order.
    pub columns: &'static [Column],
    /// Its own headline figure (one of its columns) and whether more is better, for
    /// `points.csv` and `harness compare`; `None` where p50 or msgs/s says it all.
    pub headline: Option<(&'static str, bool)>,
}

/// A workload as the harness runs it: listed once in [`crate::workload::REGISTRY`].
pub trait Workload: Sync {
    /// What it says of itself.
    fn about(&self) -> &'static About;
    /// Its typed point from checked values (every key of [`About::params`] present).
    fn point(&self, values: &BTreeMap<String, Value>) -> Result<Box<dyn Point>, String>;
    /// Runs one of its roles in a role process.
    fn role(&self, job: &RoleJob, stdin: &mut dyn BufRead) -> anyhow::Result<RoleReport>;

    /// Its name in configs and CSV.
    fn name(&self) -> &'static str {
        self.about().name
    }
    /// One line on what it measures.
    fn describe(&self) -> &'static str {
        self.about().describe
    }
    /// Its roles, for `harness list`.
    fn roles_text(&self) -> &'static str {
        self.about().roles
    }
    /// Its own keys (beyond [`COMMON`]).
    fn params(&self) -> &'static [ParamDef] {
        self.about().params
    }
    /// The columns it adds to `summary.csv`, in order.
    fn columns(&self) -> &'static [Column] {
        self.about().columns
    }
}

impl fmt::Debug for dyn Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a run needs besides its roles: the endpoints to clean up after it, and what is
/// checked when the roles are gone.
#[allow(missing_debug_implementations)]
pub struct Prepared {
    /// The roles and bounds.
    pub plan: RunPlan,
    /// Endpoints whose resources are removed when the roles are gone.
    pub endpoints: Vec<Endpoint>,
    /// The checks after the run (and the segments they read, removed on drop).
    pub after: Option<Box<dyn After>>,
}

/// What a check may use to run a process of its own (a check that reads shared memory a
/// peer could have shrunk runs in a role process, never in the harness).
#[derive(Debug)]
pub struct Checking<'a> {
    /// The harness binary.
    pub exe: &'a Path,
    /// Set on Ctrl-C.
    pub interrupted: &'a std::sync::atomic::AtomicBool,
}

/// What a workload checks after its roles are gone, holding what it needs for that (a
/// canvas, a pool) until it is dropped.
pub trait After: Send {
    /// A progress note while the run goes (pingpong's pixels).
    fn progress(&self) -> Option<String> {
        None
    }
    /// Checks a run whose roles all reported; `metrics` are every role's figures merged
    /// (the first role's first), and the check may add columns. `Err`: why the run fails.
    fn check(
        &mut self,
        outcome: &RunOutcome,
        metrics: &mut Vec<(String, f64)>,
        how: &Checking<'_>,
    ) -> Result<(), String>;
    /// The run did not end ok (or was interrupted): removes the artefacts its roles wrote
    /// into the results that no row would account for.
    fn discard(&mut self) {}
}

/// One run of the matrix.
#[derive(Debug)]
pub struct RunSpec {
    /// Unique within the invocation; names the histogram file.
    pub run_id: String,
    /// The run id without its number and repetition: the same for every repetition of a
    /// point (points.csv, `harness compare`).
    pub point_id: String,
    /// Repetition number, from 0.
    pub rep: u32,
    /// The keys every experiment has.
    pub common: Common,
    /// The workload.
    pub workload: &'static dyn Workload,
    /// Its typed parameters.
    pub point: Box<dyn Point>,
    /// The point's values as configured (a wait of "kernel" for transports that block in
    /// the kernel; keys the transport does not use left out), for `--filter`
    /// ([`crate::config::matches`]) and the tests.
    pub labels: BTreeMap<String, Value>,
    /// The CSV's wait column: the configured wait over shm, `kernel` for transports that
    /// block in the kernel.
    pub wait_label: String,
    /// The CSV's params column: the workload's own keys but `msg_bytes`, `k=v;k=v`.
    pub params_label: String,
    /// The config's `[hosts.NAME]` tables.
    pub hosts: std::sync::Arc<crate::hosts::Hosts>,
}

impl RunSpec {
    /// The bound on the whole run.
    pub fn timeout(&self) -> Duration {
        self.common.timeout()
    }

    /// The core of each role, in role order.
    pub fn role_cores(&self) -> Vec<usize> {
        let cores = &self.common.cores;
        match self.point.roles() {
            Roles::Fixed(_) => cores.clone(),
            Roles::Spread { count } if !cores.is_empty() => {
                (0..count).map(|i| cores[i % cores.len()]).collect()
            }
            Roles::Spread { .. } => vec![],
        }
    }

    /// The host of role `i`: the `hosts` key's `i`-th name, the last for roles past
    /// the list.
    pub fn host_name(&self, i: usize) -> &str {
        let h = &self.common.hosts;
        h.get(i)
            .or(h.last())
            .map_or(crate::hosts::LOCAL, String::as_str)
    }

    /// The table of role `i`'s host; `None` on this host (or a name without a table,
    /// which the config check refused).
    pub fn host(&self, i: usize) -> Option<&crate::hosts::Host> {
        self.hosts.get(self.host_name(i))
    }

    /// Whether its roles run on more than one host.
    pub fn crosses_hosts(&self) -> bool {
        let first = self.host_name(0);
        self.common.hosts.iter().any(|h| h != first)
    }

    /// The address the network endpoints that role `i` listens on bind to: its host's,
    /// if the config names one (loopback otherwise).
    pub fn bind_address(&self, i: usize) -> Option<std::net::IpAddr> {
        self.host(i).and_then(|h| h.address)
    }

    /// The two cores its floor is measured between: its first two roles' (or the first
    /// twice, for a run on one core).
    pub fn core_pair(&self) -> [usize; 2] {
        let first = self.common.cores.first().copied().unwrap_or(0);
        [first, self.common.cores.get(1).copied().unwrap_or(first)]
    }

    /// The endpoint options of its point: the common keys', and for `mq` a message size
    /// of the point's largest frame (a queue's messages are all of its size, and the
    /// system caps it), not `max_frame`.
    pub fn endpoint_options(&self) -> EndpointOptions {
        let mut opts = self.common.endpoint_options();
        // The first role listens: its host's address, where the config names one.
        if let Some(addr) = self.bind_address(0) {
            opts.tcp_host = addr;
        }
        if self.common.transport == TransportKind::Mq {
            if let Some(f) = self.point.largest_frame(&self.common) {
                opts.max_frame = opts
                    .max_frame
                    .min(f.bytes.clamp(1, u64::from(u32::MAX)) as u32);
            }
        }
        opts
    }

    /// How the transport is used in this run, for the `how` column: the API, copy or
    /// loan, the wait, and the transport's own settings (a peer's buffer sizes and
    /// high-water marks), so rows of different transports compare like with like.
    pub fn how(&self) -> String {
        let c = &self.common;
        let o = self.endpoint_options();
        let moved = if self.point.zero_copy() {
            "loaned in place (no copy)"
        } else {
            "copied in and out"
        };
        let wait = match (c.own_wait(), c.wait) {
            (false, _) => "kernel wait".to_string(),
            (true, Wait::Spin) => "spin wait".to_string(),
            (true, Wait::Yield) => "yield wait".to_string(),
            (true, Wait::Block) if c.transport == TransportKind::Iceoryx2 => {
                "block wait (event service)".to_string()
            }
            (true, Wait::Block) => format!("block wait (spin {} µs, then futex)", c.spin_us),
        };
        let what = match c.transport {
            TransportKind::Pipe => "write/read on two FIFOs, u32 length prefix".to_string(),
            TransportKind::Uds => "send/recv on a Unix stream socket, u32 length prefix".into(),
            TransportKind::Tcp => format!(
                "send/recv on TCP ({}), TCP_NODELAY, u32 length prefix",
                self.bind_address(0)
                    .map_or_else(|| "loopback".to_string(), |a| format!("to {a}"))
            ),
            TransportKind::Shm => format!("ipcbench SPSC rings of {} bytes", o.shm_capacity),
            TransportKind::Queue => format!(
                "ipcbench queue (PUSH/PULL, hwm {}, policy {}, {}) over {}",
                c.hwm,
                format!("{:?}", c.policy).to_lowercase(),
                if c.queue_batch > 1 {
                    format!("every frame queued, written up to {} per system call", c.queue_batch)
                } else {
                    "each frame straight out when none is queued".to_string()
                },
                c.over
            ),
            TransportKind::Mq => format!(
                "POSIX mq_send/mq_timedreceive, message size {}, depth {}",
                o.max_frame, c.mq_depth
            ),
            TransportKind::Zmq => format!(
                "libzmq {} over {}, zmq_send/zmq_recv, SNDHWM=RCVHWM={}, I/O thread on the role's core",
                match c.zmq_pattern {
                    ZmqPattern::Pair => "PAIR",
                    ZmqPattern::PushPull => "PUSH/PULL",
                },
                if c.over == TransportKind::Tcp { "tcp://" } else { "ipc://" },
                c.hwm
            ),
            TransportKind::Iceoryx2 => format!(
                "iceoryx2 publish-subscribe of [u8], loaned sample, subscriber buffer {}",
                ipcbench_transport::IOX_BUFFER
            ),
        };
        let moved = if c.transport == TransportKind::Iceoryx2 && !self.point.zero_copy() {
            "copied into the loan and out of the sample"
        } else {
            moved
        };
        let mut how = format!("{what}; {moved}; {wait}");
        if let Some(note) = self.point.how_note(c) {
            how.push_str("; ");
            how.push_str(note);
        }
        let hosts = crate::hosts::describe(&c.hosts, &self.hosts, &c.link);
        if !hosts.is_empty() {
            how.push_str("; ");
            how.push_str(&hosts);
        }
        how
    }

    /// The setup bound of its plan: at most 20 s, at least 5 s or the run's own bound.
    pub fn setup_timeout(&self) -> Duration {
        crate::runner::SETUP_TIMEOUT.min(self.timeout().max(Duration::from_secs(5)))
    }
}
