//! `repair`: finishes structure changes that an error interrupted.
//!
//! A split whose parent insert failed leaves its left node flagged
//! `INCOMPLETE_SPLIT`; a deletion that failed between marking a leaf (and
//! its single-child parent) half-dead and unlinking it leaves a half-dead
//! node in its level's chain.
//! Both are valid trees (readers move right past them) and writers finish
//! what they meet, but a node nobody writes to again would stay that way, so
//! after I/O errors (and, once the WAL exists, in recovery) `repair` walks
//! every level and finishes each one.
//!
//! Entry: no latch held. It reads with one shared latch at a time, then
//! finishes each node found with the writers' own code.

use super::BTree;
use crate::ids::PageId;
use crate::page::node::{FLAG_DELETED, FLAG_HALF_DEAD, FLAG_INCOMPLETE_SPLIT, Node};
use crate::{Error, Result};

/// What [`BTree::repair`] finished.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Splits whose separator was missing from the parent.
    pub splits_finished: u64,
    /// Half-dead leaves unlinked.
    pub deletions_finished: u64,
}

impl BTree {
    /// Finishes every interrupted split and leaf deletion (see the module
    /// doc). Safe to run beside other operations; a clean tree is left as it
    /// is.
    pub fn repair(&self) -> Result<RepairReport> {
        let _pin = super::epoch::pin();
        let mut report = RepairReport::default();
        // Splits first, top-down, so a parent is complete before its child's
        // separator goes into it; new splits caused by the fixes finish
        // themselves.
        let (incomplete, half_dead, half_dead_inner) = self.scan_unfinished()?;
        failpoint!("repair.scanned");
        for pid in incomplete {
            let node = self.pool.exclusive(pid)?;
            let flags = Node::new(node.page(), pid)?.header().flags;
            if flags & FLAG_INCOMPLETE_SPLIT != 0 && flags & (FLAG_HALF_DEAD | FLAG_DELETED) == 0 {
                self.finish_split(node, &[])?;
                report.splits_finished += 1;
            }
        }
        for pid in half_dead {
            if self.finish_deletion(pid)? {
                report.deletions_finished += 1;
            }
        }
        // Right to left: of two adjacent half-dead nodes, the right one is
        // unlinked from the left one while that is still linked (left to
        // right, the left one's unlink would make the pair seen by the scan
        // stale). A left neighbour unlinked meanwhile by another thread is
        // refused by `unlink_inner_from`; that node stays half-dead (valid)
        // for a later retry or `repair`.
        for (left, pid, low) in half_dead_inner.into_iter().rev() {
            if !self.is_half_dead(pid)? {
                continue;
            }
            let left = self.pool.exclusive(left)?;
            if self.unlink_inner_from(left, pid)? {
                report.deletions_finished += 1;
                continue;
            }
            // The scan's neighbour no longer links to it: it split (the
            // commits an open re-applies run beside the repair of that
            // open), or was deleted itself. Find the current neighbour by
            // the node's lower bound, the scan's neighbour's high key, as
            // the deletion's own unlink does (it retries, and leaves the
            // node on the list later removes retry if it cannot). Found by
            // `db_crash::with_checkpoints_racing_the_commits`: the node
            // stayed half-dead and linked, and `verify` failed.
            if let Some(low) = low {
                self.unlink_inner(pid, &low)?;
                if !self.is_half_dead(pid)? {
                    report.deletions_finished += 1;
                }
            }
        }
        Ok(report)
    }

    /// Whether `pid` is a half-dead node not yet deleted.
    fn is_half_dead(&self, pid: PageId) -> Result<bool> {
        let guard = self.pool.shared(pid)?;
        let flags = Node::new(guard.page(), pid)?.header().flags;
        Ok(flags & FLAG_HALF_DEAD != 0 && flags & FLAG_DELETED == 0)
    }

    /// The flagged nodes of every level, top level first: incomplete
    /// splits, half-dead (not yet deleted) leaves, and half-dead inner nodes
    /// with their left neighbours and those neighbours' high keys (the
    /// half-dead node's lower bound).
    #[allow(clippy::type_complexity)]
    fn scan_unfinished(&self) -> Result<(Vec<PageId>, Vec<PageId>, Vec<(PageId, PageId, Option<Vec<u8>>)>)> {
        let mut incomplete = Vec::new();
        let mut half_dead = Vec::new();
        let mut half_dead_inner = Vec::new();
        let mut first = self.root();
        // The level every node of the level being walked must have: one
        // below the level above, so the walk ends after at most 256 levels
        // even if a damaged child or right link leads back up.
        let mut level_expected: Option<u8> = None;
        loop {
            let mut pid = first;
            let mut previous: Option<(PageId, Option<Vec<u8>>)> = None;
            let mut next_first = None;
            let mut steps = 0u64;
            loop {
                // Each node of a level once, and no more nodes than pages
                // (read each step: splits beside the walk add pages).
                steps += 1;
                if steps > self.pool.page_count() {
                    return Err(Error::corruption(pid, "right links of a level form a cycle"));
                }
                let guard = self.pool.shared(pid)?;
                let node = Node::new(guard.page(), pid)?;
                let head = *node.header();
                let level = *level_expected.get_or_insert(head.level);
                if head.level != level {
                    let reason = format!("node at level {} where level {level} was walked", head.level);
                    return Err(Error::corruption(pid, reason));
                }
                if next_first.is_none() && !node.is_leaf() && !node.is_empty() {
                    next_first = Some(node.child(0)?);
                }
                if head.flags & FLAG_INCOMPLETE_SPLIT != 0 {
                    incomplete.push(pid);
                }
                if head.flags & FLAG_HALF_DEAD != 0 && head.flags & FLAG_DELETED == 0 {
                    match (node.is_leaf(), previous.take()) {
                        (true, _) => half_dead.push(pid),
                        (false, Some((left, low))) => half_dead_inner.push((left, pid, low)),
                        (false, None) => {}
                    }
                }
                previous = Some((pid, node.high_key()?));
                match head.right {
                    Some(right) => pid = right,
                    None => break,
                }
            }
            match next_first {
                Some(child) => {
                    first = child;
                    let level = level_expected.unwrap_or(0);
                    let Some(below) = level.checked_sub(1) else {
                        return Err(Error::corruption(pid, "inner node at level 0"));
                    };
                    level_expected = Some(below);
                }
                None => return Ok((incomplete, half_dead, half_dead_inner)),
            }
            if incomplete.len() + half_dead.len() + half_dead_inner.len() > self.pool.page_count() as usize {
                return Err(Error::corruption(pid, "repair found more flagged nodes than pages"));
            }
        }
    }
}
