//! Adversarial scenarios against the crash-safety core: the log's group
//! commit, segment recycling, checkpoints and recovery, each forced
//! deterministically (an injected fault on one simulated file, a thread
//! held at a failpoint, a crafted byte image) instead of hoped for under
//! random stress. Each test names the defect or the mutation it catches.
//!
//! Failpoints are process-wide, so the scenarios run one at a time (a
//! mutex).

mod common;

use crabtree::failpoint::Pause;
use crabtree::io::{CrashModel, Dir, Fault, FaultOp, SimDir};
use crabtree::wal::{RecordType, SegmentHeader, Wal, WalOptions};
use crabtree::{Error, Lsn, Result};
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
        assert!(found.get(lsn) == Some(&payload), "acknowledged record ending at {lsn:?} lost");
    }
}

/// Ten acknowledged commits of 300-byte payloads, added to `acked`, then a
/// clean close: the next life's work after the damage a test set up.
fn commit_ten_and_close(wal: Wal, acked: &mut Vec<Record>) -> Result<()> {
    for i in 0..10u8 {
        let payload = vec![i; 300];
        acked.push((wal.commit(RecordType::DATA, &payload)?, payload));
    }
    wal.close()
}

/// A power cut, then the open that follows: it must succeed, and every
/// record in `acked` must be read back.
fn crash_and_find_all(sim: &SimDir, options: WalOptions, acked: &[Record]) -> Result<()> {
    sim.crash();
    let (wal, records) =
        open_collect(sim, options).unwrap_or_else(|e| panic!("a log that was never damaged must open: {e}"));
    assert_all_present(acked, &records);
    wal.close()
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
    crash_and_find_all(&sim, small_segments(), &acked)
}

/// The log a killed process wrote but never synced, read back by the next
/// life from the page cache, then lost to a power cut.
///
/// After `SIGKILL` the kernel still holds the dead process's unsynced log
/// writes: the next open reads them as valid log and took its end as
/// durable (`durable = end`), and recovery redoes them into data pages it
/// then syncs. Only the newest live segment was synced at open (by the
/// incarnation stamp), never the older ones the last batch also wrote, and
/// the new handle syncs only what it writes itself. A later power cut then
/// dropped the dead process's tail of segments 0 and 1 while segment 2,
/// holding the new life's acknowledged commits, survived: the reader
/// stopped at the hole and refused to open (`LogCorruption`: horizon
/// claims beyond it), or without a claim would have lost every commit the
/// new life acknowledged. PostgreSQL fsyncs its data directory at crash
/// recovery for the same reason (`SyncDataDirectory`). Fix (shared with
/// the failed-sync case below): `Wal::open` writes again and syncs the log
/// past the last horizon claim, with its segments' headers, before it
/// trusts it. Mutation that fails it: skip that rewrite
/// (`Segments::rewrite`).
#[test]
fn a_log_tail_a_killed_process_never_synced_is_synced_before_it_counts_as_durable() -> Result<()> {
    let _serial = serial();
    let sim = SimDir::new(3, drop_all());
    // The flusher never syncs on its own here: only committers do.
    let options = WalOptions { flush_delay: Duration::from_secs(60), ..small_segments() };
    let (wal, _) = open_collect(&sim, options.clone())?;
    for i in 0..4u8 {
        wal.commit(RecordType::DATA, &[i; 100])?;
    }
    // The last batch of the dying process: written into segments 0, 1 and
    // 2, then the process is killed before its sync.
    for i in 0..40u8 {
        wal.append(RecordType::DATA, &[i; 200])?;
    }
    let pause = Pause::arm_for("wal.before_sync", |t| t.name() == Some("dying-committer"));
    std::thread::scope(|scope| -> Result<()> {
        let committer = std::thread::Builder::new()
            .name("dying-committer".into())
            .spawn_scoped(scope, || wal.commit(RecordType::DATA, b"last"))?;
        assert!(pause.wait_parked(Duration::from_secs(10)), "the committer never reached its sync");
        assert!(slot_of_index(&sim, 2).is_some(), "the last batch reaches segment 2");
        sim.kill();
        pause.resume();
        let last = committer.join().expect("committer");
        assert!(last.is_err(), "a commit whose sync the kill cut off is not acknowledged: {last:?}");
        Ok(())
    })?;
    drop(wal);
    // The next life reads the whole tail back and commits on.
    let (wal, records) = open_collect(&sim, options.clone())?;
    assert_eq!(records.len(), 45, "the page cache still holds the dead process's tail");
    let mut acked = Vec::new();
    commit_ten_and_close(wal, &mut acked)?;
    // Power cut: whatever was never synced is gone.
    crash_and_find_all(&sim, options, &acked)
}

