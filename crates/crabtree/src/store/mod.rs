//! The durable store: a B-link tree in a data file whose every change is
//! logged, recovered on open, checkpointed in the background.
//!
//! This is the layer the transaction layer builds on, and the raw durable
//! key-value interface for tests and benchmarks until it exists:
//! [`Store::put`] and [`Store::delete`] return the LSN of their last log
//! record, and [`Store::wait_durable`] waits for it with group commit
//! underneath (one sync serves every writer that arrived meanwhile).
//!
//! * `recover.rs`: redo into the data file and the allocator's rebuild.
//! * `buffer::mtr`: how each page change is logged (mini-transactions).
//! * `buffer::checkpoint`: fuzzy checkpoints.
//!
//! Open: the data file's header page is written and synced before the log
//! is created; recovery redoes the log (`recover`), the pool opens on the
//! recovered allocator state, the log is attached, and a checkpoint makes
//! the redone state the new starting point. After a crash a background
//! thread then finishes the structure changes the crash interrupted
//! (`BTree::repair`: abandoned splits, half-dead pages) and counts the
//! entries from the leaves, beside the writers (`btree::count`), so an
//! open costs the redo (bounded by the checkpoint interval), not a scan
//! of the tree.
//!
//! Failure: a failed write or sync of the log or of the data file poisons
//! the store (every waiting writer gets the error, further writes return
//! `Error::Poisoned`, reads of what is in memory still work); reopening
//! recovers. No sync is ever retried.
//!
//! Protocol doc: `docs/protocols/recovery-and-checkpoints.md`.

mod recover;

pub use recover::{RecoveredCommit, RecoveryReport};

use crate::btree::BTree;
use crate::buffer::{BufferPool, CheckpointReport, PoolOptions, PoolStats};
use crate::ids::Lsn;
use crate::io::{Dir, FileDir, FileStorage, Storage};
use crate::page::meta::Meta;
use crate::sync::{Arc, AtomicBool, Mutex, Ordering};
use crate::wal::{Durability, RecordType, Wal, WalOptions, WalStats};
use crate::{Error, Result};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes of the chain id at the start of each piece of a chained commit
/// record (`RecordType::COMMIT_PART`, `COMMIT_END`).
const CHAIN_ID_SIZE: usize = 8;

/// Options of a [`Store`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// The buffer pool: page size (new files), memory budget, page limit.
    pub pool: PoolOptions,
    /// The log: segment size, buffer, durability mode, flush delay.
    pub wal: WalOptions,
    /// A checkpoint starts once this many log bytes were written since the
    /// last one's redo start.
    pub checkpoint_bytes: u64,
    /// ... or once this much time passed with any log written.
    pub checkpoint_interval: Duration,
    /// Run the background checkpointer (tests that want every checkpoint
    /// at a known moment turn it off).
    pub background_checkpoints: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            pool: PoolOptions::default(),
            wal: WalOptions::default(),
            checkpoint_bytes: 256 << 20,
            checkpoint_interval: Duration::from_secs(60),
            background_checkpoints: true,
        }
    }
}

/// Oldest log position the layer above still needs (its commit records):
/// checkpoints keep the log from there on.
pub type RetainHook = Box<dyn Fn() -> Option<Lsn> + Send + Sync>;

struct Inner {
    tree: Arc<BTree>,
    wal: Arc<Wal>,
    durability: Durability,
    options: StoreOptions,
    retain: Mutex<Option<RetainHook>>,
    /// Until a retain hook is installed: the start of the first commit
    /// record recovery handed back (the layer above has not re-applied them
    /// yet, so no checkpoint may drop them).
    recovered_from: Option<Lsn>,
    stop: AtomicBool,
    wake: parking_lot::Condvar,
    wake_lock: parking_lot::Mutex<()>,
    last_checkpoint: Mutex<(Lsn, Instant)>,
    checkpoint_error: Mutex<Option<String>>,
}

/// A durable B-link tree: data file plus log directory (module doc).
pub struct Store {
    inner: Arc<Inner>,
    checkpointer: Option<JoinHandle<()>>,
    recovery: RecoveryReport,
    commits: Vec<RecoveredCommit>,
}

