"""A minimal Array-API-style namespace made of TensorFlow operations.

It exists so that the array-agnostic engines (:mod:`softmaxkit._agnostic`) run on
``tf.Tensor`` values unchanged: every function here is one or two TF ops, so the
engines trace into ``tf.function`` graphs, compile under XLA
(``jit_compile=True``) and serialise into SavedModels. It offers only what those
engines call; it must never call NumPy on a tensor, run Python code on data, or
hold state beyond the dtype it was built for.
"""

from __future__ import annotations

import builtins
from typing import Any

import ml_dtypes
import numpy as np
import tensorflow as tf

__all__ = ["TFNamespace", "narrow"]

Tensor = Any

_HALF = (tf.float16, tf.bfloat16)


def narrow(v: Tensor, dtype: Any) -> Tensor:
    """``v`` cast to ``dtype``, rounded once.

    TensorFlow casts float64 to float16 and bfloat16 through float32, eagerly and
    under XLA: two roundings, which move a value just off a half-precision midpoint
    onto it and then to even (``1 + 2**-11 + 2**-40`` gives 1.0 instead of
    ``1 + 2**-10``). The float32 step is rounded to odd instead (an inexact result
    with an even last bit moves one ulp toward ``v``): with 13 or more bits beyond a
    half-precision mantissa, the second rounding then gives the correctly rounded
    result. Other casts are TensorFlow's own.
    """
    dtype = tf.as_dtype(dtype)
    if v.dtype != tf.float64 or dtype not in _HALF:
        return v if v.dtype == dtype else tf.cast(v, dtype)
    f = tf.cast(v, tf.float32)
    back = tf.cast(f, tf.float64)
    bits = tf.bitcast(f, tf.int32)
    # NaN and the overflow to inf keep their cast; 0 from an underflow moves to the
    # smallest subnormal of the sign, which any half precision rounds back to 0
    inexact = tf.not_equal(back, v) & tf.math.is_finite(f)
    even = tf.equal(tf.bitwise.bitwise_and(bits, 1), 0)
    step = tf.where(tf.abs(v) > tf.abs(back), 1, -1)  # the magnitude's next float32
    f = tf.bitcast(tf.where(inexact & even, bits + step, bits), tf.float32)
    return tf.cast(f, dtype)


def _axes(axis: Any) -> Any:
    if axis is None:
        return None
    if isinstance(axis, tuple):
        return list(axis)
    return axis


