//! Durable writes through the store (WAL wired into the tree), in one run:
//!
//! * **raw**: one thread loops a 4 KiB `pwrite` at offset 0 of a
//!   preallocated file in the log directory + `fdatasync`: what one log
//!   sync costs at best on this disk. The shared disk's rate drifts by 10x
//!   within a minute, so each durable measurement is cut into
//!   `CRABTREE_BENCH_SLICES` slices alternating with slices of the raw loop
//!   and its ratio is to that interleaved raw rate (as `benches/wal.rs`).
//! * **durable xN** (N = 1, 4, 16, 32, 64): N threads loop
//!   `Store::put_durable` (`Immediate`: return once durable) of one 100-byte
//!   value under a random key of the thread's own 1,000 (pre-loaded, so
//!   these are overwrites). Reported: writes/s, ratio to raw, commits per
//!   fsync (`WalStats::syncs`), log bytes per write.
//! * **non-durable inserts**, 1 thread, spread keys, 100-byte values, into
//!   an empty tree: a plain `BTree` on a `BufferPool` with no log, against
//!   the store with `put` (Immediate mode, nobody waits) and with
//!   `put_durable` in `Eventual` mode (returns at once, synced within the
//!   flush delay). Same pool size, same kind of file; alternated per
//!   round, the order rotating.
//! * **recovery**: at least `CRABTREE_BENCH_RECOVERY_MB` (default 1024) of
//!   log written with checkpoints off, made durable, the data file and log
//!   copied while the store is open (what a crash leaves: nothing since the
//!   open was checkpointed), and the copy opened: MB of log replayed per
//!   second (`RecoveryReport::log_bytes / duration`; also over the whole
//!   `open`, which adds the survey pass over the log and a checkpoint).
//!   The copied files are in the page cache (no root to drop it), so this
//!   is replay speed, not disk read speed.
//!
//! * **reopen**: `CRABTREE_BENCH_REOPEN_KEYS` (default 2,000,000) keys of
//!   100-byte values loaded and checkpointed, 1,000 more writes made
//!   durable, the files copied while open (a crash image with a short log),
//!   and the copy opened: seconds until `open` returns (the redo) and until
//!   the background part (repair and entry count over the whole tree)
//!   ends (which is what an open that waited for them, as before, took);
//!   their ratio shows what an open no longer waits for.
//!
//! Sizes: `CRABTREE_BENCH_QUICK=1` shrinks everything for a smoke run.
//! Otherwise `CRABTREE_BENCH_SECS` (default 3) per durable measurement,
//! `CRABTREE_BENCH_SLICES` (6), `CRABTREE_BENCH_ROUNDS` (3, medians kept),
//! `CRABTREE_BENCH_WRITERS` (comma list), `CRABTREE_BENCH_INSERTS`
//! (500,000), `CRABTREE_BENCH_RECOVERY_MB` (1024), `CRABTREE_BENCH_DIR`
//! (default a temp dir under the system temp directory),
//! `CRABTREE_BENCH_PHASES` (comma list of `durable`, `insert`, `recovery`,
//! `reopen`; default all), `CRABTREE_BENCH_INSERTERS` (comma list of
//! `plain`, `put`, `eventual`; default all: one alone is for a profile).
//! Run: `cargo bench -p crabtree --bench durable`.

