//! Grace periods for frames: when the kernel may read a page straight into
//! a frame that held an evicted page.
//!
//! A load is cheapest when `pread` writes the page into its frame. But the
//! frame an eviction freed may still be read by an optimistic reader of the
//! page it held: the reader found the frame before the eviction and learns
//! of it only when it validates. Such a reader's loads are atomic, and so
//! are the pool's own stores into a frame, so copying a page in through
//! atomic stores (what a load does otherwise) is no data race. The kernel's
//! write is not atomic: it may only go into a frame that no reader can
//! still be reading. This module decides which frames those are.
//!
//! # Read sections
//! Every [`OptimisticGuard`](super::OptimisticGuard) lives inside a *read
//! section* of its thread (the guard holds a [`Section`]; guards are not
//! `Send`, so a section begins and ends on one thread), and so does the
//! cleaner's one read of a frame without a latch (`cleaner.rs`: a page's
//! LSN, read after seeing the page resident). A thread that ever
//! takes a section owns a *slot*: one counter on its own cache line,
//! written only by that thread, odd while the thread is inside a section.
//! The outermost entry stores the next odd value and executes a compiler
//! fence; the outermost exit stores the next even value. Both stores are
//! Release. No read-modify-write and no CPU fence: a hit pays two plain
//! stores to a line no other thread writes, and nested guards (lock
//! coupling holds two) pay a thread-local counter.
//!
//! # Grace periods
//! * An eviction batch, after its unmapping stores (each victim's state
//!   word becomes EVICTED), executes a SeqCst fence and reads `GEN`: the
//!   freed frames carry that value as their *tag*.
//! * An *advance* (tried by a loader that got a frame whose tag is not safe
//!   yet; one at a time, try-lock) takes `g = GEN.fetch_add(1)`, calls
//!   `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` and a SeqCst fence, and
//!   reads every slot, keeping the odd ones with their values. Later tries
//!   re-read those; once each has changed, `SAFE` becomes `g + 1`.
//! * A frame whose tag is below `SAFE` is *safe*: `pread` may write it.
//!   Other frames are filled by an atomic copy, as before.
//!
//! # Why no reader can read a safe frame that the kernel writes
//! `membarrier` makes every running thread of the process execute a full
//! memory barrier (a thread that is not running passes one when it is
//! switched out), so each reader's compiler fence `Fr` acts as a SeqCst
//! fence, ordered in the single total order `S` of SeqCst fences against
//! the advance's fence `Fa` (the asymmetric-fence pattern of liburcu and
//! folly). Take a reader whose section began with `Fr`, a frame `F` freed
//! by an eviction that unmapped page `p` (store `U`, then fence `Fe`, then
//! the tag read), tagged `t <= g`:
//! * `Fr` before `Fa` in `S`: the section's odd store precedes `Fr`, so the
//!   advance's slot read after `Fa` sees it or a later value; the advance
//!   waits until the value changes, and the exit store (Release) that
//!   changed it carries the section's reads of `F` before `SAFE = g + 1`
//!   (Release), which the loader reads (Acquire) before its `pread`.
//! * `Fa` before `Fr`: the tag read returned a value older than the
//!   advance's `fetch_add` of `GEN`, so `Fe` precedes `Fa` in `S` (C++20
//!   [atomics.order] p4.4). If the reader had read `p`'s state word before
//!   `U`, then `Fr` would precede `Fe` by the same rule, and so `Fa`: a
//!   contradiction. So every state-word load of the section sees `p`
//!   evicted (or loaded again, into another frame); the reader reaches `F`
//!   only through the page loaded into it, once that page's state word
//!   shows it resident: after its loader's Release unlock, which follows
//!   the `pread`, so the reads come after the kernel's writes.
//!
//! # Heavy sections
//! `membarrier` interrupts every core running a thread of the process, on
//! a virtual machine a VM exit each: with one reader and the cleaner busy
//! on the other core, 9.5% of an inserting thread's time (stop 19). It
//! only serves threads whose section entry is a compiler fence. A thread
//! that called [`make_heavy`] (the cleaner) executes a SeqCst fence
//! instead, so its `Fr` is in `S` by itself. An advance therefore calls
//! `membarrier` only if the registry lists a live thread that is neither
//! heavy nor the advancing thread (whose own sections are ordered with its
//! advance by program order, and are waited for like any other). A light
//! thread that registers after the advance read the registry executes a
//! SeqCst fence `Fg` at registration, before its first section: the
//! advance's `fetch_add` of `GEN` happens before `Fg` (registry mutex), so
//! `Fe` precedes `Fg` in `S`, and the thread's state-word loads see `p`
//! evicted, as in the second case above. Every later advance counts it.
//!
//! A thread registering a slot during an advance is ordered by the
//! registry mutex: either the advance reads the new slot, or its `Fa`
//! happens before the thread's first `Fr`. (Test: a thread registers and
//! opens a section while an advance is held where it begins, failpoint
//! `grace.advance_begun`; the advance waits for it. It fails if the
//! advance reads the registry before it takes its generation.) A slot whose thread exited is
//! returned even (idle) and handed to the next new thread.
//!
//! Without `membarrier` (kernels before 4.14, seccomp filters) or with
//! `CRABTREE_POOL_DIRECT_READ=0`, sections do nothing and every load
//! copies: nothing is unsafe, only slower.
//!
//! Invariants: a slot is written only by its thread (and by the registry
//! when the thread exits); a frame is written by `pread` only if its tag
//! is below `SAFE` and the writer holds the exclusive latch of the page it
//! loads; `SAFE` only grows, and becomes `g + 1` only after every slot that
//! was odd after the advance's fence has changed.
//!
//! Lower layers used: `sync`; `rustix` for `membarrier`.

