//! Goal: the interleavings random stress does not reach, forced exactly,
//! at the places where a writer releases a latch and takes another, or
//! where an error is rare (root growth, allocation).
//!
//! Method: failpoints (`crabtree::failpoint`, compiled in for tests). A
//! thread is paused at a named point while it holds a latch, the test runs
//! other operations on the main thread (splits, deletions, page reuse),
//! then resumes it; or a point injects an error. After each scenario the
//! tree must hold exactly the model's entries (by `get` and by a full
//! scan) and `verify` must pass. Every scenario runs under a watchdog, so
//! a hang fails the test instead of stalling CI. Scenarios in this file
//! share the process-wide failpoint table, so they run one at a time.
//!
//! Each scenario checks its own preconditions (the tree has the shape the
//! interleaving needs) so it cannot pass without exercising the path.

mod common;

use common::scenario::*;

use crabtree::Error;
use crabtree::failpoint::{self, Pause};
use crabtree::io::{Fault, FaultOp, MemStorage, SimDisk, Storage};
use crabtree::raw::BTree;
use crabtree::raw::page::node::{FLAG_DELETED, FLAG_HALF_DEAD};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Pauses the thread named `name` at `point`; the flag tells that thread,
/// once resumed, that its last operation was the one that paused.
fn pause_thread(point: &'static str, name: &'static str) -> (Pause, Arc<AtomicBool>) {
    let paused = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&paused);
    let pause = Pause::arm_for(point, move |thread| {
        let mine = thread.name() == Some(name);
        if mine {
            flag.store(true, Ordering::SeqCst);
        }
        mine
    });
    (pause, paused)
}

/// Spawns a thread named `name` that inserts `first`, `first + 1`, ...
/// until one insert paused (see `pause_thread`); returns the keys written.
fn writer_until_paused(
    tree: &Arc<BTree>,
    name: &'static str,
    first: u64,
    paused: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<u64>> {
    let tree = Arc::clone(tree);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut written = Vec::new();
            for n in first..first + 64 {
                tree.insert(&key(n), &value(n)).unwrap();
                written.push(n);
                if paused.load(Ordering::SeqCst) {
                    return written;
                }
            }
            panic!("{name}: no insert reached the failpoint");
        })
        .unwrap()
}

/// Defect 1: a writer that remembered parent P from its descent pauses
/// while holding the full leaf C it splits; meanwhile P splits (C's
/// downlink moves to P's new right half), P's other leaves are emptied so
/// P is deleted with its last child, and reclamation runs. Unpinned, P's
/// page went back to the LIFO free list and the writer got it as C's new
/// right half, then latched "P" (now a leaf) and inserted an inner cell
/// into it: a key vanished. Pinned for the whole attempt, P cannot be
/// reused; the writer finds it deleted and moves right to its successor.
#[test]
fn split_parent_deleted_and_reused_while_the_splitter_waits() {
    let _serial = serial();
    let _watchdog = common::Watchdog::arm("parent reuse", 0, Duration::from_secs(120));
    let tree = Arc::new(new_tree(4096));
    let mut model = load(&tree, THREE_LEVELS);
    let root = tree.path_to(&key(GAP)).unwrap()[0];
    let g = info(&tree, root);
    assert_eq!(g.level, 2, "precondition: a three-level tree");
    assert!(g.children.len() >= 3, "precondition: the root has three children");
    // P: the root's second child (so its lower bound is a stored key and
    // it can be deleted); C: P's last leaf.
    let p = g.children[1];
    let p_low = number(&g.keys[1]);
    let p_info = info(&tree, p);
    let c = *p_info.children.last().unwrap();
    let c_first = number(&info(&tree, c).keys[0]);
    assert!(p_info.children.len() >= 3, "precondition: P has several leaves");
    assert_eq!(tree.path_to(&key(c_first)).unwrap(), vec![root, p, c]);

    // The writer fills C until it splits; it pauses holding C.
    let (pause, paused) = pause_thread("split.before_neighbour", "writer");
    let writer = writer_until_paused(&tree, "writer", c_first + 1, paused);
    assert!(pause.wait_parked(PARK_TIMEOUT), "the writer never split C");

    // P splits: grow P's first leaf (keys just above P's lower bound)
    // until P's high key changes.
    let p_high = p_info.high.clone();
    let mut n = p_low + 1;
    while info(&tree, p).high == p_high {
        tree.insert(&key(n), &value(n)).unwrap();
        model.insert(n, value(n));
        n += 1;
        assert!(n < p_low + 500, "P never split");
    }
    let p_now = info(&tree, p);
    assert!(!p_now.children.contains(&c), "precondition: C moved to P's right half");
    let p_right = p_now.right.unwrap();
    assert_ne!(info(&tree, p_right).children.first(), Some(&c), "C must not follow P's last leaf directly");
    // Empty P: P goes with its last leaf.
    let p_high_now = number(&p_now.high.unwrap());
    let doomed: Vec<u64> = model.range(p_low + 1..=p_high_now).map(|(&n, _)| n).collect();
    for n in doomed {
        assert!(tree.remove(&key(n)).unwrap().is_some());
        model.remove(&n);
    }
    assert!(info(&tree, p).flags & FLAG_DELETED != 0, "precondition: P was deleted");
    // Reclamation runs at the start of an insert (a replacement: no split).
    let last = *model.keys().next_back().unwrap();
    tree.insert(&key(last), &value(last)).unwrap();

    pause.resume();
    for n in writer.join().unwrap() {
        model.insert(n, value(n));
    }
    check(&tree, &model, "after the paused split");
}

