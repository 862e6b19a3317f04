"""The engine of the mergeable logsumexp state: build it from a block, merge, finish.

Every function takes and returns plain tuples of arrays of one namespace (the
state's fields, batch-shaped, in the state's working dtype) and never validates:
:mod:`softmaxkit.state` and the Dask engine validate once and call these. NumPy
blocks of float32/float64 go to the C core (``_ckernels.state`` and
``_ckernels.state_apply``); every other namespace builds the state with the
array-agnostic row statistics. Merging and finishing are elementwise per row and
run in double-word arithmetic (:class:`._agnostic._dd.DDArith`) in every
namespace, so NumPy, Dask and the others merge with the same operations.

It must never branch on data in Python (Dask and ``jax.jit`` call it on lazy or
traced arrays) and never write into an argument.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ._agnostic import _normalize
from ._agnostic._dd import DDArith, far_below, two_sum
from ._agnostic._losses import weighted
from ._namespace import Plan, dtype_name, is_numpy

try:
    from . import _ckernels
except ImportError:  # pragma: no cover - only without a compiled core
    _ckernels = None  # type: ignore[assignment]

__all__ = [
    "Fields",
    "build",
    "cross_entropy",
    "entropy",
    "log_softmax_block",
    "logsumexp",
    "merge",
    "not_held",
    "softmax_block",
]

Array = Any


class Fields(NamedTuple):
    """The arrays of a state, batch-shaped; optional parts are ``None`` when absent."""

    m: Array  # row maximum; NaN for a NaN row, +inf with +inf entries, -inf when empty
    c: Array  # entries equal to m (+inf rows: the number of +inf entries)
    s_hi: Array  # sum of exp(x - m) over the other entries, double-word (hi, lo)
    s_lo: Array
    # the target logit; -0.0 where no block held the target (a held logit of zero is +0.0):
    # -0.0 is the identity of the merge's sum, so the sign of a zero tells whether a
    # merged block held the target, without another field
    xt: Array | None = None
    sx_hi: Array | None = None  # sum of the logits, double-word
    sx_lo: Array | None = None
    n: Array | None = None  # number of classes
    t: Array | None = None  # sum of exp(x - m) (x - m), for the entropy


def arith(xp: Any, dtype: Any, device: Any) -> DDArith:
    return DDArith(xp, dtype, dtype_name(dtype), device)


def _native(x: Array, plan: Plan) -> tuple[np.ndarray, int, int] | None:
    if _ckernels is None or not is_numpy(plan.xp) or not isinstance(x, np.ndarray):
        return None
    name = dtype_name(plan.out)
    if name not in ("float32", "float64") or dtype_name(plan.work) != "float64":
        return None
    mode = 0 if plan.mode == "plain" else 1
    x2 = np.ascontiguousarray(x, dtype=np.dtype(name).newbyteorder("="))
    return x2, 0 if name == "float32" else 1, mode


def build(
    x: Array,
    plan: Plan,
    axis: int,
    *,
    target: Array | None,
    offset: int,
    sum_x: bool,
    entropy: bool,
    threads: int,
) -> Fields:
    """The state of ``x`` over ``axis`` (a validated block)."""
    xp = plan.xp
    n = int(x.shape[axis])
    got = _native(x, plan) if n > 0 else None
    if got is not None:
        xa, code, mode = got
        xr = np.moveaxis(xa, axis, -1)
        batch = tuple(xr.shape[:-1])
        rows = math.prod(batch)
        x2 = np.ascontiguousarray(xr).reshape(rows, n)
        m, c, sh, sl = (np.empty(rows) for _ in range(4))
        _ckernels.state(x2, 0, n, None, rows, n, code, mode, threads, 1.0, m, c, sh, sl)
        f = Fields(m.reshape(batch), c.reshape(batch), sh.reshape(batch), sl.reshape(batch))
        # the extras read the data once more, in float64 (only when asked for)
        xwork: Array = x2.reshape((*batch, n))
        if sum_x or entropy:
            xwork = xwork.astype(np.float64)
        last = -1
    else:
        xw = xp.astype(x, plan.work)
        if n == 0:
            shape = tuple(s for i, s in enumerate(x.shape) if i != axis)
            z = xp.zeros(shape, dtype=plan.work, device=plan.device)
            f = Fields(z - math.inf, z, z, z)
        else:
            pa = _normalize.arith_for(plan)
            st = _normalize.row_stats(pa, pa.lift(xw), (axis,), None)
            s = st.s if isinstance(st.s, tuple) else (st.s, xp.zeros_like(st.s))
            fin, pinf = st.fin, st.posinf & ~st.isnan
            m = xp.where(st.isnan, math.nan, xp.where(fin | pinf, st.m, -math.inf))
            c = xp.where(pinf, st.k, xp.where(fin, st.count, 0.0))
            sh = xp.where(fin, s[0], 0.0)
            sl = xp.where(fin, s[1], 0.0)
            f = Fields(*(xp.squeeze(xp.astype(a, plan.work), axis=axis) for a in (m, c, sh, sl)))
        xwork = xw
        last = axis
    extra: dict[str, Array] = {}
    if target is not None:
        extra["xt"] = _pick(xp, xwork, last, target, offset, f.m, plan.device)
    if sum_x:
        ar = arith(xp, f.m.dtype, plan.device)
        xs = xp.astype(xwork, f.m.dtype)
        fin = xp.isfinite(xs)
        finite = xp.where(fin, xs, 0.0)
        if n:
            hi, lo = ar.sum((finite, xp.zeros_like(finite)), (last % xs.ndim,), n)
        else:  # an empty block: the identity (a sum of no terms)
            hi = xp.sum(finite, axis=last, keepdims=True)
            lo = xp.zeros_like(hi)
        # infinities and NaN: their plain sum (-inf, +inf, or NaN when they meet)
        special = xp.sum(xp.where(fin, 0.0, xs), axis=last, keepdims=True)
        hi = xp.where(xp.isfinite(special), hi, special)
        lo = xp.where(xp.isfinite(special), lo, 0.0)
        extra["sx_hi"] = xp.squeeze(hi, axis=last)
        extra["sx_lo"] = xp.squeeze(lo, axis=last)
        extra["n"] = xp.zeros_like(f.m) + float(n)
    if entropy:
        extra["t"] = _entropy_sum(xp, xwork, last, f)
    return f._replace(**extra)


def build_columns(
    x: np.ndarray, col0: int, width: int, count: int, plan: Plan, threads: int
) -> Fields | None:
    """States of ``count`` column blocks ``x[:, col0 + k width : col0 + (k + 1) width]``.

    ``x`` is a C-contiguous NumPy matrix (rows x L); the C core reads the blocks
    in place (no copy). Returns fields of shape ``(rows, count)``, or ``None``
    when the native kernels do not cover ``x``.
    """
    if _ckernels is None or x.ndim != 2 or not x.flags.c_contiguous or not x.dtype.isnative:
        return None
    name = dtype_name(plan.out)
    if x.dtype.name != name or name not in ("float32", "float64"):
        return None
    if dtype_name(plan.work) != "float64":
        return None
    code, mode = (0 if name == "float32" else 1), (0 if plan.mode == "plain" else 1)
    rows, ld = x.shape
    out = [np.empty((count, rows)) for _ in range(4)]
    for k in range(count):
        m, c, sh, sl = (a[k] for a in out)
        off = col0 + k * width
        _ckernels.state(x, off, ld, None, rows, width, code, mode, threads, 1.0, m, c, sh, sl)
    return Fields(*(a.T for a in out))


def _pick(
    xp: Any, xw: Array, axis: int, target: Array, offset: int, m: Array, device: Any
) -> Array:
    """``x[target - offset]`` along ``axis`` where the target lies in the block, else -0.0.

    A held logit equal to zero is recorded as +0.0, so ``-0.0`` marks "not held"
    through any number of merges (``-0.0 + v`` is ``v``, ``+0.0`` included).
    """
    n = int(xw.shape[axis])
    idx = target - offset
    inside = (idx >= 0) & (idx < n)
    safe = xp.where(inside, idx, 0)
    xl = xp.moveaxis(xw, axis, -1) if axis % xw.ndim != xw.ndim - 1 else xw
    if n == 0:
        return xp.full_like(m, -0.0)
    classes = xp.arange(n, dtype=idx.dtype, device=device)
    hit = classes == xp.expand_dims(safe, axis=-1)
    val = xp.sum(xp.where(hit, xl, 0.0), axis=-1)
    # -inf logits stay -inf (the sum of where(...) would give NaN only for NaN logits)
    val = xp.where(xp.any(hit & (xl == -math.inf), axis=-1), -math.inf, val)
    val = xp.astype(val, m.dtype)
    return xp.where(inside, xp.where(val == 0.0, 0.0, val), -0.0)


def _entropy_sum(xp: Any, xw: Array, axis: int, f: Fields) -> Array:
    """``sum exp(x - m) (x - m)`` over the finite entries of rows with a finite maximum."""
    m = xp.expand_dims(f.m, axis=axis)
    fin = xp.isfinite(m)
    live = fin & (xw > -math.inf)
    d = xp.where(live, xw - xp.where(fin, m, 0.0), 0.0)
    return xp.sum(xp.where(live, xp.exp(d) * d, 0.0), axis=axis)


# ---- merge -------------------------------------------------------------------------


def merge(a: Fields, b: Fields, xp: Any, device: Any = None) -> Fields:
    """Merge two states of disjoint blocks of the same rows (commutative, bitwise).

    ``M = max(m_a, m_b)``; a side whose maximum is ``M`` adds its count to ``C``
    and its sum to ``S``; a side below ``M`` adds ``exp(m - M) (c + s)`` to ``S``.
    ``m - M`` is exact as a double-word pair; the exponential, product and sum run
    in double-word arithmetic.
    """
    ar = arith(xp, a.m.dtype, device)
    M = xp.maximum(a.m, b.m)
    fin = xp.isfinite(M)
    pinf = math.inf == M
    M0 = xp.where(fin, M, 0.0)
    C = xp.zeros_like(M)
    S = (xp.zeros_like(M), xp.zeros_like(M))
    T = xp.zeros_like(M) if a.t is not None and b.t is not None else None
    # a side more than the largest float below M weighs exp(m - M) = 0; m - M would
    # overflow there (with a warning), so it is left out like an empty side
    for side in (a, b):
        at = side.m == M
        below = fin & ~at & (side.m > -math.inf) & ~far_below(xp, side.m, M0)
        d = two_sum(xp.where(below, side.m, 0.0), -xp.where(below, M0, 0.0))
        w = ar.where(below, ar.exp(d), 0.0)
        cs = ar.add(ar.lift(side.c), (side.s_hi, side.s_lo))
        fold = ar.mul(w, cs)
        here = (xp.where(at & fin, side.s_hi, fold[0]), xp.where(at & fin, side.s_lo, fold[1]))
        S = ar.add(S, here)
        C = C + xp.where(at & (fin | pinf), side.c, 0.0)
        if T is not None:
            ts = side.t
            shifted = ts + d[0] * (side.c + side.s_hi)
            T = T + xp.where(at & fin, ts, xp.where(below, w[0] * shifted, 0.0))
    S = (xp.where(fin, S[0], 0.0), xp.where(fin, S[1], 0.0))
    C = xp.where(xp.isnan(M), 0.0, C)
    out = Fields(M, C, S[0], S[1])
    if a.xt is not None and b.xt is not None:
        out = out._replace(xt=a.xt + b.xt)
    if a.sx_hi is not None and b.sx_hi is not None:
        # a block holding -inf, +inf or NaN carries that sum with a zero low word (see
        # build): the plain sum is then the whole answer, where the double-word one
        # would give NaN (-inf - (-inf) in its error term); those lanes add zeros
        plain = a.sx_hi + b.sx_hi
        ok = xp.isfinite(plain)
        assert a.sx_lo is not None and b.sx_lo is not None
        sx = ar.add(
            (xp.where(ok, a.sx_hi, 0.0), xp.where(ok, a.sx_lo, 0.0)),
            (xp.where(ok, b.sx_hi, 0.0), xp.where(ok, b.sx_lo, 0.0)),
        )
        assert a.n is not None and b.n is not None
        out = out._replace(
            sx_hi=xp.where(ok, sx[0], plain), sx_lo=xp.where(ok, sx[1], 0.0), n=a.n + b.n
        )
    if T is not None:
        out = out._replace(t=xp.where(fin, T, 0.0))
    return out


# ---- finish ------------------------------------------------------------------------


def _log_d(ar: DDArith, f: Fields) -> tuple[Array, Array]:
    """``L = log(C + S) = log1p((C - 1) + S)`` as a double-word value (0 off finite rows)."""
    xp = ar.xp
    fin = xp.isfinite(f.m)
    a = ar.add(ar.lift(xp.where(fin, f.c - 1.0, 0.0)), (f.s_hi, f.s_lo))
    a = ar.where(fin, a, 0.0)
    return ar.log1p(a)


def logsumexp(f: Fields, xp: Any, device: Any = None) -> Array:
    """``M + L`` in the state's dtype (``M`` itself on rows without a finite maximum)."""
    ar = arith(xp, f.m.dtype, device)
    fin = xp.isfinite(f.m)
    L = _log_d(ar, f)
    v = ar.value(ar.add(ar.lift(xp.where(fin, f.m, 0.0)), L))
    return xp.where(fin, v, f.m)


