"""The Chinese edition (notebooks/zh/): every chapter in step with its English original, in Chinese, and runnable.

In step means: the same cells in the same order, the same tags, the same code once strings, comments and the
``lang="zh"`` switch are masked (`labkit.lessons.translation`), and the same exercises. In Chinese means: every
markdown cell's prose is mostly Chinese characters (the threshold is argued at `MIN_SHARE`), and the outputs nbval
compares are the Chinese ones.
"""

import re
import subprocess
from pathlib import Path

import nbformat
import pytest

from labkit import i18n
from labkit.lessons import check, claims, teach, translation

ROOT = Path(__file__).resolve().parent.parent
ENGLISH = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PAIRS = [(path, ROOT / "notebooks" / "zh" / path.name) for path in ENGLISH]
BOOKS = {en.name: (nbformat.read(en, as_version=4), nbformat.read(zh, as_version=4)) for en, zh in PAIRS if zh.exists()}
IDS = [en.name[:2] for en, _ in PAIRS]

#: The least share of Chinese characters among a markdown cell's prose letters (CJK characters and Latin letters,
#: code, formulas, links and the article's quoted lines left out). A translated cell keeps English only for terms in
#: parentheses at first use, names (NVLink, Thakur et al.), paper titles and units. Measured over this edition (cells
#: with at least 40 Latin letters): the lowest is 0.60, the median 0.75; the English chapters' cells are at most 0.09.
#: An English sentence spends about three letters for each Chinese character that says the same, so a cell that keeps
#: one untranslated sentence beside its translation falls to about 0.3-0.45: 0.5 catches that and leaves the
#: translated cells a margin for a name or a title more.
MIN_SHARE = 0.5
#: Cells with fewer Latin letters than this are headings, names or a formula's legend; their share says little.
MIN_LETTERS = 40


def test_every_chapter_has_its_chinese_twin():
    assert [zh.name for _, zh in PAIRS if zh.exists()] == [en.name for en in ENGLISH]
    assert len(ENGLISH) == 11


@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
def test_the_chinese_chapter_has_the_same_cells_code_and_exercises(pair):
    english, chinese = BOOKS[pair[0].name]
    assert translation.differences(english, chinese) == []


def test_a_cell_or_an_exercise_gained_or_lost_on_one_side_is_caught():
    english, chinese = BOOKS["02_core_concepts.ipynb"]
    fewer = nbformat.from_dict(chinese)
    fewer.cells = fewer.cells[:-1]
    assert "cells in English" in translation.differences(english, fewer)[0]
    changed = nbformat.from_dict(chinese)
    i = next(i for i, c in enumerate(changed.cells) if "check." in c.source and c.cell_type == "code")
    changed.cells[i].source = changed.cells[i].source.replace("check.", "check.x_")
    assert any("exercises" in d for d in translation.differences(english, changed))
    retagged = nbformat.from_dict(chinese)
    j = next(i for i, c in enumerate(retagged.cells) if "nbval-check-output" in c.metadata.get("tags", []))
    retagged.cells[j].metadata["tags"] = []
    assert any("tags" in d for d in translation.differences(english, retagged))


def test_masking_keeps_code_and_drops_only_strings_comments_and_the_switch():
    english = 'labkit.setup(seed=0)  # seeds\nprint("ring:", f"{t:.2f} s")\nx = run(p=4)'
    chinese = 'labkit.setup(seed=0, lang="zh")  # 种子\nprint("环形：", f"{t:.2f} 秒")\nx = run(p=4)'
    assert translation.masked_code(english) == translation.masked_code(chinese)
    assert translation.masked_code(english) != translation.masked_code(chinese.replace("p=4", "p=8"))


@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
def test_every_markdown_cell_is_in_chinese(pair):
    _, chinese = BOOKS[pair[0].name]
    low = {}
    for i, cell in enumerate(chinese.cells):
        if cell.cell_type == "markdown":
            share, letters = translation.prose_share(cell.source)
            if letters >= MIN_LETTERS and share < MIN_SHARE:
                low[i] = (round(share, 2), cell.source[:80])
    assert low == {}, "cells whose prose is still mostly English"


def test_the_share_tells_english_from_chinese():
    english = "The ring all-reduce sends 2(p-1)/p of the vector from every rank, whatever p is."
    chinese = "环形全归约（all-reduce）中，每个进程发送向量的 2(p-1)/p，与 p 无关。"
    assert translation.prose_share(english)[0] < 0.05 < MIN_SHARE < translation.prose_share(chinese)[0]
    assert translation.prose_share("> 引用原文\n\n`code`, $x^2$")[1] == 0  # quotes, code and formulas are not prose
    mixed = chinese + " " + english
    assert translation.prose_share(mixed)[0] < MIN_SHARE  # one untranslated sentence beside a translated one


@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
def test_each_chinese_chapter_opens_as_the_english_one_does_with_the_same_class_time(pair):
    english, chinese = BOOKS[pair[0].name]
    first, chapter = chinese.cells[0].source, int(pair[0].name[:2])
    assert first.startswith(f"# {chapter} · ") and "**本章你将学到**" in first, first[:80]
    minutes = re.search(r"Class time: about (\d+) minutes", english.cells[0].source).group(1)
    assert f"课堂时间：约 {minutes} 分钟" in first


