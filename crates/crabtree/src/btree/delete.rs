//! Deferred deletion of empty leaves, and of a level-1 node whose only
//! child such a leaf is.
//!
//! A remove that empties a leaf `L` (not the rightmost of the tree) asks for
//! its deletion once it has released every latch. The protocol, after
//! PostgreSQL nbtree (differences: at most two levels at once, no WAL yet):
//!
//! 1. **Half-dead**: latch `L`, then its parent `P` (upward). Proceed only
//!    if `L` is still empty and live, `P` holds the downlink to `L` at some
//!    cell `i`, and cell `i + 1` of `P` holds the downlink to `L`'s right
//!    sibling `R` (so both ranges merge within one parent). Cell `i` is
//!    repointed to `R` and cell `i + 1` removed: `R` now owns `L`'s key
//!    range. `L` is flagged `HALF_DEAD`; readers and writers that still
//!    reach it move right to `R`.
//!    If instead `L` is `P`'s only child, `P` goes too (a two-level
//!    "subtree" in nbtree's terms): latch the grandparent `G` (upward); if
//!    `G` holds `P`'s downlink at cell `j >= 1` and `P`'s right sibling
//!    `P2`'s at `j + 1`, cell `j` is repointed to `P2` and cell `j + 1`
//!    removed, so `P2` (whose first child is `R`) owns `P`'s range; `P` and
//!    `L` are flagged `HALF_DEAD`.
//! 2. **Unlink**: latch the left neighbour `Lft` (found by `L`'s left-link,
//!    checked by `Lft.right == L`), then `L`, then `R` (rightward order).
//!    `Lft.right = R`, `R.left = Lft`, `L` flagged `DELETED`; `L` keeps its
//!    right-link so a reader that is standing on it still moves right. A
//!    half-dead `P` is unlinked the same way at level 1; inner nodes have no
//!    left-links, so its left neighbour is found as the level-1 node holding
//!    `P`'s old lower bound (`G`'s key of cell `j`).
//! 3. **Recycle**: `L` is retired; its id returns to the allocator only when
//!    every operation pinned before the unlink has finished (`epoch`).
//!
//! Any condition that does not hold aborts the deletion harmlessly (an
//! empty leaf is a valid leaf); a failure between steps 1 and 2 leaves a
//! half-dead node, put on the list of unfinished deletions that later
//! removes (and `flush`) retry; `repair` finishes it too. Not deleted: the rightmost node of a level, a leaf that
//! is the last of several children, a parent that is its grandparent's
//! first child, nodes above level 1.

use super::BTree;
use super::descend::Target;
use super::write::Path;
use crate::Result;
use crate::buffer::ExclusiveGuard;
use crate::ids::PageId;
use crate::page::node::{CellData, FLAG_DELETED, FLAG_HALF_DEAD, FLAG_INCOMPLETE_SPLIT, Node, NodeMut};
use crate::sync::{AtomicUsize, Mutex, Ordering};

/// What step 1 made half-dead.
enum Marked {
    /// Nothing: a precondition failed.
    No,
    /// The leaf.
    Leaf,
    /// The leaf and its level-1 parent, whose lower bound was `low`.
    WithParent {
        /// The parent.
        parent: PageId,
        /// The parent's lower bound (its cell key in the grandparent).
        low: Vec<u8>,
    },
}

/// Bound on attempts to find the left neighbour while others split it.
const UNLINK_ATTEMPTS_MAX: usize = 16;

/// A half-dead node whose unlink gave up after `UNLINK_ATTEMPTS_MAX`
/// attempts (its left neighbour kept changing).
enum Stalled {
    /// A leaf.
    Leaf(PageId),
    /// A level-1 node and its old lower bound.
    Inner(PageId, Vec<u8>),
}

/// Unlinks that gave up, retried by later removes and by `flush`, so a
/// half-dead node does not wait for someone to call `repair`. (After a
/// close or crash the list is gone; `repair`, and recovery once the WAL
/// exists, find such nodes by scanning.)
///
/// The ids are kept across unpinned gaps: meanwhile `repair` (or another
/// retry) may finish the deletion and the page may be reclaimed and reused
/// as any page, even a half-dead node of another kind. So a retry, pinned,
/// first checks that the page is still a half-dead, not deleted node of
/// the entry's kind and level (`finish_deletion`, `unlink_inner`), and
/// drops the entry otherwise.
#[derive(Default)]
pub(crate) struct Unfinished {
    stalled: Mutex<Vec<Stalled>>,
    /// `stalled.len()`, readable without the lock: every remove checks it.
    count: AtomicUsize,
}

