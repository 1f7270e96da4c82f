//! Range iterators: double-ended, holding no latch and no epoch pin between
//! calls.
//!
//! An iterator remembers the last key it returned from each end and refills
//! a buffer with the next entries beyond it: a descent from the root, then
//! whole leaves along the sibling links (see `read`). A refill skips the
//! descent when the leaf the previous one of its end ended in is unchanged
//! (same latch version): it steps to that leaf's right sibling (forward)
//! or left neighbour (backward) (`read::Resume`). The first refill
//! of each end takes one leaf, each later one twice as many entries, up to
//! `SCAN_BATCH_ENTRIES_MAX`: short scans copy little they do not return,
//! long ones descend rarely. Each leaf is read and validated as a whole and the next one is
//! reached by lock coupling, and consecutive batches are separated by the
//! returned keys, so every key present for the whole scan is returned
//! exactly once and in order, whatever splits and deletes run meanwhile.

use super::BTree;
use super::batch::Batch;
use super::read::{Resume, above, below};
use crate::Result;
use crate::limits::SCAN_BATCH_ENTRIES_MAX;
use std::ops::{Bound, RangeBounds};

/// An iterator over the entries of a key range, in key order.
pub struct Range<'t> {
    tree: &'t BTree,
    /// The front fetches keys above this: the range start, then the last
    /// key of the front's latest batch.
    lower: Bound<Vec<u8>>,
    /// The back fetches keys below this: the range end, then the first key
    /// of the back's latest batch.
    upper: Bound<Vec<u8>>,
    /// What the front's latest batch still holds (entries are copied out
    /// of it only as they are returned: `batch.rs`).
    front: Batch,
    /// The same for the back.
    back: Batch,
    /// Set after an error or when the ends met.
    finished: bool,
    /// Entries the next refill of each end asks for (front, back).
    want: [usize; 2],
    /// Where each end's last batch stopped (`read::Resume`; front, back):
    /// a page id and a latch word, no latch.
    resume: [Resume; 2],
    /// Batches each end fetched so far (front, back; `next_with_batch`).
    fetches: [u64; 2],
}

/// Where one end stands (see `Range::front_boundary`): its buffered key
/// nearest the other end, else its fetch bound.
fn boundary<'a>(buffered: Option<&'a [u8]>, bound: &'a Bound<Vec<u8>>) -> Bound<&'a [u8]> {
    match buffered {
        Some(key) => Bound::Included(key),
        None => borrowed(bound),
    }
}

fn owned(bound: Bound<&impl AsRef<[u8]>>) -> Bound<Vec<u8>> {
    match bound {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(key) => Bound::Included(key.as_ref().to_vec()),
        Bound::Excluded(key) => Bound::Excluded(key.as_ref().to_vec()),
    }
}

fn borrowed(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(key) => Bound::Included(key),
        Bound::Excluded(key) => Bound::Excluded(key),
    }
}

/// The allocations of a range iterator's two batches, kept for the next
/// range a caller opens (`Range::reusing`, `Range::into_buffers`). A
/// caller that opens one short range after another (the MVCC layer's
/// refills) then allocates its buffers once instead of once a range: with
/// glibc those page-sized buffers miss the per-thread cache and make each
/// refill consolidate the small chunks freed meanwhile.
#[derive(Default)]
pub(crate) struct RangeBuffers {
    front: Batch,
    back: Batch,
}

impl<'t> Range<'t> {
    pub(crate) fn new<K: AsRef<[u8]>, R: RangeBounds<K>>(tree: &'t BTree, range: R) -> Range<'t> {
        Range::reusing(tree, range, RangeBuffers::default())
    }

    /// A range over `range` whose batches reuse `buffers`.
    pub(crate) fn reusing<K: AsRef<[u8]>, R: RangeBounds<K>>(
        tree: &'t BTree,
        range: R,
        buffers: RangeBuffers,
    ) -> Range<'t> {
        let RangeBuffers { mut front, mut back } = buffers;
        front.clear();
        back.clear();
        front.set_skip_overflow(false);
        back.set_skip_overflow(false);
        Range {
            tree,
            lower: owned(range.start_bound()),
            upper: owned(range.end_bound()),
            front,
            back,
            finished: false,
            want: [1, 1],
            resume: [None, None],
            fetches: [0, 0],
        }
    }

