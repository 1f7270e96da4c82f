//! Tree throughput: crabtree's B-link tree against two in-memory peers.
//!
//! Engines, all over the same data set in the same run:
//! * `crabtree`: `raw::BTree` over a `BufferPool` on `MemStorage`, 4096-byte
//!   pages, a pool budget large enough that every page stays resident;
//! * `rwlock-btreemap`: `parking_lot::RwLock<BTreeMap<Vec<u8>, Vec<u8>>>`;
//! * `scc-treeindex`: `scc::TreeIndex<Vec<u8>, Vec<u8>>` (lock-free reads).
//!
//! Data: `CRABTREE_BENCH_KEYS` keys (default 1,000,000) of 16 bytes (a
//! splitmix64 hash of the index, then the index, both big-endian: unique and
//! spread over the key space), 100-byte values, inserted in random order.
//! Every operation copies what it reads out of the engine (`Vec<u8>`), as
//! crabtree must.
//!
//! Workloads (each engine in turn, `CRABTREE_BENCH_SECS` seconds each,
//! default 2; `CRABTREE_BENCH_ROUNDS` rounds, default 3, the median kept).
//! The timed reads cut each round into ten slices with the engines
//! alternating, so the host's drift falls on every engine alike:
//! * `insert x1`: one thread inserts every key, random order, into an empty
//!   structure (once per round, each into a fresh structure; the last build
//!   is the data set for the rest);
//! * `get xN`: N threads look up random keys (N = 1, 2, 8, or the comma
//!   list in `CRABTREE_BENCH_THREADS`);
//! * `get xN + 1 writer`: the same for each N >= 2 while one more thread
//!   keeps replacing the values of random keys (scc has no in-place update:
//!   remove + insert);
//! * `scan100 x1`: one thread reads the 100 entries from a random key on;
//! * crabtree only: `bulk_load` of every entry in key order vs inserting
//!   them one by one in key order, each into a fresh tree.
//!
//! `CRABTREE_BENCH_ENGINES` (comma list of engine names) and
//! `CRABTREE_BENCH_WORKLOADS` (comma list of name prefixes: `insert`, `get`,
//! `scan`, `bulk`) narrow a run, e.g. for a profiler.
//!
//! Run: `cargo bench -p crabtree --bench tree`. Output: one table with ops/s
//! per engine and the ratio crabtree / peer (> 1: crabtree is faster).

use crabtree::io::MemStorage;
use crabtree::raw::{BTree, BufferPool, PoolOptions};
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const KEY_SIZE: usize = 16;
const VALUE_SIZE: usize = 100;
const PAGE_SIZE: usize = 4096;
const SCAN_LEN: usize = 100;
/// Operations between two looks at the stop flag.
const BATCH: u64 = 64;

/// The operations every engine offers, each copying its results out.
trait Engine: Sync {
    fn name(&self) -> &'static str;
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    fn insert(&self, key: &[u8], value: &[u8]);
    /// Replaces the value of an existing key.
    fn update(&self, key: &[u8], value: &[u8]);
    /// Copies up to `count` entries from `start` on; returns how many.
    fn scan(&self, start: &[u8], count: usize) -> usize;
}

struct Crabtree(BTree);

impl Crabtree {
    fn new(keys: usize) -> Crabtree {
        // Room for the data at the worst fill (half-full pages) and then some.
        let bytes = keys * (KEY_SIZE + VALUE_SIZE + 16) * 3 + (64 << 20);
        let opts = PoolOptions { page_size: PAGE_SIZE, pool_bytes: bytes, max_pages: (bytes / PAGE_SIZE) as u64 * 2 };
        let pool = BufferPool::create(Arc::new(MemStorage::new()), opts).expect("pool");
        Crabtree(BTree::create(Arc::new(pool)).expect("tree"))
    }
}

impl Engine for Crabtree {
    fn name(&self) -> &'static str {
        "crabtree"
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(key).expect("crabtree get")
    }
    fn insert(&self, key: &[u8], value: &[u8]) {
        self.0.insert(key, value).expect("crabtree insert");
    }
    fn update(&self, key: &[u8], value: &[u8]) {
        self.0.insert(key, value).expect("crabtree update");
    }
    fn scan(&self, start: &[u8], count: usize) -> usize {
        let mut seen = 0;
        for entry in self.0.seek(start).take(count) {
            let (key, value) = entry.expect("crabtree scan");
            black_box((key, value));
            seen += 1;
        }
        seen
    }
}

