"""Accuracy measurement: adversarial inputs, exact references, errors in ulps.

Used by the test suite (which asserts the error bounds) and by the benchmark
suite (which prints the table). The references are exact for the given
floating-point inputs to far below one unit in the last place:

* float32 data: float64 arithmetic with the shift ``x - max`` exact, the maximal
  entries kept out of the sum and ``log1p`` (Blanchard, Higham & Higham);
* float64 data: the same in ``numpy.longdouble`` (x87 extended precision, 64-bit
  significand), available on x86-64 Linux.

An error is ``|y - t| / ulp(t)`` with ``ulp`` the spacing of the output dtype at
the exact value ``t`` (the subnormal spacing below the normal range), so a
correctly rounded result has error at most 0.5.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["OPS", "adversarial_sets", "extended_available", "max_ulp", "reference"]

OPS = ("softmax", "log_softmax", "logsumexp", "cross_entropy")


def extended_available() -> bool:
    """Whether ``numpy.longdouble`` carries at least 63 significand bits here."""
    return bool(np.finfo(np.longdouble).nmant >= 63)


def adversarial_sets(dtype: Any, *, quick: bool = False) -> dict[str, np.ndarray]:
    """The adversarial input sets, as 2-D arrays of rows (softmax over the last axis).

    ``quick`` shrinks the random sets (for the test suite); the special rows are
    the same either way.
    """
    dt = np.dtype(dtype)
    rng = np.random.default_rng(20210806)
    rows = 64 if quick else 1000
    n_long = 400_000 if quick else 1_000_000
    sets: dict[str, np.ndarray] = {
        "R1 N(0,5^2)": rng.normal(0, 5, (rows, 1000)),
        "R2 N(0,1)": rng.normal(0, 1, (rows, 1000)),
        "R3 N(0,20^2)": rng.normal(0, 20, (rows, 1000)),
        "R4 N(0,5^2)+1000": rng.normal(0, 5, (rows, 1000)) + 1000.0,
        "R5 N(0,1) long rows": rng.normal(0, 1, (2, n_long)),
        "A1 [0,-20 x999]": np.array([[0.0] + [-20.0] * 999]),
        "A2 [0,-40]": np.array([[0.0, -40.0]]),
        "A3 [0,-20]": np.array([[0.0, -20.0]]),
        "A4 [0,-17]": np.array([[0.0, -17.0]]),
        "A8 [10,0 x999]": np.array([[10.0] + [0.0] * 999]),
        "A11 [17.3,-23.46]": np.array([[17.3, -23.46]]),
    }
    if dt == np.float32:
        sets["A6 [0,-90] subnormal"] = np.array([[0.0, -90.0]])
        sets["A10 [1e4,1e4-30]"] = np.array([[1e4, 1e4 - 30.0]])
    else:
        sets["A12 [0,-740] subnormal"] = np.array([[0.0, -740.0]])
        sets["A13 [0,-37]"] = np.array([[0.0, -37.0]])
    return {k: v.astype(dt) for k, v in sets.items()}


def reference(op: str, x: np.ndarray, target: np.ndarray | None = None) -> np.ndarray:
    """The exact result of ``op`` over the last axis of ``x``, in a wider type."""
    wide = np.float64 if x.dtype == np.float32 else np.longdouble
    xw = x.astype(wide)
    m = np.max(xw, axis=-1, keepdims=True)
    d = xw - m  # exact: float32 in float64, float64 in the 64-bit longdouble significand
    e = np.exp(d)
    is_max = xw == m
    c = np.sum(is_max, axis=-1, keepdims=True).astype(wide)
    s = np.sum(np.where(is_max, 0, e), axis=-1, keepdims=True)
    L = np.log1p((c - 1) + s)
    if op == "softmax":
        return e / (c + s)  # type: ignore[no-any-return]
    if op == "log_softmax":
        return d - L  # type: ignore[no-any-return]
    if op == "logsumexp":
        return (m + L)[..., 0]  # type: ignore[no-any-return]
    if op == "cross_entropy":
        assert target is not None
        dt = np.take_along_axis(d, target[:, None], axis=-1)
        return (L - dt)[..., 0]  # type: ignore[no-any-return]
    msg = f"unknown op {op!r}"
    raise ValueError(msg)


def _ulp(ref: np.ndarray, dtype: np.dtype) -> np.ndarray:
    info = np.finfo(dtype)
    r = np.abs(ref).astype(np.longdouble)
    tiny = np.longdouble(info.smallest_normal)
    with np.errstate(divide="ignore"):
        ex = np.floor(np.log2(np.where(r > 0, r, tiny)))
    ex = np.maximum(ex, np.log2(tiny))
    return np.exp2(ex - info.nmant)  # type: ignore[no-any-return]


def max_ulp(got: Any, ref: np.ndarray, dtype: Any) -> float:
    """Largest error in ulps of ``dtype`` over the entries where the reference is finite.

    An entry that should be finite but is not, or vice versa, counts as infinite error.
    """
    g = np.asarray(got).astype(np.longdouble)
    r = np.asarray(ref).astype(np.longdouble)
    fin = np.isfinite(r)
    if not np.array_equal(fin, np.isfinite(g)) or not np.array_equal(g[~fin], r[~fin]):
        return float("inf")
    if not fin.any():
        return 0.0
    err = np.abs(g[fin] - r[fin]) / _ulp(r[fin], np.dtype(dtype))
    return float(np.max(err))


def targets_for(x: np.ndarray) -> np.ndarray:
    """Cross-entropy targets: the arg-max (the confident-correct case) of every row."""
    return np.argmax(x, axis=-1)


Impl = Callable[[str, np.ndarray, np.ndarray], Any]
