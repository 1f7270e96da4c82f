//! Goal: the inputs the coverage-guided fuzz targets (`fuzz/`,
//! RELIABILITY.md F14) found, each kept as a deterministic scenario, so the
//! defect they showed cannot come back unseen. Every test names its target,
//! the input's effect and the defect; each failed before its fix.
//!
//! Method: build the damaged files with the public API on the simulated
//! disk (the same damage the fuzzer's input made, with checksums valid),
//! open them, and require an error within a few seconds where the engine
//! used to hang, allocate without bound or panic. Opens that could hang run
//! on a helper thread under a watchdog, so a regression fails the test
//! instead of hanging the suite.

mod common;

use common::crash::{open_store, quiet_options};
use crabtree::io::{CrashModel, Dir, SimDir, SimDisk};
use crabtree::raw::page::redo;
use crabtree::raw::{BTree, BufferPool, PoolOptions, StoreOptions};
use crabtree::wal::RecordType;
use crabtree::{Durability, Error, Options, PageId, Result};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// The files a `wal_recovery` input opened, kept in `tests/data/NAME/`
/// (the data file, and the log segments with their trailing zeros cut),
/// on a simulated directory, with the target's `Db` options (512-byte
/// pages, 16 KiB segments).
fn fuzzed_database(name: &str) -> (SimDir, Options) {
    let dir = SimDir::new(2, CrashModel::default());
    let files = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name);
    for name in ["data", "00000000.wal", "00000001.wal", "00000002.wal", "00000003.wal"] {
        let mut bytes = std::fs::read(files.join(name)).unwrap();
        if name.ends_with(".wal") {
            bytes.resize(16 * 1024, 0);
        }
        dir.open(name, true).unwrap();
        dir.disk(name).unwrap().set_durable_image(bytes);
    }
    dir.sync().unwrap();
    let options = Options {
        page_size: 512,
        memory_budget: 512 * 1024,
        max_pages: 1 << 16,
        durability: Durability::Immediate,
        log_segment_size: 16 * 1024,
        checkpoint_bytes: 1 << 30,
        vacuum_interval: None,
        update_retries: 4,
    };
    (dir, options)
}

/// 512-byte pages, a pool of 64.
fn small_pages() -> PoolOptions {
    PoolOptions { page_size: 512, pool_bytes: 512 * 64, max_pages: 1 << 16 }
}

/// A tree without a log holding `key000`..`key059` on a simulated disk
/// (a root over a few leaves), still open so the caller can find pages.
fn sixty_keys() -> (SimDisk, BTree) {
    let disk = SimDisk::new(1);
    let tree = BTree::create(Arc::new(BufferPool::create(Arc::new(disk.clone()), small_pages()).unwrap())).unwrap();
    for i in 0..60u32 {
        tree.insert(format!("key{i:03}").as_bytes(), b"value").unwrap();
    }
    (disk, tree)
}

/// [`sixty_keys`] flushed: the file's durable image and the leaf holding
/// `key`, for tests that damage that leaf by hand.
fn sixty_keys_flushed(key: &[u8]) -> (Vec<u8>, PageId) {
    let (disk, tree) = sixty_keys();
    let leaf = *tree.path_to(key).unwrap().last().unwrap();
    tree.flush().unwrap();
    drop(tree);
    (disk.durable_image(), leaf)
}

/// Held by the tests that count the threads of open databases.
static DB_THREADS: Mutex<()> = Mutex::new(());

/// Threads of this process named `name` (as `/proc` shows it: 15 bytes).
fn threads_named(name: &str) -> usize {
    let tasks = std::fs::read_dir("/proc/self/task").unwrap();
    tasks
        .filter(|task| {
            let comm = task.as_ref().ok().and_then(|task| std::fs::read_to_string(task.path().join("comm")).ok());
            comm.is_some_and(|comm| comm.trim_end() == name)
        })
        .count()
}

/// Runs `f` on a helper thread; its result, or a failure if it takes more
/// than `limit` (the thread is left behind: the test fails anyway).
fn within<T: Send + 'static>(limit: Duration, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| panic!("{what} did not return within {limit:?}"))
}

