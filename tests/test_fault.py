"""labkit.fault and train's checkpoints: a killed worker fails the others loudly (shm, MPI), a restart from the
checkpoint ends where an uninterrupted run ends, checkpoints are atomic, stragglers cost what the closed form says."""

import math
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from labkit import collectives, comm, cost, data, fault, models, train
from labkit.comm import CommError, mpirun
from labkit.parallel import data as dataparallel

keras = dataparallel.keras
ROOT = Path(__file__).resolve().parent.parent
MPIEXEC = mpirun.mpiexec()
BATCH = 32


def tiny(seed: int, hidden: int = 10):
    """784 → hidden (ReLU) → 10: a model small enough to train in a blink."""
    init = lambda i: keras.initializers.GlorotUniform(seed=seed * 10 + i)  # noqa: E731
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(hidden, activation="relu", kernel_initializer=init(0)),
            keras.layers.Dense(10, activation="softmax", kernel_initializer=init(1)),
        ]
    )


@pytest.fixture(scope="module")
def mnist():
    x, y = data.load("mnist", n=192, verbose=False)
    return models.flatten(x), y


def fit(x, y, **kw):
    kw = {"batch_size": BATCH, "model_fn": tiny, "progress": False, "epochs": 2} | kw
    return train.train(x, y, **kw)


def same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))


# --- checkpoints and restart ----------------------------------------------------------------------------------------


def test_restart_after_a_worker_dies_ends_bit_identical(mnist, tmp_path):
    x, y = mnist  # 6 steps an epoch, 12 in all
    whole = fit(x, y, p=2)
    with pytest.raises(CommError, match=r"worker 1 died at step 9 \(fault injection\).*rank\(s\) \[1\]"):
        fit(x, y, p=2, checkpoint_dir=tmp_path, checkpoint_every=4, fail_at=(1, 9))
    assert fault.load_checkpoint(tmp_path).step == 8  # the last one before the death: mid-epoch 2, step 4 of 6
    resumed = fit(x, y, p=2, checkpoint_dir=tmp_path, resume=True)
    assert same(resumed.weights, whole.weights) and resumed.identical
    assert resumed.loss == whole.loss and resumed.epoch_loss == whole.epoch_loss  # the history is continued too
    assert fault.load_checkpoint(tmp_path).step == 12 and same(fault.load_checkpoint(tmp_path).weights, whole.weights)
    again = fit(x, y, p=2, checkpoint_dir=tmp_path, resume=True)  # nothing left to do: the same result
    assert same(again.weights, whole.weights)
    fresh = fit(x, y, p=2, checkpoint_dir=tmp_path / "none", resume=True)  # no checkpoint yet: from 0
    assert same(fresh.weights, whole.weights)


def test_restart_with_fewer_workers_keeps_the_global_batch(mnist, tmp_path):
    x, y = mnist
    whole = fit(x, y, p=4)
    with pytest.raises(CommError, match="worker 3 died at step 7"):
        fit(x, y, p=4, checkpoint_dir=tmp_path, fail_at=(3, 7))  # epoch checkpoints only: step 6
    resumed = fit(x, y, p=2, checkpoint_dir=tmp_path, resume=True)
    assert fault.load_checkpoint(tmp_path).config["p"] == 2
    for a, b in zip(resumed.weights, whole.weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # 4 shards or 2: the same mean, other roundings
    assert not same(resumed.weights, fit(x, y, p=2, epochs=1).weights)  # it really trained on


def test_a_checkpoint_is_atomic(tmp_path, monkeypatch):
    good = fault.Checkpoint(3, [np.arange(4.0)], [np.int64(3), np.ones(4, np.float32)], {"seed": 0}, {"loss": [1.5]})
    fault.save_checkpoint(tmp_path, good)

    def crash(f, arrays):
        f.write(b"PK\x03\x04half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(fault, "_write", crash)
    with pytest.raises(OSError, match="disk full"):
        fault.save_checkpoint(tmp_path, fault.Checkpoint(9, [np.zeros(4)], [], {"seed": 0}, {}))
    back = fault.load_checkpoint(tmp_path)
    assert back.step == 3 and same(back.weights, good.weights) and back.history == {"loss": [1.5]}
    assert back.optimizer[0].dtype == np.int64 and same(back.optimizer, good.optimizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]  # the half-written file is gone
    assert fault.load_checkpoint(tmp_path / "empty") is None


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"seed": 1}, r"written with seed=0 but this run has seed=1: pass seed=0 to continue it, or start afresh"),
        ({"model_fn": lambda s: tiny(s, hidden=12)}, r"weights of shapes .*\(784, 10\).*resume with the model"),
        ({"batch_size": 64}, "pass batch_size=32 to continue it"),
        ({"optimizer": "sgd"}, "pass optimizer='adam'"),
    ],
)
def test_resume_with_another_config_names_the_fix(mnist, tmp_path, kw, message):
    x, y = mnist
    fit(x, y, epochs=1, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=message):
        fit(x, y, checkpoint_dir=tmp_path, resume=True, **kw)
    with pytest.raises(ValueError, match="n_train=192 to continue"):
        fit(x[:96], y[:96], checkpoint_dir=tmp_path, resume=True)


