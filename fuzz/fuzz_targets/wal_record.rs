//! Target `wal_record`: the log's decoders on arbitrary bytes.
//!
//! Byte 0 picks the mode (% 3):
//! * 0, raw record: bytes 1..9 a LSN (made 8-aligned), the rest through the
//!   record decoder (`wal::decode_record`: header, length limit, LSN, CRC);
//!   a payload it accepts goes on through the mini-transaction decoder;
//! * 1, segment header: the rest through `wal::SegmentHeader::decode`; a
//!   header it accepts must encode back to the same 64 bytes;
//! * 2, structure-aware mini-transaction: the rest is the payload of an
//!   MTR record sealed with a correct CRC (`wal::encode_record`), which must
//!   decode back exactly; then every entry of `raw::page::redo::decode` is
//!   redone with `redo::apply` as recovery does, onto the page it names
//!   (taken from a valid data file, `crabtree_fuzz::tree_image`, so node
//!   entries meet real nodes; pages keep the changes of earlier entries).
//!
//! Every call must return: no panic, hang or runaway allocation.
#![no_main]

use crabtree::Lsn;
use crabtree::raw::page::redo;
use crabtree::wal::{RecordType, SegmentHeader, decode_record, encode_record};
use crabtree_fuzz::{Input, PAGE_SIZE};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fn redo_all(payload: &[u8], lsn: Lsn, end: Lsn) {
    let image = crabtree_fuzz::tree_image();
    let pages = (image.len() / PAGE_SIZE) as u64;
    let mut touched: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for entry in redo::decode(payload, lsn) {
        let Ok(entry) = entry else { break };
        let Some(pid) = entry.page() else { continue };
        let page = touched.entry(pid.0).or_insert_with(|| {
            let from = (pid.0 % pages) as usize * PAGE_SIZE;
            image[from..from + PAGE_SIZE].to_vec()
        });
        let _ = redo::apply(&entry, page, end);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    match input.u8() % 3 {
        0 => {
            let lsn = Lsn(u64::from(input.u32()) << 3 | u64::from(input.u32()) << 35);
            if let Some((header, payload)) = decode_record(input.rest(), lsn) {
                if header.kind == RecordType::MTR {
                    redo_all(payload, lsn, header.end());
                }
            }
        }
        1 => {
            let bytes = input.rest();
            if let Some(header) = SegmentHeader::decode(bytes) {
                assert_eq!(&header.encode()[..], &bytes[..64], "a decoded segment header encodes back");
            }
        }
        _ => {
            let lsn = Lsn(u64::from(input.u16()) << 3);
            let payload = input.rest();
            let payload = &payload[..payload.len().min(1 << 20)];
            let record = encode_record(lsn, RecordType::MTR, 1, payload);
            let (header, decoded) = decode_record(&record, lsn).expect("a sealed record decodes");
            assert_eq!(decoded, payload);
            redo_all(payload, lsn, header.end());
        }
    }
});
