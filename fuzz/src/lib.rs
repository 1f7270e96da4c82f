//! Helpers shared by the fuzz targets (RELIABILITY.md F14): the valid
//! images the structure-aware targets start from (each built once per
//! process), a reader of fuzzer bytes that never runs dry, and the
//! "everything a reader does" passes over a damaged data file or database.
//!
//! The rule every target holds the engine to: no panic, hang or unbounded
//! allocation on any bytes read from disk; `Ok` or an `Error` instead.
//! A panic aborts the fuzzer (libFuzzer reports it as a crash), a hang past
//! `-timeout` and an allocation past `-rss_limit_mb` / `-malloc_limit_mb`
//! are reported too.
//!
//! `CRABTREE_FUZZ_DUMP=DIR`: the targets that rebuild files from their
//! input write the files they open into `DIR` first (to turn a crash into a
//! regression test with the exact bytes).

use crabtree::io::{CrashModel, Dir, SimDir, SimDisk, Storage};
use crabtree::raw::{BTree, BufferPool, PoolOptions};
use crabtree::wal::{RecordType, SegmentHeader, decode_record, encode_record};
use crabtree::{Db, Durability, Lsn, Options};
use std::sync::{Arc, OnceLock};

/// Page size of the images built here: small pages make deep trees from
/// few keys, and a small input covers whole pages.
pub const PAGE_SIZE: usize = 512;

/// Segment size of the log built here (the smallest allowed is 8 KiB).
pub const SEGMENT_SIZE: u64 = 16 * 1024;

/// Bytes of a segment file before its log bytes.
pub const SEGMENT_HEADER_SIZE: u64 = 4096;

/// Reads fuzzer bytes; past the end every read gives zeros.
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Input<'a> {
        Input { bytes }
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        let (&first, rest) = self.bytes.split_first().unwrap_or((&0, &[]));
        self.bytes = rest;
        first
    }

    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// The next four bytes, little-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `len` next bytes.
    pub fn take(&mut self, len: usize) -> &'a [u8] {
        let (head, rest) = self.bytes.split_at(len.min(self.bytes.len()));
        self.bytes = rest;
        head
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.bytes.len())
    }
}

/// Pool options for opening damaged data files: room for pages up to
/// 64 KiB (a damaged header may name any valid size).
pub fn pool_options() -> PoolOptions {
    PoolOptions { page_size: PAGE_SIZE, pool_bytes: 1 << 20, max_pages: 1 << 16 }
}

/// Keys of the base tree: `key00000`.. (every third removed again).
pub fn tree_key(i: u32) -> Vec<u8> {
    format!("key{i:05}").into_bytes()
}

/// A small valid data file without a log (what `crabtree check` opens):
/// 512-byte pages, a three-level tree of 200 keys, overflow values, a
/// free list. The same workload as `tests/corrupt_file.rs`.
pub fn tree_image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let disk = SimDisk::new(1);
        let pool = BufferPool::create(Arc::new(disk.clone()), pool_options()).expect("create pool");
        let tree = BTree::create(Arc::new(pool)).expect("create tree");
        for i in 0..300u32 {
            let value = if i % 50 == 0 { vec![i as u8; 1500] } else { format!("value{i}").into_bytes() };
            tree.insert(&tree_key(i), &value).expect("insert");
        }
        for i in (0..300u32).filter(|i| i % 3 == 0) {
            tree.remove(&tree_key(i)).expect("remove");
        }
        tree.flush().expect("flush");
        assert!(tree.verify().expect("verify").is_ok());
        drop(tree);
        disk.durable_image()
    })
}

/// Runs every read path of a data file without a log on `image`: open,
/// forward and backward scans, first/last, point reads, `verify`, the
/// entry count from the leaves; with `writes`, then `repair`, inserts (one
/// overflowing), removes and a flush, and `verify` again. Every call must
/// return; errors are fine.
pub fn exercise_tree(image: Vec<u8>, writes: bool) {
    quick_give_up();
    dump(&[("data", &image)]);
    let disk = SimDisk::new(2);
    disk.set_durable_image(image);
    let storage: Arc<dyn Storage> = Arc::new(disk);
    let Ok(pool) = BufferPool::open(storage, pool_options()) else { return };
    let Ok(tree) = BTree::open(Arc::new(pool)) else { return };
    for entry in tree.range::<&[u8], _>(..) {
        if entry.is_err() {
            break;
        }
    }
    for entry in tree.range::<&[u8], _>(..).rev() {
        if entry.is_err() {
            break;
        }
    }
    let bounded = b"key00100".as_slice()..b"key00200".as_slice();
    for entry in tree.range(bounded).rev() {
        if entry.is_err() {
            break;
        }
    }
    let _ = tree.first();
    let _ = tree.last();
    let _ = tree.len();
    for i in (0..300u32).step_by(7).chain([299, 300, 0]) {
        let _ = tree.get(&tree_key(i));
    }
    let _ = tree.get(b"");
    let _ = tree.verify();
    // What a reopen after a crash runs in the background: the entry count
    // from the leaves, and the repair of interrupted splits and deletions.
    let _ = tree.recount();
    if writes {
        let _ = tree.repair();
        for i in (0..300u32).step_by(11) {
            let _ = tree.insert(&tree_key(i), b"new value");
        }
        let _ = tree.insert(&tree_key(1), &[7u8; 2000]);
        for i in (1..300u32).step_by(5) {
            let _ = tree.remove(&tree_key(i));
        }
        let _ = tree.flush();
        let _ = tree.verify();
    }
}

