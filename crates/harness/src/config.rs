//! Experiment configs: TOML with an optional `[defaults]` table and `[[experiment]]`
//! tables. A list-valued key is a sweep, so one file expands into a matrix of runs
//! (experiment × transport × cores × msg_bytes × other swept keys × repetition).
//!
//! This is the only place a parameter is looked up by its key: each key is checked
//! against its [`ParamDef`] (type, bounds), the matrix is expanded and capped, and each
//! point becomes typed ([`Common`] and the workload's [`Point`]) and is checked whole
//! (every value that can occur, every combination a workload cannot run, every frame
//! against its ring, every paced run against its timeout). Every problem is reported with
//! file, line and key, all of them at once, before anything runs or is written. A key in
//! `[defaults]` that some other workload uses is ignored by experiments it does not apply
//! to; a key no workload knows is an error.
//!
//! [`Point`]: crate::spec::Point

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ipcbench_transport::TransportKind;
use serde::Deserialize;
use toml::Spanned;

use crate::params::{self, candidates, Value};
use crate::spec::{Common, Machine, Problem, Roles, RunSpec, Workload, COMMON};
use crate::workload;

/// The most runs one config may expand into.
pub const MAX_RUNS: u64 = 10_000;
/// The longest run id (it names files in the results directory).
pub const MAX_RUN_ID: usize = 160;
/// The largest config file read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A problem in a config, with where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The file (as given).
    pub file: String,
    /// 1-based line; 0 when the problem is the file as a whole.
    pub line: usize,
    /// The key concerned, if one is.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: ", self.file, self.line)?;
        } else {
            write!(f, "{}: ", self.file)?;
        }
        if let Some(k) = &self.key {
            write!(f, "key `{k}`: ")?;
        }
        f.write_str(&self.message)
    }
}

type RawTable = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

/// Each key's values (more than one: a sweep) and its line.
type Axes = BTreeMap<String, (Vec<Value>, usize)>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    defaults: Option<RawTable>,
    #[serde(default)]
    hosts: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    #[serde(default)]
    experiment: Vec<Spanned<RawTable>>,
}

struct Entry {
    value: toml::Value,
    line: usize,
    from_defaults: bool,
}

struct Errors<'a> {
    file: &'a str,
    list: Vec<ConfigError>,
}

