//! The slotted node layout of B-link tree pages (leaves and inner nodes).
//!
//! ```text
//! offset size field
//!  0     24   common page header (page::header); flags below
//! 24      8   right link (0: rightmost node of its level)
//! 32      8   left link (leaves only; a hint, revalidated by readers)
//! 40      2   slot count n
//! 42      2   reserved (0)
//! 44      4   cell area start: lowest byte used by cells (page size if none)
//! 48      4   fragmented bytes: dead cell bytes inside the cell area
//! 52      2   high key offset   } valid when FLAG_HIGH_KEY is set; otherwise
//! 54      2   high key length   } the high key is +infinity
//! 56      8   reserved (0)
//! 64    s*n   slot array, in key order; slot i (s = 8 bytes in a leaf,
//!             16 in an inner node):
//!               0  2  offset of cell i
//!               2  2  key length of cell i
//!               4  4  first 4 key bytes (zero-padded): the search runs
//!                     branch-free on these alone, and reads cells only
//!                     where they tie (`Node::search_from`)
//!               8  8  inner nodes only: the child of cell i, a copy of
//!                     the one in the cell, so a descent that has found
//!                     its slot reads the child from the slot's cache line
//!                     instead of missing once more on the cell
//!   ...       free space
//!   ...       cells, growing down from the end of the page
//! ```
//!
//! Leaf cell: `key_len u16 | flags u8 | value_len u32 | key | value`, where
//! with `CELL_OVERFLOW` the value part is the u64 id of the first overflow
//! page and `value_len` is the whole value's length.
//! Inner cell: `key_len u16 | child u64 | key`. Cell `i` of an inner node is
//! the child holding keys in `(key_i, key_{i+1}]` (the last child up to the
//! node's high key); the key of cell 0 is never compared (minus infinity) and
//! is stored empty.
//!
//! Invariants (checked by `btree::verify` and, where local, by
//! [`check_node`]): keys strictly ascending; every key `<=` the high key;
//! slot offsets inside the cell area; cells inside the page and disjoint.
//!
//! Every accessor validates what it reads against the page size before use
//! and returns `Error::Corruption` naming the page, so a torn optimistic read
//! or a damaged page can only yield an error, never a panic; optimistic
//! callers validate the latch version before believing such an error.

use crate::ids::PageId;
use crate::limits::PAGE_HEADER_SIZE;
use crate::page::bytes::{PageBuf, PageBufMut};
use crate::page::header::{self, PageType};
use crate::{Error, Result};
use std::cmp::Ordering;

const OFFSET_RIGHT: usize = 24;
/// Offset of the left link (8 bytes): a split logs only these bytes of the
/// old right neighbour.
pub const OFFSET_LEFT: usize = 32;
const OFFSET_SLOT_COUNT: usize = 40;
const OFFSET_CELL_START: usize = 44;
const OFFSET_FRAGMENTED: usize = 48;
const OFFSET_HIGH_OFF: usize = 52;
const OFFSET_HIGH_LEN: usize = 54;
/// Where the slot array starts.
pub const SLOTS_START: usize = 64;
/// Bytes per leaf slot: cell offset, key length, key prefix.
pub const SLOT_SIZE: usize = 8;
/// Bytes per inner-node slot: a leaf slot's fields, then the child.
pub const INNER_SLOT_SIZE: usize = 16;
/// Offset of the child in an inner-node slot.
const SLOT_CHILD: usize = 8;

/// Bytes per slot in a leaf (`leaf`) or an inner node.
#[inline(always)]
pub const fn slot_size(leaf: bool) -> usize {
    if leaf { SLOT_SIZE } else { INNER_SLOT_SIZE }
}
/// Key bytes copied into each slot.
pub const SLOT_PREFIX: usize = 4;

/// The slot prefix of `key`: its first bytes, zero-padded, as a big-endian
/// number (so numeric order is memcmp order of the padded bytes).
fn key_prefix(key: &[u8]) -> u32 {
    // Most keys are at least this long: a fixed-size read, no copy call.
    if let Some(head) = key.first_chunk::<SLOT_PREFIX>() {
        return u32::from_be_bytes(*head);
    }
    let mut bytes = [0u8; SLOT_PREFIX];
    for (to, from) in bytes.iter_mut().zip(key) {
        *to = *from;
    }
    u32::from_be_bytes(bytes)
}

/// The slot bytes for a cell at `offset` with `key` and, in an inner node,
/// `child` (the first [`slot_size`] bytes are the slot).
fn slot_bytes(offset: usize, key: &[u8], child: Option<PageId>) -> [u8; INNER_SLOT_SIZE] {
    let mut slot = [0u8; INNER_SLOT_SIZE];
    slot[..2].copy_from_slice(&(offset as u16).to_le_bytes());
    slot[2..4].copy_from_slice(&(key.len() as u16).to_le_bytes());
    slot[4..SLOT_CHILD].copy_from_slice(&key_prefix(key).to_be_bytes());
    slot[SLOT_CHILD..].copy_from_slice(&PageId::to_link(child).to_le_bytes());
    slot
}

/// Node flag: a high key is stored (else it is +infinity).
pub const FLAG_HIGH_KEY: u16 = 1 << 0;
/// Node flag: the node was half-split and its right sibling has no downlink
/// in the parent yet.
pub const FLAG_INCOMPLETE_SPLIT: u16 = 1 << 1;
/// Node flag: the node is being deleted; its downlink is gone or going.
pub const FLAG_HALF_DEAD: u16 = 1 << 2;
/// Node flag: the node is unlinked from its level and awaits reuse.
pub const FLAG_DELETED: u16 = 1 << 3;
const FLAGS_KNOWN: u16 = FLAG_HIGH_KEY | FLAG_INCOMPLETE_SPLIT | FLAG_HALF_DEAD | FLAG_DELETED;

/// Leaf cell flag: the value lives in overflow pages.
pub const CELL_OVERFLOW: u8 = 1 << 0;
/// Bytes of a leaf cell before its key.
pub const LEAF_CELL_HEADER: usize = 7;
/// Bytes of an inner cell before its key.
pub const INNER_CELL_HEADER: usize = 10;

/// Decoded fixed fields of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeHeader {
    /// Leaf or inner.
    pub kind: PageType,
    /// 0 for leaves, parent level = child level + 1.
    pub level: u8,
    /// `FLAG_*` bits.
    pub flags: u16,
    /// Right sibling on the same level.
    pub right: Option<PageId>,
    /// Left sibling (leaves; a hint).
    pub left: Option<PageId>,
    /// Number of cells.
    pub slot_count: usize,
    /// Lowest byte used by cells.
    pub cell_start: usize,
    /// Dead bytes inside the cell area.
    pub fragmented: usize,
}

