"""The C core inside JAX programs: XLA FFI custom calls with their derivatives.

Each op here works on arrays whose reduced axis is last (the callers move it)
and takes its options as a hashable :class:`Cfg`. On CPU it is one custom
call into the C core (``_csrc/xla_ffi.c``); on every other platform
:func:`jax.lax.platform_dependent` picks the array-agnostic implementation
with the same options, so one traced program serves both. Results on CPU are
bitwise those of the NumPy path (the same engines, the same order of sums).

Derivatives (``jit``, ``vmap``, ``grad``, ``jvp``, ``hessian``):

- softmax / log_softmax are ``custom_jvp`` functions whose tangent map is the
  primitive ``softmaxkit_tangent``: linear in the tangent, transposed by the
  native vector-Jacobian-product kernel, batched as more rows, and
  differentiable again in the saved output.
- cross-entropy and binary cross-entropy get loss and gradient from one kernel
  pass; the gradient is itself a ``custom_jvp`` whose derivative (needed for
  Hessians only) comes from the array-agnostic implementation.
- per-row cross-entropy (``reduction="none"``, no weights or mask: optax's
  integer-label loss) has the linear primitive ``softmaxkit_ce_tangent`` as
  its tangent, whose transpose is one kernel pass with the cotangent folded
  into each row's factor: ``jax.grad`` of any reduction of the losses writes
  the gradient once instead of scaling the kernel's gradient in a second pass.
- Tangents of targets, weights or ``b`` fall back to differentiating the
  array-agnostic implementation, so no derivative is ever silently dropped.

This module must never validate user input (the front ends did) or run
without the compiled handlers (:func:`available` says whether they exist).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from .._agnostic import _losses, _normalize
from .._agnostic import _sigmoid as _asigmoid
from .._agnostic import _vjp as _avjp
from .._namespace import Plan, call

try:
    from .. import _ckernels

    _HANDLERS: dict[str, Any] | None = _ckernels.xla_handlers()
except (ImportError, AttributeError):  # built without jaxlib's FFI headers
    _HANDLERS = None

__all__ = [
    "Cfg",
    "available",
    "bce",
    "ce_index",
    "ce_prob",
    "logsumexp_b_last",
    "logsumexp_last",
    "normalize_last",
    "sigmoid_op",
    "vjp_op",
]

Array = Any


class Cfg(NamedTuple):
    """Static options of one call: precision mode code, threads and the plan."""

    mode: int  # 0 fast, 1 accurate (the C core's SKIT_FAST / SKIT_ACCURATE)
    threads: int
    plan: Plan


def available() -> bool:
    """Whether this build has the XLA FFI handlers (jaxlib was found at build time)."""
    return _HANDLERS is not None


@functools.lru_cache(maxsize=1)
def _register() -> None:
    assert _HANDLERS is not None
    for name, capsule in _HANDLERS.items():
        jax.ffi.register_ffi_target(name, capsule, platform="cpu")


def _i(v: int | bool) -> np.int64:
    return np.int64(int(v))


def _native(
    name: str,
    out: Any,
    args: tuple[Array | None, ...],
    attrs: dict[str, Any],
    fallback: Callable[..., Any],
) -> Any:
    """One custom call on CPU, ``fallback(*args)`` on other platforms.

    Without the handlers (a build that did not find jaxlib) it is the fallback
    everywhere, so the derivatives defined below serve both.
    """
    if _HANDLERS is None:
        return fallback(*args)
    _register()

    def cpu(*a: Array) -> Any:
        call = jax.ffi.ffi_call(name, out, vmap_method="broadcast_all")
        res = call(*[x for x in a if x is not None], **attrs)
        return tuple(res) if isinstance(res, (list, tuple)) else res

    if cpu_only():
        # the fallback could never be lowered: do not trace it (it is hundreds of ops)
        return cpu(*args)
    return jax.lax.platform_dependent(*args, cpu=cpu, default=fallback)


@functools.lru_cache(maxsize=1)
def _cpu_only() -> bool:
    return all(d.platform == "cpu" for d in jax.devices())


def cpu_only() -> bool:
    """Whether CPU is the only platform this process's JAX can compile for."""
    return _cpu_only()


def _sds(shape: tuple[int, ...], dtype: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dtype)


def _zero(t: object) -> bool:
    return t is None or isinstance(t, jax.custom_derivatives.SymbolicZero)


# ---- kernels (one custom call each) ------------------------------------------------