use crate::sync::{AtomicU64, Mutex, Ordering, fence};
use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::OnceLock;
use std::sync::atomic::compiler_fence;

/// One thread's section counter, on its own cache line.
#[repr(align(128))]
struct Slot(AtomicU64);

/// Every slot ever made (they are never freed: at most one per thread
/// alive at once), those whose threads exited, and those of live *heavy*
/// threads (whose sections begin with a CPU fence, [`make_heavy`]).
struct Registry {
    all: Vec<&'static Slot>,
    free: Vec<&'static Slot>,
    heavy: Vec<&'static Slot>,
}

impl Registry {
    /// Whether a live thread other than the one owning `own` enters its
    /// sections with only a compiler fence: only then does an advance need
    /// `membarrier` (module doc, "Heavy sections").
    fn light_other_than(&self, own: Option<&'static Slot>) -> bool {
        // `free` and `heavy` are disjoint parts of `all`, each slot listed
        // once, so the live light slots are counted without a scan of `all`
        // against them (quadratic once thousands of threads came and went).
        // The caller's own slot is live (a thread's exit takes it).
        let light = self.all.len().saturating_sub(self.free.len() + self.heavy.len());
        let own_light = own.is_some_and(|own| !self.heavy.iter().any(|&heavy| std::ptr::eq(heavy, own)));
        light > usize::from(own_light)
    }
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { all: Vec::new(), free: Vec::new(), heavy: Vec::new() });

/// Bumped by each advance; read into the tags of freed frames.
static GEN: AtomicU64 = AtomicU64::new(1);
/// Frames tagged below this are safe to fill with `pread`.
static SAFE: AtomicU64 = AtomicU64::new(1);
/// The advance in progress: its generation and the slots it waits for.
static PENDING: Mutex<Option<Pending>> = Mutex::new(None);

