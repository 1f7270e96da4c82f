//! Real-thread stress of the tree under constant eviction.
//!
//! Goal: with many threads inserting, updating, removing, reading and
//! scanning overlapping key ranges, while the pool evicts pages under the
//! tree's feet, every thread sees exactly what it can know, scans are
//! ordered without duplicates and miss nothing that was present throughout,
//! and the tree ends structurally sound, holding exactly what was written,
//! also after a clean close and reopen.
//! Method: 8 threads for a bounded time on one tree of 512-byte pages with
//! a 96-frame pool. Thread `t` owns the keys `k` with `k % 8 == t` and is
//! their only writer, so its model of them is exact: `get` of an own key
//! must return the model's value, and a scan (forward, reverse, or mixed
//! next/next_back on one iterator) over a random window of the whole key
//! space must return keys strictly ordered, each with a value that encodes
//! its key, every own key of the window that the model holds (the thread
//! does not write during its scan, so they were present throughout) with
//! its exact value, and no own key the model lacks. Values are mostly small,
//! some overflow. At the end: `verify`, the contents equal the union of the
//! models, `len` matches, the pool evicted, gets read leaves uncached
//! (`buffer/uncached.rs`); then flush, reopen, same again.
//! Size: `CRABTREE_TEST_SIZE=quick|long` (6 s / 120 s); seed printed,
//! replay with `CRABTREE_SEED`.

mod common;

use crabtree::io::{MemStorage, Storage};
use crabtree::raw::BTree;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Writer-scanner threads, unless `CRABTREE_TEST_THREADS` says otherwise.
const THREADS: usize = 8;
const KEYS: u32 = 6000;
const PAGE: usize = 512;
const FRAMES: usize = 96;

fn key(k: u32) -> Vec<u8> {
    // Varying lengths so separators differ in size.
    let mut key = format!("key{k:07}").into_bytes();
    key.resize(key.len() + (k % 5) as usize * 6, b'.');
    key
}

fn key_index(key: &[u8]) -> u32 {
    std::str::from_utf8(&key[3..10]).unwrap().parse().unwrap()
}

/// A value that names its key and version; some are long (overflow).
fn value(k: u32, version: u64, rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut value = format!("{k}:{version}:").into_bytes();
    let extra = if rng.u8(..50) == 0 { rng.usize(200..2500) } else { rng.usize(0..30) };
    value.extend((0..extra).map(|i| (i as u8) ^ (k as u8)));
    value
}

fn value_key(value: &[u8]) -> u32 {
    let end = value.iter().position(|&b| b == b':').unwrap();
    std::str::from_utf8(&value[..end]).unwrap().parse().unwrap()
}

struct Worker<'t> {
    tree: &'t BTree,
    thread: u32,
    threads: u32,
    rng: fastrand::Rng,
    model: BTreeMap<u32, Vec<u8>>,
    version: u64,
}

