//! Mini-transactions: every page change is latched, applied, logged, stamped
//! with its record's LSN, then released (DESIGN.md, "Write-ahead log").
//!
//! A mini-transaction is one WAL record of type `MTR` holding the redo
//! entries of `page::redo` for every page it changed, plus the pages it
//! frees and a root it sets, so a structure change that spans pages (a
//! split: left, right, neighbour; a deletion step: parent and child) is
//! atomic in the log: recovery sees all of it or none of it.
//!
//! Who logs what:
//! * the tree's hot path logs a physiological entry (`log_leaf_put`,
//!   `log_leaf_remove`) for the leaf it holds;
//! * structure changes call [`BufferPool::log_images`] with every page they
//!   changed, while all of them are still latched;
//! * a guard dropped with an unlogged change logs its page's image
//!   (a change of one page is atomic by itself).
//!
//! Protocol rules and why:
//! 1. The record is appended while every page it names is exclusively
//!    latched, and each page's LSN is set to the record's end before its
//!    latch is released: changes of one page reach the log in the order
//!    they were made, and redo applies a record only above the page's LSN.
//! 2. The first change of a guard sets the page's dirty bit at once (not at
//!    release): with the log reservation's acquire-release ordering, a
//!    checkpoint that reserves its begin record after this record sees the
//!    page dirty and writes it back (`buffer::checkpoint`).
//! 3. Full-page images: after a logical entry, if the page's LSN before the
//!    change was below the full-page-image horizon (read *after* the
//!    record was reserved, so a checkpoint that began before is seen), the
//!    page's image follows in a second record. Recovery skips logical
//!    entries for a page it could not read (torn) until an image arrives.
//! 4. The allocator's state is logged with the page changes: a fresh page's
//!    first record, the `Free` entries and a `SetRoot` are appended under
//!    the allocator mutex, which a checkpoint holds while it takes its
//!    snapshot of the allocator and the log's end, so the snapshot and the
//!    log agree: a page is in exactly one of "described by the snapshot"
//!    or "changed by a record at or after the snapshot's LSN".
//! 5. A failed append (the log is poisoned) leaves the change in memory,
//!    unlogged; the pool then refuses every write-back (`LogFlush` hook
//!    errs), so it never reaches the disk, and the caller gets the error.

use super::guard::ExclusiveGuard;
use super::pool::BufferPool;
use crate::ids::{Lsn, PageId};
use crate::page::bytes::{AtomicPage, AtomicPageMut};
use crate::page::header;
use crate::page::node::CellData;
use crate::page::redo;
use crate::sync::{Arc, Ordering};
use crate::wal::{RecordType, Wal};
use crate::{Error, Result};
use std::cell::RefCell;

/// How one page of a mini-transaction changed (`log_changes`).
#[derive(Clone, Copy, Debug)]
pub enum Change<'c> {
    /// Anything: log the page's image.
    Image,
    /// Only the bytes `offset..offset + len` (a link, the flags).
    Bytes {
        /// First byte changed.
        offset: usize,
        /// Bytes changed.
        len: usize,
    },
    /// The node became the left half of a split (`page::redo::build_left_half`).
    SplitLeft {
        /// Cells kept.
        mid: usize,
        /// The new right sibling.
        right: PageId,
        /// The change of the cells that caused the split.
        change: redo::CellChange<'c>,
    },
    /// One raw cell inserted as slot `index` (the node's own insert).
    Insert {
        /// Slot index.
        index: usize,
        /// The raw cell.
        raw: &'c [u8],
    },
}

/// What a mini-transaction changes besides its pages' images.
#[derive(Default)]
struct Extra<'a> {
    frees: &'a [PageId],
    claims: &'a [PageId],
    root: Option<(usize, PageId)>,
    provisional: bool,
}

