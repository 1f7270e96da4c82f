//! Transaction throughput and the cost of MVCC on reads.
//!
//! Workloads, each for `CRABTREE_BENCH_SECS` seconds (default 1), over
//! `CRABTREE_BENCH_KEYS` keys (default 100,000) of 16 bytes with 100-byte
//! values, a database file in a temporary directory (4 KiB pages, a memory
//! budget that holds it all):
//! * `commit wN xT (mode)`: T threads (1, 2, 8, 32, or the comma list in
//!   `CRABTREE_BENCH_THREADS`) each commit transactions
//!   of N random puts (N = 1, 10), under `Immediate` (`commit`) and
//!   `Eventual` (`commit_eventual`, tickets dropped); commits/s, conflicts
//!   retried.
//! * `get`: one thread, random point reads through one `Snapshot` vs
//!   `raw::BTree::get` on a tree holding the same keys and values (one
//!   version each); reads/s and the ratio (target >= 0.8). A third line
//!   reads a raw tree holding the entries as the MVCC layer stores them
//!   (27-byte keys, tagged values): the layer's own cost is the gap between
//!   that line and `Snapshot::get`, the rest is the stored layout.
//! * `get xR + writer`: R (1, 2) snapshot readers with and without one
//!   thread committing single-key updates meanwhile, `Immediate` (mostly
//!   waiting for fsync) or `Eventual` (busy) (target: at most 30%
//!   slower). One reader + the writer fits two cores; two readers + the
//!   writer oversubscribe a 2-core machine.
//! * `update x2 (+ long snapshot)`: two threads committing single-key
//!   updates, with and without one snapshot held for the whole run
//!   (target >= 0.7x; two databases, slices alternating); the tree's entry
//!   count at the end shows the versions the snapshot pins.
//!
//! Read and update workloads alternate short slices
//! (`CRABTREE_BENCH_ROUNDS`, default 7, slices of `CRABTREE_BENCH_SECS /
//! rounds`) and report medians; reads per second of wall time and per
//! CPU-second of the reading threads (the second is not diluted when other
//! processes, or the writer's and the engine's background threads, take
//! the cores).
//!
//! Run: `cargo bench -p crabtree --bench txn`. Numbers from a noisy shared
//! VM are indicative only; compare ratios within one run.

use crabtree::io::MemStorage;
use crabtree::raw::{BTree, BufferPool, PoolOptions};
use crabtree::{Db, Durability, Error, Options};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const VALUE_SIZE: usize = 100;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn key(i: u64) -> [u8; 16] {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&(z ^ (z >> 31)).to_be_bytes());
    out[8..].copy_from_slice(&i.to_be_bytes());
    out
}

/// A throughput: operations per second of wall time, and per second of CPU
/// time of the threads that did them (on a shared machine the second is
/// not diluted by other processes taking the cores; it still includes
/// cache and memory effects and any contention between our own threads).
#[derive(Clone, Copy)]
struct Rate {
    wall: f64,
    cpu: f64,
}

/// CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid, writable timespec that outlives the call,
    // which only writes it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Runs `work` on `threads` threads for `secs`; each call does some
/// operations and returns how many.
fn run(threads: usize, secs: f64, work: impl Fn(usize, &mut fastrand::Rng) -> u64 + Sync) -> Rate {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let cpu_nanos = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (stop, done, cpu_nanos, work) = (&stop, &done, &cpu_nanos, &work);
            scope.spawn(move || {
                let cpu_start = thread_cpu();
                let mut rng = fastrand::Rng::with_seed(t as u64 + 1);
                let mut mine = 0;
                while !stop.load(Ordering::Relaxed) {
                    mine += work(t, &mut rng);
                }
                done.fetch_add(mine, Ordering::Relaxed);
                cpu_nanos.fetch_add((thread_cpu() - cpu_start).as_nanos() as u64, Ordering::Relaxed);
            });
        }
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
    });
    let ops = done.load(Ordering::Relaxed) as f64;
    let cpu = cpu_nanos.load(Ordering::Relaxed) as f64 / 1e9;
    Rate { wall: ops / start.elapsed().as_secs_f64(), cpu: if cpu > 0.0 { ops / cpu } else { 0.0 } }
}

