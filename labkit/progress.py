"""The text progress bar of training runs, and how a process knows that mpiexec started it."""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from labkit.i18n import tr

if TYPE_CHECKING:
    from labkit.train import History


def under_mpiexec() -> bool:
    """True in a process that mpiexec started (MPICH's Hydra, Open MPI, or PMIx set these)."""
    return any(k in os.environ for k in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"))


class Progress:
    """A text progress bar, redrawn in place with ``\\r`` (terminals and notebooks alike), and a line per epoch.

    ``live=None`` draws the bar where someone watches (a terminal, a notebook, mpiexec's forwarded output) and only
    the epoch lines where output goes to a file.
    """

    def __init__(self, width: int = 24, every: float = 0.2, stream: Any = None, live: bool | None = None) -> None:
        self.width, self.every, self.stream = width, every, stream or sys.stdout
        self.live = _watched(self.stream) if live is None else live
        self.shown, self.last, self.begun = 0.0, 0, time.monotonic()

    def _write(self, text: str, end: str = "") -> None:
        self.stream.write("\r" + text.ljust(self.last) + end)  # spaces wipe out a longer line drawn before
        self.stream.flush()
        self.last = 0 if end else len(text)

    def on_step(self, h: History) -> None:
        now, done = time.monotonic(), (len(h.loss) - 1) % h.steps_per_epoch + 1
        if done == 1:
            self.begun = now
        if not self.live or (now - self.shown < self.every and done < h.steps_per_epoch):
            return
        self.shown, filled = now, self.width * done // h.steps_per_epoch
        left = (now - self.begun) / done * (h.steps_per_epoch - done)
        self._write(
            tr(
                "epoch {epoch}/{epochs} {bar} {done}/{steps} loss {loss:.4f} ({left:.0f} s left)",
                epoch=len(h.epoch_loss) + 1,
                epochs=h.config.epochs,
                bar="█" * filled + "·" * (self.width - filled),
                done=done,
                steps=h.steps_per_epoch,
                loss=np.mean(h.loss[-done:][-50:]),
                left=left,
            )
        )

    def on_epoch(self, h: History) -> None:
        acc = tr(", test accuracy {acc:.2%}", acc=h.epoch_accuracy[-1]) if h.epoch_accuracy else ""
        modelled = np.mean(h.modelled_seconds[-h.steps_per_epoch :])
        line = tr(
            "epoch {epoch}/{epochs}: loss {loss:.4f}{acc}, {seconds:.1f} s; a step sends {nbytes:,} B (busiest "
            "worker), {ms:.3g} ms modelled",
            epoch=len(h.epoch_loss),
            epochs=h.config.epochs,
            loss=h.epoch_loss[-1],
            acc=acc,
            seconds=h.epoch_seconds[-1],
            nbytes=h.bytes_sent[-1],
            ms=modelled * 1e3,
        )
        self._write(line, end="\n")


def _watched(stream: Any) -> bool:
    """True if someone watches the stream live: a terminal, a Jupyter kernel, or mpiexec forwarding to a terminal."""
    if under_mpiexec() or ("ipykernel" in sys.modules and stream in (sys.stdout, sys.stderr)):
        return True
    return bool(getattr(stream, "isatty", lambda: False)())
