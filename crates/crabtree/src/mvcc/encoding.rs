//! How versions are stored in the tree, and the commit record.
//!
//! # Version keys
//! A version of user key `k` in keyspace `ks` committed at `ts` is the tree
//! key
//!
//! ```text
//!   ks(ks) | escaped(k) 0x00 0x00 | (u64::MAX - ts) (u64 BE)
//! ```
//!
//! `ks(ks)` is an order-preserving, prefix-free variable-length integer:
//! one byte for ids below `0xF0`, else `0xF0 + (n - 1)` followed by the `n`
//! big-endian bytes of the id (`n` = 1..=4). `escaped(k)` is `k` with every
//! `0x00` written `0x00 0xFF` (FoundationDB's tuple layer, with a two-byte
//! terminator so that a key is never confused with a longer one whatever
//! follows). Together they preserve memcmp order and are prefix-free, so
//! the versions of one user key are contiguous, ordered by keyspace, then
//! user key ascending, then (through the inverted timestamp) commit
//! timestamp descending. A user key costs its length plus one byte per
//! zero byte plus 2; with the 1-byte keyspace id and the timestamp, a
//! 16-byte key is stored in 27 bytes. The largest user key
//! ([`user_key_size_max`]) counts zero bytes twice.
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

/// Most bytes of the keyspace prefix.
pub(crate) const KEYSPACE_SIZE_MAX: usize = 5;
/// Bytes of the inverted timestamp suffix.
pub(crate) const TS_SIZE: usize = 8;
/// Bytes of the key terminator.
const TERMINATOR: [u8; 2] = [0, 0];
/// The byte after an escaped zero.
const ESCAPED_ZERO: u8 = 0xFF;
/// First lead byte of a multi-byte keyspace id.
const KS_MULTI: u8 = 0xF0;

/// Current commit record format.
const RECORD_VERSION: u8 = 1;

/// The largest user key (without zero bytes; each zero byte counts twice)
/// whose version key fits in `tree_key_size_max`, in any keyspace.
pub(crate) const fn user_key_size_max(tree_key_size_max: usize) -> usize {
    tree_key_size_max.saturating_sub(KEYSPACE_SIZE_MAX + TERMINATOR.len() + TS_SIZE)
}

/// The size a user key counts against [`user_key_size_max`]: its length
/// plus one per zero byte (escaped).
pub(crate) fn key_size(key: &[u8]) -> usize {
    key.len() + key.iter().filter(|&&b| b == 0).count()
}

/// The keyspace prefix of `ks`: the bytes and how many are used.
fn keyspace_bytes(ks: u32) -> ([u8; KEYSPACE_SIZE_MAX], usize) {
    let mut out = [0u8; KEYSPACE_SIZE_MAX];
    if ks < u32::from(KS_MULTI) {
        out[0] = ks as u8;
        return (out, 1);
    }
    let bytes = ks.to_be_bytes();
    let skip = (ks.leading_zeros() / 8) as usize;
    let tail = bytes.get(skip..).unwrap_or_default();
    // tail is 1..=4 bytes long, so the lead byte is 0xF0..=0xF3.
    out[0] = KS_MULTI + (tail.len() - 1) as u8;
    out[1..=tail.len()].copy_from_slice(tail);
    (out, 1 + tail.len())
}

/// Appends the keyspace prefix of `ks`.
pub(crate) fn encode_keyspace(ks: u32, out: &mut Vec<u8>) {
    let (bytes, len) = keyspace_bytes(ks);
    out.extend_from_slice(&bytes[..len]);
}

/// The keyspace prefix of `ks` as a vector.
pub(crate) fn keyspace_prefix(ks: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(KEYSPACE_SIZE_MAX);
    encode_keyspace(ks, &mut out);
    out
}

/// Decodes a keyspace prefix; returns the id and the bytes after it.
pub(crate) fn decode_keyspace(bytes: &[u8]) -> Result<(u32, &[u8])> {
    let bad = || corrupt("bad keyspace prefix".into());
    let (&lead, rest) = bytes.split_first().ok_or_else(bad)?;
    if lead < KS_MULTI {
        return Ok((u32::from(lead), rest));
    }
    let len = usize::from(lead - KS_MULTI) + 1;
    if len > 4 || rest.len() < len {
        return Err(bad());
    }
    let (id, rest) = rest.split_at(len);
    let mut be = [0u8; 4];
    be.get_mut(4 - len..).ok_or_else(bad)?.copy_from_slice(id);
    let ks = u32::from_be_bytes(be);
    // The shortest form only, so each id has one encoding.
    if ks < u32::from(KS_MULTI) || (len > 1 && id.first() == Some(&0)) {
        return Err(bad());
    }
    Ok((ks, rest))
}

