//! What the harness knows: workloads, their roles and parameters, and the keys common to
//! every experiment. One table drives config validation, `harness list` and the CSV.

use std::fmt;

/// A workload the harness can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    /// Ping-pong round trips.
    Latency,
    /// One-way stream.
    Throughput,
    /// Two agents paint an image one pixel per turn.
    Pingpong,
    /// A paced, noisy vector stream with exact drop detection.
    Vectors,
    /// Parallel acquisition into a shared chunk pool, zero-copy against copy.
    Buffer,
    /// 512 sleeping tasks through a gateway and lazily started workers.
    Tasks,
}

impl WorkloadKind {
    /// Every workload, in `list` order.
    pub const ALL: [WorkloadKind; 6] = [
        WorkloadKind::Latency,
        WorkloadKind::Throughput,
        WorkloadKind::Pingpong,
        WorkloadKind::Vectors,
        WorkloadKind::Buffer,
        WorkloadKind::Tasks,
    ];

    /// Whether its rows are compared with transfers between the two cores (the cache-line
    /// round trips, or for `throughput` the line stream beside memcpy), measured again
    /// before each such run, rather than with memcpy bandwidth alone or a bound of their own.
    pub fn compared_with_core_transfers(self) -> bool {
        matches!(
            self,
            WorkloadKind::Latency
                | WorkloadKind::Vectors
                | WorkloadKind::Pingpong
                | WorkloadKind::Throughput
        )
    }

    /// Its name in configs and CSV.
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Latency => "latency",
            WorkloadKind::Throughput => "throughput",
            WorkloadKind::Pingpong => "pingpong",
            WorkloadKind::Vectors => "vectors",
            WorkloadKind::Buffer => "buffer",
            WorkloadKind::Tasks => "tasks",
        }
    }

    /// One line on what it measures.
    pub fn describe(self) -> &'static str {
        match self {
            WorkloadKind::Latency => {
                "ping-pong round trips; HDR histogram of every round trip; open-loop with rate > 0"
            }
            WorkloadKind::Throughput => {
                "one-way stream; every sequence number and payload byte checked; msgs/s and bytes/s"
            }
            WorkloadKind::Buffer => {
                "an acquirer fills chunks, workers process them (sum or transitions) and merge into a shared result; zero-copy pool or copy over a transport; result checked exactly"
            }
            WorkloadKind::Vectors => {
                "paced random vectors with injected drops; the consumer detects every drop exactly, interpolates it, keeps rate and batch statistics"
            }
            WorkloadKind::Pingpong => {
                "two agents paint a WxH image one pixel per turn (unused position, unused colour), handing the turn over the transport; every pixel checked"
            }
            WorkloadKind::Tasks => {
                "a client pushes batches of lines to a gateway, which hands them first-free to lazily started worker processes that sleep (or spin) per command and push results straight back; makespan against the bound"
            }
        }
    }

    /// Its roles, in the order `cores` assigns them. The first listens, the others connect.
    pub fn roles(self) -> &'static [&'static str] {
        match self {
            WorkloadKind::Latency => &["client", "server"],
            WorkloadKind::Throughput => &["sender", "receiver"],
            WorkloadKind::Pingpong => &["ping", "pong"],
            WorkloadKind::Vectors => &["producer", "consumer"],
            WorkloadKind::Buffer => &["acquirer", "worker", "..."],
            WorkloadKind::Tasks => &["client", "gateway", "worker", "..."],
        }
    }

    /// Whether its roles take the `cores` in turn (one coordinator and any number of
    /// workers) rather than one core each.
    pub fn spreads_cores(self) -> bool {
        matches!(self, WorkloadKind::Buffer | WorkloadKind::Tasks)
    }

    /// Its own parameters (beyond [`COMMON`]).
    pub fn params(self) -> &'static [ParamDef] {
        match self {
            WorkloadKind::Latency => LATENCY,
            WorkloadKind::Throughput => THROUGHPUT,
            WorkloadKind::Pingpong => PINGPONG,
            WorkloadKind::Vectors => VECTORS,
            WorkloadKind::Buffer => BUFFER,
            WorkloadKind::Tasks => TASKS,
        }
    }

    /// Extra CSV columns this workload fills (after the fixed ones).
    pub fn metric_columns(self) -> &'static [&'static str] {
        match self {
            WorkloadKind::Pingpong => &[
                "width",
                "height",
                "pixels",
                "ns_per_pixel",
                "pick_ns",
                "speedup_vs_original",
            ],
            WorkloadKind::Vectors => &[
                "vectors_sent",
                "vectors_received",
                "drops_injected",
                "drops_detected",
                "extrapolated",
                "rate_target_hz",
                "rate_achieved_hz",
                "rate_std_hz",
            ],
            WorkloadKind::Buffer => &[
                "chunks",
                "chunk_bytes",
                "workers",
                "gb_per_s",
                "chunks_per_s",
                "free_wait_ns",
                "fill_ns",
                "send_ns",
                "ready_wait_ns",
            ],
            WorkloadKind::Tasks => &[
                "makespan_s",
                "ideal_s",
                "makespan_over_ideal",
                "tasks",
                "batches",
                "results_ok",
                "duplicates",
                "response_sum",
                "unknown",
                "redispatched",
                "dropped",
                "workers_started",
                "workers_peak",
                "workers_reaped",
                "workers_killed",
                "cpu_ms_per_command",
            ],
            _ => &[],
        }
    }

    /// Looks a workload up by name.
    pub fn from_name(name: &str) -> Option<WorkloadKind> {
        WorkloadKind::ALL.into_iter().find(|w| w.name() == name)
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The type and range of a parameter.
#[derive(Debug, Clone, Copy)]
pub enum ParamType {
    /// An integer in `min..=max`.
    Int { min: i64, max: i64 },
    /// A number (integer or float) at least `min`.
    Float { min: f64 },
    /// true or false.
    Bool,
    /// A string.
    Str,
    /// A file path ("" for the built-in default).
    Path,
    /// A shared-memory wait strategy: spin or yield.
    Wait,
    /// One of a fixed set of names.
    Choice(&'static [&'static str]),
    /// A transport name.
    Transport,
    /// A workload name.
    Workload,
    /// A list of core ids, one per role.
    Cores,
}

