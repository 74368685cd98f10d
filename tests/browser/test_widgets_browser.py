"""Every widget of the chapters, driven in a real JupyterLab in headless Chromium.

Per notebook: a fresh server, Run → "Run All Cells", wait for the status bar's "Python 3 (ipykernel) | Idle"; then per
control move (slider by keyboard and by mouse, dropdown, checkbox, text box): screenshot, move, wait for the exact
text the pure function gives for the new values, screenshot again, assert the pictures differ. The expected text
comes from a mirror: the same labkit widget built here, headless, whose controls are set to the same values.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")  # the mirror widgets draw here too, off-screen

ROOT = Path(__file__).resolve().parent.parent.parent

STATUS_IDLE = "Python 3 (ipykernel) | Idle"
RUN_SECONDS = 300  # generous: the chapters take up to ~2 minutes here, and more when the machine is shared
MARKER_SECONDS = 180  # the compression explorer sweeps 7 settings when the bits change


@dataclass(frozen=True)
class Move:
    """One control move: ``how`` is key:<Key>, mouse:<fraction of the track>, select:<label>, pick:<a>,<b>,
    check, or type:<text>."""

    control: str  # the key of the control in the Explorer's ``controls``
    how: str


class Mirror:
    """Stand-in for an Explorer whose output needs the notebook's own trained model: text comes from ``text_of``."""

    def __init__(self, controls: dict, text_of):
        self.controls, self.text_of = controls, text_of

    def values(self) -> dict:
        return {name: c.value for name, c in self.controls.items()}

    @property
    def text(self) -> str:
        return self.text_of(self.values())


def welcome(lab):
    from labkit.viz import widgets

    return widgets.bytes_per_worker()


def step_through(lab):
    from labkit.viz import widgets

    return widgets.step_through("ring", 4)


def cost_explorer(lab):
    from labkit.viz import widgets

    return widgets.cost_explorer(p=8, nbytes=1e6, link="10 GbE")


def pipeline(lab):
    from labkit.parallel import pipeline as pl

    # only the first model is selected below; it is built from its shape alone, as the notebook builds it
    deep = pl.uniform_mlp(depth=8, width=256)
    from labkit.viz import widgets

    return widgets.pipeline_explorer({"8 equal layers, 256 wide": deep, "the article's MLP (trained)": []})


def memory_calculator(lab):
    from labkit.viz import widgets

    return widgets.memory_calculator()


def compression(lab):
    """The trained model lives only in the notebook's kernel: the expected line is computed there, by `tradeoff`."""
    import ipywidgets as w

    controls = {  # the controls of labkit.widgets.compression_explorer(..., sparsity=0.9, bits=4)
        "sparsity": w.FloatSlider(value=0.9, min=0.0, max=0.99, step=0.01, description="sparsity"),
        "bits": w.IntSlider(value=4, min=1, max=8, description="bits/weight"),
        "p": w.Dropdown(options=[2, 4, 8, 16, 64], value=4, description="workers p"),
    }

    def text_of(values: dict) -> str:
        code = (
            "_live = [v for v in Out.values() if type(v).__name__ == 'Explorer'][-1].values()\n"
            "print(repr(_live))\n"
            "print(explorer.tradeoff(model, x_test, y_test, _live['sparsity'], _live['bits'], p=_live['p']).line())"
        )
        live, line = run_in_kernel(lab, code).split("\n", 1)
        live = eval(live, {})  # a dict of numbers the kernel printed
        assert live["bits"] == values["bits"] and live["p"] == values["p"], (live, values)
        assert live["sparsity"] == pytest.approx(values["sparsity"]), (live, values)
        return line.rstrip("\n") + "  (no fine-tuning)"

    return Mirror(controls, text_of)


