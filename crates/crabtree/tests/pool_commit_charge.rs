//! Opening a database with the default options must not need 64 GiB of
//! commit charge: under strict overcommit accounting
//! (`vm.overcommit_memory=2`) the kernel ignores `MAP_NORESERVE` and
//! charges every private writable mapping in full, and the pool's frame
//! array reserves `max_pages` frames (64 GiB with the defaults), which
//! once made every open fail on such a machine.
//!
//! Goal: what the process would be charged grows with the database (its
//! budget, the pages it uses), not with `max_pages`.
//! Method: one test alone in its process. Sum the sizes of the process's
//! private writable mappings (`/proc/self/smaps`: `VmFlags` with `wr`,
//! without `sh`; what strict accounting charges, whatever this machine's
//! mode, which the test neither needs nor changes) before and after
//! opening a new database with `Options::default()`; the difference must
//! stay under `OPEN_CHARGE_MAX`. Then commit keys until the file is past a
//! few growth steps of the pool's regions (`buffer/region.rs`), reopen,
//! read everything back, and check the charge again against the budget.
mod common;

use crabtree::{Db, Options};

/// What an open may add to the charge: the first grain of the frame
/// array (2 MiB) and of the page table, the stacks of the background
/// threads (2 MiB each), the log's buffers and malloc's arenas. The
/// 64 GiB that the defaults reserve are far above it.
const OPEN_CHARGE_MAX: usize = 48 << 20;

/// Bytes strict overcommit accounting would charge the process now.
fn charged_bytes() -> usize {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let mut charged = 0;
    let mut size = 0;
    for line in smaps.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            let flags: Vec<&str> = flags.split_whitespace().collect();
            if flags.contains(&"wr") && !flags.contains(&"sh") {
                charged += size;
            }
            size = 0;
            continue;
        }
        let Some((addresses, _)) = line.split_once(' ') else { continue };
        let Some((start, end)) = addresses.split_once('-') else { continue };
        if let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) {
            size = end - start;
        }
    }
    charged
}

#[test]
fn opening_a_database_is_charged_for_what_it_uses_not_for_max_pages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("charge.crab");
    let options = Options::default();
    let budget = options.memory_budget;
    let keys: u64 = if common::long() { 400_000 } else { 60_000 };
    let before = charged_bytes();
    {
        let db = Db::open_with(&path, options.clone()).unwrap();
        let opened = charged_bytes().saturating_sub(before);
        eprintln!("open of a new database: charged {} KiB more", opened >> 10);
        assert!(
            opened < OPEN_CHARGE_MAX,
            "opening a new database added {} MiB of commit charge (max_pages {})",
            opened >> 20,
            options.max_pages
        );
        for batch in 0..keys / 1000 {
            let mut tx = db.begin();
            for i in batch * 1000..(batch + 1) * 1000 {
                tx.put(&common::spread_key(i), &[(i % 251) as u8; 100]).unwrap();
            }
            tx.commit().unwrap();
        }
    }
    let db = Db::open_with(&path, options).unwrap();
    let snapshot = db.snapshot();
    for i in 0..keys {
        assert_eq!(snapshot.get(&common::spread_key(i)).unwrap(), Some(vec![(i % 251) as u8; 100]), "key {i}");
    }
    let reopened = charged_bytes().saturating_sub(before);
    eprintln!("reopened with {keys} keys, all read: charged {} KiB more", reopened >> 10);
    assert!(
        reopened < budget + OPEN_CHARGE_MAX,
        "a reopened database of {keys} keys added {} MiB of commit charge (budget {} MiB)",
        reopened >> 20,
        budget >> 20
    );
}
