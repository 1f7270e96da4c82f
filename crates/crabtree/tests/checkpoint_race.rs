//! Goal: a checkpoint never completes while a page changed before its
//! redo start is still unwritten (`buffer::checkpoint`, step 3), however
//! its pass interleaves with writers, evictions, the cleaner, vacuum and
//! other checkpoints. Such a checkpoint would let recovery skip a change
//! the data file does not hold: after a crash, a tree whose pages disagree
//! (the family of `db_crash::with_checkpoints_racing_the_commits`'s rare
//! failures). Here no crash is needed to see it.
//!
//! Method: a `Db` on the simulated directory (512-byte pages, a pool of
//! 24 pages: evictions and the cleaner all the time), writer threads
//! putting and deleting keys with values from a few bytes to overflow
//! chains in three keyspaces, vacuum every millisecond, and a thread
//! taking checkpoints back to back (0-300 µs apart). Every checkpoint runs
//! the test builds' audit after its sync (`BufferPool::audit_written`: no
//! resident page still dirty with a change logged below the redo start, no
//! clean one that differs from the file, and every page's last change
//! before the redo start in the simulated disk's durable image), which
//! panics on a violation. Then: the process is killed (no power loss),
//! reopened, and `Db::check` and the contents (against what the writers
//! last wrote, all committed) must hold.
//!
//! Size: 3 s of writing by default, 120 s with `CRABTREE_TEST_SIZE=long`;
//! `CRABTREE_CHECKPOINT_RACE_SECS=n` chooses. `CRABTREE_SEED` replays the
//! workload's draws (thread timing makes the interleaving).

mod common;

use common::crash::open_db;
use crabtree::io::{CrashModel, SimDir};
use crabtree::{Db, Durability, Options};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const WRITERS: u64 = 3;
const KEYS: u64 = 200;
const KEYSPACES: [&str; 3] = ["a", "b", "c"];

/// (keyspace, key) -> the value last committed (`None`: deleted).
type Model = BTreeMap<(usize, u64), Option<Vec<u8>>>;

fn options() -> Options {
    Options {
        page_size: 512,
        memory_budget: 512 * 24,
        max_pages: 1 << 16,
        durability: Durability::Immediate,
        log_segment_size: 16 * 1024,
        checkpoint_bytes: 32 * 1024,
        vacuum_interval: Some(Duration::from_millis(1)),
        update_retries: 32,
    }
}

/// A value of `len` bytes naming its writer's write.
fn value(tag: u64, len: usize) -> Vec<u8> {
    let mut value = tag.to_le_bytes().repeat(len.div_ceil(8));
    value.truncate(len.max(8));
    value
}

#[test]
fn checkpoints_racing_writers_leave_no_page_changed_before_their_redo_start_unwritten() {
    let secs: u64 = match std::env::var("CRABTREE_CHECKPOINT_RACE_SECS") {
        Ok(n) => n.parse().expect("CRABTREE_CHECKPOINT_RACE_SECS must be a number"),
        Err(_) if common::long() => 120,
        Err(_) => 3,
    };
    let seed = common::seed("checkpoint_race");
    let dir = SimDir::new(seed, CrashModel::default());
    let db = open_db(&dir, options()).unwrap();
    for name in KEYSPACES {
        db.keyspace(name).unwrap();
    }
    let model: Mutex<Model> = Mutex::new(BTreeMap::new());
    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let checkpoints = std::thread::scope(|scope| {
        let db = &db;
        let (model, stop) = (&model, &stop);
        let checkpointer = scope.spawn(move || {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut taken = 0u64;
            while !stop.load(Ordering::SeqCst) {
                crabtree::raw::checkpoint_db(db).expect("checkpoint");
                taken += 1;
                std::thread::sleep(Duration::from_micros(rng.u64(0..300)));
            }
            taken
        });
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                scope.spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(seed ^ (w + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    let spaces: Vec<_> = KEYSPACES.iter().map(|name| db.keyspace(name).unwrap()).collect();
                    let mut tag = w << 48;
                    while Instant::now() < deadline {
                        // Each writer owns the keys `w mod WRITERS`: no
                        // conflicts, and the model is exact.
                        let key = rng.u64(0..KEYS / WRITERS) * WRITERS + w;
                        let space = rng.usize(0..KEYSPACES.len());
                        tag += 1;
                        let len = match rng.u8(0..10) {
                            0 => 2000,
                            1..4 => 200,
                            _ => 20,
                        };
                        let written = if rng.u8(0..5) == 0 { None } else { Some(value(tag, len)) };
                        db.update(|tx| match &written {
                            Some(v) => tx.put_in(&spaces[space], &key.to_be_bytes(), v),
                            None => tx.delete_in(&spaces[space], &key.to_be_bytes()),
                        })
                        .expect("commit");
                        model.lock().unwrap().insert((space, key), written);
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        checkpointer.join().unwrap()
    });
    assert!(checkpoints > 0, "no checkpoint ran");
    // Every commit is durable (`Immediate`); the process dies, not the
    // machine.
    dir.kill();
    drop(db);
    let db: Db = open_db(&dir, options()).unwrap();
    db.check().unwrap_or_else(|e| panic!("seed {seed}: after {checkpoints} checkpoints and a kill: {e}"));
    let spaces: Vec<_> = KEYSPACES.iter().map(|name| db.keyspace(name).unwrap()).collect();
    let snapshot = db.snapshot();
    for ((space, key), want) in model.lock().unwrap().iter() {
        let got = snapshot.get_in(&spaces[*space], &key.to_be_bytes()).unwrap();
        assert_eq!(got.as_deref(), want.as_deref(), "seed {seed}: keyspace {space}, key {key}");
    }
    eprintln!("checkpoint_race: {checkpoints} checkpoints in {secs} s, seed {seed}");
}
