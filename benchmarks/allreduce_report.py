"""The all-reduce benchmark's report (`benchmarks/allreduce.py` measures): the goals with the numbers that meet or
miss them, the fitted links and the times behind them, then one table per world size, as Markdown."""

from __future__ import annotations

import os
import platform
import sys
import time


def _size(nbytes: int) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes / 1e6:.3g} MB" if nbytes >= 1e6 else f"{nbytes / 1e3:.3g} kB"


def _cache(nbytes: int | None) -> str:
    return "(size unknown: no such model)" if not nbytes else _size(nbytes)


def _time(t: float) -> str:
    return f"{t * 1e6:.1f} µs" if t < 1e-3 else f"{t * 1e3:.2f} ms"


def _maybe(value: float | None, fmt: str) -> str:
    return "" if value is None else fmt.format(value)


def report(rows: list[dict], info: dict, args) -> str:
    """The results as Markdown: the goals first, then one table per p."""
    copy, add = info["memcpy"]
    lines = [
        "# All-reduce benchmark (float32, sum)",
        "",
        f"Machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()};"
        f" run {time.strftime('%Y-%m-%d %H:%M')} as `python benchmarks/allreduce.py {' '.join(sys.argv[1:])}`"
        f" ({args.rounds} round(s); each row keeps its best median).",
        f"Memory reference (NumPy, 64 MiB): copy {copy / 1e9:.1f} GB/s, add {add / 1e9:.1f} GB/s."
        f" Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in info['load'][0])};"
        f" after: {', '.join(f'{x:.2f}' for x in info['load'][1])} (other work on the machine skews every time).",
        "",
        "Links fitted with `cost.fit_link` (one-way times: half a ping-pong between ranks 0 and 1; one ring step of"
        " `sendrecv_into` with every rank busy, timed p − 1 in a row as the ring takes them; γ: what one"
        " reduce-scatter step, `sendrecv_reduce`, takes more than an exchange step, per byte (its slope over the"
        " sizes); cache and memory: the exchange link and γ fitted on"
        f" each side of the {_cache(info['cache'])} last-level cache, `regimes.fit_link_regimes`):",
        "",
    ]
    for (p, engine), kinds in sorted(info["links"].items()):
        lines += [f"- p={p} {engine}: " + "; ".join(f"{kind} {link!r}" for kind, link in kinds.items())]
    lines += ["", "The times they were fitted to (each the best median over the rounds):", ""]
    lines += [*measured_links(info["medians"]), ""]
    lines += [f"\nNote: {note}." for note in info["notes"]]
    lines += ["", *goals(rows, copy), ""]
    lines += [
        "Columns: time = median (over repeats) of the slowest rank; algbw = n/t and busbw = algbw·2(p−1)/p in GB/s"
        " (nccl-tests); busbw/copy = busbw over the NumPy copy bandwidth; ×MPI = time / MPI_Allreduce's time (< 1:"
        " faster); model = `cost.allreduce_time` on the ping-pong link, model×  on the ring-exchange link, both"
        " with the fitted γ; model c/m on the cache or the memory link, whichever holds the all-reduce's 2pn bytes"
        " (`regimes.allreduce_footprint`); each with its error (model − measured) / measured. The models are judged"
        " round by round: each round's own link measurements, taken in turns interleaved with the all-reduces', predict"
        " that round's times (the links above are"
        " fitted to the best times over all rounds), and each row shows the round with the median error (its error is"
        " against that round's own time, which can differ from the best time in the row).",
    ]
    for p in args.p:
        lines += ["", f"## p = {p}", ""]
        header = "size | engine | algorithm | time | algbw | busbw | busbw/copy | ×MPI | model | error | model× | error"
        lines += [f"| {header} | model c/m | error |"]
        lines += ["|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for r in (r for r in rows if r["p"] == p):
            cells = [
                f"{_size(r['bytes'])} ({r['values']:,} values)",
                r["engine"],
                r["algorithm"],
                _time(r["time_s"]),
                f"{r['algbw'] / 1e9:.3f}",
                f"{r['busbw'] / 1e9:.3f}",
                f"{r['busbw'] / copy:.0%}",
                _maybe(r["vs_mpi"], "{:.2f}"),
                "" if r["model_s"] is None else _time(r["model_s"]),
                _maybe(r["model_err"], "{:+.0%}"),
                "" if r["model_x_s"] is None else _time(r["model_x_s"]),
                _maybe(r["model_x_err"], "{:+.0%}"),
                "" if r["model_c_s"] is None else _time(r["model_c_s"]),
                _maybe(r["model_c_err"], "{:+.0%}"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def measured_links(medians: dict) -> list[str]:
    """The times the links were fitted to: one row per message size, a column per world size, engine and kind."""
    if not medians:
        return []
    columns = [(p, engine, kind) for (p, engine), m in sorted(medians.items()) for kind in sorted({k for k, _ in m})]
    sizes = sorted({n for m in medians.values() for _, n in m})
    names = {"reduce": "reduce step"}
    lines = ["| message | " + " | ".join(f"p={p} {e} {names.get(k, k)}" for p, e, k in columns) + " |"]
    lines.append("|---|" + "--:|" * len(columns))
    for n in sizes:
        cells = [_time(medians[(p, e)][(k, n)]) if (k, n) in medians[(p, e)] else "" for p, e, k in columns]
        lines.append(f"| {_size(4 * n)} | " + " | ".join(cells) + " |")
    return lines


def goals(rows: list[dict], copy: float) -> list[str]:
    """The performance goals, each with the measured numbers that meet or miss it."""
    out = ["## Goals", ""]
    ring = [r for r in rows if r["engine"] == "shm" and r["algorithm"] == "ring"]
    mb = [r for r in ring if 10**6 <= r["bytes"] <= 64 * 2**20 and r["vs_mpi"] is not None]
    if mb:
        ratios = ", ".join(f"p={r['p']} {_size(r['bytes'])} {r['vs_mpi']:.2f}" for r in mb)
        out.append(f"- shm ring time / MPI_Allreduce time, 1–64 MB (goal ≤ 1, aim ≤ 0.5): {ratios}.")
        fractions = ", ".join(f"p={r['p']} {_size(r['bytes'])} {r['busbw'] / copy:.0%}" for r in mb)
        out.append(f"- shm ring busbw as a fraction of a NumPy copy (aim ≥ 30 %): {fractions}.")
    small = [r for r in rows if r["engine"] == "shm" and r["values"] == 1000]
    for p in sorted({r["p"] for r in small}):
        by = {r["algorithm"]: r["time_s"] for r in small if r["p"] == p}
        fastest = min(by, key=by.get)
        out.append(
            f"- 1,000 float32 on shm at p = {p}{' (goal < 100 µs)' if p == 2 else ''}: ring {_time(by['ring'])},"
            f" fastest {fastest} {_time(by[fastest])}."
        )
    links = (("model_err", "ping-pong link"), ("model_x_err", "ring-exchange link"))
    for key, what in (*links, ("model_c_err", "cache or memory link (its footprint's regime)")):
        fit = [r for r in ring if r["bytes"] >= 10**6 and r[key] is not None]
        if fit:
            errors = ", ".join(f"p={r['p']} {_size(r['bytes'])} {r[key]:+.0%}" for r in fit)
            out.append(f"- α-β model of the shm ring on the {what}, ≥ 1 MB (goal within ±20 %): {errors}.")
    out += [f"- {line}" for line in unreachable(ring)]
    return out


def unreachable(ring: list[dict], within: float = 0.2) -> list[str]:
    """Pairs of sizes no α-β-γ model can predict both within ±``within``: the model's time α' + β'·n (α', β' ≥ 0)
    grows at most in proportion to n, so T(n₂)/T(n₁) > (1 + within)/(1 − within) · n₂/n₁ (a step into slower
    memory: the caches hold the smaller size, not the larger) puts one of the two outside."""
    out = []
    for p in sorted({r["p"] for r in ring}):
        rs = sorted((r for r in ring if r["p"] == p and r["bytes"] >= 10**6), key=lambda r: r["bytes"])
        pairs = [(a, b) for i, a in enumerate(rs) for b in rs[i + 1 :]]
        if not pairs:
            continue
        a, b = max(pairs, key=lambda ab: ab[1]["time_s"] / ab[0]["time_s"] / (ab[1]["bytes"] / ab[0]["bytes"]))
        growth, sizes = b["time_s"] / a["time_s"], b["bytes"] / a["bytes"]
        verdict = "no" if growth > (1 + within) / (1 - within) * sizes else "some"
        out.append(
            f"p={p}: {_size(a['bytes'])} → {_size(b['bytes'])} took {growth:.1f}× as long for {sizes:.1f}× the bytes:"
            f" {verdict} α-β-γ model can be within ±{within:.0%} of both (it allows at most"
            f" {(1 + within) / (1 - within) * sizes:.1f}×)."
        )
    return out
