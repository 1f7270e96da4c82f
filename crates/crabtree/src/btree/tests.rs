//! Single-threaded tests of the tree against a model.

use super::BTree;
use crate::buffer::{BufferPool, PoolOptions};
use crate::ids::PageId;
use crate::io::MemStorage;
use crate::sync::Arc;
use std::collections::BTreeMap;

pub(crate) fn tree(page_size: usize, pool_pages: usize) -> BTree {
    let options = PoolOptions { page_size, pool_bytes: page_size * pool_pages, max_pages: 1 << 20 };
    let pool = BufferPool::create(Arc::new(MemStorage::new()), options).unwrap();
    BTree::create(Arc::new(pool)).unwrap()
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:08}").into_bytes()
}

fn assert_verified(tree: &BTree) {
    let report = tree.verify().unwrap();
    assert!(report.is_ok(), "verify failed: {:?}", &report.violations[..report.violations.len().min(10)]);
}

#[test]
fn sequential_insert_get_remove() {
    let tree = tree(512, 64);
    for i in 0..3000 {
        assert_eq!(tree.insert(&key(i), format!("v{i}").as_bytes()).unwrap(), None);
    }
    assert_verified(&tree);
    let report = tree.verify().unwrap();
    assert!(report.levels.len() >= 3, "expected a deep tree, got {:?}", report.levels);
    for i in 0..3000 {
        assert_eq!(tree.get(&key(i)).unwrap(), Some(format!("v{i}").into_bytes()), "key {i}");
    }
    assert_eq!(tree.get(b"nope").unwrap(), None);
    assert_eq!(tree.len(), 3000);
    for i in (0..3000).step_by(2) {
        assert_eq!(tree.remove(&key(i)).unwrap(), Some(format!("v{i}").into_bytes()));
    }
    assert_verified(&tree);
    let all: Vec<_> = tree.range::<&[u8], _>(..).map(|r| r.unwrap().0).collect();
    let want: Vec<_> = (1..3000).step_by(2).map(key).collect();
    assert_eq!(all, want);
    let back: Vec<_> = tree.range::<&[u8], _>(..).rev().map(|r| r.unwrap().0).collect();
    assert_eq!(back, want.iter().rev().cloned().collect::<Vec<_>>());
}

#[test]
fn random_operations_match_a_btreemap() {
    let tree = tree(512, 32);
    let mut model = BTreeMap::new();
    let mut rng = fastrand::Rng::with_seed(42);
    for step in 0..20000 {
        let k = key(rng.u32(0..2000));
        match rng.u8(0..10) {
            0..=4 => {
                let len = if rng.u8(0..20) == 0 { rng.usize(100..3000) } else { rng.usize(0..40) };
                let v: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
                assert_eq!(tree.insert(&k, &v).unwrap(), model.insert(k.clone(), v), "step {step}");
            }
            5..=7 => assert_eq!(tree.remove(&k).unwrap(), model.remove(&k), "step {step}"),
            _ => assert_eq!(tree.get(&k).unwrap(), model.get(&k).cloned(), "step {step}"),
        }
        if step % 5000 == 0 {
            assert_verified(&tree);
        }
    }
    assert_verified(&tree);
    let all: Vec<_> = tree.range::<&[u8], _>(..).map(|r| r.unwrap()).collect();
    let want: Vec<_> = model.into_iter().collect();
    assert_eq!(all, want);
}

