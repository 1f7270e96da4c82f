//! Every limit of the engine, in one place, with compile-time checks of how
//! they relate.

/// Smallest page size accepted. Pages below 4 KiB exist for tests that want
/// deep trees from few keys; production databases use 4 KiB or more.
pub const PAGE_SIZE_MIN: usize = 512;
/// Largest page size accepted. Offsets inside a page are `u16`, so every
/// offset that points at a byte (< page size) fits.
pub const PAGE_SIZE_MAX: usize = 64 * 1024;
/// Default page size (LeanStore's choice for I/O rate; change on measurement).
pub const PAGE_SIZE_DEFAULT: usize = 4096;

/// Bytes of the header every page starts with (checksum, type, LSN, id).
pub const PAGE_HEADER_SIZE: usize = 24;

/// Largest value accepted (values past the inline threshold go to overflow
/// pages). A logged tree accepts less with small pages: see
/// [`value_size_max_logged`].
pub const VALUE_SIZE_MAX: usize = 1 << 30;

/// Bytes a mini-transaction's log record spends on each overflow page it
/// claims or frees (`page::redo`: a kind byte and the page id).
pub const WAL_CHAIN_ENTRY_SIZE: usize = 9;

/// Largest value a logged tree (`raw::Store`, `Db`) accepts with pages of
/// `page_size` bytes. The record that publishes a value's leaf cell claims
/// every page of its chain, and one that replaces a value (an upsert, or a
/// commit applied again by recovery) frees the old chain's pages too, in
/// the same record, which must fit [`WAL_RECORD_PAYLOAD_MAX`] beside up to
/// four page images. So: 1 GiB with 64 KiB pages, about 221 MiB with
/// 4 KiB pages, 26 MiB with 512-byte pages. A larger value once made the
/// commit fail with the log's own limit and poisoned the database.
pub const fn value_size_max_logged(page_size: usize) -> usize {
    let room = WAL_RECORD_PAYLOAD_MAX - 4 * (page_size + 64) - 4096;
    let pages = room / (2 * WAL_CHAIN_ENTRY_SIZE);
    let max = pages * crate::page::overflow::capacity(page_size);
    if max < VALUE_SIZE_MAX { max } else { VALUE_SIZE_MAX }
}

/// Default largest number of pages a database may have: the buffer pool
/// reserves `max_pages * page_size` bytes of virtual address space for its
/// frame array and 16 bytes per page for its page table (2^24 pages of
/// 4 KiB: 64 GiB and 256 MiB), reserved `PROT_NONE`: neither memory nor
/// commit charge until used (`buffer/region.rs`), but `RLIMIT_AS` counts it.
pub const MAX_PAGES_DEFAULT: u64 = 1 << 24;
/// Upper bound on `max_pages` (a 48-bit address space holds 256 TiB).
pub const MAX_PAGES_LIMIT: u64 = 1 << 32;

/// Default buffer pool budget in bytes.
pub const POOL_BYTES_DEFAULT: usize = 64 << 20;
/// Smallest number of frames a pool may have: a tree operation holds a few
/// pages at once and the evictor needs room to work.
pub const POOL_FRAMES_MIN: usize = 16;

