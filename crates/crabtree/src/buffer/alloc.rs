//! The page allocator, the persistent free list and `flush`.
//!
//! In memory the free list is a `Mutex<FreeSet>` (a stack plus a membership
//! set): `allocate` pops (LIFO) before growing `page_count`, `free` pushes.
//! Allocation is not on the hot path, so one mutex is enough; `page_count`
//! is an atomic only so readers can bounds-check ids without the mutex.
//!
//! On disk (written by `flush`) the free list is a chain of FreeTrunk pages
//! (`page::freelist`) that are themselves free pages, headed from the header
//! page (`page::meta`).
//!
//! Lock order: `alloc` mutex, then a latch of a *free* page, then the
//! resident-set mutex. Free pages are latched only transiently by the
//! evictor and by flush write-back, neither of which takes the `alloc`
//! mutex while holding a latch, so waiting on them under `alloc` is safe.
//! `free` releases the page's latch before taking `alloc`.
//!
//! Crash consistency (until the WAL exists): `flush` writes every dirty
//! page, syncs, then writes the header page and syncs again, so the header
//! never points at unwritten trunks. The on-disk image is consistent only
//! as of a `flush` that ran with no concurrent allocate/free/page writes
//! and with nothing written after it: evictions write pages at any time,
//! so a crash between flushes can leave tree pages newer than the header
//! (allocations it does not know of, or a trunk page reused after the
//! header was written). The WAL will make allocation and page writes
//! recoverable; until then only a clean flush-then-close is durable.

use super::guard::ExclusiveGuard;
use super::pool::BufferPool;
use crate::ids::PageId;
use crate::page::bytes::{AtomicPageMut, PageBufMut};
use crate::page::freelist;
use crate::page::meta::Meta;
use crate::sync::Ordering;
use crate::{Error, Result};
use std::collections::HashSet;

/// Free pages: a stack for LIFO reuse and a set for double-free checks.
/// With a log, also the pages whose state the log tells differently from
/// memory (see `buffer::mtr`): a checkpoint records them as free.
#[derive(Default)]
pub(super) struct FreeSet {
    pub(super) stack: Vec<PageId>,
    members: HashSet<PageId>,
    /// Allocated, but no record of the page logged yet: a crash now
    /// leaves it free.
    pub(super) pending: HashSet<PageId>,
    /// Logged free (unlinked by a logged mini-transaction), still waiting
    /// in memory for readers to finish (`btree::epoch`).
    pub(super) retired: HashSet<PageId>,
}

impl FreeSet {
    pub(super) fn push(&mut self, pid: PageId) -> bool {
        if !self.members.insert(pid) {
            return false;
        }
        self.stack.push(pid);
        true
    }

    fn pop(&mut self) -> Option<PageId> {
        let pid = self.stack.pop()?;
        self.members.remove(&pid);
        Some(pid)
    }

    /// Whether `pid` is on the stack (reusable now).
    pub(super) fn contains(&self, pid: PageId) -> bool {
        self.members.contains(&pid)
    }

    /// Takes every id at or past `first` off the stack (`compact`).
    pub(super) fn remove_from(&mut self, first: PageId) {
        self.stack.retain(|&pid| pid < first);
        self.members.retain(|&pid| pid < first);
    }
}

