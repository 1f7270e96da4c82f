//! A deterministic simulated disk for crash and fault tests.
//!
//! [`SimDisk`] implements [`Storage`] in memory and keeps two views apart:
//!
//! * the **durable image**: the bytes (and length) that survive a power loss;
//! * the **pending list**: writes and `set_len` calls completed since the last
//!   successful [`Storage::sync`], in issue order.
//!
//! Reads see the **live view**: the durable image with every pending change
//! applied in order, like an OS page cache. A successful `sync` applies the
//! pending list to the durable image and empties it.
//!
//! # What a crash may do
//!
//! [`SimDisk::crash`] simulates power loss. Each pending change is decided
//! independently, in order, with the weights of the [`CrashModel`]:
//!
//! * **kept**: applied whole to the durable image;
//! * **dropped**: never reaches the medium;
//! * **torn**: only a prefix reaches the medium, cut at a sector boundary
//!   ([`SECTOR_SIZE`] = 512 bytes, boundaries at absolute offsets that are
//!   multiples of 512) strictly inside the write, so at least one sector is
//!   new and at least one is old. With [`CrashModel::garbage`] percent chance,
//!   the first sector after the cut holds random bytes instead of old data (a
//!   sector that was being written when power failed). A write that lies
//!   within one sector cannot tear: a tear draw drops it instead.
//! * a pending `set_len` is kept or dropped (a tear draw drops it).
//!
//! Because the draws are independent, a later write may survive while an
//! earlier one to another place is lost (reordering). Writes to the same place
//! are applied in issue order, so the result is the old data, one of the
//! pending versions, or a torn mix of them, never an older version over a
//! newer one. A kept write that starts past the durable end extends the file
//! with zeros. Not modelled: sectors lost out of order inside one write,
//! misdirected writes, size metadata persisted without the data; media faults
//! on synced data are built with [`SimDisk::set_durable_image`].
//!
//! After a crash the live view equals the damaged durable image, nothing is
//! pending, every fault (and power-off) is cleared, and the handle (and every
//! clone of it) keeps working, so the engine can "reopen" on it.
//!
//! # Faults
//!
//! [`SimDisk::inject`] fails the `nth` (0-based) future operation of one kind
//! ([`FaultOp`]) with `EIO`, once or, if sticky, that one and every later one.
//! [`SimDisk::power_off_after`] lets `ops` more I/O operations (reads, writes,
//! syncs, `set_len`) run, then fails every operation with `EIO` until
//! `crash()`. A failed read, write or `set_len` changes nothing. A failed
//! sync makes nothing durable; with [`CrashModel::fsync_failure_drops_pending`]
//! (the default) it also forgets the pending list, as Linux does when
//! writeback fails: the lost writes stay visible in the live view (the page
//! cache keeps the pages, now marked clean) but a later sync "succeeds"
//! without them and a crash reveals that they are gone. Without it, they stay
//! pending and a later sync may still make them durable.
//!
//! [`Storage::len`] is not an I/O operation: it is not counted and cannot be
//! targeted by a fault, but it fails while powered off. Writes past
//! [`SimDisk::set_capacity`] (default [`SIM_DISK_SIZE_MAX`]) fail with
//! `ENOSPC` and change nothing.
//!
//! # Determinism
//!
//! Every random choice (crash decisions, tear points, garbage bytes) comes
//! from one `fastrand` generator seeded with the `u64` given at creation, and
//! fault and power-off points count operations, not time. So the same seed
//! and the same sequence of operations give the same images, byte for byte.
//! Threads that race on one disk make the sequence, not the disk,
//! nondeterministic.

use std::fmt;
use std::io;

use super::Storage;
use crate::Result;
use crate::sync::{Arc, Mutex};

/// The unit of atomicity of the simulated medium, in bytes.
pub const SECTOR_SIZE: u64 = 512;

/// The largest size a [`SimDisk`] can grow to, in bytes (the default
/// capacity): large enough for any test, small enough that a wild offset
/// fails instead of exhausting memory.
pub const SIM_DISK_SIZE_MAX: u64 = 1 << 32;

/// `EIO`, the error every injected fault returns.
const EIO: i32 = 5;
/// `ENOSPC`, returned by writes past the capacity.
const ENOSPC: i32 = 28;

