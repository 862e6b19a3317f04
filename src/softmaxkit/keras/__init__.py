"""softmaxkit for Keras 3: losses, ops and a Softmax layer on every Keras backend.

``import softmaxkit.keras as skk`` gives the losses
``skk.CategoricalCrossentropy``, ``skk.SparseCategoricalCrossentropy`` and
``skk.BinaryCrossentropy`` (Keras's names, arguments, reductions and
serialisation: ``get_config`` and saving/loading a compiled model), the ops
``skk.softmax``, ``skk.log_softmax`` and ``skk.logsumexp`` and the layer
``skk.Softmax`` (fully masked rows give 0).

Each call goes to the active Keras backend's softmaxkit path:
:mod:`softmaxkit.tensorflow` on TensorFlow, the core functions on JAX arrays
(the native JAX kernels where built), :mod:`softmaxkit.torch` on PyTorch. The
values equal Keras's wherever Keras is right; the losses' module docstring lists
what is fixed (class count in categorical smoothing with ``axis != -1``, the
float16 label cast, the dominant-logit tail, special values).

Importing this module imports Keras (and so its backend); ``import softmaxkit``
does not.

>>> import numpy as np
>>> import softmaxkit.keras as skk
>>> loss = skk.SparseCategoricalCrossentropy(from_logits=True)
>>> float(loss(np.array([0]), np.array([[0.0, -40.0]])))
4.24835413113866e-18
"""

from ._losses import BinaryCrossentropy, CategoricalCrossentropy, SparseCategoricalCrossentropy
from ._ops import Softmax, log_softmax, logsumexp, softmax

__all__ = [
    "BinaryCrossentropy",
    "CategoricalCrossentropy",
    "Softmax",
    "SparseCategoricalCrossentropy",
    "log_softmax",
    "logsumexp",
    "softmax",
]
