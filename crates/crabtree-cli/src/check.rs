//! `crabtree check FILE`: opens a database and verifies it.

use crabtree::io::FileStorage;
use crabtree::raw::{BTree, BufferPool, PoolOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Arguments of `check`.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// The database file.
    pub path: PathBuf,
}

/// Opens the file (taking its lock), verifies, prints the report.
pub fn run(args: &CheckArgs) -> crabtree::Result<ExitCode> {
    let storage = Arc::new(FileStorage::open(&args.path, false)?);
    let pool = Arc::new(BufferPool::open(storage, PoolOptions::default())?);
    let tree = BTree::open(pool)?;
    let report = tree.verify()?;
    println!("pages: {} ({} free, {} overflow)", report.page_count, report.free_pages, report.overflow_pages);
    println!("entries: {}", report.entries);
    for (level, stats) in report.levels.iter().enumerate() {
        println!("level {level}: {} nodes, {} cells, fill {:.0}%", stats.nodes, stats.cells, stats.fill * 100.0);
    }
    if report.is_ok() {
        println!("ok");
        Ok(ExitCode::SUCCESS)
    } else {
        for violation in &report.violations {
            println!("violation: {violation}");
        }
        Ok(ExitCode::FAILURE)
    }
}