    /// This range with its overflow values left unread: they come back
    /// empty (as an empty inline value does). For callers that need keys
    /// and small values only (the MVCC layer's version histories, where a
    /// tombstone is always inline): a version with a large value then
    /// costs its leaf cell, not a read of its chain.
    pub(crate) fn without_overflow(mut self) -> Range<'t> {
        self.front.set_skip_overflow(true);
        self.back.set_skip_overflow(true);
        self
    }

    /// Batches the front (`forward`) or the back fetched so far: the
    /// number of its latest (see [`Range::next_with_batch`]).
    pub(crate) fn fetched(&self, forward: bool) -> u64 {
        self.fetches[usize::from(!forward)]
    }

    /// The range's buffers, for [`Range::reusing`].
    pub(crate) fn into_buffers(self) -> RangeBuffers {
        RangeBuffers { front: self.front, back: self.back }
    }

    /// Where the front stands, as a bound for the back: every key below
    /// the first one still buffered was returned by the front; with nothing
    /// buffered, everything up to the end of its last batch was.
    fn front_boundary(&self) -> Bound<&[u8]> {
        boundary(self.front.first_key(), &self.lower)
    }

    /// Where the back stands, as a bound for the front (mirror image).
    fn back_boundary(&self) -> Bound<&[u8]> {
        boundary(self.back.last_key(), &self.upper)
    }

    /// Refills one end's buffer (empty here; its allocations are reused)
    /// with the next batch and moves that end's fetch bound past it (one
    /// key copied per batch, none per entry). Returns whether the batch
    /// holds anything.
    fn fetch(&mut self, forward: bool) -> Result<bool> {
        let end = usize::from(!forward);
        let want = self.want[end];
        self.want[end] = (want * 2).min(SCAN_BATCH_ENTRIES_MAX);
        let resume = self.resume[end];
        let tree = self.tree;
        let mut batch = std::mem::take(if forward { &mut self.front } else { &mut self.back });
        let (lower, upper) = if forward {
            (borrowed(&self.lower), self.back_boundary())
        } else {
            (self.front_boundary(), borrowed(&self.upper))
        };
        self.resume[end] = tree.retry(super::Pinning::SharedOnly, |tree, pessimistic| {
            if forward {
                tree.batch_forward(lower, upper, want, pessimistic, resume, &mut batch)
            } else {
                tree.batch_backward(lower, upper, want, pessimistic, resume, &mut batch)
            }
        })?;
        self.fetches[end] += 1;
        let found = !batch.is_empty();
        // Each batch must move its end's bound strictly (the next batch
        // starts past it), else a damaged leaf whose keys are out of order
        // would send the scan back to where it was, forever.
        let stuck = if forward {
            batch.last_key().is_some_and(|key| !above(key, borrowed(&self.lower)))
        } else {
            batch.first_key().is_some_and(|key| !below(key, borrowed(&self.upper)))
        };
        if stuck {
            let page = self.resume[end].map_or(crate::ids::PageId::HEADER, |(pid, _)| pid);
            return Err(crate::Error::corruption(page, "keys out of order: the scan would not move on"));
        }
        if forward {
            if let Some(key) = batch.last_key() {
                self.lower = Bound::Excluded(key.to_vec());
            }
            self.front = batch;
        } else {
            if let Some(key) = batch.first_key() {
                self.upper = Bound::Excluded(key.to_vec());
            }
            self.back = batch;
        }
        Ok(found)
    }

    /// The next entry from the front (`forward`) or the back, lent to `f`
    /// (key, value) rather than copied into two new vectors: a caller that
    /// keeps only part of what it reads, or copies it into a buffer of its
    /// own, allocates nothing here.
    pub(crate) fn next_with<T>(&mut self, forward: bool, f: impl FnOnce(&[u8], &[u8]) -> T) -> Option<Result<T>> {
        self.next_with_batch(forward, |key, value, _| f(key, value))
    }

    /// [`Range::next_with`], also lending the number of the tree batch the
    /// entry came from (counted per end, from 1). Entries of one
    /// batch were read together: each leaf validated, the next one reached
    /// by lock coupling. Entries of two batches were not: between them no
    /// latch is held, and any number of writes may have run.
    pub(crate) fn next_with_batch<T>(
        &mut self,
        forward: bool,
        f: impl FnOnce(&[u8], &[u8], u64) -> T,
    ) -> Option<Result<T>> {
        if self.finished {
            return None;
        }
        loop {
            let (own, other) = if forward { (&mut self.front, &self.back) } else { (&mut self.back, &self.front) };
            if let Some((key, value)) = own.end_entry(forward) {
                let inside = if forward {
                    below(key, boundary(other.last_key(), &self.upper))
                } else {
                    above(key, boundary(other.first_key(), &self.lower))
                };
                if !inside {
                    // The other end already returned it: the ends met.
                    self.finished = true;
                    return None;
                }
                let out = f(key, value, self.fetches[usize::from(!forward)]);
                own.pop_end(forward);
                return Some(Ok(out));
            }
            match self.fetch(forward) {
                Ok(true) => {}
                Ok(false) => {
                    self.finished = true;
                    return None;
                }
                Err(error) => {
                    self.finished = true;
                    return Some(Err(error));
                }
            }
        }
    }

    fn advance(&mut self, forward: bool) -> Option<Result<(Vec<u8>, Vec<u8>)>> {
        self.next_with(forward, |key, value| (key.to_vec(), value.to_vec()))
    }
}

#[cfg(test)]
impl Range<'_> {
    /// Entries buffered at the front, and where its last batch stopped.
    pub(crate) fn front_state(&self) -> (usize, Resume) {
        (self.front.len(), self.resume[0])
    }

    /// The same for the back.
    pub(crate) fn back_state(&self) -> (usize, Resume) {
        (self.back.len(), self.resume[1])
    }
}

impl Iterator for Range<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.advance(true)
    }
}

impl DoubleEndedIterator for Range<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.advance(false)
    }
}
