//! The `tasks` workload's data files (docs/workloads.md §2), in the original's formats: the
//! client's `ip:command` lines and the gateway's `ip:command:response:wait_s` lines. Every
//! line is checked; an error names the file and the line. A seeded generator makes files
//! of any length with waits drawn uniformly from a range (the original's are all 1 s).
//!
//! This is the first piece of the `tasks` workload (issue 4); the queue transport and the
//! client, gateway and worker roles build on it.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;

use crate::splitmix;

/// A command a client line may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Command {
    /// `foo`
    Foo,
    /// `bar`
    Bar,
}

impl Command {
    fn parse(s: &str) -> Option<Command> {
        match s {
            "foo" => Some(Command::Foo),
            "bar" => Some(Command::Bar),
            _ => None,
        }
    }

    /// Its code in a `LINES` message.
    pub fn code(self) -> u8 {
        match self {
            Command::Foo => 0,
            Command::Bar => 1,
        }
    }

    /// The command with this code.
    pub fn from_code(code: u8) -> Option<Command> {
        match code {
            0 => Some(Command::Foo),
            1 => Some(Command::Bar),
            _ => None,
        }
    }

    /// Its name in the files.
    pub fn name(self) -> &'static str {
        match self {
            Command::Foo => "foo",
            Command::Bar => "bar",
        }
    }
}

/// One client line: a command for an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLine {
    /// The address.
    pub ip: Ipv4Addr,
    /// The command.
    pub command: Command,
}

/// What the gateway knows of an `(ip, command)` pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Answer {
    /// The response a worker returns for it.
    pub response: i64,
    /// Seconds the `io` task sleeps for it.
    pub wait_s: f64,
}

/// A line that is not in the format, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct DataError {
    /// The file (as given).
    pub file: String,
    /// The line, from 1.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty())
}

fn ip_and_command(
    file: &str,
    line: usize,
    ip: &str,
    command: &str,
) -> Result<(Ipv4Addr, Command), DataError> {
    let err = |message: String| DataError {
        file: file.to_string(),
        line,
        message,
    };
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| err(format!("`{ip}` is not an IPv4 address")))?;
    let command = Command::parse(command)
        .ok_or_else(|| err(format!("unknown command `{command}` (known: foo, bar)")))?;
    Ok((ip, command))
}

/// Parses a client file: one `ip:command` per line (blank lines ignored).
pub fn parse_client(file: &str, text: &str) -> Result<Vec<ClientLine>, DataError> {
    lines(text)
        .map(|(n, l)| {
            let parts: Vec<&str> = l.split(':').collect();
            let [ip, command] = parts[..] else {
                return Err(DataError {
                    file: file.to_string(),
                    line: n,
                    message: format!("expected `ip:command`, found `{l}`"),
                });
            };
            let (ip, command) = ip_and_command(file, n, ip, command)?;
            Ok(ClientLine { ip, command })
        })
        .collect()
}

/// Parses a gateway file: one `ip:command:response:wait_s` per line; a pair given twice is
/// an error (which line would win?).
pub fn parse_server(
    file: &str,
    text: &str,
) -> Result<HashMap<(Ipv4Addr, Command), Answer>, DataError> {
    let mut out = HashMap::new();
    for (n, l) in lines(text) {
        let err = |message: String| DataError {
            file: file.to_string(),
            line: n,
            message,
        };
        let parts: Vec<&str> = l.split(':').collect();
        let [ip, command, response, wait] = parts[..] else {
            return Err(err(format!(
                "expected `ip:command:response:wait_s`, found `{l}`"
            )));
        };
        let key = ip_and_command(file, n, ip, command)?;
        let response: i64 = response
            .parse()
            .map_err(|_| err(format!("response `{response}` is not an integer")))?;
        let wait_s: f64 = wait
            .parse()
            .ok()
            .filter(|w: &f64| w.is_finite() && *w >= 0.0 && *w <= 3600.0)
            .ok_or_else(|| {
                err(format!(
                    "wait `{wait}` is not a number of seconds in 0..=3600"
                ))
            })?;
        if out.insert(key, Answer { response, wait_s }).is_some() {
            return Err(err(format!("{ip}:{command} is given twice")));
        }
    }
    Ok(out)
}

/// Generated data: the two files' text.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// `ip:command` lines.
    pub client: String,
    /// `ip:command:response:wait_s` lines.
    pub server: String,
}

impl fmt::Display for Generated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.client, self.server)
    }
}

