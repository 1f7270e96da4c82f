//! [`Snapshot`]: a registered, read-only view at one timestamp.

use super::Inner;
use super::iter::Iter;
use super::keyspace::Keyspace;
use crate::Result;
use crate::mvcc::encoding::Ts;
use crate::mvcc::read::{self, VersionRange};
use crate::sync::Arc;
use std::collections::VecDeque;
use std::ops::{Bound, RangeBounds};

/// A snapshot's registration with the oracle: while it lives, vacuum and
/// pruning keep every version visible at `ts`. Shared by the snapshot (or
/// transaction) and its iterators.
pub(crate) struct Registration {
    pub(crate) inner: Arc<Inner>,
    pub(crate) ts: Ts,
}

impl Registration {
    pub(crate) fn new(inner: Arc<Inner>) -> Arc<Registration> {
        let ts = inner.engine.oracle.begin();
        Arc::new(Registration { inner, ts })
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.inner.engine.oracle.end(self.ts);
    }
}

/// Converts user bounds to byte-slice bounds.
pub(crate) fn bounds<'r, K: AsRef<[u8]> + 'r, R: RangeBounds<K>>(range: &'r R) -> (Bound<&'r [u8]>, Bound<&'r [u8]>) {
    fn map<K: AsRef<[u8]>>(bound: Bound<&K>) -> Bound<&[u8]> {
        match bound {
            Bound::Included(key) => Bound::Included(key.as_ref()),
            Bound::Excluded(key) => Bound::Excluded(key.as_ref()),
            Bound::Unbounded => Bound::Unbounded,
        }
    }
    (map(range.start_bound()), map(range.end_bound()))
}

/// A read-only, consistent view of the database as of its creation
/// ([`Db::snapshot`](crate::Db::snapshot)). Never blocks writers and never
/// conflicts. `Send + 'static`; cloning shares the same view.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
/// db.update(|tx| tx.put(b"k", b"before"))?;
/// let snap = db.snapshot();
/// db.update(|tx| tx.put(b"k", b"after"))?;
/// let reader = std::thread::spawn(move || snap.get(b"k"));
/// assert_eq!(reader.join().unwrap()?, Some(b"before".to_vec()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Snapshot {
    registration: Arc<Registration>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("ts", &self.registration.ts).finish()
    }
}

impl Snapshot {
    pub(crate) fn new(inner: Arc<Inner>) -> Snapshot {
        Snapshot { registration: Registration::new(inner) }
    }

    /// The commit timestamp this snapshot reads at: it sees every commit
    /// with a timestamp at or below it, and none above.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// let before = db.snapshot().timestamp();
    /// db.update(|tx| tx.put(b"k", b"v"))?;
    /// assert!(db.snapshot().timestamp() > before);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn timestamp(&self) -> u64 {
        self.registration.ts
    }

    /// The value of `key` in the default keyspace (`Some(vec![])` for an
    /// empty value, `None` when absent).
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// db.update(|tx| tx.put(b"empty", b""))?;
    /// let snap = db.snapshot();
    /// assert_eq!(snap.get(b"empty")?, Some(vec![]));
    /// assert_eq!(snap.get(b"missing")?, None);
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
    /// db.update(|tx| tx.put_in(&ks, b"k", b"v"))?;
    /// assert_eq!(db.snapshot().get_in(&ks, b"k")?, Some(b"v".to_vec()));
    /// assert_eq!(db.snapshot().get(b"k")?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_in(&self, ks: &Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let (inner, ts) = (&self.registration.inner, self.registration.ts);
        if !super::keyspace::exists_at(inner, ks, ts)? {
            inner.engine.check_key(key)?;
            return Ok(None);
        }
        inner.engine.get(ks.id, key, ts)
    }

    /// The entries of the default keyspace with keys in `range`, in key
    /// order; double-ended. An inverted range is empty.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// db.update(|tx| { tx.put(b"a", b"1")?; tx.put(b"b", b"2")?; tx.put(b"c", b"3") })?;
    /// let snap = db.snapshot();
    /// let found: Vec<_> = snap.range(b"b".as_slice()..)?.collect::<Result<_, _>>()?;
    /// assert_eq!(found, [(b"b".to_vec(), b"2".to_vec()), (b"c".to_vec(), b"3".to_vec())]);
    /// assert_eq!(snap.range(b"c".as_slice()..b"a".as_slice())?.count(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Result<Iter> {
        self.range_in(Keyspace::default_keyspace(), range)
    }

    /// The entries of keyspace `ks` with keys in `range`.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// let ks = db.keyspace("ks")?;
    /// db.update(|tx| tx.put_in(&ks, b"k", b"v"))?;
    /// assert_eq!(db.snapshot().range_in::<&[u8], _>(&ks, ..)?.count(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn range_in<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, ks: &Keyspace, range: R) -> Result<Iter> {
        let (lower, upper) = bounds(&range);
        range_iter(&self.registration, ks, lower, upper, VecDeque::new())
    }
}

/// An iterator over `ks` at `registration`'s snapshot, merged with `writes`
/// (nothing stored if the keyspace does not exist at the snapshot).
pub(crate) fn range_iter(
    registration: &Arc<Registration>,
    ks: &Keyspace,
    lower: Bound<&[u8]>,
    upper: Bound<&[u8]>,
    writes: VecDeque<(Vec<u8>, Option<Vec<u8>>)>,
) -> Result<Iter> {
    let tree = Arc::clone(&registration.inner.engine.tree);
    let removals = Arc::clone(&registration.inner.engine.removals);
    let mut stored = VersionRange::new(tree, removals, registration.ts, ks.id, lower, upper);
    if !super::keyspace::exists_at(&registration.inner, ks, registration.ts)? {
        stored = stored.emptied();
    }
    Ok(Iter::new(stored, writes, Arc::clone(registration), read::bounds_empty(lower, upper)))
}