impl Errors<'_> {
    fn push(&mut self, line: usize, key: Option<&str>, message: impl Into<String>) {
        let e = ConfigError {
            file: self.file.to_string(),
            line,
            key: key.map(str::to_string),
            message: message.into(),
        };
        // At most 100 problems: a config that repeats one mistake in every point gets one
        // line for it (duplicates are dropped), and a hostile one cannot fill the screen.
        if !self.list.contains(&e) && self.list.len() < 100 {
            self.list.push(e);
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Whether any workload (or the common keys) knows `key`.
pub fn known_anywhere(key: &str) -> bool {
    COMMON.iter().any(|d| d.key == key)
        || workload::REGISTRY
            .iter()
            .any(|w| w.params().iter().any(|d| d.key == key))
}

/// The order in which swept keys vary (earlier keys vary slowest).
fn sweep_rank(key: &str) -> (usize, &str) {
    let rank = ["transport", "wait", "cores", "msg_bytes"]
        .iter()
        .position(|k| *k == key)
        .unwrap_or(9);
    (rank, key)
}

/// Parses a config's text. `file` is used in messages; `usable_cores` are the core ids
/// this process may run on.
pub fn parse(
    file: &str,
    text: &str,
    usable_cores: &[usize],
) -> Result<Vec<RunSpec>, Vec<ConfigError>> {
    let mut errs = Errors {
        file,
        list: Vec::new(),
    };
    let machine = Machine {
        usable_cores: usable_cores.to_vec(),
    };
    let raw: RawConfig = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            errs.push(line, None, e.message().trim().to_string());
            return Err(errs.list);
        }
    };
    // The hosts, each table checked whole.
    let mut hosts = crate::hosts::Hosts::new();
    for (name, table) in &raw.hosts {
        let line = line_of(text, name.span().start);
        let key = format!("hosts.{}", name.get_ref());
        match crate::hosts::Host::deserialize(table.get_ref().clone()) {
            Ok(h) => {
                for why in crate::hosts::check(name.get_ref(), &h) {
                    errs.push(line, Some(&key), why);
                }
                hosts.insert(name.get_ref().clone(), h);
            }
            Err(e) => errs.push(line, Some(&key), e.to_string().trim().to_string()),
        }
    }
    let hosts = std::sync::Arc::new(hosts);
    if raw.experiment.is_empty() {
        errs.push(0, None, "no [[experiment]] table: nothing to run");
        return Err(errs.list);
    }
    let defaults: Vec<(String, Entry)> = raw
        .defaults
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let line = line_of(text, k.span().start);
            (
                k.into_inner(),
                Entry {
                    value: v.into_inner(),
                    line,
                    from_defaults: true,
                },
            )
        })
        .collect();
    for (key, e) in &defaults {
        if !known_anywhere(key) {
            errs.push(e.line, Some(key), "unknown key (see `harness list`)");
        }
        if key == "name" || key == "workload" {
            errs.push(
                e.line,
                Some(key),
                "belongs in each [[experiment]], not in [defaults]",
            );
        }
    }

    // Each experiment's checked axes, before anything is expanded.
    let mut experiments = Vec::new();
    let mut names = BTreeSet::new();
    let mut total: u64 = 0;
    for exp in raw.experiment {
        let exp_line = line_of(text, exp.span().start);
        let mut merged: BTreeMap<String, Entry> = BTreeMap::new();
        for (k, e) in &defaults {
            merged.insert(
                k.clone(),
                Entry {
                    value: e.value.clone(),
                    line: e.line,
                    from_defaults: true,
                },
            );
        }
        for (k, v) in exp.into_inner() {
            let line = line_of(text, k.span().start);
            merged.insert(
                k.into_inner(),
                Entry {
                    value: v.into_inner(),
                    line,
                    from_defaults: false,
                },
            );
        }
        let Some(workload) = experiment_workload(&merged, exp_line, &mut errs) else {
            continue;
        };
        let (axes, checkable) = axes_of(workload, &merged, exp_line, usable_cores, &mut errs);
        let Some(name) = axes
            .get("name")
            .and_then(|(v, _)| v.first())
            .map(|v| v.to_string())
        else {
            continue;
        };
        if !names.insert(name.clone()) {
            let line = axes.get("name").map(|a| a.1).unwrap_or(exp_line);
            errs.push(
                line,
                Some("name"),
                format!("experiment name `{name}` is used twice"),
            );
        }
        // The matrix is counted before it is made: a sweep of millions is refused, not
        // expanded until memory runs out.
        let runs = axes
            .values()
            .fold(1u64, |n, (v, _)| n.saturating_mul(v.len() as u64));
        let reps = match axes.get("repetitions").and_then(|(v, _)| v.first()) {
            Some(Value::Int(r)) => *r as u64,
            _ => 1,
        };
        let runs = runs.saturating_mul(reps);
        total = total.saturating_add(runs);
        if runs > MAX_RUNS {
            errs.push(
                exp_line,
                None,
                format!(
                    "experiment `{name}` expands into {runs} runs: at most {MAX_RUNS} per config (sweep fewer values)"
                ),
            );
            continue;
        }
        if checkable {
            experiments.push((name, workload, axes, exp_line));
        }
    }
    if total > MAX_RUNS {
        errs.push(
            0,
            None,
            format!("the experiments expand into {total} runs: at most {MAX_RUNS} per config"),
        );
        return Err(errs.list);
    }

    let mut runs = Vec::new();
    for (name, workload, axes, exp_line) in experiments {
        let line_of_key = |key: &str| axes.get(key).map_or(exp_line, |(_, l)| *l);
        for run in expand(&name, workload, &axes) {
            let run = match run {
                Ok(mut r) => {
                    r.run_id = format!("{:03}-{}-r{}", runs.len(), r.run_id, r.rep);
                    r
                }
                Err(m) => {
                    // A workload's table and struct disagree: a bug, reported like a problem.
                    errs.push(exp_line, None, format!("internal: {m}"));
                    continue;
                }
            };
            let mut run = run;
            run.hosts = hosts.clone();
            let mut problems = check_common(&run, &machine);
            problems.extend(check_hosts(&run));
            problems.extend(run.point.validate(&run.common, &machine));
            for p in problems {
                errs.push(line_of_key(p.key), Some(p.key), p.message);
            }
            runs.push(run);
        }
    }
    if errs.list.is_empty() {
        Ok(runs)
    } else {
        Err(errs.list)
    }
}

