//! The log writer's synchronisation core: the progress marks (`reserved`,
//! `written`, `durable`), the poisoned flag, and every hand-off that waits
//! on them: an appender's wait for ring room, the flusher's idle
//! handshake, and a committer's wait for durability (leader or follower).
//!
//! It does no I/O and knows nothing of records or segments: `writer.rs`
//! passes the flush step in as a closure. That keeps it small enough for
//! the loom models in `tests/loom_wal.rs`, which compile this very file
//! against a loom-backed `crate::sync` (F9).
//!
//! Invariants it owns (the writer's module doc has the whole protocol):
//! * `durable <= written <= reserved`, each only grows; only the holder of
//!   the flushing role (the `role` mutex of [`Progress::wait_durable`])
//!   stores `written` and `durable`.
//! * A parked thread is always woken once its condition holds: a follower
//!   parks on `durable` only while the role is held, and the holder unparks
//!   after releasing it; an appender that wants room and the role holder
//!   that frees it, and an appender and the flusher going idle, meet in a
//!   Dekker handshake (`SeqCst` fences on both sides).
//! * After [`Progress::poison`] no wait reports durability beyond what was
//!   durable before it.
//!
//! Uses only `crate::sync` and `crate::ids`.

use std::time::{Duration, Instant};

use crate::ids::Lsn;
use crate::sync::{AtomicBool, AtomicU64, Mutex, Ordering, fence, park, park_until, unpark_all, yield_now};

/// How long the flusher parks at most while an appender waits for room and
/// the record at `filled` is still being copied (its appender's wake-up is
/// only a hint: [`Progress::hint_room`]).
pub(super) const ROOM_POLL: Duration = Duration::from_micros(50);

/// How long a leader that made no progress parks before it retries.
const STALL_POLL: Duration = Duration::from_micros(50);

/// See the module doc.
pub(super) struct Progress {
    /// Next LSN to reserve.
    pub(super) reserved: AtomicU64,
    /// Everything below is written to the files (ring space free).
    pub(super) written: AtomicU64,
    /// Everything below is durable.
    pub(super) durable: AtomicU64,
    /// Appenders are waiting for ring space.
    room_wanted: AtomicBool,
    /// The flusher is idle (or about to park); wakers clear it.
    flusher_idle: AtomicBool,
    /// Parking key of the flusher.
    flusher_key: AtomicU64,
    /// The writer is closing: the flusher must not stay idle.
    pub(super) shutdown: AtomicBool,
    /// A write or sync failed: nothing is acknowledged any more.
    pub(super) poisoned: AtomicBool,
}

impl Progress {
    /// Marks for a log whose end is `end`: everything below it is durable.
    pub(super) fn new(end: Lsn) -> Progress {
        Progress {
            reserved: AtomicU64::new(end.0),
            written: AtomicU64::new(end.0),
            durable: AtomicU64::new(end.0),
            room_wanted: AtomicBool::new(false),
            flusher_idle: AtomicBool::new(false),
            flusher_key: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
        }
    }

    /// Reserves `size` bytes of LSN space; returns their start.
    #[inline]
    pub(super) fn reserve(&self, size: u64) -> u64 {
        // AcqRel: besides handing out disjoint ranges, the reservation
        // orders a mini-transaction's dirty-bit store before a checkpoint
        // that reserves later, and a checkpoint's horizon store before a
        // mini-transaction that reserves later (`buffer::mtr`). Free on
        // x86, where every RMW is a barrier.
        self.reserved.fetch_add(size, Ordering::AcqRel)
    }

    /// Reserves `size` bytes only if they fit in the ring now (the
    /// flusher's own records: it must never wait for room it alone can
    /// make); returns their start.
    pub(super) fn try_reserve(&self, size: u64, capacity: u64) -> Option<u64> {
        let mut start = self.reserved.load(Ordering::Relaxed);
        loop {
            if start + size > self.written.load(Ordering::Acquire) + capacity {
                return None;
            }
            match self.reserved.compare_exchange_weak(start, start + size, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(start),
                Err(now) => start = now,
            }
        }
    }

    /// Whether a write or sync failed.
    #[inline]
    pub(super) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Poisons the log (the caller recorded the failure first) and wakes
    /// every parked committer and appender.
    pub(super) fn poison(&self) {
        self.poisoned.store(true, Ordering::SeqCst);
        unpark_all(&self.durable);
        unpark_all(&self.written);
    }

