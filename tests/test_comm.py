"""labkit.comm: the front door `run` checks its arguments and names the fix."""

import numpy as np
import pytest

from labkit import comm


def noop(c):
    return c.rank


@pytest.mark.parametrize("bad", [0, -1, 2.5, "4", True, None])
def test_p_must_be_a_positive_whole_number(bad):
    with pytest.raises(ValueError, match=r"p \(the number of ranks\) must be a whole number >= 1"):
        comm.run(noop, bad)


def test_world_size_is_another_name_for_p_and_may_not_be_given_twice():
    assert comm.run(noop, world_size=3).values == comm.run(noop, p=3).values == comm.run(noop, 3).values == [0, 1, 2]
    with pytest.raises(TypeError, match="p or world_size"):
        comm.run(noop, 2, world_size=2)


def test_unknown_transport_names_labkits_transports_and_the_ones_run_takes():
    with pytest.raises(ValueError, match=r"labkit's are \('sim', 'shm', 'mpi'\), and comm.run takes \('sim', 'shm'\)"):
        comm.run(noop, 2, transport="tcp")


def test_mpi_is_started_by_mpiexec():
    with pytest.raises(ValueError, match="mpiexec -n P"):
        comm.run(noop, 2, transport="mpi")


def test_fn_must_be_callable_and_timeout_positive():
    with pytest.raises(TypeError, match="fn must be a function"):
        comm.run("step", 2)
    with pytest.raises(ValueError, match="timeout must be a positive"):
        comm.run(noop, 2, timeout=0)


def test_link_only_on_sim():
    with pytest.raises(ValueError, match="transport='sim' only"):
        comm.run(noop, 2, transport="shm", link=object())


def test_check_op_and_expect_like():
    assert comm.check_op("max") is np.maximum
    with pytest.raises(ValueError, match="unknown op 'mean'"):
        comm.check_op("mean")
    with pytest.raises(comm.CommError, match=r"rank 1 sent shape \(3,\) int32, rank 0 expected \(4,\) int32"):
        comm.expect_like(np.zeros(4, np.int32), np.zeros(3, np.int32), src=1, rank=0)


def test_sim_runs_through_run():
    result = comm.run(noop, 3)
    assert result.values == [0, 1, 2]
