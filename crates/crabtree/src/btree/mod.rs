//! The B-link tree (Lehman & Yao 1981) over the buffer pool.
//!
//! Every node, leaf and inner, has a high key (inclusive upper bound of its
//! key range, +infinity on the rightmost node of a level) and a right-link;
//! leaves also carry a left-link (a hint, revalidated). Inner cell `i` points
//! to the child holding keys in `(key_i, key_{i+1}]` (see `page::node`).
//! Protocol details: `docs/protocols/blink-tree.md`.
//!
//! # Latch protocol
//! * **Readers** descend with optimistic lock coupling: read a child link,
//!   validate the parent's version, take the child's version, validate the
//!   parent again; if the key is above a node's high key (or the node is
//!   half-dead or deleted) they follow the right-link. A failed validation
//!   is a [`Step::Restart`]; after `OPTIMISTIC_RESTARTS_MAX` restarts they
//!   fall back to shared latches, holding one at a time.
//! * **Writers** descend the same way, then upgrade the leaf's optimistic
//!   version to the exclusive latch (CAS from the version read, so whatever
//!   they checked still holds). Only the leaf is latched unless it splits.
//!   Every write attempt runs pinned in the epoch (`Pinning::Always`): the
//!   page ids it remembers (its descent path, a parent it found) stay the
//!   nodes they were, or deleted nodes that move right, until it ends. A
//!   writer finishes an abandoned split it meets before moving right past
//!   it.
//! * **Splits** are half-splits: with the full node latched, allocate the
//!   right sibling, move the upper half there, give it the old high key and
//!   right-link, make the left node's high key the separator and its
//!   right-link the sibling, flag the left node `INCOMPLETE_SPLIT`. The
//!   splitter keeps the left node latched while it latches the parent
//!   (upward) and inserts the separator, found from the remembered descent
//!   path plus move-right, then clears the flag. Between half-split and
//!   parent insert the tree is valid: the sibling is reachable by right-link.
//!   A flagged node found unlatched was abandoned (an error, or later a
//!   crash); the next writer that latches it finishes the split.
//! * **Root splits** serialize on `root_lock` (which also holds the root's
//!   level): the new root, allocated before the half-split, is built with
//!   two children, then published with one store of the root slot; a reader
//!   that read the old root moves right as from any node.
//! * Latches are taken only rightward (same level) or upward while others
//!   are held, so latch waits cannot form a cycle.
//!
//! # Invariants (checked by [`verify`](BTree::verify))
//! Keys strictly ascending inside a node and `<=` its high key; a node's keys
//! are `>` its left neighbour's high key; right-link chains cover each level
//! in key order; an inner cell's child has the cell's range; all leaves are
//! at level 0; no page is reachable twice; live pages, free pages and pages
//! awaiting reclamation partition the file.
//!
//! Lower layers used: `buffer` (guards, allocation), `page` (node layout,
//! overflow pages).

mod batch;
mod bulk;
mod count;
mod delete;
mod descend;
mod epoch;
mod first;
mod iter;
mod read;
mod repair;
mod value;
mod verify;
mod write;

#[cfg(test)]
mod tests;

pub use iter::Range;
pub(crate) use iter::RangeBuffers;
pub use repair::RepairReport;
pub use verify::{LevelReport, VerifyReport};

use crate::buffer::{BufferPool, Restart};
use crate::ids::PageId;
use crate::limits;
use crate::page::PageType;
use crate::page::node::{Node, NodeMut, SLOT_SIZE, SLOTS_START};
use crate::sync::{Arc, AtomicU64, Mutex, Ordering};
use crate::{Error, Result};
use std::ops::RangeBounds;

/// Root slot in the pool's header page that holds this tree's root.
/// (Root slots hold page ids below the page count, checked by the pool and
/// by the header decoder, so the entry count is not kept in one: `open`
/// counts the leaves' cells instead.)
pub(crate) const ROOT_SLOT: usize = 0;
/// Root slot holding the number of entries at the last flush.
const LEN_SLOT: usize = 1;

/// Which attempts of an operation run pinned (see `epoch`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pinning {
    /// Only shared-latch attempts: they hold page ids across unlatched
    /// gaps. Optimistic reads are protected by version validation alone
    /// and write nothing shared.
    SharedOnly,
    /// Every attempt: writers keep page ids (the descent path, a found
    /// parent) across latch waits and splits, and a page freed and reused
    /// meanwhile would be latched as if it were still the node they saw.
    Always,
}

/// Outcome of one attempt at an operation: done, restart, or failed.
pub(crate) enum Step {
    /// A validation failed or a latch race was lost: start over.
    Restart,
    /// A real error (I/O, corruption confirmed by a valid read).
    Fail(Error),
}

