"""Helpers shared by the native-kernel tests: the oracle switch and ulp comparisons."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from softmaxkit import _dispatch


@contextlib.contextmanager
def oracle_only() -> Iterator[None]:
    """Run the public API on the array-agnostic path (the C kernels switched off)."""
    saved = _dispatch._ckernels
    _dispatch._ckernels = None
    try:
        # the oracle may compute throw-away NaN/inf in branches it discards
        with np.errstate(all="ignore"):
            yield
    finally:
        _dispatch._ckernels = saved


def native_isas() -> list[str]:
    """The instruction sets whose engines this machine can run (none without the C core)."""
    ck = _dispatch._ckernels
    if ck is None:
        return []
    found = []
    cur = ck.isa()
    for name in ("sse2", "avx2", "avx512", "neon"):
        try:
            ck.set_isa(name)
        except ValueError:
            continue
        finally:
            ck.set_isa(cur)
        found.append(name)
    return found


def ulp_of(ref: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The spacing of ``dtype`` at ``ref`` (subnormal spacing below the normal range)."""
    r = np.abs(np.asarray(ref, dtype=np.float64))
    with np.errstate(over="ignore"):
        rr = r.astype(dtype)
    big = np.isinf(rr)
    rr = np.where(big, np.finfo(dtype).max, rr)
    return np.spacing(rr).astype(np.float64)


def ulp_error(got: np.ndarray, ref: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``|got - ref| / ulp(ref)`` on entries where both are finite (0 elsewhere)."""
    g = np.asarray(got, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    fin = np.isfinite(g) & np.isfinite(r)
    err = np.zeros(g.shape)
    err[fin] = np.abs(g[fin] - r[fin]) / ulp_of(r[fin], dtype)
    return err


def assert_ulp_close(
    got: object, ref: object, max_ulp: float, what: str = "", atol: float = 0.0
) -> None:
    """Same shape, dtype and special values; finite entries within ``max_ulp`` (or ``atol``)."""
    g = np.asarray(got)
    r = np.asarray(ref)
    assert g.shape == r.shape, f"{what}: shape {g.shape} != {r.shape}"
    # byte order aside (the kernels return native order, as NumPy's ufuncs do)
    gd, rd = g.dtype.newbyteorder("="), r.dtype.newbyteorder("=")
    assert gd == rd, f"{what}: dtype {g.dtype} != {r.dtype}"
    nan_g, nan_r = np.isnan(g), np.isnan(r)
    assert np.array_equal(nan_g, nan_r), f"{what}: NaN at {np.argwhere(nan_g != nan_r)[:5]}"
    inf_g = np.isinf(g)
    inf_r = np.isinf(r)
    assert np.array_equal(inf_g, inf_r), f"{what}: inf at {np.argwhere(inf_g != inf_r)[:5]}"
    assert np.array_equal(g[inf_g], r[inf_r]), f"{what}: infinities of opposite sign"
    err = ulp_error(g, r, gd)
    if atol:
        with np.errstate(invalid="ignore"):
            near = np.abs(g.astype(np.float64) - r.astype(np.float64)) <= atol
        err = np.where(near, 0.0, err)
    worst = float(err.max()) if err.size else 0.0
    if worst > max_ulp:
        idx = np.unravel_index(int(np.argmax(err)), err.shape)
        msg = f"{what}: {worst:.3g} ulp > {max_ulp} at {idx}: got {g[idx]!r}, expected {r[idx]!r}"
        raise AssertionError(msg)
