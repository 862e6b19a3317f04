"""Keras 3 cross-entropy losses with Keras's names, arguments, reductions and serialisation.

``CategoricalCrossentropy``, ``SparseCategoricalCrossentropy`` and
``BinaryCrossentropy`` take the arguments of their Keras namesakes and give the
same values wherever Keras is right. With ``from_logits=True`` the per-item loss
comes from the active backend's softmaxkit path (:mod:`._backends`); with
probabilities (``from_logits=False``) Keras's own clipped formula is used,
unchanged. This module only arranges labels, smoothing, masks and reductions; it
must never compute a softmax or logarithm of logits itself.

What differs from Keras 3.15, on purpose:

* **Class count in categorical smoothing.** ``y (1 - eps) + eps / C`` with ``C``
  the size of ``axis``; Keras uses the last axis's size even when ``axis`` is
  another one (tensorflow#127249).
* **Exact labels.** Sparse labels are never cast to the loss dtype: under
  ``dtype="float16"`` Keras turns label 2049 into 2048 (bfloat16: above 256).
* **The dominant-logit tail.** A confident correct prediction has loss
  ``4.248e-18`` for logits ``[0, -40]``, where Keras returns 0 (TF) or -0.
* **Special values.** All ``-inf`` rows give loss 0 (Keras: NaN); ``+inf``
  logits take their limits.
* **Label smoothing for sparse labels**, as in keras PR #23488 (after 3.15.1):
  ``(1 - eps) onehot + eps / C``, applied before ``ignore_class``.
* **Empty batches** reduce to 0 (Keras returns an empty tensor of shape (0,)).
* **Bad labels** raise a softmaxkit error eagerly on every backend, with logits or
  probabilities (Keras: an error on TF and torch, a silent -0 on JAX; with
  probabilities a silent -0 on TF and JAX). Inside compiled functions the item's
  loss is NaN (TF backend, and probabilities on every backend) or per the
  backend's softmaxkit path.
* **A scalar ``sample_weight`` under ``'mean_with_sample_weight'``** weighs every
  item alike, so the loss is the plain mean, as with ``sample_weight=None`` or a
  per-item weight of that value. Keras 3.15 divides ``sum(w l)`` by the scalar
  ``w`` itself, not by ``w`` times the number of items, and so returns the *sum*
  of the losses for any scalar (or shape ``(1,)``) weight, even 1.0: a mean that
  depends on whether a constant weight is broadcast by the caller is a bug, not
  a semantics to copy. (With ``ignore_class`` or a Keras mask Keras broadcasts
  the weight, and agrees.)
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import keras
import numpy as np
from keras import ops

from .._errors import SoftmaxkitTypeError, SoftmaxkitValueError
from .._validation import check_axes, check_label_smoothing
from ._backends import current, to_tensor

__all__ = ["BinaryCrossentropy", "CategoricalCrossentropy", "SparseCategoricalCrossentropy"]

Tensor = Any

REDUCTIONS = ("sum_over_batch_size", "mean", "sum", "mean_with_sample_weight", "none", None)


def _keras_mask(t: Any) -> Any:
    try:
        from keras.src.backend import get_keras_mask
    except ImportError:  # pragma: no cover - older/newer Keras layouts
        return getattr(t, "_keras_mask", None)
    return get_keras_mask(t)


def _check_reduction(reduction: object) -> str | None:
    if reduction not in REDUCTIONS:
        msg = (
            "`reduction` must be one of 'sum_over_batch_size', 'mean', 'sum', "
            f"'mean_with_sample_weight', 'none' or None, got {reduction!r}"
        )
        raise SoftmaxkitValueError(msg)
    return reduction  # type: ignore[return-value]


def _check_int(value: object, name: str) -> int:
    """An int argument (``np.int64`` too); ``1.5`` or ``"1"`` is an error, not truncated."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        msg = f"`{name}` must be an int, got {value!r}"
        raise SoftmaxkitTypeError(msg)
    return int(value)


