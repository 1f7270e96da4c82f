//! The grace periods that let a load `pread` straight into a recycled
//! frame (`buffer/grace.rs`), at the places a frame is read with no latch.
//!
//! * The background cleaner reads a dirty page's LSN with no latch (a
//!   hint for the log flush before it latches). Held there by a failpoint,
//!   inside its read section, it keeps every frame freed afterwards from
//!   being read into, however many loads run; released, loads read
//!   straight into frames again.
//! * A thread that exits inside a read section (its optimistic guard
//!   forgotten) does not hold grace periods up: its slot is returned idle.
//! * A page that fails verification after a `pread` straight into a frame
//!   gives the frame back: a thousand failed loads touch no more frames.
//! * An advance whose `membarrier` call fails (failpoint
//!   `grace.membarrier`) makes no frame safe: loads copy and read right;
//!   once the call works again, loads go straight into frames again.
//!
//! Where the kernel offers no `membarrier`, loads always copy; the tests
//! then check only that no load went straight into a frame.
//!
//! Failpoints are process-wide, so the scenarios run one at a time.

use crabtree::failpoint::Pause;
use crabtree::io::{MemStorage, Storage};
use crabtree::raw::page::{PageBuf, PageBufMut, PageType, header};
use crabtree::raw::{BufferPool, PoolOptions};
use crabtree::{Error, PageId};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

const PAGE: usize = 512;
/// 256 frames: evictions in batches of four, so loads can find safe frames.
const FRAMES: usize = 256;
const PAGES: u64 = 1024;

fn pool_with_pages(storage: Arc<dyn Storage>) -> (BufferPool, Vec<PageId>) {
    let opts = PoolOptions { page_size: PAGE, pool_bytes: FRAMES * PAGE, max_pages: 1 << 16 };
    let pool = BufferPool::create(storage, opts).unwrap();
    let pids = (0..PAGES)
        .map(|tag| {
            let mut guard = pool.allocate().unwrap();
            let pid = guard.pid();
            let mut page = guard.page_mut();
            header::init(&mut page, pid, PageType::Leaf, 0);
            page.write_u64(100, tag);
            pid
        })
        .collect();
    pool.flush().unwrap();
    (pool, pids)
}

/// Reads pages `range` of `pids` once (shared latch) and checks their tags.
fn read(pool: &BufferPool, pids: &[PageId], range: std::ops::Range<usize>) {
    for tag in range {
        assert_eq!(pool.shared(pids[tag]).unwrap().page().read_u64(100), tag as u64);
    }
}

fn read_all(pool: &BufferPool, pids: &[PageId]) {
    read(pool, pids, 0..pids.len());
}

/// Reads every page, round after round, until more than `above` loads in
/// all went straight into frames; fails after 20 s. Loads go direct once
/// the frames' grace periods end, which a thread of this process
/// preempted inside a read section (a loaded machine) holds up for a
/// while, so a fixed number of rounds is not enough there.
fn read_until_direct(pool: &BufferPool, pids: &[PageId], above: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while pool.stats().direct_loads <= above && Instant::now() < deadline {
        read_all(pool, pids);
    }
    let stats = pool.stats();
    assert!(stats.direct_loads > above, "loads never went straight into frames again: {stats:?}");
}

