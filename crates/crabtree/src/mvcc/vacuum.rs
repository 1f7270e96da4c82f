//! Vacuum: removes versions no snapshot can see, and every version of
//! dropped keyspaces.
//!
//! A pass walks the whole tree in batches that end on user-key boundaries.
//! For each key it removes what [`read::invisible`] names for the horizon
//! (the oldest active snapshot, or the watermark with none): the versions
//! below the newest one at or below the horizon, and that one too if it is
//! a tombstone. Keys of a keyspace dropped at or below the horizon go
//! entirely. Removals go through `BTree::remove`, which frees leaves they
//! empty (page deletion), so the space is reused.
//!
//! Why it is safe while commits run: every version `<= horizon` was applied
//! before the watermark passed it, so no commit adds one behind the pass;
//! versions above the horizon are never removed; a snapshot that begins
//! during the pass begins at or above the horizon (registration and the
//! horizon share the oracle's lock).
//!
//! It also counts the versions it kept only because a snapshot older than
//! the watermark is active (`Counters::pinned`).

use super::encoding::{self, Ts};
use super::{Engine, read};
use crate::Result;
use crate::sync::Ordering;
use std::ops::Bound;

/// Entries a pass reads per batch (then finishes the key it is in).
const BATCH: usize = 512;

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

/// One pass over the whole tree; stops early (with what it did so far)
/// once `stop` returns true.
pub(crate) fn pass(engine: &Engine, stop: &dyn Fn() -> bool) -> Result<Report> {
    let horizon = engine.oracle.horizon();
    let watermark = engine.oracle.visible().max(horizon);
    let dropped = engine.dropped_before(horizon);
    let mut report = Report::default();
    let mut lower: Bound<Vec<u8>> = Bound::Unbounded;
    loop {
        if stop() {
            break;
        }
        let Some((groups, last)) = batch(engine, &lower)? else { break };
        for (prefix, versions) in groups {
            report.scanned += versions.len() as u64;
            let doomed: Vec<Ts> = if encoding::keyspace_of(&prefix).is_some_and(|ks| dropped.contains(&ks)) {
                versions.iter().map(|&(ts, _)| ts).collect()
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
            }
        }
        lower = Bound::Excluded(last);
    }
    engine.counters.vacuumed.fetch_add(report.removed, Ordering::Relaxed);
    engine.counters.vacuum_passes.fetch_add(1, Ordering::Relaxed);
    engine.counters.pinned.store(report.pinned, Ordering::Relaxed);
    Ok(report)
}

/// The versions of one key: its prefix, then (timestamp, is tombstone),
/// newest first.
type Group = (Vec<u8>, Vec<(Ts, bool)>);

/// Per-key version lists of one batch and the last tree key read, or
/// `None` at the end of the tree.
type Batch = (Vec<Group>, Vec<u8>);

fn batch(engine: &Engine, lower: &Bound<Vec<u8>>) -> Result<Option<Batch>> {
    let mut groups: Vec<Group> = Vec::new();
    let mut last = None;
    for (taken, entry) in engine.tree.range((lower.clone(), Bound::<Vec<u8>>::Unbounded)).enumerate() {
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