/// Where a leaf cell's value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueRef {
    /// Stored in the cell: `len` bytes at `offset`.
    Inline {
        /// Offset of the first value byte in the page.
        offset: usize,
        /// Value length.
        len: usize,
    },
    /// Stored in a chain of overflow pages starting at `first`.
    Overflow {
        /// First overflow page.
        first: PageId,
        /// Whole value length.
        len: usize,
    },
}

/// A decoded, bounds-checked cell position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    /// Offset of the cell in the page.
    pub offset: usize,
    /// Offset of the key bytes.
    pub key_offset: usize,
    /// Key length.
    pub key_len: usize,
    /// Total cell size in bytes.
    pub size: usize,
}

/// Size of a leaf cell with a key of `key_len` and an inline value of
/// `value_len` (or an overflow reference when `overflow`).
pub const fn leaf_cell_size(key_len: usize, value_len: usize, overflow: bool) -> usize {
    LEAF_CELL_HEADER + key_len + if overflow { 8 } else { value_len }
}

/// Size of an inner cell with a key of `key_len`.
pub const fn inner_cell_size(key_len: usize) -> usize {
    INNER_CELL_HEADER + key_len
}

fn corrupt(pid: PageId, reason: impl Into<String>) -> Error {
    Error::corruption(pid, reason)
}

/// Read access to a node in any page buffer. Every method validates.
pub struct Node<P: PageBuf> {
    page: P,
    pid: PageId,
    head: NodeHeader,
}

impl<P: PageBuf> Node<P> {
    /// Decodes and validates the header of node `pid`. `page` is a page
    /// buffer or a reference to one.
    #[inline(always)]
    pub fn new(page: P, pid: PageId) -> Result<Self> {
        let head = read_header(&page, pid)?;
        Ok(Node { page, pid, head })
    }

    /// The page id given at decode time.
    pub fn pid(&self) -> PageId {
        self.pid
    }

    /// The decoded header.
    pub fn header(&self) -> &NodeHeader {
        &self.head
    }

    /// Number of cells.
    pub fn len(&self) -> usize {
        self.head.slot_count
    }

    /// Whether the node has no cells.
    pub fn is_empty(&self) -> bool {
        self.head.slot_count == 0
    }

    /// Whether this is a leaf.
    pub fn is_leaf(&self) -> bool {
        self.head.kind == PageType::Leaf
    }

    /// Bytes per slot of this node ([`slot_size`]).
    #[inline(always)]
    pub fn slot_size(&self) -> usize {
        slot_size(self.is_leaf())
    }

    /// Bytes free for new cells and slots, counting fragmented space that a
    /// compaction would reclaim.
    pub fn free_space(&self) -> usize {
        let slots_end = SLOTS_START + self.head.slot_count * self.slot_size();
        self.head.cell_start - slots_end + self.head.fragmented
    }

    /// Bytes free without compaction.
    pub fn contiguous_free(&self) -> usize {
        self.head.cell_start - (SLOTS_START + self.head.slot_count * self.slot_size())
    }

    /// The high key's position, or `None` for +infinity.
    pub fn high_key_range(&self) -> Result<Option<(usize, usize)>> {
        if self.head.flags & FLAG_HIGH_KEY == 0 {
            return Ok(None);
        }
        let offset = usize::from(self.page.read_u16(OFFSET_HIGH_OFF));
        let len = usize::from(self.page.read_u16(OFFSET_HIGH_LEN));
        if offset < self.head.cell_start || offset + len > self.page.size() {
            return Err(corrupt(self.pid, format!("high key {offset}+{len} outside cell area")));
        }
        Ok(Some((offset, len)))
    }

