//! Real-process crash tests of transactions through the public `Db` API
//! (issue 9: "a bank test ... after a crash"; multi-key, multi-keyspace
//! transactions are wholly present or wholly absent after any crash, and
//! every transaction acknowledged as durable is present).
//!
//! Method (as in `tests/kill.rs`). The test re-executes its own binary
//! (`current_exe`, `--exact <child test>`) with an environment variable
//! naming the database; the child tests return at once when it is absent,
//! so a plain `cargo test` runs only the parents. The child opens the
//! database with `Db::open_with` (recovering whatever the previous child
//! left), prints `@open`, then runs writer threads in `Immediate`
//! transactions, printing `@B ...` before each commit and `@A ...` after it
//! returned (one `write` per line, so a line reaches the pipe whole or not
//! at all). The parent SIGKILLs it 0-60 ms after `@open` (1 in 8 rounds:
//! 0-60 ms after spawning it, often during recovery), reads every line
//! that reached the pipe, and in 3 rounds of 4 (always the last) reopens
//! the database and checks it; in the other rounds the next child recovers
//! the crashed state itself. Every round continues on the same database.
//!
//! `bank_kill_nine`: 20 accounts, 10 in keyspace `checking` and 10 in
//! `savings`, 1,000 each, committed by the parent before the first child.
//! Four child threads move random amounts between random pairs of accounts
//! (often across keyspaces) and, in the same transaction, write a marker
//! `t/<id>` = (from, to, amount) into keyspace `transfers`; ids are unique
//! over the whole test. After a kill: `check()` passes; the total is
//! 20,000; every account's balance is exactly 1,000 plus the net of the
//! markers present (so no transfer is half there, and no marker is there
//! without its amounts or the other way round); every acknowledged id has
//! its marker; every marker was begun by some child; markers seen at an
//! earlier check are still there.
//!
//! `multikey_kill_nine`: K = 8 keys spread over keyspaces `m0`, `m1`, `m2`.
//! Three child threads each read all K keys (they must agree), and write
//! generation g + 1 to all of them in one transaction (conflicts retried;
//! values of a few hundred bytes, 1 generation in 4 longer than a page so
//! overflow chains are logged). After a kill: `check()` passes; every key
//! holds exactly the value of one generation, the same generation for all
//! K keys; that generation is at least the highest acknowledged one and is
//! one that was begun (or the one found at the previous check).
//!
//! Sizes: bank 60 kills, multi-key 40 kills; `CRABTREE_TEST_SIZE=long`
//! 2,000 each (`CRABTREE_KILLS` overrides both). The seed is printed;
//! `CRABTREE_SEED` replays the kill schedule and the workload choices (the
//! moment a kill lands still depends on the machine).
//! `CRABTREE_KILL_DIR=<dir>` keeps the databases in new directories there
//! for a post-mortem.

mod common;

use common::child::{claimed, mix, self_describing};

use crabtree::{Db, Durability, Error, Keyspace, Options};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child that is never killed gives up after this long.
const CHILD_LIFETIME_MAX: Duration = Duration::from_secs(60);
/// The parent fails a round whose child never opened within this long.
const OPEN_WAIT_MAX: Duration = Duration::from_secs(30);
/// Kills land up to this long after the child opened (or was spawned).
const KILL_WINDOW_MICROS: u64 = 60_000;

const PATH_ENV: &str = "CRABTREE_DBKILL_PATH";
const ROUND_ENV: &str = "CRABTREE_DBKILL_ROUND";
const SEED_ENV: &str = "CRABTREE_DBKILL_SEED";

/// The signal `Child::kill` sends on Unix.
const SIGKILL: i32 = 9;

/// Small log segments, frequent checkpoints and a busy vacuum, so a child's
/// few milliseconds of commits rotate segments and checkpoint, and kills
/// land in those too.
fn options() -> Options {
    Options {
        page_size: 4096,
        memory_budget: 4 << 20,
        durability: Durability::Immediate,
        log_segment_size: 256 * 1024,
        checkpoint_bytes: 512 * 1024,
        vacuum_interval: Some(Duration::from_millis(5)),
        ..Options::default()
    }
}

/// Prints one protocol line with a single `write` (shorter than
/// `PIPE_BUF`, so it reaches the pipe whole or not at all).
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("@{line}\n").as_bytes()).expect("stdout");
    out.flush().expect("stdout");
}

