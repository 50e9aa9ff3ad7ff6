//! Retakes and the stability verdict, with the host's move forced by a test hook (the
//! round trip after each run scaled), not waited for.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn a_run_taken_while_the_host_moved_is_retaken_and_its_point_marked() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("tmp")).unwrap();
    let cfg = d.path().join("s.toml");
    std::fs::write(
        &cfg,
        "[[experiment]]\nname = \"s\"\nworkload = \"latency\"\ntransport = \"uds\"\nmsg_bytes = 64\ncount = 200\nwarmup = 10\nrepetitions = 2\nretakes = 1\n",
    )
    .unwrap();
    let out = d.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .env("TMPDIR", d.path().join("tmp"))
        .env("IPCBENCH_TEST_FLOOR_SCALE", "3")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(err.matches("taken again (1 of 1)").count(), 2, "{err}");
    let results = std::fs::read_dir(&out)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut r = csv::Reader::from_path(results.join("summary.csv")).unwrap();
    let h: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let col = |n: &str| h.iter().position(|x| x == n).unwrap();
    let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    assert_eq!(rows.len(), 2, "one row per run, its last take");
    for row in &rows {
        assert_eq!(&row[col("status")], "ok");
        assert_eq!(&row[col("retakes")], "1", "{row:?}");
        assert_eq!(&row[col("host_moved")], "1", "{row:?}");
        let (b, a): (f64, f64) = (
            row[col("floor_before_ns")].parse().unwrap(),
            row[col("floor_after_ns")].parse().unwrap(),
        );
        assert!(a > 0.0 && b > 0.0);
        assert_eq!(
            &row[col("floor_of")],
            "cache-line round trip, timed singly (p50)"
        );
    }
    let mut p = csv::Reader::from_path(results.join("points.csv")).unwrap();
    let ph: Vec<String> = p.headers().unwrap().iter().map(String::from).collect();
    let points: Vec<csv::StringRecord> = p.records().map(|x| x.unwrap()).collect();
    assert_eq!(points.len(), 1);
    let stability = &points[0][ph.iter().position(|x| x == "stability").unwrap()];
    assert_eq!(stability, "host unstable (2 of 2 runs)");
    let env: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("env.json")).unwrap()).unwrap();
    let floor = &env["floors"][0];
    let range = &floor["rtt_range_ns"];
    assert!(
        range[0].as_f64().unwrap() <= range[1].as_f64().unwrap(),
        "{range}"
    );
    // The reference is the median of every sample over the matrix: five at the start,
    // then one before and one after each kept take (two runs).
    assert_eq!(floor["samples"], 9, "{floor}");
    // Every row is compared with that one floor, whatever the host did around it.
    let p50 = floor["rtt_p50_ns"].as_f64().unwrap();
    for row in &rows {
        let f: f64 = row[col("floor_ns")].parse().unwrap();
        assert!((f - p50).abs() < 0.1, "row floor {f} vs reference {p50}");
    }
    // The watch kept the start's reference beside the samples around the runs.
    let watch = &env["floor_watch"][0];
    assert_eq!(watch["samples"], 4, "{watch}");
}
