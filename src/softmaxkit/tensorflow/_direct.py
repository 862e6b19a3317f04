"""Eager calls on CPU tensors: the C core on the tensors' NumPy views, without XLA.

An eager call of the custom-call route (:mod:`._native`) runs a compiled
``tf.function`` holding an ``XlaCallModule`` op inside ``tf.custom_gradient``:
about 0.4 ms a call whatever the size, against 0.05-0.09 ms for ``tf.nn.softmax``
on a 32x10 tensor. Eagerly there is nothing to compile, so the same C core
entry points are called here on a view of a CPU tensor's memory (``Tensor._numpy()``,
buffer, no copy); results are written into a new tensor's memory, or for small
ones copied into a tensor.

- Same engines, same arguments, same steps as the FFI handlers of
  ``_csrc/xla_ffi.c``: the results are bitwise those of the custom-call route,
  subnormals kept (tests/child/tf_suite.py compares the routes).
- No ``tf.custom_gradient`` (by itself about 0.15 ms a call eagerly): when a
  ``GradientTape`` is active, :func:`record` puts the op on it with its backward
  function through the tape's own entry point; when none is, nothing is
  recorded. The backward takes this route too when its cotangent is an eager
  CPU tensor, and the custom calls otherwise.
- The route is taken where the custom-call route would be (:func:`._native.eligible`),
  for eager tensors on the CPU. Graphs, ``tf.function`` and XLA never see it.

Nothing here validates user input: the public functions did, eagerly, before.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.python.ops import gen_array_ops

from .. import _ckernels
from .._dispatch import default_threads

__all__ = [
    "binary_cross_entropy",
    "cross_entropy",
    "logsumexp",
    "logsumexp_grad",
    "record",
    "record_many",
    "recording",
    "sigmoid",
    "softmax",
    "usable",
    "vjp",
]

Tensor = Any

_CODES = {tf.float32: 0, tf.float64: 1}

try:  # the tape's own entry points (TensorFlow >= 2.13)
    from tensorflow.python.eager.record import could_possibly_record as _could_record
    from tensorflow.python.eager.record import record_operation as _record_operation
except ImportError:  # pragma: no cover - older TensorFlow: the custom-call route serves
    _could_record = _record_operation = None


def usable(*tensors: Tensor | None) -> bool:
    """Whether this is an eager call and every tensor given lives in host memory."""
    if _record_operation is None or not tf.executing_eagerly():
        return False
    for t in tensors:
        if t is None:
            continue
        if not isinstance(t, tf.Tensor) or not hasattr(t, "numpy"):
            return False
        if "CPU" not in t.device:
            return False
    return True


def recording() -> bool:
    """Whether a ``GradientTape`` is active, so that a gradient could be asked for."""
    return _could_record is not None and bool(_could_record())


def record(name: str, y: Tensor, x: Tensor, backward: Callable[[Tensor], Tensor]) -> Tensor:
    """``y`` with ``backward`` (``dy -> dx``) recorded on every active tape that watches ``x``.

    The tape's own entry point, as ``tf.custom_gradient`` uses eagerly, without that
    wrapper's argument handling (about 0.14 ms a call). The gradient of an output the
    tape's target does not depend on arrives as None and gives None.
    """
    return record_many(name, y, [x], lambda dy: [backward(dy)])


def record_many(
    name: str, y: Tensor, xs: list[Tensor], backward: Callable[[Tensor], Any]
) -> Tensor:
    """:func:`record` for an op of several inputs: ``backward(dy)`` gives one gradient each."""
    if recording():

        def grads(dy: Tensor | None) -> list[Tensor | None]:
            return [None] * len(xs) if dy is None else list(backward(dy))

        _record_operation("Softmaxkit_" + name, [y], xs, grads)
    return y


def _view(t: Tensor) -> np.ndarray:
    """The tensor's own memory as an array (``Tensor.numpy()`` copies it). Only read."""
    view = getattr(t, "_numpy", None)
    return view() if view is not None else t.numpy()  # pragma: no branch


