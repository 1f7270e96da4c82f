//! A disk that fills up under a running database (RELIABILITY.md F4:
//! `ENOSPC`), then gets space again.
//!
//! Goal: a full disk fails writes with errors, never a panic or a hang;
//! what was acknowledged before stays readable and survives a restart or
//! a power cut; once there is space again, a reopened database takes
//! writes.
//!
//! Method: a `Db` on the simulated directory (4 KiB pages, a 64 KiB pool,
//! 16 KiB log segments, a checkpoint every 64 KiB of log, so write-backs,
//! checkpoints and new segments all need space) takes acknowledged commits;
//! then the disk is full: the data file and every segment file may not
//! grow past their length, and new files may not hold a byte (or only the
//! log's disk is full: the data file grows, and checkpoints may recycle
//! segments so that commits go on). Three writers keep committing new
//! keys (`Immediate`) until each has seen 20 errors in a row or 5 s
//! passed, while a reader checks acknowledged keys
//! through snapshots; a watchdog fails the test after 60 s without an
//! outcome (a hang). Every error must be `Io`, `Poisoned`, `DatabaseFull`
//! or `DiskFull`. Then the space comes back and the database restarts
//! (clean: the handle dropped, the files kept; or with a power cut), and
//! every acknowledged commit must be there, `check()` must pass, and new
//! commits must succeed.
//!
//! The `resumes` tests ask more, of a pool with room for clean victims
//! (1 MiB) and 256 KiB segments: while the disk is full every failed
//! commit fails with `DiskFull`, never `Poisoned` (the database refuses
//! commits before they log anything, and a write-back that failed for
//! want of space leaves its page dirty: `buffer/space.rs`); once space is
//! back, commits succeed again on the same handle within 10 s, with every
//! acknowledged commit readable and `check()` passing, before and after a
//! restart.

mod common;

use crabtree::io::{CrashModel, Dir, SimDir, Storage};
use crabtree::{Db, Error, Options, Result};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which disk is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Full {
    /// The data file's (the log on another disk).
    Data,
    /// The log's.
    Log,
    /// One disk holding both.
    Both,
}

/// The simulated directory with a switch that makes new files unable to
/// hold a byte (their entry can still be made); a process sees it through
/// a [`DiskLife`].
struct Disk {
    sim: SimDir,
    full: AtomicBool,
}

impl Disk {
    /// Fills the disk: no file may grow from here on, or with `log_only`
    /// only the log's (the data file on another disk).
    fn fill(&self, log_only: bool) {
        self.fill_some(if log_only { Full::Log } else { Full::Both });
    }

    /// Fills the disk of the data file, of the log, or both.
    fn fill_some(&self, which: Full) {
        if which != Full::Data {
            self.full.store(true, Ordering::SeqCst);
        }
        for name in self.sim.list().unwrap() {
            let is_data = name == "data";
            if (which == Full::Log && is_data) || (which == Full::Data && !is_data) {
                continue;
            }
            let disk = self.sim.disk(&name).unwrap();
            disk.set_capacity(disk.live_image().len() as u64);
        }
    }

    /// Frees space: every file may grow again.
    fn free(&self) {
        self.full.store(false, Ordering::SeqCst);
        for name in self.sim.list().unwrap() {
            self.sim.disk(&name).unwrap().set_capacity(u64::MAX);
        }
    }
}

fn options() -> Options {
    Options {
        page_size: 4096,
        memory_budget: 64 << 10,
        max_pages: 1 << 16,
        log_segment_size: 16 << 10,
        checkpoint_bytes: 64 << 10,
        vacuum_interval: Some(Duration::from_millis(5)),
        ..Options::default()
    }
}

fn open(disk: &Arc<Disk>) -> Result<Db> {
    let data = disk.sim.open("data", true)?;
    disk.sim.sync()?;
    let dir: Arc<dyn Dir> = Arc::new(DiskLife { disk: Arc::clone(disk), life: disk.sim.this_life() });
    crabtree::raw::open_db(data, dir, options())
}