impl ParamType {
    /// How the type reads in an error or in `list`.
    pub fn describe(self) -> String {
        match self {
            ParamType::Int { min, max } if max == i64::MAX => format!("integer >= {min}"),
            ParamType::Int { min, max } => format!("integer {min}..={max}"),
            ParamType::Float { min } => format!("number >= {min}"),
            ParamType::Bool => "true or false".into(),
            ParamType::Str => "string".into(),
            ParamType::Path => "file path (\"\": built in)".into(),
            ParamType::Wait => "\"spin\", \"yield\" or \"block\"".into(),
            ParamType::Choice(c) => format!("one of {}", c.join(", ")),
            ParamType::Transport => "transport name".into(),
            ParamType::Workload => "workload name".into(),
            ParamType::Cores => "list of core ids, one per role".into(),
        }
    }
}

/// A parameter: key, type, default (None: required) and what it does.
#[derive(Debug, Clone, Copy)]
pub struct ParamDef {
    /// The key in the config.
    pub key: &'static str,
    /// Its type and range.
    pub ty: ParamType,
    /// Its default as TOML text; `None` means the key is required.
    pub default: Option<&'static str>,
    /// What it does.
    pub doc: &'static str,
}

impl ParamDef {
    /// Its line in `harness list`: key, type, what it does, default.
    pub fn list_line(&self) -> String {
        let default = self
            .default
            .map(|v| format!(" [default {v}]"))
            .unwrap_or_else(|| " [required]".into());
        format!(
            "  {:<18} {:<36} {}{default}",
            self.key,
            self.ty.describe(),
            self.doc
        )
    }
}

const fn p(
    key: &'static str,
    ty: ParamType,
    default: Option<&'static str>,
    doc: &'static str,
) -> ParamDef {
    ParamDef {
        key,
        ty,
        default,
        doc,
    }
}

const COUNT: ParamType = ParamType::Int {
    min: 1,
    max: 1_000_000_000_000,
};
const MSG: ParamType = ParamType::Int {
    min: 8,
    max: u32::MAX as i64,
};

/// Keys every experiment has.
pub const COMMON: &[ParamDef] = &[
    p(
        "name",
        ParamType::Str,
        None,
        "experiment name, the prefix of its run ids",
    ),
    p(
        "workload",
        ParamType::Workload,
        None,
        "which workload to run",
    ),
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
        "timeout_s",
        ParamType::Float { min: 0.001 },
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
        ParamType::Wait,
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
        ParamType::Choice(&["uds", "tcp", "shm"]),
        Some("\"uds\""),
        "with transport = \"queue\": the transport it runs over",
    ),
    p(
        "hwm",
        ParamType::Int {
            min: 1,
            max: 10_000_000,
        },
        Some("1000"),
        "queue: frames a sender queues before its full policy applies (the high-water mark)",
    ),
    p(
        "policy",
        ParamType::Choice(&["retry", "block"]),
        Some("\"retry\""),
        "queue: on a full queue, retry (wait retry_interval_s, at most retries times, then drop and count) or block",
    ),
    p(
        "retry_interval_s",
        ParamType::Float { min: 0.0 },
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
];

