#!/usr/bin/env bash
# Builds one bench (release, as `cargo bench` does) and prints the path of
# its executable, for the scripts that run it under valgrind or objdump:
#
#   bash scripts/bench_bin.sh NAME [cargo options, e.g. --features tokio]
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1
shift
cargo bench --bench "$name" --no-run --message-format=json "$@" 2>/dev/null \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$name"
