//! Goal: the database does not grow without bound under updates, and the
//! space a long snapshot pinned comes back once it ends.
//!
//! Method: K keys (100-byte values) are updated in passes (each pass one
//! transaction per 100 keys). (1) With no snapshot open, after P passes
//! the file is within 3x of its size after the first pass (writers prune
//! the versions nobody can see as they commit). (2) With a snapshot held
//! for the first half of the passes the file grows (the snapshot pins a
//! version per key per pass); once it is dropped and vacuum runs, the
//! second half of the passes reuses that space: the file does not grow
//! past its size at the drop. Background vacuum is off, so the numbers are
//! deterministic. Sizes: K = 1,000 x `CRABTREE_TEST_SCALE`, P = 40 (40,000
//! updates); `CRABTREE_TEST_SIZE=long`: K = 10,000, P = 100 (the issue's
//! 1,000,000 updates).

use crabtree::{Db, Options};

fn long() -> bool {
    std::env::var("CRABTREE_TEST_SIZE").as_deref() == Ok("long")
}

fn passes() -> u32 {
    if long() { 100 } else { 40 }
}

fn keys() -> u32 {
    let base = if long() { 10_000 } else { 1_000 };
    base * std::env::var("CRABTREE_TEST_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1u32).max(1)
}

fn pass(db: &Db, round: u32) {
    let value = [round as u8; 100];
    for chunk in (0..keys()).collect::<Vec<_>>().chunks(100) {
        db.update(|tx| {
            for &k in chunk {
                tx.put(format!("key-{k:08}").as_bytes(), &value)?;
            }
            Ok(())
        })
        .unwrap();
    }
}

fn open(dir: &tempfile::TempDir) -> Db {
    Db::open_with(dir.path().join("db.crab"), Options { vacuum_interval: None, ..Options::default() }).unwrap()
}

#[test]
fn updates_without_snapshots_stay_within_three_times_the_first_pass() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    pass(&db, 0);
    let first = db.stats().page_count;
    for round in 1..passes() {
        pass(&db, round);
    }
    let stats = db.stats();
    eprintln!(
        "space: first pass {first} pages, after {} passes {} pages, {} versions",
        passes(),
        stats.page_count,
        stats.tree_entries
    );
    assert!(
        stats.page_count <= 3 * first,
        "{} pages after {} passes, {first} after the first",
        stats.page_count,
        passes()
    );
    assert!(stats.tree_entries <= 2 * u64::from(keys()) + 2, "pruning keeps at most two versions a key: {stats:?}");
    db.check().unwrap();
}

#[test]
fn space_pinned_by_a_snapshot_is_reused_after_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    pass(&db, 0);
    let first = db.stats().page_count;
    let snapshot = db.snapshot();
    for round in 1..passes() / 2 {
        pass(&db, round);
    }
    let pinned = db.stats();
    assert!(pinned.page_count > 2 * first, "the snapshot pins versions: {first} -> {}", pinned.page_count);
    assert_eq!(snapshot.get(b"key-00000000").unwrap(), Some(vec![0u8; 100]));
    drop(snapshot);
    db.vacuum().unwrap();
    let vacuumed = db.stats();
    assert!(vacuumed.tree_entries <= u64::from(keys()) + 2, "{vacuumed:?}");
    for round in passes() / 2..passes() {
        pass(&db, round);
    }
    let end = db.stats();
    eprintln!(
        "space: first {first} pages, pinned {} pages ({} versions), vacuumed {} versions, end {} pages",
        pinned.page_count, pinned.tree_entries, vacuumed.tree_entries, end.page_count
    );
    assert!(
        end.page_count <= pinned.page_count,
        "the file grew after vacuum: {} -> {}",
        pinned.page_count,
        end.page_count
    );
    db.check().unwrap();
}

/// Versions a snapshot pinned, left behind when it ends (nothing writes
/// their keys again and vacuum is off), go when a writer fills their leaf:
/// before it splits, it drops the versions in it that no snapshot can see.
#[test]
fn a_writer_filling_a_leaf_prunes_versions_nobody_can_see() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    let snapshot = db.snapshot();
    for round in 0..10u8 {
        let mut tx = db.begin();
        for k in 0..300u32 {
            tx.put(format!("key-{k:05}").as_bytes(), &[round; 40]).unwrap();
        }
        tx.commit().unwrap();
    }
    let pinned = db.stats();
    assert!(pinned.tree_entries >= 3_000, "the snapshot pins every version: {pinned:?}");
    drop(snapshot);
    // New keys between the old ones, into the same leaves, until they
    // fill and would split.
    for k in 0..300u32 {
        db.update(|tx| {
            for j in 0..6 {
                tx.put(format!("key-{k:05}-new-{j}").as_bytes(), &[9; 40])?;
            }
            Ok(())
        })
        .unwrap();
    }
    let after = db.stats();
    eprintln!(
        "leaf pruning: {} versions pinned, {} after 1,800 inserts, {} pruned",
        pinned.tree_entries, after.tree_entries, after.versions_pruned
    );
    assert!(after.versions_pruned >= 1_000, "{after:?}");
    assert!(
        after.tree_entries + 1_000 <= pinned.tree_entries + 1_800,
        "the shadowed versions stayed: {} -> {} ({after:?})",
        pinned.tree_entries,
        after.tree_entries
    );
    let snapshot = db.snapshot();
    for k in 0..300u32 {
        assert_eq!(snapshot.get(format!("key-{k:05}").as_bytes()).unwrap(), Some(vec![9u8; 40]), "key {k}");
        assert_eq!(snapshot.get(format!("key-{k:05}-new-5").as_bytes()).unwrap(), Some(vec![9u8; 40]), "key {k}");
    }
    db.check().unwrap();
}
