//! What the parent and a role process say to each other: JSON lines. The parent writes
//! the [`RoleJob`] as the first line of the role's stdin and later `go`; the role writes
//! [`RoleEvent`]s on its stdout.

use std::path::PathBuf;

use anyhow::{anyhow, Context};
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use ipcbench_transport::Endpoint;
use ipcbench_workloads::buffer::BufferParams;
use ipcbench_workloads::latency::LatencyParams;
use ipcbench_workloads::pingpong::PingpongParams;
use ipcbench_workloads::throughput::ThroughputParams;
use ipcbench_workloads::vectors::VectorsParams;
use ipcbench_workloads::Measurement;
use serde::{Deserialize, Serialize};

/// The line that releases every role at once (the start barrier).
pub const GO: &str = "go";

/// What one role process is to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleJob {
    /// The run it belongs to.
    pub run_id: String,
    /// Role name (`client`, `server`, ...).
    pub role: String,
    /// Core to pin to.
    pub core: Option<usize>,
    /// The harness's pid: the role exits if its parent is gone.
    pub parent_pid: i32,
    /// Bound on connecting and on waiting for `go`.
    pub setup_timeout_ms: u64,
    /// The work.
    pub task: RoleTask,
}

/// The work of one role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum RoleTask {
    /// `latency`: the client measures, the server echoes.
    Latency {
        /// Where to meet the peer.
        endpoint: Endpoint,
        /// Listen (side A) or connect (side B).
        listen: bool,
        /// Client (measures) or server (echoes).
        client: bool,
        /// Workload parameters.
        params: LatencyParams,
        /// Bare baseline instead of the framed transport.
        bare: bool,
    },
    /// `throughput`: the sender streams, the receiver checks.
    Throughput {
        /// Where to meet the peer.
        endpoint: Endpoint,
        /// Listen (side A) or connect (side B).
        listen: bool,
        /// Sender or receiver.
        sender: bool,
        /// Workload parameters.
        params: ThroughputParams,
        /// Bare baseline instead of the framed transport.
        bare: bool,
    },
    /// `pingpong`: one agent painting the canvas in turn with its peer.
    Pingpong {
        /// Where to meet the peer.
        endpoint: Endpoint,
        /// Listen (side A) or connect (side B).
        listen: bool,
        /// Ping (paints the even iterations, measures) or pong.
        ping: bool,
        /// The canvas segment the parent created.
        canvas: PathBuf,
        /// Image size and seed.
        params: PingpongParams,
    },
    /// `vectors`: the producer streams, the consumer checks and analyses.
    Vectors {
        /// Where to meet the peer.
        endpoint: Endpoint,
        /// Listen (side A) or connect (side B).
        listen: bool,
        /// Producer or consumer.
        producer: bool,
        /// Vector shape, rate, noise.
        params: VectorsParams,
        /// Where the consumer writes `<run_id>.batches.csv` and `<run_id>.timeline.csv`.
        out_dir: PathBuf,
    },
    /// `buffer`: the acquirer or one worker, over the zero-copy pool or by copy.
    Buffer {
        /// Copy mode: the endpoints, one per worker (the acquirer listens on all; worker
        /// `w` gets the resolved endpoint `w`); empty for the zero-copy pool.
        endpoints: Vec<Endpoint>,
        /// `None` for the acquirer, `Some(w)` for worker `w`.
        worker: Option<u32>,
        /// The pool segment the parent created (the chunks, or only the result in copy
        /// mode).
        pool: PathBuf,
        /// Data shape, kind, chunk count.
        params: BufferParams,
        /// Bound on every wait, from the start barrier.
        timeout_ms: u64,
    },
    /// `tasks`: the client, the gateway, or a worker the gateway started.
    Tasks {
        /// Which role.
        role: TasksRole,
        /// The client-gateway link (the client listens on it).
        link: Endpoint,
        /// Result slots, one per worker (the client listens on them; a worker gets its
        /// own only).
        results: Vec<Endpoint>,
        /// Task slots, one per worker (the gateway listens on them; a worker gets its
        /// own only).
        tasks: Vec<Endpoint>,
        /// Cores the workers take in turn (the gateway's list).
        worker_cores: Vec<usize>,
        /// The client's lines (client) or the table (gateway), as file text.
        data: String,
        /// The data's file name, for messages.
        data_name: String,
        /// Batching, workers, kind, queue policy, faults.
        params: ipcbench_workloads::tasks::TasksParams,
    },
    /// The hardware floor: a cache-line ping-pong over a shared segment.
    Floor {
        /// The segment the parent created.
        segment: PathBuf,
        /// Ping (measures) or pong.
        ping: bool,
        /// Round trips measured.
        iterations: u64,
        /// Both roles on one core: yield at every miss.
        same_core: bool,
        /// Only the round trips (taken again before each run): no clock cost, stall
        /// loop or memcpy.
        #[serde(default)]
        quick: bool,
    },
}

/// Which `tasks` role a process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TasksRole {
    /// Pushes batches, pulls results.
    Client,
    /// Looks lines up, starts workers, hands out batches.
    Gateway,
    /// Runs batches; started by the gateway on slot `slot`.
    Worker {
        /// Its slot (and worker id).
        slot: u32,
    },
}