/// A store with a few durable keys whose log ends with one more
/// mini-transaction record, `payload`, durable too; then power is lost, so
/// the next open must redo that record.
fn store_with_logged(payload: &[u8]) -> SimDir {
    let dir = SimDir::new(7, CrashModel::default());
    let store = open_store(&dir, quiet_options(64)).unwrap();
    for i in 0..20u32 {
        store.put_durable(format!("key{i:03}").as_bytes(), b"value").unwrap();
    }
    let lsn = store.wal().append(RecordType::MTR, payload).unwrap();
    store.wal().wait_durable(lsn).unwrap();
    dir.crash();
    drop(store);
    dir
}

/// `wal_recovery` (input `00 3c 62 3c`: one payload bit of a logged
/// mini-transaction flipped, CRC recomputed; libFuzzer timeout): the log
/// names a page far past the file (here a `Free` of page 2^25 + 5).
/// Recovery rebuilt the allocator by putting every id between the
/// checkpoint's page count and the highest page the log names into a hash
/// set, bounded only by `MAX_PAGES_LIMIT` (2^32): up to billions of ids,
/// gigabytes and minutes, before the pool refused the page count as past
/// `max_pages` (here 2^25 ids, about a gigabyte, then "file has ... pages").
/// Now recovery checks the page count against `max_pages` first: an error
/// naming the page at once, nothing allocated for it.
#[test]
fn a_logged_page_id_far_past_max_pages_is_refused_before_recovery_allocates_for_it() {
    let mut payload = Vec::new();
    redo::put_free(&mut payload, PageId((1 << 25) + 5));
    let dir = store_with_logged(&payload);
    let outcome: Result<()> =
        within(Duration::from_secs(20), "recovery", move || open_store(&dir, quiet_options(64)).map(drop));
    match outcome {
        Err(Error::InvalidArgument(reason)) => assert!(reason.contains("names page 33554437"), "{reason}"),
        other => panic!("expected max_pages refused, got {other:?}"),
    }
}

/// `wal_recovery` (input `4a 5d 3d`: a logged mini-transaction's type
/// changed to HORIZON, CRC recomputed, so recovery skipped a page's
/// allocation while later records linked it): the recovered free list held
/// a page the tree still used, and the first commit's reclaim of a retired
/// page freed it a second time: `assert!` "double free of page#3", a panic.
/// Here the same disagreement on a pool without a log: a page the tree
/// holds is freed while already free. Now that is no panic: the free list
/// stays as it was and every later write is `Corruption` naming the page
/// (with a log, the log is poisoned too).
#[test]
fn a_page_freed_while_already_free_is_corruption_not_a_panic() {
    let options = PoolOptions { page_size: 512, pool_bytes: 512 * 64, max_pages: 1 << 16 };
    let pool = Arc::new(BufferPool::create(Arc::new(SimDisk::new(1)), options).unwrap());
    let tree = BTree::create(Arc::clone(&pool)).unwrap();
    for i in 0..40u32 {
        tree.insert(format!("key{i:03}").as_bytes(), b"value").unwrap();
    }
    let leaf = *tree.path_to(b"key000").unwrap().last().unwrap();
    pool.free_unread(leaf);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.free_unread(leaf)));
    assert!(outcome.is_ok(), "a second free of {leaf:?} panicked");
    match tree.insert(b"key999", b"value") {
        Err(Error::Corruption { page, .. }) => assert_eq!(page, leaf),
        other => panic!("a write after a double free: expected Corruption of {leaf:?}, got {other:?}"),
    }
    assert!(matches!(tree.remove(b"key001"), Err(Error::Corruption { .. })));
}