def _rank(t: Tensor) -> int | None:
    """``t``'s number of axes, or ``None`` for a TF graph tensor of unknown rank."""
    try:
        return len(t.shape)
    except ValueError:
        return None


def _check_class_axis(axis: int, y_pred: Tensor) -> None:
    """``axis`` must index ``y_pred`` (when its rank is known)."""
    rank = _rank(y_pred)
    if rank is not None:
        check_axes(axis, rank)


def _match_rank(values: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Keras's rule (``squeeze_or_expand_to_same_rank``): ranks one apart with a trailing
    1 on the longer, it is squeezed, or the rank-1 side expanded; then weights of lower
    rank gain trailing axes (a per-item weight over per-item-per-step losses)."""
    rv, rw = len(values.shape), len(w.shape)
    if rv == rw + 1 and values.shape[-1] == 1:
        if rw == 1:
            w = ops.expand_dims(w, axis=-1)
        else:
            values = ops.squeeze(values, axis=-1)
    elif rw == rv + 1 and w.shape[-1] == 1:
        if rv == 1:
            values = ops.expand_dims(values, axis=-1)
        else:
            w = ops.squeeze(w, axis=-1)
    while 0 < len(w.shape) < len(values.shape):
        w = ops.expand_dims(w, axis=-1)
    return values, w


def _follow_rank(m: Tensor, before: int, after: int) -> Tensor:
    """A mask of the losses' shape given the same change of rank as the losses got from
    :func:`_match_rank` (a ``(B,)`` mask of ``(B,)`` losses under ``(B, 1)`` weights is
    ``(B, 1)``, as Keras's ``apply_mask`` makes it), so mask and weights never broadcast
    against each other into ``(B, B)``."""
    if len(m.shape) != before:
        return m
    if after == before + 1:
        return ops.expand_dims(m, axis=-1)
    if after == before - 1 and m.shape[-1] == 1:
        return ops.squeeze(m, axis=-1)
    return m


def reduce_losses(
    values: Tensor, sample_weight: Any, mask: Any, reduction: str | None, dtype: Any
) -> Tensor:
    """Keras's reductions of per-item losses, with masks counted out and 0 for no item.

    ``'sum_over_batch_size'``/``'mean'``: ``sum(w l) / n`` with ``n`` the number
    of (unmasked) items; ``'mean_with_sample_weight'``: ``sum(w l) / sum(w)``;
    ``'sum'``; ``'none'``/``None``: ``w l`` per item (masked items 0).
    """
    values = ops.cast(values, dtype)
    w = m = None
    if mask is not None:
        m = ops.cast(mask, dtype)
    if sample_weight is not None:
        rank = len(values.shape)
        values, w = _match_rank(values, ops.cast(sample_weight, dtype))
        if m is not None:
            m = _follow_rank(m, rank, len(values.shape))
    if m is not None:
        w = m if w is None else w * m
    weighted = (
        values if w is None else ops.where(ops.equal(w, 0), ops.zeros_like(values), values * w)
    )
    if reduction is None or reduction == "none":
        return weighted
    total, scaled = _sums(weighted, dtype)
    if reduction == "sum":
        return total
    # the weighted losses' own shape: weights may broadcast a scalar loss (a rank-1 binary
    # cross-entropy is one value per call) over the items, as Keras counts them
    shape = ops.shape(weighted)
    if reduction == "mean_with_sample_weight" and sample_weight is not None:
        den = ops.sum(ops.broadcast_to(w, shape))
    elif m is not None:
        den = ops.sum(ops.broadcast_to(m, shape))
    elif scaled is None and current().is_eager(weighted):  # a known size (ops.size: a dispatch)
        count = math.prod(weighted.shape)
        if count:  # divide_no_nan's quotient where its divisor is not 0, without its select
            return total / ops.cast(count, dtype)
        den = count
    else:
        den = ops.cast(ops.size(weighted), dtype)
    den = ops.cast(den, dtype)
    if scaled is None:
        return ops.divide_no_nan(total, den)
    ok, s = scaled
    mean_of_scaled = _unscale(ops.divide_no_nan(s, den), keras.backend.standardize_dtype(dtype))
    return ops.where(ok, ops.divide_no_nan(total, den), mean_of_scaled)


_SCALE = 2.0**-64  # exact on items large enough to need it


def _sums(weighted: Tensor, dtype: Any) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
    """The sum of the weighted losses and, for a mean finite wherever it is, whether
    that sum is safe and the sum of the items times ``2**-64`` (``None`` for float16,
    whose items that scale would flush to zero).

    Items of at least ``max / 2n`` may take the sum out of the float range: then the
    scaled sum is what counts, and the sum itself is that, scaled back (an infinity of
    its sign when it leaves the range), as the other front ends reduce.
    """
    name = keras.backend.standardize_dtype(dtype)
    if name == "float16":
        return ops.sum(weighted), None
    if _safe_now(weighted):  # the plain sum, which the selects below would give, bit for bit
        return ops.sum(weighted), None
    n = ops.cast(ops.maximum(ops.size(weighted), 1), "float32")
    amax = ops.max(ops.abs(weighted), initial=0.0)  # 0 for an empty batch
    ok = ops.cast(amax, "float32") < _fmax(name) / (2.0 * n)  # NaN: not ok, and NaN anyway
    zero = ops.zeros_like(weighted)
    plain = ops.sum(ops.where(ok, weighted, zero))
    scaled = ops.sum(ops.where(ok, zero, weighted) * _SCALE)
    return ops.where(ok, plain, _unscale(scaled, name)), (ok, scaled)


_F32_MAX = float(np.finfo(np.float32).max)


def _safe_now(weighted: Tensor) -> bool:
    """Whether the weighted losses are values in host memory now, and so far below the
    range's end that the traced test of :func:`_sums` (``amax < max / 2n`` in float32; for
    float64 losses ``amax`` below the float32 range) certainly passes.

    Then the selects are known to pick the plain sum, and their 30-odd operations are
    left out: eagerly each is a dispatch of its own (a Keras loss of 32x10 float32
    logits on the TF backend took 8.5 ms a call with them, 1.7 for Keras's own loss,
    on the project's 2-core AMD EPYC). Reading the values costs no device sync (host
    memory only). A factor 2 of margin covers every rounding of the traced test."""
    if not current().on_host(weighted):
        return False
    a = ops.convert_to_numpy(weighted)
    with np.errstate(invalid="ignore"):
        amax = float(np.max(np.abs(a), initial=0.0))  # NaN stays NaN: not safe
    return amax * 4.0 * max(a.size, 1) < _F32_MAX


def _unscale(v: Tensor, name: str) -> Tensor:
    """``v / 2**-64``, or an infinity of ``v``'s sign where that leaves the float range."""
    fits = ops.abs(v) < _fmax(name) * _SCALE
    # infinities of v's dtype: a Python float in ops.where makes torch's bfloat16 float32
    inf = ops.where(
        v > 0, ops.full_like(v, math.inf), ops.where(v < 0, ops.full_like(v, -math.inf), v)
    )
    return ops.where(fits, ops.where(fits, v, ops.zeros_like(v)) / _SCALE, inf)


def _fmax(name: str) -> float:
    import ml_dtypes

    return float(ml_dtypes.finfo(name).max)


class _Base(keras.losses.Loss):
    """Shared ``__call__``: Keras's flow without casting labels to the loss dtype."""

    _labels_are_indices = False

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Tensor:
        in_mask = _keras_mask(y_pred)
        with keras.name_scope(self.name):
            logits = getattr(y_pred, "_keras_logits", None)
            if logits is not None and not self.from_logits:
                # the TF backend's softmax/sigmoid outputs carry their logits (as in Keras)
                y_pred, from_logits = logits, True
            else:
                from_logits = self.from_logits
            y_pred = to_tensor(y_pred, "y_pred", self.dtype)
            if self._labels_are_indices:
                y_true = to_tensor(y_true, "y_true")
            else:
                y_true = to_tensor(y_true, "y_true", self.dtype)
            losses, out_mask = self._per_item(y_true, y_pred, from_logits)
            mask = out_mask
            if in_mask is not None:
                m = ops.cast(in_mask, "bool")
                mask = m if mask is None else (m & mask)
            return reduce_losses(losses, sample_weight, mask, self.reduction, self.dtype)

    def call(self, y_true: Any, y_pred: Any) -> Tensor:
        losses, mask = self._per_item(y_true, y_pred, self.from_logits)
        if mask is not None:
            losses = ops.where(mask, losses, ops.zeros_like(losses))
        return losses

    def _per_item(self, y_true: Tensor, y_pred: Tensor, from_logits: bool) -> tuple[Tensor, Any]:
        """Per-item losses and an optional mask of the items that count; each loss defines it."""
        msg = f"{type(self).__name__} defines no per-item loss"
        raise NotImplementedError(msg)


def _smooth(y: Tensor, eps: float, classes: Any) -> Tensor:
    return y * (1.0 - eps) + ops.cast(eps, y.dtype) / ops.cast(classes, y.dtype)


@keras.saving.register_keras_serializable(package="softmaxkit")
class CategoricalCrossentropy(_Base):
    r"""Cross-entropy with one-hot or probability labels (``keras.losses`` arguments).

    .. math:: \ell = -\sum_j q_j \log\operatorname{softmax}(x)_j,\quad
              q = y (1 - \varepsilon) + \varepsilon / C

    Parameters
    ----------
    from_logits : bool, optional
        ``y_pred`` are logits (recommended) rather than probabilities.
    label_smoothing : float, optional
        ``eps`` in [0, 1]; ``C`` is the size of ``axis`` (Keras: the last axis).
    axis : int, optional
        The class axis, default -1.
    reduction : str or None, optional
        ``'sum_over_batch_size'`` (default), ``'mean'``, ``'sum'``,
        ``'mean_with_sample_weight'``, ``'none'`` or ``None``.
    name : str, optional
        Default ``"categorical_crossentropy"``.
    dtype : str, optional
        The loss dtype (default ``keras.config.floatx()``).

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit.keras as skk
    >>> loss = skk.CategoricalCrossentropy(from_logits=True)
    >>> float(loss(np.array([[1.0, 0.0]]), np.array([[0.0, -40.0]])))
    4.24835413113866e-18
    """

    def __init__(
        self,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        axis: int = -1,
        reduction: str | None = "sum_over_batch_size",
        name: str = "categorical_crossentropy",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=_check_reduction(reduction), dtype=dtype)
        self.from_logits = bool(from_logits)
        self.label_smoothing = check_label_smoothing(label_smoothing)
        self.axis = _check_int(axis, "axis")

    def _per_item(self, y_true: Tensor, y_pred: Tensor, from_logits: bool) -> tuple[Tensor, Any]:
        _check_class_axis(self.axis, y_pred)
        eps = self.label_smoothing
        if eps:
            y_true = _smooth(y_true, eps, ops.shape(y_pred)[self.axis])
        if not from_logits:
            loss = keras.losses.categorical_crossentropy(
                y_true, y_pred, from_logits=False, axis=self.axis
            )
            return loss, None
        return current().dense_ce(y_true, y_pred, self.axis), None

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            {
                "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing,
                "axis": self.axis,
            }
        )
        return config