impl From<Restart> for Step {
    fn from(_: Restart) -> Step {
        Step::Restart
    }
}

impl From<Error> for Step {
    fn from(error: Error) -> Step {
        Step::Fail(error)
    }
}

/// Result of one attempt.
pub(crate) type Attempt<T> = std::result::Result<T, Step>;

/// Given the entries of a full leaf (in order), the indices of those that
/// may be removed before it splits (the MVCC layer's versions that no
/// snapshot can see). Called under the leaf's exclusive latch: it must not
/// touch the tree, and must be quick. The tree removes the named entries
/// from the right (highest index first), each its own logged removal.
pub type LeafPruner = Arc<dyn Fn(&[LeafEntry]) -> Vec<usize> + Send + Sync>;

/// One entry of a full leaf, as a [`LeafPruner`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafEntry {
    /// The entry's key.
    pub key: Vec<u8>,
    /// Its value when stored in the leaf and at most
    /// [`LeafEntry::INLINE_SHOWN`] bytes (enough for a marker such as a
    /// tombstone); `None` for a longer value or one in an overflow chain
    /// (not copied: a prune runs each time a leaf fills).
    pub inline: Option<Vec<u8>>,
}

impl LeafEntry {
    /// The longest value a pruner is shown.
    pub const INLINE_SHOWN: usize = 8;
}

/// A B-link tree of byte-string keys and values in memcmp order.
///
/// All methods take `&self` and may be called from many threads at once.
pub struct BTree {
    pool: Arc<BufferPool>,
    /// Serializes installing a new root; holds the root's level.
    root_lock: Mutex<u8>,
    /// Unlinked pages waiting for readers to finish.
    retired: epoch::Retired,
    /// Half-dead nodes whose unlink gave up, to retry.
    unfinished: delete::Unfinished,
    /// Number of entries (exact while the tree is open, except while a
    /// count from the leaves runs: see `count`).
    len: AtomicU64,
    /// The count from the leaves after a crash (`count`).
    recount: count::Recount,
    /// The background work finishing a crash recovery (`count`).
    finisher: count::Finisher,
    /// What the layer above says may go from a full leaf before it splits
    /// (`write::prune_leaf`).
    pruner: parking_lot::RwLock<Option<LeafPruner>>,
    /// Largest cell (plus its slot) a node must accept: a quarter page.
    cell_size_max: usize,
    key_size_max: usize,
    /// Where recent inserts went, per node: a split after two inserts in a
    /// row at adjacent positions cuts after the new cell (`write::InsertHints`).
    hints: write::InsertHints,
}

impl BTree {
    /// Creates an empty tree in a freshly created pool.
    pub fn create(pool: Arc<BufferPool>) -> Result<BTree> {
        let tree = BTree::with_pool(pool);
        let mut root = tree.pool.allocate()?;
        let pid = root.pid();
        NodeMut::init(&mut root.page_mut(), pid, PageType::Leaf, 0);
        drop(root);
        tree.pool.set_root(ROOT_SLOT, pid)?;
        tree.pool.set_root_value(LEN_SLOT, 0);
        Ok(tree)
    }

    /// Opens the tree stored in `pool`.
    pub fn open(pool: Arc<BufferPool>) -> Result<BTree> {
        let tree = BTree::with_pool(pool);
        let root = tree.pool.root(ROOT_SLOT);
        if root == PageId::HEADER || root.0 >= tree.pool.page_count() {
            return Err(Error::corruption(PageId::HEADER, format!("tree root {root:?} out of range")));
        }
        tree.len.store(tree.pool.root_value(LEN_SLOT), Ordering::Relaxed);
        let level = {
            let guard = tree.pool.shared(root)?;
            Node::new(guard.page(), root)?.header().level
        };
        *tree.root_lock.lock() = level;
        Ok(tree)
    }

    fn with_pool(pool: Arc<BufferPool>) -> BTree {
        let page_size = pool.page_size();
        BTree {
            cell_size_max: (page_size - SLOTS_START) / 4 - SLOT_SIZE,
            key_size_max: limits::key_size_max(page_size),
            pool,
            root_lock: Mutex::new(0),
            retired: epoch::Retired::default(),
            unfinished: delete::Unfinished::default(),
            len: AtomicU64::new(0),
            recount: count::Recount::default(),
            finisher: count::Finisher::default(),
            pruner: parking_lot::RwLock::new(None),
            hints: write::InsertHints::default(),
        }
    }

    /// The buffer pool under the tree.
    pub fn pool(&self) -> &Arc<BufferPool> {
        &self.pool
    }

