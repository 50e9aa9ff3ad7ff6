//! `latency`: ping-pong round trips between a client (measures) and a server (echoes),
//! framed over any transport, in place over loans (`zero_copy`: shm, iceoryx2), or as the bare
//! system calls of a stream transport (`bare`).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use ipcbench_transport::dispatch::{dispatch_loans, WithLoans};
use ipcbench_transport::{
    baseline, Endpoint, Link, LoanRx, LoanTx, Rx, StreamRx, StreamTx, TransportKind, Tx,
};
use ipcbench_workloads::latency::{self, LatencyParams};
use ipcbench_workloads::{new_histogram, Measurement};
use serde::{Deserialize, Serialize};

use super::{check_bare, pair_plan, run_bare, run_pair, BareRole, PairRole};
use crate::floor::Floor;
use crate::params::{self, p, ParamDef, ParamType, Value, COUNT};
use crate::spec::{
    About, Common, FloorUse, Frame, Machine, Point, Prepared, Problem, Roles, RowFloor, RunSpec,
    Workload,
};
use crate::wire::{connected, RoleJob, RoleReport};

/// The registry's entry.
#[derive(Debug)]
pub struct Latency;

const NAME: &str = "latency";
const ROLES: &[&str] = &["client", "server"];

const PARAMS: &[ParamDef] = &[
    super::MSG_BYTES,
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
        ParamType::Float {
            min: 0.0,
            max: 1e9,
        },
        Some("0"),
        "open-loop messages/s, latency from intended send time; 0 = closed loop",
    ),
    super::BARE,
    p(
        "zero_copy",
        ParamType::Bool,
        Some("false"),
        "shm or iceoryx2: write the sequence number in place in a loaned slot (sample) and read the echo in place (no payload copy)",
    ),
];

/// `latency`'s parameters, typed (keys and docs: [`PARAMS`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    msg_bytes: u32,
    count: u64,
    warmup: u64,
    rate: f64,
    bare: bool,
    zero_copy: bool,
}

/// What a latency role is to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Task {
    endpoint: Endpoint,
    client: bool,
    params: LatencyParams,
    bare: bool,
}

const ABOUT: About = About {
    name: NAME,
    describe: "ping-pong round trips; HDR histogram of every round trip; open-loop with rate > 0",
    roles: "one core each, in order: client, server",
    params: PARAMS,
    columns: &[],
    headline: None,
};

impl Workload for Latency {
    fn about(&self) -> &'static About {
        &ABOUT
    }
    fn point(&self, values: &BTreeMap<String, Value>) -> Result<Box<dyn Point>, String> {
        Ok(Box::new(params::deserialize::<Params>(PARAMS, values)?))
    }
    fn role(&self, job: &RoleJob, stdin: &mut dyn BufRead) -> anyhow::Result<RoleReport> {
        let task: Task = job.task()?;
        if task.bare {
            return run_bare(job, &task, stdin);
        }
        if task.params.zero_copy {
            struct InPlace<'a>(&'a RoleJob, &'a Task, &'a mut dyn BufRead);
            impl WithLoans for InPlace<'_> {
                type Output = anyhow::Result<RoleReport>;
                fn call<T: Link>(self) -> anyhow::Result<RoleReport>
                where
                    T::Tx: LoanTx,
                    T::Rx: LoanRx,
                {
                    let InPlace(job, task, stdin) = self;
                    connected::<T>(job, &task.endpoint, task.client, stdin, |tx, rx| {
                        Ok(if task.client {
                            latency::client_in_place(tx, rx, &task.params)?
                        } else {
                            latency::echo_in_place(tx, rx, &task.params)?
                        })
                    })
                }
            }
            return dispatch_loans(task.endpoint.kind(), InPlace(job, &task, stdin))?;
        }
        run_pair(job, &task, stdin)
    }
}

impl PairRole for Task {
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
    fn listens(&self) -> bool {
        self.client
    }
    fn work(&self, tx: &mut impl Tx, rx: &mut impl Rx) -> anyhow::Result<Measurement> {
        if self.client {
            return Ok(latency::client(tx, rx, &self.params)?);
        }
        match test_delay(self.endpoint.kind()) {
            Some(delay) => Ok(latency::echo(&mut Delayed { tx, delay }, rx, &self.params)?),
            None => Ok(latency::echo(tx, rx, &self.params)?),
        }
    }
}

/// A test knob, never a default: `IPCBENCH_TEST_DELAY=<transport>:<ns>` makes the echo
/// of that transport wait `ns` (spinning) before each answer, so a build that is slower
/// by a known amount can be had without rebuilding (how `harness compare` is shown to
/// catch a slower point).
fn test_delay(kind: TransportKind) -> Option<std::time::Duration> {
    let v = std::env::var("IPCBENCH_TEST_DELAY").ok()?;
    let (t, ns) = v.split_once(':')?;
    (t == kind.name())
        .then(|| ns.parse::<u64>().ok())
        .flatten()
        .map(std::time::Duration::from_nanos)
}

