//! Timestamps, the visibility watermark and the registry of active
//! snapshots.
//!
//! # Invariants
//! * Commit timestamps are handed out in increasing order, each once
//!   (`next` only grows, under `state`).
//! * `visible` (the watermark) is the highest `T` such that every commit
//!   with a timestamp `<= T` has finished (applied, and durable when it
//!   waited for durability): it is `min(in_flight) - 1`, or `next - 1` with
//!   nothing in flight. It only grows.
//! * A snapshot's start timestamp is read from `visible` and registered in
//!   `active` under the same lock the vacuum horizon is computed under, so
//!   the horizon never passes a snapshot that is about to start.
//! * `horizon() = min(active)`, or `visible` with no snapshot: no snapshot,
//!   present or future, reads below it.
//!
//! Entry and exit: no method is called with a tree latch held; `wait_visible`
//! blocks (on a condition variable) only for commits that already hold
//! their timestamp and are finishing.

use super::encoding::Ts;
use crate::sync::{AtomicU64, Condvar, Mutex, Ordering};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

struct State {
    /// The next commit timestamp to hand out.
    next: Ts,
    /// Timestamps handed out whose commit has not finished.
    in_flight: BTreeSet<Ts>,
    /// Active snapshots: start timestamp -> (count, when the first began).
    active: BTreeMap<Ts, (usize, Instant)>,
    /// The oldest commit that failed half-way (`fail`).
    stuck: Option<Ts>,
}

/// The timestamp oracle.
pub(crate) struct Oracle {
    state: Mutex<State>,
    /// The watermark (see the module doc). Written under `state`; read
    /// without it by `visible()` (Acquire pairs with the Release store, so
    /// a reader that sees `T` sees every version a commit <= T applied).
    visible: AtomicU64,
    published: Condvar,
}

impl Oracle {
    /// An oracle whose last commit had timestamp `last`.
    pub(crate) fn new(last: Ts) -> Oracle {
        Oracle {
            state: Mutex::new(State {
                next: last + 1,
                in_flight: BTreeSet::new(),
                active: BTreeMap::new(),
                stuck: None,
            }),
            visible: AtomicU64::new(last),
            published: Condvar::new(),
        }
    }

    /// The watermark.
    pub(crate) fn visible(&self) -> Ts {
        self.visible.load(Ordering::Acquire)
    }

    /// The last timestamp handed out.
    pub(crate) fn last_allocated(&self) -> Ts {
        self.state.lock().next - 1
    }

    /// Starts a snapshot at the watermark and registers it.
    pub(crate) fn begin(&self) -> Ts {
        let mut state = self.state.lock();
        let ts = self.visible.load(Ordering::Acquire);
        // Read the clock only for a new entry: snapshots begun between two
        // commits share one.
        state.active.entry(ts).or_insert_with(|| (0, Instant::now())).0 += 1;
        ts
    }

    /// Ends a snapshot begun at `ts`.
    pub(crate) fn end(&self, ts: Ts) {
        let mut state = self.state.lock();
        if let Some(entry) = state.active.get_mut(&ts) {
            entry.0 -= 1;
            if entry.0 == 0 {
                state.active.remove(&ts);
            }
        } else {
            debug_assert!(false, "ended snapshot {ts} that was not active");
        }
    }

    /// The oldest timestamp a snapshot may read at, now or later.
    pub(crate) fn horizon(&self) -> Ts {
        let state = self.state.lock();
        state.active.keys().next().copied().unwrap_or_else(|| self.visible.load(Ordering::Acquire))
    }

    /// Active snapshots, and the age and start of the oldest.
    pub(crate) fn snapshots(&self) -> (usize, Option<(Duration, Ts)>) {
        let state = self.state.lock();
        let count = state.active.values().map(|(n, _)| n).sum();
        // The oldest by timestamp began earliest among the registered ones
        // of that timestamp; its age is that of the first of them.
        let oldest = state.active.iter().next().map(|(&ts, (_, since))| (since.elapsed(), ts));
        (count, oldest)
    }

    /// Hands out the next commit timestamp; it is in flight until
    /// [`finish`](Self::finish).
    pub(crate) fn allocate(&self) -> Ts {
        let mut state = self.state.lock();
        let ts = state.next;
        state.next += 1;
        state.in_flight.insert(ts);
        ts
    }

    /// Marks the commit at `ts` finished (applied, or undone) and advances
    /// the watermark as far as no earlier commit holds it back.
    pub(crate) fn finish(&self, ts: Ts) {
        let mut state = self.state.lock();
        let removed = state.in_flight.remove(&ts);
        debug_assert!(removed, "finished commit {ts} twice");
        let visible = state.in_flight.first().map_or(state.next - 1, |&first| first - 1);
        if visible > self.visible.load(Ordering::Relaxed) {
            self.visible.store(visible, Ordering::Release);
            self.published.notify_all();
        }
    }

    /// Marks the commit at `ts` failed half-way (some of its versions may
    /// be in the tree, the engine is poisoned): it stays in flight, so the
    /// watermark never passes it and no snapshot of this process sees part
    /// of it (recovery decides its outcome); waiters past it give up.
    pub(crate) fn fail(&self, ts: Ts) {
        let mut state = self.state.lock();
        state.stuck = Some(state.stuck.map_or(ts, |stuck| stuck.min(ts)));
        self.published.notify_all();
    }

    /// Waits until the watermark reaches `ts`; false if it never will (a
    /// commit before it failed half-way, see [`fail`](Self::fail)).
    pub(crate) fn wait_visible(&self, ts: Ts) -> bool {
        if self.visible() >= ts {
            return true;
        }
        let mut state = self.state.lock();
        while self.visible.load(Ordering::Acquire) < ts {
            if state.stuck.is_some_and(|stuck| stuck < ts) {
                return false;
            }
            self.published.wait(&mut state);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_waits_for_the_earliest_in_flight_commit() {
        let oracle = Oracle::new(0);
        let (a, b) = (oracle.allocate(), oracle.allocate());
        oracle.finish(b);
        assert_eq!(oracle.visible(), 0, "b finished but a is still in flight");
        oracle.finish(a);
        assert_eq!(oracle.visible(), b);
    }

    #[test]
    fn a_failed_commit_holds_the_watermark_and_releases_later_waiters() {
        let oracle = Oracle::new(0);
        let (a, b) = (oracle.allocate(), oracle.allocate());
        oracle.fail(a);
        oracle.finish(b);
        assert_eq!(oracle.visible(), 0, "no snapshot may see past the failed commit");
        assert!(!oracle.wait_visible(b), "a waiter past it gives up instead of hanging");
        assert!(oracle.wait_visible(0));
    }

    #[test]
    fn horizon_is_the_oldest_snapshot() {
        let oracle = Oracle::new(5);
        let s = oracle.begin();
        let t = oracle.allocate();
        oracle.finish(t);
        assert_eq!((s, oracle.horizon()), (5, 5));
        oracle.end(s);
        assert_eq!(oracle.horizon(), 6);
    }
}
