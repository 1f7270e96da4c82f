//! The buffer pool: one hybrid latch word per page, next to it the page's
//! page-table word (which frame of the frame array holds it), load on
//! demand, write-back under the WAL rule.
//!
//! Page table: the state region holds two words per page id, the latch
//! word (`latch.rs`) at `2 * pid` and the frame word at `2 * pid + 1`, so
//! a hit reads one cache line to latch the page and find its frame and
//! does no hash lookup (the frame array: `frames.rs`). The region reserves
//! `max_pages` ids but commits (`region.rs`) only the words of ids below
//! `page_count`, rounded up to its growth step: at build for the file's
//! count, and in `allocate` before the count is raised (`commit_page_ids`).
//!
//! Invariants:
//! * a frame is written only by the holder of its exclusive latch; loading
//!   and eviction are done by such a holder;
//! * a page's frame word is written only by the exclusive holder that makes
//!   the page resident, after its locking CAS and before its release (so
//!   a latch holder reads a stable frame, and an optimistic reader that
//!   read a frame word or frame bytes stored after it read the latch word
//!   fails validation: the frame word changes only across a version bump);
//!   it is stored Release and loaded Acquire, so a reader that reads a
//!   frame index sees the commit of its memory (`frames.rs`) even when it
//!   did not synchronize with the page's latch (a stale optimistic read);
//!   it names a frame that page holds while it is resident; an EVICTED
//!   page's frame word is stale and read only by optimistic readers, whose
//!   validation fails;
//! * the state words of ids `0..page_count` are committed before that
//!   count is published (Release), so an id checked against the count
//!   (`check_pid`, Acquire) or learned from such a check names committed
//!   words; a hint (`prefetch_state`) checks against the committed end;
//!   committed words are never given back, so an id below any count ever
//!   published stays committed (also if the count shrinks);
//! * a page is read from storage only for ids in `1..page_count`, and only
//!   a page that verifies (checksum, own id, type) enters a frame;
//! * before a dirty page is written the log hook is called with the page
//!   LSN (WAL rule); a failed write-back is returned, and the page stays
//!   dirty and resident;
//! * a hit (resident page) writes no shared memory, unless the page is
//!   MARKED by the clock (then one CAS resets it).
//!
//! Shape: [`BufferPool`] owns an `Arc<PoolCore>` (everything above: the
//! state region, the frame array, the resident set, the allocator, the
//! counters) and the handle of the background cleaner thread
//! (`cleaner.rs`), which holds the other reference to the core. `BufferPool` derefs to `PoolCore`, so pool code
//! reads the same either way; dropping the pool stops and joins the
//! cleaner.
//!
//! Lower layers used: `io::Storage`, `page::{header, meta, freelist}`.

use super::cleaner::{self, CleanerSignal};
use super::evict::Resident;
use super::frames::Frames;
use super::grace;
use super::guard::{ExclusiveGuard, OptimisticGuard, SharedGuard};
use super::latch::Latch;
use super::region::Region;
use super::uncached::Admission;
use crate::ids::{FrameIndex, Lsn, PageId};
use crate::io::Storage;
use crate::limits::{
    FRAME_FREE_SHARDS, MAX_PAGES_DEFAULT, MAX_PAGES_LIMIT, POOL_BYTES_DEFAULT, POOL_FRAMES_MIN, REGION_GRAIN_STATES,
    page_size_valid,
};
use crate::page::bytes::{AtomicPage, AtomicPageMut};
use crate::page::header;
use crate::page::meta::{META_SIZE, Meta, ROOT_SLOTS};
use crate::sync::{Arc, AtomicBool, AtomicU64, Mutex, Ordering, RwLock};
use crate::{Error, Result};

/// The log hook: "make the log durable up to this LSN".
pub type LogFlush = Arc<dyn Fn(Lsn) -> Result<()> + Send + Sync>;

/// Buffer pool configuration.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    /// Page size for a new file; an existing file's own page size wins.
    pub page_size: usize,
    /// Memory budget: `pool_bytes / page_size` frames (at least
    /// `POOL_FRAMES_MIN`).
    pub pool_bytes: usize,
    /// Largest number of pages (virtual address space reserved: `max_pages`
    /// frames of `page_size` bytes plus 16 bytes per page, `PROT_NONE`
    /// until used; `RLIMIT_AS` counts it all).
    pub max_pages: u64,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            page_size: crate::limits::PAGE_SIZE_DEFAULT,
            pool_bytes: POOL_BYTES_DEFAULT,
            max_pages: MAX_PAGES_DEFAULT,
        }
    }
}

