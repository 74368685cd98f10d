"""labkit.memory and labkit.llm: published figures, hand-counted small cases, and the sim's traces and clocks."""

import matplotlib
import numpy as np
import pytest

from labkit import collectives, comm, cost
from labkit.parallel import llm, memory
from labkit.parallel import tensor as tp
from labkit.parallel.memory import GB, Transformer

matplotlib.use("Agg")

SMALL = Transformer(layers=2, hidden=8, heads=2, seq=4, vocab=10)


# --- model states ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("zero, paper_gb", [(0, 120.0), (1, 31.4), (2, 16.6), (3, 1.9)])
def test_zero_paper_figure_1(zero, paper_gb):
    """Rajbhandari et al. 2020, Figure 1: 7.5 B parameters, K = 12, 64 devices (GB = 1e9)."""
    est = memory.estimate(7.5e9, devices=64, zero=zero)
    assert round(est.model_states / GB, 1) == paper_gb
    psi, nd = 7.5e9, 64  # the paper's formulas, written out
    expected = [(2 + 2 + 12) * psi, 4 * psi + 12 * psi / nd, 2 * psi + 14 * psi / nd, 16 * psi / nd][zero]
    assert est.model_states == pytest.approx(expected)
    assert est.activations == 0 and est.tp_bytes == 0 and est.pp_bytes == 0  # a parameter count has no shape


def test_fp32_adam_is_16_bytes_a_parameter_and_model_parallelism_divides_it():
    assert memory.model_states(1e9, precision="fp32") == (4e9, 4e9, 8e9)
    assert memory.model_states(1e9, precision="mixed") == (2e9, 2e9, 12e9)
    assert sum(memory.model_states(1e9, dp=4, zero=3, precision="fp32", mp=8)) == pytest.approx(16e9 / 32)
    est = memory.estimate(1e9, devices=16, tp=2, pp=2, zero=2)  # dp = 4
    assert (est.weights, est.grads, est.optimizer) == pytest.approx((2e9 / 4, 2e9 / 16, 12e9 / 16))


def test_gpt3_weights_are_350_gb_in_fp16():
    """Brown et al. 2020: 175 B parameters; 2 bytes each."""
    assert memory.model_states(175e9)[0] == pytest.approx(350e9)
    gpt3 = memory.MODELS["GPT-3 (175 B)"]
    assert gpt3.params == pytest.approx(175e9, rel=0.005)
    assert round(gpt3.params * 2 / GB, -1) == 350


def test_parameter_count_by_enumerating_tensors():
    def count(m: Transformer) -> int:
        h = m.hidden
        per_layer = (h * 3 * h + 3 * h) + (h * h + h) + (h * 4 * h + 4 * h) + (4 * h * h + h) + 2 * (2 * h)
        return m.layers * per_layer + m.vocab * h + m.seq * h  # token and position embeddings

    assert SMALL.params == count(SMALL) == 1856
    gpt2 = Transformer(12, 768, 12, 1024, 50257)
    assert gpt2.params + 2 * 768 == 124_439_808  # Hugging Face's gpt2 count, which adds the final layer norm


# --- activations -------------------------------------------------------------------------------------------------


def test_activations_per_layer_hand_counted():
    """s=4, b=2, h=8, a=2: sbh = 64; 5as/h = 5."""
    assert memory.activations_per_layer(SMALL, micro_batch=2) == 64 * 39  # Eq. 1: 34 + 5
    assert memory.activations_per_layer(SMALL, 2, tp=2) == 64 * (10 + 12 + 2.5)  # Eq. 2
    assert memory.activations_per_layer(SMALL, 2, tp=2, sequence_parallel=True) == 64 * 39 / 2  # Eq. 3
    assert memory.activations_per_layer(SMALL, 2, recompute=True) == 2 * 64  # the layer input only
    assert memory.activations_per_layer(SMALL, 2, tp=2, recompute=True, sequence_parallel=True) == 64
    big = memory.MODELS["Megatron 22 B"]
    sbh = big.seq * big.hidden  # at t = 1, Eq. 2 and Eq. 3 are Eq. 1
    eq1 = sbh * (34 + 5 * big.heads * big.seq / big.hidden)
    assert memory.activations_per_layer(big, 1, tp=1) == pytest.approx(eq1)
    assert memory.activations_per_layer(big, 1, sequence_parallel=True) == pytest.approx(eq1)