def _k_normalize(x: Array, mask: Array | None, cfg: Cfg, log: bool, temperature: float) -> Array:
    attrs = {
        "log": _i(log),
        "mode": _i(cfg.mode),
        "threads": _i(cfg.threads),
        "has_mask": _i(mask is not None),
        "temperature": np.float64(temperature),
    }

    def other(x: Array, mask: Array | None) -> Array:
        fn = _normalize.log_softmax if log else _normalize.softmax
        return fn(x, axes=(x.ndim - 1,), where=mask, temperature=temperature, plan=cfg.plan)

    return _native("softmaxkit_softmax", _sds(x.shape, x.dtype), (x, mask), attrs, other)


def _k_vjp(y: Array, g: Array, cfg: Cfg, log: bool) -> Array:
    attrs = {"islog": _i(log), "mode": _i(cfg.mode), "threads": _i(cfg.threads)}

    def other(y: Array, g: Array) -> Array:
        fn = _avjp.log_softmax_vjp if log else _avjp.softmax_vjp
        return fn(y, g, axes=(y.ndim - 1,), plan=cfg.plan)

    return _native("softmaxkit_vjp", _sds(y.shape, y.dtype), (y, g), attrs, other)


def _k_logsumexp(
    x: Array, b: Array | None, mask: Array | None, cfg: Cfg
) -> Array | tuple[Array, Array]:
    attrs = {
        "mode": _i(cfg.mode),
        "threads": _i(cfg.threads),
        "has_b": _i(b is not None),
        "has_mask": _i(mask is not None),
    }
    r = _sds(x.shape[:-1], x.dtype)
    out = r if b is None else (r, r)

    def other(x: Array, b: Array | None, mask: Array | None) -> Any:
        return _normalize.logsumexp(
            x,
            axes=(x.ndim - 1,),
            b=b,
            where=mask,
            keepdims=False,
            return_sign=b is not None,
            plan=cfg.plan,
        )

    return _native("softmaxkit_logsumexp", out, (x, b, mask), attrs, other)


_REDUCTIONS = {"none": 0, "sum": 1, "mean": 2}


class CeCfg(NamedTuple):
    """Static options of a class-index cross-entropy."""

    base: Cfg
    ignore_index: int | None
    z_loss: float
    reduction: str
    wrap_labels: bool = False  # optax's indexing: negatives from the end, others NaN


def _wrapped(t: Array, n: int, cc: CeCfg) -> tuple[Array, Array]:
    """Targets as the kernel reads them with ``wrap_labels``, and the rows out of range."""
    if not cc.wrap_labels:
        return t, jnp.zeros(t.shape, bool)
    keep = t == cc.ignore_index if cc.ignore_index is not None else jnp.zeros(t.shape, bool)
    lab = jnp.where((t < 0) & ~keep, t + n, t)
    bad = ((lab < 0) | (lab >= n)) & ~keep
    return jnp.where(bad, 0, lab), bad


def _ce_agnostic(
    x: Array, t: Array, w: Array | None, mask: Array | None, cc: CeCfg, want_grad: bool
) -> Any:
    t, bad = _wrapped(t, x.shape[-1], cc)
    res = _ce_agnostic_plain(x, t, w, mask, cc, want_grad)
    if not cc.wrap_labels:
        return res
    assert cc.reduction == "none"
    loss = res[0] if want_grad else res
    loss = jnp.where(bad, jnp.nan, loss).astype(loss.dtype)
    if not want_grad:
        return loss
    return loss, jnp.where(bad[..., None], jnp.zeros_like(res[1]), res[1])


def _ce_agnostic_plain(
    x: Array, t: Array, w: Array | None, mask: Array | None, cc: CeCfg, want_grad: bool
) -> Any:
    return _losses.cross_entropy(
        x,
        t,
        axis=x.ndim - 1,
        target_is_index=True,
        weight=w,
        ignore_index=cc.ignore_index,
        label_smoothing=0.0,
        z_loss=cc.z_loss,
        reduction=cc.reduction,
        where=mask,
        return_grad=want_grad,
        plan=cc.base.plan,
    )