/// Counters of pool activity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Pages in memory now.
    pub resident: usize,
    /// The memory budget in frames.
    pub frames_max: usize,
    /// Frames of the frame array touched so far (their memory stays
    /// mapped and is recycled): the pool's page memory is this many pages.
    pub frames_touched: usize,
    /// Pages read from storage.
    pub loads: u64,
    /// Pages written to storage (eviction and flush).
    pub writes: u64,
    /// Pages evicted.
    pub evictions: u64,
    /// Dirty pages a reader or writer had to write back itself to evict
    /// them (the background cleaner had not cleaned them yet).
    pub dirty_evictions: u64,
    /// Pages written by the background cleaner.
    pub cleaner_writes: u64,
    /// Of `loads`: pages read by `pread` straight into their frame (the
    /// others were read into a buffer and copied in; see `grace.rs`).
    pub direct_loads: u64,
    /// Of `loads`: pages a point read read into its own buffer and did not
    /// cache (a full pool; the admission filter refused them, see
    /// `uncached.rs`).
    pub uncached_reads: u64,
    /// Write-backs that failed for want of space (a full disk: the page
    /// stays dirty, commits are refused until it is written; `space.rs`).
    pub space_failures: u64,
    /// Log payload bytes of page images (structure changes, fresh pages,
    /// full-page images), with a log attached.
    pub image_bytes: u64,
    /// Of `image_bytes`: full-page images logged after a logical change, the
    /// first change of a page since the last checkpoint.
    pub fpi_bytes: u64,
}

/// The pool's statistics, each striped (`Striped`): a load counts without
/// writing a cache line another core writes too.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) loads: Striped,
    pub(super) writes: Striped,
    pub(super) evictions: Striped,
    pub(super) dirty_evictions: Striped,
    pub(super) cleaner_writes: Striped,
    pub(super) direct_loads: Striped,
    pub(super) uncached_reads: Striped,
    pub(super) image_bytes: Striped,
    pub(super) fpi_bytes: Striped,
}

/// A statistic kept in `FRAME_FREE_SHARDS` counters on their own cache
/// lines; a thread adds to the one of its home shard (`frames.rs`), a read
/// sums them. One shared counter cost 2.8% of larger-than-memory gets with
/// two threads (`docs/BENCHMARKS.md`, "pool_oom: pread straight into the
/// frame"): both cores wrote its line on every load.
#[derive(Default)]
pub(super) struct Striped([StripeWord; FRAME_FREE_SHARDS]);

#[repr(align(128))]
#[derive(Default)]
struct StripeWord(AtomicU64);

