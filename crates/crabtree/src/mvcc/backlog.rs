//! The vacuum backlog: the versions commits left behind, so background
//! vacuum removes those instead of reading the whole tree.
//!
//! # Why
//! A commit prunes what no snapshot can see of the keys it writes, but not
//! the versions its own write shadows: until the commit is visible, a
//! snapshot may begin that still needs them. So every overwrite leaves
//! the version before it, and every delete its tombstone, to be removed
//! once the horizon reaches the commit. A pass over the whole tree finds
//! them, but its cost grows with the database, not with the writes, and
//! past memory a pass each second competes with the workload for the pool
//! and the disk. As InnoDB's purge follows its history list, vacuum
//! follows this backlog: each commit that leaves something behind records,
//! per key, its timestamp, the timestamps of the older versions it left
//! (from the history it read under the key's lock), and whether it wrote
//! a tombstone.
//!
//! # Why a round may remove them without reading the key
//! Once the horizon has reached the commit's timestamp `T`, the newest
//! version at or below the horizon is `T`'s or a newer one, so every
//! version older than `T` is below it: all of them may go (oldest first).
//! The commit read them under the key's lock, after every earlier commit
//! of the key had applied and before any later one could, so no version
//! older than `T` exists that it did not read, unless its read stopped at
//! its limit (`complete` false). A tombstone at `T` may go too, after
//! them: it is the newest version at or below the horizon (then
//! `read::invisible` names it), or a newer one there shadows it. With an
//! incomplete history the key is visited the old way: all its versions
//! read, and what `read::invisible` names removed. (That is a second line
//! of defence: each older version is also listed by the entry of the
//! commit that wrote the version after it, which is ready no later and
//! taken first, or, if that entry was lost, a whole pass is due and runs
//! before any round.) A version already gone (a later commit pruned it)
//! costs a descent and nothing else.
//!
//! # What may be missing from it
//! What the backlog cannot name goes to a whole-tree pass, flagged by
//! `whole`:
//! * versions left by an earlier process (the backlog is not persisted):
//!   `whole` starts set, so the first round after open reads the tree once,
//!   unless that process closed cleanly with nothing left: its close
//!   drained the backlog and recorded the clock in a root slot, and an open
//!   that finds the clock unchanged (nothing committed since, nothing
//!   replayed) clears `whole` (`assume_clean`; `Db`'s close and open);
//! * entries dropped because the backlog reached its size bound
//!   ([`bytes_max`]; writers outrunning vacuum): they are all dropped and
//!   `whole` is set;
//! * a round that failed (an I/O error) or was stopped: `whole` is set.
//!
//! A whole-tree pass clears `whole` only if no entry was dropped since it
//! began (`dropped_count`) and its horizon is at or above `whole_upto`,
//! the largest commit timestamp any entry had when entries were dropped.
//! A pass at a lower horizon (a snapshot holding it back) cannot take the
//! versions those entries named, so the worker does not run it until the
//! horizon gets there; rounds meanwhile go on with the entries that are
//! left. Entries still in the backlog at or below a pass's horizon are
//! taken by the pass (its walk meets their keys); later ones stay for
//! later rounds. (Found by an adversarial review: an earlier version let
//! a pass held back by a snapshot clear the request, and the versions of
//! the dropped entries stayed for good, `tests/vacuum_adversarial.rs`.)

use super::encoding::Ts;
use crate::sync::Mutex;

/// Bytes the backlog holds at most (its vectors' spare capacity aside),
/// before dropping its entries for a whole-tree pass: an eighth of the
/// pool's budget, within 1 to 64 MiB (8 MiB for the default 64 MiB
/// budget: about 140,000 single-key overwrites of 16-byte keys). Memory
/// beyond the pool's budget, as the key locks and snapshots are.
pub(crate) fn bytes_max(pool_bytes: usize) -> usize {
    (pool_bytes / 8).clamp(1 << 20, 64 << 20)
}

/// Bytes an entry costs besides its key prefix and older timestamps.
const ENTRY_OVERHEAD: usize = std::mem::size_of::<Entry>();

/// What one commit left of one key.
pub(crate) struct Left<'a> {
    /// The key's version prefix.
    pub(crate) prefix: &'a [u8],
    /// The versions older than the commit's that it left in the tree.
    pub(crate) older: &'a [Ts],
    /// The commit wrote a tombstone.
    pub(crate) tombstone: bool,
    /// `older` is every version older than the commit's (its history read
    /// was not cut at its limit).
    pub(crate) complete: bool,
}

