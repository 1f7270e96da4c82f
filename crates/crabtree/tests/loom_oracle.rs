//! Loom models of the timestamp oracle (fault class F9: "watermark
//! publication").
//!
//! Goal: prove, for every interleaving and weak-memory outcome loom
//! explores (bounded preemption), that
//! 1. a snapshot that begins at watermark `T` sees everything the commits
//!    at or below `T` applied (plain data: loom reports a causality
//!    violation if `finish`'s store and `begin`'s load do not order it);
//! 2. a thread in `wait_visible(t)` is always woken once the commits up
//!    to `t` finish, in whatever order they finish and however its checks
//!    interleave with theirs (a lost wake-up is a deadlock loom reports);
//! 3. a waiter past a commit that failed half-way returns `false` instead
//!    of waiting forever, and the watermark never passes the failed one;
//! 4. the vacuum horizon never passes a snapshot that has begun.
//!
//! Method: the very source of `src/mvcc/oracle.rs` is compiled here
//! against a loom-backed `sync` module, as `loom_latch.rs` does for the
//! latch. Parking is modelled with one loom mutex and condition variable:
//! a waiter registers its target and checks `should_park` under the mutex
//! (as parking_lot_core runs it under the bucket lock), `unpark_up_to(v)`
//! marks the waiters with a target `<= v` woken, `unpark_all` every one;
//! a parked waiter returns only once marked, so the model has no spurious
//! wake-up that could hide a lost one.
//!
//! Spawn order: loom 0.7 misses interleavings when a thread's store to an
//! atomic follows its own load of it (tokio-rs/loom#392, open: DPOR keeps
//! only the last access of each atomic, so the thread's load hides the
//! observer's earlier one). `finish` loads the watermark before it stores
//! it, and a model whose observer ran in the main thread before the
//! spawned committers explored no execution where a commit finished before
//! the observer looked (checked: every snapshot began at 0). So each model
//! spawns the writers first and the observers last, every thread spawned
//! (loom runs the first spawned first, and DPOR then moves the observers
//! in front of the writers' stores), and asserts afterwards that it
//! reached the outcomes that matter.
//!
//! Mutations, each tried and each failing its model: `finish`'s store of
//! the watermark made Release and its load of `waiting` Relaxed (the Dekker
//! pair broken) -> model 2 deadlocks; the waiter's check under the parking
//! lock replaced by `true` -> model 2 deadlocks; `begin`'s load made
//! Relaxed -> model 1 reports a causality violation (a data race); the
//! watermark raised to the finishing commit whatever is still in flight ->
//! models 1 and 3 fail; `fail` waking nobody -> model 3 deadlocks; the
//! horizon ignoring active snapshots -> model 4 fails.

#![allow(dead_code)]

mod sync {
    pub use loom::sync::atomic::Ordering;
    use loom::sync::atomic::fence;
    use loom::sync::{Condvar, Mutex as LoomMutex};

    /// Loom models a `SeqCst` access as `AcqRel` (a documented limit of
    /// loom 0.7: "not complete", false alarms), but models `SeqCst` fences
    /// exactly. So a `SeqCst` access of the oracle runs here as the fenced
    /// form compilers use on weakly ordered machines: a `SeqCst` fence
    /// before a load, after a store, on both sides of a read-modify-write.
    /// That is at least as strong as a `SeqCst` access, so the models check
    /// the oracle's protocol under the orderings it asks for; they cannot
    /// check what a `SeqCst` access would give that these fences do not.
    macro_rules! atomic {
        ($name:ident, $inner:ty, $int:ty) => {
            pub struct $name($inner);

            impl $name {
                pub fn new(value: $int) -> Self {
                    $name(<$inner>::new(value))
                }
                pub fn load(&self, order: Ordering) -> $int {
                    if order == Ordering::SeqCst {
                        fence(Ordering::SeqCst);
                        return self.0.load(Ordering::Acquire);
                    }
                    self.0.load(order)
                }
                pub fn store(&self, value: $int, order: Ordering) {
                    if order == Ordering::SeqCst {
                        self.0.store(value, Ordering::Release);
                        fence(Ordering::SeqCst);
                        return;
                    }
                    self.0.store(value, order)
                }
                pub fn fetch_add(&self, value: $int, order: Ordering) -> $int {
                    self.rmw(order, |a, o| a.fetch_add(value, o))
                }
                pub fn fetch_sub(&self, value: $int, order: Ordering) -> $int {
                    self.rmw(order, |a, o| a.fetch_sub(value, o))
                }
                pub fn fetch_min(&self, value: $int, order: Ordering) -> $int {
                    self.rmw(order, |a, o| a.fetch_min(value, o))
                }
                fn rmw(&self, order: Ordering, op: impl FnOnce(&$inner, Ordering) -> $int) -> $int {
                    if order == Ordering::SeqCst {
                        fence(Ordering::SeqCst);
                        let old = op(&self.0, Ordering::AcqRel);
                        fence(Ordering::SeqCst);
                        return old;
                    }
                    op(&self.0, order)
                }
            }
        };
    }
    atomic!(AtomicU64, loom::sync::atomic::AtomicU64, u64);
    atomic!(AtomicUsize, loom::sync::atomic::AtomicUsize, usize);