impl Striped {
    /// Adds `n`.
    #[inline]
    pub(super) fn add(&self, n: u64) {
        // Relaxed: a statistic.
        self.0[super::frames::home_shard()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The sum (concurrent additions may or may not be in it).
    pub(super) fn sum(&self) -> u64 {
        // Relaxed: a statistic.
        self.0.iter().map(|word| word.0.load(Ordering::Relaxed)).sum()
    }
}

/// The page cache. `Send + Sync`; share it by reference or `Arc`.
pub struct BufferPool {
    core: Arc<PoolCore>,
    cleaner: Option<std::thread::JoinHandle<()>>,
}

impl std::ops::Deref for BufferPool {
    type Target = PoolCore;
    #[inline]
    fn deref(&self) -> &PoolCore {
        &self.core
    }
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        self.core.cleaner.stop();
        if let Some(handle) = self.cleaner.take() {
            // A panic in the cleaner is a bug; surface it in debug builds.
            let joined = handle.join();
            debug_assert!(joined.is_ok(), "cleaner thread panicked");
        }
    }
}

/// The state of a pool shared with its cleaner thread (reached through
/// `BufferPool`'s `Deref`; nothing of it is public).
#[doc(hidden)]
pub struct PoolCore {
    pub(super) storage: Arc<dyn Storage>,
    pub(super) page_size: usize,
    pub(super) max_pages: u64,
    pub(super) frames: Frames,
    /// Two words per page id: latch word, frame word (see the module doc);
    /// committed for the ids below `page_count`.
    states: Region,
    pub(super) frames_max: usize,
    pub(super) resident: Resident,
    /// Held shared by each eviction batch from choosing its victims (which
    /// leaves them out of `resident`'s snapshot) until their write-backs
    /// returned, and by the cleaner across each write-back; `write_dirty`
    /// takes it exclusively once, after its pass, so no write-back of a
    /// page its snapshot missed, or that it wrote beside the cleaner, lands
    /// after the sync that follows (`evict.rs`, `cleaner.rs`).
    pub(super) evicting: RwLock<()>,
    /// Test builds: what the last write-back pass did with each page of
    /// its snapshot (`write_dirty`), for the checkpoint audit's report.
    #[cfg(feature = "failpoints")]
    pub(super) pass_trace: Mutex<Vec<(PageId, &'static str)>>,
    /// Test builds: each page's last stamped LSN in this life of the pool
    /// (`mtr.rs`), for the checkpoint audit.
    #[cfg(feature = "failpoints")]
    pub(super) stamps: Mutex<std::collections::HashMap<u64, u64>>,
    /// Test builds: whether checkpoints are audited (`checkpoint.rs`): on
    /// storage that can say what a power cut would leave (the simulated
    /// disk), so benchmarks on real files, built with the test features,
    /// pay nothing for it.
    #[cfg(feature = "failpoints")]
    pub(super) audited: bool,
    /// A page freed while already free, or on the free list but latched
    /// past all patience when allocated (0: none): the free list and the
    /// tree disagree, which only a damaged file or log can cause. Writes
    /// are refused from then on (`check_poisoned`).
    pub(super) free_list_damaged: AtomicU64,
    /// Pages `0..page_count` exist; changed only under `alloc`.
    pub(super) page_count: AtomicU64,
    pub(super) alloc: Mutex<super::alloc::FreeSet>,
    pub(super) roots: [AtomicU64; ROOT_SLOTS],
    log_flush: RwLock<LogFlush>,
    /// The log every page change goes to (`buffer::mtr`); unset: changes
    /// are not logged (a pool without durability, `flush` only).
    pub(super) wal: std::sync::OnceLock<Arc<crate::wal::Wal>>,
    /// Full-page-image horizon: the first change of a page whose LSN is
    /// below it logs the page's image (`buffer::checkpoint`).
    pub(super) fpi_horizon: AtomicU64,
    /// Serializes checkpoints.
    pub(super) checkpoint_lock: Mutex<()>,
    /// Last checkpoint id used.
    pub(super) checkpoint_seq: AtomicU64,
    pub(super) counters: Counters,
    pub(super) cleaner: CleanerSignal,
    /// Whether loads `pread` straight into safe frames (`grace.rs`).
    direct_read: AtomicBool,
    /// Which misses of point reads earn a frame (`uncached.rs`).
    pub(super) admission: Admission,
    /// Write-backs that failed for want of space (`space.rs`).
    pub(super) space: super::space::Space,
}

thread_local! {
    /// The page this thread loaded last, if no [`BufferPool::cool_if_loaded_here`]
    /// asked since (0: none): how a scan tells the leaves it brought in.
    static LAST_LOADED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Each thread's buffer for page reads (no allocation per load).
    static IMAGE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Each thread's buffer for page write-backs.
    static WRITE_IMAGE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch value `key`, or with a fresh one
/// while the thread's destructors run and `key` is gone (a page read or
/// written from another thread-local's destructor: `with` would panic
/// there, and a panic in a destructor aborts the process).
pub(super) fn with_scratch<T: Default + 'static, R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    if key.try_with(|_| ()).is_ok() { key.with_borrow_mut(f) } else { f(&mut T::default()) }
}

fn no_log_flush() -> LogFlush {
    Arc::new(|_| Ok(()))
}

impl BufferPool {
    /// Creates a database on empty storage: writes and syncs header page 0.
    /// Errors: `InvalidArgument` for bad options or non-empty storage.
    pub fn create(storage: Arc<dyn Storage>, opts: PoolOptions) -> Result<BufferPool> {
        if !storage.is_empty()? {
            return Err(Error::InvalidArgument("create on non-empty storage; use open".into()));
        }
        let pool = BufferPool::build(storage, &opts, Meta::new(opts.page_size))?;
        pool.storage.write_at(0, &Meta::new(opts.page_size).encode())?;
        pool.storage.sync()?;
        Ok(pool)
    }

