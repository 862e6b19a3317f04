"""Where the public ops hand CPU torch tensors to the C core.

``sk.softmax(t)`` on a torch tensor resolves to torch's array-API namespace, and
without this module every such call ran the array-agnostic engine in torch
operations: correct, but a few dozen torch calls per op (a 256×1000 float32
softmax took about 26 ms, against about 0.3 ms for ``softmaxkit.torch.softmax``).

When every array argument is a CPU tensor with strided memory, the result dtype
is float32 or float64, and no autograd graph is being recorded through the call,
:mod:`softmaxkit._dispatch` gets zero-copy NumPy views of the tensors and a NumPy
plan with the same dtypes and mode, runs its NumPy branch (the C core), and the
results come back as tensors sharing the NumPy results' memory
(``torch.from_numpy``). The arithmetic is the NumPy path's, so the bits are those
of the same call on NumPy arrays.

Calls that autograd records (a CPU float32/float64 input that requires grad, grad
mode on) go to :mod:`softmaxkit.torch`'s autograd ops where the call maps onto one
(accurate ``softmax`` / ``log_softmax`` over one axis without ``where`` or a
temperature; ``logsumexp`` without ``b``, ``where`` or ``return_sign``;
``cross_entropy`` of 2-D logits and int64 labels without weights, mask, smoothing
or z-loss, the everyday form without the general path's validation): the same
kernels, and their backward in C. Everything else returns
``None`` and takes the array-agnostic engine in torch operations, which autograd
can differentiate: the other recorded calls, other devices, half dtypes, tensors
under ``torch.compile`` or a functorch transform, tensor subclasses, and negated
or conjugated views.
``SOFTMAXKIT_ENGINE=agnostic`` also switches this route off.

Like :mod:`softmaxkit._jax_dispatch`, this module never imports torch: it is
reached only with a torch tensor in hand.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _dispatch
from ._namespace import Plan, dtype_name, resolve

__all__ = [
    "ENABLED",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "logsumexp",
    "normalize",
    "quick",
    "sigmoid",
    "vjp",
]

Array = Any

# switched off by the test suite's ``torch_agnostic`` backend, which runs the
# array-agnostic engine on CPU tensors (the engine GPU tensors take)
ENABLED = True

_FLOATS = ("float32", "float64")
_NP_PLANS: dict[tuple[str, str, str], Plan] = {}


def _numpy_plan(plan: Plan) -> Plan:
    """``plan`` for NumPy arrays: the same working and result dtypes and mode."""
    key = (dtype_name(plan.work), dtype_name(plan.out), plan.mode)
    got = _NP_PLANS.get(key)
    if got is None:
        xp = resolve(np.empty(0))[0]
        got = Plan(xp, getattr(np, key[0]), np.dtype(key[1]), plan.mode, None)
        _NP_PLANS[key] = got
    return got


def _open(torch: Any) -> bool | None:
    """Whether autograd records now (so tensors requiring grad must keep torch's
    route), or None when no tensor may leave for the C core at all."""
    if not ENABLED or _dispatch.FORCE_AGNOSTIC or not _dispatch.available():
        return None
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return None
    return bool(torch.is_grad_enabled())


def _view(torch: Any, a: Any, grad: bool) -> np.ndarray | None:
    """A zero-copy NumPy view of the CPU tensor ``a``, or None for torch's route."""
    if (
        (type(a) is not torch.Tensor and type(a) is not torch.nn.Parameter)
        or not a.is_cpu
        or a.layout is not torch.strided
        or (grad and a.requires_grad)
        or a.is_neg()
        or a.is_conj()
        or a.dtype.is_complex
    ):
        return None
    try:
        return (a.detach() if a.requires_grad else a).numpy()  # type: ignore[no-any-return]
    except (RuntimeError, TypeError):  # a dtype NumPy lacks (bfloat16, float8 ...)
        return None


def _views(plan: Plan, *arrays: Array) -> tuple[Plan, list[np.ndarray | None]] | None:
    """A NumPy plan and zero-copy NumPy views of ``arrays``, or None for torch's route."""
    if dtype_name(plan.out) not in _FLOATS or dtype_name(plan.work) not in _FLOATS:
        return None
    torch = sys.modules["torch"]
    grad = _open(torch)
    if grad is None:
        return None
    views: list[np.ndarray | None] = []
    for a in arrays:
        v = None if a is None else _view(torch, a, grad)
        if v is None and a is not None:
            return None
        views.append(v)
    return _numpy_plan(plan), views


