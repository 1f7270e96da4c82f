//! Reads at a snapshot: the newest version at or below the snapshot's
//! timestamp, for one key or a range.
//!
//! A range is read in batches from the tree, each batch a fresh tree
//! iterator over the part of the range not yet returned from that end, so
//! the iterator owns its state (an `Arc` of the tree, two bounds, two
//! buffers) and holds no latch or epoch pin between calls. A batch always
//! ends on a user-key boundary (all versions of a key are read together),
//! so the versions of one key are never split between the two ends and
//! each key is resolved once: every key visible at the snapshot is
//! returned exactly once, in order, from either end. The tree range lends
//! each entry (`Range::next_with`); a refill decodes the visible version
//! of each key into one buffer of its end, and an entry becomes two owned
//! vectors only when it is returned.
//!
//! Why it is consistent without locks: every version with a timestamp at
//! or below the snapshot was applied before the snapshot began (the
//! watermark), versions written later have larger timestamps and are
//! skipped, and neither pruning nor vacuum removes a version a registered
//! snapshot can see. They do remove versions no snapshot can see while a
//! range reads: a deleted key's versions, oldest first, the tombstone
//! last. A forward read meets a key's versions newest first, so it finds
//! the tombstone or none of them; a backward read meets them oldest
//! first, and between two tree batches (no latch held) it may keep an
//! old value read in one and miss the tombstone, gone, in the next. So a
//! key read backward whose end was found in a later tree batch than its
//! first version is resolved again by a point read
//! (`Group::close_rereading`; `tests/prune_adversarial.rs`).
//!
//! Only a tombstone's removal can tear a key that way (every other version
//! removed is below a newer one at or below the horizon, which stays and
//! is met after it), so the re-read is skipped when no such removal ran
//! while the refill read ([`Removals`]): the common case of a reverse scan
//! while vacuum and pruning are idle pays no point read.

use super::encoding::{self, TS_SIZE, Ts};
use crate::btree::BTree;
use crate::btree::{Range, RangeBuffers};
use crate::sync::{Arc, AtomicU64, Ordering};
use crate::{Error, Result};
use std::collections::VecDeque;
use std::ops::Bound;

/// Counts the removals of tombstones (vacuum, a commit's pruning, a
/// writer's leaf pruning), each counted when it begins and when it ends,
/// so a reverse range can tell that none ran while a refill read
/// (`VersionRange::refill`).
///
/// Why two counters: a remover that began before the refill may remove a
/// key's older versions before the refill's first tree batch and its
/// tombstone after it. A refill that begins while `begun != ended` trusts
/// nothing; one that begins quiet trusts its batches if `begun` has not
/// moved when it closes the key. A remover counts `begun` before its first
/// tree change and `ended` after its last (`Removal` on drop), so a batch
/// that saw a removal's change (through the leaf latch the remover
/// released afterwards) sees its `begun` too. All `SeqCst`.
#[derive(Default)]
pub(crate) struct Removals {
    begun: AtomicU64,
    ended: AtomicU64,
}

impl Removals {
    /// Counts a tombstone removal as begun; it ends when the guard drops.
    pub(crate) fn begin(&self) -> Removal<'_> {
        self.begun.fetch_add(1, Ordering::SeqCst);
        Removal(self)
    }

    /// Read before a refill's first tree batch: `begun` if no removal was
    /// under way, `None` otherwise (`ended` read first: equal counts then
    /// mean every removal begun by the second read had ended).
    fn quiet(&self) -> Option<u64> {
        let ended = self.ended.load(Ordering::SeqCst);
        let begun = self.begun.load(Ordering::SeqCst);
        (begun == ended).then_some(begun)
    }

    /// Whether no tombstone removal ran since [`Removals::quiet`] returned
    /// `since` (read after the tree batches concerned).
    fn none_since(&self, since: Option<u64>) -> bool {
        since.is_some_and(|begun| self.begun.load(Ordering::SeqCst) == begun)
    }
}

/// A tombstone removal under way: counted as ended when dropped (an error
/// half-way ends it too).
pub(crate) struct Removal<'a>(&'a Removals);

