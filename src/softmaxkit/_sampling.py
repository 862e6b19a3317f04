"""Sampling a class from softmax(logits / T) by the Gumbel-max trick, on any library.

``argmax_k (z_k / T + G_k)`` with independent standard Gumbel noise ``G_k`` is
distributed exactly as ``softmax(z / T)`` (Gumbel 1954; Maddison, Tarlow & Minka
2014). No probability is formed, so nothing has to sum to one, float32 rounding
cannot make a sampler reject its input, and a batch of rows is sampled at once.
The noise comes from the caller's own generator: a NumPy ``Generator``, a torch
``Generator`` or a JAX key, so a seed reproduces the draws.
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import Any

import numpy as np

from ._errors import SoftmaxkitTypeError, SoftmaxkitValueError
from ._namespace import device_of, dtype_kind, has_float64, is_concrete, is_jax, is_torch, resolve
from ._softmax import softmax
from ._validation import check_class_axis, check_temperature

__all__ = ["sample"]

Array = Any


def _check_prob(value: object, name: str, *, low_open: bool) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        msg = (
            f"`{name}` must be a number in {'(0' if low_open else '[0'}, 1] or None, got {value!r}"
        )
        raise SoftmaxkitTypeError(msg)
    v = float(value)
    ok = (0.0 < v <= 1.0) if low_open else (0.0 <= v <= 1.0)
    if not ok:
        rng = "(0, 1]" if low_open else "[0, 1]"
        msg = f"`{name}` must lie in {rng}, got {v}"
        raise SoftmaxkitValueError(msg)
    return v


def _check_count(value: object, name: str, *, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        msg = f"`{name}` must be an integer or None, got {value!r}"
        raise SoftmaxkitTypeError(msg)
    v = int(value)
    if v < minimum:
        msg = f"`{name}` must be at least {minimum}, got {v}"
        raise SoftmaxkitValueError(msg)
    return v


def _exponential(xp: Any, rng: object, shape: tuple[int, ...], dtype: Any, like: Array) -> Array:
    """Standard exponential noise of ``shape`` from the caller's generator."""
    dev = device_of(like)
    if is_jax(xp):
        jax = sys.modules["jax"]
        if rng is None:
            msg = (
                "`rng` is required for JAX arrays (JAX has no global random state); "
                "pass a key such as jax.random.key(0) or an integer seed"
            )
            raise SoftmaxkitValueError(msg)
        key = jax.random.key(int(rng)) if isinstance(rng, numbers.Integral) else rng
        return jax.random.exponential(key, shape, dtype=dtype)
    if is_torch(xp) and not isinstance(rng, np.random.Generator):
        torch = sys.modules["torch"]
        gen = rng
        if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
            gen = torch.Generator(device=like.device).manual_seed(int(rng))
        elif rng is not None and not isinstance(rng, torch.Generator):
            msg = (
                f"`rng` must be a torch.Generator, a numpy Generator or an integer seed for "
                f"torch tensors, got {type(rng).__name__}"
            )
            raise SoftmaxkitTypeError(msg)
        out = torch.empty(shape, dtype=dtype, device=like.device)
        return out.exponential_(generator=gen)
    if rng is None or (isinstance(rng, numbers.Integral) and not isinstance(rng, bool)):
        if rng is not None and int(rng) < 0:
            msg = f"`rng` as an integer seed must be 0 or more (NumPy's rule), got {int(rng)}"
            raise SoftmaxkitValueError(msg)
        gen_np = np.random.default_rng(None if rng is None else int(rng))
    elif isinstance(rng, np.random.Generator):
        gen_np = rng
    else:
        msg = f"`rng` must be a numpy.random.Generator or an integer seed, got {type(rng).__name__}"
        raise SoftmaxkitTypeError(msg)
    noise = gen_np.standard_exponential(size=shape)
    if dev is None:
        return xp.asarray(noise, dtype=dtype)
    return xp.asarray(noise, dtype=dtype, device=dev)


def _keep_top_k(xp: Any, z: Array, keep: Array, k: int) -> Array:
    """Keep the entries at least as large as the k-th largest (ties at the cut stay)."""
    C = int(z.shape[-1])
    if k >= C:
        return keep
    masked = xp.where(keep, z, -math.inf)
    srt = xp.sort(masked, axis=-1, descending=True)
    return keep & (masked >= srt[..., k - 1 : k])


def _keep_top_p(xp: Any, p: Array, keep: Array, top_p: float) -> Array:
    """Keep the smallest set of most likely classes whose mass reaches ``top_p``.

    In descending order a class stays while the mass before it is below
    ``top_p``; every class as likely as the last one kept stays too.
    """
    srt = xp.sort(p, axis=-1, descending=True)
    before = xp.cumulative_sum(srt, axis=-1) - srt
    n_keep = xp.sum(xp.astype(before < top_p, xp.int32), axis=-1, keepdims=True)
    n_keep = xp.where(n_keep > 0, n_keep, 1)
    pos = xp.arange(int(p.shape[-1]), dtype=xp.int32, device=device_of(p))
    last = xp.sum(xp.where(pos == (n_keep - 1), srt, 0.0), axis=-1, keepdims=True)
    return keep & (p >= last)


