//! Goal: no snapshot ever sees a deleted key's older value after its
//! tombstone goes (leaf pruning before a split, `mvcc::prunable`; vacuum),
//! whatever the reader does meanwhile: forward and reverse scans that hold
//! no latch between tree batches, point reads.
//!
//! Method: one key with many versions (spread over several leaves, its
//! tombstone in the leftmost, the oldest versions in the rightmost), the
//! reader paused with the failpoint `value.chain_page` inside its first
//! tree batch (an overflow value of the oldest version: the batch has read
//! and validated that leaf and holds its entries), and the removal run
//! while it waits. Each test asserts what the paused reader returns.

use crabtree::failpoint::Pause;
use crabtree::{Db, Durability, Error, Options};
use std::time::Duration;

/// Failpoints are process-wide: the scenarios run one at a time.
static FAILPOINTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn failpoints_alone() -> std::sync::MutexGuard<'static, ()> {
    FAILPOINTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

const READER: &str = "prune-adversarial-reader";

fn open(path: &std::path::Path) -> Db {
    Db::open_with(path, Options { vacuum_interval: None, durability: Durability::Eventual, ..Options::default() })
        .unwrap()
}

/// Key `k` written `versions` times (the oldest version a 20 KB overflow
/// value, the others 300 bytes: the versions span several leaves, the
/// oldest in the last one) while a snapshot pins them, then deleted; the
/// pin dropped (the horizon is the delete). Before them, 20 keys `a-00NN`
/// (the first with an overflow value): the leaf that holds them holds
/// the tombstone and the newest versions, the rest lie to its right.
fn deleted_key_with_spread_history(db: &Db, versions: u32) {
    deleted_key_with_overflow_oldest(db, versions, 1);
}

/// [`deleted_key_with_spread_history`] with the `overflowing` oldest
/// versions 20 KB overflow values.
fn deleted_key_with_overflow_oldest(db: &Db, versions: u32, overflowing: u32) {
    deleted_key_with_history(db, versions, |i| if i < overflowing { 20_000 } else { 300 });
}

/// The 20 keys `a-00NN` (the first with a 20 KB value), then key `k`
/// written `versions` times (version `i` of `len(i)` bytes) while a
/// snapshot pins them, then deleted; the pin dropped.
fn deleted_key_with_history(db: &Db, versions: u32, len: impl Fn(u32) -> usize) {
    for i in 0..20u32 {
        let value = if i == 0 { vec![b'A'; 20_000] } else { vec![b'a'; 100] };
        db.update(|tx| tx.put(format!("a-{i:04}").as_bytes(), &value)).unwrap();
    }
    let pin = db.snapshot();
    for i in 0..versions {
        db.update(|tx| tx.put(b"k", &vec![(i % 200) as u8 + 1; len(i)])).unwrap();
    }
    db.update(|tx| tx.delete(b"k")).unwrap();
    drop(pin);
}

/// A database in a fresh directory holding `deleted_key_with_spread_history`
/// with 60 versions (the directory must outlive the database).
fn db_with_deleted_key() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir.path().join("db.crab"));
    deleted_key_with_spread_history(&db, 60);
    (dir, db)
}

/// Runs `read` on a thread named `READER` whose first overflow chain read
/// is paused; runs `meanwhile` while it is, then lets it go on and
/// returns what it read.
fn with_reader_paused<T: Send + 'static>(read: impl FnOnce() -> T + Send + 'static, meanwhile: impl FnOnce()) -> T {
    with_reader_paused_at("value.chain_page", read, meanwhile)
}

