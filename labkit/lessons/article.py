"""The article's code, kept verbatim for study, the helpers that run it and say what goes wrong, and the repair.

`SECTION3_CODE` and `SECTION4_CODE` are quoted from the article (sections 3 and 4) so that chapter 4 can run them as
written. Nothing here imports them as a program: `run_snippet` execs a piece in a namespace and returns an
`Outcome` (the exception's type and first line) instead of a traceback. The article's process pool is replaced by
`StandInPool`, which runs each task in this process on pickled copies of its arguments, as a process pool does:
TensorFlow must never be forked, and spawning processes costs seconds (`copies_in_processes` does it once, for real).
Keras 3 models and optimisers do pickle (through Keras's saving library); what a worker receives is a copy.

The repair is `simple_data_parallel_step`, the simple teaching version of data-parallel SGD (the full trainer is
`labkit.train`). Importing this module imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import pickle
import warnings
from collections import namedtuple
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from labkit import import_tensorflow
from labkit.i18n import tr

tf = import_tensorflow()
import keras  # noqa: E402  (after TensorFlow, as in labkit.models)

# The article's code, verbatim, lives in `article_text`; chapter 4 reaches it here.
from labkit.lessons.article_text import SECTION3_CODE, SECTION4_CODE  # noqa: E402, F401

# The repair lives in `labkit.lessons.repair`; chapter 4 reaches it here too, beside what it repairs.
from labkit.lessons.repair import (  # noqa: E402, F401
    LOSS,
    SimTraining,
    batches,
    make_optimizer,
    simple_data_parallel_step,
    train_on_sim,
    train_one_worker,
)


@dataclass
class Outcome:
    """How running a piece of code ended: ``ok``, or the exception's type and the first line of its message."""

    ok: bool
    error_type: str | None = None
    message: str = ""
    stdout: str = ""  # what the code printed
    warnings: list[str] = field(default_factory=list)  # "Category: first line" of each warning it raised

    def __str__(self) -> str:
        if self.ok:
            return tr("ran to the end without an error")
        return tr("{error_type}: {message}", error_type=self.error_type, message=self.message)


def first_line(text: str, limit: int = 100) -> str:
    """The first line of a message, cut to ``limit`` characters (Keras puts whole tensors into some messages)."""
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def run_snippet(code: str, namespace: dict) -> Outcome:
    """Exec ``code`` in ``namespace`` (which keeps what it defines) and report how it ended, never raising."""
    out = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out):
        warnings.simplefilter("always")
        try:
            exec(compile(code, "<the article>", "exec"), namespace)
            error = None
        except Exception as e:  # the point is to see it fail: report, do not raise
            error = e
    seen = []  # what a reader would be warned of: not the deprecation notices libraries raise inside each other
    for w in caught:
        line = f"{w.category.__name__}: {first_line(w.message)}"
        if not issubclass(w.category, DeprecationWarning | PendingDeprecationWarning) and line not in seen:
            seen.append(line)
    if error is None:
        return Outcome(True, stdout=out.getvalue(), warnings=seen)
    return Outcome(False, type(error).__name__, first_line(error), out.getvalue(), seen)


def count_changed(before: list[np.ndarray], after: list[np.ndarray]) -> int:
    """How many numbers differ between two lists of weight arrays (a model's ``get_weights()``, then and now)."""
    return sum(int(np.sum(a != b)) for a, b in zip(before, after, strict=True))


def pieces(code: str = SECTION3_CODE) -> dict[str, str]:
    """The article's code cut at its own comment headings (``# 构建模型`` …): heading → the lines under it."""
    parts: dict[str, list[str]] = {"imports": []}
    heading = "imports"
    for line in code.splitlines():
        if line.startswith("# "):
            heading = line[2:].strip()
            parts[heading] = []
        parts[heading].append(line)
    return {k: "\n".join(v).strip() + "\n" for k, v in parts.items()}


# --- running the article's program, one fix at a time -----------------------------------------------------------


