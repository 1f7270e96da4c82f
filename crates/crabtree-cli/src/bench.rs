//! `crabtree bench`: the main job. Creates a database in a temporary
//! directory, runs a fixed workload on the B-link tree and, for each phase,
//! the same work on a `parking_lot::RwLock<BTreeMap>` in the same run, and
//! prints a table with the ratio. Ends with `verify()`, a flush, a reopen
//! and a full comparison of the contents, so a fast but wrong run fails.
//!
//! When the file outgrows the pool (`--pool-mb` below the file size, e.g.
//! `--keys 1000000 --pool-mb 32`), a larger-than-memory phase follows the
//! flush: random point reads of live keys with 1 and `--threads` threads
//! next to raw 4 KiB random `pread`s of the same file in the same run (the
//! file is in the OS page cache, so both sides pay for getting a page from
//! the kernel, not the disk), with the ratio and the p99 latency.
//!
//! Then a durable-write phase (`bench/durable.rs`): `put_durable` with 1
//! and 32 writers against the disk's own overwrite + `fdatasync` rate in
//! the same run.

mod durable;

use crabtree::io::FileStorage;
use crabtree::raw::{BTree, BufferPool, PoolOptions};
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Number of keys.
    #[arg(long, default_value_t = 200_000)]
    pub keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Reader threads for the concurrent phases.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Buffer pool budget in MiB.
    #[arg(long, default_value_t = 256)]
    pub pool_mb: usize,
    /// Page size in bytes.
    #[arg(long, default_value_t = 4096)]
    pub page_size: usize,
    /// Seconds per durable-write measurement (1 and 32 writers, each
    /// interleaved with the raw fdatasync loop); 0 skips the phase.
    #[arg(long, default_value_t = 2.0)]
    pub durable_secs: f64,
}

/// The key of index `i`: 16 bytes, spread so inserts land all over the tree.
fn key(i: u64) -> [u8; 16] {
    let spread = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&spread.to_be_bytes());
    key[8..].copy_from_slice(&i.to_be_bytes());
    key
}

fn value(i: u64, size: usize) -> Vec<u8> {
    let mut value = vec![(i % 251) as u8; size];
    if size >= 8 {
        value[..8].copy_from_slice(&i.to_le_bytes());
    }
    value
}

/// Whether `found` is the value `value(i, size)` wrote: its length and the
/// index in its first bytes (no allocation, so it costs both engines alike).
fn names(found: &[u8], i: u64, size: usize) -> bool {
    found.len() == size && (size < 8 || found[..8] == i.to_le_bytes())
}

struct Row {
    phase: String,
    ops: u64,
    ours: Duration,
    baseline: Option<Duration>,
}

fn ops_per_sec(ops: u64, time: Duration) -> f64 {
    ops as f64 / time.as_secs_f64().max(1e-9)
}

/// Runs `work(thread, ops_per_thread)` on `threads` threads; total time.
fn timed_threads(threads: usize, work: impl Fn(usize) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let work = &work;
            scope.spawn(move || work(thread));
        }
    });
    start.elapsed()
}

