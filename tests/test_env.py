"""The environment files agree, every declared dependency is installed, and labkit's front door works."""

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import yaml
from packaging.requirements import Requirement

import labkit

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_installs_the_project_through_pip():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    names = {re.split(r"[<>=!~ ]", d)[0] for d in conda}
    assert names == {"python", "pip"}, "conda installs only Python and pip; the rest comes from pyproject.toml"
    assert any(line.split("[")[0] in ("-e .", ".") for line in pip), "environment.yml must pip-install the project"
    # the Python range of environment.yml lies inside pyproject's requires-python
    python = next(d for d in conda if d.startswith("python"))
    assert ">=3.10" in python and pyproject()["project"]["requires-python"] == ">=3.10"


def test_every_runtime_dependency_is_installed_and_satisfied():
    project = pyproject()["project"]
    reqs = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    names = {r.name for r in reqs}
    assert {"tensorflow", "jupyterlab", "ipywidgets", "matplotlib", "numpy", "mpi4py", "mpich", "mlxtend"} <= names
    for req in reqs:
        if req.marker is not None and not req.marker.evaluate():
            continue
        version = metadata.version(req.name)
        assert req.specifier.contains(version, prereleases=True), f"{req.name} {version} is outside {req.specifier}"


def test_keras_3_is_the_keras():
    assert int(metadata.version("keras").split(".")[0]) == 3


def test_import_labkit_does_not_import_tensorflow():
    code = "import sys, labkit, labkit.comm, labkit.data; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_setup_seeds_numpy_and_python():
    import random

    labkit.setup(seed=7, tensorflow=False)
    a = (random.random(), np.random.rand())
    labkit.setup(seed=7, tensorflow=False)
    assert (random.random(), np.random.rand()) == a


def test_setup_seeds_tensorflow():
    tf = pytest.importorskip("tensorflow")
    labkit.setup(seed=3)
    a = tf.random.uniform((3,)).numpy()
    labkit.setup(seed=3)
    np.testing.assert_array_equal(tf.random.uniform((3,)).numpy(), a)


def test_about_reports_versions_cores_and_data(capsys):
    info = labkit.about()
    out = capsys.readouterr().out
    assert info["labkit"] == labkit.__version__ and info["numpy"] == np.__version__
    assert int(info["cores"]) >= 1
    assert "data: mnist" in out and info["data: mnist"]
    assert str(ROOT) not in out  # nothing machine-specific leaks into notebook outputs