def _k_ce(
    x: Array,
    t: Array,
    w: Array | None,
    mask: Array | None,
    cc: CeCfg,
    want_grad: bool,
    ct: Array | None = None,
) -> Any:
    """The cross-entropy kernel: the loss, with ``want_grad`` also its gradient.

    ``ct`` (``reduction="none"`` only, the target's shape) is a cotangent per row
    folded into the gradient's factor; the loss is then meaningless.
    """
    attrs = {
        "mode": _i(cc.base.mode),
        "threads": _i(cc.base.threads),
        "has_ignore": _i(cc.ignore_index is not None),
        "ignore_index": _i(0 if cc.ignore_index is None else cc.ignore_index),
        "z_loss": np.float64(cc.z_loss),
        "reduction": _i(_REDUCTIONS[cc.reduction]),
        "want_grad": _i(want_grad),
        "has_weight": _i(w is not None),
        "has_mask": _i(mask is not None),
        "has_ct": _i(ct is not None),
        "tdims": _i(t.ndim),
        "wrap_labels": _i(cc.wrap_labels),
    }
    loss = _sds(t.shape if cc.reduction == "none" else (), x.dtype)
    out = (loss, _sds(x.shape, x.dtype)) if want_grad else loss

    def other(x: Array, t: Array, w: Array | None, mask: Array | None, ct: Array | None) -> Any:
        res = _ce_agnostic(x, t, w, mask, cc, want_grad)
        if ct is None:
            return res
        return res[0] * ct, res[1] * ct[..., None]

    return _native("softmaxkit_cross_entropy", out, (x, t, w, mask, ct), attrs, other)


class BceCfg(NamedTuple):
    """Static options of a binary cross-entropy with logits."""

    base: Cfg
    reduction: str


def _bce_agnostic(
    x: Array, y: Array, w: Array | None, pw: Array | None, bc: BceCfg, want_grad: bool
) -> Any:
    return _asigmoid.binary_cross_entropy_with_logits(
        x,
        y,
        weight=w,
        pos_weight=pw,
        reduction=bc.reduction,
        return_grad=want_grad,
        plan=bc.base.plan,
    )


def _k_bce(
    x: Array, y: Array, w: Array | None, pw: Array | None, bc: BceCfg, want_grad: bool
) -> Any:
    attrs = {
        "kind": _i(2),
        "mode": _i(bc.base.mode),
        "threads": _i(bc.base.threads),
        "has_w": _i(w is not None),
        "has_pw": _i(pw is not None),
        "reduction": _i(_REDUCTIONS[bc.reduction]),
        "want_grad": _i(want_grad),
        "xdims": _i(x.ndim),
    }
    loss = _sds(x.shape if bc.reduction == "none" else (), x.dtype)
    out = (loss, _sds(x.shape, x.dtype)) if want_grad else loss

    def other(x: Array, y: Array, w: Array | None, pw: Array | None) -> Any:
        return _bce_agnostic(x, y, w, pw, bc, want_grad)

    return _native("softmaxkit_sigmoid", out, (x, y, w, pw), attrs, other)


def _k_sigmoid(x: Array, cfg: Cfg, log: bool) -> Array:
    attrs = {"kind": _i(log), "mode": _i(cfg.mode), "threads": _i(cfg.threads)}

    def other(x: Array) -> Array:
        fn = _asigmoid.log_sigmoid if log else _asigmoid.sigmoid
        return fn(x, plan=cfg.plan)

    return _native("softmaxkit_sigmoid", _sds(x.shape, x.dtype), (x,), attrs, other)


# ---- the tangent map of softmax / log_softmax: a linear primitive ----------------
# op 0: softmax, y (t - sum(y t)), its own transpose;
# op 1: log_softmax forward, t - sum(exp(y) t), transposed by op 2;
# op 2: log_softmax backward, t - exp(y) sum(t) (the native VJP), transposed by op 1.

_TRANSPOSE = {0: 0, 1: 2, 2: 1}

tangent_p = Primitive("softmaxkit_tangent")


def _tangent_impl(y: Array, t: Array, *, op: int, cfg: Cfg) -> Array:
    if op == 1:
        return t - jnp.sum(jnp.exp(y) * t, axis=-1, keepdims=True)
    return _k_vjp(y, t, cfg, log=op == 2)


def _tangent_abstract(y: Any, t: Any, *, op: int, cfg: Cfg) -> Any:
    return jax.core.ShapedArray(t.shape, t.dtype)


def _tangent_batch(args: Any, dims: Any, *, op: int, cfg: Cfg) -> tuple[Array, int]:
    size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not None)
    moved = []
    for a, d in zip(args, dims, strict=True):
        if d is None:
            moved.append(jnp.broadcast_to(a, (size, *a.shape)))
        else:
            moved.append(jnp.moveaxis(a, d, 0))
    y, t = moved
    y, t = jnp.broadcast_arrays(y, t)
    return tangent_p.bind(y, t, op=op, cfg=cfg), 0


def _sum_tangents(out: Any, parts: list[Any]) -> Any:
    """The sum of the nonzero tangent contributions (zeros shaped like ``out`` if none)."""
    if not parts:
        return jnp.zeros_like(out)
    tan = parts[0]
    for p in parts[1:]:
        tan = tan + p
    return tan