struct Pending {
    generation: u64,
    waiting: Vec<(&'static Slot, u64)>,
}

/// A thread's view of its slot. No destructor, so it can be reached at any
/// time, also while other thread-locals are being destroyed.
struct Local {
    slot: Cell<Option<&'static Slot>>,
    depth: Cell<u32>,
    seq: Cell<u64>,
    /// Sections begin with a SeqCst fence ([`make_heavy`]).
    heavy: Cell<bool>,
}

thread_local! {
    static LOCAL: Local =
        const { Local { slot: Cell::new(None), depth: Cell::new(0), seq: Cell::new(0), heavy: Cell::new(false) } };
    /// Returns the slot when the thread exits.
    static OWNER: Owner = const { Owner };
}

struct Owner;

impl Drop for Owner {
    fn drop(&mut self) {
        LOCAL.with(|local| {
            let Some(slot) = local.slot.take() else { return };
            // A section left open by a forgotten guard ends with the thread.
            let idle = (local.seq.get() | 1) + 1;
            local.depth.set(0);
            // Release: as a section exit.
            slot.0.store(idle, Ordering::Release);
            let mut registry = REGISTRY.lock();
            registry.heavy.retain(|&heavy| !std::ptr::eq(heavy, slot));
            registry.free.push(slot);
            local.heavy.set(false);
        });
    }
}

/// Whether loads may `pread` into safe frames: `membarrier` private
/// expedited registered, and not turned off by
/// `CRABTREE_POOL_DIRECT_READ=0`. Decided once, before the first section.
#[inline]
pub(super) fn active() -> bool {
    static ACTIVE: OnceLock<bool> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        let wanted = std::env::var("CRABTREE_POOL_DIRECT_READ").map_or(true, |value| value != "0");
        wanted && rustix::thread::membarrier(rustix::thread::MembarrierCommand::RegisterPrivateExpedited).is_ok()
    })
}

/// A read section, held by an optimistic guard; ends on drop. Not `Send`.
pub(crate) struct Section {
    tracked: bool,
    _thread_bound: PhantomData<*const ()>,
}

/// Enters a read section (nested: only the outermost one is published).
#[inline]
pub(super) fn enter() -> Section {
    if !active() {
        return Section { tracked: false, _thread_bound: PhantomData };
    }
    LOCAL.with(|local| {
        let depth = local.depth.get();
        if depth == 0 {
            let slot = match local.slot.get() {
                Some(slot) => slot,
                None => register(local),
            };
            let seq = local.seq.get() + 1;
            local.seq.set(seq);
            // Release: orders the previous section's reads before this
            // store too, so an advance that reads it (not the exit before
            // it) still sees them done. The compiler fence keeps the
            // section's loads after the store; `membarrier` in an advance
            // makes it a CPU fence (module doc).
            slot.0.store(seq, Ordering::Release);
            if local.heavy.get() {
                // A heavy thread's `Fr` is a CPU fence itself.
                fence(Ordering::SeqCst);
            } else {
                compiler_fence(Ordering::SeqCst);
            }
        }
        local.depth.set(depth + 1);
    });
    Section { tracked: true, _thread_bound: PhantomData }
}

impl Drop for Section {
    #[inline]
    fn drop(&mut self) {
        if !self.tracked {
            return;
        }
        LOCAL.with(|local| {
            let depth = local.depth.get() - 1;
            local.depth.set(depth);
            if depth == 0
                && let Some(slot) = local.slot.get()
            {
                let seq = local.seq.get() + 1;
                local.seq.set(seq);
                // Release: the section's reads happen before an advance
                // that reads this value.
                slot.0.store(seq, Ordering::Release);
            }
        });
    }
}

