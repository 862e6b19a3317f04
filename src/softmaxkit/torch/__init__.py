"""softmaxkit for PyTorch: drop-in autograd ops and modules with torch's conventions.

``import softmaxkit.torch as skt`` gives the functional ops (``skt.softmax``,
``skt.log_softmax``, ``skt.logsumexp``, ``skt.cross_entropy``, ``skt.nll_loss``,
``skt.binary_cross_entropy_with_logits``, ``skt.linear_cross_entropy``) and the
modules (``skt.Softmax``, ``skt.LogSoftmax``, ``skt.CrossEntropyLoss``,
``skt.NLLLoss``, ``skt.BCEWithLogitsLoss``, ``skt.LinearCrossEntropyLoss``) with
the argument names and layouts of ``torch.nn.functional`` and ``torch.nn``
(``dim``; class dimension 1 for the losses).

Each op is a ``torch.library`` custom operator (namespace ``softmaxkit``) with a
registered autograd formula and fake implementation: ``torch.compile`` traces it
without graph breaks, and float64 ``gradcheck``/``gradgradcheck`` pass
(``linear_cross_entropy`` raises a clear error on double backward). CPU
float32/float64 tensors run on the softmaxkit core without copies (zero-copy NumPy
views, or the tensors' own memory for the everyday ``cross_entropy(logits,
labels)``); other devices and dtypes run torch operations under the same numerical
contract.

Results equal torch's wherever torch is right; where torch returns NaN or 0 the
softmaxkit contract applies (all ``-inf`` rows, ``+inf`` logits, dominant
logits, empty means). Each function's Notes list the differences.

>>> import torch
>>> import softmaxkit.torch as skt
>>> skt.cross_entropy(torch.tensor([[0.0, -40.0]]), torch.tensor([0])).item()
4.24835413113866e-18
"""

from .. import _torch_mkl
from . import _openmp
from ._functional import (
    binary_cross_entropy_with_logits,
    cross_entropy,
    log_softmax,
    logsumexp,
    nll_loss,
    softmax,
)
from ._linear_ce import LinearCrossEntropyOutput, linear_cross_entropy
from ._modules import (
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    LinearCrossEntropyLoss,
    LogSoftmax,
    NLLLoss,
    Softmax,
)

_openmp.share_team()
_torch_mkl.prime()  # the CPU routes through torch operations (pytorch#188792)

__all__ = [
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "LinearCrossEntropyLoss",
    "LinearCrossEntropyOutput",
    "LogSoftmax",
    "NLLLoss",
    "Softmax",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "linear_cross_entropy",
    "log_softmax",
    "logsumexp",
    "nll_loss",
    "softmax",
]
