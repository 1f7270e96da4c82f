//! The WAL's flusher stopped or failed at its named failpoints.
//!
//! * Group commit, deterministically: the flusher thread (syncing an
//!   append nobody waited for) is held at `wal.before_sync` with the
//!   flushing role while 16 committers pile up as followers; once released,
//!   its sync plus one leader's sync acknowledge all of them.
//! * An error injected at `wal.before_write` or `wal.before_sync` poisons
//!   the log: every waiting committer gets the error, later appends get
//!   `Error::Poisoned`, and a reopen finds exactly the acknowledged prefix.
//!
//! Failpoints are process-wide, so the scenarios run one at a time (a
//! mutex) and each pauses only the flusher thread.

use crabtree::failpoint::{self, Pause};
use crabtree::io::{CrashModel, Dir, SimDir};
use crabtree::wal::{RecordType, Wal, WalOptions};
use crabtree::{Error, Result};
use std::sync::{Arc, Mutex};
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn flusher_only(thread: &std::thread::Thread) -> bool {
    thread.name() == Some("crabtree-wal-flusher")
}

fn open(dir: &Arc<dyn Dir>) -> Result<(Wal, usize)> {
    let mut count = 0;
    let (wal, _) = Wal::open(Arc::clone(dir), WalOptions::default(), |_, _, _| {
        count += 1;
        Ok(())
    })?;
    Ok((wal, count))
}

#[test]
fn one_sync_acknowledges_every_commit_that_arrived_during_the_last() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir: Arc<dyn Dir> = Arc::new(SimDir::new(1, CrashModel::default()));
    let (wal, _) = open(&dir)?;
    wal.commit(RecordType::DATA, b"warm")?;
    let pause = Pause::arm_for("wal.before_sync", flusher_only);
    let first = wal.append(RecordType::DATA, b"first")?;
    assert!(pause.wait_parked(Duration::from_secs(10)), "flusher never reached its sync");
    let syncs_before = wal.stats().syncs;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16u8)
            .map(|i| {
                scope.spawn({
                    let wal = &wal;
                    move || wal.commit(RecordType::DATA, &[i; 50])
                })
            })
            .collect();
        // Every committer has appended (and waits) before the sync goes on.
        while wal.end_lsn().0 < first.0 + 16 * 80 {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
        assert!(wal.durable_lsn() < first, "nothing acknowledged while the sync is held");
        pause.resume();
        for handle in handles {
            handle.join().expect("committer").expect("commit");
        }
    });
    let syncs = wal.stats().syncs - syncs_before;
    assert!(syncs <= 2, "17 commits took {syncs} syncs");
    wal.close()
}

fn injected_error_poisons(point: &'static str) -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let sim = SimDir::new(2, CrashModel::default());
    let dir: Arc<dyn Dir> = Arc::new(sim.clone());
    let (wal, _) = open(&dir)?;
    for i in 0..5u8 {
        wal.commit(RecordType::DATA, &[i; 10])?;
    }
    failpoint::fail_with(point, || Error::Io(std::io::Error::other("injected")));
    let results: Vec<Result<_>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4u8)
            .map(|i| {
                let wal = &wal;
                scope.spawn(move || wal.commit(RecordType::DATA, &[i; 30]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("committer")).collect()
    });
    failpoint::clear(point);
    for result in &results {
        assert!(matches!(result, Err(Error::Io(_)) | Err(Error::Poisoned)), "{point}: {result:?}");
    }
    assert!(matches!(wal.append(RecordType::DATA, b"late"), Err(Error::Poisoned)));
    assert!(wal.close().is_err());
    sim.crash();
    let (wal, count) = open(&dir)?;
    assert!((5..=9).contains(&count), "{point}: {count} records after reopen");
    wal.close()
}

#[test]
fn an_error_before_the_write_poisons() -> Result<()> {
    injected_error_poisons("wal.before_write")
}

#[test]
fn an_error_before_the_sync_poisons() -> Result<()> {
    injected_error_poisons("wal.before_sync")
}
