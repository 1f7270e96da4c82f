//! Segment files: the log's fixed-size, preallocated, recycled files.
//!
//! The log is one stream of bytes addressed by LSN. It is cut into segments
//! of `P = segment_size - WAL_SEGMENT_HEADER_SIZE` bytes: segment index `k`
//! holds LSNs `[k*P, (k+1)*P)` at file offsets `WAL_SEGMENT_HEADER_SIZE..`.
//! Records may span a segment boundary (so reserving log space is a single
//! `fetch_add`, with no segment check).
//!
//! Files are named by *slot* (`00000000.wal`, `00000001.wal`, ...), not by
//! index: a slot is recycled in place by rewriting its header, never renamed
//! or deleted. Each file starts with a header (in its first 512-byte sector,
//! the rest of the first 4 KiB block is zero):
//!
//! ```text
//! offset size field
//!  0      4   CRC-32C of bytes 4..64
//!  4      4   format version (1)
//!  8      8   magic "CRABWAL\0"
//! 16      8   segment file size in bytes
//! 24      8   segment index k, or u64::MAX: free (recyclable)
//! 32      8   LSN of the first record that starts in this segment
//! 40      4   incarnation of the handle that last wrote this header
//! 44     20   reserved, zero
//! ```
//!
//! Invariants:
//! * A file is created whole: zero-filled to its full size with a free
//!   header, fsynced, then its directory is fsynced, before any log byte is
//!   written to it. So a later `fdatasync` of log data never has to persist
//!   a size change or block allocation (the point of preallocation: an
//!   overwrite + `fdatasync` is cheaper than an append, see BENCHMARKS.md).
//! * A segment's live header is written together with its first log bytes
//!   and made durable by the same `fdatasync`; until then nothing in it is
//!   acknowledged, so losing the header loses only unsynced log.
//! * Recycling rewrites the header as free and fsyncs it, one segment at a
//!   time, oldest first, before the slot is reused: the live segments on disk
//!   are always a contiguous run of indices (except for a live header that
//!   was damaged on the medium, which the reader notices).
//! * Every header write carries the handle's incarnation, and a new handle
//!   stamps `max + 1` into a header (fsynced) before it writes any record;
//!   so every record ever written has an incarnation `<=` the largest on
//!   disk, and the new handle's records are strictly newer than any stale
//!   record left in recycled space (the reader uses this, `reader.rs`).
//!
//! Who holds what: [`Segments`] is owned by the WAL behind one mutex, taken
//! by the flusher for each batch and by `recycle`; readers at open own it
//! exclusively before the flusher starts.

use std::collections::BTreeMap;

use crate::ids::Lsn;
use crate::io::{Dir, SECTOR_SIZE, Storage};
use crate::limits::{WAL_SEGMENT_HEADER_SIZE, WAL_SEGMENT_SIZE_MAX, WAL_SEGMENT_SIZE_MIN, WAL_WRITE_CHUNK_MAX};
use crate::sync::Arc;
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"CRABWAL\0";
const FORMAT_VERSION: u32 = 1;
const HEADER_BYTES: usize = 64;
const FREE: u64 = u64::MAX;
const SUFFIX: &str = ".wal";

/// A decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Segment file size in bytes.
    pub size: u64,
    /// The index of the log segment it holds; `None`: free.
    pub index: Option<u64>,
    /// LSN of the first record that starts in it (live segments).
    pub first_record: Lsn,
    /// Incarnation of the handle that wrote the header.
    pub incarnation: u32,
}

