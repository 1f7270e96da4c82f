//! Timestamps, the visibility watermark and the registry of active
//! snapshots.
//!
//! # Invariants
//! * Commit timestamps are handed out in increasing order, each once
//!   (`next` only grows, under `commits`).
//! * `visible` (the watermark) is the highest `T` such that every commit
//!   with a timestamp `<= T` has finished (applied, and durable when it
//!   waited for durability): it is `min(in_flight) - 1`, or `next - 1` with
//!   nothing in flight. It only grows (stored under `commits`).
//! * A snapshot's start timestamp is read from `visible` and registered in
//!   `active` under the `snapshots` lock, which the vacuum horizon is
//!   computed under too; `visible` only grows, so the horizon never passes
//!   a snapshot that is about to start.
//! * `horizon() = min(active)`, or `visible` with no snapshot: no snapshot,
//!   present or future, reads below it.
//! * A thread waiting for the watermark to reach `T` is parked on the
//!   address of `visible` with `T` as its token, and only there; a finish
//!   that raises the watermark to `V` wakes exactly the waiters with
//!   `T <= V` (and a failure wakes every waiter past the failed commit).
//!   No wake-up is lost: a waiter counts itself in `waiting`, then checks
//!   the watermark under the parking bucket's lock; a finisher stores the
//!   watermark, then reads `waiting` (both SeqCst, so one of the two sees
//!   the other), and unparks under that same bucket lock.
//!
//! Commits and snapshots take different locks, so a commit's `allocate`
//! and `finish` never wait behind a snapshot's `begin` or `end`. Before,
//! one lock served both, and every finish woke every waiter (a condition
//! variable's `notify_all`): with 16 committing threads on 16 cores, each
//! finish woke ~15 threads that went back to sleep (docs/BENCHMARKS.md,
//! "Thread scaling").
//!
//! Entry and exit: no method is called with a tree latch held; `wait_visible`
//! blocks only for commits that already hold their timestamp and are
//! finishing.
//!
//! Checked by loom (`tests/loom_oracle.rs`, which compiles this file
//! against loom: publication of the watermark, no lost wake-up, a failed
//! commit holding the watermark, the horizon) and by the unit tests in
//! `oracle_tests.rs` (beside this file so that the loom build leaves them
//! out).

use super::encoding::Ts;
use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// `stuck` when no commit failed.
const NOT_STUCK: Ts = Ts::MAX;

struct Commits {
    /// The next commit timestamp to hand out.
    next: Ts,
    /// Timestamps handed out whose commit has not finished.
    in_flight: BTreeSet<Ts>,
}

/// The timestamp oracle.
pub(crate) struct Oracle {
    commits: Mutex<Commits>,
    /// Active snapshots: start timestamp -> (count, when the first began).
    snapshots: Mutex<BTreeMap<Ts, (usize, Instant)>>,
    /// The watermark (see the module doc). Written under `commits`; read
    /// without it by `visible()` (Acquire pairs with the Release part of
    /// the SeqCst store, so a reader that sees `T` sees every version a
    /// commit <= T applied).
    visible: AtomicU64,
    /// The oldest commit that failed half-way (`fail`), or `NOT_STUCK`.
    stuck: AtomicU64,
    /// Threads in `wait_visible` that may be parked.
    pub(super) waiting: AtomicUsize,
    /// Times a parked waiter was woken (tests: which finish woke whom).
    #[cfg(test)]
    pub(super) wakeups: AtomicUsize,
}

impl Oracle {
    /// An oracle whose last commit had timestamp `last`.
    pub(crate) fn new(last: Ts) -> Oracle {
        Oracle {
            commits: Mutex::new(Commits { next: last + 1, in_flight: BTreeSet::new() }),
            snapshots: Mutex::new(BTreeMap::new()),
            visible: AtomicU64::new(last),
            stuck: AtomicU64::new(NOT_STUCK),
            waiting: AtomicUsize::new(0),
            #[cfg(test)]
            wakeups: AtomicUsize::new(0),
        }
    }

    /// The watermark.
    pub(crate) fn visible(&self) -> Ts {
        self.visible.load(Ordering::Acquire)
    }

    /// The last timestamp handed out.
    pub(crate) fn last_allocated(&self) -> Ts {
        self.commits.lock().next - 1
    }

