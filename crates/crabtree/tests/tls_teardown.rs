//! Goal: the engine works from another thread-local's destructor, after
//! the pool's own per-thread buffers are gone (a value kept in a
//! `thread_local!` that reads or writes the tree when its thread exits).
//!
//! Method: a thread stores, in a thread-local declared before it first
//! touches the tree, a value whose `Drop` reads keys of a tree 10x larger
//! than its pool (uncached point reads, and loads with uncached reads off)
//! and inserts some. Its thread-locals are destroyed in the reverse order
//! of first use, so the pool's buffers go before it. Using a destroyed
//! thread-local panics, and a panic in a thread-local destructor aborts
//! the process: the test fails by aborting (found by review, stop 12).
//! After the thread is joined, every read and write it made is checked.

use crabtree::io::MemStorage;
use crabtree::raw::{BTree, BufferPool, PoolOptions};
use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const KEYS: u32 = 20_000;

fn key(i: u32) -> Vec<u8> {
    format!("{i:08}").into_bytes()
}

/// Reads and writes the tree when dropped; counts what it checked.
struct UseOnDrop {
    tree: Arc<BTree>,
    checked: Arc<AtomicU64>,
}

impl Drop for UseOnDrop {
    fn drop(&mut self) {
        for uncached in [true, false] {
            self.tree.pool().set_uncached_reads(uncached);
            for i in (5..KEYS).step_by(501) {
                assert_eq!(self.tree.get(&key(i)).unwrap().as_deref(), Some(&[7u8; 20][..]));
                self.checked.fetch_add(1, Ordering::Relaxed);
            }
        }
        for i in 0..64 {
            self.tree.insert(&key(KEYS + i), &[9u8; 20]).unwrap();
        }
    }
}

thread_local! {
    static HOLDER: RefCell<Option<UseOnDrop>> = const { RefCell::new(None) };
}

#[test]
fn the_tree_is_usable_from_a_thread_local_destructor() {
    let options = PoolOptions { page_size: 512, pool_bytes: 64 * 512, max_pages: 1 << 16 };
    let pool = Arc::new(BufferPool::create(Arc::new(MemStorage::new()), options).unwrap());
    let tree = Arc::new(BTree::create(pool).unwrap());
    for i in 0..KEYS {
        tree.insert(&key(i), &[7u8; 20]).unwrap();
    }
    tree.pool().flush().unwrap();
    let checked = Arc::new(AtomicU64::new(0));
    let (in_thread, counter) = (Arc::clone(&tree), Arc::clone(&checked));
    std::thread::spawn(move || {
        // Registered first, so destroyed after the pool's buffers.
        HOLDER.with(|holder| *holder.borrow_mut() = Some(UseOnDrop { tree: Arc::clone(&in_thread), checked: counter }));
        for i in (0..KEYS).step_by(37) {
            in_thread.get(&key(i)).unwrap();
        }
        in_thread.insert(&key(KEYS + 100), &[9u8; 20]).unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(checked.load(Ordering::Relaxed), 2 * u64::from((KEYS - 5).div_ceil(501)));
    for i in (0..64).chain([100]) {
        assert_eq!(tree.get(&key(KEYS + i)).unwrap().as_deref(), Some(&[9u8; 20][..]), "key {}", KEYS + i);
    }
    assert!(tree.pool().stats().uncached_reads > 0, "{:?}", tree.pool().stats());
    tree.verify().unwrap();
}
