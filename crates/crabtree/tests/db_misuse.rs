//! Goal: misuse and bad input give clear errors, never a panic, never a
//! lost commit, and a failed open leaves what it found untouched (F15 and
//! the bad-file part of F13 at the API level).
//!
//! Method: one scenario per case: empty keys (allowed), keys and values at
//! their limit and one past it, operations after commit and rollback,
//! inverted ranges, a directory, a foreign file, a truncated and a
//! bit-flipped database, a second open of a locked file, many open
//! snapshots, a long snapshot holding vacuum back, keyspace misuse, and the
//! thread-safety promises of the types.

use crabtree::{CommitTicket, Db, Error, Iter, Options, Snapshot, Transaction};
use std::time::Duration;

fn open(dir: &tempfile::TempDir) -> Db {
    Db::open(dir.path().join("db.crab")).unwrap()
}

#[test]
fn types_are_send_and_static() {
    fn send_static<T: Send + 'static>() {}
    fn sync<T: Send + Sync + Clone + 'static>() {}
    send_static::<Transaction>();
    send_static::<Snapshot>();
    send_static::<Iter>();
    send_static::<CommitTicket>();
    sync::<Db>();
}

#[test]
fn empty_keys_and_empty_values_are_ordinary() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    db.update(|tx| {
        tx.put(b"", b"empty key")?;
        tx.put(b"k", b"")
    })
    .unwrap();
    let snap = db.snapshot();
    assert_eq!(snap.get(b"").unwrap(), Some(b"empty key".to_vec()));
    assert_eq!(snap.get(b"k").unwrap(), Some(vec![]), "an empty value is a value");
    assert_eq!(snap.get(b"missing").unwrap(), None);
    let first = snap.range::<&[u8], _>(..).unwrap().next().unwrap().unwrap();
    assert_eq!(first.0, b"".to_vec(), "the empty key sorts first");
    db.update(|tx| tx.delete(b"")).unwrap();
    assert_eq!(db.snapshot().get(b"").unwrap(), None);
}

#[test]
fn limits_are_enforced_and_leave_the_transaction_usable() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    let mut tx = db.begin();
    // Find the largest key by the error's own report.
    let Err(Error::KeyTooLarge { max, .. }) = tx.put(&vec![1u8; 100_000], b"v") else { panic!("expected KeyTooLarge") };
    tx.put(&vec![1u8; max], b"at the limit").unwrap();
    assert!(matches!(tx.put(&vec![2u8; max + 1], b"v"), Err(Error::KeyTooLarge { size, .. }) if size == max + 1));
    assert!(matches!(tx.get(&vec![2u8; max + 1]), Err(Error::KeyTooLarge { .. })));
    assert!(matches!(tx.delete(&vec![2u8; max + 1]), Err(Error::KeyTooLarge { .. })));
    // A zero byte is stored escaped, so it counts twice.
    tx.put(&vec![0u8; max / 2], b"zeros at the limit").unwrap();
    assert!(
        matches!(tx.put(&vec![0u8; max / 2 + 1], b"v"), Err(Error::KeyTooLarge { size, .. }) if size == 2 * (max / 2 + 1))
    );
    // A value one byte past the limit (calloc'd: no memory is touched).
    let huge = vec![0u8; crabtree::limits::VALUE_SIZE_MAX];
    assert!(matches!(tx.put(b"big", &huge), Err(Error::ValueTooLarge { .. })));
    drop(huge);
    tx.put(b"after", b"errors").unwrap();
    tx.commit().unwrap();
    let snap = db.snapshot();
    assert_eq!(snap.get(&vec![1u8; max]).unwrap(), Some(b"at the limit".to_vec()));
    assert_eq!(snap.get(&vec![0u8; max / 2]).unwrap(), Some(b"zeros at the limit".to_vec()));
    assert_eq!(snap.get(b"after").unwrap(), Some(b"errors".to_vec()));
    assert_eq!(snap.get(b"big").unwrap(), None);
    // A large value (overflow pages) round-trips.
    let large: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    db.update(|tx| tx.put(b"large", &large)).unwrap();
    assert_eq!(db.snapshot().get(b"large").unwrap(), Some(large));
}

