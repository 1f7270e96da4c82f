//! Unit tests of the pool: single-threaded behaviour of loading, eviction,
//! allocation, persistence and error paths. Concurrency is tested in
//! `tests/{loom_latch,latch_stress,pool_stress,alloc_stress}.rs`.

use super::latch::{EXCLUSIVE, Latch, MARKED, UNLOCKED, state};
use super::*;
use crate::ids::{Lsn, PageId};
use crate::io::{MemStorage, Storage};
use crate::page::bytes::{PageBuf, PageBufMut};
use crate::page::header::{self, PageType};
use crate::sync::{Arc, AtomicBool, AtomicU64, Mutex, Ordering};
use crate::{Error, Result};

fn opts(frames: usize) -> PoolOptions {
    PoolOptions { page_size: 512, pool_bytes: frames * 512, max_pages: 4096 }
}

/// MemStorage whose writes fail while `fail` is set.
#[derive(Default)]
struct Flaky {
    inner: MemStorage,
    fail: AtomicBool,
}

impl Storage for Flaky {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        if self.fail.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("injected").into());
        }
        self.inner.write_at(offset, buf)
    }
    fn sync(&self) -> Result<()> {
        self.inner.sync()
    }
    fn len(&self) -> Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> Result<()> {
        self.inner.set_len(len)
    }
}

pub(super) fn new_leaf(pool: &BufferPool, tag: u64) -> PageId {
    let mut page = pool.allocate().unwrap();
    let pid = page.pid();
    let mut frame = page.page_mut();
    header::init(&mut frame, pid, PageType::Leaf, 0);
    frame.write_u64(100, tag);
    pid
}

/// A pool of `frames` frames on memory with its cleaner paused (tests that
/// need to know who writes what).
fn paused_pool(frames: usize) -> BufferPool {
    let pool = BufferPool::create(Arc::new(MemStorage::new()), opts(frames)).unwrap();
    pool.cleaner.set_paused(true);
    pool
}

#[test]
fn latch_state_machine() {
    let word = AtomicU64::new(UNLOCKED);
    let latch = Latch::new(&word);
    let seen = latch.optimistic().unwrap();
    assert!(latch.lock_shared() && latch.lock_shared());
    assert!(latch.validate(seen), "shared holders do not invalidate");
    assert!(!latch.try_upgrade(seen), "no upgrade while shared is held");
    latch.unlock_shared();
    latch.unlock_shared();
    assert!(latch.try_upgrade(seen));
    assert_eq!(state(latch.peek()), EXCLUSIVE);
    assert!(!latch.validate(seen));
    latch.unlock_exclusive(true);
    assert!(!latch.validate(seen), "version bumped");
    assert!(latch.is_dirty());
    assert!(latch.try_mark());
    assert_eq!(state(latch.peek()), MARKED);
    let again = latch.optimistic().unwrap();
    assert_eq!(state(latch.peek()), UNLOCKED, "access resets the mark");
    assert!(latch.validate(again));
    assert!(latch.lock_exclusive());
    latch.unlock_evicted();
    assert!(latch.optimistic().is_none() && !latch.lock_shared() && !latch.lock_exclusive());
    assert!(!latch.is_dirty());
}

#[test]
fn create_write_evict_reload_reopen() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let pool = BufferPool::create(storage.clone(), opts(16)).unwrap();
    let pids: Vec<PageId> = (0..200).map(|tag| new_leaf(&pool, tag)).collect();
    assert!(pool.stats().evictions > 0 && pool.stats().resident <= 16 + 1);
    for (tag, &pid) in pids.iter().enumerate() {
        let guard = pool.optimistic(pid).unwrap();
        let read = guard.page().read_u64(100);
        guard.validate().unwrap();
        assert_eq!(read, tag as u64);
    }
    pool.set_root(2, pids[7]).unwrap();
    pool.flush().unwrap();
    drop(pool);
    let pool = BufferPool::open(storage, PoolOptions { page_size: 4096, ..opts(16) }).unwrap();
    assert_eq!(pool.page_size(), 512, "file's page size adopted");
    assert_eq!(pool.root(2), pids[7]);
    assert_eq!(pool.page_count(), 201);
    for (tag, &pid) in pids.iter().enumerate() {
        assert_eq!(pool.shared(pid).unwrap().page().read_u64(100), tag as u64);
    }
}

#[test]
fn bad_ids_and_corrupt_pages_are_errors() {
    let storage = Arc::new(MemStorage::new());
    let pool = BufferPool::create(storage.clone(), opts(16)).unwrap();
    let pid = new_leaf(&pool, 1);
    assert!(matches!(pool.optimistic(PageId(0)), Err(Error::Corruption { .. })));
    assert!(matches!(pool.exclusive(PageId(99)), Err(Error::Corruption { page: PageId(99), .. })));
    pool.flush().unwrap();
    drop(pool);
    // Flip a byte of the page on disk.
    let mut byte = [0u8; 1];
    storage.read_at(512 + 200, &mut byte).unwrap();
    storage.write_at(512 + 200, &[byte[0] ^ 1]).unwrap();
    let pool = BufferPool::open(storage, opts(16)).unwrap();
    assert!(matches!(pool.shared(pid), Err(Error::Corruption { page, .. }) if page == pid));
}

