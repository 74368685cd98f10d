"""Launching an MPI job from Python, and leaving nothing behind when it fails.

`mpiexec` finds the launcher (pip's mpich puts one next to the venv's Python); `run_mpiexec` runs a job the way
`subprocess.run` does, then removes what an aborted or killed MPICH job leaves on the machine. `labkit.measure`,
the chapters' MPI demonstrations and the tests start every MPI job through it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path


def mpiexec() -> str | None:
    """The mpiexec next to this Python (pip's mpich puts it there), else the one on PATH, else None."""
    return shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")


def require_mpiexec() -> str:
    """`mpiexec`, or a RuntimeError that says how to get one."""
    launcher = mpiexec()
    if launcher is None:
        raise RuntimeError("no mpiexec found: pip install mpi4py mpich (or install MPI with your package manager)")
    return launcher


def _mpich_segments() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("mpich")} if os.path.isdir("/dev/shm") else set()


def _mapped_segments() -> set[str]:
    """Names of /dev/shm files some live process has mapped (read from /proc/*/maps)."""
    names: set[str] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:  # the process ended, or is not ours to read
            continue
        names.update(line.rsplit("/", 1)[-1].split()[0] for line in text.splitlines() if "/dev/shm/mpich" in line)
    return names


def _hydra_files() -> set[str]:
    """The topology files MPICH's launcher writes, /tmp/hydra_hwloc_xmlfile_* (always /tmp, whatever TMPDIR says)."""
    try:
        return {n for n in os.listdir("/tmp") if n.startswith("hydra_hwloc_xmlfile_")}
    except OSError:  # no /tmp (Windows): nothing to clean
        return set()


def run_mpiexec(argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(argv, **kwargs)`` of an mpiexec command, then remove what an aborted MPICH job leaves behind.

    MPI_Abort and killed ranks do not unlink MPICH's shared-memory segments (/dev/shm/mpich_shm_*); the ones that
    appeared during this run and that no live process still maps are deleted. Nor does the launcher then delete the
    topology file it wrote to /tmp; the ones that appeared during this run are deleted once it has exited. Nor does
    a killed rank delete its own temporary files (TensorFlow's autograph writes some): the ranks get a TMPDIR of
    their own, removed afterwards. So a failed job leaks nothing.
    """
    before, hydra_before = _mpich_segments(), _hydra_files()
    with tempfile.TemporaryDirectory(prefix="labkit-mpiexec-", ignore_cleanup_errors=True) as tmp:
        env = {**(kwargs.pop("env", None) or os.environ), "TMPDIR": tmp}
        try:
            return subprocess.run(list(argv), env=env, **kwargs)
        finally:
            for name in _hydra_files() - hydra_before:  # subprocess.run has waited for the launcher: done with it
                Path("/tmp", name).unlink(missing_ok=True)
            left, deadline = _mpich_segments() - before, time.monotonic() + 3.0
            while left:  # ranks killed by the abort may take a moment to exit and unmap
                for name in left - _mapped_segments():
                    Path("/dev/shm", name).unlink(missing_ok=True)
                left = _mpich_segments() - before
                if not left or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
