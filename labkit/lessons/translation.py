"""Keeping a translated chapter in step with the English one: same cells, same code, same exercises, no English left.

A chapter's translation (``notebooks/zh/NN_*.ipynb``) may differ from its English original only where a student
reads: markdown cells, string literals, comments, and ``lang="zh"`` in ``labkit.setup``. `differences` lists
everything else that differs; `prose_share` measures how much of a markdown cell's prose is in Chinese. Command
line: ``python -m labkit.lessons.translation EN.ipynb ZH.ipynb`` prints the differences.
"""

from __future__ import annotations

import io
import re
import sys
import token
import tokenize
from pathlib import Path
from typing import Any

import nbformat

LANG_ARG = re.compile(r""",\s*lang\s*=\s*["']zh["']|\blang\s*=\s*["']zh["']\s*,?\s*""")
EXERCISE = re.compile(r"\bcheck\.(\w+)\(")
FSTRING_START, FSTRING_END = getattr(token, "FSTRING_START", -1), getattr(token, "FSTRING_END", -1)  # Python 3.12+


def masked_code(source: str) -> list[str]:
    """The code's tokens with every string literal as ``'…'`` and comments, blank lines and ``lang="zh"`` dropped."""
    magics = [line.strip() for line in source.splitlines() if line.lstrip().startswith(("%", "!"))]  # IPython's
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    text = LANG_ARG.sub("", "\n".join(lines)) + "\n"
    out: list[str] = [*magics]
    depth = 0  # inside an f-string that Python 3.12+ splits into pieces: the whole of it is one string
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            depth += (tok.type == FSTRING_START) - (tok.type == FSTRING_END)
            if tok.type in (token.STRING, FSTRING_END) and depth == 0:
                out.append("'…'")
            elif depth or tok.type == FSTRING_START:
                continue
            elif tok.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, token.DEDENT):
                out.append(tok.string)
    except (tokenize.TokenError, IndentationError) as e:
        return [f"<untokenizable: {e}>"]
    return [t for t in out if t.strip()]


def exercises(nb: Any) -> list[str]:
    """The exercises a notebook marks, in order (``check.NAME(``)."""
    return [m for cell in nb.cells if cell.cell_type == "code" for m in EXERCISE.findall(cell.source)]


def differences(english: Any, translated: Any) -> list[str]:
    """What differs between two notebooks beyond what a translation may change (empty when in step)."""
    problems = []
    if len(english.cells) != len(translated.cells):
        problems.append(f"{len(english.cells)} cells in English, {len(translated.cells)} translated")
    for i, (a, b) in enumerate(zip(english.cells, translated.cells, strict=False)):
        if a.cell_type != b.cell_type:
            problems.append(f"cell {i}: a {a.cell_type} cell in English, a {b.cell_type} cell translated")
            continue
        tags_a, tags_b = a.metadata.get("tags", []), b.metadata.get("tags", [])
        if sorted(tags_a) != sorted(tags_b):
            problems.append(f"cell {i}: tags {tags_a} in English, {tags_b} translated")
        if a.cell_type == "code" and masked_code(a.source) != masked_code(b.source):
            pairs = zip(masked_code(a.source) + [""], masked_code(b.source) + [""], strict=False)
            first = next((x, y) for x, y in pairs if x != y)
            problems.append(f"cell {i}: the code differs (first at {first[0]!r} / {first[1]!r}): {a.source[:60]!r}")
    if exercises(english) != exercises(translated):
        problems.append(f"exercises {exercises(english)} in English, {exercises(translated)} translated")
    return problems


CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
LATIN = re.compile(r"[A-Za-z]")
NOT_PROSE = [
    re.compile(r"```.*?```", re.S),  # code blocks
    re.compile(r"\$\$.*?\$\$", re.S),  # display formulas
    re.compile(r"\$[^$\n]+\$"),  # inline formulas
    re.compile(r"`[^`\n]+`"),  # inline code
    re.compile(r"\]\([^)]*\)"),  # link targets
    re.compile(r"<[^>\n]+>"),  # HTML tags
    re.compile(r"https?://\S+"),  # bare links
    re.compile(r"^>.*$", re.M),  # quotes of the article (in its original words)
]


def prose(markdown: str) -> str:
    """A markdown cell's prose: without code, formulas, link targets, HTML tags and quoted lines."""
    for pattern in NOT_PROSE:
        markdown = pattern.sub(" ", markdown)
    return markdown


def prose_share(markdown: str) -> tuple[float, int]:
    """(Chinese characters / (Chinese characters + Latin letters), Latin letters) of a markdown cell's prose."""
    text = prose(markdown)
    cjk, latin = len(CJK.findall(text)), len(LATIN.findall(text))
    return (cjk / (cjk + latin) if cjk + latin else 1.0), latin


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m labkit.lessons.translation ENGLISH.ipynb TRANSLATED.ipynb")
        return 2
    english, translated = (nbformat.read(Path(a), as_version=4) for a in args)
    problems = differences(english, translated)
    for i, cell in enumerate(translated.cells):
        if cell.cell_type == "markdown":
            share, latin = prose_share(cell.source)
            if share < 0.6 and latin > 40:
                problems.append(f"cell {i}: only {share:.0%} of its prose is Chinese: {cell.source[:70]!r}")
    print("\n".join(problems) or "in step")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