/// Partitions of the buffer pool's resident set (each a mutex with its own
/// clock hand), so loaders and evictors of different pages rarely meet.
pub const RESIDENT_SHARDS: usize = 16;
/// Most pages one eviction call frees: the loads after it find free
/// frames without evicting (and the victims' dirty pages are written in
/// one go). Bounded so one unlucky reader's wait is too.
pub const EVICT_BATCH_MAX: usize = 32;
/// Dirty MARKED pages an eviction batch passes over (leaving them for the
/// cleaner) per victim it wants, before it takes dirty pages and writes
/// them itself: bounds the clock walk of a pool whose every page is dirty.
/// With the cleaner's share per shard, a random-insert build at 4x its
/// pool went from 26,501 to 702 dirty victims written by the inserter
/// (`docs/BENCHMARKS.md`, "stop 10").
pub const DIRTY_SKIPS_PER_VICTIM: usize = 4;
/// How far past each clock hand the cleaner looks for dirty pages, in
/// multiples of its per-shard share of a round: pages the hand reaches
/// soon. Unbounded, a cleaner that keeps up runs ahead and cleans pages
/// that are written again before they are evicted: a random-insert build
/// at 4x its pool wrote 705,597 pages for 554,304 evictions, and 601,547
/// with this bound (+5.6% inserts, interleaved; twice the share gave 10x
/// the reader write-backs, eight times the share no gain).
pub const CLEANER_LOOKAHEAD: usize = 4;
/// Smallest pool budget whose frame array asks for transparent huge pages
/// (2 MiB on x86-64): fewer TLB misses on the hit path (measured: tree
/// bench `get x1`, `docs/BENCHMARKS.md`) and in a load's copy into its
/// frame (larger-than-memory gets +2-5% with a 36 MiB pool), but the
/// memory touched grows in 2 MiB steps: at most one step (6% of this
/// size) beyond the frames touched (a 32 MiB pool with 32 threads
/// measured 5.3 MiB over its budget with huge pages against 3.4 MiB
/// without, `tests/pool_memory.rs`).
pub const POOL_HUGE_PAGES_MIN_BYTES: usize = 32 << 20;
/// Every commit of a buffer pool region (`buffer/region.rs`) opens a
/// multiple of this many bytes: a multiple of every page size Linux uses
/// (4, 16 and 64 KiB), so each `mprotect` starts on a page boundary.
pub const REGION_GRAIN_MIN: usize = 64 << 10;
/// Bytes the frame array commits at least per growth: one 2 MiB huge page,
/// so a commit never splits one (the array commits as it first hands out
/// frames, so its charge is the frames touched plus at most one eighth
/// and this).
pub const REGION_GRAIN_FRAMES: usize = 2 << 20;
/// Bytes the page table (16 per page id) commits at least per growth:
/// 4096 page ids (16 MiB of 4 KiB pages), so a growing file calls
/// `mprotect` rarely while a small one is charged little.
pub const REGION_GRAIN_STATES: usize = REGION_GRAIN_MIN;
/// Stacks of free frames in the buffer pool's frame array (each a mutex;
/// a thread pushes and pops on its own first).
pub const FRAME_FREE_SHARDS: usize = 16;
/// Most dirty pages the background cleaner writes per round (in page-id
/// order) before it looks again.
pub const CLEAN_BATCH_MAX: usize = 256;
/// How long the cleaner sleeps when it found nothing to do (a reader that
/// meets a dirty victim wakes it sooner).
pub const CLEANER_PERIOD: std::time::Duration = std::time::Duration::from_millis(5);
/// Longest sleep of an idle cleaner (it backs off while rounds find
/// nothing, since a round reads the state word of every resident page).
pub const CLEANER_IDLE_MAX: std::time::Duration = std::time::Duration::from_millis(100);
/// How often the cleaner tries to write every dirty page back while the
/// disk is full (`buffer/space.rs`): how soon commits resume once space
/// is freed.
pub const SPACE_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

/// Optimistic restarts before a reader falls back to shared latches.
pub const OPTIMISTIC_RESTARTS_MAX: u32 = 8;
/// How long an operation keeps restarting under shared latches before it
/// reports the tree's links as corrupt instead of hanging.
pub const RESTART_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Nanoseconds of [`restart_patience`]; 0: [`RESTART_PATIENCE`]. Only the
/// fuzz targets change it (`crate::fuzzing::set_restart_patience`), so a
/// damaged file whose links disagree costs them milliseconds per operation,
/// not seconds. Read only on give-up paths, never by a fast path.
static RESTART_PATIENCE_NANOS: crate::sync::AtomicU64 = crate::sync::AtomicU64::new(0);

/// How long an operation waits on something only damage can hold up (links
/// that disagree, a free page that is in use) before it reports corruption:
/// [`RESTART_PATIENCE`] unless the fuzz targets shortened it.
pub(crate) fn restart_patience() -> std::time::Duration {
    // Relaxed: a tuning value, no other memory is published with it.
    match RESTART_PATIENCE_NANOS.load(crate::sync::Ordering::Relaxed) {
        0 => RESTART_PATIENCE,
        nanos => std::time::Duration::from_nanos(nanos),
    }
}

/// Sets [`restart_patience`] (process-wide; for fuzzing).
pub(crate) fn set_restart_patience(patience: std::time::Duration) {
    let nanos = u64::try_from(patience.as_nanos()).unwrap_or(u64::MAX).max(1);
    // Relaxed: see `restart_patience`.
    RESTART_PATIENCE_NANOS.store(nanos, crate::sync::Ordering::Relaxed);
}
/// ... and only after at least this many restarts under shared latches
/// (each after a yield or a 100 µs sleep), so a thread that merely got
/// little CPU is not told the tree is corrupt.
pub const PESSIMISTIC_RESTARTS_MIN: u32 = 2_000;
/// Most entries a range iterator asks for per refill (refills start at one
/// leaf and double; whole leaves are read, so a refill may return more).
pub const SCAN_BATCH_ENTRIES_MAX: usize = 256;
/// Spins on a latched word before parking the thread.
pub const LATCH_SPINS_MAX: u32 = 64;

/// Largest key for a page size: about a quarter page, so that a split always
/// leaves room for a new cell and inner nodes hold at least three
/// separators.
pub const fn key_size_max(page_size: usize) -> usize {
    // A quarter of the space after the 64-byte node header, less the
    // largest per-cell overhead (an inner cell's 10 header bytes and its
    // 16-byte slot; a leaf's 7, an 8-byte overflow link and an 8-byte slot
    // are less); `page::node` asserts the result fits.
    (page_size - 64) / 4 - 26
}