/// Runs the workload and prints the table.
pub fn run(args: &BenchArgs) -> crabtree::Result<ExitCode> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.crab");
    let options = PoolOptions { page_size: args.page_size, pool_bytes: args.pool_mb << 20, ..PoolOptions::default() };
    let storage = Arc::new(FileStorage::open(&path, true)?);
    let pool = Arc::new(BufferPool::create(storage, options.clone())?);
    let tree = BTree::create(pool)?;
    let map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>> = RwLock::new(BTreeMap::new());
    let n = args.keys;
    let threads = args.threads.max(1);
    let mut rows = Vec::new();
    println!(
        "crabtree bench: {n} keys x {} B values, {} B pages, {} MiB pool, {threads} threads, file {}",
        args.value_size,
        args.page_size,
        args.pool_mb,
        path.display()
    );

    // Inserts, one thread, in spread order.
    let start = Instant::now();
    for i in 0..n {
        tree.insert(&key(i), &value(i, args.value_size))?;
    }
    let ours = start.elapsed();
    let start = Instant::now();
    for i in 0..n {
        map.write().insert(key(i).to_vec(), value(i, args.value_size));
    }
    rows.push(Row { phase: "insert (1 thread)".into(), ops: n, ours, baseline: Some(start.elapsed()) });

    // Point lookups, 1 and `threads` threads; every value copied out.
    for readers in [1, threads] {
        let per_thread = n.max(1);
        // Both engines copy the value out and check it names its key (the
        // same cheap check on both sides, so the ratio stays fair).
        let failures = std::sync::atomic::AtomicU64::new(0);
        let check = |i: u64, found: Option<Vec<u8>>| {
            if !found.is_some_and(|v| names(&v, i, args.value_size)) {
                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        };
        let ours = timed_threads(readers, |t| {
            for j in 0..per_thread {
                let i = (j * 7919 + t as u64 * 104_729) % n;
                check(i, tree.get(&key(i)).ok().flatten());
            }
        });
        let baseline = timed_threads(readers, |t| {
            for j in 0..per_thread {
                let i = (j * 7919 + t as u64 * 104_729) % n;
                check(i, map.read().get(key(i).as_slice()).cloned());
            }
        });
        if failures.into_inner() != 0 {
            eprintln!("error: lookups returned wrong values");
            return Ok(ExitCode::FAILURE);
        }
        rows.push(Row {
            phase: format!("get ({readers} thread{})", if readers == 1 { "" } else { "s" }),
            ops: per_thread * readers as u64,
            ours,
            baseline: Some(baseline),
        });
    }

    // Lookups by `threads` readers while one writer updates.
    let per_thread = n;
    let ours = timed_threads(threads + 1, |t| {
        for j in 0..per_thread {
            let i = (j * 7919 + t as u64 * 104_729) % n;
            if t == threads {
                let _ = tree.insert(&key(i), &value(i, args.value_size));
            } else {
                std::hint::black_box(tree.get(&key(i)).ok());
            }
        }
    });
    let baseline = timed_threads(threads + 1, |t| {
        for j in 0..per_thread {
            let i = (j * 7919 + t as u64 * 104_729) % n;
            if t == threads {
                map.write().insert(key(i).to_vec(), value(i, args.value_size));
            } else {
                std::hint::black_box(map.read().get(key(i).as_slice()).cloned());
            }
        }
    });
    rows.push(Row {
        phase: format!("get+update ({threads}r+1w)"),
        ops: per_thread * (threads as u64 + 1),
        ours,
        baseline: Some(baseline),
    });

    // 100-entry scans from spread start keys.
    let scans = (n / 10).max(1);
    let start = Instant::now();
    for s in 0..scans {
        let from = key(s * 13 % n);
        let count = tree.range(from.as_slice()..).take(100).filter(|e| e.is_ok()).count();
        std::hint::black_box(count);
    }
    let ours = start.elapsed();
    let start = Instant::now();
    for s in 0..scans {
        let from = key(s * 13 % n).to_vec();
        let guard = map.read();
        let copied: Vec<(Vec<u8>, Vec<u8>)> =
            guard.range(from..).take(100).map(|(k, v)| (k.clone(), v.clone())).collect();
        std::hint::black_box(copied);
    }
    rows.push(Row { phase: "scan 100 (1 thread)".into(), ops: scans, ours, baseline: Some(start.elapsed()) });

    // Remove half, then check everything.
    let start = Instant::now();
    for i in (0..n).step_by(2) {
        tree.remove(&key(i))?;
    }
    let ours = start.elapsed();
    let start = Instant::now();
    for i in (0..n).step_by(2) {
        map.write().remove(key(i).as_slice());
    }
    rows.push(Row { phase: "remove (1 thread)".into(), ops: n.div_ceil(2), ours, baseline: Some(start.elapsed()) });

    let start = Instant::now();
    let report = tree.verify()?;
    rows.push(Row { phase: "verify".into(), ops: report.page_count, ours: start.elapsed(), baseline: None });
    let start = Instant::now();
    tree.flush()?;
    rows.push(Row {
        phase: "flush + fsync".into(),
        ops: tree.pool().stats().writes,
        ours: start.elapsed(),
        baseline: None,
    });

    print_table(&rows);
    if !past_memory(&tree, &path, args)? {
        eprintln!("error: larger-than-memory lookups returned wrong values");
        return Ok(ExitCode::FAILURE);
    }
    let stats = tree.pool().stats();
    println!(
        "pool: {} loads ({} read straight into their frame, {} uncached), {} writes, {} evictions, {} of {} frames touched; tree: {} levels, {} pages, leaf fill {:.0}%",
        stats.loads,
        stats.direct_loads,
        stats.uncached_reads,
        stats.writes,
        stats.evictions,
        stats.frames_touched,
        stats.frames_max,
        report.levels.len(),
        report.page_count,
        report.levels.first().map_or(0.0, |l| l.fill * 100.0)
    );
    if !report.is_ok() {
        for violation in report.violations.iter().take(20) {
            eprintln!("violation: {violation}");
        }
        return Ok(ExitCode::FAILURE);
    }
    drop(tree);
    let code = check_reopen(&path, options, &map.into_inner())?;
    if code != ExitCode::SUCCESS || args.durable_secs <= 0.0 {
        return Ok(code);
    }
    let time = Duration::try_from_secs_f64(args.durable_secs)
        .map_err(|_| crabtree::Error::InvalidArgument(format!("--durable-secs {}", args.durable_secs)))?;
    let rows = durable::run(&dir.path().join("durable.crab"), time, args.value_size)?;
    durable::print(&rows);
    Ok(code)
}

