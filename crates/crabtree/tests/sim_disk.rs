//! Goal: show that `SimDisk` damages data exactly as its model promises, so
//! the crash tests built on it can trust what they observe.
//!
//! Method: write known byte patterns, sync some of them, crash, and classify
//! every resulting image against the only outcomes the model allows (synced
//! data exact; unsynced writes kept whole, dropped, or torn at a 512-byte
//! sector boundary with old data after the cut). Each outcome must be seen
//! over many seeds, and anything else fails the test. Faults and power-off are
//! checked operation by operation: the chosen operation fails with `EIO`, the
//! others succeed, and a failed operation changes nothing. A failing seed is
//! printed in the assertion message.

use crabtree::Error;
use crabtree::io::{CrashModel, Fault, FaultOp, SECTOR_SIZE, SimDisk, Storage};

type TestResult = Result<(), Error>;

const SEEDS: u64 = 500;
const SECTOR: usize = SECTOR_SIZE as usize;

fn read(disk: &SimDisk, offset: u64, len: usize) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; len];
    disk.read_at(offset, &mut buf)?;
    Ok(buf)
}

/// A pattern that differs from `old_pattern` in every byte and from itself
/// at every sector offset, so a misplaced or shifted sector is visible.
fn new_pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 | 0x01).collect()
}

fn old_pattern(len: usize) -> Vec<u8> {
    vec![0xa0; len]
}

fn is_eio(result: Result<(), Error>) -> bool {
    matches!(result, Err(Error::Io(err)) if err.raw_os_error() == Some(5))
}

