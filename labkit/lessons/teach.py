"""Teacher mode: every notebook with its exercises solved (teacher copy) or blank (student copy), and checked.

An exercise cell is a code cell that calls ``check.<name>(answer)`` (or ``labkit.check.<name>(answer)``); its answer
is the ``answer = ...`` statement in that cell or, when it has none, in the code cell just before it. The solution
comes from the exercise's registration in ``labkit/lessons/exercises/chNN.py``. Command line::

    python -m labkit.teach                        # teacher/ and student/ copies of every notebook, beside notebooks/
    python -m labkit.teach --out DIR a.ipynb ...  # DIR/teacher/ and DIR/student/
    python -m labkit.teach --check                # every exercise cell's solution is marked right (no notebook runs)
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import io
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from labkit.i18n import speaking
from labkit.lessons import check

KIT = Path(__file__).resolve().parents[2]  # the kit: labkit/lessons/this file
NOTEBOOKS = KIT / "notebooks"
# A call on a line that is not commented out: `check.name(answer)` or `labkit.check.name(answer)`.
CALL = re.compile(r"^[^#\n]*?\b(?:labkit\.)?check\.(\w+)\(\s*answer\s*\)", re.M)
BLANK = "answer = ..."
# nbval compares the stored "right" output of a teacher copy's exercise cell with a fresh run of it.
CHECK_TAG = "nbval-check-output"


class TeachError(ValueError):
    """An exercise cell that cannot be filled; the message names the notebook, the cell and the fix."""


@dataclass(frozen=True)
class ExerciseCell:
    """One exercise of a notebook: the cell that calls ``check.<name>`` and the cell (maybe the same) that sets
    ``answer``, with the answer statement's lines [start, end) and its trailing comment (the unit)."""

    notebook: str
    name: str
    check_cell: int
    answer_cell: int
    span: tuple[int, int]
    comment: str
    cell_id: str


def _answer_span(source: str) -> tuple[tuple[int, int], str] | None:
    """Lines [start, end) of the first top-level ``answer = …`` statement, and the comment after it; None if none."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics: fall back to a one-line answer
        for i, line in enumerate(source.split("\n")):
            if re.match(r"answer\s*=", line):
                comment = line[line.index("#") :] if "#" in line else ""
                return (i, i + 1), comment
        return None
    lines = source.split("\n")
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and any(
            isinstance(t, ast.Name) and t.id == "answer" for t in targets
        ):
            rest = lines[node.end_lineno - 1][node.end_col_offset :].strip()
            return (node.lineno - 1, node.end_lineno), rest if rest.startswith("#") else ""
    return None


def exercise_cells(nb: Any, notebook: str = "notebook") -> list[ExerciseCell]:
    """Every exercise cell of a notebook, in order; `TeachError` for an unregistered exercise or a missing answer."""
    registry = check.all_exercises()
    found, previous = [], None
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        names = CALL.findall(cell.source)
        cell_id = cell.get("id", f"#{i}")
        where = f"{notebook}, cell {cell_id}"
        if len(names) > 1:
            raise TeachError(f"{where} checks {len(names)} exercises ({', '.join(names)}): give each its own cell")
        if names:
            name = names[0]
            if name not in registry:
                raise TeachError(
                    f"{where} calls check.{name}(answer), but no exercise {name!r} is registered: add it with "
                    "@exercise in labkit/lessons/exercises/chNN.py or fix the name "
                    f"(registered: {', '.join(sorted(registry))})"
                )
            answer_cell, span = i, _answer_span(cell.source)
            if span is None and previous is not None and not CALL.search(nb.cells[previous].source):
                answer_cell, span = previous, _answer_span(nb.cells[previous].source)
            if span is None:
                raise TeachError(
                    f"{where} calls check.{name}(answer), but neither it nor the code cell before it sets "
                    "`answer = ...`: add that line above the call"
                )
            found.append(ExerciseCell(notebook, name, i, answer_cell, span[0], span[1], cell_id))
        previous = i
    return found


def solve(name: str) -> tuple[bool, str, Any]:
    """Run exercise ``name``'s solution on its own and mark it: (marked right?, what it printed, what it returned)."""
    ex = check.all_exercises()[name]
    scope: dict[str, Any] = {}
    exec(ex.solution, scope)  # the solution is self-contained code that sets `answer`
    if "answer" not in scope:
        raise TeachError(
            f"the solution of {name} does not set `answer`: fix it in labkit/lessons/exercises/ch{ex.chapter:02d}.py"
        )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = ex(scope["answer"])
    return bool(result), printed.getvalue(), result


def _put(cell: Any, span: tuple[int, int], code: str, comment: str) -> None:
    """Replace the answer statement's lines with ``code``, keeping the unit comment on its ``answer =`` line."""
    lines, new = cell.source.split("\n"), code.split("\n")
    last = max((k for k, line in enumerate(new) if line.startswith("answer")), default=len(new) - 1)
    if comment and "#" not in new[last]:
        new[last] = f"{new[last]}  {comment}"
    cell.source = "\n".join(lines[: span[0]] + new + lines[span[1] :])


def _with_setup(source: str, ec: ExerciseCell) -> tuple[int, int]:
    """The answer's span, grown upwards over the lines a solution puts before its ``answer =`` (``import math``)."""
    solution = check.all_exercises()[ec.name].solution.split("\n")
    setup = solution[: max((k for k, line in enumerate(solution) if line.startswith("answer")), default=0)]
    start, lines = ec.span[0], source.split("\n")
    if setup and start >= len(setup) and lines[start - len(setup) : start] == setup:
        start -= len(setup)
    return start, ec.span[1]


