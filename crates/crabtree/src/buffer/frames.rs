//! The frame array: the pool's page memory, a fixed number of page-sized
//! frames that are faulted in once and then recycled, never returned to
//! the kernel.
//!
//! Why not vmcache's layout (page `pid` at `base + pid * stride`, evicted
//! with `madvise`): returning a page's memory and faulting it back costs a
//! TLB flush per release call and a zero-filling page fault per load,
//! together more than the `pread` a miss needs (measured:
//! `docs/BENCHMARKS.md`, "pool_oom"). A frame that stays mapped costs
//! neither: a miss takes a free frame, reads the page into it, and an
//! eviction puts the frame back on a free list, with no system call and no
//! change to the process's page tables.
//!
//! Each free frame carries the grace tag of the eviction that freed it
//! (`grace.rs`): the loader that takes it lets `pread` write it only once
//! the tag is safe, and copies the page in with atomic stores before.
//!
//! Commit charge: the array is a [`Region`] reserved for `capacity`
//! frames and committed (`mprotect`, charged against the kernel's commit
//! limit) only ahead of `fresh`: a fresh frame's memory is committed before
//! `fresh` moves past it, and frame 0 at creation (the value of a page-table
//! word never written). So every frame index the pool can hold, from
//! `take` or a page-table word, names committed memory, and the array's
//! charge follows the frames touched (with growth's slack,
//! `REGION_GRAIN_FRAMES`), not `capacity` (the module doc of `region.rs`).
//!
//! Which frame holds a page is in the page table, the word next to the
//! page's state word (`pool.rs`); this module only hands frames out and
//! takes them back.
//!
//! Free frames are kept in `FRAME_FREE_SHARDS` mutex-protected stacks.
//! Each thread has a home shard (assigned round-robin on first use): an
//! evictor pushes its batch onto its home shard and a loader pops from its
//! home shard first, so the reader that evicted a batch finds its frames
//! with one uncontended lock; a shard that is empty sends it round the
//! others (try-lock, then lock). Frames never handed out yet come from a
//! bump counter (`fresh`), used only when no frame is free, so the frames
//! ever touched (the RSS of the array) stay at the most frames in use at
//! once: the budget plus the soft overshoot of `evict.rs`.
//!
//! Pools of at least `POOL_HUGE_PAGES_MIN_BYTES` ask for transparent huge
//! pages on the array (`MADV_HUGEPAGE`): frames are touched once and kept,
//! so the 2 MiB pages are never split by a release, and a hit misses the
//! TLB far less often.
//!
//! Invariants: frames `0..max(fresh, 1)` are committed, each commit
//! before its index is handed out; a frame is either free (on exactly one
//! stack, or past `fresh`) or held by exactly one resident page (named by
//! that page's page-table word), except while the exclusive holder that
//! moves it is between the two; each shard's `len` is the length of its
//! stack (stored under the stack's mutex after each push and pop; read
//! without it only as a hint); no thread holds two shard mutexes.
//!
//! No counter is shared by all loaders: a single free-frame count written
//! on every load and eviction was a cache line both cores wrote each time
//! (a statistics counter like it cost 2.8% of larger-than-memory gets with
//! two threads). A loader reads its home shard's length, a line only its
//! own evictions write, and sums the shards only when that is zero.
//!
//! Lower layers used: `sync`; the memory is a [`Region`] (the `unsafe`
//! lives there).

use super::region::Region;
use crate::ids::FrameIndex;
use crate::limits::{FRAME_FREE_SHARDS, POOL_HUGE_PAGES_MIN_BYTES, REGION_GRAIN_FRAMES};
use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering};
use crate::{Error, Result};

/// The frame array and its free lists.
pub(super) struct Frames {
    region: Region,
    /// Words from one frame to the next.
    stride_words: usize,
    /// Words of a page (the part of a frame handed out).
    page_words: usize,
    /// Frames in the array (most of them never committed nor touched).
    capacity: usize,
    free: Box<[FreeShard]>,
    /// Frames `0..fresh` have been handed out at least once.
    fresh: AtomicUsize,
}

/// One stack of free frames with their grace tags (`grace.rs`), on its own
/// cache lines.
#[repr(align(128))]
#[derive(Default)]
struct FreeShard {
    stack: Mutex<Vec<(FrameIndex, u64)>>,
    /// The stack's length (a hint: lets a loader skip the round of the
    /// shards when nothing is free).
    len: AtomicUsize,
}

/// Where a thread's home shard counter starts.
static NEXT_HOME: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's home free-list shard.
    static HOME: usize = NEXT_HOME.fetch_add(1, Ordering::Relaxed) % FRAME_FREE_SHARDS;
}

/// Whether the frame array may ask for transparent huge pages:
/// `CRABTREE_POOL_HUGE_PAGES=0` turns it off (for measurements).
fn huge_pages_allowed() -> bool {
    std::env::var("CRABTREE_POOL_HUGE_PAGES").map_or(true, |value| value != "0")
}

/// This thread's home shard (also the stripe of its statistics).
pub(super) fn home_shard() -> usize {
    HOME.with(|home| *home)
}

