"""labkit.teach: teacher copies are solved and pass nbval, student copies are blank, every solution is right."""

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from labkit.lessons import check, teach

NOTEBOOKS = [*sorted(teach.NOTEBOOKS.glob("*.ipynb")), *sorted(teach.NOTEBOOKS.glob("zh/*.ipynb"))]
FAST = teach.NOTEBOOKS / "02_core_concepts.ipynb"  # its exercises and its whole run take a few seconds


def notebook(*sources: str):
    """A small notebook of code cells (markdown for sources starting with '#! '), ids c00, c01, …."""
    cells = [
        nbformat.v4.new_markdown_cell(s[3:]) if s.startswith("#! ") else nbformat.v4.new_code_cell(s) for s in sources
    ]
    for i, cell in enumerate(cells):
        cell.id = f"c{i:02d}"
    return nbformat.v4.new_notebook(cells=cells)


def test_check_mode_marks_every_exercise_cell_of_every_notebook_right(capsys):
    assert teach.main(["--check"]) == 0
    out = capsys.readouterr().out
    # counted independently of teach's parser: every check call on an uncommented line of a code cell
    calls = [
        (path.name, m.group(1))
        for path in NOTEBOOKS
        for cell in nbformat.read(path, as_version=4).cells
        if cell.cell_type == "code"
        for m in re.finditer(r"^[^#\n]*check\.(\w+)\(answer\)", cell.source, re.M)
    ]
    rows = teach.check_notebooks(NOTEBOOKS)
    assert calls and [(r[0], r[2]) for r in rows] == calls
    assert all(r[3] for r in rows) and f"{len(calls)} of {len(calls)} exercise solutions marked right" in out
    for name, _, exercise, _ in rows:  # each notebook asks its own chapter's exercises
        assert check.all_exercises()[exercise].chapter == int(name[:2]), (name, exercise)