    /// parking_lot's `Mutex` surface (no poisoning) over loom's.
    pub struct Mutex<T>(LoomMutex<T>);

    impl<T> Mutex<T> {
        pub fn new(value: T) -> Self {
            Mutex(LoomMutex::new(value))
        }
        pub fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap()
        }
    }

    /// A parked waiter: its target and whether an unpark covered it.
    struct Waiter {
        id: usize,
        target: u64,
        woken: bool,
    }

    struct Parking {
        waiters: Vec<Waiter>,
        next_id: usize,
    }

    loom::lazy_static! {
        static ref PARKING: (LoomMutex<Parking>, Condvar) =
            (LoomMutex::new(Parking { waiters: Vec::new(), next_id: 0 }), Condvar::new());
    }

    /// Parks until an unpark covers `target`, unless `should_park`
    /// (checked under the parking lock) says no. Returns whether it parked.
    pub fn park_waiting_for(_key: &AtomicU64, target: u64, should_park: impl FnOnce() -> bool) -> bool {
        let (lock, condvar) = &*PARKING;
        let mut parking = lock.lock().unwrap();
        if !should_park() {
            return false;
        }
        let id = parking.next_id;
        parking.next_id += 1;
        parking.waiters.push(Waiter { id, target, woken: false });
        loop {
            let at = parking.waiters.iter().position(|w| w.id == id).expect("a parked waiter stays listed");
            if parking.waiters[at].woken {
                parking.waiters.remove(at);
                return true;
            }
            parking = condvar.wait(parking).unwrap();
        }
    }

    /// Wakes the waiters whose target is at most `value`.
    pub fn unpark_up_to(_key: &AtomicU64, value: u64) {
        let (lock, condvar) = &*PARKING;
        let mut parking = lock.lock().unwrap();
        for waiter in parking.waiters.iter_mut().filter(|w| w.target <= value) {
            waiter.woken = true;
        }
        condvar.notify_all();
    }

    /// Wakes every waiter.
    pub fn unpark_all(_key: &AtomicU64) {
        let (lock, condvar) = &*PARKING;
        let mut parking = lock.lock().unwrap();
        for waiter in parking.waiters.iter_mut() {
            waiter.woken = true;
        }
        condvar.notify_all();
    }
}

mod encoding {
    /// A commit timestamp, as in `src/mvcc/encoding.rs`.
    pub type Ts = u64;
}

/// The failpoints compile to nothing here, as without the feature.
macro_rules! failpoint {
    ($name:literal, ignore) => {};
}

#[path = "../src/mvcc/oracle.rs"]
mod oracle;

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use oracle::Oracle;

fn model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemptions);
    builder.check(f);
}

/// What two commits applied: plain data, so loom checks the ordering.
struct Applied {
    oracle: Oracle,
    versions: [UnsafeCell<u64>; 2],
}

/// Model 1: two commits apply a version each and finish, in either order,
/// while a reader begins snapshots; whatever watermark a snapshot starts
/// at, every version at or below it is there (and readable without a data
/// race), and the watermark never passes a commit still in flight. Also
/// asserts that the model reached snapshots at every watermark (0, 1, 2):
/// a model that never ran the reader after a commit would prove nothing
/// (see "Spawn order" in the module doc).
#[test]
fn a_snapshot_sees_every_commit_at_or_below_its_watermark() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let record = std::sync::Arc::clone(&seen);
    model(3, move || {
        let shared = Arc::new(Applied { oracle: Oracle::new(0), versions: [UnsafeCell::new(0), UnsafeCell::new(0)] });
        let stamps = [shared.oracle.allocate(), shared.oracle.allocate()];
        let committers: Vec<_> = (0..2)
            .map(|i| {
                let shared = Arc::clone(&shared);
                let ts = stamps[i];
                thread::spawn(move || {
                    shared.versions[i].with_mut(|v| unsafe { *v = ts });
                    shared.oracle.finish(ts);
                })
            })
            .collect();
        let reader = {
            let (shared, record) = (Arc::clone(&shared), std::sync::Arc::clone(&record));
            thread::spawn(move || {
                for _ in 0..2 {
                    let at = shared.oracle.begin();
                    record.lock().unwrap().insert(at);
                    for (i, &ts) in stamps.iter().enumerate() {
                        if ts <= at {
                            let seen = shared.versions[i].with(|v| unsafe { *v });
                            assert_eq!(seen, ts, "snapshot at {at} misses commit {ts}");
                        }
                    }
                    shared.oracle.end(at);
                }
            })
        };
        for committer in committers {
            committer.join().unwrap();
        }
        reader.join().unwrap();
        assert_eq!(shared.oracle.visible(), stamps[1]);
    });
    assert_eq!(*seen.lock().unwrap(), [0, 1, 2].into(), "snapshots began at every watermark");
}

