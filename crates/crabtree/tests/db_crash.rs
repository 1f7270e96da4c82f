//! Goal: multi-key transactions across keyspaces survive power loss at
//! any moment, at the `Db` level (issue 9; fault classes F1/F2 and F7 of
//! RELIABILITY.md, post-conditions P1-P4 and P6).
//!
//! Method: a `Db` on the simulated directory (`raw::open_db`) with 512-byte
//! pages, a small cache (overflow values, evictions), 16 KiB log segments
//! and vacuum every few milliseconds. After a history committed and closed
//! cleanly, three writer threads run transactions, each writing 1 to 3 of
//! 12 key names into all three keyspaces `a`, `b`, `c` (the same value:
//! transaction id, key version, payload; in `c` one write in four is a
//! delete instead) and a marker `m/<id>` into `a`. Each write's version is
//! the one it read plus one, so the transactions that wrote one key form a
//! chain (a conflict ends a transaction; the writer goes on with the
//! next). The database is `Immediate` or `Eventual` (drawn per state);
//! writers commit with `commit` or `commit_eventual` and wait for their
//! tickets now and then. A reader checks snapshots meanwhile (`a` and `b`
//! agree for every key, `c` too or is absent). Power fails after a random
//! number of I/O operations (damage drawn as in `crash_concurrent.rs`: drop
//! all, keep/drop/tear with garbage, keep/tear with garbage), then the
//! process "dies". One state in four loses power again during recovery
//! (F7) before the final recovery.
//!
//! Checks after recovery, against a ledger of every transaction that
//! reached its commit:
//! * all-or-nothing (P2): for every key name, `a` and `b` hold the same
//!   value, `c` the same or (that write's delete) nothing; every value is
//!   exactly the one its transaction wrote, and its marker is present;
//!   every present marker's writes are there (the key at that version or a
//!   later one); no conflicted transaction is present;
//! * no hole (P3): every present transaction's predecessors (the writers
//!   of the versions it read) are present, and so is every transaction
//!   whose commit returned before a present one began;
//! * P1: every transaction acknowledged durable (`commit` returned `Ok`
//!   under `Immediate`, or its ticket's `wait` returned `Ok`) is present;
//! * P4: `Db::check` passes;
//! * the database stays usable: more transactions commit, power fails
//!   again, and the next recovery passes every check again (what the first
//!   recovery found must still be there, what it did not must stay gone).
//!
//! `with_checkpoints_racing_the_commits` adds a thread forcing a
//! checkpoint (`raw::checkpoint_db`) every 0.2-3 ms while the writers
//! commit; otherwise only the store's background checkpointer runs (it
//! polls every 50 ms).
//!
//! Sizes: 400 crash states per test by default (CI, 5-10 s each on 2
//! cores), 20,000 with `CRABTREE_TEST_SIZE=long`;
//! `CRABTREE_DB_CRASH_STATES=n` chooses. A failure prints its state's
//! seed; `CRABTREE_SEED=<seed> CRABTREE_DB_CRASH_STATES=1` replays it (the
//! workload and the crash point are the same; threads make the
//! interleaving, so the replay is close but not exact). It also writes
//! the files as the crash left them, before the recovery that failed
//! (`<temp dir>/crabtree-db-crash-<seed>/`); recovery is deterministic
//! from them, so `CRABTREE_DB_CRASH_REPLAY=<that dir> cargo test --release
//! --test db_crash -- --ignored replay` reruns exactly that recovery.

mod common;

use common::crash::open_db;

use crabtree::io::{CrashModel, Dir, SimDir};
use crabtree::{Db, Durability, Error, Keyspace, Options};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const WRITERS: usize = 3;
/// Key names each keyspace holds.
const KEYS: u8 = 12;
/// Transactions per writer in the crash run.
const TXS_PER_WRITER: usize = 25;
const KEYSPACES: [&str; 3] = ["a", "b", "c"];

/// One write of a transaction (to all three keyspaces).
#[derive(Clone, Debug)]
struct Write {
    key: u8,
    version: u32,
    len: usize,
    /// In keyspace `c` a delete instead of the value.
    delete_c: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// `Error::Conflict`: nothing was logged, it must be absent.
    Conflict,
    /// Another error: present or absent.
    Failed,
    /// Returned `Ok`, not (yet) known durable; `done` is its place in the
    /// order commits returned.
    Committed { done: u64 },
    /// Acknowledged durable (or found after a recovery).
    Durable { done: u64 },
    /// Not found after a recovery: it must stay absent.
    Lost,
}

