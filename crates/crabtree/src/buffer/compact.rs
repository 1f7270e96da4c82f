//! `compact`: returning the free pages at the end of the data file to the
//! operating system.
//!
//! Algorithm (`BufferPool::compact`), with the checkpoint mutex and then
//! the allocator mutex held throughout:
//!
//! 1. Find the longest run `new_count..page_count` of ids that are all on
//!    the free stack (reusable: not pending, not retired). None: done.
//! 2. Take them off the free stack and store `page_count = new_count`.
//! 3. For each id of the run, take its exclusive latch if it is resident
//!    (waiting for a cleaner's or a flush's write-back in progress under
//!    its shared latch, or an evictor's under its exclusive one) and clear
//!    its dirty bit; then wait for the eviction batches in flight
//!    (`evicting`), whose victims left the resident set before their
//!    write-back.
//! 4. Append a `TRUNCATE` record `{new_count, old_count}` and wait until
//!    it is durable.
//! 5. `set_len(new_count * page_size)`, then sync the data file.
//!
//! Invariants, and who keeps them:
//! * **C1. No write-back of a truncated page lands after the truncation.**
//!   A truncated page is free, so only a write-back of its last life can
//!   write it; step 3 waits for every such write in flight and leaves the
//!   page clean, and nothing dirties a free page except `allocate`, which
//!   cannot hand it out (C2). A write that landed would re-extend the file
//!   with a dead page (or, were the id reused, garbage over a live one).
//! * **C2. No allocation hands out a page being truncated, and none grows
//!   the file into the cut.** The run leaves the free stack in the same
//!   critical section that finds it, and the allocator mutex is held until
//!   the file is cut and synced: a growing allocation (`page_count` up)
//!   waits, so its page's first write cannot be cut away by step 5.
//! * **C3. The file is never shorter than the page count recovery
//!   believes.** The record is durable before `set_len` (step 4 then 5):
//!   a crash before the record leaves the old count and the old length
//!   (`set_len` has not run); a crash after it makes recovery redo the
//!   truncation (`store::recover`), whether or not `set_len` or its sync
//!   reached the disk.
//! * **C4. A checkpoint never straddles a compaction.** The checkpoint
//!   mutex is held throughout, so a checkpoint's allocator snapshot is
//!   either before step 2 (and the `TRUNCATE` record follows its snapshot
//!   LSN, so recovery applies it) or after step 5 (the file is cut and
//!   synced, and the snapshot has the new count).
//! * **C5. Readers.** Stale optimistic readers of a truncated id fail
//!   `check_pid` (the count is lower) or a load past the end of the file
//!   (`Corruption`), and validate their parent before trusting the error
//!   (`btree::descend`), as for any freed page; a resident frame of a
//!   truncated id stays clean until the id is reused by `allocate`.
//!
//! A failed `set_len` is returned and changes nothing durable (the record
//! says the pages are gone, recovery cuts the file again); a failed sync
//! poisons the log, as every failed data sync does.
//!
//! Lock order: checkpoint mutex, allocator mutex, a latch of a free page
//! (as `alloc.rs`), `evicting` (eviction takes neither mutex while it
//! holds `evicting`).

use super::pool::BufferPool;
use crate::ids::{Lsn, PageId};
use crate::sync::Ordering;
use crate::wal::RecordType;
use crate::{Error, Result};
use std::time::{Duration, Instant};

/// What [`BufferPool::compact`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Pages in the file before.
    pub pages_before: u64,
    /// Pages in the file after.
    pub pages_after: u64,
    /// Bytes returned to the operating system.
    pub bytes_released: u64,
    /// How long allocation was held off (the allocator mutex held).
    pub alloc_held: Duration,
}

/// A `TRUNCATE` record: the file shrank from `old_count` to `new_count`
/// pages, every page cut having been free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TruncateRecord {
    /// Pages left.
    pub new_count: u64,
    /// Pages before.
    pub old_count: u64,
}