/// Defect 2, the failpoint way: the root's growth fails once after its
/// half-split, so the root stays flagged with its right half reachable
/// only by right-link. Writers whose keys lie in the right half must
/// finish the root's split as they pass (not move right past the flag);
/// before the fix, the right half's own split looked for a parent from
/// the root, moved right onto the page its own thread held and parked
/// forever.
#[test]
fn failed_root_growth_is_finished_by_the_next_writer() {
    let _serial = serial();
    let _watchdog = common::Watchdog::arm("root growth", 0, Duration::from_secs(60));
    let tree = new_tree(4096);
    let failed = Arc::new(AtomicUsize::new(0));
    {
        let failed = Arc::clone(&failed);
        let me = std::thread::current().id();
        failpoint::set("root.before_grow", move || {
            if std::thread::current().id() == me && failed.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(Error::Io(std::io::Error::other("injected: root growth fails")));
            }
            Ok(())
        });
    }
    let mut model = BTreeMap::new();
    for n in 0..3000u64 {
        tree.insert(&key(n), &value(n)).unwrap();
        model.insert(n, value(n));
    }
    failpoint::clear("root.before_grow");
    assert!(failed.load(Ordering::SeqCst) >= 2, "precondition: the root grew after the failure");
    check(&tree, &model, "after a failed root growth");
    assert_eq!(tree.repair().unwrap().splits_finished, 0, "writers left a split unfinished");
}

/// Defect 2 with a full disk: the new root is allocated before the
/// half-split, so `DatabaseFull` fails the insert that needs it and
/// changes nothing; later inserts that fit still work, and none hangs.
#[test]
fn database_full_at_root_growth_changes_nothing() {
    let _serial = serial();
    let _watchdog = common::Watchdog::arm("database full", 0, Duration::from_secs(60));
    for max_pages in 3..40u64 {
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
        let mut options = common::options(512, 64);
        options.max_pages = max_pages;
        let pool = crabtree::raw::BufferPool::create(Arc::clone(&storage), options.clone()).unwrap();
        let tree = BTree::create(Arc::new(pool)).unwrap();
        let mut model = BTreeMap::new();
        let mut full = 0;
        for n in 0..400u64 {
            match tree.insert(&key(n), &value(n)) {
                Ok(None) => {
                    model.insert(n, value(n));
                }
                Ok(Some(old)) => panic!("fresh key {n} had a value {old:?}"),
                Err(Error::DatabaseFull { .. }) => full += 1,
                Err(error) => panic!("max_pages {max_pages}: unexpected {error:?}"),
            }
        }
        assert!(full > 0, "precondition: the disk filled up");
        // Splits whose parent could not get a page stay flagged (valid,
        // readable); with room again, `repair` finishes them.
        for (&n, v) in &model {
            assert_eq!(tree.get(&key(n)).unwrap().as_ref(), Some(v), "max_pages {max_pages}: key {n}");
        }
        assert_eq!(common::contents(&tree).len(), model.len(), "max_pages {max_pages}: scan");
        let mut roomy = options.clone();
        roomy.max_pages = 1 << 20;
        let tree = common::reopen(tree, &storage, &roomy);
        tree.repair().unwrap();
        check(&tree, &model, &format!("max_pages {max_pages}"));
    }
}

