//! The workloads, one module each, listed once in [`REGISTRY`]: `harness list`, the
//! config reader, the matrix, the report and the role processes all find them here.
//!
//! Adding a workload: its roles in `ipcbench-workloads` (written against the transport
//! traits only), a module here implementing [`Workload`] and [`Point`] (its typed keys,
//! checks, plan, floor and columns), one line in [`REGISTRY`], a config under
//! `bench-configs/` and its columns in `results/README.md`. See docs/architecture.md.
//!
//! [`Point`]: crate::spec::Point

use std::io::BufRead;
use std::path::Path;

use ipcbench_transport::dispatch::{self, WithLink, WithStream};
use ipcbench_transport::{Endpoint, Link, Rx, StreamRx, StreamTx, Transport, TransportKind, Tx};
use ipcbench_workloads::Measurement;

use crate::params::{p, ParamDef, ParamType, MSG};
use crate::runner::{RolePlan, RunPlan};
use crate::spec::{Common, Frame, Problem, RunSpec, Workload};
use crate::wire::{connected, RoleJob, RoleReport};

pub mod buffer;
pub mod latency;
pub mod pingpong;
pub mod tasks;
pub mod throughput;
pub mod vectors;

/// Every workload, in `harness list` order.
pub static REGISTRY: &[&dyn Workload] = &[
    &latency::Latency,
    &throughput::Throughput,
    &pingpong::Pingpong,
    &vectors::Vectors,
    &buffer::Buffer,
    &tasks::Tasks,
];

/// The workload named `name`.
pub fn find(name: &str) -> Option<&'static dyn Workload> {
    REGISTRY.iter().copied().find(|w| w.name() == name)
}

/// The message size of the workloads that send messages of one size.
pub const MSG_BYTES: ParamDef = p(
    "msg_bytes",
    MSG,
    None,
    "message size in bytes (>= 8: the sequence number)",
);

/// The largest frame of a workload that sends `msg_bytes`-byte messages.
pub fn message_frame(msg_bytes: u32) -> Frame {
    Frame {
        bytes: u64::from(msg_bytes),
        key: "msg_bytes",
        what: format!("a {msg_bytes}-byte message"),
        raises_max_frame: false,
    }
}

/// The bare baseline switch `latency` and `throughput` share.
pub const BARE: ParamDef = p(
    "bare",
    ParamType::Bool,
    Some("false"),
    "bare baseline: the same system calls with no framing or checks",
);

/// The checks `latency` and `throughput` share: a bare baseline needs a transport that
/// has one.
pub fn check_bare(bare: bool, common: &Common, out: &mut Vec<Problem>) {
    if bare && !dispatch::has_bare_baseline(common.transport) {
        let with: Vec<&str> = TransportKind::ALL
            .into_iter()
            .filter(|k| dispatch::has_bare_baseline(*k))
            .map(TransportKind::name)
            .collect();
        out.push(Problem::new(
            "bare",
            format!("the bare baseline exists for {} only", with.join(", ")),
        ));
    }
}

/// The endpoints a plan has prepared so far: their resources (shm segments) are removed
/// again if the plan fails before it is whole; [`Made::keep`] hands them to the run.
#[derive(Debug, Default)]
pub struct Made(Vec<Endpoint>);

impl Made {
    /// Prepares an endpoint of `kind` in `dir` and remembers it.
    pub fn prepare(
        &mut self,
        kind: TransportKind,
        dir: &Path,
        opts: &ipcbench_transport::EndpointOptions,
    ) -> anyhow::Result<Endpoint> {
        let e = Endpoint::prepare(kind, dir, opts)?;
        self.0.push(e.clone());
        Ok(e)
    }

    /// The plan is whole: the endpoints are the run's to clean up.
    pub fn keep(mut self) -> Vec<Endpoint> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        for e in &self.0 {
            e.cleanup();
        }
    }
}

