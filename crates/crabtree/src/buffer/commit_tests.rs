//! Unit tests of the pool's commit charge: what the kernel would charge
//! against its commit limit for the frame array and the page table under
//! strict overcommit (`vm.overcommit_memory=2`), which ignores
//! `MAP_NORESERVE` and charges every private writable mapping in full.
//!
//! Method: `/proc/self/smaps` lists each mapping with its `VmFlags`; the
//! bytes of a region's address range that lie in mappings flagged `wr`
//! (writable) and not `sh` (shared) are what strict accounting charges,
//! whatever this machine's own overcommit mode (which these tests neither
//! need nor change). A pool with the default `max_pages` must be charged
//! for the pages it uses, not for `max_pages`.

use super::region::Region;
use super::tests::new_leaf;
use super::*;
use crate::ids::PageId;
use crate::io::MemStorage;
use crate::limits::{MAX_PAGES_DEFAULT, REGION_GRAIN_FRAMES, REGION_GRAIN_STATES};
use crate::page::bytes::PageBuf;
use crate::sync::{Arc, Ordering};
use std::ops::Range;

/// What strict overcommit accounting charges for `range`: the bytes of it
/// inside private writable mappings, and (second) those of them that this
/// kernel marks accountable (`ac`).
fn charged_bytes(range: Range<usize>) -> (usize, usize) {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let (mut charged, mut accountable) = (0, 0);
    let mut current: Option<Range<usize>> = None;
    for line in smaps.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            let Some(mapping) = current.take() else { continue };
            let flags: Vec<&str> = flags.split_whitespace().collect();
            let overlap = mapping.end.min(range.end).saturating_sub(mapping.start.max(range.start));
            if flags.contains(&"wr") && !flags.contains(&"sh") {
                charged += overlap;
                if flags.contains(&"ac") {
                    accountable += overlap;
                }
            }
            continue;
        }
        // A mapping's first line: `start-end perms offset dev inode path`.
        let Some((addresses, _)) = line.split_once(' ') else { continue };
        let Some((start, end)) = addresses.split_once('-') else { continue };
        if let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) {
            current = Some(start..end);
        }
    }
    (charged, accountable)
}

/// How many mappings (VMAs) `range` spans.
fn mappings_in(range: Range<usize>) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    maps.lines()
        .filter_map(|line| line.split_once(' ')?.0.split_once('-'))
        .filter_map(|(start, end)| Some((usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?)))
        .filter(|&(start, end)| start < range.end && end > range.start)
        .count()
}

/// The charge of a pool: its frame array and its page table.
fn pool_charge(pool: &BufferPool) -> (usize, usize) {
    (charged_bytes(pool.frames.address_range()).0, charged_bytes(pool.states_address_range()).0)
}

#[test]
fn a_region_is_charged_for_its_committed_prefix_only() {
    let grain = 64 << 10;
    let region = Region::new(1 << 30, grain).unwrap();
    assert_eq!(charged_bytes(region.address_range()), (0, 0), "a reservation is charged nothing");
    assert_eq!(region.committed_words(), 0);
    region.commit(1).unwrap();
    assert_eq!(region.committed_words() * 8, grain, "a commit opens a grain at least");
    region.words(0, 1)[0].store(7, Ordering::Relaxed);
    assert_eq!(charged_bytes(region.address_range()), (grain, grain), "charged, and accountable in any mode");
    // Growth: to what is asked, rounded up to the grain, and by an eighth
    // at least.
    let words = |bytes: usize| bytes / 8;
    region.commit(words(100 << 10)).unwrap();
    assert_eq!(region.committed_words() * 8, 128 << 10);
    region.commit(words(128 << 10) + 1).unwrap();
    assert_eq!(region.committed_words() * 8, 192 << 10);
    region.commit(words(200 << 10)).unwrap();
    assert_eq!(region.committed_words() * 8, 256 << 10, "an eighth (24 KiB) rounded up to the grain");
    region.commit(words(20 << 20)).unwrap();
    let committed = region.committed_words() * 8;
    assert_eq!(committed, 20 << 20);
    assert_eq!(charged_bytes(region.address_range()), (committed, committed));
    // Each commit extends the writable mapping: two mappings however often
    // it grew (`vm.max_map_count` is not spent on growth).
    assert_eq!(mappings_in(region.address_range()), 2);
    // The words committed first kept their contents; new ones are zeros.
    assert_eq!(region.words(0, 1)[0].load(Ordering::Relaxed), 7);
    assert_eq!(region.words(region.committed_words() - 1, 1)[0].load(Ordering::Relaxed), 0);
    // Hints past the committed end are refused, not faulted on.
    assert!(region.word_if_committed(region.committed_words()).is_none());
    assert!(region.word_if_committed(region.committed_words() - 1).is_some());
    // Past the reservation: an error, nothing changes.
    assert!(region.commit(region.word_count() + 1).is_err());
    assert_eq!(region.committed_words() * 8, committed);
    // Up to the end (not a multiple of the grain).
    let small = Region::new(3 * 8, grain).unwrap();
    small.commit(3).unwrap();
    assert_eq!(small.committed_words(), 3);
}

#[test]
fn a_word_past_the_committed_end_panics_instead_of_faulting() {
    let region = Region::new(1 << 20, 64 << 10).unwrap();
    region.commit(1).unwrap();
    let end = region.committed_words();
    let touched =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| region.words(end, 1)[0].load(Ordering::Relaxed)));
    assert!(touched.is_err(), "a word past the committed end was handed out");
}