/// How a crash treats each pending change. The three weights are relative:
/// a pending write is kept with probability `keep / (keep + drop + tear)`.
/// If all three are zero, every pending change is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashModel {
    /// Weight of "the write reached the medium whole".
    pub keep: u32,
    /// Weight of "the write never reached the medium".
    pub drop: u32,
    /// Weight of "a sector-aligned prefix of the write reached the medium".
    pub tear: u32,
    /// Percent chance (0 to 100) that a torn write leaves random bytes in the
    /// first sector past the cut instead of the old data. 0: never.
    pub garbage: u8,
    /// Whether a failed sync forgets the pending writes (Linux semantics).
    pub fsync_failure_drops_pending: bool,
}

impl Default for CrashModel {
    /// Even odds of keep, drop and tear; no garbage; Linux fsync semantics.
    fn default() -> Self {
        CrashModel { keep: 1, drop: 1, tear: 1, garbage: 0, fsync_failure_drops_pending: true }
    }
}

/// The kinds of I/O operation a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultOp {
    /// [`Storage::read_at`].
    Read,
    /// [`Storage::write_at`].
    Write,
    /// [`Storage::sync`].
    Sync,
    /// [`Storage::set_len`].
    SetLen,
}

/// An injected I/O error: the `nth` (0-based, counted from the time of
/// [`SimDisk::inject`]) future operation of kind `op` fails with `EIO`; if
/// `sticky`, every later operation of that kind fails too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Which kind of operation fails.
    pub op: FaultOp,
    /// How many operations of that kind succeed first.
    pub nth: u64,
    /// Fail forever from then on, instead of once.
    pub sticky: bool,
}

impl Fault {
    /// Fails only the `nth` future operation of kind `op`.
    pub fn once(op: FaultOp, nth: u64) -> Fault {
        Fault { op, nth, sticky: false }
    }

    /// Fails the `nth` future operation of kind `op` and every one after it.
    pub fn sticky(op: FaultOp, nth: u64) -> Fault {
        Fault { op, nth, sticky: true }
    }
}

/// Counters of what a [`SimDisk`] has done since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Reads attempted (failed ones included).
    pub reads: u64,
    /// Writes attempted (failed ones included).
    pub writes: u64,
    /// Syncs attempted (failed ones included).
    pub syncs: u64,
    /// `set_len` calls attempted (failed ones included).
    pub set_lens: u64,
    /// Operations that returned an error (faults, power-off, no space).
    pub failed: u64,
    /// Calls to [`SimDisk::crash`].
    pub crashes: u64,
    /// Pending changes a crash kept whole.
    pub crash_kept: u64,
    /// Pending changes a crash dropped.
    pub crash_dropped: u64,
    /// Pending writes a crash tore.
    pub crash_torn: u64,
    /// Pending writes a failed sync discarded.
    pub sync_dropped: u64,
}

/// A change completed but not yet synced.
#[derive(Debug, Clone)]
enum Pending {
    Write { offset: usize, data: Vec<u8> },
    SetLen(usize),
}

/// What a crash does to one pending change.
#[derive(Debug, Clone, Copy)]
enum Fate {
    Keep,
    Drop,
    Tear,
}

/// A fault armed at an absolute per-kind operation index.
#[derive(Debug, Clone, Copy)]
struct Armed {
    op: FaultOp,
    index: u64,
    sticky: bool,
}

struct State {
    durable: Vec<u8>,
    live: Vec<u8>,
    pending: Vec<Pending>,
    rng: fastrand::Rng,
    model: CrashModel,
    armed: Vec<Armed>,
    /// Operations with an index at or past this fail (power is off).
    power_off_at: Option<u64>,
    capacity: u64,
    stats: SimStats,
}

/// A simulated disk; clones are handles to the same disk. See the module
/// documentation for the model.
#[derive(Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("SimDisk")
            .field("durable_len", &state.durable.len())
            .field("live_len", &state.live.len())
            .field("pending", &state.pending.len())
            .field("model", &state.model)
            .field("stats", &state.stats)
            .finish()
    }
}

fn eio() -> crate::Error {
    io::Error::from_raw_os_error(EIO).into()
}

