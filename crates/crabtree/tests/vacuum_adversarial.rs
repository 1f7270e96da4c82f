//! Goal: schedules found by an adversarial review of the vacuum backlog
//! (`mvcc/backlog.rs`, `Engine::prune`, `vacuum::step`/`pass`), which lost
//! space for good or brought a deleted value back, stay fixed.
//!
//! Method: each test replays one schedule (a failpoint where it needs an
//! error or a pause); its doc comment gives the schedule, the expected
//! result and what the code before the fix did. The first two failed
//! before their fixes; the last two hold gaps that were sound (each fails
//! with the rule that closes its gap removed).

use crabtree::{Db, Error, Options, Stats, failpoint};
use std::time::{Duration, Instant};

/// Failpoints are process-wide: the scenarios run one at a time.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The catalog's entry for `default`.
const CATALOG_ENTRIES: u64 = 1;

/// Waits until `done` holds for the stats; `None` after `limit`.
fn wait_until(db: &Db, limit: Duration, done: impl Fn(&Stats) -> bool) -> Option<Stats> {
    let started = Instant::now();
    loop {
        let stats = db.stats();
        if done(&stats) {
            return Some(stats);
        }
        if started.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A live key (data that keeps rounds from being dense).
fn live_key(i: u32) -> Vec<u8> {
    format!("live-{i:08}").into_bytes()
}

/// A database in `dir` whose worker runs every 2 ms (with `memory_budget`
/// if given), once no whole pass is due (a new database has none: it
/// holds no old version).
fn open_vacuuming(dir: &tempfile::TempDir, memory_budget: Option<usize>) -> Db {
    let mut options = Options { vacuum_interval: Some(Duration::from_millis(2)), ..Options::default() };
    if let Some(budget) = memory_budget {
        options.memory_budget = budget;
    }
    let db = Db::open_with(dir.path().join("db.crab"), options).unwrap();
    wait_until(&db, Duration::from_secs(20), |s| !s.vacuum_whole_pass_pending).expect("the pass after open");
    db
}

/// Puts `live` keys of 200-byte values, 1,000 a commit (`live` a multiple
/// of 1,000).
fn put_live(db: &Db, live: u32) {
    for first in (0..live).step_by(1_000) {
        db.update(|tx| (first..first + 1_000).try_for_each(|i| tx.put(&live_key(i), &[7; 200]))).unwrap();
    }
}

/// A 200-byte key: the backlog's bound is reached with few commits.
fn big_key(i: u32) -> Vec<u8> {
    let mut key = format!("big-{i:08}").into_bytes();
    key.resize(200, b'x');
    key
}

/// Entries dropped from the backlog for commits above the horizon were
/// lost for good: the whole pass that the drop asked for covered only the
/// entries at or below ITS horizon, yet cleared the request. With a
/// snapshot open the horizon is the snapshot's, so finished commits lie
/// above it. Now the request records the largest commit timestamp any
/// dropped entry could have, and only a pass whose horizon reached it
/// clears it (the worker waits for the horizon instead of passing early).
///
/// Schedule (background worker every 2 ms, 8 MiB pool: 1 MiB backlog):
/// 1. wait until no whole pass is due (none on a new database);
/// 2. put `k`=v1 (ts1); open snapshot S (horizon = ts1); put `k`=v2
///    (ts2: its entry lists ts1 as left);
/// 3. delete 6,000 never-written 200-byte keys, 20 per commit (each
///    leaves its tombstone in the backlog; S holds the horizon, so
///    nothing is ready): the backlog (about 4,400 such entries) overflows;
///    the code before the fix then ran its whole pass at horizon ts1,
///    which removed nothing and cleared the request;
/// 4. drop S; let the worker drain the backlog.
///
/// Expected: only `k`@ts2, the live keys and the catalog entry remain (every version
/// left is garbage once the horizon passes ts2 and the tombstones).
/// Before the fix: `k`@ts1 and the thousands of tombstones whose entries
/// were dropped stayed for good; no round and no whole pass of the worker
/// removed them (only an explicit `Db::vacuum` did).
#[test]
fn entries_dropped_above_the_horizon_are_never_vacuumed_by_the_worker() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let db = open_vacuuming(&dir, Some(8 << 20));
    // Live data, so the tree has more pages than the entries left after
    // the overflow: the round that takes them visits them one by one
    // (a dense round would walk the tree and hide the loss).
    let live = 10_000u32;
    put_live(&db, live);
    db.update(|tx| tx.put(b"k", b"v1")).unwrap();
    let snap = db.snapshot();
    db.update(|tx| tx.put(b"k", b"v2")).unwrap();
    // About 240 bytes per entry: the 1 MiB bound is reached near 4,400.
    let deletes = 5_000u32;
    for first in (0..deletes).step_by(20) {
        db.update(|tx| (first..first + 20).try_for_each(|i| tx.delete(&big_key(i)))).unwrap();
    }
    // Rounds and (before the fix) the whole pass run while S holds the
    // horizon back.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(snap.get(b"k").unwrap().as_deref(), Some(&b"v1"[..]));
    drop(snap);
    let expected = CATALOG_ENTRIES + 1 + u64::from(live);
    assert!(db.stats().page_count > 1_000, "{:?}", db.stats());
    let drained = wait_until(&db, Duration::from_secs(20), |s| s.tree_entries == expected);
    let stats = db.stats();
    let explicit = db.vacuum().unwrap();
    assert!(
        drained.is_some(),
        "the worker never removed {} garbage versions ({deletes} tombstones written, k@ts1 left); \
         an explicit Db::vacuum then removed {explicit}: {stats:?}",
        stats.tree_entries - expected
    );
}

/// `Engine::prune` removed the versions `read::invisible_of` names oldest
/// first, but ignored an error and went on: when the removal of a value
/// failed, the tombstone above it was still removed, and the value was
/// visible again to every snapshot that saw the delete. Now the first
/// error ends the key's removals (as in `vacuum::visit` and `walk_range`),
/// and what stayed is recorded in the backlog for vacuum.
///
/// Schedule (no background vacuum):
/// 1. put `k`=v0 (T0); delete `k` (T1); open snapshot S at T1 (horizon
///    = T1);
/// 2. put `k`=v2 (T2): its prune reads [T1 tombstone, T0], complete, and
///    removes T0 then T1; an error is injected (failpoint
///    `write.leaf_latched`, this thread only) into the removal of T0.
///
/// Expected: S still reads `k` as deleted (T0 stays, so T1 must stay).
/// Before the fix: T1's tombstone was removed anyway and S read `v0`.
#[test]
fn a_failed_prune_removal_still_removes_the_tombstone_above_it() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let options = Options { vacuum_interval: None, ..Options::default() };
    let db = Db::open_with(dir.path().join("db.crab"), options).unwrap();
    db.update(|tx| tx.put(b"k", b"v0")).unwrap();
    db.update(|tx| tx.delete(b"k")).unwrap();
    let snap = db.snapshot();
    assert_eq!(snap.get(b"k").unwrap(), None);
    assert_eq!(db.stats().tree_entries, CATALOG_ENTRIES + 2);
    let me = std::thread::current().id();
    let watched = db.clone();
    let fired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fire = std::sync::Arc::clone(&fired);
    // The commit's writes in this thread: the insert of T2 (3 versions
    // before it), then the removal of T0 (4 versions): that one fails.
    failpoint::set("write.leaf_latched", move || {
        if std::thread::current().id() == me
            && watched.stats().tree_entries == CATALOG_ENTRIES + 3
            && !fire.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(Error::InvalidArgument("injected: prune removal failed".into()));
        }
        Ok(())
    });
    let committed = db.update(|tx| tx.put(b"k", b"v2"));
    failpoint::clear("write.leaf_latched");
    committed.unwrap();
    assert!(fired.load(std::sync::atomic::Ordering::SeqCst), "the injected error fired");
    assert_eq!(
        snap.get(b"k").unwrap(),
        None,
        "the snapshot read `k` as deleted; the failed prune brought its old value back"
    );
}

