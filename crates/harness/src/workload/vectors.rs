//! `vectors`: a paced stream of noisy random vectors with injected drops, from a producer
//! to a consumer that detects every drop exactly, interpolates it and keeps rate and
//! batch statistics (its batches and timeline CSVs go into the results directory).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ipcbench_transport::{Endpoint, Rx, Tx};
use ipcbench_workloads::vectors::{self, Distribution, Dtype, NoiseSpec, VectorsParams};
use ipcbench_workloads::Measurement;
use serde::{Deserialize, Serialize};

use super::{pair_plan, run_pair, PairRole};
use crate::floor::Floor;
use crate::params::{self, p, ParamDef, ParamType, Value, SECONDS, SEED};
use crate::runner::RunOutcome;
use crate::spec::{
    About, After, Checking, Column, Common, FloorUse, Frame, Machine, Point, Prepared, Problem,
    Roles, RowFloor, RunSpec, Workload,
};
use crate::wire::{RoleJob, RoleReport};

/// The registry's entry.
#[derive(Debug)]
pub struct Vectors;

const NAME: &str = "vectors";
const ROLES: &[&str] = &["producer", "consumer"];

const PARAMS: &[ParamDef] = &[
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
        ParamType::Float {
            min: 0.0,
            max: 1e9,
        },
        Some("1000"),
        "vectors per second on a fixed schedule; 0 = as fast as the transport goes",
    ),
    p("duration_s", SECONDS, Some("30"), "run length, when count is 0"),
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
    p(
        "high_s",
        SECONDS,
        Some("3"),
        "longest interval between drops (exclusive)",
    ),
    p(
        "burst",
        ParamType::Int {
            min: 1,
            max: 1_000_000,
        },
        Some("5"),
        "vectors lost per burst (noise = \"burst\")",
    ),
    p("seed", SEED, Some("1"), "seed of the values and the noise"),
    p(
        "display_interval_s",
        ParamType::Float {
            min: 0.001,
            max: crate::params::MAX_SECONDS,
        },
        Some("1"),
        "how often the consumer logs rate and latency (the timeline file)",
    ),
];

const COLUMNS: &[Column] = &[
    Column {
        name: "vectors_sent",
        doc: "vectors the producer sent",
    },
    Column {
        name: "vectors_received",
        doc: "vectors the consumer received whole",
    },
    Column {
        name: "drops_injected",
        doc: "slots the noise filter dropped",
    },
    Column {
        name: "drops_detected",
        doc: "vectors the consumer found missing",
    },
    Column {
        name: "extrapolated",
        doc: "vectors the consumer interpolated",
    },
    Column {
        name: "rate_target_hz",
        doc: "the configured rate",
    },
    Column {
        name: "rate_achieved_hz",
        doc: "slots per second, first to last arrival",
    },
    Column {
        name: "rate_std_hz",
        doc: "std of the windowed rate",
    },
];

/// The noise filter, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Noise {
    DropInterval,
    Burst,
    None,
}

/// `vectors`' parameters, typed (keys and docs: [`PARAMS`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    size: u32,
    dtype: Dtype,
    distribution: Distribution,
    rate: f64,
    duration_s: f64,
    count: u64,
    noise: Noise,
    low_s: f64,
    high_s: f64,
    burst: u32,
    seed: u64,
    display_interval_s: f64,
}

impl Params {
    fn role_params(&self, common: &Common) -> VectorsParams {
        let (low_s, high_s) = (self.low_s, self.high_s);
        VectorsParams {
            size: self.size,
            dtype: self.dtype,
            distribution: self.distribution,
            rate: self.rate,
            duration_s: self.duration_s,
            count: self.count,
            noise: match self.noise {
                Noise::None => NoiseSpec::None,
                Noise::Burst => NoiseSpec::Burst {
                    low_s,
                    high_s,
                    len: self.burst,
                },
                Noise::DropInterval => NoiseSpec::DropInterval { low_s, high_s },
            },
            seed: self.seed,
            display_interval_s: self.display_interval_s,
            spin_pacing: common.spinning(),
            echo: false,
        }
    }
}

