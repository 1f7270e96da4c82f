//! The log writer: concurrent append, group commit with leaders and
//! followers, a background flusher, poisoning.
//!
//! # Who holds what
//! * An appender holds nothing: it reserves `[start, end)` with one
//!   `fetch_add` on `reserved`, waits (parked) only if the ring has no room,
//!   copies its record into the ring with the CRC field zero and publishes
//!   it (`buffer.rs`). It never takes a lock.
//! * The role holder (below) seals each record as its walk of the links
//!   passes it: computes the CRC and stores it into the record's first
//!   word, before the record is copied out (`seal`). The CRC thus costs the
//!   flusher's core, not the appender's, and covers exactly the bytes
//!   written.
//! * The *flushing role* is the `state` mutex (`FlusherState`: `filled`,
//!   the segments written since the last sync, the horizon bookkeeping).
//!   Whoever holds it alone advances `filled`, `written` and `durable` and
//!   touches the segment files (taking the `segments` mutex inside it).
//! * A committer in [`Wal::wait_durable`] either takes the role (leader) or
//!   parks on `durable` while someone else holds it (follower).
//! * The flusher thread takes the role for the background work.
//!
//! # Group commit: leaders and followers
//! A waiter whose LSN is not durable tries the role. As leader it runs one
//! *flush step*: walk the links as far as records are complete; if the last
//! sync is not yet claimed in the log, append a horizon record (`reader.rs`);
//! copy `[written, filled)` out of the ring and `pwrite` it (activating the
//! next segment when the range crosses into it); publish `written` (frees
//! ring room); `fdatasync` every segment written since the last sync;
//! publish `durable`. Then it releases the role and wakes every parked
//! waiter. Followers whose records the step covered return; the others
//! try the role again, so the next leader takes everything appended while
//! the previous sync ran: one sync per group, and a lone committer syncs its
//! own record without a thread hand-off. A leader that made no progress (an
//! earlier reservation is still being copied) yields, then parks until a
//! flush covers its LSN (50 µs at most), and retries.
//!
//! The flusher thread (never on the commit path of a waiting committer)
//! makes everything else durable within `flush_delay` of the last sync
//! (appends nobody waits for, `Eventual` commits), writes the buffer out
//! when appenders wait for room, appends a horizon record after
//! `flush_delay` of quiet, and flushes and claims everything at close
//! (a run of claims reaching `CLOSE_CLAIM_SPAN` past the last record).

//! # Poisoning
//! A failed write or sync is never retried (after a failed `fdatasync`
//! Linux may have dropped the dirty pages and will report the next sync as
//! a success). The role holder records the error, sets `poisoned` and wakes
//! every parked thread; the flusher thread exits. Committers waiting for an
//! LSN above `durable` get `Error::Io` with the failure's kind and message; every later append
//! gets `Error::Poisoned`. Reopening recovers from what is durable.
//!
//! # Memory orderings
//! The progress marks and every wait on them live in `progress.rs` (the
//! part the loom models of `tests/loom_wal.rs` compile); its comments say
//! why each ordering. In short: `reserved` is an `AcqRel` `fetch_add`
//! (uniqueness, and the checkpoint ordering of `buffer::mtr`). `written`,
//! `durable`: release by the role holder, acquire by waiters (a committer
//! that sees `durable >= lsn` sees the sync's effects; an appender that
//! sees `written` knows the copy of the old words is done). A follower
//! parks only while the role is held (checked under the parking bucket's
//! lock) and the holder unparks after releasing it, so no wake-up is lost.
//! An appender that needs room stores `room_wanted`, `fence(SeqCst)`, then
//! checks `flusher_idle` and, under the parking lock, `written`; the
//! flusher going idle stores `flusher_idle`, `fence(SeqCst)`, loads
//! `room_wanted`; the role holder freeing room stores `written`,
//! `fence(SeqCst)`, swaps `room_wanted`. Two Dekker handshakes, so a
//! request for room is never missed and an appender never sleeps through
//! the room it waits for. Whether the record the flusher waits at
//! (`filled`) is complete is not part of the handshake: appenders publish
//! with no fence (a fence per append cost 2.5% of a logged insert), so
//! while room is wanted the flusher parks for `ROOM_POLL` at most.