#[derive(Default)]
struct LockedMap(RwLock<BTreeMap<Vec<u8>, Vec<u8>>>);

impl Engine for LockedMap {
    fn name(&self) -> &'static str {
        "rwlock-btreemap"
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.read().get(key).cloned()
    }
    fn insert(&self, key: &[u8], value: &[u8]) {
        self.0.write().insert(key.to_vec(), value.to_vec());
    }
    fn update(&self, key: &[u8], value: &[u8]) {
        let value = value.to_vec();
        if let Some(slot) = self.0.write().get_mut(key) {
            *slot = value;
        }
    }
    fn scan(&self, start: &[u8], count: usize) -> usize {
        let map = self.0.read();
        let range = map.range::<[u8], _>((Bound::Included(start), Bound::Unbounded));
        let mut seen = 0;
        for (key, value) in range.take(count) {
            black_box((key.clone(), value.clone()));
            seen += 1;
        }
        seen
    }
}

#[derive(Default)]
struct SccTree(scc::TreeIndex<Vec<u8>, Vec<u8>>);

impl Engine for SccTree {
    fn name(&self) -> &'static str {
        "scc-treeindex"
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.peek_with(key, |_, value| value.clone())
    }
    fn insert(&self, key: &[u8], value: &[u8]) {
        // Like the other engines' upsert: an existing key's value is replaced.
        if let Err((key, value)) = self.0.insert(key.to_vec(), value.to_vec()) {
            self.0.remove(key.as_slice());
            let _ = self.0.insert(key, value);
        }
    }
    fn update(&self, key: &[u8], value: &[u8]) {
        // Values are immutable in a TreeIndex: replace the entry. A reader
        // may miss the key in between (counted as a miss, not an error).
        self.0.remove(key);
        let _ = self.0.insert(key.to_vec(), value.to_vec());
    }
    fn scan(&self, start: &[u8], count: usize) -> usize {
        let guard = scc::ebr::Guard::new();
        let range = self.0.range::<[u8], _>((Bound::Included(start), Bound::Unbounded), &guard);
        let mut seen = 0;
        for (key, value) in range.take(count) {
            black_box((key.clone(), value.clone()));
            seen += 1;
        }
        seen
    }
}

/// Run parameters from the environment.
struct Config {
    keys: usize,
    secs: f64,
    rounds: usize,
    engines: Option<Vec<String>>,
    workloads: Option<Vec<String>>,
    /// Reader thread counts of the `get xN` cells.
    threads: Vec<usize>,
}

fn env_list(name: &str) -> Option<Vec<String>> {
    std::env::var(name).ok().map(|list| list.split(',').map(|s| s.trim().to_string()).collect())
}

fn env_parse<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text.replace('_', "").parse().unwrap_or_else(|_| panic!("{name}={text} does not parse")),
        Err(_) => default,
    }
}

impl Config {
    fn from_env() -> Config {
        Config {
            keys: env_parse("CRABTREE_BENCH_KEYS", 1_000_000),
            secs: env_parse("CRABTREE_BENCH_SECS", 2.0),
            rounds: env_parse("CRABTREE_BENCH_ROUNDS", 3usize).max(1),
            engines: env_list("CRABTREE_BENCH_ENGINES"),
            workloads: env_list("CRABTREE_BENCH_WORKLOADS"),
            threads: env_list("CRABTREE_BENCH_THREADS").map_or_else(
                || vec![1, 2, 8],
                |list| {
                    let parse = |t: &String| t.parse().unwrap_or_else(|_| panic!("CRABTREE_BENCH_THREADS: {t}?"));
                    list.iter().map(parse).collect()
                },
            ),
        }
    }

    fn engine_on(&self, name: &str) -> bool {
        self.engines.as_ref().is_none_or(|list| list.iter().any(|e| e == name))
    }