/// Whether `size` is an accepted page size: a power of two in range.
pub const fn page_size_valid(size: usize) -> bool {
    size.is_power_of_two() && size >= PAGE_SIZE_MIN && size <= PAGE_SIZE_MAX
}

const _: () = assert!(page_size_valid(PAGE_SIZE_DEFAULT));
// Eviction batches stay short (a reader waits for its batch); shards index by `pid % RESIDENT_SHARDS`.
const _: () = assert!(EVICT_BATCH_MAX >= 1 && EVICT_BATCH_MAX <= 64 && RESIDENT_SHARDS.is_power_of_two());
const _: () = assert!(FRAME_FREE_SHARDS >= 1);
const _: () = assert!(
    REGION_GRAIN_FRAMES.is_multiple_of(REGION_GRAIN_MIN) && REGION_GRAIN_STATES.is_multiple_of(REGION_GRAIN_MIN)
);
const _: () = assert!(PAGE_SIZE_MAX <= u16::MAX as usize + 1);
const _: () = assert!(PAGE_SIZE_MIN.is_multiple_of(8));
// Three maximal keys plus per-cell overhead and the header fit in the
// smallest page.
const _: () = assert!(3 * (key_size_max(PAGE_SIZE_MIN) + 32) + PAGE_HEADER_SIZE + 64 <= PAGE_SIZE_MIN);
const _: () = assert!(key_size_max(PAGE_SIZE_MIN) >= 64);

/// Bytes of a WAL record header (`wal/record.rs`).
pub const WAL_RECORD_HEADER_SIZE: usize = 24;
/// Records start at LSNs that are multiples of this, and their sizes are.
pub const WAL_RECORD_ALIGN: usize = 8;
/// Largest WAL record payload: a full-page image of the largest page plus
/// room for its description. The reader rejects longer lengths before it
/// allocates anything.
pub const WAL_RECORD_PAYLOAD_MAX: usize = 1 << 20;
/// Bytes at the start of each WAL segment file reserved for its header; log
/// data starts after it, block-aligned.
pub const WAL_SEGMENT_HEADER_SIZE: usize = 4096;
/// Smallest WAL segment file (tests use small ones to cross boundaries).
pub const WAL_SEGMENT_SIZE_MIN: u64 = 8192;
/// Largest WAL segment file.
pub const WAL_SEGMENT_SIZE_MAX: u64 = 1 << 30;
/// Default WAL segment file size.
pub const WAL_SEGMENT_SIZE_DEFAULT: u64 = 16 << 20;
/// How often the log's preparer tries again to make a spare segment after
/// a try failed for want of space (each try may rewrite up to a segment
/// of zeros): how soon commits resume once space is freed on the log's
/// disk.
pub const LOG_SPACE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
/// Default size of the in-memory log buffer.
pub const WAL_BUFFER_SIZE_DEFAULT: usize = 8 << 20;
/// Smallest log buffer (a power of two, like every buffer size): at least
/// two maximal records, so the oldest unfilled
/// reservation can always be copied (no backpressure deadlock).
pub const WAL_BUFFER_SIZE_MIN: usize = 4 << 20;
/// Default bound on how long an `Eventual` append waits to become durable.
pub const WAL_FLUSH_DELAY_DEFAULT: std::time::Duration = std::time::Duration::from_millis(10);
/// Most bytes the flusher hands to one `write` call (its staging buffer).
pub const WAL_WRITE_CHUNK_MAX: usize = 1 << 20;

const _: () = assert!(WAL_RECORD_HEADER_SIZE.is_multiple_of(WAL_RECORD_ALIGN));
const _: () = assert!(WAL_SEGMENT_HEADER_SIZE.is_multiple_of(WAL_RECORD_ALIGN));
const _: () = assert!(WAL_SEGMENT_SIZE_MIN >= 2 * WAL_SEGMENT_HEADER_SIZE as u64);
const _: () =
    assert!(WAL_SEGMENT_SIZE_DEFAULT >= WAL_SEGMENT_SIZE_MIN && WAL_SEGMENT_SIZE_DEFAULT <= WAL_SEGMENT_SIZE_MAX);
const _: () = assert!(WAL_SEGMENT_SIZE_MIN.is_multiple_of(WAL_RECORD_ALIGN as u64));
const _: () = assert!(WAL_BUFFER_SIZE_DEFAULT >= WAL_BUFFER_SIZE_MIN);
const _: () = assert!(WAL_BUFFER_SIZE_MIN.is_power_of_two() && WAL_BUFFER_SIZE_DEFAULT.is_power_of_two());
const _: () = assert!(WAL_BUFFER_SIZE_MIN >= 2 * (WAL_RECORD_HEADER_SIZE + WAL_RECORD_PAYLOAD_MAX + WAL_RECORD_ALIGN));
const _: () = assert!(WAL_RECORD_PAYLOAD_MAX >= 2 * PAGE_SIZE_MAX);
const _: () = assert!(WAL_RECORD_PAYLOAD_MAX <= u32::MAX as usize);