/// An experiment's axes: each key's checked values (a list for a sweep) and its line,
/// the defaults filled in. Every problem goes to `errs`; a bad value stands in for by its
/// default so the checks across keys still run, and the flag says whether the experiment
/// can be checked point by point at all (not when a required key is bad or missing).
fn axes_of(
    workload: &'static dyn Workload,
    merged: &BTreeMap<String, Entry>,
    exp_line: usize,
    usable_cores: &[usize],
    errs: &mut Errors<'_>,
) -> (Axes, bool) {
    let defs = || COMMON.iter().chain(workload.params());
    let mut axes: Axes = BTreeMap::new();
    // Whether the experiment can still be checked point by point: a bad value is
    // reported and stands in for by its default, so the checks across keys still
    // run; without a default (or a name) there is nothing to check.
    let mut checkable = true;
    for (key, entry) in merged {
        match defs().find(|d| d.key == key) {
            Some(def) => match candidates(def, &entry.value) {
                Ok(vals) => {
                    axes.insert(key.clone(), (vals, entry.line));
                }
                Err(m) => {
                    errs.push(entry.line, Some(key), m);
                    match def.default_value() {
                        Some(vals) => {
                            axes.insert(key.clone(), (vals, entry.line));
                        }
                        None => checkable = false,
                    }
                }
            },
            None if entry.from_defaults => {}
            None => {
                let mut known: Vec<&str> = defs().map(|d| d.key).collect();
                known.sort_unstable();
                errs.push(
                    entry.line,
                    Some(key),
                    format!(
                        "unknown key for workload `{}` (known: {})",
                        workload.name(),
                        known.join(", ")
                    ),
                );
            }
        }
    }
    for def in defs() {
        if axes.contains_key(def.key) || merged.contains_key(def.key) {
            continue;
        }
        match def.default_value() {
            Some(vals) => {
                axes.insert(def.key.to_string(), (vals, exp_line));
            }
            None => {
                errs.push(
                    exp_line,
                    Some(def.key),
                    format!("missing required key for workload `{}`", workload.name()),
                );
                checkable = false;
            }
        }
    }
    // Cores are checked here too, so a config with other problems still hears of them.
    if let Some((placements, line)) = axes.get("cores") {
        for c in placements {
            let Value::Cores(c) = c else { continue };
            for id in c {
                if !usable_cores.contains(id) {
                    errs.push(
                        *line,
                        Some("cores"),
                        format!(
                            "core {id} is not usable on this machine (usable: {usable_cores:?})"
                        ),
                    );
                }
            }
        }
    }
    (axes, checkable)
}

/// The experiment's workload, from the registry; `None` (with the problem reported) when
/// it is missing or unknown.
fn experiment_workload(
    merged: &BTreeMap<String, Entry>,
    exp_line: usize,
    errs: &mut Errors<'_>,
) -> Option<&'static dyn Workload> {
    let Some(e) = merged.get("workload") else {
        errs.push(
            exp_line,
            Some("workload"),
            "missing required key in [[experiment]]",
        );
        return None;
    };
    let def = COMMON.iter().find(|d| d.key == "workload")?;
    match candidates(def, &e.value) {
        Ok(v) => {
            let name = v.first().map(|v| v.to_string()).unwrap_or_default();
            let found = workload::find(&name);
            if found.is_none() {
                errs.push(
                    e.line,
                    Some("workload"),
                    format!(
                        "unknown workload `{}` (known: {})",
                        params::shorten(&name),
                        workload::names().join(", ")
                    ),
                );
            }
            found
        }
        Err(m) => {
            let m = if matches!(&e.value, toml::Value::String(_)) {
                format!("unknown workload (known: {})", workload::names().join(", "))
            } else {
                m
            };
            errs.push(e.line, Some("workload"), m);
            None
        }
    }
}

/// Whether `run` matches `--filter key=value` (string comparison of the value).
pub fn matches(run: &RunSpec, key: &str, value: &str) -> bool {
    match key {
        "rep" => run.rep.to_string() == value,
        "run_id" => run.run_id == value,
        "experiment" | "name" => run.common.name == value,
        _ => run.labels.get(key).is_some_and(|v| v.to_string() == value),
    }
}