/// `wal_recovery` (input `f2 f1 fe ff fe 50 05 43`: log records changed,
/// CRCs recomputed; libFuzzer timeout): after recovery the background
/// entry count met a leaf holding keys above its high key. Its scan moves
/// its position to each leaf's high key and descends to the next key; the
/// descent stops at a leaf with keys at or above that key, here the same
/// leaf, whose high key took the position back: the count ran forever, and
/// `Db::check`, which waits for it, never returned. Here the same damage on
/// a file without a log (the first leaf's high key made smaller than its
/// keys, checksum recomputed) and `recount`. Now it is `Corruption` naming
/// the leaf.
#[test]
fn a_leaf_with_keys_above_its_high_key_does_not_make_the_count_run_forever() {
    let options = small_pages();
    let (mut image, leaf) = sixty_keys_flushed(b"key000");
    let page = &mut image[leaf.0 as usize * 512..(leaf.0 as usize + 1) * 512];
    assert_eq!(page[6] & 1, 1, "the first leaf has a high key");
    let high_at = u16::from_le_bytes([page[52], page[53]]) as usize;
    page[high_at] = 0; // "key0.." becomes "\0ey0..", below every key of the leaf
    crabtree::raw::page::header::seal(page);
    let disk = SimDisk::new(1);
    disk.set_durable_image(image);
    let outcome = within(Duration::from_secs(20), "recount", move || {
        let tree = BTree::open(Arc::new(BufferPool::open(Arc::new(disk), options)?))?;
        tree.recount()
    });
    match outcome {
        Err(Error::Corruption { page, .. }) => assert_eq!(page, leaf),
        other => panic!("expected Corruption of {leaf:?}, got {other:?}"),
    }
}

/// `wal_recovery` (input `00 5d ee 30 30 30 30 5d c8 5d`: log records
/// changed, CRCs recomputed; libFuzzer timeout): the recovered free list
/// held a leaf the tree still used, and the replay of a commit split that
/// very leaf: the split, holding the leaf's exclusive latch, allocated a
/// page, got the leaf's own id from the free list and waited for its own
/// latch forever. Here the same disagreement on a file without a log: the
/// first leaf (not resident, so freeing it does not touch it) is put on the
/// free list, then keys go into it until it splits. Now an allocation does
/// not park on a free page's latch: one held past the restart patience is
/// `Corruption` naming the page, and writes are refused from then on.
#[test]
fn a_split_that_allocates_the_leaf_it_holds_is_corruption_not_a_deadlock() {
    crabtree::fuzzing::set_restart_patience(Duration::from_millis(100));
    let options = small_pages();
    let (image, leaf) = sixty_keys_flushed(b"key000");
    let reopened = SimDisk::new(2);
    reopened.set_durable_image(image);
    let outcome = within(Duration::from_secs(20), "inserts into a leaf on the free list", move || {
        let pool = Arc::new(BufferPool::open(Arc::new(reopened), options)?);
        let tree = BTree::open(Arc::clone(&pool))?;
        pool.free_unread(leaf);
        for i in 0..40u32 {
            tree.insert(format!("key000-{i:02}").as_bytes(), &[7u8; 40])?;
        }
        Ok::<(), Error>(())
    });
    match outcome {
        Err(Error::Corruption { page, .. }) => assert_eq!(page, leaf),
        other => panic!("expected Corruption of {leaf:?}, got {other:?}"),
    }
}

/// `wal_recovery` (input `00 0a 00 57 01 00 00 00 00 00 00 0a a8 60`:
/// log records changed, CRCs recomputed): a leaf whose slots share cells
/// (each cell inside the page, all of them together larger than it) was
/// compacted by an insert: `compact` subtracted each cell's size from the
/// end of the page, an overflow (`attempt to subtract with overflow` with
/// overflow checks, else a write far outside the page). Here the same leaf
/// built by hand: one 1,000-byte cell and nine small ones, every slot then
/// pointed at the large cell. Now `compact` checks that the cells fit side
/// by side before it writes: `Corruption`.
#[test]
fn compacting_a_leaf_whose_slots_share_a_cell_is_corruption_not_an_overflow() {
    use crabtree::raw::page::PageType;
    use crabtree::raw::page::node::{CellData, NodeMut};
    let pid = PageId(3);
    let mut page = vec![0u8; 4096];
    {
        let mut node = NodeMut::init(page.as_mut_slice(), pid, PageType::Leaf, 0);
        node.insert(0, &CellData::Leaf { key: b"a", value: &[1u8; 1000] }).unwrap();
        for i in 1..10u8 {
            node.insert(usize::from(i), &CellData::Leaf { key: &[b'a' + i], value: &[i; 10] }).unwrap();
        }
    }
    let large = [page[64], page[65]];
    for i in 1..10 {
        page[64 + i * 8..64 + i * 8 + 2].copy_from_slice(&large);
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        NodeMut::new(page.as_mut_slice(), pid).and_then(|mut node| node.compact())
    }));
    match outcome {
        Ok(Err(Error::Corruption { page, .. })) => assert_eq!(page, pid),
        Ok(other) => panic!("expected Corruption, got {other:?}"),
        Err(_) => panic!("compact panicked"),
    }
}

