"""labkit.compress.gradients: each compressor against an independent reference (np.argsort, closed forms,
hand-counted bytes, the error-feedback invariant), then through the data-parallel trainer."""

import math

import numpy as np
import pytest

from labkit import comm, cost, data, models, train
from labkit.compress.gradients import QSGD, PowerSGD, RandomK, Sign, TopK, wire_bytes
from labkit.parallel import data as dataparallel

keras = dataparallel.keras
P = 4  # workers in the trainer tests


def gaussian(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def round_trip(compressor, g, **state):
    return compressor.decompress(compressor.compress(g, {"rank": 0, "step": 0, **state}), g.size)


# --- round trips -------------------------------------------------------------------------------------------------


def test_float16_round_trip_within_half_precision_rounding():
    g = gaussian(1000)
    got = round_trip(dataparallel.Float16(), g)
    assert got.dtype == np.float32
    assert np.all(np.abs(got - g) <= np.abs(g) * 2.0**-11 + 2.0**-24)  # float16: 11 significant bits


@pytest.mark.parametrize("size, k", [(1000, 10), (100_000, 37)])
def test_topk_keeps_exactly_the_k_largest_and_zeros_the_rest(size, k):
    g = gaussian(size, seed=size)
    got = round_trip(TopK(k=k, error_feedback=False), g)
    largest = np.argsort(-np.abs(g))[:k]
    want = np.zeros_like(g)
    want[largest] = g[largest]
    np.testing.assert_array_equal(got, want)


def test_randomk_draws_the_same_coordinates_on_every_rank_and_new_ones_each_step():
    g, c = gaussian(1000), RandomK(ratio=0.05, error_feedback=False)
    sent = {
        (r, s): np.flatnonzero(round_trip(c, gaussian(1000, seed=r), rank=r, step=s)) for r in range(3) for s in (0, 1)
    }
    for s in (0, 1):
        assert all(np.array_equal(sent[(r, s)], sent[(0, s)]) for r in range(3)) and sent[(0, s)].size == 50
    assert not np.array_equal(sent[(0, 0)], sent[(0, 1)])
    got = round_trip(c, g, step=0)  # without error feedback: scaled by n/k, unbiased
    np.testing.assert_allclose(got[sent[(0, 0)]], g[sent[(0, 0)]] * 1000 / 50, rtol=1e-6)


def test_sign_decodes_to_mean_magnitude_times_sign():
    g = gaussian(1001)
    got = round_trip(Sign(error_feedback=False), g)
    np.testing.assert_allclose(got, np.mean(np.abs(g)) * np.where(g >= 0, 1, -1), rtol=1e-6)


@pytest.mark.parametrize("s", [1, 3, 4])
def test_qsgd_is_unbiased_and_each_error_is_below_norm_over_s(s):
    g, n, draws = gaussian(50, seed=s), 50, 4000
    q, norm = QSGD(levels=s, seed=1), float(np.linalg.norm(g))
    samples = np.stack([round_trip(q, g, step=t) for t in range(draws)])
    assert np.all(np.abs(samples - g) <= norm / s * (1 + 1e-6))
    # each draw's variance per value is (‖g‖/s)²·f(1 − f) ≤ (‖g‖/s)²/4: the mean of N draws is within 5 σ of g
    sigma = norm / (2 * s * math.sqrt(draws))
    assert np.all(np.abs(samples.mean(0) - g) <= 5 * sigma)
    assert np.mean(np.sum((samples - g) ** 2, axis=1)) <= min(n / s**2, math.sqrt(n) / s) * norm**2  # Alistarh


def powersgd_average(grads, shapes, rank, steps=1, states=None):
    """PowerSGD's allreduce on len(grads) simulated ranks: the averages of each step and the final states."""
    ps, p = PowerSGD(rank=rank), len(grads)
    states = states or [{"shapes": shapes} for _ in range(p)]
    out = []
    for _ in range(steps):
        run = comm.run(lambda c: ps.allreduce(grads[c.rank], c, "ring", states[c.rank]), p, "sim")
        assert all(np.array_equal(v[0], run.values[0][0]) for v in run.values)  # every rank the same bits
        out.append(run.values[0][0])
    return out, states


def test_powersgd_full_rank_is_exact_and_rank_one_recovers_a_rank_one_matrix():
    shapes = [(30, 6), (6,), (6, 9), (9,)]
    n = sum(math.prod(s) for s in shapes)
    grads = [gaussian(n, seed=r) for r in range(2)]
    (average,), _ = powersgd_average(grads, shapes, rank=9)  # ≥ min(m, n) of every matrix
    np.testing.assert_allclose(average, (grads[0] + grads[1]) / 2, atol=1e-4)
    u, v = gaussian(40, 1), gaussian(7, 2)
    one = np.outer(u, v).ravel()
    (average,), _ = powersgd_average([one, one], [(40, 7)], rank=1)
    np.testing.assert_allclose(average, one, atol=1e-4)
    single = PowerSGD(rank=6)  # the one-worker compress/decompress pair: exact at full rank too
    np.testing.assert_allclose(round_trip(single, grads[0], shapes=shapes), grads[0], atol=1e-4)


# --- bytes on the wire, counted by hand --------------------------------------------------------------------------


def test_payload_bytes_hand_counted():
    g = gaussian(1000)
    nbytes = lambda c, g=g, **state: c.compress(g, {"rank": 0, "step": 0, **state}).nbytes  # noqa: E731
    assert nbytes(TopK(k=10)) == 10 * (2 + 4)  # uint16 index + float32 value
    assert nbytes(TopK(k=10), gaussian(100_000)) == 10 * (4 + 4)  # more than 65,536 values: uint32 indices
    assert nbytes(RandomK(ratio=0.01)) == 10 * 4  # values only
    assert nbytes(Sign()) == 4 + 125  # scale + 1,000 bits
    assert nbytes(QSGD(levels=1)) == 4 + 125 + 125  # norm + signs + 1-bit levels
    assert nbytes(QSGD(levels=3)) == 4 + 125 + 250  # 2-bit levels
    assert nbytes(QSGD(levels=4)) == 4 + 125 + 375  # 3-bit levels (0…4)
    shapes = [(20, 10), (10,)]  # P 20×2 + Q 10×2 + the bias 10, float32
    assert nbytes(PowerSGD(rank=2), gaussian(210), shapes=shapes) == (40 + 20 + 10) * 4


def test_wire_bytes_hand_counted():
    ring = lambda n: 2 * (P - 1) * n // P  # noqa: E731  (n divisible by 4 p: every chunk equal)
    assert wire_bytes(None, 1000, P) == ring(4000)
    assert wire_bytes(dataparallel.Float16(), 1000, P) == ring(2000)
    assert wire_bytes(TopK(k=10), 1000, P) == (P - 1) * 60  # all-gathered
    assert wire_bytes(Sign(), 1000, P) == (P - 1) * 129
    assert wire_bytes(RandomK(ratio=0.016), 1000, P) == ring(16 * 4)
    shapes = [(24, 8), (8,)]  # first all-reduce: bias 8 + P 24×2; second: Q 8×2
    assert wire_bytes(PowerSGD(rank=2), 200, P, shapes=shapes) == ring((8 + 48) * 4) + ring(16 * 4)
    assert wire_bytes(None, 1001, P) == 4 * (2 * 1001 - 250 - 250)  # uneven chunks 251, 250, 250, 250


def test_exchange_time_adds_powersgds_two_allreduces():
    link = cost.Link(alpha=1e-5, beta=1e-9)
    both = dataparallel.exchange_time("ring", [(224, 64)] * P, link, False)
    assert both == pytest.approx(cost.allreduce_time("ring", 224, P, link) + cost.allreduce_time("ring", 64, P, link))
    assert dataparallel.exchange_time("ring", [60] * P, link, True) == pytest.approx(3 * (1e-5 + 60e-9))


# --- error feedback ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compressor", [TopK(ratio=0.02), RandomK(ratio=0.02), Sign()], ids=["topk", "randomk", "sign"])
def test_error_feedback_loses_nothing(compressor):
    state, sent, total = {"rank": 0}, np.zeros(500), np.zeros(500)
    for t in range(20):
        g = gaussian(500, seed=t)
        state["step"] = t
        sent += compressor.decompress(compressor.compress(g, state), 500)
        total += g
    np.testing.assert_allclose(sent + state["residual"], total, atol=1e-4)
    assert np.abs(state["residual"]).max() > 0  # something was held back


def test_powersgd_error_feedback_loses_nothing_over_workers_and_steps():
    shapes = [(12, 5), (5,)]
    steps = [[gaussian(65, seed=10 * t + r) for r in range(2)] for t in range(6)]
    states, total_sent = [{"shapes": shapes} for _ in range(2)], np.zeros(65)
    for grads in steps:
        (average,), states = powersgd_average(grads, shapes, rank=1, states=states)
        total_sent += 2 * average  # the average of the workers' shares, times p
    residuals = states[0]["residual"] + states[1]["residual"]
    np.testing.assert_allclose(total_sent + residuals, np.sum([sum(g) for g in steps], axis=0), atol=1e-4)


# --- through the trainer -----------------------------------------------------------------------------------------


tiny = models.tiny_mlp  # 784 → 10 → 10: 7,960 parameters, ring chunks even on 4 and 8 ranks


N, SHAPES = 7_960, [(784, 10), (10,), (10, 10), (10,)]
LINK = cost.Link(alpha=1e-5, beta=1e-9)


@pytest.fixture(scope="module")
def mnist():
    x, y = data.load("mnist", "train", n=1024, verbose=False)
    return models.flatten(x), y


def fit(x, y, compressor):
    config = train.TrainConfig(p=P, compressor=compressor, learning_rate=1e-2, link=LINK)
    return train.train(x, y, config, model_fn=tiny, epochs=1, progress=False)


ring = 2 * (P - 1) / P  # of the bytes of an all-reduced payload; an all-gathered one costs (p − 1) payloads
CASES = {  # compressor, bytes the busiest worker sends a step (counted by hand), the payloads' all-reduce sizes
    "float16": (dataparallel.Float16(), ring * 2 * N, [2 * N]),
    "topk": (TopK(ratio=0.01), (P - 1) * 80 * (2 + 4), None),  # k = 80, uint16 indices
    "topk-no-ef": (TopK(ratio=0.01, error_feedback=False), (P - 1) * 80 * 6, None),
    "randomk": (RandomK(ratio=0.1), ring * 796 * 4, [796 * 4]),  # 1 % learns too slowly to see in 16 steps
    "qsgd": (QSGD(levels=4), (P - 1) * (4 + N // 8 + 3 * N // 8), None),
    "sign": (Sign(), (P - 1) * (4 + N // 8), None),
    "powersgd": (PowerSGD(rank=2), ring * 4 * (20 + 784 * 2 + 10 * 2 + 10 * 2 + 10 * 2), [4 * 1608, 4 * 40]),
}


@pytest.fixture(scope="module")
def uncompressed(mnist):
    return fit(*mnist, None)


@pytest.mark.parametrize("name", list(CASES))
def test_every_compressor_trains_identical_replicas_and_sends_what_it_counts(mnist, uncompressed, name):
    compressor, want_bytes, reduced = CASES[name]
    h = fit(*mnist, compressor)
    assert h.identical
    assert h.bytes_sent == [want_bytes] * h.steps_per_epoch
    assert wire_bytes(compressor, N, P, shapes=SHAPES) == want_bytes
    if reduced:  # the simulated time is the closed form of each all-reduce, added up
        want = sum(cost.allreduce_time("ring", n, P, LINK) for n in reduced)
        assert h.modelled_seconds == pytest.approx([want] * h.steps_per_epoch, rel=1e-9)
    assert np.mean(h.loss[-4:]) < np.mean(h.loss[:4]) - 0.05  # it learns
    assert h.bytes_sent[0] < uncompressed.bytes_sent[0]


def test_topk_of_everything_without_error_feedback_is_uncompressed_training(mnist, uncompressed):
    h = fit(*mnist, TopK(ratio=1.0, error_feedback=False))
    for a, b in zip(h.weights, uncompressed.weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # summed in another order: rounding only


def test_powersgd_state_carries_the_layer_shapes_and_a_shared_q(mnist):
    workers = dataparallel.SimWorkers(tiny, train.TrainConfig(p=2, compressor=PowerSGD(rank=2)))
    assert [s["shapes"] for s in workers.states] == [SHAPES, SHAPES]
    x, y = mnist
    workers.step(x[:64], y[:64], 0, None)
    qs = [s["q"] for s in workers.states]
    assert [q.shape for q in qs[0]] == [(10, 2), (10, 2)]
    assert all(np.array_equal(a, b) for a, b in zip(*qs, strict=True))  # warm start identical on both workers


# --- bad inputs --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, fix",
    [
        (lambda: TopK(ratio=0), "(0, 1]"),
        (lambda: TopK(ratio=1.5), "(0, 1]"),
        (lambda: TopK(k=0), "k=100"),
        (lambda: TopK(), "exactly one"),
        (lambda: TopK(ratio=0.1, k=3), "exactly one"),
        (lambda: RandomK(ratio=-0.1), "(0, 1]"),
        (lambda: QSGD(levels=0), "levels=4"),
        (lambda: PowerSGD(rank=0), "rank=2"),
        (lambda: PowerSGD(rank=1.5), "rank=2"),
    ],
)
def test_bad_arguments_name_the_fix(make, fix):
    with pytest.raises(ValueError, match=fix.replace("(", r"\(").replace("]", r"\]")):
        make()


def test_bad_use_names_the_fix():
    with pytest.raises(ValueError, match="k <= 50"):
        TopK(k=60).compress(gaussian(50), {})
    with pytest.raises(ValueError, match="shapes"):
        PowerSGD().compress(gaussian(50), {})
    with pytest.raises(ValueError, match="this model's shapes"):
        PowerSGD().compress(gaussian(50), {"shapes": [(5, 5)]})
    with pytest.raises(ValueError, match="call compress"):
        RandomK(ratio=0.1).decompress(np.zeros(5, np.float32), 50)
    with pytest.raises(ValueError, match="algorithm"):
        wire_bytes(None, 100, 4, algorithm="butterfly")
