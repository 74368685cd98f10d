"""All-reduce of float32 vectors: labkit's algorithms on "shm" and on MPI against MPICH's MPI_Allreduce and
tf.distribute, with the α-β model's prediction beside each measured time.

    python benchmarks/allreduce.py                 # p = 2 and 4, 1,000 values and 4 kB … 64 MB (a few minutes)
    python benchmarks/allreduce.py --quick         # fewer sizes and repeats (about a minute)
    python benchmarks/allreduce.py --p 2 --sizes 1000 10000000 --no-tf

Times are medians over repeats after warm-up; one repeat is a barrier, then the all-reduce on every rank, and its
time is the slowest rank's. algbw = n / t and busbw = algbw · 2(p−1)/p (nccl-tests). The model is
`labkit.cost.allreduce_time` on the link `labkit.cost.fit_link` fits to a shm (or MPI) ping-pong. The MPI part runs
this script again under ``mpiexec -n p``; TensorFlow runs in a process of its own (it is never loaded beside the
shm ranks). Writes benchmarks/results/allreduce.md and allreduce.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labkit import collectives, comm, cost  # noqa: E402
from labkit import measure as lkm  # noqa: E402
from labkit.measure import timed  # noqa: E402  (every repeat: the slowest rank, after a barrier)

SIZES = [1000, 16384, 262144, 1048576, 4194304, 10_000_000, 16777216]  # float32 values: 4 kB … 64 MiB
QUICK_SIZES = [1000, 262144, 4194304, 16777216]
PINGPONG = [1024, 16384, 262144, 1048576, 4194304, 16777216]
RESULTS = Path(__file__).resolve().parent / "results"


def repeats(n: int, quick: bool) -> int:
    """More repeats for small vectors: their times are µs and noisy; 64 MB takes ~0.1 s per call."""
    r = 200 if n * 4 <= 65536 else 40 if n * 4 <= 2**20 else 15 if n * 4 <= 16 * 2**20 else 8
    return max(3, r // 4) if quick else r


def allreduce_times(c, sizes: list[int], quick: bool, mpi_allreduce=None) -> dict:
    """{(algorithm, n): per-rank times}, for every labkit algorithm and (under MPI) MPI_Allreduce."""
    out = {}
    for n in sizes:
        x = np.full(n, c.rank + 1.0, np.float32)
        want = c.size * (c.size + 1) / 2
        result = np.empty_like(x)  # a receive buffer reused from repeat to repeat, as MPI_Allreduce gets below
        for name in collectives.ALGORITHMS:
            y = collectives.allreduce(x, c, algorithm=name, out=result)
            assert y[0] == want and y[-1] == want, (name, n)
            call = lambda x=x, name=name, r=result: collectives.allreduce(x, c, algorithm=name, out=r)
            out[f"{name}|{n}"] = timed(c, call, repeats(n, quick))
        if mpi_allreduce is not None:
            result = np.empty_like(x)
            mpi_allreduce(x, result)
            assert result[0] == want
            out[f"MPI_Allreduce|{n}"] = timed(c, lambda x=x, r=result: mpi_allreduce(x, r), repeats(n, quick))
    return out


def pingpong(c, sizes: list[int], quick: bool) -> dict:
    """One-way message times (half a round trip) between ranks 0 and 1: the data for fit_link."""
    return {str(n): [lkm.pingpong_times(c, [4 * n], repeats(n, quick))[4 * n]] for n in sizes}


def exchange(c, sizes: list[int], quick: bool) -> dict:
    """Time of one ring step with every rank busy (sendrecv to the right, from the left): contention included."""
    return {str(n): [lkm.exchange_times(c, [4 * n], repeats(n, quick))[4 * n]] for n in sizes}


def reduce(c, sizes: list[int], quick: bool) -> dict:
    """Time of the ring's reduction (out ← mine + incoming) with every rank adding at once: the data for γ."""
    return {str(n): [lkm.reduce_times(c, [4 * n], repeats(n, quick))[4 * n]] for n in sizes}


def links(c, quick: bool) -> dict:
    """Ping-pong (ranks 0 and 1), ring-exchange and reduction times, the data for the fitted links and γ."""
    return {k: f(c, PINGPONG, quick) for k, f in (("ping-pong", pingpong), ("exchange", exchange), ("reduce", reduce))}


def shm_world(c, sizes, quick):
    return allreduce_times(c, sizes, quick), links(c, quick)


def mpi_worker(args) -> None:
    """Under mpiexec: the same measurements on MPIComm, plus MPICH's MPI_Allreduce; rank 0 writes JSON."""
    from mpi4py import MPI

    c = comm.from_mpi(timeout=600)
    times = allreduce_times(c, args.sizes, args.quick, lambda x, out: MPI.COMM_WORLD.Allreduce(x, out, op=MPI.SUM))
    gathered = c.allgather_object((times, links(c, args.quick)))
    if c.rank == 0:
        Path(args.json).write_text(json.dumps(gathered))


