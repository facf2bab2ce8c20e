#!/usr/bin/env bash
# The accuracy bench with Linux's timer slack set to SLACK ns (1 unless
# given) for the whole process: a thread that sleeps with a timeout, as
# futures-timer's helper does, may wake up to its slack late (50 µs by
# default), and a new thread inherits the slack of the thread that starts
# it. Set before the bench starts, through prctl(PR_SET_TIMERSLACK), so
# that futures-timer's thread, started later, has it too. Linux only.
#
#   bash scripts/accuracy_slack.sh [SLACK] [bench options, e.g. --short]
set -euo pipefail
cd "$(dirname "$0")/.."
slack=${1:-1}
shift || true
bin=$(bash scripts/bench_bin.sh accuracy)
export OPGUARD_BENCH_OUT=${OPGUARD_BENCH_OUT:-target/bench-accuracy-slack.md}
# PR_SET_TIMERSLACK is 29 (linux/prctl.h).
exec python3 -c '
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(29, int(sys.argv[1]), 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_TIMERSLACK): " + os.strerror(ctypes.get_errno()))
os.execv(sys.argv[2], sys.argv[2:])
' "$slack" "$bin" "$@"
