//! Fuzzy checkpoints and the allocator state they record; opening a pool
//! from a recovered state.
//!
//! A checkpoint bounds recovery: pages changed before its redo start `R`
//! are on disk once it completes, so recovery needs the log from `R` on
//! (and segments wholly below it are recycled). Writers never stop.
//!
//! 1. Publish the "checkpoint starting" marker (`u64::MAX`) as the
//!    full-page-image horizon, append a `CHECKPOINT_BEGIN` record; its end
//!    is `R`; publish `R` as the horizon. A mini-transaction that reserves
//!    after the begin record sees the marker or `R` (acquire-release on the
//!    log's reservation counter), so the first change of a page at or after
//!    `R` logs the page's image: a torn write of the page after `R` can be
//!    rebuilt from the log.
//! 2. Under the allocator mutex, snapshot the allocator (page count, roots,
//!    free pages: the free stack, the pages allocated but never logged and
//!    the pages logged free but still retired in memory) and the log's end
//!    `A` (`mtr` rule 4).
//! 3. Write back every page dirty now (a page changed by a record below
//!    `R` had its dirty bit set before that record was reserved, so it is
//!    seen), wait for the write-backs of eviction batches in flight (their
//!    victims already left the resident set the pass walks), then sync the
//!    data file. A failure poisons the log, except a write-back that
//!    failed for want of space: that abandons the checkpoint (its page
//!    stays dirty, no sync ran; `space.rs`) and the previous one stays in
//!    force. The full-page-image horizon then stays at this `R`, above
//!    the previous checkpoint's: pages log their images a little more
//!    often, never less.
//! 4. Append the free list (`CHECKPOINT_FREE` records) and the `CHECKPOINT`
//!    record `{id, R, A, retain, page count, roots, free count}`, wait until
//!    durable. Only now is the checkpoint complete: a crash before leaves
//!    the previous one in force.
//! 5. Recycle the segments wholly below `min(R, retain)`, where `retain` is
//!    the oldest record the layer above still needs (commit records).

use super::pool::BufferPool;
use crate::ids::{Lsn, PageId};
use crate::page::meta::{Meta, ROOT_SLOTS};
use crate::sync::Ordering;
use crate::wal::RecordType;
use crate::{Error, Result};

/// The allocator's persistent state: what a checkpoint records and what
/// recovery rebuilds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllocState {
    /// Pages `0..page_count` exist.
    pub page_count: u64,
    /// Root slots.
    pub roots: [u64; ROOT_SLOTS],
    /// Free pages.
    pub free: Vec<PageId>,
}

/// What a checkpoint record says (its free list arrives separately).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointRecord {
    /// Sequence number (matches its `CHECKPOINT_FREE` records).
    pub id: u64,
    /// Redo start.
    pub redo: Lsn,
    /// The log's end when the allocator snapshot was taken.
    pub alloc: Lsn,
    /// Oldest record the layer above still needed.
    pub retain: Lsn,
    /// Pages in the file.
    pub page_count: u64,
    /// Root slots.
    pub roots: [u64; ROOT_SLOTS],
    /// Number of free pages listed in the `CHECKPOINT_FREE` records.
    pub free_count: u64,
}

const CHECKPOINT_BYTES: usize = 8 * (6 + ROOT_SLOTS);
/// Page ids per `CHECKPOINT_FREE` record.
const FREE_CHUNK: usize = 64 * 1024;

impl CheckpointRecord {
    /// The record's payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CHECKPOINT_BYTES);
        for word in [self.id, self.redo.0, self.alloc.0, self.retain.0, self.page_count] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        for root in self.roots {
            out.extend_from_slice(&root.to_le_bytes());
        }
        out.extend_from_slice(&self.free_count.to_le_bytes());
        out
    }

    /// Decodes a payload; `LogCorruption` at `lsn` if malformed.
    pub fn decode(bytes: &[u8], lsn: Lsn) -> Result<CheckpointRecord> {
        let bad = || Error::LogCorruption { lsn, reason: "malformed checkpoint record".into() };
        if bytes.len() != CHECKPOINT_BYTES {
            return Err(bad());
        }
        let word = |i: usize| u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap_or_default());
        let mut roots = [0u64; ROOT_SLOTS];
        for (slot, root) in roots.iter_mut().enumerate() {
            *root = word(5 + slot);
        }
        let record = CheckpointRecord {
            id: word(0),
            redo: Lsn(word(1)),
            alloc: Lsn(word(2)),
            retain: Lsn(word(3)),
            page_count: word(4),
            roots,
            free_count: word(5 + ROOT_SLOTS),
        };
        if record.page_count == 0 || record.free_count >= record.page_count || record.redo > lsn {
            return Err(bad());
        }
        Ok(record)
    }
}

