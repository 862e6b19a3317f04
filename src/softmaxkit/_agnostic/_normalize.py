"""Array-agnostic softmax, log-softmax and logsumexp (the oracle of the fast paths).

Every function here takes an already validated input and a :class:`Plan`, uses
only Python array API calls on ``plan.xp``, never writes into an argument, and
never branches on data in Python, so it runs eagerly, under ``jax.jit`` and on
lazy Dask graphs alike.

Algorithm (Blanchard, Higham & Higham 2021), per reduced row::

    a = max x                          the shift
    c = #{i : x_i == a}                the terms equal to exp(0) = 1
    s = sum_{x_i < a} exp(x_i - a)     the rest, kept apart so it is never
                                       absorbed into the ones
    L = log1p((c - 1) + s)             = log(sum exp(x_i - a)), exact for tiny s
    logsumexp = a + L,  log_softmax_i = (x_i - a) - L,  softmax_i = exp(x_i - a) / (c + s)

The arithmetic object (:mod:`._dd`) decides the precision: plain arithmetic in a
wider dtype, or double-word arithmetic in the same dtype. Rows whose maximum is
not finite take their limits: all entries masked or ``-inf`` give softmax 0,
log_softmax ``-inf`` and logsumexp ``-inf``; ``+inf`` entries share the mass
equally; a NaN makes the row NaN. Special rows are computed on sanitised
placeholders and overlaid with ``where`` so no NaN or warning is ever produced
in a branch that is thrown away (which also keeps autodiff gradients finite).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._namespace import Plan, dtype_name, to_out
from ._dd import DDArith, PlainArith, far_below, two_sum

__all__ = [
    "RowStats",
    "arith_for",
    "log_softmax",
    "logsumexp",
    "row_stats",
    "softmax",
]

Array = Any
Arith = Any  # DDArith | PlainArith; values are arrays or (hi, lo) pairs


def arith_for(plan: Plan) -> Arith:
    if plan.mode == "dd":
        return DDArith(plan.xp, plan.work, dtype_name(plan.work), plan.device)
    # fast mode works in the input precision: the shift x - max must be made exact there
    return PlainArith(plan.xp, plan.work, plan.device, exact_shift=plan.mode == "plain")


def reduced_size(shape: tuple[Any, ...], axes: tuple[int, ...]) -> int:
    """Number of elements per reduced row (an upper bound when a size is unknown)."""
    n = 1
    for a in axes:
        size = shape[a]
        if size is None or (isinstance(size, float) and math.isnan(size)):
            return 1 << 31
        n *= int(size)
    return n


def red(axes: tuple[int, ...], ndim: int) -> tuple[int, ...] | None:
    """The ``axis`` argument for reductions (``None`` for a 0-d array)."""
    return None if ndim == 0 else axes


@dataclass
class RowStats:
    """Everything the softmax family needs about each reduced row.

    Arrays marked *keepdims* have size 1 along the reduced axes.
    """

    arith: Arith
    axis: tuple[int, ...] | None
    n: int
    valid: Array  # participates: not masked out and not -inf (full shape)
    live: Array  # valid and in a row with a finite maximum (full shape)
    m: Array  # raw row maximum (keepdims; may be +-inf or NaN)
    m0: Array  # the maximum where finite, else 0 (keepdims)
    top: Any  # the shift as an arith value: m0, with its low word under a temperature
    fin: Array  # the row maximum is finite (keepdims)
    posinf: Array  # the row has a +inf entry and no NaN (keepdims)
    isnan: Array  # the row has a NaN (keepdims)
    d: Any  # x - m0 on live entries, 0 elsewhere (full shape, arith value)
    e: Any  # exp(d) on live entries, 0 elsewhere (full shape, arith value)
    e_sc: Any  # e * 2**scale, formed directly (full shape, arith value)
    scale: int  # see Arith.exp: 0 in plain arithmetic, row_scale in double-word
    is_max: Array  # live entries equal to the maximum (full shape)
    count: Array  # number of maximal entries, as a differentiable float (keepdims)
    s: Any  # sum of e over the non-maximal entries (keepdims, arith value)
    L: Any  # log(count + s), 0 on non-finite rows (keepdims, arith value)
    L_tiny: Array | None  # L rounded once where it is below 2**(emin + p + 1), else None
    pin: Array  # +inf entries of valid rows (full shape)
    k: Array  # number of +inf entries, at least 1 (keepdims)


def scaled(arith: Arith, xw: Array, temperature: float) -> Any:
    """``x / T`` as an arithmetic value (double-word quotient in the dd mode).

    Infinite and NaN entries keep their IEEE quotient with a zero low word, and a
    finite entry whose quotient overflows becomes an infinity of its sign, so the
    special-value rules apply to them; nothing overflows or warns on the way.
    """
    if temperature == 1.0:
        return arith.lift(xw)
    xp = arith.xp
    fin = xp.isfinite(xw)
    ok = fin
    if temperature < 1.0:
        ok = ok & (xp.abs(xw) <= float(xp.finfo(xw.dtype).max) * temperature)
    safe = xp.where(ok, xw, 0.0)
    special = xp.where(fin, xp.where(xw > 0, math.inf, xp.full_like(xw, -math.inf)), xw)
    if isinstance(arith, PlainArith):
        return xp.where(ok, safe / temperature, special)
    # Dekker's product splits its factors, which overflows above ~2**(emax - p/2): such
    # huge logits are divided in plain arithmetic (their low word is immaterial next to
    # any other logit's).
    huge = xp.abs(safe) > 2.0 ** (arith.c.emax - arith.c.precision)
    q_hi, q_lo = arith.div(
        arith.lift(xp.where(huge, 0.0, safe)), arith.lift(arith.const(temperature))
    )
    q_hi = xp.where(huge, safe / temperature, q_hi)
    q_lo = xp.where(huge, 0.0, q_lo)
    ok = ok & xp.isfinite(q_hi)
    return xp.where(ok, q_hi, special), xp.where(ok, q_lo, 0.0)


def row_stats(
    arith: Arith,
    xs: Any,
    axes: tuple[int, ...],
    where: Array | None,
    *,
    low_words: bool = False,
    raw: tuple[Array, float] | None = None,
) -> RowStats:
    """Compute the BHH row statistics of ``xs`` (an arith value) over ``axes``.

    ``low_words`` says that ``xs`` is a double-word value whose low words may be
    nonzero (a temperature-scaled input): the maximum is then taken over both
    words, so the maximal entries shift to exactly 0.

    ``raw`` is ``(x, T)`` for ``xs = x / T`` in the accurate modes: the shifted
    values are then formed as ``(x - max x) / T`` from the exact difference. The
    difference of two rounded quotients carries their rounding error, which
    grows with the quotients (about ``|x / T| 2^-53`` for float32 data in
    float64, ``2^-106`` in double-word) and which ``exp`` turns into a relative
    error of the result: 1.3 ulp at 4e8 in float32 before this.
    """
    xp = arith.xp
    x = arith.hi(xs)
    ndim = x.ndim
    axis = red(axes, ndim)
    n = reduced_size(tuple(x.shape), axes)
    notneg = ~(x == -math.inf)
    valid = notneg if where is None else (where & notneg)
    xmax = xp.where(valid, x, -math.inf)
    m = xp.max(xmax, axis=axis, keepdims=True)
    fin = xp.isfinite(m)
    isnan = xp.isnan(m)
    posinf = m == math.inf
    m0 = xp.where(fin, m, 0.0)
    live = valid & fin
    top = arith.lift(m0)
    at_top = live & (x == m0)
    if low_words and isinstance(arith, DDArith):
        m_lo = xp.max(xp.where(at_top, xs[1], -math.inf), axis=axis, keepdims=True)
        top = (m0, xp.where(fin, m_lo, 0.0))
        at_top = at_top & (xs[1] == top[1])
    # Placeholders: dead entries sit at the maximum, so d = 0 and nothing overflows.
    # Nor do entries more than the largest float below the maximum (x - max would
    # overflow, with a warning on some namespaces): their d is set to -inf after.
    if raw is None:
        under = live & far_below(xp, x, m0)
        xl = arith.select(live & ~under, xs, top)
        d = arith.sub(xl, top)
    else:
        xr, t = raw
        mr = xp.max(xp.where(valid, xr, -math.inf), axis=axis, keepdims=True)
        mr0 = xp.where(fin, mr, 0.0)  # the maximum of x: T > 0 keeps the order
        under = live & far_below(xp, xr, mr0)
        at_top = live & (xr == mr0)
        if isinstance(arith, DDArith):
            # Dekker's splitting inside the division overflows above about
            # 2^(emax - p/2): differences beyond 2^e (e = 3/5 emax: 2^613 in float64)
            # are divided scaled down by 2^-e (exact) and scaled back, or are -inf
            # where the quotient passes the largest float. A difference beyond the
            # largest float ("under") is formed from the operands scaled first (then
            # exact); with T > 1 its quotient may fit.
            e = arith.c.emax * 3 // 5
            s = 2.0**-e
            xrl = xp.where(live, xr, mr0)
            k = xp.where(under, xp.full_like(xrl, s), xp.ones_like(xrl))
            dh, dl = two_sum(xrl * k, -(mr0 * k))
            big = under | (xp.abs(dh) > 2.0**e)
            scale_now = big & ~under
            qh, ql = arith.div(
                (xp.where(scale_now, dh * s, dh), xp.where(scale_now, dl * s, dl)),
                arith.lift(arith.const(t)),
            )
            ovf = big & (xp.abs(qh) > float(xp.finfo(qh.dtype).max) * s)
            up = big & ~ovf
            qh_up = xp.where(up, qh, 0.0) * 2.0**e
            ql_up = xp.where(up, ql, 0.0) * 2.0**e
            qh = xp.where(ovf, -math.inf, xp.where(up, qh_up, qh))
            ql = xp.where(up, ql_up, xp.where(ovf, 0.0, ql))
            d = (qh, ql)
            under = under & (qh == -math.inf)  # left -inf only where it overflowed
        else:  # float32 data in float64: no difference overflows
            d = (xp.where(live & ~under, xr, mr0) - mr0) / t
    d = arith.where(~under, d, -math.inf)
    if isinstance(arith, DDArith):
        # x - max beyond the largest float (|x| near the top of the range) comes out of
        # TwoSum as NaN, the only way a NaN arises here: it is -inf (exp 0, log_softmax -inf)
        over = xp.isnan(d[0])
        d = (xp.where(over, -math.inf, d[0]), xp.where(over, 0.0, d[1]))
    # In double-word arithmetic the terms are formed scaled by 2**scale, so the ones
    # that underflow keep both words; the sum is rounded once when the scale comes off.
    scale = arith.c.row_scale if isinstance(arith, DDArith) else 0
    ex = arith.exp(d, scale)
    if isinstance(arith, PlainArith) and arith.exact_shift:
        # In the input precision x - max is rounded, and exp multiplies that error by
        # |x - max| (19 ulp on wide rows). TwoSum gives the rounding error d_lo exactly,
        # and exp(d + d_lo) = exp(d) (1 + d_lo) to far below an ulp.
        ok = xp.isfinite(d)
        _, d_lo = two_sum(xp.where(ok, xl, 0.0), xp.where(ok, -top, 0.0))
        ex = ex + ex * d_lo
    e_sc = arith.where(live, ex, 0.0)
    e = arith.ldexp(e_sc, -scale)
    is_max = at_top
    e_hi = arith.hi(e)
    count = xp.sum(xp.where(is_max, e_hi, 0.0), axis=axis, keepdims=True)
    rest = arith.where(live & ~is_max, e_sc, 0.0)
    s_sc = arith.sum(rest, axis, n)
    s = arith.ldexp(s_sc, -scale)
    a = arith.add(arith.lift(count - 1.0), s)
    a = arith.where(fin, a, 0.0)
    L = arith.log1p(a)
    L_tiny = None
    if scale:
        # A lone maximum with s < 2**(emin + p + 1): L = log1p(s) = s to far better
        # than the final rounding, and s is rounded once from its scaled sum. (Rounding
        # L's words separately would round twice: up to 0.75 ulp just above 2**emin.)
        p = arith.c.precision
        tiny = float(xp.finfo(x.dtype).smallest_normal) * 2.0 ** (p + 1)
        L_tiny = xp.where(
            fin & (count == 1.0) & (arith.hi(s) < tiny),
            arith.scaled_value(s_sc, -scale),
            math.nan,
        )
    pin = valid & (x == math.inf)
    k = xp.sum(xp.astype(pin, x.dtype), axis=axis, keepdims=True)
    k = xp.where(k > 0, k, 1.0)
    return RowStats(
        arith=arith,
        axis=axis,
        n=n,
        valid=valid,
        live=live,
        m=m,
        m0=m0,
        top=top,
        fin=fin,
        posinf=posinf,
        isnan=isnan,
        d=d,
        e=e,
        e_sc=e_sc,
        scale=scale,
        is_max=is_max,
        count=count,
        s=s,
        L=L,
        L_tiny=L_tiny,
        pin=pin,
        k=k,
    )


def denominator(st: RowStats) -> Any:
    """``count + s``, 1 on rows without a finite maximum (keepdims, arith value)."""
    ar = st.arith
    D = ar.add(ar.lift(st.count), st.s)
    return ar.where(st.fin, D, 1.0)


def softmax_values(st: RowStats) -> Array:
    """Softmax in the working dtype, with the special rows overlaid."""
    ar = st.arith
    xp = ar.xp
    # divide the scaled terms: a quotient below the normal range is rounded only once
    q = ar.scaled_value(ar.div(st.e_sc, denominator(st)), -st.scale)
    q = xp.where(st.live, q, 0.0)
    inf_rows = xp.where(st.pin, 1.0 / st.k, 0.0)
    q = xp.where(st.posinf, inf_rows, q)
    return xp.where(st.isnan, math.nan, q)


def log_softmax_values(st: RowStats) -> Array:
    """Log-softmax in the working dtype, with the special rows overlaid."""
    ar = st.arith
    xp = ar.xp
    fin_d = xp.isfinite(ar.hi(st.d))  # d is -inf more than the largest float below the max
    v = ar.value(ar.sub(ar.where(fin_d, st.d, 0.0), st.L))
    if st.L_tiny is not None:
        # 0 - L, not -L: a tiny L that rounds to 0 gives +0, as d - L does
        v = xp.where(st.is_max & ~xp.isnan(st.L_tiny), 0.0 - st.L_tiny, v)
    v = xp.where(st.live & fin_d, v, -math.inf)
    inf_rows = xp.where(st.pin, 0.0 - xp.log(st.k), -math.inf)
    v = xp.where(st.posinf, inf_rows, v)
    return xp.where(st.isnan, math.nan, v)


def logsumexp_values(st: RowStats) -> Array:
    """Logsumexp (keepdims) in the working dtype: ``m + L``, or ``m`` on special rows."""
    ar = st.arith
    xp = ar.xp
    v = ar.value(ar.add(st.top, st.L))
    if st.L_tiny is not None:
        v = xp.where((st.m0 == 0.0) & ~xp.isnan(st.L_tiny), st.L_tiny, v)
    return xp.where(st.fin, v, st.m)


@dataclass
class LeanStats:
    """Row statistics of the lean path (plain arithmetic, no temperature).

    Special values are handled per row, from the row maximum ``m`` and the count of
    entries equal to it, instead of full-size masks: in a row with a finite maximum
    ``cnt`` counts the maximal entries; in a ``+inf`` row it counts the ``+inf``
    entries (their softmax is ``1/cnt``); ``-inf`` and fully masked rows have
    ``m = -inf`` and NaN rows ``m = NaN``. Three passes over the data: the maximum,
    the sums (``cnt`` and ``s`` in one), and the output.
    """

    axis: tuple[int, ...] | None
    m: Array  # row maximum, NaN if the row has a NaN (keepdims)
    fin: Array  # the maximum is finite (keepdims)
    m0: Array  # m where finite, else 0 (keepdims)
    live: Array  # entry takes part: finite row and not -inf (full shape, fused)
    is_top: Array  # entry equals the row maximum (full shape, fused)
    d: Array  # x - m0 on live entries, 0 elsewhere (rounded in fast mode)
    d_lo: Array | None  # the rounding error of d (fast mode), else None
    e: Array  # exp(d + d_lo) on live entries
    cnt: Array  # entries equal to the maximum (keepdims)
    s: Array  # sum of e over the live non-maximal entries (keepdims)


def lean_applies(plan: Plan, temperature: float) -> bool:
    """Whether the lean path computes this call (plain arithmetic, no temperature)."""
    return plan.mode != "dd" and temperature == 1.0


def lean_stats(
    plan: Plan, x: Array, axes: tuple[int, ...], where: Array | None, *, split: bool = True
) -> LeanStats:
    xp = plan.xp
    axis = red(axes, x.ndim)
    if where is not None:
        x = xp.where(where, x, -math.inf)
    m = xp.max(x, axis=axis, keepdims=True)
    fin = xp.isfinite(m)
    m0 = xp.where(fin, m, 0.0)
    live = fin & (x > -math.inf)
    xl = xp.where(live, x, m0)
    d = xl - m0
    e = xp.exp(d)
    d_lo = None
    if plan.mode == "plain":  # fast mode: x - max is rounded; correct exp by its error
        _, d_lo = two_sum(xl, -m0)
        e = e + e * d_lo
    is_top = x == m
    if split:
        cnt = xp.sum(xp.astype(is_top, plan.work), axis=axis, keepdims=True)
        s = xp.sum(xp.where(live & ~is_top, e, 0.0), axis=axis, keepdims=True)
    else:
        # softmax needs only cnt + s (the maximal entries have e = exp(0) = 1 exactly)
        # and, in +inf rows, the count of +inf entries: one sum gives both
        top = xp.astype(is_top, plan.work)
        cnt = xp.sum(xp.where(live, e, top), axis=axis, keepdims=True)
        s = xp.zeros_like(cnt)
    return LeanStats(axis, m, fin, m0, live, is_top, d, d_lo, e, cnt, s)


def _lean_special(xp: Any, st: LeanStats, at_inf: Array, other: float) -> Array:
    """Values of the entries that do not take part: +inf rows, NaN rows, the rest."""
    rest = xp.where(xp.isnan(st.m), math.nan, xp.zeros_like(st.m) + other)
    return xp.where(st.is_top & (st.m == math.inf), at_inf, rest)


def lean_softmax(plan: Plan, x: Array, axes: tuple[int, ...], where: Array | None) -> Array:
    """Softmax in three passes over the data: the maximum, one sum, the output.

    ``x`` may still be in its input dtype (the maximum is exact there, so the
    widening to the working dtype fuses into the exponentials). The summed array
    doubles as the numerator: ``exp(x - m)`` on entries that take part, and on the
    others 1 where ``x == m``, else 0. Dividing by the row sum then gives every
    row its limit: ``+inf`` rows share the mass over their ``+inf`` entries, and
    ``-inf`` / fully masked rows (divided by ``inf``) and NaN rows (by NaN) need
    no full-size mask of their own.
    """
    xp = plan.xp
    axis = red(axes, x.ndim)
    if where is not None:
        x = xp.where(where, x, -math.inf)
    m = xp.max(x, axis=axis, keepdims=True)
    fin = xp.isfinite(m)
    m0 = xp.astype(xp.where(fin, m, 0.0), plan.work)
    live = fin & (x > -math.inf)
    xl = xp.where(live, xp.astype(x, plan.work), m0)
    e = xp.exp(xl - m0)
    if plan.mode == "plain":  # fast mode: x - max is rounded; correct exp by its error
        _, d_lo = two_sum(xl, -m0)
        e = e + e * d_lo
    e = xp.where(live, e, xp.astype(x == m, plan.work))
    total = xp.sum(e, axis=axis, keepdims=True)
    limit = xp.where(xp.isnan(m), math.nan, xp.full_like(total, math.inf))
    den = xp.where(fin | (m == math.inf), total, limit)
    return to_out(e / den, plan)


def _lean_L(xp: Any, st: LeanStats) -> Array:
    return xp.log1p(xp.where(st.fin, (st.cnt - 1.0) + st.s, 0.0))


def lean_log_softmax(plan: Plan, x: Array, axes: tuple[int, ...], where: Array | None) -> Array:
    xp = plan.xp
    st = lean_stats(plan, x, axes, where)
    v = st.d - _lean_L(xp, st)
    if st.d_lo is not None:
        v = v + st.d_lo
    k = xp.where(st.cnt > 0, st.cnt, 1.0)
    v = xp.where(st.live, v, _lean_special(xp, st, 0.0 - xp.log(k), -math.inf))
    return to_out(v, plan)


def lean_logsumexp(plan: Plan, x: Array, axes: tuple[int, ...], where: Array | None) -> Array:
    """Logsumexp with the reduced axes kept, in the working dtype."""
    xp = plan.xp
    st = lean_stats(plan, x, axes, where)
    return xp.where(st.fin, st.m0 + _lean_L(xp, st), st.m)


def _empty_reduction(x: Array, axes: tuple[int, ...]) -> bool:
    """True when there is nothing to compute: an empty reduced axis or an empty batch."""
    return any(s == 0 for s in x.shape)


def _scaled_stats(
    ar: Arith,
    xw: Array,
    axes: tuple[int, ...],
    where: Array | None,
    temperature: float,
    plan: Plan,
) -> RowStats:
    """Row statistics of ``xw / temperature``: from the exact differences in the
    accurate modes, from the rounded quotients in fast mode (which divides in the
    input precision, as documented)."""
    exact = temperature != 1.0 and plan.mode != "plain"
    return row_stats(
        ar,
        scaled(ar, xw, temperature),
        axes,
        where,
        low_words=temperature != 1.0,
        raw=(xw, temperature) if exact else None,
    )


def softmax(
    x: Array,
    *,
    axes: tuple[int, ...],
    where: Array | None,
    temperature: float,
    plan: Plan,
) -> Array:
    """Softmax of ``x`` over ``axes`` (validated input)."""
    xp = plan.xp
    xw = xp.astype(x, plan.work)
    if _empty_reduction(xw, axes):
        return to_out(xw, plan)
    if lean_applies(plan, temperature):
        floating = dtype_name(x.dtype) in ("float16", "bfloat16", "float32", "float64")
        raw = x if floating else xw  # (NumPy's isdtype refuses ml_dtypes' bfloat16)
        return lean_softmax(plan, raw, axes, where)
    ar = arith_for(plan)
    st = _scaled_stats(ar, xw, axes, where, temperature, plan)
    return to_out(softmax_values(st), plan)


def log_softmax(
    x: Array,
    *,
    axes: tuple[int, ...],
    where: Array | None,
    temperature: float,
    plan: Plan,
) -> Array:
    """Log-softmax of ``x`` over ``axes`` (validated input)."""
    xp = plan.xp
    xw = xp.astype(x, plan.work)
    if _empty_reduction(xw, axes):
        return to_out(xw, plan)
    if lean_applies(plan, temperature):
        return lean_log_softmax(plan, xw, axes, where)
    ar = arith_for(plan)
    st = _scaled_stats(ar, xw, axes, where, temperature, plan)
    return to_out(log_softmax_values(st), plan)


def _squeeze(xp: Any, v: Array, axes: tuple[int, ...], keepdims: bool) -> Array:
    if keepdims or not axes:
        return v
    return xp.squeeze(v, axis=axes)


def logsumexp(
    x: Array,
    *,
    axes: tuple[int, ...],
    b: Array | None,
    where: Array | None,
    keepdims: bool,
    return_sign: bool,
    plan: Plan,
) -> Array | tuple[Array, Array]:
    """Logsumexp of ``x`` over ``axes``, optionally weighted by ``b`` (validated input)."""
    xp = plan.xp
    xw = xp.astype(x, plan.work)
    if _empty_reduction(xw, axes):
        shape = tuple(1 if i in axes else s for i, s in enumerate(xw.shape))
        res = xp.full(shape, -math.inf, dtype=plan.work, device=plan.device)
        res = _squeeze(xp, res, axes, keepdims)
        out = to_out(res, plan)
        if return_sign:
            return out, xp.zeros_like(out)
        return out
    ar = arith_for(plan)
    if b is None:
        if lean_applies(plan, 1.0):
            lse = lean_logsumexp(plan, xw, axes, where)
        else:
            lse = logsumexp_values(row_stats(ar, ar.lift(xw), axes, where))
        sign = xp.where(lse == -math.inf, xp.zeros_like(lse), 1.0)
        sign = xp.where(xp.isnan(lse), math.nan, sign)
    else:
        lse, sign = _weighted_logsumexp(ar, xw, xp.astype(b, plan.work), axes, where)
        if not return_sign:
            lse = xp.where(sign < 0, math.nan, lse)
    lse = to_out(_squeeze(xp, lse, axes, keepdims), plan)
    if return_sign:
        return lse, to_out(_squeeze(xp, sign, axes, keepdims), plan)
    return lse


def _log_abs(ar: Arith, v: Any) -> Any:
    """``log|v|`` as an arith value, for a nonzero finite arith value ``v``."""
    xp = ar.xp
    if isinstance(ar, PlainArith):
        return xp.log(xp.abs(v))
    hi, lo = v
    neg = hi < 0
    a = (xp.where(neg, -hi, hi), xp.where(neg, -lo, lo))
    near_one = (a[0] > 0.5) & (a[0] < 2.0)
    # |v| close to 1: log1p of the exact difference |v| - 1
    a1 = ar.sub(ar.where(near_one, a, 1.0), ar.lift(xp.ones_like(hi)))
    l1 = ar.log1p(ar.where(near_one, a1, 0.0))
    # elsewhere: a Newton step on log with the double-word exp
    safe = xp.where(near_one | (a[0] <= 0), 1.0, a[0])
    safe_lo = xp.where(near_one | (a[0] <= 0), 0.0, a[1])
    l0 = xp.log(safe)
    ex = ar.exp((-l0, xp.zeros_like(l0)))
    prod = ar.mul((safe, safe_lo), ex)
    delta = ar.sub(prod, ar.lift(xp.ones_like(hi)))
    l2 = ar.add(ar.lift(l0), delta)
    return ar.select(near_one, l1, l2)


def _split_const(value: float, name: str) -> tuple[float, float]:
    """``value`` as its rounding to the dtype called ``name`` plus the remainder.

    Both parts are Python floats, so building them never touches an array (and never
    concretises a traced one). The remainder is zero in float64.
    """
    narrow: dict[str, type[np.floating[Any]]] = {"float16": np.float16, "float32": np.float32}
    head = float(narrow[name](value)) if name in narrow else value
    return head, value - head


def _weighted_logsumexp(
    ar: Arith,
    xw: Array,
    bw: Array,
    axes: tuple[int, ...],
    where: Array | None,
) -> tuple[Array, Array]:
    """``log|sum b exp(x)|`` and its sign (keepdims). Entries with ``b == 0`` are ignored."""
    xp = ar.xp
    xw, bw = xp.broadcast_arrays(xw, bw)
    mask = ~(bw == 0.0)
    if where is not None:
        mask = mask & xp.broadcast_to(where, xw.shape)
    st = row_stats(ar, ar.lift(xw), axes, mask)
    # NaN or infinite weights decide a finite row as in SciPy, where b exp(x - M) is then
    # NaN or infinite (an infinite weight on a -inf logit: inf * 0, NaN); they are kept
    # out of the sum itself
    bfin = xp.isfinite(bw)
    odd = mask & ~bfin
    above = xw > -math.inf
    ax = st.axis
    b_nan = xp.any(odd & (xp.isnan(bw) | ~above), axis=ax, keepdims=True)
    b_pinf = xp.any(odd & above & (bw == math.inf), axis=ax, keepdims=True)
    b_ninf = xp.any(odd & above & (bw == -math.inf), axis=ax, keepdims=True)
    b_live = xp.where(st.live & bfin, bw, 0.0)
    # weights so large that the sum would overflow: summed times 2^-e (exact), the
    # largest near 2^768, and e ln 2 added to the logarithm
    bmax = xp.max(xp.abs(b_live), axis=ax, keepdims=True)
    big = bmax > 2.0**768
    e = xp.where(big, xp.floor(xp.log2(xp.where(big, bmax, 1.0))) - 768.0, 0.0)
    terms = ar.mul(ar.lift(b_live * xp.pow(ar.const(2.0), -e)), st.e)
    total = ar.sum(terms, st.axis, st.n)
    tot_hi = ar.hi(total)
    nonzero = ~(tot_hi == 0.0)
    safe_total = ar.where(nonzero & st.fin, total, 1.0)
    L = _log_abs(ar, safe_total)
    # ln 2 as a head rounded to the working dtype and its tail, both from Python floats
    # (a float() of an array would concretise a JAX tracer)
    ln2_hi, ln2_lo = _split_const(math.log(2.0), dtype_name(ar.dtype))
    ln2 = ar.add(ar.lift(e * ar.const(ln2_hi)), ar.lift(e * ar.const(ln2_lo)))
    lse = xp.where(nonzero, ar.value(ar.add(ar.add(st.top, L), ln2)), -math.inf)
    zero = xp.zeros_like(tot_hi)
    sign = xp.where(tot_hi > 0, 1.0, xp.where(tot_hi < 0, -1.0, zero))
    special = st.fin & (b_pinf | b_ninf)
    lse = xp.where(special, math.inf, lse)
    sign = xp.where(special, xp.where(b_pinf, 1.0, zero - 1.0), sign)
    odd_nan = st.fin & (b_nan | (b_pinf & b_ninf))
    lse = xp.where(odd_nan, math.nan, lse)
    sign = xp.where(odd_nan, math.nan, sign)
    # +inf rows: the weights of the +inf entries decide the sign; opposite infinities cancel to NaN
    b_inf = xp.sum(xp.where(st.pin, bw, 0.0), axis=st.axis, keepdims=True)
    inf_sign = xp.where(b_inf > 0, 1.0, xp.where(b_inf < 0, -1.0, zero + math.nan))
    lse = xp.where(st.posinf, xp.where(b_inf == 0.0, math.nan, zero + math.inf), lse)
    sign = xp.where(st.posinf, inf_sign, sign)
    # rows with nothing left: -inf with sign 0; NaN rows: NaN
    empty = ~st.fin & ~st.posinf & ~st.isnan
    lse = xp.where(empty, -math.inf, lse)
    sign = xp.where(empty, 0.0, sign)
    lse = xp.where(st.isnan, math.nan, lse)
    sign = xp.where(st.isnan, math.nan, sign)
    return lse, sign