    /// Waits (parked) until ring space up to `end` is free; false if
    /// poisoned. Holds nothing.
    #[inline]
    pub(super) fn wait_for_room(&self, end: Lsn, capacity: u64) -> bool {
        // Acquire: the flusher copied the old words out before its
        // release store of `written`.
        if end.0 <= self.written.load(Ordering::Acquire) + capacity {
            return true;
        }
        self.wait_for_room_slow(end, capacity)
    }

    #[cold]
    fn wait_for_room_slow(&self, end: Lsn, capacity: u64) -> bool {
        loop {
            if end.0 <= self.written.load(Ordering::Acquire) + capacity {
                return true;
            }
            if self.poisoned.load(Ordering::Acquire) {
                return false;
            }
            self.room_wanted.store(true, Ordering::SeqCst);
            // SeqCst fence: the store above and the loads below (of
            // `flusher_idle` in `wake_flusher`, of `written` under the
            // parking lock) are each one side of a Dekker handshake, with
            // `idle` and with `publish_written`: one side must see the
            // other's store. Against `publish_written`, whose `written` is a
            // release store, only fences on both sides give that in C11
            // (without them both may miss: a lost wake-up; loom finds it,
            // `tests/loom_wal.rs`). Against `idle` the `SeqCst` accesses
            // alone suffice in C11, but loom models `SeqCst` accesses as
            // acquire/release and fences exactly. Only an appender about to
            // park pays it.
            fence(Ordering::SeqCst);
            self.wake_flusher();
            park(&self.written, || {
                end.0 > self.written.load(Ordering::Acquire) + capacity && !self.poisoned.load(Ordering::Acquire)
            });
        }
    }

    /// After an append published its record: if appenders wait for room,
    /// wake the flusher (it may be waiting for this very record).
    #[inline]
    pub(super) fn hint_room(&self) {
        // Relaxed, no fence: only a hint that shortens the wait of an
        // appender that wants room. The flusher does not rely on it: while
        // room is wanted it parks for `ROOM_POLL` at most (`idle`). A
        // `fence(SeqCst)` here, on every append, was 2.5% of a logged
        // insert (docs/BENCHMARKS.md).
        if self.room_wanted.load(Ordering::Relaxed) {
            self.wake_flusher();
        }
    }

    /// Wakes the flusher if it is idle.
    pub(super) fn wake_flusher(&self) {
        // Load first: a swap on every append would bounce the line.
        if self.flusher_idle.load(Ordering::SeqCst) && self.flusher_idle.swap(false, Ordering::SeqCst) {
            unpark_all(&self.flusher_key);
        }
    }

    /// The role holder wrote everything below `lsn` out of the ring:
    /// publishes it and wakes the appenders waiting for room.
    pub(super) fn publish_written(&self, lsn: Lsn) {
        // Release: the copies out of the ring are done before appenders
        // reuse the space (they acquire `written`).
        self.written.store(lsn.0, Ordering::Release);
        // SeqCst fence: the other side of `wait_for_room_slow`'s fence
        // (store `written`, then read `room_wanted`, against store
        // `room_wanted`, then read `written`): either this swap sees the
        // appender's request and unparks it, or the appender's check sees
        // this `written`. Once per batch written.
        fence(Ordering::SeqCst);
        if self.room_wanted.swap(false, Ordering::SeqCst) {
            unpark_all(&self.written);
        }
    }

    /// The role holder synced everything below `lsn`: publishes it. The
    /// waiters are woken when the role is released (`wait_durable`, and
    /// the flusher thread's loop).
    pub(super) fn publish_durable(&self, lsn: Lsn) {
        // Release: everything the sync made durable happens-before a
        // committer's acquire load that sees the new value.
        self.durable.store(lsn.0, Ordering::Release);
    }

    /// The LSN below which the log is durable.
    #[inline]
    pub(super) fn durable(&self) -> Lsn {
        // Acquire: pairs with `publish_durable`.
        Lsn(self.durable.load(Ordering::Acquire))
    }

    /// Wakes the committers parked on `durable` (after the role was
    /// released, or after a step that may have made progress).
    pub(super) fn wake_committers(&self) {
        unpark_all(&self.durable);
    }

