"""Public logsumexp: resolve the namespace, validate, delegate."""

from __future__ import annotations

from typing import Any

from . import _dispatch
from ._agnostic import _complex as _cplx
from ._agnostic import _normalize
from ._errors import SoftmaxkitTypeError, SoftmaxkitValueError
from ._namespace import (
    call,
    check_precision,
    default_float,
    device_of,
    dtype_kind,
    dtype_name,
    has_float64,
    is_numpy,
    make_plan,
    numpy_scalars,
    resolve,
)
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
    threads: int | None = None,
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
        Input values (see :func:`softmax` for dtypes). Complex input is accepted
        here (not by softmax or the losses): the log of a sum of complex
        exponentials, with SciPy's conventions (principal branch, imaginary part
        in ``(-pi, pi]``), computed in complex128 with plain arithmetic.
    axis : int, tuple of ints or None, optional
        Axis or axes to reduce. Default ``-1``; note that
        ``scipy.special.logsumexp`` defaults to ``axis=None`` (all elements).
    b : array, optional
        Weights broadcastable with ``x``, as in SciPy: ``log sum b_i exp(x_i)``.
        Integer weights promote to the default float first (an int ``b`` with
        float32 ``x`` gives float64, as in SciPy); complex weights are accepted.
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
    threads : int, optional
        Worker threads of the native CPU kernels; see :func:`softmax`.

    Returns
    -------
    res : array
        ``log|sum b exp(x)|`` with the reduced shape (complex input without
        ``return_sign``: the complex logarithm). A 0-d result of a NumPy call is
        a NumPy scalar, as from NumPy's and SciPy's reductions.
    sign : array
        Only with ``return_sign``: ``+1``, ``-1``, or 0 where the sum is 0; for
        complex input the phase ``sum / |sum|``.

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

    The result is ``a + L`` with ``a`` the maximum and ``L = log1p(...)`` of the
    rest. Where the two nearly cancel (a row of log-probabilities, whose
    logsumexp is about 0), the native CPU kernels sum the row again with a
    double-word exponential (about ``2**-105``): float32 results are still rounded
    once (down to results of about ``2**-65 min(L, 1)``), float64 ones are within
    about ``2**-96 min(L, 1)``, which is more than an ulp only for results below
    about ``2**-43`` (rows of 100 log-probabilities: at most 18 ulp, where the
    result is 5e-18). The array-agnostic engine (other array libraries and
    devices) errs there by about ``2**-47`` (float32) or ``2**-66`` (float64) times
    ``min(L, 1)``: on the same rows up to 14 ulp and ``3e11`` ulp.

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
    >>> z = sk.logsumexp(np.array([0.5j, 1.0 - 0.25j]))
    >>> complex(z.round(6))
    (1.257513-0.054934j)
    """
    res = _dispatch.quick_logsumexp(x, axis, b, where, keepdims, return_sign, precision, threads)
    if res is not None:
        return res  # type: ignore[no-any-return]
    xp, (xa, ba, wa) = resolve(x, b, where, names=("x", "b", "where"), allow_complex=True)
    keepdims = check_bool(keepdims, "keepdims")
    return_sign = check_bool(return_sign, "return_sign")
    xkind = dtype_kind(xp, xa.dtype)
    bkind = None if ba is None else dtype_kind(xp, ba.dtype)
    if xkind == "complex" or bkind == "complex":
        _dispatch.check_threads(threads)  # unused there, but checked as everywhere
        return numpy_scalars(
            xp,
            _complex(xp, xa, ba, wa, axis, keepdims, return_sign, precision),
        )
    if xkind in ("int", "bool"):
        # integers promote to the default float first, then meet b's dtype
        xa = xp.astype(xa, default_float(xp, device_of(xa)))
    if ba is not None:
        kind = bkind
        if kind not in ("float", "half", "int", "bool"):
            msg = f"`b` must be a real or complex array of weights, got dtype {ba.dtype}"
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
        if kind in ("float", "half"):
            wdt = xp.result_type(xa, ba)
        elif kind == "int":  # integer weights promote to the default float first
            wdt = xp.result_type(xa.dtype, default_float(xp, device_of(xa)))
        else:
            wdt = xa.dtype
        plan = make_plan(xp, xp.astype(xa, wdt) if wdt != xa.dtype else xa, precision)
    else:
        plan = make_plan(xp, xa, precision)
    axes = check_axes(axis, xa.ndim)
    mask = check_where(xp, wa, tuple(xa.shape))
    nthreads = _dispatch.check_threads(threads)
    res = _dispatch.logsumexp(xa, axes, ba, mask, keepdims, return_sign, plan, threads=nthreads)
    if res is None:
        res = call(
            xp,
            _normalize.logsumexp,
            {"x": xa, "b": ba, "where": mask},
            {"axes": axes, "keepdims": keepdims, "return_sign": return_sign, "plan": plan},
        )
    return numpy_scalars(xp, res)  # type: ignore[no-any-return]


def _complex(
    xp: Any,
    xa: Array,
    ba: Array | None,
    wa: Array | None,
    axis: object,
    keepdims: bool,
    return_sign: bool,
    precision: object,
) -> Array | tuple[Array, Array]:
    """Validate and run the complex logsumexp (plain arithmetic, see ``_agnostic._complex``)."""
    prec = check_precision(precision)
    dev = device_of(xa)
    dtypes = [xa.dtype] if ba is None else [xa.dtype, ba.dtype]
    kinds = [dtype_kind(xp, d) for d in dtypes]
    if any(k not in ("float", "half", "int", "bool", "complex") for k in kinds):
        msg = f"`x` and `b` must be numeric, got dtypes {[dtype_name(d) for d in dtypes]}"
        raise SoftmaxkitTypeError(msg)
    wide = has_float64(xp, dev)
    floats = [
        default_float(xp, dev) if k in ("int", "bool") else d
        for d, k in zip(dtypes, kinds, strict=True)
    ]
    double = dtype_name(xp.result_type(*floats)) in ("float64", "complex128")
    out = xp.complex128 if (double and wide) else xp.complex64
    work = xp.complex128 if (wide and (prec == "accurate" or double)) else out
    if ba is not None:
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
    axes = check_axes(axis, xa.ndim)
    mask = check_where(xp, wa, tuple(xa.shape))
    static = {"axes": axes, "keepdims": keepdims, "return_sign": return_sign}
    static.update(work=work, out=out)
    with _quiet(xp):
        return call(  # type: ignore[no-any-return]
            xp, _cplx.logsumexp_complex, {"x": xa, "b": ba, "where": mask}, static
        )


def _quiet(xp: Any) -> Any:
    import contextlib

    import numpy as np

    return np.errstate(all="ignore") if is_numpy(xp) else contextlib.nullcontext()
