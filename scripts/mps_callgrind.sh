#!/usr/bin/env bash
# Instructions per call of safe_mps!'s own work, and of the 64x64 matmul it
# guards, counted by valgrind's callgrind (repeatable where times are not).
# Each case is an #[inline(never)] function in benches/safe_mps.rs, called N
# times; the count is its inclusive cost (everything executed inside it and
# what it calls), divided by N.
#
#   bash scripts/mps_callgrind.sh [N]      (N defaults to 2000)
#
# OPGUARD_EXTRA_FEATURES=metrics counts a build with the `metrics` feature too.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/torch-env.sh
n=${1:-2000}
bin=$(bash scripts/bench_bin.sh safe_mps --features "tch${OPGUARD_EXTRA_FEATURES:+,$OPGUARD_EXTRA_FEATURES}")
out=target/bench/callgrind.out
mkdir -p target/bench
OPGUARD_CALLGRIND_CALLS=$n valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$bin" >/dev/null 2>&1
callgrind_annotate --inclusive=yes --threshold=100 "$out" 2>/dev/null | python3 -c '
import re, sys
n = int(sys.argv[1])
cases = {
    "safe_mps::bare_matmul": "bare 64x64 matmul",
    "safe_mps::admitted": "safe_mps!, MPS admitted (no-op work)",
    "safe_mps::admitted_word": "safe_mps!, MPS admitted, one-word result",
    "safe_mps::on_cpu": "safe_mps!, work named for CPU (no-op work)",
    "safe_mps::probed_on_cpu": "safe_mps!, tensor form, tensor on CPU (no-op)",
    "safe_mps::pinned_call": "safe_mps!, call site pinned (no-op work)",
    "safe_mps::while_disabled": "safe_mps!, MPS disabled (no-op work)",
}
found = {}
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+)\s+\(.*?\)\s+\S*:?(safe_mps::\w+)\b", line) or re.match(r"\s*([\d,]+)\s+.*?(safe_mps::\w+)\b", line)
    if m and m.group(2) in cases and m.group(2) not in found:
        found[m.group(2)] = int(m.group(1).replace(",", ""))
matmul = found.get("safe_mps::bare_matmul")
for fn, name in cases.items():
    if fn in found:
        per = found[fn] / n
        share = f"  ({100 * per / (matmul / n):.2f} % of the matmul)" if matmul and fn != "safe_mps::bare_matmul" else ""
        print(f"{name:44} {per:12.0f} instructions per call{share}")
' "$n"
