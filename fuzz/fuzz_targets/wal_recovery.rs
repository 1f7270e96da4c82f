//! Target `wal_recovery` (structure-aware log): starts from a small valid
//! database as power loss leaves it (`crabtree_fuzz::db_image`: commits in
//! two keyspaces, a checkpoint, more commits only in the log), reads its
//! log into records, applies the mutations the input names to the records,
//! writes the log back with every record's CRC and every segment header
//! recomputed (`crabtree_fuzz::build_log`), so the damage reaches the
//! segment reader, recovery (redo of mini-transactions, checkpoint and
//! free-list records, chained commits) and the replay of commit records
//! past the checksums. Then opens the `Db` on the simulated disk and runs
//! `check`, scans, gets, a commit, a checkpoint and vacuum
//! (`crabtree_fuzz::exercise_db`).
//!
//! Input: byte 0 flags (bit 0: start from a data file of only its header
//! page, so recovery rebuilds every page from the log); then mutations
//! `op u8 | record u8 | offset u16 | value u8` (record and offset taken
//! modulo the count and the payload length): op % 10 = xor a payload byte,
//! set a u64 to `value * 8`, cut the payload at the offset, change the
//! type to `value % 12 + 1`, delete the record, duplicate it, insert a new
//! record of type `value % 12 + 1` whose payload is the next `offset % 64`
//! input bytes, set a u32 to `value`, cut the log after the record, set a
//! u64 to the LSN of record `value` (so checkpoint and chain fields can
//! name real records).
//!
//! Every call must return: no panic, hang or runaway allocation.
#![no_main]

use crabtree_fuzz::{DbImage, Input, PAGE_SIZE, Record};
use libfuzzer_sys::fuzz_target;

/// A record type from a fuzzer byte: the eleven known ones (0, which the
/// codec reserves for zeroed space, excepted) and two unknown ones.
fn kind(value: u8) -> u8 {
    value % 12 + 1
}

/// Writes `bytes` at `offset` modulo the payload's length, cut at its end.
fn put(payload: &mut [u8], offset: usize, bytes: &[u8]) {
    if payload.is_empty() {
        return;
    }
    let at = offset % payload.len();
    let end = (at + bytes.len()).min(payload.len());
    payload[at..end].copy_from_slice(&bytes[..end - at]);
}

fuzz_target!(|data: &[u8]| {
    let base = crabtree_fuzz::db_image();
    let mut log = crabtree_fuzz::parse_log(&base.segments);
    let mut input = Input::new(data);
    let flags = input.u8();
    let mut steps = 0;
    while !input.is_empty() && steps < 64 {
        steps += 1;
        let op = input.u8();
        let index = usize::from(input.u8());
        let offset = usize::from(input.u16());
        let value = input.u8();
        let count = log.records.len();
        if count == 0 {
            log.records.push(Record { kind: kind(value), incarnation: log.incarnation, payload: Vec::new() });
            continue;
        }
        let index = index % count;
        let lsn_of = |log: &crabtree_fuzz::Log, n: usize| {
            let sizes = log.records.iter().take(n).map(|r| crabtree::wal::record_size(r.payload.len()) as u64);
            log.start + sizes.sum::<u64>()
        };
        match op % 10 {
            0 => {
                let payload = &mut log.records[index].payload;
                if !payload.is_empty() {
                    let at = offset % payload.len();
                    payload[at] ^= value.max(1);
                }
            }
            1 => put(&mut log.records[index].payload, offset, &(u64::from(value) * 8).to_le_bytes()),
            2 => {
                let payload = &mut log.records[index].payload;
                let len = offset % (payload.len() + 1);
                payload.truncate(len);
            }
            3 => log.records[index].kind = kind(value),
            4 => {
                log.records.remove(index);
            }
            5 => {
                let copy = log.records[index].clone();
                log.records.insert(index + 1, copy);
            }
            6 => {
                let payload = input.take(offset % 64).to_vec();
                let record = Record { kind: kind(value), incarnation: log.incarnation, payload };
                log.records.insert(index, record);
            }
            7 => put(&mut log.records[index].payload, offset, &u32::from(value).to_le_bytes()),
            8 => log.records.truncate(index + 1),
            _ => {
                let lsn = lsn_of(&log, usize::from(value) % (count + 1));
                put(&mut log.records[index].payload, offset, &lsn.to_le_bytes());
            }
        }
    }
    let data = if flags & 1 == 1 { base.data[..PAGE_SIZE].to_vec() } else { base.data.clone() };
    let image = DbImage { data, segments: crabtree_fuzz::build_log(&log) };
    crabtree_fuzz::exercise_db(&image);
});
