#!/usr/bin/env bash
# Runs every benchmark; BENCHMARKS.md was made with this (no argument).
# `--short` is CI's quick mode: it only keeps the benches compiling and
# running. Either way the numbers also go to target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target/bench
mode=${1:-}
criterion=()
if [ "$mode" = --short ]; then
    criterion=(--warm-up-time 0.1 --measurement-time 0.2 --sample-size 10)
fi

cargo bench --bench timeout -- "${criterion[@]}" | tee target/bench/timeout.txt
python3 scripts/bench_table.py "${CARGO_TARGET_DIR:-target}/criterion" > target/bench/timeout.md
OPGUARD_BENCH_OUT=target/bench/scale.md cargo bench --bench scale -- $mode
python3 scripts/plot_scale.py target/bench/scale.csv target/bench/scale.svg
OPGUARD_BENCH_OUT=target/bench/accuracy.md cargo bench --bench accuracy -- $mode

. scripts/torch-env.sh
if [ "$mode" = --short ]; then
    # Each benchmark once, as a test, on the debug build of tch that the
    # tests use: a release build of tch would compile its C++ again.
    cargo test --features tch --bench safe_mps | tee target/bench/safe_mps.txt
else
    cargo bench --features tch --bench safe_mps | tee target/bench/safe_mps.txt
fi
