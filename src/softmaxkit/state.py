r"""A mergeable logsumexp state: the unit of streaming, out-of-core and sharded softmax.

A row of logits split into blocks (chunks of a Dask array, files read one after
another, shards of a vocabulary on several ranks) has a logsumexp, a
log-softmax and a cross-entropy that can be computed block by block: reduce
each block to a small per-row state, merge the states, finish. This module is
that state, public, for any transport.

Per row the state holds (Blanchard, Higham & Higham [1]_)

* ``m``, the maximum of the block,
* ``c``, the number of entries equal to ``m``,
* ``s = s_hi + s_lo``, the sum of ``exp(x - m)`` over the other entries, a
  double-word number (two float64 words: about 106 bits; two float32 words
  where the array library has no float64),

and optionally the target logit (cross-entropy), the sum of the logits and the
class count (label smoothing) and ``t = sum exp(x - m) (x - m)`` (entropy).
Keeping ``c`` apart from ``s`` is what keeps tiny results: with one maximal
entry, ``log1p((c - 1) + s) = log1p(s)`` keeps every digit of an ``s`` far
below the rounding unit, where a merged ``(max, sum)`` pair or a single
logsumexp loses it (see :func:`merge`).

This module must never import an array library itself or hold global state;
it validates its arguments and delegates the arithmetic to ``_statecore``.

References
----------
.. [1] P. Blanchard, D. J. Higham, N. J. Higham, "Accurately computing the
   log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from . import _dask, _dispatch, _statecore
from ._errors import SoftmaxkitTypeError, SoftmaxkitValueError
from ._namespace import (
    Plan,
    call,
    device_of,
    dtype_kind,
    dtype_name,
    eager_checks,
    is_concrete,
    is_numpy,
    make_plan,
    numpy_scalars,
    resolve,
)
from ._validation import (
    check_bool,
    check_class_axis,
    check_int64,
    check_label_smoothing,
    check_nonneg_float,
)

__all__ = ["LogSumExpState", "merge", "merge_all"]

Array = Any

_BASE = ("m", "c", "s_hi", "s_lo")


class LogSumExpState:
    r"""Per-row ``(max, count, sum)`` state of a block of logits; merge, then finish.

    Build one with :meth:`from_block`, combine with :meth:`merge` (or
    :func:`merge`), and finish with :meth:`logsumexp`, :meth:`log_softmax`,
    :meth:`softmax`, :meth:`cross_entropy` or :meth:`entropy`. :meth:`to_array`
    and :meth:`from_array` turn it into one small array for any transport
    (``k`` numbers per row: 4, plus 1 for the target logit, 3 for the sum of
    the logits, 1 for the entropy).

    The finished results are those of the whole row:

    .. math::

        M = \max_b m_b,\quad C = \sum_{m_b = M} c_b,\quad
        S = \sum_{m_b = M} s_b + \sum_{m_b < M} e^{m_b - M}(c_b + s_b),

        \operatorname{lse} = M + \operatorname{log1p}\bigl((C - 1) + S\bigr),
        \qquad \log\operatorname{softmax}(x)_i = (x_i - M) - \operatorname{log1p}((C-1)+S).

    Special rows keep the library's contract: a row with a NaN has
    ``m = NaN`` (NaN wins every merge); a row with ``+inf`` entries has
    ``m = +inf`` and ``c`` = their number (softmax uniform over them); an empty
    or all ``-inf`` row is the identity ``(-inf, 0, 0)`` (logsumexp ``-inf``,
    softmax 0, cross-entropy 0 and not counted).

    Attributes
    ----------
    m, c, s_hi, s_lo : array
        The fields, with the batch shape (the block's shape without its class
        axis), in the working dtype (float64, or float32 where the array
        library has no float64).
    dtype : dtype
        The dtype finished results are returned in (that of the logits).

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit as sk
    >>> x = np.array([[0.0, -40.0, 3.0, 1.0, -2.0]])
    >>> a = sk.LogSumExpState.from_block(x[:, :2])
    >>> b = sk.LogSumExpState.from_block(x[:, 2:])
    >>> whole = a.merge(b)
    >>> float(whole.logsumexp()[0]) == float(sk.logsumexp(x)[0])
    True
    >>> whole.to_array().shape  # 4 numbers per row: m, c, s_hi, s_lo
    (1, 4)
    """

    __slots__ = ("_device", "_f", "_xp", "dtype")

    def __init__(self, fields: _statecore.Fields, xp: Any, dtype: Any, device: Any) -> None:
        self._f = fields
        self._xp = xp
        self.dtype = dtype
        self._device = device

    def _static(self) -> dict[str, Any]:
        """The static arguments of the engine calls (compiled once per set on JAX)."""
        return {"xp": self._xp, "device": self._device}

    # ---- fields ------------------------------------------------------------------
    @property
    def m(self) -> Array:
        return self._f.m

    @property
    def c(self) -> Array:
        return self._f.c

    @property
    def s_hi(self) -> Array:
        return self._f.s_hi

    @property
    def s_lo(self) -> Array:
        return self._f.s_lo

    @property
    def shape(self) -> tuple[int, ...]:
        """The batch shape (one state per row)."""
        return tuple(self._f.m.shape)

    @property
    def parts(self) -> tuple[str, ...]:
        """The optional parts carried: a subset of ``("target", "sum_x", "entropy")``."""
        f = self._f
        out = []
        if f.xt is not None:
            out.append("target")
        if f.sx_hi is not None:
            out.append("sum_x")
        if f.t is not None:
            out.append("entropy")
        return tuple(out)

    def __repr__(self) -> str:
        extra = f", parts={self.parts}" if self.parts else ""
        return f"LogSumExpState(shape={self.shape}, dtype={dtype_name(self.dtype)}{extra})"

    # ---- build -------------------------------------------------------------------
    @classmethod
    def from_block(
        cls,
        x: Array,
        /,
        *,
        axis: int = -1,
        target: Array | None = None,
        offset: int = 0,
        sum_x: bool = False,
        entropy: bool = False,
        precision: str = "accurate",
        threads: int | None = None,
    ) -> LogSumExpState:
        """The state of a block of logits, one per row along ``axis``.

        Parameters
        ----------
        x : array
            A block of logits, the classes along ``axis`` (any array library;
            NumPy float32/float64 runs in the native C core). An empty block
            gives the identity. A Dask array (NumPy chunks) gives a lazy state
            from one tree reduction over its chunks; :meth:`compute` makes it
            concrete.
        axis : int, optional
            The class axis. Default ``-1``.
        target : integer array, optional
            Global class indices (``>= 0``), one per row (the batch shape). The
            block holds classes ``offset .. offset + x.shape[axis] - 1``; a
            target in that range records its logit, others record that the
            block did not hold it, so after merging every block the state holds
            each row's target logit (for :meth:`cross_entropy`, which refuses a
            target no merged block held).
        offset : int, optional
            The global index of the block's first class. Default 0 (Dask
            arrays too: their chunks are placed from there).
        sum_x : bool, optional
            Also carry the sum of the logits and the class count, which
            :meth:`cross_entropy` needs for ``label_smoothing``.
        entropy : bool, optional
            Also carry what :meth:`entropy` needs.
        precision : {"accurate", "fast"}, optional
            ``"fast"`` sums the block in the input precision (the C core's fast
            engines); merging is double-word either way.
        threads : int, optional
            Threads of the native kernels (see :func:`softmaxkit.softmax`).

        Returns
        -------
        LogSumExpState
        """
        xp, (xa, ta) = resolve(x, target, names=("x", "target"))
        plan = make_plan(xp, xa, precision, name="x")
        _check_not_0d(xa)
        ax = check_class_axis(axis, xa.ndim)
        off = check_int64(offset, "offset")
        if off < 0:
            msg = f"`offset` must be >= 0 (the block's first global class index), got {off}"
            raise SoftmaxkitValueError(msg)
        sum_x = check_bool(sum_x, "sum_x")
        entropy = check_bool(entropy, "entropy")
        nthreads = _dispatch.check_threads(threads)
        batch = tuple(s for i, s in enumerate(xa.shape) if i != ax)
        if ta is not None:
            if dtype_kind(xp, ta.dtype) != "int":
                msg = f"`target` must hold integer class indices, got dtype {ta.dtype}"
                raise SoftmaxkitTypeError(msg)
            if tuple(ta.shape) != batch:
                msg = (
                    f"`target` has shape {tuple(ta.shape)}, but the block without its class "
                    f"axis has shape {batch}; pass one class index per row"
                )
                raise SoftmaxkitValueError(msg)
            _check_targets(xp, ta)
        if _dask.covers(xa, plan, (ax,)):
            # a Dask array: one tree reduction of the chunks' states (lazy fields), whose
            # chunks are placed from class 0: the targets are shifted by the offset instead
            tgt = ta if ta is None or not off else ta - off
            packed = _dask.state(xa, ax, plan, target=tgt, sum_x=sum_x, entropy=entropy)
            pre = (slice(None),) * ax
            cols = [packed[(*pre, i)] for i in range(int(packed.shape[ax]))]
            f = _dask.fields_from_columns(cols, (ta is not None, sum_x, entropy))
            return cls(f, xp, plan.out, plan.device)
        static = {
            "plan": plan,
            "axis": ax,
            "offset": off,
            "sum_x": sum_x,
            "entropy": entropy,
            "threads": nthreads,
        }
        f = call(xp, _statecore.build, {"x": xa, "target": ta}, static)
        return cls(f, xp, plan.out, plan.device)

    def compute(self) -> LogSumExpState:
        """A state with NumPy fields, computing lazy (Dask) fields in one ``dask.compute``.

        The first pass of an out-of-core softmax: the state is a few numbers per
        row, so computing it holds nothing large; :meth:`softmax` then streams.
        NumPy states are returned as they are.
        """
        if is_numpy(self._xp):
            return self
        import sys

        dask = sys.modules.get("dask")
        if dask is None:
            msg = "compute() is for states of lazy (Dask) arrays; this one is already concrete"
            raise SoftmaxkitTypeError(msg)
        import array_api_compat.numpy as xnp

        names = [k for k, v in self._f._asdict().items() if v is not None]
        vals = dask.compute(*(getattr(self._f, k) for k in names))
        f = _statecore.Fields(**dict(zip(names, (np.asarray(v) for v in vals), strict=True)))
        return LogSumExpState(f, xnp, np.dtype(dtype_name(self.dtype)), None)

    # ---- merge -------------------------------------------------------------------
    def merge(self, other: LogSumExpState, /) -> LogSumExpState:
        """The state of the union of two disjoint blocks of the same rows (see :func:`merge`)."""
        return merge(self, other)

    # ---- finish ------------------------------------------------------------------
    def logsumexp(self) -> Array:
        """``log sum exp(x)`` of each whole row, in :attr:`dtype`.

        ``M + log1p((C - 1) + S)``. The sums of float32 blocks come from float64
        exponentials good to about 2^-34 relative (float64 blocks: about 2^-63), so
        this is within about 2^-34 (2^-63) times min(L, 1) of the exact value,
        ``L = log1p((C - 1) + S)``: rounded once unless ``M`` and ``L`` nearly
        cancel (a row of log-probabilities, whose logsumexp is about 0), where
        :func:`softmaxkit.logsumexp`, which sees the row, sums it again with a
        double-word exponential and a state cannot.
        """
        v = call(self._xp, _statecore.logsumexp, {"f": self._f}, self._static())
        return numpy_scalars(self._xp, self._xp.astype(v, self.dtype))

    def entropy(self) -> Array:
        r"""The entropy ``-sum p log p`` of each row's softmax, in :attr:`dtype`.

        Computed as ``log D - T / D`` with ``D = C + S`` and ``T = sum e^{x-M}(x-M)
        <= 0``: two non-negative terms, so nothing cancels. ``T`` is summed in
        the working dtype (not double-word): a relative error of a few units of
        float64 per merge, far below float32's rounding. ``+inf`` rows give
        ``log k``, empty rows 0, NaN rows NaN. Needs ``entropy=True`` when built.
        """
        if self._f.t is None:
            msg = "this state was built without `entropy=True`; rebuild it with entropy=True"
            raise SoftmaxkitValueError(msg)
        v = call(self._xp, _statecore.entropy, {"f": self._f}, self._static())
        return numpy_scalars(self._xp, self._xp.astype(v, self.dtype))

    def cross_entropy(self, *, label_smoothing: float = 0.0, z_loss: float = 0.0) -> Array:
        r"""Per-row cross-entropy against the target given to :meth:`from_block`.

        .. math::

            \ell = (1 - \varepsilon)\bigl[\operatorname{log1p}((C-1)+S) + (M - x_t)\bigr]
                   + \varepsilon\Bigl(\operatorname{lse} - \frac{1}{K}\sum_j x_j\Bigr)
                   + \zeta \operatorname{lse}^2

        (the softmaxkit / PyTorch convention ``(1 - eps) onehot + eps / K`` with
        ``K`` the number of classes of the whole row). The unweighted item
        losses of ``cross_entropy(..., reduction="none")``; rows with no class
        left give 0.

        A row whose target no merged block held (a block is missing, or the
        target is beyond the last class) has no loss: on concrete fields this
        raises :class:`~softmaxkit.SoftmaxkitValueError`; on lazy (Dask) or
        traced (``jax.jit``) fields, whose values cannot be inspected, the loss
        of such a row is NaN.

        Parameters
        ----------
        label_smoothing : float in [0, 1], optional
            Needs ``sum_x=True`` when built.
        z_loss : float, optional
            Adds ``z_loss * lse**2``.
        """
        if self._f.xt is None:
            msg = "this state has no target logit; build it with `target=` (global class indices)"
            raise SoftmaxkitValueError(msg)
        eps = check_label_smoothing(label_smoothing)
        z = check_nonneg_float(z_loss, "z_loss")
        if eps and self._f.sx_hi is None:
            msg = "label_smoothing needs the sum of the logits; build the state with sum_x=True"
            raise SoftmaxkitValueError(msg)
        self._check_targets_held()
        static = {**self._static(), "label_smoothing": eps, "z_loss": z}
        loss, _, _ = call(self._xp, _statecore.cross_entropy, {"f": self._f}, static)
        return numpy_scalars(self._xp, self._xp.astype(loss, self.dtype))

    def _check_targets_held(self) -> None:
        """Raise for rows (with classes) whose target no merged block held, when concrete."""
        f, xp = self._f, self._xp
        if not all(is_concrete(a) for a in (f.m, f.xt)):
            return  # lazy or traced: those rows give NaN (see cross_entropy)
        with eager_checks(xp):
            missing = _statecore.not_held(f, xp) & ~(f.m == -math.inf)
            n = int(xp.sum(xp.astype(missing, xp.int32)))
        if n:
            msg = (
                f"the target of {n} row(s) lies in no block merged into this state (a "
                "block is missing, or the target is past the last class); merge the states "
                "of every block of the rows, each built with its `offset`, before "
                "cross_entropy()"
            )
            raise SoftmaxkitValueError(msg)

    def log_softmax(self, x: Array, /, *, axis: int = -1, threads: int | None = None) -> Array:
        """``log_softmax`` of a block ``x`` of the rows this state summarises.

        ``x`` is any block of the row (the state must cover it), with the state's
        batch shape and the classes along ``axis``; the result is the block of
        the whole row's log-softmax. This is the second pass of an out-of-core
        log-softmax.
        """
        return self._apply(x, axis, threads, log=True)

    def softmax(self, x: Array, /, *, axis: int = -1, threads: int | None = None) -> Array:
        """``softmax`` of a block ``x`` of the rows (see :meth:`log_softmax`).

        Each entry is ``exp(x - M) / (C + S)`` from the state, correctly rounded,
        and the same bits however the row is split into blocks. On rows over 32768
        classes it may differ in the last bit from ``softmaxkit.softmax`` of the
        whole row (about 3e-4 of the entries), which keeps each 32768-class block's
        exponentials relative to the block's maximum.
        """
        return self._apply(x, axis, threads, log=False)

    def _apply(self, x: Array, axis: object, threads: object, *, log: bool) -> Array:
        xp, (xa,) = resolve(x, names=("x",))
        plan = make_plan(xp, xa, "accurate", name="x")
        _check_not_0d(xa)
        ax = check_class_axis(axis, xa.ndim)
        batch = tuple(s for i, s in enumerate(xa.shape) if i != ax)
        if batch != self.shape:
            msg = (
                f"`x` without its class axis has shape {batch}, but the state has shape "
                f"{self.shape}; pass a block of the same rows"
            )
            raise SoftmaxkitValueError(msg)
        nthreads = _dispatch.check_threads(threads)
        if _dask.covers(xa, plan, (ax,)):
            return _dask.apply_fields(xa, self._f, ax, plan, log=log)
        plan = Plan(plan.xp, self._f.m.dtype, plan.out, plan.mode, plan.device)
        if log:
            return _statecore.log_softmax_block(xa, self._f, plan, ax, nthreads)
        return _statecore.softmax_block(xa, self._f, plan, ax, nthreads)

    # ---- transport ---------------------------------------------------------------
    def to_array(self) -> Array:
        """The state as one array of shape ``(*shape, k)`` in the working dtype.

        Columns: ``m, c, s_hi, s_lo``, then ``x_t`` (with a target; ``-0.0``
        where no block held the target, ``+0.0`` for a held logit of zero),
        then ``sum_hi, sum_lo, K`` (with ``sum_x``), then ``t`` (with ``entropy``).
        :meth:`from_array` with the same parts restores it bitwise.
        """
        f = self._f
        cols = [f.m, f.c, f.s_hi, f.s_lo]
        if f.xt is not None:
            cols.append(f.xt)
        if f.sx_hi is not None:
            cols += [f.sx_hi, f.sx_lo, f.n]
        if f.t is not None:
            cols.append(f.t)
        return self._xp.stack(cols, axis=-1)

    @classmethod
    def from_array(
        cls,
        a: Array,
        /,
        *,
        target: bool = False,
        sum_x: bool = False,
        entropy: bool = False,
        dtype: Any = None,
    ) -> LogSumExpState:
        """Rebuild a state from :meth:`to_array`'s output.

        Parameters
        ----------
        a : array of shape ``(*shape, k)``
            The serialised state.
        target, sum_x, entropy : bool, optional
            Which optional parts it carries (as given to :meth:`from_block`).
        dtype : dtype, optional
            The dtype of finished results, a floating-point dtype of ``a``'s
            array library. Default: ``a``'s dtype.
        """
        xp, (aa,) = resolve(a, names=("a",))
        flags = [check_bool(v, n) for v, n in ((target, "target"), (sum_x, "sum_x"))]
        flags.append(check_bool(entropy, "entropy"))
        k = 4 + flags[0] + 3 * flags[1] + flags[2]
        if dtype_kind(xp, aa.dtype) != "float" or aa.ndim < 1 or int(aa.shape[-1]) != k:
            msg = (
                f"`a` must be a float array whose last axis has {k} entries for these parts, "
                f"got shape {tuple(aa.shape)} and dtype {aa.dtype}"
            )
            raise SoftmaxkitValueError(msg)
        cols = [aa[..., i] for i in range(k)]
        f = _statecore.Fields(*cols[:4])
        i = 4
        if flags[0]:
            f = f._replace(xt=cols[i])
            i += 1
        if flags[1]:
            f = f._replace(sx_hi=cols[i], sx_lo=cols[i + 1], n=cols[i + 2])
            i += 3
        if flags[2]:
            f = f._replace(t=cols[i])
        return cls(f, xp, aa.dtype if dtype is None else _result_dtype(xp, dtype), device_of(aa))


def _check_not_0d(xa: Array) -> None:
    if xa.ndim == 0:
        msg = (
            "`x` is 0-d; a block of logits needs a class axis "
            "(pass at least a 1-d array, e.g. `x[None]` for a single logit)"
        )
        raise SoftmaxkitValueError(msg)


def _check_targets(xp: Any, ta: Array) -> None:
    """Refuse negative class indices (no block holds them) where the values are concrete."""
    if not is_concrete(ta) or ta.size == 0:
        return  # lazy or traced: such a row is one no block holds (cross_entropy: NaN)
    with eager_checks(xp):
        low = int(xp.min(ta))
    if low < 0:
        msg = (
            f"`target` holds negative class indices (smallest {low}); targets are global "
            "class indices >= 0 (place the block with `offset`; leave ignored rows out)"
        )
        raise SoftmaxkitValueError(msg)


def _result_dtype(xp: Any, dtype: object) -> Any:
    """``dtype`` as a floating-point dtype of ``xp``, or a clear error."""
    try:
        probe = xp.asarray(0.0, dtype=dtype)
    except Exception as exc:  # each library raises its own type for an unknown dtype
        msg = (
            f"`dtype` must be a floating-point dtype of the state's array library, got "
            f"{dtype!r}; pass e.g. its float32 or float64"
        )
        raise SoftmaxkitTypeError(msg) from exc
    name = dtype_name(probe.dtype)
    if name not in ("float16", "bfloat16", "float32", "float64"):
        msg = (
            f"`dtype` must be float16, bfloat16, float32 or float64 (finished results are "
            f"floats of a supported width), got {name}; pass e.g. float32 or float64"
        )
        raise SoftmaxkitTypeError(msg)
    return probe.dtype


def merge(a: LogSumExpState, b: LogSumExpState, /) -> LogSumExpState:
    r"""Merge the states of two disjoint blocks of the same rows.

    Parameters
    ----------
    a, b : LogSumExpState
        States of the same rows (same shape, dtype and parts) over disjoint
        sets of classes.

    Returns
    -------
    LogSumExpState
        The state of the union of the two blocks.

    Notes
    -----
    .. math::

        M = \max(m_a, m_b),\quad C = \sum_{m_i = M} c_i,\quad
        S = \sum_{m_i = M} s_i + \sum_{m_i < M} e^{m_i - M}(c_i + s_i).

    Commutative bitwise, associative in exact arithmetic; the identity is the
    state of an empty block.

    Rounding: ``C`` is an exact integer; ``m_i - M`` is formed exactly as a
    double-word pair; the weight ``e^{m_i - M}`` is a double-word exponential
    with relative error below ``2**-63`` (measured ``2**-63.5`` in float64), the
    product with ``c_i + s_i`` and the sum are double-word operations (relative
    error about ``2**-104`` each). Every term is non-negative, so after merging
    ``k`` blocks in any order or grouping the computed ``S`` is within
    ``k * 2**-62`` relative of the exact one (float64 words; ``k * 2**-40`` for
    float32 words), and ``log1p((C - 1) + S)`` within the same relative bound
    plus its own final rounding. That is far below float32's half-ulp
    (``2**-24``): float32 results are the same whatever the blocks, except when
    the exact value lies within ``k * 2**-62`` of a rounding boundary.

    A merged ``(max, sum)`` pair or a logsumexp scalar cannot do this: with one
    maximal entry and ``S = 4.6e-22``, ``1 + S`` rounds to 1 and the loss to 0.

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit as sk
    >>> x = np.full((1, 32000), -50.0, np.float32)
    >>> x[0, 7] = 10.0
    >>> parts = [sk.LogSumExpState.from_block(x[:, i : i + 4000], target=np.array([7]),
    ...                                        offset=i) for i in range(0, 32000, 4000)]
    >>> loss = sk.merge_all(parts).cross_entropy()
    >>> float(loss[0])  # 31999 exp(-60); a (max, sum) merge gives 0
    2.8019958175860937e-22
    >>> bool(loss[0] == sk.cross_entropy(x, np.array([7]), reduction="none")[0])
    True
    """
    for v, name in ((a, "a"), (b, "b")):
        if not isinstance(v, LogSumExpState):
            msg = f"`{name}` must be a LogSumExpState, got {type(v).__name__}"
            raise SoftmaxkitTypeError(msg)
    if a.parts != b.parts:
        msg = f"the states carry different parts ({a.parts} and {b.parts}); build them alike"
        raise SoftmaxkitValueError(msg)
    if a.shape != b.shape:
        msg = f"the states have different shapes ({a.shape} and {b.shape}); merge rows alike"
        raise SoftmaxkitValueError(msg)
    if (
        dtype_name(a.m.dtype) != dtype_name(b.m.dtype)
        or dtype_name(a.dtype) != dtype_name(b.dtype)
        or a._xp is not b._xp
    ):
        msg = "the states come from different array libraries or dtypes; convert one first"
        raise SoftmaxkitTypeError(msg)
    f = call(a._xp, _statecore.merge, {"a": a._f, "b": b._f}, a._static())
    return LogSumExpState(f, a._xp, a.dtype, a._device)


def merge_all(states: Iterable[LogSumExpState], /) -> LogSumExpState:
    """Merge states left to right (a fixed order, so the bits are reproducible).

    Parameters
    ----------
    states : iterable of LogSumExpState
        At least one state; all of the same rows and parts.

    Returns
    -------
    LogSumExpState
        The state of all the blocks together.

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit as sk
    >>> x = np.arange(12.0).reshape(2, 6)
    >>> st = sk.merge_all(sk.LogSumExpState.from_block(x[:, i : i + 2]) for i in (0, 2, 4))
    >>> np.allclose(st.logsumexp(), sk.logsumexp(x))
    True
    """
    try:
        it = iter(states)
    except TypeError:
        msg = f"`states` must be an iterable of LogSumExpState, got {type(states).__name__}"
        raise SoftmaxkitTypeError(msg) from None
    try:
        acc = next(it)
    except StopIteration:
        msg = "merge_all needs at least one state"
        raise SoftmaxkitValueError(msg) from None
    for s in it:
        acc = merge(acc, s)
    return acc
