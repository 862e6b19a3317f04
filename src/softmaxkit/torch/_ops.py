"""The softmax family as ``torch.library`` custom operators with autograd.

Every operator here is opaque to ``torch.compile`` (it traces a call to
``torch.ops.softmaxkit.<name>`` with a fake implementation for shapes) and
differentiable through ``register_autograd``. Forward and first-order backward
run on the softmaxkit core (zero-copy NumPy views, hence the native kernels, for
CPU float32/float64). Second-order derivatives are written with torch operations
and the differentiable operators of this module, so ``gradgradcheck`` passes.

Conventions: ``dims`` are non-negative and sorted, ``dim`` is the non-negative
class dimension. The public wrappers in :mod:`._functional` validate arguments
before calling these operators.
"""

# No ``from __future__ import annotations`` here: torch.library reads the
# annotations at run time to infer each operator's schema.

import math
from typing import Any

import torch

from . import _engine as E

__all__ = [
    "bce_with_logits_op",
    "cross_entropy_op",
    "log_softmax_op",
    "logsumexp_op",
    "nll_loss_op",
    "softmax_op",
]

Tensor = torch.Tensor


def _kept_shape(shape: torch.Size, dims: list[int]) -> list[int]:
    return [1 if i in dims else s for i, s in enumerate(shape)]


def _reduced_shape(shape: torch.Size, dims: list[int], keepdim: bool) -> list[int]:
    if keepdim:
        return _kept_shape(shape, dims)
    return [s for i, s in enumerate(shape) if i not in dims]


# --------------------------------------------------------------------------- softmax


@torch.library.custom_op("softmaxkit::softmax", mutates_args=())
def softmax_op(x: Tensor, dims: list[int]) -> Tensor:
    """Softmax of ``x`` over ``dims``."""
    return E.softmax_fwd(x, dims, False)


@softmax_op.register_fake
def _(x: Tensor, dims: list[int]) -> Tensor:
    return x.new_empty(x.shape)


@torch.library.custom_op("softmaxkit::softmax_backward", mutates_args=())
def softmax_backward_op(y: Tensor, g: Tensor, dims: list[int]) -> Tensor:
    """``y * (g - sum(y * g))``: the gradient of softmax from its output ``y``."""
    return E.softmax_bwd(y, g, dims, False)


@softmax_backward_op.register_fake
def _(y: Tensor, g: Tensor, dims: list[int]) -> Tensor:
    return y.new_empty(y.shape)


def _softmax_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    ctx.dims = inputs[1]
    ctx.save_for_backward(output)


def _softmax_backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
    (y,) = ctx.saved_tensors
    return softmax_backward_op(y, g, ctx.dims), None


softmax_op.register_autograd(_softmax_backward, setup_context=_softmax_setup)


def _softmax_bwd_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    y, g, dims = inputs
    ctx.dims = dims
    ctx.save_for_backward(y, g)


def _softmax_bwd_backward(ctx: Any, h: Tensor) -> tuple[Tensor, Tensor, None]:
    # out = y * (g - s), s = sum(y * g)
    y, g = ctx.saved_tensors
    d = ctx.dims
    s = (y * g).sum(d, keepdim=True)
    hy = (h * y).sum(d, keepdim=True)
    return h * (g - s) - g * hy, y * (h - hy), None


softmax_backward_op.register_autograd(_softmax_bwd_backward, setup_context=_softmax_bwd_setup)


# ----------------------------------------------------------------------- log_softmax


@torch.library.custom_op("softmaxkit::log_softmax", mutates_args=())
def log_softmax_op(x: Tensor, dims: list[int]) -> Tensor:
    """Log-softmax of ``x`` over ``dims``."""
    return E.softmax_fwd(x, dims, True)


@log_softmax_op.register_fake
def _(x: Tensor, dims: list[int]) -> Tensor:
    return x.new_empty(x.shape)


@torch.library.custom_op("softmaxkit::log_softmax_backward", mutates_args=())
def log_softmax_backward_op(y: Tensor, g: Tensor, dims: list[int]) -> Tensor:
    """``g - exp(y) * sum(g)``: the gradient of log-softmax from its output ``y``."""
    return E.softmax_bwd(y, g, dims, True)


@log_softmax_backward_op.register_fake
def _(y: Tensor, g: Tensor, dims: list[int]) -> Tensor:
    return y.new_empty(y.shape)


def _log_softmax_backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
    (y,) = ctx.saved_tensors
    return log_softmax_backward_op(y, g, ctx.dims), None


log_softmax_op.register_autograd(_log_softmax_backward, setup_context=_softmax_setup)


