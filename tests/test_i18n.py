"""labkit.i18n: one switch for the language, a catalogue that has every string the kit shows, fonts for the plots."""

import ast
import re
import string
from pathlib import Path

import pytest

from labkit import i18n
from labkit.lessons import check

PACKAGE = Path(i18n.__file__).resolve().parent
CALLS = ("tr", "plot_tr")


def tr_calls():
    """(file, line, first argument) of every ``tr(…)`` and ``plot_tr(…)`` call in the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
                if name in CALLS and path.name != "i18n.py":
                    yield path.relative_to(PACKAGE.parent), node.lineno, node.args[0] if node.args else None


def exercise_texts():
    """Every text of every exercise that `check` shows: the question, the method, the hint, each mistake's hint."""
    for name, ex in sorted(check.all_exercises().items()):
        for what, text in [("question", ex.question), ("why", ex.why), ("hint", ex.hint)]:
            if text:
                yield f"{name}.{what}", text
        for i, (_, hint) in enumerate(ex.mistakes):
            yield f"{name}.mistakes[{i}]", hint


def fields(text: str) -> list[tuple[str, str]]:
    """The ``{name:spec}`` fields of a format string, sorted."""
    return sorted((f, spec or "") for _, f, spec, _ in string.Formatter().parse(text) if f is not None)


@pytest.fixture(autouse=True)
def english_afterwards():
    yield
    i18n.set_language("en")


def test_tr_is_called_with_one_literal_english_string():
    """(An exercise's own texts, in lessons/check.py, are looked up by value: `exercise_texts` lists them.)"""
    bad = [
        f"{p}:{line}"
        for p, line, arg in tr_calls()
        if not (isinstance(arg, ast.Constant) and type(arg.value) is str) and p.name != "check.py"
    ]
    assert bad == [], "tr()'s first argument is a literal (fields go in as keywords, never an f-string)"


def test_every_string_the_kit_shows_is_in_the_chinese_catalogue_with_the_same_fields():
    zh = i18n.catalog("zh")
    wanted = {arg.value: f"{p}:{line}" for p, line, arg in tr_calls() if isinstance(arg, ast.Constant)}
    wanted |= {text: where for where, text in exercise_texts()}
    missing = {where: text[:70] for text, where in wanted.items() if text not in zh}
    assert missing == {}, f"{len(missing)} strings have no Chinese: add them to labkit/locale/zh/*.json"
    wrong = {text[:50]: fields(zh[text]) for text in wanted if text in zh and fields(zh[text]) != fields(text)}
    assert wrong == {}, "a translation has other {fields} than its English"


def test_the_catalogue_has_nothing_the_kit_no_longer_shows_and_is_chinese():
    used = {arg.value for _, _, arg in tr_calls() if isinstance(arg, ast.Constant)}
    used |= {text for _, text in exercise_texts()}
    zh = i18n.catalog("zh")
    assert sorted(set(zh) - used) == []
    not_chinese = [english[:50] for english, chinese in zh.items() if not re.search(r"[\u4e00-\u9fff]", chinese)]
    assert not_chinese == []


def test_tr_fills_fields_and_follows_the_language():
    text = "[{name}] right. {why}"
    assert i18n.tr(text, name="x", why="y") == "[x] right. y"
    i18n.set_language("zh")
    assert i18n.tr(text, name="x", why="y") == i18n.catalog("zh")[text].format(name="x", why="y") != "[x] right. y"
    assert i18n.tr("a string nobody translated") == "a string nobody translated"


def test_an_unknown_language_names_the_ones_there_are(monkeypatch):
    import labkit

    with pytest.raises(ValueError, match=r"labkit speaks \('en', 'zh'\), not 'fr'"):
        labkit.setup(tensorflow=False, lang="fr")
    monkeypatch.setattr(i18n, "_state", {"lang": None})
    monkeypatch.setenv("LABKIT_LANG", "zh")
    assert i18n.language() == "zh"


def test_check_speaks_chinese_after_setup(capsys):
    import labkit

    labkit.setup(tensorflow=False, lang="zh")
    ex = check.all_exercises()["ps_message_count"]
    assert not check.mark(ex, 31) and not check.mark(ex, 15)
    wrong_twice = capsys.readouterr().out.splitlines()[-1]
    assert i18n.catalog("zh")[ex.why] in wrong_twice and i18n.catalog("zh")[ex.mistakes[0][1]] in wrong_twice
    assert check.mark(ex, 30)
    assert capsys.readouterr().out.startswith("[ps_message_count] ") and "right" not in wrong_twice


def test_plots_fall_back_to_english_without_a_cjk_font(monkeypatch, capsys):
    monkeypatch.setattr(i18n, "cjk_font", lambda: None)
    i18n.set_language("zh")
    assert "fonts-noto-cjk" in capsys.readouterr().out
    text = "[{name}] right. {why}"
    assert i18n.plot_tr(text, name="a", why="b") == "[a] right. b"
    assert i18n.tr(text, name="a", why="b") != "[a] right. b"


def test_with_a_cjk_font_plots_use_it():
    font = i18n.cjk_font()
    if font is None:
        pytest.skip("no CJK font on this machine (apt-get install fonts-noto-cjk)")
    import matplotlib
    from matplotlib import font_manager

    i18n.set_language("zh")
    assert matplotlib.rcParams["font.sans-serif"][0] == font
    found = font_manager.findfont(font_manager.FontProperties(family=["sans-serif"]), fallback_to_default=False)
    assert Path(found).exists() and font_manager.get_font(found).get_char_index(ord("归")) != 0  # a glyph, no tofu