/// `wal_recovery` (input `26 32 00 00 00 00 00 43 2d`: log records changed,
/// CRCs recomputed; libFuzzer timeout): after recovery the background
/// `repair` scanned the tree level by level, going down through the first
/// child of the first inner node each level walk met. A right link of the
/// leaf level led to an inner node, whose first child was the first leaf
/// again: the scan went round forever (each level's walk was bounded, the
/// number of levels was not), and `Db::check`, which waits for it, never
/// returned. Here that damage on a file without a log (the last leaf's
/// right link made the root, checksum recomputed), and a first child link
/// pointing back up (the root's first child made the root itself), each
/// then `repair`. Now every node of a level walk must be at the level one
/// below the level above, and a walk longer than the pages is a cycle:
/// `Corruption`.
#[test]
fn links_leading_back_up_do_not_make_repair_run_forever() {
    let options = small_pages();
    let (disk, tree) = sixty_keys();
    let path = tree.path_to(b"key000").unwrap();
    assert_eq!(path.len(), 2, "a root over leaves");
    let root = path[0];
    let last_leaf = *tree.path_to(b"key999").unwrap().last().unwrap();
    tree.flush().unwrap();
    drop(tree);
    let image = disk.durable_image();
    let damaged = |pid: PageId, change: &dyn Fn(&mut [u8])| {
        let mut image = image.clone();
        let page = &mut image[pid.0 as usize * 512..(pid.0 as usize + 1) * 512];
        change(page);
        crabtree::raw::page::header::seal(page);
        image
    };
    // The last leaf's right link (offset 24) leads to the root.
    let right_link_up = damaged(last_leaf, &|page| page[24..32].copy_from_slice(&root.0.to_le_bytes()));
    // Slot 0 of the root: offset u16, key length u16, prefix, child u64;
    // its cell: key length u16, child u64, key.
    let child_up = damaged(root, &|page| {
        page[64 + 8..64 + 16].copy_from_slice(&root.0.to_le_bytes());
        let cell = u16::from_le_bytes([page[64], page[65]]) as usize;
        page[cell + 2..cell + 10].copy_from_slice(&root.0.to_le_bytes());
    });
    for (what, image) in [("right link up", right_link_up), ("first child up", child_up)] {
        let disk = SimDisk::new(2);
        disk.set_durable_image(image);
        let options = options.clone();
        let outcome = within(Duration::from_secs(20), "repair", move || {
            let tree = BTree::open(Arc::new(BufferPool::open(Arc::new(disk), options)?))?;
            tree.repair()
        });
        assert!(matches!(outcome, Err(Error::Corruption { .. })), "{what}: expected Corruption, got {outcome:?}");
    }
}

/// `wal_recovery` (input `0e 4d aa bf`: log records changed, CRCs
/// recomputed; libFuzzer timeout): after recovery, `Db::vacuum`'s forward
/// scan never ended. Each batch of a range iterator starts past the last
/// key of the previous one; over keys out of order a batch's last key lay
/// at or below that bound and sent the scan back to where it was, forever.
/// The files the fuzz target opened are in `tests/data/fuzz_vacuum_scan/`
/// (the data file, and the log segments with their trailing zeros cut;
/// 512-byte pages, 16 KiB segments). Now a batch that does not move its
/// bound on is `Corruption`. (Since a pass ends at the last key it finds
/// when it begins, the pass over this tree ends before the key out of
/// order and returns `Ok`; `check` names the damage.)
#[test]
fn vacuum_over_the_fuzzed_database_ends() {
    let _serial = DB_THREADS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (dir, options) = fuzzed_database("fuzz_vacuum_scan");
    let (vacuumed, checked) = within(Duration::from_secs(20), "vacuum", move || {
        let db = crabtree::raw::open_db(dir.open("data", false)?, Arc::new(dir.this_life()), options)?;
        Ok::<_, Error>((db.vacuum(), db.check()))
    })
    .unwrap();
    assert!(matches!(vacuumed, Ok(_) | Err(Error::Corruption { .. })), "vacuum: {vacuumed:?}");
    assert!(matches!(checked, Err(Error::Corruption { .. })), "expected Corruption from check, got {checked:?}");
}