thread_local! {
    /// Each thread's record under construction and page copy.
    static SCRATCH: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// End of the last record this thread appended.
    static LAST_LSN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The end LSN of the last mini-transaction record this thread appended
/// (zero if none): what a writer waits on to make its change durable.
pub fn last_lsn() -> Lsn {
    Lsn(LAST_LSN.get())
}

/// Remembers `lsn` as this thread's last record end.
pub(super) fn note_lsn(lsn: Lsn) {
    LAST_LSN.set(lsn.0);
}

impl BufferPool {
    /// Attaches the log: from now on every page change is logged, and a
    /// dirty page is written back only once the log is durable up to its
    /// LSN (or never, once the log is poisoned). Entry: no page latched,
    /// called once, before the pool is used.
    pub fn attach_wal(&self, wal: Arc<Wal>) -> Result<()> {
        let hook_wal = Arc::clone(&wal);
        self.set_log_flush(Arc::new(move |lsn| {
            if hook_wal.is_poisoned() {
                return Err(Error::Poisoned);
            }
            hook_wal.wait_durable(lsn)
        }));
        self.wal.set(wal).map_err(|_| Error::InvalidArgument("a log is already attached".into()))
    }

    /// Whether page changes are logged.
    #[inline]
    pub fn logging(&self) -> bool {
        self.wal.get().is_some()
    }

    /// The attached log.
    pub fn wal(&self) -> Option<&Arc<Wal>> {
        self.wal.get()
    }

    /// `Error::Poisoned` once the attached log failed a write or sync;
    /// `Error::Corruption` naming the page once a page was freed twice or
    /// allocated while in use (the free list and the tree disagree: a
    /// damaged file or log).
    pub fn check_poisoned(&self) -> Result<()> {
        // Relaxed: see `release_id`.
        match self.free_list_damaged.load(Ordering::Relaxed) {
            0 => {}
            pid => return Err(super::alloc::free_list_damage(PageId(pid))),
        }
        match self.wal.get() {
            Some(wal) if wal.is_poisoned() => Err(Error::Poisoned),
            _ => Ok(()),
        }
    }

    /// Logs the images of `guards` (all changed, all latched), the pages in
    /// `frees` (unlinked now; they go back to the free list in memory later,
    /// through `free_unread`, without another record) and a root slot
    /// change, as one mini-transaction; then stamps each page and marks it
    /// logged. Without a log: sets the root, nothing else.
    pub fn log_images(
        &self,
        guards: &mut [&mut ExclusiveGuard<'_>],
        frees: &[PageId],
        root: Option<(usize, PageId)>,
    ) -> Result<()> {
        self.log_images_sized(guards, &[], Extra { frees, claims: &[], root, provisional: false }).map(|_| ())
    }

    /// Like [`BufferPool::log_images`], but each page says how it changed
    /// (`changes[i]` for `guards[i]`; missing: an image), so a small change
    /// (a link, a flag, one cell) is not logged as a whole page. A fresh
    /// page is always logged whole.
    pub fn log_changes(
        &self,
        guards: &mut [&mut ExclusiveGuard<'_>],
        changes: &[Change<'_>],
        frees: &[PageId],
        root: Option<(usize, PageId)>,
    ) -> Result<()> {
        self.log_images_sized(guards, changes, Extra { frees, claims: &[], root, provisional: false }).map(|_| ())
    }

    /// `log_images` that also claims `claims`: pages of a value logged
    /// provisionally ([`BufferPool::log_provisional`]) that a cell in one
    /// of `guards` now owns.
    pub fn log_images_claiming(
        &self,
        guards: &mut [&mut ExclusiveGuard<'_>],
        frees: &[PageId],
        claims: &[PageId],
    ) -> Result<()> {
        self.log_images_sized(guards, &[], Extra { frees, claims, root: None, provisional: false }).map(|_| ())
    }

    /// [`BufferPool::log_changes`] that also claims `claims` (see
    /// [`BufferPool::log_images_claiming`]).
    pub fn log_changes_claiming(
        &self,
        guards: &mut [&mut ExclusiveGuard<'_>],
        changes: &[Change<'_>],
        frees: &[PageId],
        claims: &[PageId],
    ) -> Result<()> {
        self.log_images_sized(guards, changes, Extra { frees, claims, root: None, provisional: false }).map(|_| ())
    }

    /// Logs the image of a fresh overflow page written before the leaf
    /// cell that will own it. The page stays allocated-but-unclaimed
    /// (free, to a checkpoint and to recovery) until the record with the
    /// cell claims it, so a crash in between frees it instead of leaking
    /// it.
    pub fn log_provisional(&self, guard: &mut ExclusiveGuard<'_>) -> Result<()> {
        self.log_images_sized(&mut [guard], &[], Extra { frees: &[], claims: &[], root: None, provisional: true })
            .map(|_| ())
    }

    /// `log_images`, returning the record's payload bytes.
    fn log_images_sized(
        &self,
        guards: &mut [&mut ExclusiveGuard<'_>],
        changes: &[Change<'_>],
        extra: Extra<'_>,
    ) -> Result<usize> {
        let Extra { frees, claims, root, provisional } = extra;
        if !self.logging() {
            if let Some((slot, pid)) = root {
                self.store_root(slot, pid);
            }
            for guard in guards.iter_mut() {
                guard.changed = false;
            }
            return Ok(0);
        }
        super::pool::with_scratch(&SCRATCH, |(record, page)| {
            record.clear();
            let mut images = 0usize;
            // Rule 3 for small changes: a page whose LSN is below the
            // full-page-image horizon is logged whole (checked again after
            // the reservation, below).
            let horizon = self.fpi_horizon.load(Ordering::SeqCst);
            let mut small: Vec<(usize, Lsn)> = Vec::new();
            for (i, guard) in guards.iter().enumerate() {
                let frame = AtomicPage::new(self.frame(guard.pid()));
                let before = header::lsn(&frame);
                let mut change = changes.get(i).copied().unwrap_or(Change::Image);
                if guard.fresh || before.0 < horizon {
                    change = Change::Image;
                }
                if !matches!(change, Change::Image) {
                    small.push((i, before));
                }
                match change {
                    Change::Image => {
                        let start = record.len();
                        page.resize(self.page_size, 0);
                        frame.copy_to(page);
                        redo::put_image(record, guard.pid(), page, provisional);
                        images += record.len() - start;
                    }
                    Change::Bytes { offset, len } => {
                        let end = offset.checked_add(len).filter(|&end| end <= self.page_size);
                        let Some(end) = end else {
                            return Err(Error::corruption(guard.pid(), "logged byte range outside the page"));
                        };
                        page.resize(self.page_size, 0);
                        frame.copy_to(page);
                        redo::put_bytes(record, guard.pid(), offset, &page[offset..end]);
                    }
                    Change::Insert { index, raw } => redo::put_node_insert(record, guard.pid(), index, raw),
                    Change::SplitLeft { mid, right, change } => {
                        redo::put_split_left(record, guard.pid(), mid, right, change)
                    }
                }
            }
            for &pid in frees {
                redo::put_free(record, pid);
            }
            for &pid in claims {
                redo::put_claim(record, pid);
            }
            if let Some((slot, pid)) = root {
                redo::put_set_root(record, slot as u8, pid.0);
            }
            let mut fresh: Vec<PageId> = Vec::new();
            if !provisional {
                fresh.extend(guards.iter().filter(|g| g.fresh).map(|g| g.pid()));
                fresh.extend_from_slice(claims);
            }
            let lsn =
                if provisional { self.append_mtr(record)? } else { self.commit_mtr(record, &fresh, frees, root)? };
            for guard in guards.iter_mut() {
                self.stamp(guard, lsn);
            }
            // A checkpoint that began before our reservation is seen now.
            let horizon = self.fpi_horizon.load(Ordering::SeqCst);
            for (i, before) in small {
                if before.0 < horizon {
                    record.clear();
                    page.resize(self.page_size, 0);
                    AtomicPage::new(self.frame(guards[i].pid())).copy_to(page);
                    redo::put_image(record, guards[i].pid(), page, false);
                    let lsn = self.append_mtr(record)?;
                    self.stamp(guards[i], lsn);
                    self.counters.fpi_bytes.add(record.len() as u64);
                    images += record.len();
                }
            }
            self.counters.image_bytes.add(images as u64);
            Ok(record.len())
        })
    }

    /// Logs an upsert of `cell` into the latched leaf `guard` (already
    /// applied) and the overflow pages its old value held (`frees`), then
    /// stamps the page. Without a log: nothing.
    /// `claims`: the overflow pages of the new value (logged provisionally).
    pub fn log_leaf_put(
        &self,
        guard: &mut ExclusiveGuard<'_>,
        cell: &CellData<'_>,
        frees: &[PageId],
        claims: &[PageId],
    ) -> Result<()> {
        let pid = guard.pid();
        self.log_logical(guard, frees, claims, |record| {
            let start = record.len();
            redo::put_leaf_put(record, pid, &[]);
            cell.encode_to(record);
            let len = (record.len() - start - 13) as u32;
            record[start + 9..start + 13].copy_from_slice(&len.to_le_bytes());
        })
    }

    /// Logs the removal of `key` from the latched leaf `guard` (already
    /// applied) and the overflow pages of its value, then stamps the page.
    pub fn log_leaf_remove(&self, guard: &mut ExclusiveGuard<'_>, key: &[u8], frees: &[PageId]) -> Result<()> {
        let pid = guard.pid();
        self.log_logical(guard, frees, &[], |record| redo::put_leaf_remove(record, pid, key))
    }

    fn log_logical(
        &self,
        guard: &mut ExclusiveGuard<'_>,
        frees: &[PageId],
        claims: &[PageId],
        entry: impl FnOnce(&mut Vec<u8>),
    ) -> Result<()> {
        if !self.logging() {
            guard.changed = false;
            return Ok(());
        }
        if guard.fresh {
            // A fresh page's first record is its image.
            return self.log_images_claiming(&mut [guard], frees, claims);
        }
        let before = header::lsn(&guard.page());
        let lsn = super::pool::with_scratch(&SCRATCH, |(record, _)| {
            record.clear();
            entry(record);
            for &pid in frees {
                redo::put_free(record, pid);
            }
            for &pid in claims {
                redo::put_claim(record, pid);
            }
            self.commit_mtr(record, claims, frees, None)
        })?;
        self.stamp(guard, lsn);
        failpoint!("mtr.reserved", ignore);
        // SeqCst, after the reservation (rule 3): a checkpoint whose begin
        // record was reserved before ours stored its horizon (or the
        // "checkpoint starting" marker) before that.
        let horizon = self.fpi_horizon.load(Ordering::SeqCst);
        if before.0 < horizon {
            guard.changed = true;
            let bytes = self.log_images_sized(&mut [guard], &[], Extra::default())?;
            self.counters.fpi_bytes.add(bytes as u64);
        }
        Ok(())
    }

    /// Appends a record that changes no allocator state.
    fn append_mtr(&self, record: &[u8]) -> Result<Lsn> {
        let wal = self.wal.get().ok_or_else(|| Error::InvalidArgument("no log attached".into()))?;
        injected_append_failure(wal)?;
        let lsn = wal.append(RecordType::MTR, record)?;
        note_lsn(lsn);
        Ok(lsn)
    }

    /// Appends one mini-transaction record; under the allocator mutex when
    /// it changes the allocator's state (rule 4). Returns the record's end.
    pub(super) fn commit_mtr(
        &self,
        record: &[u8],
        fresh: &[PageId],
        frees: &[PageId],
        root: Option<(usize, PageId)>,
    ) -> Result<Lsn> {
        let wal = self.wal.get().ok_or_else(|| Error::InvalidArgument("no log attached".into()))?;
        if fresh.is_empty() && frees.is_empty() && root.is_none() {
            return self.append_mtr(record);
        }
        let mut alloc = self.alloc.lock();
        injected_append_failure(wal)?;
        let lsn = wal.append(RecordType::MTR, record)?;
        note_lsn(lsn);
        for pid in fresh {
            alloc.pending.remove(pid);
        }
        for &pid in frees {
            alloc.retired.insert(pid);
        }
        if let Some((slot, pid)) = root {
            self.store_root(slot, pid);
        }
        Ok(lsn)
    }

    /// Sets the page LSN of a logged page and marks the guard logged.
    fn stamp(&self, guard: &mut ExclusiveGuard<'_>, lsn: Lsn) {
        header::set_lsn(&mut AtomicPageMut::new(self.frame(guard.pid())), lsn);
        #[cfg(feature = "failpoints")]
        if self.audited {
            self.stamps.lock().insert(guard.pid().0, lsn.0);
        }
        guard.changed = false;
        guard.fresh = false;
    }
}

/// The failpoint `mtr.append`: an error injected there stands for an
/// append that fails because the log failed (a write or sync error seen by
/// the flusher), so it poisons the log first, as that failure would have.
fn injected_append_failure(wal: &Wal) -> Result<()> {
    #[cfg(feature = "failpoints")]
    if let Err(error) = crate::failpoint::hit("mtr.append") {
        wal.poison(&error);
        return Err(error);
    }
    let _ = wal;
    Ok(())
}
