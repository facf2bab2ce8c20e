#!/usr/bin/env bash
# The whole test suite: the default build, then every feature against real
# libtorch (installed on first use into ~/.cache/opguard), then the examples.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== default features (no libtorch)"
cargo test

. scripts/torch-env.sh

echo "== examples"
for example in quickstart trading_loops api_calls; do
    cargo run --quiet --example "$example" >/dev/null
done
for example in training_loop a3c feature_engineering data_preprocessing async_tensors; do
    cargo run --quiet --features tch --example "$example" >/dev/null
done
echo "all examples ran"

echo "== all features (tch, metrics), real libtorch"
cargo test --all-features
