//! Goal: `compact` (cutting the trailing free pages off the data file)
//! keeps every post-condition of RELIABILITY.md: power loss at any I/O
//! point of a workload that compacts recovers a verified tree with every
//! acknowledged write (P1), exactly a prefix of the operations (P3), no
//! page leaked or owned twice (P4), idempotently (P6, a second crash
//! during recovery); the file is never shorter than the recovered page
//! count; and the invariants of `buffer::compact` hold under the
//! interleavings that attack them.
//!
//! Method: a store on the simulated directory (512-byte pages, a small
//! pool): fill with overflow values, delete the ones written last (their
//! pages are at the end of the file), compact, write again (the file grows
//! back over the cut ids), compact again; power fails after every I/O
//! operation in turn. Failpoints (`compact.cut_chosen`, `compact.logged`,
//! `compact.before_sync`) hold the compacting thread while another thread
//! allocates, writes, checkpoints or the power fails. One test on real
//! files checks that the file shrinks (`metadata().len()`), one runs
//! readers and writers during repeated compactions (`Db::check` after).
//!
//! Sizes: quick by default; `CRABTREE_TEST_SIZE=long` crashes under more
//! damage models and with a larger workload. `CRABTREE_SEED` replays.

mod common;

use common::crash::{open_db, open_store, quiet_options};
use common::scenario::{PARK_TIMEOUT, serial};
use crabtree::failpoint::Pause;
use crabtree::io::{CrashModel, Dir, SimDir};
use crabtree::raw::Store;
use crabtree::{Db, Options, Result};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const PAGE: u64 = 512;

fn key(i: u32) -> Vec<u8> {
    format!("key{i:05}").into_bytes()
}

/// About three overflow pages at 512-byte pages.
fn value(i: u32, round: u32) -> Vec<u8> {
    (0..1400).map(|j| (i as usize * 31 + j + round as usize) as u8).collect()
}

#[derive(Clone, Debug)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Checkpoint,
    Compact,
}

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn model_after(ops: &[Op]) -> Model {
    let mut model = Model::new();
    for op in ops {
        match op {
            Op::Put(k, v) => {
                model.insert(k.clone(), v.clone());
            }
            Op::Delete(k) => {
                model.remove(k);
            }
            Op::Checkpoint | Op::Compact => {}
        }
    }
    model
}

/// Fill, checkpoint, delete the last ones written, compact, grow back,
/// delete again, compact again.
fn workload(n: u32) -> Vec<Op> {
    let mut ops: Vec<Op> = (0..n).map(|i| Op::Put(key(i), value(i, 0))).collect();
    ops.push(Op::Checkpoint);
    ops.extend((n / 3..n).rev().map(|i| Op::Delete(key(i))));
    ops.push(Op::Compact);
    ops.extend((n..n + n / 4).map(|i| Op::Put(key(i), value(i, 1))));
    ops.extend((n..n + n / 4).map(|i| Op::Delete(key(i))));
    ops.push(Op::Compact);
    ops.push(Op::Put(key(1), value(1, 2)));
    ops
}

fn open(dir: &SimDir) -> Result<Store> {
    open_store(dir, quiet_options(24))
}

fn data_len(dir: &SimDir) -> u64 {
    dir.open("data", false).and_then(|data| data.len()).unwrap()
}

/// Runs `ops` until the first error; returns how many were acknowledged
/// and the pages cut by the compactions.
fn run(store: &Store, ops: &[Op]) -> (usize, u64) {
    let mut cut = 0;
    for (done, op) in ops.iter().enumerate() {
        let result = match op {
            Op::Put(k, v) => store.put_durable(k, v).map(|_| ()),
            Op::Delete(k) => store.delete(k).and_then(|(_, lsn)| store.wait_durable(lsn)),
            Op::Checkpoint => store.checkpoint().map(|_| ()),
            Op::Compact => store.compact().map(|report| cut += report.pages_before - report.pages_after),
        };
        if result.is_err() {
            return (done, cut);
        }
    }
    (ops.len(), cut)
}

fn die(dir: &SimDir, store: Store) {
    dir.crash();
    drop(store);
}

fn contents(store: &Store) -> Model {
    store.tree().range::<&[u8], _>(..).map(|item| item.unwrap()).collect()
}

/// Verify (no leak, no page owned twice). Just after recovery (nothing
/// allocated since, so every page in use was written or redone): the file
/// holds every page in use (pages past its end may only be free ids).
fn check_store(store: &Store, context: &str) {
    let report = store.tree().verify().unwrap_or_else(|e| panic!("{context}: verify errored: {e}"));
    assert!(report.is_ok(), "{context}: verify: {report:?}");
}