/// One entry: where its bytes are in the arena (the prefix, then the
/// older timestamps, 8 bytes each).
#[derive(Clone, Copy)]
struct Entry {
    ts: Ts,
    start: usize,
    prefix_len: u32,
    older: u32,
    tombstone: bool,
    complete: bool,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.prefix_len as usize + self.older as usize * 8
    }
}

/// See the module doc.
pub(crate) struct Backlog {
    state: Mutex<State>,
    bytes_max: usize,
}

#[derive(Default)]
struct State {
    /// The bytes of all entries, one after another.
    arena: Vec<u8>,
    entries: Vec<Entry>,
    /// Versions may exist that no entry names: a whole-tree pass is due.
    whole: bool,
    /// How many times entries were dropped (bound reached, failed round).
    dropped_count: u64,
    /// The largest commit timestamp any entry ever had: entries dropped
    /// are of commits at or below it, so only a whole pass whose horizon
    /// reached the value it had then covers them (`whole_upto`).
    max_ts: Ts,
    /// Set with `whole`: the whole pass must have its horizon at or above
    /// this to cover every entry dropped.
    whole_upto: Ts,
}

impl State {
    fn bytes(&self) -> usize {
        self.arena.len() + self.entries.len() * ENTRY_OVERHEAD
    }

    fn drop_all(&mut self) {
        *self = State {
            whole: true,
            dropped_count: self.dropped_count + 1,
            max_ts: self.max_ts,
            whole_upto: self.whole_upto.max(self.max_ts),
            ..State::default()
        };
    }

    /// Appends an entry whose bytes are `prefix` and `older` (as bytes).
    fn append(&mut self, ts: Ts, prefix: &[u8], older: impl ExactSizeIterator<Item = Ts>, flags: (bool, bool)) {
        let start = self.arena.len();
        let count = older.len();
        self.arena.extend_from_slice(prefix);
        for old in older {
            self.arena.extend_from_slice(&old.to_le_bytes());
        }
        self.max_ts = self.max_ts.max(ts);
        self.entries.push(Entry {
            ts,
            start,
            prefix_len: prefix.len() as u32,
            older: count as u32,
            tombstone: flags.0,
            complete: flags.1,
        });
    }
}

/// An entry of [`Ready`].
pub(crate) struct ReadyEntry<'a> {
    /// The commit's timestamp.
    pub(crate) ts: Ts,
    /// As in [`Left`].
    pub(crate) prefix: &'a [u8],
    /// As in [`Left`], oldest first.
    older: &'a [u8],
    /// As in [`Left`].
    pub(crate) tombstone: bool,
    /// As in [`Left`].
    pub(crate) complete: bool,
}

impl ReadyEntry<'_> {
    /// The older versions the commit left, oldest first.
    pub(crate) fn older(&self) -> impl Iterator<Item = Ts> + '_ {
        self.older.chunks_exact(8).map(|word| Ts::from_le_bytes(word.try_into().unwrap_or_default())).rev()
    }
}

/// Entries of commits the horizon has passed, taken from the backlog (in
/// no order until [`Ready::sort`]).
pub(crate) struct Ready {
    arena: Vec<u8>,
    entries: Vec<Entry>,
}

impl Ready {
    /// The entries.
    pub(crate) fn iter(&self) -> impl Iterator<Item = ReadyEntry<'_>> {
        self.entries.iter().map(|entry| {
            let bytes = self.arena.get(entry.start..entry.start + entry.bytes()).unwrap_or_default();
            let (prefix, older) = bytes.split_at((entry.prefix_len as usize).min(bytes.len()));
            ReadyEntry { ts: entry.ts, prefix, older, tombstone: entry.tombstone, complete: entry.complete }
        })
    }

    /// How many entries.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Sorts the entries by key, the commits of one key oldest first (so
    /// removals on one leaf follow each other, and a key's older versions
    /// go before its later tombstones).
    pub(crate) fn sort(&mut self) {
        let arena = &self.arena;
        let prefix =
            |entry: &Entry| arena.get(entry.start..entry.start + entry.prefix_len as usize).unwrap_or_default();
        self.entries.sort_unstable_by(|a, b| prefix(a).cmp(prefix(b)).then(a.ts.cmp(&b.ts)));
    }
}