def _tangent_jvp(primals: Any, tangents: Any, *, op: int, cfg: Cfg) -> tuple[Array, Array]:
    y, t = primals
    dy, dt = tangents
    out = tangent_p.bind(y, t, op=op, cfg=cfg)
    parts = []
    if type(dt) is not ad.Zero:
        parts.append(tangent_p.bind(y, dt, op=op, cfg=cfg))
    if type(dy) is not ad.Zero:
        if op == 0:
            s = jnp.sum(y * t, axis=-1, keepdims=True)
            parts.append(dy * (t - s) - y * jnp.sum(dy * t, axis=-1, keepdims=True))
        elif op == 1:
            d = jnp.sum(jnp.exp(y) * dy * t, axis=-1, keepdims=True)
            parts.append(jnp.broadcast_to(-d, t.shape))
        else:
            parts.append(-jnp.exp(y) * dy * jnp.sum(t, axis=-1, keepdims=True))
    return out, _sum_tangents(out, parts)


def _tangent_transpose(ct: Any, y: Any, t: Any, *, op: int, cfg: Cfg) -> list[Any]:
    if ad.is_undefined_primal(y):  # pragma: no cover - y is never a linear input
        raise NotImplementedError("softmaxkit_tangent is not linear in the saved output")
    if type(ct) is ad.Zero:
        return [None, ad.Zero(t.aval)]
    return [None, tangent_p.bind(y, ct, op=_TRANSPOSE[op], cfg=cfg)]


tangent_p.def_impl(_tangent_impl)
tangent_p.def_abstract_eval(_tangent_abstract)
mlir.register_lowering(tangent_p, mlir.lower_fun(_tangent_impl, multiple_results=False))
batching.primitive_batchers[tangent_p] = _tangent_batch
ad.primitive_jvps[tangent_p] = _tangent_jvp
ad.primitive_transposes[tangent_p] = _tangent_transpose


# ---- softmax / log_softmax ------------------------------------------------------------


class NormCfg(NamedTuple):
    base: Cfg
    log: bool
    temperature: float


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _normalize_op(x: Array, mask: Array | None, nc: NormCfg) -> Array:
    return _k_normalize(x, mask, nc.base, nc.log, nc.temperature)


@_normalize_op.defjvp
def _normalize_jvp(nc: NormCfg, primals: Any, tangents: Any) -> tuple[Array, Array]:
    x, mask = primals
    tx = tangents[0]
    y = _normalize_op(x, mask, nc)
    t = tx if nc.temperature == 1.0 else tx / jnp.asarray(nc.temperature, tx.dtype)
    if not nc.log:
        return y, tangent_p.bind(y, t, op=0, cfg=nc.base)
    if mask is not None:
        t = jnp.where(mask, t, jnp.zeros_like(t))
    ty = tangent_p.bind(y, t, op=1, cfg=nc.base)
    if mask is not None:
        ty = jnp.where(mask, ty, jnp.zeros_like(ty))
    return y, ty


def normalize_last(
    x: Array, mask: Array | None, cfg: Cfg, *, log: bool, temperature: float
) -> Array:
    """softmax (``log=False``) or log_softmax of ``x`` over its last axis."""
    return _normalize_op(x, mask, NormCfg(cfg, bool(log), float(temperature)))


def vjp_op(y: Array, g: Array, cfg: Cfg, *, log: bool) -> Array:
    """The softmax (``log=False``) or log_softmax vector-Jacobian product over the last axis."""
    return tangent_p.bind(y, g, op=2 if log else 0, cfg=cfg)


# ---- logsumexp ------------------------------------------------------------------------


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _lse_op(x: Array, mask: Array | None, cfg: Cfg) -> Array:
    return _k_logsumexp(x, None, mask, cfg)


@_lse_op.defjvp
def _lse_jvp(cfg: Cfg, primals: Any, tangents: Any) -> tuple[Array, Array]:
    x, mask = primals
    tx = tangents[0]
    p = normalize_last(x, mask, cfg, log=False, temperature=1.0)
    return _lse_op(x, mask, cfg), jnp.sum(p * tx, axis=-1)


def logsumexp_last(x: Array, mask: Array | None, cfg: Cfg) -> Array:
    """``log(sum(exp(x)))`` over the last axis."""
    return _lse_op(x, mask, cfg)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _lse_b_op(x: Array, b: Array, mask: Array | None, cfg: Cfg) -> tuple[Array, Array]:
    return _k_logsumexp(x, b, mask, cfg)  # type: ignore[return-value]


