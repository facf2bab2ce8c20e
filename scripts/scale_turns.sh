#!/usr/bin/env bash
# The scale bench's finish-in-time rounds as the full bench runs them: the
# bare tasks, opguard and tokio's timeout taking turns in one process, on
# tokio current-thread, N tasks a round. First at full speed, each round's
# wall time and page faults; then under valgrind's callgrind with its cache
# simulator (a last-level cache the size of this machine's, 32 MiB if it
# cannot be read), each round's instructions and simulated cache misses, per
# timeout, averaged over each timer's rounds after its first. The counts say
# what each timer's rounds do in a process shared with the others, where
# times say what they cost.
#
#   bash scripts/scale_turns.sh [N] [rounds]   (100000, 3)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
rounds=${2:-3}
bin=$(bash scripts/bench_bin.sh scale)
turns=bare+opguard+tokio
out=target/bench/turns
mkdir -p "$out"
rm -f "$out"/turns.callgrind*
echo "at full speed, $n tasks a round (wall time, page faults):"
OPGUARD_SCALE_ONE="$turns,finish,$n,$rounds" "$bin" 2>&1 >/dev/null | sed 's/^/  /'
ll=$(cat /sys/devices/system/cpu/cpu0/cache/index3/size 2>/dev/null || echo 32768K)
case $ll in
*K) ll=$((${ll%K} * 1024)) ;;
*M) ll=$((${ll%M} * 1024 * 1024)) ;;
esac
# A dump before each round's `block_on`: the first file is the setup, each
# later one a round, the last (no number) the last round.
OPGUARD_SCALE_ONE="$turns,finish,$n,$rounds" valgrind --tool=callgrind --cache-sim=yes \
    --LL="$ll,16,64" "--dump-before=*CurrentThread::block_on*" \
    --callgrind-out-file="$out/turns.callgrind" "$bin" >/dev/null 2>&1
python3 - "$out" "$n" "$turns" "$ll" <<'EOF'
import glob, re, subprocess, sys
out, n, turns, ll = sys.argv[1], int(sys.argv[2]), sys.argv[3].split("+"), int(sys.argv[4])
def totals(path):
    text = subprocess.run(["callgrind_annotate", path], capture_output=True, text=True).stdout
    events = re.search(r"Events recorded:\s+(.*)", text).group(1).split()
    line = next(l for l in text.splitlines() if "PROGRAM TOTALS" in l)
    values = [int(v.replace(",", "")) for v in re.findall(r"([\d,]+) \(", line)]
    return dict(zip(events, values))
numbered = sorted(glob.glob(f"{out}/turns.callgrind.*"), key=lambda p: int(p.rsplit(".", 1)[1]))
rounds = [totals(p) for p in numbered[1:]] + [totals(f"{out}/turns.callgrind")]
per = {t: [] for t in turns}
for i, r in enumerate(rounds):
    per[turns[i % len(turns)]].append(r)
print(f"under callgrind, per task, each timer's rounds after its first (last-level cache {ll >> 20} MiB):")
print(f"  {'':8} {'instructions':>12} {'L1 data misses':>15} {'last-level misses':>18}")
for t in turns:
    rs = per[t][1:] or per[t]
    mean = lambda k: sum(r.get(k, 0) for r in rs) / len(rs) / n
    print(f"  {t:8} {mean('Ir'):12.0f} {mean('D1mr') + mean('D1mw'):15.2f} {mean('DLmr') + mean('DLmw'):18.2f}")
EOF
