"""High-precision reference values and ulp errors for the softmax family.

Every reference is the exact value of the function *at the given floating-point
inputs* (the rounded inputs, not the real numbers they were drawn from), known
to far better than the unit in the last place of the dtype being measured:

* The bulk of the work is done in NumPy ``longdouble``, which is the x87 80-bit
  format on x86-64 Linux (64-bit significand, 11 bits more than float64, 40 more
  than float32). :func:`check_longdouble` refuses to run on a platform where it
  is only float64.
* ``x - max`` is carried exactly as an unevaluated sum ``d_hi + d_lo`` (TwoSum
  in longdouble), and ``exp(d) = expl(d_hi) * (1 + d_lo)``.
* The sum of the non-maximal terms is formed exactly: each row is scaled by a
  power of two, every longdouble term is split into two float64 numbers, and
  :func:`math.fsum` (Shewchuk's exact summation) adds them, once for the sum and
  once for its remainder, giving a double-float64 result that is then rounded
  once to longdouble.
* ``log1p`` is applied to the exactly formed ``(c - 1) + s`` (``c`` the number
  of maximal entries), so a tiny ``s`` is never lost.
* The one formula that can cancel, ``logsumexp = max + L`` for a negative
  maximum, is recomputed with mpmath where the cancellation would eat the extra
  bits (:func:`logsumexp_ref`).

:func:`mp_reference_rows` computes the same quantities with mpmath at 60 digits
(``log1p`` of the separately summed small terms, so nothing tiny is lost), and
the tests compare the two on samples of every dataset.

The ulp of a reference value ``t`` in a binary format with ``p`` significand
bits and minimum normal exponent ``emin`` is ``2**(max(floor(log2|t|), emin) - p + 1)``:
below the normal range the spacing of the subnormals is used. A correctly
rounded result has an error of at most 0.5 ulp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "LD",
    "Reference",
    "UlpStats",
    "bce_ref",
    "check_longdouble",
    "cross_entropy_ref",
    "log_sigmoid_ref",
    "log_softmax_ref",
    "logsumexp_ref",
    "mp_reference_rows",
    "reference",
    "sigmoid_ref",
    "softmax_ref",
    "ulp_error",
    "ulp_of",
    "ulp_stats",
]

LD = np.longdouble

# (significand bits p, minimum normal exponent emin) of the measured formats
_FORMATS = {"float32": (24, -126), "float64": (53, -1022), "float16": (11, -14)}


def check_longdouble() -> None:
    """Raise if ``numpy.longdouble`` is not wider than float64 on this platform."""
    if np.finfo(LD).nmant < 63:
        msg = (
            "numpy.longdouble has only "
            f"{np.finfo(LD).nmant + 1} significand bits on this platform; the accuracy "
            "reference needs the 64-bit x87 or 113-bit quad format"
        )
        raise RuntimeError(msg)


def _fmt(dtype: Any) -> tuple[int, int]:
    name = np.dtype(dtype).name
    try:
        return _FORMATS[name]
    except KeyError:  # pragma: no cover - misuse
        msg = f"no ulp definition for dtype {name}"
        raise ValueError(msg) from None


# --------------------------------------------------------------------------------------
# ulp errors


def ulp_of(ref: Any, dtype: Any) -> np.ndarray:
    """The ulp of ``dtype`` at the (longdouble) reference values ``ref``.

    Zero references get the smallest subnormal spacing; infinite or NaN
    references get NaN (they are compared exactly, not in ulps).
    """
    p, emin = _fmt(dtype)
    t = np.abs(np.asarray(ref, dtype=LD))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        _, ex = np.frexp(t)  # t = f * 2**ex with f in [0.5, 1): floor(log2 t) = ex - 1
        e = np.where(t > 0, ex.astype(np.int64) - 1, emin)
        e = np.maximum(e, emin)
        u = np.ldexp(np.ones_like(t), (e - p + 1).astype(np.int32))
    return np.where(np.isfinite(t), u, np.nan)


def ulp_error(result: Any, ref: Any, dtype: Any = None) -> np.ndarray:
    """``|result - ref| / ulp(ref)`` elementwise, in ulps of ``dtype``.

    ``dtype`` defaults to the dtype of ``result``. Equal values (including equal
    infinities and NaN against NaN) have error 0; a non-finite result against a
    finite reference, or the reverse, has error ``inf``.
    """
    r = np.asarray(result)
    dt = r.dtype if dtype is None else np.dtype(dtype)
    rl = r.astype(LD)
    t = np.asarray(ref, dtype=LD)
    rl, t = np.broadcast_arrays(rl, t)
    u = ulp_of(t, dt)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(rl - t) / u
    same = (rl == t) | (np.isnan(rl) & np.isnan(t))
    err = np.where(same, 0.0, err)
    bad = ~same & (~np.isfinite(rl) | ~np.isfinite(t))
    err = np.where(bad, np.inf, err)
    return err.astype(np.float64)


@dataclass(frozen=True)
class UlpStats:
    """Summary of the errors of one result against its reference."""

    max_ulp: float  # over all compared outputs
    max_ulp_normal: float  # over outputs whose reference is in the normal range
    max_abs: float  # largest absolute error
    argmax: tuple[int, ...]  # index of the worst output (all outputs)
    count: int
    count_normal: int

    def describe(self, x: np.ndarray | None = None) -> str:
        """The worst error and where it is (with the start of its input row, if given)."""
        text = (
            f"max {self.max_ulp:.4g} ulp (normal range {self.max_ulp_normal:.4g}) at {self.argmax}"
        )
        if x is not None and self.argmax:
            row = np.asarray(x)[self.argmax[0]]
            text += f"; input row {self.argmax[0]} starts {np.array2string(row[:6], precision=9)}"
        return text


def ulp_stats(result: Any, ref: Any, dtype: Any = None, mask: Any = None) -> UlpStats:
    """Max ulp error overall and over normal-range references, and max absolute error.

    ``mask`` (optional, broadcastable) selects the outputs that are compared.
    """
    r = np.asarray(result)
    dt = r.dtype if dtype is None else np.dtype(dtype)
    t = np.asarray(ref, dtype=LD)
    r, t = np.broadcast_arrays(r, t)
    sel = np.ones(t.shape, dtype=bool) if mask is None else np.broadcast_to(mask, t.shape)
    err = np.where(sel, ulp_error(r, t, dt), 0.0)
    tiny = LD(np.finfo(dt).tiny)
    normal = sel & (np.abs(t) >= tiny)
    with np.errstate(invalid="ignore"):
        ab = np.abs(r.astype(LD) - t).astype(np.float64)
    ab = np.where(sel & np.isfinite(t), ab, 0.0)
    ab = np.where(np.isnan(ab), np.inf, ab)
    if err.size == 0:
        return UlpStats(0.0, 0.0, 0.0, (), 0, 0)
    flat = int(np.argmax(err))
    return UlpStats(
        max_ulp=float(err.max()),
        max_ulp_normal=float(np.where(normal, err, 0.0).max()),
        max_abs=float(ab.max()),
        argmax=tuple(int(i) for i in np.unravel_index(flat, err.shape)),
        count=int(sel.sum()),
        count_normal=int(normal.sum()),
    )


# --------------------------------------------------------------------------------------
# error-free building blocks in longdouble


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def _exact_row_sums(t: np.ndarray) -> np.ndarray:
    """Row sums (last axis) of non-negative finite longdouble terms, rounded once.

    Each row is scaled by a power of two so its largest term is in [0.5, 1);
    every term is split into two float64 numbers (exactly, up to terms below
    2**-1074 of the largest, which are far below the rounding of the result);
    ``math.fsum`` returns the correctly rounded float64 sum and, on a second
    call, the correctly rounded remainder.
    """
    t2 = t.reshape(-1, t.shape[-1]) if t.ndim else t.reshape(1, 1)
    out = np.zeros(t2.shape[0], dtype=LD)
    for i, row in enumerate(t2):
        top = row.max() if row.size else LD(0)
        if not top > 0:
            continue
        _, ex = np.frexp(top)
        scaled = np.ldexp(row, -int(ex))
        hi = scaled.astype(np.float64)
        lo = (scaled - hi.astype(LD)).astype(np.float64)
        vals = hi.tolist() + lo.tolist()
        s = math.fsum(vals)
        vals.append(-s)
        rem = math.fsum(vals)
        out[i] = np.ldexp(LD(s) + LD(rem), int(ex))
    return out.reshape(t.shape[:-1]) if t.ndim else out.reshape(())


# --------------------------------------------------------------------------------------
# the row reference


@dataclass
class Reference:
    """Exact-input reference quantities of each row of a 2-D input (rows along axis 0).

    Entries equal to ``-inf`` are allowed (they are absent from the sum); rows
    must otherwise be finite and have at least one finite entry.
    """

    x: np.ndarray  # the input, in its own dtype
    m: np.ndarray  # row maximum (longdouble, keepdims)
    d_hi: np.ndarray  # x - m = d_hi + d_lo exactly (longdouble); -inf on -inf entries
    d_lo: np.ndarray
    e: np.ndarray  # exp(x - m) (longdouble)
    count: np.ndarray  # number of maximal entries (keepdims)
    s: np.ndarray  # sum of exp(x - m) over the non-maximal entries (keepdims)
    L: np.ndarray  # log(sum exp(x - m)) = log1p((count - 1) + s) (keepdims)


def reference(x: Any) -> Reference:
    """Row reference of a 2-D float32/float64 array ``x`` (reduction over the last axis)."""
    check_longdouble()
    x = np.asarray(x)
    if x.ndim != 2:
        msg = f"reference() takes a 2-D array of rows, got shape {x.shape}"
        raise ValueError(msg)
    if np.isnan(x).any() or (x == np.inf).any():
        msg = "the ulp reference covers finite rows (and -inf entries) only"
        raise ValueError(msg)
    xl = x.astype(LD)
    m = xl.max(axis=1, keepdims=True)
    if not np.isfinite(m).all():
        msg = "every row needs a finite entry"
        raise ValueError(msg)
    live = np.isfinite(xl)
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        d_hi, d_lo = _two_sum(np.where(live, xl, m), -m)
        d_lo = np.where(live, d_lo, 0.0).astype(LD)
        d_hi = np.where(live, d_hi, -np.inf).astype(LD)
        e = np.exp(d_hi) * (LD(1) + d_lo)
    is_max = xl == m
    count = is_max.sum(axis=1, keepdims=True).astype(LD)
    s = _exact_row_sums(np.where(is_max, LD(0), e))[:, None]
    L = np.log1p((count - 1) + s)
    return Reference(x=x, m=m, d_hi=d_hi, d_lo=d_lo, e=e, count=count, s=s, L=L)


def softmax_ref(ref: Reference) -> np.ndarray:
    """``exp(x_i - m) / (count + s)``; exactly 0 on ``-inf`` entries."""
    return ref.e / (ref.count + ref.s)


def log_softmax_ref(ref: Reference) -> np.ndarray:
    """``(x_i - m) - L``: two non-positive terms, no cancellation."""
    with np.errstate(invalid="ignore"):
        return (ref.d_hi - ref.L) + ref.d_lo


def logsumexp_ref(ref: Reference) -> np.ndarray:
    """``m + L`` per row (shape ``(rows,)``), exact even where ``m < 0`` cancels ``L``.

    In longdouble the sum has an absolute error of about ``2**-64 (|m| + L)``.
    Where that is not at least ``2**-24`` below the result's own float64 ulp the
    row is recomputed from scratch with mpmath.
    """
    v = (ref.m + ref.L)[:, 0]
    scale = (np.abs(ref.m) + ref.L)[:, 0]
    risky = np.abs(v) * LD(2.0**-37) < scale * LD(2.0**-64)
    for i in np.flatnonzero(risky):
        v[i] = _mp_lse_row(ref.x[i])
    return v


def cross_entropy_ref(ref: Reference, target: Any) -> np.ndarray:
    """``-log softmax(x)_t = L - (x_t - m)`` per row, for class indices ``target``."""
    t = np.asarray(target).reshape(-1, 1)
    dh = np.take_along_axis(ref.d_hi, t, axis=1)
    dl = np.take_along_axis(ref.d_lo, t, axis=1)
    return ((ref.L - dh) - dl)[:, 0]


def _sig_parts(x: Any) -> tuple[np.ndarray, np.ndarray]:
    xl = np.asarray(x).astype(LD)
    with np.errstate(under="ignore"):
        z = np.exp(-np.abs(xl))
    return xl, z


def sigmoid_ref(x: Any) -> np.ndarray:
    """``1 / (1 + exp(-x))`` from ``z = exp(-|x|)`` without cancellation."""
    xl, z = _sig_parts(x)
    return np.where(xl >= 0, LD(1) / (LD(1) + z), z / (LD(1) + z))


def log_sigmoid_ref(x: Any) -> np.ndarray:
    """``min(x, 0) - log1p(exp(-|x|))``."""
    xl, z = _sig_parts(x)
    return np.minimum(xl, LD(0)) - np.log1p(z)


def bce_ref(x: Any, y: Any) -> np.ndarray:
    """BCE with logits, ``y softplus(-x) + (1 - y) softplus(x)``, for ``y`` in [0, 1]."""
    xl, z = _sig_parts(x)
    yl = np.asarray(y).astype(LD)
    lz = np.log1p(z)
    sp_pos = np.maximum(xl, LD(0)) + lz
    sp_neg = np.maximum(-xl, LD(0)) + lz
    return yl * sp_neg + (LD(1) - yl) * sp_pos


# --------------------------------------------------------------------------------------
# mpmath reference (slow; for samples and for cancelling logsumexp rows)


def _mp() -> Any:
    import mpmath

    return mpmath


def _mp_row_parts(row: np.ndarray, dps: int) -> tuple[Any, Any, list[Any], Any, Any]:
    """mpmath ``(m, [d_i], [e_i], s, L)`` of one row (``-inf`` entries have ``e_i = 0``)."""
    mpmath = _mp()
    finite = [float(v) for v in row.tolist() if math.isfinite(v)]
    m = max(finite)
    ds: list[Any] = []
    es: list[Any] = []
    small: list[Any] = []
    count = 0
    with mpmath.workdps(dps):
        mm = mpmath.mpf(m)
        for v in row.tolist():
            if not math.isfinite(v):
                ds.append(None)
                es.append(mpmath.mpf(0))
                continue
            d = mpmath.mpf(float(v)) - mm
            e = mpmath.exp(d)
            ds.append(d)
            es.append(e)
            if float(v) == m:
                count += 1
            else:
                small.append(e)
        s = mpmath.fsum(small)
        L = mpmath.log1p(mpmath.mpf(count - 1) + s)
        D = s + count
    return mm, ds, es, D, L


def _mp_lse_row(row: np.ndarray, dps: int = 80) -> Any:
    mpmath = _mp()
    mm, _, _, _, L = _mp_row_parts(row, dps)
    with mpmath.workdps(dps):
        v = mm + L
    return LD(mpmath.nstr(v, 40))


@dataclass
class MpRows:
    """mpmath reference values (as mpf) of some rows, for spot checks."""

    softmax: list[list[Any]]
    log_softmax: list[list[Any]]
    logsumexp: list[Any]
    dps: int


def mp_reference_rows(x: Any, rows: Any, dps: int = 60) -> MpRows:
    """mpmath softmax, log_softmax (``-inf`` entries: ``None``) and logsumexp of ``x[rows]``."""
    mpmath = _mp()
    x = np.asarray(x)
    sm_all: list[list[Any]] = []
    ls_all: list[list[Any]] = []
    lse_all: list[Any] = []
    for r in rows:
        mm, ds, es, D, L = _mp_row_parts(x[r], dps)
        with mpmath.workdps(dps):
            sm_all.append([e / D for e in es])
            ls_all.append([None if d is None else d - L for d in ds])
            lse_all.append(mm + L)
    return MpRows(sm_all, ls_all, lse_all, dps)


def mp_ulp_discrepancy(values: Any, exact: list[Any], dtype: Any) -> float:
    """Largest ``|value - exact| / ulp_dtype(exact)`` over paired longdouble and mpf values.

    ``None`` in ``exact`` marks entries that must be ``-inf`` in ``values``.
    """
    mpmath = _mp()
    p, emin = _fmt(dtype)
    worst = 0.0
    vals = np.asarray(values, dtype=LD).reshape(-1)
    with mpmath.workdps(80):
        for v, t in zip(vals, exact, strict=True):
            if t is None:
                if v != -np.inf:
                    return math.inf
                continue
            # longdouble -> exact mpf through its exact decimal expansion (repr is not enough)
            mant, ex = np.frexp(v)
            mv = mpmath.ldexp(mpmath.mpf(int(np.ldexp(mant, 64))), int(ex) - 64)
            # frexp: |t| = f * 2**k with f in [0.5, 1), so floor(log2 |t|) = k - 1
            e = emin if t == 0 else max(int(mpmath.frexp(t)[1]) - 1, emin)
            u = mpmath.ldexp(1, e - p + 1)
            worst = max(worst, float(abs(mv - t) / u))
    return worst
