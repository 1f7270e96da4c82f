//! Recovery of transactions through the public API: a commit whose record
//! reached the log is re-applied on open even if none of its versions did
//! (the crash point forced with the failpoint `commit.before_apply`), across
//! keyspaces, wholly; and the clock moves past it, so later commits and
//! snapshots order after it.

mod common;

use common::scenario::serial;
use crabtree::failpoint;
use crabtree::{Db, Error, Options};

fn open(dir: &tempfile::TempDir) -> Db {
    Db::open_with(dir.path().join("db.crab"), Options { vacuum_interval: None, ..Options::default() }).unwrap()
}

#[test]
fn a_logged_commit_whose_versions_never_landed_is_replayed_wholly() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(&dir);
        let left = db.keyspace("left").unwrap();
        let right = db.keyspace("right").unwrap();
        let mut tx = db.begin();
        tx.put_in(&left, b"a", b"1").unwrap();
        tx.put_in(&right, b"a", b"1").unwrap();
        tx.commit().unwrap();
        failpoint::fail_with("commit.before_apply", || Error::InvalidArgument("injected crash point".into()));
        let mut tx = db.begin();
        tx.put_in(&left, b"b", b"2").unwrap();
        tx.put_in(&right, b"b", b"2").unwrap();
        tx.delete_in(&left, b"a").unwrap();
        let outcome = tx.commit();
        failpoint::clear("commit.before_apply");
        assert!(outcome.is_err(), "the injected failure reaches the caller");
        // Not applied in this process: nobody sees it.
        let snap = db.snapshot();
        assert_eq!(snap.get_in(&left, b"b").unwrap(), None);
    }
    // Reopen: the record is in the log, so the transaction is decided
    // committed and re-applied, all of it.
    let db = open(&dir);
    // What its replay shadowed (`a` under the tombstone) no backlog names:
    // vacuum reads the whole tree once, whatever the close recorded.
    assert!(db.stats().vacuum_whole_pass_pending, "{:?}", db.stats());
    let left = db.keyspace("left").unwrap();
    let right = db.keyspace("right").unwrap();
    let snap = db.snapshot();
    assert_eq!(snap.get_in(&left, b"b").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(snap.get_in(&right, b"b").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(snap.get_in(&left, b"a").unwrap(), None, "its delete too");
    assert_eq!(snap.get_in(&right, b"a").unwrap().as_deref(), Some(&b"1"[..]));
    // The clock is past it: a new commit overwrites and is seen.
    let mut tx = db.begin();
    tx.put_in(&left, b"b", b"3").unwrap();
    tx.commit().unwrap();
    assert_eq!(db.snapshot().get_in(&left, b"b").unwrap().as_deref(), Some(&b"3"[..]));
    db.check().unwrap();
    // Every handle holds the database open.
    drop((tx, snap, left, right, db));
    // And it stays so over another open (replay is idempotent, the record
    // is not replayed over the newer commit).
    let db = open(&dir);
    let left = db.keyspace("left").unwrap();
    assert_eq!(db.snapshot().get_in(&left, b"b").unwrap().as_deref(), Some(&b"3"[..]));
}

/// Puts `count` keys into `keyspace`, each with a 300-byte value of `tag`:
/// about 3.2 MiB of commit record for 10,000 keys, more than one log record
/// holds (1 MiB), so the commit goes out as a chain of pieces.
fn put_many(tx: &mut crabtree::Transaction, keyspace: &crabtree::Keyspace, count: u32, tag: u8) {
    for i in 0..count {
        tx.put_in(keyspace, format!("key{i:06}").as_bytes(), &[tag; 300]).unwrap();
    }
}

/// Every one of the `count` keys holds a value of `tag`.
fn all_tagged(snap: &crabtree::Snapshot, keyspace: &crabtree::Keyspace, count: u32, tag: u8) {
    let mut seen = 0;
    for item in snap.range_in::<&[u8], _>(keyspace, ..).unwrap() {
        let (key, value) = item.unwrap();
        assert_eq!(value, vec![tag; 300], "{}", String::from_utf8_lossy(&key));
        seen += 1;
    }
    assert_eq!(seen, count);
}

#[test]
fn a_commit_larger_than_one_log_record_is_chained_and_replayed_wholly() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    const KEYS: u32 = 10_000;
    {
        let db = open(&dir);
        let left = db.keyspace("left").unwrap();
        let right = db.keyspace("right").unwrap();
        let mut tx = db.begin();
        put_many(&mut tx, &left, KEYS, 1);
        tx.commit().expect("a 3 MiB commit is accepted");
        all_tagged(&db.snapshot(), &left, KEYS, 1);
        // The second one's chain reaches the log, none of it the tree.
        failpoint::fail_with("commit.before_apply", || Error::InvalidArgument("injected crash point".into()));
        let mut tx = db.begin();
        put_many(&mut tx, &left, KEYS, 2);
        put_many(&mut tx, &right, KEYS, 2);
        let outcome = tx.commit();
        failpoint::clear("commit.before_apply");
        assert!(outcome.is_err());
        all_tagged(&db.snapshot(), &left, KEYS, 1);
    }
    let db = open(&dir);
    let left = db.keyspace("left").unwrap();
    let right = db.keyspace("right").unwrap();
    let snap = db.snapshot();
    all_tagged(&snap, &left, KEYS, 2);
    all_tagged(&snap, &right, KEYS, 2);
    db.check().unwrap();
    drop((snap, left, right, db));
    let db = open(&dir);
    let right = db.keyspace("right").unwrap();
    all_tagged(&db.snapshot(), &right, KEYS, 2);
}

