//! Parameters as the config reader sees them: each key's type, bounds, default and doc
//! line ([`ParamDef`]), and the checked value of one key ([`Value`]). Every workload
//! declares its keys in a table of these beside its typed parameter struct; `harness
//! list`, `docs/parameters.md`, the config reader's checks and the struct's
//! deserialisation all follow from that table, and a test holds the two together.

use std::fmt;

use ipcbench_transport::TransportKind;

/// Longest run, or wait inside one, any duration key may ask for: a week. It keeps every
/// duration's arithmetic (a deadline, a count times an interval) far from overflow.
pub const MAX_SECONDS: f64 = 7.0 * 86_400.0;

/// The type and range of a parameter.
#[derive(Debug, Clone, Copy)]
pub enum ParamType {
    /// An integer in `min..=max`.
    Int {
        /// Smallest value.
        min: i64,
        /// Largest value.
        max: i64,
    },
    /// A number (integer or float) in `min..=max`.
    Float {
        /// Smallest value.
        min: f64,
        /// Largest value.
        max: f64,
    },
    /// true or false.
    Bool,
    /// A name: letters, digits, '-', '_' and '.', at most 64 characters.
    Name,
    /// A file path ("" for the built-in default).
    Path,
    /// One of a fixed set of names.
    Choice(&'static [&'static str]),
    /// A list of core ids, one per role.
    Cores,
    /// A list of host names, one per role (`local` or a `[hosts.NAME]` table).
    Hosts,
    /// How the link between hosts is shaped ("" for as it is).
    Link,
    /// A transport name.
    Transport,
    /// A transport the queue runs over.
    QueueOver,
}

impl ParamType {
    /// How the type reads in an error or in `list`.
    pub fn describe(self) -> String {
        match self {
            ParamType::Int { min, max } if max == i64::MAX => format!("integer >= {min}"),
            ParamType::Int { min, max } => format!("integer {min}..={max}"),
            ParamType::Float { min, max } => format!("number {min}..={max}"),
            ParamType::Bool => "true or false".into(),
            ParamType::Name => "name (letters, digits, - _ .)".into(),
            ParamType::Path => "file path (\"\": built in)".into(),
            ParamType::Choice(c) => format!("one of {}", c.join(", ")),
            ParamType::Cores => "list of core ids, one per role".into(),
            ParamType::Hosts => "list of host names, one per role".into(),
            ParamType::Link => {
                "\"\" (as it is), \"rate <n>kbit|mbit|gbit\", \"loss <p>%\" or \"delay <n>ms\""
                    .into()
            }
            ParamType::Transport => format!(
                "one of {}",
                TransportKind::ALL.map(TransportKind::name).join(", ")
            ),
            ParamType::QueueOver => format!("one of {}", queue_bases().join(", ")),
        }
    }
}

/// A parameter: key, type, default (None: required) and what it does.
#[derive(Debug, Clone, Copy)]
pub struct ParamDef {
    /// The key in the config.
    pub key: &'static str,
    /// Its type and range.
    pub ty: ParamType,
    /// Its default as TOML text; `None` means the key is required.
    pub default: Option<&'static str>,
    /// What it does.
    pub doc: &'static str,
}

impl ParamDef {
    /// Its line in `harness list`: key, type, what it does, default.
    pub fn list_line(&self) -> String {
        let default = self
            .default
            .map(|v| format!(" [default {v}]"))
            .unwrap_or_else(|| " [required]".into());
        format!(
            "  {:<18} {:<36} {}{default}",
            self.key,
            self.ty.describe(),
            self.doc
        )
    }

    /// Its row in `docs/parameters.md`.
    pub fn markdown_row(&self) -> String {
        format!(
            "| `{}` | {} | {} | {} |",
            self.key,
            self.ty.describe().replace('|', "\\|"),
            self.default
                .map(|d| format!("`{d}`"))
                .unwrap_or_else(|| "required".into()),
            self.doc.replace('|', "\\|")
        )
    }

    /// Its default, checked like a configured value.
    pub fn default_value(&self) -> Option<Vec<Value>> {
        let text = self.default?;
        let v: toml::Value = toml::from_str::<toml::Table>(&format!("v = {text}"))
            .ok()?
            .remove("v")?;
        candidates(self, &v).ok()
    }
}

/// Shorthand for the tables.
pub const fn p(
    key: &'static str,
    ty: ParamType,
    default: Option<&'static str>,
    doc: &'static str,
) -> ParamDef {
    ParamDef {
        key,
        ty,
        default,
        doc,
    }
}