impl Store {
    /// Opens the store at `path` (the data file) with its log in the
    /// directory `<path>-wal`, creating both if the data file does not
    /// exist or is empty. The data file is locked (`Error::Locked` if
    /// another handle has it).
    pub fn open_path(path: &Path, options: StoreOptions) -> Result<Store> {
        if path.is_dir() {
            return Err(Error::InvalidArgument(format!("{} is a directory, not a database file", path.display())));
        }
        // The parent's fsync that makes the file's entry durable is
        // `FileDir::open`'s below, which covers both entries at once (and
        // comes after the file's own when this open creates it).
        let data: Arc<dyn Storage> = Arc::new(FileStorage::open_listed(path, true)?);
        let mut log_path = path.as_os_str().to_owned();
        log_path.push("-wal");
        let log_path = std::path::PathBuf::from(log_path);
        if !data.is_empty()? {
            // Check the file before anything is created beside it: a
            // foreign or damaged file is refused and left as found.
            let meta = recover::read_meta(&*data)?;
            let beyond = data.len()? > meta.page_count.saturating_mul(meta.page_size as u64);
            if !log_path.is_dir() && beyond {
                // With a log the header is written once, at creation: pages
                // past its page count exist only in the log's terms.
                return Err(Error::InvalidArgument(format!(
                    "{} has no log directory {} (deleted?): its pages cannot be trusted without it",
                    path.display(),
                    log_path.display()
                )));
            }
        }
        // A new data file's entry was made durable when it was created, so
        // before the log beside it is (an empty data file beside a log is
        // refused).
        let log: Arc<dyn Dir> = Arc::new(FileDir::open(&log_path)?);
        Store::open(data, log, options)
    }

    /// Opens (creating if new) the store on `data` with its log in `log`,
    /// running recovery.
    pub fn open(data: Arc<dyn Storage>, log: Arc<dyn Dir>, options: StoreOptions) -> Result<Store> {
        let fresh = recover::is_new(&*data, &*log)?;
        if fresh {
            let page_size = options.pool.page_size;
            if !crate::limits::page_size_valid(page_size) {
                return Err(Error::InvalidArgument(format!("page size {page_size}")));
            }
            data.write_at(0, &Meta::new(page_size).encode())?;
            data.sync()?;
        }
        let recovered = recover::recover(
            &data,
            Arc::clone(&log),
            options.wal.clone(),
            options.pool.pool_bytes,
            options.pool.max_pages,
        )?;
        let wal = Arc::new(recovered.wal);
        let pool = Arc::new(BufferPool::open_recovered(
            Arc::clone(&data),
            options.pool.clone(),
            recovered.page_size,
            &recovered.state,
        )?);
        pool.set_checkpoint_id(recovered.checkpoint_id);
        pool.attach_wal(Arc::clone(&wal))?;
        // After a clean close the checkpoint's entry count is exact;
        // otherwise it is recounted below.
        let root = pool.root(crate::btree::ROOT_SLOT);
        let tree =
            Arc::new(if root.0 == 0 { BTree::create(Arc::clone(&pool))? } else { BTree::open(Arc::clone(&pool))? });
        let mut report = recovered.report;
        // A new store has nothing to finish and an exact count (zero): no
        // background recount, whose partial count `Db::stats` would show.
        report.clean |= fresh;
        // Keep the log from the first recovered commit record: the layer
        // above re-applies them after this returns, and a crash before it
        // has must find them again.
        let retain = recovered.commits.iter().map(|commit| commit.start).min();
        // The redone state is the new starting point.
        pool.checkpoint(retain)?;
        if !report.clean {
            // What the crash interrupted (splits, deletions) and the entry
            // count are finished in the background, beside the writers, so
            // opening costs the redo alone (`btree::count`).
            tree.finish_recovery_in_background()?;
        }
        let inner = Arc::new(Inner {
            tree,
            durability: options.wal.durability,
            wal,
            retain: Mutex::new(None),
            recovered_from: retain,
            stop: AtomicBool::new(false),
            wake: parking_lot::Condvar::new(),
            wake_lock: parking_lot::Mutex::new(()),
            last_checkpoint: Mutex::new((Lsn::ZERO, Instant::now())),
            checkpoint_error: Mutex::new(None),
            options,
        });
        *inner.last_checkpoint.lock() = (inner.wal.end_lsn(), Instant::now());
        let checkpointer = if inner.options.background_checkpoints {
            let worker = Arc::clone(&inner);
            Some(std::thread::Builder::new().name("crabtree-checkpointer".into()).spawn(move || worker.run())?)
        } else {
            None
        };
        Ok(Store { inner, checkpointer, recovery: report, commits: recovered.commits })
    }

    /// The tree. Its writes are logged; use [`Store::wait_durable`] with the
    /// LSN from [`last_lsn`] to make them durable.
    pub fn tree(&self) -> &BTree {
        &self.inner.tree
    }

