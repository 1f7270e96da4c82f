//! What one whole vacuum pass (`Db::vacuum`) reads and costs over a
//! database of large values.
//!
//! KEYS keys (16 bytes) with VALUE_BYTES-byte values are committed 100 a
//! transaction, then each is overwritten once (every overwrite leaves the
//! version it shadows), with background vacuum off. The database is
//! reopened with a budget of BUDGET_MIB and one `Db::vacuum` pass runs:
//! prints its time, the pages the pool loaded meanwhile, the versions it
//! removed, and the data file's size.
//!
//! Run with `cargo run --release --example vacuum_pass_probe -- 20000 8192 16`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: vacuum_pass_probe KEYS VALUE_BYTES BUDGET_MIB";
    let keys: u64 = args.next().ok_or(usage)?.parse()?;
    let value_bytes: usize = args.next().ok_or(usage)?.parse()?;
    let budget_mib: usize = args.next().ok_or(usage)?.parse()?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("probe.crab");
    let key = |i: u64| format!("{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).into_bytes();
    {
        let options = crabtree::Options { vacuum_interval: None, memory_budget: 1 << 30, ..Default::default() };
        let db = crabtree::Db::open_with(&path, options)?;
        for round in 0..2u8 {
            for chunk in (0..keys).collect::<Vec<_>>().chunks(100) {
                db.update(|tx| chunk.iter().try_for_each(|&i| tx.put(&key(i), &vec![round; value_bytes])))?;
            }
        }
    }
    let options = crabtree::Options { vacuum_interval: None, memory_budget: budget_mib << 20, ..Default::default() };
    let db = crabtree::Db::open_with(&path, options)?;
    let before = db.stats();
    let started = std::time::Instant::now();
    let removed = db.vacuum()?;
    let took = started.elapsed();
    let after = db.stats();
    println!(
        "pass over {keys} keys of {value_bytes} B (file {} MiB, budget {budget_mib} MiB): {:.3} s, {} pages loaded, {} versions removed",
        std::fs::metadata(&path)?.len() >> 20,
        took.as_secs_f64(),
        after.pool.loads - before.pool.loads,
        removed
    );
    Ok(())
}
