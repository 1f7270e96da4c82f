//! Epoch-based reclamation of page ids.
//!
//! A page unlinked from the tree (a deleted leaf, a replaced overflow chain)
//! may still be reached by a thread that read a link to it before the unlink
//! and follows it across an unlatched, unvalidated gap: a reader on the
//! shared-latch path between two latches, a leaf deletion walking to a
//! left-link hint, or a reader copying an overflow chain after it left the
//! leaf that names it (`value`). Such an operation runs *pinned*: it publishes the global
//! epoch it started in. `retire(pid)` records the epoch `r` of the unlink
//! and advances the global epoch; the id is handed back to the allocator
//! once no pin holds an epoch `<= r`.
//!
//! Optimistic attempts do not pin. Every unlink modifies (and so bumps the
//! version of) the page that linked to the victim before the victim is
//! retired: the parent for a downlink, the left neighbour for a right-link,
//! the right neighbour for a left-link, the leaf for an overflow chain. An
//! optimistic reader validates the linking page after taking the linked
//! page's version (lock coupling), so if the link was gone by then it
//! restarts, and if not, any later free and reuse of the page changes its
//! version and fails its own validation. Errors seen on a page reached that
//! way count only if the linking page still validates.
//!
//! # Slots: held per pin, not per thread
//! A pin publishes its epoch in a *slot*, one atomic word padded to a cache
//! line, `FREE` while no pin holds it. The outermost `pin` of a thread
//! claims a slot with one CAS `FREE -> epoch`, trying first the slot the
//! thread used last (its *preferred* slot, a thread-local index, spread
//! over the table when the thread first pins); the outermost unpin stores
//! `FREE` back. So in the common case a pin writes only one cache line that
//! no other thread writes, and a thread that is not inside an operation
//! holds nothing: any number of threads may exist. When every one of the
//! `SLOT_COUNT` slots is held at once, the pin goes to the *overflow list*
//! (a mutex-protected vector of epochs): slower, but pinning never waits
//! for another thread to unpin, which could deadlock (the pinned threads
//! may be waiting for the one that wants a slot, on a latch or elsewhere)
//! and would put a bound on the number of threads inside the tree.
//!
//! # Invariants
//! * a slot holds the epoch of at most one pin: it is claimed by a CAS from
//!   `FREE` and freed only by the thread that claimed it, at its outermost
//!   unpin; an overflow entry likewise belongs to one pin;
//! * pins nest (a thread-local depth counter): only the outermost pin
//!   claims and publishes, only the outermost unpin releases;
//! * pin: load the global epoch `e` (SeqCst), publish `e` (slot CAS, or
//!   push under the overflow mutex), SeqCst fence, then read the tree.
//!   retire: unlink (under the linking page's exclusive latch), then a
//!   SeqCst `fetch_add` of the global epoch, returning `r`. reclaim: take
//!   the pending list's mutex, SeqCst fence, read every slot and the
//!   overflow list, free the ids with `r < ` the oldest epoch seen.
//!
//! # Why a reclaimer never misses a pinned thread that can reach a page
//! Let thread P pin (publishing `e`, then its fence `Fp`) and later follow
//! a link to page `x`, unlinked by `U` and retired at `r`; let the
//! reclaimer's fence be `Fr` (after the retire: same thread, or ordered by
//! the pending-list mutex, so `U` happens-before `Fr`). The SeqCst fences
//! are totally ordered:
//! * `Fp` before `Fr`: the reclaimer's loads after `Fr` see P's publish (or
//!   a later store to that slot, which only P's unpin makes). If `e <= r`
//!   it keeps `x`. If `e > r`, P's SeqCst load of the global epoch read the
//!   retire's `fetch_add` (or a later one), which synchronises with it, so
//!   `U` happens-before P's reads: P cannot find the link to `x`.
//! * `Fr` before `Fp`: everything that happened before `Fr`, `U` included,
//!   is visible to P's reads after `Fp`, so P cannot find the link to `x`.
//!
//! A pin in the overflow list is published under its mutex, which the
//! reclaimer takes after `Fr`: either the reclaimer's critical section
//! follows P's push (it sees `e`), or it precedes it, and then `Fr`
//! happens-before `Fp` (unlock, lock, push, `Fp`): the second case. Which
//! slot a pin claims plays no part in the argument; the reclaimer reads
//! every slot, held or not (a `FREE` slot reads as "no pin").
//!
//! Lower layers used: `crate::sync` (atomics, mutex), `ids`.

