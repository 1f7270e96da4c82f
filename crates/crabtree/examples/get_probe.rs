//! A fixed number of point reads, to count the instructions of one get or
//! profile it: `valgrind --tool=callgrind --toggle-collect='get_probe::measured'`
//! counts only the measured gets (divide by GETS); `perf record -e
//! cpu-clock -g` samples them (after the load, which is shorter).
//!
//! Two trees, both of 16-byte keys (8 random bytes, then the index) and
//! 100-byte values on 4 KiB pages, as in the `pool_oom` bench:
//! * `memory KEYS GETS`: KEYS keys inserted in random order, the pool
//!   large enough for all of them, storage in memory;
//! * `file KEYS GETS`: KEYS keys bulk-loaded into a file in a temporary
//!   directory, reopened with a pool of a quarter of the file and warmed
//!   with GETS gets; most measured gets then read their leaf with `pread`
//!   (the larger-than-memory path).
//!
//! Prints nanoseconds per measured get (wall time over the gets of one
//! thread) and the pool's counters. `PROBE_THREADS=N` runs N threads that
//! each make GETS measured operations at once. Built with
//! the crate's dev-dependencies, so with the `failpoints` feature (a few
//! checks a get, about 20 instructions).
//!
//! Run with `cargo run --release --example get_probe -- file 1000000 100000`.

use crabtree::io::{FileStorage, MemStorage};
use crabtree::raw::{BTree, BufferPool, PoolOptions};
use std::sync::Arc;
use std::time::Instant;

#[path = "shared/keys.rs"]
mod keys;
#[path = "shared/tree_file.rs"]
mod tree_file;
use keys::{key, splitmix};
use tree_file::value;

const PAGE_SIZE: usize = 4096;

/// One measured get (kept out of line so a profiler can select it).
#[inline(never)]
fn measured(tree: &BTree, i: u64) -> usize {
    let found = tree.get(&key(i)).expect("get").expect("key present");
    assert_eq!(found[..8], i.to_le_bytes());
    found.len()
}

/// One measured scan of `len` entries from the key of index `i` on.
#[inline(never)]
fn measured_scan(tree: &BTree, i: u64, len: usize) -> usize {
    let mut bytes = 0;
    for entry in tree.seek(&key(i)).take(len) {
        let (_, value) = entry.expect("scan");
        bytes += value.len();
    }
    bytes
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: get_probe memory|file KEYS GETS [SCAN]";
    let mode = args.next().ok_or(usage)?;
    let keys: u64 = args.next().ok_or(usage)?.parse()?;
    let gets: u64 = args.next().ok_or(usage)?.parse()?;
    let scan: Option<usize> = args.next().map(|len| len.parse()).transpose()?;
    if keys == 0 {
        return Err("KEYS must be at least 1".into());
    }
    let big = PoolOptions { page_size: PAGE_SIZE, pool_bytes: 2 << 30, max_pages: 1 << 22 };
    let dir = tempfile::tempdir()?;
    let tree = match mode.as_str() {
        "memory" => {
            let tree = BTree::create(Arc::new(BufferPool::create(Arc::new(MemStorage::new()), big.clone())?))?;
            // A key begins with a hash of its index: in index order, the
            // keys arrive in random key order.
            for i in 0..keys {
                tree.insert(&key(i), &value(i))?;
            }
            tree
        }
        "file" => {
            let path = dir.path().join("probe.crab");
            let bytes = tree_file::write(&path, keys, big.clone())?;
            let small = PoolOptions { pool_bytes: bytes / 4, ..big };
            let tree = BTree::open(Arc::new(BufferPool::open(Arc::new(FileStorage::open(&path, false)?), small)?))?;
            for j in 0..gets {
                measured(&tree, splitmix(j ^ 0xC01D) % keys);
            }
            tree
        }
        _ => return Err(usage.into()),
    };
    // `PROBE_THREADS` threads (default 1) each make GETS operations.
    let threads: u64 = std::env::var("PROBE_THREADS").map_or(Ok(1), |n| n.parse())?;
    let started = Instant::now();
    let bytes: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|t| {
                let tree = &tree;
                scope.spawn(move || {
                    let mut bytes = 0;
                    for j in t * gets..(t + 1) * gets {
                        bytes += match scan {
                            Some(len) => measured_scan(tree, splitmix(j) % keys, len),
                            None => measured(tree, splitmix(j) % keys),
                        };
                    }
                    bytes
                })
            })
            .collect();
        workers.into_iter().map(|worker| worker.join().expect("probe thread")).sum()
    });
    let elapsed = started.elapsed();
    let what = scan.map_or("get".to_string(), |len| format!("scan of {len}"));
    println!(
        "{mode}: {keys} keys, {gets} operations, {:.0} ns a {what} ({bytes} value bytes read)",
        elapsed.as_nanos() as f64 / gets.max(1) as f64
    );
    println!("pool: {:?}", tree.pool().stats());
    Ok(())
}