#[test]
fn delete_everything_frees_almost_every_page() {
    // Leaves are deleted, and level-1 nodes with them when they are their
    // only child; what stays is a few nodes per level above 1.
    // 50,000 keys by default, 1M with CRABTREE_TEST_SIZE=long.
    let count: u32 = if std::env::var("CRABTREE_TEST_SIZE").as_deref() == Ok("long") { 1_000_000 } else { 50_000 };
    let tree = tree(4096, 256);
    let value = [7u8; 100];
    for i in 0..count {
        tree.insert(&key(i), &value).unwrap();
    }
    let full = tree.verify().unwrap();
    for i in 0..count {
        tree.remove(&key(i)).unwrap();
    }
    // Reclaim until no page waits for its epoch. Epoch pins are process
    // wide, so another test's thread preempted while pinned (a loaded
    // machine) can hold retired pages back for a while; one of them freed
    // only during the refill below would look like a page left free while
    // the file grew.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    tree.reclaim().unwrap();
    while tree.verify().unwrap().retired_pages > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
        tree.reclaim().unwrap();
    }
    let empty = tree.verify().unwrap();
    assert_eq!(empty.retired_pages, 0, "retired pages never became free");
    assert!(empty.is_ok(), "{:?}", empty.violations);
    let live = empty.page_count - 1 - empty.free_pages - empty.retired_pages;
    assert!(
        live * 100 < full.page_count,
        "live {live} of {} pages after deleting everything ({:?})",
        empty.page_count,
        empty.levels
    );
    let before = tree.pool.page_count();
    eprintln!(
        "{count} keys: {} pages full, {live} live after deleting all ({} free, {} retired)",
        full.page_count, empty.free_pages, empty.retired_pages
    );
    for i in 0..count {
        tree.insert(&key(i), &value).unwrap();
    }
    // Freed pages are used before the file grows: it may grow only once the
    // free list is empty (the rebuilt tree's shape differs a little from the
    // first build's, so it can need a few more pages).
    let refilled = tree.verify().unwrap();
    assert!(refilled.is_ok(), "{:?}", refilled.violations);
    if refilled.page_count > before {
        assert_eq!(refilled.free_pages, 0, "file grew from {before} with pages still free");
    }
    assert!(refilled.page_count <= before + before / 10, "file grew from {before} to {}", refilled.page_count);
}

#[test]
fn values_up_to_the_limit_round_trip_and_larger_ones_are_refused() {
    let tree = tree(4096, 512);
    let big: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
    assert_eq!(tree.insert(b"big", &big).unwrap(), None);
    assert_eq!(tree.get(b"big").unwrap().as_deref(), Some(big.as_slice()));
    let report = tree.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.violations);
    assert!(report.overflow_pages as usize >= big.len() / 4096, "{} overflow pages", report.overflow_pages);
    // One byte over the limit: refused before anything is written. (The
    // buffer is calloc'ed, so this costs address space, not memory.)
    let too_big = vec![0u8; crate::limits::VALUE_SIZE_MAX + 1];
    let pages = tree.pool.page_count();
    assert!(matches!(tree.insert(b"huge", &too_big), Err(crate::Error::ValueTooLarge { .. })));
    assert_eq!(tree.pool.page_count(), pages);
    assert_eq!(tree.get(b"huge").unwrap(), None);
    // The largest value, 1 GiB, only in the long tier (it needs 2 GiB of memory).
    if std::env::var("CRABTREE_TEST_SIZE").as_deref() == Ok("long") {
        let largest = vec![0x5au8; crate::limits::VALUE_SIZE_MAX];
        tree.insert(b"largest", &largest).unwrap();
        assert!(tree.get(b"largest").unwrap() == Some(largest));
    }
    assert_eq!(tree.remove(b"big").unwrap().map(|v| v.len()), Some(big.len()));
    tree.reclaim().unwrap();
    assert!(tree.verify().unwrap().is_ok());
}

/// The state a failed parent insert leaves: cuts the downlink of
/// `parent`'s child 2 and flags child 1 (whose right sibling child 2 is)
/// `INCOMPLETE_SPLIT`. Returns child 1.
fn orphan_second_child(tree: &BTree, parent: PageId) -> PageId {
    use crate::page::node::{FLAG_INCOMPLETE_SPLIT, Node, NodeMut};
    let mut guard = tree.pool.exclusive(parent).unwrap();
    let node = Node::new(guard.page(), parent).unwrap();
    assert!(node.len() >= 3, "precondition: three children");
    let (left, right) = (node.child(1).unwrap(), node.child(2).unwrap());
    NodeMut::new(&mut guard.page_mut(), parent).unwrap().remove(2).unwrap();
    let mut left_guard = tree.pool.exclusive(left).unwrap();
    let left_node = Node::new(left_guard.page(), left).unwrap();
    assert_eq!(left_node.header().right, Some(right), "precondition: siblings");
    let flags = left_node.header().flags;
    NodeMut::new(&mut left_guard.page_mut(), left).unwrap().set_flags(flags | FLAG_INCOMPLETE_SPLIT);
    left
}

