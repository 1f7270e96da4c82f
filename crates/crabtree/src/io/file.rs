//! A database file on a real file system.
//!
//! [`FileStorage`] is a thin layer over [`std::fs::File`]:
//!
//! * positioned I/O (`pread`/`pwrite`), looped until the whole buffer is
//!   transferred: no shared cursor, so `&self` suffices and threads never
//!   contend on a seek position. The calls go through `rustix`, which makes
//!   the system call itself: glibc's wrappers add a cancellation-point
//!   switch on each side (about 6% of a 4 KiB page-cache read on the
//!   development VM, `docs/BENCHMARKS.md`, "stop 15"), and a point read
//!   past memory is mostly one `pread`;
//! * reads do not update the file's access time (`O_NOATIME`, set after the
//!   open where the kernel allows it: the process owns the file or has
//!   `CAP_FOWNER`; elsewhere the file is used as opened). The engine never
//!   looks at access times, and each read past memory would otherwise ask
//!   the file system whether the time needs writing (about 1% of such a
//!   read on the development VM);
//! * `sync` is `fdatasync` ([`File::sync_data`]): file data plus the metadata
//!   needed to read it back (the length), not timestamps;
//! * an exclusive advisory lock ([`File::try_lock`], `flock` on Linux) held for
//!   the life of the handle. `flock` locks belong to the open file description,
//!   so a second open of the same path fails with [`Error::Locked`] whether it
//!   comes from this process or another. The lock is released when the handle
//!   is dropped (the descriptor is closed);
//! * every open fsyncs the file's parent directory, so the file's directory
//!   entry is durable before anything is written to it (RELIABILITY.md).
//!   Not only when this open creates the file: a process killed between
//!   creating it and that fsync leaves an entry only the page cache holds,
//!   and the next process, which finds the file there, would otherwise
//!   make commits durable in a file a power cut can still remove.
//!
//! Errors from the OS are passed up as [`Error::Io`] unchanged; this layer
//! never retries a failed `fdatasync` (the engine poisons itself instead).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

use super::Storage;
use crate::{Error, Result};

/// A real file opened for positioned reads and writes, exclusively locked.
#[derive(Debug)]
pub struct FileStorage {
    file: File,
    path: PathBuf,
}

impl FileStorage {
    /// Opens the file at `path` for reading and writing and takes an exclusive
    /// advisory lock on it.
    ///
    /// With `create`, a missing file is created (empty); without it, a
    /// missing file is an [`Error::Io`] of kind [`ErrorKind::NotFound`]. If
    /// another handle (in this process or another) holds the lock, returns
    /// [`Error::Locked`]. Once locked, the parent directory is fsynced,
    /// whether or not this open created the file (module doc).
    pub fn open(path: &Path, create: bool) -> Result<FileStorage> {
        let (storage, _) = Self::open_locked(path, create)?;
        sync_parent_dir(path)?;
        Ok(storage)
    }

    /// Like [`open`](Self::open), but fsyncs the parent directory only if
    /// this open created the file: for the files of a directory whose owner
    /// syncs the directory itself before it trusts what it lists (the log's
    /// segments, `wal::segment`), where a sync per file opened would repeat
    /// that one.
    pub(crate) fn open_listed(path: &Path, create: bool) -> Result<FileStorage> {
        let (storage, created) = Self::open_locked(path, create)?;
        if created {
            sync_parent_dir(path)?;
        }
        Ok(storage)
    }

    /// Opens and locks the file; returns whether this call created it.
    fn open_locked(path: &Path, create: bool) -> Result<(FileStorage, bool)> {
        let (file, created) = open_file(path, create)?;
        skip_access_times(&file);
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(Error::Locked),
            Err(TryLockError::Error(err)) => return Err(Error::Io(err)),
        }
        Ok((FileStorage { file, path: path.to_path_buf() }, created))
    }

    /// The path this storage was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens `path` read-write; with `create`, creates it if missing. Returns
/// whether this call created the file.
fn open_file(path: &Path, create: bool) -> Result<(File, bool)> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    if create {
        match options.clone().create_new(true).open(path) {
            Ok(file) => return Ok((file, true)),
            Err(err) if err.kind() == ErrorKind::AlreadyExists => {}
            Err(err) => return Err(Error::Io(err)),
        }
    }
    Ok((options.open(path)?, false))
}

