"""Argument validation of softmaxkit.tensorflow: once per call, before any engine runs.

Static facts (dtypes, ranks, known sizes, options) are checked in every mode and
raise softmaxkit errors. Data-dependent facts (label range, negative
probabilities) can be checked only on eager tensors; inside a ``tf.function``
or under XLA nothing can raise on data, and the engines make the offending items
NaN instead. Nothing here computes a result or modifies an argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from .._errors import SoftmaxkitTypeError, SoftmaxkitValueError
from .._namespace import Plan, check_precision
from .._validation import check_axes
from ._xp import TFNamespace

__all__ = [
    "FLOATS",
    "as_logits",
    "as_tensor",
    "axes_of",
    "check_dense_labels",
    "check_sparse_labels",
    "choose",
    "mask_for",
    "plan_for",
]

Tensor = Any

FLOATS = (tf.float16, tf.bfloat16, tf.float32, tf.float64)


def as_tensor(x: object, name: str) -> Tensor:
    """``x`` as a dense tensor (``tf.convert_to_tensor``), or a softmaxkit error naming it."""
    if isinstance(x, tf.Tensor):  # as it is (convert_to_tensor would return it, in 5 us)
        return x
    if isinstance(x, tf.Variable):
        return tf.convert_to_tensor(x)
    try:
        return tf.convert_to_tensor(x)
    except (TypeError, ValueError) as exc:
        kind = type(x).__name__
        msg = f"`{name}` must be a tensor or a nested sequence of numbers, got {kind}"
        if isinstance(x, (tf.RaggedTensor, tf.SparseTensor)):
            msg += " (ragged and sparse tensors are not supported: pass x.to_tensor() or use "
            msg += "tf.sparse.to_dense(x), with a `where` mask for the missing entries)"
        raise SoftmaxkitTypeError(msg) from exc


def as_logits(x: object, name: str) -> Tensor:
    """``x`` as a float tensor: floats kept, integers and bools promoted to float32."""
    t = as_tensor(x, name)
    if t.dtype in FLOATS:
        return t
    if t.dtype.is_integer or t.dtype == tf.bool:
        return tf.cast(t, tf.float32)
    msg = (
        f"`{name}` has dtype {t.dtype.name}; softmaxkit.tensorflow works on real "
        "float16, bfloat16, float32 or float64 tensors (integers are promoted to float32)"
    )
    raise SoftmaxkitTypeError(msg)


def axes_of(axis: object, ndim: int | None, name: str = "axis") -> tuple[int, ...]:
    """Normalise ``axis`` against a known rank (sorted, non-negative)."""
    if ndim is None:
        msg = (
            "softmaxkit.tensorflow needs tensors of known rank; "
            "give tf.function an input_signature with a rank"
        )
        raise SoftmaxkitValueError(msg)
    if isinstance(axis, list):  # TensorFlow's reductions take lists of axes
        axis = tuple(axis)
    return check_axes(axis, ndim, name=name)


def choose(x: Tensor, precision: object) -> tuple[str, Any]:
    """Pick the engine: ``("rows", work dtype)`` or ``("dd", float64)`` (accurate float64)."""
    prec = check_precision(precision)
    if prec == "fast":
        return "rows", tf.float64 if x.dtype == tf.float64 else tf.float32
    if x.dtype == tf.float64:
        return "dd", tf.float64
    return "rows", tf.float64


def plan_for(x: Tensor, precision: object) -> Plan:
    """An array-agnostic plan on TF operations (double-word float64 when accurate)."""
    prec = check_precision(precision)
    if prec == "fast":
        work = tf.float64 if x.dtype == tf.float64 else tf.float32
        return Plan(TFNamespace(work), work, x.dtype, "plain", None)
    if x.dtype == tf.float64:
        return Plan(TFNamespace(tf.float64), tf.float64, tf.float64, "dd", None)
    return Plan(TFNamespace(tf.float64), tf.float64, x.dtype, "wide", None)


def mask_for(where: object, x: Tensor) -> Tensor | None:
    """Validate ``where`` and broadcast it to the shape of ``x``."""
    if where is None:
        return None
    w = as_tensor(where, "where")
    if w.dtype != tf.bool:
        msg = (
            f"`where` must be a boolean tensor (True = include), got dtype {w.dtype.name}; "
            "compare with a value to make one"
        )
        raise SoftmaxkitTypeError(msg)
    try:
        tf.broadcast_static_shape(w.shape, x.shape)
        if w.shape.rank is not None and x.shape.rank is not None and w.shape.rank > x.shape.rank:
            raise ValueError
        full = w.shape.is_fully_defined() and x.shape.is_fully_defined()
        if full and np.broadcast_shapes(tuple(w.shape), tuple(x.shape)) != tuple(x.shape):
            raise ValueError
    except ValueError as exc:
        msg = (
            f"`where` has shape {tuple(w.shape)}, which does not broadcast to the "
            f"logits' {tuple(x.shape)}"
        )
        raise SoftmaxkitValueError(msg) from exc
    if x.shape.is_fully_defined():
        return tf.broadcast_to(w, x.shape)
    out = tf.broadcast_to(w, tf.shape(x))
    out.set_shape(x.shape)
    return out


def _eager(t: Tensor) -> bool:
    return bool(tf.executing_eagerly()) and hasattr(t, "numpy")


def check_sparse_labels(labels: object, logits: Tensor) -> Tensor:
    """Integer labels of shape ``logits.shape[:-1]``; eagerly, each in ``[0, C)``."""
    lab = as_tensor(labels, "labels")
    if not lab.dtype.is_integer:
        msg = (
            f"`labels` must be an integer tensor of class indices, got dtype {lab.dtype.name}; "
            "use tf.cast(labels, tf.int64), or softmax_cross_entropy_with_logits for probabilities"
        )
        raise SoftmaxkitTypeError(msg)
    want = logits.shape[:-1]
    if lab.shape.rank is None and logits.shape.rank is not None:
        # a graph tensor of unknown rank: the engines index it by its rank, so give it
        # the logits' batch shape (a tensor of another shape fails as the graph runs)
        lab = tf.ensure_shape(lab, want)
    known = lab.shape.rank is not None and logits.shape.rank is not None
    if known and (
        lab.shape.rank != logits.shape.rank - 1 or not lab.shape.is_compatible_with(want)
    ):
        msg = (
            f"`labels` has shape {tuple(lab.shape)}; it must be the logits' shape without "
            f"the class axis, {tuple(want)} (squeeze a trailing axis of size 1)"
        )
        raise SoftmaxkitValueError(msg)
    if _eager(lab) and logits.shape[-1] is not None:
        n_cls = int(logits.shape[-1])
        view = getattr(lab, "_numpy", None)  # the tensor's memory; numpy() copies it
        a = view() if view is not None else lab.numpy()
        if a.size and (a.min() < 0 or a.max() >= n_cls):
            bad = (a < 0) | (a >= n_cls)
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            msg = (
                f"`labels` must lie in [0, {n_cls}) for {n_cls} classes; labels{list(idx)} is "
                f"{a[idx]} (in a tf.function or under XLA such an item's loss is NaN)"
            )
            raise SoftmaxkitValueError(msg)
    return lab


def check_dense_labels(labels: object, logits: Tensor) -> Tensor:
    """Probability labels of the logits' shape, cast to their dtype; eagerly finite and >= 0."""
    lab = as_tensor(labels, "labels")
    if not (lab.dtype.is_floating or lab.dtype.is_integer or lab.dtype == tf.bool):
        msg = f"`labels` must be a real tensor of probabilities, got dtype {lab.dtype.name}"
        raise SoftmaxkitTypeError(msg)
    lab = tf.cast(lab, logits.dtype)
    if not lab.shape.is_compatible_with(logits.shape):
        msg = (
            f"`labels` has shape {tuple(lab.shape)}; it must have the logits' shape "
            f"{tuple(logits.shape)} (one probability per class)"
        )
        raise SoftmaxkitValueError(msg)
    if _eager(lab):
        a = lab.numpy().astype(np.float64)
        bad = ~np.isfinite(a) | (a < 0)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            msg = (
                f"`labels` must be finite and non-negative probabilities; labels{list(idx)} "
                f"is {a[idx]}"
            )
            raise SoftmaxkitValueError(msg)
    return lab