#[test]
fn database_full_and_bad_options() {
    let pool = BufferPool::create(Arc::new(MemStorage::new()), PoolOptions { max_pages: 3, ..opts(16) }).unwrap();
    let _a = pool.allocate().unwrap();
    let _b = pool.allocate().unwrap();
    assert!(matches!(pool.allocate(), Err(Error::DatabaseFull { pages: 3 })));
    assert!(BufferPool::create(Arc::new(MemStorage::new()), opts(3)).is_err(), "too few frames");
    let bad_size = PoolOptions { page_size: 1000, ..opts(16) };
    assert!(BufferPool::create(Arc::new(MemStorage::new()), bad_size).is_err());
    assert!(BufferPool::open(Arc::new(MemStorage::new()), opts(16)).is_err(), "empty file");
}

#[test]
fn log_hook_runs_before_write_and_errors_are_returned() {
    let storage = Arc::new(Flaky::default());
    let pool = BufferPool::create(storage.clone(), opts(16)).unwrap();
    let flushed = Arc::new(Mutex::new(Vec::new()));
    let seen = flushed.clone();
    pool.set_log_flush(Arc::new(move |lsn| {
        seen.lock().push(lsn);
        Ok(())
    }));
    let pid = new_leaf(&pool, 5);
    header::set_lsn(&mut pool.exclusive(pid).unwrap().page_mut(), Lsn(77));
    pool.flush().unwrap();
    assert!(flushed.lock().contains(&Lsn(77)));
    new_leaf(&pool, 6);
    storage.fail.store(true, Ordering::Relaxed);
    assert!(matches!(pool.flush(), Err(Error::Io(_))), "flush write failure returned");
    // Eviction write-back failures surface too, and pages stay intact.
    let err = (0..100).map(|tag| pool.allocate().map(|mut g| g.page_mut().write_u64(100, tag))).find(Result::is_err);
    assert!(matches!(err, Some(Err(Error::Io(_)))));
    storage.fail.store(false, Ordering::Relaxed);
    pool.flush().unwrap();
    pool.set_log_flush(Arc::new(|_| Err(Error::Poisoned)));
    new_leaf(&pool, 8);
    assert!(matches!(pool.flush(), Err(Error::Poisoned)), "log hook error stops the write");
}

#[test]
fn free_list_reuse_and_persistence() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let pool = BufferPool::create(storage.clone(), opts(16)).unwrap();
    let pids: Vec<PageId> = (0..300).map(|tag| new_leaf(&pool, tag)).collect();
    for &pid in &pids[10..250] {
        pool.free(pool.exclusive(pid).unwrap());
    }
    let count = pool.page_count();
    let reused = pool.allocate().unwrap().pid();
    assert!(pids[10..250].contains(&reused), "free page reused before growth");
    assert_eq!(pool.page_count(), count);
    pool.flush().unwrap();
    let mut free = pool.free_pages();
    drop(pool);
    let pool = BufferPool::open(storage, opts(16)).unwrap();
    let mut reopened = pool.free_pages();
    free.sort();
    reopened.sort();
    assert_eq!(free, reopened);
    assert_eq!(pool.shared(pids[5]).unwrap().page().read_u64(100), 5);
}

/// MemStorage whose first write at `gate` blocks until `open` is called.
struct Gate {
    inner: MemStorage,
    gate: AtomicU64,
    entered: AtomicBool,
    opened: AtomicBool,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            inner: MemStorage::new(),
            gate: AtomicU64::new(u64::MAX),
            entered: AtomicBool::new(false),
            opened: AtomicBool::new(false),
        }
    }
}

impl Gate {
    fn arm(&self, pid: PageId) {
        self.gate.store(pid.0 * 512, Ordering::SeqCst);
    }
    fn wait_entered(&self) {
        while !self.entered.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
    }
    fn open(&self) {
        self.opened.store(true, Ordering::SeqCst);
    }
}

impl Storage for Gate {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        if self.gate.compare_exchange(offset, u64::MAX, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            self.entered.store(true, Ordering::SeqCst);
            while !self.opened.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        self.inner.write_at(offset, buf)
    }
    fn sync(&self) -> Result<()> {
        self.inner.sync()
    }
    fn len(&self) -> Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> Result<()> {
        self.inner.set_len(len)
    }
}

/// Allocates enough fresh pages to evict every page resident before.
fn churn(pool: &BufferPool) {
    for tag in 0..40 {
        new_leaf(pool, 1000 + tag);
    }
}

fn tag_of(pool: &BufferPool, pid: PageId) -> u64 {
    pool.shared(pid).unwrap().page().read_u64(100)
}

/// A 16-frame pool on a `Gate`, the cleaner paused, one dirty leaf (tag 1)
/// whose next write to storage the gate holds.
fn gated_leaf() -> (Arc<Gate>, BufferPool, PageId) {
    let storage = Arc::new(Gate::default());
    let pool = BufferPool::create(storage.clone(), opts(16)).unwrap();
    pool.cleaner.set_paused(true);
    let pid = new_leaf(&pool, 1);
    storage.arm(pid);
    (storage, pool, pid)
}

/// A free page still resident and dirty is written back by the cleaner
/// (shared latch, held across the `pwrite`) just as an allocation pops it
/// off the free list: `lock_fresh` must wait for the write-back, not take
/// the latched page for one in use (the free list and the tree disagree:
/// `Corruption`, and writes refused) nor hand out a page someone holds.
/// Mutation that fails it: `lock_fresh` giving up at its first failed
/// try-upgrade.
#[test]
fn an_allocation_waits_for_the_write_back_of_the_free_page_it_pops() {
    let (storage, pool, pid) = gated_leaf();
    pool.free(pool.exclusive(pid).unwrap());
    assert!(pool.latch(pid).is_dirty() && pool.latch(pid).is_resident(), "the freed page is resident and dirty");
    std::thread::scope(|scope| {
        let cleaner = scope.spawn(|| pool.clean_page(pid).unwrap());
        storage.wait_entered();
        let allocation = scope.spawn(|| pool.allocate().map(|guard| guard.pid()));
        std::thread::sleep(std::time::Duration::from_millis(50));
        let early = allocation.is_finished();
        storage.open();
        assert!(!early, "the allocation returned while the page's write-back held it");
        assert!(cleaner.join().unwrap(), "the cleaner wrote the page");
        match allocation.join().unwrap() {
            Ok(got) => assert_eq!(got, pid, "the allocation took another page than the one it popped"),
            Err(error) => panic!("allocating the free page under a write-back: {error}"),
        }
    });
    pool.check_poisoned().unwrap();
}