/// Seconds from 0 to [`MAX_SECONDS`].
pub const SECONDS: ParamType = ParamType::Float {
    min: 0.0,
    max: MAX_SECONDS,
};

/// A count of messages or slots.
pub const COUNT: ParamType = ParamType::Int {
    min: 1,
    max: 1_000_000_000_000,
};

/// A message size: the sequence number's 8 bytes to the largest frame any transport takes.
pub const MSG: ParamType = ParamType::Int {
    min: 8,
    max: u32::MAX as i64,
};

/// A seed.
pub const SEED: ParamType = ParamType::Int {
    min: 0,
    max: i64::MAX,
};

/// A parameter value after type checking.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A number.
    Float(f64),
    /// A flag.
    Bool(bool),
    /// A string (names, paths, choices).
    Str(String),
    /// Core ids, one per role.
    Cores(Vec<usize>),
    /// Host names, one per role.
    Names(Vec<String>),
}

impl Value {
    /// The value as TOML, for deserialising a point into its typed struct.
    pub fn to_toml(&self) -> toml::Value {
        match self {
            Value::Int(i) => toml::Value::Integer(*i),
            Value::Float(x) => toml::Value::Float(*x),
            Value::Bool(b) => toml::Value::Boolean(*b),
            Value::Str(s) => toml::Value::String(s.clone()),
            Value::Cores(c) => {
                toml::Value::Array(c.iter().map(|i| toml::Value::Integer(*i as i64)).collect())
            }
            Value::Names(n) => {
                toml::Value::Array(n.iter().map(|s| toml::Value::String(s.clone())).collect())
            }
        }
    }
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
            Value::Names(n) => f.write_str(&n.join(";")),
        }
    }
}

/// How a TOML value reads in an error.
pub fn type_name(v: &toml::Value) -> &'static str {
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

/// The longest name (experiment names end up in run ids and file names).
pub const MAX_NAME: usize = 64;
/// The longest path a data-file key takes.
pub const MAX_PATH: usize = 1024;
/// The most cores one placement lists.
pub const MAX_CORES: usize = 1024;

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
        (ParamType::Float { min, max }, toml::Value::Integer(i))
            if (*i as f64) >= min && (*i as f64) <= max =>
        {
            Ok(Value::Float(*i as f64))
        }
        (ParamType::Float { min, max }, toml::Value::Float(x))
            if x.is_finite() && *x >= min && *x <= max =>
        {
            Ok(Value::Float(*x))
        }
        (ParamType::Float { .. }, toml::Value::Integer(_) | toml::Value::Float(_)) => Err(format!(
            "{v} is out of range: expected {}",
            def.ty.describe()
        )),
        (ParamType::Bool, toml::Value::Boolean(b)) => Ok(Value::Bool(*b)),
        (ParamType::Choice(choices), toml::Value::String(s)) => {
            if choices.contains(&s.as_str()) {
                Ok(Value::Str(s.clone()))
            } else {
                let noun = if def.key == "wait" {
                    "wait strategy"
                } else {
                    def.key
                };
                Err(format!(
                    "unknown {noun} `{}` (known: {})",
                    shorten(s),
                    choices.join(", ")
                ))
            }
        }
        (ParamType::Name, toml::Value::String(s)) => {
            if s.is_empty()
                || s.len() > MAX_NAME
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                Err(format!(
                    "`{}` must be 1 to {MAX_NAME} letters, digits, '-', '_' and '.'",
                    shorten(s)
                ))
            } else {
                Ok(Value::Str(s.clone()))
            }
        }
        (ParamType::Path, toml::Value::String(s)) => {
            if s.chars().any(char::is_control) {
                Err("a path without control characters".into())
            } else if s.len() > MAX_PATH {
                Err(format!("a path of {} bytes: at most {MAX_PATH}", s.len()))
            } else {
                Ok(Value::Str(s.clone()))
            }
        }
        (ParamType::Cores, toml::Value::Array(items)) => {
            if items.len() > MAX_CORES {
                return Err(format!("{} cores listed: at most {MAX_CORES}", items.len()));
            }
            let mut cores = Vec::new();
            for item in items {
                match item {
                    toml::Value::Integer(i) if (0..=u32::MAX as i64).contains(i) => {
                        cores.push(*i as usize)
                    }
                    toml::Value::Integer(i) => return Err(format!("core id {i} is out of range")),
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
        (ParamType::Hosts, toml::Value::Array(items)) => {
            if items.len() > MAX_CORES {
                return Err(format!("{} hosts listed: at most {MAX_CORES}", items.len()));
            }
            let mut names = Vec::new();
            for item in items {
                match item {
                    toml::Value::String(s)
                        if !s.is_empty()
                            && s.len() <= 64
                            && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
                    {
                        names.push(s.clone())
                    }
                    toml::Value::String(s) => {
                        return Err(format!(
                            "host `{}`: a name of letters, digits, - _ . (`local` or a [hosts.NAME] table)",
                            shorten(s)
                        ))
                    }
                    other => {
                        return Err(format!("host names are strings, found {}", type_name(other)))
                    }
                }
            }
            if names.is_empty() {
                return Err("an empty list of hosts".into());
            }
            Ok(Value::Names(names))
        }
        (ParamType::Link, toml::Value::String(s)) => crate::hosts::Shaping::parse(s)
            .map(|_| Value::Str(s.clone()))
            .map_err(|e| format!("link `{}`: {e}", shorten(s))),
        (ParamType::Transport, toml::Value::String(s)) => s
            .parse::<TransportKind>()
            .map_err(|_| None)
            .and_then(|k| {
                if k.built() {
                    Ok(Value::Str(s.clone()))
                } else {
                    Err(Some(format!(
                        "transport `{s}` is not in this build (it was built without the cargo feature `{s}`; `harness list` shows what is)"
                    )))
                }
            })
            .map_err(|why| {
                if let Some(why) = why {
                    return why;
                }
                let names: Vec<_> = TransportKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown transport `{}` (known: {})",
                    shorten(s),
                    names.join(", ")
                )
            }),
        (ParamType::QueueOver, toml::Value::String(s)) => match s.parse::<TransportKind>() {
            Ok(k) if ipcbench_transport::dispatch::queue_runs_over(k) => Ok(Value::Str(s.clone())),
            _ => Err(format!(
                "unknown over `{}` (known: {})",
                shorten(s),
                queue_bases().join(", ")
            )),
        },
        _ => Err(wrong()),
    }
}