#[test]
fn operations_after_commit_or_rollback_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    let mut tx = db.begin();
    tx.put(b"k", b"v").unwrap();
    tx.commit().unwrap();
    assert!(matches!(tx.get(b"k"), Err(Error::TransactionClosed)));
    assert!(matches!(tx.put(b"k", b"w"), Err(Error::TransactionClosed)));
    assert!(matches!(tx.delete(b"k"), Err(Error::TransactionClosed)));
    assert!(matches!(tx.range::<&[u8], _>(..), Err(Error::TransactionClosed)));
    assert!(matches!(tx.commit(), Err(Error::TransactionClosed)));
    assert!(matches!(tx.commit_eventual(), Err(Error::TransactionClosed)));
    tx.rollback(); // harmless
    let mut conflicted = db.begin();
    conflicted.put(b"k", b"x").unwrap();
    db.update(|tx| tx.put(b"k", b"y")).unwrap();
    assert!(matches!(conflicted.commit(), Err(Error::Conflict)));
    assert!(matches!(conflicted.get(b"k"), Err(Error::TransactionClosed)), "a failed commit closes too");
    assert_eq!(db.snapshot().get(b"k").unwrap(), Some(b"y".to_vec()), "nothing committed was lost");
}

#[test]
fn inverted_and_empty_ranges_are_empty() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    db.update(|tx| {
        for k in [b"a", b"b", b"c"] {
            tx.put(k, b"v")?;
        }
        Ok(())
    })
    .unwrap();
    let mut tx = db.begin();
    tx.put(b"bb", b"mine").unwrap();
    let (b, a) = (b"b".as_slice(), b"a".as_slice());
    assert_eq!(tx.range(b..a).unwrap().count(), 0);
    assert_eq!(tx.range(b..a).unwrap().rev().count(), 0);
    assert_eq!(tx.range(b..b).unwrap().count(), 0);
    assert_eq!(tx.range(b..=b).unwrap().count(), 1);
    assert_eq!(tx.range::<&[u8], _>((std::ops::Bound::Excluded(b), std::ops::Bound::Excluded(b))).unwrap().count(), 0);
    assert_eq!(db.snapshot().range(b"c".as_slice()..=b"a".as_slice()).unwrap().count(), 0);
}

#[test]
fn a_directory_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("inside"), b"x").unwrap();
    let err = Db::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("directory"), "{err}");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["inside"]);
}

fn assert_open_fails_untouched(path: &std::path::Path) -> Error {
    let before = std::fs::read(path).unwrap();
    let err = Db::open(path).unwrap_err();
    assert_eq!(std::fs::read(path).unwrap(), before, "a failed open changed the file");
    err
}

#[test]
fn a_foreign_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, b"these are not the pages you are looking for\n".repeat(200)).unwrap();
    let err = assert_open_fails_untouched(&path);
    assert!(matches!(err, Error::Corruption { .. } | Error::Io(_)), "{err}");
    // A raw tree file (a crabtree file without the catalog) is refused too.
    let raw = dir.path().join("raw.crab");
    {
        let storage = std::sync::Arc::new(crabtree::io::FileStorage::open(&raw, true).unwrap());
        let pool = crabtree::raw::BufferPool::create(storage, Default::default()).unwrap();
        let tree = crabtree::raw::BTree::create(std::sync::Arc::new(pool)).unwrap();
        tree.insert(b"k", b"v").unwrap();
        tree.flush().unwrap();
    }
    let err = assert_open_fails_untouched(&raw);
    assert!(err.to_string().contains("catalog"), "{err}");
}

