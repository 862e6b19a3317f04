"""Public sigmoid, log-sigmoid and binary cross-entropy with logits."""

from __future__ import annotations

from typing import Any

from . import _dispatch
from ._agnostic import _sigmoid
from ._errors import SoftmaxkitTypeError, SoftmaxkitValueError
from ._namespace import (
    call,
    dtype_kind,
    make_plan,
    numpy_scalars,
    resolve,
)
from ._validation import _any, _first_bad, check_bool, check_nonneg_array, check_reduction, checked

__all__ = ["binary_cross_entropy_with_logits", "log_sigmoid", "sigmoid"]

Array = Any


def sigmoid(x: Array, /, *, precision: str = "accurate", threads: int | None = None) -> Array:
    r"""The logistic sigmoid, the two-class special case of softmax.

    .. math:: \sigma(x) = \frac{1}{1 + e^{-x}} = \operatorname{softmax}([x, 0])_0

    Computed from ``z = exp(-|x|)`` so it never overflows, and correctly rounded
    in the accurate mode.

    Parameters
    ----------
    x : array
        Logits, any real dtype.
    precision : {"accurate", "fast"}, optional
        See :func:`softmax`.
    threads : int, optional
        Worker threads of the native CPU kernels; see :func:`softmax`.

    Returns
    -------
    array
        Probabilities in ``[0, 1]``, same shape, array type and device.

    See Also
    --------
    log_sigmoid, binary_cross_entropy_with_logits, softmax

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit as sk
    >>> sk.sigmoid(np.array([-np.inf, -1.0, 0.0, 2.0, np.inf])).round(4)
    array([0.    , 0.2689, 0.5   , 0.8808, 1.    ])
    """
    res = _dispatch.quick_sigmoid(x, precision, threads, False)
    if res is not None:
        return res
    xp, (xa,) = resolve(x, names=("x",))
    plan = make_plan(xp, xa, precision)
    res = _dispatch.sigmoid(xa, plan, log=False, threads=_dispatch.check_threads(threads))
    if res is not None:
        return res
    return call(xp, _sigmoid.sigmoid, {"x": xa}, {"plan": plan})


def log_sigmoid(x: Array, /, *, precision: str = "accurate", threads: int | None = None) -> Array:
    r"""``log(sigmoid(x))`` without underflow: ``min(x, 0) - log1p(exp(-|x|))``.

    Parameters
    ----------
    x : array
        Logits, any real dtype.
    precision : {"accurate", "fast"}, optional
        See :func:`softmax`.
    threads : int, optional
        Worker threads of the native CPU kernels; see :func:`softmax`.

    Returns
    -------
    array
        Log-probabilities (``<= 0``), same shape, array type and device.

    See Also
    --------
    sigmoid, log_softmax

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit as sk
    >>> sk.log_sigmoid(np.array([-100.0, 0.0, 30.0]))
    array([-1.00000000e+02, -6.93147181e-01, -9.35762297e-14])
    """
    res = _dispatch.quick_sigmoid(x, precision, threads, True)
    if res is not None:
        return res
    xp, (xa,) = resolve(x, names=("x",))
    plan = make_plan(xp, xa, precision)
    res = _dispatch.sigmoid(xa, plan, log=True, threads=_dispatch.check_threads(threads))
    if res is not None:
        return res
    return call(xp, _sigmoid.log_sigmoid, {"x": xa}, {"plan": plan})


