//! How versions are stored in the tree, and the commit record.
//!
//! # Version keys
//! A version of user key `k` in keyspace `ks` committed at `ts` is the tree
//! key
//!
//! ```text
//!   ks (u32 BE) | groups(k) | (u64::MAX - ts) (u64 BE)
//! ```
//!
//! `groups(k)` is the memcomparable group encoding (TiDB, MyRocks): `k` is
//! cut into 8-byte groups, the last one padded with zeros; each group is
//! followed by a marker byte, `0xFF` for a full group with more to come,
//! else `0xFF - padding` (`0xF7..=0xFE`); a key whose length is a multiple
//! of 8 ends with an all-padding group. The encoding preserves memcmp order
//! and is prefix-free (no encoded key is a prefix of another), so the
//! versions of one user key are contiguous, ordered by user key ascending,
//! then, through the inverted timestamp, by commit timestamp descending. Its
//! length, `9 * (len / 8 + 1)`, depends only on the key's length, so the
//! largest user key is a fixed number ([`user_key_size_max`]).
//!
//! # Version values
//! One tag byte, [`TAG_VALUE`] followed by the user's value, or
//! [`TAG_TOMBSTONE`] alone (a delete).
//!
//! # Commit records
//! What [`super::CommitLog`] carries (fixed-width little-endian):
//!
//! ```text
//!   version u8 (=1) | commit ts u64 | write count u32 |
//!   per write: keyspace u32 | key len u32 | key | tag u8 | (value len u32 | value, if tag = value)
//! ```
//!
//! The decoder never panics and never sizes an allocation from an
//! unchecked length: every length is checked against the bytes that remain.

use crate::ids::Lsn;
use crate::{Error, Result};

/// A commit timestamp. `0` is the empty database's snapshot: no commit has it.
pub(crate) type Ts = u64;

/// The tag of a version that holds a value.
pub(crate) const TAG_VALUE: u8 = 0;
/// The tag of a version that records a delete.
pub(crate) const TAG_TOMBSTONE: u8 = 1;

/// Bytes of the keyspace prefix.
pub(crate) const KEYSPACE_SIZE: usize = 4;
/// Bytes of the inverted timestamp suffix.
pub(crate) const TS_SIZE: usize = 8;
const GROUP: usize = 8;
const GROUP_ENCODED: usize = GROUP + 1;
const MARKER_FULL: u8 = 0xFF;

/// Current commit record format.
const RECORD_VERSION: u8 = 1;

/// The largest user key whose version key fits in `tree_key_size_max`.
pub(crate) const fn user_key_size_max(tree_key_size_max: usize) -> usize {
    let room = tree_key_size_max.saturating_sub(KEYSPACE_SIZE + TS_SIZE);
    let groups = room / GROUP_ENCODED;
    if groups == 0 { 0 } else { (groups - 1) * GROUP + (GROUP - 1) }
}

/// Length of `groups(k)` for a key of `len` bytes.
pub(crate) const fn groups_size(len: usize) -> usize {
    (len / GROUP + 1) * GROUP_ENCODED
}

/// Appends `ks | groups(key)`: the prefix every version of `key` shares.
pub(crate) fn encode_prefix(ks: u32, key: &[u8], out: &mut Vec<u8>) {
    out.reserve(KEYSPACE_SIZE + groups_size(key.len()) + TS_SIZE);
    out.extend_from_slice(&ks.to_be_bytes());
    let mut rest = key;
    loop {
        if rest.len() >= GROUP {
            let (group, tail) = rest.split_at(GROUP);
            out.extend_from_slice(group);
            out.push(MARKER_FULL);
            rest = tail;
        } else {
            let padding = GROUP - rest.len();
            out.extend_from_slice(rest);
            out.extend(std::iter::repeat_n(0u8, padding));
            // padding is 1..=8, so the marker is 0xF7..=0xFE.
            out.push(MARKER_FULL - padding as u8);
            return;
        }
    }
}

/// `ks | groups(key)` as a new vector.
pub(crate) fn prefix(ks: u32, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_prefix(ks, key, &mut out);
    out
}

/// The inverted timestamp suffix: larger `ts`, smaller bytes.
pub(crate) fn ts_suffix(ts: Ts) -> [u8; TS_SIZE] {
    (u64::MAX - ts).to_be_bytes()
}

/// The tree key of the version of `prefix` committed at `ts`.
pub(crate) fn version_key(prefix: &[u8], ts: Ts) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + TS_SIZE);
    out.extend_from_slice(prefix);
    out.extend_from_slice(&ts_suffix(ts));
    out
}

