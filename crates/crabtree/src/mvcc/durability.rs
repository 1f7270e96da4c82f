//! Where commit records go ([`CommitLog`]) and who tells waiters they are
//! durable ([`Notifier`]).
//!
//! The commit protocol appends each commit's record *before* it applies the
//! versions, so recovery can re-apply every commit whose record is durable
//! ([`super::replay`]), and a commit whose record was lost left nothing in
//! the tree's log after it. The database appends into its store's log
//! (`db::StoreCommitLog`); tests of this layer alone use `MemCommitLog`,
//! which keeps nothing and is durable at once.
//!
//! [`Notifier`] serves tickets that want to be woken without blocking a
//! thread (`Future`s): they register a waker with their LSN; one
//! background thread waits for the log to become durable up to the
//! highest registered LSN and wakes those it covers. Blocking waiters call
//! [`CommitLog::wait_durable`] directly.
//!
//! Invariant: a registered waker is woken once its LSN is durable, the log
//! failed, or the notifier stopped; registration and the notifier's check
//! happen under one mutex, so no wake-up is lost.

use crate::ids::Lsn;
use crate::sync::{Arc, Condvar, Mutex};
#[cfg(test)]
use crate::sync::{AtomicU64, Ordering};
use std::task::Waker;

/// Where commit records go. The commit record carries the whole write set
/// (keyspace, key, value-or-tombstone for each write) and the commit ts, and
/// is appended BEFORE the versions are applied to the tree, so after a crash
/// recovery can re-apply every commit whose record is durable, and a commit
/// whose record was lost left nothing in the tree's log after it.
pub(crate) trait CommitLog: Send + Sync + 'static {
    /// Appends the encoded commit record; returns its end LSN.
    fn append_commit(&self, record: &[u8]) -> crate::Result<crate::Lsn>;
    /// `Error::DiskFull` while a commit would be refused for want of space
    /// (`Store::check_space`); may wait briefly for the log's answer. Called
    /// before a commit takes its locks, so no wait holds them.
    fn check_space(&self) -> crate::Result<()> {
        Ok(())
    }
    /// Waits until the log is durable up to `lsn`.
    fn wait_durable(&self, lsn: crate::Lsn) -> crate::Result<()>;
    /// The LSN up to which the log is durable now.
    fn durable_lsn(&self) -> crate::Lsn;
    /// The versions of the commit whose record ends at `lsn` are all in
    /// the tree (or its apply failed and the engine is poisoned): the log
    /// need not keep the record for recovery any more.
    fn applied(&self, _lsn: crate::Lsn) {}
}

/// A commit log that keeps nothing: every record is "durable" as soon as it
/// is appended (the durability of the database is that of its data file,
/// flushed at close, until the tree logs through the WAL).
#[cfg(test)]
#[derive(Default)]
pub(crate) struct MemCommitLog {
    end: AtomicU64,
}

#[cfg(test)]
impl CommitLog for MemCommitLog {
    fn append_commit(&self, record: &[u8]) -> crate::Result<Lsn> {
        // Relaxed: the LSN only has to be unique and increasing.
        let len = record.len() as u64;
        Ok(Lsn(self.end.fetch_add(len, Ordering::Relaxed) + len))
    }
    fn wait_durable(&self, _lsn: Lsn) -> crate::Result<()> {
        Ok(())
    }
    fn durable_lsn(&self) -> Lsn {
        Lsn(self.end.load(Ordering::Relaxed))
    }
}

#[derive(Default)]
struct State {
    wakers: Vec<(Lsn, Waker)>,
    /// Why the log failed, once it did: every later poll reports it.
    failed: Option<String>,
    stopped: bool,
}

/// Wakes futures waiting for durability (see the module doc).
pub(crate) struct Notifier {
    log: Arc<dyn CommitLog>,
    state: Mutex<State>,
    changed: Condvar,
}

/// What a poll found.
pub(crate) enum Durable {
    Yes,
    No,
    /// The log failed: the commit may be lost.
    Failed,
    /// The database closed first.
    Closed,
}

