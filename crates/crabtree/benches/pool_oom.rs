//! Larger than memory: B-link tree reads from a file several times larger
//! than the buffer pool, against raw 4 KiB random `pread` of the same file
//! in the same run.
//!
//! Setup: `CRABTREE_BENCH_KEYS` keys (default 1,000,000) of 16 bytes (the
//! tree bench's keys), 100-byte values, bulk-loaded into a file in a temp
//! directory (`CRABTREE_BENCH_DIR` to choose where), flushed, closed and
//! reopened with a pool budget of file size / `CRABTREE_BENCH_RATIO`
//! (default 4). The file stays in the OS page cache, so both sides measure
//! the cost of getting a page from the kernel into user memory, not the
//! disk.
//!
//! Workloads, each `CRABTREE_BENCH_SECS` (default 3) seconds, for
//! `CRABTREE_BENCH_ROUNDS` rounds (default 3; medians printed), with N = 1,
//! 2 and 8 threads (`CRABTREE_BENCH_THREADS` to choose). Within a round the
//! raw loop and crabtree alternate in ten slices each, so the host's drift
//! (up to 20% within seconds on a shared virtual machine) falls on both:
//! * `pread xN`: raw `pread` of a random 4 KiB-aligned page of the file,
//!   through glibc (as fio's `psync` engine reads), into a buffer each
//!   thread keeps (until stop 17 a zeroed array per read, whose 4 KiB
//!   `memset` made the raw rate 4-6% lower);
//!   Each thread reads through its own open of the file, as each of fio's
//!   jobs does (until stop 18 one open shared by all threads);
//! * `pread syscall xN`: the same read as the system call itself
//!   (rustix, as `FileStorage` reads), against the glibc loop;
//! * `pread shared xN`: the glibc loop through one open of the file
//!   shared by the threads, against the loop through their own: in a
//!   process with more than one thread, every `pread` takes and drops a
//!   reference on the open, so the threads' cores pass its line between
//!   them on every read;
//! * `get xN`: `BTree::get` of a uniformly random existing key (value
//!   copied out, checked); p99 latency from every 8th operation;
//! * `get zipf 0.99 xN`: the same with zipfian key popularity (YCSB's
//!   scrambled zipfian, theta 0.99);
//! * `scan100 xN`: 100 entries from a random key on;
//! * `get/update 50/50 xN`: half gets, half value replacements of random
//!   keys (dirty pages: the cleaner's work), against the read-only loop;
//! * `get/update 50/50 vs read/rewrite xN`: the same mix against a raw
//!   loop that writes too: half reads of a random page, half reads of one
//!   that then change a byte of it and write it back (`pwrite`, no sync:
//!   the kernel writes dirty pages back, as it does crabtree's). It runs
//!   on a copy of the file (its writes must not reach crabtree's pages),
//!   through each thread's own open, so it is the like-for-like machine
//!   limit of a read/update mix; crabtree writes a dirty page back once
//!   per eviction, not once per update.
//!
//! * `get cold-cache xN`: uniform gets against raw `pread`, with the OS
//!   page cache dropped before every slice (`/proc/sys/vm/drop_caches`;
//!   needs root, skipped otherwise): both read from the device, the pool
//!   keeping its own frames (the inner nodes), which is the speed of the
//!   storage a larger-than-memory database degrades to. Each slice warms
//!   the cache as it goes: use a file much larger than one slice reads
//!   (1M keys and up; `docs/BENCHMARKS.md`);
//! * `get direct-vs-copy xN`: uniform gets with the pool filling frames by
//!   `pread` straight into the frame (its default, `buffer/grace.rs`)
//!   against `pread` into a buffer and an atomic copy, alternating in ten
//!   slices each;
//! * `get vs fio xN`: uniform gets against fio itself (`fio` on the
//!   `PATH`, else skipped), issue 7's yardstick: its `psync` engine's
//!   4 KiB random reads of the same file from the page cache, N jobs as
//!   threads, alternating with crabtree in ten slices each (a fio run per
//!   slice; its rate is over its own runtime, so its start-up is not
//!   counted against it). fio spends time of its own per read (its
//!   bookkeeping, clock reads), so it reads slower than the raw loop
//!   above, which stays the stricter baseline;
//! * `get uncached-vs-cached xN`: uniform gets with uncached point reads
//!   on (the default: a full pool reads a leaf it does not admit into the
//!   reader's own buffer, `buffer/uncached.rs`) against every miss loaded
//!   into a frame, alternating in ten slices each.
//!
//! `CRABTREE_BENCH_WORKLOADS` (comma list of name prefixes; `get$` names
//! the uniform get cell alone) narrows a run.
//!
//! Before the pool is shrunk, `get x1`, `get x2` and `get xN` for each N
//! up to the machine's cores also run with every page resident: the
//! in-memory ceiling of the same reads. A second table
//! puts each get cell against a model of a pool that costs nothing beyond
//! the `pread` itself: the in-memory get plus one raw `pread` per page the
//! pool loaded in that cell (its pages loaded per get), so it separates
//! the pool's own overhead from the cost of the tree's work. `insert` (one
//! thread, every key once in a spread order into a new file) runs with a
//! 1 GiB pool and with the small pool (data ends at ~4x of it: the insert
//! target of issue 7), the two builds alternating in twenty chunks of keys.
//!
//! Run: `cargo bench -p crabtree --bench pool_oom`. Quick:
//! `CRABTREE_BENCH_KEYS=200000 CRABTREE_BENCH_SECS=1 CRABTREE_BENCH_ROUNDS=1`.