impl BufferPool {
    /// Allocates a page: a free one if any, else a new one at the end.
    /// Returns it exclusively latched, zeroed and dirty; the caller writes
    /// its header (`page::header::init`).
    ///
    /// Entry: may hold exclusive latches on other pages (we only wait on
    /// the latch of a free page, which no caller holds). Exit: the new
    /// page's exclusive latch. Errors: `DatabaseFull` at `max_pages`; a
    /// failed eviction write-back; `Io` when the kernel refuses to commit
    /// memory for the page table or a new frame (`buffer/region.rs`).
    pub fn allocate(&self) -> Result<ExclusiveGuard<'_>> {
        self.ensure_budget()?;
        let pid = {
            let mut free = self.alloc.lock();
            let pid = match free.pop() {
                Some(pid) => pid,
                None => {
                    // Relaxed: page_count only changes under `alloc`.
                    let count = self.page_count.load(Ordering::Relaxed);
                    if count >= self.max_pages {
                        return Err(Error::DatabaseFull { pages: self.max_pages });
                    }
                    // Its page-table words first (`pool.rs`).
                    self.commit_page_ids(count + 1)?;
                    // Release: pairs with the Acquire in `page_count()`.
                    self.page_count.store(count + 1, Ordering::Release);
                    PageId(count)
                }
            };
            // In the same critical section as the pop: a checkpoint's
            // snapshot must see the page free or pending, never neither
            // (it would record a page no record names as used: a leak).
            if self.logging() {
                free.pending.insert(pid);
            }
            pid
        };
        let mut guard = self.lock_fresh(pid).inspect_err(|error| {
            // No frame for it (the kernel refused to commit one, `install`):
            // the id goes back unused, not leaked. (Its other error, a page
            // latched past all patience, is damage: the id stays out.)
            if matches!(error, Error::Io(_)) {
                self.release_id(pid);
            }
        })?;
        guard.set_fresh();
        Ok(guard)
    }

    /// Returns a page to the free list; it is immediately reusable (the
    /// tree defers this call until no reader can hold a link to it).
    /// Entry: the page's exclusive latch (consumed). Exit: no latch.
    pub fn free(&self, page: ExclusiveGuard<'_>) {
        let pid = page.pid();
        drop(page);
        self.release_id(pid);
    }

    /// Puts `pid` on the free list; logs it free unless a logged
    /// mini-transaction already did (a retired page). A failed log append
    /// (the log is poisoned) leaves the page allocated in the log: a leak
    /// at worst, and nothing more is written anyway.
    fn release_id(&self, pid: PageId) {
        // Test builds: its last change is dead now (the checkpoint audit).
        #[cfg(feature = "failpoints")]
        if self.audited {
            self.stamps.lock().remove(&pid.0);
        }
        let mut free = self.alloc.lock();
        free.pending.remove(&pid);
        if !free.retired.remove(&pid)
            && let Some(wal) = self.wal()
        {
            let mut entry = Vec::with_capacity(9);
            crate::page::redo::put_free(&mut entry, pid);
            if let Ok(lsn) = wal.append(crate::wal::RecordType::MTR, &entry) {
                super::mtr::note_lsn(lsn);
            }
        }
        if !free.push(pid) {
            // Already free: a damaged file or log put a page in use on the
            // free list (or left it off the tree's links). Not a panic:
            // the free list stays as it is, and writes are refused from
            // now on (`check_poisoned`), so nothing is built on a page
            // that may have two owners.
            drop(free);
            self.note_free_list_damage(pid);
        }
    }

    /// Refuses writes from now on (`check_poisoned`), and poisons a log:
    /// the free list and the tree disagree about `pid`.
    fn note_free_list_damage(&self, pid: PageId) {
        // Relaxed: a flag read by later operations; the error it raises
        // carries no other memory with it.
        self.free_list_damaged.store(pid.0, Ordering::Relaxed);
        if let Some(wal) = self.wal() {
            wal.poison(&free_list_damage(pid));
        }
    }

    /// Returns a page nobody can reach any more to the free list without
    /// reading it (its contents are dead), so it cannot fail: used for
    /// pages retired through epochs and for pages never published.
    ///
    /// Memory: a page that is not resident stays out of memory (freeing a
    /// long overflow chain must not make it resident, which would push the
    /// pool past its budget by the length of the chain); a resident one is
    /// zeroed and marked clean (its contents are dead, so writing them back
    /// would waste a write), and the release bumps its version so a stale
    /// optimistic reader restarts. `allocate` zeroes the page again.
    /// Entry: no latch on `pid`. Exit: none.
    pub fn free_unread(&self, pid: PageId) {
        let latch = self.latch(pid);
        // A stale reader may load the page right after we find it evicted:
        // harmless, it is a clean resident page of a free id, which
        // `lock_fresh` latches and zeroes when the id is reused.
        if latch.lock_exclusive() {
            AtomicPageMut::new(self.frame(pid)).zero(0, self.page_size);
            latch.clear_dirty();
            latch.unlock_exclusive(false);
        }
        self.release_id(pid);
    }

    /// The free pages (in reuse order, last first).
    pub fn free_pages(&self) -> Vec<PageId> {
        self.alloc.lock().stack.clone()
    }

    /// Latches `pid` exclusively without reading it from storage (its old
    /// contents are garbage) and zeroes the frame. Entry: `pid` is free or
    /// new, owned by the caller. Exit: exclusive latch, page dirty.
    ///
    /// A free page is latched only for moments (zeroed by `free_unread`,
    /// written back or evicted), so this never parks on the latch, which
    /// could be the caller's own: a damaged file or log can put a page in
    /// use on the free list, and a split would then allocate the very leaf
    /// it holds. One still latched after the restart patience is
    /// `Corruption`.
    fn lock_fresh(&self, pid: PageId) -> Result<ExclusiveGuard<'_>> {
        let latch = self.latch(pid);
        let mut since: Option<std::time::Instant> = None;
        let mut tries = 0u32;
        loop {
            if latch.try_upgrade(latch.peek()) {
                break;
            }
            if latch.try_lock_evicted() {
                self.install(pid)?;
                break;
            }
            let started = *since.get_or_insert_with(std::time::Instant::now);
            if started.elapsed() > crate::limits::restart_patience() {
                self.note_free_list_damage(pid);
                return Err(free_list_damage(pid));
            }
            tries = tries.saturating_add(1);
            if tries > 64 {
                std::thread::sleep(std::time::Duration::from_micros(100));
            } else {
                std::thread::yield_now();
            }
        }
        let mut guard = ExclusiveGuard::new(self, pid, true);
        let size = self.page_size;
        guard.page_mut().zero(0, size);
        Ok(guard)
    }

    /// Writes every dirty page, the free list and the header page, then
    /// syncs. Entry: the caller holds no latch (we wait for shared latches
    /// on dirty pages). See the module header for what is durable.
    pub fn flush(&self) -> Result<()> {
        if self.logging() {
            // With a log the header page is written only at creation; the
            // allocator state lives in checkpoints.
            return self.checkpoint(None).map(|_| ());
        }
        let meta = self.persist_free_list()?;
        self.write_dirty()?;
        self.storage.sync()?;
        self.storage.write_at(0, &meta.encode())?;
        self.storage.sync()
    }

    /// Writes the free list into trunk pages (in their frames, dirty) and
    /// returns the header page contents describing it. Each trunk that is
    /// not resident is made room for first, so a long free list (one
    /// trunk per ~500 free 4 KiB pages) does not push the pool past its
    /// budget. Errors: a failed eviction write-back.
    fn persist_free_list(&self) -> Result<Meta> {
        let free = self.alloc.lock();
        let capacity = freelist::capacity(self.page_size);
        let trunk_count = free.stack.len().div_ceil(capacity + 1);
        let (trunks, ids) = free.stack.split_at(trunk_count);
        let mut chunks = ids.chunks(capacity);
        for (index, &trunk) in trunks.iter().enumerate() {
            // Under `alloc`: eviction only try-locks latches and takes
            // shard mutexes, both after `alloc` in the lock order.
            self.ensure_budget()?;
            let mut guard = self.lock_fresh(trunk)?;
            let chunk = chunks.next().unwrap_or(&[]);
            freelist::encode(&mut guard.page_mut(), trunk, trunks.get(index + 1).copied(), chunk);
        }
        debug_assert!(chunks.next().is_none(), "free ids left over");
        let mut meta = Meta::new(self.page_size);
        // Relaxed: `alloc` is held, which orders page_count changes.
        meta.page_count = self.page_count.load(Ordering::Relaxed);
        meta.free_head = trunks.first().copied();
        meta.free_count = free.stack.len() as u64;
        for (slot, root) in meta.roots.iter_mut().enumerate() {
            *root = self.root(slot).0;
        }
        Ok(meta)
    }

    /// Writes back every page that is dirty now. Entry: no latch held.
    pub(super) fn write_dirty(&self) -> Result<()> {
        let space_pass = self.begin_space_pass();
        // A failed victim of a batch in flight is back in the set once the
        // batch ends (`space.rs`).
        drop(self.evicting.write());
        #[cfg(feature = "failpoints")]
        let mut trace = Vec::new();
        for pid in self.resident.snapshot() {
            let latch = self.latch(pid);
            if !latch.is_dirty() || !latch.lock_shared() {
                // Clean, or evicted since the snapshot (eviction wrote it).
                #[cfg(feature = "failpoints")]
                trace.push((pid, if latch.is_resident() { "clean" } else { "evicted" }));
                continue;
            }
            #[cfg(feature = "failpoints")]
            trace.push((pid, if latch.is_dirty() { "written" } else { "clean once latched" }));
            let result = if latch.is_dirty() { self.write_back(pid) } else { Ok(()) };
            if result.is_ok() {
                latch.clear_dirty();
            }
            latch.unlock_shared();
            result?;
        }
        // An eviction batch that chose its victims before our snapshot took
        // them out of it; wait until its write-backs returned, so the sync
        // that follows covers them (else a checkpoint could recycle the
        // only log of a page whose write landed after its sync: found by
        // `db_crash::with_checkpoints_racing_the_commits`).
        drop(self.evicting.write());
        #[cfg(feature = "failpoints")]
        if self.audited {
            *self.pass_trace.lock() = trace;
        }
        // Every page dirty at the start is written (`space.rs`).
        self.end_space_pass(space_pass);
        Ok(())
    }

    /// Reads the persistent free list named by `meta` (at open, before any
    /// page is resident). Errors: `Corruption` for a bad trunk, a cycle, a
    /// duplicate id or a count that disagrees with the header.
    pub(super) fn load_free_list(&self, meta: &Meta) -> Result<()> {
        let mut free = self.alloc.lock();
        let mut image = vec![0u8; self.page_size];
        let mut next = meta.free_head;
        let mut order = Vec::new();
        while let Some(trunk) = next {
            self.read_page(trunk, &mut image)?;
            let decoded = freelist::decode(&image, trunk, meta.page_count)?;
            order.push(trunk);
            order.extend(decoded.ids);
            if order.len() as u64 > meta.free_count {
                return Err(Error::corruption(trunk, "free list longer than the header says (or a cycle)"));
            }
            next = decoded.next;
        }
        if order.len() as u64 != meta.free_count {
            let head = meta.free_head.unwrap_or(PageId::HEADER);
            return Err(Error::corruption(
                head,
                format!("free list has {} pages, header says {}", order.len(), meta.free_count),
            ));
        }
        // Push in reverse so the stack pops in the on-disk order.
        for &pid in order.iter().rev() {
            if !free.push(pid) {
                return Err(Error::corruption(pid, "page listed twice in the free list"));
            }
        }
        Ok(())
    }
}

/// The error once the free list and the tree disagreed about `pid`: freed
/// while already free, or allocated while in use (`release_id`,
/// `lock_fresh`).
pub(super) fn free_list_damage(pid: PageId) -> Error {
    Error::corruption(pid, "the free list and the tree disagree about the page (damaged file or log)")
}
