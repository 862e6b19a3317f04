"""Which engine runs a torch call, and the calls into each engine.

This module holds the single route decision of :mod:`softmaxkit.torch`,
:func:`engine_for`, and one function per op and direction (``softmax_fwd``,
``cross_entropy_fwd``...) that runs the chosen engine on arguments the public
wrappers have already validated:

* ``"native"``: the C core (``softmaxkit._ckernels``) on CPU tensors of
  float32/float64 (and float16/bfloat16, computed in float32 with a guard
  against double rounding, see :func:`_half_from_f32`). The tensors are handed
  over as zero-copy NumPy views; nothing passes through the public NumPy API,
  so nothing is validated twice.
* ``"agnostic"``: the array-API reference implementation (``softmaxkit._agnostic``)
  running torch operations on the tensor's own device and dtype.
* ``"triton"``: the Triton kernels (``softmaxkit._triton``) for CUDA tensors of
  float32/float16/bfloat16, chosen automatically when triton imports. Only the
  forward functions have kernels (the cross-entropy and BCE ones return the
  gradient from the same pass); the backward functions run the engine that
  would have been chosen without Triton. A launcher returns ``None`` for what it
  does not cover (float64, probability targets): the call then falls back to
  ``native`` or ``agnostic`` as above.

``SOFTMAXKIT_ENGINE`` (``native``, ``agnostic``, ``triton``; unset means
automatic) forces a choice; ``native`` still falls back to ``agnostic`` where
the C core cannot run (other devices, other dtypes). ``triton`` takes every
tensor the kernels cover, CPU tensors too when ``TRITON_INTERPRET=1`` was set
before triton was first imported (Triton's interpreter, how the kernels are
tested without a GPU); forcing it without triton installed is an error naming
``pip install softmaxkit[triton]``. Triton is imported only for a CUDA tensor or
a forced ``triton``, never for an automatic call on a CPU tensor.

Both the eager route (``torch.autograd.Function``) and the ``torch.library``
custom operators call these functions, so their results are bitwise identical.
This module must never validate user arguments, record autograd history (every
engine call runs on detached data) or return a tensor that shares memory with
an input.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from .. import _dispatch, _outputs
from .._agnostic import _losses, _normalize, _sigmoid, _vjp
from .._errors import SoftmaxkitValueError
from .._namespace import Plan, make_plan

try:
    from .. import _ckernels
except ImportError:  # pragma: no cover - a broken build: every call runs the agnostic engine
    _ckernels = None  # type: ignore[assignment]

__all__ = [
    "AGNOSTIC",
    "ENV_ENGINE",
    "NATIVE",
    "TRITON",
    "bce_fwd",
    "cross_entropy_fwd",
    "engine_for",
    "logsumexp_bwd",
    "logsumexp_fwd",
    "nll_fwd",
    "plain_ce",
    "softmax_bwd",
    "softmax_fwd",
]

Tensor = torch.Tensor

ENV_ENGINE = "SOFTMAXKIT_ENGINE"
NATIVE = "native"
AGNOSTIC = "agnostic"
TRITON = "triton"
_ENGINES = (NATIVE, AGNOSTIC, TRITON)

_CODE = {torch.float32: 0, torch.float64: 1}
_HALF = (torch.float16, torch.bfloat16)
_NATIVE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_NP_DTYPE = {torch.float32: np.float32, torch.float64: np.float64}
_ACCURATE = 1  # kernel mode: float32 correctly rounded via float64, float64 double-double


_ENV_DATA = getattr(os.environ, "_data", None)  # the raw mapping: a dict lookup, not a decode
_ENV_KEY = ENV_ENGINE.encode() if _ENV_DATA is not None and os.name == "posix" else ENV_ENGINE


def _forced() -> str | None:
    raw = _ENV_DATA.get(_ENV_KEY) if _ENV_DATA is not None else os.environ.get(ENV_ENGINE)
    if not raw:
        return None
    env = raw.decode() if isinstance(raw, bytes) else str(raw)
    name = env.strip().lower()
    if name not in _ENGINES:
        msg = (
            f"environment variable {ENV_ENGINE}={env!r} names no engine; "
            f"use one of {', '.join(_ENGINES)} or leave it unset"
        )
        raise SoftmaxkitValueError(msg)
    return name


_LAUNCHERS: Any = None  # softmaxkit._triton._launch once loaded
_TRITON_TRIED = False


def _launchers(forced: bool) -> Any:
    """The Triton launchers, imported on first use; ``None`` when triton does not import.

    Raises when the engine is ``forced`` and triton is unavailable.
    """
    global _LAUNCHERS, _TRITON_TRIED
    if not _TRITON_TRIED:
        from .. import _triton

        _LAUNCHERS = _triton.engine()
        _TRITON_TRIED = True
    if _LAUNCHERS is None and forced:
        from .. import _triton

        msg = f"environment variable {ENV_ENGINE}=triton: {_triton.why_not()}"
        raise SoftmaxkitValueError(msg)
    return _LAUNCHERS


def _core_engine(x: Tensor) -> str:
    """``"native"`` or ``"agnostic"``: the engine without Triton (its fallback)."""
    if x.is_cpu and x.dtype in _NATIVE_DTYPES and _ckernels is not None:
        return NATIVE
    return AGNOSTIC


def _bwd_engine(x: Tensor) -> str:
    """The engine of a backward function: Triton has no backward kernels, so its fallback."""
    eng = engine_for(x)
    return _core_engine(x) if eng == TRITON else eng


def engine_for(x: Tensor) -> str:
    """The engine for a call whose main tensor is ``x``: native, agnostic or triton.

    The one place where softmaxkit.torch chooses an engine. Automatic choice:
    the C core for CPU tensors of float32, float64, float16 and bfloat16, the
    Triton kernels for CUDA tensors when triton imports, the agnostic engine
    (torch operations) for everything else. ``"triton"`` is returned for every
    tensor when forced; the forward functions fall back where a kernel does not
    cover the call.
    """
    forced = _forced()
    if forced is None:
        if x.is_cpu:
            return NATIVE if x.dtype in _NATIVE_DTYPES and _ckernels is not None else AGNOSTIC
        if x.is_cuda and _launchers(False) is not None:
            return TRITON
        return AGNOSTIC
    if forced == AGNOSTIC:
        return AGNOSTIC
    if forced == TRITON:
        _launchers(True)
        return TRITON
    return _core_engine(x)


def native_unforced() -> bool:
    """Whether :func:`engine_for` picks the C core for every CPU float32/float64 tensor:
    the core is built and no engine is forced. For the everyday calls' short checks,
    which have settled the device and dtype themselves."""
    return _ckernels is not None and _forced() is None


def _d(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach()


# ----------------------------------------------------------------------------- helpers


@lru_cache(maxsize=1)
def _xp() -> Any:
    import array_api_compat

    return array_api_compat.array_namespace(torch.empty(0))


def _plan(x: Tensor) -> Plan:
    return make_plan(_xp(), x, "accurate")


def _own(t: Tensor, like: Tensor, *inputs: Tensor | None) -> Tensor:
    """``t`` in ``like``'s dtype, contiguous and sharing no memory with ``inputs``."""
    if t.dtype != like.dtype and t.is_floating_point():
        t = t.to(like.dtype)
    t = t.contiguous()
    ptr = t.untyped_storage().data_ptr()
    if t._base is not None or any(
        i is not None and i.untyped_storage().data_ptr() == ptr for i in inputs
    ):
        t = t.clone()
    return t


