//! Target `page_mutate` (structure-aware): starts from a small valid data
//! file (`crabtree_fuzz::tree_image`: 512-byte pages, a three-level tree,
//! overflow chains, free-list trunks), applies the mutations the input
//! names to page bodies, then recomputes the checksum of every page it
//! touched (`raw::page::header::seal`, CRC-32C of bytes 4..page size, as
//! FORMAT.md says), so the damage reaches the node, overflow, free-list and
//! header-page decoders and the tree code past the CRC. Then every read
//! path, the entry count, `repair`, writes, and `verify`
//! (`crabtree_fuzz::exercise_tree`).
//!
//! Input: byte 0 flags (bit 0: leave the checksums stale; bit 1: no writes;
//! bits 2-3: 1 = cut the file at a page chosen by byte 1, 2 = append a copy
//! of that page); then 5-byte mutations `page u8 | offset u16 | op u8 |
//! value u8`: op % 8 = set byte, xor byte, set u16 = value, set u16 =
//! page size - value, set u64 = value (page ids: links and cycles), set
//! u16 = 0xffff - value, set u32 = value << 24, copy 8 bytes from the
//! offset `value * 2` of the same page.
#![no_main]

use crabtree::raw::page::header;
use crabtree_fuzz::{Input, PAGE_SIZE};
use libfuzzer_sys::fuzz_target;

/// Writes `new` at `at`, cut at the end of the page.
fn put(bytes: &mut [u8], at: usize, new: &[u8]) {
    let end = (at + new.len()).min(bytes.len());
    bytes[at..end].copy_from_slice(&new[..end - at]);
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut image = crabtree_fuzz::tree_image().to_vec();
    let pages = image.len() / PAGE_SIZE;
    let flags = input.u8();
    let chosen = input.u8() as usize % pages;
    let mut touched = vec![false; pages + 1];
    while !input.is_empty() {
        let page = input.u8() as usize % pages;
        let offset = input.u16() as usize % PAGE_SIZE;
        let op = input.u8();
        let value = input.u8();
        let bytes = &mut image[page * PAGE_SIZE..(page + 1) * PAGE_SIZE];
        match op % 8 {
            0 => put(bytes, offset, &[value]),
            1 => {
                bytes[offset] ^= value;
            }
            2 => put(bytes, offset, &u16::from(value).to_le_bytes()),
            3 => put(bytes, offset, &((PAGE_SIZE as u16).wrapping_sub(u16::from(value))).to_le_bytes()),
            4 => put(bytes, offset, &u64::from(value).to_le_bytes()),
            5 => put(bytes, offset, &(0xffff - u16::from(value)).to_le_bytes()),
            6 => put(bytes, offset, &(u32::from(value) << 24).to_le_bytes()),
            _ => {
                let from = (usize::from(value) * 2).min(PAGE_SIZE - 8);
                let copy: [u8; 8] = bytes[from..from + 8].try_into().unwrap_or([0; 8]);
                put(bytes, offset, &copy);
            }
        }
        touched[page] = true;
    }
    match (flags >> 2) & 3 {
        1 => image.truncate(chosen * PAGE_SIZE),
        2 => {
            let copy = image[chosen * PAGE_SIZE..(chosen + 1) * PAGE_SIZE].to_vec();
            image.extend_from_slice(&copy);
        }
        _ => {}
    }
    if flags & 1 == 0 {
        for (page, _) in touched.iter().enumerate().filter(|(_, t)| **t) {
            if let Some(bytes) = image.get_mut(page * PAGE_SIZE..(page + 1) * PAGE_SIZE) {
                header::seal(bytes);
            }
        }
    }
    crabtree_fuzz::exercise_tree(image, flags & 2 == 0);
});
