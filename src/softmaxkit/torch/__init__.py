"""softmaxkit for PyTorch: drop-in autograd ops and modules."""

from ._functional import (
    binary_cross_entropy_with_logits,
    cross_entropy,
    log_softmax,
    logsumexp,
    nll_loss,
    softmax,
)
from ._linear_ce import LinearCrossEntropyOutput, linear_cross_entropy
