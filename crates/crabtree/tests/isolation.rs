//! Goal: every anomaly the snapshot-isolation column of the Hermitage
//! matrix (Kleppmann) forbids is prevented, and write skew (G2-item), which
//! SI allows, does happen.
//!
//! Method: each test replays one Hermitage schedule step by step on one
//! thread, with transactions interleaved by hand, on the table
//! `{1: 10, 2: 20}` (keys `b"1"`, `b"2"`). Under SI with buffered writes a
//! second writer of a key does not block: it loses at commit with
//! `Error::Conflict` (first committer wins) where Hermitage's lock-based
//! engines would block and then abort.

use crabtree::{Db, Error, Transaction};

fn setup() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db.crab")).unwrap();
    db.update(|tx| {
        tx.put(b"1", b"10")?;
        tx.put(b"2", b"20")
    })
    .unwrap();
    (dir, db)
}

fn get(tx: &Transaction, key: &[u8]) -> Option<String> {
    tx.get(key).unwrap().map(|v| String::from_utf8(v).unwrap())
}

fn table(db: &Db) -> Vec<(String, String)> {
    db.snapshot()
        .range::<&[u8], _>(..)
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap())
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Entries of `tx` whose value is `value` (a predicate read).
fn where_value(tx: &Transaction, value: &str) -> Vec<String> {
    tx.range::<&[u8], _>(..)
        .unwrap()
        .map(Result::unwrap)
        .filter(|(_, v)| v == value.as_bytes())
        .map(|(k, _)| String::from_utf8(k).unwrap())
        .collect()
}

#[test]
fn g0_dirty_write_is_prevented() {
    let (_dir, db) = setup();
    let (mut t1, mut t2) = (db.begin(), db.begin());
    t1.put(b"1", b"11").unwrap();
    t2.put(b"1", b"12").unwrap();
    t1.put(b"2", b"21").unwrap();
    t1.commit().unwrap();
    t2.put(b"2", b"22").unwrap();
    assert!(matches!(t2.commit(), Err(Error::Conflict)));
    assert_eq!(table(&db), pairs(&[("1", "11"), ("2", "21")]));
}

#[test]
fn g1a_aborted_read_is_prevented() {
    let (_dir, db) = setup();
    let (mut t1, t2) = (db.begin(), db.begin());
    t1.put(b"1", b"101").unwrap();
    t1.put(b"2", b"102").unwrap();
    assert_eq!(get(&t2, b"1").as_deref(), Some("10"));
    t1.rollback();
    assert_eq!(get(&t2, b"1").as_deref(), Some("10"));
    // A fresh reader after the abort sees nothing of it either.
    assert_eq!(get(&db.begin(), b"1").as_deref(), Some("10"));
    assert_eq!(table(&db), pairs(&[("1", "10"), ("2", "20")]));
}

#[test]
fn g1b_intermediate_read_is_prevented() {
    let (_dir, db) = setup();
    let (mut t1, t2) = (db.begin(), db.begin());
    t1.put(b"1", b"101").unwrap();
    assert_eq!(get(&t2, b"1").as_deref(), Some("10"));
    t1.put(b"1", b"11").unwrap();
    t1.commit().unwrap();
    assert_eq!(get(&t2, b"1").as_deref(), Some("10"), "t2 keeps its snapshot");
    assert_eq!(get(&db.begin(), b"1").as_deref(), Some("11"), "never the intermediate 101");
}

#[test]
fn g1c_circular_information_flow_is_prevented() {
    let (_dir, db) = setup();
    let (mut t1, mut t2) = (db.begin(), db.begin());
    t1.put(b"1", b"11").unwrap();
    t2.put(b"2", b"22").unwrap();
    assert_eq!(get(&t1, b"2").as_deref(), Some("20"));
    assert_eq!(get(&t2, b"1").as_deref(), Some("10"));
    t1.commit().unwrap();
    t2.commit().unwrap();
    assert_eq!(table(&db), pairs(&[("1", "11"), ("2", "22")]));
}