    /// Starts a snapshot at the watermark and registers it.
    pub(crate) fn begin(&self) -> Ts {
        let mut active = self.snapshots.lock();
        let ts = self.visible.load(Ordering::Acquire);
        // Read the clock only for a new entry: snapshots begun between two
        // commits share one.
        active.entry(ts).or_insert_with(|| (0, Instant::now())).0 += 1;
        ts
    }

    /// Ends a snapshot begun at `ts`.
    pub(crate) fn end(&self, ts: Ts) {
        let mut active = self.snapshots.lock();
        if let Some(entry) = active.get_mut(&ts) {
            entry.0 -= 1;
            if entry.0 == 0 {
                active.remove(&ts);
            }
        } else {
            debug_assert!(false, "ended snapshot {ts} that was not active");
        }
    }

    /// The oldest timestamp a snapshot may read at, now or later.
    pub(crate) fn horizon(&self) -> Ts {
        let active = self.snapshots.lock();
        active.keys().next().copied().unwrap_or_else(|| self.visible.load(Ordering::Acquire))
    }

    /// Active snapshots, and the age and start of the oldest.
    pub(crate) fn snapshots(&self) -> (usize, Option<(Duration, Ts)>) {
        let active = self.snapshots.lock();
        let count = active.values().map(|(n, _)| n).sum();
        // The oldest by timestamp began earliest among the registered ones
        // of that timestamp; its age is that of the first of them.
        let oldest = active.iter().next().map(|(&ts, (_, since))| (since.elapsed(), ts));
        (count, oldest)
    }

    /// Hands out the next commit timestamp; it is in flight until
    /// [`finish`](Self::finish).
    pub(crate) fn allocate(&self) -> Ts {
        let mut commits = self.commits.lock();
        let ts = commits.next;
        commits.next += 1;
        commits.in_flight.insert(ts);
        ts
    }

    /// Marks the commit at `ts` finished (applied, or undone) and advances
    /// the watermark as far as no earlier commit holds it back; wakes the
    /// waiters the advance covers.
    pub(crate) fn finish(&self, ts: Ts) {
        let raised = {
            let mut commits = self.commits.lock();
            let removed = commits.in_flight.remove(&ts);
            debug_assert!(removed, "finished commit {ts} twice");
            let visible = commits.in_flight.first().map_or(commits.next - 1, |&first| first - 1);
            // Under the lock: two finishers store in the order they
            // computed, so the watermark only grows.
            (visible > self.visible.load(Ordering::Relaxed)).then(|| {
                // SeqCst: ordered before the load of `waiting` below
                // (module doc: no lost wake-up).
                self.visible.store(visible, Ordering::SeqCst);
                visible
            })
        };
        if let Some(visible) = raised
            && self.waiting.load(Ordering::SeqCst) > 0
        {
            crate::sync::unpark_up_to(&self.visible, visible);
        }
    }

    /// Marks the commit at `ts` failed half-way (some of its versions may
    /// be in the tree, the engine is poisoned): it stays in flight, so the
    /// watermark never passes it and no snapshot of this process sees part
    /// of it (recovery decides its outcome); waiters past it give up.
    pub(crate) fn fail(&self, ts: Ts) {
        // SeqCst: ordered before the wake-up below, as in `finish`.
        self.stuck.fetch_min(ts, Ordering::SeqCst);
        crate::sync::unpark_all(&self.visible);
    }

    /// Waits until the watermark reaches `ts`; false if it never will (a
    /// commit before it failed half-way, see [`fail`](Self::fail)).
    pub(crate) fn wait_visible(&self, ts: Ts) -> bool {
        loop {
            if self.visible.load(Ordering::Acquire) >= ts {
                return true;
            }
            if self.stuck.load(Ordering::Acquire) < ts {
                return false;
            }
            // Tests pause a waiter here, between its checks and its count:
            // a finish meanwhile sees no waiter and wakes nobody
            // (`oracle.before_wait`).
            failpoint!("oracle.before_wait", ignore);
            // SeqCst, before the check under the bucket lock: a finisher
            // that stored the watermark after that check sees the count.
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let _parked = crate::sync::park_waiting_for(&self.visible, ts, || {
                self.visible.load(Ordering::SeqCst) < ts && self.stuck.load(Ordering::SeqCst) >= ts
            });
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            #[cfg(test)]
            if _parked {
                self.wakeups.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}