/// Model 2: a waiter for the later of two commits, each finished by its
/// own thread in either order. `wait_visible` must return `true` (a lost
/// wake-up leaves the waiter parked for good: loom reports a deadlock).
/// Also asserts that the model reached both a waiter that parked and one
/// that did not.
#[test]
fn a_waiter_is_always_woken_by_the_finish_that_covers_it() {
    let outcomes = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let record = std::sync::Arc::clone(&outcomes);
    model(2, move || {
        let oracle = Arc::new(Oracle::new(0));
        let (a, b) = (oracle.allocate(), oracle.allocate());
        let finishers: Vec<_> = [a, b]
            .into_iter()
            .map(|ts| {
                let oracle = Arc::clone(&oracle);
                thread::spawn(move || oracle.finish(ts))
            })
            .collect();
        let waiter = {
            let (oracle, record) = (Arc::clone(&oracle), std::sync::Arc::clone(&record));
            thread::spawn(move || {
                let before = oracle.visible();
                assert!(oracle.wait_visible(b), "no commit failed: the watermark reaches b");
                record.lock().unwrap().insert(before >= b);
            })
        };
        for finisher in finishers {
            finisher.join().unwrap();
        }
        waiter.join().unwrap();
        assert!(oracle.visible() >= b);
    });
    assert_eq!(*outcomes.lock().unwrap(), [false, true].into(), "waiters that had to wait and waiters that did not");
}

/// Model 3: a commit fails half-way while a waiter waits past it and a
/// later commit finishes: the waiter returns `false` (it never hangs), and
/// the watermark stays below the failed commit.
#[test]
fn a_waiter_past_a_failed_commit_gives_up_and_the_watermark_holds() {
    model(3, || {
        let oracle = Arc::new(Oracle::new(0));
        let (a, b) = (oracle.allocate(), oracle.allocate());
        let failing = {
            let oracle = Arc::clone(&oracle);
            thread::spawn(move || oracle.fail(a))
        };
        let finishing = {
            let oracle = Arc::clone(&oracle);
            thread::spawn(move || oracle.finish(b))
        };
        let waiter = {
            let oracle = Arc::clone(&oracle);
            thread::spawn(move || assert!(!oracle.wait_visible(b), "commit a failed: b never becomes visible"))
        };
        failing.join().unwrap();
        finishing.join().unwrap();
        waiter.join().unwrap();
        assert!(oracle.visible() < a, "the watermark passed a failed commit");
    });
}

/// Model 4: a snapshot begins while a commit finishes and vacuum reads the
/// horizon: once `begin` returned `T`, every horizon read after it is at
/// most `T` until the snapshot ends (vacuum never removes a version the
/// snapshot may read). Also asserts that both orders of the begin and the
/// horizon were reached.
#[test]
fn the_horizon_never_passes_a_snapshot_that_has_begun() {
    let outcomes = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let record = std::sync::Arc::clone(&outcomes);
    model(3, move || {
        let oracle = Arc::new(Oracle::new(0));
        let a = oracle.allocate();
        let begun = Arc::new(loom::sync::atomic::AtomicU64::new(u64::MAX));
        let finishing = {
            let oracle = Arc::clone(&oracle);
            thread::spawn(move || oracle.finish(a))
        };
        let snapshot = {
            let (oracle, begun) = (Arc::clone(&oracle), Arc::clone(&begun));
            thread::spawn(move || {
                let at = oracle.begin();
                begun.store(at, loom::sync::atomic::Ordering::SeqCst);
                at
            })
        };
        let vacuum = {
            let (oracle, begun, record) = (Arc::clone(&oracle), Arc::clone(&begun), std::sync::Arc::clone(&record));
            thread::spawn(move || {
                // What had begun before the horizon was read: a snapshot
                // registered by then must hold the horizon down.
                let started = begun.load(loom::sync::atomic::Ordering::SeqCst);
                let horizon = oracle.horizon();
                record.lock().unwrap().insert(started == u64::MAX);
                assert!(started == u64::MAX || horizon <= started, "horizon {horizon} passed snapshot {started}");
            })
        };
        finishing.join().unwrap();
        vacuum.join().unwrap();
        let at = snapshot.join().unwrap();
        oracle.end(at);
    });
    assert_eq!(*outcomes.lock().unwrap(), [false, true].into(), "the horizon read before and after the begin");
}