def _rows(x: Tensor) -> tuple[np.ndarray, int, int, int]:
    a = _view(x)
    n = a.shape[-1]
    return a, a.size // n if n else 0, n, _CODES[x.dtype]


def _mask(mask: Tensor | None) -> np.ndarray | None:
    return None if mask is None else np.ascontiguousarray(_view(mask), dtype=np.bool_)


# Results up to this size are written to NumPy arrays and copied into tensors (a copy
# costs less than creating an uninitialised tensor, about 0.05 ms); larger ones are
# written straight into a new tensor's memory (tf.convert_to_tensor copies at about
# 5 GB/s here: 0.18 ms for 1 MB).
_COPY_MAX = 256 << 10


@functools.lru_cache(maxsize=1)
def _writable_tensors() -> bool:
    """Whether a new uninitialised tensor's memory can be written through its view."""
    try:
        t = gen_array_ops.empty([4], dtype=tf.float32)
        v = t._numpy()
        v[...] = 3.0
    except (AttributeError, ValueError, TypeError):  # pragma: no cover - other TF builds
        return False
    return bool(v.flags.c_contiguous) and float(tf.reduce_sum(t)) == 12.0


def _new(shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, Tensor | None]:
    """An output array and, for a large one, the tensor whose memory it is."""
    if math.prod(shape) * dtype.itemsize <= _COPY_MAX or not _writable_tensors():
        return np.empty(shape, dtype), None
    t = gen_array_ops.empty(list(shape), dtype=tf.as_dtype(dtype))
    return t._numpy(), t


def _done(arr: np.ndarray, t: Tensor | None) -> Tensor:
    return tf.convert_to_tensor(arr) if t is None else t


def _threads(size: int) -> int:
    return 1 if size < 32768 else int(default_threads())


def softmax(x: Tensor, mask: Tensor | None, *, log: bool, mode: int, t: float) -> Tensor:
    """:func:`._native.softmax` eagerly: softmax / log_softmax over the last axis."""
    a, rows, n, code = _rows(x)
    out, res = _new(a.shape, a.dtype)
    _ckernels.softmax(a, out, _mask(mask), rows, n, code, mode, _threads(a.size), t, log)
    return _done(out, res)


def logsumexp(x: Tensor, mask: Tensor | None, *, mode: int) -> Tensor:
    """:func:`._native.logsumexp` eagerly: over the last axis, kept as an axis of size 1."""
    a, rows, n, code = _rows(x)
    lse = np.empty(rows, np.float64)
    _ckernels.logsumexp(a, _mask(mask), rows, n, code, mode, _threads(a.size), lse)
    return tf.convert_to_tensor(lse.astype(a.dtype).reshape((*a.shape[:-1], 1)))


def logsumexp_grad(x: Tensor, mask: Tensor | None, g: Tensor, *, mode: int) -> Tensor:
    """:func:`._kernels.native_logsumexp_bwd` eagerly: ``g * softmax(x)``, 0 where p is 0."""
    a, rows, n, code = _rows(x)
    p = np.empty_like(a)
    _ckernels.softmax(a, p, _mask(mask), rows, n, code, mode, _threads(a.size), 1.0, False)
    p64 = p.astype(np.float64)
    gx, res = _new(a.shape, a.dtype)
    np.copyto(gx, np.where(p64 == 0.0, 0.0, p64 * _view(g).astype(np.float64)), casting="unsafe")
    return _done(gx, res)


def vjp(y: Tensor, g: Tensor, *, log: bool, mode: int) -> Tensor:
    """:func:`._native.vjp` eagerly: the vector-Jacobian product from the output ``y``."""
    a, rows, n, code = _rows(y)
    gv = np.ascontiguousarray(_view(g), dtype=a.dtype)
    out, res = _new(a.shape, a.dtype)
    _ckernels.vjp(log, a, gv, rows, n, code, mode, _threads(a.size), out)
    return _done(out, res)