#[test]
fn a_page_changed_while_the_cleaner_writes_it_stays_dirty() {
    let (storage, pool, pid) = gated_leaf();
    std::thread::scope(|scope| {
        let cleaner = scope.spawn(|| pool.clean_page(pid).unwrap());
        storage.wait_entered();
        let writer = scope.spawn(|| pool.exclusive(pid).unwrap().page_mut().write_u64(100, 2));
        std::thread::sleep(std::time::Duration::from_millis(50));
        let overtaken = writer.is_finished();
        storage.open();
        assert!(!overtaken, "a writer latched the page while its write-back was in flight");
        assert!(cleaner.join().unwrap(), "the cleaner wrote the page");
        writer.join().unwrap();
    });
    assert!(pool.latch(pid).is_dirty(), "the change made after the write-back was marked clean");
    churn(&pool);
    assert_eq!(tag_of(&pool, pid), 2, "the change survived eviction");
}

/// As the cleaner's, `flush`'s write-back holds a shared latch from its
/// copy of the frame until it has cleared DIRTY: a writer that wants the
/// page meanwhile waits, and its change stays dirty and survives. (Fails
/// if the write-back pass does not latch the page: the writer changes it
/// during the write, and the pass then clears the writer's DIRTY.)
#[test]
fn a_page_changed_while_flush_writes_it_stays_dirty() {
    let (storage, pool, pid) = gated_leaf();
    std::thread::scope(|scope| {
        let flush = scope.spawn(|| pool.flush().unwrap());
        storage.wait_entered();
        let writer = scope.spawn(|| pool.exclusive(pid).unwrap().page_mut().write_u64(100, 2));
        std::thread::sleep(std::time::Duration::from_millis(50));
        let overtaken = writer.is_finished();
        storage.open();
        flush.join().unwrap();
        writer.join().unwrap();
        assert!(!overtaken, "a writer latched the page while flush wrote it");
    });
    assert!(pool.latch(pid).is_dirty(), "the change made after the write-back was marked clean");
    churn(&pool);
    assert_eq!(tag_of(&pool, pid), 2, "the change survived eviction");
}

#[test]
fn a_page_is_not_evicted_while_its_write_back_is_in_flight() {
    let (storage, pool, pid) = gated_leaf();
    std::thread::scope(|scope| {
        let cleaner = scope.spawn(|| pool.clean_page(pid).unwrap());
        storage.wait_entered();
        // A writer queues for the page; evictions run meanwhile.
        let writer = scope.spawn(|| pool.exclusive(pid).unwrap().page_mut().write_u64(100, 2));
        churn(&pool);
        let evicted = state(pool.latch(pid).peek()) == super::latch::EVICTED;
        storage.open();
        assert!(!evicted, "evicted while the cleaner wrote it");
        cleaner.join().unwrap();
        writer.join().unwrap();
    });
    // The cleaner's (older) image must not land after the newer one.
    churn(&pool);
    assert_eq!(tag_of(&pool, pid), 2);
    assert!(pool.stats().evictions > 40);
}

/// An evictor writes a dirty victim back under its exclusive latch and
/// only then makes the page EVICTED: a writer that wants the page while
/// the write is in flight waits, then loads the image just written, so
/// both the change being written (byte 200) and the writer's (byte 100)
/// survive. (Fails if the evictor publishes EVICTED before its write
/// lands: the writer loads the older image from storage and the change in
/// flight is lost.)
#[test]
fn a_page_wanted_while_its_eviction_writes_it_waits_and_loses_nothing() {
    let (pool, pid, (), overtaken) =
        beside_a_held_eviction_write(|pool, pid| pool.exclusive(pid).unwrap().page_mut().write_u64(100, 2));
    assert!(!overtaken, "a writer latched the page while its eviction wrote it");
    churn(&pool);
    let page = pool.shared(pid).unwrap();
    assert_eq!((page.page().read_u64(100), page.page().read_u64(200)), (2, 5), "a change was lost");
}

/// An uncached point read relies on the evictor writing a dirty victim
/// before it makes the page EVICTED (`uncached.rs`: storage is the page's
/// image only under an EVICTED word). A point read of a page whose
/// eviction's write is in flight waits for the eviction, then reads the
/// image written, from storage (a full pool: a copy). (Fails if the
/// evictor publishes EVICTED before its write lands: the copy of the older
/// image validates, nothing moves the word on, and its value is returned.)
#[test]
fn a_point_read_of_a_page_whose_eviction_is_writing_it_reads_the_image_written() {
    let (_, _, read, _) = beside_a_held_eviction_write(|pool, pid| {
        loop {
            let (seen, uncached, valid) = match pool.optimistic_point(pid).unwrap() {
                PointRead::Resident(guard) => (guard.page().read_u64(200), false, guard.validate().is_ok()),
                PointRead::Uncached(guard) => (guard.page().read_u64(200), true, guard.validate().is_ok()),
            };
            if valid {
                return (seen, uncached);
            }
        }
    });
    assert_eq!(read, (5, true), "the image the eviction was writing (read uncached)");
}

