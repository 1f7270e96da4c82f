//! A full disk under the pool (`space.rs`).

use super::tests::new_leaf;
use super::*;
use crate::ids::PageId;
use crate::io::{MemStorage, Storage};
use crate::page::bytes::{PageBuf, PageBufMut};
use crate::sync::{Arc, AtomicU64, Ordering};
use crate::{Error, Result};

const PAGE: usize = 512;

/// Memory storage that refuses writes past `capacity` bytes with `ENOSPC`.
struct Small {
    inner: MemStorage,
    capacity: AtomicU64,
}

impl Small {
    fn new() -> Small {
        Small { inner: MemStorage::new(), capacity: AtomicU64::new(u64::MAX) }
    }

    /// The disk is full at the file's present length.
    fn fill(&self) {
        self.capacity.store(self.inner.len().unwrap(), Ordering::SeqCst);
    }

    fn free(&self) {
        self.capacity.store(u64::MAX, Ordering::SeqCst);
    }
}

impl Storage for Small {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        if offset + buf.len() as u64 > self.capacity.load(Ordering::SeqCst) {
            return Err(std::io::Error::from(std::io::ErrorKind::StorageFull).into());
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

fn pool(storage: &Arc<Small>, frames: usize) -> BufferPool {
    let opts = PoolOptions { page_size: PAGE, pool_bytes: frames * PAGE, max_pages: 4096 };
    let pool = BufferPool::create(storage.clone(), opts).unwrap();
    // The tests decide who writes what.
    pool.cleaner.set_paused(true);
    pool
}

#[test]
fn a_write_back_that_fails_for_want_of_space_keeps_its_page_dirty_until_a_pass_writes_every_page() {
    let storage = Arc::new(Small::new());
    let pool = pool(&storage, 64);
    let old: Vec<PageId> = (0..8).map(|tag| new_leaf(&pool, tag)).collect();
    pool.flush().unwrap();
    storage.fill();
    // New pages lie past the end of the full disk; a changed old page
    // can still be written in place.
    let new: Vec<PageId> = (100..108).map(|tag| new_leaf(&pool, tag)).collect();
    pool.exclusive(old[3]).unwrap().page_mut().write_u64(100, 33);
    pool.check_space().unwrap();
    let error = pool.write_dirty().unwrap_err();
    assert!(space::is_space_error(&error), "{error:?}");
    assert!(pool.disk_full());
    assert!(matches!(pool.check_space(), Err(Error::DiskFull(_))), "{:?}", pool.check_space());
    assert!(pool.stats().space_failures >= 1);
    for &pid in &new {
        assert!(pool.latch(pid).is_dirty(), "page {} lost its dirty bit on a failed write", pid.0);
    }
    // A retry on the still full disk fails and changes nothing.
    assert!(!pool.retry_space());
    assert!(pool.disk_full());
    storage.free();
    assert!(pool.retry_space(), "the disk has room again");
    assert!(!pool.disk_full());
    pool.check_space().unwrap();
    for &pid in new.iter().chain(&old) {
        assert!(!pool.latch(pid).is_dirty(), "page {} still dirty after a complete pass", pid.0);
    }
    // The header (page count) is written by a flush.
    pool.flush().unwrap();
    let reopened =
        BufferPool::open(storage.clone(), PoolOptions { page_size: PAGE, pool_bytes: 64 * PAGE, max_pages: 4096 });
    let reopened = reopened.unwrap();
    for (tag, &pid) in (100..).zip(&new) {
        assert_eq!(reopened.shared(pid).unwrap().page().read_u64(100), tag);
    }
    assert_eq!(reopened.shared(old[3]).unwrap().page().read_u64(100), 33);
}

#[test]
fn a_failure_counted_during_a_pass_keeps_the_disk_full_after_it() {
    let storage = Arc::new(Small::new());
    let pool = pool(&storage, 64);
    let error: Error = std::io::Error::from(std::io::ErrorKind::StorageFull).into();
    pool.note_space_failure(PageId(5), &error);
    assert!(pool.disk_full());
    // A pass begins; a write-back fails while it runs (a page the pass
    // wrote was changed and failed again, or one it never saw); the pass
    // ends having written every page it saw dirty.
    let seen = pool.begin_space_pass();
    pool.note_space_failure(PageId(6), &error);
    pool.end_space_pass(seen);
    assert!(pool.disk_full(), "a pass cleared a failure it did not see written");
    let seen = pool.begin_space_pass();
    pool.end_space_pass(seen);
    assert!(!pool.disk_full());
    // A pass that began before an older, still earlier pass completed
    // cannot move the mark back.
    let early = pool.begin_space_pass();
    pool.note_space_failure(PageId(7), &error);
    let late = pool.begin_space_pass();
    pool.end_space_pass(late);
    pool.end_space_pass(early);
    assert!(!pool.disk_full());
    match pool.check_space() {
        Ok(()) => {}
        Err(other) => panic!("{other:?}"),
    }
}

#[test]
fn eviction_on_a_full_disk_passes_the_dirty_pages_and_frees_clean_ones() {
    let storage = Arc::new(Small::new());
    let frames = 32;
    let pool = pool(&storage, frames);
    let old: Vec<PageId> = (0..200).map(|tag| new_leaf(&pool, tag)).collect();
    pool.flush().unwrap();
    storage.fill();
    // Nearly every frame dirty with a page the disk cannot take, the rest
    // clean old pages: the clock meets many dirty pages before a clean one.
    let new: Vec<PageId> = (1000..1000 + frames as u64 - 4).map(|tag| new_leaf(&pool, tag)).collect();
    let before = pool.stats();
    // Without a log, the eviction that finds the disk full reports it to
    // its caller (with a log it would not: `evict_batch`); from then on
    // evictions pass the dirty pages and take clean ones.
    let mut failed = 0;
    for (tag, &pid) in old.iter().enumerate() {
        let read = pool.shared(pid).or_else(|error| {
            failed += 1;
            assert!(space::is_space_error(&error) && pool.disk_full(), "reading old page {tag}: {error:?}");
            pool.shared(pid)
        });
        match read {
            Ok(guard) => assert_eq!(guard.page().read_u64(100), tag as u64),
            Err(other) => panic!("reading old page {tag} on a full disk, again: {other:?}"),
        }
    }
    assert!(failed <= 1, "{failed} reads failed on a full disk with clean pages to evict");
    let after = pool.stats();
    assert!(after.space_failures > before.space_failures, "no eviction met the full disk (test needs one): {after:?}");
    assert!(after.resident <= frames + 4, "the pool grew past its budget with clean pages to evict: {after:?}");
    for (tag, &pid) in (1000..).zip(&new) {
        assert!(pool.latch(pid).is_dirty(), "new page {} lost its change", pid.0);
        assert_eq!(pool.shared(pid).unwrap().page().read_u64(100), tag);
    }
    storage.free();
    assert!(pool.retry_space());
    pool.flush().unwrap();
}

/// An evictor whose write-back of a dirty victim failed for want of space
/// is held (failpoint `evict.write_failed`) after the failure was counted
/// and before the victim is back in the resident set; space comes back and
/// a write-back pass (`pass`: the cleaner's retry, a checkpoint's
/// `write_dirty`) runs meanwhile. The pass must not clear the failure
/// without writing that page: once the disk no longer counts as full, no
/// resident page may still be dirty. (A pass that listed the dirty pages
/// before waiting for the batch missed the victim, cleared the failure it
/// had counted, and left the page dirty.)
#[cfg(feature = "failpoints")]
fn a_pass_racing_an_evictor_whose_write_failed(pass: impl Fn(&BufferPool) + Sync) {
    use crate::failpoint::Pause;
    // Arming a point replaces its action: one scenario at a time.
    static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _alone = ALONE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let storage = Arc::new(Small::new());
    let frames = 16;
    let pool = pool(&storage, frames);
    let old: Vec<PageId> = (0..40).map(|tag| new_leaf(&pool, tag)).collect();
    pool.flush().unwrap();
    // Every frame dirty with a page the disk cannot take.
    for tag in 100..100 + frames as u64 {
        new_leaf(&pool, tag);
    }
    storage.fill();
    let pause = Pause::arm_for("evict.write_failed", |thread| thread.name() == Some("evictor"));
    std::thread::scope(|scope| {
        let pool = &pool;
        let evictor = std::thread::Builder::new()
            .name("evictor".into())
            .spawn_scoped(scope, || {
                // Needs a frame: every victim is dirty, and fails.
                let _ = pool.shared(old[0]);
            })
            .unwrap();
        assert!(pause.wait_parked(std::time::Duration::from_secs(20)), "no write-back failed");
        assert!(pool.disk_full());
        storage.free();
        let passing = scope.spawn(|| pass(pool));
        // Let the pass get as far as it can while the evictor is held.
        std::thread::sleep(std::time::Duration::from_millis(200));
        pause.resume();
        evictor.join().unwrap();
        passing.join().unwrap();
    });
    let dirty: Vec<u64> =
        pool.resident.snapshot().into_iter().filter(|&pid| pool.latch(pid).is_dirty()).map(|pid| pid.0).collect();
    assert!(
        pool.disk_full() || dirty.is_empty(),
        "the disk counts as not full, yet pages {dirty:?} were never written since their write-back failed"
    );
    assert!(!pool.disk_full(), "space came back and a pass saw every page written");
}

/// The cleaner's retry pass (see above).
#[test]
#[cfg(feature = "failpoints")]
fn a_retry_pass_racing_an_evictor_whose_write_failed_does_not_clear_its_failure_unseen() {
    a_pass_racing_an_evictor_whose_write_failed(|pool| {
        assert!(pool.retry_space(), "the pass wrote every page it listed")
    });
}

/// A checkpoint's write-back pass (see above).
#[test]
#[cfg(feature = "failpoints")]
fn a_checkpoint_pass_racing_an_evictor_whose_write_failed_does_not_clear_its_failure_unseen() {
    a_pass_racing_an_evictor_whose_write_failed(|pool| pool.write_dirty().unwrap());
}