#[derive(Clone, Debug)]
struct TxRecord {
    writes: Vec<Write>,
    /// Writers of the versions this one read (0: the key was absent).
    preds: Vec<u64>,
    /// The number of commits that had returned when it began.
    begin_seq: u64,
    outcome: Outcome,
}

/// Every transaction that reached its commit, by id.
#[derive(Default)]
struct Ledger {
    next_id: AtomicU64,
    /// Commits returned so far (the `done` order).
    seq: AtomicU64,
    txs: Mutex<BTreeMap<u64, TxRecord>>,
}

impl Ledger {
    fn set(&self, id: u64, outcome: Outcome) {
        self.txs.lock().unwrap().get_mut(&id).expect("recorded before commit").outcome = outcome;
    }
}

fn data_key(key: u8) -> Vec<u8> {
    vec![b'k', b'/', key]
}

fn marker_key(id: u64) -> Vec<u8> {
    let mut key = b"m/".to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn marker_value(id: u64) -> Vec<u8> {
    let mut value = b"marker".to_vec();
    value.extend_from_slice(&id.to_le_bytes());
    value
}

fn value(id: u64, version: u32, len: usize) -> Vec<u8> {
    let mut value = Vec::with_capacity(12 + len);
    value.extend_from_slice(&id.to_le_bytes());
    value.extend_from_slice(&version.to_le_bytes());
    value.extend((0..len).map(|i| (id as usize * 131 + version as usize * 7 + i) as u8));
    value
}

/// `(id, version)` of a stored value; `None` if it is not one of ours.
fn decode(value: &[u8]) -> Option<(u64, u32)> {
    let id = u64::from_le_bytes(value.get(..8)?.try_into().ok()?);
    let version = u32::from_le_bytes(value.get(8..12)?.try_into().ok()?);
    Some((id, version))
}

fn options(rng: &mut fastrand::Rng, durability: Durability) -> Options {
    Options {
        page_size: 512,
        memory_budget: 512 * rng.usize(24..64),
        max_pages: 1 << 16,
        durability,
        log_segment_size: 16 * 1024,
        checkpoint_bytes: rng.u64(8 * 1024..64 * 1024),
        vacuum_interval: Some(Duration::from_millis(rng.u64(1..5))),
        update_retries: 32,
    }
}

fn keyspaces(db: &Db) -> crabtree::Result<[Keyspace; 3]> {
    Ok([db.keyspace(KEYSPACES[0])?, db.keyspace(KEYSPACES[1])?, db.keyspace(KEYSPACES[2])?])
}

/// How a writer commits.
#[derive(Clone, Copy)]
struct Mode {
    /// The database's durability: `commit` returning `Ok` is an
    /// acknowledgement only under `Immediate`.
    durability: Durability,
    /// How often (of 4) to commit with `commit_eventual` and a ticket.
    eventual: u8,
}

/// A writer: `count` transactions (fewer if an error other than a conflict
/// ends it: power is off).
fn writer(db: &Db, ks: &[Keyspace; 3], ledger: &Ledger, seed: u64, count: usize, mode: Mode) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut tickets: Vec<(u64, crabtree::CommitTicket)> = Vec::new();
    let immediate = mode.durability == Durability::Immediate;
    for _ in 0..count {
        let begin_seq = ledger.seq.load(Ordering::SeqCst);
        let mut tx = db.begin();
        let id = ledger.next_id.fetch_add(1, Ordering::SeqCst) + 1;
        let mut names: Vec<u8> = (0..KEYS).collect();
        rng.shuffle(&mut names);
        names.truncate(rng.usize(1..=3));
        let mut writes = Vec::new();
        let mut preds = Vec::new();
        let planned: crabtree::Result<()> = (|| {
            for &key in &names {
                let (pred, version) = match tx.get_in(&ks[0], &data_key(key))? {
                    Some(v) => decode(&v).unwrap_or_else(|| panic!("key {key} holds {v:?}, not a value of ours")),
                    None => (0, 0),
                };
                let len = if rng.u8(0..12) == 0 { rng.usize(600..1400) } else { rng.usize(0..40) };
                let write = Write { key, version: version + 1, len, delete_c: rng.u8(0..4) == 0 };
                let bytes = value(id, write.version, len);
                tx.put_in(&ks[0], &data_key(key), &bytes)?;
                tx.put_in(&ks[1], &data_key(key), &bytes)?;
                if write.delete_c {
                    tx.delete_in(&ks[2], &data_key(key))?;
                } else {
                    tx.put_in(&ks[2], &data_key(key), &bytes)?;
                }
                writes.push(write);
                preds.push(pred);
            }
            tx.put_in(&ks[0], &marker_key(id), &marker_value(id))
        })();
        if planned.is_err() {
            return;
        }
        let record = TxRecord { writes, preds, begin_seq, outcome: Outcome::Failed };
        ledger.txs.lock().unwrap().insert(id, record);
        let with_ticket = rng.u8(0..4) < mode.eventual;
        let outcome = if with_ticket { tx.commit_eventual().map(Some) } else { tx.commit().map(|()| None) };
        match outcome {
            Ok(ticket) => {
                let done = ledger.seq.fetch_add(1, Ordering::SeqCst) + 1;
                let durable = ticket.is_none() && immediate;
                ledger.set(id, if durable { Outcome::Durable { done } } else { Outcome::Committed { done } });
                if let Some(ticket) = ticket {
                    tickets.push((id, ticket));
                }
            }
            Err(Error::Conflict) => ledger.set(id, Outcome::Conflict),
            Err(_) => return,
        }
        if rng.u8(0..3) == 0 && !wait_tickets(ledger, &mut tickets) {
            return;
        }
    }
    wait_tickets(ledger, &mut tickets);
}