def tf_worker(args) -> None:
    """tf.distribute.MirroredStrategy on p logical CPU devices: replica-context all_reduce inside tf.function."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    p = args.p[0]
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * p)
    strategy = tf.distribute.MirroredStrategy(devices=[f"/cpu:{i}" for i in range(p)])
    out = {"engine": f"MirroredStrategy ({type(strategy.extended._cross_device_ops).__name__})"}
    for n in args.sizes:
        values = strategy.experimental_distribute_values_from_function(
            lambda ctx, n=n: tf.fill([n], float(ctx.replica_id_in_sync_group + 1))
        )

        @tf.function(autograph=False)
        def step(v):
            return strategy.run(lambda x: tf.distribute.get_replica_context().all_reduce("SUM", x), args=(v,))

        def call(values=values):
            return [float(r[0]) for r in strategy.experimental_local_results(step(values))]  # waits for every replica

        assert call() == [p * (p + 1) / 2] * p
        for _ in range(2):
            call()
        times = []
        for _ in range(repeats(n, args.quick)):
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
        out[str(n)] = times
    Path(args.json).write_text(json.dumps(out))


def run_child(argv: list[str], what: str) -> dict | str:
    """Run this script as a worker; its JSON, or why it could not run."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.json"
        try:
            result = subprocess.run([*argv, "--json", str(path)], capture_output=True, text=True, timeout=3600)
        except subprocess.TimeoutExpired:
            return f"{what} did not finish within an hour"
        if result.returncode != 0 or not path.exists():
            return f"{what} failed: {(result.stderr.strip().splitlines() or ['no output'])[-1]}"
        return json.loads(path.read_text())


def median_of_max(per_rank: list[list[float]]) -> float:
    """The median over repeats of the slowest rank's time."""
    return float(np.median(np.max(np.array(per_rank), axis=0)))


def memcpy_bandwidth() -> tuple[float, float]:
    """Bytes per second of a plain NumPy copy and add of 64 MiB (the memory-bandwidth reference)."""
    a, b = np.ones(16 * 2**20, np.float32), np.empty(16 * 2**20, np.float32)
    copy = min(_clock(lambda: np.copyto(b, a)) for _ in range(10))
    add = min(_clock(lambda: np.add(b, a, out=b)) for _ in range(10))
    return a.nbytes / copy, a.nbytes / add