/// Splits a tree key into its prefix and commit timestamp.
pub(crate) fn split_version(tree_key: &[u8]) -> Result<(&[u8], Ts)> {
    let bad = || corrupt(format!("version key of {} bytes is too short", tree_key.len()));
    let cut = tree_key.len().checked_sub(TS_SIZE).ok_or_else(bad)?;
    if cut < KEYSPACE_SIZE + GROUP_ENCODED {
        return Err(bad());
    }
    let (prefix, suffix) = tree_key.split_at(cut);
    let inverted = u64::from_be_bytes(suffix.try_into().map_err(|_| bad())?);
    Ok((prefix, u64::MAX - inverted))
}

/// Decodes a prefix into its keyspace and user key.
pub(crate) fn decode_prefix(prefix: &[u8]) -> Result<(u32, Vec<u8>)> {
    let (ks, mut rest) =
        prefix.split_first_chunk::<KEYSPACE_SIZE>().ok_or_else(|| corrupt("version key without a keyspace".into()))?;
    let mut key = Vec::with_capacity(rest.len());
    loop {
        let Some((group, tail)) = rest.split_first_chunk::<GROUP_ENCODED>() else {
            return Err(corrupt("version key ends inside a group".into()));
        };
        let (data, marker) = group.split_at(GROUP);
        let marker = marker.first().copied().unwrap_or(0);
        rest = tail;
        if marker == MARKER_FULL {
            key.extend_from_slice(data);
            continue;
        }
        let padding = usize::from(MARKER_FULL.wrapping_sub(marker));
        if !(1..=GROUP).contains(&padding) || !rest.is_empty() {
            return Err(corrupt(format!("bad group marker {marker:#x}")));
        }
        let (kept, pad) = data.split_at(GROUP - padding);
        if pad.iter().any(|&b| b != 0) {
            return Err(corrupt("nonzero group padding".into()));
        }
        key.extend_from_slice(kept);
        return Ok((u32::from_be_bytes(*ks), key));
    }
}

/// The keyspace of a prefix or version key.
pub(crate) fn keyspace_of(tree_key: &[u8]) -> Option<u32> {
    tree_key.first_chunk::<KEYSPACE_SIZE>().map(|ks| u32::from_be_bytes(*ks))
}

/// A stored version value: the tag byte, then the value.
pub(crate) fn encode_value(value: Option<&[u8]>) -> Vec<u8> {
    match value {
        Some(value) => {
            let mut out = Vec::with_capacity(value.len() + 1);
            out.push(TAG_VALUE);
            out.extend_from_slice(value);
            out
        }
        None => vec![TAG_TOMBSTONE],
    }
}

/// Decodes a stored version value: `Some(value)` or `None` for a tombstone.
pub(crate) fn decode_value(mut stored: Vec<u8>) -> Result<Option<Vec<u8>>> {
    match stored.first() {
        Some(&TAG_VALUE) => {
            stored.remove(0);
            Ok(Some(stored))
        }
        Some(&TAG_TOMBSTONE) if stored.len() == 1 => Ok(None),
        _ => Err(corrupt(format!("bad version value tag ({} bytes)", stored.len()))),
    }
}

/// Whether a stored version value is a tombstone.
pub(crate) fn is_tombstone(stored: &[u8]) -> bool {
    stored.first() == Some(&TAG_TOMBSTONE)
}

fn corrupt(reason: String) -> Error {
    Error::corruption(crate::ids::PageId::HEADER, format!("mvcc: {reason}"))
}

/// One write of a commit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Write {
    pub(crate) keyspace: u32,
    pub(crate) key: Vec<u8>,
    /// `None` is a delete.
    pub(crate) value: Option<Vec<u8>>,
}

/// A decoded commit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CommitRecord {
    pub(crate) ts: Ts,
    pub(crate) writes: Vec<Write>,
}

/// Encodes a commit record from `(keyspace, key, value)` triples.
pub(crate) fn encode_commit<'a>(
    ts: Ts,
    writes: impl ExactSizeIterator<Item = (u32, &'a [u8], Option<&'a [u8]>)>,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(RECORD_VERSION);
    out.extend_from_slice(&ts.to_le_bytes());
    let count = u32::try_from(writes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_le_bytes());
    for (ks, key, value) in writes.take(count as usize) {
        out.extend_from_slice(&ks.to_le_bytes());
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        match value {
            Some(value) => {
                out.push(TAG_VALUE);
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                out.extend_from_slice(value);
            }
            None => out.push(TAG_TOMBSTONE),
        }
    }
    out
}

/// A bounds-checked reader over record bytes.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        if len > self.rest.len() {
            return Err(record_corrupt(format!("{len} bytes wanted, {} left", self.rest.len())));
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }
    fn u32(&mut self) -> Result<u32> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes(bytes.try_into().map_err(|_| record_corrupt("u32".into()))?))
    }
    fn u64(&mut self) -> Result<u64> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| record_corrupt("u64".into()))?))
    }
}

