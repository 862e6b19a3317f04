"""Hand torch tensors to the softmaxkit core and bring the results back.

CPU tensors in float32 or float64 are viewed as NumPy arrays without copying
(``Tensor.numpy()`` shares memory), so the NumPy entry points of softmaxkit run
on them, and with them the native kernels wherever the core dispatches to C.
CPU float16/bfloat16 tensors are widened to float64 first and the result is
rounded once back to the input dtype. Tensors on any other device go through the
array-agnostic implementation, which runs torch operations on that device.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["call_core", "route", "triton_engine"]

_NATIVE = (torch.float32, torch.float64)
_HALF = (torch.float16, torch.bfloat16)


def route(x: torch.Tensor) -> str:
    """``"numpy"`` (zero-copy), ``"widen"`` (CPU half precision) or ``"torch"``."""
    if x.device.type != "cpu":
        return "torch"
    if x.dtype in _NATIVE:
        return "numpy"
    if x.dtype in _HALF:
        return "widen"
    return "torch"


def triton_engine(x: torch.Tensor) -> Any:
    """The Triton launchers for ``x``, or ``None`` to take the paths of :func:`route`.

    Chosen for CUDA tensors when triton imports, and for every tensor when
    ``SOFTMAXKIT_ENGINE=triton`` (CPU tensors then need ``TRITON_INTERPRET=1``).
    """
    forced = os.environ.get("SOFTMAXKIT_ENGINE", "").strip().lower()
    if forced not in ("", "triton") or (not forced and x.device.type != "cuda"):
        return None
    from .. import _triton

    eng = _triton.engine()
    if eng is None and forced:
        from .._errors import SoftmaxkitValueError

        raise SoftmaxkitValueError(f"SOFTMAXKIT_ENGINE=triton: {_triton.why_not()}")
    return eng


def _to_numpy(t: torch.Tensor, widen: bool) -> np.ndarray:
    t = t.detach()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    if widen and t.dtype in _HALF:
        t = t.to(torch.float64)
    return t.numpy()


def _from_numpy(a: Any, like: torch.Tensor, inputs: list[np.ndarray]) -> torch.Tensor:
    arr = np.asarray(a)
    if any(np.may_share_memory(arr, i) for i in inputs) or not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr).copy()
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr)


def call_core(
    fn: Callable[..., Any],
    main: torch.Tensor,
    *tensors: torch.Tensor | None,
    out_dtype: torch.dtype | None = None,
) -> Any:
    """Run ``fn(main, *tensors)`` on the best path for ``main`` and return torch tensors.

    ``fn`` returns one array or a tuple of arrays; each comes back as a
    contiguous torch tensor on ``main``'s device that shares no memory with an
    input. Floating results get ``out_dtype`` (default: ``main``'s dtype).
    """
    how = route(main)
    want = main.dtype if out_dtype is None else out_dtype
    if how == "torch":
        with torch.no_grad():
            res = fn(main, *tensors)
        items = res if isinstance(res, tuple) else (res,)
        ptrs = {t.untyped_storage().data_ptr() for t in (main, *tensors) if t is not None}
        fixed = tuple(_fix_torch(r, want, ptrs) for r in items)
        return fixed if isinstance(res, tuple) else fixed[0]
    widen = how == "widen"
    arrays: list[np.ndarray | None] = [_to_numpy(main, widen)]
    for t in tensors:
        arrays.append(None if t is None else _to_numpy(t, widen))
    res = fn(*arrays)
    items = res if isinstance(res, tuple) else (res,)
    inputs = [a for a in arrays if a is not None]
    outs: list[torch.Tensor] = []
    for r in items:
        t = _from_numpy(r, main, inputs)
        if t.is_floating_point() and t.dtype != want:
            t = t.to(want)
        outs.append(t)
    return tuple(outs) if isinstance(res, tuple) else outs[0]


def _fix_torch(r: Any, want: torch.dtype, ptrs: set[int]) -> torch.Tensor:
    t = r if isinstance(r, torch.Tensor) else torch.as_tensor(r)
    if t.is_floating_point() and t.dtype != want:
        t = t.to(want)
    t = t.contiguous()
    if t._base is not None or t.untyped_storage().data_ptr() in ptrs:
        t = t.clone()
    return t