def sync(mirror, lab) -> None:
    """Give the mirror's controls the settings the live widget holds in the notebook's kernel after Run All.

    Dropdowns travel by label (their values may be objects, e.g. a Transformer), the others by value."""
    code = (
        "import json as _json\n"
        "_live = [v for v in Out.values() if type(v).__name__ == 'Explorer'][-1].controls\n"
        "print(_json.dumps({n: ('label', c.label) if hasattr(c, 'label') else ('value', c.value)"
        " for n, c in _live.items()}))"
    )
    for name, (attr, setting) in json.loads(run_in_kernel(lab, code)).items():
        setting = tuple(setting) if isinstance(setting, list) else setting  # a multiple selection is a tuple
        if getattr(mirror.controls[name], attr) != setting:
            setattr(mirror.controls[name], attr, setting)


def run_in_kernel(lab, code: str) -> str:
    """Run ``code`` in the notebook's kernel (a second client on its connection file); its printed text."""
    from jupyter_client import BlockingKernelClient

    (connection,) = lab.kernel_files()
    client = BlockingKernelClient()
    client.load_connection_file(str(connection))
    client.start_channels()
    out: list[str] = []
    try:
        client.wait_for_ready(timeout=30)

        def hook(msg):
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))

        reply = client.execute_interactive(code, store_history=False, output_hook=hook, timeout=MARKER_SECONDS)
        assert reply["content"]["status"] == "ok", "".join(out)
    finally:
        client.stop_channels()
    return "".join(out)


# Per chapter: the mirror, and the moves as "control how" separated by " | " (control = key in ``controls``).
CHAPTERS = {
    "00_welcome.ipynb": (
        welcome,
        "p key:ArrowRight | p key:End | p mouse:0.3 | params select:ResNet-50 (25.6 M)"
        " | link_name select:NVLink 4 (H100)",
    ),
    "02_core_concepts.ipynb": (
        step_through,
        "k key:ArrowRight | k key:End | k mouse:0.4 | algorithm select:tree | p key:ArrowRight | p mouse:0.9",
    ),
    "03_algorithms_and_cost.ipynb": (
        cost_explorer,
        "p key:ArrowRight | p key:End | p mouse:0.1 | nbytes key:ArrowRight | preset select:InfiniBand HDR"
        " | algorithms pick:ring,halving_doubling",
    ),
    "06_distributed_inference.ipynb": (
        pipeline,
        "p key:ArrowRight | micro_batches key:End | micro_batches mouse:0.25 | batch select:512"
        " | link_name select:10 GbE",
    ),
    "07_model_compression.ipynb": (
        compression,
        "sparsity key:ArrowRight | sparsity mouse:0.5 | p select:16 | bits key:ArrowRight",
    ),
    # the Chinese edition: the same widget, its labels and printed text in Chinese, drawn in a CJK font
    "zh/02_core_concepts.ipynb": (step_through, "k key:ArrowRight | algorithm select:tree | p key:ArrowRight"),
    # the notebook leaves 32 devices, dp 32, tp = pp = 1: dp = 8 then must show the error, not raise it
    "09_future_trends.ipynb": (
        memory_calculator,
        "zero select:3 | recompute check | precision select:fp32 | dp type:8",
    ),
}


def moves_of(plan: str) -> list[Move]:
    return [Move(*item.split(" ", 1)) for item in plan.split(" | ")]


def control_in(explorer, description: str):
    """The DOM box of the control labelled ``description`` (sliders, dropdowns, texts: a label; checkboxes: a span)."""
    label = explorer.page.locator(f'label.widget-label:text-is("{description}"), span:text-is("{description}")')
    return explorer.locator(".widget-inline-hbox").filter(has=label).first


def wait_for_text(box, expected: str, seconds: float = MARKER_SECONDS) -> None:
    """Wait until the widget's printed text is exactly ``expected`` (not just any change) and its figure is back."""
    marker = box.locator('.widget-output [data-mime-type="application/vnd.jupyter.stdout"]').first
    deadline, seen = time.monotonic() + seconds, None
    while time.monotonic() < deadline:
        if marker.count():
            seen = marker.text_content().rstrip("\n")
            # the output was cleared by this print: an image now is the new figure, drawn after the text
            if seen == expected and box.locator(".widget-output img").count():
                return
        time.sleep(0.25)
    pytest.fail(f"the widget shows\n{seen}\ninstead of\n{expected}")


