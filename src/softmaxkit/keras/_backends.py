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
    def softmax(self, x: Tensor, axis: int) -> Tensor:
        """Softmax of ``x`` along ``axis``, in ``x``'s dtype."""

    @abc.abstractmethod
    def log_softmax(self, x: Tensor, axis: int) -> Tensor:
        """Log-softmax of ``x`` along ``axis``, in ``x``'s dtype."""

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

    def softmax(self, x: Tensor, axis: int) -> Tensor:
        return self.m.softmax(x, axis=axis)

    def log_softmax(self, x: Tensor, axis: int) -> Tensor:
        return self.m.log_softmax(x, axis=axis)

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

    def softmax(self, x: Tensor, axis: int) -> Tensor:
        return self.m.softmax(x, axis=axis)

    def log_softmax(self, x: Tensor, axis: int) -> Tensor:
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

    def softmax(self, x: Tensor, axis: int) -> Tensor:
        return self.m.softmax(x, dim=axis)

    def log_softmax(self, x: Tensor, axis: int) -> Tensor:
        return self.m.log_softmax(x, dim=axis)

    def logsumexp(self, x: Tensor, axis: Any, keepdims: bool) -> Tensor:
        if axis is None:
            axis = tuple(range(x.dim()))
        return self.m.logsumexp(x, dim=axis, keepdim=keepdims)

    def _classes_at_1(self, logits: Tensor, axis: int) -> Tensor:
        if logits.dim() == 1:
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
