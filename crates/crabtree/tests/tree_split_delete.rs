//! Concurrent splits and leaf deletions on the same few leaves, under
//! scanning readers.
//!
//! Goal: half-splits, parent inserts, half-dead marking, unlinking and page
//! reuse racing on one narrow key range never make a scan skip a key that
//! was present throughout, return a key twice or out of order, or leave the
//! tree unsound; deleted leaves go back to the free list and are reused.
//! Method: anchor keys (every 16th key of a narrow range, plus keys below
//! and above it) are inserted once and never removed. Writer threads each
//! own the non-anchor keys `i % WRITERS == w` of the range and repeat
//! rounds: insert all of them with 60-byte values (on 512-byte pages the
//! range splits into dozens of leaves), then remove them all, so leaves
//! between anchors empty and are deleted while neighbours split (writers
//! drift apart in phase, so both happen at once). Readers scan the range forward, backward and with
//! mixed next/next_back, checking strict order, values that name their
//! key, and the presence of every anchor. At the end only anchors remain:
//! `verify`, pages came back (free + retired > 0), and re-inserting the
//! range takes pages from the free list instead of growing the file.
//! Size: `CRABTREE_TEST_SIZE=quick|long` (4 s / 60 s); seed printed.

mod common;

use crabtree::io::{MemStorage, Storage};
use crabtree::raw::BTree;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const WRITERS: u32 = 4;
const READERS: u32 = 4;
const RANGE: u32 = 480;
const ANCHOR_EVERY: u32 = 16;

fn key(i: u32) -> Vec<u8> {
    format!("r{i:06}").into_bytes()
}

fn key_index(key: &[u8]) -> u32 {
    std::str::from_utf8(&key[1..]).unwrap().parse().unwrap()
}

/// Keys `0..RANGE` are the narrow range, offset by 1000 so anchors sit
/// below and above it too.
fn range_key(i: u32) -> u32 {
    1000 + i
}

fn is_anchor(i: u32) -> bool {
    i.is_multiple_of(ANCHOR_EVERY)
}

fn value(i: u32, round: u64) -> Vec<u8> {
    let mut value = format!("{i}:{round}:").into_bytes();
    value.resize(60, b'v');
    value
}

fn value_index(value: &[u8]) -> u32 {
    let end = value.iter().position(|&b| b == b':').unwrap();
    std::str::from_utf8(&value[..end]).unwrap().parse().unwrap()
}

/// Every anchor: the range's own and ten on each side of it.
fn anchors() -> Vec<u32> {
    let inside = (0..RANGE).filter(|&i| is_anchor(i)).map(range_key);
    (990..1000).chain(inside).chain(1000 + RANGE..1010 + RANGE).collect()
}

fn writer(tree: &BTree, w: u32, seed: u64, deadline: Instant, stop: &AtomicBool) -> u64 {
    let mut rng = fastrand::Rng::with_seed(seed ^ u64::from(w));
    let mut own: Vec<u32> = (0..RANGE).filter(|&i| !is_anchor(i) && i % WRITERS == w).map(range_key).collect();
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        rng.shuffle(&mut own);
        for &i in &own {
            assert_eq!(tree.insert(&key(i), &value(i, round)).unwrap(), None, "writer {w} insert {i}");
        }
        for &i in own.iter().step_by(7) {
            assert_eq!(tree.get(&key(i)).unwrap(), Some(value(i, round)), "writer {w} get {i}");
        }
        // Sometimes in key order, so whole leaves empty one after another.
        if rng.bool() {
            own.sort();
        }
        for &i in &own {
            assert_eq!(tree.remove(&key(i)).unwrap(), Some(value(i, round)), "writer {w} remove {i}");
        }
        round += 1;
    }
    round
}

