"""The Dask engine: tree reductions of the mergeable logsumexp state.

A Dask array whose class axis is chunked is reduced in ONE pass over its
chunks: each chunk becomes a per-row state (:mod:`._statecore`; the native C
core for NumPy chunks), the states are merged in a tree whose shape is fixed by
the chunking and ``SPLIT_EVERY`` (never by the scheduler or the number of
workers), and the root state is finished into logsumexp or cross-entropy.
softmax and log_softmax read the chunks a second time: ``f(x_chunk, state)``
per chunk. The states are 4 to 9 float64 numbers per row, so nothing larger
than an input chunk is ever held, and the graph has one reduction layer where
the array-agnostic path has several with barriers between them.

It must never compute anything: every function returns a lazy Dask array. It
never imports dask at module import time (``import softmaxkit`` stays light);
callers only reach it with a Dask array in hand.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _statecore
from ._namespace import Plan, dtype_name

__all__ = ["SPLIT_EVERY", "covers", "cross_entropy", "logsumexp", "normalize", "state"]

Array = Any

SPLIT_EVERY = 8  # fan-in of the merge tree; fixed so the bits never depend on dask.config


def covers(x: Array, plan: Plan, axes: tuple[int, ...]) -> bool:
    """Whether this engine takes the call: a Dask array of NumPy chunks, one reduced axis."""
    da = _dask_array()
    if da is None or not isinstance(x, da.Array) or len(axes) != 1:
        return False
    if not isinstance(getattr(x, "_meta", None), np.ndarray):
        return False
    if any(math.isnan(s) for s in x.shape):
        return False
    return dtype_name(plan.out) in ("float32", "float64") and dtype_name(plan.work) == "float64"


def _dask_array() -> Any:
    import sys

    mod = sys.modules.get("dask.array")
    return mod


def _width(target: bool, sum_x: bool, entropy: bool) -> int:
    return 4 + int(target) + 3 * int(sum_x) + int(entropy)


def _pack(f: _statecore.Fields, axis: int) -> np.ndarray:
    cols = [f.m, f.c, f.s_hi, f.s_lo]
    if f.xt is not None:
        cols.append(f.xt)
    if f.sx_hi is not None:
        cols += [f.sx_hi, f.sx_lo, f.n]
    if f.t is not None:
        cols.append(f.t)
    return np.stack([np.asarray(c, np.float64) for c in cols], axis=axis)


def _unpack(a: np.ndarray, axis: int, parts: tuple[bool, bool, bool]) -> _statecore.Fields:
    cols = [np.take(a, i, axis=axis) for i in range(a.shape[axis])]
    f = _statecore.Fields(*cols[:4])
    i = 4
    if parts[0]:
        f = f._replace(xt=cols[i])
        i += 1
    if parts[1]:
        f = f._replace(sx_hi=cols[i], sx_lo=cols[i + 1], n=cols[i + 2])
        i += 3
    if parts[2]:
        f = f._replace(t=cols[i])
    return f


def _np_plan(plan: Plan) -> Plan:
    import array_api_compat.numpy as xnp

    return Plan(xnp, xnp.float64, np.dtype(dtype_name(plan.out)), plan.mode, None)


# ---- the tree ---------------------------------------------------------------------


def _chunk_state(
    xb: np.ndarray,
    *rest: np.ndarray,
    axis: int,
    plan: Plan,
    parts: tuple[bool, bool, bool],
    threads: int,
    block_info: Any = None,
) -> np.ndarray:
    offset = 0 if block_info is None else int(block_info[0]["array-location"][axis][0])
    tb = np.squeeze(rest[0], axis=axis) if parts[0] else None
    f = _statecore.build(
        xb,
        plan,
        axis,
        target=tb,
        offset=offset,
        sum_x=parts[1],
        entropy=parts[2],
        threads=threads,
    )
    return _pack(f, axis)


def _merge_many(
    a: np.ndarray, axis: Any, keepdims: bool = True, *, parts: tuple[bool, bool, bool], **_: Any
) -> np.ndarray:
    """Merge the states concatenated along ``axis`` (``k * width`` entries), left to right."""
    import array_api_compat.numpy as xnp

    ax = axis[0] if isinstance(axis, tuple) else axis
    w = _width(*parts)
    k = a.shape[ax] // w
    acc = _unpack(np.take(a, range(w), axis=ax), ax, parts)
    for i in range(1, k):
        nxt = _unpack(np.take(a, range(i * w, (i + 1) * w), axis=ax), ax, parts)
        acc = _statecore.merge(acc, nxt, xnp)
    return _pack(acc, ax)


def state(
    x: Array,
    axis: int,
    plan: Plan,
    *,
    target: Array | None = None,
    sum_x: bool = False,
    entropy: bool = False,
    threads: int = 1,
) -> Array:
    """The merged state of every row as a Dask array: ``width`` entries along ``axis``.

    ``x``'s other axes keep their chunks; ``axis`` ends as a single chunk.
    """
    da = _dask_array()
    nd = x.ndim
    parts = (target is not None, sum_x, entropy)
    w = _width(*parts)
    args: list[Any] = [x]
    if target is not None:
        args.append(da.expand_dims(target, axis))
    meta = np.empty((0,) * nd, np.float64)
    chunks = tuple((w,) * len(c) if i == axis else c for i, c in enumerate(x.chunks))
    states = da.map_blocks(
        _chunk_state,
        *args,
        chunks=chunks,
        dtype=np.float64,
        meta=meta,
        axis=axis,
        plan=_np_plan(plan),
        parts=parts,
        threads=threads,
    )

    def ident(a: np.ndarray, axis: Any = None, keepdims: bool = True, **_: Any) -> np.ndarray:
        return a

    merge = _merge_partial(parts)
    return da.reduction(
        states,
        ident,
        merge,
        combine=merge,
        axis=axis,
        keepdims=True,
        dtype=np.float64,
        split_every={axis: SPLIT_EVERY},
        concatenate=True,
        output_size=w,
        meta=meta,
        name="softmaxkit-state",
    )


def _merge_partial(parts: tuple[bool, bool, bool]) -> Any:
    import functools

    return functools.partial(_merge_many, parts=parts)


# ---- finishing --------------------------------------------------------------------


def _finish_lse(a: np.ndarray, *, axis: int, keepdims: bool, out: Any) -> np.ndarray:
    import array_api_compat.numpy as xnp

    f = _unpack(a, axis, (False, False, False))
    v = _statecore.logsumexp(f, xnp)
    v = np.expand_dims(v, axis) if keepdims else v
    return np.asarray(v, dtype=out)


def logsumexp(
    x: Array, axis: int, keepdims: bool, return_sign: bool, plan: Plan, threads: int
) -> Array | tuple[Array, Array]:
    da = _dask_array()
    st = state(x, axis, plan, threads=threads)
    out = np.dtype(dtype_name(plan.out))
    chunks = tuple(c for i, c in enumerate(st.chunks) if i != axis)
    if keepdims:
        chunks = tuple((1,) if i == axis else c for i, c in enumerate(st.chunks))
    kw: dict[str, Any] = {"axis": axis, "keepdims": keepdims, "out": out}
    lse = st.map_blocks(
        _finish_lse,
        chunks=chunks,
        drop_axis=[] if keepdims else [axis],
        dtype=out,
        meta=np.empty((0,) * len(chunks), out),
        **kw,
    )
    if not return_sign:
        return lse
    sign = da.where(lse == -math.inf, 0.0, 1.0)
    sign = da.where(da.isnan(lse), math.nan, sign).astype(out)
    return lse, sign


def _apply_block(
    xb: np.ndarray, sb: np.ndarray, *, axis: int, plan: Plan, log: bool, threads: int
) -> np.ndarray:
    f = _unpack(sb, axis, (False, False, False))
    if log:
        return _statecore.log_softmax_block(xb, f, plan, axis, threads)  # type: ignore[no-any-return]
    return _statecore.softmax_block(xb, f, plan, axis, threads)  # type: ignore[no-any-return]


def apply(x: Array, st: Array, axis: int, plan: Plan, *, log: bool, threads: int) -> Array:
    """softmax / log_softmax of every chunk of ``x`` from the rows' state ``st``."""
    da = _dask_array()
    nd = x.ndim
    ind = tuple(range(nd))
    sind = tuple(i if i != axis else nd for i in ind)
    out = np.dtype(dtype_name(plan.out))
    return da.blockwise(
        _apply_block,
        ind,
        x,
        ind,
        st,
        sind,
        dtype=out,
        meta=np.empty((0,) * nd, out),
        concatenate=True,
        axis=axis,
        plan=_np_plan(plan),
        log=log,
        threads=threads,
    )


