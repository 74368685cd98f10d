"""Serving the article's MLP (784 → 100 → 100 → 10) three ways — data-parallel replicas, tensor parallelism
(Megatron pairs), a GPipe pipeline — on "shm" and MPI, for batches of 1 to 1,024, beside the α-β prediction.

    python benchmarks/inference.py                   # p = 2 and 4, 3 rounds (a few minutes)
    python benchmarks/inference.py --quick           # p = 2, 1 round, fewer repeats (about a minute)
    python benchmarks/inference.py --smoke           # p = 2, batches 16, 64, 256, 3 repeats (seconds: a test runs it)
    python benchmarks/inference.py --wait-idle 300   # first wait for a quiet machine

Every time is `serving_fit.measure_serving`'s: a barrier, the batch on every rank, a barrier (a batch is done when
every rank is), the median of the slowest rank's times less the fastest empty barrier, after a warm-up
(`serving_fit.batch_time`); each rank is a process with one BLAS thread. A round measures everything once; each row
keeps its best median over the rounds (other work on the machine only ever adds time). The prediction is
`serving_fit.predict_time_fitted` on two fitted models: the device (`serving_fit.fit_device` on every rank serving
a whole batch at once, "replicas", so that it computes as crowded as in the schemes; for the tensor split
`serving_fit.fit_shard_device` on every rank computing its shards at once, "shards", each after reading a
cache-sized array as after a collective) and the link (`serving_fit.fit_ring_link`, from labkit's ring all-reduce
measured on the same transport by `fitting.measure_shm`, so that α includes what a collective costs in Python
beyond one message; the column pieces' all-gathers on a link fitted to labkit's all-gather,
`serving_fit.fit_gather_link`; the pipeline's single messages on the ping-pong link measured beside it, and each
stage's sends on the sender's side of a message, `fitting.send_times`).
The weights are random with the article's shapes and activations (times do not depend on their values). Writes
benchmarks/results/inference.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fitting  # noqa: E402  (the ring, all-gather, ping-pong and send times the model is fitted to)
import serving_fit  # noqa: E402  (the schemes measured, and the model fitted to them)

from labkit import cost  # noqa: E402
from labkit.comm import mpirun  # noqa: E402
from labkit.parallel import serving
from labkit.parallel import tensor as tp

RESULTS = Path(os.environ.get("LABKIT_RESULTS") or Path(__file__).resolve().parent / "results")  # tests: a temp dir
SCHEMES = ("data", "tensor", "pipeline")
GOAL = 0.25  # the prediction within 25 % of the measured time, for batches of 64 and more


def article_layers(seed: int = 0) -> list[tp.Dense]:
    """The article's MLP as NumPy layers, Glorot-uniform weights and zero biases (as Keras initialises them)."""
    rng = np.random.default_rng(seed)
    shapes = [("dense_1", 784, 100, "linear"), ("dense_2", 100, 100, "relu"), ("softmax", 100, 10, "softmax")]
    layers = []
    for name, n_in, n_out, activation in shapes:
        limit = np.sqrt(6 / (n_in + n_out))
        kernel = rng.uniform(-limit, limit, size=(n_in, n_out)).astype(np.float32)
        layers.append(tp.Dense(kernel, np.zeros(n_out, np.float32), activation, name))
    return layers


def best(old: dict, new: dict) -> dict:
    """Each key's smallest time over the rounds so far."""
    return {k: min(t, old.get(k, np.inf)) for k, t in new.items()}


