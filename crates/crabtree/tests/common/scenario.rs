//! Helpers for the deterministic scenario tests (`tree_interleave.rs`,
//! `tree_adversarial.rs`): serialisation of scenarios (the failpoint table
//! is process-wide), integer keys with room between them, a page's header
//! fields, and the exact-contents check.

use crabtree::Error;
use crabtree::PageId;
use crabtree::io::{MemStorage, Storage};
use crabtree::raw::BTree;
use crabtree::raw::page::node::Node;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Scenarios run one at a time: failpoints are process-wide.
pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub const PARK_TIMEOUT: Duration = Duration::from_secs(20);
/// Loaded keys are multiples of this, so inserts fit anywhere between.
pub const GAP: u64 = 1 << 20;

pub fn key(n: u64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

pub fn value(n: u64) -> Vec<u8> {
    let mut value = format!("value-{n}-").into_bytes();
    value.resize(40, b'.');
    value
}

pub fn number(key: &[u8]) -> u64 {
    u64::from_be_bytes(key.try_into().expect("8-byte key"))
}

pub fn injected(what: &str) -> Error {
    Error::Io(std::io::Error::other(format!("injected: {what}")))
}

/// A tree of 512-byte pages with `frames` frames.
pub fn new_tree(frames: usize) -> BTree {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    super::create(storage, &super::options(512, frames))
}

/// Keys [`load`] needs for a three-level tree of 512-byte pages whose root
/// has at least three children.
pub const THREE_LEVELS: u64 = 300;

/// Loads `count` keys `GAP, 2 * GAP, ...` ([`THREE_LEVELS`] of them give
/// three levels).
pub fn load(tree: &BTree, count: u64) -> BTreeMap<u64, Vec<u8>> {
    let mut model = BTreeMap::new();
    for i in 1..=count {
        tree.insert(&key(i * GAP), &value(i * GAP)).unwrap();
        model.insert(i * GAP, value(i * GAP));
    }
    model
}

/// Header fields of a page, read under a shared latch.
pub struct Info {
    pub level: u8,
    pub flags: u16,
    pub high: Option<Vec<u8>>,
    pub right: Option<PageId>,
    pub children: Vec<PageId>,
    pub keys: Vec<Vec<u8>>,
    pub free_space: usize,
}

pub fn info(tree: &BTree, pid: PageId) -> Info {
    let guard = tree.pool().shared(pid).unwrap();
    let node = Node::new(guard.page(), pid).unwrap();
    let head = *node.header();
    let inner = !node.is_leaf();
    Info {
        level: head.level,
        flags: head.flags,
        high: node.high_key().unwrap(),
        right: head.right,
        children: if inner { (0..node.len()).map(|i| node.child(i).unwrap()).collect() } else { Vec::new() },
        keys: (0..node.len()).map(|i| node.key(i).unwrap()).collect(),
        free_space: node.free_space(),
    }
}

pub fn leaf_keys(tree: &BTree, leaf: PageId) -> Vec<u64> {
    info(tree, leaf).keys.iter().map(|k| number(k)).collect()
}

pub fn root(tree: &BTree) -> PageId {
    tree.path_to(&key(0)).unwrap()[0]
}

/// The tree must verify clean and hold exactly `model`.
pub fn check(tree: &BTree, model: &BTreeMap<u64, Vec<u8>>, what: &str) {
    super::verified(tree);
    check_contents(tree, model, what);
}

/// The tree must hold exactly `model`: every key by `get`, all by a scan
/// (also while abandoned splits, which `verify` reports, remain).
pub fn check_contents(tree: &BTree, model: &BTreeMap<u64, Vec<u8>>, what: &str) {
    for (&n, v) in model {
        assert_eq!(tree.get(&key(n)).unwrap().as_ref(), Some(v), "{what}: key {n} reads wrong");
    }
    let scanned: Vec<(u64, Vec<u8>)> = super::contents(tree).into_iter().map(|(k, v)| (number(&k), v)).collect();
    let expected: Vec<(u64, Vec<u8>)> = model.iter().map(|(&n, v)| (n, v.clone())).collect();
    assert_eq!(scanned.len(), expected.len(), "{what}: scan length");
    assert!(scanned == expected, "{what}: scan differs from the model");
}
