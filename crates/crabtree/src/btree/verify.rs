//! `verify`: checks every structural invariant of a quiescent tree and the
//! page accounting of the file, and reports shape statistics.
//!
//! Each invariant is its own check with its own message naming the page:
//! * `node`: cells in bounds and disjoint, keys ascending, keys `<=` high
//!   key (`page::node::check_node`);
//! * `level`: every node of a chain at its level, leaves at level 0;
//! * `chain`: each level is one right-link chain ending in a node with a
//!   +infinity high key; a node's first key is `>` its left neighbour's
//!   high key; leaf left-links point back;
//! * `parent`: the children of a level, in order, are exactly the next
//!   level's chain, and each child's high key is its cell's upper bound;
//! * `flags`: no incomplete split, half-dead or deleted node is reachable;
//! * `overflow`: each chain holds exactly its value's length;
//! * `len`: the entries in the leaves equal `len()`;
//! * `pages`: no page reachable twice; reachable, free and retired pages
//!   (and the header page) partition the file.
//!
//! Entry: no latch held. It takes shared latches one page at a time, so it
//! can run beside writers, but only a quiescent tree gives a clean report.

use super::BTree;
use crate::Result;
use crate::ids::PageId;
use crate::page::node::{FLAG_DELETED, FLAG_HALF_DEAD, FLAG_INCOMPLETE_SPLIT, Node, ValueRef, check_node};
use std::collections::HashSet;

/// Shape of one level of the tree.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LevelReport {
    /// Nodes on the level.
    pub nodes: u64,
    /// Cells on the level.
    pub cells: u64,
    /// Fraction of page bytes in use, 0..1.
    pub fill: f64,
}

/// What [`BTree::verify`] found.
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    /// Per level, leaves first.
    pub levels: Vec<LevelReport>,
    /// Entries in the leaves.
    pub entries: u64,
    /// Pages holding overflow values.
    pub overflow_pages: u64,
    /// Pages on the free list.
    pub free_pages: u64,
    /// Pages unlinked and awaiting reclamation.
    pub retired_pages: u64,
    /// Pages in the file.
    pub page_count: u64,
    /// Every invariant violation found, each naming its page.
    pub violations: Vec<String>,
}

impl VerifyReport {
    /// Whether no violation was found.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// What a level's chain must look like, from the level above.
struct Expected {
    pid: PageId,
    high: Option<Vec<u8>>,
}

impl BTree {
    /// Checks every invariant (see the module doc) and reports. After a
    /// crash recovery it first waits for the background repair and count
    /// (`count`); if they failed, that is a violation.
    pub fn verify(&self) -> Result<VerifyReport> {
        let finished = self.wait_recovery_finished();
        let _pin = super::epoch::pin();
        let mut report = VerifyReport { page_count: self.pool.page_count(), ..VerifyReport::default() };
        if let Err(error) = finished {
            report.violations.push(format!("{error}"));
        }
        let mut seen = HashSet::new();
        seen.insert(PageId::HEADER);
        let root = self.root();
        let root_level = {
            let guard = self.pool.shared(root)?;
            Node::new(guard.page(), root)?.header().level
        };
        let mut expected = vec![Expected { pid: root, high: None }];
        report.levels = vec![LevelReport::default(); usize::from(root_level) + 1];
        for level in (0..=root_level).rev() {
            expected = self.verify_level(level, &expected, &mut seen, &mut report)?;
            if !report.violations.is_empty() {
                break;
            }
        }
        if report.violations.is_empty() && report.entries != self.len() {
            report.violations.push(format!("len: {} entries in the leaves, len() says {}", report.entries, self.len()));
        }
        self.verify_pages(&seen, &mut report);
        Ok(report)
    }