use crate::ids::PageId;
use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering, fence};
use std::cell::Cell;

/// Slots in the table; pins beyond this many at the same moment go to the
/// overflow list.
const SLOT_COUNT: usize = 512;
/// Slot value when no pin holds it.
const FREE: u64 = u64::MAX;
/// `Local::held` when the thread is not pinned.
const HELD_NONE: usize = usize::MAX;
/// `Local::held` when the thread's pin is in the overflow list.
const HELD_OVERFLOW: usize = usize::MAX - 1;
/// `Local::preferred` before the thread first pins.
const PREFERRED_UNSET: usize = usize::MAX;

#[repr(align(64))]
struct Slot {
    /// Epoch of the pin holding the slot, or `FREE`.
    epoch: AtomicU64,
}

struct Registry {
    global: AtomicU64,
    slots: Box<[Slot]>,
    /// Epochs of pins that found every slot held (one entry per pin).
    overflow: Mutex<Vec<u64>>,
    /// Spreads the threads' first preferred slots over the table.
    next_preferred: AtomicUsize,
}

static REGISTRY: std::sync::LazyLock<Registry> = std::sync::LazyLock::new(|| Registry {
    global: AtomicU64::new(1),
    slots: (0..SLOT_COUNT).map(|_| Slot { epoch: AtomicU64::new(FREE) }).collect(),
    overflow: Mutex::new(Vec::new()),
    next_preferred: AtomicUsize::new(0),
});

/// A thread's pinning state. Plain cells with constant initialisers: no
/// destructor, nothing held while the thread is not pinned.
struct Local {
    /// Nesting depth of the thread's pins.
    depth: Cell<usize>,
    /// The slot the outermost pin holds, `HELD_OVERFLOW` or `HELD_NONE`.
    held: Cell<usize>,
    /// The epoch published in the overflow list (when `HELD_OVERFLOW`).
    overflow_epoch: Cell<u64>,
    /// The slot to try first.
    preferred: Cell<usize>,
}

thread_local! {
    static LOCAL: Local = const {
        Local {
            depth: Cell::new(0),
            held: Cell::new(HELD_NONE),
            overflow_epoch: Cell::new(0),
            preferred: Cell::new(PREFERRED_UNSET),
        }
    };
}

/// Proof that the current thread is pinned; unpins on drop. Not `Send`.
pub struct Pin {
    _not_send: std::marker::PhantomData<*const ()>,
}

/// Pins the current thread: no page retired after this call is reused
/// before the returned guard drops. Never waits for another thread.
pub fn pin() -> Pin {
    LOCAL.with(|local| {
        let depth = local.depth.get();
        if depth == 0 {
            publish(local);
        }
        local.depth.set(depth + 1);
    });
    Pin { _not_send: std::marker::PhantomData }
}

/// The outermost pin: claim a slot (or an overflow entry) holding the
/// current epoch, then fence (see the module doc).
fn publish(local: &Local) {
    let registry = &*REGISTRY;
    let epoch = registry.global.load(Ordering::SeqCst);
    let mut start = local.preferred.get();
    if start == PREFERRED_UNSET {
        // Relaxed: only spreads threads, once per thread.
        start = registry.next_preferred.fetch_add(1, Ordering::Relaxed) % SLOT_COUNT;
    }
    let claimed = (0..SLOT_COUNT).map(|step| (start + step) % SLOT_COUNT).find(|&index| {
        let slot = &registry.slots[index].epoch;
        // The Relaxed load skips held slots without writing their cache
        // line. Acquire on success: pairs with the Release that freed the
        // slot, so its previous holder's reads happen-before our pin.
        slot.load(Ordering::Relaxed) == FREE
            && slot.compare_exchange(FREE, epoch, Ordering::Acquire, Ordering::Relaxed).is_ok()
    });
    match claimed {
        Some(index) => {
            local.held.set(index);
            local.preferred.set(index);
        }
        None => {
            registry.overflow.lock().push(epoch);
            local.held.set(HELD_OVERFLOW);
            local.overflow_epoch.set(epoch);
        }
    }
    // SeqCst fence: the publish is ordered before every read of the tree
    // this operation makes (see the module doc).
    fence(Ordering::SeqCst);
}