/// Gives this thread a slot (a returned one if any) and arranges for its
/// return when the thread exits.
#[cold]
fn register(local: &Local) -> &'static Slot {
    let slot = {
        let mut registry = REGISTRY.lock();
        match registry.free.pop() {
            Some(slot) => slot,
            None => {
                let slot: &'static Slot = Box::leak(Box::new(Slot(AtomicU64::new(0))));
                registry.all.push(slot);
                slot
            }
        }
    };
    // Relaxed: only this thread writes the slot from now on; the value is
    // even (idle), the last store of its previous owner or the registry.
    local.seq.set(slot.0.load(Ordering::Relaxed));
    local.slot.set(Some(slot));
    // During thread-local destruction the owner may be gone: then the slot
    // is never returned (one slot leaked, still read as idle or busy).
    let _ = OWNER.try_with(|_| ());
    // `Fg` (module doc, "Heavy sections"): an advance that found no light
    // thread besides its own and skipped `membarrier` may have read the
    // registry before this thread joined it.
    fence(Ordering::SeqCst);
    slot
}

/// Makes this thread's read sections *heavy*: each begins with a SeqCst
/// fence instead of a compiler fence, so an advance need not interrupt
/// this thread with `membarrier`. For a background thread that enters
/// sections rarely (the cleaner); call it before the thread's first
/// section.
pub(super) fn make_heavy() {
    if !active() {
        return;
    }
    LOCAL.with(|local| {
        // Inside a section its entry was light: the thread stays light.
        if local.depth.get() != 0 || local.heavy.get() {
            return;
        }
        let slot = match local.slot.get() {
            Some(slot) => slot,
            None => register(local),
        };
        local.heavy.set(true);
        REGISTRY.lock().heavy.push(slot);
    });
}

/// The tag for frames freed by an eviction whose unmapping stores (state
/// words made EVICTED) precede this call in the calling thread.
pub(super) fn retire_tag() -> u64 {
    // SeqCst fence: `Fe` of the module doc.
    fence(Ordering::SeqCst);
    // Relaxed: ordered by the fence above (module doc).
    GEN.load(Ordering::Relaxed)
}

/// Whether a frame tagged `tag` may be filled by `pread`.
#[inline]
pub(super) fn is_safe(tag: u64) -> bool {
    // Acquire: pairs with the Release that raised `SAFE`, after the
    // sections that could read the frame ended.
    active() && tag < SAFE.load(Ordering::Acquire)
}

/// Starts an advance, or finishes the one in progress if the sections it
/// waits for have ended. Never waits: another thread advancing, or a
/// section still open, is left for a later call. Entry: no latch is
/// needed or harmful (sections never wait for an advance).
pub(super) fn try_advance() {
    if !active() {
        return;
    }
    let Some(mut pending) = PENDING.try_lock() else { return };
    if pending.is_none() {
        // Tests register a thread and open its section here, before the
        // advance begins (`grace.advance_begun`).
        failpoint!("grace.advance_begun", ignore);
        // SeqCst: the fetch_add is ordered before `Fa` (module doc).
        let generation = GEN.fetch_add(1, Ordering::SeqCst);
        // Only threads whose sections begin with a compiler fence need the
        // interrupt, and this thread's own sections are ordered by program
        // order ("Heavy sections").
        let own = LOCAL.try_with(|local| local.slot.get()).ok().flatten();
        let interrupt = REGISTRY.lock().light_other_than(own);
        // Tests make the call fail here (`grace.membarrier`).
        #[cfg(feature = "failpoints")]
        let injected = crate::failpoint::hit("grace.membarrier").is_err();
        #[cfg(not(feature = "failpoints"))]
        let injected = false;
        if injected
            || (interrupt && rustix::thread::membarrier(rustix::thread::MembarrierCommand::PrivateExpedited).is_err())
        {
            // Registered, so this should not fail; if it does, no frame
            // becomes safe (loads keep copying).
            return;
        }
        fence(Ordering::SeqCst);
        let registry = REGISTRY.lock();
        let waiting = registry
            .all
            .iter()
            .filter_map(|slot| {
                // Acquire: see the exit stores' comment.
                let value = slot.0.load(Ordering::Acquire);
                (value & 1 == 1).then_some((*slot, value))
            })
            .collect();
        *pending = Some(Pending { generation, waiting });
    }
    if let Some(advance) = pending.as_mut() {
        // Acquire: pairs with the Release of the store that changed it.
        advance.waiting.retain(|(slot, seen)| slot.0.load(Ordering::Acquire) == *seen);
        if advance.waiting.is_empty() {
            // Release: pairs with `is_safe`.
            SAFE.fetch_max(advance.generation + 1, Ordering::Release);
            *pending = None;
        }
    }
}

