//! Goal: a server with a large thread pool. Thousands of threads use one
//! tree at once (each pins epochs, latches leaves, splits, deletes): no
//! thread waits for a resource that only an exiting thread frees, no
//! operation reports a false error under overload, and the tree ends
//! holding exactly what was written.
//!
//! Method: 2,000 threads (quick; 4,000 long) are started and held at a
//! barrier, then each inserts its own 8 keys (some values overflow), reads
//! them back, removes half of them and scans a small window; a pool of 64
//! frames of 512 bytes keeps evicting meanwhile. Afterwards `verify` and
//! the exact contents. (The slot-table limit itself, defect 5 of issue 6,
//! is tested in `btree::epoch`; this is the whole tree under overload.)

mod common;

use crabtree::io::{MemStorage, Storage};
use std::sync::{Arc, Barrier};
use std::time::Duration;

fn key(thread: u64, i: u64) -> Vec<u8> {
    format!("t{thread:05}-{i}").into_bytes()
}

fn value(thread: u64, i: u64) -> Vec<u8> {
    let len = if (thread + i).is_multiple_of(97) { 900 } else { 12 };
    let mut value = format!("{thread}:{i}:").into_bytes();
    value.resize(len, b'v');
    value
}

#[test]
fn thousands_of_threads_on_one_tree() {
    let threads: u64 = if common::long() { 4000 } else { 2000 };
    let _watchdog = common::Watchdog::arm("tree_threads", 0, Duration::from_secs(300));
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let tree = Arc::new(common::create(storage, &common::options(512, 64)));
    let barrier = Arc::new(Barrier::new(threads as usize));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (tree, barrier) = (Arc::clone(&tree), Arc::clone(&barrier));
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    barrier.wait();
                    for i in 0..8 {
                        assert_eq!(tree.insert(&key(t, i), &value(t, i)).unwrap(), None);
                    }
                    for i in 0..8 {
                        assert_eq!(tree.get(&key(t, i)).unwrap(), Some(value(t, i)), "thread {t} key {i}");
                    }
                    for i in (0..8).step_by(2) {
                        assert_eq!(tree.remove(&key(t, i)).unwrap(), Some(value(t, i)));
                    }
                    let from = key(t, 0);
                    let mine: Vec<_> =
                        tree.range(from.as_slice()..key(t, 9).as_slice()).map(|entry| entry.unwrap().0).collect();
                    assert_eq!(mine, (1..8).step_by(2).map(|i| key(t, i)).collect::<Vec<_>>(), "thread {t} scan");
                })
                .unwrap()
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    common::verified(&tree);
    let contents = common::contents(&tree);
    let expected: Vec<(Vec<u8>, Vec<u8>)> = {
        let mut expected: Vec<_> =
            (0..threads).flat_map(|t| (1..8).step_by(2).map(move |i| (key(t, i), value(t, i)))).collect();
        expected.sort();
        expected
    };
    assert_eq!(contents.len(), expected.len(), "entry count");
    assert!(contents == expected, "contents differ from what the threads wrote");
}
