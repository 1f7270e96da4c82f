//! Goal: transactions are atomic and snapshots consistent under real
//! concurrency, across keyspaces, and across a clean reopen.
//!
//! Method: N accounts, half in the default keyspace and half in a named
//! one, start with equal balances. Writer threads move random amounts
//! between random pairs of accounts in transactions (read both, write
//! both; retried on `Conflict`), while reader threads take snapshots and
//! sum every balance with a range scan (alternately forward and backward)
//! and with point reads. Every sum must equal the initial total: a torn
//! transfer or a snapshot that sees half a commit changes it. At the end
//! the total holds, `check()` passes, and it still holds after reopen.
//! The background vacuum runs every 2 ms meanwhile. A second bank closes
//! and reopens accounts (deletes, then writes again), so reverse scans
//! race the removal of tombstones. Size: `CRABTREE_TEST_SCALE` (default
//! 1) x 300 transfers per writer (2,000 in the second).

use crabtree::{Db, Error, Keyspace, Options, Snapshot};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const ACCOUNTS: u64 = 40;
const INITIAL: u64 = 1_000;
const WRITERS: u64 = 4;
const READERS: u64 = 2;

fn scale() -> u64 {
    std::env::var("CRABTREE_TEST_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1).max(1)
}

fn account(i: u64) -> Vec<u8> {
    format!("acct-{i:04}").into_bytes()
}

fn decode(value: &[u8]) -> u64 {
    u64::from_le_bytes(value.try_into().expect("an 8-byte balance"))
}

/// Of `accounts`, those below half live in the default keyspace, the rest
/// in `ks`.
fn keyspace_of<'a>(i: u64, accounts: u64, ks: &'a Keyspace, default: &'a Keyspace) -> &'a Keyspace {
    if i < accounts / 2 { default } else { ks }
}

fn sum_by_scan(snap: &Snapshot, ks: &Keyspace, reverse: bool) -> u64 {
    let mut total = 0;
    for keyspace in [None, Some(ks)] {
        let iter = match keyspace {
            None => snap.range::<&[u8], _>(..).unwrap(),
            Some(ks) => snap.range_in::<&[u8], _>(ks, ..).unwrap(),
        };
        let entries: Vec<_> = if reverse { iter.rev().collect() } else { iter.collect() };
        total += entries.into_iter().map(|e| decode(&e.unwrap().1)).sum::<u64>();
    }
    total
}

fn sum_by_gets(snap: &Snapshot, accounts: u64, ks: &Keyspace, default: &Keyspace) -> u64 {
    (0..accounts)
        .map(|i| decode(&snap.get_in(keyspace_of(i, accounts, ks, default), &account(i)).unwrap().unwrap()))
        .sum()
}

/// `READERS` threads, reader `r` calling `check(r)`, `check(r + 1)`, ...
/// until `done`.
fn spawn_readers(
    done: &Arc<AtomicBool>,
    check: impl Fn(u64) + Clone + Send + 'static,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..READERS)
        .map(|r| {
            let (done, check) = (Arc::clone(done), check.clone());
            std::thread::spawn(move || {
                let mut round = r;
                while !done.load(Ordering::Relaxed) {
                    check(round);
                    round += 1;
                }
            })
        })
        .collect()
}

/// Joins `writers`, then stops (`done`) and joins `readers`.
fn join_writers_then_readers(
    writers: Vec<std::thread::JoinHandle<()>>,
    done: &AtomicBool,
    readers: Vec<std::thread::JoinHandle<()>>,
) {
    for writer in writers {
        writer.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap();
    }
}

fn options() -> Options {
    Options { vacuum_interval: Some(Duration::from_millis(2)), ..Options::default() }
}

#[test]
fn transfers_keep_the_total_in_every_snapshot() {
    bank(ACCOUNTS, options());
}

/// The same with 3,000 accounts and a pool of 64 512-byte pages, a small
/// part of the data: point reads of leaves the full pool does not admit
/// read private copies (`buffer/uncached.rs`) while writers load, change
/// and evict the same leaves.
#[test]
fn transfers_keep_the_total_with_the_data_far_larger_than_the_pool() {
    let options = Options { page_size: 512, memory_budget: 64 * 512, ..options() };
    let stats = bank(3_000, options);
    assert!(stats.pool.uncached_reads > 0, "no point read was uncached: {:?}", stats.pool);
}

/// Runs the bank with `accounts` accounts; the pool's counters at the end
/// of the concurrent part.
fn bank(accounts: u64, options: Options) -> crabtree::Stats {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bank.crab");
    let db = Db::open_with(&path, options.clone()).unwrap();
    let ks = db.keyspace("savings").unwrap();
    let default = db.keyspace("default").unwrap();
    db.update(|tx| {
        for i in 0..accounts {
            tx.put_in(keyspace_of(i, accounts, &ks, &default), &account(i), &INITIAL.to_le_bytes())?;
        }
        Ok(())
    })
    .unwrap();
    let total = accounts * INITIAL;
    let done = Arc::new(AtomicBool::new(false));
    let (committed, conflicts, sums) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let transfers = 300 * scale();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (db, ks, default) = (db.clone(), ks.clone(), default.clone());
            let (committed, conflicts) = (Arc::clone(&committed), Arc::clone(&conflicts));
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(w);
                for _ in 0..transfers {
                    let (from, to) = (rng.u64(0..accounts), rng.u64(0..accounts));
                    let amount = rng.u64(1..50);
                    loop {
                        let mut tx = db.begin();
                        let (ks_from, ks_to) =
                            (keyspace_of(from, accounts, &ks, &default), keyspace_of(to, accounts, &ks, &default));
                        let a = decode(&tx.get_in(ks_from, &account(from)).unwrap().unwrap());
                        if a < amount || from == to {
                            break;
                        }
                        tx.put_in(ks_from, &account(from), &(a - amount).to_le_bytes()).unwrap();
                        let b = decode(&tx.get_in(ks_to, &account(to)).unwrap().unwrap());
                        tx.put_in(ks_to, &account(to), &(b + amount).to_le_bytes()).unwrap();
                        match tx.commit() {
                            Ok(()) => {
                                committed.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Err(Error::Conflict) => {
                                conflicts.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => panic!("transfer: {e}"),
                        }
                    }
                }
            })
        })
        .collect();
    let readers = {
        let (db, ks, default, sums) = (db.clone(), ks.clone(), default.clone(), Arc::clone(&sums));
        spawn_readers(&done, move |round| {
            let snap = db.snapshot();
            assert_eq!(sum_by_scan(&snap, &ks, round.is_multiple_of(2)), total, "scan sum");
            assert_eq!(sum_by_gets(&snap, accounts, &ks, &default), total, "point-read sum");
            sums.fetch_add(2, Ordering::Relaxed);
        })
    };
    join_writers_then_readers(writers, &done, readers);
    eprintln!(
        "bank: {} transfers committed, {} conflicts retried, {} snapshot sums checked",
        committed.load(Ordering::Relaxed),
        conflicts.load(Ordering::Relaxed),
        sums.load(Ordering::Relaxed)
    );
    assert!(committed.load(Ordering::Relaxed) > 0);
    let stats = db.stats();
    let snap = db.snapshot();
    assert_eq!(sum_by_scan(&snap, &ks, false), total);
    drop(snap);
    db.vacuum().unwrap();
    db.check().unwrap();
    drop((db, ks, default));

    let db = Db::open_with(&path, options.clone()).unwrap();
    let ks = db.keyspace("savings").unwrap();
    let default = db.keyspace("default").unwrap();
    let snap = db.snapshot();
    assert_eq!(sum_by_scan(&snap, &ks, true), total, "after reopen");
    assert_eq!(sum_by_gets(&snap, accounts, &ks, &default), total, "after reopen");
    db.check().unwrap();
    stats
}

