//! Quick start: open a database, write in a transaction, read a snapshot,
//! use a named keyspace, retry on conflict with `update`, and wait for an
//! eventual commit's durability.
//!
//! Run with `cargo run --release --example quickstart`.

use crabtree::{Db, Error};

fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("data.crab");

    // Open (or create) the database; the file is locked while it is open.
    let db = Db::open(&path)?;

    // A read-write transaction: sees its own writes, commits atomically.
    let mut tx = db.begin();
    tx.put(b"apple", b"red")?;
    tx.put(b"banana", b"yellow")?;
    assert_eq!(tx.get(b"apple")?, Some(b"red".to_vec()));
    tx.delete(b"pear")?;
    for item in tx.range(b"a".as_slice()..b"b".as_slice())? {
        let (key, value) = item?;
        println!("in tx: {} = {}", String::from_utf8_lossy(&key), String::from_utf8_lossy(&value));
    }
    tx.commit()?; // Err(Error::Conflict) -> run it again (or use db.update)

    // A snapshot: read-only, consistent, never blocks; reverse scan.
    let snap = db.snapshot();
    for item in snap.range::<&[u8], _>(..)?.rev() {
        let (key, value) = item?;
        println!("snapshot: {} = {}", String::from_utf8_lossy(&key), String::from_utf8_lossy(&value));
    }

    // Named keyspaces commit atomically with the default one.
    let colors = db.keyspace("colors")?;
    db.update(|tx| {
        tx.put_in(&colors, b"red", b"#ff0000")?;
        tx.put(b"cherry", b"red")
    })?;

    // A counter incremented from many threads: `update` retries conflicts.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || {
                for _ in 0..100 {
                    db.update(|tx| {
                        let n = tx.get(b"counter")?.map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap_or([0; 8])));
                        tx.put(b"counter", &(n + 1).to_le_bytes())
                    })
                    .expect("update");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread");
    }
    let counter = db.snapshot().get(b"counter")?.map(|v| u64::from_le_bytes(v.try_into().unwrap_or([0; 8])));
    println!("counter = {counter:?}");
    assert_eq!(counter, Some(400));

    // Durability you wait for later: commit now, wait (or .await) the ticket.
    let mut tx = db.begin();
    tx.put(b"log-line", b"acknowledged once durable")?;
    let ticket = tx.commit_eventual()?;
    ticket.wait()?;

    db.check()?;
    println!("stats: {:?}", db.stats());
    Ok(())
}
