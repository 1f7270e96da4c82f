//! The entry count after a crash, counted from the leaves while writers
//! run, and the background work that finishes a crash recovery.
//!
//! The count kept in memory is lost in a crash (a checkpoint's copy is
//! only trusted after a clean close), and counting the leaves before the
//! store opens would make every crash recovery cost a scan of the whole
//! tree. So recovery opens the store at once and a background thread
//! finishes the structure changes the crash interrupted (`repair`) and
//! counts the leaves, beside the writers.
//!
//! # The concurrent count
//! A *position* key splits the key space: keys at or below it are behind
//! the scan, the others ahead. It starts before every key (everything
//! ahead) and the tree's count at zero. (A node holds the keys up to and
//! including its high key.)
//! * The scan takes the leaf whose range holds the smallest key above the
//!   position (the position with a zero byte appended) with a shared latch
//!   (descending from the root), counts the leaf's entries above the
//!   position, moves the position to the leaf's high key (none: past every
//!   key), and releases the leaf.
//! * A writer that inserts a new key or removes one decides, under its
//!   leaf's exclusive latch, whether the key is behind the position; only
//!   then does its +1 or -1 go into the count.
//! * When the scan passes the last leaf it adds what it counted to the
//!   count, which is exact from then on.
//!
//! Why it is exact: an entry ahead of the position when it changes is
//! seen (or, removed, not seen) by the scan, because the scan's leaf latch
//! and the writer's exclude each other and the position only moves under
//! the scan's latch of the leaf that covers the keys it passes; an entry
//! behind the position is never counted by the scan again (it counts only
//! keys above the position), so the writer's delta is its only
//! record. Entries never move left: a split moves keys into a new right
//! sibling, and a deleted leaf is empty (its range goes to its right
//! neighbour, whose keys below the position are then behind, and skipped).
//!
//! Entry for `begin_recount`: no write in progress (the store calls it
//! before the tree is shared). `len` and `verify` wait for the count (and
//! `verify` for the repair) to finish.

use super::descend::Target;
use super::{BTree, Pinning, RepairReport};
use crate::page::node::Node;
use crate::sync::{Arc, AtomicBool, Condvar, Mutex, Ordering};
use crate::{Error, Result};

/// The state of a count from the leaves (module doc).
#[derive(Default)]
pub(crate) struct Recount {
    /// Whether a count runs: writers then compare their key with the
    /// position.
    active: AtomicBool,
    position: Mutex<Position>,
}

/// Which keys the scan has passed.
#[derive(Clone, Default)]
enum Position {
    /// None.
    #[default]
    Start,
    /// Those at or below this key.
    Upto(Vec<u8>),
    /// All.
    End,
}

impl Recount {
    /// Whether a change of `key` goes into the count now. Entry: the leaf
    /// holding `key` exclusively latched.
    pub(crate) fn behind(&self, key: &[u8]) -> bool {
        // Acquire: pairs with `begin`'s and `end`'s stores.
        if !self.active.load(Ordering::Acquire) {
            return true;
        }
        match &*self.position.lock() {
            Position::Start => false,
            Position::Upto(position) => key <= position.as_slice(),
            Position::End => true,
        }
    }

    fn begin(&self) {
        *self.position.lock() = Position::Start;
        self.active.store(true, Ordering::Release);
    }

    fn end(&self) {
        *self.position.lock() = Position::End;
        self.active.store(false, Ordering::Release);
    }
}

/// The background work after a crash recovery (module doc).
#[derive(Default)]
pub(crate) struct Finisher {
    state: Mutex<FinisherState>,
    done: Condvar,
}

#[derive(Default)]
enum FinisherState {
    /// Nothing to finish (a new tree or a clean open).
    #[default]
    Idle,
    /// The thread runs.
    Running(Option<std::thread::JoinHandle<()>>),
    /// The thread ended with this outcome (an error as text: `Error` is
    /// not `Clone`).
    Ended(std::result::Result<RepairReport, String>),
}