/// A spare segment file whose directory entry a killed process never
/// synced (its preparer died between filling the file and syncing the
/// directory), found by the next open and used for acknowledged log.
///
/// `Segments::open` takes any whole file with a valid free header as a
/// ready spare, and activating a spare writes and syncs only the file, not
/// the directory: the entry stayed unsynced while acknowledged commits
/// went into it, and a power cut dropped the file with them (the reader
/// saw a log ending at segment 1's boundary, no horizon beyond: a silent
/// loss of acknowledged commits). Fix: `Wal::open` syncs the directory
/// before it uses anything it found there. Mutation that fails it: remove
/// that sync (`Segments::sync_dir`; the seeds whose crash drops the entry,
/// about half, lose the commits).
#[test]
fn a_spare_segment_whose_directory_entry_was_never_synced_is_not_used_unsynced() -> Result<()> {
    let _serial = serial();
    for seed in 0..12 {
        let sim = SimDir::new(seed, drop_all());
        let (wal, _) = open_collect(&sim, small_segments())?;
        // Under half a segment: the preparer is not asked for a spare.
        for i in 0..4u8 {
            wal.commit(RecordType::DATA, &[i; 100])?;
        }
        wal.close()?;
        // What a preparer killed before its directory sync leaves: a whole,
        // zero-filled, synced file with a free header, entry not durable.
        let name = "00000009.wal";
        let file = sim.open(name, true)?;
        let header = SegmentHeader { size: 8192, index: None, first_record: Lsn(0), incarnation: 1 };
        file.write_at(0, &[0u8; 8192])?;
        file.write_at(0, &header.encode())?;
        file.sync()?;
        drop(file);
        sim.kill();
        let (wal, _) = open_collect(&sim, small_segments())?;
        let mut acked = Vec::new();
        while wal.end_lsn().0 < 4096 + 1024 {
            let payload = vec![seed as u8; 300];
            acked.push((wal.commit(RecordType::DATA, &payload)?, payload));
        }
        assert_eq!(slot_of_index(&sim, 1).as_deref(), Some(name), "seed {seed}: segment 1 went into the spare");
        wal.close()?;
        sim.crash();
        let (wal, records) = open_collect(&sim, small_segments())
            .unwrap_or_else(|e| panic!("seed {seed}: a log that was never damaged must open: {e}"));
        assert_all_present(&acked, &records);
        assert!(sim.list()?.iter().any(|n| n == name), "seed {seed}: a segment holding acknowledged log vanished");
        wal.close()?;
    }
    Ok(())
}

/// A log directory on a full disk: every new file can be created (an
/// entry costs no data block here) but not filled (`ENOSPC`).
struct FullDisk {
    sim: SimDir,
    full: std::sync::atomic::AtomicBool,
    creates: std::sync::atomic::AtomicU64,
}

impl Dir for FullDisk {
    fn list(&self) -> Result<Vec<String>> {
        self.sim.list()
    }
    fn open(&self, name: &str, create: bool) -> Result<Arc<dyn crabtree::io::Storage>> {
        use std::sync::atomic::Ordering::SeqCst;
        let new = create && self.sim.disk(name).is_none();
        let storage = self.sim.open(name, create)?;
        if create && self.full.load(SeqCst) {
            if let Some(disk) = self.sim.disk(name).filter(|_| new) {
                disk.set_capacity(0);
            }
            self.creates.fetch_add(1, SeqCst);
        }
        Ok(storage)
    }
    fn sync(&self) -> Result<()> {
        self.sim.sync()
    }
}

