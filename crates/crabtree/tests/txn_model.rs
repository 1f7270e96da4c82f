//! Goal: transactions and snapshots behave exactly like a simple model of
//! snapshot isolation, whatever the interleaving of operations, including
//! reopen, checkpoints, power loss and vacuum (F12 of RELIABILITY.md).
//!
//! Method: proptest generates a sequence of steps over up to three open
//! transactions and two snapshots (begin, put, delete, get, range in both
//! directions with the ends interleaved, commit, rollback, snapshot reads,
//! vacuum, clean reopen, checkpoint, crash) and runs it against a `Db` on
//! the simulated disk (`raw::open_db` on a `SimDir`) and against a model:
//! a `BTreeMap` per committed state, each transaction a start state plus
//! its buffered writes, and first-committer-wins computed from which keys
//! each commit wrote. Every read must match; a commit must conflict
//! exactly when the model says so. The background vacuum runs every
//! millisecond meanwhile. Keys are drawn from a small alphabet with zero
//! bytes and lengths around the 8-byte group of the key encoding.
//!
//! `Checkpoint` forces one (`raw::checkpoint_db`). `Crash` is power loss
//! (unsynced writes kept, dropped or torn, with garbage, drawn from the
//! case's seed), then recovery: open transactions and snapshots are gone.
//! Each case runs `Immediate` or `Eventual` (drawn). Under `Immediate`
//! every commit that returned `Ok` was durable, so the recovered state must
//! equal the model's last committed state. Under `Eventual` it must equal
//! the model state after some prefix of the commits that contains every
//! commit made durable by a checkpoint or a clean reopen (the log is
//! recovered as a prefix and commits append in order); the model then
//! continues from that prefix. `Db::check` passes after every recovery.
//! Cases: 1,000 x `CRABTREE_TEST_SCALE` (default 1; about 4 s), RELIABILITY.md's
//! quick size for F12; `CRABTREE_TEST_SIZE=long` multiplies by 100 more.

mod common;

use common::crash::open_db;
use crabtree::io::{CrashModel, SimDir};
use crabtree::{Db, Durability, Error, Options, Snapshot, Transaction};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Clone, Debug)]
enum Step {
    Begin(usize),
    Put(usize, Vec<u8>, Vec<u8>),
    Delete(usize, Vec<u8>),
    Get(usize, Vec<u8>),
    Range(usize, Bound<Vec<u8>>, Bound<Vec<u8>>, Vec<bool>),
    Commit(usize),
    Rollback(usize),
    Snapshot(usize),
    SnapGet(usize, Vec<u8>),
    SnapRange(usize, Bound<Vec<u8>>, Bound<Vec<u8>>, Vec<bool>),
    DropSnapshot(usize),
    Vacuum,
    Reopen,
    Checkpoint,
    Crash,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(255u8)], 0..10),
        (0u8..12).prop_map(|i| vec![b'k', i]),
    ]
}

fn bound() -> impl Strategy<Value = Bound<Vec<u8>>> {
    prop_oneof![Just(Bound::Unbounded), key().prop_map(Bound::Included), key().prop_map(Bound::Excluded)]
}

fn step() -> impl Strategy<Value = Step> {
    let tx = 0usize..3;
    let snap = 0usize..2;
    let value = proptest::collection::vec(any::<u8>(), 0..4);
    let ends = proptest::collection::vec(any::<bool>(), 0..12);
    prop_oneof![
        2 => tx.clone().prop_map(Step::Begin),
        6 => (tx.clone(), key(), value).prop_map(|(t, k, v)| Step::Put(t, k, v)),
        2 => (tx.clone(), key()).prop_map(|(t, k)| Step::Delete(t, k)),
        3 => (tx.clone(), key()).prop_map(|(t, k)| Step::Get(t, k)),
        3 => (tx.clone(), bound(), bound(), ends.clone()).prop_map(|(t, a, b, e)| Step::Range(t, a, b, e)),
        3 => tx.clone().prop_map(Step::Commit),
        1 => tx.prop_map(Step::Rollback),
        1 => snap.clone().prop_map(Step::Snapshot),
        2 => (snap.clone(), key()).prop_map(|(s, k)| Step::SnapGet(s, k)),
        2 => (snap.clone(), bound(), bound(), ends).prop_map(|(s, a, b, e)| Step::SnapRange(s, a, b, e)),
        1 => snap.prop_map(Step::DropSnapshot),
        1 => Just(Step::Vacuum),
        1 => Just(Step::Reopen),
        1 => Just(Step::Checkpoint),
        1 => Just(Step::Crash),
    ]
}

