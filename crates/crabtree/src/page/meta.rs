//! The header page (page 0): what a database file is and where its
//! persistent allocator state and roots are.
//!
//! ```text
//! offset size field
//!  0     24   common page header (type Header, own id 0), see `header`
//! 24      8   magic "CRABTREE"
//! 32      4   format version (FORMAT_VERSION)
//! 36      4   page size in bytes
//! 40      8   page count: pages 0..count exist
//! 48      8   free-list head: first FreeTrunk page, 0 = empty list
//! 56      8   free page count: trunk pages + ids listed in them
//! 64      4   number of root slots (ROOT_SLOTS)
//! 68      4   reserved, zero
//! 72   8*N    root slots: opaque u64s (page ids or counters) that the
//!             layer owning each slot validates
//! ```
//!
//! Invariant: `decode(encode(m)) == m`, and `decode` of any bytes returns a
//! value whose fields are mutually consistent (ids below the page count,
//! page size valid and equal to the image length) or `Error::Corruption`
//! naming page 0; it never panics.

use crate::ids::PageId;
use crate::limits::{PAGE_HEADER_SIZE, page_size_valid};
use crate::page::bytes::{PageBuf, PageBufMut};
use crate::page::header::{self, PageType};
use crate::{Error, Result};

/// Identifies a crabtree data file.
pub const MAGIC: [u8; 8] = *b"CRABTREE";
/// On-disk format version this code reads and writes.
pub const FORMAT_VERSION: u32 = 2;
/// Number of root slots kept in the header page.
pub const ROOT_SLOTS: usize = 8;
/// Offset of the page size field (readable before the page size is known).
pub const OFFSET_PAGE_SIZE: usize = 36;

const OFFSET_MAGIC: usize = 24;
const OFFSET_VERSION: usize = 32;
const OFFSET_PAGE_COUNT: usize = 40;
const OFFSET_FREE_HEAD: usize = 48;
const OFFSET_FREE_COUNT: usize = 56;
const OFFSET_ROOT_COUNT: usize = 64;
const OFFSET_ROOTS: usize = 72;
/// Bytes of the header page that carry meaning.
pub const META_SIZE: usize = OFFSET_ROOTS + 8 * ROOT_SLOTS;

const _: () = assert!(OFFSET_MAGIC == PAGE_HEADER_SIZE);
const _: () = assert!(META_SIZE <= crate::limits::PAGE_SIZE_MIN);

/// The decoded header page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Page size of the file.
    pub page_size: usize,
    /// Pages `0..page_count` exist.
    pub page_count: u64,
    /// First free-list trunk page, if any.
    pub free_head: Option<PageId>,
    /// Free pages, trunks included.
    pub free_count: u64,
    /// Root slots (0 = none).
    pub roots: [u64; ROOT_SLOTS],
}

impl Meta {
    /// A fresh database: only the header page.
    pub fn new(page_size: usize) -> Meta {
        Meta { page_size, page_count: 1, free_head: None, free_count: 0, roots: [0; ROOT_SLOTS] }
    }

