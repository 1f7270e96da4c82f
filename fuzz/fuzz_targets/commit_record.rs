//! Target `commit_record`: the transaction layer's decoders of bytes read
//! from disk, through the `#[doc(hidden)]` hook `crabtree::fuzzing`.
//!
//! Byte 0 picks the decoder (% 3): the commit record (what recovery
//! re-applies: `version | ts | count | writes`, every length checked
//! against the bytes left), a version key of the tree (keyspace varint,
//! escaped user key, inverted timestamp), a stored version value (tag and
//! value). The rest of the input is what it decodes. Every call must
//! return: no panic, hang, or allocation sized from an unchecked length
//! (libFuzzer's `-malloc_limit_mb`, default the RSS limit, catches one).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        0 => {
            if let Ok((_, bytes)) = crabtree::fuzzing::decode_commit_record(rest) {
                assert!(bytes <= rest.len(), "a commit record holds no more bytes than it is");
            }
        }
        1 => {
            let _ = crabtree::fuzzing::decode_version_key(rest);
        }
        _ => {
            let _ = crabtree::fuzzing::decode_version_value(rest);
        }
    }
});
