//! The public database: [`Db`], its [`Options`], and the handles it gives
//! out ([`Transaction`], [`Snapshot`], [`Keyspace`], [`CommitTicket`]).
//!
//! A `Db` is an `Arc` around the open database (`Inner`): the MVCC engine
//! over one B-link tree in one data file, the keyspace catalog, the
//! durability notifier, and a background vacuum worker. Transactions,
//! snapshots and iterators own an `Arc` of `Inner` too, so they may cross
//! threads and `.await` points; the database closes (flushes, releases the
//! file lock) when the last of them is dropped.
//!
//! # Invariants
//! * One `Inner` per file: the data file is `flock`ed for the life of the
//!   `Inner` ([`crate::io::FileStorage`]); a second open gets
//!   [`Error::Locked`].
//! * A failed open writes nothing to the file it found.
//! * The keyspace catalog lives in keyspace 0 of the tree, as ordinary MVCC
//!   versions (`name -> id`); ids are never reused while the database is
//!   open, and ids found in the tree but not in the catalog at open belong
//!   to dropped keyspaces (vacuum removes them).
//!
//! Durability: the database is a [`Store`](crate::store::Store) (data file
//! plus log directory `<path>-wal`, every page change logged, recovery on
//! open). Commit records go into the same log ([`StoreCommitLog`]) before
//! the versions are applied, so a commit whose record is durable is
//! re-applied by recovery (`mvcc::replay`) if the crash cut its apply
//! short, and a commit whose record was lost left nothing in the log
//! after it. Checkpoints keep the log from the oldest commit still being
//! applied (the retain hook), and record the last commit timestamp.
//!
//! Tests open a `Db` on the simulated disk with [`open_on`]
//! (`raw::open_db`: a data storage and a log directory instead of a path)
//! and force checkpoints with [`checkpoint`] (`raw::checkpoint_db`).
//!
//! Lower layers used: `mvcc`, `btree`, `buffer`, `io`.

mod iter;
mod keyspace;
mod snapshot;
mod ticket;
mod transaction;

pub use iter::Iter;
pub use keyspace::Keyspace;
pub use snapshot::Snapshot;
pub use ticket::CommitTicket;
pub use transaction::Transaction;

use crate::btree::BTree;
use crate::buffer::{CheckpointReport, CompactReport, PoolOptions};
use crate::ids::Lsn;
use crate::io::{Dir, Storage};
use crate::mvcc::durability::{CommitLog, Notifier};
use crate::mvcc::encoding::{self, Ts};
use crate::mvcc::{self, Engine};
use crate::store::{RecoveredCommit, Store, StoreOptions};
use crate::sync::{Arc, Condvar, Mutex, Ordering};
use crate::wal::Durability;
use crate::{Error, Result, limits};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Root slot holding the last commit timestamp, saved into every
/// checkpoint (slots 0 and 1 are the tree's).
const LAST_TS_SLOT: usize = 7;

/// Root slot a clean close sets to the last commit timestamp when vacuum
/// had nothing left (every version commits left behind removed), else to
/// zero. An open whose clock, after replaying the log, still equals it
/// knows no old version waits anywhere, and skips vacuum's whole-tree pass
/// (`mvcc::backlog`). Any later commit raises the clock past it, so a
/// stale value never matches.
const VACUUMED_SLOT: usize = 6;

/// Commit records into the store's log, and the oldest one whose versions
/// are not all applied yet (checkpoints keep the log from there).
struct StoreCommitLog {
    store: Store,
    in_flight: Arc<InFlight>,
}

/// Commits appended and not yet applied, for the retain hook. Shared with
/// the hook without the store, so a checkpoint never holds the last
/// reference to the database (whose drop joins the checkpointer).
///
/// Sharded by committing thread: a record is registered, re-keyed and
/// removed in its committer's shard (`applied` looks in the others only if
/// called from another thread), so each record stays in one shard for its
/// whole life and commits on different threads take different locks (one
/// lock, taken three times per commit, was shared by every committer).
struct InFlight {
    shards: Box<[InFlightShard]>,
    /// Tickets for commits being appended.
    tickets: std::sync::atomic::AtomicU64,
    wal: Arc<crate::wal::Wal>,
}

/// Key -> a lower bound of the start LSN of each commit record being
/// appended or not yet applied. The key is the record's end LSN once
/// appended, a ticket with the top bit set while it is appended. On its
/// own cache line.
#[repr(align(128))]
#[derive(Default)]
struct InFlightShard(parking_lot::Mutex<std::collections::HashMap<u64, u64>>);