impl RoleTask {
    /// Points a connecting role at what the listening role resolved (`resolved[0]`, or
    /// for a buffer worker `w`, `resolved[w]`).
    pub fn set_resolved(&mut self, resolved: &[Endpoint]) {
        if let RoleTask::Buffer {
            endpoints,
            worker: Some(w),
            ..
        } = self
        {
            if let Some(ep) = resolved.get(*w as usize) {
                *endpoints = vec![ep.clone()];
            }
            return;
        }
        if let RoleTask::Tasks {
            role: TasksRole::Gateway,
            link,
            results,
            ..
        } = self
        {
            // The client listened on the link and on every result slot.
            if let Some((first, rest)) = resolved.split_first() {
                *link = first.clone();
                *results = rest.to_vec();
            }
            return;
        }
        if let (Some(slot), Some(ep)) = (self.endpoint_mut(), resolved.first()) {
            *slot = ep.clone();
        }
    }

    /// The endpoint, for tasks that use one transport.
    pub fn endpoint_mut(&mut self) -> Option<&mut Endpoint> {
        match self {
            RoleTask::Latency { endpoint, .. }
            | RoleTask::Throughput { endpoint, .. }
            | RoleTask::Pingpong { endpoint, .. }
            | RoleTask::Vectors { endpoint, .. } => Some(endpoint),
            RoleTask::Floor { .. } | RoleTask::Buffer { .. } | RoleTask::Tasks { .. } => None,
        }
    }
}

/// What a role reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RoleEvent {
    /// Set up and pinned; a listening role gives the endpoint the others must use.
    Ready {
        /// Resolved endpoint (listening roles only).
        endpoint: Option<Endpoint>,
        /// Further resolved endpoints, for a role that listens for several peers (the
        /// `buffer` acquirer in copy mode: one per worker, in worker order).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        more: Vec<Endpoint>,
    },
    /// Connected to its peer(s); waiting for `go`.
    Connected,
    /// Finished, with what it measured.
    Done(RoleReport),
    /// Failed, with why.
    Failed {
        /// One line on what went wrong.
        message: String,
    },
}

/// A [`Measurement`] in transit.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoleReport {
    /// Messages measured.
    pub count: u64,
    /// Payload bytes measured.
    pub bytes: u64,
    /// Measured wall time, ns.
    pub duration_ns: u64,
    /// HdrHistogram V2 encoding, hex.
    pub histogram: Option<String>,
    /// Workload-specific figures.
    pub metrics: Vec<(String, f64)>,
}

impl RoleReport {
    /// Packs a measurement.
    pub fn from_measurement(m: &Measurement) -> anyhow::Result<RoleReport> {
        let histogram = match &m.histogram {
            Some(h) => {
                let mut bytes = Vec::new();
                V2Serializer::new()
                    .serialize(h, &mut bytes)
                    .map_err(|e| anyhow!("encoding histogram: {e:?}"))?;
                Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
            }
            None => None,
        };
        Ok(RoleReport {
            count: m.count,
            bytes: m.bytes,
            duration_ns: m.duration.as_nanos() as u64,
            histogram,
            metrics: m.metrics.clone(),
        })
    }

    /// Unpacks the histogram, if there is one.
    pub fn histogram(&self) -> anyhow::Result<Option<Histogram<u64>>> {
        let Some(hex) = &self.histogram else {
            return Ok(None);
        };
        if hex.len() % 2 != 0 {
            return Err(anyhow!("histogram encoding has odd length"));
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .context("histogram encoding is not hex")?;
        let h = Deserializer::new()
            .deserialize(&mut &bytes[..])
            .map_err(|e| anyhow!("decoding histogram: {e:?}"))?;
        Ok(Some(h))
    }

    /// A named metric.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_survives_the_trip() {
        let mut h = ipcbench_workloads::new_histogram();
        for v in [100u64, 2_000, 35_000, 35_000, 9_000_000] {
            h.record(v).unwrap();
        }
        let m = Measurement {
            histogram: Some(h.clone()),
            count: 5,
            ..Default::default()
        };
        let report = RoleReport::from_measurement(&m).unwrap();
        let json = serde_json::to_string(&RoleEvent::Done(report)).unwrap();
        let RoleEvent::Done(back) = serde_json::from_str(&json).unwrap() else {
            panic!("wrong event")
        };
        let h2 = back.histogram().unwrap().unwrap();
        assert_eq!(h2.len(), 5);
        assert_eq!(h2.value_at_quantile(0.5), h.value_at_quantile(0.5));
        assert_eq!(h2.max(), h.max());
    }

    #[test]
    fn garbage_histogram_is_an_error_not_a_panic() {
        let r = RoleReport {
            histogram: Some("zz1".into()),
            ..Default::default()
        };
        assert!(r.histogram().is_err());
        let r = RoleReport {
            histogram: Some("00ff".into()),
            ..Default::default()
        };
        assert!(r.histogram().is_err());
    }
}
