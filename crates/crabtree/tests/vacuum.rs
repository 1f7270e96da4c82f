//! Goal: background vacuum removes what commits leave behind (the version
//! an overwrite shadows, a delete's tombstone) by visiting those keys, not
//! by reading the whole tree each round; dropped keyspaces are swept once,
//! and a commit racing a drop cannot write behind the sweep; versions an
//! earlier process left are found by one whole pass after open, unless
//! its close removed them and said so (then the open reads nothing).
//!
//! Method: a database with background vacuum every few milliseconds and
//! `Stats::vacuum_versions_read` as the measure of what vacuum read. Each
//! test waits (bounded) for the state it expects; the race with a drop is
//! forced with the failpoint `commit.before_timestamp`.

use crabtree::failpoint::Pause;
use crabtree::{Db, Error, Keyspace, Options, Stats};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

/// Failpoints are process-wide (arming a point replaces its action): the
/// scenarios that use them run one at a time.
static FAILPOINTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn failpoints_alone() -> std::sync::MutexGuard<'static, ()> {
    FAILPOINTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn open_with_vacuum(path: &std::path::Path, vacuum: Option<Duration>) -> Db {
    Db::open_with(path, Options { vacuum_interval: vacuum, ..Options::default() }).unwrap()
}

/// Waits until `done` holds for the stats, or panics with `what`. (A
/// round updates its counters when it ends, after its removals: wait for
/// the counters too, not only for the tree.)
fn wait_for(db: &Db, what: &str, done: impl Fn(&Stats) -> bool) -> Stats {
    let started = Instant::now();
    loop {
        let stats = db.stats();
        if done(&stats) {
            return stats;
        }
        assert!(started.elapsed() < WAIT, "{what}: {stats:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

/// A 100-byte value: a round weighs its entries against the tree's pages.
fn value(tag: &str) -> Vec<u8> {
    let mut value = tag.as_bytes().to_vec();
    value.resize(100, b'.');
    value
}

/// Entries besides user data: the catalog's entry for `default`.
const CATALOG_ENTRIES: u64 = 1;

#[test]
fn rounds_visit_the_keys_commits_left_versions_of_not_the_whole_tree() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.crab");
    let keys = 5_000;
    {
        let db = open_with_vacuum(&path, None);
        for chunk in (0..keys).collect::<Vec<_>>().chunks(500) {
            db.update(|tx| {
                for &i in chunk {
                    tx.put(&key(i), &value("first"))?;
                }
                Ok(())
            })
            .unwrap();
        }
    }
    let db = open_with_vacuum(&path, Some(Duration::from_millis(5)));
    let settled = db.stats();
    assert!(settled.page_count > 100, "{settled:?}");
    // The earlier process left no old version and said so at its close:
    // no whole pass after open.
    assert!(!settled.vacuum_whole_pass_pending, "{settled:?}");
    // Overwrite 20 keys twice and delete 10 others: each commit leaves one
    // version (or its tombstone) behind for vacuum.
    for round in 0..2 {
        for i in 0..20 {
            db.update(|tx| tx.put(&key(i), &value(&format!("v{round}")))).unwrap();
        }
    }
    for i in 100..110 {
        db.update(|tx| tx.delete(&key(i))).unwrap();
    }
    let expected = CATALOG_ENTRIES + keys as u64 - 10;
    let done = wait_for(&db, "vacuum of the left versions", |s| {
        // Writers and the leaf pruner may take some of them (a leaf that
        // fills prunes tombstones too).
        s.tree_entries == expected
            && s.versions_vacuumed + s.versions_pruned >= settled.versions_vacuumed + settled.versions_pruned + 10
    });
    let read = done.vacuum_versions_read - settled.vacuum_versions_read;
    assert!(read <= 200, "vacuum read {read} versions for 50 commits over a tree of {keys} keys: {done:?}");
    let snap = db.snapshot();
    assert_eq!(snap.get(&key(0)).unwrap(), Some(value("v1")));
    assert_eq!(snap.get(&key(100)).unwrap(), None);
    assert_eq!(snap.get(&key(110)).unwrap(), Some(value("first")));
    db.check().unwrap();
}

#[test]
fn a_round_with_left_versions_on_most_pages_walks_the_tree_instead() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.crab");
    let keys = 2_000;
    {
        let db = open_with_vacuum(&path, None);
        db.update(|tx| (0..keys).try_for_each(|i| tx.put(&key(i), &value("first")))).unwrap();
    }
    let db = open_with_vacuum(&path, Some(Duration::from_millis(20)));
    let settled = db.stats();
    assert!(!settled.vacuum_whole_pass_pending, "{settled:?}");
    // One commit per key: more entries than the tree has pages.
    for i in 0..keys {
        db.update(|tx| tx.put(&key(i), &value("second"))).unwrap();
    }
    assert!(u64::from(keys) > db.stats().page_count, "{:?}", db.stats());
    let done = wait_for(&db, "the left versions removed", |s| {
        s.tree_entries == CATALOG_ENTRIES + u64::from(keys) && s.versions_vacuumed > settled.versions_vacuumed
    });
    let read = done.vacuum_versions_read - settled.vacuum_versions_read;
    assert!(
        read >= u64::from(keys),
        "a dense round reads the tree rather than visiting its entries one by one: {done:?}"
    );
    assert_eq!(db.snapshot().get(&key(7)).unwrap(), Some(value("second")));
    db.check().unwrap();
}

#[test]
fn a_long_snapshot_holds_the_backlog_back_and_it_drains_once_the_snapshot_ends() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_with_vacuum(&dir.path().join("db.crab"), Some(Duration::from_millis(5)));
    db.update(|tx| tx.put(b"k", b"0")).unwrap();
    let long = db.snapshot();
    for i in 1..=30u32 {
        db.update(|tx| tx.put(b"k", i.to_string().as_bytes())).unwrap();
    }
    let pinned = wait_for(&db, "versions counted as pinned", |s| s.versions_pinned >= 30);
    assert_eq!(long.get(b"k").unwrap().as_deref(), Some(&b"0"[..]), "vacuum kept what the snapshot sees: {pinned:?}");
    drop(long);
    wait_for(&db, "the backlog drained", |s| s.tree_entries == CATALOG_ENTRIES + 1 && s.versions_pinned == 0);
    assert_eq!(db.snapshot().get(b"k").unwrap().as_deref(), Some(&b"30"[..]));
    db.check().unwrap();
}

