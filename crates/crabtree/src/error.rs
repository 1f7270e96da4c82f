//! The one error type of the engine.
//!
//! Everything the environment or the user can cause (I/O failure, damaged
//! files, limits, a second open of the same file) is an [`Error`]. Programmer
//! errors are assertions, not errors.

use crate::ids::{Lsn, PageId};

/// Result alias used throughout crabtree.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way a crabtree operation can fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operating system (or the simulated disk) reported an I/O error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// Bytes read from disk are not a valid page; `page` names the page.
    #[error("corruption in page {page}: {reason}")]
    Corruption {
        /// The page whose contents failed validation.
        page: PageId,
        /// What was wrong with it.
        reason: String,
    },

    /// Bytes of the write-ahead log that were already synced are damaged
    /// (a torn tail, never synced, is cut off silently instead).
    #[error("corruption in the log at LSN {}: {reason}", lsn.0)]
    LogCorruption {
        /// The LSN of the first record that failed validation.
        lsn: Lsn,
        /// What was wrong with it.
        reason: String,
    },

    /// The database file is already open (an exclusive lock is held).
    #[error("database is locked: already open by another handle or process")]
    Locked,

    /// A key is longer than [`crate::limits::key_size_max`] allows for the page size.
    #[error("key too large: {size} bytes, limit {max}")]
    KeyTooLarge {
        /// Length of the rejected key.
        size: usize,
        /// Largest accepted key length.
        max: usize,
    },

    /// A value is longer than the database accepts:
    /// [`crate::limits::VALUE_SIZE_MAX`], or with a log less for small pages
    /// ([`crate::limits::value_size_max_logged`]; `max` says which).
    #[error("value too large: {size} bytes, limit {max}")]
    ValueTooLarge {
        /// Length of the rejected value.
        size: usize,
        /// Largest accepted value length.
        max: usize,
    },

    /// The data file reached the size the buffer pool can address
    /// (`Options::max_pages`).
    #[error("database full: {pages} pages is the configured maximum")]
    DatabaseFull {
        /// The configured maximum number of pages.
        pages: u64,
    },

    /// An earlier sync failed, so the state of the file is unknown; the
    /// handle refuses writes until the database is reopened.
    #[error("database poisoned by an earlier failed sync; reopen to recover")]
    Poisoned,

    /// The disk is full (or a quota or file-size limit was reached): a
    /// page could not be written back. Commits are refused with this error
    /// before anything of them is logged or applied, until the pages
    /// waiting to be written are written; the database retries in the
    /// background and takes commits again once space is freed, without a
    /// reopen. Reads go on; nothing acknowledged is lost. Nothing of the
    /// refused transaction was applied (it is closed, as after
    /// [`Error::Conflict`]); run it again once there is room.
    #[error("disk full ({0}); commits are refused until space is freed, then resume by themselves")]
    DiskFull(String),

    /// A write-write conflict: another transaction committed a write to a
    /// key this transaction writes after this one began (first committer
    /// wins). Nothing of this transaction was applied; run it again.
    #[error("write-write conflict: another transaction committed a key this one writes; retry")]
    Conflict,

    /// The transaction already committed or rolled back.
    #[error("the transaction is closed: it already committed or rolled back")]
    TransactionClosed,

    /// An argument or option is out of its documented range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// Shorthand for a [`Error::Corruption`] naming `page`.
    pub fn corruption(page: PageId, reason: impl Into<String>) -> Error {
        Error::Corruption { page, reason: reason.into() }
    }
}