/// Shards of [`InFlight`].
const IN_FLIGHT_SHARDS: usize = 16;

/// Where threads' home shards of [`InFlight`] start.
static NEXT_IN_FLIGHT_SHARD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

thread_local! {
    /// This thread's shard of [`InFlight`].
    static IN_FLIGHT_HOME: usize = NEXT_IN_FLIGHT_SHARD.fetch_add(1, Ordering::Relaxed) % IN_FLIGHT_SHARDS;
}

/// The top bit marks an `InFlight` key as a ticket (LSNs never reach it).
const TICKET_BIT: u64 = 1 << 63;

impl InFlight {
    fn new(wal: Arc<crate::wal::Wal>) -> InFlight {
        let shards = (0..IN_FLIGHT_SHARDS).map(|_| InFlightShard::default()).collect();
        InFlight { shards, tickets: std::sync::atomic::AtomicU64::new(0), wal }
    }

    /// The calling thread's shard.
    fn home(&self) -> &parking_lot::Mutex<std::collections::HashMap<u64, u64>> {
        &self.shards[IN_FLIGHT_HOME.with(|home| *home)].0
    }

    /// Where the log must be kept from: the oldest in-flight commit record,
    /// or (none) the log's end now, which every later commit is past.
    ///
    /// The log's end is read before the shards: a record registered in a
    /// shard after the scan passed it read the end later, so it starts at
    /// or past the value returned; one registered before is found, since
    /// it never leaves its shard until applied.
    fn retain(&self) -> Lsn {
        let end = self.wal.end_lsn();
        let mut oldest = end.0;
        for shard in self.shards.iter() {
            if let Some(&start) = shard.0.lock().values().min() {
                oldest = oldest.min(start);
            }
            failpoint!("in_flight.retain_shard", ignore);
        }
        Lsn(oldest)
    }

    /// Forgets every record (recovery's, once re-applied).
    fn clear(&self) {
        for shard in self.shards.iter() {
            shard.0.lock().clear();
        }
    }

    /// Removes the record ending at `lsn`: from this thread's shard, where
    /// its committer registered it, else from whichever holds it.
    fn remove(&self, lsn: Lsn) {
        if self.home().lock().remove(&lsn.0).is_some() {
            return;
        }
        for shard in self.shards.iter() {
            if shard.0.lock().remove(&lsn.0).is_some() {
                return;
            }
        }
    }
}

impl CommitLog for StoreCommitLog {
    fn check_space(&self) -> Result<()> {
        self.store.check_space()
    }
    fn append_commit(&self, record: &[u8]) -> Result<Lsn> {
        // Registered before the append, from the log's end (a lower bound
        // of where the record starts): the retain hook never sees a commit
        // appended but not registered, and a chained record (larger than
        // one log record) is kept from its first piece. The clock in root
        // slot 7 (saved by every checkpoint) is raised before the commit
        // leaves the registry, so it covers every commit the hook lets go.
        let ticket = TICKET_BIT | self.in_flight.tickets.fetch_add(1, Ordering::Relaxed);
        let home = self.in_flight.home();
        home.lock().insert(ticket, self.store.wal().end_lsn().0);
        let appended = self.store.append_commit(record);
        if appended.is_ok()
            && let Some(ts) = record.get(1..9).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
        {
            self.store.pool().raise_root_value(LAST_TS_SLOT, ts);
        }
        let mut records = home.lock();
        let start = records.remove(&ticket);
        let end = appended?;
        if let Some(start) = start {
            records.insert(end.0, start);
        }
        Ok(end)
    }
    fn applied(&self, lsn: Lsn) {
        self.in_flight.remove(lsn);
    }
    fn wait_durable(&self, lsn: Lsn) -> Result<()> {
        self.store.wait_durable(lsn)
    }
    fn durable_lsn(&self) -> Lsn {
        self.store.wal().durable_lsn()
    }
}

