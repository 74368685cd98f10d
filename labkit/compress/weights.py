"""Weight compression of Dense layers: magnitude pruning, k-means weight sharing, linear quantisation.

The three stages of Deep Compression (Han, Mao & Dally 2016, "Deep Compression: Compressing Deep Neural Networks
with Pruning, Trained Quantization and Huffman Coding"), on Keras 3 models made of Dense layers:

- **pruning** (Han et al. 2015, "Learning both Weights and Connections"): zero the smallest |w| of each kernel
  (or below one global threshold) to a target sparsity, then fine-tune with the zeros held by a mask re-applied
  after every optimizer step. Biases are not pruned: they are 1 % of the weights and every one of them matters.
  `prune_and_fine_tune` prunes in rounds as Han et al. do; `gradual_prune` raises the sparsity during training
  on Zhu & Gupta 2017's cubic schedule, which on the article's MLP keeps 12× fewer weights at no loss.
- **weight sharing**: k-means on each kernel's surviving weights, initialised linearly over [min, max] (the
  paper's best initialisation, because it keeps the rare large weights); each weight becomes a log2(k)-bit index.
  `train_codebook` then trains the shared values themselves (Han et al. 2016's trained quantisation).
- **linear quantisation**: w ≈ scale·(q − zero_point), q an integer of b bits; symmetric or asymmetric, one scale
  per tensor or per output channel. Every element is within scale/2 of its original.

Pruning lives in `labkit.compress.pruning`, weight sharing in `labkit.compress.sharing`, linear quantisation in
`labkit.compress.quantize`, Huffman coding and the
stored format in `labkit.compress.huffman` and `labkit.compress.codec`, low rank and distillation in
`labkit.compress.smaller`; all are re-exported here. The reference engines are Keras 3's own
``model.quantize("int8")`` and the TFLite converter (`keras_int8`, `tflite_int8`). The TF Model Optimization
Toolkit is not one of them: it supports only tf.keras 2, not Keras 3. TensorFlow is imported only by the functions
that need Keras, so the NumPy parts load without it.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from labkit import native_stderr_silenced
from labkit.compress.codec import *  # noqa: F403
from labkit.compress.codec import __all__ as _codec_all
from labkit.compress.huffman import *  # noqa: F403
from labkit.compress.huffman import __all__ as _huffman_all
from labkit.compress.pruning import *  # noqa: F403
from labkit.compress.pruning import __all__ as _pruning_all
from labkit.compress.quantize import *  # noqa: F403
from labkit.compress.quantize import __all__ as _quantize_all
from labkit.compress.sharing import *  # noqa: F403
from labkit.compress.sharing import __all__ as _sharing_all
from labkit.compress.smaller import *  # noqa: F403
from labkit.compress.smaller import __all__ as _smaller_all

__all__ = [
    "keras_int8",
    "keras_int8_bytes",
    "tflite_int8",
    "tflite_evaluate",
    *_pruning_all,
    *_quantize_all,
    *_sharing_all,
    *_codec_all,
    *_smaller_all,
    *_huffman_all,
]


def keras_int8(model):
    """A copy of a Keras model quantised by Keras 3 itself: ``model.quantize("int8")`` (int8 per-channel kernels,
    inputs quantised on the fly)."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    with _quiet():
        copy.quantize("int8")
    copy.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return copy


def keras_int8_bytes(model) -> int:
    """Bytes of a model's weights as stored (int8 kernels, float32 scales and biases): Σ variable sizes."""
    return int(sum(np.prod(v.shape) * np.dtype(v.dtype).itemsize for v in model.weights))


def tflite_int8(model, representative=None) -> bytes:
    """The TFLite flatbuffer of post-training quantisation (``optimizations=[Optimize.DEFAULT]``): dynamic-range
    int8 weights, or full integer with a ``representative`` array of inputs to calibrate activations."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if representative is not None:
        converter.representative_dataset = lambda: ([r[None]] for r in np.asarray(representative, np.float32))
    with _quiet():
        return converter.convert()


def tflite_evaluate(flatbuffer: bytes, x, y, batch_size: int = 1000) -> float:
    """Accuracy of a TFLite model run by ``tf.lite.Interpreter`` on (x, y)."""
    import tensorflow as tf

    with _quiet():
        interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    correct = 0
    for start in range(0, len(x), batch_size):  # a batch at a time: the interpreter holds one input shape
        xb = np.asarray(x[start : start + batch_size], np.float32)
        interpreter.resize_tensor_input(inp["index"], xb.shape)
        with native_stderr_silenced():  # "INFO: Created TensorFlow Lite XNNPACK delegate", from C++, every run
            interpreter.allocate_tensors()
            interpreter.set_tensor(inp["index"], xb)
            interpreter.invoke()
        correct += int((interpreter.get_tensor(out["index"]).argmax(1) == y[start : start + batch_size]).sum())
    return correct / len(x)


@contextlib.contextmanager
def _quiet():
    """Keep the converter's 'Saved artifact at /tmp/…' listing and Keras's per-layer warnings out of notebooks."""
    import warnings

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
