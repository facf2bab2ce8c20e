#!/usr/bin/env bash
# Cache misses per timeout at scale, simulated by valgrind's cachegrind (the
# same on every run, unlike times): benches/scale.rs's finish-in-time case
# (or all-fire) on tokio current-thread, N tasks, two rounds, for the bare
# tasks, opguard and tokio's timeout; prints each timer's instructions, L1
# data misses and last-level data misses per timeout over the bare tasks.
#
#   bash scripts/scale_cachegrind.sh [finish|fire] [N]   (finish, 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-finish}
n=${2:-100000}
cargo bench --bench scale --no-run 2>/dev/null
bin=$(ls -t target/release/deps/scale-* | grep -v '\.d$' | head -1)
mkdir -p target/bench
for timer in bare opguard tokio; do
    OPGUARD_SCALE_ONE="$timer,$work,$n,2" valgrind --tool=cachegrind --cache-sim=yes \
        --cachegrind-out-file=/dev/null "$bin" >/dev/null 2>"target/bench/cachegrind-$timer.txt"
done
python3 - "$n" <<'PY'
import re, sys
per = 2 * int(sys.argv[1])  # two rounds
def load(timer):
    text = open(f"target/bench/cachegrind-{timer}.txt").read()
    get = lambda what: int(re.search(what + r":\s+([\d,]+)", text).group(1).replace(",", ""))
    return get(r"I\s+refs"), get(r"D1\s+misses"), get(r"LLd misses")
bare = load("bare")
print("| timer | instructions | L1 data misses | last-level data misses |")
print("|---|---:|---:|---:|")
for timer in ["opguard", "tokio"]:
    i, d1, ll = (x - b for x, b in zip(load(timer), bare))
    print(f"| {timer} | {i / per:.0f} | {d1 / per:.1f} | {ll / per:.2f} |")
PY