@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
def test_the_main_path_never_mentions_the_test_suite(pair):
    _, chinese = BOOKS[pair[0].name]
    text = "\n".join(c.source for c in chinese.cells if c.cell_type == "markdown")
    main_path = re.split(r"^#+ .*Going further", text, flags=re.M)[0]
    assert "make test" not in main_path and "nbval" not in main_path.lower()


@pytest.mark.parametrize("claim", claims.CLAIMS, ids=lambda c: f"ch{c.chapter:02d}-{c.says[:30]}")
def test_the_chinese_chapter_quotes_the_article_where_the_english_does(claim):
    name = next(en.name for en in ENGLISH if int(en.name[:2]) == claim.chapter)
    _, chinese = BOOKS[name]
    assert any(c.cell_type == "markdown" and claim.quote in c.source for c in chinese.cells), claim.quote


def latin_words(text: str) -> int:
    return len(re.findall(r"\b[a-z]{3,}\b", text))


@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
def test_checked_outputs_are_the_chinese_ones_and_were_run(pair):
    """A checked cell whose English output is sentences (five or more English words) shows Chinese in zh."""
    english, chinese = BOOKS[pair[0].name]
    for i, (a, b) in enumerate(zip(english.cells, chinese.cells, strict=True)):
        if "nbval-check-output" not in b.metadata.get("tags", []):
            continue
        text_a = "".join(o.get("text", "") for o in a.get("outputs", []))
        text_b = "".join(o.get("text", "") for o in b.get("outputs", []))
        assert bool(text_a) == bool(text_b), f"cell {i}: stored output in one edition only (run the zh notebook)"
        if latin_words(text_a) >= 5:
            assert re.search(r"[\u4e00-\u9fff]", text_b), f"cell {i} prints English in zh: {text_b[:120]!r}"


@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
def test_no_exercise_answer_is_printed_in_the_chinese_chapter(pair):
    from test_notebooks import answers_worth_searching, forms, output_text

    _, chinese = BOOKS[pair[0].name]
    text = "\n".join(output_text(c) for c in chinese.cells if c.cell_type == "code")
    for name, chapter, value in answers_worth_searching():
        if chapter == int(pair[0].name[:2]):
            for form in forms(value):
                if len(form.replace(".", "").replace(",", "").lstrip("0-")) >= 2:
                    assert not re.search(rf"(?<![\d.,]){re.escape(form)}(?![\d,]|\.\d)", text), (name, form)


@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
def test_chinese_notebooks_stay_small_and_name_no_path_of_this_machine(pair):
    zh = pair[1]
    assert zh.stat().st_size < 2_000_000
    assert not re.search(r"/(work|root|home|Users|tmp)/[\w.-]+/", zh.read_text(encoding="utf-8"))


def test_teacher_copies_of_the_chinese_edition_go_to_zh_and_say_right_in_chinese(tmp_path):
    zh = ROOT / "notebooks" / "zh" / "02_core_concepts.ipynb"
    made = teach.write_copies([zh], tmp_path)
    assert made == {"zh/02_core_concepts.ipynb": 4}
    teacher = nbformat.read(tmp_path / "teacher" / "zh" / zh.name, as_version=4)
    for ec in teach.exercise_cells(teacher):
        text = teacher.cells[ec.check_cell].outputs[0]["text"]
        right = i18n.catalog("zh")["[{name}] right. {why}"].format(name=ec.name, why="")
        assert text.startswith(right.strip()) and "right" not in text, text[:80]
    assert (tmp_path / "student" / "zh" / zh.name).is_file()
    assert i18n.language() == "en"  # writing the Chinese copies left the kit in English


def test_teach_by_default_checks_both_editions(capsys):
    assert teach.main(["--check"]) == 0
    english = len(teach.check_notebooks(ENGLISH))
    assert (
        f"{2 * english} of {2 * english} exercise solutions marked right in 22 notebook(s)" in capsys.readouterr().out
    )


def test_make_lab_opens_the_chinese_welcome_with_labkit_lang_zh_and_keeps_it_out_of_the_kernels():
    def dry(*args: str) -> str:
        done = subprocess.run(["make", "-s", "-n", "-C", str(ROOT), "lab", *args], capture_output=True, text=True)
        return done.stdout.strip().splitlines()[-1]

    assert dry("LABKIT_LANG=zh").endswith("notebooks/zh/00_welcome.ipynb")
    assert dry().endswith(" notebooks/00_welcome.ipynb")
    shown = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "--eval", "show:\n\t@echo LANG_IN_RECIPE=$$LABKIT_LANG", "show"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "LABKIT_LANG": "zh"},
    )
    assert "LANG_IN_RECIPE=\n" in shown.stdout or shown.stdout.strip() == "LANG_IN_RECIPE="


def test_the_chinese_readme_gives_the_same_two_commands_and_the_way_to_the_chinese_chapters():
    readme = (ROOT / "README.zh.md").read_text(encoding="utf-8")
    english = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make lab" in english and "make test" in english and "README.zh.md" in english
    for command in ("make lab", "make test", "make lab LABKIT_LANG=zh", "notebooks/zh/00_welcome.ipynb"):
        assert command in readme, command
    assert "make lab LABKIT_LANG=zh" in english
    for name in check.all_exercises():  # the teaching table names every exercise, as the English one does
        assert f"`{name}`" in readme, name