def test_pipeline_keeps_min_of_stages_and_micro_batches_in_flight():
    per_layer = memory.activations_per_layer(SMALL, 1)
    assert memory.estimate(SMALL, 2, pp=2, micro_batches=8).activations == pytest.approx(1 * 2 * per_layer)
    assert memory.estimate(SMALL, 2, pp=2, micro_batches=1).activations == pytest.approx(1 * 1 * per_layer)
    assert memory.estimate(SMALL, 1, micro_batches=8).activations == pytest.approx(2 * per_layer)  # accumulation
    assert memory.estimate(SMALL, 1, precision="fp32").activations == pytest.approx(2 * 2 * per_layer)


# --- traffic against the simulator -------------------------------------------------------------------------------


def _sent_by(run, rank: int) -> int:
    return sum(m.nbytes for m in run.trace if m.src == rank)


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_data_parallel_traffic_equals_the_sim(zero):
    params, p, link = 4096, 4, cost.preset("10 GbE")
    est = memory.estimate(params, devices=p, zero=zero, link=link)
    grads = np.ones(params, np.float16)  # mixed precision: fp16 gradients and weights

    def step(c):
        if zero == 0:
            return collectives.allreduce(grads, c, "ring")
        if zero == 3:  # weights gathered for the forward and the backward pass, gradients reduce-scattered
            collectives.allgather(grads[: params // p], c)
            collectives.allgather(grads[: params // p], c)
            return collectives.reduce_scatter(grads, c)
        shard = collectives.reduce_scatter(grads, c)  # ZeRO-1/2: each rank updates its shard ...
        return collectives.allgather(shard, c)  # ... and gathers the updated weights

    run = comm.run(step, p, link=link)
    assert _sent_by(run, 0) == pytest.approx(est.dp_bytes)
    assert run.time == pytest.approx(est.dp_seconds, rel=1e-12)
    assert est.dp_bytes == (3 if zero == 3 else 2) * (p - 1) / p * 2 * params


def test_tensor_and_pipeline_traffic_hand_counted():
    link = tp_link = cost.Link(alpha=1e-6, beta=1e-9)
    est = memory.estimate(SMALL, 4, tp=2, pp=2, micro_batches=3, link=link, tp_link=tp_link)
    n = 2 * 4 * 1 * 8  # one s × b × h tensor in fp16: 64 bytes
    count = 4 * 1 * 3  # 4 all-reduces a layer, 1 layer a stage, 3 micro-batches
    assert est.tp_bytes == count * 2 * (2 - 1) / 2 * n
    assert est.tp_seconds == pytest.approx(count * (2 * 1e-6 + 1 * n * 1e-9))
    assert est.pp_bytes == 3 * n and est.pp_seconds == pytest.approx(3 * (1e-6 + n * 1e-9))
    recomputed = memory.estimate(SMALL, 4, tp=2, pp=2, micro_batches=3, recompute=True, link=link, tp_link=link)
    assert recomputed.tp_bytes == pytest.approx(1.5 * est.tp_bytes)  # the forward's 2 all-reduces run again
    middle = memory.estimate(Transformer(3, 8, 2, 4, 10), 3, pp=3, micro_batches=3, link=link)
    assert middle.pp_bytes == 2 * 3 * n  # a middle stage sends activations forward and gradients back


def test_tensor_parallel_traffic_equals_the_sim():
    link = cost.preset("NVLink 4 (H100)")
    est = memory.estimate(SMALL, 2, tp=2, tp_link=link)
    x = np.ones(SMALL.seq * SMALL.hidden, np.float16)

    def layers(c):
        for _ in range(4 * SMALL.layers):  # Megatron: 2 forward + 2 backward all-reduces per layer
            collectives.allreduce(x, c, "ring")

    run = comm.run(layers, 2, link=link)
    assert _sent_by(run, 0) == est.tp_bytes
    assert run.time == pytest.approx(est.tp_seconds, rel=1e-12)


# --- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"devices": 64, "dp": 8, "tp": 2, "pp": 2}, r"dp·tp·pp = 8·2·2 = 32.*set dp = devices / \(tp·pp\)"),
        ({"devices": 6, "tp": 4}, "not a multiple of tp·pp"),
        ({"devices": 4, "tp": 4}, "tp=4 must divide heads=2"),
        ({"devices": 3, "pp": 3}, "pp=3 is more stages than the 2 layers"),
        ({"devices": 0}, "devices must be a whole number >= 1"),
        ({"devices": 1, "micro_batch": 0}, "micro_batch must be"),
        ({"devices": 1, "zero": 4}, "ZeRO stage 0, 1, 2 or 3"),
        ({"devices": 1, "precision": "fp8"}, "precision must be one of"),
    ],
)
def test_bad_setups_say_how_to_fix_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        memory.estimate(SMALL, **kwargs)


def test_bad_sizes():
    with pytest.raises(ValueError, match="params must be > 0"):
        memory.estimate(-1e9, 1)
    with pytest.raises(ValueError, match="Transformer.hidden must be a whole number >= 1"):
        Transformer(2, 0, 2)
    with pytest.raises(ValueError, match="multiple of heads"):
        Transformer(2, 10, 4)
    with pytest.raises(ValueError, match="tokens must be"):
        llm.kv_cache_bytes(32, 32, 128, -1)
    with pytest.raises(ValueError, match="t=3 must divide the 32"):
        llm.decode_traffic(llm.LLAMA2["Llama-2-7B"], 3)
    with pytest.raises(ValueError, match="one gradient size per layer"):
        llm.step_time([1.0], [4, 4], 8, 2, cost.DEFAULT_LINK)
    with pytest.raises(ValueError, match="bucket_bytes must be > 0"):
        llm.buckets([4, 4], 0)


# --- plots and the calculator ------------------------------------------------------------------------------------


def test_zero_scaling_plot():
    fig, curves = memory.plot_zero_scaling(7.5e9, devices=(1, 64))
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log" and ax.get_title() and "GB" in ax.get_ylabel()
    assert [round(c[1] / GB, 1) for c in curves.values()] == [120.0, 31.4, 16.6, 1.9]
    assert ax.get_lines()[3].get_ydata()[1] == pytest.approx(1.875)
    assert len(ax.get_legend().get_texts()) == 5


def test_calculator_responds_to_its_controls():
    from labkit.viz import widgets

    calc = widgets.memory_calculator()
    assert calc.text.startswith("175 B parameters on 1024 devices")
    calc.controls["model"].value = 7.5e9
    for name, value in (("tp", 1), ("pp", 1), ("dp", 64), ("devices", 64), ("zero", 2)):
        calc.controls[name].value = value
    assert "16.64 GB per device" in calc.text and calc.result.grads == pytest.approx(15e9 / 64)
    calc.controls["zero"].value = 3
    assert "1.88 GB per device" in calc.text
    assert calc.figure.axes[0].patches[2].get_height() == pytest.approx(12 * 7.5 / 64)  # optimizer bar, GB
    calc.controls["devices"].value = 32
    assert calc.text.startswith("cannot estimate: devices=32 but dp·tp·pp = 64·1·1 = 64")
    calc.controls["dp"].value = 32
    assert "3.75 GB per device" in calc.text


# --- overlap (labkit.llm) ----------------------------------------------------------------------------------------


def test_buckets_fill_in_backward_order():
    assert llm.buckets([4, 4, 4, 4], 8) == [[3, 2], [1, 0]]
    assert llm.buckets([4, 4, 4, 4], 1) == [[3], [2], [1], [0]]
    assert llm.buckets([4, 12, 4], 8) == [[2, 1], [0]]
    assert llm.buckets([4, 4, 4], 1e9) == [[2, 1, 0]]


def test_step_time_hand_computed():
    link = cost.Link(alpha=0.0, beta=1e-3)  # p = 2: a ring all-reduce of n bytes takes n·1e-3 s
    backward, grads = [1.0, 1.0, 1.0], [1000, 1000, 1000]  # each bucket's all-reduce takes 1 s
    assert llm.step_time(backward, grads, 1, 2, link, overlap=False) == pytest.approx(3 + 3)
    assert llm.step_time(backward, grads, 1, 2, link) == pytest.approx(4)  # ready at 1, 2, 3; done at 2, 3, 4
    assert llm.step_time(backward, grads, 1, 2, link, launch=0.5) == pytest.approx(5.5)  # starts 1.5, 3, 4.5
    slow = cost.Link(alpha=0.0, beta=3e-3)  # 3 s an all-reduce: communication-bound
    assert llm.step_time(backward, grads, 1, 2, slow) == pytest.approx(1 + 3 * 3)
    assert llm.step_time(backward, grads, 1e9, 2, link) == llm.step_time(backward, grads, 1e9, 2, link, False)


@pytest.mark.parametrize("bucket_bytes", [1, 2048, 1e9])
@pytest.mark.parametrize("overlap", [True, False])
def test_simulated_step_equals_step_time(bucket_bytes, overlap):
    link, p = cost.preset("100 GbE"), 4
    backward, grads = [2e-6, 3e-6, 1e-6, 4e-6, 2e-6], [1024, 512, 512, 2048, 1024]
    run = llm.simulate_step(backward, grads, bucket_bytes, p, link, overlap)
    launch = link.alpha if overlap else 0.0
    assert run.time == pytest.approx(llm.step_time(backward, grads, bucket_bytes, p, link, overlap, launch), rel=1e-12)
    summed = run.values[p] if overlap else run.values[0]  # a communication stream's result
    assert all(np.array_equal(s, np.full_like(s, p * (p + 1) / 2)) for s in summed)
    assert sum(s.size for s in summed) * 4 == sum(grads)


# --- serving (labkit.llm) ----------------------------------------------------------------------------------------


def test_llama2_kv_cache():
    m = llm.LLAMA2["Llama-2-7B"]
    assert m.head_dim == 128
    assert llm.kv_cache_bytes(m.layers, m.kv_heads, m.head_dim, 1) == 2**19  # 0.5 MiB a token
    assert llm.kv_cache_bytes(m.layers, m.kv_heads, m.head_dim, 4096) == 2 * 2**30  # 2 GiB
    big = llm.LLAMA2["Llama-2-70B"]  # grouped-query attention: 8 KV heads for 64 query heads
    assert llm.kv_cache_bytes(big.layers, big.kv_heads, big.head_dim, 1) == 2 * 80 * 8 * 128 * 2 == 320 * 2**10
    assert llm.kv_cache_bytes(2, 3, 4, 5, batch=6, bytes_per_value=1) == 2 * 2 * 3 * 4 * 5 * 6


def test_tensor_parallel_serving_weights_and_traffic():
    assert llm.tp_weights_per_device(70e9, 1) == 140e9
    assert llm.tp_weights_per_device(70e9, 8) == 17.5e9
    m = llm.LLAMA2["Llama-2-70B"]
    assert llm.decode_traffic(m, 8) == 2 * 80 * 2 * 7 / 8 * 8192 * 2
    link = cost.preset("NVLink 4 (H100)")
    assert llm.decode_comm_seconds(m, 8, link) == pytest.approx(160 * (14 * 1e-6 + 1.75 * 8192 * 2 / 450e9))
    assert llm.decode_traffic(m, 1) == 0


def test_decode_traffic_is_what_chapter_6_megatron_block_sends():
    h, t, batch = 16, 4, 3
    rng = np.random.default_rng(0)
    first = tp.Dense(rng.normal(size=(h, 4 * h)).astype(np.float32), np.zeros(4 * h, np.float32), "relu")
    second = tp.Dense(rng.normal(size=(4 * h, h)).astype(np.float32), np.zeros(h, np.float32))
    x = rng.normal(size=(batch, h)).astype(np.float32)
    run = comm.run(lambda c: tp.simple_megatron_mlp(x, first, second, c), t)
    assert np.allclose(run.values[0], tp.forward(x, [first, second]), atol=1e-4)
    one_layer = llm.Decoder(layers=1, hidden=h, heads=t, kv_heads=t, params=1.0)
    # a layer is two Megatron blocks (attention, MLP), each one all-reduce: the MLP block is half a layer's traffic
    assert _sent_by(run, 0) == llm.decode_traffic(one_layer, t, batch, bytes_per_value=4) / 2


def test_kv_cache_plot():
    fig, curves = llm.plot_kv_cache()
    ax = fig.axes[0]
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel() == "GiB" and ax.get_legend()
    assert curves["Llama-2-7B"][list(range(8, 18)).index(12)] == 2 * 2**30  # 4,096 tokens
