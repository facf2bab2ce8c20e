#!/usr/bin/env python3
"""CPU per timeout at scale, measured in separate processes taken in turn.

The full scale bench runs every timer in one process, where each timer's
rounds inherit the heap the others left; these machines are also shared, so
two runs of one build differ by more than most changes do. This script runs
benches/scale.rs's single-timer mode (`OPGUARD_SCALE_ONE`: finish in time on
tokio's current-thread runtime, with `--work innerK` an inner future K bytes
larger) in a fresh process per timer, alternating
bare, opguard and tokio (and, given several binaries, the binaries too), and
reports the median CPU time (user + system, of the whole process) of each,
and each timer's overhead per timeout over the bare tasks.

    python3 scripts/scale_alternate.py                      # this build
    python3 scripts/scale_alternate.py OLD_BIN NEW_BIN      # two builds
    python3 scripts/scale_alternate.py --tunables glibc.malloc.mxfast=0
    python3 scripts/scale_alternate.py --preload /usr/lib/x86_64-linux-gnu/libjemalloc.so.2
    python3 scripts/scale_alternate.py --work inner64     # a larger inner future

A binary is the scale bench's executable (`bash scripts/bench_bin.sh scale`
prints this build's). `--tunables` sets GLIBC_TUNABLES for every process,
to see how much of a difference is glibc's malloc: heap trimming
(`glibc.malloc.trim_threshold`) and fast bins (`glibc.malloc.mxfast`)
decide much of it. `--preload` puts another allocator in every process
(Debian's libjemalloc2 and libtcmalloc-minimal4, say, through LD_PRELOAD).
Standard library only.
"""

import argparse
import os
import statistics
import subprocess
import sys

TIMERS = ("bare", "opguard", "tokio")


def cpu_of(binary: str, timer: str, args: argparse.Namespace) -> float:
    env = dict(os.environ)
    env["OPGUARD_SCALE_ONE"] = f"{timer},{args.work},{args.n},{args.rounds}"
    env["OPGUARD_SCALE_THREADED"] = "1"
    if args.tunables:
        env["GLIBC_TUNABLES"] = args.tunables
    if args.preload:
        env["LD_PRELOAD"] = args.preload
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{binary} ({timer}) failed: status {status}")
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("binaries", nargs="*", help="scale bench executables (default: this build's)")
    p.add_argument("--n", type=int, default=100_000, help="timeouts per round (100000)")
    p.add_argument("--work", default="finish",
                   help="finish (default), or innerK: finish in time with K more bytes of "
                        "inner future state (K one of the bench's inner sizes)")
    p.add_argument("--rounds", type=int, default=10, help="rounds per process (10)")
    p.add_argument("--reps", type=int, default=7, help="processes per timer and binary (7)")
    p.add_argument("--tunables", default="", help="GLIBC_TUNABLES for every process")
    p.add_argument("--preload", default="", help="LD_PRELOAD for every process (another malloc)")
    args = p.parse_args()
    binaries = args.binaries
    if not binaries:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(
            ["bash", os.path.join(here, "bench_bin.sh"), "scale"],
            check=True, capture_output=True, text=True,
        ).stdout.split()
        if not out:
            sys.exit("could not build or find the scale bench")
        binaries = out[-1:]
    cpu = {(b, t): [] for b in binaries for t in TIMERS}
    for _ in range(args.reps):
        for b in binaries:
            for t in TIMERS:
                cpu[(b, t)].append(cpu_of(b, t, args))
    per = args.n * args.rounds
    print(f"{args.work}: {args.n} timeouts x {args.rounds} rounds per process, "
          f"{args.reps} processes each"
          + (f", GLIBC_TUNABLES={args.tunables}" if args.tunables else "")
          + (f", LD_PRELOAD={args.preload}" if args.preload else ""))
    for b in binaries:
        med = {t: statistics.median(cpu[(b, t)]) for t in TIMERS}
        over = {t: (med[t] - med["bare"]) / per * 1e9 for t in TIMERS[1:]}
        spread = min(cpu[(b, "bare")]), max(cpu[(b, "bare")])
        ratio = over["opguard"] / over["tokio"] if over["tokio"] else float("nan")
        print(f"{b}: bare {med['bare']:.3f} s (from {spread[0]:.3f} to {spread[1]:.3f}), "
              f"opguard {over['opguard']:+.0f} ns, tokio {over['tokio']:+.0f} ns per timeout, "
              f"opguard / tokio {ratio:.2f}x")


if __name__ == "__main__":
    main()