def test_bad_fault_options_name_the_fix(mnist):
    x, y = mnist
    with pytest.raises(ValueError, match="0 <= worker < p=2"):
        fit(x, y, p=2, fail_at=(2, 0))
    with pytest.raises(ValueError, match="needs a checkpoint_dir"):
        fit(x, y, checkpoint_every=5)
    replica = dataparallel.Replica(tiny(0), dataparallel.make_optimizer("sgd", 0.1))
    adam = dataparallel.Replica(tiny(0), dataparallel.make_optimizer("adam", 0.1))
    with pytest.raises(ValueError, match="this SGD has 2 of shapes"):
        replica.set_optimizer_state(adam.optimizer_state())
    assert len(adam.optimizer_state()) == 2 + 2 * 4  # iteration, rate, m and v of each of 4 variables


# --- a killed worker on real processes --------------------------------------------------------------------------------


def _logreg_data(n: int = 240, d: int = 5):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d))
    return x, (x @ rng.normal(size=d) + 0.3 * rng.normal(size=n) > 0).astype(float)


def _segments() -> set[str]:
    prefix = f"labkit_{os.getpid()}_"
    return {n for n in os.listdir("/dev/shm") if n.startswith(prefix)} if os.path.isdir("/dev/shm") else set()


def test_a_killed_shm_rank_fails_the_others_and_leaves_nothing():
    x, y = _logreg_data()
    want = fault.logreg_reference(x, y)
    run = comm.run(fault.logreg_worker, 3, transport="shm", timeout=20, args=(x, y))
    for w in run.values:
        np.testing.assert_allclose(w, want, rtol=1e-12)  # three shards, one full batch
    segments, children = _segments(), set(multiprocessing.active_children())
    with pytest.raises(CommError, match=r"rank 1 died: killed by signal 9 \(SIGKILL\)"):
        comm.run(fault.logreg_worker, 3, transport="shm", timeout=20, args=(x, y, 20, 0.5, 1, 5))
    assert _segments() - segments == set() and set(multiprocessing.active_children()) - children == set()


def test_a_dead_rank_stops_a_ring_but_not_a_server_with_a_deadline():
    x, y = _logreg_data()
    with pytest.raises(CommError, match=r"deadlock: rank 0 waits .* for rank\(s\) \[2\]"):  # the ring needs all
        comm.run(fault.logreg_worker, 4, args=(x, y, 20, 0.5, 2, 3, "ring"))
    grads = [np.arange(8, dtype=np.float32) * (r + 1) for r in range(5)]
    compute = [1e-3, 2e-3, math.inf, 9e-3, 1e-3]  # rank 2 is dead, rank 3 misses the 5 ms deadline
    run = comm.run(lambda c: fault.simple_ps_with_deadline(grads[c.rank], c, compute, 5e-3), 5)
    want = np.mean([grads[r] for r in (0, 1, 4)], axis=0)
    assert run.values[2] is None and all(v[1] == [0, 1, 4] for v in run.values if v is not None)
    for r in (0, 1, 3, 4):
        np.testing.assert_allclose(run.values[r][0], want, rtol=1e-6)
    assert {m.src for m in run.trace if m.dst == 0} == {1, 4}  # the late and the dead never reach the server
    # elastic training: rebuild the ring over the three survivors; it gives the same average
    survivors = [grads[r] for r in (0, 1, 4)]
    ring = comm.run(lambda c: collectives.allreduce(survivors[c.rank], c, "ring") / np.float32(3), 3)
    np.testing.assert_allclose(ring.values[0], want, rtol=1e-6)
    with pytest.raises(CommError, match="the server .rank 0. must make the deadline"):
        comm.run(lambda c: fault.simple_ps_with_deadline(grads[c.rank], c, [1.0] * 5, 0.5), 5)