use std::collections::BTreeMap;
use std::io;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::buffer::LogBuffer;
use super::progress::Progress;
use super::record::{self, RecordType, record_size};
use super::segment::Segments;
use super::{Durability, WalOptions};
use crate::ids::Lsn;
use crate::limits::{LOG_SPACE_RETRY, WAL_RECORD_PAYLOAD_MAX, WAL_WRITE_CHUNK_MAX};
use crate::sync::{Arc, AtomicBool, AtomicU64, Mutex, Ordering, park, unpark_all};
use crate::{Error, Result};

/// Counters of the writer (for benchmarks and tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WalStats {
    /// Successful `fdatasync`s of segment files by the flusher.
    pub syncs: u64,
    /// Batches written (one `write` pass each).
    pub batches: u64,
    /// Log bytes written (records and padding).
    pub bytes_written: u64,
    /// Horizon records appended by the flusher.
    pub horizons: u64,
    /// Segment files created.
    pub segments_created: u64,
    /// Segments activated from the free list (recycled ones and spares
    /// made ahead by the preparer) instead of created on the commit path.
    pub segments_recycled: u64,
}

struct Shared {
    buffer: LogBuffer,
    options: WalOptions,
    incarnation: u32,
    /// The progress marks, the poisoned flag and the hand-offs on them.
    progress: Progress,
    /// The flusher asks the preparer thread for a spare segment.
    spare_wanted: AtomicBool,
    preparer_key: AtomicU64,
    /// Set while the preparer's last try to make a spare segment failed
    /// for want of space: commits are refused while no segment is free
    /// (`Wal::check_space`), and the preparer tries again every
    /// `LOG_SPACE_RETRY`.
    space_short: AtomicBool,
    /// That failure's message.
    space_error: Mutex<String>,
    /// The preparer's tries so far (made or failed).
    spare_attempts: AtomicU64,
    /// `segments.has_spare()` as of the last change of the free segments,
    /// stored under their lock: what `check_space` reads without taking
    /// it (the flusher holds it across its writes).
    spare_ready: AtomicBool,
    failure: Mutex<Option<(io::ErrorKind, String)>>,
    segments: Mutex<Segments>,
    /// The flushing role: whoever holds it (a committer leading a group, or
    /// the flusher thread) writes and syncs.
    state: Mutex<FlusherState>,
    stats: Mutex<WalStats>,
}

/// The write-ahead log. Shared by reference (`&Wal`) between appenders;
/// see the module doc of `wal` for the whole design.
pub struct Wal {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
    preparer: Option<JoinHandle<()>>,
}

/// What the flusher knows across batches.
struct FlusherState {
    filled: Lsn,
    /// First record start of each segment index not yet activated.
    first_records: BTreeMap<u64, Lsn>,
    /// Segment indices written since the last sync.
    touched: Vec<u64>,
    /// Largest durable LSN claimed by a horizon record so far.
    claimed: Lsn,
    /// Where the last horizon record starts and ends.
    horizon_start: Lsn,
    horizon_end: Lsn,
    /// Where this handle's log began: a close that appended nothing adds
    /// no claims.
    opened_at: Lsn,
    /// The close appended its run of claims (`CLOSE_CLAIM_SPAN`): they
    /// need no claim of their own.
    closing: bool,
    staging: Vec<u8>,
    /// One record's bytes while `advance` seals it.
    sealing: Vec<u8>,
    last_sync: Instant,
}

