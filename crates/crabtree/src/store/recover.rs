//! Recovery: redo the log into the data file and rebuild the allocator.
//!
//! Runs on open, before the pool exists, on the data file directly:
//!
//! 1. **Scan** every record from the oldest live log segment, in LSN order
//!    (`wal::reader` stops at the first invalid record, telling a torn tail
//!    from damaged synced log). Each page named by a mini-transaction is
//!    read once into a private map; a page that fails its checksum (a torn
//!    write) or lies past the end of the file is *unknown*.
//! 2. **Redo** each page entry whose record ends above the page's LSN
//!    (idempotent: a page already on disk with the change is skipped), and
//!    every full-page image whatever the page's LSN: what a read returns
//!    may be a write that a failed `fdatasync` never made durable (the
//!    page cache keeps it after the failure), so every page changed since
//!    the redo start is rewritten and synced by recovery, as PostgreSQL
//!    restores every full-page image. An
//!    unknown page takes only an image, after which it is known; logical
//!    entries before its first image are skipped (the image that follows
//!    contains them). An unknown page that got a logical entry and no image
//!    after it cannot be rebuilt: `Error::Corruption`.
//! 3. **Allocator**: the last complete checkpoint's snapshot (page count,
//!    roots, free pages) taken at log position `A`, then every record ending
//!    after `A` in order: a page entry makes its page used, `Free` makes it
//!    free, `SetRoot` sets a slot, and the page count covers every id named.
//!    Ids past the snapshot's page count that no record names were handed
//!    out by an allocation whose first record never reached the log: free.
//! 4. **Write** the redone pages, sync the data file.
//!
//! Memory is bounded: past the pool's budget of held pages, the redone
//! pages are written and forgotten (a later entry reads them back with
//! their new LSN). Each page on disk then holds a prefix of its own log,
//! stamped with its LSN, so recovery that fails (damaged log, an I/O
//! error) or crashes can run again with the same result.

use crate::buffer::{AllocState, CheckpointRecord, TruncateRecord, decode_free_chunk};
use crate::ids::{Lsn, PageId};
use crate::io::{Dir, Storage};
use crate::page::header;
use crate::page::meta::{Meta, ROOT_SLOTS};
use crate::page::redo::{self, Entry};
use crate::sync::Arc;
use crate::wal::{RecordType, Wal, WalOptions, record_size};
use crate::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Records read (horizon records not counted).
    pub records: u64,
    /// Log bytes read.
    pub log_bytes: u64,
    /// Page entries applied.
    pub entries_applied: u64,
    /// Page entries skipped (already on the page).
    pub entries_skipped: u64,
    /// Pages written back.
    pub pages_written: u64,
    /// Pages found torn (or missing) and rebuilt from an image.
    pub pages_rebuilt: u64,
    /// Where the log ended.
    pub end: Lsn,
    /// Redo start of the last complete checkpoint (zero if none).
    pub checkpoint_redo: Lsn,
    /// Time spent (both log passes, redo and write-back; not the tree's
    /// repair, which runs after, in the background).
    pub duration: Duration,
    /// Of `duration`, the first pass over the log (finding the last
    /// checkpoint).
    pub survey: Duration,
    /// Splits the crash interrupted, finished after redo.
    pub splits_finished: u64,
    /// Page deletions the crash interrupted, finished after redo.
    pub deletions_finished: u64,
    /// The log ends with a clean close, or the store was created by this
    /// open: nothing to finish or recount.
    pub clean: bool,
}

/// A page recovery holds.
struct Page {
    image: Vec<u8>,
    /// Read intact (or rebuilt from an image).
    known: bool,
    /// Was torn or missing when read.
    was_unknown: bool,
    /// A logical entry was skipped while unknown, at this LSN.
    skipped_at: Option<Lsn>,
    /// Why an entry could not be applied to the page as read, if one failed.
    failure: Option<String>,
    changed: bool,
    /// The LSN the page had on disk when read (zero if unknown): a page
    /// newer than the end of the log means the log lost records, also
    /// when an image restored since hides it.
    read_lsn: Lsn,
}

/// A commit record of the layer above found in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredCommit {
    /// Where its first log record starts (keep the log from here until
    /// it is re-applied).
    pub start: Lsn,
    /// Where its last log record ends.
    pub end: Lsn,
    /// The record's bytes (a chained record's pieces joined).
    pub payload: Vec<u8>,
}

