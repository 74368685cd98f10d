"""Chapter 10's runnable answers: failures that end a run, loss scaling, speed-up models, and measured tables."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from labkit import collectives, comm, cost, native_stderr_silenced
from labkit.comm import mpirun
from labkit.i18n import tr

KIT = Path(__file__).resolve().parents[2]  # the kit: labkit/lessons/this file


def comm_failure(fn: Callable[..., Any], p: int = 2, transport: str = "sim", timeout: float = 5.0) -> str:
    """The message of the `CommError` that a run of ``fn`` ends with (RuntimeError if it ends without one)."""
    try:
        comm.run(fn, p, transport=transport, timeout=timeout)
    except comm.CommError as e:
        return str(e)
    raise RuntimeError(tr("the run of {fn} finished without a CommError", fn=getattr(fn, "__name__", fn)))


_SILENT_MPI = """
from labkit import comm
c = comm.from_mpi(timeout={timeout!r})
if c.rank == 1:
    c.recv(0)  # rank 0 never sends: MPI would wait forever; the watchdog aborts the job
"""


def mpi_hang(timeout: float = 2.0, limit: float = 120.0) -> tuple[int, str] | None:
    """Run two MPI ranks where rank 1 waits for a message rank 0 never sends: (exit code, labkit's stderr line).

    None when there is no mpiexec. ``limit`` bounds the whole launch, in case the watchdog itself fails.
    """
    launcher = mpirun.mpiexec()
    if launcher is None:
        return None
    with tempfile.TemporaryDirectory(prefix="labkit-faq-") as tmp:
        script = Path(tmp) / "silent.py"
        script.write_text(_SILENT_MPI.format(timeout=timeout))
        argv = [launcher, "-n", "2", sys.executable, "-m", "mpi4py", str(script)]
        done = mpirun.run_mpiexec(argv, capture_output=True, text=True, timeout=limit)
    said = [line for line in done.stderr.splitlines() if line.startswith("labkit:")]
    return done.returncode, said[0] if said else done.stderr.strip()[-300:]


def amdahl(f: float, p: Any) -> Any:
    """Amdahl's speed-up 1 / ((1 − f) + f/p) of a job whose fraction f runs in parallel on p workers."""
    p = np.asarray(p, dtype=float)
    return 1.0 / ((1.0 - f) + f / p)


def predicted_speedup(step_compute: float, nbytes: int, p: Any, link: cost.Link, *, algorithm: str = "ring") -> Any:
    """Speed-up of data-parallel steps on p workers: t / (t/p + all-reduce of nbytes), t = one worker's compute."""
    ps = np.atleast_1d(np.asarray(p, dtype=int))
    comm_s = np.array([cost.allreduce_time(algorithm, nbytes, int(q), link) if q > 1 else 0.0 for q in ps])
    out = step_compute / (step_compute / ps + comm_s)
    return out if np.ndim(p) else float(out[0])


def markdown_table(text: str, after: str = "") -> list[dict[str, str]]:
    """The rows of the first Markdown table that follows the line starting with ``after``, as header → cell."""
    lines = text.splitlines()
    if after:
        starts = [i for i, line in enumerate(lines) if line.startswith(after)]
        if not starts:
            raise ValueError(f"no line starts with {after!r}: check the heading of the table you want")
        lines = lines[starts[0] :]
    first = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if first is None:
        raise ValueError("no Markdown table found")
    block = []
    for line in lines[first:]:  # the table ends at its first non-table line
        if not line.startswith("|"):
            break
        block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return [dict(zip(block[0], row, strict=False)) for row in block[2:]]  # block[1]: the |---| line


def mpi_epochs(path: Path | None = None) -> dict[int, dict[str, float]]:
    """Table (b) of benchmarks/results/train.md: per MPI process count, the epoch, all-reduce and compute seconds."""
    text = Path(path or KIT / "benchmarks" / "results" / "train.md").read_text()
    out = {}
    for row in markdown_table(text, after="## (b)"):
        speedup = re.sub(r"[^\d.]", "", row["speed-up"])
        out[int(row["processes"])] = {
            "steps": float(row["steps"]),
            "epoch": float(row["epoch"]),
            "speedup": float(speedup),
            "allreduce": float(row["all-reduce"]),
            "compute": float(row["compute"]),
        }
    return out


def shard_mean(g: np.ndarray, p: int) -> np.ndarray:
    """The batch-mean gradient as p data-parallel workers compute it: each its shard's mean, ring all-reduce, / p."""
    shards = np.array_split(g, p)
    run = comm.run(lambda c: collectives.allreduce(shards[c.rank].mean(axis=0), c, algorithm="ring"), p)
    return run.values[0] / p


def tiny_mixed_model(policy: str = "mixed_float16", seed: int = 0):
    """An 8 → 16 → 1 Keras MLP computing in ``policy``, its output cast to float32 (as mixed precision advises)."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu", dtype=policy),
            keras.layers.Dense(1, dtype=policy),
            keras.layers.Activation("linear", dtype="float32"),  # the loss is computed in float32
        ]
    )


def gradients(model, x: np.ndarray, y: np.ndarray, scale: float = 1.0, loss_factor: float = 1.0) -> list[np.ndarray]:
    """∂(loss_factor · MSE)/∂weights, back-propagated with the loss multiplied by ``scale`` and divided after."""
    import tensorflow as tf

    # oneDNN prints a one-time C++ notice on CPUs without AVX-512 float16 support; Python errors still raise
    with native_stderr_silenced(), tf.GradientTape() as tape:
        loss = loss_factor * tf.reduce_mean((model(x) - y) ** 2)
        scaled = loss * scale
    with native_stderr_silenced():
        grads = tape.gradient(scaled, model.trainable_variables)
    return [g.numpy().astype(np.float64) / scale for g in grads]


def train_loss_scaled(model, x: np.ndarray, y: np.ndarray, steps: int, initial_scale: float = 2.0**15) -> dict:
    """A GradientTape loop with Keras 3's LossScaleOptimizer (SGD 0.1): loss and loss scale per step, and updates."""
    import keras
    import tensorflow as tf

    opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1), initial_scale=initial_scale)
    losses, scales = [], []
    for _ in range(steps):
        with native_stderr_silenced(), tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x) - y) ** 2)
            scaled = opt.scale_loss(loss)  # loss × the current scale
        grads = tape.gradient(scaled, model.trainable_variables)
        opt.apply(grads, model.trainable_variables)  # divides by the scale; skips the step if any is inf/NaN
        losses.append(float(loss))
        scales.append(float(opt.dynamic_scale))
    return {"loss": losses, "scale": scales, "updates": int(opt.iterations)}


_MIRRORED = """
import json
import labkit
from labkit import data
from labkit.lessons import practice
labkit.setup(seed=0)
devices = practice.logical_cpus({replicas})  # before TensorFlow starts its runtime: hence a fresh process
x, y = data.load("mnist", "train", n={n}, verbose=False)
test = data.load("mnist", "test", n=500, verbose=False)
print(json.dumps(practice.mirrored_fit(x, y, test, devices, epochs={epochs})))
"""


def mirrored_in_subprocess(replicas: int = 2, n: int = 1024, epochs: int = 1, timeout: float = 300.0) -> dict:
    """Keras ``fit`` under MirroredStrategy on ``replicas`` logical CPU devices, run in a fresh Python process."""
    code = _MIRRORED.format(replicas=replicas, n=n, epochs=epochs)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"MirroredStrategy run failed (exit {done.returncode}):\n{done.stderr.strip()[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
