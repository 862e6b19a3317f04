"""Label-smoothed cross-entropy of CPU tensors on the C core (float32, float16, bfloat16).

The torch side of :mod:`softmaxkit._smoothing`: the logits as float32 rows, the
loss and the gradient from the kernel's block statistics and two more C passes,
rounded once to the logits' dtype. :func:`cross_entropy` returns ``None`` when a
row holds ``+inf`` or NaN; the caller then runs the array-API engine.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import _smoothing as S
from . import _engine as E

__all__ = ["BLOCK", "cross_entropy", "eligible", "kernel_dtype"]

Tensor = torch.Tensor

BLOCK = S.BLOCK
"""Classes per block of the C core's rows (``SKIT_BLOCK_ELEMS``)."""


def kernel_dtype(x: Tensor) -> bool:
    """Whether ``x``'s dtype and device take this route (whatever its size)."""
    return (
        E._ckernels is not None
        and x.dtype in (torch.float32, torch.float16, torch.bfloat16)
        and E.engine_for(x) == E.NATIVE
    )


def eligible(x: Tensor) -> bool:
    """Whether :func:`cross_entropy` takes ``x`` (it may still decline: +inf or NaN)."""
    return x.numel() > 0 and kernel_dtype(x)


def cross_entropy(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    dim: int,
    ign: int,
    reduction: str,
    eps: float,
    z: float,
    need_grad: bool,
) -> tuple[Tensor, Tensor] | None:
    """Loss and (when ``need_grad``) gradient, or ``None`` when a row holds +inf or NaN.

    A target outside ``[0, C)`` that is not ``ign`` raises ``SoftmaxkitValueError``.
    """
    tn = (target if target.dim() == 1 else target.reshape(-1)).numpy()  # integers: no grad
    C = x.shape[dim]
    if tn.size and (tn.max() >= C or tn.min() < 0):  # the full check only when it may fail
        bad = ((tn < 0) | (tn >= C)) & (tn != ign)
        if bad.any():
            raise E._index_range_error(tn, C, ign)
    xd = x.detach()
    x32 = xd.to(torch.float32) if xd.dtype != torch.float32 else xd
    if dim == x32.dim() - 1 and x32.is_contiguous():  # the rows as they lie
        perm, V = None, x32.shape[-1]
        rows = x32.numel() // V
        xn = x32.numpy().reshape(rows, V)
    else:
        x2, perm, rows, V = E._rows(x32, [dim])
        xn = x2.numpy()
    threads = E._threads(rows * V)
    w = None if weight is None else weight.detach().to(torch.float64).contiguous().numpy()
    tn = np.ascontiguousarray(tn, dtype=np.int64)
    g: Tensor | None = None
    gn = None
    if need_grad:
        if x.dtype == torch.float32:  # huge pages for big gradients, as the unsmoothed route
            g = E._out_buffer((rows, V), torch.float32)
            gn = g.numpy()
        else:  # float64, rounded once to the half type below
            gn = np.empty((rows, V))
    r = S.whole_row_loss(xn, tn, w, ign, reduction, eps, z, gn, threads)
    if r is None:
        return None
    if reduction == "none":
        r = r.reshape(E._batch_shape(x.shape, dim))
    loss = torch.from_numpy(r).to(x.dtype)  # r is a fresh array
    if gn is None:
        return loss, x.new_empty(0)
    if g is None:
        g = torch.from_numpy(gn).to(x.dtype)
    if perm is not None:
        g = E._unrows(g, x32.shape, perm).contiguous()
    elif g.shape != x.shape:
        g = g.view(x.shape)
    return loss, g
