#!/usr/bin/env bash
# Miri over the code without libtorch: the timeout future and shared timer,
# the registry's breaker, the classifier, the duration rules. Needs the
# nightly toolchain with its miri component (installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup component add --toolchain nightly miri rust-src >/dev/null 2>&1 || true
cargo +nightly miri setup >/dev/null
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation}"
cargo +nightly miri test --lib
cargo +nightly miri test --test executors futures_block_on
cargo +nightly miri test --test mps_errors -- --skip megabyte
