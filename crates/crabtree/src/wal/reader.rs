//! The log reader: replays records in LSN order and finds the end of the
//! log, telling a torn tail from damage to log that was already synced.
//!
//! # The durable horizon
//! A reader that meets an invalid record at LSN `q` (bad CRC, wrong LSN
//! field, zeroed space, an incarnation older than the previous record's, or
//! a segment that is not there) must decide: was `q` never synced (a crash
//! cut the log there: stop, the log ends at `q`), or was it synced and then
//! damaged (`Error::LogCorruption { lsn: q }`, never a silent truncation)?
//!
//! The evidence is in the log itself. Before the flusher writes a batch it
//! appends a *horizon record* whose payload is the durable LSN `X` it had
//! reached: "everything below `X` was synced before this record was
//! written". A valid horizon record is true whenever it is readable (it was
//! composed after the sync that made `X` durable returned). So at `q` the
//! reader scans every 8-aligned position after `q` in the live segments for
//! a valid horizon record (LSN field equal to its position, CRC, incarnation
//! no older than the last good record's); if any claims `X > q`, the bytes
//! at `q` were synced and are damaged: corruption. Otherwise `q` is a torn
//! tail.
//!
//! What this cannot see: damage inside the *last* synced batch before a
//! crash, whose horizon would only be written with the next batch. The
//! flusher narrows that window: after `flush_delay` of quiet it appends and
//! syncs a horizon record on its own, and `close` ends the log with a run of
//! them reaching 512 bytes past the last record (so damage that runs from
//! that record over the claims after it, if shorter, leaves one readable:
//! `writer::CLOSE_CLAIM_SPAN`), so only the batches of the last
//! `flush_delay` before a crash are covered by their CRCs alone (damage
//! there reads as a torn tail).
//!
//! # Stale bytes
//! A recycled segment holds old records whose LSN fields do not match their
//! new positions. Unsynced records a crash left *past* the valid end are
//! overwritten by the next handle, which writes with a higher incarnation:
//! if a later crash leaves an old record exactly where a new one should
//! start, its older incarnation rejects it. Allocation: a payload buffer is
//! sized only from a length already checked against
//! `WAL_RECORD_PAYLOAD_MAX`.

use super::record::{self, RecordHeader, RecordType};
use super::segment::Segments;
use crate::ids::Lsn;
use crate::limits::WAL_RECORD_HEADER_SIZE;
use crate::{Error, Result};

/// Where the log ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEnd {
    /// The LSN just past the last valid record: the next append goes here.
    pub end: Lsn,
    /// The LSN the reading started at.
    pub start: Lsn,
    /// Largest durable LSN claimed by a horizon record (valid part only).
    pub horizon: Lsn,
    /// Records replayed (horizon records not counted).
    pub records: u64,
}

/// Reads the log of `segments` from its first live segment's first
/// record, calling `on_record(lsn, kind, payload)` for every record but
/// the flusher's horizon records, in LSN order. Returns where it ends, or
/// `Error::LogCorruption` if synced log is damaged.
pub fn scan(segments: &Segments, mut on_record: impl FnMut(Lsn, RecordType, &[u8]) -> Result<()>) -> Result<LogEnd> {
    let indices = segments.live_indices();
    let Some(first) = indices.first().and_then(|&index| segments.live(index)) else {
        return Ok(LogEnd { end: Lsn::ZERO, start: Lsn::ZERO, horizon: Lsn::ZERO, records: 0 });
    };
    let start = first.header.first_record;
    let base = indices.first().map_or(0, |&index| index * segments.payload());
    if start.0 < base || !start.0.is_multiple_of(8) {
        return Err(Error::LogCorruption { lsn: start, reason: "first record outside its segment".into() });
    }
    let mut at = start;
    let mut incarnation = 0u32;
    let mut horizon = Lsn::ZERO;
    let mut records = 0u64;
    let mut header_bytes = [0u8; WAL_RECORD_HEADER_SIZE];
    let mut payload = Vec::new();
    let mut ahead = ReadAhead::default();
    loop {
        let Some(header) = read_record(segments, &mut ahead, at, incarnation, &mut header_bytes, &mut payload)? else {
            let claim = horizon.max(claim_beyond(segments, at, incarnation)?);
            if claim > at {
                return Err(Error::LogCorruption {
                    lsn: at,
                    reason: format!("invalid record below the durable horizon {}", claim.0),
                });
            }
            return Ok(LogEnd { end: at, start, horizon, records });
        };
        incarnation = header.incarnation;
        if header.kind == RecordType::HORIZON {
            if let Some(claim) = record::decode_horizon(&payload) {
                horizon = horizon.max(claim);
            }
        } else {
            on_record(at, header.kind, &payload)?;
            records += 1;
        }
        at = header.end();
    }
}