@_lse_b_op.defjvp
def _lse_b_jvp(cfg: Cfg, primals: Any, tangents: Any) -> tuple[Any, Any]:
    x, b, mask = primals
    tx, tb = tangents[0], tangents[1]
    lse, sign = _lse_b_op(x, b, mask, cfg)
    keep = b != 0
    if mask is not None:
        keep = keep & mask
    e = jnp.where(keep, jnp.exp(x - lse[..., None]), jnp.zeros_like(x)) * sign[..., None]
    tan = jnp.sum(jnp.where(keep, e * (b * tx + tb), jnp.zeros_like(x)), axis=-1)
    return (lse, sign), (tan, jnp.zeros_like(sign))


def logsumexp_b_last(x: Array, b: Array, mask: Array | None, cfg: Cfg) -> tuple[Array, Array]:
    """``log|sum(b exp(x))|`` and its sign over the last axis."""
    return _lse_b_op(x, b, mask, cfg)  # type: ignore[no-any-return]


# ---- cross-entropy with class indices --------------------------------------------------


def _ce_reduce_tangent(g: Array, tx: Array, reduction: str) -> Array:
    if reduction == "none":
        return jnp.sum(g * tx, axis=-1)
    return jnp.sum(g * tx)


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def _ce_grad_op(
    x: Array, t: Array, w: Array | None, mask: Array | None, cc: CeCfg
) -> tuple[Array, Array]:
    return _k_ce(x, t, w, mask, cc, want_grad=True)  # type: ignore[no-any-return]


@_ce_grad_op.defjvp
def _ce_grad_jvp(cc: CeCfg, primals: Any, tangents: Any) -> tuple[Any, Any]:
    x, t, w, mask = primals
    tx = tangents[0]
    loss, g = _ce_grad_op(x, t, w, mask, cc)
    # the gradient's own derivative (Hessians only): differentiate the gradient's formula
    # in the kernels' softmax and logsumexp; with a mask, the array-agnostic implementation
    if mask is None:
        _, tg = jax.jvp(lambda xx: _ce_grad_formula(xx, t, w, cc), (x,), (tx,))
    else:
        _, tg = jax.jvp(lambda xx: _ce_agnostic(xx, t, w, mask, cc, True)[1], (x,), (tx,))
    return (loss, g), (_ce_reduce_tangent(g, tx, cc.reduction), tg)


def _ce_grad_formula(x: Array, t: Array, w: Array | None, cc: CeCfg) -> Array:
    """``s w_t [(p - onehot(t)) + 2 z lse p]``, differentiable (no mask)."""
    n = x.shape[-1]
    t, bad = _wrapped(t, n, cc)
    ignored = jnp.zeros(t.shape, bool) if cc.ignore_index is None else t == cc.ignore_index
    ignored = ignored | bad
    safe = jnp.where(ignored, 0, t)
    wt = jnp.ones(t.shape, x.dtype) if w is None else jnp.asarray(w, x.dtype)[..., safe]
    if w is not None and jnp.ndim(w) > 1:  # vmap-broadcast weights: one row per group
        wt = jnp.take_along_axis(jnp.asarray(w, x.dtype), safe, axis=-1)
    wt = jnp.where(ignored, jnp.zeros_like(wt), wt)
    if cc.reduction == "mean":
        axes = tuple(range(wt.ndim - t.ndim, wt.ndim)) if wt.ndim else ()
        den = jnp.sum(wt, axis=axes, keepdims=True)
        wt = jnp.where(den > 0, wt / jnp.where(den > 0, den, 1), jnp.zeros_like(wt))
    p = normalize_last(x, None, cc.base, log=False, temperature=1.0)
    core = p - jax.nn.one_hot(safe, n, dtype=x.dtype)
    if cc.z_loss:
        lse = logsumexp_last(x, None, cc.base)
        core = core + 2.0 * cc.z_loss * lse[..., None] * p
    return wt[..., None] * core


# ---- reverse mode of per-row losses: the cotangent folded into the kernel ---------------
# The tangent of per-row losses is sum(g tx) over the classes; transposed as written, it
# becomes g * ct, a second full pass over the gradient after the kernel's. The linear
# primitive below is that tangent; its transpose is one kernel call that writes
# w_t ct (p - onehot) directly (the cotangent joins the row's factor, rounded once).
# Used for reduction "none" without weights or mask (optax's integer-label loss).

ce_tangent_p = Primitive("softmaxkit_ce_tangent")


def _ce_tangent_impl(x: Array, t: Array, tx: Array, *, cc: CeCfg) -> Array:
    _, g = _ce_grad_op(x, t, None, None, cc)
    return jnp.sum(g * tx, axis=-1)


