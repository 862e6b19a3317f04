"""Which softmaxkit front end serves the active Keras backend.

Keras 3 hands losses and layers the native tensors of its backend. This module
maps each op to that backend's softmaxkit path, so TensorFlow users get
:mod:`softmaxkit.tensorflow`, JAX users the core functions on JAX arrays (and the
native JAX kernels where they are built), and PyTorch users
:mod:`softmaxkit.torch`. It holds no numerics of its own and never converts a
tensor to another library's type.
"""

from __future__ import annotations

import abc
import importlib
from typing import Any

import keras

from .._errors import SoftmaxkitTypeError
from .._namespace import is_concrete
from .._validation import check_axes

__all__ = ["Backend", "current", "to_tensor"]

Tensor = Any


def to_tensor(x: object, name: str, dtype: Any = None) -> Tensor:
    """``keras.ops.convert_to_tensor(x, dtype)``, or a softmaxkit error naming ``x``."""
    try:
        return keras.ops.convert_to_tensor(x, dtype=dtype)
    except (TypeError, ValueError, NotImplementedError) as exc:
        msg = f"`{name}` must be a tensor or a nested sequence of numbers, got {type(x).__name__}"
        if dtype is not None:
            msg += f" that converts to {dtype}"
        raise SoftmaxkitTypeError(msg) from exc


class Backend(abc.ABC):
    """The softmax family on one Keras backend (class axis given, per-item losses)."""

    name = ""

    @abc.abstractmethod
    def is_eager(self, t: Tensor) -> bool:
        """Whether ``t`` has values to check now (not traced, compiled or symbolic)."""

    @abc.abstractmethod
    def on_host(self, t: Tensor) -> bool:
        """Whether ``t`` has values now, in host memory: reading one costs no device sync."""

    @abc.abstractmethod
    def softmax(self, x: Tensor, axis: Any) -> Tensor:
        """Softmax of ``x`` over ``axis`` (an int, a tuple of ints or None), in ``x``'s dtype."""

    @abc.abstractmethod
    def log_softmax(self, x: Tensor, axis: Any) -> Tensor:
        """Log-softmax of ``x`` over ``axis`` (as :meth:`softmax`), in ``x``'s dtype."""

    @abc.abstractmethod
    def logsumexp(self, x: Tensor, axis: Any, keepdims: bool) -> Tensor:
        """Logsumexp of ``x`` over ``axis``, keeping reduced axes when ``keepdims``."""

    @abc.abstractmethod
    def sparse_ce(self, labels: Tensor, logits: Tensor, axis: int, eps: float) -> Tensor:
        """Per-item cross-entropy of integer ``labels`` with smoothing ``eps``."""

    @abc.abstractmethod
    def dense_ce(self, labels: Tensor, logits: Tensor, axis: int) -> Tensor:
        """Per-item cross-entropy of probability ``labels``."""

    @abc.abstractmethod
    def bce(self, labels: Tensor, logits: Tensor) -> Tensor:
        """Elementwise binary cross-entropy with logits."""


class _TensorFlow(Backend):
    name = "tensorflow"

    def __init__(self) -> None:
        self.m = importlib.import_module("softmaxkit.tensorflow")
        self.tf = importlib.import_module("tensorflow")

    def is_eager(self, t: Tensor) -> bool:
        return bool(self.tf.executing_eagerly()) and hasattr(t, "numpy")

    def on_host(self, t: Tensor) -> bool:
        return self.is_eager(t) and "CPU" in t.device

    @staticmethod
    def _all(x: Tensor, axis: Any) -> Any:
        # Keras's axis=None is every axis; tf.nn's (softmaxkit.tensorflow's) the last one
        rank = x.shape.rank
        return tuple(range(rank)) if axis is None and rank else axis

    def softmax(self, x: Tensor, axis: Any) -> Tensor:
        return self.m.softmax(x, axis=self._all(x, axis))

    def log_softmax(self, x: Tensor, axis: Any) -> Tensor:
        return self.m.log_softmax(x, axis=self._all(x, axis))

    def logsumexp(self, x: Tensor, axis: Any, keepdims: bool) -> Tensor:
        return self.m.reduce_logsumexp(x, axis=axis, keepdims=keepdims)

    def sparse_ce(self, labels: Tensor, logits: Tensor, axis: int, eps: float) -> Tensor:
        x = keras.ops.moveaxis(logits, axis, -1)
        return self.m.sparse_softmax_cross_entropy_with_logits(labels, x, label_smoothing=eps)

    def dense_ce(self, labels: Tensor, logits: Tensor, axis: int) -> Tensor:
        return self.m.softmax_cross_entropy_with_logits(labels, logits, axis=axis)

    def bce(self, labels: Tensor, logits: Tensor) -> Tensor:
        return self.m.sigmoid_cross_entropy_with_logits(labels, logits)