/// A node that still carries an abandoned split (its right sibling `Q`
/// has no downlink) splits again, as it does when a writer whose descent
/// remembered it inserts a separator into it. The new right half takes
/// over the right-link to `Q`, so it must take the flag too: otherwise
/// the left half's flag is cleared by its own parent insert and nothing
/// ever inserts `Q`'s downlink (`verify` reports `Q` without a parent).
#[test]
fn a_split_hands_an_abandoned_split_to_the_right_half() {
    use crate::page::node::Node;
    let tree = tree(512, 4096);
    // Descending: every split even (half-full nodes, a root with several
    // children; ascending keys would fill the nodes they leave behind).
    for i in (0..3000).rev() {
        tree.insert(&key(i), b"v").unwrap();
    }
    let root = tree.root();
    let level = Node::new(tree.pool.shared(root).unwrap().page(), root).unwrap().header().level;
    assert!(level >= 2, "precondition: P is an inner node");
    // The state a failed parent insert leaves: Q's downlink missing from
    // the root, P flagged. (`verify` calls a flagged node a violation:
    // it is valid, but unfinished.)
    let p = orphan_second_child(&tree, root);
    // P splits with a remembered path, not finishing its own split first.
    let guard = tree.pool.exclusive(p).unwrap();
    let cells = tree.raw_cells(&guard).unwrap();
    tree.split(guard, cells, crate::page::redo::CellChange::None, &[(level, root)], None, &[], &[]).unwrap();
    // P's own flag went with its parent insert; the abandoned split is the
    // right half's now, and `repair` (or the next writer) finishes it.
    let report = tree.repair().unwrap();
    assert_eq!(report.splits_finished, 1, "the abandoned split was lost: {report:?}");
    assert_verified(&tree);
    for i in 0..3000 {
        assert_eq!(tree.get(&key(i)).unwrap().as_deref(), Some(&b"v"[..]), "key {i}");
    }
}

/// The descent reads a node's high key only when the search puts the key
/// past every key of the node. With a downlink missing (the state an
/// abandoned split leaves), the keys of the orphaned node are past every
/// key of its left neighbour and above its high key: they must be found by
/// moving right, at an inner level and at the leaf level, while the keys
/// between the left node's last key and its high key stay there.
#[test]
fn keys_past_a_nodes_last_key_move_right_only_above_its_high_key() {
    use super::descend::Target;
    use crate::page::node::Node;
    let tree = tree(512, 4096);
    let present = |i: u32| i.is_multiple_of(2);
    // Descending, as above: even splits.
    for i in (0..6000).filter(|&i| present(i)).rev() {
        tree.insert(&key(i), b"v").unwrap();
    }
    let root = tree.root();
    let root_level = Node::new(tree.pool.shared(root).unwrap().page(), root).unwrap().header().level;
    assert!(root_level >= 2, "precondition: an inner level below the root");
    // Inner level: the root's child 2 is reachable only from child 1.
    let inner = orphan_second_child(&tree, root);
    let (inner_high, orphan) = {
        let guard = tree.pool.shared(inner).unwrap();
        let node = Node::new(guard.page(), inner).unwrap();
        (node.high_key().unwrap().expect("a right sibling, so a high key"), node.header().right.unwrap())
    };
    // A reader passing the inner level without the move right would still
    // find its key (the level below moves right), so the inner rule is
    // checked on the path a descent records: it must go down from the
    // orphan, not from its left neighbour.
    let beyond = (0..6000).map(key).find(|k| *k > inner_high).unwrap();
    let mut path = Vec::new();
    assert!(tree.descend_finishing(Target::Key(&beyond), 0, Some(&mut path), false, false).is_ok());
    assert!(path.iter().any(|&(_, pid)| pid == orphan), "went down from {path:?}, not from {orphan:?}");
    // Leaf level: from a level-1 node (below `inner`), one leaf orphaned.
    let mut parent = inner;
    loop {
        let guard = tree.pool.shared(parent).unwrap();
        let node = Node::new(guard.page(), parent).unwrap();
        if node.header().level == 1 {
            break;
        }
        parent = node.child(node.len() - 1).unwrap();
    }
    orphan_second_child(&tree, parent);
    for i in 0..6000 {
        let expected = present(i).then_some(&b"v"[..]);
        assert_eq!(tree.get(&key(i)).unwrap().as_deref(), expected, "key {i}");
    }
    let scanned = tree.seek(&key(0)).map(|entry| entry.unwrap().0).collect::<Vec<_>>();
    assert_eq!(scanned, (0..6000).filter(|&i| present(i)).map(key).collect::<Vec<_>>());
    let report = tree.repair().unwrap();
    assert_eq!(report.splits_finished, 2, "both abandoned splits finished: {report:?}");
    assert_verified(&tree);
}

