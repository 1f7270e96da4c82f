//! Vacuum: removes versions no snapshot can see, and every version of
//! dropped keyspaces.
//!
//! Two ways, one rule. For each key visited it removes what
//! [`read::invisible`] names for the horizon (the oldest active snapshot,
//! or the watermark with none): the versions below the newest one at or
//! below the horizon, and that one too if it is a tombstone. Keys of a
//! keyspace dropped at or below the horizon go entirely. Removals go
//! through `BTree::remove`, which frees leaves they empty (page deletion),
//! so the space is reused.
//! * [`pass`] walks the whole tree in batches that end on user-key
//!   boundaries (`Db::vacuum`, and the worker when the backlog asks for
//!   it).
//! * [`step`] (the background worker) removes what the entries of the
//!   [`backlog`](super::backlog) whose commits the horizon has passed
//!   name (each the older versions its commit left, then its tombstone;
//!   why no read is needed is in `backlog`), and sweeps the key range of
//!   each dropped keyspace once. Its work follows the writes, not the size
//!   of the database; a round with entries on most pages walks the tree.
//!
//! Why it is safe while commits run: every version `<= horizon` was applied
//! before the watermark passed it, so no commit adds one behind the pass;
//! versions above the horizon are never removed; a snapshot that begins
//! during the pass begins at or above the horizon (registration and the
//! horizon share the oracle's lock). A key read whole is read without a
//! limit, so a tombstone goes only with everything below it.
//!
//! It also counts the versions it kept only because a snapshot older than
//! the watermark is active (`Counters::pinned`): a pass counts them; a
//! step counts the backlog's entries between the horizon and the
//! watermark (one version each).

use super::backlog::Ready;
use super::encoding::{self, Ts};
use super::{Engine, read};
use crate::Result;
use crate::sync::Ordering;
use std::ops::Bound;

/// Entries a pass reads per batch (then finishes the key it is in).
const BATCH: usize = 512;

/// A round with at least `pages / DENSE_DIVISOR` entries ready walks the
/// whole tree instead (see `step`): a walk loads every page once, entries
/// taken in key order load at most the pages they fall on, but each costs
/// a descent. `docs/BENCHMARKS.md`, "Vacuum".
const DENSE_DIVISOR: u64 = 1;

/// The most backlog entries a close removes (each a descent and a remove
/// or two: about a second past memory); a close with more leaves them to
/// the next open's whole-tree pass.
const CLOSE_DRAIN_MAX: usize = 100_000;

/// What one pass did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Report {
    /// Versions removed.
    pub(crate) removed: u64,
    /// Versions kept only for a snapshot older than the watermark.
    pub(crate) pinned: u64,
    /// Versions read.
    pub(crate) scanned: u64,
}

impl Report {
    /// Adds a finished pass or round to the engine's counters.
    fn count(&self, engine: &Engine) {
        engine.counters.vacuumed.fetch_add(self.removed, Ordering::Relaxed);
        engine.counters.vacuum_passes.fetch_add(1, Ordering::Relaxed);
        engine.counters.vacuum_read.fetch_add(self.scanned, Ordering::Relaxed);
    }

    fn add(&mut self, other: &Report) {
        self.removed += other.removed;
        self.pinned += other.pinned;
        self.scanned += other.scanned;
    }
}

/// One pass over the whole tree; stops early (with what it did so far)
/// once `stop` returns true. A pass that ends covers the backlog up to
/// its horizon and sweeps every dropped keyspace.
pub(crate) fn pass(engine: &Engine, stop: &dyn Fn() -> bool) -> Result<Report> {
    let (_, dropped_count) = engine.backlog.whole_pass_due();
    let horizon = engine.oracle.horizon();
    let watermark = engine.oracle.visible().max(horizon);
    let dropped = engine.dropped_before(horizon);
    // Commits at or below the horizon are all applied: the walk meets
    // their keys. Later ones stay in the backlog.
    drop(engine.backlog.take_ready(horizon));
    let walked = walk(engine, horizon, watermark, &dropped, stop);
    match &walked {
        Ok((report, true)) => {
            engine.backlog.whole_pass_done(dropped_count, horizon);
            for &ks in &dropped {
                engine.mark_swept(ks);
            }
            engine.counters.pinned.store(report.pinned, Ordering::Relaxed);
        }
        // Stopped or failed: what the backlog held up to the horizon is
        // not all visited.
        _ => engine.backlog.give_up(),
    }
    let (report, _) = walked?;
    report.count(engine);
    Ok(report)
}