def test_teacher_copy_runs_under_nbval_and_its_exercises_print_right(tmp_path):
    assert teach.write_copies([FAST], tmp_path) == {FAST.name: 4}
    teacher = nbformat.read(tmp_path / "teacher" / FAST.name, as_version=4)
    cells = teach.exercise_cells(teacher)
    assert len(cells) == 4
    for ec in cells:
        cell = teacher.cells[ec.check_cell]
        assert teach.CHECK_TAG in cell.metadata["tags"]
        assert cell.outputs[0]["text"].startswith(f"[{ec.name}] right.")
        assert check.all_exercises()[ec.name].solution.split("\n")[-1] in teacher.cells[ec.answer_cell].source
    # a teacher's exercise cell whose answer is wrong must fail nbval: the stored "right" output is compared
    wrong = teacher.cells[cells[0].check_cell].copy()
    wrong.source = re.sub(r"answer = [^#\n]*", "answer = 1 ", wrong.source, count=1)
    bad = notebook("from labkit import check")
    bad.cells.append(wrong)
    nbformat.write(bad, tmp_path / "wrong.ipynb")
    env = {**os.environ, "LABKIT_OFFLINE": "1"}
    argv = [sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q", "-rf", "-o", "addopts="]
    done = subprocess.run(
        [*argv, str(tmp_path / "teacher" / FAST.name), str(tmp_path / "wrong.ipynb")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    summary = done.stdout.strip().splitlines()[-1]
    assert re.search(r"\b1 failed\b", summary), done.stdout[-3000:]
    assert re.findall(r"FAILED (\S+)::Cell (\d+)", done.stdout) == [("wrong.ipynb", "1")], done.stdout[-3000:]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.parent.name.replace("notebooks", "") + p.name[:2])
def test_student_copy_equals_the_source_outside_exercise_cells_and_undoes_the_teacher_copy(path):
    source = nbformat.read(path, as_version=4)
    student, n = teach.student_copy(source, path.name)
    exercise = {i for ec in teach.exercise_cells(source) for i in (ec.check_cell, ec.answer_cell)}
    assert n == len(teach.exercise_cells(source)) and len(student.cells) == len(source.cells)
    for i, (a, b) in enumerate(zip(source.cells, student.cells, strict=True)):
        if i not in exercise:
            assert a == b, f"{path.name} cell {a.get('id')} changed"
        else:
            assert b.get("outputs") == [] and b.execution_count is None and "tags" not in b.metadata
            assert a.source == b.source, f"{path.name} cell {a.id}: the committed answer is not blank"
    solved, _ = teach.teacher_copy(source, path.name)
    again, _ = teach.student_copy(solved, path.name)
    assert [c.source for c in again.cells] == [c.source for c in source.cells]


def test_answers_are_found_filled_and_blanked_in_either_layout():
    nb = notebook(
        "from labkit import check",
        "#! **1.** How many micro-batches?",
        "answer = (\n    3\n)  # micro-batches\ncheck.gpipe_micro_batches_for_bubble(answer);",
        "answer = ...",  # the answer in its own cell, the call in the next (chapter 1's layout)
        "%time x = 1\nlabkit.check.gpt3_min_gpus(answer)",
    )
    cells = teach.exercise_cells(nb, "nb")
    assert [(ec.name, ec.check_cell, ec.answer_cell, ec.span, ec.comment) for ec in cells] == [
        ("gpipe_micro_batches_for_bubble", 2, 2, (0, 3), "# micro-batches"),
        ("gpt3_min_gpus", 4, 3, (0, 1), ""),
    ]
    teacher, n = teach.teacher_copy(nb, "nb")
    assert n == 2
    assert teacher.cells[2].source == "answer = 28  # micro-batches\ncheck.gpipe_micro_batches_for_bubble(answer);"
    assert [o["output_type"] for o in teacher.cells[2].outputs] == ["stream"]  # the ';' hides the result
    assert teacher.cells[3].source == "import math\n\nanswer = math.ceil(175e9 * 16 / 141e9)"
    assert teacher.cells[4].outputs[0]["text"].startswith("[gpt3_min_gpus] right.")
    student, _ = teach.student_copy(teacher, "nb")
    assert student.cells[2].source.startswith("answer = ...  # micro-batches\ncheck.")
    assert student.cells[3].source == "answer = ..."
    assert nb.cells[2].source.startswith("answer = (\n")  # the input notebook is left alone


@pytest.mark.parametrize(
    "sources, message",
    [
        (("answer = 3\ncheck.no_such_exercise(answer)",), r"nb, cell c00 calls check\.no_such_exercise.*register"),
        (("# setup", "check.gpt3_min_gpus(answer)"), r"nb, cell c01 .* neither it nor the code cell before"),
        (("answer = 1\ncheck.gpt3_min_gpus(answer)\ncheck.mlp_parameters(answer)",), r"checks 2 exercises"),
    ],
)
def test_bad_exercise_cells_are_named(sources, message, tmp_path, capsys):
    with pytest.raises(teach.TeachError, match=message):
        teach.exercise_cells(notebook(*sources), "nb")
    nbformat.write(notebook(*sources), tmp_path / "nb.ipynb")
    assert teach.main(["--out", str(tmp_path), str(tmp_path / "nb.ipynb")]) == 2
    assert "cell c0" in capsys.readouterr().err
    assert not (tmp_path / "teacher").exists()  # nothing is written when a notebook is broken


def test_command_line_reports_where_the_copies_went(tmp_path, capsys):
    assert teach.main(["--out", str(tmp_path), str(FAST)]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'teacher'}/" in out and f"{tmp_path / 'student'}/" in out and "4 exercise(s) filled" in out
    assert (tmp_path / "student" / FAST.name).is_file()
    with pytest.raises(SystemExit):
        teach.main([str(tmp_path / "missing.ipynb")])
    assert Path(teach.KIT / "notebooks") == teach.NOTEBOOKS


def test_a_stored_result_is_what_jupyter_would_show():
    assert teach._displayed("check.x(answer)", True) == {"text/plain": "True"}  # a last expression is echoed
    assert teach._displayed("check.x(answer);", True) == {}  # ... unless a ';' ends it
    assert teach._displayed("check.x(answer)\nprint(1)", True) == {}  # ... or it is not the last line
    assert teach._displayed("check.x(answer)", check.Mark(True)) == {}  # a Mark displays nothing
