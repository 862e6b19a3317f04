"""Launchers of the Triton engine: validated tensors and options in, torch tensors out.

What this module is for: laying a validated call out as ``rows x n`` memory
(reduced axes moved last, made contiguous), choosing the kernel switches (block
size, one-block or two-pass, precision) and the grid, and finishing the few
per-row scalars that are cheaper on the host side (the reductions of the item
losses, the mean's denominator). It must never validate user arguments (the
front end did), never import a framework layer, and never compute an
element's value itself: every value comes from a kernel in :mod:`._kernels`.

Each function returns ``None`` when the engine does not cover the call (float64
inputs, which need double-word arithmetic to stay correctly rounded; probability
targets), so the caller falls back to its torch-operations path.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch

from .._errors import SoftmaxkitValueError
from . import _kernels as K

__all__ = [
    "INTERPRETED",
    "PRECISIONS",
    "bce_with_logits",
    "cross_entropy",
    "linear_cross_entropy",
    "log_softmax",
    "logsumexp",
    "norm_warps",
    "softmax",
    "supports",
]

Tensor = torch.Tensor

#: True when the kernels were defined under ``TRITON_INTERPRET=1`` (they run on CPU tensors).
INTERPRETED: bool = type(K.norm_kernel).__name__ == "InterpretedFunction"

PRECISIONS = ("accurate", "fast")

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: Longest row kept in registers (one read, one exp per element), by precision.
#: (float64 rows of 8192 fit 16 warps in 117 registers on sm_90; the cross-entropy
#: kernel, with its gradient and smoothing terms, spills beyond 4096 in float64.)
ONE_BLOCK_MAX = {"accurate": 8192, "fast": 8192}
CE_ONE_BLOCK_MAX = {"accurate": 4096, "fast": 8192}
#: Block of the two-pass kernels for longer rows.
LOOP_BLOCK = {"accurate": 2048, "fast": 4096}
#: Cross-entropy batches up to this many rows count and reduce in two small
#: single-program kernels (a fixed summation order), not in torch operations:
#: a call then launches three kernels and waits for the device once.
CE_SHORT_BATCH = 16384
#: Elements per program of the elementwise kernels.
ELEM_BLOCK = 1024


@contextlib.contextmanager
def _ieee() -> Iterator[None]:
    """Kernel launches compute IEEE special values silently, as the GPU does.

    The interpreter evaluates each operation with NumPy, which warns on
    ``inf - inf``, ``0 * inf`` and overflow in lanes the kernel then discards
    (``tl.where``); on the GPU these are plain IEEE results without traps.
    """
    if not INTERPRETED:
        yield
        return
    import numpy as np

    with np.errstate(all="ignore"):
        yield


def _run(kernel: Any, grid: tuple[int, ...], *args: Any, **meta: Any) -> None:
    # accurate kernels: no contraction of a * b + c into an FMA, so the GPU rounds
    # every float64 operation as the interpreter does (the compile check builds the same)
    meta.setdefault("enable_fp_fusion", not meta.get("ACCURATE", True))
    with _ieee():
        kernel[grid](*args, **meta)


def supports(x: Tensor) -> bool:
    """Whether the engine takes a tensor: float32/float16/bfloat16 on CUDA (or CPU, interpreted)."""
    if not _covers(x):
        return False
    return x.device.type == "cuda" or (INTERPRETED and x.device.type == "cpu")


def _covers(x: Tensor) -> bool:
    return x.dtype in _DTYPES


def _check_device(x: Tensor) -> None:
    if x.device.type == "cuda" or (INTERPRETED and x.device.type == "cpu"):
        return
    msg = (
        f"the Triton engine runs on CUDA tensors, got a tensor on {x.device}; "
        "for CPU tensors set TRITON_INTERPRET=1 before importing softmaxkit (the "
        "interpreter), or unset SOFTMAXKIT_ENGINE"
    )
    raise SoftmaxkitValueError(msg)


def _precision(precision: str) -> bool:
    if precision not in PRECISIONS:
        msg = f"`precision` must be 'accurate' or 'fast', got {precision!r}"
        raise SoftmaxkitValueError(msg)
    return precision == "accurate"


def warps_for(block: int) -> int:
    """Warps of a program handling ``block`` elements at a time."""
    return 4 if block <= 1024 else (8 if block <= 4096 else 16)


def norm_warps(block: int, one: bool, mode: int, accurate: bool) -> int:
    """Warps of the normalizer kernel, as measured on an H200 (BENCHMARKS.md, GPU part).

    The accurate kernels hold float64 values per element, so their best launch
    differs from the fast ones': two-pass rows run best with 4 warps over
    2048-element blocks, register rows up to 4096 with 4 warps for log-softmax
    and logsumexp and 8 for softmax (whose exponentials stay live across the
    row sum); 8192-element rows need 16 warps to fit the registers.
    """
    if not accurate:
        return warps_for(block)
    if not one or block <= 1024:
        return 4
    if block <= 4096:
        return 8 if mode == K.MODE_SOFTMAX else 4
    return 16


def _blocks(
    n: int,
    precision: str,
    block: int | None,
    limits: dict[str, int] = ONE_BLOCK_MAX,
    mode: int | None = None,
) -> tuple[int, bool, int]:
    """(BLOCK, ONE_BLOCK, num_warps) for rows of ``n`` elements (``mode``: normalizers)."""
    one_max = limits[precision] if block is None else block
    if n <= one_max:
        b = max(16, triton_next_pow2(n))
        one = True
    else:
        b = LOOP_BLOCK[precision] if block is None else block
        one = False
    if mode is None:
        return b, one, warps_for(b)
    return b, one, norm_warps(b, one, mode, precision == "accurate")


def triton_next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def _as_rows(x: Tensor, dims: list[int]) -> tuple[Tensor, list[int], list[int]]:
    """``x`` with ``dims`` moved last, contiguous, as ``rows x n``; and how to undo it."""
    rest = [i for i in range(x.dim()) if i not in dims]
    perm = rest + list(dims)
    xp = x.permute(perm) if perm != list(range(x.dim())) else x
    n = 1
    for d in dims:
        n *= x.shape[d]
    return xp.contiguous().reshape(-1, n), perm, list(xp.shape)


def _from_rows(y: Tensor, perm: list[int], pshape: list[int]) -> Tensor:
    y = y.reshape(pshape)
    if perm == list(range(len(perm))):
        return y
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return y.permute(inv).contiguous()


def _normalize(
    x: Tensor,
    dims: list[int],
    mode: int,
    precision: str,
    block: int | None,
    warps: int | None = None,
) -> Tensor:
    acc = _precision(precision)
    _check_device(x)
    if x.numel() == 0:
        return torch.empty_like(x, memory_format=torch.contiguous_format)
    x2, perm, pshape = _as_rows(x, dims)
    rows, n = x2.shape
    y2 = torch.empty_like(x2)
    b, one, w = _blocks(n, precision, block, mode=mode)
    _run(
        K.norm_kernel,
        (rows,),
        x2,
        y2,
        n,
        MODE=mode,
        BLOCK=b,
        ONE_BLOCK=one,
        ACCURATE=acc,
        num_warps=w if warps is None else warps,
    )
    return _from_rows(y2, perm, pshape)


def softmax(
    x: Tensor,
    dims: list[int],
    *,
    precision: str = "accurate",
    block: int | None = None,
    warps: int | None = None,
) -> Tensor | None:
    """Softmax over ``dims`` (non-negative, sorted), or ``None`` when not covered."""
    if not _covers(x):
        return None
    return _normalize(x, dims, K.MODE_SOFTMAX, precision, block, warps)


def log_softmax(
    x: Tensor,
    dims: list[int],
    *,
    precision: str = "accurate",
    block: int | None = None,
    warps: int | None = None,
) -> Tensor | None:
    """Log-softmax over ``dims``, or ``None`` when not covered."""
    if not _covers(x):
        return None
    return _normalize(x, dims, K.MODE_LOG_SOFTMAX, precision, block, warps)


def logsumexp(
    x: Tensor,
    dims: list[int],
    keepdim: bool,
    *,
    precision: str = "accurate",
    block: int | None = None,
) -> Tensor | None:
    """Logsumexp over ``dims`` (``-inf`` over an empty axis), or ``None`` when not covered."""
    if not _covers(x):
        return None
    acc = _precision(precision)
    _check_device(x)
    kept = [1 if i in dims else s for i, s in enumerate(x.shape)]
    out_shape = kept if keepdim else [s for i, s in enumerate(x.shape) if i not in dims]
    n = 1
    for d in dims:
        n *= x.shape[d]
    if x.numel() == 0:
        return torch.full(out_shape, -math.inf if n == 0 else 0.0, dtype=x.dtype, device=x.device)
    x2, _, _ = _as_rows(x, dims)
    rows = x2.shape[0]
    y = torch.empty(rows, dtype=x.dtype, device=x.device)
    b, one, warps = _blocks(n, precision, block, mode=K.MODE_LOGSUMEXP)
    _run(
        K.norm_kernel,
        (rows,),
        x2,
        y,
        n,
        MODE=K.MODE_LOGSUMEXP,
        BLOCK=b,
        ONE_BLOCK=one,
        ACCURATE=acc,
        num_warps=warps,
    )
    return y.reshape(out_shape)


def _mean_scale(den: Tensor) -> Tensor:
    # a zero weight sum (nothing counted, or weights cancelling) is the empty mean, 0;
    # a negative one (negative class weights, as torch allows) divides as torch does
    return torch.where(den != 0, 1.0 / torch.where(den != 0, den, 1.0), 0.0)


def _reduce(item: Tensor, den: Tensor, reduction: str, dtype: torch.dtype) -> Tensor:
    if reduction == "none":
        return _round_to(item, dtype)
    total = item.sum()
    if reduction == "sum":
        return _round_to(total, dtype)
    return _round_to(torch.where(den != 0, total / torch.where(den != 0, den, 1.0), 0.0), dtype)


def _round_to(t: Tensor, dtype: torch.dtype) -> Tensor:
    """A float64 tensor rounded once to ``dtype`` (torch's float64 -> half cast rounds
    twice, through float32): float32 rounded to odd first, then to nearest even."""
    if t.dtype == torch.float64 and dtype in (torch.float16, torch.bfloat16):
        f = t.to(torch.float32)
        sticky = (torch.isfinite(f) & (f.to(torch.float64) != t)).to(torch.int32)
        t = (f.view(torch.int32) | sticky).view(torch.float32)
    return t.to(dtype)


#: float64 parameter vectors ``[eps, z, eps / C, C]`` of the cross-entropy kernel, per
#: device: made once, so an everyday call makes no host-to-device copy
_CE_PARAMS: dict[tuple[float, float, int, str], Tensor] = {}


def _ce_params(eps: float, z: float, C: int, device: torch.device) -> Tensor:
    key = (eps, z, C, str(device))
    p = _CE_PARAMS.get(key)
    if p is None:
        if len(_CE_PARAMS) >= 256:
            _CE_PARAMS.clear()
        vals = [eps, z, eps / C if C else 0.0, float(C)]
        p = _CE_PARAMS[key] = torch.tensor(vals, dtype=torch.float64, device=device)
    return p


def cross_entropy(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    dim: int,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    prob_target: bool,
    need_grad: bool,
    *,
    precision: str = "accurate",
    block: int | None = None,
    warps: int | None = None,
) -> tuple[Tensor, Tensor] | None:
    """Cross-entropy with index targets and, with ``need_grad``, its gradient from the same pass.

    Returns ``(loss, grad)`` (``grad`` empty without ``need_grad``; it is the
    gradient of the returned loss, per item for ``"none"``), or ``None`` for
    probability targets and uncovered dtypes. Raises ``IndexError`` when a class
    index (not ``ignore_index``) is out of range: the kernel flags such rows, so
    the call waits for the device once, after the kernel, and the caller words
    the error. Everything before that stays on the device.
    """
    if prob_target or not _covers(x):
        return None
    acc = _precision(precision)
    _check_device(x)
    C = x.shape[dim]
    item_shape = [s for i, s in enumerate(x.shape) if i != dim]
    if x.numel() == 0:
        # no item has a class left (or there is no item): losses 0, nothing counted
        loss = x.new_zeros(item_shape if reduction == "none" else [])
        return loss, (torch.zeros_like(x) if need_grad else x.new_empty(0))
    x2, perm, pshape = _as_rows(x, [dim])
    rows = x2.shape[0]
    t = target.reshape(-1).contiguous()
    eps, z = float(label_smoothing), float(z_loss)
    w64 = None if weight is None else weight.to(torch.float64).contiguous()
    short = rows <= CE_SHORT_BATCH
    if short:  # the counts and the scale on the device, in one small kernel
        S = torch.empty(3, dtype=torch.float64, device=x.device)
        _run(
            K.ce_count_kernel, (1,), t, S if w64 is None else w64, S, rows, C, ignore_index,
            HAS_W=w64 is not None, MEAN=reduction == "mean", BLOCK=1024, num_warps=4,
        )  # fmt: skip
    else:
        counted = t != ignore_index
        if w64 is None:
            den_pre = counted.sum(dtype=torch.float64)
        else:  # clamped: an out-of-range index is reported after the kernel
            den_pre = torch.where(counted, w64[t.clamp(0, C - 1)], 0.0).sum()
        scale = _mean_scale(den_pre) if reduction == "mean" else den_pre.new_ones(())
        wsum = den_pre.new_full((), float(C)) if w64 is None else w64.sum()
        S = torch.stack([scale, wsum, den_pre])
    loss_item = torch.empty(rows, dtype=torch.float64, device=x.device)
    cnt = torch.empty(rows, dtype=torch.float64, device=x.device)
    g2 = torch.empty_like(x2) if need_grad else x2.new_empty(1)
    b, one, w = _blocks(C, precision, block, CE_ONE_BLOCK_MAX)
    w = 4 if acc else w  # measured best for the float64 kernel at every row length (H200)

    def launch() -> None:
        _run(
            K.ce_kernel,
            (rows,),
            x2,
            t,
            x2 if w64 is None else w64,
            _ce_params(eps, z, C, x.device),
            S,
            loss_item,
            cnt,
            g2,
            C,
            ignore_index,
            HAS_W=w64 is not None,
            HAS_EPS=eps != 0.0,
            HAS_Z=z != 0.0,
            NEED_GRAD=need_grad,
            BLOCK=b,
            ONE_BLOCK=one,
            ACCURATE=acc,
            num_warps=w if warps is None else warps,
        )

    launch()
    red = {"none": 0, "sum": 1, "mean": 2}[reduction]
    if short:  # the loss and the checks in one more small kernel
        flags = torch.empty(2, dtype=torch.float64, device=x.device)
        out = x.new_empty(()) if red else flags
        _run(
            K.ce_finish_kernel, (1,), loss_item, cnt, S, out, flags, rows,
            REDUCE=red, BLOCK=1024, num_warps=4,
        )  # fmt: skip
        den: Tensor | None = None
    else:
        den = cnt.sum()
        flags = torch.stack([den, S[2]])
    # the one wait for the device: a flagged index (NaN count), and whether rows of
    # -inf changed the mean's denominator (rare: one more pass with the new scale)
    den_h, pre_h = flags.tolist()
    if den_h != den_h:
        msg = "class index out of range"
        raise IndexError(msg)
    if need_grad and reduction == "mean" and den_h != pre_h:
        S[0] = 1.0 / den_h if den_h != 0 else 0.0
        launch()
    if short and red:
        loss = out
    elif short:
        loss = _round_to(loss_item.reshape(item_shape), x.dtype)
    else:
        assert den is not None
        loss = _reduce(loss_item.reshape(item_shape), den, reduction, x.dtype)
    grad = _from_rows(g2, perm, pshape) if need_grad else x.new_empty(0)
    return loss, grad


def bce_with_logits(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    pos_weight: Tensor | None,
    reduction: str,
    need_grad: bool,
    *,
    precision: str = "accurate",
) -> tuple[Tensor, Tensor] | None:
    """Binary cross-entropy on logits and, with ``need_grad``, its gradient (same pass)."""
    if not _covers(x):
        return None
    acc = _precision(precision)
    _check_device(x)
    N = x.numel()
    xc = x.contiguous()
    yc = target.expand(x.shape).contiguous()
    wb = None if weight is None else weight.expand(x.shape).contiguous()
    pw = None if pos_weight is None else pos_weight.expand(x.shape).contiguous()
    loss_el = torch.empty(x.shape, dtype=torch.float64, device=x.device)
    g = torch.empty_like(xc) if need_grad else xc.new_empty(1)
    scale = 1.0 / N if reduction == "mean" and N else 1.0
    params = torch.tensor([scale], dtype=torch.float64, device=x.device)
    if N:
        _run(
            K.bce_kernel,
            (triton_cdiv(N, ELEM_BLOCK),),
            xc,
            yc,
            xc if wb is None else wb,
            xc if pw is None else pw,
            params,
            loss_el,
            g,
            N,
            HAS_W=wb is not None,
            HAS_PW=pw is not None,
            NEED_GRAD=need_grad,
            BLOCK=ELEM_BLOCK,
            ACCURATE=acc,
            num_warps=4,
        )
    if reduction == "none":
        loss = _round_to(loss_el, x.dtype)
    elif reduction == "sum":
        loss = _round_to(loss_el.sum(), x.dtype)
    else:
        total = loss_el.sum()
        loss = _round_to(total / N if N else total, x.dtype)
    return loss, (g if need_grad else x.new_empty(0))


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def linear_cross_entropy(
    h: Tensor,
    W: Tensor,
    target: Tensor,
    *,
    bias: Tensor | None = None,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    need_grad: bool = True,
    token_tile: int = 256,
    vocab_tile: int = 8192,
    precision: str = "accurate",
    block: int | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Linear + cross-entropy tile by tile: ``(loss, grad_h, grad_W, grad_bias)``.

    For each tile of ``token_tile`` tokens, each ``vocab_tile`` block of logits is
    one GEMM (cuBLAS through ``torch.matmul``) into a single reused buffer; the
    statistics kernel merges it into the per-token ``(max, count, sum, target
    logit)`` state. With ``need_grad`` a second sweep recomputes each logit tile,
    overwrites it in place with ``r * (softmax - onehot)`` and folds it into the
    gradients with two (three with a bias) GEMMs. At most one
    ``token_tile x vocab_tile`` tile of logits exists at any time. Gradients are
    those of the reduced loss (``reduction`` "mean" or "sum").
    """
    acc = _precision(precision)
    _check_device(h)
    N, _ = h.shape
    V = W.shape[0]
    gemm_dtype = torch.float64 if h.dtype == torch.float64 else torch.float32
    t = target.reshape(-1).contiguous()
    ignored = t == ignore_index
    t_safe = torch.where(ignored, torch.zeros_like(t), t)
    w_t = (
        torch.ones(N, dtype=torch.float64, device=h.device)
        if weight is None
        else weight.to(torch.float64)[t_safe]
    )
    w_t = torch.where(ignored, 0.0, w_t)
    den = w_t.sum()
    state = torch.empty((N, 4), dtype=torch.float64, device=h.device)
    state[:, 0] = -math.inf
    state[:, 1:3] = 0.0
    state[:, 3] = math.nan
    buf = torch.empty(token_tile * vocab_tile, dtype=gemm_dtype, device=h.device)
    hw, Ww = h.to(gemm_dtype), W.to(gemm_dtype)
    bw = None if bias is None else bias.to(gemm_dtype)
    b = LOOP_BLOCK[precision] if block is None else block
    warps = warps_for(b)

    def logits(n0: int, n1: int, v0: int, v1: int) -> Tensor:
        z = buf[: (n1 - n0) * (v1 - v0)].view(n1 - n0, v1 - v0)
        torch.matmul(hw[n0:n1], Ww[v0:v1].T, out=z)
        if bw is not None:
            z += bw[v0:v1]
        return z

    for n0 in range(0, N, token_tile):
        n1 = min(N, n0 + token_tile)
        for v0 in range(0, V, vocab_tile):
            v1 = min(V, v0 + vocab_tile)
            z = logits(n0, n1, v0, v1)
            _run(
    K.lce_stats_kernel,
    (n1 - n0,),
                z, t[n0:n1], state[n0:n1], v0, v1, v1 - v0,
                BLOCK=b, ACCURATE=acc, num_warps=warps,
            )  # fmt: skip
    m, c, s, x_t = state.unbind(1)
    L = torch.log1p((c - 1.0) + s)
    item = torch.where(ignored, 0.0, w_t * (L - (x_t - m)))
    if reduction == "none":
        return _round_to(item, h.dtype), None, None, None
    loss = _reduce(item, den, reduction, h.dtype)
    if not need_grad:
        return loss, None, None, None
    r = w_t * (_mean_scale(den) if reduction == "mean" else 1.0)
    gh = torch.zeros((N, h.shape[1]), dtype=gemm_dtype, device=h.device)
    gW = torch.zeros(W.shape, dtype=gemm_dtype, device=h.device)
    gb = None if bias is None else torch.zeros(V, dtype=gemm_dtype, device=h.device)
    for n0 in range(0, N, token_tile):
        n1 = min(N, n0 + token_tile)
        for v0 in range(0, V, vocab_tile):
            v1 = min(V, v0 + vocab_tile)
            z = logits(n0, n1, v0, v1)
            _run(
    K.lce_grad_kernel,
    (n1 - n0,),
                z, t[n0:n1], state[n0:n1], r[n0:n1], v0, v1, v1 - v0,
                BLOCK=b, ACCURATE=acc, num_warps=warps,
            )  # fmt: skip
            gh[n0:n1].addmm_(z, Ww[v0:v1])
            gW[v0:v1].addmm_(z.T, hw[n0:n1])
            if gb is not None:
                gb[v0:v1] += z.sum(0)
    return (
        loss,
        gh.to(h.dtype),
        gW.to(W.dtype),
        None if gb is None or bias is None else gb.to(bias.dtype),
    )
