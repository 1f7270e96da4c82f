//! [`Iter`]: the range iterator of snapshots and transactions.
//!
//! It merges two sorted sources: the versions visible at the snapshot
//! (`mvcc::read::VersionRange`) and, for a transaction, a copy of its
//! buffered writes in the range taken when the iterator was made (a
//! buffered write replaces the stored entry of its key; a buffered delete
//! hides it). Both ends work; every key is returned once. The iterator
//! keeps its snapshot registered, so vacuum leaves what it reads alone
//! even if the snapshot or transaction is dropped first.

use super::snapshot::Registration;
use crate::Result;
use crate::mvcc::read::VersionRange;
use crate::sync::Arc;
use std::cmp::Ordering;
use std::collections::VecDeque;

type Entry = (Vec<u8>, Vec<u8>);

/// A double-ended iterator over the entries of a key range, in key order,
/// from [`Snapshot::range`](crate::Snapshot::range) or
/// [`Transaction::range`](crate::Transaction::range). Owns what it needs
/// (`Send + 'static`). An item is an error when reading the tree failed;
/// the iterator ends after it.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
/// db.update(|tx| { tx.put(b"a", b"1")?; tx.put(b"b", b"2")?; tx.put(b"c", b"3") })?;
/// let snap = db.snapshot();
/// let keys: Vec<Vec<u8>> = snap.range::<&[u8], _>(..)?.rev().map(|e| e.map(|(k, _)| k)).collect::<Result<_, _>>()?;
/// assert_eq!(keys, [b"c".to_vec(), b"b".to_vec(), b"a".to_vec()]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Iter {
    stored: VersionRange,
    /// The transaction's writes in the range, ascending; `None` is a delete.
    writes: VecDeque<(Vec<u8>, Option<Vec<u8>>)>,
    /// A stored entry taken by the front (back) but not returned yet.
    stored_front: Option<Entry>,
    stored_back: Option<Entry>,
    finished: bool,
    _registration: Arc<Registration>,
}

impl Iter {
    pub(crate) fn new(
        stored: VersionRange,
        writes: VecDeque<(Vec<u8>, Option<Vec<u8>>)>,
        registration: Arc<Registration>,
        empty: bool,
    ) -> Iter {
        Iter { stored, writes, stored_front: None, stored_back: None, finished: empty, _registration: registration }
    }

    /// The next stored entry for one end, without taking it.
    fn peek_stored(&mut self, forward: bool) -> Result<Option<&Entry>> {
        let (slot, other) = if forward {
            (&mut self.stored_front, &mut self.stored_back)
        } else {
            (&mut self.stored_back, &mut self.stored_front)
        };
        if slot.is_none() {
            let next = if forward { self.stored.next() } else { self.stored.next_back() };
            *slot = match next {
                Some(entry) => Some(entry?),
                // The stored range is used up; the other end may hold the
                // last entry.
                None => other.take(),
            };
        }
        Ok(slot.as_ref())
    }

    fn advance(&mut self, forward: bool) -> Result<Option<Entry>> {
        if self.writes.is_empty() {
            // Nothing to merge (a snapshot's iterator, or no buffered
            // write in the range): the stored entries as they come.
            self.peek_stored(forward)?;
            return Ok(if forward { self.stored_front.take() } else { self.stored_back.take() });
        }
        loop {
            let stored_key = self.peek_stored(forward)?.map(|(key, _)| key.clone());
            let write = if forward { self.writes.front() } else { self.writes.back() };
            let order = match (&stored_key, write) {
                (None, None) => return Ok(None),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(stored), Some((written, _))) => {
                    let order = stored.cmp(written);
                    if forward { order } else { order.reverse() }
                }
            };
            let slot = if forward { &mut self.stored_front } else { &mut self.stored_back };
            if order == Ordering::Less {
                return Ok(slot.take());
            }
            if order == Ordering::Equal {
                slot.take();
            }
            let write = if forward { self.writes.pop_front() } else { self.writes.pop_back() };
            if let Some((key, Some(value))) = write {
                return Ok(Some((key, value)));
            }
        }
    }

    fn step(&mut self, forward: bool) -> Option<Result<Entry>> {
        if self.finished {
            return None;
        }
        let outcome = self.advance(forward);
        if !matches!(outcome, Ok(Some(_))) {
            self.finished = true;
        }
        outcome.transpose()
    }
}

impl Iterator for Iter {
    type Item = Result<(Vec<u8>, Vec<u8>)>;
    fn next(&mut self) -> Option<Self::Item> {
        self.step(true)
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.step(false)
    }
}

#[cfg(test)]
mod tests {
    use crate::Db;

    /// A transaction's iterator merges its buffered writes with the stored
    /// entries; once the writes are used up it passes stored entries
    /// through, and the front may still hold a stored entry it peeked at
    /// while a write came first. A step from the back must not return
    /// that one.
    #[test]
    fn the_back_after_the_writes_are_used_up_takes_its_own_entry() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().join("iter.crab")).unwrap();
        db.update(|tx| {
            for key in [b"a", b"c", b"e"] {
                tx.put(key, key)?;
            }
            Ok(())
        })
        .unwrap();
        let mut tx = db.begin();
        tx.put(b"b", b"b").unwrap();
        let mut iter = tx.range::<&[u8], _>(..).unwrap();
        let mut next = |front: bool| {
            let entry = if front { iter.next() } else { iter.next_back() };
            entry.map(|entry| entry.unwrap().0)
        };
        assert_eq!(next(true), Some(b"a".to_vec()));
        // The write `b` comes before the stored `c`, which the front keeps.
        assert_eq!(next(true), Some(b"b".to_vec()));
        assert_eq!(next(false), Some(b"e".to_vec()));
        assert_eq!(next(true), Some(b"c".to_vec()));
        assert_eq!((next(true), next(false)), (None, None));
    }
}
