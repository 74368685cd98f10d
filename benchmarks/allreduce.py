"""All-reduce of float32 vectors: labkit's algorithms on "shm" and on MPI against MPICH's MPI_Allreduce and
tf.distribute, with the α-β model's prediction beside each measured time.

    python benchmarks/allreduce.py                 # p = 2 and 4, 1,000 values and 4 kB … 64 MB (a few minutes)
    python benchmarks/allreduce.py --quick         # fewer sizes and repeats (about a minute)
    python benchmarks/allreduce.py --smoke         # p = 2, two small sizes, no TensorFlow (seconds: a test runs it)
    python benchmarks/allreduce.py --p 2 --sizes 1000 10000000 --no-tf

Times are medians over repeats after warm-up; one repeat is a barrier, then the all-reduce on every rank, and its
time is the slowest rank's. algbw = n / t and busbw = algbw · 2(p−1)/p (nccl-tests). Three models, each
`labkit.cost.allreduce_time` on a fitted link: the naive one, on the link `labkit.cost.fit_link` fits to a ping-pong
(one message, the other core idle); on the link fitted to a ring step with every rank busy; and on the cache or the
memory link of `regimes.fit_link_regimes`, whichever holds the all-reduce's bytes. Each round's links judge that
round's times (the machine's speed changes between rounds), and within a round every measurement takes its repeats
in turns interleaved with all the others' (it changes within a round too). The MPI part runs
this script again under ``mpiexec -n p``; TensorFlow runs in a process of its own (it is never loaded beside the
shm ranks). Writes benchmarks/results/allreduce.md and allreduce.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # allreduce_report, beside this script

import fitting  # noqa: E402  (the benchmarks' measuring: steps=, reduce steps, the cache's size)
import regimes  # noqa: E402
from allreduce_report import report, unreachable  # noqa: E402, F401  (unreachable: tests call it from here)

from labkit import collectives, comm, cost  # noqa: E402
from labkit.comm import mpirun  # noqa: E402
from labkit.measure import timed  # noqa: E402  (every repeat: the slowest rank, after a barrier)

SIZES = [1000, 16384, 262144, 1048576, 4194304, 10_000_000, 16777216]  # float32 values: 4 kB … 64 MiB
QUICK_SIZES = [1000, 262144, 4194304, 16777216]
PINGPONG = [1024, 16384, 262144, 1048576, 2097152, 4194304, 8388608, 16777216]  # 4 kB … 64 MiB, both regimes
RESULTS = Path(os.environ.get("LABKIT_RESULTS") or Path(__file__).resolve().parent / "results")  # tests: a temp dir


def repeats(n: int, quick: bool) -> int:
    """More repeats for small vectors: their times are µs and noisy; 64 MB takes ~0.1 s per call."""
    r = 200 if n * 4 <= 65536 else 40 if n * 4 <= 2**20 else 15 if n * 4 <= 16 * 2**20 else 8
    return max(3, r // 4) if quick else r


SLICES = 4  # every measurement's repeats run in this many turns, interleaved with all the others' (see `world`)


def allreduce_jobs(c, sizes: list[int], quick: bool, mpi_allreduce=None) -> dict:
    """{"algorithm|n": (times of r repeats, repeats)} for every labkit algorithm and (under MPI) MPI_Allreduce,
    each checked once first."""
    jobs = {}
    for n in sizes:
        x = np.full(n, c.rank + 1.0, np.float32)
        want = c.size * (c.size + 1) / 2
        result = np.empty_like(x)  # a receive buffer reused from repeat to repeat, as MPI_Allreduce gets below
        for name in collectives.ALGORITHMS:
            y = collectives.allreduce(x, c, algorithm=name, out=result)
            assert y[0] == want and y[-1] == want, (name, n)
            call = lambda x=x, name=name, r=result: collectives.allreduce(x, c, algorithm=name, out=r)  # noqa: E731
            jobs[f"{name}|{n}"] = (lambda k, call=call: timed(c, call, k), repeats(n, quick))
        if mpi_allreduce is not None:
            result = np.empty_like(x)
            mpi_allreduce(x, result)
            assert result[0] == want
            call = lambda x=x, r=result: mpi_allreduce(x, r)  # noqa: E731
            jobs[f"MPI_Allreduce|{n}"] = (lambda k, call=call: timed(c, call, k), repeats(n, quick))
    return jobs


SMOKE_SIZES, SMOKE_PINGPONG = [1000, 16384], [1024, 16384]


def link_jobs(c, quick: bool) -> dict:
    """{(kind, n): (the median of r repeats, as a list, repeats)}: one-way ping-pong times between ranks 0 and 1, one
    ring step with every rank busy (sendrecv to the right, from the left: contention included) and one
    reduce-scatter step (send, and out ← mine + incoming), for every size in PINGPONG: the data for the links and γ."""
    steps = {"steps": max(1, c.size - 1)}  # ring steps back to back, as in a ring's reduce-scatter or all-gather
    kinds = {
        "ping-pong": fitting.pingpong_times,
        "exchange": lambda *a: fitting.exchange_times(*a, **steps),
        "reduce": lambda *a: fitting.reduce_step_times(*a, **steps),
    }
    return {
        (kind, n): (lambda k, f=f, m=4 * n: [f(c, [m], k)[m]], repeats(n, quick))
        for kind, f in kinds.items()
        for n in (SMOKE_PINGPONG if os.environ.get("LABKIT_SMOKE") else PINGPONG)
    }


def world(c, sizes: list[int], quick: bool, mpi_allreduce=None) -> tuple[dict, dict]:
    """One round in one world: ({"algorithm|n": times}, {kind: {n: [time]}}), the all-reduces and the link data.

    Every measurement's repeats run in SLICES turns, and each turn goes through all of them: a virtual machine's
    cores change speed within a minute, and a link measured in another minute than the all-reduce it should predict
    judges the model on the machine's phases. Interleaved, every measurement samples the same minutes. A link's
    time is the median of its turns' medians.
    """
    got = interleave(allreduce_jobs(c, sizes, quick, mpi_allreduce) | link_jobs(c, quick), SLICES)
    times = {key: t for key, t in got.items() if isinstance(key, str)}
    links: dict = {}
    for (kind, n), t in ((k, t) for k, t in got.items() if not isinstance(k, str)):
        links.setdefault(kind, {})[str(n)] = [float(np.median(t))]
    return times, links


def interleave(jobs: dict, turns: int) -> dict:
    """{key: what run(k) returned, joined over the turns} for jobs {key: (run, total)}: each turn calls every job's
    run once, with its share of that job's ``total`` repeats (skipped when the share is 0)."""
    got: dict = {key: [] for key in jobs}
    for turn in range(turns):
        for key, (run, total) in jobs.items():
            share = total // turns + (turn < total % turns)
            if share:
                got[key] += run(share)
    return got