    /// A copy of the high key, `None` for +infinity.
    pub fn high_key(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.high_key_range()?.map(|(offset, len)| self.page.read_vec(offset, len)))
    }

    /// Whether `key` is above this node's high key (so a search for it must
    /// move right).
    pub fn is_above_high_key(&self, key: &[u8]) -> Result<bool> {
        Ok(match self.high_key_range()? {
            None => false,
            Some((offset, len)) => self.page.compare(offset, len, key) == Ordering::Less,
        })
    }

    /// The position of cell `index`, validated.
    pub fn cell(&self, index: usize) -> Result<Cell> {
        Ok(self.cell_parts(index)?.0)
    }

    /// `cell`, with a leaf cell's flags and value length as read for the
    /// size check (both 0 for an inner cell), so `entry` reads them once.
    fn cell_parts(&self, index: usize) -> Result<(Cell, u8, usize)> {
        if index >= self.head.slot_count {
            return Err(corrupt(self.pid, format!("slot {index} of {}", self.head.slot_count)));
        }
        let offset = usize::from(self.page.read_u16(SLOTS_START + index * self.slot_size()));
        let size = self.page.size();
        let fixed = if self.is_leaf() { LEAF_CELL_HEADER } else { INNER_CELL_HEADER };
        if offset < self.head.cell_start || offset + fixed > size {
            return Err(corrupt(self.pid, format!("slot {index} offset {offset} outside cell area")));
        }
        let key_len = usize::from(self.page.read_u16(offset));
        let (flags, value_len) = if self.is_leaf() {
            let flags = self.page.read_u8(offset + 2);
            if flags & !CELL_OVERFLOW != 0 {
                return Err(corrupt(self.pid, format!("slot {index} has unknown flags {flags:#x}")));
            }
            (flags, self.page.read_u32(offset + 3) as usize)
        } else {
            (0, 0)
        };
        let body = if flags & CELL_OVERFLOW != 0 { 8 } else { value_len };
        let cell_size = fixed + key_len + body;
        if offset + cell_size > size {
            return Err(corrupt(self.pid, format!("slot {index} cell of {cell_size} bytes overruns the page")));
        }
        Ok((Cell { offset, key_offset: offset + fixed, key_len, size: cell_size }, flags, value_len))
    }

    /// A copy of `len` bytes at `offset` (from a validated [`ValueRef`] or
    /// [`Cell`]).
    pub fn read_bytes(&self, offset: usize, len: usize) -> Vec<u8> {
        self.page.read_vec(offset, len)
    }

    /// A copy of the key of cell `index`.
    pub fn key(&self, index: usize) -> Result<Vec<u8>> {
        let cell = self.cell(index)?;
        Ok(self.page.read_vec(cell.key_offset, cell.key_len))
    }

    /// Compares the key of cell `index` with `key`: the slot's key prefix
    /// first, the cell's key bytes only on a tie. Bounds are checked against
    /// the slot's own length; [`check_node`] checks slot and cell agree.
    pub fn compare_key(&self, index: usize, key: &[u8]) -> Result<Ordering> {
        self.compare_key_prefixed(index, key, key_prefix(key))
    }

    /// `compare_key` with `key`'s slot prefix computed by the caller (once
    /// per search rather than once per probe).
    #[inline]
    fn compare_key_prefixed(&self, index: usize, key: &[u8], key_prefix: u32) -> Result<Ordering> {
        if index >= self.head.slot_count {
            return Err(corrupt(self.pid, format!("slot {index} of {}", self.head.slot_count)));
        }
        let slot = self.page.read_u64(SLOTS_START + index * self.slot_size()).to_le_bytes();
        let prefix = u32::from_be_bytes([slot[4], slot[5], slot[6], slot[7]]);
        match prefix.cmp(&key_prefix) {
            Ordering::Equal => {}
            unequal => return Ok(unequal),
        }
        let offset = usize::from(u16::from_le_bytes([slot[0], slot[1]]));
        let key_len = usize::from(u16::from_le_bytes([slot[2], slot[3]]));
        let fixed = if self.is_leaf() { LEAF_CELL_HEADER } else { INNER_CELL_HEADER };
        let key_offset = offset + fixed;
        if offset < self.head.cell_start || key_offset + key_len > self.page.size() {
            return Err(corrupt(self.pid, format!("slot {index} key {offset}+{key_len} outside cell area")));
        }
        Ok(self.page.compare(key_offset, key_len, key))
    }

    /// Where the value of leaf cell `index` is.
    pub fn value_ref(&self, index: usize) -> Result<ValueRef> {
        Ok(self.entry(index)?.1)
    }

    /// Cell `index` of a leaf and where its value is, decoded once.
    pub fn entry(&self, index: usize) -> Result<(Cell, ValueRef)> {
        let (cell, flags, len) = self.cell_parts(index)?;
        if !self.is_leaf() {
            return Err(corrupt(self.pid, "value of an inner cell"));
        }
        let at = cell.key_offset + cell.key_len;
        if flags & CELL_OVERFLOW != 0 {
            let first = PageId::from_link(self.page.read_u64(at))
                .ok_or_else(|| corrupt(self.pid, format!("slot {index} overflow link is null")))?;
            Ok((cell, ValueRef::Overflow { first, len }))
        } else {
            Ok((cell, ValueRef::Inline { offset: at, len }))
        }
    }

    /// The child of inner cell `index`, read from its slot (which
    /// [`check_node`] holds to the cell's copy).
    pub fn child(&self, index: usize) -> Result<PageId> {
        if self.is_leaf() {
            return Err(corrupt(self.pid, "child of a leaf cell"));
        }
        if index >= self.head.slot_count {
            return Err(corrupt(self.pid, format!("slot {index} of {}", self.head.slot_count)));
        }
        PageId::from_link(self.page.read_u64(SLOTS_START + index * INNER_SLOT_SIZE + SLOT_CHILD))
            .ok_or_else(|| corrupt(self.pid, format!("slot {index} child link is null")))
    }

    /// A copy of cell `index`'s bytes, as [`NodeMut::insert_raw`] takes them.
    pub fn raw_cell(&self, index: usize) -> Result<Vec<u8>> {
        let cell = self.cell(index)?;
        Ok(self.page.read_vec(cell.offset, cell.size))
    }

    /// Binary search among cells `from..len` for `key`: `Ok(i)` if cell `i`
    /// holds it, `Err(i)` for the index where it would be inserted.
    ///
    /// Two phases. First a branch-free binary search on the slots' key
    /// prefixes alone finds the first slot whose prefix is not below the
    /// key's (a conditional move per step instead of a branch the CPU
    /// mispredicts half the time on random keys; only slot words are read).
    /// Then the cells tie-break: keys with a smaller prefix are smaller and
    /// keys with a larger one larger (the prefix is the zero-padded first
    /// bytes, big-endian, so prefix order agrees with byte order where the
    /// prefixes differ). The first candidate is compared in full; only when
    /// the next slot shares the prefix too (keys with a common prefix) does
    /// a full binary search run over the rest.
    pub fn search_from(&self, from: usize, key: &[u8]) -> Result<std::result::Result<usize, usize>> {
        self.search_hinting(from, key, None::<fn(u64)>)
    }

    /// `search_from`, handing `probed` the child link of each inner slot
    /// the slot search reads, as soon as it is read (unchecked: any u64).
    #[inline(always)]
    fn search_hinting(
        &self,
        from: usize,
        key: &[u8],
        probed: Option<impl Fn(u64)>,
    ) -> Result<std::result::Result<usize, usize>> {
        let count = self.head.slot_count;
        if from >= count {
            return Ok(Err(from));
        }
        let prefix = key_prefix(key);
        let stride = self.slot_size();
        let (mut base, mut size) = (from, count - from);
        // The answer lies in base..=base + size throughout.
        while size > 1 {
            let half = size / 2;
            let mid = base + half;
            if let Some(probed) = &probed
                && stride == INNER_SLOT_SIZE
            {
                probed(self.page.read_u64(SLOTS_START + mid * stride + SLOT_CHILD));
            }
            // `select_unpredictable`: the compiler made a plain `if` a
            // branch here, mispredicted about every other step.
            base = std::hint::select_unpredictable(self.slot_prefix(mid, stride) < prefix, mid, base);
            size -= half;
        }
        let first = base + usize::from(self.slot_prefix(base, stride) < prefix);
        if first == count || self.slot_prefix(first, stride) != prefix {
            return Ok(Err(first));
        }
        match self.compare_key_prefixed(first, key, prefix)? {
            Ordering::Equal => return Ok(Ok(first)),
            Ordering::Greater => return Ok(Err(first)),
            Ordering::Less => {}
        }
        let next = first + 1;
        if next == count || self.slot_prefix(next, stride) != prefix {
            return Ok(Err(next));
        }
        self.search_by_cells(next, key)
    }

    /// The key prefix stored in slot `index` (below the slot count) of a
    /// node whose slots are `stride` bytes.
    #[inline]
    fn slot_prefix(&self, index: usize, stride: usize) -> u32 {
        // The prefix is bytes 4..8 of the little-endian slot word, stored
        // big-endian.
        ((self.page.read_u64(SLOTS_START + index * stride) >> 32) as u32).swap_bytes()
    }

    /// `search_from` by a plain binary search comparing cells (prefix
    /// first): the tie-break of keys sharing a prefix, and the reference
    /// the tests hold the two-phase search to.
    pub fn search_by_cells(&self, from: usize, key: &[u8]) -> Result<std::result::Result<usize, usize>> {
        let (mut low, mut high) = (from, self.head.slot_count);
        let prefix = key_prefix(key);
        while low < high {
            let mid = low + (high - low) / 2;
            match self.compare_key_prefixed(mid, key, prefix)? {
                Ordering::Less => low = mid + 1,
                Ordering::Greater => high = mid,
                Ordering::Equal => return Ok(Ok(mid)),
            }
        }
        Ok(Err(low))
    }

    /// Leaf search: the slot holding `key` or where it would go.
    pub fn search(&self, key: &[u8]) -> Result<std::result::Result<usize, usize>> {
        self.search_from(0, key)
    }

    /// `child_index`, and whether `key` lies past every bound of the node
    /// (only then can it be above the high key).
    pub fn child_position(&self, key: &[u8]) -> Result<(usize, bool)> {
        self.child_position_hinting(key, |_| {})
    }

    /// `child_position`, handing `probed` the child link of each slot the
    /// slot search reads (the child found is almost always one of them),
    /// so the caller can start fetching what it will read of that child
    /// before the search ends.
    #[inline(always)]
    pub fn child_position_hinting(&self, key: &[u8], probed: impl Fn(u64)) -> Result<(usize, bool)> {
        if self.head.slot_count == 0 {
            return Err(corrupt(self.pid, "inner node without children"));
        }
        let position = match self.search_hinting(1, key, Some(probed))? {
            Ok(i) | Err(i) => i,
        };
        Ok((position - 1, position == self.head.slot_count))
    }

    /// Inner search: the index of the child whose range holds `key`, i.e.
    /// the last cell whose lower bound is `< key` (cell 0 is minus infinity).
    pub fn child_index(&self, key: &[u8]) -> Result<usize> {
        if self.head.slot_count == 0 {
            return Err(corrupt(self.pid, "inner node without children"));
        }
        // Cells 1.. hold exclusive lower bounds: key k goes to the last cell
        // whose bound is < k, so an equal bound belongs to the child before.
        let index = match self.search_from(1, key)? {
            Ok(i) | Err(i) => i - 1,
        };
        Ok(index)
    }
}

