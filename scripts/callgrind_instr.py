"""What a callgrind run executed, instruction by instruction.

    python3 scripts/callgrind_instr.py atomics RUN.callgrind
    python3 scripts/callgrind_instr.py per-iteration RUN.callgrind

RUN.callgrind must come from `valgrind --tool=callgrind --dump-instr=yes`.

`atomics`: the atomic read-modify-writes executed, by function. Each
executed instruction's address is looked up in its object's machine code
(objdump); an instruction with a `lock` prefix, or an `xchg` with memory
(locked without one), is an atomic read-modify-write: what an `Arc` clone
or drop, a mutex's lock and unlock, a waker's clone and drop cost beyond
their instructions. Prints a JSON object: the count per function. Code without a file to read (the vDSO) is skipped: it has none.

`per-iteration`: for a run that is mostly one loop, each of whose
instructions runs once per iteration: the count of the most executed
instruction is the number of iterations, and the run's instructions over it
the cost of one. Prints that number.
"""

import collections
import json
import re
import subprocess
import sys


def executed(path):
    """{(object, function): {address: count}} from a callgrind file."""
    objects, functions = {}, {}
    counts = collections.defaultdict(collections.Counter)
    obj = fn = None
    last = 0
    after_call = False

    def name(table, line):
        m = re.match(r"^\w+=\((\d+)\)(?: (.*))?", line)
        if m.group(2):
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1), m.group(1))

    for line in open(path):
        if line.startswith("ob="):
            obj = name(objects, line)
        elif line.startswith("cob="):
            name(objects, line)
        elif line.startswith("fn="):
            fn = name(functions, line)
        elif line.startswith("cfn="):
            name(functions, line)
        elif line.startswith("calls="):
            after_call = True  # the next line is the call's inclusive cost
        elif line[:1] and line[0] in "+-*0123456789":
            tok = line.split()
            a = tok[0]
            if a == "*":
                addr = last
            elif a[0] == "+":
                addr = last + int(a[1:], 0)
            elif a[0] == "-":
                addr = last - int(a[1:], 0)
            else:
                addr = int(a, 0)
            last = addr
            if after_call:
                after_call = False
            elif len(tok) >= 3:
                counts[(obj, fn)][addr] += int(tok[2])
    return counts


def atomic_addresses(obj):
    """Addresses of the atomic read-modify-writes in an object's code."""
    try:
        out = subprocess.run(
            ["objdump", "-d", "--no-show-raw-insn", "-M", "intel", obj],
            capture_output=True, text=True, check=True,
        ).stdout
    except (subprocess.CalledProcessError, FileNotFoundError):
        return set()
    found = set()
    for line in out.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+(.*)", line)
        if not m:
            continue
        text = m.group(2)
        if text.startswith("lock ") or (text.startswith("xchg ") and "PTR" in text):
            found.add(int(m.group(1), 16))
    return found


def atomics(counts):
    known = {}
    per_fn = collections.Counter()
    for (obj, fn), by_addr in counts.items():
        if obj not in known:
            known[obj] = atomic_addresses(obj) if obj and obj.startswith("/") else set()
        n = sum(c for a, c in by_addr.items() if a in known[obj])
        if n:
            per_fn[fn] += n
    print(json.dumps(per_fn))


def per_iteration(counts):
    by_addr = collections.Counter()
    for (obj, _), addrs in counts.items():
        for addr, n in addrs.items():
            by_addr[(obj, addr)] += n
    print(f"{sum(by_addr.values()) / by_addr.most_common(1)[0][1]:.1f}")


what, path = sys.argv[1:3]
{"atomics": atomics, "per-iteration": per_iteration}[what](executed(path))
