"""labkit.train / labkit.dataparallel: p workers against Keras training one model on the combined batch, the bytes
and modelled time against labkit.cost's closed forms, an MPI run under mpiexec, and the errors."""

import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from labkit import collectives, cost, data, models, train
from labkit.comm import mpirun
from labkit.parallel import data as dataparallel

keras = dataparallel.keras
MPIEXEC = mpirun.mpiexec()
ROOT = Path(__file__).resolve().parent.parent
BATCH = 32


tiny = models.tiny_mlp  # 784 → 10 → 10: 7,960 parameters, ring chunks even on 4 and 8 ranks


NPARAMS = 7_960


@pytest.fixture(scope="module")
def mnist():
    x, y = data.load("mnist", n=128, verbose=False)
    return models.flatten(x), y


def keras_one_worker(x, y, optimizer: str, lr: float, epochs: int = 1):
    """The reference: one Keras model, train_on_batch on each combined batch, in the trainer's order."""
    model = tiny(0)
    opt = keras.optimizers.Adam(lr) if optimizer == "adam" else keras.optimizers.SGD(lr)
    model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy())
    losses = []
    for epoch in range(epochs):
        order = train.shuffled(len(x), 0, epoch)
        for s in range(len(x) // BATCH):
            idx = order[s * BATCH : (s + 1) * BATCH]
            losses.append(float(model.train_on_batch(x[idx], y[idx])))
    return model.get_weights(), losses


def run(x, y, **kw):
    kw = {"batch_size": BATCH, "model_fn": tiny, "progress": False} | kw
    return train.train(x, y, **kw)


def assert_same_weights(a, b, rtol=1e-5, atol=1e-6):
    assert len(a) == len(b)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u, v, rtol=rtol, atol=atol)


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.1), ("adam", 1e-3)])
@pytest.mark.parametrize("p", [2, 4])
def test_p_workers_equal_one_worker_with_the_combined_batch(mnist, optimizer, lr, p):
    x, y = mnist
    want, losses = keras_one_worker(x, y, optimizer, lr, epochs=2)
    h = run(x, y, p=p, optimizer=optimizer, learning_rate=lr, epochs=2)
    assert h.identical and len(h.checksums) == p  # every replica bit for bit the same
    assert_same_weights(h.weights, want)
    np.testing.assert_allclose(h.loss, losses, rtol=1e-5)
    assert not np.allclose(h.weights[0], tiny(0).get_weights()[0])  # it did train


def test_in_float64_p_workers_agree_with_one_to_rounding_of_float64(mnist):
    """The gap between p workers and one is float rounding: with Keras's floatx at float64 it shrinks ~1e9-fold."""
    x, y = mnist
    gaps = {}
    for floatx in ("float32", "float64"):
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(floatx)  # Keras keeps the policy it made first, from floatx at that time
        try:
            one, four = run(x, y, p=1, epochs=2), run(x, y, p=4, epochs=2)
        finally:
            keras.config.set_floatx("float32")
            keras.config.set_dtype_policy("float32")
        assert four.identical and {w.dtype for w in four.weights} == {np.dtype(floatx)}
        gaps[floatx] = max(float(np.max(np.abs(a - b))) for a, b in zip(one.weights, four.weights, strict=True))
    assert 0 < gaps["float64"] < 1e-12 < 1e-8 < gaps["float32"] < 1e-4


def test_one_worker_is_keras_bit_for_bit(mnist):
    x, y = mnist
    want, losses = keras_one_worker(x, y, "adam", 1e-3)
    h = run(x, y, p=1)
    assert all(np.array_equal(u, v) for u, v in zip(h.weights, want, strict=True))
    assert h.loss == losses and h.bytes_sent == [0] * 4 and h.modelled_seconds == [0.0] * 4


