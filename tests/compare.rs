//! `harness compare` over two hand-made results directories: a point faster, one
//! slower, one unchanged (its intervals overlap), one within the threshold, one on each
//! side alone; the exit codes and the CSV.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use ipcbench_harness::points::columns;

/// Writes `dir/points.csv` with latency points: (point, p50 median, low, high).
fn points(dir: &Path, rows: &[(&str, f64, f64, f64)]) {
    std::fs::create_dir_all(dir).unwrap();
    let cols = columns();
    let mut w = csv::Writer::from_path(dir.join("points.csv")).unwrap();
    w.write_record(&cols).unwrap();
    for (id, m, lo, hi) in rows {
        let rec: Vec<String> = cols
            .iter()
            .map(|c| match c.as_str() {
                "point_id" => id.to_string(),
                "workload" => "latency".into(),
                "transport" => "uds".into(),
                "runs" | "runs_ok" => "9".into(),
                "ci_level" => "0.961".into(),
                "p50_ns" => m.to_string(),
                "p50_ns_low" => lo.to_string(),
                "p50_ns_high" => hi.to_string(),
                "stability" => "stable".into(),
                _ => String::new(),
            })
            .collect();
        w.write_record(&rec).unwrap();
    }
    w.flush().unwrap();
}

fn compare(base: &Path, new: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_harness"))
        .arg("compare")
        .arg(base)
        .arg(new)
        .args(extra)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

#[test]
fn compare_tells_faster_slower_and_noise_apart() {
    let d = tempfile::tempdir().unwrap();
    let (base, new) = (d.path().join("base"), d.path().join("new"));
    points(
        &base,
        &[
            ("faster", 100.0, 95.0, 105.0),
            ("slower", 100.0, 95.0, 105.0),
            ("noisy", 100.0, 95.0, 105.0),
            ("small", 100.0, 99.0, 101.0),
            ("gone", 100.0, 95.0, 105.0),
        ],
    );
    points(
        &new,
        &[
            ("faster", 70.0, 68.0, 72.0),
            ("slower", 130.0, 125.0, 135.0),
            ("noisy", 125.0, 90.0, 160.0),
            ("small", 103.0, 102.0, 104.0),
            ("added", 100.0, 95.0, 105.0),
        ],
    );
    let (code, out) = compare(
        &base,
        &new,
        &["--csv", d.path().join("c.csv").to_str().unwrap()],
    );
    assert_eq!(code, Some(1), "a point got slower: {out}");
    let line = |id: &str| {
        out.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or("")
            .to_string()
    };
    assert!(line("faster").ends_with("faster"), "{out}");
    assert!(line("slower").ends_with("slower"), "{out}");
    assert!(
        line("noisy").ends_with("no change"),
        "overlapping intervals: {out}"
    );
    assert!(
        line("small").ends_with("no change"),
        "within the 5% threshold: {out}"
    );
    assert!(line("gone").contains("only in base"), "{out}");
    assert!(line("added").contains("only in new"), "{out}");
    assert!(out.contains("4 points compared, 1 slower"), "{out}");
    let csv = std::fs::read_to_string(d.path().join("c.csv")).unwrap();
    assert!(
        csv.lines()
            .any(|l| l.starts_with("slower,p50_ns,100,95,105,130,125,135,30.00,slower")),
        "{csv}"
    );

    // The same build against itself: nothing slower, exit 0.
    let (code, out) = compare(&base, &base, &[]);
    assert_eq!(code, Some(0), "{out}");
    // A threshold above the change: the slower point is no change.
    let (code, out) = compare(&base, &new, &["--threshold", "40"]);
    assert_eq!(code, Some(0), "{out}");
    // Bad input: exit 2.
    let (code, out) = compare(&base, &d.path().join("nowhere"), &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("no points.csv"), "{out}");
    let (code, _) = compare(&base, &new, &["--threshold", "-3"]);
    assert_eq!(code, Some(2));
}