impl Wal {
    /// Starts the writer on opened `segments` whose log ends at `end`.
    pub(super) fn start(segments: Segments, end: Lsn, options: WalOptions) -> Result<Wal> {
        let incarnation = segments.incarnation();
        let mut first_records = BTreeMap::new();
        first_records.insert(end.0 / segments.payload(), end);
        let state = FlusherState {
            filled: end,
            first_records,
            touched: Vec::new(),
            claimed: end,
            horizon_start: end,
            horizon_end: end,
            opened_at: end,
            closing: false,
            staging: Vec::new(),
            sealing: Vec::new(),
            last_sync: Instant::now(),
        };
        let shared = Arc::new(Shared {
            buffer: LogBuffer::new(options.buffer_size),
            options,
            incarnation,
            progress: Progress::new(end),
            spare_wanted: AtomicBool::new(false),
            preparer_key: AtomicU64::new(0),
            space_short: AtomicBool::new(false),
            space_error: Mutex::new(String::new()),
            spare_attempts: AtomicU64::new(0),
            spare_ready: AtomicBool::new(segments.has_spare()),
            failure: Mutex::new(None),
            segments: Mutex::new(segments),
            state: Mutex::new(state),
            stats: Mutex::new(WalStats::default()),
        });
        let flusher_shared = Arc::clone(&shared);
        let flusher = std::thread::Builder::new()
            .name("crabtree-wal-flusher".into())
            .spawn(move || flusher_main(&flusher_shared))?;
        let preparer_shared = Arc::clone(&shared);
        let preparer = std::thread::Builder::new()
            .name("crabtree-wal-preparer".into())
            .spawn(move || preparer_main(&preparer_shared))?;
        Ok(Wal { shared, flusher: Some(flusher), preparer: Some(preparer) })
    }

    /// Appends a record of type `kind` and returns its end LSN: the LSN to
    /// pass to [`Wal::wait_durable`]. Never waits for I/O, only (parked) for
    /// room in the log buffer. `Error::Poisoned` after a failed write or
    /// sync; `Error::InvalidArgument` for a payload over the limit.
    pub fn append(&self, kind: RecordType, payload: &[u8]) -> Result<Lsn> {
        if payload.len() > WAL_RECORD_PAYLOAD_MAX {
            return Err(Error::InvalidArgument(format!(
                "WAL record payload {} bytes, limit {WAL_RECORD_PAYLOAD_MAX}",
                payload.len()
            )));
        }
        if kind.0 == 0 || kind == RecordType::HORIZON {
            return Err(Error::InvalidArgument(format!("WAL record type {} is reserved", kind.0)));
        }
        self.shared.append(kind, payload, false)?.ok_or(Error::Poisoned)
    }

    /// Appends and, in `Immediate` mode, waits until the record is durable.
    pub fn commit(&self, kind: RecordType, payload: &[u8]) -> Result<Lsn> {
        let lsn = self.append(kind, payload)?;
        if self.shared.options.durability == Durability::Immediate {
            self.wait_durable(lsn)?;
        }
        Ok(lsn)
    }

    /// Waits (parked, no spinning) until the log is durable up to `lsn`.
    /// `Ok` only if every byte below `lsn` was synced; if a write or sync
    /// failed first, `Error::Io` with that failure (every waiter gets it).
    ///
    /// Group commit, leader and followers: a waiter that finds the flushing
    /// role free takes it and writes and syncs everything filled so far
    /// (its own record and whatever others appended), then hands the role
    /// back and wakes the others; a waiter that finds it taken parks until
    /// the holder releases it. So one sync serves every commit that arrived
    /// while the previous one ran, and a lone committer syncs its own record
    /// with no thread hand-off.
    pub fn wait_durable(&self, lsn: Lsn) -> Result<()> {
        let shared = &self.shared;
        let progress = &shared.progress;
        // An LSN no append returned (a caller's bug, a page LSN from a
        // damaged file) would be led toward forever: refuse it. Acquire:
        // every LSN an append returned is below what this load sees.
        let reserved = progress.reserved.load(Ordering::Acquire);
        if lsn.0 > reserved && progress.durable() < lsn {
            return Err(Error::InvalidArgument(format!("wait for LSN {} past the end of the log {reserved}", lsn.0)));
        }
        let durable = progress.wait_durable(&shared.state, lsn, |state| {
            let result = flush_step(shared, state, true);
            if let Err(err) = &result {
                // Poison before handing the role on: the next leader must
                // not find `touched` emptied by this failed sync (whose
                // pending writes the kernel may have dropped) and publish
                // `durable` over them with a sync of nothing.
                shared.poison(err);
            }
            result.is_ok()
        });
        if durable { Ok(()) } else { Err(shared.failure_error()) }
    }

