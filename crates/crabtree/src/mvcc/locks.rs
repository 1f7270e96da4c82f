//! The key lock table: short-lived write locks taken by committing
//! transactions.
//!
//! A committer locks every key it writes (by its encoded prefix, which
//! orders keys by keyspace, then key) in ascending order, holds them while
//! it validates and applies its versions, and releases them all at once.
//! Because every committer locks in the same global order and waits only
//! for keys above every key it holds, no cycle of waits can form.
//!
//! The table is sharded by key hash; each shard is a mutex over the set of
//! locked keys plus a condition variable that waiters park on. Locks are
//! held for microseconds (no I/O wait except the tree's own), so a shared
//! condition variable per shard is enough.

use crate::sync::{Condvar, Mutex};
use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};

/// Shards of the lock table (a power of two).
const SHARDS: usize = 64;

struct Shard {
    held: Mutex<HashSet<Vec<u8>>>,
    released: Condvar,
}

/// The lock table.
pub(crate) struct LockTable {
    shards: Box<[Shard]>,
    hasher: RandomState,
}

/// Locks held by one committer; released on drop.
pub(crate) struct KeyLocks<'t> {
    table: &'t LockTable,
    keys: Vec<Vec<u8>>,
}

impl LockTable {
    pub(crate) fn new() -> LockTable {
        let shards = (0..SHARDS).map(|_| Shard { held: Mutex::new(HashSet::new()), released: Condvar::new() });
        LockTable { shards: shards.collect(), hasher: RandomState::new() }
    }

    fn shard(&self, key: &[u8]) -> &Shard {
        let index = self.hasher.hash_one(key) as usize % SHARDS;
        &self.shards[index]
    }

    /// Locks `keys`, which must be sorted ascending and distinct, waiting
    /// for each held one in turn.
    pub(crate) fn lock_all(&self, keys: Vec<Vec<u8>>) -> KeyLocks<'_> {
        debug_assert!(keys.windows(2).all(|pair| pair[0] < pair[1]), "keys must be sorted and distinct");
        for key in &keys {
            let shard = self.shard(key);
            let mut held = shard.held.lock();
            while held.contains(key) {
                shard.released.wait(&mut held);
            }
            held.insert(key.clone());
        }
        KeyLocks { table: self, keys }
    }
}

impl KeyLocks<'_> {
    /// The locked keys, ascending.
    pub(crate) fn keys(&self) -> &[Vec<u8>] {
        &self.keys
    }
}

impl Drop for KeyLocks<'_> {
    fn drop(&mut self) {
        for key in &self.keys {
            let shard = self.table.shard(key);
            let removed = shard.held.lock().remove(key);
            debug_assert!(removed);
            shard.released.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn overlapping_lock_sets_in_sorted_order_never_deadlock() {
        let table = Arc::new(LockTable::new());
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let table = Arc::clone(&table);
                std::thread::spawn(move || {
                    for i in 0..2000u32 {
                        let mut keys: Vec<Vec<u8>> = (0..3).map(|j| vec![((i + j + u32::from(t)) % 7) as u8]).collect();
                        keys.sort();
                        keys.dedup();
                        drop(table.lock_all(keys));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(table.shards.iter().all(|s| s.held.lock().is_empty()));
    }
}
