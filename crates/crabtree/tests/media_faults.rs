//! Media faults on synced data (RELIABILITY.md F8): a whole database (data
//! file and log) damaged at rest, then opened and read.
//!
//! Goal: damage to bytes that were synced either leaves every read right or
//! makes some step fail with an error; never wrong or missing data without
//! an error, never a panic or a hang ("a damaged file yields `Corruption`
//! naming the page or LSN; never wrong data returned silently").
//!
//! Method: build a `Db` once on the simulated directory (512-byte pages, a
//! pool of 32, 16 KiB log segments, a checkpoint every 24 KiB of log): three
//! keyspaces, 600 keys put, overwritten, deleted in transactions of one to
//! five writes, 1 value in 25 an overflow chain. Two images of it, each
//! with its model: **closed** (a clean close) and **crashed** (more commits,
//! acknowledged, then the flusher's quiet-time horizon record, then power
//! lost with every unsynced write dropped: recovery has a log to redo).
//! Each case copies an image, damages one place of one file (the data file
//! or, as often, a live segment of the log): a flipped bit, a zeroed 512-byte sector, a
//! sector of garbage, or a sector copied over another (a misdirected
//! write, same file or from another one). Then it opens the `Db`, scans
//! every keyspace both ways, reads every key of the model and runs
//! `check()`. A step may fail; a step that succeeds must agree with the
//! model exactly (a whole scan with every entry, a get with the model's
//! value or absence). The case is "detected" if any step failed,
//! "harmless" if none did. A watchdog fails the test if one case runs for
//! 60 s.
//!
//! Not covered: lost writes (a page reverting whole to an older image of
//! itself, checksum and id intact); nothing in the format can tell such a
//! page from a current one once the log that changed it was recycled (see
//! `docs/protocols/disk-assumptions.md`).
//!
//! Size: 2,000 cases quick (1,000 per image), 200,000 with
//! `CRABTREE_TEST_SIZE=long`; `CRABTREE_MEDIA_CASES=n` sets it.
//! `CRABTREE_SEED` replays the damage.

mod common;

use common::crash::open_db;
use crabtree::io::{CrashModel, Dir, SimDir};
use crabtree::wal::SegmentHeader;
use crabtree::{Db, Keyspace, Options};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

const KEYSPACES: [&str; 3] = ["default", "b", "c"];
const SECTOR: usize = 512;

/// Keyspace index -> key -> value.
type Model = [BTreeMap<Vec<u8>, Vec<u8>>; 3];
/// File name -> durable bytes.
type Image = BTreeMap<String, Vec<u8>>;

fn cases() -> u64 {
    if let Some(n) = std::env::var("CRABTREE_MEDIA_CASES").ok().and_then(|s| s.parse().ok()) {
        return n;
    }
    match std::env::var("CRABTREE_TEST_SIZE").as_deref() {
        Ok("long") => 200_000,
        _ => 2_000,
    }
}

fn options() -> Options {
    Options {
        page_size: 512,
        memory_budget: 512 * 32,
        max_pages: 1 << 16,
        log_segment_size: 16 * 1024,
        checkpoint_bytes: 24 * 1024,
        vacuum_interval: None,
        ..Options::default()
    }
}

fn drop_unsynced() -> CrashModel {
    CrashModel { keep: 0, drop: 1, tear: 0, garbage: 0, fsync_failure_drops_pending: true }
}

fn keyspaces(db: &Db) -> [Keyspace; 3] {
    KEYSPACES.map(|name| db.keyspace(name).unwrap())
}

/// Commits `transactions` random transactions, recorded in `model`.
fn commit_some(db: &Db, model: &mut Model, rng: &mut fastrand::Rng, transactions: u32) {
    let spaces = keyspaces(db);
    for _ in 0..transactions {
        let mut tx = db.begin();
        let mut changes = Vec::new();
        for _ in 0..rng.u32(1..6) {
            let ks = rng.usize(0..3);
            let key = format!("key-{:04}", rng.u32(0..200)).into_bytes();
            if rng.u32(0..6) == 0 {
                tx.delete_in(&spaces[ks], &key).unwrap();
                changes.push((ks, key, None));
            } else {
                let len = if rng.u32(0..25) == 0 { rng.usize(600..2_000) } else { rng.usize(1..40) };
                let value: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
                tx.put_in(&spaces[ks], &key, &value).unwrap();
                changes.push((ks, key, Some(value)));
            }
        }
        tx.commit().unwrap();
        for (ks, key, value) in changes {
            match value {
                Some(value) => model[ks].insert(key, value),
                None => model[ks].remove(&key),
            };
        }
    }
}