#[inline(always)]
fn read_header<P: PageBuf + ?Sized>(page: &P, pid: PageId) -> Result<NodeHeader> {
    // Whole words, fields cut out of them: one bounds check and one load
    // per word instead of one per field (every step of a descent decodes
    // a header).
    const _: () = assert!(header::OFFSET_TYPE == 4 && header::OFFSET_LEVEL == 5 && header::OFFSET_FLAGS == 6);
    const _: () = assert!(OFFSET_SLOT_COUNT == 40 && OFFSET_CELL_START == 44 && OFFSET_FRAGMENTED == 48);
    let size = page.size();
    let word0 = page.read_u64(0);
    let kind = match PageType::from_u8((word0 >> 32) as u8) {
        Some(kind @ (PageType::Leaf | PageType::Inner)) => kind,
        other => {
            return Err(corrupt(pid, format!("expected a tree node, found {other:?}")));
        }
    };
    let level = (word0 >> 40) as u8;
    if (kind == PageType::Leaf) != (level == 0) {
        return Err(corrupt(pid, format!("{kind:?} at level {level}")));
    }
    let flags = (word0 >> 48) as u16;
    if flags & !FLAGS_KNOWN != 0 {
        return Err(corrupt(pid, format!("unknown node flags {flags:#x}")));
    }
    let counts = page.read_u64(OFFSET_SLOT_COUNT);
    let slot_count = usize::from(counts as u16);
    let cell_start = (counts >> 32) as usize;
    let fragmented = page.read_u32(OFFSET_FRAGMENTED) as usize;
    let slots_end = SLOTS_START + slot_count * slot_size(kind == PageType::Leaf);
    if slots_end > cell_start || cell_start > size {
        return Err(corrupt(pid, format!("{slot_count} slots and cell start {cell_start} do not fit")));
    }
    if fragmented > size - cell_start {
        return Err(corrupt(pid, format!("{fragmented} fragmented bytes exceed the cell area")));
    }
    Ok(NodeHeader {
        kind,
        level,
        flags,
        right: PageId::from_link(page.read_u64(OFFSET_RIGHT)),
        left: PageId::from_link(page.read_u64(OFFSET_LEFT)),
        slot_count,
        cell_start,
        fragmented,
    })
}

/// Checks everything [`Node`] can check locally: header, every cell and the
/// high key in bounds, cells disjoint, keys strictly ascending and `<=` the
/// high key. Used by `verify`, the decoder property tests and fuzzing.
pub fn check_node<P: PageBuf + ?Sized>(page: &P, pid: PageId) -> Result<NodeHeader> {
    let node = Node::new(page, pid)?;
    let mut spans = Vec::with_capacity(node.len() + 1);
    for index in 0..node.len() {
        let cell = node.cell(index)?;
        spans.push((cell.offset, cell.offset + cell.size));
        let stride = node.slot_size();
        let slot = page.read_vec(SLOTS_START + index * stride, stride);
        let key = page.read_vec(cell.key_offset, cell.key_len);
        let child = if node.is_leaf() {
            node.value_ref(index)?;
            None
        } else {
            let child = raw_cell_child(&page.read_vec(cell.offset, cell.size))
                .ok_or_else(|| corrupt(pid, format!("slot {index} child link is null")))?;
            Some(child)
        };
        if slot != slot_bytes(cell.offset, &key, child)[..stride] {
            return Err(corrupt(pid, format!("slot {index} disagrees with its cell")));
        }
    }
    if let Some((offset, len)) = node.high_key_range()? {
        spans.push((offset, offset + len));
    }
    spans.sort_unstable();
    let used: usize = spans.iter().map(|(start, end)| end - start).sum();
    if spans.windows(2).any(|pair| pair[0].1 > pair[1].0) {
        return Err(corrupt(pid, "cells overlap"));
    }
    if used + node.head.fragmented != page.size() - node.head.cell_start {
        return Err(corrupt(pid, "cell area accounting does not add up"));
    }
    let first_compared = usize::from(!node.is_leaf());
    let mut previous: Option<Vec<u8>> = None;
    for index in first_compared..node.len() {
        let key = node.key(index)?;
        if previous.as_ref().is_some_and(|prev| prev.as_slice() >= key.as_slice()) {
            return Err(corrupt(pid, format!("keys out of order at slot {index}")));
        }
        previous = Some(key);
    }
    if let (Some(last), Some(high)) = (previous, node.high_key()?)
        && last > high
    {
        return Err(corrupt(pid, "a key is above the high key"));
    }
    Ok(node.head)
}

/// Write access to a node. Holders own the page's exclusive latch.
pub struct NodeMut<'p, P: PageBufMut + ?Sized> {
    page: &'p mut P,
    pid: PageId,
}