/// How a database is opened. `Options::default()` is what [`Db::open`]
/// uses.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let options = crabtree::Options { memory_budget: 16 << 20, ..Default::default() };
/// let db = crabtree::Db::open_with(dir.path().join("db.crab"), options)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    /// Page size of a new database (a power of two, 512 B to 64 KiB); an
    /// existing database keeps its own.
    pub page_size: usize,
    /// Bytes of memory the page cache may use.
    pub memory_budget: usize,
    /// Largest number of pages the data file may grow to. The page cache
    /// reserves address space for this many (about `page_size + 16` bytes
    /// each) and commits memory only as pages are used; under an
    /// address-space limit (`RLIMIT_AS`, `ulimit -v`) lower it to fit.
    pub max_pages: u64,
    /// When [`Transaction::commit`] returns: once the commit is durable
    /// (`Immediate`, the default) or at once (`Eventual`).
    pub durability: Durability,
    /// Size of each write-ahead log segment file (used once the tree logs
    /// through the WAL).
    pub log_segment_size: u64,
    /// Log bytes between checkpoints (used once the tree logs through the
    /// WAL).
    pub checkpoint_bytes: u64,
    /// How often the background vacuum runs; `None` turns it off
    /// ([`Db::vacuum`] still works). A round visits the keys whose old
    /// versions commits left behind since the last one (and runs sooner
    /// when many accumulate); it reads the whole tree only after falling
    /// behind, or once after an open that follows a crash or a close that
    /// left old versions (with this on, a close removes what is left).
    pub vacuum_interval: Option<Duration>,
    /// How many times [`Db::update`] retries a transaction that conflicts.
    pub update_retries: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            page_size: limits::PAGE_SIZE_DEFAULT,
            memory_budget: limits::POOL_BYTES_DEFAULT,
            max_pages: limits::MAX_PAGES_DEFAULT,
            durability: Durability::Immediate,
            log_segment_size: limits::WAL_SEGMENT_SIZE_DEFAULT,
            checkpoint_bytes: 64 << 20,
            vacuum_interval: Some(Duration::from_secs(1)),
            update_retries: 32,
        }
    }
}

/// Counters and gauges of an open database, from [`Db::stats`].
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let db = crabtree::Db::open(dir.path().join("db.crab"))?;
/// let snap = db.snapshot();
/// let stats = db.stats();
/// assert_eq!(stats.snapshots_active, 1);
/// assert!(stats.oldest_snapshot_age.is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Stats {
    /// The newest commit timestamp handed out.
    pub last_commit_ts: u64,
    /// The visibility watermark: new snapshots read at this timestamp.
    pub visible_ts: u64,
    /// Snapshots and transactions open now.
    pub snapshots_active: usize,
    /// How long the oldest open snapshot (or transaction) has been open.
    pub oldest_snapshot_age: Option<Duration>,
    /// The timestamp the oldest open snapshot reads at.
    pub oldest_snapshot_ts: Option<u64>,
    /// Versions the last vacuum pass or round had to keep only for
    /// snapshots older than the watermark (what the oldest snapshot pins).
    pub versions_pinned: u64,
    /// Transactions committed (with at least one write) since open.
    pub commits: u64,
    /// Commits refused with [`Error::Conflict`] since open.
    pub conflicts: u64,
    /// Old versions removed by writers at commit.
    pub versions_pruned: u64,
    /// Old versions and tombstones removed by vacuum.
    pub versions_vacuumed: u64,
    /// Vacuum passes (whole tree) and background rounds (the keys commits
    /// left old versions of) that found work.
    pub vacuum_passes: u64,
    /// Versions vacuum read since open (what its passes and rounds cost).
    pub vacuum_versions_read: u64,
    /// Vacuum has yet to read the whole tree once: after an open that
    /// followed a crash, or a close that left old versions behind, or
    /// after its list of keys to visit overflowed. A clean close removes
    /// what is left (up to 100,000 keys' worth) and records it, so the
    /// next open starts with this false.
    pub vacuum_whole_pass_pending: bool,
    /// Entries (versions) in the tree. Just after a crash recovery, while
    /// the entries are counted in the background, a partial count.
    pub tree_entries: u64,
    /// Pages in the data file.
    pub page_count: u64,
    /// Bytes per page.
    pub page_size: usize,
    /// The buffer pool's counters: pages resident and loaded, evictions,
    /// write-backs, uncached point reads (`raw::PoolStats`).
    pub pool: crate::buffer::PoolStats,
}

