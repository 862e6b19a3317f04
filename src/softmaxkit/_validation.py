"""Argument checks shared by the public ops. Every message names the argument and the fix."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import numbers
import operator
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import array_api_compat as _aac

from ._errors import SoftmaxkitTypeError, SoftmaxkitValueError
from ._namespace import (
    default_int,
    device_of,
    dtype_kind,
    dtype_name,
    eager_checks,
    is_concrete,
)

__all__ = [
    "check_axes",
    "check_bool",
    "check_class_axis",
    "check_class_weight",
    "check_ignore_index",
    "check_index_target",
    "check_int",
    "check_int64",
    "check_label_smoothing",
    "check_names",
    "check_nonneg_float",
    "check_prob_target",
    "check_reduction",
    "check_temperature",
    "check_where",
]

Array = Any
REDUCTIONS = ("mean", "sum", "none")


def _as_int(value: object, name: str) -> int:
    if isinstance(value, bool):
        msg = f"`{name}` must be an integer, got a bool"
        raise SoftmaxkitTypeError(msg)
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        msg = f"`{name}` must be an integer, a tuple of integers or None, got {value!r}"
        raise SoftmaxkitTypeError(msg) from None


def check_int(value: object, name: str) -> int:
    """An integer option: Python's and NumPy's integers (and 0-d integer arrays), no bools."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        msg = f"`{name}` must be an integer, got {value!r}"
        raise SoftmaxkitTypeError(msg) from None