def measure_all(args) -> dict:
    """Every round: one rank (the device), then each transport and p (its link, then the three schemes)."""
    layers, x = article_layers(), np.random.default_rng(1).random((max(args.batches), 784), dtype=np.float32)
    reference = tp.forward(x, layers)
    repeats = 3 if args.smoke else 5 if args.quick else None
    single, times, ring, pingpong, sends, gathers, check = {}, {}, {}, {}, {}, {}, {}
    for k in range(args.rounds):
        print(f"round {k + 1}/{args.rounds}: one rank", flush=True)
        one = serving_fit.measure_serving(layers, 1, x, ("single",), args.batches, repeats=repeats)
        single = best(single, one.times)
        for transport in args.transports:
            for p in args.p:
                key = (transport, p)
                print(f"round {k + 1}/{args.rounds}: {transport}, p = {p}", flush=True)
                fit = (fitting.measure_shm if transport == "shm" else fitting.measure_mpi)(
                    p,
                    algorithms=("ring",),
                    sizes=serving_fit.RING_SIZES,
                    pingpong_sizes=serving_fit.P2P_SIZES,
                    repeats=repeats or 20,
                    gather_sizes=serving_fit.GATHER_SIZES,
                    off_cache=args.off_cache,
                )
                check[key] = min(fit.check, check.get(key, np.inf))
                ring[key], pingpong[key], sends[key], gathers[key] = (
                    best(ring.get(key, {}), fit.allreduce),
                    best(pingpong.get(key, {}), fit.pingpong),
                    best(sends.get(key, {}), fit.send),
                    best(gathers.get(key, {}), fit.allgather),
                )
                schemes = [s for s in SCHEMES if s != "pipeline" or p <= len(layers)] + ["replicas"]
                got = serving_fit.measure_serving(
                    layers, p, x, schemes, args.batches, transport, repeats, shards=True, off_cache=args.off_cache
                )
                for (scheme, b), out in got.outputs.items():  # a fast wrong answer is no answer
                    assert np.allclose(out, reference[:b], atol=1e-5), (transport, p, scheme, b)
                times[key] = best(times.get(key, {}), got.times)
    device = serving_fit.fit_device(serving_fit.ServingMeasurement("shm", 1, single, {}), layers)
    shard_devices = {  # what a tensor-parallel rank computes at: its narrow shards, timed alone
        p: serving_fit.fit_shard_device(
            serving_fit.shard_times(layers, p, args.batches, repeats or 30, off_cache=args.off_cache), layers, p
        )
        for p in args.p
    }
    loaded, loaded_shards = {}, {}  # what a rank computes at while p ranks work at once: "replicas", "shards"
    for (transport, p), got in times.items():
        replicas = {k: t for k, t in got.items() if k[0] == "replicas"}
        loaded[(transport, p)] = serving_fit.fit_device(
            serving_fit.ServingMeasurement(transport, p, replicas, {}), layers
        )
        shards = {b: t for (s, b), t in got.items() if s == "shards"}
        loaded_shards[(transport, p)] = serving_fit.fit_shard_device(shards, layers, p)
    links = {}  # fitted to each size's best time over the rounds, as every row keeps its best
    for key, ring_times in ring.items():
        m = fitting.Measurement(
            *key, pingpong[key], allreduce=ring_times, check=check[key], send=sends[key], allgather=gathers[key]
        )
        links[key] = (
            serving_fit.fit_ring_link(m),
            m.link("pingpong", with_gamma=False),
            m.check,
            m.link("send", with_gamma=False),  # what a pipeline stage spends handing on each micro-batch
            serving_fit.fit_gather_link(m),  # the column split's all-gather, with its own setup
        )
    return {
        "layers": layers,
        "single": single,
        "times": times,
        "device": device,
        "shard_devices": shard_devices,
        "loaded": loaded,
        "loaded_shards": loaded_shards,
        "links": links,
    }


def _ms(t: float) -> str:
    return f"{t * 1e3:.3f}"


def oversubscribed(times: dict, batch: int) -> list[str]:
    """Lines comparing the replicas' largest batch on more ranks than cores with as many ranks as cores."""
    cores, lines = os.cpu_count() or 1, []
    for (transport, p), got in sorted(times.items()):
        fitting = times.get((transport, cores), {}).get(("data", batch))
        if p > cores and fitting and ("data", batch) in got:
            lines.append(
                f"- {transport}: {p} replicas take {_ms(got[('data', batch)])} ms for B = {batch}, {cores} take "
                f"{_ms(fitting)} ms: with {cores} cores, more replicas only take turns."
            )
    return ["More ranks than cores:", "", *lines, ""] if lines else []


