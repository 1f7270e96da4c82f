//! The background cleaner: writes dirty pages back before the clock wants
//! to evict them, so a reader that misses finds clean victims and never
//! waits for a write.
//!
//! One thread per pool (`crabtree-cleaner`), started by `BufferPool::build`
//! and stopped and joined by `BufferPool`'s `Drop`. It holds an
//! `Arc<PoolCore>`, never the `BufferPool`. A round collects up to
//! `CLEAN_BATCH_MAX` pages that are dirty and MARKED (the clock passed them
//! and nobody touched them since: the next victims), an equal share from
//! each shard's hand on (evictors pass dirty MARKED pages and take them
//! once clean, `evict.rs`), sorts them by page id and writes each one
//! back. Then it sleeps `CLEANER_PERIOD`, or less when
//! an evictor met a dirty victim (`CleanerSignal::request`), or not at all
//! when the round was full; rounds that find nothing double the sleep up
//! to `CLEANER_IDLE_MAX` (below the budget no clock runs, so nothing is
//! MARKED and the cleaner idles at that rate).
//!
//! Cleaning one page (`clean_page`): call the log hook with the page LSN
//! read without a latch (a hint, so the latch is not held while the hook
//! waits for the log), try-lock it shared (never wait: a writer holds it,
//! or it is being evicted, so skip it), and if it is still dirty call
//! `write_back` (the log hook again, now with the latched LSN: that call
//! is what enforces the WAL rule; then `write_at`), then clear DIRTY, then
//! release, then re-mark it if it was MARKED (taking the latch reset the
//! mark; the cleaner is no access).
//!
//! Invariants (why a page is never marked clean with unwritten changes,
//! and two writes of one page never race):
//! * DIRTY is set only when an exclusive latch is released, and the
//!   cleaner holds a shared latch from before its copy of the frame until
//!   after it clears DIRTY: no writer can change the page in between, so
//!   the image written is the page DIRTY described;
//! * an evictor only try-locks MARKED pages exclusively, which fails while
//!   the cleaner holds the shared latch, and `flush` takes a shared latch
//!   too (a flush and the cleaner may write the same page at once, but
//!   then both write the same image); so a later image is never
//!   overwritten by an earlier one;
//! * the cleaner waits on no latch and holds at most one, so it cannot
//!   deadlock with anyone; a writer that wants a page the cleaner holds
//!   waits for one `write_at` (the cleaner holds a latch across that I/O,
//!   as `flush` does; tree operations never do);
//! * the cleaner holds `evicting` shared across each write-back, as an
//!   eviction batch does, so a write-back pass that wrote the same page
//!   beside it waits for its write before the sync that follows
//!   (`write_dirty`): no write of a page whose last change a checkpoint
//!   covers lands after that checkpoint's sync, where a torn write would
//!   have no full-page image to be rebuilt from. It takes the gate before
//!   the latch, and a pass takes it exclusively holding no latch, so the
//!   wait cannot close a cycle.
//!
//! A failed write-back leaves the page dirty; the cleaner stops the round
//! and tries again after its period; the eviction or `flush` that meets
//! the page reports the error to its caller. While the disk is full (a
//! write-back failed for want of space, `space.rs`) a round is instead a
//! pass over every dirty page, every `SPACE_RETRY`, which clears that
//! state once the disk took them all.

use super::grace;
use super::latch::{MARKED, state};
use super::pool::PoolCore;
use crate::Result;
use crate::ids::PageId;
use crate::limits::{CLEAN_BATCH_MAX, CLEANER_IDLE_MAX, CLEANER_PERIOD, SPACE_RETRY};
use crate::page::bytes::AtomicPage;
use crate::page::header;
use crate::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Wake-ups and the stop request, shared by the pool and its cleaner.
#[derive(Default)]
pub(super) struct CleanerSignal {
    state: Mutex<SignalState>,
    wake: Condvar,
}

#[derive(Default)]
struct SignalState {
    stop: bool,
    requested: bool,
    /// Test hook: the cleaner does nothing while set.
    paused: bool,
}

impl CleanerSignal {
    /// Asks the cleaner for a round now.
    pub(super) fn request(&self) {
        let mut state = self.state.lock();
        if !state.requested {
            state.requested = true;
            self.wake.notify_one();
        }
    }

    /// Asks the cleaner thread to exit.
    pub(super) fn stop(&self) {
        self.state.lock().stop = true;
        self.wake.notify_one();
    }

    /// Stops (true) or resumes (false) cleaning; for tests that need to
    /// know who writes what.
    #[cfg(test)]
    pub(super) fn set_paused(&self, paused: bool) {
        self.state.lock().paused = paused;
        self.wake.notify_one();
    }

    /// Sleeps up to `timeout` or until requested. Returns `None` to exit,
    /// else whether cleaning is paused.
    fn wait(&self, timeout: Duration) -> Option<bool> {
        let mut state = self.state.lock();
        if !state.stop && !state.requested && !timeout.is_zero() {
            self.wake.wait_for(&mut state, timeout);
        }
        state.requested = false;
        if state.stop { None } else { Some(state.paused) }
    }
}

