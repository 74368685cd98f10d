import os

import pytest

# Tests never download anything: the data loader must fall back to what is on the machine.
os.environ["LABKIT_OFFLINE"] = "1"

# The real-browser suite is slow and needs Chromium: `make test-browser` runs it (with LABKIT_BROWSER=1).
collect_ignore = [] if os.environ.get("LABKIT_BROWSER") else ["browser"]

# Which chapters each test file belongs to, so a student can run exactly their part: `pytest -m ch03`.
# The foundation (environment, data, lab) is chapter 0.
CHAPTERS = {
    "test_env.py": (0,),
    "test_lab.py": (0,),
    "test_data.py": (0, 1),
    "test_background.py": (1,),
    "test_models.py": (1, 5),
    "test_concepts.py": (2,),
    "test_comm.py": (2, 3),
    "test_sim.py": (2, 3),
    "test_shm.py": (3,),
    "test_mpi.py": (3, 5),
    "test_collectives.py": (2, 3),
    "test_steps.py": (2, 3),
    "test_cost.py": (3,),
    "test_measure.py": (3,),
    "test_mpirun.py": (3, 5, 8),
    "test_widgets.py": (3,),
    "test_article.py": (4,),
    "test_train.py": (4, 5),
    "test_practice.py": (5,),
    "test_tensor_parallel.py": (6,),
    "test_pipeline.py": (6,),
    "test_serving.py": (6,),
    "test_compress_gradients.py": (7,),
    "test_compress_weights.py": (7,),
    "test_compress_explorer.py": (7,),
    "test_huffman.py": (7,),
    "test_fault.py": (8,),
    "test_memory.py": (9,),
    "test_faq.py": (10,),
    "test_check.py": tuple(range(11)),
    "test_notebooks.py": tuple(range(11)),
    "test_teach.py": (),
    "test_zh.py": tuple(range(11)),
    "test_i18n.py": (),
    "test_layout.py": (),
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for chapter in CHAPTERS.get(item.path.name, ()):
            item.add_marker(getattr(pytest.mark, f"ch{chapter:02d}"))
