//! A batch of entries copied out of leaves for a range iterator.
//!
//! Every key and inline value of a batch lies in one byte buffer, in the
//! order the leaves were read: a leaf cell holds its key and its inline
//! value side by side, so each entry is one copy out of the page into the
//! buffer, and a batch costs a few growing allocations instead of two per
//! entry. The iterator allocates only for the entries it hands out (their
//! key and value vectors), so the entries of a batch that a short scan
//! never reaches cost a copy and no allocation. (Measured: the allocator
//! took about 40% of a 100-entry scan's instructions before, and the scan
//! 30% fewer after; `docs/BENCHMARKS.md`, "Stop 15".)
//!
//! Overflow values are not in the buffer: a batch records their chains,
//! and they are read after its leaves are left (`read.rs`), under the
//! epoch pin its reader took before validating the leaf that named the
//! first of them (as `value::find` does). The pin is the reader's, not
//! the batch's: a batch outlives the call that filled it (the iterator
//! keeps it), and a pin must not outlive the call or leave its thread, so
//! a batch (and the iterator holding it) stays `Send`.
//!
//! An entry is read and dropped at either end (`end_entry`, `pop_end`); what is
//! left between the two is what the iterator still holds.

use crate::Result;
use crate::ids::PageId;

/// Entries in key order: keys and inline values in `bytes`.
#[derive(Default)]
pub(crate) struct Batch {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
    /// Overflow values read so far (`Value::Read` indexes them).
    chains: Vec<Vec<u8>>,
    /// Entries before this one were taken from the front.
    head: usize,
    /// Overflow values are not read: they come back empty
    /// (`set_skip_overflow`). Kept by `clear`.
    skip_overflow: bool,
}

#[derive(Clone, Copy)]
struct Entry {
    /// The key is `bytes[start..start + key_len]`; an inline value follows.
    start: usize,
    key_len: usize,
    value: Value,
}

/// Where an entry's value is.
#[derive(Clone, Copy)]
enum Value {
    /// The `len` bytes after the key in `bytes`.
    Inline(usize),
    /// An overflow value not read yet: its chain, pinned by the batch.
    Chain { first: PageId, len: usize },
    /// An overflow value read: `chains[index]`.
    Read(usize),
    /// An overflow value not to be read (`skip_overflow`): handed out
    /// empty.
    Skipped,
}

impl Batch {
    /// Entries still held (not taken from either end).
    pub(crate) fn len(&self) -> usize {
        self.entries.len() - self.head
    }

