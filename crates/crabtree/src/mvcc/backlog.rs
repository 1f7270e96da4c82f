//! The vacuum backlog: the keys whose old versions commits left behind, so
//! background vacuum visits those keys instead of reading the whole tree.
//!
//! # Why
//! A commit prunes what no snapshot can see of the keys it writes, but not
//! the version its own write shadows: until the commit is visible, a
//! snapshot may begin that still needs it. So every overwrite leaves one
//! version behind, and every delete its tombstone, to be removed once the
//! horizon reaches the commit. A pass over the whole tree finds them, but
//! past memory a whole-tree pass each second competes with the workload
//! for the pool and the disk, and its cost grows with the database, not
//! with the writes. As InnoDB's purge follows its history list, vacuum
//! follows this backlog: each commit that leaves something behind records
//! its timestamp and those keys; a vacuum step takes the entries the
//! horizon has passed and prunes just those keys.
//!
//! # What may be missing from it
//! An entry is only a hint to visit a key; a visit removes what
//! `read::invisible` names for the whole key at the current horizon, so
//! entries for keys pruned meanwhile cost a read. What the backlog cannot
//! name goes to a whole-tree pass, flagged by `whole`:
//! * versions left by an earlier process (the backlog is not persisted):
//!   `whole` starts set, so the first step after open reads the tree once;
//! * entries dropped because the backlog reached its size bound (writers
//!   outrunning vacuum): they are all dropped and `whole` is set;
//! * a visit that failed (an I/O error): `whole` is set.
//!
//! A whole-tree pass clears `whole` only if no entry was dropped since it
//! began (`dropped_count`). Entries of commits at or below the pass's
//! horizon are covered by it and taken first; a commit above the horizon
//! was still in flight when the horizon was read (the horizon is at most
//! the watermark), so its entry stays for a later step.

use super::encoding::Ts;
use crate::sync::Mutex;

/// Bytes of key prefixes the backlog holds at most, before dropping its
/// entries for a whole-tree pass.
pub(crate) const BYTES_MAX: usize = 16 << 20;

/// Bytes an entry costs besides its key prefix (its timestamp and place).
const ENTRY_OVERHEAD: usize = 24;

/// See the module doc.
pub(crate) struct Backlog {
    state: Mutex<State>,
    bytes_max: usize,
}

#[derive(Default)]
struct State {
    /// The key prefixes of all entries, one after another.
    arena: Vec<u8>,
    /// Commit timestamp and where its prefix lies in `arena`.
    entries: Vec<(Ts, usize, usize)>,
    /// Versions may exist that no entry names: a whole-tree pass is due.
    whole: bool,
    /// How many times entries were dropped (bound reached, failed visit).
    dropped_count: u64,
}

impl State {
    fn bytes(&self) -> usize {
        self.arena.len() + self.entries.len() * ENTRY_OVERHEAD
    }

    fn drop_all(&mut self) {
        *self = State { whole: true, dropped_count: self.dropped_count + 1, ..State::default() };
    }
}

/// Keys the horizon has passed, taken from the backlog, each once.
pub(crate) struct Ready {
    arena: Vec<u8>,
    /// Ranges of `arena`, sorted by key, without repeats.
    keys: Vec<(usize, usize)>,
}

impl Ready {
    /// The key prefixes, in key order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.keys.iter().map(|&(start, end)| self.arena.get(start..end).unwrap_or_default())
    }

    /// How many keys.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

impl Backlog {
    /// An empty backlog that asks for one whole-tree pass (versions of an
    /// earlier process are not in it).
    pub(crate) fn new(bytes_max: usize) -> Backlog {
        Backlog { state: Mutex::new(State { whole: true, ..State::default() }), bytes_max }
    }

