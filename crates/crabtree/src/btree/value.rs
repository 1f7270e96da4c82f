//! Values: inline in the leaf cell up to a quarter page, otherwise in a
//! chain of overflow pages that the cell points to.
//!
//! An overflow chain is written completely before its cell is published
//! (so readers never see a partial chain) and is never modified afterwards:
//! an update writes a new chain and retires the old one through the epoch
//! scheme, so a reader that found the old cell can finish reading it.
//!
//! # Reading a chain
//! A chain may be far larger than the buffer pool (a 64 MiB value in a
//! 64-frame pool), so it cannot be read the way a node is, optimistically
//! with a restart whenever a page was evicted meanwhile: every attempt
//! evicts its own first pages before it reaches the last, and the read
//! never finishes (issue 6, defect 3). Instead each chain page is read
//! under its own shared latch while it is copied (so it can be neither
//! evicted nor torn meanwhile; pages already copied may be evicted, so a
//! chain needs one frame at a time), and the chain's ownership is pinned
//! by one of:
//! * **the epoch, on the read path** (`get` and scans): the reader pins,
//!   then validates the leaf it found the cell in (optimistic) or still
//!   holds it shared, so the cell was current at a moment after the pin;
//!   the chain can be retired only after that moment, so none of its pages
//!   is freed or reused before the pin drops. The reader then leaves the
//!   leaf (releases its latch; for scans, after the whole batch) and reads
//!   the chain holding no latch but the chain page's own;
//! * **the leaf's exclusive latch, on the write path**: the writer that
//!   replaces or removes a value already holds the leaf to return the old
//!   value; only a holder of the leaf's exclusive latch can change the cell
//!   and so retire the chain, and a leaf holding a cell is never deleted.
//!
//! Either way the read has no restarts and is bounded by the value's page
//! count; any error is real (an I/O error, or corruption of the page it
//! names). The value returned is the one the cell named when the leaf was
//! validated (read path) or latched (write path).
//!
//! Latch order: overflow pages are latched only by a reader holding no
//! other latch, by a writer holding the owning leaf (or, before
//! publication, by their writer holding nothing else), and a holder of an
//! overflow page's latch waits for no other latch; so these waits add no
//! edge that could close a cycle with the tree's rightward and upward
//! order.
//!
//! **Deviations from "never hold a latch, or stay inside a reclamation
//! epoch, across I/O"** (`DESIGN.md`), where a chain exceeds the pool some
//! protection must span its loads; each choice is the lesser cost:
//! * a reader stays pinned while it loads the chain. Holding the leaf's
//!   shared latch instead was tried and measured: readers of large values
//!   keep the leaf shared back to back, and a writer of that leaf (which
//!   needs it exclusively) starved; the quick tier of `tests/huge_values.rs`
//!   took 114 s instead of under 1 s. Validating the leaf's version per
//!   page instead fails as soon as the chain read evicts the (unlatched)
//!   leaf, so it degrades to the restarts of the defect. A pin only delays
//!   the reuse of pages retired meanwhile (and `flush`, which waits for
//!   them); the shared-latch fallback already stays pinned across its loads;
//! * a writer holds the leaf exclusively while it loads the old chain, as
//!   before (it must return the old value). Readers and writers of that
//!   leaf wait meanwhile. Reading the old value pinned before latching and
//!   checking under the latch that the cell still names the same first
//!   page (the pin rules out reuse of that id) would remove the wait; not
//!   done yet.
//!
//! Lower layers used: `buffer` (latches), `page::overflow`; `epoch`.