use crabtree::io::{FileStorage, Storage};
use crabtree::raw::{BTree, BufferPool, PoolOptions, Store, StoreOptions};
use crabtree::wal::{Durability, WalOptions};
use crabtree::{Lsn, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const VALUE: usize = 100;
const KEYS_PER_WRITER: u64 = 1_000;
const POOL_BYTES: usize = 256 << 20;

struct Config {
    quick: bool,
    secs: Duration,
    slices: u32,
    rounds: u64,
    writers: Vec<usize>,
    inserts: u64,
    /// Which insert runs (`plain`, `put`, `eventual`): one alone for a
    /// profile.
    inserters: Vec<String>,
    recovery_bytes: u64,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

impl Config {
    fn from_env() -> Config {
        let quick = std::env::var("CRABTREE_BENCH_QUICK").is_ok_and(|v| v == "1");
        let (secs, slices, rounds, inserts, mb) = if quick { (1, 2, 1, 20_000, 16) } else { (3, 6, 3, 500_000, 1024) };
        let secs = env_u64("CRABTREE_BENCH_SECS", secs);
        Config {
            quick,
            secs: if quick && std::env::var("CRABTREE_BENCH_SECS").is_err() {
                Duration::from_millis(300)
            } else {
                Duration::from_secs(secs)
            },
            slices: env_u64("CRABTREE_BENCH_SLICES", slices).max(1) as u32,
            rounds: env_u64("CRABTREE_BENCH_ROUNDS", rounds).max(1),
            writers: std::env::var("CRABTREE_BENCH_WRITERS")
                .ok()
                .map(|list| list.split(',').filter_map(|s| s.trim().parse().ok()).collect())
                .unwrap_or_else(|| vec![1, 4, 16, 32, 64]),
            inserts: env_u64("CRABTREE_BENCH_INSERTS", inserts).max(1),
            inserters: std::env::var("CRABTREE_BENCH_INSERTERS")
                .unwrap_or_else(|_| "plain,put,eventual".into())
                .split(',')
                .map(|s| s.trim().to_string())
                .collect(),
            recovery_bytes: env_u64("CRABTREE_BENCH_RECOVERY_MB", mb).max(1) << 20,
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// The key of index `i`: 16 bytes, spread so inserts land all over the tree
/// (the same keys as `crabtree bench`).
fn key(i: u64) -> [u8; 16] {
    let spread = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&spread.to_be_bytes());
    key[8..].copy_from_slice(&i.to_be_bytes());
    key
}

fn value(i: u64, size: usize) -> Vec<u8> {
    let mut value = vec![(i % 251) as u8; size];
    value[..8].copy_from_slice(&i.to_le_bytes());
    value
}

/// CPU seconds this process used so far, all threads (user + system): the
/// log's cost includes the flusher's and the preparer's work on the other
/// core, which wall time on a 2-core machine shared with other jobs hides
/// or exaggerates by turns.
fn cpu_secs() -> f64 {
    rusage_secs(libc::RUSAGE_SELF)
}

/// CPU seconds the calling thread used so far (user + system).
fn thread_cpu_secs() -> f64 {
    rusage_secs(libc::RUSAGE_THREAD)
}

/// The calling thread's (voluntary, involuntary) context switches so far:
/// blocked (parked, I/O) vs preempted.
fn thread_switches() -> (i64, i64) {
    let usage = rusage(libc::RUSAGE_THREAD);
    (usage.ru_nvcsw, usage.ru_nivcsw)
}

fn rusage(who: libc::c_int) -> libc::rusage {
    // SAFETY: `getrusage` only writes the `rusage` we pass, which is a
    // plain struct of integers for which all-zero is a valid value.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    }
}

fn rusage_secs(who: libc::c_int) -> f64 {
    let usage = rusage(who);
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// The raw loop: 4 KiB `pwrite` at offset 0 of a preallocated file +
/// `fdatasync`.
struct Raw {
    file: FileStorage,
    block: Vec<u8>,
}

impl Raw {
    fn new(path: &Path) -> Result<Raw> {
        let _ = std::fs::remove_file(path);
        let file = FileStorage::open(path, true)?;
        file.write_at(0, &vec![0u8; 1 << 20])?;
        file.sync()?;
        Ok(Raw { file, block: vec![0xa5u8; 4096] })
    }

    /// Runs the loop for `time`; returns (syncs, seconds).
    fn run(&mut self, time: Duration) -> Result<(u64, f64)> {
        let started = Instant::now();
        let mut count = 0u64;
        while started.elapsed() < time {
            self.file.write_at(0, &self.block)?;
            self.file.sync()?;
            count += 1;
        }
        Ok((count, started.elapsed().as_secs_f64()))
    }
}

fn log_dir(path: &Path) -> PathBuf {
    let mut log = path.as_os_str().to_owned();
    log.push("-wal");
    PathBuf::from(log)
}

/// One durable measurement.
struct Durable {
    raw_rate: f64,
    writes_per_sec: f64,
    commits_per_sync: f64,
    bytes_per_write: f64,
}

/// `writers` threads loop `put_durable` for `config.secs`, cut in slices
/// alternating with the raw loop.
fn measure_durable(store: &Store, raw: &mut Raw, writers: usize, config: &Config) -> Result<Durable> {
    let slice = config.secs / config.slices;
    let before = store.stats().1;
    let (mut raw_syncs, mut raw_secs, mut writes, mut secs) = (0u64, 0f64, 0u64, 0f64);
    for _ in 0..config.slices {
        let (n, t) = raw.run(slice)?;
        raw_syncs += n;
        raw_secs += t;
        let stop = AtomicBool::new(false);
        let done = AtomicU64::new(0);
        let failed = AtomicBool::new(false);
        let started = Instant::now();
        std::thread::scope(|scope| {
            for thread in 0..writers as u64 {
                let (stop, done, failed) = (&stop, &done, &failed);
                scope.spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(thread);
                    let mut mine = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let i = thread * KEYS_PER_WRITER + rng.u64(..KEYS_PER_WRITER);
                        if store.put_durable(&key(i), &value(i + mine, VALUE)).is_err() {
                            failed.store(true, Ordering::Relaxed);
                            return;
                        }
                        mine += 1;
                    }
                    done.fetch_add(mine, Ordering::Relaxed);
                });
            }
            std::thread::sleep(slice);
            stop.store(true, Ordering::Relaxed);
        });
        secs += started.elapsed().as_secs_f64();
        writes += done.load(Ordering::Relaxed);
        if failed.load(Ordering::Relaxed) {
            return Err(crabtree::Error::InvalidArgument("a durable write failed".into()));
        }
    }
    let after = store.stats().1;
    let syncs = after.syncs.saturating_sub(before.syncs) as f64;
    let writes = writes as f64;
    Ok(Durable {
        raw_rate: raw_syncs as f64 / raw_secs,
        writes_per_sec: writes / secs,
        commits_per_sync: writes / syncs.max(1.0),
        bytes_per_write: after.bytes_written.saturating_sub(before.bytes_written) as f64 / writes.max(1.0),
    })
}

fn durable_phase(dir: &Path, config: &Config) -> Result<()> {
    let path = dir.join("durable.crab");
    let store = Store::open_path(&path, StoreOptions::default())?;
    // Every writer's keys exist before the clock starts: the measured writes
    // are overwrites of one leaf entry each.
    let writers_max = config.writers.iter().copied().max().unwrap_or(1) as u64;
    let mut last = Lsn::ZERO;
    for i in 0..writers_max * KEYS_PER_WRITER {
        last = last.max(store.put(&key(i), &value(i, VALUE))?);
    }
    store.wait_durable(last)?;
    let mut raw = Raw::new(&log_dir(&path).join("raw-overwrite.bench"))?;
    let (pool_base, wal_base) = store.stats();
    let mut runs: Vec<Vec<Durable>> = config.writers.iter().map(|_| Vec::new()).collect();
    for _ in 0..config.rounds {
        for (i, &writers) in config.writers.iter().enumerate() {
            runs[i].push(measure_durable(&store, &mut raw, writers, config)?);
        }
    }
    println!();
    println!("durable single-key writes (put_durable, Immediate, {VALUE}-byte values, overwrites)");
    println!(
        "{:<16} {:>12} {:>12} {:>8} {:>14} {:>14}",
        "", "writes/s", "raw syncs/s", "x raw", "commits/fsync", "log B/write"
    );
    for (i, &writers) in config.writers.iter().enumerate() {
        let runs = &runs[i];
        println!(
            "{:<16} {:>12.0} {:>12.0} {:>8.2} {:>14.1} {:>14.0}",
            format!("durable x{writers}"),
            median(runs.iter().map(|r| r.writes_per_sec).collect()),
            median(runs.iter().map(|r| r.raw_rate).collect()),
            median(runs.iter().map(|r| r.writes_per_sec / r.raw_rate).collect()),
            median(runs.iter().map(|r| r.commits_per_sync).collect()),
            median(runs.iter().map(|r| r.bytes_per_write).collect()),
        );
    }
    println!("per round (raw syncs/s alongside, durable writes/s):");
    for round in 0..config.rounds as usize {
        let pairs: Vec<(f64, f64)> =
            runs.iter().map(|r| (r[round].raw_rate.round(), r[round].writes_per_sec.round())).collect();
        println!("  {pairs:?}");
    }
    let (pool, wal) = store.stats();
    let bytes = wal.bytes_written.saturating_sub(wal_base.bytes_written);
    println!(
        "log over the measured writes: {} syncs, {:.0} MB written; page images {:.1}% of log bytes, \
         full-page images (first change of a page after a checkpoint) {:.1}%",
        wal.syncs.saturating_sub(wal_base.syncs),
        bytes as f64 / 1e6,
        100.0 * pool.image_bytes.saturating_sub(pool_base.image_bytes) as f64 / bytes.max(1) as f64,
        100.0 * pool.fpi_bytes.saturating_sub(pool_base.fpi_bytes) as f64 / bytes.max(1) as f64
    );
    store.close()
}

/// Which engine an insert run uses.
#[derive(Clone, Copy)]
enum Inserter {
    Plain,
    StoreNoWait,
    StoreEventual,
}

/// Inserts `config.inserts` spread keys into an empty tree; (seconds taken,
/// CPU seconds used by the whole process meanwhile).
fn insert_run(dir: &Path, kind: Inserter, round: u64, config: &Config) -> Result<(f64, f64)> {
    let path = dir.join(format!("insert-{round}.crab"));
    let pool = PoolOptions { pool_bytes: POOL_BYTES, ..PoolOptions::default() };
    let n = config.inserts;
    let secs = match kind {
        Inserter::Plain => {
            let storage: Arc<dyn Storage> = Arc::new(FileStorage::open(&path, true)?);
            let tree = BTree::create(Arc::new(BufferPool::create(storage, pool)?))?;
            let (started, cpu) = (Instant::now(), cpu_secs());
            for i in 0..n {
                tree.insert(&key(i), &value(i, VALUE))?;
            }
            let secs = (started.elapsed().as_secs_f64(), cpu_secs() - cpu);
            drop(tree);
            secs
        }
        Inserter::StoreNoWait | Inserter::StoreEventual => {
            let durability =
                if matches!(kind, Inserter::StoreNoWait) { Durability::Immediate } else { Durability::Eventual };
            let options =
                StoreOptions { pool, wal: WalOptions { durability, ..WalOptions::default() }, ..Default::default() };
            let store = Store::open_path(&path, options)?;
            let (started, cpu, main_cpu, switches) = (Instant::now(), cpu_secs(), thread_cpu_secs(), thread_switches());
            for i in 0..n {
                match kind {
                    Inserter::StoreNoWait => store.put(&key(i), &value(i, VALUE))?,
                    _ => store.put_durable(&key(i), &value(i, VALUE))?,
                };
            }
            let secs = (started.elapsed().as_secs_f64(), cpu_secs() - cpu);
            let main_cpu = thread_cpu_secs() - main_cpu;
            let switches = (thread_switches().0 - switches.0, thread_switches().1 - switches.1);
            let (pool, wal) = store.stats();
            if round == 0 {
                // Where the log's bytes come from: a split logs both pages
                // whole, and the first change of a page after the open's
                // checkpoint logs its image.
                println!(
                    "  {}: {:.0} log bytes per insert, {:.0}% of them page images ({:.0}% full-page images)",
                    if matches!(kind, Inserter::StoreNoWait) { "put, Immediate" } else { "put_durable, Eventual" },
                    wal.bytes_written as f64 / n as f64,
                    100.0 * pool.image_bytes as f64 / wal.bytes_written.max(1) as f64,
                    100.0 * pool.fpi_bytes as f64 / wal.bytes_written.max(1) as f64,
                );
            }
            println!(
                "    {} round {round}: {} batches written, {} syncs, {} horizon records, {} segments created, \
                 {} recycled; CPU us/insert: inserting thread {:.2}, other threads {:.2}; wall {:.2}; inserting thread \
                 blocked {} times, preempted {}",
                if matches!(kind, Inserter::StoreNoWait) { "put" } else { "put_durable" },
                wal.batches,
                wal.syncs,
                wal.horizons,
                wal.segments_created,
                wal.segments_recycled,
                main_cpu * 1e6 / n as f64,
                (secs.1 - main_cpu) * 1e6 / n as f64,
                secs.0 * 1e6 / n as f64,
                switches.0,
                switches.1
            );
            // Closing is a checkpoint (not measured; the plain tree's drop
            // does not flush either).
            drop(store);
            secs
        }
    };
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir_all(log_dir(&path));
    Ok(secs)
}

fn insert_phase(dir: &Path, config: &Config) -> Result<()> {
    println!();
    println!("non-durable inserts (log statistics of the first round; the rates follow):");
    let (mut plain, mut no_wait, mut eventual) = (Vec::new(), Vec::new(), Vec::new());
    let n = config.inserts as f64;
    for round in 0..config.rounds {
        // The order rotates per round: whichever runs first after the
        // previous round's files were removed (and the page cache settles)
        // must not always be the same engine.
        let mut secs = [(f64::NAN, f64::NAN); 3];
        for k in 0..3 {
            let which = (k + round as usize) % 3;
            if !config.inserters.iter().any(|name| name == ["plain", "put", "eventual"][which]) {
                continue;
            }
            let kind = [Inserter::Plain, Inserter::StoreNoWait, Inserter::StoreEventual][which];
            secs[which] = insert_run(dir, kind, round, config)?;
        }
        let [(p, p_cpu), (w, w_cpu), (e, e_cpu)] = secs;
        let us = |cpu: f64| cpu * 1e6 / n;
        println!(
            "  round {round}: no log {:.0}/s ({:.2} us CPU); put {:.0}/s ({:.2}x, {:.2} us CPU); \
             put_durable Eventual {:.0}/s ({:.2}x, {:.2} us CPU)",
            n / p,
            us(p_cpu),
            n / w,
            p / w,
            us(w_cpu),
            n / e,
            p / e,
            us(e_cpu)
        );
        plain.push((p, p_cpu));
        no_wait.push((w, p, w_cpu, p_cpu));
        eventual.push((e, p, e_cpu, p_cpu));
    }
    let rate = |v: &[(f64, f64, f64, f64)]| median(v.iter().map(|r| n / r.0).collect());
    let ratio = |v: &[(f64, f64, f64, f64)]| median(v.iter().map(|r| r.1 / r.0).collect());
    let cpu = |v: &[(f64, f64, f64, f64)]| median(v.iter().map(|r| r.2 * 1e6 / n).collect());
    let cpu_ratio = |v: &[(f64, f64, f64, f64)]| median(v.iter().map(|r| r.3 / r.2).collect());
    println!();
    println!(
        "non-durable inserts, 1 thread, {} spread keys x {VALUE} B, {} MiB pool (median of {} rounds)",
        config.inserts,
        POOL_BYTES >> 20,
        config.rounds
    );
    println!("{:<34} {:>12} {:>10} {:>14} {:>12}", "", "inserts/s", "x no log", "CPU us/insert", "CPU x no log");
    println!(
        "{:<34} {:>12.0} {:>10.2} {:>14.2} {:>12.2}",
        "BTree + BufferPool, no log",
        median(plain.iter().map(|r| n / r.0).collect()),
        1.0,
        median(plain.iter().map(|r| r.1 * 1e6 / n).collect()),
        1.0
    );
    for (name, v) in [("Store::put (log on, nobody waits)", &no_wait), ("Store::put_durable, Eventual", &eventual)] {
        println!("{name:<34} {:>12.0} {:>10.2} {:>14.2} {:>12.2}", rate(v), ratio(v), cpu(v), cpu_ratio(v));
    }
    Ok(())
}

/// Copies the data file and every file of its log directory to `to`.
fn copy_store(from: &Path, to: &Path) -> Result<u64> {
    std::fs::copy(from, to)?;
    let (from_log, to_log) = (log_dir(from), log_dir(to));
    std::fs::create_dir_all(&to_log)?;
    let mut bytes = 0;
    for entry in std::fs::read_dir(&from_log)? {
        let entry = entry?;
        bytes += std::fs::copy(entry.path(), to_log.join(entry.file_name()))?;
    }
    Ok(bytes)
}

fn recovery_phase(dir: &Path, config: &Config) -> Result<()> {
    let path = dir.join("recovery.crab");
    let options = StoreOptions {
        pool: PoolOptions { pool_bytes: POOL_BYTES, ..PoolOptions::default() },
        wal: WalOptions { segment_size: 64 << 20, ..WalOptions::default() },
        checkpoint_bytes: u64::MAX,
        checkpoint_interval: Duration::from_secs(24 * 3600),
        background_checkpoints: false,
    };
    let store = Store::open_path(&path, options.clone())?;
    let started = Instant::now();
    // Overwrites of 200,000 keys with values of 100-400 bytes, two writers:
    // a log of small leaf-entry records over a tree that fits the pool.
    let keys = 200_000u64;
    let written = store.wal().end_lsn().0;
    let last = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for thread in 0..2u64 {
            let (store, last, failed) = (&store, &last, &failed);
            scope.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(thread);
                let mut mine = Lsn::ZERO;
                let mut j = 0u64;
                while store.wal().end_lsn().0 - written < config.recovery_bytes {
                    let i = rng.u64(..keys);
                    match store.put(&key(i), &value(i ^ j, 100 + rng.usize(..300))) {
                        Ok(lsn) => mine = mine.max(lsn),
                        Err(_) => {
                            failed.store(true, Ordering::Relaxed);
                            return;
                        }
                    }
                    j += 1;
                }
                last.fetch_max(mine.0, Ordering::Relaxed);
            });
        }
    });
    if failed.load(Ordering::Relaxed) {
        return Err(crabtree::Error::InvalidArgument("a write failed".into()));
    }
    store.wait_durable(Lsn(last.load(Ordering::Relaxed)))?;
    let write_secs = started.elapsed().as_secs_f64();
    let copy = dir.join("recovery-copy.crab");
    let copied = copy_store(&path, &copy)?;
    let entries = store.tree().len();
    drop(store);
    let started = Instant::now();
    let recovered = Store::open_path(&copy, options)?;
    let open_secs = started.elapsed().as_secs_f64();
    let report = recovered.recovery().clone();
    if recovered.tree().len() != entries {
        return Err(crabtree::Error::InvalidArgument(format!(
            "recovered {} entries, wrote {entries}",
            recovered.tree().len()
        )));
    }
    drop(recovered);
    let mb = report.log_bytes as f64 / 1e6;
    println!();
    println!(
        "recovery: {:.0} MB of log ({} records, {} entries applied, {} pages written) written in {write_secs:.1} s, \
         {:.0} MB of log files copied",
        mb,
        report.records,
        report.entries_applied,
        report.pages_written,
        copied as f64 / 1e6
    );
    println!(
        "  redo {:.2} s (first pass {:.2} s): {:.0} MB/s of log replayed; whole open (two log passes, redo, checkpoint; repair and count run after, in the background) {open_secs:.2} s: \
         {:.0} MB/s{}",
        report.duration.as_secs_f64(),
        report.survey.as_secs_f64(),
        mb / report.duration.as_secs_f64().max(1e-9),
        mb / open_secs.max(1e-9),
        if config.quick { " (quick run: log too small to mean much)" } else { "" }
    );
    Ok(())
}