impl Drop for Removal<'_> {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::SeqCst);
    }
}

/// Most entries a range batch asks for (it then finishes the key it is in).
const BATCH_MAX: usize = 256;

/// The bytes after every version key of `prefix` (a timestamp suffix of all
/// ones would be commit timestamp 0, which no commit has).
fn after_versions(prefix: &[u8]) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&[0xFF; TS_SIZE]);
    key
}

/// Bytes of a version key a point read keeps on the stack (a 16-byte key
/// needs 27); longer ones are built on the heap.
const POINT_KEY_INLINE: usize = 64;

/// The value of `key` in keyspace `ks` at snapshot `ts`: the newest
/// version at or below `ts`, `None` if there is none or it is a tombstone.
pub(crate) fn get_at(tree: &BTree, ks: u32, key: &[u8], ts: Ts) -> Result<Option<Vec<u8>>> {
    // The hot path of every point read: both bounds on the stack, built
    // from one prefix.
    let mut lower = [0u8; POINT_KEY_INLINE];
    let Some(prefix_len) = encoding::write_prefix(ks, key, &mut lower[..POINT_KEY_INLINE - TS_SIZE]) else {
        return get_at_heap(tree, ks, key, ts);
    };
    let len = prefix_len + TS_SIZE;
    let mut upper = lower;
    lower[prefix_len..len].copy_from_slice(&encoding::ts_suffix(ts));
    upper[prefix_len..len].fill(0xFF);
    first_version(tree, &lower[..len], &upper[..len])
}

/// `get_at` for a key too long for the stack buffers.
fn get_at_heap(tree: &BTree, ks: u32, key: &[u8], ts: Ts) -> Result<Option<Vec<u8>>> {
    let mut lower = Vec::new();
    encoding::encode_prefix(ks, key, &mut lower);
    let mut upper = Vec::with_capacity(lower.capacity());
    upper.extend_from_slice(&lower);
    lower.extend_from_slice(&encoding::ts_suffix(ts));
    upper.extend_from_slice(&[0xFF; TS_SIZE]);
    first_version(tree, &lower, &upper)
}

/// The value of the first version in `lower..=upper` (one key's versions
/// from a snapshot down), decoded.
fn first_version(tree: &BTree, lower: &[u8], upper: &[u8]) -> Result<Option<Vec<u8>>> {
    match tree.first_in(lower, upper)? {
        Some(stored) => encoding::decode_value(stored),
        None => Ok(None),
    }
}

/// Up to `limit` versions of `prefix`, newest first: (timestamp, is tombstone).
pub(crate) fn versions(tree: &BTree, prefix: &[u8], limit: usize) -> Result<Vec<(Ts, bool)>> {
    let lower = encoding::version_key(prefix, u64::MAX);
    let upper = after_versions(prefix);
    let mut out = Vec::new();
    // A tombstone is always inline: the chains of large values are not
    // read (a commit over a key with large old versions reads their leaf
    // cells only).
    for entry in tree.range(lower..=upper).without_overflow().take(limit) {
        let (key, value) = entry?;
        let (_, ts) = encoding::split_version(&key)?;
        out.push((ts, encoding::is_tombstone(&value)));
    }
    Ok(out)
}

/// Which versions of one key (given newest first) no snapshot at or above
/// `horizon` can see: those below the newest version at or below the
/// horizon, and that version too when it is a tombstone.
///
/// Named oldest first, the order to remove them in: each removal is its
/// own tree operation (and log record), so a reader between two of them,
/// or a crash or an I/O error cutting the sequence short, must find the
/// newest of them still there. Removed newest first, a tombstone would go
/// before the versions it hides, and a deleted value would come back.
pub(crate) fn invisible(versions: &[(Ts, bool)], horizon: Ts) -> impl Iterator<Item = Ts> + '_ {
    invisible_of(versions, horizon, true)
}