    /// Walks one level's chain from the first expected node; returns what
    /// the level below must be.
    fn verify_level(
        &self,
        level: u8,
        expected: &[Expected],
        seen: &mut HashSet<PageId>,
        report: &mut VerifyReport,
    ) -> Result<Vec<Expected>> {
        let page_size = self.pool.page_size() as f64;
        let mut below = Vec::new();
        let mut previous: Option<(PageId, Option<Vec<u8>>)> = None;
        let mut used_bytes = 0f64;
        let stats_index = usize::from(level);
        for (position, want) in expected.iter().enumerate() {
            let pid = want.pid;
            let fail = |report: &mut VerifyReport, what: String| report.violations.push(format!("page {pid}: {what}"));
            if !seen.insert(pid) {
                fail(report, "reachable twice".into());
                return Ok(Vec::new());
            }
            let guard = self.pool.shared(pid)?;
            let page = guard.page();
            if let Err(error) = check_node(&page, pid) {
                fail(report, format!("node: {error}"));
                return Ok(Vec::new());
            }
            let node = Node::new(&page, pid)?;
            let head = *node.header();
            if head.level != level {
                fail(report, format!("level: at level {} in the chain of level {level}", head.level));
            }
            if head.flags & (FLAG_INCOMPLETE_SPLIT | FLAG_HALF_DEAD | FLAG_DELETED) != 0 {
                fail(report, format!("flags: {:#x} on a reachable node", head.flags));
            }
            let high = node.high_key()?;
            if high != want.high {
                fail(report, format!("parent: high key {high:?} differs from the parent's bound {:?}", want.high));
            }
            if let Some((prev_pid, prev_high)) = &previous {
                let first = if node.is_leaf() { 0 } else { 1 };
                if node.len() > first {
                    let key = node.key(first)?;
                    if prev_high.as_ref().is_some_and(|h| key.as_slice() <= h.as_slice()) {
                        fail(report, format!("chain: first key not above page {prev_pid}'s high key"));
                    }
                }
            }
            let right_expected = expected.get(position + 1).map(|e| e.pid);
            if head.right != right_expected {
                // What the link names tells a stale page (a lost write)
                // from an unfinished structure change (a half-dead node).
                let named = head.right.map(|right| self.describe(right)).unwrap_or_default();
                fail(
                    report,
                    format!("chain: right-link {:?}{named}, parent order says {right_expected:?}", head.right),
                );
            }
            if node.is_leaf() && head.left != previous.as_ref().map(|(p, _)| *p) {
                fail(report, format!("chain: left-link {:?} does not point back", head.left));
            }
            let stats = &mut report.levels[stats_index];
            stats.nodes += 1;
            stats.cells += node.len() as u64;
            used_bytes += page_size - node.free_space() as f64;
            if node.is_leaf() {
                report.entries += node.len() as u64;
                for slot in 0..node.len() {
                    if let ValueRef::Overflow { first, len } = node.value_ref(slot)? {
                        self.verify_overflow(pid, first, len, seen, report)?;
                    }
                }
            } else {
                for index in 0..node.len() {
                    let upper = if index + 1 < node.len() { Some(node.key(index + 1)?) } else { high.clone() };
                    below.push(Expected { pid: node.child(index)?, high: upper });
                }
            }
            previous = Some((pid, high));
        }
        let stats = &mut report.levels[stats_index];
        stats.fill = if stats.nodes == 0 { 0.0 } else { used_bytes / (stats.nodes as f64 * page_size) };
        Ok(below)
    }

    /// The level and flags of node `pid`, for a report (latched shared
    /// for the moment; the caller may hold latches on nodes to its left).
    fn describe(&self, pid: PageId) -> String {
        let Ok(guard) = self.pool.shared(pid) else { return " (unreadable)".into() };
        match Node::new(guard.page(), pid) {
            Ok(node) => {
                let head = node.header();
                format!(" (level {}, flags {:#x}, right-link {:?})", head.level, head.flags, head.right)
            }
            Err(_) => " (not a node)".into(),
        }
    }

    fn verify_overflow(
        &self,
        leaf: PageId,
        first: PageId,
        len: usize,
        seen: &mut HashSet<PageId>,
        report: &mut VerifyReport,
    ) -> Result<()> {
        let mut next = Some(first);
        let mut total = 0usize;
        while let Some(pid) = next {
            if !seen.insert(pid) {
                report.violations.push(format!("page {pid}: overflow page reachable twice (value in page {leaf})"));
                return Ok(());
            }
            report.overflow_pages += 1;
            let guard = self.pool.shared(pid)?;
            let page = guard.page();
            match crate::page::overflow::read(&page, pid) {
                Ok(piece) => {
                    total += piece.len;
                    next = piece.next;
                }
                Err(error) => {
                    report.violations.push(format!("page {pid}: overflow: {error}"));
                    return Ok(());
                }
            }
        }
        if total != len {
            report.violations.push(format!("page {leaf}: overflow chain holds {total} of {len} bytes"));
        }
        Ok(())
    }

    /// Reachable, free and retired pages partition `1..page_count`.
    fn verify_pages(&self, seen: &HashSet<PageId>, report: &mut VerifyReport) {
        let free = self.pool.free_pages();
        let retired = self.retired.pending();
        report.free_pages = free.len() as u64;
        report.retired_pages = retired.len() as u64;
        let mut owner: HashSet<PageId> = seen.clone();
        for pid in free.iter().chain(retired.iter()) {
            if !owner.insert(*pid) {
                report.violations.push(format!("page {pid}: pages: both live and free, or free twice"));
            }
        }
        for raw in 1..report.page_count {
            if !owner.contains(&PageId(raw)) {
                report.violations.push(format!("page {raw}: pages: leaked (neither reachable nor free)"));
                if report.violations.len() > 100 {
                    return;
                }
            }
        }
    }
}
