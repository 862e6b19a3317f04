"""Where the public ops hand calls on JAX arrays to the C core under XLA.

(Calls on torch tensors go to :mod:`softmaxkit._torch_dispatch` from here too: for
CPU tensors outside autograd it runs the C core on zero-copy NumPy views.)

The core dispatch (:mod:`softmaxkit._dispatch`) asks this module first for any
input that is not a NumPy array. For JAX arrays whose computation can run on
the CPU it returns the result of :mod:`softmaxkit.jax._core`, which runs the C
engines as XLA FFI custom calls (under ``jit``, ``vmap`` and autodiff alike);
for every other input, and when this installation was built without jaxlib's
FFI headers, it returns ``None`` and the caller takes the array-agnostic path.

It must never import JAX itself: it is reached only with a JAX array in hand,
when JAX is already imported, so ``import softmaxkit`` stays framework-free.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

from ._namespace import Plan, is_jax, is_torch

__all__ = [
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "logsumexp",
    "normalize",
    "sigmoid",
    "vjp",
]

Array = Any


def _engine(plan: Plan) -> ModuleType | None:
    if is_torch(plan.xp) and "torch" in sys.modules:
        from . import _torch_dispatch  # CPU tensors: NumPy views for the C core

        return _torch_dispatch
    if not is_jax(plan.xp) or "jax" not in sys.modules:
        return None
    from ._dispatch import FORCE_AGNOSTIC

    if FORCE_AGNOSTIC:  # SOFTMAXKIT_ENGINE=agnostic: no native kernel, XLA's or NumPy's
        return None
    from .jax import _core

    return _core if _core.available() else None


def _threads(threads: int | None) -> int:
    from ._dispatch import check_threads

    return check_threads(threads)


def normalize(
    x: Array,
    axes: tuple[int, ...],
    where: Array | None,
    temperature: float,
    plan: Plan,
    threads: int | None,
    log: bool,
) -> Array | None:
    eng = _engine(plan)
    if eng is None:
        return None
    return eng.normalize(x, axes, where, temperature, plan, _threads(threads), log)  # type: ignore[no-any-return]


def logsumexp(
    x: Array,
    axes: tuple[int, ...],
    b: Array | None,
    where: Array | None,
    keepdims: bool,
    return_sign: bool,
    plan: Plan,
    threads: int | None,
) -> Any:
    eng = _engine(plan)
    if eng is None:
        return None
    return eng.logsumexp(x, axes, b, where, keepdims, return_sign, plan, _threads(threads))


def cross_entropy(logits: Array, target: Array, *, threads: int | None, **kw: Any) -> Any:
    eng = _engine(kw["plan"])
    if eng is None:
        return None
    return eng.cross_entropy(logits, target, threads=_threads(threads), **kw)


def sigmoid(x: Array, plan: Plan, *, log: bool, threads: int | None) -> Array | None:
    eng = _engine(plan)
    if eng is None:
        return None
    return eng.sigmoid(x, plan, log=log, threads=_threads(threads))  # type: ignore[no-any-return]


def binary_cross_entropy_with_logits(
    logits: Array,
    target: Array,
    weight: Array | None,
    pos_weight: Array | None,
    reduction: str,
    return_grad: bool,
    plan: Plan,
    threads: int | None,
) -> Any:
    eng = _engine(plan)
    if eng is None:
        return None
    return eng.binary_cross_entropy_with_logits(
        logits, target, weight, pos_weight, reduction, return_grad, plan, _threads(threads)
    )


def vjp(
    y: Array, g: Array, axes: tuple[int, ...], plan: Plan, *, log: bool, threads: int | None
) -> Array | None:
    eng = _engine(plan)
    if eng is None:
        return None
    return eng.vjp(y, g, axes, plan, log=log, threads=_threads(threads))  # type: ignore[no-any-return]