#[test]
fn versions_left_by_an_earlier_process_go_in_the_first_pass_after_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.crab");
    {
        // No vacuum: the overwritten versions and tombstones stay.
        let db = open_with_vacuum(&path, None);
        for round in 0..3 {
            db.update(|tx| {
                for i in 0..50 {
                    tx.put(&key(i), format!("v{round}").as_bytes())?;
                }
                Ok(())
            })
            .unwrap();
        }
        db.update(|tx| tx.delete(&key(0))).unwrap();
        assert!(db.stats().tree_entries > CATALOG_ENTRIES + 50, "{:?}", db.stats());
    }
    let db = open_with_vacuum(&path, Some(Duration::from_millis(5)));
    wait_for(&db, "the pass after open", |s| s.tree_entries == CATALOG_ENTRIES + 49 && s.vacuum_passes >= 1);
    assert_eq!(db.snapshot().get(&key(0)).unwrap(), None);
    assert_eq!(db.snapshot().get(&key(1)).unwrap().as_deref(), Some(&b"v2"[..]));
}

/// A keyspace drop held after its commit, before its mark, and a writer
/// of the keyspace that began meanwhile, held at a failpoint of its
/// commit.
struct Race {
    drop_pause: Pause,
    dropper: std::thread::JoinHandle<crabtree::Result<bool>>,
    write_pause: Pause,
    writer: std::thread::JoinHandle<crabtree::Result<()>>,
}