impl Drop for Pin {
    fn drop(&mut self) {
        LOCAL.with(|local| {
            let depth = local.depth.get() - 1;
            local.depth.set(depth);
            if depth > 0 {
                return;
            }
            let registry = &*REGISTRY;
            match local.held.replace(HELD_NONE) {
                HELD_OVERFLOW => {
                    let epoch = local.overflow_epoch.get();
                    let mut overflow = registry.overflow.lock();
                    let position = overflow.iter().position(|&held| held == epoch);
                    // An entry is removed only by the pin that pushed it.
                    let position = position.expect("overflow pin lost its entry");
                    overflow.swap_remove(position);
                }
                index => {
                    // Release: the operation's reads happen-before a
                    // reclaimer (or the slot's next holder) that sees FREE.
                    registry.slots[index].epoch.store(FREE, Ordering::Release);
                }
            }
        });
    }
}

/// The oldest epoch any pin holds (`u64::MAX` if none).
fn oldest_pinned() -> u64 {
    let registry = &*REGISTRY;
    fence(Ordering::SeqCst);
    let slots = registry.slots.iter().map(|slot| slot.epoch.load(Ordering::SeqCst)).min().unwrap_or(FREE);
    let overflow = registry.overflow.lock().iter().copied().min().unwrap_or(FREE);
    slots.min(overflow)
}
/// Page ids waiting for every thread that might still reach them to unpin.
#[derive(Default)]
pub struct Retired {
    pending: Mutex<Vec<(u64, PageId)>>,
    /// `pending.len()`, readable without the lock: writers check it on
    /// every insert, so an empty list must not cost a shared lock.
    waiting: AtomicUsize,
}

impl Retired {
    /// Records that `pid` was unlinked (the unlink is already visible).
    pub fn retire(&self, pid: PageId) {
        let epoch = REGISTRY.global.fetch_add(1, Ordering::SeqCst);
        let mut pending = self.pending.lock();
        pending.push((epoch, pid));
        // Relaxed: a hint; a reader that misses it reclaims on a later call.
        self.waiting.store(pending.len(), Ordering::Relaxed);
    }

    /// Removes and returns the ids no pinned thread can reach any more.
    pub fn reclaimable(&self) -> Vec<PageId> {
        // Relaxed: see `retire`.
        if self.waiting.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        let mut pending = self.pending.lock();
        let oldest = oldest_pinned();
        let mut ready = Vec::new();
        pending.retain(|&(epoch, pid)| {
            let safe = epoch < oldest;
            if safe {
                ready.push(pid);
            }
            !safe
        });
        self.waiting.store(pending.len(), Ordering::Relaxed);
        ready
    }

    /// The epoch the next `retire` will record: every id retired so far
    /// has a smaller one.
    pub fn horizon(&self) -> u64 {
        REGISTRY.global.load(Ordering::SeqCst)
    }

    /// Whether an id retired before `horizon` is still waiting.
    pub fn waiting_before(&self, horizon: u64) -> bool {
        self.pending.lock().iter().any(|&(epoch, _)| epoch < horizon)
    }

    /// Whether any id is waiting (a hint: no lock taken).
    pub fn is_empty(&self) -> bool {
        // Relaxed: see `retire`.
        self.waiting.load(Ordering::Relaxed) == 0
    }

    /// Every id still waiting (for `verify`'s page accounting).
    pub fn pending(&self) -> Vec<PageId> {
        self.pending.lock().iter().map(|&(_, pid)| pid).collect()
    }

    /// Removes every waiting id regardless of pins: only for a tree being
    /// closed, when no operation can be running.
    pub fn drain_all(&self) -> Vec<PageId> {
        let drained = self.pending.lock().drain(..).map(|(_, pid)| pid).collect();
        self.waiting.store(0, Ordering::Relaxed);
        drained
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    /// More threads than slots, for the tests that hold many pins at once.
    const THREADS: usize = 2000;

    #[test]
    fn a_pinned_thread_holds_back_reclamation() {
        let _serial = serial();
        let retired = Retired::default();
        let (pinned_tx, pinned_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            let _pin = pin();
            pinned_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        });
        pinned_rx.recv().unwrap();
        retired.retire(PageId(5));
        assert!(retired.reclaimable().is_empty(), "reclaimed under a pinned reader");
        release_tx.send(()).unwrap();
        reader.join().unwrap();
        assert_eq!(reclaim_eventually(&retired), vec![PageId(5)]);
    }