/// The same defect built by hand on a file without a log: the last leaf's
/// last key made the smallest of the tree (`key059` -> `aey059`, in the
/// cell and the slot's prefix, checksum recomputed), then a full forward
/// scan. Before the fix this scan ended, but returned `aey059` after
/// `key058` as if in order; now it is `Corruption`.
#[test]
fn a_scan_over_keys_out_of_order_is_corruption() {
    let options = small_pages();
    let (mut image, leaf) = sixty_keys_flushed(b"key059");
    let page = &mut image[leaf.0 as usize * 512..(leaf.0 as usize + 1) * 512];
    let last = u16::from_le_bytes([page[40], page[41]]) as usize - 1;
    let slot = 64 + last * 8;
    let cell = u16::from_le_bytes([page[slot], page[slot + 1]]) as usize;
    assert_eq!(&page[cell + 7..cell + 13], b"key059");
    page[cell + 7] = b'a';
    page[slot + 4] = b'a';
    crabtree::raw::page::header::seal(page);
    let disk = SimDisk::new(1);
    disk.set_durable_image(image);
    let outcome = within(Duration::from_secs(20), "a forward scan", move || {
        let tree = BTree::open(Arc::new(BufferPool::open(Arc::new(disk), options)?))?;
        tree.range::<&[u8], _>(..).try_for_each(|entry| entry.map(drop))
    });
    assert!(matches!(outcome, Err(Error::Corruption { .. })), "expected Corruption, got {outcome:?}");
}

/// `wal_recovery` (an out-of-memory after about 20,000 inputs, none of
/// them alone: libFuzzer's RSS limit, 2 GB): a `Db` open that failed after
/// recovery, at its first read of the tree (`Inner::open`: is the tree
/// empty?), had already started the durability notifier; the error dropped
/// its join handle, so its thread ran on, holding the store and with it
/// every thread of the store (checkpointer, cleaner, log flusher and
/// preparer) and its memory, once per failed open. Here a store whose
/// first leaf is damaged (one byte, checksum not recomputed) after a clean
/// close, opened as a `Db`: the open is `Corruption`, and no durability
/// notifier is left running. Now the tree is read before the notifier
/// starts.
#[test]
fn a_db_open_that_fails_leaves_no_thread_behind() {
    let _serial = DB_THREADS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = SimDir::new(3, CrashModel::default());
    let store = open_store(&dir, quiet_options(64)).unwrap();
    for i in 0..60u32 {
        store.put_durable(format!("key{i:03}").as_bytes(), b"value").unwrap();
    }
    let leaf = *store.tree().path_to(b"key000").unwrap().last().unwrap();
    store.close().unwrap();
    let data = dir.disk("data").unwrap();
    let mut image = data.durable_image();
    image[leaf.0 as usize * 512 + 100] ^= 0x5a;
    data.set_durable_image(image);
    let before = threads_named("crabtree-durabl");
    let options = Options {
        page_size: 512,
        memory_budget: 512 * 64,
        max_pages: 1 << 16,
        durability: Durability::Immediate,
        log_segment_size: 16 * 1024,
        checkpoint_bytes: 1 << 30,
        vacuum_interval: None,
        update_retries: 4,
    };
    let opened = crabtree::raw::open_db(dir.open("data", false).unwrap(), Arc::new(dir.this_life()), options);
    assert!(matches!(opened, Err(Error::Corruption { .. })), "expected Corruption, got {:?}", opened.map(drop));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while threads_named("crabtree-durabl") > before {
        assert!(std::time::Instant::now() < deadline, "a failed open left its durability notifier running");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `wal_recovery` (input `7a df ee 2a 3f df ee aa 3f 00 02 00 2e 7a 57 40
/// 55 df 55 55 55 55`: log records changed, CRCs recomputed): a redo entry
/// for a page id near 2^56, logged after the last checkpoint's redo start
/// but before its allocator snapshot, so the allocator check after redo
/// (which skips what the checkpoint covers) never saw it. Recovery redid
/// the page and wrote it at `pid * page_size`: `attempt to multiply with
/// overflow` with overflow checks; in release the offset wraps and the
/// write lands inside the file. The files are in
/// `tests/data/fuzz_redo_far_page`. Now every redo entry's page is checked
/// against `max_pages` before it is redone.
#[test]
fn a_redo_entry_for_a_page_past_max_pages_is_refused_before_it_is_written() {
    let _serial = DB_THREADS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (dir, options) = fuzzed_database("fuzz_redo_far_page");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        crabtree::raw::open_db(dir.open("data", false)?, Arc::new(dir.this_life()), options).map(drop)
    }));
    match outcome {
        Ok(Err(Error::InvalidArgument(reason))) => assert!(reason.contains("the log names page"), "{reason}"),
        Ok(other) => panic!("expected the page refused, got {other:?}"),
        Err(_) => panic!("recovery panicked"),
    }
}

