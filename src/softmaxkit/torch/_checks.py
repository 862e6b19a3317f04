"""Argument checks for the torch layer, raising softmaxkit's exception family.

Only metadata (types, shapes, dtypes, devices) is checked here, so the checks
trace under ``torch.compile``; value checks (class index range, negative
probabilities) run inside the operators, on real data.
"""

from __future__ import annotations

import operator

import torch

from .._errors import SoftmaxkitTypeError, SoftmaxkitValueError
from .._validation import check_label_smoothing, check_nonneg_float, check_reduction

__all__ = [
    "check_label_smoothing",
    "check_nonneg_float",
    "check_reduction",
    "class_dim",
    "float_input",
    "index_or_prob_target",
    "int_arg",
    "norm_dim",
    "norm_dims",
    "opt_tensor",
    "tensor_arg",
]

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def tensor_arg(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        msg = f"`{name}` must be a torch.Tensor, got {type(x).__name__}"
        raise SoftmaxkitTypeError(msg)
    if x.layout is not torch.strided:
        msg = (
            f"`{name}` has layout {x.layout}; softmaxkit takes dense tensors: "
            f"pass `{name}.to_dense()`"
        )
        raise SoftmaxkitTypeError(msg)
    if not torch.compiler.is_compiling() and x.is_neg():
        # a negated view (torch._neg_view): its memory holds the negation; traced
        # graphs take no NumPy views, and dynamo cannot trace is_neg()
        return x.resolve_neg()
    return x


def float_input(
    x: object, name: str = "input", *, promote_int: bool, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """A floating tensor: ``dtype`` applied first; integers promoted if allowed."""
    t = tensor_arg(x, name)
    if dtype is not None:
        if dtype is float:  # torch reads the Python type as float64
            dtype = torch.float64
        elif not isinstance(dtype, torch.dtype):
            msg = f"`dtype` must be a torch.dtype such as torch.float64, got {dtype!r}"
            raise SoftmaxkitTypeError(msg)
        if not dtype.is_floating_point:
            msg = f"`dtype` must be a floating dtype, got {dtype}"
            raise SoftmaxkitTypeError(msg)
        t = t.to(dtype)
    if t.is_complex():
        msg = f"`{name}` is complex ({t.dtype}); softmaxkit works on real numbers only"
        raise SoftmaxkitTypeError(msg)
    if not t.is_floating_point():
        if promote_int:
            return t.to(torch.get_default_dtype())
        msg = f"`{name}` must be a floating-point tensor (the logits), got {t.dtype}"
        raise SoftmaxkitTypeError(msg)
    return t


def norm_dim(dim: object, ndim: int, name: str = "dim") -> int:
    if isinstance(dim, bool) or dim is None:
        msg = f"`{name}` must be an int, got {dim!r}"
        raise SoftmaxkitTypeError(msg)
    try:
        d = operator.index(dim)  # type: ignore[arg-type]
    except TypeError:
        msg = f"`{name}` must be an int, got {dim!r}"
        raise SoftmaxkitTypeError(msg) from None
    n = max(ndim, 1)
    if not -n <= d < n:
        msg = (
            f"`{name}={d}` is out of range for a tensor with {ndim} dimension(s); "
            f"use a value in [{-n}, {n - 1}]"
        )
        raise SoftmaxkitValueError(msg)
    return d % n


def norm_dims(dim: object, ndim: int) -> list[int]:
    """``dim`` as an int, tuple or list of ints, normalised and sorted."""
    items = list(dim) if isinstance(dim, (tuple, list)) else [dim]
    if not items:
        msg = "`dim=()` selects no dimension; pass the dimension(s) to reduce"
        raise SoftmaxkitValueError(msg)
    out = [norm_dim(d, ndim) for d in items]
    if len(set(out)) != len(out):
        msg = f"`dim={dim!r}` repeats a dimension; list each dimension once"
        raise SoftmaxkitValueError(msg)
    return sorted(out)


def class_dim(x: torch.Tensor) -> int:
    """PyTorch's class dimension: 0 for a single sample ``(C,)``, else 1."""
    if x.dim() == 0:
        msg = (
            "`input` is 0-d; the loss needs a class dimension: "
            "shape (C,), (N, C) or (N, C, d1, ...)"
        )
        raise SoftmaxkitValueError(msg)
    return 0 if x.dim() == 1 else 1


def _same_device(t: torch.Tensor, x: torch.Tensor, name: str) -> None:
    if t.device != x.device:
        msg = f"`{name}` is on {t.device} but `input` is on {x.device}; move them to one device"
        raise SoftmaxkitValueError(msg)


def opt_tensor(
    t: object, x: torch.Tensor, name: str, shape: tuple[int, ...] | None = None
) -> torch.Tensor | None:
    """An optional real tensor on ``x``'s device, cast to ``x``'s dtype."""
    if t is None:
        return None
    w = tensor_arg(t, name)
    if w.is_complex() or w.dtype == torch.bool:
        msg = f"`{name}` must be a real tensor, got {w.dtype}"
        raise SoftmaxkitTypeError(msg)
    _same_device(w, x, name)
    if shape is not None and tuple(w.shape) != shape:
        msg = f"`{name}` must have shape {shape}, got {tuple(w.shape)}"
        raise SoftmaxkitValueError(msg)
    return w.to(x.dtype)


def index_or_prob_target(
    target: object, x: torch.Tensor, dim: int, *, allow_prob: bool
) -> tuple[torch.Tensor, bool]:
    """Validate a target against logits ``x``: ``(target, is_probability)``."""
    t = tensor_arg(target, "target")
    _same_device(t, x, "target")
    batch = tuple(s for i, s in enumerate(x.shape) if i != dim)
    if t.is_floating_point():
        if not allow_prob:
            msg = f"`target` must hold integer class indices, got {t.dtype}"
            raise SoftmaxkitTypeError(msg)
        if tuple(t.shape) != tuple(x.shape):
            msg = (
                f"`target` holds probabilities (dtype {t.dtype}) with shape {tuple(t.shape)}, "
                f"but probability targets need the input's shape {tuple(x.shape)}; "
                f"for class indices pass an integer tensor of shape {batch}"
            )
            raise SoftmaxkitValueError(msg)
        return t.to(x.dtype), True
    if t.dtype not in _INT_DTYPES:
        msg = (
            f"`target` must be integer class indices of shape {batch}"
            + (" or probabilities with the input's shape" if allow_prob else "")
            + f", got dtype {t.dtype}"
        )
        raise SoftmaxkitTypeError(msg)
    if tuple(t.shape) != batch:
        if dim == 0 and tuple(t.shape) == (1,):
            return t.reshape(()).to(torch.int64), False  # torch takes (1,) for a (C,) input
        msg = (
            f"`target` holds class indices with shape {tuple(t.shape)}, but the input "
            f"{tuple(x.shape)} without its class dimension {dim} has shape {batch}"
        )
        raise SoftmaxkitValueError(msg)
    return t.to(torch.int64), False


def int_arg(value: object, name: str) -> int:
    """An int64 integer (NumPy integers and integer 0-d tensors too, as torch takes them)."""
    if isinstance(value, bool):
        msg = f"`{name}` must be an int, got {value!r}"
        raise SoftmaxkitTypeError(msg)
    try:
        v = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        msg = f"`{name}` must be an int, got {value!r}"
        raise SoftmaxkitTypeError(msg) from None
    if not -(2**63) <= v < 2**63:
        msg = f"`{name}` must fit in a signed 64-bit integer, got {v}"
        raise SoftmaxkitValueError(msg)
    return v
