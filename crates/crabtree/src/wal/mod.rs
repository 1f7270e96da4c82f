//! The write-ahead log: records, segments, concurrent append with group
//! commit, and the reader that finds the end of the log after a crash.
//!
//! Layer: below `buffer` (the pool makes the log durable up to a page's LSN
//! before it writes the page), above `io`. It uses only the [`Dir`] and
//! [`Storage`](crate::io::Storage) traits for its files, so the same code
//! runs on real files ([`FileDir`](crate::io::FileDir)) and on the
//! simulated disk ([`SimDir`](crate::io::SimDir)). The tree logs every page
//! change through it (`buffer::mtr`); checkpoints and recovery are in
//! `buffer::checkpoint` and `store`.
//!
//! Files, one concept each:
//! * `record.rs`: the record layout (LSN, type, length, CRC-32C), encoder
//!   and a decoder that never panics;
//! * `segment.rs`: fixed-size segment files, preallocated, recycled in
//!   place, with a header naming the log segment they hold;
//! * `buffer.rs`: the log buffer (a ring of atomic words) and the links
//!   that track which reserved ranges are filled;
//! * `writer.rs`: [`Wal`]: append (one `fetch_add`), group commit (waiting
//!   committers lead, a flusher thread does the rest), `wait_durable`,
//!   durability modes, poisoning;
//! * `reader.rs`: replay in LSN order; torn tail vs corruption via the
//!   horizon records.
//!
//! Invariants (each file's doc says how it keeps its part):
//! 1. An LSN is a byte position in the log stream; a record's LSN is its
//!    start, [`Wal::append`] returns its end. Records are 8-aligned.
//! 2. `durable <= written <= filled <= reserved`; `durable` only grows, and
//!    only after every byte below it was written and synced without error.
//! 3. After a failed write or sync nothing is acknowledged any more: the log
//!    is poisoned, never retried.
//! 4. On disk, the valid log is a prefix: the reader stops at the first
//!    invalid record; if a horizon record after it proves that position was
//!    synced, it returns `Error::LogCorruption` instead.
//!
//! The protocol in prose, with its differences from the models (PostgreSQL
//! WAL insertion, InnoDB 8.0 `link_buf`): `docs/protocols/wal-and-group-commit.md`.
//! Byte layouts: `docs/FORMAT.md`.

mod buffer;
#[cfg(test)]
mod buffer_tests;
mod progress;
mod reader;
mod record;
mod segment;
mod writer;

pub use reader::LogEnd;
pub use record::{RecordHeader, RecordType, decode as decode_record, encode as encode_record, record_size};
pub use segment::SegmentHeader;
pub use writer::{Wal, WalStats};

use std::time::Duration;

use crate::Result;
use crate::ids::Lsn;
use crate::io::Dir;
use crate::limits::{
    WAL_BUFFER_SIZE_DEFAULT, WAL_BUFFER_SIZE_MIN, WAL_FLUSH_DELAY_DEFAULT, WAL_SEGMENT_HEADER_SIZE,
    WAL_SEGMENT_SIZE_DEFAULT,
};
use crate::sync::Arc;

/// When an appended record becomes durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// [`Wal::commit`] returns after its record is durable; waiting
    /// committers lead the group flushes themselves.
    Immediate,
    /// [`Wal::commit`] returns at once; the flusher thread makes the record
    /// durable within about `flush_delay` (sooner if someone waits for it
    /// with [`Wal::wait_durable`]).
    Eventual,
}

/// Options of a log.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Segment file size for new logs (an existing log keeps its own):
    /// a multiple of 4096 in `WAL_SEGMENT_SIZE_MIN..=WAL_SEGMENT_SIZE_MAX`.
    pub segment_size: u64,
    /// Log buffer bytes: a power of two `>= WAL_BUFFER_SIZE_MIN`.
    pub buffer_size: usize,
    /// Durability mode.
    pub durability: Durability,
    /// `Eventual`: the bound on the delay; both modes: the quiet time after
    /// which the flusher writes a horizon record on its own.
    pub flush_delay: Duration,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: WAL_SEGMENT_SIZE_DEFAULT,
            buffer_size: WAL_BUFFER_SIZE_DEFAULT,
            durability: Durability::Immediate,
            flush_delay: WAL_FLUSH_DELAY_DEFAULT,
        }
    }
}

impl WalOptions {
    fn segment_payload(&self) -> u64 {
        self.segment_size - WAL_SEGMENT_HEADER_SIZE as u64
    }
}

/// A callback for each record read: `(lsn, kind, payload)`.
pub type OnRecord<'a> = dyn FnMut(Lsn, RecordType, &[u8]) -> Result<()> + 'a;

impl Wal {
    /// Opens (or creates) the log in `dir`: reads every record from the
    /// start of the log, calling `on_record(lsn, kind, payload)` for each in
    /// LSN order (recovery replays them here), finds the end of the valid
    /// log, frees segments past it, stamps a new incarnation and starts the
    /// flusher. `Error::LogCorruption` if synced log is damaged.
    pub fn open(
        dir: Arc<dyn Dir>,
        options: WalOptions,
        on_record: impl FnMut(Lsn, RecordType, &[u8]) -> Result<()>,
    ) -> Result<(Wal, LogEnd)> {
        Wal::open_surveyed(dir, options, None, on_record)
    }

    /// [`Wal::open`], reading the log twice: first with `survey` (e.g. to
    /// find the last checkpoint, so the second pass can skip what it
    /// covers), then with `on_record`.
    pub fn open_surveyed(
        dir: Arc<dyn Dir>,
        mut options: WalOptions,
        survey: Option<&mut OnRecord<'_>>,
        on_record: impl FnMut(Lsn, RecordType, &[u8]) -> Result<()>,
    ) -> Result<(Wal, LogEnd)> {
        if !options.buffer_size.is_power_of_two() || options.buffer_size < WAL_BUFFER_SIZE_MIN {
            return Err(crate::Error::InvalidArgument(format!(
                "WAL buffer size {} must be a power of two >= {WAL_BUFFER_SIZE_MIN}",
                options.buffer_size
            )));
        }
        let mut segments = segment::Segments::open(dir, options.segment_size)?;
        options.segment_size = segments.size();
        // What the last handle wrote may be only in the page cache, read
        // back as if durable: directory entries a killed process never
        // synced, log it never synced, log whose sync failed (Linux forgets
        // the failed writes but reads still return them). Make it durable
        // before the log's end counts as durable and recovery writes pages
        // from it: sync the directory, and write again and sync the log
        // past the last horizon claim (below it, everything was synced
        // without error), before the pass that redoes pages when there is
        // a survey.
        segments.sync_dir()?;
        segments.rewrite_free_headers()?;
        let rewrite_tail =
            |segments: &segment::Segments, end: &LogEnd| segments.rewrite(end.horizon.max(end.start), end.end);
        let mut rewritten = false;
        if let Some(survey) = survey {
            let surveyed = reader::scan(&segments, survey)?;
            rewrite_tail(&segments, &surveyed)?;
            rewritten = true;
        }
        let end = reader::scan(&segments, on_record)?;
        if !rewritten {
            rewrite_tail(&segments, &end)?;
        }
        // Segments holding no byte of the valid log hold only unsynced
        // bytes from before a crash; they are activated afresh.
        segments.free_from(end.end.0.div_ceil(segments.payload()))?;
        segments.stamp()?;
        let wal = Wal::start(segments, end.end, options)?;
        Ok((wal, end))
    }
}
