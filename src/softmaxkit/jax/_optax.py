"""optax's classification losses, on softmaxkit's kernels.

``softmax_cross_entropy``, ``softmax_cross_entropy_with_integer_labels``,
``safe_softmax_cross_entropy`` and ``sigmoid_binary_cross_entropy`` with
optax's names, argument order, defaults and semantics (``where=`` included:
excluded classes drop out of the target sum, as in optax), plus a
keyword-only ``precision``. optax's own test file runs against them in the
test suite (tests/test_jax_optax.py), with each deliberate divergence listed.

This module must never call the NumPy-facing public functions of softmaxkit.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from .._errors import SoftmaxkitTypeError, SoftmaxkitValueError
from .._namespace import dtype_name
from .._validation import check_axes
from . import _core, _ffi
from ._nn import as_jax, mask_of, prepare, to_dtype

__all__ = [
    "safe_softmax_cross_entropy",
    "sigmoid_binary_cross_entropy",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
]

Array = Any


def _require_float(x: Array, name: str) -> None:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        msg = f"`{name}` must have a floating dtype, got {x.dtype} (as optax requires)"
        raise SoftmaxkitTypeError(msg)


def _real_labels(labels: object) -> Array:
    """``labels`` as a JAX array of real numbers (a complex one would lose its imaginary
    part in the cast to the logits' dtype)."""
    la = as_jax(labels, "labels")
    if jnp.issubdtype(la.dtype, jnp.complexfloating):
        msg = f"`labels` must be real probabilities, got dtype {la.dtype}"
        raise SoftmaxkitTypeError(msg)
    return la


def _broadcast_shape(labels: Array, logits: Array) -> tuple[int, ...]:
    """The shape ``labels`` and ``logits`` broadcast to (optax's rule), or an error."""
    try:
        return tuple(jnp.broadcast_shapes(labels.shape, logits.shape))
    except ValueError:
        msg = (
            f"`labels` has shape {tuple(labels.shape)}, which does not broadcast with the "
            f"logits' shape {tuple(logits.shape)}; pass one target per logit"
        )
        raise SoftmaxkitValueError(msg) from None


def _expand_where(where: object, ndim: int, axis: object) -> Array | None:
    """optax's rule: a per-row ``where`` gains the reduced axes (size one)."""
    if where is None:
        return None
    w = as_jax(where, "where")
    if w.ndim != ndim:
        w = jnp.expand_dims(w, axis)  # type: ignore[arg-type]
    return w


@functools.lru_cache(maxsize=256)
def _sce_fn(axes: tuple[int, ...], cfg: _ffi.Cfg, has_mask: bool) -> Any:
    def run(x: Array, labels: Array, mask: Array) -> Array:
        x = x.astype(cfg.plan.out)
        logp = _core._normalize_fn(axes, 1.0, cfg, True, has_mask)(x, mask)
        # a class without target mass at a -inf logit adds 0, as on the custom-call
        # route (optax: 0 * -inf = NaN); elsewhere a zero label keeps -log p as its
        # derivative
        logp = jnp.where((labels == 0) & (logp == -jnp.inf), 0.0, logp)
        # counted from the end: labels with more axes than the logits broadcast in front
        # (as optax's), and the class axes stay the product's last ones
        back = tuple(a - x.ndim for a in axes)
        return -(labels * logp).sum(back, where=mask)

    return jax.jit(run)


def softmax_cross_entropy(
    logits: Array,
    labels: Array,
    axis: int | tuple[int, ...] | None = -1,
    where: Array | None = None,
    *,
    precision: str = "accurate",
) -> Array:
    r"""Cross-entropy against target distributions, as :func:`optax.softmax_cross_entropy`.

    .. math:: \ell = -\sum_i y_i \log\operatorname{softmax}(x)_i

    A class without target mass adds 0, even at a ``-inf`` logit (a masked
    vocabulary entry): optax gives NaN there (``0 * -inf``), its
    ``safe_softmax_cross_entropy`` 0.

    Parameters
    ----------
    logits : array_like
        Unnormalised log-probabilities, classes along ``axis``.
    labels : array_like
        Target probabilities, broadcastable to ``logits``.
    axis : int, tuple of ints or None, optional
        The class axis or axes. Default ``-1``.
    where : array_like of bool, optional
        Elements to include: of ``logits``' shape, or of the batch shape
        (then it applies to whole rows). Excluded classes are left out of
        both the normaliser and the target sum, as in optax; a fully excluded
        row gives 0. (``softmaxkit.cross_entropy`` keeps its own contract:
        an excluded class has probability 0, so target mass on it makes the
        loss ``+inf``; optax drops that mass.)
    precision : {"accurate", "fast"}, optional
        Float32 logits on CPU with labels of their shape and no ``where`` take one
        custom call whose loss is rounded once (accurate: 0.5 ulp, its gradient
        too; fast: 3 ulp, see :func:`softmaxkit.cross_entropy`); otherwise the
        log-softmax has this precision and the sum over classes is JAX's.

    Returns
    -------
    jax.Array
        Loss per example, ``logits``' shape without the class axes.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import softmaxkit.jax as skj
    >>> logits = jnp.array([10.0, 1.0, -2.0], dtype=jnp.float32)
    >>> skj.softmax_cross_entropy(logits, jnp.array([0.0, 1.0, 0.0], dtype=jnp.float32))
    Array(9.00013, dtype=float32)
    """
    xa, cfg, out = prepare(logits, precision, "logits")
    axes = check_axes(axis, xa.ndim)
    la = _real_labels(labels)
    _broadcast_shape(la, xa)
    w = _expand_where(where, xa.ndim, axes)
    mask = mask_of(w, tuple(xa.shape))
    if xa.size == 0:
        logp = jax.nn.log_softmax(xa, axis=axes, where=mask)
        return to_dtype(-(la * logp).sum(tuple(a - xa.ndim for a in axes), where=mask), out)
    if mask is None and len(axes) == 1 and tuple(la.shape) == tuple(xa.shape):
        # float32 logits on CPU, float32 (or x64's float64) labels of their shape: the
        # fused custom call (one pass, loss and gradient, the item rounded once)
        got = _core._prob_cross_entropy(
            xa, la, axes[0], None, 0.0, 0.0, "none", None, False, cfg.plan, cfg.threads
        )
        if got is not None:
            return to_dtype(got, out)
    return to_dtype(_sce_fn(axes, cfg, mask is not None)(xa, la, mask), out)


@functools.lru_cache(maxsize=256)
def _int_fn(cfg: _ffi.Cfg, has_mask: bool) -> Any:
    def run(x: Array, labels: Array, mask: Array) -> Array:
        # x: classes last. optax indexes with take_along_axis: negative labels count
        # from the end and labels beyond the classes give NaN.
        if dtype_name(labels.dtype) not in ("int32", "int64"):
            labels = labels.astype(jnp.int32)
        if not has_mask:  # the kernel applies optax's indexing itself
            return _ffi.ce_index(
                x, labels, None, None, cfg, ignore_index=None, z_loss=0.0,
                reduction="none", want_grad=False, wrap_labels=True,
            )  # fmt: skip
        c = x.shape[-1]
        lab = jnp.where(labels < 0, labels + c, labels)
        bad = (lab < 0) | (lab >= c)
        lab = jnp.where(bad, 0, lab)
        # optax: the masked normaliser minus the target logit, whether or not the
        # target class is included; rows with nothing included give 0
        lse = _ffi.logsumexp_last(x, mask, cfg)
        picked = jnp.take_along_axis(x, lab[..., None], axis=-1)[..., 0]
        loss = jnp.where(jnp.any(mask, axis=-1), lse - picked, 0.0)
        return jnp.where(bad, jnp.nan, loss).astype(x.dtype)

    return jax.jit(run)


def softmax_cross_entropy_with_integer_labels(
    logits: Array,
    labels: Array,
    axis: int | tuple[int, ...] = -1,
    where: Array | None = None,
    *,
    precision: str = "accurate",
) -> Array:
    r"""Cross-entropy against class indices (optax's ``..._with_integer_labels``).

    .. math:: \ell = \log\sum_j e^{x_j} - x_y

    One pass of the fused kernel gives the loss and, under ``jax.grad``, the
    gradient ``softmax(x) - onehot(y)``.

    Parameters
    ----------
    logits : array_like
        Unnormalised log-probabilities, classes along ``axis``.
    labels : array_like of int
        Class indices, ``logits``' shape without the class axes. As in optax,
        a negative label counts from the end and a label beyond the classes
        gives NaN.
    axis : int or tuple of ints, optional
        The class axis; with a tuple the classes are those axes flattened in
        order. Default ``-1``.
    where : array_like of bool, optional
        Elements to include (optax's rule, see :func:`softmax_cross_entropy`).
    precision : {"accurate", "fast"}, optional
        ``"accurate"``: loss and gradient correctly rounded in practice.

    Returns
    -------
    jax.Array
        Loss per example.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import softmaxkit.jax as skj
    >>> logits = jnp.array([[0.0, -40.0]], dtype=jnp.float32)
    >>> skj.softmax_cross_entropy_with_integer_labels(logits, jnp.array([0]))
    Array([4.248354e-18], dtype=float32)
    """
    xa, cfg, out = prepare(logits, precision, "logits")
    la = as_jax(labels, "labels")
    if not (jnp.issubdtype(la.dtype, jnp.integer) or dtype_name(la.dtype) == "bool"):
        msg = f"`labels` must be integer class indices, got dtype {la.dtype}"
        raise SoftmaxkitTypeError(msg)
    w = _expand_where(where, xa.ndim, axis)
    mask = mask_of(w, tuple(xa.shape))
    if isinstance(axis, (tuple, int)):
        # optax flattens the class axes in the order given, not sorted
        check_axes(axis, xa.ndim)
        given = axis if isinstance(axis, tuple) else (axis,)
        axes = tuple(int(a) % xa.ndim for a in given)
    else:
        msg = (
            f"`axis` must be an int or a tuple of ints (the class axes, as optax's "
            f"'axis' argument), got {type(axis).__name__}"
        )
        raise SoftmaxkitTypeError(msg)
    perm = [i for i in range(xa.ndim) if i not in axes] + list(axes)
    x2 = _core._to_last(xa, perm, len(axes))
    m2 = None if mask is None else _core._to_last(mask, perm, len(axes))
    batch = tuple(x2.shape[:-1])
    if tuple(la.shape) != batch:
        # optax indexes with take_along_axis, which broadcasts the labels; any other
        # shape is an error (the kernel would read past the labels' buffer)
        try:
            la = jnp.broadcast_to(la, batch)
        except (ValueError, TypeError):
            msg = (
                f"`labels` has shape {tuple(la.shape)}, which does not broadcast to the "
                f"logits' shape without the class axes, {batch}"
            )
            raise SoftmaxkitValueError(msg) from None
    if x2.size == 0:
        return jnp.zeros(batch, out)
    return to_dtype(_int_fn(cfg, m2 is not None)(x2, la, m2), out)


@jax.custom_jvp
def _weighted(logp: Array, labels: Array) -> Array:
    """``labels * logp`` with ``0 log 0 = 0``; its derivative in ``labels`` is ``logp``."""
    return jnp.where(labels != 0, labels * logp, jnp.zeros_like(logp))


@_weighted.defjvp
def _weighted_jvp(primals: Any, tangents: Any) -> tuple[Array, Array]:
    logp, labels = primals
    dlogp, dlabels = tangents
    d = jnp.where(labels != 0, labels * dlogp, jnp.zeros_like(logp)) + dlabels * logp
    return _weighted(logp, labels), d


@functools.lru_cache(maxsize=64)
def _safe_fn(cfg: _ffi.Cfg) -> Any:
    def run(x: Array, labels: Array) -> Array:
        logp = _ffi.normalize_last(x, None, cfg, log=True, temperature=1.0)
        return -jnp.sum(_weighted(logp, labels), axis=-1)

    return jax.jit(run)


def safe_softmax_cross_entropy(
    logits: Array, labels: Array, *, precision: str = "accurate"
) -> Array:
    r"""Cross-entropy with ``0 log 0 = 0``, as :func:`optax.safe_softmax_cross_entropy`.

    A class with zero target probability contributes nothing, even where its
    logit is ``-inf``.

    Parameters
    ----------
    logits : array_like
        Unnormalised log-probabilities, classes last.
    labels : array_like
        Target probabilities, broadcastable to ``logits``.
    precision : {"accurate", "fast"}, optional
        See :func:`softmax_cross_entropy`.

    Returns
    -------
    jax.Array
        Loss per example.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import softmaxkit.jax as skj
    >>> logits = jnp.array([-jnp.inf, 0.0], dtype=jnp.float32)
    >>> skj.safe_softmax_cross_entropy(logits, jnp.array([0.0, 1.0], dtype=jnp.float32))
    Array(-0., dtype=float32)
    """
    xa = as_jax(logits, "logits")
    _require_float(xa, "logits")
    xa, cfg, out = prepare(xa, precision, "logits")
    la = _real_labels(labels)
    la = jnp.broadcast_to(la.astype(xa.dtype), _broadcast_shape(la, xa))
    xa = jnp.broadcast_to(xa, la.shape)
    if xa.ndim == 0:
        msg = "`logits` and `labels` are 0-d; the loss needs a class axis (the last)"
        raise SoftmaxkitValueError(msg)
    if xa.size == 0:
        return jnp.zeros(xa.shape[:-1], out)
    return to_dtype(_safe_fn(cfg)(xa, la), out)


@functools.lru_cache(maxsize=64)
def _bce_fn(cfg: _ffi.Cfg) -> Any:
    def run(x: Array, y: Array) -> Array:
        return _ffi.bce(x, y, None, None, cfg, reduction="none", want_grad=False)

    return jax.jit(run)


def sigmoid_binary_cross_entropy(
    logits: Array, labels: Array, *, precision: str = "accurate"
) -> Array:
    r"""Elementwise sigmoid cross-entropy, as :func:`optax.sigmoid_binary_cross_entropy`.

    .. math:: \ell = -y \log\sigma(x) - (1 - y) \log(1 - \sigma(x))

    Parameters
    ----------
    logits : array_like
        Logits of the positive class, floating dtype.
    labels : array_like
        Targets in [0, 1] (cast to ``logits``' dtype), broadcastable against
        ``logits``.
    precision : {"accurate", "fast"}, optional
        See :func:`softmax_cross_entropy`.

    Returns
    -------
    jax.Array
        The loss of each element, of the broadcast shape.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import softmaxkit.jax as skj
    >>> logits = jnp.array([0.0, 40.0], dtype=jnp.float32)
    >>> skj.sigmoid_binary_cross_entropy(logits, jnp.array([1.0, 1.0], dtype=jnp.float32))
    Array([6.931472e-01, 4.248354e-18], dtype=float32)
    """
    xa = as_jax(logits, "logits")
    _require_float(xa, "logits")
    xa, cfg, out = prepare(xa, precision, "logits")
    ya = _real_labels(labels)
    shape = _broadcast_shape(ya, xa)
    ya = ya.astype(xa.dtype)
    xa, ya = jnp.broadcast_to(xa, shape), jnp.broadcast_to(ya, shape)
    if xa.size == 0:
        return jnp.zeros(shape, out)
    return to_dtype(_bce_fn(cfg)(xa, ya), out)
