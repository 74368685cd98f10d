"""labkit: distributed deep learning, taught by running it.

``import labkit`` stays light (no TensorFlow): the comm/collectives/cost core also starts in spawned processes
and in the cost explorer. Modules that train or serve models import TensorFlow themselves.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import os
import platform
import random
import shutil
import sys
from importlib import metadata

import numpy as np

__version__ = "0.1.0"

#: Modules that moved into a folder, under the names notebooks, tests and older code import them by:
#: ``from labkit import memory`` and ``import labkit.memory`` give `labkit.parallel.memory` itself (the same module
#: object, not a copy), and ``python -m labkit.teach`` runs `labkit.lessons.teach`.
MOVED = {
    "dataparallel": "labkit.parallel.data",
    "memory": "labkit.parallel.memory",
    "llm": "labkit.parallel.llm",
    "widgets": "labkit.viz.widgets",
    "plots": "labkit.viz.plots",
    "article": "labkit.lessons.article",
    "background": "labkit.lessons.background",
    "practice": "labkit.lessons.practice",
    "faq": "labkit.lessons.faq",
    "claims": "labkit.lessons.claims",
    "check": "labkit.lessons.check",
    "teach": "labkit.lessons.teach",
    "exercises": "labkit.lessons.exercises",
    "concepts": "labkit.lessons.concepts",
    "steps": "labkit.viz.steps",
    "tensor_parallel": "labkit.parallel.tensor",
    "pipeline": "labkit.parallel.pipeline",
    "serving": "labkit.parallel.serving",
}


def __getattr__(name: str):
    """``labkit.memory`` and ``from labkit import memory``: import the module where it lives now."""
    if name in MOVED:
        return importlib.import_module(MOVED[name])
    raise AttributeError(f"module 'labkit' has no attribute {name!r}")


class _MovedModule(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import labkit.memory`` (and ``labkit.exercises.ch01`` below a moved package) finds the module under its new
    name and registers that same object under the old one; its ``__spec__`` stays the real one (pickling, reload)."""

    _real_specs: dict = {}  # alias name → the real module's spec

    def find_spec(self, fullname, path=None, target=None):
        parts = fullname.split(".")
        if len(parts) < 2 or parts[0] != "labkit" or parts[1] not in MOVED:
            return None
        new = ".".join([MOVED[parts[1]], *parts[2:]])
        real = importlib.util.find_spec(new)
        if real is None:
            return None
        spec = importlib.util.spec_from_loader(fullname, self, origin=real.origin)
        spec.loader_state, spec.has_location = new, real.has_location  # __file__ stays the real file's
        return spec

    def create_module(self, spec):
        module = importlib.import_module(spec.loader_state)
        if module.__spec__.name == spec.loader_state:  # not yet written over by an alias's spec (imports can nest)
            self._real_specs[spec.name] = module.__spec__  # the import system writes the alias's spec over it next
        return module

    def exec_module(self, module) -> None:  # the real module already ran: only give it back its own spec
        module.__spec__ = self._real_specs[module.__spec__.name]

    def get_code(self, fullname):  # for ``python -m labkit.teach``
        parts = fullname.split(".")
        new = ".".join([MOVED[parts[1]], *parts[2:]])
        return importlib.util.find_spec(new).loader.get_code(new)


sys.meta_path.insert(0, _MovedModule())  # before the path finder, so a moved package's modules load only once

PLOT_STYLE = {
    "figure.figsize": (7.0, 3.6),
    "figure.dpi": 90,  # small PNGs keep committed notebooks light
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
}


def setup(seed: int = 0, tensorflow: bool = True, lang: str | None = None) -> None:
    """Seed Python, NumPy (and TensorFlow), quiet TensorFlow's start-up logging, and set labkit's plot style.

    ``tensorflow=False`` leaves TensorFlow unimported (chapters that only communicate start faster). ``lang="zh"``
    makes the kit speak Chinese (`labkit.i18n`); None keeps the language set before, or $LABKIT_LANG, or English.
    """
    from labkit import i18n

    if lang is not None:
        i18n.check_language(lang)  # a typo fails before anything is seeded
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # must be set before TensorFlow is imported
    random.seed(seed)
    np.random.seed(seed)
    if tensorflow:
        import_tensorflow().keras.utils.set_random_seed(seed)  # Python, NumPy and TensorFlow in one call
    try:
        import matplotlib

        matplotlib.rcParams.update(PLOT_STYLE)
    except ImportError:  # matplotlib is a dependency, but setup() should not be the thing that fails
        return
    i18n.set_language(i18n.language() if lang is None else lang)  # after the style: it sets the CJK font
    _inline_figures()


@contextlib.contextmanager
def native_stderr_silenced():
    """Point file descriptor 2 at /dev/null for a moment (Python exceptions are unaffected)."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr (some embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow():
    """Import TensorFlow quietly and return it.

    TensorFlow's C++ start-up lines (oneDNN notices, "could not find cuda drivers", cuInit) go to stderr before any
    log level applies and would fill a notebook's first cell; they are sent to /dev/null while it loads and looks
    for GPUs. Later warnings and errors are shown as usual.
    """
    import sys

    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import logging

    with native_stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()
    tf.get_logger().setLevel(logging.ERROR)
    return tf


def _inline_figures() -> None:
    """In a notebook, show matplotlib Figures (also those made without pyplot) as images, as `%matplotlib inline`."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and hasattr(shell, "kernel"):
        shell.run_line_magic("matplotlib", "inline")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def about(verbose: bool = True) -> dict[str, str]:
    """Versions, cores, memory and data sources of this machine, printed as a table and returned as a dict."""
    from labkit import data

    info = {
        "labkit": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cores": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
    }
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory"] = f"{pages * size / 2**30:.1f} GiB"
    except (ValueError, OSError, AttributeError):
        info["memory"] = "unknown"
    for dist in ("numpy", "tensorflow", "keras", "jupyterlab", "ipywidgets", "matplotlib", "mpi4py", "mpich"):
        info[dist] = _version(dist)
    if shutil.which("mpiexec", path=os.path.dirname(sys.executable)):
        info["mpiexec"] = "found next to this Python"
    elif shutil.which("mpiexec"):
        info["mpiexec"] = "found on PATH"
    else:
        info["mpiexec"] = "not found: pip install mpi4py mpich"
    for name in data.NAMES:
        try:
            info[f"data: {name}"] = data.find(name, allow_download=False).note
        except data.DataError as e:
            info[f"data: {name}"] = f"not available ({str(e).split(':')[0]})"
    if verbose:
        width = max(map(len, info))
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return info
