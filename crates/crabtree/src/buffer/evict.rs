//! The resident set and clock (second-chance) replacement.
//!
//! The resident set is partitioned: `RESIDENT_SHARDS` shards, each a
//! `Mutex<Vec<PageId>>` with its own clock hand; page `pid` lives in shard
//! `pid % RESIDENT_SHARDS`. A shard is touched only when a page is loaded
//! or evicted (never on a hit: readers of resident pages write no shared
//! memory), and loaders and evictors of different shards never meet. The
//! number of resident pages is one atomic counter, so the budget check
//! takes no lock. An evictor starts at the shard after the last one any
//! evictor started at and try-locks its way round, so concurrent evictors
//! spread over shards instead of queueing on one.
//!
//! The hand walks a shard: an UNLOCKED page is MARKED (first pass); any
//! access resets MARKED to UNLOCKED (see `latch`); a page still MARKED when
//! the hand returns is try-locked exclusively and evicted. A scan marks
//! the leaves it loaded itself once it read them
//! (`BufferPool::cool_if_loaded_here`), so they go at the hand's next
//! visit and a scan through more data than memory does not push out the
//! pages other reads come back to.
//!
//! Clean pages go first: the hand passes a MARKED page that is dirty,
//! leaving it MARKED for the cleaner (which writes dirty MARKED pages,
//! the ones nearest each hand first: `dirty_candidates`), and evicts it on
//! a later visit once it is clean. One batch passes at most
//! `DIRTY_SKIPS_PER_VICTIM` dirty pages per victim it wants; after that it
//! takes dirty pages too and writes them itself, so a pool whose every
//! page is dirty still evicts with a bounded walk. A batch that passed a
//! dirty page wakes the cleaner. On a full disk (`space.rs`) a batch passes
//! every dirty page, looking for clean ones through both rounds of every
//! shard (a dirty page cannot be written then), and a batch whose dirty
//! victims all failed for want of space looks again that way.
//!
//! Eviction works in batches: the victims of one `ensure_budget` call (up
//! to `EVICT_BATCH_MAX` pages) are chosen and latched first, dirty ones are
//! written back (the background cleaner, `cleaner.rs`, normally got there
//! first: a reader that writes a dirty victim itself is counted in
//! `PoolStats::dirty_evictions`), then their words become EVICTED and their
//! frames go back to the frame array's free list (`frames.rs`): no system
//! call, the memory stays mapped for the next load. A batch holds
//! `evicting` shared from choosing its victims until their write-backs
//! returned: the victims are out of the set by then, so a write-back pass
//! (`write_dirty`, a checkpoint's before its sync) cannot see them and
//! instead takes `evicting` exclusively once at its end, waiting for them.
//!
//! Invariants:
//! * a page id is in the set iff its state is not EVICTED, except while its
//!   exclusive holder (loader or evictor) is between the state change and
//!   the set update; `count` is the number of frames in use: the shard
//!   lengths plus the victims whose frames are not back on the free list
//!   yet, so the budget check sees frames, not set membership (the frames
//!   ever touched stay within the budget plus about one page per
//!   concurrent loader);
//! * under a shard mutex we only try-lock (never wait on a latch), so no
//!   latch holder can deadlock with the mutex holder; no thread holds two
//!   shard mutexes;
//! * a latched page is never chosen, so eviction never blocks on (or
//!   breaks) a caller's latches, nor on the cleaner's shared latch (a page
//!   being written back is never evicted under it).
//!
//! The budget is soft: when every resident page is latched the pool grows
//! past it rather than fail or wait (a few pages per concurrent operation),
//! and so it does on a full disk when every page the walk meets is dirty
//! (new commits are refused then, so only those already applying and the
//! raw API's writes add pages; `space.rs`).

use super::grace;
use super::latch::{DIRTY, Latch, MARKED, UNLOCKED, state};
use super::pool::PoolCore;
use crate::Result;
use crate::ids::PageId;
use crate::limits::{CLEANER_LOOKAHEAD, DIRTY_SKIPS_PER_VICTIM, EVICT_BATCH_MAX, RESIDENT_SHARDS};
use crate::sync::{AtomicUsize, Mutex, Ordering};

/// The set of resident pages with the clock hands.
pub(super) struct Resident {
    shards: Box<[Shard]>,
    /// Pages in the set.
    count: AtomicUsize,
    /// Where the next evictor starts.
    next_shard: AtomicUsize,
}

/// One partition, on its own cache lines so shards do not false-share.
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<ShardSet>);

#[derive(Default)]
struct ShardSet {
    pids: Vec<PageId>,
    hand: usize,
}

impl Default for Resident {
    fn default() -> Self {
        Resident {
            shards: (0..RESIDENT_SHARDS).map(|_| Shard::default()).collect(),
            count: AtomicUsize::new(0),
            next_shard: AtomicUsize::new(0),
        }
    }
}

