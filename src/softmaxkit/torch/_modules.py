"""``torch.nn.Module`` front-ends: configuration in ``__init__``, work in the functionals.

Like torch's own loss modules, class weights are registered as buffers, so they
follow ``.to()`` and appear in ``state_dict``; the modules pickle and deep-copy
as ordinary modules.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import _checks as chk
from . import _functional as F
from ._linear_ce import linear_cross_entropy

__all__ = [
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "LinearCrossEntropyLoss",
    "LogSoftmax",
    "NLLLoss",
    "Softmax",
]


class Softmax(nn.Module):
    """Softmax along ``dim`` (see :func:`softmaxkit.torch.softmax`).

    Parameters
    ----------
    dim : int
        The dimension that sums to one.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> skt.Softmax(dim=-1)
    Softmax(dim=-1)
    >>> skt.Softmax(dim=-1)(torch.tensor([0.0, float("inf")]))
    tensor([0., 1.])
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.softmax(input, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(nn.Module):
    """Log-softmax along ``dim`` (see :func:`softmaxkit.torch.log_softmax`).

    Parameters
    ----------
    dim : int
        The normalised dimension.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> skt.LogSoftmax(dim=1)(torch.tensor([[0.0, -40.0]]))[0, 0].item()
    -4.24835413113866e-18
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(input, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def _buffer(value: torch.Tensor | None, name: str) -> torch.Tensor | None:
    """A module's optional tensor, checked before ``register_buffer`` can reject it."""
    if value is not None:
        chk.tensor_arg(value, name)
    return value  # the caller's tensor itself, as torch's modules keep it


def _options_repr(module: nn.Module, defaults: dict[str, Any]) -> str:
    parts = []
    for name, default in defaults.items():
        value = getattr(module, name)
        if value != default:
            parts.append(f"{name}={value!r}")
    return ", ".join(parts)


class CrossEntropyLoss(nn.Module):
    """Cross-entropy loss module (see :func:`softmaxkit.torch.cross_entropy`).

    Parameters
    ----------
    weight : Tensor of shape (C,), optional
        Per-class weights, kept as a buffer (in ``state_dict``, moved by ``.to()``).
    ignore_index : int, optional
        Targets to skip. Default -100.
    reduction : {"mean", "sum", "none"}, optional
    label_smoothing : float, optional
    z_loss : float, optional
        Coefficient of the ``lse**2`` penalty (0: off).

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> loss = skt.CrossEntropyLoss(label_smoothing=0.1)
    >>> loss
    CrossEntropyLoss(label_smoothing=0.1)
    >>> loss(torch.tensor([[2.0, 1.0, 0.1]]), torch.tensor([0]))
    tensor(0.5137)
    """

    weight: torch.Tensor | None

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        *,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        z_loss: float = 0.0,
    ) -> None:
        super().__init__()
        self.register_buffer("weight", _buffer(weight, "weight"))
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # the everyday call straight to its short route (one Python frame less in each
        # training step); anything it does not cover goes through cross_entropy
        try:  # `weight` is a buffer unless a Parameter replaced it
            weight = self._buffers["weight"]
        except KeyError:
            weight = self.weight
        fast = F._plain_ce(
            input,
            target,
            weight,
            self.ignore_index,
            self.reduction,
            self.label_smoothing,
            self.z_loss,
        )
        if fast is not None:
            return fast
        return F.cross_entropy(
            input,
            target,
            self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            z_loss=self.z_loss,
        )

    def extra_repr(self) -> str:
        return _options_repr(
            self,
            {"ignore_index": -100, "reduction": "mean", "label_smoothing": 0.0, "z_loss": 0.0},
        )


