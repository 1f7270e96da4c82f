//! Load held (RELIABILITY.md F16): a sustained mixed workload on real files,
//! every part of the engine busy at once, then a full check.
//!
//! Goal: nothing drifts under hours of ordinary use. No stall, no
//! acknowledged write lost or changed, no snapshot that stops being
//! consistent while vacuum, checkpoints, log recycling and eviction run
//! beneath it, and space that stops growing once the live data does.
//!
//! Method: a `Db` with a pool much smaller than the data (evictions, the
//! cleaner's write-back, uncached reads), 64 KiB log segments and a
//! checkpoint every 2 MiB of log (segments recycled all the time), vacuum
//! every 20 ms, `Immediate` commits (group commit). `CRABTREE_TEST_THREADS`
//! threads (default 8) run for the test's time, each mixing:
//! * writes of its own keys (1-4 puts or deletes a transaction; values of
//!   8 B to 20 KiB, so some are overflow chains), recorded in its model
//!   once the commit returned;
//! * transfers between 64 shared accounts in a keyspace `bank` (read
//!   both, write both, retried on `Conflict`): the total never changes;
//! * snapshot checks: the bank's total by a scan (either direction), and
//!   the thread's own keys by a scan equal to its model, exactly;
//! * point reads of its own keys against the model;
//! * old snapshots: one kept open for up to 500 ms across the thread's
//!   other work, then checked against the model *as it was* and the
//!   bank's total: vacuum may not take a version it can still see.
//!
//! A monitor samples the commit count each 100 ms: the count may not stand
//! still for 10 s (a stall), and the data file's size at a third of the run and
//! at the end: it may not keep growing once the live data stopped (at most
//! 1.5x plus 8 MiB; the live data is about 8 x 300 keys of 0.8 KiB on
//! average, and a 120 s run's file reached 8.3 MiB by 30 s and stayed
//! there); and the resident memory (`VmRSS`) at the same two points, under
//! the same rule with 32 MiB of slack for the allocator. It prints where
//! the run stands every tenth of it. At the end: `check()`, every model equal to its keys, the total; then
//! close, reopen, and the same again. Prints one `load held:` line with
//! what was done.
//!
//! Size: `CRABTREE_LOAD_SECS`, else 60 s (quick, RELIABILITY.md) or 3,600 s
//! with `CRABTREE_TEST_SIZE=long`. `CRABTREE_SEED` sets the seed.

use crabtree::{Db, Error, Keyspace, Options, Snapshot};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const ACCOUNTS: u64 = 64;
const INITIAL: u64 = 1_000_000;
const OWN_KEYS: u32 = 300;
const STALL: Duration = Duration::from_secs(10);

fn secs() -> u64 {
    if let Some(secs) = std::env::var("CRABTREE_LOAD_SECS").ok().and_then(|s| s.parse().ok()) {
        return secs;
    }
    match std::env::var("CRABTREE_TEST_SIZE").as_deref() {
        Ok("long") => 3_600,
        _ => 60,
    }
}

fn threads() -> u64 {
    std::env::var("CRABTREE_TEST_THREADS").ok().and_then(|s| s.parse().ok()).unwrap_or(8).max(1)
}

fn options() -> Options {
    Options {
        memory_budget: 1 << 20,
        log_segment_size: 64 << 10,
        checkpoint_bytes: 2 << 20,
        vacuum_interval: Some(Duration::from_millis(20)),
        ..Options::default()
    }
}

/// The process's resident memory in bytes (`VmRSS`).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("a VmRSS line");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse::<u64>().ok()).expect("VmRSS in KiB") << 10
}

fn account(i: u64) -> Vec<u8> {
    format!("acct-{i:03}").into_bytes()
}

fn balance(value: Option<Vec<u8>>) -> u64 {
    u64::from_le_bytes(value.expect("every account exists").try_into().expect("an 8-byte balance"))
}

fn own_prefix(thread: u64) -> Vec<u8> {
    format!("own/{thread:02}/").into_bytes()
}

