"""labkit.comm.mpirun: an MPI job started through run_mpiexec leaves nothing on the machine, even when it aborts."""

import os
import sys

import pytest

from labkit import measure
from labkit.comm import mpirun


@pytest.mark.mpi
@pytest.mark.skipif(mpirun.mpiexec() is None, reason="no mpiexec: pip install mpi4py mpich")
def test_mpi_ranks_get_a_temporary_folder_that_is_removed_after_the_job():
    code = "import os, tempfile; d = tempfile.gettempdir(); os.write(1, f'{d} {os.path.isdir(d)}\\n'.encode())"
    argv = [mpirun.mpiexec(), "-n", "2", sys.executable, "-c", code]
    done = mpirun.run_mpiexec(argv, capture_output=True, text=True, timeout=60)
    folders = {line.split()[0] for line in done.stdout.splitlines()}
    assert done.returncode == 0 and len(folders) == 1 and done.stdout.split()[1::2] == ["True", "True"]
    (folder,) = folders
    assert "labkit-mpiexec-" in folder and not os.path.exists(folder)  # a killed rank's files go with it


@pytest.mark.mpi
@pytest.mark.skipif(mpirun.mpiexec() is None or not os.path.isdir("/dev/shm"), reason="needs mpiexec and /dev/shm")
def test_an_aborted_mpi_job_leaves_no_shared_memory(tmp_path):
    script = tmp_path / "abort.py"
    script.write_text("from mpi4py import MPI\nMPI.COMM_WORLD.Barrier()\nMPI.COMM_WORLD.Abort(3)\n")
    before, hydra_before = mpirun._mpich_segments(), mpirun._hydra_files()
    argv = [mpirun.mpiexec(), "-n", "2", sys.executable, str(script)]
    done = mpirun.run_mpiexec(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert mpirun._mpich_segments() - before == set()
    assert mpirun._hydra_files() - hydra_before == set()  # nor the launcher's topology file in /tmp


def test_without_mpiexec_every_launch_says_how_to_get_one(monkeypatch):
    from labkit.lessons import practice

    monkeypatch.setattr(mpirun, "mpiexec", lambda: None)
    for launch in (mpirun.require_mpiexec, lambda: measure.measure_mpi(2), lambda: practice.launch(2)):
        with pytest.raises(RuntimeError, match="no mpiexec found: pip install mpi4py mpich"):
            launch()
