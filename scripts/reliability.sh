#!/usr/bin/env bash
# The fault-class tests of RELIABILITY.md, one after another, with the
# summary line each prints: how many crash states, kills, damaged files,
# histories... it ran, and whether it passed. The README's reliability
# figure comes from a run of this script.
#
#   scripts/reliability.sh              # quick tier (what CI runs)
#   SIZE=long scripts/reliability.sh    # long tier (hours: load_held alone runs 1 h)
#
# Writes the table to stdout and every test's output under
# .reliability-work/ (kept if a test failed). Exit status 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export CRABTREE_TEST_SIZE=${SIZE:-quick}
# class | test binary (each prints summary lines; the script sums the
# counts it finds in them, "N crash states", "N SIGKILLs", ..., and the
# tests passed)
TESTS="F1-F3,F5,F7|wal_crash
F1,F4,F5,F7|crash_store
F2|crash_concurrent
F1,F2,F7|db_crash
F1,F2,F7|compact
F1,F5|wal_recycle_crash
F1,F5,F7|wal_adversarial
F4|tree_faults
F4|disk_full
F6|kill
F6|db_kill
F8|media_faults
F9|loom_latch
F9|loom_wal
F9|loom_oracle
F11|history
F11|isolation
F11|bank
F12|txn_model
F13|corrupt_file
F15|db_misuse
F15|huge_values
F16|load_held"
UNITS='crash states|fault states|cases|crashes|SIGKILLs|acknowledged durable writes and deletes|transfers acknowledged|generations acknowledged|reopen checks|detected|harmless|transactions|committed|snapshot checks|old-snapshot checks|snapshot sums checked|transfers committed|commits'
WORK=$PWD/.reliability-work
rm -rf "$WORK" && mkdir -p "$WORK" || exit 1
cargo test --release -p crabtree --no-run >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
failed=0
echo "| class | test | tier $CRABTREE_TEST_SIZE: what it ran | result | seconds |"
echo "|---|---|---|---|---|"
while IFS='|' read -r class name; do
    if [ ! -f "crates/crabtree/tests/$name.rs" ]; then
        continue
    fi
    start=$(date +%s)
    cargo test --release -p crabtree --test "$name" -- --nocapture >"$WORK/$name.log" 2>&1
    status=$?
    took=$(($(date +%s) - start))
    # Summary lines only: not the test harness's, not progress lines
    # ("load held: at 6s: ..."), and "N commits lost" is not a count of
    # commits made.
    counts=$(grep -v '^test \|: at [0-9]' "$WORK/$name.log" | sed 's/commits lost/lost commits/' |
        grep -oE "[0-9]+ ($UNITS)\b" |
        awk '{ n = $1; $1 = ""; sub(/^ /, ""); if (!($0 in sum)) order[++k] = $0; sum[$0] += n }
             END { for (i = 1; i <= k; i++) printf "%s%d %s", (i > 1 ? ", " : ""), sum[order[i]], order[i] }')
    tests=$(grep -oE '^test result: [a-zA-Z]+\. [0-9]+ passed' "$WORK/$name.log" | awk '{ n += $4 } END { print n + 0 }')
    if [ "$status" = 0 ]; then result=passed; else result="FAILED"; failed=1; fi
    echo "| $class | \`$name\` | ${counts:+$counts; }$tests tests | $result | $took |"
done <<<"$TESTS"
[ "$failed" = 0 ] && rm -rf "$WORK"
exit "$failed"
