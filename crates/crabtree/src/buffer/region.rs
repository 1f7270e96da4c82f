//! A reserved range of anonymous virtual memory seen as `AtomicU64` words.
//!
//! This is the only file of the buffer pool with `unsafe`. A [`Region`] is
//! mapped `PRIVATE | NORESERVE` and zero-filled by the kernel on first touch,
//! so reserving far more address space than memory costs nothing until a
//! page is touched; [`Region::discard`] gives touched memory back
//! (`MADV_DONTNEED`: the range reads as zeros afterwards), and
//! [`Region::discard_many`] gives back many scattered ranges at once.
//!
//! Why batches: every `madvise(MADV_DONTNEED)` ends with a TLB flush that
//! interrupts every other core running this process (an IPI each, a VM exit
//! each under a hypervisor). `process_madvise(2)` with an iovec of ranges
//! does all of them under one flush on the kernels that allow it on the
//! calling process (6.13+; batched flush 6.15+). Which system call is used
//! is probed once per process ([`release_mode`]): `process_madvise` on
//! `PIDFD_SELF`, else on a pidfd of our own pid, else one `madvise` per
//! run of adjacent ranges. `CRABTREE_POOL_RELEASE=madvise` forces the
//! fallback (for measurements and tests).
//!
//! Invariants: the mapping lives exactly as long as the `Region`; every
//! slice handed out is inside it and borrows the `Region`, so no slice
//! outlives the mapping; all access goes through atomics, so concurrent
//! readers and writers are not data races.

use crate::sync::AtomicU64;
use crate::{Error, Result};
use rustix::mm::{Advice, MapFlags, ProtFlags, madvise, mmap_anonymous, munmap};
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::OnceLock;

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

    /// Returns the memory of bytes `offset..offset + len` to the kernel;
    /// the range reads as zeros afterwards. Both must be multiples of the
    /// OS page size. Callers hold the exclusive latch of every page in the
    /// range, so no thread writes it concurrently; optimistic readers may
    /// still load from it and see old bytes or zeros, which their
    /// validation rejects (the latch version changes on eviction).
    pub fn discard(&self, offset: usize, len: usize) -> Result<()> {
        let end = offset.checked_add(len).expect("discard range overflows");
        assert!(end <= self.len, "discard {offset}..{end} past region of {}", self.len);
        // SAFETY: the range is inside our private anonymous mapping, so
        // dropping its contents affects no other memory. The kernel makes
        // the range read as zeros afterwards, a valid value for every
        // `AtomicU64`; outstanding `&[AtomicU64]` slices stay valid (the
        // mapping itself remains). Concurrent atomic loads observe either
        // the old word or zero, which is no data race at the language level
        // (the kernel replaces whole pages) and is caught by validation.
        unsafe { madvise(self.base.as_ptr().cast::<u8>().add(offset).cast::<c_void>(), len, Advice::LinuxDontNeed) }
            .map_err(|errno| Error::Io(errno.into()))
    }

    /// Returns the memory of the ranges `offset..offset + len` for every
    /// offset in `offsets` (sorted or not), like [`Region::discard`] on
    /// each but with as few TLB flushes as the kernel allows (see the module
    /// header). Same preconditions as `discard` for every range.
    pub fn discard_many(&self, offsets: &[usize], len: usize) -> Result<()> {
        for &offset in offsets {
            let end = offset.checked_add(len).expect("discard range overflows");
            assert!(end <= self.len, "discard {offset}..{end} past region of {}", self.len);
        }
        let pidfd = match release_mode() {
            ReleaseMode::Madvise => None,
            ReleaseMode::ProcessMadviseSelf => Some(PIDFD_SELF_PROCESS),
            ReleaseMode::ProcessMadvisePidfd => own_pidfd(),
        };
        let Some(pidfd) = pidfd else {
            return self.discard_runs(offsets, len);
        };
        let mut iovecs: Vec<libc::iovec> = Vec::with_capacity(offsets.len().min(IOVECS_MAX));
        for chunk in offsets.chunks(IOVECS_MAX) {
            iovecs.clear();
            for &offset in chunk {
                // SAFETY: `offset + len` is inside the mapping (checked
                // above), so the pointer stays in the same allocation.
                let base = unsafe { self.base.as_ptr().cast::<u8>().add(offset) };
                iovecs.push(libc::iovec { iov_base: base.cast::<c_void>(), iov_len: len });
            }
            if process_madvise_all(pidfd, &mut iovecs).is_err() {
                // The kernel refused part of it (it should not after the
                // probe): do it the slow, sure way.
                self.discard_runs(chunk, len)?;
            }
        }
        Ok(())
    }

    /// One `madvise` per run of adjacent ranges.
    pub(super) fn discard_runs(&self, offsets: &[usize], len: usize) -> Result<()> {
        let mut sorted = offsets.to_vec();
        sorted.sort_unstable();
        let mut index = 0;
        while index < sorted.len() {
            let start = sorted[index];
            let mut end = start + len;
            index += 1;
            while index < sorted.len() && sorted[index] == end {
                end += len;
                index += 1;
            }
            self.discard(start, end - start)?;
        }
        Ok(())
    }
}

