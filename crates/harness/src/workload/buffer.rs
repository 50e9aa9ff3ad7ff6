//! `buffer`: an acquirer fills chunks that workers process (per-column sums, or 512x512
//! code transitions) and merge into a shared result; over the zero-copy pool (shm), or
//! with the chunks sent by copy over any transport. The merged result is checked word for
//! word against one process's.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use ipcbench_transport::dispatch::{self, WithTransport};
use ipcbench_transport::pool::{Pool, PoolRole, PoolShape};
use ipcbench_transport::{Endpoint, Transport, TransportKind};
use ipcbench_workloads::buffer::{self, BufferParams, Dtype, Kind};
use serde::{Deserialize, Serialize};

use crate::floor::Floor;
use crate::params::{self, p, ParamDef, ParamType, Value, SEED};
use crate::runner::{RolePlan, RunOutcome, RunPlan};
use crate::spec::{
    About, After, Checking, Column, Common, FloorUse, Frame, Machine, Point, Prepared, Problem,
    Roles, RowFloor, RunSpec, Workload,
};
use crate::wire::{emit, emit_ready, wait_for_go, RoleEvent, RoleJob, RoleReport};

/// The registry's entry.
#[derive(Debug)]
pub struct Buffer;

const NAME: &str = "buffer";

/// The largest chunk (its data) a config may ask for: 256 MiB.
const MAX_CHUNK_BYTES: u64 = 256 << 20;
/// The most memory the pool's chunks may take: 4 GiB.
const MAX_POOL_BYTES: u64 = 4 << 30;

const PARAMS: &[ParamDef] = &[
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
        ParamType::Int { min: 0, max: 4096 },
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
    p("seed", SEED, Some("1"), "seed of the data"),
];

const COLUMNS: &[Column] = &[
    Column {
        name: "chunks",
        doc: "chunks produced",
    },
    Column {
        name: "chunk_bytes",
        doc: "data bytes per chunk",
    },
    Column {
        name: "workers",
        doc: "worker processes",
    },
    Column {
        name: "gb_per_s",
        doc: "data bytes per second, 10^9",
    },
    Column {
        name: "chunks_per_s",
        doc: "chunks per second",
    },
    Column {
        name: "free_wait_ns",
        doc: "the acquirer's wait for free chunks",
    },
    Column {
        name: "fill_ns",
        doc: "the acquirer's time filling chunks",
    },
    Column {
        name: "send_ns",
        doc: "the acquirer's time in the transport's send",
    },
    Column {
        name: "ready_wait_ns",
        doc: "the workers' wait for chunks",
    },
];

/// `buffer`'s parameters, typed (keys and docs: [`PARAMS`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    dtype: Dtype,
    exemplars: u32,
    elems: u32,
    n_chunks: u32,
    chunks: u64,
    workers: u32,
    kind: Kind,
    zero_copy: bool,
    seed: u64,
}

impl Params {
    fn role_params(&self) -> BufferParams {
        BufferParams {
            dtype: self.dtype,
            exemplars: self.exemplars,
            elems: self.elems,
            chunks: self.chunks,
            workers: self.workers,
            kind: self.kind,
            seed: self.seed,
        }
    }

    /// Chunks in the pool: `n_chunks`, or 2 per usable core.
    fn pool_chunks(&self, usable_cores: usize) -> u32 {
        match self.n_chunks {
            0 => 2 * usable_cores.max(1) as u32,
            n => n,
        }
    }
}

/// What a buffer role is to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Task {
    /// Copy mode: the endpoints, one per worker (the acquirer listens on all; worker `w`
    /// connects to what the acquirer resolved for it); empty for the zero-copy pool.
    endpoints: Vec<Endpoint>,
    /// `None` for the acquirer, `Some(w)` for worker `w`.
    worker: Option<u32>,
    /// The pool segment the parent created (the chunks, or only the result in copy mode).
    pool: PathBuf,
    params: BufferParams,
    /// Bound on every wait, from the start barrier.
    timeout_ms: u64,
}

