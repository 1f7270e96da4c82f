//! A directory of storages: the WAL's segment files.
//!
//! The log is a set of fixed-size files in one directory. [`Dir`] is the
//! smallest surface the log needs: list the files, open (or create) one as a
//! [`Storage`], and make new directory entries durable. There is no rename or
//! remove: segments are recycled in place (`wal/segment.rs`).
//!
//! * [`FileDir`]: a real directory; files are [`FileStorage`]s (so each is
//!   `flock`ed while open) and creating one fsyncs the directory.
//! * [`SimDir`]: simulated files ([`SimDisk`]s) in a simulated directory. A
//!   created entry is durable only after [`Dir::sync`]; [`SimDir::crash`]
//!   crashes every file and keeps or drops (seeded, even odds) each entry
//!   created since the last directory sync (rule 9 of
//!   `docs/protocols/disk-assumptions.md`). [`SimDir::power_off_after`]
//!   counts the I/O operations of *all* files (and directory syncs) together
//!   and fails every one after the `k`-th with `EIO` until the crash, so a
//!   test can crash at every I/O point of a workload.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use super::{CrashModel, FileStorage, SimDisk, Storage};
use crate::Result;
use crate::sync::{Arc, AtomicU64, Mutex, Ordering};

/// A directory of storages. Names are plain file names (no separators).
pub trait Dir: Send + Sync + 'static {
    /// Names of the files in the directory, sorted.
    fn list(&self) -> Result<Vec<String>>;
    /// Opens the file `name`; with `create`, creates it (empty) if missing.
    /// A missing file without `create` is an `Error::Io` of kind `NotFound`.
    fn open(&self, name: &str, create: bool) -> Result<Arc<dyn Storage>>;
    /// Makes every entry created so far durable (fsync of the directory).
    fn sync(&self) -> Result<()>;
}

/// A real directory, created if missing.
#[derive(Debug)]
pub struct FileDir {
    path: PathBuf,
}

impl FileDir {
    /// Opens the directory at `path`, creating it if it does not exist,
    /// and fsyncs its parent either way: a directory a killed process
    /// created, and never made durable in its parent, must not hold log
    /// segments this process acknowledges commits from (as
    /// [`FileStorage::open`](super::FileStorage::open) does for a file).
    pub fn open(path: &Path) -> Result<FileDir> {
        if !path.is_dir() {
            std::fs::create_dir_all(path)?;
        }
        super::file::sync_parent_dir(path)?;
        Ok(FileDir { path: path.to_path_buf() })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(crate::Error::InvalidArgument(format!("bad file name {name:?}")));
    }
    Ok(())
}

impl Dir for FileDir {
    fn list(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Some(name) = entry.file_name().to_str()
            {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    fn open(&self, name: &str, create: bool) -> Result<Arc<dyn Storage>> {
        check_name(name)?;
        // This fsyncs the directory when it creates the file; the log syncs
        // it once at open for the entries it finds (`wal::segment`).
        Ok(Arc::new(FileStorage::open_listed(&self.path.join(name), create)?))
    }

    fn sync(&self) -> Result<()> {
        std::fs::File::open(&self.path)?.sync_all()?;
        Ok(())
    }
}

struct SimDirState {
    files: BTreeMap<String, SimDisk>,
    /// Entries that survive a crash for sure.
    durable: BTreeSet<String>,
    rng: fastrand::Rng,
    model: CrashModel,
}

/// Counts the I/O of every file of a [`SimDir`]; see the module doc.
struct Power {
    ops: AtomicU64,
    /// Operations with an index at or past this fail; `u64::MAX`: never.
    off_at: AtomicU64,
    /// Lives of the "process": each crash starts a new one, and a file
    /// handle opened in an earlier life fails every operation (the process
    /// that held it is dead; its threads must not write into the new life).
    life: AtomicU64,
    /// Held (shared) across each file operation and (exclusive) by a crash,
    /// so no operation of the old life lands after the crash.
    gate: parking_lot::RwLock<()>,
}

impl Power {
    /// Starts an operation of a handle opened in `life`; the guard keeps a
    /// crash out until the operation is done.
    fn enter(&self, life: u64) -> Result<parking_lot::RwLockReadGuard<'_, ()>> {
        let gate = self.gate.read();
        // Relaxed: changed only under the exclusive gate.
        if self.life.load(Ordering::Relaxed) != life {
            return Err(io::Error::other("simulated file handle from before a crash").into());
        }
        self.begin()?;
        Ok(gate)
    }

    fn begin(&self) -> Result<()> {
        // Relaxed: tests drive power-off from one thread at a time per op;
        // the counter only needs to be exact, not ordered with other memory.
        let index = self.ops.fetch_add(1, Ordering::Relaxed);
        if index >= self.off_at.load(Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(5).into());
        }
        Ok(())
    }
}