const LATENCY: &[ParamDef] = &[
    p(
        "msg_bytes",
        MSG,
        None,
        "message size in bytes (>= 8: the sequence number)",
    ),
    p("count", COUNT, Some("10000"), "round trips recorded"),
    p(
        "warmup",
        ParamType::Int {
            min: 0,
            max: 1_000_000_000,
        },
        Some("1000"),
        "round trips before recording",
    ),
    p(
        "rate",
        ParamType::Float { min: 0.0 },
        Some("0"),
        "open-loop messages/s, latency from intended send time; 0 = closed loop",
    ),
    p(
        "bare",
        ParamType::Bool,
        Some("false"),
        "bare baseline: the same system calls with no framing or checks",
    ),
    p(
        "zero_copy",
        ParamType::Bool,
        Some("false"),
        "shm only: write the sequence number in place in a loaned slot and read the echo in place (no payload copy)",
    ),
];

const THROUGHPUT: &[ParamDef] = &[
    p(
        "msg_bytes",
        MSG,
        None,
        "message size in bytes (>= 8: the sequence number)",
    ),
    p("count", COUNT, Some("100000"), "messages measured"),
    p(
        "warmup",
        ParamType::Int {
            min: 0,
            max: 1_000_000_000,
        },
        Some("1000"),
        "messages before the clock starts",
    ),
    p(
        "bare",
        ParamType::Bool,
        Some("false"),
        "bare baseline: the same system calls with no framing or checks",
    ),
];

const SIDE: ParamType = ParamType::Int {
    min: 0,
    max: 1 << 24,
};

const PINGPONG: &[ParamDef] = &[
    p(
        "size",
        ParamType::Int {
            min: 1,
            max: 1 << 24,
        },
        None,
        "image side: a size x size image (at most 2^24 pixels: one colour each)",
    ),
    p(
        "width",
        SIDE,
        Some("0"),
        "image width, if not size (0 = size)",
    ),
    p(
        "height",
        SIDE,
        Some("0"),
        "image height, if not size (0 = size)",
    ),
    p(
        "seed",
        ParamType::Int {
            min: 0,
            max: i64::MAX,
        },
        Some("1"),
        "seed of the picks: a run is reproducible from it",
    ),
    p(
        "artefacts",
        ParamType::Bool,
        Some("true"),
        "write the [pos, colour] log and the final PNG into the results",
    ),
];

const SECONDS: ParamType = ParamType::Float { min: 0.0 };

const VECTORS: &[ParamDef] = &[
    p(
        "size",
        ParamType::Int {
            min: 1,
            max: 1 << 20,
        },
        Some("50"),
        "elements per vector",
    ),
    p(
        "dtype",
        ParamType::Choice(&["f64", "f32"]),
        Some("\"f64\""),
        "element type",
    ),
    p(
        "distribution",
        ParamType::Choice(&["normal", "uniform"]),
        Some("\"normal\""),
        "standard normal or uniform on [0, 1)",
    ),
    p(
        "rate",
        ParamType::Float { min: 0.0 },
        Some("1000"),
        "vectors per second on a fixed schedule; 0 = as fast as the transport goes",
    ),
    p(
        "duration_s",
        SECONDS,
        Some("30"),
        "run length, when count is 0",
    ),
    p(
        "count",
        ParamType::Int {
            min: 0,
            max: 1_000_000_000_000,
        },
        Some("0"),
        "vector slots (sent or dropped); 0 = duration_s worth",
    ),
    p(
        "noise",
        ParamType::Choice(&["drop-interval", "burst", "none"]),
        Some("\"drop-interval\""),
        "drop-interval: one vector every X s; burst: `burst` vectors every X s; X uniform in [low_s, high_s)",
    ),
    p("low_s", SECONDS, Some("2"), "shortest interval between drops"),
    p("high_s", SECONDS, Some("3"), "longest interval between drops (exclusive)"),
    p(
        "burst",
        ParamType::Int {
            min: 1,
            max: 1_000_000,
        },
        Some("5"),
        "vectors lost per burst (noise = \"burst\")",
    ),
    p(
        "seed",
        ParamType::Int {
            min: 0,
            max: i64::MAX,
        },
        Some("1"),
        "seed of the values and the noise",
    ),
    p(
        "display_interval_s",
        ParamType::Float { min: 0.001 },
        Some("1"),
        "how often the consumer logs rate and latency (the timeline file)",
    ),
];

