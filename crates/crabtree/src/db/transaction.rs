//! [`Transaction`]: buffered writes over a registered snapshot.

use super::Inner;
use super::iter::Iter;
use super::keyspace::Keyspace;
use super::snapshot::{Registration, bounds, range_iter};
use super::ticket::CommitTicket;
use crate::mvcc::{WriteSet, read};
use crate::sync::Arc;
use crate::wal::Durability;
use crate::{Error, Result};
use std::collections::VecDeque;
use std::ops::{Bound, RangeBounds};

/// A read-write transaction under snapshot isolation, from
/// [`Db::begin`](crate::Db::begin).
///
/// Reads see the snapshot taken at `begin` plus the transaction's own
/// writes; writes are buffered in memory until [`commit`](Self::commit),
/// which applies all of them atomically or, if another transaction
/// committed a write to one of the same keys after this one began, none
/// ([`Error::Conflict`]: run the transaction again, or use
/// [`Db::update`](crate::Db::update)). Dropping an open transaction rolls
/// it back. After `commit` or `rollback` every operation returns
/// [`Error::TransactionClosed`]. An operation rejected for its arguments
/// (e.g. [`Error::KeyTooLarge`]) changes nothing and leaves the
/// transaction usable. Empty keys and empty values are allowed. Keys are
/// limited by the page size (967 bytes with 4 KiB pages, where a zero byte
/// counts twice: it is stored escaped); values to 1 GiB - 1.
///
/// `Send + 'static`: it may move between threads and across `.await`.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
/// let mut tx = db.begin();
/// tx.put(b"apple", b"red")?;
/// tx.delete(b"pear")?;
/// for item in tx.range(b"a".as_slice()..b"b".as_slice())? {
///     let (key, value) = item?;
///     assert_eq!((key, value), (b"apple".to_vec(), b"red".to_vec()));
/// }
/// tx.commit()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Transaction {
    /// `None` once committed or rolled back (the snapshot is released).
    registration: Option<Arc<Registration>>,
    inner: Arc<Inner>,
    writes: WriteSet,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("start", &self.registration.as_ref().map(|r| r.ts))
            .field("writes", &self.writes.len())
            .finish()
    }
}

impl Transaction {
    pub(crate) fn new(inner: Arc<Inner>) -> Transaction {
        Transaction { registration: Some(Registration::new(Arc::clone(&inner))), inner, writes: WriteSet::new() }
    }

    fn registration(&self) -> Result<&Arc<Registration>> {
        self.registration.as_ref().ok_or(Error::TransactionClosed)
    }