class Fix(namedtuple("Fix", "defect old new")):
    """One repair: what is wrong (``defect``, shown in the current language), the text to replace, its replacement."""

    __slots__ = ()

    @property
    def defect(self) -> str:
        english = self[0]
        return {
            "no data set": tr("no data set"),
            "tf.keras.utils.shuffle does not exist": tr("tf.keras.utils.shuffle does not exist"),
            "labels taken from the data": tr("labels taken from the data"),
            "model.predict inside GradientTape": tr("model.predict inside GradientTape"),
            "training_step is undefined": tr("training_step is undefined"),
            "the global optimiser meets a new model copy in every task": tr(
                "the global optimiser meets a new model copy in every task"
            ),
        }.get(english, english)


#: One-line repairs, in the order the program meets its failures; `run_article(fixes=k)` applies the first k.
FIXES = (
    Fix("no data set", "data = ...  # 数据集合", "data = x_train  # labkit: MNIST images, flattened"),
    Fix(
        "tf.keras.utils.shuffle does not exist",
        "tf.keras.utils.shuffle(train_indices)",
        "np.random.permutation(train_indices)",
    ),
    Fix("labels taken from the data", "data[train_indices[batch_index::batch_size]]", "labels[batch_index]"),
    Fix("model.predict inside GradientTape", "model.predict(batch_data)", "model(batch_data, training=True)"),
    Fix(
        "training_step is undefined",
        "return training_step.result().numpy()",
        "return StepResult(int(optimizer.iterations), float(loss), len(grads))",
    ),
    Fix(
        "the global optimiser meets a new model copy in every task",
        "    optimizer.apply_gradients(",
        "    optimizer = tf.keras.optimizers.Adam()\n    optimizer.apply_gradients(",
    ),
)
StepResult = namedtuple("StepResult", "global_step loss gradients")


def apply_fixes(code: str, fixes) -> str:
    """``code`` with each fix's old text (which must occur exactly once) replaced by its new text."""
    for fix in fixes:
        if code.count(fix.old) != 1:
            raise ValueError(f"{fix.old!r} occurs {code.count(fix.old)} times in the code, not once")
        code = code.replace(fix.old, fix.new)
    return code


class StandInPool:
    """Stands in for ``ProcessPoolExecutor``: each task runs here, at submit, on pickled copies of its arguments.

    That is what a process pool does to arguments (the worker gets copies, the caller's objects never change),
    without forking TensorFlow. ``StandInPool.log`` holds, for each pool opened, how many tasks it was given.
    """

    log: list[int] = []

    def __init__(self, max_workers: int | None = None) -> None:
        self.index = len(StandInPool.log)
        StandInPool.log.append(0)

    def __enter__(self) -> StandInPool:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def submit(self, fn, *args) -> Future:
        StandInPool.log[self.index] += 1
        future: Future = Future()
        try:
            future.set_result(fn(*pickle.loads(pickle.dumps(args))))  # copies, as on their way to a process
        except Exception as e:
            future.set_exception(e)
        return future


@dataclass
class ArticleRun:
    """One run of the article's program: how it ended, what it printed, its pools, and the parent's model."""

    outcome: Outcome
    pools: list[int]  # tasks given to each pool opened, in the order they were opened
    weights_changed: int | None  # how many of the parent model's numbers changed (None: no model was built)
    weights_total: int | None


