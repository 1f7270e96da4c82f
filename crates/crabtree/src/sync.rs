//! The one place atomics, locks and thread parking come from.
//!
//! Routing them through here keeps the concurrency primitives swappable: the
//! loom models of the hybrid latch (`tests/loom_latch.rs`) and of the log's
//! hand-offs (`tests/loom_wal.rs`) compile the latch and `wal/progress.rs`
//! sources against a loom-backed module with this same surface.

pub use parking_lot::{Condvar, Mutex, RwLock};
pub use std::sync::Arc;
pub use std::sync::atomic::AtomicBool;
pub use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};

/// Parks the calling thread on `key` unless `should_park` (run under the
/// parking bucket's lock) returns false. Returns when unparked; spurious
/// returns are possible, so callers re-check their condition in a loop.
pub fn park(key: &AtomicU64, should_park: impl FnOnce() -> bool) {
    let addr = key as *const AtomicU64 as usize;
    // SAFETY: `park` is unsafe because the callbacks run under a global
    // bucket lock and must not panic or call into parking_lot; ours only load
    // an atomic. The key is an address we own for the duration of the call.
    unsafe {
        parking_lot_core::park(addr, should_park, || {}, |_, _| {}, parking_lot_core::DEFAULT_PARK_TOKEN, None);
    }
}

/// Like [`park`], but returns by `deadline` at the latest.
pub fn park_until(key: &AtomicU64, should_park: impl FnOnce() -> bool, deadline: std::time::Instant) {
    let addr = key as *const AtomicU64 as usize;
    // SAFETY: as in `park`: the callback only loads atomics and cannot
    // panic; the key is an address the caller owns for the call.
    unsafe {
        parking_lot_core::park(
            addr,
            should_park,
            || {},
            |_, _| {},
            parking_lot_core::DEFAULT_PARK_TOKEN,
            Some(deadline),
        );
    }
}

/// Wakes every thread parked on `key`.
pub fn unpark_all(key: &AtomicU64) {
    let addr = key as *const AtomicU64 as usize;
    // SAFETY: unparking by address has no preconditions beyond the key being
    // the same address waiters parked on.
    unsafe {
        parking_lot_core::unpark_all(addr, parking_lot_core::DEFAULT_UNPARK_TOKEN);
    }
}

/// Like [`park`], waiting for `key` to reach `target`: the waiter carries
/// `target` as its token, so [`unpark_up_to`] wakes only the waiters it
/// satisfies. Returns whether the thread parked (false: `should_park`
/// said no).
pub fn park_waiting_for(key: &AtomicU64, target: u64, should_park: impl FnOnce() -> bool) -> bool {
    let addr = key as *const AtomicU64 as usize;
    // A target beyond `usize` (32-bit targets only) saturates: such a
    // waiter is woken by every call once the value passes `usize::MAX`,
    // spuriously until its own target, which the caller re-checks.
    let token = parking_lot_core::ParkToken(usize::try_from(target).unwrap_or(usize::MAX));
    // SAFETY: as in `park`: the callback only loads atomics and cannot
    // panic; the key is an address the caller owns for the call.
    let result = unsafe { parking_lot_core::park(addr, should_park, || {}, |_, _| {}, token, None) };
    result != parking_lot_core::ParkResult::Invalid
}

/// Wakes the threads parked on `key` by [`park_waiting_for`] whose target
/// is at most `value`; the others stay parked.
pub fn unpark_up_to(key: &AtomicU64, value: u64) {
    let addr = key as *const AtomicU64 as usize;
    let value = usize::try_from(value).unwrap_or(usize::MAX);
    let filter = |token: parking_lot_core::ParkToken| {
        if token.0 <= value { parking_lot_core::FilterOp::Unpark } else { parking_lot_core::FilterOp::Skip }
    };
    // SAFETY: the filter and callback run under the bucket lock; they only
    // compare integers and return, and cannot panic. The key is the
    // address waiters parked on.
    unsafe {
        parking_lot_core::unpark_filter(addr, filter, |_| parking_lot_core::DEFAULT_UNPARK_TOKEN);
    }
}

/// Lets the scheduler run another thread (a leader that made no progress
/// lets the appender it waits for finish its copy).
pub fn yield_now() {
    std::thread::yield_now();
}

/// A hint that the caller is spinning.
pub fn spin_hint() {
    std::hint::spin_loop();
}

/// Asks the CPU to bring the cache line holding `word` towards its L1
/// cache. A hint only: no effect on what any thread reads or writes.
#[inline(always)]
pub fn prefetch(word: &AtomicU64) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: `prefetch` only hints the cache: it reads and writes no
        // memory visible to the program and cannot fault, and the address
        // is that of a live reference. The intrinsic is unsafe only for its
        // `sse` target feature, which every x86-64 CPU has.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((word as *const AtomicU64).cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = word;
}