fn image_of(dir: &SimDir) -> Image {
    dir.list().unwrap().into_iter().map(|name| (name.clone(), dir.disk(&name).unwrap().durable_image())).collect()
}

/// The two images and their models.
fn build(seed: u64) -> [(Image, Model); 2] {
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = SimDir::new(seed, drop_unsynced());
    let db = open_db(&dir, options()).unwrap();
    let mut model: Model = Default::default();
    commit_some(&db, &mut model, &mut rng, 400);
    drop(db);
    let closed = (image_of(&dir), model.clone());

    let db = open_db(&dir, options()).unwrap();
    commit_some(&db, &mut model, &mut rng, 150);
    // The flusher syncs a horizon record after its quiet time: without
    // it, damage inside the last batch synced reads as a torn tail (a
    // documented limit of the log, `wal-and-group-commit.md`).
    std::thread::sleep(Duration::from_millis(200));
    dir.crash();
    drop(db);
    let crashed = (image_of(&dir), model);
    [closed, crashed]
}

/// One place damaged, as a description.
fn damage(image: &mut Image, rng: &mut fastrand::Rng) -> String {
    // Half the cases damage the data file, half a live segment of the log
    // (free segments, most of the log's bytes here, hold nothing to lose).
    let live: Vec<&String> = image
        .iter()
        .filter(|(_, bytes)| SegmentHeader::decode(bytes).is_some_and(|header| header.index.is_some()))
        .map(|(name, _)| name)
        .collect();
    let name = if live.is_empty() || rng.bool() { "data".to_string() } else { live[rng.usize(0..live.len())].clone() };
    let len = image[&name].len();
    let sector = rng.usize(0..len.div_ceil(SECTOR)) * SECTOR;
    let end = (sector + SECTOR).min(len);
    match rng.u32(0..4) {
        0 => {
            let byte = rng.usize(0..len);
            let bit = rng.u8(0..8);
            image.get_mut(&name).unwrap()[byte] ^= 1 << bit;
            format!("{name}: bit {bit} of byte {byte} flipped")
        }
        1 => {
            image.get_mut(&name).unwrap()[sector..end].fill(0);
            format!("{name}: sector at {sector} zeroed")
        }
        2 => {
            image.get_mut(&name).unwrap()[sector..end].iter_mut().for_each(|b| *b = rng.u8(..));
            format!("{name}: sector at {sector} garbage")
        }
        _ => {
            let names: Vec<String> = image.keys().cloned().collect();
            let from_name = if rng.u32(0..3) == 0 { names[rng.usize(0..names.len())].clone() } else { name.clone() };
            let from_len = image[&from_name].len();
            let from = rng.usize(0..from_len.div_ceil(SECTOR)) * SECTOR;
            let source: Vec<u8> = image[&from_name][from..(from + SECTOR).min(from_len)].to_vec();
            let n = source.len().min(end - sector);
            image.get_mut(&name).unwrap()[sector..sector + n].copy_from_slice(&source[..n]);
            format!("{name}: sector at {sector} overwritten with {from_name}'s sector at {from}")
        }
    }
}

