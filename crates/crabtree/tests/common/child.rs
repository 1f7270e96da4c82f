//! The parent side of the real-process kill tests (`kill.rs`,
//! `db_kill.rs`): reading the child's protocol lines off its stdout pipe.

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