impl Notifier {
    /// A notifier over `log` and its thread (stop it with [`stop`](Self::stop)).
    pub(crate) fn spawn(log: Arc<dyn CommitLog>) -> crate::Result<(Arc<Notifier>, std::thread::JoinHandle<()>)> {
        let notifier = Arc::new(Notifier { log, state: Mutex::default(), changed: Condvar::new() });
        let runner = Arc::clone(&notifier);
        let thread = std::thread::Builder::new().name("crabtree-durable".into()).spawn(move || runner.run())?;
        Ok((notifier, thread))
    }

    pub(crate) fn log(&self) -> &Arc<dyn CommitLog> {
        &self.log
    }

    /// Whether `lsn` is durable; if not, registers `waker` to be woken when
    /// it is (or when the log fails, or the database closes).
    pub(crate) fn poll(&self, lsn: Lsn, waker: &Waker) -> Durable {
        if self.log.durable_lsn() >= lsn {
            return Durable::Yes;
        }
        let mut state = self.state.lock();
        if state.failed.is_some() {
            return Durable::Failed;
        }
        if self.log.durable_lsn() >= lsn {
            return Durable::Yes;
        }
        if state.stopped {
            return Durable::Closed;
        }
        match state.wakers.iter_mut().find(|(_, w)| w.will_wake(waker)) {
            Some(entry) => entry.0 = entry.0.max(lsn),
            None => state.wakers.push((lsn, waker.clone())),
        }
        self.changed.notify_one();
        Durable::No
    }

    /// Stops the thread; wakes everyone still registered.
    pub(crate) fn stop(&self) {
        self.state.lock().stopped = true;
        self.changed.notify_all();
    }

    fn run(&self) {
        loop {
            let target = {
                let mut state = self.state.lock();
                loop {
                    if state.stopped {
                        for (_, waker) in state.wakers.drain(..) {
                            waker.wake();
                        }
                        return;
                    }
                    if let Some(target) = state.wakers.iter().map(|(lsn, _)| *lsn).max() {
                        break target;
                    }
                    self.changed.wait(&mut state);
                }
            };
            let outcome = self.log.wait_durable(target);
            let mut state = self.state.lock();
            if let Err(error) = outcome {
                state.failed = Some(error.to_string());
            }
            let durable = self.log.durable_lsn();
            let failed = state.failed.is_some();
            state.wakers.retain(|(lsn, waker)| {
                let done = failed || *lsn <= durable;
                if done {
                    waker.wake_by_ref();
                }
                !done
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::AtomicUsize;
    use std::task::Wake;
    use std::time::{Duration, Instant};

    /// A log made durable by hand: `wait_durable` parks until `advance`.
    #[derive(Default)]
    struct SlowLog {
        end: AtomicU64,
        durable: Mutex<u64>,
        synced: Condvar,
    }

    impl SlowLog {
        fn advance(&self) {
            *self.durable.lock() = self.end.load(Ordering::Relaxed);
            self.synced.notify_all();
        }
    }

    impl CommitLog for SlowLog {
        fn append_commit(&self, record: &[u8]) -> crate::Result<Lsn> {
            let len = record.len() as u64;
            Ok(Lsn(self.end.fetch_add(len, Ordering::Relaxed) + len))
        }
        fn wait_durable(&self, lsn: Lsn) -> crate::Result<()> {
            let mut durable = self.durable.lock();
            while *durable < lsn.0 {
                self.synced.wait(&mut durable);
            }
            Ok(())
        }
        fn durable_lsn(&self) -> Lsn {
            Lsn(*self.durable.lock())
        }
    }

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn eventually(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_registered_waker_is_woken_once_durable_and_not_before() {
        let log = Arc::new(SlowLog::default());
        let (notifier, thread) = Notifier::spawn(Arc::clone(&log) as Arc<dyn CommitLog>).unwrap();
        let lsn = log.append_commit(b"record").unwrap();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        assert!(matches!(notifier.poll(lsn, &waker), Durable::No));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(count.0.load(Ordering::Relaxed), 0, "woken before the log was durable");
        log.advance();
        eventually("the waker was never woken", || count.0.load(Ordering::Relaxed) == 1);
        assert!(matches!(notifier.poll(lsn, &waker), Durable::Yes));
        // After stop, a poll for an LSN never made durable reports Closed.
        let later = log.append_commit(b"lost").unwrap();
        notifier.stop();
        thread.join().unwrap();
        assert!(matches!(notifier.poll(later, &waker), Durable::Closed));
    }
}