/// Defect 2 as reported: an I/O error on the second write (an eviction
/// write-back inside an allocation) during an ascending insert sequence
/// with a tiny pool. Every insert returns `Ok` or `Io`, none hangs, and
/// after `repair` the tree holds exactly what was acknowledged.
#[test]
fn write_error_during_ascending_inserts_does_not_hang() {
    let _serial = serial();
    let _watchdog = common::Watchdog::arm("write error", 0, Duration::from_secs(120));
    for nth in 0..12u64 {
        let disk = SimDisk::new(nth);
        let storage: Arc<dyn Storage> = Arc::new(disk.clone());
        let tree = common::create(storage, &common::options(512, 16));
        disk.inject(Fault { op: FaultOp::Write, nth, sticky: false });
        let mut model = BTreeMap::new();
        for n in 0..600u64 {
            match tree.insert(&key(n), &value(n)) {
                Ok(_) => {
                    model.insert(n, value(n));
                }
                Err(Error::Io(_)) => {}
                Err(error) => panic!("write #{nth}: unexpected {error:?}"),
            }
        }
        tree.repair().unwrap();
        check(&tree, &model, &format!("write error #{nth}"));
    }
}

/// A writer pauses after its half-split, holding the left half, before
/// its parent insert; meanwhile the parent splits and the downlink's place
/// moves to the parent's new right half. Other readers and writers are not
/// blocked, and the resumed writer finds its parent by moving right.
#[test]
fn paused_half_split_while_the_parent_splits() {
    let _serial = serial();
    let _watchdog = common::Watchdog::arm("paused half-split", 0, Duration::from_secs(120));
    let tree = Arc::new(new_tree(4096));
    let mut model = load(&tree, THREE_LEVELS);
    let root = tree.path_to(&key(GAP)).unwrap()[0];
    let g = info(&tree, root);
    assert!(g.level >= 2 && g.children.len() >= 2, "precondition: a three-level tree");
    let p = g.children[1];
    let p_info = info(&tree, p);
    assert!(p_info.children.len() >= 3, "precondition: P has several leaves");
    let c = *p_info.children.last().unwrap();
    let c_first = number(&info(&tree, c).keys[0]);
    let (pause, paused) = pause_thread("split.before_parent", "splitter");
    let writer = writer_until_paused(&tree, "splitter", c_first + 1, paused);
    assert!(pause.wait_parked(PARK_TIMEOUT), "the writer never split");
    assert!(info(&tree, p).high == p_info.high, "precondition: P did not change yet");
    // Split P by growing its first leaf.
    let mut n = number(&g.keys[1]) + 1;
    while info(&tree, p).high == p_info.high {
        tree.insert(&key(n), &value(n)).unwrap();
        model.insert(n, value(n));
        n += 1;
        assert!(n < c_first, "P never split");
    }
    assert!(!info(&tree, p).children.contains(&c), "precondition: C's downlink moved right");
    // Readers and writers elsewhere are not blocked.
    assert_eq!(tree.get(&key(GAP)).unwrap(), Some(value(GAP)));
    tree.insert(&key(GAP + 1), &value(GAP + 1)).unwrap();
    model.insert(GAP + 1, value(GAP + 1));
    pause.resume();
    for n in writer.join().unwrap() {
        model.insert(n, value(n));
    }
    check(&tree, &model, "after the paused parent insert");
    assert_eq!(tree.repair().unwrap().splits_finished, 0, "a split was left unfinished");
}