@pytest.mark.parametrize("algorithm", list(collectives.ALGORITHMS))
def test_each_algorithm_same_weights_bytes_and_time_of_the_cost_model(mnist, algorithm):
    x, y = mnist
    p, link = 4, cost.Link(alpha=1e-5, beta=1e-9, gamma=1e-10)
    h = run(x, y, p=p, algorithm=algorithm, link=link)
    ring = run(x, y, p=p, algorithm="ring", link=link) if algorithm != "ring" else h
    assert h.identical
    assert_same_weights(h.weights, ring.weights)
    assert h.nparams == NPARAMS and h.steps_per_epoch == len(x) // BATCH
    assert h.bytes_sent == [cost.bytes_sent_per_rank(algorithm, 4 * NPARAMS, p)] * h.steps_per_epoch
    assert h.modelled_seconds == pytest.approx([cost.allreduce_time(algorithm, 4 * NPARAMS, p, link)] * 4, rel=1e-12)


class TopK:
    """Top-k with error feedback, written to the Compressor protocol: int32 indices then float32 values, as bytes."""

    def __init__(self, k: int) -> None:
        self.k, self.seen = k, []

    def compress(self, grad, state):
        self.seen.append((state["rank"], state["p"], state["step"]))
        g = grad + state.get("residual", 0)
        idx = np.sort(np.argpartition(np.abs(g), -self.k)[-self.k :]).astype(np.int32)
        state["residual"] = g.copy()
        state["residual"][idx] = 0  # what was not sent is sent later
        return np.concatenate([idx.view(np.uint8), g[idx].astype(np.float32).view(np.uint8)])

    def decompress(self, payload, size):
        idx, values = payload[: 4 * self.k].view(np.int32), payload[4 * self.k :].view(np.float32)
        out = np.zeros(size, np.float32)
        out[idx] = values
        return out


