//! Experiment configs: TOML with an optional `[defaults]` table and `[[experiment]]`
//! tables. A list-valued key is a sweep, so one file expands into a matrix of runs
//! (experiment × transport × cores × msg_bytes × other swept keys × repetition).
//!
//! Every problem is reported with file, line and key, all of them at once, before
//! anything runs or is written. A key in `[defaults]` that some other workload uses is
//! ignored by experiments it does not apply to; a key no workload knows is an error.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use ipcbench_transport::TransportKind;
use serde::Deserialize;
use toml::Spanned;

use crate::catalog::{self, ParamDef, ParamType, WorkloadKind, COMMON};

/// A parameter value after type checking.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A number.
    Float(f64),
    /// A flag.
    Bool(bool),
    /// A string (also transport and workload names).
    Str(String),
    /// Core ids, one per role.
    Cores(Vec<usize>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Str(s) => f.write_str(s),
            Value::Cores(c) => {
                let s: Vec<String> = c.iter().map(|c| c.to_string()).collect();
                f.write_str(&s.join(";"))
            }
        }
    }
}

/// One run of the matrix.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Unique within the invocation; names the histogram file.
    pub run_id: String,
    /// The experiment's `name`.
    pub experiment: String,
    /// The workload.
    pub workload: WorkloadKind,
    /// The transport.
    pub transport: TransportKind,
    /// One core per role.
    pub cores: Vec<usize>,
    /// Repetition number, from 0.
    pub rep: u32,
    /// Bound on the whole run.
    pub timeout: Duration,
    /// Every key of the experiment with its value for this run.
    pub values: BTreeMap<String, Value>,
}

impl RunSpec {
    /// The two cores its floor is measured between: its first two roles' (or the first
    /// twice, for a run on one core).
    pub fn core_pair(&self) -> [usize; 2] {
        let first = self.cores.first().copied().unwrap_or(0);
        [first, self.cores.get(1).copied().unwrap_or(first)]
    }

    /// An integer parameter (0 if absent: validation guarantees the ones a workload needs).
    pub fn int(&self, key: &str) -> i64 {
        match self.values.get(key) {
            Some(Value::Int(i)) => *i,
            Some(Value::Float(x)) => *x as i64,
            _ => 0,
        }
    }

    /// A numeric parameter.
    pub fn float(&self, key: &str) -> f64 {
        match self.values.get(key) {
            Some(Value::Int(i)) => *i as f64,
            Some(Value::Float(x)) => *x,
            _ => 0.0,
        }
    }

    /// The core of each role, in role order: `cores` itself, except for `buffer` (the
    /// acquirer and its workers) and `tasks` (client, gateway, then the most workers it
    /// may start), whose roles take the listed cores in turn.
    pub fn role_cores(&self) -> Vec<usize> {
        if !self.workload.spreads_cores() || self.cores.is_empty() {
            return self.cores.clone();
        }
        let roles = match self.workload {
            WorkloadKind::Tasks => 2 + self.int("max_workers").max(1) as usize,
            _ => 1 + self.int("workers").max(1) as usize,
        };
        (0..roles)
            .map(|i| self.cores[i % self.cores.len()])
            .collect()
    }

    /// The transport as the CSV names it: `queue-uds` for the queue over uds, the kind's
    /// name otherwise.
    pub fn transport_label(&self) -> String {
        match self.transport {
            TransportKind::Queue => format!("queue-{}", self.text("over")),
            t => t.name().to_string(),
        }
    }

    /// Whether the run's frames travel through shm rings: `shm` itself, or the queue over
    /// it.
    pub fn over_shm(&self) -> bool {
        self.transport == TransportKind::Shm
            || (self.transport == TransportKind::Queue && self.text("over") == "shm")
    }