/// Decodes a `CHECKPOINT_FREE` payload: the checkpoint id and page ids.
pub fn decode_free_chunk(bytes: &[u8], lsn: Lsn) -> Result<(u64, Vec<PageId>)> {
    if bytes.len() < 8 || !bytes.len().is_multiple_of(8) {
        return Err(Error::LogCorruption { lsn, reason: "malformed checkpoint free list".into() });
    }
    let mut words = bytes.chunks_exact(8).map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()));
    let id = words.next().unwrap_or_default();
    Ok((id, words.map(PageId).collect()))
}

/// What a checkpoint did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointReport {
    /// Redo start of the new checkpoint.
    pub redo: Lsn,
    /// Pages written back.
    pub pages_written: u64,
    /// Log segments recycled.
    pub segments_recycled: usize,
}

impl BufferPool {
    /// Takes a fuzzy checkpoint (module doc). `retain`: the oldest log
    /// record the caller still needs (`None`: only the pool's records).
    /// Entry: no latch held. Errors: `InvalidArgument` without a log; a
    /// failed write or sync (the log is then poisoned).
    pub fn checkpoint(&self, retain: Option<Lsn>) -> Result<CheckpointReport> {
        let wal = self.wal().ok_or_else(|| Error::InvalidArgument("checkpoint without a log".into()))?.clone();
        let _serial = self.checkpoint_lock.lock();
        self.check_poisoned()?;
        // Step 1. SeqCst stores; the begin record's reservation orders them
        // against mini-transactions (module doc).
        self.fpi_horizon.store(u64::MAX, Ordering::SeqCst);
        let redo = wal.append(RecordType::CHECKPOINT_BEGIN, &[0u8; 8])?;
        self.fpi_horizon.store(redo.0, Ordering::SeqCst);
        failpoint!("checkpoint.begun");
        // Step 2.
        let (state, alloc) = {
            let free = self.alloc.lock();
            let alloc = wal.end_lsn();
            let mut ids: Vec<PageId> = free.stack.clone();
            ids.extend(free.pending.iter().copied());
            ids.extend(free.retired.iter().copied());
            ids.sort_unstable();
            ids.dedup();
            let mut roots = [0u64; ROOT_SLOTS];
            for (slot, root) in roots.iter_mut().enumerate() {
                *root = self.root_value(slot);
            }
            // Relaxed: `alloc` is held, which orders page_count changes.
            (AllocState { page_count: self.page_count.load(Ordering::Relaxed), roots, free: ids }, alloc)
        };
        // Step 3.
        let before = self.stats().writes;
        if let Err(error) = self.write_dirty() {
            // A write that failed for want of space left its page dirty
            // and changed nothing the kernel could drop: abandon this
            // checkpoint, the next one starts over (`space.rs`). Any other
            // failure poisons.
            if !super::space::is_space_error(&error) {
                wal.poison(&error);
            }
            return Err(error);
        }
        if let Err(error) = self.sync_data_file() {
            wal.poison(&error);
            return Err(error);
        }
        let pages_written = self.stats().writes - before;
        #[cfg(feature = "failpoints")]
        if self.audited {
            self.audit_written(redo);
        }
        // Step 4.
        let id = self.checkpoint_seq.fetch_add(1, Ordering::Relaxed) + 1;
        for chunk in state.free.chunks(FREE_CHUNK) {
            let mut payload = Vec::with_capacity(8 * (chunk.len() + 1));
            payload.extend_from_slice(&id.to_le_bytes());
            for pid in chunk {
                payload.extend_from_slice(&pid.0.to_le_bytes());
            }
            wal.append(RecordType::CHECKPOINT_FREE, &payload)?;
        }
        let record = CheckpointRecord {
            id,
            redo,
            alloc,
            retain: retain.unwrap_or(redo).min(redo),
            page_count: state.page_count,
            roots: state.roots,
            free_count: state.free.len() as u64,
        };
        failpoint!("checkpoint.before_record");
        let end = wal.append(RecordType::CHECKPOINT, &record.encode())?;
        wal.wait_durable(end)?;
        // Step 5.
        let segments_recycled = wal.recycle_below(record.retain)?;
        Ok(CheckpointReport { redo, pages_written, segments_recycled })
    }

