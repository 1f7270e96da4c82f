//! Model-based test of the tree's whole API against `std::collections::BTreeMap`.
//!
//! Goal: every operation (insert/upsert, remove, get, range with every kind
//! of bound read forward, backward and with next/next_back mixed on one
//! iterator, seek, first, last, len, bulk_load, clean close + reopen)
//! returns exactly what the model returns, and the tree passes `verify`
//! after every case.
//! Method: proptest draws a configuration (512-byte pages so splits cascade
//! several levels, or 4 KiB; a pool of 16..40 frames so eviction runs; a
//! `MemStorage` or a `SimDisk`), an optional sorted bulk load, and a
//! sequence of operations over a small key space that includes the empty
//! key and keys of exactly `key_size_max` bytes. Values are mostly small,
//! some just past the inline threshold (one overflow page) and some
//! several pages long. Keys of `key_size_max + 1` bytes must fail with
//! `KeyTooLarge` and change nothing. Failing cases shrink to a minimal
//! sequence; proptest prints it.
//! Size: `CRABTREE_TEST_SIZE=quick|long` (cases per test).

mod common;

use crabtree::Error;
use crabtree::io::{MemStorage, SimDisk, Storage};
use crabtree::raw::{BTree, PoolOptions};
use proptest::prelude::*;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// A key, materialized once the page size (and so `key_size_max`) is known.
#[derive(Clone, Debug)]
enum KeySpec {
    /// One of a few hundred ordinary keys, 6 to 66 bytes long.
    Small(u16),
    /// The empty key.
    Empty,
    /// A key of exactly `key_size_max` bytes.
    Max(u8),
}

/// A value: `len` bytes derived from `seed`.
#[derive(Clone, Debug)]
struct ValueSpec {
    len: usize,
    seed: u8,
}

#[derive(Clone, Debug)]
enum Op {
    Insert(KeySpec, ValueSpec),
    /// Inserts `count` consecutive small keys from `start` (grows the tree
    /// fast so splits reach the upper levels).
    InsertRun(u16, u16, ValueSpec),
    Remove(KeySpec),
    /// Removes `count` consecutive small keys from `start` (empties leaves).
    RemoveRun(u16, u16),
    Get(KeySpec),
    /// A range read with the given directions (`true` = next) on one
    /// iterator, then drained alternately front and back.
    Range(Bound<KeySpec>, Bound<KeySpec>, Vec<bool>),
    Seek(KeySpec, u8),
    First,
    Last,
    Len,
    TooLarge(u8),
    Verify,
    Reopen,
}

#[derive(Clone, Debug)]
struct Config {
    page_size: usize,
    frames: usize,
    sim_disk: bool,
    bulk: Vec<(KeySpec, ValueSpec)>,
}

fn key_of(spec: &KeySpec, key_size_max: usize) -> Vec<u8> {
    match spec {
        KeySpec::Small(i) => {
            let mut key = format!("k{i:05}").into_bytes();
            // Long keys often, so inner nodes fill after few separators.
            key.resize(key.len() + usize::from(i % 4) * 20, b'x');
            key
        }
        KeySpec::Empty => Vec::new(),
        KeySpec::Max(byte) => {
            let mut key = vec![b'k'; key_size_max];
            key[1] = *byte;
            key
        }
    }
}

fn value_of(spec: &ValueSpec) -> Vec<u8> {
    (0..spec.len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(spec.seed)).collect()
}

fn key_strategy() -> impl Strategy<Value = KeySpec> {
    prop_oneof![
        20 => (0u16..400).prop_map(KeySpec::Small),
        1 => Just(KeySpec::Empty),
        2 => (0u8..6).prop_map(|b| KeySpec::Max(b'0' + b * 20)),
    ]
}

fn value_strategy() -> impl Strategy<Value = ValueSpec> {
    let len = prop_oneof![
        12 => 0usize..40,
        3 => 40usize..700,
        1 => 700usize..9000,
    ];
    (len, any::<u8>()).prop_map(|(len, seed)| ValueSpec { len, seed })
}