/// What a vectors role is to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Task {
    endpoint: Endpoint,
    producer: bool,
    params: VectorsParams,
    /// Where the consumer writes `<run_id>.batches.csv` and `<run_id>.timeline.csv`.
    out_dir: PathBuf,
}

const ABOUT: About = About {
    name: NAME,
    describe: "paced random vectors with injected drops; the consumer detects every drop exactly, interpolates it, keeps rate and batch statistics",
    roles: "one core each, in order: producer, consumer",
    params: PARAMS,
    columns: COLUMNS,
    headline: Some(("rate_achieved_hz", true)),
};

impl Workload for Vectors {
    fn about(&self) -> &'static About {
        &ABOUT
    }
    fn point(&self, values: &BTreeMap<String, Value>) -> Result<Box<dyn Point>, String> {
        Ok(Box::new(params::deserialize::<Params>(PARAMS, values)?))
    }
    fn role(&self, job: &RoleJob, stdin: &mut dyn BufRead) -> anyhow::Result<RoleReport> {
        let task: Task = job.task()?;
        run_pair(
            job,
            &Role {
                task: &task,
                run_id: &job.run_id,
            },
            stdin,
        )
    }
}

/// A vectors role; the consumer writes its batches and timeline into the task's `out_dir`.
struct Role<'a> {
    task: &'a Task,
    run_id: &'a str,
}

impl PairRole for Role<'_> {
    fn endpoint(&self) -> &Endpoint {
        &self.task.endpoint
    }
    fn listens(&self) -> bool {
        self.task.producer
    }
    fn work(&self, tx: &mut impl Tx, rx: &mut impl Rx) -> anyhow::Result<Measurement> {
        let t = self.task;
        if t.producer {
            return Ok(vectors::producer(tx, rx, &t.params)?);
        }
        let out_dir = &t.out_dir;
        std::fs::create_dir_all(out_dir)
            .with_context(|| format!("creating {}", out_dir.display()))?;
        let open = |kind: &str| -> anyhow::Result<std::io::BufWriter<std::fs::File>> {
            let path = out_dir.join(format!("{}.{kind}.csv", self.run_id));
            let f = std::fs::File::create(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            Ok(std::io::BufWriter::with_capacity(1 << 16, f))
        };
        let mut out = vectors::Outputs {
            batches: open("batches")?,
            timeline: open("timeline")?,
        };
        Ok(vectors::consumer(tx, rx, &t.params, &mut out)?)
    }
}

impl Point for Params {
    fn roles(&self) -> Roles {
        Roles::Fixed(ROLES)
    }
    fn largest_frame(&self, common: &Common) -> Option<Frame> {
        let bytes = self.role_params(common).frame_bytes() as u64;
        Some(Frame {
            bytes,
            key: "size",
            what: format!("a frame of {} elements ({bytes} bytes)", self.size),
            raises_max_frame: false,
        })
    }
    fn least_s(&self, _: &Common) -> Option<f64> {
        match (self.count, self.rate > 0.0) {
            (0, _) => Some(self.duration_s),
            (n, true) => Some(n as f64 / self.rate),
            (_, false) => None,
        }
    }
    fn validate(&self, _: &Common, _: &Machine) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.noise != Noise::None {
            if self.low_s <= 0.0 {
                out.push(Problem::new("low_s", "must be > 0 (the first vector is never dropped: it has no neighbour before it)"));
            }
            if self.high_s <= self.low_s {
                out.push(Problem::new("high_s", "must be larger than low_s"));
            }
        }
        if self.count == 0 && self.duration_s == 0.0 {
            out.push(Problem::new(
                "duration_s",
                "with count = 0 the run lasts duration_s, which must be > 0",
            ));
        }
        if self.count == 0 && self.rate > 0.0 && self.duration_s * self.rate > 1e12 {
            out.push(Problem::new(
                "duration_s",
                format!(
                    "{} s at {} vectors/s is more than 10^12 vectors",
                    self.duration_s, self.rate
                ),
            ));
        }
        out
    }
    fn quick(&mut self) {
        if self.count > 0 {
            self.count = (self.count / 10).max(100.min(self.count));
        }
    }
    fn floor_use(&self) -> FloorUse {
        FloorUse::CoreTransfers
    }
    fn floor(&self, floor: &Floor, _: &RoleReport, p50: Option<f64>) -> Option<RowFloor> {
        // One way: half the cache-line round trip.
        let one_way = floor.rtt_ns / 2.0;
        Some(RowFloor {
            ns: one_way,
            ratio: p50.map(|p| p / one_way),
            of: "half the cache-line round trip".into(),
        })
    }
    fn plan(&self, run: &RunSpec, dir: &Path, results: &Path) -> anyhow::Result<Prepared> {
        let mut params = self.role_params(&run.common);
        // Between hosts with their own clocks a one-way time means nothing: half the
        // round trip, on the producer's clock (the `how` column says so).
        params.echo =
            run.crosses_hosts() && !crate::hosts::shared_clock(&run.common.hosts, &run.hosts);
        let (plan, endpoint) = pair_plan(run, dir, NAME, ROLES, |endpoint, producer| Task {
            endpoint: endpoint.clone(),
            producer,
            params,
            out_dir: results.join("vectors"),
        })?;
        Ok(Prepared {
            plan,
            endpoints: vec![endpoint],
            after: Some(Box::new(Check {
                files: ["batches", "timeline"].map(|k| {
                    results
                        .join("vectors")
                        .join(format!("{}.{k}.csv", run.run_id))
                }),
            })),
        })
    }
}

