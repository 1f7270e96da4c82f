//! Page formats: the common header and checksum, byte access that is sound
//! under concurrent optimistic reads, the slotted node layout, overflow
//! pages, the free-list trunk pages and the header page.
//!
//! Invariant owned here: decoding arbitrary bytes never panics and never
//! reads out of bounds; it yields `Ok` or `Error::Corruption { page, .. }`.
//! Byte diagrams are in `docs/FORMAT.md`.

pub mod bytes;
pub mod freelist;
pub mod header;
pub mod meta;

pub use bytes::{AtomicPage, AtomicPageMut, PageBuf, PageBufMut};
pub use header::PageType;
pub mod node;
pub mod overflow;
pub mod redo;