#[test]
fn a_pool_with_the_default_max_pages_is_charged_for_the_pages_it_uses() {
    const PAGE: usize = 4096;
    let budget_frames = 2048;
    let options = PoolOptions { page_size: PAGE, pool_bytes: budget_frames * PAGE, max_pages: MAX_PAGES_DEFAULT };
    let pool = BufferPool::create(Arc::new(MemStorage::new()), options).unwrap();
    let (frames, states) = pool_charge(&pool);
    assert!(
        frames <= REGION_GRAIN_FRAMES && states <= REGION_GRAIN_STATES,
        "a new pool is charged {frames} bytes of frames and {states} of page table (max_pages {MAX_PAGES_DEFAULT})"
    );
    // Grow the file past the budget (eviction recycles frames) and past a
    // few growth steps of both regions.
    let pids: Vec<PageId> = (0..20_000).map(|tag| new_leaf(&pool, tag)).collect();
    let stats = pool.stats();
    assert!(stats.evictions > 0 && stats.frames_touched > REGION_GRAIN_FRAMES / PAGE, "{stats:?}");
    let (frames, states) = pool_charge(&pool);
    let frames_touched = stats.frames_touched * PAGE;
    let states_used = pool.page_count() as usize * 16;
    eprintln!("charged: frames {frames} for {frames_touched} touched; page table {states} for {states_used} used");
    assert!(frames >= frames_touched && frames <= frames_touched + frames_touched / 8 + REGION_GRAIN_FRAMES);
    assert!(states >= states_used && states <= states_used + states_used / 8 + REGION_GRAIN_STATES);
    assert_eq!(mappings_in(pool.frames.address_range()), 2, "the frame array's mappings");
    assert_eq!(mappings_in(pool.states_address_range()), 2, "the page table's mappings");
    for (tag, &pid) in pids.iter().enumerate() {
        assert_eq!(pool.shared(pid).unwrap().page().read_u64(100), tag as u64, "{pid:?}");
    }
    // Links the pool never handed out, as a damaged or stale page could
    // hold: an error or an ignored hint, never a fault.
    for link in [pool.page_count(), pool.page_count() + (1 << 20), MAX_PAGES_DEFAULT - 1, MAX_PAGES_DEFAULT, u64::MAX] {
        pool.prefetch_state(link);
        assert!(pool.optimistic(PageId(link)).is_err());
        assert!(pool.shared(PageId(link)).is_err());
    }
}

#[test]
fn a_reopened_pool_commits_the_page_table_of_its_file() {
    const PAGE: usize = 512;
    let storage = Arc::new(MemStorage::new());
    let options = PoolOptions { page_size: PAGE, pool_bytes: 64 * PAGE, max_pages: MAX_PAGES_DEFAULT };
    let count = {
        let pool = BufferPool::create(storage.clone(), options.clone()).unwrap();
        for tag in 0..10_000 {
            new_leaf(&pool, tag);
        }
        pool.flush().unwrap();
        pool.page_count()
    };
    let pool = BufferPool::open(storage, options).unwrap();
    assert_eq!(pool.page_count(), count);
    let (_, states) = pool_charge(&pool);
    let used = count as usize * 16;
    assert!(states >= used && states <= used + used / 8 + REGION_GRAIN_STATES, "{states} for {used}");
    // The last page's state word is reachable (committed), the pages read.
    assert_eq!(pool.shared(PageId(count - 1)).unwrap().page().read_u64(100), 9_999);
    // Growing on from there.
    new_leaf(&pool, 10_000);
    assert_eq!(pool.shared(PageId(count)).unwrap().page().read_u64(100), 10_000);
}

#[test]
fn readers_race_the_growth_of_both_regions() {
    const PAGE: usize = 4096;
    // 8 MiB of frames: the frame array grows (2 MiB grains) while readers
    // run, and 24,000 page ids take the page table through several 64 KiB
    // grains.
    let options = PoolOptions { page_size: PAGE, pool_bytes: 2048 * PAGE, max_pages: MAX_PAGES_DEFAULT };
    let pool = BufferPool::create(Arc::new(MemStorage::new()), options).unwrap();
    // Leaves `1..published` are written (leaf `pid` holds tag `pid - 1`).
    let published = crate::sync::AtomicU64::new(1);
    let reads = crate::sync::AtomicU64::new(0);
    std::thread::scope(|scope| {
        for seed in 0..3 {
            let (pool, published, reads) = (&pool, &published, &reads);
            scope.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed);
                let mut done = false;
                while !done {
                    // Acquire: pairs with the allocator's Release below.
                    let end = published.load(Ordering::Acquire);
                    done = end > 24_000;
                    if end > 1 {
                        let pid = PageId(rng.u64(1..end));
                        let guard = pool.optimistic(pid).unwrap();
                        let tag = guard.page().read_u64(100);
                        if guard.validate().is_ok() {
                            assert_eq!(tag, pid.0 - 1, "{pid:?}");
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // Any link, as a stale or damaged page could hold one.
                    pool.prefetch_state(rng.u64(..));
                    pool.prefetch_state(rng.u64(..MAX_PAGES_DEFAULT));
                }
            });
        }
        for tag in 0..24_000 {
            let pid = new_leaf(&pool, tag);
            assert_eq!(pid.0, tag + 1);
            // Release: the leaf is written before readers pick its id.
            published.store(pid.0 + 1, Ordering::Release);
        }
    });
    let stats = pool.stats();
    assert!(stats.frames_touched > REGION_GRAIN_FRAMES / PAGE && stats.evictions > 0, "{stats:?}");
    assert!(reads.load(Ordering::Relaxed) > 1000, "{} reads", reads.load(Ordering::Relaxed));
}