/// Bytes read from a segment at once while scanning.
const READ_AHEAD: u64 = 1 << 20;

/// The log bytes `start..start + buf.len()`, read in one call: a scan
/// reads records in LSN order, so one `pread` of up to `READ_AHEAD` bytes
/// (never past the end of the segment it starts in) serves many records
/// instead of two calls per record.
#[derive(Default)]
struct ReadAhead {
    start: u64,
    buf: Vec<u8>,
}

impl ReadAhead {
    /// Fills `out` with the log bytes at `at`; false where
    /// `Segments::read` would be false (a segment that is not live).
    fn read(&mut self, segments: &Segments, at: Lsn, out: &mut [u8]) -> Result<bool> {
        let end = at.0 + out.len() as u64;
        if at.0 >= self.start && end <= self.start + self.buf.len() as u64 {
            let from = (at.0 - self.start) as usize;
            if let Some(bytes) = self.buf.get(from..from + out.len()) {
                out.copy_from_slice(bytes);
                return Ok(true);
            }
        }
        let to_segment_end = segments.payload() - at.0 % segments.payload();
        let want = (out.len() as u64).max(READ_AHEAD.min(to_segment_end)) as usize;
        self.buf.resize(want, 0);
        if !segments.read(at, &mut self.buf)? {
            self.buf.clear();
            return Ok(false);
        }
        self.start = at.0;
        match self.buf.get(..out.len()) {
            Some(bytes) => {
                out.copy_from_slice(bytes);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Reads and validates the record at `at`; `None` if there is no valid one.
fn read_record(
    segments: &Segments,
    ahead: &mut ReadAhead,
    at: Lsn,
    incarnation: u32,
    header_bytes: &mut [u8; WAL_RECORD_HEADER_SIZE],
    payload: &mut Vec<u8>,
) -> Result<Option<RecordHeader>> {
    if !ahead.read(segments, at, header_bytes)? {
        return Ok(None);
    }
    let Some(header) = record::decode_header(header_bytes, at) else { return Ok(None) };
    if header.incarnation < incarnation || header.incarnation > segments.incarnation() {
        return Ok(None);
    }
    // `len` is at most WAL_RECORD_PAYLOAD_MAX (checked by decode_header).
    payload.resize(header.len as usize, 0);
    if !ahead.read(segments, Lsn(at.0 + WAL_RECORD_HEADER_SIZE as u64), payload)? {
        return Ok(None);
    }
    Ok(record::verify(&header, header_bytes, payload).then_some(header))
}

/// The largest durable LSN claimed by a valid horizon record found at an
/// 8-aligned position after `after` in the live segments (see module doc).
/// Reads the log stream run by run of contiguous live segments, in chunks
/// that overlap by a horizon record, so one spanning a chunk or segment
/// boundary is found too.
fn claim_beyond(segments: &Segments, after: Lsn, incarnation: u32) -> Result<Lsn> {
    let size = record::record_size(8);
    let payload = segments.payload();
    let mut claim = Lsn::ZERO;
    let mut chunk = vec![0u8; 64 * 1024];
    let indices = segments.live_indices();
    let mut run = 0;
    while let Some(&first) = indices.get(run) {
        // The run of contiguous indices starting at `first`.
        let mut last = first;
        while indices.get(run + 1) == Some(&(last + 1)) {
            last += 1;
            run += 1;
        }
        run += 1;
        let run_end = (last + 1) * payload;
        let mut pos = (first * payload).max(after.0 + 8) & !7;
        while pos + size as u64 <= run_end {
            let n = (run_end - pos).min(chunk.len() as u64) as usize;
            let Some(buf) = chunk.get_mut(..n) else { break };
            if !segments.read(Lsn(pos), buf)? {
                break;
            }
            for i in (0..n.saturating_sub(size - 1)).step_by(8) {
                let lsn = Lsn(pos + i as u64);
                let Some(bytes) = buf.get(i..i + size) else { break };
                // Cheap filters first: the LSN field and the type byte.
                if bytes.get(8..16) != Some(&lsn.0.to_le_bytes()[..]) || bytes.get(16) != Some(&RecordType::HORIZON.0) {
                    continue;
                }
                if let Some((header, body)) = record::decode(bytes, lsn)
                    && header.kind == RecordType::HORIZON
                    && header.incarnation >= incarnation
                    && header.incarnation <= segments.incarnation()
                    && let Some(x) = record::decode_horizon(body)
                {
                    claim = claim.max(x);
                }
            }
            if pos + n as u64 >= run_end {
                break;
            }
            pos += (n - (size - 8)) as u64;
        }
    }
    Ok(claim)
}
