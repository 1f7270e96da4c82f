//! Loading the `Db` probes' keys.

use super::keys::key;

/// Commits keys `0..keys` with `value`, 1,000 a transaction.
pub fn commit_keys(db: &crabtree::Db, keys: u64, value: &[u8]) -> crabtree::Result<()> {
    let mut next = 0;
    while next < keys {
        let end = (next + 1000).min(keys);
        let mut tx = db.begin();
        for i in next..end {
            tx.put(&key(i), value)?;
        }
        tx.commit()?;
        next = end;
    }
    Ok(())
}