def quick(fn: Callable[..., Any], x: Any, *args: Any) -> Any:
    """``fn`` (one of :mod:`._dispatch`'s ``quick_*`` shortcuts) on NumPy views of a
    float32/float64 CPU tensor ``x`` and of the tensors among ``args``, its result as
    tensors; None when ``x`` is not such a tensor or ``fn`` declines the call.

    The shortcuts check the everyday call in a few attribute reads and make one C
    call: a 32×10 ``sk.softmax(t)`` pays a few microseconds instead of the general
    path's validation and plan (about 80 µs on torch tensors)."""
    torch = sys.modules.get("torch")
    if torch is None or type(x) is not torch.Tensor:
        return None
    if x.dtype is not torch.float32 and x.dtype is not torch.float64:
        return None
    grad = _open(torch)
    if grad is None:
        return None
    xn = _view(torch, x, grad)
    if xn is None:
        if grad and fn is _dispatch.quick_cross_entropy:
            return _recorded_quick_ce(torch, x, *args)
        return None
    conv = []
    tensor, param = torch.Tensor, torch.nn.Parameter
    for a in args:
        if type(a) is tensor or type(a) is param:
            a = _view(torch, a, grad)
            if a is None:
                return None
        conv.append(a)  # anything else the shortcut declines or takes as it is
    return _tensors(fn(xn, *conv))


def _recorded_quick_ce(
    torch: Any,
    x: Any,
    target: Any,
    axis: Any,
    weight: Any,
    ign: Any,
    eps: Any,
    z: Any,
    reduction: Any,
    where: Any,
    return_grad: Any,
    precision: Any,
    threads: Any,
) -> Any:
    """The everyday recorded ``cross_entropy(logits, labels)`` straight to
    softmaxkit.torch's op, without the general path's validation on tensors (which
    costs more than the op at small shapes); None for anything else."""
    if not (
        weight is None
        and where is None
        and return_grad is False
        and precision == "accurate"
        and threads is None
        and (type(eps) is float or type(eps) is int)
        and eps == 0
        and (type(z) is float or type(z) is int)
        and z == 0
        and type(reduction) is str
        and reduction in ("mean", "sum", "none")
        and (ign is None or type(ign) is int)
        and type(axis) is int
        and x.ndim == 2
        and axis in (1, -1)
        and x.shape[0] > 0
        and x.shape[1] > 0
        and _records(torch, x)
        and _labels(torch, target, x.shape[0])
    ):
        return None
    # the op checks labels against [0, C) but lets its ignore_index through: without
    # one of ours, a negative label (torch's -100 too) must meet the general path's error
    if ign is None and bool((target < 0).any()):
        return None
    return _front_end_ce(x, target, ign, reduction)


def _records(torch: Any, x: Any) -> bool:
    """Whether ``x`` is a CPU float32/float64 tensor that requires grad, in memory
    softmaxkit.torch's ops read as it is."""
    return (
        (type(x) is torch.Tensor or type(x) is torch.nn.Parameter)
        and x.requires_grad
        and x.is_cpu
        and x.layout is torch.strided
        and not x.is_neg()
        and (x.dtype is torch.float32 or x.dtype is torch.float64)
    )


def _labels(torch: Any, target: Any, rows: int) -> bool:
    """Whether ``target`` is a CPU int64 tensor of ``rows`` class indices."""
    return (
        type(target) is torch.Tensor
        and target.dtype is torch.int64
        and target.is_cpu
        and target.ndim == 1
        and target.shape[0] == rows
    )


def _front_end_ce(x: Any, target: Any, ign: int | None, reduction: str) -> Any:
    """softmaxkit.torch's cross-entropy; with ``ign=None`` the labels must be known
    non-negative, so that torch's default ``ignore_index=-100`` ignores none."""
    return _front_end().cross_entropy(
        x, target, ignore_index=-100 if ign is None else ign, reduction=reduction
    )