def cross_entropy(
    x: Tensor, labels: Tensor, mask: Tensor | None, ct: Tensor | None, *, mode: int
) -> Tensor:
    """:func:`._native.cross_entropy` eagerly: per-row losses, or with ``ct`` the gradient.

    A label outside ``[0, C)`` gives a NaN loss and a NaN gradient row, as on the
    custom-call route (eager callers have rejected such labels already).
    """
    a, rows, n, code = _rows(x)
    lab = np.ascontiguousarray(_view(labels), dtype=np.int64).reshape(rows)
    bad = (lab < 0) | (lab >= n)
    nbad = bool(bad.any())
    skip = np.iinfo(np.int64).min  # the handler's sentinel for rows left out
    tt = np.where(bad, skip, lab) if nbad else lab
    w: np.ndarray | None = None
    if ct is not None:
        # the handler reads the cotangent after its cast to the logits' dtype
        w = np.asarray(_view(ct), dtype=a.dtype).astype(np.float64).reshape(rows)
        w = np.where(bad, 0.0, w) if nbad else w
    loss = np.empty(rows, np.float64)
    lse = np.empty(rows, np.float64)
    counted = np.empty(rows, np.uint8)
    grad, res = _new((rows, n), a.dtype) if ct is not None else (None, None)
    _ckernels.cross_entropy(
        a.reshape(rows, n),
        tt,
        w,
        None if mask is None else _mask(mask).reshape(rows, n),  # type: ignore[union-attr]
        rows,
        n,
        code,
        mode,
        _threads(a.size),
        nbad,
        skip,
        0.0,
        1.0,
        loss,
        lse,
        counted,
        grad,
    )
    if grad is not None:
        if nbad:
            grad[bad] = np.nan
        return tf.reshape(_done(grad, res), a.shape)
    if nbad:
        loss[bad] = np.nan
    return tf.convert_to_tensor(loss.astype(a.dtype).reshape(a.shape[:-1]))


def sigmoid(x: Tensor, *, log: bool, mode: int) -> Tensor:
    """``sigmoid`` (or ``log_sigmoid``) elementwise: :func:`softmaxkit.sigmoid`'s kernel."""
    a = _view(x)
    out, res = _new(a.shape, a.dtype)
    flat = out.reshape(-1)  # a view: out is new and contiguous
    _ckernels.sigmoid(
        1 if log else 0,
        a.reshape(-1),
        None,
        None,
        None,
        a.size,
        _CODES[x.dtype],
        mode,
        _threads(a.size),
        1.0,
        flat,
        None,
    )
    return _done(out, res)


def binary_cross_entropy(
    x: Tensor, y: Tensor, pos_weight: Tensor | None, *, mode: int, grad: bool
) -> tuple[Tensor, Tensor | None]:
    """Elementwise BCE with logits and, with ``grad``, its derivative in ``x``, in ``x``'s
    dtype: :func:`softmaxkit.binary_cross_entropy_with_logits`'s kernel
    (``reduction="none"``). ``y`` has ``x``'s shape and dtype; ``pos_weight`` (x's
    dtype) broadcasts to it."""
    a = _view(x)
    n = a.size
    y1 = _view(y).reshape(-1)  # x's dtype: the kernel widens it as it reads (kind 3)
    p1 = None
    if pos_weight is not None:
        p1 = np.ascontiguousarray(
            np.broadcast_to(np.asarray(_view(pos_weight), dtype=np.float64), a.shape)
        ).reshape(-1)
    gx, res = _new(a.shape, a.dtype) if grad else (None, None)
    out, lres = _new(a.shape, a.dtype)
    # kind 5: kind 3 with each float64 loss rounded once to x's dtype in the core
    _ckernels.sigmoid(
        5, a.reshape(-1), y1, None, p1, n, _CODES[x.dtype], mode, _threads(n), 1.0,
        out.reshape(-1), None if gx is None else gx.reshape(-1),
    )  # fmt: skip
    return _done(out, lres), None if gx is None else _done(gx, res)