/// How [`Region::discard_many`] returns memory in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseMode {
    /// `process_madvise(PIDFD_SELF, iovec, MADV_DONTNEED)`: one TLB flush
    /// per call (Linux 6.15+).
    ProcessMadviseSelf,
    /// The same on a pidfd of our own pid (kernels before `PIDFD_SELF`).
    ProcessMadvisePidfd,
    /// One `madvise(MADV_DONTNEED)` per run of adjacent ranges.
    Madvise,
}

/// `PIDFD_SELF_THREAD_GROUP` (linux/pidfd.h): "the calling process"
/// without opening a descriptor.
const PIDFD_SELF_PROCESS: i32 = -10001;
/// Ranges per `process_madvise` call (the kernel caps an iovec at
/// `UIO_MAXIOV` = 1024).
const IOVECS_MAX: usize = 512;

struct Probe {
    mode: ReleaseMode,
    /// For `ProcessMadvisePidfd`: the descriptor and the pid it names (a
    /// forked child must not advise its parent's memory).
    pidfd: i32,
    pid: u32,
}

static PROBE: OnceLock<Probe> = OnceLock::new();

/// The release mode of this process, probed on first use.
pub fn release_mode() -> ReleaseMode {
    PROBE.get_or_init(probe).mode
}

fn own_pidfd() -> Option<i32> {
    let probe = PROBE.get_or_init(probe);
    (probe.pid == std::process::id()).then_some(probe.pidfd)
}

/// Tries `process_madvise` on a scratch page and checks that it really
/// dropped the page (reads as zero afterwards).
fn probe() -> Probe {
    let forced = std::env::var("CRABTREE_POOL_RELEASE").ok();
    let madvise_only = Probe { mode: ReleaseMode::Madvise, pidfd: -1, pid: 0 };
    if forced.as_deref() == Some("madvise") {
        return madvise_only;
    }
    let Ok(scratch) = Region::new(os_page_size()) else { return madvise_only };
    let works = |pidfd: i32| {
        scratch.words(0, 1)[0].store(0xC0FFEE, crate::sync::Ordering::Relaxed);
        let mut iovec = [libc::iovec { iov_base: scratch.base.as_ptr().cast::<c_void>(), iov_len: scratch.len }];
        process_madvise_all(pidfd, &mut iovec).is_ok()
            && scratch.words(0, 1)[0].load(crate::sync::Ordering::Relaxed) == 0
    };
    if works(PIDFD_SELF_PROCESS) {
        return Probe { mode: ReleaseMode::ProcessMadviseSelf, pidfd: -1, pid: 0 };
    }
    let pid = std::process::id();
    // SAFETY: pidfd_open takes a pid and flags by value; no memory is passed.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if pidfd >= 0 {
        let pidfd = pidfd as i32;
        if works(pidfd) {
            // The descriptor is kept for the life of the process.
            return Probe { mode: ReleaseMode::ProcessMadvisePidfd, pidfd, pid };
        }
        // SAFETY: `pidfd` is a descriptor we opened and nobody else uses.
        unsafe { libc::close(pidfd) };
    }
    madvise_only
}

/// `process_madvise(pidfd, iovecs, MADV_DONTNEED)` until every range is
/// done (the call may stop early and report how many bytes it did).
fn process_madvise_all(pidfd: i32, iovecs: &mut [libc::iovec]) -> std::result::Result<(), ()> {
    let mut rest = iovecs;
    while !rest.is_empty() {
        let count = rest.len().min(IOVECS_MAX);
        // SAFETY: every iovec names a range inside a private anonymous
        // mapping of ours (see `discard` for why dropping it is sound);
        // the kernel only reads the iovec array, which lives across the
        // call.
        let done =
            unsafe { libc::syscall(libc::SYS_process_madvise, pidfd, rest.as_ptr(), count, libc::MADV_DONTNEED, 0u32) };
        if done < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(());
        }
        if done == 0 {
            // No progress: do not loop.
            return Err(());
        }
        // Skip the ranges done, and the done part of a partial one.
        let mut done = done as usize;
        while done > 0 {
            let Some(first) = rest.first_mut() else { return Err(()) };
            if done < first.iov_len {
                // SAFETY: `done < iov_len`, so the pointer stays inside
                // the same range.
                first.iov_base = unsafe { first.iov_base.cast::<u8>().add(done) }.cast::<c_void>();
                first.iov_len -= done;
                done = 0;
            } else {
                done -= first.iov_len;
                rest = &mut rest[1..];
            }
        }
    }
    Ok(())
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `base` and `len` are exactly the mapping made in `new`;
        // every slice into it borrowed `self`, so none is alive now.
        let result = unsafe { munmap(self.base.as_ptr().cast::<c_void>(), self.len) };
        debug_assert!(result.is_ok(), "munmap failed: {result:?}");
    }
}

/// The operating system's page size (the granularity of [`Region::discard`]).
pub fn os_page_size() -> usize {
    rustix::param::page_size()
}