/// A simulated directory of [`SimDisk`] files; clones share it.
#[derive(Clone)]
pub struct SimDir {
    state: Arc<Mutex<SimDirState>>,
    power: Arc<Power>,
    /// Set on a handle from [`SimDir::this_life`]: the life it belongs to.
    life: Option<u64>,
}

impl SimDir {
    /// An empty directory; each file's crashes follow `model`, seeded from
    /// `seed`.
    pub fn new(seed: u64, model: CrashModel) -> SimDir {
        let state = SimDirState {
            files: BTreeMap::new(),
            durable: BTreeSet::new(),
            rng: fastrand::Rng::with_seed(seed),
            model,
        };
        let power = Power {
            ops: AtomicU64::new(0),
            off_at: AtomicU64::new(u64::MAX),
            life: AtomicU64::new(0),
            gate: parking_lot::RwLock::new(()),
        };
        SimDir { state: Arc::new(Mutex::new(state)), power: Arc::new(power), life: None }
    }

    /// A handle on this directory for the current life of the "process":
    /// after the next [`SimDir::crash`] it can neither open nor sync
    /// anything (its files fail too), so threads of a dead process that are
    /// still running (a log's segment preparer) cannot create or sync files
    /// in the new life. Give a store this handle; keep the plain one to
    /// crash, inspect and reopen.
    pub fn this_life(&self) -> SimDir {
        // Relaxed: changed only under the exclusive gate by `crash`.
        SimDir { life: Some(self.power.life.load(Ordering::Relaxed)), ..self.clone() }
    }

    fn check_life(&self) -> Result<()> {
        // Relaxed: see `this_life`.
        match self.life {
            Some(life) if life != self.power.life.load(Ordering::Relaxed) => {
                Err(io::Error::other("simulated directory handle from before a crash").into())
            }
            _ => Ok(()),
        }
    }

    /// The simulated disk behind `name`, to inject faults or damage it.
    pub fn disk(&self, name: &str) -> Option<SimDisk> {
        self.state.lock().files.get(name).cloned()
    }

    /// Replaces the crash model of every file, present and future.
    pub fn set_model(&self, model: CrashModel) {
        let mut state = self.state.lock();
        state.model = model;
        for disk in state.files.values() {
            disk.set_model(model);
        }
    }

    /// Lets `ops` more I/O operations (over all files, directory syncs
    /// included) run; every later one fails with `EIO` until [`SimDir::crash`].
    pub fn power_off_after(&self, ops: u64) {
        let now = self.power.ops.load(Ordering::Relaxed);
        self.power.off_at.store(now.saturating_add(ops), Ordering::Relaxed);
    }

    /// I/O operations attempted so far over all files.
    pub fn op_count(&self) -> u64 {
        self.power.ops.load(Ordering::Relaxed)
    }

    /// Simulates the death of the process (`SIGKILL`) without power loss:
    /// handles opened before fail from now on, as after [`SimDir::crash`],
    /// and a power-off point is cleared (so `power_off_after(k)` then
    /// `kill()` is a process killed at its `k`-th I/O operation); but the
    /// files keep their unsynced writes and the directory its unsynced
    /// entries, because the kernel's page cache outlives the process. The
    /// next life reads them; a later [`SimDir::crash`] still decides them.
    pub fn kill(&self) {
        let _gate = self.power.gate.write();
        self.power.life.fetch_add(1, Ordering::Relaxed);
        self.power.off_at.store(u64::MAX, Ordering::Relaxed);
    }

    /// Simulates power loss: every file crashes ([`SimDisk::crash`]), each
    /// entry created since the last directory sync is kept or dropped, power
    /// comes back. Handles opened before fail from now on (a new life of the
    /// process opens the files again), so threads of the dead process that
    /// are still running cannot touch the disks.
    pub fn crash(&self) {
        let _gate = self.power.gate.write();
        self.power.life.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock();
        let names: Vec<String> = state.files.keys().cloned().collect();
        for name in names {
            if !state.durable.contains(&name) && state.rng.bool() {
                state.files.remove(&name);
                continue;
            }
            if let Some(disk) = state.files.get(&name) {
                disk.crash();
            }
            state.durable.insert(name);
        }
        self.power.off_at.store(u64::MAX, Ordering::Relaxed);
    }
}

/// One file of a [`SimDir`]: the disk, gated by the directory's power.
struct SimFile {
    disk: SimDisk,
    power: Arc<Power>,
    life: u64,
}

