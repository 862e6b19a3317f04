"""Double-word ("double-double" / "float-float") arithmetic over any array namespace.

The accurate mode must round its results correctly even when no wider dtype
exists: float64 data everywhere, and float32 data on backends without float64
(JAX with x64 disabled, some accelerators). A value is then carried as an
unevaluated sum ``hi + lo`` of two numbers of the working dtype, which doubles
the precision. Only ``+``, ``-``, ``*`` and ``/`` are needed from the backend
(all correctly rounded in IEEE arithmetic), plus ``round``/``floor`` and a table
lookup, so the result does not depend on the quality of the backend's ``exp``.

Algorithms (all error-free transformations, no fused multiply-add required):

* ``two_sum`` — Knuth's TwoSum: ``a + b == s + e`` exactly.
* ``two_prod`` — Dekker's product with Veltkamp splitting: ``a * b == p + e``.
* ``exp`` — Tang's table method, ``exp(x) = 2**m * 2**(j/64) * exp(r)`` with the
  64 table entries stored as double-word constants and ``|r| <= ln2/128``;
  relative error about ``2**-(p + 8)`` for a ``p``-bit working precision.
* ``log1p`` — one Newton step on the backend's ``log1p`` using the double-word
  ``expm1``.
* ``sum`` — Rump's error-free vector extraction against a per-row power of two,
  so the high parts add exactly in any order and only tiny remainders round.

References
----------
.. [1] T. J. Dekker, "A floating-point technique for extending the available
   precision", Numer. Math. 18 (1971).
.. [2] P. T. P. Tang, "Table-driven implementation of the exponential function in
   IEEE floating-point arithmetic", ACM TOMS 15(2) (1989).
.. [3] S. M. Rump, T. Ogita, S. Oishi, "Accurate floating-point summation part I:
   faithful rounding", SIAM J. Sci. Comput. 31(1) (2008).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, localcontext
from functools import cache
from typing import Any

import numpy as np
from array_api_compat import is_dask_namespace

__all__ = ["DDArith", "DDConstants", "PlainArith", "constants", "two_prod", "two_sum"]

Array = Any

_N = 64  # table size: 2**(j/64), j = 0..63


@dataclass(frozen=True)
class DDConstants:
    """Per-dtype constants of the double-word kernels."""

    precision: int  # significand bits p
    emax: int  # largest binary exponent of a finite number
    splitter: float  # 2**ceil(p/2) + 1
    inv_ln2_n: float  # N / ln 2
    ln2_n_1: float  # ln2/N split in three parts; k * part1 and k * part2 are exact
    ln2_n_2: float
    ln2_n_3: float
    exp_lo_cut: float  # below this exp(x) is 0 in the working dtype
    exp_hi_cut: float  # above this exp(x) overflows; arguments are clamped here
    scale_shift: int  # 2**m is applied as (v * 2**(m + shift)) * 2**-shift
    row_scale: int  # exp(x - max) is formed times 2**row_scale (see DDArith.exp)
    table_hi: tuple[float, ...]
    table_lo: tuple[float, ...]
    poly: tuple[float, ...]  # 1/2!, 1/3!, ..., coefficients of Q in expm1(r) = r + r^2 Q(r)


def _round_bits(value: Decimal, bits: int) -> float:
    """Round a positive Decimal to a float with at most ``bits`` significant bits."""
    f = float(value)
    e = math.frexp(f)[1]
    quantum = Decimal(2) ** (e - bits)
    return float((value / quantum).to_integral_value() * quantum)


@cache
def constants(name: str) -> DDConstants:
    """Constants for ``"float64"`` or ``"float32"`` working precision."""

    def cast(v: Any) -> float:
        return float(v) if name == "float64" else float(np.float32(v))

    if name == "float64":
        p, kbits = 53, 17
        lo_cut, hi_cut, shift, row_scale = -745.2, 709.0, 64, 600
    elif name == "float32":
        p, kbits = 24, 14
        lo_cut, hi_cut, shift, row_scale = -103.98, 88.0, 32, 64
    else:  # pragma: no cover - guarded by the callers
        msg = f"no double-word constants for {name}"
        raise ValueError(msg)
    with localcontext() as ctx:
        ctx.prec = 60
        ln2_n = Decimal(2).ln() / _N
        c1 = _round_bits(ln2_n, p - kbits)
        rest = ln2_n - Decimal(c1)
        c2 = _round_bits(rest, p - kbits)
        c3 = cast(rest - Decimal(c2))
        table_hi = []
        table_lo = []
        for j in range(_N):
            t = (Decimal(j) / _N * Decimal(2).ln()).exp()
            hi = cast(t)
            lo = cast(t - Decimal(hi))
            table_hi.append(hi)
            table_lo.append(lo)
        inv = cast(_N / Decimal(2).ln())
    poly = tuple(cast(1.0 / math.factorial(i)) for i in range(2, 9))
    return DDConstants(
        precision=p,
        emax=1023 if name == "float64" else 127,
        splitter=float(2 ** ((p + 1) // 2) + 1),
        inv_ln2_n=inv,
        ln2_n_1=c1,
        ln2_n_2=c2,
        ln2_n_3=c3,
        exp_lo_cut=lo_cut,
        exp_hi_cut=hi_cut,
        scale_shift=shift,
        row_scale=row_scale,
        table_hi=tuple(table_hi),
        table_lo=tuple(table_lo),
        poly=poly,
    )


def two_sum(a: Array, b: Array) -> tuple[Array, Array]:
    """``s + e == a + b`` exactly, for finite ``a``, ``b`` (Knuth)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def fast_two_sum(a: Array, b: Array) -> tuple[Array, Array]:
    """``s + e == a + b`` exactly when ``|a| >= |b|`` (Dekker)."""
    s = a + b
    e = b - (s - a)
    return s, e


