//! A reserved range of anonymous virtual memory seen as `AtomicU64` words.
//!
//! This is the only file of the buffer pool with `unsafe`. A [`Region`] is
//! mapped `PRIVATE | NORESERVE` and zero-filled by the kernel on first touch,
//! so reserving far more address space than memory costs nothing until a
//! word is touched. The pool never gives touched memory back: the state
//! region only grows with the page ids used, and the frame array
//! (`frames.rs`) recycles its frames instead of returning them (returning
//! memory costs a TLB flush per call and a page fault to refill it; see
//! `docs/BENCHMARKS.md`, "pool_oom").
//!
//! Invariants: the mapping lives exactly as long as the `Region`; every
//! slice handed out is inside it and borrows the `Region`, so no slice
//! outlives the mapping; all access goes through atomics, so concurrent
//! readers and writers are not data races, except through
//! [`Region::bytes_mut`], whose caller guarantees that nothing else
//! touches the words while its slice lives (a load's `pread` into a frame
//! that passed its grace period, `grace.rs`).

use crate::sync::AtomicU64;
use crate::{Error, Result};
use rustix::mm::{Advice, MapFlags, ProtFlags, madvise, mmap_anonymous, munmap};
use std::ffi::c_void;
use std::ptr::NonNull;

/// An anonymous, zero-filled mapping of `len` bytes (a multiple of 8).
pub struct Region {
    base: NonNull<AtomicU64>,
    len: usize,
}

// SAFETY: the region is plain memory accessed only through `AtomicU64`,
// which is `Sync`; the pointer is never used to create non-atomic
// references, so sharing and sending it between threads is sound.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Reserves `len` bytes of zeroed, lazily backed memory.
    pub fn new(len: usize) -> Result<Region> {
        if len == 0 || !len.is_multiple_of(8) {
            return Err(Error::InvalidArgument(format!("region of {len} bytes")));
        }
        // SAFETY: a fresh anonymous mapping at an address the kernel picks
        // aliases no existing memory; the result is checked below.
        let ptr = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }
        .map_err(|errno| Error::Io(errno.into()))?;
        let base =
            NonNull::new(ptr.cast::<AtomicU64>()).ok_or_else(|| Error::InvalidArgument("mmap returned null".into()))?;
        Ok(Region { base, len })
    }

    /// Asks the kernel to back the region with transparent huge pages where
    /// it can (`MADV_HUGEPAGE`; honoured when THP is `madvise` or `always`):
    /// fewer TLB misses for memory that is touched once and kept. Touched
    /// memory then grows in huge-page steps. Failure (no THP) is ignored.
    pub fn advise_huge_pages(&self) {
        // SAFETY: the range is exactly our private anonymous mapping;
        // MADV_HUGEPAGE changes how the kernel backs it, never its contents.
        let result = unsafe { madvise(self.base.as_ptr().cast::<c_void>(), self.len, Advice::LinuxHugepage) };
        // No THP support is fine: the region works with small pages.
        let _ = result;
    }

    /// Number of words in the region.
    #[inline]
    pub fn word_count(&self) -> usize {
        self.len / 8
    }

    /// The words `start..start + count`. Panics if out of the region (a
    /// programmer error: callers bound page ids by `max_pages` first).
    #[inline]
    pub fn words(&self, start: usize, count: usize) -> &[AtomicU64] {
        let end = start.checked_add(count).expect("word range overflows");
        assert!(end <= self.word_count(), "words {start}..{end} past region of {}", self.word_count());
        // SAFETY: the range is inside the mapping (checked above), which is
        // readable and writable, page aligned (so 8-byte aligned) and
        // zero-initialised (a valid `AtomicU64` is any 8 bytes). It lives
        // as long as `self`, which the returned slice borrows. All access is
        // atomic, so shared references from many threads are sound.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(start), count) }
    }
}

impl Region {
    /// The words `start..start + count` as bytes to write, for a system call
    /// (`pread`) that fills them. Panics if out of the region.
    ///
    /// # Safety
    /// While the returned slice lives, no other access (atomic or not, by
    /// any thread) may touch these words.
    #[allow(clippy::mut_from_ref)] // exclusivity is the caller's contract
    pub unsafe fn bytes_mut(&self, start: usize, count: usize) -> &mut [u8] {
        let end = start.checked_add(count).expect("word range overflows");
        assert!(end <= self.word_count(), "words {start}..{end} past region of {}", self.word_count());
        // SAFETY: the range is inside the mapping (checked above), readable,
        // writable and initialised (any byte is a valid `u8`); it lives as
        // long as `self`, which the slice borrows; the caller guarantees no
        // other access while the slice lives, so it is unaliased.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(start).cast::<u8>(), count * 8) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `base` and `len` are exactly the mapping made in `new`;
        // every slice into it borrowed `self`, so none is alive now.
        let result = unsafe { munmap(self.base.as_ptr().cast::<c_void>(), self.len) };
        debug_assert!(result.is_ok(), "munmap failed: {result:?}");
    }
}