# --- stragglers -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", collectives.ALGORITHMS)
@pytest.mark.parametrize("link", [cost.Link(1e-5, 1e-9), cost.Link(2e-5, 8e-10, gamma=2e-10)])
def test_straggler_times_equal_the_closed_form(algorithm, link):
    nbytes = 4 * 8192
    for p in (4, 8):
        assert fault.straggler_time(algorithm, nbytes, p, 0.0, 1, link) == pytest.approx(
            cost.allreduce_time(algorithm, nbytes, p, link), rel=1e-9
        )
        for slow in (0, 1, 2, p - 1):
            for delay in (1e-5, 3e-4, 2e-3):
                got = fault.straggler_time(algorithm, nbytes, p, delay, slow, link)
                want = fault.straggler_closed_form(algorithm, nbytes, p, delay, slow, link)
                assert got == pytest.approx(want, rel=1e-9), (p, slow, delay)
    with pytest.raises(ValueError, match="use 0..3"):
        fault.straggler_time(algorithm, nbytes, 4, 0.1, slow_rank=4)


def test_a_server_hides_a_small_delay_of_its_last_worker():
    link, n, p = cost.Link(1e-5, 1e-9), 4 * 8192, 8
    c = link.message_time(n)
    t = [fault.straggler_time("ps", n, p, d, p - 1, link) for d in (0.0, 5 * c, 7 * c)]
    assert t[0] == pytest.approx(t[1], rel=1e-12) and t[2] == pytest.approx(t[0] + c, rel=1e-9)
    fig = fault.plot_stragglers(n, 4, [0.0, 1e-4], link=link)
    assert fig.axes[0].get_title() and len(fig.axes[0].lines) == len(collectives.ALGORITHMS) + 1


# --- Keras's BackupAndRestore ---------------------------------------------------------------------------------------


def test_keras_backup_and_restore_resumes_where_it_stopped(mnist, tmp_path):
    x, y = mnist
    keras.utils.set_random_seed(0)
    whole, ran = fault.backup_fit(x, y, tmp_path / "a", epochs=3)
    assert ran == [0, 1, 2]
    with pytest.raises(fault.Interrupt, match="epoch 2"):
        fault.backup_fit(x, y, tmp_path / "b", epochs=3, interrupt_at=2)
    resumed, ran = fault.backup_fit(x, y, tmp_path / "b", epochs=3)
    assert ran == [2]  # epochs 0 and 1 came from the backup
    assert same(resumed.get_weights(), whole.get_weights())


# --- MPI: a killed rank ends the job; a restart with fewer workers finishes ------------------------------------------


def _mpi(tmp_path: Path, n: int, *flags: str) -> subprocess.CompletedProcess:
    argv = [MPIEXEC, "-n", str(n), sys.executable, "-m", "labkit.train", "--n-train", "192", "--n-test", "96"]
    argv += ["--batch-size", "48", "--epochs", "2", "--quiet", "--checkpoint-dir", str(tmp_path / "ckpt"), *flags]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LABKIT_OFFLINE": "1"}
    return mpirun.run_mpiexec(argv, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)


def _ours(tmp_path: Path) -> list[int]:
    """Processes whose command line names tmp_path (ours, and nobody else's)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if str(tmp_path).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


@pytest.mark.mpi
@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec next to this Python: pip install mpi4py mpich")
def test_mpi_a_killed_rank_ends_the_job_and_a_restart_with_fewer_finishes(tmp_path):
    mpich = lambda: {n for n in os.listdir("/dev/shm") if n.startswith("mpich")}  # noqa: E731
    before = mpich()
    try:
        died = _mpi(tmp_path, 3, "--checkpoint-every", "2", "--fail-rank", "1", "--fail-step", "5", "--timeout", "20")
    finally:
        for name in mpich() - before:  # MPICH leaves its own segment when a rank is killed
            Path("/dev/shm", name).unlink(missing_ok=True)
    assert died.returncode != 0 and "rank 1 (pid" in died.stderr and "dies at step 5" in died.stderr
    assert _ours(tmp_path) == []  # hydra killed the survivors: nothing is left running
    assert fault.load_checkpoint(tmp_path / "ckpt").step == 4
    done = _mpi(tmp_path, 2, "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    final = fault.load_checkpoint(tmp_path / "ckpt")
    assert final.step == 8 and final.config["p"] == 2 and len(final.history["loss"]) == 8
    x, y = data.load("mnist", n=192, verbose=False)
    whole = train.train(x, y, p=3, batch_size=48, epochs=2, progress=False)  # never interrupted
    for a, b in zip(final.weights, whole.weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_a_straggler_called_in_the_old_order_names_the_order_instead_of_starting_two_million_threads():
    with pytest.raises(ValueError, match=r"\(algorithm, nbytes, p, link\)"):
        fault.straggler_time("ring", 4, 2 * 2**20, 1e-3)  # (algorithm, p, nbytes, ...): p would be 2,097,152
