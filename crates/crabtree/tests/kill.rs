//! Real-process crash test (fault class F6): a child process does durable
//! writes on real files and reports each acknowledgement over a pipe; the
//! parent kills it with SIGKILL at a random moment, reopens the store and
//! checks what survived.
//!
//! Method. The test re-executes its own binary (`current_exe`, `--exact
//! kill_child`) with `CRABTREE_KILL_CHILD=<db path>`; `kill_child` returns at
//! once when that variable is absent, so a plain `cargo test` runs only the
//! parent. The child opens the store with `Store::open_path` (recovering
//! whatever the previous child left), prints `@open`, then runs `THREADS`
//! writer threads, each on its own keys: `put_durable` (values of mixed
//! sizes, some several pages long so overflow chains are logged) and
//! `delete` + `wait_durable`. Before each operation a thread prints
//! `@B <key> <version>` (version 0 = delete) and after its acknowledgement
//! `@A <key> <version>`; one thread has at most one operation in flight, so
//! each key has at most one. Versions are unique (round, thread, sequence)
//! and the value is a pure function of key and version, so a value that was
//! never written cannot pass for one that was.
//!
//! The parent kills the child at a random moment: right after `@open`
//! (1 in 8), 0-50 ms after spawning it (1 in 8: often during recovery), or
//! 0-50 ms after `@open` (the rest). It then reads every line that reached
//! the pipe and, for each key, keeps the set of states recovery may show:
//! after an acknowledgement only that state; an operation begun but not
//! acknowledged adds its state. In 3 rounds of 4 the parent reopens the
//! store and checks (P1) every acknowledged write is there with its
//! version, or a later in-flight one; acknowledged deletes are absent;
//! (P2) no key outside the key space, no value that is not exactly some
//! version written to that key; (P4) `verify()` passes. The recovered state
//! becomes the model. In the other rounds the next child recovers the
//! crashed state itself (and may be killed while it does: P6), and the
//! allowed sets accumulate until the next check. Every round continues on
//! the same database.
//!
//! Sizes: 200 kills by default, 10,000 with `CRABTREE_TEST_SIZE=long`
//! (`CRABTREE_KILLS` overrides). The seed is printed; `CRABTREE_SEED`
//! replays the kill schedule and the workload choices (the moment a kill
//! lands still depends on the machine). `CRABTREE_KILL_DIR=<dir>` keeps the
//! database in a new directory there for a post-mortem.

mod common;

use common::child::{claimed, mix, self_describing};

use crabtree::raw::{PoolOptions, Store, StoreOptions};
use crabtree::wal::{Durability, WalOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Writer threads in the child.
const THREADS: u64 = 4;
/// Keys per writer thread (few, so keys are overwritten and deleted often).
const KEYS_PER_THREAD: u64 = 24;
/// A child that is never killed gives up after this long (a hung parent
/// must not leave a writer running forever).
const CHILD_LIFETIME_MAX: Duration = Duration::from_secs(60);
/// The parent fails a round whose child never opened within this long.
const OPEN_WAIT_MAX: Duration = Duration::from_secs(30);

const CHILD_ENV: &str = "CRABTREE_KILL_CHILD";
const ROUND_ENV: &str = "CRABTREE_KILL_ROUND";
const SEED_ENV: &str = "CRABTREE_KILL_SEED";

/// Small segments and a low checkpoint threshold, so a child's few
/// milliseconds of writes rotate and recycle segments and run background
/// checkpoints, and kills land in those too.
fn options() -> StoreOptions {
    StoreOptions {
        pool: PoolOptions { page_size: 4096, pool_bytes: 4 << 20, max_pages: 1 << 20 },
        wal: WalOptions {
            segment_size: 256 * 1024,
            buffer_size: 4 << 20,
            durability: Durability::Immediate,
            flush_delay: Duration::from_millis(10),
        },
        checkpoint_bytes: 512 * 1024,
        checkpoint_interval: Duration::from_millis(20),
        background_checkpoints: true,
    }
}

fn key(index: u64) -> Vec<u8> {
    format!("k{index:04}").into_bytes()
}

fn key_index(key: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(key).ok()?;
    let index: u64 = text.strip_prefix('k')?.parse().ok()?;
    (key == self::key(index).as_slice() && index < THREADS * KEYS_PER_THREAD).then_some(index)
}

/// A 64-bit mix (splitmix64's finaliser): values and sizes from versions.
/// Version of a put: unique over the whole test (round, thread, sequence);
/// never 0 (0 names a delete in the protocol).
fn version(round: u64, thread: u64, seq: u64) -> u64 {
    ((round + 1) << 40) | (thread << 32) | (seq & 0xffff_ffff)
}

/// The value of `version` under key `index`: a 16-byte header naming both,
/// then bytes derived from them. Mostly small; 1 in 5 spans a few hundred
/// bytes to two KiB; 1 in 10 spans one to three pages (overflow chain).
fn value(index: u64, version: u64) -> Vec<u8> {
    let h = mix(version ^ index.rotate_left(17));
    let len = match h % 10 {
        0 => 4097 + (h >> 8) as usize % 8192,
        1 | 2 => 200 + (h >> 8) as usize % 1800,
        _ => 16 + (h >> 8) as usize % 120,
    };
    self_describing(index, version, h, len)
}

/// The version a stored value claims, if it is exactly that version's
/// value under key `index` (anything else was never written).
fn version_of(index: u64, found: &[u8]) -> Option<u64> {
    let (claimed_index, claimed) = claimed(found)?;
    (claimed_index == index && claimed != 0 && value(index, claimed) == found).then_some(claimed)
}

/// Prints one protocol line with a single `write` (shorter than
/// `PIPE_BUF`, so it reaches the pipe whole or not at all).
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("@{line}\n").as_bytes()).expect("stdout");
    out.flush().expect("stdout");
}