fn model(keep: u32, drop: u32, tear: u32, garbage: u8) -> CrashModel {
    CrashModel { keep, drop, tear, garbage, ..CrashModel::default() }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Outcome {
    Kept,
    Dropped,
    Torn(usize),
}

/// Classifies `got`, the bytes of a write at absolute offset `base`, as
/// `new`, `old`, or `new[..cut] ++ old[cut..]` with `base + cut` a sector
/// boundary strictly inside the write; `None` if it is none of them.
fn classify(base: usize, got: &[u8], old: &[u8], new: &[u8]) -> Option<Outcome> {
    if got == new {
        return Some(Outcome::Kept);
    }
    if got == old {
        return Some(Outcome::Dropped);
    }
    let cut = got.iter().zip(new).take_while(|(a, b)| a == b).count();
    let aligned = (base + cut).is_multiple_of(SECTOR) && cut > 0 && cut < new.len();
    (aligned && got.get(cut..) == old.get(cut..)).then_some(Outcome::Torn(cut))
}

#[test]
fn synced_data_survives_crash_exactly() -> TestResult {
    for seed in 0..SEEDS {
        let disk = SimDisk::with_model(seed, model(0, 1, 1, 100));
        let synced = new_pattern(8 * SECTOR);
        disk.write_at(0, &synced)?;
        disk.sync()?;
        // Unsynced writes elsewhere, some past the end, must not touch it.
        disk.write_at(8 * SECTOR as u64, &old_pattern(4 * SECTOR))?;
        disk.write_at(20 * SECTOR as u64, &old_pattern(3 * SECTOR))?;
        disk.crash();
        assert_eq!(read(&disk, 0, synced.len())?, synced, "seed {seed}");
        assert_eq!(disk.pending_write_count(), 0);
    }
    Ok(())
}

#[test]
fn unsynced_write_is_kept_dropped_or_torn_at_a_sector_boundary() -> TestResult {
    let len = 8 * SECTOR;
    let (old, new) = (old_pattern(len), new_pattern(len));
    let mut seen = Vec::new();
    for seed in 0..SEEDS {
        let disk = SimDisk::new(seed);
        disk.write_at(0, &old)?;
        disk.sync()?;
        disk.write_at(0, &new)?;
        assert_eq!(read(&disk, 0, len)?, new, "live view shows the write");
        disk.crash();
        let got = read(&disk, 0, len)?;
        let outcome = classify(0, &got, &old, &new);
        assert!(outcome.is_some(), "seed {seed}: not kept, dropped or a torn prefix");
        seen.extend(outcome);
    }
    assert!(seen.contains(&Outcome::Kept), "no write kept");
    assert!(seen.contains(&Outcome::Dropped), "no write dropped");
    let cuts: Vec<usize> = seen
        .iter()
        .filter_map(|o| match o {
            Outcome::Torn(cut) => Some(*cut),
            _ => None,
        })
        .collect();
    // Every interior boundary (1..8 sectors) is a possible cut; see them all.
    for sectors in 1..8 {
        assert!(cuts.contains(&(sectors * SECTOR)), "no tear after {sectors} sectors");
    }
    Ok(())
}

#[test]
fn unaligned_write_tears_at_absolute_sector_boundaries() -> TestResult {
    let (start, len) = (100usize, 3 * SECTOR);
    let old = old_pattern(start + len);
    let new = new_pattern(len);
    let mut torn = 0;
    for seed in 0..SEEDS {
        let disk = SimDisk::with_model(seed, model(0, 0, 1, 0));
        disk.write_at(0, &old)?;
        disk.sync()?;
        disk.write_at(start as u64, &new)?;
        disk.crash();
        let got = read(&disk, start as u64, len)?;
        let old_part = old.get(start..).unwrap_or_default();
        match classify(start, &got, old_part, &new) {
            Some(Outcome::Torn(_)) => {}
            other => panic!("seed {seed}: expected a torn write, got {other:?}"),
        }
        // The cut, as an absolute offset, is a multiple of the sector size.
        let cut = start + got.iter().zip(&new).take_while(|(a, b)| a == b).count();
        assert_eq!(cut % SECTOR, 0, "seed {seed}");
        torn += 1;
    }
    assert_eq!(torn, SEEDS);
    Ok(())
}

#[test]
fn garbage_lands_only_in_the_sector_after_the_cut() -> TestResult {
    let len = 8 * SECTOR;
    let (old, new) = (old_pattern(len), new_pattern(len));
    for seed in 0..SEEDS {
        let disk = SimDisk::with_model(seed, model(0, 0, 1, 100));
        disk.write_at(0, &old)?;
        disk.sync()?;
        disk.write_at(0, &new)?;
        disk.crash();
        let got = read(&disk, 0, len)?;
        let cut = got.iter().zip(&new).take_while(|(a, b)| a == b).count();
        // The garbage sector may by chance start with new bytes.
        let cut = cut / SECTOR * SECTOR;
        assert!(cut > 0 && cut < len, "seed {seed}: cut {cut}");
        let tail = cut + SECTOR;
        assert_eq!(got.get(tail..), old.get(tail..), "seed {seed}: after garbage");
        let garbage = got.get(cut..tail).unwrap_or_default();
        assert_ne!(garbage, old.get(cut..tail).unwrap_or_default(), "seed {seed}");
        assert_ne!(garbage, new.get(cut..tail).unwrap_or_default(), "seed {seed}");
    }
    Ok(())
}

#[test]
fn later_write_may_survive_an_earlier_lost_one() -> TestResult {
    let (mut reordered, mut in_order) = (false, false);
    for seed in 0..SEEDS {
        let disk = SimDisk::with_model(seed, model(1, 1, 0, 0));
        disk.write_at(0, &[1; SECTOR])?;
        disk.write_at(SECTOR as u64 * 4, &[2; SECTOR])?;
        disk.crash();
        let image = disk.durable_image();
        let first = image.first() == Some(&1);
        let second = image.get(SECTOR * 4) == Some(&2);
        reordered |= second && !first;
        in_order |= first && !second;
    }
    assert!(reordered, "never kept a later write while dropping an earlier one");
    assert!(in_order, "never kept an earlier write while dropping a later one");
    Ok(())
}

#[test]
fn overlapping_writes_never_leave_an_older_version_over_a_newer_one() -> TestResult {
    let len = 2 * SECTOR;
    let (old, first, second) = (vec![1; len], vec![2; len], vec![3; len]);
    let mut seen = std::collections::HashSet::new();
    for seed in 0..SEEDS {
        let disk = SimDisk::with_model(seed, model(1, 1, 0, 0));
        disk.write_at(0, &old)?;
        disk.sync()?;
        disk.write_at(0, &first)?;
        disk.write_at(0, &second)?;
        disk.crash();
        let got = read(&disk, 0, len)?;
        // Both kept: the newer wins. One kept: that one. None: the old.
        let allowed = [&old, &first, &second];
        assert!(allowed.contains(&&got), "seed {seed}: mixed versions");
        seen.insert(got);
    }
    assert_eq!(seen.len(), 3, "old, first and second all seen");
    // With every write kept, the last write is what survives.
    let disk = SimDisk::with_model(0, model(1, 0, 0, 0));
    disk.write_at(0, &first)?;
    disk.write_at(0, &second)?;
    disk.crash();
    assert_eq!(read(&disk, 0, len)?, second);
    Ok(())
}

/// Runs a fixed mixed workload and returns the images after a crash.
fn crash_images(seed: u64) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let disk = SimDisk::with_model(seed, model(1, 1, 1, 30));
    let mut live = Vec::new();
    for round in 0..20u64 {
        let offset = (round * 7919) % 16 * SECTOR as u64;
        disk.write_at(offset, &new_pattern(3 * SECTOR))?;
        if round % 5 == 2 {
            disk.sync()?;
        }
        if round == 12 {
            disk.set_len(10 * SECTOR as u64)?;
        }
        live = disk.live_image();
    }
    disk.crash();
    Ok((live, disk.durable_image()))
}

