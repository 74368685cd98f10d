"""labkit.practice: the live plot, the MPI launcher, the printed command and the scaling model."""

from types import SimpleNamespace

import pytest

from labkit import cost
from labkit.comm import mpirun
from labkit.lessons import practice


def test_live_loss_keeps_one_curve_per_run():
    live = practice.LiveLoss(title="t", every=1000)
    live.start("a").on_step(SimpleNamespace(loss=[2.0, 1.5]))
    live.start("b").on_epoch(SimpleNamespace(loss=[2.1, 1.4, 1.0]))
    assert live.curves == {"a": [2.0, 1.5], "b": [2.1, 1.4, 1.0]}
    ax = live.figure().axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["a", "b"]
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "cross-entropy loss" and ax.get_title() == "t"


def test_command_for_one_machine_and_for_a_hostfile():
    assert (
        practice.command(4, dataset="mnist", epochs=2)
        == "mpiexec -n 4 python -m labkit.train --dataset mnist --epochs 2"
    )
    assert practice.command(8, hosts="hosts.txt").startswith("mpiexec -f hosts.txt -n 8 ")


def test_predicted_epoch_is_shared_compute_plus_all_reduces():
    link = cost.Link(alpha=1e-5, beta=1e-9)
    t = practice.predicted_epoch(compute_1=10.0, steps=100, p=4, nbytes=1_000_000, link=link, cores=2)
    assert t == pytest.approx(10.0 / 2 + 100 * (2 * 3 * 1e-5 + 2 * 3 / 4 * 1e6 * 1e-9))


@pytest.mark.mpi
@pytest.mark.skipif(mpirun.mpiexec() is None, reason="no mpiexec: pip install mpi4py mpich")
def test_launch_trains_under_mpiexec_and_reads_the_history_back():
    h = practice.launch(2, dataset="mnist", epochs=1, n_train=256, n_test=100, batch_size=64)
    assert h["identical"] and len(h["checksums"]) == 2
    assert h["config"]["p"] == 2 and h["steps_per_epoch"] == 4
    with pytest.raises(RuntimeError, match="failed"):
        practice.launch(2, dataset="mnist", epochs=1, n_train=256, batch_size=63)
