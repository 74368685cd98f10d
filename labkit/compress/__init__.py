"""labkit.compress: smaller models and fewer bytes on the wire, counted honestly.

- `labkit.compress.weights`: magnitude pruning with fine-tuning, k-means weight sharing, linear quantisation,
  Huffman coding, low-rank factorisation, distillation; a byte-exact container with a decoder and a size report.
- `labkit.compress.gradients`: gradient compressors (fp16, top-k, random-k, QSGD, sign, PowerSGD, error feedback)
  that plug into `labkit.train` and whose payload bytes are what the trace and the cost model count.

Each module lists its public names in ``__all__``; both are re-exported here.
"""

from labkit.compress.gradients import *  # noqa: F403
from labkit.compress.gradients import __all__ as _gradients_all
from labkit.compress.weights import *  # noqa: F403
from labkit.compress.weights import __all__ as _weights_all

__all__ = [*_gradients_all, *_weights_all]