/// [`invisible`] when `complete` (`versions` are all the key has); else
/// for the newest versions of a key when there may be older ones past the
/// end of `versions` (a read with a limit): then a tombstone at or below
/// the horizon stays, for it hides those too. Removed with the listed
/// versions below it, it would leave the unlisted ones visible: a deleted
/// value would come back for the snapshots that see the delete.
pub(crate) fn invisible_of(versions: &[(Ts, bool)], horizon: Ts, complete: bool) -> impl Iterator<Item = Ts> + '_ {
    dead_of(versions, horizon, complete).iter().rev().map(|&(ts, _)| ts)
}

/// Whether [`invisible_of`] names a tombstone: a removal a reverse range
/// must know of ([`Removals`]).
pub(crate) fn invisible_tombstone(versions: &[(Ts, bool)], horizon: Ts, complete: bool) -> bool {
    dead_of(versions, horizon, complete).iter().any(|&(_, tombstone)| tombstone)
}

/// The versions [`invisible_of`] names, newest first.
fn dead_of(versions: &[(Ts, bool)], horizon: Ts, complete: bool) -> &[(Ts, bool)] {
    let keep_above = versions.iter().position(|&(ts, _)| ts <= horizon).unwrap_or(versions.len());
    let first_dead = match versions.get(keep_above) {
        Some(&(_, true)) if complete => keep_above,
        Some(_) => keep_above + 1,
        None => versions.len(),
    };
    versions.get(first_dead..).unwrap_or_default()
}

/// Tree-key bounds of a user-key range in keyspace `ks`.
pub(crate) fn tree_bounds(ks: u32, lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let lower = match lower {
        Bound::Unbounded => Bound::Included(encoding::keyspace_prefix(ks)),
        Bound::Included(key) => Bound::Included(encoding::prefix(ks, key)),
        Bound::Excluded(key) => Bound::Excluded(after_versions(&encoding::prefix(ks, key))),
    };
    let upper = match upper {
        Bound::Unbounded => match ks.checked_add(1) {
            Some(next) => Bound::Excluded(encoding::keyspace_prefix(next)),
            None => Bound::Unbounded,
        },
        Bound::Included(key) => Bound::Included(after_versions(&encoding::prefix(ks, key))),
        Bound::Excluded(key) => Bound::Excluded(encoding::prefix(ks, key)),
    };
    (lower, upper)
}

/// Whether a user-key range is empty by its bounds alone (inverted, or
/// an excluded point).
pub(crate) fn bounds_empty(lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> bool {
    match (lower, upper) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b))
        | (Bound::Excluded(a), Bound::Excluded(b)) => a >= b,
        _ => false,
    }
}

/// The visible entries of a key range at a snapshot; double-ended.
pub(crate) struct VersionRange {
    tree: Arc<BTree>,
    /// The engine's tombstone removals (re-reads are skipped while none ran).
    removals: Arc<Removals>,
    ts: Ts,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    /// Resolved entries, ascending (the front pops its front).
    front: Resolved,
    /// Resolved entries, descending (the back pops its front).
    back: Resolved,
    /// No tree entry is left between the bounds.
    drained: bool,
    failed: bool,
    want: usize,
    /// The tree range buffers, kept from one refill to the next.
    buffers: RangeBuffers,
    /// The version-key prefix of the user key a refill is reading (its
    /// allocation kept from one refill to the next).
    prefix: Vec<u8>,
}

/// One end's resolved entries, in the order that end returns them: their
/// keys and values in one buffer, each copied into the two vectors handed
/// out only when it is returned. (Owned vectors made for a whole refill
/// at once, up to `BATCH_MAX` pairs, outran glibc's per-thread cache of
/// freed chunks: most of them then took its slow paths.)
#[derive(Default)]
struct Resolved {
    bytes: Vec<u8>,
    spans: VecDeque<Span>,
}

/// Where a resolved entry lies in `Resolved::bytes`: its user key, then
/// its value.
#[derive(Clone, Copy)]
struct Span {
    start: usize,
    key_len: usize,
    value_len: usize,
}