    /// Records that the commit at `ts` left versions of `prefixes` for
    /// vacuum. Returns whether the backlog just passed a quarter of its
    /// bound (the caller wakes vacuum early).
    pub(crate) fn push<'a>(&self, ts: Ts, prefixes: impl IntoIterator<Item = &'a [u8]>) -> bool {
        let mut state = self.state.lock();
        let before = state.bytes();
        for prefix in prefixes {
            if state.bytes() + prefix.len() + ENTRY_OVERHEAD > self.bytes_max {
                state.drop_all();
                return false;
            }
            let start = state.arena.len();
            state.arena.extend_from_slice(prefix);
            let end = state.arena.len();
            state.entries.push((ts, start, end));
        }
        let quarter = self.bytes_max / 4;
        before < quarter && state.bytes() >= quarter
    }

    /// Whether a whole-tree pass is due, and the drop count to hand to
    /// [`Backlog::whole_pass_done`] when it ends.
    pub(crate) fn whole_pass_due(&self) -> (bool, u64) {
        let state = self.state.lock();
        (state.whole, state.dropped_count)
    }

    /// A whole-tree pass that began at drop count `dropped_count` ended:
    /// nothing it could not see was dropped meanwhile, unless the count
    /// moved.
    pub(crate) fn whole_pass_done(&self, dropped_count: u64) {
        let mut state = self.state.lock();
        if state.dropped_count == dropped_count {
            state.whole = false;
        }
    }

    /// Asks for a whole-tree pass (a visit failed).
    pub(crate) fn give_up(&self) {
        self.state.lock().drop_all();
    }

    /// Takes the entries of commits at or below `horizon`, each key once.
    pub(crate) fn take_ready(&self, horizon: Ts) -> Ready {
        // Sorted out with the lock free: committers push meanwhile.
        let (arena, entries) = {
            let mut state = self.state.lock();
            (std::mem::take(&mut state.arena), std::mem::take(&mut state.entries))
        };
        let (ready, waiting): (Vec<_>, Vec<_>) = entries.into_iter().partition(|&(ts, _, _)| ts <= horizon);
        {
            let mut state = self.state.lock();
            // Entries pushed while the lock was free sit in a new arena;
            // the waiting ones join them (a bound reached meanwhile may
            // have dropped those: then these go too).
            if state.bytes() + waiting.iter().map(|&(_, start, end)| end - start + ENTRY_OVERHEAD).sum::<usize>()
                > self.bytes_max
            {
                state.drop_all();
            } else {
                for (ts, start, end) in waiting {
                    let key = arena.get(start..end).unwrap_or_default();
                    let at = state.arena.len();
                    state.arena.extend_from_slice(key);
                    let at_end = state.arena.len();
                    state.entries.push((ts, at, at_end));
                }
            }
        }
        let mut keys: Vec<(usize, usize)> = ready.into_iter().map(|(_, start, end)| (start, end)).collect();
        let key = |&(start, end): &(usize, usize)| arena.get(start..end).unwrap_or_default();
        keys.sort_unstable_by(|a, b| key(a).cmp(key(b)));
        keys.dedup_by(|a, b| key(a) == key(b));
        Ready { arena, keys }
    }

    /// Entries of commits in `horizon + 1..=watermark`: each stands for a
    /// version kept only for a snapshot older than the watermark.
    pub(crate) fn pinned(&self, horizon: Ts, watermark: Ts) -> u64 {
        let state = self.state.lock();
        state.entries.iter().filter(|&&(ts, _, _)| ts > horizon && ts <= watermark).count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ready: &Ready) -> Vec<Vec<u8>> {
        ready.keys().map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn takes_what_the_horizon_passed_each_key_once_in_key_order() {
        let backlog = Backlog::new(1 << 20);
        assert_eq!(backlog.whole_pass_due(), (true, 0), "a new backlog knows nothing of earlier versions");
        backlog.whole_pass_done(0);
        assert_eq!(backlog.whole_pass_due(), (false, 0));
        backlog.push(5, [&b"b"[..], b"a"]);
        backlog.push(7, [&b"c"[..]]);
        backlog.push(6, [&b"b"[..]]);
        assert_eq!(backlog.pinned(5, 7), 2);
        let ready = backlog.take_ready(6);
        assert_eq!(keys(&ready), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(ready.len(), 2);
        assert_eq!(keys(&backlog.take_ready(6)), Vec::<Vec<u8>>::new(), "taken once");
        assert_eq!(keys(&backlog.take_ready(7)), vec![b"c".to_vec()], "the later commit stayed");
        assert_eq!(backlog.whole_pass_due(), (false, 0));
    }

    #[test]
    fn reaching_the_bound_drops_everything_for_a_whole_pass() {
        let backlog = Backlog::new(10 * (ENTRY_OVERHEAD + 4));
        backlog.whole_pass_done(0);
        let mut woke = 0;
        for i in 0..9u32 {
            woke += usize::from(backlog.push(u64::from(i), [&i.to_be_bytes()[..]]));
        }
        assert_eq!(woke, 1, "one wake-up, at a quarter of the bound");
        assert_eq!(backlog.whole_pass_due(), (false, 0));
        backlog.push(9, [&b"ten!"[..], b"elev"]);
        let (due, count) = backlog.whole_pass_due();
        assert!(due && count == 1);
        assert_eq!(backlog.take_ready(u64::MAX).len(), 0, "entries dropped");
        // A pass that began before another drop does not clear the flag.
        backlog.give_up();
        backlog.whole_pass_done(count);
        assert!(backlog.whole_pass_due().0);
        backlog.whole_pass_done(backlog.whole_pass_due().1);
        assert!(!backlog.whole_pass_due().0);
    }
}
