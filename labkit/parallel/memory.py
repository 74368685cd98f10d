"""Memory per device and traffic per device per step when training a large transformer: ZeRO, tensor, pipeline.

Model states follow Rajbhandari et al. 2020 (ZeRO, Section 3.1 and Figure 1): Ψ parameters trained with
mixed-precision Adam hold 2Ψ bytes of fp16 weights, 2Ψ of fp16 gradients and KΨ of optimizer state (K = 12: fp32
master weights, momentum and variance); plain fp32 training holds 4Ψ + 4Ψ + 8Ψ. Activations follow Korthikanti et al.
2022 ("Reducing Activation Recomputation in Large Transformer Models"). Sizes are bytes; GB means 1e9 bytes, as the
ZeRO paper uses it.

Simplifying assumptions (the ones the papers make, said once here):
- tensor parallelism tp and pipeline parallelism pp divide every layer's weights, gradients and optimizer state by
  tp·pp: the layers split evenly over the stages, and the embedding and output layers are ignored in that split;
- the pipeline runs 1F1B (Narayanan et al. 2021): its first stage keeps min(pp, m) micro-batches of activations of
  its L/pp layers, which is L layers' worth once m ≥ pp, as Korthikanti et al. note;
- all traffic uses ring collectives (all-reduce = reduce-scatter + all-gather); times add up with no overlap;
- ZeRO-3's transient copy of the layer it has just gathered, and framework buffers, are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from labkit import cost
from labkit.i18n import pad, plot_tr, tr

GB = 1e9  # the ZeRO paper's GB

#: bytes per parameter of (weights, gradients, optimizer state): ZeRO's 2 + 2 + K, K = 12; fp32 Adam 4 + 4 + 8
PRECISIONS = {"mixed": (2, 2, 12), "fp32": (4, 4, 8)}


def _positive_int(value, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return value


@dataclass(frozen=True)
class Transformer:
    """A GPT-style decoder: L layers of width h with a attention heads, trained on sequences of s tokens."""

    layers: int
    hidden: int
    heads: int
    seq: int = 2048  # GPT-3's context, and Korthikanti et al.'s
    vocab: int = 51200  # Megatron pads GPT-2's 50,257 tokens to a multiple of 1,024

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "heads", "seq", "vocab"):
            _positive_int(getattr(self, name), f"Transformer.{name}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden={self.hidden} must be a multiple of heads={self.heads}: each head is h/a wide")

    @property
    def params(self) -> int:
        """12Lh² + 13Lh + (V + s)h: attention and MLP weights and biases, layer norms, embeddings (Narayanan 2021)."""
        L, h = self.layers, self.hidden
        return 12 * L * h * h + 13 * L * h + (self.vocab + self.seq) * h


#: Published shapes (layers, hidden, heads, sequence, vocabulary).
MODELS = {
    "GPT-2 XL (1.5 B)": Transformer(48, 1600, 25, 1024, 50257),  # Radford et al. 2019
    "Megatron 22 B": Transformer(48, 6144, 64),  # Korthikanti et al. 2022, Table 3
    "GPT-3 (175 B)": Transformer(96, 12288, 96, 2048, 50257),  # Brown et al. 2020, Table 2.1
    "Megatron 530 B": Transformer(105, 20480, 128),  # Korthikanti et al. 2022, Table 3
    "Megatron 1 T": Transformer(128, 25600, 160),  # Korthikanti et al. 2022, Table 3
}


def model_states(params: float, dp: int = 1, zero: int = 0, precision: str = "mixed", mp: int = 1):
    """(weights, gradients, optimizer) bytes per device for ZeRO stage 0–3 over dp ranks, model parallel degree mp.

    Stage 1 partitions the optimizer state over dp, stage 2 also the gradients, stage 3 also the weights.
    """
    if not params > 0:
        raise ValueError(f"params must be > 0 (a number of parameters), got {params!r}")
    if zero not in (0, 1, 2, 3):
        raise ValueError(f"zero must be a ZeRO stage 0, 1, 2 or 3 (0 = plain data parallelism), got {zero!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    _positive_int(dp, "dp")
    _positive_int(mp, "mp")
    w, g, k = PRECISIONS[precision]
    shard = params / mp  # each model-parallel rank holds 1/(tp·pp) of every state
    return (
        w * shard / (dp if zero >= 3 else 1),
        g * shard / (dp if zero >= 2 else 1),
        k * shard / (dp if zero >= 1 else 1),
    )


def activations_per_layer(
    model: Transformer, micro_batch: int = 1, tp: int = 1, recompute: bool = False, sequence_parallel: bool = False
) -> float:
    """Bytes of 16-bit activations one layer keeps for its backward pass (Korthikanti et al. 2022).

    Eq. 1, no parallelism: sbh(34 + 5as/h). Eq. 2, tensor parallel t: sbh(10 + 24/t + 5as/(ht)) (layer norms and
    dropouts stay whole on every rank). Eq. 3, with sequence parallelism: sbh(34 + 5as/h)/t. Full recomputation
    keeps only the layer's input, 2sbh (their Table 2), or 2sbh/t when the sequence is split too.
    """
    _positive_int(micro_batch, "micro_batch")
    s, b, h, a = model.seq, micro_batch, model.hidden, model.heads
    if recompute:
        return 2 * s * b * h / (tp if sequence_parallel else 1)
    if sequence_parallel:
        return s * b * h * (34 + 5 * a * s / h) / tp
    return s * b * h * (10 + 24 / tp + 5 * a * s / (h * tp))


@dataclass(frozen=True)
class Estimate:
    """Memory per device (bytes) and traffic per device per step (bytes sent, seconds on a link) of one setup."""

    params: float  # parameters of the whole model
    weights: float
    grads: float
    optimizer: float
    activations: float  # 0 when only a parameter count was given
    dp_bytes: float  # gradient all-reduce (ZeRO: reduce-scatter + all-gather), sent by each device
    tp_bytes: float  # activation all-reduces inside the layers
    pp_bytes: float  # activations and their gradients at stage boundaries (the busiest stage)
    dp_seconds: float
    tp_seconds: float
    pp_seconds: float

    @property
    def model_states(self) -> float:
        return self.weights + self.grads + self.optimizer

    @property
    def memory(self) -> float:
        return self.model_states + self.activations

    @property
    def traffic(self) -> float:
        return self.dp_bytes + self.tp_bytes + self.pp_bytes

    @property
    def seconds(self) -> float:
        return self.dp_seconds + self.tp_seconds + self.pp_seconds

    def table(self) -> str:
        """The estimate as a small fixed-width table (GB = 1e9 bytes, ms)."""
        rows = [pad(tr("memory per device"), 22) + f"{'GB':>9}"]
        parts = {"weights": tr("weights"), "grads": tr("grads"), "optimizer": tr("optimizer")}
        for name, shown in (parts | {"activations": tr("activations")}).items():
            rows.append("  " + pad(shown, 20) + f"{getattr(self, name) / GB:>9.2f}")
        rows.append("  " + pad(tr("total"), 20) + f"{self.memory / GB:>9.2f}")
        rows.append(pad(tr("traffic per step"), 22) + pad(tr("GB sent"), 9, ">") + f"{'ms':>10}")
        for kind in ("dp", "tp", "pp"):
            sent, secs = getattr(self, f"{kind}_bytes"), getattr(self, f"{kind}_seconds")
            rows.append(f"  {kind:<20}{sent / GB:>9.3f}{secs * 1e3:>10.2f}")
        return "\n".join(rows)


def _degrees(devices: int, dp: int | None, tp: int, pp: int) -> int:
    for value, name in ((devices, "devices"), (tp, "tp"), (pp, "pp")):
        _positive_int(value, name)
    if dp is None:
        if devices % (tp * pp):
            raise ValueError(
                tr(
                    "devices={devices} is not a multiple of tp·pp = {tp}·{pp}: choose tp, pp that divide it",
                    devices=devices,
                    tp=tp,
                    pp=pp,
                )
            )
        return devices // (tp * pp)
    _positive_int(dp, "dp")
    if dp * tp * pp != devices:
        raise ValueError(
            tr(
                "devices={devices} but dp·tp·pp = {dp}·{tp}·{pp} = {n}: every device holds one (dp, tp, pp) slot, so "
                "set dp = devices / (tp·pp) or devices = {n}",
                devices=devices,
                dp=dp,
                tp=tp,
                pp=pp,
                n=dp * tp * pp,
            )
        )
    return dp


def _ring_allgather_time(nbytes: float, p: int, link: cost.Link) -> float:
    """(p−1)α + (p−1)/p·nβ: the all-gather half of a ring all-reduce (nothing is reduced)."""
    return (p - 1) * link.alpha + (p - 1) / p * nbytes * link.beta


def estimate(
    model: Transformer | float,
    devices: int,
    dp: int | None = None,
    tp: int = 1,
    pp: int = 1,
    zero: int = 0,
    precision: str = "mixed",
    recompute: bool = False,
    micro_batch: int = 1,
    micro_batches: int = 1,
    sequence_parallel: bool = False,
    link: str | cost.Link = "InfiniBand HDR",
    tp_link: str | cost.Link = "NVLink 4 (H100)",
) -> Estimate:
    """Memory per device and traffic per device per step of dp × tp × pp parallel training (see module docstring).

    ``model`` is a `Transformer` or only a parameter count (then activations and the tp/pp traffic, which need the
    layer shape, are 0). ``dp=None`` means devices / (tp·pp). A step is ``micro_batches`` micro-batches of
    ``micro_batch`` sequences on each data-parallel replica. Tensor parallelism runs on ``tp_link`` (inside a
    server, as Megatron places it), data and pipeline parallelism on ``link`` (between servers).
    """
    dp = _degrees(devices, dp, tp, pp)
    _positive_int(micro_batch, "micro_batch")
    _positive_int(micro_batches, "micro_batches")
    link, tp_link = (cost.preset(x) if isinstance(x, str) else x for x in (link, tp_link))
    shape = model if isinstance(model, Transformer) else None
    params = float(shape.params if shape else model)
    if shape and tp > shape.heads or shape and shape.heads % tp:
        raise ValueError(
            tr("tp={tp} must divide heads={heads}: each rank computes whole attention heads", tp=tp, heads=shape.heads)
        )
    if shape and pp > shape.layers:
        raise ValueError(
            tr("pp={pp} is more stages than the {layers} layers: use pp <= {layers}", pp=pp, layers=shape.layers)
        )
    weights, grads, optimizer = model_states(params, dp, zero, precision, mp=tp * pp)
    value = PRECISIONS[precision][1]  # bytes per gradient and per activation value: 2 mixed, 4 fp32
    # Data parallelism: a ring all-reduce of this rank's gradients sends 2(p−1)/p of them; ZeRO-1/2 replace it by a
    # reduce-scatter of gradients and an all-gather of updated weights (the same bytes); ZeRO-3 gathers the weights
    # in the forward and again in the backward pass: 3(p−1)/p, the paper's 1.5×.
    n_grad = value * params / (tp * pp)
    rounds = 3 if zero == 3 else 2
    dp_bytes = rounds * (dp - 1) / dp * n_grad
    dp_seconds = 0.0
    if dp > 1:
        dp_seconds = cost.allreduce_time("ring", n_grad, dp, link)
        dp_seconds += _ring_allgather_time(n_grad, dp, link) if zero == 3 else 0.0
    activations = tp_bytes = tp_seconds = pp_bytes = pp_seconds = 0.0
    if shape:
        layers_here = shape.layers / pp  # even split (assumption above)
        in_flight = min(pp, micro_batches)  # 1F1B: the first stage holds this many micro-batches at once
        scale = value / 2  # Korthikanti et al. count 16-bit activations; fp32 doubles them (masks too, roughly)
        per_layer = activations_per_layer(shape, micro_batch, tp, recompute, sequence_parallel)
        activations = scale * per_layer * layers_here * in_flight
        n_act = value * shape.seq * micro_batch * shape.hidden  # one s × b × h activation tensor
        if tp > 1:
            # Megatron: 2 all-reduces in the forward and 2 in the backward of each layer; recompute repeats the forward
            count = (6 if recompute else 4) * layers_here * micro_batches
            tp_bytes = count * 2 * (tp - 1) / tp * n_act
            tp_seconds = count * cost.allreduce_time("ring", n_act, tp, tp_link)
        if pp > 1:
            # each micro-batch: activations forward, their gradients backward; a middle stage sends both
            sends = (1 if pp == 2 else 2) * micro_batches
            pp_bytes = sends * n_act
            pp_seconds = sends * link.message_time(n_act)
    return Estimate(
        params, weights, grads, optimizer, activations, dp_bytes, tp_bytes, pp_bytes, dp_seconds, tp_seconds, pp_seconds
    )


def plot_zero_scaling(params: float, devices=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), device_gb: float = 80.0):
    """Model-state memory per device against data-parallel devices for ZeRO stages 0–3 (log-log).

    Returns (figure, {stage: [bytes per device, …]}).
    """
    from matplotlib.figure import Figure  # no pyplot: figures are not kept alive by a global registry

    curves = {z: [sum(model_states(params, n, z)) for n in devices] for z in range(4)}
    fig = Figure(figsize=(6.5, 3.4), dpi=80)
    ax = fig.subplots()
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.15, top=0.88)
    names = (
        plot_tr("plain data parallel"),
        plot_tr("ZeRO-1 (optimizer)"),
        plot_tr("ZeRO-2 (+ gradients)"),
        plot_tr("ZeRO-3 / FSDP (+ weights)"),
    )
    for z, name in enumerate(names):
        ax.plot(devices, [b / GB for b in curves[z]], "o-", markersize=3, label=name)
    ax.axhline(device_gb, color="0.4", linestyle=":", label=plot_tr("one {gb:g} GB device", gb=device_gb))
    ax.set(xscale="log", yscale="log", xlabel=plot_tr("data-parallel devices"))
    ax.set_ylabel(plot_tr("model states per device (GB)"))
    ax.set_title(plot_tr("{b:g} B parameters, mixed-precision Adam (K = 12)", b=params / 1e9))
    ax.legend(fontsize=7)
    return fig, curves


def plot_estimate(est: Estimate, device_gb: float = 80.0):
    """Bars of memory per device by part, against a device's memory. Returns (figure, est)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 2.8), dpi=80)
    ax = fig.subplots()
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.17, top=0.88)
    parts = {"weights": plot_tr("weights"), "grads": plot_tr("grads"), "optimizer": plot_tr("optimizer")}
    parts |= {"activations": plot_tr("activations")}
    ax.bar(
        list(parts.values()), [getattr(est, p) / GB for p in parts], color=["#4c72b0", "#dd8452", "#55a868", "#c44e52"]
    )
    ax.axhline(device_gb, color="0.4", linestyle=":", label=plot_tr("one {gb:g} GB device", gb=device_gb))
    ax.set(title=plot_tr("Memory per device: {gb:.1f} GB in all", gb=est.memory / GB), ylabel=plot_tr("GB per device"))
    ax.set_xlabel(plot_tr("part"))
    ax.legend(fontsize=7)
    return fig, est