/// A store under the default `max_pages` (2^24, 4 KiB pages) with 20
/// durable keys whose log ends with one more durable mini-transaction
/// record, the entry `entry` writes (a damaged record, CRC valid); then
/// power is lost. Returns the directory and the options to reopen it with.
fn near_max_pages_with_logged(seed: u64, entry: impl FnOnce(&mut Vec<u8>)) -> (SimDir, StoreOptions) {
    let mut options = quiet_options(64);
    options.pool = PoolOptions { page_size: 4096, pool_bytes: 4096 * 64, max_pages: 1 << 24 };
    let dir = SimDir::new(seed, CrashModel::default());
    let store = open_store(&dir, options.clone()).unwrap();
    for i in 0..20u32 {
        store.put_durable(format!("key{i:03}").as_bytes(), b"value").unwrap();
    }
    let mut payload = Vec::new();
    entry(&mut payload);
    let lsn = store.wal().append(RecordType::MTR, &payload).unwrap();
    store.wal().wait_durable(lsn).unwrap();
    dir.crash();
    drop(store);
    (dir, options)
}

/// One damaged record naming a free page near `max_pages` (the fuzz
/// helper's suspicion of stop 20, measured in stop 21): a logged `Free` of
/// page 2^24 - 2 with the default `max_pages` (2^24), its CRC valid. The
/// log names no page in use past the file, so every id from the file's
/// page count up to it was taken for one allocated and never logged, and
/// put on the free list: recovery took 40 s and 1.4 GB, and the store
/// opened with 16,777,215 pages (a checkpoint listing 16M free ids). Now
/// the free ids at the end of the id space are not kept: the page count
/// ends after the last page in use (free pages past it need not exist),
/// so the open costs what the log holds.
#[test]
fn a_logged_free_page_near_max_pages_does_not_make_recovery_list_every_id_below_it() {
    let (dir, options) = near_max_pages_with_logged(8, |payload| redo::put_free(payload, PageId((1 << 24) - 2)));
    let store = within(Duration::from_secs(30), "recovery", move || open_store(&dir, options).unwrap());
    let pages = store.pool().page_count();
    assert!(pages < 1000, "recovery kept {pages} pages for 20 keys");
    for i in 0..20u32 {
        assert_eq!(store.get(format!("key{i:03}").as_bytes()).unwrap().as_deref(), Some(&b"value"[..]));
    }
    store.put_durable(b"after", b"recovery").unwrap();
}

/// The same for a page the log names in use (a leaf put, CRC valid) near
/// `max_pages`, past the file: recovery cannot rebuild it, and says so
/// before it lists the 16M ids below it as free.
#[test]
fn a_logged_claim_near_max_pages_fails_recovery_without_listing_every_id_below_it() {
    let (dir, options) =
        near_max_pages_with_logged(9, |payload| redo::put_leaf_put(payload, PageId((1 << 24) - 2), b"not a cell"));
    let started = std::time::Instant::now();
    let outcome = within(Duration::from_secs(30), "recovery", move || open_store(&dir, options).map(drop));
    let took = started.elapsed();
    assert!(matches!(outcome, Err(Error::Corruption { .. })), "expected Corruption, got {outcome:?}");
    assert!(took < Duration::from_secs(2), "recovery took {took:?} to refuse one damaged record");
}