/// The open database, shared by every handle.
pub(crate) struct Inner {
    pub(crate) engine: Engine,
    /// The engine's commit log, with the store (for [`checkpoint`]).
    commit_log: Arc<StoreCommitLog>,
    pub(crate) catalog: Mutex<keyspace::Catalog>,
    pub(crate) notifier: Arc<Notifier>,
    notifier_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub(crate) options: Options,
    /// Serializes vacuum passes, and keeps them out of `check`.
    vacuuming: Mutex<()>,
    /// Set once open or create succeeded: a failed open must not write
    /// (flush) the file it found.
    opened: bool,
    path: PathBuf,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.notifier.stop();
        if let Some(thread) = self.notifier_thread.lock().take() {
            let joined = thread.join();
            debug_assert!(joined.is_ok(), "durability notifier panicked");
        }
        if !self.opened {
            return;
        }
        let tree = &self.engine.tree;
        let last_ts = self.engine.oracle.last_allocated();
        // Nothing reads or commits any more. With background vacuum on,
        // remove what the backlog names now, so the next open need not
        // read the whole tree; an error only costs the next open that pass.
        let clean = if self.options.vacuum_interval.is_some() {
            mvcc::vacuum::drain_at_close(&self.engine).unwrap_or(false)
        } else {
            self.engine.backlog.is_clean()
        };
        tree.pool().set_root_value(VACUUMED_SLOT, if clean { last_ts } else { 0 });
        tree.pool().set_root_value(LAST_TS_SLOT, last_ts);
        // The store closes when the last reference to the log goes (the
        // engine's goes with `self`): a checkpoint and a clean-close record.
    }
}

/// The background vacuum worker: a thread and how to stop it.
struct Worker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if let Some(thread) = self.thread.take() {
            let joined = thread.join();
            debug_assert!(joined.is_ok(), "vacuum worker panicked");
        }
    }
}

/// What `Db` clones share. The worker is declared (so dropped, joined)
/// first: the database closes after it stopped.
struct Shared {
    _worker: Option<Worker>,
    inner: Arc<Inner>,
}

/// An open database: a handle to share between threads (clones are cheap
/// and refer to the same database).
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
/// let mut tx = db.begin();
/// tx.put(b"apple", b"red")?;
/// tx.commit()?;
/// assert_eq!(db.snapshot().get(b"apple")?, Some(b"red".to_vec()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Db {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.shared.inner.path).finish_non_exhaustive()
    }
}