/// A full pool whose dirty leaf (byte 200 changed to 5) `churn` evicts,
/// its write-back held at the storage gate while `during` runs on a thread
/// of its own for 50 ms; then the write lands. Returns the pool, the leaf,
/// what `during` returned and whether it had returned before the write
/// landed.
fn beside_a_held_eviction_write<T: Send>(
    during: impl FnOnce(&BufferPool, PageId) -> T + Send,
) -> (BufferPool, PageId, T, bool) {
    let (storage, pool, pid) = gated_leaf();
    storage.gate.store(u64::MAX, Ordering::SeqCst);
    pool.flush().unwrap();
    pool.exclusive(pid).unwrap().page_mut().write_u64(200, 5);
    storage.arm(pid);
    let (out, early) = std::thread::scope(|scope| {
        let evictor = scope.spawn(|| churn(&pool));
        storage.wait_entered();
        let other = scope.spawn(|| during(&pool, pid));
        std::thread::sleep(std::time::Duration::from_millis(50));
        let early = other.is_finished();
        storage.open();
        evictor.join().unwrap();
        (other.join().unwrap(), early)
    });
    (pool, pid, out, early)
}

/// An eviction takes its victims out of the resident list before it
/// writes them: a write-back pass (a checkpoint's, before its sync) that
/// starts meanwhile must wait for those writes, or a checkpoint could
/// declare a page durable whose write lands after its sync.
#[test]
fn write_dirty_waits_for_the_write_backs_of_evictions_in_flight() {
    let (storage, pool, pid) = gated_leaf();
    std::thread::scope(|scope| {
        let evictor = scope.spawn(|| churn(&pool));
        storage.wait_entered();
        let pass = scope.spawn(|| pool.write_dirty().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(50));
        let finished = pass.is_finished();
        storage.open();
        assert!(!finished, "the write-back pass returned while an evicted page's write was in flight");
        evictor.join().unwrap();
        pass.join().unwrap();
    });
    assert_eq!(tag_of(&pool, pid), 1);
}

/// The cleaner and a write-back pass may write one page at once (both
/// latches shared, the same image). The pass must not return, and a
/// checkpoint sync after it, while the cleaner's write is in flight: that
/// write would land after the sync, a write of a page whose last change the
/// checkpoint covers, which no full-page image protects if a crash tears
/// it. Mutation that fails it: the cleaner not holding `evicting`.
#[test]
fn write_dirty_waits_for_a_cleaner_write_back_in_flight() {
    let (storage, pool, pid) = gated_leaf();
    std::thread::scope(|scope| {
        let cleaner = scope.spawn(|| pool.clean_page(pid).unwrap());
        storage.wait_entered();
        let pass = scope.spawn(|| pool.write_dirty().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(50));
        let finished = pass.is_finished();
        storage.open();
        assert!(!finished, "the write-back pass returned while the cleaner's write of the same page was in flight");
        assert!(cleaner.join().unwrap(), "the cleaner wrote");
        pass.join().unwrap();
    });
    assert!(!pool.latch(pid).is_dirty());
    assert_eq!(tag_of(&pool, pid), 1);
}