/// A sending half that waits `delay` before each frame.
struct Delayed<'a, T> {
    tx: &'a mut T,
    delay: std::time::Duration,
}

impl<T: Tx> Delayed<'_, T> {
    fn wait(&self) {
        let t0 = std::time::Instant::now();
        while t0.elapsed() < self.delay {
            std::hint::spin_loop();
        }
    }
}

impl<T: Tx> Tx for Delayed<'_, T> {
    fn send(&mut self, frame: &[u8]) -> Result<(), ipcbench_transport::SendError> {
        self.wait();
        self.tx.send(frame)
    }
    fn try_send(&mut self, frame: &[u8]) -> Result<(), ipcbench_transport::TrySendError> {
        self.wait();
        self.tx.try_send(frame)
    }
    fn flush(&mut self) -> Result<(), ipcbench_transport::SendError> {
        self.tx.flush()
    }
    fn max_frame_len(&self) -> usize {
        self.tx.max_frame_len()
    }
}

impl BareRole for Task {
    fn bare(&self, tx: &StreamTx, rx: &StreamRx) -> anyhow::Result<Measurement> {
        bare(tx, rx, &self.params, self.client)
    }
}

/// The bare round trips: the stream's system calls with nothing of ours.
fn bare(
    tx: &StreamTx,
    rx: &StreamRx,
    p: &LatencyParams,
    client: bool,
) -> anyhow::Result<Measurement> {
    let mut msg = vec![0u8; p.msg_bytes];
    if client {
        baseline::roundtrips(tx, rx, &mut msg, p.warmup, |_| {})?;
        let mut h = new_histogram();
        let duration =
            baseline::roundtrips(tx, rx, &mut msg, p.count, |ns| h.saturating_record(ns))?;
        Ok(Measurement {
            histogram: Some(h),
            count: p.count,
            bytes: p.count * p.msg_bytes as u64,
            duration,
            metrics: vec![],
        })
    } else {
        baseline::echo(tx, rx, &mut msg, p.warmup + p.count)?;
        Ok(Measurement {
            count: p.count,
            ..Default::default()
        })
    }
}

impl Point for Params {
    fn msg_bytes(&self) -> Option<u64> {
        Some(u64::from(self.msg_bytes))
    }
    fn roles(&self) -> Roles {
        Roles::Fixed(ROLES)
    }
    fn largest_frame(&self, _: &Common) -> Option<Frame> {
        Some(super::message_frame(self.msg_bytes))
    }
    fn least_s(&self, _: &Common) -> Option<f64> {
        (self.rate > 0.0).then(|| (self.count + self.warmup) as f64 / self.rate)
    }
    fn validate(&self, common: &Common, _: &Machine) -> Vec<Problem> {
        let mut out = Vec::new();
        check_bare(self.bare, common, &mut out);
        if self.zero_copy && !ipcbench_transport::dispatch::lends(common.transport) {
            out.push(Problem::new(
                "zero_copy",
                "zero_copy = true needs a transport that lends its memory: shm or iceoryx2",
            ));
        }
        if self.zero_copy && self.bare {
            out.push(Problem::new(
                "zero_copy",
                "zero_copy and bare cannot both be true",
            ));
        }
        out
    }
    fn quick(&mut self) {
        self.count = (self.count / 10).max(100.min(self.count));
        self.warmup = (self.warmup / 10).max(10.min(self.warmup));
    }
    fn zero_copy(&self) -> bool {
        self.zero_copy
    }
    fn floor_use(&self) -> FloorUse {
        FloorUse::CoreTransfers
    }
    fn floor(&self, floor: &Floor, _: &RoleReport, p50: Option<f64>) -> Option<RowFloor> {
        // Timed per round trip like the row, so the clock's cost is on both sides.
        Some(RowFloor {
            ns: floor.rtt_p50_ns,
            ratio: p50.map(|p| p / floor.rtt_p50_ns),
            of: "cache-line round trip, timed singly (p50)".into(),
        })
    }
    fn plan(&self, run: &RunSpec, dir: &Path, _results: &Path) -> anyhow::Result<Prepared> {
        let params = LatencyParams {
            msg_bytes: self.msg_bytes as usize,
            count: self.count,
            warmup: self.warmup,
            rate: self.rate,
            zero_copy: self.zero_copy,
        };
        let (plan, endpoint) = pair_plan(run, dir, NAME, ROLES, |endpoint, client| Task {
            endpoint: endpoint.clone(),
            client,
            params,
            bare: self.bare,
        })?;
        Ok(Prepared {
            plan,
            endpoints: vec![endpoint],
            after: None,
        })
    }
}