def check_axes(axis: object, ndim: int, *, name: str = "axis") -> tuple[int, ...]:
    """Normalise ``axis`` (int, tuple of ints or None) to sorted non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    if isinstance(axis, list):
        msg = f"`{name}` must be an int, a tuple of ints or None, got a list; use a tuple"
        raise SoftmaxkitTypeError(msg)
    if not items:
        msg = f"`{name}=()` selects no axis to normalise over; pass an axis or None for all axes"
        raise SoftmaxkitValueError(msg)
    out = []
    for a in items:
        i = _as_int(a, name)
        if not -ndim <= i < ndim:
            if ndim == 0:
                msg = f"`{name}={i}` is out of range for a 0-d array; use {name}=None"
            else:
                msg = (
                    f"`{name}={i}` is out of range for an array with {ndim} dimension(s); "
                    f"use a value in [{-ndim}, {ndim - 1}]"
                )
            raise SoftmaxkitValueError(msg)
        out.append(i % ndim)
    if len(set(out)) != len(out):
        msg = f"`{name}={axis!r}` repeats an axis; list each axis once"
        raise SoftmaxkitValueError(msg)
    return tuple(sorted(out))


def check_class_axis(axis: object, ndim: int) -> int:
    if ndim == 0:
        msg = "`logits` is 0-d; cross-entropy needs at least a class axis"
        raise SoftmaxkitValueError(msg)
    if axis is None or isinstance(axis, tuple):
        msg = (
            f"`axis` must be a single int (the class axis) here, got {axis!r}; "
            "reshape the classes into one axis first"
        )
        raise SoftmaxkitTypeError(msg)
    return check_axes(axis, ndim)[0]


def check_where(xp: Any, where: object, shape: tuple[int, ...]) -> Array | None:
    """Validate a boolean mask and broadcast it to ``shape``."""
    if where is None:
        return None
    kind = dtype_kind(xp, getattr(where, "dtype", None))
    if kind != "bool":
        msg = (
            f"`where` must be a boolean array (True = include), got dtype "
            f"{getattr(where, 'dtype', type(where).__name__)}; compare with a value to make one"
        )
        raise SoftmaxkitTypeError(msg)
    try:
        return xp.broadcast_to(where, shape)
    except (ValueError, RuntimeError, TypeError) as exc:
        msg = f"`where` has shape {tuple(where.shape)}, which does not broadcast to {shape}"  # type: ignore[attr-defined]
        raise SoftmaxkitValueError(msg) from exc


def check_temperature(temperature: object) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        msg = f"`temperature` must be a positive real number, got {temperature!r}"
        raise SoftmaxkitTypeError(msg)
    t = float(temperature)
    if not (t > 0 and math.isfinite(t)):
        msg = (
            f"`temperature` must be positive and finite, got {t}; "
            "for greedy decisions use softmaxkit.predict (argmax) instead of temperature 0"
        )
        raise SoftmaxkitValueError(msg)
    return t


def check_reduction(reduction: object) -> str:
    if reduction not in REDUCTIONS:
        msg = f"`reduction` must be one of 'mean', 'sum' or 'none', got {reduction!r}"
        raise SoftmaxkitValueError(msg)
    return str(reduction)


def check_label_smoothing(value: object) -> float:
    v = check_nonneg_float(value, "label_smoothing")
    if v > 1.0:
        msg = f"`label_smoothing` must lie in [0, 1], got {v}"
        raise SoftmaxkitValueError(msg)
    return v


def check_nonneg_float(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        msg = f"`{name}` must be a real number, got {value!r}"
        raise SoftmaxkitTypeError(msg)
    v = float(value)
    # comparisons, not math.isfinite: torch.compile traces them for a symbolic float
    # (a smoothing schedule, dynamic=True) where math.isfinite breaks the graph
    if not (v >= 0 and v < math.inf):
        msg = f"`{name}` must be finite and >= 0, got {v}"
        raise SoftmaxkitValueError(msg)
    return v


def check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        msg = f"`{name}` must be True or False, got {value!r}"
        raise SoftmaxkitTypeError(msg)
    return value


def check_names(value: object, name: str, count: int, what: str) -> tuple[str, ...]:
    """Display names: one per item of ``count`` (a string is one name per character)."""
    if isinstance(value, bytes) or not isinstance(value, Iterable):
        msg = f"`{name}` must be a sequence of names, one per {what}, got {type(value).__name__}"
        raise SoftmaxkitTypeError(msg)
    names = tuple(str(s) for s in value)
    if len(names) != count:
        msg = f"`{name}` has {len(names)} names for {count} {what}s; give one name per {what}"
        raise SoftmaxkitValueError(msg)
    return names


def check_ignore_index(value: object) -> int | None:
    if value is None:
        return None
    return check_int64(value, "ignore_index")


def check_int64(value: object, name: str) -> int:
    """An integer that compares with int64 class indices (and fits the C core's)."""
    v = _as_int(value, name)
    if not -(2**63) <= v < 2**63:
        msg = f"`{name}` must fit in a signed 64-bit integer (class indices are int64), got {v}"
        raise SoftmaxkitValueError(msg)
    return v


def _first_bad(xp: Any, bad: Array, values: Array, offset: tuple[int, ...] = ()) -> str:
    """Describe the first offending entry of a concrete array (``offset``: where the
    array starts in a larger one, as a Dask block does)."""
    import numpy as np

    b = np.asarray(_to_numpy(bad))
    v = np.asarray(_to_numpy(values))
    if b.ndim == 0:  # a 0-d array (one target of a 1-d row): no index to name
        return f"{v.item()!r}"
    idx = tuple(int(i[0]) for i in np.nonzero(b))
    if not idx and b.ndim:
        return "?"
    where = tuple(i + o for i, o in zip(idx, offset, strict=False)) + idx[len(offset) :]
    return f"{v[idx].item()!r} at index {where}"  # 5, not np.int64(5)


DataCheck = Callable[[Any, Array, tuple[int, ...]], None]


def checked(xp: Any, a: Array, check: DataCheck) -> Array:
    """Run the data check ``check(xp, a, offset)`` now, or when a lazy array is computed.

    Concrete arrays are checked at once. A Dask array comes back as the same array
    whose blocks run the check as they are computed, so bad values raise the same
    error (its index in the whole array) at ``.compute()`` instead of giving a wrong
    answer. Arrays traced by ``jax.jit`` or ``torch.compile`` have no values to check
    and come back unchanged. ``check`` must be a module-level function or a
    :func:`functools.partial` of one (Dask names the graph's tasks by it).
    """
    if is_concrete(a):
        with eager_checks(xp):
            check(xp, a, ())
        return a
    values = _functorch_values(a)
    if values is not None:
        torch = sys.modules["torch"]
        with torch._C._DisableFuncTorch():  # plain tensors in, plain tensors out
            check(xp, values, ())
        return a
    if _aac.is_dask_array(a):
        lazy: Any = a  # the guard's narrowed type misreads map_blocks' signature
        return lazy.map_blocks(_check_block, check=check, dtype=a.dtype, meta=a._meta)
    return a


def _functorch_values(a: Array) -> Any:
    """Under a ``torch.func`` transform, the plain tensor holding ``a``'s values; else None.

    Under ``grad``, ``vmap`` and the other transforms a tensor is a wrapper that
    cannot steer Python control flow (nor can a tensor from outside the transform
    in operations run inside it), but its values are there: peeled of every
    wrapper, it is a plain tensor (under ``vmap`` with the batch dimension, so a bad
    value in any batch raises, as torch's own kernels do). Not under
    ``torch.compile``, whose tensors have no values.
    """
    if not _aac.is_torch_array(a):
        return None
    torch = sys.modules["torch"]
    if torch.compiler.is_compiling():
        return None
    if not torch._C._are_functorch_transforms_active():
        return None
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(a):  # none: a tensor from outside
        a = functorch.get_unwrapped(a)
    return None if str(a.device) == "meta" else a


def _check_block(block: Any, check: DataCheck, block_info: Any = None) -> Any:
    import array_api_compat.numpy as xnp

    loc = None if block_info is None else block_info.get(0, {}).get("array-location")
    check(xnp, block, tuple(int(lo) for lo, _ in loc) if loc else ())
    return block


def _to_numpy(a: Array) -> Any:
    import numpy as np

    if hasattr(a, "detach"):  # torch
        return a.detach().cpu().numpy()
    if hasattr(a, "_array"):  # array-api-strict
        return np.asarray(a._array)
    return np.asarray(a)


def _any(xp: Any, a: Array) -> bool:
    return bool(xp.any(a))


def _check_integral(xp: Any, target: Array, offset: tuple[int, ...]) -> None:
    if _any(xp, ~xp.isfinite(target)):
        msg = (
            "`target` holds class indices but contains NaN or inf "
            f"({_first_bad(xp, ~xp.isfinite(target), target, offset)}); class indices must be "
            "finite integers"
        )
        raise SoftmaxkitValueError(msg)
    if _any(xp, target != xp.round(target)):
        msg = (
            "`target` holds class indices but has non-integer values "
            f"({_first_bad(xp, target != xp.round(target), target, offset)}); "
            "pass integers, or probabilities with the logits' shape"
        )
        raise SoftmaxkitValueError(msg)


def check_index_target(
    xp: Any,
    target: Array,
    batch_shape: tuple[int, ...],
    n_classes: int,
    ignore_index: int | None,
) -> Array:
    """Validate class-index targets; integral floats are accepted and converted."""
    shape = tuple(target.shape)
    if shape != batch_shape:
        msg = (
            f"`target` holds class indices with shape {shape}, but the logits without "
            f"their class axis have shape {batch_shape}; the shapes must match"
        )
        raise SoftmaxkitValueError(msg)
    kind = dtype_kind(xp, target.dtype)
    if kind == "bool":
        msg = (
            "`target` is boolean; for class indices pass integers, and for binary or "
            "multi-label targets use binary_cross_entropy_with_logits"
        )
        raise SoftmaxkitTypeError(msg)
    if kind not in ("int", "float", "half"):
        msg = f"`target` must hold integer class indices, got dtype {target.dtype}"
        raise SoftmaxkitTypeError(msg)
    check = functools.partial(_check_index_values, n_classes=n_classes, ignore=ignore_index)
    target = checked(xp, target, check)
    if kind != "int":
        target = xp.astype(target, default_int(xp, device_of(target)))
    return target


def _check_index_values(
    xp: Any, target: Array, offset: tuple[int, ...], *, n_classes: int, ignore: int | None
) -> None:
    if dtype_kind(xp, target.dtype) != "int":
        _check_integral(xp, target, offset)
    bad = (target < 0) | (target >= n_classes)
    if ignore is not None:
        bad = bad & (target != ignore)
    if _any(xp, bad):
        ign = "" if ignore is None else f" (or ignore_index={ignore})"
        msg = (
            f"`target` has a class index out of range: {_first_bad(xp, bad, target, offset)}; "
            f"valid indices are 0..{n_classes - 1}{ign}"
        )
        raise SoftmaxkitValueError(msg)


def check_prob_target(
    xp: Any, target: Array, shape: tuple[int, ...], name: str = "target"
) -> Array:
    """Validate probability targets (same shape as the logits, finite, non-negative)."""
    if tuple(target.shape) != shape:
        msg = (
            f"`{name}` holds probabilities with shape {tuple(target.shape)}, but the logits have "
            f"shape {shape}; probability targets must have the logits' shape "
            "(for class indices, pass integers without the class axis)"
        )
        raise SoftmaxkitValueError(msg)
    return checked(xp, target, functools.partial(_check_probabilities, name=name))


def _check_probabilities(xp: Any, target: Array, offset: tuple[int, ...], *, name: str) -> None:
    if bool(xp.all(target >= 0)):  # one pass where all is well (NaN >= 0 is False)
        return
    if _any(xp, xp.isnan(target)):
        msg = f"`{name}` contains NaN ({_first_bad(xp, xp.isnan(target), target, offset)})"
        raise SoftmaxkitValueError(msg)
    if _any(xp, target < 0):
        first = _first_bad(xp, target < 0, target, offset)
        msg = f"`{name}` has a negative probability ({first}); target probabilities must be >= 0"
        raise SoftmaxkitValueError(msg)


def check_class_weight(xp: Any, weight: object, n_classes: int) -> Array | None:
    if weight is None:
        return None
    kind = dtype_kind(xp, getattr(weight, "dtype", None))
    if kind not in ("float", "half", "int"):
        msg = (
            "`weight` must be a real array of per-class weights, "
            f"got dtype {getattr(weight, 'dtype', None)}"
        )
        raise SoftmaxkitTypeError(msg)
    shape = tuple(weight.shape)  # type: ignore[attr-defined]
    if shape != (n_classes,):
        msg = f"`weight` must have shape ({n_classes},), one weight per class, got {shape}"
        raise SoftmaxkitValueError(msg)
    return check_nonneg_array(xp, weight, "weight")


def check_nonneg_array(xp: Any, a: Array, name: str) -> Array:
    """``a``, checked (now, or as a Dask array is computed) to be finite and >= 0
    (finite only inside :func:`signed_weights`)."""
    if _SIGNED_WEIGHTS.get():
        return checked(xp, a, functools.partial(_check_finite, name=name))
    return checked(xp, a, functools.partial(_check_nonneg, name=name))


_SIGNED_WEIGHTS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "softmaxkit_signed_weights", default=False
)


