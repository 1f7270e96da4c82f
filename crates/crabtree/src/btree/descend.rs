//! Descent: from the root to the node of a level whose range holds a key,
//! optimistically (lock coupling by version validation) or with shared
//! latches held one at a time.
//!
//! Entry: no latch held (optimistic waits and loads may happen). Exit: the
//! returned [`ReadGuard`] is either an unvalidated optimistic read (the
//! caller validates after reading) or a shared latch.

use super::{Attempt, BTree, Step};
use crate::buffer::{OptimisticGuard, PointRead, Restart, SharedGuard, UncachedGuard};
use crate::ids::PageId;
use crate::page::AtomicPage;
use crate::page::bytes::PageBuf;
use crate::page::node::{FLAG_DELETED, FLAG_HALF_DEAD, FLAG_INCOMPLETE_SPLIT, Node};
use crate::{Error, Result};

/// The first bytes of a node a descent fetches as soon as it has the
/// node's frame: the header and the first slots, so their misses overlap.
const PREFETCH_BYTES: usize = 1024;

/// A node read optimistically or under a shared latch.
pub(crate) enum ReadGuard<'a> {
    /// Version to validate.
    Optimistic(OptimisticGuard<'a>),
    /// Shared latch held.
    Shared(SharedGuard<'a>),
    /// A private copy of a leaf that is not resident (a point read's,
    /// `BufferPool::optimistic_point`): validate as an optimistic read.
    Uncached(UncachedGuard<'a>),
}

impl<'a> ReadGuard<'a> {
    pub(crate) fn pid(&self) -> PageId {
        match self {
            ReadGuard::Optimistic(guard) => guard.pid(),
            ReadGuard::Shared(guard) => guard.pid(),
            ReadGuard::Uncached(guard) => guard.pid(),
        }
    }

    #[inline(always)]
    pub(crate) fn page(&self) -> AtomicPage<'_> {
        match self {
            ReadGuard::Optimistic(guard) => guard.page(),
            ReadGuard::Shared(guard) => guard.page(),
            ReadGuard::Uncached(guard) => guard.page(),
        }
    }

    /// `Ok` if everything read so far is consistent (always, under a latch).
    #[inline(always)]
    pub(crate) fn validate(&self) -> Result<(), Restart> {
        match self {
            ReadGuard::Optimistic(guard) => guard.validate(),
            ReadGuard::Shared(_) => Ok(()),
            ReadGuard::Uncached(guard) => guard.validate(),
        }
    }

    /// Turns a decode result into an attempt: an error seen through an
    /// optimistic read that no longer validates was a torn read (restart);
    /// otherwise it is real.
    #[inline(always)]
    pub(crate) fn check<T>(&self, result: Result<T>) -> Attempt<T> {
        match result {
            Ok(value) => Ok(value),
            Err(error) => {
                self.validate()?;
                Err(Step::Fail(error))
            }
        }
    }
}

/// Where a leaf search put a key: `Ok(slot)` holds it, `Err(slot)` is
/// where it would go.
pub(crate) type SlotSearch = std::result::Result<usize, usize>;

/// Where a descent goes next from a node.
enum Next {
    /// This node is the target; for a key at the leaf level, where the
    /// leaf search put it (read through the unvalidated guard).
    Here(Option<SlotSearch>),
    /// Follow the right-link.
    Right(PageId),
    /// Go down to this child of a node at this level.
    Down(PageId, u8),
    /// An inner node with an abandoned split on the way: finish it first.
    Finish,
}

/// Which node of a level a descent looks for.
#[derive(Clone, Copy)]
pub(crate) enum Target<'k> {
    /// The node whose range holds the key.
    Key(&'k [u8]),
    /// The rightmost node.
    Last,
}

impl BTree {
    /// Reads `pid` optimistically or with a shared latch.
    pub(crate) fn read(&self, pid: PageId, pessimistic: bool) -> Result<ReadGuard<'_>> {
        Ok(if pessimistic {
            ReadGuard::Shared(self.pool.shared(pid)?)
        } else {
            ReadGuard::Optimistic(self.pool.optimistic(pid)?)
        })
    }

    /// Moves from `guard` to `next`. Optimistic: take `next`, then validate
    /// `guard` (coupling). Shared: release `guard` first, so at most one
    /// latch is held.
    pub(crate) fn step<'a>(&'a self, guard: ReadGuard<'a>, next: PageId) -> Attempt<ReadGuard<'a>> {
        self.step_as(guard, next, false)
    }

    /// `step`; with `point`, the step of a point read from a level-1 node
    /// to its leaf, which may come back as a private copy of a leaf that
    /// is not resident (`BufferPool::optimistic_point`). Either way `guard`
    /// is validated after `next`'s state word was read.
    fn step_as<'a>(&'a self, guard: ReadGuard<'a>, next: PageId, point: bool) -> Attempt<ReadGuard<'a>> {
        if let ReadGuard::Shared(current) = guard {
            drop(current);
            return Ok(ReadGuard::Shared(self.pool.shared(next)?));
        }
        // Optimistic, or a private copy of a leaf (then `next` is its right
        // sibling, read as any node): validated the same.
        guard.validate()?;
        let read = if point {
            // The parent is left unpinned: the leaf may be split, emptied,
            // freed (its storage image then stale) and evicted from here on.
            failpoint!("point.before_leaf", ignore);
            self.pool.optimistic_point(next)
        } else {
            self.pool.optimistic(next).map(PointRead::Resident)
        };
        // Unpinned, `next` may have been freed since the link was read
        // (then loading it can fail): trust an error only if the link
        // still stands.
        let next = match read {
            Ok(PointRead::Resident(next)) => {
                next.page().prefetch(0, PREFETCH_BYTES);
                ReadGuard::Optimistic(next)
            }
            Ok(PointRead::Uncached(next)) => ReadGuard::Uncached(next),
            Err(error) => {
                guard.validate()?;
                return Err(Step::Fail(error));
            }
        };
        guard.validate()?;
        Ok(next)
    }

    /// Decides the next move at the node in `guard` for `target` at `level`.
    fn next_move(&self, guard: &ReadGuard<'_>, target: Target<'_>, level: u8, writer: bool) -> Attempt<Next> {
        let page = guard.page();
        let node = guard.check(Node::new(&page, guard.pid()))?;
        let head = *node.header();
        if head.level < level {
            // Every node of this level is below the target: only a root
            // can be (a descent starts there, and goes down one level at a
            // time). Either the root slot moved on since it was read, or no
            // node of `level` exists. Moving right along the lower level
            // would reach nodes the caller may hold latched.
            guard.validate()?;
            // (`insert_into_parent` checks the root's level under
            // `root_lock` before it looks for a parent, and levels never
            // shrink, so the second case is not asked for.)
            if self.root() != guard.pid() {
                return Err(Step::Restart);
            }
            let reason = format!("root at level {} below target {level}", head.level);
            return Err(Step::Fail(Error::corruption(guard.pid(), reason)));
        }
        let dead = head.flags & (FLAG_HALF_DEAD | FLAG_DELETED) != 0;
        if dead {
            return Self::move_right(guard, head.right);
        }
        // Writers finish an abandoned split before moving on, also when
        // they would only move right past it (nbtree's rule): otherwise
        // the right half could split in turn before its own downlink
        // exists, and its parent insert would find no parent to go to.
        if writer && head.flags & FLAG_INCOMPLETE_SPLIT != 0 {
            return Ok(Next::Finish);
        }
        // The high key is read only when the search says it matters: a
        // key at or below some key of the node is at or below its high key
        // (every key of a node is), so only a key past all of them can
        // belong to a node further right. This saves a cache miss per
        // level on most descents.
        let Target::Key(key) = target else {
            if head.right.is_some() {
                return Self::move_right(guard, head.right);
            }
            if head.level == level {
                return Ok(Next::Here(None));
            }
            return Ok(Next::Down(guard.check(node.child(node.len().saturating_sub(1)))?, head.level));
        };
        if head.level == level {
            if level != 0 {
                if guard.check(node.is_above_high_key(key))? {
                    return Self::move_right(guard, head.right);
                }
                return Ok(Next::Here(None));
            }
            let found = guard.check(node.search(key))?;
            if let Err(slot) = found
                && slot == node.len()
                && guard.check(node.is_above_high_key(key))?
            {
                return Self::move_right(guard, head.right);
            }
            return Ok(Next::Here(Some(found)));
        }
        // The child's state word is the descent's next read, and below
        // level 1 (one word per leaf, each read once per leaf visit) most
        // likely a cache miss: start it during the search.
        let (index, past_all) = guard.check(node.child_position_hinting(key, |link| self.pool.prefetch_state(link)))?;
        if past_all && guard.check(node.is_above_high_key(key))? {
            return Self::move_right(guard, head.right);
        }
        Ok(Next::Down(guard.check(node.child(index))?, head.level))
    }

    /// The move along `right`, the node's right-link, which must exist.
    fn move_right(guard: &ReadGuard<'_>, right: Option<PageId>) -> Attempt<Next> {
        match right {
            Some(right) => Ok(Next::Right(right)),
            None => {
                guard.validate()?;
                Err(Step::Fail(Error::corruption(guard.pid(), "no right-link to move right along")))
            }
        }
    }

    /// Finishes the abandoned split of the node behind `guard`, found
    /// by a writer's descent (`path`: the nodes above it). Entry: no latch
    /// but `guard`'s. Exit: no latch.
    fn finish_on_the_way(&self, guard: ReadGuard<'_>, path: &[(u8, PageId)]) -> Attempt<()> {
        let node = match guard {
            ReadGuard::Optimistic(guard) => guard.try_upgrade()?,
            ReadGuard::Shared(guard) => {
                let pid = guard.pid();
                drop(guard);
                self.pool.exclusive(pid)?
            }
            // Point reads never finish splits (and copy only leaves).
            ReadGuard::Uncached(_) => return Err(Step::Restart),
        };
        let flags = Node::new(node.page(), node.pid())?.header().flags;
        if flags & FLAG_INCOMPLETE_SPLIT == 0 {
            return Ok(());
        }
        self.finish_split(node, path)?;
        Ok(())
    }

    /// Descends from the root to the node at `level` for `target`, pushing
    /// each inner node passed (on the way down, not when moving right past
    /// it) onto `path` as `(level, pid)`. With a `path` (a writer's
    /// descent) abandoned splits met on the way are finished first.
    pub(crate) fn descend(
        &self,
        target: Target<'_>,
        level: u8,
        path: Option<&mut Vec<(u8, PageId)>>,
        pessimistic: bool,
    ) -> Attempt<ReadGuard<'_>> {
        let finish = path.is_some();
        self.descend_finishing(target, level, path, pessimistic, finish)
    }

    /// `descend`, finishing abandoned splits on the way only if `finish`.
    ///
    /// A finish that fails (the parent is full and no page can be had,
    /// `DatabaseFull`; an I/O error) does not fail the descent: the operation
    /// may need no page at all (a remove), and the flagged node is valid as
    /// it is. The descent starts over without finishing, passing flagged
    /// nodes as readers do. A node right of an abandoned split may then
    /// split in turn before its own downlink exists: its parent insert goes
    /// to the parent its writer passed (or, at the top level, leaves the
    /// split flagged, see `insert_into_parent`), so nothing depends on the
    /// finish having happened.
    pub(crate) fn descend_finishing(
        &self,
        target: Target<'_>,
        level: u8,
        path: Option<&mut Vec<(u8, PageId)>>,
        pessimistic: bool,
        finish: bool,
    ) -> Attempt<ReadGuard<'_>> {
        Ok(self.descend_searching(target, level, path, pessimistic, finish, false)?.0)
    }

    /// A point reader's descent to the leaf holding `key`, with where the
    /// leaf search put it (read through the guard: validate before
    /// trusting). The leaf may be a private copy (`step_as`).
    pub(crate) fn descend_to_key(&self, key: &[u8], pessimistic: bool) -> Attempt<(ReadGuard<'_>, SlotSearch)> {
        let (guard, found) = self.descend_searching(Target::Key(key), 0, None, pessimistic, false, true)?;
        match found {
            Some(found) => Ok((guard, found)),
            // Unreachable for a key at level 0 (`next_move` always searches
            // there); treated as a torn read rather than trusted.
            None => Err(Step::Restart),
        }
    }

    /// `descend_finishing`, also returning the leaf search of a key
    /// descent to level 0. `point`: a point read's descent, whose leaf may
    /// be read uncached (`step_as`).
    fn descend_searching(
        &self,
        target: Target<'_>,
        level: u8,
        mut path: Option<&mut Vec<(u8, PageId)>>,
        pessimistic: bool,
        mut finish: bool,
        point: bool,
    ) -> Attempt<(ReadGuard<'_>, Option<SlotSearch>)> {
        let mut guard = self.read(self.root(), pessimistic)?;
        let mut hops = 0u64;
        loop {
            hops += 1;
            if hops > self.pool.page_count() + 64 {
                return Err(link_cycle(&guard, "descent does not end: link cycle"));
            }
            match self.next_move(&guard, target, level, finish)? {
                Next::Here(found) => return Ok((guard, found)),
                Next::Finish => match self.finish_on_the_way(guard, path.as_deref().map_or(&[], Vec::as_slice)) {
                    Err(Step::Fail(error)) if finish_can_wait(&error) => {
                        finish = false;
                        if let Some(path) = path.as_deref_mut() {
                            path.clear();
                        }
                        guard = self.read(self.root(), pessimistic)?;
                        hops = 0;
                    }
                    Err(Step::Fail(error)) => return Err(Step::Fail(error)),
                    Ok(()) | Err(Step::Restart) => return Err(Step::Restart),
                },
                Next::Right(right) => guard = self.step(guard, right)?,
                Next::Down(child, node_level) => {
                    if let Some(path) = path.as_deref_mut() {
                        path.push((node_level, guard.pid()));
                    }
                    guard = self.step_as(guard, child, point && node_level == 1)?;
                }
            }
        }
    }
}

/// Whether a failed finish of an abandoned split may be left for later
/// (see `descend_finishing`): no page for a full parent's split, or an
/// I/O error. Corruption is reported, not passed by.
pub(crate) fn finish_can_wait(error: &Error) -> bool {
    matches!(error, Error::DatabaseFull { .. } | Error::Io(_))
}

/// The outcome of a walk that took more steps than the file has pages.
/// Under shared latches the caller is pinned, so no page it passed can
/// have been freed and reused: the links form a cycle (corruption).
/// Optimistic walks are not pinned, and a page freed and reused further
/// left between two validated steps can bring a slow walker back to where
/// it was: restart (the retries end on the shared-latch path).
pub(crate) fn link_cycle(guard: &ReadGuard<'_>, what: &str) -> Step {
    match guard {
        ReadGuard::Optimistic(_) | ReadGuard::Uncached(_) => Step::Restart,
        ReadGuard::Shared(_) => Step::Fail(Error::corruption(guard.pid(), what)),
    }
}