impl SegmentHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        out[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[8..16].copy_from_slice(MAGIC);
        out[16..24].copy_from_slice(&self.size.to_le_bytes());
        out[24..32].copy_from_slice(&self.index.unwrap_or(FREE).to_le_bytes());
        out[32..40].copy_from_slice(&self.first_record.0.to_le_bytes());
        out[40..44].copy_from_slice(&self.incarnation.to_le_bytes());
        let crc = crate::checksum::crc32c(&out[4..]);
        out[0..4].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a header; `None` if it is not a valid one (zeroed, torn,
    /// damaged, another format).
    pub fn decode(bytes: &[u8]) -> Option<SegmentHeader> {
        let bytes = bytes.get(..HEADER_BYTES)?;
        let u64_at = |at: usize| bytes.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        let u32_at = |at: usize| bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
        let crc = u32_at(0)?;
        let valid = crc == crate::checksum::crc32c(bytes.get(4..)?)
            && u32_at(4)? == FORMAT_VERSION
            && bytes.get(8..16)? == MAGIC
            && bytes.get(44..)?.iter().all(|&b| b == 0);
        if !valid {
            return None;
        }
        let size = u64_at(16)?;
        if !(WAL_SEGMENT_SIZE_MIN..=WAL_SEGMENT_SIZE_MAX).contains(&size) || !size.is_multiple_of(8) {
            return None;
        }
        let index = Some(u64_at(24)?).filter(|&index| index != FREE);
        Some(SegmentHeader { size, index, first_record: Lsn(u64_at(32)?), incarnation: u32_at(40)? })
    }
}

/// One open segment file.
pub struct Segment {
    /// The file.
    pub storage: Arc<dyn Storage>,
    /// Its header as last written (or read).
    pub header: SegmentHeader,
}

/// The set of segment files of one log directory; see the module doc.
pub struct Segments {
    dir: Arc<dyn Dir>,
    size: u64,
    incarnation: u32,
    /// Live segments by index.
    live: BTreeMap<u64, Segment>,
    /// Free (recyclable) segments; `bool`: already preallocated.
    free: Vec<(Segment, bool)>,
    next_slot: u64,
    /// Slots whose file creation failed, reused before a new one: a disk
    /// that stays full must not collect a half-made file per attempt.
    retry_slots: Vec<u64>,
    /// Segments created (for stats and tests).
    pub created: u64,
    /// Segments reused from the free list.
    pub recycled: u64,
}

fn slot_of(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    (digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

fn bad_size(size: u64) -> Error {
    Error::InvalidArgument(format!(
        "WAL segment size {size} not a multiple of 4096 in {WAL_SEGMENT_SIZE_MIN}..={WAL_SEGMENT_SIZE_MAX}"
    ))
}

impl Segments {
    /// Opens the segment files in `dir`. The segment size on disk wins over
    /// `size` when any valid header exists. Files with no valid header, or
    /// a free one and the wrong length (a creation cut short), are free and
    /// refilled before use; a live header on a file of the wrong length is
    /// `LogCorruption`. Does not stamp a new incarnation: see
    /// [`Segments::stamp`].
    pub fn open(dir: Arc<dyn Dir>, size: u64) -> Result<Segments> {
        if !(WAL_SEGMENT_SIZE_MIN..=WAL_SEGMENT_SIZE_MAX).contains(&size) || !size.is_multiple_of(4096) {
            return Err(bad_size(size));
        }
        let mut found = Vec::new();
        for name in dir.list()? {
            let Some(slot) = slot_of(&name) else { continue };
            let storage = dir.open(&name, false)?;
            let len = storage.len()?;
            let mut bytes = [0u8; HEADER_BYTES];
            let header = if len >= HEADER_BYTES as u64 {
                storage.read_at(0, &mut bytes)?;
                SegmentHeader::decode(&bytes)
            } else {
                None
            };
            found.push((slot, storage, header, len));
        }
        // A live header's size first: a free one is only a spare's.
        let size = [true, false]
            .into_iter()
            .find_map(|live| {
                found.iter().find_map(|(_, _, header, _)| header.filter(|h| h.index.is_some() || !live).map(|h| h.size))
            })
            .unwrap_or(size);
        // A file is made whole and synced before its header goes live (a
        // creation cut short has a free header or none), so a live header
        // on a file of another length is damage: taken for free, a cut
        // last segment would end the log early with no error.
        for (slot, _, header, len) in &found {
            if let Some(header) = header.filter(|h| h.index.is_some() && (*len != size || h.size != size)) {
                return Err(Error::LogCorruption {
                    lsn: header.first_record,
                    reason: format!(
                        "segment file {slot:08}{SUFFIX} holds live segment {} but its length is {len} bytes \
                         (header: {}, log: {size}): cut short or lengthened",
                        header.index.unwrap_or_default(),
                        header.size
                    ),
                });
            }
        }
        let mut segments = Segments {
            dir,
            size,
            incarnation: 0,
            live: BTreeMap::new(),
            free: Vec::new(),
            next_slot: 0,
            retry_slots: Vec::new(),
            created: 0,
            recycled: 0,
        };
        for (slot, storage, header, len) in found {
            segments.next_slot = segments.next_slot.max(slot + 1);
            let incarnation = header.map_or(0, |h| h.incarnation);
            segments.incarnation = segments.incarnation.max(incarnation);
            let whole = len == size && header.is_some_and(|h| h.size == size);
            let header = header.filter(|_| whole).unwrap_or(SegmentHeader {
                size,
                index: None,
                first_record: Lsn::ZERO,
                incarnation,
            });
            let segment = Segment { storage, header };
            match header.index {
                Some(index) if !segments.live.contains_key(&index) => {
                    segments.live.insert(index, segment);
                }
                // Two live headers for one index cannot happen (an index is
                // activated once per life of the log); keep the first, the
                // other is treated as free and rewritten before reuse.
                _ => segments.free.push((segment, whole)),
            }
        }
        Ok(segments)
    }

    /// Syncs the directory before anything found in it is trusted: after a
    /// process was killed the kernel may still hold directory entries it
    /// never synced (a spare whose preparer died before its directory
    /// sync), which a listing returns as if durable; a spare used without
    /// this could vanish, with the acknowledged log in it, at a power cut.
    pub fn sync_dir(&self) -> Result<()> {
        self.dir.sync()
    }

    /// Writes the log bytes `[from, to)` again as reads return them, with
    /// the header of every live segment they lie in, and syncs those
    /// segments. After a failed `fdatasync` (Linux semantics) the kernel may
    /// have forgotten writes that reads still return, and a later sync finds
    /// nothing to write: rewriting the bytes makes them dirty again, so the
    /// sync makes durable what the open is about to trust. The same holds
    /// for a killed process's writes that were never synced at all. The
    /// caller passes the log past the last horizon claim: everything below
    /// it was synced without error.
    ///
    /// Part of that range may be durable and acknowledged already, so it
    /// is rewritten one whole sector per write: a power cut during a
    /// multi-sector write may leave garbage in the sector where it was cut,
    /// while a sector rewritten with the bytes it holds is assumed to keep
    /// them (`docs/protocols/disk-assumptions.md`, the rule the writer's
    /// batches already rely on for the sector they share).
    pub fn rewrite(&self, from: Lsn, to: Lsn) -> Result<()> {
        // Segment payloads and headers are multiples of 4096 bytes, so a
        // sector-aligned LSN is at a sector-aligned file offset.
        let sector = SECTOR_SIZE;
        let mut buf = [0u8; SECTOR_SIZE as usize];
        let mut at = from.0 - from.0 % sector;
        while at < to.0 {
            let (index, mut offset) = self.locate(Lsn(at));
            let Some(segment) = self.live.get(&index) else { break };
            segment.storage.write_at(0, &segment.header.encode())?;
            let stop = to.0.min((index + 1).saturating_mul(self.payload()));
            while at < stop {
                segment.storage.read_at(offset, &mut buf)?;
                segment.storage.write_at(offset, &buf)?;
                at += sector;
                offset += sector;
            }
            segment.storage.sync()?;
        }
        Ok(())
    }

    /// Writes again, and syncs, the header of every whole free segment: a
    /// recycle whose process was killed before its sync, or whose sync
    /// failed, left a free header that reads return but the disk may not
    /// hold. Trusted unsynced, the segment would be taken for free while
    /// the disk still says live, and once a later recycle freed the next
    /// one (synced) a power cut would leave a hole in the live segments.
    pub fn rewrite_free_headers(&self) -> Result<()> {
        for (segment, whole) in &self.free {
            if *whole {
                segment.storage.write_at(0, &segment.header.encode())?;
                segment.storage.sync()?;
            }
        }
        Ok(())
    }

    /// The segment file size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Log bytes per segment.
    pub fn payload(&self) -> u64 {
        self.size - WAL_SEGMENT_HEADER_SIZE as u64
    }

    /// The largest incarnation on disk (after [`Segments::stamp`], this
    /// handle's).
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// The live segments' indices, ascending.
    pub fn live_indices(&self) -> Vec<u64> {
        self.live.keys().copied().collect()
    }

    /// The live segment with `index`.
    pub fn live(&self, index: u64) -> Option<&Segment> {
        self.live.get(&index)
    }

    /// Number of free segments.
    #[cfg(test)]
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// The segment index and file offset of `lsn`.
    pub fn locate(&self, lsn: Lsn) -> (u64, u64) {
        (lsn.0 / self.payload(), WAL_SEGMENT_HEADER_SIZE as u64 + lsn.0 % self.payload())
    }

    /// Takes a new incarnation (largest on disk + 1) and makes it durable
    /// in one header before this handle writes any record.
    pub fn stamp(&mut self) -> Result<u32> {
        self.incarnation =
            self.incarnation.checked_add(1).ok_or(Error::InvalidArgument("incarnation overflow".into()))?;
        let target = match self.live.values_mut().next_back() {
            Some(segment) => Some(segment),
            None => self.free.iter_mut().find(|(_, whole)| *whole).map(|(segment, _)| segment),
        };
        if let Some(segment) = target {
            segment.header.incarnation = self.incarnation;
            segment.storage.write_at(0, &segment.header.encode())?;
            segment.storage.sync()?;
        }
        // No whole segment at all: nothing stale can exist on disk yet.
        Ok(self.incarnation)
    }

    /// Creates a new segment file, zero-filled with a free header, synced,
    /// its directory entry synced.
    fn create(&mut self) -> Result<Segment> {
        let plan = self.plan_spare();
        match plan.create() {
            Ok(segment) => {
                self.created += 1;
                Ok(segment)
            }
            Err(err) => {
                self.spare_failed(plan);
                Err(err)
            }
        }
    }

    /// Whether a free, preallocated segment is ready.
    pub fn has_spare(&self) -> bool {
        self.free.iter().any(|(_, whole)| *whole)
    }

    /// Reserves a slot for a new file, to be created by [`SparePlan::create`]
    /// without holding the segments' lock (a background thread does it).
    pub fn plan_spare(&mut self) -> SparePlan {
        let slot = self.retry_slots.pop().unwrap_or_else(|| {
            self.next_slot += 1;
            self.next_slot - 1
        });
        SparePlan { dir: Arc::clone(&self.dir), slot, size: self.size, incarnation: self.incarnation }
    }

    /// Takes back the slot of a plan whose [`SparePlan::create`] failed: the
    /// next plan reuses it (its half-made file is filled again from the
    /// start), so failures on a full disk leave one such file, not one per
    /// attempt.
    pub fn spare_failed(&mut self, plan: SparePlan) {
        self.retry_slots.push(plan.slot);
    }

    /// Adds a segment made by [`SparePlan::create`] to the free list.
    pub fn add_spare(&mut self, segment: Segment) {
        self.created += 1;
        self.free.push((segment, true));
    }

    /// Makes `index` live, with `first_record` as its first record start:
    /// reuses a free segment (refilling it if its creation was cut short) or
    /// creates one. The live header is written, not synced: the caller's
    /// sync of the segment's first data makes it durable.
    pub fn activate(&mut self, index: u64, first_record: Lsn) -> Result<&Segment> {
        assert!(!self.live.contains_key(&index), "segment {index} activated twice");
        let mut segment = match self.free.pop() {
            Some((segment, true)) => {
                self.recycled += 1;
                segment
            }
            Some((segment, false)) => {
                fill(segment.storage.as_ref(), self.size, &segment.header)?;
                segment
            }
            None => self.create()?,
        };
        segment.header =
            SegmentHeader { size: self.size, index: Some(index), first_record, incarnation: self.incarnation };
        segment.storage.write_at(0, &segment.header.encode())?;
        Ok(self.live.entry(index).or_insert(segment))
    }

    /// Makes sure one free, preallocated segment is ready (synchronously).
    #[cfg(test)]
    pub fn prepare_spare(&mut self) -> Result<()> {
        if self.has_spare() {
            return Ok(());
        }
        let segment = self.create()?;
        self.free.push((segment, true));
        Ok(())
    }

    /// Recycles every live segment whose whole range lies below `lsn` and
    /// that is older than the newest live one: header rewritten free and
    /// synced, oldest first, one at a time. Returns how many.
    pub fn recycle_below(&mut self, lsn: Lsn) -> Result<usize> {
        let newest = self.live.keys().next_back().copied();
        let mut count = 0;
        while let Some((&index, _)) = self.live.first_key_value() {
            if Some(index) == newest || (index + 1).saturating_mul(self.payload()) > lsn.0 {
                break;
            }
            let Some(mut segment) = self.live.remove(&index) else { break };
            segment.header.index = None;
            segment.header.incarnation = self.incarnation;
            segment.storage.write_at(0, &segment.header.encode())?;
            segment.storage.sync()?;
            self.free.push((segment, true));
            count += 1;
        }
        Ok(count)
    }

    /// Frees every live segment with an index `>= index`, newest first,
    /// each header synced: after a crash, segments past the end of the
    /// valid log hold only unsynced bytes and must be activated afresh.
    pub fn free_from(&mut self, index: u64) -> Result<usize> {
        let mut count = 0;
        while let Some((&newest, _)) = self.live.last_key_value() {
            if newest < index {
                break;
            }
            let Some(mut segment) = self.live.remove(&newest) else { break };
            segment.header.index = None;
            segment.storage.write_at(0, &segment.header.encode())?;
            segment.storage.sync()?;
            self.free.push((segment, true));
            count += 1;
        }
        Ok(count)
    }

    /// Reads log bytes `[lsn, lsn + buf.len())` from live segments. `Ok(false)`
    /// if a segment of that range is not live (the log has no such bytes).
    pub fn read(&self, lsn: Lsn, buf: &mut [u8]) -> Result<bool> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = Lsn(lsn.0 + done as u64);
            let (index, offset) = self.locate(at);
            let Some(segment) = self.live.get(&index) else { return Ok(false) };
            let room = (self.size - offset) as usize;
            let n = room.min(buf.len() - done);
            let Some(part) = buf.get_mut(done..done + n) else { return Ok(false) };
            segment.storage.read_at(offset, part)?;
            done += n;
        }
        Ok(true)
    }
}

/// A new segment file to create: slot reserved, nothing on disk yet.
pub struct SparePlan {
    dir: Arc<dyn Dir>,
    slot: u64,
    size: u64,
    incarnation: u32,
}

impl SparePlan {
    /// Creates the file, zero-filled with a free header, synced, and syncs
    /// the directory entry.
    pub fn create(&self) -> Result<Segment> {
        let storage = self.dir.open(&format!("{:08}{SUFFIX}", self.slot), true)?;
        let header =
            SegmentHeader { size: self.size, index: None, first_record: Lsn::ZERO, incarnation: self.incarnation };
        fill(storage.as_ref(), self.size, &header)?;
        self.dir.sync()?;
        Ok(Segment { storage, header })
    }
}

/// Zero-fills `storage` to `size` with `header` in front, cuts it to
/// `size`, then syncs it. The cut matters for a file left longer by a
/// creation cut short under another segment size (a log with no valid
/// header takes its size from the options): kept longer, it would read as
/// a creation cut short, i.e. free, at the next open, and its log vanish.
fn fill(storage: &dyn Storage, size: u64, header: &SegmentHeader) -> Result<()> {
    storage.set_len(size)?;
    let zeros = vec![0u8; WAL_WRITE_CHUNK_MAX.min(size as usize)];
    let mut offset = 0u64;
    while offset < size {
        let n = (size - offset).min(zeros.len() as u64) as usize;
        storage.write_at(offset, zeros.get(..n).unwrap_or_default())?;
        offset += n as u64;
    }
    storage.write_at(0, &header.encode())?;
    storage.sync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{CrashModel, SimDir};
    use proptest::prelude::*;

    fn sim() -> (SimDir, Arc<dyn Dir>) {
        let dir = SimDir::new(7, CrashModel::default());
        let shared: Arc<dyn Dir> = Arc::new(dir.clone());
        (dir, shared)
    }

    #[test]
    fn header_round_trip_and_flips() {
        let header = SegmentHeader { size: 16384, index: Some(3), first_record: Lsn(40000), incarnation: 9 };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Some(header));
        for byte in 0..HEADER_BYTES {
            let mut bad = bytes;
            bad[byte] ^= 0x10;
            assert_eq!(SegmentHeader::decode(&bad), None, "flip at {byte}");
        }
        assert_eq!(SegmentHeader::decode(&[0u8; 64]), None);
    }

    #[test]
    fn activate_recycle_reopen() -> Result<()> {
        let (sim, dir) = sim();
        let mut segments = Segments::open(Arc::clone(&dir), 16384)?;
        assert_eq!(segments.stamp()?, 1);
        segments.activate(0, Lsn(0))?.storage.sync()?;
        segments.activate(1, Lsn(12300))?.storage.sync()?;
        segments.prepare_spare()?;
        assert_eq!((segments.created, segments.free_count()), (3, 1));
        assert_eq!(segments.recycle_below(Lsn(12288))?, 1);
        assert_eq!(segments.live_indices(), [1]);
        // The recycled slot is reused before the spare... either way, no
        // new file.
        segments.activate(2, Lsn(24576))?.storage.sync()?;
        assert_eq!(segments.created, 3);
        sim.crash();
        let mut segments = Segments::open(dir, 8192)?;
        assert_eq!(segments.size(), 16384, "size on disk wins");
        assert_eq!(segments.live_indices(), [1, 2]);
        assert_eq!(segments.live(1).map(|s| s.header.first_record), Some(Lsn(12300)));
        assert_eq!(segments.stamp()?, 2);
        Ok(())
    }

    #[test]
    fn unsynced_creation_is_free_after_crash() -> Result<()> {
        for seed in 0..16 {
            let sim = SimDir::new(seed, CrashModel { keep: 1, drop: 1, tear: 1, garbage: 50, ..CrashModel::default() });
            let dir: Arc<dyn Dir> = Arc::new(sim.clone());
            let mut segments = Segments::open(Arc::clone(&dir), 8192)?;
            segments.stamp()?;
            // Cut the creation short after a few operations.
            sim.power_off_after(seed % 4);
            let _ = segments.activate(0, Lsn(0));
            sim.crash();
            let segments = Segments::open(dir, 8192)?;
            assert!(segments.live_indices().len() <= 1);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn header_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = SegmentHeader::decode(&bytes);
        }
    }
}
