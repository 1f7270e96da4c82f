//! Target `raw_file`: arbitrary bytes as a data file without a log (what
//! `crabtree check FILE` opens), read as a reader would: open the pool and
//! the tree, scan both ways, first/last, point reads, `verify`, the entry
//! count, then `repair`, a few writes and `verify` again (`crabtree_fuzz::exercise_tree`). Must return
//! `Ok` or an error for every input: no panic, hang or runaway allocation.
//!
//! A seed helps it past the header page's checksum: run the target once
//! with `CRABTREE_FUZZ_SEEDS=DIR` and it writes a valid file (`valid.db`,
//! 512-byte pages, three levels, overflow values, a free list) to `DIR`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        if let Some(dir) = std::env::var_os("CRABTREE_FUZZ_SEEDS") {
            let dir = std::path::PathBuf::from(dir);
            std::fs::create_dir_all(&dir).expect("seed dir");
            std::fs::write(dir.join("valid.db"), crabtree_fuzz::tree_image()).expect("seed");
        }
    },
    |data: &[u8]| {
        crabtree_fuzz::exercise_tree(data.to_vec(), true);
    }
);