    /// Opens an existing database. The file's page size is adopted (the
    /// option's page size only applies to `create`); `max_pages` must
    /// cover the file's page count. Loads the free list.
    pub fn open(storage: Arc<dyn Storage>, opts: PoolOptions) -> Result<BufferPool> {
        let mut prefix = vec![0u8; META_SIZE];
        read_exact(&*storage, PageId::HEADER, 0, &mut prefix)?;
        let page_size = Meta::peek_page_size(&prefix)?;
        let mut image = vec![0u8; page_size];
        read_exact(&*storage, PageId::HEADER, 0, &mut image)?;
        let meta = Meta::decode(&image)?;
        if meta.page_count > opts.max_pages {
            return Err(Error::InvalidArgument(format!(
                "file has {} pages, max_pages is {}",
                meta.page_count, opts.max_pages
            )));
        }
        let pool = BufferPool::build(storage, &PoolOptions { page_size, ..opts }, meta.clone())?;
        pool.load_free_list(&meta)?;
        Ok(pool)
    }

    pub(super) fn build(storage: Arc<dyn Storage>, opts: &PoolOptions, meta: Meta) -> Result<BufferPool> {
        let invalid = |what: String| Err(Error::InvalidArgument(what));
        if !page_size_valid(opts.page_size) {
            return invalid(format!("page size {}", opts.page_size));
        }
        if opts.max_pages < 2 || opts.max_pages > MAX_PAGES_LIMIT {
            return invalid(format!("max_pages {} outside 2..={MAX_PAGES_LIMIT}", opts.max_pages));
        }
        let frames_max = opts.pool_bytes / opts.page_size;
        if frames_max < POOL_FRAMES_MIN {
            return invalid(format!("pool of {frames_max} frames, minimum {POOL_FRAMES_MIN}"));
        }
        let max_pages = usize::try_from(opts.max_pages).map_err(|_| Error::InvalidArgument("max_pages".into()))?;
        // One frame per page id: more pages than that are never resident
        // at once, so a loader always finds a frame. Only address space (the
        // same as one page per id); frames are committed and touched when
        // first needed. (Page 0 is never resident, so `u32::MAX` frames
        // cover 2^32 ids.)
        let frame_capacity = max_pages.min(u32::MAX as usize);
        let states = Region::new(max_pages * 16, REGION_GRAIN_STATES)?;
        states.commit(state_words(meta.page_count)?)?;
        #[cfg(feature = "failpoints")]
        let audited = storage.durable_read_at(0, &mut []).is_some();
        let core = Arc::new(PoolCore {
            storage,
            page_size: opts.page_size,
            max_pages: opts.max_pages,
            frames: Frames::new(frame_capacity, opts.page_size, opts.page_size, frames_max * opts.page_size)?,
            states,
            frames_max,
            resident: Resident::default(),
            evicting: RwLock::new(()),
            #[cfg(feature = "failpoints")]
            pass_trace: Mutex::new(Vec::new()),
            #[cfg(feature = "failpoints")]
            stamps: Mutex::new(Default::default()),
            #[cfg(feature = "failpoints")]
            audited,
            free_list_damaged: AtomicU64::new(0),
            page_count: AtomicU64::new(meta.page_count),
            alloc: Mutex::new(Default::default()),
            roots: meta.roots.map(AtomicU64::new),
            log_flush: RwLock::new(no_log_flush()),
            wal: std::sync::OnceLock::new(),
            fpi_horizon: AtomicU64::new(0),
            checkpoint_lock: Mutex::new(()),
            checkpoint_seq: AtomicU64::new(0),
            counters: Counters::default(),
            cleaner: CleanerSignal::default(),
            direct_read: AtomicBool::new(true),
            admission: Admission::new(frames_max),
            space: Default::default(),
        });
        let cleaner = Some(cleaner::spawn(Arc::clone(&core))?);
        Ok(BufferPool { core, cleaner })
    }

    /// Bytes per page.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// Installs the log hook called before any dirty page is written.
    pub fn set_log_flush(&self, hook: LogFlush) {
        *self.log_flush.write() = hook;
    }

    /// Makes the page-table words of ids `0..count` usable: called before
    /// `page_count` is raised to `count` (so any id below the published
    /// count names committed words). Errors: `Io` when the kernel refuses
    /// the commit (the commit limit); `InvalidArgument` past `max_pages`.
    pub(super) fn commit_page_ids(&self, count: u64) -> Result<()> {
        self.states.commit(state_words(count)?)
    }

