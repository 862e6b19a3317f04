"""Array-agnostic sigmoid, log-sigmoid and binary cross-entropy with logits.

Everything is built from ``z = exp(-|x|)``, which never overflows:

* ``sigmoid(x) = 1 / (1 + z)`` for ``x >= 0`` and ``z / (1 + z)`` otherwise;
* ``log_sigmoid(x) = min(x, 0) - log1p(z)``;
* ``softplus(x) = max(x, 0) + log1p(z)``;
* ``bce(x, y) = pos_weight * y * softplus(-x) + (1 - y) * softplus(x)``, a sum of
  two non-negative terms, so there is no cancellation for large ``|x|`` (the form
  ``(1 - y) x - log_sigmoid(x)`` loses every digit for ``x << 0``).

Infinite logits take their limits (``y = 1, x = +inf`` and ``y = 0, x = -inf``
give 0), and ``0 * inf`` is never formed.
"""

from __future__ import annotations

import math
from typing import Any

from .._namespace import Plan, to_out
from ._dd import DDArith
from ._losses import sum_and_mean
from ._normalize import arith_for

__all__ = ["binary_cross_entropy_with_logits", "log_sigmoid", "sigmoid"]

Array = Any


def _parts(plan: Plan, x: Array) -> tuple[Any, Array, Any, Any, Any]:
    """Return ``(arith, x_safe, z, log1p(z), tiny)`` with ``x_safe`` finite.

    ``tiny`` is ``None`` except in double-word arithmetic, where it is
    ``(mask, lz_sc, scale)``: where ``z = exp(-|x|)`` is below
    ``2**(emin + p + 1)``, ``log1p(z) = z`` to far better than the final rounding,
    and ``lz_sc`` holds it times ``2**scale`` (full precision in both words), so a
    result equal to it can be rounded once (see ``row_stats``).
    """
    xp = plan.xp
    ar = arith_for(plan)
    xs = xp.where(xp.isfinite(x), x, 0.0)
    scale = ar.c.row_scale if isinstance(ar, DDArith) else 0
    z_sc = ar.exp(ar.lift(-xp.abs(xs)), scale)
    z = ar.ldexp(z_sc, -scale)
    lz = ar.log1p(z)
    tiny = None
    if scale:
        thr = float(xp.finfo(xs.dtype).smallest_normal) * 2.0 ** (ar.c.precision + 1)
        mask = ar.hi(z) < thr
        tiny = (mask, ar.where(mask, z_sc, 0.0), scale)
    return ar, xs, z, lz, tiny


def _sigmoid_words(plan: Plan, x: Array) -> tuple[Any, Array, int, Any, Any]:
    """``(arith, x_safe, scale, big, small_sc)`` in the working arithmetic, unrounded.

    With ``z = exp(-|x|)``: ``big = 1 / (1 + z)`` (the sigmoid of ``|x|``) and
    ``small_sc = z / (1 + z)`` times ``2**scale`` (the sigmoid of ``-|x|``).
    """
    xp = plan.xp
    ar = arith_for(plan)
    xs = xp.where(xp.isfinite(x), x, 0.0)
    # z is formed times 2**scale in double-word arithmetic, so z / (1 + z) is rounded
    # once even where it (or its low word) is below the normal range (see row_stats)
    scale = ar.c.row_scale if isinstance(ar, DDArith) else 0
    z_sc = ar.exp(ar.lift(-xp.abs(xs)), scale)
    # 1 as data, not as a constant: under jax.jit XLA folds (1 + z) - 1 to z, which
    # would cancel TwoSum's error term (xs is finite here, so this is exactly 1)
    one = xp.where(xp.isnan(xs), 2.0, xp.ones_like(xs))
    D = ar.add(ar.lift(one), ar.ldexp(z_sc, -scale))
    return ar, xs, scale, ar.div(ar.lift(one), D), ar.div(z_sc, D)


