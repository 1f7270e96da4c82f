//! Uncached point reads: a reader that misses a page may read it into a
//! buffer of its own instead of a frame, when the pool is full and the
//! admission filter says the page is not worth a frame.
//!
//! # Why
//! Past memory, a load into the pool costs more than its `pread`: the
//! frame a victim left is the coldest memory the pool has, so the kernel's
//! copy into it misses the CPU caches on every line (`docs/BENCHMARKS.md`:
//! a `pread` into a rotating 36 MiB arena runs at 0.70x the rate of one
//! into a hot buffer), and every load pays an eviction (the clock, the
//! victim's latch, a frame's grace period). With uniform reads of data
//! four times the budget, caching the page buys nothing: any resident set
//! of that size hits as often. So a point read (`BTree::get`) of a leaf
//! that is not resident, in a full pool, reads it into its thread's own
//! buffer, which stays in the cache, and leaves the pool as it was.
//!
//! # Admission
//! A page earns a frame on its second miss within a window: the filter is
//! a direct-mapped table of recently missed page ids, with about a
//! sixteenth as many entries as the budget has frames (rounded up to a
//! power of two). A miss whose id is in its entry is admitted (loaded as
//! before) and clears the entry; otherwise it records its id and reads
//! uncached. Every uncached read writes its entry, so each home shard of
//! threads (`frames::home_shard`) has a table of its own: with one table
//! shared, two threads wrote the same 64 lines and took each other's on
//! most misses, which cost uniform gets with two threads 2-3%
//! (`docs/BENCHMARKS.md`, "The admission filter, one table per home
//! shard"). A page is then admitted on its second miss by threads of the
//! same shard; under any one distribution of reads each thread sees a hot
//! page as often as all of them together do, so the rate below holds per
//! shard. A page that is a fraction `r` of the misses is admitted on a
//! miss with probability about `r * D / (1 + r * D)` for `D` entries (the
//! misses in between are geometric): under uniform reads over `N` pages,
//! `D / (N + D)`, 3.5% for the pool_oom bench (28k pages missed, 1,024
//! entries; a table of half the frames admitted 22% there, and read
//! 4-8% slower), while a page that is more than `1 / D` of the misses is
//! admitted on its first or second miss, so skewed reads bring their hot
//! pages in (`docs/BENCHMARKS.md`, "Uncached point reads"). While the pool
//! is below its budget every miss is admitted (a pool fills as before).
//! Entries are relaxed loads and stores: a race loses a hint, never a
//! page.
//!
//! # Why the copy is the page
//! The reader reads the page's state word `w` (Acquire) and sees it
//! EVICTED, reads the page from storage and verifies it, then validates
//! `w` as an optimistic reader does (Acquire fence, then the word): same
//! version, not latched. A page's storage image changes only by a
//! write-back, which runs under a latch of the resident page; a page
//! becomes resident only through its exclusive latch, whose release moves
//! the version on. So if `w` validates, no load, change or write-back of
//! the page overlapped the read, and the last write-back ended before `w`
//! was stored (eviction writes a dirty victim before it stores EVICTED):
//! the copy is the page as it was at the time of the read, exactly what
//! an optimistic read of a frame would have seen. A read or verification
//! that fails while `w` no longer validates was overlapped by a loader or
//! a write-back (a torn read): the reader retries with a load, and only a
//! failure with `w` still valid is reported (the load reports a page that
//! fails verification however often others' failed loads move its
//! version on). The memory-model step from the kernel's copy to the
//! validation is the optimistic reader's (Acquire fence, then the word),
//! with the syscall's copy in place of relaxed loads: sound on the
//! hardware we run on (x86-TSO; Arm's load-load barrier of the fence), not
//! provable in Rust's model, which does not describe the page cache.
//!
//! As for frames, the caller couples: it validates the node it came from
//! after this read, so the link it followed still stood while `w` was
//! read (a freed page keeps its old image on storage, and only the link
//! tells it is gone). The guard's later validations compare `w` again:
//! until the page is loaded, the copy is still the page.
//!
//! The spare buffer is a thread-local; a read from another thread-local's
//! destructor, after the spare is gone, allocates a buffer of its own
//! (`tests/tls_teardown.rs`).

