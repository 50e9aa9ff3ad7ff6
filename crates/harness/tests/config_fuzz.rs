//! The config reader under arbitrary input: any TOML text, and any value in every key the
//! harness knows (numbers at the edges of their types, NaN and infinities, strings that
//! name devices, sweeps, nested lists), never panics, never hangs and never allocates
//! without bound. A counting allocator holds the last promise: the peak of live heap
//! bytes while one config is read stays under a fixed bound.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ipcbench_harness::config::{self, MAX_RUNS};
use ipcbench_harness::spec::COMMON;
use ipcbench_harness::workload::REGISTRY;
use proptest::prelude::*;

/// Counts live heap bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counters only
// observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The most heap one config may take while it is read: the largest matrix (10,000 runs)
/// with a tasks point each, and room to spare; far below what the machine has.
const HEAP_BOUND: usize = 512 << 20;

/// Reads `text` as a config and checks the promises.
fn read(text: &str) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let t0 = Instant::now();
    let result = config::parse("fuzz.toml", text, &[0, 1]);
    let took = t0.elapsed();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    assert!(
        took < Duration::from_secs(20),
        "reading took {took:?}:\n{text}"
    );
    assert!(
        peak < HEAP_BOUND,
        "reading took {peak} bytes of heap:\n{text}"
    );
    match result {
        Ok(runs) => assert!(runs.len() as u64 <= MAX_RUNS),
        Err(errs) => {
            assert!(!errs.is_empty());
            for e in errs {
                let line = e.to_string();
                assert!(line.starts_with("fuzz.toml"), "{line}");
                assert!(line.len() < 2000, "an error of {} bytes", line.len());
            }
        }
    }
}

/// Every key the harness knows.
fn keys() -> Vec<&'static str> {
    let mut k: Vec<&'static str> = COMMON
        .iter()
        .chain(REGISTRY.iter().flat_map(|w| w.params().iter()))
        .map(|d| d.key)
        .collect();
    k.sort_unstable();
    k.dedup();
    k.push("bogus");
    k
}

/// A TOML value, as text: the edges of each type and their lists.
fn value() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        prop_oneof![
            Just(0i64),
            Just(1),
            Just(-1),
            Just(64),
            Just(1 << 31),
            Just(i64::MAX),
            Just(i64::MIN)
        ]
        .prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|x| {
            if x.is_nan() {
                "nan".into()
            } else if x.is_infinite() {
                if x > 0.0 {
                    "inf".into()
                } else {
                    "-inf".into()
                }
            } else {
                format!("{x:e}")
            }
        }),
        prop_oneof![
            Just("1e300"),
            Just("1e-300"),
            Just("-0.0"),
            Just("1e19"),
            Just("0.0001")
        ]
        .prop_map(String::from),
        any::<bool>().prop_map(|b| b.to_string()),
        prop_oneof![
            Just("uds"),
            Just("tcp"),
            Just("shm"),
            Just("pipe"),
            Just("queue"),
            Just("spin"),
            Just("block"),
            Just("latency"),
            Just("throughput"),
            Just("pingpong"),
            Just("vectors"),
            Just("buffer"),
            Just("tasks"),
            Just("/dev/zero"),
            Just("/dev/null"),
            Just("/proc/self/status"),
            Just("/"),
            Just(""),
            Just("transitions"),
            Just("u32"),
            Just("burst"),
            Just("none"),
        ]
        .prop_map(|s| format!("\"{s}\"")),
        "[ -~]{0,40}".prop_map(|s| format!("{:?}", s)),
    ];
    prop_oneof![
        4 => scalar.clone(),
        1 => prop::collection::vec(scalar.clone(), 0..40).prop_map(|v| format!("[{}]", v.join(", "))),
        1 => prop::collection::vec(prop::collection::vec(0u32..4, 0..4), 0..4).prop_map(|v| {
            let inner: Vec<String> = v.iter().map(|c| format!("{c:?}")).collect();
            format!("[{}]", inner.join(", "))
        }),
    ]
}

/// A config of a few experiments, each with a workload and a handful of keys.
fn config() -> impl Strategy<Value = String> {
    let keys = keys();
    let workloads: Vec<&'static str> = REGISTRY.iter().map(|w| w.name()).collect();
    let entry = (prop::sample::select(keys), value());
    let experiment = (
        prop::sample::select(workloads),
        prop::collection::vec(entry, 0..12),
        any::<u8>(),
    )
        .prop_map(|(w, entries, n)| {
            let mut s = format!("[[experiment]]\nname = \"e{n}\"\nworkload = \"{w}\"\n");
            for (k, v) in entries {
                if k != "name" && k != "workload" {
                    s += &format!("{k} = {v}\n");
                }
            }
            s
        });
    let defaults = prop::collection::vec((prop::sample::select(keys_owned()), value()), 0..4)
        .prop_map(|d| {
            let mut s = String::from("[defaults]\n");
            for (k, v) in d {
                s += &format!("{k} = {v}\n");
            }
            s
        });
    (defaults, prop::collection::vec(experiment, 1..4)).prop_map(|(d, e)| d + "\n" + &e.join("\n"))
}

fn keys_owned() -> Vec<&'static str> {
    keys()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_text_is_read_or_refused(text in "\\PC{0,400}") {
        read(&text);
    }

    #[test]
    fn any_value_in_any_key_is_read_or_refused(text in config()) {
        read(&text);
    }
}

/// The largest matrix the cap allows is read within the bounds too, with a tasks point
/// (which reads its data files) in every run.
#[test]
fn the_largest_allowed_matrix_stays_bounded() {
    let counts: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
    read(&format!(
        "[[experiment]]\nname = \"big\"\nworkload = \"tasks\"\ntransport = \"queue\"\nbatch = [{}]\nrepetitions = 100\n",
        counts.join(", ")
    ));
}
