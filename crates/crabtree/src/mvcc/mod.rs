//! Multi-version concurrency control: snapshot isolation over the B-link
//! tree, with first-committer-wins.
//!
//! Protocol and reasoning: `docs/protocols/mvcc.md`.
//!
//! * Versions live in the tree ([`encoding`]): `(keyspace, user key, commit
//!   ts) -> value or tombstone`, ordered by key ascending, then timestamp
//!   descending. A read at snapshot `S` takes the newest version `<= S`
//!   ([`read`]).
//! * Transactions buffer their writes (a [`WriteSet`]); nothing uncommitted
//!   touches a page. [`Engine::commit`] locks the written keys in sorted
//!   order ([`locks`]), validates that none has a version newer than the
//!   start timestamp (else [`Error::Conflict`]), takes a commit timestamp
//!   ([`oracle`]), appends the commit record ([`durability::CommitLog`]),
//!   applies the versions, prunes what no snapshot can see, releases the
//!   locks, waits for durability if asked, and publishes through the
//!   visibility watermark.
//! * Snapshots start at the watermark and are registered, so vacuum
//!   ([`vacuum`]) and pruning never remove a version one of them can see.
//!
//! # Invariants
//! * Every version with a timestamp `<= visible()` is in the tree; no
//!   version of a commit above `visible()` is visible to any snapshot.
//! * For every key, versions a registered snapshot (or any future one) can
//!   see are never removed: removal takes only versions below the newest
//!   version at or below the horizon, and that version if it is a
//!   tombstone.
//! * Two commits that write a common key are serialized by its key lock;
//!   the later one sees the earlier one's version during validation and
//!   fails if it began before the earlier one committed.
//!
//! Lower layers used: `btree` (get/insert/remove/range), `ids`.

pub(crate) mod backlog;
pub(crate) mod durability;
pub(crate) mod encoding;
pub(crate) mod locks;
pub(crate) mod oracle;
#[cfg(test)]
mod oracle_tests;
pub(crate) mod read;
pub(crate) mod vacuum;

use crate::btree::{BTree, LeafEntry};
use crate::ids::Lsn;
use crate::sync::{Arc, AtomicBool, AtomicU64, Mutex, Ordering, RwLock};
use crate::{Error, Result};
use durability::CommitLog;
use encoding::Ts;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The keyspace that holds the catalog of named keyspaces.
pub(crate) const CATALOG_KEYSPACE: u32 = 0;
/// The default keyspace (`tx.put`, `tx.get`, ...).
pub(crate) const DEFAULT_KEYSPACE: u32 = 1;

/// Most versions of one key a committer reads to validate and prune.
const PRUNE_SCAN_MAX: usize = 64;

/// A transaction's buffered writes: (keyspace, key) -> value, `None` for a
/// delete.
pub(crate) type WriteSet = BTreeMap<(u32, Vec<u8>), Option<Vec<u8>>>;

/// A finished commit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Committed {
    pub(crate) ts: Ts,
    pub(crate) lsn: Lsn,
}

/// Counters for `Db::stats`.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    pub(crate) pruned: AtomicU64,
    pub(crate) vacuumed: AtomicU64,
    pub(crate) vacuum_passes: AtomicU64,
    /// Versions vacuum read (passes and rounds).
    pub(crate) vacuum_read: AtomicU64,
    /// Versions the last vacuum pass kept only for the oldest snapshot.
    pub(crate) pinned: AtomicU64,
}

