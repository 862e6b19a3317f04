# mypy: disable-error-code="no-untyped-def"
# (Triton kernels: their parameters are typed by the JIT from the call, not annotated.)
"""Triton kernels of the softmax family: one program per row, Blanchard-Higham-Higham form.

What this module is for: the device code, and nothing else. Every kernel takes
raw row-major buffers (``rows x n`` logits, one program per row, or a flat
elementwise range) and constexpr switches; the launchers in :mod:`._launch` move
the reduced axis last, pick the switches and never compute anything
themselves. This module must never import a framework layer (``softmaxkit.torch``
and the public API stay out) and must never use ``libdevice``/``extern``
functions or inline assembly: the kernels run unchanged under the Triton
interpreter (``TRITON_INTERPRET=1``), which is how CI checks them.

Per row, with ``a`` the maximum, ``c`` the number of entries equal to it and
``s`` the sum of ``exp(x_i - a)`` over the others (BHH 2021)::

    L = log1p((c - 1) + s)          Kahan's log1p: only log and a division
    softmax_i = exp(x_i - a) / (c + s)
    log_softmax_i = (x_i - a) - L
    logsumexp = a + L

``ACCURATE`` computes all of it in float64 and rounds once at the store, so a
float32 result is within 0.5 ulp plus a few float64 ulps of the exact value
(every float64 operation used is IEEE or libdevice-accurate on NVIDIA: no
``ex2.approx``/``div.full``). ``ACCURATE=False`` is the fast mode: float32
throughout, which on NVIDIA lowers ``exp`` to ``ex2.approx.f32`` of a rounded
``x * log2(e)`` and ``/`` to ``div.full.f32``.

``ONE_BLOCK`` rows (``n <= BLOCK``) are kept in registers: each element is read
once and ``exp`` is evaluated once. Longer rows take two passes: the mergeable
``(max, count, sum)`` state over blocks (one read, one exp), then the output
pass (a second read and exp).

Special rows take the contract's limits: a row with a NaN is NaN; ``k`` entries
at ``+inf`` share the mass (``1/k``, ``-log k``) and logsumexp is ``+inf``; a row
of ``-inf`` (or an empty row) gives softmax 0, log_softmax and logsumexp
``-inf``. Placeholders keep every discarded lane free of ``inf - inf`` and
overflow, so the interpreter (NumPy) raises no floating-point warning.

References
----------
P. Blanchard, D. J. Higham, N. J. Higham, "Accurately computing the log-sum-exp
and softmax functions", IMA J. Numer. Anal. 41(4), 2021.
W. Kahan, log1p via ``log(u) * x / (u - 1)``, HP-15C Advanced Functions Handbook, 1982.
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = [
    "bce_kernel",
    "ce_count_kernel",
    "ce_finish_kernel",
    "ce_kernel",
    "lce_grad_kernel",
    "lce_stats_kernel",
    "norm_kernel",
]

MODE_SOFTMAX = 0
MODE_LOG_SOFTMAX = 1
MODE_LOGSUMEXP = 2


@triton.jit
def _log1p(a):
    # Kahan: u = 1 + a is exact to within its rounding, and log(u) * a / (u - 1)
    # corrects that rounding; u == 1 means a is below half an ulp of 1 and log1p(a) = a.
    u = 1.0 + a
    one = u == 1.0
    den = tl.where(one, 1.0, u - 1.0)
    return tl.where(one, a, tl.log(tl.where(one, 2.0, u)) * (a / den))


@triton.jit
def _narrow(v, OUT: tl.constexpr):
    """``v`` rounded once to the output dtype ``OUT``.

    float64 to float16/bfloat16 goes through float32 rounded to odd (the nearest
    float32, its last bit set when inexact), which has more than ``p + 2`` bits, so
    the final round-to-nearest-even equals a direct rounding of ``v`` (a plain
    float64 -> float32 -> bfloat16 cast rounds twice, as torch's own cast does).
    """
    HALF: tl.constexpr = OUT == tl.float16 or OUT == tl.bfloat16  # noqa: SIM300
    if v.dtype == tl.float64 and HALF:
        f = v.to(tl.float32)
        fin = tl.abs(f) < float("inf")
        sticky = tl.where(fin, f.to(tl.float64) != v, False).to(tl.int32)
        v = (f.to(tl.int32, bitcast=True) | sticky).to(tl.float32, bitcast=True)
    if OUT == tl.bfloat16:  # noqa: SIM300
        # float32 -> bfloat16 to nearest even on the bits (Triton 3.9's interpreter
        # truncates this cast; on the GPU this is what cvt.rn.bf16.f32 does)
        b = v.to(tl.float32).to(tl.int32, bitcast=True)
        r = (b + (0x7FFF + ((b >> 16) & 1))) >> 16
        r = tl.where(v != v, 0x7FC0, r)
        out = r.to(tl.int16).to(tl.bfloat16, bitcast=True)
    else:
        out = v.to(OUT)
    return out


@triton.jit
def _row_state(X, row_off, n, offs, BLOCK: tl.constexpr, WORK: tl.constexpr):
    """One pass over a long row: (max, count of maxima, sum of the other exps, #NaN, #+inf).

    Comparisons and block maxima run on the input values in float32 (exact); the state
    is in ``WORK``.
    """
    m = tl.full((), float("-inf"), WORK)
    c = tl.zeros((), WORK)
    s = tl.zeros((), WORK)
    nan = tl.zeros((), tl.int32)
    npinf = tl.zeros((), WORK)
    for start in range(0, n, BLOCK):
        idx = start + offs
        inb = idx < n
        xr = tl.load(X + row_off + idx, mask=inb, other=float("-inf")).to(tl.float32)
        isn = xr != xr
        nan += tl.sum(isn.to(tl.int32), 0)
        npinf += tl.sum((xr == float("inf")).to(tl.int32), 0).to(WORK)
        xc = tl.where(isn, float("-inf"), xr)
        mbx = tl.max(xc, 0)
        mb = mbx.to(WORK)
        mb_fin = (mb > float("-inf")) & (mb < float("inf"))
        mb0 = tl.where(mb_fin, mb, 0.0)
        live = tl.where(mb_fin, xc > float("-inf"), False)
        at = live & (xc == mbx)
        e = tl.exp(tl.where(live & ~at, xc.to(WORK) - mb0, float("-inf")))
        cb = tl.sum(at.to(tl.int32), 0).to(WORK)
        sb = tl.sum(e, 0)
        # merge (m, c, s) with (mb, cb, sb): maxima below the new maximum become terms
        M = tl.maximum(m, mb)
        M_fin = (M > float("-inf")) & (M < float("inf"))  # noqa: SIM300
        M0 = tl.where(M_fin, M, 0.0)
        f_old = tl.exp(tl.where(M_fin & (m > float("-inf")), m - M0, float("-inf")))
        f_new = tl.exp(tl.where(M_fin & mb_fin, mb - M0, float("-inf")))
        c_new = tl.where(m == M, c, 0.0) + tl.where(mb == M, cb, 0.0)
        s_new = s * f_old + sb * f_new
        s_new += tl.where(m < M, c * f_old, 0.0) + tl.where(mb < M, cb * f_new, 0.0)
        c = tl.where(M_fin, c_new, 0.0)
        s = tl.where(M_fin, s_new, 0.0)
        m = M
    return m, c, s, nan, npinf


@triton.jit
def norm_kernel(
    X,
    Y,
    n,
    MODE: tl.constexpr,
    BLOCK: tl.constexpr,
    ONE_BLOCK: tl.constexpr,
    ACCURATE: tl.constexpr,
):
    """softmax (MODE 0), log_softmax (1) or logsumexp (2) of row ``program_id`` of ``X``.

    Comparisons, the maximum and the counts run on the input values in float32
    (exact for every input format); only ``x - max``, the exponentials and the sums are in
    ``WORK``. Softmax is ``exp(x - max) * (1 / D)``, with one
    division per row instead of one per element: in float64 that adds at most
    one float64 rounding, far below half an ulp of the float32 result.
    """
    WORK: tl.constexpr = tl.float64 if ACCURATE else tl.float32
    row = tl.program_id(0).to(tl.int64)
    row_off = row * n
    offs = tl.arange(0, BLOCK)
    if ONE_BLOCK:
        inb = offs < n
        xr = tl.load(X + row_off + offs, mask=inb, other=float("-inf")).to(tl.float32)
        isn = xr != xr
        nan = tl.sum(isn.to(tl.int32), 0)
        npinf = tl.sum((xr == float("inf")).to(tl.int32), 0).to(WORK)
        xc = tl.where(isn, float("-inf"), xr)
        mx = tl.max(xc, 0)
        m = mx.to(WORK)
        fin = (m > float("-inf")) & (m < float("inf")) & (nan == 0)
        m0 = tl.where(fin, m, 0.0)
        live = tl.where(fin, xc > float("-inf"), False)
        at = live & (xc == mx)
        d = tl.where(live, xc.to(WORK) - m0, float("-inf"))
        e = tl.exp(d)
        c = tl.sum(at.to(tl.int32), 0).to(WORK)
        s = tl.sum(tl.where(at, 0.0, e), 0)
    else:
        m, c, s, nan, npinf = _row_state(X, row_off, n, offs, BLOCK, WORK)
        fin = (m > float("-inf")) & (m < float("inf")) & (nan == 0)
        m0 = tl.where(fin, m, 0.0)
    L = _log1p(tl.where(fin, (c - 1.0) + s, 0.0))
    k = tl.where(npinf > 0, npinf, 1.0)
    posinf = m == float("inf")
    row_nan = nan > 0
    if MODE == 2:
        v = tl.where(fin, m0 + L, m)
        v = tl.where(row_nan, float("nan"), v)
        tl.store(Y + row, _narrow(v, Y.dtype.element_ty))
    else:
        D = tl.where(fin, c + s, 1.0)
        R = 1.0 / D
        lk = tl.log(k)
        if ONE_BLOCK:
            pin = xr == float("inf")
            if MODE == 0:
                v = tl.where(live, e * R, 0.0)
                v = tl.where(posinf, tl.where(pin, 1.0 / k, 0.0), v)
            else:
                v = tl.where(live, d - L, float("-inf"))
                v = tl.where(posinf, tl.where(pin, 0.0 - lk, float("-inf")), v)
            v = tl.where(row_nan, float("nan"), v)
            tl.store(Y + row_off + offs, _narrow(v, Y.dtype.element_ty), mask=inb)
        else:
            for start in range(0, n, BLOCK):
                idx = start + offs
                inb = idx < n
                xr = tl.load(X + row_off + idx, mask=inb, other=float("-inf")).to(tl.float32)
                live = tl.where(fin, (xr > float("-inf")) & (xr == xr), False)
                d = tl.where(live, xr.to(WORK) - m0, float("-inf"))
                pin = xr == float("inf")
                if MODE == 0:
                    v = tl.where(live, tl.exp(d) * R, 0.0)
                    v = tl.where(posinf, tl.where(pin, 1.0 / k, 0.0), v)
                else:
                    v = tl.where(live, d - L, float("-inf"))
                    v = tl.where(posinf, tl.where(pin, 0.0 - lk, float("-inf")), v)
                v = tl.where(row_nan, float("nan"), v)
                tl.store(Y + row_off + idx, _narrow(v, Y.dtype.element_ty), mask=inb)


@triton.jit
def ce_kernel(
    X,
    T,
    Wt,
    P,
    S,
    LOSS,
    CNT,
    G,
    C,
    ignore_index,
    HAS_W: tl.constexpr,
    HAS_EPS: tl.constexpr,
    HAS_Z: tl.constexpr,
    NEED_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,
    ONE_BLOCK: tl.constexpr,
    ACCURATE: tl.constexpr,
):
    """Cross-entropy of row ``program_id`` with a class-index target, and its gradient.

    ``P`` holds float64 parameters ``[eps, z, eps / C, C]`` and ``S`` the
    device-computed ``[grad_scale, w_sum, count]`` (``w_sum`` read with ``HAS_W``
    only), so no host round trip precedes the launch. Writes the item loss
    (float64, 0 when not counted), the item's weight in the mean denominator
    (``CNT``: ``w_t`` when counted, else 0; NaN for a class index out of range,
    which the launcher turns into an error) and, with ``NEED_GRAD``,
    ``grad_scale * d item / d x`` in the same pass.
    """
    WORK: tl.constexpr = tl.float64 if ACCURATE else tl.float32
    row = tl.program_id(0).to(tl.int64)
    row_off = row * C
    offs = tl.arange(0, BLOCK)
    eps = tl.load(P + 0).to(WORK)
    z = tl.load(P + 1).to(WORK)
    eps_k = tl.load(P + 2).to(WORK)
    scale = tl.load(S + 0).to(WORK)
    if HAS_W:
        w_sum = tl.load(S + 1).to(WORK)
    else:
        w_sum = tl.load(P + 3).to(WORK)
    t = tl.load(T + row).to(tl.int64)
    ignored = t == ignore_index
    t_ok = (t >= 0) & (t < C) & ~ignored
    t_safe = tl.where(t_ok, t, 0)
    x_t = tl.load(X + row_off + t_safe).to(WORK)
    if HAS_W:
        w_t = tl.load(Wt + t_safe).to(WORK)
    else:
        w_t = tl.full((), 1.0, WORK)
    if ONE_BLOCK:
        inb = offs < C
        x = tl.load(X + row_off + offs, mask=inb, other=float("-inf")).to(WORK)
        isn = x != x
        nan = tl.sum(isn.to(tl.int32), 0)
        npinf = tl.sum((x == float("inf")).to(WORK), 0)
        xc = tl.where(isn, float("-inf"), x)
        m = tl.max(xc, 0)
        fin = (m > float("-inf")) & (m < float("inf")) & (nan == 0)
        m0 = tl.where(fin, m, 0.0)
        live = tl.where(fin, xc > float("-inf"), False)
        at = live & (xc == m0)
        d = tl.where(live, xc - m0, float("-inf"))
        e = tl.exp(d)
        c = tl.sum(at.to(WORK), 0)
        s = tl.sum(tl.where(at, 0.0, e), 0)
    else:
        m, c, s, nan, npinf = _row_state(X, row_off, C, offs, BLOCK, WORK)
        fin = (m > float("-inf")) & (m < float("inf")) & (nan == 0)
        m0 = tl.where(fin, m, 0.0)
    row_nan = nan > 0
    posinf = m == float("inf")
    k = tl.where(npinf > 0, npinf, 1.0)
    L = _log1p(tl.where(fin, (c - 1.0) + s, 0.0))
    D = tl.where(fin, c + s, 1.0)
    lse = tl.where(fin, m0 + L, m)
    lse = tl.where(row_nan, float("nan"), lse)
    row_empty = ~fin & ~posinf & ~row_nan
    counted = ~ignored & ~row_empty
    # the item loss: L - (x_t - a), its limits, then smoothing and z-loss
    t_live = (x_t > float("-inf")) & fin
    d_t = tl.where(t_live, x_t - m0, 0.0)
    nll = tl.where(t_live, L - d_t, float("inf"))
    nll = tl.where(posinf, tl.where(x_t == float("inf"), tl.log(k), float("inf")), nll)
    nll = tl.where(row_nan, float("nan"), nll)
    if HAS_EPS:
        core = (1.0 - eps) * nll
    else:
        core = nll
    if HAS_Z:
        core = core + z * lse * lse
    item = w_t * core
    lse_safe = tl.where((lse > float("-inf")) & (lse < float("inf")), lse, 0.0)
    # d item / d x at the target: p_t - 1 = -(D - e_t) / D, formed without cancellation
    t_at = t_live & (x_t == m0)
    e_t = tl.exp(tl.where(t_live & ~t_at, d_t, float("-inf")))
    others = (c - tl.where(t_at, 1.0, 0.0)) + (s - e_t)
    one_minus = tl.where(fin, others, 0.0) / D
    k_inv = 1.0 / k
    if ONE_BLOCK:
        pin = x == float("inf")
        p = tl.where(live, e / D, 0.0)
        p = tl.where(posinf, tl.where(pin, k_inv, 0.0), p)
        p = tl.where(row_nan, float("nan"), p)
        if HAS_EPS:
            lk = tl.log(k)
            ls = tl.where(live, d - L, float("-inf"))
            ls = tl.where(posinf, tl.where(pin, 0.0 - lk, float("-inf")), ls)
            ls = tl.where(row_nan, float("nan"), ls)
            if HAS_W:
                wc = tl.load(Wt + offs, mask=inb, other=0.0).to(WORK)
                smooth = tl.sum(tl.where(inb, wc * -ls, 0.0), 0)
            else:
                smooth = tl.sum(tl.where(inb, -ls, 0.0), 0)
            item = item + eps_k * smooth
        if NEED_GRAD:
            p_t = tl.sum(tl.where(offs == t_safe, p, 0.0), 0)
            pt_m1 = tl.where(fin, 0.0 - one_minus, p_t - 1.0)
            g = tl.where(offs == t_safe, pt_m1, p)
            if HAS_EPS:
                g = (1.0 - eps) * g
            if HAS_Z:
                g = g + (2.0 * z) * lse_safe * p
            g = w_t * g
            if HAS_EPS:
                if HAS_W:
                    g = g + eps_k * (w_sum * p - wc)
                else:
                    g = g + eps_k * (w_sum * p - 1.0)
            g = tl.where(counted, g, 0.0) * scale
            tl.store(G + row_off + offs, _narrow(g, G.dtype.element_ty), mask=inb)
    else:
        if HAS_EPS or NEED_GRAD:
            lk = tl.log(k)
            # p_t for non-finite rows (the only case it is used)
            p_t = tl.where(posinf, tl.where(x_t == float("inf"), k_inv, 0.0), 0.0)
            p_t = tl.where(row_nan, float("nan"), p_t)
            smooth = tl.zeros((), WORK)
            for start in range(0, C, BLOCK):
                idx = start + offs
                inb = idx < C
                x = tl.load(X + row_off + idx, mask=inb, other=float("-inf")).to(WORK)
                live = tl.where(fin, (x > float("-inf")) & (x == x), False)
                d = tl.where(live, x - m0, float("-inf"))
                pin = x == float("inf")
                if HAS_W:
                    wc = tl.load(Wt + idx, mask=inb, other=0.0).to(WORK)
                if HAS_EPS:
                    ls = tl.where(live, d - L, float("-inf"))
                    ls = tl.where(posinf, tl.where(pin, 0.0 - lk, float("-inf")), ls)
                    ls = tl.where(row_nan, float("nan"), ls)
                    if HAS_W:
                        smooth += tl.sum(tl.where(inb, wc * -ls, 0.0), 0)
                    else:
                        smooth += tl.sum(tl.where(inb, -ls, 0.0), 0)
                if NEED_GRAD:
                    p = tl.where(live, tl.exp(d) / D, 0.0)
                    p = tl.where(posinf, tl.where(pin, k_inv, 0.0), p)
                    p = tl.where(row_nan, float("nan"), p)
                    pt_m1 = tl.where(fin, 0.0 - one_minus, p_t - 1.0)
                    g = tl.where(idx == t_safe, pt_m1, p)
                    if HAS_EPS:
                        g = (1.0 - eps) * g
                    if HAS_Z:
                        g = g + (2.0 * z) * lse_safe * p
                    g = w_t * g
                    if HAS_EPS:
                        if HAS_W:
                            g = g + eps_k * (w_sum * p - wc)
                        else:
                            g = g + eps_k * (w_sum * p - 1.0)
                    g = tl.where(counted, g, 0.0) * scale
                    tl.store(G + row_off + idx, _narrow(g, G.dtype.element_ty), mask=inb)
            if HAS_EPS:
                item = item + eps_k * smooth
    tl.store(LOSS + row, tl.where(counted, item, 0.0).to(tl.float64))
    bad = ~t_ok & ~ignored
    tl.store(CNT + row, tl.where(bad, float("nan"), tl.where(counted, w_t, 0.0)).to(tl.float64))


@triton.jit
def ce_count_kernel(
    T, Wt, S, N, C, ignore_index, HAS_W: tl.constexpr, MEAN: tl.constexpr, BLOCK: tl.constexpr
):
    """Before the cross-entropy of a short batch (one program): ``S = [scale, w_sum, den]``.

    ``den`` is the weighted count of the items not ignored (an index out of range
    counts with the weight of a clamped index; the call then fails anyway),
    ``scale`` is ``1 / den`` for the mean (0 for an empty mean, whose gradient is 0)
    and 1 otherwise, and ``w_sum`` the sum of the class weights (``C`` without).
    The sums run in a fixed order, so they are reproducible bit for bit.
    """
    offs = tl.arange(0, BLOCK)
    den = tl.zeros((), tl.float64)
    for start in range(0, N, BLOCK):
        idx = start + offs
        inb = idx < N
        t = tl.load(T + idx, mask=inb, other=ignore_index).to(tl.int64)
        counted = inb & (t != ignore_index)
        if HAS_W:
            w = tl.load(Wt + tl.minimum(tl.maximum(t, 0), C - 1), mask=counted, other=0.0)
        else:
            w = tl.where(counted, 1.0, 0.0).to(tl.float64)
        den += tl.sum(tl.where(counted, w, 0.0), 0)
    w_sum = tl.zeros((), tl.float64) + C
    if HAS_W:
        w_sum = tl.zeros((), tl.float64)
        for start in range(0, C, BLOCK):
            idx = start + offs
            w_sum += tl.sum(tl.load(Wt + idx, mask=idx < C, other=0.0), 0)
    if MEAN:
        scale = tl.where(den != 0.0, 1.0 / tl.where(den != 0.0, den, 1.0), 0.0)
    else:
        scale = tl.zeros((), tl.float64) + 1.0
    tl.store(S + 0, scale)
    tl.store(S + 1, w_sum)
    tl.store(S + 2, den)


@triton.jit
def ce_finish_kernel(ITEM, CNT, S, OUT, FLAGS, N, REDUCE: tl.constexpr, BLOCK: tl.constexpr):
    """After the cross-entropy of a short batch (one program): the loss and the checks.

    Sums the item losses and counts in a fixed order; ``FLAGS = [den, den_before]``
    (``den`` is NaN when a class index was out of range; it differs from the
    count before the kernel when rows of ``-inf`` were not counted). With
    ``REDUCE`` 1 (sum) or 2 (mean, 0 for an empty mean) ``OUT[0]`` is the loss,
    rounded once to ``OUT``'s dtype.
    """
    offs = tl.arange(0, BLOCK)
    total = tl.zeros((), tl.float64)
    den = tl.zeros((), tl.float64)
    for start in range(0, N, BLOCK):
        idx = start + offs
        inb = idx < N
        total += tl.sum(tl.load(ITEM + idx, mask=inb, other=0.0), 0)
        den += tl.sum(tl.load(CNT + idx, mask=inb, other=0.0), 0)
    tl.store(FLAGS + 0, den)
    tl.store(FLAGS + 1, tl.load(S + 2))
    if REDUCE == 2:
        v = tl.where(den != 0.0, total / tl.where(den != 0.0, den, 1.0), 0.0)
    else:
        v = total
    if REDUCE != 0:
        tl.store(OUT, _narrow(v, OUT.dtype.element_ty))


@triton.jit
def bce_kernel(
    X,
    Yt,
    Wb,
    PW,
    P,
    LOSS,
    G,
    N,
    HAS_W: tl.constexpr,
    HAS_PW: tl.constexpr,
    NEED_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,
    ACCURATE: tl.constexpr,
):
    """Binary cross-entropy with logits, elementwise, with ``P[0]`` the gradient scale.

    With ``zz = exp(-|x|)``: ``softplus(+-x) = max(+-x, 0) + log1p(zz)`` and
    ``loss = pw y softplus(-x) + (1 - y) softplus(x)``, a sum of non-negative
    terms; the gradient is ``(1 - y) sigmoid(x) - pw y sigmoid(-x)`` with both
    sigmoids from ``1 / (1 + zz)`` and ``zz / (1 + zz)``. The loss is stored in
    float64 (the launcher reduces it).
    """
    WORK: tl.constexpr = tl.float64 if ACCURATE else tl.float32
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inb = offs < N
    x = tl.load(X + offs, mask=inb, other=0.0).to(WORK)
    y = tl.load(Yt + offs, mask=inb, other=0.0).to(WORK)
    xfin = (x > float("-inf")) & (x < float("inf"))
    xs = tl.where(xfin, x, 0.0)
    ax = tl.where(xs < 0, 0.0 - xs, xs)
    zz = tl.exp(0.0 - ax)
    lz = _log1p(zz)
    sp_pos = tl.where(xs > 0, xs, 0.0) + lz
    sp_neg = tl.where(xs < 0, 0.0 - xs, 0.0) + lz
    y_nan = y != y
    c_neg = tl.where(y_nan, 2.0, 1.0) - y
    if HAS_PW:
        c_pos = tl.load(PW + offs, mask=inb, other=0.0).to(WORK) * y
    else:
        c_pos = y
    total = c_pos * sp_neg + c_neg * sp_pos
    if HAS_W:
        w = tl.load(Wb + offs, mask=inb, other=0.0).to(WORK)
        total = w * total
        w_zero = w == 0.0
    else:
        w_zero = offs < 0
    at_pinf = tl.where(((1.0 - y) == 0.0) | w_zero, 0.0, float("inf"))
    at_ninf = tl.where((c_pos == 0.0) | w_zero, 0.0, float("inf"))
    loss = tl.where(x == float("inf"), at_pinf, tl.where(x == float("-inf"), at_ninf, total))
    loss = tl.where((x != x) | y_nan, float("nan"), loss)
    tl.store(LOSS + offs, loss.to(tl.float64), mask=inb)
    if NEED_GRAD:
        scale = tl.load(P + 0).to(WORK)
        one = tl.where(x != x, 2.0, 1.0)
        Dz = one + zz
        big = one / Dz
        small = zz / Dz
        pos = xs >= 0
        sp = tl.where(pos, big, small)
        sn = tl.where(pos, small, big)
        sp = tl.where(x == float("inf"), 1.0, tl.where(x == float("-inf"), 0.0, sp))
        sn = tl.where(x == float("inf"), 0.0, tl.where(x == float("-inf"), 1.0, sn))
        sp = tl.where(x != x, float("nan"), sp)
        sn = tl.where(x != x, float("nan"), sn)
        g = (1.0 - y) * sp - c_pos * sn
        if HAS_W:
            g = w * g
        g = g * scale
        tl.store(G + offs, _narrow(g, G.dtype.element_ty), mask=inb)


@triton.jit
def lce_stats_kernel(
    Z,
    T,
    S,
    v0,
    v1,
    ld,
    BLOCK: tl.constexpr,
    ACCURATE: tl.constexpr,
):
    """Merge one vocabulary tile of logits into each row's running state.

    ``Z`` is a ``rows x ld`` tile holding the logits of classes ``[v0, v1)`` (from
    a GEMM). ``S`` is float64 ``rows x 4``: ``(max, count, sum, target logit)``,
    initialised to ``(-inf, 0, 0, nan)``. Tiles merge in vocabulary order, so the
    result is independent of how the vocabulary is tiled up to float64 rounding.
    Non-finite logits are not expected (they come from finite weights).
    """
    WORK: tl.constexpr = tl.float64 if ACCURATE else tl.float32
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    n = v1 - v0
    mb, cb, sb, _nan, _np = _row_state(Z, row * ld, n, offs, BLOCK, WORK)
    m = tl.load(S + row * 4 + 0).to(WORK)
    c = tl.load(S + row * 4 + 1).to(WORK)
    s = tl.load(S + row * 4 + 2).to(WORK)
    M = tl.maximum(m, mb)
    M_fin = M > float("-inf")  # noqa: SIM300
    M0 = tl.where(M_fin, M, 0.0)
    f_old = tl.exp(tl.where(M_fin & (m > float("-inf")), m - M0, float("-inf")))
    f_new = tl.exp(tl.where(M_fin & (mb > float("-inf")), mb - M0, float("-inf")))
    c_new = tl.where(m == M, c, 0.0) + tl.where(mb == M, cb, 0.0)
    s_new = s * f_old + sb * f_new
    s_new += tl.where(m < M, c * f_old, 0.0) + tl.where(mb < M, cb * f_new, 0.0)
    tl.store(S + row * 4 + 0, M.to(tl.float64))
    tl.store(S + row * 4 + 1, c_new.to(tl.float64))
    tl.store(S + row * 4 + 2, s_new.to(tl.float64))
    t = tl.load(T + row).to(tl.int64)
    here = (t >= v0) & (t < v1)
    x_t = tl.load(Z + row * ld + tl.where(here, t - v0, 0)).to(tl.float64)
    old_t = tl.load(S + row * 4 + 3)
    tl.store(S + row * 4 + 3, tl.where(here, x_t, old_t))


@triton.jit
def lce_grad_kernel(
    Z,
    T,
    S,
    R,
    v0,
    v1,
    ld,
    BLOCK: tl.constexpr,
    ACCURATE: tl.constexpr,
):
    """Overwrite a logits tile with ``r * (softmax - onehot)``, in the tile's dtype.

    ``S`` is the finished row state ``(max, count, sum, target logit)`` and ``R`` the
    float64 per-row factor (upstream gradient times weight times the mean scale;
    0 for ignored rows). The target entry uses ``p_t - 1`` from its exp alone, as
    the one-pass kernel does. The caller then multiplies the tile by the GEMM
    operands, so no more than one tile of logits is ever stored.
    """
    WORK: tl.constexpr = tl.float64 if ACCURATE else tl.float32
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    n = v1 - v0
    m = tl.load(S + row * 4 + 0).to(WORK)
    c = tl.load(S + row * 4 + 1).to(WORK)
    s = tl.load(S + row * 4 + 2).to(WORK)
    x_t = tl.load(S + row * 4 + 3).to(WORK)
    r = tl.load(R + row).to(WORK)
    t = tl.load(T + row).to(tl.int64) - v0
    D = c + s
    # p_t - 1 = -(D - e_t) / D without cancellation: the target's term leaves c or s
    t_at = x_t == m
    e_t = tl.exp(tl.where(t_at, float("-inf"), x_t - m))
    pt_m1 = 0.0 - ((c - tl.where(t_at, 1.0, 0.0)) + (s - e_t)) / D
    for start in range(0, n, BLOCK):
        idx = start + offs
        inb = idx < n
        x = tl.load(Z + row * ld + idx, mask=inb, other=0.0).to(WORK)
        p = tl.exp(x - m) / D
        g = tl.where(idx == t, pt_m1, p) * r
        tl.store(Z + row * ld + idx, g.to(Z.dtype.element_ty), mask=inb)
