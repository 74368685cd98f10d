"""Every test file says which chapters it belongs to, so `pytest -m ch03` runs exactly chapter 3's tests."""

import importlib.util
import pathlib
import subprocess
import sys

TESTS = pathlib.Path(__file__).parent
# tests/conftest.py by its path: benchmarks/tests/ has a conftest too, and `import conftest` may find either
_spec = importlib.util.spec_from_file_location("tests_conftest", TESTS / "conftest.py")
conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conftest)


def test_every_test_file_has_chapters():
    files = {p.name for p in TESTS.glob("test_*.py")}
    missing = sorted(files - set(conftest.CHAPTERS) - {"test_markers.py"})
    assert not missing, f"add these test files to CHAPTERS in tests/conftest.py: {missing}"


def test_chapter_markers_are_registered(pytestconfig):
    registered = {m.split(":")[0] for m in pytestconfig.getini("markers")}
    used = {f"ch{c:02d}" for chapters in conftest.CHAPTERS.values() for c in chapters}
    assert used <= registered, f"register in pyproject.toml: {sorted(used - registered)}"


def test_marker_selects_the_chapter():
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "ch06", str(TESTS)],
        capture_output=True,
        text=True,
        cwd=TESTS.parent,
    ).stdout
    collected = {line.split("::")[0].rsplit("/", 1)[-1] for line in out.splitlines() if "::" in line}
    expected = {name for name, chapters in conftest.CHAPTERS.items() if 6 in chapters and (TESTS / name).exists()}
    assert collected == expected