#[test]
fn same_seed_same_crash_image() -> TestResult {
    let mut distinct = std::collections::HashSet::new();
    for seed in 0..50 {
        let (live, image) = crash_images(seed)?;
        assert_eq!(crash_images(seed)?, (live, image.clone()), "seed {seed}");
        distinct.insert(image);
    }
    // Different seeds give different damage: the seed is really used.
    assert!(distinct.len() > 10, "only {} distinct images", distinct.len());
    Ok(())
}

#[test]
fn once_fault_fails_exactly_the_chosen_operation() -> TestResult {
    for op in [FaultOp::Read, FaultOp::Write, FaultOp::Sync, FaultOp::SetLen] {
        let disk = SimDisk::new(1);
        disk.write_at(0, &[7; SECTOR])?;
        disk.inject(Fault::once(op, 2));
        for i in 0..6 {
            let result = match op {
                FaultOp::Read => read(&disk, 0, 10).map(drop),
                FaultOp::Write => disk.write_at(0, &[i as u8; 4]),
                FaultOp::Sync => disk.sync(),
                FaultOp::SetLen => disk.set_len(SECTOR as u64 + i),
            };
            assert_eq!(is_eio(result), i == 2, "{op:?} #{i}");
            // Operations of other kinds are untouched by the fault (and a
            // read here would shift the count of reads).
            if op != FaultOp::Read {
                read(&disk, 0, 1)?;
            }
        }
    }
    Ok(())
}

#[test]
fn sticky_fault_fails_from_the_chosen_operation_on() -> TestResult {
    let disk = SimDisk::new(1);
    disk.write_at(0, &[7; 16])?;
    disk.inject(Fault::sticky(FaultOp::Write, 1));
    assert!(disk.write_at(0, &[1; 4]).is_ok());
    for i in 0..10 {
        assert!(is_eio(disk.write_at(0, &[2; 4])), "write #{}", i + 1);
    }
    // A failed write changes nothing; reads and syncs still work.
    assert_eq!(read(&disk, 0, 5)?, [1, 1, 1, 1, 7]);
    disk.sync()?;
    disk.clear_faults();
    disk.write_at(0, &[3; 4])?;
    assert_eq!(read(&disk, 0, 4)?, [3; 4]);
    Ok(())
}

#[test]
fn failed_set_len_changes_nothing() -> TestResult {
    let disk = SimDisk::new(1);
    disk.write_at(0, &[7; 100])?;
    disk.inject(Fault::once(FaultOp::SetLen, 0));
    assert!(is_eio(disk.set_len(10)));
    assert_eq!(disk.len()?, 100);
    Ok(())
}