impl Db {
    /// Opens the database at `path`, creating it if the file is missing
    /// or empty, with default [`Options`]. Takes an exclusive lock on the
    /// file: a second open, in this process or another, fails with
    /// [`Error::Locked`] until every handle of the first is dropped.
    ///
    /// A directory, a file that is not a crabtree database, or a damaged
    /// one gives an error and is left as it was.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// assert!(matches!(crabtree::Db::open(dir.path().join("data.crab")), Err(crabtree::Error::Locked)));
    /// assert!(crabtree::Db::open(dir.path()).is_err(), "a directory is not a database");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Db> {
        Db::open_with(path, Options::default())
    }

    /// Opens (or creates) the database at `path` with `options`; see
    /// [`Db::open`].
    ///
    /// ```
    /// use crabtree::{Db, Durability, Options};
    /// let dir = tempfile::tempdir()?;
    /// let options = Options { durability: Durability::Eventual, page_size: 8192, ..Default::default() };
    /// let db = Db::open_with(dir.path().join("data.crab"), options)?;
    /// assert_eq!(db.stats().page_size, 8192);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_with(path: impl AsRef<Path>, options: Options) -> Result<Db> {
        let path = path.as_ref();
        if path.is_dir() {
            return Err(Error::InvalidArgument(format!("{} is a directory, not a crabtree database", path.display())));
        }
        check_options(&options)?;
        let store = Store::open_path(path, store_options(&options))?;
        Db::on_store(store, options, path)
    }

    /// Opens the database on a recovered `store`: re-applies its commit
    /// records, then starts the vacuum worker.
    fn on_store(mut store: Store, options: Options, path: &Path) -> Result<Db> {
        let commits = store.take_recovered_commits();
        let inner = Arc::new(Inner::open(store, commits, options, path)?);
        let worker = match inner.options.vacuum_interval {
            Some(interval) => {
                let worker = spawn_vacuum(Arc::downgrade(&inner), interval)?;
                let signal = Arc::clone(&worker.stop);
                inner.engine.set_vacuum_waker(Some(Box::new(move || {
                    signal.1.notify_one();
                })));
                Some(worker)
            }
            None => None,
        };
        Ok(Db { shared: Arc::new(Shared { _worker: worker, inner }) })
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.shared.inner
    }

    /// Begins a read-write transaction at the current snapshot. Its writes
    /// are buffered until [`Transaction::commit`]; dropping it rolls back.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// let mut tx = db.begin();
    /// tx.put(b"k", b"v")?;
    /// assert_eq!(tx.get(b"k")?, Some(b"v".to_vec()), "reads its own writes");
    /// assert_eq!(db.snapshot().get(b"k")?, None, "nobody else sees them yet");
    /// tx.commit()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn begin(&self) -> Transaction {
        Transaction::new(Arc::clone(self.inner()))
    }

    /// A read-only snapshot of the latest committed state. Never blocks and
    /// never conflicts; it keeps the versions it reads from vacuum until
    /// it is dropped.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// db.update(|tx| tx.put(b"k", b"1"))?;
    /// let snap = db.snapshot();
    /// db.update(|tx| tx.put(b"k", b"2"))?;
    /// assert_eq!(snap.get(b"k")?, Some(b"1".to_vec()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::new(Arc::clone(self.inner()))
    }

    /// Runs `f` in a transaction and commits it, running it again (up to
    /// [`Options::update_retries`] times) when the commit conflicts. `f`
    /// may run more than once, so it should have no other side effects.
    /// An error from `f` rolls back and is returned as is.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// let balance = db.update(|tx| {
    ///     let old = tx.get(b"balance")?.map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()));
    ///     tx.put(b"balance", &(old + 10).to_le_bytes())?;
    ///     Ok(old + 10)
    /// })?;
    /// assert_eq!(balance, 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn update<T>(&self, mut f: impl FnMut(&mut Transaction) -> Result<T>) -> Result<T> {
        let retries = self.inner().options.update_retries;
        let mut attempt = 0u32;
        loop {
            let mut tx = self.begin();
            let outcome = f(&mut tx).and_then(|value| {
                if !tx.is_closed() {
                    tx.commit()?;
                }
                Ok(value)
            });
            match outcome {
                Err(Error::Conflict) if attempt + 1 < retries => {
                    attempt += 1;
                    // Back off a little, randomly, so two hot writers stop
                    // colliding in lockstep.
                    let micros = fastrand::u64(0..(10u64 << attempt.min(10)));
                    std::thread::sleep(Duration::from_micros(micros));
                }
                outcome => return outcome,
            }
        }
    }

    /// The keyspace named `name`, created (empty) if it does not exist.
    /// `"default"` is the keyspace the plain `get`/`put`/`delete`/`range`
    /// use.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// let users = db.keyspace("users")?;
    /// let mut tx = db.begin();
    /// tx.put_in(&users, b"alice", b"admin")?;
    /// tx.put(b"alice", b"in the default keyspace")?;
    /// tx.commit()?;
    /// assert_eq!(db.snapshot().get_in(&users, b"alice")?, Some(b"admin".to_vec()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn keyspace(&self, name: &str) -> Result<Keyspace> {
        keyspace::open(self.inner(), name)
    }

    /// The names of every keyspace, `"default"` included, sorted.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// db.keyspace("b")?;
    /// db.keyspace("a")?;
    /// assert_eq!(db.keyspaces(), ["a", "b", "default"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn keyspaces(&self) -> Vec<String> {
        self.inner().catalog.lock().names()
    }

    /// Drops the keyspace named `name`; returns whether it existed.
    /// Snapshots taken before still read it; its space is reclaimed by
    /// vacuum once they end. Commits that write through an old handle of
    /// it fail with [`Error::InvalidArgument`]. The default keyspace cannot
    /// be dropped.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// let tmp = db.keyspace("tmp")?;
    /// db.update(|tx| tx.put_in(&tmp, b"k", b"v"))?;
    /// assert!(db.drop_keyspace("tmp")?);
    /// assert!(!db.keyspaces().contains(&"tmp".to_string()));
    /// assert_eq!(db.snapshot().get_in(&db.keyspace("tmp")?, b"k")?, None, "a new, empty keyspace");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn drop_keyspace(&self, name: &str) -> Result<bool> {
        keyspace::drop_keyspace(self.inner(), name)
    }

    /// Runs one vacuum pass over the whole tree now: removes every version
    /// no snapshot can see (and tombstones past the oldest snapshot), and
    /// the versions of dropped keyspaces. Returns how many versions it
    /// removed. (The background vacuum visits only the keys commits left
    /// old versions of; this reads everything up to the last key there is
    /// when it begins: keys written meanwhile hold only versions too new
    /// for it, so writers appending at the end cannot keep it running. It
    /// reads keys and small values; large values only where it removes
    /// them.)
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// db.update(|tx| tx.put(b"k", b"v"))?;
    /// db.update(|tx| tx.delete(b"k"))?;
    /// db.vacuum()?;
    /// assert_eq!(db.stats().tree_entries, 1, "only the catalog's entry for `default` is left");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn vacuum(&self) -> Result<u64> {
        let _alone = self.inner().vacuuming.lock();
        Ok(mvcc::vacuum::pass(&self.inner().engine, &|| false)?.removed)
    }

    /// Returns the free pages at the end of the data file to the operating
    /// system: finds the longest run of free pages ending at the last page,
    /// logs their removal (durably) and truncates the file. Pages become
    /// free when deletions empty them and [`Db::vacuum`] (or the background
    /// vacuum) removed the old versions they held; only the ones at the end
    /// of the file can be returned (live pages are not moved). Safe with
    /// concurrent readers and writers: allocations of new pages wait while
    /// it runs (one log sync, one `ftruncate` and one data sync;
    /// [`CompactReport::alloc_held`]), everything else goes on. Errors:
    /// I/O (a failed data sync poisons the database, as any does);
    /// `Poisoned`.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("data.crab");
    /// let db = crabtree::Db::open(&path)?;
    /// let value = vec![7u8; 64 * 1024]; // overflow pages, freed with the key
    /// db.update(|tx| tx.put(b"big", &value))?;
    /// let before = std::fs::metadata(&path)?.len();
    /// db.update(|tx| tx.delete(b"big"))?;
    /// db.vacuum()?;
    /// let report = db.compact()?;
    /// assert_eq!(report.pages_after, db.stats().page_count);
    /// assert!(std::fs::metadata(&path)?.len() <= before);
    /// db.check()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn compact(&self) -> Result<CompactReport> {
        self.inner().commit_log.store.compact()
    }

    /// Runs the full structural check of the tree and decodes every stored
    /// version; `Err` ([`Error::Corruption`]) names the first problem. The
    /// background vacuum waits meanwhile; run it with no commit in
    /// progress (a concurrent commit can make the tree's entry count
    /// disagree for a moment).
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// db.update(|tx| tx.put(b"k", b"v"))?;
    /// db.check()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check(&self) -> Result<()> {
        let _no_vacuum = self.inner().vacuuming.lock();
        let tree = &self.inner().engine.tree;
        let report = tree.verify()?;
        if !report.is_ok() {
            let shown: Vec<_> = report.violations.iter().take(5).cloned().collect();
            let reason = format!("{} violations: {}", report.violations.len(), shown.join("; "));
            return Err(Error::corruption(crate::ids::PageId::HEADER, reason));
        }
        for entry in tree.range::<&[u8], _>(..) {
            let (key, value) = entry?;
            let (prefix, _) = encoding::split_version(&key)?;
            encoding::decode_prefix(prefix)?;
            encoding::decode_value(value)?;
        }
        Ok(())
    }

    /// Counters and gauges; see [`Stats`].
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// db.update(|tx| tx.put(b"k", b"v"))?;
    /// assert!(db.stats().commits >= 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> Stats {
        let engine = &self.inner().engine;
        let counters = &engine.counters;
        let (snapshots_active, oldest) = engine.oracle.snapshots();
        // Relaxed: statistics.
        Stats {
            last_commit_ts: engine.oracle.last_allocated(),
            visible_ts: engine.oracle.visible(),
            snapshots_active,
            oldest_snapshot_age: oldest.map(|(age, _)| age),
            oldest_snapshot_ts: oldest.map(|(_, ts)| ts),
            versions_pinned: counters.pinned.load(Ordering::Relaxed),
            commits: counters.commits.load(Ordering::Relaxed),
            conflicts: counters.conflicts.load(Ordering::Relaxed),
            versions_pruned: counters.pruned.load(Ordering::Relaxed),
            versions_vacuumed: counters.vacuumed.load(Ordering::Relaxed),
            vacuum_passes: counters.vacuum_passes.load(Ordering::Relaxed),
            vacuum_versions_read: counters.vacuum_read.load(Ordering::Relaxed),
            vacuum_whole_pass_pending: engine.backlog.whole_pass_due().0,
            tree_entries: engine.tree.len_now(),
            page_count: engine.tree.pool().page_count(),
            page_size: engine.tree.pool().page_size(),
            pool: engine.tree.pool().stats(),
        }
    }

    /// The path the database was opened with.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("data.crab");
    /// assert_eq!(crabtree::Db::open(&path)?.path(), path);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn path(&self) -> &Path {
        &self.inner().path
    }
}

