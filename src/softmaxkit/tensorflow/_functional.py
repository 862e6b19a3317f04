"""Public TensorFlow ops: ``tf.nn`` names and arguments, the softmaxkit contract.

Each function validates its arguments once (:mod:`._checks`), picks an engine
(:mod:`._engine` for float16/bfloat16/float32 and the fast mode, the
array-agnostic double-word engine on TF operations for accurate float64), and
wraps forward and backward in ``tf.custom_gradient``; eager calls on CPU tensors
go to :mod:`._direct` instead, which runs the C core on the tensors' memory and
records the op on an active tape itself. It must never call NumPy on a tensor's
data outside the eager argument checks and :mod:`._direct`, nor call another
front end.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from .._agnostic import _losses, _normalize, _sigmoid
from .._errors import SoftmaxkitTypeError, SoftmaxkitValueError
from .._namespace import check_precision
from .._validation import check_label_smoothing, check_temperature
from . import _direct, _kernels, _native
from ._checks import (
    as_logits,
    as_tensor,
    axes_of,
    check_dense_labels,
    check_sparse_labels,
    choose,
    mask_for,
    plan_for,
)
from ._xp import narrow

__all__ = [
    "log_sigmoid",
    "log_softmax",
    "reduce_logsumexp",
    "sigmoid",
    "sigmoid_cross_entropy_with_logits",
    "softmax",
    "softmax_cross_entropy_with_logits",
    "sparse_softmax_cross_entropy_with_logits",
    "weighted_cross_entropy_with_logits",
]

Tensor = Any


_EAGER_SCOPE = contextlib.nullcontext()


def _scope(name: object, default: str) -> Any:
    """``tf.name_scope(name or default)``; nothing eagerly, where op names are not kept
    and entering a scope costs about as much as a small op (7 us here)."""
    if name is not None and not isinstance(name, str):
        msg = f"`name` must be a string or None, got {type(name).__name__}"
        raise SoftmaxkitTypeError(msg)
    return _EAGER_SCOPE if tf.executing_eagerly() else tf.name_scope(name or default)


def _default_axis(axis: object) -> object:
    return -1 if axis is None else axis


def _nan_where(bad: Tensor, v: Tensor) -> Tensor:
    return tf.where(bad, tf.fill(tf.shape(v), tf.constant(math.nan, v.dtype)), v)


def _normaliser(
    kind: str,
    logits: object,
    axis: object,
    name: str | None,
    where: object,
    temperature: object,
    precision: object,
) -> Tensor:
    with _scope(name, kind):
        x = as_logits(logits, "logits")
        axes = axes_of(_default_axis(axis), x.shape.rank)
        mask = mask_for(where, x)
        t = check_temperature(temperature)
        engine, work = choose(x, precision)
        if any(x.shape[a] == 0 for a in axes) or x.shape.num_elements() == 0:
            return tf.identity(x)
        out = x.dtype

        opts = {"axes": axes, "t": t, "work": work}
        log = kind == "log_softmax"
        mode = _native.mode_code(check_precision(precision))
        native = _native.eligible(x, axes)
        direct = native and _direct.usable(x, mask)

        def backward(y: Tensor, g: Tensor) -> Tensor:
            # the native product has no temperature, nor log_softmax's masked zeros
            if native and t == 1.0 and (mask is None or not log):
                if direct and _direct.usable(g):
                    return _direct.vjp(y, g, log=log, mode=mode)
                nbwd = _kernels.compiled(_kernels.native_softmax_bwd, log=log, mode=mode)
                return nbwd(y, g)
            if kind == "softmax":
                return _kernels.compiled(_kernels.softmax_bwd, **opts)(y, g)
            return _kernels.compiled(_kernels.log_softmax_bwd, **opts)(y, g, mask)

        if direct:
            y = _direct.softmax(x, mask, log=log, mode=mode, t=t)
            return _direct.record(kind, y, x, lambda g: backward(y, g))

        @tf.custom_gradient
        def op(xi: Tensor) -> Any:
            if native:
                nfwd = _kernels.compiled(_kernels.native_softmax_fwd, log=log, mode=mode, t=t)
                y = nfwd(xi, mask)
            elif engine == "rows":
                fwd = _kernels.softmax_fwd if kind == "softmax" else _kernels.log_softmax_fwd
                y = _kernels.compiled(fwd, **opts)(xi, mask)
            else:
                plan = plan_for(xi, precision)
                fn = _normalize.softmax if kind == "softmax" else _normalize.log_softmax
                y = narrow(fn(xi, axes=axes, where=mask, temperature=t, plan=plan), out)
            return y, lambda g: backward(y, g)

        return op(x)


def softmax(
    logits: Any,
    axis: int | None = None,
    name: str | None = None,
    *,
    where: Any = None,
    temperature: float = 1.0,
    precision: str = "accurate",
) -> Tensor:
    r"""Softmax with ``tf.nn.softmax``'s arguments and softmaxkit's contract.

    .. math::

        \operatorname{softmax}(x)_i = \frac{e^{(x_i - a)/T}}{c + s},\quad
        a = \max_j x_j,\ c = \#\{j: x_j = a\},\ s = \sum_{x_j < a} e^{(x_j - a)/T}

    Parameters
    ----------
    logits : tf.Tensor
        Logits: float16, bfloat16, float32 or float64 (integers are promoted to
        float32, where ``tf.nn.softmax`` raises).
    axis : int, optional
        The axis that sums to one; ``None`` (default) means -1, as in ``tf.nn``.
    name : str, optional
        Name scope of the operations.
    where : bool tf.Tensor, optional
        Entries to include, broadcastable to ``logits``. Excluded entries get 0;
        a row with nothing included is all 0 (``tf.nn.softmax`` gives NaN for an
        all ``-inf`` row).
    temperature : float, optional
        Divides the logits first (positive, finite). Default 1.
    precision : {"accurate", "fast"}, optional
        ``"accurate"`` (default): float16/bfloat16/float32 computed in float64 and
        rounded once, float64 in double-word arithmetic (0.5 ulp + 1 %).
        ``"fast"``: the input precision (at least float32).

    Returns
    -------
    tf.Tensor
        Probabilities, same shape and dtype as ``logits``.

    Notes
    -----
    Works eagerly, in ``tf.function``, under ``jit_compile=True`` and in a
    reloaded SavedModel (custom gradient included). ``+inf`` entries share the
    mass equally (``tf.nn.softmax`` gives NaN); a NaN makes its row NaN (also
    under XLA). On a CPU-only TensorFlow, float32/float64 over the last axis run
    softmaxkit's C kernels as XLA custom calls (bitwise the NumPy results,
    subnormals kept); elsewhere TensorFlow operations compute it, and they flush
    subnormal results to zero.

    Examples
    --------
    >>> import tensorflow as tf
    >>> import softmaxkit.tensorflow as sktf
    >>> sktf.softmax(tf.constant([2.0, 1.0, 0.1])).numpy().round(3)
    array([0.659, 0.242, 0.099], dtype=float32)
    >>> sktf.softmax(tf.constant([-float("inf"), -float("inf")])).numpy()
    array([0., 0.], dtype=float32)
    """
    return _normaliser("softmax", logits, axis, name, where, temperature, precision)


def log_softmax(
    logits: Any,
    axis: int | None = None,
    name: str | None = None,
    *,
    where: Any = None,
    temperature: float = 1.0,
    precision: str = "accurate",
) -> Tensor:
    r"""Log-softmax with ``tf.nn.log_softmax``'s arguments, without its dominant-logit loss.

    .. math::

        \log\operatorname{softmax}(x)_i
        = \frac{x_i - a}{T} - \operatorname{log1p}\bigl((c-1) + s\bigr)

    (notation of :func:`softmax`). Both terms are non-positive, so nothing
    cancels: ``log_softmax([0, -40])[0]`` is ``-4.248e-18``, where
    ``tf.nn.log_softmax`` returns 0 (tensorflow#62400).

    Parameters
    ----------
    logits : tf.Tensor
        Logits (see :func:`softmax`).
    axis : int, optional
        Default ``None`` = -1.
    name : str, optional
        Name scope.
    where : bool tf.Tensor, optional
        Excluded entries and rows with nothing included give ``-inf``.
    temperature : float, optional
        Divides the logits first.
    precision : {"accurate", "fast"}, optional
        See :func:`softmax`.

    Returns
    -------
    tf.Tensor
        Log-probabilities, same shape and dtype as ``logits``.

    Examples
    --------
    >>> import tensorflow as tf
    >>> import softmaxkit.tensorflow as sktf
    >>> float(sktf.log_softmax(tf.constant([0.0, -40.0]))[0])
    -4.24835413113866e-18
    >>> float(tf.nn.log_softmax(tf.constant([0.0, -40.0]))[0])
    0.0
    """
    return _normaliser("log_softmax", logits, axis, name, where, temperature, precision)


def reduce_logsumexp(
    input_tensor: Any,
    axis: int | tuple[int, ...] | None = None,
    keepdims: bool = False,
    name: str | None = None,
    *,
    where: Any = None,
    precision: str = "accurate",
) -> Tensor:
    r"""``log(sum(exp(x)))`` with ``tf.math.reduce_logsumexp``'s arguments.

    .. math::

        \operatorname{logsumexp}(x) = a + \operatorname{log1p}\bigl((c - 1) + s\bigr)

    Parameters
    ----------
    input_tensor : tf.Tensor
        Values (see :func:`softmax` for dtypes).
    axis : int, tuple of ints or None, optional
        Axes to reduce; ``None`` (default) reduces all, as in TF.
    keepdims : bool, optional
        Keep the reduced axes with size 1.
    name : str, optional
        Name scope.
    where : bool tf.Tensor, optional
        Entries to include; nothing included gives ``-inf``.
    precision : {"accurate", "fast"}, optional
        See :func:`softmax`. float16 sums of many terms do not overflow (TF's
        float16 logsumexp of 1e5 zeros is ``inf``).

    Returns
    -------
    tf.Tensor
        The reduced tensor, same dtype as ``input_tensor``.

    Examples
    --------
    >>> import tensorflow as tf
    >>> import softmaxkit.tensorflow as sktf
    >>> float(sktf.reduce_logsumexp(tf.zeros([100000], tf.float16)))
    11.515625
    """
    with _scope(name, "reduce_logsumexp"):
        x = as_logits(input_tensor, "input_tensor")
        axes = axes_of(axis, x.shape.rank)
        if not isinstance(keepdims, bool):
            msg = f"`keepdims` must be True or False, got {keepdims!r}"
            raise SoftmaxkitTypeError(msg)
        mask = mask_for(where, x)
        engine, work = choose(x, precision)
        out = x.dtype
        kept = [1 if i in axes else s for i, s in enumerate(x.shape)]
        if any(x.shape[a] == 0 for a in axes):
            v = tf.fill([s for i, s in enumerate(kept) if keepdims or i not in axes], -math.inf)
            return narrow(v, out)

        native = _native.eligible(x, axes)
        mode = _native.mode_code(check_precision(precision))
        direct = native and _direct.usable(x, mask)

        def squeezed(v: Tensor) -> Tensor:
            y = narrow(v, out)
            return tf.squeeze(y, axis=list(axes)) if not keepdims and axes else y

        def backward(xi: Tensor, v: Tensor, g: Tensor) -> Tensor:
            gk = tf.reshape(tf.cast(g, work), tf.shape(v))
            if direct and _direct.usable(gk):
                return _direct.logsumexp_grad(xi, mask, gk, mode=mode)
            if native:
                bwd = _kernels.compiled(_kernels.native_logsumexp_bwd, mode=mode)
                return bwd(xi, mask, gk)
            if engine == "rows":
                bwd = _kernels.compiled(_kernels.logsumexp_bwd, axes=axes, work=work)
                return bwd(xi, mask, gk)
            p = tf.cast(
                _normalize.softmax(
                    xi, axes=axes, where=mask, temperature=1.0, plan=plan_for(xi, precision)
                ),
                work,
            )
            return narrow(tf.where(tf.equal(p, 0.0), tf.zeros_like(p), p * gk), out)

        if direct:
            v = _direct.logsumexp(x, mask, mode=mode)
            return _direct.record("reduce_logsumexp", squeezed(v), x, lambda g: backward(x, v, g))

        @tf.custom_gradient
        def op(xi: Tensor) -> Any:
            if native:
                v = _kernels.compiled(_kernels.native_logsumexp_fwd, mode=mode)(xi, mask)
            elif engine == "rows":
                v = _kernels.compiled(_kernels.logsumexp_fwd, axes=axes, work=work)(xi, mask)
            else:
                plan = plan_for(xi, precision)
                v = _normalize.logsumexp(
                    xi,
                    axes=axes,
                    b=None,
                    where=mask,
                    keepdims=True,
                    return_sign=False,
                    plan=plan,
                )
            return squeezed(v), lambda g: backward(xi, v, g)

        return op(x)


def sparse_softmax_cross_entropy_with_logits(
    labels: Any,
    logits: Any,
    name: str | None = None,
    *,
    where: Any = None,
    temperature: float = 1.0,
    label_smoothing: float = 0.0,
    precision: str = "accurate",
) -> Tensor:
    r"""Per-item cross-entropy with class-index labels (``tf.nn``'s name and arguments).

    .. math::

        \ell = \operatorname{log1p}\bigl((c - 1) + s\bigr) - \frac{x_t - a}{T}

    a sum of two non-negative terms (notation of :func:`softmax`), so the loss of
    a confident correct prediction keeps its digits (4.248e-18 for logits
    ``[0, -40]`` and label 0, where TF gives 0).

    Parameters
    ----------
    labels : int tf.Tensor
        Class indices, shape ``logits.shape[:-1]``.
    logits : tf.Tensor
        Logits, classes on the last axis.
    name : str, optional
        Name scope.
    where : bool tf.Tensor, optional
        Classes to include (broadcastable to ``logits``); an item with no class
        left has loss 0 and gradient 0.
    temperature : float, optional
        Divides the logits first.
    label_smoothing : float, optional
        ``eps`` in [0, 1]: the target becomes ``(1 - eps) onehot + eps / K`` over
        the ``K`` included classes.
    precision : {"accurate", "fast"}, optional
        See :func:`softmax`.

    Returns
    -------
    tf.Tensor
        Loss per item, shape ``labels.shape``, dtype of ``logits``.

    Raises
    ------
    SoftmaxkitValueError
        Eagerly, for a label outside ``[0, C)``. Inside ``tf.function`` or under
        XLA nothing can raise on data: such an item's loss and gradient are NaN.

    Notes
    -----
    An all ``-inf`` row gives loss 0 and gradient 0 (TF: NaN); ``+inf`` logits
    take their limits. Zero classes give loss 0 (TF raises).

    Examples
    --------
    >>> import tensorflow as tf
    >>> import softmaxkit.tensorflow as sktf
    >>> float(sktf.sparse_softmax_cross_entropy_with_logits(
    ...     tf.constant([0]), tf.constant([[0.0, -40.0]]))[0])
    4.24835413113866e-18
    """
    with _scope(name, "SparseSoftmaxCrossEntropyWithLogits"):
        x = as_logits(logits, "logits")
        if x.shape.rank is None or x.shape.rank < 1:
            msg = "`logits` must have at least one axis (the classes, last)"
            raise SoftmaxkitValueError(msg)
        lab = check_sparse_labels(labels, x)
        axis = x.shape.rank - 1
        mask = mask_for(where, x)
        t = check_temperature(temperature)
        eps = check_label_smoothing(label_smoothing)
        engine, work = choose(x, precision)
        out = x.dtype
        if x.shape.num_elements() == 0:
            # zeros (sums of nothing) that keep the tape's path to x, whose gradient is
            # then empty as tf.nn's, not None
            return tf.reduce_sum(x, axis=-1) * 0

        native = (
            t == 1.0
            and eps == 0.0
            and lab.dtype in (tf.int32, tf.int64)
            and lab.shape.is_fully_defined()
            and _native.eligible(x, (axis,))
        )
        mode = _native.mode_code(check_precision(precision))
        if native and _direct.usable(x, lab, mask):

            def grad_direct(g: Tensor) -> Tensor:
                if _direct.usable(g):
                    return _direct.cross_entropy(x, lab, mask, g, mode=mode)
                bwd = _kernels.compiled(_kernels.native_sparse_bwd, mode=mode)
                return bwd(x, lab, mask, g)

            y = _direct.cross_entropy(x, lab, mask, None, mode=mode)
            return _direct.record("sparse_softmax_cross_entropy_with_logits", y, x, grad_direct)

        @tf.custom_gradient
        def op(xi: Tensor) -> Any:
            if native:
                y = _kernels.compiled(_kernels.native_sparse_fwd, mode=mode)(xi, lab, mask)

                def grad_native(g: Tensor) -> Tensor:
                    bwd = _kernels.compiled(_kernels.native_sparse_bwd, mode=mode)
                    return bwd(xi, lab, mask, g)

                return y, grad_native
            if engine == "rows":
                opts = {"t": t, "work": work, "eps": eps}
                y, *stats = _kernels.compiled(_kernels.sparse_fwd, **opts)(xi, lab, mask)

                def grad(g: Tensor) -> Tensor:
                    bwd = _kernels.compiled(_kernels.sparse_bwd, **opts)
                    return bwd(xi, lab, mask, *stats, g)

                return y, grad
            xs = xi if t == 1.0 else xi / tf.constant(t, xi.dtype)
            C = tf.shape(xi)[-1]
            bad = (lab < 0) | (lab >= tf.cast(C, lab.dtype))
            lsafe = tf.where(bad, tf.zeros_like(lab), lab)
            loss, gx = _losses.cross_entropy(
                xs,
                lsafe,
                axis=axis,
                target_is_index=True,
                weight=None,
                ignore_index=None,
                label_smoothing=eps,
                z_loss=0.0,
                reduction="none",
                where=mask,
                return_grad=True,
                plan=plan_for(xi, precision),
            )
            loss = _nan_where(bad, loss)
            gx = _nan_where(bad[..., None], gx)

            def grad_dd(g: Tensor) -> Tensor:
                gg = gx * narrow(g, out)[..., None]
                return gg if t == 1.0 else gg / tf.constant(t, out)

            return loss, grad_dd

        return op(x)


def softmax_cross_entropy_with_logits(
    labels: Any,
    logits: Any,
    axis: int = -1,
    name: str | None = None,
    *,
    where: Any = None,
    temperature: float = 1.0,
    precision: str = "accurate",
) -> Tensor:
    r"""Per-item cross-entropy with probability labels (``tf.nn``'s name and arguments).

    .. math::

        \ell = \sum_j q_j\,\bigl(\operatorname{log1p}((c - 1) + s) - (x_j - a)/T\bigr)

    with ``0 * log 0 = 0``: a class without target mass adds nothing, even at a
    ``-inf`` logit (TF gives NaN there eagerly).

    Parameters
    ----------
    labels : tf.Tensor
        Probabilities ``q``, shape of ``logits`` (eagerly checked finite and >= 0).
    logits : tf.Tensor
        Logits.
    axis : int, optional
        The class axis, default -1.
    name : str, optional
        Name scope.
    where : bool tf.Tensor, optional
        Classes to include; an item with no class left has loss 0.
    temperature : float, optional
        Divides the logits first.
    precision : {"accurate", "fast"}, optional
        See :func:`softmax`.

    Returns
    -------
    tf.Tensor
        Loss per item (the class axis removed), dtype of ``logits``. Like TF, the
        gradient flows to ``labels`` too (``-log_softmax``).

    Examples
    --------
    >>> import tensorflow as tf
    >>> import softmaxkit.tensorflow as sktf
    >>> inf = float("inf")
    >>> sktf.softmax_cross_entropy_with_logits(
    ...     tf.constant([[1.0, 0.0, 0.0]]), tf.constant([[0.0, -inf, 1.0]])).numpy()
    array([1.3132616], dtype=float32)
    """
    with _scope(name, "softmax_cross_entropy_with_logits"):
        x = as_logits(logits, "logits")
        if isinstance(axis, (tuple, list)):
            msg = f"`axis` must be a single int (the class axis), got {axis!r}"
            raise SoftmaxkitTypeError(msg)
        (ax,) = axes_of(_default_axis(axis), x.shape.rank)
        q = check_dense_labels(labels, x)
        mask = mask_for(where, x)
        t = check_temperature(temperature)
        engine, work = choose(x, precision)
        out = x.dtype
        if x.shape.num_elements() == 0:  # as in the sparse loss, with labels on the path
            return tf.reduce_sum(x + q, axis=ax) * 0

        @tf.custom_gradient
        def op(qi: Tensor, xi: Tensor) -> Any:
            if engine == "rows":
                opts = {"axis": ax, "t": t, "work": work}
                y, *stats = _kernels.compiled(_kernels.dense_fwd, **opts)(qi, xi, mask)

                def grad(g: Tensor) -> tuple[Tensor, Tensor]:
                    bwd = _kernels.compiled(_kernels.dense_bwd, **opts)
                    return bwd(qi, xi, mask, *stats, g)

                return y, grad
            xs = xi if t == 1.0 else xi / tf.constant(t, xi.dtype)
            plan = plan_for(xi, precision)
            loss, gx = _losses.cross_entropy(
                xs,
                qi,
                axis=ax,
                target_is_index=False,
                weight=None,
                ignore_index=None,
                label_smoothing=0.0,
                z_loss=0.0,
                reduction="none",
                where=mask,
                return_grad=True,
                plan=plan,
            )
            if mask is not None:
                gx = tf.where(mask, gx, tf.zeros_like(gx))

            def grad_dd(g: Tensor) -> tuple[Tensor, Tensor]:
                gw = tf.expand_dims(narrow(g, out), ax)
                gg = gx * gw
                if t != 1.0:
                    gg = gg / tf.constant(t, out)
                nls = -_normalize.log_softmax(
                    xs, axes=(ax,), where=mask, temperature=1.0, plan=plan
                )
                row_empty = tf.reduce_all(tf.equal(nls, math.inf), axis=ax, keepdims=True)
                gq = tf.where(row_empty, tf.zeros_like(nls), nls) * gw
                return gq, gg

            return loss, grad_dd

        return op(q, x)


# ----------------------------------------------------------------- sigmoid family


def _elementwise_input(x: object, name: str) -> Tensor:
    return as_logits(x, name)


def _elementwise_direct(x: Tensor, *others: Tensor | None) -> bool:
    """Whether an elementwise op takes the eager route into the C core (:mod:`._direct`):
    float32/float64 eager CPU tensors, where the custom calls are available."""
    return (
        x.dtype in (tf.float32, tf.float64)
        and x.shape.num_elements() is not None
        and x.shape.num_elements() > 0
        and _native.available()
        and _direct.usable(x, *others)
    )


def sigmoid(x: Any, name: str | None = None, *, precision: str = "accurate") -> Tensor:
    r"""Logistic sigmoid ``1 / (1 + exp(-x))``, rounded once (``tf.math.sigmoid``'s arguments).

    Parameters
    ----------
    x : tf.Tensor
        Logits (see :func:`softmax` for dtypes).
    name : str, optional
        Name scope.
    precision : {"accurate", "fast"}, optional
        See :func:`softmax`.

    Returns
    -------
    tf.Tensor
        Same shape and dtype as ``x``.

    Examples
    --------
    >>> import tensorflow as tf
    >>> import softmaxkit.tensorflow as sktf
    >>> sktf.sigmoid(tf.constant([0.0, 2.0])).numpy()
    array([0.5      , 0.8807971], dtype=float32)
    """
    with _scope(name, "Sigmoid"):
        return _sigmoid_op(x, precision, log=False)


def _sigmoid_op(x: object, precision: object, *, log: bool) -> Tensor:
    """sigmoid or log_sigmoid with its gradient ``sigmoid(x) sigmoid(-x)`` or ``sigmoid(-x)``."""
    xt = _elementwise_input(x, "x")
    plan = plan_for(xt, precision)

    def grad(g: Tensor) -> Tensor:
        sp, sn = _sigmoid._sigmoid_pair(plan, tf.cast(xt, plan.work))
        d = sn if log else sp * sn
        return narrow(d * tf.cast(g, plan.work), xt.dtype)

    if _elementwise_direct(xt):
        y = _direct.sigmoid(xt, log=log, mode=_native.mode_code(check_precision(precision)))
        return _direct.record("log_sigmoid" if log else "sigmoid", y, xt, grad)

    @tf.custom_gradient
    def op(xi: Tensor) -> Any:
        fn = _sigmoid.log_sigmoid if log else _sigmoid.sigmoid
        return narrow(fn(xi, plan=plan), xt.dtype), grad

    return op(xt)


def log_sigmoid(x: Any, name: str | None = None, *, precision: str = "accurate") -> Tensor:
    r"""``log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|))`` (``tf.math.log_sigmoid``'s arguments).

    Parameters
    ----------
    x : tf.Tensor
        Logits.
    name : str, optional
        Name scope.
    precision : {"accurate", "fast"}, optional
        See :func:`softmax`.

    Returns
    -------
    tf.Tensor
        Same shape and dtype as ``x``.

    Examples
    --------
    >>> import tensorflow as tf
    >>> import softmaxkit.tensorflow as sktf
    >>> float(sktf.log_sigmoid(tf.constant([40.0]))[0])
    -4.24835413113866e-18
    """
    with _scope(name, "LogSigmoid"):
        return _sigmoid_op(x, precision, log=True)


def _softplus(x: Tensor) -> Tensor:
    """``max(x, 0) + log1p(exp(-|x|))`` (``+inf`` at ``+inf``, 0 at ``-inf``)."""
    fin = tf.math.is_finite(x)
    xs = tf.where(fin, x, tf.zeros_like(x))
    v = tf.maximum(xs, 0.0) + tf.math.log1p(tf.exp(-tf.abs(xs)))
    return tf.where(fin, v, tf.where(x > 0, x, tf.zeros_like(x)))


def _unbroadcast(g: Tensor, shape: Tensor) -> Tensor:
    """Sum ``g`` down to ``shape`` (the gradient of a broadcast)."""
    _, axes = tf.raw_ops.BroadcastGradientArgs(s0=tf.shape(g), s1=shape)
    return tf.reshape(tf.reduce_sum(g, axis=axes), shape)


def _pos_weight(pos_weight: object, x: Tensor) -> Tensor:
    """``pos_weight`` as a tensor of the logits' dtype that broadcasts to their shape."""
    pw = as_tensor(pos_weight, "pos_weight")
    if not (pw.dtype.is_floating or pw.dtype.is_integer or pw.dtype == tf.bool):
        msg = f"`pos_weight` must be a real number or tensor, got dtype {pw.dtype.name}"
        raise SoftmaxkitTypeError(msg)
    ws, xs = pw.shape, x.shape
    ok = ws.rank is None or xs.rank is None or ws.rank <= xs.rank
    if ok and ws.is_fully_defined() and xs.is_fully_defined():
        try:
            ok = np.broadcast_shapes(tuple(ws), tuple(xs)) == tuple(xs)
        except ValueError:
            ok = False
    if not ok:
        msg = (
            f"`pos_weight` has shape {tuple(ws)}, which does not broadcast to the logits' "
            f"shape {tuple(xs)}"
        )
        raise SoftmaxkitValueError(msg)
    return narrow(pw, x.dtype)


def _bce(labels: Any, logits: Any, pos_weight: Any, name: str, precision: object) -> Tensor:
    with _scope(name, name):
        x = as_logits(logits, "logits")
        y = as_tensor(labels, "labels")
        if not (y.dtype.is_floating or y.dtype.is_integer or y.dtype == tf.bool):
            msg = f"`labels` must be a real tensor, got dtype {y.dtype.name}"
            raise SoftmaxkitTypeError(msg)
        y = narrow(y, x.dtype)
        if not y.shape.is_compatible_with(x.shape):
            msg = f"`labels` has shape {tuple(y.shape)}; it must match the logits' {tuple(x.shape)}"
            raise SoftmaxkitValueError(msg)
        plan = plan_for(x, precision)
        out = x.dtype
        pw = None if pos_weight is None else _pos_weight(pos_weight, x)

        def backward(
            yi: Tensor, xi: Tensor, pwi: Tensor | None, gx: Tensor
        ) -> Callable[[Tensor], tuple[Tensor, ...]]:
            def grads(g: Tensor) -> tuple[Tensor, ...]:
                gw = tf.cast(g, plan.work)
                xw = tf.cast(xi, plan.work)
                spn = _softplus(-xw)
                pww = None if pwi is None else tf.cast(pwi, plan.work)
                gy = (spn if pww is None else pww * spn) - _softplus(xw)
                res = [narrow(gy * gw, out), narrow(tf.cast(gx, plan.work) * gw, out)]
                if pwi is not None:
                    gp = tf.cast(yi, plan.work) * spn * gw
                    res.append(narrow(_unbroadcast(gp, tf.shape(pwi)), out))
                return tuple(res)

            return grads

        if _elementwise_direct(x, y, pw) and y.shape == x.shape:
            mode = _native.mode_code(check_precision(precision))
            rec = _direct.recording()
            loss, gx = _direct.binary_cross_entropy(x, y, pw, mode=mode, grad=rec)
            if gx is None:
                return loss
            ins = [y, x] if pw is None else [y, x, pw]
            return _direct.record_many("logistic_loss", loss, ins, backward(y, x, pw, gx))

        def compute(yi: Tensor, xi: Tensor, pwi: Tensor | None) -> Any:
            loss, gx = _sigmoid.binary_cross_entropy_with_logits(
                xi,
                yi,
                weight=None,
                pos_weight=pwi,
                reduction="none",
                return_grad=True,
                plan=plan,
            )
            return narrow(loss, out), backward(yi, xi, pwi, gx)

        if pw is None:

            @tf.custom_gradient
            def op2(yi: Tensor, xi: Tensor) -> Any:
                return compute(yi, xi, None)

            return op2(y, x)

        @tf.custom_gradient
        def op3(yi: Tensor, xi: Tensor, pwi: Tensor) -> Any:
            return compute(yi, xi, pwi)

        return op3(y, x, pw)


def sigmoid_cross_entropy_with_logits(
    labels: Any, logits: Any, name: str | None = None, *, precision: str = "accurate"
) -> Tensor:
    r"""Elementwise binary cross-entropy with logits (``tf.nn``'s name and arguments).

    .. math::

        \ell = y\,\operatorname{softplus}(-x) + (1 - y)\operatorname{softplus}(x)

    a sum of non-negative terms (for ``0 <= y <= 1``), each rounded once; infinite
    logits take their limits (TF gives NaN at ``(x, y) = (+inf, 1)`` and
    ``(-inf, 0)``, tensorflow#75256).

    Parameters
    ----------
    labels : tf.Tensor
        Targets, shape of ``logits``.
    logits : tf.Tensor
        Logits.
    name : str, optional
        Name scope.
    precision : {"accurate", "fast"}, optional
        See :func:`softmax`.

    Returns
    -------
    tf.Tensor
        Elementwise loss, dtype of ``logits``.

    Examples
    --------
    >>> import tensorflow as tf
    >>> import softmaxkit.tensorflow as sktf
    >>> inf = float("inf")
    >>> sktf.sigmoid_cross_entropy_with_logits(
    ...     tf.constant([1.0, 0.0]), tf.constant([inf, -inf])).numpy()
    array([0., 0.], dtype=float32)
    """
    return _bce(labels, logits, None, name or "logistic_loss", precision)


def weighted_cross_entropy_with_logits(
    labels: Any,
    logits: Any,
    pos_weight: Any,
    name: str | None = None,
    *,
    precision: str = "accurate",
) -> Tensor:
    r"""Binary cross-entropy with a weight on the positive term (``tf.nn``'s arguments).

    .. math::

        \ell = w\,y\,\operatorname{softplus}(-x) + (1 - y)\operatorname{softplus}(x)

    Parameters
    ----------
    labels : tf.Tensor
        Targets, shape of ``logits``.
    logits : tf.Tensor
        Logits.
    pos_weight : float or tf.Tensor
        Weight ``w`` of the positive term, broadcastable to ``logits``.
    name : str, optional
        Name scope.
    precision : {"accurate", "fast"}, optional
        See :func:`softmax`.

    Returns
    -------
    tf.Tensor
        Elementwise loss, dtype of ``logits``.

    Examples
    --------
    >>> import tensorflow as tf
    >>> import softmaxkit.tensorflow as sktf
    >>> float(sktf.weighted_cross_entropy_with_logits(
    ...     tf.constant([0.0]), tf.constant([-40.0]), 2.0)[0])
    4.24835413113866e-18
    """
    return _bce(labels, logits, pos_weight, name or "logistic_loss", precision)
