//! Real-thread stress of the page allocator and the persistent free list.
//!
//! Goal: concurrent `allocate` never hands out a page that is live; freed
//! pages are reused before the file grows; after flush + reopen the live
//! pages and the free list partition `1..page_count` exactly.
//! Method: 8 threads allocate (stamp the page with its id) and free at
//! random; a global set of live pages must never receive a duplicate
//! (a page is removed from it before it is freed). Growth is bounded by the
//! peak number of live pages. Size: `CRABTREE_TEST_SIZE=quick|long`.
mod common;

use crabtree::PageId;
use crabtree::io::{MemStorage, Storage};
use crabtree::raw::page::{PageBuf, PageBufMut, PageType, header};
use crabtree::raw::{BufferPool, PoolOptions};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::Arc;

const PAGE: usize = 512;
/// Threads, unless `CRABTREE_TEST_THREADS` says otherwise.
const THREADS: usize = 8;

fn ops_per_thread() -> usize {
    if common::long() { 500_000 } else { 20_000 }
}

fn opts() -> PoolOptions {
    PoolOptions { page_size: PAGE, pool_bytes: 64 * PAGE, max_pages: 1 << 20 }
}

struct Live {
    pages: HashSet<PageId>,
    peak: usize,
}

fn allocate(pool: &BufferPool, live: &Mutex<Live>) -> PageId {
    let mut guard = pool.allocate().unwrap();
    let pid = guard.pid();
    assert!((24..PAGE).step_by(8).all(|o| guard.page().read_u64(o) == 0), "{pid:?} not zeroed");
    let mut page = guard.page_mut();
    header::init(&mut page, pid, PageType::Leaf, 0);
    page.write_u64(24, pid.0);
    drop(guard);
    let mut live = live.lock();
    assert!(live.pages.insert(pid), "{pid:?} allocated twice");
    live.peak = live.peak.max(live.pages.len());
    pid
}

fn free(pool: &BufferPool, live: &Mutex<Live>, pid: PageId) {
    assert!(live.lock().pages.remove(&pid));
    pool.free(pool.exclusive(pid).unwrap());
}

#[test]
fn allocation_is_unique_and_free_pages_are_reused() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let pool = BufferPool::create(storage.clone(), opts()).unwrap();
    let live = Mutex::new(Live { pages: HashSet::new(), peak: 0 });
    let threads = common::threads(THREADS);
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let (pool, live) = (&pool, &live);
            scope.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(thread as u64);
                let mut mine = Vec::new();
                for _ in 0..ops_per_thread() {
                    if mine.is_empty() || rng.u8(0..10) < 5 {
                        mine.push(allocate(pool, live));
                    } else {
                        free(pool, live, mine.swap_remove(rng.usize(..mine.len())));
                    }
                }
            });
        }
    });
    let peak = live.lock().peak;
    let grown = pool.page_count() - 1;
    eprintln!("pages {grown}, peak live {peak}, {:?}", pool.stats());
    assert!(grown as usize <= peak + threads, "grew to {grown} pages with at most {peak} live");

    // Sequentially: freeing k pages then allocating k must not grow.
    let count = pool.page_count();
    let some: Vec<PageId> = live.lock().pages.iter().copied().take(50).collect();
    some.iter().for_each(|&pid| free(&pool, &live, pid));
    (0..some.len()).for_each(|_| {
        allocate(&pool, &live);
    });
    assert_eq!(pool.page_count(), count, "free pages were not reused before growth");

    pool.flush().unwrap();
    let count = pool.page_count();
    drop(pool);
    let pool = BufferPool::open(storage, opts()).unwrap();
    assert_eq!(pool.page_count(), count);
    let free: Vec<PageId> = pool.free_pages();
    let free_set: HashSet<PageId> = free.iter().copied().collect();
    assert_eq!(free.len(), free_set.len(), "duplicate in the free list");
    let live = live.into_inner().pages;
    assert!(live.is_disjoint(&free_set), "a live page is on the free list");
    let all: HashSet<PageId> = (1..count).map(PageId).collect();
    let union: HashSet<PageId> = live.union(&free_set).copied().collect();
    assert_eq!(union, all, "live and free do not cover 1..page_count");
    for &pid in &live {
        assert_eq!(pool.shared(pid).unwrap().page().read_u64(24), pid.0);
    }
}