impl Resident {
    fn shard_of(&self, pid: PageId) -> &Shard {
        &self.shards[(pid.0 % RESIDENT_SHARDS as u64) as usize]
    }

    /// Adds a page that its caller (holding its exclusive latch) just made
    /// resident.
    pub(super) fn insert(&self, pid: PageId) {
        self.shard_of(pid).0.lock().pids.push(pid);
        // Relaxed: a count for the budget check, which tolerates staleness
        // (the budget is soft by a few pages per concurrent loader).
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Puts back a victim that could not be evicted (its count was never
    /// taken off). Entry: its exclusive latch.
    fn restore(&self, pid: PageId) {
        self.shard_of(pid).0.lock().pids.push(pid);
    }

    /// Takes `count` evicted pages off the count, once their frames are
    /// back on the free list.
    fn evicted(&self, count: usize) {
        // Relaxed: see `insert`.
        self.count.fetch_sub(count, Ordering::Relaxed);
    }

    /// Number of resident pages (victims being evicted included, until
    /// their frames are free).
    pub(super) fn len(&self) -> usize {
        // Relaxed: see `insert`.
        self.count.load(Ordering::Relaxed)
    }

    /// A copy of the resident pages (for flush).
    pub(super) fn snapshot(&self) -> Vec<PageId> {
        let mut all = Vec::with_capacity(self.len());
        for shard in self.shards.iter() {
            all.extend_from_slice(&shard.0.lock().pids);
        }
        all
    }

    /// Up to `want` resident pages that are dirty and MARKED (the clock
    /// passed them once and nobody touched them since: the next victims),
    /// in page-id order: an equal share of `want` from every shard, each
    /// share the first such pages from that shard's hand on (the pages its
    /// evictors reach next, which skip them while dirty), looking no
    /// further than `CLEANER_LOOKAHEAD` times the share past the hand: a
    /// page cleaned long before the hand comes is likely written again
    /// first. Takes each shard mutex in turn; no latch.
    pub(super) fn dirty_candidates<'a>(&self, want: usize, latch_of: impl Fn(PageId) -> Latch<'a>) -> Vec<PageId> {
        let share = want.div_ceil(RESIDENT_SHARDS);
        let mut found = Vec::with_capacity(share * RESIDENT_SHARDS);
        for shard in self.shards.iter() {
            let set = shard.0.lock();
            let (behind, ahead) = set.pids.split_at(set.hand.min(set.pids.len()));
            let first = found.len();
            for &pid in ahead.iter().chain(behind).take(share * CLEANER_LOOKAHEAD) {
                let word = latch_of(pid).peek();
                if word & DIRTY != 0 && state(word) == MARKED {
                    found.push(pid);
                    if found.len() - first >= share {
                        break;
                    }
                }
            }
        }
        found.sort_unstable();
        found
    }

    /// Walks the clocks and returns up to `want` pages, each removed from
    /// its shard and exclusively latched by the caller; they still count as
    /// resident until `evicted` (so concurrent loaders see the frames that
    /// are not free yet and evict for themselves rather than touch fresh
    /// frames).
    /// Each shard's hand walks at most two rounds of its shard. Dirty
    /// MARKED pages are passed while `skips` (counting down) lasts; the
    /// caller reads how many were passed from it.
    fn choose_victims<'a>(
        &self,
        want: usize,
        skips: &mut usize,
        latch_of: impl Fn(PageId) -> Latch<'a>,
    ) -> Vec<PageId> {
        let mut victims = Vec::with_capacity(want);
        // Relaxed: only spreads evictors over shards.
        let start = self.next_shard.fetch_add(1, Ordering::Relaxed);
        // First pass: skip shards another evictor or loader holds; second
        // pass: wait for them (we hold no latch a mutex holder could want).
        for pass in 0..2 {
            for step in 0..RESIDENT_SHARDS {
                if victims.len() >= want {
                    return victims;
                }
                let shard = &self.shards[(start + step) % RESIDENT_SHARDS];
                let set = if pass == 0 { shard.0.try_lock() } else { Some(shard.0.lock()) };
                let Some(mut set) = set else { continue };
                set.walk(want, &mut victims, skips, &latch_of);
            }
            if !victims.is_empty() {
                break;
            }
        }
        victims
    }
}