use super::Restart;
use super::frames::home_shard;
use super::guard::OptimisticGuard;
use super::latch;
use super::pool::BufferPool;
use crate::Result;
use crate::ids::PageId;
use crate::limits::FRAME_FREE_SHARDS;
use crate::page::bytes::AtomicPage;
use crate::sync::{AtomicBool, Ordering};
use std::sync::atomic::AtomicU32;

/// Largest number of entries of a shard's admission filter (4 bytes each).
const FILTER_ENTRIES_MAX: usize = 1 << 16;

thread_local! {
    /// Each thread's spare page copy: an uncached read takes it and gives
    /// it back when its guard drops, so the copy stays in the core's cache
    /// and no read allocates.
    static SPARE: std::cell::Cell<Option<Box<[crate::sync::AtomicU64]>>> = const { std::cell::Cell::new(None) };
}

/// Words of padding between two shards' tables, so no cache line holds
/// entries of two shards.
const FILTER_PAD: usize = 64 / std::mem::size_of::<AtomicU32>();

/// The admission filter and the switch for uncached reads.
pub(super) struct Admission {
    /// Recently missed page ids (low 32 bits; 0: empty), direct-mapped:
    /// `FRAME_FREE_SHARDS` tables of `entries`, each followed by
    /// `FILTER_PAD` unused words.
    recent: Box<[AtomicU32]>,
    /// Entries of one shard's table (a power of two).
    entries: usize,
    /// `64 - log2(entries)`: the hash's top bits index a table.
    shift: u32,
    /// Whether point reads may read uncached (on by default).
    on: AtomicBool,
}

impl Admission {
    /// A filter for a pool of `frames_max` frames.
    pub(super) fn new(frames_max: usize) -> Admission {
        let entries = (frames_max / 16).next_power_of_two().clamp(64, FILTER_ENTRIES_MAX);
        Admission {
            recent: (0..FRAME_FREE_SHARDS * (entries + FILTER_PAD)).map(|_| AtomicU32::new(0)).collect(),
            entries,
            shift: 64 - entries.trailing_zeros(),
            on: AtomicBool::new(true),
        }
    }

    /// Whether a miss of `pid` in a full pool earns a frame: its id was
    /// recorded by a recent miss (then the entry is cleared), else it is
    /// recorded now and the page is read uncached.
    fn admit(&self, pid: PageId) -> bool {
        let entry = self.entry(pid);
        // Page 0 is never read, but an id's low bits may be 0: keep 0 free.
        let tag = (pid.0 as u32).max(1);
        // Relaxed: a hint; a lost update only changes which miss is admitted.
        if entry.load(Ordering::Relaxed) == tag {
            entry.store(0, Ordering::Relaxed);
            true
        } else {
            entry.store(tag, Ordering::Relaxed);
            false
        }
    }

    /// Drops `pid` from every shard's table, as misses of other pages that
    /// map to the same entry do (tests: the thread whose miss recorded it
    /// is another thread, with a table of its own).
    #[cfg(test)]
    fn forget(&self, pid: PageId) {
        for shard in 0..FRAME_FREE_SHARDS {
            self.entry_in(shard, pid).store(0, Ordering::Relaxed);
        }
    }

    /// The entry `pid` maps to (a multiplicative hash of its id) in the
    /// table of the calling thread's home shard.
    #[inline]
    fn entry(&self, pid: PageId) -> &AtomicU32 {
        self.entry_in(home_shard(), pid)
    }

    /// The entry `pid` maps to in the table of home shard `shard`.
    #[inline]
    fn entry_in(&self, shard: usize, pid: PageId) -> &AtomicU32 {
        let table = shard * (self.entries + FILTER_PAD);
        &self.recent[table + (pid.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize]
    }
}

/// A point read of a page: its frame read optimistically, or a copy of it
/// read from storage (see the module doc). Validate either before acting
/// on what was read.
pub enum PointRead<'a> {
    /// The page is resident: an optimistic read of its frame.
    Resident(OptimisticGuard<'a>),
    /// The page was not resident and not admitted: a private copy.
    Uncached(UncachedGuard<'a>),
}

/// A private copy of a page that is not resident, valid while the page
/// stays unloaded. Holds no latch and no read section. Not `Send` (its
/// buffer returns to its thread).
pub struct UncachedGuard<'a> {
    pool: &'a BufferPool,
    pid: PageId,
    observed: u64,
    /// Always `Some` until dropped.
    words: Option<Box<[crate::sync::AtomicU64]>>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl<'a> UncachedGuard<'a> {
    /// The page read.
    pub fn pid(&self) -> PageId {
        self.pid
    }

    /// The copy: the page as it was when read. It stays the page's current
    /// image while [`UncachedGuard::validate`] succeeds.
    pub fn page(&self) -> AtomicPage<'_> {
        AtomicPage::new(self.words.as_deref().unwrap_or(&[]))
    }

    /// `Ok` if the page was not loaded since it was read, so the copy is
    /// still the page.
    pub fn validate(&self) -> Result<(), Restart> {
        if self.pool.latch(self.pid).validate(self.observed) { Ok(()) } else { Err(Restart) }
    }
}

impl Drop for UncachedGuard<'_> {
    fn drop(&mut self) {
        let words = self.words.take();
        // Gone only while the thread's destructors run: the buffer is freed.
        let _ = SPARE.try_with(|spare| spare.set(words));
    }
}

