//! The `crabtree` command-line tool: one file per subcommand.
//!
//! * `bench`: creates a database in a temporary directory, runs a workload
//!   on the B-link tree beside a `RwLock<BTreeMap>` baseline, prints a table;
//!   then durable writes (1 and 32 writers) beside the disk's raw
//!   overwrite + `fdatasync` rate.
//! * `check`: opens a database file and runs the structural verifier.

mod bench;
mod check;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// crabtree: an embedded, concurrent, crash-safe key-value engine.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the built-in workload on a temporary database and print results.
    Bench(bench::BenchArgs),
    /// Verify every invariant of a database file.
    Check(check::CheckArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(&args),
        Command::Check(args) => check::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