/// The files of a database on the simulated disk: the data file and the
/// log's segment files, by name.
#[derive(Clone, Debug)]
pub struct DbImage {
    /// The data file.
    pub data: Vec<u8>,
    /// `(name, bytes)` of every log segment file.
    pub segments: Vec<(String, Vec<u8>)>,
}

/// `Db` options for the images here: 512-byte pages, 16 KiB segments, a
/// pool large enough that nothing is evicted, no background vacuum.
pub fn db_options() -> Options {
    Options {
        page_size: PAGE_SIZE,
        memory_budget: 512 * 1024,
        max_pages: 1 << 16,
        durability: Durability::Immediate,
        log_segment_size: SEGMENT_SIZE,
        checkpoint_bytes: 1 << 30,
        vacuum_interval: None,
        update_retries: 4,
    }
}

/// A small valid database as a crash leaves it: commits in two keyspaces
/// (updates, deletes, an overflow value), a checkpoint, then more commits
/// that are only in the log (recovery redoes them and re-applies their
/// commit records). The durable images of every file are taken while the
/// database is still open, as power loss would leave them.
pub fn db_image() -> &'static DbImage {
    static IMAGE: OnceLock<DbImage> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = SimDir::new(1, CrashModel::default());
        let data = dir.open("data", true).expect("data file");
        dir.sync().expect("sync dir");
        let db = crabtree::raw::open_db(data, Arc::new(dir.this_life()), db_options()).expect("open db");
        let other = db.keyspace("other").expect("keyspace");
        let commit = |round: u32, range: std::ops::Range<u32>| {
            let mut tx = db.begin();
            for i in range {
                let key = tree_key(i);
                let value = if i % 13 == 0 { vec![round as u8; 700] } else { format!("v{round}-{i}").into_bytes() };
                tx.put(&key, &value).expect("put");
                if i % 4 == 0 {
                    tx.put_in(&other, &key, b"o").expect("put_in");
                }
                if i % 9 == 0 {
                    tx.delete(&tree_key(i + 1)).expect("delete");
                }
            }
            tx.commit().expect("commit");
        };
        for round in 0..6 {
            commit(round, round * 10..round * 10 + 10);
        }
        crabtree::raw::checkpoint_db(&db).expect("checkpoint");
        for round in 6..10 {
            commit(round, (round - 6) * 7..(round - 6) * 7 + 12);
        }
        let image = |name: &str| dir.disk(name).expect("file").durable_image();
        let mut names = dir.list().expect("list");
        names.sort();
        let segments = names.iter().filter(|n| n.ends_with(".wal")).map(|n| (n.clone(), image(n))).collect();
        let out = DbImage { data: image("data"), segments };
        drop(db);
        out
    })
}

