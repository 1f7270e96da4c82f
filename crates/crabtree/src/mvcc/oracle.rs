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
    waiting: AtomicUsize,
    /// Times a parked waiter was woken (tests: which finish woke whom).
    #[cfg(test)]
    wakeups: AtomicUsize,
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

    /// Waits (up to 10 s) until `count` threads wait in `wait_visible`.
    fn until_waiting(oracle: &Oracle, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while oracle.waiting.load(Ordering::SeqCst) != count {
            assert!(Instant::now() < deadline, "waiters never parked");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Counted comes just before parked: give the park a moment.
        std::thread::sleep(Duration::from_millis(20));
    }

    /// A thread waiting for `ts`; its answer comes through the receiver.
    fn waiter(oracle: &std::sync::Arc<Oracle>, ts: Ts) -> std::sync::mpsc::Receiver<bool> {
        let (answer, receiver) = std::sync::mpsc::channel();
        let oracle = std::sync::Arc::clone(oracle);
        std::thread::spawn(move || answer.send(oracle.wait_visible(ts)).unwrap());
        receiver
    }

    /// The waiter's answer; fails instead of hanging if it never comes.
    fn answer_of(receiver: &std::sync::mpsc::Receiver<bool>) -> bool {
        receiver.recv_timeout(Duration::from_secs(10)).expect("the waiter was never woken")
    }

    #[test]
    fn a_finish_wakes_only_the_waiters_it_makes_visible() {
        let oracle = std::sync::Arc::new(Oracle::new(0));
        let (a, b, c) = (oracle.allocate(), oracle.allocate(), oracle.allocate());
        let (wait_b, wait_c) = (waiter(&oracle, b), waiter(&oracle, c));
        until_waiting(&oracle, 2);
        oracle.finish(b);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(oracle.wakeups.load(Ordering::SeqCst), 0, "a is in flight: the watermark did not move");
        oracle.finish(a);
        assert!(answer_of(&wait_b), "the watermark reached b");
        until_waiting(&oracle, 1);
        assert_eq!(oracle.wakeups.load(Ordering::SeqCst), 1, "c's waiter was not woken: the watermark is below c");
        assert!(wait_c.try_recv().is_err(), "c's waiter still waits");
        oracle.finish(c);
        assert!(answer_of(&wait_c));
        assert_eq!(oracle.wakeups.load(Ordering::SeqCst), 2);
    }

    /// A waiter checked the watermark (below its commit) and is paused
    /// before it counts itself; the finish that covers it runs meanwhile,
    /// sees no waiter and wakes nobody. Resumed, the waiter must not park
    /// for good: its check under the bucket lock sees the new watermark.
    #[test]
    #[cfg(feature = "failpoints")]
    fn a_finish_between_a_waiters_check_and_its_park_is_not_lost() {
        use crate::failpoint::Pause;
        let oracle = std::sync::Arc::new(Oracle::new(0));
        let a = oracle.allocate();
        let pause = Pause::arm_for("oracle.before_wait", |thread| thread.name() == Some("waiter"));
        let (answer, receiver) = std::sync::mpsc::channel();
        let waiter = {
            let oracle = std::sync::Arc::clone(&oracle);
            std::thread::Builder::new()
                .name("waiter".into())
                .spawn(move || answer.send(oracle.wait_visible(a)).unwrap())
                .unwrap()
        };
        assert!(pause.wait_parked(Duration::from_secs(10)), "the waiter never reached its count");
        assert_eq!(oracle.waiting.load(Ordering::SeqCst), 0);
        oracle.finish(a);
        pause.resume();
        assert!(answer_of(&receiver), "the waiter saw its commit visible");
        waiter.join().unwrap();
        assert_eq!(oracle.wakeups.load(Ordering::SeqCst), 0, "it never parked: nobody had to wake it");
    }

    #[test]
    fn a_failure_wakes_the_waiters_past_it_to_give_up() {
        let oracle = std::sync::Arc::new(Oracle::new(0));
        let (a, b) = (oracle.allocate(), oracle.allocate());
        let wait_b = waiter(&oracle, b);
        until_waiting(&oracle, 1);
        oracle.fail(a);
        assert!(!answer_of(&wait_b), "the watermark never passes a failed commit");
    }

    /// Many threads finish in any order and each waits for its own
    /// commit: a lost wake-up hangs a thread, which the deadline reports.
    #[test]
    fn concurrent_commits_each_see_their_own_commit_visible() {
        let oracle = std::sync::Arc::new(Oracle::new(0));
        let threads = 8;
        let rounds = 3_000;
        let (done, finished) = std::sync::mpsc::channel();
        for thread in 0..threads {
            let (oracle, done) = (std::sync::Arc::clone(&oracle), done.clone());
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(thread);
                for _ in 0..rounds {
                    let ts = oracle.allocate();
                    for _ in 0..rng.usize(0..200) {
                        std::hint::spin_loop();
                    }
                    if rng.u8(..) < 8 {
                        std::thread::yield_now();
                    }
                    oracle.finish(ts);
                    assert!(oracle.wait_visible(ts));
                    assert!(oracle.visible() >= ts);
                }
                done.send(()).unwrap();
            });
        }
        for _ in 0..threads {
            finished.recv_timeout(Duration::from_secs(60)).expect("a waiter was never woken");
        }
        assert_eq!(oracle.visible(), threads * rounds);
        assert_eq!(oracle.waiting.load(Ordering::SeqCst), 0);
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