/// Waits for every pending ticket in order; marks each durable. `false`
/// once one fails (the log is poisoned).
fn wait_tickets(ledger: &Ledger, tickets: &mut Vec<(u64, crabtree::CommitTicket)>) -> bool {
    for (id, ticket) in tickets.drain(..) {
        if ticket.wait().is_err() {
            return false;
        }
        let mut txs = ledger.txs.lock().unwrap();
        let record = txs.get_mut(&id).expect("recorded");
        if let Outcome::Committed { done } = record.outcome {
            record.outcome = Outcome::Durable { done };
        }
    }
    true
}

/// Snapshots are consistent while the writers run: for every key name,
/// `a` and `b` agree, and `c` agrees or is absent. Returns the first
/// violation.
///
/// Reads after the power went off (`power.0` I/O operations of `power.1`)
/// count too (`late` counts them): after an I/O error fails a commit's
/// apply, the part it applied must stay invisible in the dying process.
fn reader(
    db: &Db,
    ks: &[Keyspace; 3],
    ledger: &Ledger,
    stop: &AtomicBool,
    power: (u64, &SimDir),
    late: &AtomicU64,
) -> Option<String> {
    while !stop.load(Ordering::SeqCst) {
        let snap = db.snapshot();
        for key in 0..KEYS {
            let read = |k: &Keyspace| snap.get_in(k, &data_key(key));
            let (Ok(a), Ok(b), Ok(c)) = (read(&ks[0]), read(&ks[1]), read(&ks[2])) else { return None };
            // Reads after the power went off (I/O failing, the engine
            // poisoned) must be consistent too: a commit whose apply failed
            // half-way holds the watermark below it (`Oracle::fail`).
            if power.1.op_count() >= power.0 {
                late.fetch_add(1, Ordering::Relaxed);
            }
            if a != b || (c.is_some() && c != a) {
                let writer = |v: &Option<Vec<u8>>| v.as_deref().and_then(decode);
                let txs = ledger.txs.lock().unwrap();
                let record = |v| writer(v).and_then(|(id, _)| txs.get(&id).cloned());
                return Some(format!(
                    "snapshot at {}: key {key}: a {:?} b {:?} c {:?} (id, version); a's tx {:?}, c's tx {:?}",
                    snap.timestamp(),
                    writer(&a),
                    writer(&b),
                    writer(&c),
                    record(&a),
                    record(&c)
                ));
            }
        }
        std::thread::yield_now();
    }
    None
}

/// Every entry of keyspace `ks`.
fn scan(db: &Db, ks: &Keyspace) -> BTreeMap<Vec<u8>, Vec<u8>> {
    db.snapshot().range_in::<&[u8], _>(ks, ..).unwrap().map(Result::unwrap).collect()
}