const TASKS: &[ParamDef] = &[
    p(
        "batch",
        ParamType::Int { min: 1, max: 65_536 },
        Some("16"),
        "lines per batch",
    ),
    p(
        "max_workers",
        ParamType::Int { min: 1, max: 256 },
        Some("32"),
        "most worker processes at once (started lazily)",
    ),
    p(
        "threads",
        ParamType::Bool,
        Some("true"),
        "a worker runs its batch one thread per command (false: one after another)",
    ),
    p(
        "kind",
        ParamType::Choice(&["io", "cpu", "cpu_ms"]),
        Some("\"io\""),
        "per command: io sleeps its wait, cpu spins `iterations` loop turns, cpu_ms spins `cpu_ms` of CPU time",
    ),
    p(
        "iterations",
        ParamType::Int {
            min: 1,
            max: 1_000_000_000_000,
        },
        Some("2000000"),
        "kind = \"cpu\": loop iterations per command (the original: 2,000,000)",
    ),
    p(
        "cpu_ms",
        ParamType::Float { min: 0.0 },
        Some("70"),
        "kind = \"cpu_ms\": CPU milliseconds per command (the original's loop took about 70 ms)",
    ),
    p(
        "wait_s",
        ParamType::Float { min: 0.0 },
        Some("0"),
        "if > 0, every io command sleeps this long instead of the data file's wait",
    ),
    p(
        "client_file",
        ParamType::Path,
        Some("\"\""),
        "the client's ip:command lines (empty: the shipped client_512.txt)",
    ),
    p(
        "server_file",
        ParamType::Path,
        Some("\"\""),
        "the gateway's ip:command:response:wait_s lines (empty: the shipped server_512.txt)",
    ),
    p(
        "generate",
        ParamType::Int { min: 0, max: 1_000_000 },
        Some("0"),
        "if > 0, generate this many lines instead of reading files, waits uniform in [gen_low_s, gen_high_s]",
    ),
    p(
        "gen_low_s",
        ParamType::Float { min: 0.0 },
        Some("1"),
        "generate: shortest wait",
    ),
    p(
        "gen_high_s",
        ParamType::Float { min: 0.0 },
        Some("3"),
        "generate: longest wait",
    ),
    p(
        "seed",
        ParamType::Int {
            min: 0,
            max: i64::MAX,
        },
        Some("1"),
        "generate: the waits' seed",
    ),
    p(
        "kill_worker_after",
        ParamType::Int {
            min: 0,
            max: 1_000_000,
        },
        Some("0"),
        "fault injection: kill the worker that takes the N-th batch, mid-batch (0: none)",
    ),
    p(
        "idle_timeout_s",
        ParamType::Float { min: 0.001 },
        Some("10"),
        "a worker without a batch for this long leaves (is reaped)",
    ),
];

const BUFFER: &[ParamDef] = &[
    p(
        "dtype",
        ParamType::Choice(&["u8", "u16", "i16", "u32", "f32", "f64"]),
        Some("\"u8\""),
        "element type (transitions: u32)",
    ),
    p(
        "exemplars",
        ParamType::Int {
            min: 1,
            max: 1 << 24,
        },
        Some("1000"),
        "rows (frames) per chunk",
    ),
    p(
        "elems",
        ParamType::Int {
            min: 1,
            max: 1 << 24,
        },
        Some("100"),
        "elements per row",
    ),
    p(
        "n_chunks",
        ParamType::Int {
            min: 0,
            max: 4096,
        },
        Some("0"),
        "chunks in the pool; 0 = 2 x usable cores",
    ),
    p(
        "chunks",
        ParamType::Int {
            min: 1,
            max: 1_000_000_000,
        },
        Some("30"),
        "chunks produced",
    ),
    p(
        "workers",
        ParamType::Int { min: 1, max: 63 },
        Some("1"),
        "worker processes (roles: the acquirer, then the workers; cores are used in turn)",
    ),
    p(
        "kind",
        ParamType::Choice(&["sum", "transitions"]),
        Some("\"sum\""),
        "sum: per-column sums; transitions: 512x512 code-to-code counts between consecutive frames",
    ),
    p(
        "zero_copy",
        ParamType::Bool,
        Some("true"),
        "true: the shared chunk pool (transport = \"shm\"); false: chunks sent by copy over the transport",
    ),
    p(
        "seed",
        ParamType::Int {
            min: 0,
            max: i64::MAX,
        },
        Some("1"),
        "seed of the data",
    ),
];

/// Looks a key up among the common keys and `workload`'s own.
pub fn param(workload: WorkloadKind, key: &str) -> Option<&'static ParamDef> {
    COMMON
        .iter()
        .chain(workload.params())
        .find(|d| d.key == key)
}

/// Whether any workload knows `key`.
pub fn known_anywhere(key: &str) -> bool {
    WorkloadKind::ALL.iter().any(|w| param(*w, key).is_some())
}