/// Splits abandoned by a failed parent insert, over and over: the second
/// parent insert of every tree insert fails (a level-1 node's downlink, or
/// the insert's own leaf split after it finished someone else's). Readers
/// see every key meanwhile, and the writers that later meet an abandoned
/// split finish it: after one clean pass that updates every key (no new
/// splits), the tree verifies without `repair`, which finds nothing left.
/// (How many splits the injected phase leaves unfinished depends on the
/// shape: the keys a writer meets after the last failure. An earlier form
/// of this test asserted at most one, which held for this key count and
/// node size only; it now asserts that some remain, so the pass has work
/// to do. A split of a node that still carries an abandoned split is
/// tested in `btree::tests`, which can build that state.)
#[test]
fn abandoned_inner_splits_are_finished_by_later_writers() {
    let _serial = serial();
    let _watchdog = common::Watchdog::arm("abandoned inner split", 0, Duration::from_secs(120));
    let tree = new_tree(4096);
    let mut model = BTreeMap::new();
    let hits = Arc::new(AtomicUsize::new(0));
    let abandoned = Arc::new(AtomicUsize::new(0));
    {
        let (hits, abandoned) = (Arc::clone(&hits), Arc::clone(&abandoned));
        let me = std::thread::current().id();
        failpoint::set("parent.before_latch", move || {
            if std::thread::current().id() == me && hits.fetch_add(1, Ordering::SeqCst) == 1 {
                abandoned.fetch_add(1, Ordering::SeqCst);
                return Err(Error::Io(std::io::Error::other("injected: parent insert fails")));
            }
            Ok(())
        });
    }
    // Seven descending passes: no append to the rightmost node, so every
    // split is even (the shape this test's count of abandoned splits was
    // tuned on; ascending passes fill the nodes they leave behind).
    for n in 0..2000u64 {
        hits.store(0, Ordering::SeqCst);
        tree.insert(&key(1999 - n * 7 % 2000), &value(n)).unwrap();
        model.insert(1999 - n * 7 % 2000, value(n));
    }
    failpoint::clear("parent.before_latch");
    assert!(abandoned.load(Ordering::SeqCst) > 0, "precondition: inner splits were abandoned");
    check_contents(&tree, &model, "abandoned splits");
    let unfinished = tree.verify().unwrap().violations.len();
    assert!(unfinished > 0, "precondition: abandoned splits remain for the pass to finish");
    // Same-size values: the pass splits nothing, it only meets every node.
    for n in 0..2000u64 {
        tree.insert(&key(n), &value(n + 1)).unwrap();
        model.insert(n, value(n + 1));
    }
    check(&tree, &model, "after a pass over every key");
    let report = tree.repair().unwrap();
    assert_eq!(report.splits_finished, 0, "{report:?}: writers left splits unfinished");
}

/// A leaf whose unlink gives up (its left neighbour kept changing, forced
/// by the failpoint for every attempt) stays half-dead, and the next
/// remove retries it without anyone calling `repair`.
#[test]
fn a_stalled_unlink_is_retried_by_a_later_remove() {
    let _serial = serial();
    let _watchdog = common::Watchdog::arm("stalled unlink", 0, Duration::from_secs(60));
    let tree = new_tree(4096);
    let mut model = BTreeMap::new();
    for n in 0..400u64 {
        tree.insert(&key(n * 10), &value(n)).unwrap();
        model.insert(n * 10, value(n));
    }
    let path = tree.path_to(&key(2000)).unwrap();
    let leaf = *path.last().unwrap();
    let doomed: Vec<u64> = info(&tree, leaf).keys.iter().map(|k| number(k)).collect();
    let me = std::thread::current().id();
    failpoint::fail_with("delete.unlink_attempt", move || {
        Error::Io(std::io::Error::other(format!("injected for {me:?}")))
    });
    for &n in &doomed {
        tree.remove(&key(n)).unwrap();
        model.remove(&n);
    }
    failpoint::clear("delete.unlink_attempt");
    let flags = info(&tree, leaf).flags;
    assert!(flags & FLAG_HALF_DEAD != 0 && flags & FLAG_DELETED == 0, "precondition: the unlink stalled");
    // Any later remove retries it.
    tree.remove(&key(0)).unwrap();
    model.remove(&0);
    assert!(info(&tree, leaf).flags & FLAG_DELETED != 0, "the stalled unlink was not retried");
    check(&tree, &model, "after the retried unlink");
}

