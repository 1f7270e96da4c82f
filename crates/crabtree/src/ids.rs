//! Identifier newtypes shared by every layer.
//!
//! They live in a leaf module so no layer has to reach upward for them. On
//! disk every id is a fixed-width little-endian `u64`.

use std::fmt;

/// The number of a page in the data file: byte offset `id * page_size`.
///
/// Page 0 is the header page, so `PageId(0)` never names a tree node and is
/// used on disk as "no link".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PageId(pub u64);

impl PageId {
    /// The header page, which holds the magic, format version and roots.
    pub const HEADER: PageId = PageId(0);

    /// Decodes an on-disk link, where 0 means "none".
    pub fn from_link(raw: u64) -> Option<PageId> {
        (raw != 0).then_some(PageId(raw))
    }

    /// Encodes an optional link, `None` as 0.
    pub fn to_link(link: Option<PageId>) -> u64 {
        link.map_or(0, |pid| pid.0)
    }
}

impl fmt::Debug for PageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "page#{}", self.0)
    }
}

impl fmt::Display for PageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A log sequence number: the byte position just past a WAL record.
///
/// Every page carries the LSN of the last record applied to it; the buffer
/// pool makes the log durable up to that LSN before writing the page.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The LSN of a page that no log record has touched.
    pub const ZERO: Lsn = Lsn(0);
}

/// The number of a frame in the buffer pool's frame array (memory, not a
/// disk position): the frame's bytes are at `index * stride` in the array.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct FrameIndex(pub u32);