fn bound_strategy() -> impl Strategy<Value = Bound<KeySpec>> {
    prop_oneof![
        1 => Just(Bound::Unbounded),
        2 => key_strategy().prop_map(Bound::Included),
        2 => key_strategy().prop_map(Bound::Excluded),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (key_strategy(), value_strategy()).prop_map(|(k, v)| Op::Insert(k, v)),
        4 => (0u16..400, 1u16..120, value_strategy()).prop_map(|(s, n, v)| Op::InsertRun(s, n, v)),
        15 => key_strategy().prop_map(Op::Remove),
        3 => (0u16..400, 1u16..150).prop_map(|(s, n)| Op::RemoveRun(s, n)),
        10 => key_strategy().prop_map(Op::Get),
        10 => (bound_strategy(), bound_strategy(), prop::collection::vec(any::<bool>(), 0..40))
            .prop_map(|(lo, hi, dirs)| Op::Range(lo, hi, dirs)),
        4 => (key_strategy(), 0u8..20).prop_map(|(k, n)| Op::Seek(k, n)),
        2 => Just(Op::First),
        2 => Just(Op::Last),
        2 => Just(Op::Len),
        1 => any::<u8>().prop_map(Op::TooLarge),
        1 => Just(Op::Verify),
        1 => Just(Op::Reopen),
    ]
}

fn config_strategy() -> impl Strategy<Value = Config> {
    let bulk = prop_oneof![
        2 => Just(Vec::new()),
        1 => prop::collection::vec((key_strategy(), value_strategy()), 0..600),
    ];
    (prop_oneof![3 => Just(512usize), 1 => Just(4096usize)], 16usize..40, any::<bool>(), bulk)
        .prop_map(|(page_size, frames, sim_disk, bulk)| Config { page_size, frames, sim_disk, bulk })
}

fn materialize(bound: &Bound<KeySpec>, max: usize) -> Bound<Vec<u8>> {
    match bound {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(k) => Bound::Included(key_of(k, max)),
        Bound::Excluded(k) => Bound::Excluded(key_of(k, max)),
    }
}

fn within(key: &[u8], lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>) -> bool {
    let above = match lower {
        Bound::Unbounded => true,
        Bound::Included(b) => key >= b.as_slice(),
        Bound::Excluded(b) => key > b.as_slice(),
    };
    let below = match upper {
        Bound::Unbounded => true,
        Bound::Included(b) => key <= b.as_slice(),
        Bound::Excluded(b) => key < b.as_slice(),
    };
    above && below
}

/// The tree under test, its storage and the model.
struct Harness {
    tree: Option<BTree>,
    storage: Arc<dyn Storage>,
    options: PoolOptions,
    model: Model,
    max: usize,
}

impl Harness {
    fn new(config: &Config, seed: u64) -> Harness {
        let options = common::options(config.page_size, config.frames);
        let storage: Arc<dyn Storage> =
            if config.sim_disk { Arc::new(SimDisk::new(seed)) } else { Arc::new(MemStorage::new()) };
        let tree = common::create(Arc::clone(&storage), &options);
        let max = tree.key_size_max();
        Harness { tree: Some(tree), storage, options, model: Model::new(), max }
    }

    fn tree(&self) -> &BTree {
        self.tree.as_ref().unwrap()
    }

    fn key(&self, spec: &KeySpec) -> Vec<u8> {
        key_of(spec, self.max)
    }