/// The outcome of recovery.
pub(crate) struct Recovered {
    pub wal: Wal,
    pub state: AllocState,
    pub page_size: usize,
    pub report: RecoveryReport,
    /// Commit records of the layer above ending after the last
    /// checkpoint's `retain` LSN, in log order of their ends.
    pub commits: Vec<RecoveredCommit>,
    /// Id of the last complete checkpoint (new ones count on from it).
    pub checkpoint_id: u64,
}

/// Whether this data file and log hold nothing yet.
pub(crate) fn is_new(data: &dyn Storage, log: &dyn Dir) -> Result<bool> {
    if !data.is_empty()? {
        return Ok(false);
    }
    let segments = log.list()?.into_iter().filter(|name| name.ends_with(".wal")).count();
    if segments > 0 {
        // The data file's header is synced before the log is created, so a
        // log beside an empty data file is not ours to overwrite.
        return Err(Error::InvalidArgument("the data file is empty but a log exists beside it".into()));
    }
    Ok(true)
}

/// Redoes the log in `log` into `data` (module doc) and opens the log for
/// appending.
pub(crate) fn recover(
    data: &Arc<dyn Storage>,
    log: Arc<dyn Dir>,
    options: WalOptions,
    memory: usize,
    max_pages: u64,
) -> Result<Recovered> {
    let started = Instant::now();
    let meta = read_meta(&**data)?;
    if meta.free_head.is_some() {
        return Err(Error::InvalidArgument(
            "the file was flushed without a log (free-list trunks in its header); open it with BTree::open".into(),
        ));
    }
    let page_size = meta.page_size;
    let mut file_pages = data.len()? / page_size as u64;
    // Pages held at once: the pool's budget (recovery runs before the
    // pool exists).
    let held_max = (memory / page_size).max(64);
    let mut pages: HashMap<PageId, Page> = HashMap::new();
    let mut events: HashMap<PageId, (Lsn, bool)> = HashMap::new();
    let mut root_events: Vec<(Lsn, u8, u64)> = Vec::new();
    // `TRUNCATE` records (`buffer::compact`): (record end, new page count).
    let mut truncations: Vec<(Lsn, u64)> = Vec::new();
    let mut checkpoint: Option<(CheckpointRecord, Vec<PageId>, bool, Lsn)> = None;
    let mut chunk: (u64, Vec<PageId>) = (0, Vec::new());
    let mut commits: Vec<RecoveredCommit> = Vec::new();
    // Chained commit records whose end has not been read yet, by id.
    let mut chains: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut first_lsn: Option<Lsn> = None;
    let mut report = RecoveryReport::default();
    let mut read_error: Option<Error> = None;
    // First pass: the redo start of the last checkpoint. Page entries of
    // records before it are on disk already (that checkpoint wrote every
    // page they changed and synced; a page changed again later logs its
    // image at or after it), so the second pass skips them without reading
    // their pages; it still reads their allocator events and commits.
    let redo_start = std::cell::Cell::new(Lsn::ZERO);
    let mut survey = |lsn: Lsn, kind: RecordType, payload: &[u8]| {
        if kind == RecordType::CHECKPOINT
            && let Ok(record) = CheckpointRecord::decode(payload, lsn)
        {
            redo_start.set(record.redo);
        }
        Ok(())
    };
    let (wal, end) = Wal::open_surveyed(log, options, Some(&mut survey), |lsn, kind, payload| {
        let end = Lsn(lsn.0 + record_size(payload.len()) as u64);
        if first_lsn.is_none() {
            report.survey = started.elapsed();
        }
        let first_lsn = *first_lsn.get_or_insert(lsn);
        report.log_bytes += record_size(payload.len()) as u64;
        // Any record but the flusher's horizons (not passed here) after a
        // clean-close marker means the store was used again.
        report.clean = kind == RecordType::CLEAN_CLOSE;
        match kind {
            RecordType::MTR => {
                for entry in redo::decode(payload, lsn) {
                    let entry = entry?;
                    match entry {
                        Entry::Free { pid } => {
                            events.insert(pid, (end, false));
                        }
                        Entry::SetRoot { slot, value } => root_events.push((end, slot, value)),
                        Entry::Claim { pid } => {
                            events.insert(pid, (end, true));
                        }
                        _ => {
                            let Some(pid) = entry.page() else { continue };
                            if pid.0 == 0 {
                                return Err(Error::LogCorruption { lsn, reason: "redo entry for page 0".into() });
                            }
                            // Before the page is redone and written at
                            // `pid * page_size`: the allocator check after
                            // redo does not see entries its checkpoint
                            // covers, and the pool refuses pages past
                            // `max_pages` anyway.
                            if pid.0 >= max_pages {
                                return Err(Error::InvalidArgument(format!(
                                    "recovery: the log names page {}, past max_pages {max_pages} (raise max_pages, or the log is damaged)",
                                    pid.0
                                )));
                            }
                            if !matches!(entry, Entry::Image { provisional: true, .. }) {
                                events.insert(pid, (end, true));
                            }
                            if lsn < redo_start.get() {
                                report.entries_skipped += 1;
                                continue;
                            }
                            let page = match pages.entry(pid) {
                                std::collections::hash_map::Entry::Occupied(slot) => slot.into_mut(),
                                std::collections::hash_map::Entry::Vacant(slot) => {
                                    match load(&**data, pid, page_size, file_pages) {
                                        Ok(page) => slot.insert(page),
                                        Err(error) => {
                                            read_error = Some(error);
                                            return Err(Error::Poisoned);
                                        }
                                    }
                                }
                            };
                            apply(page, &entry, end, &mut report)?;
                            if pages.len() > held_max {
                                let spilled =
                                    spill(&**data, &mut pages, page_size, &mut report).and_then(|()| data.len());
                                match spilled {
                                    // Pages written past the old end exist now.
                                    Ok(len) => file_pages = len / page_size as u64,
                                    Err(error) => {
                                        read_error = Some(error);
                                        return Err(Error::Poisoned);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            RecordType::CHECKPOINT_FREE => {
                let (id, ids) = decode_free_chunk(payload, lsn)?;
                if id != chunk.0 {
                    chunk = (id, Vec::new());
                }
                chunk.1.extend(ids);
            }
            RecordType::CHECKPOINT_BEGIN => chunk = (0, Vec::new()),
            RecordType::TRUNCATE => truncations.push((end, TruncateRecord::decode(payload, lsn)?.new_count)),
            RecordType::CHECKPOINT => {
                let record = CheckpointRecord::decode(payload, lsn)?;
                // The free list of this checkpoint follows its begin record
                // (checkpoints never interleave); anything else is stale.
                let (id, ids) = std::mem::take(&mut chunk);
                let free = if id == record.id { ids } else { Vec::new() };
                // The free list of a checkpoint that is not the last may lie
                // in a recycled segment (the next checkpoint recycles below
                // its own redo start); the last one's never does.
                let complete = free.len() as u64 == record.free_count;
                commits.retain(|commit| commit.end > record.retain);
                checkpoint = Some((record, free, complete, lsn));
            }
            RecordType::COMMIT => commits.push(RecoveredCommit { start: lsn, end, payload: payload.to_vec() }),
            RecordType::COMMIT_PART | RecordType::COMMIT_END => {
                let chain_error = |reason: &str| Error::LogCorruption { lsn, reason: reason.into() };
                let (id, bytes) = payload.split_first_chunk::<8>().ok_or_else(|| chain_error("short commit piece"))?;
                let id = u64::from_le_bytes(*id);
                if id == u64::MAX {
                    if kind == RecordType::COMMIT_END {
                        return Err(chain_error("a commit chain that ends where it starts"));
                    }
                    chains.insert(lsn.0, bytes.to_vec());
                    return Ok(());
                }
                let Some(joined) = chains.get_mut(&id) else {
                    if id < first_lsn.0 {
                        // The chain began in a segment a checkpoint
                        // recycled, which it does only once the commit
                        // is applied and covered (its retain hook kept
                        // the log from the chain's start until then).
                        return Ok(());
                    }
                    return Err(chain_error("a commit piece whose chain start is not in the log"));
                };
                joined.extend_from_slice(bytes);
                if kind == RecordType::COMMIT_END {
                    let payload = chains.remove(&id).unwrap_or_default();
                    commits.push(RecoveredCommit { start: Lsn(id), end, payload });
                }
            }
            _ => {}
        }
        Ok(())
    })
    .map_err(|error| read_error.take().unwrap_or(error))?;
    // A store's pages past the header's page count exist only in the log's
    // terms (its first page write waits for durable log): beside a log
    // with nothing in it, they belong to a log that was lost, and a new
    // log would start a new, empty tree over them.
    if end.end == Lsn::ZERO && data.len()? > meta.page_count.saturating_mul(page_size as u64) {
        return Err(Error::InvalidArgument(
            "the data file has pages but the log beside it is empty (segments deleted?): its pages cannot be trusted without it"
                .into(),
        ));
    }
    // Without a checkpoint the allocator starts from the header page,
    // which describes the store at its creation: right only if the log
    // still holds every record since then. A log whose older segments were
    // recycled (it starts past LSN 0) always holds the checkpoint that
    // allowed it; none complete means its records were damaged or lost
    // (the tail read as torn), and the header's state would open an empty
    // tree over the pages.
    if checkpoint.is_none() && end.start > Lsn::ZERO {
        return Err(Error::LogCorruption {
            lsn: end.start,
            reason: "the log starts past its beginning (older segments recycled) but holds no checkpoint: \
                     its last records were damaged or lost"
                .into(),
        });
    }
    report.records = end.records;
    report.end = end.end;
    for (pid, page) in &pages {
        if (page.known && header::lsn(page.image.as_slice()) > end.end) || page.read_lsn > end.end {
            return Err(Error::corruption(*pid, "page is newer than the end of the log (log lost or damaged)"));
        }
    }
    // Step 3.
    let checkpoint_id = checkpoint.as_ref().map_or(0, |(record, ..)| record.id);
    let (base, alloc_lsn) = match checkpoint {
        Some((_, _, false, lsn)) => {
            return Err(Error::LogCorruption { lsn, reason: "the last checkpoint's free list is incomplete".into() });
        }
        Some((record, free, true, _)) => {
            report.checkpoint_redo = record.redo;
            (AllocState { page_count: record.page_count, roots: record.roots, free }, record.alloc)
        }
        None => (AllocState { page_count: meta.page_count, roots: meta.roots, free: Vec::new() }, Lsn::ZERO),
    };
    // A page the log leaves in use that the redo could not rebuild fails
    // the check after `rebuild_alloc`; say so before it, for its cost
    // grows with the highest id the log names (a damaged record naming a
    // page near `max_pages` made it list 16M ids as free first: 6 s here,
    // `fuzz_regressions`).
    for (pid, &(lsn, used)) in &events {
        if used
            && lsn > alloc_lsn
            && let Some(page) = pages.get(pid)
            && let (false, Some(at)) = (page.known, page.skipped_at)
        {
            return Err(cannot_rebuild(*pid, page.failure.as_deref(), at));
        }
    }
    let cut = truncations.iter().rev().find(|&&(lsn, _)| lsn > alloc_lsn).copied();
    let state = rebuild_alloc(base, alloc_lsn, cut, &events, &root_events, max_pages)?;
    // Pages past the recovered count were cut by a `TRUNCATE` (they were
    // free): their redone images, if any, must not extend the file again.
    pages.retain(|pid, _| pid.0 < state.page_count);
    // Step 2's last check, now that it is known which pages are free:
    // a page left unknown (torn, missing, or stale: see `apply`) must be
    // free; one in use cannot be rebuilt.
    let free_now: HashSet<PageId> = state.free.iter().copied().collect();
    for (pid, page) in &pages {
        if let (false, Some(at)) = (page.known, page.skipped_at)
            && !free_now.contains(pid)
        {
            return Err(cannot_rebuild(*pid, page.failure.as_deref(), at));
        }
    }
    // A page past the end of the file is fine only if it is free or the
    // redo just rebuilt it (a truncated file is refused before any write).
    let free = free_now;
    let file_pages = data.len()? / page_size as u64;
    for id in file_pages..state.page_count {
        let pid = PageId(id);
        if !free.contains(&pid) && !pages.get(&pid).is_some_and(|page| page.known) {
            return Err(Error::corruption(
                pid,
                format!("page lies past the end of the file ({file_pages} pages): truncated?"),
            ));
        }
    }
    // Step 4.
    write_changed(&**data, &mut pages, page_size, &mut report)?;
    // Redo of a truncation: the crash may have come before its `set_len`
    // reached the disk, or a spill above may have written a cut page.
    // Only past the recovered count, so idempotent.
    let keep = state.page_count.saturating_mul(page_size as u64);
    if !truncations.is_empty() && data.len()? > keep {
        data.set_len(keep)?;
    }
    data.sync()?;
    report.duration = started.elapsed();
    Ok(Recovered { wal, state, page_size, report, commits, checkpoint_id })
}

/// Writes every changed page in page order (marking it unchanged).
fn write_changed(
    data: &dyn Storage,
    pages: &mut HashMap<PageId, Page>,
    page_size: usize,
    report: &mut RecoveryReport,
) -> Result<()> {
    let mut order: Vec<(&PageId, &mut Page)> = pages.iter_mut().filter(|(_, p)| p.changed).collect();
    order.sort_unstable_by_key(|(pid, _)| **pid);
    for (pid, page) in order {
        header::seal(&mut page.image);
        data.write_at(pid.0 * page_size as u64, &page.image)?;
        page.changed = false;
        report.pages_written += 1;
        report.pages_rebuilt += u64::from(page.was_unknown);
        page.was_unknown = false;
    }
    Ok(())
}

/// Bounds recovery's memory: writes the changed pages and forgets every
/// known one (a later entry reads it back, with the LSN written). Unknown
/// pages stay: only an image can make them known. Writing redone pages
/// before the whole log is read keeps recovery idempotent (each page holds
/// a prefix of its log, stamped with its LSN); if the log turns out
/// damaged further on, the open fails all the same.
fn spill(
    data: &dyn Storage,
    pages: &mut HashMap<PageId, Page>,
    page_size: usize,
    report: &mut RecoveryReport,
) -> Result<()> {
    write_changed(data, pages, page_size, report)?;
    pages.retain(|_, page| !page.known);
    Ok(())
}

pub(crate) fn read_meta(data: &dyn Storage) -> Result<Meta> {
    let short = |error: Error, what: &str| match error {
        Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => Error::corruption(PageId::HEADER, what),
        other => other,
    };
    let mut prefix = vec![0u8; crate::page::meta::META_SIZE];
    data.read_at(0, &mut prefix).map_err(|e| short(e, "header page missing: not a crabtree file"))?;
    let page_size = Meta::peek_page_size(&prefix)?;
    let mut image = vec![0u8; page_size];
    data.read_at(0, &mut image).map_err(|e| short(e, "header page cut short"))?;
    Meta::decode(&image)
}

/// Reads `pid` for redo: known if intact, unknown (zeroed) if torn or past
/// the end of the file. Errors: I/O.
fn load(data: &dyn Storage, pid: PageId, page_size: usize, file_pages: u64) -> Result<Page> {
    let mut image = vec![0u8; page_size];
    let known = if pid.0 < file_pages {
        data.read_at(pid.0 * page_size as u64, &mut image)?;
        header::verify(&image, pid).is_ok()
    } else {
        false
    };
    if !known {
        image.fill(0);
    }
    let read_lsn = if known { header::lsn(image.as_slice()) } else { Lsn::ZERO };
    Ok(Page { image, known, was_unknown: !known, skipped_at: None, failure: None, changed: false, read_lsn })
}

fn apply(page: &mut Page, entry: &Entry<'_>, end: Lsn, report: &mut RecoveryReport) -> Result<()> {
    let image = matches!(entry, Entry::Image { .. });
    if !page.known {
        if !image {
            page.skipped_at = Some(end);
            report.entries_skipped += 1;
            return Ok(());
        }
        page.known = true;
        page.skipped_at = None;
    } else if !image && header::lsn(page.image.as_slice()) >= end {
        // A full-page image is applied whatever the page's LSN: after a
        // failed data sync (Linux semantics) the page cache may show a
        // write the disk never got, with its LSN; restoring the image makes
        // the page changed, so recovery writes and syncs it again.
        report.entries_skipped += 1;
        return Ok(());
    }
    if let Err(error) = redo::apply(entry, &mut page.image, end) {
        // The page on disk is not the page this entry was logged against:
        // a page freed without being written back (its last contents are
        // dead, so they never reach the disk) keeps an older image, of
        // another kind even, and the log still holds entries of its last
        // life. Such a page ends free, or is reallocated by a later image.
        // Treat it like a torn page; one that ends in use without an image
        // is corruption (checked after the allocator is rebuilt).
        page.known = false;
        page.skipped_at = Some(end);
        page.failure = Some(error.to_string());
        report.entries_skipped += 1;
        return Ok(());
    }
    page.changed = true;
    report.entries_applied += 1;
    Ok(())
}

/// The error for page `pid`, in use, which the redo could not rebuild
/// (`failure`, or torn or missing) and of which the log has no image after
/// `at`.
fn cannot_rebuild(pid: PageId, failure: Option<&str>, at: Lsn) -> Error {
    let why = failure.unwrap_or("torn or missing");
    Error::corruption(
        pid,
        format!("page in use cannot be rebuilt: {why}, and the log has no image of it after LSN {}", at.0),
    )
}

/// Step 3 of the module doc.
///
/// `cut`: the last `TRUNCATE` record ending after `after` (its end, the
/// new page count). Only the last one matters: every page a truncation
/// cuts is free, so an earlier cut page is free by the events before the
/// last cut or unnamed after it. Pages at or past the cut's count whose
/// last event comes before it are gone; the count grows again only with
/// events after it.
fn rebuild_alloc(
    base: AllocState,
    after: Lsn,
    cut: Option<(Lsn, u64)>,
    events: &HashMap<PageId, (Lsn, bool)>,
    root_events: &[(Lsn, u8, u64)],
    max_pages: u64,
) -> Result<AllocState> {
    let mut free: HashSet<PageId> = base.free.iter().copied().collect();
    if free.len() != base.free.len() {
        return Err(Error::corruption(PageId::HEADER, "checkpoint lists a free page twice"));
    }
    let mut page_count = base.page_count;
    if let Some((_, count)) = cut {
        free.retain(|pid| pid.0 < count);
        page_count = count;
    }
    let start_count = page_count;
    let mut named = HashSet::new();
    for (&pid, &(lsn, used)) in events {
        if lsn <= after {
            continue;
        }
        if let Some((cut_lsn, count)) = cut
            && lsn <= cut_lsn
            && pid.0 >= count
        {
            if used {
                return Err(Error::corruption(pid, "the log truncates a page it last named in use"));
            }
            continue;
        }
        named.insert(pid);
        page_count = page_count.max(pid.0 + 1);
        if used {
            free.remove(&pid);
        } else {
            free.insert(pid);
        }
    }
    if page_count > crate::limits::MAX_PAGES_LIMIT {
        return Err(Error::corruption(PageId::HEADER, format!("log names page {} past any file", page_count - 1)));
    }
    // Before the loops below, which take time and memory per id up to the
    // page count: a damaged log (or checkpoint) can name any page, and the
    // pool refuses a page count past `max_pages` anyway (`open_recovered`).
    if page_count > max_pages {
        return Err(Error::InvalidArgument(format!(
            "recovery: the log or its checkpoint names page {}, past max_pages {max_pages} (raise max_pages, or the log is damaged)",
            page_count - 1
        )));
    }
    // Free ids at the end of the id space need not exist: the count ends
    // after the last page in use (or at the snapshot's or the cut's
    // count). Otherwise one damaged record freeing a page near
    // `max_pages` puts every id below it on the free list as allocated and
    // never logged: 16M ids, 40 s and 1.4 GB with the defaults
    // (`fuzz_regressions`).
    let in_use_end = named.iter().filter(|pid| !free.contains(*pid)).map(|pid| pid.0 + 1).max().unwrap_or(0);
    let trimmed = page_count.min(start_count.max(in_use_end));
    if trimmed < page_count {
        free.retain(|pid| pid.0 < trimmed);
        named.retain(|pid| pid.0 < trimmed);
        page_count = trimmed;
    }
    // Ids no record names since the snapshot (or, after a cut, since the
    // cut) were handed out by allocations never logged: free.
    for id in base.page_count.min(start_count)..page_count {
        if !named.contains(&PageId(id)) {
            free.insert(PageId(id));
        }
    }
    let mut roots = base.roots;
    for &(lsn, slot, value) in root_events {
        if lsn > after {
            let slot = usize::from(slot);
            if slot >= ROOT_SLOTS || value >= page_count {
                return Err(Error::corruption(PageId::HEADER, format!("logged root slot {slot} = {value} invalid")));
            }
            roots[slot] = value;
        }
    }
    let mut free: Vec<PageId> = free.into_iter().collect();
    free.sort_unstable();
    // Reuse the lowest ids first (the pool's stack pops from the back).
    free.reverse();
    Ok(AllocState { page_count, roots, free })
}