/// The segment preparer on a full disk.
///
/// A spare segment is asked for at every sync past half of the current
/// segment, and commits go on meanwhile (the current segment is
/// preallocated). Before the fix each attempt took a fresh slot, so every
/// commit on a full disk left one more half-made file behind: 20 commits,
/// 20 files, without bound, and the next open opens every one of them (a
/// real store runs out of file descriptors). Now a failed spare gives its
/// slot back and the next attempt reuses it. Mutation that fails it: drop
/// the slot hand-back in the preparer (`Segments::spare_failed`).
#[test]
fn a_segment_preparer_failing_on_a_full_disk_does_not_leave_a_file_per_attempt() -> Result<()> {
    use std::sync::atomic::Ordering::SeqCst;
    let _serial = serial();
    let disk = Arc::new(FullDisk { sim: SimDir::new(5, drop_all()), full: false.into(), creates: 0.into() });
    let dir: Arc<dyn Dir> = Arc::clone(&disk) as Arc<dyn Dir>;
    let (wal, _) = Wal::open(dir, small_segments(), |_, _, _| Ok(()))?;
    wal.commit(RecordType::DATA, &[1; 100])?;
    let files_before = disk.sim.list()?.len();
    disk.full.store(true, SeqCst);
    // Past half of segment 0, still inside it.
    while wal.end_lsn().0 < 2100 {
        wal.commit(RecordType::DATA, &[2; 100])?;
    }
    for _ in 0..20 {
        let attempts = disk.creates.load(SeqCst);
        wal.commit(RecordType::DATA, &[3; 8])?;
        // Each sync asks for a spare: wait for the preparer's attempt.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while disk.creates.load(SeqCst) == attempts && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(disk.creates.load(SeqCst) > attempts, "the preparer was not asked for a spare");
    }
    assert!(wal.end_lsn().0 < 4096, "the commits stayed in segment 0");
    let files = disk.sim.list()?.len();
    assert!(files <= files_before + 1, "{files} files after 20 failed spares (had {files_before})");
    // Space again: the slot left half-made is filled and used.
    disk.full.store(false, SeqCst);
    for name in disk.sim.list()? {
        if let Some(file) = disk.sim.disk(&name) {
            file.set_capacity(u64::MAX);
        }
    }
    let mut acked = Vec::new();
    while wal.end_lsn().0 < 3 * 4096 {
        let payload = vec![4; 100];
        acked.push((wal.commit(RecordType::DATA, &payload)?, payload));
    }
    wal.close()?;
    let (wal, records) = open_collect(&disk.sim, small_segments())?;
    assert_all_present(&acked, &records);
    wal.close()
}