def _log_softmax_bwd_backward(ctx: Any, h: Tensor) -> tuple[Tensor, Tensor, None]:
    # out = g - exp(y) * S, S = sum(g)
    y, g = ctx.saved_tensors
    d = ctx.dims
    p = torch.exp(y)
    grad_g = h - (h * p).sum(d, keepdim=True)
    grad_y = -h * p * g.sum(d, keepdim=True)
    return grad_y, grad_g, None


log_softmax_backward_op.register_autograd(
    _log_softmax_bwd_backward, setup_context=_softmax_bwd_setup
)


# ------------------------------------------------------------------------- logsumexp


@torch.library.custom_op("softmaxkit::logsumexp", mutates_args=())
def logsumexp_op(x: Tensor, dims: list[int], keepdim: bool) -> Tensor:
    """Logsumexp of ``x`` over ``dims``."""
    return E.logsumexp_fwd(x, dims, keepdim)


@logsumexp_op.register_fake
def _(x: Tensor, dims: list[int], keepdim: bool) -> Tensor:
    return x.new_empty(_reduced_shape(x.shape, dims, keepdim))


@torch.library.custom_op("softmaxkit::logsumexp_backward", mutates_args=())
def logsumexp_backward_op(x: Tensor, g: Tensor, dims: list[int], keepdim: bool) -> Tensor:
    """``g * softmax(x)``: the gradient of logsumexp (0 where the probability is 0)."""
    return E.logsumexp_bwd(x, g, dims, keepdim)


@logsumexp_backward_op.register_fake
def _(x: Tensor, g: Tensor, dims: list[int], keepdim: bool) -> Tensor:
    return x.new_empty(x.shape)


def _lse_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    x, dims, keepdim = inputs
    ctx.dims, ctx.keepdim = dims, keepdim
    ctx.save_for_backward(x)


def _lse_backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None]:
    (x,) = ctx.saved_tensors
    return logsumexp_backward_op(x, g, ctx.dims, ctx.keepdim), None, None


logsumexp_op.register_autograd(_lse_backward, setup_context=_lse_setup)


def _lse_bwd_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    x, g, dims, keepdim = inputs
    ctx.dims, ctx.keepdim = dims, keepdim
    ctx.save_for_backward(x, g)


def _lse_bwd_backward(ctx: Any, h: Tensor) -> tuple[Tensor, Tensor, None, None]:
    # out = g p with p = softmax(x): d out_k / d x_j = g p_k (delta_kj - p_j)
    x, g = ctx.saved_tensors
    d = ctx.dims
    p = softmax_op(x, d)
    gk = g.reshape(_kept_shape(x.shape, d))
    hp = (h * p).sum(d, keepdim=True)
    grad_x = gk * p * (h - hp)
    grad_g = hp.reshape(g.shape)
    return grad_x, grad_g, None, None


logsumexp_backward_op.register_autograd(_lse_bwd_backward, setup_context=_lse_bwd_setup)


# --------------------------------------------------------------------- cross-entropy


@torch.library.custom_op("softmaxkit::cross_entropy", mutates_args=())
def cross_entropy_op(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    dim: int,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    prob_target: bool,
    need_grad: bool,
) -> tuple[Tensor, Tensor]:
    """Cross-entropy with the class axis ``dim``; also ``d loss / d x`` when ``need_grad``.

    The gradient is of the returned loss (of each item for ``"none"``) and comes
    from the same pass; without ``need_grad`` an empty tensor stands in for it.
    """

    return E.cross_entropy_fwd(
        x, target, weight, dim, ignore_index, reduction, label_smoothing, z_loss, prob_target,
        need_grad,
    )  # fmt: skip


@cross_entropy_op.register_fake
def _(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    dim: int,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    prob_target: bool,
    need_grad: bool,
) -> tuple[Tensor, Tensor]:
    shape = _reduced_shape(x.shape, [dim], False) if reduction == "none" else []
    return x.new_empty(shape), x.new_empty(x.shape if need_grad else (0,))


def _ce_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
    x, target, weight = inputs[:3]
    ctx.opts = inputs[3:9]
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # no zero tensor for the gradient output
    ctx.save_for_backward(x, target, weight, output[1])


def _mean_scale(den: Tensor, counted_any: Tensor) -> Tensor:
    """``1 / den``, or 0 when nothing was counted or the weights sum to 0 (the empty mean)."""
    ok = (den != 0) & counted_any
    safe = torch.where(ok, den, torch.ones_like(den))
    return torch.where(ok, 1.0 / safe, torch.zeros_like(den))


