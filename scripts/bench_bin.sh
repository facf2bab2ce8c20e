#!/usr/bin/env bash
# Builds one bench (release, as `cargo bench` does) and prints the path of
# its executable, for the scripts that run it under valgrind or objdump:
#
#   bash scripts/bench_bin.sh NAME [cargo options, e.g. --features tokio]
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1
shift
# A build that fails is built again with its errors shown, rather than
# printing no path.
if ! json=$(cargo bench --bench "$name" --no-run --message-format=json "$@" 2>/dev/null); then
    cargo bench --bench "$name" --no-run "$@" >&2 || true
    echo "bench_bin.sh: the bench $name did not build" >&2
    exit 1
fi
printf '%s\n' "$json" | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$name"