impl ShardSet {
    /// The clock in one shard: at most two rounds. A dirty MARKED page is
    /// passed (left MARKED, for the cleaner) while `skips` is not zero,
    /// which counts it down.
    fn walk<'a>(
        &mut self,
        want: usize,
        victims: &mut Vec<PageId>,
        skips: &mut usize,
        latch_of: &impl Fn(PageId) -> Latch<'a>,
    ) {
        let steps_max = 2 * self.pids.len() + 1;
        let mut steps = 0;
        while victims.len() < want && !self.pids.is_empty() && steps < steps_max {
            steps += 1;
            if self.hand >= self.pids.len() {
                self.hand = 0;
            }
            let hand = self.hand;
            let pid = self.pids[hand];
            let latch = latch_of(pid);
            let word = latch.peek();
            if state(word) == MARKED && word & DIRTY != 0 && *skips > 0 {
                *skips -= 1;
                self.hand += 1;
                continue;
            }
            match state(word) {
                UNLOCKED => {
                    latch.try_mark();
                    self.hand += 1;
                }
                MARKED if latch.try_lock_marked() => {
                    self.pids.swap_remove(hand);
                    victims.push(pid);
                }
                _ => self.hand += 1,
            }
        }
    }
}

impl PoolCore {
    /// Makes room for one more page if the pool is at its budget, evicting
    /// a batch so the next loads find room without coming here.
    ///
    /// Entry and exit: any latches the caller holds are untouched (we only
    /// try-lock other pages). Errors: a failed write-back of a dirty victim
    /// when no other victim was freed (a victim whose write-back failed
    /// stays resident and dirty).
    pub(super) fn ensure_budget(&self) -> Result<()> {
        let resident = self.resident.len();
        if resident < self.frames_max {
            return Ok(());
        }
        self.evict_batch(resident + 1 - self.frames_max)
    }

    /// The pages an eviction frees at least: `frames_max / 64`, within
    /// `1..=EVICT_BATCH_MAX`.
    pub(super) fn evict_batch_size(&self) -> usize {
        (self.frames_max / 64).clamp(1, EVICT_BATCH_MAX)
    }

    /// Evicts at least `want` pages if the clock finds them (a batch of
    /// `frames_max / 64`, within `1..=EVICT_BATCH_MAX`, when that is more),
    /// whatever the budget. Entry, exit and errors as for `ensure_budget`.
    pub(super) fn evict_batch(&self, want: usize) -> Result<()> {
        let batch = self.evict_batch_size();
        // The victims leave the resident list before they are written: a
        // checkpoint's write-back pass cannot see them, so it waits for
        // this guard before it syncs (`write_dirty`).
        let _in_flight = self.evicting.read();
        let want = want.max(batch);
        let skips_max = want * DIRTY_SKIPS_PER_VICTIM;
        // On a full disk dirty pages cannot be written: pass them all and
        // look for clean ones in the whole walk (`space.rs`).
        let mut pass_all = self.disk_full();
        let mut skips = if pass_all { usize::MAX } else { skips_max };
        let mut first_error = None;
        let mut freed = Vec::with_capacity(want);
        // A dirty page passed or taken.
        let mut dirty_seen = false;
        loop {
            let before = skips;
            let victims = self.resident.choose_victims(want, &mut skips, |pid| self.latch(pid));
            dirty_seen |= skips < before;
            for pid in victims {
                let latch = self.latch(pid);
                if latch.is_dirty() {
                    dirty_seen = true;
                    self.counters.dirty_evictions.add(1);
                    if let Err(error) = self.write_back(pid) {
                        failpoint!("evict.write_failed", ignore);
                        // Keep the page: still resident, still dirty.
                        self.resident.restore(pid);
                        latch.unlock_exclusive(false);
                        first_error.get_or_insert(error);
                        continue;
                    }
                }
                freed.push(self.frame_index(pid));
                latch.unlock_evicted();
            }
            // The disk just filled under this batch: every victim was dirty
            // and none could be written. Once more, passing dirty pages.
            let filled = first_error.as_ref().is_some_and(super::space::is_space_error);
            if !freed.is_empty() || !filled || pass_all {
                break;
            }
            pass_all = true;
            skips = usize::MAX;
        }
        if dirty_seen {
            // Dirty pages are next in line: wake the cleaner.
            self.cleaner.request();
        }
        // Free list first, count second: a loader that sees room under the
        // budget then finds these frames instead of touching a fresh one.
        // The victims' state words are EVICTED now: tag their frames
        // after that (`grace.rs`).
        let tag = if freed.is_empty() { 0 } else { grace::retire_tag() };
        self.frames.put(&freed, tag);
        self.resident.evicted(freed.len());
        self.counters.evictions.add(freed.len() as u64);
        // With a log, a failed write-back has poisoned the store, or (for
        // want of space) left its page dirty and made commits wait
        // (`space.rs`); either way later writes see it. The caller only
        // needs room, so it fails only when no victim could be freed. That
        // keeps reads working on a poisoned store or a full disk while
        // clean pages can make room; on a full disk it does not fail even
        // then: the pool grows past its budget (module doc), so a commit
        // already applying finishes instead of poisoning the engine.
        // Without a log the error is the caller's to see.
        let logged = self.wal.get().is_some();
        match first_error {
            Some(error) if logged && super::space::is_space_error(&error) => Ok(()),
            Some(error) if freed.is_empty() || !logged => Err(error),
            _ => Ok(()),
        }
    }
}