    /// Test builds (the `failpoints` feature), on the simulated disk (see
    /// `PoolCore::audited`): step 3's promise, checked after its sync. No resident page is still dirty with a change
    /// logged below `redo`: every change logged before the begin record set
    /// its page's dirty bit first, and the pass wrote it; a change after
    /// the pass visited a page reserved its record after `redo` (its
    /// writer held the latch the pass waited for, or latched the page
    /// after), so the page's LSN is past `redo`. Pages whose LSN is 0 are
    /// fresh (allocated, not logged yet). A violation panics: it means the
    /// checkpoint's record would let recovery skip a change the data file
    /// does not hold. Both checks stand down once the log has failed (a
    /// change it refused stays in its frame, never written; the checkpoint
    /// cannot complete), which `db_crash`'s power cuts do at random: seen
    /// as false alarms there before this exception.
    ///
    /// And a clean resident page is what the data file holds (its checksum
    /// aside): a page whose dirty bit was lost would hold changes the file
    /// does not, which the first audit cannot see. Zeroed frames (free
    /// pages whose dead contents were dropped, `free_unread`) and pages the
    /// file cannot give back are skipped.
    #[cfg(feature = "failpoints")]
    fn audit_written(&self, redo: Lsn) {
        let mut frame = vec![0u8; self.page_size];
        let mut stored = vec![0u8; self.page_size];
        for pid in self.resident.snapshot() {
            let latch = self.latch(pid);
            if !latch.lock_shared() {
                continue;
            }
            let dirty = latch.is_dirty();
            crate::page::bytes::AtomicPage::new(self.frame(pid)).copy_to(&mut frame);
            let read = !dirty && self.storage.read_at(pid.0 * self.page_size as u64, &mut stored).is_ok();
            latch.unlock_shared();
            let lsn = crate::page::header::lsn(frame.as_slice()).0;
            // A change whose record could not be appended (the log failed
            // since the sync) stays in its frame, unlogged and dirty, and
            // is never written: the log refuses every write-back, and this
            // checkpoint cannot complete. Read after the latch, which the
            // writer released after it saw the failure.
            if dirty && lsn != 0 && lsn < redo.0 && self.check_poisoned().is_ok() {
                let pass = self.pass_trace.lock().iter().find(|(p, _)| *p == pid).map(|(_, what)| *what);
                panic!(
                    "checkpoint with redo start {redo:?}: page {pid} is still dirty with its last change at \
                     Lsn({lsn}) (the write-back pass: {pass:?}; latch word {:#x})",
                    latch.peek()
                );
            }
            let zeroed = frame.iter().all(|&b| b == 0);
            let at = crate::page::header::OFFSET_CHECKSUM + 4;
            assert!(
                !read || zeroed || frame[at..] == stored[at..] || self.check_poisoned().is_err(),
                "checkpoint with redo start {redo:?}: page {pid} is clean (Lsn({lsn})) but the data file holds \
                 another image (Lsn({}))",
                crate::page::header::lsn(stored.as_slice()).0
            );
        }
        self.audit_durable(redo);
    }

