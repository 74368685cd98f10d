"""The chapters as a student meets them: how each opens, what its test markers look like, that every widget has a
static picture beside it, that no exercise can be answered by copying a stored output, and that every claim of the
article is quoted and answered where `labkit.claims` says."""

import math
import re
from pathlib import Path

import nbformat
import pytest

from labkit.lessons import check, claims

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
BOOKS = {int(path.name[:2]): nbformat.read(path, as_version=4) for path in PATHS}
WIDGET = "application/vnd.jupyter.widget-view+json"


def markdown(nb) -> list[str]:
    return [cell.source for cell in nb.cells if cell.cell_type == "markdown"]


def output_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        data = out.get("data", {})
        parts.append(data.get("text/plain", "") if "text/html" not in data else data["text/html"])
    return "".join(parts)


def test_there_are_eleven_chapters():
    assert sorted(BOOKS) == list(range(11))


@pytest.mark.parametrize("chapter", range(11))
def test_each_chapter_opens_with_what_you_learn_and_a_class_time_that_fits_90_minutes(chapter):
    first = BOOKS[chapter].cells[0]
    assert first.cell_type == "markdown" and first.source.startswith(f"# {chapter} · "), first.source[:80]
    assert "**What you will learn**" in first.source
    m = re.search(r"Class time: about (\d+) minutes", first.source)
    assert m, "the first cell says 'Class time: about N minutes'"
    assert int(m.group(1)) <= 90, "a chapter fits a 90-minute class: move side roads to 'Going further'"


@pytest.mark.parametrize("chapter", range(11))
def test_test_markers_are_cell_tags_not_lines_a_student_reads(chapter):
    cells = BOOKS[chapter].cells
    assert not [c.source[:60] for c in cells if re.search(r"#\s*NBVAL_", c.source)]
    checked = [c for c in cells if "nbval-check-output" in c.metadata.get("tags", [])]
    assert all(c.cell_type == "code" for c in checked)


@pytest.mark.parametrize("chapter", range(11))
def test_make_test_is_never_mentioned_in_a_chapters_main_path(chapter):
    """Students are not told about the test suite; a teacher's note may name it under 'Going further'."""
    text = "\n".join(markdown(BOOKS[chapter]))
    main_path = re.split(r"^#+ .*Going further", text, flags=re.M)[0]
    assert "make test" not in main_path and "nbval" not in main_path.lower()


@pytest.mark.parametrize("chapter", range(11))
def test_every_live_widget_has_a_static_picture_of_the_same_thing_beside_it(chapter):
    """A reader on GitHub or nbviewer sees no live widget, so a stored PNG stands next to each."""
    cells = BOOKS[chapter].cells

    def has_png(i: int) -> bool:
        return 0 <= i < len(cells) and any("image/png" in o.get("data", {}) for o in cells[i].get("outputs", []))

    for i, cell in enumerate(cells):
        if any(WIDGET in o.get("data", {}) for o in cell.get("outputs", [])):
            assert has_png(i) or has_png(i - 1) or has_png(i + 1), f"cell {i}: {cell.source[:60]!r} has no picture"


def forms(value) -> list[str]:
    """The ways a notebook would print a number: as Python does, with thousands separators, to 3 and 4 digits."""
    v = float(value)
    out = {repr(value), f"{v:,.0f}" if v.is_integer() else f"{v:.4g}", f"{v:.3g}"}
    if v.is_integer():
        out.add(str(int(v)))
    return sorted(out)


def answers_worth_searching():
    """Numeric answers that could not appear in an output by chance: small integers (a count of 3 GPUs) and
    strings (an algorithm's name) are everywhere in a chapter, so they are left out."""
    for name, ex in sorted(check.all_exercises().items()):
        value = ex.expected()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            if not (float(value).is_integer() and abs(value) < 100):
                yield name, ex.chapter, value


@pytest.mark.parametrize(("name", "chapter", "value"), list(answers_worth_searching()))
def test_no_exercise_answer_is_printed_anywhere_in_its_student_notebook(name, chapter, value):
    nb = BOOKS[chapter]
    text = "\n".join(output_text(c) for c in nb.cells if c.cell_type == "code")
    for form in forms(value):
        if len(form.replace(".", "").replace(",", "").lstrip("0-")) >= 2:
            hit = re.search(rf"(?<![\d.,]){re.escape(form)}(?![\d,]|\.\d)", text)
            assert not hit, (
                f"{name}'s answer {form} is printed in chapter {chapter}: ...{text[hit.start() - 80 : hit.end() + 20]}"
            )


@pytest.mark.parametrize("claim", claims.CLAIMS, ids=lambda c: f"ch{c.chapter:02d}-{c.says[:30]}")
def test_every_claim_of_the_article_is_quoted_and_answered_in_its_chapter(claim):
    cells = BOOKS[claim.chapter].cells
    quoting = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and claim.quote in c.source]
    assert quoting, f"chapter {claim.chapter} does not quote {claim.quote!r}"
    near = lambda i: " ".join(c.source for c in cells[i : i + 3]).lower()  # noqa: E731
    assert any(claim.keyword.lower() in near(i) for i in quoting), (claim.quote, claim.keyword)


def test_every_claim_quotes_the_article_word_for_word():
    seed = Path(__file__).resolve().parents[2] / "shared" / "seed" / "000_bc4923aeadac396b.txt"
    if not seed.exists():
        pytest.skip("the article is kept in shared/seed beside the repository")
    article = seed.read_text(encoding="utf-8")
    assert [c.quote for c in claims.CLAIMS if c.quote not in article] == []


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_notebooks_stay_small_and_name_no_path_of_the_machine_that_ran_them(path):
    assert path.stat().st_size < 2_000_000
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"/(work|root|home|Users|tmp)/[\w.-]+/", text), "an absolute path is stored in the notebook"


def test_the_readmes_teaching_table_gives_each_chapters_class_time_and_exercises_as_the_chapter_does():
    readme = (NOTEBOOKS.parent / "README.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| (\d\d) \| (.+) \|$", readme, flags=re.M))
    assert sorted(int(k) for k in rows) == list(range(11)), "one row per chapter in 'Teaching with labkit'"
    by_chapter: dict[int, set[str]] = {}
    for name, ex in check.all_exercises().items():
        by_chapter.setdefault(ex.chapter, set()).add(name)
    for key, row in rows.items():
        chapter = int(key)
        minutes = re.search(r"Class time: about (\d+) minutes", BOOKS[chapter].cells[0].source)
        assert minutes and row.endswith(f"| {minutes.group(1)} min"), (chapter, row[-20:])
        assert set(re.findall(r"`(\w+)`", row)) == by_chapter.get(chapter, set()), chapter