def binary_cross_entropy_with_logits(
    logits: Array,
    target: Array,
    /,
    *,
    weight: Array | None = None,
    pos_weight: Array | None = None,
    reduction: str = "mean",
    return_grad: bool = False,
    precision: str = "accurate",
    threads: int | None = None,
) -> Array | tuple[Array, Array]:
    r"""Binary cross-entropy on logits, for binary and multi-label problems.

    .. math::

        \ell = -\bigl[w_+\, y \log\sigma(x) + (1 - y)\log(1 - \sigma(x))\bigr]
             = w_+\, y\, \operatorname{softplus}(-x) + (1 - y)\operatorname{softplus}(x)

    Both terms are non-negative, so the loss keeps full relative accuracy for
    large ``|x|`` (PyTorch returns 0 for ``x = -40, y = 0`` in float32; the answer
    is ``4.25e-18``), and infinite logits give their limits.

    Parameters
    ----------
    logits : array
        One logit per label (any shape).
    target : array
        Targets in ``[0, 1]`` (hard or soft labels), broadcastable to ``logits``.
    weight : array, optional
        Elementwise weights broadcastable to ``logits``. ``"mean"`` averages the
        weighted losses over all elements, as PyTorch does.
    pos_weight : array, optional
        Weight of the positive term, broadcast along the last axis (one per label),
        to trade recall against precision.
    reduction : {"mean", "sum", "none"}, optional
        A mean over zero elements is 0.
    return_grad : bool, optional
        Also return ``d loss / d logits``:
        ``w [(1 - y) sigma(x) - w_+ y sigma(-x)]`` (scaled for ``"mean"``). The
        accurate mode keeps its precision where ``y`` is close to ``sigma(x)`` and
        the two terms cancel: it forms the gradient of float32 data in float64 and
        that of float64 data in double-word arithmetic, and rounds it once.
    precision : {"accurate", "fast"}, optional
        See :func:`softmax`.
    threads : int, optional
        Worker threads of the native CPU kernels; see :func:`softmax`.

    Returns
    -------
    loss : array
    grad : array, only with ``return_grad``

    See Also
    --------
    sigmoid, cross_entropy

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit as sk
    >>> x = np.array([2.0, -1.0, 0.5])
    >>> y = np.array([1.0, 0.0, 1.0])
    >>> round(float(sk.binary_cross_entropy_with_logits(x, y)), 4)
    0.3048
    >>> inf_logits, labels = np.array([np.inf, -np.inf]), np.array([1.0, 0.0])
    >>> sk.binary_cross_entropy_with_logits(inf_logits, labels, reduction="none")
    array([0., 0.])
    """
    quick = _dispatch.quick_bce(
        logits, target, weight, pos_weight, reduction, return_grad, precision, threads
    )
    if quick is not None:
        return quick  # type: ignore[no-any-return]
    xp, (la, ta, wa, pa) = resolve(
        logits,
        target,
        weight,
        pos_weight,
        names=("logits", "target", "weight", "pos_weight"),
        required=2,
    )
    plan = make_plan(xp, la, precision, name="logits")
    red = check_reduction(reduction)
    return_grad = check_bool(return_grad, "return_grad")
    if dtype_kind(xp, ta.dtype) not in ("float", "half", "int", "bool"):
        msg = f"`target` must be a real array of values in [0, 1], got dtype {ta.dtype}"
        raise SoftmaxkitTypeError(msg)
    _check_fits_logits(xp, la, ta, "target")
    ta = checked(xp, ta, _check_unit_interval)
    wa, pa = (
        _check_weight(xp, la, arr, name) for name, arr in (("weight", wa), ("pos_weight", pa))
    )
    res = _dispatch.binary_cross_entropy_with_logits(
        la, ta, wa, pa, red, return_grad, plan, threads=_dispatch.check_threads(threads)
    )
    if res is None:
        res = call(
            xp,
            _sigmoid.binary_cross_entropy_with_logits,
            {"logits": la, "target": ta, "weight": wa, "pos_weight": pa},
            {"reduction": red, "return_grad": return_grad, "plan": plan},
        )
    return numpy_scalars(xp, res)  # type: ignore[no-any-return]


def _check_weight(xp: Any, la: Array, arr: Array | None, name: str) -> Array | None:
    """``weight`` or ``pos_weight``: real, broadcasting to the logits, finite and >= 0."""
    if arr is None:
        return None
    if dtype_kind(xp, arr.dtype) not in ("float", "half", "int"):
        msg = f"`{name}` must be a real array, got dtype {arr.dtype}"
        raise SoftmaxkitTypeError(msg)
    _check_fits_logits(xp, la, arr, name)
    return check_nonneg_array(xp, arr, name)


def _check_fits_logits(xp: Any, la: Array, arr: Array, name: str) -> None:
    """``arr`` broadcasts to the logits' shape without enlarging it."""
    try:
        shape = tuple(xp.broadcast_arrays(la, arr)[0].shape)
    except (ValueError, RuntimeError, TypeError) as exc:
        msg = (
            f"`{name}` has shape {tuple(arr.shape)}, which does not broadcast to the "
            f"logits' shape {tuple(la.shape)}"
        )
        raise SoftmaxkitValueError(msg) from exc
    if shape != tuple(la.shape):
        msg = (
            f"`{name}` has shape {tuple(arr.shape)}, which would enlarge the logits' "
            f"shape {tuple(la.shape)}"
        )
        raise SoftmaxkitValueError(msg)


def _check_unit_interval(xp: Any, ta: Array, offset: tuple[int, ...]) -> None:
    bad = (ta < 0) | (ta > 1)  # NaN targets propagate, as NaN logits do
    if _any(xp, bad):
        msg = f"`target` must lie in [0, 1], got {_first_bad(xp, bad, ta, offset)}"
        raise SoftmaxkitValueError(msg)
