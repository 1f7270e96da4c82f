//! Readers: point lookups and the leaf-batch reads behind range iterators.
//!
//! Entry: no latch held. Exit: no latch held; results are copies validated
//! against the leaf's version (optimistic) or read under its shared latch.
//! Overflow values are read after the leaf (for scans: after the whole
//! batch) is left, pinned in the epoch (see `value`), so no leaf latch is
//! held across a chain's loads and the chain read cannot restart.

use super::batch::Batch;
use super::descend::{ReadGuard, Target, link_cycle};
use super::epoch::{self, Pin};
use super::value;
use super::{Attempt, BTree, Step};
use crate::Error;
use crate::ids::PageId;
use crate::page::bytes::PageBuf;
use crate::page::node::{FLAG_DELETED, Node, ValueRef};
use std::ops::Bound;

/// Where a batch stopped: the last leaf it read (forward: to its end, or
/// to the upper bound; backward, mirrored) and the latch word of that read. The next batch of the
/// same scan starts at that leaf's right sibling without a descent if the
/// leaf is unchanged since (`BufferPool::optimistic_resume`): unchanged,
/// it still holds every key between the last key returned and its high
/// key, so nothing the scan must return lies between it and its right
/// sibling. `None` after a read under a shared latch (no word to compare).
pub(crate) type Resume = Option<(PageId, u64)>;

#[cfg(test)]
thread_local! {
    /// Batches this thread started at a resumed leaf (tests check that an
    /// unchanged leaf is resumed, not only that it could be).
    pub(crate) static RESUMED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The resume point after reading `leaf` (validated).
fn stop_at(leaf: &ReadGuard<'_>) -> Resume {
    match leaf {
        ReadGuard::Optimistic(guard) => Some((guard.pid(), guard.word())),
        ReadGuard::Shared(_) | ReadGuard::Uncached(_) => None,
    }
}

/// A batch being filled and the epoch pin its overflow chains need until
/// they are read (taken by `leaf_entries`, dropped by `read_batch`).
struct Fill<'b> {
    batch: &'b mut Batch,
    pin: Option<Pin>,
}

/// Whether `key` satisfies a lower bound.
pub(crate) fn above(key: &[u8], lower: Bound<&[u8]>) -> bool {
    match lower {
        Bound::Unbounded => true,
        Bound::Included(bound) => key >= bound,
        Bound::Excluded(bound) => key > bound,
    }
}

/// Whether `key` satisfies an upper bound.
pub(crate) fn below(key: &[u8], upper: Bound<&[u8]>) -> bool {
    match upper {
        Bound::Unbounded => true,
        Bound::Included(bound) => key <= bound,
        Bound::Excluded(bound) => key < bound,
    }
}

impl BTree {
    /// One attempt at a point lookup.
    pub(crate) fn get_attempt(&self, key: &[u8], pessimistic: bool) -> Attempt<Option<Vec<u8>>> {
        let (leaf, found) = self.descend_to_key(key, pessimistic)?;
        let page = leaf.page();
        let node = leaf.check(Node::new(&page, leaf.pid()))?;
        let Ok(slot) = found else {
            leaf.validate()?;
            return Ok(None);
        };
        let value = leaf.check(node.value_ref(slot))?;
        let mut pin = None;
        let found = value::find(&leaf, value, &mut pin);
        leaf.validate()?;
        drop(leaf);
        Ok(Some(self.read_found(found)?))
    }

    /// Reads the overflow values of `fill`'s batch. Entry: no latch held,
    /// `fill.pin` taken (by `leaf_entries`) for every chain in the batch,
    /// each leaf validated after. Exit: no latch held; the pin released.
    fn read_batch(&self, fill: Fill<'_>) -> Attempt<()> {
        let Fill { batch, pin } = fill;
        batch.read_chains(|first, len| Ok(self.read_chain(first, len)?.0))?;
        drop(pin);
        Ok(())
    }

