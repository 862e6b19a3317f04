"""The softmax-family engine of softmaxkit.tensorflow, written in TensorFlow operations.

It serves float16, bfloat16 and float32 logits in the accurate mode (computed in
float64, rounded once) and every dtype in the fast mode (computed in the input
precision, at least float32). Accurate float64 goes to the array-agnostic
double-word engine instead (see :mod:`._functional`). Every function takes
validated tensors and returns tensors; nothing here raises on data, calls NumPy,
or branches in Python on a value, so it runs eagerly, in ``tf.function``, under
XLA and from a reloaded SavedModel alike.

The math is the array-agnostic engine's (:mod:`softmaxkit._agnostic._normalize`,
after Blanchard, Higham & Higham), arranged so that XLA needs the same number of
passes over the logits as ``tf.nn.softmax``::

    a = max x               in the input dtype (cheap pass)
    c = #{i : x_i == a}     one pass, fused with the next under XLA
    s = sum_{x_i < a} exp((x_i - a) / T)    in the working dtype
    softmax_i = exp((x_i - a)/T) / (c + s)
    log_softmax_i = (x_i - a)/T - log1p((c - 1) + s)
    logsumexp = a/T + log1p((c - 1) + s)

Special rows are folded into the data before the passes instead of overlaid
after them: in a row whose maximum is ``+inf`` the ``+inf`` entries become 0 and
the others ``-inf``, so the same formulas give the limits (``1/k`` on the ``k``
infinite entries, ``log k`` ...); a row with nothing left (all ``-inf`` or
masked) gives softmax 0, log_softmax and logsumexp ``-inf`` and a loss of 0; a
NaN anywhere in a row reaches ``s`` and makes the row NaN (also under XLA, whose
maximum skips NaN). Backward passes recompute ``exp`` from the logits and the
saved row statistics, so nothing of the logits' size is kept between the passes.

Two measures keep the float64 work off XLA's slow paths (issue 11; measured on
(2048, 32000) float32 under ``jit_compile``):

* :func:`exp_reduced` replaces ``tf.exp`` on the logits-sized tensors of softmax,
  log-softmax and the losses. XLA's float64 ``exp`` is a rational approximation with
  a vector division; the arguments here are ``x - max`` of narrower floats, exact
  in float64 and never positive, so a degree-7 polynomial of a Cody-Waite reduced
  argument (relative error below ``2**-34``, far inside the ``0.005`` ulp of
  float32 left by the 0.5 ulp + 1 % bound) costs about 0.6 of it. Logsumexp keeps
  ``tf.exp``: ``a + L`` may cancel, so there ``L`` needs float64 accuracy.
* :func:`row_sum` sums the last axis in blocks the tree-reduction rewriter leaves
  alone, so XLA fuses the ``exp`` into the reduction instead of writing a float64
  tensor of the logits' size and reading it back; softmax then computes its ``exp``
  twice (``exp(d)`` for the sum, ``exp(d - log S)`` for the output) without any
  float64 intermediate in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

__all__ = [
    "Rows",
    "dense_ce",
    "dense_ce_grad",
    "exp_reduced",
    "log_softmax",
    "log_softmax_grad",
    "logsumexp",
    "row_sum",
    "rows",
    "softmax",
    "softmax_grad",
    "sparse_ce",
    "sparse_ce_grad",
]

Tensor = Any


def _c(value: float, dtype: Any) -> Tensor:
    return tf.constant(value, dtype=dtype)


# exp(r) ~ 1 + r + r^2 (c2 + c3 r + ... + c7 r^5) on |r| <= ln2/2: a relative-error
# fit (weighted least squares on Chebyshev nodes, iteratively reweighted towards
# minimax); max relative error 2**-34.17, measured with mpmath on a dense grid and
# asserted by tests/child/tf_suite.py::test_exp_reduced_adversarial.
_EXP_POLY = (
    float.fromhex("0x1.0000000000000p0"),
    float.fromhex("0x1.0000000000000p0"),
    float.fromhex("0x1.0000003A23A28p-1"),
    float.fromhex("0x1.555554436A8D0p-3"),
    float.fromhex("0x1.55548DC9490B2p-5"),
    float.fromhex("0x1.11127069E4831p-7"),
    float.fromhex("0x1.6D8CFF8CD47CDp-10"),
    float.fromhex("0x1.9F08F211972CBp-13"),
)
# _LN2_HI has 32 significant bits: k * _LN2_HI is exact for |k| < 2**21
_LN2_HI = float.fromhex("0x1.62E42FEE00000p-1")
_LN2_LO = float.fromhex("0x1.A39EF35793C76p-33")
_LOG2E = float.fromhex("0x1.71547652B82FEp0")
# k + _SHIFT (k integral, |k| < 2**51) holds 1023 + k in its low 12 mantissa bits, so
# shifting its bits left by 52 gives the bits of 2**k (a normal number for k >= -1022)
_SHIFT = 2.0**52 * 1.5 + 1023.0
_EXP_FLOOR = -708.0  # exp below this is under 2**-1021: 0 here (TF flushes subnormals anyway)


def exp_reduced(d: Tensor) -> Tensor:
    """``exp(d)`` for float64 ``d <= 0`` with relative error below ``2**-34``; 0 below -708.

    Cody-Waite reduction ``d = k ln2 + r`` (``k = round(d / ln2)``, ``|r| <= ln2/2``,
    ``r`` formed with an error near ``2**-53``), the degree-7 polynomial of
    ``_EXP_POLY`` for ``exp(r)``, and ``2**k`` built from bits, not from a table.
    ``exp(0)`` is exactly 1, ``-inf`` gives 0 and NaN gives NaN. Arguments above
    709 (only in rows that are NaN anyway) give garbage, never an exception.
    """
    f64 = tf.float64
    k = tf.round(d * _LOG2E)
    r = (d - k * _LN2_HI) - k * _LN2_LO
    p = _c(_EXP_POLY[-1], f64)
    for coef in reversed(_EXP_POLY[:-1]):
        p = p * r + coef
    # k is rounded before the shift constant is added: XLA simplifies (y + C) - C to y
    bits = tf.bitcast(k + _SHIFT, tf.int64)
    scale = tf.bitcast(tf.bitwise.left_shift(bits, tf.constant(52, tf.int64)), f64)
    return tf.where(d < _EXP_FLOOR, tf.zeros_like(p), p * scale)


def _exp(r: Rows, d: Tensor) -> Tensor:
    """``exp`` of ``x - max``: :func:`exp_reduced` where :meth:`Rows.wide` (results are
    float32 or narrower), else ``tf.exp`` (float64 results need its accuracy)."""
    return exp_reduced(d) if r.wide() else tf.exp(d)


_BLOCK = 32  # XLA's CPU tree-reduction rewriter splits reductions longer than this


def row_sum(v: Tensor, axes: list[int]) -> Tensor:
    """``reduce_sum(v, axes, keepdims=True)``, fused with ``v``'s producer under XLA."""
    return row_sums([v], axes)[0]