/// How an uncached read went.
enum Uncached<'a> {
    /// The copy, the page as it is.
    Read(UncachedGuard<'a>),
    /// Read whole, but the page was loaded meanwhile.
    Loaded,
    /// The read failed (or did not verify) while the page was loaded or
    /// written back: torn.
    Torn,
}

impl BufferPool {
    /// Starts an optimistic point read of `pid`: its frame if it is
    /// resident; if it is not and the pool is full, either a private copy
    /// read from storage or, when the admission filter admits the page
    /// (module doc), a load as [`BufferPool::optimistic`] does. For
    /// readers that read a page once and move on (`BTree::get`'s leaf).
    ///
    /// Entry, exit and errors as for [`BufferPool::optimistic`].
    #[inline(always)]
    pub fn optimistic_point(&self, pid: PageId) -> Result<PointRead<'_>> {
        // The resident case inline, the rest out of line: a descent's
        // every step to a leaf runs this, and a guard handed back through
        // memory stalls the caller on store forwarding.
        if let Some(guard) = self.optimistic_resident(pid)? {
            return Ok(PointRead::Resident(guard));
        }
        self.optimistic_point_miss(pid)
    }

    /// `optimistic_point` once a first look found `pid` not resident.
    #[inline(never)]
    fn optimistic_point_miss(&self, pid: PageId) -> Result<PointRead<'_>> {
        // After a torn read the page is loaded instead: a load reports a
        // page that fails verification, however often others' failed
        // loads move its version on, so the retries end.
        let mut torn = false;
        // Each pass ends by looking again whether the page is resident (the
        // first look was the caller's).
        loop {
            'pass: {
                let latch = self.latch(pid);
                if torn || !self.admission.on.load(Ordering::Relaxed) || !self.is_full() || self.admission.admit(pid) {
                    self.load(pid)?;
                    break 'pass;
                }
                // The page was not resident a moment ago; it may be loaded
                // (and changed, dirty, its storage image now stale) from
                // here on.
                failpoint!("pool.point_miss", ignore);
                // Acquire: as an optimistic read's first load; also orders
                // the last write-back of the page (before its eviction's
                // Release store of EVICTED) before our read of storage.
                // Only a word that says EVICTED makes storage the page's
                // image.
                let observed = latch.load_acquire();
                if latch::state(observed) != latch::EVICTED {
                    break 'pass;
                }
                match self.read_uncached(pid, observed)? {
                    Uncached::Read(guard) => return Ok(PointRead::Uncached(guard)),
                    Uncached::Loaded => {}
                    Uncached::Torn => torn = true,
                }
            }
            if let Some(guard) = self.optimistic_resident(pid)? {
                return Ok(PointRead::Resident(guard));
            }
        }
    }

    /// Reads `pid`, EVICTED at `observed`, into a private copy.
    fn read_uncached(&self, pid: PageId, observed: u64) -> Result<Uncached<'_>> {
        // A thread-local destructor may read after `SPARE` is gone: then a
        // fresh buffer, dropped with the guard.
        let mut words = SPARE
            .try_with(std::cell::Cell::take)
            .ok()
            .flatten()
            .filter(|words| words.len() * 8 == self.page_size)
            .unwrap_or_else(|| (0..self.page_size / 8).map(|_| crate::sync::AtomicU64::new(0)).collect());
        let read = self.read_page(pid, words_as_bytes(&mut words));
        // The point holds the reader between its read (whatever its
        // outcome) and its validation; an error injected there stands for
        // a torn read (one that fails verification).
        #[cfg(feature = "failpoints")]
        let read = {
            let injected = crate::failpoint::hit("pool.uncached_read");
            read.and(injected)
        };
        let valid = self.latch(pid).validate(observed);
        let guard =
            UncachedGuard { pool: self, pid, observed, words: Some(words), _not_send: std::marker::PhantomData };
        match read {
            Ok(()) if valid => {
                self.counters.loads.add(1);
                self.counters.uncached_reads.add(1);
                Ok(Uncached::Read(guard))
            }
            Ok(()) => Ok(Uncached::Loaded),
            // Torn by a load or write-back that overlapped the read.
            Err(_) if !valid => Ok(Uncached::Torn),
            Err(error) => Err(error),
        }
    }

    /// Whether point reads of pages that are not resident may read them
    /// uncached when the pool is full ([`BufferPool::optimistic_point`]).
    pub fn uncached_reads_active(&self) -> bool {
        // Relaxed: a setting.
        self.admission.on.load(Ordering::Relaxed)
    }

    /// Turns uncached point reads on (the default) or off (every miss
    /// loads the page into a frame). For measurements.
    pub fn set_uncached_reads(&self, on: bool) {
        // Relaxed: a setting.
        self.admission.on.store(on, Ordering::Relaxed);
    }
}

