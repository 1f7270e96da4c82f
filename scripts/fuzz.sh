#!/usr/bin/env bash
# Runs every coverage-guided fuzz target (RELIABILITY.md F14, `fuzz/`) for
# FUZZ_SECS seconds each (default 60: the quick tier; the long tier is
# 3600), one after another, on stable Rust: `cargo fuzz run -s none` (no
# sanitizer; the targets are built with debug assertions and overflow
# checks). Needs `cargo install cargo-fuzz`. CI does not run it.
#
#   FUZZ_SECS=600 scripts/fuzz.sh                 # 10 minutes per target
#   FUZZ_TARGETS="page_mutate wal_recovery" scripts/fuzz.sh
#
# The corpus grows in fuzz/corpus/TARGET (kept between runs, not committed);
# a crash, timeout or out-of-memory input lands in fuzz/artifacts/TARGET/.
# Reproduce one with `cargo fuzz run -s none TARGET fuzz/artifacts/TARGET/FILE`
# and, for the targets that rebuild files, `CRABTREE_FUZZ_DUMP=DIR` to get
# the exact files it opened. Exits 1 if any target found something.
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
secs=${FUZZ_SECS:-60}
targets=${FUZZ_TARGETS:-"raw_file page_mutate wal_record wal_recovery commit_record db_crash_ops"}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 2
fi
cargo fuzz build -s none
mkdir -p logs
failed=()
for target in $targets; do
    mkdir -p "corpus/$target"
    echo "== $target: ${secs}s"
    # raw_file writes a valid data file into its corpus as a seed.
    if CRABTREE_FUZZ_SEEDS="corpus/raw_file" cargo fuzz run -s none "$target" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"logs/$target.log" 2>&1; then
        grep -E "DONE|stat::number_of_executed_units" "logs/$target.log" || true
    else
        failed+=("$target")
        tail -n 40 "logs/$target.log"
    fi
done
if ((${#failed[@]})); then
    echo "found something: ${failed[*]} (inputs in fuzz/artifacts/, logs in fuzz/logs/)" >&2
    exit 1
fi
echo "every target ran ${secs}s without a crash, hang or out-of-memory"