def normalize(x: Array, axis: int, plan: Plan, *, log: bool, threads: int) -> Array:
    """softmax (``log=False``) or log_softmax (``log=True``): state tree, then one map."""
    st = state(x, axis, plan, threads=threads)
    return apply(x, st, axis, plan, log=log, threads=threads)


def _finish_ce(
    a: np.ndarray,
    tb: np.ndarray,
    *,
    axis: int,
    parts: tuple[bool, bool, bool],
    weight: np.ndarray | None,
    ignore_index: int | None,
    eps: float,
    z: float,
) -> np.ndarray:
    import array_api_compat.numpy as xnp

    f = _unpack(a, axis, parts)
    loss, _, counted = _statecore.cross_entropy(f, xnp, label_smoothing=eps, z_loss=z)
    t = np.asarray(tb)
    ign = np.zeros(t.shape, bool) if ignore_index is None else t == ignore_index
    w = np.ones(t.shape) if weight is None else np.asarray(weight, np.float64)[np.where(ign, 0, t)]
    counted = counted & ~ign
    w = np.where(counted, w, 0.0)
    loss = np.where(counted, w * loss, 0.0)
    return np.stack([loss, w], axis=-1)


def cross_entropy(
    logits: Array,
    target: Array,
    *,
    axis: int,
    weight: Array | None,
    ignore_index: int | None,
    label_smoothing: float,
    z_loss: float,
    reduction: str,
    plan: Plan,
    threads: int,
) -> Array:
    """Cross-entropy with class-index targets from one state tree (no gradient)."""
    da = _dask_array()
    tgt = target
    if ignore_index is not None:
        tgt = da.where(target == ignore_index, -1, target)  # no class holds -1
    st = state(logits, axis, plan, target=tgt, sum_x=label_smoothing > 0, threads=threads)
    parts = (True, label_smoothing > 0, False)
    nd = logits.ndim
    batch_ind = tuple(i for i in range(nd) if i != axis)
    tb = target
    w_np = None if weight is None else np.asarray(weight, np.float64)
    pieces = da.blockwise(
        _finish_ce,
        (*batch_ind, nd),
        st,
        tuple(range(nd)),
        tb,
        batch_ind,
        new_axes={nd: 2},
        dtype=np.float64,
        meta=np.empty((0,) * nd, np.float64),
        concatenate=True,
        axis=axis,
        parts=parts,
        weight=w_np,
        ignore_index=ignore_index,
        eps=label_smoothing,
        z=z_loss,
    )
    out = np.dtype(dtype_name(plan.out))
    loss = pieces[..., 0]
    if reduction == "none":
        return loss.astype(out)
    total = loss.sum()
    if reduction == "sum":
        return total.astype(out)
    den = pieces[..., 1].sum()
    return da.where(den > 0, total / da.where(den > 0, den, 1.0), 0.0).astype(out)