#[test]
fn readers_that_evict_dirty_pages_are_counted_and_the_cleaner_cleans_victims() {
    let pool = paused_pool(16);
    for tag in 0..100 {
        new_leaf(&pool, tag);
    }
    let stats = pool.stats();
    assert_eq!(stats.cleaner_writes, 0);
    assert!(stats.dirty_evictions >= 80, "every victim was dirty: {stats:?}");
    assert_eq!(stats.dirty_evictions, stats.writes, "{stats:?}");
    // Dirty resident pages the clock has marked: the cleaner's work.
    let resident = pool.resident.snapshot();
    for &pid in &resident {
        assert!(pool.latch(pid).is_dirty());
        pool.latch(pid).try_mark();
        assert_eq!(state(pool.latch(pid).peek()), MARKED);
    }
    pool.cleaner.set_paused(false);
    pool.cleaner.request();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while resident.iter().any(|&pid| pool.latch(pid).is_dirty()) {
        assert!(std::time::Instant::now() < deadline, "the cleaner did not clean: {:?}", pool.stats());
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let after = pool.stats();
    assert_eq!(after.cleaner_writes as usize, resident.len(), "{after:?}");
    assert!(resident.iter().all(|&pid| state(pool.latch(pid).peek()) == MARKED), "marks kept");
    // Now eviction finds clean victims: no more dirty evictions.
    pool.optimistic(PageId(1)).unwrap();
    assert_eq!(pool.stats().dirty_evictions, after.dirty_evictions);
}

/// Evictors take clean MARKED pages before dirty ones (which they leave to
/// the cleaner), so a reader that needs a frame does not wait for a write
/// while clean victims exist.
#[test]
fn eviction_passes_dirty_pages_while_clean_ones_are_next() {
    let pool = paused_pool(64);
    let pids: Vec<PageId> = (0..64).map(|tag| new_leaf(&pool, tag)).collect();
    pool.flush().unwrap();
    // Every shard (`pid % 16`) gets clean and dirty pages, alternating in
    // its clock order.
    let dirty: Vec<PageId> = pids.iter().copied().filter(|pid| (pid.0 / 16) % 2 == 1).collect();
    for &pid in &dirty {
        let mut page = pool.exclusive(pid).unwrap();
        page.page_mut().write_u64(200, 7);
    }
    for pid in pool.resident.snapshot() {
        pool.latch(pid).try_mark();
    }
    let before = pool.stats();
    let clean_marked = pids.len() - dirty.len();
    for tag in 0..(clean_marked / 2) as u64 {
        new_leaf(&pool, 1000 + tag);
    }
    let after = pool.stats();
    assert!(after.evictions > before.evictions, "{after:?}");
    assert_eq!(
        after.dirty_evictions, before.dirty_evictions,
        "a dirty page was evicted while clean ones were marked: {after:?}"
    );
    assert!(dirty.iter().all(|&pid| pool.latch(pid).is_resident() && pool.latch(pid).is_dirty()));
    // With nothing clean left, eviction still goes on: it takes dirty pages.
    for tag in 0..64 {
        new_leaf(&pool, 2000 + tag);
    }
    assert!(pool.stats().dirty_evictions > after.dirty_evictions, "{:?}", pool.stats());
}

/// Every write fails (the cleaner's and the evictors') while readers keep
/// loading through a pool whose other half is dirty: the clock passes the
/// dirty pages, the cleaner's writes fail, and when an evictor must take
/// a dirty victim its write fails too. A load then fails with the I/O
/// error or succeeds with the right page; no change is lost or written
/// half, no frame leaks; once writes work again a flush writes every
/// change.
#[test]
fn failing_write_backs_keep_every_change_and_fail_only_loads() {
    let storage = Arc::new(Flaky::default());
    let frames = 64;
    let pool = BufferPool::create(storage.clone(), opts(frames)).unwrap();
    let pids: Vec<PageId> = (0..256).map(|tag| new_leaf(&pool, tag)).collect();
    pool.flush().unwrap();
    // Bring the changed pages in and change them: each is resident and
    // dirty, half the pool.
    let changed: Vec<usize> = (0..pids.len()).step_by(8).collect();
    for &index in &changed {
        pool.exclusive(pids[index]).unwrap().page_mut().write_u64(100, 10_000 + index as u64);
    }
    storage.fail.store(true, Ordering::Relaxed);
    let before = pool.stats();
    let (mut loaded, mut failed) = (0u64, 0u64);
    for _ in 0..20 {
        for (index, &pid) in pids.iter().enumerate() {
            if index % 8 == 0 {
                continue;
            }
            match pool.shared(pid) {
                Ok(guard) => {
                    assert_eq!(guard.page().read_u64(100), index as u64, "page {index}");
                    loaded += 1;
                }
                Err(Error::Io(_)) => failed += 1,
                Err(other) => panic!("page {index}: {other}"),
            }
        }
    }
    let during = pool.stats();
    assert!(loaded > 1000, "the clean half kept loads going: {loaded} loaded, {failed} failed, {during:?}");
    assert!(
        during.dirty_evictions > before.dirty_evictions,
        "no evictor had to take a dirty victim (test needs one): {during:?}"
    );
    assert!(failed > 0, "an evictor's failed write-back was not reported: {during:?}");
    assert!(during.frames_touched <= frames + 8, "failed write-backs leaked frames: {during:?}");
    // A changed page is resident and dirty, or it was written before the
    // writes began to fail and the file holds the change.
    let mut kept_dirty = 0;
    for &index in &changed {
        let latch = pool.latch(pids[index]);
        if latch.is_dirty() {
            assert!(latch.is_resident(), "dirty page {index} not resident");
            kept_dirty += 1;
        } else {
            let mut stored = [0u8; 8];
            storage.inner.read_at(pids[index].0 * 512 + 100, &mut stored).unwrap();
            assert_eq!(u64::from_le_bytes(stored), 10_000 + index as u64, "page {index} clean without its change");
        }
    }
    assert!(kept_dirty > 0, "no change waited for a write that failed (test needs some)");
    storage.fail.store(false, Ordering::Relaxed);
    pool.flush().unwrap();
    let reopened = BufferPool::open(storage.clone(), opts(frames)).unwrap();
    for (index, &pid) in pids.iter().enumerate() {
        let want = if index % 8 == 0 { 10_000 + index as u64 } else { index as u64 };
        assert_eq!(reopened.shared(pid).unwrap().page().read_u64(100), want, "page {index} on disk");
    }
}

/// The cleaner's round takes a share from every shard's hand, not the
/// first shards' dirty pages only (evictors of every shard pass dirty
/// pages and wait for it).
#[test]
fn the_cleaner_takes_dirty_candidates_from_every_shard() {
    let pool = paused_pool(512);
    for tag in 0..400 {
        new_leaf(&pool, tag);
    }
    for pid in pool.resident.snapshot() {
        pool.latch(pid).try_mark();
    }
    let found = pool.resident.dirty_candidates(64, |pid| pool.latch(pid));
    assert_eq!(found.len(), 64);
    let mut per_shard = [0usize; crate::limits::RESIDENT_SHARDS];
    for pid in &found {
        per_shard[(pid.0 % per_shard.len() as u64) as usize] += 1;
    }
    assert!(per_shard.iter().all(|&n| n == 64 / per_shard.len()), "{per_shard:?}");
    assert!(found.windows(2).all(|pair| pair[0] < pair[1]), "in page-id order");
}

/// The cleaner looks only a little way past each hand: a dirty page the
/// hand reaches late is left for later (it would likely be written again
/// before its eviction).
#[test]
fn the_cleaner_leaves_dirty_pages_far_from_the_hand() {
    let pool = paused_pool(512);
    let shards = crate::limits::RESIDENT_SHARDS as u64;
    // 25 pages per shard, in allocation order: the order of its clock,
    // whose hand is at the start (nothing was evicted).
    let pids: Vec<PageId> = (0..400).map(|tag| new_leaf(&pool, tag)).collect();
    pool.flush().unwrap();
    let position = |pid: PageId| pids.iter().filter(|p| p.0 % shards == pid.0 % shards && p.0 < pid.0).count();
    let share = 64 / shards as usize;
    let lookahead = share * crate::limits::CLEANER_LOOKAHEAD;
    let far: Vec<PageId> = pids.iter().copied().filter(|&pid| position(pid) >= lookahead).collect();
    assert!(!far.is_empty());
    for &pid in &far {
        pool.exclusive(pid).unwrap().page_mut().write_u64(200, 1);
    }
    for pid in pool.resident.snapshot() {
        pool.latch(pid).try_mark();
    }
    assert_eq!(pool.resident.dirty_candidates(64, |pid| pool.latch(pid)), vec![]);
    // Dirty pages near the hands are found.
    let near: Vec<PageId> = pids.iter().copied().filter(|&pid| position(pid) == 1).collect();
    for &pid in &near {
        pool.exclusive(pid).unwrap().page_mut().write_u64(200, 1);
        pool.latch(pid).try_mark();
    }
    assert_eq!(pool.resident.dirty_candidates(64, |pid| pool.latch(pid)), near);
}

#[test]
fn frames_are_recycled_before_fresh_ones_are_touched() {
    use super::frames::Frames;
    use crate::ids::FrameIndex;
    let frames = Frames::new(4, 512, 512, 2048).unwrap();
    let taken: Vec<FrameIndex> = (0..4)
        .map(|_| frames.take().unwrap().unwrap())
        .map(|(index, tag)| {
            assert_eq!(tag, 0, "a fresh frame was never read");
            index
        })
        .collect();
    assert_eq!(taken, (0..4).map(FrameIndex).collect::<Vec<_>>());
    assert_eq!(frames.take().unwrap(), None, "every frame in use");
    frames.frame(taken[3])[63].store(7, Ordering::Relaxed);
    frames.put(&taken[2..], 5);
    let again = [frames.take().unwrap().unwrap(), frames.take().unwrap().unwrap()];
    assert!(again.contains(&(taken[2], 5)) && again.contains(&(taken[3], 5)), "{again:?}");
    assert_eq!(frames.touched(), 4);
    assert_eq!(frames.frame(taken[3])[63].load(Ordering::Relaxed), 7, "a frame keeps its memory");
    // A thread with another home shard finds frames put by this one.
    frames.put(&again.map(|(index, _)| index), 6);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let _ = frames.take().unwrap();
            assert!(frames.take().unwrap().is_some() && frames.take().unwrap().is_none());
        });
    });
}