impl Frames {
    /// Reserves `capacity` frames of `stride` bytes each (multiples of 8),
    /// of which `page_size` bytes are handed out. Commits the first (one
    /// grain's worth); nothing is touched yet. `budget_bytes` decides
    /// whether to ask for transparent huge pages (see
    /// `POOL_HUGE_PAGES_MIN_BYTES`). Errors: `Io` when the kernel refuses
    /// the reservation or the commit.
    pub(super) fn new(capacity: usize, stride: usize, page_size: usize, budget_bytes: usize) -> Result<Frames> {
        if capacity == 0 || capacity > u32::MAX as usize || page_size > stride {
            return Err(Error::InvalidArgument(format!("{capacity} frames of {stride} bytes")));
        }
        let Some(len) = capacity.checked_mul(stride) else {
            return Err(Error::InvalidArgument(format!("{capacity} frames x {stride} bytes overflows")));
        };
        let region = Region::new(len, REGION_GRAIN_FRAMES)?;
        if budget_bytes >= POOL_HUGE_PAGES_MIN_BYTES && huge_pages_allowed() {
            region.advise_huge_pages();
        }
        // Frame 0: what a page-table word holds before its first store.
        region.commit(stride / 8)?;
        Ok(Frames {
            region,
            stride_words: stride / 8,
            page_words: page_size / 8,
            capacity,
            free: (0..FRAME_FREE_SHARDS).map(|_| FreeShard::default()).collect(),
            fresh: AtomicUsize::new(0),
        })
    }

    /// The page words of frame `index`. Panics past the committed frames
    /// (a programmer error: indices come from `take` or from a page-table
    /// word that only ever holds such indices, or 0, all committed before
    /// they were handed out).
    #[inline]
    pub(super) fn frame(&self, index: FrameIndex) -> &[AtomicU64] {
        self.region.words(index.0 as usize * self.stride_words, self.page_words)
    }

    /// The bytes of frame `index`, for `pread` to fill.
    ///
    /// # Safety
    /// While the returned slice lives, nothing else may read or write the
    /// frame: the caller took it from [`Frames::take`], holds the exclusive
    /// latch of the page it will give it to, and its tag is safe
    /// (`grace::is_safe`), so no optimistic reader of its previous page is
    /// still inside the section that found it.
    #[allow(clippy::mut_from_ref)] // exclusivity is the caller's contract
    pub(super) unsafe fn frame_bytes_mut(&self, index: FrameIndex) -> &mut [u8] {
        // SAFETY: the caller's contract above is the region's.
        unsafe { self.region.bytes_mut(index.0 as usize * self.stride_words, self.page_words) }
    }

    /// A free frame for the caller to fill and its grace tag, or `None`
    /// when every frame of the array is in use. Prefers recycled frames;
    /// touches a new one only when none is free (tag 0: no reader ever
    /// reached it), committing its memory first. Entry: no shard mutex
    /// held. Exit: the frame is the caller's (its contents are some old
    /// page's, or zeros). Errors: `Io` when a new frame is needed and the
    /// kernel refuses to commit its memory (the commit limit).
    pub(super) fn take(&self) -> Result<Option<(FrameIndex, u64)>> {
        if self.any_free()
            && let Some(index) = self.pop_free()
        {
            return Ok(Some(index));
        }
        // Relaxed: the counter only hands out distinct indices; the frame's
        // memory is ordered by the latch of the page that fills it, and its
        // commit by `commit` (Acquire, or this thread's own mprotect).
        let mut fresh = self.fresh.load(Ordering::Relaxed);
        while fresh < self.capacity {
            // Before the index is handed out (to us or, once `fresh` moved
            // past it, to anyone): its memory must be committed.
            self.region.commit((fresh + 1) * self.stride_words)?;
            match self.fresh.compare_exchange_weak(fresh, fresh + 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(Some((FrameIndex(fresh as u32), 0))),
                Err(now) => fresh = now,
            }
        }
        // Every frame touched: look again whatever the hint said.
        Ok(self.pop_free())
    }

    /// Whether a free stack holds a frame: the home shard's length, else
    /// the sum of all (a hint; a frame pushed concurrently may be missed,
    /// which costs one fresh frame, not correctness).
    fn any_free(&self) -> bool {
        // Relaxed: hints, see above.
        self.free[home_shard()].len.load(Ordering::Relaxed) > 0
            || self.free.iter().any(|shard| shard.len.load(Ordering::Relaxed) > 0)
    }

    /// A frame from the free stacks, home shard first (try-lock round,
    /// then lock round).
    fn pop_free(&self) -> Option<(FrameIndex, u64)> {
        let home = home_shard();
        for pass in 0..2 {
            for step in 0..FRAME_FREE_SHARDS {
                let shard = &self.free[(home + step) % FRAME_FREE_SHARDS];
                let stack = if pass == 0 { shard.stack.try_lock() } else { Some(shard.stack.lock()) };
                let Some(mut stack) = stack else { continue };
                if let Some(index) = stack.pop() {
                    // Relaxed: a hint (see `any_free`), stored under the
                    // stack's mutex.
                    shard.len.store(stack.len(), Ordering::Relaxed);
                    return Some(index);
                }
            }
        }
        None
    }

    /// Puts frames back on this thread's free list with grace tag `tag`.
    /// Entry: the caller owns every frame (they belonged to pages it
    /// evicted, or it took them and did not use them), no shard mutex.
    /// Exit: the frames are free.
    pub(super) fn put(&self, frames: &[FrameIndex], tag: u64) {
        if frames.is_empty() {
            return;
        }
        debug_assert!(frames.iter().all(|index| (index.0 as usize) < self.capacity));
        let shard = &self.free[home_shard()];
        let mut stack = shard.stack.lock();
        stack.extend(frames.iter().map(|&index| (index, tag)));
        // Relaxed: a hint (see `any_free`), stored under the stack's mutex.
        shard.len.store(stack.len(), Ordering::Relaxed);
    }

    /// The address range of the array's mapping (tests of its commit
    /// charge).
    #[cfg(test)]
    pub(super) fn address_range(&self) -> std::ops::Range<usize> {
        self.region.address_range()
    }

    /// Frames that have been handed out at least once (their memory is
    /// touched; the array's share of RSS).
    pub(super) fn touched(&self) -> usize {
        // Relaxed: a statistic.
        self.fresh.load(Ordering::Relaxed)
    }
}
