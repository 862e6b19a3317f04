"""Array-agnostic cross-entropy and negative log-likelihood, with their gradients.

Per item (one reduced row of ``logits`` along the class axis) the loss with a
class-index target ``t`` is ``L + (a - x_t)`` in the notation of
:mod:`._normalize`: no cancellation, and the tiny loss of a confident correct
prediction keeps all its digits. The gradient at the target uses
``p_t - 1 = -(D - e_t) / D`` with ``D = count + s``, which is exact where
``1 - p_t`` is tiny.

Conventions (PyTorch's, except where PyTorch returns NaN):

* class weights ``w``: ``"mean"`` divides by the summed weights of the counted
  items for index targets, by the number of counted items for probability targets;
* label smoothing ``eps`` mixes the target with the uniform distribution over the
  classes ``where`` leaves in: ``(1 - eps) * onehot + eps / K``;
* z-loss adds ``z * logsumexp(x)**2`` per item, weighted like the item;
* an item is *counted* unless its target equals ``ignore_index`` or ``where``
  masks its whole row; uncounted items have loss 0 and gradient 0, and a
  ``"mean"`` over no counted item is 0.
"""

from __future__ import annotations

import math
from typing import Any

from .._namespace import Plan, device_of, to_out
from ._dd import DDArith, two_sum
from ._normalize import (
    RowStats,
    arith_for,
    denominator,
    log_softmax_values,
    logsumexp_values,
    row_stats,
    softmax_values,
)

__all__ = ["cross_entropy", "nll_loss"]

Array = Any


def _class_shape(ndim: int, axis: int, size: int) -> tuple[int, ...]:
    shape = [1] * ndim
    shape[axis] = size
    return tuple(shape)


def _class_indices(xp: Any, x: Array, axis: int, plan: Plan) -> Array:
    """``0 .. C-1`` along ``axis`` (size 1 along the others). In a TF graph the class
    count may be unknown until run time: the TF namespace then gives it as a tensor."""
    C = x.shape[axis]
    n = C if C is not None else xp.size_along(x, axis)
    return xp.reshape(xp.arange(n, device=plan.device), _class_shape(x.ndim, axis, -1))


def sum_and_mean(xp: Any, item: Array, den: Any) -> tuple[Array, Array]:
    """``sum(item)`` and ``sum(item) / den`` (0 where ``den`` is 0), the mean finite
    wherever it is, and without an overflow raised on the way.

    Items whose sum may leave the float range (the largest at least ``max / 2n``)
    are summed times ``2**-64`` (exact) and scaled back; others as they are (scaling
    tiny items could round them, and their sum's bits stay NumPy's). NaN items take
    the plain sum, and so stay NaN.
    """
    size = math.prod(item.shape)
    n = max(size, 1)
    if isinstance(den, (int, float)):
        den = xp.asarray(float(den), dtype=item.dtype, device=device_of(item))
    amax = xp.max(xp.abs(item)) if size else xp.zeros((), dtype=item.dtype)
    fmax = float(xp.finfo(item.dtype).max)
    ok = ~(amax >= fmax / (2 * n))
    plain = xp.sum(xp.where(ok, item, 0.0))
    scaled = xp.sum(xp.where(ok, 0.0, item) * 2.0**-64)

    def unscale(v: Array) -> Array:  # v 2^64, or an infinity where that overflows
        fits = xp.abs(v) < fmax * 2.0**-64
        inf = xp.where(v > 0, math.inf, xp.where(v < 0, -math.inf, v))  # NaN stays NaN
        return xp.where(fits, xp.where(fits, v, 0.0) * 2.0**64, inf)

    total = xp.where(ok, plain, unscale(scaled))
    safe = xp.where(den != 0, den, 1.0)
    mean = xp.where(ok, plain / safe, unscale(scaled / safe))
    return total, xp.where(den != 0, mean, 0.0)