def _ce_tangent_abstract(x: Any, t: Any, tx: Any, *, cc: CeCfg) -> Any:
    return jax.core.ShapedArray(t.shape, x.dtype)


def _ce_tangent_transpose(ct: Any, x: Any, t: Any, tx: Any, *, cc: CeCfg) -> list[Any]:
    if ad.is_undefined_primal(x) or ad.is_undefined_primal(t):  # pragma: no cover
        raise NotImplementedError("softmaxkit_ce_tangent is linear in the tangent only")
    if type(ct) is ad.Zero:
        return [None, None, ad.Zero(tx.aval)]
    return [None, None, _ce_bwd_op(x, t, ct, cc)]


def _ce_tangent_batch(args: Any, dims: Any, *, cc: CeCfg) -> tuple[Array, int]:
    size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not None)
    moved = [
        jnp.broadcast_to(a, (size, *a.shape)) if d is None else jnp.moveaxis(a, d, 0)
        for a, d in zip(args, dims, strict=True)
    ]
    return ce_tangent_p.bind(*moved, cc=cc), 0


def _ce_tangent_jvp(primals: Any, tangents: Any, *, cc: CeCfg) -> tuple[Array, Array]:
    x, t, tx = primals
    dx, _, dtx = tangents
    out = ce_tangent_p.bind(x, t, tx, cc=cc)
    parts = []
    if type(dtx) is not ad.Zero:
        parts.append(ce_tangent_p.bind(x, t, dtx, cc=cc))
    if type(dx) is not ad.Zero:
        _, tg = jax.jvp(lambda xx: _ce_grad_formula(xx, t, None, cc), (x,), (dx,))
        parts.append(jnp.sum(tg * tx, axis=-1))
    return out, _sum_tangents(out, parts)


ce_tangent_p.def_impl(_ce_tangent_impl)
ce_tangent_p.def_abstract_eval(_ce_tangent_abstract)
mlir.register_lowering(ce_tangent_p, mlir.lower_fun(_ce_tangent_impl, multiple_results=False))
batching.primitive_batchers[ce_tangent_p] = _ce_tangent_batch
ad.primitive_jvps[ce_tangent_p] = _ce_tangent_jvp
ad.primitive_transposes[ce_tangent_p] = _ce_tangent_transpose


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _ce_bwd_op(x: Array, t: Array, ct: Array, cc: CeCfg) -> Array:
    """``ct[..., None] * grad``: the gradient of ``sum(ct * loss)`` in one kernel pass."""
    return _k_ce(x, t, None, None, cc, want_grad=True, ct=ct)[1]


@_ce_bwd_op.defjvp
def _ce_bwd_jvp(cc: CeCfg, primals: Any, tangents: Any) -> tuple[Array, Array]:
    x, t, ct = primals
    tx, _, tct = tangents
    out = _ce_bwd_op(x, t, ct, cc)
    _, g = _ce_grad_op(x, t, None, None, cc)
    _, tg = jax.jvp(lambda xx: _ce_grad_formula(xx, t, None, cc), (x,), (tx,))
    return out, g * tct[..., None] + tg * ct[..., None]


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def _ce_op(x: Array, t: Array, w: Array | None, mask: Array | None, cc: CeCfg) -> Array:
    return _k_ce(x, t, w, mask, cc, want_grad=False)


def _ce_jvp(cc: CeCfg, primals: Any, tangents: Any) -> tuple[Array, Array]:
    x, t, w, mask = primals
    tx, _, tw, _ = tangents
    if not _zero(tw):  # weights are being differentiated: the agnostic path's derivative
        loss = _ce_op(x, t, w, mask, cc)
        txx = jnp.zeros_like(x) if _zero(tx) else tx
        _, tan = jax.jvp(lambda xx, ww: _ce_agnostic(xx, t, ww, mask, cc, False), (x, w), (txx, tw))
        return loss, tan
    if cc.reduction == "none" and w is None and mask is None and not _zero(tx):
        # reverse mode then runs one kernel pass with the cotangent folded in
        return _ce_op(x, t, w, mask, cc), ce_tangent_p.bind(x, t, tx, cc=cc)
    loss, g = _ce_grad_op(x, t, w, mask, cc)
    if _zero(tx):
        return loss, jnp.zeros_like(loss)
    return loss, _ce_reduce_tangent(g, tx, cc.reduction)


_ce_op.defjvp(_ce_jvp, symbolic_zeros=True)


