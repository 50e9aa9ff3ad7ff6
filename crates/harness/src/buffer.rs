//! The harness's side of `buffer`: parameters, the pool segment, the roles of a run, and
//! the checks after it.

use std::path::Path;

use anyhow::Context;
use ipcbench_transport::pool::{Pool, PoolShape};
use ipcbench_workloads::buffer::{self, BufferParams, Dtype, Kind};

use crate::config::RunSpec;
use crate::runner::RunOutcome;

/// The buffer parameters of a run.
pub fn params(spec: &RunSpec) -> BufferParams {
    BufferParams {
        dtype: match spec.text("dtype") {
            "u16" => Dtype::U16,
            "i16" => Dtype::I16,
            "u32" => Dtype::U32,
            "f32" => Dtype::F32,
            "f64" => Dtype::F64,
            _ => Dtype::U8,
        },
        exemplars: spec.int("exemplars") as u32,
        elems: spec.int("elems") as u32,
        chunks: spec.int("chunks") as u64,
        workers: spec.int("workers") as u32,
        kind: if spec.text("kind") == "transitions" {
            Kind::Transitions
        } else {
            Kind::Sum
        },
        seed: spec.int("seed") as u64,
    }
}

/// By copy over `shm` (or a queue over it) a chunk travels as one ring record: `Err` with
/// the reason when it does not fit the run's ring (checked when the config is read, so
/// such a run is refused, not started).
pub fn frame_fits(spec: &RunSpec) -> Result<(), String> {
    if spec.flag("zero_copy") || !spec.over_shm() {
        return Ok(());
    }
    let p = params(spec);
    let (chunk, cap) = (p.chunk_bytes(), spec.int("shm_capacity") as usize);
    let most = ipcbench_transport::shm_max_frame(cap);
    if chunk > most {
        let mut fits = 64usize;
        while ipcbench_transport::shm_max_frame(fits) < chunk {
            fits *= 2;
        }
        return Err(format!(
            "a chunk of {chunk} bytes ({} x {} elements and its header) does not fit an shm ring of {cap} bytes (at most {most}): shm_capacity = {fits} carries it",
            p.exemplars, p.elems
        ));
    }
    Ok(())
}

/// Chunks in the pool: `n_chunks`, or 2 per usable core.
pub fn n_chunks(spec: &RunSpec, usable_cores: usize) -> u32 {
    match spec.int("n_chunks") {
        0 => 2 * usable_cores.max(1) as u32,
        n => n as u32,
    }
}

/// Creates the run's pool in /dev/shm (or `dir`): the chunks for the zero-copy pool, or
/// only the result region in copy mode.
pub fn create_pool(spec: &RunSpec, dir: &Path, usable_cores: usize) -> anyhow::Result<Pool> {
    let p = params(spec);
    p.check()?;
    let zero_copy = spec.flag("zero_copy");
    let shape = PoolShape {
        n_chunks: if zero_copy {
            n_chunks(spec, usable_cores)
        } else {
            1
        },
        chunk_bytes: if zero_copy { p.chunk_bytes() as u64 } else { 8 },
        result_words: u32::try_from(p.result_words()).context("result too large")?,
        workers: p.workers,
    };
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() { shm } else { dir };
    let name: String = spec
        .run_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let path = base.join(format!("ipcbench-pool-{}-{name}", std::process::id()));
    Ok(Pool::create(&path, shape)?)
}

/// The checks and columns after a run: every chunk processed once (the workers' counts
/// add up), and the merged result equal to the single-process reference. `Err`: the
/// reason the run fails.
pub fn check(
    spec: &RunSpec,
    pool: &Pool,
    outcome: &RunOutcome,
) -> Result<Vec<(String, f64)>, String> {
    let p = params(spec);
    let reports: Vec<_> = outcome.reports.iter().flatten().collect();
    let metric = |r: &crate::wire::RoleReport, k: &str| r.metric(k).unwrap_or(0.0);
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
    let reference = buffer::reference(&p).map_err(|e| format!("check: {e}"))?;
    let got = buffer::result_of(pool);
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
