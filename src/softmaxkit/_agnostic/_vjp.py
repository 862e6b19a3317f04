"""Array-agnostic vector-Jacobian products of softmax, log-softmax and logsumexp."""

from __future__ import annotations

from typing import Any

from .._namespace import Plan, to_out
from ._normalize import red, softmax

__all__ = ["log_softmax_vjp", "logsumexp_vjp", "softmax_vjp"]

Array = Any


def softmax_vjp(y: Array, g: Array, *, axes: tuple[int, ...], plan: Plan) -> Array:
    """``y * (g - sum(y * g))`` over ``axes``."""
    xp = plan.xp
    yw = xp.astype(y, plan.work)
    gw = xp.astype(g, plan.work)
    dot = xp.sum(yw * gw, axis=red(axes, yw.ndim), keepdims=True)
    return to_out(yw * (gw - dot), plan)


def log_softmax_vjp(y: Array, g: Array, *, axes: tuple[int, ...], plan: Plan) -> Array:
    """``g - exp(y) * sum(g)`` over ``axes``."""
    xp = plan.xp
    yw = xp.astype(y, plan.work)
    gw = xp.astype(g, plan.work)
    total = xp.sum(gw, axis=red(axes, yw.ndim), keepdims=True)
    return to_out(gw - xp.exp(yw) * total, plan)


def logsumexp_vjp(
    x: Array,
    g: Array,
    where: Array | None,
    *,
    axes: tuple[int, ...],
    kept: tuple[int, ...],
    plan: Plan,
) -> Array:
    """``g * softmax(x)``, with exactly 0 where the probability is 0."""
    xp = plan.xp
    gk = xp.reshape(xp.astype(g, plan.work), kept)
    p = xp.astype(softmax(x, axes=axes, where=where, temperature=1.0, plan=plan), plan.work)
    return to_out(xp.where(p == 0.0, 0.0, p * gk), plan)