    /// The tree, shared (for layers that keep it).
    pub fn tree_arc(&self) -> Arc<BTree> {
        Arc::clone(&self.inner.tree)
    }

    /// The buffer pool.
    pub fn pool(&self) -> &Arc<BufferPool> {
        self.inner.tree.pool()
    }

    /// The log.
    pub fn wal(&self) -> &Arc<Wal> {
        &self.inner.wal
    }

    /// What recovery did when this store was opened (the redo; see
    /// [`Store::wait_recovered`] for the background part).
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Waits until the background part of a crash recovery (finishing
    /// interrupted splits and deletions, counting the entries) is done and
    /// returns the whole report. Errors: that work failed (the entry count
    /// is then not exact and the next open recovers again).
    pub fn wait_recovered(&self) -> Result<RecoveryReport> {
        let repaired = self.inner.tree.wait_recovery_finished()?;
        let mut report = self.recovery.clone();
        report.splits_finished = repaired.splits_finished;
        report.deletions_finished = repaired.deletions_finished;
        Ok(report)
    }

    /// The commit records of the layer above that recovery found (ending
    /// after the retain position of the last checkpoint), in log order of
    /// their last records; taken once.
    pub fn take_recovered_commits(&mut self) -> Vec<RecoveredCommit> {
        std::mem::take(&mut self.commits)
    }

    /// Installs the hook telling checkpoints the oldest log position the
    /// layer above still needs.
    pub fn set_retain_hook(&self, hook: RetainHook) {
        *self.inner.retain.lock() = Some(hook);
    }

    /// Stores `value` under `key`; returns the end LSN of the last log
    /// record this write made (wait on it for durability).
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<Lsn> {
        self.inner.tree.insert(key, value)?;
        Ok(last_lsn())
    }

    /// Removes `key`; returns whether it was there and the LSN to wait on.
    pub fn delete(&self, key: &[u8]) -> Result<(bool, Lsn)> {
        let old = self.inner.tree.remove(key)?;
        Ok((old.is_some(), last_lsn()))
    }

    /// The value under `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.tree.get(key)
    }

    /// `put`, then waits for durability as the store's mode says
    /// (`Immediate`: until durable; `Eventual`: returns at once).
    pub fn put_durable(&self, key: &[u8], value: &[u8]) -> Result<Lsn> {
        let lsn = self.put(key, value)?;
        if self.inner.durability == Durability::Immediate {
            self.wait_durable(lsn)?;
        }
        Ok(lsn)
    }

    /// Appends a commit record of the layer above (opaque here); returns
    /// the end LSN of its last log record. Recovery hands it back through
    /// [`Store::take_recovered_commits`] until a checkpoint's retain
    /// position passes it.
    ///
    /// A payload larger than one log record goes out as a chain of
    /// `COMMIT_PART` records closed by a `COMMIT_END`, appended one after
    /// the other (other records may fall between them); recovery counts a
    /// chain only once its end is in the log. The caller's retain hook
    /// must keep the log from before the call until the commit is applied
    /// (a lower bound taken before the call, e.g. [`Wal::end_lsn`], does).
    pub fn append_commit(&self, payload: &[u8]) -> Result<Lsn> {
        self.inner.tree.pool().check_poisoned()?;
        // A full disk refuses the commit before any of it is logged.
        self.check_space()?;
        if payload.len() <= crate::limits::WAL_RECORD_PAYLOAD_MAX {
            return self.inner.wal.append(RecordType::COMMIT, payload);
        }
        let pieces: Vec<&[u8]> = payload.chunks(crate::limits::WAL_RECORD_PAYLOAD_MAX - CHAIN_ID_SIZE).collect();
        let Some((last, first)) = pieces.split_last() else {
            return self.inner.wal.append(RecordType::COMMIT, payload);
        };
        let mut chain = u64::MAX;
        let mut record = Vec::with_capacity(crate::limits::WAL_RECORD_PAYLOAD_MAX);
        for (kind, bytes) in
            first.iter().map(|bytes| (RecordType::COMMIT_PART, bytes)).chain([(RecordType::COMMIT_END, last)])
        {
            record.clear();
            record.extend_from_slice(&chain.to_le_bytes());
            record.extend_from_slice(bytes);
            let end = self.inner.wal.append(kind, &record)?;
            if kind == RecordType::COMMIT_END {
                return Ok(end);
            }
            if chain == u64::MAX {
                chain = end.0 - crate::wal::record_size(record.len()) as u64;
            }
            failpoint!("commit.between_pieces");
        }
        Err(Error::InvalidArgument("empty commit chain".into()))
    }