fn reopen_phase(dir: &Path, config: &Config) -> Result<()> {
    let keys: u64 = if config.quick { 50_000 } else { env_u64("CRABTREE_BENCH_REOPEN_KEYS", 2_000_000) };
    let path = dir.join("reopen.crab");
    let options = StoreOptions {
        pool: PoolOptions { pool_bytes: POOL_BYTES, ..PoolOptions::default() },
        checkpoint_bytes: u64::MAX,
        checkpoint_interval: Duration::from_secs(24 * 3600),
        background_checkpoints: false,
        ..StoreOptions::default()
    };
    let store = Store::open_path(&path, options.clone())?;
    for i in 0..keys {
        store.put(&key(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)), &value(i, VALUE))?;
    }
    store.checkpoint()?;
    let mut last = Lsn::ZERO;
    for i in 0..1_000u64 {
        last = store.put(&key(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)), &value(i + 1, VALUE))?;
    }
    store.wait_durable(last)?;
    let copy = dir.join("reopen-copy.crab");
    copy_store(&path, &copy)?;
    drop(store);
    // Open returns after the redo; the repair and the count run in the
    // background (nothing else runs here, so they get the machine).
    let started = Instant::now();
    let store = Store::open_path(&copy, options)?;
    let open_secs = started.elapsed().as_secs_f64();
    let report = store.wait_recovered()?;
    let finished_secs = started.elapsed().as_secs_f64();
    let counted = store.tree().len();
    drop(store);
    if counted != keys {
        return Err(crabtree::Error::InvalidArgument(format!("counted {counted}, wrote {keys}")));
    }
    println!();
    println!(
        "reopen after a crash, {keys} keys, 1,000 writes since the last checkpoint ({} records read, {} entries \
         applied, {} skipped, {} pages written; redo {:.3} s): open returns in {open_secs:.3} s; the background \
         repair + count ends at {finished_secs:.3} s (what an open that waited for them would take): {:.3}x",
        report.records,
        report.entries_applied,
        report.entries_skipped,
        report.pages_written,
        report.duration.as_secs_f64(),
        open_secs / finished_secs.max(1e-9)
    );
    Ok(())
}

fn main() -> Result<()> {
    let config = Config::from_env();
    let tmp = match std::env::var("CRABTREE_BENCH_DIR") {
        Ok(dir) => tempfile::tempdir_in(dir),
        Err(_) => tempfile::tempdir(),
    }?;
    let dir = tmp.path();
    println!(
        "durable bench{}: dir {}, {:?} per durable measurement in {} slices alternating with the raw loop, \
         {} rounds (medians); writers {:?}",
        if config.quick { " (quick)" } else { "" },
        dir.display(),
        config.secs,
        config.slices,
        config.rounds,
        config.writers
    );
    let phases = std::env::var("CRABTREE_BENCH_PHASES").unwrap_or_else(|_| "durable,insert,recovery,reopen".into());
    let wanted = |name: &str| phases.split(',').any(|p| p.trim() == name);
    if wanted("durable") {
        durable_phase(dir, &config)?;
    }
    if wanted("insert") {
        insert_phase(dir, &config)?;
    }
    if wanted("recovery") {
        recovery_phase(dir, &config)?;
    }
    if wanted("reopen") {
        reopen_phase(dir, &config)?;
    }
    Ok(())
}