/// `n` lines for each file, as the original's: addresses 137.72.95.0-255 in turn, `foo`
/// for the first 256 and `bar` for the next, and so on; response 1; the wait drawn
/// uniformly from `[low_s, high_s]` with the seed (`low_s == high_s`: that wait exactly;
/// waits are written with millisecond precision).
pub fn generate(n: usize, low_s: f64, high_s: f64, seed: u64) -> Generated {
    let (mut client, mut server) = (String::new(), String::new());
    for i in 0..n {
        // The original's 512 pairs (137.72.95.x, foo then bar), then the next /24 for
        // each further 512, so every pair is unique (the gateway refuses a pair twice).
        let (block, j) = (i / 512, i % 512);
        let third = 95 + block;
        let ip = Ipv4Addr::new(
            137,
            (72 + third / 256) as u8,
            (third % 256) as u8,
            (j % 256) as u8,
        );
        let command = if j < 256 { "foo" } else { "bar" };
        let u = (splitmix(seed, i as u64) >> 11) as f64 / (1u64 << 53) as f64;
        let wait = low_s + u * (high_s - low_s);
        client.push_str(&format!("{ip}:{command}\n"));
        // Whole seconds print as the original's `1`; others with 3 decimals.
        let wait = if wait.fract() == 0.0 {
            format!("{wait}")
        } else {
            format!("{wait:.3}")
        };
        server.push_str(&format!("{ip}:{command}:1:{wait}\n"));
    }
    Generated { client, server }
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test, with its message.
    #![allow(clippy::unwrap_used)]
    use super::*;

    const CLIENT: &str = include_str!("../../../bench-configs/data/client_512.txt");
    const SERVER: &str = include_str!("../../../bench-configs/data/server_512.txt");

    #[test]
    fn generated_pairs_are_unique_beyond_the_originals_512() {
        let g = generate(5120, 0.5, 1.5, 7);
        let client = parse_client("gen", &g.client).unwrap();
        let server = parse_server("gen", &g.server).unwrap();
        assert_eq!(client.len(), 5120);
        assert_eq!(server.len(), 5120);
        assert!(server.values().all(|a| (0.5..=1.5).contains(&a.wait_s)));
    }

    #[test]
    fn the_shipped_files_are_the_originals_512_pairs_at_one_second() {
        let client = parse_client("client_512.txt", CLIENT).unwrap();
        let server = parse_server("server_512.txt", SERVER).unwrap();
        assert_eq!(client.len(), 512);
        assert_eq!(server.len(), 512);
        let total: i64 = client
            .iter()
            .map(|c| server[&(c.ip, c.command)].response)
            .sum();
        assert_eq!(total, 512, "the client's expected sum of responses");
        assert!(server.values().all(|a| a.wait_s == 1.0));
        assert_eq!(
            generate(512, 1.0, 1.0, 0),
            Generated {
                client: CLIENT.to_string(),
                server: SERVER.to_string()
            },
            "the shipped files are what the generator makes with wait 1"
        );
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let e = parse_client("c.txt", "137.72.95.1:foo\n\n137.72.95.300:foo\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.txt:3: `137.72.95.300` is not an IPv4 address"
        );
        let e = parse_client("c.txt", "137.72.95.1:baz\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.txt:1: unknown command `baz` (known: foo, bar)"
        );
        let e = parse_client("c.txt", "137.72.95.1\n").unwrap_err();
        assert!(
            e.to_string().starts_with("c.txt:1: expected `ip:command`"),
            "{e}"
        );
        let e = parse_server("s.txt", "137.72.95.1:foo:1:1\n137.72.95.1:foo:1:2\n").unwrap_err();
        assert_eq!(e.to_string(), "s.txt:2: 137.72.95.1:foo is given twice");
        let e = parse_server("s.txt", "137.72.95.1:foo:x:1\n").unwrap_err();
        assert_eq!(e.to_string(), "s.txt:1: response `x` is not an integer");
        let e = parse_server("s.txt", "137.72.95.1:foo:1:-1\n").unwrap_err();
        assert!(e.to_string().starts_with("s.txt:1: wait `-1`"), "{e}");
        let e = parse_server("s.txt", "137.72.95.1:foo:1\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("s.txt:1: expected `ip:command:response:wait_s`"),
            "{e}"
        );
    }

    #[test]
    fn generated_waits_stay_in_range_and_follow_the_seed() {
        let g = generate(512, 1.0, 3.0, 7);
        let server = parse_server("gen", &g.server).unwrap();
        assert!(server.values().all(|a| (1.0..=3.0).contains(&a.wait_s)));
        let mean = server.values().map(|a| a.wait_s).sum::<f64>() / 512.0;
        assert!((1.8..2.2).contains(&mean), "{mean}");
        assert_eq!(g, generate(512, 1.0, 3.0, 7));
        assert_ne!(g, generate(512, 1.0, 3.0, 8));
        assert_eq!(parse_client("gen", &g.client).unwrap().len(), 512);
    }
}
