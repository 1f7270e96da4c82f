//! How full inserts leave the tree's leaves: KEYS keys (16 bytes) with
//! 100-byte values inserted into an in-memory tree in one of three
//! orders, then the pages the tree holds and the insert rate:
//! * `ascending`: keys in ascending order (a sequence number);
//! * `random`: the same keys in random order;
//! * `sequences`: SEQUENCES ascending sequences interleaved (key =
//!   sequence, then its next number): each appends in the middle of the
//!   tree, as per-user or per-keyspace counters do.
//!
//! And through the public `Db` (`db-ascending`, `db-sequences`: one commit
//! per 100 keys, `Eventual`, in a temporary directory), reporting the data
//! file's page count.
//!
//! Run with `cargo run --release --example split_fill_probe -- ascending 1000000`.

use crabtree::io::MemStorage;
use crabtree::raw::{BTree, BufferPool, PoolOptions};
use crabtree::{Db, Durability, Options};
use std::sync::Arc;
use std::time::Instant;

fn key(order: &str, i: u64, keys: u64, sequences: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    match order {
        "ascending" | "db-ascending" => key[8..].copy_from_slice(&i.to_be_bytes()),
        "random" => {
            // A bijection of 0..2^64: distinct keys in random order.
            let mut x = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            key[..8].copy_from_slice(&(x ^ (x >> 31)).to_be_bytes());
        }
        _ => {
            let _ = keys;
            key[..8].copy_from_slice(&(i % sequences).to_be_bytes());
            key[8..].copy_from_slice(&(i / sequences).to_be_bytes());
        }
    }
    key
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: split_fill_probe ascending|random|sequences|db-ascending|db-sequences KEYS [SEQUENCES]";
    let order = args.next().ok_or(usage)?;
    let keys: u64 = args.next().ok_or(usage)?.parse()?;
    let sequences: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64).max(1);
    let value = [7u8; 100];
    let start = Instant::now();
    let pages = if order.starts_with("db-") {
        let dir = tempfile::tempdir()?;
        let options = Options { durability: Durability::Eventual, vacuum_interval: None, ..Options::default() };
        let db = Db::open_with(dir.path().join("probe.crab"), options)?;
        for chunk in (0..keys).collect::<Vec<_>>().chunks(100) {
            db.update(|tx| {
                for &i in chunk {
                    tx.put(&key(&order, i, keys, sequences), &value)?;
                }
                Ok(())
            })?;
        }
        let stats = db.stats();
        stats.page_count
    } else {
        let options = PoolOptions { page_size: 4096, pool_bytes: 4 << 30, max_pages: 1 << 22 };
        let tree = BTree::create(Arc::new(BufferPool::create(Arc::new(MemStorage::new()), options)?))?;
        for i in 0..keys {
            tree.insert(&key(&order, i, keys, sequences), &value)?;
        }
        tree.verify()?;
        tree.pool().stats().resident as u64
    };
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{order}: {keys} keys, {pages} pages ({:.1} keys a page), {:.0} inserts/s",
        keys as f64 / pages as f64,
        keys as f64 / secs
    );
    Ok(())
}