/// Appends `ks(ks) | escaped(key) | 0x00 0x00`: the prefix every version of
/// `key` shares.
pub(crate) fn encode_prefix(ks: u32, key: &[u8], out: &mut Vec<u8>) {
    out.reserve(KEYSPACE_SIZE_MAX + key_size(key) + TERMINATOR.len() + TS_SIZE);
    encode_keyspace(ks, out);
    for &byte in key {
        out.push(byte);
        if byte == 0 {
            out.push(ESCAPED_ZERO);
        }
    }
    out.extend_from_slice(&TERMINATOR);
}

/// Writes `ks(ks) | escaped(key) | 0x00 0x00` (what [`encode_prefix`]
/// appends) at the start of `out` and returns its length; `None`, with
/// `out` partly written, if it does not fit. For point reads, which keep
/// their keys on the stack.
pub(crate) fn write_prefix(ks: u32, key: &[u8], out: &mut [u8]) -> Option<usize> {
    let (keyspace, keyspace_len) = keyspace_bytes(ks);
    out.get_mut(..keyspace_len)?.copy_from_slice(&keyspace[..keyspace_len]);
    let mut len = keyspace_len;
    if !key.contains(&0) {
        // The common case: nothing to escape.
        out.get_mut(len..len + key.len())?.copy_from_slice(key);
        len += key.len();
    } else {
        for &byte in key {
            *out.get_mut(len)? = byte;
            len += 1;
            if byte == 0 {
                *out.get_mut(len)? = ESCAPED_ZERO;
                len += 1;
            }
        }
    }
    out.get_mut(len..len + TERMINATOR.len())?.copy_from_slice(&TERMINATOR);
    Some(len + TERMINATOR.len())
}

/// `ks(ks) | escaped(key) | 0x00 0x00` as a new vector.
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
    if cut < 1 + TERMINATOR.len() {
        return Err(bad());
    }
    let (prefix, suffix) = tree_key.split_at(cut);
    let inverted = u64::from_be_bytes(suffix.try_into().map_err(|_| bad())?);
    Ok((prefix, u64::MAX - inverted))
}

/// Decodes a prefix into its keyspace and user key.
pub(crate) fn decode_prefix(prefix: &[u8]) -> Result<(u32, Vec<u8>)> {
    let mut key = Vec::with_capacity(prefix.len());
    let ks = decode_prefix_into(prefix, &mut key)?;
    Ok((ks, key))
}

/// Decodes a prefix: appends its user key to `out` and returns its
/// keyspace. On an error `out` may hold part of the key.
pub(crate) fn decode_prefix_into(prefix: &[u8], out: &mut Vec<u8>) -> Result<u32> {
    let (ks, escaped) = decode_keyspace(prefix)?;
    // Runs of non-zero bytes are copied whole; each zero is an escaped
    // zero or the terminator, which must end the prefix.
    let mut rest = escaped;
    while let Some(at) = rest.iter().position(|&byte| byte == 0) {
        out.extend_from_slice(rest.get(..at).unwrap_or_default());
        match rest.get(at + 1) {
            Some(&ESCAPED_ZERO) => out.push(0),
            Some(0) if at + 2 == rest.len() => return Ok(ks),
            _ => return Err(corrupt("bad escape in a version key".into())),
        }
        rest = rest.get(at + 2..).unwrap_or_default();
    }
    Err(corrupt("version key without a terminator".into()))
}

/// The keyspace of a prefix or version key.
pub(crate) fn keyspace_of(tree_key: &[u8]) -> Option<u32> {
    decode_keyspace(tree_key).ok().map(|(ks, _)| ks)
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
    if value_of(&stored)?.is_none() {
        return Ok(None);
    }
    stored.remove(0);
    Ok(Some(stored))
}