#[test]
fn otv_observed_transaction_vanishes_is_prevented() {
    let (_dir, db) = setup();
    let (mut t1, mut t2) = (db.begin(), db.begin());
    t1.put(b"1", b"11").unwrap();
    t1.put(b"2", b"19").unwrap();
    t2.put(b"1", b"12").unwrap();
    t1.commit().unwrap();
    let t3 = db.begin();
    assert_eq!(get(&t3, b"1").as_deref(), Some("11"));
    t2.put(b"2", b"18").unwrap();
    assert_eq!(get(&t3, b"2").as_deref(), Some("19"));
    assert!(matches!(t2.commit(), Err(Error::Conflict)));
    assert_eq!(get(&t3, b"2").as_deref(), Some("19"));
    assert_eq!(get(&t3, b"1").as_deref(), Some("11"));
}

#[test]
fn pmp_predicate_many_preceders_is_prevented() {
    let (_dir, db) = setup();
    let t1 = db.begin();
    assert!(where_value(&t1, "30").is_empty());
    let mut t2 = db.begin();
    t2.put(b"3", b"30").unwrap();
    t2.commit().unwrap();
    assert!(where_value(&t1, "30").is_empty(), "t1's predicate read is stable");
    assert_eq!(where_value(&db.begin(), "30"), ["3"]);
}

#[test]
fn pmp_write_predicates_are_prevented() {
    let (_dir, db) = setup();
    let (mut t1, mut t2) = (db.begin(), db.begin());
    // t1: update set value = value + 10
    for (k, v) in t1.range::<&[u8], _>(..).unwrap().map(Result::unwrap).collect::<Vec<_>>() {
        let n: u32 = String::from_utf8(v).unwrap().parse().unwrap();
        t1.put(&k, (n + 10).to_string().as_bytes()).unwrap();
    }
    // t2: delete where value = 20 (sees the old 20 under SI)
    for k in where_value(&t2, "20") {
        t2.delete(k.as_bytes()).unwrap();
    }
    t1.commit().unwrap();
    assert!(matches!(t2.commit(), Err(Error::Conflict)));
    assert_eq!(table(&db), pairs(&[("1", "20"), ("2", "30")]));
}

#[test]
fn p4_lost_update_is_prevented() {
    let (_dir, db) = setup();
    let (mut t1, mut t2) = (db.begin(), db.begin());
    assert_eq!(get(&t1, b"1").as_deref(), Some("10"));
    assert_eq!(get(&t2, b"1").as_deref(), Some("10"));
    t1.put(b"1", b"11").unwrap();
    t2.put(b"1", b"11").unwrap();
    t1.commit().unwrap();
    assert!(matches!(t2.commit(), Err(Error::Conflict)));
}

#[test]
fn g_single_read_skew_is_prevented() {
    let (_dir, db) = setup();
    let (t1, mut t2) = (db.begin(), db.begin());
    assert_eq!(get(&t1, b"1").as_deref(), Some("10"));
    assert_eq!(get(&t2, b"1").as_deref(), Some("10"));
    assert_eq!(get(&t2, b"2").as_deref(), Some("20"));
    t2.put(b"1", b"12").unwrap();
    t2.put(b"2", b"18").unwrap();
    t2.commit().unwrap();
    assert_eq!(get(&t1, b"2").as_deref(), Some("20"), "t1 must not see half of t2");
    // The same through a range scan, both directions.
    let forward: Vec<_> = t1.range::<&[u8], _>(..).unwrap().map(|e| e.unwrap().1).collect();
    let backward: Vec<_> = t1.range::<&[u8], _>(..).unwrap().rev().map(|e| e.unwrap().1).collect();
    assert_eq!(forward, [b"10".to_vec(), b"20".to_vec()]);
    assert_eq!(backward, [b"20".to_vec(), b"10".to_vec()]);
}