def _recorded(plan: Plan, x: Any) -> bool:
    """Whether ``x`` is a CPU float32/float64 tensor that autograd records through,
    computed in the accurate mode in its own dtype: softmaxkit.torch's autograd ops
    (the same C kernels, and their vector-Jacobian products in C) then serve it."""
    torch = sys.modules["torch"]
    return (
        _open(torch) is True
        and plan.mode != "plain"
        and _records(torch, x)
        and dtype_name(plan.out) == dtype_name(x.dtype)
    )


def _plain_recorded_ce(logits: Any, target: Any, kw: dict[str, Any]) -> bool:
    """A recorded cross-entropy of 2-D logits (classes last) and class indices, with
    nothing torch's ``cross_entropy(logits, labels)`` does not take."""
    torch = sys.modules["torch"]
    return (
        kw["target_is_index"]
        and kw["weight"] is None
        and kw["where"] is None
        and kw["label_smoothing"] == 0.0
        and kw["z_loss"] == 0.0
        and not kw["return_grad"]
        and logits.ndim == 2
        and kw["axis"] in (1, -1)
        and _labels(torch, target, logits.shape[0])
        and _recorded(kw["plan"], logits)
    )


def _front_end() -> Any:
    import softmaxkit.torch as skt

    return skt


def _tensors(res: Any) -> Any:
    """The NumPy branch's results as CPU tensors (None stays None)."""
    if res is None:
        return None
    if isinstance(res, tuple):
        return tuple(_tensors(r) for r in res)
    a = np.asarray(res)
    if not a.flags.writeable or not a.dtype.isnative:
        a = np.array(a, dtype=a.dtype.newbyteorder("="))
    return sys.modules["torch"].from_numpy(a)


def normalize(
    x: Array,
    axes: tuple[int, ...],
    where: Array | None,
    temperature: float,
    plan: Plan,
    threads: int,
    log: bool,
) -> Array | None:
    got = _views(plan, x, where)
    if got is None:
        if where is None and temperature == 1.0 and len(axes) == 1 and _recorded(plan, x):
            skt = _front_end()
            return (skt.log_softmax if log else skt.softmax)(x, axes[0])
        return None
    npl, (xn, wn) = got
    return _tensors(_dispatch._normalize(xn, axes, wn, temperature, npl, None, threads, log))


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
    got = _views(plan, x, b, where)
    if got is None:
        if b is None and where is None and not return_sign and axes and _recorded(plan, x):
            return _front_end().logsumexp(x, list(axes), keepdims)
        return None
    npl, (xn, bn, wn) = got
    res = _dispatch.logsumexp(xn, axes, bn, wn, keepdims, return_sign, npl, threads=threads)
    return _tensors(res)


def cross_entropy(logits: Array, target: Array, *, threads: int, **kw: Any) -> Any:
    got = _views(kw["plan"], logits, target, kw["weight"], kw["where"])
    if got is None:
        if _plain_recorded_ce(logits, target, kw):
            # the labels were checked to lie in [0, C) (or equal ignore_index) before
            # dispatch: none is negative unless it is ignore_index
            return _front_end_ce(logits, target, kw["ignore_index"], kw["reduction"])
        return None
    npl, (xn, tn, wn, mn) = got
    kw.update(plan=npl, weight=wn, where=mn)
    return _tensors(_dispatch.cross_entropy(xn, tn, threads=threads, **kw))


def sigmoid(x: Array, plan: Plan, *, log: bool, threads: int) -> Array | None:
    got = _views(plan, x)
    if got is None:
        return None
    npl, (xn,) = got
    return _tensors(_dispatch.sigmoid(xn, npl, log=log, threads=threads))


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
    got = _views(plan, logits, target, weight, pos_weight)
    if got is None:
        return None
    npl, (xn, tn, wn, pn) = got
    res = _dispatch.binary_cross_entropy_with_logits(
        xn, tn, wn, pn, reduction, return_grad, npl, threads
    )
    return _tensors(res)


def vjp(
    y: Array, g: Array, axes: tuple[int, ...], plan: Plan, *, log: bool, threads: int
) -> Array | None:
    got = _views(plan, y, g)
    if got is None:
        return None
    npl, (yn, gn) = got
    return _tensors(_dispatch.vjp(yn, gn, axes, npl, log=log, threads=threads))
