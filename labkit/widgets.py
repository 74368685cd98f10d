"""Widgets: thin ipywidgets wiring over pure functions that compute and draw (those are what the tests check).

Every widget here is an `Explorer`: a row of controls, an output area, and ``.result``, the value the pure
function returned for the current controls. Tests (and the browser suite) set ``controls[name].value`` and
check ``result`` and the figure; the printed line is a marker a browser test can wait for.
"""

from __future__ import annotations

from typing import Any, Callable


from labkit import cost

# Model sizes a student recognises, in parameters (published counts).
MODELS = {
    "the article's MLP (89,610)": 89_610,  # 784·100+100 + 100·100+100 + 100·10+10
    "ResNet-50 (25.6 M)": 25_557_032,  # He et al. 2016, as torchvision and Keras count it
    "BERT-large (340 M)": 340_000_000,  # Devlin et al. 2019
    "GPT-2 XL (1.5 B)": 1_558_000_000,  # Radford et al. 2019
}
WELCOME_ALGORITHMS = ("ps", "tree", "ring")


def welcome_numbers(p: int, params: int, link_name: str = "10 GbE", bytes_per_param: int = 4) -> dict:
    """Per algorithm: bytes the busiest rank sends and modelled seconds for one all-reduce of the gradients."""
    link = cost.preset(link_name)
    nbytes = params * bytes_per_param
    return {
        alg: (cost.bytes_sent_per_rank(alg, nbytes, p), cost.allreduce_time(alg, nbytes, p, link))
        for alg in WELCOME_ALGORITHMS
    }


def _si(x: float, unit: str) -> str:
    """x with an SI prefix: 1.08 MB, 550 µs."""
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"), (1e-6, "µ")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}"
    return f"{x / 1e-9:.3g} n{unit}"


def plot_welcome(p: int, params: int, link_name: str = "10 GbE"):
    """Two bar charts: bytes the busiest rank sends, and modelled time, per all-reduce algorithm."""
    from matplotlib.figure import Figure

    numbers = welcome_numbers(p, params, link_name)
    fig = Figure(figsize=(8, 3.2))
    ax_bytes, ax_time = fig.subplots(1, 2)
    names = list(numbers)
    colors = ["#c44e52", "#8172b2", "#4c72b0"]
    ax_bytes.bar(names, [numbers[a][0] / 1e6 for a in names], color=colors)
    ax_bytes.set(title=f"Bytes the busiest rank sends (p = {p})", ylabel="MB sent", xlabel="algorithm")
    ax_time.bar(names, [numbers[a][1] * 1e3 for a in names], color=colors)
    ax_time.set(title=f"Modelled all-reduce time on {link_name}", ylabel="time (ms)", xlabel="algorithm")
    fig.tight_layout()
    return fig, numbers


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
        self.widget = w.VBox([w.HBox(list(controls.values())), self.output])
        self.update()

    def values(self) -> dict[str, Any]:
        return {name: control.value for name, control in self.controls.items()}

    def update(self) -> None:
        """Recompute, print the marker line and show the figure for the current control values."""
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
        parts = [f"{alg} {_si(b, 'B')} in {_si(t, 's')}" for alg, (b, t) in numbers.items()]
        return f"p={values['p']}, {values['params']:,} parameters: " + "; ".join(parts)

    return Explorer(controls, plot_welcome, describe)


def as_table(numbers: dict) -> str:
    """The numbers of `welcome_numbers` as a small fixed-width table (bytes in MB, time in ms)."""
    lines = [f"{'algorithm':<10}{'MB sent':>10}{'time (ms)':>12}"]
    for alg, (b, t) in numbers.items():
        lines.append(f"{alg:<10}{b / 1e6:>10.3f}{t * 1e3:>12.3f}")
    return "\n".join(lines)


__all__ = ["Explorer", "MODELS", "as_table", "bytes_per_worker", "plot_welcome", "welcome_numbers"]