def _clock(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def link_medians(per_rank: list[dict]) -> dict:
    """{(kind, n): median time (slowest rank)} of the ping-pong and exchange measurements."""
    kinds = per_rank[0]
    return {(kind, int(n)): median_of_max([r[kind][n] for r in per_rank]) for kind in kinds for n in kinds[kind]}


def fit(medians: dict) -> dict:
    """{kind: Link} fitted with cost.fit_link to the (best) median times of the ping-pong and of the exchange.

    A message carries no reduction, so they give α and β only; the ring also adds (p−1)/p·n bytes, so γ is the
    slope fit_link finds in the times of that reduction, measured with every rank adding at once.
    """

    def line(kind: str) -> cost.Link:
        return cost.fit_link(*zip(*[(4 * n, t) for (k, n), t in sorted(medians.items()) if k == kind], strict=True))

    gamma = line("reduce").beta
    return {kind: cost.Link(line(kind).alpha, line(kind).beta, gamma) for kind in ("ping-pong", "exchange")}


def measure_once(p: int, args, mpiexec: str | None, notes: list) -> dict:
    """{(engine, algorithm, n): median time} for one world size, one round ("link" rows: ping-pong, exchange)."""
    times = {}
    run = comm.run(shm_world, p, transport="shm", timeout=600, args=(args.sizes, args.quick))
    for key in run.values[0][0]:
        name, n = key.split("|")
        times[("shm", name, int(n))] = median_of_max([v[0][key] for v in run.values])
    times.update({("shm", "link", kn): t for kn, t in link_medians([v[1] for v in run.values]).items()})
    if mpiexec is None:
        notes.append("MPI: no mpiexec found (pip install mpi4py mpich)")
    else:
        argv = [mpiexec, "-n", str(p), sys.executable, __file__, "--mpi-worker", "--sizes", *map(str, args.sizes)]
        got = run_child(argv + ["--quick"] * args.quick, f"mpiexec -n {p}")
        if isinstance(got, str):
            notes.append(got)
        else:
            for key in got[0][0]:
                name, n = key.split("|")
                engine = "MPICH" if name == "MPI_Allreduce" else "mpi"
                times[(engine, name, int(n))] = median_of_max([g[0][key] for g in got])
            times.update({("mpi", "link", kn): t for kn, t in link_medians([g[1] for g in got]).items()})
    if not args.no_tf:
        argv = [sys.executable, __file__, "--tf-worker", "--p", str(p), "--sizes", *map(str, args.sizes)]
        got = run_child(argv + ["--quick"] * args.quick, "tf.distribute")
        if isinstance(got, str):
            notes.append(f"p={p} tf.distribute: {got}")
        else:
            for n in args.sizes:
                times[("tf.distribute", got["engine"], n)] = float(np.median(got[str(n)]))
    return times


def measure(args) -> tuple[list[dict], dict]:
    """Every row of the table (one per p, size, engine, algorithm): the best median over ``rounds`` rounds."""
    rows, info = [], {"memcpy": memcpy_bandwidth(), "links": {}, "notes": []}
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if args.no_tf:
        info["notes"].append("tf.distribute skipped (--no-tf)")
    for p in args.p:
        best: dict = {}
        for k in range(args.rounds):
            print(f"p={p}: round {k + 1}/{args.rounds} …", flush=True)
            for key, t in measure_once(p, args, mpiexec, info["notes"] if k == 0 else []).items():
                best[key] = min(best.get(key, t), t)
        for engine in ("shm", "mpi"):
            medians = {kn: t for (e, name, kn), t in best.items() if e == engine and name == "link"}
            if medians:
                info["links"][(p, engine)] = fit(medians)
        for n in args.sizes:
            ref = best.get(("MPICH", "MPI_Allreduce", n))
            for (engine, algorithm, m), t in best.items():
                if m != n or algorithm == "link":
                    continue
                kinds = info["links"].get((p, engine), {}) if algorithm in collectives.ALGORITHMS else {}
                model = {kind: cost.allreduce_time(algorithm, 4 * n, p, link) for kind, link in kinds.items()}
                rows.append(
                    {"p": p, "values": n, "bytes": 4 * n, "engine": engine, "algorithm": algorithm, "time_s": t}
                    | {"algbw": cost.algbw(4 * n, t), "busbw": cost.busbw(4 * n, t, p)}
                    | {"vs_mpi": t / ref if ref else None}
                    | {"model_s": model.get("ping-pong"), "model_err": _err(model.get("ping-pong"), t)}
                    | {"model_x_s": model.get("exchange"), "model_x_err": _err(model.get("exchange"), t)}
                )
    return rows, info


def _err(model: float | None, measured: float) -> float | None:
    return None if model is None else (model - measured) / measured


def _size(nbytes: int) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes / 1e6:.3g} MB" if nbytes >= 1e6 else f"{nbytes / 1e3:.3g} kB"


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
        " `sendrecv_into` with every rank busy; γ: the slope of the ring's reduction out ← mine + incoming, every"
        " rank adding at once):",
        "",
    ]
    for (p, engine), kinds in sorted(info["links"].items()):
        lines += [f"- p={p} {engine}: " + "; ".join(f"{kind} {link!r}" for kind, link in kinds.items())]
    lines += [f"\nNote: {note}." for note in info["notes"]]
    lines += ["", *goals(rows, copy), ""]
    lines += [
        "Columns: time = median (over repeats) of the slowest rank; algbw = n/t and busbw = algbw·2(p−1)/p in GB/s"
        " (nccl-tests); busbw/copy = busbw over the NumPy copy bandwidth; ×MPI = time / MPI_Allreduce's time (< 1:"
        " faster); model = `cost.allreduce_time` on the ping-pong link, model×  on the ring-exchange link, both"
        " with the fitted γ, each with its error (model − measured) / measured.",
    ]
    for p in args.p:
        lines += ["", f"## p = {p}", ""]
        header = "size | engine | algorithm | time | algbw | busbw | busbw/copy | ×MPI | model | error | model× | error"
        lines += [f"| {header} |"]
        lines += ["|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
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
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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
    for key, what in (("model_err", "ping-pong link"), ("model_x_err", "ring-exchange link")):
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    parser.add_argument("--p", type=int, nargs="+", default=[2, 4], help="world sizes (default 2 4)")
    parser.add_argument("--sizes", type=int, nargs="+", help="vector lengths in float32 values")
    parser.add_argument("--no-tf", action="store_true", help="skip tf.distribute")
    parser.add_argument("--wait-idle", type=float, default=0, help="wait up to this many seconds for a quiet machine")
    parser.add_argument("--rounds", type=int, help="repeat everything and keep each row's best median (default 3)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for allreduce.md and allreduce.csv")
    parser.add_argument("--mpi-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tf-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.mpi_worker:
        return mpi_worker(args)
    if args.tf_worker:
        return tf_worker(args)
    lkm.wait_idle(args.wait_idle)
    load_before = os.getloadavg()
    rows, info = measure(args)
    info["load"] = (load_before, os.getloadavg())
    text = report(rows, info, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "allreduce.md").write_text(text)
    with (args.out / "allreduce.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(text)


if __name__ == "__main__":
    main()
