//! Writers: insert (upsert) and remove at a leaf, half-splits, the parent
//! insert that completes them, and finishing splits others abandoned.
//!
//! Entry of the public paths: no latch held. A writer latches the leaf
//! exclusively by upgrading its optimistic read; if the leaf must split it
//! keeps it latched, latches the new right sibling (fresh), the old right
//! neighbour (rightward, to fix its left-link), then the parent (upward),
//! possibly moving right along the parent level, and so on up.

use super::descend::{ReadGuard, Target};
use super::value::StoredValue;
use super::{Attempt, BTree, LeafEntry, Step};
use crate::buffer::{Change, ExclusiveGuard};
use crate::ids::PageId;
use crate::page::PageType;
use crate::page::node::{
    CellData, FLAG_DELETED, FLAG_HALF_DEAD, FLAG_INCOMPLETE_SPLIT, Node, NodeMut, OFFSET_LEFT, SLOTS_START, ValueRef,
    raw_cell_child, raw_cell_key, slot_size,
};
use crate::page::redo::{CellChange, build_left_half};
use crate::sync::{AtomicU64, Ordering};
use crate::{Error, Result};

/// Inner nodes passed on the way down: `(level, pid)`.
pub(crate) type Path = Vec<(u8, PageId)>;

/// A removed entry: its value and the leaf if that became empty.
pub(crate) type Removed = Option<(Vec<u8>, Option<PageId>)>;