/// A walk that takes more steps than the file has pages: a cycle (and so
/// `Corruption`) only under shared latches, where the walker is pinned and
/// no page it passed can have been reused; an optimistic walker is not
/// pinned, so it restarts (issue 6: a false "cycle" under heavy preemption
/// with page reuse).
#[test]
fn an_overlong_walk_is_corruption_only_under_shared_latches() {
    use super::Step;
    use super::descend::link_cycle;
    let tree = tree(512, 64);
    tree.insert(b"k", b"v").unwrap();
    let root = tree.root();
    let optimistic = tree.read(root, false).unwrap();
    assert!(matches!(link_cycle(&optimistic, "cycle"), Step::Restart));
    drop(optimistic);
    let shared = tree.read(root, true).unwrap();
    match link_cycle(&shared, "cycle") {
        Step::Fail(crate::Error::Corruption { page, .. }) => assert_eq!(page, root),
        _ => panic!("a cycle under shared latches must be corruption"),
    }
}

/// Batches this thread has started at a resumed leaf so far.
fn resumed() -> u64 {
    super::read::RESUMED.with(|count| count.get())
}

/// Takes entries from `range` until its front buffer is empty (a batch
/// boundary) after at least `at_least` entries; returns their keys.
fn take_to_batch_end(range: &mut super::Range<'_>, at_least: usize) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    while keys.len() < at_least || range.front_state().0 > 0 {
        keys.push(range.next().unwrap().unwrap().0);
    }
    keys
}

#[test]
fn a_scan_steps_on_from_an_unchanged_leaf_and_descends_again_from_a_changed_one() {
    let tree = tree(512, 4096);
    for i in 0..3000 {
        tree.insert(&key(i * 10), b"v").unwrap();
    }
    // Unchanged: the next batch starts at the right sibling of the leaf the
    // last one ended in, and the scan is complete.
    let mut range = tree.range::<&[u8], _>(..);
    let mut seen = take_to_batch_end(&mut range, 200);
    let (_, Some((leaf, word))) = range.front_state() else { panic!("no resume point") };
    assert!(tree.pool.optimistic_resume(leaf, word).is_some(), "an untouched leaf resumes");
    let before = resumed();
    seen.push(range.next().unwrap().unwrap().0);
    assert_eq!(resumed(), before + 1, "the refill started at the untouched leaf");
    seen.extend(range.map(|entry| entry.unwrap().0));
    assert_eq!(seen, (0..3000).map(|i| key(i * 10)).collect::<Vec<_>>());

    // Changed: every key returned so far is removed (the leaf the batch
    // ended in empties and is deleted), and new keys past the end reuse
    // the freed pages. The rest of the scan is exactly the keys above the
    // last one returned, from a fresh descent.
    let mut range = tree.range::<&[u8], _>(..);
    let seen = take_to_batch_end(&mut range, 200);
    let (_, Some((leaf, word))) = range.front_state() else { panic!("no resume point") };
    for returned in &seen {
        tree.remove(returned).unwrap();
    }
    for i in 0..500 {
        tree.insert(&key(40_000 + i), &[7u8; 40]).unwrap();
    }
    assert!(tree.pool.optimistic_resume(leaf, word).is_none(), "a deleted leaf does not resume");
    let before = resumed();
    let mut rest = vec![range.next().unwrap().unwrap().0];
    assert_eq!(resumed(), before, "the refill descended");
    rest.extend(range.map(|entry| entry.unwrap().0));
    let last = seen.last().unwrap();
    let expected: Vec<Vec<u8>> =
        tree.range::<&[u8], _>(..).map(|entry| entry.unwrap().0).filter(|k| k > last).collect();
    assert_eq!(rest, expected);
    assert_eq!(rest.len(), 3000 - seen.len() + 500);
    assert_verified(&tree);
}