impl Unfinished {
    fn push(&self, stalled: Stalled) {
        let mut list = self.stalled.lock();
        list.push(stalled);
        // Relaxed: a hint; a remove that misses it retries on a later call.
        self.count.store(list.len(), Ordering::Relaxed);
    }

    fn take(&self) -> Vec<Stalled> {
        // Relaxed: see `push`.
        if self.count.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        let mut list = self.stalled.lock();
        self.count.store(0, Ordering::Relaxed);
        std::mem::take(&mut *list)
    }
}

impl BTree {
    /// Retries the unlinks that gave up earlier (see [`Unfinished`]); one
    /// that gives up again goes back on the list. Entry and exit: no latch.
    pub(crate) fn retry_unfinished_deletions(&self) {
        let stalled = self.unfinished.take();
        if stalled.is_empty() {
            return;
        }
        failpoint!("delete.retry_taken", ignore);
        let _pin = super::epoch::pin();
        for node in stalled {
            let result = match &node {
                Stalled::Leaf(pid) => self.finish_deletion(*pid).map(drop),
                Stalled::Inner(pid, low) => self.unlink_inner(*pid, low),
            };
            // An I/O error leaves the node half-dead: back on the list, for
            // a later remove (or `repair`). Any other error means the id no
            // longer names such a node: dropped.
            if let Err(crate::Error::Io(_)) = result {
                self.unfinished.push(node);
            }
        }
    }

    /// Tries to delete the empty leaf `pid`. Entry and exit: no latch held;
    /// the caller is pinned.
    pub(crate) fn try_delete_leaf(&self, pid: PageId) -> Result<()> {
        // A key inside L's range (its high key) leads to the parent level.
        let high = {
            let leaf = self.pool.exclusive(pid)?;
            let node = Node::new(leaf.page(), pid)?;
            let head = *node.header();
            if !node.is_empty() || head.level != 0 || head.right.is_none() || head.flags & FLAG_DELETED != 0 {
                return Ok(());
            }
            match node.high_key()? {
                Some(high) => high,
                None => return Ok(()),
            }
        };
        let (parent_pid, grandparent) = self.retry(super::Pinning::SharedOnly, |tree, pessimistic| {
            let mut path = Path::new();
            let guard = tree.descend(Target::Key(&high), 0, Some(&mut path), pessimistic)?;
            guard.validate()?;
            let at = |level: u8| path.iter().rev().find(|(l, _)| *l == level).map(|&(_, pid)| pid);
            Ok((at(1), at(2)))
        })?;
        let Some(parent_pid) = parent_pid else { return Ok(()) };
        failpoint!("delete.before_half_dead");
        let marked = self.mark_half_dead(pid, parent_pid, grandparent)?;
        let unlinked = self.unlink_marked(pid, &marked);
        if unlinked.is_err() {
            // Step 1 is done and cannot be undone: leave the rest to a later
            // remove (or `repair`), as for an unlink that gave up. (A node
            // already unlinked is dropped from the list by its retry.)
            match marked {
                Marked::No => {}
                Marked::Leaf => self.unfinished.push(Stalled::Leaf(pid)),
                Marked::WithParent { parent, low } => {
                    self.unfinished.push(Stalled::Leaf(pid));
                    self.unfinished.push(Stalled::Inner(parent, low));
                }
            }
        }
        unlinked
    }

    /// Steps 2 and 3 for what `mark_half_dead` marked.
    fn unlink_marked(&self, pid: PageId, marked: &Marked) -> Result<()> {
        failpoint!("delete.before_unlink");
        match marked {
            Marked::No => Ok(()),
            Marked::Leaf => self.unlink(pid),
            Marked::WithParent { parent, low } => {
                self.unlink(pid)?;
                self.unlink_inner(*parent, low)
            }
        }
    }

