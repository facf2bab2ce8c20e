#!/usr/bin/env bash
# Runs every benchmark; BENCHMARKS.md was made with this (no argument).
# `--short` is CI's quick mode: each bench runs once, small, as a test on
# the debug build that the tests use (no release build), only to keep the
# benches compiling and running; its numbers mean nothing. Either way the
# output also goes to target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target/bench

if [ "${1:-}" = --short ]; then
    cargo test --bench timeout | tee target/bench/timeout.txt
    OPGUARD_BENCH_OUT=target/bench/scale.md cargo test --bench scale -- --short
    # Two sizes, for the all-fire table's split into a fixed part and a part
    # per timeout, which a single size does not make.
    OPGUARD_SCALE_PARTS=fire OPGUARD_SCALE_N=2000,4000 OPGUARD_BENCH_OUT=target/bench/scale-fit.md \
        cargo test --bench scale -- --short
    python3 scripts/plot_scale.py target/bench/scale.csv target/bench/scale.svg
    OPGUARD_BENCH_OUT=target/bench/fire_timeline.md cargo test --bench fire_timeline -- --short
    OPGUARD_BENCH_OUT=target/bench/accuracy.md cargo test --bench accuracy -- --short
    OPGUARD_PATHS=pending OPGUARD_PATHS_N=1000 cargo test --bench paths
    cargo test --bench classify
    . scripts/torch-env.sh
    cargo test --features tch --bench safe_mps | tee target/bench/safe_mps.txt
    exit 0
fi

cargo bench --bench timeout | tee target/bench/timeout.txt
python3 scripts/bench_table.py "${CARGO_TARGET_DIR:-target}/criterion" > target/bench/timeout.md
OPGUARD_BENCH_OUT=target/bench/scale.md cargo bench --bench scale
python3 scripts/plot_scale.py target/bench/scale.csv target/bench/scale.svg
OPGUARD_BENCH_OUT=target/bench/fire_timeline.md cargo bench --bench fire_timeline
OPGUARD_TIMELINE_N=100000 OPGUARD_BENCH_OUT=target/bench/fire_timeline-100000.md \
    cargo bench --bench fire_timeline
OPGUARD_BENCH_OUT=target/bench/accuracy.md cargo bench --bench accuracy
cargo bench --bench classify | tee target/bench/classify.txt

. scripts/torch-env.sh
cargo bench --features tch --bench safe_mps | tee target/bench/safe_mps.txt
