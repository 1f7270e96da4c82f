//! Durable appends: the WAL's group commit against the disk's own rate.
//!
//! In one run, on real files in one directory (`CRABTREE_BENCH_DIR`,
//! default a temp dir under the system temp directory):
//! * `raw overwrite`: one thread, a loop of a 4 KiB `pwrite` at offset 0 of
//!   a preallocated file + `fdatasync` (what a log sync costs at best). The
//!   shared disk's rate drifts by 10x within a minute, so every WAL
//!   measurement is cut into `CRABTREE_BENCH_SLICES` (default 8) slices that
//!   alternate with slices of the raw loop, and its ratio is to that raw
//!   loop;
//! * `raw append`: the same, but each write extends the file (what a sync
//!   costs when it must also persist a size change: why segments are
//!   preallocated), alternating slices with the overwrite loop;
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

/// A file for the raw loops: 4 KiB `pwrite` + `fdatasync`, either at
/// offset 0 of a preallocated file (`overwrite`) or extending the file.
struct Raw {
    file: FileStorage,
    block: Vec<u8>,
    appended: u64,
}

impl Raw {
    fn new(dir: &Path, name: &str, prefill: bool) -> Raw {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        let file = FileStorage::open(&path, true).expect("raw file");
        if prefill {
            file.write_at(0, &vec![0u8; 1 << 20]).expect("prefill");
            file.sync().expect("sync");
        }
        Raw { file, block: vec![0xa5u8; 4096], appended: 0 }
    }

    /// Runs the loop for `secs`; returns (syncs, seconds).
    fn run(&mut self, append: bool, secs: Duration) -> (u64, f64) {
        let started = Instant::now();
        let mut count = 0u64;
        while started.elapsed() < secs {
            let offset = if append { self.appended * 4096 } else { 0 };
            self.file.write_at(offset, &self.block).expect("write");
            self.file.sync().expect("sync");
            self.appended += 1;
            count += 1;
        }
        (count, started.elapsed().as_secs_f64())
    }
}

/// One measurement of `writers` committers, in `slices` time slices that
/// alternate with slices of the raw overwrite loop in the same directory,
/// so both see the same disk (its rate drifts by 10x within a minute).
struct Measure {
    raw_rate: f64,
    commits_per_sec: f64,
    commits_per_sync: f64,
    bytes_per_commit: f64,
}

fn measure(dir: &Path, writers: usize, secs: Duration, slices: u32, round: u64) -> Measure {
    let path = dir.join(format!("wal-{writers}-{round}"));
    let _ = std::fs::remove_dir_all(&path);
    let log: Arc<dyn Dir> = Arc::new(FileDir::open(&path).expect("log dir"));
    let options = WalOptions { segment_size: 64 << 20, ..WalOptions::default() };
    let (wal, _) = Wal::open(log, options, |_, _, _| Ok(())).expect("open");
    // Warm up: the first segment is created and preallocated.
    wal.commit(RecordType::DATA, &[0u8; RECORD]).expect("commit");
    let mut raw = Raw::new(dir, "raw-overwrite", true);
    let before = wal.stats();
    let slice = secs / slices;
    let (mut raw_syncs, mut raw_secs, mut commits, mut wal_secs) = (0u64, 0f64, 0u64, 0f64);
    for _ in 0..slices {
        let (n, t) = raw.run(false, slice);
        raw_syncs += n;
        raw_secs += t;
        let stop = AtomicBool::new(false);
        let done = AtomicU64::new(0);
        let started = Instant::now();
        std::thread::scope(|scope| {
            for t in 0..writers {
                let (wal, stop, done) = (&wal, &stop, &done);
                scope.spawn(move || {
                    let mut record = [t as u8; RECORD];
                    let mut mine = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        record[..8].copy_from_slice(&mine.to_le_bytes());
                        wal.commit(RecordType::DATA, &record).expect("commit");
                        mine += 1;
                    }
                    done.fetch_add(mine, Ordering::Relaxed);
                });
            }
            std::thread::sleep(slice);
            stop.store(true, Ordering::Relaxed);
        });
        wal_secs += started.elapsed().as_secs_f64();
        commits += done.load(Ordering::Relaxed);
    }
    let after = wal.stats();
    wal.close().expect("close");
    let _ = std::fs::remove_dir_all(&path);
    let syncs = (after.syncs - before.syncs) as f64;
    let commits = commits as f64;
    Measure {
        raw_rate: raw_syncs as f64 / raw_secs,
        commits_per_sec: commits / wal_secs,
        commits_per_sync: commits / syncs.max(1.0),
        bytes_per_commit: (after.bytes_written - before.bytes_written) as f64 / commits.max(1.0),
    }
}

