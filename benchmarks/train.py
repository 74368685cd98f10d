"""Data-parallel training of the article's MLP: accuracy of p simulated workers against one, and time per epoch of
1, 2 and 4 MPI processes beside the α-β model's communication time.

    python benchmarks/train.py             # 10 epochs on full Fashion-MNIST (and MNIST), p = 1, 2, 4, 8 (~15 min)
    python benchmarks/train.py --quick     # 2 epochs on 10,000 images, p = 1, 2, 4 (a few minutes)
    python benchmarks/train.py --floatx float64 --no-mpi    # the same in float64 (train_float64.md)
    python benchmarks/train.py --smoke     # 1 epoch on 640 images, p = 1, 2, MPI on 2 ranks (a test runs it)

(a) Accuracy: `labkit.train.train` on ``"sim"`` with the same global batch (64) and seed for every p; the test
accuracy after the last epoch and its gap to the single worker in percentage points. A second single-worker seed
shows how far runs that differ only in float rounding can drift apart by chance.
(b) Time: ``mpiexec -n P python -m labkit.train`` (one worker a process); the last epoch's time (the first one
includes tracing), the time its ranks spent in the all-reduce (measured on rank 0, waiting included), and the
model: steps × `cost.allreduce_time` on the link `labkit.measure` fits to this machine's MPI ring exchange, and on
the "shared memory" preset. Writes benchmarks/results/train.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from labkit import cost, data, measure  # noqa: E402
from labkit.comm import mpirun  # noqa: E402

RESULTS = Path(os.environ.get("LABKIT_RESULTS") or Path(__file__).resolve().parent / "results")  # tests: a temp dir
BATCH = 64  # the global batch of the measured baseline (87.4 % on Fashion-MNIST after 10 epochs)
GOALS = {"fashion_mnist": 0.875, "mnist": 0.978}  # on the full data sets


def load(name: str, n_train: int | None) -> tuple | str:
    """(train, test, what it is) for a data set, or why it is not here."""
    try:
        src = data.find(name, allow_download=False)
    except data.DataError:
        return "not available here"
    what = "full" if src.kind != "subset" else "offline subset (4,000 / 1,000)"
    if n_train:
        what += f", first {n_train:,} training images"
    return data.load(name, "train", n=n_train, verbose=False), data.load(name, "test", verbose=False), what


class FirstEpoch:
    """A callback that keeps the weights after the first epoch (to see how close the runs still are then)."""

    def __init__(self) -> None:
        self.weights = None

    def on_epoch(self, h) -> None:
        if len(h.epoch_loss) == 1:
            self.weights = flat(h.model.get_weights())


def flat(weights) -> np.ndarray:
    return np.concatenate([np.ravel(w) for w in weights])


def accuracy_rows(args) -> tuple[list[dict], list[str]]:
    """One row per (data set, p, seed): test accuracy after the first and last epoch, and the paired gaps to p = 1.

    Runs with the same seed start from the same weights and see the same batches, so a p-worker run is compared
    with the single worker of its own seed: the difference is float rounding, nothing else.
    """
    from labkit import train

    rows, notes = [], []
    for name in ("fashion_mnist", "mnist"):
        got = load(name, args.n_train)
        if isinstance(got, str):
            notes.append(f"{name}: {got}")
            continue
        (x, y), test, what = got
        if name == "mnist" and "subset" in what:
            notes.append("full MNIST: not available here (offline); the MNIST rows use the offline subset")
        for seed in args.seeds:
            for p in args.p:
                print(f"{name}: {p} worker(s), seed {seed} …", flush=True)
                start, first = time.perf_counter(), FirstEpoch()
                h = train.train(
                    x,
                    y,
                    world_size=p,
                    batch_size=BATCH,
                    epochs=args.epochs,
                    seed=seed,
                    test=test,
                    callbacks=[first],
                    progress=False,
                )
                rows.append(
                    {"data": name, "what": what, "p": p, "seed": seed, "accuracy": h.epoch_accuracy}
                    | {"seconds": time.perf_counter() - start, "bytes": h.bytes_sent[-1]}
                    | {"modelled": h.modelled_seconds[-1], "identical": h.identical}
                    | {"w1": first.weights, "w": flat(h.weights)}
                )
    for r in rows:
        base = next(b for b in rows if (b["data"], b["p"], b["seed"]) == (r["data"], 1, r["seed"]))
        r["gap1"] = 100 * (r["accuracy"][0] - base["accuracy"][0])
        r["gap"] = 100 * (r["accuracy"][-1] - base["accuracy"][-1])
        r["dw1"] = float(np.max(np.abs(r["w1"] - base["w1"])))
        r["dw"] = float(np.max(np.abs(r["w"] - base["w"])))
    return rows, notes


def run_mpi(p: int, args, name: str) -> dict | str:
    """The history JSON of ``mpiexec -n p python -m labkit.train``, or why it failed."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "history.json"
        argv = [mpirun.mpiexec(), "-n", str(p), sys.executable, "-m", "labkit.train", "--dataset", name]
        argv += ["--epochs", str(args.mpi_epochs), "--batch-size", str(BATCH), "--quiet", "--out", str(out)]
        argv += ["--n-train", str(args.n_train)] if args.n_train else []
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        done = subprocess.run(argv, capture_output=True, text=True, timeout=7200, env=env)
        if done.returncode != 0 or not out.exists():
            return f"mpiexec -n {p} failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}"
        return json.loads(out.read_text())