/// The checks every point gets, whatever its workload: its cores, its frames against the
/// transport's maximum and the shm ring, spinning roles on shared cores, a run that
/// cannot finish inside its timeout, a run id too long for a file name.
fn check_common(run: &RunSpec, machine: &Machine) -> Vec<Problem> {
    let (c, point) = (&run.common, &run.point);
    let mut out = Vec::new();
    if let Roles::Fixed(roles) = point.roles() {
        if c.cores.len() != roles.len() {
            out.push(Problem::new(
                "cores",
                format!(
                    "{} cores given, workload `{}` has {} roles ({}): one core per role",
                    c.cores.len(),
                    run.workload.name(),
                    roles.len(),
                    roles.join(", ")
                ),
            ));
        }
    }
    for id in &c.cores {
        if !machine.usable_cores.contains(id) {
            out.push(Problem::new(
                "cores",
                format!(
                    "core {id} is not usable on this machine (usable: {:?})",
                    machine.usable_cores
                ),
            ));
        }
    }
    if c.over_shm() && !c.shm_capacity.is_power_of_two() {
        out.push(Problem::new(
            "shm_capacity",
            format!("{} is not a power of two", c.shm_capacity),
        ));
    }
    if let Some(f) = point.largest_frame(c) {
        if !f.raises_max_frame && f.bytes > u64::from(c.max_frame) {
            out.push(Problem::new(
                f.key,
                format!(
                    "{} is larger than the transport's maximum frame ({} bytes; raise max_frame)",
                    f.what, c.max_frame
                ),
            ));
        }
        let cap = c.shm_capacity as usize;
        let most = ipcbench_transport::shm_max_frame(cap) as u64;
        if c.over_shm() && cap.is_power_of_two() && f.bytes > most {
            let mut fits = 64usize;
            while (ipcbench_transport::shm_max_frame(fits) as u64) < f.bytes && fits < 1 << 40 {
                fits *= 2;
            }
            out.push(Problem::new(
                f.key,
                format!(
                    "{} does not fit an shm ring of {cap} bytes (at most {most}): shm_capacity = {fits} carries it",
                    f.what
                ),
            ));
        }
    }
    if c.transport == TransportKind::Iceoryx2 && c.wait == crate::spec::Wait::Yield {
        out.push(Problem::new(
            "wait",
            "iceoryx2 waits spin (polling receive) or block (its event service), not yield",
        ));
    }
    if c.transport == TransportKind::Zmq
        && !matches!(c.over, TransportKind::Uds | TransportKind::Tcp)
    {
        out.push(Problem::new(
            "over",
            format!("zmq runs over uds (ipc://) or tcp, not {}", c.over),
        ));
    }
    if c.transport == TransportKind::Mq {
        let frame = point.largest_frame(c);
        let bytes = frame.as_ref().map_or(u64::from(c.max_frame), |f| {
            f.bytes.min(u64::from(c.max_frame))
        });
        use ipcbench_transport::mq::LimitProblem;
        for p in ipcbench_transport::mq::check_limits(bytes, c.mq_depth) {
            match p {
                LimitProblem::MsgSize(why) => out.push(Problem::new(
                    frame.as_ref().map_or("max_frame", |f| f.key),
                    why,
                )),
                LimitProblem::Depth(why) => out.push(Problem::new("mq_depth", why)),
            }
        }
    }
    if point.spins(c) {
        match point.roles() {
            Roles::Fixed(_) => {
                for (i, core) in c.cores.iter().enumerate() {
                    if c.cores[..i].contains(core) {
                        out.push(Problem::new("cores", format!(
                            "wait = \"spin\" with cores {:?} puts more than one spinning role on core {core}, \
                             and spinning roles starve each other: give each role its own core or use wait = \"yield\"",
                            c.cores)));
                        break;
                    }
                }
            }
            Roles::Spread { count } => {
                let distinct: BTreeSet<&usize> = c.cores.iter().collect();
                if count > distinct.len() {
                    let how = if point.largest_frame(c).is_some() {
                        " by copy"
                    } else {
                        ""
                    };
                    out.push(Problem::new("wait", format!(
                        "{}{how} over {} with {count} roles on {} cores: spinning roles starve each other; set wait = \"block\" (or \"yield\")",
                        run.workload.name(), c.transport_label(), distinct.len())));
                }
            }
        }
    }
    if let Some(least) = point.least_s(c) {
        if !least.is_finite() || least > c.timeout_s {
            out.push(Problem::new(
                "timeout_s",
                format!(
                    "the run needs at least {least:.3} s (its pace, count or duration), more than timeout_s = {}: raise timeout_s or shorten the run",
                    c.timeout_s
                ),
            ));
        }
    }
    if run.run_id.len() > MAX_RUN_ID {
        out.push(Problem::new(
            "name",
            format!(
                "run id `{}` has {} bytes: at most {MAX_RUN_ID} (it names result files; shorten the name or the swept values)",
                params::shorten(&run.run_id),
                run.run_id.len()
            ),
        ));
    }
    out
}

