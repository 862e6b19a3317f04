r"""Label-smoothed cross-entropy from the C core's block statistics (float32 logits).

With label smoothing ``eps`` and class weights ``w`` (ones when absent), the loss of
a row with logits ``x``, target ``t`` and ``lse = log sum_c exp(x_c)`` is

.. math::

    \ell = w_t \bigl[(1 - \varepsilon)(\mathrm{lse} - x_t) + \zeta\,\mathrm{lse}^2\bigr]
           + \frac{\varepsilon}{V} \sum_c w_c (\mathrm{lse} - x_c),

and its gradient ``d l / d x_j = a p_j - (eps / V) w_j`` off the target, with
``p = softmax(x)`` and ``a = w_t (1 - eps + 2 zeta lse) + (eps / V) sum_c w_c``.

This module forms them in three passes over the logits instead of the array-API
engine's dozen float64 ones (two for whole rows of one block with a gradient, whose
gradient pass also forms step 2's sums; four for rows of several blocks):

1. the C core's statistics of every block of :data:`BLOCK` classes
   (``skit_block_states``), finished into the row's ``lse`` and unsmoothed loss
   ``lse - x_t`` by the kernel's own code (``skit_cross_entropy_states``, float64
   results of its double-word arithmetic);
2. per block ``b``, ``g_b = sum_{c in b} w_c (m_b - x_c)`` with ``m_b`` the block's
   maximum, every term non-negative for non-negative weights (``skit_smooth``, a
   pass without exponentials); the smoothing sum is then
   ``sum_b [g_b + W_b (lse - m_b)]`` in block order (``W_b`` the block's weight
   sum), again without cancellation;
3. the gradient, elementwise in float64 (``skit_smooth``: ``exp(x - M) / D``, every
   element treated alike wherever it lies) and rounded once. ``D`` is summed from
   float64 exponentials per block, ``D_b = sum_{c in b} exp(x_c - m_b)``: in the
   same pass for a row of one block, whose exponentials are kept for the output,
   and in one more pass for longer rows (or a rank's slice of the row).

Every quantity is a function of one block's data or of per-row values combined in
block order, so a split of the classes on block boundaries (the vocab-parallel
path of :mod:`softmaxkit.torch.distributed`) reproduces it bit for bit.

Rows holding ``+inf`` or NaN logits take the array-API engine (their limits are
defined elementwise there): :func:`has_specials` tells the callers
(``softmaxkit._dispatch`` for NumPy, ``softmaxkit.torch._smooth_ce``) to fall back.
This module knows no framework: NumPy arrays in, NumPy arrays out.

Examples
--------
>>> import numpy as np
>>> from softmaxkit import _smoothing
>>> x = np.array([[1.0, 2.0, 3.0]], np.float32)
>>> blocks = _smoothing.local_blocks(x, None, 1, with_d=False)
>>> loss, lse = _smoothing.finish_rows(x, 0, 3, blocks, x[:, 2], np.array([2]), None,
...                                    None, "none", 0.1, 0.0, None, 1)
>>> round(float(loss[0]), 6)  # (1 - 0.1) * 0.407606 + 0.1 / 3 * (3 * 3.407606 - 6)
0.507606

References
----------
.. [1] R. Müller, S. Kornblith and G. Hinton, "When does label smoothing help?",
   NeurIPS 2019.
.. [2] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing the
   log-sum-exp and softmax functions", IMA J. Numer. Anal. 41 (2021).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _dispatch

__all__ = [
    "BLOCK",
    "block_sums",
    "block_weights",
    "finish",
    "finish_rows",
    "gradient",
    "has_specials",
    "local_blocks",
    "row_scale",
    "row_statistics",
    "whole_row_loss",
]

_ACCURATE = 1  # the C core's mode code


def _ck() -> Any:
    ck = _dispatch._ckernels
    assert ck is not None, "the C core is not built"
    return ck


BLOCK = _dispatch._ckernels.block_elems() if _dispatch._ckernels is not None else 32768
"""Classes per block of the C core's rows (``SKIT_BLOCK_ELEMS``)."""


def has_specials(blocks: Sequence[np.ndarray]) -> bool:
    """Whether some block holds ``+inf`` or NaN (its maximum is not below ``+inf``)."""
    m = blocks[0]
    return bool(m.size) and not m.max() < math.inf  # NaN fails the comparison too