def _sigmoid_pair(plan: Plan, x: Array) -> tuple[Array, Array]:
    """``sigmoid(x)`` and ``sigmoid(-x)`` in the working dtype, each without cancellation."""
    xp = plan.xp
    ar, xs, scale, big_w, small_sc = _sigmoid_words(plan, x)
    big = ar.value(big_w)
    small = ar.scaled_value(small_sc, -scale)
    pos = xs >= 0
    sp = xp.where(pos, big, small)
    sn = xp.where(pos, small, big)
    sp = xp.where(x == math.inf, 1.0, xp.where(x == -math.inf, 0.0, sp))
    sn = xp.where(x == math.inf, 0.0, xp.where(x == -math.inf, 1.0, sn))
    nan = xp.isnan(x)
    return xp.where(nan, math.nan, sp), xp.where(nan, math.nan, sn)


def sigmoid(x: Array, *, plan: Plan) -> Array:
    xp = plan.xp
    s, _ = _sigmoid_pair(plan, xp.astype(x, plan.work))
    return to_out(s, plan)


def log_sigmoid(x: Array, *, plan: Plan) -> Array:
    xp = plan.xp
    xw = xp.astype(x, plan.work)
    ar, xs, _, lz, tiny = _parts(plan, xw)
    v = ar.value(ar.sub(ar.lift(xp.where(xs < 0, xs, 0.0)), lz))
    if tiny is not None:  # x >> 0: -log1p(z) alone, rounded once
        mask, lz_sc, sc = tiny
        v = xp.where(mask & (xs >= 0), 0.0 - ar.scaled_value(lz_sc, -sc), v)
    v = xp.where(xw == -math.inf, -math.inf, xp.where(xw == math.inf, 0.0, v))
    v = xp.where(xp.isnan(xw), math.nan, v)
    return to_out(v, plan)


def binary_cross_entropy_with_logits(
    logits: Array,
    target: Array,
    *,
    weight: Array | None,
    pos_weight: Array | None,
    reduction: str,
    return_grad: bool,
    plan: Plan,
) -> Array | tuple[Array, Array]:
    xp = plan.xp
    x = xp.astype(logits, plan.work)
    y = xp.astype(target, plan.work)
    x, y = xp.broadcast_arrays(x, y)
    ar, xs, _, lz, tiny = _parts(plan, x)
    sp_pos = ar.add(ar.lift(xp.where(xs > 0, xs, 0.0)), lz)  # softplus(x)
    sp_neg = ar.add(ar.lift(xp.where(xs < 0, -xs, 0.0)), lz)  # softplus(-x)
    # Softplus terms of logits near the top of the range make the weighted products
    # below overflow (and Dekker's splitting in double-word products overflows from
    # about 2**(emax - p/2), 1e300 in float64): for such logits they are scaled
    # down by 2**-p (exactly) and the loss is scaled back after, an infinity only
    # where the loss itself passes the largest float.
    fi = xp.finfo(xs.dtype)
    p_bits = round(-math.log2(float(fi.eps))) + 1
    shift = 2.0**-p_bits
    huge = xp.abs(xs) > float(fi.max) * 2.0 ** -(2 * p_bits)
    k = xp.where(huge, xp.full_like(xs, shift), xp.ones_like(xs))
    if isinstance(ar, DDArith):
        sp_pos = (ar.hi(sp_pos) * k, sp_pos[1] * k)
        sp_neg = (ar.hi(sp_neg) * k, sp_neg[1] * k)
    else:
        sp_pos = sp_pos * k
        sp_neg = sp_neg * k
    c_neg = 1.0 - y
    c_pos = y if pos_weight is None else xp.astype(pos_weight, plan.work) * y
    c_pos = xp.broadcast_to(c_pos, x.shape)
    # 1 - y exactly, as a double-word difference (rounding it costs up to half an ulp
    # of the loss); 1 comes from data so that jax.jit cannot fold (1 - y) - 1 to -y
    one = xp.where(xp.isnan(y), 2.0, xp.ones_like(y))
    c_neg_w = ar.sub(ar.lift(one), ar.lift(y))
    total = ar.add(ar.mul(ar.lift(c_pos), sp_neg), ar.mul(c_neg_w, sp_pos))
    if weight is not None:
        wb = xp.broadcast_to(xp.astype(weight, plan.work), x.shape)
        total = ar.mul(ar.lift(wb), total)
    else:
        wb = None
    loss_el = ar.value(total)
    # the loss of huge logits scaled back
    room = xp.abs(loss_el) <= float(fi.max) * shift
    back = xp.where(huge & room, loss_el, 0.0) / shift
    over = xp.where(loss_el < 0, xp.full_like(loss_el, -math.inf), math.inf)
    loss_el = xp.where(huge, xp.where(room, back, over), loss_el)
    if tiny is not None:
        # the loss is c * log1p(z) alone (y = 1 for x >> 0, y = 0 for x << 0): round it
        # once from the scaled log1p(z), as log_sigmoid does
        mask, lz_sc, sc = tiny
        pos = xs >= 0
        alone = mask & xp.where(pos, ar.hi(c_neg_w) == 0.0, c_pos == 0.0)
        c = ar.lift(xp.where(pos, c_pos, ar.hi(c_neg_w)))
        if wb is not None:
            c = ar.mul(c, ar.lift(wb))
        t = ar.scaled_value(ar.mul(c, ar.where(alone, lz_sc, 0.0)), -sc)
        loss_el = xp.where(alone, t, loss_el)
    # limits at infinite logits: only the term whose softplus is infinite survives
    zero = xp.zeros_like(x)
    w_zero = (zero != 0.0) if wb is None else (wb == 0.0)
    at_pinf = xp.where((c_neg == 0.0) | w_zero, zero, math.inf)
    at_ninf = xp.where((c_pos == 0.0) | w_zero, zero, math.inf)
    loss_el = xp.where(x == math.inf, at_pinf, xp.where(x == -math.inf, at_ninf, loss_el))
    loss_el = xp.where(xp.isnan(x) | xp.isnan(y), math.nan, loss_el)

    if reduction == "none":
        loss = to_out(loss_el, plan)
        scale = None
    else:
        n = 1
        for s in x.shape:
            n *= int(s)
        total, mean = sum_and_mean(xp, loss_el, float(n))
        if reduction == "sum":
            loss = to_out(total, plan)
            scale = 1.0
        else:
            loss = to_out(mean if n else total, plan)
            scale = 1.0 / n if n else 0.0
    if not return_grad:
        return loss
    if isinstance(ar, DDArith):
        g = _bce_grad_dd(ar, plan, x, c_neg_w, y, pos_weight, wb)
    else:
        sp, sn = _sigmoid_pair(plan, x)
        g = c_neg * sp - c_pos * sn
        if wb is not None:
            g = wb * g
    if scale is not None and scale != 1.0:
        g = g * scale
    return loss, to_out(g, plan)