/// The child's database path, round and seed, if this process is a child.
fn child_env() -> Option<(PathBuf, u64, u64)> {
    let path = std::env::var_os(PATH_ENV)?;
    let round = std::env::var(ROUND_ENV).expect("round").parse().expect("round");
    let seed = std::env::var(SEED_ENV).expect("seed").parse().expect("seed");
    Some((PathBuf::from(path), round, seed))
}

/// Whether an error means "run the transaction again".
fn retry(error: &Error) -> bool {
    matches!(error, Error::Conflict)
}

/// When to kill the child.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    AfterSpawn(Duration),
    AfterOpen(Duration),
}

fn kill_at(rng: &mut fastrand::Rng) -> KillAt {
    let delay = Duration::from_micros(rng.u64(..=KILL_WINDOW_MICROS));
    if rng.u32(..8) == 0 { KillAt::AfterSpawn(delay) } else { KillAt::AfterOpen(delay) }
}

/// Runs child test `child` on `path` and kills it at `at`; returns the
/// protocol lines that reached the pipe (libtest's own output dropped; an
/// incomplete last line dropped: it was cut by the kill).
fn run_child(child_test: &str, path: &Path, round: u64, seed: u64, at: KillAt) -> Vec<String> {
    let spawned = Instant::now();
    let mut child: Child = Command::new(std::env::current_exe().expect("current_exe"))
        .args(["--exact", child_test, "--nocapture", "--test-threads=1"])
        .env(PATH_ENV, path)
        .env(ROUND_ENV, round.to_string())
        .env(SEED_ENV, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let (reader, opened_rx) = common::child::read_protocol(stdout);
    match at {
        KillAt::AfterSpawn(delay) => std::thread::sleep(delay.saturating_sub(spawned.elapsed())),
        KillAt::AfterOpen(delay) => {
            if opened_rx.recv_timeout(OPEN_WAIT_MAX).is_err() {
                let _ = child.kill();
                let output = child.wait_with_output().expect("wait");
                panic!(
                    "{child_test} round {round} (seed {seed}): child did not open: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::thread::sleep(delay);
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
        panic!("{child_test} round {round} (seed {seed}): child exited on its own ({status}) before the kill:\n{text}");
    }
    lines
}

/// The number of kills: `CRABTREE_KILLS`, else `long` or `quick`.
fn kills(quick: u64, long: u64) -> u64 {
    match std::env::var("CRABTREE_KILLS") {
        Ok(text) => text.parse().expect("CRABTREE_KILLS must be a count"),
        Err(_) if common::long() => long,
        Err(_) => quick,
    }
}

/// A directory for one test's database: under `CRABTREE_KILL_DIR` (kept)
/// or a temp dir (removed when the guard drops).
fn database_dir(prefix: &str) -> (Option<tempfile::TempDir>, PathBuf) {
    match std::env::var_os("CRABTREE_KILL_DIR") {
        Some(dir) => (None, tempfile::Builder::new().prefix(prefix).tempdir_in(dir).expect("temp dir").keep()),
        None => {
            let tmp = tempfile::Builder::new().prefix(prefix).tempdir().expect("temp dir");
            let path = tmp.path().to_path_buf();
            (Some(tmp), path)
        }
    }
}

/// Opens the database in a child. The lock can still be held for a moment
/// by the parent's last check: another test of the parent process may
/// have forked a child of its own while that check's database was open,
/// and the fork holds the open file (and its `flock`) until it execs. So
/// `Locked` is retried for up to 10 s (it was seen once, on a loaded
/// 2-core machine).
fn open_in_child(path: &Path) -> Db {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Db::open_with(path, options()) {
            Err(Error::Locked) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            opened => return opened.expect("child open"),
        }
    }
}

/// Opens the database in the parent, failing with the round and seed.
fn reopen(path: &Path, test: &str, round: u64, seed: u64) -> Db {
    let db = Db::open_with(path, options())
        .unwrap_or_else(|e| panic!("{test} round {round} (seed {seed}): reopen after the kill failed: {e}"));
    db.check().unwrap_or_else(|e| panic!("{test} round {round} (seed {seed}): check after the kill: {e}"));
    db
}

/// Whether this round is checked: 3 in 4, and always the last.
fn checked_round(rng: &mut fastrand::Rng, round: u64, kills: u64) -> bool {
    round + 1 == kills || rng.u32(..4) != 0
}

// ---------------------------------------------------------------- bank --

const ACCOUNTS: u64 = 20;
const INITIAL: u64 = 1_000;
const BANK_THREADS: u64 = 4;

fn account(i: u64) -> Vec<u8> {
    format!("acct-{i:02}").into_bytes()
}

/// Accounts below ACCOUNTS / 2 live in `checking`, the rest in `savings`.
fn account_ks<'a>(i: u64, checking: &'a Keyspace, savings: &'a Keyspace) -> &'a Keyspace {
    if i < ACCOUNTS / 2 { checking } else { savings }
}

fn balance(value: &[u8]) -> u64 {
    u64::from_le_bytes(value.try_into().expect("an 8-byte balance"))
}

fn marker(id: u64) -> Vec<u8> {
    format!("t/{id}").into_bytes()
}

/// A marker's value: from, to, amount.
fn marker_value(from: u64, to: u64, amount: u64) -> Vec<u8> {
    [from, to, amount].iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn decode_marker(key: &[u8], value: &[u8]) -> Option<(u64, (u64, u64, u64))> {
    let id: u64 = std::str::from_utf8(key).ok()?.strip_prefix("t/")?.parse().ok()?;
    if key != marker(id).as_slice() || value.len() != 24 {
        return None;
    }
    let word = |i: usize| u64::from_le_bytes(value[i * 8..i * 8 + 8].try_into().unwrap());
    let (from, to, amount) = (word(0), word(1), word(2));
    (from < ACCOUNTS && to < ACCOUNTS && from != to).then_some((id, (from, to, amount)))
}

struct BankKeyspaces {
    checking: Keyspace,
    savings: Keyspace,
    transfers: Keyspace,
}

fn bank_keyspaces(db: &Db) -> BankKeyspaces {
    BankKeyspaces {
        checking: db.keyspace("checking").expect("keyspace"),
        savings: db.keyspace("savings").expect("keyspace"),
        transfers: db.keyspace("transfers").expect("keyspace"),
    }
}

/// One transfer in one transaction; `Ok(Some(..))` once committed,
/// `Ok(None)` when it must be retried.
fn transfer(db: &Db, ks: &BankKeyspaces, id: u64, from: u64, to: u64, pick: u64) -> crabtree::Result<Option<u64>> {
    let mut tx = db.begin();
    let (from_ks, to_ks) = (account_ks(from, &ks.checking, &ks.savings), account_ks(to, &ks.checking, &ks.savings));
    let a = balance(&tx.get_in(from_ks, &account(from))?.expect("account missing in the child"));
    let b = balance(&tx.get_in(to_ks, &account(to))?.expect("account missing in the child"));
    let amount = if a == 0 { 0 } else { pick % (a + 1) };
    tx.put_in(from_ks, &account(from), &(a - amount).to_le_bytes())?;
    tx.put_in(to_ks, &account(to), &(b + amount).to_le_bytes())?;
    tx.put_in(&ks.transfers, &marker(id), &marker_value(from, to, amount))?;
    report(&format!("B {id} {from} {to} {amount}"));
    match tx.commit() {
        Ok(()) => Ok(Some(amount)),
        Err(e) if retry(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The bank child: recovers, then transfers until killed.
#[test]
fn bank_child() {
    let Some((path, round, seed)) = child_env() else { return };
    let db = open_in_child(&path);
    let ks = bank_keyspaces(&db);
    report("open");
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..BANK_THREADS {
            let (db, ks) = (&db, &ks);
            scope.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(mix(seed ^ (round << 8) ^ thread));
                let mut seq = 0u64;
                while started.elapsed() < CHILD_LIFETIME_MAX {
                    seq += 1;
                    // Unique over the whole test: round, thread, sequence.
                    let id = ((round + 1) << 40) | (thread << 32) | seq;
                    let from = rng.u64(..ACCOUNTS);
                    let to = (from + 1 + rng.u64(..ACCOUNTS - 1)) % ACCOUNTS;
                    let pick = rng.u64(..);
                    loop {
                        match transfer(db, ks, id, from, to, pick) {
                            Ok(Some(amount)) => {
                                report(&format!("A {id} {from} {to} {amount}"));
                                break;
                            }
                            Ok(None) => std::thread::sleep(Duration::from_micros(rng.u64(..200))),
                            Err(e) if retry(&e) => {}
                            Err(e) => panic!("bank_child round {round}: transfer {id}: {e}"),
                        }
                    }
                }
            });
        }
    });
    panic!("bank_child: not killed within {CHILD_LIFETIME_MAX:?}");
}

/// What the parent knows of the bank across rounds.
#[derive(Default)]
struct BankModel {
    /// Every transfer a child began.
    begun: BTreeSet<u64>,
    /// Acknowledged since the start (id -> from, to, amount).
    acked: BTreeMap<u64, (u64, u64, u64)>,
    /// Markers found at the last check.
    found: BTreeSet<u64>,
    /// Acknowledgements in the current unchecked stretch, for messages.
    acked_since_check: u64,
}

fn parse_bank_line(line: &str) -> Option<(&str, u64, (u64, u64, u64))> {
    let mut words = line.split(' ');
    let kind = words.next()?;
    let mut next = || words.next()?.parse::<u64>().ok();
    Some((kind, next()?, (next()?, next()?, next()?)))
}

fn bank_apply(model: &mut BankModel, lines: &[String]) {
    for line in lines {
        if line.starts_with("open") {
            continue;
        }
        let (kind, id, transfer) = parse_bank_line(line).unwrap_or_else(|| panic!("bad line {line:?}"));
        match kind {
            "B" => {
                model.begun.insert(id);
            }
            "A" => {
                assert!(model.begun.contains(&id), "ack without its begin: {line}");
                assert!(model.acked.insert(id, transfer).is_none(), "transfer {id} acknowledged twice");
                model.acked_since_check += 1;
            }
            _ => panic!("unknown line {line:?}"),
        }
    }
}

/// Reopens the bank and checks it against `model`; returns the number of
/// markers found.
fn bank_check(path: &Path, model: &mut BankModel, round: u64, seed: u64) -> usize {
    let test = "bank_kill_nine";
    let db = reopen(path, test, round, seed);
    let ks = bank_keyspaces(&db);
    let snap = db.snapshot();
    let ctx = format!("{test} round {round} (seed {seed})");
    // Balances, by point reads and by scans (no stray keys).
    let states: Vec<Option<u64>> = (0..ACCOUNTS)
        .map(|i| {
            let ks = account_ks(i, &ks.checking, &ks.savings);
            let value = snap.get_in(ks, &account(i)).unwrap_or_else(|e| panic!("{ctx}: get account {i}: {e}"));
            value.map(|value| balance(&value))
        })
        .collect();
    let balances: Vec<u64> = states.iter().filter_map(|state| *state).collect();
    assert!(
        balances.len() == ACCOUNTS as usize,
        "{ctx}: accounts missing: balances {states:?} ({} acknowledged so far, {} since the last check; \
         snapshot timestamp {})",
        model.acked.len(),
        model.acked_since_check,
        snap.timestamp()
    );
    for (name, keyspace, range) in
        [("checking", &ks.checking, 0..ACCOUNTS / 2), ("savings", &ks.savings, ACCOUNTS / 2..ACCOUNTS)]
    {
        let keys: Vec<Vec<u8>> = snap
            .range_in::<&[u8], _>(keyspace, ..)
            .unwrap_or_else(|e| panic!("{ctx}: scan {name}: {e}"))
            .map(|entry| entry.unwrap_or_else(|e| panic!("{ctx}: scan {name}: {e}")).0)
            .collect();
        let expected: Vec<Vec<u8>> = range.map(account).collect();
        assert_eq!(keys, expected, "{ctx}: keyspace {name} holds other keys than its accounts");
    }
    // Markers.
    let mut markers: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    for entry in snap.range_in::<&[u8], _>(&ks.transfers, ..).unwrap_or_else(|e| panic!("{ctx}: scan transfers: {e}")) {
        let (key, value) = entry.unwrap_or_else(|e| panic!("{ctx}: scan transfers: {e}"));
        let (id, transfer) = decode_marker(&key, &value).unwrap_or_else(|| {
            panic!("{ctx}: marker {:?} = {value:?} was never written", String::from_utf8_lossy(&key))
        });
        markers.insert(id, transfer);
    }
    let total: u64 = balances.iter().sum();
    // Every account is its initial balance plus the net of the markers.
    let mut expected = vec![INITIAL as i128; ACCOUNTS as usize];
    for &(from, to, amount) in markers.values() {
        expected[from as usize] -= amount as i128;
        expected[to as usize] += amount as i128;
    }
    let wrong: Vec<String> = (0..ACCOUNTS as usize)
        .filter(|&i| expected[i] != balances[i] as i128)
        .map(|i| format!("account {i}: found {}, markers say {}", balances[i], expected[i]))
        .collect();
    assert!(
        total == ACCOUNTS * INITIAL && wrong.is_empty(),
        "{ctx}: a transfer is half there: total {total} (expected {}), {} markers, {} acknowledged so far \
         ({} since the last check); {}",
        ACCOUNTS * INITIAL,
        markers.len(),
        model.acked.len(),
        model.acked_since_check,
        wrong.join("; ")
    );
    // Every acknowledged transfer is there, exactly as acknowledged.
    let missing: Vec<String> = model
        .acked
        .iter()
        .filter(|(id, _)| !markers.contains_key(id))
        .take(10)
        .map(|(id, (from, to, amount))| format!("{id} ({from} -> {to}: {amount})"))
        .collect();
    assert!(
        missing.is_empty(),
        "{ctx}: acknowledged transfers lost ({} acknowledged, {} markers found), first: {}",
        model.acked.len(),
        markers.len(),
        missing.join(", ")
    );
    for (id, acked) in &model.acked {
        assert_eq!(markers.get(id), Some(acked), "{ctx}: transfer {id} recovered unlike its acknowledgement");
    }
    // Every marker was begun; markers seen before are still there.
    let unknown: Vec<u64> = markers.keys().filter(|id| !model.begun.contains(id)).copied().take(10).collect();
    assert!(unknown.is_empty(), "{ctx}: markers of transfers never begun: {unknown:?}");
    let vanished: Vec<u64> = model.found.iter().filter(|id| !markers.contains_key(id)).copied().take(10).collect();
    assert!(vanished.is_empty(), "{ctx}: markers found at an earlier check have vanished: {vanished:?}");
    model.found = markers.keys().copied().collect();
    model.acked_since_check = 0;
    drop(snap);
    drop(db);
    markers.len()
}

/// The bank parent: sets up the accounts, then kills, reopens, checks.
#[test]
fn bank_kill_nine() {
    if child_env().is_some() {
        return;
    }
    let test = "bank_kill_nine";
    let seed = common::seed(test);
    let kills = kills(60, 2_000);
    let (_removed_on_drop, dir) = database_dir("db-kill-bank-");
    let path = dir.join("bank.crab");
    eprintln!("{test}: database {}", path.display());
    {
        let db = Db::open_with(&path, options()).expect("create");
        let ks = bank_keyspaces(&db);
        let mut tx = db.begin();
        for i in 0..ACCOUNTS {
            tx.put_in(account_ks(i, &ks.checking, &ks.savings), &account(i), &INITIAL.to_le_bytes()).unwrap();
        }
        tx.commit().expect("initial balances");
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut model = BankModel::default();
    let (mut checks, mut before_open, mut markers) = (0u64, 0u64, 0usize);
    let started = Instant::now();
    for round in 0..kills {
        let lines = run_child("bank_child", &path, round, seed, kill_at(&mut rng));
        if !lines.first().is_some_and(|l| l.starts_with("open")) {
            before_open += 1;
        }
        bank_apply(&mut model, &lines);
        if checked_round(&mut rng, round, kills) {
            markers = bank_check(&path, &mut model, round, seed);
            checks += 1;
        }
    }
    eprintln!(
        "{test}: seed {seed}: {kills} SIGKILLs ({before_open} before the child opened), {} transfers begun, \
         {} acknowledged, {markers} present at the end, {checks} reopen checks, {:.1} s",
        model.begun.len(),
        model.acked.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(!model.acked.is_empty(), "no transfer was ever acknowledged: the kills all came too early");
}

// ----------------------------------------------------------- multi-key --

/// Keys written together by every multi-key transaction.
const K: u64 = 8;
const MULTI_KEYSPACES: u64 = 3;
const MULTI_THREADS: u64 = 3;

fn multi_key(i: u64) -> Vec<u8> {
    format!("m{i}").into_bytes()
}

fn multi_keyspaces(db: &Db) -> Vec<Keyspace> {
    (0..MULTI_KEYSPACES).map(|k| db.keyspace(&format!("m{k}")).expect("keyspace")).collect()
}

/// The value of key `i` at generation `g`: key and generation, then bytes
/// derived from them; a few hundred bytes, 1 generation in 4 one to two
/// pages long (overflow chains).
fn multi_value(i: u64, g: u64) -> Vec<u8> {
    let h = mix(g.rotate_left(7) ^ i);
    let len = if mix(g).is_multiple_of(4) { 4097 + (h >> 8) as usize % 4096 } else { 200 + (h >> 8) as usize % 400 };
    self_describing(i, g, h, len)
}

/// The generation a stored value claims, if it is exactly that
/// generation's value under key `i`.
fn generation_of(i: u64, found: &[u8]) -> Option<u64> {
    let (claimed_key, g) = claimed(found)?;
    (claimed_key == i && multi_value(i, g) == found).then_some(g)
}

/// The multi-key child: recovers, then writes generations until killed.
#[test]
fn multikey_child() {
    let Some((path, round, seed)) = child_env() else { return };
    let db = open_in_child(&path);
    let keyspaces = multi_keyspaces(&db);
    report("open");
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..MULTI_THREADS {
            let (db, keyspaces) = (&db, &keyspaces);
            scope.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(mix(seed ^ (round << 8) ^ thread));
                while started.elapsed() < CHILD_LIFETIME_MAX {
                    let outcome = (|| -> crabtree::Result<u64> {
                        let mut tx = db.begin();
                        let mut seen = BTreeSet::new();
                        for i in 0..K {
                            let ks = &keyspaces[(i % MULTI_KEYSPACES) as usize];
                            let value = tx.get_in(ks, &multi_key(i))?.expect("key missing in the child");
                            let g = generation_of(i, &value)
                                .unwrap_or_else(|| panic!("multikey_child round {round}: key {i}: bad value"));
                            seen.insert(g);
                        }
                        assert_eq!(seen.len(), 1, "multikey_child round {round}: a snapshot sees generations {seen:?}");
                        let g = seen.first().unwrap() + 1;
                        for i in 0..K {
                            tx.put_in(&keyspaces[(i % MULTI_KEYSPACES) as usize], &multi_key(i), &multi_value(i, g))?;
                        }
                        report(&format!("B {g}"));
                        tx.commit()?;
                        Ok(g)
                    })();
                    match outcome {
                        Ok(g) => report(&format!("A {g}")),
                        Err(e) if retry(&e) => std::thread::sleep(Duration::from_micros(rng.u64(..300))),
                        Err(e) => panic!("multikey_child round {round}: {e}"),
                    }
                }
            });
        }
    });
    panic!("multikey_child: not killed within {CHILD_LIFETIME_MAX:?}");
}

/// What the parent knows of the multi-key database.
#[derive(Default)]
struct MultiModel {
    /// Generations some child tried to commit since the last check.
    begun: BTreeSet<u64>,
    /// The highest acknowledged generation.
    acked_max: u64,
    /// Acknowledgements over the whole test.
    acks: u64,
    /// The generation found at the last check.
    found: u64,
}

fn multi_apply(model: &mut MultiModel, lines: &[String]) {
    for line in lines {
        if line.starts_with("open") {
            continue;
        }
        let (kind, g) = line.split_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        let g: u64 = g.parse().unwrap_or_else(|_| panic!("bad line {line:?}"));
        match kind {
            "B" => {
                model.begun.insert(g);
            }
            "A" => {
                assert!(model.begun.contains(&g), "ack without its begin: {line}");
                model.acked_max = model.acked_max.max(g);
                model.acks += 1;
            }
            _ => panic!("unknown line {line:?}"),
        }
    }
}

fn multi_check(path: &Path, model: &mut MultiModel, round: u64, seed: u64) {
    let test = "multikey_kill_nine";
    let ctx = format!("{test} round {round} (seed {seed})");
    let db = reopen(path, test, round, seed);
    let keyspaces = multi_keyspaces(&db);
    let snap = db.snapshot();
    // Every key's state first (`None` missing, `Some(None)` a value never
    // written), so a failure shows them all.
    let states: Vec<Option<Option<u64>>> = (0..K)
        .map(|i| {
            let ks = &keyspaces[(i % MULTI_KEYSPACES) as usize];
            let value = snap.get_in(ks, &multi_key(i)).unwrap_or_else(|e| panic!("{ctx}: get key {i}: {e}"));
            value.map(|value| generation_of(i, &value))
        })
        .collect();
    let found: Vec<u64> = states.iter().filter_map(|state| state.flatten()).collect();
    assert!(
        found.len() == K as usize,
        "{ctx}: keys missing (None) or holding a value never written (Some(None)): generations by key {states:?} \
         (highest acknowledged {}, {} acknowledged in all, found at the last check {}, begun since {:?}; \
         keyspaces {:?}, snapshot timestamp {})",
        model.acked_max,
        model.acks,
        model.found,
        model.begun.iter().rev().take(5).collect::<Vec<_>>(),
        db.keyspaces(),
        snap.timestamp()
    );
    for (k, ks) in keyspaces.iter().enumerate() {
        let count = snap.range_in::<&[u8], _>(ks, ..).unwrap_or_else(|e| panic!("{ctx}: scan: {e}")).count() as u64;
        let expected = (0..K).filter(|i| i % MULTI_KEYSPACES == k as u64).count() as u64;
        assert_eq!(count, expected, "{ctx}: keyspace m{k} holds {count} keys");
    }
    let g = found[0];
    assert!(
        found.iter().all(|&x| x == g),
        "{ctx}: a transaction is half there: generations by key {found:?} (highest acknowledged {}, \
         found at the last check {}, begun since {:?})",
        model.acked_max,
        model.found,
        model.begun.iter().rev().take(5).collect::<Vec<_>>()
    );
    assert!(
        g >= model.acked_max,
        "{ctx}: acknowledged generation {} lost: recovered generation {g} (found at the last check {})",
        model.acked_max,
        model.found
    );
    assert!(
        g >= model.found,
        "{ctx}: recovered generation {g} is older than generation {} found at the last check",
        model.found
    );
    assert!(
        g == model.found || model.begun.contains(&g),
        "{ctx}: recovered generation {g} was never begun since the last check (then {}; highest acknowledged {})",
        model.found,
        model.acked_max
    );
    model.found = g;
    model.begun.clear();
    drop(snap);
    drop(db);
}

/// The multi-key parent: sets up generation 0, then kills, reopens, checks.
#[test]
fn multikey_kill_nine() {
    if child_env().is_some() {
        return;
    }
    let test = "multikey_kill_nine";
    let seed = common::seed(test);
    let kills = kills(40, 2_000);
    let (_removed_on_drop, dir) = database_dir("db-kill-multi-");
    let path = dir.join("multi.crab");
    eprintln!("{test}: database {}", path.display());
    {
        let db = Db::open_with(&path, options()).expect("create");
        let keyspaces = multi_keyspaces(&db);
        let mut tx = db.begin();
        for i in 0..K {
            tx.put_in(&keyspaces[(i % MULTI_KEYSPACES) as usize], &multi_key(i), &multi_value(i, 0)).unwrap();
        }
        tx.commit().expect("generation 0");
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut model = MultiModel::default();
    let (mut checks, mut before_open) = (0u64, 0u64);
    let started = Instant::now();
    for round in 0..kills {
        let lines = run_child("multikey_child", &path, round, seed, kill_at(&mut rng));
        if !lines.first().is_some_and(|l| l.starts_with("open")) {
            before_open += 1;
        }
        multi_apply(&mut model, &lines);
        if checked_round(&mut rng, round, kills) {
            multi_check(&path, &mut model, round, seed);
            checks += 1;
        }
    }
    eprintln!(
        "{test}: seed {seed}: {kills} SIGKILLs ({before_open} before the child opened), {} generations \
         acknowledged, generation {} at the end, {checks} reopen checks, {:.1} s",
        model.acks,
        model.found,
        started.elapsed().as_secs_f64()
    );
    assert!(model.acks > 0, "no transaction was ever acknowledged: the kills all came too early");
}
