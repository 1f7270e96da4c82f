//! Range iterators: double-ended, holding no latch and no epoch pin between
//! calls.
//!
//! An iterator remembers the last key it returned from each end and refills
//! a buffer with the next entries beyond it: a fresh descent from the root,
//! then whole leaves along the sibling links until `SCAN_BATCH_ENTRIES` (see
//! `read`). Each leaf is read and validated as a whole and the next one is
//! reached by lock coupling, and consecutive batches are separated by the
//! returned keys, so every key present for the whole scan is returned
//! exactly once and in order, whatever splits and deletes run meanwhile.

use super::BTree;
use super::read::{Batch, above, below};
use crate::Result;
use std::collections::VecDeque;
use std::ops::{Bound, RangeBounds};

/// An iterator over the entries of a key range, in key order.
pub struct Range<'t> {
    tree: &'t BTree,
    /// Entries must satisfy this lower bound (advanced as the front moves).
    lower: Bound<Vec<u8>>,
    /// Entries must satisfy this upper bound (advanced as the back moves).
    upper: Bound<Vec<u8>>,
    front: VecDeque<(Vec<u8>, Vec<u8>)>,
    back: VecDeque<(Vec<u8>, Vec<u8>)>,
    /// Set after an error or when the ends met.
    finished: bool,
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

impl<'t> Range<'t> {
    pub(crate) fn new<K: AsRef<[u8]>, R: RangeBounds<K>>(tree: &'t BTree, range: R) -> Range<'t> {
        Range {
            tree,
            lower: owned(range.start_bound()),
            upper: owned(range.end_bound()),
            front: VecDeque::new(),
            back: VecDeque::new(),
            finished: false,
        }
    }

    fn fetch(&self, forward: bool) -> Result<Batch> {
        let (lower, upper) = (borrowed(&self.lower), borrowed(&self.upper));
        self.tree.retry(|tree, pessimistic| {
            if forward {
                tree.batch_forward(lower, upper, pessimistic)
            } else {
                tree.batch_backward(lower, upper, pessimistic)
            }
        })
    }

    /// Whether `key` is still inside both moving bounds.
    fn inside(&self, key: &[u8]) -> bool {
        above(key, borrowed(&self.lower)) && below(key, borrowed(&self.upper))
    }

    fn advance(&mut self, forward: bool) -> Option<Result<(Vec<u8>, Vec<u8>)>> {
        if self.finished {
            return None;
        }
        loop {
            let buffer = if forward { &mut self.front } else { &mut self.back };
            if let Some(entry) = if forward { buffer.pop_front() } else { buffer.pop_back() } {
                if !self.inside(&entry.0) {
                    // The other end already returned it: the ends met.
                    self.finished = true;
                    return None;
                }
                if forward {
                    self.lower = Bound::Excluded(entry.0.clone());
                } else {
                    self.upper = Bound::Excluded(entry.0.clone());
                }
                return Some(Ok(entry));
            }
            match self.fetch(forward) {
                Ok(batch) if batch.is_empty() => {
                    self.finished = true;
                    return None;
                }
                Ok(batch) => {
                    let buffer = if forward { &mut self.front } else { &mut self.back };
                    buffer.extend(batch);
                }
                Err(error) => {
                    self.finished = true;
                    return Some(Err(error));
                }
            }
        }
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