def shm_world(c, sizes, quick):
    return world(c, sizes, quick)


def mpi_worker(args) -> None:
    """Under mpiexec: the same measurements on MPIComm, plus MPICH's MPI_Allreduce; rank 0 writes JSON."""
    from mpi4py import MPI

    c = comm.from_mpi(timeout=600)
    measured = world(c, args.sizes, args.quick, lambda x, out: MPI.COMM_WORLD.Allreduce(x, out, op=MPI.SUM))
    gathered = c.allgather_object(measured)
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


def fit(medians: dict, p: int, cache: int | None) -> dict:
    """{kind: Link} fitted with cost.fit_link to the (best) median times of the ping-pong and of the exchange.

    A message carries no reduction, so they give α and β only. The ring's reduce-scatter steps also add what they
    receive (out ← mine + incoming, in the same pass that takes the message out of the mailbox), so γ is what that
    adds to a step: the slope of (reduce step − exchange step) over the message size. With the cache's size known,
    "cache" and "memory" are the exchange link and γ fitted on each side of the last-level cache
    (`regimes.fit_link_regimes`, one α for both; footprint: every rank's send and receive buffers, 2pm bytes for
    messages of m).
    """

    def points(kind: str) -> tuple:
        return tuple(zip(*[(4 * n, t) for (k, n), t in sorted(medians.items()) if k == kind], strict=True))

    step = dict(zip(*points("reduce"), strict=True))
    sizes, times = points("exchange")
    extra = [(m, step[m] - t) for m, t in zip(sizes, times, strict=True) if m in step]
    links = {}
    for kind in ("ping-pong", "exchange"):
        line = cost.fit_link(*points(kind))
        links[kind] = cost.Link(line.alpha, line.beta, _slope(extra))
    if cache and all(len({m for m in sizes if regimes.regime(2 * p * m, cache) == r}) >= 2 for r in regimes.REGIMES):
        by = regimes.fit_link_regimes(sizes, times, [2 * p * m for m in sizes], cache)
        for name in regimes.REGIMES:
            mine = [(m, d) for m, d in extra if regimes.regime(2 * p * m, cache) == name]
            links[name] = cost.Link(by[name].alpha, by[name].beta, _slope(mine))
    return links


