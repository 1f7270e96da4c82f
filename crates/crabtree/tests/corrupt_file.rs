//! Goal: no bytes on disk make the engine panic, hang or return data it
//! did not store (RELIABILITY.md F13, quick tier).
//!
//! Method: build a small database (512-byte pages, a three-level tree, some
//! overflow values, a free list), flush it and take the durable image. Then,
//! for every byte of the file (quick) or every bit (long), open a copy with
//! that byte changed and run everything a reader does: open, a full forward
//! and backward scan, point reads of every key, and `verify`. Each step must
//! return `Ok` or an error; a panic fails the test with the offset. When a
//! step succeeds, what it returns must be what was stored: a flip that
//! leaves a page's checksum valid is impossible (CRC-32C catches every
//! single-byte change), so a successful read of a damaged file can only
//! come from pages the flip did not touch.
//!
//! Size: `CRABTREE_TEST_SIZE=long` flips every bit instead of one pattern
//! per byte.

use crabtree::io::{SimDisk, Storage};
use crabtree::raw::page::header::{self, PageType};
use crabtree::raw::page::node::CELL_OVERFLOW;
use crabtree::raw::{BTree, BufferPool, PoolOptions};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, remembering the largest single request: a length
/// read from a damaged page must not size an allocation.
struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// only addition is a relaxed atomic maximum.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

fn options() -> PoolOptions {
    PoolOptions { page_size: 512, pool_bytes: 512 * 64, max_pages: 1 << 16 }
}

fn build() -> (Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>) {
    let disk = SimDisk::new(1);
    let pool = BufferPool::create(Arc::new(disk.clone()), options()).unwrap();
    let tree = BTree::create(Arc::new(pool)).unwrap();
    let mut model = BTreeMap::new();
    for i in 0..300u32 {
        let key = format!("key{i:05}").into_bytes();
        let value = if i % 50 == 0 { vec![i as u8; 1500] } else { format!("value{i}").into_bytes() };
        tree.insert(&key, &value).unwrap();
        model.insert(key, value);
    }
    for i in (0..300u32).filter(|i| i % 3 == 0) {
        let key = format!("key{i:05}").into_bytes();
        tree.remove(&key).unwrap();
        model.remove(&key);
    }
    tree.flush().unwrap();
    assert!(tree.verify().unwrap().is_ok());
    drop(tree);
    (disk.durable_image(), model)
}

/// Runs every read path on `image`; returns whether all of it succeeded.
fn exercise(image: Vec<u8>, model: &BTreeMap<Vec<u8>, Vec<u8>>) -> bool {
    let disk = SimDisk::new(2);
    disk.set_durable_image(image);
    let storage: Arc<dyn Storage> = Arc::new(disk);
    let Ok(pool) = BufferPool::open(storage, options()) else { return false };
    let Ok(tree) = BTree::open(Arc::new(pool)) else { return false };
    let mut clean = true;
    for entry in tree.range::<&[u8], _>(..) {
        match entry {
            Ok((key, value)) => assert_eq!(model.get(&key), Some(&value), "scan returned data never stored"),
            Err(_) => {
                clean = false;
                break;
            }
        }
    }
    for entry in tree.range::<&[u8], _>(..).rev() {
        match entry {
            Ok((key, value)) => assert_eq!(model.get(&key), Some(&value), "reverse scan returned data never stored"),
            Err(_) => {
                clean = false;
                break;
            }
        }
    }
    for (key, value) in model {
        match tree.get(key) {
            Ok(Some(got)) => assert_eq!(&got, value, "get returned data never stored"),
            Ok(None) => clean = false,
            Err(_) => clean = false,
        }
    }
    match tree.verify() {
        Ok(report) => clean &= report.is_ok(),
        Err(_) => clean = false,
    }
    clean
}

