//! Real-thread stress of the hybrid latch through the pool.
//!
//! Goal: a validated optimistic read or any shared read never sees a page
//! that a writer is halfway through rewriting; writers never interleave.
//! Method: 8 threads on 4 hot pages mix optimistic, shared and exclusive
//! access. A writer fills the whole page body with a pattern derived from a
//! fresh seed and stores a checksum last; a reader copies the page and
//! checks pattern and checksum. Validated (and shared) reads that fail the
//! check fail the test; validated reads are counted so the test cannot pass
//! by restarting forever. Size: `CRABTREE_TEST_SIZE=quick|long`.
mod common;

use crabtree::io::MemStorage;
use crabtree::raw::page::{PageBufMut, PageType, header};
use crabtree::raw::{BufferPool, PoolOptions};
use crabtree::{PageId, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const PAGE: usize = 4096;
const BODY: usize = 32; // seed at 24, pattern from 32 to the last word
/// Threads, unless `CRABTREE_TEST_THREADS` says otherwise.
const THREADS: usize = 8;

fn ops_per_thread() -> u64 {
    if common::long() { 1_000_000 } else { 20_000 }
}

fn pattern(seed: u64, index: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index as u64
}

fn write_page(pool: &BufferPool, pid: PageId, seed: u64) -> Result<()> {
    let mut guard = pool.exclusive(pid)?;
    let mut page = guard.page_mut();
    page.write_u64(24, seed);
    let mut sum = seed;
    for offset in (BODY..PAGE - 8).step_by(8) {
        let value = pattern(seed, offset);
        sum = sum.wrapping_add(value);
        page.write_u64(offset, value);
    }
    page.write_u64(PAGE - 8, sum);
    Ok(())
}

/// Whether a copied page is one whole write (pattern and checksum agree).
fn consistent(image: &[u8]) -> bool {
    let word = |offset: usize| u64::from_le_bytes(image[offset..offset + 8].try_into().unwrap());
    let seed = word(24);
    let mut sum = seed;
    for offset in (BODY..PAGE - 8).step_by(8) {
        if word(offset) != pattern(seed, offset) {
            return false;
        }
        sum = sum.wrapping_add(word(offset));
    }
    sum == word(PAGE - 8)
}

#[test]
fn readers_never_see_a_torn_page() {
    let opts = PoolOptions { page_size: PAGE, pool_bytes: 64 * PAGE, max_pages: 1024 };
    let pool = BufferPool::create(Arc::new(MemStorage::new()), opts).unwrap();
    let pids: Vec<PageId> = (0..4)
        .map(|_| {
            let mut guard = pool.allocate().unwrap();
            let pid = guard.pid();
            header::init(&mut guard.page_mut(), pid, PageType::Leaf, 0);
            pid
        })
        .collect();
    let seeds = AtomicU64::new(1);
    for &pid in &pids {
        write_page(&pool, pid, seeds.fetch_add(1, Ordering::Relaxed)).unwrap();
    }
    let validated = AtomicU64::new(0);
    let restarts = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for thread in 0..common::threads(THREADS) {
            let (pool, pids, seeds, validated, restarts) = (&pool, &pids, &seeds, &validated, &restarts);
            scope.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(thread as u64);
                let mut image = vec![0u8; PAGE];
                for _ in 0..ops_per_thread() {
                    let pid = pids[rng.usize(..pids.len())];
                    match rng.u8(0..10) {
                        0..=1 => write_page(pool, pid, seeds.fetch_add(1, Ordering::Relaxed)).unwrap(),
                        2..=3 => {
                            let guard = pool.shared(pid).unwrap();
                            guard.page().copy_to(&mut image);
                            assert!(consistent(&image), "shared read saw a torn page");
                        }
                        _ => {
                            let guard = pool.optimistic(pid).unwrap();
                            guard.page().copy_to(&mut image);
                            let ok = consistent(&image);
                            if guard.validate().is_ok() {
                                assert!(ok, "validated optimistic read saw a torn page");
                                validated.fetch_add(1, Ordering::Relaxed);
                            } else {
                                restarts.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            });
        }
    });
    let (validated, restarts) = (validated.into_inner(), restarts.into_inner());
    eprintln!("validated optimistic reads: {validated}, restarts: {restarts}");
    assert!(validated > ops_per_thread(), "too few validated reads: {validated}");
}

/// Goal: a writer waiting for a page that readers keep latched shared gets
/// it (writer preference: shared lockers queue behind a parked exclusive
/// locker instead of keeping the count above zero forever). Method: two
/// readers pass the shared latch hand to hand: each releases its latch only
/// after the other has taken one (or after 50 ms), so the holder count never
/// drops to zero while shared lockers can get in. One writer takes the
/// exclusive latch 20 times. Without the preference it waits until the
/// readers stop (the 30 s deadline); with it, each write waits one 50 ms
/// hand-off at most.
#[test]
fn writer_is_not_starved_by_overlapping_readers() {
    let opts = PoolOptions { page_size: PAGE, pool_bytes: 64 * PAGE, max_pages: 1024 };
    let pool = BufferPool::create(Arc::new(MemStorage::new()), opts).unwrap();
    let pid = {
        let mut guard = pool.allocate().unwrap();
        let pid = guard.pid();
        header::init(&mut guard.page_mut(), pid, PageType::Leaf, 0);
        pid
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let taken = AtomicU64::new(0);
    let writes = 20;
    let elapsed = std::thread::scope(|scope| {
        for _ in 0..2 {
            let (pool, stop, taken) = (&pool, &stop, &taken);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let guard = pool.shared(pid).unwrap();
                    let mine = taken.fetch_add(1, Ordering::SeqCst) + 1;
                    let until = std::time::Instant::now() + std::time::Duration::from_millis(50);
                    while taken.load(Ordering::SeqCst) == mine && std::time::Instant::now() < until {
                        std::thread::yield_now();
                    }
                    drop(guard);
                }
            });
        }
        while taken.load(Ordering::SeqCst) < 100 {
            std::thread::yield_now();
        }
        let started = std::time::Instant::now();
        let writer = scope.spawn(|| {
            for seed in 0..writes {
                write_page(&pool, pid, seed).unwrap();
            }
        });
        // Readers stop at the deadline at the latest, so a starved writer
        // fails the assertion below instead of hanging the test.
        let deadline = started + std::time::Duration::from_secs(30);
        while !writer.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let elapsed = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        elapsed
    });
    eprintln!("{writes} exclusive latches among hand-to-hand shared lockers took {elapsed:?}");
    assert!(elapsed < std::time::Duration::from_secs(15), "writer starved: {writes} latches took {elapsed:?}");
}
