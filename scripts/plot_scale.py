#!/usr/bin/env python3
"""Plots benches/scale.rs's CSV: overhead per timeout over the bare tasks
against the number of concurrent timeouts (log scale), one panel for
timeouts that finish in time and one for timeouts that all fire; opguard
solid, the other timer on the same executor dashed. Standard library only.

    python3 scripts/plot_scale.py target/bench/scale.csv docs/scale.svg
"""

import csv
import math
import sys

PANEL_W, H = 380, 400
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 50, 150
COLOURS = {
    "tokio-current": "#1f77b4",
    "tokio-multi-outside": "#2ca02c",
    "tokio-multi-inside": "#9467bd",
    "smol": "#d62728",
}
NAMES = {
    "tokio-current": "tokio current-thread",
    "tokio-multi-outside": "tokio multi-thread, spawned from outside",
    "tokio-multi-inside": "tokio multi-thread, spawned from a task",
    "smol": "smol",
}
PANELS = [("Finish", "finish in time (30 s)"), ("Fire", "all fire (50 ms)")]


def main(src: str, dst: str) -> None:
    # (table, executor, timer) -> [(n, ns)]
    series: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    with open(src, newline="") as f:
        for row in csv.DictReader(f):
            if row["table"] not in dict(PANELS):
                continue
            key = (row["table"], row["executor"], row["timer"])
            series.setdefault(key, []).append((int(row["timeouts"]), float(row["value"])))
    if not series:
        sys.exit(f"{src}: no rows")
    ns_all = [v for pts in series.values() for _, v in pts]
    n_all = sorted({n for pts in series.values() for n, _ in pts})
    y_max = max(100.0, math.ceil(max(ns_all) / 100) * 100)
    y_min = min(0.0, math.floor(min(ns_all) / 100) * 100)
    x0, x1 = math.log10(n_all[0]), math.log10(n_all[-1])
    if x0 == x1:
        x0, x1 = x0 - 0.5, x1 + 0.5
    width = PANEL_W * len(PANELS)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{H}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{H}" fill="white"/>',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">'
        "Overhead per timeout over the bare tasks (lower is better)</text>",
    ]
    for p, (table, title) in enumerate(PANELS):
        ox = p * PANEL_W

        def x(n: float) -> float:
            return ox + LEFT + (math.log10(n) - x0) / (x1 - x0) * (PANEL_W - LEFT - RIGHT)

        def y(v: float) -> float:
            return H - BOTTOM - (v - y_min) / (y_max - y_min) * (H - TOP - BOTTOM)

        out.append(f'<text x="{ox + (LEFT + PANEL_W - RIGHT) / 2}" y="{TOP - 10}" text-anchor="middle">{title}</text>')
        step = 100 if y_max - y_min <= 1000 else 200
        v = y_min
        while v <= y_max:
            out.append(f'<line x1="{ox + LEFT}" y1="{y(v):.1f}" x2="{ox + PANEL_W - RIGHT}" y2="{y(v):.1f}" stroke="{"#999" if v == 0 else "#eee"}"/>')
            out.append(f'<text x="{ox + LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g} ns</text>')
            v += step
        for n in n_all:
            out.append(f'<text x="{x(n):.1f}" y="{H - BOTTOM + 18}" text-anchor="middle">{n:,}</text>'.replace(",", " "))
        out.append(f'<text x="{ox + (LEFT + PANEL_W - RIGHT) / 2}" y="{H - BOTTOM + 36}" text-anchor="middle">concurrent timeouts (log scale)</text>')
        for (tab, executor, timer), pts in series.items():
            if tab != table:
                continue
            colour = COLOURS.get(executor, "#444")
            pts.sort()
            dash = "" if timer == "opguard" else ' stroke-dasharray="6 4"'
            path = " ".join(f"{x(n):.1f},{y(v):.1f}" for n, v in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
            for n, v in pts:
                out.append(f'<circle cx="{x(n):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}"/>')
    # The legend, under both panels.
    ly = H - BOTTOM + 60
    for i, (executor, colour) in enumerate(COLOURS.items()):
        lx = LEFT + (i % 2) * 340
        yy = ly + (i // 2) * 20
        out.append(f'<line x1="{lx}" y1="{yy}" x2="{lx + 24}" y2="{yy}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{lx + 30}" y="{yy + 4}">{NAMES[executor]}</text>')
    yy = ly + 50
    out.append(f'<line x1="{LEFT}" y1="{yy}" x2="{LEFT + 24}" y2="{yy}" stroke="#444" stroke-width="2"/>')
    out.append(f'<text x="{LEFT + 30}" y="{yy + 4}">opguard</text>')
    out.append(f'<line x1="{LEFT + 340}" y1="{yy}" x2="{LEFT + 364}" y2="{yy}" stroke="#444" stroke-width="2" stroke-dasharray="6 4"/>')
    out.append(f'<text x="{LEFT + 370}" y="{yy + 4}">tokio::time::timeout (futures-time on smol)</text>')
    out.append("</svg>")
    with open(dst, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
