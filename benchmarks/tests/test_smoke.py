"""Every benchmark runs end to end: each script's smallest run (``--smoke``, or ``--quick`` where that is already
seconds) exits 0 and writes a non-empty Markdown table into a temporary folder (``LABKIT_RESULTS``), never over
benchmarks/results/. The MPI parts run under ``mpiexec -n 2`` when there is one, and are skipped (with a note in
the report) when there is not. About a minute in all on 2 cores."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent

# (script and flags, the report it writes); allreduce_report.py is allreduce.py's report module, written by it
RUNS = [
    (["allreduce.py", "--smoke"], "allreduce.md"),
    (["inference.py", "--smoke"], "inference.md"),
    (["widgets.py", "--quick"], "widgets.md"),
    (["gradient_compression.py", "--smoke"], "gradient_compression.md"),
    (["train.py", "--smoke"], "train.md"),
    (["compression.py", "--smoke"], "compression_smoke.md"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("argv", "report"), RUNS, ids=[argv[0] for argv, _ in RUNS])
def test_the_benchmark_runs_and_writes_its_table(argv, report, tmp_path):
    committed = BENCHMARKS / "results" / report
    before = committed.read_bytes() if committed.exists() else None
    env = {**os.environ, "LABKIT_OFFLINE": "1", "LABKIT_RESULTS": str(tmp_path)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCHMARKS.parent), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=180, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    text = (tmp_path / report).read_text()
    assert text.startswith("# ") and any(
        line.startswith("|---") or line.startswith("|--:") for line in text.splitlines()
    )
    assert [line for line in text.splitlines() if line.startswith("| ") and "|" in line[2:]], "a table with rows"
    assert (committed.read_bytes() if committed.exists() else None) == before  # the stored table is untouched