/// Opens `image` and reads everything; `Ok(true)` if every step
/// succeeded (and agreed with `model`), `Ok(false)` if one failed, `Err`
/// with what was wrong if a step succeeded with wrong data.
fn exercise(image: &Image, model: &Model) -> Result<bool, String> {
    let dir = SimDir::new(1, drop_unsynced());
    for (name, bytes) in image {
        dir.open(name, true).unwrap();
        dir.disk(name).unwrap().set_durable_image(bytes.clone());
    }
    dir.sync().unwrap();
    let Ok(db) = open_db(&dir, options()) else { return Ok(false) };
    let mut clean = true;
    let Ok(spaces) = KEYSPACES.iter().map(|name| db.keyspace(name)).collect::<crabtree::Result<Vec<_>>>() else {
        return Ok(false);
    };
    let snap = db.snapshot();
    for (ks, space) in spaces.iter().enumerate() {
        for reverse in [false, true] {
            let Ok(iter) = snap.range_in::<&[u8], _>(space, ..) else {
                clean = false;
                continue;
            };
            let entries: Vec<_> = if reverse { iter.rev().collect() } else { iter.collect() };
            if entries.iter().any(Result::is_err) {
                clean = false;
                continue;
            }
            let mut found: Vec<(Vec<u8>, Vec<u8>)> = entries.into_iter().map(Result::unwrap).collect();
            if reverse {
                found.reverse();
            }
            let expected: Vec<(Vec<u8>, Vec<u8>)> = model[ks].iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            if found != expected {
                return Err(format!(
                    "a whole {} scan of keyspace {} returned {} entries without an error, the model has {}",
                    if reverse { "backward" } else { "forward" },
                    KEYSPACES[ks],
                    found.len(),
                    expected.len()
                ));
            }
        }
        for key in (0..200).map(|i| format!("key-{i:04}").into_bytes()) {
            match snap.get_in(space, &key) {
                Ok(value) if value.as_ref() == model[ks].get(&key) => {}
                Ok(value) => {
                    return Err(format!(
                        "get of {} in {} returned {:?} bytes without an error, the model has {:?}",
                        String::from_utf8_lossy(&key),
                        KEYSPACES[ks],
                        value.map(|v| v.len()),
                        model[ks].get(&key).map(Vec::len)
                    ));
                }
                Err(_) => clean = false,
            }
        }
    }
    drop(snap);
    if db.check().is_err() {
        clean = false;
    }
    Ok(clean)
}

#[test]
fn damage_to_synced_data_is_reported_or_harmless_never_silent() {
    let seed = std::env::var("CRABTREE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    let images = build(seed);
    for (image, model) in &images {
        let files: Vec<_> = image.iter().map(|(name, bytes)| format!("{name} {} B", bytes.len())).collect();
        let entries: usize = model.iter().map(BTreeMap::len).sum();
        eprintln!("media faults: an image of {entries} entries: {}", files.join(", "));
    }
    // Undamaged, both images read back whole.
    for (image, model) in &images {
        assert_eq!(exercise(image, model), Ok(true), "an undamaged image (seed {seed})");
    }
    let case = Arc::new(AtomicU64::new(0));
    let (tick, watch) = mpsc::channel::<()>();
    let watched = Arc::clone(&case);
    let watchdog = std::thread::spawn(move || {
        loop {
            match watch.recv_timeout(Duration::from_secs(60)) {
                Ok(()) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    eprintln!(
                        "media faults: case {} ran for 60 s (seed {seed}): a hang",
                        watched.load(Ordering::SeqCst)
                    );
                    std::process::abort();
                }
            }
        }
    });
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    let mut counts = [[0u64; 2]; 2];
    for n in 0..cases() {
        case.store(n, Ordering::SeqCst);
        tick.send(()).unwrap();
        let which = (n % 2) as usize;
        let (image, model) = &images[which];
        let mut damaged = image.clone();
        let what = damage(&mut damaged, &mut rng);
        match exercise(&damaged, model) {
            Ok(clean) => counts[which][usize::from(clean)] += 1,
            Err(wrong) => panic!(
                "case {n} ({} image, seed {seed}), {what}: {wrong}",
                if which == 0 { "closed" } else { "crashed" }
            ),
        }
    }
    drop(tick);
    watchdog.join().unwrap();
    eprintln!(
        "media faults: seed {seed}; closed image: {} detected, {} harmless; crashed image: {} detected, {} harmless",
        counts[0][0], counts[0][1], counts[1][0], counts[1][1]
    );
}