#[test]
fn a_reverse_scan_steps_on_from_an_unchanged_leaf_and_descends_again_from_a_changed_one() {
    let tree = tree(512, 4096);
    for i in 0..3000 {
        tree.insert(&key(i * 10), b"v").unwrap();
    }
    let take_back = |range: &mut super::Range<'_>| {
        let mut keys = Vec::new();
        while keys.len() < 200 || range.back_state().0 > 0 {
            keys.push(range.next_back().unwrap().unwrap().0);
        }
        keys
    };
    let mut range = tree.range::<&[u8], _>(..);
    let mut seen = take_back(&mut range);
    let (_, Some((leaf, word))) = range.back_state() else { panic!("no resume point") };
    assert!(tree.pool.optimistic_resume(leaf, word).is_some(), "an untouched leaf resumes");
    let before = resumed();
    seen.push(range.next_back().unwrap().unwrap().0);
    assert_eq!(resumed(), before + 1, "the refill started at the untouched leaf");
    seen.extend(range.rev().map(|entry| entry.unwrap().0));
    assert_eq!(seen, (0..3000).rev().map(|i| key(i * 10)).collect::<Vec<_>>());

    // Every key returned so far removed, new keys below all others reusing
    // the freed pages: the rest is exactly the keys below the last one
    // returned, in descending order.
    let mut range = tree.range::<&[u8], _>(..);
    let seen = take_back(&mut range);
    let (_, Some((leaf, word))) = range.back_state() else { panic!("no resume point") };
    for returned in &seen {
        tree.remove(returned).unwrap();
    }
    for i in 0..500 {
        tree.insert(format!("a{i:08}").as_bytes(), &[7u8; 40]).unwrap();
    }
    assert!(tree.pool.optimistic_resume(leaf, word).is_none(), "a deleted leaf does not resume");
    let before = resumed();
    let mut rest = vec![range.next_back().unwrap().unwrap().0];
    assert_eq!(resumed(), before, "the refill descended");
    rest.extend(range.rev().map(|entry| entry.unwrap().0));
    let last = seen.last().unwrap();
    let expected: Vec<Vec<u8>> =
        tree.range::<&[u8], _>(..).rev().map(|entry| entry.unwrap().0).filter(|k| k < last).collect();
    assert_eq!(rest, expected);
    assert_eq!(rest.len(), 3000 - seen.len() + 500);
    assert_verified(&tree);
}

/// The leaf that holds (or would hold) `key`, found under shared latches.
fn leaf_of(tree: &BTree, key: &[u8]) -> PageId {
    match tree.descend_to_key(key, true) {
        Ok((leaf, _)) => leaf.pid(),
        Err(_) => panic!("a quiet descent failed"),
    }
}

/// A point read holds the id of its leaf, read from a level-1 node, and
/// sleeps (failpoint `point.before_leaf`) while the leaf is emptied,
/// unlinked, freed and evicted. A freed page is dropped unwritten, so its
/// image on storage is the leaf as it was, holding the key's old value,
/// and valid. The read must notice through its parent that the link is
/// gone and find the key's new value. (Fails if `step_as` does not
/// validate the parent after it read the leaf: the read returns the old
/// value.)
#[test]
#[cfg(feature = "failpoints")]
fn a_point_read_whose_leaf_is_freed_before_it_reads_it_does_not_believe_the_old_image() {
    point_read_of_a_leaf_freed_under_it(|_, _| {});
}

/// As above, and the freed leaf's storage holds no valid image (a page
/// freed before it was ever written lies past the end of the file, or
/// holds whatever its id last held; zeros here): the read of the stale
/// link fails verification, and the read must restart through its parent,
/// not report the damage of a page the tree no longer links. (Fails if
/// `step_as` trusts an error of the step without validating the parent:
/// the get returns `Corruption`; no other test of the crate's library
/// catches that.)
#[test]
#[cfg(feature = "failpoints")]
fn a_point_read_whose_freed_leaf_fails_verification_restarts_instead_of_failing() {
    use crate::io::Storage;
    point_read_of_a_leaf_freed_under_it(|storage, leaf| storage.write_at(leaf.0 * 512, &[0u8; 512]).unwrap());
}