def _bce_grad_dd(
    ar: DDArith,
    plan: Plan,
    x: Array,
    c_neg_w: tuple[Array, Array],
    y: Array,
    pos_weight: Array | None,
    wb: Array | None,
) -> Array:
    """``w ((1 - y) sigmoid(x) - w_+ y sigmoid(-x))`` in double-word, rounded once.

    The two products cancel where ``sigmoid(x)`` is near ``y`` (``x = 1.609``,
    ``y = 0.8317``: a 545th of either is left), so ``1 - y``, ``w_+ y`` and both
    sigmoids keep their low words; formed in the working dtype the gradient was
    28 ulp off there.
    """
    xp = plan.xp
    _, xs, scale, big, small_sc = _sigmoid_words(plan, x)
    small = ar.ldexp(small_sc, -scale)
    pos = xs >= 0
    sp = ar.select(pos, big, small)
    sn = ar.select(pos, small, big)
    # the limits at infinite logits: sigmoid 1 and 0 exactly
    pinf, ninf = x == math.inf, x == -math.inf
    ends = pinf | ninf
    sp = (xp.where(pinf, 1.0, xp.where(ninf, 0.0, sp[0])), xp.where(ends, 0.0, sp[1]))
    sn = (xp.where(pinf, 0.0, xp.where(ninf, 1.0, sn[0])), xp.where(ends, 0.0, sn[1]))
    yb = xp.broadcast_to(y, x.shape)
    c_pos = ar.lift(yb)
    if pos_weight is not None:
        pwb = xp.broadcast_to(xp.astype(pos_weight, plan.work), x.shape)
        c_pos = ar.mul(ar.lift(pwb), c_pos)
    g = ar.sub(ar.mul(c_neg_w, sp), ar.mul(c_pos, sn))
    if wb is not None:
        g = ar.mul(ar.lift(wb), g)
    return xp.where(xp.isnan(x), math.nan, ar.value(g))