    /// The queue's full policy (`policy = "block"` waits as long as the run may last;
    /// `"retry"` waits `retry_interval_s`, at most `retries` times).
    pub fn queue_policy(&self) -> ipcbench_transport::queue::FullPolicy {
        use ipcbench_transport::queue::FullPolicy;
        match self.text("policy") {
            "block" => FullPolicy::Block {
                timeout: self.timeout,
            },
            _ => FullPolicy::Retry {
                interval: Duration::from_secs_f64(self.float("retry_interval_s")),
                retries: self.int("retries") as u32,
            },
        }
    }

    /// A string value ("" if absent).
    pub fn text(&self, key: &str) -> &str {
        match self.values.get(key) {
            Some(Value::Str(s)) => s,
            _ => "",
        }
    }

    /// A flag.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.values.get(key), Some(Value::Bool(true)))
    }

    /// `msg_bytes`, if the workload has it.
    pub fn msg_bytes(&self) -> Option<usize> {
        self.values
            .get("msg_bytes")
            .map(|_| self.int("msg_bytes") as usize)
    }

    /// The workload's own parameters other than `msg_bytes`, as `k=v;k=v` for the CSV.
    pub fn params_string(&self) -> String {
        let mut parts = Vec::new();
        for def in self.workload.params() {
            if def.key != "msg_bytes" {
                if let Some(v) = self.values.get(def.key) {
                    parts.push(format!("{}={v}", def.key));
                }
            }
        }
        parts.join(";")
    }

    /// Whether the run matches `key=value` (string comparison of the value).
    pub fn matches(&self, key: &str, value: &str) -> bool {
        match key {
            "rep" => self.rep.to_string() == value,
            "run_id" => self.run_id == value,
            "experiment" | "name" => self.experiment == value,
            _ => self.values.get(key).is_some_and(|v| v.to_string() == value),
        }
    }
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    defaults: Option<RawTable>,
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
        if !self.list.contains(&e) {
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

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a datetime",
        toml::Value::Array(_) => "a list",
        toml::Value::Table(_) => "a table",
    }
}

/// Checks one scalar against a parameter type.
fn check_scalar(def: &ParamDef, v: &toml::Value) -> Result<Value, String> {
    let wrong = || format!("expected {}, found {}", def.ty.describe(), type_name(v));
    match (def.ty, v) {
        (ParamType::Int { min, max }, toml::Value::Integer(i)) => {
            if *i < min || *i > max {
                Err(format!(
                    "{i} is out of range: expected {}",
                    def.ty.describe()
                ))
            } else {
                Ok(Value::Int(*i))
            }
        }
        (ParamType::Float { min }, toml::Value::Integer(i)) if (*i as f64) >= min => {
            Ok(Value::Float(*i as f64))
        }
        (ParamType::Float { min }, toml::Value::Float(x)) if x.is_finite() && *x >= min => {
            Ok(Value::Float(*x))
        }
        (ParamType::Float { .. }, toml::Value::Integer(_) | toml::Value::Float(_)) => Err(format!(
            "{v} is out of range: expected {}",
            def.ty.describe()
        )),
        (ParamType::Bool, toml::Value::Boolean(b)) => Ok(Value::Bool(*b)),
        (ParamType::Wait, toml::Value::String(s)) => match s.as_str() {
            "spin" | "yield" | "block" => Ok(Value::Str(s.clone())),
            other => Err(format!(
                "unknown wait strategy `{other}` (known: spin, yield, block)"
            )),
        },
        (ParamType::Choice(choices), toml::Value::String(s)) => {
            if choices.contains(&s.as_str()) {
                Ok(Value::Str(s.clone()))
            } else {
                Err(format!(
                    "unknown {} `{s}` (known: {})",
                    def.key,
                    choices.join(", ")
                ))
            }
        }
        (ParamType::Str, toml::Value::String(s)) => {
            if s.is_empty()
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                Err(format!(
                    "`{s}` must be non-empty and use only letters, digits, '-', '_' and '.'"
                ))
            } else {
                Ok(Value::Str(s.clone()))
            }
        }
        (ParamType::Path, toml::Value::String(s)) => {
            if s.chars().any(char::is_control) {
                Err("a path without control characters".into())
            } else {
                Ok(Value::Str(s.clone()))
            }
        }
        (ParamType::Transport, toml::Value::String(s)) => {
            s.parse::<TransportKind>().map(|_| Value::Str(s.clone()))
        }
        (ParamType::Workload, toml::Value::String(s)) => match WorkloadKind::from_name(s) {
            Some(_) => Ok(Value::Str(s.clone())),
            None => {
                let names: Vec<_> = WorkloadKind::ALL.iter().map(|w| w.name()).collect();
                Err(format!(
                    "unknown workload `{s}` (known: {})",
                    names.join(", ")
                ))
            }
        },
        (ParamType::Cores, toml::Value::Array(items)) => {
            let mut cores = Vec::new();
            for item in items {
                match item {
                    toml::Value::Integer(i) if *i >= 0 => cores.push(*i as usize),
                    other => {
                        return Err(format!(
                            "core ids are integers >= 0, found {}",
                            type_name(other)
                        ))
                    }
                }
            }
            if cores.is_empty() {
                return Err("an empty list of cores".into());
            }
            Ok(Value::Cores(cores))
        }
        _ => Err(wrong()),
    }
}

