"""Linear + cross-entropy that never holds the ``N x V`` logits.

The engine walks tiles of ``T`` tokens by ``Vt`` classes, each cut into
statistics blocks of ``Vs`` classes, all chosen from the problem size alone by
:func:`tiles` (so a given problem always gets the same tiles, and the same
bits). For one token tile it

1. computes each logit tile with one GEMM, ``W_tile @ h_tile.T + b_tile`` (classes
   by tokens, the faster GEMM shape here), in float32 (float64 for float64
   inputs), takes the target logits from it, and reduces each block (sized to
   stay in cache) to per-token statistics in the manner of Blanchard, Higham &
   Higham: the block maximum ``m``, the number ``c`` of logits at it and the sum
   ``r`` of the other ``exp(x - m)``, plus, when asked, ``sum_c w_c x_c`` and
   the top-k; the block itself is overwritten with ``exp(x - m)``, which the
   gradient pass scales into probabilities;
2. merges the statistics of all blocks at once, each rescaled to the overall
   maximum ``M`` once, into ``lse = M + log1p((C - 1) + R)`` and the loss
   ``(M - x_t) + log1p((C - 1) + R)``, so nothing cancels and a tiny ``R`` is
   never absorbed by the ones;
3. when gradients are wanted, forms each tile's ``d loss / d logits`` and
   immediately folds it into the gradients of the input, the weight and the
   bias with three GEMMs of fixed shape (the weight and bias gradients
   accumulate in float32 for half-precision inputs).

Three GEMMs per tile, as many as the naive ``cross_entropy(h @ W.T, y)`` with
its backward pass, since the gradient is formed in the forward pass. On the
CPU only the GEMMs run multi-threaded; the elementwise passes run on one
thread (see :func:`_run`).

``chunk_size`` only decides whether the logit tiles of a token tile are kept
between steps 1 and 3 (``None``: all of them, ``T x V`` floats) or
recomputed in chunks of ``chunk_size`` classes (less memory, one more GEMM).
Either way every floating-point operation and its order are the same, so the
results are bitwise identical whatever the chunk size.
"""

# No ``from __future__ import annotations``: torch.library reads the annotations.

import math
from typing import Any, NamedTuple

import numpy as np
import torch

from .._errors import SoftmaxkitTypeError, SoftmaxkitValueError

__all__ = ["VOCAB_TILE", "Tiles", "lce_backward_op", "lce_op", "tiles"]

Tensor = torch.Tensor

# The largest vocabulary tile (classes per matrix product); the tiles adapt to the problem.
VOCAB_TILE = 65536
# Bounds of the held logits of one token tile (T x V accumulator floats): a quarter of
# the size of the gradients the call returns, within these limits.
HOLD_MIN_BYTES = 4 << 20
HOLD_MAX_BYTES = 64 << 20
TOKENS_MIN = 128
# One statistics block (T x Vs) is sized to stay in a core's L2 cache during its
# elementwise passes; one vocabulary tile (T x Vt, the unit of the matrix products)
# is a whole number of blocks near GEMM_BYTES, so the products are few and large.
TILE_BYTES = 2 << 20
BLOCK_MAX = 8192
GEMM_BYTES = 32 << 20  # measured at 4096x1024x65536: 6% faster than 16 MiB, 64 MiB no better


class Tiles(NamedTuple):
    tokens: int  # T, tokens per tile
    vocab: int  # Vt, classes per tile (one matrix product)
    block: int  # Vs, classes per statistics block (Vt is a multiple of it, or V)