/// The generation frames freed now are tagged with (or a later one).
#[cfg(test)]
pub(super) fn current_generation() -> u64 {
    GEN.load(Ordering::SeqCst)
}

/// Runs advances until a frame tagged `tag` is safe or `timeout` passes
/// (tests: sections of other threads must end for it to return true).
#[cfg(test)]
pub(super) fn wait_safe(tag: u64, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if is_safe(tag) {
            return true;
        }
        try_advance();
        std::thread::yield_now();
    }
    is_safe(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> &'static Slot {
        Box::leak(Box::new(Slot(AtomicU64::new(0))))
    }

    /// An advance interrupts other threads only for a live light one: not
    /// for its own slot, a heavy thread's, or an exited thread's. (Fails if
    /// the decision ignores the heavy list or the caller's own slot, and
    /// so never skips the call; or if it skips it beside a light thread.)
    #[test]
    fn an_advance_interrupts_only_for_a_live_light_thread_besides_its_own() {
        let (own, heavy, exited, light) = (slot(), slot(), slot(), slot());
        let mut registry = Registry { all: vec![own, heavy, exited], free: vec![exited], heavy: vec![heavy] };
        assert!(!registry.light_other_than(Some(own)));
        assert!(registry.light_other_than(None), "the advancing thread has no slot: `own` is another's");
        registry.all.push(light);
        assert!(registry.light_other_than(Some(own)));
        registry.free.push(light);
        assert!(!registry.light_other_than(Some(own)), "its thread exited");
    }

    /// `make_heavy` inside a section leaves the thread light: the open
    /// section was entered with a compiler fence only, so an advance that
    /// skipped `membarrier` for it could miss it. Outside one it works.
    /// (Fails if `make_heavy` ignores the open section.)
    #[test]
    fn make_heavy_inside_a_section_leaves_the_thread_light() {
        if !active() {
            return;
        }
        std::thread::spawn(|| {
            let section = enter();
            make_heavy();
            let slot = LOCAL.with(|local| local.slot.get()).expect("a slot");
            let listed = || REGISTRY.lock().heavy.iter().any(|&heavy| std::ptr::eq(heavy, slot));
            assert!(!LOCAL.with(|local| local.heavy.get()) && !listed(), "made heavy inside a section");
            drop(section);
            make_heavy();
            assert!(LOCAL.with(|local| local.heavy.get()) && listed());
        })
        .join()
        .unwrap();
    }

    /// A heavy thread's open section holds an advance back like a light
    /// one's: the fence changes how its entry is ordered, not whether it is
    /// waited for. (Fails if a heavy entry skips the slot's odd store.)
    #[test]
    fn a_heavy_threads_open_section_holds_the_advance_back() {
        if !active() {
            return;
        }
        let (entered, release) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let (entered_tx, entered_rx) = entered;
        let (release_tx, release_rx) = release;
        let heavy = std::thread::spawn(move || {
            make_heavy();
            let section = enter();
            entered_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            drop(section);
        });
        entered_rx.recv().unwrap();
        let horizon = current_generation();
        assert!(!wait_safe(horizon, std::time::Duration::from_millis(50)), "safe while the heavy section is open");
        release_tx.send(()).unwrap();
        heavy.join().unwrap();
        assert!(wait_safe(horizon, std::time::Duration::from_secs(20)), "other sections of this process ended");
        let registry = REGISTRY.lock();
        assert!(registry.heavy.iter().all(|&slot| registry.free.iter().all(|&free| !std::ptr::eq(free, slot))));
    }
}
