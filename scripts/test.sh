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

echo "== panic = \"abort\" (profile panic-abort): the f_ methods fall back; a plain method's MPS panic ends the process, printed"
cargo run --quiet --features tch --profile panic-abort --example panic_abort >/dev/null
set +e
out=$(cargo run --quiet --features tch --profile panic-abort --example panic_abort -- plain 2>&1)
rc=$?
set -e
if [ "$rc" -eq 0 ]; then
    echo "the plain method ran on MPS (this machine has it): nothing to check"
elif [ "$rc" -ne 134 ] || ! grep -q "panicked at" <<<"$out" || ! grep -qi "mps" <<<"$out"; then
    echo "expected an abort (134) with the panic's message printed, got $rc:"
    tail -n 20 <<<"$out"
    exit 1
fi

echo "== all features (tch, metrics), real libtorch"
cargo test --all-features
