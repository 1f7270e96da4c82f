//! Goal: writers that doze off at the worst moments. Random stress rarely
//! stops a thread between two latches long enough for others to split,
//! delete and reuse the pages it remembers; this test makes that common.
//!
//! Method: every failpoint of the write, split, parent-insert, deletion
//! and reclamation paths (`crabtree::failpoint`), and the two of a point
//! read between its leaf's parent and the leaf (before it looks the leaf
//! up; between the uncached read of a leaf and its validation), sleeps for a random
//! 0-300 µs in one call of eight, and some fail now and then (a parent
//! insert, a root growth, an unlink attempt: abandoned splits and stalled
//! unlinks that other writers must finish; an allocation before a split:
//! the insert fails; and a writer whose finishing of an abandoned split on
//! its way fails: its operation fails; a failed operation must change
//! nothing), while four threads churn a small key
//! space (inserts, updates, removes that empty leaves so pages are deleted
//! and reused, some overflow values) on a 512-byte-page tree with a pool
//! small enough to evict, and a fifth thread scans. Thread `t` is the only
//! writer of the keys `k % 4 == t`, so its model of them is exact: its
//! `get`s must match it, and at the end the tree must hold exactly the
//! union of the models. Scans must be strictly ordered with values that
//! name their keys. Then `verify` and `repair` (nothing left to finish),
//! under a watchdog. Size: `CRABTREE_TEST_SIZE=quick|long` (4 s / 60 s);
//! seed printed, replay with `CRABTREE_SEED` (thread timing still varies).

mod common;

use crabtree::failpoint;
use crabtree::io::{MemStorage, Storage};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const WRITERS: u64 = 4;
const KEYS: u64 = 1200;
const POINTS: [&str; 12] = [
    "point.before_leaf",
    "pool.uncached_read",
    "write.leaf_latched",
    "split.before_neighbour",
    "split.before_allocate",
    "split.before_parent",
    "parent.before_latch",
    "root.before_grow",
    "delete.before_half_dead",
    "delete.before_unlink",
    "delete.unlink_attempt",
    "reclaim.before_free",
];

fn key(k: u64) -> Vec<u8> {
    let mut key = format!("k{k:06}").into_bytes();
    key.resize(key.len() + (k % 4) as usize * 9, b'-');
    key
}

fn key_index(key: &[u8]) -> u64 {
    std::str::from_utf8(&key[1..7]).unwrap().parse().unwrap()
}

fn value(k: u64, version: u64, rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut value = format!("{k}:{version}:").into_bytes();
    let extra = if rng.u8(..40) == 0 { rng.usize(300..1500) } else { rng.usize(0..24) };
    value.extend((0..extra).map(|i| i as u8));
    value
}

fn value_key(value: &[u8]) -> u64 {
    let end = value.iter().position(|&b| b == b':').unwrap();
    std::str::from_utf8(&value[..end]).unwrap().parse().unwrap()
}

#[test]
fn writers_sleeping_at_every_failpoint() {
    let seed = common::seed("tree_sleepy");
    let run_for = if common::long() { Duration::from_secs(60) } else { Duration::from_secs(4) };
    let _watchdog = common::Watchdog::arm("tree_sleepy", seed, run_for + Duration::from_secs(120));
    for point in POINTS {
        // One call in `odds` fails at the points where failing is allowed.
        let odds = match point {
            "parent.before_latch" => 32,
            "root.before_grow" | "delete.unlink_attempt" => 4,
            "split.before_allocate" => 64,
            _ => 0,
        };
        failpoint::set(point, move || {
            if fastrand::u8(..8) == 0 {
                std::thread::sleep(Duration::from_micros(fastrand::u64(..300)));
            }
            if odds > 0 && fastrand::u32(..odds) == 0 {
                return Err(crabtree::Error::Io(std::io::Error::other("injected")));
            }
            Ok(())
        });
    }
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let tree = common::create(storage, &common::options(512, 48));
    let stop = AtomicBool::new(false);
    let models: Vec<BTreeMap<u64, Vec<u8>>> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let (tree, stop) = (&tree, &stop);
                scope.spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(seed ^ t);
                    let mut model = BTreeMap::new();
                    let mut version = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let k = rng.u64(..KEYS / WRITERS) * WRITERS + t;
                        version += 1;
                        match rng.u8(..10) {
                            0..=4 => {
                                let new = value(k, version, &mut rng);
                                match tree.insert(&key(k), &new) {
                                    Ok(old) => assert_eq!(old, model.insert(k, new), "insert {k}: previous value"),
                                    // An injected failure before any change (an allocation,
                                    // or finishing an abandoned split on the way).
                                    Err(crabtree::Error::Io(_)) => {}
                                    Err(error) => panic!("insert {k}: {error:?}"),
                                }
                            }
                            5..=7 => {
                                // Remove runs of keys so leaves empty out.
                                for k in (k..k + WRITERS * 6).step_by(WRITERS as usize).filter(|&k| k < KEYS) {
                                    match tree.remove(&key(k)) {
                                        Ok(old) => assert_eq!(old, model.remove(&k), "remove {k}"),
                                        // Finishing an abandoned split on the way failed
                                        // (injected): the remove changed nothing.
                                        Err(crabtree::Error::Io(_)) => {}
                                        Err(error) => panic!("remove {k}: {error:?}"),
                                    }
                                }
                            }
                            _ => assert_eq!(tree.get(&key(k)).unwrap().as_ref(), model.get(&k), "get {k}"),
                        }
                    }
                    model
                })
            })
            .collect();
        let scanner = {
            let (tree, stop) = (&tree, &stop);
            scope.spawn(move || {
                let mut scans = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut previous: Option<Vec<u8>> = None;
                    let forward = scans.is_multiple_of(2);
                    let range = tree.range::<&[u8], _>(..);
                    let entries: Box<dyn Iterator<Item = _>> =
                        if forward { Box::new(range) } else { Box::new(range.rev()) };
                    for entry in entries {
                        let (k, v) = entry.unwrap();
                        assert_eq!(value_key(&v), key_index(&k), "a value under the wrong key");
                        if let Some(previous) = &previous {
                            assert!(if forward { *previous < k } else { *previous > k }, "scan out of order");
                        }
                        previous = Some(k);
                    }
                    scans += 1;
                }
                scans
            })
        };
        let started = Instant::now();
        while started.elapsed() < run_for {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        let models = writers.into_iter().map(|writer| writer.join().unwrap()).collect();
        assert!(scanner.join().unwrap() > 0, "the scanner never finished a scan");
        models
    });
    for point in POINTS {
        failpoint::clear(point);
    }
    let expected: BTreeMap<u64, Vec<u8>> = models.into_iter().flatten().collect();
    let contents: BTreeMap<u64, Vec<u8>> =
        common::contents(&tree).into_iter().map(|(k, v)| (key_index(&k), v)).collect();
    assert_eq!(contents.len(), expected.len(), "entry count");
    assert!(contents == expected, "the tree differs from the writers' models");
    assert_eq!(tree.len(), expected.len() as u64, "len");
    // Splits abandoned by the last injected failures may be left (nobody
    // passed them since); `repair` finishes them, then `verify` is clean.
    tree.repair().unwrap();
    common::verified(&tree);
}