/// All the post-conditions on a recovered database (module doc); returns
/// how many transactions are present.
fn check_recovered(db: &Db, ledger: &Ledger, context: &str) -> usize {
    db.check().unwrap_or_else(|e| panic!("{context}: check: {e}"));
    let names = db.keyspaces();
    for name in KEYSPACES {
        assert!(names.iter().any(|n| n == name), "{context}: keyspace {name} lost: {names:?}");
    }
    let ks = keyspaces(db).unwrap();
    let [a, b, c] = [scan(db, &ks[0]), scan(db, &ks[1]), scan(db, &ks[2])];
    let txs = ledger.txs.lock().unwrap();
    let mut present = BTreeSet::new();
    for (key, v) in a.range(b"m/".to_vec()..b"m0".to_vec()) {
        let id = u64::from_be_bytes(key[2..].try_into().unwrap_or_else(|_| panic!("{context}: marker key {key:?}")));
        assert_eq!(v, &marker_value(id), "{context}: marker {id}");
        present.insert(id);
    }
    let mut versions = BTreeMap::new();
    for key in 0..KEYS {
        let k = data_key(key);
        let (va, vb, vc) = (a.get(&k), b.get(&k), c.get(&k));
        if va != vb {
            let who = |v: Option<&Vec<u8>>| v.and_then(|v| decode(v)).map(|(id, ver)| (id, ver, txs.get(&id).cloned()));
            panic!(
                "{context}: key {key}: keyspaces a and b differ (half a transaction): a {:?}, b {:?}, c {:?}",
                who(va),
                who(vb),
                who(vc)
            );
        }
        let Some(va) = va else {
            assert_eq!(vc, None, "{context}: key {key}: in c, not in a");
            continue;
        };
        let (id, version) = decode(va).unwrap_or_else(|| panic!("{context}: key {key}: {va:?} is not ours"));
        let record = txs.get(&id).unwrap_or_else(|| panic!("{context}: key {key}: value of tx {id}, never committed"));
        let write = record.writes.iter().find(|w| w.key == key);
        let write = write.unwrap_or_else(|| panic!("{context}: key {key}: tx {id} did not write it"));
        assert_eq!(write.version, version, "{context}: key {key}: tx {id}");
        assert_eq!(va, &value(id, version, write.len), "{context}: key {key}: tx {id}: value bytes");
        let want_c = if write.delete_c { None } else { Some(va) };
        assert_eq!(vc, want_c, "{context}: key {key}: keyspace c (tx {id}, delete {})", write.delete_c);
        assert!(present.contains(&id), "{context}: key {key} holds tx {id}'s value, its marker is missing");
        versions.insert(key, version);
    }
    assert_eq!(a.len(), present.len() + versions.len(), "{context}: keyspace a has entries of no one");
    assert_eq!(b.len(), versions.len(), "{context}: keyspace b has entries of no one");
    assert!(c.keys().all(|k| k.len() == 3 && k.starts_with(b"k/")), "{context}: keyspace c has entries of no one");
    let mut latest_begin = 0;
    for &id in &present {
        let record = txs.get(&id).unwrap_or_else(|| panic!("{context}: marker of tx {id}, never committed"));
        assert!(
            !matches!(record.outcome, Outcome::Conflict | Outcome::Lost),
            "{context}: tx {id} present, but it conflicted or was gone after an earlier recovery: {record:?}"
        );
        for write in &record.writes {
            let now = versions.get(&write.key).copied().unwrap_or(0);
            assert!(
                now >= write.version,
                "{context}: tx {id} present, but key {} is at version {now} < its {} (half a transaction)",
                write.key,
                write.version
            );
        }
        for pred in record.preds.iter().filter(|&&p| p != 0) {
            assert!(present.contains(pred), "{context}: tx {id} present, tx {pred} it read from is not (a hole)");
        }
        latest_begin = latest_begin.max(record.begin_seq);
    }
    for (id, record) in txs.iter() {
        match record.outcome {
            Outcome::Durable { .. } => {
                assert!(present.contains(id), "{context}: tx {id} acknowledged durable, lost: {record:?}")
            }
            Outcome::Committed { done } if done <= latest_begin => assert!(
                present.contains(id),
                "{context}: tx {id} returned (commit {done}) before a present tx began (after {latest_begin}), lost"
            ),
            _ => {}
        }
    }
    present.len()
}

/// After a recovery was checked: what is present is durable from now on,
/// what is absent must stay so.
fn settle(ledger: &Ledger, db: &Db) {
    let ks = keyspaces(db).unwrap();
    let markers = scan(db, &ks[0]);
    for (id, record) in ledger.txs.lock().unwrap().iter_mut() {
        let present = markers.contains_key(&marker_key(*id));
        record.outcome = match (record.outcome, present) {
            (Outcome::Committed { done } | Outcome::Durable { done }, true) => Outcome::Durable { done },
            (Outcome::Failed, true) => Outcome::Durable { done: 0 },
            (_, false) => Outcome::Lost,
            (outcome, true) => outcome,
        };
    }
}

/// The process dies: power fails, then every handle goes.
fn die(dir: &SimDir, db: Db) {
    dir.crash();
    drop(db);
}

