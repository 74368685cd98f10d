"""labkit.comm.sim: the port rules by hand, the closed forms of labkit.cost as the reference, and loud failures."""

import threading
import time

import numpy as np
import pytest

from labkit import collectives, comm, cost
from labkit.comm import CommError, Message
from labkit.cost import Link

# α = 1 s, β = 0.125 s/byte (so one float64 costs 1 s), γ = 0.0625 s/byte: small exact binary fractions.
LINK = Link(alpha=1.0, beta=0.125, gamma=0.0625)


def sim(fn, p, link=LINK, **kwargs):
    return comm.run(fn, p, transport="sim", link=link, **kwargs)


# --- the port rules, worked out by hand ------------------------------------------------------------------------


def test_a_send_is_eager_and_holds_the_send_port():
    def fn(c):
        if c.rank == 0:
            c.send(np.zeros(1), 1, label="first")  # costs 1 + 8·0.125 = 2
            c.send(np.zeros(3), 2, label="second")  # waits for the port: starts at 2, costs 4
        else:
            c.recv(0)

    run = sim(fn, 3)
    assert run.trace == [Message(0, 1, 8, 0.0, 2.0, "first"), Message(0, 2, 24, 2.0, 6.0, "second")]
    assert run.time == 6.0


def test_the_receive_port_delivers_one_message_at_a_time_in_program_order():
    def fn(c):
        if c.rank == 0:
            c.recv(2)  # both arrive at 0; rank 0 asks for rank 2's first
            c.recv(1)
        else:
            c.send(np.zeros(1), 0)

    run = sim(fn, 3)
    assert [(m.src, m.start, m.end) for m in run.trace] == [(2, 0.0, 2.0), (1, 0.0, 4.0)]
    assert run.time == 4.0


def test_delivery_waits_for_the_receivers_clock_and_a_reduction_costs_n_gamma():
    def fn(c):
        if c.rank == 1:
            c.send(np.zeros(1), 0)
            c.recv(0)
        else:
            out = np.ones(1)
            c.recv_reduce(out, 1)  # delivered over [0, 2], reduced in 8·0.0625 = 0.5 → clock 2.5
            c.send(out, 1)  # starts at 2.5
            return out

    run = sim(fn, 2)
    assert run.values[0].tolist() == [1.0]
    # rank 1 sent at 0, then its recv waits for rank 0's send at 2.5: delivered over [2.5, 4.5]
    assert [(m.src, m.start, m.end) for m in run.trace] == [(1, 0.0, 2.0), (0, 2.5, 4.5)]
    assert run.time == 4.5


def test_sendrecv_starts_both_at_the_clock_and_ends_at_the_receive():
    def fn(c):
        if c.rank == 0:
            c.sendrecv(np.zeros(3), 1, 1)  # send: [0, 4] on the send port; receive 1 float: [0, 2]
            c.send(np.zeros(1), 1)  # the clock is 2, but the send port is busy until 4
            return None
        c.send(np.zeros(1), 0)
        c.recv(0)
        c.recv(0)

    run = sim(fn, 2)
    ends = {(m.src, m.nbytes): (m.start, m.end) for m in run.trace}
    assert ends[(1, 8)] == (0.0, 2.0)  # the receive rank 0's clock moves to
    assert ends[(0, 24)] == (0.0, 4.0)
    assert ends[(0, 8)] == (4.0, 6.0)  # started at max(clock 2, send port free 4)
    assert run.time == 6.0


def test_barrier_and_allgather_object_are_free_metadata():
    def fn(c):
        c.barrier()
        names = c.allgather_object({"rank": c.rank})
        arrays = c.allgather_object(np.arange(c.rank))  # any object, arrays too
        c.barrier()
        return names, arrays

    run = sim(fn, 4)
    names, arrays = run.values[2]
    assert names == [{"rank": r} for r in range(4)]
    assert [a.tolist() for a in arrays] == [list(range(r)) for r in range(4)]
    assert run.trace == [] and run.time == 0.0