/// A cell to be written: its key and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CellData<'a> {
    /// Leaf cell with an inline value.
    Leaf {
        /// Key bytes.
        key: &'a [u8],
        /// Value bytes.
        value: &'a [u8],
    },
    /// Leaf cell whose value is in overflow pages.
    LeafOverflow {
        /// Key bytes.
        key: &'a [u8],
        /// First overflow page.
        first: PageId,
        /// Whole value length.
        len: u32,
    },
    /// Inner cell.
    Inner {
        /// Lower bound key (ignored for cell 0).
        key: &'a [u8],
        /// Child page.
        child: PageId,
    },
}

/// The key of a raw cell from [`Node::raw_cell`] or [`CellData::encode`].
/// The bytes come from a validated cell, so they hold a whole key.
pub fn raw_cell_key(raw: &[u8], leaf: bool) -> &[u8] {
    let fixed = if leaf { LEAF_CELL_HEADER } else { INNER_CELL_HEADER };
    let key_len = raw.get(..2).map_or(0, |b| usize::from(u16::from_le_bytes([b[0], b[1]])));
    raw.get(fixed..fixed + key_len).unwrap_or(&[])
}

/// The child of a raw inner cell.
pub fn raw_cell_child(raw: &[u8]) -> Option<PageId> {
    let bytes: [u8; 8] = raw.get(2..10)?.try_into().ok()?;
    PageId::from_link(u64::from_le_bytes(bytes))
}

/// What a slot copies from a raw cell: its key and, in an inner node, its
/// child.
fn raw_key_and_child(raw: &[u8], leaf: bool) -> (&[u8], Option<PageId>) {
    (raw_cell_key(raw, leaf), if leaf { None } else { raw_cell_child(raw) })
}

impl CellData<'_> {
    /// The cell's bytes as they sit in a page.
    pub fn encode(&self) -> Vec<u8> {
        let mut raw = vec![0u8; self.size()];
        encode_into(raw.as_mut_slice(), 0, self);
        raw
    }

    /// Appends the cell's bytes to `out` (no allocation when `out` has
    /// room): what a mini-transaction logs.
    pub fn encode_to(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + self.size(), 0);
        encode_into(&mut out[start..], 0, self);
    }

    /// Bytes the cell occupies (without its slot).
    pub fn size(&self) -> usize {
        match self {
            CellData::Leaf { key, value } => leaf_cell_size(key.len(), value.len(), false),
            CellData::LeafOverflow { key, .. } => leaf_cell_size(key.len(), 0, true),
            CellData::Inner { key, .. } => inner_cell_size(key.len()),
        }
    }

    /// The child of an inner cell (`None` for a leaf cell).
    pub fn child(&self) -> Option<PageId> {
        match self {
            CellData::Inner { child, .. } => Some(*child),
            CellData::Leaf { .. } | CellData::LeafOverflow { .. } => None,
        }
    }

    /// The cell's key.
    pub fn key(&self) -> &[u8] {
        match self {
            CellData::Leaf { key, .. } | CellData::LeafOverflow { key, .. } | CellData::Inner { key, .. } => key,
        }
    }
}

impl<'p, P: PageBufMut + ?Sized> NodeMut<'p, P> {
    /// Formats `page` as an empty node of `kind` at `level`, high key
    /// +infinity, no links.
    pub fn init(page: &'p mut P, pid: PageId, kind: PageType, level: u8) -> Self {
        header::init(page, pid, kind, level);
        page.write_u64(OFFSET_RIGHT, 0);
        page.write_u64(OFFSET_LEFT, 0);
        page.write_u16(OFFSET_SLOT_COUNT, 0);
        page.write_u16(OFFSET_SLOT_COUNT + 2, 0);
        let size = page.size() as u32;
        page.write_u32(OFFSET_CELL_START, size);
        page.write_u32(OFFSET_FRAGMENTED, 0);
        page.write_u16(OFFSET_HIGH_OFF, 0);
        page.write_u16(OFFSET_HIGH_LEN, 0);
        page.write_u64(56, 0);
        NodeMut { page, pid }
    }

    /// Opens an existing node for writing, validating its header.
    pub fn new(page: &'p mut P, pid: PageId) -> Result<Self> {
        read_header(page, pid)?;
        Ok(NodeMut { page, pid })
    }

    /// Read view of the node.
    pub fn as_node(&self) -> Result<Node<&P>> {
        Node::new(&*self.page, self.pid)
    }

    fn head(&self) -> Result<NodeHeader> {
        read_header(&*self.page, self.pid)
    }

    /// Sets the node flags.
    pub fn set_flags(&mut self, flags: u16) {
        self.page.write_u16(header::OFFSET_FLAGS, flags);
    }

    /// Sets the right link.
    pub fn set_right(&mut self, right: Option<PageId>) {
        self.page.write_u64(OFFSET_RIGHT, PageId::to_link(right));
    }

    /// Sets the left link.
    pub fn set_left(&mut self, left: Option<PageId>) {
        self.page.write_u64(OFFSET_LEFT, PageId::to_link(left));
    }

    /// Reserves `size` bytes of cell area, compacting if needed. The caller
    /// checked `free_space` covers `size` plus any slot it adds.
    fn reserve(&mut self, size: usize, extra_slots: usize) -> Result<usize> {
        let mut head = self.head()?;
        let slots_end = SLOTS_START + (head.slot_count + extra_slots) * slot_size(head.kind == PageType::Leaf);
        if head.cell_start < slots_end + size {
            self.compact()?;
            head = self.head()?;
            if head.cell_start < slots_end + size {
                return Err(corrupt(self.pid, "node overfull: caller did not check free space"));
            }
        }
        let offset = head.cell_start - size;
        self.page.write_u32(OFFSET_CELL_START, offset as u32);
        Ok(offset)
    }

    fn write_cell(&mut self, offset: usize, cell: &CellData<'_>) {
        encode_into(&mut *self.page, offset, cell);
    }

    /// Inserts a raw cell (from [`Node::raw_cell`] or [`CellData::encode`])
    /// as slot `index`. Callers check [`NodeMut::fits`].
    pub fn insert_raw(&mut self, index: usize, raw: &[u8]) -> Result<()> {
        let head = self.head()?;
        if index > head.slot_count || head.slot_count >= usize::from(u16::MAX) {
            return Err(corrupt(self.pid, format!("insert at {index} of {}", head.slot_count)));
        }
        let offset = self.reserve(raw.len(), 1)?;
        self.page.write(offset, raw);
        let (key, child) = raw_key_and_child(raw, head.kind == PageType::Leaf);
        self.write_slot(index, head, offset, key, child);
        Ok(())
    }
}

