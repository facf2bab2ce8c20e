#!/usr/bin/env bash
# The CUDA tests (tests/cuda.rs): on a machine with an NVIDIA GPU, a CUDA
# tensor stands in for an MPS one, and these check that tensors, models and
# gradients really reach CPU on a fallback. Without a GPU they are ignored by
# `cargo test`; this runs them, and fails when CUDA is missing.
#
#   bash scripts/cuda-check.sh
#
# tch links libtorch_cuda only when the final binary asks for it (the linker
# drops it otherwise, and tch::Cuda::is_available() says false), so the test
# binary is linked with it explicitly. The explicit --target keeps those
# flags off build scripts and proc macros (its own target dir, a first build
# of a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/torch-env.sh
host=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-C link-arg=-Wl,--no-as-needed -C link-arg=-ltorch_cuda -C link-arg=-Wl,--as-needed" \
    cargo test --target "$host" --features tch --test cuda -- --ignored --test-threads=1
