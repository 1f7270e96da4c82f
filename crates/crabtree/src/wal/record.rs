//! WAL records: layout, encoder and decoder.
//!
//! A record is a 24-byte header and a payload, padded with zeros to a
//! multiple of 8 bytes (so every record starts at an LSN that is a multiple
//! of 8, and the log buffer is written and read in whole `u64` words):
//!
//! ```text
//! offset size field
//!  0      4   CRC-32C of bytes 4..24+len (rest of the header and payload)
//!  4      4   payload length len (<= WAL_RECORD_PAYLOAD_MAX)
//!  8      8   LSN of the record's first byte (its position in the log)
//! 16      1   type (0 is never valid: zeroed log space is not a record)
//! 17      3   reserved, zero
//! 20      4   incarnation of the log handle that wrote it
//! 24    len   payload
//!  ..         zero padding to a multiple of 8 (not covered by the CRC)
//! ```
//!
//! The log writer's appenders copy a record with the CRC field zero
//! ([`encode_header_unsealed`]); the flusher [`seal`]s it before it is
//! written, so every record on disk carries its CRC as above.
//!
//! Invariants the decoder checks, so that a torn, stale or garbage record is
//! never taken for a real one: the CRC; the LSN field equals the position the
//! reader expected (a recycled segment's old records and misdirected bytes
//! fail this); the length is within the limit *before* anything is sized
//! from it; the type is nonzero; reserved bytes are zero. The incarnation
//! check (never below the previous record's) is the reader's, in
//! `reader.rs`. Decoding never panics: no `unwrap`, no unchecked indexing.

use crate::ids::Lsn;
use crate::limits::{WAL_RECORD_ALIGN, WAL_RECORD_HEADER_SIZE, WAL_RECORD_PAYLOAD_MAX};

/// The kind of a record. Type 0 is invalid on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecordType(pub u8);

impl RecordType {
    /// Written by the flusher: "the log up to the LSN in the payload was
    /// durable before this record was written" (see `reader.rs`).
    pub const HORIZON: RecordType = RecordType(1);
    /// An opaque payload (tests and benchmarks, until mini-transactions
    /// define their own types).
    pub const DATA: RecordType = RecordType(2);
    /// A mini-transaction: redo entries for pages and the allocator
    /// (`page::redo`).
    pub const MTR: RecordType = RecordType(3);
    /// A completed checkpoint (`buffer::checkpoint`).
    pub const CHECKPOINT: RecordType = RecordType(4);
    /// Part of a checkpoint's free-page list, written before it.
    pub const CHECKPOINT_FREE: RecordType = RecordType(5);
    /// Marks where a checkpoint's redo starts (no payload).
    pub const CHECKPOINT_BEGIN: RecordType = RecordType(6);
    /// A commit record of the transaction layer (opaque here).
    pub const COMMIT: RecordType = RecordType(7);
    /// Written by a clean close after its last checkpoint: nothing was in
    /// flight, so recovery has nothing to finish and counts are exact.
    pub const CLEAN_CLOSE: RecordType = RecordType(8);
    /// A piece of a commit record too large for one record: the chain's
    /// id (`u64::MAX` in its first piece, whose own start LSN is then the
    /// id; that start LSN in the others), then the bytes. The chain counts
    /// only once its [`RecordType::COMMIT_END`] is in the log.
    pub const COMMIT_PART: RecordType = RecordType(9);
    /// The last piece of a chained commit record (same layout as
    /// [`RecordType::COMMIT_PART`]); the commit is its pieces' bytes in log
    /// order.
    pub const COMMIT_END: RecordType = RecordType(10);
    /// The data file was cut to fewer pages, all of the cut ones free
    /// (`buffer::compact`): `{new page count, old page count}`.
    pub const TRUNCATE: RecordType = RecordType(11);
}

/// A decoded, validated record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// CRC-32C stored in the header.
    pub crc: u32,
    /// Payload length, already checked against the limit.
    pub len: u32,
    /// The record's start LSN.
    pub lsn: Lsn,
    /// The record type (nonzero).
    pub kind: RecordType,
    /// The incarnation of the handle that wrote it.
    pub incarnation: u32,
}

impl RecordHeader {
    /// Bytes the whole record occupies in the log, padding included.
    pub fn size(&self) -> u64 {
        record_size(self.len as usize) as u64
    }

    /// The LSN just past the record.
    pub fn end(&self) -> Lsn {
        Lsn(self.lsn.0.saturating_add(self.size()))
    }
}

/// Bytes a record with a `len`-byte payload occupies, padding included.
pub const fn record_size(len: usize) -> usize {
    (WAL_RECORD_HEADER_SIZE + len).div_ceil(WAL_RECORD_ALIGN) * WAL_RECORD_ALIGN
}