def tiles(N: int, D: int, V: int, acc: torch.dtype) -> Tiles:
    """The tile shape for ``N`` tokens, hidden size ``D`` and ``V`` classes.

    The held logits of one token tile (``T x V``) take at most a quarter of the
    gradients' size (``(N + V) D``), between 4 and 64 MiB, which bounds the
    working memory; then ``T`` is as large as that allows (fewer passes over the
    weight gradient), a multiple of 16 from 16 to 1024, and at least
    ``TOKENS_MIN`` (128) when that many tokens' logits fit in 64 MiB. ``Vs`` keeps one
    ``T x Vs`` block near 2 MiB, so its elementwise passes stay in cache
    (a multiple of 256, from 512 to ``BLOCK_MAX``); ``Vt`` is a whole number of blocks,
    near 32 MiB and at most ``VOCAB_TILE`` classes, so that the matrix products
    run at the speed of large ones and start few parallel regions.
    """
    item = torch.empty((), dtype=acc).element_size()
    budget = min(HOLD_MAX_BYTES, max(HOLD_MIN_BYTES, (N + V) * D * item // 4))
    T = budget // (max(V, 1) * item)
    # The weight gradient is read and written once per token tile by a product of
    # depth T, which runs at half speed below ~128 (measured, 2 threads: 21 GFLOP/s
    # at T = 64, 30 at 128, 40 at 256 for V = 50257, D = 256); so T is at least
    # TOKENS_MIN while the held logits stay within HOLD_MAX_BYTES.
    T = max(T, min(TOKENS_MIN, HOLD_MAX_BYTES // (max(V, 1) * item)))
    T = max(16, min(1024, T // 16 * 16))
    T = min(T, max(N, 1))
    Vs = TILE_BYTES // (T * item) // 256 * 256
    Vs = max(512, min(BLOCK_MAX, Vs))
    Vt = Vs * max(1, min(GEMM_BYTES // (T * Vs * item), VOCAB_TILE // Vs))
    V1 = max(V, 1)
    return Tiles(T, min(Vt, V1), min(Vs, V1))


class _Opts(NamedTuple):
    ignore_index: int
    eps: float
    z: float
    reduction: str
    chunk: int  # classes whose logits are held at once, in whole tiles (>= V: all)
    topk: int
    extras: bool


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_targets(target: Tensor, V: int, ignore_index: int) -> None:
    bad = ((target < 0) | (target >= V)) & (target != ignore_index)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0, 0])
        msg = (
            f"`target` has a class index out of range: {int(target[i])} at index {i}; "
            f"valid indices are 0..{V - 1} (or ignore_index={ignore_index})"
        )
        raise SoftmaxkitValueError(msg)


class _TileStats:
    """Per-token statistics of one token tile, from its statistics blocks in order.

    :meth:`pick` takes the target logits from each vocabulary tile, :meth:`add`
    reduces each block to its maximum ``m`` and column sum ``S`` of
    ``exp(L - m)`` (and the exact rest where ``S < 2``), and :meth:`finish`
    merges all blocks at once: ``M = max m``, then every block is rescaled to
    ``M`` once (no running rescaling, and a handful of operations per token
    tile instead of a score per block).
    """

    def __init__(self, n: int, device: torch.device, topk: int) -> None:
        self.n = n
        self.device = device
        self.xt = torch.zeros(n, dtype=torch.float64, device=device)
        self.ms: list[Tensor] = []
        self.Ss: list[Tensor] = []
        self.fixes: list[tuple[int, Tensor, Tensor]] = []
        self.wxs: list[Tensor] = []
        self.topk = topk
        self.tv: Tensor | None = None
        self.ti: Tensor | None = None

    def pick(self, L: Tensor, v0: int, t_safe: Tensor) -> None:
        """Take the target logits that fall in this tile (classes ``v0:``, logits ``L``)."""
        v1 = v0 + L.shape[0]
        inside = (t_safe >= v0) & (t_safe < v1)
        row = torch.where(inside, t_safe - v0, torch.zeros_like(t_safe))
        picked = L.gather(0, row[None, :])[0].to(torch.float64)
        self.xt = self.xt + torch.where(inside, picked, 0.0)

    def add(self, L: Tensor, v0: int, w_tile: Tensor | None, want_wx: bool) -> None:
        """Fold one block (classes x tokens) in; overwrite it with ``exp(L - m)``.

        The gradient pass turns the block into probabilities with one
        multiplication by ``exp(m - lse)``.
        """
        f64 = torch.float64
        if want_wx:
            if w_tile is None:
                self.wxs.append(L.sum(0, dtype=f64))
            else:
                self.wxs.append(w_tile.to(f64) @ L.to(f64))
        if self.topk:
            k = min(self.topk, L.shape[0])
            tv, ti = L.topk(k, dim=0)
            tv, ti = tv.t(), ti.t() + v0
            if self.tv is None or self.ti is None:
                self.tv, self.ti = tv, ti
            else:
                allv = torch.cat([self.tv, tv], 1)
                alli = torch.cat([self.ti, ti], 1)
                kk = min(self.topk, allv.shape[1])
                self.tv, pos = allv.topk(kk, dim=1)
                self.ti = alli.gather(1, pos)
        m = L.amax(0)
        e = _exp_shifted_(L, m)
        S = e.sum(0)
        # In the manner of Blanchard, Higham & Higham, a block's sum splits into
        # the count c of entries at the maximum (e == 1) and the rest r, so that a
        # tiny r is never absorbed by the ones. Only c + r and, when it is below 2,
        # a tiny r matter to the result: S >= 2 means (C - 1) + R >= 1 downstream,
        # where the split is immaterial (c = 1, r = S - 1); S < 2 means a single
        # entry is at the maximum (any partial sum holding two ones is at least 2),
        # and r is then summed exactly without it, on those columns only.
        low = torch.nonzero((S < 2.0) & torch.isfinite(m))[:, 0]
        if low.numel():
            sub = e.index_select(1, low)
            self.fixes.append((len(self.ms), low, sub.masked_fill_(sub == 1.0, 0.0).sum(0)))
        self.ms.append(m)
        self.Ss.append(S)

    def finish(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(M, L1, lse, wx)`` in float64, with ``L1 = log1p((C - 1) + R)``.

        Also keeps the block maxima, ``m_acc`` (working dtype) and ``m64``
        (float64), one row per block.
        """
        f64 = torch.float64
        self.m_acc = torch.stack(self.ms)
        m = self.m_acc.to(f64)
        S = torch.stack(self.Ss).to(f64)
        fin = torch.isfinite(m)
        c = fin.to(f64)
        r = torch.where(fin, S - 1.0, S)
        for q, low, rest in self.fixes:
            r[q, low] = rest.to(f64)
        M = m.amax(0)
        at = m == M[None, :]
        R = torch.where(at, r, torch.exp(m - _finite_or_zero(M)[None, :]) * (c + r)).sum(0)
        C = torch.where(at, c, 0.0).sum(0)
        finM = torch.isfinite(M)
        L1 = torch.log1p(torch.where(finM, (C - 1.0) + R, 0.0))
        lse = torch.where(finM, M + L1, M)
        self.m64 = m
        wx = torch.stack(self.wxs).sum(0) if self.wxs else torch.zeros_like(M)
        return M, L1, lse, wx


def _finite_or_zero(m: Tensor) -> Tensor:
    return torch.nan_to_num(m, nan=0.0, posinf=0.0, neginf=0.0)


def _exp_shifted_(L: Tensor, m: Tensor) -> Tensor:
    """``exp(L - m)`` in place, per token (column); rows of ``-inf`` give 0."""
    return L.sub_(_finite_or_zero(m)[None, :]).exp_()


def _slot(buf: Tensor, i: int, w: int, n: int) -> Tensor:
    """Slot ``i`` of the tile buffer as a contiguous ``w x n`` (classes x tokens) matrix."""
    return buf[i, : w * n].view(w, n)


# Half-precision weights are widened block by block, at most this many elements
# at a time, so the float32 copy stays small whatever the vocabulary tile.
WIDEN_ELEMENTS = 1 << 22


def _weight_blocks(W: Tensor, v0: int, v1: int, acc: torch.dtype) -> list[tuple[int, int, Tensor]]:
    """``(s0, s1, W[s0:s1])`` in the working dtype covering ``v0:v1`` (one block unless widened).

    The blocks depend only on the tile and ``W``'s shape, never on ``chunk_size``.
    """
    if W.dtype == acc:
        return [(v0, v1, W[v0:v1])]
    rows = max(1, WIDEN_ELEMENTS // max(W.shape[1], 1))
    return [(s, min(v1, s + rows), W[s : min(v1, s + rows)].to(acc)) for s in range(v0, v1, rows)]


class _Gemm:
    """Matrix products of the engine: torch's BLAS, the portable default.

    ``mm`` writes ``out = A @ B``; ``mm_acc`` adds ``A @ B`` to ``out``. Both
    always see the same operand shapes for a given problem, whatever
    ``chunk_size``, so the results do not depend on it. With ``threads`` set,
    each product runs on that many torch threads and torch goes back to one
    thread after it (the engine runs its elementwise passes on one thread).
    """

    name = "torch"

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads

    def mm(self, A: Tensor, B: Tensor, out: Tensor) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
            try:
                torch.mm(A, B, out=out)
            finally:
                torch.set_num_threads(1)
        else:
            torch.mm(A, B, out=out)

    def mm_acc(self, A: Tensor, B: Tensor, out: Tensor) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
            try:
                out.addmm_(A, B)
            finally:
                torch.set_num_threads(1)
        else:
            out.addmm_(A, B)


class _NumpyGemm(_Gemm):
    """The same products through NumPy's BLAS on zero-copy views of CPU tensors.

    NumPy's ``matmul`` has no ``beta``, so ``mm_acc`` forms the product in row
    blocks of ``ACC_ROWS`` rows (a scratch that stays in cache) and adds each
    block to ``out`` at once.
    """

    name = "numpy"

    def __init__(self, cols: int, dtype: torch.dtype) -> None:
        self._scratch = torch.empty((ACC_ROWS, cols), dtype=dtype)

    def mm(self, A: Tensor, B: Tensor, out: Tensor) -> None:
        np.matmul(_np(A), _np(B), out=_np(out))

    def mm_acc(self, A: Tensor, B: Tensor, out: Tensor) -> None:
        a, b, o = _np(A), _np(B), _np(out)
        s = _np(self._scratch)
        for r0 in range(0, a.shape[0], ACC_ROWS):
            r1 = min(a.shape[0], r0 + ACC_ROWS)
            t = s[: r1 - r0, : b.shape[1]]
            np.matmul(a[r0:r1], b, out=t)
            np.add(o[r0:r1], t, out=o[r0:r1])


# Rows of one block of an accumulated product (the NumPy path's scratch: ACC_ROWS x D).
ACC_ROWS = 512


def _np(t: Tensor) -> np.ndarray:
    return t.detach().numpy()


# Which library does the matrix products of CPU tensors: "torch" (the default; any value
# but "numpy" means it) or "numpy" (NumPy's BLAS on zero-copy views). NumPy's OpenBLAS
# was the default on CPUs other than Intel's until session 20, for a speed gain that
# measured within the noise on an AMD Zen 3 (N=2048, D=512, V=32768, 2 threads, 3
# interleaved rounds: 1.97 s against 1.94 s with torch's products; N=4096, D=1024,
# V=65536: 13.1 s against 13.6 s), while OpenBLAS's per-thread buffers added about 30 MB
# of resident memory to the call (working memory beyond the gradients 47 MB against 18
# MB at the first shape, 104 MB against 69 MB at the second) and to the torch process
# after it. The choice never depends on timing, so a given set-up always gives the same
# bits.
GEMM = "torch"


def _gemm_for(device: torch.device, cols: int, dtype: torch.dtype, threads: int = 0) -> _Gemm:
    if device.type == "cpu" and GEMM == "numpy":
        return _NumpyGemm(cols, dtype)
    return _Gemm(threads if device.type == "cpu" else 0)


def _logit_tile(
    mm: _Gemm,
    hc: Tensor,
    W: Tensor,
    b: Tensor | None,
    v0: int,
    v1: int,
    acc: torch.dtype,
    out: Tensor,
) -> Tensor:
    """Logits of one tile, classes x tokens: ``W[v0:v1] @ hc.T + b``."""
    for s0, s1, Wb in _weight_blocks(W, v0, v1, acc):
        rows = out[s0 - v0 : s1 - v0]
        mm.mm(Wb, hc.t(), rows)
        if b is not None:
            rows.add_(b[s0:s1, None].to(acc))
    return out


def _run(
    h: Tensor,
    W: Tensor,
    b: Tensor | None,
    target: Tensor,
    weight: Tensor | None,
    opts: _Opts,
    row_scale: Tensor | None,
    need_grad: bool,
) -> tuple[Tensor, ...]:
    """:func:`_engine` with the matrix products for this device.

    On the CPU, torch's elementwise operations run on one thread for the
    duration and only the matrix products use several (torch's, or NumPy's
    BLAS threads): every multi-threaded operation ends at a barrier, and on
    a busy machine a barrier waits for a descheduled thread, so the many small
    elementwise passes of the tiles cost far more on two threads than on one
    (measured on 2 shared cores: 1.6x the time of the whole call). The
    elementwise passes are a small share of the work; torch's thread count is
    restored on exit. On one thread, the sums of those passes are also the
    same whatever torch's thread count.
    """
    threads = torch.get_num_threads()
    mm = _gemm_for(h.device, h.shape[1], _acc_dtype(h.dtype), threads if threads > 1 else 0)
    if h.device.type != "cpu" or threads == 1:
        return _engine(mm, h, W, b, target, weight, opts, row_scale, need_grad)
    torch.set_num_threads(1)
    try:
        return _engine(mm, h, W, b, target, weight, opts, row_scale, need_grad)
    finally:
        torch.set_num_threads(threads)


def _engine(
    mm: _Gemm,
    h: Tensor,
    W: Tensor,
    b: Tensor | None,
    target: Tensor,
    weight: Tensor | None,
    opts: _Opts,
    row_scale: Tensor | None,
    need_grad: bool,
) -> tuple[Tensor, ...]:
    """The engine. ``row_scale`` (float64, per token) multiplies each token's gradient.

    ``mm`` does every matrix product (:class:`_Gemm`).

    Returns per-token losses (float64), ``lse`` (float64), entropy (float64 or
    empty), top-k values and indices (or empty), and, with ``need_grad``, the
    float gradients of ``h``, ``W`` and ``b`` (accumulator dtype; ``gb`` empty
    without a bias).
    """
    N, D = h.shape
    V = W.shape[0]
    acc = _acc_dtype(h.dtype)
    dev = h.device
    f64 = torch.float64
    ign, eps, z = opts.ignore_index, opts.eps, opts.z
    TT, VT, VS = tiles(N, D, V, acc)
    n_tiles = max(1, -(-V // VT))
    hold = min(n_tiles, max(1, -(-opts.chunk // VT)))
    loss = torch.zeros(N, dtype=f64, device=dev)
    lse_all = torch.zeros(N, dtype=f64, device=dev)
    ent_all = torch.zeros(N if opts.extras else 0, dtype=f64, device=dev)
    k = min(opts.topk, V)
    tv_all = torch.zeros((N, k), dtype=acc, device=dev)
    ti_all = torch.zeros((N, k), dtype=torch.int64, device=dev)
    gh = torch.empty((N, D) if need_grad else (0,), dtype=acc, device=dev)
    # written (not accumulated) by the first token tile; zeros when there is none
    gW_shape = (V, D) if need_grad else (0,)
    gW = (torch.empty if N else torch.zeros)(gW_shape, dtype=acc, device=dev)
    gb = torch.zeros(V if (need_grad and b is not None) else 0, dtype=acc, device=dev)
    w64 = None if weight is None else weight.to(f64)
    w_sum = float(V) if w64 is None else w64.sum()
    want_wx = eps > 0.0
    tile_size = min(TT, max(N, 1)) * min(VT, max(V, 1))
    buf = torch.empty((hold, tile_size), dtype=acc, device=dev)
    for i0 in range(0, N, TT):
        i1 = min(N, i0 + TT)
        n = i1 - i0
        hc = h[i0:i1]
        if hc.dtype != acc:
            hc = hc.to(acc)
        tc = target[i0:i1]
        ignored = tc == ign
        t_safe = torch.where(ignored, torch.zeros_like(tc), tc)
        st = _TileStats(n, dev, k)

        def tile(j: int, *, hc: Tensor = hc, n: int = n) -> Tensor:
            v0 = j * VT
            v1 = min(V, v0 + VT)
            return _logit_tile(mm, hc, W, b, v0, v1, acc, _slot(buf, j % hold, v1 - v0, n))

        for j in range(n_tiles):
            v0 = j * VT
            L = tile(j)
            st.pick(L, v0, t_safe)
            for s0 in range(0, L.shape[0], VS):
                Ls = L[s0 : s0 + VS]
                u0 = v0 + s0
                w_blk = None if w64 is None else w64[u0 : u0 + Ls.shape[0]]
                st.add(Ls, u0, w_blk, want_wx)
        M, L1, lse, wx = st.finish()
        w_t = torch.ones(n, dtype=f64, device=dev) if w64 is None else w64[t_safe]
        counted = ~ignored
        nll = (M - st.xt) + L1
        nll = torch.where(torch.isfinite(M), nll, torch.where(torch.isnan(M), M, math.inf))
        item = w_t * ((1.0 - eps) * nll + z * lse * lse)
        if eps:
            item = item + (eps / V) * (w_sum * lse - wx)
        loss[i0:i1] = torch.where(counted, item, 0.0)
        lse_all[i0:i1] = lse
        if k:
            assert st.tv is not None and st.ti is not None
            tv_all[i0:i1] = st.tv
            ti_all[i0:i1] = st.ti
        if not (need_grad or opts.extras):
            continue
        # d loss_r / d logit_cr = a_r p_cr - c1_r [c == t_r] - (eps / V) s_r w_c
        # float64 (a where() of two Python floats is the default dtype, float32, and
        # rounded eps / V in g_t below)
        s = counted.to(f64) if row_scale is None else row_scale[i0:i1]
        s = torch.where(counted, s, 0.0)
        lse_safe = torch.where(torch.isfinite(lse), lse, 0.0)
        a = s * (w_t * ((1.0 - eps) + 2.0 * z * lse_safe) + (eps / V) * w_sum)
        c1 = s * w_t * (1.0 - eps)
        # exact value at the target: a p_t - c1 = c1 expm1(-nll) + (a - c1) exp(-nll)
        g_t = c1 * torch.expm1(-nll) + (a - c1) * torch.exp(-nll)
        if eps:
            g_t = g_t - (eps / V) * s * w_t
        lse_fin = torch.isfinite(lse)
        ent = torch.zeros(n, dtype=f64, device=dev) if opts.extras else None
        # p = exp(L - m) exp(m - lse) per block: the factor is formed in float64, rounded once
        f_all = torch.where(lse_fin, torch.exp(st.m64 - torch.where(lse_fin, lse, 0.0)), 0.0)
        scale_all = (a * f_all).to(acc)
        s_acc = s.to(acc)
        g_t_acc = g_t.to(acc)
        q = 0  # block index within the token tile
        for j in range(n_tiles):
            v0 = j * VT
            if hold >= n_tiles:
                E = _slot(buf, j, min(V, v0 + VT) - v0, n)  # exp(L - m) per block, kept
            else:
                E = tile(j)  # the same operations again, block by block below
            v1 = v0 + E.shape[0]
            for s0 in range(0, E.shape[0], VS):
                Eb = E[s0 : s0 + VS]
                if hold < n_tiles:
                    _exp_shifted_(Eb, st.m_acc[q])
                if ent is not None:
                    P = Eb * f_all[q].to(acc)[None, :]
                    ent -= torch.special.xlogy(P, P).sum(0, dtype=f64)
                if need_grad:
                    Eb.mul_(scale_all[q][None, :])
                    if eps:
                        u0 = v0 + s0
                        u1 = u0 + Eb.shape[0]
                        wt = (
                            torch.ones(u1 - u0, dtype=acc, device=dev)
                            if w64 is None
                            else w64[u0:u1].to(acc)
                        )
                        Eb.sub_((eps / V) * wt[:, None] * s_acc[None, :])
                q += 1
            if not need_grad:
                continue
            # d loss / d logit at the target: the exact value g_t
            G = E
            inside = (t_safe >= v0) & (t_safe < v1) & counted
            row = torch.where(inside, t_safe - v0, torch.zeros_like(t_safe))[None, :]
            cur = G.gather(0, row)
            G.scatter_(0, row, torch.where(inside[None, :], g_t_acc[None, :], cur))
            for s0, s1, Wb in _weight_blocks(W, v0, v1, acc):
                Gb = G[s0 - v0 : s1 - v0]
                # the first contribution is written, not added to zeros (saves a fill pass)
                if j == 0 and s0 == v0:
                    mm.mm(Gb.t(), Wb, gh[i0:i1])
                else:
                    mm.mm_acc(Gb.t(), Wb, gh[i0:i1])
                if i0 == 0:
                    mm.mm(Gb, hc, gW[s0:s1])
                else:
                    mm.mm_acc(Gb, hc, gW[s0:s1])
            if b is not None:
                gb[v0:v1] += G.sum(1)
        if ent is not None:
            ent_all[i0:i1] = ent
    return loss, lse_all, ent_all, tv_all, ti_all, gh, gW, gb


def _run_skipping_ignored(
    h: Tensor,
    W: Tensor,
    b: Tensor | None,
    target: Tensor,
    weight: Tensor | None,
    opts: _Opts,
    row_scale: Tensor | None,
    need_grad: bool,
) -> tuple[Tensor, ...]:
    """:func:`_run` on the counted tokens only, when no per-token extra is wanted.

    Ignored tokens have loss 0 and gradient 0, so their logits are never formed
    (padding costs nothing). The tiles then hold counted tokens only; the result
    is still independent of ``chunk_size``.
    """
    N = h.shape[0]
    if opts.extras or opts.topk or N == 0:
        return _run(h, W, b, target, weight, opts, row_scale, need_grad)
    keep = torch.nonzero(target != opts.ignore_index)[:, 0]
    if keep.numel() == N:
        return _run(h, W, b, target, weight, opts, row_scale, need_grad)
    rs = None if row_scale is None else row_scale.index_select(0, keep)
    out = _run(
        h.index_select(0, keep), W, b, target.index_select(0, keep), weight, opts, rs, need_grad
    )
    loss_k, lse_k, ent, tv, ti, gh_k, gW, gb = out
    loss = loss_k.new_zeros(N).index_copy_(0, keep, loss_k)
    lse = lse_k.new_zeros(N).index_copy_(0, keep, lse_k)
    tv = tv.new_zeros((N, tv.shape[1]))
    ti = ti.new_zeros((N, ti.shape[1]))
    gh = gh_k
    if need_grad:
        gh = gh_k.new_zeros((N, h.shape[1])).index_copy_(0, keep, gh_k)
    return loss, lse, ent, tv, ti, gh, gW, gb


def _reduce_loss(loss: Tensor, target: Tensor, weight: Tensor | None, opts: _Opts) -> Tensor:
    counted = target != opts.ignore_index
    if opts.reduction == "none":
        return loss
    from ._engine import reduce_items

    w_t = (
        counted.to(torch.float64)
        if weight is None
        else torch.where(
            counted,
            weight.to(torch.float64)[torch.where(counted, target, torch.zeros_like(target))],
            0.0,
        )
    )
    return reduce_items(loss, w_t.sum(), opts.reduction)


def _mean_den(target: Tensor, weight: Tensor | None, ign: int) -> Tensor:
    counted = target != ign
    if weight is None:
        return counted.to(torch.float64).sum()
    t_safe = torch.where(counted, target, torch.zeros_like(target))
    return torch.where(counted, weight.to(torch.float64)[t_safe], 0.0).sum()


@torch.library.custom_op("softmaxkit::linear_cross_entropy", mutates_args=())
def lce_op(
    h: Tensor,
    W: Tensor,
    b: Tensor | None,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    reduction: str,
    chunk: int,
    topk: int,
    extras: bool,
    need_grad: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Chunked linear + cross-entropy on 2-D ``h``; gradients from the same pass.

    Returns ``(loss, lse, entropy, topk_logprobs, topk_indices, gh, gW, gb)``;
    the gradients are those of the reduced loss and are empty without
    ``need_grad`` (always without for ``"none"``).
    """
    _check_targets(target, W.shape[0], ignore_index)
    from ._engine import _check_values

    _check_values(weight, "weight")  # NaN or infinite class weights, named as cross_entropy does
    opts = _Opts(ignore_index, label_smoothing, z_loss, reduction, chunk, topk, extras)
    row_scale = None
    if reduction == "mean":
        den = _mean_den(target, weight, ignore_index)
        scale = torch.where(den != 0, 1.0 / torch.where(den != 0, den, 1.0), 0.0)
        row_scale = scale.expand(h.shape[0])
    grads = need_grad and reduction != "none"
    loss, lse, ent, tv, ti, gh, gW, gb = _run_skipping_ignored(
        h, W, b, target, weight, opts, row_scale, grads
    )
    out_loss = _reduce_loss(loss, target, weight, opts).to(h.dtype)
    lp = (tv.to(torch.float64) - lse[:, None]).to(tv.dtype)
    acc = _acc_dtype(h.dtype)
    if grads:
        gh, gW = gh.to(h.dtype), gW.to(W.dtype)
        if b is not None:
            gb = gb.to(b.dtype)
    return out_loss, lse.to(acc), ent.to(acc), lp, ti, gh, gW, gb


@lce_op.register_fake
def _(
    h: Tensor,
    W: Tensor,
    b: Tensor | None,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    reduction: str,
    chunk: int,
    topk: int,
    extras: bool,
    need_grad: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    N = h.shape[0]
    acc = _acc_dtype(h.dtype)
    grads = need_grad and reduction != "none"
    k = min(topk, W.shape[0])
    return (
        h.new_empty((N,) if reduction == "none" else ()),
        h.new_empty(N, dtype=acc),
        h.new_empty(N if extras else 0, dtype=acc),
        h.new_empty((N, k), dtype=acc),
        h.new_empty((N, k), dtype=torch.int64),
        h.new_empty(h.shape if grads else (0,)),
        W.new_empty(W.shape if grads else (0,)),
        h.new_empty(0) if (b is None or not grads) else b.new_empty(b.shape),
    )


@torch.library.custom_op("softmaxkit::linear_cross_entropy_backward", mutates_args=())
def lce_backward_op(
    h: Tensor,
    W: Tensor,
    b: Tensor | None,
    target: Tensor,
    weight: Tensor | None,
    g: Tensor,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    chunk: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients for ``reduction="none"`` with per-token upstream gradients ``g``.

    The weight gradient sums over tokens, so it needs ``g`` first: this pass
    recomputes the logit tiles (the one case with work in the backward pass).
    """
    opts = _Opts(ignore_index, label_smoothing, z_loss, "none", chunk, 0, False)
    out = _run_skipping_ignored(h, W, b, target, weight, opts, g.to(torch.float64), True)
    gh, gW, gb = out[5], out[6], out[7]
    return gh.to(h.dtype), gW.to(W.dtype), gb if b is None else gb.to(b.dtype)


@lce_backward_op.register_fake
def _(
    h: Tensor,
    W: Tensor,
    b: Tensor | None,
    target: Tensor,
    weight: Tensor | None,
    g: Tensor,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    chunk: int,
) -> tuple[Tensor, Tensor, Tensor]:
    return (
        h.new_empty(h.shape),
        W.new_empty(W.shape),
        h.new_empty(0, dtype=_acc_dtype(h.dtype)) if b is None else b.new_empty(b.shape),
    )


def _lce_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    h, W, b, target, weight = inputs[:5]
    ctx.opts = inputs[5:]
    ctx.has_bias = b is not None
    for t in output[1:]:
        ctx.mark_non_differentiable(t)
    # no zero tensors for the outputs without gradients (one would be V x D)
    ctx.set_materialize_grads(False)
    # The inputs are saved by reference (no copy), for reduction="none" and for a
    # second backward through the same graph (retain_graph=True).
    ctx.save_for_backward(h, W, b, target, weight)
    # Non-differentiable outputs hold no reference to this node, so keeping the
    # forward's gradients on ctx makes no cycle; the first backward hands them over.
    ctx.grads = None if inputs[8] == "none" else [output[5], output[6], output[7]]


def _lce_backward(ctx: Any, g: Tensor | None, *_unused: Any) -> tuple[Any, ...]:
    if torch.is_grad_enabled():
        msg = (
            "linear_cross_entropy does not support double backward (create_graph=True); "
            "compose softmaxkit.torch.cross_entropy with torch.nn.functional.linear instead"
        )
        raise SoftmaxkitValueError(msg)
    if g is None:  # no gradient reached the loss
        return (None,) * 13
    ign, eps, z, reduction, chunk = ctx.opts[:5]
    grads = ctx.grads
    if grads is not None and grads[0].numel() == 0 and grads[1].numel() == 0:
        grads = None  # the forward ran without gradients (nothing required them then)
    if grads is None:
        # reduction="none", or a second backward: recompute with per-token scales
        h, W, b, target, weight = ctx.saved_tensors
        if reduction == "none":
            g_tok = g
        elif reduction == "sum":
            g_tok = g.expand(target.shape)
        else:
            den = _mean_den(target, weight, ign)
            g_tok = (g * torch.where(den != 0, 1.0 / torch.where(den != 0, den, 1.0), 0.0)).expand(
                target.shape
            )
        gh, gW, gb = lce_backward_op(h, W, b, target, weight, g_tok, ign, eps, z, chunk)
    elif torch.compiler.is_compiling():
        gh, gW, gb = (t * g for t in grads)
    else:
        # Hand the buffers over without a copy (autograd can then adopt them as .grad).
        ctx.grads = None
        gh, gW, gb = grads
        if not bool(g == 1):
            gh.mul_(g)
            gW.mul_(g)
            gb.mul_(g)
    return (gh, gW, gb if ctx.has_bias else None) + (None,) * 10


lce_op.register_autograd(_lce_backward, setup_context=_lce_setup)


class LinearCrossEntropyOutput(NamedTuple):
    """The loss and the extra per-token outputs asked for (``None`` otherwise)."""

    loss: Tensor
    lse: Tensor | None
    entropy: Tensor | None
    topk_logprobs: Tensor | None
    topk_indices: Tensor | None


def linear_cross_entropy(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    *,
    linear_bias: Tensor | None = None,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
    chunk_size: int | None = None,
    return_lse: bool = False,
    return_entropy: bool = False,
    topk: int = 0,
) -> Any:
    r"""Cross-entropy of ``input @ linear_weight.T + linear_bias`` without forming the logits.

    Equal to ``cross_entropy(linear(input, linear_weight, linear_bias), target, ...)``
    (torch 2.13's ``F.linear_cross_entropy`` arguments), but the ``N x V`` logits
    never exist: the engine walks tiles of tokens by classes sized to the
    problem (the logits held at once take a quarter of the gradients' size,
    or 128 tokens' worth, at most 64 MiB), keeps a
    ``(max, count, sum)`` per token in float64, and folds each tile's
    gradient into the gradients of ``input``, ``linear_weight`` and
    ``linear_bias`` during the forward pass, so the backward pass only scales
    them by the upstream gradient.

    .. math::

        \ell_i = w_{t_i}\bigl[(1 - \varepsilon)(\operatorname{lse}_i - z_{i t_i})
                 + \zeta\,\operatorname{lse}_i^2\bigr]
                 + \frac{\varepsilon}{V}\sum_c w_c(\operatorname{lse}_i - z_{ic}),
        \qquad z = h W^\top + b

    Parameters
    ----------
    input : Tensor of shape (..., D)
        Hidden states (float32, float64, bfloat16 or float16).
    linear_weight : Tensor of shape (V, D)
        The output projection, same dtype and device as ``input``.
    target : Tensor of shape (...)
        Integer class indices (probability targets are not supported here; use
        :func:`cross_entropy` on the logits for those).
    linear_bias : Tensor of shape (V,), optional
        Bias of the projection.
    weight : Tensor of shape (V,), optional
        Per-class loss weights; ``"mean"`` divides by the summed weights of the
        counted tokens, as torch does.
    ignore_index : int, optional
        Tokens whose target equals it have loss 0 and gradient 0. Default -100.
    label_smoothing : float in [0, 1], optional
        Target ``(1 - eps) onehot + eps / V``.
    z_loss : float, optional
        Adds ``z_loss * lse**2`` per token (PaLM).
    reduction : {"mean", "sum", "none"}, optional
        A ``"mean"`` over no counted token is 0.
    chunk_size : int, optional
        Classes whose logits are held per token tile between the statistics
        pass and the gradient pass, rounded up to whole vocabulary tiles. ``None``
        (default) holds the whole vocabulary: ``T x V`` floats and three GEMMs
        per tile. A smaller value trades memory for a fourth GEMM
        (recomputation). The results are bitwise identical for every value.
    return_lse, return_entropy : bool, optional
        Also return each token's ``logsumexp`` of the logits and the entropy of
        its predicted distribution (``-sum p log p``), from the same pass.
    topk : int, optional
        Also return each token's ``topk`` largest log-probabilities and their
        class indices.

    Returns
    -------
    Tensor or LinearCrossEntropyOutput
        The loss (scalar, or the target's shape for ``"none"``) when no extra
        output is requested, otherwise a named tuple ``(loss, lse, entropy,
        topk_logprobs, topk_indices)``. The extras are float32 (float64 for
        float64 inputs), carry no gradient, and have the target's shape (plus
        ``topk`` for the top-k outputs).

    See Also
    --------
    cross_entropy, LinearCrossEntropyLoss

    Notes
    -----
    Logits, statistics and gradients are accumulated in float32 for float16,
    bfloat16 and float32 inputs (float64 for float64), and the loss of each
    token is formed in float64 from ``(M - z_t) + log1p((C - 1) + R)``
    (Blanchard, Higham & Higham), so a confident correct token keeps a tiny
    positive loss instead of 0. With ``reduction="none"`` the weight gradient
    depends on the per-token upstream gradient, so the backward pass recomputes
    the tiles once (the only recomputation). Double backward is not supported.

    References
    ----------
    .. [1] E. Wijmans et al., "Cut your losses in large-vocabulary language
       models", ICLR 2025.
    .. [2] M. Milakov, N. Gimelshein, "Online normalizer calculation for
       softmax", arXiv:1805.02867, 2018.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> g = torch.Generator().manual_seed(0)
    >>> h = torch.randn(6, 4, generator=g, requires_grad=True)
    >>> W = torch.randn(10, 4, generator=g, requires_grad=True)
    >>> t = torch.tensor([1, 2, 3, -100, 5, 9])
    >>> loss = skt.linear_cross_entropy(h, W, t)
    >>> ref = torch.nn.functional.cross_entropy(h @ W.T, t)
    >>> bool(torch.allclose(loss, ref))
    True
    >>> out = skt.linear_cross_entropy(h, W, t, reduction="none", return_entropy=True, topk=2)
    >>> out.topk_indices.shape
    torch.Size([6, 2])
    """
    from . import _checks as chk

    x = chk.float_input(input, promote_int=False)
    Wt = chk.tensor_arg(linear_weight, "linear_weight")
    if x.dim() < 1:
        msg = "`input` must have shape (..., D), got a 0-d tensor"
        raise SoftmaxkitValueError(msg)
    D = x.shape[-1]
    if Wt.dim() != 2 or Wt.shape[1] != D:
        msg = (
            f"`linear_weight` must have shape (V, {D}) to match input's last dimension, "
            f"got {tuple(Wt.shape)}"
        )
        raise SoftmaxkitValueError(msg)
    for name, other in (("linear_weight", Wt), ("linear_bias", linear_bias)):
        if other is None:
            continue
        chk.tensor_arg(other, name)
        if other.device != x.device:
            msg = (
                f"`{name}` is on {other.device} but `input` is on {x.device}; "
                "move them to one device"
            )
            raise SoftmaxkitValueError(msg)
        if other.dtype != x.dtype:
            msg = f"`{name}` has dtype {other.dtype} but `input` has {x.dtype}; they must match"
            raise SoftmaxkitTypeError(msg)
    V = Wt.shape[0]
    if linear_bias is not None and tuple(linear_bias.shape) != (V,):
        msg = f"`linear_bias` must have shape ({V},), got {tuple(linear_bias.shape)}"
        raise SoftmaxkitValueError(msg)
    t = chk.tensor_arg(target, "target")
    if t.is_floating_point():
        msg = (
            f"`target` must hold integer class indices, got {t.dtype}; linear_cross_entropy "
            "takes no probability targets: for those use softmaxkit.torch.cross_entropy on "
            "the logits"
        )
        raise SoftmaxkitValueError(msg)
    if t.device != x.device:
        msg = f"`target` is on {t.device} but `input` is on {x.device}; move them to one device"
        raise SoftmaxkitValueError(msg)
    if t.dtype == torch.bool or t.is_complex():
        msg = f"`target` must hold integer class indices, got {t.dtype}"
        raise SoftmaxkitTypeError(msg)
    if tuple(t.shape) != tuple(x.shape[:-1]):
        msg = (
            f"`target` has shape {tuple(t.shape)} but `input` {tuple(x.shape)} needs one "
            f"class index per row: shape {tuple(x.shape[:-1])}"
        )
        raise SoftmaxkitValueError(msg)
    t = t.to(torch.int64)
    w = chk.opt_tensor(weight, x, "weight", (V,))
    if w is not None and w.requires_grad and torch.is_grad_enabled():
        msg = "gradients with respect to `weight` are not supported (nor in torch); detach it"
        raise SoftmaxkitValueError(msg)
    red = chk.check_reduction(reduction)
    eps = chk.check_label_smoothing(label_smoothing)
    z = chk.check_nonneg_float(z_loss, "z_loss")
    ign = chk.int_arg(ignore_index, "ignore_index")
    k = chk.int_arg(topk, "topk")
    if not 0 <= k <= V:
        msg = f"`topk` must lie in [0, {V}] (the number of classes), got {k}"
        raise SoftmaxkitValueError(msg)
    if chunk_size is None:
        hold = max(V, 1)
    else:
        cs = chk.int_arg(chunk_size, "chunk_size")
        if cs <= 0:
            msg = f"`chunk_size` must be a positive number of classes, got {cs}"
            raise SoftmaxkitValueError(msg)
        hold = min(cs, max(V, 1))
    h2 = x.reshape(x.shape[:-1].numel(), D)  # -1 cannot be inferred when D == 0
    extras = bool(return_lse) or bool(return_entropy)
    need_grad = torch.is_grad_enabled() and any(
        a is not None and a.requires_grad for a in (x, Wt, linear_bias)
    )
    t1 = t.reshape(-1)
    loss, lse, ent, lp, ti, _gh, _gW, _gb = lce_op(
        h2, Wt, linear_bias, t1, w, ign, eps, z, red, hold, k, extras, need_grad
    )
    if red == "none":
        loss = loss.reshape(t.shape)
    if not (return_lse or return_entropy or k):
        return loss
    shape = tuple(t.shape)
    return LinearCrossEntropyOutput(
        loss,
        lse.reshape(shape) if return_lse else None,
        ent.reshape(shape) if return_entropy else None,
        lp.reshape((*shape, k)) if k else None,
        ti.reshape((*shape, k)) if k else None,
    )