/// The background worker's round: a whole-tree [`pass`] if the backlog
/// asks for one, else the backlog's keys the horizon has passed and the
/// dropped keyspaces not yet swept. Returns `None` if there was nothing
/// to do.
pub(crate) fn step(engine: &Engine, stop: &dyn Fn() -> bool) -> Result<Option<Report>> {
    let horizon = engine.oracle.horizon();
    // A whole pass is due, but one at this horizon would not cover the
    // entries dropped (a snapshot holds the horizon below their commits):
    // it waits, and rounds go on with the entries that are left.
    if engine.backlog.whole_pass_due().0 && engine.backlog.whole_pass_covers(horizon) {
        return pass(engine, stop).map(Some);
    }
    let watermark = engine.oracle.visible().max(horizon);
    let unswept = engine.unswept_before(horizon);
    let mut ready = engine.backlog.take_ready(horizon);
    if ready.len() as u64 >= engine.tree.pool().page_count() / DENSE_DIVISOR {
        // Left versions on most leaves: one walk (a load per leaf) costs
        // less than a descent per entry (a load per entry, the leaves
        // scattered). The pass covers what `ready` held.
        return pass(engine, stop).map(Some);
    }
    if unswept.is_empty() && ready.len() == 0 {
        engine.counters.pinned.store(engine.backlog.pinned(horizon, watermark), Ordering::Relaxed);
        return Ok(None);
    }
    ready.sort();
    let visited = visit(engine, &ready, &unswept, horizon, stop);
    if !matches!(visited, Ok((_, true))) {
        // The rest of `ready` is lost: a whole pass finds it.
        engine.backlog.give_up();
    }
    let (report, _) = visited?;
    engine.counters.pinned.store(engine.backlog.pinned(horizon, watermark), Ordering::Relaxed);
    report.count(engine);
    Ok(Some(report))
}

/// At a clean close (the worker stopped, no snapshot or transaction
/// left): removes what the backlog's entries name, if it names everything
/// there is (no whole pass due) and holds at most `CLOSE_DRAIN_MAX`
/// entries. Returns whether vacuum then has nothing left (the close
/// records that, and the next open skips its whole-tree pass). Never walks
/// the tree, whose size would then set the time a close takes; dropped
/// keyspaces are left to the next open's rounds (the catalog names them).
pub(crate) fn drain_at_close(engine: &Engine) -> Result<bool> {
    if engine.backlog.whole_pass_due().0 {
        return Ok(false);
    }
    let horizon = engine.oracle.horizon();
    let mut ready = engine.backlog.take_ready(horizon);
    if ready.len() > CLOSE_DRAIN_MAX {
        engine.backlog.give_up();
        return Ok(false);
    }
    ready.sort();
    let visited = visit(engine, &ready, &[], horizon, &|| false);
    if !matches!(visited, Ok((_, true))) {
        engine.backlog.give_up();
    }
    let (report, _) = visited?;
    if ready.len() > 0 {
        report.count(engine);
    }
    Ok(engine.backlog.is_clean())
}

/// Sweeps the dropped keyspaces `unswept`, then removes what each entry
/// of `ready` (sorted) names, reading the keys whose entry has an
/// incomplete list whole at `horizon`. Returns the report and whether it
/// finished.
fn visit(
    engine: &Engine,
    ready: &Ready,
    unswept: &[u32],
    horizon: Ts,
    stop: &dyn Fn() -> bool,
) -> Result<(Report, bool)> {
    let mut report = Report::default();
    for &ks in unswept {
        let lower = Bound::Included(encoding::keyspace_prefix(ks));
        let upper = match ks.checked_add(1) {
            Some(next) => Bound::Excluded(encoding::keyspace_prefix(next)),
            None => Bound::Unbounded,
        };
        let (swept, done) = walk_range(engine, lower, upper, horizon, horizon, &[ks], stop)?;
        report.add(&swept);
        if !done {
            return Ok((report, false));
        }
        engine.mark_swept(ks);
    }
    // Keys visited whole this round (entries with incomplete histories).
    let mut read_whole: Option<&[u8]> = None;
    for entry in ready.iter() {
        if stop() {
            return Ok((report, false));
        }
        if entry.complete {
            // See `backlog`: every version older than the commit's is below
            // a version at or below the horizon, and the commit's own, if
            // a tombstone, goes after them.
            let doomed = entry.older().chain(entry.tombstone.then_some(entry.ts));
            let removal = entry.tombstone.then(|| engine.removals.begin());
            for ts in doomed {
                if engine.tree.remove(&encoding::version_key(entry.prefix, ts))?.is_some() {
                    report.removed += 1;
                }
                if removal.is_some() {
                    failpoint!("vacuum.entry_removed");
                }
            }
            continue;
        }
        if read_whole == Some(entry.prefix) {
            continue;
        }
        read_whole = Some(entry.prefix);
        let versions = read::versions(&engine.tree, entry.prefix, usize::MAX)?;
        report.scanned += versions.len() as u64;
        let removal = read::invisible_tombstone(&versions, horizon, true).then(|| engine.removals.begin());
        for ts in read::invisible(&versions, horizon) {
            if engine.tree.remove(&encoding::version_key(entry.prefix, ts))?.is_some() {
                report.removed += 1;
            }
            if removal.is_some() {
                failpoint!("vacuum.entry_removed");
            }
        }
    }
    Ok((report, true))
}

