"""The benchmarks run as ``python benchmarks/X.py``, with benchmarks/ on sys.path: their tests import them so too."""

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent
for folder in (BENCHMARKS, BENCHMARKS.parent):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
