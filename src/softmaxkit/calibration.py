"""Calibration: are the probabilities right, and one temperature that makes them so.

A classifier is *calibrated* when, among the predictions made with confidence
``p``, a fraction ``p`` is correct. Softmax classifiers trained to low loss are
usually overconfident (Guo et al. 2017); dividing every logit by one scalar
temperature ``T > 1`` fitted on held-out data fixes most of it without changing a
single decision. This module fits that temperature and measures calibration.

Two kinds of model are covered, chosen by ``activation``:

``"softmax"`` (default)
    ``logits`` has the classes along ``axis``; ``labels`` holds class indices with
    the logits' shape minus that axis. Binned metrics use the *top-label*
    confidence ``max_k softmax(z / T)_k`` and whether the argmax is the label
    (Guo et al.).
``"sigmoid"``
    Binary or multi-label: one independent logit per label, ``labels`` of the same
    shape holding 0/1 (or probabilities in ``[0, 1]``). Every logit is one binary
    prediction; binned metrics compare ``P(y = 1) = sigmoid(z / T)`` with the
    observed frequency of ``y = 1``, as scikit-learn's ``calibration_curve`` and
    torchmetrics' binary calibration error do.

Conventions, stated because libraries disagree (see the references):

* ECE and MCE use 15 bins by default (Guo et al.; netcal defaults to 10,
  scikit-learn's ``calibration_curve`` to 5);
* bins are right-closed, ``(lo, hi]``, as in Guo et al. and scikit-learn (the
  first bin also holds a confidence of exactly 0); torchmetrics uses ``[lo, hi)``
  and puts a confidence of exactly 1 in an extra bin;
* ``binning="equal-mass"`` puts the edges at the quantiles of the confidences
  (scikit-learn's ``strategy="quantile"``, NumPy's linear percentiles);
* the multiclass Brier score sums over classes (range ``[0, 2]``, as
  scikit-learn's ``brier_score_loss`` for multiclass input); the sigmoid Brier
  score is the mean over labels (range ``[0, 1]``);
* NLL is the mean negative log-likelihood in nats.

Scalar metrics return 0-d arrays of the caller's library and float dtype;
:func:`fit_temperature` returns a Python float, and :func:`reliability_diagram`
a small NumPy summary for printing and plotting.

References
----------
.. [1] C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On calibration of modern
   neural networks", ICML 2017.
.. [2] M. P. Naeini, G. Cooper, M. Hauskrecht, "Obtaining well calibrated
   probabilities using Bayesian binning", AAAI 2015.
.. [3] G. W. Brier, "Verification of forecasts expressed in terms of
   probability", Monthly Weather Review 78(1), 1950.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ._convert import to_numpy
from ._cross_entropy import cross_entropy
from ._errors import SoftmaxkitTypeError, SoftmaxkitValueError
from ._namespace import (
    call,
    default_float,
    device_of,
    dtype_kind,
    has_float64,
    is_concrete,
    resolve,
)
from ._sigmoid import binary_cross_entropy_with_logits, sigmoid
from ._softmax import softmax
from ._validation import check_axes, check_temperature

__all__ = [
    "ReliabilityDiagram",
    "brier_score",
    "ece",
    "fit_temperature",
    "mce",
    "metrics",
    "nll",
    "reliability_diagram",
]

Array = Any
Activation = Literal["softmax", "sigmoid"]
Binning = Literal["equal-width", "equal-mass"]


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class _Data:
    """Validated inputs, flattened: ``z`` is (N, C) for softmax and (N,) for sigmoid."""

    xp: Any
    z: Array  # logits in the working dtype
    y: Array  # softmax: int labels (N,); sigmoid: float targets (N,)
    onehot: Array | None  # softmax: bool (N, C)
    out: Any  # dtype metrics are returned in
    activation: str
    n: int


def _check_activation(activation: object) -> str:
    if activation not in ("softmax", "sigmoid"):
        msg = (
            f"`activation` must be 'softmax' (one label per example) or 'sigmoid' "
            f"(binary / multi-label), got {activation!r}"
        )
        raise SoftmaxkitValueError(msg)
    return str(activation)


def _first(mask: np.ndarray, values: np.ndarray) -> str:
    idx = tuple(int(i[0]) for i in np.nonzero(mask))
    v = values[idx]
    return f"{v.item() if hasattr(v, 'item') else v!r} at index {idx}"


def _prepare(logits: object, labels: object, axis: object, activation: object) -> _Data:
    act = _check_activation(activation)
    xp, (za, ya) = resolve(logits, labels, names=("logits", "labels"), required=2)
    kind = dtype_kind(xp, za.dtype)
    if kind not in ("float", "half", "int", "bool"):
        msg = f"`logits` must be a real array, got dtype {za.dtype}"
        raise SoftmaxkitTypeError(msg)
    dev = device_of(za)
    work = xp.float64 if has_float64(xp, dev) else xp.float32
    out = default_float(xp, dev) if kind in ("int", "bool") else za.dtype
    if za.ndim == 0:
        msg = "`logits` is 0-d; pass at least one logit per example"
        raise SoftmaxkitValueError(msg)
    if is_concrete(za):
        bad = ~xp.isfinite(za)
        if bool(xp.any(bad)):
            zn = to_numpy(za)
            msg = (
                f"`logits` must be finite for calibration, found {_first(~np.isfinite(zn), zn)}; "
                "drop or fix those examples first"
            )
            raise SoftmaxkitValueError(msg)
    ykind = dtype_kind(xp, ya.dtype)
    if act == "softmax":
        ax = check_axes(axis, za.ndim)
        if len(ax) != 1:
            msg = f"`axis` must be a single int (the class axis), got {axis!r}"
            raise SoftmaxkitTypeError(msg)
        a = ax[0]
        C = int(za.shape[a])
        batch = tuple(int(s) for i, s in enumerate(za.shape) if i != a)
        if tuple(ya.shape) != batch:
            msg = (
                f"`labels` must hold one class index per example, shape {batch}, "
                f"got shape {tuple(ya.shape)}"
            )
            raise SoftmaxkitValueError(msg)
        if ykind == "float" or ykind == "half":
            if is_concrete(ya) and bool(xp.any(ya != xp.round(ya))):
                yn = to_numpy(ya)
                msg = (
                    "`labels` must be integer class indices, found "
                    f"{_first(yn != np.round(yn), yn)}"
                )
                raise SoftmaxkitValueError(msg)
        elif ykind != "int":
            msg = f"`labels` must be integer class indices, got dtype {ya.dtype}"
            raise SoftmaxkitTypeError(msg)
        if is_concrete(ya):
            bad = (ya < 0) | (ya >= C)
            if bool(xp.any(bad)):
                yn = to_numpy(ya)
                msg = (
                    f"`labels` has a class index out of range: {_first(to_numpy(bad), yn)}; "
                    f"the logits have {C} classes, so labels must lie in 0..{C - 1}"
                )
                raise SoftmaxkitValueError(msg)
        z = xp.astype(za, work)
        if a != za.ndim - 1:
            z = xp.moveaxis(z, a, -1)
        n = math.prod(batch)
        z = xp.reshape(z, (n, C))
        y = xp.reshape(xp.astype(ya, xp.int64 if work == xp.float64 else xp.int32), (n,))
        classes = xp.arange(C, dtype=y.dtype, device=dev)
        onehot = y[:, None] == classes[None, :]
        if C == 0:
            msg = "`logits` has no classes along `axis`; pass at least one class"
            raise SoftmaxkitValueError(msg)
    else:
        if tuple(ya.shape) != tuple(za.shape):
            msg = (
                f"`labels` must have the logits' shape {tuple(za.shape)} for "
                f"activation='sigmoid' (one 0/1 label per logit), got {tuple(ya.shape)}"
            )
            raise SoftmaxkitValueError(msg)
        if ykind not in ("float", "half", "int", "bool"):
            msg = f"`labels` must be 0/1 or probabilities, got dtype {ya.dtype}"
            raise SoftmaxkitTypeError(msg)
        yw = xp.astype(ya, work)
        if is_concrete(yw):
            bad = ~((yw >= 0) & (yw <= 1))
            if bool(xp.any(bad)):
                yn = to_numpy(ya)
                msg = (
                    f"`labels` must lie in [0, 1] for activation='sigmoid', found "
                    f"{_first(to_numpy(bad), yn)}"
                )
                raise SoftmaxkitValueError(msg)
        n = math.prod(int(s) for s in za.shape)
        z = xp.reshape(xp.astype(za, work), (n,))
        y = xp.reshape(yw, (n,))
        onehot = None
    if n == 0:
        msg = "`logits` holds no examples; calibration needs at least one"
        raise SoftmaxkitValueError(msg)
    return _Data(xp, z, y, onehot, out, act, n)


_MAX_BINS = 1 << 20  # far past any useful binning; a block of _bin_sums stays bounded


def _check_bins(n_bins: object, binning: object) -> tuple[int, str]:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer):
        msg = f"`n_bins` must be a positive integer, got {n_bins!r}"
        raise SoftmaxkitTypeError(msg)
    if not 1 <= int(n_bins) <= _MAX_BINS:
        msg = (
            f"`n_bins` must lie in 1..{_MAX_BINS}, got {n_bins} (10 to 20 bins are usual; "
            "each bin needs examples for its accuracy to mean anything)"
        )
        raise SoftmaxkitValueError(msg)
    if binning not in ("equal-width", "equal-mass"):
        msg = f"`binning` must be 'equal-width' or 'equal-mass', got {binning!r}"
        raise SoftmaxkitValueError(msg)
    return int(n_bins), str(binning)


# ----------------------------------------------------------------- temperature fit


def _softmax_stats(zc: Array, zyc: Array, beta: Array) -> Array:
    """Mean NLL of softmax(beta z) and its first two derivatives in beta.

    ``zc = z - max_k z`` and ``zyc = z_y - max_k z`` are precomputed once, so one
    evaluation is a handful of passes: ``beta zc <= 0`` needs no further shift.
    """
    import array_api_compat as aac

    xp = aac.array_namespace(zc)
    e = xp.exp(beta * zc)
    d = xp.sum(e, axis=-1)
    ez = xp.sum(e * zc, axis=-1) / d  # E_p[zc]
    ez2 = xp.sum(e * (zc * zc), axis=-1) / d  # E_p[zc^2]
    f = xp.mean(xp.log(d) - beta * zyc)
    g = xp.mean(ez - zyc)
    h = xp.mean(xp.maximum(ez2 - ez * ez, 0.0))
    return xp.stack([f, g, h])


def _sigmoid_stats(z: Array, y: Array, beta: Array) -> Array:
    """Mean binary cross-entropy of sigmoid(beta z) and its first two derivatives in beta."""
    import array_api_compat as aac

    xp = aac.array_namespace(z)
    s = beta * z
    e = xp.exp(-xp.abs(s))  # in (0, 1]: never overflows
    p = xp.where(s >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    pq = e / ((1.0 + e) * (1.0 + e))  # p (1 - p) without cancellation
    f = xp.mean(xp.maximum(s, 0.0) + xp.log1p(e) - y * s)
    g = xp.mean((p - y) * z)
    h = xp.mean(pq * z * z)
    return xp.stack([f, g, h])


def _objective(data: _Data) -> Any:
    """``beta -> (NLL, dNLL/dbeta, d2NLL/dbeta2)`` as Python floats, inputs prepared once."""
    xp = data.xp
    dev = device_of(data.z)
    if data.activation == "softmax":
        zy = xp.sum(xp.where(data.onehot, data.z, 0.0), axis=-1)
        zmax = xp.max(data.z, axis=-1)
        arrays = {"zc": data.z - zmax[:, None], "zyc": zy - zmax}
        fn: Callable[..., Array] = _softmax_stats
    else:
        arrays = {"z": data.z, "y": data.y}
        fn = _sigmoid_stats

    def stats(beta: float) -> tuple[float, float, float]:
        b = xp.asarray(beta, dtype=data.z.dtype, device=dev)
        v = to_numpy(call(xp, fn, {**arrays, "beta": b}, {}))
        return float(v[0]), float(v[1]), float(v[2])

    return stats


def _limits(data: _Data) -> tuple[float, float]:
    """The NLL's slope in beta at beta = 0 and as beta grows without bound."""
    xp = data.xp
    z, y = data.z, data.y
    if data.activation == "softmax":
        zy = xp.sum(xp.where(data.onehot, z, 0.0), axis=-1)
        g0 = xp.mean(xp.mean(z, axis=-1) - zy)
        ginf = xp.mean(xp.max(z, axis=-1) - zy)
    else:
        one = xp.ones_like(z)
        step = xp.where(z > 0, one, xp.where(z < 0, 0.0 * one, 0.5 * one))
        g0 = xp.mean((0.5 - y) * z)
        ginf = xp.mean((step - y) * z)
    return float(to_numpy(g0)), float(to_numpy(ginf))