    /// Waits (parked, no spinning) until the log is durable up to `lsn`:
    /// true, or false if the log is poisoned first.
    ///
    /// Group commit: a waiter that finds the flushing role (`role`) free
    /// takes it and runs `lead` (one flush step: write and sync everything
    /// filled so far; false if it failed, after poisoning the log under the
    /// role), then hands the role back and wakes the others; a waiter that
    /// finds it taken parks until the holder releases it. Holds nothing on
    /// entry and on return; holds the role only while `lead` runs.
    pub(super) fn wait_durable<S>(&self, role: &Mutex<S>, lsn: Lsn, mut lead: impl FnMut(&mut S) -> bool) -> bool {
        let mut stalls = 0u32;
        loop {
            // Acquire: pairs with the release store after the sync.
            if self.durable.load(Ordering::Acquire) >= lsn.0 {
                return true;
            }
            if self.poisoned.load(Ordering::Acquire) {
                return false;
            }
            let Some(mut state) = role.try_lock() else {
                // A leader is flushing: park until it hands the role back
                // (it unparks after unlocking; the check runs under the
                // parking bucket's lock, so the wake-up cannot be missed).
                park(&self.durable, || {
                    self.durable.load(Ordering::Acquire) < lsn.0
                        && !self.poisoned.load(Ordering::Acquire)
                        && role.is_locked()
                });
                continue;
            };
            let before = self.durable.load(Ordering::Relaxed);
            let ok = lead(&mut state);
            drop(state);
            unpark_all(&self.durable);
            if !ok {
                return false;
            }
            if self.durable.load(Ordering::Acquire) < lsn.0 && self.durable.load(Ordering::Relaxed) == before {
                // No progress: an earlier reservation is still being copied
                // into the buffer. Let its appender run, then retry. The
                // park re-checks `durable` under the parking lock: if that
                // appender (or anyone) leads a flush covering `lsn` first, its
                // `unpark_all` after the role is released must not be missed
                // (with no check the timer alone woke us: found by
                // `tests/loom_wal.rs`, 3 committers). The timer remains for
                // an appender that never waits (its record is made durable
                // by the next leader or the flusher thread).
                stalls += 1;
                if stalls < 4 {
                    yield_now();
                } else {
                    park_until(
                        &self.durable,
                        || self.durable.load(Ordering::Acquire) < lsn.0 && !self.poisoned.load(Ordering::Acquire),
                        Instant::now() + STALL_POLL,
                    );
                }
            }
        }
    }

    /// The flusher thread, holding nothing, found no work: parks until
    /// woken (room wanted, close) or `deadline`. `filled_now` says whether
    /// the record the flusher waits at is complete (asked only while room
    /// is wanted: then the flusher returns to write what is filled).
    pub(super) fn idle(&self, filled_now: impl FnOnce() -> bool, deadline: Instant) {
        self.flusher_idle.store(true, Ordering::SeqCst);
        // Dekker with `wait_for_room` (it stores `room_wanted`, then loads
        // `flusher_idle` in `wake_flusher`): one of the two sees the other.
        fence(Ordering::SeqCst);
        let room_wanted = self.room_wanted.load(Ordering::SeqCst);
        // Room is wanted: write what is filled; if the next record is still
        // being copied, look again after `ROOM_POLL` (its appender may wake
        // us sooner, but without a fence it can miss that we went idle).
        let room = room_wanted && filled_now();
        if room || self.shutdown.load(Ordering::SeqCst) {
            self.flusher_idle.store(false, Ordering::SeqCst);
            return;
        }
        let deadline = if room_wanted { deadline.min(Instant::now() + ROOM_POLL) } else { deadline };
        park_until(&self.flusher_key, || self.flusher_idle.load(Ordering::SeqCst), deadline);
        self.flusher_idle.store(false, Ordering::SeqCst);
    }

    /// Asks the flusher to close: it flushes everything and stops.
    pub(super) fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        // Dekker with `idle` (it stores `flusher_idle`, fences, loads
        // `shutdown`). The `SeqCst` accesses suffice in C11; the fence makes
        // the handshake checkable by loom, which models only fences
        // exactly (`tests/loom_wal.rs`). Once per close.
        fence(Ordering::SeqCst);
        self.wake_flusher();
    }
}