#[test]
fn power_off_after_k_operations_fails_everything_until_crash() -> TestResult {
    for k in 0..8u64 {
        // Keep every pending write at the crash, and keep them across the
        // failed syncs too, so the write that succeeded before power-off is
        // visible afterwards.
        let keep_all = CrashModel { fsync_failure_drops_pending: false, ..model(1, 0, 0, 0) };
        let disk = SimDisk::with_model(k, keep_all);
        disk.write_at(0, &[1; SECTOR])?;
        disk.sync()?;
        let start = disk.op_count();
        disk.power_off_after(k);
        // A mix of kinds; exactly the first k succeed.
        let mut ok = 0;
        for i in 0..12u64 {
            let result = match i % 4 {
                0 => disk.write_at(i * 8, &[2; 8]),
                1 => read(&disk, 0, 8).map(drop),
                2 => disk.sync(),
                _ => disk.set_len(SECTOR as u64),
            };
            if result.is_ok() {
                assert_eq!(i, ok, "k {k}: op {i} succeeded after a failure");
                ok += 1;
            }
        }
        assert_eq!(ok, k, "k {k}");
        assert_eq!(disk.op_count(), start + 12, "failed operations are counted");
        assert!(disk.len().is_err(), "len while powered off");
        disk.crash();
        // Power is back; the disk works and synced data is there.
        assert_eq!(read(&disk, 0, 1)?, [if k > 0 { 2 } else { 1 }], "k {k}");
        disk.write_at(0, &[3; 1])?;
    }
    Ok(())
}

#[test]
fn failed_sync_drops_pending_writes() -> TestResult {
    let disk = SimDisk::with_model(9, model(1, 0, 0, 0));
    disk.write_at(0, &[1; SECTOR])?;
    disk.sync()?;
    disk.write_at(0, &[2; SECTOR])?;
    disk.inject(Fault::once(FaultOp::Sync, 0));
    assert!(is_eio(disk.sync()));
    assert_eq!(disk.pending_write_count(), 0);
    // The page cache still shows the lost write, and the next sync
    // "succeeds" without making it durable.
    assert_eq!(read(&disk, 0, 1)?, [2]);
    disk.sync()?;
    disk.crash();
    assert_eq!(read(&disk, 0, SECTOR)?, [1; SECTOR]);
    assert_eq!(disk.stats().sync_dropped, 1);
    Ok(())
}

#[test]
fn failed_sync_keeps_pending_writes_when_configured() -> TestResult {
    let model = CrashModel { fsync_failure_drops_pending: false, ..model(0, 1, 0, 0) };
    let disk = SimDisk::with_model(9, model);
    disk.write_at(0, &[2; SECTOR])?;
    disk.inject(Fault::once(FaultOp::Sync, 0));
    assert!(is_eio(disk.sync()));
    assert_eq!(disk.pending_write_count(), 1);
    disk.sync()?;
    disk.crash();
    assert_eq!(read(&disk, 0, SECTOR)?, [2; SECTOR]);
    Ok(())
}

#[test]
fn crash_clears_faults_and_keeps_the_handle_usable() -> TestResult {
    let disk = SimDisk::new(3);
    let clone = disk.clone();
    disk.inject(Fault::sticky(FaultOp::Read, 0));
    assert!(is_eio(read(&disk, 0, 0).map(drop)));
    clone.crash();
    disk.write_at(0, b"after")?;
    assert_eq!(read(&clone, 0, 5)?, b"after");
    assert_eq!(disk.stats().crashes, 1);
    Ok(())
}

#[test]
fn set_durable_image_builds_damaged_files() -> TestResult {
    let disk = SimDisk::new(4);
    disk.write_at(0, &[0; SECTOR])?;
    disk.sync()?;
    let mut image = disk.durable_image();
    if let Some(byte) = image.get_mut(17) {
        *byte ^= 0x40;
    }
    disk.set_durable_image(image);
    assert_eq!(read(&disk, 17, 1)?, [0x40]);
    disk.crash();
    assert_eq!(read(&disk, 17, 1)?, [0x40]);
    Ok(())
}

#[test]
fn read_past_end_is_unexpected_eof() -> TestResult {
    let disk = SimDisk::new(5);
    disk.write_at(0, &[1; 10])?;
    match read(&disk, 5, 6) {
        Err(Error::Io(err)) => assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof),
        other => panic!("expected UnexpectedEof, got {other:?}"),
    }
    assert!(read(&disk, u64::MAX, 1).is_err());
    Ok(())
}