class NLLLoss(nn.Module):
    """Negative log-likelihood loss module (see :func:`softmaxkit.torch.nll_loss`).

    Parameters
    ----------
    weight : Tensor of shape (C,), optional
        Per-class weights (a buffer).
    ignore_index : int, optional
        Default -100.
    reduction : {"mean", "sum", "none"}, optional

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> skt.NLLLoss(reduction="sum")(torch.log(torch.tensor([[0.5, 0.5]])), torch.tensor([1]))
    tensor(0.6931)
    """

    weight: torch.Tensor | None

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        *,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.register_buffer("weight", _buffer(weight, "weight"))
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.nll_loss(
            input, target, self.weight, ignore_index=self.ignore_index, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        return _options_repr(self, {"ignore_index": -100, "reduction": "mean"})


class BCEWithLogitsLoss(nn.Module):
    """Binary cross-entropy on logits (see :func:`binary_cross_entropy_with_logits`).

    Parameters
    ----------
    weight : Tensor, optional
        Elementwise weights broadcastable to the input (a buffer).
    reduction : {"mean", "sum", "none"}, optional
    pos_weight : Tensor, optional
        Weight of the positive term per label (a buffer).

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> skt.BCEWithLogitsLoss()(torch.tensor([-40.0]), torch.tensor([0.0]))
    tensor(4.2484e-18)
    """

    weight: torch.Tensor | None
    pos_weight: torch.Tensor | None

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        *,
        reduction: str = "mean",
        pos_weight: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("weight", _buffer(weight, "weight"))
        self.register_buffer("pos_weight", _buffer(pos_weight, "pos_weight"))
        self.reduction = reduction

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(
            input, target, self.weight, reduction=self.reduction, pos_weight=self.pos_weight
        )

    def extra_repr(self) -> str:
        return _options_repr(self, {"reduction": "mean"})


class LinearCrossEntropyLoss(nn.Module):
    """An output projection fused with cross-entropy (see :func:`linear_cross_entropy`).

    Owns ``self.linear`` (an ``nn.Linear(in_features, num_classes)``), as torch
    2.13's ``nn.LinearCrossEntropyLoss`` does, so the state dict holds
    ``linear.weight`` (and ``linear.bias``) plus the ``weight`` buffer.

    Parameters
    ----------
    in_features : int
        Size of each input row ``D``.
    num_classes : int
        Number of classes ``V``.
    bias : bool, optional
        Whether the projection has a bias. Default False.
    device, dtype : optional
        Of the projection's parameters.
    reduction : {"mean", "sum", "none"}, optional
    weight : Tensor of shape (V,), optional
        Per-class loss weights (a buffer).
    ignore_index : int, optional
        Default -100.
    label_smoothing : float, optional
    z_loss : float, optional
    chunk_size : int, optional
        Classes held per token tile; changes memory only, never the result.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> _ = torch.manual_seed(0)
    >>> head = skt.LinearCrossEntropyLoss(16, 1000)
    >>> head
    LinearCrossEntropyLoss(
      (linear): Linear(in_features=16, out_features=1000, bias=False)
    )
    >>> loss = head(torch.randn(8, 16), torch.randint(0, 1000, (8,)))
    >>> loss.backward()
    >>> head.linear.weight.grad.shape
    torch.Size([1000, 16])
    """

    weight: torch.Tensor | None

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        bias: bool = False,
        device: Any = None,
        dtype: torch.dtype | None = None,
        reduction: str = "mean",
        weight: torch.Tensor | None = None,
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
        z_loss: float = 0.0,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes, bias=bias, device=device, dtype=dtype)
        self.register_buffer("weight", _buffer(weight, "weight"))
        self.reduction = reduction
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss
        self.chunk_size = chunk_size

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return linear_cross_entropy(  # type: ignore[no-any-return]
            input,
            self.linear.weight,
            target,
            linear_bias=self.linear.bias,
            weight=self.weight,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            z_loss=self.z_loss,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
        )

    def extra_repr(self) -> str:
        return _options_repr(
            self,
            {
                "ignore_index": -100,
                "reduction": "mean",
                "label_smoothing": 0.0,
                "z_loss": 0.0,
                "chunk_size": None,
            },
        )
