//! The log buffer: a ring of `u64` words that appenders fill concurrently,
//! and a link array that says which reserved ranges are filled.
//!
//! Model: InnoDB 8.0's `log_buffer` + `link_buf` (and PostgreSQL's WAL
//! insertion, whose insertion locks play the part of the links). An
//! appender has already reserved `[start, end)` of the LSN space with one
//! `fetch_add` (in `writer.rs`); here it
//! 1. stores its record's words at ring positions `start/8 ..` (relaxed:
//!    nobody reads them until step 2 publishes them), then
//! 2. stores `end` into `links[start/8 mod n]` with release.
//!
//! The flusher alone walks the links from its `filled` position (and
//! stores each record's CRC into its first word as it passes it, before
//! copying it out: `writer::seal`): while
//! `links[filled] > filled`, the record there is complete (the acquire load
//! pairs with step 2, so its words are visible) and `filled` jumps to its
//! end. A slot left from an earlier lap holds an end `<= filled` (records
//! are shorter than the ring), so it reads as "not yet filled"; no slot is
//! ever cleared.
//!
//! Invariants (the writer enforces them):
//! * an appender writes ring words only for LSNs in `[written - 0, written +
//!   capacity)`, i.e. it waits until `end <= written + capacity`, where
//!   `written` is the LSN below which the flusher has copied everything out;
//!   the flusher copies words only below `filled`; so no word is overwritten
//!   before it was copied, and none is copied before it was filled;
//! * nothing writes a link for a position in a later lap while the flusher
//!   still waits at that position (follows from the first point).
//!
//! No locks, and no `unsafe` but a prefetch hint: every shared byte is an
//! atomic word.

use crate::ids::Lsn;
use crate::sync::{AtomicU64, Ordering};

/// Bytes of the ring [`LogBuffer::prefetch`] fetches ahead: a typical
/// small record (a leaf entry with a 100-byte value is 160 bytes).
const PREFETCH_BYTES: u64 = 256;

/// See the module doc.
pub struct LogBuffer {
    words: Box<[AtomicU64]>,
    links: Box<[AtomicU64]>,
    mask: u64,
}

impl LogBuffer {
    /// A buffer of `capacity` bytes (a power of two, a multiple of 8).
    pub fn new(capacity: usize) -> LogBuffer {
        assert!(capacity.is_power_of_two() && capacity >= 64, "log buffer size must be a power of two");
        let count = capacity / 8;
        let words = (0..count).map(|_| AtomicU64::new(0)).collect();
        let links = (0..count).map(|_| AtomicU64::new(0)).collect();
        LogBuffer { words, links, mask: count as u64 - 1 }
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> u64 {
        (self.mask + 1) * 8
    }

    fn word(&self, lsn: u64) -> &AtomicU64 {
        // In bounds: masked by `len - 1` of a power-of-two length.
        &self.words[((lsn / 8) & self.mask) as usize]
    }

    fn link(&self, lsn: u64) -> &AtomicU64 {
        &self.links[((lsn / 8) & self.mask) as usize]
    }

    /// Step 1 for one word: stores `word` at LSN `lsn` (8-aligned).
    pub fn put(&self, lsn: u64, word: u64) {
        // Relaxed: published by the release store in `publish`.
        self.word(lsn).store(word, Ordering::Relaxed);
    }

    /// A hint: the next append (most likely this thread's own next record)
    /// stores its words from `lsn` on and its link at `lsn`. The ring is
    /// larger than a core's cache, so each of its lines is cold when an
    /// appender reaches it; fetching the next lines for writing now, long
    /// before the next record, takes those misses off the next append (and
    /// off the latch release that waits for its stores). No effect on
    /// what any thread sees.
    pub fn prefetch(&self, lsn: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_ET0, _mm_prefetch};
            let word = |offset: u64| -> *const i8 { (self.word(lsn + offset) as *const AtomicU64).cast() };
            let link: *const i8 = (self.link(lsn) as *const AtomicU64).cast();
            // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has
            // (it is in the target's baseline); a prefetch is only a hint:
            // it never faults, and changes no memory and no ordering.
            unsafe {
                for offset in (0..PREFETCH_BYTES).step_by(64) {
                    _mm_prefetch::<_MM_HINT_ET0>(word(offset));
                }
                _mm_prefetch::<_MM_HINT_ET0>(link);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = lsn;
    }

    /// Step 2: the record `[start, end)` is filled.
    pub fn publish(&self, start: Lsn, end: Lsn) {
        debug_assert!(end > start);
        // Release: makes the record's words visible to the flusher's
        // acquire load in `next_filled`.
        self.link(start.0).store(end.0, Ordering::Release);
    }

    /// If the record at `at` is filled, its end.
    pub fn next_filled(&self, at: Lsn) -> Option<Lsn> {
        // Acquire: pairs with `publish`.
        let end = self.link(at.0).load(Ordering::Acquire);
        (end > at.0).then_some(Lsn(end))
    }

    /// Whether the record at `at` is filled, with sequentially consistent
    /// ordering: the flusher's last look before it parks (`writer::idle`).
    pub fn filled_at_seqcst(&self, at: Lsn) -> bool {
        self.link(at.0).load(Ordering::SeqCst) > at.0
    }

    /// Copies the filled bytes `[from, from + out.len())` out (8-aligned
    /// `from`, length a multiple of 8).
    pub fn copy_out(&self, from: Lsn, out: &mut [u8]) {
        for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
            // Relaxed: `next_filled`'s acquire already ordered these.
            let word = self.word(from.0 + 8 * i as u64).load(Ordering::Relaxed);
            chunk.copy_from_slice(&word.to_le_bytes());
        }
    }
}