def row_sums(vs: list[Tensor], axes: list[int]) -> list[Tensor]:
    """``reduce_sum(v, axes, keepdims=True)`` for each ``v`` (same shape), in one pass.

    In float64, over a single last axis of static length ``n > 32``, the tensors
    are stacked on a new minor axis, zero-padded to ``32 m`` rows and viewed as
    ``(32, m k)``; the 32 are summed first. XLA fuses that reduction with the
    elementwise producers of ``vs`` (a long one becomes a ``reduce-window`` that
    reads materialised inputs), and all ``k`` sums share the one read of the
    logits. ``maximum(partial, 0)``, an identity on partial sums of non-negative
    terms that keeps NaN, stops the simplifier from merging the two reductions
    back into one. Other dtypes and axes go to XLA's own reductions (YNNPACK,
    faster than this on float32).
    """
    v0 = vs[0]
    rank = len(v0.shape)
    n = v0.shape[-1] if rank else None
    if (
        v0.dtype != tf.float64
        or len(axes) != 1
        or axes[0] % max(rank, 1) != rank - 1
        or n is None
        or n <= _BLOCK
    ):
        return [tf.reduce_sum(v, axis=axes, keepdims=True) for v in vs]
    k = len(vs)
    v = tf.stack(vs, axis=-1) if k > 1 else v0[..., None]
    pad = -n % _BLOCK
    if pad:
        v = tf.pad(v, [[0, 0]] * (rank - 1) + [[0, pad], [0, 0]])
    m = (n + pad) // _BLOCK
    lead = tf.shape(v)[:-2]
    blocks = tf.reshape(v, tf.concat([lead, [_BLOCK, m * k]], 0))
    partial = tf.reduce_sum(blocks, axis=-2)
    partial = tf.maximum(partial, tf.zeros((), partial.dtype))
    total = tf.reduce_sum(tf.reshape(partial, tf.concat([lead, [m, k]], 0)), axis=-2)
    return [total[..., i : i + 1] for i in range(k)]


