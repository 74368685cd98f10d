"""labkit.check: exercises mark right and wrong answers, with reasons, and every registered one is sound."""

import pytest

from labkit import check


@pytest.fixture
def toy():
    ex = check.exercise(
        chapter=0,
        question="bytes each rank sends in a ring all-reduce of 1,000 bytes on 4 ranks",
        why="Each of the 2(p−1) steps moves one chunk of n/p bytes.",
        solution="answer = 2 * 3 / 4 * 1000",
        hints={"2000": "That is 2n: the ring sends only (p−1)/p of it twice."},
    )(lambda: 1500.0)
    yield ex
    check.REGISTRY.pop(ex.name, None)


def test_right_wrong_and_missing_answers(toy, capsys):
    assert toy(1500)
    assert "right" in capsys.readouterr().out
    assert not toy(2000)
    out = capsys.readouterr().out
    assert "not yet" in out and "2(p−1) steps" in out and "That is 2n" in out
    assert not toy(...)
    assert "no answer yet" in capsys.readouterr().out
    assert not toy("fifteen hundred")


def test_a_mark_is_a_bool_that_a_notebook_does_not_echo(toy, capsys):
    right, wrong = toy(1500), toy(2000)
    assert (bool(right), bool(wrong), repr(right), repr(wrong)) == (True, False, "True", "False")
    assert right._ipython_display_() is None  # IPython calls this instead of printing "True" under the cell


def test_lookup_by_name(toy):
    assert getattr(check, toy.name) is toy
    with pytest.raises(AttributeError, match="has no exercise 'nonexistent'"):
        check.nonexistent  # noqa: B018


def test_every_registered_exercise_accepts_its_own_solution(capsys):
    for name, ex in check.all_exercises().items():
        scope: dict = {}
        exec(ex.solution, scope)  # the teacher's solution must set `answer`
        assert ex(scope["answer"]), f"the solution of {name} is marked wrong"
        assert ex.question and ex.why and ex.chapter >= 1