impl TruncateRecord {
    /// The record's payload: two little-endian `u64`s.
    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.new_count.to_le_bytes());
        out[8..].copy_from_slice(&self.old_count.to_le_bytes());
        out
    }

    /// Decodes a payload; `LogCorruption` at `lsn` if malformed (wrong
    /// size, a count of zero, or a "truncation" that grows the file).
    pub fn decode(bytes: &[u8], lsn: Lsn) -> Result<TruncateRecord> {
        let bad = || Error::LogCorruption { lsn, reason: "malformed truncate record".into() };
        let (new, old) = bytes.split_first_chunk::<8>().ok_or_else(bad)?;
        let old: [u8; 8] = old.try_into().map_err(|_| bad())?;
        let record = TruncateRecord { new_count: u64::from_le_bytes(*new), old_count: u64::from_le_bytes(old) };
        if record.new_count == 0 || record.new_count >= record.old_count {
            return Err(bad());
        }
        Ok(record)
    }
}

impl BufferPool {
    /// Cuts the trailing run of free pages off the data file (module doc).
    /// Entry: no latch held (we wait on latches of free pages and the
    /// allocator mutex). Errors: `InvalidArgument` without a log;
    /// `Poisoned`; a failed append, log sync, `set_len` or data sync (the
    /// last poisons the log).
    pub fn compact(&self) -> Result<CompactReport> {
        let wal = self.wal().ok_or_else(|| Error::InvalidArgument("compact without a log".into()))?.clone();
        let _serial = self.checkpoint_lock.lock();
        self.check_poisoned()?;
        let mut free = self.alloc.lock();
        let held = Instant::now();
        // Step 1. Relaxed: page_count changes only under `alloc`.
        let old_count = self.page_count.load(Ordering::Relaxed);
        let mut new_count = old_count;
        while new_count > 1 && free.contains(PageId(new_count - 1)) {
            new_count -= 1;
        }
        let mut report = CompactReport { pages_before: old_count, pages_after: old_count, ..Default::default() };
        if new_count == old_count {
            return Ok(report);
        }
        // Step 2. Release: pairs with the Acquire in `page_count()`.
        free.remove_from(PageId(new_count));
        self.page_count.store(new_count, Ordering::Release);
        failpoint!("compact.cut_chosen");
        // Step 3 (C1).
        for id in new_count..old_count {
            let latch = self.latch(PageId(id));
            if latch.lock_exclusive() {
                latch.clear_dirty();
                latch.unlock_exclusive(false);
            }
        }
        drop(self.evicting.write());
        // Step 4 (C3).
        let record = TruncateRecord { new_count, old_count };
        let end = wal.append(RecordType::TRUNCATE, &record.encode())?;
        super::mtr::note_lsn(end);
        wal.wait_durable(end)?;
        failpoint!("compact.logged");
        // Step 5.
        self.storage.set_len(new_count * self.page_size as u64)?;
        failpoint!("compact.before_sync");
        if let Err(error) = self.storage.sync() {
            wal.poison(&error);
            return Err(error);
        }
        report.alloc_held = held.elapsed();
        report.pages_after = new_count;
        report.bytes_released = (old_count - new_count) * self.page_size as u64;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_record_round_trips_and_refuses_garbage() -> Result<()> {
        let record = TruncateRecord { new_count: 7, old_count: 19 };
        assert_eq!(TruncateRecord::decode(&record.encode(), Lsn(0))?, record);
        assert!(TruncateRecord::decode(&[0u8; 15], Lsn(0)).is_err());
        assert!(TruncateRecord::decode(&[0u8; 17], Lsn(0)).is_err());
        let grows = TruncateRecord { new_count: 9, old_count: 9 }.encode();
        assert!(TruncateRecord::decode(&grows, Lsn(0)).is_err());
        let empty = TruncateRecord { new_count: 0, old_count: 9 }.encode();
        assert!(TruncateRecord::decode(&empty, Lsn(0)).is_err());
        Ok(())
    }
}
