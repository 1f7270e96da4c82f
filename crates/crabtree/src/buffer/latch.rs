//! The hybrid latch: one 64-bit state word per page that is at once an
//! optimistic version lock, a shared/exclusive latch, the residency state
//! of the page and its dirty bit (vmcache style).
//!
//! ```text
//!  63                        16 15    10  9       8       7      0
//! +----------------------------+--------+-------+---------+--------+
//! |          version           | zero |WW| DIRTY | WAITERS |  state |
//! +----------------------------+--------+-------+---------+--------+
//! state: 0 EVICTED   1 UNLOCKED   2 MARKED (clock: eviction candidate)
//!        3 EXCLUSIVE 4..=255 SHARED with (state - 3) holders
//! ```
//!
//! Zero means EVICTED, so a zero-filled state array is "nothing resident".
//!
//! Protocol and invariants:
//! * The version changes only when an exclusive holder releases (to
//!   UNLOCKED or to EVICTED), so "same version and not EXCLUSIVE now" proves
//!   no writer touched the page between two loads (optimistic validation).
//! * Only the exclusive holder writes the page; its data stores are relaxed
//!   atomics, ordered by `fence(Release)` right after the locking CAS and by
//!   the release RMW that unlocks.
//! * A page is resident iff its state is not EVICTED; only the exclusive
//!   holder moves a page in or out (EVICTED -> EXCLUSIVE -> UNLOCKED, and
//!   MARKED -> EXCLUSIVE -> EVICTED).
//! * WAITERS is set only by a thread about to park, and only while the state
//!   blocks it; every release clears it and, if it was set, wakes every
//!   parked thread (they re-check and park again if still blocked). Park
//!   validation runs under the parking bucket lock, as does `unpark_all`, so a
//!   wake-up cannot fall between a waiter's check and its sleep.
//! * DIRTY is set by the exclusive holder's release and cleared by the
//!   holder of a shared or exclusive latch after a successful write-back.
//! * WW (writer waiting, bit 10) is set by an exclusive locker before it
//!   waits and cleared by every exclusive acquisition (the waiter's own or
//!   another's, whose release wakes the waiter to set it again). While it is
//!   set, shared lockers wait (writer preference), so readers that overlap
//!   cannot keep a writer out forever. A thread therefore never takes a
//!   second shared latch on a page it holds shared.
//!
//! This file uses only `crate::sync` and `crate::limits`: the loom model
//! (`tests/loom_latch.rs`) compiles this same source against loom-backed
//! versions of those two modules.

use crate::limits::LATCH_SPINS_MAX;
use crate::sync::{AtomicU64, Ordering, fence, park, spin_hint, unpark_all};

/// Bits of the state field.
pub const STATE_MASK: u64 = 0xFF;
/// Not resident: no frame holds the page (its frame word is stale).
pub const EVICTED: u64 = 0;
/// Resident, no latch held.
pub const UNLOCKED: u64 = 1;
/// Resident, no latch held, chosen by the clock as an eviction candidate;
/// any access moves it back to UNLOCKED.
pub const MARKED: u64 = 2;
/// Resident (or being loaded/evicted), held exclusively.
pub const EXCLUSIVE: u64 = 3;
/// The largest state value: 252 shared holders.
const SHARED_LAST: u64 = 255;
/// Some thread is parked (or about to park) on this word.
pub const WAITERS: u64 = 1 << 8;
/// The frame differs from the page on disk.
pub const DIRTY: u64 = 1 << 9;
/// An exclusive locker is waiting: shared lockers wait too.
pub const WRITER_WAITING: u64 = 1 << 10;
/// Shift of the version field.
const VERSION_SHIFT: u32 = 16;
/// One version step.
const VERSION_ONE: u64 = 1 << VERSION_SHIFT;

/// The state field of a word.
pub fn state(word: u64) -> u64 {
    word & STATE_MASK
}

/// The version field of a word.
pub fn version(word: u64) -> u64 {
    word >> VERSION_SHIFT
}

fn with_state(word: u64, new_state: u64) -> u64 {
    (word & !STATE_MASK) | new_state
}

/// Blocks an optimistic reader: a writer is active.
fn blocks_optimistic(word: u64) -> bool {
    state(word) == EXCLUSIVE
}