def row_statistics(xn: np.ndarray, threads: int) -> tuple[np.ndarray, ...]:
    """The C core's block statistics ``m, c, s_hi, s_lo`` (rows x blocks, float64)."""
    rows, n = xn.shape
    nb = -(-n // BLOCK)
    out = tuple(np.zeros((rows, nb)) for _ in range(4))
    if rows and n:
        _ck().block_states(xn, rows, n, 0, _ACCURATE, threads, *out)
    return out


def _shift(m: np.ndarray) -> np.ndarray:
    """Each block's reference point: its maximum, or 0 for a block of ``-inf`` only."""
    return np.where(np.isfinite(m), m, 0.0)


def block_sums(
    xn: np.ndarray, m: np.ndarray, w: np.ndarray | None, threads: int, with_d: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per block ``b`` of ``xn`` (rows x classes): ``g_b = sum_{c in b} w_c (m_b - x_c)``
    and (``with_d``) ``D_b = sum_{c in b} exp(x_c - m_b)``, float64 (``skit_smooth``).

    ``xn`` holds whole blocks of the row (but the row's last), starting on a block
    boundary; ``m`` the maxima of those blocks; ``w`` the weights of ``xn``'s
    classes. Every sum depends only on its block's elements. ``D_b`` is summed
    (compensated) from float64 exponentials: the C core's float32 block sums carry
    about ``2**-37`` relative error, enough for a correctly rounded softmax but not
    for gradient elements where ``a p_j - (eps / V) w_j`` cancels.
    """
    rows, n = xn.shape
    gaps = np.empty(m.shape)
    dsum = np.empty(m.shape) if with_d else None
    sh = np.ascontiguousarray(_shift(m))
    _ck().smooth(0, xn, rows, n, w, sh, None, None, gaps, dsum, None, threads)
    return gaps, dsum


def row_scale(m: np.ndarray, dsum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(M, 1 / D)`` of every row from its blocks' maxima and sums, in block order.

    ``M`` is the row's maximum (0 for a row of ``-inf`` only) and ``D = sum_c
    exp(x_c - M)``, so that ``p_c = exp(x_c - M) / D`` carries only the rounding of
    float64 ``exp`` and sums, where ``exp(x_c - lse)`` would inherit the absolute
    error of ``lse`` as a relative one.
    """
    M = m.max(axis=1)
    M = np.where(np.isfinite(M), M, 0.0)
    D = np.zeros_like(M)
    for b in range(m.shape[1]):
        f = np.exp(np.where(np.isfinite(m[:, b]), m[:, b] - M, -math.inf))
        D += np.where(f > 0.0, dsum[:, b] * f, 0.0)
    R = np.where(D > 0.0, 1.0 / np.where(D > 0.0, D, 1.0), 0.0)
    return M, R


def block_weights(w: np.ndarray | None, V: int) -> np.ndarray:
    """``W_b``: each block's weight sum (its width without weights), pairwise per block."""
    nb = -(-V // BLOCK)
    if w is None:
        return np.array([float(min(V, (b + 1) * BLOCK) - b * BLOCK) for b in range(nb)])
    return np.array([w[b * BLOCK : (b + 1) * BLOCK].sum() for b in range(nb)])


def finish(
    nll: np.ndarray,
    lse: np.ndarray,
    counted: np.ndarray,
    gaps: np.ndarray,
    m: np.ndarray,
    Wb: np.ndarray,
    w_t: np.ndarray,
    eps: float,
    z: float,
    V: int,
) -> np.ndarray:
    """Per-row float64 losses (0 where not counted) from the row values and block gaps
    (NumPy warns of the infinities it meets unless the caller silences it, as
    :func:`finish_rows` does)."""
    sh = _shift(m)
    smooth = np.zeros_like(lse)
    for b in range(gaps.shape[1]):
        smooth += gaps[:, b] + Wb[b] * (lse - sh[:, b])
    item = w_t * ((1.0 - eps) * nll + z * lse * lse) + (eps / V) * smooth
    return np.where(counted, item, 0.0)


def gradient(
    xn: np.ndarray,
    out: np.ndarray,
    t_local: np.ndarray,
    nll: np.ndarray,
    lse: np.ndarray,
    M: np.ndarray,
    R: np.ndarray,
    counted: np.ndarray,
    w_loc: np.ndarray | None,
    w_t: np.ndarray,
    W: float,
    eps: float,
    z: float,
    V: int,
    scale: float,
    threads: int,
) -> None:
    """``scale * d loss / d x`` into ``out`` (rows x classes, C-contiguous float32, or
    float64 for a caller that rounds it once to a narrower type).

    ``t_local`` is each row's target column in ``xn`` (-1 where the target lies
    elsewhere); ``w_loc`` the weights of ``xn``'s classes; ``R = 1 / D`` per row from
    :func:`row_scale`. ``1 - p_t`` comes from the kernel's unsmoothed loss,
    ``-expm1(-nll)``, with no cancellation. (Whole rows of one block take
    ``skit_smooth_rows`` instead, which sums ``D`` in the gradient's own pass.)
    """
    rows, n = xn.shape
    if rows == 0 or n == 0:
        return
    live = counted.astype(bool)
    lse_s = np.where(live, lse, 0.0)
    a = w_t * ((1.0 - eps) + 2.0 * z * lse_s) + (eps / V) * W
    sa = np.where(live, a * scale, 0.0)
    cw = np.where(live, (eps / V) * scale, 0.0)
    p_t = np.exp(-nll)
    one_minus = -np.expm1(-nll)
    wt_c = w_t if w_loc is None else np.where(t_local >= 0, w_loc[np.maximum(t_local, 0)], 0.0)
    g_t = w_t * (-(1.0 - eps) * one_minus + 2.0 * z * lse_s * p_t)
    g_t = (g_t + (eps / V) * (W * p_t - wt_c)) * scale
    g_t = np.where(live, g_t, 0.0)
    kind = 1 if out.dtype == np.float32 else 3
    f = np.ascontiguousarray(sa * R)
    k = np.ascontiguousarray(cw)
    _ck().smooth(kind, xn, rows, n, w_loc, np.ascontiguousarray(M), f, k, None, None, out, threads)
    rr = np.flatnonzero(t_local >= 0)
    out[rr, t_local[rr]] = g_t[rr]  # rounded once to out's dtype by the assignment


def local_blocks(
    xn: np.ndarray, w_loc: np.ndarray | None, threads: int, with_d: bool
) -> tuple[np.ndarray, ...]:
    """``m, c, s_hi, s_lo, gap, dsum`` of every block of ``xn`` (rows x classes, whole
    blocks but the row's last): all a row's finish needs from these classes."""
    m, c, s_hi, s_lo = row_statistics(xn, threads)
    gaps, dsum = block_sums(xn, m, w_loc, threads, with_d)
    return m, c, s_hi, s_lo, gaps, (np.zeros_like(gaps) if dsum is None else dsum)


_REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}


def _fused_rows(
    xn: np.ndarray,
    m: np.ndarray,
    gaps: np.ndarray,
    grad: np.ndarray | None,
    tn: np.ndarray,
    w: np.ndarray | None,
    ign: int | None,
    reduction: str,
    eps: float,
    z: float,
    nll: np.ndarray,
    lse: np.ndarray,
    counted: np.ndarray,
    threads: int,
) -> np.ndarray:
    """:func:`finish_rows` of whole rows of one block after the kernel's row values, in
    one C call (``skit_smooth_rows``): with a gradient, its pass forms the gaps again
    (the bits of ``gaps``); the loss is reduced in NumPy's pairwise order."""
    rows, n = xn.shape
    sh = np.ascontiguousarray(_shift(m[:, 0]))
    if grad is not None:
        gap = np.empty(rows)  # written by the gradient's pass (the same bits as block_sums)
    else:
        gap = np.ascontiguousarray(gaps[:, 0], dtype=np.float64)
    red, out, tt, wc = _c_args(rows, reduction, tn, w)
    _ck().smooth_rows(
        xn, rows, n, tt, wc, ign is not None, 0 if ign is None else ign, sh, nll, lse,
        counted, eps, z, red, gap, out, grad, threads,
    )  # fmt: skip
    return out if red == 0 else out.reshape(())


def _c_args(
    rows: int, reduction: str, tn: np.ndarray, w: np.ndarray | None
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray | None]:
    """The reduction's code, a loss buffer for it, and the targets and weights as the
    C calls take them (int64 and float64, contiguous)."""
    red = _REDUCTIONS[reduction]
    out = np.empty(rows if red == 0 else 1)
    tt = np.ascontiguousarray(tn, dtype=np.int64)
    wc = None if w is None else np.ascontiguousarray(w, dtype=np.float64)
    return red, out, tt, wc


def whole_row_loss(
    xn: np.ndarray,
    tn: np.ndarray,
    w: np.ndarray | None,
    ign: int | None,
    reduction: str,
    eps: float,
    z: float,
    grad: np.ndarray | None,
    threads: int,
) -> np.ndarray | None:
    """The loss (float64: per row, or the reduced scalar) of whole float32 rows
    (``xn``: rows x classes; ``tn`` targets in range or ``ign``, an ``IndexError``
    otherwise) and their gradient into ``grad`` (as :func:`finish_rows`), for one
    process; ``None``, with nothing written, when a row holds ``+inf`` or NaN (the
    callers' array-API route).

    Rows of one block take one C call (``skit_smooth_ce``): the same C steps, in the
    same order, as :func:`local_blocks` then :func:`finish_rows` (whose gradient pass
    forms the gaps again), so the same bits; without a gradient it skips nothing.
    Longer rows take those two.
    """
    rows, n = xn.shape
    if n <= BLOCK:
        red, out, tt, wc = _c_args(rows, reduction, tn, w)
        special = _ck().smooth_ce(
            xn, rows, n, threads, tt, wc, ign is not None, 0 if ign is None else ign, eps, z,
            red, out, grad,
        )  # fmt: skip
        if special:
            return None
        return out if red == 0 else out.reshape(())
    blocks = local_blocks(xn, w, threads, grad is not None)  # with D: several blocks
    if has_specials(blocks):
        return None
    xt = xn[np.arange(rows), tn if ign is None else np.where(tn == ign, 0, tn)]
    r, _ = finish_rows(xn, 0, n, blocks, xt, tn, w, ign, reduction, eps, z, grad, threads)
    return r


def finish_rows(
    xn: np.ndarray,
    v0: int,
    V: int,
    blocks: Sequence[np.ndarray],
    xt: np.ndarray,
    tn: np.ndarray,
    w: np.ndarray | None,
    ign: int | None,
    reduction: str,
    eps: float,
    z: float,
    grad: np.ndarray | None,
    threads: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The loss (float64: per row, or the reduced scalar) and float64 ``lse`` of rows
    whose classes ``v0 .. v0 + n - 1`` are ``xn`` (rows x n; ``v0`` on a block
    boundary), from the :func:`local_blocks` of ALL the row's blocks in order;
    ``xt`` the targets' logits (``blocks`` need the exponential sums only when the
    row has several blocks or ``xn`` holds part of it), ``tn`` the targets (int64,
    in range or ``ign``; ``None``: nothing is ignored), ``w`` the full weight
    vector. ``grad`` (rows x n, float32, or float64 to be rounded once by the
    caller), when given, receives the gradient of those classes (scaled for the
    mean).

    Every value is a function of the blocks' statistics, combined in block order,
    or of one element: one process holding the whole row and the ranks holding
    block-aligned slices of it get the same bits.
    """
    # inf - inf, 0 * inf: NaN where the array-API engine gives it; exp(-inf) etc.
    with np.errstate(all="ignore"):
        rows, n = xn.shape
        m, c, s_hi, s_lo = (np.ascontiguousarray(b) for b in blocks[:4])
        gaps, dsum = np.ascontiguousarray(blocks[4]), blocks[5]
        fused = m.shape[1] == 1 and n == V  # the whole row, one block: D summed in the C pass
        nll = np.empty(rows)
        lse = np.empty(rows)
        counted = np.empty(rows, np.uint8)
        _ck().cross_entropy_states(
            xn, rows, n, 0, _ACCURATE, threads, v0, m.shape[1], n == V, m, c, s_hi, s_lo,
            np.ascontiguousarray(xt, dtype=np.float64), tn, None, ign is not None,
            0 if ign is None else ign, 0.0, 1.0, nll, lse, counted, None,
        )  # fmt: skip
        if fused:  # the rest in C (skit_smooth_rows): the same expressions and sums
            r = _fused_rows(
                xn, m, gaps, grad, tn, w, ign, reduction, eps, z, nll, lse, counted, threads
            )
            return r, lse
        live = counted.astype(bool)
        ignored = np.zeros(rows, bool) if ign is None else tn == ign
        t_safe = np.where(ignored, 0, tn)
        w_t = np.where(live, 1.0 if w is None else w[t_safe], 0.0)
        items = finish(nll, lse, live, gaps, m, block_weights(w, V), w_t, eps, z, V)
        den = float(np.sum(w_t))
        total = np.sum(items)
        if reduction == "none":
            r = items
            scale = 1.0
        elif reduction == "sum":
            r = np.asarray(total)
            scale = 1.0
        else:
            r = np.asarray(_dispatch.finite_mean(items, den) if den != 0.0 else 0.0)
            scale = 1.0 / den if den != 0.0 else 0.0
        if grad is not None:
            W = float(np.sum(w)) if w is not None else float(V)
            inside = ~ignored & (tn >= v0) & (tn < v0 + n)
            t_local = np.where(inside, tn - v0, -1)
            w_loc = None if w is None else np.ascontiguousarray(w[v0 : v0 + n])
            Mr, R = row_scale(m, np.ascontiguousarray(dsum))
            gradient(
                xn, grad, t_local, nll, lse, Mr, R, live, w_loc, w_t, W, eps, z, V, scale, threads
            )
        return r, lse