    /// Test builds, the checkpoint's promise itself, where the storage can
    /// tell what a power cut would leave (the simulated disk): every page in
    /// use whose last change in this life was logged below `redo` holds
    /// that change in the data file's durable image once the sync
    /// returned. Covers what the resident audit cannot: a page evicted
    /// without its write, or whose write lands after the sync. Pages on the
    /// free list (or allocated and not logged yet, or unlinked and waiting
    /// for readers), and pages freed since their last change, are skipped:
    /// their contents are dead (a page freed after `redo` may never have
    /// been written, legitimately: its unlink logged its image). Stands down
    /// once the log failed, as above.
    #[cfg(feature = "failpoints")]
    fn audit_durable(&self, redo: Lsn) {
        let stamps: Vec<(u64, u64)> =
            self.stamps.lock().iter().map(|(&pid, &lsn)| (pid, lsn)).filter(|&(_, lsn)| lsn < redo.0).collect();
        let mut stored = vec![0u8; self.page_size];
        for (pid, lsn) in stamps {
            let dead = {
                let free = self.alloc.lock();
                free.contains(PageId(pid)) || free.pending.contains(&PageId(pid)) || free.retired.contains(&PageId(pid))
            };
            // Freed since the snapshot of the stamps (`release_id` drops a
            // page's stamp), or changed again: its content at `redo` is
            // dead, or the log holds its image from `redo` on (the first
            // change after a checkpoint's begin logs the page whole).
            if dead || pid >= self.page_count() || self.stamps.lock().get(&pid) != Some(&lsn) {
                continue;
            }
            let Some(read) = self.storage.durable_read_at(pid * self.page_size as u64, &mut stored) else { return };
            let durable = crate::page::header::lsn(stored.as_slice()).0;
            if read.is_ok() && durable < lsn && self.check_poisoned().is_ok() {
                let pass = self.pass_trace.lock().iter().find(|(p, _)| p.0 == pid).map(|(_, what)| *what);
                let word = self.latch(PageId(pid)).peek();
                let mut live = vec![0u8; self.page_size];
                let live_lsn = self
                    .storage
                    .read_at(pid * self.page_size as u64, &mut live)
                    .map(|()| crate::page::header::lsn(live.as_slice()).0);
                panic!(
                    "checkpoint with redo start {redo:?}: page {pid}'s last change (Lsn({lsn})) is not in the data \
                     file's durable image after the sync (it holds Lsn({durable}), type {}); the pass: {pass:?}; \
                     latch word {word:#x}; the file's live image: {live_lsn:?}, type {}",
                    stored[crate::page::header::OFFSET_TYPE],
                    live[crate::page::header::OFFSET_TYPE]
                );
            }
        }
    }

    /// Step 3's sync of the data file.
    fn sync_data_file(&self) -> Result<()> {
        failpoint!("checkpoint.before_sync");
        self.storage.sync()
    }

    /// Continues checkpoint ids after `last` (the last one recovered), so an
    /// id names one checkpoint over the whole life of the log.
    pub fn set_checkpoint_id(&self, last: u64) {
        self.checkpoint_seq.store(last, Ordering::Relaxed);
    }

    /// Opens a pool on `storage` whose allocator state recovery rebuilt
    /// (the header page's allocator fields are not used: with a log they
    /// are written only at creation). The log is attached by the caller.
    pub fn open_recovered(
        storage: crate::sync::Arc<dyn crate::io::Storage>,
        opts: super::PoolOptions,
        page_size: usize,
        state: &AllocState,
    ) -> Result<BufferPool> {
        if state.page_count > opts.max_pages {
            return Err(Error::InvalidArgument(format!(
                "file has {} pages, max_pages is {}",
                state.page_count, opts.max_pages
            )));
        }
        let mut meta = Meta::new(page_size);
        meta.page_count = state.page_count;
        meta.roots = state.roots;
        let pool = BufferPool::build(storage, &super::PoolOptions { page_size, ..opts }, meta)?;
        {
            let mut free = pool.alloc.lock();
            for &pid in state.free.iter().rev() {
                if pid.0 == 0 || pid.0 >= state.page_count || !free.push(pid) {
                    return Err(Error::corruption(pid, "recovered free list names a page twice or out of range"));
                }
            }
        }
        Ok(pool)
    }
}