/// A reverse scan over a deleted key whose versions span leaves reads the
/// oldest versions first (the last leaf), then the leaves to their left in
/// later tree batches, holding nothing between. Vacuum removing the key's
/// versions (oldest first, the tombstone last) between two such batches
/// must not make the scan return the oldest value it already read: the
/// snapshot is at the delete, which it must see.
#[test]
fn a_reverse_scan_never_returns_a_value_whose_tombstone_vacuum_removed_meanwhile() {
    let _alone = failpoints_alone();
    let (_dir, db) = db_with_deleted_key();
    let reader = db.snapshot();
    assert_eq!(reader.get(b"k").unwrap(), None);
    let scan = reader.clone();
    let got = with_reader_paused(
        move || last_entry(&scan),
        || {
            let removed = db.vacuum().unwrap();
            assert!(removed >= 61, "vacuum removed {removed} versions");
        },
    );
    assert_last_is_the_last_live_key(got);
    assert_eq!(user_keys(&reader, false), expected_a_keys(20));
}

/// The tear again, with vacuum already half-way through the key when the
/// scan begins: held (failpoint `vacuum.removed`) after removing the
/// oldest version, while the scan reads the next oldest two (overflow
/// values; it is held in the first), then let go to remove the rest,
/// the tombstone last. The scan began while the removal was under way, so
/// it must re-read the key, though no removal began after it did. (Fails
/// if `Removals::quiet` ignores `ended`.)
#[test]
fn a_reverse_scan_begun_while_vacuum_is_half_way_through_a_deleted_key_does_not_return_it() {
    let _alone = failpoints_alone();
    let dir = tempfile::tempdir().unwrap();
    let db = std::sync::Arc::new(open(&dir.path().join("db.crab")));
    deleted_key_with_overflow_oldest(&db, 60, 3);
    let reader = db.snapshot();
    const VACUUM: &str = "prune-adversarial-vacuum";
    let vacuum_paused = Pause::arm_for("vacuum.removed", |thread| thread.name() == Some(VACUUM));
    let vacuuming = std::sync::Arc::clone(&db);
    let vacuum = std::thread::Builder::new().name(VACUUM.into()).spawn(move || vacuuming.vacuum()).unwrap();
    assert!(vacuum_paused.wait_parked(Duration::from_secs(20)), "vacuum never removed a version");
    let scan = reader.clone();
    let got = with_reader_paused(
        move || last_entry(&scan),
        move || {
            vacuum_paused.resume();
            let removed = vacuum.join().unwrap().unwrap();
            assert!(removed >= 61, "vacuum removed {removed} versions");
        },
    );
    assert_last_is_the_last_live_key(got);
    assert_eq!(user_keys(&reader, true), expected_a_keys(20));
}

/// The same through the vacuum worker's rounds, which follow the backlog
/// (`vacuum::visit`) instead of walking the tree: the worker is held
/// (failpoint `vacuum.entry_removed`) after its first removal of a key
/// whose tombstone it removes, a reverse scan begins and is held in its
/// first batch, then the worker removes the rest. The key's history is
/// too long for its commits' lists (`PRUNE_SCAN_MAX`), so the round reads
/// it whole and removes its versions in one counted removal. (Fails if
/// that removal is not counted, or if `Removals::quiet` ignores `ended`.)
#[test]
fn a_reverse_scan_begun_while_a_vacuum_round_is_half_way_through_a_deleted_key_does_not_return_it() {
    let _alone = failpoints_alone();
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        vacuum_interval: Some(Duration::from_millis(2)),
        durability: Durability::Eventual,
        ..Options::default()
    };
    let db = std::sync::Arc::new(Db::open_with(dir.path().join("db.crab"), options).unwrap());
    // Pages enough that a round with the key's entries visits them (a
    // round with an entry for most pages walks the tree instead); their
    // keys sort first, so the last live key stays `a-0019`.
    db.update(|tx| (0..300u32).try_for_each(|i| tx.put(format!("0-{i:04}").as_bytes(), &[b'0'; 1000]))).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while db.stats().vacuum_whole_pass_pending {
        assert!(std::time::Instant::now() < deadline, "the worker's first whole pass never ran");
        std::thread::sleep(Duration::from_millis(2));
    }
    let vacuum_paused = Pause::arm_for("vacuum.entry_removed", |thread| thread.name() == Some("crabtree-vacuum"));
    // 64 versions, then 3 of 20 KB and 60 of 300 bytes, then the delete,
    // all pinned until the delete. The commits of the first 64 left
    // complete lists (the round removes each list's versions, the oldest
    // 63 first, counting nothing: no tombstone); the later ones read a
    // history of 64 versions, too long to be complete, so the round reads
    // the key whole at the first of them and removes what is left (64
    // versions over several leaves, the 20 KB ones in the last, the
    // tombstone last), counted as a tombstone's removal.
    deleted_key_with_history(&db, 127, |i| match i {
        0..64 => 100,
        64..67 => 20_000,
        _ => 300,
    });
    let reader = db.snapshot();
    assert!(vacuum_paused.wait_parked(Duration::from_secs(20)), "no vacuum round removed a tombstone's key");
    let scan = reader.clone();
    let got = with_reader_paused(
        move || last_entry(&scan),
        move || {
            vacuum_paused.resume();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while db.stats().versions_vacuumed < 128 {
                assert!(std::time::Instant::now() < deadline, "vacuum rounds stopped: {:?}", db.stats());
                std::thread::sleep(Duration::from_millis(2));
            }
        },
    );
    assert_last_is_the_last_live_key(got);
}