/// Drops keyspace `tmp` on a thread (named `names[0]`) held at
/// `keyspace.before_mark`, then starts a writer of `tmp` (thread
/// `names[1]`) and waits until it is held at `writer_point`.
fn race_a_drop(db: &Db, tmp: &Keyspace, writer_point: &'static str, names: [&'static str; 2]) -> Race {
    let [dropper_name, writer_name] = names;
    let drop_pause = Pause::arm_for("keyspace.before_mark", move |thread| thread.name() == Some(dropper_name));
    let dropper = {
        let db = db.clone();
        std::thread::Builder::new().name(dropper_name.into()).spawn(move || db.drop_keyspace("tmp")).unwrap()
    };
    assert!(drop_pause.wait_parked(WAIT), "the drop never committed");
    let write_pause = Pause::arm_for(writer_point, move |thread| thread.name() == Some(writer_name));
    let writer = {
        let (db, tmp) = (db.clone(), tmp.clone());
        std::thread::Builder::new()
            .name(writer_name.into())
            .spawn(move || {
                let mut tx = db.begin();
                tx.put_in(&tmp, b"late", b"x").unwrap();
                tx.commit().map(|_| ())
            })
            .unwrap()
    };
    assert!(write_pause.wait_parked(WAIT), "the writer never reached {writer_point}");
    Race { drop_pause, dropper, write_pause, writer }
}

#[test]
fn a_dropped_keyspace_is_swept_once_and_a_commit_racing_the_drop_is_refused() {
    let _alone = failpoints_alone();
    let dir = tempfile::tempdir().unwrap();
    let db = open_with_vacuum(&dir.path().join("db.crab"), Some(Duration::from_millis(5)));
    let tmp = db.keyspace("tmp").unwrap();
    db.update(|tx| {
        for i in 0..300 {
            tx.put_in(&tmp, &key(i), b"x")?;
        }
        Ok(())
    })
    .unwrap();
    db.update(|tx| tx.put(b"kept", b"yes")).unwrap();
    // The drop is committed and held before it marks the keyspace dropped.
    // A writer begins then (its snapshot is the drop's, so it does not hold
    // the horizon below it), passes the commit's first check for dropped
    // keyspaces and is held before it takes its timestamp. The drop is
    // marked and vacuum sweeps the keyspace; then the writer goes on.
    let Race { drop_pause, dropper, write_pause, writer } =
        race_a_drop(&db, &tmp, "commit.before_timestamp", ["dropper", "late writer"]);
    drop_pause.resume();
    assert!(dropper.join().unwrap().unwrap());
    // Catalog entries: `default`, and none for `tmp` any more.
    let swept =
        wait_for(&db, "the keyspace swept", |s| s.tree_entries == CATALOG_ENTRIES + 1 && s.vacuum_versions_read >= 300);
    write_pause.resume();
    let outcome = writer.join().unwrap();
    assert!(matches!(outcome, Err(Error::InvalidArgument(_))), "a commit into a swept keyspace: {outcome:?}");
    // Nothing appeared behind the sweep, and later rounds do not sweep it
    // again.
    std::thread::sleep(Duration::from_millis(50));
    let later = db.stats();
    assert_eq!(later.tree_entries, CATALOG_ENTRIES + 1, "{later:?}");
    assert_eq!(later.vacuum_versions_read, swept.vacuum_versions_read, "a swept keyspace is not read again: {later:?}");
    assert_eq!(db.snapshot().get(b"kept").unwrap().as_deref(), Some(&b"yes"[..]));
    db.check().unwrap();
}

#[test]
fn a_commit_into_a_keyspace_whose_drop_is_not_yet_marked_is_swept_after_it_applies() {
    let _alone = failpoints_alone();
    let dir = tempfile::tempdir().unwrap();
    let db = open_with_vacuum(&dir.path().join("db.crab"), Some(Duration::from_millis(5)));
    let tmp = db.keyspace("tmp").unwrap();
    db.update(|tx| tx.put_in(&tmp, b"early", b"x")).unwrap();
    // As above, but the writer passes both checks (it takes its timestamp
    // and logs its record) before the drop is marked, and is held before
    // it applies its version. Vacuum must not sweep the keyspace before
    // that version is in: the drop's mark is the writer's timestamp, which
    // the horizon passes only once the writer has finished.
    let Race { drop_pause, dropper, write_pause, writer } =
        race_a_drop(&db, &tmp, "commit.before_apply", ["dropper 2", "late writer 2"]);
    drop_pause.resume();
    assert!(dropper.join().unwrap().unwrap());
    // Rounds run meanwhile; none may sweep yet.
    std::thread::sleep(Duration::from_millis(50));
    write_pause.resume();
    writer.join().unwrap().unwrap();
    let done = wait_for(&db, "the keyspace swept", |s| s.tree_entries == CATALOG_ENTRIES);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(db.stats().tree_entries, CATALOG_ENTRIES, "{done:?}");
    db.check().unwrap();
}