/// The model of one open transaction.
struct ModelTx {
    start: Map,
    /// Commits seen at start (index into `Model::commits`).
    start_seq: usize,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl ModelTx {
    fn view(&self) -> Map {
        let mut view = self.start.clone();
        for (k, v) in &self.writes {
            match v {
                Some(v) => view.insert(k.clone(), v.clone()),
                None => view.remove(k),
            };
        }
        view
    }
}

struct Model {
    state: Map,
    /// Keys written by each commit, in commit order.
    commits: Vec<BTreeSet<Vec<u8>>>,
    /// The state after each commit (`history[0]`: before the first).
    history: Vec<Map>,
    /// Commits known durable (a prefix of `commits`).
    durable: usize,
}

impl Model {
    /// Everything committed so far is durable.
    fn all_durable(&mut self) {
        self.durable = self.commits.len();
    }
}

fn in_range(key: &[u8], lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>) -> bool {
    let above = match lower {
        Bound::Unbounded => true,
        Bound::Included(b) => key >= b.as_slice(),
        Bound::Excluded(b) => key > b.as_slice(),
    };
    let below = match upper {
        Bound::Unbounded => true,
        Bound::Included(b) => key <= b.as_slice(),
        Bound::Excluded(b) => key < b.as_slice(),
    };
    above && below
}

/// The model's answer to a range read with the ends interleaved as `ends`
/// says (true = front), then the rest from the front.
fn model_range(view: &Map, lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>, ends: &[bool]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut entries: std::collections::VecDeque<_> =
        view.iter().filter(|(k, _)| in_range(k, lower, upper)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut out = Vec::new();
    for &front in ends {
        match if front { entries.pop_front() } else { entries.pop_back() } {
            Some(e) => out.push(e),
            None => break,
        }
    }
    out.extend(entries);
    out
}

fn real_range(mut iter: crabtree::Iter, ends: &[bool]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for &front in ends {
        match if front { iter.next() } else { iter.next_back() } {
            Some(e) => out.push(e.unwrap()),
            None => return out,
        }
    }
    out.extend(iter.map(Result::unwrap));
    out
}

fn options(durability: Durability) -> Options {
    Options {
        vacuum_interval: Some(Duration::from_millis(1)),
        memory_budget: 1 << 20,
        page_size: 512,
        durability,
        log_segment_size: 16 * 1024,
        ..Options::default()
    }
}

/// Every entry of the default keyspace.
fn contents(db: &Db) -> Map {
    db.snapshot().range::<&[u8], _>(..).unwrap().map(Result::unwrap).collect()
}

/// After a crash: checks the recovered `db` against the model (module
/// doc) and moves the model to the prefix it found.
fn recovered(db: &Db, model: &mut Model, durability: Durability) {
    db.check().unwrap();
    let all = contents(db);
    match durability {
        Durability::Immediate => {
            assert_eq!(all, model.state, "state after crash: every commit returned Ok is durable");
        }
        _ => {
            let kept = (model.durable..=model.commits.len()).rev().find(|&n| model.history[n] == all);
            let Some(kept) = kept else {
                panic!(
                    "state after crash is the state after none of commits {}..={} (durable: {}): {all:?}",
                    model.durable,
                    model.commits.len(),
                    model.durable
                );
            };
            COMMITS_LOST.fetch_add((model.commits.len() - kept) as u64, Ordering::Relaxed);
            model.commits.truncate(kept);
            model.history.truncate(kept + 1);
            model.state = all;
        }
    }
    // What recovery found is in the durable log.
    model.all_durable();
}

/// Steps run over all cases (for the summary line): crashes, and crashes
/// under `Eventual` that lost commits which had returned `Ok`.
static CASES: AtomicU64 = AtomicU64::new(0);
static CRASHES: AtomicU64 = AtomicU64::new(0);
static CHECKPOINTS: AtomicU64 = AtomicU64::new(0);
static COMMITS_LOST: AtomicU64 = AtomicU64::new(0);

fn run(steps: Vec<Step>, durability: Durability, seed: u64) {
    let model_crash = CrashModel { keep: 1, drop: 1, tear: 1, garbage: 50, fsync_failure_drops_pending: true };
    let dir = SimDir::new(seed, model_crash);
    let mut db = Some(open_db(&dir, options(durability)).unwrap());
    let mut model = Model { state: Map::new(), commits: Vec::new(), history: vec![Map::new()], durable: 0 };
    let mut txs: Vec<Option<(Transaction, ModelTx)>> = (0..3).map(|_| None).collect();
    let mut snaps: Vec<Option<(Snapshot, Map)>> = (0..2).map(|_| None).collect();
    for step in steps {
        let handle = db.as_ref().unwrap();
        match step {
            Step::Begin(t) => {
                let tx = handle.begin();
                txs[t] = Some((
                    tx,
                    ModelTx { start: model.state.clone(), start_seq: model.commits.len(), writes: BTreeMap::new() },
                ));
            }
            Step::Put(t, k, v) => {
                if let Some((tx, m)) = &mut txs[t] {
                    tx.put(&k, &v).unwrap();
                    m.writes.insert(k, Some(v));
                }
            }
            Step::Delete(t, k) => {
                if let Some((tx, m)) = &mut txs[t] {
                    tx.delete(&k).unwrap();
                    m.writes.insert(k, None);
                }
            }
            Step::Get(t, k) => {
                if let Some((tx, m)) = &txs[t] {
                    assert_eq!(tx.get(&k).unwrap(), m.view().get(&k).cloned(), "tx get {k:?}");
                }
            }
            Step::Range(t, a, b, ends) => {
                if let Some((tx, m)) = &txs[t] {
                    let got = real_range(tx.range((a.clone(), b.clone())).unwrap(), &ends);
                    assert_eq!(got, model_range(&m.view(), &a, &b, &ends), "tx range {a:?}..{b:?} ends {ends:?}");
                }
            }
            Step::Commit(t) => {
                if let Some((mut tx, m)) = txs[t].take() {
                    let written: BTreeSet<Vec<u8>> = m.writes.keys().cloned().collect();
                    let conflict = model.commits[m.start_seq..].iter().any(|keys| !keys.is_disjoint(&written));
                    match tx.commit() {
                        Err(Error::Conflict) => assert!(conflict, "unexpected conflict"),
                        Ok(()) => {
                            assert!(!conflict, "missed a conflict");
                            if !written.is_empty() {
                                for (k, v) in m.writes {
                                    match v {
                                        Some(v) => model.state.insert(k, v),
                                        None => model.state.remove(&k),
                                    };
                                }
                                model.commits.push(written);
                                model.history.push(model.state.clone());
                                if durability == Durability::Immediate {
                                    model.all_durable();
                                }
                            }
                        }
                        Err(e) => panic!("commit: {e}"),
                    }
                    assert!(matches!(tx.get(b"x"), Err(Error::TransactionClosed)));
                }
            }
            Step::Rollback(t) => {
                if let Some((mut tx, _)) = txs[t].take() {
                    tx.rollback();
                }
            }
            Step::Snapshot(s) => snaps[s] = Some((handle.snapshot(), model.state.clone())),
            Step::SnapGet(s, k) => {
                if let Some((snap, m)) = &snaps[s] {
                    assert_eq!(snap.get(&k).unwrap(), m.get(&k).cloned(), "snapshot get {k:?}");
                }
            }
            Step::SnapRange(s, a, b, ends) => {
                if let Some((snap, m)) = &snaps[s] {
                    let got = real_range(snap.range((a.clone(), b.clone())).unwrap(), &ends);
                    assert_eq!(got, model_range(m, &a, &b, &ends), "snapshot range {a:?}..{b:?}");
                }
            }
            Step::DropSnapshot(s) => snaps[s] = None,
            Step::Vacuum => {
                handle.vacuum().unwrap();
            }
            Step::Reopen => {
                txs.iter_mut().for_each(|t| *t = None);
                snaps.iter_mut().for_each(|s| *s = None);
                drop(db.take());
                let reopened = open_db(&dir, options(durability)).unwrap();
                assert_eq!(contents(&reopened), model.state, "state after reopen");
                model.all_durable();
                db = Some(reopened);
            }
            Step::Checkpoint => {
                crabtree::raw::checkpoint_db(handle).unwrap();
                CHECKPOINTS.fetch_add(1, Ordering::Relaxed);
                // A checkpoint waits for its record to be durable: every
                // commit record before it is too.
                model.all_durable();
            }
            Step::Crash => {
                txs.iter_mut().for_each(|t| *t = None);
                snaps.iter_mut().for_each(|s| *s = None);
                dir.crash();
                drop(db.take());
                CRASHES.fetch_add(1, Ordering::Relaxed);
                let reopened = open_db(&dir, options(durability)).unwrap();
                recovered(&reopened, &mut model, durability);
                db = Some(reopened);
            }
        }
    }
    drop(txs);
    drop(snaps);
    let db = db.unwrap();
    db.vacuum().unwrap();
    db.check().unwrap();
    assert_eq!(contents(&db), model.state);
    if CASES.fetch_add(1, Ordering::Relaxed) + 1 == u64::from(cases()) {
        eprintln!(
            "txn_model: {} cases, {} crashes (under Eventual {} commits lost), {} checkpoints",
            cases(),
            CRASHES.load(Ordering::Relaxed),
            COMMITS_LOST.load(Ordering::Relaxed),
            CHECKPOINTS.load(Ordering::Relaxed)
        );
    }
}

fn cases() -> u32 {
    let scale: u32 = std::env::var("CRABTREE_TEST_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let long = if common::long() { 100 } else { 1 };
    1_000 * scale.max(1) * long
}

fn durability() -> impl Strategy<Value = Durability> {
    prop_oneof![Just(Durability::Immediate), Just(Durability::Eventual)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn transactions_match_the_model(
        steps in proptest::collection::vec(step(), 1..120),
        durability in durability(),
        seed in any::<u64>(),
    ) {
        run(steps, durability, seed);
    }
}

/// Many versions of few keys, so range batches end inside runs of
/// versions and the two ends of an iterator meet inside one.
#[test]
fn ranges_over_many_versions_match_the_model() {
    let mut steps = Vec::new();
    for round in 0..60u8 {
        steps.push(Step::Snapshot((round % 2) as usize));
        steps.push(Step::Begin(0));
        for k in 0..6u8 {
            if (round + k).is_multiple_of(5) {
                steps.push(Step::Delete(0, vec![b'k', k]));
            } else {
                steps.push(Step::Put(0, vec![b'k', k], vec![round, k]));
            }
        }
        steps.push(Step::Commit(0));
        let ends: Vec<bool> = (0..8).map(|i| (i + round).is_multiple_of(3)).collect();
        steps.push(Step::SnapRange((round % 2) as usize, Bound::Unbounded, Bound::Unbounded, ends));
    }
    run(steps.clone(), Durability::Immediate, 1);
    run(steps, Durability::Eventual, 2);
}
