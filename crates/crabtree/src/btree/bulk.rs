//! Bulk load: builds a tree bottom-up from sorted input, packing leaves and
//! inner nodes to `BULK_FILL` instead of splitting them half-full.
//!
//! The tree must be empty and nobody may use it concurrently (checked: the
//! root must be an empty leaf; concurrent use is the caller's contract).

use super::value::StoredValue;
use super::{BTree, ROOT_SLOT};
use crate::buffer::ExclusiveGuard;
use crate::ids::PageId;
use crate::page::PageType;
use crate::page::node::{CellData, Node, NodeMut};
use crate::sync::Ordering;
use crate::{Error, Result};

/// Share of a page a bulk-loaded node is filled to: room is left so the
/// first inserts after the load do not split every node.
const BULK_FILL: f64 = 0.9;

/// A node being filled and the lower bound of its range.
struct Open<'a> {
    guard: ExclusiveGuard<'a>,
    /// Lower bound of the node's range (`None`: minus infinity).
    low: Option<Vec<u8>>,
    /// Last key added (the node's high key once it is closed).
    last: Vec<u8>,
    /// Cells added so far.
    cells: usize,
}

/// Whether the open node (if any) takes a cell of `size` bytes and still
/// keeps `reserve` bytes free.
fn has_room(open: Option<&Open<'_>>, size: usize, reserve: usize) -> Result<bool> {
    let Some(current) = open else { return Ok(false) };
    let node = Node::new(current.guard.page(), current.guard.pid())?;
    Ok(node.free_space() >= size + node.slot_size() + reserve)
}

/// Appends `cell` as the last cell of the open node; `key` is the key it
/// stands for (the separator of an inner cell even where cell 0 drops it).
fn append(open: Option<&mut Open<'_>>, cell: &CellData<'_>, key: &[u8]) -> Result<()> {
    let current = open.ok_or_else(|| Error::InvalidArgument("no open node".into()))?;
    let pid = current.guard.pid();
    let mut page = current.guard.page_mut();
    NodeMut::new(&mut page, pid)?.insert(current.cells, cell)?;
    current.cells += 1;
    current.last = key.to_vec();
    Ok(())
}

impl BTree {
    /// Loads sorted, unique entries into this empty tree. Returns the number
    /// of entries loaded. Errors: `InvalidArgument` if the tree is not empty
    /// or the input not strictly ascending (the tree is then left empty).
    pub fn bulk_load<K, V, I>(&self, entries: I) -> Result<u64>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
        I: IntoIterator<Item = (K, V)>,
    {
        let old_root = self.root();
        {
            let guard = self.pool.shared(old_root)?;
            let node = Node::new(guard.page(), old_root)?;
            if !node.is_leaf() || !node.is_empty() {
                return Err(Error::InvalidArgument("bulk_load needs an empty tree".into()));
            }
        }
        let mut allocated = Vec::new();
        match self.build(entries, &mut allocated) {
            Ok((root, count)) => {
                let level = {
                    let guard = self.pool.shared(root)?;
                    Node::new(guard.page(), root)?.header().level
                };
                let mut root_level = self.root_lock.lock();
                self.pool.set_root(ROOT_SLOT, root)?;
                *root_level = level;
                drop(root_level);
                self.len.store(count, Ordering::Relaxed);
                self.pool.free_unread(old_root);
                Ok(count)
            }
            Err(error) => {
                for pid in allocated {
                    self.pool.free_unread(pid);
                }
                Err(error)
            }
        }
    }