    /// Appends to `fill`'s batch the entries of the leaf behind `leaf`
    /// that lie within `lower..upper`, in key order; overflow values as
    /// chains, pinned in `fill.pin` (see `value::find`). On `Err` the
    /// entries appended are garbage (the leaf did not validate): the
    /// caller drops the batch.
    fn leaf_entries(
        &self,
        leaf: &ReadGuard<'_>,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        fill: &mut Fill<'_>,
    ) -> Attempt<()> {
        let batch = &mut *fill.batch;
        let page = leaf.page();
        let size = page.size();
        // A batch copies most of a leaf's cells, which lie anywhere in the
        // page (in insertion order): ask for all its lines at once, so
        // their misses overlap instead of coming one cell at a time.
        page.prefetch(0, size);
        let node = leaf.check(Node::new(&page, leaf.pid()))?;
        let start = match lower {
            Bound::Unbounded => 0,
            Bound::Included(key) | Bound::Excluded(key) => match leaf.check(node.search(key))? {
                Ok(slot) if matches!(lower, Bound::Excluded(_)) => slot + 1,
                Ok(slot) | Err(slot) => slot,
            },
        };
        batch.reserve(size);
        for slot in start..node.len() {
            let (cell, value) = leaf.check(node.entry(slot))?;
            // An inline value follows its key in the cell: one copy each.
            let (inline, chain) = match value {
                ValueRef::Inline { len, .. } => (len, None),
                ValueRef::Overflow { first, len } => (0, Some((first, len))),
            };
            if cell.key_len + inline > size {
                // `entry` checked that the cell lies in the page, so this
                // cannot hold; it bounds the copy whatever the bytes say.
                return leaf.check(Err(Error::corruption(leaf.pid(), format!("slot {slot} entry past the page"))));
            }
            let copy = |out: &mut [u8]| page.read_into(cell.key_offset, out);
            if !batch.push_if(cell.key_len, inline, chain, copy, |key| below(key, upper)) {
                break;
            }
            if chain.is_some() {
                // As `value::find`: pinned before the leaf is validated.
                fill.pin.get_or_insert_with(epoch::pin);
            }
        }
        leaf.validate()?;
        // A leaf this scan loaded is read: first in line for eviction, so
        // a scan through more data than memory does not push out the pages
        // other reads come back to.
        self.pool.cool_if_loaded_here(leaf.pid());
        Ok(())
    }

    /// The next batch of entries `> lower` (or `>=`) and within `upper`:
    /// from the leaf holding `lower` rightward until the batch holds `want`
    /// entries (whole leaves, so it may hold more) or the range ends. Empty at the end. Leaves are
    /// chained by right-link coupling, so the batch is as consistent as one
    /// leaf's worth.
    ///
    /// `resume` is where the previous batch of the same scan stopped (see
    /// [`Resume`]); returns where this one stopped. The entries go to
    /// `batch`, emptied first (its allocations are reused).
    pub(crate) fn batch_forward(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        want: usize,
        pessimistic: bool,
        resume: Resume,
        batch: &mut Batch,
    ) -> Attempt<Resume> {
        batch.clear();
        let mut fill = Fill { batch, pin: None };
        let stop = self.leaves_forward(lower, upper, want, pessimistic, resume, &mut fill)?;
        self.read_batch(fill)?;
        Ok(stop)
    }

    /// `batch_forward` up to its overflow values. Exit: no latch held.
    fn leaves_forward(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        want: usize,
        pessimistic: bool,
        resume: Resume,
        fill: &mut Fill<'_>,
    ) -> Attempt<Resume> {
        let start = match lower {
            Bound::Unbounded => &[][..],
            Bound::Included(key) | Bound::Excluded(key) => key,
        };
        // The leaf the previous batch ended in, if no writer touched it
        // since: it was read to its end (or to `upper`), so the scan goes on
        // at its right sibling, with no descent. Otherwise descend to
        // `lower` as for a first batch.
        let (mut leaf, mut read_leaf) = self.first_leaf(Target::Key(start), pessimistic, resume)?;
        let mut hops = 0u64;
        loop {
            if read_leaf {
                // Past the first leaf, keep only keys above the last one
                // taken: without coupling (the shared-latch path releases a
                // leaf before latching the next) a deletion can hand the
                // next leaf a range, and new keys, below what this batch
                // already holds.
                let after = fill.batch.last_key().map(<[u8]>::to_vec);
                let from = after.as_deref().map_or(lower, Bound::Excluded);
                self.leaf_entries(&leaf, from, upper, fill)?;
                if fill.batch.len() >= want {
                    return Ok(stop_at(&leaf));
                }
            }
            read_leaf = true;
            let (right, high) = {
                let page = leaf.page();
                let node = leaf.check(Node::new(&page, leaf.pid()))?;
                (node.header().right, leaf.check(node.high_key())?)
            };
            leaf.validate()?;
            // Past the upper bound, or the last leaf: done.
            let (Some(right), Some(high)) = (right, high) else { return Ok(stop_at(&leaf)) };
            if matches!(upper, Bound::Included(u) | Bound::Excluded(u) if high.as_slice() >= u) {
                return Ok(stop_at(&leaf));
            }
            hops += 1;
            if hops > self.pool.page_count() {
                return Err(link_cycle(&leaf, "right-link cycle"));
            }
            leaf = self.step(leaf, right)?;
        }
    }

