"""The language a student reads the kit in: English (the default) or Chinese (``labkit.setup(lang="zh")``).

Every string the kit shows a student (an exercise's verdict, a widget's label, a plot's title, a progress line, an
error a chapter provokes on purpose) is written in English inside ``tr("…")``, with ``{names}`` for what is filled
in. `tr` looks the English up in the catalogue of the current language, ``labkit/locale/<lang>/*.json`` (one file
per part of the kit, each a flat ``{"English": "中文"}`` map), and fills in the fields. A test finds every
``tr("…")`` in the package and checks that the catalogue has it, with the same fields.

Plots need a font with Chinese glyphs. `plot_tr` is `tr` for text drawn by matplotlib: Chinese when a CJK font is
installed (Debian's ``fonts-noto-cjk``, or the system's own on macOS and Windows), else English, with a one-line
notice from `set_language` saying how to get one. Nothing is ever downloaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import unicodedata
from collections.abc import Iterator
from functools import cache
from pathlib import Path

LANGUAGES = ("en", "zh")
LOCALE = Path(__file__).resolve().parent / "locale"

#: Fonts with the glyphs of simplified Chinese, best first: Debian/Ubuntu (fonts-noto-cjk, fonts-wqy-*), Adobe's
#: release of the same design, macOS, Windows.
CJK_FONTS = (
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "PingFang SC",
    "Hiragino Sans GB",
    "Heiti SC",
    "Microsoft YaHei",
    "SimHei",
    "Arial Unicode MS",
)

_state: dict[str, str | None] = {"lang": None}


def check_language(lang: object) -> str:
    """``lang`` if the kit speaks it, else a ValueError naming the ones it does."""
    if lang not in LANGUAGES:
        raise ValueError(f"labkit speaks {LANGUAGES}, not {lang!r}: use lang='zh' for Chinese, 'en' for English")
    return str(lang)


def language() -> str:
    """The current language: set by `set_language` (``labkit.setup(lang=…)``), else $LABKIT_LANG, else English."""
    if _state["lang"] is None:
        _state["lang"] = check_language(os.environ.get("LABKIT_LANG") or "en")
    return str(_state["lang"])


def set_language(lang: str) -> None:
    """Speak ``lang`` from now on; for Chinese, draw plots with a CJK font, or say in one line how to get one."""
    _state["lang"] = check_language(lang)
    os.environ["LABKIT_LANG"] = lang  # ranks started as processes (shm, MPI) speak it too
    if lang == "zh":
        font = cjk_font()
        if font is None:
            print(
                "没有找到中文字体，图中的文字仍用英文（no CJK font: plot labels stay in English; "
                "on Debian/Ubuntu: apt-get install fonts-noto-cjk）"
            )
        else:
            import matplotlib

            families = matplotlib.rcParams["font.sans-serif"]
            matplotlib.rcParams["font.sans-serif"] = [font, *(f for f in families if f != font)]
            matplotlib.rcParams["axes.unicode_minus"] = False  # CJK fonts often lack U+2212, the minus sign


@contextlib.contextmanager
def speaking(lang: str) -> Iterator[None]:
    """Speak ``lang`` inside the ``with`` block only (teacher copies of each language are written this way)."""
    before, _state["lang"] = language(), check_language(lang)
    try:
        yield
    finally:
        _state["lang"] = before


@cache
def catalog(lang: str) -> dict[str, str]:
    """Every English string the kit shows, mapped to ``lang`` (empty for English), from locale/<lang>/*.json."""
    merged: dict[str, str] = {}
    for path in sorted((LOCALE / lang).glob("*.json")):
        for english, translated in json.loads(path.read_text(encoding="utf-8")).items():
            if english in merged and merged[english] != translated:
                raise ValueError(f"{path.name} translates {english!r} differently from another catalogue file")
            merged[english] = translated
    return merged


def tr(text: str, /, **fields: object) -> str:
    """``text`` in the current language, with ``{name}`` fields filled in from ``fields`` (English if untranslated)."""
    lang = language()
    if lang != "en":
        text = catalog(lang).get(text, text)
    return text.format(**fields) if fields else text


def plots_translated() -> bool:
    """Whether figures speak the current language: not when it needs a font this machine does not have."""
    return not (language() == "zh" and cjk_font() is None)


def plot_tr(text: str, /, **fields: object) -> str:
    """`tr` for text a plot draws: English when the current language needs a font this machine does not have."""
    if not plots_translated():
        return text.format(**fields) if fields else text
    return tr(text, **fields)


@cache
def cjk_font() -> str | None:
    """The first of `CJK_FONTS` that matplotlib finds on this machine, or None."""
    from matplotlib import font_manager

    def found() -> str | None:
        installed = {f.name for f in font_manager.fontManager.ttflist}
        return next((name for name in CJK_FONTS if name in installed), None)

    if found() is None:  # matplotlib's font cache may predate the font's install: look at the files themselves
        for path in font_manager.findSystemFonts():
            if any(key in Path(path).name.lower() for key in ("cjk", "wqy", "sourcehan", "pingfang", "msyh", "simhei")):
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):  # a font file matplotlib cannot read
                    continue
    return found()


def width(text: str) -> int:
    """Columns ``text`` takes in a fixed-width font: Chinese characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def pad(text: str, columns: int, align: str = "<") -> str:
    """``text`` padded with spaces to ``columns`` columns (``"<"`` left, ``">"`` right): str.ljust for tables
    that may hold Chinese."""
    space = " " * max(0, columns - width(text))
    return text + space if align == "<" else space + text