def fit_temperature(
    logits: Array,
    labels: Array,
    /,
    *,
    axis: int = -1,
    activation: str = "softmax",
) -> float:
    r"""The temperature that minimises the negative log-likelihood of ``labels``.

    Temperature scaling (Guo et al. 2017) replaces ``softmax(z)`` by
    ``softmax(z / T)`` with one scalar ``T > 0`` fitted on held-out data; it does
    not change any argmax, so accuracy stays the same. With ``β = 1/T`` the mean NLL

    .. math::

        f(β) = \frac1N \sum_i \Bigl[\log\sum_k e^{β z_{ik}} - β z_{i y_i}\Bigr],
        \qquad f'(β) = \frac1N\sum_i \bigl(\mathbb E_{p_i}[z_i] - z_{i y_i}\bigr),
        \qquad f''(β) = \frac1N\sum_i \operatorname{Var}_{p_i}[z_i] \ge 0

    is convex, so its minimiser is the unique root of ``f'``. It is found by
    Newton's method on ``β``, safeguarded by bisection, to full working precision
    (float64 where the backend has it) in typically 5–10 passes over the data. For
    ``activation="sigmoid"`` the same holds for the mean binary cross-entropy
    ``mean[softplus(β z) - y β z]``.

    Parameters
    ----------
    logits : array
        Held-out logits: classes along ``axis`` for softmax, one logit per label
        for sigmoid. Must be finite. Any array library.
    labels : array
        Class indices (softmax, the logits' shape without ``axis``) or 0/1 labels
        of the logits' shape (sigmoid).
    axis : int, optional
        The class axis (softmax only). Default ``-1``.
    activation : {"softmax", "sigmoid"}, optional
        Multiclass (default) or binary / multi-label.

    Returns
    -------
    float
        The temperature ``T``; calibrated probabilities are
        ``softmax(logits, temperature=T)``.

    Raises
    ------
    SoftmaxkitValueError
        When no finite ``T`` minimises the NLL: if every label is the top class
        (the NLL keeps falling as ``T → 0``), or if the labels are no better than
        chance under the logits (it keeps falling as ``T → ∞``); also for bad
        shapes, out-of-range labels and non-finite logits.

    See Also
    --------
    metrics : NLL, ECE, MCE and Brier score at a given temperature.

    Notes
    -----
    Fit on a validation split, never on the data you report metrics on. The
    problem is one-dimensional and convex, so an exact solve costs about as much
    as a few evaluations of the loss; general-purpose optimisers with a fixed
    learning rate or iteration budget often stop far from the optimum.

    References
    ----------
    .. [1] C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On calibration of modern
       neural networks", ICML 2017, Sec. 4.2.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit.calibration import fit_temperature
    >>> logits = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [4.0, 0.0, 0.0], [0.0, 0.0, 4.0]])
    >>> labels = np.array([0, 1, 1, 2])          # one confident mistake
    >>> T = fit_temperature(logits, labels)
    >>> round(T, 4)
    2.2324
    >>> bool(T > 1)                               # overconfident logits get T > 1
    True
    """
    data = _prepare(logits, labels, axis, activation)
    g0, ginf = _limits(data)
    if not g0 < 0:
        msg = (
            "no finite temperature fits: the labels are no better than chance under these "
            "logits (the NLL keeps falling as T grows); check that logits and labels are "
            "aligned and use the same class numbering"
        )
        raise SoftmaxkitValueError(msg)
    if not ginf > 0:
        what = "label" if data.activation == "sigmoid" else "example"
        msg = (
            f"no finite temperature fits: every {what} is predicted correctly, so the NLL keeps "
            "falling as T goes to 0; fit on held-out data that includes some mistakes"
        )
        raise SoftmaxkitValueError(msg)
    stats = _objective(data)
    # f'(0) = g0 < 0 < ginf = f'(inf) are differences of logits: 1 / (ginf - g0) starts
    # Newton on the logits' own scale (the root moves as 1 / scale when they are scaled)
    start = 1.0 / (ginf - g0)
    if not (math.isfinite(start) and start > 0.0):
        start = 1.0
    # logits near the float64 limit overflow the slope's squares: the solver then
    # bisects instead of taking that Newton step, so NumPy's warnings say nothing
    with np.errstate(over="ignore", invalid="ignore"):
        return 1.0 / _solve_beta(lambda b: stats(b)[1:], start)