def sample(
    logits: Array,
    /,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    rng: Any = None,
    n: int | None = None,
    axis: int = -1,
) -> Array:
    r"""Draw class indices from ``softmax(logits / temperature)`` by the Gumbel-max trick.

    .. math::

        k^\ast = \arg\max_k \Bigl(\frac{z_k}{T} + G_k\Bigr),\qquad
        G_k = -\log E_k,\ E_k \sim \operatorname{Exp}(1)\ \text{i.i.d.},

    is distributed as ``softmax(z / T)``. Optional filters run in the order of
    Hugging Face's sampling warpers, after the temperature: ``top_k`` keeps the
    ``k`` largest logits, ``top_p`` the smallest set of most likely classes whose
    probability reaches ``top_p`` (nucleus sampling), ``min_p`` the classes whose
    probability is at least ``min_p`` times the largest. Filtered classes are
    never drawn; the rest keep their relative probabilities.

    Parameters
    ----------
    logits : array
        Unnormalised log-probabilities, classes along ``axis``; every other axis
        is a batch of independent rows. ``-inf`` marks impossible classes.
    temperature : float, optional
        ``T > 0``; below 1 sharpens, above 1 flattens. For ``T = 0`` (greedy) use
        :func:`predict`.
    top_k : int, optional
        Keep the ``top_k`` largest logits (and any tied with the last).
    top_p : float in (0, 1], optional
        Nucleus sampling threshold.
    min_p : float in [0, 1], optional
        Keep classes with ``p >= min_p * max(p)``.
    rng : optional
        The random source, from the logits' own library: a
        ``numpy.random.Generator`` (any library; the noise is made on the host),
        a ``torch.Generator`` (torch), a JAX key (JAX, required there), or an
        integer seed for a fresh generator of that kind. ``None`` uses fresh
        entropy (NumPy) or torch's global generator.
    n : int, optional
        Number of draws per row; adds a leading axis of length ``n``. Default
        one draw per row and no extra axis.
    axis : int, optional
        The class axis. Default ``-1``.

    Returns
    -------
    array of int
        Class indices with the shape of ``logits`` without ``axis`` (with a
        leading ``n`` when given), in the caller's array library.

    Raises
    ------
    SoftmaxkitValueError
        If a row contains NaN or has no class with positive probability, or an
        option is out of range.

    See Also
    --------
    predict : the most likely class (temperature 0).
    softmax : the probabilities being sampled.

    Notes
    -----
    Rows with ``+inf`` logits sample uniformly among those entries, the limit of
    softmax. Works on NumPy, array-api-strict, Dask and CuPy with a NumPy
    ``Generator``, on torch with a torch ``Generator`` and on JAX with a key.

    References
    ----------
    .. [1] E. J. Gumbel, "Statistical theory of extreme values and some practical
       applications", NBS Applied Mathematics Series 33, 1954.
    .. [2] C. J. Maddison, D. Tarlow, T. Minka, "A* sampling", NeurIPS 2014.
    .. [3] A. Holtzman et al., "The curious case of neural text degeneration",
       ICLR 2020 (top-p).
    .. [4] M. N. Nguyen et al., "Turning up the heat: min-p sampling for creative
       and coherent LLM outputs", ICLR 2025.

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit as sk
    >>> logits = np.array([2.0, 1.0, 0.1])
    >>> draws = sk.sample(logits, rng=np.random.default_rng(0), n=10_000)
    >>> (np.bincount(draws) / 10_000).round(2)      # softmax: 0.659, 0.242, 0.099
    array([0.66, 0.24, 0.1 ])
    >>> set(sk.sample(logits, top_k=2, rng=1, n=1000).tolist())
    {0, 1}
    """
    xp, (za,) = resolve(logits, names=("logits",))
    kind = dtype_kind(xp, za.dtype)
    if kind not in ("float", "half", "int", "bool"):
        msg = f"`logits` must be a real array, got dtype {za.dtype}"
        raise SoftmaxkitTypeError(msg)
    ax = check_class_axis(axis, za.ndim)
    t = check_temperature(temperature)
    k = _check_count(top_k, "top_k", minimum=1)
    tp = _check_prob(top_p, "top_p", low_open=True)
    mp = _check_prob(min_p, "min_p", low_open=False)
    draws = _check_count(n, "n", minimum=0)
    C = int(za.shape[ax])
    if C == 0:
        msg = "`logits` has no classes along `axis`; there is nothing to sample"
        raise SoftmaxkitValueError(msg)
    dev = device_of(za)
    work = xp.float64 if has_float64(xp, dev) else xp.float32
    z = xp.astype(za, work)
    if ax != za.ndim - 1:
        z = xp.moveaxis(z, ax, -1)
    if is_concrete(z):
        if bool(xp.any(xp.isnan(z))):
            msg = "`logits` contains NaN; a row with NaN has no distribution to sample from"
            raise SoftmaxkitValueError(msg)
        if bool(xp.any(xp.all(z == -math.inf, axis=-1))):
            msg = (
                "`logits` has a row that is all -inf, so no class has positive probability; "
                "leave at least one class finite in every row"
            )
            raise SoftmaxkitValueError(msg)
    # +inf entries: the softmax limit is uniform over them, so sample those uniformly.
    has_inf = xp.any(z == math.inf, axis=-1, keepdims=True)
    z = xp.where(has_inf, xp.where(z == math.inf, xp.zeros_like(z), -math.inf), z)
    if t != 1.0:
        z = z / t
    keep = z > -math.inf
    if k is not None:
        keep = _keep_top_k(xp, z, keep, k)
    if tp is not None and tp < 1.0:
        p = softmax(z, where=keep, precision="fast")
        keep = _keep_top_p(xp, p, keep, tp)
    if mp is not None and mp > 0.0:
        p = softmax(z, where=keep, precision="fast")
        keep = keep & (p >= mp * xp.max(p, axis=-1, keepdims=True))
    shape = tuple(int(s) for s in z.shape)
    if draws is not None:
        shape = (draws, *shape)
        z = xp.broadcast_to(z[None, ...], shape)
        keep = xp.broadcast_to(keep[None, ...], shape)
    e = _exponential(xp, rng, shape, work, za)
    scores = xp.where(keep, z - xp.log(e), -math.inf)
    return xp.argmax(scores, axis=-1)
