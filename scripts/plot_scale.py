#!/usr/bin/env python3
"""Plots benches/scale.rs's CSV: wall time against the number of concurrent
timeouts, both on log scales, one line per timer and executor. Half the
timeouts fire after 100 ms, so no run is shorter than that; past it, a
slope of one is linear cost. Standard library only.

    python3 scripts/plot_scale.py target/bench/scale.csv docs/scale.svg
"""

import csv
import math
import sys

W, H = 720, 380
LEFT, RIGHT, TOP, BOTTOM = 85, 240, 40, 50
COLOURS = ["#1f77b4", "#2ca02c", "#9467bd", "#d62728", "#ff7f0e", "#8c564b"]


def main(src: str, dst: str) -> None:
    series: dict[str, list[tuple[int, float]]] = {}
    with open(src, newline="") as f:
        for row in csv.DictReader(f):
            n = int(row["timeouts"])
            ms = float(row["wall_ms"])
            series.setdefault(f'{row["timer"]} on {row["executor"]}', []).append((n, ms))
    if not series:
        sys.exit(f"{src}: no rows")
    ms_all = [ms for pts in series.values() for _, ms in pts]
    n_all = [n for pts in series.values() for n, _ in pts]
    x0, x1 = math.log10(min(n_all)), math.log10(max(n_all))
    if x0 == x1:
        x0, x1 = x0 - 0.5, x1 + 0.5
    # Whole decades of milliseconds around the data.
    y0 = math.floor(math.log10(min(ms_all)))
    y1 = max(y0 + 1, math.ceil(math.log10(max(ms_all))))

    def x(n: int) -> float:
        return LEFT + (math.log10(n) - x0) / (x1 - x0) * (W - LEFT - RIGHT)

    def y(v: float) -> float:
        return H - BOTTOM - (math.log10(v) - y0) / (y1 - y0) * (H - TOP - BOTTOM)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{W / 2 - RIGHT / 2}" y="22" text-anchor="middle" font-size="14">'
        "Concurrent timeouts: wall time, half firing, half completing</text>",
    ]
    bottom = 10.0**y0
    out.append(axis_line(LEFT, y(bottom), W - RIGHT, y(bottom)))
    out.append(axis_line(LEFT, y(bottom), LEFT, TOP))
    for e in range(y0, y1 + 1):
        v = 10.0**e
        label = f"{v:g} ms" if v < 1000 else f"{v / 1000:g} s"
        out.append(f'<line x1="{LEFT}" y1="{y(v):.1f}" x2="{W - RIGHT}" y2="{y(v):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{label}</text>')
    for n in sorted(set(n_all)):
        out.append(f'<text x="{x(n):.1f}" y="{H - BOTTOM + 18}" text-anchor="middle">{n:,}</text>'.replace(",", " "))
    out.append(
        f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 12}" text-anchor="middle">'
        "concurrent timeouts (log scale)</text>"
    )
    out.append(
        f'<text transform="translate(16 {(TOP + H - BOTTOM) / 2}) rotate(-90)" '
        'text-anchor="middle">wall time (log scale)</text>'
    )
    for i, (name, pts) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        pts.sort()
        path = " ".join(f"{x(n):.1f},{y(v):.1f}" for n, v in pts)
        dash = ' stroke-dasharray="6 4"' if not name.startswith("opguard") else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        for n, v in pts:
            out.append(f'<circle cx="{x(n):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}"/>')
        ly = TOP + 10 + i * 20
        out.append(
            f'<line x1="{W - RIGHT + 12}" y1="{ly}" x2="{W - RIGHT + 36}" y2="{ly}" '
            f'stroke="{colour}" stroke-width="2"{dash}/>'
        )
        out.append(f'<text x="{W - RIGHT + 42}" y="{ly + 4}">{name}</text>')
    out.append("</svg>")
    with open(dst, "w") as f:
        f.write("\n".join(out) + "\n")


def axis_line(x1: float, y1: float, x2: float, y2: float) -> str:
    return f'<line x1="{x1}" y1="{y1:.1f}" x2="{x2}" y2="{y2:.1f}" stroke="black"/>'


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