#[test]
fn g_single_with_write_predicate_is_prevented() {
    let (_dir, db) = setup();
    let (mut t1, mut t2) = (db.begin(), db.begin());
    assert_eq!(get(&t1, b"1").as_deref(), Some("10"));
    t2.put(b"1", b"12").unwrap();
    t2.put(b"2", b"18").unwrap();
    t2.commit().unwrap();
    for k in where_value(&t1, "20") {
        t1.delete(k.as_bytes()).unwrap();
    }
    assert!(matches!(t1.commit(), Err(Error::Conflict)));
    assert_eq!(table(&db), pairs(&[("1", "12"), ("2", "18")]));
}

/// Write skew is allowed under snapshot isolation (a future serializable
/// mode must prevent it): two transactions each read both rows and write a
/// different one; both commit.
#[test]
fn g2_item_write_skew_is_allowed_under_si() {
    let (_dir, db) = setup();
    let (mut t1, mut t2) = (db.begin(), db.begin());
    for tx in [&t1, &t2] {
        assert_eq!(get(tx, b"1").as_deref(), Some("10"));
        assert_eq!(get(tx, b"2").as_deref(), Some("20"));
    }
    t1.put(b"1", b"11").unwrap();
    t2.put(b"2", b"21").unwrap();
    t1.commit().unwrap();
    t2.commit().unwrap();
    assert_eq!(table(&db), pairs(&[("1", "11"), ("2", "21")]), "write skew happened, as SI allows");
}

#[test]
fn disjoint_writers_and_rolled_back_ones_never_conflict() {
    let (_dir, db) = setup();
    let (mut t1, mut t2, mut t3) = (db.begin(), db.begin(), db.begin());
    t1.put(b"1", b"11").unwrap();
    t2.put(b"2", b"22").unwrap();
    t3.put(b"1", b"13").unwrap();
    t3.rollback();
    let mut t4 = db.begin();
    t4.put(b"1", b"14").unwrap();
    drop(t4);
    t1.commit().unwrap();
    t2.commit().unwrap();
    assert_eq!(table(&db), pairs(&[("1", "11"), ("2", "22")]));
}

#[test]
fn a_commit_is_visible_to_every_snapshot_begun_after_it() {
    let (_dir, db) = setup();
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0..200u32 {
                    let key = format!("t{t}-{i}");
                    db.update(|tx| tx.put(key.as_bytes(), b"v")).unwrap();
                    assert_eq!(db.snapshot().get(key.as_bytes()).unwrap().as_deref(), Some(&b"v"[..]));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    db.check().unwrap();
}

/// A committer reads at most a bounded number of a key's versions to prune
/// them. A key deleted after a long snapshot pinned more versions than
/// that: the commit that next writes it reads its tombstone and only the
/// newest of the versions below. Pruning the tombstone with them would
/// bring back an older value the bound hid, for a snapshot begun after
/// the delete.
#[test]
fn a_deleted_key_stays_deleted_for_older_snapshots_after_pruning_a_long_history() {
    let dir = tempfile::tempdir().unwrap();
    let options = crabtree::Options { vacuum_interval: None, ..crabtree::Options::default() };
    let db = Db::open_with(dir.path().join("db.crab"), options).unwrap();
    db.update(|tx| tx.put(b"k", b"v0")).unwrap();
    let pin = db.snapshot();
    for i in 1..=200u32 {
        db.update(|tx| tx.put(b"k", format!("v{i}").as_bytes())).unwrap();
    }
    db.update(|tx| tx.delete(b"k")).unwrap();
    drop(pin);
    let after_delete = db.snapshot();
    db.update(|tx| tx.put(b"k", b"new")).unwrap();
    assert_eq!(after_delete.get(b"k").unwrap(), None, "the delete must hold for a snapshot begun after it");
    assert_eq!(db.snapshot().get(b"k").unwrap().as_deref(), Some(&b"new"[..]));
    drop(after_delete);
    db.vacuum().unwrap();
    assert_eq!(db.snapshot().get(b"k").unwrap().as_deref(), Some(&b"new"[..]));
    db.check().unwrap();
}