    fn workload_on(&self, name: &str) -> bool {
        self.workloads.as_ref().is_none_or(|list| list.iter().any(|w| name.starts_with(w.as_str())))
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn make_key(index: u64) -> [u8; KEY_SIZE] {
    let mut key = [0u8; KEY_SIZE];
    key[..8].copy_from_slice(&splitmix64(index).to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

fn make_value(key: &[u8], version: u64) -> Vec<u8> {
    let seed = u64::from_be_bytes(key[..8].try_into().expect("8 bytes")) ^ version;
    (0..VALUE_SIZE).map(|i| splitmix64(seed.wrapping_add(i as u64)) as u8).collect()
}

/// The data set: keys in random (insertion) order, and their first values.
struct Data {
    keys: Vec<[u8; KEY_SIZE]>,
    values: Vec<Vec<u8>>,
}

impl Data {
    fn new(count: usize) -> Data {
        let mut keys: Vec<[u8; KEY_SIZE]> = (0..count as u64).map(make_key).collect();
        fastrand::Rng::with_seed(42).shuffle(&mut keys);
        let values = keys.iter().map(|key| make_value(key, 0)).collect();
        Data { keys, values }
    }
}

/// What one timed workload measured.
#[derive(Clone, Copy, Default)]
struct Measure {
    ops_per_sec: f64,
    writer_ops_per_sec: f64,
    misses: u64,
}

impl Measure {
    /// One measurement from slices of equal length.
    fn mean(slices: &[Measure]) -> Measure {
        let count = slices.len().max(1) as f64;
        Measure {
            ops_per_sec: slices.iter().map(|m| m.ops_per_sec).sum::<f64>() / count,
            writer_ops_per_sec: slices.iter().map(|m| m.writer_ops_per_sec).sum::<f64>() / count,
            misses: slices.iter().map(|m| m.misses).sum(),
        }
    }
}

/// Stretches each round of a timed workload is cut into, the engines
/// alternating.
const SLICES: usize = 10;

/// Seeds differ between runs of a workload, so slices do not replay the
/// same keys.
static RUN_SEED: AtomicU64 = AtomicU64::new(0);

/// Runs `readers` lookup threads (and a writer if asked) for `secs`.
fn run_reads(engine: &dyn Engine, data: &Data, readers: usize, writer: bool, scan: bool, secs: f64) -> Measure {
    let stop = AtomicBool::new(false);
    let ops = AtomicU64::new(0);
    let writes = AtomicU64::new(0);
    let misses = AtomicU64::new(0);
    let n = data.keys.len();
    let run = RUN_SEED.fetch_add(1, Ordering::Relaxed);
    let elapsed = std::thread::scope(|scope| {
        for thread in 0..readers {
            let (stop, ops, misses) = (&stop, &ops, &misses);
            scope.spawn(move || {
                let mut rng = fastrand::Rng::with_seed((run << 16) + 1000 + thread as u64);
                let (mut done, mut missed) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..BATCH {
                        let key = &data.keys[rng.usize(..n)];
                        let hit = if scan {
                            engine.scan(key, SCAN_LEN) > 0
                        } else {
                            black_box(engine.get(key)).is_some_and(|v| v.len() == VALUE_SIZE)
                        };
                        missed += u64::from(!hit);
                    }
                    done += BATCH;
                }
                ops.fetch_add(done, Ordering::Relaxed);
                misses.fetch_add(missed, Ordering::Relaxed);
            });
        }
        if writer {
            let (stop, writes) = (&stop, &writes);
            scope.spawn(move || {
                let mut rng = fastrand::Rng::with_seed((run << 16) + 7);
                let mut done = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = &data.keys[rng.usize(..n)];
                    engine.update(key, &make_value(key, done + 1));
                    done += 1;
                }
                writes.fetch_add(done, Ordering::Relaxed);
            });
        }
        let start = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        start.elapsed()
    });
    // Threads finish their batch after the flag: a few ops past `elapsed`,
    // negligible against `secs`.
    let secs = elapsed.as_secs_f64();
    Measure {
        ops_per_sec: ops.load(Ordering::Relaxed) as f64 / secs,
        writer_ops_per_sec: writes.load(Ordering::Relaxed) as f64 / secs,
        misses: misses.load(Ordering::Relaxed),
    }
}

/// Inserts the whole data set in its random order; returns ops/s.
fn run_inserts(engine: &dyn Engine, data: &Data) -> f64 {
    let start = Instant::now();
    for (key, value) in data.keys.iter().zip(&data.values) {
        engine.insert(key, value);
    }
    data.keys.len() as f64 / start.elapsed().as_secs_f64()
}

/// crabtree only: bulk load vs sequential inserts of the sorted data set.
fn run_bulk(data: &Data) -> (f64, f64) {
    let mut sorted: Vec<(&[u8; KEY_SIZE], &Vec<u8>)> = data.keys.iter().zip(&data.values).collect();
    sorted.sort_unstable();
    let n = sorted.len() as f64;
    let bulk = Crabtree::new(sorted.len());
    let start = Instant::now();
    let loaded = bulk.0.bulk_load(sorted.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))).expect("bulk_load");
    let bulk_rate = n / start.elapsed().as_secs_f64();
    assert_eq!(loaded as usize, sorted.len());
    drop(bulk);
    let seq = Crabtree::new(sorted.len());
    let start = Instant::now();
    for (key, value) in &sorted {
        seq.0.insert(key.as_slice(), value).expect("insert");
    }
    (bulk_rate, n / start.elapsed().as_secs_f64())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One table row: a workload and, per engine (in `names` order), the ops/s
/// of each round (empty when the engine did not run).
struct Row {
    workload: String,
    samples: Vec<Vec<f64>>,
    note: String,
}

fn timed_workloads(threads: &[usize]) -> Vec<(String, usize, bool, bool)> {
    let mut list = Vec::new();
    for &threads in threads {
        list.push((format!("get x{threads}"), threads, false, false));
    }
    for &threads in threads.iter().filter(|&&t| t >= 2) {
        list.push((format!("get x{threads} + 1 writer"), threads, true, false));
    }
    list.push(("scan100 x1".to_string(), 1, false, true));
    list
}

/// Runs every timed workload; in each round the engines alternate in
/// `SLICES` stretches, so a ratio compares measurements taken together.
fn run_timed(config: &Config, engines: &[Option<&dyn Engine>], data: &Data, rows: &mut Vec<Row>) {
    for (name, threads, writer, scan) in timed_workloads(&config.threads) {
        if !config.workload_on(&name) {
            continue;
        }
        let mut samples: Vec<Vec<Measure>> = vec![Vec::new(); engines.len()];
        for _ in 0..config.rounds {
            // The round is cut into slices, the engines alternating, so the
            // host's drift (up to 20% within seconds on a shared virtual
            // machine) falls on every engine alike.
            let mut slices: Vec<Vec<Measure>> = vec![Vec::new(); engines.len()];
            for _ in 0..SLICES {
                for (engine, slices) in engines.iter().zip(&mut slices) {
                    if let Some(engine) = engine {
                        slices.push(run_reads(*engine, data, threads, writer, scan, config.secs / SLICES as f64));
                    }
                }
            }
            for (slices, samples) in slices.iter().zip(&mut samples) {
                if !slices.is_empty() {
                    samples.push(Measure::mean(slices));
                }
            }
        }
        let mut note = String::new();
        for (engine, samples) in engines.iter().zip(&samples) {
            let Some(engine) = engine else { continue };
            let misses: u64 = samples.iter().map(|m| m.misses).sum();
            if writer {
                let w = median(samples.iter().map(|m| m.writer_ops_per_sec).collect());
                note.push_str(&format!("{} writer {:.0}/s; ", engine.name(), w));
            }
            if misses > 0 {
                note.push_str(&format!("{} misses {misses}; ", engine.name()));
            }
        }
        eprintln!("  done: {name}");
        let samples = samples.iter().map(|s| s.iter().map(|m| m.ops_per_sec).collect()).collect();
        rows.push(Row { workload: name, samples, note });
    }
}

/// Median of the per-round ratios ours / peer, with their range when there
/// is more than one round.
fn ratio(ours: &[f64], peer: &[f64]) -> String {
    if ours.is_empty() || ours.len() != peer.len() {
        return "-".to_string();
    }
    let ratios: Vec<f64> = ours.iter().zip(peer).map(|(o, p)| o / p).collect();
    let (low, high) = ratios.iter().fold((f64::MAX, f64::MIN), |(l, h), &r| (l.min(r), h.max(r)));
    let mid = median(ratios.clone());
    if ratios.len() > 1 { format!("{mid:.2} ({low:.2}-{high:.2})") } else { format!("{mid:.2}") }
}

fn print_table(names: &[&str], rows: &[Row]) {
    let mut header = format!("| {:<24} |", "workload (ops/s)");
    for name in names {
        header.push_str(&format!(" {name:>15} |"));
    }
    for name in names.iter().skip(1) {
        header.push_str(&format!(" ct/{name:<15} |"));
    }
    header.push_str(" notes |");
    println!("{header}");
    println!("{}", header.chars().map(|c| if c == '|' { '|' } else { '-' }).collect::<String>());
    for row in rows {
        let mut line = format!("| {:<24} |", row.workload);
        for samples in &row.samples {
            let rate = if samples.is_empty() { "-".to_string() } else { format!("{:.0}", median(samples.clone())) };
            line.push_str(&format!(" {rate:>15} |"));
        }
        for index in 1..names.len() {
            line.push_str(&format!(" {:<18} |", ratio(&row.samples[0], &row.samples[index])));
        }
        line.push_str(&format!(" {} |", row.note.trim_end_matches("; ")));
        println!("{line}");
    }
}

const ENGINE_NAMES: [&str; 3] = ["crabtree", "rwlock-btreemap", "scc-treeindex"];

/// One slot per engine kind; `None` where the engine is not run.
type Built = Vec<Option<Box<dyn Engine>>>;

/// A new, empty engine of kind `index` in `ENGINE_NAMES`.
fn fresh_engine(index: usize, keys: usize) -> Box<dyn Engine> {
    match index {
        0 => Box::new(Crabtree::new(keys)),
        1 => Box::new(LockedMap::default()),
        _ => Box::new(SccTree::default()),
    }
}

/// Builds every enabled engine by random-order inserts, `rounds` times (the
/// engines take turns, each into a fresh structure); the last build is the
/// data set of the other workloads. Returns the engines and insert ops/s.
fn build_engines(config: &Config, data: &Data) -> (Built, Vec<Vec<f64>>) {
    let mut engines: Built = (0..ENGINE_NAMES.len()).map(|_| None).collect();
    let mut samples = vec![Vec::new(); ENGINE_NAMES.len()];
    let rounds = if config.workload_on("insert") { config.rounds } else { 1 };
    for _ in 0..rounds {
        for (index, name) in ENGINE_NAMES.iter().enumerate() {
            if config.engine_on(name) {
                // Free the previous build first: only one copy per engine.
                engines[index] = None;
                let engine = fresh_engine(index, config.keys);
                samples[index].push(run_inserts(&*engine, data));
                engines[index] = Some(engine);
            }
        }
    }
    (engines, samples)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let config = Config::from_env();
    eprintln!("tree bench: {} keys, {} s per workload, {} rounds (median)", config.keys, config.secs, config.rounds);
    let data = Data::new(config.keys);
    let mut rows = Vec::new();
    let (built, inserts) = build_engines(&config, &data);
    if config.workload_on("insert") {
        rows.push(Row { workload: "insert x1 (random order)".into(), samples: inserts, note: String::new() });
    }
    eprintln!("  done: insert");
    let engines: Vec<Option<&dyn Engine>> = built.iter().map(|e| e.as_deref()).collect();
    run_timed(&config, &engines, &data, &mut rows);
    if config.workload_on("bulk") && engines[0].is_some() {
        let (bulk, seq) = run_bulk(&data);
        let note = format!("crabtree sequential inserts {seq:.0}/s; bulk_load / inserts = {:.2}", bulk / seq);
        rows.push(Row { workload: "bulk_load (sorted)".into(), samples: vec![vec![bulk], vec![], vec![]], note });
    }
    print_table(&ENGINE_NAMES, &rows);
}