fn to_usize(value: u64) -> io::Result<usize> {
    usize::try_from(value).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Writes `data` at `offset` into `image`, growing it with zeros if needed.
/// `offset + data.len()` was checked against the capacity when the write was
/// accepted, so it fits in memory.
fn apply_write(image: &mut Vec<u8>, offset: usize, data: &[u8]) {
    let end = offset.saturating_add(data.len());
    if image.len() < end {
        image.resize(end, 0);
    }
    if let Some(dst) = image.get_mut(offset..end) {
        dst.copy_from_slice(data);
    }
}

impl SimDisk {
    /// An empty disk with the default [`CrashModel`].
    pub fn new(seed: u64) -> SimDisk {
        SimDisk::with_model(seed, CrashModel::default())
    }

    /// An empty disk whose crashes follow `model`.
    pub fn with_model(seed: u64, model: CrashModel) -> SimDisk {
        let state = State {
            durable: Vec::new(),
            live: Vec::new(),
            pending: Vec::new(),
            rng: fastrand::Rng::with_seed(seed),
            model,
            armed: Vec::new(),
            power_off_at: None,
            capacity: SIM_DISK_SIZE_MAX,
            stats: SimStats::default(),
        };
        SimDisk { state: Arc::new(Mutex::new(state)) }
    }

    /// The crash model in force.
    pub fn model(&self) -> CrashModel {
        self.state.lock().model
    }

    /// Replaces the crash model (e.g. to crash once without loss).
    pub fn set_model(&self, model: CrashModel) {
        self.state.lock().model = model;
    }

    /// Makes writes that would grow the disk past `bytes` fail with `ENOSPC`
    /// (capped at [`SIM_DISK_SIZE_MAX`]). Existing data is untouched.
    pub fn set_capacity(&self, bytes: u64) {
        self.state.lock().capacity = bytes.min(SIM_DISK_SIZE_MAX);
    }

    /// Simulates power loss; see the module documentation. Afterwards the
    /// disk holds the (possibly damaged) durable image, nothing is pending and
    /// no fault is armed.
    pub fn crash(&self) {
        let mut state = self.state.lock();
        let pending = std::mem::take(&mut state.pending);
        let mut durable = std::mem::take(&mut state.durable);
        for change in &pending {
            state.crash_one(&mut durable, change);
        }
        state.live = durable.clone();
        state.durable = durable;
        state.armed.clear();
        state.power_off_at = None;
        state.stats.crashes += 1;
    }

    /// Arms `fault`. Faults add up: several may be armed at once.
    pub fn inject(&self, fault: Fault) {
        let mut state = self.state.lock();
        let index = state.count_of(fault.op).saturating_add(fault.nth);
        state.armed.push(Armed { op: fault.op, index, sticky: fault.sticky });
    }

    /// Disarms every fault and the power-off point.
    pub fn clear_faults(&self) {
        let mut state = self.state.lock();
        state.armed.clear();
        state.power_off_at = None;
    }

    /// Lets `ops` more I/O operations of any kind run; every later one fails
    /// with `EIO` until [`SimDisk::crash`] (or [`SimDisk::clear_faults`]).
    pub fn power_off_after(&self, ops: u64) {
        let mut state = self.state.lock();
        state.power_off_at = Some(state.op_count().saturating_add(ops));
    }

    /// I/O operations attempted so far (reads, writes, syncs, `set_len`).
    pub fn op_count(&self) -> u64 {
        self.state.lock().op_count()
    }

    /// Pending (unsynced) writes; pending `set_len` calls are not counted.
    pub fn pending_write_count(&self) -> usize {
        let state = self.state.lock();
        state.pending.iter().filter(|change| matches!(change, Pending::Write { .. })).count()
    }

    /// A copy of the bytes that would survive a crash that drops everything.
    pub fn durable_image(&self) -> Vec<u8> {
        self.state.lock().durable.clone()
    }

    /// A copy of what reads see now.
    pub fn live_image(&self) -> Vec<u8> {
        self.state.lock().live.clone()
    }

    /// Replaces the disk's contents with `image`, as durable data, and
    /// forgets everything pending: for building damaged files (bit flips,
    /// zeroed sectors) and for starting from a golden file.
    pub fn set_durable_image(&self, image: Vec<u8>) {
        let mut state = self.state.lock();
        state.live = image.clone();
        state.durable = image;
        state.pending.clear();
    }

    /// The counters so far.
    pub fn stats(&self) -> SimStats {
        self.state.lock().stats
    }
}

impl State {
    fn op_count(&self) -> u64 {
        let s = &self.stats;
        s.reads + s.writes + s.syncs + s.set_lens
    }

    fn count_of(&self, op: FaultOp) -> u64 {
        match op {
            FaultOp::Read => self.stats.reads,
            FaultOp::Write => self.stats.writes,
            FaultOp::Sync => self.stats.syncs,
            FaultOp::SetLen => self.stats.set_lens,
        }
    }

    /// Counts one operation of kind `op` and decides whether it fails.
    fn begin(&mut self, op: FaultOp) -> Result<()> {
        let index = self.count_of(op);
        let op_index = self.op_count();
        match op {
            FaultOp::Read => self.stats.reads += 1,
            FaultOp::Write => self.stats.writes += 1,
            FaultOp::Sync => self.stats.syncs += 1,
            FaultOp::SetLen => self.stats.set_lens += 1,
        }
        let powered_off = self.power_off_at.is_some_and(|at| op_index >= at);
        let hit = |armed: &Armed| armed.op == op && (armed.index == index || (armed.sticky && index > armed.index));
        let faulted = self.armed.iter().any(hit);
        // A one-shot fault is spent once it fires; sticky ones stay armed.
        self.armed.retain(|armed| armed.sticky || !hit(armed));
        if powered_off || faulted {
            self.stats.failed += 1;
            return Err(eio());
        }
        Ok(())
    }

    /// Draws a fate from the crash model's weights.
    fn draw_fate(&mut self) -> Fate {
        let CrashModel { keep, drop, tear, .. } = self.model;
        let total = u64::from(keep) + u64::from(drop) + u64::from(tear);
        if total == 0 {
            return Fate::Keep;
        }
        let draw = self.rng.u64(0..total);
        if draw < u64::from(keep) {
            Fate::Keep
        } else if draw < u64::from(keep) + u64::from(drop) {
            Fate::Drop
        } else {
            Fate::Tear
        }
    }

    /// Applies what survives of one pending change to `durable`.
    fn crash_one(&mut self, durable: &mut Vec<u8>, change: &Pending) {
        let fate = self.draw_fate();
        match (change, fate) {
            (Pending::Write { offset, data }, Fate::Keep) => {
                apply_write(durable, *offset, data);
                self.stats.crash_kept += 1;
            }
            (Pending::Write { offset, data }, Fate::Tear) => self.tear(durable, *offset, data),
            (Pending::SetLen(len), Fate::Keep) => {
                durable.resize(*len, 0);
                self.stats.crash_kept += 1;
            }
            (Pending::Write { .. } | Pending::SetLen(_), _) => self.stats.crash_dropped += 1,
        }
    }

    /// Applies a sector-aligned prefix of the write `data` at `offset`, cut
    /// at a sector boundary strictly inside it; maybe garbles the next sector.
    fn tear(&mut self, durable: &mut Vec<u8>, offset: usize, data: &[u8]) {
        let sector = SECTOR_SIZE as usize;
        let end = offset.saturating_add(data.len());
        let first = (offset / sector).saturating_add(1).saturating_mul(sector);
        if first >= end {
            // Within one sector: sector writes are atomic, so it is lost whole.
            self.stats.crash_dropped += 1;
            return;
        }
        let boundaries = (end - 1 - first) / sector + 1;
        let cut = first + self.rng.usize(0..boundaries) * sector;
        apply_write(durable, offset, data.get(..cut - offset).unwrap_or_default());
        if self.rng.u8(0..100) < self.model.garbage {
            let tail_end = (cut + sector).min(end);
            let mut garbage = vec![0u8; tail_end - cut];
            self.rng.fill(&mut garbage);
            apply_write(durable, cut, &garbage);
        }
        self.stats.crash_torn += 1;
    }

    /// Validates a write's extent against the capacity.
    fn extent(&self, offset: u64, len: usize) -> Result<usize> {
        let len = u64::try_from(len).map_err(|_| io::Error::from_raw_os_error(ENOSPC))?;
        match offset.checked_add(len) {
            Some(end) if end <= self.capacity => {
                // Both ends must be addressable in memory.
                to_usize(end)?;
                Ok(to_usize(offset)?)
            }
            _ => Err(io::Error::from_raw_os_error(ENOSPC).into()),
        }
    }
}

impl Storage for SimDisk {
    fn durable_read_at(&self, offset: u64, buf: &mut [u8]) -> Option<Result<()>> {
        let state = self.state.lock();
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let src = start.checked_add(buf.len()).and_then(|end| state.durable.get(start..end));
        Some(match src {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
        })
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut state = self.state.lock();
        state.begin(FaultOp::Read)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let src = start
            .checked_add(buf.len())
            .and_then(|end| state.live.get(start..end))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let mut state = self.state.lock();
        state.begin(FaultOp::Write)?;
        let offset = match state.extent(offset, buf.len()) {
            Ok(offset) => offset,
            Err(err) => {
                state.stats.failed += 1;
                return Err(err);
            }
        };
        apply_write(&mut state.live, offset, buf);
        state.pending.push(Pending::Write { offset, data: buf.to_vec() });
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        let mut state = self.state.lock();
        if let Err(err) = state.begin(FaultOp::Sync) {
            if state.model.fsync_failure_drops_pending {
                let pending = std::mem::take(&mut state.pending);
                state.stats.sync_dropped += pending.len() as u64;
            }
            return Err(err);
        }
        let pending = std::mem::take(&mut state.pending);
        for change in pending {
            match change {
                Pending::Write { offset, data } => apply_write(&mut state.durable, offset, &data),
                Pending::SetLen(len) => state.durable.resize(len, 0),
            }
        }
        Ok(())
    }

    fn len(&self) -> Result<u64> {
        let state = self.state.lock();
        if state.power_off_at.is_some_and(|at| state.op_count() >= at) {
            return Err(eio());
        }
        Ok(state.live.len() as u64)
    }

    fn set_len(&self, len: u64) -> Result<()> {
        let mut state = self.state.lock();
        state.begin(FaultOp::SetLen)?;
        if len > state.capacity {
            state.stats.failed += 1;
            return Err(io::Error::from_raw_os_error(ENOSPC).into());
        }
        let len = to_usize(len)?;
        state.live.resize(len, 0);
        state.pending.push(Pending::SetLen(len));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(disk: &SimDisk, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        disk.read_at(offset, &mut buf)?;
        Ok(buf)
    }

    #[test]
    fn reads_see_pending_writes_in_order() -> Result<()> {
        let disk = SimDisk::new(1);
        disk.write_at(0, &[1; 8])?;
        disk.write_at(4, &[2; 8])?;
        assert_eq!(read(&disk, 0, 12)?, [1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2]);
        assert_eq!(disk.pending_write_count(), 2);
        assert!(disk.durable_image().is_empty());
        disk.sync()?;
        assert_eq!(disk.pending_write_count(), 0);
        assert_eq!(disk.durable_image(), disk.live_image());
        Ok(())
    }

    #[test]
    fn clones_share_one_disk() -> Result<()> {
        let disk = SimDisk::new(2);
        let other = disk.clone();
        other.write_at(0, b"abc")?;
        assert_eq!(read(&disk, 0, 3)?, b"abc");
        Ok(())
    }

    #[test]
    fn set_len_is_pending_until_sync() -> Result<()> {
        let disk = SimDisk::with_model(3, CrashModel { keep: 0, drop: 1, tear: 0, ..CrashModel::default() });
        disk.write_at(0, &[9; 1024])?;
        disk.sync()?;
        disk.set_len(100)?;
        assert_eq!(disk.len()?, 100);
        disk.crash();
        assert_eq!(disk.len()?, 1024);
        disk.set_len(100)?;
        disk.sync()?;
        disk.crash();
        assert_eq!(disk.len()?, 100);
        Ok(())
    }

    #[test]
    fn kept_set_len_applies_at_crash() -> Result<()> {
        let keep_all = CrashModel { keep: 1, drop: 0, tear: 0, ..CrashModel::default() };
        let disk = SimDisk::with_model(3, keep_all);
        disk.write_at(0, &[9; 1024])?;
        disk.sync()?;
        disk.set_len(100)?;
        disk.write_at(200, &[8; 10])?;
        disk.crash();
        // Truncated to 100, then extended by the write with zeros between.
        assert_eq!(disk.len()?, 210);
        assert_eq!(read(&disk, 99, 2)?, [9, 0]);
        assert_eq!(read(&disk, 150, 1)?, [0]);
        assert_eq!(disk.stats().crash_kept, 2);
        Ok(())
    }

    #[test]
    fn writes_past_capacity_fail_with_enospc() -> Result<()> {
        let disk = SimDisk::new(4);
        disk.set_capacity(1000);
        disk.write_at(0, &[1; 1000])?;
        match disk.write_at(999, &[1; 2]) {
            Err(crate::Error::Io(err)) => assert_eq!(err.raw_os_error(), Some(ENOSPC)),
            other => panic!("expected ENOSPC, got {other:?}"),
        }
        assert!(disk.write_at(u64::MAX, &[1]).is_err());
        assert_eq!(disk.len()?, 1000);
        Ok(())
    }

    #[test]
    fn tear_inside_one_sector_drops_the_write() -> Result<()> {
        let model = CrashModel { keep: 0, drop: 0, tear: 1, ..CrashModel::default() };
        let disk = SimDisk::with_model(5, model);
        disk.write_at(512, &[1; 512])?;
        disk.crash();
        assert!(disk.durable_image().is_empty());
        assert_eq!(disk.stats().crash_dropped, 1);
        Ok(())
    }
}