fn encode_into<P: PageBufMut + ?Sized>(page: &mut P, offset: usize, cell: &CellData<'_>) {
    {
        match cell {
            CellData::Leaf { key, value } => {
                page.write_u16(offset, key.len() as u16);
                page.write_u8(offset + 2, 0);
                page.write_u32(offset + 3, value.len() as u32);
                page.write(offset + LEAF_CELL_HEADER, key);
                page.write(offset + LEAF_CELL_HEADER + key.len(), value);
            }
            CellData::LeafOverflow { key, first, len } => {
                page.write_u16(offset, key.len() as u16);
                page.write_u8(offset + 2, CELL_OVERFLOW);
                page.write_u32(offset + 3, *len);
                page.write(offset + LEAF_CELL_HEADER, key);
                page.write_u64(offset + LEAF_CELL_HEADER + key.len(), first.0);
            }
            CellData::Inner { key, child } => {
                page.write_u16(offset, key.len() as u16);
                page.write_u64(offset + 2, child.0);
                page.write(offset + INNER_CELL_HEADER, key);
            }
        }
    }
}

impl<'p, P: PageBufMut + ?Sized> NodeMut<'p, P> {
    /// Whether a new cell of `size` bytes plus its slot fits.
    pub fn fits(&self, size: usize) -> Result<bool> {
        let node = self.as_node()?;
        Ok(node.free_space() >= size + node.slot_size())
    }

    /// Inserts `cell` as slot `index`, shifting later slots right. Fails with
    /// corruption if it does not fit (callers check [`NodeMut::fits`]).
    pub fn insert(&mut self, index: usize, cell: &CellData<'_>) -> Result<()> {
        let head = self.head()?;
        if index > head.slot_count || head.slot_count >= usize::from(u16::MAX) {
            return Err(corrupt(self.pid, format!("insert at {index} of {}", head.slot_count)));
        }
        let offset = self.reserve(cell.size(), 1)?;
        self.write_cell(offset, cell);
        self.write_slot(index, head, offset, cell.key(), cell.child());
        Ok(())
    }

    /// Opens slot `index` among the node's slots (shifting later slots
    /// right) and fills it for the cell at `offset` holding `key` (and, in
    /// an inner node, `child`).
    fn write_slot(&mut self, index: usize, head: NodeHeader, offset: usize, key: &[u8], child: Option<PageId>) {
        let stride = slot_size(head.kind == PageType::Leaf);
        let count = head.slot_count;
        let slot = SLOTS_START + index * stride;
        self.page.copy_within(slot, slot + stride, (count - index) * stride);
        self.refresh_slot(index, head, offset, key, child);
        self.page.write_u16(OFFSET_SLOT_COUNT, (count + 1) as u16);
    }

    /// Writes slot `index` for the cell at `offset` holding `key` (and
    /// `child`): for a new slot, or after the cell was overwritten in place.
    fn refresh_slot(&mut self, index: usize, head: NodeHeader, offset: usize, key: &[u8], child: Option<PageId>) {
        let stride = slot_size(head.kind == PageType::Leaf);
        self.page.write(SLOTS_START + index * stride, &slot_bytes(offset, key, child)[..stride]);
    }

    /// Removes slot `index`; its bytes become fragmented space.
    pub fn remove(&mut self, index: usize) -> Result<()> {
        let cell = self.as_node()?.cell(index)?;
        let head = self.head()?;
        let stride = slot_size(head.kind == PageType::Leaf);
        let slot = SLOTS_START + index * stride;
        self.page.copy_within(slot + stride, slot, (head.slot_count - index - 1) * stride);
        self.page.write_u16(OFFSET_SLOT_COUNT, (head.slot_count - 1) as u16);
        self.add_fragmented(head, cell.offset, cell.size);
        Ok(())
    }

    fn add_fragmented(&mut self, head: NodeHeader, offset: usize, size: usize) {
        if offset == head.cell_start {
            // The lowest cell: give its bytes straight back.
            self.page.write_u32(OFFSET_CELL_START, (offset + size) as u32);
        } else {
            self.page.write_u32(OFFSET_FRAGMENTED, (head.fragmented + size) as u32);
        }
    }

    /// Replaces cell `index` with `cell` (its key must keep the key order;
    /// the slot is rewritten for it). Fails with corruption if the new cell
    /// cannot fit even after compaction.
    pub fn replace(&mut self, index: usize, cell: &CellData<'_>) -> Result<()> {
        let node = self.as_node()?;
        let old = node.cell(index)?;
        if node.free_space() + old.size < cell.size() {
            return Err(corrupt(self.pid, "replacement cell does not fit: caller did not check"));
        }
        if cell.size() == old.size {
            let head = *node.header();
            self.write_cell(old.offset, cell);
            self.refresh_slot(index, head, old.offset, cell.key(), cell.child());
            return Ok(());
        }
        self.remove(index)?;
        self.insert(index, cell)
    }

    /// Replaces cell `index` with a raw cell (from [`CellData::encode`]),
    /// byte for byte as [`NodeMut::replace`] would with the decoded cell:
    /// redo of a logged upsert uses it.
    pub fn replace_raw(&mut self, index: usize, raw: &[u8]) -> Result<()> {
        let node = self.as_node()?;
        let old = node.cell(index)?;
        if node.free_space() + old.size < raw.len() {
            return Err(corrupt(self.pid, "replacement cell does not fit"));
        }
        if raw.len() == old.size {
            let head = *node.header();
            self.page.write(old.offset, raw);
            let (key, child) = raw_key_and_child(raw, head.kind == PageType::Leaf);
            self.refresh_slot(index, head, old.offset, key, child);
            return Ok(());
        }
        self.remove(index)?;
        self.insert_raw(index, raw)
    }

    /// Sets the high key (`None`: +infinity). Its old bytes become
    /// fragmented; callers check room with [`NodeMut::fits`].
    pub fn set_high_key(&mut self, key: Option<&[u8]>) -> Result<()> {
        let head = self.head()?;
        if let Some((offset, len)) = self.as_node()?.high_key_range()? {
            self.add_fragmented(head, offset, len);
        }
        let mut flags = head.flags & !FLAG_HIGH_KEY;
        if let Some(key) = key {
            let offset = self.reserve(key.len(), 0)?;
            self.page.write(offset, key);
            self.page.write_u16(OFFSET_HIGH_OFF, offset as u16);
            self.page.write_u16(OFFSET_HIGH_LEN, key.len() as u16);
            flags |= FLAG_HIGH_KEY;
        }
        self.set_flags(flags);
        Ok(())
    }