def test_messages_carry_copies():
    def fn(c):
        if c.rank == 0:
            x = np.arange(4.0)
            c.send(x, 1)
            x[:] = -1  # must not change what rank 1 receives
            return None
        return c.recv(0)

    assert sim(fn, 2).values[1].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_messages_match_by_source_and_tag_in_fifo_order():
    def fn(c):
        if c.rank == 0:
            for tag, value in [(1, 10.0), (2, 20.0), (1, 11.0)]:
                c.send([value], 1, tag=tag)  # array-likes are converted with np.asarray
            return None
        return [c.recv(0, tag=2)[0], c.recv(0, tag=1)[0], c.recv(0, tag=1)[0]]

    assert sim(fn, 2).values[1] == [20.0, 10.0, 11.0]


def test_default_link_is_used_when_none_is_given():
    def fn(c):
        if c.rank == 0:
            c.send(np.zeros(1000, np.uint8), 1)
        else:
            c.recv(0)

    assert comm.run(fn, 2).time == pytest.approx(cost.DEFAULT_LINK.message_time(1000))


def test_same_run_same_trace_and_time():
    def fn(c):
        for algorithm in collectives.ALGORITHMS:
            collectives.allreduce(np.arange(37.0) * c.rank, c, algorithm=algorithm)

    first, second = sim(fn, 6), sim(fn, 6)
    assert first.trace == second.trace and first.time == second.time
    assert first.trace == sorted(first.trace, key=lambda m: (m.start, m.end, m.src, m.dst))