#[test]
fn frames_in_use_stay_within_the_budget_with_data_larger_than_it() {
    let pool = BufferPool::create(Arc::new(MemStorage::new()), opts(32)).unwrap();
    let pids: Vec<PageId> = (0..320).map(|tag| new_leaf(&pool, tag)).collect();
    for round in 0..3 {
        for (tag, &pid) in pids.iter().enumerate().rev() {
            assert_eq!(tag_of(&pool, pid), tag as u64, "round {round}");
        }
    }
    let touched = pool.frames.touched();
    assert!(touched <= 32 + 1, "{touched} frames touched for a budget of 32");
    assert!(pool.stats().evictions >= 320 * 3 - 32, "{:?}", pool.stats());
}

#[test]
fn an_optimistic_reader_of_a_page_whose_frame_was_reused_fails_validation() {
    let pool = paused_pool(16);
    let first = new_leaf(&pool, 1);
    pool.flush().unwrap();
    let guard = pool.optimistic(first).unwrap();
    assert_eq!(guard.page().read_u64(100), 1);
    assert!(guard.validate().is_ok());
    // Push `first` out and fill its frame with other pages.
    for tag in 2..100 {
        new_leaf(&pool, tag);
    }
    assert_eq!(state(pool.latch(first).peek()), super::latch::EVICTED);
    // The guard now reads whatever frame the stale page-table word names
    // (another page's, or a free one): in bounds, and caught below.
    let _ = guard.page().read_u64(100);
    assert_eq!(guard.validate(), Err(Restart), "a reused frame is caught by the version");
    assert_eq!(tag_of(&pool, first), 1, "and the page reloads into some frame");
}

