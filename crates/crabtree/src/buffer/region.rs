//! A reserved range of anonymous virtual memory seen as `AtomicU64` words,
//! of which a growing prefix is committed (readable, writable).
//!
//! This is the only file of the buffer pool with `unsafe`. A [`Region`]
//! reserves its whole length `PROT_NONE` and makes a prefix of it readable
//! and writable ([`Region::commit`]) as its owner's needs grow: the frame
//! array (`frames.rs`) commits frames as it first hands them out, the
//! state region (`pool.rs`) commits the words of the page ids below
//! `page_count` before the count is raised. The kernel zero-fills a
//! committed page on first touch.
//!
//! Why not one writable `MAP_NORESERVE` mapping (as before): under strict
//! overcommit accounting (`vm.overcommit_memory=2`, recommended for
//! database servers) the kernel ignores `MAP_NORESERVE` and charges every
//! writable private mapping in full against the commit limit, so the
//! frame array of the default `max_pages` (2^24 pages: 64 GiB of 4 KiB
//! frames, plus 256 MiB of state words) made every open fail on such a
//! machine, however small the database. A `PROT_NONE` private mapping is
//! not charged; `mprotect` to read/write charges exactly the pages it
//! opens. The reservation is mapped without `MAP_NORESERVE` on purpose:
//! with it the kernel (in the other overcommit modes) exempts the mapping
//! from accounting altogether, so what is charged would differ by mode;
//! without it the charge is the committed prefix in every mode (measured
//! through `/proc/self/smaps`, `tests/pool_commit_charge.rs`).
//!
//! `RLIMIT_AS` (`ulimit -v`) still counts the whole reservation,
//! `PROT_NONE` or not: a process under such a limit lowers `max_pages`.
//!
//! Growth: the committed prefix grows by at least `grain` bytes and by at
//! least an eighth of itself (few `mprotect` calls, each a VMA change under
//! the kernel's mmap lock; adjacent ranges with equal protection merge, so
//! the region stays two VMAs however often it grows). Growing is
//! serialized by a mutex and changes only pages nobody reads yet, so it is
//! safe against concurrent readers of the committed words. It never
//! shrinks while the region lives.
//!
//! The pool never gives touched memory back: the state region only grows
//! with the page ids used, and the frame array recycles its frames
//! instead of returning them (returning memory costs a TLB flush per call
//! and a page fault to refill it; see `docs/BENCHMARKS.md`, "pool_oom").
//!
//! Invariants: the mapping lives exactly as long as the `Region`; words
//! `0..committed` are readable and writable, and `committed` only grows,
//! stored (Release) after the `mprotect` that opened its words returned;
//! every slice handed out lies inside the committed prefix (checked
//! against `committed`, so a caller that breaks its bound panics instead
//! of faulting) and borrows the `Region`, so no slice outlives the
//! mapping; a caller reaches a word only through an index it learned
//! after the commit that covers it (a happens-before chain from the
//! Release store of `committed`: then the check's Relaxed load sees that
//! store or a later one, by coherence); all access goes through atomics,
//! so concurrent readers and writers are not data races, except through
//! [`Region::bytes_mut`], whose caller guarantees that nothing else
//! touches the words while its slice lives (a load's `pread` into a frame
//! that passed its grace period, `grace.rs`).

use crate::limits::REGION_GRAIN_MIN;
use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering};
use crate::{Error, Result};
use rustix::mm::{Advice, MapFlags, MprotectFlags, ProtFlags, madvise, mmap_anonymous, mprotect, munmap};
use std::ffi::c_void;
use std::ptr::NonNull;

/// An anonymous mapping of `len` bytes (a multiple of 8), reserved
/// `PROT_NONE`, of which words `0..committed` are readable, writable and
/// zero-filled.
pub struct Region {
    base: NonNull<AtomicU64>,
    len: usize,
    /// Bytes each growth commits at least (a multiple of `REGION_GRAIN_MIN`).
    grain: usize,
    /// Words `0..committed` are readable and writable; only grows, under
    /// `grow`, stored after the `mprotect` that opened them.
    committed: AtomicUsize,
    /// Serializes growth.
    grow: Mutex<()>,
}

