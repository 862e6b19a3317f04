"""The core API's JAX engine: validated calls on JAX arrays, run by the XLA FFI ops.

:mod:`softmaxkit._jax_dispatch` hands this module the calls of the public
functions (``sk.softmax(jax_array)`` ...) after they have validated their
arguments into a plan. Here the reduced axes are moved last, integer inputs
promoted, optional arrays broadcast, and the call compiled once per static
configuration with ``jax.jit`` (inside a user's ``jit`` it traces inline).
Every function returns ``None`` when the call is not one the native kernels
cover (float16/bfloat16, probability targets, label smoothing, a concrete
array on a non-CPU device); the caller then runs the array-agnostic path.

It must never validate user input again or hold results between calls.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from .._namespace import Plan, dtype_name
from . import _ffi

__all__ = [
    "available",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "logsumexp",
    "normalize",
    "sigmoid",
    "vjp",
]

Array = Any

_MODES = {"plain": 0, "wide": 1, "dd": 1}


def available() -> bool:
    """Whether the XLA FFI handlers were built into this installation."""
    return _ffi.available()


def _on_cpu(*arrays: Array) -> bool:
    """False for a concrete array on another platform; traced arrays decide at lowering."""
    for a in arrays:
        if a is None or isinstance(a, jax.core.Tracer):
            continue
        try:
            devices = a.devices()
        except AttributeError:
            continue
        if any(d.platform != "cpu" for d in devices):
            return False
    return True


def _cfg(plan: Plan, threads: int) -> _ffi.Cfg | None:
    if dtype_name(plan.out) not in ("float32", "float64"):
        return None
    return _ffi.Cfg(_MODES[plan.mode], int(threads), plan)


def _float(a: Array, like: Array) -> Array:
    """``a`` as a float32/float64 array (other dtypes take ``like``'s dtype)."""
    if dtype_name(a.dtype) in ("float32", "float64"):
        return a
    return a.astype(like.dtype)


def _perm(ndim: int, axes: tuple[int, ...]) -> list[int]:
    return [i for i in range(ndim) if i not in axes] + list(axes)


def _to_last(a: Array, perm: list[int], nred: int) -> Array:
    a = jnp.transpose(a, perm) if perm != sorted(perm) else a
    lead = a.shape[: a.ndim - nred]
    return a.reshape((*lead, math.prod(a.shape[a.ndim - nred :])))


def _from_last(r: Array, shape: tuple[int, ...], perm: list[int]) -> Array:
    res = r.reshape(tuple(shape[i] for i in perm))
    if perm != sorted(perm):
        inv = [0] * len(perm)
        for i, p in enumerate(perm):
            inv[p] = i
        res = jnp.transpose(res, inv)
    return res


# ---- softmax / log_softmax ---------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _normalize_fn(
    axes: tuple[int, ...], temperature: float, cfg: _ffi.Cfg, log: bool, has_mask: bool
) -> Any:
    def run(x: Array, mask: Array) -> Array:
        x = x.astype(cfg.plan.out)
        shape = tuple(x.shape)
        perm = _perm(x.ndim, axes)
        x2 = _to_last(x, perm, len(axes))
        m2 = _to_last(jnp.broadcast_to(mask, shape), perm, len(axes)) if has_mask else None
        y = _ffi.normalize_last(x2, m2, cfg, log=log, temperature=temperature)
        return _from_last(y, shape, perm)

    return jax.jit(run)


def normalize(
    x: Array,
    axes: tuple[int, ...],
    where: Array | None,
    temperature: float,
    plan: Plan,
    threads: int,
    log: bool,
) -> Array | None:
    cfg = _cfg(plan, threads)
    if cfg is None or not _on_cpu(x, where) or any(x.shape[a] == 0 for a in axes):
        return None
    if x.size == 0:
        return None
    fn = _normalize_fn(tuple(axes), float(temperature), cfg, bool(log), where is not None)
    return fn(x, where)


