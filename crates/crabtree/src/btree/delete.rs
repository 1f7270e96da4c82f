//! Deferred deletion of empty leaves.
//!
//! A remove that empties a leaf `L` (not the rightmost of the tree) asks for
//! its deletion once it has released every latch. The protocol, after
//! PostgreSQL nbtree (differences: leaves only, one parent, no WAL yet):
//!
//! 1. **Half-dead**: latch `L`, then its parent `P` (upward). Proceed only
//!    if `L` is still empty and live, `P` holds the downlink to `L` at some
//!    cell `i`, and cell `i + 1` of `P` holds the downlink to `L`'s right
//!    sibling `R` (so both ranges merge within one parent). Cell `i` is
//!    repointed to `R` and cell `i + 1` removed: `R` now owns `L`'s key
//!    range. `L` is flagged `HALF_DEAD`; readers and writers that still
//!    reach it move right to `R`.
//! 2. **Unlink**: latch the left neighbour `Lft` (found by `L`'s left-link,
//!    checked by `Lft.right == L`), then `L`, then `R` (rightward order).
//!    `Lft.right = R`, `R.left = Lft`, `L` flagged `DELETED`; `L` keeps its
//!    right-link so a reader that is standing on it still moves right.
//! 3. **Recycle**: `L` is retired; its id returns to the allocator only when
//!    every operation pinned before the unlink has finished (`epoch`).
//!
//! Any condition that does not hold aborts the deletion harmlessly (an
//! empty leaf is a valid leaf); a failure between steps 1 and 2 leaves a
//! half-dead leaf that the next deletion attempt on it finishes.

use super::BTree;
use super::descend::Target;
use super::write::Path;
use crate::Result;
use crate::buffer::ExclusiveGuard;
use crate::ids::PageId;
use crate::page::node::{CellData, FLAG_DELETED, FLAG_HALF_DEAD, FLAG_INCOMPLETE_SPLIT, Node, NodeMut};

/// Bound on attempts to find the left neighbour while others split it.
const UNLINK_ATTEMPTS_MAX: usize = 16;

impl BTree {
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
        let parent_pid = self.retry(|tree, pessimistic| {
            let mut path = Path::new();
            let guard = tree.descend(Target::Key(&high), 0, Some(&mut path), pessimistic)?;
            guard.validate()?;
            Ok(path.iter().rev().find(|(level, _)| *level == 1).map(|&(_, pid)| pid))
        })?;
        let Some(parent_pid) = parent_pid else { return Ok(()) };
        if !self.mark_half_dead(pid, parent_pid)? {
            return Ok(());
        }
        self.unlink(pid)
    }

    /// Finishes the deletion of a half-dead leaf (steps 2 and 3); returns
    /// whether it is now deleted. Entry and exit: no latch; pinned.
    pub(crate) fn finish_deletion(&self, pid: PageId) -> Result<bool> {
        let flags = {
            let leaf = self.pool.shared(pid)?;
            Node::new(leaf.page(), pid)?.header().flags
        };
        if flags & FLAG_HALF_DEAD == 0 || flags & FLAG_DELETED != 0 {
            return Ok(false);
        }
        self.unlink(pid)?;
        let leaf = self.pool.shared(pid)?;
        Ok(Node::new(leaf.page(), pid)?.header().flags & FLAG_DELETED != 0)
    }

    /// Step 1. Returns whether `pid` is now half-dead.
    fn mark_half_dead(&self, pid: PageId, parent_pid: PageId) -> Result<bool> {
        let mut leaf = self.pool.exclusive(pid)?;
        let (right, high) = {
            let node = Node::new(leaf.page(), pid)?;
            let head = *node.header();
            if head.flags & FLAG_HALF_DEAD != 0 {
                // An earlier attempt got this far: finish it.
                return Ok(head.flags & FLAG_DELETED == 0);
            }
            let busy = head.flags & (FLAG_DELETED | FLAG_INCOMPLETE_SPLIT) != 0;
            match (node.is_empty() && !busy, head.right, node.high_key()?) {
                (true, Some(right), Some(high)) => (right, high),
                _ => return Ok(false),
            }
        };
        let mut parent = self.pool.exclusive(parent_pid)?;
        loop {
            let node = Node::new(parent.page(), parent.pid())?;
            let head = *node.header();
            if head.level != 1 {
                return Ok(false);
            }
            if head.flags & (FLAG_HALF_DEAD | FLAG_DELETED) == 0 && !node.is_above_high_key(&high)? {
                break;
            }
            let Some(next) = head.right else { return Ok(false) };
            parent = self.pool.exclusive(next)?;
        }
        let ppid = parent.pid();
        let index = {
            let node = Node::new(parent.page(), ppid)?;
            let Some(index) = (0..node.len()).find(|&i| node.child(i).ok() == Some(pid)) else {
                return Ok(false);
            };
            if index + 1 >= node.len() || node.child(index + 1)? != right {
                return Ok(false);
            }
            index
        };
        {
            let key = Node::new(parent.page(), ppid)?.key(index)?;
            let mut page = parent.page_mut();
            let mut node = NodeMut::new(&mut page, ppid)?;
            node.replace(index, &CellData::Inner { key: &key, child: right })?;
            node.remove(index + 1)?;
        }
        drop(parent);
        set_flag(&mut leaf, FLAG_HALF_DEAD)?;
        Ok(true)
    }

    /// Step 2 and 3 for the half-dead leaf `pid`.
    fn unlink(&self, pid: PageId) -> Result<()> {
        for _ in 0..UNLINK_ATTEMPTS_MAX {
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
            drop(right);
            drop(leaf);
            drop(left);
            self.retired.retire(pid);
            return Ok(());
        }
        Ok(())
    }
}

/// Sets `flag` on a latched node.
fn set_flag(guard: &mut ExclusiveGuard<'_>, flag: u16) -> Result<()> {
    let pid = guard.pid();
    let flags = Node::new(guard.page(), pid)?.header().flags;
    NodeMut::new(&mut guard.page_mut(), pid)?.set_flags(flags | flag);
    Ok(())
}