use crabtree::io::FileStorage;
use crabtree::raw::{BTree, BufferPool, PoolOptions, PoolStats};
use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[path = "../examples/shared/zipf.rs"]
mod zipf;
use zipf::Zipf;

const PAGE_SIZE: usize = 4096;
const VALUE_SIZE: usize = 100;
const BATCH: u64 = 32;
const SCAN_LEN: usize = 100;
const SPREAD_PRIME: u64 = 2_147_483_647;
/// Stretches a cell's raw loop and crabtree run are cut into, alternating.
const SLICES: usize = 10;

thread_local! {
    /// The raw loops' page buffer, one per thread, reused.
    static RAW_BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; PAGE_SIZE]);
    /// The raw loops' own open of the file, one per thread (as each of
    /// fio's jobs opens the file), made at the thread's first read.
    static RAW_FILE: std::cell::RefCell<Option<File>> = const { std::cell::RefCell::new(None) };
    /// The read/rewrite loop's own open of the copy, read-write.
    static RAW_RW_FILE: std::cell::RefCell<Option<File>> = const { std::cell::RefCell::new(None) };
}

/// Runs `op` with this thread's own read-write open of `path` (the copy
/// the read/rewrite loop writes) and its page buffer.
fn with_own_rw_file(path: &Path, op: impl FnOnce(&File, &mut [u8])) {
    RAW_RW_FILE.with_borrow_mut(|file| {
        let file = file.get_or_insert_with(|| {
            std::fs::OpenOptions::new().read(true).write(true).open(path).expect("raw read-write open")
        });
        RAW_BUFFER.with_borrow_mut(|buf| op(file, buf));
    });
}

/// Runs `read` with this thread's own open of `path` and its page buffer.
fn with_own_file(path: &Path, read: impl FnOnce(&File, &mut [u8])) {
    RAW_FILE.with_borrow_mut(|file| {
        let file = file.get_or_insert_with(|| File::open(path).expect("raw open"));
        RAW_BUFFER.with_borrow_mut(|buf| read(file, buf));
    });
}

/// Whether `CRABTREE_BENCH_WORKLOADS` (comma list of name prefixes; one
/// ending in `$` names a workload exactly) asks for `name`; all when unset.
fn workload_on(name: &str) -> bool {
    std::env::var("CRABTREE_BENCH_WORKLOADS")
        .map(|list| {
            list.split(',').map(str::trim).any(|w| match w.strip_suffix('$') {
                Some(exact) => name == exact,
                None => name.starts_with(w),
            })
        })
        .unwrap_or(true)
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn env_parse<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text.replace('_', "").parse().unwrap_or_else(|_| panic!("{name}={text} does not parse")),
        Err(_) => default,
    }
}

fn key(i: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&splitmix(i).to_be_bytes());
    key[8..].copy_from_slice(&i.to_be_bytes());
    key
}

fn value(i: u64) -> [u8; VALUE_SIZE] {
    let mut value = [(i % 251) as u8; VALUE_SIZE];
    value[..8].copy_from_slice(&i.to_le_bytes());
    value
}