#[test]
fn a_chained_commit_cut_off_before_its_end_is_not_a_commit() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    const KEYS: u32 = 10_000;
    {
        let db = open(&dir);
        let left = db.keyspace("left").unwrap();
        let mut tx = db.begin();
        tx.put_in(&left, b"before", b"1").unwrap();
        tx.commit().unwrap();
        failpoint::fail_with("commit.between_pieces", || Error::InvalidArgument("injected crash point".into()));
        let mut tx = db.begin();
        put_many(&mut tx, &left, KEYS, 1);
        let outcome = tx.commit();
        failpoint::clear("commit.between_pieces");
        assert!(outcome.is_err(), "the injected failure reaches the caller");
        assert_eq!(db.snapshot().get_in(&left, b"key000000").unwrap(), None);
        // The database goes on: a later commit (small) lands.
        let mut tx = db.begin();
        tx.put_in(&left, b"after", b"2").unwrap();
        tx.commit().unwrap();
    }
    // Reopen: the unfinished chain is in the log and counts for nothing.
    let db = open(&dir);
    let left = db.keyspace("left").unwrap();
    let snap = db.snapshot();
    assert_eq!(snap.get_in(&left, b"key000000").unwrap(), None);
    assert_eq!(snap.get_in(&left, b"key009999").unwrap(), None);
    assert_eq!(snap.get_in(&left, b"before").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(snap.get_in(&left, b"after").unwrap().as_deref(), Some(&b"2"[..]));
    db.check().unwrap();
    // And a chained commit after it lands and survives a reopen.
    let mut tx = db.begin();
    put_many(&mut tx, &left, KEYS, 3);
    tx.delete_in(&left, b"before").unwrap();
    tx.delete_in(&left, b"after").unwrap();
    tx.commit().unwrap();
    drop((tx, snap, left, db));
    let db = open(&dir);
    let left = db.keyspace("left").unwrap();
    all_tagged(&db.snapshot(), &left, KEYS, 3);
}

/// What a clean close records for vacuum (nothing left) holds only while
/// nothing commits after it. Commits that a crash leaves to the log are
/// replayed on open (and may shadow versions no backlog names); commits a
/// checkpoint took in before the crash raised the clock it saved past the
/// record. Either way the open runs vacuum's whole-tree pass for the
/// versions they left. Fails (second case: nothing is replayed) if an open
/// trusts the record without comparing it with the clock: no pass
/// pending, and the left versions stay for good. (A replayed commit whose
/// timestamp the close had counted: the assertion on
/// `vacuum_whole_pass_pending` in the first test of this file.)
#[test]
fn commits_after_a_clean_close_void_what_it_recorded_for_vacuum_after_a_crash() {
    use common::crash::open_db;
    use crabtree::io::{CrashModel, SimDir};
    use std::time::Duration;
    let _serial = serial();
    let key = |i: u32| format!("key{i:04}").into_bytes();
    for checkpointed in [false, true] {
        let dir = SimDir::new(7, CrashModel::default());
        let options = Options { vacuum_interval: Some(Duration::from_secs(3600)), ..Options::default() };
        {
            let db = open_db(&dir, options.clone()).unwrap();
            db.update(|tx| (0..200).try_for_each(|i| tx.put(&key(i), b"first"))).unwrap();
            db.update(|tx| (0..50).try_for_each(|i| tx.put(&key(i), b"second"))).unwrap();
        }
        let db = open_db(&dir, options.clone()).unwrap();
        let stats = db.stats();
        assert!(!stats.vacuum_whole_pass_pending && stats.tree_entries == 201, "a clean close: {stats:?}");
        // Durable commits (`Immediate`), then the power fails before any
        // close.
        for round in 0..3u8 {
            db.update(|tx| (0..40).try_for_each(|i| tx.put(&key(i), &[round; 8]))).unwrap();
        }
        if checkpointed {
            crabtree::raw::checkpoint_db(&db).unwrap();
        }
        dir.crash();
        drop(db);
        let db = open_db(&dir, options).unwrap();
        let stats = db.stats();
        assert!(stats.vacuum_whole_pass_pending, "checkpointed {checkpointed}: {stats:?}");
        assert_eq!(db.snapshot().get(&key(7)).unwrap().as_deref(), Some(&[2u8; 8][..]));
        // Their left versions are there (some pruned by the later
        // commits), and the whole pass finds them.
        assert!(db.vacuum().unwrap() >= 40, "checkpointed {checkpointed}: {:?}", db.stats());
        assert_eq!(db.vacuum().unwrap(), 0);
        db.check().unwrap();
    }
}