    /// Finishes the deletion of a half-dead leaf (steps 2 and 3); returns
    /// whether it is now deleted. Entry and exit: no latch; pinned.
    /// `pid` may have been reused since it was recorded (see [`Unfinished`]):
    /// anything but a half-dead leaf is left alone.
    pub(crate) fn finish_deletion(&self, pid: PageId) -> Result<bool> {
        let (leaf, flags) = {
            let guard = self.pool.shared(pid)?;
            let node = Node::new(guard.page(), pid)?;
            (node.is_leaf() && node.header().level == 0, node.header().flags)
        };
        if !leaf || flags & FLAG_HALF_DEAD == 0 || flags & FLAG_DELETED != 0 {
            return Ok(false);
        }
        self.unlink(pid)?;
        let leaf = self.pool.shared(pid)?;
        Ok(Node::new(leaf.page(), pid)?.header().flags & FLAG_DELETED != 0)
    }

    /// Step 1: makes `pid` half-dead, and with it its parent when the leaf
    /// is the parent's only child (see the module doc).
    fn mark_half_dead(&self, pid: PageId, parent_pid: PageId, grandparent: Option<PageId>) -> Result<Marked> {
        let mut leaf = self.pool.exclusive(pid)?;
        let (right, high) = {
            let node = Node::new(leaf.page(), pid)?;
            let head = *node.header();
            if head.flags & FLAG_HALF_DEAD != 0 {
                // An earlier attempt got this far: finish it.
                return Ok(if head.flags & FLAG_DELETED == 0 { Marked::Leaf } else { Marked::No });
            }
            let busy = head.flags & (FLAG_DELETED | FLAG_INCOMPLETE_SPLIT) != 0;
            match (node.is_empty() && !busy, head.right, node.high_key()?) {
                (true, Some(right), Some(high)) => (right, high),
                _ => return Ok(Marked::No),
            }
        };
        let mut parent = self.pool.exclusive(parent_pid)?;
        loop {
            let node = Node::new(parent.page(), parent.pid())?;
            let head = *node.header();
            if head.level != 1 {
                return Ok(Marked::No);
            }
            if head.flags & (FLAG_HALF_DEAD | FLAG_DELETED) == 0 && !node.is_above_high_key(&high)? {
                break;
            }
            let Some(next) = head.right else { return Ok(Marked::No) };
            parent = self.pool.exclusive(next)?;
        }
        let ppid = parent.pid();
        let (index, only_child) = {
            let node = Node::new(parent.page(), ppid)?;
            let Some(index) = (0..node.len()).find(|&i| node.child(i).ok() == Some(pid)) else {
                return Ok(Marked::No);
            };
            let merges_right = index + 1 < node.len() && node.child(index + 1)? == right;
            let clean = node.header().flags & FLAG_INCOMPLETE_SPLIT == 0;
            match (merges_right, node.len() == 1 && clean) {
                (true, _) => (index, false),
                (false, true) => (index, true),
                (false, false) => return Ok(Marked::No),
            }
        };
        if only_child {
            let Some((low, mut grand)) = self.detach_parent(&mut parent, grandparent)? else { return Ok(Marked::No) };
            set_flag(&mut parent, FLAG_HALF_DEAD)?;
            set_flag(&mut leaf, FLAG_HALF_DEAD)?;
            // The grandparent's change and both flags: one mini-transaction.
            self.pool.log_images(&mut [&mut grand, &mut parent, &mut leaf], &[], None)?;
            return Ok(Marked::WithParent { parent: ppid, low });
        }
        {
            let key = Node::new(parent.page(), ppid)?.key(index)?;
            let mut page = parent.page_mut();
            let mut node = NodeMut::new(&mut page, ppid)?;
            node.replace(index, &CellData::Inner { key: &key, child: right })?;
            node.remove(index + 1)?;
        }
        set_flag(&mut leaf, FLAG_HALF_DEAD)?;
        // The parent's change and the flag: one mini-transaction.
        self.pool.log_images(&mut [&mut parent, &mut leaf], &[], None)?;
        Ok(Marked::Leaf)
    }

