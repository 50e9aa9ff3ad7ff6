//! `harness compare BASE NEW`: two results directories' points side by side. For every
//! point both have, each figure's change of median with both intervals and a verdict
//! (faster, slower, or no change beyond the noise and the threshold); points one side
//! has alone are listed. The exit code says whether any point got slower, so CI can
//! guard a figure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::exit::{write_whole, UsageError};
use crate::points::g;
use crate::points::FIGURES;
use crate::stats::{compare, Change, Interval};

/// One point as points.csv has it.
#[derive(Debug, Clone)]
struct Row {
    /// Each figure's interval, and whether more of it is better.
    figures: BTreeMap<String, (Interval, bool)>,
    /// The figure its verdict rests on.
    primary: Option<String>,
}

/// Reads `dir/points.csv`.
fn read(dir: &Path) -> anyhow::Result<BTreeMap<String, Row>> {
    let path = dir.join("points.csv");
    if !path.is_file() {
        return Err(UsageError(format!(
            "{}: no points.csv (a results directory of this version of the harness?)",
            dir.display()
        ))
        .into());
    }
    let mut r =
        csv::Reader::from_path(&path).with_context(|| format!("reading {}", path.display()))?;
    let header: Vec<String> = r
        .headers()
        .with_context(|| format!("reading {}", path.display()))?
        .iter()
        .map(String::from)
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    let id_at = col("point_id")
        .ok_or_else(|| UsageError(format!("{}: no point_id column", path.display())))?;
    let mut out = BTreeMap::new();
    for (line, rec) in r.records().enumerate() {
        let rec = rec.with_context(|| format!("{}: row {}", path.display(), line + 2))?;
        let get = |name: &str| {
            col(name)
                .and_then(|i| rec.get(i))
                .and_then(|v| v.parse::<f64>().ok())
        };
        let level = get("ci_level").unwrap_or(0.0);
        let mut figures = BTreeMap::new();
        let mut named: Vec<(String, bool)> = FIGURES
            .iter()
            .map(|f| (f.name.to_string(), f.higher_is_better))
            .collect();
        let headline = col("headline")
            .and_then(|i| rec.get(i))
            .filter(|h| !h.is_empty());
        if let Some(h) = headline {
            // The headline's direction: rates (per second) are better higher.
            named.push((h.to_string(), h.ends_with("_per_s") || h.ends_with("_hz")));
        }
        for (name, higher) in &named {
            let (m, lo, hi) = if Some(name.as_str()) == headline {
                (
                    get("headline_value"),
                    get("headline_low"),
                    get("headline_high"),
                )
            } else {
                (
                    get(name),
                    get(&format!("{name}_low")),
                    get(&format!("{name}_high")),
                )
            };
            if let (Some(median), Some(low), Some(high)) = (m, lo, hi) {
                let i = Interval {
                    median,
                    low,
                    high,
                    level,
                    n: 0,
                };
                figures.insert(name.clone(), (i, *higher));
            }
        }
        let primary = headline
            .map(String::from)
            .or_else(|| {
                ["p50_ns", "msgs_per_s"]
                    .iter()
                    .find(|n| figures.contains_key(**n))
                    .map(|n| n.to_string())
            })
            .filter(|n| figures.contains_key(n));
        out.insert(
            rec.get(id_at).unwrap_or_default().to_string(),
            Row { figures, primary },
        );
    }
    Ok(out)
}

fn verdict(c: Change, higher_is_better: bool) -> &'static str {
    match (c, higher_is_better) {
        (Change::Same, _) => "no change",
        (Change::Better, _) => "faster",
        (Change::Worse, _) => "slower",
    }
}

/// Runs the comparison; whether any point got slower.
pub fn run(
    base: &Path,
    new: &Path,
    threshold_pct: f64,
    csv: Option<&PathBuf>,
) -> anyhow::Result<bool> {
    if !threshold_pct.is_finite() || threshold_pct < 0.0 {
        return Err(UsageError(format!("--threshold {threshold_pct}: a percentage >= 0")).into());
    }
    let t = threshold_pct / 100.0;
    let (a, b) = (read(base)?, read(new)?);
    let mut text = String::new();
    let mut rows = vec![vec![
        "point_id".to_string(),
        "figure".into(),
        "base".into(),
        "base_low".into(),
        "base_high".into(),
        "new".into(),
        "new_low".into(),
        "new_high".into(),
        "change_pct".into(),
        "verdict".into(),
    ]];
    let id_w = a
        .keys()
        .chain(b.keys())
        .map(String::len)
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(
        text,
        "{:<id_w$}  {:<16} {:>30} {:>30} {:>9}  verdict",
        "point", "figure", "base median [interval]", "new median [interval]", "change"
    );
    let mut slower = 0;
    let mut compared = 0;
    for (id, ra) in &a {
        let Some(rb) = b.get(id) else { continue };
        compared += 1;
        for (name, (ia, higher)) in &ra.figures {
            let Some((ib, _)) = rb.figures.get(name) else {
                continue;
            };
            let (c, rel) = compare(ia, ib, t, *higher);
            let v = verdict(c, *higher);
            let primary = ra.primary.as_deref() == Some(name.as_str());
            if primary && c == Change::Worse {
                slower += 1;
            }
            rows.push(vec![
                id.clone(),
                name.clone(),
                format!("{}", ia.median),
                format!("{}", ia.low),
                format!("{}", ia.high),
                format!("{}", ib.median),
                format!("{}", ib.low),
                format!("{}", ib.high),
                format!("{:.2}", rel * 100.0),
                v.to_string(),
            ]);
            if primary {
                let _ = writeln!(
                    text,
                    "{id:<id_w$}  {name:<16} {:>30} {:>30} {:>+8.1}%  {v}",
                    format!("{} [{}, {}]", g(ia.median), g(ia.low), g(ia.high)),
                    format!("{} [{}, {}]", g(ib.median), g(ib.low), g(ib.high)),
                    rel * 100.0
                );
            }
        }
    }
    for (id, side) in a
        .keys()
        .filter(|k| !b.contains_key(*k))
        .map(|k| (k, "base"))
        .chain(b.keys().filter(|k| !a.contains_key(*k)).map(|k| (k, "new")))
    {
        let _ = writeln!(text, "{id:<id_w$}  only in {side}");
        rows.push(vec![
            id.clone(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            format!("only in {side}"),
        ]);
    }
    let _ = writeln!(
        text,
        "\n{compared} points compared, {slower} slower beyond {threshold_pct}% and the noise"
    );
    crate::exit::print_stdout(&text);
    if let Some(path) = csv {
        let mut w = csv::Writer::from_writer(Vec::new());
        for r in &rows {
            w.write_record(r)?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| anyhow::anyhow!("{}", e.error()))?;
        write_whole(path, &bytes)?;
    }
    Ok(slower > 0)
}