/// The transports a queue runs over, by name.
fn queue_bases() -> Vec<&'static str> {
    TransportKind::ALL
        .into_iter()
        .filter(|k| ipcbench_transport::dispatch::queue_runs_over(*k))
        .map(TransportKind::name)
        .collect()
}

/// A user's string in a message: at most 80 characters of it.
pub fn shorten(s: &str) -> String {
    if s.chars().count() <= 80 {
        s.to_string()
    } else {
        let head: String = s.chars().take(77).collect();
        format!("{head}...")
    }
}

/// A value, or a list of values to sweep.
pub fn candidates(def: &ParamDef, v: &toml::Value) -> Result<Vec<Value>, String> {
    match (def.ty, v) {
        // `cores` is a list by nature; a list of lists is a sweep of placements.
        (ParamType::Cores, toml::Value::Array(items))
            if !items.is_empty() && items.iter().all(|i| matches!(i, toml::Value::Array(_))) =>
        {
            items.iter().map(|i| check_scalar(def, i)).collect()
        }
        (ParamType::Cores, _) => Ok(vec![check_scalar(def, v)?]),
        (ParamType::Hosts, toml::Value::Array(items))
            if !items.is_empty() && items.iter().all(|i| matches!(i, toml::Value::Array(_))) =>
        {
            items.iter().map(|i| check_scalar(def, i)).collect()
        }
        (ParamType::Hosts, _) => Ok(vec![check_scalar(def, v)?]),
        (_, toml::Value::Array(items)) => {
            if matches!(def.key, "workload" | "name" | "repetitions") {
                return Err(format!("`{}` takes one value, not a list", def.key));
            }
            if items.is_empty() {
                return Err("an empty sweep".into());
            }
            items.iter().map(|i| check_scalar(def, i)).collect()
        }
        _ => Ok(vec![check_scalar(def, v)?]),
    }
}

/// A typed struct from a point's values: the keys of `defs`, each present (the reader
/// fills in defaults first). An error here is a bug in a workload's table, not the
/// user's: every value was checked against the same table already.
pub fn deserialize<T: serde::de::DeserializeOwned>(
    defs: &[ParamDef],
    values: &std::collections::BTreeMap<String, Value>,
) -> Result<T, String> {
    let mut table = toml::Table::new();
    for d in defs {
        if let Some(v) = values.get(d.key) {
            table.insert(d.key.to_string(), v.to_toml());
        }
    }
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| e.message().trim().to_string())
}