    /// Installs (or, with `None`, removes) the pruner asked before a leaf
    /// splits (see `LeafPruner`).
    pub fn set_leaf_pruner(&self, pruner: Option<LeafPruner>) {
        *self.pruner.write() = pruner;
    }

    /// Largest key accepted.
    pub fn key_size_max(&self) -> usize {
        self.key_size_max
    }

    /// Largest value accepted: [`limits::VALUE_SIZE_MAX`], or less when the
    /// tree's changes are logged ([`limits::value_size_max_logged`]).
    pub fn value_size_max(&self) -> usize {
        if self.pool.logging() { limits::value_size_max_logged(self.pool.page_size()) } else { limits::VALUE_SIZE_MAX }
    }

    fn root(&self) -> PageId {
        self.pool.root(ROOT_SLOT)
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        if key.len() > self.key_size_max {
            return Err(Error::KeyTooLarge { size: key.len(), max: self.key_size_max });
        }
        Ok(())
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_key(key)?;
        self.retry(Pinning::SharedOnly, |tree, pessimistic| tree.get_attempt(key, pessimistic))
    }

    /// Stores `value` under `key`, returning the previous value.
    pub fn insert(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_key(key)?;
        let max = self.value_size_max();
        if value.len() > max {
            return Err(Error::ValueTooLarge { size: value.len(), max });
        }
        self.pool.check_poisoned()?;
        self.reclaim()?;
        let stored = value::StoredValue::prepare(self, key, value)?;
        let result = self.retry(Pinning::Always, |tree, pessimistic| tree.insert_attempt(key, &stored, pessimistic));
        if result.is_err() {
            stored.discard(self);
        }
        result
    }

    /// Removes `key`, returning its value.
    pub fn remove(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_key(key)?;
        self.pool.check_poisoned()?;
        let removed = self.retry(Pinning::Always, |tree, pessimistic| tree.remove_attempt(key, pessimistic))?;
        let Some((old, now_empty)) = removed else { return Ok(None) };
        if let Some(leaf) = now_empty {
            // The key is gone; freeing its empty leaf is housekeeping. If it
            // fails (I/O) the leaf stays, empty or half-dead, for a later
            // attempt or `repair`, and the remove still succeeded.
            let _pin = epoch::pin();
            let _ = self.try_delete_leaf(leaf);
        }
        self.retry_unfinished_deletions();
        Ok(Some(old))
    }

    /// The pages from the root down to the leaf whose range holds `key`:
    /// the inner nodes passed on the way down, then the leaf. A diagnostic
    /// for tools and tests; other threads may change it as soon as it
    /// returns. Like any writer's descent it finishes an abandoned split
    /// it meets, so like a writer it runs pinned (`Pinning::Always`): the
    /// finish latches a parent by the id its descent remembered.
    pub fn path_to(&self, key: &[u8]) -> Result<Vec<PageId>> {
        self.check_key(key)?;
        self.retry(Pinning::Always, |tree, pessimistic| {
            let mut path = write::Path::new();
            let leaf = tree.descend(descend::Target::Key(key), 0, Some(&mut path), pessimistic)?;
            leaf.validate()?;
            Ok(path.iter().map(|&(_, pid)| pid).chain([leaf.pid()]).collect())
        })
    }

    /// Number of entries. After a crash recovery the count is taken from
    /// the leaves in the background (beside writers); this waits for it.
    pub fn len(&self) -> u64 {
        if !self.count_exact() {
            let _ = self.wait_recovery_finished();
        }
        self.len.load(Ordering::Relaxed)
    }