/// One measurement: operations per second and p99 latency.
#[derive(Clone, Copy)]
struct Cell {
    ops: f64,
    p99: Duration,
    /// Pages the pool loaded during the cell, per operation.
    loads_per_op: f64,
}

/// Runs `op(thread, rng)` on `threads` threads for `secs`; every 8th
/// operation is timed for the p99.
fn timed(threads: usize, secs: f64, op: impl Fn(&mut fastrand::Rng) + Sync) -> Cell {
    Slice::merge(&[Slice::run(threads, secs, &op, None)])
}

/// One stretch of a measurement: operations, seconds, latency samples and
/// the pool's page loads.
struct Slice {
    ops: u64,
    secs: f64,
    samples: Vec<u32>,
    loads: u64,
}

/// Seeds differ between slices, so a cell cut into slices does not replay
/// the same keys in each.
static SLICE_SEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Slice {
    /// Runs `op` on `threads` threads for `secs`, counting the pool's loads
    /// (`loads`: the pool's counter) when given.
    fn run(
        threads: usize,
        secs: f64,
        op: &(impl Fn(&mut fastrand::Rng) + Sync),
        loads: Option<&dyn Fn() -> u64>,
    ) -> Slice {
        let loads_before = loads.map_or(0, |loads| loads());
        let seed = SLICE_SEED.fetch_add(1, Ordering::Relaxed);
        let stop = AtomicBool::new(false);
        let start = Instant::now();
        let results: Vec<(u64, Vec<u32>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|thread| {
                    let stop = &stop;
                    scope.spawn(move || {
                        let mut rng = fastrand::Rng::with_seed(splitmix(seed) ^ (thread as u64 * 7919 + 1));
                        let mut done = 0u64;
                        let mut samples = Vec::new();
                        while !stop.load(Ordering::Relaxed) {
                            for n in 0..BATCH {
                                if n % 8 == 0 {
                                    let t = Instant::now();
                                    op(&mut rng);
                                    samples.push(t.elapsed().as_nanos().min(u32::MAX as u128) as u32);
                                } else {
                                    op(&mut rng);
                                }
                            }
                            done += BATCH;
                        }
                        (done, samples)
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_secs_f64(secs));
            stop.store(true, Ordering::Relaxed);
            handles.into_iter().map(|h| h.join().expect("bench thread")).collect()
        });
        let secs = start.elapsed().as_secs_f64();
        let ops = results.iter().map(|(n, _)| n).sum();
        let samples = results.into_iter().flat_map(|(_, s)| s).collect();
        Slice { ops, secs, samples, loads: loads.map_or(0, |loads| loads() - loads_before) }
    }

    /// One cell from its slices.
    fn merge(slices: &[Slice]) -> Cell {
        let ops: u64 = slices.iter().map(|s| s.ops).sum();
        let secs: f64 = slices.iter().map(|s| s.secs).sum();
        let mut all: Vec<u32> = slices.iter().flat_map(|s| s.samples.iter().copied()).collect();
        all.sort_unstable();
        let p99 = all.get(all.len() * 99 / 100).copied().unwrap_or(0);
        let loads: u64 = slices.iter().map(|s| s.loads).sum();
        Cell {
            ops: ops as f64 / secs,
            p99: Duration::from_nanos(p99 as u64),
            loads_per_op: loads as f64 / ops.max(1) as f64,
        }
    }
}

/// The raw loop and crabtree, `secs` each, cut into `SLICES` alternating
/// stretches so that the host's drift falls on both alike (on a shared
/// virtual machine it moves rates by up to 20% within seconds). `cold`:
/// the OS page cache is dropped before every stretch (`drop_os_cache`).
fn timed_pair(
    threads: usize,
    secs: f64,
    base: &(dyn Fn(&mut fastrand::Rng) + Sync),
    ours: &(dyn Fn(&mut fastrand::Rng) + Sync),
    loads: &dyn Fn() -> u64,
    cold: bool,
) -> (Cell, Cell) {
    let (mut base_slices, mut our_slices) = (Vec::new(), Vec::new());
    for _ in 0..SLICES {
        if cold {
            drop_os_cache();
        }
        base_slices.push(Slice::run(threads, secs / SLICES as f64, &base, None));
        if cold {
            drop_os_cache();
        }
        our_slices.push(Slice::run(threads, secs / SLICES as f64, &ours, Some(loads)));
    }
    (Slice::merge(&base_slices), Slice::merge(&our_slices))
}

/// Whether `fio` runs here.
fn fio_available() -> bool {
    std::process::Command::new("fio").arg("--version").output().is_ok_and(|out| out.status.success())
}

/// fio's rate, reads per second, for `threads` jobs (threads) of 4 KiB
/// random `psync` reads of `path` for `secs`, the page cache kept.
fn fio_rate(path: &Path, threads: usize, secs: f64) -> f64 {
    let out = std::process::Command::new("fio")
        .args(["--name=r", "--rw=randread", "--bs=4k", "--ioengine=psync", "--thread", "--time_based"])
        .args(["--invalidate=0", "--group_reporting", "--output-format=terse"])
        .arg(format!("--filename={}", path.display()))
        .arg(format!("--numjobs={threads}"))
        .arg(format!("--runtime={}ms", (secs * 1000.0).round().max(1.0)))
        .output()
        .expect("run fio");
    assert!(out.status.success(), "fio failed: {}", String::from_utf8_lossy(&out.stderr));
    // Terse format 3: field 8 (from 1) is the read IOPS.
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("3;")).expect("fio terse line");
    line.split(';').nth(7).and_then(|f| f.parse().ok()).expect("fio read IOPS")
}