/// The value a stored version holds, `None` for a tombstone.
pub(crate) fn value_of(stored: &[u8]) -> Result<Option<&[u8]>> {
    match stored.split_first() {
        Some((&TAG_VALUE, value)) => Ok(Some(value)),
        Some((&TAG_TOMBSTONE, [])) => Ok(None),
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
    fn a_sixteen_byte_key_costs_eleven_bytes_more() {
        assert_eq!(version(1, &[7u8; 16], 1).len(), 27);
        assert_eq!(prefix(1, &[0, 1, 0]).len(), 1 + 5 + 2, "zero bytes are escaped");
    }

    #[test]
    fn largest_user_key_fits_in_every_keyspace() {
        for tree_max in [100usize, 982, 4000] {
            let max = user_key_size_max(tree_max);
            for ks in [0, 1, 0xEF, 0xF0, 0x1_0000, u32::MAX] {
                assert!(version(ks, &vec![1; max], 1).len() <= tree_max);
                assert!(version(ks, &vec![0; max / 2], 1).len() <= tree_max);
            }
            assert!(version(u32::MAX, &vec![1; max + 1], 1).len() > tree_max);
            assert_eq!(key_size(&vec![0; max / 2 + 1]), 2 * (max / 2 + 1));
        }
    }

    /// `decode_prefix` as it was first written, one byte at a time: the
    /// reference for the run-copying version.
    fn decode_prefix_bytewise(prefix: &[u8]) -> Option<(u32, Vec<u8>)> {
        let (ks, escaped) = decode_keyspace(prefix).ok()?;
        let mut key = Vec::new();
        let mut bytes = escaped.iter();
        while let Some(&byte) = bytes.next() {
            if byte != 0 {
                key.push(byte);
                continue;
            }
            match bytes.next() {
                Some(&ESCAPED_ZERO) => key.push(0),
                Some(0) if bytes.as_slice().is_empty() => return Some((ks, key)),
                _ => return None,
            }
        }
        None
    }

    fn keyspace() -> impl Strategy<Value = u32> {
        prop_oneof![0u32..3, 0xEEu32..0x102, 0xFFF0u32..0x1_0010, any::<u32>()]
    }

    proptest! {
        #[test]
        fn order_is_key_then_ts_descending(
            a in proptest::collection::vec(prop_oneof![0u8..3, 254u8..=255], 0..20),
            b in proptest::collection::vec(prop_oneof![0u8..3, 254u8..=255], 0..20),
            ka in keyspace(), kb in keyspace(), ta in prop_oneof![1u64..5, (u64::MAX - 3)..], tb in prop_oneof![1u64..5, (u64::MAX - 3)..],
        ) {
            let expected = (ka, &a, std::cmp::Reverse(ta)).cmp(&(kb, &b, std::cmp::Reverse(tb)));
            prop_assert_eq!(version(ka, &a, ta).cmp(&version(kb, &b, tb)), expected);
        }

        #[test]
        fn prefix_round_trips(key in proptest::collection::vec(any::<u8>(), 0..40), ks in keyspace(), ts in 1u64..) {
            let tree_key = version(ks, &key, ts);
            let (prefix, got_ts) = split_version(&tree_key).unwrap();
            prop_assert_eq!(got_ts, ts);
            prop_assert_eq!(decode_prefix(prefix).unwrap(), (ks, key));
        }

        #[test]
        fn write_prefix_is_encode_prefix_or_none(
            key in proptest::collection::vec(prop_oneof![0u8..3, any::<u8>()], 0..40),
            ks in keyspace(),
            room in 0usize..60,
        ) {
            let expected = prefix(ks, &key);
            let mut out = vec![0xAAu8; room];
            match write_prefix(ks, &key, &mut out) {
                Some(len) => prop_assert_eq!(&out[..len], expected.as_slice()),
                None => prop_assert!(expected.len() > room, "{} bytes fit in {room}", expected.len()),
            }
        }

        #[test]
        fn decode_prefix_agrees_with_a_byte_by_byte_decoder(
            bytes in proptest::collection::vec(prop_oneof![Just(0u8), Just(ESCAPED_ZERO), any::<u8>()], 0..48),
        ) {
            // Well-formed prefixes are rare among random bytes: also try
            // each with a keyspace byte and a terminator added.
            for candidate in [bytes.clone(), [&[1u8][..], &bytes, &TERMINATOR].concat()] {
                let fast = decode_prefix(&candidate).ok();
                prop_assert_eq!(fast, decode_prefix_bytewise(&candidate), "{:?}", candidate);
            }
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
