//! The chunk pool across processes: one acquirer and three workers, each a process (this
//! test binary run again), pass 20,000 chunks through a pool of 4; every chunk's bytes are
//! checked by the worker that takes it, and the parent checks that every sequence number
//! was processed exactly once (nothing lost, nothing handed out twice) and that the
//! merged result (under the pool's lock) adds up.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ipcbench_transport::pool::{Pool, PoolRole, PoolShape};

const ENV_ROLE: &str = "IPCBENCH_POOL_ROLE";
const ENV_PATH: &str = "IPCBENCH_POOL_PATH";
const ENV_OUT: &str = "IPCBENCH_POOL_OUT";
const CHUNKS: u64 = if cfg!(debug_assertions) {
    5_000
} else {
    20_000
};
const WORKERS: u32 = 3;

fn fill(buf: &mut [u8], seq: u64) {
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..].fill((seq % 251) as u8);
}

fn check(buf: &[u8]) -> u64 {
    let seq = u64::from_le_bytes(buf[..8].try_into().unwrap());
    assert!(
        buf[8..].iter().all(|b| *b == (seq % 251) as u8),
        "chunk {seq} torn or overwritten"
    );
    seq
}

fn run_role(role: &str, path: &Path, out: &Path) {
    let pool = Pool::open(path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    if role == "acquirer" {
        pool.register(PoolRole::Acquirer).unwrap();
        for seq in 0..CHUNKS {
            let mut c = pool.take_free(deadline).unwrap();
            fill(c.bytes_mut(), seq);
            c.publish(seq).unwrap();
        }
        pool.end().unwrap();
        return;
    }
    let w: u32 = role.trim_start_matches("worker").parse().unwrap();
    pool.register(PoolRole::Worker(w)).unwrap();
    let mut seqs = Vec::new();
    while let Some(c) = pool.take_ready(deadline).unwrap() {
        let seq = check(c.bytes());
        assert_eq!(seq, c.seq(), "the sequence word travels with the chunk");
        c.release().unwrap();
        let g = pool.lock_result(deadline).unwrap();
        let (sum, count) = (&g.words()[0], &g.words()[1]);
        sum.store(sum.load(Ordering::Relaxed) + seq, Ordering::Relaxed);
        count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        drop(g);
        seqs.push(seq);
    }
    let mut f = std::fs::File::create(out).unwrap();
    for s in seqs {
        writeln!(f, "{s}").unwrap();
    }
}

/// Entry point of a child role; a no-op when run as an ordinary test.
#[test]
fn pool_role_entry() {
    let (Ok(role), Ok(path), Ok(out)) = (
        std::env::var(ENV_ROLE),
        std::env::var(ENV_PATH),
        std::env::var(ENV_OUT),
    ) else {
        return;
    };
    run_role(&role, Path::new(&path), Path::new(&out));
}

#[test]
fn every_chunk_once_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool");
    let pool = Pool::create(
        &path,
        PoolShape {
            n_chunks: 4,
            chunk_bytes: 4096,
            result_words: 2,
            workers: WORKERS,
        },
    )
    .unwrap();
    let roles: Vec<String> = std::iter::once("acquirer".to_string())
        .chain((0..WORKERS).map(|w| format!("worker{w}")))
        .collect();
    let outs: Vec<PathBuf> = roles
        .iter()
        .map(|r| dir.path().join(format!("{r}.out")))
        .collect();
    let mut children = Kids(
        roles
            .iter()
            .zip(&outs)
            .map(|(role, out)| {
                Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--exact",
                        "pool_role_entry",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(ENV_ROLE, role)
                    .env(ENV_PATH, &path)
                    .env(ENV_OUT, out)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    // Bounded: kill everything still running after two minutes.
    let deadline = Instant::now() + Duration::from_secs(120);
    for (role, child) in roles.iter().zip(children.0.iter_mut()) {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                if !status.success() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    panic!("{role} failed: {status}\n{err}");
                }
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{role} did not finish within two minutes"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let mut seen: Vec<u64> = outs[1..]
        .iter()
        .flat_map(|o| {
            std::fs::read_to_string(o)
                .unwrap()
                .lines()
                .map(|l| l.parse::<u64>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen.len() as u64, CHUNKS, "chunks processed");
    assert_eq!(seen, (0..CHUNKS).collect::<Vec<_>>(), "each exactly once");
    let r = pool.result_unlocked();
    assert_eq!(r[0].load(Ordering::Relaxed), CHUNKS * (CHUNKS - 1) / 2);
    assert_eq!(r[1].load(Ordering::Relaxed), CHUNKS);
}

/// Kills every role still running when the test ends (a failed assertion included).
struct Kids(Vec<std::process::Child>);
impl Drop for Kids {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