def test_compressors_follow_the_protocol_and_count_their_bytes(mnist):
    x, y = mnist
    p, link = 4, cost.Link(alpha=1e-5, beta=1e-9)
    exact = run(x, y, p=p, link=link)
    half = run(x, y, p=p, link=link, compressor=dataparallel.Float16())  # summable: all-reduced
    assert half.identical and half.bytes_sent == [b // 2 for b in exact.bytes_sent]
    assert half.modelled_seconds == pytest.approx([cost.allreduce_time("ring", 2 * NPARAMS, p, link)] * 4)
    assert_same_weights(half.weights, exact.weights, rtol=0, atol=1e-4)  # close, not equal: float16 rounds
    topk = TopK(k=100)
    sparse = run(x, y, p=p, link=link, compressor=topk)  # not summable: all-gathered
    assert sparse.identical  # every worker decompressed the same p payloads in the same order
    assert sparse.bytes_sent == [(p - 1) * 100 * 8] * 4  # a ring all-gather forwards p − 1 payloads
    assert sparse.modelled_seconds == pytest.approx([dataparallel.exchange_time("ring", [800] * p, link, True)] * 4)
    assert sorted(set(topk.seen)) == [(r, p, s) for r in range(p) for s in range(4)]
    assert not np.allclose(sparse.weights[0], exact.weights[0], atol=1e-4)  # top-k is lossy


def test_lr_schedule_warmup_and_callbacks(mnist):
    x, y = mnist
    frozen = run(x, y, p=2, lr_schedule=lambda step: 0.0)
    assert_same_weights(frozen.weights, tiny(0).get_weights(), rtol=0, atol=0)
    assert train.warmup(1.0, 4)(0) == 0.25 and train.warmup(1.0, 4)(10) == 1.0

    class Recorder:
        def __init__(self):
            self.steps, self.epochs = [], []

        def on_step(self, h):
            self.steps.append(len(h.loss))

        def on_epoch(self, h):
            self.epochs.append((len(h.epoch_loss), len(h.epoch_accuracy)))

    rec, out, log = Recorder(), io.StringIO(), io.StringIO()
    bars = [train.Progress(stream=out, live=True), train.Progress(stream=log)]  # log: not a terminal, no bar
    h = run(x, y, p=2, epochs=2, callbacks=[rec, *bars], test=(x[:50], y[:50]))
    assert rec.steps == list(range(1, 9)) and rec.epochs == [(1, 1), (2, 2)]
    assert "epoch 2/2" in out.getvalue() and "test accuracy" in out.getvalue() and "█ 4/4" in out.getvalue()
    assert "█" not in log.getvalue() and log.getvalue().count("\n") == 2
    assert 0 <= h.epoch_accuracy[-1] <= 1 and len(h.epoch_seconds) == 2
    json.dumps(h.as_dict())  # the CLI writes it


@pytest.mark.parametrize(
    "kw, message",
    [
        (
            {"p": 3, "batch_size": 64},
            "cannot be split evenly over 3 workers: use a multiple of 3, such as 63 or 66",
        ),
        ({"p": 0}, "p .* >= 1"),
        ({"p": 2.0}, "p .* whole number"),
        ({"algorithm": "butterfly"}, "unknown algorithm 'butterfly': use one of"),
        ({"transport": "shm"}, r"train does not run on transport='shm': use one of \('sim', 'mpi'\)"),
        ({"transport": "tcp"}, "unknown transport 'tcp'"),
        ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'"),
        ({"epochs": 0}, "epochs .* >= 1"),
        ({"learning_rate": -1.0}, "learning_rate must be a number > 0"),
    ],
)
def test_bad_config_says_what_to_do(kw, message):
    with pytest.raises(ValueError, match=message):
        train.TrainConfig(**kw)


def test_bad_data_says_what_to_do(mnist):
    x, y = mnist
    with pytest.raises(ValueError, match="x has 128 images but y has 127 labels"):
        run(x, y[:-1])
    with pytest.raises(ValueError, match="784 pixels"):
        run(x[:, :100], y)
    with pytest.raises(ValueError, match="one-hot rows use y.argmax"):
        run(x, np.eye(10)[y])
    with pytest.raises(ValueError, match="larger than the 128 training examples"):
        run(x, y, batch_size=256)
    with pytest.raises(TypeError, match="compress"):
        train.TrainConfig(compressor=object())

    class Tuple(dataparallel.Float16):
        def compress(self, grad, state):
            return grad.astype(np.float16), grad.nbytes // 2

    with pytest.raises(Exception, match="must return one numeric NumPy array .* got tuple"):
        run(x, y, p=2, compressor=Tuple())


def test_command_line_alone_and_its_errors(tmp_path, capsys):
    out = tmp_path / "h.json"
    argv = ["--n-train", "128", "--n-test", "100", "--batch-size", "32", "--world-size", "2", "--quiet"]
    assert train.main([*argv, "--algorithm", "tree", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["identical"] and got["config"]["p"] == 2 and got["config"]["algorithm"] == "tree"
    assert len(got["loss"]) == 4 and len(got["epoch_accuracy"]) == 1
    with pytest.raises(SystemExit):
        train.main(["--world-size", "3", "--batch-size", "64"])
    assert "use a multiple of 3, such as 63 or 66" in capsys.readouterr().err


@pytest.mark.mpi
@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec next to this Python: pip install mpi4py mpich")
def test_mpi_run_ends_with_identical_weights_and_equals_the_sim(tmp_path):
    out = tmp_path / "history.json"
    argv = [MPIEXEC, "-n", "2", sys.executable, "-m", "labkit.train", "--n-train", "256", "--n-test", "200"]
    argv += ["--epochs", "1", "--batch-size", "32", "--quiet", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LABKIT_OFFLINE": "1"}
    done = mpirun.run_mpiexec(argv, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(out.read_text())
    assert got["config"]["transport"] == "mpi" and got["config"]["p"] == 2
    assert len(got["checksums"]) == 2 and got["identical"], got["checksums"]
    n = 4 * models.param_count(models.article_mlp())
    assert got["bytes_sent"] == [cost.bytes_sent_per_rank("ring", n, 2)] * 8
    assert got["modelled_seconds"] == pytest.approx([cost.allreduce_time("ring", n, 2, cost.DEFAULT_LINK)] * 8)
    x, y = data.load("mnist", n=256, verbose=False)
    sim = train.train(x, y, p=2, batch_size=32, progress=False)  # the same run, simulated
    np.testing.assert_allclose(got["loss"], sim.loss, rtol=1e-4)