fn own_key(thread: u64, key: u32) -> Vec<u8> {
    let mut bytes = own_prefix(thread);
    bytes.extend_from_slice(format!("{key:05}").as_bytes());
    bytes
}

/// A value that names its key and generation and is checkable from its
/// bytes alone: 8 B to 20 KiB, one in 40 past a page (an overflow chain).
fn value(rng: &mut fastrand::Rng, thread: u64, key: u32, generation: u64) -> Vec<u8> {
    let len = match rng.u32(0..40) {
        0 => rng.usize(5_000..20_000),
        1..=12 => rng.usize(200..3_000),
        _ => rng.usize(8..64),
    };
    let seed = thread << 48 ^ u64::from(key) << 32 ^ generation;
    let mut bytes = seed.to_le_bytes().to_vec();
    bytes.extend((8..len.max(8)).map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64) % 251) as u8));
    bytes
}

/// The bank's total seen by `snap` through a scan (either direction).
fn bank_total(snap: &Snapshot, bank: &Keyspace, reverse: bool) -> u64 {
    let iter = snap.range_in::<&[u8], _>(bank, ..).unwrap();
    let entries: Vec<_> = if reverse { iter.rev().collect() } else { iter.collect() };
    assert_eq!(entries.len() as u64, ACCOUNTS, "accounts seen by a scan");
    entries.into_iter().map(|entry| balance(Some(entry.unwrap().1))).sum()
}

/// `snap`'s view of `thread`'s keys, which must be `model` exactly.
fn assert_own_keys(snap: &Snapshot, thread: u64, model: &BTreeMap<u32, Vec<u8>>, when: &str) {
    let prefix = own_prefix(thread);
    let mut end = prefix.clone();
    *end.last_mut().unwrap() += 1;
    let found: Vec<(Vec<u8>, Vec<u8>)> = snap.range(prefix.clone()..end).unwrap().map(|e| e.unwrap()).collect();
    let expected: Vec<(Vec<u8>, Vec<u8>)> = model.iter().map(|(k, v)| (own_key(thread, *k), v.clone())).collect();
    if found != expected {
        let found_keys: Vec<_> =
            found.iter().map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.len())).collect();
        let expected_keys: Vec<_> =
            expected.iter().map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.len())).collect();
        panic!("thread {thread}'s keys {when}: found {found_keys:?}, expected {expected_keys:?}");
    }
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    transfers: AtomicU64,
    conflicts: AtomicU64,
    snapshot_checks: AtomicU64,
    old_snapshot_checks: AtomicU64,
    point_reads: AtomicU64,
}