    #[test]
    fn pins_taken_after_retire_do_not_block() {
        let _serial = serial();
        let retired = Retired::default();
        retired.retire(PageId(9));
        let _pin = pin();
        let _nested = pin();
        assert_eq!(reclaim_eventually(&retired), vec![PageId(9)]);
    }

    #[test]
    fn a_slot_is_held_per_pin_and_preferred_next_time() {
        let first = {
            let _pin = pin();
            let _nested = pin();
            LOCAL.with(|local| local.held.get())
        };
        assert_ne!(first, HELD_NONE, "a pinned thread holds a slot or an overflow entry");
        LOCAL.with(|local| {
            assert_eq!(local.held.get(), HELD_NONE, "an unpinned thread holds a slot");
            assert_eq!(local.depth.get(), 0);
        });
        if first != HELD_OVERFLOW {
            LOCAL.with(|local| assert_eq!(local.preferred.get(), first, "the slot is tried first next time"));
        }
    }

    /// Issue 6, defect 5: a thread that pinned once kept its slot until it
    /// exited, so the 513th live thread that pinned spun forever. Here
    /// 2,000 threads pin and unpin, then stay alive until all have.
    #[test]
    fn thousands_of_live_threads_that_pinned_once() {
        let _serial = serial();
        let gate = Gate::new();
        let count = std::thread::scope(|scope| {
            for _ in 0..THREADS {
                let gate = &gate;
                spawn_small(scope, move || {
                    drop(pin());
                    gate.arrive_and_wait();
                });
            }
            let count = gate.wait_arrivals(THREADS);
            // With every thread alive a new pin must still succeed.
            drop(pin());
            gate.open();
            count
        });
        assert_eq!(count, THREADS, "threads that pinned once and unpinned still hold slots");
    }

    /// More threads pinned at the same moment than there are slots: none
    /// waits for another to unpin (they wait at a gate while pinned, so
    /// waiting for a slot would deadlock), and all of them hold back
    /// reclamation.
    #[test]
    fn more_threads_pinned_at_once_than_slots() {
        let _serial = serial();
        let retired = Retired::default();
        let gate = Gate::new();
        let count = std::thread::scope(|scope| {
            for _ in 0..THREADS {
                let gate = &gate;
                spawn_small(scope, move || {
                    let _pin = pin();
                    gate.arrive_and_wait();
                });
            }
            let count = gate.wait_arrivals(THREADS);
            retired.retire(PageId(7));
            let early = retired.reclaimable();
            gate.open();
            assert!(early.is_empty(), "reclaimed under {count} pinned threads");
            count
        });
        assert_eq!(count, THREADS, "only {count} of {THREADS} threads could pin at once");
        assert_eq!(reclaim_eventually(&retired), vec![PageId(7)]);
    }

    /// Reclamation waits for the last pinned thread among many, whether its
    /// pin is in a slot or in the overflow list.
    #[test]
    fn reclamation_waits_for_any_one_pinned_thread_among_many() {
        for holdout_in_overflow in [false, true] {
            reclamation_waits_for_holdout(holdout_in_overflow);
        }
    }

    fn reclamation_waits_for_holdout(holdout_in_overflow: bool) {
        let _serial = serial();
        let threads = SLOT_COUNT + 100;
        let retired = Retired::default();
        let in_overflow: Vec<AtomicBool> = (0..threads).map(|_| AtomicBool::new(false)).collect();
        let others = Gate::new();
        let last = Gate::new();
        let holdout = std::thread::scope(|scope| {
            let mut handles = Vec::new();
            for index in 0..threads {
                let (others, last, in_overflow) = (&others, &last, &in_overflow);
                handles.push(spawn_small(scope, move || {
                    let _pin = pin();
                    let held = LOCAL.with(|local| local.held.get());
                    in_overflow[index].store(held == HELD_OVERFLOW, Ordering::SeqCst);
                    // Every thread arrives at `others`; the holdout then
                    // waits at `last`, pinned, after the others left.
                    others.arrive_and_wait();
                    if index == holdout_index(in_overflow, holdout_in_overflow) {
                        last.arrive_and_wait();
                    }
                }));
            }
            let arrived = others.wait_arrivals(threads);
            retired.retire(PageId(11));
            let holdout = holdout_index(&in_overflow, holdout_in_overflow);
            others.open();
            // Every thread but the holdout unpins and exits.
            for (index, handle) in handles.into_iter().enumerate() {
                if index != holdout {
                    handle.join().unwrap();
                }
            }
            let early = retired.reclaimable();
            last.open();
            assert_eq!(arrived, threads, "not every thread could pin");
            let place = if holdout_in_overflow { "overflow list" } else { "slot" };
            assert!(early.is_empty(), "reclaimed under a thread pinned in the {place}");
            holdout
        });
        assert_eq!(in_overflow[holdout].load(Ordering::SeqCst), holdout_in_overflow);
        assert_eq!(reclaim_eventually(&retired), vec![PageId(11)]);
    }