#[test]
fn a_deleted_key_whose_history_outgrew_the_commits_read_is_visited_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_with_vacuum(&dir.path().join("db.crab"), Some(Duration::from_millis(5)));
    db.update(|tx| tx.put(b"k", b"0")).unwrap();
    // A snapshot pins 100 versions: more than a commit reads of a key's
    // history, so the delete's backlog entry cannot list them all.
    let pin = db.snapshot();
    for i in 1..=100u32 {
        db.update(|tx| tx.put(b"k", i.to_string().as_bytes())).unwrap();
    }
    db.update(|tx| tx.delete(b"k")).unwrap();
    let after_delete = db.snapshot();
    drop(pin);
    // The delete's backlog entry does not list every older version (its
    // commit read 64); the entries of the puts do, and the key must read
    // as deleted throughout the rounds that remove them.
    let started = Instant::now();
    while db.stats().tree_entries > CATALOG_ENTRIES {
        assert_eq!(after_delete.get(b"k").unwrap(), None, "{:?}", db.stats());
        assert_eq!(db.snapshot().get(b"k").unwrap(), None, "{:?}", db.stats());
        assert!(started.elapsed() < WAIT, "never vacuumed: {:?}", db.stats());
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(after_delete);
    assert_eq!(db.snapshot().get(b"k").unwrap(), None);
    db.check().unwrap();
}

/// Overwrites the first `overwrite` keys and deletes `deleted` keys from
/// `first_deleted` on, one commit each: every commit leaves a version (or
/// a tombstone) for vacuum.
fn leave_versions(db: &Db, overwrite: u32, first_deleted: u32, deleted: u32, tag: &str) {
    for i in 0..overwrite {
        db.update(|tx| tx.put(&key(i), &value(tag))).unwrap();
    }
    for i in first_deleted..first_deleted + deleted {
        db.update(|tx| tx.delete(&key(i))).unwrap();
    }
}

/// A close with background vacuum on removes what its commits left, and
/// records it: the next open has no whole-tree pass to run (it would read
/// every page of a database that has nothing to remove). A close without
/// vacuum leaves the versions, and the open after it reads the tree once.
/// Fails if the close does not drain the backlog (entries left, pass
/// pending), if the open ignores the record (pass pending), or if a close
/// records it while versions are left (third open: no pass pending).
#[test]
fn a_clean_close_removes_what_commits_left_and_spares_the_next_open_its_whole_pass() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.crab");
    {
        // The worker never runs a round (an hour apart): the close does
        // the work.
        let db = open_with_vacuum(&path, Some(Duration::from_secs(3600)));
        assert!(!db.stats().vacuum_whole_pass_pending, "a new database holds no old version");
        db.update(|tx| (0..300).try_for_each(|i| tx.put(&key(i), &value("first")))).unwrap();
        leave_versions(&db, 100, 200, 20, "second");
        // (Commits and leaf splits prune some of what is left.)
        assert!(db.stats().tree_entries > CATALOG_ENTRIES + 300, "{:?}", db.stats());
    }
    {
        let db = open_with_vacuum(&path, None);
        let stats = db.stats();
        assert!(!stats.vacuum_whole_pass_pending, "the close left nothing: {stats:?}");
        assert_eq!(stats.tree_entries, CATALOG_ENTRIES + 280, "the close removed what was left: {stats:?}");
        let snap = db.snapshot();
        assert_eq!(snap.get(&key(5)).unwrap(), Some(value("second")));
        assert_eq!(snap.get(&key(150)).unwrap(), Some(value("first")));
        assert_eq!(snap.get(&key(210)).unwrap(), None);
        drop(snap);
        db.check().unwrap();
        // Without background vacuum the close removes nothing.
        leave_versions(&db, 10, 0, 0, "third");
    }
    let db = open_with_vacuum(&path, None);
    let stats = db.stats();
    assert!(stats.vacuum_whole_pass_pending, "versions were left: {stats:?}");
    // Ten versions left, less what a full leaf's pruning took before its
    // split (the first 300 keys, ascending, left their leaves 90% full).
    assert!((CATALOG_ENTRIES + 281..=CATALOG_ENTRIES + 290).contains(&stats.tree_entries), "{stats:?}");
    db.vacuum().unwrap();
    assert_eq!(db.stats().tree_entries, CATALOG_ENTRIES + 280);
    assert_eq!(db.snapshot().get(&key(5)).unwrap(), Some(value("third")));
}