#[test]
fn the_cleaners_unlatched_lsn_read_keeps_frames_from_being_read_into() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (pool, pids) = pool_with_pages(Arc::new(MemStorage::new()));
    let pause = Pause::arm_for("cleaner.lsn_hint", |thread| thread.name() == Some("crabtree-cleaner"));
    // Dirty pages for the cleaner: it cleans those the clock has marked,
    // and reading the rest makes the clock pass over them.
    for &pid in &pids[..64] {
        pool.exclusive(pid).unwrap().mark_dirty();
    }
    let mut rounds = 0;
    while !pause.wait_parked(Duration::from_millis(10)) {
        read(&pool, &pids, 64..pids.len());
        rounds += 1;
        assert!(rounds < 1000, "the cleaner never reached its LSN read");
    }
    // Held inside its section. One round recycles every frame (1,024 pages
    // through 256 frames), each freed after the section began.
    read(&pool, &pids, 64..pids.len());
    let before = pool.stats();
    read(&pool, &pids, 64..pids.len());
    read(&pool, &pids, 64..pids.len());
    let during = pool.stats();
    assert!(during.loads > before.loads + 1000, "{during:?}");
    assert_eq!(during.direct_loads, before.direct_loads, "read into a frame the cleaner's section may read");
    pause.resume();
    if !pool.direct_read_active() {
        assert_eq!(pool.stats().direct_loads, 0);
        return;
    }
    read_until_direct(&pool, &pids, during.direct_loads + 1000);
}

#[test]
fn a_thread_that_exits_inside_a_read_section_does_not_hold_grace_periods_up() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (pool, pids) = pool_with_pages(Arc::new(MemStorage::new()));
    std::thread::scope(|scope| {
        scope.spawn(|| std::mem::forget(pool.optimistic(pids[0]).unwrap()));
    });
    read_all(&pool, &pids);
    let before = pool.stats();
    if pool.direct_read_active() {
        read_until_direct(&pool, &pids, before.direct_loads + 1000);
    } else {
        for _ in 0..10 {
            read_all(&pool, &pids);
        }
        assert_eq!(pool.stats().direct_loads, 0);
    }
}

#[test]
fn a_page_that_fails_verification_gives_its_frame_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let storage = Arc::new(MemStorage::new());
    let (pool, pids) = pool_with_pages(storage.clone());
    let bad = pids[500];
    storage.write_at(bad.0 * PAGE as u64 + 200, &[0xA5; 8]).unwrap();
    // Make sure the clean copy the pool may still hold is gone: two rounds
    // over every other page (four times the frames) leave no untouched
    // page resident.
    for _ in 0..2 {
        read(&pool, &pids, 0..500);
        read(&pool, &pids, 501..pids.len());
    }
    for round in 0..1000 {
        // Other pages keep the pool full and the frames recycling.
        read(&pool, &pids, 512 + round % 8 * 64..512 + round % 8 * 64 + 64);
        match pool.optimistic(bad) {
            Err(Error::Corruption { .. }) => {}
            Err(other) => panic!("round {round}: {other}"),
            Ok(_) => panic!("round {round}: a corrupt page verified"),
        }
    }
    read(&pool, &pids, 0..500);
    let stats = pool.stats();
    assert!(stats.frames_touched <= FRAMES + 8, "failed loads leaked frames: {stats:?}");
    if pool.direct_read_active() {
        assert!(stats.direct_loads > 0, "{stats:?}");
    }
}

#[test]
fn a_failing_membarrier_makes_no_frame_safe() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (pool, pids) = pool_with_pages(Arc::new(MemStorage::new()));
    if !pool.direct_read_active() {
        read_all(&pool, &pids);
        assert_eq!(pool.stats().direct_loads, 0);
        return;
    }
    crabtree::failpoint::fail_with("grace.membarrier", || Error::Io(std::io::Error::other("injected: membarrier")));
    // Two rounds recycle every frame (1,024 pages through 256 frames), each
    // then freed under a generation no advance completes; the tags read
    // back (`read` checks them) show the copies are right.
    read_all(&pool, &pids);
    read_all(&pool, &pids);
    let before = pool.stats();
    for _ in 0..3 {
        read_all(&pool, &pids);
    }
    let during = pool.stats();
    crabtree::failpoint::clear("grace.membarrier");
    assert!(during.loads > before.loads + 2000, "{during:?}");
    assert_eq!(during.direct_loads, before.direct_loads, "a frame became safe without a completed advance");
    read_until_direct(&pool, &pids, during.direct_loads + 1000);
}