/// Counts the hits of `range.reread` on reader threads while it lives.
struct Rereads(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Rereads {
    fn count() -> Rereads {
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counting = std::sync::Arc::clone(&count);
        crabtree::failpoint::set("range.reread", move || {
            if std::thread::current().name() == Some(READER) {
                counting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        });
        Rereads(count)
    }

    fn hits(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Rereads {
    fn drop(&mut self) {
        crabtree::failpoint::clear("range.reread");
    }
}

/// The re-read costs a point read per key a reverse scan reads in two
/// tree batches; with no tombstone removal while it reads, it is skipped.
/// Here 3,000 keys over many leaves, and the deleted key's history over
/// several, read backward with vacuum and pruning idle: no re-read, and
/// the same keys as forward. The same scan with vacuum run between its
/// batches re-reads (and returns no deleted key: the tests above).
/// (Fails if the re-read is not skipped.)
#[test]
fn a_reverse_scan_with_no_removal_meanwhile_reads_no_key_twice() {
    let _alone = failpoints_alone();
    let (_dir, db) = db_with_deleted_key();
    db.update(|tx| {
        for i in 0..3000u32 {
            tx.put(format!("b-{i:05}").as_bytes(), &[b'b'; 60])?;
        }
        Ok(())
    })
    .unwrap();
    let mut expected = expected_a_keys(20);
    expected.extend((0..3000).map(|i| format!("b-{i:05}")));
    let reader = db.snapshot();
    let rereads = Rereads::count();
    let scan = reader.clone();
    let keys = std::thread::Builder::new().name(READER.into()).spawn(move || user_keys(&scan, true)).unwrap();
    assert_eq!(keys.join().unwrap(), expected);
    assert_eq!(rereads.hits(), 0, "a reverse scan with no removal meanwhile re-read keys");
    // Vacuum between two of its batches (the reader held in its first,
    // inside the deleted key's history): that key is read again.
    let scan = reader.clone();
    let got = with_reader_paused(
        move || user_keys(&scan, true),
        || assert!(db.vacuum().unwrap() > 0, "vacuum removed nothing"),
    );
    assert_eq!(got, expected);
    assert!(rereads.hits() >= 1, "a reverse scan with a vacuum between its batches re-read nothing");
}

/// The same tear with a commit's pruning as the remover: a commit that
/// writes the deleted key again reads its whole history (61 versions,
/// under `PRUNE_SCAN_MAX`) and removes the tombstone and everything below
/// it, oldest first, while the reverse scan is paused between its tree
/// batches. The scan's snapshot is at the delete.
#[test]
fn a_reverse_scan_never_returns_a_value_whose_tombstone_a_commit_pruned_meanwhile() {
    let _alone = failpoints_alone();
    let (_dir, db) = db_with_deleted_key();
    let reader = db.snapshot();
    let scan = reader.clone();
    let pruned = db.stats().versions_pruned;
    let got = with_reader_paused(move || last_entry(&scan), || db.update(|tx| tx.put(b"k", b"new")).unwrap());
    assert!(db.stats().versions_pruned >= pruned + 61, "the commit pruned too little: {:?}", db.stats());
    assert_last_is_the_last_live_key(got);
    assert_eq!(db.snapshot().get(b"k").unwrap().as_deref(), Some(&b"new"[..]));
}

/// The first entry a reverse scan of the default keyspace returns.
fn last_entry(snapshot: &crabtree::Snapshot) -> Option<(Vec<u8>, Vec<u8>)> {
    snapshot.range::<&[u8], _>(..).unwrap().next_back().transpose().unwrap()
}

/// `got`, what a reverse scan of [`db_with_deleted_key`] returned first, is
/// the last `a-00NN` key (100 bytes), not the deleted key after it.
fn assert_last_is_the_last_live_key(got: Option<(Vec<u8>, Vec<u8>)>) {
    let got = got.map(|(key, value)| (String::from_utf8(key).unwrap(), value.len()));
    assert_eq!(got, Some(("a-0019".to_string(), 100)), "a deleted key came back in a reverse scan");
}

/// The keys a snapshot's scan of the default keyspace returns, from the
/// front or the back (in key order either way).
fn user_keys(snapshot: &crabtree::Snapshot, backward: bool) -> Vec<String> {
    let range = snapshot.range::<&[u8], _>(..).unwrap();
    let mut keys: Vec<String> = if backward {
        range.rev().map(|entry| String::from_utf8(entry.unwrap().0).unwrap()).collect()
    } else {
        range.map(|entry| String::from_utf8(entry.unwrap().0).unwrap()).collect()
    };
    if backward {
        keys.reverse();
    }
    keys
}

fn expected_a_keys(n: u32) -> Vec<String> {
    (0..n).map(|i| format!("a-{i:04}")).collect()
}

/// Fills the leaf that holds `k`'s tombstone: keys `a-1NNN`, between the
/// `a-00NN` keys and `k`, in ascending order (each lands just before
/// `k`'s versions), one commit each. The leaf fills and is pruned (then
/// split) again and again, its last entries being `k`'s newest versions
/// while older ones lie in the leaves to its right.
fn fill_before_k(db: &Db, count: u32) {
    for i in 0..count {
        db.update(|tx| tx.put(format!("a-1{i:03}").as_bytes(), &[b'f'; 100])).unwrap();
    }
}

/// Leaf pruning of a leaf whose last entries are a deleted key's tombstone
/// and newest versions, the key's older versions in the leaves to its
/// right: the pruner must keep the tombstone (the run is not complete in
/// the leaf), else those older versions come back. Checked with point
/// reads and scans from both ends. (Fails with `complete` always true in
/// `mvcc::prunable`.)
#[test]
fn leaf_pruning_keeps_a_tombstone_whose_older_versions_continue_in_the_right_neighbour() {
    let (dir, db) = db_with_deleted_key();
    let pruned = db.stats().versions_pruned;
    fill_before_k(&db, 150);
    assert!(db.stats().versions_pruned > pruned, "no leaf was pruned: {:?}", db.stats());
    let snapshot = db.snapshot();
    assert_eq!(snapshot.get(b"k").unwrap().map(|v| v.len()), None, "a deleted key came back after leaf pruning");
    let mut expected = expected_a_keys(20);
    expected.extend((0..150).map(|i| format!("a-1{i:03}")));
    assert_eq!(user_keys(&snapshot, false), expected);
    assert_eq!(user_keys(&snapshot, true), expected);
    // After vacuum, and after a reopen (the pruned leaves were logged).
    db.vacuum().unwrap();
    assert_eq!(db.snapshot().get(b"k").unwrap(), None);
    drop(snapshot);
    drop(db);
    let db = open(&dir.path().join("db.crab"));
    assert_eq!(db.snapshot().get(b"k").unwrap(), None);
    assert_eq!(user_keys(&db.snapshot(), true), expected);
    db.check().unwrap();
}

/// A reverse scan paused inside its first tree batch (it holds the
/// oldest versions of a deleted key) while writers fill and prune the leaf
/// that holds the key's tombstone: the scan must still not return the key.
#[test]
fn a_reverse_scan_paused_while_the_tombstone_leaf_is_pruned_returns_no_deleted_key() {
    let _alone = failpoints_alone();
    let (_dir, db) = db_with_deleted_key();
    let reader = db.snapshot();
    let scan = reader.clone();
    let pruned = db.stats().versions_pruned;
    let got = with_reader_paused(
        move || {
            scan.range::<&[u8], _>(..)
                .unwrap()
                .rev()
                .map(|entry| String::from_utf8(entry.unwrap().0).unwrap())
                .collect::<Vec<_>>()
        },
        || fill_before_k(&db, 150),
    );
    assert!(db.stats().versions_pruned > pruned, "no leaf was pruned: {:?}", db.stats());
    let mut want = expected_a_keys(20);
    want.reverse();
    assert_eq!(got, want);
    assert_eq!(reader.get(b"k").unwrap(), None);
}

/// A forward scan paused inside its first tree batch (the leaf holding
/// the `a-00NN` keys, the deleted key's tombstone and its newest versions,
/// read and validated) while vacuum removes the key's versions: the
/// forward read meets the tombstone before the older versions, which go
/// first, so it must not return the key either.
#[test]
fn a_forward_scan_paused_while_vacuum_removes_a_deleted_key_returns_no_deleted_key() {
    let _alone = failpoints_alone();
    let (_dir, db) = db_with_deleted_key();
    let reader = db.snapshot();
    let scan = reader.clone();
    let got = with_reader_paused(
        move || scan.range::<&[u8], _>(..).unwrap().map(|entry| entry.unwrap().0).collect::<Vec<_>>(),
        || {
            let removed = db.vacuum().unwrap();
            assert!(removed >= 61, "vacuum removed {removed} versions");
        },
    );
    let got: Vec<String> = got.into_iter().map(|key| String::from_utf8(key).unwrap()).collect();
    assert_eq!(got, expected_a_keys(20));
}

/// First-committer-wins across a leaf prune: a transaction that began
/// before a delete must conflict when it writes the key, even after the
/// leaf holding the delete's tombstone was pruned (its snapshot holds the
/// horizon below the delete, so the tombstone must stay).
#[test]
fn a_commit_conflicts_with_a_delete_whose_leaf_was_pruned_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir.path().join("db.crab"));
    for i in 0..20u32 {
        db.update(|tx| tx.put(format!("a-{i:04}").as_bytes(), &[b'a'; 100])).unwrap();
    }
    // 60 versions pinned, then the value the old transaction reads: the
    // leaf pruner may take the versions below it, not the delete above.
    let pin = db.snapshot();
    for i in 0..60u32 {
        db.update(|tx| tx.put(b"k", &vec![(i % 200) as u8 + 1; 300])).unwrap();
    }
    db.update(|tx| tx.put(b"k", b"back")).unwrap();
    let mut old = db.begin();
    assert_eq!(old.get(b"k").unwrap().as_deref(), Some(&b"back"[..]));
    db.update(|tx| tx.delete(b"k")).unwrap();
    // The delete's commit pruned nothing (the pin): the leaf pruner finds
    // it all, with the horizon at the old transaction.
    drop(pin);
    let pruned = db.stats().versions_pruned;
    fill_before_k(&db, 150);
    assert!(db.stats().versions_pruned > pruned, "no leaf was pruned: {:?}", db.stats());
    assert_eq!(old.get(b"k").unwrap().as_deref(), Some(&b"back"[..]), "the old snapshot lost its value");
    old.put(b"k", b"lost update").unwrap();
    assert!(matches!(old.commit(), Err(Error::Conflict)), "a write over a concurrent delete committed");
    assert_eq!(db.snapshot().get(b"k").unwrap(), None);
}

/// Runs `read` on a thread named `READER` paused at `point` (the first
/// time it gets there); runs `meanwhile`, then lets it go on.
fn with_reader_paused_at<T: Send + 'static>(
    point: &'static str,
    read: impl FnOnce() -> T + Send + 'static,
    meanwhile: impl FnOnce(),
) -> T {
    let pause = Pause::arm_for(point, |thread| thread.name() == Some(READER));
    let reader = std::thread::Builder::new().name(READER.into()).spawn(read).unwrap();
    assert!(pause.wait_parked(Duration::from_secs(20)), "the reader never reached {point}");
    meanwhile();
    pause.resume();
    reader.join().unwrap()
}

/// A point read of a deleted key held between its level-1 node and its
/// leaf (failpoint `point.before_leaf`) while the leaf holding the
/// tombstone is pruned and split again and again, then while vacuum
/// removes every version of the key (emptying leaves): it must read the
/// key as deleted both times.
#[test]
fn a_point_read_held_before_its_leaf_while_it_is_pruned_and_vacuumed_reads_the_delete() {
    let _alone = failpoints_alone();
    let (_dir, db) = db_with_deleted_key();
    let reader = db.snapshot();
    let pruned = db.stats().versions_pruned;
    let read = reader.clone();
    let got = with_reader_paused_at("point.before_leaf", move || read.get(b"k").unwrap(), || fill_before_k(&db, 150));
    assert!(db.stats().versions_pruned > pruned, "no leaf was pruned: {:?}", db.stats());
    assert_eq!(got.map(|v| v.len()), None, "a deleted key came back to a point read (leaf pruning)");
    let read = reader.clone();
    let got = with_reader_paused_at(
        "point.before_leaf",
        move || read.get(b"k").unwrap(),
        || {
            let removed = db.vacuum().unwrap();
            assert!(removed >= 2, "vacuum removed {removed} versions");
        },
    );
    assert_eq!(got.map(|v| v.len()), None, "a deleted key came back to a point read (vacuum)");
    assert_eq!(db.snapshot().get(b"k").unwrap(), None);
}

/// A reverse scan returns each key once even when a key it already
/// returned gets many new versions (above its snapshot, spread over
/// several leaves) between two of its refills: the next refill must go on
/// below that key, not meet its new versions as a key to resolve again.
/// (The re-read of keys that span tree batches, without the bound below
/// the key's prefix, returned `c` twice here.)
#[test]
fn a_reverse_scan_returns_a_key_once_when_it_gets_new_versions_between_refills() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir.path().join("db.crab"));
    db.update(|tx| {
        for key in ["b", "c", "d0", "d1", "d2"] {
            tx.put(key.as_bytes(), b"v")?;
        }
        Ok(())
    })
    .unwrap();
    let snapshot = db.snapshot();
    let mut scan = snapshot.range::<&[u8], _>(..).unwrap();
    // The first refill of the back takes four entries: `d2`, `d1`, `d0`
    // and `c`, and ends at `b`.
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(String::from_utf8(scan.next_back().unwrap().unwrap().0).unwrap());
    }
    for i in 0..60u32 {
        db.update(|tx| tx.put(b"c", &vec![(i % 200) as u8 + 1; 300])).unwrap();
    }
    got.extend(scan.rev().map(|entry| String::from_utf8(entry.unwrap().0).unwrap()));
    assert_eq!(got, ["d2", "d1", "d0", "c", "b"]);
    assert_eq!(user_keys(&snapshot, true), ["b", "c", "d0", "d1", "d2"]);
}
