"""Widgets: thin ipywidgets wiring over the pure functions of `labkit.plots` (those are what the tests check).

Every widget here is an `Explorer`: a row of controls, an output area, and ``.result``, the value the pure
function returned for the current controls. Tests (and the browser suite) set ``controls[name].value`` and
check ``result`` and ``figure``; the printed first line is a marker a browser test can wait for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from labkit import cost
from labkit.i18n import pad, plot_tr, tr
from labkit.viz import plots
from labkit.viz.plots import welcome_numbers  # noqa: F401  (the welcome chapter's numbers, re-exported)

# Model sizes a student recognises, in parameters (published counts).
MODELS = {
    "the article's MLP (89,610)": 89_610,  # 784·100+100 + 100·100+100 + 100·10+10
    "ResNet-50 (25.6 M)": 25_557_032,  # He et al. 2016, as torchvision counts it (Keras: 25,636,712)
    "BERT-large (340 M)": 340_000_000,  # Devlin et al. 2019
    "GPT-2 XL (1.5 B)": 1_558_000_000,  # Radford et al. 2019
}


def model_options() -> dict[str, int]:
    """`MODELS` with labels in the current language (the values, parameter counts, are the same)."""
    return {tr("the article's MLP (89,610)"): 89_610, **{k: v for k, v in MODELS.items() if v != 89_610}}


class Explorer:
    """Controls wired to ``draw(**values) -> (figure, result)``; redrawn on every change."""

    def __init__(self, controls: dict[str, Any], draw: Callable[..., tuple[Any, Any]], describe: Callable[..., str]):
        import ipywidgets as w

        self.controls, self._draw, self._describe = controls, draw, describe
        self.output = w.Output()
        self.figure: Any = None
        self.result: Any = None
        self.text = ""
        for control in controls.values():
            control.observe(lambda _change: self.update(), names="value")
        self.widget = w.VBox([w.HBox(list(controls.values()), layout=w.Layout(flex_flow="row wrap")), self.output])
        self.widget.add_class("labkit-explorer")  # a stable hook for tests/browser to find the live widget by
        self.update()

    def values(self) -> dict[str, Any]:
        return {name: control.value for name, control in self.controls.items()}

    def update(self) -> None:
        """Recompute, print the marker text and show the figure for the current control values."""
        from IPython.display import display

        values = self.values()
        self.figure, self.result = self._draw(**values)
        self.text = self._describe(values, self.result)
        self.output.clear_output(wait=True)
        with self.output:
            print(self.text)
            display(self.figure)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def bytes_per_worker() -> Explorer:
    """The welcome widget: workers, model and link → bytes sent and time of one gradient all-reduce."""
    import ipywidgets as w

    controls = {
        "p": w.IntSlider(value=4, min=2, max=64, description=tr("workers p")),
        "params": w.Dropdown(options=model_options(), value=89_610, description=tr("model")),
        "link_name": w.Dropdown(options=list(cost.presets()), value="10 GbE", description=tr("link")),
    }

    def describe(values: dict, numbers: dict) -> str:
        parts = [
            tr("{alg} {b} in {t}", alg=alg, b=plots.si(b, "B"), t=plots.si(t, "s")) for alg, (b, t) in numbers.items()
        ]
        return tr("p={p}, {params:,} parameters: ", p=values["p"], params=values["params"]) + "; ".join(parts)

    return Explorer(controls, plots.plot_welcome, describe)


def as_table(numbers: dict) -> str:
    """The numbers of `welcome_numbers` as a small fixed-width table (bytes in MB, time in ms)."""
    lines = [pad(tr("algorithm"), 10) + pad(tr("MB sent"), 10, ">") + pad(tr("time (ms)"), 12, ">")]
    for alg, (b, t) in numbers.items():
        lines.append(f"{alg:<10}{b / 1e6:>10.3f}{t * 1e3:>12.3f}")
    return "\n".join(lines)


CUSTOM = "custom (α, bandwidth below)"


def _link(preset: str, alpha_us: float, GBps: float) -> cost.Link:
    return cost.Link.from_bandwidth(alpha_us * 1e-6, GBps) if preset == CUSTOM else cost.preset(preset)


def cost_explorer(nbytes: float = 1e6, p: int = 8, link: str = "10 GbE") -> Explorer:
    """Algorithms, p, message size and link → modelled time and bus-bandwidth curves with crossovers and a table."""
    import ipywidgets as w

    controls = {
        "algorithms": w.SelectMultiple(
            options=cost.ALGORITHMS, value=("ps", "ring", "tree"), rows=5, description=tr("algorithms")
        ),
        "p": w.IntSlider(value=p, min=2, max=1024, description=tr("ranks p")),
        "nbytes": w.FloatLogSlider(
            value=nbytes, base=10, min=0, max=10, step=0.1, description=tr("bytes"), readout_format=".2e"
        ),
        "preset": w.Dropdown(
            options=[*((name, name) for name in cost.presets()), (tr("custom (α, bandwidth below)"), CUSTOM)],
            value=link,
            description=tr("link"),
        ),
        "alpha_us": w.FloatLogSlider(value=5.0, base=10, min=-1, max=3, step=0.1, description="α (µs)"),
        "GBps": w.FloatLogSlider(value=10.0, base=10, min=-1, max=3, step=0.1, description="GB/s"),
    }

    def draw(algorithms, p, nbytes, preset, alpha_us, GBps):
        return plots.plot_cost(tuple(algorithms), nbytes, p, _link(preset, alpha_us, GBps))

    def describe(values: dict, result: dict) -> str:
        head = tr("p={p}, n={n}, link={link}", p=values["p"], n=plots.si(values["nbytes"], "B"), link=values["preset"])
        rows = plots.format_cost_table(result["table"])
        crossings = [tr("{a} = {b} at {n}", a=a, b=b, n=plots.si(n, "B")) for a, b, n in result["crossovers"]]
        return head + "\n" + rows + "\n" + tr("crossovers: {list}", list="; ".join(crossings) or tr("none"))

    return Explorer(controls, draw, describe)


def step_through(algorithm: str = "ring", p: int = 4) -> Explorer:
    """A real sim trace of an all-reduce, one step at a time: a step slider and a play button."""
    import functools

    import ipywidgets as w

    from labkit.viz import steps as st

    steps_of = functools.lru_cache(maxsize=64)(st.trace_steps)
    controls = {
        "algorithm": w.Dropdown(
            options=["ring", "tree", "ps", "halving_doubling", "recursive_doubling"],
            value=algorithm,
            description=tr("algorithm"),
        ),
        "p": w.IntSlider(value=p, min=2, max=st.MAX_RANKS, description=tr("ranks p")),
        "k": w.IntSlider(value=1, min=1, max=len(steps_of(algorithm, p)), description=tr("step")),
    }

    def draw(algorithm, p, k):
        steps = steps_of(algorithm, p)
        return st.plot_step(steps, min(k, len(steps)), algorithm)

    def describe(values: dict, step) -> str:
        total = len(steps_of(values["algorithm"], values["p"]))
        return st.describe(step, min(values["k"], total), total)

    explorer = Explorer(controls, draw, describe)
    play = w.Play(value=1, min=1, max=controls["k"].max, interval=900, description=tr("play"))
    w.jslink((play, "value"), (controls["k"], "value"))

    def new_run(_change) -> None:
        total = len(steps_of(controls["algorithm"].value, controls["p"].value))
        controls["k"].max = play.max = total
        explorer.update()

    controls["algorithm"].observe(new_run, names="value")
    controls["p"].observe(new_run, names="value")
    explorer.widget.children = (
        w.HBox([play, *controls.values()], layout=w.Layout(flex_flow="row wrap")),
        explorer.output,
    )
    return explorer


def memory_calculator():
    """Chapter 9: model, devices, dp/tp/pp, ZeRO stage, precision, recompute, link → memory and traffic per device
    (`labkit.parallel.memory` computes and draws; this only wires the controls)."""
    import ipywidgets as w

    from labkit.parallel.memory import GB, MODELS, PRECISIONS, Estimate, estimate, plot_estimate

    models = {**MODELS, tr("7.5 B (ZeRO paper; parameters only)"): 7.5e9}
    controls = {
        "model": w.Dropdown(options=models, value=MODELS["GPT-3 (175 B)"], description=tr("model")),
        "devices": w.IntText(value=1024, description=tr("devices")),
        "dp": w.IntText(value=16, description="dp"),
        "tp": w.IntText(value=8, description="tp"),
        "pp": w.IntText(value=8, description="pp"),
        "zero": w.Dropdown(options=[0, 1, 2, 3], value=1, description=tr("ZeRO stage")),
        "precision": w.Dropdown(options=list(PRECISIONS), value="mixed", description=tr("precision")),
        "recompute": w.Checkbox(value=True, description=tr("recompute")),
        "micro_batch": w.IntText(value=1, description=tr("micro-batch")),
        "micro_batches": w.IntText(value=16, description=tr("micro-batches")),
        "link": w.Dropdown(options=list(cost.presets()), value="InfiniBand HDR", description=tr("dp/pp link")),
        "tp_link": w.Dropdown(options=list(cost.presets()), value="NVLink 4 (H100)", description=tr("tp link")),
    }

    def draw(**values):
        try:
            return plot_estimate(estimate(**values))
        except ValueError as e:  # a bad combination is shown, not raised: the student fixes it with the controls
            fig, _ = plot_estimate(Estimate(*[0.0] * 11))
            fig.axes[0].set_title(plot_tr("No estimate: fix the setup named above"))
            return fig, str(e)

    def describe(values: dict, result) -> str:
        if isinstance(result, str):
            return tr("cannot estimate: {reason}", reason=result)
        return (
            tr(
                "{params:.3g} B parameters on {devices} devices: {memory:.2f} GB per device, "
                "{traffic:,.1f} GB sent per step",
                params=result.params / 1e9,
                devices=values["devices"],
                memory=result.memory / GB,
                traffic=result.traffic / GB,
            )
            + "\n"
            + result.table()
        )

    for control in controls.values():  # room for the longest label, "micro-batches"
        control.style.description_width = "initial" if isinstance(control, w.Checkbox) else "90px"
    return Explorer(controls, draw, describe)


def compression_explorer(
    model, x_test, y_test, sparsity: float = 0.9, bits: int = 4, p: int = 4, gradient: str = "topk"
):
    """Chapter 7: sliders (sparsity, bits) and a workers dropdown → bytes against accuracy of the decoded model, and
    bytes on the wire (`labkit.compress.explorer` computes; this only wires the controls)."""
    import ipywidgets as w

    from labkit.compress.explorer import CODEBOOK_MAX_BITS, Point, curve, plot_tradeoff, references, tradeoff

    refs = references(model, x_test, y_test)
    sweeps: dict[tuple[int, int], list[Point]] = {}  # (bits, p) → the line drawn behind the current point
    controls = {
        "sparsity": w.FloatSlider(value=sparsity, min=0.0, max=0.99, step=0.01, description=tr("sparsity")),
        "bits": w.IntSlider(value=bits, min=1, max=CODEBOOK_MAX_BITS, description=tr("bits/weight")),
        "p": w.Dropdown(options=[2, 4, 8, 16, 64], value=p, description=tr("workers p")),
    }

    def draw(sparsity, bits, p):
        if (bits, p) not in sweeps:
            sweeps[(bits, p)] = curve(model, x_test, y_test, bits, p=p, gradient=gradient)
        return plot_tradeoff(
            sweeps[(bits, p)], tradeoff(model, x_test, y_test, sparsity, bits, p=p, gradient=gradient), refs
        )

    return Explorer(controls, draw, lambda values, point: point.line() + tr("  (no fine-tuning)"))


def pipeline_explorer(models: dict, link: str = "free (α = β = 0)") -> Explorer:
    """Chapter 6: model, stages, micro-batches, batch size and link → the Gantt chart of a real sim run's schedule
    (`labkit.viz.gantt` draws it)."""
    import ipywidgets as w

    from labkit.viz.gantt import FREE_LINK, draw_pipeline

    controls = {
        "model": w.Dropdown(options=list(models), description=tr("model")),
        "p": w.IntSlider(value=4, min=1, max=8, description=tr("stages p")),
        "micro_batches": w.IntSlider(value=4, min=1, max=32, description=tr("micro-batches")),
        "batch": w.Dropdown(options=[8, 32, 128, 512, 1024], value=128, description=tr("batch")),
        "link_name": w.Dropdown(
            options=[(tr("free (α = β = 0)"), FREE_LINK), *((name, name) for name in cost.presets())],
            value=link,
            description=tr("link"),
        ),
    }

    def draw(model, p, micro_batches, batch, link_name):
        return draw_pipeline(models[model], p, micro_batches, batch, link_name)

    def describe(values: dict, result: dict) -> str:
        return tr(
            "{p} stages, {m} micro-batches: modelled {time:.4g} ms (closed form {predicted:.4g} ms); "
            "bubble {bubble:.1%}, GPipe's (S−1)/(M+S−1) = {formula:.1%}",
            p=result["p"],
            m=result["micro_batches"],
            time=result["time"] * 1e3,
            predicted=result["predicted"] * 1e3,
            bubble=result["bubble"],
            formula=result["formula"],
        )

    return Explorer(controls, draw, describe)