/// The median of each field over rounds.
fn median(rates: &[Rate]) -> Rate {
    let mid = |field: fn(&Rate) -> f64| {
        let mut v: Vec<f64> = rates.iter().map(field).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    Rate { wall: mid(|r| r.wall), cpu: mid(|r| r.cpu) }
}

fn open(dir: &tempfile::TempDir, name: &str, durability: Durability) -> Db {
    let options = Options { durability, memory_budget: 512 << 20, ..Options::default() };
    Db::open_with(dir.path().join(name), options).expect("open")
}

fn load(db: &Db, keys: u64) {
    let value = [7u8; VALUE_SIZE];
    for chunk in (0..keys).collect::<Vec<_>>().chunks(1000) {
        db.update(|tx| {
            for &i in chunk {
                tx.put(&key(i), &value)?;
            }
            Ok(())
        })
        .expect("load");
    }
}

/// One transaction of `writes` random puts; retried on conflict.
fn commit_one(
    db: &Db,
    rng: &mut fastrand::Rng,
    keys: u64,
    writes: usize,
    eventual: bool,
    conflicts: &AtomicU64,
) -> u64 {
    let value = [rng.u8(..); VALUE_SIZE];
    loop {
        let mut tx = db.begin();
        for _ in 0..writes {
            tx.put(&key(rng.u64(0..keys)), &value).expect("put");
        }
        let outcome = if eventual { tx.commit_eventual().map(drop) } else { tx.commit() };
        match outcome {
            Ok(()) => return 1,
            Err(Error::Conflict) => {
                conflicts.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => panic!("commit: {e}"),
        }
    }
}

/// Whether `CRABTREE_BENCH_WORKLOADS` (comma list of prefixes: `commit`,
/// `get`, `update`) selects `workload` (all when unset).
fn wanted(workload: &str) -> bool {
    std::env::var("CRABTREE_BENCH_WORKLOADS")
        .map_or(true, |list| list.split(',').any(|w| workload.starts_with(w.trim())))
}

fn main() {
    let secs = env("CRABTREE_BENCH_SECS", 1) as f64;
    let keys = env("CRABTREE_BENCH_KEYS", 100_000);
    let dir = tempfile::tempdir().expect("tempdir");
    println!(
        "crabtree txn bench: {keys} keys, {secs} s per workload, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let commit_threads: Vec<usize> = std::env::var("CRABTREE_BENCH_THREADS").map_or_else(
        |_| vec![1, 2, 8, 32],
        |list| list.split(',').map(|t| t.trim().parse().expect("CRABTREE_BENCH_THREADS: thread counts")).collect(),
    );
    let modes = if wanted("commit") {
        &[("Immediate", Durability::Immediate, false), ("Eventual", Durability::Eventual, true)][..]
    } else {
        &[]
    };
    for &(mode, durability, eventual) in modes {
        for writes in [1usize, 10] {
            for &threads in &commit_threads {
                let db = open(&dir, &format!("commit-{mode}-{writes}-{threads}.crab"), durability);
                load(&db, keys);
                let conflicts = AtomicU64::new(0);
                let rate = run(threads, secs, |_, rng| commit_one(&db, rng, keys, writes, eventual, &conflicts)).wall;
                println!(
                    "commit w{writes:<2} x{threads:<2} ({mode:9}): {rate:>10.0} commits/s {:>10.0} writes/s, {} conflicts retried",
                    rate * writes as f64,
                    conflicts.load(Ordering::Relaxed)
                );
            }
        }
    }

    let rounds = env("CRABTREE_BENCH_ROUNDS", 7).max(1) as usize;
    if wanted("get") {
        reads(&dir, keys, secs, rounds);
    }
    if wanted("update") {
        updates(&dir, keys, secs, rounds);
    }
}

/// Snapshot point reads vs the raw tree, and readers with and without a writer.
fn reads(dir: &tempfile::TempDir, keys: u64, secs: f64, rounds: usize) {
    let db = open(dir, "reads.crab", Durability::Immediate);
    load(&db, keys);
    let pool = BufferPool::create(
        Arc::new(MemStorage::new()),
        PoolOptions { pool_bytes: 512 << 20, ..PoolOptions::default() },
    )
    .expect("pool");
    let tree = BTree::create(Arc::new(pool)).expect("tree");
    for i in 0..keys {
        tree.insert(&key(i), &[7u8; VALUE_SIZE]).expect("insert");
    }
    // The same entries as the MVCC layer stores them (keyspace prefix,
    // group-encoded key, inverted timestamp; tagged value), in a raw tree:
    // separates the cost of the longer keys from the cost of the layer.
    let shaped = |i: u64| {
        let k = key(i);
        let mut out = vec![1];
        for byte in k {
            out.push(byte);
            if byte == 0 {
                out.push(0xFF);
            }
        }
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(u64::MAX - 1).to_be_bytes());
        out
    };
    let pool = BufferPool::create(
        Arc::new(MemStorage::new()),
        PoolOptions { pool_bytes: 512 << 20, ..PoolOptions::default() },
    )
    .expect("pool");
    let shaped_tree = BTree::create(Arc::new(pool)).expect("tree");
    for i in 0..keys {
        shaped_tree.insert(&shaped(i), &[7u8; VALUE_SIZE + 1]).expect("insert");
    }
    let snap = db.snapshot();
    // Alternate short slices of the three, `rounds` rounds, and keep each
    // one's median: a shared machine's load drifts within seconds.
    let slice = secs / rounds as f64;
    let (mut raw, mut raw_shaped, mut mvcc) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        raw.push(run(1, slice, |_, rng| {
            for _ in 0..64 {
                black_box(tree.get(&key(rng.u64(0..keys))).expect("get"));
            }
            64
        }));
        raw_shaped.push(run(1, slice, |_, rng| {
            for _ in 0..64 {
                black_box(shaped_tree.get(&shaped(rng.u64(0..keys))).expect("get"));
            }
            64
        }));
        mvcc.push(run(1, slice, |_, rng| {
            for _ in 0..64 {
                black_box(snap.get(&key(rng.u64(0..keys))).expect("get"));
            }
            64
        }));
    }
    let (raw, raw_shaped, mvcc) = (median(&raw), median(&raw_shaped), median(&mvcc));
    println!(
        "(reads/s of wall time, and per CPU-second of the reading threads; medians of {rounds} alternating slices)"
    );
    println!("get x1 raw BTree::get : {:>10.0} reads/s {:>10.0} /cpu-s", raw.wall, raw.cpu);
    println!(
        "get x1 raw, MVCC keys : {:>10.0} reads/s {:>10.0} /cpu-s  ratio {:.2} {:.2} (keys as stored: 27 bytes)",
        raw_shaped.wall,
        raw_shaped.cpu,
        raw_shaped.wall / raw.wall,
        raw_shaped.cpu / raw.cpu
    );
    println!(
        "get x1 Snapshot::get  : {:>10.0} reads/s {:>10.0} /cpu-s  ratio {:.2} {:.2}",
        mvcc.wall,
        mvcc.cpu,
        mvcc.wall / raw.wall,
        mvcc.cpu / raw.cpu
    );
    drop(snap);

    // Readers with and without a writer committing single-key updates
    // (`Immediate`). One reader + the writer is two threads on two cores;
    // two readers + the writer oversubscribe a 2-core machine, so there the
    // wall-time ratio mostly measures CPU sharing and the per-CPU-second
    // ratio the interference itself.
    let readers = |threads: usize, writer: Option<bool>| {
        let stop = AtomicBool::new(false);
        let commits = AtomicU64::new(0);
        let rate = std::thread::scope(|scope| {
            if let Some(eventual) = writer {
                let (db, commits, stop) = (&db, &commits, &stop);
                scope.spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(99);
                    let conflicts = AtomicU64::new(0);
                    while !stop.load(Ordering::Relaxed) {
                        let done = commit_one(db, &mut rng, keys, 1, eventual, &conflicts);
                        commits.fetch_add(done, Ordering::Relaxed);
                    }
                });
            }
            let rate = run(threads, slice, |_, rng| {
                let snap = db.snapshot();
                for _ in 0..64 {
                    black_box(snap.get(&key(rng.u64(0..keys))).expect("get"));
                }
                64
            });
            stop.store(true, Ordering::Relaxed);
            rate
        });
        (rate, commits.load(Ordering::Relaxed) as f64 / slice)
    };
    for threads in [1, 2] {
        // Rounds alternate: readers alone, with an `Immediate` writer
        // (mostly waiting for fsync), with an `Eventual` one (busy).
        let mut alone = Vec::new();
        let mut with = [(Vec::new(), Vec::new()), (Vec::new(), Vec::new())];
        for _ in 0..rounds {
            alone.push(readers(threads, None).0);
            for (eventual, (rates, writes)) in [false, true].into_iter().zip(with.iter_mut()) {
                let (rate, commits) = readers(threads, Some(eventual));
                rates.push(rate);
                writes.push(Rate { wall: commits, cpu: 0.0 });
            }
        }
        let alone = median(&alone);
        println!("get x{threads}               : {:>10.0} reads/s {:>10.0} /cpu-s", alone.wall, alone.cpu);
        for (mode, (rates, writes)) in ["Immediate", "Eventual"].into_iter().zip(with) {
            let (rate, writes) = (median(&rates), median(&writes));
            println!(
                "get x{threads} + 1 writer    : {:>10.0} reads/s {:>10.0} /cpu-s  ratio {:.2} {:.2} (writer {mode}: {:.0} commits/s)",
                rate.wall,
                rate.cpu,
                rate.wall / alone.wall,
                rate.cpu / alone.cpu,
                writes.wall
            );
        }
    }
}