/// Runs `count` transactions on this thread (the history, and the round
/// after recovery): no crash, so no commit may fail.
fn run_clean(db: &Db, ledger: &Ledger, durability: Durability, seed: u64, count: usize, context: &str) {
    let ks = keyspaces(db).unwrap_or_else(|e| panic!("{context}: keyspaces: {e}"));
    writer(db, &ks, ledger, seed, count, Mode { durability, eventual: 2 });
    let txs = ledger.txs.lock().unwrap();
    let failed: Vec<_> = txs.iter().filter(|(_, r)| r.outcome == Outcome::Failed).collect();
    assert!(failed.is_empty(), "{context}: commits failed without a crash: {failed:?}");
}

#[derive(Default)]
struct Counts {
    states: u64,
    cut_short: u64,
    recovery_crashes: u64,
    late_reads: AtomicU64,
    present: u64,
    ledger: u64,
    /// The files the state's latest recovery started from.
    crashed: Vec<(String, Vec<u8>)>,
}

/// What the crash run does besides the writers.
#[derive(Clone, Copy)]
struct Extras {
    /// A thread forcing a checkpoint at this interval while the writers
    /// run (`None`: only the store's background checkpointer, which polls
    /// every 50 ms).
    racing_checkpoints: Option<Duration>,
}

/// The writers (and the reader, and the checkpoint thread if asked) on
/// `db` until each writer is done or stopped by an error. `power`: the
/// I/O operation count at which power goes off (for the reader). Returns
/// the reader's violation.
#[allow(clippy::too_many_arguments)]
fn crash_run(
    db: &Db,
    ledger: &Ledger,
    seeds: &[u64],
    mode: Mode,
    extras: Extras,
    dir: &SimDir,
    power: u64,
    late: &AtomicU64,
) -> Option<String> {
    let ks = keyspaces(db).unwrap_or_else(|e| panic!("keyspaces: {e}"));
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let writers: Vec<_> = seeds
            .iter()
            .map(|&seed| {
                let ks = &ks;
                scope.spawn(move || writer(db, ks, ledger, seed, TXS_PER_WRITER, mode))
            })
            .collect();
        let reader = scope.spawn(|| reader(db, &ks, ledger, &stop, (power, dir), late));
        if let Some(every) = extras.racing_checkpoints {
            let stop = &stop;
            scope.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if crabtree::raw::checkpoint_db(db).is_err() {
                        return;
                    }
                    std::thread::sleep(every);
                }
            });
        }
        for writer in writers {
            writer.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        reader.join().unwrap()
    })
}

/// The crash model, durability and options of the state `seed`, and the
/// generator the rest of the state draws from.
fn setup(seed: u64) -> (CrashModel, Durability, Options, fastrand::Rng) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let model = match rng.u8(0..3) {
        0 => CrashModel { keep: 0, drop: 1, tear: 0, garbage: 0, fsync_failure_drops_pending: true },
        1 => CrashModel { keep: 1, drop: 1, tear: 1, garbage: 50, fsync_failure_drops_pending: true },
        _ => CrashModel { keep: 1, drop: 0, tear: 1, garbage: 100, fsync_failure_drops_pending: true },
    };
    let durability = if rng.bool() { Durability::Immediate } else { Durability::Eventual };
    let options = options(&mut rng, durability);
    (model, durability, options, rng)
}

/// The files of `dir` as they are now (after a crash: what the next
/// recovery starts from).
fn images(dir: &SimDir) -> Vec<(String, Vec<u8>)> {
    let names = dir.list().unwrap();
    names.into_iter().filter_map(|name| Some((name.clone(), dir.disk(&name)?.durable_image()))).collect()
}

/// Writes the files a failed recovery started from (module doc).
fn dump(seed: u64, files: &[(String, Vec<u8>)]) -> std::io::Result<std::path::PathBuf> {
    let path = std::env::temp_dir().join(format!("crabtree-db-crash-{seed}"));
    std::fs::create_dir_all(&path)?;
    std::fs::write(path.join("seed"), seed.to_string())?;
    for (name, bytes) in files {
        std::fs::write(path.join(format!("file-{name}")), bytes)?;
    }
    Ok(path)
}