def run_article(x: np.ndarray, y: np.ndarray, fixes: int = 0, seed: int = 0) -> ArticleRun:
    """Run the article's section 3 program on images ``x`` (n, 784) and integer labels ``y``, with the first
    ``fixes`` of `FIXES` applied; from one fix on, its process pool is `StandInPool`. Seeds Keras with ``seed``.
    """
    keras.utils.set_random_seed(seed)
    code = apply_fixes(SECTION3_CODE, FIXES[:fixes])
    namespace = {"x_train": x, "labels": keras.utils.to_categorical(y, 10), "np": np, "StepResult": StepResult}
    StandInPool.log = []
    if fixes:
        code = code.replace("import concurrent.futures", "import concurrent.futures as _real  # not used", 1)
        namespace["concurrent"] = SimpleNamespace(
            futures=SimpleNamespace(ProcessPoolExecutor=StandInPool, as_completed=list)
        )
    parts = list(pieces(code).values())
    setup = run_snippet("".join(parts[:3]), namespace)  # imports, the model, its loss and optimiser
    before = [w.copy() for w in namespace["model"].get_weights()] if "model" in namespace else None
    outcome = run_snippet("".join(parts[3:]), namespace) if setup.ok else setup
    outcome.warnings = setup.warnings + outcome.warnings
    if before is None:
        return ArticleRun(outcome, list(StandInPool.log), None, None)
    after = namespace["model"].get_weights()
    return ArticleRun(outcome, list(StandInPool.log), count_changed(before, after), sum(a.size for a in after))


# --- each defect on its own ----------------------------------------------------------------------------------


def predict_records_no_gradient(model: keras.Model, x: np.ndarray, y: np.ndarray) -> dict[str, tuple[Any, Any]]:
    """Variable path → (gradient with ``model.predict`` in the tape, with ``model(x)``): None, or the gradient."""
    found = []
    for forward in (lambda: model.predict(x, verbose=0), lambda: model(x, training=True)):
        with tf.GradientTape() as tape:
            loss = LOSS(y, forward())
        found.append(tape.gradient(loss, model.trainable_variables))
    return {v.path: (a, b) for v, a, b in zip(model.trainable_variables, *found, strict=True)}


def label_slice(n: int = 256, batch_size: int = 64, batch_number: int = 1) -> dict[str, Any]:
    """What ``data[train_indices[batch_index::batch_size]]`` selects: as written, and read with a batch number."""
    batch_index = np.random.default_rng(0).permutation(n)[:batch_size]  # one batch of indices, as the article has it
    scope = {"train_indices": range(n), "batch_index": batch_index, "batch_size": batch_size}
    as_written = run_snippet("train_indices[batch_index::batch_size]", scope)
    return {"as_written": as_written, "rows": list(range(n)[batch_number::batch_size]), "batch_size": batch_size}


def pickle_report(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> list[tuple[str, Outcome, int]]:
    """(what, how pickling it ended, bytes) for the model and the optimiser, as a process pool would pickle them."""
    rows = []
    for what, obj in (("model", model), ("optimizer", optimizer)):
        scope = {"pickle": pickle, "obj": obj}
        outcome = run_snippet("blob = pickle.dumps(obj)\ncopy = pickle.loads(blob)", scope)
        rows.append((what, outcome, len(scope.get("blob", b""))))
    return rows


def _train_copy(model: keras.Model, x: np.ndarray, y: np.ndarray, steps: int) -> tuple[int, int]:
    """In a worker process: train the copy it was sent; return (its process id, how many of its numbers changed)."""
    before = [w.copy() for w in model.get_weights()]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy())
    for _ in range(steps):
        model.train_on_batch(x, y)
    return os.getpid(), count_changed(before, model.get_weights())


def copies_in_processes(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    tasks: int = 4,
    workers: int = 2,
    steps: int = 3,
    start_method: str = "spawn",
) -> tuple[list[tuple[int, int]], int]:
    """Send ``model`` to a real process pool (never forked) with a shard per task; return ([(pid, numbers changed in
    that task's copy)], numbers changed in ``model``). Starting the processes takes seconds: each imports TensorFlow.
    From a script, call it under ``if __name__ == "__main__":`` (a spawned worker imports the script).
    """
    if start_method == "fork":
        raise ValueError(
            "never fork a process that has TensorFlow loaded (its thread pools hang the child): "
            "use start_method='spawn' or 'forkserver'"
        )
    before = [w.copy() for w in model.get_weights()]
    context = multiprocessing.get_context(start_method)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(_train_copy, model, x[k::tasks], y[k::tasks], steps) for k in range(tasks)]
        results = [f.result() for f in futures]
    return results, count_changed(before, model.get_weights())