/// One worker's loop; returns its model of its own keys.
fn worker(
    db: &Db,
    bank: &Keyspace,
    thread: u64,
    seed: u64,
    deadline: Instant,
    counters: &Counters,
) -> BTreeMap<u32, Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(seed ^ thread.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut model: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut generation = 0u64;
    let total = ACCOUNTS * INITIAL;
    let mut old: Option<(Snapshot, BTreeMap<u32, Vec<u8>>, Instant)> = None;
    while Instant::now() < deadline {
        match rng.u32(0..100) {
            0..40 => {
                let mut tx = db.begin();
                let mut changes = Vec::new();
                for _ in 0..rng.u32(1..5) {
                    let key = rng.u32(0..OWN_KEYS);
                    generation += 1;
                    if rng.u32(0..5) == 0 {
                        tx.delete(&own_key(thread, key)).unwrap();
                        changes.push((key, None));
                    } else {
                        let value = value(&mut rng, thread, key, generation);
                        tx.put(&own_key(thread, key), &value).unwrap();
                        changes.push((key, Some(value)));
                    }
                }
                tx.commit().unwrap_or_else(|e| panic!("thread {thread}: commit of its own keys: {e}"));
                counters.commits.fetch_add(1, Ordering::Relaxed);
                for (key, change) in changes {
                    match change {
                        Some(value) => model.insert(key, value),
                        None => model.remove(&key),
                    };
                }
            }
            40..65 => {
                let (from, to) = (rng.u64(0..ACCOUNTS), rng.u64(0..ACCOUNTS));
                let amount = rng.u64(1..1_000);
                for attempt in 0u32.. {
                    let mut tx = db.begin();
                    let a = balance(tx.get_in(bank, &account(from)).unwrap());
                    if a < amount || from == to {
                        break;
                    }
                    tx.put_in(bank, &account(from), &(a - amount).to_le_bytes()).unwrap();
                    let b = balance(tx.get_in(bank, &account(to)).unwrap());
                    tx.put_in(bank, &account(to), &(b + amount).to_le_bytes()).unwrap();
                    match tx.commit() {
                        Ok(()) => {
                            counters.commits.fetch_add(1, Ordering::Relaxed);
                            counters.transfers.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(Error::Conflict) => {
                            // Back off as `Db::update` does, so eight
                            // threads on 64 accounts do not mostly retry.
                            counters.conflicts.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_micros(rng.u64(0..10u64 << attempt.min(10))));
                        }
                        Err(e) => panic!("thread {thread}: transfer: {e}"),
                    }
                }
            }
            65..85 => {
                let snap = db.snapshot();
                assert_eq!(bank_total(&snap, bank, rng.bool()), total, "thread {thread}: the bank's total");
                assert_own_keys(&snap, thread, &model, "in a new snapshot");
                counters.snapshot_checks.fetch_add(1, Ordering::Relaxed);
            }
            85..95 => {
                let snap = db.snapshot();
                for _ in 0..8 {
                    let key = rng.u32(0..OWN_KEYS);
                    let found = snap.get(&own_key(thread, key)).unwrap();
                    assert_eq!(found.as_ref(), model.get(&key), "thread {thread}: point read of key {key}");
                }
                counters.point_reads.fetch_add(8, Ordering::Relaxed);
            }
            _ => match old.take() {
                None => {
                    let hold = Duration::from_millis(rng.u64(0..500));
                    old = Some((db.snapshot(), model.clone(), Instant::now() + hold));
                }
                Some((snap, then, until)) if Instant::now() >= until => {
                    assert_eq!(bank_total(&snap, bank, rng.bool()), total, "thread {thread}: an old snapshot's total");
                    assert_own_keys(&snap, thread, &then, "in an old snapshot");
                    counters.old_snapshot_checks.fetch_add(1, Ordering::Relaxed);
                }
                kept => old = kept,
            },
        }
    }
    if let Some((snap, then, _)) = old {
        assert_own_keys(&snap, thread, &then, "in an old snapshot at the end");
    }
    model
}

/// Every check of the end of the run, on `db` as it is now.
fn check_all(db: &Db, models: &[BTreeMap<u32, Vec<u8>>], when: &str) {
    db.check().unwrap_or_else(|e| panic!("check() {when}: {e}"));
    let bank = db.keyspace("bank").unwrap();
    let snap = db.snapshot();
    assert_eq!(bank_total(&snap, &bank, false), ACCOUNTS * INITIAL, "the bank's total {when}");
    for (thread, model) in models.iter().enumerate() {
        assert_own_keys(&snap, thread as u64, model, when);
    }
}