/// Sets `O_NOATIME` on `file` if the kernel lets this process (`EPERM`
/// when it neither owns the file nor has `CAP_FOWNER`). Best effort: the
/// flag changes no data, so a refusal leaves the file as it was opened.
fn skip_access_times(file: &File) {
    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
    if let Ok(flags) = fcntl_getfl(file) {
        let _ = fcntl_setfl(file, flags | OFlags::NOATIME);
    }
}

/// Fsyncs the directory holding `path`, making its entry for `path` (and
/// every other entry in it) durable. Failpoint `io.sync_parent`: an error
/// injected there stands for a failed fsync of the directory.
pub(crate) fn sync_parent_dir(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        // A bare file name lives in the current directory.
        _ => Path::new("."),
    };
    failpoint!("io.sync_parent");
    File::open(parent)?.sync_all()?;
    Ok(())
}

/// `offset + done`, or `EINVAL` (an `InvalidInput` error) if the file
/// position would overflow.
fn position(offset: u64, done: usize) -> rustix::io::Result<u64> {
    u64::try_from(done).ok().and_then(|done| offset.checked_add(done)).ok_or(rustix::io::Errno::INVAL)
}

/// Moves `len` bytes with `op`, which moves what it can from byte `done`
/// on and says how many: short transfers go on from where they stopped, an
/// interrupted call (`EINTR`) is made again, a transfer of zero bytes is
/// `zero` (end of file for a read), and any other error ends it.
#[inline]
fn transfer_all(len: usize, zero: ErrorKind, mut op: impl FnMut(usize) -> rustix::io::Result<usize>) -> Result<()> {
    let mut done = 0;
    while done < len {
        match op(done) {
            Ok(0) => return Err(io::Error::from(zero).into()),
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => return Err(io::Error::from(errno).into()),
        }
    }
    Ok(())
}