def _values(t: Tensor) -> np.ndarray:
    """An eager tensor's values as a NumPy array (on torch without ``np.array(tensor)``,
    which NumPy 2 warns about: torch's ``__array__`` takes no ``copy``)."""
    if hasattr(t, "detach"):
        return np.asarray(t.detach().cpu().numpy())
    return np.asarray(ops.convert_to_numpy(t))


def _bad_label(what: str, a: np.ndarray, bad: np.ndarray) -> SoftmaxkitValueError:
    """The error naming the first label of ``a`` where ``bad`` holds."""
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    return SoftmaxkitValueError(
        f"`y_true` must hold {what}; y_true{list(idx)} is {a[idx].item()!r}"
    )


def _check_label_range(
    be: Any, labels: Tensor, n_cls: Any, ignore_class: int | None
) -> tuple[Tensor, Tensor | None]:
    """Class indices in ``[0, n_cls)`` (``ignore_class`` labels already replaced by 0).

    Eagerly, a label out of range raises a softmaxkit error naming ``y_true``, as the
    logits route does. Traced labels (``tf.function``, ``jax.jit``, ``torch.compile``)
    have no values to check: they come back with out-of-range ones replaced by 0, and
    the mask of those items, whose loss the caller makes NaN.
    """
    if isinstance(n_cls, int) and be.is_eager(labels):
        a = _values(labels)
        bad = (a < 0) | (a >= n_cls)
        if bad.any():
            ign = "" if ignore_class is None else f" (or ignore_class={ignore_class})"
            what = f"class indices in [0, {n_cls}) for {n_cls} classes{ign}"
            raise _bad_label(what, a, bad)
        return labels, None
    bad = ops.logical_or(ops.less(labels, 0), ops.greater_equal(labels, n_cls))
    return ops.where(bad, ops.zeros_like(labels), labels), bad


