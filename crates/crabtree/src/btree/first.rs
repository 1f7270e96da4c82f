//! A point lookup for the MVCC layer: the value of the first entry in a
//! closed key range (a read at a snapshot seeks to `(key, ts)` and takes the
//! first version it finds). Like `get`: one point descent (its leaf may be
//! read uncached), the leaf searched in place, only the value copied; when
//! the range's first entry would be in the next leaf it falls back to a
//! one-entry range batch.

use super::batch::Batch;
use super::value;
use super::{Attempt, BTree, Pinning};
use crate::Result;
use crate::page::node::Node;
use std::cmp::Ordering;
use std::ops::Bound;

/// What the leaf holding `lower` says about `lower..=upper`.
enum InLeaf {
    Found(Vec<u8>),
    /// The first key at or after `lower` in the leaf is above `upper`.
    Empty,
    /// The leaf ends before a key at or after `lower`: look further right.
    Beyond,
}

impl BTree {
    /// The value of the first entry with a key in `lower..=upper`. Entry
    /// and exit: no latch held.
    pub(crate) fn first_in(&self, lower: &[u8], upper: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.retry(Pinning::SharedOnly, |tree, pessimistic| tree.first_in_attempt(lower, upper, pessimistic))? {
            InLeaf::Found(value) => Ok(Some(value)),
            InLeaf::Empty => Ok(None),
            InLeaf::Beyond => {
                let mut batch = Batch::default();
                self.retry(Pinning::SharedOnly, |tree, pessimistic| {
                    tree.batch_forward(Bound::Included(lower), Bound::Included(upper), 1, pessimistic, None, &mut batch)
                })?;
                Ok(batch.end_entry(true).map(|(_, value)| value.to_vec()))
            }
        }
    }

    fn first_in_attempt(&self, lower: &[u8], upper: &[u8], pessimistic: bool) -> Attempt<InLeaf> {
        // A point read's descent: a leaf that is not resident may be read
        // into a private copy (`buffer/uncached.rs`).
        let (leaf, found) = self.descend_to_key(lower, pessimistic)?;
        let page = leaf.page();
        let node = leaf.check(Node::new(&page, leaf.pid()))?;
        let (Ok(slot) | Err(slot)) = found;
        if slot >= node.len() {
            leaf.validate()?;
            return Ok(InLeaf::Beyond);
        }
        if leaf.check(node.compare_key(slot, upper))? == Ordering::Greater {
            leaf.validate()?;
            return Ok(InLeaf::Empty);
        }
        let value = leaf.check(node.value_ref(slot))?;
        let mut pin = None;
        let found = value::find(&leaf, value, &mut pin);
        leaf.validate()?;
        drop(leaf);
        Ok(InLeaf::Found(self.read_found(found)?))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::tree;

    /// Against the range iterator, for probes inside leaves, between them
    /// (the first entry in the next leaf) and past the end, with small
    /// pages so there are many leaf boundaries.
    #[test]
    fn first_in_agrees_with_range() {
        let tree = tree(512, 256);
        let key = |i: u32| format!("{i:06}").into_bytes();
        for i in (0..3000).step_by(3) {
            tree.insert(&key(i), &i.to_le_bytes()).unwrap();
        }
        for probe in 0..3010 {
            let (lower, upper) = (key(probe), key(probe + 1));
            let expected = tree.range(lower.clone()..=upper.clone()).next().map(|e| e.unwrap().1);
            assert_eq!(tree.first_in(&lower, &upper).unwrap(), expected, "probe {probe}");
        }
    }
}