/// A segment file left longer than the segment size, reused.
///
/// A log whose every file is a creation cut short has no valid header, so
/// the next open takes the segment size from its options, which may differ
/// from the size the cut-short file was being made with (`segment_size`
/// only applies to new logs). Such a file is free and is refilled before
/// use, but `fill` only wrote `size` bytes over it and left it longer:
/// the live header and the acknowledged commits went into it, and the next
/// open, seeing a length other than the segment size, took the file for a
/// creation cut short, i.e. free: the whole log vanished silently. Fix:
/// `fill` sets the file's length to the segment size. Mutation that fails
/// it: remove that `set_len`.
#[test]
fn a_longer_half_made_segment_file_is_cut_to_size_when_reused() -> Result<()> {
    let _serial = serial();
    let sim = SimDir::new(9, drop_all());
    // A 32 KiB segment's creation cut short at 20 KiB: zeros, no header.
    let file = sim.open("00000000.wal", true)?;
    file.write_at(0, &[0u8; 20 * 1024])?;
    file.sync()?;
    sim.sync()?;
    drop(file);
    let (wal, _) = open_collect(&sim, small_segments())?;
    let mut acked = Vec::new();
    for i in 0..6u8 {
        let payload = vec![i; 200];
        acked.push((wal.commit(RecordType::DATA, &payload)?, payload));
    }
    assert_eq!(slot_of_index(&sim, 0).as_deref(), Some("00000000.wal"), "the half-made file was reused");
    wal.close()?;
    sim.crash();
    let (wal, records) = open_collect(&sim, small_segments())?;
    assert_all_present(&acked, &records);
    wal.close()
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

/// A checkpoint whose data-file sync fails, then the application reopens
/// the store at once (no reboot): fsyncgate at recovery.
///
/// With Linux semantics the failed `fdatasync` forgot the pages the
/// checkpoint had written, while reads (the page cache) still return
/// them. Recovery read those pages, found their LSNs at or past every
/// record (full-page images included) and skipped them, so nothing
/// rewrote them; its own sync and the checkpoint after it "succeeded", and
/// once later checkpoints recycled the log that held the changes, a power
/// cut brought back the pages as they were before: acknowledged writes
/// lost. Fix: recovery applies every full-page image at or after the last
/// checkpoint's redo start whatever the page's LSN (as PostgreSQL restores
/// every full-page image), so every page changed since then is written
/// and synced again by recovery itself. Mutation that fails it: skip
/// images like other entries when the page's LSN is not older.
#[test]
fn a_reopen_after_a_failed_data_sync_rewrites_what_the_sync_may_have_lost() -> Result<()> {
    let _serial = serial();
    let sim = SimDir::new(21, drop_all());
    let options = common::crash::quiet_options(64);
    let store = common::crash::open_store(&sim, options.clone())?;
    for i in 0..300 {
        store.put_durable(&key(i), b"old")?;
    }
    store.checkpoint()?;
    // Acknowledged changes after the checkpoint.
    for i in 0..60 {
        store.put_durable(&key(i), b"new")?;
    }
    // The next checkpoint writes them back; its data sync fails.
    sim.disk("data").expect("data file").inject(Fault::once(FaultOp::Sync, 0));
    assert!(store.checkpoint().is_err(), "the injected sync failure is reported");
    assert!(store.is_poisoned());
    drop(store);
    // The application reopens at once and goes on, far enough for
    // checkpoints to recycle the log of the changes.
    let store = common::crash::open_store(&sim, options.clone())?;
    for i in 1000..1600 {
        store.put_durable(&key(i), b"later")?;
        if i % 100 == 0 {
            store.checkpoint()?;
        }
    }
    store.close()?;
    sim.crash();
    let store = common::crash::open_store(&sim, options)?;
    for i in 0..60 {
        assert_eq!(store.get(&key(i))?.as_deref(), Some(&b"new"[..]), "acknowledged write of key {i} lost");
    }
    store.close()
}

/// A failed log sync, then the application reopens the log at once (no
/// reboot): fsyncgate at open.
///
/// The failed sync poisoned the log, as it should; but with Linux
/// semantics the kernel forgot the batch it failed to write while reads
/// still return it. The next open read that batch as valid log, and its
/// own syncs found nothing dirty: the new handle's acknowledged commits
/// went after a batch the disk never got, and a power cut left a hole
/// before them (`LogCorruption` at open, or without a horizon claim a
/// silent loss). Fix: the open rewrites, and syncs, the log it read past
/// the last horizon claim (the only part whose durability the log does
/// not prove) with the headers of the segments it lies in. Mutation that
/// fails it: skip that rewrite (`Segments::rewrite`).
#[test]
fn a_reopen_after_a_failed_log_sync_makes_the_tail_it_reads_durable() -> Result<()> {
    let _serial = serial();
    let sim = SimDir::new(31, drop_all());
    let options = WalOptions { flush_delay: Duration::from_secs(60), ..small_segments() };
    let (wal, _) = open_collect(&sim, options.clone())?;
    let mut acked = Vec::new();
    for i in 0..4u8 {
        let payload = vec![i; 200];
        acked.push((wal.commit(RecordType::DATA, &payload)?, payload));
    }
    // The next batch crosses into segment 1; the sync of segment 0 fails.
    let slot = slot_of_index(&sim, 0).expect("segment 0 is live");
    sim.disk(&slot).expect("slot file").inject(Fault::once(FaultOp::Sync, 0));
    for i in 0..16u8 {
        wal.append(RecordType::DATA, &[i; 200])?;
    }
    let failed = wal.commit(RecordType::DATA, b"failed");
    assert!(failed.is_err(), "a commit whose sync failed is not acknowledged: {failed:?}");
    assert!(slot_of_index(&sim, 1).is_some(), "the failed batch reached segment 1");
    drop(wal);
    let (wal, _) = open_collect(&sim, options.clone())?;
    commit_ten_and_close(wal, &mut acked)?;
    crash_and_find_all(&sim, options, &acked)
}

/// A recycle cut off between its free header and the header's sync (the
/// process killed there), then the next life recycles on.
///
/// The free header was only in the page cache, so the next open took the
/// segment for free, and its own recycles freed the following segment
/// (synced). A power cut then brought back the first segment's live header
/// from the disk: live segments {0, 2, 3, ...}, a hole the reader stops
/// at (`LogCorruption`). Fix: the open writes again and syncs the header
/// of every free segment it found (`Segments::rewrite_free_headers`).
/// Mutation that fails it: skip that.
#[test]
fn a_free_header_a_killed_recycle_never_synced_is_made_durable_at_open() -> Result<()> {
    let _serial = serial();
    let sim = SimDir::new(41, drop_all());
    let options = WalOptions { flush_delay: Duration::from_secs(60), ..small_segments() };
    let (wal, _) = open_collect(&sim, options.clone())?;
    let mut acked = Vec::new();
    let mut n = 0u32;
    while wal.end_lsn().0 < 4 * 4096 + 64 {
        let payload = n.to_le_bytes().repeat(50);
        acked.push((wal.commit(RecordType::DATA, &payload)?, payload));
        n += 1;
    }
    // The recycle of segment 0 writes its free header; the process dies
    // before the sync.
    sim.power_off_after(1);
    assert!(wal.recycle_below(Lsn(4096)).is_err());
    sim.kill();
    drop(wal);
    let (wal, _) = open_collect(&sim, options.clone())?;
    assert!(slot_of_index(&sim, 0).is_none(), "reads see segment 0 free");
    // Inside segment 4: no segment is activated, so the free slot is not
    // reused (which would rewrite its header).
    for _ in 0..10 {
        let payload = n.to_le_bytes().repeat(50);
        acked.push((wal.commit(RecordType::DATA, &payload)?, payload));
        n += 1;
    }
    assert!(wal.end_lsn().0 < 5 * 4096, "the commits stayed in segment 4");
    assert_eq!(wal.recycle_below(Lsn(2 * 4096))?, 1, "segment 1 recycled");
    wal.close()?;
    sim.crash();
    let (wal, records) =
        open_collect(&sim, options).unwrap_or_else(|e| panic!("a log that was never damaged must open: {e}"));
    // Segments 0 and 1 were recycled: the log starts in segment 2.
    let start = |(end, payload): &Record| end.0 - crabtree::wal::record_size(payload.len()) as u64;
    let kept: Vec<Record> = acked.into_iter().filter(|record| start(record) >= 2 * 4096).collect();
    assert!(kept.len() > 10, "{} records kept", kept.len());
    assert_all_present(&kept, &records);
    wal.close()
}

/// A data page newer than the end of the log, where the log still holds a
/// full-page image of it since the redo start: the log lost records
/// (here: its synced tail zeroed, and with it every horizon claim that
/// could have told), and the page is the only witness.
///
/// Recovery restores every image since the redo start whatever the
/// page's LSN (the fsyncgate fix above), which would replace the newer
/// page with the older image and so hide the loss: the key written last
/// would silently read its older state. Recovery compares the LSN the page
/// had when it was read, not only the LSN after redo, with the end of the
/// log: `Corruption`. Mutation that fails it: check only the page's LSN
/// after redo (`Page::read_lsn` unused).
#[test]
fn a_page_newer_than_the_end_of_the_log_is_corruption_even_with_an_image_since() -> Result<()> {
    let _serial = serial();
    let sim = SimDir::new(51, drop_all());
    let options = common::crash::quiet_options(64);
    let payload = options.wal.segment_size - 4096;
    let store = common::crash::open_store(&sim, options.clone())?;
    for i in 0..40 {
        store.put_durable(&key(i), b"old")?;
    }
    store.checkpoint()?;
    // The first change of the leaf after the checkpoint logs its image.
    let cut = store.put_durable(&key(10), b"imaged")?;
    store.put_durable(&key(11), b"last")?;
    // The close's checkpoint writes the leaf with the last LSN.
    store.close()?;
    // The log loses everything from `cut` on.
    let mut lsn = cut.0;
    while let Some(name) = slot_of_index(&sim, lsn / payload) {
        let disk = sim.disk(&name).expect("segment");
        let mut image = disk.durable_image();
        let from = (4096 + lsn % payload) as usize;
        if let Some(tail) = image.get_mut(from..) {
            tail.fill(0);
        }
        disk.set_durable_image(image);
        lsn = (lsn / payload + 1) * payload;
    }
    match common::crash::open_store(&sim, options) {
        Err(Error::Corruption { .. }) => Ok(()),
        Err(other) => panic!("expected Corruption, got {other}"),
        Ok(store) => {
            let value = store.get(&key(11))?;
            panic!("a log that lost its tail opened; key 11 reads {value:?}");
        }
    }
}

/// A data file with pages beside a log directory holding no segment at
/// all (the segments deleted, or the store opened with a fresh log
/// directory).
///
/// `Store::open_path` refuses a data file whose log directory is missing,
/// but an existing, empty one (and `Store::open` with any `Dir`) started a
/// new log at LSN 0: with no checkpoint in the log the allocator came from
/// the header page, written at creation (no root, one page), so the store
/// opened as a new, empty tree over the old pages, every key silently gone
/// and their pages reused. Now recovery refuses a log with no segment beside a data
/// file with pages past its header's page count (a store's pages past the
/// header exist only in the log's terms), with `InvalidArgument` naming
/// the cause. Mutation that fails it: remove that check in `recover`.
#[test]
fn a_data_file_with_pages_beside_a_log_with_no_segment_is_refused() -> Result<()> {
    let _serial = serial();
    let options = common::crash::quiet_options(64);
    let sim = SimDir::new(61, drop_all());
    let store = common::crash::open_store(&sim, options.clone())?;
    for i in 0..100 {
        store.put_durable(&key(i), b"old")?;
    }
    store.close()?;
    // The same data file, an empty log directory.
    let empty = SimDir::new(62, drop_all());
    let data = sim.open("data", false)?;
    match crabtree::raw::Store::open(Arc::clone(&data), Arc::new(empty.this_life()), options.clone()) {
        Err(Error::InvalidArgument(message)) => {
            assert!(message.contains("log"), "{message}");
            Ok(())
        }
        Err(other) => panic!("expected InvalidArgument, got {other}"),
        Ok(store) => {
            // What the missing check costs: without a checkpoint in the
            // log the allocator comes from the header page, written at
            // creation, so the store opens as a new, empty tree over the
            // old pages.
            let value = store.get(&key(6))?;
            panic!("opened beside an empty log; key 6 (written and closed cleanly) reads {value:?}");
        }
    }
}

/// Waiting for durability past the end of the log (an LSN no append
/// returned: a caller's bug, or a page LSN from a damaged file reaching
/// the pool's write-back hook).
///
/// The waiter led flush after flush that could never reach the LSN,
/// parking 50 µs between them, forever (P5: no hang). Now it is
/// `InvalidArgument` at once. Mutation that fails it: remove the check
/// against the reserved end in `Wal::wait_durable` (the watchdog fires).
#[test]
fn waiting_for_an_lsn_past_the_end_of_the_log_is_an_error_not_a_hang() -> Result<()> {
    let _serial = serial();
    let sim = SimDir::new(71, drop_all());
    let (wal, _) = open_collect(&sim, small_segments())?;
    let end = wal.commit(RecordType::DATA, b"one")?;
    let wal = Arc::new(wal);
    let (done, result) = std::sync::mpsc::channel();
    let waiter = Arc::clone(&wal);
    std::thread::spawn(move || {
        let _ = done.send(waiter.wait_durable(Lsn(end.0 + 4096)));
    });
    match result.recv_timeout(Duration::from_secs(10)) {
        Ok(Err(Error::InvalidArgument(_))) => {}
        Ok(other) => panic!("expected InvalidArgument, got {other:?}"),
        Err(_) => panic!("wait_durable past the end of the log still waits after 10 s"),
    }
    assert_eq!(wal.wait_durable(end).ok(), Some(()), "a real LSN still waits fine");
    Ok(())
}

/// A data file and log directory a killed process created, whose
/// directory entries it never made durable.
///
/// `FileStorage::open` and `FileDir::open` fsynced the parent directory
/// only when they created the entry. A process killed between creating
/// the data file (or the `-wal` directory) and that fsync left an entry
/// only the page cache held; the next process found the file there, did
/// not fsync, and acknowledged commits into a file (or a log directory) a
/// power cut could still remove with its entry. Every open now fsyncs the
/// parent: this test counts the fsyncs (failpoint `io.sync_parent`) made
/// by a reopen of an existing store and fails it at each one in turn.
/// Mutation that fails it: sync the parent only on creation again.
#[test]
fn every_open_makes_the_entries_of_the_data_file_and_its_log_durable() -> Result<()> {
    use crabtree::raw::{Store, StoreOptions};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let _serial = serial();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("db");
    let store = Store::open_path(&path, StoreOptions::default())?;
    store.put_durable(b"key", b"value")?;
    store.close()?;

    const OPENER: &str = "adversarial-reopener";
    let in_opener = || std::thread::current().name() == Some(OPENER);
    // Reopens on a named thread (failpoints are process-wide) and returns
    // the open's result with how many parent fsyncs it reached.
    let open_at = |path: &std::path::Path, fail_at: Option<usize>| {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        crabtree::failpoint::set("io.sync_parent", move || {
            if !in_opener() {
                return Ok(());
            }
            let hit = counter.fetch_add(1, Ordering::SeqCst);
            match fail_at {
                Some(at) if at == hit => Err(Error::Io(std::io::Error::other("injected directory fsync failure"))),
                _ => Ok(()),
            }
        });
        let path = path.to_path_buf();
        let result = std::thread::Builder::new()
            .name(OPENER.into())
            .spawn(move || Store::open_path(&path, StoreOptions::default()).and_then(|store| store.close()))
            .unwrap()
            .join()
            .unwrap();
        crabtree::failpoint::clear("io.sync_parent");
        (result, hits.load(Ordering::SeqCst))
    };

    let reopen = |fail_at: Option<usize>| open_at(&path, fail_at);
    // A creating open: the new data file's entry is synced when it is
    // created, then the parent once more with the log directory's.
    let (result, created) = open_at(&dir.path().join("new"), None);
    result?;
    assert!(created >= 2, "creating a store fsynced the parent directory {created} times");
    let (result, hits) = reopen(None);
    result?;
    // One fsync of the parent covers the data file's entry and the log
    // directory's (the log's segments are covered by its own directory
    // sync); a creating open syncs the new data file's entry first.
    assert!(hits >= 1, "a reopen of an existing store fsynced the parent directory {hits} times");
    for at in 0..hits {
        match reopen(Some(at)) {
            (Err(Error::Io(error)), _) if error.to_string().contains("injected") => {}
            (other, _) => panic!("a failed fsync of the parent at hit {at} of {hits}: {other:?}"),
        }
    }
    // Nothing was lost by the refused opens.
    let store = Store::open_path(&path, StoreOptions::default())?;
    assert_eq!(store.get(b"key")?.as_deref(), Some(&b"value"[..]));
    store.close()
}

/// A live segment file cut short or lengthened (damage: nothing the log
/// does leaves a live header on a file of the wrong length, since a file
/// is made whole and synced before its header goes live).
///
/// `Segments::open` took any file of the wrong length for a creation cut
/// short, i.e. free, whatever its header said. A truncated *middle*
/// segment then left a hole the reader reported, but a truncated *last*
/// one simply ended the log earlier: every acknowledged record in it was
/// gone without an error (RELIABILITY.md F13: truncation; P1). Now a
/// live header on a file of the wrong length is `LogCorruption` at the
/// segment's first record, and the files are left as found. Mutation that
/// fails it: drop the length check for live headers in `Segments::open`.
#[test]
fn a_live_segment_of_the_wrong_length_is_corruption_not_the_end_of_the_log() -> Result<()> {
    let _serial = serial();
    for (case, cut) in [("cut to its header", 4096u64), ("cut mid-log", 6144), ("lengthened", 8192 + 4096)] {
        let sim = SimDir::new(81, drop_all());
        let (wal, _) = open_collect(&sim, small_segments())?;
        let mut acked = Vec::new();
        commit_ten_and_close(wal, &mut acked)?;
        let last = (0..64).rev().find_map(|index| slot_of_index(&sim, index)).expect("a live segment");
        let lengths: Vec<u64> =
            sim.list()?.iter().map(|name| sim.open(name, false).and_then(|f| f.len())).collect::<Result<_>>()?;
        let file = sim.open(&last, false)?;
        file.set_len(cut)?;
        file.sync()?;
        drop(file);
        match open_collect(&sim, small_segments()) {
            Err(Error::LogCorruption { reason, .. }) => assert!(reason.contains("length"), "{case}: {reason}"),
            Err(other) => panic!("{case}: expected LogCorruption, got {other}"),
            Ok((wal, records)) => {
                let lost = acked.iter().filter(|record| !records.contains(record)).count();
                wal.close()?;
                panic!("{case}: the log opened without {lost} of {} acknowledged records", acked.len());
            }
        }
        // Left as found: the refused open changed no file's length.
        let after: Vec<u64> =
            sim.list()?.iter().map(|name| sim.open(name, false).and_then(|f| f.len())).collect::<Result<_>>()?;
        let mut expected = lengths.clone();
        let position = sim.list()?.iter().position(|name| *name == last).unwrap();
        expected[position] = cut;
        assert_eq!(after, expected, "{case}");
    }
    Ok(())
}

/// A log recycled past its beginning whose every live record is lost
/// (damaged where no horizon claim can vouch for it: it reads as a torn
/// tail at the very start).
///
/// With no checkpoint in the log, recovery took the allocator from the
/// header page, which describes the store at its creation (no root, one
/// page): the store opened as a new, empty tree over the old pages, every
/// key gone without an error. `media_faults` found it (a sector of garbage
/// over the last checkpoint's records, the only records of the crashed
/// image's one live segment). A log that starts past LSN 0 always holds
/// the checkpoint that let its older segments be recycled, so none is
/// `LogCorruption` now. Mutation that fails it: drop that check in
/// `recover`.
#[test]
fn a_recycled_log_without_its_checkpoint_is_corruption_not_an_empty_tree() -> Result<()> {
    let _serial = serial();
    let sim = SimDir::new(91, drop_all());
    let options = common::crash::quiet_options(64);
    let payload = options.wal.segment_size - 4096;
    let store = common::crash::open_store(&sim, options.clone())?;
    for round in 0..4 {
        for i in 0..60 {
            store.put_durable(&key(i), format!("round {round}").as_bytes())?;
        }
        store.checkpoint()?;
    }
    store.close()?;
    let live: Vec<(String, u64, u64)> = sim
        .list()?
        .into_iter()
        .filter_map(|name| {
            let header = SegmentHeader::decode(&sim.disk(&name)?.live_image())?;
            Some((name, header.index?, header.first_record.0))
        })
        .collect();
    let start = live.iter().map(|&(_, _, first)| first).min().expect("a live segment");
    assert!(start > 0, "the test needs a log recycled past its beginning");
    // Every live record is lost: zeros from the log's start on.
    for (name, index, _) in &live {
        let disk = sim.disk(name).expect("segment");
        let mut image = disk.durable_image();
        let from = 4096 + start.saturating_sub(index * payload).min(payload) as usize;
        image[from..].fill(0);
        disk.set_durable_image(image);
    }
    match common::crash::open_store(&sim, options) {
        Err(Error::LogCorruption { lsn, .. }) => assert_eq!(lsn.0, start),
        Err(other) => panic!("expected LogCorruption, got {other}"),
        Ok(store) => {
            let value = store.get(&key(5))?;
            panic!("a log without its checkpoint opened; key 5 reads {value:?}");
        }
    }
    Ok(())
}

/// A commit late in its segment on a full disk waits for the preparer.
///
/// The log refuses commits (`Wal::check_space`) once the preparer failed
/// to make a spare for want of space, so that the flusher never has to
/// create a segment it cannot (that would poison the log). The preparer
/// is asked at half of the segment; one that is slow or starved has not
/// answered when the segment fills. So a commit past three quarters of its
/// segment with no spare waits for the answer, and here gets `DiskFull`
/// once the preparer, held at `wal.preparer_create`, fails; with space
/// again a commit goes through within the preparer's retry period, and the
/// log crosses into the new segment. Mutation that fails it: drop the wait
/// (`late` always false): the check returns `Ok` at once while the
/// preparer is held.
#[test]
fn a_commit_late_in_its_segment_waits_for_the_preparers_answer_on_a_full_disk() -> Result<()> {
    use crabtree::failpoint::Pause;
    use std::sync::atomic::Ordering::SeqCst;
    let _serial = serial();
    let disk = Arc::new(FullDisk { sim: SimDir::new(6, drop_all()), full: false.into(), creates: 0.into() });
    let dir: Arc<dyn Dir> = Arc::clone(&disk) as Arc<dyn Dir>;
    let (wal, _) = Wal::open(dir, small_segments(), |_, _, _| Ok(()))?;
    wal.commit(RecordType::DATA, &[1; 100])?;
    wal.check_space()?;
    let pause = Pause::arm_for("wal.preparer_create", |thread| thread.name() == Some("crabtree-wal-preparer"));
    disk.full.store(true, SeqCst);
    // Past three quarters of segment 0 (payload 4096), still inside it; the
    // sync past half asks the preparer, which stops at the failpoint.
    let mut acked = Vec::new();
    while wal.end_lsn().0 < 3300 {
        let payload = vec![2; 100];
        acked.push((wal.commit(RecordType::DATA, &payload)?, payload));
    }
    assert!(pause.wait_parked(Duration::from_secs(10)), "the preparer was not asked for a spare");
    std::thread::scope(|scope| {
        let check = scope.spawn(|| wal.check_space());
        std::thread::sleep(Duration::from_millis(100));
        assert!(!check.is_finished(), "a commit late in its segment went on before the preparer answered");
        pause.resume();
        match check.join().unwrap() {
            Err(Error::DiskFull(message)) => assert!(message.contains("log segment"), "{message}"),
            other => panic!("the preparer failed on a full disk, and the check gave {other:?}"),
        }
    });
    assert!(matches!(wal.check_space(), Err(Error::DiskFull(_))), "refused until a segment is made");
    // Space again: the preparer's next try (within a second) makes one.
    disk.full.store(false, SeqCst);
    for name in disk.sim.list()? {
        if let Some(file) = disk.sim.disk(&name) {
            file.set_capacity(u64::MAX);
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while let Err(error) = wal.check_space() {
        assert!(std::time::Instant::now() < deadline, "still {error} 5 s after space came back");
        std::thread::sleep(Duration::from_millis(5));
    }
    while wal.end_lsn().0 < 2 * 4096 {
        let payload = vec![3; 100];
        acked.push((wal.commit(RecordType::DATA, &payload)?, payload));
    }
    wal.close()?;
    let (wal, records) = open_collect(&disk.sim, small_segments())?;
    assert_all_present(&acked, &records);
    wal.close()
}
