"""Public softmax cross-entropy and negative log-likelihood."""

from __future__ import annotations

from typing import Any

from . import _dispatch
from ._agnostic import _losses
from ._errors import SoftmaxkitTypeError, SoftmaxkitValueError
from ._namespace import call, dtype_kind, make_plan, numpy_scalars, resolve
from ._validation import (
    check_bool,
    check_class_axis,
    check_class_weight,
    check_ignore_index,
    check_index_target,
    check_label_smoothing,
    check_nonneg_float,
    check_prob_target,
    check_reduction,
    check_where,
)

__all__ = ["cross_entropy", "nll_loss"]

Array = Any


def cross_entropy(
    logits: Array,
    target: Array,
    /,
    *,
    axis: int = -1,
    weight: Array | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
    where: Array | None = None,
    return_grad: bool = False,
    precision: str = "accurate",
    threads: int | None = None,
) -> Array | tuple[Array, Array]:
    r"""Softmax cross-entropy between logits and class indices or class probabilities.

    For a class-index target ``t`` the loss of one item is

    .. math::

        \ell = -\log\operatorname{softmax}(x)_t
             = \operatorname{log1p}\bigl((c - 1) + s\bigr) + (a - x_t),

    with ``a``, ``c`` and ``s`` as in :func:`softmax`; a confident correct
    prediction keeps its tiny loss (``4.25e-18`` for logits ``[0, -40]`` and
    target 0, where PyTorch and optax return 0). For probability targets ``p``
    the loss is ``-sum_c p_c log softmax(x)_c`` with ``0 log 0 = 0``.

    Parameters
    ----------
    logits : array
        Unnormalised scores with the classes along ``axis``.
    target : array
        Either integer class indices with the shape of ``logits`` without its
        class axis, or (floating) probabilities with the shape of ``logits``, as
        in PyTorch. Integral floats with the index shape are accepted as indices.
    axis : int, optional
        The class axis. Default ``-1``; PyTorch's ``F.cross_entropy`` uses axis 1
        (use :mod:`softmaxkit.torch` for its exact conventions).
    weight : array of shape (n_classes,), optional
        Per-class weights. With index targets, ``"mean"`` divides by the summed
        weights of the counted items (PyTorch's weighted mean).
    ignore_index : int, optional
        Items whose target equals it have loss 0, gradient 0, and do not count in
        the mean. Only for index targets.
    label_smoothing : float in [0, 1], optional
        Mixes the target with the uniform distribution: ``(1 - eps) onehot + eps / K``
        over the ``K`` classes ``where`` leaves in (PyTorch, optax).
    z_loss : float, optional
        Adds ``z_loss * logsumexp(logits)**2`` per item (PaLM, T5X), which keeps
        the normaliser near 0.
    reduction : {"mean", "sum", "none"}, optional
        ``"none"`` returns one loss per item. A ``"mean"`` over no counted item is
        0 (PyTorch returns NaN).
    where : boolean array, optional
        Classes to include, broadcastable to ``logits``; an item whose classes are
        all excluded has loss 0 and is not counted.
    return_grad : bool, optional
        Also return the gradient of the returned loss with respect to ``logits``
        (for ``"none"``, of each item's loss), from the same pass.
    precision : {"accurate", "fast"}, optional
        See :func:`softmax`.
    threads : int, optional
        Worker threads of the native CPU kernels; see :func:`softmax`.

    Returns
    -------
    loss : array
        Scalar for ``"mean"``/``"sum"``, the item shape for ``"none"``.
    grad : array
        Only with ``return_grad``: same shape and dtype as ``logits``.

    See Also
    --------
    nll_loss : the same loss from log-probabilities.
    binary_cross_entropy_with_logits : for binary and multi-label problems.

    Notes
    -----
    The gradient is ``w_t [(1 - eps)(softmax(x) - onehot) + 2 z lse softmax(x)]``
    plus the smoothing term, with ``1 - softmax(x)_t`` computed as
    ``(D - e_t) / D`` so it stays exact when the prediction is confident.

    With probability targets, ``u_j = w_j ((1 - eps) q_j + eps / C)``, the loss is
    ``sum_j u_j (lse - x_j) + z lse**2`` and its gradient ``r (A p_j - u_j)`` with
    ``A = sum_j u_j + 2 z lse`` and ``r`` the reduction's scale. The accurate mode
    rounds both correctly, forming the elements where the two terms cancel again in
    double-word. ``precision="fast"`` makes one pass of float32 exponentials over each
    float32 row (float64 sums, the row's maxima kept apart from the rest, so a
    dominant logit's tiny loss keeps its digits) and one more for the gradient: items
    within 3 ulp, gradient elements within ``4 * 2**-24`` of ``r (|A| p_j + u_j)``.

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham, N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.
    .. [2] R. Müller, S. Kornblith, G. Hinton, "When does label smoothing help?",
       NeurIPS 2019.
    .. [3] A. Chowdhery et al., "PaLM: Scaling language modeling with pathways",
       JMLR 24 (2023) (z-loss).

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit as sk
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
    >>> round(float(sk.cross_entropy(logits, np.array([0, 1]))), 4)
    0.3185
    >>> sk.cross_entropy(logits, np.array([0, 1]), reduction="none").round(4)
    array([0.417, 0.22 ])
    >>> loss, grad = sk.cross_entropy(logits, np.array([0, 1]), return_grad=True)
    >>> grad.round(3)
    array([[-0.17 ,  0.121,  0.049],
           [ 0.054, -0.099,  0.044]])
    >>> float(sk.cross_entropy(np.array([[0.0, -40.0]], dtype=np.float32), np.array([0])))
    4.24835413113866e-18
    """
    quick = _dispatch.quick_cross_entropy(
        logits, target, axis, weight, ignore_index, label_smoothing, z_loss, reduction, where,
        return_grad, precision, threads,
    )  # fmt: skip
    if quick is not None:
        return quick
    xp, (la, ta, wa, ma) = resolve(
        logits, target, weight, where, names=("logits", "target", "weight", "where"), required=2
    )
    plan = make_plan(xp, la, precision, name="logits")
    ax = check_class_axis(axis, la.ndim)
    C = int(la.shape[ax])
    batch_shape = tuple(s for i, s in enumerate(la.shape) if i != ax)
    red = check_reduction(reduction)
    eps = check_label_smoothing(label_smoothing)
    z = check_nonneg_float(z_loss, "z_loss")
    return_grad = check_bool(return_grad, "return_grad")
    ign = check_ignore_index(ignore_index)
    mask = check_where(xp, ma, tuple(la.shape))
    w = check_class_weight(xp, wa, C)
    kind = dtype_kind(xp, ta.dtype)
    is_index = kind in ("int", "bool") or (
        kind in ("float", "half") and tuple(ta.shape) == batch_shape and ta.ndim != la.ndim
    )
    if is_index:
        ta = check_index_target(xp, ta, batch_shape, C, ign)
    elif kind in ("float", "half"):
        if ign is not None:
            msg = (
                "`ignore_index` applies to class-index targets only; with probability "
                "targets, mask items with `where` or give them zero probability"
            )
            raise SoftmaxkitValueError(msg)
        ta = check_prob_target(xp, ta, tuple(la.shape))
    else:
        msg = f"`target` must be integer class indices or float probabilities, got dtype {ta.dtype}"
        raise SoftmaxkitTypeError(msg)
    nthreads = _dispatch.check_threads(threads)
    res = _dispatch.cross_entropy(
        la,
        ta,
        axis=ax,
        target_is_index=is_index,
        weight=w,
        ignore_index=ign,
        label_smoothing=eps,
        z_loss=z,
        reduction=red,
        where=mask,
        return_grad=return_grad,
        plan=plan,
        threads=nthreads,
    )
    if res is not None:
        return numpy_scalars(xp, res)  # type: ignore[no-any-return]
    res = call(
        xp,
        _losses.cross_entropy,
        {"logits": la, "target": ta, "weight": w, "where": mask},
        {
            "axis": ax,
            "target_is_index": is_index,
            "ignore_index": ign,
            "label_smoothing": eps,
            "z_loss": z,
            "reduction": red,
            "return_grad": return_grad,
            "plan": plan,
        },
    )
    return numpy_scalars(xp, res)  # type: ignore[no-any-return]