@keras.saving.register_keras_serializable(package="softmaxkit")
class SparseCategoricalCrossentropy(_Base):
    r"""Cross-entropy with integer class labels (``keras.losses`` arguments, plus smoothing).

    .. math:: \ell = (1 - \varepsilon)\,(\operatorname{lse}(x) - x_t)
              + \frac{\varepsilon}{C}\sum_j (\operatorname{lse}(x) - x_j)

    Parameters
    ----------
    from_logits : bool, optional
        ``y_pred`` are logits (recommended) rather than probabilities.
    ignore_class : int, optional
        Items with this label have loss 0 and are not counted in the mean.
    label_smoothing : float, optional
        ``eps`` in [0, 1] (keras PR #23488; not in Keras 3.15.1).
    axis : int, optional
        The class axis of ``y_pred``, default -1 (any axis, on every backend).
    reduction : str or None, optional
        As :class:`CategoricalCrossentropy`.
    name : str, optional
        Default ``"sparse_categorical_crossentropy"``.
    dtype : str, optional
        The loss dtype; labels are never cast to it (exact above 2048 in float16).

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit.keras as skk
    >>> loss = skk.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1)
    >>> float(loss(np.array([0, -1]), np.array([[0.0, -40.0], [5.0, 1.0]])))
    4.24835413113866e-18
    """

    _labels_are_indices = True

    def __init__(
        self,
        from_logits: bool = False,
        ignore_class: int | None = None,
        label_smoothing: float = 0.0,
        axis: int = -1,
        reduction: str | None = "sum_over_batch_size",
        name: str = "sparse_categorical_crossentropy",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=_check_reduction(reduction), dtype=dtype)
        self.from_logits = bool(from_logits)
        self.ignore_class = (
            None if ignore_class is None else _check_int(ignore_class, "ignore_class")
        )
        self.label_smoothing = check_label_smoothing(label_smoothing)
        self.axis = _check_int(axis, "axis")

    def _per_item(self, y_true: Tensor, y_pred: Tensor, from_logits: bool) -> tuple[Tensor, Any]:
        _check_class_axis(self.axis, y_pred)
        be = current()
        labels = y_true
        rank = _rank(labels)
        if rank is not None and rank == _rank(y_pred) and labels.shape[-1] == 1:
            labels = ops.squeeze(labels, axis=-1)
        if "string" in str(labels.dtype) or "complex" in str(labels.dtype):
            msg = f"`y_true` must hold integer class indices, got dtype {labels.dtype}"
            raise SoftmaxkitTypeError(msg)
        if not str(labels.dtype).startswith(("int", "uint")) and "int" not in str(labels.dtype):
            if be.is_eager(labels):  # 1.5 is an error, not class 1 (the cast truncates)
                a = _values(labels).astype(np.float64)
                frac = ~(a == np.round(a))  # NaN too
                if frac.any():
                    raise _bad_label("whole class indices", a, frac)
            labels = ops.cast(labels, "int32")  # integral floats: exact, never via float16
        if be.name == "torch":
            labels = ops.cast(labels, "int64")
        mask = None
        if self.ignore_class is not None:
            mask = ops.not_equal(labels, self.ignore_class)
            labels = ops.where(mask, labels, ops.zeros_like(labels))
        eps = self.label_smoothing
        if from_logits:
            if be.is_eager(labels):  # the same error, naming y_true, on every backend
                _check_label_range(be, labels, ops.shape(y_pred)[self.axis], self.ignore_class)
            loss = be.sparse_ce(labels, y_pred, self.axis, eps)
        else:
            n_cls = ops.shape(y_pred)[self.axis]
            labels, bad = _check_label_range(be, labels, n_cls, self.ignore_class)
            onehot = ops.one_hot(labels, n_cls, axis=self.axis, dtype=y_pred.dtype)
            if eps:
                onehot = _smooth(onehot, eps, n_cls)
            loss = keras.losses.categorical_crossentropy(
                onehot, y_pred, from_logits=False, axis=self.axis
            )
            if bad is not None:  # traced: no values to check, so the item's loss is NaN
                loss = ops.where(bad, ops.full_like(loss, math.nan), loss)
        if mask is not None:
            loss = ops.where(mask, loss, ops.zeros_like(loss))
        return loss, mask

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            {
                "from_logits": self.from_logits,
                "ignore_class": self.ignore_class,
                "label_smoothing": self.label_smoothing,
                "axis": self.axis,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="softmaxkit")
