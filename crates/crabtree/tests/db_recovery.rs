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