/// Blocks a shared locker: a writer holds the page or waits for it
/// (writer preference), or the shared count is full.
fn blocks_shared(word: u64) -> bool {
    match state(word) {
        EXCLUSIVE | SHARED_LAST => true,
        EVICTED => false,
        _ => word & WRITER_WAITING != 0,
    }
}

/// Blocks an exclusive locker: any holder.
fn blocks_exclusive(word: u64) -> bool {
    state(word) >= EXCLUSIVE
}

/// A view of one page's state word.
#[derive(Clone, Copy)]
pub struct Latch<'a> {
    word: &'a AtomicU64,
}

impl<'a> Latch<'a> {
    /// Wraps a state word.
    #[inline]
    pub fn new(word: &'a AtomicU64) -> Self {
        Latch { word }
    }

    /// The current word. Relaxed: a snapshot for decisions that are
    /// re-checked by a CAS (eviction, statistics, assertions).
    pub fn peek(&self) -> u64 {
        self.word.load(Ordering::Relaxed)
    }

    /// The current word, with Acquire (as the first load of an optimistic
    /// read: the page's last exclusive holder's writes are visible after).
    pub fn load_acquire(&self) -> u64 {
        self.word.load(Ordering::Acquire)
    }

    /// Whether the page is resident, with Acquire: a frame word its loader
    /// stored before the state seen here is visible after it.
    pub fn is_resident(&self) -> bool {
        state(self.word.load(Ordering::Acquire)) != EVICTED
    }

