//! The probes' larger-than-memory tree file: the keys of `keys.rs` with
//! 100-byte values, bulk-loaded as in the `pool_oom` bench.

use super::keys::key;
use crabtree::io::FileStorage;
use crabtree::raw::{BTree, BufferPool, PoolOptions};
use std::path::Path;
use std::sync::Arc;

/// The value of key `i`: its index, then a byte of it repeated.
pub fn value(i: u64) -> [u8; 100] {
    let mut value = [(i % 251) as u8; 100];
    value[..8].copy_from_slice(&i.to_le_bytes());
    value
}

/// Writes keys `0..keys` into a new tree file at `path` (built in a pool
/// of `options`, which should hold it all) and returns the file's size.
pub fn write(path: &Path, keys: u64, options: PoolOptions) -> crabtree::Result<usize> {
    {
        let pool = BufferPool::create(Arc::new(FileStorage::open(path, true)?), options)?;
        let tree = BTree::create(Arc::new(pool))?;
        let mut sorted: Vec<([u8; 16], u64)> = (0..keys).map(|i| (key(i), i)).collect();
        sorted.sort_unstable();
        tree.bulk_load(sorted.iter().map(|(k, i)| (*k, value(*i))))?;
        tree.flush()?;
    }
    Ok(std::fs::metadata(path)?.len() as usize)
}
