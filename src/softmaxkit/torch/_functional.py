"""Functional ops with PyTorch's names and argument conventions."""

from __future__ import annotations

import math

import torch

import softmaxkit as sk

from .._errors import SoftmaxkitTypeError, SoftmaxkitValueError
from .._validation import signed_weights
from . import _checks as chk
from . import _eager
from . import _engine as E
from ._ops import (
    bce_with_logits_op,
    cross_entropy_op,
    log_softmax_op,
    logsumexp_op,
    nll_loss_op,
    softmax_op,
)

__all__ = [
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "log_softmax",
    "logsumexp",
    "nll_loss",
    "softmax",
]


def _wants_grad(*ts: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


def _traced(x: torch.Tensor) -> bool:
    """Whether the call must go through the ``torch.library`` operators.

    Under ``torch.compile`` (and for tensor subclasses or meta tensors, which
    need the operators' fake implementations) the operators run; ordinary eager
    calls take the cheaper ``autograd.Function`` route with the same results.
    """
    return torch.compiler.is_compiling() or type(x) is not torch.Tensor or x.is_meta


def _functorch() -> bool:
    """Whether a torch.func transform (vmap, grad, jacrev, ...) is active.

    Its tensors are wrappers without storage, which neither the C core nor this
    layer's autograd Functions can take; the public ops (:mod:`softmaxkit`) run on
    them through torch operations that the transforms compose with, with the same
    contract: the layer has checked the arguments' metadata, and the public ops check
    their values on the tensors under the transform's wrappers
    (``_validation.checked``), with torch's rule for weights (any finite weight).
    """
    return bool(torch._C._are_functorch_transforms_active())


_PLAIN_CODE = {torch.float32: 0, torch.float64: 1}


def _plain_normalize(x: object, dim: object, dtype: object, log: bool) -> torch.Tensor | None:
    """The everyday eager call, checked in a few attribute reads, or None for the general route.

    ``softmax(logits, dim=-1)`` on a contiguous, non-empty CPU float32/float64 tensor
    that needs no gradient, outside ``torch.compile`` and functorch transforms: every
    check of the general route is settled here, and it reaches the same engine
    function, so the results are bitwise the same.
    """
    if not (dtype is None and type(x) is torch.Tensor and type(dim) is int):
        return None
    nd = x.dim()
    code = _PLAIN_CODE.get(x.dtype)
    try:
        if (
            code is None
            or torch.compiler.is_compiling()  # first: dynamo cannot trace is_neg()
            or nd == 0
            or (dim != -1 and dim != nd - 1)
            or not x.is_cpu
            or (x.requires_grad and torch.is_grad_enabled())
            or not x.is_contiguous()  # raises for sparse layouts: the general route names them
            or x.is_neg()
            or not (size := x.numel())
            or torch._C._are_functorch_transforms_active()
            or not E.native_unforced()  # with the checks above: E.engine_for(x) == E.NATIVE
        ):
            return None
    except RuntimeError:
        return None
    return E.softmax_plain(x, code, log, size)


def _normalize(x: torch.Tensor, dims: list[int], log: bool) -> torch.Tensor:
    if _functorch():
        return (sk.log_softmax if log else sk.softmax)(x, axis=tuple(dims))  # type: ignore[no-any-return]
    if _traced(x):
        return (log_softmax_op if log else softmax_op)(x, dims)
    if _wants_grad(x):
        return _eager.apply(_eager.LogSoftmax if log else _eager.Softmax, x, dims, log)  # type: ignore[no-any-return]
    return E.softmax_fwd(x, dims, log)


def softmax(input: torch.Tensor, dim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    r"""Softmax along ``dim``, as ``torch.softmax`` but with a defined answer for every input.

    .. math::

        \operatorname{softmax}(x)_i = \frac{e^{x_i - a}}{\sum_j e^{x_j - a}},
        \qquad a = \max_j x_j

    Parameters
    ----------
    input : Tensor
        Logits, any shape, device and floating dtype (integers are promoted to
        the default dtype, where ``torch.softmax`` raises).
    dim : int
        The dimension that sums to one.
    dtype : torch.dtype, optional
        Cast ``input`` to this dtype first (as in torch).

    Returns
    -------
    Tensor
        Probabilities with the shape, dtype and device of ``input``.

    See Also
    --------
    log_softmax, softmaxkit.softmax

    Notes
    -----
    Differences from ``torch.softmax``: a row whose entries are all ``-inf`` is 0
    (torch: NaN); ``+inf`` entries share the mass equally (torch: NaN); float32
    is correctly rounded (computed in float64). Gradients are 0 on such rows, never
    NaN. CPU float32/float64 tensors run on the softmaxkit core without a copy.

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham, N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> skt.softmax(torch.tensor([2.0, 1.0, 0.1]), dim=0)
    tensor([0.6590, 0.2424, 0.0986])
    >>> skt.softmax(torch.tensor([[-float("inf"), -float("inf")], [float("inf"), 0.0]]), dim=1)
    tensor([[0., 0.],
            [1., 0.]])
    """
    fast = _plain_normalize(input, dim, dtype, False)
    if fast is not None:
        return fast
    x = chk.float_input(input, promote_int=True, dtype=dtype)
    if x.dim() == 0:
        chk.norm_dim(dim, 0)
        return _normalize(x.reshape(1), [0], False).reshape(())
    return _normalize(x, [chk.norm_dim(dim, x.dim())], False)


def log_softmax(input: torch.Tensor, dim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    r"""Log-softmax along ``dim`` without cancellation: ``(x - a) - log1p(s)``.

    .. math::

        \log\operatorname{softmax}(x)_i = (x_i - a) - \operatorname{log1p}\bigl((c - 1) + s\bigr)

    with ``a`` the row maximum, ``c`` the number of entries equal to it and
    ``s`` the sum of the other ``exp(x_j - a)``.

    Parameters
    ----------
    input : Tensor
        Logits (see :func:`softmax`).
    dim : int
        The normalised dimension.
    dtype : torch.dtype, optional
        Cast ``input`` to this dtype first.

    Returns
    -------
    Tensor
        Log-probabilities, same shape, dtype and device.

    See Also
    --------
    softmax, cross_entropy

    Notes
    -----
    Keeps the tiny log-probability of a dominant logit:
    ``log_softmax([0, -40])[0]`` is ``-4.2484e-18`` in float32 where torch returns
    0. A row of ``-inf`` gives ``-inf`` (torch: NaN); ``k`` entries at ``+inf``
    give ``-log k`` there and ``-inf`` elsewhere (torch: NaN).

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> x = torch.tensor([0.0, -40.0])
    >>> skt.log_softmax(x, dim=0)[0].item()
    -4.24835413113866e-18
    >>> torch.log_softmax(x, dim=0)[0].item()
    0.0
    """
    fast = _plain_normalize(input, dim, dtype, True)
    if fast is not None:
        return fast
    x = chk.float_input(input, promote_int=True, dtype=dtype)
    if x.dim() == 0:
        chk.norm_dim(dim, 0)
        return _normalize(x.reshape(1), [0], True).reshape(())
    return _normalize(x, [chk.norm_dim(dim, x.dim())], True)


def logsumexp(
    input: torch.Tensor, dim: int | tuple[int, ...] | list[int], keepdim: bool = False
) -> torch.Tensor:
    r"""``log(sum(exp(input)))`` over ``dim``, exact when one term dominates.

    .. math:: \operatorname{logsumexp}(x) = a + \operatorname{log1p}\bigl((c - 1) + s\bigr)

    Parameters
    ----------
    input : Tensor
        Values, any floating dtype (integers are promoted, as in torch).
    dim : int or tuple of ints
        The dimension(s) to reduce.
    keepdim : bool, optional
        Keep the reduced dimensions with size 1.

    Returns
    -------
    Tensor
        The reduced tensor, in the dtype of ``input``.

    Notes
    -----
    float16 and bfloat16 are summed in a wide dtype: a float16 logsumexp of
    ``1e5`` zeros is 11.51, where torch returns ``inf``. The gradient of an
    all ``-inf`` row is 0 (torch: NaN).

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> skt.logsumexp(torch.tensor([0.0, -40.0]), dim=0).item()
    4.24835413113866e-18
    >>> skt.logsumexp(torch.zeros(100_000, dtype=torch.float16), dim=0)
    tensor(11.5156, dtype=torch.float16)
    """
    x = chk.float_input(input, promote_int=True)
    if not isinstance(keepdim, bool):
        msg = f"`keepdim` must be True or False, got {keepdim!r}"
        raise SoftmaxkitTypeError(msg)
    if x.dim() == 0:
        if not (isinstance(dim, (tuple, list)) and not dim):  # torch takes dim=() here
            chk.norm_dims(dim, 0)
        return _logsumexp(x.reshape(1), [0], keepdim).reshape(())
    return _logsumexp(x, chk.norm_dims(dim, x.dim()), keepdim)


def _logsumexp(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    if _functorch():
        return sk.logsumexp(x, axis=tuple(dims), keepdims=keepdim)  # type: ignore[return-value]
    if _traced(x):
        return logsumexp_op(x, dims, keepdim)
    if _wants_grad(x):
        return _eager.apply(_eager.LogSumExp, x, dims, keepdim)  # type: ignore[no-any-return]
    return E.logsumexp_fwd(x, dims, keepdim)


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
) -> torch.Tensor:
    r"""Cross-entropy between logits and class indices or class probabilities (torch layout).

    For a class-index target ``t`` of one item,

    .. math:: \ell = w_t\bigl[(1 - \varepsilon)(\operatorname{lse}(x) - x_t)
              + z\,\operatorname{lse}(x)^2\bigr]
              + \frac{\varepsilon}{C}\sum_c w_c\,(\operatorname{lse}(x) - x_c),

    computed as ``log1p(s) + (a - x_t)`` so nothing cancels.

    Parameters
    ----------
    input : Tensor
        Logits of shape ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dK)``: the class
        dimension is 1 (0 for a single sample), as in ``torch.nn.functional``.
    target : Tensor
        Integer class indices of shape ``()``, ``(N,)`` or ``(N, d1, ..., dK)``, or
        floating class probabilities with the shape of ``input``.
    weight : Tensor of shape (C,), optional
        Per-class weights; the ``"mean"`` of index targets divides by the summed
        weights of the counted items (torch's weighted mean).
    ignore_index : int, optional
        Index targets equal to it have loss 0, gradient 0 and do not count in the
        mean. Default -100. With probability targets it must be negative (it has no
        class to match), as torch requires.
    reduction : {"mean", "sum", "none"}, optional
        ``"none"`` returns the item shape.
    label_smoothing : float in [0, 1], optional
        Target ``(1 - eps) onehot + eps / C``.
    z_loss : float, optional
        Adds ``z_loss * lse**2`` per item (PaLM); not in torch.

    Returns
    -------
    Tensor
        Scalar for ``"mean"`` and ``"sum"``, the item shape for ``"none"``.

    See Also
    --------
    nll_loss, linear_cross_entropy, softmaxkit.cross_entropy

    Notes
    -----
    The arguments after ``weight`` are keyword-only (torch also accepts the
    deprecated ``size_average``/``reduce`` positionally). Differences from
    ``torch.nn.functional.cross_entropy``:

    * a ``"mean"`` over no counted item (everything ignored, or an empty batch)
      is 0, where torch returns NaN;
    * a row of ``-inf`` logits is not counted and contributes 0 (torch: NaN); a
      row with ``+inf`` logits takes the limit (``log k`` when the target is one
      of ``k`` infinite logits, ``inf`` otherwise; torch: NaN);
    * a class with zero target probability contributes 0 even at a ``-inf``
      logit (torch: NaN);
    * the loss of a confident correct prediction keeps its digits (``4.2e-18``
      for logits ``[0, -40]``, torch: 0);
    * probability targets must be non-negative (torch does not check);
    * any integer dtype is accepted for class indices (torch wants int64).

    The gradient is computed in the same pass as the loss when ``input``
    requires grad. Gradients with respect to probability targets are supported;
    with respect to ``weight`` they are not (as in torch).

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> logits = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
    >>> skt.cross_entropy(logits, torch.tensor([0, 1]))
    tensor(0.3185)
    >>> skt.cross_entropy(logits, torch.tensor([-100, -100]))  # torch: nan
    tensor(0.)
    """
    fast = _plain_ce(input, target, weight, ignore_index, reduction, label_smoothing, z_loss)
    if fast is None:
        fast = _plain_prob_ce(input, target, weight, ignore_index, reduction, label_smoothing,
                              z_loss)  # fmt: skip
    if fast is not None:
        return fast
    x = chk.float_input(input, promote_int=False)
    dim = chk.class_dim(x)
    if isinstance(target, torch.Tensor) and target.is_floating_point():
        # torch's type promotion: float64 probabilities (or class weights with
        # probabilities) give a float64 loss
        wide = torch.promote_types(x.dtype, target.dtype)
        if isinstance(weight, torch.Tensor) and weight.is_floating_point():
            wide = torch.promote_types(wide, weight.dtype)
        if wide != x.dtype:
            x = x.to(wide)
    t, prob = chk.index_or_prob_target(target, x, dim, allow_prob=True)
    w = chk.opt_tensor(weight, x, "weight", (x.shape[dim],))
    red = chk.check_reduction(reduction)
    eps = chk.check_label_smoothing(label_smoothing)
    z = chk.check_nonneg_float(z_loss, "z_loss")
    ign = chk.int_arg(ignore_index, "ignore_index")
    if prob and ign >= 0:
        msg = (
            f"`ignore_index`={ign} names a class, but `target` holds probabilities (a float "
            "tensor), which have no class index to ignore; leave `ignore_index` at its "
            "default -100, or pass class indices (as in torch, which raises here too)"
        )
        raise SoftmaxkitValueError(msg)
    if w is not None and w.requires_grad and _wants_grad(w):
        # torch differentiates the weight with probability targets, not with class indices
        also = "" if prob else " (nor in torch with class-index targets)"
        msg = f"gradients with respect to `weight` are not supported{also}; detach it"
        raise SoftmaxkitValueError(msg)
    if _functorch():
        with signed_weights():
            return sk.cross_entropy(  # type: ignore[return-value]
                x, t, axis=dim, weight=w, ignore_index=None if prob else ign, reduction=red,
                label_smoothing=eps, z_loss=z,
            )  # fmt: skip
    if _traced(x):
        loss, _ = cross_entropy_op(x, t, w, dim, ign, red, eps, z, prob, _wants_grad(x))
        return loss
    if _wants_grad(x, t):
        return _eager.apply(_eager.CrossEntropy, x, t, w, dim, ign, red, eps, z, prob)  # type: ignore[no-any-return]
    return E.cross_entropy_fwd(x, t, w, dim, ign, red, eps, z, prob, False)[0]


_PLAIN_DTYPES = (torch.float32, torch.float64)
_ZERO_TYPES = (float, int)
_REDUCTIONS = ("mean", "sum", "none")
# _plain_ce has checked that no functorch transform is active: Function.apply's
# Python layer has nothing to do
_PLAIN_CE_APPLY = _eager._FAST[_eager.PlainCrossEntropy]
_BCE_APPLY = _eager._FAST[_eager.BCEWithLogits]


def _plain_ce(
    x: object,
    t: object,
    weight: object,
    ign: object,
    reduction: object,
    eps: object,
    z: object,
) -> torch.Tensor | None:
    """The everyday call, checked in a few attribute reads, or None for the general route.

    A training loop's ``cross_entropy(logits, labels)``: a contiguous CPU float32
    or float64 ``(N, C)`` tensor, contiguous int64 labels ``(N,)``, no class
    weights, label smoothing in ``[0, 1]`` (a float or int), no z-loss, eager (no
    ``torch.compile``, no functorch transform).
    Everything the general route validates is settled by these checks (the label
    range is checked by the C core), and it reaches the same engine arithmetic, so
    the results are bitwise the same. Without label smoothing the C core reads
    the tensors in place (:func:`._engine.plain_ce`).
    """
    if not (
        weight is None
        and type(x) is torch.Tensor
        and type(t) is torch.Tensor
        and type(ign) is int
        and -(2**63) <= ign < 2**63  # the general route names others
        and type(reduction) is str
        and reduction in _REDUCTIONS
        and type(eps) in _ZERO_TYPES
        and 0 <= eps <= 1  # type: ignore[operator]  # NaN fails: the general route names it
        and type(z) in _ZERO_TYPES
        and z == 0
    ):
        return None
    xs = x.shape
    try:
        if not (
            not torch.compiler.is_compiling()  # first: dynamo cannot trace is_neg()
            and len(xs) == 2
            and xs[1] > 0
            and x.dtype in _PLAIN_DTYPES
            and t.dtype is torch.int64
            and len(ts := t.shape) == 1
            and ts[0] == xs[0]
            and x.is_cpu
            and t.is_cpu
            and x.is_contiguous()  # raises for sparse layouts: the general route names them
            and t.is_contiguous()  # False for sparse targets
            and not x.is_neg()  # a negated view: its memory holds -x
            and not torch._C._are_functorch_transforms_active()
            and E.native_unforced()  # with the checks above: E.engine_for(x) == E.NATIVE
        ):
            return None
    except RuntimeError:
        return None
    grad = x.requires_grad and torch.is_grad_enabled()
    if eps == 0 and xs[0]:
        if grad:
            return _PLAIN_CE_APPLY(x, t, ign, reduction)  # type: ignore[no-any-return]
        return E.plain_ce(x, t, ign, reduction, False)[0]
    e = float(eps)  # type: ignore[arg-type]
    if grad:
        return _eager.apply(_eager.CrossEntropy, x, t, None, 1, ign, reduction, e, 0.0, False)  # type: ignore[no-any-return]
    return E.cross_entropy_fwd(x, t, None, 1, ign, reduction, e, 0.0, False, False)[0]


def _plain_prob_ce(
    x: object,
    t: object,
    weight: object,
    ign: object,
    reduction: object,
    eps: object,
    z: object,
) -> torch.Tensor | None:
    """:func:`_plain_ce` for probability targets (distillation, soft labels): a
    contiguous CPU float32 ``(N, C)`` tensor and float32 targets of its shape that need
    no gradient, no class weights, label smoothing in ``[0, 1]`` and a finite z-loss
    ``>= 0``, eager; None for anything else. These checks settle what the general
    route validates but the targets' values, which the C core checks as it reads them
    (:func:`._engine.cross_entropy_fwd` names a bad one), and the route is the general
    one's from there on: the same bits. A 32x10 forward drops from about 100 us to 25
    on the project's AVX2 EPYC."""
    if not (
        weight is None
        and type(x) is torch.Tensor
        and type(t) is torch.Tensor
        and type(ign) is int
        and -(2**63) <= ign < 0  # >= 0 names a class; the general route says why that is wrong
        and type(reduction) is str
        and reduction in _REDUCTIONS
        and type(eps) in _ZERO_TYPES
        and 0 <= eps <= 1  # type: ignore[operator]  # NaN fails: the general route names it
        and type(z) in _ZERO_TYPES
        and 0 <= z < math.inf  # type: ignore[operator]
    ):
        return None
    xs = x.shape
    try:
        if not (
            not torch.compiler.is_compiling()
            and len(xs) == 2
            and xs[0] > 0
            and xs[1] > 0
            and x.dtype is torch.float32
            and t.dtype is torch.float32
            and t.shape == xs
            and x.is_cpu
            and t.is_cpu
            and x.is_contiguous()
            and t.is_contiguous()
            and not x.is_neg()
            and not t.is_neg()
            and not (t.requires_grad and torch.is_grad_enabled())
            and not torch._C._are_functorch_transforms_active()
            and E.native_unforced()
        ):
            return None
    except RuntimeError:
        return None
    e, zz = float(eps), float(z)  # type: ignore[arg-type]
    if x.requires_grad and torch.is_grad_enabled():
        return _eager.apply(_eager.CrossEntropy, x, t, None, 1, ign, reduction, e, zz, True)  # type: ignore[no-any-return]
    return E.cross_entropy_fwd(x, t, None, 1, ign, reduction, e, zz, True, False)[0]


def nll_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Negative log-likelihood of class indices: ``-w_t input[t]`` per item (torch layout).

    Parameters
    ----------
    input : Tensor
        Log-probabilities of shape ``(C,)``, ``(N, C)`` or ``(N, C, d1, ...)``.
    target : Tensor
        Integer class indices, the shape of ``input`` without dimension 1.
    weight : Tensor of shape (C,), optional
        Per-class weights; ``"mean"`` divides by the summed weights of the counted
        items.
    ignore_index : int, optional
        Targets equal to it are skipped. Default -100.
    reduction : {"mean", "sum", "none"}, optional
        A ``"mean"`` over no counted item is 0 (torch: NaN).

    Returns
    -------
    Tensor
        The reduced loss, or the item shape for ``"none"``.

    See Also
    --------
    cross_entropy, log_softmax

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> lp = skt.log_softmax(torch.tensor([[2.0, 1.0, 0.1]]), dim=1)
    >>> skt.nll_loss(lp, torch.tensor([0]))
    tensor(0.4170)
    """
    x = chk.float_input(input, promote_int=False)
    dim = chk.class_dim(x)
    t, _ = chk.index_or_prob_target(target, x, dim, allow_prob=False)
    w = chk.opt_tensor(weight, x, "weight", (x.shape[dim],))
    red = chk.check_reduction(reduction)
    ign = chk.int_arg(ignore_index, "ignore_index")
    if w is not None and w.requires_grad and _wants_grad(w):
        msg = "gradients with respect to `weight` are not supported (nor in torch); detach it"
        raise SoftmaxkitValueError(msg)
    if _functorch():
        with signed_weights():
            return sk.nll_loss(x, t, axis=dim, weight=w, ignore_index=ign, reduction=red)
    if _traced(x):
        return nll_loss_op(x, t, w, dim, ign, red)
    if _wants_grad(x):
        return _eager.apply(_eager.NLLLoss, x, t, w, dim, ign, red)  # type: ignore[no-any-return]
    return E.nll_fwd(x, t, w, dim, ign, red)


def binary_cross_entropy_with_logits(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    reduction: str = "mean",
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Binary cross-entropy on logits, exact for large ``|x|``.

    .. math::

        \ell = w\,\bigl[p_w\, y \operatorname{softplus}(-x)
                 + (1 - y)\operatorname{softplus}(x)\bigr]

    Parameters
    ----------
    input : Tensor
        Logits, any shape.
    target : Tensor
        Targets in ``[0, 1]`` with the shape of ``input``.
    weight : Tensor, optional
        Elementwise weights broadcastable to ``input``.
    reduction : {"mean", "sum", "none"}, optional
        ``"mean"`` averages over all elements.
    pos_weight : Tensor, optional
        Weight of the positive term, broadcast along the last dimension.

    Returns
    -------
    Tensor
        The reduced loss, or one loss per element for ``"none"``.

    Notes
    -----
    Differences from torch: the loss at ``x = -40, y = 0`` is ``4.2e-18`` (torch
    float32: 0); infinite logits give their limits (``x = +inf, y = 1`` and
    ``x = -inf, y = 0`` give 0, torch: NaN); targets outside ``[0, 1]`` raise; with
    input and target of different floating dtypes the loss takes the wider one
    (torch: the target's, so float64 logits with a float32 target lose their digits).

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> x = torch.tensor([2.0, -1.0, 0.5])
    >>> skt.binary_cross_entropy_with_logits(x, torch.tensor([1.0, 0.0, 1.0]))
    tensor(0.3048)
    """
    if (
        not torch.compiler.is_compiling()
        and weight is None
        and pos_weight is None
        and type(input) is torch.Tensor
        and type(target) is torch.Tensor
        and input.layout is torch.strided
        and target.layout is torch.strided
        and input.dtype in _PLAIN_DTYPES
        and target.dtype is input.dtype
        and target.shape == input.shape
        and type(reduction) is str
        and reduction in _REDUCTIONS
        and input.is_cpu
        and target.is_cpu  # another device: the general checks name it
        and not input.is_neg()  # negated views: tensor_arg resolves them
        and not target.is_neg()
        and not torch._C._are_functorch_transforms_active()
    ):
        # the everyday call: nothing the checks below could reject (the targets' range
        # is checked by the engine, which sends a bad one to the general checks)
        if _wants_grad(input, target):  # no functorch transform: Function.apply's C entry
            return _BCE_APPLY(input, target, None, None, reduction)  # type: ignore[no-any-return]
        return E.bce_fwd(input, target, None, None, reduction, False)[0]
    x = chk.float_input(input, promote_int=False)
    t = chk.tensor_arg(target, "target")
    if tuple(t.shape) != tuple(x.shape):
        msg = (
            f"`target` has shape {tuple(t.shape)} but `input` has shape {tuple(x.shape)}; "
            "they must match"
        )
        raise SoftmaxkitValueError(msg)
    if t.dtype == torch.bool or t.is_complex():
        msg = f"`target` must be a real tensor of values in [0, 1], got {t.dtype}"
        raise SoftmaxkitTypeError(msg)
    if t.is_floating_point() and (wide := torch.promote_types(x.dtype, t.dtype)) != x.dtype:
        # the wider of the two dtypes: torch's loss takes the target's dtype, which
        # narrows float64 logits with a float32 target to a float32 loss
        x = x.to(wide)
    tt = chk.opt_tensor(t, x, "target")
    assert tt is not None
    w = chk.opt_tensor(weight, x, "weight")
    pw = chk.opt_tensor(pos_weight, x, "pos_weight")
    for name, arr in (("weight", w), ("pos_weight", pw)):
        if arr is None:
            continue
        if arr.requires_grad and torch.is_grad_enabled():
            msg = f"gradients with respect to `{name}` are not supported; detach it"
            raise SoftmaxkitValueError(msg)
        try:
            fits = torch.broadcast_shapes(arr.shape, x.shape) == x.shape
        except RuntimeError:
            fits = False
        if not fits:
            msg = (
                f"`{name}` has shape {tuple(arr.shape)}, which does not broadcast to "
                f"input's {tuple(x.shape)}"
            )
            raise SoftmaxkitValueError(msg)
    red = chk.check_reduction(reduction)
    if _functorch():
        with signed_weights():
            return sk.binary_cross_entropy_with_logits(  # type: ignore[return-value]
                x, tt, weight=w, pos_weight=pw, reduction=red
            )
    if _traced(x):
        loss, _ = bce_with_logits_op(x, tt, w, pw, red, _wants_grad(x))
        return loss
    if _wants_grad(x, tt):
        return _eager.apply(_eager.BCEWithLogits, x, tt, w, pw, red)  # type: ignore[no-any-return]
    return E.bce_fwd(x, tt, w, pw, red, False)[0]