/// Seconds each larger-than-memory cell runs.
const PAST_MEMORY_SECS: f64 = 1.5;

thread_local! {
    /// The raw `pread` loop's page buffer, one per thread, reused.
    static RAW_PAGE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The raw `pread` loop's own open of the file, one per thread.
    static RAW_FILE: std::cell::RefCell<Option<std::fs::File>> = const { std::cell::RefCell::new(None) };
}

/// Runs `op` on `threads` threads for `PAST_MEMORY_SECS`; ops/s and the p99
/// latency of every 8th operation.
fn rate_and_p99(threads: usize, op: impl Fn(&mut fastrand::Rng) + Sync) -> (f64, Duration) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    let start = Instant::now();
    let per_thread: Vec<(u64, Vec<Duration>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                let (stop, op) = (&stop, &op);
                scope.spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(thread as u64 * 7919 + 1);
                    let (mut done, mut samples) = (0u64, Vec::new());
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let t = Instant::now();
                        op(&mut rng);
                        samples.push(t.elapsed());
                        for _ in 0..7 {
                            op(&mut rng);
                        }
                        done += 8;
                    }
                    (done, samples)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(PAST_MEMORY_SECS));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        workers.into_iter().map(|w| w.join().expect("bench thread")).collect()
    });
    let elapsed = start.elapsed();
    let ops: u64 = per_thread.iter().map(|(done, _)| done).sum();
    let mut samples: Vec<Duration> = per_thread.into_iter().flat_map(|(_, samples)| samples).collect();
    samples.sort_unstable();
    let p99 = samples.get(samples.len() * 99 / 100).copied().unwrap_or_default();
    (ops_per_sec(ops, elapsed), p99)
}

