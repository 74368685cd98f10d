"""Widgets: thin ipywidgets wiring over the pure functions of `labkit.plots` (those are what the tests check).

Every widget here is an `Explorer`: a row of controls, an output area, and ``.result``, the value the pure
function returned for the current controls. Tests (and the browser suite) set ``controls[name].value`` and
check ``result`` and ``figure``; the printed first line is a marker a browser test can wait for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from labkit import cost
from labkit.viz import plots
from labkit.viz.plots import welcome_numbers  # noqa: F401  (the welcome chapter's numbers, re-exported)

# Model sizes a student recognises, in parameters (published counts).
MODELS = {
    "the article's MLP (89,610)": 89_610,  # 784·100+100 + 100·100+100 + 100·10+10
    "ResNet-50 (25.6 M)": 25_557_032,  # He et al. 2016, as torchvision counts it (Keras: 25,636,712)
    "BERT-large (340 M)": 340_000_000,  # Devlin et al. 2019
    "GPT-2 XL (1.5 B)": 1_558_000_000,  # Radford et al. 2019
}


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
        "p": w.IntSlider(value=4, min=2, max=64, description="workers p"),
        "params": w.Dropdown(options=MODELS, value=89_610, description="model"),
        "link_name": w.Dropdown(options=list(cost.presets()), value="10 GbE", description="link"),
    }

    def describe(values: dict, numbers: dict) -> str:
        parts = [f"{alg} {plots.si(b, 'B')} in {plots.si(t, 's')}" for alg, (b, t) in numbers.items()]
        return f"p={values['p']}, {values['params']:,} parameters: " + "; ".join(parts)

    return Explorer(controls, plots.plot_welcome, describe)


def as_table(numbers: dict) -> str:
    """The numbers of `welcome_numbers` as a small fixed-width table (bytes in MB, time in ms)."""
    lines = [f"{'algorithm':<10}{'MB sent':>10}{'time (ms)':>12}"]
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
            options=cost.ALGORITHMS, value=("ps", "ring", "tree"), rows=5, description="algorithms"
        ),
        "p": w.IntSlider(value=p, min=2, max=1024, description="ranks p"),
        "nbytes": w.FloatLogSlider(
            value=nbytes, base=10, min=0, max=10, step=0.1, description="bytes", readout_format=".2e"
        ),
        "preset": w.Dropdown(options=[*cost.presets(), CUSTOM], value=link, description="link"),
        "alpha_us": w.FloatLogSlider(value=5.0, base=10, min=-1, max=3, step=0.1, description="α (µs)"),
        "GBps": w.FloatLogSlider(value=10.0, base=10, min=-1, max=3, step=0.1, description="GB/s"),
    }

    def draw(algorithms, p, nbytes, preset, alpha_us, GBps):
        return plots.plot_cost(tuple(algorithms), nbytes, p, _link(preset, alpha_us, GBps))

    def describe(values: dict, result: dict) -> str:
        head = f"p={values['p']}, n={plots.si(values['nbytes'], 'B')}, link={values['preset']}"
        rows = plots.format_cost_table(result["table"])
        cross = "; ".join(f"{a} = {b} at {plots.si(n, 'B')}" for a, b, n in result["crossovers"]) or "none"
        return f"{head}\n{rows}\ncrossovers: {cross}"

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
            description="algorithm",
        ),
        "p": w.IntSlider(value=p, min=2, max=st.MAX_RANKS, description="ranks p"),
        "k": w.IntSlider(value=1, min=1, max=len(steps_of(algorithm, p)), description="step"),
    }

    def draw(algorithm, p, k):
        steps = steps_of(algorithm, p)
        return st.plot_step(steps, min(k, len(steps)), algorithm)

    def describe(values: dict, step) -> str:
        total = len(steps_of(values["algorithm"], values["p"]))
        return st.describe(step, min(values["k"], total), total)

    explorer = Explorer(controls, draw, describe)
    play = w.Play(value=1, min=1, max=controls["k"].max, interval=900, description="play")
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

    models = {**MODELS, "7.5 B (ZeRO paper; parameters only)": 7.5e9}
    controls = {
        "model": w.Dropdown(options=models, value=MODELS["GPT-3 (175 B)"], description="model"),
        "devices": w.IntText(value=1024, description="devices"),
        "dp": w.IntText(value=16, description="dp"),
        "tp": w.IntText(value=8, description="tp"),
        "pp": w.IntText(value=8, description="pp"),
        "zero": w.Dropdown(options=[0, 1, 2, 3], value=1, description="ZeRO stage"),
        "precision": w.Dropdown(options=list(PRECISIONS), value="mixed", description="precision"),
        "recompute": w.Checkbox(value=True, description="recompute"),
        "micro_batch": w.IntText(value=1, description="micro-batch"),
        "micro_batches": w.IntText(value=16, description="micro-batches"),
        "link": w.Dropdown(options=list(cost.presets()), value="InfiniBand HDR", description="dp/pp link"),
        "tp_link": w.Dropdown(options=list(cost.presets()), value="NVLink 4 (H100)", description="tp link"),
    }

    def draw(**values):
        try:
            return plot_estimate(estimate(**values))
        except ValueError as e:  # a bad combination is shown, not raised: the student fixes it with the controls
            fig, _ = plot_estimate(Estimate(*[0.0] * 11))
            fig.axes[0].set_title("No estimate: fix the setup named above")
            return fig, str(e)

    def describe(values: dict, result) -> str:
        if isinstance(result, str):
            return f"cannot estimate: {result}"
        head = f"{result.params / 1e9:.3g} B parameters on {values['devices']} devices: {result.memory / GB:.2f} GB"
        return f"{head} per device, {result.traffic / GB:,.1f} GB sent per step\n{result.table()}"

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
        "sparsity": w.FloatSlider(value=sparsity, min=0.0, max=0.99, step=0.01, description="sparsity"),
        "bits": w.IntSlider(value=bits, min=1, max=CODEBOOK_MAX_BITS, description="bits/weight"),
        "p": w.Dropdown(options=[2, 4, 8, 16, 64], value=p, description="workers p"),
    }

    def draw(sparsity, bits, p):
        if (bits, p) not in sweeps:
            sweeps[(bits, p)] = curve(model, x_test, y_test, bits, p=p, gradient=gradient)
        return plot_tradeoff(
            sweeps[(bits, p)], tradeoff(model, x_test, y_test, sparsity, bits, p=p, gradient=gradient), refs
        )

    return Explorer(controls, draw, lambda values, point: point.line() + "  (no fine-tuning)")


def pipeline_explorer(models: dict, link: str = "free (α = β = 0)") -> Explorer:
    """Chapter 6: model, stages, micro-batches, batch size and link → the Gantt chart of a real sim run's schedule
    (`labkit.viz.gantt` draws it)."""
    import ipywidgets as w

    from labkit.viz.gantt import FREE_LINK, draw_pipeline

    controls = {
        "model": w.Dropdown(options=list(models), description="model"),
        "p": w.IntSlider(value=4, min=1, max=8, description="stages p"),
        "micro_batches": w.IntSlider(value=4, min=1, max=32, description="micro-batches"),
        "batch": w.Dropdown(options=[8, 32, 128, 512, 1024], value=128, description="batch"),
        "link_name": w.Dropdown(options=[FREE_LINK, *cost.presets()], value=link, description="link"),
    }

    def draw(model, p, micro_batches, batch, link_name):
        return draw_pipeline(models[model], p, micro_batches, batch, link_name)

    def describe(values: dict, result: dict) -> str:
        return (
            f"{result['p']} stages, {result['micro_batches']} micro-batches: modelled {result['time'] * 1e3:.4g} ms"
            f" (closed form {result['predicted'] * 1e3:.4g} ms); bubble {result['bubble']:.1%}, GPipe's"
            f" (S−1)/(M+S−1) = {result['formula']:.1%}"
        )

    return Explorer(controls, draw, describe)