    /// Number of pages in the file (including the header page and free
    /// pages).
    #[inline]
    pub fn page_count(&self) -> u64 {
        // Acquire: pairs with the Release store in `allocate`, so an id
        // below the count we see was fully handed out.
        self.page_count.load(Ordering::Acquire)
    }

    /// Root slot `slot` (0 = none). Panics if `slot >= ROOT_SLOTS`.
    pub fn root(&self, slot: usize) -> PageId {
        // Acquire: pairs with `set_root`, so the root page's contents,
        // written before it was published, are visible.
        PageId(self.roots[slot].load(Ordering::Acquire))
    }

    /// Sets root slot `slot`: logged when a log is attached (the root page
    /// must be logged first), else persisted by the next `flush`.
    pub fn set_root(&self, slot: usize, pid: PageId) -> Result<()> {
        if self.logging() {
            let mut record = Vec::with_capacity(10);
            crate::page::redo::put_set_root(&mut record, slot as u8, pid.0);
            self.commit_mtr(&record, &[], &[], Some((slot, pid)))?;
            return Ok(());
        }
        self.store_root(slot, pid);
        Ok(())
    }

    /// Stores root slot `slot` in memory.
    pub(super) fn store_root(&self, slot: usize, pid: PageId) {
        assert!(pid.0 < self.page_count(), "root {pid:?} past the end");
        // Release: see `root`.
        self.roots[slot].store(pid.0, Ordering::Release);
    }

    /// Root slot `slot` read as a plain number (a slot may hold a counter,
    /// such as a tree's entry count, instead of a page id).
    pub fn root_value(&self, slot: usize) -> u64 {
        // Relaxed: a number, not a link to page contents.
        self.roots[slot].load(Ordering::Relaxed)
    }

    /// Sets root slot `slot` to a plain number; persisted by `flush`.
    pub fn set_root_value(&self, slot: usize, value: u64) {
        // Relaxed: see `root_value`.
        self.roots[slot].store(value, Ordering::Relaxed);
    }

    /// Raises root slot `slot`, a plain number, to at least `value`
    /// (concurrent raisers keep the largest).
    pub fn raise_root_value(&self, slot: usize, value: u64) {
        // Relaxed: see `root_value`.
        self.roots[slot].fetch_max(value, Ordering::Relaxed);
    }

    /// Counters.
    pub fn stats(&self) -> PoolStats {
        // Relaxed: statistics.
        PoolStats {
            resident: self.resident.len(),
            frames_max: self.frames_max,
            frames_touched: self.frames.touched(),
            loads: self.counters.loads.sum(),
            writes: self.counters.writes.sum(),
            evictions: self.counters.evictions.sum(),
            dirty_evictions: self.counters.dirty_evictions.sum(),
            cleaner_writes: self.counters.cleaner_writes.sum(),
            direct_loads: self.counters.direct_loads.sum(),
            uncached_reads: self.counters.uncached_reads.sum(),
            space_failures: self.space_failures(),
            image_bytes: self.counters.image_bytes.sum(),
            fpi_bytes: self.counters.fpi_bytes.sum(),
        }
    }

    /// Starts an optimistic read of `pid`, loading it if needed; waits
    /// (spin, park) while it is exclusively latched.
    ///
    /// Entry: the caller should hold no latch if the page may need loading
    /// (the load then runs while they are held; it never waits on them).
    /// Exit: no latch held; validate before trusting what was read.
    /// Errors: `Corruption` for an id outside `1..page_count` or a page
    /// that fails verification; I/O errors; a failed eviction write-back.
    #[inline]
    pub fn optimistic(&self, pid: PageId) -> Result<OptimisticGuard<'_>> {
        self.check_pid(pid)?;
        // Before the state word is read: the section covers every frame
        // this guard may reach (`grace.rs`).
        let section = grace::enter();
        loop {
            match self.latch(pid).optimistic() {
                Some(observed) => return Ok(OptimisticGuard::new(self, pid, observed, section)),
                None => self.load(pid)?,
            }
        }
    }