// `words_as_bytes` relies on this: the words must be plain 8-byte atomics
// (a `crate::sync` built on a model checker's types would not be).
const _: () = assert!(std::mem::size_of::<crate::sync::AtomicU64>() == 8);

/// The bytes of a buffer of words the caller owns, for `pread` to write.
fn words_as_bytes(words: &mut [crate::sync::AtomicU64]) -> &mut [u8] {
    let len = std::mem::size_of_val(words);
    // SAFETY: `AtomicU64` has the size and bit validity of `u64`, so the
    // words are `len` initialised bytes, and every byte value keeps them
    // valid; `u8` needs no alignment; the `&mut` borrow makes this slice
    // the only access to them while it lives (no other thread can hold a
    // reference to memory we borrow mutably).
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemStorage;
    use crate::page::bytes::{PageBuf, PageBufMut};
    use crate::sync::Arc;

    /// Failpoint scenarios of this file configure the same point: one at
    /// a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// A full pool of 64 frames over 640 leaves, each with its index as a
    /// tag at byte 100, all written to storage.
    fn full_pool() -> (BufferPool, Vec<PageId>) {
        full_pool_on(Arc::new(MemStorage::new()))
    }

    /// `full_pool` over `storage`.
    fn full_pool_on(storage: Arc<MemStorage>) -> (BufferPool, Vec<PageId>) {
        full_pool_sized(storage, 512)
    }

    /// `full_pool` over `storage` with pages of `page_size` bytes.
    fn full_pool_sized(storage: Arc<MemStorage>, page_size: usize) -> (BufferPool, Vec<PageId>) {
        let opts = crate::buffer::PoolOptions { page_size, pool_bytes: 64 * page_size, max_pages: 4096 };
        let pool = BufferPool::create(storage, opts).unwrap();
        let pids: Vec<PageId> = (0..640u64).map(|tag| crate::buffer::tests::new_leaf(&pool, tag)).collect();
        pool.flush().unwrap();
        assert!(pool.is_full(), "{:?}", pool.stats());
        (pool, pids)
    }

    /// The tag a validated point read of `pid` sees, and whether it read a
    /// copy.
    fn point_tag(pool: &BufferPool, pid: PageId) -> Result<(u64, bool)> {
        loop {
            let (tag, uncached, valid) = match pool.optimistic_point(pid)? {
                PointRead::Resident(guard) => (guard.page().read_u64(100), false, guard.validate().is_ok()),
                PointRead::Uncached(guard) => (guard.page().read_u64(100), true, guard.validate().is_ok()),
            };
            if valid {
                return Ok((tag, uncached));
            }
        }
    }

    /// A point read of `pid` by a thread held at failpoint `point` while
    /// `meanwhile` runs; what it returns once let go.
    #[cfg(feature = "failpoints")]
    fn point_read_held_at(
        pool: &BufferPool,
        pid: PageId,
        point: &'static str,
        meanwhile: impl FnOnce(),
    ) -> (u64, bool) {
        let pause = crate::failpoint::Pause::arm_for(point, |thread| thread.name() == Some("held-reader"));
        std::thread::scope(|scope| {
            let reader = std::thread::Builder::new()
                .name("held-reader".into())
                .spawn_scoped(scope, || point_tag(pool, pid).unwrap())
                .unwrap();
            assert!(pause.wait_parked(std::time::Duration::from_secs(20)), "the reader never reached {point}");
            meanwhile();
            pause.resume();
            reader.join().unwrap()
        })
    }

    /// A page of the full pool that is not resident.
    fn evicted(pool: &BufferPool, pids: &[PageId]) -> (usize, PageId) {
        let index = pids.iter().position(|&pid| !pool.latch(pid).is_resident()).unwrap();
        (index, pids[index])
    }

    fn rewrite_tag(pool: &BufferPool, pid: PageId, tag: u64) {
        let mut guard = pool.exclusive(pid).unwrap();
        guard.page_mut().write_u64(100, tag);
        guard.mark_dirty();
    }

    #[test]
    fn a_full_pool_reads_a_page_it_does_not_admit_into_a_copy_and_admits_it_when_missed_again() {
        let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (pool, pids) = full_pool();
        let (index, pid) = evicted(&pool, &pids);
        let before = pool.stats();
        assert_eq!(point_tag(&pool, pid).unwrap(), (index as u64, true));
        let after = pool.stats();
        assert!(!pool.latch(pid).is_resident(), "an uncached read made the page resident");
        assert_eq!(after.uncached_reads, before.uncached_reads + 1);
        assert_eq!(after.evictions, before.evictions, "an uncached read evicted");
        // Missed again soon: admitted, loaded into a frame.
        assert_eq!(point_tag(&pool, pid).unwrap(), (index as u64, false));
        assert!(pool.latch(pid).is_resident());
        // A copy validates until the page is loaded.
        let (index, pid) = evicted(&pool, &pids);
        let PointRead::Uncached(copy) = pool.optimistic_point(pid).unwrap() else { panic!("not a copy") };
        assert_eq!((copy.page().read_u64(100), copy.validate()), (index as u64, Ok(())));
        drop(pool.optimistic(pid).unwrap());
        assert_eq!(copy.validate(), Err(Restart), "a copy of a page loaded since validated");
        drop(copy);
        // Switched off, every miss loads.
        let after = pool.stats();
        pool.set_uncached_reads(false);
        let (index, pid) = evicted(&pool, &pids);
        assert_eq!(point_tag(&pool, pid).unwrap(), (index as u64, false));
        assert_eq!(pool.stats().uncached_reads, after.uncached_reads);
    }

    #[test]
    fn a_pool_below_its_budget_loads_every_miss() {
        let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let opts = crate::buffer::PoolOptions { page_size: 512, pool_bytes: 1024 * 512, max_pages: 4096 };
        let pool = BufferPool::create(Arc::new(MemStorage::new()), opts).unwrap();
        let pid = crate::buffer::tests::new_leaf(&pool, 0);
        pool.flush().unwrap();
        assert!(!pool.is_full());
        assert_eq!(point_tag(&pool, pid).unwrap(), (0, false));
        assert_eq!(pool.stats().uncached_reads, 0);
    }

    /// A page whose storage image does not verify, read uncached in a
    /// full pool with nothing else going on: a flipped byte of its body
    /// (checksum), and another page's whole image written at its place (a
    /// misdirected write: the checksum holds, the id does not). The read
    /// itself reports `Corruption` naming the page, leaves the pool as it
    /// was, and a load of the page reports the same. (Fails if an uncached
    /// read does not verify what it read: the damaged copy is returned.)
    #[test]
    fn a_page_that_fails_verification_on_storage_is_an_error_when_read_uncached() {
        use crate::io::Storage;
        let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let storage = Arc::new(MemStorage::new());
        let (pool, pids) = full_pool_on(Arc::clone(&storage));
        let (_, flipped) = evicted(&pool, &pids);
        let (at, misdirected) = evicted(&pool, &pids[pids.len() / 2..]);
        // Another page: the first evicted one after it (with the page at
        // the middle resident, the first after the middle was it).
        let (_, source) = evicted(&pool, &pids[pids.len() / 2 + at + 1..]);
        assert_ne!(source, misdirected);
        let mut byte = [0u8; 1];
        storage.read_at(flipped.0 * 512 + 300, &mut byte).unwrap();
        storage.write_at(flipped.0 * 512 + 300, &[byte[0] ^ 0x10]).unwrap();
        let mut image = vec![0u8; 512];
        storage.read_at(source.0 * 512, &mut image).unwrap();
        storage.write_at(misdirected.0 * 512, &image).unwrap();
        for pid in [flipped, misdirected] {
            let before = pool.stats();
            match point_tag(&pool, pid) {
                Err(crate::Error::Corruption { page, .. }) => assert_eq!(page, pid),
                other => panic!("{pid:?}: {other:?}"),
            }
            let after = pool.stats();
            assert_eq!((after.uncached_reads, after.loads), (before.uncached_reads, before.loads));
            assert!(!pool.latch(pid).is_resident(), "a page that failed verification became resident");
            match pool.optimistic(pid).map(|guard| guard.pid()) {
                Err(crate::Error::Corruption { page, .. }) => assert_eq!(page, pid),
                other => panic!("{pid:?} loaded: {other:?}"),
            }
        }
    }

    /// One thread's spare buffer meets pools of two page sizes and two
    /// copies alive at once: a copy for a 4 KiB pool is not read into the
    /// 512-byte spare a copy for a 512-byte pool left behind, and two
    /// copies held together are two buffers. (Fails if the spare is taken
    /// whatever its size: the 4 KiB page is read short and does not
    /// verify.)
    #[test]
    fn a_spare_of_another_page_size_or_in_use_is_not_read_into() {
        let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (small, small_pids) = full_pool();
        let (large, large_pids) = full_pool_sized(Arc::new(MemStorage::new()), 4096);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    for round in 0..2 {
                        let (index, pid) = evicted(&small, &small_pids[round * 100..]);
                        assert_eq!(point_tag(&small, pid).unwrap(), ((round * 100 + index) as u64, true));
                        let (index, pid) = evicted(&large, &large_pids[round * 100..]);
                        assert_eq!(point_tag(&large, pid).unwrap(), ((round * 100 + index) as u64, true));
                    }
                    let (first, second) = (evicted(&small, &small_pids[300..]), evicted(&small, &small_pids[400..]));
                    let copy = |pid| match small.optimistic_point(pid).unwrap() {
                        PointRead::Uncached(copy) => copy,
                        PointRead::Resident(_) => panic!("{pid:?} was loaded"),
                    };
                    let (one, two) = (copy(first.1), copy(second.1));
                    assert_eq!(one.page().read_u64(100), 300 + first.0 as u64);
                    assert_eq!(two.page().read_u64(100), 400 + second.0 as u64);
                    assert_eq!((one.validate(), two.validate()), (Ok(()), Ok(())));
                })
                .join()
                .unwrap();
        });
    }

    /// A reader holds its copy between the read and the validation while
    /// the page is loaded and changed: the copy is not used, the read
    /// starts over and sees the change. (Either validation, the one inside
    /// the read or the guard's after it, rejects the copy: this checks the
    /// pair; the guard's alone is checked in the first test.)
    #[test]
    #[cfg(feature = "failpoints")]
    fn a_copy_of_a_page_loaded_while_it_was_read_is_not_used() {
        let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (pool, pids) = full_pool();
        let (index, pid) = evicted(&pool, &pids);
        // The copy holds the old tag; the page is loaded and changed.
        let seen = point_read_held_at(&pool, pid, "pool.uncached_read", || {
            rewrite_tag(&pool, pid, 7_000 + index as u64);
        });
        assert_eq!(seen, (7_000 + index as u64, false));
    }

    /// Reads other pages of the full pool (shared latches, no admission
    /// filter) until `pid` is evicted again; its eviction (or the cleaner,
    /// before it) writes it back. The clock passes a dirty page while it
    /// finds clean ones and leaves it to the cleaner, which a busy machine
    /// may not run for a while: each round of the pages waits a little,
    /// and only a minute without eviction fails (it once failed after
    /// four rounds, with a compiler busy on the other core).
    #[cfg(feature = "failpoints")]
    fn evict_again(pool: &BufferPool, pids: &[PageId], pid: PageId) {
        let started = std::time::Instant::now();
        for &other in pids.iter().cycle() {
            if !pool.latch(pid).is_resident() {
                return;
            }
            if other == pid {
                std::thread::sleep(std::time::Duration::from_millis(1));
                let waited = started.elapsed();
                assert!(waited.as_secs() < 60, "{pid:?} stayed resident for {waited:?}: {:?}", pool.stats());
            } else {
                drop(pool.shared(other).unwrap());
            }
        }
    }

    /// The tag stored for `pid` on `storage`.
    #[cfg(feature = "failpoints")]
    fn stored_tag(storage: &MemStorage, pid: PageId) -> u64 {
        use crate::io::Storage;
        let mut bytes = [0u8; 8];
        storage.read_at(pid.0 * 512 + 100, &mut bytes).unwrap();
        u64::from_le_bytes(bytes)
    }

    /// ABA on the state word: a reader holds its copy between the read and
    /// the validation while the page is loaded, changed, written back and
    /// evicted again, so its word says EVICTED once more and storage holds
    /// the change; then, while it is held again, the page's id is freed
    /// (without a version bump: it is not resident), allocated anew,
    /// written and evicted. Only the version tells either copy is stale:
    /// both reads must return the page as it is now. (Fails if the read's
    /// and the guard's validations check only that the word is EVICTED:
    /// the reader returns the old tag.)
    #[test]
    #[cfg(feature = "failpoints")]
    fn a_copy_of_a_page_evicted_again_or_reused_while_it_was_read_is_not_used() {
        let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let storage = Arc::new(MemStorage::new());
        let (pool, pids) = full_pool_on(Arc::clone(&storage));
        // Loaded, changed, written back, evicted again.
        let (index, pid) = evicted(&pool, &pids);
        let before = pool.latch(pid).peek();
        let seen = point_read_held_at(&pool, pid, "pool.uncached_read", || {
            rewrite_tag(&pool, pid, 7_000 + index as u64);
            evict_again(&pool, &pids, pid);
            let now = pool.latch(pid).peek();
            assert_eq!(latch::state(now), latch::EVICTED);
            assert_ne!(latch::version(now), latch::version(before));
            assert_eq!(stored_tag(&storage, pid), 7_000 + index as u64, "the change is on storage");
        });
        assert_eq!(seen.0, 7_000 + index as u64, "a copy older than a load and an eviction was used");
        // Freed, allocated again (the same id: the free list holds only
        // it), written, evicted.
        let (index, pid) = evicted(&pool, &pids[pids.len() / 2..]);
        let seen = point_read_held_at(&pool, pid, "pool.uncached_read", || {
            pool.free_unread(pid);
            let mut fresh = pool.allocate().unwrap();
            assert_eq!(fresh.pid(), pid, "the freed id is reused");
            let mut page = fresh.page_mut();
            crate::page::header::init(&mut page, pid, crate::page::header::PageType::Leaf, 0);
            page.write_u64(100, 8_000 + index as u64);
            drop(fresh);
            evict_again(&pool, &pids, pid);
            assert_eq!(stored_tag(&storage, pid), 8_000 + index as u64, "the new page is on storage");
        });
        assert_eq!(seen.0, 8_000 + index as u64, "a copy of the page the freed id held was used");
    }

    /// A reader found the page not resident and, held before it reads the
    /// page's state word for its uncached read (failpoint
    /// `pool.point_miss`), the page is loaded and changed and stays
    /// resident, dirty: its storage image is stale. The reader must read
    /// the frame. (Fails if the uncached read goes on with a word that is
    /// not EVICTED: the stale image validates against the unchanged
    /// resident word.)
    #[test]
    #[cfg(feature = "failpoints")]
    fn a_page_loaded_between_the_miss_and_the_uncached_read_is_read_from_its_frame() {
        let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (pool, pids) = full_pool();
        let (index, pid) = evicted(&pool, &pids);
        let seen = point_read_held_at(&pool, pid, "pool.point_miss", || {
            rewrite_tag(&pool, pid, 5_000 + index as u64);
            assert!(pool.latch(pid).is_dirty(), "the change is not on storage");
        });
        assert_eq!(seen, (5_000 + index as u64, false));
    }

    /// A read that fails verification (as a read torn by a write-back
    /// would) is reported as the page's error if the page stayed unloaded,
    /// and retried if it was loaded meanwhile.
    #[test]
    #[cfg(feature = "failpoints")]
    fn a_torn_copy_is_an_error_unless_the_page_was_loaded_meanwhile() {
        use crate::failpoint;
        use std::sync::{Mutex, mpsc};
        let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (pool, pids) = full_pool();
        let in_reader = || std::thread::current().name() == Some("torn-reader");
        let torn = || crate::Error::corruption(PageId(0), "injected torn read");
        let read_in_reader = |pid: PageId| {
            std::thread::scope(|scope| {
                let reader = std::thread::Builder::new()
                    .name("torn-reader".into())
                    .spawn_scoped(scope, || point_tag(&pool, pid))
                    .unwrap();
                reader.join().unwrap()
            })
        };
        // Not loaded meanwhile: the error is the page's.
        let (_, pid) = evicted(&pool, &pids);
        failpoint::set("pool.uncached_read", move || if in_reader() { Err(torn()) } else { Ok(()) });
        let error = read_in_reader(pid).unwrap_err();
        assert!(error.to_string().contains("injected torn read"), "{error}");
        // Loaded (and changed) while the torn read was made: retried.
        let (index, pid) = evicted(&pool, &pids[pids.len() / 2..]);
        let index = index + pids.len() / 2;
        let (parked, parked_rx) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let hold = Mutex::new(Some((parked, go_rx)));
        failpoint::set("pool.uncached_read", move || {
            if !in_reader() {
                return Ok(());
            }
            let Some((parked, go)) = hold.lock().unwrap().take() else { return Ok(()) };
            parked.send(()).unwrap();
            go.recv().unwrap();
            Err(torn())
        });
        std::thread::scope(|scope| {
            let reader = std::thread::Builder::new()
                .name("torn-reader".into())
                .spawn_scoped(scope, || point_tag(&pool, pid))
                .unwrap();
            parked_rx.recv_timeout(std::time::Duration::from_secs(20)).expect("the reader never read a copy");
            rewrite_tag(&pool, pid, 9_000 + index as u64);
            go.send(()).unwrap();
            assert_eq!(reader.join().unwrap().unwrap(), (9_000 + index as u64, false));
        });
        failpoint::clear("pool.uncached_read");
    }

    /// A page that fails verification on storage, read while other
    /// threads' failed loads of it keep moving its version on, so that
    /// every uncached read of it is torn, and other misses keep taking its
    /// entry in the admission filter: after its first torn read the reader
    /// loads the page, and the load reports the error. (Were torn reads
    /// simply retried uncached, the reader would go on for as long as the
    /// failed loads do: 101 reads here.)
    #[test]
    #[cfg(feature = "failpoints")]
    fn a_corrupt_page_whose_loads_keep_failing_is_reported_after_one_torn_read() {
        use crate::failpoint;
        use crate::io::Storage;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Mutex, mpsc};
        enum Event {
            Parked,
            Done(Result<(u64, bool)>),
        }
        let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let storage = Arc::new(MemStorage::new());
        let (pool, pids) = full_pool_on(Arc::clone(&storage));
        let (_, pid) = evicted(&pool, &pids);
        storage.write_at(pid.0 * 512 + 300, &[0xA5; 16]).unwrap();
        let reads = Arc::new(AtomicUsize::new(0));
        let (events, events_rx) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let hold = Mutex::new((events.clone(), go_rx));
        let counted = Arc::clone(&reads);
        failpoint::set("pool.uncached_read", move || {
            if std::thread::current().name() != Some("torn-reader") {
                return Ok(());
            }
            counted.fetch_add(1, Ordering::SeqCst);
            let hold = hold.lock().unwrap();
            hold.0.send(Event::Parked).unwrap();
            hold.1.recv().unwrap();
            Ok(())
        });
        let outcome = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("torn-reader".into())
                .spawn_scoped(scope, || events.send(Event::Done(point_tag(&pool, pid))).unwrap())
                .unwrap();
            let mut failed_loads = 0;
            loop {
                match events_rx.recv_timeout(std::time::Duration::from_secs(20)).expect("the reader hangs") {
                    Event::Parked => {
                        if failed_loads < 100 {
                            // Another thread's load of the page fails, and
                            // moves its version on; a miss of another page
                            // takes the page's entry in the admission
                            // filter (else its next miss would load it).
                            assert!(pool.optimistic(pid).is_err(), "the page fails verification");
                            pool.admission.forget(pid);
                            failed_loads += 1;
                        }
                        go.send(()).unwrap();
                    }
                    Event::Done(outcome) => break outcome,
                }
            }
        });
        failpoint::clear("pool.uncached_read");
        let error = outcome.unwrap_err();
        assert!(matches!(error, crate::Error::Corruption { .. }), "{error}");
        assert_eq!(reads.load(Ordering::SeqCst), 1, "uncached reads of the page");
    }
}