    /// Encodes into a sealed page image of `self.page_size` bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut page = vec![0u8; self.page_size];
        let buf = page.as_mut_slice();
        header::init(buf, PageId::HEADER, PageType::Header, 0);
        buf.write(OFFSET_MAGIC, &MAGIC);
        buf.write_u32(OFFSET_VERSION, FORMAT_VERSION);
        buf.write_u32(OFFSET_PAGE_SIZE, self.page_size as u32);
        buf.write_u64(OFFSET_PAGE_COUNT, self.page_count);
        buf.write_u64(OFFSET_FREE_HEAD, PageId::to_link(self.free_head));
        buf.write_u64(OFFSET_FREE_COUNT, self.free_count);
        buf.write_u32(OFFSET_ROOT_COUNT, ROOT_SLOTS as u32);
        for (slot, root) in self.roots.iter().enumerate() {
            buf.write_u64(OFFSET_ROOTS + 8 * slot, *root);
        }
        header::seal(&mut page);
        page
    }

    /// Decodes and validates a header page image.
    pub fn decode(page: &[u8]) -> Result<Meta> {
        let bad = |reason: String| Error::corruption(PageId::HEADER, reason);
        let kind = header::verify(page, PageId::HEADER)?;
        if kind != PageType::Header {
            return Err(bad(format!("page 0 has type {kind:?}")));
        }
        if page.read_array::<8>(OFFSET_MAGIC) != MAGIC {
            return Err(bad("bad magic: not a crabtree file".into()));
        }
        let version = page.read_u32(OFFSET_VERSION);
        if version != FORMAT_VERSION {
            return Err(bad(format!("format version {version}, this build reads {FORMAT_VERSION}")));
        }
        let page_size = page.read_u32(OFFSET_PAGE_SIZE) as usize;
        if !page_size_valid(page_size) || page_size != page.len() {
            return Err(bad(format!("page size {page_size} invalid for a {}-byte image", page.len())));
        }
        let page_count = page.read_u64(OFFSET_PAGE_COUNT);
        let free_head = PageId::from_link(page.read_u64(OFFSET_FREE_HEAD));
        let free_count = page.read_u64(OFFSET_FREE_COUNT);
        if page_count == 0 || free_count >= page_count || free_head.is_some_and(|h| h.0 >= page_count) {
            return Err(bad(format!("allocator state out of range: {page_count} pages, {free_count} free")));
        }
        if free_head.is_none() != (free_count == 0) {
            return Err(bad("free-list head and count disagree".into()));
        }
        if page.read_u32(OFFSET_ROOT_COUNT) as usize != ROOT_SLOTS {
            return Err(bad("root slot count mismatch".into()));
        }
        let mut roots = [0u64; ROOT_SLOTS];
        for (slot, root) in roots.iter_mut().enumerate() {
            *root = page.read_u64(OFFSET_ROOTS + 8 * slot);
        }
        Ok(Meta { page_size, page_count, free_head, free_count, roots })
    }

    /// Reads the page size from the first bytes of a file, before the full
    /// header page can be read. Validates only the range.
    pub fn peek_page_size(prefix: &[u8]) -> Result<usize> {
        let size = prefix.read_u32(OFFSET_PAGE_SIZE) as usize;
        if prefix.len() < META_SIZE || !page_size_valid(size) {
            return Err(Error::corruption(PageId::HEADER, format!("page size {size} in header is invalid")));
        }
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_byte_flip_is_rejected() {
        let mut meta = Meta::new(512);
        meta.page_count = 10;
        meta.free_head = Some(PageId(4));
        meta.free_count = 3;
        meta.roots[1] = 7;
        let page = meta.encode();
        assert_eq!(Meta::decode(&page).unwrap(), meta);
        for byte in 0..page.len() {
            let mut bad = page.clone();
            bad[byte] ^= 0x01;
            assert!(Meta::decode(&bad).is_err(), "flip at {byte} accepted");
        }
        assert!(Meta::decode(&page[..256]).is_err());
        assert!(Meta::decode(&[]).is_err());
    }

    /// A file of another format version (format 1: inner slots without
    /// the child) is refused with an error naming both versions, even with
    /// a valid checksum, never read as this format.
    #[test]
    fn another_format_version_is_refused_by_name() {
        let mut page = Meta::new(512).encode();
        page.as_mut_slice().write_u32(OFFSET_VERSION, 1);
        header::seal(&mut page);
        let error = Meta::decode(&page).unwrap_err();
        assert!(matches!(error, Error::Corruption { .. }), "{error:?}");
        let text = error.to_string();
        assert!(text.contains("format version 1, this build reads 2"), "{text}");
    }

    #[test]
    fn inconsistent_fields_are_corruption_even_with_valid_checksum() {
        let mut meta = Meta::new(512);
        meta.free_count = 1; // no head
        meta.page_count = 3;
        assert!(matches!(Meta::decode(&meta.encode()), Err(Error::Corruption { .. })));
    }
}
