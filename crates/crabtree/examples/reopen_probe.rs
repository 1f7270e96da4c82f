//! What the first seconds after reopening a database cost: the close, the
//! open, snapshot gets per half second, and what vacuum read meanwhile.
//!
//! KEYS keys (16 bytes, 100-byte values) are committed with a 1 GiB
//! budget; the database is reopened with a 32 MiB budget (data about 4x
//! it for 1M keys), given 3 s for whatever vacuum does after open, then
//! UPDATES random keys are overwritten (`Eventual` commits: each leaves the
//! version it shadows for vacuum) and the database is closed (timed). It is
//! reopened (timed) and one thread runs uniform snapshot gets for 4 s,
//! printing gets per second and vacuum's counters every half second. Until
//! stop 19 every open ran one vacuum pass over the whole tree (a dip in the
//! gets, `vacuum read` jumping to the tree's size); now a clean close
//! removes what was left and the open has nothing to do.
//!
//! Run with `cargo run --release -p crabtree --example reopen_probe --
//! 1000000 10000`.

use std::time::{Duration, Instant};

#[path = "shared/keys.rs"]
mod keys;
#[path = "shared/load.rs"]
mod load;
use keys::{key, splitmix};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: reopen_probe KEYS UPDATES";
    let keys: u64 = args.next().ok_or(usage)?.parse()?;
    let updates: u64 = args.next().ok_or(usage)?.parse()?;
    if keys == 0 {
        return Err(usage.into());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("db.crab");
    {
        let db = crabtree::Db::open_with(&path, crabtree::Options { memory_budget: 1 << 30, ..Default::default() })?;
        load::commit_keys(&db, keys, &[7u8; 100])?;
    }
    let small = crabtree::Options { memory_budget: 32 << 20, ..Default::default() };
    {
        let db = crabtree::Db::open_with(&path, small.clone())?;
        std::thread::sleep(Duration::from_secs(3));
        for j in 0..updates {
            let mut tx = db.begin();
            tx.put(&key(splitmix(j ^ 77) % keys), &[8u8; 100])?;
            tx.commit_eventual()?;
        }
        let stats = db.stats();
        println!(
            "before close: {} entries, vacuum read {} and removed {} since open",
            stats.tree_entries, stats.vacuum_versions_read, stats.versions_vacuumed
        );
        let started = Instant::now();
        drop(db);
        println!("close {:?}", started.elapsed());
    }
    let started = Instant::now();
    let db = crabtree::Db::open_with(&path, small)?;
    println!("open {:?}", started.elapsed());
    let mut j = 0u64;
    for slot in 1..=8 {
        let (started, mut gets) = (Instant::now(), 0u64);
        while started.elapsed() < Duration::from_millis(500) {
            db.snapshot().get(&key(splitmix(j) % keys))?.ok_or("a key is missing")?;
            j += 1;
            gets += 1;
        }
        let stats = db.stats();
        println!(
            "t={:.1}s: gets {:.0}/s, vacuum read {} removed {}, pool loads {}",
            slot as f64 * 0.5,
            gets as f64 / started.elapsed().as_secs_f64(),
            stats.vacuum_versions_read,
            stats.versions_vacuumed,
            stats.pool.loads
        );
    }
    Ok(())
}