/// The header bytes of a record, CRC included.
pub fn encode_header(lsn: Lsn, kind: RecordType, incarnation: u32, payload: &[u8]) -> [u8; WAL_RECORD_HEADER_SIZE] {
    let mut header = encode_header_unsealed(lsn, kind, incarnation, payload.len());
    let crc = crate::checksum::crc32c_pair(&header[4..], payload);
    header[0..4].copy_from_slice(&crc.to_le_bytes());
    header
}

/// The header bytes of a record with a `len`-byte payload, CRC field zero:
/// what an appender copies into the log buffer. The flusher computes the
/// CRC ([`seal`]) before the record leaves the buffer, on the other core
/// and over the bytes as they will be written (`writer.rs`).
pub fn encode_header_unsealed(
    lsn: Lsn,
    kind: RecordType,
    incarnation: u32,
    len: usize,
) -> [u8; WAL_RECORD_HEADER_SIZE] {
    assert!(len <= WAL_RECORD_PAYLOAD_MAX, "record payload over the limit");
    assert!(kind.0 != 0, "record type 0 is reserved");
    let mut header = [0u8; WAL_RECORD_HEADER_SIZE];
    header[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    header[8..16].copy_from_slice(&lsn.0.to_le_bytes());
    header[16] = kind.0;
    header[20..24].copy_from_slice(&incarnation.to_le_bytes());
    header
}

/// Computes and stores the CRC of a whole record (`bytes`: header, payload
/// and padding, as encoded with [`encode_header_unsealed`]). `None` if the
/// length field does not fit `bytes` (the caller's bug, not disk data).
pub fn seal(bytes: &mut [u8]) -> Option<u32> {
    let len = le_u32(bytes, 4)? as usize;
    let covered = bytes.get(4..WAL_RECORD_HEADER_SIZE.checked_add(len)?)?;
    let crc = crate::checksum::crc32c(covered);
    bytes.get_mut(0..4)?.copy_from_slice(&crc.to_le_bytes());
    Some(crc)
}

/// Calls `put` with each little-endian `u64` word of the whole record
/// (header, payload, zero padding), in order.
pub fn for_each_word(header: &[u8; WAL_RECORD_HEADER_SIZE], payload: &[u8], mut put: impl FnMut(u64)) {
    // Whole words as fixed-size arrays (one load each); only the tail is
    // copied byte-wise. Slicing a word out with a run-time length cost a
    // `memcpy` call per word: 6% of a logged insert (docs/BENCHMARKS.md).
    let (header_words, _) = header.as_chunks::<8>();
    let (words, tail) = payload.as_chunks::<8>();
    for word in header_words.iter().chain(words) {
        put(u64::from_le_bytes(*word));
    }
    if !tail.is_empty() {
        let mut word = [0u8; 8];
        word.get_mut(..tail.len()).unwrap_or_default().copy_from_slice(tail);
        put(u64::from_le_bytes(word));
    }
}

/// Encodes a whole record into a byte vector (tests and tools).
pub fn encode(lsn: Lsn, kind: RecordType, incarnation: u32, payload: &[u8]) -> Vec<u8> {
    let header = encode_header(lsn, kind, incarnation, payload);
    let mut out = Vec::with_capacity(record_size(payload.len()));
    for_each_word(&header, payload, |word| out.extend_from_slice(&word.to_le_bytes()));
    out
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..at + 4)?.try_into().ok().map(u32::from_le_bytes)
}

fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    bytes.get(at..at + 8)?.try_into().ok().map(u64::from_le_bytes)
}

/// Decodes a header read at `expected` (the position the reader is at).
/// `None` if it cannot be the header of a record there: wrong LSN, type 0,
/// nonzero reserved bytes, a length over the limit, or too few bytes. The
/// CRC is checked by [`verify`] once the payload is read.
pub fn decode_header(bytes: &[u8], expected: Lsn) -> Option<RecordHeader> {
    let crc = le_u32(bytes, 0)?;
    let len = le_u32(bytes, 4)?;
    let lsn = Lsn(le_u64(bytes, 8)?);
    let kind = RecordType(*bytes.get(16)?);
    let reserved = bytes.get(17..20)?;
    let incarnation = le_u32(bytes, 20)?;
    let valid = lsn == expected && kind.0 != 0 && reserved == [0, 0, 0] && (len as usize) <= WAL_RECORD_PAYLOAD_MAX;
    valid.then_some(RecordHeader { crc, len, lsn, kind, incarnation })
}

/// Whether `header_bytes` (the 24 header bytes) and `payload` (exactly
/// `header.len` bytes) match the stored CRC.
pub fn verify(header: &RecordHeader, header_bytes: &[u8], payload: &[u8]) -> bool {
    let Some(rest) = header_bytes.get(4..WAL_RECORD_HEADER_SIZE) else {
        return false;
    };
    payload.len() == header.len as usize && crate::checksum::crc32c_pair(rest, payload) == header.crc
}