def entropy(f: Fields, xp: Any, device: Any = None) -> Array:
    """``log D - T / D`` (``D = C + S``): the entropy of the softmax of the row."""
    ar = arith(xp, f.m.dtype, device)
    fin = xp.isfinite(f.m)
    L = ar.value(_log_d(ar, f))
    D = xp.where(fin, f.c + (f.s_hi + f.s_lo), 1.0)
    assert f.t is not None
    h = L - f.t / D
    k = xp.where(f.c > 0, f.c, 1.0)
    h = xp.where(f.m == math.inf, xp.log(k), h)
    h = xp.where(f.m == -math.inf, 0.0, h)
    return xp.where(xp.isnan(f.m), math.nan, h)


def cross_entropy(
    f: Fields,
    xp: Any,
    *,
    label_smoothing: float,
    z_loss: float,
    device: Any = None,
    w_t: Array | None = None,
) -> tuple[Array, Array, Array]:
    """Per-row ``(loss, lse, counted)`` from a state holding the target logit.

    ``nll = L - (x_t - M)`` in double-word arithmetic; smoothing adds
    ``eps (lse - sum(x) / K)``; ``z_loss`` adds ``z lse**2``. Rows with no class
    left have loss 0 and are not counted; NaN rows give NaN; rows with ``+inf``
    entries the limit (``log k`` if the target is one of the ``k``, else ``inf``);
    rows whose target no merged block held (see :func:`not_held`) give NaN.
    ``w_t`` (the target's class weight) scales the target and z-loss terms, as in
    :func:`softmaxkit.cross_entropy` without class weights on the smoothing term.
    """
    ar = arith(xp, f.m.dtype, device)
    assert f.xt is not None
    fin = xp.isfinite(f.m)
    M0 = xp.where(fin, f.m, 0.0)
    L = _log_d(ar, f)
    lse = xp.where(fin, ar.value(ar.add(ar.lift(M0), L)), f.m)
    # a target more than the largest float below the maximum: x_t - M would
    # overflow (with a warning); its loss is inf, as for a -inf target
    xt_ok = fin & (f.xt > -math.inf) & ~far_below(xp, f.xt, M0)
    xt = xp.where(xt_ok, f.xt, M0)
    nll = ar.value(ar.sub(L, two_sum(xt, -M0)))
    nll = xp.where(xt_ok, nll, math.inf)
    k = xp.where(f.c > 0, f.c, 1.0)
    nll = xp.where(f.m == math.inf, xp.where(f.xt == math.inf, xp.log(k), math.inf), nll)
    nll = xp.where(xp.isnan(f.m) | xp.isnan(f.xt) | not_held(f, xp), math.nan, nll)
    loss = weighted(xp, 1.0 - label_smoothing, nll) if label_smoothing else nll
    if z_loss:
        loss = loss + z_loss * lse * lse
    if w_t is not None:
        loss = weighted(xp, w_t, loss)
    if label_smoothing:
        assert f.sx_hi is not None and f.n is not None
        mean_x = (f.sx_hi + f.sx_lo) / xp.where(f.n > 0, f.n, 1.0)
        # finite rows only (a -inf logit makes mean_x -inf and the loss +inf); the
        # others take their limit below, without forming inf - inf
        gap = xp.where(fin, lse, 0.0) - xp.where(fin, mean_x, 0.0)
        smooth = xp.where(fin, gap, xp.where(f.m == math.inf, math.inf, math.nan))
        smooth = xp.where(xp.isnan(f.m), math.nan, smooth)
        loss = loss + label_smoothing * smooth
    counted = ~(f.m == -math.inf)
    loss = xp.where(counted, loss, 0.0)
    return loss, lse, counted


