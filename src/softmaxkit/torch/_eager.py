"""The eager route: ``torch.autograd.Function`` wrappers around the engine calls.

Outside ``torch.compile`` the public functions call these instead of the
``torch.library`` operators of :mod:`._ops`, whose dispatcher and autograd
wrappers cost tens of microseconds a call. Forward and first-order backward
call the same :mod:`._engine` functions as the operators, so both routes give
bitwise identical results. A backward run with ``create_graph=True`` goes
through the differentiable operators of :mod:`._ops`, so higher derivatives
are exactly those of the compiled route.

This module must never validate arguments (the public wrappers did) or hold
numerical code of its own.
"""

from __future__ import annotations

from typing import Any

import torch

from . import _engine as E
from . import _ops

__all__ = [
    "BCEWithLogits",
    "CrossEntropy",
    "LogSoftmax",
    "LogSumExp",
    "NLLLoss",
    "PlainCrossEntropy",
    "Softmax",
    "apply",
]

Tensor = torch.Tensor


def _is_one(g: Tensor) -> bool:
    """Whether ``g`` is the scalar 1 on the CPU (the usual ``loss.backward()``), checked cheaply."""
    return g.is_cpu and g.dim() == 0 and not g.requires_grad and g.item() == 1.0


class Softmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, dims: list[int], log: bool) -> Tensor:
        y = E.softmax_fwd(x, dims, log)
        ctx.dims, ctx.log = dims, log
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Any, ...]:
        (y,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiable operators
            op = _ops.log_softmax_backward_op if ctx.log else _ops.softmax_backward_op
            return op(y, g, ctx.dims), None, None
        return E.softmax_bwd(y, g, ctx.dims, ctx.log), None, None


class LogSoftmax(Softmax):
    """Same as :class:`Softmax` with ``log=True``; kept for readable tracebacks."""


class LogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, dims: list[int], keepdim: bool) -> Tensor:
        ctx.dims, ctx.keepdim = dims, keepdim
        ctx.save_for_backward(x)
        return E.logsumexp_fwd(x, dims, keepdim)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Any, ...]:
        (x,) = ctx.saved_tensors
        if torch.is_grad_enabled():
            return _ops.logsumexp_backward_op(x, g, ctx.dims, ctx.keepdim), None, None
        return E.logsumexp_bwd(x, g, ctx.dims, ctx.keepdim), None, None


class CrossEntropy(torch.autograd.Function):
    """Forward computes the gradient in the same pass; backward only scales it.

    The gradient is kept on ``ctx`` (not saved for backward) and handed over by the
    first backward that returns it as it stands, so that autograd can adopt it as
    ``x.grad`` without a copy and the caller's tensor is nobody else's: a second
    backward through a retained graph forms it again, with the same bits (returning
    the kept tensor each time let two ``torch.autograd.grad`` results share memory).
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        target: Tensor,
        weight: Tensor | None,
        dim: int,
        ign: int,
        reduction: str,
        eps: float,
        z: float,
        prob: bool,
    ) -> Tensor:
        need = ctx.needs_input_grad[0]
        loss, grad = E.cross_entropy_fwd(x, target, weight, dim, ign, reduction, eps, z, prob, need)
        ctx.opts = (dim, ign, reduction, eps, z, prob)
        ctx.save_for_backward(x, target, weight, None)
        ctx.grad = grad
        return loss

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Any, ...]:
        x, target, weight, _ = ctx.saved_tensors
        dim, ign, reduction, eps, z, prob = ctx.opts
        grad_x = grad_t = None
        gk = g.unsqueeze(dim) if reduction == "none" else g
        if ctx.needs_input_grad[0]:
            if torch.is_grad_enabled():
                expr = _ops._ce_grad_expr(x, target, weight, dim, ign, reduction, eps, z, prob)
                grad_x = expr * gk
            else:
                saved, ctx.grad = ctx.grad, None
                if saved is None:  # a second backward through a retained graph
                    saved = E.cross_entropy_fwd(
                        x.detach(), target, weight, dim, ign, reduction, eps, z, prob, True
                    )[1]
                if reduction != "none" and _is_one(g):
                    grad_x = saved  # handed over: the caller's alone
                else:
                    grad_x = saved * gk
        if ctx.needs_input_grad[1]:
            grad_t = _ops._ce_target_grad(x, weight, dim, reduction, eps) * gk
        return (grad_x, grad_t) + (None,) * 7


class PlainCrossEntropy(CrossEntropy):
    """:class:`CrossEntropy` for the everyday call (``_functional._plain_ce``'s checks).

    Forward reaches the C core through :func:`._engine.plain_ce`. x and target
    are saved for a double backward, which goes through :class:`CrossEntropy`'s
    backward. The gradient is kept on ``ctx`` alone and handed over by the first
    backward, so that autograd can adopt it as ``x.grad`` instead of copying it
    (a copy as large as the logits); a second backward through a retained graph
    computes it again, with the same bits.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, target: Tensor, ign: int, reduction: str
    ) -> Tensor:
        loss, grad = E.plain_ce(x, target, ign, reduction, True)
        ctx.opts = (1, ign, reduction, 0.0, 0.0, False)
        ctx.save_for_backward(x, target, None, None)
        ctx.grad = grad
        return loss

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Any, ...]:
        if torch.is_grad_enabled():  # create_graph=True: the differentiable expression
            return CrossEntropy.backward(ctx, g)[:4]
        grad, ctx.grad = ctx.grad, None
        if grad is None:  # a second backward through a retained graph
            x, target, _, _ = ctx.saved_tensors
            grad = E.plain_ce(x.detach(), target, ctx.opts[1], ctx.opts[2], True)[1]
        if ctx.opts[2] == "none":
            return grad * g.unsqueeze(1), None, None, None
        return (grad if _is_one(g) else grad * g), None, None, None


