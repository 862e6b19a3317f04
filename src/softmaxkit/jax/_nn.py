"""``jax.nn``-named softmax, log_softmax, logsumexp, sigmoid and log_sigmoid.

Same names, argument order and defaults as :mod:`jax.nn` (``logsumexp``'s
``axis=None`` included), plus a keyword-only ``precision``. The work is done
by :mod:`softmaxkit.jax._ffi` (the C core as XLA custom calls on CPU, the
array-agnostic implementation elsewhere), so results are differentiable in
both modes, batch under ``vmap`` and compile under ``jit``.

This module must never call the NumPy-facing public functions of softmaxkit
(one validation per call, here).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .._dispatch import default_threads
from .._errors import SoftmaxkitTypeError, SoftmaxkitValueError
from .._namespace import call, check_not_longdouble, dtype_name, make_plan
from .._validation import check_axes
from . import _core, _ffi

__all__ = ["log_sigmoid", "log_softmax", "logsumexp", "sigmoid", "softmax"]

Array = Any


def as_jax(x: object, name: str) -> Array:
    """``x`` as a JAX array (NumPy arrays, lists and scalars are converted, as JAX does)."""
    if isinstance(x, jax.Array):
        return x
    check_not_longdouble(getattr(x, "dtype", None), name)  # JAX has no long double
    try:
        return jnp.asarray(x)
    except (TypeError, ValueError) as exc:
        msg = f"`{name}` must be an array or a nested sequence of numbers, got {type(x).__name__}"
        raise SoftmaxkitTypeError(msg) from exc


def to_dtype(a: Array, dtype: Any) -> Array:
    """``a.astype(dtype)``, skipped where it changes nothing (each is a JAX dispatch; a
    weakly typed array still goes through it, which makes it strongly typed)."""
    return a if a.dtype == dtype and not getattr(a, "weak_type", False) else a.astype(dtype)


def prepare(x: object, precision: object, name: str) -> tuple[Array, _ffi.Cfg, Any]:
    """The input as a float32/float64 JAX array, its options and the dtype to return.

    Integers and bool are promoted to JAX's default float; float16 and
    bfloat16 are computed in float32 and rounded once at the end.
    """
    xa = as_jax(x, name)
    plan = make_plan(jnp, xa, precision, name=name)
    out = plan.out
    if dtype_name(out) not in ("float32", "float64"):
        plan = make_plan(jnp, xa.astype(jnp.float32), precision, name=name)
    cfg = _ffi.Cfg(0 if plan.mode == "plain" else 1, default_threads(), plan)
    return to_dtype(xa, plan.out), cfg, out


def mask_of(where: object, shape: tuple[int, ...]) -> Array | None:
    if where is None:
        return None
    m = as_jax(where, "where")
    if dtype_name(m.dtype) != "bool":  # as jax.nn: a mask of 0.5 or 2 is a mistake
        msg = (
            f"`where` must be a boolean array (True = include), got dtype {m.dtype}; "
            "compare with a value to make one"
        )
        raise SoftmaxkitTypeError(msg)
    try:
        return jnp.broadcast_to(m, shape)
    except ValueError as exc:
        msg = f"`where` of shape {tuple(m.shape)} does not broadcast to the input's shape {shape}"
        raise SoftmaxkitValueError(msg) from exc


def _axes(axis: object, ndim: int) -> tuple[int, ...]:
    return check_axes(axis, ndim)


def softmax(
    x: Array,
    axis: int | tuple[int, ...] | None = -1,
    where: Array | None = None,
    *,
    precision: str = "accurate",
) -> Array:
    r"""Softmax over ``axis``, as :func:`jax.nn.softmax`.

    .. math:: \operatorname{softmax}(x)_i = e^{x_i - a} / \sum_j e^{x_j - a},
       \quad a = \max_j x_j

    Parameters
    ----------
    x : array_like
        Logits.
    axis : int, tuple of ints or None, optional
        Axis or axes that sum to one (``None``: all). Default ``-1``.
    where : array_like of bool, optional
        Entries to include; excluded entries get 0. A row with nothing
        included is all 0 (``jax.nn.softmax`` gives the same).
    precision : {"accurate", "fast"}, optional
        ``"accurate"`` rounds correctly in practice (0.5 ulp); ``"fast"``
        computes in the input precision (at most 3 ulp).

    Returns
    -------
    jax.Array
        Same shape and (float) dtype as ``x``.

    Notes
    -----
    ``+inf`` entries share the probability (``jax.nn.softmax`` gives NaN).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import softmaxkit.jax as skj
    >>> [round(float(v), 3) for v in skj.softmax(jnp.array([2.0, 1.0, 0.1], dtype=jnp.float32))]
    [0.659, 0.242, 0.099]
    """
    xa, cfg, out = prepare(x, precision, "x")
    axes = _axes(axis, xa.ndim)
    if xa.size == 0:
        return to_dtype(xa, out)
    fn = _core._normalize_fn(axes, 1.0, cfg, False, where is not None)
    return to_dtype(fn(xa, mask_of(where, tuple(xa.shape))), out)


def log_softmax(
    x: Array,
    axis: int | tuple[int, ...] | None = -1,
    where: Array | None = None,
    *,
    precision: str = "accurate",
) -> Array:
    r"""Log-softmax over ``axis``, as :func:`jax.nn.log_softmax`.

    .. math:: \log\operatorname{softmax}(x)_i = (x_i - a) - \log \sum_j e^{x_j - a}

    Parameters
    ----------
    x : array_like
        Logits.
    axis : int, tuple of ints or None, optional
        Default ``-1``.
    where : array_like of bool, optional
        Entries to include; excluded entries get ``-inf``.
    precision : {"accurate", "fast"}, optional
        See :func:`softmax`.

    Returns
    -------
    jax.Array
        Same shape and (float) dtype as ``x``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import softmaxkit.jax as skj
    >>> x = jnp.array([0.0, -40.0], dtype=jnp.float32)
    >>> float(skj.log_softmax(x)[0])  # jax.nn gives 0.0
    -4.24835413113866e-18
    """
    xa, cfg, out = prepare(x, precision, "x")
    axes = _axes(axis, xa.ndim)
    if xa.size == 0:
        return to_dtype(xa, out)
    fn = _core._normalize_fn(axes, 1.0, cfg, True, where is not None)
    return to_dtype(fn(xa, mask_of(where, tuple(xa.shape))), out)


def logsumexp(
    a: Array,
    axis: int | tuple[int, ...] | None = None,
    b: Array | None = None,
    keepdims: bool = False,
    return_sign: bool = False,
    where: Array | None = None,
    *,
    precision: str = "accurate",
) -> Array | tuple[Array, Array]:
    r"""``log(sum(b * exp(a)))`` over ``axis``, as :func:`jax.nn.logsumexp`.

    Parameters
    ----------
    a : array_like
        Input.
    axis : int, tuple of ints or None, optional
        Default ``None`` (all axes), as in JAX.
    b : array_like, optional
        Weights, broadcastable to ``a``; entries with ``b == 0`` are left out.
    keepdims : bool, optional
        Keep the reduced axes with size one.
    return_sign : bool, optional
        Also return the sign of the sum; without it a negative sum gives NaN.
    where : array_like of bool, optional
        Entries to include.
    precision : {"accurate", "fast"}, optional
        See :func:`softmax`.

    Returns
    -------
    jax.Array or (jax.Array, jax.Array)
        The log of the absolute sum (and its sign).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import softmaxkit.jax as skj
    >>> float(skj.logsumexp(jnp.array([1000.0, 1000.0], dtype=jnp.float32)))
    1000.6931762695312
    """
    if b is not None:
        # as jax.nn.logsumexp: a and b promoted together, then broadcast to one shape
        # (the axes count in it)
        aj, bj = as_jax(a, "a"), as_jax(b, "b")
        wide = jnp.result_type(aj, bj)  # integers: prepare makes them the default float
        try:
            both = jnp.broadcast_shapes(aj.shape, bj.shape)
        except ValueError:
            msg = (
                f"`b` has shape {tuple(bj.shape)}, which does not broadcast with `a`'s shape "
                f"{tuple(aj.shape)}"
            )
            raise SoftmaxkitValueError(msg) from None
        a = jnp.broadcast_to(aj.astype(wide), both)
        b = jnp.broadcast_to(bj.astype(wide), both)
    xa, cfg, out = prepare(a, precision, "a")
    axes = _axes(axis, xa.ndim)
    shape = tuple(xa.shape)
    ba = None if b is None else jnp.broadcast_to(as_jax(b, "b"), shape)
    if xa.size == 0 or not axes:
        # through ``call``, as every array-agnostic call: it compiles once and switches
        # on the float64 work the plan may need (JAX without x64) for this call only
        res = call(
            jnp,
            _ffi._normalize.logsumexp,
            {"x": xa, "b": ba, "where": mask_of(where, shape)},
            {
                "axes": axes,
                "keepdims": bool(keepdims),
                "return_sign": bool(return_sign),
                "plan": cfg.plan,
            },
        )
    else:
        fn = _core._logsumexp_fn(
            axes, bool(keepdims), bool(return_sign), cfg, ba is not None, where is not None
        )
        res = fn(xa, ba, mask_of(where, shape))
    if return_sign:
        return to_dtype(res[0], out), to_dtype(res[1], out)
    return to_dtype(res, out)  # type: ignore[arg-type]


def sigmoid(x: Array, *, precision: str = "accurate") -> Array:
    r"""Logistic sigmoid :math:`1 / (1 + e^{-x})`, as :func:`jax.nn.sigmoid`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import softmaxkit.jax as skj
    >>> [round(float(v), 4) for v in skj.sigmoid(jnp.array([0.0, 2.0], dtype=jnp.float32))]
    [0.5, 0.8808]
    """
    xa, cfg, out = prepare(x, precision, "x")
    if xa.size == 0:
        return to_dtype(xa, out)
    return to_dtype(_core._sigmoid_fn(cfg, False)(xa), out)


def log_sigmoid(x: Array, *, precision: str = "accurate") -> Array:
    r""":math:`\log \operatorname{sigmoid}(x) = -\log(1 + e^{-x})`, as :func:`jax.nn.log_sigmoid`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import softmaxkit.jax as skj
    >>> skj.log_sigmoid(jnp.array([0.0], dtype=jnp.float32)).round(4)
    Array([-0.6931], dtype=float32)
    """
    xa, cfg, out = prepare(x, precision, "x")
    if xa.size == 0:
        return to_dtype(xa, out)
    return to_dtype(_core._sigmoid_fn(cfg, True)(xa), out)