/// The whole tree, up to its last key as the walk begins: see
/// [`walk_range`]. Call after reading `horizon`.
///
/// Why it may stop there: every version the walk may remove is at or
/// below the horizon, so it was applied before the horizon was read (and
/// every version of a keyspace dropped at or below it), and keys added
/// after the walk began hold only newer versions. Why it must: writers
/// appending keys at the tree's end as fast as the walk reads would keep
/// an unbounded walk from ever finishing (compact's concurrent test held
/// `Db::vacuum` for minutes that way, and the garbage grew to millions of
/// versions meanwhile).
fn walk(
    engine: &Engine,
    horizon: Ts,
    watermark: Ts,
    dropped: &[u32],
    stop: &dyn Fn() -> bool,
) -> Result<(Report, bool)> {
    let Some(last) = engine.tree.range::<&[u8], _>(..).without_overflow().next_back() else {
        return Ok((Report::default(), true));
    };
    let (last, _) = last?;
    walk_range(engine, Bound::Unbounded, Bound::Included(last), horizon, watermark, dropped, stop)
}

/// Removes in `lower..upper` what no snapshot can see at `horizon`, and
/// every version of the keyspaces `dropped`. Returns the report and
/// whether it reached the end of the range (else `stop` ended it).
fn walk_range(
    engine: &Engine,
    mut lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    horizon: Ts,
    watermark: Ts,
    dropped: &[u32],
    stop: &dyn Fn() -> bool,
) -> Result<(Report, bool)> {
    let mut report = Report::default();
    loop {
        if stop() {
            return Ok((report, false));
        }
        let Some((groups, last)) = batch(engine, &lower, &upper)? else { return Ok((report, true)) };
        failpoint!("vacuum.batch");
        for (prefix, versions) in groups {
            report.scanned += versions.len() as u64;
            let sweep = encoding::keyspace_of(&prefix).is_some_and(|ks| dropped.contains(&ks));
            // Counted for a reverse range (`read::Removals`); a dropped
            // keyspace's sweep counts too, to keep the rule simple.
            let _removal =
                (sweep || read::invisible_tombstone(&versions, horizon, true)).then(|| engine.removals.begin());
            let doomed: Vec<Ts> = if sweep {
                // Oldest first, as everywhere: a tombstone never goes
                // before the values it hides (no snapshot that reads the
                // keyspace remains by now; this keeps the rule simple).
                versions.iter().rev().map(|&(ts, _)| ts).collect()
            } else {
                report.pinned += read::invisible(&versions, watermark)
                    .count()
                    .saturating_sub(read::invisible(&versions, horizon).count())
                    as u64;
                read::invisible(&versions, horizon).collect()
            };
            for ts in doomed {
                if engine.tree.remove(&encoding::version_key(&prefix, ts))?.is_some() {
                    report.removed += 1;
                }
                failpoint!("vacuum.removed");
            }
        }
        lower = Bound::Excluded(last);
    }
}

/// The versions of one key: its prefix, then (timestamp, is tombstone),
/// newest first.
type Group = (Vec<u8>, Vec<(Ts, bool)>);

/// Per-key version lists of one batch and the last tree key read, or
/// `None` at the end of the tree.
type Batch = (Vec<Group>, Vec<u8>);

fn batch(engine: &Engine, lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>) -> Result<Option<Batch>> {
    let mut groups: Vec<Group> = Vec::new();
    let mut last = None;
    // Keys and the tombstone flag only: a value in an overflow chain is
    // never a tombstone, and reading every chain would make a pass read
    // the whole database.
    for (taken, entry) in engine.tree.range((lower.clone(), upper.clone())).without_overflow().enumerate() {
        let (key, value) = entry?;
        let (prefix, ts) = encoding::split_version(&key)?;
        let version = (ts, encoding::is_tombstone(&value));
        match groups.last_mut() {
            Some((current, versions)) if current.as_slice() == prefix => versions.push(version),
            _ if taken >= BATCH => break,
            _ => groups.push((prefix.to_vec(), vec![version])),
        }
        last = Some(key);
    }
    Ok(last.map(|last| (groups, last)))
}