def report(found: dict, args, info: dict) -> str:
    """The markdown: machine, fitted numbers, goals, then one table per transport and p."""
    layers, device = found["layers"], found["device"]
    lines = [
        "# Inference benchmark: the article's MLP served three ways",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, NumPy "
        f"{np.__version__}; run {time.strftime('%Y-%m-%d %H:%M')} as `python benchmarks/inference.py "
        f"{' '.join(sys.argv[1:])}` ({args.rounds} round(s); each row keeps its best median).",
        f"Load average (1, 5, 15 min) before: {', '.join(f'{v:.2f}' for v in info['load'][0])}; after: "
        f"{', '.join(f'{v:.2f}' for v in info['load'][1])} (other work on the machine skews every time).",
        "",
        f"**This machine has {os.cpu_count()} cores: at most {os.cpu_count()} ranks run at once.** With more ranks "
        "than cores the ranks take turns on the cores, and those rows show what oversubscription costs, not what as "
        "many devices would do. The model is told so by measuring it: every rank serving the whole batch at once "
        '("replicas") gives the device a rank is while p ranks work (`serving_fit.fit_device` on those times), and '
        "the data and pipeline rows are computed on it; for the tensor split, every rank computing its shards at once "
        '("shards", `serving_fit.fit_shard_device`). p / cores, `serving_fit.shared_device`, is what it would be if '
        "turns were free. The links were measured with the same crowding.",
        "",
        f"Device fitted to one rank's times (`serving_fit.fit_device`): {device.flops / 1e9:.1f} GFLOP/s and "
        f"{device.overhead * 1e6:.2f} µs per layer call; for the tensor split, fitted to rank 0's shards timed alone "
        "(`serving_fit.shard_times`, `serving_fit.fit_shard_device`: narrow products run slower): "
        + ", ".join(
            f"p = {p} {d.flops / 1e9:.1f} GFLOP/s and {d.overhead * 1e6:.2f} µs"
            for p, d in sorted(found["shard_devices"].items())
        )
        + '. Under load (`serving_fit.fit_device` on "replicas"): '
        + ", ".join(
            f"{t} p = {p} {d.flops / 1e9:.1f} GFLOP/s and {d.overhead * 1e6:.2f} µs"
            for (t, p), d in sorted(found["loaded"].items())
        )
        + '; the tensor split\'s shards under load (`serving_fit.fit_shard_device` on "shards"): '
        + ", ".join(
            f"{t} p = {p} {d.flops / 1e9:.1f} GFLOP/s and {d.overhead * 1e6:.2f} µs"
            for (t, p), d in sorted(found["loaded_shards"].items())
        )
        + ". Links fitted to labkit's ring all-reduce of 1 kB to 1 MB (`serving_fit.RING_SIZES`, "
        "`serving_fit.fit_ring_link`; collectives) less the shape check every collective starts with (measured on "
        "its own, `fitting.check_time`, and counted once per collective) and to a ping-pong of 1 kB to 256 kB (the "
        "pipeline's messages, `serving_fit.P2P_SIZES`; \"send\": the sender's side alone, `fitting.send_times`, "
        "which a pipeline stage pays for every micro-batch it hands on) and to labkit's all-gather of 256 B to 256 kB "
        "per rank (the column pieces', `serving_fit.GATHER_SIZES`, `serving_fit.fit_gather_link`: its α holds the "
        "all-gather's own setup), each size's best time over the rounds:",
        "",
    ]
    chosen = found["links"]
    for key, (ring, p2p, check, send, gather) in sorted(chosen.items()):
        lines.append(
            f"- {key[0]}, p = {key[1]}: ring {ring}; all-gather {gather}; ping-pong {p2p}; send {send}; "
            f"check {check * 1e6:.1f} µs"
        )
    rows, goal_lines = [], []
    for (transport, p), times in sorted(found["times"].items()):
        (link, p2p, check, send, gather), met = chosen[(transport, p)], []
        served = {k: t for k, t in times.items() if k[0] in SCHEMES}  # "replicas", "shards": the loaded devices
        for (scheme, b), t in sorted(served.items(), key=lambda kv: (SCHEMES.index(kv[0][0]), kv[0][1])):
            one = found["single"][("single", b)]
            if scheme == "tensor":  # its shards, measured on every rank at once
                dev = found["loaded_shards"][(transport, p)]
            else:  # the whole model, measured on every rank at once ("replicas")
                dev = found["loaded"][(transport, p)]
            predicted = serving_fit.predict_time_fitted(
                scheme, b, layers, p, link, dev, p2p=p2p, check=check, send=send, gather=gather
            )
            error = (predicted - t) / t
            if b >= 64:
                met.append((scheme, b, abs(error) <= GOAL))
            rows.append((transport, p, scheme, b, t, b / t, one / t, predicted, error))
        hits = sum(ok for *_, ok in met)
        misses = ", ".join(f"{s} B={b}" for s, b, ok in met if not ok) or "none"
        goal_lines.append(
            f"- {transport}, p = {p}: {hits} of {len(met)} rows with B ≥ 64 within ±25 % (missed: {misses})"
        )
    lines += ["", "## Goal: the α-β prediction within 25 % for batches ≥ 64", "", *goal_lines, ""]
    lines += oversubscribed(found["times"], max(args.batches))
    lines += [
        "Columns: latency = median of the slowest rank's time for one batch; throughput = batch / latency;",
        "speed-up = one rank's latency for the same batch / this latency; model = `serving_fit.predict_time_fitted`",
        "on the fitted device and link; error = (model − measured) / measured.",
        "",
        "One rank (the reference: the whole model, one process, one BLAS thread):",
        "",
        "| batch | latency (ms) | throughput (req/s) | model (ms) | error |",
        "|--:|--:|--:|--:|--:|",
    ]
    for (_, b), t in sorted(found["single"].items(), key=lambda kv: kv[0][1]):
        predicted = serving.predict_time("single", b, layers, 1, cost.Link(0, 0), device)  # no messages
        lines.append(f"| {b} | {_ms(t)} | {b / t:,.0f} | {_ms(predicted)} | {(predicted - t) / t:+.0%} |")
    for transport, p in sorted(found["times"]):
        lines += ["", f"## {transport}, p = {p}", ""]
        lines += ["| scheme | batch | latency (ms) | throughput (req/s) | speed-up | model (ms) | error |"]
        lines += ["|---|--:|--:|--:|--:|--:|--:|"]
        for tr, pp, scheme, b, t, thr, speedup, predicted, error in rows:
            if (tr, pp) == (transport, p):
                flag = " ✓" if b >= 64 and abs(error) <= GOAL else ""
                cells = [scheme, b, _ms(t), f"{thr:,.0f}", f"{speedup:.2f}", _ms(predicted), f"{error:+.0%}{flag}"]
                lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", "✓: a row with B ≥ 64 whose prediction is within ±25 %.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="p = 2, one round, 5 repeats")
    parser.add_argument("--smoke", action="store_true", help="p = 2, one round, batches 16 64 256, 3 repeats")
    parser.add_argument("--p", type=int, nargs="+", help="ranks (default 2 4; --quick: 2)")
    parser.add_argument("--batches", type=int, nargs="+", default=list(serving_fit.BATCHES))
    parser.add_argument("--transports", nargs="+", default=["shm", "mpi"], choices=["shm", "mpi"])
    parser.add_argument("--rounds", type=int, help="measure everything this many times, keep each row's best (3)")
    parser.add_argument("--wait-idle", type=float, default=0, help="wait up to this many seconds for a quiet machine")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for inference.md")
    parser.add_argument(
        "--off-cache",
        type=int,
        help="bytes each rank reads before each timed collective or shard (default: a core's own cache, level 2)",
    )
    args = parser.parse_args()
    if args.smoke:
        args.quick, args.batches = True, [16, 64, 256]
    if args.off_cache is None:
        args.off_cache = fitting.cache_bytes(level=2) or 1 << 20
    args.p = args.p or ([2] if args.quick else [2, 4])
    args.rounds = args.rounds or (1 if args.quick else 3)
    if "mpi" in args.transports and mpirun.mpiexec() is None:
        print("no mpiexec: measuring shm only (pip install mpi4py mpich)")
        args.transports = ["shm"]
    fitting.wait_idle(args.wait_idle)
    load_before = os.getloadavg()
    found = measure_all(args)
    text = report(found, args, {"load": (load_before, os.getloadavg())})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "inference.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
