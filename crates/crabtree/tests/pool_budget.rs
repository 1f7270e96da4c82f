//! The pool's memory budget holds while long overflow chains are freed.
//!
//! Goal (issue 6, defect 4): freeing a value's overflow chain, which is far
//! longer than the pool, must not make the freed pages resident; the number
//! of resident pages stays within the budget plus the pages latched at once
//! (plus one eviction batch), and the next flush writes no zero pages.
//! Method: a 64-frame pool of 4 KiB pages on `MemStorage`; store one value
//! of 16 MiB (64 MiB in the long tier), flush, replace it with a small value
//! (its chain is retired, then reclaimed by the next insert), then check
//! `PoolStats::resident` after the reclaim, after a few more operations and
//! after a flush, and the writes the flush did. Size:
//! `CRABTREE_TEST_SIZE=quick|long`.
mod common;

use crabtree::io::{MemStorage, Storage};
use crabtree::raw::BTree;
use std::sync::Arc;

const PAGE: usize = 4096;
const FRAMES: usize = 64;
/// Pages a tree operation latches at once plus one eviction batch (64
/// frames / 64 = 1 page per batch): generous.
const SLACK: usize = 16;

fn value_bytes() -> usize {
    if common::long() { 64 << 20 } else { 16 << 20 }
}

#[test]
fn freeing_a_long_overflow_chain_stays_within_the_budget() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let options = common::options(PAGE, FRAMES);
    let tree: BTree = common::create(storage, &options);
    let big: Vec<u8> = (0..value_bytes()).map(|i| (i % 251) as u8).collect();
    tree.insert(b"big", &big).unwrap();
    tree.insert(b"small", b"s").unwrap();
    tree.flush().unwrap();
    let within = |when: &str| {
        let stats = tree.pool().stats();
        assert!(
            stats.resident <= stats.frames_max + SLACK,
            "{when}: {} pages resident, budget {} (+{SLACK})",
            stats.resident,
            stats.frames_max
        );
    };
    within("after the big insert");
    // Replace: the old chain is retired, and freed by the next insert's
    // reclaim.
    assert_eq!(tree.insert(b"big", b"now small").unwrap().map(|v| v.len()), Some(big.len()));
    for i in 0..20u32 {
        tree.insert(&i.to_be_bytes(), b"x").unwrap();
        within("after reclaiming the chain");
    }
    assert!(tree.pool().free_pages().len() >= value_bytes() / PAGE, "the chain was freed");
    let writes = tree.pool().stats().writes;
    tree.flush().unwrap();
    within("after flush");
    let flushed = tree.pool().stats().writes - writes;
    assert!(flushed <= (FRAMES + SLACK + 16) as u64, "flush wrote {flushed} pages: freed pages were made dirty");
    assert_eq!(tree.get(b"big").unwrap().as_deref(), Some(&b"now small"[..]));
    common::verified(&tree);
}