/// One log record.
#[derive(Clone, Debug)]
pub struct Record {
    /// Record type.
    pub kind: u8,
    /// Incarnation of the handle that wrote it.
    pub incarnation: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

/// The log of a [`DbImage`] as a list of records from its start LSN.
#[derive(Clone, Debug)]
pub struct Log {
    /// LSN of the first record.
    pub start: u64,
    /// Incarnation in the segment headers.
    pub incarnation: u32,
    /// The records, in LSN order.
    pub records: Vec<Record>,
}

fn segment_payload() -> u64 {
    SEGMENT_SIZE - SEGMENT_HEADER_SIZE
}

/// Reads the records of the valid log in `segments` (each record as the
/// codec decodes it, from the lowest live segment's first record to the
/// first record that does not decode).
pub fn parse_log(segments: &[(String, Vec<u8>)]) -> Log {
    let payload = segment_payload();
    let mut live: Vec<(SegmentHeader, &[u8])> = segments
        .iter()
        .filter_map(|(_, bytes)| SegmentHeader::decode(bytes).map(|h| (h, bytes.as_slice())))
        .filter(|(h, _)| h.index.is_some())
        .collect();
    live.sort_by_key(|(h, _)| h.index);
    let Some((first, _)) = live.first() else { return Log { start: 0, incarnation: 1, records: Vec::new() } };
    let start = first.first_record.0;
    let base = first.index.unwrap_or(0) * payload;
    let mut stream = Vec::new();
    for (header, bytes) in &live {
        let at = (header.index.unwrap_or(0) * payload - base) as usize;
        stream.resize(at, 0);
        stream.extend_from_slice(&bytes[SEGMENT_HEADER_SIZE as usize..]);
    }
    let incarnation = live.iter().map(|(h, _)| h.incarnation).max().unwrap_or(1);
    let mut records = Vec::new();
    let mut lsn = start;
    while let Some((header, body)) = stream.get((lsn - base) as usize..).and_then(|b| decode_record(b, Lsn(lsn))) {
        records.push(Record { kind: header.kind.0, incarnation: header.incarnation, payload: body.to_vec() });
        lsn = header.end().0;
    }
    Log { start, incarnation, records }
}

/// Writes `log` back into segment files (records at consecutive LSNs from
/// its start, each with a correct CRC; segment headers valid), as many
/// files as the records need plus one free one.
pub fn build_log(log: &Log) -> Vec<(String, Vec<u8>)> {
    let payload = segment_payload();
    let first_index = log.start / payload;
    let base = first_index * payload;
    let mut stream = vec![0u8; (log.start - base) as usize];
    let mut starts = Vec::new();
    for record in &log.records {
        let lsn = base + stream.len() as u64;
        starts.push(lsn);
        stream.extend_from_slice(&encode_record(
            Lsn(lsn),
            RecordType(record.kind),
            record.incarnation,
            &record.payload,
        ));
    }
    let count = (stream.len() as u64).div_ceil(payload).max(1);
    let mut files = Vec::new();
    for k in 0..count {
        let index = first_index + k;
        let from = index * payload;
        let first_record = starts.iter().copied().find(|&s| s >= from.max(log.start)).unwrap_or(from);
        let header = SegmentHeader {
            size: SEGMENT_SIZE,
            index: Some(index),
            first_record: Lsn(first_record),
            incarnation: log.incarnation,
        };
        let mut file = vec![0u8; SEGMENT_SIZE as usize];
        file[..64].copy_from_slice(&header.encode());
        let lo = (k * payload) as usize;
        let hi = (((k + 1) * payload) as usize).min(stream.len());
        if lo < hi {
            file[SEGMENT_HEADER_SIZE as usize..SEGMENT_HEADER_SIZE as usize + hi - lo].copy_from_slice(&stream[lo..hi]);
        }
        files.push((format!("{:08}.wal", k), file));
    }
    let free = SegmentHeader { size: SEGMENT_SIZE, index: None, first_record: Lsn(0), incarnation: log.incarnation };
    let mut file = vec![0u8; SEGMENT_SIZE as usize];
    file[..64].copy_from_slice(&free.encode());
    files.push((format!("{:08}.wal", count), file));
    files
}

/// Opens a database on `image` (recovery: redo, commit replay, the
/// background repair) and runs what a reader does: `check`, scans of both
/// keyspaces both ways, point reads, then one commit and a checkpoint.
/// Every call must return; errors are fine.
pub fn exercise_db(image: &DbImage) {
    quick_give_up();
    let mut files: Vec<(&str, &[u8])> = vec![("data", &image.data)];
    files.extend(image.segments.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
    dump(&files);
    let dir = SimDir::new(2, CrashModel::default());
    for (name, bytes) in &files {
        let Ok(_) = dir.open(name, true) else { return };
        if let Some(disk) = dir.disk(name) {
            disk.set_durable_image(bytes.to_vec());
        }
    }
    if dir.sync().is_err() {
        return;
    }
    let Ok(data) = dir.open("data", false) else { return };
    let Ok(db) = crabtree::raw::open_db(data, Arc::new(dir.this_life()), db_options()) else { return };
    read_db(&db);
    let mut tx = db.begin();
    let _ = tx.put(b"key00003", b"after");
    let _ = tx.delete(b"key00004");
    let _ = tx.commit();
    let _ = crabtree::raw::checkpoint_db(&db);
    let _ = db.vacuum();
    let _ = db.check();
}

fn read_db(db: &Db) {
    let _ = db.check();
    let snapshot = db.snapshot();
    if let Ok(iter) = snapshot.range::<&[u8], _>(..) {
        for entry in iter {
            if entry.is_err() {
                break;
            }
        }
    }
    if let Ok(iter) = snapshot.range::<&[u8], _>(..) {
        for entry in iter.rev() {
            if entry.is_err() {
                break;
            }
        }
    }
    if let Ok(other) = db.keyspace("other") {
        if let Ok(iter) = snapshot.range_in::<&[u8], _>(&other, ..) {
            for entry in iter {
                if entry.is_err() {
                    break;
                }
            }
        }
        let _ = snapshot.get_in(&other, b"key00004");
    }
    for i in (0..64u32).step_by(3) {
        let _ = snapshot.get(&tree_key(i));
    }
    let _ = db.keyspaces();
}

/// Links that disagree make a tree operation restart until its patience
/// runs out (5 s by default, for overloaded machines), then report
/// corruption; nothing races the single reader here, so 10 ms will do.
fn quick_give_up() {
    crabtree::fuzzing::set_restart_patience(std::time::Duration::from_millis(10));
}

/// Writes `files` into `$CRABTREE_FUZZ_DUMP` when it is set.
fn dump(files: &[(&str, &[u8])]) {
    let Some(dir) = std::env::var_os("CRABTREE_FUZZ_DUMP") else { return };
    let dir = std::path::PathBuf::from(dir);
    let _ = std::fs::create_dir_all(&dir);
    for (name, bytes) in files {
        let _ = std::fs::write(dir.join(name), bytes);
    }
}