    /// Starts an optimistic read of `pid` if it is resident (`None` if it
    /// is not; nothing is loaded). Waits while it is exclusively latched.
    #[inline(always)]
    pub(super) fn optimistic_resident(&self, pid: PageId) -> Result<Option<OptimisticGuard<'_>>> {
        self.check_pid(pid)?;
        // Before the state word is read, as in `optimistic`.
        let section = grace::enter();
        Ok(self.latch(pid).optimistic().map(|observed| OptimisticGuard::new(self, pid, observed, section)))
    }

    /// Starts an optimistic read of `pid` as the read that observed `word`
    /// ([`OptimisticGuard::word`]), if no writer latched the page since:
    /// the page is then exactly as that read saw it, and this read
    /// validates against `word`. `None` if a writer came in between or the
    /// page was evicted (the caller starts over). Never loads, never waits.
    pub fn optimistic_resume(&self, pid: PageId, word: u64) -> Option<OptimisticGuard<'_>> {
        self.check_pid(pid).ok()?;
        // Before the state word is read, as in `optimistic`.
        let section = grace::enter();
        self.latch(pid).still(word).then(|| OptimisticGuard::new(self, pid, word, section))
    }

    /// Takes the shared latch on `pid`, loading it if needed. Entry and
    /// errors as for [`BufferPool::optimistic`]. Exit: shared latch held.
    pub fn shared(&self, pid: PageId) -> Result<SharedGuard<'_>> {
        self.check_pid(pid)?;
        while !self.latch(pid).lock_shared() {
            self.load(pid)?;
        }
        Ok(SharedGuard::new(self, pid))
    }

    /// Takes the exclusive latch on `pid`, loading it if needed. Entry and
    /// errors as for [`BufferPool::optimistic`]. Exit: exclusive latch held.
    pub fn exclusive(&self, pid: PageId) -> Result<ExclusiveGuard<'_>> {
        self.check_pid(pid)?;
        while !self.latch(pid).lock_exclusive() {
            self.load(pid)?;
        }
        Ok(ExclusiveGuard::new(self, pid, false))
    }

    #[inline]
    fn check_pid(&self, pid: PageId) -> Result<()> {
        let count = self.page_count();
        if pid.0 == 0 || pid.0 >= count {
            return Err(Error::corruption(pid, format!("dangling link: no page {pid} among 1..{count}")));
        }
        Ok(())
    }
}

impl PoolCore {
    /// The frame of `pid` (any id below `page_count`): stable under a
    /// latch on `pid`; for an optimistic reader possibly another page's
    /// frame (validation then fails), never out of the committed array.
    #[inline]
    pub(super) fn frame(&self, pid: PageId) -> &[crate::sync::AtomicU64] {
        // Acquire: pairs with the Release store in `install_frame`, so even
        // a reader that did not synchronize with the page's latch (a stale
        // optimistic read, which validation then fails) sees the commit of
        // the frame it names (`frames.rs`). Under a latch the latch's
        // Acquire already ordered the store; every value ever stored is a
        // committed index.
        let index = self.frame_word(pid).load(Ordering::Acquire);
        self.frames.frame(FrameIndex(index as u32))
    }

    /// The address range of the page table's mapping (tests of its
    /// commit charge).
    #[cfg(test)]
    pub(super) fn states_address_range(&self) -> std::ops::Range<usize> {
        self.states.address_range()
    }

    /// Whether `pid` is resident (tests of other layers).
    #[cfg(test)]
    pub(crate) fn is_resident(&self, pid: PageId) -> bool {
        self.latch(pid).is_resident()
    }

    /// Holds the background cleaner (tests that must know what is on
    /// storage).
    #[cfg(test)]
    pub(crate) fn pause_cleaner(&self, paused: bool) {
        self.cleaner.set_paused(paused);
    }

    /// Whether the pool is full: within one eviction batch of its budget
    /// (eviction frees a batch at a time, so a full pool hovers there).
    pub(super) fn is_full(&self) -> bool {
        self.resident.len() + self.evict_batch_size() >= self.frames_max
    }