/// A close whose backlog names more keys than it may drain (100,000,
/// `CLOSE_DRAIN_MAX`: a close stays short whatever the backlog) removes
/// nothing and records nothing: the next open has its whole pass due, and
/// the pass removes what was left. Fails if the cap is gone (the close
/// drains all of it and the open has nothing due) or if a capped close
/// still records a clean backlog.
#[test]
fn a_close_with_more_left_than_it_may_drain_leaves_the_next_open_its_whole_pass() {
    let keys = 100_500u32;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.crab");
    {
        let db = open_with_vacuum(&path, Some(Duration::from_secs(3600)));
        for tag in ["first", "second"] {
            for chunk in (0..keys).collect::<Vec<_>>().chunks(10_050) {
                db.update(|tx| chunk.iter().try_for_each(|&i| tx.put(&key(i), &value(tag)))).unwrap();
            }
        }
        assert!(!db.stats().vacuum_whole_pass_pending, "{:?}", db.stats());
    }
    let db = open_with_vacuum(&path, None);
    let stats = db.stats();
    assert!(stats.vacuum_whole_pass_pending, "a close past its cap recorded a clean backlog: {stats:?}");
    let left = stats.tree_entries - CATALOG_ENTRIES - u64::from(keys);
    assert!(left > 100_000 / 2, "the close removed versions past its cap ({left} old versions left): {stats:?}");
    db.vacuum().unwrap();
    assert_eq!(db.stats().tree_entries, CATALOG_ENTRIES + u64::from(keys));
    assert_eq!(db.snapshot().get(&key(keys - 1)).unwrap(), Some(value("second")));
}

/// A close whose drain fails half-way (the fourth removal's leaf latch
/// fails, failpoint `write.leaf_latched`, for the closing thread only)
/// records nothing for the next open: that open has a whole pass due, the
/// pass removes the rest, and what readers see never changed. (Fails if a
/// failed drain still sets slot 6: no pass pending, the versions stay.)
#[test]
fn a_close_whose_drain_fails_half_way_leaves_the_next_open_its_whole_pass() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let _failpoints = failpoints_alone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.crab");
    let db = open_with_vacuum(&path, Some(Duration::from_secs(3600)));
    db.update(|tx| (0..300).try_for_each(|i| tx.put(&key(i), &value("first")))).unwrap();
    leave_versions(&db, 100, 200, 20, "second");
    let removals = std::sync::Arc::new(AtomicU32::new(0));
    let counted = std::sync::Arc::clone(&removals);
    crabtree::failpoint::set("write.leaf_latched", move || {
        if std::thread::current().name() == Some("closing") && counted.fetch_add(1, Ordering::Relaxed) >= 3 {
            return Err(Error::InvalidArgument("injected failure in the close's drain".into()));
        }
        Ok(())
    });
    std::thread::Builder::new().name("closing".into()).spawn(move || drop(db)).unwrap().join().unwrap();
    crabtree::failpoint::clear("write.leaf_latched");
    assert!(removals.load(Ordering::Relaxed) > 3, "the drain reached the failure");
    let db = open_with_vacuum(&path, None);
    let stats = db.stats();
    assert!(stats.vacuum_whole_pass_pending, "a failed drain recorded nothing: {stats:?}");
    assert!(stats.tree_entries > CATALOG_ENTRIES + 280, "the drain stopped half-way: {stats:?}");
    db.vacuum().unwrap();
    assert_eq!(db.stats().tree_entries, CATALOG_ENTRIES + 280);
    let snap = db.snapshot();
    assert_eq!(snap.get(&key(5)).unwrap(), Some(value("second")));
    assert_eq!(snap.get(&key(210)).unwrap(), None);
    drop(snap);
    db.check().unwrap();
}

