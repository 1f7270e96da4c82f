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
//! returned exactly once, in order, from either end.
//!
//! Why it is consistent without locks: every version with a timestamp at
//! or below the snapshot was applied before the snapshot began (the
//! watermark), versions written later have larger timestamps and are
//! skipped, and neither pruning nor vacuum removes a version a registered
//! snapshot can see.

use super::encoding::{self, TS_SIZE, Ts};
use crate::btree::BTree;
use crate::btree::{Range, RangeBuffers};
use crate::sync::Arc;
use crate::{Error, Result};
use std::collections::VecDeque;
use std::ops::Bound;

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
    for entry in tree.range(lower..=upper).take(limit) {
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
    let keep_above = versions.iter().position(|&(ts, _)| ts <= horizon).unwrap_or(versions.len());
    let first_dead = match versions.get(keep_above) {
        Some(&(_, true)) if complete => keep_above,
        Some(_) => keep_above + 1,
        None => versions.len(),
    };
    versions.get(first_dead..).unwrap_or_default().iter().rev().map(|&(ts, _)| ts)
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
    ts: Ts,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    /// Resolved entries, ascending (the front pops its front).
    front: VecDeque<(Vec<u8>, Vec<u8>)>,
    /// Resolved entries, descending (the back pops its front).
    back: VecDeque<(Vec<u8>, Vec<u8>)>,
    /// No tree entry is left between the bounds.
    drained: bool,
    failed: bool,
    want: usize,
    /// The tree range buffers, kept from one refill to the next.
    buffers: RangeBuffers,
}

impl VersionRange {
    /// The same range with nothing in it (a keyspace that does not exist
    /// at the snapshot).
    pub(crate) fn emptied(mut self) -> VersionRange {
        self.drained = true;
        self
    }

    /// Entries of keyspace `ks` in the user-key range at snapshot `ts`.
    pub(crate) fn new(tree: Arc<BTree>, ts: Ts, ks: u32, lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> VersionRange {
        let drained = bounds_empty(lower, upper);
        let (lower, upper) = tree_bounds(ks, lower, upper);
        VersionRange {
            tree,
            ts,
            lower,
            upper,
            front: VecDeque::new(),
            back: VecDeque::new(),
            drained,
            failed: false,
            want: 4,
            buffers: RangeBuffers::default(),
        }
    }

    /// Reads the next batch for one end and resolves it into entries.
    fn refill(&mut self, forward: bool) -> Result<()> {
        let want = self.want;
        self.want = (want * 2).min(BATCH_MAX);
        let tree = Arc::clone(&self.tree);
        let buffers = std::mem::take(&mut self.buffers);
        let mut range = Range::reusing(&tree, (self.lower.clone(), self.upper.clone()), buffers);
        // Versions of the key being read, in tree order.
        let mut group: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut taken = 0usize;
        let mut last_key: Option<Vec<u8>> = None;
        loop {
            let next = if forward { range.next() } else { range.next_back() };
            let Some(entry) = next else {
                self.drained = true;
                break;
            };
            let entry = entry?;
            let (prefix, _) = encoding::split_version(&entry.0)?;
            let same = match group.first() {
                Some(first) => encoding::split_version(&first.0)?.0 == prefix,
                None => true,
            };
            if !same && !group.is_empty() {
                // The batch ends after this key: the last key taken is
                // where the next refill goes on (copied once a batch, not
                // once an entry).
                let done = taken >= want;
                if done {
                    last_key = group.last().map(|(key, _)| key.clone());
                }
                self.resolve(&mut group, forward)?;
                if done {
                    break;
                }
            }
            taken += 1;
            group.push(entry);
        }
        if !group.is_empty() {
            last_key = group.last().map(|(key, _)| key.clone());
            self.resolve(&mut group, forward)?;
        }
        self.buffers = range.into_buffers();
        if let Some(key) = last_key {
            if forward {
                self.lower = Bound::Excluded(key);
            } else {
                self.upper = Bound::Excluded(key);
            }
        }
        Ok(())
    }

    /// Picks the version of one key visible at the snapshot and buffers it
    /// for the end that read it; empties `group`.
    fn resolve(&mut self, group: &mut Vec<(Vec<u8>, Vec<u8>)>, forward: bool) -> Result<()> {
        let mut best: Option<(Ts, usize)> = None;
        for (index, (key, _)) in group.iter().enumerate() {
            let (_, ts) = encoding::split_version(key)?;
            if ts <= self.ts && best.is_none_or(|(best_ts, _)| ts > best_ts) {
                best = Some((ts, index));
            }
        }
        if let Some((_, index)) = best {
            let (key, stored) = group.swap_remove(index);
            if let Some(value) = encoding::decode_value(stored)? {
                let (_, user_key) = encoding::decode_version_key(key)?;
                if forward { &mut self.front } else { &mut self.back }.push_back((user_key, value));
            }
        }
        group.clear();
        Ok(())
    }

    fn advance(&mut self, forward: bool) -> Option<Result<(Vec<u8>, Vec<u8>)>> {
        loop {
            let own = if forward { self.front.pop_front() } else { self.back.pop_front() };
            if let Some(entry) = own {
                return Some(Ok(entry));
            }
            if self.failed {
                return None;
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
    match tree.range(encoding::keyspace_prefix(ks)..).next() {
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

    /// Point reads against a model, with small pages so that one key's
    /// versions straddle leaves: keys short and long (both sides of the
    /// stack buffer, in keyspaces of one- and multi-byte ids), with and
    /// without zero bytes, several versions each with tombstones and
    /// overflow values, read at every timestamp.
    #[test]
    fn get_at_reads_the_newest_version_at_or_below_the_snapshot() {
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
        // (keyspace, key) -> its versions, oldest first.
        type Versions = Vec<(Ts, Option<Vec<u8>>)>;
        let mut model: BTreeMap<(u32, Vec<u8>), Versions> = BTreeMap::new();
        let last: Ts = 40;
        for ts in 1..=last {
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