/// A two-role plan over one endpoint the parent prepares: the first role listens.
/// `task` makes each role's task from the endpoint and whether it is the first.
pub fn pair_plan<T: serde::Serialize>(
    run: &RunSpec,
    dir: &Path,
    workload: &'static str,
    names: &[&str],
    task: impl Fn(&Endpoint, bool) -> T,
) -> anyhow::Result<(RunPlan, Endpoint)> {
    let mut made = Made::default();
    let endpoint = made.prepare(run.common.transport, dir, &run.endpoint_options())?;
    let roles = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            RolePlan::new(
                *name,
                run.common.cores.get(i).copied(),
                workload,
                &task(&endpoint, i == 0),
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let plan = RunPlan {
        run_id: run.run_id.clone(),
        roles,
        setup_timeout: run.setup_timeout(),
        timeout: run.timeout(),
        dir: dir.to_path_buf(),
    };
    made.keep();
    Ok((plan, endpoint))
}

/// A row's time per operation over `floor_ns` (the ratio of rows that are not timed
/// per message), from the measuring role's report.
pub fn per_op_ratio(report: &RoleReport, floor_ns: f64) -> Option<f64> {
    (report.count > 0 && floor_ns > 0.0)
        .then(|| report.duration_ns as f64 / report.count as f64 / floor_ns)
}

/// A role of a workload over one endpoint (the first role listens, the other connects):
/// what it does once connected, written once for every transport.
pub trait PairRole {
    /// The endpoint the first role listens on.
    fn endpoint(&self) -> &Endpoint;
    /// Whether this is the first (listening) role.
    fn listens(&self) -> bool;
    /// The role's work on the connected halves, after the start barrier.
    fn work(&self, tx: &mut impl Tx, rx: &mut impl Rx) -> anyhow::Result<Measurement>;
}

/// Runs a [`PairRole`] over its endpoint's transport (through the one dispatch).
pub fn run_pair<R: PairRole>(
    job: &RoleJob,
    role: &R,
    stdin: &mut dyn BufRead,
) -> anyhow::Result<RoleReport> {
    struct Visit<'a, R> {
        job: &'a RoleJob,
        role: &'a R,
        stdin: &'a mut dyn BufRead,
    }
    impl<R: PairRole> WithLink for Visit<'_, R> {
        type Output = anyhow::Result<RoleReport>;
        fn call<T: Link>(self) -> Self::Output {
            let role = self.role;
            connected::<T>(
                self.job,
                role.endpoint(),
                role.listens(),
                self.stdin,
                |tx, rx| role.work(tx, rx),
            )
        }
    }
    // Both halves stay on this thread (`work` takes them as `impl Tx`, `impl Rx`): a
    // library is used as a single-threaded application would (iceoryx2's local service).
    dispatch::dispatch_link(role.endpoint(), Visit { job, role, stdin })?
}

/// A [`PairRole`]'s bare baseline: the same exchange as the stream's plain system calls.
pub trait BareRole: PairRole {
    /// The bare work on the stream's halves, after the start barrier.
    fn bare(&self, tx: &StreamTx, rx: &StreamRx) -> anyhow::Result<Measurement>;
}

/// Runs a [`BareRole`] over its endpoint's stream transport (through the one dispatch).
pub fn run_bare<R: BareRole>(
    job: &RoleJob,
    role: &R,
    stdin: &mut dyn BufRead,
) -> anyhow::Result<RoleReport> {
    struct Visit<'a, R> {
        job: &'a RoleJob,
        role: &'a R,
        stdin: &'a mut dyn BufRead,
    }
    impl<R: BareRole> WithStream for Visit<'_, R> {
        type Output = anyhow::Result<RoleReport>;
        fn call<T: Transport<Tx = StreamTx, Rx = StreamRx>>(self) -> Self::Output {
            let role = self.role;
            connected::<T>(
                self.job,
                role.endpoint(),
                role.listens(),
                self.stdin,
                |tx, rx| role.bare(tx, rx),
            )
        }
    }
    dispatch::dispatch_bare(role.endpoint().kind(), Visit { job, role, stdin })?
}

