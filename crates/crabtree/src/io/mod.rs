//! The storage layer: one small trait for a database file and its
//! implementations.
//!
//! * [`FileStorage`]: a real file with `pread`/`pwrite`, `fdatasync` and an
//!   exclusive advisory lock (a second open fails with [`Error::Locked`]).
//! * [`MemStorage`]: a plain byte vector, no faults, for tests and benchmarks.
//! * [`Dir`] ([`FileDir`], [`SimDir`]): a directory of storages, for the
//!   WAL's segment files.
//! * [`SimDisk`]: a deterministic simulated disk for tests. It keeps synced
//!   and unsynced data apart; [`SimDisk::crash`] keeps, drops or tears (at
//!   512-byte sector boundaries) each unsynced write as a seeded [`CrashModel`]
//!   says, and it can fail a chosen operation with `EIO` ([`Fault`]) or lose
//!   power after a chosen number of operations.
//!
//! What the engine assumes of a real disk, and how the simulator models it, is
//! in `docs/protocols/disk-assumptions.md`.
//!
//! Nothing else in the engine touches `std::fs` for database files.
//!
//! [`Error::Locked`]: crate::Error::Locked

mod dir;
mod file;
mod mem;
mod sim;

pub use dir::{Dir, FileDir, SimDir};
pub use file::FileStorage;
pub use mem::MemStorage;
pub use sim::{CrashModel, Fault, FaultOp, SECTOR_SIZE, SIM_DISK_SIZE_MAX, SimDisk, SimStats};

use crate::Result;

/// A database file: a byte array with positioned reads and writes.
///
/// Implementations are shared between threads; positioned I/O needs no
/// cursor, so `&self` suffices.
pub trait Storage: Send + Sync + 'static {
    /// Reads exactly `buf.len()` bytes at `offset`. Reading past the end of
    /// the file is an error ([`std::io::ErrorKind::UnexpectedEof`]).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Writes all of `buf` at `offset`, growing the file if needed. The data
    /// is durable only after a later successful [`Storage::sync`].
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()>;
    /// Makes every completed write durable (`fdatasync`).
    fn sync(&self) -> Result<()>;
    /// Current length of the file in bytes.
    fn len(&self) -> Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> Result<()>;
    /// What a power cut now would leave at `offset`: the durable bytes,
    /// for storages that can tell (the simulated ones; `None` for real
    /// files and memory). Read by the test builds' checkpoint audit; not
    /// an I/O operation (a simulated power-off point does not count it).
    #[doc(hidden)]
    fn durable_read_at(&self, _offset: u64, _buf: &mut [u8]) -> Option<Result<()>> {
        None
    }
}