    fn bulk_load(&mut self, bulk: &[(KeySpec, ValueSpec)]) {
        let mut sorted = Model::new();
        for (k, v) in bulk {
            sorted.insert(self.key(k), value_of(v));
        }
        let count = self.tree().bulk_load(sorted.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))).unwrap();
        assert_eq!(count, sorted.len() as u64);
        self.model = sorted;
        common::verified(self.tree());
        // A second load into a non-empty tree is refused and changes nothing.
        if !self.model.is_empty() {
            let again = self.tree().bulk_load([(b"a".as_slice(), b"b".as_slice())]);
            assert!(matches!(again, Err(Error::InvalidArgument(_))), "{again:?}");
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Insert(k, v) => {
                let (key, value) = (self.key(k), value_of(v));
                let old = self.tree().insert(&key, &value).unwrap();
                assert_eq!(old, self.model.insert(key, value), "insert {k:?}");
            }
            Op::InsertRun(start, count, v) => {
                for i in *start..start.saturating_add(*count) {
                    let (key, value) = (self.key(&KeySpec::Small(i)), value_of(&ValueSpec { seed: i as u8, ..*v }));
                    let old = self.tree().insert(&key, &value).unwrap();
                    assert_eq!(old, self.model.insert(key, value), "insert run at {i}");
                }
            }
            Op::Remove(k) => {
                let key = self.key(k);
                assert_eq!(self.tree().remove(&key).unwrap(), self.model.remove(&key), "remove {k:?}");
            }
            Op::RemoveRun(start, count) => {
                for i in *start..start.saturating_add(*count) {
                    let key = self.key(&KeySpec::Small(i));
                    assert_eq!(self.tree().remove(&key).unwrap(), self.model.remove(&key), "remove run at {i}");
                }
            }
            Op::Get(k) => {
                let key = self.key(k);
                assert_eq!(self.tree().get(&key).unwrap(), self.model.get(&key).cloned(), "get {k:?}");
            }
            Op::Range(lo, hi, dirs) => self.check_range(lo, hi, dirs),
            Op::Seek(k, n) => {
                let key = self.key(k);
                let got: Vec<_> = self.tree().seek(&key).take(usize::from(*n)).map(|e| e.unwrap()).collect();
                let want: Vec<_> =
                    self.model.range(key..).take(usize::from(*n)).map(|(k, v)| (k.clone(), v.clone())).collect();
                assert_eq!(got, want, "seek {k:?}");
            }
            Op::First => {
                let want = self.model.first_key_value().map(|(k, v)| (k.clone(), v.clone()));
                assert_eq!(self.tree().first().unwrap(), want, "first");
            }
            Op::Last => {
                let want = self.model.last_key_value().map(|(k, v)| (k.clone(), v.clone()));
                assert_eq!(self.tree().last().unwrap(), want, "last");
            }
            Op::Len => {
                assert_eq!(self.tree().len(), self.model.len() as u64, "len");
                assert_eq!(self.tree().is_empty(), self.model.is_empty(), "is_empty");
            }
            Op::TooLarge(byte) => self.check_too_large(*byte),
            Op::Verify => {
                common::verified(self.tree());
            }
            Op::Reopen => {
                let tree = self.tree.take().unwrap();
                self.tree = Some(common::reopen(tree, &self.storage, &self.options));
                assert_eq!(self.tree().len(), self.model.len() as u64, "len after reopen");
            }
        }
    }

    fn check_too_large(&self, byte: u8) {
        let key = vec![byte; self.max + 1];
        let too_large = |result: Result<Option<Vec<u8>>, Error>| matches!(result, Err(Error::KeyTooLarge { size, max }) if size == self.max + 1 && max == self.max);
        assert!(too_large(self.tree().insert(&key, b"v")), "insert of a key of max + 1 bytes");
        assert!(too_large(self.tree().get(&key)), "get of a key of max + 1 bytes");
        assert!(too_large(self.tree().remove(&key)), "remove of a key of max + 1 bytes");
        assert_eq!(self.tree().len(), self.model.len() as u64, "len after refused ops");
    }

    /// One iterator read in the order `dirs` says, then drained from both
    /// ends alternately; the model is a deque of the entries in range.
    fn check_range(&self, lo: &Bound<KeySpec>, hi: &Bound<KeySpec>, dirs: &[bool]) {
        let (lower, upper) = (materialize(lo, self.max), materialize(hi, self.max));
        let mut want: VecDeque<_> =
            self.model.iter().filter(|(k, _)| within(k, &lower, &upper)).map(|(k, v)| (k.clone(), v.clone())).collect();
        let count = want.len();
        let mut iter = self.tree().range((lower.clone(), upper.clone()));
        let steps = dirs.iter().copied().chain((0..count + 2).map(|i| i % 2 == 0));
        for (step, forward) in steps.enumerate() {
            let (got, expected) =
                if forward { (iter.next(), want.pop_front()) } else { (iter.next_back(), want.pop_back()) };
            let got = got.transpose().unwrap();
            assert_eq!(got, expected, "range {lo:?}..{hi:?} step {step} forward {forward} (dirs {dirs:?})");
        }
        // Whole-range reads in each direction.
        let forward: Vec<_> = self.tree().range((lower.clone(), upper.clone())).map(|e| e.unwrap().0).collect();
        let model_keys: Vec<_> =
            self.model.iter().filter(|(k, _)| within(k, &lower, &upper)).map(|(k, _)| k.clone()).collect();
        assert_eq!(forward, model_keys, "forward range {lo:?}..{hi:?}");
        let mut backward: Vec<_> = self.tree().range((lower, upper)).rev().map(|e| e.unwrap().0).collect();
        backward.reverse();
        assert_eq!(backward, model_keys, "backward range {lo:?}..{hi:?}");
    }

    /// End of case: the structure is sound and holds exactly the model,
    /// also after a clean close and reopen.
    fn finish(mut self) {
        common::verified(self.tree());
        let want: Vec<_> = self.model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(common::contents(self.tree()), want, "contents");
        assert_eq!(self.tree().len(), want.len() as u64);
        let tree = self.tree.take().unwrap();
        let tree = common::reopen(tree, &self.storage, &self.options);
        common::verified(&tree);
        assert_eq!(common::contents(&tree), want, "contents after reopen");
        assert_eq!(tree.len(), want.len() as u64, "len after reopen");
    }
}

