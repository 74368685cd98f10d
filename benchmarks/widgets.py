"""How long a widget takes to redraw after a control moves: the recomputation plus rendering its figure to PNG.

    python benchmarks/widgets.py            # writes benchmarks/results/widgets.md
    python benchmarks/widgets.py --quick    # one redraw per value instead of three

The goal (issue 4): every change of the cost explorer redraws in under 100 ms. In a notebook the kernel renders
the figure to PNG once per change, as `savefig` does here; the browser's own work is not included.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labkit.viz import widgets

RESULTS = Path(os.environ.get("LABKIT_RESULTS") or Path(__file__).resolve().parent / "results")  # tests: a temp dir

# (widget factory, control, values to step through)
CASES = [
    ("cost_explorer", widgets.cost_explorer, "p", [16, 64, 256, 1024, 8]),
    ("cost_explorer", widgets.cost_explorer, "nbytes", [1e3, 1e6, 1e9, 1e4]),
    ("cost_explorer", widgets.cost_explorer, "preset", ["InfiniBand NDR", "NVLink 4 (H100)", "10 GbE"]),
    ("cost_explorer", widgets.cost_explorer, "algorithms", [tuple(widgets.cost.ALGORITHMS), ("ring", "tree")]),
    ("bytes_per_worker", widgets.bytes_per_worker, "p", [8, 16, 32, 4]),
    ("step_through", widgets.step_through, "k", [2, 3, 4, 5, 6]),
    ("step_through", widgets.step_through, "p", [8, 16, 4]),
]


def redraw_seconds(explorer, control: str, value) -> float:
    """Seconds from setting the control to a rendered PNG of the new figure."""
    start = time.perf_counter()
    explorer.controls[control].value = value
    explorer.figure.savefig(io.BytesIO(), format="png")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one redraw per value instead of three")
    redraws = 1 if parser.parse_args().quick else 3
    rows = []
    for name, factory, control, values in CASES:
        explorer = factory()
        explorer.figure.savefig(io.BytesIO(), format="png")  # warm-up: fonts and caches
        times = [redraw_seconds(explorer, control, v) for v in values for _ in range(redraws)]
        rows.append((name, control, len(times), np.median(times), max(times)))
    lines = [
        "# Widget redraw times",
        "",
        f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}. One redraw = set the control's value, recompute, render the PNG.",
        "",
        "| widget | control moved | redraws | median (ms) | slowest (ms) |",
        "|---|---|--:|--:|--:|",
        *(f"| {n} | {c} | {k} | {m * 1e3:.0f} | {s * 1e3:.0f} |" for n, c, k, m, s in rows),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "widgets.md").write_text(text)


if __name__ == "__main__":
    main()