/// The MVCC state of one open database.
pub(crate) struct Engine {
    pub(crate) tree: Arc<BTree>,
    pub(crate) oracle: Arc<oracle::Oracle>,
    locks: locks::LockTable,
    pub(crate) log: Arc<dyn CommitLog>,
    /// Dropped keyspaces and the timestamp from which no commit writes
    /// them (`mark_dropped`).
    dropped: RwLock<HashMap<u32, Ts>>,
    /// Dropped keyspaces whose versions vacuum has removed.
    swept: Mutex<HashSet<u32>>,
    /// The keys commits left old versions of, for vacuum.
    pub(crate) backlog: backlog::Backlog,
    /// Set once a keyspace drop began (or a dropped one was found at
    /// open): from then on, reads through a keyspace handle check the
    /// catalog at their snapshot (`db::keyspace::exists_at`).
    any_dropped: AtomicBool,
    /// Called when the backlog has grown enough to wake vacuum early.
    wake_vacuum: RwLock<Option<Box<dyn Fn() + Send + Sync>>>,
    /// Set when a commit failed half-way (its outcome is unknown until
    /// reopen): every later commit is refused.
    poisoned: AtomicBool,
    pub(crate) counters: Arc<Counters>,
    /// Tombstone removals begun and ended, for reverse ranges
    /// (`read::Removals`).
    pub(crate) removals: Arc<read::Removals>,
    key_size_max: usize,
    /// Largest user value (`value_size_max`).
    value_size_max: usize,
}

impl Engine {
    /// The engine over `tree`, whose last commit had timestamp `last_ts`.
    pub(crate) fn new(tree: Arc<BTree>, log: Arc<dyn CommitLog>, last_ts: Ts) -> Engine {
        let key_size_max = encoding::user_key_size_max(tree.key_size_max());
        let value_size_max = tree.value_size_max() - 1;
        let backlog_bytes = backlog::bytes_max(tree.pool().stats().frames_max * tree.pool().page_size());
        let oracle = Arc::new(oracle::Oracle::new(last_ts));
        let counters = Arc::new(Counters::default());
        // A writer about to split a full leaf first drops the versions in
        // it that no snapshot can see (see `prunable`).
        let removals = Arc::new(read::Removals::default());
        let (horizon_of, pruned, removing) = (Arc::clone(&oracle), Arc::clone(&counters), Arc::clone(&removals));
        tree.set_leaf_pruner(Some(Arc::new(move |entries: &[LeafEntry]| {
            let doomed = prunable(entries, horizon_of.horizon());
            pruned.pruned.fetch_add(doomed.len() as u64, Ordering::Relaxed);
            if doomed.iter().any(|&at| entries.get(at).is_some_and(is_tombstone)) {
                // Counted begun and ended at once, before the tree removes
                // anything: the tree holds this leaf latched from before
                // this call until its removals are done, and every version
                // of a key whose tombstone goes lies in it (the run ends
                // inside the leaf; a newer version in the left neighbour
                // stays, and decides a reader's answer with or without
                // these). So a refill that began after this count reads
                // the key's versions only once they are gone.
                drop(removing.begin());
            }
            doomed
        })));
        Engine {
            tree,
            oracle,
            locks: locks::LockTable::new(),
            log,
            dropped: RwLock::new(HashMap::new()),
            swept: Mutex::new(HashSet::new()),
            backlog: backlog::Backlog::new(backlog_bytes),
            wake_vacuum: RwLock::new(None),
            any_dropped: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            counters,
            removals,
            key_size_max,
            value_size_max,
        }
    }

    /// Largest value accepted (one byte of the tree's limit is the tag).
    pub(crate) fn value_size_max(&self) -> usize {
        self.value_size_max
    }

    /// Rejects a key whose stored form would not fit (a zero byte counts
    /// twice: it is escaped).
    pub(crate) fn check_key(&self, key: &[u8]) -> Result<()> {
        let size = encoding::key_size(key);
        if size > self.key_size_max {
            return Err(Error::KeyTooLarge { size, max: self.key_size_max });
        }
        Ok(())
    }