fn check_recovered(dir: &SimDir, store: &Store, context: &str) {
    check_store(store, context);
    let free: std::collections::HashSet<_> = store.pool().free_pages().into_iter().map(|pid| pid.0).collect();
    let pages = store.pool().page_count();
    let used_end = (0..pages).rev().find(|id| !free.contains(id)).map_or(0, |id| id + 1);
    let len = data_len(dir);
    assert!(len >= used_end * PAGE, "{context}: file of {len} bytes, page {} in use", used_end - 1);
}

fn recover_and_check(dir: &SimDir, ops: &[Op], acked: usize, context: &str) -> Store {
    let store = open(dir).unwrap_or_else(|e| panic!("{context}: recovery failed: {e}"));
    check_recovered(dir, &store, context);
    let got = contents(&store);
    let acked_state = model_after(&ops[..acked]);
    let in_flight = model_after(&ops[..(acked + 1).min(ops.len())]);
    assert!(got == acked_state || got == in_flight, "{context}: recovered state is no prefix (P1/P3)");
    store
}

fn crash_every_io_point(ops: &[Op], model: CrashModel, seed: u64) {
    let dir = SimDir::new(seed, model);
    let store = open(&dir).unwrap();
    let start = dir.op_count();
    let (done, cut) = run(&store, ops);
    assert_eq!(done, ops.len());
    assert!(cut > 0, "the workload must cut pages, or it tests nothing");
    let total = dir.op_count() - start;
    drop(store);
    for k in 0..=total {
        let context = format!("seed {seed}, model {model:?}, crash after {k} of {total} I/O ops");
        let dir = SimDir::new(seed ^ k, model);
        let store = open(&dir).unwrap();
        dir.power_off_after(k);
        let (acked, _) = run(&store, ops);
        die(&dir, store);
        if k % 5 == 2 {
            // P6: power fails again during recovery.
            let again = SimDir::clone(&dir);
            again.power_off_after(k % 19);
            match open(&again) {
                Ok(store) => die(&again, store),
                Err(_) => again.crash(),
            }
        }
        let store = recover_and_check(&dir, ops, acked, &context);
        // Usable, and a compaction after recovery keeps it consistent.
        store.put_durable(b"after", b"crash").unwrap_or_else(|e| panic!("{context}: write after recovery: {e}"));
        store.compact().unwrap_or_else(|e| panic!("{context}: compact after recovery: {e}"));
        die(&dir, store);
        let store = open(&dir).unwrap_or_else(|e| panic!("{context}: second recovery: {e}"));
        assert_eq!(store.get(b"after").unwrap().as_deref(), Some(&b"crash"[..]), "{context}");
        check_recovered(&dir, &store, &context);
    }
    eprintln!("compact: {total} I/O points crashed ({model:?})");
}

#[test]
fn crash_at_every_io_point_of_a_compacting_workload() {
    let _serial = serial();
    let seed = common::seed("compact_crash");
    let n = if common::long() { 60 } else { 24 };
    let ops = workload(n);
    let mut models = vec![
        CrashModel { keep: 0, drop: 1, tear: 0, garbage: 0, fsync_failure_drops_pending: true },
        CrashModel { keep: 1, drop: 1, tear: 1, garbage: 50, fsync_failure_drops_pending: true },
    ];
    if common::long() {
        models.push(CrashModel { keep: 1, drop: 0, tear: 0, garbage: 0, fsync_failure_drops_pending: true });
    }
    for model in models {
        crash_every_io_point(&ops, model, seed);
    }
}

/// A store with `n` overflow values, the last `n - keep` deleted: free
/// pages at the end of the file.
fn store_with_free_tail(dir: &SimDir, n: u32, keep: u32) -> Store {
    let store = open(dir).unwrap();
    for i in 0..n {
        store.put_durable(&key(i), &value(i, 0)).unwrap();
    }
    store.checkpoint().unwrap();
    for i in (keep..n).rev() {
        let (_, lsn) = store.delete(&key(i)).unwrap();
        store.wait_durable(lsn).unwrap();
    }
    store
}

fn drop_model() -> CrashModel {
    CrashModel { keep: 0, drop: 1, tear: 0, garbage: 0, fsync_failure_drops_pending: true }
}

fn pause_for(point: &'static str, thread: &'static str) -> Pause {
    Pause::arm_for(point, move |current| current.name() == Some(thread))
}

/// Runs `store.compact()` on a thread named `compactor`.
fn spawn_compact(store: &Arc<Store>) -> std::thread::JoinHandle<Result<crabtree::CompactReport>> {
    let store = Arc::clone(store);
    std::thread::Builder::new().name("compactor".into()).spawn(move || store.compact()).unwrap()
}

