#!/usr/bin/env bash
# Cache misses per timeout at scale, simulated by valgrind's cachegrind (the
# same on every run, unlike times): benches/scale.rs's finish-in-time case
# (or all-fire) on tokio current-thread, N tasks, two rounds, for the bare
# tasks, opguard and tokio's timeout; prints each timer's instructions, L1
# data misses, last-level data misses and mispredicted branches (cachegrind's
# simulated predictor) per timeout over the bare tasks,
# then where each timer's extra data misses happen, by the code that
# misses: the task copied into its cell at spawn, malloc and free, the
# runtime, the task's own polls (the timeout future inlined in them),
# opguard's timer, tokio's timer.
#
#   bash scripts/scale_cachegrind.sh [finish|fire] [N]   (finish, 100000)
#
# The simulated last-level cache is 32 MB, 16-way (33554432,16,64: the L3
# that lscpu shows on these machines), as in BENCHMARKS.md:
# OPGUARD_CACHEGRIND_LL=size,associativity,line sets another, and an empty
# value lets cachegrind take it from what the machine reports, which on these
# virtual machines is not the real L3 (256 MB on one day, 512 MB on another,
# where even a million tasks fit).
set -euo pipefail
cd "$(dirname "$0")/.."
OPGUARD_CACHEGRIND_LL=${OPGUARD_CACHEGRIND_LL-33554432,16,64}
work=${1:-finish}
n=${2:-100000}
bin=$(bash scripts/bench_bin.sh scale)
mkdir -p target/bench
for timer in bare opguard tokio; do
    OPGUARD_SCALE_ONE="$timer,$work,$n,2" valgrind --tool=cachegrind ${OPGUARD_CACHEGRIND_LL:+--LL=$OPGUARD_CACHEGRIND_LL} --cache-sim=yes --branch-sim=yes \
        --cachegrind-out-file="target/bench/cachegrind-$timer.out" "$bin" \
        >/dev/null 2>"target/bench/cachegrind-$timer.txt"
    cg_annotate --auto=no --show=DLmr,DLmw,D1mr,D1mw --sort=DLmr,DLmw,D1mr,D1mw --threshold=0 \
        "target/bench/cachegrind-$timer.out" >"target/bench/cachegrind-$timer-by-function.txt"
done
python3 - "$n" <<'PY'
import re, sys
per = 2 * int(sys.argv[1])  # two rounds
def load(timer):
    text = open(f"target/bench/cachegrind-{timer}.txt").read()
    get = lambda what: int(re.search(what + r":\s+([\d,]+)", text).group(1).replace(",", ""))
    return get(r"I\s+refs"), get(r"D1\s+misses"), get(r"LLd misses"), get(r"Mispredicts")
bare = load("bare")
print("| timer | instructions | L1 data misses | last-level data misses | mispredicted branches |")
print("|---|---:|---:|---:|---:|")
for timer in ["opguard", "tokio"]:
    i, d1, ll, mp = (x - b for x, b in zip(load(timer), bare))
    print(f"| {timer} | {i / per:.0f} | {d1 / per:.1f} | {ll / per:.2f} | {mp / per:.2f} |")

def part(name):
    if "memcpy" in name or "Cell<T,S>::new" in name:
        return "spawn: the task copied into its cell"
    if re.search(r"malloc|free|unlink_chunk|memalign", name):
        return "malloc and free"
    if "scale::" in name:
        return "the task's polls"
    if "opguard::" in name:
        return "opguard's timer"
    if "tokio::runtime::time" in name or "tokio::time" in name:
        return "tokio's timer"
    if "tokio::" in name:
        return "tokio's runtime"
    return "other"
num = r"([\d,]+)(?:\s+\([^)]*\))?\s+"
row = re.compile(r"^\s*" + num * 4 + r"(\S.*)$")
def by_part(timer):
    d = {}
    for line in open(f"target/bench/cachegrind-{timer}-by-function.txt"):
        if "Auto-annotated source" in line:
            break
        m = row.match(line)
        if not m or "TOTALS" in m.group(5):
            continue
        v = [int(m.group(i).replace(",", "")) for i in range(1, 5)]
        p = part(m.group(5))
        d[p] = [a + b for a, b in zip(d.get(p, [0] * 4), v)]
    return d
base = by_part("bare")
for timer in ["opguard", "tokio"]:
    d = by_part(timer)
    print(f"\n{timer}: data misses per timeout over the bare tasks, by where they happen")
    print("| part | last-level, read | last-level, write | L1, read | L1, write |")
    print("|---|---:|---:|---:|---:|")
    for p in sorted(set(d) | set(base)):
        x = [(a - b) / per for a, b in zip(d.get(p, [0] * 4), base.get(p, [0] * 4))]
        if max(abs(v) for v in x) >= 0.05:
            print(f"| {p} | " + " | ".join(f"{v:.2f}" for v in x) + " |")
PY
