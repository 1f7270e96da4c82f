//! Epoch-based reclamation of page ids.
//!
//! A page unlinked from the tree (a deleted leaf, a replaced overflow chain)
//! may still be reached by a thread that read a link to it before the unlink
//! and follows it across an unlatched, unvalidated gap: a reader on the
//! shared-latch path between two latches, or a leaf deletion walking to a
//! left-link hint. Such an operation runs *pinned*: it publishes the global
//! epoch it started in, in a per-thread slot. `retire(pid)` records the epoch
//! `r` of the unlink and advances the global epoch; the id is handed back to
//! the allocator once no pinned slot holds an epoch `<= r`.
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
//! Invariants:
//! * a slot is owned by at most one thread at a time (claimed by CAS);
//! * pin: store the epoch into the slot, then a SeqCst fence, then read the
//!   tree. retire: unlink, then SeqCst `fetch_add` on the global epoch.
//!   A reclaimer that finds a slot empty or `> r` therefore knows that
//!   thread's reads start after the unlink and cannot find the page;
//! * pins nest (a per-thread depth counter): only the outermost pin
//!   publishes and clears.
//!
//! Slots are per thread and padded to a cache line, so pinning writes no
//! shared cache line: readers stay write-free on shared memory.

use crate::ids::PageId;
use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering, fence};
use std::cell::Cell;

/// Threads that can be pinned at once; more wait for a free slot.
const SLOT_COUNT: usize = 512;
/// Slot value of a thread that is not pinned.
const UNPINNED: u64 = u64::MAX;

#[repr(align(64))]
struct Slot {
    /// Epoch the owner pinned at, or `UNPINNED`.
    epoch: AtomicU64,
    /// 1 while a thread owns the slot.
    owned: AtomicUsize,
}

struct Registry {
    global: AtomicU64,
    slots: Box<[Slot]>,
}

static REGISTRY: std::sync::LazyLock<Registry> = std::sync::LazyLock::new(|| Registry {
    global: AtomicU64::new(1),
    slots: (0..SLOT_COUNT).map(|_| Slot { epoch: AtomicU64::new(UNPINNED), owned: AtomicUsize::new(0) }).collect(),
});

/// A thread's claim on a slot, released when the thread exits.
struct ThreadSlot {
    index: usize,
    depth: Cell<usize>,
}

impl ThreadSlot {
    fn claim() -> ThreadSlot {
        let registry = &*REGISTRY;
        loop {
            for (index, slot) in registry.slots.iter().enumerate() {
                // Acquire: pairs with the Release in Drop so the previous
                // owner's last use happens-before ours.
                if slot.owned.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    return ThreadSlot { index, depth: Cell::new(0) };
                }
            }
            std::thread::yield_now();
        }
    }
}

impl Drop for ThreadSlot {
    fn drop(&mut self) {
        let slot = &REGISTRY.slots[self.index];
        slot.epoch.store(UNPINNED, Ordering::SeqCst);
        slot.owned.store(0, Ordering::Release);
    }
}

thread_local! {
    static THREAD_SLOT: ThreadSlot = ThreadSlot::claim();
}

/// Proof that the current thread is pinned; unpins on drop. Not `Send`.
pub struct Pin {
    _not_send: std::marker::PhantomData<*const ()>,
}

/// Pins the current thread: no page retired after this call is reused
/// before the returned guard drops.
pub fn pin() -> Pin {
    THREAD_SLOT.with(|thread| {
        let depth = thread.depth.get();
        if depth == 0 {
            let registry = &*REGISTRY;
            let epoch = registry.global.load(Ordering::SeqCst);
            registry.slots[thread.index].epoch.store(epoch, Ordering::Relaxed);
            // SeqCst fence: the slot store is ordered before every read of
            // the tree this operation makes (see module doc).
            fence(Ordering::SeqCst);
        }
        thread.depth.set(depth + 1);
    });
    Pin { _not_send: std::marker::PhantomData }
}

impl Drop for Pin {
    fn drop(&mut self) {
        THREAD_SLOT.with(|thread| {
            let depth = thread.depth.get() - 1;
            thread.depth.set(depth);
            if depth == 0 {
                // Release: the operation's reads happen-before a reclaimer
                // that sees the slot empty.
                REGISTRY.slots[thread.index].epoch.store(UNPINNED, Ordering::Release);
            }
        });
    }
}

/// The oldest epoch any pinned thread holds (`u64::MAX` if none).
fn oldest_pinned() -> u64 {
    fence(Ordering::SeqCst);
    REGISTRY.slots.iter().map(|slot| slot.epoch.load(Ordering::SeqCst)).min().unwrap_or(UNPINNED)
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

    #[test]
    fn a_pinned_thread_holds_back_reclamation() {
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
        let retired = Retired::default();
        retired.retire(PageId(9));
        let _pin = pin();
        let _nested = pin();
        assert_eq!(reclaim_eventually(&retired), vec![PageId(9)]);
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
