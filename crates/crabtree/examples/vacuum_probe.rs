//! What background vacuum costs a write workload through the public `Db`
//! API when the data is larger than the memory budget.
//!
//! KEYS keys (16 bytes, 100-byte values) are committed 1,000 a transaction
//! with a 1 GiB budget, then the database is reopened with a budget of
//! BUDGET_MIB and THREADS threads (default 1) run SECS seconds of snapshot gets mixed with
//! UPDATE_PCT percent (default 50) single-key update transactions (uniform
//! keys, `Eventual`
//! durability, so the disk's sync rate does not hide the rest), with the
//! background vacuum at its default interval (`on`) or off (`off`). Every
//! update leaves the version it shadows for vacuum (its commit cannot
//! prune it); with vacuum off they wait for the next write of their key.
//!
//! Prints operations per second and the database's stats (what vacuum
//! read, removed, and how many versions the tree holds at the end).
//!
//! Run with `cargo run --release --example vacuum_probe -- 1000000 15 on 32`
//! and again with `off`; a last argument of 1 makes 1% of the operations
//! updates (a large database with few writes, where a vacuum that reads
//! the whole tree costs the most).

use std::time::{Duration, Instant};

#[path = "shared/keys.rs"]
mod keys;
#[path = "shared/load.rs"]
mod load;
use keys::{key, splitmix};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: vacuum_probe KEYS SECS on|off BUDGET_MIB [UPDATE_PCT [THREADS]]";
    let keys: u64 = args.next().ok_or(usage)?.parse()?;
    let secs: u64 = args.next().ok_or(usage)?.parse()?;
    let vacuum = match args.next().ok_or(usage)?.as_str() {
        "on" => Some(crabtree::Options::default().vacuum_interval.ok_or("vacuum is off by default")?),
        "off" => None,
        _ => return Err(usage.into()),
    };
    let budget_mib: usize = args.next().ok_or(usage)?.parse()?;
    let update_pct: u64 = args.next().map_or(Ok(50), |pct| pct.parse())?;
    let threads: u64 = args.next().map_or(Ok(1), |threads| threads.parse())?;
    if update_pct > 100 {
        return Err(usage.into());
    }
    if keys == 0 {
        return Err("KEYS must be at least 1".into());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("probe.crab");
    let value = [7u8; 100];
    let options = |memory_budget, vacuum_interval| crabtree::Options {
        memory_budget,
        vacuum_interval,
        durability: crabtree::Durability::Eventual,
        ..crabtree::Options::default()
    };
    {
        let db = crabtree::Db::open_with(&path, options(1 << 30, None))?;
        load::commit_keys(&db, keys, &value)?;
    }
    let db = crabtree::Db::open_with(&path, options(budget_mib << 20, vacuum))?;
    let started = Instant::now();
    let run = |thread: u64| -> crabtree::Result<(u64, u64)> {
        let (mut ops, mut updates, mut j) = (0u64, 0u64, thread << 40);
        while started.elapsed() < Duration::from_secs(secs) {
            for _ in 0..100 {
                j += 1;
                let i = splitmix(j) % keys;
                if splitmix(j ^ 0x5EED) % 100 >= update_pct {
                    std::hint::black_box(db.snapshot().get(&key(i))?);
                } else {
                    let mut tx = db.begin();
                    tx.put(&key(i), &value)?;
                    match tx.commit() {
                        // Two threads may update one key at once.
                        Ok(_) | Err(crabtree::Error::Conflict) => {}
                        Err(error) => return Err(error),
                    }
                    updates += 1;
                }
                ops += 1;
            }
        }
        Ok((ops, updates))
    };
    let totals = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads).map(|t| scope.spawn(move || run(t))).collect();
        workers.into_iter().map(|w| w.join().expect("worker panicked")).collect::<crabtree::Result<Vec<_>>>()
    })?;
    let (ops, updates) = totals.iter().fold((0, 0), |(o, u), &(ops, updates)| (o + ops, u + updates));
    let rate = ops as f64 / started.elapsed().as_secs_f64();
    let stats = db.stats();
    println!(
        "vacuum {}: {rate:.0} ops/s ({updates} updates, {update_pct}% of the operations; {threads} threads, {keys} keys, {budget_mib} MiB budget, {secs} s); \
         vacuum read {} versions in {} passes/rounds, removed {}; writers pruned {}; {} versions in the tree at the end",
        if vacuum.is_some() { "on" } else { "off" },
        stats.vacuum_versions_read,
        stats.vacuum_passes,
        stats.versions_vacuumed,
        stats.versions_pruned,
        stats.tree_entries,
    );
    Ok(())
}