    /// Whether every entry was taken (or none was added).
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties the batch, keeping its allocations.
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
        self.chains.clear();
        self.head = 0;
    }

    /// Makes room for `bytes` more bytes of keys and values at once (a
    /// leaf's worth), so the buffer does not grow entry by entry.
    pub(crate) fn reserve(&mut self, bytes: usize) {
        self.bytes.reserve(bytes);
    }

    /// Appends an entry whose key is `key_len` bytes followed by `inline`
    /// value bytes (0 for an overflow value, then `chain` names it; its
    /// reader must be pinned before the leaf is validated): `copy` fills
    /// those bytes, then `keep` sees the key; if it says no, the entry is
    /// dropped again. Returns `keep`'s answer.
    pub(crate) fn push_if(
        &mut self,
        key_len: usize,
        inline: usize,
        chain: Option<(PageId, usize)>,
        copy: impl FnOnce(&mut [u8]),
        keep: impl FnOnce(&[u8]) -> bool,
    ) -> bool {
        let start = self.bytes.len();
        self.bytes.resize(start + key_len + inline, 0);
        let copied = &mut self.bytes[start..];
        copy(copied);
        if !keep(&copied[..key_len]) {
            self.bytes.truncate(start);
            return false;
        }
        let value = match chain {
            Some((first, len)) => Value::Chain { first, len },
            None => Value::Inline(inline),
        };
        self.entries.push(Entry { start, key_len, value });
        true
    }

    /// Reads every overflow value the batch names with `read` (given the
    /// chain's first page and length). Entry: no latch held, pinned since
    /// before the first chain's leaf was validated, each leaf validated
    /// after its entries were pushed.
    /// With `skip_overflow` set, reads nothing: those values are handed
    /// out empty.
    pub(crate) fn read_chains(&mut self, mut read: impl FnMut(PageId, usize) -> Result<Vec<u8>>) -> Result<()> {
        for entry in &mut self.entries {
            if let Value::Chain { first, len } = entry.value {
                if self.skip_overflow {
                    entry.value = Value::Skipped;
                    continue;
                }
                self.chains.push(read(first, len)?);
                entry.value = Value::Read(self.chains.len() - 1);
            }
        }
        Ok(())
    }

    /// Whether overflow values are left unread (handed out empty): for
    /// callers that need keys and small values only.
    pub(crate) fn set_skip_overflow(&mut self, skip: bool) {
        self.skip_overflow = skip;
    }

    /// Reorders a batch read leaf by leaf from right to left into key
    /// order: `pieces[k]` is where the entries of the k-th leaf read begin
    /// (ascending within each leaf).
    pub(crate) fn reverse_pieces(&mut self, pieces: &[usize]) {
        let mut ordered = Vec::with_capacity(self.entries.len());
        let mut end = self.entries.len();
        for &start in pieces.iter().rev() {
            ordered.extend_from_slice(&self.entries[start..end]);
            end = start;
        }
        self.entries = ordered;
    }

    fn key_of(&self, entry: &Entry) -> &[u8] {
        &self.bytes[entry.start..entry.start + entry.key_len]
    }

    fn value_of(&self, entry: &Entry) -> &[u8] {
        match entry.value {
            Value::Inline(len) => {
                let at = entry.start + entry.key_len;
                &self.bytes[at..at + len]
            }
            Value::Read(index) => &self.chains[index],
            Value::Skipped => &[],
            // `read_chains` ran before any entry is handed out.
            Value::Chain { .. } => unreachable!("an overflow value handed out before it was read"),
        }
    }

    /// The key of entry `index` counted from the first one added.
    pub(crate) fn key_at(&self, index: usize) -> Option<&[u8]> {
        self.entries.get(index).map(|entry| self.key_of(entry))
    }

    /// The key of the first entry held.
    pub(crate) fn first_key(&self) -> Option<&[u8]> {
        self.entries.get(self.head).map(|entry| self.key_of(entry))
    }

    /// The key of the last entry held.
    pub(crate) fn last_key(&self) -> Option<&[u8]> {
        self.entries[self.head..].last().map(|entry| self.key_of(entry))
    }

    /// The first entry held (`front`) or the last: key and value.
    pub(crate) fn end_entry(&self, front: bool) -> Option<(&[u8], &[u8])> {
        let entry = if front { self.entries.get(self.head) } else { self.entries[self.head..].last() }?;
        Some((self.key_of(entry), self.value_of(entry)))
    }

    /// Stops holding the entry `end_entry(front)` names (none if empty).
    pub(crate) fn pop_end(&mut self, front: bool) {
        if self.is_empty() {
            return;
        }
        if front {
            self.head += 1;
        } else {
            self.entries.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entry at one end, copied, and no longer held.
    fn take(batch: &mut Batch, front: bool) -> Option<(Vec<u8>, Vec<u8>)> {
        let entry = batch.end_entry(front).map(|(key, value)| (key.to_vec(), value.to_vec()));
        batch.pop_end(front);
        entry
    }

    fn push(batch: &mut Batch, key: &[u8], value: &[u8]) -> bool {
        let both = [key, value].concat();
        batch.push_if(key.len(), value.len(), None, |out| out.copy_from_slice(&both), |_| true)
    }

    /// A batch holds no epoch pin, so the tree's range iterator, which
    /// keeps two of them between calls, can move to another thread.
    #[test]
    fn a_batch_and_the_range_iterator_holding_it_are_send() {
        fn send<T: Send>() {}
        send::<Batch>();
        send::<super::super::Range<'static>>();
    }

    #[test]
    fn entries_come_out_as_they_went_in_from_either_end() {
        let mut batch = Batch::default();
        assert!(batch.is_empty() && batch.first_key().is_none() && take(&mut batch, false).is_none());
        for i in 0..5u8 {
            assert!(push(&mut batch, &[b'k', i], &vec![i; usize::from(i)]));
        }
        assert_eq!(batch.len(), 5);
        assert_eq!(batch.first_key(), Some(&[b'k', 0][..]));
        assert_eq!(batch.last_key(), Some(&[b'k', 4][..]));
        assert_eq!(take(&mut batch, true), Some((vec![b'k', 0], vec![])));
        assert_eq!(take(&mut batch, false), Some((vec![b'k', 4], vec![4; 4])));
        assert_eq!(take(&mut batch, true), Some((vec![b'k', 1], vec![1])));
        assert_eq!(take(&mut batch, false), Some((vec![b'k', 3], vec![3; 3])));
        assert_eq!((batch.first_key(), batch.last_key()), (Some(&[b'k', 2][..]), Some(&[b'k', 2][..])));
        assert_eq!(take(&mut batch, false), Some((vec![b'k', 2], vec![2; 2])));
        assert!(batch.is_empty());
        assert_eq!((take(&mut batch, true), take(&mut batch, false)), (None, None));
    }

    #[test]
    fn a_refused_entry_leaves_no_trace() {
        let mut batch = Batch::default();
        assert!(push(&mut batch, b"a", b"1"));
        let refused = batch.push_if(1, 3, None, |out| out.copy_from_slice(b"zzzz"), |key| key == b"a");
        assert!(!refused);
        assert!(push(&mut batch, b"b", b"2"));
        assert_eq!(take(&mut batch, false), Some((b"b".to_vec(), b"2".to_vec())));
        assert_eq!(take(&mut batch, false), Some((b"a".to_vec(), b"1".to_vec())));
        assert!(batch.is_empty());
    }

    #[test]
    fn overflow_values_are_read_in_place_and_pieces_reverse_into_key_order() {
        let mut batch = Batch::default();
        // Two leaves read right to left: [c, d] then [a, b(overflow)].
        assert!(push(&mut batch, b"c", b"3"));
        assert!(push(&mut batch, b"d", b"4"));
        assert!(push(&mut batch, b"a", b"1"));
        let chain = Some((PageId(7), 3));
        assert!(batch.push_if(1, 0, chain, |out| out.copy_from_slice(b"b"), |_| true));
        batch.reverse_pieces(&[0, 2]);
        batch
            .read_chains(|first, len| {
                assert_eq!((first, len), (PageId(7), 3));
                Ok(b"two".to_vec())
            })
            .unwrap();
        let mut all = Vec::new();
        while let Some(entry) = take(&mut batch, true) {
            all.push(entry);
        }
        let expected: Vec<(Vec<u8>, Vec<u8>)> =
            [("a", "1"), ("b", "two"), ("c", "3"), ("d", "4")].map(|(k, v)| (k.into(), v.into())).into();
        assert_eq!(all, expected);
    }
}