/// Refuses options no database can open with.
fn check_options(options: &Options) -> Result<()> {
    if options.update_retries == 0 {
        return Err(Error::InvalidArgument("update_retries must be at least 1".into()));
    }
    Ok(())
}

/// The store's options for the database's `options`.
fn store_options(options: &Options) -> StoreOptions {
    StoreOptions {
        pool: PoolOptions {
            page_size: options.page_size,
            pool_bytes: options.memory_budget,
            max_pages: options.max_pages,
        },
        wal: crate::wal::WalOptions {
            segment_size: options.log_segment_size,
            durability: options.durability,
            ..Default::default()
        },
        checkpoint_bytes: options.checkpoint_bytes,
        ..StoreOptions::default()
    }
}

/// Opens (or creates) a database on the data storage `data` with its log
/// in `log`, running recovery, as [`Db::open_with`] does on a path but
/// without the file lock (the caller keeps a storage to one open) and with
/// an empty [`Db::path`]. For crash tests on the simulated disk
/// ([`SimDir`](crate::io::SimDir)); reachable as `crabtree::raw::open_db`.
pub fn open_on(data: Arc<dyn Storage>, log: Arc<dyn Dir>, options: Options) -> Result<Db> {
    check_options(&options)?;
    let store = Store::open(data, log, store_options(&options))?;
    Db::on_store(store, options, Path::new(""))
}

