//! Goal: real concurrent histories show none of the anomalies snapshot
//! isolation forbids (F11, quick tier).
//!
//! Method: threads run list-append transactions (Jepsen/Elle style) on a
//! few hot keys: each transaction reads some lists and appends its own
//! unique ids to some (reading the list first, then writing it back with
//! the id appended), and commits; a `Conflict` is recorded as aborted and
//! the work retried with fresh ids. Then the history is checked against
//! the final lists:
//! * every committed append is in its list exactly once, no aborted or
//!   unknown id is anywhere (lost update P4, aborted read G1a);
//! * every list a transaction read (less its own appends) is a prefix of
//!   the final list (intermediate or dirty reads G1b, order);
//! * reads are atomic: if a transaction saw any append of X (or of a
//!   transaction X saw, transitively), it sees X's appends on every key it
//!   read (read skew, G-single, fractured reads);
//! * the write-write and write-read dependency graph of the committed
//!   transactions is acyclic (G0, G1c).
//!
//! Size: RELIABILITY.md's F11 sizes: 100 histories of 2,000 transactions
//! (4 threads x 500) quick, each on a fresh database, and 5,000 histories
//! (10M transactions) with `CRABTREE_TEST_SIZE=long`; `CRABTREE_HISTORIES=n`
//! sets the count, `CRABTREE_TEST_SCALE` multiplies it. Commits are
//! `Eventual` (isolation is what is checked here, not durability, and an
//! fsync per commit would make the quick size take minutes). Seed from
//! `CRABTREE_SEED` (printed); history `i` runs with seed + i.

use crabtree::{Db, Error};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

const KEYS: u64 = 5;
const THREADS: u64 = 4;

#[derive(Clone, Debug, Default)]
struct Txn {
    /// Lists read, per key: what the snapshot held (own appends removed).
    reads: BTreeMap<u64, Vec<u64>>,
    /// Ids appended, per key, in order.
    appends: BTreeMap<u64, Vec<u64>>,
    committed: bool,
}

fn key(k: u64) -> Vec<u8> {
    format!("list-{k}").into_bytes()
}

fn decode(bytes: Option<Vec<u8>>) -> Vec<u64> {
    bytes.unwrap_or_default().chunks(8).map(|c| u64::from_le_bytes(c.try_into().expect("8-byte ids"))).collect()
}

fn encode(list: &[u64]) -> Vec<u8> {
    list.iter().flat_map(|id| id.to_le_bytes()).collect()
}