impl BTree {
    /// Starts finishing a crash recovery in the background: `repair`, then
    /// the entry count from the leaves (module doc). Entry: no write in
    /// progress; writers may start as soon as it returns.
    pub fn finish_recovery_in_background(self: &Arc<Self>) -> Result<()> {
        self.begin_recount();
        let tree = Arc::clone(self);
        let mut state = self.finisher.state.lock();
        let thread = std::thread::Builder::new().name("crabtree-recovery".into()).spawn(move || {
            let outcome = tree.repair().and_then(|report| tree.run_recount().map(|_| report));
            let mut state = tree.finisher.state.lock();
            *state = FinisherState::Ended(outcome.map_err(|error| error.to_string()));
            tree.finisher.done.notify_all();
        });
        match thread {
            Ok(thread) => {
                *state = FinisherState::Running(Some(thread));
                Ok(())
            }
            Err(error) => {
                drop(state);
                self.recount.end();
                Err(error.into())
            }
        }
    }

    /// Waits for the background work of [`BTree::finish_recovery_in_background`]
    /// and returns what its repair finished (empty if none ran). Errors: the repair or the count failed (the count is then
    /// not exact; the next recovery runs both again).
    pub fn wait_recovery_finished(&self) -> Result<RepairReport> {
        let mut state = self.finisher.state.lock();
        loop {
            match &mut *state {
                FinisherState::Idle => return Ok(RepairReport::default()),
                FinisherState::Running(thread) => {
                    if let Some(thread) = thread.take() {
                        // Joined outside the lock (the thread takes it last).
                        drop(state);
                        let _ = thread.join();
                        state = self.finisher.state.lock();
                    } else {
                        self.finisher.done.wait(&mut state);
                    }
                }
                FinisherState::Ended(outcome) => {
                    return outcome.clone().map_err(|reason| {
                        Error::Io(std::io::Error::other(format!("finishing crash recovery failed: {reason}")))
                    });
                }
            }
        }
    }

    /// Whether the entry count is exact (no count from the leaves runs).
    pub(crate) fn count_exact(&self) -> bool {
        !self.recount.active.load(Ordering::Acquire)
    }

    /// Sets the count to zero and every key ahead of the scan.
    pub(crate) fn begin_recount(&self) {
        self.len.store(0, Ordering::Relaxed);
        self.recount.begin();
    }

    /// Counts the leaves from the position on (module doc), then makes the
    /// count exact. On an error the count stays inexact (`count_exact`
    /// false) and writers keep going.
    pub(crate) fn run_recount(&self) -> Result<u64> {
        let mut counted = 0u64;
        loop {
            // The smallest key above the position.
            let above = match self.recount.position.lock().clone() {
                Position::Start => Vec::new(),
                Position::Upto(mut key) => {
                    key.push(0);
                    key
                }
                Position::End => break,
            };
            let (entries, last) = self.retry(Pinning::Always, |tree, _| tree.count_leaf(&above))?;
            counted += entries;
            failpoint!("recount.leaf_counted");
            if last {
                break;
            }
        }
        self.len.fetch_add(counted, Ordering::Relaxed);
        self.recount.end();
        Ok(self.len.load(Ordering::Relaxed))
    }

    /// One step of the scan: the entries at or above `from` (the smallest
    /// key above the position) in the leaf whose range holds it, moving
    /// the position to the leaf's high key. Returns the entries and
    /// whether the leaf was the last.
    fn count_leaf(&self, from: &[u8]) -> super::Attempt<(u64, bool)> {
        let leaf = self.descend(Target::Key(from), 0, None, true)?;
        let page = leaf.page();
        let node = Node::new(&page, leaf.pid())?;
        let first = match node.search(from)? {
            Ok(slot) | Err(slot) => slot,
        };
        let entries = node.len().saturating_sub(first) as u64;
        let high = node.high_key()?;
        // The descent stops at a leaf with a key at or above `from`, so in
        // a sound tree its high key is too. One below `from` (a damaged
        // leaf holding keys above its high key) would move the position
        // back, and the scan would count the same leaves forever.
        if high.as_deref().is_some_and(|high| high < from) {
            leaf.validate()?;
            return Err(super::Step::Fail(Error::corruption(
                leaf.pid(),
                "leaf holds keys above its high key (the count cannot move past it)",
            )));
        }
        let last = high.is_none();
        // Under the leaf's shared latch (module doc).
        *self.recount.position.lock() = high.map_or(Position::End, Position::Upto);
        drop(leaf);
        Ok((entries, last))
    }
}
