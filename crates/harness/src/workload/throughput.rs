//! `throughput`: a one-way stream from a sender to a receiver that checks every sequence
//! number and payload byte; framed over any transport, or as the bare system calls.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use ipcbench_transport::{baseline, Endpoint, Rx, StreamRx, StreamTx, Tx};
use ipcbench_workloads::throughput::{self, ThroughputParams};
use ipcbench_workloads::Measurement;
use serde::{Deserialize, Serialize};

use super::{check_bare, pair_plan, per_op_ratio, run_bare, run_pair, BareRole, PairRole};
use crate::floor::Floor;
use crate::params::{self, p, ParamDef, ParamType, Value, COUNT};
use crate::spec::{
    About, Common, FloorUse, Frame, Machine, Point, Prepared, Problem, Roles, RowFloor, RunSpec,
    Workload,
};
use crate::wire::{RoleJob, RoleReport};

/// The registry's entry.
#[derive(Debug)]
pub struct Throughput;

const NAME: &str = "throughput";
const ROLES: &[&str] = &["sender", "receiver"];

const PARAMS: &[ParamDef] = &[
    super::MSG_BYTES,
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
    super::BARE,
];

/// `throughput`'s parameters, typed (keys and docs: [`PARAMS`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    msg_bytes: u32,
    count: u64,
    warmup: u64,
    bare: bool,
}

/// What a throughput role is to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Task {
    endpoint: Endpoint,
    sender: bool,
    params: ThroughputParams,
    bare: bool,
}

const ABOUT: About = About {
    name: NAME,
    describe: "one-way stream; every sequence number and payload byte checked; msgs/s and bytes/s",
    roles: "one core each, in order: sender, receiver",
    params: PARAMS,
    columns: &[],
    headline: None,
};

impl Workload for Throughput {
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
        run_pair(job, &task, stdin)
    }
}

impl PairRole for Task {
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
    fn listens(&self) -> bool {
        self.sender
    }
    fn work(&self, tx: &mut impl Tx, rx: &mut impl Rx) -> anyhow::Result<Measurement> {
        Ok(if self.sender {
            throughput::sender(tx, rx, &self.params)?
        } else {
            throughput::receiver(tx, rx, &self.params)?
        })
    }
}

impl BareRole for Task {
    fn bare(&self, tx: &StreamTx, rx: &StreamRx) -> anyhow::Result<Measurement> {
        bare(tx, rx, &self.params, self.sender)
    }
}

/// The bare stream: the transport's system calls with nothing of ours.
fn bare(
    tx: &StreamTx,
    rx: &StreamRx,
    p: &ThroughputParams,
    sender: bool,
) -> anyhow::Result<Measurement> {
    let mut msg = vec![0u8; p.msg_bytes];
    ipcbench_workloads::fill_pattern(&mut msg, 1);
    if sender {
        baseline::stream_send(tx, rx, &msg, p.warmup)?;
        let duration = baseline::stream_send(tx, rx, &msg, p.count)?;
        Ok(Measurement {
            count: p.count,
            bytes: p.count * p.msg_bytes as u64,
            duration,
            ..Default::default()
        })
    } else {
        baseline::stream_recv(tx, rx, &mut msg, p.warmup)?;
        baseline::stream_recv(tx, rx, &mut msg, p.count)?;
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
    fn validate(&self, common: &Common, _: &Machine) -> Vec<Problem> {
        let mut out = Vec::new();
        check_bare(self.bare, common, &mut out);
        out
    }
    fn quick(&mut self) {
        self.count = (self.count / 10).max(100.min(self.count));
        self.warmup = (self.warmup / 10).max(10.min(self.warmup));
    }
    fn floor_use(&self) -> FloorUse {
        FloorUse::CoreTransfers
    }
    fn floor(&self, floor: &Floor, report: &RoleReport, _: Option<f64>) -> Option<RowFloor> {
        // A message costs at least one cache-resident copy of its size and, between two
        // cores, one line handed over: whichever is more.
        let copy = floor.copy_floor_ns(u64::from(self.msg_bytes));
        let stream = floor.stream_ns.unwrap_or(0.0);
        let (ns, of) = if copy >= stream {
            (copy, format!("cache-resident copy of {} B", self.msg_bytes))
        } else {
            (stream, "line stream between the cores".to_string())
        };
        Some(RowFloor {
            ns,
            ratio: per_op_ratio(report, ns),
            of,
        })
    }
    fn plan(&self, run: &RunSpec, dir: &Path, _results: &Path) -> anyhow::Result<Prepared> {
        let params = ThroughputParams {
            msg_bytes: self.msg_bytes as usize,
            count: self.count,
            warmup: self.warmup,
        };
        let (plan, endpoint) = pair_plan(run, dir, NAME, ROLES, |endpoint, sender| Task {
            endpoint: endpoint.clone(),
            sender,
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
