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
    with pytest.raises(
        ValueError, match=r"labkit's are \('sim', 'shm', 'mpi'\), and comm.run takes \('sim', 'shm', 'mpi'\)"
    ):
        comm.run(noop, 2, transport="tcp")


def test_fn_must_be_callable_and_timeout_positive():
    with pytest.raises(TypeError, match="fn must be a function"):
        comm.run("step", 2)
    with pytest.raises(ValueError, match="timeout must be a positive"):
        comm.run(noop, 2, timeout=0)


def test_link_only_on_sim():
    for transport in ("shm", "mpi"):
        with pytest.raises(ValueError, match="transport='sim' only"):
            comm.run(noop, 2, transport=transport, link=object())


def test_check_op_and_expect_like():
    assert comm.check_op("max") is np.maximum
    with pytest.raises(ValueError, match="unknown op 'mean'"):
        comm.check_op("mean")
    with pytest.raises(comm.CommError, match=r"rank 1 sent shape \(3,\) int32, rank 0 expected \(4,\) int32"):
        comm.expect_like(np.zeros(4, np.int32), np.zeros(3, np.int32), src=1, rank=0)


def test_sim_runs_through_run():
    result = comm.run(noop, 3)
    assert result.values == [0, 1, 2]


class QueueComm(comm.CommBase):
    """A transport as a student writes it: send, recv, sendrecv and barrier over thread queues, nothing else."""

    def __init__(self, rank, size, boxes, gate):
        self.rank, self.size, self.boxes, self.gate = rank, size, boxes, gate

    def send(self, x, dst, tag=0, label=""):
        self.boxes[(self.rank, dst, tag)].put(np.array(x, copy=True))  # eager: never waits for the receiver

    def recv(self, src, tag=0, label=""):
        return self.boxes[(src, self.rank, tag)].get(timeout=10)

    def sendrecv(self, x, dst, src, tag=0, label=""):
        self.send(x, dst, tag, label)
        return self.recv(src, tag, label)

    def barrier(self):
        self.gate.wait(timeout=10)


@pytest.mark.parametrize("p", [1, 3, 4])
def test_a_comm_with_only_the_four_calls_runs_every_collective(p):
    import collections
    import queue
    import threading

    from labkit import collectives

    boxes, gate = collections.defaultdict(queue.Queue), threading.Barrier(p)
    inputs = [np.arange(10, dtype=np.int64) * (r + 1) for r in range(p)]
    results = {}

    def rank_main(r):
        c = QueueComm(r, p, boxes, gate)
        got = {a: collectives.allreduce(inputs[r], c, algorithm=a) for a in collectives.ALGORITHMS}
        got["broadcast"] = collectives.broadcast(inputs[r] if r == 0 else None, c)
        got["allgather"] = collectives.allgather(inputs[r], c)
        results[r] = got

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(p)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == list(range(p))
    for got in results.values():
        for a in collectives.ALGORITHMS:
            assert np.array_equal(got[a], np.sum(inputs, axis=0)), a
        assert np.array_equal(got["broadcast"], inputs[0])
        assert np.array_equal(got["allgather"], np.concatenate(inputs))