impl Backlog {
    /// An empty backlog that asks for one whole-tree pass (versions of an
    /// earlier process are not in it).
    pub(crate) fn new(bytes_max: usize) -> Backlog {
        Backlog { state: Mutex::new(State { whole: true, ..State::default() }), bytes_max }
    }

    /// Records what the commit at `ts` left. `older` in each is newest
    /// first (as histories are read). Returns whether the backlog just
    /// passed three quarters of its bound (the caller wakes vacuum early,
    /// before the bound makes it drop everything; waking it sooner would
    /// only make its rounds smaller, which batches fewer removals per
    /// leaf).
    pub(crate) fn push<'a>(&self, ts: Ts, left: impl IntoIterator<Item = Left<'a>>) -> bool {
        let mut state = self.state.lock();
        let before = state.bytes();
        for item in left {
            if state.bytes() + item.prefix.len() + item.older.len() * 8 + ENTRY_OVERHEAD > self.bytes_max {
                state.drop_all();
                return false;
            }
            state.append(ts, item.prefix, item.older.iter().copied(), (item.tombstone, item.complete));
        }
        let wake_at = self.bytes_max / 4 * 3;
        before < wake_at && state.bytes() >= wake_at
    }

    /// Whether a whole-tree pass is due, and the drop count to hand to
    /// [`Backlog::whole_pass_done`] when it ends.
    pub(crate) fn whole_pass_due(&self) -> (bool, u64) {
        let state = self.state.lock();
        (state.whole, state.dropped_count)
    }

    /// Whether a whole pass at `horizon` would cover every entry dropped
    /// so far (else, with a snapshot holding the horizon back, it would
    /// have to run again: the worker waits instead).
    pub(crate) fn whole_pass_covers(&self, horizon: Ts) -> bool {
        horizon >= self.state.lock().whole_upto
    }

    /// A whole-tree pass at `horizon` that began at drop count
    /// `dropped_count` ended. It covered every dropped entry if its
    /// horizon reached them all (commits above it were not yet seen by
    /// it) and none was dropped while it ran.
    pub(crate) fn whole_pass_done(&self, dropped_count: u64, horizon: Ts) {
        let mut state = self.state.lock();
        if state.dropped_count == dropped_count && horizon >= state.whole_upto {
            state.whole = false;
        }
    }

    /// Clears the whole-pass request of a new backlog: the database's last
    /// process closed with nothing left for vacuum and nothing committed
    /// since (`Db::open` checks the marker its close left, see
    /// [`Backlog::is_clean`]). Call before any commit.
    pub(crate) fn assume_clean(&self) {
        let mut state = self.state.lock();
        debug_assert!(state.entries.is_empty() && state.dropped_count == 0, "a backlog already in use");
        state.whole = false;
    }

    /// Whether vacuum has nothing left to do that this backlog knows of:
    /// no whole pass due and no entry waiting. Every version commits left
    /// is then gone (the backlog names them all, and the rounds removed
    /// them), so a close may record it for the next open.
    pub(crate) fn is_clean(&self) -> bool {
        let state = self.state.lock();
        !state.whole && state.entries.is_empty()
    }

    /// Asks for a whole-tree pass (a round failed or stopped).
    pub(crate) fn give_up(&self) {
        self.state.lock().drop_all();
    }

    /// Takes the entries of commits at or below `horizon`.
    pub(crate) fn take_ready(&self, horizon: Ts) -> Ready {
        // Sorted out with the lock free: committers push meanwhile.
        let (arena, entries) = {
            let mut state = self.state.lock();
            (std::mem::take(&mut state.arena), std::mem::take(&mut state.entries))
        };
        let (ready, waiting): (Vec<Entry>, Vec<Entry>) = entries.into_iter().partition(|entry| entry.ts <= horizon);
        // Tests push entries here, into the fresh arena, before the
        // waiting ones go back (`backlog.take_gap`).
        failpoint!("backlog.take_gap", ignore);
        {
            let mut state = self.state.lock();
            // Entries pushed while the lock was free sit in a new arena;
            // the waiting ones join them (a bound reached meanwhile may
            // have dropped those: then these go too).
            let waiting_bytes: usize = waiting.iter().map(|entry| entry.bytes() + ENTRY_OVERHEAD).sum();
            if state.bytes() + waiting_bytes > self.bytes_max {
                state.drop_all();
            } else {
                for entry in waiting {
                    let bytes = arena.get(entry.start..entry.start + entry.bytes()).unwrap_or_default();
                    let at = state.arena.len();
                    state.arena.extend_from_slice(bytes);
                    state.entries.push(Entry { start: at, ..entry });
                }
            }
        }
        Ready { arena, entries: ready }
    }

    /// Entries of commits in `horizon + 1..=watermark`: each stands for at
    /// least one version kept only for a snapshot older than the watermark.
    pub(crate) fn pinned(&self, horizon: Ts, watermark: Ts) -> u64 {
        let state = self.state.lock();
        state.entries.iter().filter(|entry| entry.ts > horizon && entry.ts <= watermark).count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn left<'a>(prefix: &'a [u8], older: &'static [Ts]) -> Left<'a> {
        Left { prefix, older, tombstone: false, complete: true }
    }

    /// (ts, prefix, older oldest first, tombstone, complete) of each entry.
    type Seen = Vec<(Ts, Vec<u8>, Vec<Ts>, bool, bool)>;

    fn seen(ready: &Ready) -> Seen {
        ready.iter().map(|e| (e.ts, e.prefix.to_vec(), e.older().collect(), e.tombstone, e.complete)).collect()
    }

    #[test]
    fn takes_what_the_horizon_passed_in_key_order() {
        let backlog = Backlog::new(1 << 20);
        assert_eq!(backlog.whole_pass_due(), (true, 0), "a new backlog knows nothing of earlier versions");
        backlog.whole_pass_done(0, 0);
        assert_eq!(backlog.whole_pass_due(), (false, 0));
        backlog.push(5, [left(b"b", &[4, 2]), Left { prefix: b"a", older: &[], tombstone: true, complete: false }]);
        backlog.push(7, [left(b"c", &[1])]);
        backlog.push(6, [left(b"b", &[5])]);
        assert_eq!(backlog.pinned(5, 7), 2);
        let mut ready = backlog.take_ready(6);
        assert_eq!(ready.len(), 3);
        ready.sort();
        assert_eq!(
            seen(&ready),
            vec![
                (5, b"a".to_vec(), vec![], true, false),
                (5, b"b".to_vec(), vec![2, 4], false, true),
                (6, b"b".to_vec(), vec![5], false, true),
            ]
        );
        assert_eq!(backlog.take_ready(6).len(), 0, "taken once");
        assert_eq!(
            seen(&backlog.take_ready(7)),
            vec![(7, b"c".to_vec(), vec![1], false, true)],
            "the later commit stayed"
        );
        assert_eq!(backlog.whole_pass_due(), (false, 0));
    }

    #[test]
    fn the_bound_follows_the_pool_within_limits() {
        assert_eq!(bytes_max(64 << 20), 8 << 20);
        assert_eq!(bytes_max(1 << 20), 1 << 20, "at least 1 MiB");
        assert_eq!(bytes_max(4 << 30), 64 << 20, "at most 64 MiB");
    }

    #[test]
    fn reaching_the_bound_drops_everything_for_a_whole_pass() {
        let backlog = Backlog::new(10 * (ENTRY_OVERHEAD + 4 + 8));
        backlog.whole_pass_done(0, 0);
        let mut woke = 0;
        for i in 0..9u32 {
            woke += usize::from(backlog.push(u64::from(i), [left(&i.to_be_bytes(), &[0])]));
        }
        assert_eq!(woke, 1, "one wake-up, at three quarters of the bound");
        assert_eq!(backlog.whole_pass_due(), (false, 0));
        backlog.push(9, [left(b"ten!", &[0]), left(b"elev", &[0])]);
        let (due, count) = backlog.whole_pass_due();
        assert!(due && count == 1);
        assert_eq!(backlog.take_ready(u64::MAX).len(), 0, "entries dropped");
        // A pass that began before another drop does not clear the flag.
        backlog.give_up();
        backlog.whole_pass_done(count, 9);
        assert!(backlog.whole_pass_due().0);
        // Nor does one whose horizon is below a dropped entry's commit
        // (entry 8 or 9 was dropped): it never saw those versions.
        let count = backlog.whole_pass_due().1;
        assert!(!backlog.whole_pass_covers(8));
        backlog.whole_pass_done(count, 8);
        assert!(backlog.whole_pass_due().0);
        assert!(backlog.whole_pass_covers(9));
        backlog.whole_pass_done(count, 9);
        assert!(!backlog.whole_pass_due().0);
    }
}
