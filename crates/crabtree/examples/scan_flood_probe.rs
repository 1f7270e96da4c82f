//! Does a scan of a whole larger-than-memory tree push the hot pages of
//! point reads out of the pool (cache pollution)?
//!
//! KEYS keys (16 bytes, 100-byte values, as in the `pool_oom` bench) are
//! bulk-loaded into a file, which is reopened with a pool of 1/RATIO of its
//! size and warmed with 3M zipfian gets (theta 0.99, scrambled as in YCSB).
//! Then, for three rounds, one thread runs zipfian gets for SECS seconds
//! alone, then as long again while a second thread scans the whole tree
//! over and over. Prints gets per second, entries scanned per second, and
//! the pool's loads and uncached reads in each interval: if the scans
//! evicted the gets' hot pages, the gets' misses (uncached reads, which
//! only point reads make) would rise beside the scanner.
//!
//! Run with `cargo run --release -p crabtree --example scan_flood_probe --
//! 1000000 4 3`.

use crabtree::io::FileStorage;
use crabtree::raw::{BTree, BufferPool, PoolOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "shared/keys.rs"]
mod keys;
#[path = "shared/tree_file.rs"]
mod tree_file;
#[path = "shared/zipf.rs"]
mod zipf;
use keys::{key, splitmix};
use zipf::Zipf;

/// Scans the whole tree until `stop`, counting entries into `scanned`.
fn scan_until(tree: &BTree, stop: &AtomicBool, scanned: &AtomicU64) {
    while !stop.load(Ordering::Relaxed) {
        for (n, entry) in tree.range::<&[u8], _>(..).enumerate() {
            entry.expect("scan");
            if n % 1024 == 1023 {
                scanned.fetch_add(1024, Ordering::Relaxed);
                if stop.load(Ordering::Relaxed) {
                    return;
                }
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: scan_flood_probe KEYS RATIO SECS";
    let keys: u64 = args.next().ok_or(usage)?.parse()?;
    let ratio: usize = args.next().ok_or(usage)?.parse()?;
    let secs: u64 = args.next().ok_or(usage)?.parse()?;
    if keys == 0 || ratio == 0 {
        return Err(usage.into());
    }
    let big = PoolOptions { page_size: 4096, pool_bytes: 2 << 30, max_pages: 1 << 22 };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("probe.crab");
    let bytes = tree_file::write(&path, keys, big.clone())?;
    let small = PoolOptions { pool_bytes: bytes / ratio, ..big };
    let pool = Arc::new(BufferPool::open(Arc::new(FileStorage::open(&path, false)?), small)?);
    let tree = BTree::open(Arc::clone(&pool))?;
    let zipf = Zipf::new(keys, 0.99);
    let mut rng = fastrand::Rng::with_seed(1);
    let mut get = || {
        let i = splitmix(zipf.rank(&mut rng)) % keys;
        let found = tree.get(&key(i)).expect("get").expect("key present");
        assert_eq!(found[..8], i.to_le_bytes());
    };
    for _ in 0..3_000_000 {
        get();
    }
    println!("file {} MiB, pool {} MiB", bytes >> 20, (bytes / ratio) >> 20);
    for round in 0..3 {
        for scanning in [false, true] {
            let (stop, scanned) = (AtomicBool::new(false), AtomicU64::new(0));
            let before = pool.stats();
            let (gets, elapsed) = std::thread::scope(|scope| {
                if scanning {
                    scope.spawn(|| scan_until(&tree, &stop, &scanned));
                }
                let started = Instant::now();
                let mut gets = 0u64;
                while started.elapsed() < Duration::from_secs(secs) {
                    for _ in 0..1000 {
                        get();
                    }
                    gets += 1000;
                }
                stop.store(true, Ordering::Relaxed);
                (gets, started.elapsed().as_secs_f64())
            });
            let after = pool.stats();
            println!(
                "round {round} {}: zipfian gets {:.0}/s, entries scanned {:.0}/s, loads {}, uncached reads {}",
                if scanning { "beside a whole-tree scanner" } else { "alone" },
                gets as f64 / elapsed,
                scanned.load(Ordering::Relaxed) as f64 / elapsed,
                after.loads - before.loads,
                after.uncached_reads - before.uncached_reads
            );
        }
    }
    Ok(())
}
