#!/usr/bin/env bash
# The main demo: a small tch model trained under timeout_async!, with its
# tensor work under safe_mps!, on real libtorch (installed on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/torch-env.sh
cargo run --features tch --example training_loop