    pub(crate) fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.value_size_max() {
            return Err(Error::ValueTooLarge { size: value.len(), max: self.value_size_max() });
        }
        Ok(())
    }

    /// The value of `key` in keyspace `ks` at snapshot `ts`.
    pub(crate) fn get(&self, ks: u32, key: &[u8], ts: Ts) -> Result<Option<Vec<u8>>> {
        self.check_key(key)?;
        read::get_at(&self.tree, ks, key, ts)
    }

    /// Marks keyspace `ks` dropped at `ts`: commits that write it are
    /// refused, and vacuum removes its versions once the horizon passes the
    /// last timestamp handed out by now (at least `ts`).
    ///
    /// Why that one: a commit checks for dropped keyspaces when it starts
    /// and again once it has its timestamp. One that got its timestamp
    /// before this mark (so at most the recorded one) may still write the
    /// keyspace, but it is in flight until it has, so the horizon cannot
    /// pass it before; one that got its timestamp later sees the mark
    /// (taken under the map's write lock, which its second check waits
    /// for) and is refused. So once the horizon passes the recorded
    /// timestamp, no version of the keyspace can appear any more, and one
    /// sweep of its keys is final.
    pub(crate) fn mark_dropped(&self, ks: u32, ts: Ts) {
        self.note_dropping();
        let mut dropped = self.dropped.write();
        dropped.insert(ks, ts.max(self.oracle.last_allocated()));
    }

    /// Records that a keyspace drop begins: call before its catalog
    /// change can become visible.
    pub(crate) fn note_dropping(&self) {
        // Release: a snapshot that sees the drop's commit (through the
        // watermark) sees this too.
        self.any_dropped.store(true, Ordering::Release);
    }

    /// Whether a keyspace was ever dropped (or began to be) in this
    /// process.
    pub(crate) fn any_dropped(&self) -> bool {
        self.any_dropped.load(Ordering::Acquire)
    }

    /// Keyspaces dropped at or below `horizon`.
    pub(crate) fn dropped_before(&self, horizon: Ts) -> Vec<u32> {
        self.dropped.read().iter().filter(|&(_, &ts)| ts <= horizon).map(|(&ks, _)| ks).collect()
    }

    /// Of the keyspaces dropped at or below `horizon`, those no sweep has
    /// emptied yet.
    pub(crate) fn unswept_before(&self, horizon: Ts) -> Vec<u32> {
        let swept = self.swept.lock();
        self.dropped_before(horizon).into_iter().filter(|ks| !swept.contains(ks)).collect()
    }

    /// Records that every version of dropped keyspace `ks` was removed
    /// with the horizon at or above its drop (no commit writes it again).
    pub(crate) fn mark_swept(&self, ks: u32) {
        self.swept.lock().insert(ks);
    }

    /// Sets what a commit calls when the backlog has grown enough to run
    /// vacuum before its next interval.
    pub(crate) fn set_vacuum_waker(&self, wake: Option<Box<dyn Fn() + Send + Sync>>) {
        *self.wake_vacuum.write() = wake;
    }

    /// The first keyspace of `writes` that is dropped. Free until a drop
    /// began in this process (no lock taken): `note_dropping` comes before
    /// the drop's mark, so a commit that must see the mark (one that took
    /// its timestamp after the mark read the clock under the oracle's
    /// lock) sees the flag too.
    fn dropped_in(&self, writes: &WriteSet) -> Option<u32> {
        if !self.any_dropped() {
            return None;
        }
        let dropped = self.dropped.read();
        writes.keys().map(|&(ks, _)| ks).find(|ks| dropped.contains_key(ks))
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Commits `writes` for a transaction that began at `start` (see the
    /// module doc for the steps). `wait_durable`: return only once the
    /// commit record is durable. An empty write set commits nothing.
    ///
    /// Entry and exit: no latch and no key lock held.
    pub(crate) fn commit(&self, start: Ts, writes: &WriteSet, wait_durable: bool) -> Result<Option<Committed>> {
        if writes.is_empty() {
            return Ok(None);
        }
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        // A full disk refuses it now, before it holds locks or a timestamp
        // (the log's check may wait for its preparer); the append checks
        // again.
        self.log.check_space()?;
        if let Some(ks) = self.dropped_in(writes) {
            return Err(Error::InvalidArgument(format!("keyspace {ks} was dropped")));
        }
        let prefixes = writes.keys().map(|(ks, key)| encoding::prefix(*ks, key)).collect();
        let locks = self.locks.lock_all(prefixes);
        let mut histories = Vec::with_capacity(writes.len());
        for prefix in locks.keys() {
            let history = read::versions(&self.tree, prefix, PRUNE_SCAN_MAX)?;
            if history.first().is_some_and(|&(newest, _)| newest > start) {
                self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
                return Err(Error::Conflict);
            }
            histories.push(history);
        }
        failpoint!("commit.before_timestamp");
        let ts = self.oracle.allocate();
        // Again with the timestamp held: a drop marked since is one vacuum
        // may already be sweeping (see `mark_dropped`).
        if let Some(ks) = self.dropped_in(writes) {
            self.oracle.finish(ts);
            return Err(Error::InvalidArgument(format!("keyspace {ks} was dropped")));
        }
        let record = encoding::encode_commit(
            ts,
            writes.iter().map(|((ks, key), value)| (*ks, key.as_slice(), value.as_deref())),
        );
        let lsn = match self.log.append_commit(&record) {
            Ok(lsn) => lsn,
            Err(error) => {
                self.oracle.finish(ts);
                return Err(error);
            }
        };
        let applied = commit_failpoint().and_then(|()| self.apply(locks.keys(), writes, ts));
        if let Err(error) = applied {
            // Not `applied`: the log keeps the record, for recovery. Some
            // versions may be in the tree (an error removing them, or a
            // removal a reader could see between): the watermark must
            // never pass this commit in this process.
            self.poisoned.store(true, Ordering::Release);
            self.oracle.fail(ts);
            return Err(error);
        }
        self.log.applied(lsn);
        self.prune(ts, locks.keys(), writes, &histories);
        drop(locks);
        if wait_durable && let Err(error) = self.log.wait_durable(lsn) {
            // The record may or may not be durable: the outcome is known
            // only after reopen, so refuse everything after it, and keep
            // the commit from every snapshot of this process (a snapshot
            // never sees an `Immediate` commit that is not durable; after
            // reopen it may be gone).
            self.poisoned.store(true, Ordering::Release);
            self.oracle.fail(ts);
            return Err(error);
        }
        self.oracle.finish(ts);
        if !self.oracle.wait_visible(ts) {
            // An earlier commit failed half-way: ours is applied and its
            // record logged (recovery will keep it), but it can never be
            // visible in this process.
            return Err(Error::Poisoned);
        }
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        Ok(Some(Committed { ts, lsn }))
    }

    /// Inserts the versions of one commit. On an error, removes what it
    /// inserted (best effort) and poisons the engine: the record is in the
    /// log, so the commit's outcome is decided by recovery.
    fn apply(&self, prefixes: &[Vec<u8>], writes: &WriteSet, ts: Ts) -> Result<()> {
        for (done, (prefix, value)) in prefixes.iter().zip(writes.values()).enumerate() {
            if let Err(error) =
                self.tree.insert(&encoding::version_key(prefix, ts), &encoding::encode_value(value.as_deref()))
            {
                self.poisoned.store(true, Ordering::Release);
                for prefix in prefixes.iter().take(done) {
                    let _ = self.tree.remove(&encoding::version_key(prefix, ts));
                }
                return Err(error);
            }
        }
        Ok(())
    }

    /// Removes the versions of the keys just written at `ts` that no
    /// snapshot can see, and records in the backlog, per key, the older
    /// versions left (and a tombstone written), which will be garbage once
    /// the horizon reaches `ts`. Housekeeping: an error ends the key's
    /// removals (the tombstones above a version it kept stay too), and
    /// what it kept is recorded as left.
    ///
    /// A history of `PRUNE_SCAN_MAX` versions may stop short of the key's
    /// oldest: then a tombstone at or below the horizon stays, hiding
    /// those (`read::invisible_of` with `complete` false), and the backlog
    /// entry says the list is incomplete (vacuum then reads the key
    /// whole).
    fn prune(&self, ts: Ts, prefixes: &[Vec<u8>], writes: &WriteSet, histories: &[Vec<(Ts, bool)>]) {
        const _: () = assert!(PRUNE_SCAN_MAX <= 64, "a history's removals are a u64 bitmap");
        let horizon = self.oracle.horizon();
        let mut wake = false;
        for ((prefix, history), value) in prefixes.iter().zip(histories).zip(writes.values()) {
            let complete = history.len() < PRUNE_SCAN_MAX;
            // Bit i: history[i] was removed. Oldest first, and the first
            // failure ends the key's removals: a tombstone must not go
            // when a value below it stayed.
            let mut removed = 0u64;
            let _removal = read::invisible_tombstone(history, horizon, complete).then(|| self.removals.begin());
            for old in read::invisible_of(history, horizon, complete) {
                match self.tree.remove(&encoding::version_key(prefix, old)) {
                    Ok(Some(_)) => {
                        if let Some(index) = history.iter().position(|&(ts, _)| ts == old) {
                            removed |= 1 << index;
                        }
                    }
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
            self.counters.pruned.fetch_add(u64::from(removed.count_ones()), Ordering::Relaxed);
            // The versions left, newest first, on the stack (a history has
            // at most PRUNE_SCAN_MAX): no allocation per commit.
            let mut older = [0; PRUNE_SCAN_MAX];
            let mut count = 0;
            for (index, &(old, _)) in history.iter().enumerate() {
                if removed & (1 << index) == 0
                    && let Some(slot) = older.get_mut(count)
                {
                    *slot = old;
                    count += 1;
                }
            }
            if count > 0 || value.is_none() {
                let left = backlog::Left {
                    prefix,
                    older: older.get(..count).unwrap_or_default(),
                    tombstone: value.is_none(),
                    complete,
                };
                wake |= self.backlog.push(ts, [left]);
            }
        }
        if wake && let Some(wake) = self.wake_vacuum.read().as_ref() {
            wake();
        }
    }
}

/// Of the entries of one full leaf (in tree order: by key, newest
/// version first), the indices of those no snapshot at or above `horizon`
/// can see: vacuum's rule ([`read::invisible_of`]) applied to each key's
/// versions in the leaf. Versions below the newest one at or below the
/// horizon go; that one goes too if it is a tombstone and the key's
/// versions end inside the leaf (an entry of another key follows them):
/// versions of the key past the leaf's end would still be there, and a
/// deleted value would come back. Versions whose shadow lies in the left
/// neighbour stay (a newer version there changes nothing: removing a
/// tombstone and all below it hides the key from every snapshot that saw
/// the tombstone, as the tombstone did). Entries that are not version keys
/// are left alone and end a key's run. The tree removes the named entries
/// from the right, so the older versions go before the tombstone that
/// hides them (a crash or an error between two removals leaves the
/// tombstone).
pub(crate) fn prunable(entries: &[LeafEntry], horizon: Ts) -> Vec<usize> {
    let mut doomed = Vec::new();
    let mut versions = Vec::new();
    let mut start = 0;
    while start < entries.len() {
        let Ok((prefix, _)) = encoding::split_version(&entries[start].key) else {
            start += 1;
            continue;
        };
        // The run of `prefix`'s versions: `start..end`.
        versions.clear();
        let mut end = start;
        while let Some(entry) = entries.get(end) {
            match encoding::split_version(&entry.key) {
                Ok((p, ts)) if p == prefix => {
                    versions.push((ts, is_tombstone(entry)));
                    end += 1;
                }
                _ => break,
            }
        }
        // Complete only if a version key of another key follows in the
        // leaf: prefixes are prefix-free, so the run has ended. (A key that
        // begins with `prefix` is not taken for one: whatever it is, more
        // of the run could sort after it.)
        let complete = entries
            .get(end)
            .is_some_and(|next| encoding::split_version(&next.key).is_ok() && !next.key.starts_with(prefix));
        for ts in read::invisible_of(&versions, horizon, complete) {
            if let Some(at) = versions.iter().position(|&(t, _)| t == ts) {
                doomed.push(start + at);
            }
        }
        start = end;
    }
    doomed.sort_unstable();
    doomed
}

/// Whether a leaf entry is a tombstone. Only a well-formed one counts (a
/// damaged value is kept, as a value).
fn is_tombstone(entry: &LeafEntry) -> bool {
    entry.inline.as_deref().is_some_and(|v| matches!(encoding::value_of(v), Ok(None)))
}

/// The failpoint `commit.before_apply`: the commit record is appended,
/// no version is applied yet (an injected error stands for a crash there:
/// recovery decides the outcome from the log).
fn commit_failpoint() -> Result<()> {
    failpoint!("commit.before_apply");
    Ok(())
}

/// Re-applies a commit record to `tree`: inserts each of its versions.
/// Idempotent (a version already there is overwritten with the same
/// bytes). Returns the commit's timestamp, so recovery can raise the
/// clock past it. Malformed bytes are [`Error::LogCorruption`], never a
/// panic.
pub(crate) fn replay(tree: &BTree, record: &[u8]) -> Result<Ts> {
    let record = encoding::decode_commit(record)?;
    for write in &record.writes {
        let key = encoding::version_key(&encoding::prefix(write.keyspace, &write.key), record.ts);
        tree.insert(&key, &encoding::encode_value(write.value.as_deref()))?;
    }
    Ok(record.ts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::{BufferPool, PoolOptions};
    use crate::io::MemStorage;

    fn engine() -> Engine {
        let pool = BufferPool::create(Arc::new(MemStorage::new()), PoolOptions::default()).unwrap();
        let tree = Arc::new(BTree::create(Arc::new(pool)).unwrap());
        Engine::new(tree, Arc::new(durability::MemCommitLog::default()), 0)
    }

    fn writes(pairs: &[(&[u8], Option<&[u8]>)]) -> WriteSet {
        pairs.iter().map(|(k, v)| ((DEFAULT_KEYSPACE, k.to_vec()), v.map(<[u8]>::to_vec))).collect()
    }

    fn entry(prefix: &[u8], ts: Ts, value: Option<&[u8]>) -> LeafEntry {
        LeafEntry { key: encoding::version_key(prefix, ts), inline: Some(encoding::encode_value(value)) }
    }

    #[test]
    fn prunable_names_versions_below_a_newer_one_at_or_below_the_horizon() {
        let a = encoding::prefix(1, b"a");
        let b = encoding::prefix(1, b"b");
        let v = Some(&b"v"[..]);
        // Tree order: by key, newest first.
        let entries = vec![
            entry(&a, 9, v),                                               // above the horizon: kept
            entry(&a, 5, v),                                               // the newest at or below: kept
            LeafEntry { key: encoding::version_key(&a, 4), inline: None }, // shadowed (an overflow value)
            entry(&a, 1, v),                                               // shadowed
            entry(&b, 7, v),                                               // above: kept
            entry(&b, 6, v),                                               // above: kept
        ];
        assert_eq!(prunable(&entries, 5), vec![2, 3]);
        assert_eq!(prunable(&entries, 0), Vec::<usize>::new(), "a snapshot at 0 sees nothing shadowed");
        assert_eq!(prunable(&entries, 6), vec![2, 3], "b at 6 is the newest at or below");
        assert_eq!(prunable(&entries, u64::MAX), vec![1, 2, 3, 5]);
    }

    #[test]
    fn prunable_names_a_tombstone_only_with_every_version_of_its_key_in_the_leaf() {
        let c = encoding::prefix(1, b"c");
        let d = encoding::prefix(1, b"d");
        let v = Some(&b"v"[..]);
        let entries = vec![
            entry(&c, 8, v),
            entry(&c, 5, None), // a delete at 5
            entry(&c, 3, v),
            entry(&c, 2, v),
            entry(&d, 4, None), // the leaf's last key: its run may go on to the right
            entry(&d, 1, v),
        ];
        assert_eq!(prunable(&entries, 6), vec![1, 2, 3, 5], "c's tombstone and all below; d's tombstone stays");
        assert_eq!(prunable(&entries, 4), vec![3, 5], "c at 3 is the newest at or below: kept");
        assert_eq!(prunable(&entries, 9), vec![1, 2, 3, 5], "c at 8 is the newest at or below: all below go");
        // The same key's run ending at the leaf's end keeps its tombstone.
        assert_eq!(prunable(&entries[..4], 6), vec![2, 3]);
        // A key that begins with the run's prefix does not end it.
        let mut longer = encoding::version_key(&c, 0);
        longer.push(0);
        let odd = vec![entry(&c, 5, None), entry(&c, 3, v), LeafEntry { key: longer, inline: None }];
        assert_eq!(prunable(&odd, 6), vec![1]);
        // A damaged tombstone (bytes after the tag) is kept, as a value.
        let damaged = vec![
            LeafEntry { key: encoding::version_key(&c, 5), inline: Some(vec![encoding::TAG_TOMBSTONE, 7]) },
            entry(&c, 3, v),
            entry(&d, 1, v),
        ];
        assert_eq!(prunable(&damaged, 6), vec![1]);
    }

    #[test]
    fn replay_is_idempotent_and_matches_commit() {
        let engine = engine();
        let w = writes(&[(b"a", Some(b"1")), (b"b", None)]);
        let committed = engine.commit(0, &w, true).unwrap().unwrap();
        let record =
            encoding::encode_commit(committed.ts, w.iter().map(|((ks, k), v)| (*ks, k.as_slice(), v.as_deref())));
        let before: Vec<_> = engine.tree.range::<&[u8], _>(..).map(Result::unwrap).collect();
        assert_eq!(replay(&engine.tree, &record).unwrap(), committed.ts);
        assert_eq!(replay(&engine.tree, &record).unwrap(), committed.ts);
        let after: Vec<_> = engine.tree.range::<&[u8], _>(..).map(Result::unwrap).collect();
        assert_eq!(before, after);
        assert!(replay(&engine.tree, &record[..record.len() - 1]).is_err());
    }

    #[test]
    fn first_committer_wins_and_pruning_keeps_what_snapshots_see() {
        let engine = engine();
        engine.commit(0, &writes(&[(b"k", Some(b"1"))]), true).unwrap();
        let old = engine.oracle.begin();
        let start = engine.oracle.visible();
        engine.commit(start, &writes(&[(b"k", Some(b"2"))]), true).unwrap();
        assert!(matches!(engine.commit(start, &writes(&[(b"k", Some(b"3"))]), true), Err(Error::Conflict)));
        engine.commit(engine.oracle.visible(), &writes(&[(b"k", Some(b"4"))]), true).unwrap();
        assert_eq!(engine.get(DEFAULT_KEYSPACE, b"k", old).unwrap().as_deref(), Some(&b"1"[..]));
        engine.oracle.end(old);
        engine.commit(engine.oracle.visible(), &writes(&[(b"k", Some(b"5"))]), true).unwrap();
        let prefix = encoding::prefix(DEFAULT_KEYSPACE, b"k");
        assert_eq!(read::versions(&engine.tree, &prefix, 10).unwrap().len(), 2, "newest two: 5 and the one before");
    }
}