impl Storage for FileStorage {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        // A read that returns zero bytes is at the end of the file.
        transfer_all(buf.len(), ErrorKind::UnexpectedEof, |done| {
            let rest = buf.get_mut(done..).unwrap_or_default();
            rustix::io::pread(&self.file, rest, position(offset, done)?)
        })
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        transfer_all(buf.len(), ErrorKind::WriteZero, |done| {
            let rest = buf.get(done..).unwrap_or_default();
            rustix::io::pwrite(&self.file, rest, position(offset, done)?)
        })
    }

    fn sync(&self) -> Result<()> {
        self.file.sync_data()?;
        Ok(())
    }

    fn len(&self) -> Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> Result<()> {
        self.file.set_len(len)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::io::Errno;

    /// Runs `transfer_all` of `len` bytes over a scripted sequence of
    /// system call results; returns its result and the offsets asked for.
    fn scripted(len: usize, zero: ErrorKind, script: &[rustix::io::Result<usize>]) -> (Result<()>, Vec<usize>) {
        let mut calls = Vec::new();
        let mut next = script.iter();
        let result = transfer_all(len, zero, |done| {
            calls.push(done);
            *next.next().expect("transfer_all called past the script")
        });
        (result, calls)
    }

    /// The retry loop of every read and write, with the system call's rare
    /// answers that a regular file on a local disk almost never gives:
    /// `EINTR` (a signal), short transfers, zero bytes, other errors.
    #[test]
    fn transfers_go_on_after_interrupts_and_short_counts() {
        let (result, calls) =
            scripted(4096, ErrorKind::UnexpectedEof, &[Err(Errno::INTR), Ok(1000), Err(Errno::INTR), Ok(3096)]);
        assert!(result.is_ok());
        assert_eq!(calls, [0, 0, 1000, 1000], "an interrupted call is made again from where it stood");

        let (result, calls) = scripted(4096, ErrorKind::UnexpectedEof, &[Ok(512), Ok(0)]);
        let Err(Error::Io(error)) = result else { panic!("zero bytes read: {result:?}") };
        assert_eq!(error.kind(), ErrorKind::UnexpectedEof);
        assert_eq!(calls, [0, 512]);

        let (result, _) = scripted(10, ErrorKind::WriteZero, &[Ok(0)]);
        let Err(Error::Io(error)) = result else { panic!("zero bytes written: {result:?}") };
        assert_eq!(error.kind(), ErrorKind::WriteZero);

        let (result, calls) = scripted(4096, ErrorKind::UnexpectedEof, &[Ok(100), Err(Errno::IO), Ok(3996)]);
        let Err(Error::Io(error)) = result else { panic!("EIO: {result:?}") };
        assert_eq!(error.raw_os_error(), Some(Errno::IO.raw_os_error()));
        assert_eq!(calls, [0, 100], "an error other than EINTR ends the transfer");

        let (result, calls) = scripted(0, ErrorKind::UnexpectedEof, &[]);
        assert!(result.is_ok());
        assert!(calls.is_empty());
    }

    /// An offset past `u64::MAX` is an invalid argument, not a wrap.
    #[test]
    fn a_position_past_the_end_of_the_offsets_is_refused() {
        assert_eq!(position(u64::MAX - 1, 1), Ok(u64::MAX));
        assert_eq!(position(u64::MAX, 1), Err(Errno::INVAL));
    }

    #[test]
    fn write_read_round_trip_across_reopen() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("db");
        {
            let storage = FileStorage::open(&path, true)?;
            assert_eq!(storage.path(), path.as_path());
            assert!(storage.is_empty()?);
            storage.write_at(4096, b"hello")?;
            storage.sync()?;
            assert_eq!(storage.len()?, 4101);
        }
        let storage = FileStorage::open(&path, false)?;
        let mut buf = [0u8; 5];
        storage.read_at(4096, &mut buf)?;
        assert_eq!(&buf, b"hello");
        // The hole before the write reads as zeros.
        let mut hole = [0xffu8; 16];
        storage.read_at(0, &mut hole)?;
        assert_eq!(hole, [0u8; 16]);
        Ok(())
    }

    #[test]
    fn reads_skip_access_times_on_a_file_we_own() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let storage = FileStorage::open(&dir.path().join("db"), true)?;
        // The test process created the file, so it owns it: the kernel
        // must have accepted the flag.
        let flags = rustix::fs::fcntl_getfl(&storage.file).map_err(io::Error::from)?;
        assert!(flags.contains(rustix::fs::OFlags::NOATIME), "{flags:?}");
        Ok(())
    }

    #[test]
    fn missing_file_without_create_is_not_found() -> Result<()> {
        let dir = tempfile::tempdir()?;
        match FileStorage::open(&dir.path().join("absent"), false) {
            Err(Error::Io(err)) => assert_eq!(err.kind(), ErrorKind::NotFound),
            other => panic!("expected NotFound, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn read_past_end_is_unexpected_eof() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let storage = FileStorage::open(&dir.path().join("db"), true)?;
        storage.write_at(0, &[7u8; 100])?;
        let mut buf = [0u8; 10];
        // Straddling the end: the first part exists, the rest does not.
        match storage.read_at(95, &mut buf) {
            Err(Error::Io(err)) => assert_eq!(err.kind(), ErrorKind::UnexpectedEof),
            other => panic!("expected UnexpectedEof, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn second_open_is_locked_until_the_first_is_dropped() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("db");
        let first = FileStorage::open(&path, true)?;
        // Both with and without `create`: the file exists, the lock is taken.
        assert!(matches!(FileStorage::open(&path, true), Err(Error::Locked)));
        assert!(matches!(FileStorage::open(&path, false), Err(Error::Locked)));
        drop(first);
        let second = FileStorage::open(&path, false)?;
        second.write_at(0, b"x")?;
        Ok(())
    }

    #[test]
    fn set_len_truncates_and_extends_with_zeros() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let storage = FileStorage::open(&dir.path().join("db"), true)?;
        storage.write_at(0, &[5u8; 8192])?;
        storage.set_len(4096)?;
        assert_eq!(storage.len()?, 4096);
        let mut buf = [0u8; 1];
        assert!(storage.read_at(4096, &mut buf).is_err());
        storage.set_len(8192)?;
        assert_eq!(storage.len()?, 8192);
        let mut tail = [0xffu8; 4096];
        storage.read_at(4096, &mut tail)?;
        assert_eq!(tail, [0u8; 4096]);
        storage.read_at(4095, &mut buf)?;
        assert_eq!(buf, [5]);
        Ok(())
    }

    #[test]
    fn only_the_creating_open_reports_created() -> Result<()> {
        // `created` decides whether `open_listed` fsyncs the directory.
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("db");
        assert!(open_file(&path, true)?.1);
        assert!(!open_file(&path, true)?.1);
        assert!(!open_file(&path, false)?.1);
        Ok(())
    }

    #[test]
    fn create_in_current_directory_syncs_dot() -> Result<()> {
        // A bare relative name has an empty parent; it must map to ".".
        let dir = tempfile::tempdir()?;
        sync_parent_dir(Path::new("bare-name"))?;
        sync_parent_dir(&dir.path().join("db"))?;
        Ok(())
    }
}
