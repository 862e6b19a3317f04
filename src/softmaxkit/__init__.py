"""softmaxkit: the softmax family done right.

Softmax, log-softmax, logsumexp, cross-entropy, NLL, sigmoid and binary
cross-entropy that are correctly rounded by default, give a defined answer for
every IEEE input, and work on NumPy, PyTorch, JAX, CuPy, Dask and any other
Python Array API library, returning the caller's array type.

>>> import numpy as np
>>> import softmaxkit as sk
>>> sk.softmax(np.array([2.0, 1.0, 0.1])).round(3)
array([0.659, 0.242, 0.099])
"""

from ._cross_entropy import cross_entropy, nll_loss
from ._decide import TopK, predict, top_k
from ._errors import SoftmaxkitError, SoftmaxkitTypeError, SoftmaxkitValueError
from ._explain import Explanation, explain
from ._logsumexp import logsumexp
from ._outputs import output_cache
from ._sampling import sample
from ._sigmoid import binary_cross_entropy_with_logits, log_sigmoid, sigmoid
from ._softmax import log_softmax, softmax
from ._softmax_stats import SoftmaxStats, softmax_stats
from ._vjp import log_softmax_vjp, logsumexp_vjp, softmax_vjp
from .state import LogSumExpState, merge, merge_all

__version__ = "0.1.0"

__all__ = [
    "Explanation",
    "LogSumExpState",
    "SoftmaxStats",
    "SoftmaxkitError",
    "SoftmaxkitTypeError",
    "SoftmaxkitValueError",
    "TopK",
    "__version__",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "explain",
    "log_sigmoid",
    "log_softmax",
    "log_softmax_vjp",
    "logsumexp",
    "logsumexp_vjp",
    "merge",
    "merge_all",
    "nll_loss",
    "output_cache",
    "predict",
    "sample",
    "sigmoid",
    "softmax",
    "softmax_stats",
    "softmax_vjp",
    "top_k",
]