/// A point read held at `point.before_leaf` while its leaf is emptied,
/// freed and evicted, and `damage` done to the leaf's storage image; the
/// read must return the key's new value.
#[cfg(feature = "failpoints")]
fn point_read_of_a_leaf_freed_under_it(damage: impl FnOnce(&MemStorage, PageId)) {
    use crate::failpoint::Pause;
    // The scenarios arm the same point for threads of the same name: one
    // at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let storage = Arc::new(MemStorage::new());
    let options = PoolOptions { page_size: 512, pool_bytes: 512 * 64, max_pages: 1 << 20 };
    let pool = BufferPool::create(storage.clone(), options).unwrap();
    let tree = BTree::create(Arc::new(pool)).unwrap();
    tree.pool.pause_cleaner(true);
    let old = |i: u32| format!("v{i}-old").into_bytes();
    for i in 0..3000 {
        tree.insert(&key(i), &old(i)).unwrap();
    }
    tree.flush().unwrap();
    let k = 1500;
    let leaf = leaf_of(&tree, &key(k));
    let pause = Pause::arm_for("point.before_leaf", |thread| thread.name() == Some("stale-reader"));
    std::thread::scope(|scope| {
        let reader = std::thread::Builder::new()
            .name("stale-reader".into())
            .spawn_scoped(scope, || tree.get(&key(k)).unwrap())
            .unwrap();
        assert!(pause.wait_parked(std::time::Duration::from_secs(20)), "the reader never reached its leaf");
        // Empty the leaf and its neighbours: they are unlinked and retired,
        // and reclaimed once no pin is older (the insert needs no split).
        for i in 1300..1700 {
            tree.remove(&key(i)).unwrap();
        }
        tree.insert(&key(k), b"new").unwrap();
        // Epoch pins are process wide: other tests' threads may hold the
        // reclamation up for a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !tree.pool.free_pages().contains(&leaf) && std::time::Instant::now() < deadline {
            tree.reclaim().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(tree.pool.free_pages().contains(&leaf), "the leaf was not freed");
        // Evict it by reading other leaves into frames.
        tree.pool.set_uncached_reads(false);
        for i in (0..1300).chain(1700..3000) {
            assert_eq!(tree.get(&key(i)).unwrap(), Some(old(i)));
        }
        tree.pool.set_uncached_reads(true);
        assert!(!tree.pool.is_resident(leaf), "the freed leaf is still resident");
        damage(&storage, leaf);
        pause.resume();
        assert_eq!(reader.join().unwrap().as_deref(), Some(&b"new"[..]), "a freed leaf's old image was believed");
    });
    assert_verified(&tree);
}

/// A scan marks the leaves it loaded as the clock's next candidates, and
/// leaves the state of pages it found resident alone: the leaves a point
/// read loaded just before, at the scan's start and in its middle, and the
/// inner nodes its descent loaded. (Fails if scans do not cool the leaves
/// they load: every leaf stays UNLOCKED; or if a point read's load counts
/// as the scan's: the first leaf is MARKED.)
#[test]
fn a_scan_marks_the_leaves_it_loaded_and_no_other_page() {
    use crate::buffer::latch::{MARKED, UNLOCKED};
    use crate::io::Storage;
    let storage = Arc::new(MemStorage::new());
    let options = PoolOptions { page_size: 512, pool_bytes: 512 * 1024, max_pages: 1 << 20 };
    {
        let tree = BTree::create(Arc::new(BufferPool::create(storage.clone(), options.clone()).unwrap())).unwrap();
        for i in 0..2000 {
            tree.insert(&key(i), b"value").unwrap();
        }
        tree.flush().unwrap();
    }
    // Reopened: nothing resident, and room for every page (no eviction, so
    // the clock marks nothing itself).
    let tree = BTree::open(Arc::new(BufferPool::open(storage.clone(), options).unwrap())).unwrap();
    // Point reads load these two leaves (the scan then finds them
    // resident), the first one last.
    let (middle, first) = (leaf_of(&tree, &key(1000)), leaf_of(&tree, &key(0)));
    let loads = tree.pool.stats().loads;
    assert_eq!(tree.range::<&[u8], _>(..).count(), 2000);
    let stats = tree.pool.stats();
    assert!(stats.loads > loads + 10 && stats.evictions == 0, "{stats:?}");
    // Each page's state, read without touching it; leaves and inner nodes
    // told apart by their images on storage.
    let (mut leaves, mut inner) = (0, 0);
    for pid in (1..tree.pool.page_count()).map(PageId) {
        let mut image = vec![0u8; 512];
        storage.read_at(pid.0 * 512, &mut image).unwrap();
        let Ok(node) = crate::page::node::Node::new(&image[..], pid) else { continue };
        let state = crate::buffer::latch::state(tree.pool.peek_state(pid));
        if !node.is_leaf() {
            // Loaded by the descents, or not at all (a scan walks leaves).
            assert_ne!(state, MARKED, "inner node {pid:?}");
            inner += usize::from(state == UNLOCKED);
        } else if pid == first || pid == middle {
            assert_eq!(state, UNLOCKED, "leaf {pid:?}, loaded by a point read");
        } else {
            assert_eq!(state, MARKED, "leaf {pid:?}, loaded by the scan");
            leaves += 1;
        }
    }
    assert!(leaves > 10 && inner >= 1, "{leaves} leaves, {inner} inner nodes");
}

