//! Free-list trunk pages: the persistent free list is a chain of trunk
//! pages, each listing free page ids. Trunk pages are free pages
//! themselves (as in SQLite): after reopening, the free set is every trunk
//! in the chain plus every id they list.
//!
//! ```text
//! offset size field
//!  0     24   common page header (type FreeTrunk, own id)
//! 24      8   next trunk page id, 0 = last
//! 32      4   number of ids that follow (<= capacity)
//! 36      4   reserved, zero
//! 40   8*n    free page ids
//! ```
//!
//! Invariant: `decode` of any bytes either returns ids that are all in
//! `1..page_count` and a next link below `page_count`, or
//! `Error::Corruption` naming the trunk page; it never panics and never
//! sizes an allocation from an unvalidated count.

use crate::ids::PageId;
use crate::page::bytes::{PageBuf, PageBufMut};
use crate::page::header::{self, PageType};
use crate::{Error, Result};

const OFFSET_NEXT: usize = 24;
const OFFSET_COUNT: usize = 32;
const OFFSET_IDS: usize = 40;

/// How many ids one trunk page of `page_size` bytes holds.
pub fn capacity(page_size: usize) -> usize {
    page_size.saturating_sub(OFFSET_IDS) / 8
}

/// Writes a trunk page image for `pid` into `page` (the full page).
/// Panics if `ids` exceeds the capacity (a programmer error).
pub fn encode<P: PageBufMut + ?Sized>(page: &mut P, pid: PageId, next: Option<PageId>, ids: &[PageId]) {
    assert!(ids.len() <= capacity(page.size()), "{} ids overflow a trunk", ids.len());
    header::init(page, pid, PageType::FreeTrunk, 0);
    page.write_u64(OFFSET_NEXT, PageId::to_link(next));
    page.write_u32(OFFSET_COUNT, ids.len() as u32);
    page.write_u32(OFFSET_COUNT + 4, 0);
    for (index, id) in ids.iter().enumerate() {
        page.write_u64(OFFSET_IDS + 8 * index, id.0);
    }
}

/// A decoded trunk page.
#[derive(Debug, PartialEq, Eq)]
pub struct Trunk {
    /// The next trunk in the chain.
    pub next: Option<PageId>,
    /// Free pages listed here.
    pub ids: Vec<PageId>,
}

/// Decodes trunk page `pid` (already checksum-verified by the caller or
/// not: the type and every field are checked here).
pub fn decode(page: &[u8], pid: PageId, page_count: u64) -> Result<Trunk> {
    let bad = |reason: String| Error::corruption(pid, reason);
    if header::page_type(page) != Some(PageType::FreeTrunk) {
        return Err(bad("free list links to a page that is not a trunk".into()));
    }
    let next_raw = page.read_u64(OFFSET_NEXT);
    if next_raw >= page_count {
        return Err(bad(format!("trunk links to page {next_raw} past the end {page_count}")));
    }
    let count = page.read_u32(OFFSET_COUNT) as usize;
    if count > capacity(page.len()) {
        return Err(bad(format!("trunk claims {count} ids, capacity {}", capacity(page.len()))));
    }
    let mut ids = Vec::with_capacity(count);
    for index in 0..count {
        let id = page.read_u64(OFFSET_IDS + 8 * index);
        if id == 0 || id >= page_count {
            return Err(bad(format!("free id {id} out of range 1..{page_count}")));
        }
        ids.push(PageId(id));
    }
    Ok(Trunk { next: PageId::from_link(next_raw), ids })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_fields() {
        let mut page = vec![0u8; 512];
        let ids = [PageId(3), PageId(9)];
        encode(page.as_mut_slice(), PageId(5), Some(PageId(6)), &ids);
        header::seal(&mut page);
        header::verify(&page, PageId(5)).unwrap();
        let trunk = decode(&page, PageId(5), 10).unwrap();
        assert_eq!(trunk, Trunk { next: Some(PageId(6)), ids: ids.to_vec() });
        assert!(decode(&page, PageId(5), 9).is_err(), "id 9 past page_count 9");
        assert!(decode(&page, PageId(5), 6).is_err(), "next 6 past page_count 6");
        let mut huge = page.clone();
        huge.as_mut_slice().write_u32(OFFSET_COUNT, u32::MAX);
        assert!(decode(&huge, PageId(5), 10).is_err());
        let mut zero = page.clone();
        zero.as_mut_slice().write_u64(OFFSET_IDS, 0);
        assert!(decode(&zero, PageId(5), 10).is_err());
        assert!(decode(&[0u8; 7], PageId(5), 10).is_err());
    }
}
