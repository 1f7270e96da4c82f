//! Loom models of the log's hand-offs (fault class F9): group commit's
//! leader and followers, an appender's wait for ring room, and the
//! publication of the durable LSN.
//!
//! Goal: prove, for every interleaving and every weak-memory outcome loom
//! explores (bounded preemption; 2 or 3 threads), that a committer is
//! acknowledged only after a sync covering its LSN completed (and sees what
//! that sync wrote), that a failed sync fails every waiter and poisons, that
//! no parked thread is left parked (loom reports a deadlock otherwise), and
//! that only one thread at a time writes as the flushing role.
//!
//! Method: the very sources of `src/wal/progress.rs` (the progress marks and
//! every wait on them: `reserve`, `wait_for_room`, `publish_written`,
//! `publish_durable`, `wait_durable`, the flusher's `idle`, `poison`) and of
//! `src/wal/buffer.rs` (the ring and its links) are compiled here against a
//! loom-backed `crate::sync`, as `tests/loom_latch.rs` does for the latch; no
//! `--cfg loom` is needed. What `writer.rs` does with files is replaced by a
//! model disk: the flush step below follows `writer::flush_step` (walk the
//! links, copy the filled records out, publish `written`, sync, publish
//! `durable`) and the flusher loop follows `writer::flusher_loop`, but a
//! "write" copies each record's first word into a plain `UnsafeCell` array
//! and a "sync" copies the written mark into another, so loom reports a
//! data race if two threads ever write as the role at once, or if a thread
//! reads what a sync wrote without a happens-before edge to it.
//!
//! The parking model is per key (`park`/`unpark_all` on the same key
//! serialise through one loom mutex and condvar, as parking_lot_core runs
//! them under the key's bucket lock; different keys share nothing, so no
//! wake-up or ordering comes for free from an unrelated key). A timed park
//! (`park_until`) is modelled as untimed: the models prove that nobody
//! needs a timer to be woken (the writer's 50 µs polls and `flush_delay`
//! are not part of any claim here).
//!
//! Loom treats `SeqCst` loads and stores as `AcqRel` (its README), weaker
//! than C11, but models `fence(SeqCst)` exactly; a Dekker handshake
//! therefore verifies here only with fences, which is how the writer's are
//! written (`progress.rs`).
//!
//! Sizes: the preemption bound is 2; with `CRABTREE_TEST_SIZE=long` it is
//! 3, and the group-commit models also run with a third committer at bound
//! 2 (about a minute in all).

mod sync {
    pub use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
    use std::time::Instant;

    /// parking_lot's `Mutex` surface (`lock`, `try_lock` giving an
    /// `Option`, `is_locked`) and its state: a flag taken with an acquire
    /// CAS and cleared with a release store, which `is_locked` reads
    /// relaxed, as parking_lot reads its state byte. Blocked lockers wait
    /// on a condvar (the check and the unlocker's notify under one lock).
    /// The data sits in a loom mutex that the flag keeps uncontended.
    pub struct Mutex<T> {
        locked: AtomicBool,
        data: loom::sync::Mutex<T>,
        waiting: loom::sync::Mutex<()>,
        condvar: loom::sync::Condvar,
    }