/// Decodes a whole record from `bytes` (which start at `expected`):
/// `Some((header, payload))` if valid.
pub fn decode(bytes: &[u8], expected: Lsn) -> Option<(RecordHeader, &[u8])> {
    let header = decode_header(bytes, expected)?;
    let header_bytes = bytes.get(..WAL_RECORD_HEADER_SIZE)?;
    let payload = bytes.get(WAL_RECORD_HEADER_SIZE..WAL_RECORD_HEADER_SIZE + header.len as usize)?;
    verify(&header, header_bytes, payload).then_some((header, payload))
}

/// The payload of a [`RecordType::HORIZON`] record.
pub fn horizon_payload(durable: Lsn) -> [u8; 8] {
    durable.0.to_le_bytes()
}

/// Decodes a horizon payload.
pub fn decode_horizon(payload: &[u8]) -> Option<Lsn> {
    let bytes: [u8; 8] = payload.try_into().ok()?;
    Some(Lsn(u64::from_le_bytes(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_sizes() {
        for len in [0usize, 1, 7, 8, 9, 100] {
            let payload: Vec<u8> = (0..len as u8).collect();
            let bytes = encode(Lsn(4096), RecordType::DATA, 3, &payload);
            assert_eq!(bytes.len(), record_size(len));
            assert_eq!(bytes.len() % 8, 0);
            let (header, got) = decode(&bytes, Lsn(4096)).expect("valid");
            assert_eq!(got, payload.as_slice());
            assert_eq!(header.incarnation, 3);
            assert_eq!(header.end(), Lsn(4096 + bytes.len() as u64));
            // Another position: not this record.
            assert!(decode(&bytes, Lsn(4104)).is_none());
        }
    }

    #[test]
    fn sealing_later_gives_the_same_bytes() {
        for len in [0usize, 1, 7, 8, 9, 100] {
            let payload: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37)).collect();
            let sealed = encode(Lsn(4096), RecordType::MTR, 5, &payload);
            let header = encode_header_unsealed(Lsn(4096), RecordType::MTR, 5, len);
            let mut unsealed = Vec::new();
            for_each_word(&header, &payload, |word| unsealed.extend_from_slice(&word.to_le_bytes()));
            assert_ne!(unsealed, sealed, "an unsealed record must not pass as sealed");
            assert!(decode(&unsealed, Lsn(4096)).is_none());
            assert!(seal(&mut unsealed).is_some());
            assert_eq!(unsealed, sealed);
        }
        // A length that does not fit the bytes is refused, not a panic.
        let mut short = encode(Lsn(0), RecordType::DATA, 1, b"abc");
        short[4..8].copy_from_slice(&100u32.to_le_bytes());
        assert!(seal(&mut short).is_none());
    }

    #[test]
    fn every_bit_flip_is_rejected() {
        let bytes = encode(Lsn(64), RecordType::DATA, 1, b"hello, log");
        let covered = WAL_RECORD_HEADER_SIZE + 10;
        for byte in 0..covered {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[byte] ^= 1 << bit;
                assert!(decode(&bad, Lsn(64)).is_none(), "flip at {byte}.{bit} accepted");
            }
        }
    }

    #[test]
    fn zeroed_space_and_oversized_lengths_are_not_records() {
        assert!(decode(&[0u8; 64], Lsn(0)).is_none());
        let mut bytes = encode(Lsn(0), RecordType::DATA, 1, b"x");
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_header(&bytes, Lsn(0)).is_none());
    }

    proptest! {
        #[test]
        fn seal_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = seal(&mut bytes);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), at in 0u64..256) {
            let _ = decode(&bytes, Lsn(at));
            let _ = decode_header(&bytes, Lsn(at));
            let _ = decode_horizon(&bytes);
        }

        #[test]
        fn mutated_records_never_panic_and_never_lie(
            payload in proptest::collection::vec(any::<u8>(), 0..100),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let good = encode(Lsn(800), RecordType(7), 2, &payload);
            let mut bad = good.clone();
            for (at, mask) in flips {
                let at = at % bad.len();
                bad[at] ^= mask;
            }
            let bad = &bad[..cut % (bad.len() + 1)];
            if let Some((header, got)) = decode(bad, Lsn(800)) {
                // Accepted only if every covered byte is intact.
                prop_assert_eq!(got, payload.as_slice());
                prop_assert_eq!(header.kind, RecordType(7));
                prop_assert_eq!(&bad[..WAL_RECORD_HEADER_SIZE + payload.len()], &good[..WAL_RECORD_HEADER_SIZE + payload.len()]);
            }
        }
    }
}
