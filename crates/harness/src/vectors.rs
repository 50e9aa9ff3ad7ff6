//! The harness's side of `vectors`: parameters from a run spec, and the checks after a
//! run that decide its status.

use ipcbench_workloads::vectors::{Distribution, Dtype, NoiseSpec, VectorsParams};

use crate::config::RunSpec;

/// The vectors parameters of a run.
pub fn params(spec: &RunSpec) -> VectorsParams {
    let (low_s, high_s) = (spec.float("low_s"), spec.float("high_s"));
    VectorsParams {
        size: spec.int("size") as u32,
        dtype: if spec.text("dtype") == "f32" {
            Dtype::F32
        } else {
            Dtype::F64
        },
        distribution: if spec.text("distribution") == "uniform" {
            Distribution::Uniform
        } else {
            Distribution::Normal
        },
        rate: spec.float("rate"),
        duration_s: spec.float("duration_s"),
        count: spec.int("count") as u64,
        noise: match spec.text("noise") {
            "none" => NoiseSpec::None,
            "burst" => NoiseSpec::Burst {
                low_s,
                high_s,
                len: spec.int("burst") as u32,
            },
            _ => NoiseSpec::DropInterval { low_s, high_s },
        },
        seed: spec.int("seed") as u64,
        display_interval_s: spec.float("display_interval_s"),
        spin_pacing: spec.text("wait") == "spin",
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