def pixels(png: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(png)).convert("RGB")


def move(page, box, control, move_: Move, mirror_control) -> None:
    """Do ``move_`` in the browser and set the mirror's control to the value the browser should now hold."""
    kind, _, arg = move_.how.partition(":")
    before = mirror_control.value
    if kind == "key":
        control.locator(".noUi-handle").focus()
        page.keyboard.press(arg)
        step = mirror_control.step
        if arg == "End":
            mirror_control.value = mirror_control.max
        elif type(mirror_control).__name__ == "FloatLogSlider":  # the handle moves by step in the exponent
            import math

            mirror_control.value = mirror_control.base ** (math.log(before, mirror_control.base) + step)
        else:
            mirror_control.value = round(before + step, 10)
    elif kind == "mouse":
        track = control.locator(".noUi-base").bounding_box()
        page.mouse.click(track["x"] + float(arg) * track["width"], track["y"] + track["height"] / 2)
        time.sleep(0.3)
        readout = control.locator(".widget-readout").inner_text().strip()
        mirror_control.value = type(before)(float(readout))
        assert mirror_control.value != before, f"a click at {arg} of the track left {move_.control} at {before}"
    elif kind == "select":
        control.locator("select").select_option(label=arg)
        mirror_control.label = arg
    elif kind == "pick":  # a multiple selection: the options named, comma-separated, and no others
        control.locator("select").select_option(label=arg.split(","))
        mirror_control.label = tuple(arg.split(","))
    elif kind == "check":
        control.locator("input[type=checkbox]").click()
        mirror_control.value = not before
    elif kind == "type":
        field = control.locator("input")
        field.fill(arg)
        field.press("Enter")
        mirror_control.value = type(before)(arg)
    else:
        raise ValueError(f"unknown move {move_.how!r}: use key:, mouse:, select:, pick:, check or type:")


def run_all(page) -> None:
    """Run → "Run All Cells", then wait for the status bar's Idle with no cell left queued."""
    status = page.locator("#jp-main-statusbar")
    page.locator(".jp-Notebook").first.wait_for(timeout=120_000)
    deadline = time.monotonic() + 120
    while STATUS_IDLE not in (status.text_content() or ""):
        assert time.monotonic() < deadline, f"the kernel never became idle: {status.text_content()}"
        time.sleep(0.5)
    page.locator("#jp-menu-panel .lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-item").filter(has=page.locator('.lm-Menu-itemLabel:text-is("Run All Cells")')).click()
    prompts = page.locator(".jp-CodeCell .jp-InputPrompt")
    queued = lambda: any("*" in t for t in prompts.all_text_contents())  # noqa: E731
    deadline = time.monotonic() + 30
    while not queued() and STATUS_IDLE in (status.text_content() or ""):
        assert time.monotonic() < deadline, "Run All Cells did not start the execution"
        time.sleep(0.2)
    deadline, quiet = time.monotonic() + RUN_SECONDS, 0
    while quiet < 3:  # the kernel is briefly idle between cells: idle, nothing queued, three polls in a row
        assert time.monotonic() < deadline, f"still running after {RUN_SECONDS} s: {status.text_content()}"
        quiet = quiet + 1 if STATUS_IDLE in (status.text_content() or "") and not queued() else 0
        time.sleep(0.5)
    errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    tracebacks = [t for t in errors.all_text_contents() if "Traceback" in t or "Error" in t.split("\n")[0]]
    assert not tracebacks, f"a cell failed in the browser: {tracebacks[0][:2000]}"


