"""The Dask engine: tree reductions of the mergeable logsumexp state.

A Dask array whose class axis is chunked is reduced in ONE pass over its
chunks. The class axis is cut into canonical tiles of ``TILE`` classes at fixed
global indices; each chunk reduces the tiles it holds whole to one per-row state
(:mod:`._statecore`; the native C core reads them in place) and keeps the
partial tiles at its edges raw (at most ``TILE - 1`` classes a side) until the
merge tree (fan-in ``SPLIT_EVERY``) joins them with their neighbours. Every
tile is therefore reduced by the same operations whatever the chunking, and
the results differ between chunkings only through the double-word merges (at
worst ``k * 2**-62`` relative; the tests find no float32 or float64 result
that changes between chunkings). The root state is finished into logsumexp or
cross-entropy.
softmax and log_softmax read the chunks a second time: ``f(x_chunk, state)``
per chunk. The states are 4 to 9 float64 numbers per row. Besides them, a
merge node holds the raw edges of its inputs: under ``TILE`` classes a side
each, so at most ``2 * SPLIT_EVERY * (TILE - 1)`` classes per row of its row
block (none when the chunk boundaries fall on tile boundaries). Wide row blocks
with class chunks that are not multiples of ``TILE`` therefore cost more memory
per task than their chunks alone. The graph has one reduction layer where the
array-agnostic path has several with barriers between them.

It must never compute anything: every function returns a lazy Dask array. It
never imports dask at module import time (``import softmaxkit`` stays light);
callers only reach it with a Dask array in hand.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from . import _statecore
from ._namespace import Plan, dtype_name

__all__ = ["SPLIT_EVERY", "covers", "cross_entropy", "logsumexp", "normalize", "state"]

Array = Any

TILE = 4096  # canonical tiles of the class axis (global indices), reduced alike in any chunking
SPLIT_EVERY = 8  # fan-in of the merge tree; fixed so the bits never depend on dask.config


def covers(x: Array, plan: Plan, axes: tuple[int, ...]) -> bool:
    """Whether this engine takes the call: a Dask array of NumPy chunks, one reduced axis."""
    da = _dask_array()
    if da is None or not isinstance(x, da.Array) or len(axes) != 1:
        return False
    from ._dispatch import FORCE_AGNOSTIC

    if FORCE_AGNOSTIC:  # SOFTMAXKIT_ENGINE=agnostic: the array-agnostic engine on Dask too
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
    return fields_from_columns(cols, parts)


def fields_from_columns(cols: list[Array], parts: tuple[bool, bool, bool]) -> _statecore.Fields:
    """The fields of a state from its columns, in :meth:`LogSumExpState.to_array` order."""
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

    return Plan(xnp, np.dtype(np.float64), np.dtype(dtype_name(plan.out)), plan.mode, None)


# ---- the tree ---------------------------------------------------------------------


class _Cfg(NamedTuple):
    plan: Plan
    parts: tuple[bool, bool, bool]
    threads: int


class _Piece(NamedTuple):
    """A stretch ``[start, end)`` of every row of a row block, partly reduced.

    Whole canonical tiles (``[k TILE, (k + 1) TILE)`` in global class indices)
    are reduced to ``fields``; the partial tiles at either end stay raw
    (``head``, ``tail``, at most ``TILE - 1`` classes each, class axis last)
    until a neighbour completes them. Without a whole tile, ``head`` holds the
    whole stretch and ``fields`` and ``tail`` are ``None``.
    """

    start: int
    end: int
    head: np.ndarray
    fields: _statecore.Fields | None
    tail: np.ndarray | None
    target: np.ndarray | None


def _fold(cfg: _Cfg, f: _statecore.Fields) -> _statecore.Fields:
    """Merge the states along the last axis in a fixed pairwise tree."""
    import array_api_compat.numpy as xnp

    names = [k for k, v in f._asdict().items() if v is not None]
    while f.m.shape[-1] > 1:
        t = f.m.shape[-1]
        h = t // 2
        even = f._replace(**{k: getattr(f, k)[..., 0 : 2 * h : 2] for k in names})
        odd = f._replace(**{k: getattr(f, k)[..., 1 : 2 * h : 2] for k in names})
        merged = _statecore.merge(even, odd, xnp)
        if t % 2:
            merged = merged._replace(
                **{
                    k: np.concatenate([getattr(merged, k), getattr(f, k)[..., -1:]], -1)
                    for k in names
                }
            )
        f = merged
    return f._replace(**{k: getattr(f, k)[..., 0] for k in names})


def _tiles(
    cfg: _Cfg, full: np.ndarray, col0: int, ncols: int, start: int, target: np.ndarray | None
) -> _statecore.Fields:
    """The state of the whole tiles ``full[..., col0 : col0 + ncols]`` (global start ``start``).

    ``ncols`` is a multiple of ``TILE``, or one partial tile (the last of a row).
    """
    t = ncols // TILE if ncols > TILE else 1
    width = ncols // t
    batch = full.shape[:-1]
    if not any(cfg.parts) and full.flags.c_contiguous and ncols > 0 and full.size > 0:
        flat = full.reshape((-1, full.shape[-1]))  # a view: full is C-contiguous
        f = _statecore.build_columns(flat, col0, width, t, cfg.plan, cfg.threads)
        if f is not None:
            f = f._replace(
                **{k: getattr(f, k).reshape((*batch, t)) for k in ("m", "c", "s_hi", "s_lo")}
            )
            return _fold(cfg, f)
    xt = full[..., col0 : col0 + ncols].reshape((*batch, t, width))
    tgt = None
    if target is not None:
        tgt = target[..., None] - (start + width * np.arange(t, dtype=target.dtype))
    f = _statecore.build(
        xt,
        cfg.plan,
        xt.ndim - 1,
        target=tgt,
        offset=0,
        sum_x=cfg.parts[1],
        entropy=cfg.parts[2],
        threads=cfg.threads,
    )
    return _fold(cfg, f)


def _merge_opt(*fs: _statecore.Fields | None) -> _statecore.Fields | None:
    import array_api_compat.numpy as xnp

    acc = None
    for f in fs:
        if f is None:
            continue
        acc = f if acc is None else _statecore.merge(acc, f, xnp)
    return acc


def _make_piece(cfg: _Cfg, start: int, raw: np.ndarray, target: np.ndarray | None) -> _Piece:
    end = start + raw.shape[-1]
    h = min(-(-start // TILE) * TILE, end)
    t = (end // TILE) * TILE
    if t <= h:
        return _Piece(start, end, np.array(raw), None, None, target)
    raw = np.ascontiguousarray(raw)  # a copy only if the chunk is not C-ordered already
    f = _tiles(cfg, raw, h - start, t - h, h, target)
    # copies, so a kept edge never pins the whole input chunk in memory
    return _Piece(
        start, end, np.array(raw[..., : h - start]), f, np.array(raw[..., t - start :]), target
    )


def _join(cfg: _Cfg, a: _Piece, b: _Piece) -> _Piece:
    """The piece of two adjacent pieces (``a.end == b.start``)."""
    if a.fields is None:
        left, left_start = a.head, a.start
    else:
        assert a.tail is not None
        left, left_start = a.tail, a.end - a.tail.shape[-1]
    mid = _make_piece(cfg, left_start, np.concatenate([left, b.head], axis=-1), a.target)
    fields = _merge_opt(a.fields, mid.fields, b.fields)
    if fields is None:
        return _Piece(a.start, b.end, mid.head, None, None, a.target)
    head = a.head if a.fields is not None else mid.head
    if b.fields is not None:
        tail = b.tail
    else:
        tail = mid.tail if mid.fields is not None else mid.head
    return _Piece(a.start, b.end, head, fields, tail, a.target)


def _piece_of_block(
    xb: np.ndarray, *rest: np.ndarray, axis: int, cfg: _Cfg, block_info: Any = None
) -> np.ndarray:
    start = 0 if block_info is None else int(block_info[0]["array-location"][axis][0])
    tb = np.squeeze(rest[0], axis=axis) if cfg.parts[0] else None
    raw = np.moveaxis(np.asarray(xb), axis, -1)
    out = np.empty((1,) * xb.ndim, dtype=object)
    out.reshape(-1)[0] = _make_piece(cfg, start, raw, tb)
    return out


def _flat_pieces(obj: Any) -> list[_Piece]:
    if isinstance(obj, (list, tuple)) and not isinstance(obj, _Piece):
        out: list[_Piece] = []
        for o in obj:
            out += _flat_pieces(o)
        return out
    return [np.asarray(obj, dtype=object).reshape(-1)[0]]


def _ident(a: Any, axis: Any = None, keepdims: bool = True, **_: Any) -> Any:
    return a


def _finish_all(
    objs: Any, axis: Any = None, keepdims: bool = True, *, cfg: _Cfg, ax: int, **_: Any
) -> np.ndarray:
    pieces = _flat_pieces(objs)
    acc = pieces[0]
    for p in pieces[1:]:
        acc = _join(cfg, acc, p)
    if acc.fields is None:
        f = _tiles(cfg, acc.head, 0, acc.head.shape[-1], acc.start, acc.target)
    else:
        last = None
        if acc.tail is not None and acc.tail.shape[-1]:
            tail = acc.tail
            last = _tiles(cfg, tail, 0, tail.shape[-1], acc.end - tail.shape[-1], acc.target)
        merged = _merge_opt(acc.fields, last)
        assert merged is not None
        f = merged
    return _pack(f, ax)


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
    import functools

    da = _dask_array()
    nd = x.ndim
    parts = (target is not None, sum_x, entropy)
    w = _width(*parts)
    cfg = _Cfg(_np_plan(plan), parts, threads)
    args: list[Any] = [x]
    if target is not None:
        # targets made from NumPy arrays or lists, or chunked otherwise, get the logits'
        # batch chunks, block for block (map_blocks pairs blocks by index)
        batch = tuple(c for i, c in enumerate(x.chunks) if i != axis)
        target = da.asarray(target).rechunk(batch)
        args.append(da.expand_dims(target, axis))
    obj_meta = np.empty((0,) * nd, dtype=object)
    pieces = da.map_blocks(
        _piece_of_block,
        *args,
        chunks=tuple((1,) * len(c) for c in x.chunks),
        dtype=object,
        meta=obj_meta,
        axis=axis,
        cfg=cfg,
    )
    red = da.reduction(
        pieces,
        _ident,
        functools.partial(_finish_all, cfg=cfg, ax=axis),
        combine=functools.partial(_wrap_join, cfg=cfg, nd=nd),
        axis=axis,
        keepdims=True,
        dtype=object,
        split_every={axis: SPLIT_EVERY},
        concatenate=False,
        meta=obj_meta,
        name="softmaxkit-state",
    )
    chunks = tuple((w,) if i == axis else c for i, c in enumerate(x.chunks))
    return da.Array(red.dask, red.name, chunks, meta=np.empty((0,) * nd, np.float64))


def _wrap_join(
    objs: Any, axis: Any = None, keepdims: bool = True, *, cfg: _Cfg, nd: int, **_: Any
) -> np.ndarray:
    pieces = _flat_pieces(objs)
    acc = pieces[0]
    for p in pieces[1:]:
        acc = _join(cfg, acc, p)
    out = np.empty((1,) * nd, dtype=object)
    out.reshape(-1)[0] = acc
    return out


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


def apply_fields(x: Array, f: _statecore.Fields, axis: int, plan: Plan, *, log: bool) -> Array:
    """softmax / log_softmax of a Dask array from a state's fields (NumPy or Dask)."""
    da = _dask_array()
    cols = [f.m, f.c, f.s_hi, f.s_lo]
    batch_chunks = tuple(c for i, c in enumerate(x.chunks) if i != axis)
    if all(isinstance(c, np.ndarray) for c in cols):
        st = da.from_array(
            np.stack([np.asarray(c, np.float64) for c in cols], axis=axis),
            chunks=tuple((4,) if i == axis else c for i, c in enumerate(x.chunks)),
        )
    else:
        st = da.stack([da.asarray(c).rechunk(batch_chunks) for c in cols], axis=axis)
        st = st.rechunk({axis: -1}).astype(np.float64)
    return apply(x, st, axis, plan, log=log, threads=1)