/// The child: recovers, then writes until killed.
#[test]
fn kill_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    let round: u64 = std::env::var(ROUND_ENV).expect("round").parse().expect("round");
    let seed: u64 = std::env::var(SEED_ENV).expect("seed").parse().expect("seed");
    let store = Store::open_path(Path::new(&path), options()).expect("child open");
    report(&format!("open {}", store.recovery().records));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let store = &store;
            scope.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(mix(seed ^ (round << 8) ^ thread));
                let mut seq = 0u64;
                while started.elapsed() < CHILD_LIFETIME_MAX {
                    let index = thread * KEYS_PER_THREAD + rng.u64(..KEYS_PER_THREAD);
                    seq += 1;
                    if rng.u32(..5) == 0 {
                        report(&format!("B {index} 0"));
                        let (_, lsn) = store.delete(&key(index)).expect("delete");
                        store.wait_durable(lsn).expect("wait_durable");
                        report(&format!("A {index} 0"));
                    } else {
                        let version = version(round, thread, seq);
                        report(&format!("B {index} {version}"));
                        store.put_durable(&key(index), &value(index, version)).expect("put_durable");
                        report(&format!("A {index} {version}"));
                    }
                }
            });
        }
    });
    panic!("kill_child: not killed within {CHILD_LIFETIME_MAX:?}");
}

/// What the parent knows of one key: the states recovery may show
/// (`None` absent, `Some(version)`).
type Allowed = BTreeMap<u64, BTreeSet<Option<u64>>>;

/// When to kill the child.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    RightAfterOpen,
    AfterSpawn(Duration),
    AfterOpen(Duration),
}

/// Counts for the summary line.
#[derive(Default)]
struct Totals {
    acks: u64,
    killed_before_open: u64,
    checks: u64,
    recovered_records: u64,
}