@dataclass
class Rows:
    """The logits of one call with their special rows folded in, and the row maximum."""

    xm: Tensor  # logits in their dtype: masked -> -inf, +inf rows -> 0 / -inf
    m: Tensor  # raw row maximum (keepdims; may be +-inf, or NaN eagerly)
    m0: Tensor  # row maximum where finite, else 0 (keepdims, input dtype)
    posinf: Tensor  # the row maximum is +inf (keepdims)
    empty: Tensor  # nothing left in the row: all -inf or masked (keepdims)
    axes: list[int]
    work: Any
    temperature: float

    def d(self) -> Tensor:
        """``(x - a) / T`` in the working dtype (exact difference; ``-inf`` where excluded)."""
        d = tf.cast(self.xm, self.work) - tf.cast(self.m0, self.work)
        if self.temperature != 1.0:
            d = d / _c(self.temperature, self.work)
        return d

    def wide(self) -> bool:
        """Computed in float64 for a narrower result: :func:`exp_reduced` is accurate enough."""
        return self.work == tf.float64 and self.xm.dtype != tf.float64

    def top(self) -> Tensor:
        """Entries equal to the row maximum (after folding: the ``+inf`` ones of a ``+inf`` row)."""
        return tf.equal(self.xm, self.m0)


def rows(
    x: Tensor,
    axes: tuple[int, ...],
    where: Tensor | None,
    temperature: float,
    work: Any,
    m: Tensor | None = None,
) -> Rows:
    """Fold masks and ``+inf`` rows into ``x`` and take the row maximum (one pass).

    ``m``, the raw row maximum (:attr:`Rows.m`) of an earlier call on the same
    arguments, skips that pass (backward functions get it from the forward).
    """
    ax = list(axes)
    dt = x.dtype
    ninf = _c(-math.inf, dt)
    xm = x if where is None else tf.where(where, x, ninf)
    if m is None:
        m = tf.reduce_max(xm, axis=ax, keepdims=True)
    posinf = tf.equal(m, _c(math.inf, dt))
    empty = tf.equal(m, ninf)
    inf_row = tf.where(
        tf.equal(xm, _c(math.inf, dt)),
        tf.zeros_like(xm),
        tf.where(tf.math.is_nan(xm), xm, tf.fill(tf.shape(xm), ninf)),
    )
    xm = tf.where(posinf, inf_row, xm)
    m0 = tf.where(tf.math.is_finite(m), m, tf.zeros_like(m))
    return Rows(xm, m, m0, posinf, empty, ax, work, float(temperature))


def _count(r: Rows) -> Tensor:
    """``c``, the number of maximal entries per row, in the working dtype."""
    n: int | None = 1
    for a in r.axes:
        size = r.xm.shape[a]
        n = n * size if size is not None and n is not None else None
    # float32 counts are exact below 2**24 and cost half the float64 ones
    cdt = tf.float32 if n is not None and n < 2**24 else r.work
    c = tf.reduce_sum(tf.cast(r.top(), cdt), axis=r.axes, keepdims=True)
    return tf.cast(c, r.work)


