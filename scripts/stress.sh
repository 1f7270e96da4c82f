#!/usr/bin/env bash
# The concurrency tests all at once, long tier, for a machine with many
# cores (each test in its own process, in parallel, so the cores are
# oversubscribed on purpose). Results: docs/TESTING.md, "Many cores".
#
#   scripts/stress.sh              # builds the test binaries here, then runs them
#   BIN=dir scripts/stress.sh      # runs prebuilt test binaries from dir (named
#                                  # by test: tree_stress, ..., lib for the unit
#                                  # tests), e.g. on a machine without Rust
#
# THREADS (CRABTREE_TEST_THREADS for the tests that take a count; default
# the cores), SIZE (quick|long, default long), STATES (crash states of
# crash_concurrent, default 30000), LIMIT (seconds per test, default 600).
set -uo pipefail
TESTS="tree_stress latch_stress alloc_stress pool_stress bank isolation tree_split_delete wal tree_threads pool_grace crash_concurrent"
if [ -z "${BIN:-}" ]; then
    BIN=$(mktemp -d)
    cd "$(dirname "$0")/.." || exit 1
    list=$(cargo test --release -p crabtree --no-run 2>&1 | grep -oE '\(target/release/deps/[^)]+\)' | tr -d '()')
    for n in $TESTS; do cp "$(echo "$list" | grep "/$n-" | head -1)" "$BIN/$n"; done
    cp "$(echo "$list" | grep '/crabtree-' | head -1)" "$BIN/lib"
fi
WORK=$PWD/.scaling-work
rm -rf "$WORK" && mkdir -p "$WORK/logs" || exit 1
export TMPDIR=$WORK CRABTREE_TEST_SIZE=${SIZE:-long} CRABTREE_TEST_THREADS=${THREADS:-$(nproc)}
export CRABTREE_F2_STATES=${STATES:-30000}
start=$(date +%s)
for n in $(ls "$BIN"); do
    (cd "$WORK" && timeout "${LIMIT:-600}" "$BIN/$n" --test-threads=4 >"$WORK/logs/$n.log" 2>&1; echo "exit $?" >>"$WORK/logs/$n.log") &
done
wait
echo "$(nproc) cores, all done in $(($(date +%s) - start)) s"
failed=0
for f in "$WORK"/logs/*.log; do
    echo "$(basename "$f" .log): $(grep -E '^test result' "$f" | tail -1) ($(tail -1 "$f"))"
    if ! grep -q '^exit 0$' "$f"; then failed=1; grep -E 'FAILED|panicked at|seed' "$f" | head -10; fi
done
[ "$failed" = 0 ] && rm -rf "$WORK"
exit "$failed"