fn populated(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let db = open(dir);
    for round in 0..20u32 {
        db.update(|tx| {
            for i in 0..100u32 {
                tx.put(format!("key-{i:05}").as_bytes(), &round.to_le_bytes().repeat(20))?;
            }
            Ok(())
        })
        .unwrap();
    }
    drop(db);
    dir.path().join("db.crab")
}

/// Everything `populated` committed, read back.
fn rows(db: &Db) -> Vec<(Vec<u8>, Vec<u8>)> {
    db.snapshot().range::<&[u8], _>(..).unwrap().collect::<Result<_, _>>().unwrap()
}

/// A truncated data file: the open either refuses it, leaving it as it
/// was, or rebuilds the missing pages from the log (whose images after the
/// last checkpoints cover them) and loses nothing. An emptied data file
/// beside its log is refused (it would otherwise be a new, empty database
/// and the log's contents lost).
#[test]
fn a_truncated_file_is_refused_or_rebuilt_never_half_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated(&dir);
    let expected = rows(&open(&dir));
    let len = std::fs::metadata(&path).unwrap().len();
    for cut in [len / 2 / 4096 * 4096, 4096, 100, 0] {
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(cut).unwrap();
        drop(file);
        let before = std::fs::read(&path).unwrap();
        match Db::open(&path) {
            Err(_) => assert_eq!(std::fs::read(&path).unwrap(), before, "a failed open changed the file"),
            Ok(db) => {
                assert!(cut > 0, "an empty data file beside a log opened as a new database");
                assert_eq!(rows(&db), expected, "cut at {cut}: rebuilt with rows lost");
                db.check().unwrap();
            }
        }
    }
}

/// Flipped bits in the data file: an error (at open, in a read or in
/// `check`), or the page is rebuilt from the log and nothing is lost; never
/// a panic, never wrong data.
#[test]
fn bit_flips_give_errors_or_are_repaired_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated(&dir);
    let expected = rows(&open(&dir));
    let pristine = std::fs::read(&path).unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let (flips, mut handled) = (24, 0);
    for _ in 0..flips {
        let mut bytes = pristine.clone();
        let at = rng.usize(0..bytes.len());
        bytes[at] ^= 1 << rng.u8(0..8);
        std::fs::write(&path, &bytes).unwrap();
        match Db::open(&path) {
            Err(_) => {
                assert_eq!(std::fs::read(&path).unwrap(), bytes, "failed open changed the file");
                handled += 1;
            }
            Ok(db) => {
                let scan: Result<Vec<_>, _> = db.snapshot().range::<&[u8], _>(..).unwrap().collect();
                match scan {
                    Err(_) => handled += 1,
                    Ok(scan) => {
                        assert_eq!(scan, expected, "a flip at byte {at} changed what reads return");
                        if db.check().is_err() || std::fs::read(&path).unwrap() != bytes {
                            // Reported, or repaired from the log.
                            handled += 1;
                        }
                    }
                }
            }
        }
    }
    // Every live page is checksummed; only a flip in a free page (not
    // read) can go unnoticed.
    assert!(handled * 2 >= flips, "only {handled} of {flips} flips detected or repaired");
}