def _threads(size: int) -> int:
    """torch's thread count (``torch.set_num_threads``), or 1 below the core's minimum work."""
    return 1 if size < _dispatch.SMALL else torch.get_num_threads()


def _np(t: Tensor) -> np.ndarray:
    return t.numpy()


def _rows(x: Tensor, dims: list[int]) -> tuple[Tensor, list[int] | None, int, int]:
    """``x`` as a C-contiguous ``rows x n`` block with ``dims`` last, and the permutation."""
    nd = x.dim()
    n = 1
    for d in dims:
        n *= x.shape[d]
    rows = x.numel() // n if n else 0
    keep = [i for i in range(nd) if i not in dims]
    perm = keep + list(dims)
    if perm == list(range(nd)):
        return x.contiguous().view(rows, n) if n else x, None, rows, n
    return x.permute(perm).contiguous().view(rows, n), perm, rows, n


def _unrows(r: Tensor, shape: torch.Size, perm: list[int] | None) -> Tensor:
    if perm is None:
        return r.view(shape)
    tshape = [shape[i] for i in perm]
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return r.view(tshape).permute(inv)


def _native_ok(x: Tensor, dims: list[int]) -> bool:
    return x.numel() > 0


# ------------------------------------------------------- float16 / bfloat16 in float32


def _half_midpoints(r32: Tensor, half: torch.dtype) -> Tensor:
    """Rows (of a ``rows x n`` float32 block) holding a value exactly between two ``half`` numbers.

    A float32 result within one float32 ulp of the exact value rounds to the
    correctly rounded ``half`` value unless it lies exactly on a midpoint of
    the ``half`` grid (every such midpoint is a float32 number): then the
    exact value may lie on either side. Those rows are recomputed in float64.
    """
    r = r32.double()
    lo = r32.to(half).double()
    d = r - lo
    other = lo + 2.0 * d
    mid = (d != 0) & (other.to(half).double() == other)
    mid |= torch.isinf(lo) & torch.isfinite(r)  # at the overflow threshold
    return mid.any(dim=-1) if mid.dim() > 1 else mid