fn cases(quick: u32, long: u32) -> ProptestConfig {
    ProptestConfig {
        cases: if common::long() { long } else { quick },
        max_shrink_iters: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases(200, 5000))]

    #[test]
    fn operations_match_a_btreemap(
        config in config_strategy(),
        ops in prop::collection::vec(op_strategy(), 1..250),
        seed in any::<u64>(),
    ) {
        let mut harness = Harness::new(&config, seed);
        harness.bulk_load(&config.bulk);
        for op in &ops {
            harness.apply(op);
        }
        harness.finish();
    }
}

proptest! {
    #![proptest_config(cases(20, 500))]

    /// Deep trees: many keys, 512-byte pages, a 16-frame pool, then removal
    /// of most of them (leaf deletion), reopen in between.
    #[test]
    fn deep_trees_grow_and_shrink(
        keys in prop::collection::vec((0u16..400, value_strategy()), 200..1500),
        removals in prop::collection::vec(0u16..400, 100..600),
        seed in any::<u64>(),
    ) {
        let config = Config { page_size: 512, frames: 16, sim_disk: seed % 2 == 0, bulk: Vec::new() };
        let mut harness = Harness::new(&config, seed);
        for (i, value) in &keys {
            harness.apply(&Op::Insert(KeySpec::Small(*i), value.clone()));
        }
        let report = common::verified(harness.tree());
        prop_assert!(harness.model.len() < 150 || report.levels.len() >= 3, "shallow: {:?}", report.levels);
        harness.apply(&Op::Reopen);
        for i in &removals {
            harness.apply(&Op::Remove(KeySpec::Small(*i)));
        }
        harness.apply(&Op::Range(Bound::Unbounded, Bound::Unbounded, vec![true, false, false, true]));
        harness.finish();
    }
}

#[test]
fn empty_and_maximal_keys() {
    for page_size in [512, 4096, 65536] {
        let options = common::options(page_size, 16);
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
        let tree = common::create(Arc::clone(&storage), &options);
        let max = tree.key_size_max();
        assert_eq!(tree.first().unwrap(), None);
        assert_eq!(tree.last().unwrap(), None);
        assert_eq!(tree.insert(b"", b"empty").unwrap(), None);
        let big = vec![0xffu8; max];
        assert_eq!(tree.insert(&big, b"big").unwrap(), None);
        let error = tree.insert(&vec![0u8; max + 1], b"x").unwrap_err();
        assert!(matches!(error, Error::KeyTooLarge { size, max: m } if size == max + 1 && m == max), "{error:?}");
        assert_eq!(tree.get(b"").unwrap(), Some(b"empty".to_vec()));
        assert_eq!(tree.first().unwrap(), Some((Vec::new(), b"empty".to_vec())));
        assert_eq!(tree.last().unwrap(), Some((big.clone(), b"big".to_vec())));
        // Many maximal keys force splits with maximal separators.
        for i in 0..200u32 {
            let mut key = vec![b'm'; max];
            key[..4].copy_from_slice(&i.to_be_bytes());
            tree.insert(&key, &i.to_le_bytes()).unwrap();
        }
        common::verified(&tree);
        let tree = common::reopen(tree, &storage, &options);
        common::verified(&tree);
        assert_eq!(tree.len(), 202);
        assert_eq!(tree.remove(b"").unwrap(), Some(b"empty".to_vec()));
        assert_eq!(tree.get(&big).unwrap(), Some(b"big".to_vec()));
    }
}