def _solve_beta(grad_hess: Any, beta: float = 1.0) -> float:
    """Root of an increasing function on (0, inf) given its value and slope.

    Newton steps from ``beta``; a step that leaves the bracket known to hold the
    root is replaced by bisection: arithmetic once the bracket is within a factor
    of 4, geometric before, and while one end is still unknown (0 or infinity) by
    steps that square their factor each time (2, 4, 16, 256, ...), so that a root
    hundreds of orders of magnitude from the start is bracketed in a few passes.
    Stops when the step or the (finite) bracket is at the rounding level.
    """
    eps = np.finfo(np.float64).eps
    lo, hi = 0.0, math.inf
    up = down = 2.0
    for _ in range(400):
        g, h = grad_hess(beta)
        if g == 0.0:
            return beta
        if g < 0:
            lo = beta
        else:
            hi = beta
        step = g / h if h > 0 else math.nan
        if abs(step) <= 4 * eps * beta:  # Newton has converged to rounding level
            return beta - step
        nxt = beta - step
        if not (lo < nxt < hi):
            if math.isinf(hi):
                nxt, up = beta * up, min(up * up, 2.0**64)
            elif lo == 0.0:
                nxt, down = beta / down, min(down * down, 2.0**64)
            elif hi > 4.0 * lo:
                nxt = math.sqrt(lo) * math.sqrt(hi)
            else:
                nxt = 0.5 * (lo + hi)
        if abs(nxt - beta) <= 4 * eps * beta or (math.isfinite(hi) and hi - lo <= 4 * eps * hi):
            return nxt
        beta = nxt
    return beta  # pragma: no cover - Newton with bisection converges far sooner


