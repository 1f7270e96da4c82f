//! Adversarial scenarios against the crash-safety core: the log's group
//! commit, segment recycling, checkpoints and recovery, each forced
//! deterministically (an injected fault on one simulated file, a thread
//! held at a failpoint, a crafted byte image) instead of hoped for under
//! random stress. Each test names the defect or the mutation it catches.
//!
//! Failpoints are process-wide, so the scenarios run one at a time (a
//! mutex).

use crabtree::io::{CrashModel, Dir, Fault, FaultOp, SimDir};
use crabtree::wal::{RecordType, SegmentHeader, Wal, WalOptions};
use crabtree::{Lsn, Result};
use std::sync::{Arc, Mutex};
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Smallest segments (8 KiB: 4 KiB of log each), so a few records fill
/// several.
fn small_segments() -> WalOptions {
    WalOptions { segment_size: 8192, flush_delay: Duration::from_millis(5), ..WalOptions::default() }
}

/// A crash model that drops every unsynced write: what survives is exactly
/// what was synced.
fn drop_all() -> CrashModel {
    CrashModel { keep: 0, drop: 1, tear: 0, garbage: 0, fsync_failure_drops_pending: true }
}

/// The file name of the slot whose live header (as reads see it now)
/// holds segment `index`.
fn slot_of_index(sim: &SimDir, index: u64) -> Option<String> {
    sim.list().ok()?.into_iter().find(|name| {
        sim.disk(name)
            .and_then(|disk| SegmentHeader::decode(&disk.live_image()))
            .is_some_and(|header| header.index == Some(index))
    })
}

/// A record read back or acknowledged: its end LSN and payload.
type Record = (Lsn, Vec<u8>);

/// Opens the log in `dir`, collecting every record's end LSN and payload.
fn open_collect(dir: &SimDir, options: WalOptions) -> Result<(Wal, Vec<Record>)> {
    let mut records = Vec::new();
    let (wal, _) = Wal::open(Arc::new(dir.this_life()), options, |lsn, _, payload| {
        let end = Lsn(lsn.0 + crabtree::wal::record_size(payload.len()) as u64);
        records.push((end, payload.to_vec()));
        Ok(())
    })?;
    Ok((wal, records))
}

/// Every acknowledged `(end LSN, payload)` is among `records`.
fn assert_all_present(acked: &[Record], records: &[Record]) {
    let found: std::collections::HashMap<Lsn, &Vec<u8>> = records.iter().map(|(lsn, p)| (*lsn, p)).collect();
    for (lsn, payload) in acked {
        assert_eq!(found.get(lsn), Some(&payload), "acknowledged record ending at {lsn:?} lost");
    }
}

/// A failed `fdatasync` of a segment header that recycling rewrote as free.
///
/// Defends invariant 6 of the log (the live segments on disk are a
/// contiguous run) against fsync failure: with Linux semantics the free
/// header may never reach the disk, so segment 0 stays live there. Before
/// the fix the log was not poisoned: the segment was already gone from the
/// in-memory live set, the next checkpoint's `recycle_below` went on and
/// freed segment 1 (synced), and commits went on. After power loss the disk
/// held live segments {0, 2, 3, ...}: the reader stopped at the hole after
/// segment 0 and, finding horizon claims beyond it, refused to open with
/// `LogCorruption` (without a claim it would have cut off every
/// acknowledged commit after segment 0). Now a failed recycle poisons the
/// log, as every failed log write or sync does.
#[test]
fn a_failed_sync_while_recycling_a_segment_leaves_no_hole_in_the_log() -> Result<()> {
    let _serial = serial();
    let sim = SimDir::new(11, drop_all());
    let (wal, _) = open_collect(&sim, small_segments())?;
    let mut acked = Vec::new();
    let mut n = 0u32;
    while wal.end_lsn().0 < 5 * 4096 {
        let payload = n.to_le_bytes().repeat(40);
        acked.push((wal.commit(RecordType::DATA, &payload)?, payload));
        n += 1;
    }
    let slot = slot_of_index(&sim, 0).expect("segment 0 is live");
    sim.disk(&slot).expect("slot file").inject(Fault::once(FaultOp::Sync, 0));
    // A checkpoint recycles segments 0 and 1: the sync of 0's free header
    // fails.
    let first = wal.recycle_below(Lsn(2 * 4096));
    assert!(first.is_err(), "the injected sync failure is reported: {first:?}");
    // The next checkpoint recycles again; the store goes on committing.
    let _ = wal.recycle_below(Lsn(2 * 4096));
    for _ in 0..40 {
        let payload = n.to_le_bytes().repeat(40);
        if let Ok(lsn) = wal.commit(RecordType::DATA, &payload) {
            acked.push((lsn, payload));
        }
        n += 1;
    }
    let _ = wal.close();
    sim.crash();
    let (wal, records) =
        open_collect(&sim, small_segments()).unwrap_or_else(|e| panic!("a log that was never damaged must open: {e}"));
    assert_all_present(&acked, &records);
    wal.close()
}