def mpi_rows(args) -> tuple[list[dict], list[str]]:
    """One row per number of MPI processes: measured epoch, all-reduce and compute time, and the model's."""
    if mpirun.mpiexec() is None:
        return [], ["MPI: no mpiexec found (pip install mpi4py mpich)"]
    name = "fashion_mnist" if not isinstance(load("fashion_mnist", None), str) else "mnist"
    rows, notes, shm = [], [], cost.preset("shared memory")
    for p in args.ranks:
        print(f"MPI: {p} process(es) …", flush=True)
        got = run_mpi(p, args, name)
        if isinstance(got, str):
            notes.append(got)
            continue
        steps, nbytes = got["steps_per_epoch"], 4 * got["nparams"]
        row = {"p": p, "data": name, "steps": steps, "epoch": got["epoch_seconds"][-1], "threads": got["threads"]}
        row |= {"comm": sum(got["comm_seconds"][-steps:]), "accuracy": got["epoch_accuracy"][-1]}
        row |= {"identical": got["identical"], "model_shm": steps * cost.allreduce_time("ring", nbytes, p, shm)}
        if p > 1:
            m = measure.measure_mpi(p, algorithms=("ring",), sizes=(nbytes,), repeats=30)
            row |= {"link": m.link("exchange", with_gamma=False), "alone": steps * m.allreduce[("ring", nbytes)]}
            row["model_fit"] = steps * cost.allreduce_time("ring", nbytes, p, row["link"])
        rows.append(row)
    return rows, notes


def _s(t: float | None) -> str:
    return "" if t is None else f"{t:.2f}"


def _mean(values) -> float:
    return float(np.mean(list(values)))


def accuracy_goals(acc: list[dict], args) -> list[str]:
    """The accuracy goals: one worker's accuracy (mean over seeds), each p's mean paired gap, the chance spread."""
    out = []
    for name, goal in GOALS.items():
        base = [r for r in acc if r["data"] == name and r["p"] == 1]
        if not base:
            out.append(f"- {name} ≥ {goal:.1%}: not available here.")
            continue
        mean, each = _mean(r["accuracy"][-1] for r in base), ", ".join(f"{r['accuracy'][-1]:.2%}" for r in base)
        verdict = ("met" if mean >= goal else "missed") if base[0]["what"] == "full" else "not applicable (subset)"
        out.append(
            f"- {name} ({base[0]['what']}) ≥ {goal:.1%}: one worker, {args.epochs} epochs, mean over seeds"
            f" {args.seeds} {mean:.2%} (each: {each}): {verdict}."
        )
    for name in dict.fromkeys(r["data"] for r in acc):
        runs = [r for r in acc if r["data"] == name]
        ones = [r["accuracy"][-1] for r in runs if r["p"] == 1]
        means, parts, inside = [], [], []
        for p in sorted({r["p"] for r in runs} - {1}):
            gaps = [r["gap"] for r in runs if r["p"] == p]
            means.append(_mean(gaps))
            parts.append(f"p = {p} {means[-1]:+.2f} (largest {max(gaps, key=abs):+.2f})")
            inside.append(min(ones) <= _mean(r["accuracy"][-1] for r in runs if r["p"] == p) <= max(ones))
        if parts:
            out.append(
                f"- {name}, every data-parallel run within 0.3 points of one worker, mean paired gap over seeds:"
                f" {'; '.join(parts)}: {'met' if max(map(abs, means)) <= 0.3 else 'missed'}. For scale, one worker's"
                f" accuracy spreads over {100 * (max(ones) - min(ones)):.2f} points from seed to seed"
                f" ({min(ones):.2%} … {max(ones):.2%}); the mean accuracy of every p lies"
                f" {'inside' if all(inside) else 'OUTSIDE'} that range."
            )
    return out


