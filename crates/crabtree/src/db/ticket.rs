//! [`CommitTicket`]: durability to wait for later.

use crate::ids::Lsn;
use crate::mvcc::durability::{Durable, Notifier};
use crate::sync::Arc;
use crate::{Error, Result};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A committed transaction's claim on durability, from
/// [`Transaction::commit_eventual`](crate::Transaction::commit_eventual).
/// The commit is already visible; the ticket says when it is durable.
/// Wait for it with [`wait`](Self::wait) (blocking), poll it with
/// [`is_durable`](Self::is_durable), or `.await` it: it is a [`Future`]
/// that needs no particular async runtime (a background thread wakes it).
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
/// let mut tx = db.begin();
/// tx.put(b"k", b"v")?;
/// let ticket = tx.commit_eventual()?;
/// // ... acknowledge many writes with one sync ...
/// ticket.wait()?;
/// assert!(ticket.is_durable());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct CommitTicket {
    lsn: Lsn,
    /// `None`: nothing was written, nothing to wait for.
    notifier: Option<Arc<Notifier>>,
}

impl std::fmt::Debug for CommitTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitTicket").field("lsn", &self.lsn).field("durable", &self.is_durable()).finish()
    }
}

impl CommitTicket {
    pub(crate) fn new(lsn: Lsn, notifier: Option<Arc<Notifier>>) -> CommitTicket {
        CommitTicket { lsn, notifier }
    }

    /// The log position the commit is durable at once the log reaches it.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// let mut tx = db.begin();
    /// tx.put(b"k", b"v")?;
    /// assert!(tx.commit_eventual()?.lsn() > crabtree::Lsn::ZERO);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// Whether the commit is durable now (never blocks).
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// let ticket = db.begin().commit_eventual()?; // nothing written
    /// assert!(ticket.is_durable());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_durable(&self) -> bool {
        self.notifier.as_ref().is_none_or(|notifier| notifier.log().durable_lsn() >= self.lsn)
    }

    /// Blocks until the commit is durable. An error means the log failed
    /// (the database is poisoned) and the commit may be lost.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// let mut tx = db.begin();
    /// tx.put(b"k", b"v")?;
    /// tx.commit_eventual()?.wait()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait(&self) -> Result<()> {
        match &self.notifier {
            Some(notifier) => notifier.log().wait_durable(self.lsn),
            None => Ok(()),
        }
    }
}

/// Ready once the commit is durable (`Ok`) or the log failed (`Err`).
///
/// ```
/// use std::future::Future;
/// let dir = tempfile::tempdir()?;
/// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
/// let mut tx = db.begin();
/// tx.put(b"k", b"v")?;
/// let mut ticket = std::pin::pin!(tx.commit_eventual()?);
/// let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// loop {
///     match ticket.as_mut().poll(&mut cx) {
///         std::task::Poll::Ready(result) => break result?,
///         std::task::Poll::Pending => std::thread::yield_now(),
///     }
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl Future for CommitTicket {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let Some(notifier) = &self.notifier else { return Poll::Ready(Ok(())) };
        match notifier.poll(self.lsn, cx.waker()) {
            Durable::Yes => Poll::Ready(Ok(())),
            Durable::No => Poll::Pending,
            // The reason was reported to the committer that met it.
            Durable::Failed => Poll::Ready(Err(Error::Poisoned)),
            Durable::Closed => {
                Poll::Ready(Err(Error::InvalidArgument("the database closed before the commit was durable".into())))
            }
        }
    }
}
