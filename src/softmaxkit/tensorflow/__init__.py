"""softmaxkit for TensorFlow: ``tf.nn`` names and arguments, softmaxkit's numerical contract.

``import softmaxkit.tensorflow as sktf`` gives ``sktf.softmax``,
``sktf.log_softmax``, ``sktf.reduce_logsumexp``,
``sktf.sparse_softmax_cross_entropy_with_logits``,
``sktf.softmax_cross_entropy_with_logits``,
``sktf.sigmoid_cross_entropy_with_logits``,
``sktf.weighted_cross_entropy_with_logits``, ``sktf.sigmoid`` and
``sktf.log_sigmoid`` with TensorFlow's argument names, order and defaults, plus
the softmaxkit extras as keywords (``where``, ``temperature``, ``precision``).

Every op is wrapped in ``tf.custom_gradient`` and runs eagerly, in
``tf.function``, under ``jit_compile=True`` (XLA) and from a SavedModel reloaded
in a fresh process, custom gradient included. float16, bfloat16 and float32 are
computed in float64 and rounded once; float64 in double-word arithmetic (max
error 0.5 ulp + 1 %). Where TensorFlow returns NaN or 0 (all ``-inf`` rows,
``+inf`` logits, dominant logits, float16 sums that overflow) the limits apply;
the gradients are finite there.

Two routes compute the same contract:

* **The C core inside XLA.** On a TensorFlow that sees only the CPU, softmax,
  log_softmax and the integer-label cross-entropy of float32/float64 tensors of
  known shape over the last axis (cross-entropy without temperature or
  smoothing) run softmaxkit's C kernels as XLA custom calls, registered with
  TensorFlow's own XLA: bitwise the NumPy results, in every mode, subnormal
  results kept.
* **TensorFlow operations** everywhere else (GPUs, half precision, other axes,
  unknown sizes, the other ops), and in every graph that ``tf.saved_model.save``
  traces, so that a SavedModel runs without softmaxkit.

Two TensorFlow facts shape the contract on this backend:

* **Subnormals are flushed to zero on the TensorFlow-op route.** TF's CPU
  kernels run with FTZ/DAZ, eagerly and under XLA, so results below the normal
  range (``sigmoid(-100)`` in float32, the float64 ``log_softmax([0, -740])[0]``)
  come out as 0 there, where the NumPy core and the custom calls return the
  subnormal.
* **Bad labels cannot raise inside a graph.** Eagerly, a label outside
  ``[0, C)`` raises :class:`softmaxkit.SoftmaxkitValueError`; inside a
  ``tf.function`` or under XLA nothing can raise on data, and that item's loss
  and gradient are NaN.

Importing this module imports TensorFlow; ``import softmaxkit`` does not.
Do not use TensorFlow and Triton in one process (both bundle LLVM).

>>> import tensorflow as tf
>>> import softmaxkit.tensorflow as sktf
>>> float(sktf.sparse_softmax_cross_entropy_with_logits(
...     tf.constant([0]), tf.constant([[0.0, -40.0]]))[0])
4.24835413113866e-18
"""

from ._functional import (
    log_sigmoid,
    log_softmax,
    reduce_logsumexp,
    sigmoid,
    sigmoid_cross_entropy_with_logits,
    softmax,
    softmax_cross_entropy_with_logits,
    sparse_softmax_cross_entropy_with_logits,
    weighted_cross_entropy_with_logits,
)

__all__ = [
    "log_sigmoid",
    "log_softmax",
    "reduce_logsumexp",
    "sigmoid",
    "sigmoid_cross_entropy_with_logits",
    "softmax",
    "softmax_cross_entropy_with_logits",
    "sparse_softmax_cross_entropy_with_logits",
    "weighted_cross_entropy_with_logits",
]