def split(a: Array, splitter: float) -> tuple[Array, Array]:
    """Veltkamp split of ``a`` into two halves of at most ``p/2`` bits each."""
    c = splitter * a
    hi = c - (c - a)
    return hi, a - hi


def two_prod(a: Array, b: Array, splitter: float) -> tuple[Array, Array]:
    """``p + e == a * b`` exactly, for finite ``a``, ``b`` away from overflow (Dekker)."""
    p = a * b
    ah, al = split(a, splitter)
    bh, bl = split(b, splitter)
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


def far_below(xp: Any, x: Array, top: Array) -> Array:
    """Where ``x`` is more than the largest float below ``top`` (finite, broadcastable):
    ``x - top`` would overflow there, and ``exp(x - top)`` is 0. Computed without
    overflowing; the limit is that of ``top``'s own dtype (under ``jax.jit`` with x64
    off a declared float64 may hold float32)."""
    return x < xp.where(top > 0, top, 0.0) - float(xp.finfo(top.dtype).max)


class DDArith:
    """Double-word arithmetic on pairs ``(hi, lo)`` of arrays in one namespace."""

    def __init__(self, xp: Any, dtype: Any, name: str, device: Any) -> None:
        self.xp = xp
        self.dtype = dtype
        self.device = device
        self.c = constants(name)
        self._tables: tuple[Array, Array] | None = None
        self.lazy_chunks = bool(is_dask_namespace(xp))

    # -- helpers --------------------------------------------------------------------
    def const(self, value: float) -> Array:
        return self.xp.asarray(value, dtype=self.dtype, device=self.device)

    def _table(self) -> tuple[Array, Array]:
        if self._tables is None:
            xp = self.xp
            hi = xp.asarray(self.c.table_hi, dtype=self.dtype, device=self.device)
            lo = xp.asarray(self.c.table_lo, dtype=self.dtype, device=self.device)
            self._tables = (hi, lo)
        return self._tables

    def _lookup(self, table: Array, idx: Array) -> Array:
        xp = self.xp
        shape = idx.shape
        if any(s is None for s in shape):
            # a TF graph's partly unknown shape, which reshape cannot restore: its
            # namespace's take (tf.gather) takes indices of any rank
            return xp.take(table, idx, axis=0)
        flat = xp.reshape(idx, (-1,))
        return xp.reshape(xp.take(table, flat, axis=0), shape)

    def _table_by_bits(self, j: Array) -> tuple[Array, Array]:
        """``2**(j/64)`` as a double-word product over the bits of ``j``.

        Used where a flat table lookup is costly (chunked lazy arrays, whose
        reshape to 1-D would rechunk); error about 6 double-word roundings.
        """
        xp = self.xp
        hi = xp.ones_like(j)
        lo = xp.zeros_like(j)
        rest = j
        for bit in (32, 16, 8, 4, 2, 1):
            on = rest >= bit
            rest = xp.where(on, rest - bit, rest)
            f_hi = xp.where(on, self.c.table_hi[bit], 1.0)
            f_lo = xp.where(on, self.c.table_lo[bit], 0.0)
            hi, lo = self.mul((hi, lo), (f_hi, f_lo))
        return hi, lo

    def pow2(self, m: Array) -> Array:
        """``2**m`` for integer-valued ``m`` in the normal range (exact)."""
        return self.xp.pow(self.const(2.0), m)

    # -- arithmetic -----------------------------------------------------------------
    def add(self, a: tuple[Array, Array], b: tuple[Array, Array]) -> tuple[Array, Array]:
        s, e = two_sum(a[0], b[0])
        e = e + (a[1] + b[1])
        return fast_two_sum(s, e)

    def sub(self, a: tuple[Array, Array], b: tuple[Array, Array]) -> tuple[Array, Array]:
        return self.add(a, (-b[0], -b[1]))

    def mul(self, a: tuple[Array, Array], b: tuple[Array, Array]) -> tuple[Array, Array]:
        p, e = two_prod(a[0], b[0], self.c.splitter)
        e = e + (a[0] * b[1] + a[1] * b[0])
        return fast_two_sum(p, e)

    def div(self, a: tuple[Array, Array], b: tuple[Array, Array]) -> tuple[Array, Array]:
        """``a / b`` for ``b`` finite and nonzero: one correction step after the quotient."""
        q = a[0] / b[0]
        p, pe = two_prod(q, b[0], self.c.splitter)
        rem = (((a[0] - p) - pe) + a[1]) - q * b[1]
        return fast_two_sum(q, rem / b[0])

    def value(self, a: tuple[Array, Array]) -> Array:
        """Round the pair to one number of the working dtype."""
        return a[0] + a[1]

    def scaled_value(self, a: tuple[Array, Array], k: int) -> Array:
        """Round ``(hi + lo) * 2**k`` (``k <= 0``) once to the working dtype.

        Normal results: the pair is rounded at its own scale and the power of two
        applied exactly. Results below the normal range: rounded straight onto the
        subnormal grid (see :meth:`ldexp`), never first to ``p`` bits and again.
        """
        if k == 0:
            return self.value(a)
        xp = self.xp
        v = self.value(a) * 2.0**k
        hi, lo = self.ldexp(a, k)
        tiny = float(xp.finfo(self.dtype).smallest_normal)
        return xp.where(xp.abs(v) >= tiny, v, hi + lo)

    def lift(self, a: Array) -> tuple[Array, Array]:
        return a, self.xp.zeros_like(a)

    def hi(self, a: tuple[Array, Array]) -> Array:
        return a[0]

    def neg(self, a: tuple[Array, Array]) -> tuple[Array, Array]:
        return -a[0], -a[1]

    def where(self, cond: Array, a: tuple[Array, Array], b: float) -> tuple[Array, Array]:
        """Elementwise ``a if cond else b`` for a scalar ``b``."""
        xp = self.xp
        return xp.where(cond, a[0], b), xp.where(cond, a[1], 0.0)

    def select(
        self, cond: Array, a: tuple[Array, Array], b: tuple[Array, Array]
    ) -> tuple[Array, Array]:
        """Elementwise ``a if cond else b`` for two double-word values."""
        xp = self.xp
        return xp.where(cond, a[0], b[0]), xp.where(cond, a[1], b[1])

    def gather(self, onehot: Array, a: tuple[Array, Array], axis: int) -> tuple[Array, Array]:
        """The entry of ``a`` selected by a one-hot mask along ``axis`` (keepdims, exact)."""
        xp = self.xp
        hi = xp.sum(xp.where(onehot, a[0], 0.0), axis=axis, keepdims=True)
        lo = xp.sum(xp.where(onehot, a[1], 0.0), axis=axis, keepdims=True)
        return hi, lo

    # -- elementary functions -------------------------------------------------------
    def _exp_parts(
        self, x_hi: Array, x_lo: Array
    ) -> tuple[Array, Array, Array, Array, Array, Array]:
        """Shared reduction of exp/expm1.

        Returns ``(m, t_hi, a, b, rest, p_hi)`` such that, before scaling by
        ``2**m``, ``exp(x) = t_hi + a + (b + rest)`` with ``(a, b) = t_hi * p_hi``
        exactly. Arguments must be finite and inside the clamp range.
        """
        xp = self.xp
        c = self.c
        k = xp.round(x_hi * c.inv_ln2_n)
        j = k - _N * xp.floor(k / _N)
        m = (k - j) / _N
        r0 = x_hi - k * c.ln2_n_1  # exact (Sterbenz), k * ln2_n_1 exact
        r_hi, r_e = two_sum(r0, -(k * c.ln2_n_2))
        r_lo = r_e - k * c.ln2_n_3 + x_lo
        q = c.poly[-1]
        q = q * r_hi + c.poly[-2]
        for coeff in reversed(c.poly[:-2]):
            q = q * r_hi + coeff
        # expm1(r) = p_hi + p_lo with p_hi = r_hi
        p_hi = r_hi
        p_lo = r_lo + r_hi * r_lo + (r_hi * r_hi) * q
        if self.lazy_chunks:
            t_hi, t_lo = self._table_by_bits(j)
        else:
            jj = xp.astype(j, xp.int32)
            t_hi_tab, t_lo_tab = self._table()
            t_hi = self._lookup(t_hi_tab, jj)
            t_lo = self._lookup(t_lo_tab, jj)
        a, b = two_prod(t_hi, p_hi, c.splitter)
        rest = t_lo + t_hi * p_lo + t_lo * (p_hi + p_lo)
        return m, t_hi, a, b, rest, p_hi

    def _clamp(self, x_hi: Array, x_lo: Array, lo_cut: float) -> tuple[Array, Array, Array]:
        xp = self.xp
        c = self.c
        ok = (x_hi >= lo_cut) & (x_hi <= c.exp_hi_cut)
        return xp.where(ok, x_hi, 0.0), xp.where(ok, x_lo, 0.0), ok

    def exp(self, x: tuple[Array, Array], scale: int = 0) -> tuple[Array, Array]:
        """Double-word ``exp(x) * 2**scale`` of a double-word argument.

        Arguments below the underflow threshold give 0, NaN gives NaN and arguments
        above ``exp_hi_cut`` give ``inf`` (the engine never produces those).

        A positive ``scale`` (for arguments ``<= 0`` only) keeps results that would
        be subnormal, or whose low part would be, in the normal range, where both
        words carry full precision: sums and quotients of such terms are then
        formed exactly and rounded once when the scale is removed, instead of every
        term being rounded to the subnormal grid first.
        """
        xp = self.xp
        lo_cut = self.c.exp_lo_cut - scale * math.log(2.0)
        x_hi, x_lo, ok = self._clamp(x[0], x[1], lo_cut)
        m, t_hi, a, b, rest, _ = self._exp_parts(x_hi, x_lo)
        s, e = fast_two_sum(t_hi, a)
        e = e + (b + rest)
        hi, lo = fast_two_sum(s, e)
        shift = self.c.scale_shift
        up = self.pow2(m + (shift + scale))
        down = self.const(2.0 ** (-shift))
        hi = (hi * up) * down
        lo = (lo * up) * down
        x0 = x[0]
        big = xp.where(xp.isnan(x0), x0, math.inf)
        hi = xp.where(ok, hi, xp.where(x0 < lo_cut, 0.0, big))
        lo = xp.where(ok, lo, 0.0)
        return hi, lo

    def ldexp(self, a: tuple[Array, Array], k: int) -> tuple[Array, Array]:
        """``a * 2**k``, for ``k <= 0``: exact, or rounded once where it underflows.

        A high word that falls below the normal range is rounded to the subnormal
        grid and what it loses is carried into the low word, which is rounded to
        the same grid, so ``hi + lo`` (an exact sum of two grid points then) is the
        correctly rounded value of the scaled pair rather than a double rounding.
        """
        if k == 0:
            return a
        f = 2.0**k
        hi = a[0] * f
        lost = a[0] - hi * 2.0 ** (-k)  # exact: what rounding to the grid dropped
        return hi, (lost + a[1]) * f

    def expm1(self, x: tuple[Array, Array]) -> tuple[Array, Array]:
        """Double-word ``expm1`` for finite arguments in ``[lo_cut, hi_cut]``.

        Accurate relative to ``expm1(x)`` itself, also for tiny ``x``.
        """
        x_hi, x_lo, _ = self._clamp(x[0], x[1], self.c.exp_lo_cut)
        m, t_hi, a, b, rest, _ = self._exp_parts(x_hi, x_lo)
        scale = self.pow2(m)
        base, base_e = two_sum(scale * t_hi, self.const(-1.0))
        s, e = two_sum(base, scale * a)
        e = e + base_e + scale * (b + rest)
        return fast_two_sum(s, e)

    def log1p(self, a: tuple[Array, Array]) -> tuple[Array, Array]:
        """Double-word ``log1p`` for finite ``a >= 0``: one Newton step on ``expm1``."""
        xp = self.xp
        l0 = xp.log1p(a[0])
        e_hi, e_lo = self.expm1((l0, xp.zeros_like(l0)))
        d_hi, d_e = two_sum(e_hi, -a[0])
        delta = d_hi + (d_e + (e_lo - a[1]))
        return fast_two_sum(l0, -delta / (1.0 + a[0]))

    def sum(self, t: tuple[Array, Array], axis: Any, n: int) -> tuple[Array, Array]:
        """Double-word sum of ``t`` over ``axis`` (keepdims), for ``n`` terms per row.

        The high parts are split against ``sigma = 2**ceil(log2(n * max|t|))``: the
        parts above ``ulp(sigma)`` add exactly in any order. Each such pass takes
        about ``p - log2(n) - 2`` more bits of every term out exactly, so the
        number of passes grows with ``n`` (2 for float64 rows up to 2**20 terms,
        up to 14 for float32 rows of 10**6), until the remainders, summed by the
        backend as they come, are far below one unit in the last place of the
        double-word result. (Past ``n = 2**(p - 3)`` a pass extracts nothing more;
        the backend's sum of the remainders then sets the accuracy.)

        Rows whose largest term is within ``4 n`` of the float range (where
        ``sigma`` itself would overflow) are summed times ``2**-k``, ``k =
        ceil(log2 n) + 2``, and scaled back: exact for their large terms, and a
        sum that leaves the range is then an infinity of its sign, without a
        floating-point warning.
        """
        xp = self.xp
        hi, lo = t
        count = float(max(n, 1))
        per_pass = self.c.precision - 2 - math.ceil(math.log2(count))
        passes = 2
        if per_pass >= 1:
            passes = min(14, max(2, math.ceil((self.c.precision + 8) / per_pass)))
        shift = math.ceil(math.log2(count)) + 2
        fmax = float(xp.finfo(self.dtype).max)
        top = xp.max(xp.abs(hi), axis=axis, keepdims=True)
        huge = xp.isfinite(top) & (top >= fmax * 2.0**-shift)
        down = xp.where(huge, self.const(2.0**-shift), self.const(1.0))
        hi, lo, top = hi * down, lo * down, top * down  # exact where it matters
        total_hi: Array | None = None
        total_lo: Array | None = None
        rem = hi
        for k in range(passes):
            big = top if k == 0 else xp.max(xp.abs(rem), axis=axis, keepdims=True)
            big = xp.where((big > 0) & xp.isfinite(big), big, 1.0)
            sigma = self.pow2(xp.ceil(xp.log2(big * count)) + 1.0)
            q = (sigma + rem) - sigma
            rem = rem - q
            sq = xp.sum(q, axis=axis, keepdims=True)
            if total_hi is None:
                total_hi, total_lo = sq, xp.zeros_like(sq)
            else:
                total_hi, e = two_sum(total_hi, sq)
                total_lo = total_lo + e
        assert total_hi is not None
        assert total_lo is not None
        sr = xp.sum(rem + lo, axis=axis, keepdims=True)
        s, e = two_sum(total_hi, sr)
        s, e = fast_two_sum(s, e + total_lo)
        # back to scale: 2**k s, or an infinity of s's sign where that overflows
        fits = ~huge | (xp.abs(s) < fmax * 2.0**-shift)
        inf = xp.where(s > 0, math.inf, xp.where(s < 0, -math.inf, s))  # NaN stays NaN
        up = xp.where(huge, self.const(2.0**shift), self.const(1.0))
        s = xp.where(fits, xp.where(fits, s, 0.0) * up, inf)
        return s, xp.where(fits, e * up, 0.0)


