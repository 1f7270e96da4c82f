//! Redo entries of a mini-transaction: how a page change is written into a
//! log record, and how recovery applies it to a page image.
//!
//! A mini-transaction (`buffer::mtr`) logs one WAL record holding a
//! sequence of entries; every entry names its page, so the record is
//! self-contained. Layout (little-endian, no padding between entries):
//!
//! ```text
//! kind u8 = 1  Image      pid u64 | page size u32 | hole start u32 | hole end u32
//!                         | bytes 0..hole start | bytes hole end..page size
//! kind u8 = 2  LeafPut    pid u64 | cell length u32 | raw leaf cell (key inside)
//! kind u8 = 3  LeafRemove pid u64 | key length u32 | key
//! kind u8 = 4  Free       pid u64            (the page is free from here on)
//! kind u8 = 5  SetRoot    slot u8 | value u64
//! kind u8 = 6  Provisional  as Image: the page of a value not yet stored
//! kind u8 = 7  Claim      pid u64            (a provisional page is used)
//! kind u8 = 8  Bytes      pid u64 | offset u32 | length u32 | bytes
//! kind u8 = 9  NodeInsert pid u64 | slot index u32 | cell length u32 | raw cell
//! kind u8 = 10 SplitLeft  pid u64 | mid u32 | right u64 | change u8 (0 none,
//!                         1 insert, 2 replace) | index u32 | cell length u32 | raw cell
//! ```
//!
//! * `Image` is physical: the whole page after the change, minus the free
//!   gap of a node (between the slot array and the cell area), which redo
//!   fills with zeros. It is used for structure changes (splits, root
//!   growth, deletion steps, overflow pages) and as the full-page image
//!   that protects a page against a torn write after a checkpoint.
//! * `LeafPut` and `LeafRemove` are physiological: the page, and the
//!   logical change within it (upsert of a cell, removal of a key). Redo
//!   runs the same node code the writer ran, on the same page state (redo
//!   order is log order, and a page's records are applied only above its
//!   page LSN), so it rebuilds the same bytes.
//! * `Bytes` is physical and small: a link or the flags of a node (the
//!   neighbour's left-link in a split, a cleared incomplete-split flag).
//! * `NodeInsert` is physiological: one raw cell inserted at a slot (the
//!   separator a split adds to its parent), redone by the same node code.
//! * `SplitLeft` is physiological: the node becomes the left half of a
//!   split (its cells, with one inserted or replaced, cut at `mid`; the
//!   separator as high key; the new right sibling as right-link; flagged
//!   incomplete), rebuilt by [`build_left_half`], the function the writer
//!   itself runs, from the page as it was before the split.
//! * `Free` and `SetRoot` change the allocator's state, not a page.
//! * `Provisional` is an image of an overflow page written before the leaf
//!   cell that will own it: recovery restores its bytes but counts the
//!   page as used only once a `Claim` for it (logged with that cell) is in
//!   the log; a crash in between leaves it free, not leaked.
//!
//! Invariant: `decode` of any bytes yields entries or
//! `Error::LogCorruption`, never a panic; `apply` of a valid entry to any
//! page image yields `Ok` or `Error::Corruption`.

use crate::ids::{Lsn, PageId};
use crate::limits::PAGE_HEADER_SIZE;
use crate::page::PageType;
use crate::page::bytes::PageBuf;
use crate::page::header;
use crate::page::node::{Node, NodeMut, SLOTS_START, raw_cell_key, slot_size};
use crate::{Error, Result};

const KIND_IMAGE: u8 = 1;
const KIND_LEAF_PUT: u8 = 2;
const KIND_LEAF_REMOVE: u8 = 3;
const KIND_FREE: u8 = 4;
const KIND_SET_ROOT: u8 = 5;
const KIND_PROVISIONAL: u8 = 6;
const KIND_CLAIM: u8 = 7;
const KIND_BYTES: u8 = 8;
const KIND_NODE_INSERT: u8 = 9;
const KIND_SPLIT_LEFT: u8 = 10;