def nll_loss(
    log_probs: Array,
    target: Array,
    /,
    *,
    axis: int = -1,
    weight: Array | None = None,
    ignore_index: int | None = None,
    reduction: str = "mean",
    precision: str = "accurate",
) -> Array:
    r"""Negative log-likelihood of class indices under given log-probabilities.

    .. math:: \ell = -w_t \log p_t

    Pair it with :func:`log_softmax`; ``nll_loss(log_softmax(x), t)`` equals
    ``cross_entropy(x, t)``.

    Parameters
    ----------
    log_probs : array
        Log-probabilities with the classes along ``axis``.
    target : integer array
        Class indices, the shape of ``log_probs`` without its class axis.
    axis : int, optional
        The class axis (default ``-1``; PyTorch uses 1).
    weight : array of shape (n_classes,), optional
        Per-class weights; ``"mean"`` divides by the summed weights of the counted
        items.
    ignore_index : int, optional
        Items with this target are skipped (loss 0, not counted).
    reduction : {"mean", "sum", "none"}, optional
        A ``"mean"`` over no counted item is 0.
    precision : {"accurate", "fast"}, optional
        Accepted for a uniform signature; the sum is taken in the working dtype.

    Returns
    -------
    array
        The reduced loss, or one loss per item for ``"none"``.

    See Also
    --------
    cross_entropy

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit as sk
    >>> lp = sk.log_softmax(np.array([[2.0, 1.0, 0.1]]))
    >>> round(float(sk.nll_loss(lp, np.array([0]))), 4)
    0.417
    """
    quick = _dispatch.quick_nll_loss(
        log_probs, target, axis, weight, ignore_index, reduction, precision
    )
    if quick is not None:
        return quick
    xp, (la, ta, wa) = resolve(
        log_probs, target, weight, names=("log_probs", "target", "weight"), required=2
    )
    plan = make_plan(xp, la, precision, name="log_probs")
    ax = check_class_axis(axis, la.ndim)
    C = int(la.shape[ax])
    batch_shape = tuple(s for i, s in enumerate(la.shape) if i != ax)
    red = check_reduction(reduction)
    ign = check_ignore_index(ignore_index)
    w = check_class_weight(xp, wa, C)
    ta = check_index_target(xp, ta, batch_shape, C, ign)
    res = call(
        xp,
        _losses.nll_loss,
        {"log_probs": la, "target": ta, "weight": w},
        {"axis": ax, "ignore_index": ign, "reduction": red, "plan": plan},
    )
    return numpy_scalars(xp, res)  # type: ignore[no-any-return]