    /// Rewrites the cell area without holes.
    pub fn compact(&mut self) -> Result<()> {
        let size = self.page.size();
        let mut image = vec![0u8; size];
        self.page.read_into(0, &mut image);
        let node = Node::new(image.as_slice(), self.pid)?;
        let high = node.high_key_range()?;
        let cells: Vec<Cell> = (0..node.len()).map(|i| node.cell(i)).collect::<Result<_>>()?;
        let stride = node.slot_size();
        // Each cell was checked to lie inside the page, but slots of a
        // damaged node may share or overlap cells: check that they fit side
        // by side before anything is written.
        let slots_end = SLOTS_START + node.len() * stride;
        let sizes = cells.iter().map(|cell| cell.size).chain(high.map(|(_, len)| len));
        let used = sizes.into_iter().try_fold(slots_end, usize::checked_add);
        if used.is_none_or(|used| used > size) {
            return Err(corrupt(self.pid, "cells overlap: together they do not fit in the page"));
        }
        let mut end = size;
        for (index, cell) in cells.iter().enumerate() {
            end -= cell.size;
            self.page.write(end, &image[cell.offset..cell.offset + cell.size]);
            self.page.write_u16(SLOTS_START + index * stride, end as u16);
        }
        if let Some((offset, len)) = high {
            end -= len;
            self.page.write(end, &image[offset..offset + len]);
            self.page.write_u16(OFFSET_HIGH_OFF, end as u16);
        }
        self.page.write_u32(OFFSET_CELL_START, end as u32);
        self.page.write_u32(OFFSET_FRAGMENTED, 0);
        Ok(())
    }
}

