//! Goal: the "Public API" example of DESIGN.md compiles and runs unchanged.
//!
//! Method: the example's lines, verbatim, in a function returning
//! `crabtree::Result`, run in a fresh temporary working directory (this
//! file holds one test, so changing the directory affects nothing else).

#[allow(unused_variables)]
#[rustfmt::skip]
fn design_example() -> crabtree::Result<()> {
    let db = crabtree::Db::open("data.crab")?;              // create or open; exclusive file lock
    let mut tx = db.begin();                                  // read-write, snapshot isolation
    tx.put(b"apple", b"red")?;
    let v: Option<Vec<u8>> = tx.get(b"apple")?;               // sees its own writes
    tx.delete(b"pear")?;
    for item in tx.range(b"a".as_slice()..b"b".as_slice())? { let (k, v) = item?; }
    tx.commit()?;                                              // Err(Error::Conflict) -> retry
    let snap = db.snapshot();                                  // read-only, consistent, never blocks
    for item in snap.range::<&[u8], _>(..)?.rev() { /* reverse scan */ }
    Ok(())
}

#[test]
fn the_design_example_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    design_example().unwrap();
    let db = crabtree::Db::open("data.crab").unwrap();
    assert_eq!(db.snapshot().get(b"apple").unwrap(), Some(b"red".to_vec()));
}