/// Starts the cleaner thread of `core`.
pub(super) fn spawn(core: Arc<PoolCore>) -> Result<std::thread::JoinHandle<()>> {
    let handle = std::thread::Builder::new().name("crabtree-cleaner".into()).spawn(move || run(&core))?;
    Ok(handle)
}

fn run(core: &PoolCore) {
    // Its one section per page it looks at begins with a CPU fence, so the
    // grace periods of a pool whose only reader is one thread need no
    // `membarrier` interrupting this thread (`grace.rs`, "Heavy sections").
    grace::make_heavy();
    let mut timeout = CLEANER_PERIOD;
    let mut last_retry = None;
    while let Some(paused) = core.cleaner.wait(timeout) {
        if paused {
            timeout = CLEANER_PERIOD;
            continue;
        }
        if core.disk_full() {
            // At most one pass per `SPACE_RETRY`, however often evictors
            // meeting dirty victims wake us.
            let since = last_retry.map_or(SPACE_RETRY, |at: Instant| at.elapsed());
            if since < SPACE_RETRY {
                timeout = SPACE_RETRY - since;
                continue;
            }
            last_retry = Some(Instant::now());
            timeout = if core.retry_space() { CLEANER_PERIOD } else { SPACE_RETRY };
            continue;
        }
        let (written, full) = core.clean_round();
        timeout = if full && written > 0 {
            Duration::ZERO
        } else if written == 0 {
            // Found nothing: back off (a scan reads every resident word),
            // up to `CLEANER_IDLE_MAX`; an evictor meeting a dirty victim
            // wakes us at once.
            (timeout * 2).clamp(CLEANER_PERIOD, CLEANER_IDLE_MAX)
        } else {
            CLEANER_PERIOD
        };
    }
}

impl PoolCore {
    /// One round of the cleaner: writes back the dirty MARKED pages it
    /// finds (up to `CLEAN_BATCH_MAX`, in page-id order). Returns how many
    /// it wrote and whether it found a full batch. Entry and exit: no latch.
    pub(super) fn clean_round(&self) -> (usize, bool) {
        let candidates = self.resident.dirty_candidates(CLEAN_BATCH_MAX, |pid| self.latch(pid));
        let full = candidates.len() >= CLEAN_BATCH_MAX;
        let mut written = 0;
        for pid in candidates {
            match self.clean_page(pid) {
                Ok(true) => written += 1,
                Ok(false) => {}
                // Left dirty; whoever evicts or flushes it reports the error.
                Err(_) => return (written, false),
            }
        }
        (written, full)
    }

    /// Writes `pid` back if it is dirty and can be latched shared without
    /// waiting. Returns whether it wrote. Entry: no latch on `pid`. Exit:
    /// none; on `Ok(true)` the page was clean when the latch was released.
    pub(super) fn clean_page(&self, pid: PageId) -> Result<bool> {
        let latch = self.latch(pid);
        let before = latch.peek();
        if !latch.is_dirty() {
            return Ok(false);
        }
        // Make the log durable up to the page LSN before latching, so the
        // latch is not held while the log hook waits for the log (the
        // hook runs again inside `write_back`, under the latch, and is
        // cheap then unless the page changed). The LSN read here is only a
        // hint: a relaxed read of a frame no latch protects (after an
        // eviction, another page's frame: still a whole-word LSN some page
        // carried, so no further than the log has reached). It is read in
        // a read section, after seeing the page resident, like an
        // optimistic reader's: a load may be writing a frame that a stale
        // frame word names (`grace.rs`).
        let hint = {
            let _section = grace::enter();
            if !latch.is_resident() {
                return Ok(false);
            }
            failpoint!("cleaner.lsn_hint");
            header::lsn(&AtomicPage::new(self.frame(pid)))
        };
        self.log_flush_hook()(hint)?;
        // Held across the write, as an eviction batch holds it: a
        // write-back pass (a checkpoint's) may write this page beside us
        // (the same image, both latches shared) and must not sync before
        // our write returned. Landing after a checkpoint's sync, it would
        // be a write of a page whose last change the checkpoint covers, so
        // no full-page image in the log protects it if a crash tears it.
        let _in_flight = self.evicting.read();
        if !latch.try_lock_shared() {
            return Ok(false);
        }
        // Re-check under the latch: an evictor or flush may have written
        // it between our look and the latch.
        let result = if latch.is_dirty() {
            self.write_back(pid).map(|()| {
                latch.clear_dirty();
                true
            })
        } else {
            Ok(false)
        };
        latch.unlock_shared();
        if state(before) == MARKED {
            latch.try_mark();
        }
        if matches!(result, Ok(true)) {
            self.counters.cleaner_writes.add(1);
        }
        result
    }
}