use super::BTree;
use super::descend::ReadGuard;
use super::epoch::{self, Pin};
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
            // Logged now, owned (claimed) by the record of the leaf cell.
            if let Err(error) = tree.pool.log_provisional(&mut guard) {
                drop(guard);
                free_now(tree, &pages);
                return Err(error);
            }
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

    /// The overflow pages the value's cell will own.
    pub(crate) fn pages(&self) -> &[PageId] {
        match self {
            StoredValue::Inline(_) => &[],
            StoredValue::Overflow { pages, .. } => pages,
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

/// A value as found in a leaf: copied, or a chain to read once the leaf
/// is left.
pub(crate) enum Found {
    /// An inline value (valid once the leaf validates).
    Bytes(Vec<u8>),
    /// An overflow value: its chain, pinned by the caller's epoch pin.
    Chain { first: PageId, len: usize },
}

/// The value `value` of a cell in the leaf behind `leaf`: copied if
/// inline, else noted as a chain, pinning the epoch into `pin` first (if
/// not yet pinned).
///
/// Entry and exit: `leaf` (optimistic or shared) and nothing else. The
/// caller validates `leaf` after this call and keeps `pin` until it has
/// read every chain found (see the module doc: the validation after the
/// pin proves the chain was current after the pin).
pub(crate) fn find(leaf: &ReadGuard<'_>, value: ValueRef, pin: &mut Option<Pin>) -> Found {
    match value {
        ValueRef::Inline { offset, len } => Found::Bytes(leaf.page().read_vec(offset, len)),
        ValueRef::Overflow { first, len } => {
            pin.get_or_insert_with(epoch::pin);
            Found::Chain { first, len }
        }
    }
}

impl BTree {
    /// The bytes of a value found by [`find`]. Entry: no latch held
    /// (loads happen here), pinned as `find` asked, the leaf validated
    /// after `find`. Exit: no latch held.
    pub(crate) fn read_found(&self, found: Found) -> Result<Vec<u8>> {
        match found {
            Found::Bytes(bytes) => Ok(bytes),
            Found::Chain { first, len } => Ok(self.read_chain(first, len)?.0),
        }
    }

    /// Reads a published overflow chain, each page under its own shared
    /// latch while it is copied (so it can be neither evicted nor torn
    /// meanwhile; pages already copied may be evicted freely).
    ///
    /// Entry: the chain is pinned (see the module doc): the caller holds
    /// the exclusive latch of the leaf whose cell names it and no other
    /// latch, or holds no latch and an epoch pin taken before the leaf was
    /// last validated. Exit: the same. Bounded: at most
    /// `pages_needed(len)` pages, no restarts; so every error is real (an
    /// I/O error, or corruption of the named page).
    pub(crate) fn read_chain(&self, first: PageId, len: usize) -> Result<(Vec<u8>, Vec<PageId>)> {
        if len > VALUE_SIZE_MAX {
            return Err(Error::corruption(first, format!("value length {len} above the limit")));
        }
        let page_count_max = overflow::pages_needed(self.pool.page_size(), len);
        // The length comes from a cell: a damaged one (with a checksum
        // that holds) may claim up to the limit. Size nothing from it that
        // the file could not hold.
        if page_count_max as u64 >= self.pool.page_count() {
            return Err(Error::corruption(first, format!("value length {len} needs more pages than the file has")));
        }
        let mut bytes = Vec::with_capacity(len);
        let mut pages = Vec::with_capacity(page_count_max);
        let mut next = Some(first);
        while let Some(pid) = next {
            if pages.len() >= page_count_max {
                return Err(Error::corruption(pid, "overflow chain longer than its value"));
            }
            let guard = self.pool.shared(pid)?;
            let page = guard.page();
            let header = overflow::read(&page, pid)?;
            if bytes.len() + header.len > len {
                return Err(Error::corruption(pid, "overflow chain holds more than its value"));
            }
            bytes.extend_from_slice(&page.read_vec(overflow::DATA_START, header.len));
            drop(guard);
            pages.push(pid);
            next = header.next;
            failpoint!("value.chain_page");
        }
        if bytes.len() != len {
            let reason = format!("overflow chain holds {} of {len} bytes", bytes.len());
            return Err(Error::corruption(first, reason));
        }
        Ok((bytes, pages))
    }
}