/// `without_overflow` hands out keys and inline values as they are and
/// overflow values empty, without reading their chains (a tiny pool: each
/// chain read would load its pages); a range that reuses its buffers reads
/// them again.
#[test]
fn a_range_without_overflow_reads_no_chain() {
    let tree = tree(512, 16);
    let big = |i: u32| vec![i as u8; 3000];
    for i in 0..200 {
        let value = if i % 2 == 0 { big(i) } else { format!("v{i}").into_bytes() };
        tree.insert(&key(i), &value).unwrap();
    }
    let loads = tree.pool().stats().loads;
    let skipped: Vec<_> = tree.range::<&[u8], _>(..).without_overflow().map(Result::unwrap).collect();
    let skipped_loads = tree.pool().stats().loads - loads;
    assert_eq!(skipped.len(), 200);
    for (i, (k, v)) in (0..200).zip(&skipped) {
        assert_eq!(k, &key(i));
        let want = if i % 2 == 0 { Vec::new() } else { format!("v{i}").into_bytes() };
        assert_eq!(v, &want, "key {i}");
    }
    let back: Vec<_> = tree.range::<&[u8], _>(..).without_overflow().rev().map(|e| e.unwrap().0).collect();
    assert_eq!(back.len(), 200);
    // The same range reading values, and one reusing the skipping range's
    // buffers: every chain read, several pages each.
    let loads = tree.pool().stats().loads;
    let full: Vec<_> = tree.range::<&[u8], _>(..).map(Result::unwrap).collect();
    let full_loads = tree.pool().stats().loads - loads;
    assert!(full.iter().zip(0..).all(|((_, v), i)| i % 2 == 1 || *v == big(i)));
    assert!(full_loads >= 100 * 6 + skipped_loads, "{full_loads} loads with values, {skipped_loads} without");
    let mut skipping = tree.range::<&[u8], _>(..).without_overflow();
    skipping.next().unwrap().unwrap();
    let reused = super::Range::reusing(&tree, ..=key(0), skipping.into_buffers());
    assert_eq!(reused.map(Result::unwrap).collect::<Vec<_>>(), vec![(key(0), big(0))]);
}

/// A pruner that names the entry being written (here: every entry) takes
/// only what lies after it in the leaf: nothing before it may go while it
/// stays (for the MVCC layer, a tombstone before an older version of its
/// key). Without the guard every other entry of the leaf went.
#[test]
fn a_prune_that_names_the_entry_being_written_keeps_everything_before_it() {
    // How many entries one leaf (the root) takes before it splits.
    let probe = tree(512, 64);
    let mut i = 0;
    while probe.verify().unwrap().levels.len() == 1 {
        probe.insert(&key(i), b"0123456789").unwrap();
        i += 1;
    }
    // One leaf just short of a split.
    let tree = tree(512, 64);
    for j in 0..i - 1 {
        tree.insert(&key(j), b"0123456789").unwrap();
    }
    assert_eq!(tree.verify().unwrap().levels.len(), 1, "one leaf");
    let count = i - 1;
    tree.set_leaf_pruner(Some(Arc::new(|entries: &[super::LeafEntry]| (0..entries.len()).collect())));
    // Rewrite a key in the middle with a value that does not fit.
    let middle = count / 2;
    tree.insert(&key(middle), &[7u8; 40]).unwrap();
    for j in 0..count {
        let got = tree.get(&key(j)).unwrap();
        if j < middle {
            assert_eq!(got.as_deref(), Some(&b"0123456789"[..]), "key {j}, before the one written, was pruned");
        } else if j == middle {
            assert_eq!(got.as_deref(), Some(&[7u8; 40][..]));
        } else {
            assert_eq!(got, None, "key {j}, after the one written, was named and not pruned");
        }
    }
    assert_verified(&tree);
}

/// Keys inserted in ascending order fill the leaves and inner nodes they
/// leave behind (the rightmost node splits for an append with
/// `APPEND_SPLIT_FILL` of its bytes on the left), where random order
/// fills them about two thirds. (Fails with every split even: the
/// ascending leaves were then half full.)
#[test]
fn ascending_inserts_fill_the_nodes_they_leave_behind() {
    let ascending = tree(4096, 4096);
    for i in 0..20_000 {
        ascending.insert(&key(i), &[b'v'; 100]).unwrap();
    }
    let report = ascending.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.violations);
    assert!(report.levels[0].fill > 0.85, "ascending leaves {:?}", report.levels);
    assert!(report.levels[1].fill > 0.8, "ascending level 1 {:?}", report.levels);
    let random = tree(4096, 4096);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut order: Vec<u32> = (0..20_000).collect();
    rng.shuffle(&mut order);
    for &i in &order {
        random.insert(&key(i), &[b'v'; 100]).unwrap();
    }
    let report = random.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.violations);
    assert!((0.55..0.8).contains(&report.levels[0].fill), "random leaves {:?}", report.levels);
    for i in (0..20_000).step_by(997) {
        assert_eq!(ascending.get(&key(i)).unwrap().as_deref(), Some(&[b'v'; 100][..]));
    }
}