class TFNamespace:
    """The subset of the Array API the softmaxkit engines use, on TF tensors.

    ``default`` is the float dtype given to Python scalars that meet no tensor
    (the working dtype of the computation).
    """

    __name__ = "softmaxkit.tensorflow._xp"

    bool = tf.bool
    int32 = tf.int32
    int64 = tf.int64
    float16 = tf.float16
    bfloat16 = tf.bfloat16
    float32 = tf.float32
    float64 = tf.float64

    def __init__(self, default: Any = tf.float64) -> None:
        self.default = default

    def __repr__(self) -> str:
        return f"TFNamespace(default={self.default.name})"

    # -- creation and dtypes -------------------------------------------------------
    def asarray(
        self, value: Any, dtype: Any = None, device: Any = None, copy: Any = None
    ) -> Tensor:
        if isinstance(value, tf.Tensor):
            return value if dtype is None else tf.cast(value, dtype)
        return tf.constant(value, dtype=dtype or self.default)

    def astype(self, x: Tensor, dtype: Any, copy: Any = None) -> Tensor:
        return narrow(x, dtype)

    def finfo(self, dtype: Any) -> Any:
        name = tf.as_dtype(dtype).name
        if name == "bfloat16":
            return ml_dtypes.finfo(ml_dtypes.bfloat16)
        return np.finfo(np.dtype(name))

    def full(self, shape: Any, value: Any, dtype: Any = None, device: Any = None) -> Tensor:
        return tf.fill(shape, tf.constant(value, dtype=dtype or self.default))

    def full_like(self, x: Tensor, value: Any, dtype: Any = None) -> Tensor:
        return tf.fill(tf.shape(x), tf.constant(value, dtype=dtype or x.dtype))

    def zeros(self, shape: Any, dtype: Any = None, device: Any = None) -> Tensor:
        return tf.zeros(shape, dtype=dtype or self.default)

    def ones(self, shape: Any, dtype: Any = None, device: Any = None) -> Tensor:
        return tf.ones(shape, dtype=dtype or self.default)

    def zeros_like(self, x: Tensor, dtype: Any = None) -> Tensor:
        return tf.zeros_like(x, dtype=dtype)

    def ones_like(self, x: Tensor, dtype: Any = None) -> Tensor:
        return tf.ones_like(x, dtype=dtype)

    def arange(self, n: Any, dtype: Any = None, device: Any = None) -> Tensor:
        return tf.range(n, dtype=dtype or tf.int32)

    # -- shapes ----------------------------------------------------------------------
    def size_along(self, x: Tensor, axis: int) -> Tensor:
        """The size of ``axis`` as a tensor: known only at run time in a traced graph
        whose signature leaves it out (not in the Array API)."""
        return tf.shape(x)[axis]

    def reshape(self, x: Tensor, shape: Any) -> Tensor:
        return tf.reshape(x, shape)

    def squeeze(self, x: Tensor, axis: Any) -> Tensor:
        return tf.squeeze(x, axis=_axes(axis))

    def expand_dims(self, x: Tensor, axis: int = 0) -> Tensor:
        return tf.expand_dims(x, axis)

    def broadcast_to(self, x: Tensor, shape: Any) -> Tensor:
        if isinstance(shape, tf.TensorShape) and not shape.is_fully_defined():
            # a traced shape with unknown sizes: the front end broadcasts masks to the
            # logits' dynamic shape before calling an engine, so ``x`` already fits
            if x.shape.rank == shape.rank and x.shape.is_compatible_with(shape):
                return x
            msg = f"cannot broadcast {x.shape} to the partly unknown shape {shape}"
            raise ValueError(msg)
        return tf.broadcast_to(x, shape)

    def broadcast_arrays(self, *arrays: Tensor) -> list[Tensor]:
        static = [a.shape for a in arrays]
        if all(s.is_fully_defined() for s in static):
            target = np.broadcast_shapes(*(tuple(s.as_list()) for s in static))
            return [tf.broadcast_to(a, target) for a in arrays]
        shape = tf.shape(arrays[0])
        for a in arrays[1:]:
            shape = tf.broadcast_dynamic_shape(shape, tf.shape(a))
        return [tf.broadcast_to(a, shape) for a in arrays]

    def take(self, x: Tensor, idx: Tensor, axis: int = 0) -> Tensor:
        return tf.gather(x, idx, axis=axis)

    # -- elementwise -----------------------------------------------------------------
    def where(self, cond: Tensor, a: Any, b: Any) -> Tensor:
        ta = isinstance(a, (tf.Tensor, tf.Variable))
        tb = isinstance(b, (tf.Tensor, tf.Variable))
        if ta and not tb:
            b = tf.constant(b, dtype=a.dtype)
        elif tb and not ta:
            a = tf.constant(a, dtype=b.dtype)
        elif not ta and not tb:
            a = tf.constant(a, dtype=self.default)
            b = tf.constant(b, dtype=self.default)
        return tf.where(cond, a, b)

    def abs(self, x: Tensor) -> Tensor:
        return tf.abs(x)

    def exp(self, x: Tensor) -> Tensor:
        return tf.exp(x)

    def log(self, x: Tensor) -> Tensor:
        return tf.math.log(x)

    def log1p(self, x: Tensor) -> Tensor:
        return tf.math.log1p(x)

    def log2(self, x: Tensor) -> Tensor:
        return tf.math.log(x) * tf.constant(1.0 / np.log(2.0), dtype=x.dtype)

    def round(self, x: Tensor) -> Tensor:
        return tf.round(x)

    def floor(self, x: Tensor) -> Tensor:
        return tf.floor(x)

    def ceil(self, x: Tensor) -> Tensor:
        return tf.math.ceil(x)

    def pow(self, a: Tensor, b: Tensor) -> Tensor:
        return tf.pow(a, b)

    def isfinite(self, x: Tensor) -> Tensor:
        return tf.math.is_finite(x)

    def isnan(self, x: Tensor) -> Tensor:
        return tf.math.is_nan(x)

    # -- reductions ------------------------------------------------------------------
    def max(self, x: Tensor, axis: Any = None, keepdims: builtins.bool = False) -> Tensor:
        m = tf.reduce_max(x, axis=_axes(axis), keepdims=keepdims)
        if not x.dtype.is_floating:
            return m
        # XLA's maximum skips NaN where the Array API (and eager TF) propagate it
        nan = tf.reduce_any(tf.math.is_nan(x), axis=_axes(axis), keepdims=keepdims)
        return tf.where(nan, tf.constant(float("nan"), dtype=x.dtype), m)

    def sum(self, x: Tensor, axis: Any = None, keepdims: builtins.bool = False) -> Tensor:
        return tf.reduce_sum(x, axis=_axes(axis), keepdims=keepdims)

    def any(self, x: Tensor, axis: Any = None, keepdims: builtins.bool = False) -> Tensor:
        return tf.reduce_any(x, axis=_axes(axis), keepdims=keepdims)
