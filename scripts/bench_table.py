#!/usr/bin/env python3
"""Turns criterion's results for benches/timeout.rs into BENCHMARKS.md's
table: median per call, and the ratios that the performance goals name.

    python3 scripts/bench_table.py target/criterion > target/bench/timeout.md
"""

import json
import sys
from pathlib import Path

EXECUTORS = [
    ("tokio_task", "tokio, spawned task (current-thread)"),
    ("tokio", "tokio `block_on` (current-thread)"),
    ("smol", "smol `block_on`"),
    ("futures", "futures `block_on`"),
]
COLUMNS = [
    ("bare", "bare"),
    ("opguard", "**opguard**"),
    ("tokio_timeout", "`tokio::time::timeout`"),
    ("async_io_or", "async-io `Timer` + `or`"),
    ("futures_time", "futures-time `timeout`"),
    ("futures_timer_eager", "futures-timer `Delay` up front"),
]


def median(root: Path, group: str, name: str) -> float | None:
    f = root / group / name / "new" / "estimates.json"
    if not f.exists():
        return None
    return json.loads(f.read_text())["median"]["point_estimate"]


def ns(v: float | None) -> str:
    if v is None:
        return ""
    if v >= 1000:
        return f"{v:,.0f} ns".replace(",", " ")
    return f"{v:.1f} ns" if v < 100 else f"{v:.0f} ns"


def main(root: Path) -> None:
    print("| path | executor | " + " | ".join(c[1] for c in COLUMNS) + " | opguard vs bare | opguard's overhead vs tokio's |")
    print("|---|---|" + "---:|" * (len(COLUMNS) + 2))
    for path, label in (("ready", "ready"), ("pending_once", "pending once")):
        for key, exec_label in EXECUTORS:
            group = f"{path}_{key}"
            v = {c: median(root, group, c) for c, _ in COLUMNS}
            if v["bare"] is None or v["opguard"] is None:
                continue
            bare, ours, tokio = v["bare"], v["opguard"], v["tokio_timeout"]
            ratio = f"{ours / bare:.2f}x"
            if tokio is not None and tokio > bare:
                vs_tokio = f"+{ours - bare:.0f} vs +{tokio - bare:.0f} ns: {(ours - bare) / (tokio - bare):.2f}x"
            else:
                vs_tokio = ""
            cells = [ns(v[c]) for c, _ in COLUMNS]
            cells[1] = f"**{cells[1]}**"
            print(f"| {label} | {exec_label} | " + " | ".join(cells) + f" | {ratio} | {vs_tokio} |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
