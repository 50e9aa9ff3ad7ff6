//! The `tasks` workload's messages and its workers' execution (issue 4, docs/workloads.md §2):
//! a batch of commands run one after another or one thread per command; `io` tasks sleep
//! the command's `wait_s`, `cpu` tasks spin a loop the optimiser cannot remove (2,000,000
//! iterations per command, as the original) or for `cpu_ms` of CPU time; each command's
//! CPU time is measured (the thread's own clock). The roles that use this come next.
//!
//! Messages are small binary frames, checked on decode (they come from other processes):
//! `TASK` (batch id, the commands' responses and waits), `TASK_DONE` (batch id, worker,
//! the sum of responses, per-command CPU ns), and `DIE` (the poison pill).

use std::time::Duration;

use crate::WorkloadError;

/// What a worker runs per command.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum TaskKind {
    /// Sleep the command's `wait_s`.
    Io,
    /// Spin an empty loop of this many iterations (the original: 2,000,000).
    Cpu {
        /// Loop iterations per command.
        iterations: u64,
    },
    /// Spin for this much of the thread's CPU time.
    CpuMs {
        /// Milliseconds of CPU per command.
        ms: f64,
    },
}

/// One command of a batch, as the gateway resolved it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Work {
    /// The response the command returns.
    pub response: i64,
    /// Seconds an `io` task sleeps.
    pub wait_s: f64,
}

/// A message between the tasks roles.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A batch to run.
    Task {
        /// Batch id.
        id: u32,
        /// Its commands.
        work: Vec<Work>,
    },
    /// A batch's result.
    TaskDone {
        /// Batch id.
        id: u32,
        /// The worker that ran it.
        worker: u32,
        /// Sum of the commands' responses.
        result: i64,
        /// CPU time of each command, ns.
        cpu_ns: Vec<u64>,
    },
    /// Stop.
    Die,
    /// A client batch: its id and lines, in order (client to gateway).
    Lines {
        /// Batch id.
        id: u32,
        /// The lines.
        lines: Vec<crate::tasks_data::ClientLine>,
    },
    /// The client has every result (client to gateway): time to send the poison pills.
    JobDone,
}

const TAG_TASK: u8 = 1;
const TAG_DONE: u8 = 2;
const TAG_DIE: u8 = 3;
const TAG_LINES: u8 = 4;
const TAG_JOB_DONE: u8 = 5;
/// Most commands a batch may carry.
pub const MAX_BATCH: usize = 1 << 16;

impl Message {
    /// The frame for this message.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        match self {
            Message::Task { id, work } => {
                b.push(TAG_TASK);
                b.extend_from_slice(&id.to_le_bytes());
                b.extend_from_slice(&(work.len() as u32).to_le_bytes());
                for w in work {
                    b.extend_from_slice(&w.response.to_le_bytes());
                    b.extend_from_slice(&w.wait_s.to_le_bytes());
                }
            }
            Message::TaskDone {
                id,
                worker,
                result,
                cpu_ns,
            } => {
                b.push(TAG_DONE);
                b.extend_from_slice(&id.to_le_bytes());
                b.extend_from_slice(&worker.to_le_bytes());
                b.extend_from_slice(&result.to_le_bytes());
                b.extend_from_slice(&(cpu_ns.len() as u32).to_le_bytes());
                for c in cpu_ns {
                    b.extend_from_slice(&c.to_le_bytes());
                }
            }
            Message::Die => b.push(TAG_DIE),
            Message::Lines { id, lines } => {
                b.push(TAG_LINES);
                b.extend_from_slice(&id.to_le_bytes());
                b.extend_from_slice(&(lines.len() as u32).to_le_bytes());
                for l in lines {
                    b.extend_from_slice(&l.ip.octets());
                    b.push(l.command.code());
                }
            }
            Message::JobDone => b.push(TAG_JOB_DONE),
        }
        b
    }

    /// Decodes a frame; anything malformed is an `Integrity` error, never a panic.
    pub fn decode(f: &[u8]) -> Result<Message, WorkloadError> {
        let bad = |what: &str| WorkloadError::Integrity(format!("tasks message: {what}"));
        let mut r = Reader(f);
        let msg = match r.u8().ok_or_else(|| bad("empty frame"))? {
            TAG_TASK => {
                let id = r.u32().ok_or_else(|| bad("short TASK"))?;
                let n = r.u32().ok_or_else(|| bad("short TASK"))? as usize;
                if n > MAX_BATCH {
                    return Err(bad(&format!("a batch of {n} commands")));
                }
                let mut work = Vec::with_capacity(n);
                for _ in 0..n {
                    let response = r.u64().ok_or_else(|| bad("short TASK"))? as i64;
                    let wait_s = f64::from_bits(r.u64().ok_or_else(|| bad("short TASK"))?);
                    if !(wait_s.is_finite() && (0.0..=3600.0).contains(&wait_s)) {
                        return Err(bad(&format!("wait {wait_s}")));
                    }
                    work.push(Work { response, wait_s });
                }
                Message::Task { id, work }
            }
            TAG_DONE => {
                let id = r.u32().ok_or_else(|| bad("short TASK_DONE"))?;
                let worker = r.u32().ok_or_else(|| bad("short TASK_DONE"))?;
                let result = r.u64().ok_or_else(|| bad("short TASK_DONE"))? as i64;
                let n = r.u32().ok_or_else(|| bad("short TASK_DONE"))? as usize;
                if n > MAX_BATCH {
                    return Err(bad(&format!("{n} CPU times")));
                }
                let cpu_ns = (0..n)
                    .map(|_| r.u64().ok_or_else(|| bad("short TASK_DONE")))
                    .collect::<Result<Vec<_>, _>>()?;
                Message::TaskDone {
                    id,
                    worker,
                    result,
                    cpu_ns,
                }
            }
            TAG_DIE => Message::Die,
            TAG_JOB_DONE => Message::JobDone,
            TAG_LINES => {
                let id = r.u32().ok_or_else(|| bad("short LINES"))?;
                let n = r.u32().ok_or_else(|| bad("short LINES"))? as usize;
                if n > MAX_BATCH {
                    return Err(bad(&format!("a batch of {n} lines")));
                }
                let mut lines = Vec::with_capacity(n);
                for _ in 0..n {
                    let ip = r.take::<4>().ok_or_else(|| bad("short LINES"))?;
                    let code = r.u8().ok_or_else(|| bad("short LINES"))?;
                    let command = crate::tasks_data::Command::from_code(code)
                        .ok_or_else(|| bad(&format!("command code {code}")))?;
                    lines.push(crate::tasks_data::ClientLine {
                        ip: ip.into(),
                        command,
                    });
                }
                Message::Lines { id, lines }
            }
            t => return Err(bad(&format!("unknown kind {t}"))),
        };
        if !r.0.is_empty() {
            return Err(bad(&format!("{} bytes after the message", r.0.len())));
        }
        Ok(msg)
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32))
        .unwrap_or(Duration::ZERO)
}

