//! The buffer pool: page states and hybrid latches, the page cache, clock
//! eviction and the page allocator (vmcache shape; see
//! `docs/protocols/latches-and-buffer-pool.md`).
//!
//! * [`latch`]: the 64-bit state word of a page (residency, latch, dirty
//!   bit, version) and its optimistic/shared/exclusive protocol.
//! * `region`: reserved virtual memory seen as atomic words, committed
//!   (`mprotect`, charged against the commit limit) as a prefix that grows
//!   with use; the `unsafe` (plus the one call of `frame_bytes_mut` in a
//!   load, whose contract `grace` upholds).
//! * `frames`: the frame array (page memory, faulted once, recycled) and
//!   its sharded free lists, each free frame with its grace tag.
//! * `grace`: read sections of optimistic readers and the grace periods
//!   after which a load may `pread` straight into a recycled frame.
//! * `pool`: [`BufferPool`], the page table (frame word beside each state
//!   word), loading and write-back.
//! * `evict`: the partitioned resident set, the clock, batched eviction.
//! * `cleaner`: the background thread that writes dirty victims back.
//! * `uncached`: point reads of pages a full pool does not admit, read
//!   into a private copy instead of a frame, and the admission filter
//!   (one `unsafe`: the copy's words seen as bytes for `pread`).
//! * `alloc`: allocate/free, the persistent free list, `flush`.
//! * `space`: a full disk: write-backs that fail for want of space leave
//!   their pages dirty, and commits are refused until they are written.
//! * `compact`: cutting the trailing free pages off the data file.
//! * `guard`: the guards handed to the tree.
//!
//! Invariants owned here: a frame is written only under its exclusive
//! latch, and by the kernel only once no read section that could reach it
//! through its previous page is open; a page in a frame verified when it was read; a dirty page is
//! written only after the log hook made the log durable up to its LSN;
//! optimistic readers write no shared memory on a hit; loading and eviction
//! never wait on a latch other than the one of the page being loaded, so
//! they cannot deadlock with latches their caller holds; no single lock is
//! on the load/evict path (the resident set is partitioned, the budget
//! check reads one atomic count); the frames in use are at most the
//! budget plus the pages latched at once plus one page per concurrent
//! loader, and the frames ever touched (the pool's memory) at most that
//! plus the victims of the evictions in flight; freeing a page never makes
//! it resident; evicting a page makes no system call.
//!
//! Lower layers used: `io` (Storage), `page` (header, meta, freelist), `sync`.

mod alloc;
mod checkpoint;
mod cleaner;
mod compact;
mod evict;
mod frames;
mod grace;
mod guard;
pub mod latch;
mod mtr;
mod pool;
mod region;
mod space;
mod uncached;

#[cfg(test)]
mod commit_tests;
#[cfg(test)]
mod space_tests;
#[cfg(test)]
mod tests;

pub use checkpoint::{AllocState, CheckpointRecord, CheckpointReport, decode_free_chunk};
pub use compact::{CompactReport, TruncateRecord};
pub use guard::{ExclusiveGuard, OptimisticGuard, SharedGuard};
pub use mtr::{Change, last_lsn};
pub use pool::{BufferPool, LogFlush, PoolOptions, PoolStats};
pub(crate) use space::is_space_error;
pub use uncached::{PointRead, UncachedGuard};

/// An optimistic read failed validation (or an upgrade lost a race):
/// release everything and restart the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restart;
