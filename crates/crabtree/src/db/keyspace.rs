//! Named keyspaces and their catalog.
//!
//! All keyspaces share one tree: a keyspace is an id prefix (one byte for
//! the first 240 ids) on every version key. The catalog maps names to ids; it is itself keyspace 0,
//! written through the ordinary commit protocol (so creating or dropping a
//! keyspace is a commit), and mirrored in memory ([`Catalog`]) under a
//! mutex that serializes catalog changes.
//!
//! Ids: `0` the catalog, `1` the default keyspace, named keyspaces from 2
//! upward, never reused while the database is open. At open, ids found in
//! the tree but missing from the catalog (a drop whose vacuum had not
//! finished) are marked dropped, so vacuum removes them and new keyspaces
//! get ids above them.

use super::Inner;
use crate::mvcc::encoding::Ts;
use crate::mvcc::{CATALOG_KEYSPACE, DEFAULT_KEYSPACE, WriteSet, read};
use crate::sync::Arc;
use crate::{Error, Result};
use std::collections::BTreeMap;

/// The name of the keyspace the plain `get`/`put`/`delete`/`range` use.
pub(crate) const DEFAULT_NAME: &str = "default";
/// Longest keyspace name, in bytes.
const NAME_SIZE_MAX: usize = 255;

/// A named keyspace: a handle to pass to the `*_in` methods of
/// [`Transaction`](crate::Transaction) and [`Snapshot`](crate::Snapshot).
/// Cheap to clone; valid for the database that gave it out.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
/// let (orders, items) = (db.keyspace("orders")?, db.keyspace("items")?);
/// let mut tx = db.begin();
/// tx.put_in(&orders, b"o1", b"item-7")?;
/// tx.put_in(&items, b"item-7", b"1 left")?;
/// tx.commit()?; // both or neither
/// assert_eq!(orders.name(), "orders");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Keyspace {
    pub(crate) id: u32,
    name: Arc<str>,
}

impl Keyspace {
    /// The default keyspace (one shared handle: the plain `get`/`put` use
    /// it on every call, so it must not allocate).
    pub(crate) fn default_keyspace() -> &'static Keyspace {
        static DEFAULT: std::sync::LazyLock<Keyspace> =
            std::sync::LazyLock::new(|| Keyspace { id: DEFAULT_KEYSPACE, name: Arc::from(DEFAULT_NAME) });
        &DEFAULT
    }

    /// The keyspace's name.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = crabtree::Db::open(dir.path().join("data.crab"))?;
    /// assert_eq!(db.keyspace("default")?.name(), "default");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The in-memory mirror of the catalog.
#[derive(Default)]
pub(crate) struct Catalog {
    by_name: BTreeMap<String, u32>,
    next_id: u32,
}

impl Catalog {
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_name.keys().cloned().collect();
        names.push(DEFAULT_NAME.to_string());
        names.sort();
        names
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > NAME_SIZE_MAX {
        return Err(Error::InvalidArgument(format!("keyspace name of {} bytes (1 to {NAME_SIZE_MAX})", name.len())));
    }
    Ok(())
}

/// Whether keyspace `ks` exists at snapshot `ts`: its name maps to its id
/// in the catalog as of `ts`. A keyspace dropped (or not yet created) at
/// `ts` reads as empty through an old handle, whatever vacuum has removed
/// since: vacuum sweeps it only once the horizon passed the drop, so the
/// snapshots that still see it keep its versions. Free (no catalog read)
/// until a keyspace is first dropped in this process.
pub(crate) fn exists_at(inner: &Inner, ks: &Keyspace, ts: Ts) -> Result<bool> {
    if ks.id <= DEFAULT_KEYSPACE || !inner.engine.any_dropped() {
        return Ok(true);
    }
    Ok(inner.engine.get(CATALOG_KEYSPACE, ks.name.as_bytes(), ts)?.is_some_and(|id| id == ks.id.to_le_bytes()))
}

/// Commits one catalog write; the caller holds the catalog lock, which
/// serializes catalog writers, so it cannot conflict.
fn commit_catalog(inner: &Inner, name: &str, id: Option<u32>) -> Result<Ts> {
    let mut writes = WriteSet::new();
    writes.insert((CATALOG_KEYSPACE, name.as_bytes().to_vec()), id.map(|id| id.to_le_bytes().to_vec()));
    let engine = &inner.engine;
    let start = engine.oracle.visible();
    let committed = engine.commit(start, &writes, true)?;
    committed.map(|c| c.ts).ok_or_else(|| Error::InvalidArgument("empty catalog commit".into()))
}

