//! Helpers shared by the crash tests of the durable store
//! (`crash_store.rs`, `crash_concurrent.rs`, `crash_failpoints.rs`) and of
//! the `Db` (`db_crash.rs`, `txn_model.rs`): the operations of a workload,
//! the model state after a prefix of them, and opening a store or a `Db`
//! on a simulated directory the way a process would.

use crabtree::io::{Dir, SimDir};
use crabtree::raw::{PoolOptions, Store, StoreOptions};
use crabtree::wal::{Durability, WalOptions};
use crabtree::{Db, Options, Result};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// One operation of a workload.
#[derive(Clone, Debug)]
pub enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Checkpoint,
}

/// Key -> value.
pub type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// The state after `ops`.
pub fn model_after(ops: &[Op]) -> Model {
    let mut model = Model::new();
    for op in ops {
        match op {
            Op::Put(k, v) => {
                model.insert(k.clone(), v.clone());
            }
            Op::Delete(k) => {
                model.remove(k);
            }
            Op::Checkpoint => {}
        }
    }
    model
}

/// 512-byte pages, a pool of `frames` pages, 16 KiB log segments,
/// `Immediate`, no timers (checkpoints only when asked).
pub fn quiet_options(frames: usize) -> StoreOptions {
    StoreOptions {
        pool: PoolOptions { page_size: 512, pool_bytes: 512 * frames, max_pages: 1 << 16 },
        wal: WalOptions {
            segment_size: 16 * 1024,
            buffer_size: 4 << 20,
            durability: Durability::Immediate,
            flush_delay: Duration::from_secs(3600),
        },
        checkpoint_bytes: u64::MAX,
        checkpoint_interval: Duration::from_secs(3600),
        background_checkpoints: false,
    }
}

/// Opens (or creates) the store in `dir`: the data file `data` beside the
/// log segments, with a directory handle of this life of the "process".
pub fn open_store(dir: &SimDir, options: StoreOptions) -> Result<Store> {
    let data = dir.open("data", true)?;
    dir.sync()?;
    Store::open(data, Arc::new(dir.this_life()), options)
}

/// Opens (or creates) the `Db` in `dir` (`crabtree::raw::open_db`), as
/// [`open_store`] opens a store: the data file `data`, the log segments
/// beside it, a directory handle of this life.
pub fn open_db(dir: &SimDir, options: Options) -> Result<Db> {
    let data = dir.open("data", true)?;
    dir.sync()?;
    crabtree::raw::open_db(data, Arc::new(dir.this_life()), options)
}
