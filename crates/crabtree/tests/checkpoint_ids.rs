//! Regression tests for two recovery failures the F6 kill test (`kill.rs`)
//! found: `LogCorruption { reason: "checkpoint free list incomplete" }` on
//! a log that is not damaged, after which the store cannot be opened.
//!
//! First cause (as read from the code): checkpoint ids come from
//! `BufferPool::checkpoint_seq`, which starts at 0 on every open, so ids
//! repeat across incarnations of the log; recovery collects
//! `CHECKPOINT_FREE` records into one accumulator keyed only by the
//! checkpoint id (`store/recover.rs`, reset only when a chunk with another
//! id arrives) and hands it to the next `CHECKPOINT` record with that id.
//! When a checkpoint is interrupted after its free-list chunks and before
//! its `CHECKPOINT` record (a crash, or an error at
//! `checkpoint.before_record`), and the next incarnation reaches the same
//! id without writing a chunk in between (its checkpoints found an empty
//! free list), the stale chunks are counted into the new checkpoint, whose
//! `free_count` then does not match: the next open fails and the store
//! cannot be opened again. The log is fine.
//!
//! Method: incarnation A (real files) frees overflow pages, checkpoint id 2
//! fails at `checkpoint.before_record` after logging its free list, the
//! freed pages are reused, everything is made durable and the files are
//! copied while A is open (a crash image). Incarnation B opens the copy
//! (checkpoint id 1, empty free list), takes checkpoint id 2 (empty free
//! list) and closes; opening B again must succeed.
//!
//! The second cause and its test are at `checkpoint_free_list_spanning_
//! recycled_segments`. Fixed in `store/recover.rs`: the chunk accumulator
//! is cleared at each `CHECKPOINT_BEGIN` and taken by each `CHECKPOINT`;
//! checkpoint ids continue across opens; a checkpoint whose free list is
//! incomplete is an error only if it is the last one (an earlier one's
//! list may lie in a segment the next checkpoint recycled).

use crabtree::raw::{Store, StoreOptions};
use crabtree::{Error, Lsn};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Failpoints are process-wide: the scenarios of this file run one at a
/// time.
static SERIAL: Mutex<()> = Mutex::new(());

fn options() -> StoreOptions {
    StoreOptions {
        checkpoint_bytes: u64::MAX,
        checkpoint_interval: Duration::from_secs(3600),
        background_checkpoints: false,
        ..StoreOptions::default()
    }
}

fn log_dir(path: &Path) -> PathBuf {
    let mut log = path.as_os_str().to_owned();
    log.push("-wal");
    PathBuf::from(log)
}

/// Copies the data file and its log directory (a crash image: taken while
/// the store is open, after everything was made durable).
fn copy_store(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap();
    std::fs::create_dir_all(log_dir(to)).unwrap();
    for entry in std::fs::read_dir(log_dir(from)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), log_dir(to).join(entry.file_name())).unwrap();
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:05}").into_bytes()
}

#[test]
fn interrupted_checkpoint_then_same_id_after_reopen() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.crab"), dir.path().join("b.crab"));
    let big = vec![7u8; 10_000];
    {
        let store = Store::open_path(&a, options()).unwrap();
        let mut last = Lsn::ZERO;
        for i in 0..200 {
            last = last.max(store.put(&key(i), &big).unwrap());
        }
        for i in 0..200 {
            last = last.max(store.delete(&key(i)).unwrap().1);
        }
        store.wait_durable(last).unwrap();
        crabtree::failpoint::set("checkpoint.before_record", || Err(Error::InvalidArgument("injected".into())));
        let failed = store.checkpoint();
        crabtree::failpoint::clear("checkpoint.before_record");
        assert!(failed.is_err(), "the injected failure did not stop the checkpoint");
        // Reuse every freed page, so the next incarnation's checkpoints
        // find an empty free list and write no chunk of their own.
        for i in 0..400 {
            last = last.max(store.put(&key(i), &big).unwrap());
        }
        store.wait_durable(last).unwrap();
        copy_store(&a, &b);
        store.close().unwrap();
    }
    {
        let store = Store::open_path(&b, options()).unwrap();
        store.checkpoint().unwrap();
        store.close().unwrap();
    }
    let store = Store::open_path(&b, options()).unwrap_or_else(|e| panic!("second open of the copy: {e}"));
    assert_eq!(store.tree().len(), 400);
    store.close().unwrap();
}

/// A second recovery failure with the same message, found by the same kill
/// test: segments are recycled below the next checkpoint's redo start, so
/// the oldest live segment can begin inside (or after) the previous
/// checkpoint's `CHECKPOINT_FREE` records while still holding its
/// `CHECKPOINT` record. Recovery then checks that record against the free
/// list chunks it saw (none, or the tail of a record that started in the
/// recycled segment) and fails, although a later complete checkpoint
/// supersedes it. Here the free list (thousands of pages) is longer than a
/// 16 KiB segment, so every checkpoint's chunk record spans segments and
/// the next checkpoint recycles where it began. No crash is needed: a clean
/// close and reopen fail.
#[test]
fn checkpoint_free_list_spanning_recycled_segments() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("span.crab");
    let options =
        StoreOptions { wal: crabtree::wal::WalOptions { segment_size: 16 * 1024, ..Default::default() }, ..options() };
    let big = vec![9u8; 10_000];
    {
        let store = Store::open_path(&path, options.clone()).unwrap();
        let mut last = Lsn::ZERO;
        for i in 0..800 {
            last = last.max(store.put(&key(i), &big).unwrap());
        }
        for i in 0..800 {
            last = last.max(store.delete(&key(i)).unwrap().1);
        }
        store.put(b"kept", b"value").unwrap();
        store.wait_durable(last).unwrap();
        for _ in 0..3 {
            store.checkpoint().unwrap();
        }
        store.close().unwrap();
    }
    let store = Store::open_path(&path, options).unwrap_or_else(|e| panic!("reopen after a clean close: {e}"));
    assert_eq!(store.get(b"kept").unwrap().as_deref(), Some(&b"value"[..]));
    store.close().unwrap();
}
