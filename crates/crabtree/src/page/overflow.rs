//! Overflow pages: a chain holding one large value.
//!
//! ```text
//! offset size field
//!  0     24   common page header, type Overflow
//! 24      8   next overflow page (0: last of the chain)
//! 32      4   data length in this page
//! 36      4   reserved (0)
//! 40     ..   data
//! ```
//!
//! A value of `len` bytes takes `ceil(len / capacity)` pages; the leaf cell
//! holds the first page id and the total length, which the reader checks
//! against the sum of the chain's lengths (and bounds the walk by it, so a
//! cycle in a damaged chain ends in an error, not a hang).

use crate::ids::PageId;
use crate::page::bytes::{PageBuf, PageBufMut};
use crate::page::header::{self, PageType};
use crate::{Error, Result};

const OFFSET_NEXT: usize = 24;
const OFFSET_LEN: usize = 32;
/// Where the data starts.
pub const DATA_START: usize = 40;

/// Data bytes one overflow page holds.
pub const fn capacity(page_size: usize) -> usize {
    page_size - DATA_START
}

/// Number of pages a value of `len` bytes needs.
pub const fn pages_needed(page_size: usize, len: usize) -> usize {
    len.div_ceil(capacity(page_size))
}

/// Formats `page` as overflow page `pid` holding `data`, linked to `next`.
pub fn write<P: PageBufMut + ?Sized>(page: &mut P, pid: PageId, data: &[u8], next: Option<PageId>) {
    debug_assert!(data.len() <= capacity(page.size()));
    header::init(page, pid, PageType::Overflow, 0);
    page.write_u64(OFFSET_NEXT, PageId::to_link(next));
    page.write_u32(OFFSET_LEN, data.len() as u32);
    page.write_u32(OFFSET_LEN + 4, 0);
    page.write(DATA_START, data);
}

/// A validated overflow page: where its data is and what follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverflowPage {
    /// The next page of the chain.
    pub next: Option<PageId>,
    /// Data bytes in this page, at [`DATA_START`].
    pub len: usize,
}

/// Decodes overflow page `pid`, validating type and length.
pub fn read<P: PageBuf + ?Sized>(page: &P, pid: PageId) -> Result<OverflowPage> {
    if header::page_type(page) != Some(PageType::Overflow) {
        return Err(Error::corruption(pid, "expected an overflow page"));
    }
    let len = page.read_u32(OFFSET_LEN) as usize;
    if len > capacity(page.size()) || len == 0 {
        return Err(Error::corruption(pid, format!("overflow length {len} out of range")));
    }
    Ok(OverflowPage { next: PageId::from_link(page.read_u64(OFFSET_NEXT)), len })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let mut page = vec![0u8; 512];
        write(page.as_mut_slice(), PageId(3), b"hello", Some(PageId(4)));
        let got = read(page.as_slice(), PageId(3)).unwrap();
        assert_eq!(got, OverflowPage { next: Some(PageId(4)), len: 5 });
        assert_eq!(page.as_slice().read_vec(DATA_START, got.len), b"hello");
        assert_eq!(pages_needed(512, capacity(512) + 1), 2);
    }

    proptest! {
        #[test]
        fn random_bytes_yield_ok_or_corruption(bytes in proptest::collection::vec(any::<u8>(), 512)) {
            match read(bytes.as_slice(), PageId(3)) {
                Ok(page) => prop_assert!(page.len <= capacity(512)),
                Err(Error::Corruption { page: PageId(3), .. }) => {}
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
        }
    }
}