def _slope(points: list[tuple[float, float]]) -> float:
    """Seconds per byte: the least-squares slope of (size, extra time), 0 if it does not grow (or too few sizes).
    The line's intercept, the fixed time a reduce step adds to an exchange (one more call, its bookkeeping), is
    not per byte and stays out of γ."""
    if len({n for n, _ in points}) < 2:
        return 0.0
    n, t = np.array(points, dtype=float).T
    return max(0.0, float(np.polyfit(n, t, 1)[0]))


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
    """Every row of the table (one per p, size, engine, algorithm): the best median over ``rounds`` rounds.

    The model columns are judged round by round: each round's link measurements give its own links and
    predictions of its own times (a virtual machine's cores can change speed between rounds), and a row shows
    the round with the median error.
    """
    rows, info = (
        [],
        {"memcpy": memcpy_bandwidth(), "links": {}, "notes": [], "cache": fitting.cache_bytes(), "medians": {}},
    )
    mpiexec = mpirun.mpiexec()
    if args.no_tf:
        info["notes"].append("tf.distribute skipped (--no-tf)")
    for p in args.p:
        rounds = []
        for k in range(args.rounds):
            print(f"p={p}: round {k + 1}/{args.rounds} …", flush=True)
            rounds.append(measure_once(p, args, mpiexec, info["notes"] if k == 0 else []))
        info.setdefault("rounds", {})[p] = rounds
        best = {key: min(r[key] for r in rounds if key in r) for key in set().union(*rounds)}
        for engine in ("shm", "mpi"):
            medians = _links_of(best, engine)
            if medians:
                info["links"][(p, engine)] = fit(medians, p, info["cache"])
                info["medians"][(p, engine)] = medians
        judged = [(_models(r, p, info["cache"]), r) for r in rounds]  # each round's predictions and times
        for n in args.sizes:
            ref = best.get(("MPICH", "MPI_Allreduce", n))
            for (engine, algorithm, m), t in best.items():
                if m != n or algorithm == "link":
                    continue
                row = {"p": p, "values": n, "bytes": 4 * n, "engine": engine, "algorithm": algorithm, "time_s": t}
                row |= {"algbw": cost.algbw(4 * n, t), "busbw": cost.busbw(4 * n, t, p)}
                row |= {"vs_mpi": t / ref if ref else None}
                key = (engine, algorithm, n)
                for kind, col in (("ping-pong", "model"), ("exchange", "model_x"), ("regime", "model_c")):
                    got = [(m[key][kind], r[key]) for m, r in judged if kind in m.get(key, ())]
                    row[f"{col}_s"], row[f"{col}_err"] = _median_error(got)
                rows.append(row)
    return rows, info


def _links_of(times: dict, engine: str) -> dict:
    return {kn: t for (e, name, kn), t in times.items() if e == engine and name == "link"}


def _models(times: dict, p: int, cache: int | None) -> dict:
    """{(engine, algorithm, n): {kind: predicted time}} from the links fitted to one round's own measurements."""
    out = {}
    for engine in ("shm", "mpi"):
        medians = _links_of(times, engine)
        if not medians:
            continue
        links = fit(medians, p, cache)
        for e, algorithm, n in times:
            if e != engine or algorithm not in collectives.ALGORITHMS:
                continue
            model = {kind: cost.allreduce_time(algorithm, 4 * n, p, link) for kind, link in links.items()}
            if cache and "cache" in model:
                model["regime"] = model[regimes.regime(regimes.allreduce_footprint(4 * n, p), cache)]
            out[(e, algorithm, n)] = model
    return out


def _median_error(pairs: list[tuple[float, float]]) -> tuple[float | None, float | None]:
    """(prediction, error) of the round whose error (model − measured) / measured is the median (lower median)."""
    if not pairs:
        return None, None
    ranked = sorted(((model - t) / t, model) for model, t in pairs)
    error, model = ranked[(len(ranked) - 1) // 2]
    return model, error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    parser.add_argument("--smoke", action="store_true", help="p = 2, two small sizes, one round, no TensorFlow")
    parser.add_argument("--p", type=int, nargs="+", default=[2, 4], help="world sizes (default 2 4)")
    parser.add_argument("--sizes", type=int, nargs="+", help="vector lengths in float32 values")
    parser.add_argument("--no-tf", action="store_true", help="skip tf.distribute")
    parser.add_argument("--wait-idle", type=float, default=0, help="wait up to this many seconds for a quiet machine")
    parser.add_argument("--rounds", type=int, help="repeat everything and keep each row's best median (default 3)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for allreduce.md and allreduce.csv")
    parser.add_argument("--save-rounds", type=Path, help="also write every round's times to this JSON file")
    parser.add_argument("--mpi-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tf-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:  # the MPI worker inherits it through the environment
        os.environ["LABKIT_SMOKE"] = "1"
        args.quick, args.no_tf, args.p, args.sizes = True, True, args.p if args.p != [2, 4] else [2], SMOKE_SIZES
    args.sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.mpi_worker:
        return mpi_worker(args)
    if args.tf_worker:
        return tf_worker(args)
    fitting.wait_idle(args.wait_idle)
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
    if args.save_rounds:  # {p: [{"engine|algorithm|n": seconds}, one per round]}: compare models on the same times
        rounds = {p: [{"|".join(map(str, k)): t for k, t in r.items()} for r in rs] for p, rs in info["rounds"].items()}
        args.save_rounds.write_text(json.dumps(rounds))
    print(text)


if __name__ == "__main__":
    main()
