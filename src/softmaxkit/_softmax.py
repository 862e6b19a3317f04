"""Public softmax and log-softmax: resolve the namespace, validate, delegate."""

from __future__ import annotations

from typing import Any

from . import _dispatch
from ._agnostic import _normalize
from ._namespace import call, make_plan, numpy_scalars, resolve
from ._validation import check_axes, check_temperature, check_where

__all__ = ["log_softmax", "softmax"]

Array = Any


def _prepare(
    x: object, axis: object, where: object, temperature: object, precision: object
) -> tuple[Any, Array, tuple[int, ...], Array | None, float, Any]:
    xp, (xa, wa) = resolve(x, where, names=("x", "where"))
    plan = make_plan(xp, xa, precision, name="x")
    axes = check_axes(axis, xa.ndim)
    mask = check_where(xp, wa, tuple(xa.shape))
    t = check_temperature(temperature)
    return xp, xa, axes, mask, t, plan


def softmax(
    x: Array,
    /,
    *,
    axis: int | tuple[int, ...] | None = -1,
    where: Array | None = None,
    temperature: float = 1.0,
    precision: str = "accurate",
    out: Array | None = None,
    threads: int | None = None,
) -> Array:
    r"""Softmax: turn logits into probabilities that sum to one along ``axis``.

    .. math::

        \operatorname{softmax}(x)_i = \frac{e^{x_i / T}}{\sum_j e^{x_j / T}}
        = \frac{e^{x_i/T - a}}{c + s},\qquad a = \max_j x_j / T,

    where ``c`` counts the entries equal to the maximum and ``s`` sums the other
    shifted exponentials (Blanchard, Higham & Higham's algorithm).

    Parameters
    ----------
    x : array
        Logits, any real dtype. Integer and bool inputs are promoted to the
        namespace's default float; float16 and bfloat16 are computed in a wider
        dtype and rounded once.
    axis : int, tuple of ints or None, optional
        The axis or axes that sum to one; ``None`` normalises over all elements.
        Default ``-1`` (the last axis), as in PyTorch and JAX; note that
        ``scipy.special.softmax`` defaults to ``axis=None``.
    where : boolean array, optional
        Entries to include, broadcastable to ``x``. Excluded entries get
        probability 0; a row with no included entry is all 0 (not NaN).
    temperature : float, optional
        Divides the logits before normalising; ``T > 1`` flattens the
        distribution, ``T < 1`` sharpens it. Must be positive and finite.
    precision : {"accurate", "fast"}, optional
        ``"accurate"`` (default) rounds correctly in practice (max error 0.5 ulp
        + 1 %): float32 data is computed in float64 where the backend has it,
        float64 data in double-word arithmetic. ``"fast"`` computes in the input
        precision (at least float32).
    out : numpy.ndarray, optional
        NumPy inputs only: a writeable array with the shape and result dtype of
        ``x`` to write the result into (skips the allocation); it is returned.
    threads : int, optional
        Worker threads of the native CPU kernels (NumPy float32/float64 input).
        Default: the ``SOFTMAXKIT_NUM_THREADS`` environment variable, or else the
        number of physical cores. Results do not depend on it.

    Returns
    -------
    array
        Same shape, array type and device as ``x``; the dtype of ``x`` (floats)
        or the default float (integers, bool).

    See Also
    --------
    log_softmax : log-probabilities without underflow to ``-inf``.
    logsumexp : the normaliser ``log sum exp(x)``.

    Notes
    -----
    Special values follow the limits, where peers return NaN: a row whose
    entries are all ``-inf`` or masked is all 0; ``+inf`` entries share the
    probability equally (one-hot for a single ``+inf``); a NaN makes its row NaN.
    An empty ``axis`` returns an empty array.

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham, N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit as sk
    >>> sk.softmax(np.array([2.0, 1.0, 0.1])).round(3)
    array([0.659, 0.242, 0.099])
    >>> sk.softmax(np.array([1.5, 0.8, -0.2]), temperature=2.0).round(3)
    array([0.469, 0.331, 0.2  ])
    >>> sk.softmax(np.array([np.inf, 0.0, np.inf]))
    array([0.5, 0. , 0.5])
    >>> sk.softmax(np.array([1.0, 2.0]), where=np.array([False, False]))
    array([0., 0.])
    """
    res = _dispatch.quick_normalize(x, axis, where, temperature, precision, out, threads, False)
    if res is not None:
        return res
    xp, xa, axes, mask, t, plan = _prepare(x, axis, where, temperature, precision)
    nthreads = _dispatch.check_threads(threads)
    o = _dispatch.check_out(xa, out, plan)
    res = _dispatch.softmax(xa, axes, mask, t, plan, out=o, threads=nthreads)
    if res is not None:
        return res if o is not None else numpy_scalars(xp, res)
    res = call(
        xp,
        _normalize.softmax,
        {"x": xa, "where": mask},
        {"axes": axes, "temperature": t, "plan": plan},
    )
    return numpy_scalars(xp, _dispatch.finish_out(res, o))