/// A background round that fails part-way (an I/O error on a removal)
/// must not go on to the tombstone above the value it could not remove,
/// and must leave the rest to a whole pass (`vacuum::step`: the round's
/// error gives the backlog up).
///
/// Schedule (worker every 2 ms): put `k`=v0; delete `k` (its entry lists
/// v0, then the tombstone); the worker's removal of v0 fails once
/// (failpoint `write.leaf_latched`, the vacuum thread only). Expected:
/// `k` reads as deleted throughout, and the whole pass that follows
/// removes both versions.
#[test]
fn a_round_cut_short_by_an_error_keeps_the_tombstone_and_asks_for_a_pass() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let db = open_vacuuming(&dir, None);
    let fired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fire = std::sync::Arc::clone(&fired);
    failpoint::set("write.leaf_latched", move || {
        if std::thread::current().name() == Some("crabtree-vacuum")
            && !fire.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(Error::InvalidArgument("injected: vacuum removal failed".into()));
        }
        Ok(())
    });
    db.update(|tx| tx.put(b"k", b"v0")).unwrap();
    db.update(|tx| tx.delete(b"k")).unwrap();
    let started = Instant::now();
    while !fired.load(std::sync::atomic::Ordering::SeqCst) || db.stats().tree_entries > CATALOG_ENTRIES {
        assert_eq!(db.snapshot().get(b"k").unwrap(), None, "a deleted value came back: {:?}", db.stats());
        assert!(started.elapsed() < Duration::from_secs(20), "never vacuumed: {:?}", db.stats());
        std::thread::sleep(Duration::from_millis(1));
    }
    failpoint::clear("write.leaf_latched");
    assert_eq!(db.snapshot().get(b"k").unwrap(), None);
    db.check().unwrap();
}

