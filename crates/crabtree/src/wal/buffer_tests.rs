//! Unit tests of `buffer.rs`, kept apart so that `tests/loom_wal.rs` can
//! compile `buffer.rs` itself against loom without them.

use super::buffer::LogBuffer;
use crate::ids::Lsn;

#[test]
fn links_from_an_earlier_lap_read_as_unfilled() {
    let buffer = LogBuffer::new(64);
    buffer.publish(Lsn(0), Lsn(24));
    assert_eq!(buffer.next_filled(Lsn(0)), Some(Lsn(24)));
    // Next lap, same slot: the old end 24 is <= 64.
    assert_eq!(buffer.next_filled(Lsn(64)), None);
    buffer.put(64, 7);
    buffer.publish(Lsn(64), Lsn(72));
    assert_eq!(buffer.next_filled(Lsn(64)), Some(Lsn(72)));
    let mut out = [0u8; 8];
    buffer.copy_out(Lsn(64), &mut out);
    assert_eq!(u64::from_le_bytes(out), 7);
}
