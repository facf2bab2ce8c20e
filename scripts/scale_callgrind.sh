#!/usr/bin/env bash
# Where a timeout's cost goes at scale, in instructions (valgrind's
# callgrind: repeatable where times are not). Runs benches/scale.rs's
# finish-in-time case (or all-fire, or requests one at a time, 1 ms apart:
# paced) on tokio current-thread, N tasks, two rounds, for the bare tasks,
# opguard and tokio's timeout; prints each timer's instructions per timeout
# over the bare tasks, and the functions that make up the difference.
#
#   bash scripts/scale_callgrind.sh [finish|fire|paced] [N]   (finish, 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-finish}
n=${2:-20000}
cargo bench --bench scale --no-run 2>/dev/null
bin=$(ls -t target/release/deps/scale-* | grep -v '\.d$' | head -1)
mkdir -p target/bench
for timer in bare opguard tokio; do
    OPGUARD_SCALE_ONE="$timer,$work,$n,2" valgrind --tool=callgrind \
        --callgrind-out-file="target/bench/scale-$timer.callgrind" "$bin" >/dev/null 2>&1
    callgrind_annotate --inclusive=no --threshold=100 "target/bench/scale-$timer.callgrind" \
        2>/dev/null >"target/bench/scale-$timer.txt"
done
python3 - "$n" <<'EOF'
import re, sys
per = 2 * int(sys.argv[1])  # two rounds
def load(timer):
    d = {}
    for line in open(f"target/bench/scale-{timer}.txt"):
        m = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+(.*)", line)
        if not m or "PROGRAM TOTALS" in m.group(2):
            continue
        name = re.sub(r"^.*?:(?=[^/:]*::|[^/:]*$)", "", m.group(2).split(" [")[0])
        d[name] = d.get(name, 0) + int(m.group(1).replace(",", ""))
    return d
bare = load("bare")
for timer in ["opguard", "tokio"]:
    d = load(timer)
    total = (sum(d.values()) - sum(bare.values())) / per
    print(f"{timer}: {total:.0f} instructions per timeout over the bare tasks; the largest parts:")
    diffs = sorted(((d.get(k, 0) - bare.get(k, 0)) / per, k) for k in set(d) | set(bare))
    for v, k in reversed(diffs[-14:]):
        print(f"  {v:7.0f}  {k[:110]}")
EOF
