//! Goal: schedules found by an adversarial review of the MVCC layer, which
//! lost, resurrected or wrongly exposed data, stay fixed.
//!
//! Method: each test replays one schedule (failpoints where it needs an
//! error or a pause); its doc comment gives the schedule, the expected
//! result and what the code before the fix did. Each failed before its
//! fix (the review ran against commit 611273b).
//!
//! Failpoints are process-wide, so the scenarios run one at a time (a
//! mutex), and every failpoint action filters by thread.

use crabtree::failpoint;
use crabtree::{Db, Error, Options};
use std::sync::Mutex;
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A database without the background vacuum (passes run only when a test
/// asks).
fn open(dir: &tempfile::TempDir) -> Db {
    let options = Options { vacuum_interval: None, ..Options::default() };
    Db::open_with(dir.path().join("db.crab"), options).unwrap()
}

/// A snapshot begun after `drop_keyspace` read the dropped keyspace
/// through a handle taken before the drop, but vacuum treats every
/// version of a keyspace dropped at or below the horizon as invisible to
/// all snapshots. Now reads through a handle check the catalog at their
/// snapshot (`db::keyspace::exists_at`): the keyspace reads as empty for
/// snapshots at or after its drop.
///
/// Schedule: put `k = v` in keyspace `t`; drop `t`; begin snapshot `S`
/// (its timestamp is at or above the drop's); `S` reads `k` through the
/// old handle; vacuum (horizon = `S`, so `t` counts as dropped below it);
/// `S` reads `k` again.
///
/// Expected: one snapshot reads one value (both reads equal; `None` for a
/// keyspace dropped before the snapshot began would be the consistent
/// answer). Before the fix: the first read gave `Some(v)`, the second
/// `None`: a non-repeatable read inside one snapshot.
#[test]
fn a_snapshot_begun_after_a_keyspace_drop_reads_it_differently_before_and_after_vacuum() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    let t = db.keyspace("t").unwrap();
    db.update(|tx| tx.put_in(&t, b"k", b"v")).unwrap();
    assert!(db.drop_keyspace("t").unwrap());
    let snap = db.snapshot();
    let before = snap.get_in(&t, b"k").unwrap();
    db.vacuum().unwrap();
    let after = snap.get_in(&t, b"k").unwrap();
    assert_eq!(before, after, "one snapshot, two answers for the same key (before vacuum, after vacuum)");
}

/// Vacuum removed the versions of a dropped keyspace newest first, unlike
/// every other removal, which goes oldest first so that "a tombstone never
/// goes before the value it hides" (`read::invisible`). A snapshot that
/// could still read the dropped keyspace (begun after the drop, old
/// handle: see the test above) saw a deleted value come back between the
/// two removals, or for good if the pass stopped there (an I/O error; here
/// injected at the second removal of the key, which stands equally for a
/// reader running between them). Since the fix above no snapshot that
/// reads the keyspace is left when it is swept, so the order is no longer
/// observable here; the sweep goes oldest first anyway, and this test
/// keeps the schedule's outcome.
///
/// Schedule: put `k = v1`, delete `k` in keyspace `t`; drop `t`; begin
/// snapshot `S`; `S` reads `k` (absent); vacuum, failing the removal that
/// follows the tombstone's; `S` reads `k` again.
///
/// Expected: `None` both times (the delete holds). Before the fix: the
/// second read returned `Some(v1)`, the deleted value.
#[test]
fn vacuum_of_a_dropped_keyspace_removes_a_tombstone_before_the_value_it_hides() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    let t = db.keyspace("t").unwrap();
    db.update(|tx| tx.put_in(&t, b"k", b"v1")).unwrap();
    db.update(|tx| tx.delete_in(&t, b"k")).unwrap();
    assert!(db.drop_keyspace("t").unwrap());
    let snap = db.snapshot();
    assert_eq!(snap.get_in(&t, b"k").unwrap(), None, "deleted before the drop");
    // The tree: catalog `default`, catalog `t` (its put and the drop's
    // tombstone), `k`'s put and tombstone. Vacuum takes the catalog's two
    // versions of `t` (tombstone at the horizon: both go), then `k`'s
    // tombstone; the next removal (k's put) fails.
    let entries = db.stats().tree_entries;
    assert_eq!(entries, 5);
    let me = std::thread::current().id();
    let watched = db.clone();
    failpoint::set("write.leaf_latched", move || {
        if std::thread::current().id() == me && watched.stats().tree_entries == entries - 3 {
            return Err(Error::InvalidArgument("injected: vacuum cut short".into()));
        }
        Ok(())
    });
    let vacuumed = db.vacuum();
    failpoint::clear("write.leaf_latched");
    assert!(vacuumed.is_err(), "the injected error stops the pass");
    assert_eq!(
        snap.get_in(&t, b"k").unwrap(),
        None,
        "the snapshot read `k` as deleted; the vacuum brought its old value back"
    );
}

/// A commit that waits for durability and whose log write fails returns
/// the error and poisons the engine; it was then *finished* in the oracle,
/// so the watermark passed it and every later snapshot read its versions,
/// although its record never reached the log: after a reopen (no crash, a
/// clean close) the commit was gone. Now it is *failed* in the oracle, as
/// a half-applied commit is: it stays invisible in this process. The protocol
/// promises the opposite: snapshots never see "(for `Immediate`) one not
/// yet durable" (docs/protocols/mvcc.md, "The watermark"); a half-applied
/// commit is `fail`ed for that reason, a non-durable one is not.
///
/// Schedule: commit `k = v0`; every log write then fails (failpoint
/// `wal.before_write`), held until the versions of the next commit are
/// in the tree, so the failure comes from its durability wait; commit
/// `k = v1` (returns an error); a new snapshot reads `k`; clean close,
/// reopen, read `k`.
///
/// Expected: the snapshot after the failed commit reads what the database
/// holds after reopen. Before the fix: the snapshot read `v1`, the
/// reopened database `v0`.
#[test]
fn an_immediate_commit_whose_log_write_failed_is_visible_then_lost() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    db.update(|tx| tx.put(b"k", b"v0")).unwrap();
    let entries = db.stats().tree_entries;
    // The closure must not keep the database open once the commit is done.
    let watched = std::sync::Arc::new(Mutex::new(Some(db.clone())));
    let inside = std::sync::Arc::clone(&watched);
    // Writes wait until the failed commit's version is applied, then fail.
    failpoint::set("wal.before_write", move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let applied = match inside.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                Some(db) => db.stats().tree_entries > entries,
                None => true,
            };
            if applied {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(Error::InvalidArgument("injected: log write failed".into()))
    });
    let mut tx = db.begin();
    tx.put(b"k", b"v1").unwrap();
    let committed = tx.commit();
    drop(tx);
    failpoint::clear("wal.before_write");
    watched.lock().unwrap_or_else(|p| p.into_inner()).take();
    assert!(committed.is_err(), "the log write failed, so must the commit");
    let seen = db.snapshot().get(b"k").unwrap();
    drop(db);
    // The close may still be releasing the file for a moment.
    let started = std::time::Instant::now();
    let db = loop {
        let options = Options { vacuum_interval: None, ..Options::default() };
        match Db::open_with(dir.path().join("db.crab"), options) {
            Err(Error::Locked) if started.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => break other.unwrap(),
        }
    };
    let kept = db.snapshot().get(b"k").unwrap();
    assert_eq!(seen, kept, "a snapshot read a value of a failed commit that the database does not have");
}