impl Resolved {
    fn copy(&self, span: Span) -> (Vec<u8>, Vec<u8>) {
        let value_start = span.start + span.key_len;
        let key = self.bytes.get(span.start..value_start).unwrap_or_default();
        let value = self.bytes.get(value_start..value_start + span.value_len).unwrap_or_default();
        (key.to_vec(), value.to_vec())
    }

    fn pop_front(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        let span = self.spans.pop_front()?;
        Some(self.copy(span))
    }

    fn pop_back(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        let span = self.spans.pop_back()?;
        Some(self.copy(span))
    }
}

/// The user key a refill is reading (its versions come one after another,
/// in tree order) and the version of it visible at the snapshot so far.
struct Group<'a> {
    out: &'a mut Resolved,
    /// The snapshot.
    ts: Ts,
    /// The key's version-key prefix; empty before the first entry.
    prefix: &'a mut Vec<u8>,
    /// The newest version at or below `ts` seen so far: its timestamp and,
    /// unless it is a tombstone, its entry, written at the end of
    /// `out.bytes` but not yet in `out.spans`.
    best: Option<(Ts, Option<Span>)>,
}

impl Group<'_> {
    /// Whether `prefix` belongs to another key than the group's.
    fn is_new(&self, prefix: &[u8]) -> bool {
        self.prefix.as_slice() != prefix
    }

    /// Ends the key being read: its visible version, if it has one that
    /// is not a tombstone, is resolved. The next entry starts a new key.
    fn close(&mut self) {
        if let Some((_, Some(span))) = self.best.take() {
            self.out.spans.push_back(span);
        }
        self.prefix.clear();
    }

    /// [`Group::close`] for a key read backward (oldest version first)
    /// whose versions came from two or more tree batches: between two
    /// batches no latch is held, and the versions of a deleted key may all
    /// go meanwhile (vacuum, a commit's pruning: oldest first, the
    /// tombstone last), the older ones read in one batch, the tombstone
    /// already gone from the next. The key is resolved again by a point
    /// read at the snapshot, which reads from the newest version down and
    /// so always meets the tombstone or nothing (at most one such key per
    /// batch).
    fn close_rereading(&mut self, tree: &BTree) -> Result<()> {
        failpoint!("range.reread");
        if let Some((_, Some(span))) = self.best.take() {
            self.out.bytes.truncate(span.start);
        }
        let mut lower = self.prefix.clone();
        lower.extend_from_slice(&encoding::ts_suffix(self.ts));
        if let Some(value) = first_version(tree, &lower, &after_versions(self.prefix))? {
            let start = self.out.bytes.len();
            encoding::decode_prefix_into(self.prefix, &mut self.out.bytes)?;
            let key_len = self.out.bytes.len() - start;
            self.out.bytes.extend_from_slice(&value);
            self.out.spans.push_back(Span { start, key_len, value_len: value.len() });
        }
        self.prefix.clear();
        Ok(())
    }

    /// Takes one version, `prefix` at `ts` (stored value `stored`), of the
    /// group's key (or starts the group with it).
    fn offer(&mut self, prefix: &[u8], ts: Ts, stored: &[u8]) -> Result<()> {
        if self.prefix.is_empty() {
            self.prefix.extend_from_slice(prefix);
        }
        if ts > self.ts || self.best.is_some_and(|(best, _)| ts <= best) {
            return Ok(());
        }
        // Newer than the version kept so far (a backward read meets the
        // versions oldest first): it replaces that one.
        if let Some((_, Some(span))) = self.best {
            self.out.bytes.truncate(span.start);
        }
        let span = match encoding::value_of(stored)? {
            None => None,
            Some(value) => {
                let start = self.out.bytes.len();
                encoding::decode_prefix_into(prefix, &mut self.out.bytes)?;
                let key_len = self.out.bytes.len() - start;
                self.out.bytes.extend_from_slice(value);
                Some(Span { start, key_len, value_len: value.len() })
            }
        };
        self.best = Some((ts, span));
        Ok(())
    }
}

impl VersionRange {
    /// The same range with nothing in it (a keyspace that does not exist
    /// at the snapshot).
    pub(crate) fn emptied(mut self) -> VersionRange {
        self.drained = true;
        self
    }