    /// `Error::DiskFull` while the data file's disk is full (a write-back
    /// failed for want of space and not every dirty page was written
    /// since: `buffer/space.rs`) or the log's has no room for a spare
    /// segment (`Wal::check_space`).
    pub fn check_space(&self) -> Result<()> {
        self.inner.tree.pool().check_space()?;
        self.inner.wal.check_space()
    }

    /// Waits until the log is durable up to `lsn` (group commit).
    pub fn wait_durable(&self, lsn: Lsn) -> Result<()> {
        if self.inner.wal.is_poisoned() {
            return Err(Error::Poisoned);
        }
        self.inner.wal.wait_durable(lsn)
    }

    /// Takes a checkpoint now.
    pub fn checkpoint(&self) -> Result<CheckpointReport> {
        self.inner.checkpoint()
    }

    /// Cuts the trailing free pages off the data file
    /// (`BTree::compact`).
    pub fn compact(&self) -> Result<crate::buffer::CompactReport> {
        self.inner.tree.compact()
    }

    /// Whether a failed write or sync poisoned the store.
    pub fn is_poisoned(&self) -> bool {
        self.inner.wal.is_poisoned()
    }

    /// Counters of the pool and the log.
    pub fn stats(&self) -> (PoolStats, WalStats) {
        (self.pool().stats(), self.inner.wal.stats())
    }

    /// Stops the checkpointer, takes a last checkpoint (so the next open
    /// replays nothing) and closes the log. Dropping the store does the
    /// same without the error.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        self.inner.stop.store(true, Ordering::SeqCst);
        {
            let _guard = self.inner.wake_lock.lock();
            self.inner.wake.notify_all();
        }
        if let Some(worker) = self.checkpointer.take() {
            let _ = worker.join();
        }
        // A close right after a crash recovery waits for its background
        // part, so the count the clean close vouches for is exact.
        let finished = self.inner.tree.wait_recovery_finished();
        if self.inner.wal.is_poisoned() {
            return Err(Error::Poisoned);
        }
        // The last checkpoint keeps what the layer above still needs (its
        // retain hook), like every other.
        self.inner.tree.quiesce()?;
        self.inner.checkpoint()?;
        // Unfinished: no clean-close marker, the next open recovers again.
        finished?;
        // Nothing runs any more: the next open has nothing to finish and
        // can trust the entry count of the checkpoint just taken.
        let end = self.inner.wal.append(RecordType::CLEAN_CLOSE, &[0u8; 8])?;
        self.inner.wal.wait_durable(end)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if self.checkpointer.is_some() || !self.inner.stop.load(Ordering::SeqCst) {
            let _ = self.shutdown();
        }
    }
}

/// The end LSN of the last log record this thread appended (zero if none):
/// what a writer waits on to make its change durable.
pub fn last_lsn() -> Lsn {
    crate::buffer::last_lsn()
}

impl Inner {
    fn checkpoint(&self) -> Result<CheckpointReport> {
        let retain = match self.retain.lock().as_ref() {
            Some(hook) => hook(),
            None => self.recovered_from,
        };
        let report = self.tree.checkpoint(retain)?;
        *self.last_checkpoint.lock() = (report.redo, Instant::now());
        Ok(report)
    }

    /// The checkpointer: a checkpoint when enough log was written since
    /// the last one, or enough time passed with any written.
    fn run(&self) {
        let poll = Duration::from_millis(50).min(self.options.checkpoint_interval);
        while !self.stop.load(Ordering::SeqCst) {
            {
                let mut guard = self.wake_lock.lock();
                if !self.stop.load(Ordering::SeqCst) {
                    self.wake.wait_for(&mut guard, poll);
                }
            }
            if self.stop.load(Ordering::SeqCst) || self.wal.is_poisoned() {
                return;
            }
            let (redo, at) = *self.last_checkpoint.lock();
            let written = self.wal.end_lsn().0.saturating_sub(redo.0);
            // Not while the data file's disk is full: the write-back pass
            // would fail, and each try appends a begin record to a log
            // nothing can recycle (the cleaner retries the pages).
            let due = (written >= self.options.checkpoint_bytes
                || (written > 64 && at.elapsed() >= self.options.checkpoint_interval))
                && !self.tree.pool().disk_full();
            if due && let Err(error) = self.checkpoint() {
                *self.checkpoint_error.lock() = Some(error.to_string());
            }
        }
    }
}
