//! Loom models of the hybrid latch (fault class F9).
//!
//! Goal: prove, for every interleaving and every weak-memory outcome loom
//! explores (bounded preemption), that (1) exclusive excludes exclusive and
//! shared, (2) an optimistic reader that validates never saw a torn page,
//! (3) a parked waiter is always woken (loom reports a deadlock otherwise).
//!
//! Method: the very source of `src/buffer/latch.rs` is compiled here against
//! a loom-backed `sync` module (atomics, fences, and `park`/`unpark_all`
//! modelled with one Mutex + Condvar whose check runs under the mutex, as
//! parking_lot_core runs it under the bucket lock). No `--cfg loom` is
//! needed: `crate::sync` in the included file resolves to the module below.
//!
//! Spawn order: loom 0.7 skips interleavings when a spawned thread loads an
//! atomic before it writes it (tokio-rs/loom#392, open), as a locker reads
//! the latch word before its CAS. With the observer in the main thread,
//! `validated_optimistic_read_is_never_torn` never ran an optimistic read
//! that began after a writer's round (checked: only reads begun at version
//! 0 validated), and `exclusive_excludes_exclusive_and_shared` never had
//! the shared holder after a writer. The observers are now spawned after
//! the writers, and those two models assert that they reached every case
//! (a validated read after 0, 1 and 2 rounds; a shared holder before,
//! between and after the writers). Of the other three, the upgrade model
//! was checked to reach each outcome (either thread's upgrade alone, and
//! both in turn); the two wake-up models order their threads with
//! `yield_now`, which loom honours.

mod sync {
    pub use loom::sync::atomic::{AtomicU64, Ordering, fence};
    use loom::sync::{Condvar, Mutex};

    loom::lazy_static! {
        static ref PARKING: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
    }

    /// Parks unless `should_park` (checked under the lock) says no.
    pub fn park(_key: &AtomicU64, should_park: impl FnOnce() -> bool) {
        let (lock, condvar) = &*PARKING;
        let guard = lock.lock().unwrap();
        if should_park() {
            drop(condvar.wait(guard).unwrap());
        }
    }

    /// Wakes every parked thread.
    pub fn unpark_all(_key: &AtomicU64) {
        let (lock, condvar) = &*PARKING;
        let _guard = lock.lock().unwrap();
        condvar.notify_all();
    }

    /// Lets loom schedule another thread instead of exploring spins.
    pub fn spin_hint() {
        loom::thread::yield_now();
    }
}

mod limits {
    /// Few spins so the park path is reached within the model's bounds.
    pub const LATCH_SPINS_MAX: u32 = 1;
}

#[allow(dead_code)]
#[path = "../src/buffer/latch.rs"]
mod latch;

use latch::{Latch, UNLOCKED};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::thread;

fn model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemptions);
    builder.check(f);
}

struct Page {
    word: AtomicU64,
    /// Plain data: loom reports a data race if the latch fails to order it.
    cell: UnsafeCell<u64>,
    /// Two words a writer keeps equal; relaxed, as in real frames.
    a: AtomicU64,
    b: AtomicU64,
}

fn page() -> Arc<Page> {
    Arc::new(Page {
        word: AtomicU64::new(UNLOCKED),
        cell: UnsafeCell::new(0),
        a: AtomicU64::new(0),
        b: AtomicU64::new(0),
    })
}

/// What a model's observing thread saw, collected over every execution:
/// a model must show it reached the interleavings it is about (loom 0.7
/// can skip them, see the module doc).
type Outcomes<T> = std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<T>>>;

#[test]
fn exclusive_excludes_exclusive_and_shared() {
    let outcomes: Outcomes<u64> = Default::default();
    let record = outcomes.clone();
    model(2, move || {
        let p = page();
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let p = p.clone();
                thread::spawn(move || {
                    let latch = Latch::new(&p.word);
                    assert!(latch.lock_exclusive());
                    p.cell.with_mut(|v| unsafe { *v += 1 });
                    latch.unlock_exclusive(true);
                })
            })
            .collect();
        let reader = {
            let (p, record) = (p.clone(), record.clone());
            thread::spawn(move || {
                let latch = Latch::new(&p.word);
                assert!(latch.lock_shared());
                let seen = p.cell.with(|v| unsafe { *v });
                assert!(seen <= 2);
                latch.unlock_shared();
                record.lock().unwrap().insert(seen);
            })
        };
        for w in writers {
            w.join().unwrap();
        }
        reader.join().unwrap();
        assert_eq!(p.cell.with(|v| unsafe { *v }), 2, "lost update");
    });
    assert_eq!(*outcomes.lock().unwrap(), [0, 1, 2].into(), "the shared holder came before, between and after");
}