class NLLLoss(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        target: Tensor,
        weight: Tensor | None,
        dim: int,
        ign: int,
        reduction: str,
    ) -> Tensor:
        ctx.opts = (dim, ign, reduction)
        ctx.save_for_backward(x, target, weight)
        return E.nll_fwd(x, target, weight, dim, ign, reduction)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Any, ...]:
        x, target, weight = ctx.saved_tensors
        dim, ign, reduction = ctx.opts
        return (
            _ops.nll_grad(x, target, weight, dim, ign, reduction, g),
            None,
            None,
            None,
            None,
            None,
        )


class BCEWithLogits(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        target: Tensor,
        weight: Tensor | None,
        pos_weight: Tensor | None,
        reduction: str,
    ) -> Tensor:
        need = ctx.needs_input_grad[0]
        loss, grad = E.bce_fwd(x, target, weight, pos_weight, reduction, need)
        ctx.reduction = reduction
        ctx.save_for_backward(x, target, weight, pos_weight)
        ctx.grad = grad  # kept on ctx and handed over once, as CrossEntropy's
        return loss

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Any, ...]:
        x, y, w, pw = ctx.saved_tensors
        saved = ctx.grad
        if saved is None:  # handed over by a backward before: a retained graph
            saved = E.bce_fwd(x.detach(), y, w, pw, ctx.reduction, True)[1]  # the same bits
        if (
            ctx.reduction != "none"
            and not ctx.needs_input_grad[1]
            and not torch.is_grad_enabled()
            and saved.numel() == x.numel()
            and _is_one(g)
        ):
            # loss.backward(): the gradient formed in the forward pass is x's gradient
            # as it stands (times 1, the same bits), handed over without a copy
            ctx.grad = None
            return saved, None, None, None, None
        grad_x, grad_t = _ops.bce_grads(
            x, y, w, pw, saved, ctx.reduction, g, ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        )
        return grad_x, grad_t, None, None, None


_FAST: dict[type[torch.autograd.Function], Any] = {
    # the C entry point, bound to cls
    cls: super(torch.autograd.Function, cls).apply  # type: ignore[misc]
    for cls in (
        Softmax,
        LogSoftmax,
        LogSumExp,
        CrossEntropy,
        PlainCrossEntropy,
        NLLLoss,
        BCEWithLogits,
    )
}


def apply(cls: type[torch.autograd.Function], *args: Any) -> Any:
    """``cls.apply(*args)`` without the Python layer of ``Function.apply`` when it has no work.

    That layer only matters under functorch transforms (``vmap``, ``grad``...),
    which then take the ordinary path.
    """
    if torch._C._are_functorch_transforms_active():
        return cls.apply(*args)
    return _FAST[cls](*args)