/// A `Disk` seen through one life of the process (`SimDir::this_life`).
struct DiskLife {
    disk: Arc<Disk>,
    life: SimDir,
}

impl Dir for DiskLife {
    fn list(&self) -> Result<Vec<String>> {
        self.life.list()
    }
    fn open(&self, name: &str, create: bool) -> Result<Arc<dyn Storage>> {
        let new = create && self.disk.sim.disk(name).is_none();
        let storage = self.life.open(name, create)?;
        if new && self.disk.full.load(Ordering::SeqCst) {
            self.disk.sim.disk(name).expect("just created").set_capacity(0);
        }
        Ok(storage)
    }
    fn sync(&self) -> Result<()> {
        self.life.sync()
    }
}

fn key(writer: u64, i: u64) -> Vec<u8> {
    format!("w{writer}-{i:06}").into_bytes()
}

fn value(writer: u64, i: u64) -> Vec<u8> {
    let mut value = format!("{writer}:{i}:").into_bytes();
    value.resize(200 + (i as usize % 7) * 300, b'v');
    value
}

/// Runs the scenario; `power_cut` restarts with a power cut instead of a
/// clean drop; `log_only` fills only the log's disk.
fn run(seed: u64, power_cut: bool, log_only: bool) {
    let disk = Arc::new(Disk { sim: SimDir::new(seed, CrashModel::default()), full: AtomicBool::new(false) });
    let acked: Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>> = Arc::default();
    let db = open(&disk).unwrap();
    for i in 0..300 {
        db.update(|tx| tx.put(&key(9, i), &value(9, i))).unwrap();
        acked.lock().unwrap().insert(key(9, i), value(9, i));
    }
    disk.fill(log_only);

    let (outcome, watch) = std::sync::mpsc::channel::<Vec<String>>();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let writers: Vec<_> = (0..3u64)
        .map(|writer| {
            let (db, acked, errors) = (db.clone(), Arc::clone(&acked), Arc::clone(&errors));
            std::thread::spawn(move || {
                let (start, mut in_a_row, mut i) = (Instant::now(), 0, 0u64);
                while in_a_row < 20 && start.elapsed() < Duration::from_secs(5) {
                    i += 1;
                    match db.update(|tx| tx.put(&key(writer, i), &value(writer, i))) {
                        Ok(()) => {
                            in_a_row = 0;
                            acked.lock().unwrap().insert(key(writer, i), value(writer, i));
                        }
                        Err(
                            error @ (Error::Io(_) | Error::Poisoned | Error::DatabaseFull { .. } | Error::DiskFull(_)),
                        ) => {
                            in_a_row += 1;
                            errors.lock().unwrap().push(error.to_string());
                        }
                        Err(other) => panic!("a full disk gave {other:?}"),
                    }
                }
            })
        })
        .collect();
    let reader = {
        let (db, acked) = (db.clone(), Arc::clone(&acked));
        std::thread::spawn(move || {
            let mut reads = 0u64;
            for round in 0..200 {
                let sample: Vec<(Vec<u8>, Vec<u8>)> =
                    acked.lock().unwrap().iter().step_by(17).map(|(k, v)| (k.clone(), v.clone())).collect();
                let snap = db.snapshot();
                for (k, v) in sample {
                    match snap.get(&k) {
                        Ok(found) => assert_eq!(found, Some(v), "round {round}: an acknowledged key read wrong"),
                        Err(Error::Io(_) | Error::Poisoned) => {}
                        Err(other) => panic!("a read on a full disk gave {other:?}"),
                    }
                    reads += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            reads
        })
    };
    let watched = std::thread::spawn(move || {
        for writer in writers {
            writer.join().unwrap();
        }
        let reads = reader.join().unwrap();
        let errors = errors.lock().unwrap().clone();
        let _ = outcome.send(errors);
        reads
    });
    let errors = watch
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("writers on a full disk neither failed nor finished in 60 s (seed {seed}): a hang"));
    let reads = watched.join().unwrap();
    // With only the log's disk full, checkpoints recycle segments and
    // commits may go on; with both full, the data file cannot take the
    // tree's new pages.
    assert!(log_only || !errors.is_empty(), "a full disk never failed a commit (seed {seed})");
    let acked = acked.lock().unwrap().clone();

    disk.free();
    if power_cut {
        disk.sim.crash();
        drop(db);
    } else {
        drop(db);
        disk.sim.kill();
    }
    let db = open(&disk).unwrap_or_else(|e| panic!("reopen with space again (seed {seed}): {e}"));
    let snap = db.snapshot();
    for (k, v) in &acked {
        assert_eq!(
            snap.get(k).unwrap().as_ref(),
            Some(v),
            "acknowledged {} lost (seed {seed})",
            String::from_utf8_lossy(k)
        );
    }
    drop(snap);
    db.check().unwrap();
    for i in 0..100 {
        db.update(|tx| tx.put(&key(7, i), &value(7, i))).unwrap();
    }
    eprintln!(
        "disk full (seed {seed}, {}, {}): {} acknowledged, {} errors (first: {}), {reads} reads meanwhile",
        if log_only { "log only" } else { "data and log" },
        if power_cut { "power cut" } else { "restart" },
        acked.len(),
        errors.len(),
        errors.first().map_or("none", String::as_str)
    );
}

#[test]
fn a_full_disk_fails_writes_and_loses_nothing_across_a_restart() {
    run(common::seed("a_full_disk_fails_writes_and_loses_nothing_across_a_restart"), false, false);
}

#[test]
fn a_full_disk_fails_writes_and_loses_nothing_across_a_power_cut() {
    run(common::seed("a_full_disk_fails_writes_and_loses_nothing_across_a_power_cut"), true, false);
}

#[test]
fn a_full_log_disk_fails_or_recycles_and_loses_nothing_across_a_power_cut() {
    run(common::seed("a_full_log_disk_fails_or_recycles_and_loses_nothing_across_a_power_cut"), true, true);
}

#[test]
fn a_full_log_disk_fails_or_recycles_and_loses_nothing_across_a_restart() {
    run(common::seed("a_full_log_disk_fails_or_recycles_and_loses_nothing_across_a_restart"), false, true);
}

/// Writers commit on a full disk until each met 20 errors in a row; every
/// error must be `DiskFull`. Then space comes back, and the same handle
/// must take commits again.
fn resumes(seed: u64, which: Full) {
    let disk = Arc::new(Disk { sim: SimDir::new(seed, CrashModel::default()), full: AtomicBool::new(false) });
    let options = Options { memory_budget: 1 << 20, log_segment_size: 256 << 10, ..options() };
    let open = |disk: &Arc<Disk>| {
        let data = disk.sim.open("data", true)?;
        disk.sim.sync()?;
        let dir: Arc<dyn Dir> = Arc::new(DiskLife { disk: Arc::clone(disk), life: disk.sim.this_life() });
        crabtree::raw::open_db(data, dir, options.clone())
    };
    let db = open(&disk).unwrap();
    let acked: Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>> = Arc::default();
    for i in 0..300 {
        db.update(|tx| tx.put(&key(9, i), &value(9, i))).unwrap();
        acked.lock().unwrap().insert(key(9, i), value(9, i));
    }
    disk.fill_some(which);
    let writers: Vec<_> = (0..3u64)
        .map(|writer| {
            let (db, acked) = (db.clone(), Arc::clone(&acked));
            std::thread::spawn(move || {
                let (start, mut in_a_row, mut i, mut refused) = (Instant::now(), 0, 0u64, 0u64);
                while in_a_row < 20 && start.elapsed() < Duration::from_secs(20) {
                    i += 1;
                    match db.update(|tx| tx.put(&key(writer, i), &value(writer, i))) {
                        Ok(()) => {
                            in_a_row = 0;
                            acked.lock().unwrap().insert(key(writer, i), value(writer, i));
                        }
                        Err(Error::DiskFull(_)) => {
                            in_a_row += 1;
                            refused += 1;
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(other) => panic!("writer {writer}: a full disk gave {other:?} (seed {seed}), not DiskFull"),
                    }
                }
                (i, in_a_row, refused)
            })
        })
        .collect();
    let mut refused = 0;
    for writer in writers {
        let (_, in_a_row, writer_refused) = writer.join().unwrap();
        assert_eq!(in_a_row, 20, "a writer never met 20 refusals in a row on a full disk in 20 s (seed {seed})");
        refused += writer_refused;
    }
    let full_stats = db.stats();
    if which == Full::Data {
        // The log had room: the refusals came from the pool's write-backs.
        assert!(full_stats.pool.space_failures > 0, "no write-back met the full data disk (seed {seed})");
    }

    disk.free();
    let start = Instant::now();
    let mut i = 0u64;
    loop {
        i += 1;
        match db.update(|tx| tx.put(&key(5, i), &value(5, i))) {
            Ok(()) => {
                acked.lock().unwrap().insert(key(5, i), value(5, i));
                break;
            }
            Err(Error::DiskFull(_)) if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(other) => panic!("space freed {:?} ago, a commit still gives {other:?} (seed {seed})", start.elapsed()),
        }
    }
    let resumed_after = start.elapsed();
    for j in i + 1..i + 200 {
        db.update(|tx| tx.put(&key(5, j), &value(5, j)))
            .unwrap_or_else(|e| panic!("commit {j} after the disk resumed (seed {seed}): {e}"));
        acked.lock().unwrap().insert(key(5, j), value(5, j));
    }
    let acked = acked.lock().unwrap().clone();
    let verify = |db: &Db, when: &str| {
        let snap = db.snapshot();
        for (k, v) in &acked {
            assert_eq!(
                snap.get(k).unwrap().as_ref(),
                Some(v),
                "{when}: acknowledged {} lost (seed {seed})",
                String::from_utf8_lossy(k)
            );
        }
        let all = snap.range::<&[u8], _>(..).unwrap().count();
        assert_eq!(all, acked.len(), "{when}: keys besides the acknowledged ones (seed {seed})");
        db.check().unwrap_or_else(|e| panic!("{when}: check (seed {seed}): {e}"));
    };
    verify(&db, "same handle");
    disk.sim.crash();
    drop(db);
    let db = open(&disk).unwrap_or_else(|e| panic!("reopen after a power cut (seed {seed}): {e}"));
    verify(&db, "after a power cut");
    eprintln!(
        "disk full, resumed ({which:?}, seed {seed}): {refused} refusals (DiskFull), {} write-backs failed for want of space, \
         commits again {resumed_after:?} after space came back, {} acknowledged",
        full_stats.pool.space_failures,
        acked.len()
    );
}

#[test]
fn a_full_disk_refuses_commits_and_resumes_by_itself_once_space_is_back() {
    resumes(common::seed("a_full_disk_refuses_commits_and_resumes_by_itself_once_space_is_back"), Full::Both);
}

#[test]
fn a_full_data_disk_refuses_commits_and_resumes_by_itself_once_space_is_back() {
    resumes(common::seed("a_full_data_disk_refuses_commits_and_resumes_by_itself_once_space_is_back"), Full::Data);
}

#[test]
fn a_full_log_disk_refuses_commits_or_recycles_and_resumes_by_itself() {
    resumes(common::seed("a_full_log_disk_refuses_commits_or_recycles_and_resumes_by_itself"), Full::Log);
}