def ce_index(
    x: Array,
    t: Array,
    w: Array | None,
    mask: Array | None,
    cfg: Cfg,
    *,
    ignore_index: int | None,
    z_loss: float,
    reduction: str,
    want_grad: bool,
    wrap_labels: bool = False,
) -> Any:
    """Cross-entropy of logits ``x`` (classes last) against class indices ``t``.

    ``wrap_labels`` (with ``reduction="none"``) indexes as optax does: a negative
    target counts from the end; one still out of range gives a NaN loss and a zero
    gradient row instead of an error.
    """
    cc = CeCfg(
        cfg,
        None if ignore_index is None else int(ignore_index),
        float(z_loss),
        reduction,
        bool(wrap_labels),
    )
    if want_grad:
        return _ce_grad_op(x, t, w, mask, cc)
    return _ce_op(x, t, w, mask, cc)


# ---- cross-entropy with probability targets --------------------------------------------
# One custom call: the row state, then skit_prob_ce (the loss from non-negative terms, the
# gradient in float64 with its cancelling elements formed again in double-word, both
# rounded once: the NumPy path's bits). Rows the core does not take (a logit that is not
# finite, target mass on a -inf logit, a negative or NaN target) raise a flag, and the
# array-agnostic implementation answers for the call.

_PROB_REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}


class ProbCfg(NamedTuple):
    """Static options of a cross-entropy with probability targets (float32 logits)."""

    base: Cfg
    label_smoothing: float
    z_loss: float
    reduction: str


def _prob_agnostic(x: Array, q: Array, pc: ProbCfg, want_grad: bool) -> Any:
    # through _namespace.call, as the front end runs it: under x32 a plan that works in
    # float64 traces with x64 enabled
    return call(
        jnp,
        _losses.cross_entropy,
        {"logits": x, "target": q, "weight": None, "where": None},
        {
            "axis": x.ndim - 1,
            "target_is_index": False,
            "ignore_index": None,
            "label_smoothing": pc.label_smoothing,
            "z_loss": pc.z_loss,
            "reduction": pc.reduction,
            "return_grad": want_grad,
            "plan": pc.base.plan,
        },
    )


def _k_prob(x: Array, q: Array, pc: ProbCfg, want_grad: bool) -> Any:
    attrs = {
        "mode": _i(pc.base.mode),
        "threads": _i(pc.base.threads),
        "eps": np.float64(pc.label_smoothing),
        "z_loss": np.float64(pc.z_loss),
        "reduction": _i(_PROB_REDUCTIONS[pc.reduction]),
        "want_grad": _i(want_grad),
        "xdims": _i(x.ndim),
    }
    loss = _sds(x.shape[:-1] if pc.reduction == "none" else (), x.dtype)
    flag = _sds((), np.int32)
    out = (loss, _sds(x.shape, x.dtype), flag) if want_grad else (loss, flag)

    def other(x: Array, q: Array) -> Any:
        res = _prob_agnostic(x, q, pc, want_grad)
        return (*res, jnp.int32(0)) if want_grad else (res, jnp.int32(0))

    *got, special = _native("softmaxkit_prob_cross_entropy", out, (x, q), attrs, other)
    res = tuple(got) if want_grad else got[0]
    return jax.lax.cond(special != 0, lambda: _prob_agnostic(x, q, pc, want_grad), lambda: res)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _prob_grad_op(x: Array, q: Array, pc: ProbCfg) -> tuple[Array, Array]:
    return _k_prob(x, q, pc, want_grad=True)  # type: ignore[no-any-return]


@_prob_grad_op.defjvp
def _prob_grad_jvp(pc: ProbCfg, primals: Any, tangents: Any) -> tuple[Any, Any]:
    x, q = primals
    tx, tq = tangents
    loss, g = _prob_grad_op(x, q, pc)
    # the gradient's own derivative (Hessians only): the array-agnostic implementation's
    _, (tl, tg) = jax.jvp(lambda xx, qq: _prob_agnostic(xx, qq, pc, True), (x, q), (tx, tq))
    return (loss, g), (tl, tg)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _prob_op(x: Array, q: Array, pc: ProbCfg) -> Array:
    return _k_prob(x, q, pc, want_grad=False)


def _prob_jvp(pc: ProbCfg, primals: Any, tangents: Any) -> tuple[Array, Array]:
    x, q = primals
    tx, tq = tangents
    if not _zero(tq):  # targets are being differentiated: the agnostic path's derivative
        loss = _prob_op(x, q, pc)
        txx = jnp.zeros_like(x) if _zero(tx) else tx
        _, tan = jax.jvp(lambda xx, qq: _prob_agnostic(xx, qq, pc, False), (x, q), (txx, tq))
        return loss, tan
    loss, g = _prob_grad_op(x, q, pc)
    if _zero(tx):
        return loss, jnp.zeros_like(loss)
    return loss, _ce_reduce_tangent(g, tx, pc.reduction)


