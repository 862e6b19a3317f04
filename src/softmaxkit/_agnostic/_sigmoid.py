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

from .._namespace import Plan
from ._dd import DDArith
from ._normalize import arith_for

__all__ = ["binary_cross_entropy_with_logits", "log_sigmoid", "sigmoid"]

Array = Any


def _parts(plan: Plan, x: Array) -> tuple[Any, Array, Any, Any]:
    """Return ``(arith, x_safe, z, log1p(z))`` with ``x_safe`` finite."""
    xp = plan.xp
    ar = arith_for(plan)
    xs = xp.where(xp.isfinite(x), x, 0.0)
    z = ar.exp(ar.lift(-xp.abs(xs)))
    lz = ar.log1p(z)
    return ar, xs, z, lz


def _sigmoid_pair(plan: Plan, x: Array) -> tuple[Array, Array]:
    """``sigmoid(x)`` and ``sigmoid(-x)`` in the working dtype, each without cancellation."""
    xp = plan.xp
    ar = arith_for(plan)
    xs = xp.where(xp.isfinite(x), x, 0.0)
    # z is formed times 2**scale in double-word arithmetic, so z / (1 + z) is rounded
    # once even where it (or its low word) is below the normal range (see row_stats)
    scale = ar.c.row_scale if isinstance(ar, DDArith) else 0
    z_sc = ar.exp(ar.lift(-xp.abs(xs)), scale)
    D = ar.add(ar.lift(xp.ones_like(xs)), ar.ldexp(z_sc, -scale))
    big = ar.value(ar.div(ar.lift(xp.ones_like(xs)), D))
    small = ar.scaled_value(ar.div(z_sc, D), -scale)
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
    return xp.astype(s, plan.out)


def log_sigmoid(x: Array, *, plan: Plan) -> Array:
    xp = plan.xp
    xw = xp.astype(x, plan.work)
    ar, xs, _, lz = _parts(plan, xw)
    v = ar.value(ar.sub(ar.lift(xp.where(xs < 0, xs, 0.0)), lz))
    v = xp.where(xw == -math.inf, -math.inf, xp.where(xw == math.inf, 0.0, v))
    v = xp.where(xp.isnan(xw), math.nan, v)
    return xp.astype(v, plan.out)


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
    ar, xs, _, lz = _parts(plan, x)
    sp_pos = ar.add(ar.lift(xp.where(xs > 0, xs, 0.0)), lz)  # softplus(x)
    sp_neg = ar.add(ar.lift(xp.where(xs < 0, -xs, 0.0)), lz)  # softplus(-x)
    c_neg = 1.0 - y
    c_pos = y if pos_weight is None else xp.astype(pos_weight, plan.work) * y
    c_pos = xp.broadcast_to(c_pos, x.shape)
    total = ar.add(ar.mul(ar.lift(c_pos), sp_neg), ar.mul(ar.lift(c_neg), sp_pos))
    if weight is not None:
        wb = xp.broadcast_to(xp.astype(weight, plan.work), x.shape)
        total = ar.mul(ar.lift(wb), total)
    else:
        wb = None
    loss_el = ar.value(total)
    # limits at infinite logits: only the term whose softplus is infinite survives
    zero = xp.zeros_like(x)
    w_zero = (zero != 0.0) if wb is None else (wb == 0.0)
    at_pinf = xp.where((c_neg == 0.0) | w_zero, zero, math.inf)
    at_ninf = xp.where((c_pos == 0.0) | w_zero, zero, math.inf)
    loss_el = xp.where(x == math.inf, at_pinf, xp.where(x == -math.inf, at_ninf, loss_el))
    loss_el = xp.where(xp.isnan(x) | xp.isnan(y), math.nan, loss_el)

    n = 1
    for s in x.shape:
        n *= int(s)
    if reduction == "none":
        loss = xp.astype(loss_el, plan.out)
        scale = None
    elif reduction == "sum":
        loss = xp.astype(xp.sum(loss_el), plan.out)
        scale = 1.0
    else:
        loss = xp.astype(xp.sum(loss_el) / n if n else xp.sum(loss_el), plan.out)
        scale = 1.0 / n if n else 0.0
    if not return_grad:
        return loss
    sp, sn = _sigmoid_pair(plan, x)
    g = c_neg * sp - c_pos * sn
    if wb is not None:
        g = wb * g
    if scale is not None and scale != 1.0:
        g = g * scale
    return loss, xp.astype(g, plan.out)