impl Storage for SimFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let _op = self.power.enter(self.life)?;
        self.disk.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let _op = self.power.enter(self.life)?;
        self.disk.write_at(offset, buf)
    }
    fn sync(&self) -> Result<()> {
        // A sync that fails for power loss made nothing durable; the crash
        // that follows decides the pending writes.
        let _op = self.power.enter(self.life)?;
        self.disk.sync()
    }
    fn len(&self) -> Result<u64> {
        self.disk.len()
    }
    fn set_len(&self, len: u64) -> Result<()> {
        let _op = self.power.enter(self.life)?;
        self.disk.set_len(len)
    }
    fn durable_read_at(&self, offset: u64, buf: &mut [u8]) -> Option<Result<()>> {
        self.disk.durable_read_at(offset, buf)
    }
}

impl Dir for SimDir {
    fn list(&self) -> Result<Vec<String>> {
        Ok(self.state.lock().files.keys().cloned().collect())
    }

    fn open(&self, name: &str, create: bool) -> Result<Arc<dyn Storage>> {
        check_name(name)?;
        let _gate = self.power.gate.read();
        self.check_life()?;
        let mut state = self.state.lock();
        let disk = match state.files.get(name) {
            Some(disk) => disk.clone(),
            None if create => {
                let seed = state.rng.u64(..);
                let disk = SimDisk::with_model(seed, state.model);
                state.files.insert(name.to_string(), disk.clone());
                disk
            }
            None => return Err(io::Error::from(io::ErrorKind::NotFound).into()),
        };
        // Relaxed: changed only under the exclusive gate, which a crash
        // holds; a handle opened concurrently with a crash is a test bug.
        let life = self.power.life.load(Ordering::Relaxed);
        Ok(Arc::new(SimFile { disk, power: Arc::clone(&self.power), life }))
    }

    fn sync(&self) -> Result<()> {
        let _gate = self.power.gate.read();
        self.check_life()?;
        self.power.begin()?;
        let mut state = self.state.lock();
        let names: Vec<String> = state.files.keys().cloned().collect();
        state.durable.extend(names);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_dir_creates_lists_and_reopens() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = FileDir::open(&tmp.path().join("wal"))?;
        assert!(dir.list()?.is_empty());
        {
            let file = dir.open("b.seg", true)?;
            file.write_at(0, b"hi")?;
            file.sync()?;
            dir.open("a.seg", true)?;
        }
        dir.sync()?;
        assert_eq!(dir.list()?, ["a.seg", "b.seg"]);
        let mut buf = [0u8; 2];
        dir.open("b.seg", false)?.read_at(0, &mut buf)?;
        assert_eq!(&buf, b"hi");
        assert!(dir.open("missing", false).is_err());
        assert!(dir.open("../x", true).is_err());
        Ok(())
    }

    #[test]
    fn sim_dir_drops_or_keeps_unsynced_entries() -> Result<()> {
        let mut dropped = 0;
        for seed in 0..32 {
            let dir = SimDir::new(seed, CrashModel::default());
            dir.open("kept", true)?.write_at(0, b"x")?;
            dir.sync()?;
            dir.open("new", true)?;
            dir.crash();
            let names = dir.list()?;
            assert!(names.contains(&"kept".to_string()));
            dropped += usize::from(!names.contains(&"new".to_string()));
            // After a crash every surviving entry is durable.
            dir.crash();
            assert_eq!(dir.list()?, names);
        }
        assert!(dropped > 0 && dropped < 32, "dropped {dropped} of 32");
        Ok(())
    }

    #[test]
    fn sim_dir_kill_keeps_the_page_cache_for_a_later_crash() -> Result<()> {
        let dir = SimDir::new(1, CrashModel { keep: 0, drop: 1, tear: 0, ..CrashModel::default() });
        let old = dir.this_life();
        let a = old.open("a", true)?;
        a.write_at(0, b"1")?;
        dir.kill();
        // The dead process's handles fail; its unsynced write is still read.
        assert!(a.write_at(0, b"2").is_err());
        assert!(old.open("b", true).is_err());
        let mut buf = [0u8; 1];
        dir.open("a", false)?.read_at(0, &mut buf)?;
        assert_eq!(&buf, b"1");
        // A power cut later still decides it (here: the write is dropped;
        // the entry, never synced, may go too).
        dir.crash();
        if let Ok(file) = dir.open("a", false) {
            assert_eq!(file.len()?, 0);
        }
        Ok(())
    }

    #[test]
    fn sim_dir_power_off_counts_every_file() -> Result<()> {
        let dir = SimDir::new(1, CrashModel::default());
        let a = dir.open("a", true)?;
        let b = dir.open("b", true)?;
        dir.sync()?;
        dir.power_off_after(3);
        a.write_at(0, b"1")?;
        b.write_at(0, b"2")?;
        a.sync()?;
        assert!(b.sync().is_err());
        assert!(dir.sync().is_err());
        assert_eq!(dir.op_count(), 6);
        dir.crash();
        // Power is back; the synced write of `a` survived.
        let mut buf = [0u8; 1];
        dir.open("a", false)?.read_at(0, &mut buf)?;
        assert_eq!(&buf, b"1");
        Ok(())
    }
}