def _reduce(
    xp: Any, item: Array, den: Array, reduction: str, plan: Plan
) -> tuple[Array, Array | None]:
    """Apply the reduction; return the result and the gradient scale (or ``None`` for 'none')."""
    if reduction == "none":
        return to_out(item, plan), None
    total, mean = sum_and_mean(xp, item, den)
    if reduction == "sum":
        return to_out(total, plan), xp.asarray(1.0, dtype=plan.work, device=plan.device)
    safe = xp.where(den != 0, den, 1.0)
    scale = xp.where(den != 0, 1.0 / safe, 0.0)
    return to_out(mean, plan), scale


def weighted(xp: Any, c: Any, v: Array) -> Array:
    """``c * v`` with ``0 * inf = 0``: a term of weight zero adds nothing, even where
    its loss is infinite (a -inf or masked logit, a target of zero class weight);
    NaN stays NaN. ``c`` is a scalar or an array broadcasting with ``v``."""
    return c * xp.where((c == 0) & (xp.abs(v) == math.inf), 0.0, v)


def cross_entropy(
    logits: Array,
    target: Array,
    *,
    axis: int,
    target_is_index: bool,
    weight: Array | None,
    ignore_index: int | None,
    label_smoothing: float,
    z_loss: float,
    reduction: str,
    where: Array | None,
    return_grad: bool,
    plan: Plan,
) -> Array | tuple[Array, Array]:
    """Softmax cross-entropy of validated inputs (``axis`` non-negative)."""
    xp = plan.xp
    ar = arith_for(plan)
    x = xp.astype(logits, plan.work)
    ndim = x.ndim
    if any(s == 0 for s in x.shape):
        return _empty_loss(xp, x, axis, reduction, return_grad, plan)
    st = row_stats(ar, ar.lift(x), (axis,), where)
    mask = xp.ones_like(x, dtype=xp.bool) if where is None else xp.broadcast_to(where, x.shape)
    n_mask = xp.sum(xp.astype(mask, plan.work), axis=axis, keepdims=True)
    # nothing left in the row (all masked or all -inf): the item is not counted
    row_empty = ~st.fin & ~st.posinf & ~st.isnan
    w = None
    if weight is not None:
        w = xp.reshape(xp.astype(weight, plan.work), _class_shape(ndim, axis, -1))
    eps = float(label_smoothing)
    lse = logsumexp_values(st)  # keepdims
    zterm = z_loss * lse * lse if z_loss else None
    classes = _class_indices(xp, x, axis, plan)
    k_safe = xp.where(n_mask > 0, n_mask, 1.0)

    if target_is_index:
        t = xp.expand_dims(target, axis=axis)
        ignored = xp.zeros_like(t, dtype=xp.bool) if ignore_index is None else (t == ignore_index)
        t_safe = xp.where(ignored, xp.zeros_like(t), t)
        onehot = classes == xp.astype(t_safe, classes.dtype)
        counted = ~ignored & ~row_empty
        d_t = ar.gather(onehot & st.live, st.d, axis)
        t_live = xp.any(onehot & st.live, axis=axis, keepdims=True)
        fin_t = xp.isfinite(ar.hi(d_t))  # -inf: more than the largest float below the max
        nll = ar.value(ar.sub(st.L, ar.where(fin_t, d_t, 0.0)))
        if st.L_tiny is not None:  # the target is the lone maximum and the loss tiny
            nll = xp.where((ar.hi(d_t) == 0.0) & ~xp.isnan(st.L_tiny), st.L_tiny, nll)
        nll = xp.where(t_live & fin_t, nll, math.inf)
        t_pin = xp.any(onehot & st.pin, axis=axis, keepdims=True)
        nll = xp.where(st.posinf, xp.where(t_pin, xp.log(st.k), math.inf), nll)
        nll = xp.where(st.isnan, math.nan, nll)
        w_t = (
            xp.ones_like(nll)
            if w is None
            else xp.sum(xp.where(onehot, w, 0.0), axis=axis, keepdims=True)
        )
        core = weighted(xp, 1.0 - eps, nll) if eps else nll
        if zterm is not None:
            core = core + zterm
        item = weighted(xp, w_t, core)
        neg_ls = None
        if eps:
            neg_ls = -log_softmax_values(st)
            wl = neg_ls if w is None else weighted(xp, w, neg_ls)
            smooth = xp.sum(xp.where(mask, wl, 0.0), axis=axis, keepdims=True)
            item = item + (eps / k_safe) * smooth
        if isinstance(ar, DDArith) and (eps or z_loss):
            dd = _dd_index_item(ar, st, onehot, w, w_t, eps, z_loss, k_safe, axis)
            item = _overlay(xp, item, dd)
        item = xp.where(counted, item, 0.0)
        den = xp.sum(xp.where(counted, w_t, 0.0))
    else:
        p_t = xp.astype(target, plan.work)
        q = p_t
        if eps:
            q = xp.where(mask, (1.0 - eps) * p_t + eps / k_safe, p_t)
        counted = ~row_empty
        neg_ls = -log_softmax_values(st)
        wq = q if w is None else w * q
        # 0 * log(0) = 0: classes without target mass contribute nothing, even at -inf
        # logits; where -log p is finite they take part (an exact 0), so that the
        # derivative in the target there is -log p, not 0
        part = (wq != 0.0) | xp.isfinite(neg_ls)
        contrib = xp.where(part, wq * xp.where(part, neg_ls, 0.0), 0.0)
        item = xp.sum(contrib, axis=axis, keepdims=True)
        if zterm is not None:
            item = item + zterm
        if isinstance(ar, DDArith):
            dd = _dd_prob_item(ar, st, p_t, mask, w, eps, z_loss, k_safe, axis)
            item = _overlay(xp, item, dd)
        item = xp.where(counted, item, 0.0)
        den = xp.sum(xp.astype(counted, plan.work))
        w_t = None

    item_sq = xp.squeeze(item, axis=axis)
    loss, scale = _reduce(xp, item_sq, den, reduction, plan)
    if not return_grad:
        return loss

    p = softmax_values(st)
    if target_is_index:
        grad = _index_grad(ar, st, p, onehot, w, w_t, eps, k_safe, mask, lse, z_loss, axis)
    else:
        grad = _prob_grad(xp, p, q, w, lse, z_loss, axis, None if isinstance(ar, DDArith) else st)
    grad = xp.where(counted, grad, 0.0)
    if scale is not None:
        grad = grad * scale
    if isinstance(ar, DDArith) and (eps or z_loss or not target_is_index):
        rden = _dd_rden(ar, den, reduction)
        if target_is_index:
            dd = _dd_index_grad(ar, st, onehot, w, w_t, eps, z_loss, k_safe, mask, where, rden)
        else:
            dd = _dd_prob_grad(ar, st, p_t, mask, w, eps, z_loss, k_safe, axis, rden)
        grad = _overlay(xp, grad, (dd[0], dd[1] & counted))
    return loss, to_out(grad, plan)


