//! The durable-write phase of `crabtree bench`: `Store::put_durable`
//! (`Immediate`: each write returns once its log record is synced) with 1
//! and 32 writer threads, next to the disk's own rate measured in the same
//! run: one thread looping a 4 KiB overwrite at offset 0 of a preallocated
//! file in the log directory + `fdatasync`.
//!
//! The disk of a shared machine drifts by 10x within a minute, so each
//! measurement is cut into slices that alternate with slices of the raw
//! loop, and its ratio is to that interleaved raw rate. The ratio to read:
//! one writer pays one sync per write (target: at least 0.9x raw); many
//! writers share each sync (group commit: more commits per fsync, a
//! multiple of the raw rate).

use crabtree::io::{FileStorage, Storage};
use crabtree::raw::{Store, StoreOptions};
use crabtree::{Error, Lsn, Result};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Keys each writer thread overwrites (pre-loaded before timing).
const KEYS_PER_WRITER: u64 = 1_000;
/// Slices each measurement is cut into (alternating with the raw loop).
const SLICES: u32 = 4;
/// Writer counts measured.
const WRITERS: [u64; 2] = [1, 32];

/// One measurement: the raw rate alongside and the durable rate.
pub struct DurableRow {
    /// Writer threads.
    pub writers: u64,
    /// Raw overwrite + fdatasync per second, interleaved with this run.
    pub raw_per_sec: f64,
    /// Durable writes per second.
    pub writes_per_sec: f64,
    /// Durable writes per log fdatasync.
    pub commits_per_sync: f64,
}

/// Runs `put_durable` with 1 and 32 writers for `time` each, in a store at
/// `path`, and the raw loop in its log directory.
pub fn run(path: &Path, time: Duration, value_size: usize) -> Result<Vec<DurableRow>> {
    let store = Store::open_path(path, StoreOptions::default())?;
    let writers_max = WRITERS.iter().copied().max().unwrap_or(1);
    let mut last = Lsn::ZERO;
    for i in 0..writers_max * KEYS_PER_WRITER {
        last = last.max(store.put(&super::key(i), &super::value(i, value_size))?);
    }
    store.wait_durable(last)?;
    let mut log = path.as_os_str().to_owned();
    log.push("-wal");
    // Segment files end in `.wal`; the log ignores other names.
    let raw_path = Path::new(&log).join("raw-overwrite.bench");
    let raw = FileStorage::open(&raw_path, true)?;
    raw.write_at(0, &vec![0u8; 1 << 20])?;
    raw.sync()?;
    let mut rows = Vec::new();
    for writers in WRITERS {
        rows.push(measure(&store, &raw, writers, time, value_size)?);
    }
    drop(raw);
    std::fs::remove_file(&raw_path)?;
    store.close()?;
    Ok(rows)
}

/// Raw loop for `time`: (syncs, seconds).
fn raw_loop(raw: &FileStorage, time: Duration) -> Result<(u64, f64)> {
    let block = [0xa5u8; 4096];
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < time {
        raw.write_at(0, &block)?;
        raw.sync()?;
        count += 1;
    }
    Ok((count, started.elapsed().as_secs_f64()))
}

fn measure(store: &Store, raw: &FileStorage, writers: u64, time: Duration, value_size: usize) -> Result<DurableRow> {
    let slice = time / SLICES;
    let before = store.stats().1;
    let (mut raw_syncs, mut raw_secs, mut writes, mut secs) = (0u64, 0f64, 0u64, 0f64);
    for _ in 0..SLICES {
        let (n, t) = raw_loop(raw, slice)?;
        raw_syncs += n;
        raw_secs += t;
        let stop = AtomicBool::new(false);
        let done = AtomicU64::new(0);
        let failure = parking_lot::Mutex::new(None);
        let started = Instant::now();
        std::thread::scope(|scope| {
            for thread in 0..writers {
                let (stop, done, failure) = (&stop, &done, &failure);
                scope.spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(thread);
                    let mut mine = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let i = thread * KEYS_PER_WRITER + rng.u64(..KEYS_PER_WRITER);
                        if let Err(error) = store.put_durable(&super::key(i), &super::value(i, value_size)) {
                            *failure.lock() = Some(error);
                            break;
                        }
                        mine += 1;
                    }
                    done.fetch_add(mine, Ordering::Relaxed);
                });
            }
            std::thread::sleep(slice);
            stop.store(true, Ordering::Relaxed);
        });
        secs += started.elapsed().as_secs_f64();
        writes += done.load(Ordering::Relaxed);
        if let Some(error) = failure.into_inner() {
            return Err(error);
        }
    }
    let syncs = store.stats().1.syncs.saturating_sub(before.syncs);
    if writes == 0 {
        return Err(Error::InvalidArgument("no durable write completed".into()));
    }
    Ok(DurableRow {
        writers,
        raw_per_sec: raw_syncs as f64 / raw_secs.max(1e-9),
        writes_per_sec: writes as f64 / secs.max(1e-9),
        commits_per_sync: writes as f64 / syncs.max(1) as f64,
    })
}

/// Prints the durable rows as a second table.
pub fn print(rows: &[DurableRow]) {
    println!();
    println!(
        "{:<24} {:>14} {:>21} {:>8} {:>14}",
        "durable phase", "writes/s", "raw fdatasync/s", "ratio", "commits/fsync"
    );
    for row in rows {
        println!(
            "{:<24} {:>14.0} {:>21.0} {:>7.2}x {:>14.1}",
            format!("put_durable ({} thr)", row.writers),
            row.writes_per_sec,
            row.raw_per_sec,
            row.writes_per_sec / row.raw_per_sec.max(1e-9),
            row.commits_per_sync
        );
    }
    println!();
}