fn main() {
    let secs = Duration::from_secs_f64(env_u64("CRABTREE_BENCH_SECS", 2) as f64);
    let rounds = env_u64("CRABTREE_BENCH_ROUNDS", 3).max(1);
    let slices = env_u64("CRABTREE_BENCH_SLICES", 8).max(1) as u32;
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
    println!(
        "wal bench: dir {}, {secs:?} per measurement in {slices} slices alternating with the raw loop, \
         {rounds} rounds (median), {RECORD}-byte records",
        dir.display()
    );
    let mut overwrite = Vec::new();
    let mut append = Vec::new();
    let mut runs: Vec<Vec<Measure>> = writers.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        // Overwrite vs append, alternating slices too.
        let mut over = Raw::new(dir, "raw-o", true);
        let mut app = Raw::new(dir, "raw-a", false);
        let (mut o, mut a) = ((0u64, 0f64), (0u64, 0f64));
        for _ in 0..slices {
            let (n, t) = over.run(false, secs / slices);
            o = (o.0 + n, o.1 + t);
            let (n, t) = app.run(true, secs / slices);
            a = (a.0 + n, a.1 + t);
        }
        overwrite.push(o.0 as f64 / o.1);
        append.push(a.0 as f64 / a.1);
        for (i, &n) in writers.iter().enumerate() {
            runs[i].push(measure(dir, n, secs, slices, round));
        }
    }
    let raw_rate = median(overwrite.clone());
    println!("{:<18} {:>12} {:>8} {:>14} {:>14}", "", "per sec", "x raw", "commits/fsync", "bytes/commit");
    println!("{:<18} {:>12.0} {:>8.2} {:>14} {:>14}", "raw overwrite 4K", raw_rate, 1.0, "", "");
    let append_ratio = median(append.iter().zip(&overwrite).map(|(a, o)| a / o).collect());
    println!(
        "{:<18} {:>12.0} {:>8.2} {:>14} {:>14}   ({:.0} us vs {:.0} us per sync)",
        "raw append 4K",
        median(append.clone()),
        append_ratio,
        "",
        "",
        1e6 / raw_rate,
        1e6 / median(append.clone())
    );
    for (i, &n) in writers.iter().enumerate() {
        let rate = median(runs[i].iter().map(|r| r.commits_per_sec).collect());
        let ratio = median(runs[i].iter().map(|r| r.commits_per_sec / r.raw_rate).collect());
        let per_sync = median(runs[i].iter().map(|r| r.commits_per_sync).collect());
        let bytes = median(runs[i].iter().map(|r| r.bytes_per_commit).collect());
        println!("{:<18} {:>12.0} {:>8.2} {:>14.1} {:>14.0}", format!("wal x{n}"), rate, ratio, per_sync, bytes);
    }
    println!("per round: raw overwrite, raw append, then (raw alongside, wal) commits/s for x{writers:?}:");
    for round in 0..rounds as usize {
        let pairs: Vec<(f64, f64)> =
            runs.iter().map(|r| (r[round].raw_rate.round(), r[round].commits_per_sec.round())).collect();
        println!("  {:>6.0} {:>6.0} {pairs:?}", overwrite[round], append[round]);
    }
}
