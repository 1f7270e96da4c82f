//! Failpoints: named places in the engine's rare paths where a test can
//! pause a thread, run code, or make the operation fail.
//!
//! Compiled in only with the `failpoints` feature (the crate's own tests
//! turn it on through a dev-dependency on the crate itself); without it the
//! `failpoint!` macro macro expands to nothing. With the
//! feature, a point costs one relaxed load while no point is configured, so
//! benchmarks built with it measure the same code.
//!
//! A point is configured with `set` (any action: an error to inject, a
//! barrier, a counter) or with a `Pause`, which holds the first matching
//! thread that reaches the point until the test resumes it. Tests that use
//! failpoints run in one process with other tests of the same binary, so
//! actions should filter by thread (see `Pause::arm_for`) and each test
//! file serialises its scenarios.
//!
//! The points, by path (each is a place where a latch is released and
//! re-taken, or where an error is rare):
//! * `write.leaf_latched`: a writer holds its leaf exclusively (an insert
//!   or remove, before it changes anything);
//! * `split.before_neighbour`: a splitter holds the full node, about to
//!   latch its right neighbour;
//! * `split.before_allocate`: a splitter holds the full node (and right
//!   neighbour), about to allocate the new sibling;
//! * `split.right_written`: the new right half is written (fresh pages,
//!   not yet reachable), nothing reachable changed; an error here fails
//!   the operation;
//! * `split.before_parent`: the half-split is done, the left half is still
//!   latched, the parent is not yet latched;
//! * `parent.before_latch`: the parent's id is chosen (remembered or
//!   found), not yet latched;
//! * `root.before_grow`: the root's split is about to install a new root
//!   (`root_lock` held);
//! * `delete.before_half_dead`: an empty leaf's parent was found, nothing
//!   is latched;
//! * `delete.before_unlink`: step 1 of a deletion is done, no latch held;
//! * `delete.unlink_attempt`: a leaf unlink attempt starts (an error makes
//!   it count as one whose left neighbour changed);
//! * `delete.unlink_inner_attempt`: an attempt to unlink a half-dead
//!   level-1 node starts (an error makes it count as one whose left
//!   neighbour changed);
//! * `delete.retry_taken`: a remove or flush took the list of stalled
//!   unlinks to retry, not yet pinned, no latch held;
//! * `repair.scanned`: `repair` collected the flagged nodes (and the left
//!   neighbours of half-dead level-1 nodes), pinned, no latch held;
//! * `value.chain_page`: an overflow chain reader copied one page and
//!   released its latch (pinned, or holding the owning leaf exclusively);
//! * `reclaim.before_free`: retired pages wait, some may be about to return
//!   to the allocator (none has left the retired list yet);
//! * `wal.preparer_create`: the log's preparer is about to make a spare
//!   segment file (a pause here is a slow or starved preparer);
//! * `wal.before_write`, `wal.before_sync`, `wal.after_sync`: the log's
//!   flushing thread (a leader committer or the background flusher) is
//!   about to write a batch, about to sync it, or has synced it and not
//!   yet published the durable LSN (see `wal`);
//! * `checkpoint.begun`, `checkpoint.before_sync`, `checkpoint.before_record`:
//!   a checkpoint published its redo start and horizon; wrote its pages and
//!   is about to sync the data file; synced and is about to append its
//!   record (`buffer::checkpoint`);
//! * `compact.cut_chosen`, `compact.logged`, `compact.before_sync`: a
//!   compaction took its run of free pages off the free stack and lowered
//!   the page count; appended its `TRUNCATE` record and made it durable;
//!   cut the file and is about to sync it (`buffer::compact`, which holds
//!   the checkpoint and allocator mutexes throughout);
//! * `cleaner.lsn_hint`: the background cleaner, inside a read section
//!   and with no latch, saw a dirty page resident and is about to read its
//!   LSN from the frame (`buffer::cleaner`, `buffer::grace`);
//! * `commit.before_timestamp`: a commit found none of its keyspaces
//!   dropped, holds its key locks and has not yet taken its timestamp
//!   (`mvcc`); an error fails the commit;
//! * `keyspace.before_mark`: a keyspace drop is committed (a snapshot
//!   begun now no longer sees the keyspace) and not yet marked dropped for
//!   commits and vacuum (`db::keyspace`, the catalog mutex held);
//! * `backlog.take_gap`: the vacuum backlog's entries were taken out and
//!   split into ready and waiting, and the waiting ones are not back yet
//!   (`mvcc::backlog`, no lock held: commits push meanwhile);
//! * `commit.before_apply`: a transaction's commit record is appended and
//!   none of its versions applied (`mvcc`); an error stands for a crash
//!   there.
//! * `grace.advance_begun`: a thread holds the right to advance the read
//!   sections' grace period and is about to take its generation
//!   (`buffer::grace`; no latch);
//! * `in_flight.retain_shard`: the retain hook of a database read the log's
//!   end and one more shard of the registry of commits not yet applied
//!   (`db`), holding no lock;
//! * `oracle.before_wait`: a committer found the watermark below its
//!   commit and is about to count itself a waiter and park (`mvcc::oracle`;
//!   no lock held);
//! * `mtr.append`: a mini-transaction is about to append its record, its
//!   pages changed and latched; an error injected here poisons the log
//!   first (it stands for a log that failed under the append);
//! * `mtr.reserved`: a leaf upsert or remove has appended its record and
//!   stamped the page (still latched), and has not yet read the
//!   full-page-image horizon;
//! * `recount.leaf_counted`: the count from the leaves after a crash
//!   (`btree::count`) counted a leaf and moved its position past it, no
//!   latch held;
//! * `prune.removed`: a writer pruning a full leaf before its split has
//!   removed (and logged) one version, leaf still latched; an error fails
//!   the write with the leaf partly pruned;
//! * `evict.write_failed`: an eviction batch's write-back of a dirty
//!   victim failed (counted if for want of space) and the victim is not
//!   back in the resident set yet (`evicting` held shared, the victim
//!   latched exclusively);
//! * `vacuum.batch`: a vacuum walk (`Db::vacuum`, a whole pass of the
//!   background vacuum, a dropped keyspace's sweep) read one batch of
//!   versions and has not yet removed any of them (no latch held; the
//!   vacuum lock held);
//! * `vacuum.removed`: a vacuum walk removed (or found gone) one version
//!   of a key and may go on to the key's next (no latch held; a
//!   tombstone removal counted begun, `mvcc::read::Removals`);
//! * `range.reread`: a reverse range is about to resolve a key whose
//!   versions it read in two tree batches again by a point read (a
//!   tombstone removal may have run between them: `mvcc::read`);
//! * `point.before_leaf`: a point read (`get`, a snapshot read) validated
//!   a level-1 node and read the id of its leaf, which it has not yet
//!   looked up in the pool (`btree::descend`, no latch held);
//! * `pool.point_miss`: a point read found its page not resident, in a
//!   full pool that does not admit it, and has not yet read the page's
//!   state word for an uncached read (`buffer::uncached`, no latch);
//! * `pool.uncached_read`: a point read read a leaf that is not resident
//!   into its own buffer and has not yet validated the page's state word
//!   (`buffer::uncached`); an error injected here stands for a torn read;
//! * `commit.between_pieces`: a commit record too large for one log record
//!   has appended a piece of its chain and not its end (`store`); an error
//!   fails the commit with the chain left unfinished in the log.
//! * `io.sync_parent`: a file or directory was opened (and locked) and
//!   its parent directory is about to be fsynced (`io::file`); an error
//!   injected here stands for a failed fsync of the directory.