    /// `Error::DiskFull` while the log's disk has no room for another
    /// segment and none is free: the preparer's last try to make a spare
    /// failed for want of space, and no checkpoint recycled one since.
    /// Refusing commits then keeps the flusher from needing a segment it
    /// cannot create (that failure would poison the log).
    ///
    /// So that the preparer's answer comes before the current segment is
    /// used up, a caller that finds the log's end past three quarters of
    /// its segment with no spare ready waits for the answer (the preparer
    /// was asked at half, so this is rare): the records appended past the
    /// check, by commits in flight and background work, then have a
    /// quarter of a segment. Cheap otherwise (two relaxed loads).
    pub fn check_space(&self) -> Result<()> {
        let shared = &self.shared;
        let payload = shared.options.segment_payload();
        let mut asked = None;
        loop {
            // Relaxed: advisory, like the pool's (`buffer/space.rs`); the
            // segments' lock orders what matters.
            let short = shared.space_short.load(Ordering::Relaxed);
            let late = shared.progress.reserved.load(Ordering::Relaxed) % payload > payload / 4 * 3;
            if !short && !late {
                return Ok(());
            }
            if shared.spare_ready.load(Ordering::SeqCst) {
                return Ok(());
            }
            if short {
                return Err(Error::DiskFull(shared.space_error.lock().clone()));
            }
            let attempts = shared.spare_attempts.load(Ordering::SeqCst);
            if shared.progress.is_poisoned()
                || shared.progress.shutdown.load(Ordering::SeqCst)
                || asked.is_some_and(|before| attempts > before)
            {
                // Poisoned or closing (the flusher reports it), or the
                // preparer tried since we asked and failed for another
                // reason than space (the flusher meets that too).
                return Ok(());
            }
            asked.get_or_insert(attempts);
            // Late, no spare, no answer yet: ask (again: a request may
            // have met the preparer just as it finished) and wait.
            shared.spare_wanted.store(true, Ordering::SeqCst);
            unpark_all(&shared.preparer_key);
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// The LSN below which the log is durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.progress.durable()
    }

    /// The next LSN to be reserved (the end of the log in memory).
    pub fn end_lsn(&self) -> Lsn {
        Lsn(self.shared.progress.reserved.load(Ordering::Acquire))
    }

    /// Whether a write or sync failed.
    pub fn is_poisoned(&self) -> bool {
        self.shared.progress.is_poisoned()
    }

    /// Poisons the log from outside: a failed write or sync of the data
    /// file makes the database's durable state unknown just as a failed
    /// log sync does. Every waiter gets `err`; nothing is acknowledged any
    /// more.
    pub fn poison(&self, err: &Error) {
        self.shared.poison(err);
    }

    /// The incarnation this handle writes records with.
    pub fn incarnation(&self) -> u32 {
        self.shared.incarnation
    }

    /// Counters so far.
    pub fn stats(&self) -> WalStats {
        let mut stats = *self.shared.stats.lock();
        let segments = self.shared.segments.lock();
        stats.segments_created = segments.created;
        stats.segments_recycled = segments.recycled;
        stats
    }

    /// Recycles the segments that lie wholly below `lsn` (which the caller,
    /// e.g. a checkpoint, no longer needs). Returns how many.
    ///
    /// A failed header write or sync poisons the log, like any failed log
    /// write or sync: the free header may never reach the disk (Linux
    /// drops the dirty page after a failed `fdatasync`), so the segment may
    /// still be live there, and recycling the next one would leave a hole
    /// in the run of live segments that the reader stops at (invariant 6).
    pub fn recycle_below(&self, lsn: Lsn) -> Result<usize> {
        if self.shared.progress.is_poisoned() {
            return Err(self.shared.failure_error());
        }
        let lsn = lsn.min(self.durable_lsn());
        let mut segments = self.shared.segments.lock();
        let result = segments.recycle_below(lsn);
        self.shared.spare_ready.store(segments.has_spare(), Ordering::SeqCst);
        if let Err(err) = &result {
            // Under the segments' lock, so no later recycle runs first.
            self.shared.poison(err);
        }
        result
    }

    /// Flushes and syncs everything appended, appends a final horizon
    /// record so the whole log is covered, stops the flusher. The same
    /// happens on drop, without the error.
    pub fn close(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        let Some(flusher) = self.flusher.take() else { return Ok(()) };
        self.shared.progress.request_shutdown();
        let _ = flusher.join();
        if let Some(preparer) = self.preparer.take() {
            unpark_all(&self.shared.preparer_key);
            let _ = preparer.join();
        }
        if self.shared.progress.is_poisoned() {
            return Err(self.shared.failure_error());
        }
        Ok(())
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

impl Shared {
    fn failure_error(&self) -> Error {
        match &*self.failure.lock() {
            Some((kind, message)) => Error::Io(io::Error::new(*kind, message.clone())),
            None => Error::Poisoned,
        }
    }

    /// Reserves, waits for room, copies and publishes one record. `None`
    /// if poisoned. With `try_only` (the flusher's own horizon records), a
    /// full ring gives `None` instead of a wait.
    fn append(&self, kind: RecordType, payload: &[u8], try_only: bool) -> Result<Option<Lsn>> {
        let progress = &self.progress;
        if progress.is_poisoned() {
            return Ok(None);
        }
        let size = record_size(payload.len()) as u64;
        let capacity = self.buffer.capacity();
        let start = if try_only {
            // The flusher must never wait for room it alone can make.
            let Some(start) = progress.try_reserve(size, capacity) else { return Ok(None) };
            start
        } else {
            progress.reserve(size)
        };
        let end = start + size;
        if !progress.wait_for_room(Lsn(end), capacity) {
            return Ok(None);
        }
        // The CRC is left to the flusher (`advance`): 3.8% of a logged
        // insert on the appender's core (docs/BENCHMARKS.md).
        let header = record::encode_header_unsealed(Lsn(start), kind, self.incarnation, payload.len());
        let mut at = start;
        record::for_each_word(&header, payload, |word| {
            self.buffer.put(at, word);
            at += 8;
        });
        self.buffer.publish(Lsn(start), Lsn(end));
        self.buffer.prefetch(end);
        progress.hint_room();
        Ok(Some(Lsn(end)))
    }

    fn poison(&self, err: &Error) {
        let (kind, message) = match err {
            Error::Io(io) => (io.kind(), io.to_string()),
            other => (io::ErrorKind::Other, other.to_string()),
        };
        // The first failure is the one every waiter reports.
        self.failure.lock().get_or_insert((kind, message));
        self.progress.poison();
    }
}

fn flusher_main(shared: &Shared) {
    if let Err(err) = flusher_loop(shared) {
        shared.poison(&err);
    }
}

/// One step of whoever holds the flushing role: walk the links, add a
/// horizon record if the last sync is unclaimed, write what is filled, and
/// with `sync` make it durable.
fn flush_step(shared: &Shared, state: &mut FlusherState, sync: bool) -> Result<()> {
    // A failed write or sync is never retried or papered over: whoever
    // failed poisoned the log before releasing the role (invariant 3).
    if shared.progress.poisoned.load(Ordering::SeqCst) {
        return Err(shared.failure_error());
    }
    advance(shared, state);
    let written = Lsn(shared.progress.written.load(Ordering::Relaxed));
    let durable = Lsn(shared.progress.durable.load(Ordering::Relaxed));
    if state.filled > written && durable > state.claimed {
        append_horizon(shared, state, durable);
    }
    if state.filled > written {
        write_batch(shared, state, written)?;
    }
    let written = Lsn(shared.progress.written.load(Ordering::Relaxed));
    if sync && written > durable {
        sync_batch(shared, state, written)?;
    }
    Ok(())
}

/// The flusher thread: the background half of group commit. Committers
/// that wait lead their own flushes (`Wal::wait_durable`); this thread
/// makes everything else durable within `flush_delay` of the last sync
/// (appends nobody waits for, `Eventual` commits), writes out the buffer
/// when appenders wait for room, appends a horizon record after
/// `flush_delay` of quiet, and flushes everything at close.
fn flusher_loop(shared: &Shared) -> Result<()> {
    let delay = shared.options.flush_delay;
    loop {
        if shared.progress.poisoned.load(Ordering::SeqCst) {
            // A leader's write or sync failed; it recorded the error.
            return Ok(());
        }
        let shutdown = shared.progress.shutdown.load(Ordering::SeqCst);
        let mut state = shared.state.lock();
        let due = shutdown || state.last_sync.elapsed() >= delay;
        let result = flush_step(shared, &mut state, due);
        if let Err(err) = &result {
            // Under the lock, as in `wait_durable`.
            shared.poison(err);
        }
        let written = Lsn(shared.progress.written.load(Ordering::Relaxed));
        let durable = Lsn(shared.progress.durable.load(Ordering::Relaxed));
        let pending = state.filled > written || written > durable || shared.buffer.next_filled(state.filled).is_some();
        let mut next = Next::Idle;
        if result.is_ok() {
            if shutdown {
                if pending {
                    next = Next::Again;
                } else if state.filled.0 < shared.progress.reserved.load(Ordering::SeqCst) {
                    // An append is still copying: wait for it briefly.
                    next = Next::Pause;
                } else {
                    // The close's claims, all written and synced by the
                    // next step: one sync.
                    let mut appended = horizon_pending(&state, durable) && append_horizon(shared, &mut state, durable);
                    let claim = state.claimed;
                    if !state.closing
                        && claim > state.opened_at
                        && state.horizon_start == claim
                        && state.horizon_end == state.filled
                    {
                        // The log ends with a claim of everything before
                        // it, written by this handle: more of the same
                        // claim, to reach `CLOSE_CLAIM_SPAN` past it.
                        state.closing = true;
                        while state.horizon_start.0 < claim.0 + CLOSE_CLAIM_SPAN
                            && append_horizon(shared, &mut state, claim)
                        {
                            appended = true;
                        }
                    }
                    next = if appended { Next::Again } else { Next::Stop };
                }
            } else if !pending
                && horizon_pending(&state, durable)
                && state.last_sync.elapsed() >= delay
                && append_horizon(shared, &mut state, durable)
            {
                // Quiet for `delay`: claim the last batch too (reader.rs).
                next = Next::Again;
            }
        }
        let deadline =
            if pending || horizon_pending(&state, durable) { state.last_sync + delay } else { Instant::now() + delay };
        let filled = state.filled;
        drop(state);
        shared.progress.wake_committers();
        result?;
        match next {
            Next::Again => {}
            Next::Stop => return Ok(()),
            Next::Pause => std::thread::sleep(Duration::from_micros(50)),
            Next::Idle => shared.progress.idle(|| shared.buffer.filled_at_seqcst(filled), deadline),
        }
    }
}

/// What the flusher thread does after a step.
enum Next {
    Again,
    Pause,
    Idle,
    Stop,
}

/// Walks the links from `filled`, sealing each record it passes (its CRC:
/// appenders leave it zero); records the first record start of every
/// segment boundary crossed.
fn advance(shared: &Shared, state: &mut FlusherState) {
    let payload = shared.options.segment_payload();
    let limit = state.filled.0 + shared.buffer.capacity() / 2;
    while state.filled.0 < limit {
        let Some(end) = shared.buffer.next_filled(state.filled) else { break };
        let start = state.filled.0;
        seal(shared, state, Lsn(start), end);
        if start.is_multiple_of(payload) {
            state.first_records.entry(start / payload).or_insert(Lsn(start));
        }
        // Every boundary strictly inside the record: the first record of
        // that segment starts at `end`.
        let mut boundary = (start / payload + 1) * payload;
        while boundary < end.0 {
            state.first_records.entry(boundary / payload).or_insert(end);
            boundary += payload;
        }
        state.filled = end;
    }
}

/// Computes the CRC of the filled record `[start, end)` and stores it into
/// its first word in the ring. Only the role holder does this, for a record
/// at `filled`, so the record is complete (the link was acquired), no
/// appender writes its words any more (they are below `filled`) and none
/// has been copied out yet (`written <= filled`): the words written to the
/// file are the sealed ones. The role's mutex orders this store before the
/// copy of a later holder (a leader or the flusher thread).
fn seal(shared: &Shared, state: &mut FlusherState, start: Lsn, end: Lsn) {
    let bytes = &mut state.sealing;
    bytes.resize((end.0 - start.0) as usize, 0);
    shared.buffer.copy_out(start, bytes);
    let sealed = record::seal(bytes);
    assert!(sealed.is_some(), "record at {start:?} has a length that does not fit its reservation");
    // Paired with the reader's check: the sealed bytes decode as a record.
    debug_assert!(record::decode(bytes, start).is_some_and(|(header, _)| header.end() == end));
    let first: [u8; 8] = bytes.get(..8).and_then(|word| word.try_into().ok()).unwrap_or_default();
    shared.buffer.put(start.0, u64::from_le_bytes(first));
}

/// Whether durable log is not yet claimed by a horizon record: false once
/// the last horizon record starts exactly at the LSN it claims and nothing
/// follows it (so an idle log does not claim its own claims forever), or
/// once the close's run of claims ends the log.
fn horizon_pending(state: &FlusherState, durable: Lsn) -> bool {
    durable > state.claimed
        && !(durable == state.horizon_end && (state.horizon_start == state.claimed || state.closing))
}

/// How far past the last other record a close's horizon records reach: the
/// last of them starts at least this many bytes after it, so damage to the
/// log's last record that runs on for less (a zeroed sector, a garbage
/// run) leaves a claim past it readable, and the reader reports the
/// damage instead of taking it for a torn tail (`reader.rs`). Found by
/// `tests/wal_crash.rs` (F3): a 64-byte zeroed run from the last record of
/// a closed log into its one closing claim read as a clean end.
const CLOSE_CLAIM_SPAN: u64 = 512;

/// Appends a horizon record claiming `durable`; false if it could not
/// (poisoned, or no room in the buffer: a later batch claims it).
fn append_horizon(shared: &Shared, state: &mut FlusherState, durable: Lsn) -> bool {
    if let Ok(Some(end)) = shared.append(RecordType::HORIZON, &record::horizon_payload(durable), true) {
        state.claimed = durable;
        state.horizon_start = Lsn(end.0 - record_size(8) as u64);
        state.horizon_end = end;
        shared.stats.lock().horizons += 1;
        advance(shared, state);
        return true;
    }
    false
}

/// Writes `[written, filled)` to the segment files and publishes `written`.
fn write_batch(shared: &Shared, state: &mut FlusherState, written: Lsn) -> Result<()> {
    failpoint!("wal.before_write");
    let mut segments = shared.segments.lock();
    let mut at = written;
    while at < state.filled {
        let (index, offset) = segments.locate(at);
        if segments.live(index).is_none() {
            let first = state.first_records.get(&index).copied().unwrap_or(at);
            let activated = segments.activate(index, first).map(|_| ());
            shared.spare_ready.store(segments.has_spare(), Ordering::SeqCst);
            activated?;
        }
        state.first_records.retain(|&k, _| k > index);
        let room = segments.size() - offset;
        let len = (state.filled.0 - at.0).min(room).min(WAL_WRITE_CHUNK_MAX as u64) as usize;
        state.staging.resize(len, 0);
        shared.buffer.copy_out(at, &mut state.staging);
        let segment = segments.live(index).ok_or_else(|| Error::InvalidArgument("segment vanished".into()))?;
        segment.storage.write_at(offset, &state.staging)?;
        if state.touched.last() != Some(&index) {
            state.touched.push(index);
        }
        at = Lsn(at.0 + len as u64);
    }
    drop(segments);
    {
        let mut stats = shared.stats.lock();
        stats.batches += 1;
        stats.bytes_written += state.filled.0 - written.0;
    }
    shared.progress.publish_written(state.filled);
    Ok(())
}

/// Syncs every segment written since the last sync, publishes `durable`.
fn sync_batch(shared: &Shared, state: &mut FlusherState, written: Lsn) -> Result<()> {
    failpoint!("wal.before_sync");
    {
        let segments = shared.segments.lock();
        for index in state.touched.drain(..) {
            if let Some(segment) = segments.live(index) {
                segment.storage.sync()?;
                shared.stats.lock().syncs += 1;
            }
        }
    }
    failpoint!("wal.after_sync");
    state.last_sync = Instant::now();
    shared.progress.publish_durable(written);
    // A spare segment, made off the commit path by the preparer thread,
    // so a switch rarely creates one.
    let payload = shared.options.segment_payload();
    if written.0 % payload > payload / 2
        && !shared.spare_wanted.load(Ordering::Relaxed)
        && !shared.segments.lock().has_spare()
    {
        shared.spare_wanted.store(true, Ordering::SeqCst);
        unpark_all(&shared.preparer_key);
    }
    Ok(())
}

/// The preparer thread: creates a spare segment (zero-fill, sync, directory
/// sync) whenever the flusher asks, holding the segments' lock only to
/// reserve a slot and to hand the file over. A failure is left for the
/// flusher to meet (it creates the segment itself when it must); one for
/// want of space also makes `Wal::check_space` refuse commits until a
/// later try (every `LOG_SPACE_RETRY`) or a checkpoint's recycling gives
/// a free segment.
fn preparer_main(shared: &Shared) {
    loop {
        let idle = || !shared.spare_wanted.load(Ordering::SeqCst) && !shared.progress.shutdown.load(Ordering::SeqCst);
        if shared.space_short.load(Ordering::SeqCst) {
            // The disk was full: try again after a while, asked or not,
            // so commits resume once space is freed.
            crate::sync::park_until(&shared.preparer_key, idle, Instant::now() + LOG_SPACE_RETRY);
        } else {
            park(&shared.preparer_key, idle);
        }
        if shared.progress.shutdown.load(Ordering::SeqCst) || shared.progress.poisoned.load(Ordering::SeqCst) {
            return;
        }
        // Before looking: a request made from here on gets another turn.
        shared.spare_wanted.store(false, Ordering::SeqCst);
        let plan = {
            let mut segments = shared.segments.lock();
            if segments.has_spare() { None } else { Some(segments.plan_spare()) }
        };
        // Only a file made whole ends a shortage: a free segment a
        // checkpoint recycled is used up by the next switch, and then the
        // disk is as full as before (commits are let through while one is
        // free: `Wal::check_space`).
        if let Some(plan) = plan {
            failpoint!("wal.preparer_create", ignore);
            match plan.create() {
                Ok(segment) => {
                    let mut segments = shared.segments.lock();
                    segments.add_spare(segment);
                    shared.spare_ready.store(true, Ordering::SeqCst);
                    drop(segments);
                    shared.space_short.store(false, Ordering::SeqCst);
                }
                Err(error) => {
                    // Its slot is reused by the next attempt.
                    shared.segments.lock().spare_failed(plan);
                    if crate::buffer::is_space_error(&error) {
                        *shared.space_error.lock() = format!("making a log segment: {error}");
                        shared.space_short.store(true, Ordering::SeqCst);
                    }
                }
            }
        }
        shared.spare_attempts.fetch_add(1, Ordering::SeqCst);
    }
}