_prob_op.defjvp(_prob_jvp, symbolic_zeros=True)


def ce_prob(
    x: Array,
    q: Array,
    cfg: Cfg,
    *,
    label_smoothing: float,
    z_loss: float,
    reduction: str,
    want_grad: bool,
) -> Any:
    """Cross-entropy of float32 logits ``x`` (classes last) against probability targets
    ``q`` of their shape (float32 or float64), without class weights or mask."""
    pc = ProbCfg(cfg, float(label_smoothing), float(z_loss), reduction)
    if want_grad:
        return _prob_grad_op(x, q, pc)
    return _prob_op(x, q, pc)


# ---- sigmoid family ---------------------------------------------------------------------


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _sigmoid_op(x: Array, cfg: Cfg, log: bool) -> Array:
    return _k_sigmoid(x, cfg, log)


@_sigmoid_op.defjvp
def _sigmoid_jvp(cfg: Cfg, log: bool, primals: Any, tangents: Any) -> tuple[Array, Array]:
    (x,), (tx,) = primals, tangents
    y = _sigmoid_op(x, cfg, log)
    s_neg = _sigmoid_op(-x, cfg, False)  # 1 - sigmoid(x), without cancellation
    if log:
        return y, s_neg * tx
    return y, y * s_neg * tx


def sigmoid_op(x: Array, cfg: Cfg, *, log: bool) -> Array:
    """sigmoid (``log=False``) or log_sigmoid, elementwise."""
    return _sigmoid_op(x, cfg, bool(log))


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def _bce_grad_op(
    x: Array, y: Array, w: Array | None, pw: Array | None, bc: BceCfg
) -> tuple[Array, Array]:
    return _k_bce(x, y, w, pw, bc, want_grad=True)  # type: ignore[no-any-return]


@_bce_grad_op.defjvp
def _bce_grad_jvp(bc: BceCfg, primals: Any, tangents: Any) -> tuple[Any, Any]:
    x, y, w, pw = primals
    tx = tangents[0]
    loss, g = _bce_grad_op(x, y, w, pw, bc)
    # the gradient's derivative (Hessians only): s w (1 + (pw - 1) y) sigmoid'(x)
    scale = 1.0 / x.size if bc.reduction == "mean" and x.size else 1.0
    c = (1 + (pw - 1) * y) if pw is not None else jnp.ones_like(x)
    if w is not None:
        c = c * w
    sig = _sigmoid_op(x, bc.base, False) * _sigmoid_op(-x, bc.base, False)
    tg = scale * c * sig * tx
    tl = g * tx if bc.reduction == "none" else jnp.sum(g * tx)
    return (loss, g), (tl, tg)


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def _bce_op(x: Array, y: Array, w: Array | None, pw: Array | None, bc: BceCfg) -> Array:
    return _k_bce(x, y, w, pw, bc, want_grad=False)


def _bce_jvp(bc: BceCfg, primals: Any, tangents: Any) -> tuple[Array, Array]:
    x, y, w, pw = primals
    tx, ty, tw, tpw = tangents
    if not (_zero(ty) and _zero(tw) and _zero(tpw)):
        # targets or weights are being differentiated: the agnostic path's derivative
        def inst(t: Any, a: Array | None) -> Any:
            if a is None:
                return None
            return jnp.zeros_like(a) if _zero(t) else t

        loss = _bce_op(x, y, w, pw, bc)
        _, tan = jax.jvp(
            lambda xx, yy, ww, pp: _bce_agnostic(xx, yy, ww, pp, bc, False),
            (x, y, w, pw),
            (inst(tx, x), inst(ty, y), inst(tw, w), inst(tpw, pw)),
        )
        return loss, tan
    loss, g = _bce_grad_op(x, y, w, pw, bc)
    if _zero(tx):
        return loss, jnp.zeros_like(loss)
    return loss, g * tx if bc.reduction == "none" else jnp.sum(g * tx)


_bce_op.defjvp(_bce_jvp, symbolic_zeros=True)


def bce(
    x: Array,
    y: Array,
    w: Array | None,
    pw: Array | None,
    cfg: Cfg,
    *,
    reduction: str,
    want_grad: bool,
) -> Any:
    """Binary cross-entropy with logits; ``y``, ``w``, ``pw`` already of ``x``'s shape."""
    bc = BceCfg(cfg, reduction)
    if want_grad:
        return _bce_grad_op(x, y, w, pw, bc)
    return _bce_op(x, y, w, pw, bc)