/// A whole pass ends at the tree's last key as it began: keys appended
/// behind it hold only versions above its horizon. Forced: at each batch
/// the pass reads (failpoint `vacuum.batch`), this thread commits more new
/// keys at the tree's end than a batch holds. Before the bound the pass
/// chased them (in compact's concurrent test two writers kept
/// `Db::vacuum` busy for minutes while their garbage grew to millions of
/// versions); here it would run until the appends stop at 200 batches.
#[test]
fn a_pass_ends_at_the_tree_end_it_began_with_while_writers_append_behind_it() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    let _failpoints = failpoints_alone();
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(open_with_vacuum(&dir.path().join("db.crab"), None));
    let keys = 3_000u32;
    db.update(|tx| (0..keys).try_for_each(|i| tx.put(&key(i), &value("first")))).unwrap();
    // Half of them deleted: the pass has something to remove.
    db.update(|tx| (0..keys).step_by(2).try_for_each(|i| tx.delete(&key(i)))).unwrap();
    let batches = Arc::new(AtomicU32::new(0));
    let (counted, appender, me) = (Arc::clone(&batches), Arc::clone(&db), std::thread::current().id());
    crabtree::failpoint::set("vacuum.batch", move || {
        if std::thread::current().id() != me {
            return Ok(());
        }
        let batch = counted.fetch_add(1, Ordering::Relaxed);
        if batch < 200 {
            // 600 keys past every key there is (a batch reads 512).
            appender.update(|tx| {
                (0..600u32).try_for_each(|j| tx.put(format!("zz-{batch:04}-{j:04}").as_bytes(), b"appended"))
            })?;
        }
        Ok(())
    });
    let removed = db.vacuum();
    crabtree::failpoint::clear("vacuum.batch");
    let removed = removed.unwrap();
    let batches = batches.load(Ordering::Relaxed);
    // Each deleted key's value and tombstone, less what writers pruned
    // from leaves they split.
    assert_eq!(removed + db.stats().versions_pruned, 2 * u64::from(keys / 2));
    // 1 catalog entry + 3,000 values + 1,500 tombstones: 9 batches of 512.
    assert!(batches <= 10, "the pass read {batches} batches: it chased the appended keys");
    assert_eq!(db.snapshot().get(&key(1)).unwrap(), Some(value("first")));
    assert_eq!(db.snapshot().get(&key(0)).unwrap(), None);
    assert_eq!(db.stats().tree_entries, CATALOG_ENTRIES + u64::from(keys / 2) + 600 * u64::from(batches));
    db.check().unwrap();
}

/// A queue (insert key n, delete key n - 8) with no vacuum at all: the
/// writers' leaf pruning before each split takes the deleted keys'
/// tombstones with their values, so the tree stays the size of what is
/// live. (It took only versions shadowed by a newer one before: every
/// tombstone stayed, one entry per deleted key.)
#[test]
fn leaf_pruning_takes_tombstones_so_a_queue_stays_small_without_vacuum() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_with_vacuum(&dir.path().join("db.crab"), None);
    let n = 20_000u32;
    for i in 0..n {
        db.update(|tx| tx.put(&key(i), &value("queued"))).unwrap();
        if i >= 8 {
            db.update(|tx| tx.delete(&key(i - 8))).unwrap();
        }
    }
    let stats = db.stats();
    assert_eq!(stats.versions_vacuumed, 0, "{stats:?}");
    assert!(stats.tree_entries < 1_000, "{} entries for 8 live keys: {stats:?}", stats.tree_entries);
    assert!(stats.page_count < 100, "{stats:?}");
    let snap = db.snapshot();
    assert_eq!(snap.get(&key(n - 1)).unwrap(), Some(value("queued")));
    assert_eq!(snap.get(&key(n - 9)).unwrap(), None);
    assert_eq!(snap.range::<&[u8], _>(..).unwrap().count(), 8);
    drop(snap);
    db.check().unwrap();
}