/// Uniform gets (`get`) against fio, `secs` each, alternating in `SLICES`
/// stretches; returns crabtree's cell and fio's rate.
fn against_fio(path: &Path, threads: usize, secs: f64, get: &(dyn Fn(&mut fastrand::Rng) + Sync)) -> (Cell, f64) {
    let slice = secs / SLICES as f64;
    let (mut ours, mut fio_reads) = (Vec::new(), 0.0);
    for _ in 0..SLICES {
        ours.push(Slice::run(threads, slice, &get, None));
        fio_reads += fio_rate(path, threads, slice) * slice;
    }
    (Slice::merge(&ours), fio_reads / secs)
}

/// Drops the OS page cache: syncs every file first (the cache keeps dirty
/// pages, such as those the get/update cell wrote back, so without the
/// sync a file written to stays cached), then drops the clean pages. Needs
/// root, and a kernel that allows it; false where it may not.
fn drop_os_cache() -> bool {
    // The `sync` command: no binding of sync(2) needed here.
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok()
}

/// A pool setting on against off for the same op (`set`), `secs` each,
/// alternating in `SLICES` stretches; also the share of the loads made
/// with the setting on that `counted` counts (pool stats).
fn setting_on_against_off(
    threads: usize,
    secs: f64,
    op: &(dyn Fn(&mut fastrand::Rng) + Sync),
    pool: &BufferPool,
    set: &dyn Fn(bool),
    counted: &dyn Fn(&PoolStats) -> u64,
) -> (Cell, Cell, f64) {
    let loads = || pool.stats().loads;
    let (mut on, mut off) = (Vec::new(), Vec::new());
    let (mut loaded, mut loaded_counted) = (0, 0);
    for _ in 0..SLICES {
        set(false);
        off.push(Slice::run(threads, secs / SLICES as f64, &op, Some(&loads)));
        set(true);
        let before = pool.stats();
        on.push(Slice::run(threads, secs / SLICES as f64, &op, Some(&loads)));
        let after = pool.stats();
        loaded += after.loads - before.loads;
        loaded_counted += counted(&after) - counted(&before);
    }
    (Slice::merge(&on), Slice::merge(&off), loaded_counted as f64 / loaded.max(1) as f64)
}

