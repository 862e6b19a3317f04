"""Eager calls on CPU tensors: the C core on the tensors' NumPy views, without XLA.

An eager call of the custom-call route (:mod:`._native`) runs a compiled
``tf.function`` holding an ``XlaCallModule`` op inside ``tf.custom_gradient``:
about 0.4 ms a call whatever the size, against 0.05-0.09 ms for ``tf.nn.softmax``
on a 32x10 tensor. Eagerly there is nothing to compile, so the same C core
entry points are called here on a view of a CPU tensor's memory (``Tensor._numpy()``,
buffer, no copy); results are written into 64-byte aligned NumPy arrays that
become tensors through DLPack, without a copy (:func:`_done`).

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

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from .. import _ckernels, _outputs
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
_from_dlpack = tf.experimental.dlpack.from_dlpack

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


def _new(shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, bool]:
    """An output array for the core, 64-byte aligned so that :func:`_done` can hand its
    memory to TensorFlow, and whether its pages are new (the core's ``fresh``)."""
    return _outputs.aligned_empty(shape, dtype)


def _done(arr: np.ndarray) -> Tensor:
    """An array from :func:`_new` as a tensor on its memory, without a copy (DLPack).

    The tensor holds the array until it is freed. Creating a tensor costs more than
    the C core's work on small inputs: on the project's 2-core AMD EPYC, for a 32x10
    float32 result, ``tf.convert_to_tensor`` (a copy) about 79 us, an uninitialised
    ``empty`` op about 190 us at any size, DLPack 3 us; at 256x1000 the copy took
    130 us and the ``empty`` op's 1 MB 190 us."""
    return _from_dlpack(arr.__dlpack__())


def _tensor(values: np.ndarray, dtype: np.dtype) -> Tensor:
    """A small computed array (losses, logsumexps) as a tensor of ``dtype``."""
    out, _ = _new(values.shape, dtype)
    np.copyto(out, values, casting="unsafe")
    return _done(out)


def _threads(size: int) -> int:
    return 1 if size < 32768 else int(default_threads())


def softmax(x: Tensor, mask: Tensor | None, *, log: bool, mode: int, t: float) -> Tensor:
    """:func:`._native.softmax` eagerly: softmax / log_softmax over the last axis."""
    a, rows, n, code = _rows(x)
    out, fresh = _new(a.shape, a.dtype)
    _ckernels.softmax(a, out, _mask(mask), rows, n, code, mode, _threads(a.size), t, log, fresh)
    return _done(out)


def logsumexp(x: Tensor, mask: Tensor | None, *, mode: int) -> Tensor:
    """:func:`._native.logsumexp` eagerly: over the last axis, kept as an axis of size 1."""
    a, rows, n, code = _rows(x)
    lse = np.empty(rows, np.float64)
    _ckernels.logsumexp(a, _mask(mask), rows, n, code, mode, _threads(a.size), lse)
    return _tensor(lse.reshape((*a.shape[:-1], 1)), a.dtype)


def logsumexp_grad(x: Tensor, mask: Tensor | None, g: Tensor, *, mode: int) -> Tensor:
    """:func:`._kernels.native_logsumexp_bwd` eagerly: ``g * softmax(x)``, 0 where p is 0."""
    a, rows, n, code = _rows(x)
    p = np.empty_like(a)
    _ckernels.softmax(a, p, _mask(mask), rows, n, code, mode, _threads(a.size), 1.0, False)
    p64 = p.astype(np.float64)
    gx, _ = _new(a.shape, a.dtype)
    np.copyto(gx, np.where(p64 == 0.0, 0.0, p64 * _view(g).astype(np.float64)), casting="unsafe")
    return _done(gx)


def vjp(y: Tensor, g: Tensor, *, log: bool, mode: int) -> Tensor:
    """:func:`._native.vjp` eagerly: the vector-Jacobian product from the output ``y``."""
    a, rows, n, code = _rows(y)
    gv = np.ascontiguousarray(_view(g), dtype=a.dtype)
    out, _ = _new(a.shape, a.dtype)
    _ckernels.vjp(log, a, gv, rows, n, code, mode, _threads(a.size), out)
    return _done(out)


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
    grad = _new((rows, n), a.dtype)[0] if ct is not None else None
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
        return _done(grad.reshape(a.shape))
    if nbad:
        loss[bad] = np.nan
    return _tensor(loss.reshape(a.shape[:-1]), a.dtype)


def sigmoid(x: Tensor, *, log: bool, mode: int) -> Tensor:
    """``sigmoid`` (or ``log_sigmoid``) elementwise: :func:`softmaxkit.sigmoid`'s kernel."""
    a = _view(x)
    out, _ = _new(a.shape, a.dtype)
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
    return _done(out)


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
    gx = _new(a.shape, a.dtype)[0] if grad else None
    out, _ = _new(a.shape, a.dtype)
    # kind 5: kind 3 with each float64 loss rounded once to x's dtype in the core
    _ckernels.sigmoid(
        5, a.reshape(-1), y1, None, p1, n, _CODES[x.dtype], mode, _threads(n), 1.0,
        out.reshape(-1), None if gx is None else gx.reshape(-1),
    )  # fmt: skip
    return _done(out), None if gx is None else _done(gx)