#[test]
fn a_mixed_load_held_loses_nothing_stalls_never_and_stops_growing() {
    let seed = std::env::var("CRABTREE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    let (secs, threads) = (secs(), threads());
    eprintln!("load held: seed {seed} (CRABTREE_SEED replays the choices), {secs} s, {threads} threads");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("load.crab");
    let db = Db::open_with(&path, options()).unwrap();
    let bank = db.keyspace("bank").unwrap();
    db.update(|tx| {
        for i in 0..ACCOUNTS {
            tx.put_in(&bank, &account(i), &INITIAL.to_le_bytes())?;
        }
        Ok(())
    })
    .unwrap();

    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let counters = Arc::new(Counters::default());
    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (db, counters, done) = (db.clone(), Arc::clone(&counters), Arc::clone(&done));
        std::thread::spawn(move || {
            // `longest`: the longest time between two samples that saw
            // new commits (so at least the sampling interval).
            let (mut last, mut last_change, mut longest) = (0, Instant::now(), Duration::ZERO);
            let mut third = None;
            let mut next_report = start;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let now = Instant::now();
                let commits = counters.commits.load(Ordering::Relaxed);
                longest = longest.max(now - last_change);
                if commits != last {
                    (last, last_change) = (commits, now);
                }
                assert!(now - last_change < STALL, "no commit for {:?} after {commits}: a stall", now - last_change);
                if now >= next_report {
                    next_report += Duration::from_secs(secs).max(Duration::from_secs(1)) / 10;
                    let stats = db.stats();
                    eprintln!(
                        "load held: at {:.0?}: {commits} commits, data file {} KiB, {} versions in the tree, {} \
                         vacuumed, {} pinned by snapshots",
                        now - start,
                        (stats.page_count * stats.page_size as u64) >> 10,
                        stats.tree_entries,
                        stats.versions_vacuumed,
                        stats.versions_pinned
                    );
                }
                if third.is_none() && now >= start + Duration::from_secs(secs) / 3 {
                    let stats = db.stats();
                    third = Some((stats.page_count * stats.page_size as u64, rss()));
                }
            }
            (longest, third)
        })
    };
    let workers: Vec<_> = (0..threads)
        .map(|thread| {
            let (db, bank, counters) = (db.clone(), bank.clone(), Arc::clone(&counters));
            std::thread::Builder::new()
                .name(format!("load-{thread}"))
                .spawn(move || worker(&db, &bank, thread, seed, deadline, &counters))
                .unwrap()
        })
        .collect();
    let models: Vec<_> = workers.into_iter().map(|worker| worker.join().unwrap()).collect();
    done.store(true, Ordering::Relaxed);
    let (longest, third) = monitor.join().unwrap();

    let stats = db.stats();
    let (end_bytes, end_rss) = (stats.page_count * stats.page_size as u64, rss());
    let (third_bytes, third_rss) = third.unwrap_or_default();
    let c = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    eprintln!(
        "load held: {:.1} s, {} commits ({} transfers, {} conflicts retried), {} snapshot checks, {} old-snapshot \
         checks, {} point reads; commit count still for at most {longest:.1?} (sampled every 100 ms); {} versions vacuumed, {} pruned; pool: {} \
         loads, {} evictions, {} write-backs; data file {} KiB at a third of the run, {} KiB at the end; resident \
         memory {} KiB and {} KiB",
        start.elapsed().as_secs_f64(),
        c(&counters.commits),
        c(&counters.transfers),
        c(&counters.conflicts),
        c(&counters.snapshot_checks),
        c(&counters.old_snapshot_checks),
        c(&counters.point_reads),
        stats.versions_vacuumed,
        stats.versions_pruned,
        stats.pool.loads,
        stats.pool.evictions,
        stats.pool.writes,
        third_bytes >> 10,
        end_bytes >> 10,
        third_rss >> 10,
        end_rss >> 10,
    );
    assert!(c(&counters.commits) > 0 && c(&counters.snapshot_checks) > 0, "the load did nothing");
    assert!(stats.pool.evictions > 0, "the data never outgrew the pool: {:?}", stats.pool);
    if third.is_some() {
        assert!(
            end_bytes <= third_bytes + third_bytes / 2 + (8 << 20),
            "the data file kept growing: {third_bytes} bytes at a third of the run, {end_bytes} at the end"
        );
        assert!(
            end_rss <= third_rss + third_rss / 2 + (32 << 20),
            "resident memory kept growing: {third_rss} bytes at a third of the run, {end_rss} at the end"
        );
    }

    check_all(&db, &models, "at the end of the load");
    drop((db, bank));
    let db = Db::open_with(&path, options()).unwrap();
    check_all(&db, &models, "after a reopen");
}