def _class_view(w: Tensor, ndim: int, dim: int) -> Tensor:
    shape = [1] * ndim
    shape[dim] = -1
    return w.reshape(shape)


def _ce_grad_expr(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    dim: int,
    ignore_index: int,
    reduction: str,
    eps: float,
    z: float,
    prob_target: bool,
) -> Tensor:
    """``d loss / d x`` (per item for ``"none"``) as a differentiable expression."""
    C = x.shape[dim]
    p = softmax_op(x, [dim])
    lse = logsumexp_op(x, [dim], True)
    lse_safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    nonempty = lse > -math.inf
    w_b = None if weight is None else _class_view(weight.to(x.dtype), x.dim(), dim)
    if prob_target:
        q = (1.0 - eps) * target + eps / C if eps else target
        wq = q if w_b is None else w_b * q
        gi = wq.sum(dim, keepdim=True) * p - wq
        if z:
            gi = gi + (2.0 * z) * lse_safe * p
        counted = nonempty
        den = counted.to(x.dtype).sum()
    else:
        t = target.unsqueeze(dim)
        ignored = t == ignore_index
        t_safe = torch.where(ignored, torch.zeros_like(t), t)
        onehot = torch.zeros_like(x).scatter(dim, t_safe, 1.0)
        w_t = (
            torch.ones_like(lse)
            if weight is None
            else weight.to(x.dtype)[t_safe.reshape(-1)].reshape(t_safe.shape)
        )
        gi = (1.0 - eps) * (p - onehot)
        if z:
            gi = gi + (2.0 * z) * lse_safe * p
        gi = w_t * gi
        if eps:
            wb = torch.ones_like(lse) if w_b is None else w_b
            w_sum = wb.sum() if w_b is not None else float(C)
            gi = gi + (eps / C) * (w_sum * p - wb)
        counted = ~ignored & nonempty
        den = torch.where(counted, w_t, torch.zeros_like(w_t)).sum()
    gi = torch.where(counted, gi, torch.zeros_like(gi))
    if reduction == "mean":
        gi = gi * _mean_scale(den, counted.any())
    return gi


def _ce_target_grad(
    x: Tensor, weight: Tensor | None, dim: int, reduction: str, eps: float
) -> Tensor:
    """``d loss / d target`` for probability targets (per item for ``"none"``)."""
    ls = log_softmax_op(x, [dim])
    nonempty = logsumexp_op(x, [dim], True) > -math.inf
    if weight is None:
        gt = -(1.0 - eps) * ls
    else:
        w_b = _class_view(weight.to(x.dtype), x.dim(), dim)
        gt = torch.where(w_b == 0, torch.zeros_like(ls), -(1.0 - eps) * w_b * ls)
    gt = torch.where(nonempty, gt, torch.zeros_like(gt))
    if reduction == "mean":
        gt = gt * _mean_scale(nonempty.to(x.dtype).sum(), nonempty.any())
    return gt


def _ce_backward(ctx: Any, g_loss: Tensor | None, _g_grad: Tensor | None) -> tuple[Any, ...]:
    if g_loss is None:  # no gradient reached the loss
        return (None,) * 10
    x, target, weight, saved_grad = ctx.saved_tensors
    dim, ign, reduction, eps, z, prob = ctx.opts
    gk = g_loss.unsqueeze(dim) if reduction == "none" else g_loss
    grad_x = grad_t = None
    if ctx.needs_input_grad[0]:
        if torch.is_grad_enabled() or saved_grad.numel() != x.numel():
            # double backward (create_graph=True): a differentiable expression
            grad_x = _ce_grad_expr(x, target, weight, dim, ign, reduction, eps, z, prob) * gk
        else:
            grad_x = saved_grad * gk
    if ctx.needs_input_grad[1]:
        grad_t = _ce_target_grad(x, weight, dim, reduction, eps) * gk
    return (grad_x, grad_t) + (None,) * 8


cross_entropy_op.register_autograd(_ce_backward, setup_context=_ce_setup)


# ------------------------------------------------------------------------------ NLL


@torch.library.custom_op("softmaxkit::nll_loss", mutates_args=())
def nll_loss_op(
    x: Tensor, target: Tensor, weight: Tensor | None, dim: int, ignore_index: int, reduction: str
) -> Tensor:
    """Negative log-likelihood with the class axis ``dim``."""
    return E.nll_fwd(x, target, weight, dim, ignore_index, reduction)


@nll_loss_op.register_fake
def _(
    x: Tensor, target: Tensor, weight: Tensor | None, dim: int, ignore_index: int, reduction: str
) -> Tensor:
    shape = _reduced_shape(x.shape, [dim], False) if reduction == "none" else []
    return x.new_empty(shape)