impl BTree {
    /// Descends to the leaf for `key` and latches it exclusively. The leaf
    /// holds `key` in its range and is not being deleted; an abandoned split
    /// on it is finished first (then the attempt restarts). If finishing
    /// fails (see `descend_finishing`) the leaf is latched again and
    /// returned flagged (for `DatabaseFull` and I/O errors; corruption is
    /// reported): the operation may need no page, and a flagged
    /// leaf takes inserts, removes and splits (its right half inherits the
    /// flag).
    fn latch_leaf(&self, key: &[u8], path: &mut Path, pessimistic: bool) -> Attempt<ExclusiveGuard<'_>> {
        let mut finish = true;
        loop {
            path.clear();
            let leaf = self.latch_leaf_once(key, path, pessimistic, finish)?;
            let flags = Node::new(leaf.page(), leaf.pid())?.header().flags;
            if finish && flags & FLAG_INCOMPLETE_SPLIT != 0 {
                match self.finish_split(leaf, path) {
                    Ok(()) => return Err(Step::Restart),
                    Err(error) if super::descend::finish_can_wait(&error) => {
                        finish = false;
                        continue;
                    }
                    Err(error) => return Err(Step::Fail(error)),
                }
            }
            failpoint!("write.leaf_latched");
            return Ok(leaf);
        }
    }

    /// One descent of `latch_leaf`.
    fn latch_leaf_once(
        &self,
        key: &[u8],
        path: &mut Path,
        pessimistic: bool,
        finish: bool,
    ) -> Attempt<ExclusiveGuard<'_>> {
        Ok(match self.descend_finishing(Target::Key(key), 0, Some(path), pessimistic, finish)? {
            ReadGuard::Optimistic(guard) => guard.try_upgrade()?,
            ReadGuard::Shared(guard) => {
                let pid = guard.pid();
                drop(guard);
                let leaf = self.pool.exclusive(pid)?;
                let node = Node::new(leaf.page(), pid)?;
                let dead = node.header().flags & (FLAG_HALF_DEAD | FLAG_DELETED) != 0;
                if dead || node.is_above_high_key(key)? {
                    return Err(Step::Restart);
                }
                leaf
            }
            // Writers' descents never read uncached.
            ReadGuard::Uncached(_) => return Err(Step::Restart),
        })
    }

    /// One attempt at storing `value` under `key`.
    pub(crate) fn insert_attempt(
        &self,
        key: &[u8],
        value: &StoredValue<'_>,
        pessimistic: bool,
    ) -> Attempt<Option<Vec<u8>>> {
        let mut path = Path::new();
        let mut leaf = self.latch_leaf(key, &mut path, pessimistic)?;
        // Under the leaf's latch (`count`).
        let counted = self.recount.behind(key);
        let pid = leaf.pid();
        let cell = value.cell(key);
        let (slot, old, old_pages) = {
            let page = leaf.page();
            let node = Node::new(&page, pid)?;
            match node.search(key)? {
                Ok(slot) => {
                    let (old, pages) = self.read_owned_value(&node, slot)?;
                    (Ok(slot), Some(old), pages)
                }
                Err(slot) => (Err(slot), None, Vec::new()),
            }
        };
        let fits_now = |leaf: &ExclusiveGuard<'_>, slot: std::result::Result<usize, usize>| -> Result<bool> {
            let node = Node::new(leaf.page(), pid)?;
            let freed = match slot {
                Ok(index) => node.cell(index)?.size + node.slot_size(),
                Err(_) => 0,
            };
            Ok(node.free_space() + freed >= cell.size() + node.slot_size())
        };
        let mut slot = slot;
        let mut fits = fits_now(&leaf, slot)?;
        if !fits && self.prune_leaf(&mut leaf, key)? > 0 {
            slot = Node::new(leaf.page(), pid)?.search(key)?;
            fits = fits_now(&leaf, slot)?;
        }
        if fits {
            {
                let mut page = leaf.page_mut();
                let mut node = NodeMut::new(&mut page, pid)?;
                match slot {
                    Ok(index) => node.replace(index, &cell)?,
                    Err(index) => {
                        node.insert(index, &cell)?;
                        self.hints.note(pid, index);
                    }
                }
            }
            self.pool.log_leaf_put(&mut leaf, &cell, &old_pages, value.pages())?;
        } else {
            let mut cells = self.raw_cells(&leaf)?;
            let raw = cell.encode();
            let change = match slot {
                Ok(index) => CellChange::Replace(index, &raw),
                Err(index) => CellChange::Insert(index, &raw),
            };
            change.apply(&mut cells, pid)?;
            self.split(leaf, cells, change, &path, None, &old_pages, value.pages())?;
        }
        for pid in old_pages {
            self.retired.retire(pid);
        }
        if old.is_none() && counted {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        Ok(old)
    }

    /// Before a full leaf splits, removes the entries the pruner names
    /// (never `keep`, the key being written), each logged as a leaf remove
    /// with its overflow pages freed. Returns how many went. Entry and
    /// exit: the leaf exclusively latched.
    fn prune_leaf(&self, leaf: &mut ExclusiveGuard<'_>, keep: &[u8]) -> Result<usize> {
        let Some(pruner) = self.pruner.read().clone() else { return Ok(0) };
        let pid = leaf.pid();
        let entries = {
            let page = leaf.page();
            let node = Node::new(&page, pid)?;
            (0..node.len())
                .map(|index| {
                    let inline = match node.value_ref(index)? {
                        ValueRef::Inline { offset, len } if len <= LeafEntry::INLINE_SHOWN => {
                            Some(node.read_bytes(offset, len))
                        }
                        ValueRef::Inline { .. } | ValueRef::Overflow { .. } => None,
                    };
                    Ok(LeafEntry { key: node.key(index)?, inline })
                })
                .collect::<Result<Vec<_>>>()?
        };
        let mut doomed = pruner(&entries);
        // The entry being written stays, and so does everything before it
        // in the leaf if the pruner named it: an older version of a key
        // must not outlive a newer one named with it (its tombstone would
        // go and leave it visible). Commits write new version keys, so
        // this is a guard, not a path the engine takes.
        if let Some(kept) = entries.iter().position(|entry| entry.key.as_slice() == keep)
            && doomed.contains(&kept)
        {
            doomed.retain(|&index| index > kept);
        }
        doomed.retain(|&index| entries.get(index).is_some_and(|entry| entry.key.as_slice() != keep));
        doomed.sort_unstable();
        doomed.dedup();
        // From the right, so the indices left to do stay valid.
        for &index in doomed.iter().rev() {
            let pages = {
                let page = leaf.page();
                let node = Node::new(&page, pid)?;
                self.read_owned_value(&node, index)?.1
            };
            NodeMut::new(&mut leaf.page_mut(), pid)?.remove(index)?;
            self.pool.log_leaf_remove(leaf, &entries[index].key, &pages)?;
            for pid in pages {
                self.retired.retire(pid);
            }
            // Under the leaf's latch (`count`).
            if self.recount.behind(&entries[index].key) {
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
            failpoint!("prune.removed");
        }
        Ok(doomed.len())
    }

    /// The value of cell `slot` of a latched leaf, and its overflow pages.
    /// Entry and exit: the leaf's exclusive latch, which pins the chain
    /// (`value::read_chain` reads it without restarts, so no loop here).
    fn read_owned_value<P: crate::page::PageBuf>(&self, node: &Node<P>, slot: usize) -> Result<(Vec<u8>, Vec<PageId>)> {
        match node.value_ref(slot)? {
            ValueRef::Inline { offset, len } => Ok((node.read_bytes(offset, len), Vec::new())),
            ValueRef::Overflow { first, len } => self.read_chain(first, len),
        }
    }

    /// One attempt at removing `key`.
    pub(crate) fn remove_attempt(&self, key: &[u8], pessimistic: bool) -> Attempt<Removed> {
        let mut path = Path::new();
        let mut leaf = self.latch_leaf(key, &mut path, pessimistic)?;
        let pid = leaf.pid();
        let page = leaf.page();
        let node = Node::new(&page, pid)?;
        let Ok(slot) = node.search(key)? else {
            return Ok(None);
        };
        let (old, pages) = self.read_owned_value(&node, slot)?;
        let right = node.header().right;
        let empty = {
            let mut page = leaf.page_mut();
            let mut node = NodeMut::new(&mut page, pid)?;
            node.remove(slot)?;
            node.as_node()?.is_empty()
        };
        self.pool.log_leaf_remove(&mut leaf, key, &pages)?;
        // Under the leaf's latch (`count`).
        if self.recount.behind(key) {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        drop(leaf);
        for pid in pages {
            self.retired.retire(pid);
        }
        // The rightmost leaf of the tree is never deleted.
        let candidate = (empty && right.is_some()).then_some(pid);
        Ok(Some((old, candidate)))
    }

    /// Every cell of a latched node, as raw bytes.
    pub(super) fn raw_cells(&self, guard: &ExclusiveGuard<'_>) -> Result<Vec<Vec<u8>>> {
        let page = guard.page();
        let node = Node::new(&page, guard.pid())?;
        (0..node.len()).map(|index| node.raw_cell(index)).collect()
    }

    /// Where to split `cells` of a leaf (`leaf`) or inner node after
    /// `change`, `room` bytes of its page past the header:
    /// * an append to the rightmost node of its level (no high key, the new
    ///   cell after every other): where the left half holds
    ///   `APPEND_SPLIT_FILL` of the bytes;
    /// * an insert `sequential` with the node's last one (right after it:
    ///   `InsertHints`): right after the new cell, which ends the left half
    ///   while the cells after it go right, so a run of ascending keys in
    ///   the middle of the tree fills the node it is in and leaves the
    ///   keys past it alone (InnoDB splits at the insert point so);
    /// * anything else: where the bytes of the two halves balance, for
    ///   random inserts fill both halves alike.
    ///
    /// An uneven cut never leaves the left half without room for its new
    /// high key (the separator): it moves left, at most to the even cut,
    /// which always fits. Keys that arrive in ascending order (sequence
    /// numbers, timestamps) then fill the nodes they leave behind instead
    /// of leaving each half empty, as PostgreSQL's nbtree does for its
    /// rightmost page (its leaf fillfactor) and SQLite's `balance_quick`
    /// for an append.
    pub(super) fn split_index_for(
        cells: &[Vec<u8>],
        leaf: bool,
        room: usize,
        change: &CellChange<'_>,
        rightmost: bool,
        sequential: bool,
    ) -> usize {
        let slot_size = slot_size(leaf);
        let even = Self::split_index(cells, slot_size);
        let left_fits = |mid: usize| {
            let bytes: usize = cells.iter().take(mid).map(|cell| cell.len() + slot_size).sum();
            let high = crate::page::redo::split_separator(cells, mid, leaf).map_or(0, <[u8]>::len);
            bytes + high <= room
        };
        let uneven = match *change {
            CellChange::Insert(index, _) if rightmost && index + 1 == cells.len() => {
                Self::split_index_at(cells, slot_size, APPEND_SPLIT_FILL).max(even)
            }
            CellChange::Insert(index, _) if sequential => (index + 1).clamp(1, cells.len() - 1),
            _ => return even,
        };
        let mut mid = uneven;
        while mid > even && !left_fits(mid) {
            mid -= 1;
        }
        mid
    }

    /// The index where the left half first holds at least `fill` of the
    /// bytes of `cells`, each half non-empty.
    fn split_index_at(cells: &[Vec<u8>], slot_size: usize, fill: f64) -> usize {
        let total: usize = cells.iter().map(|cell| cell.len() + slot_size).sum();
        let target = (total as f64 * fill) as usize;
        let mut left = 0;
        for (index, cell) in cells.iter().enumerate() {
            if left >= target {
                return index.clamp(1, cells.len() - 1);
            }
            left += cell.len() + slot_size;
        }
        cells.len() - 1
    }

    /// Where to split `cells` (sizes in bytes) of a node whose slots are
    /// `slot_size` bytes: the index that best balances the bytes of both
    /// halves, each half non-empty.
    fn split_index(cells: &[Vec<u8>], slot_size: usize) -> usize {
        let total: usize = cells.iter().map(|cell| cell.len() + slot_size).sum();
        let mut left = 0;
        for (index, cell) in cells.iter().enumerate() {
            let size = cell.len() + slot_size;
            if left + size > total / 2 {
                // Put the straddling cell on the side that stays smaller.
                let with = left + size;
                let index = if with - total / 2 <= total / 2 - left { index + 1 } else { index };
                return index.clamp(1, cells.len() - 1);
            }
            left += size;
        }
        cells.len() - 1
    }

    /// Half-splits the latched node `left` whose new contents would be
    /// `cells` (too many for one page), then inserts the separator into the
    /// parent. Entry: `left` exclusive. Exit: no latch. An error means
    /// nothing changed; a failure after the half-split is left to be
    /// finished later (see below) and is not reported.
    ///
    /// `completes`: when the split makes room for a child's separator, the
    /// child (latched, flagged `INCOMPLETE_SPLIT`), whose flag is cleared
    /// once the separator is in one of the halves, not before: a failure
    /// before that point leaves the child's split abandoned, for the next
    /// writer or `repair`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn split<'t>(
        &'t self,
        mut left: ExclusiveGuard<'t>,
        cells: Vec<Vec<u8>>,
        change: CellChange<'_>,
        path: &[(u8, PageId)],
        completes: Option<ExclusiveGuard<'t>>,
        frees: &[PageId],
        claims: &[PageId],
    ) -> Result<()> {
        let left_pid = left.pid();
        let (head, high) = {
            let page = left.page();
            let node = Node::new(&page, left_pid)?;
            (*node.header(), node.high_key()?)
        };
        let leaf = head.kind == PageType::Leaf;
        if cells.len() < 2 {
            return Err(Error::corruption(left_pid, "split of a node with fewer than two cells"));
        }
        let room = self.pool.page_size() - SLOTS_START;
        let inserted = match change {
            CellChange::Insert(index, _) => Some(index),
            _ => None,
        };
        let sequential = inserted.is_some_and(|index| self.hints.follows(left_pid, index));
        let mid = Self::split_index_for(&cells, leaf, room, &change, high.is_none(), sequential);
        let separator =
            if leaf { raw_cell_key(&cells[mid - 1], true).to_vec() } else { raw_cell_key(&cells[mid], false).to_vec() };
        // Everything that can fail (latching the old right neighbour, to fix
        // its left-link, rightward; allocating the sibling and, when `left`
        // is the root, the new root) happens before any change. Holding
        // `left`, we are the only thread that can replace it as the root.
        failpoint!("split.before_neighbour");
        let mut neighbour = match (leaf, head.right) {
            (true, Some(pid)) => Some(self.pool.exclusive(pid)?),
            _ => None,
        };
        failpoint!("split.before_allocate");
        let new_root = if self.root() == left_pid { Some(self.pool.allocate()?) } else { None };
        let mut right = match self.pool.allocate() {
            Ok(right) => right,
            Err(error) => {
                if let Some(new_root) = new_root {
                    self.free_fresh(new_root);
                }
                return Err(error);
            }
        };
        let right_pid = right.pid();
        // The right half is not reachable yet: if writing it fails, both
        // fresh pages go back and nothing changed.
        if let Err(error) = Self::fill_right_half(&mut right, &cells[mid..], &head, high.as_deref(), left_pid) {
            self.free_fresh(right);
            if let Some(new_root) = new_root {
                self.free_fresh(new_root);
            }
            return Err(error);
        }
        // The same function redo runs for the `SplitLeft` entry logged below.
        build_left_half(&mut left.page_mut(), left_pid, &cells, mid, right_pid)?;
        if let Some(guard) = neighbour.as_mut() {
            let pid = guard.pid();
            NodeMut::new(&mut guard.page_mut(), pid)?.set_left(Some(right_pid));
        }
        let mut completes = completes;
        if let Some(child) = completes.as_mut() {
            clear_incomplete(child)?;
        }
        // One mini-transaction: the half-split (both halves, the neighbour's
        // left-link) and the child split it completes are atomic in the log.
        {
            let mut guards: Vec<&mut ExclusiveGuard<'_>> = vec![&mut right, &mut left];
            let mut changes = vec![Change::Image, Change::SplitLeft { mid, right: right_pid, change }];
            if let Some(guard) = neighbour.as_mut() {
                guards.push(guard);
                changes.push(Change::Bytes { offset: OFFSET_LEFT, len: 8 });
            }
            if let Some(guard) = completes.as_mut() {
                guards.push(guard);
                changes.push(FLAGS_CHANGE);
            }
            self.pool.log_changes_claiming(&mut guards, &changes, frees, claims)?;
        }
        drop(completes);
        drop(neighbour);
        drop(right);
        // Where the new cell went: the next insert right after it is
        // sequential too.
        match inserted {
            Some(index) if index < mid => self.hints.note(left_pid, index),
            Some(index) => self.hints.note(right_pid, index - mid),
            None => {}
        }
        // The change that caused the split is in place and every key is
        // reachable. If the parent insert fails (I/O), `left` stays flagged
        // and the next writer that meets it, or `repair`, finishes it: the
        // operation itself succeeded, so its caller is not told otherwise.
        failpoint!("split.before_parent", ignore);
        let _ = self.insert_into_parent(left, &separator, right_pid, path, new_root);
        Ok(())
    }

    /// Writes the right half of a split of the node `left_pid` (header
    /// `head`, high key `high`) into the fresh page `right`: `cells`, the
    /// old high key and right-link, and an abandoned split of the left
    /// node, whose right-link it takes over. Entry and exit: `right`
    /// exclusive, not yet reachable.
    fn fill_right_half(
        right: &mut ExclusiveGuard<'_>,
        cells: &[Vec<u8>],
        head: &crate::page::node::NodeHeader,
        high: Option<&[u8]>,
        left_pid: PageId,
    ) -> Result<()> {
        let leaf = head.kind == PageType::Leaf;
        let right_pid = right.pid();
        let mut page = right.page_mut();
        let mut node = NodeMut::init(&mut page, right_pid, head.kind, head.level);
        for (index, raw) in cells.iter().enumerate() {
            if !leaf && index == 0 {
                // Cell 0 of an inner node is minus infinity: drop its key.
                let child = raw_cell_child(raw).ok_or_else(|| Error::corruption(left_pid, "null child"))?;
                node.insert(0, &CellData::Inner { key: b"", child })?;
            } else {
                node.insert_raw(index, raw)?;
            }
        }
        node.set_high_key(high)?;
        node.set_right(head.right);
        node.set_left(if leaf { Some(left_pid) } else { None });
        // An abandoned split of `left` (its old right sibling still lacks a
        // downlink) is now the right half's: the flag travels with the
        // right-link it is about.
        node.set_flags(node.as_node()?.header().flags | (head.flags & FLAG_INCOMPLETE_SPLIT));
        failpoint!("split.right_written");
        Ok(())
    }

    /// Gives back a page allocated by this thread that nobody else saw.
    fn free_fresh(&self, guard: ExclusiveGuard<'_>) {
        let pid = guard.pid();
        drop(guard);
        self.pool.free_unread(pid);
    }

    /// Inserts the downlink `(separator, right)` for the split of `child`
    /// (exclusively latched, flagged `INCOMPLETE_SPLIT`) into its parent,
    /// then clears the flag. `new_root`: a fresh page for the new root if
    /// `child` is the root (allocated before the half-split, so a full disk
    /// fails the insert before it changes anything); allocated here if
    /// needed and not given, freed if given and not needed. Entry: `child`
    /// exclusive; the caller pinned (so a remembered or found parent id
    /// still names the node it named, or a deleted one that moves right).
    /// Exit: no latch. An error leaves `child` flagged and the tree valid.
    pub(crate) fn insert_into_parent<'t>(
        &'t self,
        mut child: ExclusiveGuard<'t>,
        separator: &[u8],
        right: PageId,
        path: &[(u8, PageId)],
        mut new_root: Option<ExclusiveGuard<'t>>,
    ) -> Result<()> {
        let child_pid = child.pid();
        let level = Node::new(child.page(), child_pid)?.header().level;
        let parent_level = level + 1;
        let remembered = path.iter().rev().find(|(l, _)| *l == parent_level).map(|&(_, pid)| pid);
        let parent_pid = match remembered {
            Some(pid) => pid,
            None => {
                let mut root_level = self.root_lock.lock();
                if self.root() == child_pid {
                    self.grow_root(&mut child, separator, right, new_root)?;
                    *root_level = parent_level;
                    return Ok(());
                }
                let no_parent_level = *root_level < parent_level;
                drop(root_level);
                if let Some(new_root) = new_root.take() {
                    self.free_fresh(new_root);
                }
                if no_parent_level {
                    // The root is a node of `child`'s level left of it whose
                    // own split was abandoned: no parent level exists yet.
                    // Latching the root (leftward) could deadlock, so leave
                    // this split flagged; writers finish the root's split
                    // first, as they pass it on the way down, then this one.
                    return Ok(());
                }
                self.find_node(separator, parent_level)?
            }
        };
        if let Some(new_root) = new_root {
            self.free_fresh(new_root);
        }
        failpoint!("parent.before_latch");
        let parent = self.latch_parent(parent_pid, separator, parent_level)?;
        let pid = parent.pid();
        let cell = CellData::Inner { key: separator, child: right };
        let (index, fits) = {
            let page = parent.page();
            let node = Node::new(&page, pid)?;
            let index = match node.search_from(1, separator)? {
                Ok(_) => return Err(Error::corruption(pid, "separator already in the parent")),
                Err(index) => index.max(1),
            };
            (index, node.free_space() >= cell.size() + node.slot_size())
        };
        if fits {
            let mut parent = parent;
            NodeMut::new(&mut parent.page_mut(), pid)?.insert(index, &cell)?;
            self.hints.note(pid, index);
            clear_incomplete(&mut child)?;
            // The downlink and the cleared flag: one mini-transaction.
            let raw = cell.encode();
            self.pool.log_changes(
                &mut [&mut parent, &mut child],
                &[Change::Insert { index, raw: &raw }, FLAGS_CHANGE],
                &[],
                None,
            )?;
            return Ok(());
        }
        let mut cells = self.raw_cells(&parent)?;
        let raw = cell.encode();
        let change = CellChange::Insert(index, &raw);
        change.apply(&mut cells, pid)?;
        // The separator is in one of the parent's halves once the half-split
        // is done, so the child's split is complete from here on.
        let upper_path: Path = path.iter().filter(|(l, _)| *l > parent_level).copied().collect();
        self.split(parent, cells, change, &upper_path, Some(child), &[], &[])
    }

    /// Latches the parent for `separator` at `level`, starting from
    /// `start` (a remembered or found id) and moving right past nodes
    /// being deleted and nodes whose range ends below the separator. The
    /// start must still be a node of `level` (the caller's pin keeps its
    /// page from being reused); if it is not, the parent is looked for
    /// again from the root, once. Entry: the child latched, pinned. Exit:
    /// the parent exclusive as well.
    fn latch_parent(&self, start: PageId, separator: &[u8], level: u8) -> Result<ExclusiveGuard<'_>> {
        let mut parent = self.pool.exclusive(start)?;
        let mut refound = false;
        let mut hops = 0u64;
        loop {
            let node = Node::new(parent.page(), parent.pid())?;
            let head = *node.header();
            if head.kind != PageType::Inner || head.level != level {
                // Cannot happen while pinned; checked because latching a
                // reused page as a parent would corrupt it silently.
                if refound {
                    return Err(Error::corruption(parent.pid(), format!("parent level {level} not found")));
                }
                refound = true;
                drop(parent);
                parent = self.pool.exclusive(self.find_node(separator, level)?)?;
                continue;
            }
            let dead = head.flags & (FLAG_HALF_DEAD | FLAG_DELETED) != 0;
            if !dead && !node.is_above_high_key(separator)? {
                return Ok(parent);
            }
            hops += 1;
            if hops > self.pool.page_count() {
                return Err(Error::corruption(parent.pid(), "parent level does not end: link cycle"));
            }
            let next = head
                .right
                .ok_or_else(|| Error::corruption(parent.pid(), "separator above the last node's high key"))?;
            // Rightward while holding `parent`: allowed by the latch order.
            let next = self.pool.exclusive(next)?;
            parent = next;
        }
    }

    /// Installs a new root above `child` (the old root) and its new right
    /// sibling, on `new_root` (allocated now if `None`), and clears
    /// `child`'s incomplete split: the new root, the flag and the root slot
    /// are one mini-transaction. Entry: `child` exclusive and `root_lock`
    /// held.
    fn grow_root<'t>(
        &'t self,
        child: &mut ExclusiveGuard<'t>,
        separator: &[u8],
        right: PageId,
        new_root: Option<ExclusiveGuard<'t>>,
    ) -> Result<()> {
        let level = Node::new(child.page(), child.pid())?.header().level + 1;
        let mut root = match new_root {
            Some(root) => root,
            None => self.pool.allocate()?,
        };
        if let Err(error) = root_growth_failpoint() {
            self.free_fresh(root);
            return Err(error);
        }
        let root_pid = root.pid();
        {
            let mut page = root.page_mut();
            let mut node = NodeMut::init(&mut page, root_pid, PageType::Inner, level);
            node.insert(0, &CellData::Inner { key: b"", child: child.pid() })?;
            node.insert(1, &CellData::Inner { key: separator, child: right })?;
        }
        clear_incomplete(child)?;
        self.pool.log_changes(
            &mut [&mut root, child],
            &[Change::Image, FLAGS_CHANGE],
            &[],
            Some((super::ROOT_SLOT, root_pid)),
        )?;
        Ok(())
    }

    /// The pid of the node at `level` whose range holds `key` (not latched).
    pub(crate) fn find_node(&self, key: &[u8], level: u8) -> Result<PageId> {
        self.retry(super::Pinning::SharedOnly, |tree, pessimistic| {
            let guard = tree.descend(Target::Key(key), level, None, pessimistic)?;
            guard.validate()?;
            Ok(guard.pid())
        })
    }

    /// Completes an abandoned split of the latched `node`: its right sibling
    /// has no downlink yet. Entry: `node` exclusive. Exit: no latch.
    pub(crate) fn finish_split(&self, node: ExclusiveGuard<'_>, path: &[(u8, PageId)]) -> Result<()> {
        let (right, high) = {
            let page = node.page();
            let decoded = Node::new(&page, node.pid())?;
            (decoded.header().right, decoded.high_key()?)
        };
        match (right, high) {
            (Some(right), Some(high)) => self.insert_into_parent(node, &high, right, path, None),
            _ => Err(Error::corruption(node.pid(), "incomplete split without a right sibling")),
        }
    }
}

