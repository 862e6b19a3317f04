"""Hugging Face ``transformers`` causal LMs with a training loss that never forms the logits.

One call, :func:`apply_linear_cross_entropy`, makes a causal language model
(``GPT2LMHeadModel``, ``LlamaForCausalLM`` and every other ``*ForCausalLM``
whose logits are ``lm_head(hidden_states)``) compute its loss with
:func:`softmaxkit.torch.linear_cross_entropy` whenever ``labels`` are given:
the ``batch x seq x vocab`` logits are not formed, and the labels are shifted
exactly as transformers' ``ForCausalLMLoss`` does (``ignore_index=-100``,
``shift_labels=``, ``num_items_in_batch=`` for gradient accumulation).

It works with the model's own ``forward`` through two hooks and the model's
``loss_function`` attribute, so it follows every architecture that calls
``self.lm_head(...)`` and then ``self.loss_function(...)``; models that
transform the logits after the head (soft-capping, logit scaling) are refused,
since their loss would differ. This module never imports ``transformers``
itself and never changes the model's parameters or results, only where the
loss is computed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._errors import SoftmaxkitTypeError, SoftmaxkitValueError
from ._linear_ce import linear_cross_entropy

__all__ = ["apply_linear_cross_entropy", "remove_linear_cross_entropy"]

_ATTR = "_softmaxkit_linear_ce"
# config attributes of architectures whose logits are not lm_head(hidden) alone
_POSTPROCESSED = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier")


class _State:
    def __init__(self, model: nn.Module, head: nn.Linear, chunk_size: int | None) -> None:
        self.head = head
        self.chunk_size = chunk_size
        self.active = False  # labels were given to the current forward call
        self.want_logits = False
        self.used = False  # the current call's loss came from the hidden states
        self.hidden: torch.Tensor | None = None
        self.head_forward = head.forward
        self.had_loss_function = "_loss_function" in vars(model)
        self.loss_function: Any = model.loss_function
        self.handles: list[Any] = []


def apply_linear_cross_entropy(model: nn.Module, *, chunk_size: int | None = None) -> nn.Module:
    """Make a transformers causal LM compute its loss without the ``batch x seq x vocab`` logits.

    When the model is called with ``labels``, the output projection's input
    (the final hidden states) goes straight to
    :func:`softmaxkit.torch.linear_cross_entropy` with the labels shifted as
    transformers shifts them,

    .. math:: \\ell = \\frac{1}{|\\{i : y_{i+1} \\ne -100\\}|}
              \\sum_{i : y_{i+1} \\ne -100} -\\log\\operatorname{softmax}(W h_i + b)_{y_{i+1}},

    (a sum divided by ``num_items_in_batch`` when the caller passes it, as the
    ``Trainer`` does under gradient accumulation). ``output.logits`` is then
    ``None``, unless the call also passes ``return_logits=True``, which computes
    and returns them as usual (the loss still comes from the fused path). Calls
    without ``labels`` (evaluation, ``generate``) are untouched.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal LM whose output embedding (``get_output_embeddings()``) is an
        ``nn.Linear`` and whose logits are that layer's output unchanged.
    chunk_size : int, optional
        Passed to :func:`~softmaxkit.torch.linear_cross_entropy` (classes whose
        logits are held at once; ``None`` lets the tiles adapt to the problem).

    Returns
    -------
    model
        The same model, patched in place (undo with :func:`remove_linear_cross_entropy`).

    Raises
    ------
    SoftmaxkitTypeError
        If the model has no linear output embedding.
    SoftmaxkitValueError
        If the model post-processes its logits, or is already patched.

    Notes
    -----
    The loss and every parameter gradient equal the model's own within float32
    rounding; for a model in bfloat16 the loss is rounded to bfloat16 (the
    model's own upcasts its logits to float32 first). Labels must be passed by
    keyword, as the ``Trainer`` does.

    References
    ----------
    .. [1] E. Wijmans et al., "Cut your losses in large-vocabulary language
       models", ICLR 2025.

    Examples
    --------
    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from softmaxkit.torch.transformers import apply_linear_cross_entropy
    >>> cfg = GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    >>> model = apply_linear_cross_entropy(GPT2LMHeadModel(cfg))
    >>> ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(0))
    >>> out = model(input_ids=ids, labels=ids)
    >>> out.logits is None, out.loss.shape
    (True, torch.Size([]))
    """
    if getattr(model, _ATTR, None) is not None:
        msg = "the model already computes its loss with softmaxkit; patch it once"
        raise SoftmaxkitValueError(msg)
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if not isinstance(head, nn.Linear):
        msg = (
            f"{type(model).__name__} has no linear output embedding "
            "(get_output_embeddings() must return an nn.Linear); pass a transformers causal LM"
        )
        raise SoftmaxkitTypeError(msg)
    config = getattr(model, "config", None)
    for name in _POSTPROCESSED:
        if getattr(config, name, None) not in (None, 1, 1.0) or (
            name == "logit_scale" and hasattr(model, "logit_scale")
        ):
            msg = (
                f"{type(model).__name__} transforms its logits after the output layer "
                f"({name}); its loss cannot be computed from the hidden states alone"
            )
            raise SoftmaxkitValueError(msg)
    state = _State(model, head, chunk_size)

    def head_forward(hidden: torch.Tensor) -> torch.Tensor:
        if not state.active:
            return state.head_forward(hidden)  # type: ignore[no-any-return]
        state.hidden = hidden
        if state.want_logits:
            return state.head_forward(hidden)  # type: ignore[no-any-return]
        # a stand-in with the logits' shape and no memory; replaced by None in the output
        return hidden.new_zeros(()).expand(*hidden.shape[:-1], head.out_features)

    def pre_hook(module: nn.Module, args: Any, kwargs: dict[str, Any]) -> Any:
        state.want_logits = bool(kwargs.pop("return_logits", False))
        state.active = kwargs.get("labels") is not None or kwargs.get("shift_labels") is not None
        state.used = False
        state.hidden = None
        return args, kwargs

    def post_hook(module: nn.Module, args: Any, kwargs: dict[str, Any], output: Any) -> Any:
        skipped = state.active and not state.want_logits
        hidden, used = state.hidden, state.used
        state.active = state.used = False
        state.hidden = None
        if skipped and output is not None and hasattr(output, "logits"):
            if used or hidden is None:
                output.logits = None
            else:
                # the model asked for no loss after all (shift_labels without labels:
                # transformers computes the loss only with labels): its own output, the
                # logits the stand-in took the place of
                output.logits = state.head_forward(hidden)
        return output

    def loss_function(
        logits: torch.Tensor,
        labels: torch.Tensor | None,
        vocab_size: int,
        num_items_in_batch: torch.Tensor | int | None = None,
        ignore_index: int = -100,
        shift_labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        hidden = state.hidden
        if hidden is None:  # not a call we intercepted: the model's own loss
            return state.loss_function(  # type: ignore[no-any-return,operator]
                logits,
                labels,
                vocab_size,
                num_items_in_batch=num_items_in_batch,
                ignore_index=ignore_index,
                shift_labels=shift_labels,
                **kwargs,
            )
        state.used = True
        return causal_lm_loss(
            hidden,
            head,
            labels,
            num_items_in_batch=num_items_in_batch,
            ignore_index=ignore_index,
            shift_labels=shift_labels,
            chunk_size=state.chunk_size,
        )

    head.forward = head_forward  # type: ignore[method-assign,assignment]
    model.loss_function = loss_function  # type: ignore[assignment]
    state.handles = [
        model.register_forward_pre_hook(pre_hook, with_kwargs=True),
        model.register_forward_hook(post_hook, with_kwargs=True, always_call=True),
    ]
    setattr(model, _ATTR, state)
    return model


def causal_lm_loss(
    hidden: torch.Tensor,
    head: nn.Linear,
    labels: torch.Tensor | None,
    *,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = -100,
    shift_labels: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """transformers' ``ForCausalLMLoss`` on ``head(hidden)``, through linear_cross_entropy."""
    if shift_labels is None:
        if labels is None:
            msg = "`labels` or `shift_labels` is needed to compute the loss"
            raise SoftmaxkitValueError(msg)
        padded = nn.functional.pad(labels, (0, 1), value=ignore_index)
        shift_labels = padded[..., 1:]
    D = hidden.shape[-1]
    h = hidden.reshape(-1, D)
    y = shift_labels.reshape(-1).to(h.device)
    reduction = "sum" if num_items_in_batch is not None else "mean"
    loss = linear_cross_entropy(
        h,
        head.weight,
        y,
        linear_bias=head.bias,
        ignore_index=ignore_index,
        reduction=reduction,
        chunk_size=chunk_size,
    )
    loss = loss.float()
    if num_items_in_batch is not None:
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(loss.device)
        loss = loss / num_items_in_batch
    return loss


def remove_linear_cross_entropy(model: nn.Module) -> nn.Module:
    """Undo :func:`apply_linear_cross_entropy`: the model computes its own loss again.

    Examples
    --------
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from softmaxkit.torch.transformers import (
    ...     apply_linear_cross_entropy, remove_linear_cross_entropy)
    >>> cfg = GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    >>> model = remove_linear_cross_entropy(apply_linear_cross_entropy(GPT2LMHeadModel(cfg)))
    >>> hasattr(model, "_softmaxkit_linear_ce")
    False
    """
    state = getattr(model, _ATTR, None)
    if state is None:
        return model
    for h in state.handles:
        h.remove()
    del state.head.forward
    if state.had_loss_function:
        model.loss_function = state.loss_function
    else:
        del model._loss_function
    delattr(model, _ATTR)
    return model