/// Updates with and without a snapshot held for the whole run: two
/// databases, alternating slices (`rounds`), medians.
fn updates(dir: &tempfile::TempDir, keys: u64, secs: f64, rounds: usize) {
    let free_db = open(dir, "updates-free.crab", Durability::Immediate);
    load(&free_db, keys);
    let pinned_db = open(dir, "updates-pinned.crab", Durability::Immediate);
    load(&pinned_db, keys);
    let held = pinned_db.snapshot();
    let slice = secs / rounds as f64;
    let (mut free, mut pinned) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (db, rates) in [(&free_db, &mut free), (&pinned_db, &mut pinned)] {
            let conflicts = AtomicU64::new(0);
            rates.push(run(2, slice, |_, rng| commit_one(db, rng, keys, 1, false, &conflicts)));
        }
    }
    let (free, pinned) = (median(&free).wall, median(&pinned).wall);
    let (free_entries, pinned_entries) = (free_db.stats().tree_entries, pinned_db.stats().tree_entries);
    drop(held);
    println!("update x2            : {free:>10.0} commits/s, {free_entries} versions at the end");
    println!(
        "update x2 + snapshot : {pinned:>10.0} commits/s, {pinned_entries} versions at the end  ratio {:.2}",
        pinned / free
    );
}