def _clear(cell: Any) -> None:
    cell.outputs, cell.execution_count = [], None
    tags = [t for t in cell.metadata.get("tags", []) if t != CHECK_TAG]
    if tags:
        cell.metadata["tags"] = tags
    else:
        cell.metadata.pop("tags", None)


def _displayed(source: str, result: Any) -> dict[str, str]:
    """What Jupyter shows for the check's return value: nothing unless the call ends the cell (without ``;``), and
    then what IPython's formatters make of it (nothing for an object whose ``_ipython_display_`` shows nothing)."""
    code = [line for line in source.split("\n") if line.strip() and not line.lstrip().startswith("#")]
    if not code or not CALL.search(code[-1]) or code[-1].rstrip().endswith(";"):
        return {}
    from IPython.core.formatters import DisplayFormatter

    return DisplayFormatter().format(result)[0]


def teacher_copy(nb: Any, notebook: str = "notebook") -> tuple[Any, int]:
    """A copy of ``nb`` with every answer replaced by its solution, and the "right" output it prints stored and
    tagged for nbval to compare; (copy, number of exercises filled)."""
    nb, cells = copy.deepcopy(nb), exercise_cells(nb, notebook)
    for ec in cells:
        right, printed, result = solve(ec.name)
        if not right:
            raise TeachError(f"{ec.notebook}, cell {ec.cell_id}: the solution of {ec.name} is marked wrong: {printed}")
        _put(nb.cells[ec.answer_cell], ec.span, check.all_exercises()[ec.name].solution, ec.comment)
        _clear(nb.cells[ec.answer_cell])
        cell = nb.cells[ec.check_cell]
        count = cell.execution_count or 1  # nbval skips comparing a cell that was never run (count None)
        _clear(cell)
        cell.execution_count = count
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=printed)]
        shown = _displayed(cell.source, result)
        if shown:
            cell.outputs.append(nbformat.v4.new_output("execute_result", shown, execution_count=count))
        cell.metadata["tags"] = [*cell.metadata.get("tags", []), CHECK_TAG]
    return nb, len(cells)


def student_copy(nb: Any, notebook: str = "notebook") -> tuple[Any, int]:
    """A copy of ``nb`` with every answer blank (``answer = ...``) and the exercise cells' outputs cleared; every
    other cell unchanged. (copy, number of answers blanked)."""
    nb, cells = copy.deepcopy(nb), exercise_cells(nb, notebook)
    for ec in cells:
        _put(nb.cells[ec.answer_cell], _with_setup(nb.cells[ec.answer_cell].source, ec), BLANK, ec.comment)
        _clear(nb.cells[ec.answer_cell])
        _clear(nb.cells[ec.check_cell])
    return nb, len(cells)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def language_of(path: Path) -> str:
    """ "zh" for a chapter of the Chinese edition (notebooks/zh/), else "en"."""
    return "zh" if path.parent.name == "zh" else "en"


def write_copies(notebooks: list[Path], out: Path) -> dict[str, int]:
    """Write ``out/teacher/<name>.ipynb`` and ``out/student/<name>.ipynb`` for each notebook (``zh/<name>`` for the
    Chinese edition, whose "right" outputs are then in Chinese); exercises per notebook."""
    made = {}
    copies = []
    for path in notebooks:  # every notebook is checked before anything is written
        nb = nbformat.read(path, as_version=4)
        name = f"zh/{path.name}" if language_of(path) == "zh" else path.name
        with speaking(language_of(path)):
            teacher, n = teacher_copy(nb, _shown(path))
        copies.append((name, teacher, student_copy(nb, _shown(path))[0]))
        made[name] = n
    for kind, index in (("teacher", 1), ("student", 2)):
        for item in copies:
            (out / kind / item[0]).parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(item[index], out / kind / item[0])
    return made


def check_notebooks(notebooks: list[Path]) -> list[tuple[str, str, str, bool]]:
    """(notebook, cell id, exercise, marked right?) for every exercise cell, running only the solutions."""
    rows = []
    for path in notebooks:
        for ec in exercise_cells(nbformat.read(path, as_version=4), _shown(path)):
            rows.append((path.name, ec.cell_id, ec.name, solve(ec.name)[0]))
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m labkit.teach [--out DIR] [--check] [notebooks...]``."""
    parser = argparse.ArgumentParser(prog="python -m labkit.teach", description=__doc__.split("\n")[0])
    parser.add_argument(
        "notebooks", nargs="*", type=Path, help="default: every notebooks/*.ipynb and notebooks/zh/*.ipynb of the kit"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=KIT,
        help="where teacher/ and student/ go (default: beside notebooks/, so the "
        "notebooks' relative paths such as ../data still work)",
    )
    parser.add_argument("--check", action="store_true", help="only check that every solution is marked right")
    args = parser.parse_args(argv)
    paths = args.notebooks or [*sorted(NOTEBOOKS.glob("*.ipynb")), *sorted(NOTEBOOKS.glob("zh/*.ipynb"))]
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    try:
        if args.check:
            rows = check_notebooks(paths)
            for notebook, cell_id, name, right in rows:
                print(f"{notebook:<32} {cell_id:<5} {name:<34} {'right' if right else 'WRONG'}")
            wrong = sum(not r[3] for r in rows)
            print(f"{len(rows) - wrong} of {len(rows)} exercise solutions marked right in {len(paths)} notebook(s)")
            return 1 if wrong else 0
        made = write_copies(paths, args.out)
    except TeachError as e:
        print(f"labkit.teach: {e}", file=sys.stderr)
        return 2
    total = sum(made.values())
    print(f"teacher copies (answers filled): {_shown(args.out / 'teacher')}/")
    print(f"student copies (answers blank, exercise outputs cleared): {_shown(args.out / 'student')}/")
    print(f"{len(made)} notebook(s), {total} exercise(s) filled: " + ", ".join(f"{k} {v}" for k, v in made.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