    fn build<K, V, I>(&self, entries: I, allocated: &mut Vec<PageId>) -> Result<(PageId, u64)>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
        I: IntoIterator<Item = (K, V)>,
    {
        let page_size = self.pool.page_size();
        let budget = (page_size as f64 * (1.0 - BULK_FILL)) as usize;
        let mut children: Vec<(Option<Vec<u8>>, PageId)> = Vec::new();
        let mut open: Option<Open<'_>> = None;
        let mut count = 0u64;
        for (key, value) in entries {
            let (key, value) = (key.as_ref(), value.as_ref());
            self.check_key(key)?;
            if let Some(current) = &open
                && key <= current.last.as_slice()
            {
                return Err(Error::InvalidArgument("bulk_load input is not strictly ascending".into()));
            }
            let stored = StoredValue::prepare(self, key, value)?;
            if let StoredValue::Overflow { pages, .. } = &stored {
                allocated.extend_from_slice(pages);
            }
            let cell = stored.cell(key);
            if !has_room(open.as_ref(), cell.size(), budget.max(key.len()))? {
                let mut next = self.open_node(PageType::Leaf, 0, open.as_ref().map(|o| o.last.clone()), allocated)?;
                if let Some(done) = open.take() {
                    let next_pid = next.guard.pid();
                    NodeMut::new(&mut next.guard.page_mut(), next_pid)?.set_left(Some(done.guard.pid()));
                    let high = done.last.clone();
                    children.push(self.close_node(done, high, next_pid)?);
                }
                open = Some(next);
            }
            append(open.as_mut(), &cell, key)?;
            count += 1;
        }
        let Some(last) = open else {
            // Nothing to load: build an empty leaf as the root.
            let empty = self.open_node(PageType::Leaf, 0, None, allocated)?;
            return Ok((empty.guard.pid(), 0));
        };
        children.push(self.close_last(last)?);
        let mut level = 0u8;
        while children.len() > 1 {
            level += 1;
            children = self.build_level(&children, level, allocated)?;
        }
        Ok((children[0].1, count))
    }

    /// Builds one inner level over `children` (lower bound, pid).
    fn build_level(
        &self,
        children: &[(Option<Vec<u8>>, PageId)],
        level: u8,
        allocated: &mut Vec<PageId>,
    ) -> Result<Vec<(Option<Vec<u8>>, PageId)>> {
        let budget = (self.pool.page_size() as f64 * (1.0 - BULK_FILL)) as usize;
        let mut parents = Vec::new();
        let mut open: Option<Open<'_>> = None;
        for (low, child) in children {
            let key = low.as_deref().unwrap_or(b"");
            // The node's high key, set when it is closed, is the lower bound
            // of the child after the last one it takes: any key, so room for
            // the largest is kept.
            let cell = CellData::Inner { key, child: *child };
            if !has_room(open.as_ref(), cell.size(), budget.max(self.key_size_max))? {
                let next = self.open_node(PageType::Inner, level, low.clone(), allocated)?;
                if let Some(done) = open.take() {
                    let high = low.clone().ok_or_else(|| Error::InvalidArgument("inner bound missing".into()))?;
                    parents.push(self.close_node(done, high, next.guard.pid())?);
                }
                open = Some(next);
            }
            // Cell 0 of an inner node is minus infinity: its key is not kept.
            let first = open.as_ref().is_some_and(|current| current.cells == 0);
            let stored = if first { CellData::Inner { key: b"", child: *child } } else { cell };
            append(open.as_mut(), &stored, key)?;
        }
        let last = open.ok_or_else(|| Error::InvalidArgument("empty level".into()))?;
        parents.push(self.close_last(last)?);
        Ok(parents)
    }

    fn open_node(
        &self,
        kind: PageType,
        level: u8,
        low: Option<Vec<u8>>,
        allocated: &mut Vec<PageId>,
    ) -> Result<Open<'_>> {
        let mut guard = self.pool.allocate()?;
        let pid = guard.pid();
        allocated.push(pid);
        NodeMut::init(&mut guard.page_mut(), pid, kind, level);
        Ok(Open { guard, low, last: Vec::new(), cells: 0 })
    }

    /// Closes a node whose right sibling `right` starts above `high`.
    fn close_node(&self, mut done: Open<'_>, high: Vec<u8>, right: PageId) -> Result<(Option<Vec<u8>>, PageId)> {
        let pid = done.guard.pid();
        let mut page = done.guard.page_mut();
        let mut node = NodeMut::new(&mut page, pid)?;
        node.set_high_key(Some(&high))?;
        node.set_right(Some(right));
        Ok((done.low, pid))
    }

    /// Closes the last node of a level: high key +infinity.
    fn close_last(&self, done: Open<'_>) -> Result<(Option<Vec<u8>>, PageId)> {
        Ok((done.low, done.guard.pid()))
    }
}