#[cfg(feature = "failpoints")]
pub use imp::*;

/// Runs the failpoint `name`: with the `failpoints` feature, calls its
/// action if one is configured and returns early (`?`) with the error it
/// injects; without the feature, nothing. `failpoint!(name, ignore)`
/// discards an injected error (for points in functions that cannot fail).
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        crate::failpoint::hit($name)?;
    };
    ($name:literal, ignore) => {
        #[cfg(feature = "failpoints")]
        let _ = crate::failpoint::hit($name);
    };
}

#[cfg(feature = "failpoints")]
mod imp {
    use crate::{Error, Result};
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, LazyLock, Mutex};
    use std::time::Duration;

    /// What a configured point does when a thread reaches it: `Err` makes
    /// the operation fail there with that error.
    pub type Action = Arc<dyn Fn() -> Result<()> + Send + Sync>;

    /// Number of configured points: the fast path of [`hit`].
    static CONFIGURED: AtomicUsize = AtomicUsize::new(0);
    static TABLE: LazyLock<Mutex<HashMap<&'static str, Action>>> = LazyLock::new(Default::default);

    /// Runs the action configured for `name`, if any.
    pub fn hit(name: &'static str) -> Result<()> {
        // Relaxed: a test configures a point before it starts the threads
        // that must see it (thread spawn or a channel orders the store).
        if CONFIGURED.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let action = table().get(name).cloned();
        match action {
            Some(action) => action(),
            None => Ok(()),
        }
    }

    /// Configures `name` to run `action` in every thread that reaches it.
    pub fn set(name: &'static str, action: impl Fn() -> Result<()> + Send + Sync + 'static) {
        if table().insert(name, Arc::new(action)).is_none() {
            CONFIGURED.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Makes `name` fail with the error `make` builds, in every thread.
    pub fn fail_with(name: &'static str, make: impl Fn() -> Error + Send + Sync + 'static) {
        set(name, move || Err(make()));
    }

    /// Removes the action of `name` (threads already inside it finish it).
    pub fn clear(name: &'static str) {
        if table().remove(name).is_some() {
            CONFIGURED.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn table() -> std::sync::MutexGuard<'static, HashMap<&'static str, Action>> {
        // A test that panicked inside an action poisons nothing we rely on.
        TABLE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum State {
        Armed,
        Parked,
        Released,
    }

    struct Shared {
        state: Mutex<State>,
        changed: Condvar,
    }

    impl Shared {
        fn lock(&self) -> std::sync::MutexGuard<'_, State> {
            self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }

    /// Holds the first matching thread that reaches a point until
    /// [`Pause::resume`] (or drop). Later threads pass through.
    pub struct Pause {
        name: &'static str,
        shared: Arc<Shared>,
    }

    impl Pause {
        /// Pauses the first thread of any kind that reaches `name`.
        pub fn arm(name: &'static str) -> Pause {
            Pause::arm_for(name, |_| true)
        }

        /// Pauses the first thread that reaches `name` for which `filter`
        /// (called with the current thread) is true.
        pub fn arm_for(
            name: &'static str,
            filter: impl Fn(&std::thread::Thread) -> bool + Send + Sync + 'static,
        ) -> Pause {
            let shared = Arc::new(Shared { state: Mutex::new(State::Armed), changed: Condvar::new() });
            let inside = Arc::clone(&shared);
            set(name, move || {
                if !filter(&std::thread::current()) {
                    return Ok(());
                }
                let mut state = inside.lock();
                if *state != State::Armed {
                    return Ok(());
                }
                *state = State::Parked;
                inside.changed.notify_all();
                while *state == State::Parked {
                    state = inside.changed.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                Ok(())
            });
            Pause { name, shared }
        }

        /// Waits until a thread is held at the point; false after `timeout`.
        pub fn wait_parked(&self, timeout: Duration) -> bool {
            let state = self.shared.lock();
            let (state, _) = self
                .shared
                .changed
                .wait_timeout_while(state, timeout, |state| *state == State::Armed)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            *state != State::Armed
        }

        /// Whether a thread has reached the point (and is held or was).
        pub fn reached(&self) -> bool {
            *self.shared.lock() != State::Armed
        }

        /// Lets the held thread go on and disarms the point.
        pub fn resume(self) {
            drop(self);
        }
    }

    impl Drop for Pause {
        fn drop(&mut self) {
            clear(self.name);
            *self.shared.lock() = State::Released;
            self.shared.changed.notify_all();
        }
    }
}