fn one_state(seed: u64, ops_max: u64, racing: bool, counts: &mut Counts) {
    let (model, durability, options, mut rng) = setup(seed);
    let crash_after = rng.u64(0..ops_max);
    let context = format!(
        "seed {seed} (CRABTREE_SEED={seed}), {durability:?}, model {model:?}, power off after {crash_after} ops"
    );
    let dir = SimDir::new(seed, model);
    let ledger = Ledger::default();
    // A history, closed cleanly: recovery starts from a checkpoint with a
    // free list, and every key has a chain to extend.
    {
        let db = open_db(&dir, options.clone()).unwrap_or_else(|e| panic!("{context}: create: {e}"));
        run_clean(&db, &ledger, durability, rng.u64(..), 20, &context);
    }
    // Every history commit is durable after the clean close.
    for record in ledger.txs.lock().unwrap().values_mut() {
        if let Outcome::Committed { done } = record.outcome {
            record.outcome = Outcome::Durable { done };
        }
    }
    let db = open_db(&dir, options.clone()).unwrap_or_else(|e| panic!("{context}: open: {e}"));
    let started = dir.op_count();
    dir.power_off_after(crash_after);
    let seeds: Vec<u64> = (0..WRITERS).map(|_| rng.u64(..)).collect();
    let mode = Mode { durability, eventual: rng.u8(0..5) };
    let every = Duration::from_micros(rng.u64(200..3000));
    let extras = Extras { racing_checkpoints: racing.then_some(every) };
    let violation = crash_run(&db, &ledger, &seeds, mode, extras, &dir, started + crash_after, &counts.late_reads);
    if let Some(violation) = violation {
        panic!("{context}: reader: {violation}");
    }
    let used = dir.op_count() - started;
    counts.cut_short += u64::from(used > crash_after);
    die(&dir, db);
    counts.crashed = images(&dir);
    // F7: power fails again while recovering.
    let mut context = context;
    if rng.u8(0..4) == 0 {
        let before = dir.op_count();
        let again = rng.u64(0..300);
        dir.power_off_after(again);
        let reopened = open_db(&dir, options.clone());
        let cut = dir.op_count() - before > again;
        context = format!(
            "{context}, power off again after {again} ops of recovery ({})",
            if cut { "cut" } else { "not cut" }
        );
        match reopened {
            Ok(db) => die(&dir, db),
            Err(_) => dir.crash(),
        }
        counts.crashed = images(&dir);
        counts.recovery_crashes += u64::from(cut);
    }
    let db = open_db(&dir, options.clone()).unwrap_or_else(|e| panic!("{context}: recovery: {e}"));
    let present = check_recovered(&db, &ledger, &format!("{context}: after the crash"));
    settle(&ledger, &db);
    // Usable: more transactions commit and are durable, across another
    // power loss.
    let context = format!("{context}: after the second crash");
    run_clean(&db, &ledger, durability, rng.u64(..), 6, &context);
    die(&dir, db);
    counts.crashed = images(&dir);
    let db = open_db(&dir, options).unwrap_or_else(|e| panic!("{context}: recovery: {e}"));
    check_recovered(&db, &ledger, &context);
    counts.states += 1;
    counts.present += present as u64;
    counts.ledger += ledger.txs.lock().unwrap().len() as u64;
}

/// I/O operations of an uncrashed run of the workload, so crash points
/// spread over all of it.
fn ops_of_a_run(racing: bool) -> u64 {
    let mut rng = fastrand::Rng::with_seed(1);
    let dir = SimDir::new(1, CrashModel::default());
    let ledger = Ledger::default();
    let db = open_db(&dir, options(&mut rng, Durability::Immediate)).unwrap();
    let started = dir.op_count();
    let seeds: Vec<u64> = (0..WRITERS as u64).collect();
    let mode = Mode { durability: Durability::Immediate, eventual: 1 };
    let extras = Extras { racing_checkpoints: racing.then_some(Duration::from_millis(1)) };
    let late = AtomicU64::new(0);
    assert_eq!(crash_run(&db, &ledger, &seeds, mode, extras, &dir, u64::MAX, &late), None, "uncrashed run");
    dir.op_count() - started
}

