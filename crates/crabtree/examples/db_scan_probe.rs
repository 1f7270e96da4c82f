//! Scans and point reads through the public `Db` API, to compare with
//! the tree underneath (`get_probe`): KEYS keys (16 bytes, 100-byte
//! values) committed 1,000 a transaction, then SCANS scans of 100 entries
//! from random keys through one snapshot, SCANS reverse scans of 100
//! entries down from random keys, then 200,000 snapshot gets.
//! Vacuum is off, so no background pass runs during the measurement.
//!
//! Prints nanoseconds per scan and per get. Profile with `perf record -e
//! cpu-clock -D <ms>` to skip the load (about 1.3 s at 300,000 keys).
//! (callgrind cannot run it with the default `Options`: valgrind refuses
//! the 64 GiB address-space reservation; `max_pages` is lowered here.)
//!
//! Run with `cargo run --release --example db_scan_probe -- 300000 20000`.

use std::time::Instant;

#[path = "shared/keys.rs"]
mod keys;
#[path = "shared/load.rs"]
mod load;
use keys::{key, splitmix};

/// One measured scan (kept out of line so a profiler can select it).
#[inline(never)]
fn measured_scan(snap: &crabtree::Snapshot, start: &[u8]) -> crabtree::Result<usize> {
    let mut bytes = 0;
    for item in snap.range(start..)?.take(100) {
        bytes += item?.1.len();
    }
    Ok(bytes)
}

/// One measured reverse scan: 100 entries down from `start`.
#[inline(never)]
fn measured_reverse_scan(snap: &crabtree::Snapshot, start: &[u8]) -> crabtree::Result<usize> {
    let mut bytes = 0;
    for item in snap.range(..=start)?.rev().take(100) {
        bytes += item?.1.len();
    }
    Ok(bytes)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: db_scan_probe KEYS SCANS";
    let keys: u64 = args.next().ok_or(usage)?.parse()?;
    let scans: u64 = args.next().ok_or(usage)?.parse()?;
    if keys == 0 {
        return Err("KEYS must be at least 1".into());
    }
    let dir = tempfile::tempdir()?;
    let options =
        crabtree::Options { max_pages: 1 << 20, memory_budget: 1 << 30, vacuum_interval: None, ..Default::default() };
    let db = crabtree::Db::open_with(dir.path().join("probe.crab"), options)?;
    load::commit_keys(&db, keys, &[7u8; 100])?;
    let snap = db.snapshot();
    let started = Instant::now();
    let mut bytes = 0;
    for j in 0..scans {
        bytes += measured_scan(&snap, &key(splitmix(j) % keys))?;
    }
    let per_scan = started.elapsed().as_nanos() as f64 / scans.max(1) as f64;
    let started = Instant::now();
    for j in 0..scans {
        bytes += measured_reverse_scan(&snap, &key(splitmix(j) % keys))?;
    }
    let per_reverse = started.elapsed().as_nanos() as f64 / scans.max(1) as f64;
    let gets = 200_000u64;
    let started = Instant::now();
    for j in 0..gets {
        bytes += snap.get(&key(splitmix(j) % keys))?.map_or(0, |found| found.len());
    }
    let per_get = started.elapsed().as_nanos() as f64 / gets as f64;
    println!(
        "db: {keys} keys, {per_scan:.0} ns a scan of 100, {per_reverse:.0} ns a reverse scan of 100, {per_get:.0} ns a get ({bytes} value bytes read)"
    );
    Ok(())
}