# ------------------------------------------------------------------------- metrics


def _probs(data: _Data, t: float) -> Array:
    """Probabilities at temperature ``t``: (N, C) for softmax, (N,) for sigmoid."""
    if data.activation == "softmax":
        return softmax(data.z, temperature=t, precision="fast")
    return sigmoid(data.z / t, precision="fast")


def _conf_hits(data: _Data, t: float) -> tuple[Array, Array]:
    """Confidence and 'hit' (1 when right / positive) per binned prediction."""
    xp = data.xp
    p = _probs(data, t)
    if data.activation == "softmax":
        conf = xp.max(p, axis=-1)
        pred = xp.argmax(data.z, axis=-1)
        hits = xp.astype(pred == data.y, p.dtype)
        return conf, hits
    return p, data.y


def _edges(xp: Any, conf: Array, n_bins: int, binning: str) -> Array:
    """Bin edges (n_bins + 1,), in the dtype and on the device of ``conf``."""
    dev = device_of(conf)
    if binning == "equal-width":
        return xp.asarray(np.linspace(0.0, 1.0, n_bins + 1), dtype=conf.dtype, device=dev)
    # NumPy's default ("linear") percentiles of the confidences, as scikit-learn's
    # calibration_curve(strategy="quantile") uses them.
    n = int(conf.shape[0])
    srt = xp.sort(conf)
    q = np.linspace(0.0, 1.0, n_bins + 1)
    pos = q * (n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    t = pos - lo
    a = xp.take(srt, xp.asarray(lo, device=dev))
    b = xp.take(srt, xp.asarray(hi, device=dev))
    tt = xp.asarray(t, dtype=conf.dtype, device=dev)
    diff = b - a
    return xp.where(tt >= 0.5, b - diff * (1.0 - tt), a + diff * tt)


_BIN_BLOCK = 1 << 22  # entries of one examples x bins block in _bin_sums


def _bin_sums(conf: Array, hits: Array, edges: Array) -> Array:
    """Per bin: count, summed confidence and summed hits, stacked as (3, n_bins)."""
    import array_api_compat as aac

    xp = aac.array_namespace(conf)
    n_bins = int(edges.shape[0]) - 1
    inner = edges[1:-1]
    bins = xp.arange(n_bins, dtype=xp.int32, device=device_of(conf))
    n = int(conf.shape[0])
    # examples x bins matrices, a block of examples at a time: about 2^22 entries each,
    # so that millions of examples (an LM's tokens) take megabytes, not gigabytes
    step = max(1, _BIN_BLOCK // max(n_bins, 1))
    total = None
    for s in range(0, max(n, 1), step):
        e = min(s + step, n)  # the Array API leaves stops past the end unspecified
        c, h = conf[s:e], hits[s:e]
        idx = xp.sum(xp.astype(c[:, None] > inner[None, :], xp.int32), axis=1)
        member = idx[:, None] == bins[None, :]
        counts = xp.sum(xp.where(member, xp.ones_like(c)[:, None], 0.0), axis=0)
        sconf = xp.sum(xp.where(member, c[:, None], 0.0), axis=0)
        shits = xp.sum(xp.where(member, h[:, None], 0.0), axis=0)
        part = xp.stack([counts, sconf, shits])
        total = part if total is None else total + part
    return total


def _binned(data: _Data, t: float, n_bins: int, binning: str) -> tuple[Array, Array]:
    xp = data.xp
    conf, hits = _conf_hits(data, t)
    edges = _edges(xp, conf, n_bins, binning)
    sums = call(xp, _bin_sums, {"conf": conf, "hits": hits, "edges": edges}, {})
    return sums, edges


def _ece_mce(xp: Any, sums: Array, n: int) -> tuple[Array, Array]:
    counts, sconf, shits = sums[0, :], sums[1, :], sums[2, :]
    gap = xp.abs(shits - sconf)
    e = xp.sum(gap) / n
    safe = xp.where(counts > 0, counts, 1.0)
    m = xp.max(xp.where(counts > 0, gap / safe, 0.0))
    return e, m


def ece(
    logits: Array,
    labels: Array,
    /,
    *,
    temperature: float = 1.0,
    n_bins: int = 15,
    binning: str = "equal-width",
    axis: int = -1,
    activation: str = "softmax",
) -> Array:
    r"""Expected calibration error: the mean gap between confidence and accuracy.

    .. math::

        \mathrm{ECE} = \sum_{m=1}^{M} \frac{|B_m|}{N}\,
        \bigl|\operatorname{acc}(B_m) - \operatorname{conf}(B_m)\bigr|

    over ``M`` bins ``B_m = ((m-1)/M, m/M]`` of the top-label confidence
    ``max_k softmax(z/T)_k``, where ``acc`` is the fraction of argmax predictions
    that equal the label and ``conf`` the mean confidence (Guo et al. 2017, after
    Naeini et al. 2015). For ``activation="sigmoid"`` the binned quantity is
    ``P(y=1)`` and ``acc`` the frequency of positives.

    Parameters
    ----------
    logits, labels : array
        See :func:`fit_temperature`.
    temperature : float, optional
        Evaluate ``softmax(logits / temperature)``. Default 1.
    n_bins : int, optional
        Number of bins ``M`` (default 15, as Guo et al.).
    binning : {"equal-width", "equal-mass"}, optional
        Equal-width right-closed bins (default), or edges at the quantiles of
        the confidences.
    axis : int, optional
        Class axis (softmax).
    activation : {"softmax", "sigmoid"}, optional
        Multiclass top-label, or binary / multi-label.

    Returns
    -------
    array
        A 0-d array in ``[0, 1]`` of the logits' library and float dtype.

    See Also
    --------
    mce, reliability_diagram

    References
    ----------
    .. [1] C. Guo et al., "On calibration of modern neural networks", ICML 2017, Eq. 3.
    .. [2] M. P. Naeini, G. Cooper, M. Hauskrecht, AAAI 2015.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit.calibration import ece
    >>> logits = np.log(np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]]))
    >>> labels = np.array([0, 1, 0, 0])
    >>> round(float(ece(logits, labels)), 6)   # (2*|0.5-0.9| + 2*|1.0-0.6|) / 4
    0.4
    """
    data = _prepare(logits, labels, axis, activation)
    t = check_temperature(temperature)
    nb, bm = _check_bins(n_bins, binning)
    sums, _ = _binned(data, t, nb, bm)
    e, _m = _ece_mce(data.xp, sums, data.n)
    return data.xp.astype(e, data.out)


def mce(
    logits: Array,
    labels: Array,
    /,
    *,
    temperature: float = 1.0,
    n_bins: int = 15,
    binning: str = "equal-width",
    axis: int = -1,
    activation: str = "softmax",
) -> Array:
    r"""Maximum calibration error: the largest gap over the non-empty bins.

    .. math:: \mathrm{MCE} = \max_{m:\,|B_m|>0}
              \bigl|\operatorname{acc}(B_m) - \operatorname{conf}(B_m)\bigr|

    with the bins of :func:`ece` (Guo et al. 2017, Eq. 5). It is sensitive to
    sparsely populated bins; read it together with the bin counts of
    :func:`reliability_diagram`.

    Parameters
    ----------
    logits, labels : array
        See :func:`fit_temperature`.
    temperature, n_bins, binning, axis, activation
        See :func:`ece`.

    Returns
    -------
    array
        A 0-d array in ``[0, 1]``.

    See Also
    --------
    ece, reliability_diagram

    References
    ----------
    .. [1] C. Guo et al., "On calibration of modern neural networks", ICML 2017, Eq. 5.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit.calibration import mce
    >>> logits = np.log(np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]]))
    >>> round(float(mce(logits, np.array([0, 1, 0, 0]))), 6)
    0.4
    """
    data = _prepare(logits, labels, axis, activation)
    t = check_temperature(temperature)
    nb, bm = _check_bins(n_bins, binning)
    sums, _ = _binned(data, t, nb, bm)
    _e, m = _ece_mce(data.xp, sums, data.n)
    return data.xp.astype(m, data.out)


def nll(
    logits: Array,
    labels: Array,
    /,
    *,
    temperature: float = 1.0,
    axis: int = -1,
    activation: str = "softmax",
) -> Array:
    r"""Mean negative log-likelihood of the labels, in nats.

    .. math:: \mathrm{NLL} = -\frac1N\sum_i \log\operatorname{softmax}(z_i/T)_{y_i}

    the mean cross-entropy; for ``activation="sigmoid"`` the mean binary
    cross-entropy over all labels. A proper scoring rule: unlike ECE it does not
    depend on a binning.

    Parameters
    ----------
    logits, labels : array
        See :func:`fit_temperature`.
    temperature : float, optional
        Divides the logits first. Default 1.
    axis, activation
        See :func:`fit_temperature`.

    Returns
    -------
    array
        A non-negative 0-d array.

    See Also
    --------
    softmaxkit.cross_entropy, fit_temperature

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit.calibration import nll
    >>> round(float(nll(np.array([[2.0, 1.0, 0.1]]), np.array([0]))), 4)
    0.417
    """
    data = _prepare(logits, labels, axis, activation)
    t = check_temperature(temperature)
    z = data.z if t == 1.0 else data.z / t
    if data.activation == "softmax":
        v = cross_entropy(z, data.y)
    else:
        v = binary_cross_entropy_with_logits(z, data.y)
    return data.xp.astype(v, data.out)


def brier_score(
    logits: Array,
    labels: Array,
    /,
    *,
    temperature: float = 1.0,
    axis: int = -1,
    activation: str = "softmax",
) -> Array:
    r"""Brier score: the mean squared distance between probabilities and outcomes.

    .. math:: \mathrm{BS} = \frac1N\sum_i\sum_k \bigl(p_{ik} - [y_i = k]\bigr)^2

    summed over classes, so it lies in ``[0, 2]`` (scikit-learn's
    ``brier_score_loss`` for multiclass input); for ``activation="sigmoid"`` it is
    the mean of ``(sigmoid(z/T) - y)**2`` over all labels, in ``[0, 1]``.

    Parameters
    ----------
    logits, labels : array
        See :func:`fit_temperature`.
    temperature : float, optional
        Divides the logits first.
    axis, activation
        See :func:`fit_temperature`.

    Returns
    -------
    array
        A 0-d array.

    References
    ----------
    .. [1] G. W. Brier, "Verification of forecasts expressed in terms of
       probability", Monthly Weather Review 78(1), 1950.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit.calibration import brier_score
    >>> logits = np.log(np.array([[0.7, 0.2, 0.1]]))
    >>> round(float(brier_score(logits, np.array([0]))), 6)   # 0.3² + 0.2² + 0.1²
    0.14
    """
    data = _prepare(logits, labels, axis, activation)
    t = check_temperature(temperature)
    xp = data.xp
    p = _probs(data, t)
    if data.activation == "softmax":
        d = p - xp.astype(data.onehot, p.dtype)
        v = xp.mean(xp.sum(d * d, axis=-1))
    else:
        d = p - data.y
        v = xp.mean(d * d)
    return xp.astype(v, data.out)


@dataclass(frozen=True)
class ReliabilityDiagram:
    """Per-bin data of a reliability diagram, on the host (NumPy).

    Attributes
    ----------
    edges : ndarray, shape (n_bins + 1,)
        Bin edges; bin ``m`` is ``(edges[m], edges[m + 1]]`` (the first also holds 0).
    counts : ndarray of int, shape (n_bins,)
        Predictions per bin.
    confidence : ndarray, shape (n_bins,)
        Mean confidence per bin (NaN for an empty bin).
    accuracy : ndarray, shape (n_bins,)
        Fraction correct per bin (for sigmoid: fraction positive); NaN if empty.
    ece, mce : float
        The calibration errors these bins give.
    n : int
        Number of binned predictions.
    binning : str
        ``"equal-width"`` or ``"equal-mass"``.
    confidence_kind : str
        ``"top-label"`` (softmax) or ``"positive-class"`` (sigmoid).
    temperature : float
        The temperature the probabilities were computed at.
    """

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    ece: float
    mce: float
    n: int
    binning: str
    confidence_kind: str
    temperature: float

    @property
    def gap(self) -> np.ndarray:
        """``confidence - accuracy`` per bin: positive where overconfident."""
        return self.confidence - self.accuracy

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (empty bins give ``None``)."""

        def clean(a: np.ndarray) -> list[Any]:
            return [None if not np.isfinite(v) else float(v) for v in a]

        return {
            "edges": [float(v) for v in self.edges],
            "counts": [int(c) for c in self.counts],
            "confidence": clean(self.confidence),
            "accuracy": clean(self.accuracy),
            "ece": self.ece,
            "mce": self.mce,
            "n": self.n,
            "binning": self.binning,
            "confidence_kind": self.confidence_kind,
            "temperature": self.temperature,
        }

    def __str__(self) -> str:
        head = f"{'bin':>15}  {'count':>7}  {'conf':>7}  {'acc':>7}  {'gap':>7}"
        lines = [
            f"reliability diagram ({self.confidence_kind}, {self.binning}, T={self.temperature:g},"
            f" n={self.n}): ECE {self.ece:.4f}, MCE {self.mce:.4f}",
            head,
        ]
        for i in range(len(self.counts)):
            lo, hi = self.edges[i], self.edges[i + 1]
            if self.counts[i]:
                vals = f"{self.confidence[i]:7.4f}  {self.accuracy[i]:7.4f}  {self.gap[i]:+7.4f}"
            else:
                vals = f"{'-':>7}  {'-':>7}  {'-':>7}"
            lines.append(f"({lo:.4f}, {hi:.4f}]  {int(self.counts[i]):7d}  {vals}")
        return "\n".join(lines)


def reliability_diagram(
    logits: Array,
    labels: Array,
    /,
    *,
    temperature: float = 1.0,
    n_bins: int = 15,
    binning: str = "equal-width",
    axis: int = -1,
    activation: str = "softmax",
) -> ReliabilityDiagram:
    r"""The per-bin data behind ECE, MCE and a reliability diagram.

    For each bin of :func:`ece`: its edges, how many predictions fall in it, their
    mean confidence and their accuracy. Plot accuracy against confidence (a
    calibrated model lies on the diagonal) and the counts as a histogram (Guo et
    al. 2017, Fig. 1); :func:`softmaxkit.plot.reliability_chart` does both.

    Parameters
    ----------
    logits, labels : array
        See :func:`fit_temperature`.
    temperature, n_bins, binning, axis, activation
        See :func:`ece`.

    Returns
    -------
    ReliabilityDiagram
        NumPy arrays (the bins are few, whatever the library of the inputs).

    See Also
    --------
    ece, mce, softmaxkit.plot.reliability_chart

    References
    ----------
    .. [1] C. Guo et al., "On calibration of modern neural networks", ICML 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit.calibration import reliability_diagram
    >>> logits = np.log(np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]]))
    >>> d = reliability_diagram(logits, np.array([0, 1, 0, 0]), n_bins=5)
    >>> d.counts
    array([0, 0, 2, 0, 2])
    >>> d.accuracy[[2, 4]], round(d.ece, 6)
    (array([1. , 0.5]), 0.4)
    """
    data = _prepare(logits, labels, axis, activation)
    t = check_temperature(temperature)
    nb, bm = _check_bins(n_bins, binning)
    sums, edges = _binned(data, t, nb, bm)
    e, m = _ece_mce(data.xp, sums, data.n)
    s = to_numpy(sums).astype(np.float64)
    counts = np.rint(s[0]).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(counts > 0, s[1] / np.maximum(counts, 1), np.nan)
        acc = np.where(counts > 0, s[2] / np.maximum(counts, 1), np.nan)
    return ReliabilityDiagram(
        edges=to_numpy(edges).astype(np.float64),
        counts=counts,
        confidence=conf,
        accuracy=acc,
        ece=float(to_numpy(e)),
        mce=float(to_numpy(m)),
        n=data.n,
        binning=bm,
        confidence_kind="top-label" if data.activation == "softmax" else "positive-class",
        temperature=t,
    )


def metrics(
    logits: Array,
    labels: Array,
    /,
    *,
    temperature: float = 1.0,
    n_bins: int = 15,
    binning: str = "equal-width",
    axis: int = -1,
    activation: str = "softmax",
) -> dict[str, float]:
    """NLL, ECE, MCE, Brier score and accuracy at one temperature, as Python floats.

    One validation pass for all of :func:`nll`, :func:`ece`, :func:`mce` and
    :func:`brier_score`; the keys are ``"nll"``, ``"ece"``, ``"mce"``, ``"brier"``
    and ``"accuracy"`` (top-label accuracy; for sigmoid, the fraction of labels
    whose sign the logit gets right).

    Parameters
    ----------
    logits, labels : array
        See :func:`fit_temperature`.
    temperature, n_bins, binning, axis, activation
        See :func:`ece`.

    Returns
    -------
    dict of str to float

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit.calibration import metrics
    >>> m = metrics(np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]]), np.array([0, 0]))
    >>> sorted(m)
    ['accuracy', 'brier', 'ece', 'mce', 'nll']
    >>> m["accuracy"]
    0.5
    """
    data = _prepare(logits, labels, axis, activation)
    t = check_temperature(temperature)
    nb, bm = _check_bins(n_bins, binning)
    xp = data.xp
    sums, _ = _binned(data, t, nb, bm)
    e, m = _ece_mce(xp, sums, data.n)
    p = _probs(data, t)
    z = data.z if t == 1.0 else data.z / t
    if data.activation == "softmax":
        loss = cross_entropy(z, data.y)
        d = p - xp.astype(data.onehot, p.dtype)
        brier = xp.mean(xp.sum(d * d, axis=-1))
        acc = xp.mean(xp.astype(xp.argmax(data.z, axis=-1) == data.y, p.dtype))
    else:
        loss = binary_cross_entropy_with_logits(z, data.y)
        d = p - data.y
        brier = xp.mean(d * d)
        pred = xp.astype(data.z > 0, p.dtype)
        acc = xp.mean(xp.astype(pred == data.y, p.dtype))
    vals = xp.stack([xp.astype(v, p.dtype) for v in (loss, e, m, brier, acc)])
    out = to_numpy(vals)
    return {
        k: float(v) for k, v in zip(("nll", "ece", "mce", "brier", "accuracy"), out, strict=False)
    }