/// Takes a checkpoint of the database's store now (as the background
/// checkpointer does when enough log was written), keeping the log from
/// the oldest commit still being applied. For tests; reachable as
/// `crabtree::raw::checkpoint_db`.
pub fn checkpoint(db: &Db) -> Result<CheckpointReport> {
    db.inner().commit_log.store.checkpoint()
}

impl Inner {
    /// Opens the database on a recovered store: re-applies the commit
    /// records recovery handed back (idempotent), raises the clock past
    /// them, installs the retain hook, then loads (or, for an empty tree,
    /// creates) the keyspace catalog.
    fn open(store: Store, commits: Vec<RecoveredCommit>, options: Options, path: &Path) -> Result<Inner> {
        let tree: Arc<BTree> = store.tree_arc();
        // The recovered commits count as in flight until they are
        // re-applied: any checkpoint before that (even the one a failed
        // open's close takes) keeps their records.
        let in_flight = Arc::new(InFlight::new(Arc::clone(store.wal())));
        {
            let mut records = in_flight.home().lock();
            for commit in &commits {
                records.insert(commit.end.0, commit.start.0);
            }
        }
        let hook = Arc::clone(&in_flight);
        store.set_retain_hook(Box::new(move || Some(hook.retain())));
        let mut last_ts: Ts = tree.pool().root_value(LAST_TS_SLOT);
        for commit in &commits {
            let ts = mvcc::replay(&tree, &commit.payload).map_err(|error| match error {
                Error::LogCorruption { reason, .. } => Error::LogCorruption { lsn: commit.start, reason },
                other => other,
            })?;
            last_ts = last_ts.max(ts);
        }
        let replayed = commits.len();
        in_flight.clear();
        tree.pool().raise_root_value(LAST_TS_SLOT, last_ts);
        // Not `is_empty`, which waits for a count after a crash recovery.
        // Before the notifier starts: an error past its start would leave
        // its thread running, holding the store (and every thread of it).
        let fresh = tree.first()?.is_none();
        let log = Arc::new(StoreCommitLog { store, in_flight });
        let (notifier, thread) = Notifier::spawn(Arc::clone(&log) as Arc<dyn CommitLog>)?;
        // An empty tree holds no old version; otherwise the last close
        // left nothing for vacuum, nothing committed since (see
        // `VACUUMED_SLOT`) and nothing was replayed: a replayed commit may
        // shadow versions no backlog names, even one whose timestamp the
        // close counted (a commit that failed before it applied, whose
        // record recovery found).
        let vacuumed = fresh || (replayed == 0 && last_ts != 0 && tree.pool().root_value(VACUUMED_SLOT) == last_ts);
        let mut inner = Inner {
            engine: Engine::new(tree, Arc::clone(&log) as Arc<dyn CommitLog>, last_ts),
            commit_log: log,
            catalog: Mutex::new(keyspace::Catalog::default()),
            notifier,
            notifier_thread: Mutex::new(Some(thread)),
            options,
            vacuuming: Mutex::new(()),
            opened: false,
            path: path.to_path_buf(),
        };
        if vacuumed {
            inner.engine.backlog.assume_clean();
        }
        if fresh {
            keyspace::create_catalog(&inner)?;
        } else {
            keyspace::load_catalog(&inner)?;
        }
        inner.opened = true;
        Ok(inner)
    }
}