class _Jax(Backend):
    name = "jax"

    def __init__(self) -> None:
        self.m = importlib.import_module("softmaxkit")
        self.jax = importlib.import_module("jax")

    def is_eager(self, t: Tensor) -> bool:
        return not isinstance(t, self.jax.core.Tracer)

    def on_host(self, t: Tensor) -> bool:
        return self.is_eager(t) and all(d.platform == "cpu" for d in t.devices())

    def softmax(self, x: Tensor, axis: Any) -> Tensor:
        return self.m.softmax(x, axis=axis)

    def log_softmax(self, x: Tensor, axis: Any) -> Tensor:
        return self.m.log_softmax(x, axis=axis)

    def logsumexp(self, x: Tensor, axis: Any, keepdims: bool) -> Tensor:
        return self.m.logsumexp(x, axis=axis, keepdims=keepdims)

    def sparse_ce(self, labels: Tensor, logits: Tensor, axis: int, eps: float) -> Tensor:
        return self.m.cross_entropy(
            logits, labels, axis=axis, label_smoothing=eps, reduction="none"
        )

    def dense_ce(self, labels: Tensor, logits: Tensor, axis: int) -> Tensor:
        return self.m.cross_entropy(logits, labels, axis=axis, reduction="none")

    def bce(self, labels: Tensor, logits: Tensor) -> Tensor:
        return self.m.binary_cross_entropy_with_logits(logits, labels, reduction="none")


class _Torch(Backend):
    name = "torch"

    def __init__(self) -> None:
        self.m = importlib.import_module("softmaxkit.torch")
        self.torch = importlib.import_module("torch")

    def is_eager(self, t: Tensor) -> bool:
        # not under torch.compile or a torch.func transform, not on the meta device
        return not self.torch.compiler.is_compiling() and bool(is_concrete(t))

    def on_host(self, t: Tensor) -> bool:
        return t.device.type == "cpu" and self.is_eager(t)

    def _over(self, fn: Any, x: Tensor, axis: Any) -> Tensor:
        """``fn(x, dim)`` over ``axis``: an int, or (as on the other backends) a tuple of
        ints or None, whose axes are moved last and joined into one for ``fn``."""
        if x.dim() == 0 and not isinstance(axis, tuple):
            return fn(x, dim=-1 if axis is None else axis)  # torch's own 0-d rules
        dims = check_axes(axis, x.dim())  # errors name `axis`, not torch's `dim`
        if len(dims) == 1:
            return fn(x, dim=dims[0])
        rest = [d for d in range(x.dim()) if d not in dims]
        moved = x.permute(*rest, *dims)
        flat = moved.reshape(*moved.shape[: len(rest)], -1)
        out = fn(flat, dim=-1).reshape(moved.shape)
        back = [0] * x.dim()
        for i, d in enumerate((*rest, *dims)):
            back[d] = i
        return out.permute(*back)

    def softmax(self, x: Tensor, axis: Any) -> Tensor:
        return self._over(self.m.softmax, x, axis)

    def log_softmax(self, x: Tensor, axis: Any) -> Tensor:
        return self._over(self.m.log_softmax, x, axis)

    def logsumexp(self, x: Tensor, axis: Any, keepdims: bool) -> Tensor:
        if axis is None:
            axis = tuple(range(x.dim()))
        return self.m.logsumexp(x, dim=axis, keepdim=keepdims)

    def _classes_at_1(self, logits: Tensor, axis: int) -> Tensor:
        if logits.dim() == 1 or axis % logits.dim() == 1:
            return logits
        return keras.ops.moveaxis(logits, axis, 1)

    def sparse_ce(self, labels: Tensor, logits: Tensor, axis: int, eps: float) -> Tensor:
        x = self._classes_at_1(logits, axis)
        return self.m.cross_entropy(
            x, labels, reduction="none", label_smoothing=eps, ignore_index=-(2**62)
        )

    def dense_ce(self, labels: Tensor, logits: Tensor, axis: int) -> Tensor:
        x = self._classes_at_1(logits, axis)
        q = self._classes_at_1(labels, axis)
        return self.m.cross_entropy(x, q, reduction="none")

    def bce(self, labels: Tensor, logits: Tensor) -> Tensor:
        return self.m.binary_cross_entropy_with_logits(logits, labels, reduction="none")


_CACHE: dict[str, Backend] = {}
_KINDS: dict[str, type[_TensorFlow] | type[_Jax] | type[_Torch]] = {
    "tensorflow": _TensorFlow,
    "jax": _Jax,
    "torch": _Torch,
}


def current() -> Backend:
    """The :class:`Backend` of the active Keras backend."""
    name = keras.backend.backend()
    if name not in _CACHE:
        if name not in _KINDS:
            msg = (
                f"softmaxkit.keras supports the tensorflow, jax and torch Keras backends; "
                f"the active backend is {name!r} (set KERAS_BACKEND)"
            )
            raise SoftmaxkitTypeError(msg)
        _CACHE[name] = _KINDS[name]()
    return _CACHE[name]