/// Runs one command; returns its response and the CPU time it took.
pub fn run_command(w: &Work, kind: TaskKind) -> (i64, Duration) {
    let t0 = thread_cpu();
    match kind {
        TaskKind::Io => std::thread::sleep(Duration::from_secs_f64(w.wait_s)),
        TaskKind::Cpu { iterations } => {
            // The loop counter goes through black_box, so the loop cannot be folded away.
            let mut i = 0u64;
            while std::hint::black_box(i) < iterations {
                i += 1;
            }
        }
        TaskKind::CpuMs { ms } => {
            let budget = Duration::from_secs_f64(ms.max(0.0) / 1000.0);
            while thread_cpu() - t0 < budget {
                std::hint::spin_loop();
            }
        }
    }
    (w.response, thread_cpu() - t0)
}

/// Runs a batch, one command after another or one thread per command; the sum of the
/// responses and each command's CPU time, in command order.
pub fn run_batch(work: &[Work], kind: TaskKind, threads: bool) -> (i64, Vec<Duration>) {
    let results: Vec<(i64, Duration)> = if threads {
        std::thread::scope(|s| {
            let handles: Vec<_> = work
                .iter()
                .map(|w| s.spawn(move || run_command(w, kind)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or((0, Duration::ZERO)))
                .collect()
        })
    } else {
        work.iter().map(|w| run_command(w, kind)).collect()
    };
    (
        results.iter().map(|r| r.0).sum(),
        results.into_iter().map(|r| r.1).collect(),
    )
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test, with its message.
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn batch(n: usize, wait_s: f64) -> Vec<Work> {
        (0..n)
            .map(|i| Work {
                response: 1 + (i % 2) as i64,
                wait_s,
            })
            .collect()
    }

    #[test]
    fn messages_round_trip_and_garbage_is_an_error() {
        let msgs = [
            Message::Task {
                id: 7,
                work: batch(16, 1.0),
            },
            Message::TaskDone {
                id: 7,
                worker: 3,
                result: 24,
                cpu_ns: vec![1, 2, 3],
            },
            Message::Die,
            Message::Lines {
                id: 3,
                lines: vec![
                    crate::tasks_data::ClientLine {
                        ip: std::net::Ipv4Addr::new(137, 72, 95, 9),
                        command: crate::tasks_data::Command::Bar,
                    };
                    3
                ],
            },
            Message::JobDone,
        ];
        for m in &msgs {
            assert_eq!(&Message::decode(&m.encode()).unwrap(), m);
        }
        let task = msgs[0].encode();
        for cut in [0, 1, 5, 9, task.len() - 1] {
            assert!(Message::decode(&task[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = task.clone();
        long.push(0);
        assert!(Message::decode(&long).is_err());
        let mut huge = vec![TAG_TASK, 0, 0, 0, 0];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            Message::decode(&huge).is_err(),
            "a claimed length is never allocated"
        );
        assert!(Message::decode(&[9]).is_err());
        let mut lines = msgs[3].encode();
        *lines.last_mut().unwrap() = 7;
        assert!(Message::decode(&lines).is_err(), "an unknown command code");
        let mut nan = Message::Task {
            id: 1,
            work: batch(1, 1.0),
        }
        .encode();
        let at = nan.len() - 8;
        nan[at..].copy_from_slice(&f64::NAN.to_bits().to_le_bytes());
        assert!(Message::decode(&nan).is_err());
    }

    #[test]
    fn batches_sum_their_responses_and_time_each_command() {
        for threads in [false, true] {
            let (sum, cpu) = run_batch(&batch(8, 0.002), TaskKind::Io, threads);
            assert_eq!(sum, 12);
            assert_eq!(cpu.len(), 8);
            let (sum, cpu) = run_batch(
                &batch(4, 0.0),
                TaskKind::Cpu {
                    iterations: 200_000,
                },
                threads,
            );
            assert_eq!(sum, 6);
            assert!(
                cpu.iter().all(|c| *c > Duration::ZERO),
                "the loop ran: {cpu:?}"
            );
            let (_, cpu) = run_batch(&batch(2, 0.0), TaskKind::CpuMs { ms: 3.0 }, threads);
            assert!(
                cpu.iter().all(|c| *c >= Duration::from_millis(3)),
                "{cpu:?}"
            );
        }
    }
}