/// How a node's cells change in the step that splits it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellChange<'a> {
    /// No change (a split alone).
    None,
    /// A raw cell inserted at a slot.
    Insert(usize, &'a [u8]),
    /// The cell at a slot replaced by a raw cell.
    Replace(usize, &'a [u8]),
}

impl CellChange<'_> {
    /// Applies the change to a node's raw cells.
    pub fn apply(&self, cells: &mut Vec<Vec<u8>>, pid: PageId) -> Result<()> {
        match *self {
            CellChange::None => {}
            CellChange::Insert(index, raw) if index <= cells.len() => cells.insert(index, raw.to_vec()),
            CellChange::Replace(index, raw) if index < cells.len() => cells[index] = raw.to_vec(),
            _ => return Err(Error::corruption(pid, "logged split change outside the node")),
        }
        Ok(())
    }
}

/// The separator of a split of `cells` at `mid`: the last key of the left
/// half of a leaf, the first key of the right half of an inner node.
pub fn split_separator(cells: &[Vec<u8>], mid: usize, leaf: bool) -> Option<&[u8]> {
    let cell = if leaf { cells.get(mid.checked_sub(1)?)? } else { cells.get(mid)? };
    Some(raw_cell_key(cell, leaf))
}

/// Rebuilds the node `page` as the left half of a split: `cells[..mid]`,
/// the separator as high key, `right` as right-link, its old left-link,
/// flagged incomplete; its page LSN is kept. The writer and redo both
/// call this, so they build the same bytes.
pub fn build_left_half<P: crate::page::bytes::PageBufMut + ?Sized>(
    page: &mut P,
    pid: PageId,
    cells: &[Vec<u8>],
    mid: usize,
    right: PageId,
) -> Result<()> {
    let head = *Node::new(&*page, pid)?.header();
    let leaf = head.kind == PageType::Leaf;
    let separator = split_separator(cells, mid, leaf)
        .ok_or_else(|| Error::corruption(pid, "split point outside the node"))?
        .to_vec();
    let lsn = header::lsn(&*page);
    let mut node = NodeMut::init(page, pid, head.kind, head.level);
    for (index, raw) in cells.get(..mid).unwrap_or(&[]).iter().enumerate() {
        node.insert_raw(index, raw)?;
    }
    node.set_high_key(Some(&separator))?;
    node.set_right(Some(right));
    node.set_left(head.left);
    node.set_flags(node.as_node()?.header().flags | crate::page::node::FLAG_INCOMPLETE_SPLIT);
    header::set_lsn(page, lsn);
    Ok(())
}

/// One decoded entry, borrowing the record's bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    /// The page's image after the change, with a zero-filled hole.
    Image {
        /// The page.
        pid: PageId,
        /// Page size.
        size: usize,
        /// Start of the omitted gap.
        hole_start: usize,
        /// End of the omitted gap.
        hole_end: usize,
        /// Bytes before the gap.
        head: &'a [u8],
        /// Bytes after the gap.
        tail: &'a [u8],
        /// Written before its owner: used only once claimed.
        provisional: bool,
    },
    /// Upsert of a raw leaf cell.
    LeafPut {
        /// The leaf.
        pid: PageId,
        /// The raw cell, key inside.
        cell: &'a [u8],
    },
    /// Removal of a key from a leaf.
    LeafRemove {
        /// The leaf.
        pid: PageId,
        /// The key.
        key: &'a [u8],
    },
    /// The page is free from this record on.
    Free {
        /// The page.
        pid: PageId,
    },
    /// Raw bytes of a page.
    Bytes {
        /// The page.
        pid: PageId,
        /// Where.
        offset: usize,
        /// The new bytes.
        bytes: &'a [u8],
    },
    /// The node becomes the left half of a split.
    SplitLeft {
        /// The node.
        pid: PageId,
        /// Cells kept.
        mid: usize,
        /// The new right sibling.
        right: PageId,
        /// The change of the cells that caused the split.
        change: CellChange<'a>,
    },
    /// A raw cell inserted at a slot of a node.
    NodeInsert {
        /// The node.
        pid: PageId,
        /// The slot index.
        index: usize,
        /// The raw cell.
        cell: &'a [u8],
    },
    /// A provisional page is used from this record on.
    Claim {
        /// The page.
        pid: PageId,
    },
    /// A root slot changes.
    SetRoot {
        /// The slot.
        slot: u8,
        /// Its new value.
        value: u64,
    },
}

