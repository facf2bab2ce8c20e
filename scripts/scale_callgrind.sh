#!/usr/bin/env bash
# Where a timeout's cost goes at scale, in instructions (valgrind's
# callgrind: repeatable where times are not). Runs benches/scale.rs's
# finish-in-time case (or all-fire, or requests one at a time, 1 ms apart:
# paced) on tokio current-thread, N tasks, two rounds, for the bare tasks,
# opguard and tokio's timeout; prints each timer's instructions per timeout
# over the bare tasks, and the functions that make up the difference; then
# the atomic read-modify-writes among them (scripts/callgrind_instr.py),
# which cost more than their count of instructions says. Every run has a
# second thread, as the full bench does (futures-timer's); a last run of the
# bare tasks without it says what that costs by itself: glibc's malloc and
# free take their locking paths once a process has a second thread.
#
#   bash scripts/scale_callgrind.sh [finish|fire|paced] [N]   (finish, 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-finish}
n=${2:-20000}
bin=$(bash scripts/bench_bin.sh scale)
mkdir -p target/bench
for run in bare opguard tokio bare-alone; do
    timer=${run%-alone}
    threaded=1
    [ "$run" = bare-alone ] && threaded=0
    OPGUARD_SCALE_THREADED=$threaded OPGUARD_SCALE_ONE="$timer,$work,$n,2" valgrind --tool=callgrind --dump-instr=yes \
        --callgrind-out-file="target/bench/scale-$run.callgrind" "$bin" >/dev/null 2>&1
    callgrind_annotate --inclusive=no --threshold=100 "target/bench/scale-$run.callgrind" \
        2>/dev/null >"target/bench/scale-$run.txt"
    python3 scripts/callgrind_instr.py atomics "target/bench/scale-$run.callgrind" >"target/bench/scale-$run.atomics.json"
done
python3 - "$n" <<'EOF'
import json, re, sys
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
def over_bare(d, b):
    """Per timeout: the total over the bare tasks, and each function's part, largest first."""
    parts = sorted((((d.get(k, 0) - b.get(k, 0)) / per, k) for k in set(d) | set(b)), reverse=True)
    return (sum(d.values()) - sum(b.values())) / per, parts
def atomics(run):
    return json.load(open(f"target/bench/scale-{run}.atomics.json"))
bare, bare_atomics = load("bare"), atomics("bare")
for timer in ["opguard", "tokio"]:
    total, parts = over_bare(load(timer), bare)
    print(f"{timer}: {total:.0f} instructions per timeout over the bare tasks; the largest parts:")
    for v, k in parts[:14]:
        print(f"  {v:7.0f}  {k[:110]}")
for timer in ["opguard", "tokio"]:
    total, parts = over_bare(atomics(timer), bare_atomics)
    print(f"{timer}: {total:.2f} atomic read-modify-writes per timeout over the bare tasks:")
    for v, k in parts:
        if abs(v) >= 0.05:
            print(f"  {v:7.2f}  {k[:110]}")
instructions, _ = over_bare(bare, load("bare-alone"))
rmw, _ = over_bare(bare_atomics, atomics("bare-alone"))
print(f"the bare tasks with a second thread in the process, against without: "
      f"{instructions:+.0f} instructions and {rmw:+.2f} atomic read-modify-writes per task")
EOF