# ---- logsumexp ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _logsumexp_fn(
    axes: tuple[int, ...],
    keepdims: bool,
    return_sign: bool,
    cfg: _ffi.Cfg,
    has_b: bool,
    has_mask: bool,
) -> Any:
    def run(x: Array, b: Array, mask: Array) -> Any:
        x = x.astype(cfg.plan.out)
        shape = tuple(x.shape)
        perm = _perm(x.ndim, axes)
        x2 = _to_last(x, perm, len(axes))
        m2 = _to_last(jnp.broadcast_to(mask, shape), perm, len(axes)) if has_mask else None
        kept = tuple(1 if i in axes else s for i, s in enumerate(shape))
        red = tuple(s for i, s in enumerate(shape) if i not in axes)
        out_shape = kept if keepdims else red
        if not has_b:
            lse = _ffi.logsumexp_last(x2, m2, cfg).reshape(out_shape)
            if not return_sign:
                return lse
            sign = jnp.where(lse == -jnp.inf, 0.0, 1.0).astype(lse.dtype)
            return lse, jnp.where(jnp.isnan(lse), jnp.nan, sign).astype(lse.dtype)
        b2 = _to_last(jnp.broadcast_to(_float(b, x), shape), perm, len(axes))
        lse, sign = _ffi.logsumexp_b_last(x2, b2, m2, cfg)
        lse, sign = lse.reshape(out_shape), sign.reshape(out_shape)
        if return_sign:
            return lse, sign
        return jnp.where(sign < 0, jnp.nan, lse).astype(lse.dtype)

    return jax.jit(run)


def logsumexp(
    x: Array,
    axes: tuple[int, ...],
    b: Array | None,
    where: Array | None,
    keepdims: bool,
    return_sign: bool,
    plan: Plan,
    threads: int,
) -> Any:
    cfg = _cfg(plan, threads)
    if cfg is None or not _on_cpu(x, b, where) or x.size == 0 or not axes:
        return None
    fn = _logsumexp_fn(
        tuple(axes), bool(keepdims), bool(return_sign), cfg, b is not None, where is not None
    )
    return fn(x, b, where)


# ---- cross-entropy with class indices -------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _ce_fn(
    axis: int,
    cfg: _ffi.Cfg,
    ignore_index: int | None,
    z_loss: float,
    reduction: str,
    return_grad: bool,
    has_w: bool,
    has_mask: bool,
) -> Any:
    def run(x: Array, t: Array, w: Array, mask: Array) -> Any:
        x = x.astype(cfg.plan.out)
        shape = tuple(x.shape)
        perm = _perm(x.ndim, (axis,))
        x2 = _to_last(x, perm, 1)
        m2 = _to_last(jnp.broadcast_to(mask, shape), perm, 1) if has_mask else None
        if dtype_name(t.dtype) not in ("int32", "int64"):
            t = t.astype(jnp.int32)
        w2 = _float(w, x) if has_w else None
        res = _ffi.ce_index(
            x2,
            t,
            w2,
            m2,
            cfg,
            ignore_index=ignore_index,
            z_loss=z_loss,
            reduction=reduction,
            want_grad=return_grad,
        )
        if not return_grad:
            return res
        loss, g = res
        return loss, _from_last(g, shape, perm)

    return jax.jit(run)


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
    threads: int,
) -> Any:
    if not target_is_index:
        return _prob_cross_entropy(
            logits, target, axis, weight, label_smoothing, z_loss, reduction, where,
            return_grad, plan, threads,
        )  # fmt: skip
    if label_smoothing != 0.0:
        return None
    kind = dtype_name(target.dtype)
    if not (kind.startswith(("int", "uint")) or kind == "bool"):
        return None
    cfg = _cfg(plan, threads)
    if cfg is None or not _on_cpu(logits, target, weight, where) or logits.size == 0:
        return None
    fn = _ce_fn(
        int(axis),
        cfg,
        None if ignore_index is None else int(ignore_index),
        float(z_loss),
        str(reduction),
        bool(return_grad),
        weight is not None,
        where is not None,
    )
    return fn(logits, target, weight, where)


@functools.lru_cache(maxsize=128)
def _prob_fn(
    axis: int, cfg: _ffi.Cfg, eps: float, z_loss: float, reduction: str, return_grad: bool
) -> Any:
    def run(x: Array, q: Array) -> Any:
        x = jnp.moveaxis(x, axis, -1)
        q = jnp.moveaxis(q, axis, -1)
        res = _ffi.ce_prob(x, q, cfg, label_smoothing=eps, z_loss=z_loss, reduction=reduction,
                           want_grad=return_grad)  # fmt: skip
        if not return_grad:
            return res
        return res[0], jnp.moveaxis(res[1], -1, axis)

    return jax.jit(run)