# --- the closed forms of labkit.cost are the reference ----------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.0, 3e-10])
@pytest.mark.parametrize("p", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("algorithm", list(collectives.ALGORITHMS))
def test_simulated_time_equals_the_closed_form(algorithm, p, gamma):
    link = Link(alpha=1e-5, beta=1e-9, gamma=gamma)
    n_values = 64 * p  # float64, so n = 512p bytes: divisible by p
    run = sim(lambda c: collectives.allreduce(np.ones(n_values), c, algorithm=algorithm), p, link=link)
    assert run.time == pytest.approx(cost.allreduce_time(algorithm, 8 * n_values, p, link), rel=1e-12, abs=0)


@pytest.mark.parametrize("p", [3, 5, 6, 7])
@pytest.mark.parametrize("algorithm", list(collectives.ALGORITHMS))
def test_closed_form_for_other_p_is_the_documented_one(algorithm, p):
    link = Link(alpha=1e-5, beta=1e-9, gamma=3e-10)
    n_values = 840  # divisible by p and by the largest power of two below it
    run = sim(lambda c: collectives.allreduce(np.ones(n_values), c, algorithm=algorithm), p, link=link)
    assert run.time == pytest.approx(cost.allreduce_time(algorithm, 8 * n_values, p, link), rel=1e-12, abs=0)


@pytest.mark.parametrize("p", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("algorithm", list(collectives.ALGORITHMS))
def test_bytes_each_rank_sends(algorithm, p):
    n_values = 840
    run = sim(lambda c: collectives.allreduce(np.ones(n_values), c, algorithm=algorithm), p)
    sent = np.zeros(p)
    for m in run.trace:
        sent[m.src] += m.nbytes
    expected = cost.bytes_sent_per_rank(algorithm, 8 * n_values, p)
    assert sent.max() == pytest.approx(expected, rel=1e-12)
    if algorithm == "ring" or (algorithm != "ps" and algorithm != "tree" and p in (2, 4, 8)):
        assert sent == pytest.approx(np.full(p, expected), rel=1e-12)  # every rank sends the same


# --- failures are loud, and nothing is left running --------------------------------------------------------------


def test_a_rank_that_raises_fails_the_others_and_the_run():
    seen = {}

    def fn(c):
        if c.rank == 2:
            raise ValueError("bad gradient")
        try:
            collectives.allreduce(np.ones(10), c)
        except CommError as e:
            seen[c.rank] = str(e)
            raise

    before = threading.active_count()
    with pytest.raises(CommError, match="rank 2 failed: ValueError: bad gradient") as info:
        sim(fn, 4)
    assert isinstance(info.value.__cause__, ValueError)
    assert sorted(seen) == [0, 1, 3]
    assert all("rank 2 failed: ValueError: bad gradient" in text for text in seen.values())
    assert threading.active_count() == before


def test_a_receive_nobody_answers_is_a_deadlock_named_at_once():
    def fn(c):
        if c.rank == 1:
            c.recv(0, label="waiting")

    before = threading.active_count()
    # the deadlock is found when rank 0 returns, not by the (long) timeout: the message says which
    expected = r"deadlock: rank 1 waits for a message from rank 0 \(tag 0\) that was never sent \(rank 0 has returned\)"
    with pytest.raises(CommError, match=expected + ", in 'waiting'"):
        sim(fn, 2, timeout=600)
    assert threading.active_count() == before


def test_a_cycle_of_receives_names_everyone_and_mismatched_tags():
    def fn(c):
        c.send(np.zeros(1), (c.rank + 1) % 3, tag=5)
        c.recv((c.rank - 1) % 3, tag=0)

    with pytest.raises(CommError) as info:
        sim(fn, 3, timeout=600)
    text = str(info.value)
    for r in range(3):
        assert f"rank {r} waits for a message from rank {(r - 1) % 3} (tag 0)" in text
    assert "tag(s) [5]" in text


def test_a_barrier_one_rank_skips_is_a_deadlock():
    def fn(c):
        if c.rank != 1:
            c.barrier()

    with pytest.raises(CommError, match=r"barrier/allgather_object \(call 1\) for rank\(s\) \[1\]"):
        sim(fn, 3, timeout=600)


def test_timeout_is_a_backstop_for_a_rank_that_computes_too_long():
    def fn(c):
        if c.rank == 0:
            time.sleep(0.5)  # "computes" past the timeout, then finds the run failed at its next call
            c.send(np.zeros(1), 1)
        else:
            c.recv(0)

    before = threading.active_count()
    with pytest.raises(
        CommError, match=r"timeout after 0.2 s: rank 0 is computing; rank 1 waits for a message from rank 0 \(tag 0\)"
    ):
        sim(fn, 2, timeout=0.2)
    assert threading.active_count() == before


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda c: c.send(np.zeros(1), 5), r"dst=5 is not a rank of this world of 2: use 0..1"),
        (lambda c: c.recv(-1), r"src=-1 is not a rank"),
        (lambda c: c.send(np.zeros(1), 1, tag=-3), "tag must be"),
        (lambda c: c.send([object()], 1), "numeric NumPy array"),
        (lambda c: c.recv_reduce(np.zeros(1), 1, op="prod"), r"unknown op 'prod'"),
    ],
)
def test_bad_arguments_say_what_to_fix(bad, match):
    with pytest.raises(CommError, match=match):
        sim(bad, 2)


def test_a_received_array_unlike_the_buffer_is_named():
    def fn(c):
        if c.rank == 0:
            c.send(np.zeros(3, np.float32), 1)
        else:
            c.recv_reduce(np.zeros(4), 0)

    with pytest.raises(CommError, match=r"rank 0 sent shape \(3,\) float32, rank 1 expected \(4,\) float64"):
        sim(fn, 2)


def test_link_must_be_a_link():
    with pytest.raises(TypeError, match="labkit.cost.Link"):
        comm.run(lambda c: None, 2, link=(1e-6, 1e-9))


def test_compute_advances_the_clock_and_delays_what_follows():
    link = cost.Link(alpha=1e-6, beta=0.0)

    def fn(c):
        if c.rank == 0:
            c.compute(5e-6, label="forward")
            c.send(np.zeros(1), 1)
        else:
            c.recv(0)

    run = comm.run(fn, 2, link=link)
    assert run.compute == [(0, 0.0, 5e-6, "forward")]
    (m,) = run.trace
    assert m.start == pytest.approx(5e-6) and m.end == pytest.approx(6e-6)
    assert run.time == pytest.approx(6e-6)
    with pytest.raises(comm.CommError, match="compute time must be >= 0"):
        comm.run(lambda c: c.compute(-1.0), 1)