    /// The last thread whose pin is (or is not) in the overflow list. With
    /// more threads than slots pinned at once, both kinds exist.
    fn holdout_index(in_overflow: &[AtomicBool], overflow: bool) -> usize {
        let found = (0..in_overflow.len()).rev().find(|&index| in_overflow[index].load(Ordering::SeqCst) == overflow);
        found.expect("some pins are in slots, some in the overflow list")
    }

    /// Cost of one outermost pin + unpin (the lead's plan pins every write
    /// attempt). Run with `cargo test --release -p crabtree --lib pin_cost
    /// -- --ignored --nocapture`; prints nanoseconds per pair.
    #[test]
    #[ignore]
    fn pin_cost() {
        const PAIRS: u32 = 20_000_000;
        for round in 0..3 {
            let started = std::time::Instant::now();
            for _ in 0..PAIRS {
                drop(std::hint::black_box(pin()));
            }
            let nanos = started.elapsed().as_nanos() as f64 / f64::from(PAIRS);
            eprintln!("pin_cost round {round}: {nanos:.2} ns per pin+unpin");
        }
    }

    /// A thread with a small stack (thousands of them are alive at once).
    fn spawn_small<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        body: impl FnOnce() + Send + 'scope,
    ) -> std::thread::ScopedJoinHandle<'scope, ()> {
        std::thread::Builder::new().stack_size(128 << 10).spawn_scoped(scope, body).unwrap()
    }

    /// Counts arrivals and lets waiters go when opened; every wait ends at
    /// a deadline, so a failing test ends instead of hanging. (Blocking,
    /// not polling: thousands of polling threads starve two cores.)
    struct Gate {
        state: std::sync::Mutex<(usize, bool)>,
        changed: std::sync::Condvar,
        deadline: Instant,
    }

    impl Gate {
        fn new() -> Gate {
            let deadline = Instant::now() + Duration::from_secs(30);
            Gate { state: std::sync::Mutex::new((0, false)), changed: std::sync::Condvar::new(), deadline }
        }

        /// Counts one arrival, then waits until the gate opens.
        fn arrive_and_wait(&self) {
            let mut state = self.state.lock().unwrap();
            state.0 += 1;
            self.changed.notify_all();
            while !state.1 && Instant::now() < self.deadline {
                let left = self.deadline.saturating_duration_since(Instant::now());
                state = self.changed.wait_timeout(state, left).unwrap().0;
            }
        }

        /// Waits until `count` threads arrived (or the deadline); returns
        /// how many did.
        fn wait_arrivals(&self, count: usize) -> usize {
            let mut state = self.state.lock().unwrap();
            while state.0 < count && Instant::now() < self.deadline {
                let left = self.deadline.saturating_duration_since(Instant::now());
                state = self.changed.wait_timeout(state, left).unwrap().0;
            }
            state.0
        }

        fn open(&self) {
            self.state.lock().unwrap().1 = true;
            self.changed.notify_all();
        }
    }

    /// Serialises the tests that hold many pins for a while, so the others
    /// (which wait for reclamation) are not held back by them.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Other tests in this process pin too; wait them out.
    fn reclaim_eventually(retired: &Retired) -> Vec<PageId> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let ready = retired.reclaimable();
            if !ready.is_empty() || std::time::Instant::now() > deadline {
                return ready;
            }
            std::thread::yield_now();
        }
    }
}