    /// Whether the transaction already committed or rolled back.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// let mut tx = db.begin();
    /// assert!(!tx.is_closed());
    /// tx.rollback();
    /// assert!(tx.is_closed());
    /// assert!(matches!(tx.get(b"k"), Err(crabtree::Error::TransactionClosed)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.registration.is_none()
    }

    /// The timestamp of the snapshot the transaction reads.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// let tx = db.begin();
    /// assert_eq!(tx.start_timestamp()?, db.snapshot().timestamp());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start_timestamp(&self) -> Result<u64> {
        Ok(self.registration()?.ts)
    }

    /// The value of `key` in the default keyspace, as this transaction sees
    /// it (its own writes first).
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// let mut tx = db.begin();
    /// tx.put(b"k", b"")?;
    /// assert_eq!(tx.get(b"k")?, Some(vec![]), "an empty value is a value");
    /// tx.delete(b"k")?;
    /// assert_eq!(tx.get(b"k")?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get_in(Keyspace::default_keyspace(), key)
    }

    /// The value of `key` in keyspace `ks`.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// let ks = db.keyspace("ks")?;
    /// let mut tx = db.begin();
    /// tx.put_in(&ks, b"k", b"v")?;
    /// assert_eq!(tx.get_in(&ks, b"k")?, Some(b"v".to_vec()));
    /// assert_eq!(tx.get(b"k")?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_in(&self, ks: &Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let registration = self.registration()?;
        self.inner.engine.check_key(key)?;
        if let Some(written) = self.writes.get(&(ks.id, key.to_vec())) {
            return Ok(written.clone());
        }
        if !super::keyspace::exists_at(&self.inner, ks, registration.ts)? {
            return Ok(None);
        }
        self.inner.engine.get(ks.id, key, registration.ts)
    }

    /// Buffers `key = value` in the default keyspace.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// let mut tx = db.begin();
    /// let too_long = vec![0u8; 100_000];
    /// assert!(matches!(tx.put(&too_long, b"v"), Err(crabtree::Error::KeyTooLarge { .. })));
    /// tx.put(b"k", b"v")?; // still usable
    /// tx.commit()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.put_in(Keyspace::default_keyspace(), key, value)
    }

    /// Buffers `key = value` in keyspace `ks`.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// let ks = db.keyspace("ks")?;
    /// let mut tx = db.begin();
    /// tx.put_in(&ks, b"k", b"v")?;
    /// tx.commit()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_in(&mut self, ks: &Keyspace, key: &[u8], value: &[u8]) -> Result<()> {
        self.registration()?;
        self.inner.engine.check_key(key)?;
        self.inner.engine.check_value(value)?;
        self.writes.insert((ks.id, key.to_vec()), Some(value.to_vec()));
        Ok(())
    }

    /// Buffers the delete of `key` in the default keyspace (deleting an
    /// absent key is not an error).
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// db.update(|tx| tx.put(b"k", b"v"))?;
    /// db.update(|tx| tx.delete(b"k"))?;
    /// assert_eq!(db.snapshot().get(b"k")?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.delete_in(Keyspace::default_keyspace(), key)
    }

    /// Buffers the delete of `key` in keyspace `ks`.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// let ks = db.keyspace("ks")?;
    /// let mut tx = db.begin();
    /// tx.delete_in(&ks, b"k")?;
    /// tx.commit()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn delete_in(&mut self, ks: &Keyspace, key: &[u8]) -> Result<()> {
        self.registration()?;
        self.inner.engine.check_key(key)?;
        self.writes.insert((ks.id, key.to_vec()), None);
        Ok(())
    }

    /// The entries of the default keyspace with keys in `range`, as this
    /// transaction sees them (its own writes merged in, in order);
    /// double-ended. The transaction's writes are copied when the iterator
    /// is made: writes made later do not show in it.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// db.update(|tx| { tx.put(b"a", b"1")?; tx.put(b"c", b"3") })?;
    /// let mut tx = db.begin();
    /// tx.put(b"b", b"2")?;
    /// tx.delete(b"c")?;
    /// let keys: Vec<_> = tx.range::<&[u8], _>(..)?.rev().map(|e| e.unwrap().0).collect();
    /// assert_eq!(keys, [b"b".to_vec(), b"a".to_vec()]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Result<Iter> {
        self.range_in(Keyspace::default_keyspace(), range)
    }

    /// The entries of keyspace `ks` with keys in `range`, as this
    /// transaction sees them.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// let ks = db.keyspace("ks")?;
    /// let mut tx = db.begin();
    /// tx.put_in(&ks, b"k", b"v")?;
    /// assert_eq!(tx.range_in::<&[u8], _>(&ks, ..)?.count(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn range_in<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, ks: &Keyspace, range: R) -> Result<Iter> {
        let registration = self.registration()?;
        let (lower, upper) = bounds(&range);
        let writes =
            if read::bounds_empty(lower, upper) { VecDeque::new() } else { self.writes_in(ks.id, lower, upper) };
        range_iter(registration, ks, lower, upper, writes)
    }

    /// This transaction's writes to keyspace `ks` in a (non-inverted) range.
    fn writes_in(&self, ks: u32, lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> VecDeque<(Vec<u8>, Option<Vec<u8>>)> {
        let lower = match lower {
            Bound::Unbounded => Bound::Included((ks, Vec::new())),
            Bound::Included(key) => Bound::Included((ks, key.to_vec())),
            Bound::Excluded(key) => Bound::Excluded((ks, key.to_vec())),
        };
        let upper = match upper {
            Bound::Unbounded => match ks.checked_add(1) {
                Some(next) => Bound::Excluded((next, Vec::new())),
                None => Bound::Unbounded,
            },
            Bound::Included(key) => Bound::Included((ks, key.to_vec())),
            Bound::Excluded(key) => Bound::Excluded((ks, key.to_vec())),
        };
        self.writes.range((lower, upper)).map(|((_, key), value)| (key.clone(), value.clone())).collect()
    }

    /// Commits: applies every buffered write atomically, or none. Returns
    /// once the commit is visible to every snapshot begun afterwards and,
    /// under [`Durability::Immediate`], durable. [`Error::Conflict`] when
    /// another transaction committed a write to a key this one writes after
    /// this one began; nothing was applied and the transaction is closed.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// let (mut t1, mut t2) = (db.begin(), db.begin());
    /// t1.put(b"k", b"1")?;
    /// t2.put(b"k", b"2")?;
    /// t1.commit()?;
    /// assert!(matches!(t2.commit(), Err(crabtree::Error::Conflict)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn commit(&mut self) -> Result<()> {
        let wait = self.inner.options.durability == Durability::Immediate;
        self.finish(wait).map(|_| ())
    }

    /// Commits without waiting for durability, whatever the database's
    /// [`Durability`]: returns once the commit is visible, with a ticket to
    /// wait for (or await) its durability later.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// let tickets: Vec<_> = (0..10u8)
    ///     .map(|i| { let mut tx = db.begin(); tx.put(&[i], b"v")?; tx.commit_eventual() })
    ///     .collect::<Result<_, _>>()?;
    /// for ticket in &tickets { ticket.wait()?; }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn commit_eventual(&mut self) -> Result<CommitTicket> {
        let committed = self.finish(false)?;
        let notifier = committed.map(|_| Arc::clone(&self.inner.notifier));
        Ok(CommitTicket::new(committed.map_or(crate::Lsn::ZERO, |c| c.lsn), notifier))
    }

    fn finish(&mut self, wait_durable: bool) -> Result<Option<crate::mvcc::Committed>> {
        let start = self.registration()?.ts;
        let writes = std::mem::take(&mut self.writes);
        let outcome = self.inner.engine.commit(start, &writes, wait_durable);
        self.registration = None;
        outcome
    }

    /// Discards every buffered write and closes the transaction (dropping
    /// it does the same).
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// let mut tx = db.begin();
    /// tx.put(b"k", b"v")?;
    /// tx.rollback();
    /// assert_eq!(db.snapshot().get(b"k")?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rollback(&mut self) {
        self.writes.clear();
        self.registration = None;
    }
}