class BinaryCrossentropy(_Base):
    r"""Binary cross-entropy, the mean over ``axis`` per sample (``keras.losses`` arguments).

    .. math:: \ell = \operatorname{mean}_{axis}\bigl[y\,\operatorname{softplus}(-x)
              + (1 - y)\operatorname{softplus}(x)\bigr],\quad
              y \leftarrow y (1 - \varepsilon) + \varepsilon / 2

    Parameters
    ----------
    from_logits : bool, optional
        ``y_pred`` are logits (recommended) rather than probabilities.
    label_smoothing : float, optional
        ``eps`` in [0, 1], smoothing towards 1/2.
    axis : int, optional
        The axis averaged per sample, default -1.
    reduction : str or None, optional
        As :class:`CategoricalCrossentropy`.
    name : str, optional
        Default ``"binary_crossentropy"``.
    dtype : str, optional
        The loss dtype.

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit.keras as skk
    >>> loss = skk.BinaryCrossentropy(from_logits=True)
    >>> float(loss(np.array([[1.0, 0.0]]), np.array([[np.inf, -np.inf]])))
    0.0
    """

    def __init__(
        self,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        axis: int = -1,
        reduction: str | None = "sum_over_batch_size",
        name: str = "binary_crossentropy",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=_check_reduction(reduction), dtype=dtype)
        self.from_logits = bool(from_logits)
        self.label_smoothing = check_label_smoothing(label_smoothing)
        self.axis = _check_int(axis, "axis")

    def _per_item(self, y_true: Tensor, y_pred: Tensor, from_logits: bool) -> tuple[Tensor, Any]:
        _check_class_axis(self.axis, y_pred)
        eps = self.label_smoothing
        if not from_logits:
            loss = keras.losses.binary_crossentropy(
                y_true, y_pred, from_logits=False, label_smoothing=eps, axis=self.axis
            )
            return loss, None
        if eps:
            y_true = y_true * (1.0 - eps) + 0.5 * eps
        el = current().bce(y_true, y_pred)
        return ops.mean(el, axis=self.axis), None

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            {
                "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing,
                "axis": self.axis,
            }
        )
        return config