def _half_from_f32(x: Tensor, run32: Any, run64: Any, rowwise: bool = True) -> Tensor:
    """Run a float32 kernel on a half tensor, round once; midpoint rows are redone in float64."""
    half = x.dtype
    r32 = run32(x.to(torch.float32))
    bad = _half_midpoints(r32, half)
    out = r32.to(half)
    if bool(bad.any()):
        if rowwise and r32.dim() > 1:
            idx = bad.nonzero().squeeze(1)
            out[idx] = run64(x[idx].to(torch.float64)).to(half)
        else:
            out = run64(x.to(torch.float64)).to(half)
    return out


# ------------------------------------------------------------------- softmax family


_BIG_OUT = 4 << 20
# 0-d templates for a reduced loss (torch.empty_like: about 1.1 us, against about 1.9
# for torch.from_numpy of a NumPy scalar array and 1.7-2.2 for torch.empty(()))
_SCALAR = {dt: torch.empty((), dtype=dt) for dt in (torch.float32, torch.float64)}


def _out_buffer(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """A fresh gradient for the C core: torch's allocation below 4 MiB (64-byte aligned
    and recycled by malloc between steps; with it a small MLP's training step is about
    5% faster than with NumPy's, which torch's GEMMs then read), NumPy's above (it asks
    for transparent huge pages, so a fresh buffer faults in 512 times less often; from
    32 MiB through :mod:`softmaxkit._outputs`, which reuses freed outputs' memory).
    Outputs the core writes through a NumPy view stay NumPy's below that size too:
    ``torch.empty`` plus ``.numpy()`` costs about 4 us more per call, a third of a small
    softmax; the everyday softmax hands the core its output's address instead
    (:func:`_out_like`). Used for every large output the core writes: gradients, VJPs
    and the forward outputs that are not NumPy's already."""
    if math.prod(shape) * dtype.itemsize < _BIG_OUT:
        return torch.empty(shape, dtype=dtype)
    return torch.from_numpy(_outputs.empty(shape, _NP_DTYPE[dtype])[0])


def _out_like(x: Tensor) -> Tensor:
    """:func:`_out_buffer` for a gradient like the contiguous float32/float64 ``x``,
    with a quicker small case (``torch.empty_like``: about 1 us, against about 3 for
    ``torch.empty(shape, dtype=...)``). At 1024x50257, cross-entropy forward+backward
    on 2 threads: 110 -> 95 ms (torch's own: 218 ms), the gradient's 206 MB faulted in
    as huge pages."""
    if x.numel() * x.element_size() < _BIG_OUT:
        return torch.empty_like(x)
    return _out_buffer(tuple(x.shape), x.dtype)


def _native_normalize(x2: Tensor, log: bool) -> Tensor:
    rows, n = x2.shape
    out = _out_buffer((rows, n), x2.dtype)
    _ckernels.softmax(
        _np(x2), _np(out), None, rows, n, _CODE[x2.dtype], _ACCURATE, _threads(rows * n), 1.0, log,
        True,
    )  # fmt: skip
    return out


def softmax_last(x: Tensor, code: int, log: bool) -> Tensor:
    """Softmax or log-softmax over the last dimension of a contiguous, non-empty CPU
    float32 (``code`` 0) or float64 (1) tensor, straight into the C core."""
    if x.is_neg():  # a negated view (the operators may get one): its memory holds -x
        x = x.resolve_neg()
    return softmax_plain(x, code, log, x.numel())


def softmax_plain(x: Tensor, code: int, log: bool, size: int) -> Tensor:
    """:func:`softmax_last` for a tensor known not to be a negated view, of ``size``
    elements: the everyday call's route (``_functional._plain_normalize``), which has
    read both already. Inlines :func:`_out_like` and :func:`_threads` (a 32x10 call
    is about 5 us, and each Python call or tensor attribute read is 0.1-0.2 us)."""
    # x is contiguous: so is out
    out = torch.empty_like(x) if size << (2 + code) < _BIG_OUT else _out_like(x)
    n = x.shape[-1]
    threads = 1 if size < _dispatch.SMALL else torch.get_num_threads()
    # by address: x's NumPy view costs about 2 us and made the call itself slower
    _ckernels.softmax_at(x.data_ptr(), out.data_ptr(), size // n, n, code, _ACCURATE, threads, log)
    return out


def softmax_fwd(x: Tensor, dims: list[int], log: bool) -> Tensor:
    """Softmax (``log=False``) or log-softmax of ``x`` over ``dims``."""
    eng = engine_for(x)
    if eng == TRITON:
        fn = _LAUNCHERS.log_softmax if log else _LAUNCHERS.softmax
        y: Tensor | None = fn(x.detach(), dims)
        if y is not None:
            return y
        eng = _core_engine(x)
    if eng == NATIVE and _native_ok(x, dims):
        code = _CODE.get(x.dtype)
        if code is not None and dims[0] == x.dim() - 1 and len(dims) == 1 and x.is_contiguous():
            return softmax_last(x, code, log)  # the common call: no reshaping at all
        x2, perm, _, _ = _rows(x.detach(), dims)
        if x2.dtype in _HALF:
            r = _half_from_f32(
                x2, lambda a: _native_normalize(a, log), lambda a: _native_normalize(a, log)
            )
        else:
            r = _native_normalize(x2, log)
        return _unrows(r, x.shape, perm).contiguous()
    fn = _normalize.log_softmax if log else _normalize.softmax
    with torch.no_grad():
        res = fn(x.detach(), axes=tuple(dims), where=None, temperature=1.0, plan=_plan(x))
    return _own(res, x, x)


def softmax_bwd(y: Tensor, g: Tensor, dims: list[int], log: bool) -> Tensor:
    """The VJP of softmax (``log=False``) or log-softmax from the output ``y``."""
    g = g.to(y.dtype)
    if _bwd_engine(y) == NATIVE and y.dtype in _CODE and _native_ok(y, dims):
        y2, perm, rows, n = _rows(y.detach(), dims)
        g2, _, _, _ = _rows(g.detach(), dims)
        out = _out_buffer((rows, n), y.dtype)
        _ckernels.vjp(
            log, _np(y2), _np(g2), rows, n, _CODE[y.dtype], _ACCURATE, _threads(rows * n), _np(out)
        )
        return _unrows(out, y.shape, perm).contiguous()
    fn = _vjp.log_softmax_vjp if log else _vjp.softmax_vjp
    with torch.no_grad():
        res = fn(y.detach(), g.detach(), axes=tuple(dims), plan=_plan(y))
    return _own(res, y, y, g)


def _reduced_shape(shape: torch.Size, dims: list[int], keepdim: bool) -> list[int]:
    if keepdim:
        return [1 if i in dims else s for i, s in enumerate(shape)]
    return [s for i, s in enumerate(shape) if i not in dims]


def logsumexp_fwd(x: Tensor, dims: list[int], keepdim: bool) -> Tensor:
    """Logsumexp of ``x`` over ``dims`` (computed in float64 at least, rounded once)."""
    eng = engine_for(x)
    if eng == TRITON:
        r: Tensor | None = _LAUNCHERS.logsumexp(x.detach(), dims, keepdim)
        if r is not None:
            return r
        eng = _core_engine(x)
    if eng == NATIVE and _native_ok(x, dims):
        xd = x.detach()
        if xd.dtype in _HALF:
            xd = xd.to(torch.float32)  # exact; the float64 sum is rounded once to the half type
        x2, _, rows, n = _rows(xd, dims)
        lse = torch.empty(rows, dtype=torch.float64)
        _ckernels.logsumexp(
            _np(x2), None, rows, n, _CODE[x2.dtype], _ACCURATE, _threads(rows * n), _np(lse)
        )
        return lse.to(x.dtype).view(_reduced_shape(x.shape, dims, keepdim))
    with torch.no_grad():
        res = _normalize.logsumexp(
            x.detach(),
            axes=tuple(dims),
            b=None,
            where=None,
            keepdims=keepdim,
            return_sign=False,
            plan=_plan(x),
        )
    return _own(res, x, x)  # type: ignore[arg-type]


def logsumexp_bwd(x: Tensor, g: Tensor, dims: list[int], keepdim: bool) -> Tensor:
    """``g * softmax(x)`` over ``dims``: the gradient of logsumexp (0 where ``p`` is 0)."""
    kept = [1 if i in dims else s for i, s in enumerate(x.shape)]
    if _bwd_engine(x) == NATIVE and _native_ok(x, dims):
        xd = x.detach().to(torch.float64)
        p = softmax_fwd(xd, dims, False)
        return (g.detach().to(torch.float64).reshape(kept) * p).to(x.dtype)
    with torch.no_grad():
        res = _vjp.logsumexp_vjp(
            x.detach(), g.detach(), None, axes=tuple(dims), kept=tuple(kept), plan=_plan(x)
        )
    return _own(res, x, x, g)


# ---------------------------------------------------------------------------- losses


def _first(bad: Tensor, values: Tensor) -> str:
    idx = tuple(int(i) for i in bad.nonzero()[0])
    return f"{values[idx].item()!r} at index {idx}"


def _check_values(a: Tensor | None, name: str, *, unit: bool = False, nonneg: bool = False) -> None:
    """Data checks the metadata checks cannot do: finite weights, targets in range."""
    if a is None or a.device.type == "meta" or a.numel() == 0:
        return
    a = a.detach()
    if unit and a.is_floating_point():
        # one reduction for the usual case (NaN propagates to both ends, and fails);
        # the elementwise test below only finds the first offender for the message
        lo, hi = torch.aminmax(a)
        if bool(lo >= 0) and bool(hi <= 1):
            return
    if nonneg and a.is_floating_point() and bool(a.min() >= 0):  # the same, one reduction
        return
    if unit:
        bad = ~((a >= 0) & (a <= 1))
        what = "must lie in [0, 1]"
    elif nonneg:
        bad = ~(a >= 0)
        what = "must hold non-negative probabilities (no NaN)"
    else:
        bad = ~torch.isfinite(a)
        what = "must be finite (negative and zero weights are fine)"
    if bool(bad.any()):
        msg = f"`{name}` {what}, got {_first(bad, a)}"
        raise SoftmaxkitValueError(msg)


def _batch_shape(shape: torch.Size, dim: int) -> list[int]:
    return [s for i, s in enumerate(shape) if i != dim]


def reduce_items(item: Tensor, den: Tensor, reduction: str) -> Tensor:
    """A tensor of losses reduced: as it is, its sum, or its sum over ``den`` (0 where
    ``den`` is 0). The mean is finite wherever it is, also where the sum overflows."""
    if reduction == "none":
        return item
    total, mean = _losses.sum_and_mean(_losses_ns(), item, den)
    return total if reduction == "sum" else mean  # type: ignore[no-any-return]


@lru_cache(maxsize=1)
def _losses_ns() -> Any:
    import array_api_compat.torch as xtorch

    return xtorch


def _index_range_error(t: np.ndarray, C: int, ign: int) -> SoftmaxkitValueError:
    bad = ((t < 0) | (t >= C)) & (t != ign)
    i = int(np.flatnonzero(bad)[0])
    msg = (
        f"`target` has a class index out of range: {int(t[i])} at item {i}; "
        f"valid indices are 0..{C - 1} (or ignore_index={ign})"
    )
    return SoftmaxkitValueError(msg)


_REDUCTION_CODE = {"none": 0, "mean": 1, "sum": 2}


def _native_ce(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    dim: int,
    ign: int,
    reduction: str,
    z: float,
    need_grad: bool,
) -> tuple[Tensor, Tensor]:
    xd = x.detach() if x.requires_grad else x
    half = xd.dtype in _HALF
    if half:
        xd = xd.to(torch.float32)
    if dim == xd.dim() - 1 and xd.is_contiguous():
        perm = None
        n = xd.shape[-1]
        rows = xd.numel() // n if n else 0
        xn = xd.numpy()
    else:
        x2, perm, rows, n = _rows(xd, [dim])
        xn = x2.numpy()
    tn = (target if target.dim() == 1 else target.reshape(rows)).numpy()  # integers: no grad
    if tn.dtype != np.int64 or not tn.flags.c_contiguous:
        tn = np.ascontiguousarray(tn, dtype=np.int64)
    wn = None if weight is None else weight.detach().to(torch.float64).contiguous().numpy()
    code = 1 if xn.dtype == np.float64 else 0
    red = _REDUCTION_CODE[reduction]
    loss = np.empty(rows if red == 0 else 1, np.float64)
    gt = _out_buffer(xn.shape if perm is None else (rows, n), xd.dtype) if need_grad else None
    gn = None if gt is None else gt.numpy()
    try:
        _ckernels.cross_entropy_reduced(
            xn, tn, wn, rows, n, code, _ACCURATE, _threads(rows * n), ign, z, red, loss, gn
        )
    except IndexError:
        raise _index_range_error(tn, n, ign) from None
    np_out = _NP_DTYPE.get(x.dtype)
    r = loss.reshape(_batch_shape(x.shape, dim) if red == 0 else ())
    with np.errstate(over="ignore"):  # a float64 loss past float32's range rounds to inf
        res = torch.from_numpy(r.astype(np_out) if np_out is not None else r)
    if np_out is None:
        res = res.to(x.dtype)
    if gt is None:
        return res, x.new_empty(0)
    g = gt
    if perm is not None:
        g = _unrows(g, xd.shape, perm).contiguous()
    return res, (g.to(x.dtype) if half else g)


_C_FLOATS = (torch.float32, torch.float64)


def _one_hot_index(t: Tensor, dim: int) -> Tensor | None:
    """:func:`softmaxkit._dispatch.one_hot_index` on a tensor that needs no gradient:
    its class indices (int64) where it is one-hot along ``dim``, else ``None``. The
    index kernels give the same loss and gradient (torch's means agree without class
    weights), with the gradient on the C core instead of the array-agnostic engine."""
    if t.requires_grad or not t.is_floating_point() or t.numel() == 0:
        return None
    last = dim % t.dim() == t.dim() - 1
    if t.device.type == "cpu" and t.dtype in _C_FLOATS and last and t.is_contiguous():
        got = _dispatch.one_hot_index(t.numpy(), -1)  # one C pass
        return None if got is None else torch.from_numpy(got)
    if not bool((torch.count_nonzero(t, dim) == 1).all()):  # two passes in all
        return None
    idx = t.argmax(dim)
    return idx if bool((t.gather(dim, idx.unsqueeze(dim)) == 1).all()) else None


def _native_prob_ce(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    dim: int,
    reduction: str,
    eps: float,
    z: float,
    need_grad: bool,
) -> tuple[Tensor, Tensor] | None:
    """Probability targets on float32 CPU logits: the NumPy core's C passes
    (:func:`softmaxkit._dispatch._prob_cross_entropy`, the same bits as
    ``softmaxkit.cross_entropy`` on the arrays), or ``None`` where that path
    declines (a logit that is not finite; a gradient with negative class weights):
    the array-agnostic engine then."""
    xn = x.detach().numpy()
    tn = target.detach().numpy()
    n = x.shape[dim]
    last = dim % x.dim() == x.dim() - 1
    if weight is None and last and x.is_contiguous() and target.is_contiguous():
        # the core's rows as they lie (no plan, no layout): _prob_cross_entropy's calls
        rows = x.numel() // n
        q = tn.reshape(rows, n) if tn.dtype in (np.float32, np.float64) else None
        if q is not None:
            pair = _dispatch._prob_rows(
                xn.reshape(rows, n), q, rows, n, None, eps, z, reduction, need_grad,
                _threads(x.numel()),
            )  # fmt: skip
            if pair is None:
                return None
            item, g = pair
            if reduction == "none":
                item = item.reshape(x.shape[:-1])
            loss = torch.from_numpy(item.astype(np.float32))
            return loss, (x.new_empty(0) if g is None else torch.from_numpy(g).view(x.shape))
    wn = None if weight is None else weight.detach().to(torch.float64).numpy()
    got = _dispatch._prob_cross_entropy(
        xn, tn, dim, wn, eps, z, reduction, None, need_grad, make_plan(np, xn, "accurate"),
        _threads(x.numel()),
    )  # fmt: skip
    if got is None:
        return None
    if not need_grad:
        return torch.from_numpy(np.asarray(got)), x.new_empty(0)
    loss, grad = got
    return torch.from_numpy(np.asarray(loss)), torch.from_numpy(np.ascontiguousarray(grad))


def plain_ce(
    x: Tensor, target: Tensor, ign: int, reduction: str, need_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """:func:`_native_ce` for the everyday call, without NumPy views of the tensors.

    For a non-empty C-contiguous CPU float32/float64 ``(N, C)`` tensor and
    C-contiguous int64 labels ``(N,)`` (the caller, ``_functional._plain_ce``,
    has checked all of this): no class weights, no z-loss, no smoothing. The C
    core reads the tensors at their addresses, so the one ``.numpy()`` view per
    tensor (about 2 us each) is not made. Same engine call, same arithmetic, and
    the float32 loss is rounded once from float64 as ``_native_ce``'s ``astype``:
    the results are bitwise those of :func:`cross_entropy_fwd`. The gradient is
    None unless ``need_grad``.
    """
    rows, n = x.shape
    red = _REDUCTION_CODE[reduction]
    if red:  # one value: torch.empty_like of a 0-d tensor costs less than a NumPy one
        loss = torch.empty_like(_SCALAR[x.dtype])
        lo: Any = loss.data_ptr()
    else:
        lo = np.empty(rows, _NP_DTYPE[x.dtype])
        loss = torch.from_numpy(lo)
    g = _out_like(x) if need_grad else None  # x is contiguous: so is g
    try:
        _ckernels.cross_entropy_reduced_at(
            x.data_ptr(),
            target.data_ptr(),
            rows,
            n,
            _CODE[x.dtype],
            _ACCURATE,
            _threads(rows * n),
            ign,
            red,
            lo,
            0 if g is None else g.data_ptr(),
        )
    except IndexError:
        raise _index_range_error(target.numpy(), n, ign) from None
    return loss, g


def cross_entropy_fwd(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    dim: int,
    ign: int,
    reduction: str,
    eps: float,
    z: float,
    prob: bool,
    need_grad: bool,
) -> tuple[Tensor, Tensor]:
    """Cross-entropy (and its gradient when ``need_grad``; else an empty tensor)."""
    _check_values(weight, "weight")
    eng = engine_for(x)
    # float32 probability targets on the C core: it checks them as it reads them (the
    # one-hot test passes only 0s and 1s), and they are checked here where it declines
    c_prob = prob and eng == NATIVE and x.dtype == torch.float32 and x.numel() > 0
    if prob and not c_prob:
        _check_values(target, "target", nonneg=True)
    if eng == TRITON:
        try:  # the kernel flags class indices out of range (one wait for the device)
            tr: tuple[Tensor, Tensor] | None = _LAUNCHERS.cross_entropy(
                x.detach(), target.detach(), _d(weight), dim, ign, reduction, eps, z, prob,
                need_grad,
            )  # fmt: skip
        except IndexError:
            _check_index_range(target, x.shape[dim], ign)  # words the error and raises
            raise
        if tr is not None:
            return tr
        eng = _core_engine(x)
    if eng == NATIVE and prob and weight is None and x.numel() > 0:
        idx = _one_hot_index(target, dim)
        if idx is not None:  # a class index written out (Keras's categorical labels)
            return cross_entropy_fwd(x, idx, None, dim, -100, reduction, eps, z, False, need_grad)
    if eng == NATIVE and not prob and eps == 0.0 and x.numel() > 0:
        return _native_ce(x, target, weight, dim, ign, reduction, z, need_grad)
    if c_prob:
        pair = _native_prob_ce(x, target, weight, dim, reduction, eps, z, need_grad)
        if pair is not None:
            return pair
        _check_values(target, "target", nonneg=True)  # raises where the core found one
    if not prob and eps > 0.0 and eng == NATIVE:
        from . import _smooth_ce  # imports this module

        if not _smooth_ce.eligible(x):
            return _generic_ce(x, target, weight, dim, ign, reduction, eps, z, prob, need_grad)
        got = _smooth_ce.cross_entropy(x, target, weight, dim, ign, reduction, eps, z, need_grad)
        if got is not None:
            return got
    return _generic_ce(x, target, weight, dim, ign, reduction, eps, z, prob, need_grad)


def _generic_ce(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    dim: int,
    ign: int,
    reduction: str,
    eps: float,
    z: float,
    prob: bool,
    need_grad: bool,
) -> tuple[Tensor, Tensor]:
    """Cross-entropy on the array-API engine (torch operations in float64 or double-word)."""
    if not prob:
        _check_index_range(target, x.shape[dim], ign)
    with torch.no_grad():
        res = _losses.cross_entropy(
            x.detach(),
            target.detach(),
            axis=dim,
            target_is_index=not prob,
            weight=None if weight is None else weight.detach(),
            ignore_index=None if prob else ign,
            label_smoothing=eps,
            z_loss=z,
            reduction=reduction,
            where=None,
            return_grad=need_grad,
            plan=_plan(x),
        )
    if need_grad:
        loss, grad = res
        return _own(loss, x, x, target), _own(grad, x, x, target)
    return _own(res, x, x, target), x.new_empty(0)  # type: ignore[arg-type]


def _check_index_range(target: Tensor, C: int, ign: int) -> None:
    if target.device.type == "meta" or target.numel() == 0:
        return
    bad = ((target < 0) | (target >= C)) & (target != ign)
    if bool(bad.any()):
        raise _index_range_error(target[bad].reshape(-1)[:1].cpu().numpy(), C, ign)


def nll_fwd(
    x: Tensor, target: Tensor, weight: Tensor | None, dim: int, ign: int, reduction: str
) -> Tensor:
    """Negative log-likelihood (torch operations on every engine: one gather and a sum)."""
    _check_values(weight, "weight")
    _check_index_range(target, x.shape[dim], ign)
    with torch.no_grad():
        res = _losses.nll_loss(
            x.detach(),
            target.detach(),
            axis=dim,
            weight=None if weight is None else weight.detach(),
            ignore_index=ign,
            reduction=reduction,
            plan=_plan(x),
        )
    return _own(res, x, x, target)


_NP_FLOATS = (torch.float32, torch.float64)


def _flat64(a: Tensor | None, shape: torch.Size) -> np.ndarray | None:
    """``a`` broadcast to ``shape``, flat, as float64 (the C core's operand type)."""
    if a is None:
        return None
    a = a.detach()
    if (
        a.shape == shape
        and a.dtype in _NP_FLOATS
        and a.is_cpu
        and a.is_contiguous()
        and not a.is_neg()
        and not a.is_conj()
    ):  # the usual case: NumPy widens the tensor's own memory, the same values
        return np.asarray(_np(a), dtype=np.float64).reshape(-1)
    return _np(a.to(torch.float64).expand(shape).contiguous().view(-1))


def _plain_bce(
    x: Tensor, target: Tensor, reduction: str, need_grad: bool
) -> tuple[Tensor, Tensor] | None:
    """:func:`bce_fwd`'s everyday call in a few attribute reads, or None for the general
    route: contiguous CPU float32/float64 logits and targets of one dtype and shape,
    no weights, the C core. The targets are checked by NumPy on the tensors' own
    memory and widened by the kernel as it reads them; the arithmetic and the
    reduction are the general route's, so the results are bitwise the same."""
    if not (
        x.dtype in _NP_FLOATS
        and target.dtype is x.dtype
        and target.shape == x.shape
        and x.is_cpu
        and target.is_cpu
        and x.is_contiguous()
        and target.is_contiguous()
        and not x.is_neg()
        and not target.is_neg()
        and x.numel() > 0
        and engine_for(x) == NATIVE
    ):
        return None
    n = x.numel()
    grad = _out_like(x) if need_grad else None
    if reduction != "none":
        # the losses summed in the core in np.sum's order (no float64 array of them), the
        # mean's division and the one rounding there too: the bits of _bce_reduce. By
        # address, the targets' range checked by the core (about 2 us each for the
        # NumPy views and for each reduction NumPy would check it with)
        mean = reduction == "mean"
        loss = torch.empty_like(_SCALAR[x.dtype])
        total = _ckernels.bce_reduced_at(
            x.data_ptr(), target.data_ptr(), n, _CODE[x.dtype], _ACCURATE, _threads(n),
            1.0 / n if mean else 1.0, mean, loss.data_ptr(),
            0 if grad is None else grad.data_ptr(),
        )  # fmt: skip
        if total is None:  # a target outside [0, 1] or NaN: the general route names it
            return None
        if mean and math.isinf(total) and torch.isfinite(x).all():
            # perhaps finite losses whose sum overflows: the general route's finite mean
            return None
        return loss, (x.new_empty(0) if grad is None else grad)
    ya = _np(target.detach())
    if not (ya.min() >= 0 and ya.max() <= 1):  # NaN fails too: the general route names it
        return None
    g1 = None if grad is None else _np(grad).reshape(-1)
    x1, y1 = _np(x.detach()).reshape(-1), ya.reshape(-1)
    # kind 5: the kernel widens the targets (x's dtype) as it reads them and rounds each
    # float64 loss once to x's dtype
    out = torch.empty(x.shape, dtype=x.dtype)
    _ckernels.sigmoid(5, x1, y1, None, None, n, _CODE[x.dtype], _ACCURATE, _threads(n), 1.0,
                      _np(out).reshape(-1), g1)  # fmt: skip
    return out, (x.new_empty(0) if grad is None else grad)


def _bce_reduce(loss: np.ndarray, reduction: str, shape: torch.Size, dtype: torch.dtype) -> Tensor:
    """The float64 elementwise losses reduced and rounded once to ``dtype``, as the NumPy
    front end does (``np.sum``, then the division for the mean, finite wherever it is)."""
    np_dt = _NP_DTYPE.get(dtype)
    if reduction == "none":
        if np_dt is not None:
            with np.errstate(over="ignore"):  # a loss past the dtype's range rounds to inf
                return torch.from_numpy(loss.astype(np_dt)).view(shape)
        return torch.from_numpy(loss).view(shape).to(dtype)
    total = np.sum(loss) if reduction == "sum" else _dispatch.finite_mean(loss, loss.size)
    if np_dt is not None:
        return torch.from_numpy(np.asarray(total, dtype=np_dt))
    return torch.tensor(float(total), dtype=torch.float64).to(dtype)


def bce_fwd(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    pos_weight: Tensor | None,
    reduction: str,
    need_grad: bool,
) -> tuple[Tensor, Tensor]:
    """Binary cross-entropy on logits (and its gradient when ``need_grad``)."""
    if weight is None and pos_weight is None:
        got = _plain_bce(x, target, reduction, need_grad)
        if got is not None:
            return got
    _check_values(target, "target", unit=True)
    _check_values(weight, "weight")
    _check_values(pos_weight, "pos_weight")
    eng = engine_for(x)
    if eng == TRITON:
        tr: tuple[Tensor, Tensor] | None = _LAUNCHERS.bce_with_logits(
            x.detach(), target.detach(), _d(weight), _d(pos_weight), reduction, need_grad
        )
        if tr is not None:
            return tr
        eng = _core_engine(x)
    if eng == NATIVE and x.numel() > 0:
        xd = x.detach()
        half = xd.dtype in _HALF
        if half:
            xd = xd.to(torch.float32)
        x1 = xd.contiguous().view(-1)
        n = x1.numel()
        shape = x.shape
        y1 = _flat64(target, shape)
        w1 = _flat64(weight, shape)
        p1 = _flat64(pos_weight, shape)
        # kind 4: the losses rounded once to x's dtype in the core, where the kernel's
        # dtype is x's (half precision rounds the float64 losses itself)
        own = reduction == "none" and not half
        loss = torch.empty(n, dtype=x1.dtype if own else torch.float64)
        grad = _out_buffer((n,), x1.dtype) if need_grad else None
        scale = 1.0 / n if reduction == "mean" else 1.0
        _ckernels.sigmoid(
            4 if own else 2, _np(x1), y1, w1, p1, n, _CODE[x1.dtype], _ACCURATE, _threads(n),
            scale, _np(loss), None if grad is None else _np(grad),
        )  # fmt: skip
        res = loss.view(shape) if own else _bce_reduce(_np(loss), reduction, shape, x.dtype)
        if grad is None:
            return res, x.new_empty(0)
        return res, grad.view(shape).to(x.dtype)
    with torch.no_grad():
        out = _sigmoid.binary_cross_entropy_with_logits(
            x.detach(),
            target.detach(),
            weight=None if weight is None else weight.detach(),
            pos_weight=None if pos_weight is None else pos_weight.detach(),
            reduction=reduction,
            return_grad=need_grad,
            plan=_plan(x),
        )
    if need_grad:
        loss_t, grad_t = out
        return _own(loss_t, x, x, target), _own(grad_t, x, x, target)
    return _own(out, x, x, target), x.new_empty(0)  # type: ignore[arg-type]