    /// Starts an optimistic read. Waits (spin, then park) while the page is
    /// exclusively latched. Returns the observed word to validate against,
    /// or `None` when the page is not resident (the caller loads it).
    ///
    /// Entry: no latch on this page. Exit: none (nothing is written unless
    /// the page was MARKED, which is reset to UNLOCKED).
    #[inline]
    pub fn optimistic(&self) -> Option<u64> {
        loop {
            // Acquire: pairs with the Release unlock of the last exclusive
            // holder, so the page reads that follow see at least its writes.
            let word = self.word.load(Ordering::Acquire);
            match state(word) {
                EVICTED => return None,
                EXCLUSIVE => self.wait(blocks_optimistic),
                MARKED => {
                    // Second chance: an access unmarks the page. Relaxed: a
                    // hint for the clock, it orders nothing; failure is fine
                    // (the evictor or a locker changed it first) because
                    // validation catches an eviction by the version.
                    let _ = self.word.compare_exchange(
                        word,
                        with_state(word, UNLOCKED),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    return Some(word);
                }
                _ => return Some(word),
            }
        }
    }

    /// Whether the page is still as an optimistic read that observed
    /// `observed` saw it: resident, same version, not latched exclusively.
    /// The load is Acquire, so it starts a new optimistic read at
    /// `observed` (`BufferPool::optimistic_resume`).
    pub fn still(&self, observed: u64) -> bool {
        // Acquire: as in `optimistic`.
        let now = self.word.load(Ordering::Acquire);
        version(now) == version(observed) && !matches!(state(now), EXCLUSIVE | EVICTED)
    }

    /// Whether no writer latched the page since `observed` was read (so
    /// every relaxed read made in between saw a consistent page).
    #[inline]
    pub fn validate(&self, observed: u64) -> bool {
        // Acquire fence: if any page read since `observed` saw a store made
        // after some writer's locking CAS + Release fence, this fence
        // synchronises with that Release fence, so the reload below sees
        // the CAS (EXCLUSIVE) or a later unlock (new version).
        fence(Ordering::Acquire);
        // Relaxed: ordered after the page reads by the fence above.
        let now = self.word.load(Ordering::Relaxed);
        version(now) == version(observed) && state(now) != EXCLUSIVE
    }

    /// Upgrades an optimistic read to the exclusive latch if no writer came
    /// in between (same version, not latched by anyone). Never waits.
    /// Entry: optimistic read of this page. Exit: exclusive latch if true.
    pub fn try_upgrade(&self, observed: u64) -> bool {
        loop {
            // Relaxed: the CAS below re-checks the exact word.
            let word = self.word.load(Ordering::Relaxed);
            if version(word) != version(observed) || !matches!(state(word), UNLOCKED | MARKED) {
                return false;
            }
            // Acquire on success: pairs with the last shared holder's
            // Release unlock, so its reads happen before our writes.
            let new = with_state(word, EXCLUSIVE) & !WRITER_WAITING;
            if self.cas(word, new, Ordering::Acquire) {
                // Release fence: our later relaxed page stores cannot be
                // seen by an optimistic reader that misses this CAS.
                fence(Ordering::Release);
                return true;
            }
        }
    }

    /// Takes the shared latch, waiting while a writer holds the page or waits
    /// for it (see `blocks_shared`).
    /// Returns false (holding nothing) when the page is not resident.
    pub fn lock_shared(&self) -> bool {
        loop {
            // Relaxed: the CAS below decides and carries the ordering.
            let word = self.word.load(Ordering::Relaxed);
            if state(word) == EVICTED {
                return false;
            }
            if blocks_shared(word) {
                self.wait(blocks_shared);
                continue;
            }
            let next = match state(word) {
                UNLOCKED | MARKED => EXCLUSIVE + 1,
                holders => holders + 1,
            };
            // Acquire: pairs with the writer's Release unlock so our reads
            // see its writes.
            if self.cas(word, with_state(word, next), Ordering::Acquire) {
                return true;
            }
        }
    }

    /// Takes the shared latch only if that needs no wait (resident, no
    /// writer holding or waiting, room for one more holder). Used by the
    /// cleaner, which must not stall behind writers. Entry: no latch on this
    /// page. Exit: shared latch if true.
    pub fn try_lock_shared(&self) -> bool {
        let word = self.peek();
        if state(word) == EVICTED || blocks_shared(word) {
            return false;
        }
        let next = match state(word) {
            UNLOCKED | MARKED => EXCLUSIVE + 1,
            holders => holders + 1,
        };
        // Acquire: as in `lock_shared`.
        self.cas(word, with_state(word, next), Ordering::Acquire)
    }

    /// Releases a shared latch. Entry: shared latch held. Exit: none.
    pub fn unlock_shared(&self) {
        self.release(|word| {
            debug_assert!(state(word) > EXCLUSIVE, "unlock_shared of {word:#x}");
            let next = if state(word) == EXCLUSIVE + 1 { UNLOCKED } else { state(word) - 1 };
            with_state(word, next)
        });
    }

    /// Takes the exclusive latch, waiting for holders to leave. Returns
    /// false (holding nothing) when the page is not resident.
    pub fn lock_exclusive(&self) -> bool {
        loop {
            // Relaxed: the CAS below decides and carries the ordering.
            let word = self.word.load(Ordering::Relaxed);
            match state(word) {
                EVICTED => return false,
                UNLOCKED | MARKED => {
                    if self.try_exclusive_from(word) {
                        return true;
                    }
                }
                _ => {
                    // Relaxed: a flag read only to decide to wait; the
                    // parking protocol orders the wake-up (see `wait`).
                    if word & WRITER_WAITING == 0 {
                        self.word.fetch_or(WRITER_WAITING, Ordering::Relaxed);
                    }
                    self.wait(blocks_exclusive)
                }
            }
        }
    }

    /// Takes the exclusive latch only if the page is MARKED (the clock's
    /// second pass). Never waits.
    pub fn try_lock_marked(&self) -> bool {
        let word = self.peek();
        state(word) == MARKED && self.try_exclusive_from(word)
    }

    /// Marks an UNLOCKED page as an eviction candidate. Never waits.
    pub fn try_mark(&self) -> bool {
        let word = self.peek();
        // Relaxed: a hint that orders no data; accesses reset it.
        state(word) == UNLOCKED && self.cas(word, with_state(word, MARKED), Ordering::Relaxed)
    }

    /// Takes the exclusive latch of a non-resident page, to load it (or to
    /// install a fresh one). Never waits; false if the page is resident or
    /// someone else is loading it.
    pub fn try_lock_evicted(&self) -> bool {
        let word = self.peek();
        state(word) == EVICTED && self.try_exclusive_from(word)
    }

    fn try_exclusive_from(&self, word: u64) -> bool {
        // Acquire: pairs with the previous holder's Release unlock.
        if self.cas(word, with_state(word, EXCLUSIVE) & !WRITER_WAITING, Ordering::Acquire) {
            // Release fence: page stores after this point cannot be
            // observed by a reader whose validation misses the lock.
            fence(Ordering::Release);
            return true;
        }
        false
    }

    /// Releases the exclusive latch, bumping the version; `dirty` sets the
    /// dirty bit. Entry: exclusive latch. Exit: none, page resident.
    pub fn unlock_exclusive(&self, dirty: bool) {
        self.release(|word| {
            debug_assert_eq!(state(word), EXCLUSIVE, "unlock_exclusive of {word:#x}");
            let bumped = with_state(word.wrapping_add(VERSION_ONE), UNLOCKED);
            if dirty { bumped | DIRTY } else { bumped }
        });
    }

    /// Releases the exclusive latch of a page that just left memory:
    /// EVICTED, clean, new version. Entry: exclusive latch. Exit: none.
    pub fn unlock_evicted(&self) {
        self.release(|word| {
            debug_assert_eq!(state(word), EXCLUSIVE, "unlock_evicted of {word:#x}");
            with_state(word.wrapping_add(VERSION_ONE) & !DIRTY, EVICTED)
        });
    }

    /// Whether the dirty bit is set (meaningful under a latch).
    pub fn is_dirty(&self) -> bool {
        self.peek() & DIRTY != 0
    }

    /// Sets the dirty bit while the exclusive latch is held, before the
    /// change is logged: a checkpoint that starts after the change's log
    /// record was reserved writes the page back. Entry: exclusive latch.
    pub fn mark_dirty_held(&self) {
        // SeqCst: a checkpoint that reserves its log position after this
        // page's record must see the bit (see `buffer::mtr`).
        let _before = self.word.fetch_or(DIRTY, Ordering::SeqCst);
        #[cfg(feature = "failpoints")]
        assert_eq!(state(_before), EXCLUSIVE, "mark_dirty_held without the exclusive latch: {_before:#x}");
    }

    /// Clears the dirty bit after a write-back. Entry: shared or exclusive
    /// latch (no writer can dirty the page concurrently).
    pub fn clear_dirty(&self) {
        // Relaxed: the latch we hold keeps writers out; holder counts are
        // changed only by RMWs, which this RMW cannot lose.
        let _before = self.word.fetch_and(!DIRTY, Ordering::Relaxed);
        #[cfg(feature = "failpoints")]
        assert!(state(_before) >= EXCLUSIVE, "clear_dirty without a latch: {_before:#x}");
    }

    /// Applies a releasing transition, clearing WAITERS, and wakes parked
    /// threads if WAITERS was set.
    fn release(&self, next: impl Fn(u64) -> u64) {
        // Relaxed: the CAS below re-reads on failure.
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            let new = next(word) & !WAITERS;
            // Release: our page accesses happen before whatever the next
            // holder (Acquire CAS) or optimistic reader (Acquire load) does.
            match self.word.compare_exchange_weak(word, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => word = actual,
            }
        }
        if word & WAITERS != 0 {
            unpark_all(self.word);
        }
    }