impl Entry<'_> {
    /// The page the entry changes, if it changes one.
    pub fn page(&self) -> Option<PageId> {
        match self {
            Entry::Image { pid, .. }
            | Entry::LeafPut { pid, .. }
            | Entry::LeafRemove { pid, .. }
            | Entry::Bytes { pid, .. }
            | Entry::SplitLeft { pid, .. }
            | Entry::NodeInsert { pid, .. } => Some(*pid),
            Entry::Free { .. } | Entry::SetRoot { .. } | Entry::Claim { .. } => None,
        }
    }
}

/// The free gap of a node image: `(start, end)`, empty for other pages or
/// a header that does not make sense (then the image is logged whole).
pub fn hole(page: &[u8]) -> (usize, usize) {
    let kind = page.get(header::OFFSET_TYPE).copied().and_then(PageType::from_u8);
    if !matches!(kind, Some(PageType::Leaf | PageType::Inner)) || page.len() < SLOTS_START {
        return (page.len(), page.len());
    }
    let count = usize::from(page.read_u16(40));
    let cell_start = page.read_u32(44) as usize;
    let start = SLOTS_START + count * slot_size(kind == Some(PageType::Leaf));
    if start <= cell_start && cell_start <= page.len() { (start, cell_start) } else { (page.len(), page.len()) }
}

/// Appends an `Image` entry for `page` (the page's bytes after the change),
/// or a `Provisional` one.
pub fn put_image(out: &mut Vec<u8>, pid: PageId, page: &[u8], provisional: bool) {
    let (start, end) = hole(page);
    out.push(if provisional { KIND_PROVISIONAL } else { KIND_IMAGE });
    out.extend_from_slice(&pid.0.to_le_bytes());
    out.extend_from_slice(&(page.len() as u32).to_le_bytes());
    out.extend_from_slice(&(start as u32).to_le_bytes());
    out.extend_from_slice(&(end as u32).to_le_bytes());
    out.extend_from_slice(&page[..start]);
    out.extend_from_slice(&page[end..]);
}

/// Appends a `LeafPut` entry.
pub fn put_leaf_put(out: &mut Vec<u8>, pid: PageId, cell: &[u8]) {
    out.push(KIND_LEAF_PUT);
    out.extend_from_slice(&pid.0.to_le_bytes());
    out.extend_from_slice(&(cell.len() as u32).to_le_bytes());
    out.extend_from_slice(cell);
}