fn histories() -> u64 {
    let scale: u64 = std::env::var("CRABTREE_TEST_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
    let base = std::env::var("CRABTREE_HISTORIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if std::env::var("CRABTREE_TEST_SIZE").as_deref() == Ok("long") { 5_000 } else { 100 });
    base * scale
}

/// Transactions per thread in one history.
const PER_THREAD: u64 = 500;

/// Runs one transaction of random reads and appends; returns its record.
fn run_one(db: &Db, rng: &mut fastrand::Rng, next_id: &mut u64) -> Txn {
    let mut tx = db.begin();
    let mut record = Txn::default();
    for _ in 0..rng.usize(1..5) {
        let k = rng.u64(0..KEYS);
        let list = decode(tx.get(&key(k)).unwrap());
        let own = record.appends.get(&k).map_or(0, Vec::len);
        let (seen, mine) = list.split_at(list.len() - own);
        assert_eq!(mine, record.appends.get(&k).map_or(&[][..], Vec::as_slice), "reads its own appends, in order");
        record.reads.entry(k).or_insert_with(|| seen.to_vec());
        if rng.bool() {
            *next_id += 1;
            let mut list = list;
            list.push(*next_id);
            tx.put(&key(k), &encode(&list)).unwrap();
            record.appends.entry(k).or_default().push(*next_id);
        }
        // Let other transactions run in between, so they overlap.
        if rng.bool() {
            std::thread::yield_now();
        }
    }
    match tx.commit() {
        Ok(()) => record.committed = true,
        Err(Error::Conflict) => {}
        Err(e) => panic!("commit: {e}"),
    }
    record
}

#[test]
fn list_append_histories_show_no_si_anomaly() {
    let seed = std::env::var("CRABTREE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    eprintln!("history: seed {seed} (replay with CRABTREE_SEED={seed})");
    let (mut transactions, mut committed) = (0, 0);
    let count = histories();
    for i in 0..count {
        let (t, c) = one_history(seed.wrapping_add(i));
        (transactions, committed) = (transactions + t, committed + c);
    }
    eprintln!("history: {count} histories, {transactions} transactions, {committed} committed, checked");
}

/// Runs and checks one history; returns its transactions and commits.
fn one_history(seed: u64) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let options = crabtree::Options { durability: crabtree::Durability::Eventual, ..crabtree::Options::default() };
    let db = Db::open_with(dir.path().join("db.crab"), options).unwrap();
    let history = Arc::new(Mutex::new(Vec::new()));
    let per_thread = PER_THREAD;
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (db, history) = (db.clone(), Arc::clone(&history));
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed ^ t);
                let mut next_id = t << 40;
                for _ in 0..per_thread {
                    let record = run_one(&db, &mut rng, &mut next_id);
                    history.lock().unwrap().push(record);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let history = Arc::try_unwrap(history).unwrap().into_inner().unwrap();
    let snap = db.snapshot();
    let finals: BTreeMap<u64, Vec<u64>> = (0..KEYS).map(|k| (k, decode(snap.get(&key(k)).unwrap()))).collect();
    check(&history, &finals);
    let committed = history.iter().filter(|t| t.committed).count();
    assert!(committed * 4 > history.len(), "too few commits to mean anything (seed {seed})");
    (history.len(), committed)
}

fn check(history: &[Txn], finals: &BTreeMap<u64, Vec<u64>>) {
    // Who appended each id, and whether it committed.
    let mut writer: HashMap<u64, usize> = HashMap::new();
    for (t, txn) in history.iter().enumerate() {
        for id in txn.appends.values().flatten() {
            assert!(writer.insert(*id, t).is_none(), "id {id} appended twice");
        }
    }
    // 1. Committed appends exactly once, nothing else.
    for (k, list) in finals {
        let unique: HashSet<_> = list.iter().collect();
        assert_eq!(unique.len(), list.len(), "key {k}: an id appears twice");
        for id in list {
            let t = *writer.get(id).unwrap_or_else(|| panic!("key {k}: unknown id {id}"));
            assert!(history[t].committed, "key {k}: id {id} of an aborted transaction (G1a)");
        }
    }
    for txn in history.iter().filter(|t| t.committed) {
        for (k, ids) in &txn.appends {
            let list = &finals[k];
            let at: Vec<usize> =
                ids.iter().map(|id| list.iter().position(|x| x == id).expect("lost update (P4)")).collect();
            assert!(at.windows(2).all(|w| w[1] == w[0] + 1), "key {k}: a transaction's appends are not contiguous");
        }
    }
    // 2. Every read is a prefix of the final list.
    for (t, txn) in history.iter().enumerate() {
        for (k, seen) in &txn.reads {
            assert!(finals[k].starts_with(seen), "txn {t} read {seen:?} of key {k}, final {:?} (G1b)", finals[k]);
        }
    }
    // 3. Atomic reads: everything a transaction saw, directly or through
    // what those writers saw, shows on every key it read. The closure is
    // kept as one bit set per transaction, each built from those of the
    // transactions it saw (memoised, depth first; a cycle of "saw" is left
    // to check 4, which reports it).
    let saw_of: Vec<Vec<usize>> = history
        .iter()
        .map(|txn| {
            let set: HashSet<usize> = txn.reads.values().flatten().map(|id| writer[id]).collect();
            set.into_iter().collect()
        })
        .collect();
    let words = history.len().div_ceil(64);
    let mut closure: Vec<Option<Vec<u64>>> = vec![None; history.len()];
    for root in 0..history.len() {
        // Iterative depth-first: a node is finished once all it saw are.
        let mut stack = vec![(root, false)];
        let mut on_stack = vec![false; history.len()];
        while let Some((t, expanded)) = stack.pop() {
            if closure[t].is_some() {
                continue;
            }
            if !expanded {
                on_stack[t] = true;
                stack.push((t, true));
                for &x in &saw_of[t] {
                    if closure[x].is_none() && !on_stack[x] {
                        stack.push((x, false));
                    }
                }
                continue;
            }
            let mut bits = vec![0u64; words];
            for &x in &saw_of[t] {
                bits[x / 64] |= 1 << (x % 64);
                if let Some(theirs) = &closure[x] {
                    bits.iter_mut().zip(theirs).for_each(|(mine, theirs)| *mine |= theirs);
                }
            }
            on_stack[t] = false;
            closure[t] = Some(bits);
        }
    }
    // Where each id sits in its key's final list: a read (a prefix of it)
    // holds the id if and only if it is longer than that position.
    let position: HashMap<u64, usize> =
        finals.values().flat_map(|list| list.iter().enumerate().map(|(at, id)| (*id, at))).collect();
    for (t, txn) in history.iter().enumerate() {
        let bits = closure[t].as_ref().expect("every transaction's closure is built");
        let visible = (0..history.len()).filter(|x| bits[x / 64] & (1 << (x % 64)) != 0);
        for x in visible {
            for (k, ids) in &history[x].appends {
                if let Some(seen) = txn.reads.get(k) {
                    for id in ids {
                        assert!(
                            position.get(id).is_some_and(|&at| at < seen.len()),
                            "txn {t} saw txn {x} but not its append {id} to key {k} (read skew)"
                        );
                    }
                }
            }
        }
    }
    // 4. ww (list order) and wr (read) edges among committed transactions
    // form no cycle.
    let mut edges: HashMap<usize, HashSet<usize>> = HashMap::new();
    for list in finals.values() {
        for pair in list.windows(2) {
            let (a, b) = (writer[&pair[0]], writer[&pair[1]]);
            if a != b {
                edges.entry(a).or_default().insert(b);
            }
        }
    }
    for t in (0..history.len()).filter(|&t| history[t].committed) {
        for &x in &saw_of[t] {
            if x != t {
                edges.entry(x).or_default().insert(t);
            }
        }
    }
    let nodes: HashSet<usize> = edges.keys().copied().chain(edges.values().flatten().copied()).collect();
    let mut indegree: HashMap<usize, usize> = nodes.iter().map(|&n| (n, 0)).collect();
    for targets in edges.values() {
        for target in targets {
            *indegree.get_mut(target).unwrap() += 1;
        }
    }
    let mut ready: Vec<usize> = indegree.iter().filter(|(_, d)| **d == 0).map(|(n, _)| *n).collect();
    let mut ordered = 0;
    while let Some(n) = ready.pop() {
        ordered += 1;
        for target in edges.get(&n).into_iter().flatten() {
            let d = indegree.get_mut(target).unwrap();
            *d -= 1;
            if *d == 0 {
                ready.push(*target);
            }
        }
    }
    assert_eq!(ordered, nodes.len(), "a cycle of write-write / write-read dependencies (G0 / G1c)");
}

/// The checker itself: a history where transaction 1 saw transaction 0's
/// append to key 0 but not its append to key 1 (read skew) must fail
/// check 3.
#[test]
#[should_panic(expected = "read skew")]
fn the_checker_catches_a_fractured_read() {
    let mut writer = Txn { committed: true, ..Txn::default() };
    writer.appends.insert(0, vec![1]);
    writer.appends.insert(1, vec![2]);
    let mut reader = Txn { committed: true, ..Txn::default() };
    reader.reads.insert(0, vec![1]);
    reader.reads.insert(1, vec![]);
    let finals: BTreeMap<u64, Vec<u64>> = [(0, vec![1]), (1, vec![2])].into();
    check(&[writer, reader], &finals);
}

/// The same through a third transaction: 2 saw 1, which saw 0; 2 misses
/// 0's append to key 2.
#[test]
#[should_panic(expected = "read skew")]
fn the_checker_follows_what_the_writers_saw() {
    let mut first = Txn { committed: true, ..Txn::default() };
    first.appends.insert(0, vec![1]);
    first.appends.insert(2, vec![3]);
    let mut second = Txn { committed: true, ..Txn::default() };
    second.reads.insert(0, vec![1]);
    second.appends.insert(1, vec![2]);
    let mut third = Txn { committed: true, ..Txn::default() };
    third.reads.insert(1, vec![2]);
    third.reads.insert(2, vec![]);
    let finals: BTreeMap<u64, Vec<u64>> = [(0, vec![1]), (1, vec![2]), (2, vec![3])].into();
    check(&[first, second, third], &finals);
}
