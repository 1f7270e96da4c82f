#!/usr/bin/env bash
# Thread scaling of crabtree, 1 to 16 threads: the tree bench (in memory),
# pool_oom (data 4x the pool), the txn commit cells and the durable writers,
# with the machine's description first. Figures: docs/BENCHMARKS.md,
# "Thread scaling".
#
#   scripts/scaling.sh            # builds the benches here, then runs them
#   BIN=dir scripts/scaling.sh    # runs prebuilt bench binaries from dir
#                                 # (tree, pool_oom, txn, durable: copied
#                                 # from target/release/deps), e.g. on a
#                                 # machine without Rust
#
# THREADS (default 1,2,4,8,16), SECS (1.5), KEYS (1000000); OUT (a folder
# for the raw outputs, default a new temp folder); the databases go to a
# folder under the current directory (not /tmp, which may be a tmpfs).
set -uo pipefail
THREADS=${THREADS:-1,2,4,8,16}
SECS=${SECS:-1.5}
KEYS=${KEYS:-1000000}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
if [ -z "${BIN:-}" ]; then
    BIN=$(mktemp -d)
    cd "$(dirname "$0")/.." || exit 1
    cargo bench -p crabtree --no-run --bench tree --bench pool_oom --bench txn --bench durable >/dev/null 2>&1 || exit 1
    for b in tree pool_oom txn durable; do
        cp "$(ls -t target/release/deps/$b-* | grep -v '\.d$' | head -1)" "$BIN/$b"
    done
fi
WORK=$PWD/.scaling-work
rm -rf "$WORK" && mkdir -p "$WORK" || exit 1
export TMPDIR=$WORK CRABTREE_BENCH_DIR=$WORK
{ date -u; uname -r; nproc; lscpu | grep -E 'Model name|Core|Socket|NUMA node\(|L2|L3'; free -g; findmnt -T "$WORK"; } 2>&1 | tee "$OUT/machine.txt"
run() { # name, binary, then env assignments
    local name=$1 bin=$2; shift 2
    echo "=== $name"
    env "$@" "$BIN/$bin" --bench >"$OUT/$name.txt" 2>&1
    grep -v 'done:' "$OUT/$name.txt"
}
run tree tree CRABTREE_BENCH_KEYS="$KEYS" CRABTREE_BENCH_THREADS="$THREADS" CRABTREE_BENCH_ROUNDS=1 CRABTREE_BENCH_SECS="$SECS"
run pool_oom pool_oom CRABTREE_BENCH_KEYS="$KEYS" CRABTREE_BENCH_THREADS="$THREADS" CRABTREE_BENCH_ROUNDS=1 \
    CRABTREE_BENCH_SECS="$SECS" CRABTREE_BENCH_WORKLOADS='get$,get zipf,scan,get/update,get direct-vs-copy,get cold'
run txn txn CRABTREE_BENCH_KEYS=$((KEYS / 10)) CRABTREE_BENCH_THREADS="$THREADS,32" CRABTREE_BENCH_SECS=1 CRABTREE_BENCH_WORKLOADS=commit
run durable durable CRABTREE_BENCH_PHASES=durable CRABTREE_BENCH_WRITERS=1,4,16,64 CRABTREE_BENCH_SECS=2 \
    CRABTREE_BENCH_SLICES=4 CRABTREE_BENCH_ROUNDS=1
rm -rf "$WORK"
echo "raw outputs: $OUT"
