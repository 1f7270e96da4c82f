//! A full disk: write-backs that fail for want of space leave their pages
//! dirty, and the layer above refuses new commits until the disk took
//! every dirty page again.
//!
//! A failed `pwrite` is not a failed `fsync`. The frame still holds the
//! whole page and stays dirty, so nothing is lost; what the file holds at
//! that offset (nothing, or a torn prefix of the page) is what a crash in
//! the middle of the write would have left, and the log covers it: the
//! page is dirty, so it was changed after the redo start of the last
//! complete checkpoint, and its first change since logged its full image
//! (`checkpoint.rs`). A checkpoint whose write-back pass fails that way
//! is abandoned without poisoning the log (no sync ran, so the kernel
//! dropped nothing); the next one starts over. Only a failed sync, or a
//! write that failed for another reason, poisons.
//!
//! What counts as "for want of space": `ENOSPC`, `EDQUOT` and `EFBIG`
//! (`StorageFull`, `QuotaExceeded`, `FileTooLarge`).
//!
//! The state: `failures` counts such failed write-backs, `cleared` is the
//! value of `failures` when a pass last wrote every dirty page. The disk is
//! *full* while `failures > cleared`. A pass reads `failures` before it
//! starts and publishes that value with `fetch_max` only once every page
//! dirty at its start was written, so a failure during the pass (counted
//! after the read) keeps the disk full: no failure is ever cleared by a
//! pass that did not see its page written.
//!
//! Who clears it: the cleaner, which retries every `SPACE_RETRY` while the
//! disk is full (every dirty page in page-id order, try-latching as it
//! always does: a page it cannot latch leaves the pass incomplete), and a
//! checkpoint's write-back pass. Each pass waits for the eviction batches
//! in flight after reading `failures` and before listing the dirty pages:
//! a batch's victim whose write failed is out of the resident set until
//! the batch puts it back, so a pass that listed the pages first could
//! publish a failure counted before it began without ever seeing that page
//! (`space_tests`, the evictor held at `evict.write_failed`).
//!
//! Who reads it: a commit, through
//! `Store::check_space` (`Engine::commit` before it takes its key locks,
//! `Store::append_commit` again), which refuses it with
//! [`Error::DiskFull`] before any of it is logged or applied (so a refused
//! commit changes nothing); the
//! checkpointer and background vacuum, which wait while it is set (each
//! would append to a log that cannot be recycled). Reads never look at it.
//!
//! What it does not cover: a commit already applying when the disk fills
//! still needs frames, and if every victim it meets is dirty and none can
//! be written its eviction fails and the commit, half applied, poisons the
//! engine as any failed apply does (a pool whose every page is dirty).

use super::pool::PoolCore;
use crate::error::Error;
use crate::ids::PageId;
use crate::sync::{AtomicU64, Mutex, Ordering};
use std::io::ErrorKind;

/// Whether `error` is a write that failed for want of space (module doc).
pub(crate) fn is_space_error(error: &Error) -> bool {
    matches!(error, Error::Io(io) if matches!(io.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge))
}

/// The pool's record of write-backs that failed for want of space.
#[derive(Default)]
pub(super) struct Space {
    /// Write-backs that failed for want of space, ever.
    failures: AtomicU64,
    /// `failures` as read at the start of the last complete pass.
    cleared: AtomicU64,
    /// The message of the latest such failure.
    last: Mutex<String>,
}

impl Space {
    /// Counts a failed write-back of `pid`.
    fn note(&self, pid: PageId, error: &Error) {
        *self.last.lock() = format!("writing back page {}: {error}", pid.0);
        // SeqCst: a pass that reads `failures` after this sees it, one
        // that read it before cannot clear it (module doc).
        self.failures.fetch_add(1, Ordering::SeqCst);
    }

    /// The value a pass starting now may publish when it completes.
    fn begin_pass(&self) -> u64 {
        self.failures.load(Ordering::SeqCst)
    }

    /// Publishes a complete pass that began at `seen`.
    fn complete_pass(&self, seen: u64) {
        self.cleared.fetch_max(seen, Ordering::SeqCst);
    }

    fn is_full(&self) -> bool {
        // Relaxed: advisory; a commit that slips past a concurrent failure
        // is one that could have come just before it.
        self.failures.load(Ordering::Relaxed) > self.cleared.load(Ordering::Relaxed)
    }
}

impl PoolCore {
    /// Records a write-back of `pid` that failed for want of space.
    pub(super) fn note_space_failure(&self, pid: PageId, error: &Error) {
        self.space.note(pid, error);
    }

    /// `Error::DiskFull` while a write-back failed for want of space and no
    /// pass has written every dirty page since (module doc).
    pub fn check_space(&self) -> crate::Result<()> {
        if self.space.is_full() {
            return Err(Error::DiskFull(self.space.last.lock().clone()));
        }
        Ok(())
    }

    /// Whether the disk is full (see [`PoolCore::check_space`]).
    pub fn disk_full(&self) -> bool {
        self.space.is_full()
    }

    /// Write-backs that failed for want of space since open.
    pub(super) fn space_failures(&self) -> u64 {
        self.space.failures.load(Ordering::Relaxed)
    }

    /// Starts a pass that writes every dirty page; hand the value to
    /// [`PoolCore::end_space_pass`] once it did.
    pub(super) fn begin_space_pass(&self) -> u64 {
        self.space.begin_pass()
    }

    /// Ends a pass begun at `seen` that wrote every page dirty at its start.
    pub(super) fn end_space_pass(&self, seen: u64) {
        self.space.complete_pass(seen);
    }

    /// The cleaner's retry while the disk is full: writes every dirty
    /// resident page back, in page-id order, without waiting on a latch.
    /// Returns whether the disk took them all (the disk is no longer full
    /// then, unless a write failed meanwhile). Entry and exit: no latch.
    pub(super) fn retry_space(&self) -> bool {
        let seen = self.begin_space_pass();
        // An eviction batch in flight may have counted a failure (in
        // `seen`) whose page is out of the resident set until the batch
        // puts it back: wait for it, so the snapshot holds that page (else
        // the pass cleared a failure it never saw written).
        drop(self.evicting.write());
        let mut dirty: Vec<PageId> =
            self.resident.snapshot().into_iter().filter(|&pid| self.latch(pid).is_dirty()).collect();
        dirty.sort_unstable();
        for pid in dirty {
            match self.clean_page(pid) {
                Ok(true) => {}
                // Not written: clean already, or latched by someone (then
                // the pass is incomplete, and the next one tries again).
                Ok(false) if !self.latch(pid).is_dirty() || !self.latch(pid).is_resident() => {}
                Ok(false) | Err(_) => return false,
            }
        }
        // Victims of evictions begun since are not in the snapshot: their
        // write-backs end (and count any failure, after `seen`, which
        // keeps the disk full) before this returns.
        drop(self.evicting.write());
        self.end_space_pass(seen);
        true
    }
}