/// The larger-than-memory phase (see the module header): only when the
/// file is larger than the pool. Reads the keys left after the remove
/// phase (odd indices). Returns false if any read returned a wrong value.
fn past_memory(tree: &BTree, path: &std::path::Path, args: &BenchArgs) -> crabtree::Result<bool> {
    use std::os::unix::fs::FileExt;
    let file_bytes = std::fs::metadata(path)?.len();
    let pool_bytes = (args.pool_mb as u64) << 20;
    if file_bytes <= pool_bytes || args.keys < 2 {
        println!(
            "larger than memory: skipped, the {} MiB file fits the {} MiB pool (pass a smaller --pool-mb)",
            file_bytes >> 20,
            args.pool_mb
        );
        return Ok(true);
    }
    // Opened here once so that a missing file is an error, not a panic in
    // a reading thread.
    std::fs::File::open(path)?;
    let pages = file_bytes / args.page_size as u64;
    let live = args.keys / 2;
    let wrong = std::sync::atomic::AtomicU64::new(0);
    println!(
        "larger than memory: file {} MiB, pool {} MiB ({:.1}x), {PAST_MEMORY_SECS} s per cell",
        file_bytes >> 20,
        args.pool_mb,
        file_bytes as f64 / pool_bytes as f64
    );
    println!(
        "{:<16} {:>14} {:>10} {:>14} {:>10} {:>8}",
        "reads", "crabtree op/s", "p99", "raw pread/s", "p99", "ratio"
    );
    let mut thread_counts = vec![1, args.threads.max(1)];
    thread_counts.dedup();
    for threads in thread_counts {
        // Each thread reads through its own open of the file into one
        // buffer of its own, as each of fio's jobs does (a fresh buffer per
        // read would add an allocation and a `memset`; one open shared by
        // the threads, a line their cores pass around on every read).
        let (raw_rate, raw_p99) = rate_and_p99(threads, |rng| {
            RAW_FILE.with_borrow_mut(|file| {
                let file = file.get_or_insert_with(|| std::fs::File::open(path).expect("open of the bench file"));
                RAW_PAGE.with_borrow_mut(|page| {
                    page.resize(args.page_size, 0);
                    file.read_exact_at(page, rng.u64(1..pages) * args.page_size as u64)
                        .expect("pread of the bench file");
                    std::hint::black_box(&page);
                });
            });
        });
        let (rate, p99) = rate_and_p99(threads, |rng| {
            let i = rng.u64(0..live) * 2 + 1;
            if !tree.get(&key(i)).ok().flatten().is_some_and(|v| names(&v, i, args.value_size)) {
                wrong.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        println!(
            "{:<16} {:>14.0} {:>10.1?} {:>14.0} {:>10.1?} {:>7.2}x",
            format!("get x{threads}"),
            rate,
            p99,
            raw_rate,
            raw_p99,
            rate / raw_rate
        );
    }
    println!();
    Ok(wrong.into_inner() == 0)
}

/// Reopens the database and compares it with the baseline map.
fn check_reopen(
    path: &std::path::Path,
    options: PoolOptions,
    want: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> crabtree::Result<ExitCode> {
    let storage = Arc::new(FileStorage::open(path, false)?);
    let tree = BTree::open(Arc::new(BufferPool::open(storage, options)?))?;
    let mut expected = want.iter();
    let mut count = 0u64;
    for entry in tree.range::<&[u8], _>(..) {
        let (k, v) = entry?;
        if expected.next() != Some((&k, &v)) {
            eprintln!("error: reopened database differs from the model at entry {count}");
            return Ok(ExitCode::FAILURE);
        }
        count += 1;
    }
    if expected.next().is_some() {
        eprintln!("error: reopened database is missing entries after {count}");
        return Ok(ExitCode::FAILURE);
    }
    println!("reopen: {count} entries match the model; verify ok");
    Ok(ExitCode::SUCCESS)
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<24} {:>10} {:>12} {:>14} {:>14} {:>8}",
        "phase", "ops", "crabtree s", "crabtree op/s", "RwLock<BTreeMap> op/s", "ratio"
    );
    for row in rows {
        let ours = ops_per_sec(row.ops, row.ours);
        match row.baseline {
            Some(base) => {
                let theirs = ops_per_sec(row.ops, base);
                println!(
                    "{:<24} {:>10} {:>12.3} {:>14.0} {:>21.0} {:>7.2}x",
                    row.phase,
                    row.ops,
                    row.ours.as_secs_f64(),
                    ours,
                    theirs,
                    ours / theirs
                );
            }
            None => println!(
                "{:<24} {:>10} {:>12.3} {:>14.0} {:>21} {:>8}",
                row.phase,
                row.ops,
                row.ours.as_secs_f64(),
                ours,
                "-",
                "-"
            ),
        }
    }
    println!();
}
