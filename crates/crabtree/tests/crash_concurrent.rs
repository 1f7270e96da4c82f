//! F2: random workloads with concurrent writers and background
//! checkpoints on the simulated directory, power lost at a random I/O
//! operation, recovered and checked (P1, P3, verify), many times.
//!
//! Each writer owns its keys and waits for every operation to be durable
//! (`Immediate`), so at most one of its operations is in flight when power
//! fails. After recovery each writer's keys must hold exactly the state
//! after a prefix of its operations that contains every acknowledged one
//! (P1: nothing acknowledged lost; P3: nothing half-done or invented), the
//! tree must verify (no leaked page either), and the entry count must match.
//!
//! Sizes: 10,000 crash states by default (CI), `CRABTREE_TEST_SIZE=long`:
//! 1,000,000; `CRABTREE_F2_STATES=n` sets the count. `CRABTREE_SEED` sets the
//! base seed (threads make a replay approximate: the crash point and the
//! operations are the same, the interleaving may differ).

mod common;

use common::crash::{Model, Op, model_after, open_store};

use crabtree::Result;
use crabtree::io::{CrashModel, Dir, SimDir};
use crabtree::raw::{PoolOptions, Store, StoreOptions};
use crabtree::wal::{Durability, WalOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const WRITERS: usize = 3;

/// Per writer: `(LSN waited for, durable LSN seen)` of each acknowledged op.
type Acks = Arc<std::sync::Mutex<Vec<(u64, u64)>>>;

fn options(rng: &mut fastrand::Rng) -> StoreOptions {
    StoreOptions {
        pool: PoolOptions { page_size: 512, pool_bytes: 512 * rng.usize(16..40), max_pages: 1 << 16 },
        wal: WalOptions {
            segment_size: 16 * 1024,
            buffer_size: 4 << 20,
            durability: Durability::Immediate,
            flush_delay: Duration::from_millis(5),
        },
        checkpoint_bytes: rng.u64(8 * 1024..64 * 1024),
        checkpoint_interval: Duration::from_millis(20),
        background_checkpoints: true,
    }
}

fn ops_for(writer: usize, rng: &mut fastrand::Rng, count: usize) -> Vec<Op> {
    let mut ops = Vec::with_capacity(count);
    for n in 0..count {
        let key = format!("w{writer}-{:03}", rng.u32(0..40)).into_bytes();
        if rng.u8(0..4) == 0 {
            ops.push(Op::Delete(key));
        } else {
            let len = if rng.u8(0..12) == 0 { rng.usize(400..1500) } else { rng.usize(0..60) };
            let value: Vec<u8> = (0..len).map(|i| (i + n + writer) as u8).collect();
            ops.push(Op::Put(key, value));
        }
    }
    ops
}

fn open(dir: &SimDir, options: StoreOptions) -> Result<Store> {
    open_store(dir, options)
}

/// One crash state; panics with `context` on a violated post-condition.
/// Returns whether power failed before every operation was acknowledged.
fn one_state(seed: u64) -> bool {
    let mut rng = fastrand::Rng::with_seed(seed);
    let model = match rng.u8(0..3) {
        0 => CrashModel { keep: 0, drop: 1, tear: 0, garbage: 0, fsync_failure_drops_pending: true },
        1 => CrashModel { keep: 1, drop: 1, tear: 1, garbage: 50, fsync_failure_drops_pending: true },
        _ => CrashModel { keep: 1, drop: 0, tear: 1, garbage: 100, fsync_failure_drops_pending: true },
    };
    let options = options(&mut rng);
    let dir = SimDir::new(seed, model);
    // A database with some history first (so recovery starts from a
    // checkpoint with a free list), then the crash run.
    let history: Vec<Vec<Op>> = (0..WRITERS).map(|w| ops_for(w, &mut rng, 20)).collect();
    {
        let store = open(&dir, options.clone()).unwrap();
        for ops in &history {
            for op in ops {
                apply(&store, op).unwrap();
            }
        }
        store.close().unwrap();
    }
    let ops: Vec<Vec<Op>> = (0..WRITERS).map(|w| ops_for(w, &mut rng, 25)).collect();
    let crash_after = rng.u64(0..260);
    let context = format!("seed {seed} (CRABTREE_SEED={seed}), model {model:?}, power off after {crash_after} ops");
    let store = Arc::new(open(&dir, options.clone()).unwrap_or_else(|e| panic!("{context}: open: {e}")));
    dir.power_off_after(crash_after);
    let acked: Vec<Arc<AtomicUsize>> = (0..WRITERS).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let lsns: Vec<Acks> = (0..WRITERS).map(|_| Arc::default()).collect();
    std::thread::scope(|scope| {
        for (w, ops) in ops.iter().enumerate() {
            let store = Arc::clone(&store);
            let acked = Arc::clone(&acked[w]);
            let lsns = Arc::clone(&lsns[w]);
            scope.spawn(move || {
                for op in ops {
                    if apply(&store, op).is_err() {
                        return;
                    }
                    lsns.lock().unwrap().push((crabtree::raw::last_lsn().0, store.wal().durable_lsn().0));
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    dir.crash();
    drop(store);
    let images: Vec<(String, Vec<u8>)> =
        dir.list().unwrap().into_iter().map(|name| (name.clone(), dir.disk(&name).unwrap().durable_image())).collect();
    let store = open(&dir, options).unwrap_or_else(|e| panic!("{context}: recovery: {e}"));
    let report = store.tree().verify().unwrap_or_else(|e| panic!("{context}: verify: {e}"));
    if !report.is_ok() {
        dump(&images, b"\xff\xfe-no-such-key");
        panic!("{context}: verify: {report:?}; recovery {:?}", store.recovery());
    }
    let got: Model = store.tree().range::<&[u8], _>(..).map(|item| item.unwrap()).collect();
    assert_eq!(store.tree().len(), got.len() as u64, "{context}: entry count");
    for w in 0..WRITERS {
        let prefix = format!("w{w}-").into_bytes();
        let mine: Model =
            got.iter().filter(|(k, _)| k.starts_with(&prefix)).map(|(k, v)| (k.clone(), v.clone())).collect();
        let done = acked[w].load(Ordering::SeqCst);
        let all: Vec<Op> = history[w].iter().chain(&ops[w]).cloned().collect();
        let base = history[w].len();
        let fits = [done, done + 1].iter().any(|&n| n <= ops[w].len() && model_after(&all[..base + n]) == mine);
        if !fits {
            let want = model_after(&all[..base + done]);
            let missing: Vec<_> = want
                .iter()
                .filter(|(k, v)| mine.get(*k) != Some(v))
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.len(), mine.get(k).map(Vec::len)))
                .collect();
            let extra: Vec<_> = mine
                .keys()
                .filter(|k| !want.contains_key(*k))
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            let tail: Vec<String> = ops[w][done.saturating_sub(3)..(done + 1).min(ops[w].len())]
                .iter()
                .map(|op| match op {
                    Op::Put(k, v) => format!("put {} ({} B)", String::from_utf8_lossy(k), v.len()),
                    Op::Delete(k) => format!("delete {}", String::from_utf8_lossy(k)),
                    Op::Checkpoint => "checkpoint".into(),
                })
                .collect();
            for (key, _, _) in &missing {
                dump(&images, key.as_bytes());
            }
            panic!(
                "{context}: writer {w} acknowledged {done} of {} ops; recovered state matches neither that prefix nor one more; differs at {missing:?}, extra {extra:?}; last ops {tail:?}; acked (lsn, durable) {:?}; recovery {:?}",
                ops[w].len(),
                lsns[w].lock().unwrap(),
                store.recovery()
            );
        }
    }
    drop(store);
    (0..WRITERS).any(|w| acked[w].load(Ordering::SeqCst) < ops[w].len())
}

/// Diagnostics for a failure: every log record touching `key` and the
/// state of the pages they name in the crashed data file.
fn dump(images: &[(String, Vec<u8>)], key: &[u8]) {
    use crabtree::raw::page::redo::{self, Entry};
    use crabtree::wal::{RecordType, Wal};
    let dir = SimDir::new(0, CrashModel::default());
    for (name, image) in images {
        dir.open(name, true).unwrap();
        dir.disk(name).unwrap().set_durable_image(image.clone());
    }
    let data = images.iter().find(|(n, _)| n == "data").map(|(_, i)| i.clone()).unwrap_or_default();
    let page_lsn = |pid: u64| {
        let at = pid as usize * 512;
        data.get(at + 8..at + 16).map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    let contains = |hay: &[u8]| hay.windows(key.len()).any(|w| w == key);
    let wal = WalOptions {
        segment_size: 16 * 1024,
        buffer_size: 4 << 20,
        durability: Durability::Immediate,
        flush_delay: Duration::from_secs(3600),
    };
    eprintln!("--- data pages holding {:?}", String::from_utf8_lossy(key));
    for (pid, page) in data.chunks(512).enumerate() {
        if contains(page) {
            eprintln!(
                "  page {pid}: type {} flags {:#x} lsn {:?}",
                page[4],
                u16::from_le_bytes([page[6], page[7]]),
                page_lsn(pid as u64)
            );
        }
    }
    eprintln!("--- log records touching {:?}", String::from_utf8_lossy(key));
    let result = Wal::open(Arc::new(dir.clone()), wal, |lsn, kind, payload| {
        let end = lsn.0 + crabtree::wal::record_size(payload.len()) as u64;
        match kind {
            RecordType::MTR => {
                for entry in redo::decode(payload, lsn).flatten() {
                    let hit = match &entry {
                        Entry::LeafPut { cell, .. } => contains(cell),
                        Entry::LeafRemove { key: k, .. } => *k == key,
                        Entry::Image { head, tail, .. } => contains(head) || contains(tail),
                        _ => false,
                    };
                    if !hit {
                        let what = match &entry {
                            Entry::Free { pid } => format!("free {}", pid.0),
                            Entry::Claim { pid } => format!("claim {}", pid.0),
                            Entry::SetRoot { slot, value } => format!("root {slot}={value}"),
                            other => format!(
                                "{} page {}",
                                match other {
                                    Entry::LeafPut { .. } => "put",
                                    Entry::LeafRemove { .. } => "remove",
                                    Entry::Image { provisional: true, .. } => "prov",
                                    _ => "img",
                                },
                                other.page().map(|p| p.0).unwrap_or(0)
                            ),
                        };
                        eprintln!("    (lsn {} {what})", lsn.0);
                    }
                    if hit {
                        let pid = entry.page().map(|p| p.0).unwrap_or(0);
                        let what = match &entry {
                            Entry::LeafPut { .. } => "put",
                            Entry::LeafRemove { .. } => "remove",
                            Entry::Image { provisional: true, .. } => "provisional image",
                            _ => "image",
                        };
                        eprintln!("  lsn {}..{end} page {pid} (disk LSN {:?}): {what}", lsn.0, page_lsn(pid));
                    }
                }
            }
            RecordType::CHECKPOINT => eprintln!(
                "  lsn {}..{end}: checkpoint {:?}",
                lsn.0,
                payload.chunks(8).map(|w| u64::from_le_bytes(w.try_into().unwrap())).collect::<Vec<_>>()
            ),
            RecordType::CHECKPOINT_FREE => eprintln!(
                "  lsn {}..{end}: free {:?}",
                lsn.0,
                payload.chunks(8).map(|w| u64::from_le_bytes(w.try_into().unwrap())).collect::<Vec<_>>()
            ),
            RecordType::CHECKPOINT_BEGIN => eprintln!("  lsn {}..{end}: begin", lsn.0),
            _ => {}
        }
        Ok(())
    });
    let end = result.map(|(_, end)| end);
    eprintln!("--- log end {end:?}");
    if let Ok(end) = end {
        let payload = 16 * 1024 - 4096;
        let index = end.end.0 / payload;
        let offset = 4096 + (end.end.0 % payload) as usize;
        for (name, image) in images.iter().filter(|(n, _)| n.ends_with(".wal")) {
            let header: Vec<u8> = image.iter().take(48).copied().collect();
            eprintln!("  segment {name}: header {header:?}");
            if let Some(bytes) = image.get(offset..offset + 48) {
                let len = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
                let lsn = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
                let inc = u32::from_le_bytes(bytes[20..24].try_into().unwrap());
                eprintln!(
                    "    at end (index {index}, offset {offset}): len {len} lsn {lsn} type {} inc {inc} raw {bytes:?}",
                    bytes[16]
                );
            }
        }
    }
}

fn apply(store: &Store, op: &Op) -> Result<()> {
    match op {
        Op::Put(k, v) => store.put_durable(k, v).map(|_| ()),
        Op::Delete(k) => {
            let (_, lsn) = store.delete(k)?;
            store.wait_durable(lsn)
        }
        Op::Checkpoint => store.checkpoint().map(|_| ()),
    }
}

#[test]
fn f2_concurrent_writers_and_checkpoints_crash_at_random_points() {
    let states: u64 = match std::env::var("CRABTREE_F2_STATES") {
        Ok(n) => n.parse().expect("CRABTREE_F2_STATES must be a number"),
        Err(_) if common::long() => 1_000_000,
        Err(_) => 10_000,
    };
    let base = common::seed("f2");
    let started = std::time::Instant::now();
    let mut cut = 0u64;
    for i in 0..states {
        cut += u64::from(one_state(base.wrapping_add(i)));
        if (i + 1) % 10_000 == 0 {
            eprintln!("f2: {} states, {:.0} s", i + 1, started.elapsed().as_secs_f64());
        }
    }
    eprintln!("f2: {states} crash states ({cut} cut a writer short) in {:.1} s", started.elapsed().as_secs_f64());
    assert!(cut * 4 >= states, "too few crashes landed inside the workload: {cut} of {states}");
}