/// Runs the crash states (module doc); `racing`: with the checkpoint
/// thread.
fn run_states(name: &str, racing: bool) {
    let states: u64 = match std::env::var("CRABTREE_DB_CRASH_STATES") {
        Ok(n) => n.parse().expect("CRABTREE_DB_CRASH_STATES must be a number"),
        Err(_) if common::long() => 20_000,
        Err(_) => 400,
    };
    let base = common::seed(name);
    // Thread timing moves the count: take the median of three runs.
    let mut runs = [ops_of_a_run(racing), ops_of_a_run(racing), ops_of_a_run(racing)];
    runs.sort_unstable();
    let ops_max = runs[1] * 5 / 4;
    let started = std::time::Instant::now();
    let mut counts = Counts::default();
    for i in 0..states {
        let seed = base.wrapping_add(i);
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| one_state(seed, ops_max, racing, &mut counts)));
        if let Err(panic) = outcome {
            eprintln!("{name}: state {i} failed; replay with CRABTREE_SEED={seed} CRABTREE_DB_CRASH_STATES=1");
            match dump(seed, &counts.crashed) {
                Ok(path) => eprintln!(
                    "{name}: the files its last recovery started from are in {}; rerun that recovery with \
                     CRABTREE_DB_CRASH_REPLAY={} (module doc)",
                    path.display(),
                    path.display()
                ),
                Err(e) => eprintln!("{name}: could not write the crashed files: {e}"),
            }
            std::panic::resume_unwind(panic);
        }
        if (i + 1) % 1000 == 0 {
            eprintln!("{name}: {} states, {:.0} s", i + 1, started.elapsed().as_secs_f64());
        }
    }
    eprintln!(
        "{name}: {} crash states ({} cut the workload short, {} lost power again during recovery), \
         {} of {} transactions present, {ops_max} I/O ops max, {} key reads after power off (all checked), {:.1} s",
        counts.states,
        counts.cut_short,
        counts.recovery_crashes,
        counts.present,
        counts.ledger,
        counts.late_reads.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    assert!(states < 20 || counts.cut_short * 4 >= states, "too few crashes landed inside the workload");
    assert!(states < 20 || counts.recovery_crashes > 0, "no crash landed inside recovery");
}

#[test]
fn multi_key_transactions_across_keyspaces_survive_power_loss() {
    run_states("db_crash", false);
}

/// The same with a thread forcing a checkpoint every 0.2-3 ms while the
/// writers commit. It failed about one state in 100-150 before the
/// checkpoint's write-back pass waited for eviction batches in flight: the
/// recovered tree had a page zeroed, torn or older than the log said
/// ("checksum mismatch: stored 0x00000000", "page in use cannot be rebuilt
/// ... no image of it after LSN", "overflow chain holds 633 of 942 bytes",
/// broken right-links, leaked pages), or a transaction was in one keyspace
/// and not another.
#[test]
fn with_checkpoints_racing_the_commits() {
    run_states("db_crash_racing_checkpoints", true);
}

/// The two tests below arm the same failpoint, which is process-wide: one
/// at a time (each filters its own thread, but arming replaces the other's
/// action and clearing removes it).
static PRUNE_FAILPOINT: Mutex<()> = Mutex::new(());

/// Commits new keys `key-K-new-J` between the `key-K` keys of `db` until
/// a full leaf's prune fails after its `fail_after`-th removal (failpoint
/// `prune.removed`, this thread only: the crash-state tests of this file
/// run beside it), and asserts that one did.
fn fill_leaves_until_a_prune_fails(db: &Db, fail_after: u32) {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = std::sync::Arc::clone(&hits);
    let me = std::thread::current().id();
    crabtree::failpoint::set("prune.removed", move || {
        if std::thread::current().id() == me && counter.fetch_add(1, Ordering::SeqCst) + 1 == fail_after {
            return Err(Error::InvalidArgument("injected failure mid-prune".into()));
        }
        Ok(())
    });
    let mut failed = false;
    for k in 0..300u32 {
        let mut tx = db.begin();
        for j in 0..6 {
            tx.put(format!("key-{k:05}-new-{j}").as_bytes(), &[9; 40]).unwrap();
        }
        if tx.commit().is_err() {
            failed = true;
            break;
        }
    }
    crabtree::failpoint::clear("prune.removed");
    assert!(failed, "fail after {fail_after}: no prune reached the failpoint");
}