/// Writes the catalog of a new database (the entry that marks it as one).
pub(crate) fn create_catalog(inner: &Inner) -> Result<()> {
    commit_catalog(inner, DEFAULT_NAME, Some(DEFAULT_KEYSPACE))?;
    inner.catalog.lock().next_id = DEFAULT_KEYSPACE + 1;
    Ok(())
}

/// Loads the catalog of an existing database.
pub(crate) fn load_catalog(inner: &Inner) -> Result<()> {
    let engine = &inner.engine;
    let ts = engine.oracle.visible();
    let not_mvcc = || {
        Error::corruption(crate::ids::PageId::HEADER, "no keyspace catalog: not a crabtree database of this version")
    };
    let mut catalog = Catalog::default();
    let mut max_id = DEFAULT_KEYSPACE;
    let mut found_default = false;
    let entries = read::VersionRange::new(
        Arc::clone(&engine.tree),
        Arc::clone(&engine.removals),
        ts,
        CATALOG_KEYSPACE,
        std::ops::Bound::Unbounded,
        std::ops::Bound::Unbounded,
    );
    for entry in entries {
        let (name, id) = entry?;
        let id: [u8; 4] = id.try_into().map_err(|_| not_mvcc())?;
        let id = u32::from_le_bytes(id);
        let name = String::from_utf8(name).map_err(|_| not_mvcc())?;
        if name == DEFAULT_NAME {
            found_default = id == DEFAULT_KEYSPACE;
            continue;
        }
        if id <= DEFAULT_KEYSPACE {
            return Err(not_mvcc());
        }
        max_id = max_id.max(id);
        catalog.by_name.insert(name, id);
    }
    if !found_default {
        return Err(not_mvcc());
    }
    // Ids in the tree that the catalog does not name: dropped keyspaces
    // whose versions vacuum had not removed yet. Found by jumping from one
    // id present to the next (a look-up per keyspace in the tree, however
    // large the ids: a damaged key cannot make this count to `u32::MAX`).
    let live: std::collections::HashSet<u32> = catalog.by_name.values().copied().collect();
    let mut next = DEFAULT_KEYSPACE + 1;
    while let Some(id) = read::keyspace_at_or_after(&engine.tree, next)? {
        if !live.contains(&id) {
            engine.mark_dropped(id, 0);
        }
        max_id = max_id.max(id);
        match id.checked_add(1) {
            Some(after) => next = after,
            None => break,
        }
    }
    catalog.next_id = max_id.saturating_add(1);
    *inner.catalog.lock() = catalog;
    Ok(())
}

/// The keyspace `name`, created if missing.
pub(crate) fn open(inner: &Arc<Inner>, name: &str) -> Result<Keyspace> {
    check_name(name)?;
    if name == DEFAULT_NAME {
        return Ok(Keyspace::default_keyspace().clone());
    }
    let mut catalog = inner.catalog.lock();
    if let Some(&id) = catalog.by_name.get(name) {
        return Ok(Keyspace { id, name: Arc::from(name) });
    }
    let id = catalog.next_id;
    if id == u32::MAX {
        return Err(Error::InvalidArgument("no keyspace ids left".into()));
    }
    commit_catalog(inner, name, Some(id))?;
    catalog.next_id = id + 1;
    catalog.by_name.insert(name.to_string(), id);
    Ok(Keyspace { id, name: Arc::from(name) })
}

/// Drops keyspace `name`; whether it existed.
pub(crate) fn drop_keyspace(inner: &Arc<Inner>, name: &str) -> Result<bool> {
    check_name(name)?;
    if name == DEFAULT_NAME {
        return Err(Error::InvalidArgument("the default keyspace cannot be dropped".into()));
    }
    let mut catalog = inner.catalog.lock();
    let Some(&id) = catalog.by_name.get(name) else { return Ok(false) };
    // Before the drop can be seen: reads through old handles check the
    // catalog from now on.
    inner.engine.note_dropping();
    let ts = commit_catalog(inner, name, None)?;
    catalog.by_name.remove(name);
    failpoint!("keyspace.before_mark", ignore);
    inner.engine.mark_dropped(id, ts);
    Ok(true)
}