/// Starts the vacuum worker: a round every `interval` while the database
/// is open, or sooner when the backlog has grown (`mvcc::backlog`). It
/// holds only a weak reference between rounds, so it never keeps the
/// database open.
fn spawn_vacuum(inner: std::sync::Weak<Inner>, interval: Duration) -> Result<Worker> {
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let signal = Arc::clone(&stop);
    let thread = std::thread::Builder::new().name("crabtree-vacuum".into()).spawn(move || {
        loop {
            {
                let mut stopped = signal.0.lock();
                if !*stopped {
                    signal.1.wait_for(&mut stopped, interval);
                }
                if *stopped {
                    return;
                }
            }
            let Some(inner) = inner.upgrade() else { return };
            if inner.engine.tree.pool().disk_full() {
                // Its removals would be logged to a log no checkpoint can
                // recycle while the disk is full (`buffer/space.rs`).
                continue;
            }
            let stopping = || *signal.0.lock();
            // A round follows the backlog: the keys commits left versions
            // of, not the whole tree (a whole pass only after an unclean
            // open, or when the backlog overflowed or a round failed). An
            // error (I/O) ends the round; the backlog then asks for a whole
            // pass.
            let _alone = inner.vacuuming.lock();
            let _ = mvcc::vacuum::step(&inner.engine, &stopping);
        }
    })?;
    Ok(Worker { stop, thread: Some(thread) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{CrashModel, SimDir};
    use crate::wal::{RecordType, Wal, WalOptions};

    fn in_flight() -> InFlight {
        let dir: Arc<dyn Dir> = Arc::new(SimDir::new(1, CrashModel::default()));
        let (wal, _) = Wal::open(dir, WalOptions::default(), |_, _, _| Ok(())).unwrap();
        InFlight::new(Arc::new(wal))
    }

    #[test]
    fn retain_sees_the_oldest_record_of_any_thread_and_remove_finds_it_from_another() {
        let in_flight = Arc::new(in_flight());
        let wal = Arc::clone(&in_flight.wal);
        wal.append(RecordType::COMMIT, &[1; 100]).unwrap();
        let before = wal.end_lsn();
        assert_eq!(in_flight.retain(), before, "nothing in flight: the log's end");
        // Threads register in their own shards (16 threads: every shard).
        let starts: Vec<u64> = (0..IN_FLIGHT_SHARDS as u64)
            .map(|i| {
                let in_flight = Arc::clone(&in_flight);
                std::thread::spawn(move || {
                    let start = in_flight.wal.append(RecordType::COMMIT, &[2; 64]).unwrap().0 - 5;
                    in_flight.home().lock().insert(start + 5 + i, start);
                    start
                })
                .join()
                .unwrap()
            })
            .collect();
        let shards_used = in_flight.shards.iter().filter(|s| !s.0.lock().is_empty()).count();
        assert!(shards_used > 1, "records spread over shards");
        assert_eq!(in_flight.retain(), Lsn(starts[0]), "the oldest record, whatever shard holds it");
        // Removed from a thread that did not register them: found anyway.
        for (i, &start) in starts.iter().enumerate() {
            in_flight.remove(Lsn(start + 5 + i as u64));
        }
        assert!(in_flight.shards.iter().all(|s| s.0.lock().is_empty()));
        assert_eq!(in_flight.retain(), wal.end_lsn());
    }

    /// A commit registers in a shard the scan already passed, and appends,
    /// while `retain` scans the rest: the value returned must still keep
    /// its record.
    #[test]
    #[cfg(feature = "failpoints")]
    fn a_commit_registered_behind_the_scan_of_retain_is_kept() {
        use crate::failpoint::Pause;
        let in_flight = Arc::new(in_flight());
        in_flight.wal.append(RecordType::COMMIT, &[1; 100]).unwrap();
        let me = std::thread::current().id();
        let pause = Pause::arm_for("in_flight.retain_shard", move |thread| thread.id() != me);
        let scanner = {
            let in_flight = Arc::clone(&in_flight);
            std::thread::spawn(move || in_flight.retain())
        };
        assert!(pause.wait_parked(Duration::from_secs(10)), "retain never reached its scan");
        // Shard 0 is scanned; a commit registers there and appends.
        let start = in_flight.wal.end_lsn().0;
        in_flight.shards[0].0.lock().insert(TICKET_BIT, start);
        let end = in_flight.wal.append(RecordType::COMMIT, &[2; 64]).unwrap();
        assert!(end.0 > start);
        pause.resume();
        let retained = scanner.join().unwrap();
        assert!(retained.0 <= start, "retain returned {retained:?}, past the record starting at {start}");
    }
}