    /// The latch of `pid` (any id below `page_count`, or below it once: the
    /// words stay committed).
    #[inline]
    pub(super) fn latch(&self, pid: PageId) -> Latch<'_> {
        Latch::new(&self.states.words(pid.0 as usize * 2, 1)[0])
    }

    /// Hints that the state word of page `link` will be read soon. Any
    /// value is accepted (a link read by an optimistic reader may be stale
    /// or damaged); one past the committed page table is ignored.
    #[inline]
    pub(crate) fn prefetch_state(&self, link: u64) {
        if link < self.max_pages
            && let Some(word) = self.states.word_if_committed(link as usize * 2)
        {
            crate::sync::prefetch(word);
        }
    }

    /// The page-table word of `pid`: the frame it is in while resident.
    #[inline]
    fn frame_word(&self, pid: PageId) -> &AtomicU64 {
        &self.states.words(pid.0 as usize * 2 + 1, 1)[0]
    }

    /// Gives a frame to `pid`, which the caller is making resident, and
    /// counts it resident. Entry: exclusive latch on `pid`, which is not
    /// resident (taken by `try_lock_evicted`). Exit: same, `frame(pid)` is
    /// the page's (old contents); on error the latch is released, the page
    /// still not resident. Errors: `Io` when a new frame's memory cannot be
    /// committed (`frames.rs`).
    pub(super) fn install(&self, pid: PageId) -> Result<()> {
        match self.take_frame() {
            Ok((index, _)) => {
                self.install_frame(pid, index);
                Ok(())
            }
            Err(error) => {
                self.latch(pid).unlock_evicted();
                Err(error)
            }
        }
    }

    /// A free frame and its grace tag. The array has a frame per page id,
    /// so one is free unless evictors hold frames of pages that were
    /// evicted and are being loaded again; those frames come back without
    /// waiting on anything. Errors: `Io` when the kernel refuses to commit
    /// a new frame's memory.
    fn take_frame(&self) -> Result<(FrameIndex, u64)> {
        loop {
            if let Some(taken) = self.frames.take()? {
                return Ok(taken);
            }
            std::thread::yield_now();
        }
    }

    /// Gives frame `index` (taken by the caller) to `pid` and counts the
    /// page resident. Entry: exclusive latch on `pid`, which is not
    /// resident. Exit: same, `frame(pid)` is `index`.
    fn install_frame(&self, pid: PageId, index: FrameIndex) {
        // Release: pairs with the Acquire in `frame` (module doc); readers
        // under a latch are ordered by our exclusive latch anyway.
        self.frame_word(pid).store(u64::from(index.0), Ordering::Release);
        self.resident.insert(pid);
    }

    /// The frame of `pid`, which the caller is evicting. Entry: exclusive
    /// latch on `pid`, resident.
    pub(super) fn frame_index(&self, pid: PageId) -> FrameIndex {
        // Relaxed: see `frame`.
        FrameIndex(self.frame_word(pid).load(Ordering::Relaxed) as u32)
    }
}

impl BufferPool {
    /// Loads `pid` if it is not resident and no one else is loading it.
    /// Returns `Ok` also when another thread won the race; the caller
    /// retries its latch. Entry: no latch on `pid`. Exit: none.
    pub(super) fn load(&self, pid: PageId) -> Result<()> {
        self.ensure_budget()?;
        let latch = self.latch(pid);
        if !latch.try_lock_evicted() {
            return Ok(());
        }
        let (index, tag) = match self.take_frame() {
            Ok(taken) => taken,
            Err(error) => {
                latch.unlock_evicted();
                return Err(error);
            }
        };
        // Relaxed: a setting; either way is sound.
        let want_direct = self.direct_read.load(Ordering::Relaxed);
        let direct = want_direct && grace::is_safe(tag);
        let read = if direct {
            // SAFETY: we took the frame from the free list, so no resident
            // page names it; its tag is safe, so every read section that
            // could have found it through its previous page has ended
            // (`grace.rs`); the page it will hold is `pid`, whose exclusive
            // latch we hold, so no reader reaches it that way either. The
            // slice dies with this statement.
            let bytes = unsafe { self.frames.frame_bytes_mut(index) };
            self.read_page(pid, bytes)
        } else {
            with_scratch(&IMAGE, |image| {
                image.resize(self.page_size, 0);
                self.read_page(pid, image)?;
                AtomicPageMut::new(self.frames.frame(index)).copy_from(image);
                Ok(())
            })
        };
        if let Err(error) = read {
            // Unused: back with its tag (no reader reached it since).
            self.frames.put(&[index], tag);
            latch.unlock_evicted();
            return Err(error);
        }
        self.install_frame(pid, index);
        self.counters.loads.add(1);
        if direct {
            self.counters.direct_loads.add(1);
        }
        latch.unlock_exclusive(false);
        LAST_LOADED.set(pid.0);
        if want_direct && !direct {
            // The frames freed lately are not safe yet: move the grace
            // period on (finishes once the sections it waits for ended).
            grace::try_advance();
        }
        Ok(())
    }

