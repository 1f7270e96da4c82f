//! Page read cost through the buffer pool.
//!
//! * `hot/optimistic`: a resident page, read 4 u64 fields and validate, vs
//!   `hot/rwlock`: the same reads under a `parking_lot::RwLock<Vec<u8>>`
//!   read guard (the usual alternative to a hybrid latch).
//! * `cold/mem` and `cold/file`: a pool of 16 frames reading pages
//!   round-robin over 100x as many pages, so every read loads (and evicts).
//!
//! Run: `cargo bench -p crabtree --bench page_read`. The hot ratio is also
//! printed from a plain timing loop at the end.

use crabtree::io::{MemStorage, Storage};
use crabtree::raw::page::{PageBuf, PageBufMut, PageType, header};
use crabtree::raw::{BufferPool, PoolOptions};
use crabtree::{PageId, Result};
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PAGE: usize = 4096;
const FIELDS: [usize; 4] = [24, 512, 2048, 4088];

/// A minimal file-backed storage for the benchmark (the engine's own
/// `FileStorage` is developed in the io layer).
struct BenchFile(std::fs::File);

impl Storage for BenchFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        Ok(self.0.read_exact_at(buf, offset)?)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        Ok(self.0.write_all_at(buf, offset)?)
    }
    fn sync(&self) -> Result<()> {
        Ok(self.0.sync_data()?)
    }
    fn len(&self) -> Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> Result<()> {
        Ok(self.0.set_len(len)?)
    }
}

fn pool_with(storage: Arc<dyn Storage>, frames: usize, pages: usize) -> (BufferPool, Vec<PageId>) {
    let opts = PoolOptions { page_size: PAGE, pool_bytes: frames * PAGE, max_pages: 1 << 16 };
    let pool = BufferPool::create(storage, opts).unwrap();
    let pids = (0..pages)
        .map(|n| {
            let mut guard = pool.allocate().unwrap();
            let pid = guard.pid();
            let mut page = guard.page_mut();
            header::init(&mut page, pid, PageType::Leaf, 0);
            for &offset in &FIELDS[1..] {
                page.write_u64(offset, n as u64);
            }
            pid
        })
        .collect();
    pool.flush().unwrap();
    (pool, pids)
}

fn read_optimistic(pool: &BufferPool, pid: PageId) -> u64 {
    loop {
        let guard = pool.optimistic(pid).unwrap();
        let page = guard.page();
        let sum = FIELDS.iter().fold(0u64, |acc, &o| acc.wrapping_add(page.read_u64(o)));
        if guard.validate().is_ok() {
            return sum;
        }
    }
}

fn read_rwlock(lock: &parking_lot::RwLock<Vec<u8>>) -> u64 {
    let page = lock.read();
    FIELDS.iter().fold(0u64, |acc, &o| acc.wrapping_add(page.as_slice().read_u64(o)))
}

fn hot(c: &mut Criterion) {
    let (pool, pids) = pool_with(Arc::new(MemStorage::new()), 64, 1);
    let lock = parking_lot::RwLock::new(vec![7u8; PAGE]);
    let mut group = c.benchmark_group("hot");
    group.bench_function("optimistic", |b| b.iter(|| read_optimistic(&pool, black_box(pids[0]))));
    group.bench_function("rwlock", |b| b.iter(|| read_rwlock(black_box(&lock))));
    group.finish();
    // Plain timing loops: the same reads on 1 thread and on 2 threads at
    // once (every core of the reference machine), where the RwLock's shared
    // counter bounces between cores and the optimistic read writes nothing.
    let time = |threads: usize, f: &(dyn Fn() -> u64 + Sync)| {
        let start = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    for _ in 0..5_000_000 {
                        black_box(f());
                    }
                });
            }
        });
        start.elapsed()
    };
    let latch_only = |pid| {
        let guard = pool.optimistic(pid).unwrap();
        guard.validate().is_ok() as u64
    };
    for threads in [1, 2] {
        let ours = time(threads, &|| read_optimistic(&pool, black_box(pids[0])));
        let theirs = time(threads, &|| read_rwlock(black_box(&lock)));
        let bare = time(threads, &|| latch_only(black_box(pids[0])));
        let lock_bare = time(threads, &|| black_box(lock.read().len()) as u64);
        println!(
            "hot x{threads}: optimistic {:.1} ns, rwlock {:.1} ns, ratio rwlock/optimistic {:.2}; \
             latch only: optimistic+validate {:.1} ns, rwlock read+unlock {:.1} ns",
            ours.as_secs_f64() * 1e9 / 5e6,
            theirs.as_secs_f64() * 1e9 / 5e6,
            theirs.as_secs_f64() / ours.as_secs_f64(),
            bare.as_secs_f64() * 1e9 / 5e6,
            lock_bare.as_secs_f64() * 1e9 / 5e6,
        );
    }
}

fn cold(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.path().join("bench.crab"))
        .unwrap();
    let storages: [(&str, Arc<dyn Storage>); 2] =
        [("mem", Arc::new(MemStorage::new())), ("file", Arc::new(BenchFile(file)))];
    let mut group = c.benchmark_group("cold");
    for (name, storage) in storages {
        let (pool, pids) = pool_with(storage, 16, 1600);
        let mut next = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                next = (next + 1) % pids.len();
                read_optimistic(&pool, pids[next])
            })
        });
        println!("cold/{name}: {:?}", pool.stats());
    }
    group.finish();
}

#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group! {
        name = benches;
        config = Criterion::default().sample_size(30).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
        targets = hot, cold
    }
}
criterion_main!(group::benches);
