"""Chapter 5's helpers: live loss curves, MPI training launched from a notebook, tf.distribute on CPU devices,
and the scaling efficiency that the α-β model predicts."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from labkit import cost
from labkit.comm import mpirun
from labkit.i18n import plot_tr, tr


class LiveLoss:
    """A training callback that redraws one loss plot in place every ``every`` steps (one curve per run)."""

    def __init__(self, title: str | None = None, every: int = 10) -> None:
        self.every, self.title = every, title
        self.curves: dict[str, list[float]] = {}
        self.handle: Any = None
        self.name = ""

    def start(self, name: str) -> LiveLoss:
        """Begin a new curve; the callbacks that follow add to it."""
        self.name = name
        self.curves[name] = []
        return self

    def figure(self):
        """The current plot: loss per step for every run so far."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 3.2), dpi=80)
        ax = fig.subplots()
        fig.subplots_adjust(left=0.1, right=0.98, bottom=0.16, top=0.88)
        for name, loss in self.curves.items():
            ax.plot(np.arange(1, len(loss) + 1), loss, label=name, linewidth=1)
        title = plot_tr("Training loss") if self.title is None else self.title
        ax.set(title=title, xlabel=plot_tr("step"), ylabel=plot_tr("cross-entropy loss"))
        if self.curves:
            ax.legend(fontsize=8)
        return fig

    def on_step(self, h) -> None:
        self.curves[self.name] = list(h.loss)
        if len(h.loss) % self.every == 0:
            self._show()

    def on_epoch(self, h) -> None:
        self.curves[self.name] = list(h.loss)
        self._show()

    def _show(self) -> None:
        try:
            from IPython.display import display
        except ImportError:
            return
        fig = self.figure()
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)


def launch(p: int, timeout: float = 600.0, **options: Any) -> dict:
    """Run ``mpiexec -n p python -m labkit.train --option value …`` and return rank 0's history (JSON) as a dict.

    ``options`` become command-line flags (``n_train=1024`` → ``--n-train 1024``; ``quiet=True`` → ``--quiet``).
    """
    launcher = mpirun.require_mpiexec()
    flags: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value not in (None, False):
            flags += [flag, str(value)]
    with tempfile.TemporaryDirectory(prefix="labkit-train-") as tmp:
        out = Path(tmp) / "history.json"
        argv = [launcher, "-n", str(p), sys.executable, "-m", "labkit.train", *flags, "--out", str(out), "--quiet"]
        done = mpirun.run_mpiexec(argv, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0 or not out.exists():
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
            raise RuntimeError(f"mpiexec -n {p} python -m labkit.train failed (exit {done.returncode}):\n{tail}")
        return json.loads(out.read_text())


def command(p: int, hosts: str | None = None, **options: Any) -> str:
    """The shell command that trains with p MPI processes (across machines when ``hosts`` names a hostfile)."""
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in options.items())
    where = f" -f {hosts}" if hosts else ""
    return f"mpiexec{where} -n {p} python -m labkit.train {flags}".strip()


def logical_cpus(n: int) -> list[str]:
    """Split this machine's CPU into ``n`` logical TensorFlow devices (before TensorFlow runs any op)."""
    from labkit import import_tensorflow

    tf = import_tensorflow()
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:  # (listing the logical devices would start the runtime, after which they cannot change)
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        names = [d.name for d in tf.config.list_logical_devices("CPU")]
        if len(names) != n:
            raise RuntimeError(
                tr(
                    "TensorFlow already runs with {k} CPU device(s): call practice.logical_cpus({n}) before "
                    "anything else uses TensorFlow (restart the kernel and run it first)",
                    k=len(names),
                    n=n,
                )
            ) from None
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def mirrored_fit(x, y, test, devices: list[str], epochs: int = 2, batch_size: int = 64, seed: int = 0) -> dict:
    """The article's MLP trained by Keras 3 ``fit`` under tf.distribute.MirroredStrategy on the given devices."""
    from labkit import import_tensorflow, models

    tf = import_tensorflow()
    strategy = tf.distribute.MirroredStrategy(devices=devices)
    with strategy.scope():
        model = models.article_mlp(seed=seed)
        models.compile_article(model)
    history = model.fit(models.flatten(x), y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=False)
    _, accuracy = model.evaluate(models.flatten(test[0]), test[1], verbose=0)
    return {"replicas": strategy.num_replicas_in_sync, "loss": history.history["loss"], "accuracy": float(accuracy)}


def predicted_epoch(compute_1: float, steps: int, nbytes: int, p: int, link: cost.Link, cores: int) -> float:
    """Seconds per epoch that the model predicts for p workers: compute shared by min(p, cores) cores + all-reduces.

    compute_1 is one worker's measured compute per epoch; each step adds one ring all-reduce of the gradients.
    """
    return compute_1 / min(p, cores) + steps * cost.allreduce_time("ring", nbytes, p, link)