def normalize(x: Array, axis: int, plan: Plan, *, log: bool, threads: int) -> Array:
    """softmax (``log=False``) or log_softmax (``log=True``): state tree, then one map."""
    st = state(x, axis, plan, threads=threads)
    return apply(x, st, axis, plan, log=log, threads=threads)


def _finish_ce(
    a: np.ndarray,
    tb: np.ndarray,
    *wb: np.ndarray,
    axis: int,
    parts: tuple[bool, bool, bool],
    n_classes: int,
    ignore_index: int | None,
    eps: float,
    z: float,
) -> np.ndarray:
    import array_api_compat.numpy as xnp

    f = _unpack(a, axis, parts)
    t = np.asarray(tb)
    weight = np.asarray(wb[0], np.float64) if wb else None
    ign = np.zeros(t.shape, bool) if ignore_index is None else t == ignore_index
    # the public entry points check class indices as each target block is computed
    # (`_validation.checked`), so a bad index raises before it gets here; should one
    # come all the same, it found no logit: the loss of an impossible class, inf
    bad = ~ign & ((t < 0) | (t >= n_classes))
    safe = np.where(ign | bad, 0, t)
    w = None if weight is None else weight[safe]
    loss, _, counted = _statecore.cross_entropy(f, xnp, label_smoothing=eps, z_loss=z, w_t=w)
    loss = np.where(bad, np.inf, loss)
    counted = counted & ~ign
    den = np.where(counted, 1.0 if w is None else w, 0.0)
    loss = np.where(counted, loss, 0.0)
    return np.stack([loss, den], axis=-1)


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
    nd = logits.ndim
    batch_ind = tuple(i for i in range(nd) if i != axis)
    # targets made from NumPy arrays or lists arrive with chunks of their own: give them
    # the logits' batch chunks, block for block
    target = da.asarray(target).rechunk(tuple(logits.chunks[i] for i in batch_ind))
    tgt = target
    if ignore_index is not None:
        tgt = da.where(target == ignore_index, -1, target)  # no class holds -1
    st = state(logits, axis, plan, target=tgt, sum_x=label_smoothing > 0, threads=threads)
    parts = (True, label_smoothing > 0, False)
    tb = target
    extra: list[Any] = [] if weight is None else [da.asarray(weight), (nd + 1,)]
    pieces = da.blockwise(
        _finish_ce,
        (*batch_ind, nd),
        st,
        tuple(range(nd)),
        tb,
        batch_ind,
        *extra,
        new_axes={nd: 2},
        dtype=np.float64,
        meta=np.empty((0,) * nd, np.float64),
        concatenate=True,
        axis=axis,
        parts=parts,
        n_classes=int(logits.shape[axis]),
        ignore_index=ignore_index,
        eps=label_smoothing,
        z=z_loss,
    )
    out = np.dtype(dtype_name(plan.out))
    loss = pieces[..., 0]
    if reduction == "none":
        return loss.astype(out)
    import array_api_compat.dask.array as xda

    from ._agnostic._losses import sum_and_mean

    # the sum and mean the other engines give: a mean finite wherever it is, even where
    # the sum of the losses overflows (that sum is then inf, without a warning)
    total, mean = sum_and_mean(xda, loss, pieces[..., 1].sum())
    return (total if reduction == "sum" else mean).astype(out)