def assert_chinese_renders(page, lab) -> None:
    """Every Chinese label of the widget is drawn by a font that has its glyphs (no tofu boxes): Chromium reports
    the platform fonts it used for each label's text (DevTools' CSS.getPlatformFontsForNode), with glyph counts.
    And the kernel's figures use a CJK font."""
    from labkit import i18n

    labels = page.locator(".labkit-explorer label.widget-label")
    texts = labels.all_text_contents()
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
    nodes = cdp.send("DOM.querySelectorAll", {"nodeId": root, "selector": ".labkit-explorer label.widget-label"})
    assert len(nodes["nodeIds"]) == len(texts) > 0
    chinese = 0
    for node, text in zip(nodes["nodeIds"], texts, strict=True):
        han = len(re.findall(r"[\u4e00-\u9fff]", text))
        if not han:
            continue
        chinese += 1
        fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
        cjk = sum(f["glyphCount"] for f in fonts if "CJK" in f["familyName"] or f["familyName"] in i18n.CJK_FONTS)
        assert cjk >= han, f"label {text!r} drawn with {fonts}: its Chinese characters need a CJK font"
    assert chinese >= 2, f"the widget's labels are not in Chinese: {texts}"
    assert run_in_kernel(lab, "from labkit import i18n; print(i18n.cjk_font())").strip() in i18n.CJK_FONTS


@pytest.mark.parametrize("notebook", sorted(CHAPTERS))
def test_every_widget_responds_in_a_real_browser(notebook, lab, screenshots, browser_times):
    from labkit import i18n

    with i18n.speaking("zh" if notebook.startswith("zh/") else "en"):  # the mirror speaks as the chapter does
        drive(notebook, lab, screenshots, browser_times)


def drive(notebook, lab, screenshots, browser_times) -> None:
    path = ROOT / "notebooks" / notebook
    if not path.exists():
        pytest.fail(f"{path} is missing: the browser suite covers its widget")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    server, page = lab
    factory, plan = CHAPTERS[notebook]
    start = time.monotonic()
    page.goto(server.url(notebook), timeout=120_000)
    run_all(page)
    box = page.locator(".labkit-explorer")
    assert box.count() == 1, f"{notebook}: expected one live labkit widget, found {box.count()}"
    box.scroll_into_view_if_needed()
    quiet = contextlib.redirect_stdout(io.StringIO())  # the headless mirror prints its text and figure
    with quiet:
        mirror = factory(server)
        sync(mirror, server)  # a later cell may have set the controls already (chapter 9's does)
    wait_for_text(box, mirror.text)  # the widget as first drawn
    output = box.locator(".widget-output")
    stem = notebook.replace("/", "-").removesuffix(".ipynb")
    if notebook.startswith("zh/"):
        assert_chinese_renders(page, server)
    box.screenshot(path=screenshots / f"{stem}-0-start.png")
    for i, move_ in enumerate(moves_of(plan), 1):
        control = control_in(box, mirror.controls[move_.control].description)
        assert control.count() == 1, f"{notebook}: no control {mirror.controls[move_.control].description!r}"
        box.scroll_into_view_if_needed()
        before = output.screenshot()
        with contextlib.redirect_stdout(io.StringIO()):
            move(page, box, control, move_, mirror.controls[move_.control])
        wait_for_text(box, mirror.text)
        if stem.startswith("09") and move_.how != "type:8":  # and the memory figure is estimate()'s, independently
            from labkit.parallel import memory

            assert f"{memory.estimate(**mirror.values()).memory / memory.GB:.2f} GB per device" in mirror.text
        after = output.screenshot()
        name = f"{stem}-{i}-{move_.control}-{move_.how.replace(':', '-').replace(' ', '_').replace('/', '_')}.png"
        box.screenshot(path=screenshots / name)
        assert pixels(before).tobytes() != pixels(after).tobytes(), f"{notebook}: {move_} changed no pixel"
    browser_times[stem] = time.monotonic() - start
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"the browser run rewrote {notebook}"
