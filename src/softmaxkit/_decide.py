"""Decisions from logits: the argmax class and the k most likely classes.

Softmax is monotone, so both decisions are taken on the logits directly: no
exponential is evaluated, and the answer is the same at every temperature.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._errors import SoftmaxkitTypeError, SoftmaxkitValueError
from ._namespace import dtype_kind, is_concrete, resolve
from ._validation import check_class_axis, check_int

__all__ = ["TopK", "predict", "top_k"]

Array = Any


def _logits(logits: object, axis: object) -> tuple[Any, Array, int]:
    xp, (za,) = resolve(logits, names=("logits",))
    kind = dtype_kind(xp, za.dtype)
    if kind not in ("float", "half", "int", "bool"):
        msg = f"`logits` must be a real array, got dtype {za.dtype}"
        raise SoftmaxkitTypeError(msg)
    ax = check_class_axis(axis, za.ndim)
    if int(za.shape[ax]) == 0:
        msg = "`logits` has no classes along `axis`; there is nothing to choose from"
        raise SoftmaxkitValueError(msg)
    if kind in ("float", "half") and is_concrete(za) and bool(xp.any(xp.isnan(za))):
        msg = "`logits` contains NaN, which has no rank; fix or drop those rows first"
        raise SoftmaxkitValueError(msg)
    return xp, za, ax


def _ranked(xp: Any, za: Array) -> Array:
    """``za``, or booleans as 0/1 (the Array API sorts and ranks no booleans)."""
    return xp.astype(za, xp.uint8) if dtype_kind(xp, za.dtype) == "bool" else za


def predict(logits: Array, /, *, axis: int = -1) -> Array:
    """The most likely class: ``argmax`` of the logits along the class axis.

    Equal to ``argmax(softmax(logits / T))`` for every temperature ``T > 0``
    (softmax is monotone), computed without the softmax. Ties go to the lowest
    index; a ``+inf`` logit wins.

    Parameters
    ----------
    logits : array
        Unnormalised scores, classes along ``axis``. Any array library.
    axis : int, optional
        The class axis. Default ``-1``.

    Returns
    -------
    array of int
        Class indices with the shape of ``logits`` without ``axis``, in the
        caller's array library.

    Raises
    ------
    SoftmaxkitValueError
        If a logit is NaN (it has no rank) or the class axis is empty.

    See Also
    --------
    top_k, sample

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit as sk
    >>> sk.predict(np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]]))
    array([0, 1])
    """
    xp, za, ax = _logits(logits, axis)
    return xp.argmax(_ranked(xp, za), axis=ax)


class TopK(NamedTuple):
    """The ``k`` largest logits along an axis and their class indices."""

    values: Array
    indices: Array


def top_k(logits: Array, k: int, /, *, axis: int = -1) -> TopK:
    """The ``k`` most likely classes, most likely first.

    Like :func:`torch.topk` (``largest=True, sorted=True``) on any array library:
    ties keep the lower index first, so the result does not depend on the library.

    Parameters
    ----------
    logits : array
        Unnormalised scores, classes along ``axis``.
    k : int
        How many classes; ``1 <= k <= n_classes``.
    axis : int, optional
        The class axis. Default ``-1``.

    Returns
    -------
    TopK
        ``values`` (the logits) and ``indices``, both with ``axis`` of length ``k``.
        Apply :func:`softmax` to the full logits for the probabilities.

    See Also
    --------
    predict, sample

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit as sk
    >>> sk.top_k(np.array([0.1, 2.0, 1.0, 2.0]), 3)
    TopK(values=array([2., 2., 1.]), indices=array([1, 3, 2]))
    """
    xp, za, ax = _logits(logits, axis)
    C = int(za.shape[ax])
    k = check_int(k, "k")
    if not 1 <= k <= C:
        msg = f"`k` must lie in 1..{C} (the number of classes), got {k}"
        raise SoftmaxkitValueError(msg)
    key = _ranked(xp, za)
    idx = xp.argsort(key, axis=ax, descending=True, stable=True)
    vals = xp.sort(key, axis=ax, descending=True, stable=True)
    if key is not za:
        vals = xp.astype(vals, za.dtype)
    sl = tuple(slice(0, k) if i == ax else slice(None) for i in range(za.ndim))
    return TopK(vals[sl], idx[sl])