    fn cas(&self, current: u64, new: u64, success: Ordering) -> bool {
        // Failure Relaxed: the caller reloads and decides again.
        self.word.compare_exchange(current, new, success, Ordering::Relaxed).is_ok()
    }

    /// Waits until `blocked` no longer holds (or spuriously); the caller
    /// re-checks. Spins a bounded number of times, then parks.
    fn wait(&self, blocked: fn(u64) -> bool) {
        for _ in 0..LATCH_SPINS_MAX {
            // Relaxed: only a hint to stop waiting; the caller's CAS decides.
            if !blocked(self.word.load(Ordering::Relaxed)) {
                return;
            }
            spin_hint();
        }
        let word = self.word.load(Ordering::Relaxed);
        if !blocked(word) {
            return;
        }
        // Relaxed: WAITERS is only a flag; the hand-off is ordered by the
        // parking bucket lock that both `park`'s check and `unpark_all`
        // take (a release that precedes our check under that lock is seen
        // by it; one that follows finds us queued).
        if word & WAITERS == 0 && !self.cas(word, word | WAITERS, Ordering::Relaxed) {
            return;
        }
        park(self.word, || {
            let now = self.word.load(Ordering::Relaxed);
            now & WAITERS != 0 && blocked(now)
        });
    }
}