    /// The previous batch of entries `< upper` (or `<=`) and within
    /// `lower`: from the leaf holding `upper` leftward until the batch holds
    /// `want` entries or the range ends; in ascending order. Empty at the
    /// end.
    ///
    /// `resume` as for [`BTree::batch_forward`], mirrored: the leaf the
    /// previous backward batch of the scan ended in (read from its first
    /// key within `lower`); unchanged, the scan goes on at its left
    /// neighbour.
    pub(crate) fn batch_backward(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        want: usize,
        pessimistic: bool,
        resume: Resume,
        batch: &mut Batch,
    ) -> Attempt<Resume> {
        batch.clear();
        let mut fill = Fill { batch, pin: None };
        let stop = self.leaves_backward(lower, upper, want, pessimistic, resume, &mut fill)?;
        self.read_batch(fill)?;
        Ok(stop)
    }

    /// `batch_backward` up to its overflow values. Exit: no latch held.
    fn leaves_backward(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        want: usize,
        pessimistic: bool,
        resume: Resume,
        fill: &mut Fill<'_>,
    ) -> Attempt<Resume> {
        let target = match upper {
            Bound::Unbounded => Target::Last,
            Bound::Included(key) | Bound::Excluded(key) => Target::Key(key),
        };
        let (mut leaf, mut read_leaf) = self.first_leaf(target, pessimistic, resume)?;
        // Per leaf, right to left (`pieces`: where each leaf's entries
        // begin); reordered into one ascending batch at the end.
        let mut pieces = Vec::new();
        let mut smallest: Option<Vec<u8>> = None;
        let mut hops = 0u64;
        let mut stop = None;
        loop {
            if read_leaf {
                // Mirror of `batch_forward`: below the smallest key taken.
                let until = smallest.as_deref().map_or(upper, Bound::Excluded);
                let piece = fill.batch.len();
                self.leaf_entries(&leaf, lower, until, fill)?;
                if fill.batch.len() > piece {
                    smallest = fill.batch.key_at(piece).map(<[u8]>::to_vec);
                }
                pieces.push(piece);
                if fill.batch.len() >= want {
                    stop = stop_at(&leaf);
                    break;
                }
            }
            read_leaf = true;
            let left = {
                let page = leaf.page();
                leaf.check(Node::new(&page, leaf.pid()))?.header().left
            };
            leaf.validate()?;
            let Some(left) = left else {
                stop = stop_at(&leaf);
                break;
            };
            hops += 1;
            if hops > self.pool.page_count() {
                return Err(link_cycle(&leaf, "left-link cycle"));
            }
            leaf = self.walk_left(leaf, left)?;
            // Entirely below the range: not read, so no resume point.
            if self.below_lower(&leaf, lower)? {
                break;
            }
        }
        fill.batch.reverse_pieces(&pieces);
        Ok(stop)
    }

    /// The leaf a batch starts at, and whether it still has to be read:
    /// the resume point's leaf if it is unchanged (already read; the batch
    /// goes on from its neighbour), else the leaf a descent to `target`
    /// reaches.
    fn first_leaf(&self, target: Target<'_>, pessimistic: bool, resume: Resume) -> Attempt<(ReadGuard<'_>, bool)> {
        // Only the loads of this batch count as the scan's (`leaf_entries`
        // cools the leaves it loaded), not a point read's before it.
        self.pool.forget_last_load();
        let resumed = match resume {
            Some((pid, word)) if !pessimistic => self.pool.optimistic_resume(pid, word),
            _ => None,
        };
        Ok(match resumed {
            Some(guard) => {
                #[cfg(test)]
                RESUMED.with(|count| count.set(count.get() + 1));
                // Between the check that the leaf is unchanged and the
                // reads of its links: what follows validates against the
                // old word, so a change made here is a restart.
                failpoint!("read.resumed", ignore);
                (ReadGuard::Optimistic(guard), false)
            }
            None => (self.descend(target, 0, None, pessimistic)?, true),
        })
    }

    /// Moves from `leaf` to its left neighbour `left` (a hint): the move is
    /// valid only if `left` is live and links right to `leaf`; otherwise a
    /// split or delete raced us and the attempt restarts.
    fn walk_left<'a>(&'a self, leaf: ReadGuard<'a>, left: PageId) -> Attempt<ReadGuard<'a>> {
        let from = leaf.pid();
        let next = self.step(leaf, left)?;
        let page = next.page();
        let node = next.check(Node::new(&page, left))?;
        let head = *node.header();
        next.validate()?;
        if head.right != Some(from) || head.flags & FLAG_DELETED != 0 {
            return Err(Step::Restart);
        }
        Ok(next)
    }

    /// Whether every key of the leaf is below `lower` (so walking further
    /// left cannot find anything): its high key is below the bound.
    fn below_lower(&self, leaf: &ReadGuard<'_>, lower: Bound<&[u8]>) -> Attempt<bool> {
        let page = leaf.page();
        let node = leaf.check(Node::new(&page, leaf.pid()))?;
        let high = leaf.check(node.high_key())?;
        leaf.validate()?;
        Ok(match (high, lower) {
            (Some(high), bound) => !above(&high, bound),
            (None, _) => false,
        })
    }
}