#[test]
fn every_byte_of_a_damaged_file_gives_errors_not_panics() {
    let (image, model) = build();
    assert!(exercise(image.clone(), &model), "the undamaged file must read back cleanly");
    let long = std::env::var("CRABTREE_TEST_SIZE").as_deref() == Ok("long");
    let masks: Vec<u8> = if long { (0..8).map(|bit| 1u8 << bit).collect() } else { vec![0x5a] };
    let mut detected = 0usize;
    let mut tried = 0usize;
    for offset in 0..image.len() {
        for &mask in &masks {
            let mut damaged = image.clone();
            damaged[offset] ^= mask;
            let outcome = std::panic::catch_unwind(|| exercise(damaged, &model));
            match outcome {
                Ok(clean) => detected += usize::from(!clean),
                Err(_) => panic!("panic reading a file with byte {offset} xor {mask:#04x}"),
            }
            tried += 1;
        }
    }
    // Every page in use is read by the scans; a flip inside a used page must
    // be noticed. Only bytes of free pages (never read) may go unnoticed.
    assert!(detected * 2 > tried, "only {detected} of {tried} damaged files were noticed");
}

#[test]
fn truncated_files_give_errors_not_panics() {
    let (image, model) = build();
    for len in (0..image.len()).step_by(512).chain([1, 100, 513]) {
        let outcome = std::panic::catch_unwind(|| exercise(image[..len].to_vec(), &model));
        assert!(outcome.is_ok(), "panic reading a file truncated to {len} bytes");
        assert!(!outcome.unwrap(), "a file truncated to {len} bytes read back as complete");
    }
}

/// A leaf cell whose overflow value claims 1 GiB (the limit), in a page
/// whose checksum was recomputed (damage below the checksum's reach, or a
/// crafted file). The chain reader sized its buffer from the claim before
/// reading a page: a 1 GiB allocation for a 150 KiB file (with
/// overcommit off, an abort). Now a length the file could not hold is
/// `Corruption` before anything is allocated for it. Fails if the check
/// is removed from `read_chain` (the largest allocation is then 1 GiB).
#[test]
fn an_overflow_length_the_file_cannot_hold_is_refused_before_allocating_it() {
    let (mut image, model) = build();
    let mut patched = None;
    'pages: for (index, page) in image.chunks_mut(512).enumerate() {
        if header::page_type(&*page) != Some(PageType::Leaf) {
            continue;
        }
        let slots = u16::from_le_bytes([page[40], page[41]]) as usize;
        for slot in 0..slots {
            let at = 64 + 8 * slot;
            let offset = u16::from_le_bytes([page[at], page[at + 1]]) as usize;
            let key_len = u16::from_le_bytes([page[offset], page[offset + 1]]) as usize;
            if page[offset + 2] & CELL_OVERFLOW != 0 {
                page[offset + 3..offset + 7].copy_from_slice(&(1u32 << 30).to_le_bytes());
                header::seal(page);
                patched = Some((index, page[offset + 7..offset + 7 + key_len].to_vec()));
                break 'pages;
            }
        }
    }
    let (index, key) = patched.expect("the database has an overflow value");
    assert!(model.contains_key(&key));
    let disk = SimDisk::new(3);
    disk.set_durable_image(image);
    let pool = BufferPool::open(Arc::new(disk), options()).unwrap();
    let tree = BTree::open(Arc::new(pool)).unwrap();
    let before = LARGEST.swap(0, Ordering::Relaxed);
    match tree.get(&key) {
        Err(crabtree::Error::Corruption { .. }) => {}
        other => panic!("a 1 GiB claim in page {index}: {other:?}"),
    }
    let largest = LARGEST.load(Ordering::Relaxed);
    LARGEST.fetch_max(before, Ordering::Relaxed);
    // 16 MiB: far below the claim, and above anything the other tests of
    // this binary, running meanwhile, allocate at once.
    assert!(largest < 16 << 20, "reading the damaged value allocated {largest} bytes at once");
}