/// Bulk-loads the file; returns its size and the in-memory get rates with
/// 1 and 2 threads.
fn build(path: &Path, keys: u64, secs: f64, threads: &[usize]) -> (u64, Vec<(usize, f64)>) {
    let big = PoolOptions { page_size: PAGE_SIZE, pool_bytes: 1 << 30, max_pages: 1 << 22 };
    let pool = BufferPool::create(Arc::new(FileStorage::open(path, true).expect("create file")), big).expect("pool");
    let tree = BTree::create(Arc::new(pool)).expect("tree");
    let mut sorted: Vec<([u8; 16], u64)> = (0..keys).map(|i| (key(i), i)).collect();
    sorted.sort_unstable();
    tree.bulk_load(sorted.iter().map(|(k, i)| (*k, value(*i)))).expect("bulk load");
    tree.flush().expect("flush");
    // The ceiling: the same gets with every page resident.
    let get = |rng: &mut fastrand::Rng| {
        let i = rng.u64(0..keys);
        let found = tree.get(&key(i)).expect("get").expect("key present");
        assert_eq!(found[..8], i.to_le_bytes());
    };
    let mut in_memory = Vec::new();
    for n in in_memory_threads(threads) {
        let cell = timed(n, secs, get);
        println!("in memory (every page resident): get x{n} {:.0}/s, p99 {:?}", cell.ops, cell.p99);
        in_memory.push((n, cell.ops));
    }
    (std::fs::metadata(path).expect("stat").len(), in_memory)
}

/// The thread counts of the in-memory ceiling: 1, 2 and each count of
/// `threads` up to the machine's cores (more threads than cores cannot
/// read faster from memory than the cores do).
fn in_memory_threads(threads: &[usize]) -> Vec<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut list: Vec<usize> = [1, 2].iter().chain(threads).map(|&n| n.clamp(1, cores.max(1))).collect();
    list.sort_unstable();
    list.dedup();
    list
}

/// The in-memory ceiling for `threads` readers: the measured count nearest
/// below it (the cores' count for more threads than cores).
fn ceiling(in_memory: &[(usize, f64)], threads: usize) -> f64 {
    in_memory.iter().rev().find(|(n, _)| *n <= threads).or(in_memory.first()).map_or(f64::NAN, |c| c.1)
}

