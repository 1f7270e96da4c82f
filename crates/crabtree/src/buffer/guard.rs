//! Latch guards handed out by the pool: optimistic (a version to validate),
//! shared and exclusive (released on drop).
//!
//! A guard borrows the pool, so no guard outlives the frames it reads.
//! Shared and exclusive guards are not tied to a thread (the latch has no
//! owner), so they may be moved between threads. An optimistic guard holds
//! a read section of its thread (`grace.rs`), so it stays on that thread,
//! and what it reads borrows the guard: no frame is read outside the
//! section.

use super::Restart;
use super::grace::Section;
use super::latch::Latch;
use super::pool::BufferPool;
use crate::ids::PageId;
use crate::page::bytes::{AtomicPage, AtomicPageMut};

/// An optimistic read of a page: read through [`OptimisticGuard::page`],
/// then [`OptimisticGuard::validate`] before acting on anything read.
/// Holds no latch and writes no memory that other threads write (its read
/// section is published in its thread's own slot). Not `Send`.
pub struct OptimisticGuard<'a> {
    pool: &'a BufferPool,
    pid: PageId,
    observed: u64,
    _section: Section,
}

impl<'a> OptimisticGuard<'a> {
    #[inline]
    pub(super) fn new(pool: &'a BufferPool, pid: PageId, observed: u64, section: Section) -> Self {
        OptimisticGuard { pool, pid, observed, _section: section }
    }

    /// The page read.
    #[inline]
    pub fn pid(&self) -> PageId {
        self.pid
    }

    /// The latch word this read started from: after the guard validated,
    /// [`BufferPool::optimistic_resume`] with it reads the page again only
    /// if no writer came in between.
    #[inline]
    pub fn word(&self) -> u64 {
        self.observed
    }

    /// The frame. Values read may be torn by a concurrent writer: bounds
    /// check everything and validate before trusting it.
    #[inline]
    pub fn page(&self) -> AtomicPage<'_> {
        AtomicPage::new(self.pool.frame(self.pid))
    }

    /// `Ok` if no writer latched the page since this guard was taken, so
    /// every read made through [`OptimisticGuard::page`] so far was
    /// consistent. Can be called repeatedly (e.g. per step of a descent).
    #[inline]
    pub fn validate(&self) -> Result<(), Restart> {
        if self.latch().validate(self.observed) { Ok(()) } else { Err(Restart) }
    }

    /// Turns the optimistic read into the exclusive latch if no writer came
    /// in between and no one holds a latch on the page; never waits.
    pub fn try_upgrade(self) -> Result<ExclusiveGuard<'a>, Restart> {
        if self.latch().try_upgrade(self.observed) {
            Ok(ExclusiveGuard::new(self.pool, self.pid, false))
        } else {
            Err(Restart)
        }
    }

    #[inline]
    fn latch(&self) -> Latch<'a> {
        self.pool.latch(self.pid)
    }
}

/// A shared latch on a resident page; released on drop.
pub struct SharedGuard<'a> {
    pool: &'a BufferPool,
    pid: PageId,
}

impl<'a> SharedGuard<'a> {
    pub(super) fn new(pool: &'a BufferPool, pid: PageId) -> Self {
        SharedGuard { pool, pid }
    }

    /// The latched page.
    pub fn pid(&self) -> PageId {
        self.pid
    }

    /// The frame; stable while the guard lives.
    pub fn page(&self) -> AtomicPage<'_> {
        AtomicPage::new(self.pool.frame(self.pid))
    }
}

impl Drop for SharedGuard<'_> {
    fn drop(&mut self) {
        self.pool.latch(self.pid).unlock_shared();
    }
}

/// The exclusive latch on a resident page; released on drop with a version
/// bump (invalidating optimistic readers).
///
/// With a log attached, a change made through [`ExclusiveGuard::page_mut`]
/// must be logged before the latch is released: explicitly, as part of a
/// mini-transaction (`BufferPool::log_images`, `log_leaf_put`, ...), or, for
/// a change of this page alone, by the guard's drop, which logs the page's
/// image (`buffer::mtr`).
pub struct ExclusiveGuard<'a> {
    pub(super) pool: &'a BufferPool,
    pid: PageId,
    dirty: bool,
    /// Changed since the last log record of this guard.
    pub(super) changed: bool,
    /// Allocated by this guard and not logged yet.
    pub(super) fresh: bool,
}

impl<'a> ExclusiveGuard<'a> {
    pub(super) fn new(pool: &'a BufferPool, pid: PageId, dirty: bool) -> Self {
        ExclusiveGuard { pool, pid, dirty, changed: false, fresh: false }
    }

    pub(super) fn set_fresh(&mut self) {
        self.fresh = self.pool.logging();
    }

    /// The latched page.
    pub fn pid(&self) -> PageId {
        self.pid
    }

    /// Read access to the frame.
    pub fn page(&self) -> AtomicPage<'_> {
        AtomicPage::new(self.pool.frame(self.pid))
    }

    /// Write access to the frame; marks the page dirty.
    pub fn page_mut(&mut self) -> AtomicPageMut<'_> {
        self.dirty = true;
        if !self.changed && self.pool.logging() {
            self.pool.latch(self.pid).mark_dirty_held();
        }
        self.changed = true;
        AtomicPageMut::new(self.pool.frame(self.pid))
    }

    /// Marks the page dirty without writing it.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }
}

impl Drop for ExclusiveGuard<'_> {
    fn drop(&mut self) {
        if self.changed && self.pool.logging() {
            // A change of this page alone: log its image. An error means
            // the log is poisoned; the pool then writes nothing back, so
            // the unlogged change never reaches the disk.
            let _ = self.pool.log_images(&mut [self], &[], None);
        }
        #[cfg(feature = "failpoints")]
        {
            let word = self.pool.latch(self.pid).peek();
            assert!(
                !self.dirty || word & super::latch::DIRTY != 0 || !self.pool.logging(),
                "page {}: the dirty bit went while its exclusive latch was held: {word:#x}",
                self.pid
            );
        }
        self.pool.latch(self.pid).unlock_exclusive(self.dirty);
    }
}