/// Accounts close and reopen: a transfer of an account's whole balance
/// deletes it, a transfer to a closed account writes it again. Balances
/// are padded to 200 bytes in 512-byte pages, so a key's versions lie in
/// several leaves, and reverse scans (which meet them oldest first, in
/// several tree batches) race vacuum (every millisecond) and commits'
/// pruning, which remove a closed account's versions oldest first and its
/// tombstone last. A scan that kept an old balance of an account whose
/// tombstone went between two of its batches sums too much. Every sum,
/// forward and backward, must equal the total.
#[test]
fn closing_and_reopening_accounts_keeps_the_total_in_every_scan() {
    const ACCOUNTS: u64 = 24;
    const PAD: usize = 200;
    let options = Options { page_size: 512, vacuum_interval: Some(Duration::from_millis(1)), ..Options::default() };
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path().join("bank.crab"), options).unwrap();
    let balance = |amount: u64| {
        let mut value = amount.to_le_bytes().to_vec();
        value.resize(PAD, b'.');
        value
    };
    db.update(|tx| {
        for i in 0..ACCOUNTS {
            tx.put(&account(i), &balance(INITIAL))?;
        }
        Ok(())
    })
    .unwrap();
    let total = ACCOUNTS * INITIAL;
    let done = Arc::new(AtomicBool::new(false));
    let (closed, sums) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (db, closed) = (db.clone(), Arc::clone(&closed));
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(100 + w);
                for _ in 0..2_000 * scale() {
                    let (from, to) = (rng.u64(0..ACCOUNTS), rng.u64(0..ACCOUNTS));
                    if from == to {
                        continue;
                    }
                    let close = rng.bool();
                    let outcome = db.update(|tx| {
                        let Some(a) = tx.get(&account(from))? else { return Ok(false) };
                        let a = decode(&a[..8]);
                        let b = tx.get(&account(to))?.map_or(0, |b| decode(&b[..8]));
                        let amount = if close { a } else { a.min(rng.u64(1..50)) };
                        if amount == a {
                            tx.delete(&account(from))?;
                        } else {
                            tx.put(&account(from), &balance(a - amount))?;
                        }
                        tx.put(&account(to), &balance(b + amount))?;
                        Ok(amount == a)
                    });
                    match outcome {
                        Ok(true) => {
                            closed.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(false) | Err(Error::Conflict) => {}
                        Err(e) => panic!("transfer: {e}"),
                    }
                }
            })
        })
        .collect();
    let readers = {
        let (db, sums) = (db.clone(), Arc::clone(&sums));
        spawn_readers(&done, move |round| {
            let snap = db.snapshot();
            let range = snap.range::<&[u8], _>(..).unwrap();
            let backward = round.is_multiple_of(2);
            let entries: Vec<_> = if backward { range.rev().collect() } else { range.collect() };
            let sum: u64 = entries.into_iter().map(|e| decode(&e.unwrap().1[..8])).sum();
            assert_eq!(sum, total, "scan sum (backward: {backward})");
            sums.fetch_add(1, Ordering::Relaxed);
        })
    };
    join_writers_then_readers(writers, &done, readers);
    let stats = db.stats();
    eprintln!(
        "bank with closures: {} accounts closed, {} scan sums checked, {} versions vacuumed, {} pruned",
        closed.load(Ordering::Relaxed),
        sums.load(Ordering::Relaxed),
        stats.versions_vacuumed,
        stats.versions_pruned
    );
    assert!(closed.load(Ordering::Relaxed) > 0 && sums.load(Ordering::Relaxed) > 0);
    db.check().unwrap();
}