    /// Makes `pid` the clock's next eviction candidate (MARKED) if this
    /// thread's last load, since the last call, was of it. A scan calls it
    /// for each leaf it read: through more data than memory it brings each
    /// leaf in once, and marked, those leave before the pages reads come
    /// back to (any access unmarks a page again, as usual; a page the scan
    /// found resident keeps its state). Measured in `docs/BENCHMARKS.md`,
    /// "Stop 19".
    pub(crate) fn cool_if_loaded_here(&self, pid: PageId) {
        if LAST_LOADED.replace(0) == pid.0 {
            self.latch(pid).try_mark();
        }
    }

    /// The latch word of `pid`, read without touching the page (tests).
    #[cfg(test)]
    pub(crate) fn peek_state(&self, pid: PageId) -> u64 {
        self.latch(pid).peek()
    }

    /// Forgets this thread's last load, so that only loads after this
    /// count for [`BufferPool::cool_if_loaded_here`] (a scan calls it as a
    /// batch begins: a point read's load of the leaf it starts at is not
    /// the scan's).
    pub(crate) fn forget_last_load(&self) {
        LAST_LOADED.set(0);
    }

    /// Whether loads `pread` straight into safe frames: the setting below
    /// is on and this kernel offers `membarrier` (`grace.rs`).
    pub fn direct_read_active(&self) -> bool {
        // Relaxed: a setting.
        self.direct_read.load(Ordering::Relaxed) && grace::active()
    }

    /// Turns `pread` straight into safe frames on or off (on by default
    /// where `membarrier` works; off, every load reads into a buffer and
    /// copies it into the frame). For measurements.
    pub fn set_direct_read(&self, on: bool) {
        // Relaxed: a setting.
        self.direct_read.store(on, Ordering::Relaxed);
    }
}

impl PoolCore {
    /// Reads and verifies page `pid` from storage into `image`.
    pub(super) fn read_page(&self, pid: PageId, image: &mut [u8]) -> Result<()> {
        read_exact(&*self.storage, pid, pid.0 * self.page_size as u64, image)?;
        header::verify(image, pid)?;
        Ok(())
    }

    /// Writes the frame of `pid` to storage after the log is durable up to
    /// its LSN. Entry: shared or exclusive latch on `pid` (the frame is
    /// stable). Exit: same; the caller clears the dirty bit on `Ok`.
    pub(super) fn write_back(&self, pid: PageId) -> Result<()> {
        with_scratch(&WRITE_IMAGE, |image| {
            image.resize(self.page_size, 0);
            AtomicPage::new(self.frame(pid)).copy_to(image);
            header::seal(image);
            let hook = self.log_flush_hook();
            hook(header::lsn(image.as_slice()))?;
            let written = self.storage.write_at(pid.0 * self.page_size as u64, image);
            match (&written, self.wal.get()) {
                // No space: the page stays dirty and is written again
                // later; commits wait for that (`space.rs`).
                (Err(error), _) if super::space::is_space_error(error) => self.note_space_failure(pid, error),
                // Any other failed write: with a log the database stops
                // taking writes (reopening recovers the page from the log).
                (Err(error), Some(wal)) => wal.poison(error),
                _ => {}
            }
            written
        })?;
        self.counters.writes.add(1);
        Ok(())
    }

    /// The current log hook.
    pub(super) fn log_flush_hook(&self) -> LogFlush {
        self.log_flush.read().clone()
    }
}

/// The page-table words of ids `0..count` (two per id).
fn state_words(count: u64) -> Result<usize> {
    usize::try_from(count)
        .ok()
        .and_then(|count| count.checked_mul(2))
        .ok_or_else(|| Error::InvalidArgument(format!("{count} page ids")))
}

/// Reads exactly `buf.len()` bytes; a short file is corruption of `pid`.
fn read_exact(storage: &dyn Storage, pid: PageId, offset: u64, buf: &mut [u8]) -> Result<()> {
    match storage.read_at(offset, buf) {
        Err(Error::Io(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(Error::corruption(pid, "page lies past the end of the file"))
        }
        other => other,
    }
}