    /// The count without waiting: exact unless a count from the leaves
    /// runs (statistics, and checkpoints, whose copy is trusted only after
    /// a clean close).
    pub(crate) fn len_now(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether the tree has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries with keys in `range`, in order; double-ended.
    pub fn range<'t, K: AsRef<[u8]>, R: RangeBounds<K>>(&'t self, range: R) -> Range<'t> {
        Range::new(self, range)
    }

    /// Entries with keys `>= key`, in order.
    pub fn seek(&self, key: &[u8]) -> Range<'_> {
        Range::new(self, key..)
    }

    /// The smallest entry.
    pub fn first(&self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.range::<&[u8], _>(..).next().transpose()
    }

    /// The largest entry.
    pub fn last(&self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.range::<&[u8], _>(..).next_back().transpose()
    }

    /// Writes every dirty page and the tree's metadata, then syncs.
    ///
    /// Pages retired before the call are first returned to the free list,
    /// waiting for operations still pinned at an older epoch (each is one
    /// tree operation, in any thread of the process): the free list is
    /// persisted only here, so a retired page left out would be lost to
    /// the file (leaked) after a close and reopen. Entry: no latch held and
    /// not inside a tree operation.
    pub fn flush(&self) -> Result<()> {
        self.quiesce()?;
        self.pool.flush()
    }

    /// The first half of [`BTree::flush`]: retries unfinished deletions,
    /// returns every page retired before the call to the free list (waiting
    /// for operations pinned at an older epoch) and records the entry
    /// count in its root slot. A store closing calls it before its last
    /// checkpoint. Entry: as for `flush`.
    pub fn quiesce(&self) -> Result<()> {
        self.retry_unfinished_deletions();
        let horizon = self.retired.horizon();
        loop {
            self.reclaim()?;
            if !self.retired.waiting_before(horizon) {
                break;
            }
            std::thread::yield_now();
        }
        self.pool.set_root_value(LEN_SLOT, self.len());
        Ok(())
    }

    /// Takes a checkpoint of the pool's log (see `buffer::checkpoint`)
    /// after returning the retired pages readers are done with. `retain`:
    /// the oldest log position the caller still needs.
    pub fn checkpoint(&self, retain: Option<crate::ids::Lsn>) -> Result<crate::buffer::CheckpointReport> {
        self.reclaim()?;
        self.pool.set_root_value(LEN_SLOT, self.len_now());
        self.pool.checkpoint(retain)
    }

    /// Cuts the trailing free pages off the data file (see
    /// `buffer::compact`) after returning the retired pages readers are
    /// done with (without waiting for the others).
    pub fn compact(&self) -> Result<crate::buffer::CompactReport> {
        self.reclaim()?;
        self.pool.compact()
    }

    /// Counts the entries from the leaves (after recovery, where the count
    /// kept in memory is lost) and returns it. Writers may run once it has
    /// started (see `count`), but none may be in progress when it is
    /// called.
    pub fn recount(&self) -> Result<u64> {
        self.begin_recount();
        self.run_recount()
    }

    /// Returns retired pages no reader can reach to the allocator.
    fn reclaim(&self) -> Result<()> {
        // Before the ids leave the retired list: an error injected here
        // must not lose them (they would leak).
        if !self.retired.is_empty() {
            failpoint!("reclaim.before_free");
        }
        for pid in self.retired.reclaimable() {
            self.pool.free_unread(pid);
        }
        Ok(())
    }

    /// Runs `attempt` until it does not restart. After
    /// `OPTIMISTIC_RESTARTS_MAX` restarts, attempts run pessimistic (shared
    /// latches instead of optimistic reads). Each attempt is pinned as
    /// `pinning` says.
    fn retry<T>(&self, pinning: Pinning, mut attempt: impl FnMut(&BTree, bool) -> Attempt<T>) -> Result<T> {
        let mut restarts = 0u32;
        let mut since: Option<std::time::Instant> = None;
        loop {
            let pessimistic = restarts >= limits::OPTIMISTIC_RESTARTS_MAX;
            let pin = (pessimistic || pinning == Pinning::Always).then(epoch::pin);
            let outcome = attempt(self, pessimistic);
            drop(pin);
            match outcome {
                Ok(value) => return Ok(value),
                Err(Step::Fail(error)) => return Err(error),
                Err(Step::Restart) => {
                    restarts += 1;
                    if restarts <= limits::OPTIMISTIC_RESTARTS_MAX {
                        continue;
                    }
                    // Under shared latches a restart needs a writer racing
                    // us at just the wrong moment; restarting for seconds
                    // means the links themselves disagree (a damaged file
                    // whose pages checksum correctly): report, do not hang.
                    let started = *since.get_or_insert_with(std::time::Instant::now);
                    // Both bounds: a thread starved of CPU on an
                    // overloaded machine (thousands of threads) can take
                    // seconds for a few restarts; links that disagree make
                    // it restart thousands of times a second.
                    let pessimistic_restarts = restarts - limits::OPTIMISTIC_RESTARTS_MAX;
                    if started.elapsed() > limits::restart_patience()
                        && pessimistic_restarts > limits::PESSIMISTIC_RESTARTS_MIN
                    {
                        let reason = format!("gave up after {restarts} restarts: the tree's links are inconsistent");
                        return Err(Error::corruption(self.root(), reason));
                    }
                    if restarts > limits::OPTIMISTIC_RESTARTS_MAX * 64 {
                        std::thread::sleep(std::time::Duration::from_micros(100));
                    } else {
                        std::thread::yield_now();
                    }
                }
            }
        }
    }
}

impl Drop for BTree {
    fn drop(&mut self) {
        // No operation runs once the tree is dropped: give every retired
        // page back. A failure here only leaks pages until the next verify.
        for pid in self.retired.drain_all() {
            self.pool.free_unread(pid);
        }
    }
}