/// Appends a `LeafRemove` entry.
pub fn put_leaf_remove(out: &mut Vec<u8>, pid: PageId, key: &[u8]) {
    out.push(KIND_LEAF_REMOVE);
    out.extend_from_slice(&pid.0.to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
}

/// Appends a `Free` entry.
pub fn put_free(out: &mut Vec<u8>, pid: PageId) {
    out.push(KIND_FREE);
    out.extend_from_slice(&pid.0.to_le_bytes());
}

/// Appends a `Bytes` entry.
pub fn put_bytes(out: &mut Vec<u8>, pid: PageId, offset: usize, bytes: &[u8]) {
    out.push(KIND_BYTES);
    out.extend_from_slice(&pid.0.to_le_bytes());
    out.extend_from_slice(&(offset as u32).to_le_bytes());
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Appends a `SplitLeft` entry.
pub fn put_split_left(out: &mut Vec<u8>, pid: PageId, mid: usize, right: PageId, change: CellChange<'_>) {
    out.push(KIND_SPLIT_LEFT);
    out.extend_from_slice(&pid.0.to_le_bytes());
    out.extend_from_slice(&(mid as u32).to_le_bytes());
    out.extend_from_slice(&right.0.to_le_bytes());
    let (kind, index, raw): (u8, usize, &[u8]) = match change {
        CellChange::None => (0, 0, &[]),
        CellChange::Insert(index, raw) => (1, index, raw),
        CellChange::Replace(index, raw) => (2, index, raw),
    };
    out.push(kind);
    out.extend_from_slice(&(index as u32).to_le_bytes());
    out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    out.extend_from_slice(raw);
}

/// Appends a `NodeInsert` entry.
pub fn put_node_insert(out: &mut Vec<u8>, pid: PageId, index: usize, cell: &[u8]) {
    out.push(KIND_NODE_INSERT);
    out.extend_from_slice(&pid.0.to_le_bytes());
    out.extend_from_slice(&(index as u32).to_le_bytes());
    out.extend_from_slice(&(cell.len() as u32).to_le_bytes());
    out.extend_from_slice(cell);
}

/// Appends a `Claim` entry.
pub fn put_claim(out: &mut Vec<u8>, pid: PageId) {
    out.push(KIND_CLAIM);
    out.extend_from_slice(&pid.0.to_le_bytes());
}

/// Appends a `SetRoot` entry.
pub fn put_set_root(out: &mut Vec<u8>, slot: u8, value: u64) {
    out.push(KIND_SET_ROOT);
    out.push(slot);
    out.extend_from_slice(&value.to_le_bytes());
}

/// Reads the entries of a record at `lsn` (for error messages).
pub struct Entries<'a> {
    bytes: &'a [u8],
    lsn: Lsn,
}

/// Iterates the entries of the record payload `bytes` logged at `lsn`.
pub fn decode(bytes: &[u8], lsn: Lsn) -> Entries<'_> {
    Entries { bytes, lsn }
}

