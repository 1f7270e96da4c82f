//! crabtree: an embedded, concurrent, crash-safe key-value storage engine.
//!
//! The engine is built in layers (see `docs/ARCHITECTURE.md`); dependencies
//! point down only:
//!
//! ```text
//!   db       Db, Options, Transaction, Snapshot, Keyspace, CommitTicket
//!   mvcc     versions, timestamps + watermark, key locks, commit, vacuum
//!   store    durable tree: data file + log, recovery, checkpointer
//!   btree    B-link tree: search, insert + split, delete, iterators, verify
//!   buffer   page states + hybrid latches, page cache, eviction, allocator,
//!            mini-transactions (logging), checkpoints
//!   wal      write-ahead log: records, segments, group commit, reader
//!   page     page ids, header, checksum, slotted node layout, overflow pages
//!   io       storage trait: real files, simulated disk with faults
//!   ids / limits / sync / error   newtypes, limits, atomics, the error enum
//! ```
//!
//! The public surface is small: [`Db`] and the handles it gives out
//! ([`Transaction`], [`Snapshot`], [`Keyspace`], [`CommitTicket`], [`Iter`]),
//! [`Options`], [`Stats`], [`Durability`], [`Error`], [`Result`], the id
//! newtypes, the storage layer and the write-ahead log, [`wal`]. The lower
//! layers, including the durable tree [`raw::Store`] (every change logged,
//! recovered on open), are reachable through [`raw`] for tools, benchmarks
//! and tests; they carry no stability promise.

pub mod error;
#[macro_use]
pub mod failpoint;
pub mod ids;
pub mod io;
pub mod limits;
pub mod wal;

mod btree;
mod buffer;
mod checksum;
mod db;
mod mvcc;
mod page;
mod store;
mod sync;

pub use buffer::CompactReport;
pub use db::{CommitTicket, Db, Iter, Keyspace, Options, Snapshot, Stats, Transaction};
pub use wal::Durability;

pub use error::{Error, Result};
pub use ids::{Lsn, PageId};

/// Entry points for the fuzz targets in the repository's `fuzz/` crate:
/// the transaction layer's decoders of bytes read from disk, which are
/// otherwise private. Not part of the API; thin wrappers, no cost to the
/// engine.
#[doc(hidden)]
pub mod fuzzing {
    use crate::Result;
    use crate::mvcc::encoding;

    /// Decodes a commit record as recovery does; returns the number of
    /// writes and the bytes of keys and values it holds.
    pub fn decode_commit_record(bytes: &[u8]) -> Result<(usize, usize)> {
        let record = encoding::decode_commit(bytes)?;
        let bytes = record.writes.iter().map(|w| w.key.len() + w.value.as_ref().map_or(0, Vec::len)).sum();
        Ok((record.writes.len(), bytes))
    }

    /// Decodes a version key of the tree (as reads and vacuum do): its
    /// keyspace, user key and commit timestamp.
    pub fn decode_version_key(tree_key: &[u8]) -> Result<(u32, Vec<u8>, u64)> {
        let (prefix, ts) = encoding::split_version(tree_key)?;
        let (keyspace, key) = encoding::decode_prefix(prefix)?;
        Ok((keyspace, key, ts))
    }

    /// Shortens how long tree operations restart under shared latches
    /// before they report links that disagree as corruption, and how long
    /// an allocation waits for a free page that is latched (default
    /// `limits::RESTART_PATIENCE`, 5 s, so that a starved thread on an
    /// overloaded machine is not told its tree is corrupt). Process-wide;
    /// the fuzz targets set a few milliseconds, since nothing races their
    /// single reader.
    pub fn set_restart_patience(patience: std::time::Duration) {
        crate::limits::set_restart_patience(patience);
    }

    /// Decodes a stored version value: `Some(value)` or `None` (a
    /// tombstone).
    pub fn decode_version_value(stored: &[u8]) -> Result<Option<Vec<u8>>> {
        encoding::decode_value(stored.to_vec())
    }
}

/// Low-level layers (buffer pool, page formats) for tools, benchmarks and
/// tests. No stability promise: these change with the engine.
pub mod raw {
    pub use crate::btree::{BTree, LeafEntry, LeafPruner, LevelReport, Range, RepairReport, VerifyReport};
    pub use crate::buffer::{
        AllocState, BufferPool, CheckpointReport, ExclusiveGuard, LogFlush, OptimisticGuard, PointRead, PoolOptions,
        PoolStats, Restart, SharedGuard, TruncateRecord, UncachedGuard,
    };
    pub use crate::db::{checkpoint as checkpoint_db, open_on as open_db};
    pub use crate::store::{RecoveryReport, RetainHook, Store, StoreOptions, last_lsn};

    /// Page formats and byte access.
    pub mod page {
        pub use crate::page::*;
    }
}
