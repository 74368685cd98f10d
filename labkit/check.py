"""Exercises marked right or wrong with a reason: ``labkit.check.<name>(answer)``.

Each chapter's exercises live in ``labkit/exercises/chNN.py`` with their solutions (for teachers; the student
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


@dataclass
class Exercise:
    """One exercise: its question, how to compute the right answer, and the worked solution for teachers."""

    name: str
    chapter: int
    question: str
    expected: Callable[[], Any]
    why: str  # the reasoning shown when an answer is wrong
    solution: str  # code a teacher copy puts in the answer cell
    rel_tol: float = 1e-6
    hints: dict[str, str] = field(default_factory=dict)  # a known wrong answer (repr) -> what it suggests

    def __call__(self, answer: Any) -> Mark:
        return mark(self, answer)


class Mark(int):
    """Right (true) or not yet (false); a notebook shows nothing for it, since `mark` has already said why."""

    def __new__(cls, right: bool) -> Mark:
        return super().__new__(cls, bool(right))

    def __repr__(self) -> str:
        return repr(bool(self))

    def _ipython_display_(self) -> None:
        pass


REGISTRY: dict[str, Exercise] = {}


def exercise(chapter: int, question: str, why: str, solution: str, rel_tol: float = 1e-6, hints=None):
    """Register the decorated zero-argument function, which returns the right answer, as an exercise."""

    def register(fn: Callable[[], Any]) -> Exercise:
        ex = Exercise(fn.__name__, chapter, question, fn, why, solution.strip(), rel_tol, dict(hints or {}))
        old = REGISTRY.get(ex.name)
        if old is not None and (old.chapter, old.question) != (chapter, question):
            raise ValueError(f"exercise {ex.name!r} of chapter {chapter} is already chapter {old.chapter}'s: rename it")
        REGISTRY[ex.name] = ex
        return ex

    return register


def _load_all() -> None:
    from labkit import exercises

    for module in pkgutil.iter_modules(exercises.__path__):
        importlib.import_module(f"labkit.exercises.{module.name}")


def _close(answer: Any, expected: Any, rel_tol: float) -> bool:
    if isinstance(expected, str):
        return isinstance(answer, str) and answer.strip().lower() == expected.lower()
    if isinstance(expected, (set, frozenset)):
        return set(answer) == set(expected)
    if np.ndim(expected) > 0:
        a, e = np.asarray(answer, dtype=float), np.asarray(expected, dtype=float)
        return a.shape == e.shape and bool(np.allclose(a, e, rtol=rel_tol, atol=0))
    try:
        return math.isclose(float(answer), float(expected), rel_tol=rel_tol, abs_tol=1e-12)
    except (TypeError, ValueError):
        return False


def mark(ex: Exercise, answer: Any) -> Mark:
    """Print whether ``answer`` is right, and why; a true `Mark` when it is."""
    if answer is None or answer is Ellipsis:
        print(f"[{ex.name}] no answer yet: replace the ... with your answer and run the cell again.")
        return Mark(False)
    expected = ex.expected()
    if _close(answer, expected, ex.rel_tol):
        print(f"[{ex.name}] right. {ex.why}")
        return Mark(True)
    hint = ex.hints.get(repr(answer), "")
    print(f"[{ex.name}] not yet: {answer!r} is not the answer. {hint or 'Think it through again:'} {ex.why}".strip())
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