const ABOUT: About = About {
    name: NAME,
    describe: "an acquirer fills chunks, workers process them (sum or transitions) and merge into a shared result; zero-copy pool or copy over a transport; result checked exactly",
    roles: "acquirer, then `workers` workers; they take the `cores` in turn",
    params: PARAMS,
    columns: COLUMNS,
    headline: Some(("gb_per_s", true)),
};

impl Workload for Buffer {
    fn about(&self) -> &'static About {
        &ABOUT
    }
    fn point(&self, values: &BTreeMap<String, Value>) -> Result<Box<dyn Point>, String> {
        Ok(Box::new(params::deserialize::<Params>(PARAMS, values)?))
    }
    fn role(&self, job: &RoleJob, stdin: &mut dyn BufRead) -> anyhow::Result<RoleReport> {
        let task: Task = job.task()?;
        let pool = Pool::open(&task.pool)?;
        let bound = Duration::from_millis(task.timeout_ms);
        let Some(own) = task.endpoints.first() else {
            return pool_role(&pool, &task, bound, stdin);
        };
        // A worker connects to what the acquirer resolved for it.
        let endpoints = match task.worker {
            Some(w) => vec![job.resolved.get(w as usize).unwrap_or(own).clone()],
            None => task.endpoints.clone(),
        };
        dispatch::dispatch(
            own,
            CopyRole {
                pool: &pool,
                endpoints: &endpoints,
                task: &task,
                setup: job.setup_timeout(),
                bound,
                stdin,
            },
        )?
    }
}

/// A buffer role over the zero-copy pool.
fn pool_role(
    pool: &Pool,
    task: &Task,
    bound: Duration,
    stdin: &mut dyn BufRead,
) -> anyhow::Result<RoleReport> {
    pool.register(task.worker.map_or(PoolRole::Acquirer, PoolRole::Worker))?;
    // The acquirer draws its blocks before it says it is ready: setup, off the clock.
    let source = task
        .worker
        .is_none()
        .then(|| buffer::Acquisition::new(&task.params))
        .transpose()?;
    emit_ready()?;
    emit(&RoleEvent::Connected)?;
    wait_for_go(stdin)?;
    let deadline = Instant::now() + bound;
    let m = match &source {
        Some(source) => buffer::acquirer(pool, source, deadline)?,
        None => buffer::worker(pool, &task.params, deadline)?,
    };
    RoleReport::from_measurement(&m)
}

/// A buffer role in copy mode: the acquirer listens on one endpoint per worker and sends
/// chunks over them; a worker connects to its own. The pool holds only the result.
struct CopyRole<'a> {
    pool: &'a Pool,
    endpoints: &'a [Endpoint],
    task: &'a Task,
    setup: Duration,
    bound: Duration,
    stdin: &'a mut dyn BufRead,
}

impl WithTransport for CopyRole<'_> {
    type Output = anyhow::Result<RoleReport>;
    fn call<T: Transport>(self) -> Self::Output {
        let (pool, params) = (self.pool, &self.task.params);
        pool.register(
            self.task
                .worker
                .map_or(PoolRole::Acquirer, PoolRole::Worker),
        )?;
        let m = match self.task.worker {
            None => {
                // Drawn before ready, as in the pool role: setup, off the clock.
                let source = buffer::Acquisition::new(params)?;
                let listeners = self
                    .endpoints
                    .iter()
                    .map(T::listen)
                    .collect::<Result<Vec<_>, _>>()?;
                let mut resolved = listeners.iter().map(T::resolved);
                emit(&RoleEvent::Ready {
                    endpoint: resolved.next(),
                    more: resolved.collect(),
                })?;
                let mut txs = Vec::with_capacity(listeners.len());
                for l in listeners {
                    txs.push(T::accept(l, self.setup)?.0);
                }
                emit(&RoleEvent::Connected)?;
                wait_for_go(self.stdin)?;
                buffer::copy_acquirer(&mut txs, &source)?
            }
            Some(w) => {
                let ep = self
                    .endpoints
                    .first()
                    .ok_or_else(|| anyhow!("worker {w} has no endpoint"))?;
                emit_ready()?;
                let (_tx, mut rx) = T::connect(ep, self.setup)?;
                emit(&RoleEvent::Connected)?;
                wait_for_go(self.stdin)?;
                buffer::copy_worker(&mut rx, pool, params, Instant::now() + self.bound)?
            }
        };
        RoleReport::from_measurement(&m)
    }
}

