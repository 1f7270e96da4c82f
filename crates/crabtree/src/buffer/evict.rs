//! The resident set and clock (second-chance) replacement.
//!
//! The resident set is a `Mutex<Vec<PageId>>` touched only when a page is
//! loaded or evicted, never on a hit: readers of resident pages write no
//! shared memory. The clock hand walks it: an UNLOCKED page is MARKED (first
//! pass); any access resets MARKED to UNLOCKED (see `latch`); a page still
//! MARKED when the hand returns is try-locked exclusively and evicted.
//!
//! Invariants:
//! * a page id is in the set iff its state is not EVICTED, except while its
//!   exclusive holder (loader or evictor) is between the state change and
//!   the set update;
//! * under the set mutex we only try-lock (never wait on a latch), so no
//!   latch holder can deadlock with the mutex holder;
//! * a latched page is never chosen, so eviction never blocks on (or
//!   breaks) a caller's latches.
//!
//! The budget is soft: when every resident page is latched the pool grows
//! past it rather than fail or wait (a few pages per concurrent operation).

use super::latch::{Latch, MARKED, UNLOCKED, state};
use super::pool::BufferPool;
use crate::Result;
use crate::ids::PageId;
use crate::sync::{Mutex, Ordering};

/// The set of resident pages with the clock hand.
#[derive(Default)]
pub(super) struct Resident {
    inner: Mutex<ResidentSet>,
}

#[derive(Default)]
struct ResidentSet {
    pids: Vec<PageId>,
    hand: usize,
}

impl Resident {
    /// Adds a page that its caller (holding its exclusive latch) just made
    /// resident.
    pub(super) fn insert(&self, pid: PageId) {
        self.inner.lock().pids.push(pid);
    }

    /// Number of resident pages.
    pub(super) fn len(&self) -> usize {
        self.inner.lock().pids.len()
    }

    /// A copy of the resident pages (for flush).
    pub(super) fn snapshot(&self) -> Vec<PageId> {
        self.inner.lock().pids.clone()
    }

    /// Walks the clock at most two rounds and returns up to `want` pages,
    /// each removed from the set and exclusively latched by the caller.
    fn choose_victims<'a>(&self, want: usize, latch_of: impl Fn(PageId) -> Latch<'a>) -> Vec<PageId> {
        let mut set = self.inner.lock();
        let mut victims = Vec::with_capacity(want);
        let steps_max = 2 * set.pids.len() + 1;
        let mut steps = 0;
        while victims.len() < want && !set.pids.is_empty() && steps < steps_max {
            steps += 1;
            if set.hand >= set.pids.len() {
                set.hand = 0;
            }
            let hand = set.hand;
            let pid = set.pids[hand];
            let latch = latch_of(pid);
            match state(latch.peek()) {
                UNLOCKED => {
                    latch.try_mark();
                    set.hand += 1;
                }
                MARKED if latch.try_lock_marked() => {
                    set.pids.swap_remove(hand);
                    victims.push(pid);
                }
                _ => set.hand += 1,
            }
        }
        victims
    }
}

impl BufferPool {
    /// Makes room for one more page if the pool is at its budget.
    ///
    /// Entry and exit: any latches the caller holds are untouched (we only
    /// try-lock other pages). Errors: a failed write-back of a dirty victim
    /// (the victim stays resident and dirty).
    pub(super) fn ensure_budget(&self) -> Result<()> {
        let resident = self.resident.len();
        if resident < self.frames_max {
            return Ok(());
        }
        let batch = (self.frames_max / 64).clamp(1, 32);
        let want = resident + 1 - self.frames_max + batch;
        let victims = self.resident.choose_victims(want, |pid| self.latch(pid));
        let mut first_error = None;
        for pid in victims {
            if let Err(error) = self.evict(pid) {
                // Keep the page: still resident, still dirty.
                self.resident.insert(pid);
                self.latch(pid).unlock_exclusive(false);
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Writes back (if dirty) and drops one page. Entry: exclusive latch on
    /// `pid`, not in the resident set. Exit on `Ok`: page EVICTED, latch
    /// released. Exit on `Err`: still latched, the caller restores it.
    fn evict(&self, pid: PageId) -> Result<()> {
        let latch = self.latch(pid);
        if latch.is_dirty() {
            self.write_back(pid)?;
        }
        self.discard(pid)?;
        latch.unlock_evicted();
        // Relaxed: a statistic.
        self.counters.evictions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