/// The same for tombstones: 300 keys deleted while a snapshot pinned their
/// values, so each leaf holds (tombstone, value) pairs; once the snapshot
/// is gone, new keys between them fill the leaves, whose pruning takes
/// both of each pair (the value first, then the tombstone that hides it)
/// and fails after the `n`-th removal. No deleted key may come back, in
/// the dying process or after power loss. (Removed tombstone first, a
/// failure after one removal would bring a deleted value back.)
#[test]
fn a_tombstone_prune_that_fails_half_way_brings_no_deleted_key_back() {
    let _alone = PRUNE_FAILPOINT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for fail_after in [1u32, 2, 3, 8] {
        let dir = SimDir::new(
            u64::from(fail_after) + 100,
            CrashModel { keep: 0, drop: 1, tear: 0, garbage: 0, fsync_failure_drops_pending: true },
        );
        let options = || Options { vacuum_interval: None, ..Options::default() };
        let db = open_db(&dir, options()).unwrap();
        db.update(|tx| (0..300u32).try_for_each(|k| tx.put(format!("key-{k:05}").as_bytes(), &[7; 40]))).unwrap();
        let pin = db.snapshot();
        db.update(|tx| (0..300u32).try_for_each(|k| tx.delete(format!("key-{k:05}").as_bytes()))).unwrap();
        drop(pin);
        let pruned_before = db.stats().versions_pruned;
        fill_leaves_until_a_prune_fails(&db, fail_after);
        assert!(db.stats().versions_pruned > pruned_before, "fail after {fail_after}: nothing was pruned");
        let all_deleted = |db: &Db, when: &str| {
            let snap = db.snapshot();
            for k in 0..300u32 {
                assert_eq!(
                    snap.get(format!("key-{k:05}").as_bytes()).unwrap(),
                    None,
                    "fail after {fail_after}: key {k} {when}"
                );
            }
        };
        all_deleted(&db, "before the crash");
        dir.crash();
        drop(db);
        let db = open_db(&dir, options()).unwrap();
        all_deleted(&db, "after recovery");
        db.check().unwrap_or_else(|error| panic!("fail after {fail_after}: {error}"));
    }
}

/// Error injection in leaf pruning: a commit whose insert prunes a full
/// leaf fails after the `n`-th version removed (failpoint `prune.removed`),
/// for several `n`. The leaf is left partly pruned (each removal logged),
/// the commit's apply failed: no snapshot of this process may see part of
/// it nor an older value, and after power loss every key holds its last
/// committed value and `check()` passes.
#[test]
fn a_leaf_prune_that_fails_half_way_loses_nothing() {
    let _alone = PRUNE_FAILPOINT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for fail_after in [1u32, 2, 5, 9] {
        let dir = SimDir::new(
            u64::from(fail_after),
            CrashModel { keep: 0, drop: 1, tear: 0, garbage: 0, fsync_failure_drops_pending: true },
        );
        let options = || Options { vacuum_interval: None, ..Options::default() };
        let db = open_db(&dir, options()).unwrap();
        // Ten versions of 300 keys while a snapshot pins them all.
        let pin = db.snapshot();
        for round in 0..10u8 {
            let mut tx = db.begin();
            for k in 0..300u32 {
                tx.put(format!("key-{k:05}").as_bytes(), &[round; 40]).unwrap();
            }
            tx.commit().unwrap();
        }
        drop(pin);
        fill_leaves_until_a_prune_fails(&db, fail_after);
        // Every old key reads its last value (round 9), in the dying
        // process and after recovery.
        let last_values_stand = |db: &Db, when: &str| {
            let snap = db.snapshot();
            for k in 0..300u32 {
                assert_eq!(
                    snap.get(format!("key-{k:05}").as_bytes()).unwrap(),
                    Some(vec![9u8; 40]),
                    "fail after {fail_after}: key {k} {when}"
                );
            }
        };
        last_values_stand(&db, "before the crash");
        dir.crash();
        drop(db);
        let db = open_db(&dir, options()).unwrap();
        last_values_stand(&db, "after recovery");
        db.check().unwrap_or_else(|error| panic!("fail after {fail_after}: {error}"));
    }
}

/// Reruns the recovery a failed state dumped (module doc) and checks the
/// result; the ledger is not dumped, so only `Db::check` and the three
/// keyspaces' presence. Ignored: it needs `CRABTREE_DB_CRASH_REPLAY`.
#[test]
#[ignore = "replays a dumped crash state named by CRABTREE_DB_CRASH_REPLAY"]
fn replay() {
    let path = std::path::PathBuf::from(std::env::var("CRABTREE_DB_CRASH_REPLAY").expect("CRABTREE_DB_CRASH_REPLAY"));
    let seed: u64 = std::fs::read_to_string(path.join("seed")).unwrap().trim().parse().unwrap();
    let (model, _, options, _) = setup(seed);
    let dir = SimDir::new(seed, model);
    for entry in std::fs::read_dir(&path).unwrap() {
        let entry = entry.unwrap();
        let file = entry.file_name().into_string().unwrap();
        let Some(name) = file.strip_prefix("file-") else { continue };
        dir.open(name, true).unwrap();
        dir.disk(name).unwrap().set_durable_image(std::fs::read(entry.path()).unwrap());
    }
    dir.sync().unwrap();
    let db = open_db(&dir, options).unwrap_or_else(|e| panic!("recovery: {e}"));
    db.check().unwrap_or_else(|e| panic!("check: {e}"));
    let names = db.keyspaces();
    assert!(KEYSPACES.iter().all(|k| names.iter().any(|n| n == k)), "keyspaces: {names:?}");
}