/// A value, or a list of values to sweep.
fn candidates(def: &ParamDef, v: &toml::Value) -> Result<Vec<Value>, String> {
    match (def.ty, v) {
        // `cores` is a list by nature; a list of lists is a sweep of placements.
        (ParamType::Cores, toml::Value::Array(items))
            if items.iter().all(|i| matches!(i, toml::Value::Array(_))) =>
        {
            if items.is_empty() {
                return Err("an empty sweep".into());
            }
            items.iter().map(|i| check_scalar(def, i)).collect()
        }
        (ParamType::Cores, _) => Ok(vec![check_scalar(def, v)?]),
        (_, toml::Value::Array(items)) => {
            if matches!(def.ty, ParamType::Workload) || def.key == "name" {
                return Err(format!("`{}` takes one value, not a list", def.key));
            }
            if items.is_empty() {
                return Err("an empty sweep".into());
            }
            let vals: Vec<Value> = items
                .iter()
                .map(|i| check_scalar(def, i))
                .collect::<Result<_, _>>()?;
            Ok(vals)
        }
        _ => Ok(vec![check_scalar(def, v)?]),
    }
}

fn default_value(def: &ParamDef) -> Option<Vec<Value>> {
    let text = def.default?;
    let v: toml::Value = toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()?
        .remove("v")?;
    candidates(def, &v).ok()
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
    let raw: RawConfig = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            errs.push(line, None, e.message().trim().to_string());
            return Err(errs.list);
        }
    };
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
        if !catalog::known_anywhere(key) {
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

    let mut runs = Vec::new();
    let mut names = BTreeSet::new();
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
        let workload = match merged.get("workload") {
            None => {
                errs.push(
                    exp_line,
                    Some("workload"),
                    "missing required key in [[experiment]]",
                );
                continue;
            }
            Some(e) => match candidates(&COMMON[1], &e.value) {
                Ok(v) => match v.first() {
                    Some(Value::Str(s)) => WorkloadKind::from_name(s),
                    _ => None,
                },
                Err(m) => {
                    errs.push(e.line, Some("workload"), m);
                    None
                }
            },
        };
        let Some(workload) = workload else { continue };

        let mut axes: BTreeMap<String, (Vec<Value>, usize)> = BTreeMap::new();
        for (key, entry) in &merged {
            match catalog::param(workload, key) {
                Some(def) => match candidates(def, &entry.value) {
                    Ok(vals) => {
                        axes.insert(key.clone(), (vals, entry.line));
                    }
                    Err(m) => errs.push(entry.line, Some(key), m),
                },
                None if entry.from_defaults => {}
                None => {
                    let mut known: Vec<&str> = COMMON
                        .iter()
                        .chain(workload.params())
                        .map(|d| d.key)
                        .collect();
                    known.sort_unstable();
                    errs.push(
                        entry.line,
                        Some(key),
                        format!(
                            "unknown key for workload `{workload}` (known: {})",
                            known.join(", ")
                        ),
                    );
                }
            }
        }
        for def in COMMON.iter().chain(workload.params()) {
            if axes.contains_key(def.key) || merged.contains_key(def.key) {
                continue;
            }
            match default_value(def) {
                Some(vals) => {
                    axes.insert(def.key.to_string(), (vals, exp_line));
                }
                None => errs.push(
                    exp_line,
                    Some(def.key),
                    format!("missing required key for workload `{workload}`"),
                ),
            }
        }
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

        // Checks that involve more than one key, on each value that can occur.
        let roles = workload.roles();
        if let Some((cores, line)) = axes.get("cores") {
            for c in cores {
                let Value::Cores(c) = c else { continue };
                // `buffer` and `tasks` have a coordinator and any number of workers:
                // their cores are spread over the roles in turn (role i on cores[i % len]).
                if c.len() != roles.len() && !workload.spreads_cores() {
                    errs.push(*line, Some("cores"), format!(
                        "{} cores given, workload `{workload}` has {} roles ({}): one core per role",
                        c.len(), roles.len(), roles.join(", ")));
                }
                for id in c {
                    if !usable_cores.contains(id) {
                        errs.push(
                            *line,
                            Some("cores"),
                            format!(
                                "core {id} is not usable on this machine (usable: {:?})",
                                usable_cores
                            ),
                        );
                    }
                }
            }
        }
        if let (Some((msgs, line)), Some((frames, _))) =
            (axes.get("msg_bytes"), axes.get("max_frame"))
        {
            for m in msgs {
                for f in frames {
                    if let (Value::Int(m), Value::Int(f)) = (m, f) {
                        if m > f {
                            errs.push(*line, Some("msg_bytes"), format!(
                                "a {m}-byte message is larger than the transport's maximum frame ({f} bytes; raise max_frame)"));
                        }
                    }
                }
            }
        }
        if let (Some((bare, line)), Some((transports, _))) =
            (axes.get("bare"), axes.get("transport"))
        {
            if bare.contains(&Value::Bool(true)) && transports.iter().any(|t| !bare_capable(t)) {
                errs.push(
                    *line,
                    Some("bare"),
                    "the bare baseline exists for pipe, uds and tcp only",
                );
            }
        }
        if workload == WorkloadKind::Vectors {
            let nums = |k: &str| -> (Vec<f64>, usize) {
                axes.get(k).map_or((vec![], 0), |(v, line)| {
                    (
                        v.iter()
                            .filter_map(|x| match x {
                                Value::Int(i) => Some(*i as f64),
                                Value::Float(f) => Some(*f),
                                _ => None,
                            })
                            .collect(),
                        *line,
                    )
                })
            };
            let noisy = axes
                .get("noise")
                .is_some_and(|(v, _)| v.iter().any(|n| !matches!(n, Value::Str(s) if s == "none")));
            let ((lows, low_line), (highs, high_line)) = (nums("low_s"), nums("high_s"));
            if noisy {
                if lows.iter().any(|l| *l <= 0.0) {
                    errs.push(low_line, Some("low_s"), "must be > 0 (the first vector is never dropped: it has no neighbour before it)");
                }
                if lows.iter().any(|l| highs.iter().any(|h| h <= l)) {
                    errs.push(high_line, Some("high_s"), "must be larger than low_s");
                }
            }
            let ((counts, _), (durations, d_line)) = (nums("count"), nums("duration_s"));
            if counts.contains(&0.0) && durations.contains(&0.0) {
                errs.push(
                    d_line,
                    Some("duration_s"),
                    "with count = 0 the run lasts duration_s, which must be > 0",
                );
            }
        }
        if let (WorkloadKind::Pingpong, Some((sizes, size_line))) = (workload, axes.get("size")) {
            let ints = |k: &str| -> Vec<i64> {
                axes.get(k).map_or(vec![0], |(v, _)| {
                    v.iter()
                        .filter_map(|x| match x {
                            Value::Int(i) => Some(*i),
                            _ => None,
                        })
                        .collect()
                })
            };
            let mut too_large = None;
            for size in sizes.iter().filter_map(|v| match v {
                Value::Int(i) => Some(*i),
                _ => None,
            }) {
                let side = |v: i64| if v == 0 { size } else { v };
                for w in ints("width") {
                    for h in ints("height") {
                        if side(w) * side(h) > 1 << 24 && too_large.is_none() {
                            // The error goes to the key that set the too-large side.
                            let key = if w != 0 {
                                "width"
                            } else if h != 0 {
                                "height"
                            } else {
                                "size"
                            };
                            too_large = Some((side(w), side(h), key));
                        }
                    }
                }
            }
            if let Some((w, h, key)) = too_large {
                let line = axes.get(key).map_or(*size_line, |(_, l)| *l);
                errs.push(
                    line,
                    Some(key),
                    format!(
                        "a {w}x{h} image has {} pixels, more than the 2^24 colours (each pixel needs one of its own)",
                        w * h
                    ),
                );
            }
        }
        if workload == WorkloadKind::Buffer {
            // Copy mode over shm spins in the transport: one role per core at most.
            let copies = axes
                .get("zero_copy")
                .is_some_and(|(v, _)| v.contains(&Value::Bool(false)));
            let shm = axes
                .get("transport")
                .is_some_and(|(v, _)| v.contains(&Value::Str("shm".into())));
            let spin = axes
                .get("wait")
                .is_some_and(|(v, _)| v.contains(&Value::Str("spin".into())));
            let most_workers = axes.get("workers").map_or(1, |(v, _)| {
                v.iter()
                    .filter_map(|x| match x {
                        Value::Int(i) => Some(*i),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(1)
            });
            if copies && shm && spin && most_workers as usize + 1 > usable_cores.len() {
                let line = axes.get("wait").map_or(0, |(_, l)| *l);
                errs.push(line, Some("wait"), format!(
                    "buffer by copy over shm with {} roles on {} cores: spinning roles starve each other; set wait = \"block\" (or \"yield\")",
                    most_workers + 1, usable_cores.len()));
            }
        }
        let is_shm = |t: &Value| matches!(t, Value::Str(s) if s == "shm");
        if let (Some((zc, line)), Some((transports, _))) =
            (axes.get("zero_copy"), axes.get("transport"))
        {
            if zc.contains(&Value::Bool(true)) && !transports.iter().all(is_shm) {
                let why = if workload == WorkloadKind::Buffer {
                    "zero_copy = true (buffer's default: the shared chunk pool) needs transport = \"shm\"; \
                     set zero_copy = false to send the chunks by copy over this transport"
                } else {
                    "zero_copy = true needs transport = \"shm\" (the only transport that lends its memory)"
                };
                errs.push(*line, Some("zero_copy"), why);
            }
            if zc.contains(&Value::Bool(true))
                && axes
                    .get("bare")
                    .is_some_and(|(b, _)| b.contains(&Value::Bool(true)))
            {
                errs.push(
                    *line,
                    Some("zero_copy"),
                    "zero_copy and bare cannot both be true",
                );
            }
        }
        let shm_runs = axes
            .get("transport")
            .is_some_and(|(t, _)| t.iter().any(is_shm));
        if shm_runs {
            if let Some((caps, cap_line)) = axes.get("shm_capacity") {
                for cap in caps {
                    let Value::Int(cap) = cap else { continue };
                    let cap = *cap as usize;
                    if !cap.is_power_of_two() {
                        errs.push(
                            *cap_line,
                            Some("shm_capacity"),
                            format!("{cap} is not a power of two"),
                        );
                        continue;
                    }
                    if let Some((msgs, msg_line)) = axes.get("msg_bytes") {
                        for m in msgs {
                            if let Value::Int(m) = m {
                                if *m as usize > ipcbench_transport::shm_max_frame(cap) {
                                    errs.push(*msg_line, Some("msg_bytes"), format!(
                                        "a {m}-byte message does not fit an shm ring of {cap} bytes (at most {}; raise shm_capacity)",
                                        ipcbench_transport::shm_max_frame(cap)));
                                }
                            }
                        }
                    }
                }
            }
            let spins = axes
                .get("wait")
                .is_some_and(|(w, _)| w.contains(&Value::Str("spin".into())));
            if let (true, Some((cores, line))) = (spins, axes.get("cores")) {
                for c in cores {
                    let Value::Cores(c) = c else { continue };
                    for (i, core) in c.iter().enumerate() {
                        if c[..i].contains(core) {
                            errs.push(*line, Some("cores"), format!(
                                "wait = \"spin\" with cores {c:?} puts more than one spinning role on core {core}, \
                                 and spinning roles starve each other: give each role its own core or use wait = \"yield\""));
                            break;
                        }
                    }
                }
            }
        }
        if workload == WorkloadKind::Tasks {
            if let Some((ts, line)) = axes.get("transport") {
                if ts.iter().any(|t| t.to_string() != "queue") {
                    errs.push(*line, Some("transport"), "tasks runs over queue sockets: set transport = \"queue\" and over = \"uds\", \"tcp\" or \"shm\"");
                }
            }
        }
        if !errs.list.is_empty() {
            continue;
        }
        let first = runs.len();
        expand(&name, workload, &axes, &mut runs);
        if workload == WorkloadKind::Buffer {
            let mut seen = std::collections::BTreeSet::new();
            for r in &runs[first..] {
                if let Err(msg) = crate::buffer::frame_fits(r) {
                    if seen.insert(msg.clone()) {
                        let line = axes.get("shm_capacity").map_or(exp_line, |(_, l)| *l);
                        errs.push(line, Some("shm_capacity"), msg);
                    }
                }
            }
        }
        if workload == WorkloadKind::Tasks {
            // Every data file is read and every line checked now, not when the run starts.
            let mut seen = std::collections::BTreeSet::new();
            for r in &runs[first..] {
                if let Err((msg, key)) = crate::tasks::data(r) {
                    if seen.insert(msg.clone()) {
                        let line = axes.get(key).map_or(exp_line, |(_, l)| *l);
                        errs.push(line, Some(key), msg);
                    }
                }
            }
        }
    }
    if errs.list.is_empty() {
        Ok(runs)
    } else {
        Err(errs.list)
    }
}

fn bare_capable(t: &Value) -> bool {
    matches!(t, Value::Str(s) if matches!(s.parse::<TransportKind>(), Ok(TransportKind::Pipe | TransportKind::Uds | TransportKind::Tcp)))
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

fn expand(
    name: &str,
    workload: WorkloadKind,
    axes: &BTreeMap<String, (Vec<Value>, usize)>,
    runs: &mut Vec<RunSpec>,
) {
    let mut keys: Vec<&String> = axes
        .keys()
        .filter(|k| k.as_str() != "repetitions")
        .collect();
    keys.sort_by_key(|k| sweep_rank(k));
    let reps = match axes.get("repetitions").and_then(|(v, _)| v.first()) {
        Some(Value::Int(r)) => *r as u32,
        _ => 1,
    };
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
    let mut seen = std::collections::BTreeSet::new();
    for mut values in combos {
        // The wait strategy is shm's (also under a queue); the kernel transports block in
        // the kernel, and a wait sweep must not run them twice. The queue's keys are the
        // queue's. `tasks` polls its queue sockets with a backoff of its own: its shm
        // halves are set to block whatever `wait` says.
        let transport = values.get("transport").map(|v| v.to_string());
        let queue = transport.as_deref() == Some("queue");
        let over_shm = queue && values.get("over").map(|v| v.to_string()).as_deref() == Some("shm");
        if transport.as_deref() != Some("shm") && !over_shm {
            values.insert("wait".into(), Value::Str("kernel".into()));
            values.remove("shm_capacity");
            values.remove("spin_us");
        } else if workload == WorkloadKind::Tasks {
            values.insert("wait".into(), Value::Str("block".into()));
        }
        if !queue {
            for k in ["over", "hwm", "policy", "retry_interval_s", "retries"] {
                values.remove(k);
            }
        }
        if !seen.insert(format!("{values:?}")) {
            continue;
        }
        // Run ids name every key that this experiment sweeps, plus the transport.
        let mut id = vec![name.to_string()];
        for key in &keys {
            if key.as_str() == "transport" || (axes[*key].0.len() > 1 && key.as_str() != "over") {
                // A key this run does not have (a queue key on another transport).
                let Some(v) = values.get(*key) else { continue };
                id.push(match key.as_str() {
                    "transport" if queue => format!("queue-{}", values["over"]),
                    "transport" => v.to_string(),
                    "msg_bytes" => format!("{v}B"),
                    "cores" => format!("c{}", sanitize(&v.to_string())),
                    k => format!("{k}{}", sanitize(&v.to_string())),
                });
            }
        }
        let transport = match values.get("transport") {
            Some(Value::Str(s)) => s.parse().unwrap_or(TransportKind::Pipe),
            _ => TransportKind::Pipe,
        };
        let cores = match values.get("cores") {
            Some(Value::Cores(c)) => c.clone(),
            _ => vec![0, 1],
        };
        let timeout = match values.get("timeout_s") {
            Some(Value::Float(x)) => Duration::from_secs_f64(*x),
            _ => Duration::from_secs(120),
        };
        for rep in 0..reps {
            let n = runs.len();
            runs.push(RunSpec {
                run_id: format!("{n:03}-{}-r{rep}", id.join("-")),
                experiment: name.to_string(),
                workload,
                transport,
                cores: cores.clone(),
                rep,
                timeout,
                values: values.clone(),
            });
        }
    }
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
            "[defaults]\ncount = 50\nrate = 5\n\n[[experiment]]\nname = \"lat\"\nworkload = \"latency\"\n\
             transport = [\"pipe\", \"uds\"]\nmsg_bytes = [64, 1024]\nrepetitions = 2\n\n\
             [[experiment]]\nname = \"tp\"\nworkload = \"throughput\"\ntransport = \"tcp\"\nmsg_bytes = 64\n",
            CORES,
        )
        .unwrap();
        assert_eq!(runs.len(), 2 * 2 * 2 + 1);
        assert_eq!(runs[0].run_id, "000-lat-pipe-64B-r0");
        assert_eq!(runs[1].run_id, "001-lat-pipe-64B-r1");
        assert_eq!(runs[2].msg_bytes(), Some(1024));
        assert_eq!(runs[4].transport, TransportKind::Uds);
        assert_eq!(runs[0].int("count"), 50);
        assert_eq!(runs[0].float("rate"), 5.0);
        assert_eq!(runs[0].int("warmup"), 1000, "catalog default");
        // `rate` is a latency key: the throughput experiment ignores it from [defaults].
        assert!(!runs[8].values.contains_key("rate"));
        assert_eq!(runs[8].params_string(), "count=50;warmup=1000;bare=false");
        assert_eq!(
            runs[0].params_string(),
            "count=50;warmup=1000;rate=5;bare=false;zero_copy=false"
        );
        assert_eq!(runs[8].cores, vec![0, 1]);
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
        assert!(runs[1].flag("zero_copy") && !runs[0].flag("zero_copy"));
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
        assert_eq!(runs[1].cores, vec![0, 0]);
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
            .map(|r| format!("{}/{}", r.transport, r.values["wait"]))
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
}