/// A run's problems with its hosts and link, each naming its key: a host without a
/// table, a transport that cannot cross hosts,
/// a shaping with no interface to apply it to or that this kernel cannot do.
fn check_hosts(run: &RunSpec) -> Vec<Problem> {
    use crate::hosts::{Shaping, LOCAL};
    use TransportKind as K;
    let mut out = Vec::new();
    let c = &run.common;
    for name in &c.hosts {
        if name != LOCAL && !run.hosts.contains_key(name) {
            let known: Vec<&str> = std::iter::once(LOCAL)
                .chain(run.hosts.keys().map(String::as_str))
                .collect();
            out.push(Problem::new(
                "hosts",
                format!(
                    "no host `{name}`: add a [hosts.{name}] table (hosts: {})",
                    known.join(", ")
                ),
            ));
        }
    }
    if run.crosses_hosts() {
        let over_tcp = c.over == K::Tcp;
        let crosses = match c.transport {
            K::Tcp => true,
            K::Queue | K::Zmq => over_tcp,
            _ => false,
        };
        if !crosses {
            out.push(Problem::new(
                "hosts",
                format!(
                    "{} cannot cross hosts (its roles are on {}): tcp, queue over tcp and zmq over tcp can",
                    c.transport_label(),
                    c.hosts.join(", ")
                ),
            ));
        }
    }
    match Shaping::parse(&c.link) {
        Ok(Shaping::None) | Err(_) => {}
        Ok(shaping) => {
            let shaped: Vec<&str> = c
                .hosts
                .iter()
                .filter(|h| run.hosts.get(*h).is_some_and(|t| t.interface.is_some()))
                .map(String::as_str)
                .collect();
            if shaped.is_empty() {
                out.push(Problem::new(
                    "link",
                    "no host of this run names an `interface` to shape (set one in its [hosts.NAME])",
                ));
            }
            if let Some(missing) = crate::hosts::missing_tool(shaping) {
                out.push(Problem::new("link", missing));
            }
        }
    }
    out
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The runs of one experiment, its sweeps expanded; `Err` for a point whose values its
/// workload's struct does not take (a bug in that workload's table).
fn expand(
    name: &str,
    workload: &'static dyn Workload,
    axes: &Axes,
) -> Vec<Result<RunSpec, String>> {
    let mut keys: Vec<&String> = axes
        .keys()
        .filter(|k| k.as_str() != "repetitions")
        .collect();
    keys.sort_by_key(|k| sweep_rank(k));
    let mut combos: Vec<BTreeMap<String, Value>> = vec![BTreeMap::new()];
    for key in &keys {
        let (vals, _) = &axes[*key];
        let mut next = Vec::with_capacity(combos.len() * vals.len());
        for c in &combos {
            for v in vals {
                let mut c = c.clone();
                c.insert((*key).clone(), v.clone());
                next.push(c);
            }
        }
        combos = next;
    }
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let reps = axes.get("repetitions").and_then(|(v, _)| v.first());
    for mut values in combos {
        if let Some(r) = reps {
            values.insert("repetitions".into(), r.clone());
        }
        let typed = params::deserialize::<Common>(COMMON, &values).and_then(|common| {
            let point = workload.point(&values)?;
            Ok((common, point))
        });
        let (common, point) = match typed {
            Ok(t) => t,
            Err(m) => {
                out.push(Err(m));
                continue;
            }
        };
        // The labels: the wait strategy is shm's (also under a queue); the kernel
        // transports block in the kernel, and a wait sweep must not run them twice. The
        // queue's keys are the queue's.
        let mut labels = values;
        labels.remove("repetitions");
        if !common.own_wait() {
            labels.insert("wait".into(), Value::Str("kernel".into()));
        } else if let Some(w) = point.wait_label() {
            labels.insert("wait".into(), Value::Str(w.into()));
        }
        if !common.over_shm() {
            labels.remove("shm_capacity");
            labels.remove("spin_us");
        }
        let queue = common.transport == TransportKind::Queue;
        let zmq = common.transport == TransportKind::Zmq;
        if !point.uses_policy(&common) {
            for k in ["policy", "retry_interval_s", "retries"] {
                labels.remove(k);
            }
        }
        if !queue && !zmq {
            labels.remove("over");
            labels.remove("hwm");
        }
        if !queue {
            labels.remove("queue_batch");
        }
        if !zmq {
            labels.remove("zmq_pattern");
        }
        if common.transport != TransportKind::Mq {
            labels.remove("mq_depth");
        }
        if !seen.insert(format!("{labels:?}")) {
            continue;
        }
        // Run ids name every key that this experiment sweeps, plus the transport.
        let mut id = vec![name.to_string()];
        for key in &keys {
            // `over` and `zmq_pattern` are in the transport's label.
            let in_label = matches!(key.as_str(), "over" | "zmq_pattern");
            if key.as_str() == "transport" || (axes[*key].0.len() > 1 && !in_label) {
                // A key this run does not have (a queue key on another transport).
                let Some(v) = labels.get(*key) else { continue };
                id.push(match key.as_str() {
                    "transport" => common.transport_label(),
                    "msg_bytes" => format!("{v}B"),
                    "cores" => format!("c{}", sanitize(&v.to_string())),
                    "link" if v.to_string().trim().is_empty() => "link-none".to_string(),
                    k => format!("{k}{}", sanitize(&v.to_string())),
                });
            }
        }
        let id = id.join("-");
        let wait_label = labels
            .get("wait")
            .map_or_else(|| "kernel".to_string(), Value::to_string);
        let params_label = workload
            .params()
            .iter()
            .filter(|d| d.key != "msg_bytes")
            .filter_map(|d| labels.get(d.key).map(|v| format!("{}={v}", d.key)))
            .collect::<Vec<_>>()
            .join(";");
        let reps = common.repetitions;
        let mut first = Some(point);
        for rep in 0..reps {
            // Each repetition its own typed point (a point may hold what it read).
            let point = match first.take() {
                Some(p) => p,
                None => match workload.point(&labels) {
                    Ok(p) => p,
                    Err(m) => {
                        out.push(Err(m));
                        continue;
                    }
                },
            };
            out.push(Ok(RunSpec {
                run_id: id.clone(),
                point_id: id.clone(),
                rep,
                common: common.clone(),
                workload,
                point,
                labels: labels.clone(),
                wait_label: wait_label.clone(),
                params_label: params_label.clone(),
                hosts: Default::default(),
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CORES: &[usize] = &[0, 1];

    fn errors(text: &str) -> Vec<String> {
        parse("t.toml", text, CORES)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn sweeps_expand_into_a_matrix_with_defaults_applied() {
        let runs = parse(
            "t.toml",
            "[defaults]\ncount = 50\nrate = 50\n\n[[experiment]]\nname = \"lat\"\nworkload = \"latency\"\n\
             transport = [\"pipe\", \"uds\"]\nmsg_bytes = [64, 1024]\nrepetitions = 2\n\n\
             [[experiment]]\nname = \"tp\"\nworkload = \"throughput\"\ntransport = \"tcp\"\nmsg_bytes = 64\n",
            CORES,
        )
        .unwrap();
        assert_eq!(runs.len(), 2 * 2 * 2 + 1);
        assert_eq!(runs[0].run_id, "000-lat-pipe-64B-r0");
        assert_eq!(runs[1].run_id, "001-lat-pipe-64B-r1");
        assert_eq!(runs[2].point.msg_bytes(), Some(1024));
        assert_eq!(runs[4].common.transport, TransportKind::Uds);
        assert_eq!(runs[0].labels["count"], Value::Int(50));
        assert_eq!(runs[0].labels["rate"], Value::Float(50.0));
        assert_eq!(
            runs[0].labels["warmup"],
            Value::Int(1000),
            "the table's default"
        );
        // `rate` is a latency key: the throughput experiment ignores it from [defaults].
        assert!(!runs[8].labels.contains_key("rate"));
        assert_eq!(runs[8].params_label, "count=50;warmup=1000;bare=false");
        assert_eq!(
            runs[0].params_label,
            "count=50;warmup=1000;rate=50;bare=false;zero_copy=false"
        );
        assert_eq!(runs[8].common.cores, vec![0, 1]);
    }

    #[test]
    fn zero_copy_is_for_shm_alone_and_sweeps_beside_copy() {
        let e = errors(
            "[[experiment]]\nname = \"z\"\nworkload = \"latency\"\ntransport = [\"shm\", \"uds\"]\nmsg_bytes = 64\nzero_copy = true\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("t.toml:6: key `zero_copy`:") && e[0].contains("shm"),
            "{e:?}"
        );
        let runs = parse(
            "t.toml",
            "[[experiment]]\nname = \"z\"\nworkload = \"latency\"\ntransport = \"shm\"\nmsg_bytes = 64\nzero_copy = [false, true]\n",
            CORES,
        )
        .unwrap();
        let ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(
            ids,
            ["000-z-shm-zero_copyfalse-r0", "001-z-shm-zero_copytrue-r0"]
        );
        assert_eq!(runs[1].labels["zero_copy"], Value::Bool(true));
        assert_eq!(runs[0].labels["zero_copy"], Value::Bool(false));
    }

    #[test]
    fn pingpong_images_over_2_pow_24_pixels_are_refused() {
        let e = errors(
            "[[experiment]]\nname = \"p\"\nworkload = \"pingpong\"\ntransport = \"shm\"\nsize = [1024, 4097]\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("t.toml:5: key `size`:") && e[0].contains("4097x4097"),
            "{e:?}"
        );
        let e = errors(
            "[[experiment]]\nname = \"p\"\nworkload = \"pingpong\"\ntransport = \"shm\"\nsize = 4096\nwidth = 8192\n",
        );
        assert!(
            e[0].starts_with("t.toml:6: key `width`:") && e[0].contains("8192x4096"),
            "{e:?}"
        );
        let runs = parse(
            "t.toml",
            "[[experiment]]\nname = \"p\"\nworkload = \"pingpong\"\ntransport = \"shm\"\nsize = 4096\n",
            CORES,
        )
        .unwrap();
        assert_eq!(runs.len(), 1);
    }

    #[test]
    fn cores_list_of_lists_is_a_sweep() {
        let runs = parse(
            "t.toml",
            "[[experiment]]\nname = \"a\"\nworkload = \"latency\"\ntransport = \"uds\"\nmsg_bytes = 64\ncores = [[0, 1], [0, 0]]\n",
            CORES,
        )
        .unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[1].common.cores, vec![0, 0]);
        assert_eq!(runs[1].run_id, "001-a-uds-c0-0-r0");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let text = "[[experiment]]\nname = \"a\"\nworkload = \"latency\"\ntransport = \"uds\"\nmsg_bytes = 64\ncount = -5\nbogus = 1\n";
        let e = errors(text);
        assert!(
            e.contains(
                &"t.toml:6: key `count`: -5 is out of range: expected integer 1..=1000000000000"
                    .to_string()
            ),
            "{e:?}"
        );
        assert!(e.iter().any(|m| m.starts_with("t.toml:7: key `bogus`: unknown key for workload `latency`")), "{e:?}");
    }

    #[test]
    fn wrong_types_unknown_names_and_impossible_values() {
        let base = "[[experiment]]\nname = \"a\"\nworkload = \"latency\"\n";
        let e = errors(&format!(
            "{base}transport = \"carrier-pigeon\"\nmsg_bytes = \"big\"\n"
        ));
        assert!(
            e.iter()
                .any(|m| m
                    .starts_with("t.toml:4: key `transport`: unknown transport `carrier-pigeon`")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|m| m
                == "t.toml:5: key `msg_bytes`: expected integer 8..=4294967295, found a string"),
            "{e:?}"
        );
        let e = errors(&format!(
            "{base}transport = \"uds\"\nmsg_bytes = 64\ncores = [0, 7]\n"
        ));
        assert!(
            e.iter()
                .any(|m| m.starts_with("t.toml:6: key `cores`: core 7 is not usable")),
            "{e:?}"
        );
        let e = errors(&format!(
            "{base}transport = \"uds\"\nmsg_bytes = 64\ncores = [0]\n"
        ));
        assert!(
            e.iter()
                .any(|m| m.contains("1 cores given, workload `latency` has 2 roles")),
            "{e:?}"
        );
        let e = errors(&format!(
            "{base}transport = \"uds\"\nmsg_bytes = 4096\nmax_frame = 1024\n"
        ));
        assert!(
            e.iter()
                .any(|m| m.starts_with("t.toml:5: key `msg_bytes`: a 4096-byte message is larger")),
            "{e:?}"
        );
        let e = errors("[[experiment]]\nname = \"a\"\nworkload = \"nope\"\n");
        assert_eq!(
            e,
            vec!["t.toml:3: key `workload`: unknown workload `nope` (known: latency, throughput, pingpong, vectors, buffer, tasks)"]
        );
        let e =
            errors("[[experiment]]\nname = \"a\"\nworkload = \"latency\"\ntransport = \"uds\"\n");
        assert!(
            e.iter()
                .any(|m| m
                    == "t.toml:1: key `msg_bytes`: missing required key for workload `latency`"),
            "{e:?}"
        );
    }

    #[test]
    fn shm_waits_sweep_and_spinning_roles_need_their_own_cores() {
        let base = "[[experiment]]\nname = \"a\"\nworkload = \"latency\"\nmsg_bytes = 64\n";
        let runs = parse(
            "t.toml",
            &format!("{base}transport = [\"uds\", \"shm\"]\nwait = [\"spin\", \"yield\"]\n"),
            CORES,
        )
        .unwrap();
        let waits: Vec<String> = runs
            .iter()
            .map(|r| format!("{}/{}", r.common.transport, r.wait_label))
            .collect();
        assert_eq!(
            waits,
            ["uds/kernel", "shm/spin", "shm/yield"],
            "a wait sweep does not run uds twice"
        );
        let e = errors(&format!("{base}transport = \"shm\"\ncores = [0, 0]\n"));
        assert!(e.iter().any(|m| m.starts_with("t.toml:6: key `cores`: wait = \"spin\" with cores [0, 0] puts more than one spinning role")), "{e:?}");
        assert!(parse(
            "t.toml",
            &format!("{base}transport = \"shm\"\ncores = [0, 0]\nwait = \"yield\"\n"),
            CORES
        )
        .is_ok());
        let e = errors(&format!("{base}transport = \"shm\"\nshm_capacity = 1000\n"));
        assert_eq!(
            e,
            vec!["t.toml:6: key `shm_capacity`: 1000 is not a power of two"]
        );
        let e = errors("[[experiment]]\nname = \"a\"\nworkload = \"latency\"\nmsg_bytes = 4096\ntransport = \"shm\"\nshm_capacity = 4096\n");
        assert!(
            e.iter().any(|m| m.starts_with(
                "t.toml:4: key `msg_bytes`: a 4096-byte message does not fit an shm ring"
            )),
            "{e:?}"
        );
        assert!(parse(
            "t.toml",
            &format!("{base}transport = \"shm\"\ncores = [0, 0]\nwait = \"block\"\n"),
            CORES
        )
        .is_ok());
        let e = errors(&format!("{base}transport = \"shm\"\nwait = \"sleep\"\n"));
        assert_eq!(
            e,
            vec!["t.toml:6: key `wait`: unknown wait strategy `sleep` (known: spin, yield, block)"]
        );
    }

    #[test]
    fn a_buffer_chunk_sent_by_copy_must_fit_the_shm_ring() {
        let base = "[[experiment]]\nname = \"a\"\nworkload = \"buffer\"\ndtype = \"u32\"\nelems = 256\nexemplars = [256, 1024]\nzero_copy = false\n";
        // 1 MiB chunks (and their header) need a 4 MiB ring; 256 KiB ones fit 1 MiB.
        let e = errors(&format!(
            "{base}transport = \"shm\"\nshm_capacity = 1048576\n"
        ));
        assert_eq!(
            e,
            vec!["t.toml:9: key `shm_capacity`: a chunk of 1048592 bytes (1024 x 256 elements and its header) does not fit an shm ring of 1048576 bytes (at most 524272): shm_capacity = 4194304 carries it"]
        );
        let fits = |t: &str| parse("t.toml", &format!("{base}{t}"), CORES).is_ok();
        assert!(fits("transport = \"shm\"\nshm_capacity = 4194304\n"));
        assert!(!fits(
            "transport = \"queue\"\nover = \"shm\"\nshm_capacity = 1048576\n"
        ));
        // The pool moves indices and the kernel transports take any chunk.
        let pool = base.replace("zero_copy = false", "zero_copy = true");
        assert!(parse(
            "t.toml",
            &format!("{pool}transport = \"shm\"\nshm_capacity = 65536\n"),
            CORES
        )
        .is_ok());
        assert!(fits("transport = \"uds\"\n"));
    }

    #[test]
    fn syntax_errors_and_empty_files_are_reported() {
        let e = errors("[[experiment]]\nname = \"a\nworkload = 1\n");
        assert!(e[0].starts_with("t.toml:2: "), "{e:?}");
        assert_eq!(
            errors(""),
            vec!["t.toml: no [[experiment]] table: nothing to run"]
        );
        let e = errors("[experiments]\nname = 1\n");
        assert!(
            e[0].starts_with("t.toml:1: unknown field `experiments`"),
            "{e:?}"
        );
        let e = errors("[defaults]\nfrobnicate = 1\n[[experiment]]\nname = \"a\"\nworkload = \"latency\"\ntransport = \"uds\"\nmsg_bytes = 64\n");
        assert_eq!(
            e,
            vec!["t.toml:2: key `frobnicate`: unknown key (see `harness list`)"]
        );
    }

    #[test]
    fn a_data_file_rewritten_between_two_reads_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let client = dir.path().join("client.txt");
        std::fs::write(&client, "137.72.95.0:foo\n").unwrap();
        let text = format!(
            "[[experiment]]\nname = \"t\"\nworkload = \"tasks\"\ntransport = \"queue\"\nclient_file = \"{}\"\n",
            client.display()
        );
        assert!(parse("t.toml", &text, CORES).is_ok());
        std::fs::write(&client, "").unwrap();
        let e = errors(&text);
        assert!(e.iter().any(|m| m.contains("no client lines")), "{e:?}");
    }
}