/// The checks on both roles' figures, and the consumer's files.
struct Check {
    /// The batches and timeline CSVs the consumer writes.
    files: [PathBuf; 2],
}

impl After for Check {
    fn check(
        &mut self,
        _: &RunOutcome,
        metrics: &mut Vec<(String, f64)>,
        _: &Checking<'_>,
    ) -> Result<(), String> {
        check(metrics).map_or(Ok(()), Err)
    }
    fn discard(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// The checks on both roles' figures: every drop detected, nothing lost or added beyond
/// the injected drops. (Payload, order and interpolation are checked by the consumer, which
/// fails on the first bad frame.) `None` if the run passes.
pub fn check(metrics: &[(String, f64)]) -> Option<String> {
    let get = |k: &str| metrics.iter().find(|(m, _)| m == k).map(|(_, v)| *v);
    let (Some(sent), Some(received), Some(injected), Some(detected)) = (
        get("vectors_sent"),
        get("vectors_received"),
        get("drops_injected"),
        get("drops_detected"),
    ) else {
        return Some("check: a role did not report its counts".into());
    };
    if detected != injected {
        return Some(format!(
            "check: {detected} drops detected, {injected} injected"
        ));
    }
    if received != sent {
        return Some(format!("check: {sent} vectors sent, {received} received"));
    }
    None
}
#[cfg(test)]
mod tests {
    use super::*;

    fn m(v: &[(&str, f64)]) -> Vec<(String, f64)> {
        v.iter().map(|(k, x)| ((*k).to_string(), *x)).collect()
    }

    #[test]
    fn counts_must_agree() {
        let ok = m(&[
            ("vectors_sent", 10.0),
            ("vectors_received", 10.0),
            ("drops_injected", 2.0),
            ("drops_detected", 2.0),
        ]);
        assert_eq!(check(&ok), None);
        let missed = m(&[
            ("vectors_sent", 10.0),
            ("vectors_received", 10.0),
            ("drops_injected", 2.0),
            ("drops_detected", 3.0),
        ]);
        assert!(check(&missed)
            .unwrap()
            .contains("3 drops detected, 2 injected"));
        let lost = m(&[
            ("vectors_sent", 10.0),
            ("vectors_received", 9.0),
            ("drops_injected", 0.0),
            ("drops_detected", 0.0),
        ]);
        assert!(check(&lost)
            .unwrap()
            .contains("10 vectors sent, 9 received"));
        assert!(check(&m(&[("vectors_sent", 1.0)])).is_some());
    }
}