#[test]
fn the_cleaner_does_not_hold_the_latch_while_the_log_hook_waits() {
    let pool = paused_pool(16);
    let pid = new_leaf(&pool, 1);
    header::set_lsn(&mut pool.exclusive(pid).unwrap().page_mut(), Lsn(77));
    let (entered, release) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (seen, gate) = (entered.clone(), release.clone());
    pool.set_log_flush(Arc::new(move |lsn| {
        // The log "syncs" slowly for LSN 77.
        if lsn == Lsn(77) && !gate.load(Ordering::SeqCst) {
            seen.store(true, Ordering::SeqCst);
            while !gate.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        Ok(())
    }));
    std::thread::scope(|scope| {
        let cleaner = scope.spawn(|| pool.clean_page(pid).unwrap());
        while !entered.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let writer = scope.spawn(|| header::set_lsn(&mut pool.exclusive(pid).unwrap().page_mut(), Lsn(78)));
        std::thread::sleep(std::time::Duration::from_millis(50));
        let blocked = !writer.is_finished();
        release.store(true, Ordering::SeqCst);
        assert!(!blocked, "a writer waited for the log hook of the cleaner");
        writer.join().unwrap();
        cleaner.join().unwrap();
    });
    // Whatever the cleaner wrote, the page's last change is durable after
    // a flush, and the hook saw its LSN.
    pool.flush().unwrap();
    assert!(!pool.latch(pid).is_dirty());
}

/// Serialises the grace-period scenarios of this file: an open section
/// of one (each holds one for a while on purpose) stops every advance of
/// the process, so it would hide the frames another one checks are made
/// safe too early. (Other tests of the binary hold sections only briefly,
/// or at a failpoint: a mutation a scenario catches alone may pass while
/// those run.)
fn grace_serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A 256-frame pool (cleaner paused) holding 1,024 flushed leaves tagged
/// with their index, each read once: reading them all recycles every
/// frame about four times.
fn grace_pool() -> (BufferPool, Vec<PageId>) {
    let pool = paused_pool(256);
    let pids: Vec<PageId> = (0..1024).map(|tag| new_leaf(&pool, tag)).collect();
    pool.flush().unwrap();
    read_tags(&pool, &pids, 0);
    (pool, pids)
}

/// Reads every page of `pids` and checks its tag.
fn read_tags(pool: &BufferPool, pids: &[PageId], round: usize) {
    for (tag, &pid) in pids.iter().enumerate() {
        assert_eq!(tag_of(pool, pid), tag as u64, "round {round}");
    }
}

/// Reads every page twice (at least 1,536 loads with `grace_pool`) and
/// checks that no load went straight into a frame; returns the stats after.
fn two_rounds_all_copied(pool: &BufferPool, pids: &[PageId], why: &str) -> PoolStats {
    let before = pool.stats();
    read_tags(pool, pids, 2);
    read_tags(pool, pids, 3);
    let during = pool.stats();
    assert!(during.loads >= before.loads + 2 * 768, "{during:?}");
    assert_eq!(during.direct_loads, before.direct_loads, "{why}");
    during
}

/// Reads every page, round after round, until more than `above` loads in
/// all went straight into frames; fails after 20 s. Other tests' threads
/// of this process hold read sections too, and on a loaded machine one may
/// be preempted inside its section for a while.
fn read_until_direct(pool: &BufferPool, pids: &[PageId], above: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut round = 100;
    while pool.stats().direct_loads <= above && std::time::Instant::now() < deadline {
        read_tags(pool, pids, round);
        round += 1;
    }
    assert!(pool.stats().direct_loads > above, "loads never went straight into frames again: {:?}", pool.stats());
}

/// A thread registers its read slot and opens a section while an advance
/// is about to begin (paused at `grace.advance_begun`, holding the right
/// to advance). The advance must then read the new slot and wait for the
/// section: frames freed while it is open (every frame, tagged with the
/// advance's generation) are never filled by `pread` until it ends.
#[test]
#[cfg(feature = "failpoints")]
fn a_thread_registering_while_an_advance_begins_is_waited_for() {
    use crate::failpoint::Pause;
    let _serial = grace_serial();
    let (pool, pids) = grace_pool();
    if !pool.direct_read_active() {
        return;
    }
    let read_all = |round: usize| read_tags(&pool, &pids, round);
    let pause = Pause::arm_for("grace.advance_begun", |thread| thread.name() == Some("advancer"));
    let parked = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // The advancer: tries until it is the one advancing (other tests'
        // threads advance too), and is held where its advance begins.
        let advancer = std::thread::Builder::new()
            .name("advancer".into())
            .spawn_scoped(scope, || {
                while !parked.load(Ordering::SeqCst) {
                    grace::try_advance();
                    std::thread::yield_now();
                }
            })
            .unwrap();
        assert!(pause.wait_parked(std::time::Duration::from_secs(20)), "the advancer never began an advance");
        parked.store(true, Ordering::SeqCst);
        // A new thread: its first section registers its slot, now.
        let (opened, open) = std::sync::mpsc::channel();
        let (finish, finished) = std::sync::mpsc::channel::<()>();
        let pool = &pool;
        let first = pids[0];
        let reader = scope.spawn(move || {
            let guard = pool.optimistic(first).unwrap();
            opened.send(()).unwrap();
            finished.recv().unwrap();
            drop(guard);
        });
        open.recv().unwrap();
        // Every frame is freed (and tagged) while the section is open.
        read_all(1);
        pause.resume();
        advancer.join().unwrap();
        two_rounds_all_copied(pool, &pids, "read into a frame the new thread's section may read");
        finish.send(()).unwrap();
        reader.join().unwrap();
    });
    // The section ended: loads go straight into frames again.
    read_until_direct(&pool, &pids, pool.stats().direct_loads + 768);
}

#[test]
fn a_frame_an_optimistic_reader_may_still_read_is_not_filled_by_pread() {
    // 256 frames: evictions come in batches of 4, so after the first frame
    // of a batch the rest can be safe (a frame freed by the load that
    // takes it never is: the loader's own section may read it).
    let _serial = grace_serial();
    let (pool, pids) = grace_pool();
    let read_all = |round: usize| read_tags(&pool, &pids, round);
    // An optimistic reader of the first page, its section open from here.
    let guard = pool.optimistic(pids[0]).unwrap();
    assert_eq!(guard.page().read_u64(100), 0);
    // The page is evicted under it; every frame is recycled at least once
    // (1024 pages through 256 frames), each freed after the section began.
    read_all(1);
    assert_eq!(state(pool.latch(pids[0]).peek()), super::latch::EVICTED);
    let horizon = grace::current_generation();
    let during = two_rounds_all_copied(&pool, &pids, "a frame the open section may read was read into");
    assert!(!grace::wait_safe(horizon, std::time::Duration::from_millis(50)), "safe while the section is open");
    assert_eq!(guard.validate(), Err(Restart));
    drop(guard);
    if !pool.direct_read_active() {
        // No membarrier here: every load copies, and that is all to check.
        read_all(4);
        assert_eq!(pool.stats().direct_loads, 0);
        return;
    }
    // The section ended: the frames become safe and loads read into them.
    assert!(grace::wait_safe(horizon, std::time::Duration::from_secs(20)), "other sections of this process ended");
    read_until_direct(&pool, &pids, during.direct_loads + 768);
}

