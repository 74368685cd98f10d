"""labkit.steps: the decoded step-through of a real sim trace, checked against the sum it must reach."""

import numpy as np
import pytest

from labkit import collectives
from labkit.viz import steps

ALGORITHMS = list(collectives.ALGORITHMS)


def test_encode_decode_roundtrip():
    p, n = 5, 7
    total = steps.encode(1, p, n) + steps.encode(3, p, n) + steps.encode(4, p, n)
    masks, idx = steps.decode(total, p)
    assert masks.tolist() == [0b11010] * n
    assert idx.tolist() == list(range(n))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("p", [2, 3, 4, 5, 8])
def test_every_rank_holds_every_contribution_at_the_end(algorithm, p):
    result = steps.trace_steps(algorithm, p)
    full = (1 << p) - 1
    assert np.all(result[-1].buffers == full)
    assert len(result) == 1 or not np.all(result[0].buffers == full)  # one step finishes only at p = 2
    # buffers only ever gain contributions
    for before, after in zip(result, result[1:], strict=False):
        assert np.all(before.buffers & after.buffers == before.buffers)


@pytest.mark.parametrize("p", [2, 4, 8])
def test_ring_has_2_times_p_minus_1_steps_of_one_chunk(p):
    result = steps.trace_steps("ring", p)
    assert len(result) == 2 * (p - 1)
    assert [s.label for s in result[: p - 1]] == [f"reduce-scatter {k}/{p - 1}" for k in range(1, p)]
    for s in result:
        assert len(s.messages) == p and all(len(m.elements) == 1 for m in s.messages)
        assert all(m.dst == (m.src + 1) % p for m in s.messages)
    # after the reduce-scatter each rank holds exactly one fully reduced chunk
    counts = np.vectorize(lambda m: bin(int(m)).count("1"))(result[p - 2].buffers)
    assert sorted((counts == p).sum(axis=1).tolist()) == [1] * p


def test_ps_gathers_to_the_master_then_sends_back():
    result = steps.trace_steps("ps", 4)
    assert [len(s.messages) for s in result] == [1] * 6
    assert all(s.messages[0].dst == 0 for s in result[:3]) and all(s.messages[0].src == 0 for s in result[3:])


def test_describe_and_plot():
    result = steps.trace_steps("ring", 4)
    assert steps.describe(result[0], 1, 6).startswith("step 1/6 reduce-scatter 1/3: 0→1 e[3] (0)")
    fig, step = steps.plot_step(result, 2, "ring")
    assert step is result[1]
    assert "step 2 of 6" in fig._suptitle.get_text()
    assert fig.axes[1].get_xlabel() == "element of the vector" and fig.axes[1].get_ylabel() == "rank"
    with pytest.raises(ValueError, match="step must be 1..6"):
        steps.plot_step(result, 7)
    with pytest.raises(ValueError, match="1 to 16 ranks"):
        steps.trace_steps("ring", 17)


def test_step_through_widget_moves_with_its_controls():
    from labkit import widgets

    explorer = widgets.step_through("ring", 4)
    assert explorer.text.startswith("step 1/6 reduce-scatter 1/3")
    explorer.controls["k"].value = 4
    assert explorer.text.startswith("step 4/6 all-gather 1/3")
    explorer.controls["algorithm"].value = "tree"
    assert explorer.controls["k"].max == 4 and explorer.text.startswith("step 4/4 broadcast 2/2")
    explorer.controls["p"].value = 8
    assert explorer.controls["k"].max == 6
    explorer.controls["k"].value = 1
    assert explorer.text.startswith("step 1/6 reduce 1/3")


def ring_reference(p):
    """The ring's states in closed form: whose contributions rank r's chunk c holds after each step."""

    def ranks_mask(first, count):  # ranks first, first + 1, … (count of them, mod p)
        return sum(1 << ((first + i) % p) for i in range(count))

    def after_reduce_scatter(r, c, k):  # chunk c starts at rank c + 1 and reaches rank r after d steps
        d = (r - c - 1) % p
        return ranks_mask(c + 1, d + 1) if 1 <= d <= k else 1 << r

    states = [(np.array([[1 << r] * p for r in range(p)]), set())]
    for k in range(1, p):
        masks = np.array([[after_reduce_scatter(r, c, k) for c in range(p)] for r in range(p)])
        states.append((masks, {(r, (r - k - 1) % p) for r in range(p)}))
    for j in range(1, p):  # the full chunk c leaves rank c and reaches rank c + j after j steps
        masks = np.array(
            [
                [(1 << p) - 1 if (r - c) % p <= j else after_reduce_scatter(r, c, p - 1) for c in range(p)]
                for r in range(p)
            ]
        )
        states.append((masks, {(r, (r - j) % p) for r in range(p)}))
    return states


@pytest.mark.parametrize("p", [2, 3, 4, 5, 8])
def test_ring_chunks_follow_the_ring_in_closed_form(p):
    got = steps.ring_chunks(p)
    want = ring_reference(p)
    assert len(got) == len(want) == 2 * (p - 1) + 1
    for (title, masks, arrived), (want_masks, want_arrived) in zip(got, want, strict=True):
        np.testing.assert_array_equal(masks, want_masks, err_msg=title)
        assert set(arrived) == want_arrived, title
    assert got[p - 1][0].startswith("reduce-scatter") and got[p][0].startswith("all-gather")


def test_plot_ring_chunks_draws_each_contribution_and_outlines_what_arrived():
    from matplotlib.colors import to_hex

    p = 4
    fig, states = steps.plot_ring_chunks(p)
    axes = fig.axes
    assert len(axes) == 2 * (p - 1) + 1 and axes[0].get_ylabel() == "rank"
    assert all(ax.get_xlabel() == "chunk" for ax in axes)
    for ax, (title, masks, arrived) in zip(axes, states, strict=True):
        assert ax.get_title() == title
        filled = [patch for patch in ax.patches if patch.get_fill() and to_hex(patch.get_facecolor()) != "#ffffff"]
        assert len(filled) == sum(bin(int(m)).count("1") for m in masks.ravel())  # one stripe per contribution
        red = [patch for patch in ax.patches if not patch.get_fill() and to_hex(patch.get_edgecolor()) == "#c00000"]
        assert {(round(q.get_y() + 0.4), round(q.get_x() + 0.45)) for q in red} == set(arrived)
    assert "p = 4" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="2 to 8 ranks"):
        steps.plot_ring_chunks(9)