def accuracy_tables(acc: list[dict], args) -> list[str]:
    lines = [
        f'## (a) Accuracy after {args.epochs} epochs: p simulated workers against one (`transport="sim"`)',
        "",
        "Same global batch (64), seed, initial weights and batch order for every p; each worker computes the gradient"
        " of its 64/p examples, the gradients are all-reduced (ring) and averaged. A p-worker run is compared with"
        " the single worker of its own seed (paired): gap = its test accuracy − that worker's, in percentage points;"
        " max |Δw| = the largest difference of any weight. The runs differ by float rounding only (the"
        " order in which the batch's gradients are summed); over thousands of Adam steps such differences can grow,"
        " and the last-epoch columns show how far. bytes and modelled time are per step on the default link"
        " (10 GbE: 20 µs, 1.25 GB/s). Wall time is of this process, which computes the p workers' gradients one"
        " after another.",
        "",
        *[f"- {name}: {what}" for name, what in dict.fromkeys((r["data"], r["what"]) for r in acc)],
        "",
        "| data | workers | seed | accuracy, epoch 1 | gap | max \\|Δw\\|, epoch 1 | accuracy, last epoch | gap |"
        " max \\|Δw\\|, last | bytes sent / step (busiest worker) | modelled comm / step | replicas identical |"
        " wall time |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|",
    ]
    for r in acc:
        lines.append(
            f"| {r['data']} | {r['p']} | {r['seed']} | {r['accuracy'][0]:.2%} | {r['gap1']:+.2f} |"
            f" {r['dw1']:.1e} | {r['accuracy'][-1]:.2%} | {r['gap']:+.2f} | {r['dw']:.1e} | {r['bytes']:,} |"
            f" {r['modelled'] * 1e3:.3f} ms | {'yes' if r['identical'] else 'NO'} | {r['seconds']:.0f} s |"
        )
    lines += [
        "",
        f"Summary over seeds {args.seeds} (accuracy after the last epoch):",
        "",
        "| data | workers | mean accuracy | mean paired gap (points) | largest gap | mean max \\|Δw\\| after epoch 1 |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for name in dict.fromkeys(r["data"] for r in acc):
        for p in sorted({r["p"] for r in acc if r["data"] == name}):
            runs = [r for r in acc if r["data"] == name and r["p"] == p]
            lines.append(
                f"| {name} | {p} | {_mean(r['accuracy'][-1] for r in runs):.2%} |"
                f" {_mean(r['gap'] for r in runs):+.2f} | {max((r['gap'] for r in runs), key=abs):+.2f} |"
                f" {_mean(r['dw1'] for r in runs):.1e} |"
            )
    return lines


def report(acc: list[dict], mpi: list[dict], notes: list[str], info: dict, args) -> str:
    loads = "; ".join(f"{k}: {', '.join(f'{x:.2f}' for x in v)}" for k, v in info["load"].items())
    lines = [
        "# Data-parallel training benchmark (the article's MLP, 89,610 parameters, Adam 1e-3, global batch 64)"
        + ("" if args.floatx == "float32" else f", in {args.floatx}"),
        "",
        f"Machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()};"
        f" run {time.strftime('%Y-%m-%d %H:%M')} as `python benchmarks/train.py {' '.join(sys.argv[1:])}`.",
        f"Load average (1, 5, 15 min) — {loads} (other work on the machine slows every time).",
        "",
        *[f"Note: {note}." for note in notes],
        "",
        "## Goals",
        "",
    ]
    lines += accuracy_goals(acc, args)
    one = next((r for r in mpi if r["p"] == 1), None)
    for r in mpi:
        speed = f" ({one['epoch'] / r['epoch']:.2f}× one process)" if one and r["p"] > 1 else ""
        model = f", modelled {r['model_fit']:.2f} s on the fitted link" if "model_fit" in r else ""
        lines.append(
            f"- time per epoch on {r['p']} MPI process(es): {r['epoch']:.2f} s{speed}; all-reduce {r['comm']:.2f} s"
            f" measured{model}; compute {r['epoch'] - r['comm']:.2f} s."
        )
    lines += ["", *accuracy_tables(acc, args)]
    lines += [
        "",
        f"## (b) Time per epoch on MPI processes (`mpiexec -n P python -m labkit.train`, epoch {args.mpi_epochs}"
        " of each run)",
        "",
        "epoch = the slowest rank's training time (no evaluation); all-reduce = the time rank 0 spent in the exchange"
        " during that epoch (waiting for slower ranks included); compute = epoch − all-reduce (gradients, updates,"
        " bookkeeping). alone = steps × the ring all-reduce of 358,440 bytes timed by `labkit.measure` with nothing"
        " else running; model = steps × `cost.allreduce_time('ring', 358,440, P, link)` on the link fitted to the"
        " measured MPI ring exchange, and on the 'shared memory' preset (0.5 µs, 16 GB/s). All times in seconds per"
        " epoch; TensorFlow gets cores/P threads per process (at least 1).",
        "",
        "| processes | data | batch / rank | steps | epoch | speed-up | all-reduce | compute | alone |"
        " model (fitted link) | model (shm preset) | fitted link | test accuracy | identical |",
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|---|",
    ]
    one = next((r["epoch"] for r in mpi if r["p"] == 1), None)
    for r in mpi:
        link = repr(r["link"]) if "link" in r else ""
        lines.append(
            f"| {r['p']} | {r['data']} | {BATCH // r['p']} | {r['steps']} | {r['epoch']:.2f} |"
            f" {one / r['epoch'] if one else float('nan'):.2f}× | {r['comm']:.2f} | {r['epoch'] - r['comm']:.2f} |"
            f" {_s(r.get('alone'))} | {_s(r.get('model_fit'))} | {r['model_shm']:.3f} | {link} |"
            f" {r['accuracy']:.2%} | {'yes' if r['identical'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs on 10,000 images, p = 1, 2, 4")
    parser.add_argument("--smoke", action="store_true", help="1 epoch on 640 images, p = 1, 2; MPI: 2 ranks, 1 epoch")
    parser.add_argument("--epochs", type=int, help="epochs of the accuracy runs (default 10; quick 2)")
    parser.add_argument("--p", type=int, nargs="+", help="simulated workers (default 1 2 4 8; quick 1 2 4)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4], help="MPI processes (default 1 2 4)")
    parser.add_argument("--n-train", type=int, help="train on the first N images (default all; quick 10,000)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds of the accuracy runs (default 0 1 2; quick 0)")
    parser.add_argument("--mpi-epochs", type=int, default=2, help="epochs of each MPI run; the last is reported")
    parser.add_argument("--no-mpi", action="store_true", help="skip part (b)")
    parser.add_argument(
        "--floatx",
        choices=["float32", "float64"],
        default="float32",
        help="Keras's float type for the models (float64: do the gaps to one worker shrink?)",
    )
    parser.add_argument("--out", type=Path, help="default benchmarks/results/train.md (train_float64.md)")
    args = parser.parse_args()
    if args.smoke:
        args.quick, args.epochs, args.p, args.n_train = True, args.epochs or 1, args.p or [1, 2], args.n_train or 640
        args.ranks, args.mpi_epochs = [2], 1
    args.out = args.out or RESULTS / ("train.md" if args.floatx == "float32" else f"train_{args.floatx}.md")
    if args.floatx != "float32":
        import keras

        keras.config.set_floatx(args.floatx)  # before any model is built: layers take their dtype from it
    args.epochs = args.epochs or (2 if args.quick else 10)
    args.p = args.p or ([1, 2, 4] if args.quick else [1, 2, 4, 8])
    args.n_train = args.n_train or (10_000 if args.quick else None)
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    os.environ.setdefault("LABKIT_OFFLINE", "1")  # use what is on this machine; never download in a benchmark
    info = {"load": {"before": os.getloadavg()}}
    acc, notes = accuracy_rows(args)
    info["load"]["after (a)"] = os.getloadavg()
    mpi, mpi_notes = ([], ["MPI part skipped (--no-mpi)"]) if args.no_mpi else mpi_rows(args)
    info["load"]["after (b)"] = os.getloadavg()
    text = report(acc, mpi, notes + mpi_notes, info, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
