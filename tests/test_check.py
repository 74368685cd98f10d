"""labkit.check: exercises mark right and wrong answers, a hint first and the method after, and every one is sound."""

import pytest

from labkit.lessons import check


@pytest.fixture
def toy():
    ex = check.exercise(
        chapter=0,
        question="bytes each rank sends in a ring all-reduce of 1,000 bytes on 4 ranks",
        why="Each of the 2(p−1) steps moves one chunk of n/p bytes.",
        solution="answer = 2 * 3 / 4 * 1000",
        hint="Count the steps of both phases, and the size of what each step sends.",
        mistakes=[(2000, "That is 2n: the ring sends only (p−1)/p of it twice."), (750, "That is one phase.")],
    )(lambda: 1500.0)
    yield ex
    check.REGISTRY.pop(ex.name, None)


def test_right_wrong_and_missing_answers(toy, capsys):
    assert toy(1500)
    assert "right" in capsys.readouterr().out
    assert not toy(...)
    assert "no answer yet" in capsys.readouterr().out
    assert not toy("fifteen hundred")
    assert not toy([1500, 1500])


def test_a_wrong_answer_gets_a_hint_first_and_the_method_on_the_second_try(toy, capsys):
    assert not toy(2000.0000001)  # a listed mistake is recognised by value, within the tolerance
    first = capsys.readouterr().out
    assert "not yet" in first and "That is 2n" in first and "2(p−1) steps" not in first
    assert f"check.{toy.name}.method()" in first
    assert not toy(1234)  # not a listed mistake: the general hint, and now the method too
    second = capsys.readouterr().out
    assert "Count the steps" in second and "The method: Each of the 2(p−1) steps" in second
    assert toy(1500) and toy.tries == 0  # a right answer starts the count again
    capsys.readouterr()
    toy(750)
    assert "That is one phase." in capsys.readouterr().out and toy.tries == 1
    toy.method()
    assert "the method: Each of the 2(p−1) steps" in capsys.readouterr().out


def test_a_mark_is_a_bool_that_a_notebook_does_not_echo(toy, capsys):
    right, wrong = toy(1500), toy(2000)
    assert (bool(right), bool(wrong), repr(right), repr(wrong)) == (True, False, "True", "False")
    assert right._ipython_display_() is None  # IPython calls this instead of printing "True" under the cell


def test_lookup_by_name(toy):
    assert getattr(check, toy.name) is toy
    with pytest.raises(AttributeError, match="has no exercise 'nonexistent'"):
        check.nonexistent  # noqa: B018


EXERCISES = check.all_exercises()


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_every_exercise_marks_its_solution_right_and_its_two_likeliest_mistakes_wrong(name, capsys):
    ex = EXERCISES[name]
    assert ex.question and ex.why and ex.hint and ex.chapter >= 1, f"{name}: question, method and hint needed"
    scope: dict = {}
    exec(ex.solution, scope)  # the teacher's solution must set `answer`
    assert ex(scope["answer"]), f"the solution of {name} is marked wrong"
    capsys.readouterr()  # the right answer printed the method; each mistake below must not
    assert len(ex.mistakes) >= 2, f"{name}: name the two most likely mistakes in its definition"
    for wrong, hint in ex.mistakes:
        ex.tries = 0
        assert not ex(wrong), f"{name}: the mistake {wrong!r} is marked right"
        out = capsys.readouterr().out
        assert hint and hint in out and ex.why not in out, f"{name}: {wrong!r} should get its hint, not the method"
    ex.tries = 0