fn record_corrupt(reason: String) -> Error {
    // The caller (recovery) knows the record's LSN and may restate it.
    Error::LogCorruption { lsn: Lsn::ZERO, reason: format!("commit record: {reason}") }
}

/// Smallest encoded write: keyspace, key length, tag.
const WRITE_ENCODED_MIN: usize = 4 + 4 + 1;

/// Decodes a commit record. Never panics; any malformed input is
/// [`Error::LogCorruption`] (with LSN 0: the caller knows the real one).
pub(crate) fn decode_commit(bytes: &[u8]) -> Result<CommitRecord> {
    let mut cursor = Cursor { rest: bytes };
    let version = cursor.u8()?;
    if version != RECORD_VERSION {
        return Err(record_corrupt(format!("unknown version {version}")));
    }
    let ts = cursor.u64()?;
    if ts == 0 {
        return Err(record_corrupt("commit timestamp 0".into()));
    }
    let count = cursor.u32()? as usize;
    if count > cursor.rest.len() / WRITE_ENCODED_MIN {
        return Err(record_corrupt(format!("{count} writes cannot fit in {} bytes", cursor.rest.len())));
    }
    let mut writes = Vec::with_capacity(count);
    for _ in 0..count {
        let keyspace = cursor.u32()?;
        let key_len = cursor.u32()? as usize;
        let key = cursor.take(key_len)?.to_vec();
        let value = match cursor.u8()? {
            TAG_VALUE => {
                let len = cursor.u32()? as usize;
                Some(cursor.take(len)?.to_vec())
            }
            TAG_TOMBSTONE => None,
            tag => return Err(record_corrupt(format!("bad tag {tag}"))),
        };
        writes.push(Write { keyspace, key, value });
    }
    if !cursor.rest.is_empty() {
        return Err(record_corrupt(format!("{} trailing bytes", cursor.rest.len())));
    }
    Ok(CommitRecord { ts, writes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn version(ks: u32, key: &[u8], ts: Ts) -> Vec<u8> {
        version_key(&prefix(ks, key), ts)
    }

    #[test]
    fn groups_size_is_exact() {
        for len in 0..40 {
            assert_eq!(prefix(1, &vec![7u8; len]).len(), KEYSPACE_SIZE + groups_size(len));
        }
    }

    #[test]
    fn largest_user_key_fits_and_one_more_does_not() {
        for tree_max in [100usize, 982, 4000] {
            let max = user_key_size_max(tree_max);
            assert!(version(1, &vec![0; max], 1).len() <= tree_max);
            assert!(version(1, &vec![0; max + 1], 1).len() > tree_max);
        }
    }

    proptest! {
        #[test]
        fn order_is_key_then_ts_descending(
            a in proptest::collection::vec(0u8..4, 0..20), b in proptest::collection::vec(0u8..4, 0..20),
            ka in 0u32..3, kb in 0u32..3, ta in 1u64..5, tb in 1u64..5,
        ) {
            let expected = (ka, &a, std::cmp::Reverse(ta)).cmp(&(kb, &b, std::cmp::Reverse(tb)));
            prop_assert_eq!(version(ka, &a, ta).cmp(&version(kb, &b, tb)), expected);
        }

        #[test]
        fn prefix_round_trips(key in proptest::collection::vec(any::<u8>(), 0..40), ks in any::<u32>(), ts in 1u64..) {
            let tree_key = version(ks, &key, ts);
            let (prefix, got_ts) = split_version(&tree_key).unwrap();
            prop_assert_eq!(got_ts, ts);
            prop_assert_eq!(decode_prefix(prefix).unwrap(), (ks, key));
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_commit(&bytes);
            let _ = split_version(&bytes).and_then(|(p, _)| decode_prefix(p));
            let _ = decode_prefix(&bytes);
            let _ = decode_value(bytes);
        }

        #[test]
        fn commit_record_round_trips(
            ts in 1u64..,
            writes in proptest::collection::vec(
                (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..10),
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..10))), 0..8),
        ) {
            let bytes = encode_commit(ts, writes.iter().map(|(ks, k, v)| (*ks, k.as_slice(), v.as_deref())));
            let record = decode_commit(&bytes).unwrap();
            prop_assert_eq!(record.ts, ts);
            let got: Vec<_> = record.writes.into_iter().map(|w| (w.keyspace, w.key, w.value)).collect();
            prop_assert_eq!(got, writes.clone());
            // Every truncation is an error, never a panic.
            for cut in 0..bytes.len() {
                prop_assert!(decode_commit(&bytes[..cut]).is_err());
            }
        }
    }
}
