"""labkit.faq: failures end runs with their cause, the speed-up models match their formulas, loss scaling works."""

import numpy as np
import pytest

from labkit import collectives, cost
from labkit.comm import mpirun
from labkit.lessons import faq


def silent_rank_0(c):
    if c.rank == 1:
        return c.recv(0)
    return None


def different_shapes(c):
    return collectives.allreduce(np.ones(3 + c.rank, np.float32), c)


def rank_raises(c):
    if c.rank == 1:
        raise ValueError("batch 17 is empty")
    return collectives.allreduce(np.ones(3), c)


def collective_skipped(c):
    if c.rank == 0:
        return collectives.allreduce(np.ones(3), c)
    return None


@pytest.mark.parametrize(
    "fn, words",
    [
        (silent_rank_0, "rank 1 waits for a message from rank 0 (tag 0) that was never sent"),
        (different_shapes, "rank 1 sent shape (4,) float32, rank 0 expected (3,)"),
        (rank_raises, "rank 1 failed: ValueError: batch 17 is empty"),
        (collective_skipped, "for rank(s) [1]"),
    ],
)
def test_every_hang_on_sim_ends_in_a_comm_error_that_names_its_cause(fn, words):
    assert words in faq.comm_failure(fn)


def test_a_run_that_succeeds_is_not_mistaken_for_a_failure():
    with pytest.raises(RuntimeError, match="without a CommError"):
        faq.comm_failure(lambda c: collectives.allreduce(np.ones(2), c))


def test_real_processes_give_up_after_the_timeout():
    assert "rank 1 waited 1 s for a message from rank 0" in faq.comm_failure(silent_rank_0, 2, "shm", 1.0)


@pytest.mark.skipif(mpirun.mpiexec() is None, reason="no mpiexec on this machine")
def test_the_mpi_watchdog_aborts_a_job_that_waits_forever():
    code, line = faq.mpi_hang(timeout=1.0, limit=60)
    assert code != 0 and line.startswith("labkit: CommError: rank 1 waited 1 s for a message from rank 0")


def test_amdahl_at_its_limits():
    assert faq.amdahl(1.0, 8) == pytest.approx(8)  # all parallel: p×
    assert faq.amdahl(0.0, 8) == pytest.approx(1)  # nothing parallel: 1×
    assert faq.amdahl(0.5, 1e12) == pytest.approx(2)  # at most 1/(1 − f)


def test_predicted_speedup_is_the_ring_formula_by_hand():
    t, n, link = 1.67 / 937, 358_440, cost.preset("10 GbE")
    ring_4 = 2 * 3 * link.alpha + 2 * 3 / 4 * n * link.beta  # 2(p−1)α + 2(p−1)/p·nβ
    assert faq.predicted_speedup(t, n, 4, link) == pytest.approx(t / (t / 4 + ring_4), rel=1e-12)
    assert faq.predicted_speedup(t, n, 1, link) == 1.0
    ps = np.array([2, 8, 64])
    fast = faq.predicted_speedup(t, n, ps, cost.preset("NVLink 4 (H100)"))
    assert np.all(fast > faq.predicted_speedup(t, n, ps, link)) and np.all(fast < ps)


def test_markdown_tables_and_the_measured_training_table():
    text = "# x\n| a | b |\n|--|--|\n| 1 | 2 |\n\n## (b) later\n| p | q |\n|---|---|\n| 3 | 4 |\n| 5 | 6 |\nnot a row"
    assert faq.markdown_table(text) == [{"a": "1", "b": "2"}]
    assert faq.markdown_table(text, after="## (b)") == [{"p": "3", "q": "4"}, {"p": "5", "q": "6"}]
    with pytest.raises(ValueError, match="no line starts with"):
        faq.markdown_table(text, after="## (c)")
    measured = faq.mpi_epochs()
    assert measured and measured[1]["speedup"] == 1.0
    for m in measured.values():  # the table's own columns agree: speed-up = epoch(1)/epoch(p), epoch = sum of parts
        assert m["speedup"] == pytest.approx(measured[1]["epoch"] / m["epoch"], abs=0.01)
        assert m["allreduce"] + m["compute"] == pytest.approx(m["epoch"], abs=0.011)


def test_shard_mean_is_the_batch_mean_exact_for_integers_and_close_for_float32():
    ints = np.random.default_rng(0).integers(-50, 50, size=(64, 30)).astype(np.float64)
    assert np.array_equal(faq.shard_mean(ints, 4), ints.mean(axis=0))  # every sum and /16, /4 is exact here
    g = np.random.default_rng(1).normal(size=(64, 1000)).astype(np.float32)
    exact = g.astype(np.float64).mean(axis=0)
    assert np.abs(faq.shard_mean(g, 4) - exact).max() < 4 * np.finfo(np.float32).eps * np.abs(g).max()


def test_loss_scaling_rescues_float16_gradients_and_adapts_its_scale():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 8)).astype("float32"), rng.normal(size=(32, 1)).astype("float32")
    mixed, full = faq.tiny_mixed_model("mixed_float16"), faq.tiny_mixed_model("float32")
    ref = faq.gradients(full, x, y, loss_factor=1e-7)
    plain = faq.gradients(mixed, x, y, loss_factor=1e-7)
    scaled = faq.gradients(mixed, x, y, scale=2.0**15, loss_factor=1e-7)
    assert all(np.all(r != 0) for r in ref) and all(np.all(p == 0) for p in plain)  # every one underflowed
    assert all(np.abs(s - r).max() <= 0.01 * np.abs(r).max() for s, r in zip(scaled, ref, strict=True))
    h = faq.train_loss_scaled(faq.tiny_mixed_model("mixed_float16"), x, y, steps=12, initial_scale=2.0**24)
    skipped = 12 - h["updates"]
    assert 0 < skipped < 12 and h["scale"][:skipped] == [2.0 ** (23 - k) for k in range(skipped)]
    assert len(set(h["loss"][: skipped + 1])) == 1  # a skipped step leaves the weights, so the loss, unchanged
    assert h["loss"][-1] < h["loss"][0]


def test_mirrored_strategy_fits_on_two_logical_cpus_in_a_fresh_process():
    result = faq.mirrored_in_subprocess(replicas=2, n=512, epochs=1)
    assert result["replicas"] == 2 and np.isfinite(result["loss"][0]) and result["accuracy"] > 0.2
