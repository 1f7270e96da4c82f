//! Helpers shared by the tree tests: building a tree on a storage, clean
//! close and reopen, the structural check, test sizes and seeds.

#![allow(dead_code)]

pub mod child;
pub mod crash;
pub mod scenario;

use crabtree::io::Storage;
use crabtree::raw::{BTree, BufferPool, PoolOptions, VerifyReport};
use std::sync::Arc;

/// A 16-byte key for `i`, spread over the key space (a multiplicative
/// hash in front, `i` behind so keys stay distinct): random-order inserts
/// without a random number generator.
pub fn spread_key(i: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    key[8..].copy_from_slice(&i.to_be_bytes());
    key
}

/// Whether `CRABTREE_TEST_SIZE=long` asks for the long tier.
pub fn long() -> bool {
    std::env::var("CRABTREE_TEST_SIZE").as_deref() == Ok("long")
}

/// Threads for a stress test: `CRABTREE_TEST_THREADS`, else `default`
/// (machines with many cores run more with it).
pub fn threads(default: usize) -> usize {
    std::env::var("CRABTREE_TEST_THREADS")
        .ok()
        .map(|text| text.parse().expect("CRABTREE_TEST_THREADS must be a thread count"))
        .unwrap_or(default)
        .max(1)
}

/// The seed from `CRABTREE_SEED`, else one from the clock; printed so a
/// failing run can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("CRABTREE_SEED") {
        Ok(text) => text.parse().expect("CRABTREE_SEED must be a u64"),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
    };
    eprintln!("{test}: seed {seed} (replay with CRABTREE_SEED={seed})");
    seed
}

/// Pool options with a budget of `frames` pages.
pub fn options(page_size: usize, frames: usize) -> PoolOptions {
    PoolOptions { page_size, pool_bytes: page_size * frames, max_pages: 1 << 20 }
}

/// A new empty tree on empty `storage`.
pub fn create(storage: Arc<dyn Storage>, options: &PoolOptions) -> BTree {
    let pool = BufferPool::create(storage, options.clone()).unwrap();
    BTree::create(Arc::new(pool)).unwrap()
}

/// Clean close (flush, drop the tree and its pool) and reopen on the same
/// storage.
pub fn reopen(tree: BTree, storage: &Arc<dyn Storage>, options: &PoolOptions) -> BTree {
    tree.flush().unwrap();
    let pool = Arc::clone(tree.pool());
    drop(tree);
    assert_eq!(Arc::strong_count(&pool), 1, "someone still holds the pool");
    drop(pool);
    let pool = BufferPool::open(Arc::clone(storage), options.clone()).unwrap();
    BTree::open(Arc::new(pool)).unwrap()
}

/// Runs `verify` and fails with the first violations if it finds any.
pub fn verified(tree: &BTree) -> VerifyReport {
    let report = tree.verify().unwrap();
    assert!(
        report.is_ok(),
        "verify: {} violations, first: {:#?}",
        report.violations.len(),
        &report.violations[..report.violations.len().min(10)]
    );
    report
}

/// Every entry of the tree, by a forward scan.
pub fn contents(tree: &BTree) -> Vec<(Vec<u8>, Vec<u8>)> {
    tree.range::<&[u8], _>(..).map(|entry| entry.unwrap()).collect()
}

/// Fails the test process if it is still alive after `limit` (a hang in
/// the tree: a latch cycle or a descent that never ends). Disarmed on drop.
pub struct Watchdog {
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl Watchdog {
    pub fn arm(what: &str, seed: u64, limit: std::time::Duration) -> Watchdog {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&done);
        let what = what.to_string();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + limit;
            while std::time::Instant::now() < deadline {
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            eprintln!("{what}: still running after {limit:?}: hang (seed {seed}); attach gdb to see the latch waits");
            std::process::exit(101);
        });
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
