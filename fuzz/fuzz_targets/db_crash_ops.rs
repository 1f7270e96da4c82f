//! Target `db_crash_ops` (RELIABILITY.md F14: operation sequences with a
//! crash point): a `Db` on the simulated directory runs transactions the
//! input describes while the power goes off after an input-chosen number
//! of I/O operations; then the power is cut (unsynced writes dropped,
//! torn or kept as the seeded crash model draws), the database reopens,
//! and its contents must be exactly the model after the last
//! acknowledged commit, or that plus the one commit that failed (its
//! outcome is unknown), and `check` must pass (P1-P4 of RELIABILITY.md).
//!
//! Input: `seed u32 | power u16`, then per transaction `op u8` and, for
//! each of its `op % 4 + 1` writes, `key u8 | len u16`: keyspace `other`
//! when the key's top bit is set, key `key % 48`, a delete when `len % 8
//! == 0`, else a value of `len % 1500` bytes (values over about a quarter
//! page go to overflow pages). `op % 16 == 15` takes a checkpoint before
//! the transaction. At most 40 transactions.
#![no_main]

use crabtree::io::{CrashModel, Dir, SimDir};
use crabtree::{Db, Error};
use crabtree_fuzz::{Input, db_options};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::sync::Arc;

type Model = BTreeMap<(bool, Vec<u8>), Vec<u8>>;

fn open(dir: &SimDir) -> crabtree::Result<Db> {
    let data = dir.open("data", true)?;
    dir.sync()?;
    let life: Arc<dyn Dir> = Arc::new(dir.this_life());
    crabtree::raw::open_db(data, life, db_options())
}

/// Everything the database holds, in both keyspaces.
fn contents(db: &Db) -> Model {
    let other = db.keyspace("other").expect("keyspace after reopen");
    let snap = db.snapshot();
    let mut out = Model::new();
    for item in snap.range::<&[u8], _>(..).expect("range") {
        let (k, v) = item.expect("scan after reopen");
        out.insert((false, k.to_vec()), v.to_vec());
    }
    for item in snap.range_in::<&[u8], _>(&other, ..).expect("range_in") {
        let (k, v) = item.expect("scan after reopen");
        out.insert((true, k.to_vec()), v.to_vec());
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let seed = u64::from(input.u32());
    let power = u64::from(input.u16());
    let dir = SimDir::new(seed, CrashModel::default());
    let db = open(&dir).expect("create");
    let other = db.keyspace("other").expect("keyspace");
    db.snapshot();
    let mut acked = Model::new();
    let mut unknown: Option<Model> = None;
    dir.power_off_after(power);
    for _ in 0..40 {
        if input.is_empty() {
            break;
        }
        let op = input.u8();
        if op % 16 == 15 && crabtree::raw::checkpoint_db(&db).is_err() {
            break;
        }
        let mut next = acked.clone();
        let mut tx = db.begin();
        for _ in 0..op % 4 + 1 {
            let (key, len) = (input.u8(), input.u16());
            let in_other = key & 0x80 != 0;
            let user_key = format!("k{:02}", key % 48).into_bytes();
            let written = if len % 8 == 0 {
                next.remove(&(in_other, user_key.clone()));
                if in_other { tx.delete_in(&other, &user_key) } else { tx.delete(&user_key) }
            } else {
                let value = vec![key ^ (len as u8); usize::from(len % 1500)];
                next.insert((in_other, user_key.clone()), value.clone());
                if in_other { tx.put_in(&other, &user_key, &value) } else { tx.put(&user_key, &value) }
            };
            written.expect("a buffered write fails only on bad input");
        }
        match tx.commit() {
            Ok(()) => acked = next,
            Err(Error::Io(_) | Error::Poisoned) => {
                unknown = Some(next);
                break;
            }
            Err(other) => panic!("a commit under power loss gave {other:?}"),
        }
    }
    dir.crash();
    drop(db);
    let db = open(&dir).unwrap_or_else(|e| panic!("reopen after a power cut: {e}"));
    let found = contents(&db);
    if found != acked && Some(&found) != unknown.as_ref() {
        let diff: Vec<_> = found
            .iter()
            .filter(|(k, v)| acked.get(*k) != Some(*v))
            .map(|(k, v)| (k.0, String::from_utf8_lossy(&k.1).into_owned(), v.len()))
            .take(5)
            .collect();
        let lost: Vec<_> = acked.keys().filter(|k| !found.contains_key(*k)).take(5).collect();
        panic!(
            "after the power cut: {} entries, acknowledged {}, unknown {:?}; differing {diff:?}, lost {lost:?}",
            found.len(),
            acked.len(),
            unknown.as_ref().map(BTreeMap::len)
        );
    }
    db.check().unwrap_or_else(|e| panic!("check after the power cut: {e}"));
});
