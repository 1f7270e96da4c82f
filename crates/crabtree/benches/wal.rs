//! Durable appends: the WAL's group commit against the disk's own rate.
//!
//! In one run, on real files in one directory (`CRABTREE_BENCH_DIR`,
//! default a temp dir under the system temp directory):
//! * `raw overwrite`: one thread, a loop of a 4 KiB `pwrite` at offset 0 of
//!   a preallocated file + `fdatasync` (what a log sync costs at best),
//!   measured right before every WAL run: each WAL rate is divided by the
//!   raw rate measured just before it (the shared disk drifts a lot);
//! * `raw append`: the same, but each write extends the file (what a sync
//!   costs when it must also persist a size change: why segments are
//!   preallocated);
//! * `wal xN` for N = 1, 4, 16, 32, 64 writers: each thread loops `commit`
//!   (append a 100-byte record, wait until durable) in `Immediate` mode.
//!   Reported: commits/s, ratio to `raw overwrite`, commits per fsync, log
//!   bytes per commit.
//!
//! `CRABTREE_BENCH_SECS` (default 2) per measurement, `CRABTREE_BENCH_ROUNDS`
//! (default 3) rounds, the median kept; `CRABTREE_BENCH_WRITERS` a comma list
//! of writer counts. Run: `cargo bench -p crabtree --bench wal`.

use crabtree::io::{Dir, FileDir, FileStorage, Storage};
use crabtree::wal::{RecordType, Wal, WalOptions};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const RECORD: usize = 100;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Syncs per second of a 4 KiB write + fdatasync loop; `append` grows the
/// file with each write instead of overwriting a preallocated block.
fn raw(dir: &Path, append: bool, secs: Duration) -> f64 {
    let path = dir.join(if append { "raw-append" } else { "raw-overwrite" });
    let _ = std::fs::remove_file(&path);
    let file = FileStorage::open(&path, true).expect("raw file");
    let block = vec![0xa5u8; 4096];
    if !append {
        file.write_at(0, &vec![0u8; 1 << 20]).expect("prefill");
        file.sync().expect("sync");
    }
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < secs {
        let offset = if append { count * 4096 } else { 0 };
        file.write_at(offset, &block).expect("write");
        file.sync().expect("sync");
        count += 1;
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    rate
}

struct WalRun {
    commits_per_sec: f64,
    commits_per_sync: f64,
    bytes_per_commit: f64,
}

fn wal_run(dir: &Path, writers: usize, secs: Duration, round: u64) -> WalRun {
    let path = dir.join(format!("wal-{writers}-{round}"));
    let _ = std::fs::remove_dir_all(&path);
    let log: Arc<dyn Dir> = Arc::new(FileDir::open(&path).expect("log dir"));
    let options = WalOptions { segment_size: 64 << 20, ..WalOptions::default() };
    let (wal, _) = Wal::open(log, options, |_, _, _| Ok(())).expect("open");
    // Warm up: the first segment is created and preallocated.
    wal.commit(RecordType::DATA, &[0u8; RECORD]).expect("commit");
    let before = wal.stats();
    let stop = AtomicBool::new(false);
    let commits = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..writers {
            let (wal, stop, commits) = (&wal, &stop, &commits);
            scope.spawn(move || {
                let mut record = [t as u8; RECORD];
                let mut mine = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    record[..8].copy_from_slice(&mine.to_le_bytes());
                    wal.commit(RecordType::DATA, &record).expect("commit");
                    mine += 1;
                }
                commits.fetch_add(mine, Ordering::Relaxed);
            });
        }
        std::thread::sleep(secs);
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed().as_secs_f64();
    let after = wal.stats();
    wal.close().expect("close");
    let _ = std::fs::remove_dir_all(&path);
    let commits = commits.load(Ordering::Relaxed) as f64;
    let syncs = (after.syncs - before.syncs) as f64;
    WalRun {
        commits_per_sec: commits / elapsed,
        commits_per_sync: commits / syncs.max(1.0),
        bytes_per_commit: (after.bytes_written - before.bytes_written) as f64 / commits.max(1.0),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let secs = Duration::from_secs_f64(env_u64("CRABTREE_BENCH_SECS", 2) as f64);
    let rounds = env_u64("CRABTREE_BENCH_ROUNDS", 3).max(1);
    let writers: Vec<usize> = std::env::var("CRABTREE_BENCH_WRITERS")
        .ok()
        .map(|list| list.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 4, 16, 32, 64]);
    let tmp = match std::env::var("CRABTREE_BENCH_DIR") {
        Ok(dir) => tempfile::tempdir_in(dir),
        Err(_) => tempfile::tempdir(),
    }
    .expect("temp dir");
    let dir = tmp.path();
    println!("wal bench: dir {}, {:?} x {rounds} rounds (median), {RECORD}-byte records", dir.display(), secs);

    let mut overwrite = Vec::new();
    let mut append = Vec::new();
    let mut runs: Vec<Vec<WalRun>> = writers.iter().map(|_| Vec::new()).collect();
    // The raw loop right before each WAL run, so each ratio compares runs a
    // few seconds apart (the shared disk's rate drifts by 10x over minutes).
    let mut adjacent: Vec<Vec<f64>> = writers.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        let before = raw(dir, false, secs);
        append.push(raw(dir, true, secs));
        overwrite.push(before);
        for (i, &n) in writers.iter().enumerate() {
            let raw_rate = raw(dir, false, secs);
            adjacent[i].push(raw_rate);
            runs[i].push(wal_run(dir, n, secs, round));
        }
    }
    // Ratios are taken per run (each WAL run against the raw loop just
    // before it), then the median over the rounds is reported.
    let raw_rate = median(adjacent.iter().flatten().copied().chain(overwrite.iter().copied()).collect());
    let append_rate = median(append.clone());
    println!("{:<18} {:>12} {:>8} {:>14} {:>14}", "", "per sec", "x raw", "commits/fsync", "bytes/commit");
    println!("{:<18} {:>12.0} {:>8.2} {:>14} {:>14}", "raw overwrite 4K", raw_rate, 1.0, "", "");
    let append_ratio = median(append.iter().zip(&overwrite).map(|(a, o)| a / o).collect());
    println!(
        "{:<18} {:>12.0} {:>8.2} {:>14} {:>14}   ({:.0} us vs {:.0} us per sync)",
        "raw append 4K",
        append_rate,
        append_ratio,
        "",
        "",
        1e6 / raw_rate,
        1e6 / append_rate
    );
    for (i, &n) in writers.iter().enumerate() {
        let rate = median(runs[i].iter().map(|r| r.commits_per_sec).collect());
        let ratio = median(runs[i].iter().zip(&adjacent[i]).map(|(r, o)| r.commits_per_sec / o).collect());
        let per_sync = median(runs[i].iter().map(|r| r.commits_per_sync).collect());
        let bytes = median(runs[i].iter().map(|r| r.bytes_per_commit).collect());
        println!("{:<18} {:>12.0} {:>8.2} {:>14.1} {:>14.0}", format!("wal x{n}"), rate, ratio, per_sync, bytes);
    }
    println!("per round: raw overwrite, raw append, then (raw just before, wal) for x{writers:?}:");
    for round in 0..rounds as usize {
        let pairs: Vec<(f64, f64)> =
            runs.iter().zip(&adjacent).map(|(r, a)| (a[round].round(), r[round].commits_per_sec.round())).collect();
        println!("  {:>6.0} {:>6.0} {pairs:?}", overwrite[round], append[round]);
    }
}