/// C1: a page freed while resident and dirty, cut by compact, is never
/// written back after the cut (a checkpoint's write-back pass would
/// re-extend the file with it).
#[test]
fn a_dirty_free_page_in_the_cut_is_not_written_back() {
    let _serial = serial();
    let dir = SimDir::new(common::seed("compact_dirty"), drop_model());
    let store = open(&dir).unwrap();
    store.put_durable(b"k", b"v").unwrap();
    store.checkpoint().unwrap();
    let pool = store.pool();
    // Fresh pages, dirty and resident, freed unwritten: the file's tail.
    let guards: Vec<_> = (0..4).map(|_| pool.allocate().unwrap()).collect();
    let first = guards[0].pid().0;
    for guard in guards.into_iter().rev() {
        pool.free(guard);
    }
    let report = store.compact().unwrap();
    assert!(report.pages_after <= first, "{report:?}");
    assert_eq!(data_len(&dir), report.pages_after * PAGE);
    store.checkpoint().unwrap();
    assert_eq!(data_len(&dir), report.pages_after * PAGE, "a cut page was written back");
    die(&dir, store);
    let store = open(&dir).unwrap();
    check_recovered(&dir, &store, "after recovery");
    assert_eq!(store.pool().page_count(), report.pages_after);
}

/// C2: an allocation that comes while compact holds the cut waits until
/// the file is cut and synced; its page (an id of the cut range, grown
/// again) survives a crash after.
#[test]
fn an_allocation_during_compact_waits_for_the_cut() {
    let _serial = serial();
    for point in ["compact.cut_chosen", "compact.logged", "compact.before_sync"] {
        let dir = SimDir::new(common::seed("compact_alloc"), drop_model());
        let store = Arc::new(store_with_free_tail(&dir, 20, 5));
        let pause = pause_for(point, "compactor");
        let compactor = spawn_compact(&store);
        assert!(pause.wait_parked(PARK_TIMEOUT), "{point}: compact did not reach the point");
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (store, done) = (Arc::clone(&store), Arc::clone(&done));
            std::thread::spawn(move || {
                // More pages than are free below the cut: the file grows.
                let result = (0..12).try_for_each(|i| store.put_durable(&key(100 + i), &value(100 + i, 9)).map(|_| ()));
                done.store(true, Ordering::SeqCst);
                result
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(!done.load(Ordering::SeqCst), "{point}: an allocation went through during compact");
        pause.resume();
        let report = compactor.join().unwrap().unwrap();
        writer.join().unwrap().unwrap();
        assert!(report.pages_after < report.pages_before, "{point}: {report:?}");
        assert!(store.pool().page_count() > report.pages_after, "{point}: the writer grew the file");
        check_store(&store, point);
        let store = Arc::into_inner(store).unwrap();
        die(&dir, store);
        let store = open(&dir).unwrap();
        check_recovered(&dir, &store, point);
        for i in 100..112 {
            assert_eq!(store.get(&key(i)).unwrap(), Some(value(i, 9)), "{point}: acknowledged write lost");
        }
        for i in 0..5 {
            assert_eq!(store.get(&key(i)).unwrap(), Some(value(i, 0)), "{point}");
        }
    }
}

/// C3 at each step: power fails while compact is held before the record,
/// after the durable record (before `set_len`), and after `set_len`
/// (before the sync): recovery agrees with the file, and cuts it where the
/// record says.
#[test]
fn power_loss_at_each_step_of_compact() {
    let _serial = serial();
    for (point, logged) in [("compact.cut_chosen", false), ("compact.logged", true), ("compact.before_sync", true)] {
        for model in
            [drop_model(), CrashModel { keep: 1, drop: 0, tear: 0, garbage: 0, fsync_failure_drops_pending: true }]
        {
            let context = format!("{point}, {model:?}");
            let dir = SimDir::new(common::seed("compact_steps"), model);
            let store = Arc::new(store_with_free_tail(&dir, 20, 5));
            let before = store.pool().page_count();
            let pause = pause_for(point, "compactor");
            let compactor = spawn_compact(&store);
            assert!(pause.wait_parked(PARK_TIMEOUT), "{context}");
            let cut = store.pool().page_count();
            assert!(cut < before, "{context}");
            dir.crash();
            pause.resume();
            let _ = compactor.join().unwrap();
            drop(Arc::into_inner(store));
            let store = open(&dir).unwrap_or_else(|e| panic!("{context}: recovery: {e}"));
            check_recovered(&dir, &store, &context);
            let expect = if logged { cut } else { before };
            assert_eq!(store.pool().page_count(), expect, "{context}");
            if logged {
                assert_eq!(data_len(&dir), cut * PAGE, "{context}: recovery redoes the cut");
            }
            for i in 0..5 {
                assert_eq!(store.get(&key(i)).unwrap(), Some(value(i, 0)), "{context}");
            }
            // P6: recovering the recovered store again changes nothing.
            die(&dir, store);
            let store = open(&dir).unwrap();
            check_recovered(&dir, &store, &context);
            assert_eq!(store.pool().page_count(), expect, "{context}: second recovery");
        }
    }
}

/// C4: a checkpoint asked for while compact is held waits for it; the
/// checkpoint after records the new count, and recovery from it (the
/// `TRUNCATE` record now before the snapshot) agrees.
#[test]
fn a_checkpoint_racing_compact_waits_and_records_the_cut() {
    let _serial = serial();
    let dir = SimDir::new(common::seed("compact_checkpoint"), drop_model());
    let store = Arc::new(store_with_free_tail(&dir, 20, 5));
    let pause = pause_for("compact.logged", "compactor");
    let compactor = spawn_compact(&store);
    assert!(pause.wait_parked(PARK_TIMEOUT));
    let done = Arc::new(AtomicBool::new(false));
    let checkpointer = {
        let (store, done) = (Arc::clone(&store), Arc::clone(&done));
        std::thread::spawn(move || {
            let result = store.checkpoint();
            done.store(true, Ordering::SeqCst);
            result
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    assert!(!done.load(Ordering::SeqCst), "a checkpoint ran inside compact");
    pause.resume();
    let report = compactor.join().unwrap().unwrap();
    checkpointer.join().unwrap().unwrap();
    let store = Arc::into_inner(store).unwrap();
    die(&dir, store);
    let store = open(&dir).unwrap();
    check_recovered(&dir, &store, "after the racing checkpoint");
    assert_eq!(store.pool().page_count(), report.pages_after);
    assert_eq!(data_len(&dir), report.pages_after * PAGE);
}

/// Real files: the file shrinks on disk, and stays consistent over reopen.
#[test]
fn the_file_shrinks_on_disk() -> Result<()> {
    let _serial = serial();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("data.crab");
    let options = Options { page_size: 4096, ..Options::default() };
    let db = Db::open_with(&path, options.clone())?;
    let value = vec![3u8; 32 * 1024];
    db.update(|tx| tx.put(b"keep", b"small"))?;
    for i in 0..64u32 {
        db.update(|tx| tx.put(format!("big{i:03}").as_bytes(), &value))?;
    }
    crabtree::raw::checkpoint_db(&db)?;
    let full = std::fs::metadata(&path)?.len();
    for i in 0..64u32 {
        db.update(|tx| tx.delete(format!("big{i:03}").as_bytes()))?;
    }
    db.vacuum()?;
    let report = db.compact()?;
    let after = std::fs::metadata(&path)?.len();
    eprintln!("compact: {full} -> {after} bytes, {report:?}");
    assert!(after * 4 < full, "file {full} -> {after} bytes: {report:?}");
    assert_eq!(after, report.pages_after * 4096);
    db.check()?;
    drop(db);
    let db = Db::open_with(&path, options)?;
    db.check()?;
    assert_eq!(db.stats().page_count, report.pages_after);
    db.snapshot().get(b"keep")?.expect("kept key");
    db.update(|tx| tx.put(b"again", &value))?;
    db.check()?;
    Ok(())
}

/// Readers and writers run during repeated compactions; every key the
/// writers committed is there, and `check` passes after.
#[test]
fn readers_and_writers_during_compact() -> Result<()> {
    let _serial = serial();
    let dir = SimDir::new(common::seed("compact_concurrent"), drop_model());
    let options = Options { page_size: 512, memory_budget: 512 * 64, ..Options::default() };
    let db = Arc::new(open_db(&dir, options.clone())?);
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = if common::long() { 400 } else { 60 };
    let mut threads = Vec::new();
    for t in 0..2u32 {
        let (db, stop) = (Arc::clone(&db), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || -> Result<u32> {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let k = format!("w{t}-{n:05}").into_bytes();
                db.update(|tx| tx.put(&k, &value(n, t)))?;
                if n >= 8 {
                    let old = format!("w{t}-{:05}", n - 8).into_bytes();
                    db.update(|tx| tx.delete(&old))?;
                }
                n += 1;
            }
            Ok(n)
        }));
    }
    let reader = {
        let (db, stop) = (Arc::clone(&db), Arc::clone(&stop));
        std::thread::spawn(move || -> Result<()> {
            while !stop.load(Ordering::Relaxed) {
                for entry in db.snapshot().range::<&[u8], _>(..)? {
                    let (_, v) = entry?;
                    assert_eq!(v.len(), 1400);
                }
            }
            Ok(())
        })
    };
    let mut cut = 0;
    let mut compactions = 0u32;
    while compactions < rounds || (cut == 0 && compactions < rounds * 20) {
        std::thread::sleep(Duration::from_millis(2));
        db.vacuum()?;
        let report = db.compact()?;
        cut += report.pages_before - report.pages_after;
        compactions += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let written: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap()).collect::<Result<_>>()?;
    reader.join().unwrap()?;
    eprintln!("compact: {cut} pages cut over {compactions} compactions, {written:?} written");
    assert!(cut > 0, "no compaction cut anything: the test tests nothing");
    db.check()?;
    for (t, &n) in written.iter().enumerate() {
        for i in n.saturating_sub(8)..n {
            let k = format!("w{t}-{i:05}").into_bytes();
            assert_eq!(db.snapshot().get(&k)?, Some(value(i, t as u32)), "key {t}/{i}");
        }
    }
    let db = Arc::into_inner(db).expect("threads joined");
    dir.crash();
    drop(db);
    let db = open_db(&dir, options)?;
    db.check()?;
    for (t, &n) in written.iter().enumerate() {
        for i in n.saturating_sub(8)..n {
            let k = format!("w{t}-{i:05}").into_bytes();
            assert_eq!(db.snapshot().get(&k)?, Some(value(i, t as u32)), "key {t}/{i} after recovery");
        }
    }
    Ok(())
}

/// A failed `set_len` (step 5) is returned and leaves the store working:
/// the record already says the pages are gone, so later allocations take
/// the cut ids again over the file's old bytes, and recovery agrees. A
/// failed data sync after the cut poisons the store, and recovery redoes
/// the cut from the durable record.
#[test]
fn a_failed_set_len_or_sync_in_compact() {
    use crabtree::io::{Fault, FaultOp};
    let _serial = serial();
    // set_len fails: an error, no poison.
    let dir = SimDir::new(common::seed("compact_set_len"), drop_model());
    let store = store_with_free_tail(&dir, 20, 5);
    let (before, len_before) = (store.pool().page_count(), data_len(&dir));
    dir.disk("data").unwrap().inject(Fault::once(FaultOp::SetLen, 0));
    assert!(store.compact().is_err(), "the injected set_len failure is returned");
    let cut = store.pool().page_count();
    assert!(cut < before, "the run was taken off before the failure");
    assert_eq!(data_len(&dir), len_before, "the file was not cut");
    for i in 20..80 {
        store.put_durable(&key(i), &value(i, 1)).unwrap();
    }
    assert!(store.pool().page_count() > cut, "new pages took the cut ids again");
    store.checkpoint().unwrap();
    store.put_durable(&key(1), &value(1, 2)).unwrap();
    let expect: Model = (0..5).chain(20..80).map(|i| (key(i), value(i, u32::from(i >= 20)))).collect();
    let expect: Model = expect.into_iter().chain([(key(1), value(1, 2))]).collect();
    assert_eq!(contents(&store), expect);
    die(&dir, store);
    let store = open(&dir).unwrap();
    check_recovered(&dir, &store, "after a failed set_len");
    assert_eq!(contents(&store), expect);
    store.compact().unwrap();
    die(&dir, store);
    let store = open(&dir).unwrap();
    check_recovered(&dir, &store, "after a failed set_len and a compact");
    assert_eq!(contents(&store), expect);
    drop(store);

    // The data sync after the cut fails: poisoned; recovery cuts again.
    let dir = SimDir::new(common::seed("compact_sync"), drop_model());
    let store = store_with_free_tail(&dir, 20, 5);
    let before = store.pool().page_count();
    dir.disk("data").unwrap().inject(Fault::once(FaultOp::Sync, 0));
    assert!(store.compact().is_err(), "the injected sync failure is returned");
    let cut = store.pool().page_count();
    assert!(cut < before);
    assert!(store.put_durable(b"after", b"poisoned").is_err(), "a failed data sync poisons");
    die(&dir, store);
    let store = open(&dir).unwrap();
    check_recovered(&dir, &store, "after a failed sync in compact");
    assert_eq!(store.pool().page_count(), cut, "recovery redoes the cut");
    assert_eq!(data_len(&dir), cut * PAGE);
    let expect: Model = (0..5).map(|i| (key(i), value(i, 0))).collect();
    assert_eq!(contents(&store), expect);
}
