//! The log alone, with what a store does to it: several committers waiting
//! for durability, and segments recycled below a moving point (as
//! checkpoints do), power lost at a random I/O operation. Every LSN a
//! committer saw acknowledged must be below the end of the log read back.

mod common;

use crabtree::Lsn;
use crabtree::io::{CrashModel, SimDir};
use crabtree::wal::{Durability, RecordType, Wal, WalOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

fn options() -> WalOptions {
    WalOptions {
        segment_size: 16 * 1024,
        buffer_size: 4 << 20,
        durability: Durability::Immediate,
        flush_delay: Duration::from_millis(5),
    }
}

#[test]
fn acknowledged_records_survive_recycling_and_power_loss() {
    let states = if common::long() { 20_000 } else { 2_000 };
    let base = common::seed("wal_recycle");
    for i in 0..states {
        let seed = base.wrapping_add(i);
        let mut rng = fastrand::Rng::with_seed(seed);
        let model = match rng.u8(0..3) {
            0 => CrashModel { keep: 0, drop: 1, tear: 0, garbage: 0, fsync_failure_drops_pending: true },
            1 => CrashModel { keep: 1, drop: 1, tear: 1, garbage: 50, fsync_failure_drops_pending: true },
            _ => CrashModel { keep: 1, drop: 0, tear: 0, garbage: 0, fsync_failure_drops_pending: true },
        };
        let dir = SimDir::new(seed, model);
        // Some history first, closed cleanly.
        {
            let (wal, _) = Wal::open(Arc::new(dir.this_life()), options(), |_, _, _| Ok(())).unwrap();
            for n in 0..rng.usize(0..60) {
                let lsn = wal.append(RecordType::DATA, &vec![n as u8; rng.usize(1..900)]).unwrap();
                if n % 7 == 0 {
                    wal.wait_durable(lsn).unwrap();
                    let _ = wal.recycle_below(Lsn(lsn.0 / 2));
                }
            }
            wal.close().unwrap();
        }
        let (wal, _) = Wal::open(Arc::new(dir.this_life()), options(), |_, _, _| Ok(())).unwrap();
        let wal = Arc::new(wal);
        dir.power_off_after(rng.u64(0..120));
        let acked = Arc::new(AtomicU64::new(0));
        let sizes: Vec<Vec<usize>> = (0..3)
            .map(|_| {
                (0..30).map(|_| if rng.u8(0..5) == 0 { rng.usize(1000..3000) } else { rng.usize(1..200) }).collect()
            })
            .collect();
        std::thread::scope(|scope| {
            for (t, sizes) in sizes.iter().enumerate() {
                let wal = Arc::clone(&wal);
                let acked = Arc::clone(&acked);
                scope.spawn(move || {
                    for (n, &size) in sizes.iter().enumerate() {
                        let Ok(lsn) = wal.append(RecordType::DATA, &vec![(t * 31 + n) as u8; size]) else { return };
                        if wal.wait_durable(lsn).is_err() {
                            return;
                        }
                        acked.fetch_max(lsn.0, Ordering::SeqCst);
                        if n % 5 == 4 {
                            // A checkpoint finished: recycle below half the durable log.
                            let _ = wal.recycle_below(Lsn(wal.durable_lsn().0.saturating_sub(6000)));
                        }
                    }
                });
            }
        });
        dir.crash();
        drop(wal);
        let (wal, end) = Wal::open(Arc::new(dir.this_life()), options(), |_, _, _| Ok(()))
            .unwrap_or_else(|e| panic!("seed {seed}: reopen: {e}"));
        let acked = acked.load(Ordering::SeqCst);
        assert!(
            end.end.0 >= acked,
            "seed {seed} (CRABTREE_SEED={seed}), {model:?}: acknowledged up to {acked}, log ends at {}",
            end.end.0
        );
        drop(wal);
    }
}
