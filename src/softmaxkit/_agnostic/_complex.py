"""Array-agnostic complex logsumexp (log of a sum of complex exponentials).

For sums of amplitudes: ``log sum_i b_i exp(z_i)`` with the principal branch,
imaginary part in ``(-pi, pi]``, as in ``scipy.special.logsumexp``. Only
logsumexp takes complex input; softmax and the losses stay real. Like the real
path it uses only Array API calls and never branches on data in Python.

Algorithm, per reduced row: the entry with the largest real part (the first
one) is the pivot ``p``; the others are summed relative to it,
``s = sum_{i != p} (b_i / b_p) exp(z_i - z_p)``, and the result is
``z_p + log(b_p) + log1p(s)``, with the real part of ``log1p`` taken as
``log1p(s_r (2 + s_r) + s_i**2) / 2`` so a tiny ``s`` is not lost against 1.
Rows whose result is not finite (infinite entries, a zero sum) take the plain
``log(sum(b exp(z)))``, which is SciPy's convention there too. The arithmetic
is plain (no double-word), in complex128 where the backend has it.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["logsumexp_complex"]

Array = Any


def _wrap(xp: Any, t: Array) -> Array:
    """Map angles to ``(-pi, pi]``."""
    wrapped = -((-t + math.pi) % (2 * math.pi) - math.pi)
    return xp.where(xp.abs(t) < math.pi, t, wrapped)


def _cplx(xp: Any, re: Array, im: Array) -> Array:
    # re + 1j*im would turn an infinite re into a NaN imaginary part (inf * 1j)
    return xp.astype(re, xp.result_type(re.dtype, xp.complex64)) + im * 1j


def logsumexp_complex(
    x: Array,
    *,
    b: Array | None,
    where: Array | None,
    axes: tuple[int, ...],
    keepdims: bool,
    return_sign: bool,
    work: Any,
    out: Any,
) -> Array | tuple[Array, Array]:
    """Complex logsumexp of ``x`` over ``axes`` (validated input), in dtype ``work``."""
    xp = _namespace_of(x)
    z = xp.astype(x, work)
    axis = None if z.ndim == 0 else axes
    bz = None if b is None else xp.astype(b, work)
    if bz is not None:
        z, bz = xp.broadcast_arrays(z, bz)
    valid = xp.ones(z.shape, dtype=xp.bool, device=_device(z))
    if where is not None:
        valid = valid & where
    if bz is not None:
        valid = valid & (bz != 0)
    re = xp.real(z)
    shape = tuple(z.shape)
    if any(s == 0 for s in shape):
        rshape = tuple(1 if i in axes else s for i, s in enumerate(shape))
        res = xp.full(rshape, -math.inf, dtype=work, device=_device(z))
        sgn = xp.zeros(rshape, dtype=work, device=_device(z))
        return _finish(xp, res, sgn, axes, keepdims, return_sign, out)
    # naive value: SciPy's answer wherever the stable one is not finite
    ez = xp.where(valid, xp.exp(xp.where(valid, z, 0)), 0)
    if bz is not None:
        ez = ez * bz
    total = xp.sum(ez, axis=axis, keepdims=True)
    naive = xp.log(total)
    # pivot: the first entry with the largest real part
    rv = xp.where(valid, re, -math.inf)
    rmax = xp.max(rv, axis=axis, keepdims=True)
    fin = xp.isfinite(rmax)
    idx = _flat_index(xp, shape, z)
    n = math.prod(shape)
    score = xp.where(valid & (rv == rmax) & fin, n - idx, xp.zeros_like(idx))
    best = xp.max(score, axis=axis, keepdims=True)
    pivot = (score == best) & (best > 0)
    zp = xp.sum(xp.where(pivot, z, 0), axis=axis, keepdims=True)
    rest = valid & ~pivot & fin
    d = xp.where(rest, z - zp, 0)
    t = xp.where(rest, xp.exp(d), 0)
    if bz is not None:
        bp = xp.sum(xp.where(pivot, bz, 0), axis=axis, keepdims=True)
        bp_safe = xp.where(bp == 0, xp.ones_like(bp), bp)
        t = t * (bz / bp_safe)
        lbp = xp.log(bp_safe)
    s = xp.sum(t, axis=axis, keepdims=True)
    sr = xp.real(s)
    si = xp.imag(s)
    l_re = 0.5 * xp.log1p(sr * (2.0 + sr) + si * si)
    l_im = xp.atan2(si, 1.0 + sr)
    res_re = xp.real(zp) + l_re
    res_im = xp.imag(zp) + l_im
    if bz is not None:
        res_re = res_re + xp.real(lbp)
        res_im = res_im + xp.imag(lbp)
    stable = _cplx(xp, res_re, _wrap(xp, res_im))
    ok = fin & xp.isfinite(res_re) & xp.isfinite(res_im)
    res = xp.where(ok, stable, naive)
    mag = xp.abs(total)
    sgn_naive = xp.where(mag == 0, xp.zeros_like(total), total / xp.where(mag == 0, 1, mag))
    sgn = xp.where(ok, xp.exp(_cplx(xp, xp.zeros_like(res_im), _wrap(xp, res_im))), sgn_naive)
    return _finish(xp, res, sgn, axes, keepdims, return_sign, out)


def _finish(
    xp: Any,
    res: Array,
    sgn: Array,
    axes: tuple[int, ...],
    keepdims: bool,
    return_sign: bool,
    out: Any,
) -> Array | tuple[Array, Array]:
    if not keepdims and axes and res.ndim:
        res = xp.squeeze(res, axis=axes)
        sgn = xp.squeeze(sgn, axis=axes)
    if return_sign:
        real_out = xp.real(xp.zeros((), dtype=out)).dtype
        return xp.astype(xp.real(res), real_out), xp.astype(sgn, out)
    return xp.astype(res, out)


def _flat_index(xp: Any, shape: tuple[int, ...], like: Array) -> Array:
    n = math.prod(shape)
    return xp.reshape(xp.arange(n, device=_device(like)), shape)


def _device(a: Array) -> Any:
    from .._namespace import device_of

    return device_of(a)


def _namespace_of(a: Array) -> Any:
    import array_api_compat

    return array_api_compat.array_namespace(a)