/// The failpoint `root.before_grow`: the new root is allocated, nothing
/// changed yet.
fn root_growth_failpoint() -> Result<()> {
    failpoint!("root.before_grow");
    Ok(())
}

/// Where recent inserts went: per node, the position of its last insert,
/// in a direct-mapped table of `HINT_SLOTS` words (`page id << 16 |
/// position`, relaxed: a hint, lost to a collision or a race at no cost
/// but an even split). A split whose insert lands right after the node's
/// last one cuts after it (`BTree::split_index_for`).
pub(super) struct InsertHints {
    slots: Box<[AtomicU64]>,
}

/// Slots of `InsertHints` (a power of two): 32 KiB.
const HINT_SLOTS: usize = 4096;

impl Default for InsertHints {
    fn default() -> Self {
        InsertHints { slots: (0..HINT_SLOTS).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl InsertHints {
    fn slot(&self, pid: PageId) -> Option<&AtomicU64> {
        let hash = pid.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52;
        self.slots.get(hash as usize % HINT_SLOTS)
    }

    fn word(pid: PageId, index: usize) -> Option<u64> {
        (pid.0 < 1 << 48 && index < 1 << 16).then_some(pid.0 << 16 | index as u64)
    }

    /// Records that node `pid`'s last insert went to `index`.
    pub(super) fn note(&self, pid: PageId, index: usize) {
        if let (Some(slot), Some(word)) = (self.slot(pid), Self::word(pid, index)) {
            slot.store(word, Ordering::Relaxed);
        }
    }

    /// Whether an insert at `index` of `pid` comes right after its last.
    pub(super) fn follows(&self, pid: PageId, index: usize) -> bool {
        let previous = index.checked_sub(1).and_then(|before| Self::word(pid, before));
        match (self.slot(pid), previous) {
            (Some(slot), Some(word)) => slot.load(Ordering::Relaxed) == word,
            _ => false,
        }
    }
}

/// Share of the bytes the left half keeps when the rightmost node of a
/// level splits for an append (`BTree::split_index_for`): room is left for
/// a few more versions of its keys before it splits again.
const APPEND_SPLIT_FILL: f64 = 0.9;

/// How a node whose flags alone changed is logged.
const FLAGS_CHANGE: Change<'static> = Change::Bytes { offset: crate::page::header::OFFSET_FLAGS, len: 2 };

/// Clears `INCOMPLETE_SPLIT` on a latched node.
fn clear_incomplete(guard: &mut ExclusiveGuard<'_>) -> Result<()> {
    let pid = guard.pid();
    let flags = Node::new(guard.page(), pid)?.header().flags;
    let mut page = guard.page_mut();
    NodeMut::new(&mut page, pid)?.set_flags(flags & !FLAG_INCOMPLETE_SPLIT);
    Ok(())
}

const _: () = assert!(SLOTS_START > 0);