const _: () = assert!(SLOTS_START >= PAGE_HEADER_SIZE + 40);
// The largest cell (a maximal key with an overflow reference in a leaf, or
// an inner cell) plus its slot fits in a quarter of a node's usable space,
// so a split always leaves room for the cell that caused it.
const fn largest_cell_fits(page_size: usize) -> bool {
    let key = crate::limits::key_size_max(page_size);
    let quarter = (page_size - SLOTS_START) / 4;
    leaf_cell_size(key, 0, true) + SLOT_SIZE <= quarter && inner_cell_size(key) + INNER_SLOT_SIZE <= quarter
}
const _: () = assert!(largest_cell_fits(crate::limits::PAGE_SIZE_MIN));
const _: () = assert!(largest_cell_fits(crate::limits::PAGE_SIZE_DEFAULT));
const _: () = assert!(largest_cell_fits(crate::limits::PAGE_SIZE_MAX));

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PID: PageId = PageId(7);

    fn leaf(size: usize, keys: &[&[u8]]) -> Vec<u8> {
        let mut page = vec![0u8; size];
        let mut node = NodeMut::init(page.as_mut_slice(), PID, PageType::Leaf, 0);
        for (i, key) in keys.iter().enumerate() {
            node.insert(i, &CellData::Leaf { key, value: b"value" }).unwrap();
        }
        page
    }

    #[test]
    fn insert_search_remove_compact() {
        let mut page = leaf(512, &[b"b", b"d", b"f"]);
        {
            let mut node = NodeMut::new(page.as_mut_slice(), PID).unwrap();
            let at = node.as_node().unwrap().search(b"c").unwrap();
            assert_eq!(at, Err(1));
            node.insert(1, &CellData::Leaf { key: b"c", value: b"xyz" }).unwrap();
            node.remove(0).unwrap();
            node.set_high_key(Some(b"g")).unwrap();
            node.replace(0, &CellData::Leaf { key: b"c", value: b"longer value" }).unwrap();
        }
        check_node(page.as_slice(), PID).unwrap();
        let node = Node::new(page.as_slice(), PID).unwrap();
        let keys: Vec<Vec<u8>> = (0..node.len()).map(|i| node.key(i).unwrap()).collect();
        assert_eq!(keys, vec![b"c".to_vec(), b"d".to_vec(), b"f".to_vec()]);
        assert_eq!(node.search(b"d").unwrap(), Ok(1));
        assert!(node.is_above_high_key(b"h").unwrap());
        assert!(!node.is_above_high_key(b"g").unwrap());
        let ValueRef::Inline { offset, len } = node.value_ref(0).unwrap() else { panic!("inline expected") };
        assert_eq!(page.as_slice().read_vec(offset, len), b"longer value");
        let before = node.free_space();
        let mut copy = page.clone();
        NodeMut::new(copy.as_mut_slice(), PID).unwrap().compact().unwrap();
        let compacted = Node::new(copy.as_slice(), PID).unwrap();
        assert_eq!(compacted.free_space(), before);
        assert_eq!(compacted.contiguous_free(), before);
        check_node(copy.as_slice(), PID).unwrap();
    }

    #[test]
    fn fill_until_full_then_everything_still_checks() {
        let mut page = vec![0u8; 512];
        let mut node = NodeMut::init(page.as_mut_slice(), PID, PageType::Leaf, 0);
        let mut count = 0u32;
        loop {
            let key = count.to_be_bytes();
            let cell = CellData::Leaf { key: &key, value: b"0123456789" };
            if !node.fits(cell.size()).unwrap() {
                break;
            }
            node.insert(count as usize, &cell).unwrap();
            count += 1;
        }
        assert!(count > 10);
        check_node(page.as_slice(), PID).unwrap();
    }

    #[test]
    fn inner_child_index_uses_exclusive_lower_bounds() {
        let mut page = vec![0u8; 512];
        let mut node = NodeMut::init(page.as_mut_slice(), PID, PageType::Inner, 1);
        node.insert(0, &CellData::Inner { key: b"", child: PageId(10) }).unwrap();
        node.insert(1, &CellData::Inner { key: b"m", child: PageId(11) }).unwrap();
        node.insert(2, &CellData::Inner { key: b"t", child: PageId(12) }).unwrap();
        let node = Node::new(page.as_slice(), PID).unwrap();
        let child = |key: &[u8]| node.child(node.child_index(key).unwrap()).unwrap();
        assert_eq!(child(b""), PageId(10));
        assert_eq!(child(b"m"), PageId(10), "a key equal to a bound belongs left");
        assert_eq!(child(b"ma"), PageId(11));
        assert_eq!(child(b"t"), PageId(11));
        assert_eq!(child(b"z"), PageId(12));
        check_node(page.as_slice(), PID).unwrap();
    }

    /// The hinting search finds what the plain one does, and names the
    /// child it finds among the links it hands out on almost every search
    /// (the descent prefetches their state words: `btree/descend.rs`).
    #[test]
    fn child_position_hinting_names_the_child_found() {
        let mut page = vec![0u8; 4096];
        let mut node = NodeMut::init(page.as_mut_slice(), PID, PageType::Inner, 1);
        let bound = |i: u64| {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
            key[8..].copy_from_slice(&i.to_be_bytes());
            key
        };
        let mut bounds: Vec<[u8; 16]> = (1..=90).map(bound).collect();
        bounds.sort_unstable();
        node.insert(0, &CellData::Inner { key: b"", child: PageId(1000) }).unwrap();
        for (i, key) in bounds.iter().enumerate() {
            node.insert(i + 1, &CellData::Inner { key, child: PageId(1001 + i as u64) }).unwrap();
        }
        let node = Node::new(page.as_slice(), PID).unwrap();
        let (mut searches, mut named) = (0, 0);
        for i in 0..2000u64 {
            // Keys between the bounds, and the bounds themselves.
            let key = if i % 4 == 0 { bounds[(i / 4) as usize % bounds.len()] } else { bound(i * 7 + 1000) };
            let probed = std::cell::RefCell::new(Vec::new());
            let hinted = node.child_position_hinting(&key, |link| probed.borrow_mut().push(link)).unwrap();
            assert_eq!(hinted, node.child_position(&key).unwrap(), "key {i}");
            searches += 1;
            named += usize::from(probed.borrow().contains(&node.child(hinted.0).unwrap().0));
        }
        assert!(named * 100 >= searches * 90, "the child found was named on {named} of {searches} searches");
    }

    /// The child copy in an inner slot follows every way a cell changes
    /// (insert, raw insert, in-place and resizing replace, remove,
    /// compaction), and `check_node` catches a slot whose copy disagrees.
    #[test]
    fn inner_slots_carry_their_cells_child() {
        let mut page = vec![0u8; 512];
        let mut node = NodeMut::init(page.as_mut_slice(), PID, PageType::Inner, 1);
        node.insert(0, &CellData::Inner { key: b"", child: PageId(10) }).unwrap();
        node.insert(1, &CellData::Inner { key: b"m", child: PageId(11) }).unwrap();
        let raw = CellData::Inner { key: b"f", child: PageId(12) }.encode();
        node.insert_raw(1, &raw).unwrap();
        // Same size: the cell is overwritten in place.
        node.replace(2, &CellData::Inner { key: b"n", child: PageId(13) }).unwrap();
        // Another size: removed and inserted again.
        node.replace_raw(1, &CellData::Inner { key: b"ff", child: PageId(14) }.encode()).unwrap();
        node.remove(0).unwrap();
        node.compact().unwrap();
        let children = |page: &[u8]| {
            let node = Node::new(page, PID).unwrap();
            (0..node.len()).map(|index| node.child(index).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(children(&page), [PageId(14), PageId(13)]);
        check_node(page.as_slice(), PID).unwrap();
        // The slot's copy of child 1 no longer matches its cell.
        page[SLOTS_START + INNER_SLOT_SIZE + SLOT_CHILD] ^= 1;
        assert_eq!(children(&page), [PageId(14), PageId(12)]);
        let error = check_node(page.as_slice(), PID).unwrap_err();
        assert!(error.to_string().contains("slot 1 disagrees with its cell"), "{error}");
        // A null child in a slot is corruption, not a page id 0.
        page[SLOTS_START + INNER_SLOT_SIZE + SLOT_CHILD..][..8].fill(0);
        assert!(matches!(Node::new(page.as_slice(), PID).unwrap().child(1), Err(Error::Corruption { .. })));
    }

    #[test]
    fn corruption_is_reported_not_panicked() {
        let mut page = leaf(512, &[b"a", b"b"]);
        page[OFFSET_SLOT_COUNT] = 200;
        assert!(matches!(check_node(page.as_slice(), PID), Err(Error::Corruption { page: PID, .. })));
        let mut page = leaf(512, &[b"a", b"b"]);
        page[SLOTS_START] = 0xff;
        page[SLOTS_START + 1] = 0x01;
        assert!(check_node(page.as_slice(), PID).is_err());
        let mut page = leaf(512, &[b"b", b"a"]);
        assert!(check_node(page.as_slice(), PID).is_err(), "unordered keys must fail");
        page[header::OFFSET_TYPE] = PageType::Overflow as u8;
        assert!(Node::new(page.as_slice(), PID).is_err());
    }

    fn valid_page(keys: usize) -> Vec<u8> {
        let names: Vec<Vec<u8>> = (0..keys).map(|i| format!("key{i:03}").into_bytes()).collect();
        let refs: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        let mut page = leaf(512, &refs);
        NodeMut::new(page.as_mut_slice(), PID).unwrap().set_high_key(Some(b"zz")).unwrap();
        page
    }

    /// Walks every accessor on arbitrary bytes: only `Ok` or a corruption
    /// error naming the page may come out.
    fn decode_everything(page: &[u8]) {
        match check_node(page, PID) {
            Ok(_) | Err(Error::Corruption { page: PID, .. }) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
        if let Ok(node) = Node::new(page, PID) {
            for i in 0..node.len() + 2 {
                let _ = node.key(i);
                let _ = node.value_ref(i);
                let _ = node.child(i);
            }
            let _ = node.search(b"key005");
            let _ = node.search(b"k");
            let _ = node.search_from(1, b"key00");
            let _ = node.child_index(b"key005");
            let _ = node.high_key();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn random_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 512)) {
            // Make the type byte plausible half of the time so decoding goes deep.
            if bytes[0] & 1 == 0 {
                bytes[header::OFFSET_TYPE] = PageType::Leaf as u8 + (bytes[1] & 1);
                bytes[header::OFFSET_LEVEL] = bytes[1] & 1;
            }
            decode_everything(&bytes);
        }

        #[test]
        fn the_two_phase_search_agrees_with_the_cell_search(
            keys in proptest::collection::btree_set(proptest::collection::vec(0u8..4, 0..7), 1..120),
            probes in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..7), 1..40),
        ) {
            // Keys over a four-letter alphabet, up to 6 bytes: many share
            // their 4-byte prefix, many are shorter than it.
            let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let page = leaf(8192, &keys);
            let node = Node::new(page.as_slice(), PID).unwrap();
            for probe in keys.iter().copied().chain(probes.iter().map(Vec::as_slice)) {
                for from in [0, 1] {
                    prop_assert_eq!(node.search_from(from, probe).unwrap(), node.search_by_cells(from, probe).unwrap());
                }
                prop_assert_eq!(node.search(probe).unwrap(), keys.binary_search(&probe));
            }
        }

        #[test]
        fn mutated_pages_never_panic(keys in 0usize..13, flips in proptest::collection::vec((0usize..512, any::<u8>()), 1..8)) {
            let mut page = valid_page(keys);
            for (at, value) in flips {
                page[at] = value;
            }
            decode_everything(&page);
        }
    }
}