#[test]
fn a_second_open_is_locked_until_every_handle_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.crab");
    let db = Db::open(&path).unwrap();
    db.update(|tx| tx.put(b"k", b"v")).unwrap();
    assert!(matches!(Db::open(&path), Err(Error::Locked)));
    let snap = db.snapshot();
    drop(db);
    assert!(matches!(Db::open(&path), Err(Error::Locked)), "the snapshot keeps the database open");
    assert_eq!(snap.get(b"k").unwrap(), Some(b"v".to_vec()));
    drop(snap);
    let db = Db::open(&path).unwrap();
    assert_eq!(db.snapshot().get(b"k").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn many_snapshots_and_a_long_one_holding_vacuum_back() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options { vacuum_interval: None, ..Options::default() };
    let db = Db::open_with(dir.path().join("db.crab"), options).unwrap();
    db.update(|tx| tx.put(b"k", b"0")).unwrap();
    let many: Vec<Snapshot> = (0..10_000).map(|_| db.snapshot()).collect();
    assert_eq!(db.stats().snapshots_active, 10_000);
    drop(many);
    let long = db.snapshot();
    for i in 1..=50u32 {
        db.update(|tx| tx.put(b"k", i.to_string().as_bytes())).unwrap();
    }
    db.vacuum().unwrap();
    let stats = db.stats();
    assert!(stats.versions_pinned > 0, "{stats:?}");
    assert!(stats.oldest_snapshot_age.is_some());
    assert_eq!(long.get(b"k").unwrap(), Some(b"0".to_vec()), "vacuum kept what the snapshot sees");
    let before = db.stats().tree_entries;
    drop(long);
    db.vacuum().unwrap();
    let after = db.stats();
    assert!(after.tree_entries < before && after.tree_entries <= 2, "{before} -> {after:?}");
    assert_eq!(after.versions_pinned, 0);
    assert_eq!(db.snapshot().get(b"k").unwrap(), Some(b"50".to_vec()));
}

#[test]
fn keyspace_misuse() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    assert!(matches!(db.drop_keyspace("default"), Err(Error::InvalidArgument(_))));
    assert!(matches!(db.keyspace(""), Err(Error::InvalidArgument(_))));
    assert!(!db.drop_keyspace("never created").unwrap());
    let gone = db.keyspace("gone").unwrap();
    db.update(|tx| tx.put_in(&gone, b"k", b"v")).unwrap();
    let before = db.snapshot();
    let mut stale = db.begin();
    assert!(db.drop_keyspace("gone").unwrap());
    stale.put_in(&gone, b"k2", b"v").unwrap();
    assert!(matches!(stale.commit(), Err(Error::InvalidArgument(_))), "writes to a dropped keyspace are refused");
    assert_eq!(before.get_in(&gone, b"k").unwrap(), Some(b"v".to_vec()), "an older snapshot still reads it");
    drop(before);
    db.vacuum().unwrap();
    let fresh = db.keyspace("gone").unwrap();
    assert_ne!(fresh, gone);
    assert_eq!(db.snapshot().range_in::<&[u8], _>(&fresh, ..).unwrap().count(), 0);
    assert_eq!(db.stats().tree_entries, 2, "catalog entries for default and the new keyspace only");
    db.check().unwrap();
}

#[test]
fn update_rolls_back_on_error_and_gives_up_after_bounded_retries() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    let err = db
        .update(|tx| {
            tx.put(b"k", b"v")?;
            Err::<(), _>(Error::InvalidArgument("no".into()))
        })
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)));
    assert_eq!(db.snapshot().get(b"k").unwrap(), None);
    // A closure that always conflicts (another writer commits the key each
    // time) is retried a bounded number of times, then returns Conflict.
    let mut tries = 0;
    let outcome = db.update(|tx| {
        tries += 1;
        tx.put(b"hot", b"mine")?;
        db.update(|other| other.put(b"hot", b"theirs"))?;
        Ok(())
    });
    assert!(matches!(outcome, Err(Error::Conflict)));
    assert_eq!(tries, Options::default().update_retries);
}

