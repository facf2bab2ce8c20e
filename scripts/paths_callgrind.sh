#!/usr/bin/env bash
# Instructions per call of timeout_async!'s ready and pending paths (and of
# the bare future), counted by valgrind's callgrind, which repeats exactly
# from run to run: for the default build and with the test-util and tokio
# features, to show what those features add when their clocks are not used.
#
#   bash scripts/paths_callgrind.sh [N]   (N calls per path, 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000}
count() { # binary path calls -> instructions
    OPGUARD_PATHS=$2 OPGUARD_PATHS_N=$3 valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        "$1" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
printf '| build | bare ready | opguard ready | bare pending | opguard pending |\n|---|---:|---:|---:|---:|\n'
for features in "" "test-util" "tokio" "test-util,tokio"; do
    bin=$(bash scripts/bench_bin.sh paths --no-default-features --features "$features")
    row="| ${features:-default} |"
    for path in bare-ready ready bare-pending pending; do
        base=$(count "$bin" "$path" 0)
        full=$(count "$bin" "$path" "$n")
        row="$row $(python3 -c "print(f'{($full - $base) / $n:.1f}')") |"
    done
    echo "$row"
done