def not_held(f: Fields, xp: Any) -> Array:
    """Rows whose target logit no block merged into ``f`` held (``x_t`` is ``-0.0``)."""
    assert f.xt is not None
    zero = f.xt == 0.0
    # the sign of the zeros, read in float32 (exact for 0 and 1; JAX without x64 has no
    # int64 to read a float64's sign bit with)
    return zero & xp.signbit(xp.astype(xp.where(zero, f.xt, 1.0), xp.float32))


def log_softmax_block(x: Array, f: Fields, plan: Plan, axis: int, threads: int) -> Array:
    """``(x - M) - L`` of a block of the row, with the special rows' limits."""
    return _apply(x, f, plan, axis, threads, log=True)


def softmax_block(x: Array, f: Fields, plan: Plan, axis: int, threads: int) -> Array:
    """``exp(x - M) / (C + S)`` of a block of the row, with the special rows' limits."""
    return _apply(x, f, plan, axis, threads, log=False)


def _apply(x: Array, f: Fields, plan: Plan, axis: int, threads: int, *, log: bool) -> Array:
    xp = plan.xp
    n = int(x.shape[axis])
    got = _native(x, plan) if n > 0 else None
    if got is not None and all(isinstance(a, np.ndarray) for a in f[:4]):
        xa, code, mode = got
        xr = np.moveaxis(xa, axis, -1)
        batch = tuple(xr.shape[:-1])
        rows = math.prod(batch)
        x2 = np.ascontiguousarray(xr).reshape(rows, n)
        st = [
            np.ascontiguousarray(np.broadcast_to(a, batch), np.float64).reshape(rows) for a in f[:4]
        ]
        out = np.empty((rows, n), x2.dtype)
        m, c, sh, sl = st
        _ckernels.state_apply(x2, None, rows, n, code, mode, threads, 1.0, m, c, sh, sl, log, out)
        return np.moveaxis(out.reshape((*batch, n)), -1, axis)
    if n == 0:
        return xp.astype(x, plan.out)
    ar = arith(xp, f.m.dtype, plan.device)
    xw = xp.astype(x, f.m.dtype)
    m = xp.expand_dims(f.m, axis=axis)
    fin = xp.isfinite(m)
    M0 = xp.where(fin, m, 0.0)
    live = fin & (xw > -math.inf)
    # entries more than the largest float below the maximum: x - m would overflow
    # (with a warning); they are -inf from it (log_softmax -inf, softmax 0)
    live = live & ~far_below(xp, xw, M0)
    d = two_sum(xp.where(live, xw, 0.0), -xp.where(live, M0, 0.0))
    c = xp.expand_dims(f.c, axis=axis)
    s = (xp.expand_dims(f.s_hi, axis=axis), xp.expand_dims(f.s_lo, axis=axis))
    k = xp.where(c > 0, c, 1.0)
    pin = xw == math.inf
    if log:
        a = ar.add(ar.lift(xp.where(fin, c - 1.0, 0.0)), s)
        L = ar.log1p(ar.where(fin, a, 0.0))
        v = xp.where(live, ar.value(ar.sub(d, L)), -math.inf)
        v = xp.where(m == math.inf, xp.where(pin, 0.0 - xp.log(k), -math.inf), v)
    else:
        D = ar.add(ar.lift(xp.where(fin, c, 1.0)), ar.where(fin, s, 0.0))
        v = xp.where(live, ar.value(ar.div(ar.exp(d), D)), 0.0)
        v = xp.where(m == math.inf, xp.where(pin, 1.0 / k, 0.0), v)
    v = xp.where(xp.isnan(m), math.nan, v)
    return xp.astype(v, plan.out)