/// Where a split cuts: an append to the rightmost node keeps
/// `APPEND_SPLIT_FILL` of the bytes on the left, less what the left
/// half's new high key needs to fit; any other change, or an append to a
/// node with a right neighbour, splits evenly; both halves always keep a
/// cell. (The room check was found by the point-read tests here, whose
/// 512-byte pages left a left half without room for its high key: "node
/// overfull".)
#[test]
fn a_split_is_uneven_only_for_an_append_to_the_rightmost_node() {
    use crate::page::redo::CellChange;
    // Leaf cells of 92 bytes with 3-byte keys, 8-byte slots: 2,000 bytes.
    let cell = |i: u8| {
        let key = [b'k', b'0' + i / 10, b'0' + i % 10];
        crate::page::node::CellData::Leaf { key: &key, value: &[0u8; 82] }.encode()
    };
    let cells: Vec<Vec<u8>> = (0..20u8).map(cell).collect();
    assert_eq!(cells[0].len(), 92);
    let raw = cells[19].clone();
    let append = CellChange::Insert(19, &raw);
    let room = 4096;
    assert_eq!(BTree::split_index_for(&cells, true, room, &append, true, false), 18, "90% of 20 equal cells stay left");
    assert_eq!(BTree::split_index_for(&cells, true, room, &append, false, false), 10);
    assert_eq!(BTree::split_index_for(&cells, true, room, &CellChange::Insert(7, &raw), true, false), 10);
    assert_eq!(BTree::split_index_for(&cells, true, room, &CellChange::Replace(19, &raw), true, false), 10);
    // 18 cells and a 3-byte high key need 1,803 bytes: with 1,802 the cut
    // moves left by one, and never past the even split.
    assert_eq!(BTree::split_index_for(&cells, true, 1803, &append, true, false), 18);
    assert_eq!(BTree::split_index_for(&cells, true, 1802, &append, true, false), 17);
    assert_eq!(BTree::split_index_for(&cells, true, 100, &append, true, false), 10);
    let two: Vec<Vec<u8>> = vec![cell(0), cell(1)];
    assert_eq!(BTree::split_index_for(&two, true, room, &CellChange::Insert(1, &raw), true, false), 1);
    // An insert right after the node's last one: the new cell ends the left
    // half (at 7: 8 cells left), even at the node's end (one cell right),
    // and the cut still moves left, to the even one at most, for room.
    let at = |index| CellChange::Insert(index, &raw);
    assert_eq!(BTree::split_index_for(&cells, true, room, &at(7), false, true), 8);
    assert_eq!(BTree::split_index_for(&cells, true, room, &at(0), false, true), 1);
    assert_eq!(BTree::split_index_for(&cells, true, room, &at(19), false, true), 19);
    assert_eq!(BTree::split_index_for(&cells, true, 1802, &at(19), false, true), 17);
    assert_eq!(BTree::split_index_for(&cells, true, 100, &at(19), false, true), 10);
}

/// Ascending runs in the middle of the tree (64 sequences, interleaved:
/// key = sequence, then its next number) fill the nodes they leave
/// behind: a split right after two adjacent inserts cuts after the new
/// cell (`InsertHints`). Before, every such split was even and the leaves
/// stayed about half full. Random order is unchanged (the hint rarely
/// fires by chance).
#[test]
fn interleaved_ascending_runs_fill_the_nodes_they_leave_behind() {
    let tree = tree(4096, 4096);
    let key = |i: u32| {
        let mut key = (i % 64).to_be_bytes().to_vec();
        key.extend_from_slice(&(i / 64).to_be_bytes());
        key
    };
    for i in 0..30_000 {
        tree.insert(&key(i), &[b'v'; 100]).unwrap();
    }
    let report = tree.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.violations);
    assert!(report.levels[0].fill > 0.8, "interleaved ascending leaves {:?}", report.levels);
    for i in (0..30_000).step_by(991) {
        assert_eq!(tree.get(&key(i)).unwrap().as_deref(), Some(&[b'v'; 100][..]));
    }
}