// SAFETY: the region is plain memory accessed only through `AtomicU64`,
// which is `Sync`; the pointer is never used to create non-atomic
// references (except `bytes_mut`, whose caller guarantees exclusivity),
// and growth is serialized by a mutex, so sharing and sending it between
// threads is sound.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Reserves `len` bytes of address space, none of it committed yet;
    /// growth commits `grain` bytes at least (a positive multiple of
    /// `REGION_GRAIN_MIN`). Charges nothing against the commit limit.
    pub fn new(len: usize, grain: usize) -> Result<Region> {
        if len == 0 || !len.is_multiple_of(8) {
            return Err(Error::InvalidArgument(format!("region of {len} bytes")));
        }
        if grain == 0 || !grain.is_multiple_of(REGION_GRAIN_MIN) {
            return Err(Error::InvalidArgument(format!("region grain of {grain} bytes")));
        }
        // SAFETY: a fresh anonymous mapping at an address the kernel picks
        // aliases no existing memory; the result is checked below. No
        // `NORESERVE`: see the module doc (a `PROT_NONE` mapping is not
        // charged anyway; the flag would only exempt the committed part
        // from accounting in some overcommit modes).
        let ptr = unsafe { mmap_anonymous(std::ptr::null_mut(), len, ProtFlags::empty(), MapFlags::PRIVATE) }.map_err(
            |errno| {
                // Refused address space (`RLIMIT_AS`, or none left): say
                // what sizes it.
                let error = std::io::Error::from(errno);
                Error::Io(std::io::Error::new(
                    error.kind(),
                    format!("reserving {len} bytes of address space (sized by max_pages): {error}"),
                ))
            },
        )?;
        let base =
            NonNull::new(ptr.cast::<AtomicU64>()).ok_or_else(|| Error::InvalidArgument("mmap returned null".into()))?;
        Ok(Region { base, len, grain, committed: AtomicUsize::new(0), grow: Mutex::new(()) })
    }

    /// Makes words `0..word_count` readable and writable (more: growth
    /// rounds up, see the module doc), if they are not yet. Returns once
    /// they are, so the caller may then publish indices below
    /// `word_count`. Safe while other threads read committed words.
    /// Errors: `Io` if the kernel refuses (`ENOMEM`: the commit limit
    /// under strict overcommit); `InvalidArgument` past the region.
    pub fn commit(&self, word_count: usize) -> Result<()> {
        // Acquire: pairs with the Release store below, so the words are
        // usable by this thread once it sees them committed.
        if word_count <= self.committed.load(Ordering::Acquire) {
            return Ok(());
        }
        self.commit_slow(word_count)
    }

    #[cold]
    fn commit_slow(&self, word_count: usize) -> Result<()> {
        if word_count > self.word_count() {
            return Err(Error::InvalidArgument(format!(
                "commit of {word_count} words past a region of {}",
                self.word_count()
            )));
        }
        let _grow = self.grow.lock();
        // Relaxed: `committed` changes only under `grow`, which we hold.
        let committed = self.committed.load(Ordering::Relaxed);
        if word_count <= committed {
            return Ok(());
        }
        let from = committed * 8;
        let want = (word_count * 8).max(from + from / 8).max(from + self.grain);
        // Round up to the grain (from is a multiple of it: every commit
        // but the one that reaches `len` ends on one).
        let to = want.div_ceil(self.grain).saturating_mul(self.grain).min(self.len);
        debug_assert!(from.is_multiple_of(self.grain) && to > from);
        // SAFETY: `from..to` lies inside our mapping (to <= len) and starts
        // on a page boundary (`from` is a multiple of the grain, itself of
        // every page size); it is past `committed`, so no slice into it
        // exists and no thread reads it: opening it to reads and writes
        // changes nothing anyone observes.
        let opened = unsafe {
            mprotect(
                self.base.as_ptr().cast::<u8>().add(from).cast::<c_void>(),
                to - from,
                MprotectFlags::READ | MprotectFlags::WRITE,
            )
        };
        opened.map_err(|errno| Error::Io(errno.into()))?;
        // Release: the mprotect above happens before any access through
        // an index that a thread learned after seeing this store.
        self.committed.store(to / 8, Ordering::Release);
        Ok(())
    }

    /// Number of committed words (grows; a Relaxed look, which may lag a
    /// concurrent commit, never run ahead of it).
    #[inline]
    pub fn committed_words(&self) -> usize {
        // Relaxed: the value only grows; a stale one is smaller, which is
        // a safe bound. Callers that must see a commit reach it through a
        // happens-before chain (module doc).
        self.committed.load(Ordering::Relaxed)
    }

    /// Asks the kernel to back the region with transparent huge pages where
    /// it can (`MADV_HUGEPAGE`; honoured when THP is `madvise` or `always`):
    /// fewer TLB misses for memory that is touched once and kept. Touched
    /// memory then grows in huge-page steps. Failure (no THP) is ignored.
    /// Covers the whole reservation, so parts committed later too.
    pub fn advise_huge_pages(&self) {
        // SAFETY: the range is exactly our private anonymous mapping;
        // MADV_HUGEPAGE changes how the kernel backs it, never its contents.
        let result = unsafe { madvise(self.base.as_ptr().cast::<c_void>(), self.len, Advice::LinuxHugepage) };
        // No THP support is fine: the region works with small pages.
        let _ = result;
    }

    /// Number of words in the region (committed or not).
    #[inline]
    pub fn word_count(&self) -> usize {
        self.len / 8
    }

    /// The words `start..start + count`. Panics if not inside the
    /// committed prefix (a programmer error: callers bound page ids by
    /// `page_count` and frame indices by the frames handed out, both
    /// committed before they were published).
    #[inline]
    pub fn words(&self, start: usize, count: usize) -> &[AtomicU64] {
        let end = start.checked_add(count).expect("word range overflows");
        let committed = self.committed_words();
        assert!(end <= committed, "words {start}..{end} past the {committed} committed");
        // SAFETY: the range is inside the committed prefix (checked above:
        // the words' commit happened before, see the module doc), which is
        // readable and writable, page aligned (so 8-byte aligned) and
        // zero-initialised (a valid `AtomicU64` is any 8 bytes). It lives
        // as long as `self`, which the returned slice borrows. All access is
        // atomic, so shared references from many threads are sound.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(start), count) }
    }

    /// Word `index` if it is committed (as far as this thread has seen),
    /// else `None`: for hints such as a prefetch of a word named by an
    /// unchecked link.
    #[inline]
    pub fn word_if_committed(&self, index: usize) -> Option<&AtomicU64> {
        (index < self.committed_words()).then(|| &self.words(index, 1)[0])
    }

    /// The address range of the mapping (tests measure what the kernel
    /// charges for it in `/proc/self/smaps`).
    #[cfg(test)]
    pub fn address_range(&self) -> std::ops::Range<usize> {
        let start = self.base.as_ptr() as usize;
        start..start + self.len
    }
}

impl Region {
    /// The words `start..start + count` as bytes to write, for a system call
    /// (`pread`) that fills them. Panics if not inside the committed prefix.
    ///
    /// # Safety
    /// While the returned slice lives, no other access (atomic or not, by
    /// any thread) may touch these words.
    #[allow(clippy::mut_from_ref)] // exclusivity is the caller's contract
    pub unsafe fn bytes_mut(&self, start: usize, count: usize) -> &mut [u8] {
        let end = start.checked_add(count).expect("word range overflows");
        let committed = self.committed_words();
        assert!(end <= committed, "words {start}..{end} past the {committed} committed");
        // SAFETY: the range is inside the committed prefix (checked
        // above), readable, writable and initialised (any byte is a valid
        // `u8`); it lives as long as `self`, which the slice borrows; the
        // caller guarantees no other access while the slice lives, so it
        // is unaliased.
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