/// The backlog's `take_ready` sorts its entries with the lock free, so
/// commits push entries into a fresh arena meanwhile; the entries still
/// waiting for the horizon then go back after those, at new offsets. An
/// entry put back with its old offset would name another key's bytes,
/// and its versions would stay for good (no whole pass follows).
///
/// Schedule (worker every 2 ms, live data so the rounds are not dense):
/// 1. put `k1`=v1 (A); open snapshot S (horizon A); put `k1`=v2 (B: its
///    entry lists A, and waits for the horizon);
/// 2. the worker's next `take_ready` takes that entry out and is held in
///    the gap (failpoint `backlog.take_gap`, the vacuum thread only);
/// 3. meanwhile 20 commits put new keys and overwrite `k2` twice: their
///    entries fill the fresh arena;
/// 4. the worker goes on; S is dropped.
///
/// Expected: every old version goes (`k1`@A, `k2`'s two older ones),
/// leaving one version per key. Fails with the waiting entries put back
/// at their old offsets, or not put back.
#[test]
fn entries_waiting_across_the_take_gap_keep_their_keys() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let db = open_vacuuming(&dir, None);
    let live = 5_000u32;
    put_live(&db, live);
    db.update(|tx| tx.put(b"k1", b"v1")).unwrap();
    let snap = db.snapshot();
    db.update(|tx| tx.put(b"k1", b"v2")).unwrap();
    let (in_gap, held) = std::sync::mpsc::channel::<()>();
    let (release, go_on) = std::sync::mpsc::channel::<()>();
    let go_on = std::sync::Mutex::new(go_on);
    let in_gap = std::sync::Mutex::new(in_gap);
    let fired = std::sync::atomic::AtomicBool::new(false);
    failpoint::set("backlog.take_gap", move || {
        if std::thread::current().name() == Some("crabtree-vacuum")
            && !fired.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let _ = in_gap.lock().unwrap().send(());
            let _ = go_on.lock().unwrap().recv_timeout(Duration::from_secs(20));
        }
        Ok(())
    });
    held.recv_timeout(Duration::from_secs(20)).expect("the worker reached the gap");
    for i in 0..20u32 {
        db.update(|tx| tx.put(format!("new-{i:04}-{}", "n".repeat(40)).as_bytes(), b"x")).unwrap();
        if i % 10 == 0 {
            db.update(|tx| tx.put(b"k2", &[i as u8; 10])).unwrap();
        }
    }
    release.send(()).unwrap();
    failpoint::clear("backlog.take_gap");
    assert_eq!(snap.get(b"k1").unwrap().as_deref(), Some(&b"v1"[..]));
    drop(snap);
    let expected = CATALOG_ENTRIES + u64::from(live) + 2 + 20;
    let drained = wait_until(&db, Duration::from_secs(10), |s| s.tree_entries == expected);
    assert!(drained.is_some(), "old versions stayed after the gap: {:?}", db.stats());
    assert_eq!(db.snapshot().get(b"k1").unwrap().as_deref(), Some(&b"v2"[..]));
    db.check().unwrap();
}
