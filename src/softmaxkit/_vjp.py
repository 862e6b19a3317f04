"""Vector-Jacobian products of the normalisers, for code without automatic differentiation."""

from __future__ import annotations

from typing import Any

from . import _dispatch
from ._agnostic import _vjp
from ._errors import SoftmaxkitValueError
from ._namespace import call, make_plan, resolve
from ._validation import check_axes, check_bool, check_where

__all__ = ["log_softmax_vjp", "logsumexp_vjp", "softmax_vjp"]

Array = Any


def _pair(y: object, g: object, names: tuple[str, str]) -> tuple[Any, Array, Array]:
    xp, (ya, ga) = resolve(y, g, names=names, required=2)
    if tuple(ya.shape) != tuple(ga.shape):
        msg = (
            f"`{names[1]}` has shape {tuple(ga.shape)} but `{names[0]}` has shape "
            f"{tuple(ya.shape)}; the upstream gradient must match the output"
        )
        raise SoftmaxkitValueError(msg)
    return xp, ya, ga


def softmax_vjp(
    y: Array,
    g: Array,
    /,
    *,
    axis: int | tuple[int, ...] | None = -1,
    precision: str = "accurate",
    threads: int | None = None,
) -> Array:
    r"""Backpropagate ``g`` through ``y = softmax(x)``: ``y * (g - sum(y * g))``.

    Parameters
    ----------
    y : array
        The output of :func:`softmax` (not its input).
    g : array
        The gradient of the loss with respect to ``y``, same shape.
    axis : int, tuple of ints or None, optional
        The axis the softmax normalised over (default ``-1``).
    precision : {"accurate", "fast"}, optional
        ``"accurate"`` accumulates float32 in float64 where available.
    threads : int, optional
        Worker threads of the native CPU kernels; see :func:`softmax`.

    Returns
    -------
    array
        The gradient with respect to the softmax input ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit as sk
    >>> y = sk.softmax(np.array([2.0, 1.0, 0.1]))
    >>> sk.softmax_vjp(y, np.array([1.0, 0.0, 0.0])).round(4)
    array([ 0.2247, -0.1598, -0.065 ])
    """
    xp, ya, ga = _pair(y, g, ("y", "g"))
    plan = make_plan(xp, ya, precision, name="y")
    axes = check_axes(axis, ya.ndim)
    res = _dispatch.vjp(ya, ga, axes, plan, log=False, threads=_dispatch.check_threads(threads))
    if res is not None:
        return res
    return call(xp, _vjp.softmax_vjp, {"y": ya, "g": ga}, {"axes": axes, "plan": plan})


def log_softmax_vjp(
    y: Array,
    g: Array,
    /,
    *,
    axis: int | tuple[int, ...] | None = -1,
    precision: str = "accurate",
    threads: int | None = None,
) -> Array:
    r"""Backpropagate ``g`` through ``y = log_softmax(x)``: ``g - exp(y) * sum(g)``.

    Parameters
    ----------
    y : array
        The output of :func:`log_softmax`.
    g : array
        The gradient of the loss with respect to ``y``, same shape.
    axis : int, tuple of ints or None, optional
        The axis the log-softmax normalised over (default ``-1``).
    precision : {"accurate", "fast"}, optional
        ``"accurate"`` accumulates float32 in float64 where available.
    threads : int, optional
        Worker threads of the native CPU kernels; see :func:`softmax`.

    Returns
    -------
    array
        The gradient with respect to the log-softmax input ``x``. Entries where
        ``y`` is ``-inf`` (masked) receive ``g`` unchanged, as the Jacobian says;
        pass ``g = 0`` there to keep them out.

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit as sk
    >>> y = sk.log_softmax(np.array([2.0, 1.0, 0.1]))
    >>> sk.log_softmax_vjp(y, np.array([-1.0, 0.0, 0.0])).round(4)
    array([-0.341 ,  0.2424,  0.0986])
    """
    xp, ya, ga = _pair(y, g, ("y", "g"))
    plan = make_plan(xp, ya, precision, name="y")
    axes = check_axes(axis, ya.ndim)
    res = _dispatch.vjp(ya, ga, axes, plan, log=True, threads=_dispatch.check_threads(threads))
    if res is not None:
        return res
    return call(xp, _vjp.log_softmax_vjp, {"y": ya, "g": ga}, {"axes": axes, "plan": plan})


def logsumexp_vjp(
    x: Array,
    g: Array,
    /,
    *,
    axis: int | tuple[int, ...] | None = -1,
    where: Array | None = None,
    keepdims: bool = False,
    precision: str = "accurate",
) -> Array:
    r"""Backpropagate ``g`` through ``logsumexp(x)``: ``g * softmax(x)``.

    Parameters
    ----------
    x : array
        The *input* of :func:`logsumexp`.
    g : array
        The gradient with respect to the logsumexp result: its reduced shape, or
        with the reduced axes kept when ``keepdims=True``.
    axis : int, tuple of ints or None, optional
        The reduced axis or axes (default ``-1``).
    where : boolean array, optional
        The mask passed to :func:`logsumexp`; excluded entries get gradient 0,
        and fully masked rows get 0 everywhere (never NaN).
    keepdims : bool, optional
        Whether ``g`` keeps the reduced axes.
    precision : {"accurate", "fast"}, optional
        See :func:`softmax`.

    Returns
    -------
    array
        The gradient with respect to ``x``, same shape as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit as sk
    >>> sk.logsumexp_vjp(np.array([[0.0, 0.0], [1.0, -np.inf]]), np.array([1.0, 2.0]))
    array([[0.5, 0.5],
           [2. , 0. ]])
    """
    xp, (xa, ga, wa) = resolve(x, g, where, names=("x", "g", "where"), required=2)
    plan = make_plan(xp, xa, precision)
    axes = check_axes(axis, xa.ndim)
    keepdims = check_bool(keepdims, "keepdims")
    mask = check_where(xp, wa, tuple(xa.shape))
    kept = tuple(1 if i in axes else s for i, s in enumerate(xa.shape))
    reduced = tuple(s for i, s in enumerate(xa.shape) if i not in axes)
    want = kept if keepdims else reduced
    if tuple(ga.shape) != want:
        msg = (
            f"`g` has shape {tuple(ga.shape)}, but logsumexp over axis {axis!r} of an array "
            f"of shape {tuple(xa.shape)} has shape {want}"
        )
        raise SoftmaxkitValueError(msg)
    return call(
        xp,
        _vjp.logsumexp_vjp,
        {"x": xa, "g": ga, "where": mask},
        {"axes": axes, "kept": kept, "plan": plan},
    )