fn reader(tree: &BTree, r: u32, seed: u64, stop: &AtomicBool) -> u64 {
    let mut rng = fastrand::Rng::with_seed(seed ^ (u64::from(r) << 32));
    let anchors = anchors();
    let mut scans = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mode = rng.u8(..3);
        let mut iter = tree.range(key(990)..key(1010 + RANGE));
        let (mut front, mut back) = (Vec::new(), Vec::new());
        loop {
            let forward = match mode {
                0 => true,
                1 => false,
                _ => rng.bool(),
            };
            let Some(entry) = (if forward { iter.next() } else { iter.next_back() }) else { break };
            let (k, v) = entry.unwrap();
            let index = key_index(&k);
            assert_eq!(value_index(&v), index, "value of key {index} names another key");
            if forward { front.push(index) } else { back.push(index) }
        }
        back.reverse();
        front.extend(back);
        for pair in front.windows(2) {
            assert!(pair[0] < pair[1], "scan {scans} (mode {mode}) out of order or repeated: {pair:?}");
        }
        let seen: std::collections::HashSet<u32> = front.iter().copied().collect();
        for anchor in &anchors {
            assert!(seen.contains(anchor), "scan {scans} (mode {mode}) missed anchor {anchor}");
        }
        scans += 1;
    }
    scans
}

#[test]
fn splits_and_deletes_race_on_the_same_leaves() {
    let seed = common::seed("tree_split_delete");
    let duration = if common::long() { Duration::from_secs(60) } else { Duration::from_secs(4) };
    let _watchdog = common::Watchdog::arm("tree_split_delete", seed, duration + Duration::from_secs(60));
    let options = common::options(512, 64);
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let tree = common::create(Arc::clone(&storage), &options);
    for i in anchors() {
        tree.insert(&key(i), &value(i, 0)).unwrap();
    }
    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + duration;
    std::thread::scope(|scope| {
        let fail_stop = |result: std::thread::Result<u64>, who: String| match result {
            Ok(count) => eprintln!("{who}: {count}"),
            Err(panic) => {
                eprintln!("{who} failed (seed {seed})");
                std::panic::resume_unwind(panic)
            }
        };
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (tree, stop) = (&tree, &stop);
                scope.spawn(move || {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        writer(tree, w, seed, deadline, stop)
                    }));
                    stop.store(true, Ordering::Relaxed);
                    result
                })
            })
            .collect();
        let readers: Vec<_> = (0..READERS)
            .map(|r| {
                let (tree, stop) = (&tree, &stop);
                scope.spawn(move || {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader(tree, r, seed, stop)));
                    if result.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    result
                })
            })
            .collect();
        for (w, handle) in writers.into_iter().enumerate() {
            fail_stop(handle.join().unwrap(), format!("writer {w} rounds"));
        }
        stop.store(true, Ordering::Relaxed);
        for (r, handle) in readers.into_iter().enumerate() {
            fail_stop(handle.join().unwrap(), format!("reader {r} scans"));
        }
    });
    let anchors = anchors();
    let want: Vec<_> = anchors.iter().map(|&i| (key(i), value(i, 0))).collect();
    assert_eq!(common::contents(&tree), want, "only the anchors remain");
    assert_eq!(tree.len(), want.len() as u64);
    let emptied = common::verified(&tree);
    assert!(emptied.free_pages + emptied.retired_pages > 0, "no leaf was deleted: {emptied:?}");
    eprintln!("after the race: {emptied:?}");

    // Re-insert the range: the deleted leaves' pages are reused.
    for i in (0..RANGE).map(range_key).filter(|&i| !is_anchor(i - 1000)) {
        tree.insert(&key(i), &value(i, 1)).unwrap();
    }
    let refilled = common::verified(&tree);
    let live = |r: &crabtree::raw::VerifyReport| r.page_count - 1 - r.free_pages - r.retired_pages;
    let live_growth = live(&refilled) - live(&emptied);
    let file_growth = refilled.page_count - emptied.page_count;
    assert!(refilled.free_pages < emptied.free_pages + emptied.retired_pages, "free list not used: {refilled:?}");
    assert!(file_growth < live_growth, "file grew by {file_growth} for {live_growth} new live pages");
    let tree = common::reopen(tree, &storage, &options);
    common::verified(&tree);
    assert_eq!(tree.len(), (RANGE + 20) as u64);
}