def _nll_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    x, target, weight, dim, ign, reduction = inputs
    ctx.opts = (dim, ign, reduction)
    ctx.save_for_backward(x, target, weight)


def nll_grad(
    x: Tensor, target: Tensor, weight: Tensor | None, dim: int, ign: int, reduction: str, g: Tensor
) -> Tensor:
    """``d loss / d x``: ``-w_t`` at the target class, scattered; differentiable in ``g``."""
    t = target.unsqueeze(dim)
    ignored = t == ign
    t_safe = torch.where(ignored, torch.zeros_like(t), t)
    if weight is None:
        w_t = torch.ones(t.shape, dtype=x.dtype, device=x.device)
    else:
        w_t = weight.to(x.dtype)[t_safe.reshape(-1)].reshape(t.shape)
    w_t = torch.where(ignored, torch.zeros_like(w_t), w_t)
    coef = -w_t
    if reduction == "mean":
        coef = coef * _mean_scale(w_t.sum(), (~ignored).any())
    gk = g.unsqueeze(dim) if reduction == "none" else g
    src = (coef * gk).expand(t.shape)
    return torch.zeros_like(x).scatter(dim, t_safe, src)


def _nll_backward(ctx: Any, g: Tensor) -> tuple[Any, ...]:
    x, target, weight = ctx.saved_tensors
    dim, ign, reduction = ctx.opts
    return nll_grad(x, target, weight, dim, ign, reduction, g), None, None, None, None, None


nll_loss_op.register_autograd(_nll_backward, setup_context=_nll_setup)


# ---------------------------------------------------------------- BCE with logits


@torch.library.custom_op("softmaxkit::bce_with_logits", mutates_args=())
def bce_with_logits_op(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    pos_weight: Tensor | None,
    reduction: str,
    need_grad: bool,
) -> tuple[Tensor, Tensor]:
    """Binary cross-entropy on logits; also ``d loss / d x`` when ``need_grad``."""

    return E.bce_fwd(x, target, weight, pos_weight, reduction, need_grad)


@bce_with_logits_op.register_fake
def _(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    pos_weight: Tensor | None,
    reduction: str,
    need_grad: bool,
) -> tuple[Tensor, Tensor]:
    shape = list(x.shape) if reduction == "none" else []
    return x.new_empty(shape), x.new_empty(x.shape if need_grad else (0,))


def _bce_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
    x, target, weight, pos_weight, reduction, _ = inputs
    ctx.reduction = reduction
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # no zero tensor for the gradient output
    ctx.save_for_backward(x, target, weight, pos_weight, output[1])


def bce_grads(
    x: Tensor,
    y: Tensor,
    w: Tensor | None,
    pw: Tensor | None,
    saved_grad: Tensor,
    reduction: str,
    g: Tensor,
    want_x: bool,
    want_t: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of BCE with logits w.r.t. the logits and the target, scaled by ``g``."""
    scale = 1.0 / x.numel() if reduction == "mean" and x.numel() else 1.0
    y = y.to(x.dtype)
    grad_x = grad_t = None
    if want_x:
        if torch.is_grad_enabled() or saved_grad.numel() != x.numel():
            pos = y if pw is None else pw.to(x.dtype) * y
            gi = (1.0 - y + pos) * torch.sigmoid(x) - pos
            if w is not None:
                gi = w.to(x.dtype) * gi
            grad_x = gi * scale * g
        else:
            grad_x = saved_grad * g
    if want_t:
        # d/dy [pw y softplus(-x) + (1 - y) softplus(x)] = pw softplus(-x) - softplus(x)
        sp_neg = -torch.nn.functional.logsigmoid(x)
        sp_pos = -torch.nn.functional.logsigmoid(-x)
        gt = (sp_neg if pw is None else pw.to(x.dtype) * sp_neg) - sp_pos
        if w is not None:
            gt = w.to(x.dtype) * gt
        grad_t = gt * scale * g
    return grad_x, grad_t


def _bce_backward(ctx: Any, g: Tensor | None, _g_grad: Tensor | None) -> tuple[Any, ...]:
    if g is None:  # no gradient reached the loss
        return (None,) * 6
    x, y, w, pw, saved_grad = ctx.saved_tensors
    grad_x, grad_t = bce_grads(
        x, y, w, pw, saved_grad, ctx.reduction, g, ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    )
    return grad_x, grad_t, None, None, None, None


bce_with_logits_op.register_autograd(_bce_backward, setup_context=_bce_setup)