#[test]
fn commit_tickets_resolve_as_futures() {
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    let mut tx = db.begin();
    tx.put(b"k", b"v").unwrap();
    let mut ticket = Box::pin(tx.commit_eventual().unwrap());
    assert_eq!(db.snapshot().get(b"k").unwrap(), Some(b"v".to_vec()), "visible before durable");
    let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
    let mut cx = Context::from_waker(&waker);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match ticket.as_mut().poll(&mut cx) {
            Poll::Ready(result) => break result.unwrap(),
            Poll::Pending => {
                assert!(std::time::Instant::now() < deadline, "ticket never resolved");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    assert!(ticket.is_durable());
}

/// A value at the largest size a logged tree takes with 512-byte pages
/// (`limits::value_size_max_logged`, about 26 MiB) round-trips through
/// commits, a second version, vacuum, a reopen, and a replacement in the
/// raw store (the record that frees the old chain and claims the new one);
/// one byte more is `ValueTooLarge` and the database goes on.
///
/// Before the limit, a 60 MiB value with 512-byte pages (450 MiB with
/// 4 KiB ones) made the commit fail with the log's own record limit
/// (`InvalidArgument`, "WAL record payload 1199686 bytes"): the record
/// claiming the chain was too long. The database was then poisoned, and
/// `check` reported a page "both live and free".
#[test]
fn a_value_at_the_logged_limit_round_trips_and_one_past_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.crab");
    let options = Options { page_size: 512, memory_budget: 4 << 20, ..Options::default() };
    let max = crabtree::limits::value_size_max_logged(512) - 1;
    assert!((20 << 20..30 << 20).contains(&max), "{max}");
    let value = |tag: u8| -> Vec<u8> { (0..max).map(|i| (i % 251) as u8 ^ tag).collect() };
    {
        let db = Db::open_with(&path, options.clone()).unwrap();
        let mut tx = db.begin();
        match tx.put(b"big", &vec![0u8; max + 1]) {
            Err(Error::ValueTooLarge { size, max: limit }) => assert_eq!((size, limit), (max + 1, max)),
            other => panic!("one byte past the limit: {other:?}"),
        }
        tx.put(b"big", &value(1)).unwrap();
        tx.commit().unwrap();
        db.update(|tx| tx.put(b"big", &value(2))).unwrap();
        db.vacuum().unwrap();
        assert!(db.snapshot().get(b"big").unwrap() == Some(value(2)));
        db.update(|tx| tx.put(b"after", b"still writable")).unwrap();
        db.check().unwrap();
    }
    let db = Db::open_with(&path, options).unwrap();
    assert!(db.snapshot().get(b"big").unwrap() == Some(value(2)));
    db.check().unwrap();
    drop(db);

    // The raw store replaces in place: one record frees the old chain and
    // claims the new one.
    let raw = dir.path().join("raw.crab");
    let store_options = crabtree::raw::StoreOptions {
        pool: crabtree::raw::PoolOptions { page_size: 512, pool_bytes: 4 << 20, max_pages: 1 << 20 },
        ..crabtree::raw::StoreOptions::default()
    };
    let store = crabtree::raw::Store::open_path(&raw, store_options).unwrap();
    let largest = crabtree::limits::value_size_max_logged(512);
    assert_eq!(store.tree().value_size_max(), largest);
    let big = |tag: u8| -> Vec<u8> { (0..largest).map(|i| (i % 253) as u8 ^ tag).collect() };
    store.put_durable(b"big", &big(1)).unwrap();
    store.put_durable(b"big", &big(2)).unwrap();
    assert!(store.get(b"big").unwrap() == Some(big(2)));
    assert!(matches!(store.put_durable(b"big", &vec![0u8; largest + 1]), Err(Error::ValueTooLarge { .. })));
    store.put_durable(b"after", b"still writable").unwrap();
    assert!(store.tree().verify().unwrap().is_ok());
}

/// The same at the default page size (about 221 MiB), in the long tier
/// only: the value, its copy in the transaction and the commit record
/// take about a gigabyte of memory.
#[test]
fn a_value_at_the_logged_limit_with_default_pages_round_trips() {
    if std::env::var("CRABTREE_TEST_SIZE").as_deref() != Ok("long") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.crab");
    let max = crabtree::limits::value_size_max_logged(crabtree::limits::PAGE_SIZE_DEFAULT) - 1;
    let value: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    {
        let db = Db::open(&path).unwrap();
        assert!(matches!(db.begin().put(b"big", &vec![0u8; max + 1]), Err(Error::ValueTooLarge { .. })));
        db.update(|tx| tx.put(b"big", &value)).unwrap();
        db.check().unwrap();
    }
    let db = Db::open(&path).unwrap();
    assert!(db.snapshot().get(b"big").unwrap() == Some(value));
    db.check().unwrap();
}