@contextlib.contextmanager
def signed_weights() -> Iterator[None]:
    """Accept negative (finite) weights in the calls made inside, as torch does.

    ``softmaxkit.torch`` follows torch, which takes any finite class or element
    weight; the public ops want them non-negative. The torch layer runs the
    public ops inside this under ``torch.func`` transforms.
    """
    token = _SIGNED_WEIGHTS.set(True)
    try:
        yield
    finally:
        _SIGNED_WEIGHTS.reset(token)


def _check_finite(xp: Any, a: Array, offset: tuple[int, ...], *, name: str) -> None:
    bad = ~xp.isfinite(a)
    if _any(xp, bad):
        msg = (
            f"`{name}` must be finite (negative and zero weights are fine), got "
            f"{_first_bad(xp, bad, a, offset)}"
        )
        raise SoftmaxkitValueError(msg)


def _check_nonneg(xp: Any, a: Array, offset: tuple[int, ...], *, name: str) -> None:
    bad = ~(a >= 0) | ~xp.isfinite(a)
    if _any(xp, bad):
        msg = f"`{name}` must be finite and >= 0, got {_first_bad(xp, bad, a, offset)}"
        raise SoftmaxkitValueError(msg)


def describe_dtype(dtype: Any) -> str:
    return dtype_name(dtype)
