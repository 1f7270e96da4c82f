//! The pool under a kernel limit on private writable memory: what strict
//! overcommit accounting (`vm.overcommit_memory=2`) refuses, emulated
//! without root and without touching the machine's setting.
//!
//! Goal: a database with the default `max_pages` (64 GiB of frames
//! reserved) opens and works when the kernel refuses writable private
//! mappings beyond a small allowance, and a pool whose next frames the
//! kernel refuses to commit reports an error instead of faulting, then
//! goes on once memory is allowed again.
//! Method: one test alone in its process. `RLIMIT_DATA` (Linux 4.7+)
//! caps the process's private writable non-stack mappings (`VmData`),
//! checked by `mmap` and by `mprotect` to writable: the same mappings, and
//! the same two calls, that strict accounting charges (whatever
//! `MAP_NORESERVE` says). Set it to `VmData` plus an allowance, open a new
//! `Db` with `Options::default()`, write and read it back (the former
//! writable 64 GiB reservation failed here with `ENOMEM`); then a raw pool
//! with a 64 MiB budget allocates pages under a tighter allowance until the
//! kernel refuses a commit of frames: `allocate` must return `Error::Io`,
//! every page allocated before must read back, and once the limit is
//! lifted allocation must go on. Last, under `RLIMIT_AS` (`ulimit -v`),
//! which counts the reservation itself: the default `max_pages` is
//! refused with an error that names `max_pages`, and a smaller one opens.
mod common;

use crabtree::io::FileStorage;
use crabtree::raw::page::{PageBuf, PageBufMut, PageType, header};
use crabtree::raw::{BufferPool, PoolOptions};
use crabtree::{Db, Error, Options, PageId};
use std::sync::Arc;

/// The process's private writable memory (`VmData` of /proc/self/status).
fn data_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmData:")).expect("VmData line");
    let kib: u64 = line.split_whitespace().nth(1).expect("VmData value").parse().expect("VmData number");
    kib * 1024
}

/// The process's address space (`VmSize` of /proc/self/status).
fn address_space_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmSize:")).expect("VmSize line");
    let kib: u64 = line.split_whitespace().nth(1).expect("VmSize value").parse().expect("VmSize number");
    kib * 1024
}

/// Sets the soft limit `resource` (the hard one stays).
fn limit(resource: libc::__rlimit_resource_t, bytes: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass,
    // which lives across the calls.
    unsafe {
        assert_eq!(libc::getrlimit(resource, &mut limit), 0, "getrlimit");
        limit.rlim_cur = bytes.min(limit.rlim_max);
        assert_eq!(libc::setrlimit(resource, &limit), 0, "setrlimit");
    }
}

/// Sets the soft `RLIMIT_DATA`.
fn limit_data(bytes: u64) {
    limit(libc::RLIMIT_DATA, bytes);
}

#[test]
fn the_pool_works_within_a_limit_on_private_writable_memory() {
    let dir = tempfile::tempdir().unwrap();
    // Warm up the allocator and the thread machinery before the baseline.
    std::thread::scope(|s| (0..8).for_each(|_| drop(s.spawn(|| vec![0u8; 1 << 16]))));

    // A database with the default options, within 256 MiB more.
    limit_data(data_bytes() + (256 << 20));
    {
        let db = Db::open_with(dir.path().join("limited.crab"), Options::default())
            .expect("open a new database with the default options under RLIMIT_DATA");
        for batch in 0..20u64 {
            let mut tx = db.begin();
            for i in batch * 1000..(batch + 1) * 1000 {
                tx.put(&common::spread_key(i), &[(i % 251) as u8; 100]).unwrap();
            }
            tx.commit().unwrap();
        }
        let snapshot = db.snapshot();
        for i in 0..20_000 {
            assert_eq!(snapshot.get(&common::spread_key(i)).unwrap(), Some(vec![(i % 251) as u8; 100]), "key {i}");
        }
    }
    limit_data(u64::MAX);

    // A pool whose frames the kernel stops committing: 64 MiB of budget,
    // 24 MiB allowed.
    const PAGE: usize = 4096;
    let storage = Arc::new(FileStorage::open(&dir.path().join("refused.crab"), true).unwrap());
    let options = PoolOptions { page_size: PAGE, pool_bytes: 64 << 20, max_pages: crabtree::limits::MAX_PAGES_DEFAULT };
    let pool = BufferPool::create(storage, options).unwrap();
    let write = |pid: PageId| {
        let mut guard = pool.exclusive(pid).unwrap();
        let mut page = guard.page_mut();
        page.write_u64(100, pid.0 * 3);
    };
    let allocate = || -> crabtree::Result<PageId> {
        let mut guard = pool.allocate()?;
        let pid = guard.pid();
        header::init(&mut guard.page_mut(), pid, PageType::Leaf, 0);
        Ok(pid)
    };
    let mut pids = Vec::new();
    limit_data(data_bytes() + (24 << 20));
    let refused = loop {
        match allocate() {
            Ok(pid) => pids.push(pid),
            Err(error) => break error,
        }
        assert!(pids.len() < 16_384, "64 MiB of frames committed under a 24 MiB allowance");
    };
    limit_data(u64::MAX);
    eprintln!("refused after {} pages: {refused}", pids.len());
    assert!(matches!(&refused, Error::Io(_)), "{refused:?}");
    assert!(pids.len() > 1000, "refused after {} pages", pids.len());
    for &pid in &pids {
        write(pid);
    }
    // Lifted: allocation goes on, with no id lost to the refusal.
    for _ in 0..1000 {
        let pid = allocate().unwrap();
        write(pid);
        pids.push(pid);
    }
    assert!(pids.iter().enumerate().all(|(index, pid)| pid.0 == index as u64 + 1), "an id was lost");
    assert_eq!(pool.page_count(), pids.len() as u64 + 1);
    for &pid in &pids {
        assert_eq!(pool.shared(pid).unwrap().page().read_u64(100), pid.0 * 3, "{pid:?}");
    }
    pool.flush().unwrap();
    drop(pool);

    // An address-space limit (`ulimit -v`) counts the reservation, charged
    // or not: the default `max_pages` (64 GiB of frames) does not fit in
    // 4 GiB more, and the error says what to lower; a `max_pages` that fits
    // opens.
    limit(libc::RLIMIT_AS, address_space_bytes() + (4 << 30));
    let path = dir.path().join("address_space.crab");
    let refused = Db::open_with(&path, Options::default()).map(|_| ()).unwrap_err();
    assert!(refused.to_string().contains("max_pages"), "{refused}");
    let fits = Options { max_pages: 1 << 18, ..Options::default() };
    let db = Db::open_with(&path, fits).expect("open with a max_pages that fits the address-space limit");
    let mut tx = db.begin();
    tx.put(b"k", b"v").unwrap();
    tx.commit().unwrap();
    assert_eq!(db.snapshot().get(b"k").unwrap(), Some(b"v".to_vec()));
    drop(db);
    limit(libc::RLIMIT_AS, u64::MAX);
}