impl Point for Params {
    fn roles(&self) -> Roles {
        Roles::Spread {
            count: 1 + self.workers.max(1) as usize,
        }
    }
    fn largest_frame(&self, _: &Common) -> Option<Frame> {
        // The pool moves indices; by copy a chunk travels as one frame.
        if self.zero_copy {
            return None;
        }
        let p = self.role_params();
        Some(Frame {
            bytes: p.chunk_bytes() as u64,
            key: "shm_capacity",
            what: format!(
                "a chunk of {} bytes ({} x {} elements and its header)",
                p.chunk_bytes(),
                p.exemplars,
                p.elems
            ),
            raises_max_frame: true,
        })
    }
    fn spins(&self, common: &Common) -> bool {
        // Copy mode over shm spins in the transport; the pool's waits are its own.
        !self.zero_copy && common.spinning()
    }
    fn validate(&self, common: &Common, machine: &Machine) -> Vec<Problem> {
        let mut out = Vec::new();
        let p = self.role_params();
        if let Err(e) = p.check() {
            out.push(Problem::new("kind", e.to_string()));
        }
        let data = p.data_bytes() as u64;
        if data > MAX_CHUNK_BYTES {
            out.push(Problem::new(
                "exemplars",
                format!(
                    "a chunk of {} x {} elements is {data} bytes: at most {MAX_CHUNK_BYTES} (256 MiB)",
                    p.exemplars, p.elems
                ),
            ));
        } else if self.zero_copy {
            let pool =
                u64::from(self.pool_chunks(machine.usable_cores.len())) * p.chunk_bytes() as u64;
            if pool > MAX_POOL_BYTES {
                out.push(Problem::new(
                    "n_chunks",
                    format!("a pool of {pool} bytes: at most {MAX_POOL_BYTES} (4 GiB); fewer or smaller chunks"),
                ));
            }
        }
        if self.zero_copy && common.transport != TransportKind::Shm {
            out.push(Problem::new(
                "zero_copy",
                "zero_copy = true (buffer's default: the shared chunk pool) needs transport = \"shm\"; \
                 set zero_copy = false to send the chunks by copy over this transport",
            ));
        }
        out
    }
    fn quick(&mut self) {}
    fn zero_copy(&self) -> bool {
        self.zero_copy
    }
    fn floor_use(&self) -> FloorUse {
        FloorUse::Memcpy
    }
    fn floor(&self, floor: &Floor, report: &RoleReport, _: Option<f64>) -> Option<RowFloor> {
        // One cache-resident copy of a chunk's data: the least filling it (pool) or
        // sending it (copy) costs.
        let bytes = self.role_params().data_bytes() as u64;
        let per_chunk = floor.copy_floor_ns(bytes);
        Some(RowFloor {
            ns: per_chunk,
            ratio: super::per_op_ratio(report, per_chunk),
            of: format!("cache-resident copy of a chunk ({bytes} B)"),
        })
    }
    fn plan(&self, run: &RunSpec, dir: &Path, _results: &Path) -> anyhow::Result<Prepared> {
        let p = self.role_params();
        let mut opts = run.endpoint_options();
        if !self.zero_copy {
            // Frames are whole chunks.
            opts.max_frame = opts.max_frame.max(p.chunk_bytes() as u32);
        }
        let pool = self.create_pool()?;
        let mut made = super::Made::default();
        let endpoints = if self.zero_copy {
            Vec::new()
        } else {
            (0..p.workers)
                .map(|w| {
                    let sub = dir.join(format!("w{w}"));
                    crate::runner::private_dir(&sub)?;
                    made.prepare(run.common.transport, &sub, &opts)
                })
                .collect::<anyhow::Result<Vec<_>>>()?
        };
        let cores = run.role_cores();
        let roles = std::iter::once(("acquirer".to_string(), None))
            .chain((0..p.workers).map(|w| (format!("worker{w}"), Some(w))))
            .enumerate()
            .map(|(i, (name, worker))| {
                let task = Task {
                    endpoints: endpoints.clone(),
                    worker,
                    pool: pool.path().to_path_buf(),
                    params: p,
                    timeout_ms: run.timeout().as_millis() as u64,
                };
                RolePlan::new(name, cores.get(i).copied(), NAME, &task)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Whole: the endpoints are the run's now.
        made.keep();
        Ok(Prepared {
            plan: RunPlan {
                run_id: run.run_id.clone(),
                roles,
                setup_timeout: run.setup_timeout(),
                timeout: run.timeout(),
                dir: dir.to_path_buf(),
            },
            endpoints,
            after: Some(Box::new(Merged { pool, params: p })),
        })
    }
}

impl Params {
    /// Creates the run's pool in /dev/shm: the chunks for the zero-copy pool, or only the
    /// result region in copy mode.
    fn create_pool(&self) -> anyhow::Result<Pool> {
        let p = self.role_params();
        p.check()?;
        let usable = core_affinity::get_core_ids().map_or(1, |c| c.len());
        let shape = PoolShape {
            n_chunks: if self.zero_copy {
                self.pool_chunks(usable)
            } else {
                1
            },
            chunk_bytes: if self.zero_copy {
                p.chunk_bytes() as u64
            } else {
                8
            },
            result_words: u32::try_from(p.result_words()).context("result too large")?,
            workers: p.workers,
        };
        let path =
            ipcbench_transport::names::shm_dir().join(ipcbench_transport::names::unique("pool"));
        Ok(Pool::create(&path, shape)?)
    }
}

/// The pool after a run, checked and removed when dropped.
struct Merged {
    pool: Pool,
    params: BufferParams,
}

impl After for Merged {
    fn check(
        &mut self,
        outcome: &RunOutcome,
        metrics: &mut Vec<(String, f64)>,
        _: &Checking<'_>,
    ) -> Result<(), String> {
        metrics.extend(check(&self.params, &self.pool, outcome)?);
        Ok(())
    }
}

/// The checks and columns after a run: every chunk processed once (the workers' counts
/// add up), and the merged result equal to the single-process reference. `Err`: the
/// reason the run fails.
fn check(
    p: &BufferParams,
    pool: &Pool,
    outcome: &RunOutcome,
) -> Result<Vec<(String, f64)>, String> {
    let reports: Vec<_> = outcome.reports.iter().flatten().collect();
    let metric = |r: &RoleReport, k: &str| r.metric(k).unwrap_or(0.0);
    let processed: f64 = reports
        .iter()
        .skip(1)
        .map(|r| metric(r, "worker_chunks"))
        .sum();
    if processed != p.chunks as f64 {
        return Err(format!(
            "check: {processed} chunks processed, {} produced",
            p.chunks
        ));
    }
    let reference = buffer::reference(p).map_err(|e| format!("check: {e}"))?;
    // Read through the file: the harness never touches a mapping a peer could shrink.
    let got = pool
        .read_result()
        .map_err(|e| format!("check: reading the merged result: {e}"))?;
    if got != reference {
        let first = got
            .iter()
            .zip(&reference)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(format!(
            "check: the merged result differs from the single-process reference (first at word {first}: {} vs {})",
            got.get(first).copied().unwrap_or(0),
            reference.get(first).copied().unwrap_or(0)
        ));
    }
    let secs = reports
        .iter()
        .map(|r| r.duration_ns as f64 / 1e9)
        .fold(0.0, f64::max);
    let bytes = p.chunks as f64 * p.data_bytes() as f64;
    let mut m = vec![
        ("chunks".to_string(), p.chunks as f64),
        ("chunk_bytes".to_string(), p.data_bytes() as f64),
        ("workers".to_string(), f64::from(p.workers)),
    ];
    // The acquirer's (the first report's) own times.
    for k in ["free_wait_ns", "fill_ns", "send_ns"] {
        m.push((k.to_string(), reports.first().map_or(0.0, |r| metric(r, k))));
    }
    m.push((
        "ready_wait_ns".to_string(),
        reports
            .iter()
            .skip(1)
            .map(|r| metric(r, "ready_wait_ns"))
            .sum(),
    ));
    if secs > 0.0 {
        m.push(("gb_per_s".into(), bytes / secs / 1e9));
        m.push(("chunks_per_s".into(), p.chunks as f64 / secs));
    }
    Ok(m)
}
