//! A point lookup for the MVCC layer: the first entry in a closed key
//! range, with one descent and no iterator (a read at a snapshot seeks to
//! `(key, ts)` and takes the first version it finds).

use super::{BTree, Pinning};
use crate::Result;
use std::ops::Bound;

impl BTree {
    /// The first entry with a key in `lower..=upper`. Entry and exit: no
    /// latch held.
    pub(crate) fn first_in(&self, lower: &[u8], upper: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let batch = self.retry(Pinning::SharedOnly, |tree, pessimistic| {
            tree.batch_forward(Bound::Included(lower), Bound::Included(upper), 1, pessimistic)
        })?;
        Ok(batch.into_iter().next())
    }
}