/// Lock coupling nests read sections on one thread (a descent holds the
/// parent's guard while it takes the child's), and only the outermost one
/// is published. An outer optimistic guard stays open while this same
/// thread takes and drops inner guards, each loading its page (every
/// frame recycled, each freed after the outer section began): no frame is
/// filled by `pread` until the outer guard ends. (Fails if an inner
/// guard's end publishes the slot idle: the advances then stop waiting
/// for the outer section, and loads read into frames it may still read.)
#[test]
fn an_inner_guard_ending_does_not_end_the_section_of_an_outer_one() {
    let _serial = grace_serial();
    let (pool, pids) = grace_pool();
    // Every page once through a nested optimistic guard, its tag checked.
    let read_nested = |round: usize| {
        for (tag, &pid) in pids.iter().enumerate() {
            loop {
                let inner = pool.optimistic(pid).unwrap();
                let seen = inner.page().read_u64(100);
                if inner.validate().is_ok() {
                    assert_eq!(seen, tag as u64, "round {round}");
                    break;
                }
            }
        }
    };
    let outer = pool.optimistic(pids[0]).unwrap();
    assert_eq!(outer.page().read_u64(100), 0);
    read_nested(1);
    let horizon = grace::current_generation();
    let before = pool.stats();
    read_nested(2);
    read_nested(3);
    let during = pool.stats();
    assert!(during.loads >= before.loads + 2 * 768, "{during:?}");
    assert_eq!(during.direct_loads, before.direct_loads, "read into a frame the outer section may read");
    assert!(!grace::wait_safe(horizon, std::time::Duration::from_millis(50)), "safe while the outer section is open");
    assert_eq!(outer.validate(), Err(Restart));
    drop(outer);
    if !pool.direct_read_active() {
        return;
    }
    assert!(grace::wait_safe(horizon, std::time::Duration::from_secs(20)), "other sections of this process ended");
    read_until_direct(&pool, &pids, during.direct_loads + 768);
}

/// The WAL rule at each of the pool's three write paths: a dirty page
/// whose LSN the log hook refuses (the log is not durable that far) is
/// not written by `flush`, by the cleaner, or by an evictor that takes it
/// as a victim; each reports the hook's error and the page stays resident
/// and dirty with its change. Once the hook accepts, a flush writes it.
/// (Fails if `write_back` writes before it calls the hook, even if it
/// still returns the hook's error: the storage then holds the change.)
#[test]
fn a_page_whose_lsn_the_log_refuses_is_written_by_no_path_and_stays_dirty() {
    let storage = Arc::new(MemStorage::new());
    let pool = BufferPool::create(storage.clone(), opts(16)).unwrap();
    pool.cleaner.set_paused(true);
    let pid = new_leaf(&pool, 1);
    pool.flush().unwrap();
    let durable = Arc::new(AtomicU64::new(100));
    let refused = Arc::new(AtomicU64::new(0));
    let (limit, count) = (durable.clone(), refused.clone());
    pool.set_log_flush(Arc::new(move |lsn| {
        if lsn.0 <= limit.load(Ordering::SeqCst) {
            return Ok(());
        }
        count.fetch_add(1, Ordering::SeqCst);
        Err(Error::Poisoned)
    }));
    {
        let mut guard = pool.exclusive(pid).unwrap();
        let mut page = guard.page_mut();
        page.write_u64(100, 2);
        header::set_lsn(&mut page, Lsn(150));
    }
    let stored = || {
        let mut bytes = [0u8; 8];
        storage.read_at(pid.0 * 512 + 100, &mut bytes).unwrap();
        u64::from_le_bytes(bytes)
    };
    let still_dirty = |path: &str| {
        assert_eq!(stored(), 1, "{path} wrote a page the log is not durable for");
        assert!(pool.latch(pid).is_resident() && pool.latch(pid).is_dirty(), "{path} lost the change");
        assert_eq!(pool.shared(pid).unwrap().page().read_u64(100), 2, "{path}");
    };
    assert!(matches!(pool.flush(), Err(Error::Poisoned)));
    still_dirty("flush");
    assert!(matches!(pool.clean_page(pid), Err(Error::Poisoned)));
    still_dirty("the cleaner");
    // Evictions: other pages (LSN 0, accepted) cycle through the pool
    // until an evictor has taken the page as a victim and been refused.
    let before = refused.load(Ordering::SeqCst);
    let mut failed = 0;
    for tag in 0..200 {
        if refused.load(Ordering::SeqCst) > before + 2 {
            break;
        }
        match pool.allocate() {
            Ok(mut guard) => guard.page_mut().write_u64(100, 100 + tag),
            Err(error) => {
                assert!(matches!(error, Error::Poisoned), "{error}");
                failed += 1;
            }
        }
    }
    assert!(failed > 0 && refused.load(Ordering::SeqCst) > before, "no evictor took the page: {:?}", pool.stats());
    still_dirty("an eviction");
    durable.store(200, Ordering::SeqCst);
    pool.flush().unwrap();
    assert_eq!(stored(), 2, "the change once the log is durable");
    assert!(!pool.latch(pid).is_dirty());
}