/// Inserts every key once, in a spread order, into two new trees on new
/// files in `dir`, with pools of `pool_bytes[0]` and `pool_bytes[1]`,
/// alternating in twenty chunks of keys so the host's drift falls on both
/// alike (both trees grow in step); returns each one's inserts per second.
fn insert_rates(dir: &Path, keys: u64, pool_bytes: [usize; 2]) -> [f64; 2] {
    let trees: Vec<(std::path::PathBuf, BTree)> = pool_bytes
        .iter()
        .enumerate()
        .map(|(n, &bytes)| {
            let path = dir.join(format!("insert-{n}.crab"));
            let opts = PoolOptions { page_size: PAGE_SIZE, pool_bytes: bytes, max_pages: 1 << 22 };
            let storage = Arc::new(FileStorage::open(&path, true).expect("create"));
            let tree = BTree::create(Arc::new(BufferPool::create(storage, opts).expect("pool"))).expect("tree");
            (path, tree)
        })
        .collect();
    let mut secs = [0.0; 2];
    let chunk = keys.div_ceil(20).max(1);
    for first in (0..keys).step_by(chunk as usize) {
        for (which, (_, tree)) in trees.iter().enumerate() {
            let start = Instant::now();
            for n in first..(first + chunk).min(keys) {
                // A permutation of 0..keys in a spread order: n * P mod keys
                // with P prime (and keys not a multiple of it).
                let i = ((n as u128 * SPREAD_PRIME as u128) % keys as u128) as u64;
                tree.insert(&key(i), &value(i)).expect("insert");
            }
            secs[which] += start.elapsed().as_secs_f64();
        }
    }
    for (path, tree) in trees {
        drop(tree);
        let _ = std::fs::remove_file(path);
    }
    [keys as f64 / secs[0], keys as f64 / secs[1]]
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let keys: u64 = env_parse("CRABTREE_BENCH_KEYS", 1_000_000);
    let secs: f64 = env_parse("CRABTREE_BENCH_SECS", 3.0);
    let rounds: usize = env_parse("CRABTREE_BENCH_ROUNDS", 3usize).max(1);
    let ratio: u64 = env_parse("CRABTREE_BENCH_RATIO", 4);
    let threads: Vec<usize> = std::env::var("CRABTREE_BENCH_THREADS")
        .map(|list| list.split(',').map(|t| t.trim().parse().expect("thread count")).collect())
        .unwrap_or_else(|_| vec![1, 2, 8]);
    let dir = match std::env::var("CRABTREE_BENCH_DIR") {
        Ok(dir) => tempfile::tempdir_in(dir),
        Err(_) => tempfile::tempdir(),
    }
    .expect("temp dir");
    let path = dir.path().join("oom.crab");
    let (file_bytes, in_memory) = build(&path, keys, secs, &threads);
    let pool_bytes = (file_bytes / ratio) as usize;
    let opts = PoolOptions { page_size: PAGE_SIZE, pool_bytes, max_pages: 1 << 22 };
    if workload_on("insert") {
        let [memory, small] = insert_rates(dir.path(), keys, [1 << 30, pool_bytes]);
        println!(
            "insert x1 (random order, alternating chunks): 1024 MiB pool {memory:.0}/s, {} MiB pool (1/ratio of the bulk-loaded file) {small:.0}/s, ratio {:.2}",
            pool_bytes >> 20,
            small / memory
        );
    }
    let pool = BufferPool::open(Arc::new(FileStorage::open(&path, false).expect("open")), opts).expect("open pool");
    let tree = BTree::open(Arc::new(pool)).expect("open tree");
    let shared = File::open(&path).expect("raw open");
    let pages = file_bytes / PAGE_SIZE as u64;
    eprintln!(
        "pool_oom bench: {keys} keys, file {} MiB, pool {} MiB (1/{ratio}), {secs} s x {rounds} rounds, threads {threads:?}",
        file_bytes >> 20,
        pool_bytes >> 20,
    );
    // Each thread reads through its own open of the file into a buffer of
    // its own, kept from one read to the next, as each of fio's jobs does:
    // a fresh zeroed array per read put a 4 KiB `memset` into every raw
    // read, and one open shared by the threads makes every `pread` of
    // every thread write one line, the open's reference count (see the
    // `pread shared` row).
    let pread = |rng: &mut fastrand::Rng| {
        with_own_file(&path, |file, buf| {
            file.read_exact_at(buf, rng.u64(1..pages) * PAGE_SIZE as u64).expect("pread");
            black_box(&buf);
        });
    };
    // The raw loop reads as fio's psync engine does, through glibc's
    // `pread`; crabtree's `FileStorage` makes the system call itself
    // (rustix), which skips glibc's cancellation-point switches. The
    // `pread syscall` row puts the two raw loops side by side.
    let pread_syscall = |rng: &mut fastrand::Rng| {
        with_own_file(&path, |file, buf| {
            let read = rustix::io::pread(file, &mut buf[..], rng.u64(1..pages) * PAGE_SIZE as u64).expect("pread");
            assert_eq!(read, PAGE_SIZE);
            black_box(&buf);
        });
    };
    // The raw loop through one open shared by all threads.
    let pread_shared = |rng: &mut fastrand::Rng| {
        RAW_BUFFER.with_borrow_mut(|buf| {
            shared.read_exact_at(buf, rng.u64(1..pages) * PAGE_SIZE as u64).expect("pread");
            black_box(&buf);
        });
    };
    // The read/rewrite loop's copy of the file (only if a mix cell runs).
    let copy = dir.path().join("read-rewrite.copy");
    if workload_on("get/update 50/50 vs read/rewrite") {
        std::fs::copy(&path, &copy).expect("copy the file");
    }
    let read_rewrite = |rng: &mut fastrand::Rng| {
        with_own_rw_file(&copy, |file, buf| {
            let at = rng.u64(1..pages) * PAGE_SIZE as u64;
            file.read_exact_at(buf, at).expect("pread");
            if rng.bool() {
                buf[PAGE_SIZE / 2] = buf[PAGE_SIZE / 2].wrapping_add(1);
                file.write_all_at(buf, at).expect("pwrite");
            }
            black_box(&buf);
        });
    };
    let get = |rng: &mut fastrand::Rng| {
        let i = rng.u64(0..keys);
        let found = tree.get(&key(i)).expect("get").expect("key present");
        assert_eq!(found[..8], i.to_le_bytes());
    };
    let zipf = Zipf::new(keys, 0.99);
    let get_zipf = |rng: &mut fastrand::Rng| {
        // Rank r is hashed to a key index so hot keys are spread over the
        // tree, as in YCSB's scrambled zipfian.
        let i = splitmix(zipf.rank(rng)) % keys;
        let found = tree.get(&key(i)).expect("get").expect("key present");
        assert_eq!(found[..8], i.to_le_bytes());
    };
    let scan = |rng: &mut fastrand::Rng| {
        let start = key(rng.u64(0..keys));
        let mut seen = 0;
        for entry in tree.seek(&start).take(SCAN_LEN) {
            black_box(entry.expect("scan"));
            seen += 1;
        }
        assert!(seen > 0);
    };
    let mixed = |rng: &mut fastrand::Rng| {
        let i = rng.u64(0..keys);
        if rng.bool() {
            black_box(tree.get(&key(i)).expect("get"));
        } else {
            tree.insert(&key(i), &value(i)).expect("update");
        }
    };
    // Warm-up: fill the pool and the OS page cache.
    timed(2, secs.min(2.0), get);
    timed(2, secs.min(1.0), pread);
    type Op<'a> = &'a (dyn Fn(&mut fastrand::Rng) + Sync);
    let mut table: Vec<(String, Vec<Cell>, Vec<Cell>)> = Vec::new();
    type Fill = (&'static str, usize, Vec<Cell>, Vec<Cell>, f64);
    let mut fills: Vec<Fill> = Vec::new();
    let fio = workload_on("get vs fio") && fio_available();
    if workload_on("get vs fio") && !fio {
        eprintln!("  skipped: get vs fio (no fio on the PATH)");
    }
    let mut against: Vec<(usize, Vec<f64>, Vec<f64>)> = Vec::new();
    for &n in &threads {
        // Each against the raw read-only loop, but the last.
        let workloads = [
            ("pread syscall", &pread_syscall as Op, &pread as Op),
            ("pread shared", &pread_shared as Op, &pread as Op),
            ("get", &get as Op, &pread as Op),
            ("get zipf 0.99", &get_zipf as Op, &pread as Op),
            ("scan100", &scan as Op, &pread as Op),
            ("get/update 50/50", &mixed as Op, &pread as Op),
            ("get/update 50/50 vs read/rewrite", &mixed as Op, &read_rewrite as Op),
        ];
        for (name, op, raw_op) in workloads {
            if !workload_on(name) {
                continue;
            }
            let (mut ours, mut base) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                let (raw, crabtree) = timed_pair(n, secs, raw_op, op, &|| tree.pool().stats().loads, false);
                base.push(raw);
                ours.push(crabtree);
            }
            eprintln!("  done: {name} x{n}");
            table.push((format!("{name} x{n}"), ours, base));
        }
        if fio {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                let (crabtree, fio_ops) = against_fio(&path, n, secs, &get);
                ours.push(crabtree.ops);
                theirs.push(fio_ops);
            }
            eprintln!("  done: get vs fio x{n}");
            against.push((n, ours, theirs));
        }
        if workload_on("get cold-cache") {
            if !drop_os_cache() {
                eprintln!("  skipped: get cold-cache x{n} (cannot drop the OS page cache: needs root)");
            } else {
                let (mut ours, mut base) = (Vec::new(), Vec::new());
                for _ in 0..rounds {
                    let (raw, crabtree) = timed_pair(n, secs, &pread, &get, &|| tree.pool().stats().loads, true);
                    base.push(raw);
                    ours.push(crabtree);
                }
                eprintln!("  done: get cold-cache x{n}");
                table.push((format!("get cold-cache x{n}"), ours, base));
            }
        }
        let pool = tree.pool();
        type Setting<'a> = (&'static str, &'a dyn Fn(bool), &'a dyn Fn(&PoolStats) -> u64, bool);
        let settings: [Setting; 2] = [
            ("direct-vs-copy", &|on| pool.set_direct_read(on), &|stats| stats.direct_loads, pool.direct_read_active()),
            ("uncached-vs-cached", &|on| pool.set_uncached_reads(on), &|stats| stats.uncached_reads, true),
        ];
        for (name, set, counted, available) in settings {
            if !workload_on(&format!("get {name}")) || !available {
                continue;
            }
            let (mut with, mut without, mut shares) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds {
                let (on, off, share) = setting_on_against_off(n, secs, &get, pool, set, counted);
                with.push(on);
                without.push(off);
                shares.push(share);
            }
            // Leave the defaults on.
            set(true);
            eprintln!("  done: get {name} x{n}");
            fills.push((name, n, with, without, median(shares)));
        }
    }
    let stats = tree.pool().stats();
    println!("| workload | crabtree ops/s | p99 | raw loop ops/s (pread, or as named) | ratio (median of rounds) |");
    println!("|---|---|---|---|---|");
    for (name, ours, base) in &table {
        let ratios: Vec<f64> = ours.iter().zip(base).map(|(o, b)| o.ops / b.ops).collect();
        let p99 = median(ours.iter().map(|c| c.p99.as_secs_f64() * 1e6).collect());
        println!(
            "| {name} | {:.0} | {p99:.0} µs | {:.0} | {:.2} ({:.2}-{:.2}) |",
            median(ours.iter().map(|c| c.ops).collect()),
            median(base.iter().map(|c| c.ops).collect()),
            median(ratios.clone()),
            ratios.iter().copied().fold(f64::INFINITY, f64::min),
            ratios.iter().copied().fold(0.0, f64::max),
        );
    }
    // What a pool with no cost beyond the `pread` itself would do: each get
    // is the in-memory get (every page resident, same thread count; the
    // cores' count for more threads, as the cores are what limit them) plus one
    // raw `pread` per page the pool loaded. The in-memory get pays cache
    // misses on its leaf that a get which just loaded its leaf does not,
    // so the model is a slightly low ceiling, not an exact one.
    println!();
    println!(
        "| workload | pages loaded per get | zero-overhead pool gets/s (model) | model / raw pread | crabtree / model | time per load / raw pread |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, ours, base) in &table {
        if !name.starts_with("get x") && !name.starts_with("get zipf") {
            continue;
        }
        let threads: usize = name.rsplit(" x").next().and_then(|n| n.parse().ok()).unwrap_or(1);
        let memory = ceiling(&in_memory, threads);
        let loads = median(ours.iter().map(|c| c.loads_per_op).collect());
        let pread = median(base.iter().map(|c| c.ops).collect());
        let model = 1.0 / (1.0 / memory + loads / pread);
        let achieved = median(ours.iter().map(|c| c.ops).collect());
        // The same comparison per page loaded: the time a get took beyond
        // the in-memory get, per load, against one raw `pread` (both rates
        // are aggregates over the cell's threads, so the ratio holds).
        let per_load = (1.0 / achieved - 1.0 / memory) / loads.max(f64::MIN_POSITIVE);
        println!(
            "| {name} | {loads:.2} | {model:.0} | {:.2} | {:.2} | {:.2} |",
            model / pread,
            achieved / model,
            per_load * pread
        );
    }
    if !against.is_empty() {
        println!();
        println!(
            "| uniform get against fio (psync, same file) | crabtree gets/s | fio reads/s | ratio (median of rounds) |"
        );
        println!("|---|---|---|---|");
        for (n, ours, theirs) in &against {
            let ratios: Vec<f64> = ours.iter().zip(theirs).map(|(o, t)| o / t).collect();
            println!(
                "| x{n} | {:.0} | {:.0} | {:.2} ({:.2}-{:.2}) |",
                median(ours.clone()),
                median(theirs.clone()),
                median(ratios.clone()),
                ratios.iter().copied().fold(f64::INFINITY, f64::min),
                ratios.iter().copied().fold(0.0, f64::max),
            );
        }
    }
    for (setting, header) in [
        (
            "direct-vs-copy",
            "| uniform get | pread into the frame, gets/s | of its loads, straight into the frame | pread into a buffer + copy, gets/s | ratio (median of rounds) |",
        ),
        (
            "uncached-vs-cached",
            "| uniform get | uncached reads on, gets/s | of its loads, uncached | every miss cached, gets/s | ratio (median of rounds) |",
        ),
    ] {
        let rows: Vec<_> = fills.iter().filter(|(name, ..)| *name == setting).collect();
        if rows.is_empty() {
            continue;
        }
        println!();
        println!("{header}");
        println!("|---|---|---|---|---|");
        for (_, n, with, without, share) in rows {
            let ratios: Vec<f64> = with.iter().zip(without).map(|(w, o)| w.ops / o.ops).collect();
            println!(
                "| x{n} | {:.0} | {:.0}% | {:.0} | {:.3} ({:.3}-{:.3}) |",
                median(with.iter().map(|c| c.ops).collect()),
                share * 100.0,
                median(without.iter().map(|c| c.ops).collect()),
                median(ratios.clone()),
                ratios.iter().copied().fold(f64::INFINITY, f64::min),
                ratios.iter().copied().fold(0.0, f64::max),
            );
        }
    }
    println!("pool stats at the end: {stats:?}");
}