    /// Entries of keyspace `ks` in the user-key range at snapshot `ts`.
    pub(crate) fn new(
        tree: Arc<BTree>,
        removals: Arc<Removals>,
        ts: Ts,
        ks: u32,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> VersionRange {
        let drained = bounds_empty(lower, upper);
        let (lower, upper) = tree_bounds(ks, lower, upper);
        VersionRange {
            tree,
            removals,
            ts,
            lower,
            upper,
            front: Resolved::default(),
            back: Resolved::default(),
            drained,
            failed: false,
            want: 4,
            buffers: RangeBuffers::default(),
            prefix: Vec::new(),
        }
    }

    /// Reads the next batch for one end and resolves it into entries.
    /// Entry: that end holds no resolved entry.
    fn refill(&mut self, forward: bool) -> Result<()> {
        let want = self.want;
        self.want = (want * 2).min(BATCH_MAX);
        let tree = Arc::clone(&self.tree);
        // Before the first tree batch (see `Removals`).
        let removals = &*self.removals;
        let quiet = removals.quiet();
        let buffers = std::mem::take(&mut self.buffers);
        // Borrowed: the range copies its bounds.
        let bounds = (self.lower.as_ref().map(Vec::as_slice), self.upper.as_ref().map(Vec::as_slice));
        let mut range = Range::reusing::<&[u8], _>(&tree, bounds, buffers);
        let out = if forward { &mut self.front } else { &mut self.back };
        out.bytes.clear();
        out.spans.clear();
        self.prefix.clear();
        let mut group = Group { out, ts: self.ts, prefix: &mut self.prefix, best: None };
        let mut taken = 0usize;
        // The last tree key taken: where the next refill of this end goes
        // on (its buffer kept, one copy a refill).
        let mut last_key = Vec::new();
        // The tree batch the group's first version came from. Read
        // backward, a group whose end was found in a later batch (the next
        // key's entry, or the end of the range) is read again
        // (`Group::close_rereading`): versions of it may have gone between,
        // unless no tombstone removal ran since the refill began.
        let mut first_batch = 0u64;
        let close = |group: &mut Group<'_>, first_batch: u64, batch: u64| -> Result<()> {
            if !forward && first_batch != batch && !group.prefix.is_empty() && !removals.none_since(quiet) {
                group.close_rereading(&tree)
            } else {
                group.close();
                Ok(())
            }
        };
        loop {
            // Whether the entry was taken (else the batch ended before it).
            let entry = range.next_with_batch(forward, |key, stored, batch| -> Result<bool> {
                let (prefix, ts) = encoding::split_version(key)?;
                if !group.prefix.is_empty() && group.is_new(prefix) {
                    close(&mut group, first_batch, batch)?;
                    if taken >= want {
                        return Ok(false);
                    }
                }
                if group.prefix.is_empty() {
                    first_batch = batch;
                }
                taken += 1;
                last_key.clear();
                last_key.extend_from_slice(key);
                group.offer(prefix, ts, stored)?;
                Ok(true)
            });
            match entry {
                None => {
                    close(&mut group, first_batch, range.fetched(forward))?;
                    self.drained = true;
                    break;
                }
                Some(Ok(Ok(true))) => {}
                Some(Ok(Ok(false))) => break,
                Some(Err(error) | Ok(Err(error))) => return Err(error),
            }
        }
        if taken > 0 {
            if forward {
                self.lower = Bound::Excluded(last_key);
            } else {
                // Below the key's prefix, not only below its newest version
                // read: a version committed since sorts below that one, and
                // a key met again would be resolved again (by a re-read at
                // the snapshot: twice). Prefixes are prefix-free, so no
                // other key lies between the two.
                let (prefix, _) = encoding::split_version(&last_key)?;
                let prefix_len = prefix.len();
                last_key.truncate(prefix_len);
                self.upper = Bound::Excluded(last_key);
            }
        }
        self.buffers = range.into_buffers();
        Ok(())
    }