class PlainArith:
    """The same interface as :class:`DDArith` on single arrays (no extra precision).

    Used when the working dtype is already wider than the output (float32 data
    computed in float64) and for ``precision="fast"``.
    """

    def __init__(self, xp: Any, dtype: Any, device: Any, *, exact_shift: bool = False) -> None:
        self.xp = xp
        self.dtype = dtype
        self.device = device
        self.exact_shift = exact_shift

    def const(self, value: float) -> Array:
        return self.xp.asarray(value, dtype=self.dtype, device=self.device)

    def lift(self, a: Array) -> Array:
        return a

    def hi(self, a: Array) -> Array:
        return a

    def value(self, a: Array) -> Array:
        return a

    def scaled_value(self, a: Array, k: int) -> Array:
        return a if k == 0 else a * 2.0**k

    def neg(self, a: Array) -> Array:
        return -a

    def where(self, cond: Array, a: Array, b: float) -> Array:
        return self.xp.where(cond, a, b)

    def select(self, cond: Array, a: Array, b: Array) -> Array:
        return self.xp.where(cond, a, b)

    def gather(self, onehot: Array, a: Array, axis: int) -> Array:
        return self.xp.sum(self.xp.where(onehot, a, 0.0), axis=axis, keepdims=True)

    def add(self, a: Array, b: Array) -> Array:
        return a + b

    def sub(self, a: Array, b: Array) -> Array:
        return a - b

    def mul(self, a: Array, b: Array) -> Array:
        return a * b

    def div(self, a: Array, b: Array) -> Array:
        return a / b

    def exp(self, a: Array, scale: int = 0) -> Array:
        e = self.xp.exp(a)
        return e if scale == 0 else e * 2.0**scale

    def ldexp(self, a: Array, k: int) -> Array:
        return a if k == 0 else a * 2.0**k

    def log1p(self, a: Array) -> Array:
        return self.xp.log1p(a)

    def sum(self, a: Array, axis: Any, n: int) -> Array:
        return self.xp.sum(a, axis=axis, keepdims=True)