def _log_stats(r: Rows, d: Tensor, exact_exp: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """``(c, s, L)`` with ``L = log1p((c - 1) + s)`` (keepdims, working dtype).

    ``exact_exp`` takes ``tf.exp`` (float64 accurate) instead of :func:`exp_reduced`.
    """
    e = tf.exp(d) if exact_exp else _exp(r, d)
    top = r.top()
    rest = tf.where(top, tf.zeros_like(e), e)
    if e.dtype == tf.float64:
        # the count in the same pass as the sum (row_sums stacks them)
        c, s = row_sums([tf.cast(top, e.dtype), rest], r.axes)
    else:
        c, s = _count(r), tf.reduce_sum(rest, axis=r.axes, keepdims=True)
    L = tf.math.log1p((c - 1.0) + s)
    return c, s, L


# ------------------------------------------------------------------ normalisers


def softmax(r: Rows) -> Tensor:
    """Softmax in the working dtype (rows with nothing left are 0).

    ``exp(d - log S)`` rather than ``exp(d) / S``: the two ``exp`` then differ, so
    XLA fuses each into its own pass instead of keeping ``exp(d)`` in memory for
    both (in float64, twice the logits' bytes written and read). The rounding of
    ``d - log S`` costs ``|d - log S| 2**-53``, below ``2**-45`` relative where
    the result is a float32 above its underflow.
    """
    d = r.d()
    S = row_sum(_exp(r, d), r.axes)
    if r.wide():
        y = _exp(r, d - tf.math.log(S))
    else:
        y = tf.exp(d) * (1.0 / S)
    return tf.where(r.empty, tf.zeros_like(y), y)


def log_softmax(r: Rows) -> Tensor:
    """Log-softmax in the working dtype (rows with nothing left are ``-inf``)."""
    d = r.d()
    _, _, L = _log_stats(r, d)
    v = d - L
    return tf.where(r.empty, tf.fill(tf.shape(v), _c(-math.inf, r.work)), v)


def logsumexp(r: Rows) -> Tensor:
    """Logsumexp (keepdims) in the working dtype: ``a/T + L``; ``+-inf`` or NaN rows as limits."""
    d = r.d()
    _, _, L = _log_stats(r, d, exact_exp=True)
    top = tf.cast(r.m0, r.work)
    if r.temperature != 1.0:
        top = top / _c(r.temperature, r.work)
    v = top + L
    v = tf.where(r.posinf, tf.fill(tf.shape(v), _c(math.inf, r.work)), v)
    v = tf.where(r.empty, tf.fill(tf.shape(v), _c(-math.inf, r.work)), v)
    return tf.where(tf.math.is_nan(L), L, v)


def softmax_grad(y: Tensor, g: Tensor, axes: list[int], work: Any, temperature: float) -> Tensor:
    """``y (g - sum(y g)) / T`` from the output ``y`` (working dtype)."""
    yw = tf.cast(y, work)
    gw = tf.cast(g, work)
    dot = tf.reduce_sum(yw * gw, axis=axes, keepdims=True)
    gx = yw * (gw - dot)
    if temperature != 1.0:
        gx = gx / _c(temperature, work)
    return gx


def log_softmax_grad(
    y: Tensor, g: Tensor, where: Tensor | None, axes: list[int], work: Any, temperature: float
) -> Tensor:
    """``(g - exp(y) sum(g)) / T`` from the output ``y``; 0 at masked entries."""
    yw = tf.cast(y, work)
    gw = tf.cast(g, work)
    total = tf.reduce_sum(gw, axis=axes, keepdims=True)
    gx = gw - tf.exp(yw) * total
    if temperature != 1.0:
        gx = gx / _c(temperature, work)
    if where is not None:
        gx = tf.where(where, gx, tf.zeros_like(gx))
    return gx


# ----------------------------------------------------------------------- losses


def _class_iota(r: Rows, axis: int) -> Tensor:
    shape = tf.shape(r.xm)
    return tf.range(shape[axis], dtype=tf.int32)


def sparse_ce(
    r: Rows, labels: Tensor, where: Tensor | None, label_smoothing: float
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
    """Per-item sparse cross-entropy (classes on the last axis) and the saved row statistics.

    ``loss = L - d_t`` (both terms non-negative: no cancellation), with label
    smoothing ``(1 - eps)(L - d_t) + eps/K * sum_j (L - d_j)`` over the ``K``
    classes left in by ``where``. Items whose row has nothing left give 0; a label
    outside ``[0, C)`` gives NaN (loss and gradient). The statistics ``(c, s, d_t)``
    are what :func:`sparse_ce_grad` needs besides the logits.
    """
    work = r.work
    axis = r.axes[0]
    lab, bad = _safe_labels(r, labels)
    d = r.d()
    c, s, L = _log_stats(r, d)
    d_t = _target_d(r, lab)
    core = L - d_t
    eps = float(label_smoothing)
    if eps:
        mask, K = _smoothing_mask(r, d, where)
        nls = tf.where(mask, L - d, tf.zeros_like(d))
        smooth = tf.reduce_sum(nls, axis=axis, keepdims=True)
        core = (1.0 - eps) * core + (eps / K) * smooth
    item = tf.where(r.empty, tf.zeros_like(core), core)
    item = tf.where(bad[..., None], tf.fill(tf.shape(item), _c(math.nan, work)), item)
    return tf.squeeze(item, axis=axis), (c, s, d_t)


def _safe_labels(r: Rows, labels: Tensor) -> tuple[Tensor, Tensor]:
    C = tf.shape(r.xm)[r.axes[0]]
    lab = tf.cast(labels, tf.int32)
    bad = (lab < 0) | (lab >= C)
    return tf.where(bad, tf.zeros_like(lab), lab), bad


def _target_d(r: Rows, lab: Tensor) -> Tensor:
    """``d`` at the target, through the same folding as the rows (keepdims)."""
    x_t = tf.gather(r.xm, lab[..., None], batch_dims=len(lab.shape))
    d_t = tf.cast(x_t, r.work) - tf.cast(r.m0, r.work)
    if r.temperature != 1.0:
        d_t = d_t / _c(r.temperature, r.work)
    return d_t


def _smoothing_mask(r: Rows, d: Tensor, where: Tensor | None) -> tuple[Tensor, Tensor]:
    mask = tf.ones_like(d, dtype=tf.bool) if where is None else where
    K = tf.reduce_sum(tf.cast(mask, r.work), axis=r.axes[0], keepdims=True)
    return mask, tf.where(K > 0, K, tf.ones_like(K))


def sparse_ce_grad(
    r: Rows,
    labels: Tensor,
    where: Tensor | None,
    label_smoothing: float,
    stats: tuple[Tensor, Tensor, Tensor],
    g: Tensor,
) -> Tensor:
    """The gradient of :func:`sparse_ce` for the upstream gradient ``g`` (per item).

    ``p - onehot`` with ``p_t - 1 = -(D - e_t) / D`` formed without cancellation
    (a maximal target takes its 1 out of the count, any other its term out of s).
    """
    work = r.work
    axis = r.axes[0]
    c, s, d_t = stats
    lab, bad = _safe_labels(r, labels)
    d = r.d()
    D = c + s
    inv = 1.0 / tf.where(r.empty, tf.ones_like(D), D)
    # exp(d - log D), not exp(d) / D: under one XLA computation with the forward, the
    # latter is the forward's exp(d), which XLA would then keep in memory (see softmax)
    p = _exp(r, d - tf.math.log(D)) if r.wide() else _exp(r, d) * inv
    e_t = _exp(r, d_t)
    others = tf.where(tf.equal(d_t, 0.0), (c - 1.0) + s, c + (s - e_t))
    onehot = tf.equal(_class_iota(r, axis), lab[..., None])
    gx = tf.where(onehot, -others * inv, p)
    eps = float(label_smoothing)
    if eps:
        mask, K = _smoothing_mask(r, d, where)
        gx = (1.0 - eps) * gx + eps * (p - tf.where(mask, 1.0 / K, tf.zeros_like(p)))
    gx = tf.where(r.empty, tf.zeros_like(gx), gx)
    gx = tf.where(bad[..., None], tf.fill(tf.shape(gx), _c(math.nan, work)), gx)
    if r.temperature != 1.0:
        gx = gx / _c(r.temperature, work)
    return gx * tf.cast(g, work)[..., None]


def dense_ce(
    r: Rows, q: Tensor, where: Tensor | None
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
    """Per-item cross-entropy with probability labels ``q`` and the saved row statistics.

    ``loss = sum_j q_j (L - d_j)``, a sum of non-negative terms for ``q >= 0``,
    with ``0 * log 0 = 0`` (a class without target mass adds nothing, even at a
    ``-inf`` logit). Rows with nothing left give 0.
    """
    axis = r.axes[0]
    d = r.d()
    c, s, L = _log_stats(r, d)
    qw = tf.cast(q, r.work)
    nls = L - d
    zero = tf.zeros_like(nls)
    contrib = tf.where(tf.equal(qw, 0.0), zero, qw * tf.where(tf.equal(qw, 0.0), zero, nls))
    item = tf.reduce_sum(contrib, axis=axis, keepdims=True)
    item = tf.where(r.empty, tf.zeros_like(item), item)
    return tf.squeeze(item, axis=axis), (c, s, L)


def dense_ce_grad(
    r: Rows, q: Tensor, where: Tensor | None, stats: tuple[Tensor, Tensor, Tensor], g: Tensor
) -> tuple[Tensor, Tensor]:
    """Gradients of :func:`dense_ce` for the logits and the labels (``-log_softmax``)."""
    work = r.work
    axis = r.axes[0]
    c, s, L = stats
    qw = tf.cast(q, work)
    d = r.d()
    e = _exp(r, d)
    D = c + s
    inv = 1.0 / tf.where(r.empty, tf.ones_like(D), D)
    p = e * inv
    gx = tf.reduce_sum(qw, axis=axis, keepdims=True) * p - qw
    gq = L - d
    if where is not None:
        gx = tf.where(where, gx, tf.zeros_like(gx))
    gx = tf.where(r.empty, tf.zeros_like(gx), gx)
    gq = tf.where(r.empty, tf.zeros_like(gq), gq)
    if r.temperature != 1.0:
        gx = gx / _c(r.temperature, work)
    gw = tf.expand_dims(tf.cast(g, work), axis)
    return gx * gw, gq * gw