impl Worker<'_> {
    fn own_key(&mut self) -> u32 {
        self.rng.u32(..KEYS / self.threads) * self.threads + self.thread
    }

    fn step(&mut self) {
        match self.rng.u8(..100) {
            0..=34 => {
                let k = self.own_key();
                self.version += 1;
                let value = value(k, self.version, &mut self.rng);
                let old = self.tree.insert(&key(k), &value).unwrap();
                assert_eq!(old, self.model.insert(k, value), "insert of own key {k}");
            }
            35..=54 => {
                let k = self.own_key();
                assert_eq!(self.tree.remove(&key(k)).unwrap(), self.model.remove(&k), "remove of own key {k}");
            }
            55..=79 => {
                let k = self.own_key();
                assert_eq!(self.tree.get(&key(k)).unwrap().as_ref(), self.model.get(&k), "get of own key {k}");
            }
            _ => self.scan(),
        }
    }

    /// A scan over a random window, checked against what this thread knows.
    fn scan(&mut self) {
        let start = self.rng.u32(..KEYS);
        let end = (start + self.rng.u32(1..400)).min(KEYS);
        let mode = self.rng.u8(..3);
        let mut iter = self.tree.range(key(start)..key(end));
        let (mut front, mut back) = (Vec::new(), Vec::new());
        loop {
            let forward = match mode {
                0 => true,
                1 => false,
                _ => self.rng.bool(),
            };
            let entry = if forward { iter.next() } else { iter.next_back() };
            let Some(entry) = entry else { break };
            let (k, v) = entry.unwrap();
            if forward {
                front.push(k.clone())
            } else {
                back.push(k.clone())
            }
            let index = key_index(&k);
            assert_eq!(key(index), k, "malformed key returned");
            assert!((start..end).contains(&index), "key {index} outside {start}..{end}");
            assert_eq!(value_key(&v), index, "value of key {index} names another key");
            if index % self.threads == self.thread {
                assert_eq!(Some(&v), self.model.get(&index), "own key {index} in scan (mode {mode})");
            }
        }
        back.reverse();
        front.extend(back);
        for pair in front.windows(2) {
            assert!(pair[0] < pair[1], "scan not strictly ordered: {:?} then {:?} (mode {mode})", pair[0], pair[1]);
        }
        let own_seen: Vec<u32> =
            front.iter().map(|k| key_index(k)).filter(|index| index % self.threads == self.thread).collect();
        let own_want: Vec<u32> = self.model.range(start..end).map(|(&k, _)| k).collect();
        assert_eq!(own_seen, own_want, "own keys in scan of {start}..{end} (mode {mode})");
    }
}

#[test]
fn threads_write_own_keys_and_scan_everyone_s() {
    let seed = common::seed("tree_stress");
    let threads = common::threads(THREADS) as u32;
    let duration = if common::long() { Duration::from_secs(120) } else { Duration::from_secs(6) };
    let _watchdog = common::Watchdog::arm("tree_stress", seed, duration + Duration::from_secs(60));
    let options = common::options(PAGE, FRAMES);
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let tree = common::create(Arc::clone(&storage), &options);
    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + duration;
    let models: Vec<BTreeMap<u32, Vec<u8>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let (tree, stop) = (&tree, &stop);
                scope.spawn(move || {
                    let rng = fastrand::Rng::with_seed(seed.wrapping_add(u64::from(thread)));
                    let mut worker = Worker { tree, thread, threads, rng, model: BTreeMap::new(), version: 0 };
                    let mut steps = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.step()));
                        if let Err(panic) = result {
                            stop.store(true, Ordering::Relaxed);
                            eprintln!("thread {thread} failed at step {steps} (seed {seed})");
                            std::panic::resume_unwind(panic);
                        }
                        steps += 1;
                        if steps.is_multiple_of(64) && Instant::now() > deadline {
                            break;
                        }
                    }
                    eprintln!("thread {thread}: {steps} steps, {} own keys", worker.model.len());
                    worker.model
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    let stats = tree.pool().stats();
    assert!(stats.evictions > 0, "the pool never evicted: {stats:?}");
    // Gets of leaves the full pool did not admit read private copies
    // (`buffer/uncached.rs`), beside the splits and deletes of those leaves.
    assert!(stats.uncached_reads > 0, "no get read a leaf uncached: {stats:?}");
    let mut want: Vec<(Vec<u8>, Vec<u8>)> =
        models.into_iter().flat_map(|model| model.into_iter().map(|(k, v)| (key(k), v))).collect();
    want.sort();
    check_contents(&tree, &want);
    let tree = common::reopen(tree, &storage, &options);
    check_contents(&tree, &want);
    eprintln!("seed {seed}: {} entries, pool {stats:?}", want.len());
}

fn check_contents(tree: &BTree, want: &[(Vec<u8>, Vec<u8>)]) {
    let report = common::verified(tree);
    assert_eq!(report.entries, want.len() as u64, "entries in the leaves");
    assert_eq!(tree.len(), want.len() as u64, "len()");
    let got = common::contents(tree);
    assert!(got == want, "contents differ from the models: {} vs {} entries", got.len(), want.len());
    let mut back: Vec<_> = tree.range::<&[u8], _>(..).rev().map(|e| e.unwrap()).collect();
    back.reverse();
    assert!(back == want, "reverse scan differs from the models");
}