    /// For a level-1 node whose only child is being deleted: removes its
    /// downlink from the grandparent so its right sibling takes its range
    /// (cell `j` repointed to the sibling, cell `j + 1` removed). Only when
    /// both downlinks sit in one grandparent and `j >= 1` (so the parent's
    /// lower bound, needed to find its left neighbour, is a stored key).
    /// Returns that lower bound and the changed grandparent, still latched
    /// (its change is logged with the flags that go with it). Entry: leaf
    /// and `parent` exclusive. Exit: the same.
    fn detach_parent<'t>(
        &'t self,
        parent: &mut ExclusiveGuard<'t>,
        grandparent: Option<PageId>,
    ) -> Result<Option<(Vec<u8>, ExclusiveGuard<'t>)>> {
        let ppid = parent.pid();
        let (right, high) = {
            let node = Node::new(parent.page(), ppid)?;
            match (node.header().right, node.high_key()?) {
                (Some(right), Some(high)) => (right, high),
                _ => return Ok(None),
            }
        };
        let Some(gpid) = grandparent else { return Ok(None) };
        let mut grand = self.pool.exclusive(gpid)?;
        loop {
            let node = Node::new(grand.page(), grand.pid())?;
            let head = *node.header();
            if head.level != 2 {
                return Ok(None);
            }
            if head.flags & (FLAG_HALF_DEAD | FLAG_DELETED) == 0 && !node.is_above_high_key(&high)? {
                break;
            }
            let Some(next) = head.right else { return Ok(None) };
            grand = self.pool.exclusive(next)?;
        }
        let gpid = grand.pid();
        let (index, low) = {
            let node = Node::new(grand.page(), gpid)?;
            let Some(index) = (1..node.len()).find(|&i| node.child(i).ok() == Some(ppid)) else {
                return Ok(None);
            };
            if index + 1 >= node.len() || node.child(index + 1)? != right {
                return Ok(None);
            }
            (index, node.key(index)?)
        };
        {
            let mut page = grand.page_mut();
            let mut node = NodeMut::new(&mut page, gpid)?;
            node.replace(index, &CellData::Inner { key: &low, child: right })?;
            node.remove(index + 1)?;
        }
        Ok(Some((low, grand)))
    }

    /// Unlinks the half-dead level-1 node `pid`, whose lower bound was
    /// `low`, from its level and retires it. Its left neighbour is the node
    /// holding `low` (inner nodes have no left-links). Entry and exit: no
    /// latch; pinned. `pid` may have been reused since it was recorded
    /// (see [`Unfinished`]): anything but a half-dead level-1 node is left
    /// alone (so an entry whose node was unlinked by `repair` is dropped,
    /// not retried forever).
    pub(super) fn unlink_inner(&self, pid: PageId, low: &[u8]) -> Result<()> {
        {
            let guard = self.pool.shared(pid)?;
            let node = Node::new(guard.page(), pid)?;
            let head = node.header();
            if node.is_leaf() || head.level != 1 || head.flags & FLAG_HALF_DEAD == 0 || head.flags & FLAG_DELETED != 0 {
                return Ok(());
            }
        }
        for _ in 0..UNLINK_ATTEMPTS_MAX {
            if unlink_inner_attempt_failpoint().is_err() {
                // Injected: the left neighbour changed under us.
                continue;
            }
            let mut left = self.pool.exclusive(self.find_node(low, 1)?)?;
            for _ in 0..UNLINK_ATTEMPTS_MAX {
                let head = *Node::new(left.page(), left.pid())?.header();
                match head.right {
                    Some(right) if right == pid => break,
                    Some(right) => left = self.pool.exclusive(right)?,
                    None => return Ok(()),
                }
            }
            if !self.unlink_inner_from(left, pid)? {
                // `left` was unlinked itself before we latched it (found
                // unlatched), or no longer links to `pid`: look again.
                continue;
            }
            return Ok(());
        }
        self.unfinished.push(Stalled::Inner(pid, low.to_vec()));
        Ok(())
    }

    /// Unlinks the half-dead inner node `pid` from its left neighbour
    /// `left` and retires it. Returns false, changing nothing, if `left` is
    /// not that neighbour: it no longer links to `pid`, or it was deleted
    /// itself (a deleted node keeps its right-link, but its own left
    /// neighbour now links past it: unlinking `pid` from it would leave
    /// `pid` linked, and retired). True once `pid` is unlinked (by us, or
    /// before: it is no longer half-dead and live). Entry: `left`
    /// exclusive. Exit: no latch.
    pub(crate) fn unlink_inner_from<'t>(&'t self, mut left: ExclusiveGuard<'t>, pid: PageId) -> Result<bool> {
        let left_head = *Node::new(left.page(), left.pid())?.header();
        if left_head.right != Some(pid) || left_head.flags & FLAG_DELETED != 0 {
            return Ok(false);
        }
        let mut node = self.pool.exclusive(pid)?;
        let head = *Node::new(node.page(), pid)?.header();
        if head.flags & FLAG_HALF_DEAD == 0 || head.flags & FLAG_DELETED != 0 {
            return Ok(true);
        }
        let left_pid = left.pid();
        NodeMut::new(&mut left.page_mut(), left_pid)?.set_right(head.right);
        set_flag(&mut node, FLAG_DELETED)?;
        // Unlink and free: one mini-transaction (after a crash no reader
        // can stand on the node, so the log calls it free at once).
        self.pool.log_images(&mut [&mut left, &mut node], &[pid], None)?;
        drop(node);
        drop(left);
        self.retired.retire(pid);
        Ok(true)
    }

    /// Step 2 and 3 for the half-dead leaf `pid`.
    fn unlink(&self, pid: PageId) -> Result<()> {
        for _ in 0..UNLINK_ATTEMPTS_MAX {
            if unlink_attempt_failpoint().is_err() {
                // Injected: the left neighbour changed under us.
                continue;
            }
            let left_hint = Node::new(&self.pool.optimistic(pid)?.page(), pid).ok().and_then(|n| n.header().left);
            let mut left = match left_hint {
                Some(left) => {
                    let guard = self.pool.exclusive(left)?;
                    let node = Node::new(guard.page(), left)?;
                    if node.header().right != Some(pid) || node.header().flags & FLAG_DELETED != 0 {
                        // A split or delete moved our neighbour: look again.
                        drop(guard);
                        std::thread::yield_now();
                        continue;
                    }
                    Some(guard)
                }
                None => None,
            };
            let mut leaf = self.pool.exclusive(pid)?;
            let head = *Node::new(leaf.page(), pid)?.header();
            if head.flags & FLAG_DELETED != 0 {
                return Ok(());
            }
            if head.left != left.as_ref().map(ExclusiveGuard::pid) {
                continue;
            }
            let Some(right_pid) = head.right else { return Ok(()) };
            let mut right = self.pool.exclusive(right_pid)?;
            if let Some(left) = left.as_mut() {
                let left_pid = left.pid();
                NodeMut::new(&mut left.page_mut(), left_pid)?.set_right(Some(right_pid));
            }
            NodeMut::new(&mut right.page_mut(), right_pid)?.set_left(head.left);
            set_flag(&mut leaf, FLAG_DELETED)?;
            {
                // Unlink and free: one mini-transaction.
                let mut guards: Vec<&mut ExclusiveGuard<'_>> = left.as_mut().into_iter().collect();
                guards.push(&mut leaf);
                guards.push(&mut right);
                self.pool.log_images(&mut guards, &[pid], None)?;
            }
            drop(right);
            drop(leaf);
            drop(left);
            self.retired.retire(pid);
            return Ok(());
        }
        self.unfinished.push(Stalled::Leaf(pid));
        Ok(())
    }
}

/// The failpoint `delete.unlink_attempt`: an injected error stands for a
/// left neighbour that changed before it could be latched.
fn unlink_attempt_failpoint() -> Result<()> {
    failpoint!("delete.unlink_attempt");
    Ok(())
}

/// The failpoint `delete.unlink_inner_attempt`: like
/// `delete.unlink_attempt`, for a half-dead level-1 node.
fn unlink_inner_attempt_failpoint() -> Result<()> {
    failpoint!("delete.unlink_inner_attempt");
    Ok(())
}

/// Sets `flag` on a latched node.
fn set_flag(guard: &mut ExclusiveGuard<'_>, flag: u16) -> Result<()> {
    let pid = guard.pid();
    let flags = Node::new(guard.page(), pid)?.header().flags;
    NodeMut::new(&mut guard.page_mut(), pid)?.set_flags(flags | flag);
    Ok(())
}
