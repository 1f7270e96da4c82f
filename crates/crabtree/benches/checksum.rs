//! Page checksum cost: crabtree's CRC-32C (`crc-fast`, `src/checksum.rs`)
//! against the `crc32c` crate it replaced, over the same bytes, alternating
//! in ten slices so the host's drift falls on both.
//!
//! * `hot`: one page, read again and again (a page just `pread` into its
//!   frame is in cache when it is verified);
//! * `cold`: pages spread over 256 MiB, a different one each time (a dirty
//!   page the cleaner writes back has not been touched for a while).
//!
//! Page sizes 4, 8 and 16 KiB. Prints ns per page and the ratio.
//!
//! Run: `cargo bench -p crabtree --bench checksum`.

use crabtree::raw::page::header;
use std::hint::black_box;
use std::time::Instant;

const SLICES: usize = 10;
const SPREAD_BYTES: usize = 256 << 20;

/// Nanoseconds per call of `crc` over `count` pages of `size` bytes of
/// `data` (page `i` at `offset(i)`): one slice (the caller alternates
/// `SLICES` of them between the two implementations).
fn time(data: &[u8], size: usize, count: usize, offset: &impl Fn(usize) -> usize, crc: &impl Fn(&[u8]) -> u32) -> f64 {
    let start = Instant::now();
    let mut acc = 0u32;
    for i in 0..count {
        let at = offset(i);
        acc ^= crc(black_box(&data[at..at + size]));
    }
    black_box(acc);
    start.elapsed().as_nanos() as f64 / count as f64
}

fn main() {
    let mut rng = fastrand::Rng::with_seed(7);
    let data: Vec<u8> = (0..SPREAD_BYTES).map(|_| rng.u8(..)).collect();
    println!("| page | where | crabtree (crc-fast) ns | crc32c crate ns | crc32c / crabtree |");
    println!("|---|---|---|---|---|");
    for size in [4096, 8192, 16384] {
        let pages = SPREAD_BYTES / size;
        // Both compute the same value over the same bytes.
        assert_eq!(header::checksum(&data[..size]), crc32c::crc32c(&data[4..size]));
        for (name, spread) in [("hot", false), ("cold", true)] {
            // Page n of a walk that visits every page once, in a scattered order.
            let offset = |i: usize| if spread { (i * 7919 % pages) * size } else { 0 };
            let count = if spread { pages.min(20_000) } else { 200_000 };
            let (mut ours, mut theirs) = (0.0, 0.0);
            for slice in 0..SLICES {
                let shifted = |i: usize| offset(i + slice * count);
                ours += time(&data, size, count, &shifted, &|page: &[u8]| header::checksum(page));
                theirs += time(&data, size, count, &shifted, &|page: &[u8]| crc32c::crc32c(&page[4..]));
            }
            let (ours, theirs) = (ours / SLICES as f64, theirs / SLICES as f64);
            println!("| {} KiB | {name} | {ours:.0} | {theirs:.0} | {:.2} |", size / 1024, theirs / ours);
        }
    }
}