fn spawn_child(path: &Path, round: u64, seed: u64) -> Child {
    Command::new(std::env::current_exe().expect("current_exe"))
        .args(["--exact", "kill_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, path)
        .env(ROUND_ENV, round.to_string())
        .env(SEED_ENV, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child")
}

/// Runs one child and kills it at `at`; returns the protocol lines that
/// reached the pipe (libtest's own output dropped; an incomplete last line
/// dropped: it was cut by the kill).
fn run_child(path: &Path, round: u64, seed: u64, at: KillAt) -> Vec<String> {
    let spawned = Instant::now();
    let mut child = spawn_child(path, round, seed);
    let stdout = child.stdout.take().expect("stdout");
    let (reader, opened_rx) = common::child::read_protocol(stdout);
    match at {
        KillAt::AfterSpawn(delay) => std::thread::sleep(delay.saturating_sub(spawned.elapsed())),
        KillAt::RightAfterOpen | KillAt::AfterOpen(_) => {
            if opened_rx.recv_timeout(OPEN_WAIT_MAX).is_err() {
                let _ = child.kill();
                let output = child.wait_with_output().expect("wait");
                panic!("round {round}: child did not open: {}", String::from_utf8_lossy(&output.stderr));
            }
            if let KillAt::AfterOpen(delay) = at {
                std::thread::sleep(delay);
            }
        }
    }
    let _ = child.kill();
    let stderr = child.stderr.take();
    let status = child.wait().expect("wait");
    let lines = reader.join().expect("reader");
    if status.signal() != Some(SIGKILL) {
        let mut text = String::new();
        if let Some(mut stderr) = stderr {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        }
        panic!("round {round}: child exited on its own ({status}) before the kill:\n{text}");
    }
    lines
}

/// The signal `Child::kill` sends on Unix.
const SIGKILL: i32 = 9;

/// Applies the child's protocol lines to `allowed`.
fn apply(allowed: &mut Allowed, lines: &[String], totals: &mut Totals) {
    let mut in_flight: BTreeMap<u64, u64> = BTreeMap::new();
    for line in lines {
        let mut words = line.split(' ');
        let (kind, index, version) = (words.next(), words.next(), words.next());
        let (Some(kind), Some(index), Some(version)) = (kind, index, version) else { continue };
        if kind == "open" {
            continue;
        }
        let index: u64 = index.parse().expect("index");
        let version: u64 = version.parse().expect("version");
        let state = (version != 0).then_some(version);
        let states = allowed.entry(index).or_insert_with(|| BTreeSet::from([None]));
        match kind {
            "B" => {
                assert!(in_flight.insert(index, version).is_none(), "two operations in flight on key {index}");
                states.insert(state);
            }
            "A" => {
                assert_eq!(in_flight.remove(&index), Some(version), "ack without its begin: {line}");
                *states = BTreeSet::from([state]);
                totals.acks += 1;
            }
            _ => panic!("unknown line {line}"),
        }
    }
}

/// Reopens the store and checks it against `allowed`; the recovered state
/// becomes the new model. Returns the records recovery replayed.
fn check(path: &Path, allowed: &mut Allowed, round: u64, seed: u64) -> u64 {
    let store = Store::open_path(path, options())
        .unwrap_or_else(|e| panic!("round {round} (seed {seed}): reopen after the kill failed: {e}"));
    let records = store.recovery().records;
    common::verified(store.tree());
    let mut found: BTreeMap<u64, u64> = BTreeMap::new();
    for entry in store.tree().range::<&[u8], _>(..) {
        let (k, v) = entry.unwrap_or_else(|e| panic!("round {round} (seed {seed}): scan: {e}"));
        let index = key_index(&k).unwrap_or_else(|| {
            panic!("round {round} (seed {seed}): key {:?} was never written", String::from_utf8_lossy(&k))
        });
        let version = version_of(index, &v).unwrap_or_else(|| {
            panic!("round {round} (seed {seed}): key {index} has a value that was never written ({} bytes)", v.len())
        });
        found.insert(index, version);
    }
    for index in 0..THREADS * KEYS_PER_THREAD {
        let states = allowed.entry(index).or_insert_with(|| BTreeSet::from([None]));
        let state = found.get(&index).copied();
        assert!(
            states.contains(&state),
            "round {round} (seed {seed}): key {index} recovered as {state:?}, allowed {states:?} \
             (an acknowledged write lost, or an acknowledged delete undone)"
        );
        *states = BTreeSet::from([state]);
    }
    assert_eq!(store.tree().len(), found.len() as u64, "round {round} (seed {seed}): entry count");
    store.close().unwrap_or_else(|e| panic!("round {round} (seed {seed}): close: {e}"));
    records
}

/// The parent: kills, reopens, checks, on one database for every round.
#[test]
fn kill_nine() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let seed = common::seed("kill_nine");
    let kills: u64 = match std::env::var("CRABTREE_KILLS") {
        Ok(text) => text.parse().expect("CRABTREE_KILLS must be a count"),
        Err(_) if common::long() => 10_000,
        Err(_) => 200,
    };
    // `CRABTREE_KILL_DIR` keeps the database for a post-mortem (a temp dir
    // is removed when the test fails).
    let (_removed_on_drop, dir) = match std::env::var_os("CRABTREE_KILL_DIR") {
        Some(dir) => (None, tempfile::Builder::new().prefix("kill-").tempdir_in(dir).expect("temp dir").keep()),
        None => {
            let tmp = tempfile::tempdir().expect("temp dir");
            let path = tmp.path().to_path_buf();
            (Some(tmp), path)
        }
    };
    let path = dir.join("kill.crab");
    eprintln!("kill_nine: database {}", path.display());
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut allowed = Allowed::new();
    let mut totals = Totals::default();
    let started = Instant::now();
    for round in 0..kills {
        let at = match rng.u32(..8) {
            0 => KillAt::RightAfterOpen,
            1 => KillAt::AfterSpawn(Duration::from_micros(rng.u64(..50_000))),
            _ => KillAt::AfterOpen(Duration::from_micros(rng.u64(..50_000))),
        };
        let lines = run_child(&path, round, seed, at);
        match lines.first() {
            Some(first) if first.starts_with("open") => {
                totals.recovered_records += first.split(' ').nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
            }
            _ => totals.killed_before_open += 1,
        }
        apply(&mut allowed, &lines, &mut totals);
        // The last round is always checked; otherwise 3 in 4.
        if round + 1 == kills || rng.u32(..4) != 0 {
            totals.recovered_records += check(&path, &mut allowed, round, seed);
            totals.checks += 1;
        }
    }
    eprintln!(
        "kill_nine: seed {seed}: {kills} SIGKILLs ({} before the child finished opening), {} acknowledged \
         durable writes and deletes, {} reopen checks, {} log records replayed, {:.1} s",
        totals.killed_before_open,
        totals.acks,
        totals.checks,
        totals.recovered_records,
        started.elapsed().as_secs_f64()
    );
    assert!(totals.acks > 0, "no write was ever acknowledged: the kills all came too early");
}
