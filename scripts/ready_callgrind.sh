#!/usr/bin/env bash
# Instructions per iteration of the ready path in benches/timeout.rs, in
# criterion's own loop on each executor, counted by valgrind's callgrind
# (the same on every run, where the times in that bench move by a
# nanosecond or two between runs). Each variant runs under criterion's
# --profile-time, and scripts/callgrind_instr.py divides the run by its
# loop's iterations (criterion's own setup, spread over millions of them,
# adds a few hundredths).
#
#   bash scripts/ready_callgrind.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(bash scripts/bench_bin.sh timeout)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
per_iteration() { # bench id -> instructions per iteration
    valgrind --tool=callgrind --dump-instr=yes --callgrind-out-file="$out/cg" \
        "$bin" --bench "^$1\$" --profile-time 2 >/dev/null 2>&1
    python3 scripts/callgrind_instr.py per-iteration "$out/cg"
}
printf '| executor | bare | opguard | opguard - bare | opguard / bare |\n|---|---:|---:|---:|---:|\n'
for exec in tokio_task tokio smol futures; do
    bare=$(per_iteration "ready/$exec/bare")
    opguard=$(per_iteration "ready/$exec/opguard")
    python3 -c "b, o = $bare, $opguard; print(f'| $exec | {b:.1f} | {o:.1f} | {o - b:+.1f} | {o / b:.2f}x |')"
done
