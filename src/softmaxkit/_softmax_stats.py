"""Per-row summaries of a softmax from one reduction: logsumexp, entropy, top-k log-probabilities.

What :func:`softmaxkit.torch.linear_cross_entropy` returns beside its loss
(``return_lse``, ``return_entropy``, ``topk``), for plain arrays of logits. The
row statistics come from one mergeable state (:mod:`softmaxkit.state`), so no
probability array is ever formed. This module validates and delegates; it must
never form the ``softmax`` of the whole input.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._decide import top_k
from ._errors import SoftmaxkitValueError
from ._namespace import resolve
from ._validation import check_bool, check_class_axis, check_int
from .state import LogSumExpState

__all__ = ["SoftmaxStats", "softmax_stats"]

Array = Any


class SoftmaxStats(NamedTuple):
    """Per-row logsumexp, entropy and top-k log-probabilities (``None`` when not asked for)."""

    lse: Array
    entropy: Array | None
    topk_logprobs: Array | None
    topk_indices: Array | None


def softmax_stats(
    logits: Array,
    /,
    *,
    axis: int = -1,
    entropy: bool = True,
    topk: int = 0,
    precision: str = "accurate",
    threads: int | None = None,
) -> SoftmaxStats:
    r"""Logsumexp, entropy and the ``topk`` largest log-probabilities of each row.

    .. math::

        \operatorname{lse} = M + \operatorname{log1p}((C - 1) + S),\qquad
        H = -\sum_i p_i \log p_i = \log D - \frac{1}{D}\sum_i e^{x_i - M}(x_i - M),

        \log p_{(j)} = (x_{(j)} - M) - \operatorname{log1p}((C - 1) + S),

    with ``M`` the row maximum, ``C`` its count, ``S`` the sum of the other
    ``exp(x - M)`` and ``D = C + S`` (one :class:`LogSumExpState` per row).
    Both terms of ``H`` are non-negative, so nothing cancels.

    Parameters
    ----------
    logits : array
        Unnormalised scores, classes along ``axis`` (any array library).
    axis : int, optional
        The class axis. Default ``-1``.
    entropy : bool, optional
        Compute the entropy (one more read of the logits). Default ``True``.
    topk : int, optional
        How many of the largest log-probabilities to return (0: none). Ties keep
        the lower class index first, as :func:`top_k`; NaN logits then raise.
    precision : {"accurate", "fast"}, optional
        See :func:`softmax`.
    threads : int, optional
        See :func:`softmax`.

    Returns
    -------
    SoftmaxStats
        ``lse`` and ``entropy`` with the shape of ``logits`` without ``axis``;
        ``topk_logprobs`` and ``topk_indices`` with ``axis`` of length ``topk``
        (most likely first). Same array library and float dtype as ``logits``.

    See Also
    --------
    logsumexp, top_k, LogSumExpState

    Notes
    -----
    The contract's special rows: ``+inf`` entries give ``lse = +inf``, entropy
    ``log k`` and log-probability ``-log k`` for each of the ``k`` infinite
    entries; a row of ``-inf`` gives ``lse = -inf`` and entropy 0; a NaN gives
    NaN. The entropy's sum is taken in the working dtype (float64 for float32
    and float64 data), accurate to a few float64 ulps of its terms.

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit as sk
    >>> st = sk.softmax_stats(np.array([[2.0, 1.0, 0.1], [0.0, 0.0, 0.0]]), topk=2)
    >>> st.lse.round(4)
    array([2.417 , 1.0986])
    >>> st.entropy.round(4)  # log 3 for the uniform row
    array([0.8467, 1.0986])
    >>> st.topk_logprobs.round(4)
    array([[-0.417 , -1.417 ],
           [-1.0986, -1.0986]])
    >>> st.topk_indices
    array([[0, 1],
           [0, 1]])
    """
    _, (xa,) = resolve(logits, names=("logits",))
    ax = check_class_axis(axis, xa.ndim)
    want_h = check_bool(entropy, "entropy")
    topk = check_int(topk, "topk")
    n = int(xa.shape[ax])
    if not 0 <= topk <= n:
        msg = f"`topk` must lie in 0..{n} (the number of classes), got {topk}"
        raise SoftmaxkitValueError(msg)
    st = LogSumExpState.from_block(
        xa, axis=ax, entropy=want_h, precision=precision, threads=threads
    )
    lse = st.logsumexp()
    h = st.entropy() if want_h else None
    lp = idx = None
    if topk:
        vals, idx = top_k(xa, topk, axis=ax)
        lp = st.log_softmax(vals, axis=ax)
    return SoftmaxStats(lse, h, lp, idx)
