"""Exercises marked right or wrong with a reason: ``labkit.check.<name>(answer)``.

Each chapter's exercises live in ``labkit/lessons/exercises/chNN.py`` with their solutions (for teachers; the student
notebooks never contain them). An exercise computes the expected answer from an independent formula and says why
an answer is wrong, not only that it is.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labkit.i18n import tr


@dataclass
class Exercise:
    """One exercise: its question, how to compute the right answer, a hint, the method, and the worked solution."""

    name: str
    chapter: int
    question: str
    expected: Callable[[], Any]
    why: str  # the full method: shown with a right answer, after a second wrong one, or on request (`.method()`)
    solution: str  # code a teacher copy puts in the answer cell
    rel_tol: float = 1e-6
    hint: str = ""  # the first nudge after a wrong answer: where to look, not how to compute it
    mistakes: tuple[tuple[Any, str], ...] = ()  # the likely wrong answers, each with what it suggests
    tries: int = field(default=0, compare=False, repr=False)  # wrong answers since the last right one

    def __call__(self, answer: Any) -> Mark:
        return mark(self, answer)

    def method(self) -> None:
        """Print the full method (for a student who asks for it)."""
        print(tr("[{name}] the method: {why}", name=self.name, why=tr(self.why)))

    def mistake_hint(self, answer: Any) -> str:
        """What a known wrong answer suggests, or "" when ``answer`` is none of the listed mistakes."""
        return next((tr(hint) for wrong, hint in self.mistakes if _close(answer, wrong, self.rel_tol)), "")


class Mark(int):
    """Right (true) or not yet (false); a notebook shows nothing for it, since `mark` has already said why."""

    def __new__(cls, right: bool) -> Mark:
        return super().__new__(cls, bool(right))

    def __repr__(self) -> str:
        return repr(bool(self))

    def _ipython_display_(self) -> None:
        pass


REGISTRY: dict[str, Exercise] = {}


def exercise(
    chapter: int,
    question: str,
    why: str,
    solution: str,
    rel_tol: float = 1e-6,
    hint: str = "",
    mistakes=(),
):
    """Register the decorated zero-argument function, which returns the right answer, as an exercise.

    ``mistakes`` lists ``(wrong answer, hint)`` pairs: the answers a student who skipped a step would give.
    """

    def register(fn: Callable[[], Any]) -> Exercise:
        ex = Exercise(
            fn.__name__, chapter, question, fn, why, solution.strip(), rel_tol, hint, tuple(map(tuple, mistakes))
        )
        old = REGISTRY.get(ex.name)
        if old is not None and (old.chapter, old.question) != (chapter, question):
            raise ValueError(f"exercise {ex.name!r} of chapter {chapter} is already chapter {old.chapter}'s: rename it")
        REGISTRY[ex.name] = ex
        return ex

    return register


def _load_all() -> None:
    from labkit.lessons import exercises

    for module in pkgutil.iter_modules(exercises.__path__):
        importlib.import_module(f"labkit.lessons.exercises.{module.name}")


def _close(answer: Any, expected: Any, rel_tol: float) -> bool:
    if isinstance(expected, str):
        return isinstance(answer, str) and answer.strip().lower() == expected.lower()
    if isinstance(expected, (set, frozenset)):
        try:
            return set(answer) == set(expected)
        except TypeError:
            return False
    if np.ndim(expected) > 0:
        try:
            a, e = np.asarray(answer, dtype=float), np.asarray(expected, dtype=float)
        except (TypeError, ValueError):
            return False
        return a.shape == e.shape and bool(np.allclose(a, e, rtol=rel_tol, atol=0))
    try:
        return math.isclose(float(answer), float(expected), rel_tol=rel_tol, abs_tol=1e-12)
    except (TypeError, ValueError):
        return False


def mark(ex: Exercise, answer: Any) -> Mark:
    """Print whether ``answer`` is right; a wrong one gets a hint, and the full method from the second wrong try on."""
    if answer is None or answer is Ellipsis:
        print(tr("[{name}] no answer yet: replace the ... with your answer and run the cell again.", name=ex.name))
        return Mark(False)
    if _close(answer, ex.expected(), ex.rel_tol):
        ex.tries = 0
        print(tr("[{name}] right. {why}", name=ex.name, why=tr(ex.why)))
        return Mark(True)
    ex.tries += 1
    hint = ex.mistake_hint(answer) or (
        tr(ex.hint) if ex.hint else tr("Go back over the chapter's method, one step at a time.")
    )
    fields = dict(name=ex.name, answer=repr(answer), hint=hint)
    if ex.tries >= 2:
        print(tr("[{name}] not yet: {answer} is not the answer. {hint} The method: {why}", why=tr(ex.why), **fields))
    else:
        print(
            tr(
                "[{name}] not yet: {answer} is not the answer. {hint} "
                "Try again; a second wrong answer, or check.{name}.method(), shows the full method.",
                **fields,
            )
        )
    return Mark(False)


def __getattr__(name: str) -> Exercise:
    if not REGISTRY:
        _load_all()
    try:
        return REGISTRY[name]
    except KeyError:
        raise AttributeError(f"labkit.check has no exercise {name!r}; there are: {sorted(REGISTRY)}") from None


def all_exercises() -> dict[str, Exercise]:
    """Every exercise of every chapter, by name."""
    _load_all()
    return dict(REGISTRY)
