//! Values: inline in the leaf cell up to a quarter page, otherwise in a
//! chain of overflow pages that the cell points to.
//!
//! An overflow chain is written completely before its cell is published
//! (so readers never see a partial chain) and is never modified afterwards:
//! an update writes a new chain and retires the old one through the epoch
//! scheme, so a reader that found the old cell can finish reading it.

use super::descend::ReadGuard;
use super::{Attempt, BTree, Step};
use crate::ids::PageId;
use crate::limits::VALUE_SIZE_MAX;
use crate::page::node::{CellData, ValueRef, leaf_cell_size};
use crate::page::{PageBuf, overflow};
use crate::{Error, Result};

/// A value ready to be stored under a key.
pub(crate) enum StoredValue<'v> {
    /// Fits in the leaf cell.
    Inline(&'v [u8]),
    /// Already written to overflow pages (not yet reachable).
    Overflow {
        /// First page of the chain.
        first: PageId,
        /// Whole length.
        len: u32,
        /// Every page of the chain, first to last.
        pages: Vec<PageId>,
    },
}

impl<'v> StoredValue<'v> {
    /// Writes the value to overflow pages if it does not fit inline.
    pub(crate) fn prepare(tree: &BTree, key: &[u8], value: &'v [u8]) -> Result<StoredValue<'v>> {
        if leaf_cell_size(key.len(), value.len(), false) <= tree.cell_size_max {
            return Ok(StoredValue::Inline(value));
        }
        let capacity = overflow::capacity(tree.pool.page_size());
        let chunks: Vec<&[u8]> = value.chunks(capacity).collect();
        let mut pages = Vec::with_capacity(chunks.len());
        // Back to front, so each page knows its successor when written.
        let mut next = None;
        for chunk in chunks.iter().rev() {
            let mut guard = match tree.pool.allocate() {
                Ok(guard) => guard,
                Err(error) => {
                    free_now(tree, &pages);
                    return Err(error);
                }
            };
            let pid = guard.pid();
            overflow::write(&mut guard.page_mut(), pid, chunk, next);
            pages.push(pid);
            next = Some(pid);
        }
        pages.reverse();
        Ok(StoredValue::Overflow { first: pages[0], len: value.len() as u32, pages })
    }

    /// The leaf cell for `key` with this value.
    pub(crate) fn cell<'a>(&'a self, key: &'a [u8]) -> CellData<'a> {
        match self {
            StoredValue::Inline(value) => CellData::Leaf { key, value },
            StoredValue::Overflow { first, len, .. } => CellData::LeafOverflow { key, first: *first, len: *len },
        }
    }

    /// Frees the chain of a value that was never published.
    pub(crate) fn discard(&self, tree: &BTree) {
        if let StoredValue::Overflow { pages, .. } = self {
            free_now(tree, pages);
        }
    }
}

/// Frees pages no other thread has seen.
fn free_now(tree: &BTree, pages: &[PageId]) {
    for &pid in pages {
        tree.pool.free_unread(pid);
    }
}

impl BTree {
    /// Reads the value `value` of a cell in the leaf behind `leaf`, and the
    /// overflow pages it occupies. Validates `leaf` before trusting the
    /// length and after reading the chain.
    pub(crate) fn read_value(&self, leaf: &ReadGuard<'_>, value: ValueRef) -> Attempt<(Vec<u8>, Vec<PageId>)> {
        match value {
            ValueRef::Inline { offset, len } => {
                let bytes = leaf.page().read_vec(offset, len);
                Ok((bytes, Vec::new()))
            }
            ValueRef::Overflow { first, len } => {
                leaf.validate()?;
                // An unpinned reader may find the chain already retired and
                // reused: any failure counts only if the leaf still holds
                // the cell that names the chain.
                match self.read_chain(first, len) {
                    Ok(read) => {
                        leaf.validate()?;
                        Ok(read)
                    }
                    Err(Step::Restart) => Err(Step::Restart),
                    Err(Step::Fail(error)) => {
                        leaf.validate()?;
                        Err(Step::Fail(error))
                    }
                }
            }
        }
    }

    /// Reads a published overflow chain (immutable while reachable; a
    /// failed validation means eviction raced the read: restart).
    pub(crate) fn read_chain(&self, first: PageId, len: usize) -> Attempt<(Vec<u8>, Vec<PageId>)> {
        if len > VALUE_SIZE_MAX {
            return Err(Error::corruption(first, format!("value length {len} above the limit")).into());
        }
        let page_count_max = overflow::pages_needed(self.pool.page_size(), len);
        let mut bytes = Vec::with_capacity(len);
        let mut pages = Vec::with_capacity(page_count_max);
        let mut next = Some(first);
        while let Some(pid) = next {
            if pages.len() >= page_count_max {
                return Err(Error::corruption(pid, "overflow chain longer than its value").into());
            }
            let guard = ReadGuard::Optimistic(self.pool.optimistic(pid)?);
            let page = guard.page();
            let header = guard.check(overflow::read(&page, pid))?;
            let piece = page.read_vec(overflow::DATA_START, header.len);
            guard.validate()?;
            if bytes.len() + piece.len() > len {
                return Err(Error::corruption(pid, "overflow chain holds more than its value").into());
            }
            bytes.extend_from_slice(&piece);
            pages.push(pid);
            next = header.next;
        }
        if bytes.len() != len {
            let reason = format!("overflow chain holds {} of {len} bytes", bytes.len());
            return Err(Error::corruption(first, reason).into());
        }
        Ok((bytes, pages))
    }
}