def log_softmax(
    x: Array,
    /,
    *,
    axis: int | tuple[int, ...] | None = -1,
    where: Array | None = None,
    temperature: float = 1.0,
    precision: str = "accurate",
    out: Array | None = None,
    threads: int | None = None,
) -> Array:
    r"""Log-softmax: the logarithm of :func:`softmax`, computed without forming it.

    .. math::

        \log\operatorname{softmax}(x)_i = (x_i/T - a) - \log\bigl(c + s\bigr)
        = (x_i/T - a) - \operatorname{log1p}\bigl((c - 1) + s\bigr)

    with ``a``, ``c`` and ``s`` as in :func:`softmax`. Both terms are
    non-positive, so nothing cancels, and ``log1p`` keeps the tiny
    log-probability of a dominant logit: ``log_softmax([0, -40])[0]`` is
    ``-4.248e-18`` here, where PyTorch, JAX and SciPy return exactly 0.

    Parameters
    ----------
    x : array
        Logits (see :func:`softmax` for dtypes).
    axis : int, tuple of ints or None, optional
        Axis or axes to normalise over. Default ``-1`` (SciPy defaults to all axes).
    where : boolean array, optional
        Entries to include; excluded entries and rows with nothing included give
        ``-inf``.
    temperature : float, optional
        Divides the logits first. Must be positive and finite.
    precision : {"accurate", "fast"}, optional
        See :func:`softmax`.
    out : numpy.ndarray, optional
        See :func:`softmax`.
    threads : int, optional
        See :func:`softmax`.

    Returns
    -------
    array
        Log-probabilities, same shape, array type and device as ``x``.

    See Also
    --------
    softmax, logsumexp, cross_entropy

    Notes
    -----
    ``+inf`` entries get ``-log(k)`` for ``k`` infinite entries and the others
    ``-inf``; a NaN makes its row NaN; an empty axis returns an empty array.

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham, N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit as sk
    >>> sk.log_softmax(np.array([2.0, 1.0, 0.1])).round(3)
    array([-0.417, -1.417, -2.317])
    >>> float(sk.log_softmax(np.array([0.0, -40.0], dtype=np.float32))[0])
    -4.24835413113866e-18
    >>> x = np.array([0.0, -40.0], dtype=np.float32)
    >>> float(np.log(sk.softmax(x))[0])  # the naive way rounds to 0
    0.0
    >>> sk.log_softmax(np.array([0.0, -800.0]))
    array([   0., -800.])
    """
    res = _dispatch.quick_normalize(x, axis, where, temperature, precision, out, threads, True)
    if res is not None:
        return res
    xp, xa, axes, mask, t, plan = _prepare(x, axis, where, temperature, precision)
    nthreads = _dispatch.check_threads(threads)
    o = _dispatch.check_out(xa, out, plan)
    res = _dispatch.log_softmax(xa, axes, mask, t, plan, out=o, threads=nthreads)
    if res is not None:
        return res if o is not None else numpy_scalars(xp, res)
    res = call(
        xp,
        _normalize.log_softmax,
        {"x": xa, "where": mask},
        {"axes": axes, "temperature": t, "plan": plan},
    )
    return numpy_scalars(xp, _dispatch.finish_out(res, o))