# -- double-word items --------------------------------------------------------------------
#
# With float64 data (double-word arithmetic) the per-item loss is formed in double-word
# from the exact differences ``-log p_j = L - d_j`` and rounded once; summing rounded
# products in the working dtype would err by up to 2.5 ulp. The plain formula above
# stays the answer of every special item (a non-finite row or item, an item whose
# terms would leave the range of the double-word products): each helper returns the
# double-word value and where it applies, and :func:`_overlay` picks it there.


def _overlay(xp: Any, item: Array, dd: tuple[Array, Array]) -> Array:
    val, ok = dd
    return xp.where(ok & xp.isfinite(item) & xp.isfinite(val), val, item)


def _dd_common(
    ar: DDArith, st: RowStats, eps: float, k_safe: Array, w: Array | None
) -> tuple[Any, Any, Any, Array, Array, Array | None, float]:
    """``-log p_j`` (0 where not a live finite entry), ``1 - eps`` and ``eps / k`` in
    double-word, where an entry is used, the rows whose values are in range, the
    weights (0 where out of range) and that range's bound."""
    xp = ar.xp
    # factors up to 2**(emax/4): the products, their sums and Dekker's splitting of
    # the factors stay far inside the float range
    big = 2.0 ** (ar.c.emax // 4)
    use = st.live & xp.isfinite(ar.hi(st.d))
    nls = ar.where(use, ar.sub(st.L, ar.where(use, st.d, 0.0)), 0.0)
    top = xp.max(xp.abs(ar.hi(nls)), axis=st.axis, keepdims=True)
    ok = st.fin & (top <= big)
    nls = ar.where(ok, nls, 0.0)
    if w is not None:
        w_ok = xp.abs(w) <= big
        ok = ok & ~xp.any(~w_ok)  # `any`: the TF namespace has no `all`
        w = xp.where(w_ok, w, 0.0)
    c1 = two_sum(ar.const(1.0), ar.const(-eps))  # 1 - eps, exactly
    ek = ar.div(ar.lift(xp.zeros_like(k_safe) + eps), ar.lift(k_safe))
    return nls, c1, ek, use, ok, w, big


def _dd_zterm(ar: DDArith, st: RowStats, z_loss: float, big: float) -> tuple[Any, Array]:
    """``z * lse**2`` in double-word (keepdims) and the rows where it is in range."""
    xp = ar.xp
    lse = ar.add(st.top, st.L)
    ok = st.fin & (xp.abs(ar.hi(lse)) <= big)
    lse = ar.where(ok, lse, 0.0)
    return ar.mul(ar.lift(ar.const(z_loss)), ar.mul(lse, lse)), ok


def _dd_index_item(
    ar: DDArith,
    st: RowStats,
    onehot: Array,
    w: Array | None,
    w_t: Array,
    eps: float,
    z_loss: float,
    k_safe: Array,
    axis: int,
) -> tuple[Array, Array]:
    """``w_t [(1 - eps) nll + z lse**2] + (eps / k) sum_j w_j (-log p_j)``, rounded once."""
    xp = ar.xp
    nls, c1, ek, use, ok, w, big = _dd_common(ar, st, eps, k_safe, w)
    if z_loss > big:
        return w_t, xp.zeros_like(st.fin)
    # the target's term where it takes part (elsewhere its coefficient is 0, or the
    # plain item is not finite and stays)
    core = ar.gather(onehot & use, nls, axis)
    if eps:
        core = ar.mul(c1, core)
    if z_loss:
        zt, z_ok = _dd_zterm(ar, st, z_loss, big)
        ok = ok & z_ok
        core = ar.add(core, zt)
    if w is not None:
        w_t_ok = xp.abs(w_t) <= big
        ok = ok & w_t_ok
        core = ar.mul(ar.lift(xp.where(w_t_ok, w_t, 0.0)), core)
    if eps:
        terms = nls if w is None else ar.mul(ar.lift(xp.zeros_like(ar.hi(nls)) + w), nls)
        smooth = ar.sum(ar.where(use, terms, 0.0), st.axis, st.n)
        core = ar.add(core, ar.mul(ek, smooth))
    return ar.value(core), ok


def _dd_target_mass(
    ar: DDArith,
    p_t: Array,
    mask: Array,
    w: Array | None,
    eps: float,
    k_safe: Array,
    axis: int,
    big: float,
) -> tuple[Any, Array]:
    """``w_j q_j`` in double-word, ``q = (1 - eps) p + eps / k`` on the classes left in,
    and the rows whose targets and weights are in range (``big``; 0 stands in elsewhere)."""
    xp = ar.xp
    p_ok = xp.abs(p_t) <= big  # (False at NaN)
    ok = ~xp.any(~p_ok, axis=axis, keepdims=True)
    q = ar.lift(xp.where(p_ok, p_t, 0.0))
    if eps:
        c1 = two_sum(ar.const(1.0), ar.const(-eps))  # 1 - eps, exactly
        ek = ar.div(ar.lift(xp.zeros_like(k_safe) + eps), ar.lift(k_safe))
        q = ar.select(mask, ar.add(ar.mul(c1, q), ek), q)
    if w is not None:
        w_ok = xp.abs(w) <= big
        ok = ok & ~xp.any(~w_ok)  # `any`: the TF namespace has no `all`
        q = ar.mul(ar.lift(xp.zeros_like(ar.hi(q)) + xp.where(w_ok, w, 0.0)), q)
    return q, ok


def _dd_prob_item(
    ar: DDArith,
    st: RowStats,
    p_t: Array,
    mask: Array,
    w: Array | None,
    eps: float,
    z_loss: float,
    k_safe: Array,
    axis: int,
) -> tuple[Array, Array]:
    """``sum_j w_j q_j (-log p_j) + z lse**2`` with ``q = (1 - eps) p + eps / k`` on the
    classes left in, rounded once; a class without target mass adds exactly 0."""
    xp = ar.xp
    nls, _, _, use, ok, w, big = _dd_common(ar, st, eps, k_safe, w)
    if z_loss > big:
        return ar.hi(st.L), xp.zeros_like(st.fin)
    wq, q_ok = _dd_target_mass(ar, p_t, mask, w, eps, k_safe, axis, big)
    ok = ok & q_ok
    # 0 * log(0) = 0: only classes with target mass, or whose -log p is finite (an exact
    # 0 whose derivative in the target is -log p), take part (where one with mass is not
    # a live finite entry the plain item is infinite and stays)
    mass = (~(ar.hi(wq) == 0.0) | xp.isfinite(ar.hi(nls))) & use
    terms = ar.mul(ar.where(mass, wq, 0.0), nls)
    item = ar.sum(ar.where(mass, terms, 0.0), st.axis, st.n)
    if z_loss:
        zt, z_ok = _dd_zterm(ar, st, z_loss, big)
        ok = ok & z_ok
        item = ar.add(item, zt)
    return ar.value(item), ok


def _empty_loss(
    xp: Any, x: Array, axis: int, reduction: str, return_grad: bool, plan: Plan
) -> Array | tuple[Array, Array]:
    """No item has a class left (or there are no items): every loss is 0, nothing is counted."""
    batch = tuple(s for i, s in enumerate(x.shape) if i != axis)
    if reduction == "none":
        loss = xp.zeros(batch, dtype=plan.out, device=plan.device)
    else:
        loss = xp.zeros((), dtype=plan.out, device=plan.device)
    if return_grad:
        return loss, xp.zeros(x.shape, dtype=plan.out, device=plan.device)
    return loss


def _index_grad(
    ar: Any,
    st: RowStats,
    p: Array,
    onehot: Array,
    w: Array | None,
    w_t: Array,
    eps: float,
    k_safe: Array,
    mask: Array,
    lse: Array,
    z_loss: float,
    axis: int,
) -> Array:
    xp = ar.xp
    # p_t - 1 = -(D - e_t) / D with D = count + s. The difference is formed without
    # cancellation: a maximal target takes its 1 out of the count (exactly), any other
    # target its term out of s, so 1 - p_t stays exact when it is far below 2**-p.
    D = denominator(st)
    e_t_top = xp.sum(xp.where(onehot & st.is_max, ar.hi(st.e), 0.0), axis=axis, keepdims=True)
    e_t_rest = ar.gather(onehot & ~st.is_max, st.e, axis)
    others = ar.add(ar.lift(st.count - e_t_top), ar.sub(st.s, e_t_rest))
    one_minus = ar.value(ar.div(ar.where(st.fin, others, 0.0), D))
    p_t = xp.sum(xp.where(onehot, p, 0.0), axis=axis, keepdims=True)
    pt_minus_one = xp.where(st.fin, -one_minus, p_t - 1.0)
    g = xp.where(onehot, pt_minus_one, p)
    g = (1.0 - eps) * g if eps else g
    if z_loss:
        lse_safe = xp.where(xp.isfinite(lse), lse, 0.0)
        g = g + (2.0 * z_loss) * lse_safe * p
    g = w_t * g
    if eps:
        wm = xp.where(mask, xp.ones_like(p) if w is None else w, 0.0)
        w_sum = xp.sum(wm, axis=axis, keepdims=True)
        g = g + (eps / k_safe) * (w_sum * p - wm)
    return g


def _prob_grad(
    xp: Any,
    p: Array,
    q: Array,
    w: Array | None,
    lse: Array,
    z_loss: float,
    axis: int,
    st: RowStats | None = None,
) -> Array:
    """``(S + 2 z lse) p_j - w_j q_j`` with ``S = sum_j w_j q_j``. With the row stats of
    plain arithmetic (``st``), a maximal entry of a row whose rest is below 2**-16 is
    formed as ``((num - w_j q_j) - w_j q_j rest) / (1 + rest)``: ``1 - p_j`` there is
    ``rest / (1 + rest)``, which ``num p_j - w_j q_j`` rounds away where the entry holds
    the target mass (a logit 60 above the rest: -4.4e-26, not 0)."""
    wq = q if w is None else w * q
    num = xp.sum(wq, axis=axis, keepdims=True)
    if z_loss:
        lse_safe = xp.where(xp.isfinite(lse), lse, 0.0)
        g = num * p - wq + (2.0 * z_loss) * lse_safe * p
        num = num + (2.0 * z_loss) * lse_safe
    else:
        g = num * p - wq
    if st is not None:
        rest = (st.count - 1.0) + st.s
        dominant = st.is_max & (rest < 2.0**-16)
        # rows without a finite maximum (count 0: rest + 1 is 0) never take this form;
        # their denominator is 1 so that no division by zero is raised for them
        den = xp.where(dominant, rest + 1.0, 1.0)
        g = xp.where(dominant, ((num - wq) - wq * rest) / den, g)
    return g


# -- double-word gradients ----------------------------------------------------------------
#
# With float64 data the gradient of an item, ``g_j = A p_j - B_j`` (``A`` per row, ``B_j``
# per class), cancels where ``p_j`` is close to ``B_j / A``: by the smoothing term, by a
# well-fitted probability target. It is formed in double-word as
#
#     g_j = (A - B_j) p_j - B_j (1 - p_j),
#
# whose factors carry no cancellation of their own: ``A - B_j`` is built from its terms,
# and ``1 - p_j`` is ``(count - 1 + s) / D`` at a maximal entry (the only ones where
# ``p_j`` may exceed 1/2) and ``1 - p_j`` elsewhere. The terms are formed times
# ``2**scale`` (as ``st.e_sc``), the reduction's ``1 / den`` (double-word) is folded in,
# and the result is rounded once. As for the items, the plain gradient stays the
# answer of every special element; the double-word value is overlaid on the elements
# of finite, counted rows whose factors are in range, where both are finite.


def _dd_rden(ar: DDArith, den: Array, reduction: str) -> tuple[Any, Array] | None:
    """``1 / den`` in double-word and where it applies (``den != 0``) for ``"mean"``."""
    if reduction != "mean":
        return None
    xp = ar.xp
    nz = ~(den == 0.0)
    safe = xp.where(nz, den, 1.0)
    return ar.div(ar.lift(xp.ones_like(safe)), ar.lift(safe)), nz


def _dd_lse2z(ar: DDArith, st: RowStats, z_loss: float, big: float) -> tuple[Any, Array]:
    """``2 z lse`` in double-word (keepdims) and the rows where it is in range."""
    xp = ar.xp
    lse = ar.add(st.top, st.L)
    ok = st.fin & (xp.abs(ar.hi(lse)) <= big)
    lse = ar.where(ok, lse, 0.0)
    return ar.mul(ar.lift(ar.const(2.0 * z_loss)), lse), ok


def _dd_grad_finish(
    ar: DDArith,
    st: RowStats,
    amb: Any,
    b: Any,
    bound: Array,
    ok: Array,
    rden: tuple[Any, Array] | None,
) -> tuple[Array, Array]:
    """``((A - B_j) p_j - B_j (1 - p_j)) / den`` rounded once, and where it applies.

    ``bound`` bounds ``|A - B_j| + |B_j|`` per row: up to ``2**(emax / 4)`` (times
    ``1 / den``) every product below stays far inside the float range."""
    xp = ar.xp
    big = 2.0 ** (ar.c.emax // 4)
    sig = 2.0**st.scale
    lim = bound
    if rden is not None:
        lim = bound * xp.where(xp.abs(ar.hi(rden[0])) > 1.0, xp.abs(ar.hi(rden[0])), 1.0)
        ok = ok & rden[1]
    ok = ok & st.fin & (lim <= big)  # (False at NaN)
    amb = ar.where(ok, amb, 0.0)
    b = ar.where(ok, b, 0.0)
    D = denominator(st)
    inv = ar.div(ar.lift(xp.ones_like(ar.hi(D))), D)  # 1 / D: a product per entry
    p_sc = ar.mul(st.e_sc, inv)  # p_j 2**scale (0 off the live entries)
    # 1 - p_j: at a maximal entry (D - 1) / D = (count - 1 + s) / D, exactly formed
    s_sc = (st.s[0] * sig, st.s[1] * sig)
    rest = ar.mul(ar.add(ar.lift((st.count - 1.0) * sig), s_sc), inv)
    om_sc = ar.select(st.is_max, rest, ar.sub(ar.lift(xp.zeros_like(ar.hi(p_sc)) + sig), p_sc))
    g = ar.sub(ar.mul(amb, p_sc), ar.mul(b, om_sc))
    if rden is not None:
        g = ar.mul(g, rden[0])
    return ar.scaled_value(g, -st.scale), ok


def _dd_index_grad(
    ar: DDArith,
    st: RowStats,
    onehot: Array,
    w: Array | None,
    w_t: Array,
    eps: float,
    z_loss: float,
    k_safe: Array,
    mask: Array,
    where: Array | None,
    rden: tuple[Any, Array] | None,
) -> tuple[Array, Array]:
    """The gradient of ``w_t [(1 - eps) nll + z lse**2] + (eps / k) sum_j w_j (-log p_j)``:
    ``A = w_t (1 - eps) + 2 z w_t lse + (eps / k) W`` with ``W = sum_j w_j`` over the
    classes left in, ``B_j = w_t (1 - eps) [j = t] + (eps / k) w_j``."""
    xp = ar.xp
    big = 2.0 ** (ar.c.emax // 4)
    if z_loss > big:
        return w_t, xp.zeros_like(st.fin)
    w_t0 = xp.where(xp.abs(w_t) <= big, w_t, 0.0)
    ok = xp.abs(w_t) <= big  # (False at NaN)
    wc1 = ar.mul(ar.lift(w_t0), two_sum(ar.const(1.0), ar.const(-eps)))  # w_t (1 - eps)
    bound = xp.abs(w_t0)
    r_t = ar.lift(xp.zeros_like(w_t0))  # A - B_t, less the smoothing part
    if z_loss:
        zt, z_ok = _dd_lse2z(ar, st, z_loss, big)
        ok = ok & z_ok
        r_t = ar.mul(ar.lift(w_t0), zt)
        bound = bound + xp.abs(ar.hi(r_t))
    r_o = ar.add(wc1, r_t)  # A - B_j off the target, less the smoothing part
    amb = ar.select(onehot, r_t, r_o)
    b = ar.where(onehot, wc1, 0.0)
    if eps:
        if w is None:
            wm = xp.where(mask, 1.0, xp.zeros_like(ar.hi(st.e)))
            W = ar.lift(k_safe)  # the classes left in (exact)
        else:
            w_ok = xp.abs(w) <= big
            ok = ok & ~xp.any(~w_ok)  # `any`: the TF namespace has no `all`
            w0 = xp.where(w_ok, w, 0.0)
            wm = xp.where(mask, w0, 0.0)
            # the summed weights: of the class vector unless `where` takes classes out
            W = ar.sum(ar.lift(w0 if where is None else wm), st.axis, st.n)
        ek = ar.div(ar.lift(xp.zeros_like(k_safe) + eps), ar.lift(k_safe))
        amb = ar.add(amb, ar.mul(ek, ar.sub(W, ar.lift(wm))))
        b = ar.add(b, ar.mul(ek, ar.lift(wm)))
        wabs = xp.sum(xp.abs(wm), axis=st.axis, keepdims=True)
        bound = bound + 2.0 * xp.abs(ar.hi(ek)) * wabs
    return _dd_grad_finish(ar, st, amb, b, 2.0 * bound, ok, rden)


def _dd_prob_grad(
    ar: DDArith,
    st: RowStats,
    p_t: Array,
    mask: Array,
    w: Array | None,
    eps: float,
    z_loss: float,
    k_safe: Array,
    axis: int,
    rden: tuple[Any, Array] | None,
) -> tuple[Array, Array]:
    """The gradient of ``sum_j w_j q_j (-log p_j) + z lse**2``: ``A = S + 2 z lse`` with
    ``S = sum_j w_j q_j``, ``B_j = w_j q_j``."""
    xp = ar.xp
    big = 2.0 ** (ar.c.emax // 4)
    if z_loss > big:
        return ar.hi(st.L), xp.zeros_like(st.fin)
    q, ok = _dd_target_mass(ar, p_t, mask, w, eps, k_safe, axis, big)
    S = ar.sum(q, st.axis, st.n)
    amb = ar.sub(S, q)
    bound = 2.0 * xp.sum(xp.abs(ar.hi(q)), axis=axis, keepdims=True)
    if z_loss:
        zt, z_ok = _dd_lse2z(ar, st, z_loss, big)
        ok = ok & z_ok
        amb = ar.add(amb, zt)
        bound = bound + xp.abs(ar.hi(zt))
    return _dd_grad_finish(ar, st, amb, q, 2.0 * bound, ok, rden)


def nll_loss(
    log_probs: Array,
    target: Array,
    *,
    axis: int,
    weight: Array | None,
    ignore_index: int | None,
    reduction: str,
    plan: Plan,
) -> Array:
    """Negative log-likelihood of validated inputs: ``-w[t] * log_probs[t]`` per item."""
    xp = plan.xp
    lp = xp.astype(log_probs, plan.work)
    ndim = lp.ndim
    if any(s == 0 for s in lp.shape):
        result = _empty_loss(xp, lp, axis, reduction, False, plan)
        return result
    classes = _class_indices(xp, lp, axis, plan)
    t = xp.expand_dims(target, axis=axis)
    ignored = (
        xp.zeros(t.shape, dtype=xp.bool, device=plan.device)
        if ignore_index is None
        else (t == ignore_index)
    )
    onehot = classes == xp.astype(xp.where(ignored, xp.zeros_like(t), t), classes.dtype)
    picked = xp.sum(xp.where(onehot, lp, 0.0), axis=axis, keepdims=True)
    if weight is None:
        w_t = xp.ones_like(picked)
    else:
        w = xp.reshape(xp.astype(weight, plan.work), _class_shape(ndim, axis, -1))
        w_t = xp.sum(xp.where(onehot, w, 0.0), axis=axis, keepdims=True)
    item = xp.where(ignored, 0.0, -w_t * picked)
    den = xp.sum(xp.where(ignored, 0.0, w_t))
    loss, _ = _reduce(xp, xp.squeeze(item, axis=axis), den, reduction, plan)
    return loss
