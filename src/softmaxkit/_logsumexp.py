"""Public logsumexp: resolve the namespace, validate, delegate."""

from __future__ import annotations

from typing import Any

from ._agnostic import _normalize
from ._errors import SoftmaxkitTypeError, SoftmaxkitValueError
from ._namespace import call, dtype_kind, make_plan, resolve
from ._validation import check_axes, check_bool, check_where

__all__ = ["logsumexp"]

Array = Any


def logsumexp(
    x: Array,
    /,
    *,
    axis: int | tuple[int, ...] | None = -1,
    b: Array | None = None,
    where: Array | None = None,
    keepdims: bool = False,
    return_sign: bool = False,
    precision: str = "accurate",
) -> Array | tuple[Array, Array]:
    r"""Log of the sum of exponentials, without overflow and without losing tiny terms.

    .. math::

        \operatorname{logsumexp}(x) = \log \sum_i b_i e^{x_i}
        = a + \operatorname{log1p}\bigl((c - 1) + s\bigr),\qquad a = \max_i x_i,

    where ``c`` counts the maximal entries and ``s = sum_{x_i < a} e^{x_i - a}``
    (Blanchard, Higham & Higham). Keeping ``s`` apart preserves it when it is far
    below the rounding unit: ``logsumexp([0, -40])`` is ``4.248e-18``.

    Parameters
    ----------
    x : array
        Input values (see :func:`softmax` for dtypes).
    axis : int, tuple of ints or None, optional
        Axis or axes to reduce. Default ``-1``; note that
        ``scipy.special.logsumexp`` defaults to ``axis=None`` (all elements).
    b : array, optional
        Weights broadcastable with ``x``, as in SciPy: ``log sum b_i exp(x_i)``.
        Entries with ``b == 0`` are ignored, even if ``x`` is infinite or NaN there.
    where : boolean array, optional
        Entries to include; a row with nothing included gives ``-inf``.
    keepdims : bool, optional
        Keep the reduced axes with size 1.
    return_sign : bool, optional
        Also return the sign of the sum. With weights the sum can be negative:
        without ``return_sign`` such a result is NaN, as in SciPy.
    precision : {"accurate", "fast"}, optional
        See :func:`softmax`.

    Returns
    -------
    res : array
        ``log|sum b exp(x)|`` with the reduced shape.
    sign : array
        Only with ``return_sign``: ``+1``, ``-1``, or 0 where the sum is 0.

    See Also
    --------
    softmax : the gradient of logsumexp.
    logsumexp_vjp : its vector-Jacobian product.

    Notes
    -----
    An empty axis gives ``-inf`` (the log of an empty sum). ``+inf`` entries
    give ``+inf``; a NaN gives NaN. Float16 input is accumulated in a wider
    dtype, so ``logsumexp`` of 100,000 float16 zeros is ``11.51`` (PyTorch,
    SciPy and JAX overflow to ``inf``).

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham, N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit as sk
    >>> float(sk.logsumexp(np.array([2.0, 1.0, 0.1])))
    2.4170300162778333
    >>> float(sk.logsumexp(np.array([1000.0, 1000.0])))  # 1000 + log 2, no overflow
    1000.6931471805599
    >>> float(sk.logsumexp(np.array([0.0, -40.0], dtype=np.float32)))
    4.24835413113866e-18
    >>> res, sign = sk.logsumexp(np.array([0.0, 0.0]), b=np.array([1.0, -2.0]), return_sign=True)
    >>> float(res), float(sign)
    (0.0, -1.0)
    """
    xp, (xa, ba, wa) = resolve(x, b, where, names=("x", "b", "where"))
    keepdims = check_bool(keepdims, "keepdims")
    return_sign = check_bool(return_sign, "return_sign")
    if ba is not None:
        kind = dtype_kind(xp, ba.dtype)
        if kind not in ("float", "half", "int", "bool"):
            msg = f"`b` must be a real array of weights, got dtype {ba.dtype}"
            raise SoftmaxkitTypeError(msg)
        try:
            shape = tuple(xp.broadcast_arrays(xa, ba)[0].shape)
        except (ValueError, RuntimeError, TypeError) as exc:
            msg = (
                f"`b` has shape {tuple(ba.shape)}, which does not broadcast with "
                f"x's shape {tuple(xa.shape)}"
            )
            raise SoftmaxkitValueError(msg) from exc
        if shape != tuple(xa.shape):
            xa = xp.broadcast_to(xa, shape)
        wdt = xp.result_type(xa, ba) if kind in ("float", "half") else xa.dtype
        plan = make_plan(xp, xp.astype(xa, wdt) if wdt != xa.dtype else xa, precision)
    else:
        plan = make_plan(xp, xa, precision)
    axes = check_axes(axis, xa.ndim)
    mask = check_where(xp, wa, tuple(xa.shape))
    return call(  # type: ignore[no-any-return]
        xp,
        _normalize.logsumexp,
        {"x": xa, "b": ba, "where": mask},
        {"axes": axes, "keepdims": keepdims, "return_sign": return_sign, "plan": plan},
    )