/// An error after a split allocated its pages and wrote the right half,
/// before anything reachable changed (on a real disk only a corrupt cell
/// gets here): the insert fails, changes nothing and leaks nothing. Once
/// with a leaf split under a parent, once with the root leaf's split,
/// which also allocated the new root. Before the fix the fresh pages stayed
/// allocated and unreachable (`verify`: leaked pages).
#[test]
fn an_error_writing_the_right_half_changes_and_leaks_nothing() {
    let _serial = serial();
    let _watchdog = common::Watchdog::arm("right half error", 0, Duration::from_secs(60));
    for loaded in [0u64, 400] {
        let tree = new_tree(4096);
        let mut model = load(&tree, loaded);
        let failed = Arc::new(AtomicUsize::new(0));
        {
            let failed = Arc::clone(&failed);
            let me = std::thread::current().id();
            failpoint::set("split.right_written", move || {
                if std::thread::current().id() == me && failed.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(Error::Io(std::io::Error::other("injected: right half")));
                }
                Ok(())
            });
        }
        let mut errors = 0;
        for n in 1..200u64 {
            let k = n * 7 + 3;
            match tree.insert(&key(k), &value(k)) {
                Ok(None) => {
                    model.insert(k, value(k));
                }
                Ok(Some(old)) => panic!("fresh key {k} had {old:?}"),
                Err(Error::Io(_)) => errors += 1,
                Err(error) => panic!("unexpected {error:?}"),
            }
        }
        failpoint::clear("split.right_written");
        assert_eq!(errors, 1, "precondition: exactly one split failed");
        check(&tree, &model, &format!("right half error, {loaded} keys loaded"));
    }
}

/// The iterator's resume (`btree/read.rs`): a scan paused after it found
/// the leaf its last batch ended in unchanged, but before it reads that
/// leaf's right link, while every key of that leaf and of the leaves after
/// it is removed (the leaves are deleted) and new keys reuse their pages.
/// Resumed, it must see its leaf changed and descend again: the rest of
/// the scan is exactly the keys above the last one it returned.
#[test]
fn a_scan_paused_between_its_resume_check_and_its_step_right() {
    let _serial = serial();
    let _watchdog = common::Watchdog::arm("scan resume", 0, Duration::from_secs(120));
    let tree = Arc::new(new_tree(4096));
    let mut model = load(&tree, THREE_LEVELS);
    let first_leaf = *tree.path_to(&key(GAP)).unwrap().last().unwrap();
    let (pause, _) = pause_thread("read.resumed", "scanner");
    let scanner = {
        let tree = Arc::clone(&tree);
        std::thread::Builder::new()
            .name("scanner".into())
            .spawn(move || tree.range::<&[u8], _>(..).map(|entry| number(&entry.unwrap().0)).collect::<Vec<u64>>())
            .unwrap()
    };
    assert!(pause.wait_parked(PARK_TIMEOUT), "the scan never resumed at a leaf");
    // The scanner has returned its first batch (the first leaf, a few
    // keys): remove the first 100 keys, so its leaf and the next ones empty
    // and are deleted, then add keys at the end that take the freed pages.
    let doomed: Vec<u64> = model.keys().copied().take(100).collect();
    for n in &doomed {
        assert!(tree.remove(&key(*n)).unwrap().is_some());
        model.remove(n);
    }
    assert!(info(&tree, first_leaf).flags & FLAG_DELETED != 0, "precondition: the first leaf was deleted");
    for i in 0..300 {
        let n = 401 * GAP + i;
        tree.insert(&key(n), &value(n)).unwrap();
        model.insert(n, value(n));
    }
    pause.resume();
    let seen = scanner.join().unwrap();
    // A prefix of the removed keys (the batch before the pause), then
    // exactly what is there now above the last of them.
    let first: Vec<u64> = seen.iter().copied().take_while(|n| doomed.contains(n)).collect();
    assert!(!first.is_empty() && first.len() < doomed.len(), "precondition: paused after a first batch: {first:?}");
    assert_eq!(first, doomed[..first.len()], "the first batch");
    let last = *first.last().unwrap();
    let rest: Vec<u64> = model.keys().copied().filter(|&n| n > last).collect();
    assert_eq!(seen[first.len()..], rest[..], "after the resume");
    check(&tree, &model, "after the paused scan");
}
