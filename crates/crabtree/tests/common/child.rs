//! Shared by the real-process kill tests (`kill.rs`, `db_kill.rs`): the
//! parent reading the child's protocol lines off its stdout pipe, and the
//! self-describing values both write.

use std::io::{BufRead, BufReader};
use std::process::ChildStdout;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Reads the child's protocol lines (the text after `@` on each complete
/// line; libtest's own output and a last line cut by the kill are
/// dropped) on a thread; the receiver gets a message when a line starting
/// with `open` arrives (the child opened its database).
pub fn read_protocol(stdout: ChildStdout) -> (JoinHandle<Vec<String>>, mpsc::Receiver<()>) {
    let (opened_tx, opened_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if line.ends_with('\n')
                && let Some(at) = line.find('@')
            {
                let text = line[at + 1..].trim_end().to_string();
                if text.starts_with("open") {
                    let _ = opened_tx.send(());
                }
                lines.push(text);
            }
            line.clear();
        }
        lines
    });
    (reader, opened_rx)
}

/// A 64-bit mix (splitmix64's finaliser).
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A value of `len` bytes that names its key `index` and `version` in its
/// first 16 bytes, then bytes derived from `seed`: a reader can tell which
/// write it is, and that it is whole ([`claimed`]).
pub fn self_describing(index: u64, version: u64, seed: u64, len: usize) -> Vec<u8> {
    let mut value = Vec::with_capacity(len.max(16) + 8);
    value.extend_from_slice(&index.to_le_bytes());
    value.extend_from_slice(&version.to_le_bytes());
    let mut x = seed;
    while value.len() < len {
        x = mix(x);
        value.extend_from_slice(&x.to_le_bytes());
    }
    value.truncate(len.max(16));
    value
}

/// The (key index, version) a stored value claims in its first 16 bytes.
pub fn claimed(found: &[u8]) -> Option<(u64, u64)> {
    let index = u64::from_le_bytes(found.get(..8)?.try_into().ok()?);
    let version = u64::from_le_bytes(found.get(8..16)?.try_into().ok()?);
    Some((index, version))
}