impl<'a> Entries<'a> {
    fn bad(&mut self, reason: &str) -> Error {
        self.bytes = &[];
        Error::LogCorruption { lsn: self.lsn, reason: format!("mini-transaction record: {reason}") }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn entry(&mut self, kind: u8) -> Option<std::result::Result<Entry<'a>, &'static str>> {
        Some(Ok(match kind {
            KIND_IMAGE | KIND_PROVISIONAL => {
                let pid = PageId(self.u64()?);
                let size = self.u32()? as usize;
                let start = self.u32()? as usize;
                let end = self.u32()? as usize;
                if !crate::limits::page_size_valid(size) || start > end || end > size || start < PAGE_HEADER_SIZE {
                    return Some(Err("image bounds"));
                }
                let head = self.take(start)?;
                let tail = self.take(size - end)?;
                Entry::Image {
                    pid,
                    size,
                    hole_start: start,
                    hole_end: end,
                    head,
                    tail,
                    provisional: kind == KIND_PROVISIONAL,
                }
            }
            KIND_LEAF_PUT => {
                let pid = PageId(self.u64()?);
                let len = self.u32()? as usize;
                Entry::LeafPut { pid, cell: self.take(len)? }
            }
            KIND_LEAF_REMOVE => {
                let pid = PageId(self.u64()?);
                let len = self.u32()? as usize;
                Entry::LeafRemove { pid, key: self.take(len)? }
            }
            KIND_FREE => Entry::Free { pid: PageId(self.u64()?) },
            KIND_CLAIM => Entry::Claim { pid: PageId(self.u64()?) },
            KIND_BYTES => {
                let pid = PageId(self.u64()?);
                let offset = self.u32()? as usize;
                let len = self.u32()? as usize;
                Entry::Bytes { pid, offset, bytes: self.take(len)? }
            }
            KIND_SPLIT_LEFT => {
                let pid = PageId(self.u64()?);
                let mid = self.u32()? as usize;
                let right = PageId(self.u64()?);
                let kind = self.take(1)?[0];
                let index = self.u32()? as usize;
                let len = self.u32()? as usize;
                let raw = self.take(len)?;
                let change = match kind {
                    0 => CellChange::None,
                    1 => CellChange::Insert(index, raw),
                    2 => CellChange::Replace(index, raw),
                    _ => return Some(Err("split change kind")),
                };
                Entry::SplitLeft { pid, mid, right, change }
            }
            KIND_NODE_INSERT => {
                let pid = PageId(self.u64()?);
                let index = self.u32()? as usize;
                let len = self.u32()? as usize;
                Entry::NodeInsert { pid, index, cell: self.take(len)? }
            }
            KIND_SET_ROOT => {
                let slot = self.take(1)?[0];
                Entry::SetRoot { slot, value: self.u64()? }
            }
            _ => return Some(Err("unknown entry kind")),
        }))
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        let kind = *self.take(1)?.first()?;
        match self.entry(kind) {
            Some(Ok(entry)) => Some(Ok(entry)),
            Some(Err(reason)) => Some(Err(self.bad(reason))),
            None => Some(Err(self.bad("entry cut short"))),
        }
    }
}

/// Applies a page entry to `page` (the page's current image, whose LSN is
/// below the record's) and stamps `lsn` (the record's end). `Free` and
/// `SetRoot` are not page entries: the caller handles them.
pub fn apply(entry: &Entry<'_>, page: &mut [u8], lsn: Lsn) -> Result<()> {
    match entry {
        Entry::Image { pid, size, hole_start, hole_end, head, tail, .. } => {
            if page.len() != *size {
                return Err(Error::corruption(*pid, format!("image of {size} bytes for a {}-byte page", page.len())));
            }
            page[..*hole_start].copy_from_slice(head);
            page[*hole_start..*hole_end].fill(0);
            page[*hole_end..].copy_from_slice(tail);
        }
        Entry::LeafPut { pid, cell } => {
            let key = raw_cell_key(cell, true);
            let mut node = NodeMut::new(page, *pid)?;
            let found = node.as_node()?.search(key)?;
            match found {
                Ok(index) => node.replace_raw(index, cell)?,
                Err(index) => node.insert_raw(index, cell)?,
            }
        }
        Entry::Bytes { pid, offset, bytes } => {
            // Never the checksum or the page's own id: those are the page's.
            let end = offset.checked_add(bytes.len()).filter(|&end| end <= page.len());
            match end {
                Some(end) if *offset >= header::OFFSET_TYPE && *offset < end => {
                    page[*offset..end].copy_from_slice(bytes)
                }
                _ => {
                    return Err(Error::corruption(
                        *pid,
                        format!("logged bytes at {offset}+{} outside the page", bytes.len()),
                    ));
                }
            }
        }
        Entry::NodeInsert { pid, index, cell } => NodeMut::new(page, *pid)?.insert_raw(*index, cell)?,
        Entry::SplitLeft { pid, mid, right, change } => {
            let mut cells = {
                let node = Node::new(&*page, *pid)?;
                (0..node.len()).map(|index| node.raw_cell(index)).collect::<Result<Vec<_>>>()?
            };
            change.apply(&mut cells, *pid)?;
            if *mid == 0 || *mid >= cells.len() {
                return Err(Error::corruption(*pid, "logged split point outside the node"));
            }
            build_left_half(page, *pid, &cells, *mid, *right)?;
        }
        Entry::LeafRemove { pid, key } => {
            let mut node = NodeMut::new(page, *pid)?;
            if let Ok(index) = node.as_node()?.search(key)? {
                node.remove(index)?;
            }
        }
        Entry::Free { .. } | Entry::SetRoot { .. } | Entry::Claim { .. } => return Ok(()),
    }
    header::set_lsn(page, lsn);
    Ok(())
}

/// Whether `page` (read for `pid`) holds a node whose checks pass: a
/// redo of a logical entry needs one.
pub fn is_node(page: &[u8], pid: PageId) -> bool {
    Node::new(page, pid).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::node::CellData;

    fn leaf(size: usize) -> Vec<u8> {
        let mut page = vec![0u8; size];
        NodeMut::init(page.as_mut_slice(), PageId(3), PageType::Leaf, 0);
        page
    }

    #[test]
    fn logical_redo_rebuilds_the_same_bytes() {
        let mut live = leaf(4096);
        let mut redone = live.clone();
        let mut log = Vec::new();
        for i in 0..40u32 {
            let key = (i * 7919 % 97).to_be_bytes();
            let value = vec![i as u8; (i % 13) as usize * 3];
            let cell = CellData::Leaf { key: &key, value: &value };
            let mut node = NodeMut::new(live.as_mut_slice(), PageId(3)).unwrap();
            match node.as_node().unwrap().search(&key).unwrap() {
                Ok(index) => node.replace(index, &cell).unwrap(),
                Err(index) => node.insert(index, &cell).unwrap(),
            }
            put_leaf_put(&mut log, PageId(3), &cell.encode());
            if i % 5 == 4 {
                let gone = ((i - 2) * 7919 % 97).to_be_bytes();
                let mut node = NodeMut::new(live.as_mut_slice(), PageId(3)).unwrap();
                if let Ok(index) = node.as_node().unwrap().search(&gone).unwrap() {
                    node.remove(index).unwrap();
                }
                put_leaf_remove(&mut log, PageId(3), &gone);
            }
        }
        for entry in decode(&log, Lsn(1)) {
            apply(&entry.unwrap(), &mut redone, Lsn(9)).unwrap();
        }
        header::set_lsn(live.as_mut_slice(), Lsn(9));
        assert_eq!(live, redone);
    }

    #[test]
    fn split_left_redo_rebuilds_the_writers_left_half() {
        let mut page = leaf(1024);
        for i in 0..20u32 {
            let key = (i * 2).to_be_bytes();
            let mut node = NodeMut::new(page.as_mut_slice(), PageId(3)).unwrap();
            node.insert(i as usize, &CellData::Leaf { key: &key, value: &[i as u8; 20] }).unwrap();
        }
        header::set_lsn(page.as_mut_slice(), Lsn(40));
        let before = page.clone();
        for (change_kind, index) in [(1u8, 7usize), (2, 3), (0, 0)] {
            let key = 15u32.to_be_bytes();
            let raw = CellData::Leaf { key: &key, value: b"new" }.encode();
            let change = match change_kind {
                1 => CellChange::Insert(index, &raw),
                2 => CellChange::Replace(index, &raw),
                _ => CellChange::None,
            };
            let mut live = before.clone();
            let mut cells: Vec<Vec<u8>> = {
                let node = Node::new(live.as_slice(), PageId(3)).unwrap();
                (0..node.len()).map(|i| node.raw_cell(i).unwrap()).collect()
            };
            change.apply(&mut cells, PageId(3)).unwrap();
            build_left_half(live.as_mut_slice(), PageId(3), &cells, 9, PageId(77)).unwrap();
            let mut log = Vec::new();
            put_split_left(&mut log, PageId(3), 9, PageId(77), change);
            let mut redone = before.clone();
            let entry = decode(&log, Lsn(50)).next().unwrap().unwrap();
            apply(&entry, &mut redone, Lsn(60)).unwrap();
            header::set_lsn(live.as_mut_slice(), Lsn(60));
            assert_eq!(live, redone, "change {change_kind}");
        }
    }

    #[test]
    fn image_round_trips_without_its_hole() {
        let mut page = leaf(4096);
        let mut node = NodeMut::new(page.as_mut_slice(), PageId(3)).unwrap();
        node.insert(0, &CellData::Leaf { key: b"k", value: b"v" }).unwrap();
        let mut log = Vec::new();
        put_image(&mut log, PageId(3), &page, false);
        assert!(log.len() < 200, "hole omitted: {} bytes", log.len());
        let mut out = vec![0xAAu8; 4096];
        let entry = decode(&log, Lsn(1)).next().unwrap().unwrap();
        apply(&entry, &mut out, Lsn(5)).unwrap();
        header::set_lsn(page.as_mut_slice(), Lsn(5));
        assert_eq!(out, page);
    }

    #[test]
    fn decoding_garbage_never_panics() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let len = rng.usize(0..64);
            let bytes: Vec<u8> = (0..len).map(|_| if rng.bool() { rng.u8(0..11) } else { rng.u8(..) }).collect();
            for entry in decode(&bytes, Lsn(0)).flatten() {
                let mut page = leaf(4096);
                let _ = apply(&entry, &mut page, Lsn(1));
            }
        }
    }
}