    /// A held [`Mutex`].
    pub struct MutexGuard<'a, T> {
        data: Option<loom::sync::MutexGuard<'a, T>>,
        mutex: &'a Mutex<T>,
    }

    impl<T> Mutex<T> {
        pub fn new(value: T) -> Mutex<T> {
            Mutex {
                locked: AtomicBool::new(false),
                data: loom::sync::Mutex::new(value),
                waiting: loom::sync::Mutex::new(()),
                condvar: loom::sync::Condvar::new(),
            }
        }

        pub fn lock(&self) -> MutexGuard<'_, T> {
            loop {
                if let Some(guard) = self.try_lock() {
                    return guard;
                }
                let waiting = self.waiting.lock().unwrap();
                if self.locked.load(Ordering::Relaxed) {
                    drop(self.condvar.wait(waiting).unwrap());
                }
            }
        }

        pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.locked.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).ok()?;
            let data = self.data.try_lock().expect("the data is free while the flag is clear");
            Some(MutexGuard { data: Some(data), mutex: self })
        }

        pub fn is_locked(&self) -> bool {
            self.locked.load(Ordering::Relaxed)
        }
    }

    impl<T> std::ops::Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.data.as_ref().unwrap()
        }
    }

    impl<T> std::ops::DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.data.as_mut().unwrap()
        }
    }

    impl<T> Drop for MutexGuard<'_, T> {
        fn drop(&mut self) {
            self.data.take();
            self.mutex.locked.store(false, Ordering::Release);
            let _waiting = self.mutex.waiting.lock().unwrap();
            self.mutex.condvar.notify_all();
        }
    }

    /// One parking key's bucket: the tickets of the threads parked on it.
    struct Bucket {
        parked: loom::sync::Mutex<Vec<u64>>,
        condvar: loom::sync::Condvar,
        /// Parks on this key in this execution.
        parks: std::sync::atomic::AtomicUsize,
    }

    /// Buckets by key address, and the next ticket. Plain std state: loom
    /// runs its threads one at a time and nothing here blocks.
    #[derive(Default)]
    struct Buckets {
        by_key: Vec<(usize, std::sync::Arc<Bucket>)>,
        next_ticket: u64,
    }

    loom::lazy_static! {
        static ref BUCKETS: std::sync::Mutex<Buckets> = std::sync::Mutex::new(Buckets::default());
    }

    fn bucket(key: &AtomicU64) -> std::sync::Arc<Bucket> {
        let address = key as *const AtomicU64 as usize;
        let mut buckets = BUCKETS.lock().unwrap();
        if let Some((_, bucket)) = buckets.by_key.iter().find(|(a, _)| *a == address) {
            return bucket.clone();
        }
        let bucket = std::sync::Arc::new(Bucket {
            parked: loom::sync::Mutex::new(Vec::new()),
            condvar: loom::sync::Condvar::new(),
            parks: std::sync::atomic::AtomicUsize::new(0),
        });
        buckets.by_key.push((address, bucket.clone()));
        bucket
    }

    fn ticket() -> u64 {
        let mut buckets = BUCKETS.lock().unwrap();
        buckets.next_ticket += 1;
        buckets.next_ticket
    }

    /// Parks unless `should_park` (checked under the key's lock) says no;
    /// returns once an `unpark_all` of the key ran after it parked.
    pub fn park(key: &AtomicU64, should_park: impl FnOnce() -> bool) {
        let bucket = bucket(key);
        let mut parked = bucket.parked.lock().unwrap();
        if !should_park() {
            return;
        }
        PARKS.with(|parks| parks.set(parks.get() + 1));
        bucket.parks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ticket = ticket();
        parked.push(ticket);
        while parked.contains(&ticket) {
            parked = bucket.condvar.wait(parked).unwrap();
        }
    }

    /// Untimed here: the models claim liveness without timers. But a timed
    /// park lets time pass, so it first yields: loom then no longer
    /// returns values this thread saw before as if nothing had become
    /// visible since (without it, two stalled leaders can wake each other
    /// forever re-reading a stale link, an execution no real machine has:
    /// stores become visible "within a reasonable amount of time").
    pub fn park_until(key: &AtomicU64, should_park: impl FnOnce() -> bool, _deadline: Instant) {
        loom::thread::yield_now();
        park(key, should_park);
    }

    /// How many times a thread parked on `key` in this execution.
    pub fn parks_on(key: &AtomicU64) -> usize {
        bucket(key).parks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Wakes every thread parked on `key`.
    pub fn unpark_all(key: &AtomicU64) {
        let bucket = bucket(key);
        let mut parked = bucket.parked.lock().unwrap();
        parked.clear();
        bucket.condvar.notify_all();
    }

    thread_local! {
        /// Parks so far, over all executions (to show the models reach the
        /// slow paths). Per test thread, as `REACHED`.
        pub static PARKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// Lets loom schedule another thread.
    pub fn yield_now() {
        loom::thread::yield_now();
    }
}

#[allow(dead_code)]
#[path = "../src/ids.rs"]
mod ids;

#[allow(dead_code)]
#[path = "../src/wal/buffer.rs"]
mod buffer;

#[allow(dead_code)]
#[path = "../src/wal/progress.rs"]
mod progress;

use buffer::LogBuffer;
use ids::Lsn;
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use progress::Progress;
use std::time::Instant;
use sync::{Mutex, Ordering};

/// The smallest ring `LogBuffer` allows.
const CAPACITY: u64 = 64;
/// LSNs the models reach, in words.
const DISK_WORDS: usize = 16;
/// A disk word whose write a failed sync dropped.
const LOST: u64 = u64::MAX;

fn long() -> bool {
    std::env::var("CRABTREE_TEST_SIZE").as_deref() == Ok("long")
}

thread_local! {
    /// Executions that reached the case a model is about (counted by the
    /// model where it is not a park). Per test thread: loom runs a model's
    /// threads on the thread of the test that checks it, and tests run in
    /// parallel.
    static REACHED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn reached() {
    REACHED.with(|count| count.set(count.get() + 1));
}

/// Runs `f` under loom; prints how many executions it explored, in how
/// many some thread parked, and how many reached the model's case.
fn model(name: &str, preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    use std::sync::atomic::AtomicUsize;
    let executions = std::sync::Arc::new(AtomicUsize::new(0));
    let parking = std::sync::Arc::new(AtomicUsize::new(0));
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemptions);
    // A third committer's stalls and retries take more than loom's default
    // 1,000 branches in one execution.
    builder.max_branches = 100_000;
    let (e, p) = (executions.clone(), parking.clone());
    let reached_before = REACHED.with(std::cell::Cell::get);
    builder.check(move || {
        let before = sync::PARKS.with(std::cell::Cell::get);
        f();
        e.fetch_add(1, Ordering::Relaxed);
        if sync::PARKS.with(std::cell::Cell::get) > before {
            p.fetch_add(1, Ordering::Relaxed);
        }
    });
    let reached = REACHED.with(std::cell::Cell::get) - reached_before;
    eprintln!(
        "{name} (bound {preemptions}): {} executions, {} with a thread parked, {reached} reached the case",
        executions.load(Ordering::Relaxed),
        parking.load(Ordering::Relaxed),
    );
    // loom 0.7 can skip the interleavings a model is about without a word
    // (tokio-rs/loom#392, see `loom_latch.rs`): a model that never reached
    // its case proved nothing.
    assert!(reached > 0, "{name}: no execution reached the case the model is about");
}

/// What the log's files hold: written only by the role holder (each cell
/// once, and again as lost by a failed sync), read by anyone who was told
/// (by `durable`) that a sync covered it.
struct Disk {
    /// The first word of each record written, by LSN / 8.
    words: Vec<UnsafeCell<u64>>,
    /// By LSN / 8: a sync covered this word.
    synced: Vec<UnsafeCell<bool>>,
}

impl Disk {
    fn word(&self, lsn: u64) -> u64 {
        // SAFETY (test): a plain read; loom reports a race unless the role
        // holder's write happens-before it.
        self.words[(lsn / 8) as usize].with(|word| unsafe { *word })
    }

    /// Whether every word below `lsn` was synced.
    fn synced_below(&self, lsn: u64) -> bool {
        // SAFETY (test): as in `word`.
        (0..(lsn / 8) as usize).all(|i| self.synced[i].with(|synced| unsafe { *synced }))
    }
}

/// The flushing role's state (`writer::FlusherState`).
struct Flusher {
    filled: Lsn,
    /// Starts of the records filled but not yet written.
    unwritten: Vec<u64>,
    syncs: usize,
    /// The sync (by count) that fails, if any.
    failing_sync: Option<usize>,
    /// The first write fails.
    failing_write: bool,
}

struct Log {
    progress: Progress,
    buffer: LogBuffer,
    role: Mutex<Flusher>,
    disk: Disk,
}

impl Log {
    fn new(failing_sync: Option<usize>) -> Arc<Log> {
        Arc::new(Log {
            progress: Progress::new(Lsn(0)),
            buffer: LogBuffer::new(CAPACITY as usize),
            role: Mutex::new(Flusher {
                filled: Lsn(0),
                unwritten: Vec::new(),
                syncs: 0,
                failing_sync,
                failing_write: false,
            }),
            disk: Disk {
                words: (0..DISK_WORDS).map(|_| UnsafeCell::new(0)).collect(),
                synced: (0..DISK_WORDS).map(|_| UnsafeCell::new(false)).collect(),
            },
        })
    }

    /// `writer::Shared::append` for a record of `words` words whose first
    /// word is `value` (the rest is padding the model neither writes nor
    /// copies). `None` if poisoned.
    fn append(&self, words: u64, value: u64) -> Option<Lsn> {
        if self.progress.is_poisoned() {
            return None;
        }
        let start = self.progress.reserve(words * 8);
        let end = Lsn(start + words * 8);
        if !self.progress.wait_for_room(end, CAPACITY) {
            return None;
        }
        self.buffer.put(start, value);
        self.buffer.publish(Lsn(start), end);
        self.progress.hint_room();
        Some(end)
    }

    /// `writer::Wal::wait_durable`: lead or follow; a failed step poisons
    /// under the role.
    fn wait_durable(&self, lsn: Lsn) -> bool {
        self.progress.wait_durable(&self.role, lsn, |state| {
            let ok = flush_step(self, state, true);
            if !ok {
                self.progress.poison();
            }
            ok
        })
    }

    /// Appends one word and waits until it is durable; on success checks
    /// that a sync covering it completed and that its word is on the disk
    /// (reads that race with the role holder are loom errors).
    fn commit(&self, value: u64) -> Option<Lsn> {
        let lsn = self.append(1, value)?;
        if !self.wait_durable(lsn) {
            assert!(self.progress.is_poisoned(), "a waiter failed but the log is not poisoned");
            return None;
        }
        assert!(self.disk.synced_below(lsn.0), "acknowledged {lsn:?} before a sync covered it");
        assert_eq!(self.disk.word(lsn.0 - 8), value, "acknowledged {lsn:?} but its word is not on the disk");
        Some(lsn)
    }
}

/// `writer::flush_step` with the model disk: walk the links, write the
/// filled records, publish `written`, and with `sync` sync and publish
/// `durable`. False if the log was poisoned or the sync failed.
fn flush_step(log: &Log, state: &mut Flusher, sync: bool) -> bool {
    let progress = &log.progress;
    if progress.poisoned.load(Ordering::SeqCst) {
        return false;
    }
    // `advance`: the link's acquire load makes the record's words visible.
    while let Some(end) = log.buffer.next_filled(state.filled) {
        state.unwritten.push(state.filled.0);
        state.filled = end;
    }
    let written = Lsn(progress.written.load(Ordering::Relaxed));
    if state.filled > written {
        if state.failing_write {
            return false;
        }
        // `write_batch`: copy the records out of the ring onto the disk.
        for start in state.unwritten.drain(..) {
            let mut word = [0u8; 8];
            log.buffer.copy_out(Lsn(start), &mut word);
            // SAFETY (test): only the role holder writes the disk, each
            // record's cell once.
            log.disk.words[(start / 8) as usize].with_mut(|cell| unsafe { *cell = u64::from_le_bytes(word) });
        }
        progress.publish_written(state.filled);
    }
    let written = Lsn(progress.written.load(Ordering::Relaxed));
    let durable = Lsn(progress.durable.load(Ordering::Relaxed));
    if sync && written > durable {
        // `sync_batch`.
        let failed = state.failing_sync == Some(state.syncs);
        state.syncs += 1;
        if failed {
            // Linux semantics: the kernel may drop the pages of a failed
            // sync and report the next sync as a success.
            for i in durable.0 / 8..written.0 / 8 {
                // SAFETY (test): only the role holder writes the disk.
                log.disk.words[i as usize].with_mut(|word| unsafe { *word = LOST });
            }
            return false;
        }
        for i in durable.0 / 8..written.0 / 8 {
            // SAFETY (test): only the role holder writes the disk, each
            // word's mark once (`durable` only grows).
            log.disk.synced[i as usize].with_mut(|synced| unsafe { *synced = true });
        }
        progress.publish_durable(written);
    }
    true
}

/// `writer::flusher_loop` without timers and horizon records: a step
/// (syncing only at close), then idle until woken; at close, steps until
/// nothing is pending.
fn flusher_main(log: &Log) {
    let progress = &log.progress;
    loop {
        if progress.poisoned.load(Ordering::SeqCst) {
            return;
        }
        let shutdown = progress.shutdown.load(Ordering::SeqCst);
        let mut state = log.role.lock();
        let ok = flush_step(log, &mut state, shutdown);
        if !ok {
            progress.poison();
        }
        let written = Lsn(progress.written.load(Ordering::Relaxed));
        let durable = Lsn(progress.durable.load(Ordering::Relaxed));
        let pending = state.filled > written || written > durable || log.buffer.next_filled(state.filled).is_some();
        let copying = state.filled.0 < progress.reserved.load(Ordering::SeqCst);
        let filled = state.filled;
        drop(state);
        progress.wake_committers();
        if !ok {
            return;
        }
        if shutdown {
            if pending || copying {
                // `Next::Again` / `Next::Pause`.
                thread::yield_now();
                continue;
            }
            return;
        }
        progress.idle(|| log.buffer.filled_at_seqcst(filled), Instant::now());
    }
}

/// The preemption bound of the models: 2 (long: 3).
fn preemptions() -> usize {
    if long() { 3 } else { 2 }
}

/// The group-commit models' committers besides the main thread, and their
/// preemption bound: 1 at bound 2 (long: also 1 at bound 3 and 2 at bound
/// 2; 2 at bound 3 did not finish in minutes).
fn committer_sizes() -> Vec<(u64, usize)> {
    if long() { vec![(1, 3), (2, 2)] } else { vec![(1, 2)] }
}

/// Claim 1 (group-commit hand-off): every committer returns, and only
/// after a sync covering its LSN completed; what that sync wrote (its word,
/// the synced mark) is visible to it without a race; only one thread at a
/// time writes as the flushing role (the disk is plain memory: loom reports
/// two role holders as a race).
///
/// Method: 2 committers (long: 3), each appending one record and calling
/// `wait_durable` (the real leader election, follower park and hand-off of
/// `progress.rs`); a leader may find an earlier reservation still being
/// copied (no progress: it yields and parks, untimed here).
///
/// Found by it (long tier: 3 committers, bound 2): a leader that made no
/// progress parked with no check (`|| true`) until its 50 µs timer; when
/// the appender it waited for then led the flush covering it, that
/// leader's wake-up could come before the park, and without the timer it
/// slept for good (a deadlock here; a 50 µs stall in the writer). The
/// park now re-checks `durable`.
///
/// Mutations that fail it (each tried): that check back to `|| true`
/// (deadlock, long tier only); the leader's `unpark_all` after
/// releasing the role dropped from `wait_durable` (deadlock); the
/// follower's park check without `role.is_locked()` (deadlock);
/// `publish_durable` with `Relaxed`, or `wait_durable`'s load of `durable`
/// with `Relaxed` (loom: a causality violation on the disk cells).
#[test]
fn group_commit_acknowledges_only_after_a_covering_sync() {
    for (others, preemptions) in committer_sizes() {
        model("group_commit_acknowledges_only_after_a_covering_sync", preemptions, move || {
            let log = Log::new(None);
            let committers: Vec<_> = (1..=others)
                .map(|i| {
                    let log = log.clone();
                    thread::spawn(move || log.commit(i).expect("no failure injected"))
                })
                .collect();
            let mut lsns = vec![log.commit(100).expect("no failure injected")];
            lsns.extend(committers.into_iter().map(|c| c.join().unwrap()));
            if sync::parks_on(&log.progress.durable) > 0 {
                // A follower (or a stalled leader) parked.
                reached();
            }
            let end = lsns.iter().max().unwrap();
            assert!(log.progress.durable() >= *end);
            assert!(log.disk.synced_below(end.0));
        });
    }
}

/// Claim 1 (failure): a failed sync wakes every waiter with an error (none
/// hangs), poisons the log, and nothing is acknowledged after it: with the
/// first sync failing, no commit succeeds; with the second failing, a
/// commit that succeeds was covered by the first (checked in
/// `Log::commit`), and `durable` never passes what the first synced.
///
/// Mutations that fail it (each tried): a leader whose step failed but
/// that does not poison (`Log::wait_durable`'s closure, as in the
/// writer's: "a waiter failed but the log is not poisoned"); the two
/// wake-up mutations of the model above (deadlock). Not caught here:
/// `poison` without its `unpark_all(durable)` (the leader's own unpark
/// after releasing the role wakes the followers); its `unpark_all(written)`
/// is caught by `a_failed_write_wakes_the_appenders_waiting_for_room`.
#[test]
fn a_failed_sync_fails_every_waiter_and_acknowledges_nothing_after() {
    for (failing, (others, preemptions)) in
        [0, 1].into_iter().flat_map(|f| committer_sizes().into_iter().map(move |c| (f, c)))
    {
        model("a_failed_sync_fails_every_waiter_and_acknowledges_nothing_after", preemptions, move || {
            let log = Log::new(Some(failing));
            let committers: Vec<_> = (1..=others)
                .map(|i| {
                    let log = log.clone();
                    thread::spawn(move || log.commit(i))
                })
                .collect();
            let mut results = vec![log.commit(100)];
            results.extend(committers.into_iter().map(|c| c.join().unwrap()));
            let acknowledged = results.iter().filter(|r| r.is_some()).count();
            // The case: with the first sync failing, every run; with the
            // second, one commit acknowledged by the first sync and one
            // failed by the second.
            if failing == 0 || (acknowledged > 0 && acknowledged < results.len()) {
                reached();
            }
            if failing == 0 {
                assert_eq!(acknowledged, 0, "acknowledged after the only sync failed");
                assert_eq!(log.progress.durable(), Lsn(0));
            }
            assert!(log.disk.synced_below(log.progress.durable().0));
            if acknowledged < results.len() {
                assert!(log.progress.is_poisoned());
            }
        });
    }
}

/// Claim 3 (durable-LSN publication): a thread that reads `durable` >= x
/// (as the pool's write-back does before it writes a page whose LSN is x)
/// also sees everything the sync wrote up to x: the record's word and the
/// synced mark, without a race.
///
/// Method: a committer leads its own flush; the main thread only reads the
/// published `durable` (`Progress::durable`, acquire) and, if it covers
/// the record, reads the disk.
///
/// Mutation that fails it (tried): `publish_durable` with `Relaxed` (loom:
/// a causality violation on the disk cells).
#[test]
fn a_reader_that_sees_durable_sees_what_the_sync_wrote() {
    model("a_reader_that_sees_durable_sees_what_the_sync_wrote", preemptions(), || {
        let log = Log::new(None);
        let reader = {
            let log = log.clone();
            thread::spawn(move || {
                if log.progress.durable() >= Lsn(8) {
                    reached();
                    assert!(log.disk.synced_below(8));
                    assert_eq!(log.disk.word(0), 7);
                }
            })
        };
        log.commit(7).expect("no failure injected");
        reader.join().unwrap();
    });
}

/// The room models: the ring is full (one record of the whole capacity),
/// an appender needs room for one more, and the flusher frees it. With
/// `flusher_first` the flusher is started before the ring fills, so it
/// goes idle first and the appender's request must reach it.
fn room_model(name: &str, flusher_first: bool) {
    model(name, preemptions(), move || {
        let log = Log::new(None);
        let start_flusher = || {
            let log = log.clone();
            thread::spawn(move || flusher_main(&log))
        };
        let early = flusher_first.then(start_flusher);
        assert_eq!(log.append(8, 100), Some(Lsn(CAPACITY)));
        let flusher = early.unwrap_or_else(start_flusher);
        let appender = {
            let log = log.clone();
            thread::spawn(move || log.append(1, 200))
        };
        assert_eq!(appender.join().unwrap(), Some(Lsn(CAPACITY + 8)));
        if sync::parks_on(&log.progress.written) > 0 {
            // The appender parked for room.
            reached();
        }
        log.progress.request_shutdown();
        flusher.join().unwrap();
        assert_eq!(log.disk.word(0), 100, "the ring word was overwritten before it was copied out");
        assert_eq!(log.disk.word(CAPACITY), 200);
    });
}

/// Claim 2 (room wait, the handshake that frees space): an appender that
/// finds the ring full is always woken once the role holder frees the
/// space, with no timer: `wait_for_room` stores `room_wanted`, then reads
/// `written` (under the parking lock); `publish_written` stores `written`,
/// then swaps `room_wanted` and unparks if it was set. A store-buffering
/// (Dekker) pattern: one side must see the other's store.
///
/// Method: the main thread fills the ring (one record of 64 bytes) before
/// the threads start; an appender then needs 8 more bytes (it must wait
/// for `written` >= 8); the flusher thread (`flusher_main`) writes the
/// record out and goes idle; at close it writes and syncs the appender's
/// record. The disk must hold both first words (a word overwritten in the
/// ring before it was copied out would show as 200 at LSN 0).
///
/// Mutations that fail it (each tried): either `fence(SeqCst)` of the
/// handshake removed (the one after `room_wanted` in `wait_for_room_slow`,
/// or the one after `written` in `publish_written`), or both (the code
/// before this model): loom finds the appender parked although `written`
/// was published, the flusher idle and the main thread joining (deadlock).
/// That is a real C11 outcome, not a loom artefact: with a release store
/// of `written` and an acquire load of it, neither is in the `SeqCst`
/// order, so the appender may read the old `written` after its `SeqCst`
/// store while the role holder's swap reads `room_wanted` from before it.
/// No poll recovered it: the flusher's 50 µs poll only makes it look for
/// filled records again; with the parked appender's record next, it writes
/// nothing and never unparks `written`. Also fails with the fence of
/// `request_shutdown` removed (deadlock at close), which is a loom-only
/// alarm: loom models `SeqCst` accesses as acquire/release.
///
/// Not caught (tried): `written`'s release store or the appender's acquire
/// load made `Relaxed`. The ring word would then be overwritten before it
/// is copied out only through load buffering (the flusher's earlier load
/// reading the appender's later store), which loom does not explore.
#[test]
fn an_appender_waiting_for_room_is_woken_when_space_is_freed() {
    room_model("an_appender_waiting_for_room_is_woken_when_space_is_freed", false);
}

/// Claim 2 (room wait, the flusher's idle handshake): an appender that
/// needs room while the flusher is idle (parked, no timer) always gets it
/// written out: `wait_for_room` stores `room_wanted` then checks
/// `flusher_idle` (`wake_flusher`); `idle` stores `flusher_idle`, fences,
/// then checks `room_wanted`. Likewise `request_shutdown` against `idle`.
///
/// Method: the flusher thread starts with nothing to do (it goes idle);
/// the main thread then fills the ring (nobody wants room yet, so its
/// append does not wake the flusher) and an appender needs 8 more bytes.
/// The record it waits behind is complete before it asks, so the flusher
/// needs no hint from a publishing appender (that hint is relaxed by
/// design and covered by the 50 µs poll, outside these models).
///
/// Mutations that fail it (each tried): the `fence(SeqCst)` in
/// `wait_for_room_slow` or in `publish_written` removed (deadlock: the
/// appender parked, the flusher idle), or the one in `request_shutdown`
/// (deadlock at close). With the fences of `idle` and `request_shutdown`
/// alone the `SeqCst` accesses already suffice in C11; loom, which models
/// them as acquire/release, needs the fences to verify it.
#[test]
fn an_idle_flusher_never_misses_a_request_for_room() {
    room_model("an_idle_flusher_never_misses_a_request_for_room", true);
}

/// Claim 1 and 2 (failure): a failed write wakes, with a failure, an
/// appender parked for room that the failed write would have freed (the
/// flusher never writes again, so only the poisoning can wake it).
///
/// Method: the main thread fills the ring, an appender needs 8 more bytes,
/// and the main thread, waiting for its record, leads a flush whose write
/// fails (no flusher thread).
///
/// Mutation that fails it (tried): `poison` without its
/// `unpark_all(written)` (deadlock: the appender stays parked).
#[test]
fn a_failed_write_wakes_the_appenders_waiting_for_room() {
    model("a_failed_write_wakes_the_appenders_waiting_for_room", preemptions(), || {
        let log = Log::new(None);
        log.role.lock().failing_write = true;
        assert_eq!(log.append(8, 100), Some(Lsn(CAPACITY)));
        let appender = {
            let log = log.clone();
            thread::spawn(move || log.append(1, 200))
        };
        assert!(!log.wait_durable(Lsn(CAPACITY)));
        let appended = appender.join().unwrap();
        if sync::parks_on(&log.progress.written) > 0 {
            // The appender parked for room.
            reached();
            assert_eq!(appended, None, "an appender woken by the poisoning must fail");
        }
        assert!(log.progress.is_poisoned());
    });
}