    fn advance(&mut self, forward: bool) -> Option<Result<(Vec<u8>, Vec<u8>)>> {
        loop {
            // After an error nothing more: the failed refill may have
            // resolved some keys of its batch, and the keys after them
            // were never read.
            if self.failed {
                return None;
            }
            let own = if forward { self.front.pop_front() } else { self.back.pop_front() };
            if let Some(entry) = own {
                return Some(Ok(entry));
            }
            if self.drained {
                // The other end's buffer holds the rest, in its order.
                return if forward { self.back.pop_back() } else { self.front.pop_back() }.map(Ok);
            }
            if let Err(error) = self.refill(forward) {
                self.failed = true;
                return Some(Err(error));
            }
        }
    }
}

impl Iterator for VersionRange {
    type Item = Result<(Vec<u8>, Vec<u8>)>;
    fn next(&mut self) -> Option<Self::Item> {
        self.advance(true)
    }
}

impl DoubleEndedIterator for VersionRange {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.advance(false)
    }
}

/// The first keyspace id the tree holds entries of at or above `ks`.
pub(crate) fn keyspace_at_or_after(tree: &BTree, ks: u32) -> Result<Option<u32>> {
    match tree.range(encoding::keyspace_prefix(ks)..).without_overflow().next() {
        Some(entry) => {
            let (key, _) = entry?;
            encoding::keyspace_of(&key)
                .map(Some)
                .ok_or_else(|| Error::corruption(crate::ids::PageId::HEADER, "mvcc: key shorter than a keyspace id"))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::{BufferPool, PoolOptions};
    use crate::io::MemStorage;
    use std::collections::BTreeMap;

    /// (keyspace, key) -> its versions, oldest first.
    type Versions = Vec<(Ts, Option<Vec<u8>>)>;
    type Model = BTreeMap<(u32, Vec<u8>), Versions>;

    /// Timestamps of the versions `versioned_tree` writes.
    const LAST: Ts = 40;

    /// A tree with small pages, so that one key's versions straddle
    /// leaves: keys short and long (both sides of the point read's stack
    /// buffer, in keyspaces of one- and multi-byte ids), with and without
    /// zero bytes, several versions each with tombstones and overflow
    /// values, at timestamps 1 to `LAST`; and its model.
    fn versioned_tree() -> (BTree, Vec<(u32, Vec<u8>)>, Model) {
        let options = PoolOptions { page_size: 1024, pool_bytes: 1024 * 4096, max_pages: 1 << 20 };
        let pool = BufferPool::create(Arc::new(MemStorage::new()), options).unwrap();
        let tree = BTree::create(Arc::new(pool)).unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut keys = Vec::new();
        for ks in [1u32, 0xF0, 0x1_0000] {
            for len in [0usize, 1, 16, 40, 48, 49, 50, 53, 54, 56, 57, 100, 150] {
                for zeros in [false, true] {
                    let key = (0..len).map(|i| if zeros && i % 4 == 1 { 0 } else { rng.u8(1..) }).collect::<Vec<u8>>();
                    keys.push((ks, key));
                }
            }
        }
        let mut model = Model::new();
        for ts in 1..=LAST {
            let mut order: Vec<usize> = (0..keys.len()).collect();
            rng.shuffle(&mut order);
            for &index in order.iter().take(keys.len() / 3) {
                let (ks, key) = &keys[index];
                let value = (rng.u8(..4) != 0).then(|| vec![ts as u8; rng.usize(0..600)]);
                let version = encoding::version_key(&encoding::prefix(*ks, key), ts);
                tree.insert(&version, &encoding::encode_value(value.as_deref())).unwrap();
                model.entry((*ks, key.clone())).or_default().push((ts, value));
            }
        }
        (tree, keys, model)
    }

    /// Point reads against the model, at every timestamp.
    #[test]
    fn get_at_reads_the_newest_version_at_or_below_the_snapshot() {
        let (tree, keys, model) = versioned_tree();
        let last = LAST;
        for (ks, key) in &keys {
            let versions = model.get(&(*ks, key.clone())).map(Vec::as_slice).unwrap_or_default();
            for snapshot in 0..=last + 1 {
                let expected = versions.iter().rev().find(|(ts, _)| *ts <= snapshot).and_then(|(_, v)| v.clone());
                let got = get_at(&tree, *ks, key, snapshot).unwrap();
                assert_eq!(got, expected, "ks {ks} key of {} bytes at {snapshot}", key.len());
            }
            // Keys next to it (a longer one, another keyspace) are not it.
            let mut longer = key.clone();
            longer.push(0);
            assert_eq!(get_at(&tree, *ks, &longer, last + 1).unwrap(), None);
            assert_eq!(get_at(&tree, ks + 1, key, last + 1).unwrap(), None);
        }
    }

    /// Range reads against the model: every snapshot, each keyspace, open
    /// and bounded ranges, the two ends taken in random interleavings (so
    /// refills of both ends meet inside the versions of one key, forward
    /// refills meet the versions newest first and backward ones oldest
    /// first, and tombstones hide values from either side).
    #[test]
    fn ranges_return_each_visible_entry_once_in_order_from_either_end() {
        let (tree, keys, model) = versioned_tree();
        let tree = Arc::new(tree);
        let mut rng = fastrand::Rng::with_seed(11);
        for snapshot in 0..=LAST + 1 {
            for ks in [1u32, 0xF0, 0x1_0000] {
                let visible: Vec<(Vec<u8>, Vec<u8>)> = model
                    .iter()
                    .filter(|((k, _), _)| *k == ks)
                    .filter_map(|((_, key), versions)| {
                        let newest = versions.iter().rev().find(|(ts, _)| *ts <= snapshot)?;
                        newest.1.clone().map(|value| (key.clone(), value))
                    })
                    .collect();
                let mut users: Vec<&Vec<u8>> = keys.iter().filter(|(k, _)| *k == ks).map(|(_, key)| key).collect();
                users.sort();
                for _ in 0..4 {
                    let pick = |rng: &mut fastrand::Rng| match rng.u8(..3) {
                        0 => Bound::Unbounded,
                        1 => Bound::Included(users[rng.usize(..users.len())].clone()),
                        _ => Bound::Excluded(users[rng.usize(..users.len())].clone()),
                    };
                    let (lower, upper) = (pick(&mut rng), pick(&mut rng));
                    let inside = |key: &[u8]| {
                        let above = match &lower {
                            Bound::Unbounded => true,
                            Bound::Included(b) => key >= b.as_slice(),
                            Bound::Excluded(b) => key > b.as_slice(),
                        };
                        let below = match &upper {
                            Bound::Unbounded => true,
                            Bound::Included(b) => key <= b.as_slice(),
                            Bound::Excluded(b) => key < b.as_slice(),
                        };
                        above && below
                    };
                    let mut expected: VecDeque<_> = visible.iter().filter(|(key, _)| inside(key)).cloned().collect();
                    let (low, high) = (lower.as_ref().map(Vec::as_slice), upper.as_ref().map(Vec::as_slice));
                    let mut range = VersionRange::new(Arc::clone(&tree), Arc::default(), snapshot, ks, low, high);
                    loop {
                        let front = rng.bool();
                        let got = if front { range.next() } else { range.next_back() }.transpose().unwrap();
                        let want = if front { expected.pop_front() } else { expected.pop_back() };
                        assert_eq!(got, want, "ks {ks} at {snapshot}, {lower:?}..{upper:?}, from the front: {front}");
                        if got.is_none() {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// A refill that fails half-way (an overflow chain's read fails after
    /// some keys of the refill were resolved) is an error, and the range
    /// ends there, from either end: the keys the failed refill resolved
    /// are not handed out after the error, and the entries before it are
    /// the stored ones. The read fails at each chain page in turn, so some
    /// failures fall inside a refill's later tree batches. (Fails if a
    /// failed range still returns what its end holds.)
    #[test]
    #[cfg(feature = "failpoints")]
    fn a_refill_that_fails_half_way_ends_the_range() {
        use crate::failpoint;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let options = PoolOptions { page_size: 1024, pool_bytes: 1024 * 4096, max_pages: 1 << 20 };
        let tree = Arc::new(
            BTree::create(Arc::new(BufferPool::create(Arc::new(MemStorage::new()), options).unwrap())).unwrap(),
        );
        let stored: Vec<(Vec<u8>, Vec<u8>)> =
            (0..300u32).map(|i| (format!("key{i:05}").into_bytes(), vec![i as u8; 700])).collect();
        for (key, value) in &stored {
            let version = encoding::version_key(&encoding::prefix(1, key), 1);
            tree.insert(&version, &encoding::encode_value(Some(value))).unwrap();
        }
        // Chain pages the thread below may still read before one fails.
        let left = Arc::new(AtomicUsize::new(0));
        let left_in = Arc::clone(&left);
        failpoint::set("value.chain_page", move || {
            if std::thread::current().name() != Some("failing-range") {
                return Ok(());
            }
            if left_in.load(Ordering::Relaxed) == 0 {
                return Err(crate::Error::Io(std::io::Error::other("injected")));
            }
            left_in.fetch_sub(1, Ordering::Relaxed);
            Ok(())
        });
        let mut failures = 0;
        for pages in (0..300).step_by(7) {
            left.store(pages, Ordering::Relaxed);
            let tree = Arc::clone(&tree);
            let outcome = std::thread::Builder::new()
                .name("failing-range".into())
                .spawn(move || {
                    let mut range = VersionRange::new(tree, Arc::default(), 1, 1, Bound::Unbounded, Bound::Unbounded);
                    let mut got = Vec::new();
                    let error = loop {
                        match range.next() {
                            Some(Ok(entry)) => got.push(entry),
                            Some(Err(error)) => break Some(error),
                            None => break None,
                        }
                    };
                    (got, error.is_some(), range.next().is_some(), range.next_back().is_some())
                })
                .unwrap()
                .join();
            let Ok((got, failed, next, next_back)) = outcome else {
                failpoint::clear("value.chain_page");
                panic!("the range panicked with {pages} chain pages allowed");
            };
            if failed {
                failures += 1;
                if (next, next_back) != (false, false) {
                    failpoint::clear("value.chain_page");
                    panic!(
                        "with {pages} chain pages allowed: the range went on after its error (front {next}, back {next_back})"
                    );
                }
            }
            assert_eq!(got, stored[..got.len()], "with {pages} chain pages allowed: the entries before the error");
        }
        failpoint::clear("value.chain_page");
        assert!(failures > 10, "only {failures} ranges failed");
    }

    #[test]
    fn invisible_keeps_what_the_horizon_needs() {
        let v = [(9, false), (7, false), (5, true), (3, false)];
        assert_eq!(invisible(&v, 8).collect::<Vec<_>>(), vec![3, 5], "oldest first: the tombstone goes last");
        assert_eq!(invisible(&v, 6).collect::<Vec<_>>(), vec![3, 5], "a tombstone at the horizon goes too");
        assert_eq!(invisible(&v, 4).collect::<Vec<_>>(), Vec::<Ts>::new());
        assert_eq!(invisible(&v, 100).collect::<Vec<_>>(), vec![3, 5, 7]);
        // Perhaps not every version: a tombstone at or below the horizon
        // stays (it may hide versions past the list), the rest goes alike.
        assert_eq!(invisible_of(&v, 8, false).collect::<Vec<_>>(), vec![3, 5]);
        assert_eq!(invisible_of(&v, 6, false).collect::<Vec<_>>(), vec![3], "the tombstone at the horizon stays");
        assert_eq!(invisible_of(&v, 4, false).collect::<Vec<_>>(), Vec::<Ts>::new());
        assert_eq!(invisible_of(&v, 100, false).collect::<Vec<_>>(), vec![3, 5, 7]);
        let deleted = [(9, true), (7, false), (3, false)];
        assert_eq!(invisible(&deleted, 100).collect::<Vec<_>>(), vec![3, 7, 9]);
        assert_eq!(invisible_of(&deleted, 100, false).collect::<Vec<_>>(), vec![3, 7]);
    }
}
