//! The header every page starts with, and its checksum.
//!
//! ```text
//! offset size field
//!  0      4   checksum   CRC-32C of bytes 4..page_size
//!  4      1   page type  (PageType)
//!  5      1   level      0 for leaves and non-tree pages
//!  6      2   flags      type-specific
//!  8      8   page LSN   last WAL record applied to the page
//! 16      8   page id    the page's own number: catches misdirected writes
//! 24      ..  type-specific body
//! ```
//!
//! The checksum is computed on a private copy when a page is written and
//! verified on a private copy when it is read (see `buffer`); a live frame
//! carries a stale checksum while it is dirty.

use crate::ids::{Lsn, PageId};
use crate::limits::PAGE_HEADER_SIZE;
use crate::page::bytes::{PageBuf, PageBufMut};
use crate::{Error, Result};

/// Offset of the CRC-32C checksum.
pub const OFFSET_CHECKSUM: usize = 0;
/// Offset of the page type byte.
pub const OFFSET_TYPE: usize = 4;
/// Offset of the level byte.
pub const OFFSET_LEVEL: usize = 5;
/// Offset of the flags.
pub const OFFSET_FLAGS: usize = 6;
/// Offset of the page LSN.
pub const OFFSET_LSN: usize = 8;
/// Offset of the page's own id.
pub const OFFSET_PAGE_ID: usize = 16;

const _: () = assert!(OFFSET_PAGE_ID + 8 == PAGE_HEADER_SIZE);

/// What a page holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum PageType {
    /// Page 0: magic, format version, page size, allocator state, roots.
    Header = 1,
    /// A trunk page of the persistent free list.
    FreeTrunk = 2,
    /// A B-link tree leaf.
    Leaf = 3,
    /// A B-link tree inner node.
    Inner = 4,
    /// A piece of a large value.
    Overflow = 5,
}

impl PageType {
    /// Decodes a type byte.
    pub fn from_u8(raw: u8) -> Option<PageType> {
        Some(match raw {
            1 => PageType::Header,
            2 => PageType::FreeTrunk,
            3 => PageType::Leaf,
            4 => PageType::Inner,
            5 => PageType::Overflow,
            _ => return None,
        })
    }
}

/// CRC-32C of a page image, over everything but the checksum field.
pub fn checksum(page: &[u8]) -> u32 {
    crate::checksum::crc32c(page.get(OFFSET_CHECKSUM + 4..).unwrap_or(&[]))
}

/// Stores the checksum of `page` into it. Call on the final image, just
/// before it is written.
pub fn seal(page: &mut [u8]) {
    let sum = checksum(page);
    page.write_u32(OFFSET_CHECKSUM, sum);
}

/// Verifies a page image read for `pid`: checksum, self id and type byte.
pub fn verify(page: &[u8], pid: PageId) -> Result<PageType> {
    if page.len() < PAGE_HEADER_SIZE {
        return Err(Error::corruption(pid, "page shorter than its header"));
    }
    let stored = page.read_u32(OFFSET_CHECKSUM);
    let computed = checksum(page);
    if stored != computed {
        return Err(Error::corruption(
            pid,
            format!("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"),
        ));
    }
    let own = page.read_u64(OFFSET_PAGE_ID);
    if own != pid.0 {
        return Err(Error::corruption(pid, format!("page claims to be page {own} (misdirected write)")));
    }
    let raw = page.read_u8(OFFSET_TYPE);
    PageType::from_u8(raw).ok_or_else(|| Error::corruption(pid, format!("unknown page type {raw}")))
}

/// Reads the page type, if the byte names one.
pub fn page_type<P: PageBuf + ?Sized>(page: &P) -> Option<PageType> {
    PageType::from_u8(page.read_u8(OFFSET_TYPE))
}

/// Reads the page LSN.
pub fn lsn<P: PageBuf + ?Sized>(page: &P) -> Lsn {
    Lsn(page.read_u64(OFFSET_LSN))
}

/// Sets the page LSN.
pub fn set_lsn<P: PageBufMut + ?Sized>(page: &mut P, lsn: Lsn) {
    page.write_u64(OFFSET_LSN, lsn.0);
}

/// Writes a fresh header: type, level, zero flags and LSN, own id. The body
/// is left as it is.
pub fn init<P: PageBufMut + ?Sized>(page: &mut P, pid: PageId, kind: PageType, level: u8) {
    page.write_u32(OFFSET_CHECKSUM, 0);
    page.write_u8(OFFSET_TYPE, kind as u8);
    page.write_u8(OFFSET_LEVEL, level);
    page.write_u16(OFFSET_FLAGS, 0);
    page.write_u64(OFFSET_LSN, 0);
    page.write_u64(OFFSET_PAGE_ID, pid.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_page_verifies_and_any_flip_is_caught() {
        let mut page = vec![0u8; 512];
        init(page.as_mut_slice(), PageId(9), PageType::Leaf, 0);
        page[100] = 42;
        seal(&mut page);
        assert_eq!(verify(&page, PageId(9)).unwrap(), PageType::Leaf);
        assert!(matches!(verify(&page, PageId(8)), Err(Error::Corruption { page: PageId(8), .. })));
        for byte in [0, 3, 4, 17, 100, 511] {
            let mut bad = page.clone();
            bad[byte] ^= 0x10;
            assert!(verify(&bad, PageId(9)).is_err(), "flip at {byte} undetected");
        }
        assert!(verify(&vec![0u8; 512], PageId(9)).is_err(), "an all-zero page must not verify");
    }
}