def _prob_cross_entropy(
    logits: Array,
    target: Array,
    axis: int,
    weight: Array | None,
    eps: float,
    z_loss: float,
    reduction: str,
    where: Array | None,
    return_grad: bool,
    plan: Plan,
    threads: int,
) -> Any:
    """Probability targets of float32 logits on CPU, without class weights or mask: one
    custom call (:func:`._ffi.ce_prob`), the NumPy path's bits; None otherwise."""
    if weight is not None or where is not None or logits.size == 0:
        return None
    if dtype_name(plan.out) != "float32" or dtype_name(logits.dtype) != "float32":
        return None
    if dtype_name(target.dtype) not in ("float32", "float64"):
        return None
    if tuple(target.shape) != tuple(logits.shape):
        return None
    cfg = _cfg(plan, threads)
    if cfg is None or not _on_cpu(logits, target):
        return None
    fn = _prob_fn(int(axis) % logits.ndim, cfg, float(eps), float(z_loss), str(reduction),
                  bool(return_grad))  # fmt: skip
    return fn(logits, target)


# ---- sigmoid family and VJPs ------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _sigmoid_fn(cfg: _ffi.Cfg, log: bool) -> Any:
    def run(x: Array) -> Array:
        return _ffi.sigmoid_op(x.astype(cfg.plan.out), cfg, log=log)

    return jax.jit(run)


def sigmoid(x: Array, plan: Plan, *, log: bool, threads: int) -> Array | None:
    cfg = _cfg(plan, threads)
    if cfg is None or not _on_cpu(x) or x.size == 0:
        return None
    return _sigmoid_fn(cfg, bool(log))(x)


@functools.lru_cache(maxsize=128)
def _bce_fn(cfg: _ffi.Cfg, reduction: str, return_grad: bool, has_w: bool, has_pw: bool) -> Any:
    def run(x: Array, y: Array, w: Array | None, pw: Array | None) -> Any:
        x = x.astype(cfg.plan.out)
        shape = tuple(x.shape)
        y2 = jnp.broadcast_to(_float(y, x), shape)
        w2 = jnp.broadcast_to(_float(w, x), shape) if has_w else None
        p2 = jnp.broadcast_to(_float(pw, x), shape) if has_pw else None
        return _ffi.bce(x, y2, w2, p2, cfg, reduction=reduction, want_grad=return_grad)

    return jax.jit(run)


def binary_cross_entropy_with_logits(
    logits: Array,
    target: Array,
    weight: Array | None,
    pos_weight: Array | None,
    reduction: str,
    return_grad: bool,
    plan: Plan,
    threads: int,
) -> Any:
    cfg = _cfg(plan, threads)
    if cfg is None or not _on_cpu(logits, target, weight, pos_weight) or logits.size == 0:
        return None
    fn = _bce_fn(cfg, str(reduction), bool(return_grad), weight is not None, pos_weight is not None)
    return fn(logits, target, weight, pos_weight)


@functools.lru_cache(maxsize=128)
def _vjp_fn(axes: tuple[int, ...], cfg: _ffi.Cfg, log: bool) -> Any:
    def run(y: Array, g: Array) -> Array:
        y = y.astype(cfg.plan.out)
        shape = tuple(y.shape)
        perm = _perm(y.ndim, axes)
        y2 = _to_last(y, perm, len(axes))
        g2 = _to_last(jnp.broadcast_to(g.astype(y.dtype), shape), perm, len(axes))
        return _from_last(_ffi.vjp_op(y2, g2, cfg, log=log), shape, perm)

    return jax.jit(run)


def vjp(
    y: Array, g: Array, axes: tuple[int, ...], plan: Plan, *, log: bool, threads: int
) -> Array | None:
    cfg = _cfg(plan, threads)
    if cfg is None or not _on_cpu(y, g) or y.size == 0 or not axes:
        return None
    if dtype_name(g.dtype) != dtype_name(y.dtype):
        return None
    return _vjp_fn(tuple(axes), cfg, bool(log))(y, g)