/// The workloads' names, for messages.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|w| w.name()).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::params::{ParamDef, ParamType, Value};
    use crate::spec::{Common, COMMON};

    type Parse = dyn Fn(&BTreeMap<String, Value>) -> Result<(), String>;

    /// A value every key of `defs` takes: its default, or for a required key a value of
    /// its type.
    fn sample(defs: &[ParamDef]) -> BTreeMap<String, Value> {
        defs.iter()
            .map(|d| {
                let v = match d.default_value() {
                    Some(v) => v[0].clone(),
                    None => match d.ty {
                        ParamType::Int { min, .. } => Value::Int(min.max(64)),
                        ParamType::Float { min, .. } => Value::Float(min),
                        ParamType::Bool => Value::Bool(false),
                        ParamType::Name => Value::Str("x".into()),
                        ParamType::Path => Value::Str(String::new()),
                        ParamType::Choice(c) => Value::Str(c[0].into()),
                        ParamType::Cores => Value::Cores(vec![0, 1]),
                        ParamType::Hosts => Value::Names(vec!["local".into()]),
                        ParamType::Link => Value::Str(String::new()),
                        ParamType::Transport => Value::Str("uds".into()),
                        ParamType::QueueOver => Value::Str("uds".into()),
                    },
                };
                (d.key.to_string(), v)
            })
            .collect()
    }

    /// Each table and its struct hold the same keys: every key of the table is a field
    /// (the structs deny unknown fields) and every field a key (none has a serde default,
    /// so a field the table lacks is a missing field). Every choice a table offers
    /// deserialises too.
    #[test]
    fn every_table_matches_its_struct() {
        let check = |name: &str, defs: &[ParamDef], parse: &Parse| {
            let base = sample(defs);
            parse(&base).unwrap_or_else(|e| panic!("{name}: {e}"));
            for d in defs {
                if let ParamType::Choice(choices) = d.ty {
                    for c in choices {
                        let mut v = base.clone();
                        v.insert(d.key.into(), Value::Str((*c).into()));
                        parse(&v).unwrap_or_else(|e| panic!("{name}: {} = {c}: {e}", d.key));
                    }
                }
                let mut v = base.clone();
                v.remove(d.key);
                assert!(
                    parse(&v).is_err(),
                    "{name}: `{}` is in the table but not a field of the struct",
                    d.key
                );
            }
        };
        check("common", COMMON, &|v| {
            crate::params::deserialize::<Common>(COMMON, v).map(|_| ())
        });
        for w in REGISTRY {
            check(w.name(), w.params(), &|v| w.point(v).map(|_| ()));
        }
    }

    /// No key is declared twice, and no workload key shadows a common one.
    #[test]
    fn keys_are_unique() {
        for w in REGISTRY {
            let mut keys: Vec<&str> = COMMON.iter().chain(w.params()).map(|d| d.key).collect();
            let n = keys.len();
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(keys.len(), n, "{}: a key is declared twice", w.name());
        }
    }

    /// docs/parameters.md is what `harness list --markdown` prints.
    #[test]
    fn parameters_doc_is_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/parameters.md");
        let doc = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            doc == crate::cli::parameters_markdown(),
            "docs/parameters.md differs from the code's tables: run \
             `cargo run --release --bin harness -- list --markdown > docs/parameters.md`"
        );
    }

    /// Every column summary.csv and points.csv can have is documented in
    /// results/README.md.
    #[test]
    fn every_column_is_documented() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../results/README.md");
        let doc = std::fs::read_to_string(path).unwrap_or_default();
        let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with('|')).collect();
        let names = crate::report::FIXED_COLUMNS
            .iter()
            .copied()
            .chain(
                REGISTRY
                    .iter()
                    .flat_map(|w| w.columns().iter().map(|c| c.name)),
            )
            .chain(crate::report::CPU_COLUMNS.iter().map(|c| c.name))
            .chain(crate::report::WATCH_COLUMNS.iter().map(|c| c.name));
        for name in names {
            let quoted = format!("`{name}`");
            assert!(
                rows.iter().any(|r| r.contains(&quoted)),
                "column {name} is not documented in a table of results/README.md"
            );
        }
    }
}