#[test]
fn validated_optimistic_read_is_never_torn() {
    let outcomes: Outcomes<(u64, bool)> = Default::default();
    let record = outcomes.clone();
    model(3, move || {
        let p = page();
        let writer = {
            let p = p.clone();
            thread::spawn(move || {
                for round in 1..=2 {
                    let latch = Latch::new(&p.word);
                    assert!(latch.lock_exclusive());
                    p.a.store(round, Ordering::Relaxed);
                    p.b.store(round, Ordering::Relaxed);
                    latch.unlock_exclusive(true);
                }
            })
        };
        let reader = {
            let (p, record) = (p.clone(), record.clone());
            thread::spawn(move || {
                let latch = Latch::new(&p.word);
                let Some(observed) = latch.optimistic() else { return };
                let b = p.b.load(Ordering::Relaxed);
                let a = p.a.load(Ordering::Relaxed);
                let valid = latch.validate(observed);
                if valid {
                    assert_eq!(a, b, "validated a torn read");
                }
                record.lock().unwrap().insert((a, valid));
            })
        };
        writer.join().unwrap();
        reader.join().unwrap();
    });
    let outcomes = outcomes.lock().unwrap();
    for round in 0..=2 {
        assert!(outcomes.contains(&(round, true)), "no validated read after {round} rounds: {outcomes:?}");
    }
    assert!(outcomes.iter().any(|&(_, valid)| !valid), "no read was invalidated: {outcomes:?}");
}

#[test]
fn upgrade_is_exclusive_and_sees_no_stale_version() {
    model(2, || {
        let p = page();
        let other = {
            let p = p.clone();
            thread::spawn(move || {
                let latch = Latch::new(&p.word);
                let seen = latch.optimistic().unwrap();
                if latch.try_upgrade(seen) {
                    p.cell.with_mut(|v| unsafe { *v += 1 });
                    latch.unlock_exclusive(true);
                }
            })
        };
        let latch = Latch::new(&p.word);
        let seen = latch.optimistic().unwrap();
        if latch.try_upgrade(seen) {
            p.cell.with_mut(|v| unsafe { *v += 1 });
            latch.unlock_exclusive(true);
        }
        other.join().unwrap();
        let total = p.cell.with(|v| unsafe { *v });
        assert!((1..=2).contains(&total), "at least one upgrade wins: {total}");
    });
}

#[test]
fn parked_waiters_are_always_woken() {
    model(2, || {
        let p = page();
        let latch = Latch::new(&p.word);
        assert!(latch.lock_exclusive());
        let waiters: Vec<_> = (0..2)
            .map(|kind| {
                let p = p.clone();
                thread::spawn(move || {
                    let latch = Latch::new(&p.word);
                    if kind == 0 {
                        assert!(latch.lock_shared());
                        latch.unlock_shared();
                    } else {
                        assert!(latch.lock_exclusive());
                        latch.unlock_exclusive(false);
                    }
                })
            })
            .collect();
        thread::yield_now();
        latch.unlock_exclusive(false);
        for w in waiters {
            w.join().unwrap();
        }
    });
}

/// Writer preference: a shared holder, an exclusive locker that must wait
/// for it (and so sets WRITER_WAITING), and a second shared locker that
/// arrives meanwhile and must wait behind the writer. Every interleaving
/// ends (no lost wake-up of the shared locker parked on a page that is
/// UNLOCKED with the writer's flag set) and the writer excludes both.
#[test]
fn shared_lockers_queue_behind_a_waiting_writer_and_are_woken() {
    model(2, || {
        let p = page();
        let latch = Latch::new(&p.word);
        assert!(latch.lock_shared());
        let writer = {
            let p = p.clone();
            thread::spawn(move || {
                let latch = Latch::new(&p.word);
                assert!(latch.lock_exclusive());
                // SAFETY (test): loom reports a race if the latch fails to
                // order this write against the readers.
                p.cell.with_mut(|v| unsafe { *v = 1 });
                latch.unlock_exclusive(false);
            })
        };
        let reader = {
            let p = p.clone();
            thread::spawn(move || {
                let latch = Latch::new(&p.word);
                assert!(latch.lock_shared());
                // Either before the writer's turn (0) or after it (1).
                // SAFETY (test): as above.
                let seen = p.cell.with(|v| unsafe { *v });
                assert!(seen <= 1);
                latch.unlock_shared();
            })
        };
        thread::yield_now();
        latch.unlock_shared();
        writer.join().unwrap();
        reader.join().unwrap();
        assert_eq!(latch.peek() & latch::WRITER_WAITING, 0, "writer flag left set");
    });
}
