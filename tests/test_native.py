"""The native C kernels against the array-agnostic oracle.

Every public op that has a native path is computed twice, once through the C
kernels and once with them switched off, over generated arrays (dtypes,
shapes including 0 and 1, axes, memory layouts, +-inf / NaN / masks,
temperatures), and the two must agree to an ulp (accurate mode) or to the fast
mode's error budget. Also: thread-count invariance, concurrent callers, every
instruction set this CPU has, ``out=``, the fallbacks, and arrays with more
than 2**31 elements.
"""

from __future__ import annotations

import itertools
import os
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import softmaxkit as sk
from softmaxkit import SoftmaxkitTypeError, SoftmaxkitValueError, _dispatch
from tests._native_helpers import assert_ulp_close, native_isas, oracle_only

_ck = _dispatch._ckernels
ISAS = native_isas()
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_native_core_is_built() -> None:
    assert _dispatch.available(), "the C core did not build; see the meson log"
    assert _ck.isa() in ("sse2", "avx2", "avx512", "neon", "scalar")


# ---- generated cases ----------------------------------------------------------------


@st.composite
def arrays(draw: st.DrawFn, max_ndim: int = 3) -> dict[str, object]:
    dtype = np.dtype(draw(st.sampled_from(["float32", "float64"])))
    ndim = draw(st.integers(1, max_ndim))
    shape = draw(st.lists(st.integers(0, 5), min_size=ndim, max_size=ndim))
    if draw(st.integers(0, 3)) == 0:
        shape[draw(st.integers(0, ndim - 1))] = draw(st.sampled_from([17, 130, 1500]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["normal", "wide", "ties", "offset", "dominant"]))
    scale = {"normal": 3.0, "wide": 30.0, "ties": 2.0, "offset": 5.0, "dominant": 1.0}[kind]
    x = rng.standard_normal(shape) * scale
    if kind == "ties":
        x = np.round(x)
    elif kind == "offset":
        x = x + 1000.0
    elif kind == "dominant" and x.size:
        x.flat[rng.integers(x.size)] = 60.0
    specials = draw(st.sampled_from([None, "neginf", "posinf", "nan", "mixed"]))
    if specials and x.size:
        k = max(1, x.size // 5)
        idx = rng.integers(0, x.size, size=k)
        vals = {
            "neginf": [-np.inf],
            "posinf": [np.inf],
            "nan": [np.nan],
            "mixed": [-np.inf, np.inf, np.nan, -np.inf],
        }[specials]
        x.flat[idx] = rng.choice(vals, size=k)
    x = x.astype(dtype)
    layout = draw(st.sampled_from(["C", "F", "strided", "swapped", "readonly"]))
    if layout == "F":
        x = np.asfortranarray(x)
    elif layout == "strided":
        big = np.repeat(x, 2, axis=-1)
        x = big[..., ::2]
    elif layout == "swapped":
        x = x.astype(x.dtype.newbyteorder())
    elif layout == "readonly":
        x = x.copy()
        x.flags.writeable = False
    axis_kind = draw(st.sampled_from(["last", "int", "tuple", "none"]))
    if axis_kind == "last":
        axis: object = -1
    elif axis_kind == "int":
        axis = draw(st.integers(-ndim, ndim - 1))
    elif axis_kind == "tuple":
        axis = tuple(draw(st.sets(st.integers(0, ndim - 1), min_size=1, max_size=ndim)))
    else:
        axis = None
    where = None
    if draw(st.integers(0, 3)) == 0:
        mshape = tuple(s if draw(st.booleans()) else 1 for s in x.shape)
        where = rng.random(mshape) < draw(st.sampled_from([0.2, 0.7, 1.0]))
    temperature = draw(st.sampled_from([1.0, 1.0, 0.5, 2.5]))
    return {"x": x, "axis": axis, "where": where, "temperature": temperature}


def _fast_reference(fn: object, case: dict[str, object]) -> object:
    """Fast mode divides by the temperature in the input precision; the rest is exact."""
    x = np.asarray(case["x"])
    t = case["temperature"]
    with np.errstate(over="ignore"):
        xs = (x / x.dtype.type(t)).astype(x.dtype) if t != 1.0 else x
    with oracle_only():
        return fn(xs, axis=case["axis"], where=case["where"], precision="accurate")  # type: ignore[operator]


def _tol(dtype: np.dtype, precision: str) -> float:
    if precision == "fast":
        return 4.0
    return 1.0 if dtype.itemsize == 4 else 2.0


@pytest.mark.parametrize("precision", ["accurate", "fast"])
@pytest.mark.parametrize("fn", [sk.softmax, sk.log_softmax], ids=["softmax", "log_softmax"])
@SETTINGS
@given(case=arrays())
def test_normalisers_match_oracle(fn: object, precision: str, case: dict[str, object]) -> None:
    x = case["x"]
    before = np.array(x, copy=True)
    got = fn(
        x,
        axis=case["axis"],
        where=case["where"],
        temperature=case["temperature"],
        precision=precision,
    )  # type: ignore[operator]
    if precision == "accurate":
        with oracle_only():
            ref = fn(
                x,
                axis=case["axis"],
                where=case["where"],
                temperature=case["temperature"],
                precision=precision,
            )  # type: ignore[operator]
    else:
        ref = _fast_reference(fn, case)
    xa = np.asarray(x)
    assert_ulp_close(got, ref, _tol(xa.dtype, precision), fn.__name__)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(np.asarray(x), before)


@pytest.mark.parametrize("precision", ["accurate", "fast"])
@SETTINGS
@given(case=arrays(), keepdims=st.booleans(), return_sign=st.booleans())
def test_logsumexp_matches_oracle(
    precision: str, case: dict[str, object], keepdims: bool, return_sign: bool
) -> None:
    kw = {"axis": case["axis"], "where": case["where"], "keepdims": keepdims}
    got = sk.logsumexp(case["x"], precision=precision, return_sign=return_sign, **kw)
    with oracle_only():
        ref = sk.logsumexp(case["x"], precision="accurate", return_sign=return_sign, **kw)
    dtype = np.asarray(case["x"]).dtype
    if return_sign:
        assert_ulp_close(got[1], ref[1], 0.0, "sign")
        got, ref = got[0], ref[0]
    assert type(got) is type(ref)
    if precision == "fast":
        # fast mode adds M + log1p(.) in working precision: where the two nearly
        # cancel the absolute error is that of log(n), not of the small result
        g, r = np.asarray(got, np.float64), np.asarray(ref, np.float64)
        assert np.array_equal(np.isnan(g), np.isnan(r))
        fin = np.isfinite(r)
        assert np.array_equal(g[~fin], r[~fin], equal_nan=True)
        n = max(int(np.asarray(case["x"]).size), 1)
        mag = np.abs(r[fin]) + np.log(n) + 1.0
        assert np.all(
            np.abs(g[fin] - r[fin]) <= 4 * np.spacing(mag.astype(dtype.newbyteorder("=")))
        )
        return
    assert_ulp_close(got, ref, 1.0 if dtype.itemsize == 4 else 2.0, "lse")


@st.composite
def ce_cases(draw: st.DrawFn) -> dict[str, object]:
    case = draw(arrays(max_ndim=3))
    x = np.asarray(case["x"])
    case["axis"] = draw(st.integers(-x.ndim, x.ndim - 1))
    ax = case["axis"] % x.ndim
    n = x.shape[ax]
    batch = tuple(s for i, s in enumerate(x.shape) if i != ax)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    target = rng.integers(0, max(n, 1), size=batch)
    ignore = None
    if draw(st.booleans()) and target.size:
        ignore = -100
        target = np.where(rng.random(batch) < 0.3, ignore, target)
    if n == 0:
        target = (
            np.full(batch, -100) if ignore is not None else target[..., :0] if False else target
        )
    case["target"] = target
    case["ignore_index"] = ignore
    case["weight"] = rng.random(n) + 0.1 if draw(st.booleans()) else None
    case["z_loss"] = draw(st.sampled_from([0.0, 0.0, 1e-3]))
    case["reduction"] = draw(st.sampled_from(["mean", "sum", "none"]))
    if case["where"] is not None:
        case["where"] = np.broadcast_to(case["where"], x.shape)
    return case


@pytest.mark.parametrize("precision", ["accurate", "fast"])
@SETTINGS
@given(case=ce_cases(), return_grad=st.booleans())
def test_cross_entropy_matches_oracle(
    precision: str, case: dict[str, object], return_grad: bool
) -> None:
    x = np.asarray(case["x"])
    n = x.shape[case["axis"]]  # type: ignore[index]
    if n == 0:
        return  # no class to index: the target validation rejects every such call
    kw = {k: case[k] for k in ("axis", "weight", "ignore_index", "z_loss", "reduction", "where")}
    got = sk.cross_entropy(x, case["target"], return_grad=return_grad, precision=precision, **kw)
    with oracle_only():
        ref = sk.cross_entropy(
            x, case["target"], return_grad=return_grad, precision="accurate", **kw
        )
    if not return_grad:
        got, ref = (got,), (ref,)
    loss_g, loss_r = np.asarray(got[0]), np.asarray(ref[0])
    assert loss_g.shape == loss_r.shape
    assert loss_g.dtype == loss_r.dtype
    if case["reduction"] == "none":
        assert_ulp_close(loss_g, loss_r, 4.0 if precision == "fast" else 2.0, "loss")
    else:
        np.testing.assert_allclose(
            loss_g, loss_r, rtol=2e-5 if x.dtype.itemsize == 4 else 1e-12, atol=0
        )
    if return_grad:
        g, r = np.asarray(got[1]), np.asarray(ref[1])
        assert g.shape == r.shape
        assert g.dtype == r.dtype
        assert np.array_equal(np.isnan(g), np.isnan(r))
        fin = np.isfinite(r)
        scale = float(np.max(np.abs(r[fin]), initial=0.0))
        single = x.dtype.itemsize == 4
        rtol = 4e-7 if single else 1e-15
        if precision == "fast":
            rtol = 3e-6 if single else 1e-14
        np.testing.assert_allclose(g[fin], r[fin], rtol=rtol, atol=scale * rtol)


# ---- fixed contract cases -----------------------------------------------------------

CONTRACT = [
    [2.0, 1.0, 0.1],
    [0.0, -40.0],
    [0.0, -800.0],
    [np.inf, 0.0, np.inf],
    [np.inf, 0.0],
    [-np.inf, -np.inf],
    [np.nan, 0.0],
    [np.nan, np.inf],
    [-np.inf, 0.0],
    [3e38, -3e38],
    [1000.0, 1000.0],
    [17.3, -23.46],
    [0.0],
]


@pytest.mark.parametrize("precision", ["accurate", "fast"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("row", CONTRACT, ids=str)
def test_contract_rows(row: list[float], dtype: str, precision: str) -> None:
    with np.errstate(over="ignore"):
        x = np.array(row, dtype=dtype)
    for fn in (sk.softmax, sk.log_softmax, sk.logsumexp):
        got = fn(x, precision=precision)
        with oracle_only():
            ref = fn(x, precision="accurate")
        assert_ulp_close(got, ref, 3.0 if precision == "fast" else 1.0, f"{fn.__name__}{row}")


def test_dominant_logit_keeps_tiny_values() -> None:
    for precision in ("accurate", "fast"):
        x = np.array([0.0, -40.0], dtype=np.float32)
        assert float(sk.log_softmax(x, precision=precision)[0]) == pytest.approx(
            -4.248354e-18, rel=1e-6
        )
        assert float(sk.logsumexp(x, precision=precision)) == pytest.approx(4.248354e-18, rel=1e-6)
        ce = sk.cross_entropy(x[None], np.array([0]), precision=precision)
        assert float(ce) == pytest.approx(4.248354e-18, rel=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("precision", ["accurate", "fast"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(("ignore_index", "z_loss"), [(None, 0.0), (3, 0.0), (-100, 1e-3)])
def test_everyday_cross_entropy_takes_one_c_call(
    monkeypatch: pytest.MonkeyPatch,
    dtype: str,
    precision: str,
    reduction: str,
    ignore_index: int | None,
    z_loss: float,
) -> None:
    """``cross_entropy`` on C-contiguous logits and int64 labels skips the general
    validation and reduces in C: the same bits as the general path (int32 labels,
    or a mask that keeps everything, go there), rows of -inf that do not count and
    ignored rows included; labels out of range still get the general path's error."""
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((2, 37, 11)) * 4).astype(dtype)
    x[0, 5, :] = -np.inf  # nothing to count: changes the mean's divisor
    x[1, 2, 4] = np.nan
    t = rng.integers(0, 11, size=(2, 37))
    if ignore_index is None:
        t[0, 7] = t[1, 9] = 0
    else:
        t[0, 7] = t[1, 9] = ignore_index
    kw = {"reduction": reduction, "ignore_index": ignore_index, "z_loss": z_loss}
    for return_grad in (False, True):
        general = sk.cross_entropy(
            x, t.astype(np.int32), precision=precision, return_grad=return_grad, **kw
        )
        masked = sk.cross_entropy(
            x, t, where=np.ones(x.shape, bool), precision=precision, return_grad=return_grad, **kw
        )
        with monkeypatch.context() as m:
            m.setattr(_dispatch, "cross_entropy", None)  # the general path would fail
            quick = sk.cross_entropy(x, t, precision=precision, return_grad=return_grad, **kw)
        got = quick if return_grad else (quick,)
        # fast mode's masked rows take other kernels (bits differ on some ISAs)
        for ref in (general, masked) if precision == "accurate" else (general,):
            for a, b in zip(got, ref if return_grad else (ref,), strict=True):
                assert type(a) is type(b)
                assert a.dtype == np.dtype(dtype)
                np.testing.assert_array_equal(a, b)
    bad = t.copy()
    bad[1, 3] = 11
    with pytest.raises(SoftmaxkitValueError, match="target"):
        sk.cross_entropy(x, bad, precision=precision, **kw)
    assert x[0, 5, 0] == -np.inf and t.dtype == np.int64  # inputs untouched


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", [1, 10, 100, 160, 161, 256])
def test_fast_short_cross_entropy_takes_the_transposed_kernel(isa: str, n: int) -> None:
    """Fast-mode float32 cross-entropy of up to 160 classes runs the accurate engine's
    transposed kernel (faster there than the fast row path): the accurate bits, loss
    and gradient, special rows included; longer rows keep the fast engine, within
    its bound."""
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((300, n)) * 5).astype(np.float32)
    t = rng.integers(0, n, 300)
    x[3, :] = -np.inf
    x[5, 0] = np.inf
    x[7, -1] = np.nan
    x[9, t[9]] += 60.0
    saved = _ck.isa()
    _ck.set_isa(isa)
    try:
        for red in ("none", "mean"):
            fast = sk.cross_entropy(x, t, reduction=red, precision="fast", return_grad=True)
            acc = sk.cross_entropy(x, t, reduction=red, precision="accurate", return_grad=True)
            for a, b in zip(fast, acc, strict=True):
                if n <= 160:
                    np.testing.assert_array_equal(a, b)
                else:
                    scale = float(np.max(np.abs(b[np.isfinite(b)]), initial=0.0))
                    np.testing.assert_allclose(a, b, rtol=3e-6, atol=3e-6 * scale)
    finally:
        _ck.set_isa(saved)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("precision", ["accurate", "fast"])
def test_everyday_reductions_and_sigmoids_take_one_c_call(
    monkeypatch: pytest.MonkeyPatch, dtype: str, precision: str
) -> None:
    """logsumexp, sigmoid, log_sigmoid and BCE with logits on C-contiguous arrays skip
    the general validation: the same bits and result types as the general path (an
    F-ordered copy goes there), specials included; bad targets still get its errors."""
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((5, 33, 17)) * 9).astype(dtype)
    x[0, 0, 3] = np.inf
    x[1, 1, :] = -np.inf
    x[2, 2, 2] = np.nan
    x[3, 3, 0] = -np.inf
    y = rng.random(x.shape).astype(dtype)
    y[0, 0, :4] = (0.0, 1.0, 0.0, 1.0)
    f = np.asfortranarray(x)
    yf = np.asfortranarray(y)
    kw = {"precision": precision}
    cases = [
        (sk.logsumexp, (x,), (f,), {"axis": -1}),
        (sk.logsumexp, (x,), (f,), {"axis": 2, "keepdims": True}),
        (sk.logsumexp, (x,), (f,), {"axis": None}),
        (sk.logsumexp, (x,), (f,), {"axis": None, "keepdims": True}),
        (sk.logsumexp, (x[0, :, 0].copy(),), (x[0, :, 0],), {}),  # strided: general
        (sk.sigmoid, (x,), (f,), {}),
        (sk.log_sigmoid, (x,), (f,), {}),
    ]
    for reduction in ("mean", "sum", "none"):
        for grad in (False, True):
            opts = {"reduction": reduction, "return_grad": grad}
            cases.append((sk.binary_cross_entropy_with_logits, (x, y), (f, yf), opts))
    general = ("logsumexp", "sigmoid", "binary_cross_entropy_with_logits")
    for fn, quick_args, general_args, opts in cases:
        ref = fn(*general_args, **opts, **kw)
        with monkeypatch.context() as m:
            for name in general:
                m.setattr(_dispatch, name, None)  # the general path would fail
            got = fn(*quick_args, **opts, **kw)
        pairs = zip(got, ref, strict=True) if isinstance(ref, tuple) else [(got, ref)]
        for a, b in pairs:
            assert type(a) is type(b), fn.__name__
            assert a.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(a, b, err_msg=f"{fn.__name__} {opts}")
    with pytest.raises(SoftmaxkitValueError, match="target"):
        sk.binary_cross_entropy_with_logits(x, y + 1.0, **kw)
    nan_target = y.copy()
    nan_target[0, 0, 0] = np.nan  # accepted by the general path: propagates
    loss = sk.binary_cross_entropy_with_logits(x, nan_target, reduction="none", **kw)
    assert np.isnan(loss[0, 0, 0]) and np.isfinite(loss[4]).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("precision", ["accurate", "fast"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_index", [None, 2, -100])
@pytest.mark.parametrize("C", [1, 7, 300])
def test_everyday_nll_loss_is_a_gather(
    monkeypatch: pytest.MonkeyPatch,
    dtype: str,
    precision: str,
    reduction: str,
    ignore_index: int | None,
    C: int,
) -> None:
    """``nll_loss`` on C-contiguous log-probabilities and int64 labels picks the values
    instead of summing a masked copy (the C core; a NumPy gather for float32 fast mode):
    the array-agnostic path's bits (int32 labels go there), -0.0, NaN, -inf and huge
    values included; bad labels still get its error."""
    rng = np.random.default_rng(C)
    lp = (-rng.random((3, 241, C)) * 9).astype(dtype)  # 723 rows: past the core's stack buffer
    t = rng.integers(0, C, size=(3, 241))
    lp[0, :5] = -0.0
    lp[1, 3] = np.nan
    lp[2, 4] = -np.inf
    lp[2, 5] = -float(np.finfo(dtype).max)  # the sum overflows
    lp[2, 6] = -float(np.finfo(dtype).max)
    if ignore_index is not None:
        t[1, 3] = t[2, 4] = ignore_index
        t[0, 9:12] = ignore_index
    kw = {"reduction": reduction, "ignore_index": ignore_index, "precision": precision}
    with np.errstate(all="ignore"):
        ref = sk.nll_loss(lp, t.astype(np.int32), **kw)
    with monkeypatch.context() as m:
        m.setattr("softmaxkit._cross_entropy.call", None)  # the general path would fail
        got = sk.nll_loss(lp, t, **kw)
    assert type(got) is type(ref) and got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, ref)
    num = ~np.isnan(ref)
    assert np.array_equal(np.signbit(got)[num], np.signbit(ref)[num])  # zeros' signs too
    bad = t.copy()
    bad[0, 0] = C
    with pytest.raises(SoftmaxkitValueError, match="target"):
        sk.nll_loss(lp, bad, **kw)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [65_549, 300_007])
def test_bce_sums_in_the_core_as_numpy_sums(dtype: str, n: int) -> None:
    """BCE with logits reduced in the C core (the pairwise tree cut into spans the
    threads share) gives np.sum's bits over the per-element losses, on any thread
    count, with the same gradient."""
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 7).astype(dtype)
    y = rng.random(n).astype(dtype)
    code = 0 if dtype == "float32" else 1
    loss = np.empty(n)
    g = np.empty(n, dtype)
    _ck.sigmoid(3, x, y, None, None, n, code, 1, 2, 1.0 / n, loss, g)
    for threads in (1, 2, 3):
        g2 = np.full(n, np.nan, dtype)
        total = _ck.bce_reduced(3, x, y, n, code, 1, threads, 1.0 / n, g2)
        assert total == np.sum(loss)
        np.testing.assert_array_equal(g2, g)
    mean, grad = sk.binary_cross_entropy_with_logits(x, y, return_grad=True)
    assert mean == np.asarray(np.sum(loss) / n, dtype=dtype) and np.array_equal(grad, g)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [1, 17, 65_549])
def test_bce_reduced_at_addresses(dtype: str, n: int) -> None:
    """The everyday torch call's entry (``bce_reduced_at``): ``bce_reduced``'s sum and
    gradient at the arrays' addresses, the loss (sum, or the float64 mean) rounded
    once into the data's type at its address, and None with nothing written when a
    target lies outside [0, 1] or is NaN (0 and 1 themselves are targets)."""
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 7).astype(dtype)
    y = rng.random(n).astype(dtype)
    y[0] = 1.0
    y[-1] = 0.0
    code = 0 if dtype == "float32" else 1
    g_want = np.empty(n, dtype)
    for mean in (True, False):
        scale = 1.0 / n if mean else 1.0
        total = _ck.bce_reduced(3, x, y, n, code, 1, 2, scale, g_want)
        out, g = np.full((), np.nan, dtype), np.full(n, np.nan, dtype)
        got = _ck.bce_reduced_at(
            x.ctypes.data, y.ctypes.data, n, code, 1, 2, scale, mean, out.ctypes.data, g.ctypes.data
        )
        assert got == total
        assert out == np.asarray(total / n if mean else total, dtype=dtype)
        np.testing.assert_array_equal(g, g_want)
        _ck.bce_reduced_at(  # no gradient asked for
            x.ctypes.data, y.ctypes.data, n, code, 1, 1, scale, mean, out.ctypes.data, 0
        )
    for bad in (1.0000001, -0.0001, np.nan, np.inf):
        yb = y.copy()
        yb[n // 2] = bad
        out, g = np.full((), 7.0, dtype), np.full(n, 7.0, dtype)
        got = _ck.bce_reduced_at(
            x.ctypes.data, yb.ctypes.data, n, code, 1, 1, 1.0, True, out.ctypes.data, g.ctypes.data
        )
        assert got is None and out == 7.0 and (g == 7.0).all()
    with pytest.raises(ValueError, match="bad address"):
        _ck.bce_reduced_at(x.ctypes.data, y.ctypes.data, 0, code, 1, 1, 1.0, True, 8, 0)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bce_loss_rounded_in_the_core_is_the_float64_loss_rounded_after(
    isa: str, dtype: str
) -> None:
    """Kinds 4 and 5 of the core's BCE (the ``reduction="none"`` calls of every front
    end) round each float64 loss to the data's type as they store it: the bits of
    kinds 2 and 3's float64 losses converted afterwards, with the same gradient, for
    both precisions, weights and positive weights, specials and every vector tail."""
    rng = np.random.default_rng(11)
    code = 0 if dtype == "float32" else 1
    saved = _ck.isa()
    _ck.set_isa(isa)
    try:
        for n in (1, 3, 8, 9, 1001):
            x = (rng.standard_normal(n) * 20).astype(dtype)
            x[::7] = np.inf
            x[1::11] = -np.inf
            x[2::13] = np.nan
            y = rng.random(n).astype(dtype)
            y[3::17] = np.nan
            w, pw = rng.random(n) * 3, rng.random(n) * 3
            for mode in (0, 1):
                for ww, pp in ((None, None), (w, None), (None, pw), (w, pw)):
                    for kind in (2, 3):
                        yk = y if kind == 3 else y.astype(np.float64)
                        l64, g64 = np.empty(n), np.empty(n, dtype)
                        _ck.sigmoid(kind, x, yk, ww, pp, n, code, mode, 2, 0.5, l64, g64)
                        own, g = np.empty(n, dtype), np.empty(n, dtype)
                        _ck.sigmoid(kind + 2, x, yk, ww, pp, n, code, mode, 2, 0.5, own, g)
                        with np.errstate(over="ignore", invalid="ignore"):
                            want = l64.astype(dtype)
                        assert want.tobytes() == own.tobytes(), (n, mode, kind)
                        assert g64.tobytes() == g.tobytes(), (n, mode, kind)
    finally:
        _ck.set_isa(saved)


# ---- threads, concurrency, instruction sets ------------------------------------------

SHAPES = [(3, 300_001), (2, 70_000), (200, 2049), (5000, 7)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("precision", ["accurate", "fast"])
def test_results_do_not_depend_on_thread_count(
    shape: tuple[int, int], dtype: str, precision: str
) -> None:
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    t = rng.integers(0, shape[1], size=shape[0])
    outs: dict[int, list[np.ndarray]] = {}
    for threads in (1, 2, 3, 8):
        kw = {"precision": precision, "threads": threads}
        loss, grad = sk.cross_entropy(x, t, return_grad=True, **kw)
        outs[threads] = [
            sk.softmax(x, **kw),
            sk.log_softmax(x, **kw),
            np.asarray(sk.logsumexp(x, **kw)),
            np.asarray(sk.logsumexp(x, axis=None, **kw)),
            np.asarray(loss),
            grad,
        ]
    for threads, res in outs.items():
        for a, b in zip(res, outs[1], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=f"threads={threads}")


# Outputs of 2 MiB or more per thread run in one contiguous region per thread (driver.c,
# OUT_MIN), the others off one shared counter: these are large enough for the regions at
# 2, 3 and 8 threads, on the row path, the paired short rows, the transposed kernels and
# rows split into blocks (fewer rows than threads: the two-level mode).
LARGE = [(4100, 1031), (20_000, 257), (150_001, 29), (1, 4_200_000), (3, 1_400_003)]


@pytest.mark.parametrize("shape", LARGE, ids=str)
@pytest.mark.parametrize("precision", ["accurate", "fast"])
def test_large_outputs_do_not_depend_on_thread_count(
    shape: tuple[int, int], precision: str
) -> None:
    rng = np.random.default_rng(11)
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    t = rng.integers(0, shape[1], size=shape[0])
    y = rng.random(shape).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    p = sk.softmax(x, threads=1)
    outs: dict[int, list[np.ndarray]] = {}
    for threads in (1, 2, 3, 8):
        kw = {"precision": precision, "threads": threads}
        _, grad = sk.cross_entropy(x, t, return_grad=True, **kw)
        _, grad_s = sk.cross_entropy(x, t, return_grad=True, label_smoothing=0.1, **kw)
        _, grad_b = sk.binary_cross_entropy_with_logits(x, y, return_grad=True, **kw)
        outs[threads] = [
            sk.softmax(x, **kw),
            sk.log_softmax(x, **kw),
            grad,
            grad_s,
            sk.sigmoid(x, **kw),
            sk.log_sigmoid(x, **kw),
            grad_b,
            sk.softmax_vjp(p, g, **kw),
        ]
    for threads, res in outs.items():
        for k, (a, b) in enumerate(zip(res, outs[1], strict=True)):
            np.testing.assert_array_equal(a, b, err_msg=f"threads={threads}, output {k}")


def test_eight_concurrent_python_threads_agree() -> None:
    rng = np.random.default_rng(3)
    xs = [(rng.standard_normal((64, 4097)) * 3).astype(np.float32) for _ in range(8)]
    expected = [sk.softmax(x, threads=1) for x in xs]
    results: list[list[np.ndarray]] = [[] for _ in xs]
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(20):
                results[i].append(sk.softmax(xs[i], threads=2))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for i, res in enumerate(results):
        assert len(res) == 20
        for r in res:
            np.testing.assert_array_equal(r, expected[i])


_FORK_SCRIPT = """
import os, sys, numpy as np, softmaxkit as sk
x = (np.random.default_rng(2).standard_normal((256, 4096)) * 3).astype(np.float32)
expected = sk.softmax(x, threads=2)  # starts the worker pool in the parent
pid = os.fork()
if pid == 0:
    try:
        ok = np.array_equal(sk.softmax(x, threads=2), expected)
    except BaseException:
        os._exit(2)
    os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_thread_pool_works_in_a_forked_child() -> None:
    """The worker pool is per process: a child forked after a threaded call starts its own.

    Runs in a fresh interpreter, so no other library's threads (JAX warns on fork)
    are in the parent; a hang is caught by the timeout.
    """
    import subprocess
    import sys

    try:
        r = subprocess.run([sys.executable, "-c", _FORK_SCRIPT], timeout=120, capture_output=True)
    except subprocess.TimeoutExpired:
        pytest.fail("the forked child hung in a threaded call")
    assert r.returncode == 0, r.stderr.decode()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("precision", ["accurate", "fast"])
def test_every_instruction_set(isa: str, dtype: str, precision: str) -> None:
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((37, 1001)) * 8).astype(dtype)
    x[3, 5] = np.inf
    x[4, :] = -np.inf
    x[5, 7] = np.nan
    x[6, 100] = -np.inf
    where = rng.random(x.shape) < 0.9
    t = rng.integers(0, 1001, size=37)
    saved = _ck.isa()
    try:
        _ck.set_isa(isa)
        got = [
            sk.softmax(x, precision=precision),
            sk.log_softmax(x, where=where, precision=precision),
            sk.logsumexp(x, precision=precision),
            sk.cross_entropy(x, t, reduction="none", precision=precision),
        ]
    finally:
        _ck.set_isa(saved)
    with oracle_only():
        ref = [
            sk.softmax(x),
            sk.log_softmax(x, where=where),
            sk.logsumexp(x),
            sk.cross_entropy(x, t, reduction="none"),
        ]
    tol = 4.0 if precision == "fast" else 2.0
    for g, r in zip(got, ref, strict=True):
        assert_ulp_close(g, r, tol, isa)


@pytest.mark.parametrize("isa", ISAS)
def test_counted_maxima_on_every_instruction_set(isa: str) -> None:
    """The counted statistics of accurate float32 rows long enough for the vector loops
    (log_softmax, logsumexp, cross-entropy and the mergeable state): maxima tied at
    several places and in the tail lanes, a row of one value, small integers (ties
    everywhere), maxima far above the rest (a rest of denormal size, and one that
    underflows), and a maximum near -2^24, where the AVX2 loop, which replaces the
    maxima by a float whose exponential it computes as 0, finds no such float and
    masks them instead. Within the accurate mode's bound (0.5 ulp + 1 %) of the float64
    answer, and the state counts exactly the maxima."""
    from tests._native_helpers import ulp_error

    rng = np.random.default_rng(23)
    saved = _ck.isa()
    for n in (257, 263, 1000, 4097, 33001):
        x = rng.standard_normal((9, n)).astype(np.float32)
        x[0, [3, n // 2, n - 1]] = 5.0
        x[1, :] = 1.5
        x[2, -3:] = 9.0
        x[3] -= 100.0
        x[3, n // 3] = 0.0
        x[4] -= 300.0
        x[4, 9] = 2.0
        x[5] -= 100.0
        x[5, [0, n - 2]] = 0.0
        x[6] = rng.integers(-3, 4, n)
        x[7] *= 40.0
        x[8] = -16777000.0 + rng.integers(-3, 5, n)  # m = -16776996: m - 709 is odd
        t = rng.integers(0, n, 9)
        t[3] = n // 3
        try:
            _ck.set_isa(isa)
            got = [
                sk.log_softmax(x),
                sk.logsumexp(x),
                sk.cross_entropy(x, t, reduction="none"),
            ]
            counts = sk.LogSumExpState.from_block(x).c
        finally:
            _ck.set_isa(saved)
        x64 = x.astype(np.float64)
        with oracle_only():
            ref = [
                sk.log_softmax(x64),
                sk.logsumexp(x64),
                sk.cross_entropy(x64, t, reduction="none"),
            ]
        for what, g, r in zip(("log_softmax", "logsumexp", "cross_entropy"), got, ref, strict=True):
            assert g.dtype == np.float32
            fin = np.isfinite(g)
            np.testing.assert_array_equal(fin, np.isfinite(r), err_msg=f"{isa} n={n} {what}")
            np.testing.assert_array_equal(g[~fin], r[~fin], err_msg=f"{isa} n={n} {what}")
            err = ulp_error(g, r, np.dtype(np.float32))
            worst = np.unravel_index(int(np.argmax(err)), err.shape)
            assert err.max() <= 0.51, f"{isa} n={n} {what}: {err.max():.3g} ulp at {worst}"
        exact = (x == x.max(axis=-1, keepdims=True)).sum(axis=-1)
        np.testing.assert_array_equal(np.asarray(counts), exact, err_msg=f"{isa} n={n}")


@pytest.mark.parametrize("isa", ISAS)
def test_log_softmax_of_a_lone_negative_zero_is_positive_zero(isa: str) -> None:
    """log_softmax is x - m - L; where x = m = -0 and L = 0 (a row of one element, or
    one whose other entries are -inf) that is x - x, which IEEE arithmetic makes +0,
    as torch's log_softmax gives. The float32 paths form it as (x - C) - c with C + c
    = m + L: a zero C must count as -0 there, on the row path (one row; in fast mode
    also the rows the transposed kernels hand back for their tiny rest) and in the
    accurate transposed short-row kernels (16 rows), for every row length that
    reaches them, in both precisions. float64 and the other values of the rows are
    checked too."""
    saved = _ck.isa()
    rows = [[-0.0], [-0.0, -np.inf], [-np.inf] * 20 + [-0.0] + [-np.inf] * 19, [0.0]]
    try:
        _ck.set_isa(isa)
        for row in rows:
            for dtype in (np.float32, np.float64):
                for reps, precision in itertools.product((1, 16), ("accurate", "fast")):
                    x = np.repeat(np.array([row], dtype), reps, axis=0)
                    got = sk.log_softmax(x, precision=precision)
                    want = np.where(np.isneginf(x), -np.inf, 0.0).astype(dtype)
                    np.testing.assert_array_equal(got, want)
                    lead = got[~np.isneginf(x)]
                    where = (isa, precision, row[:2], dtype, reps, lead)
                    assert not np.signbit(lead).any(), where
    finally:
        _ck.set_isa(saved)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("precision", ["accurate", "fast"])
def test_short_rows_on_every_instruction_set(isa: str, dtype: str, precision: str) -> None:
    """The transposed short-row kernels (rows of up to 256 elements, several rows per
    vector; AVX-512 moves 16 rows at a time through in-register transposes, rows l and
    l + 8 sharing a vector), for softmax, log_softmax and logsumexp: row counts that
    leave a partial group, lengths around the 8-column blocks, and special rows (+inf,
    all -inf, NaN, in both halves of a 16-row group) that the kernels hand back to the
    general path. In place too: a kernel that wrote a special row's output before the
    general path read that row would change its input."""
    rng = np.random.default_rng(5)
    saved = _ck.isa()
    for n in (1, 7, 8, 10, 15, 16, 17, 33, 40, 64, 65, 100, 129, 255, 256, 257):
        x = (rng.standard_normal((53, n)) * 6).astype(dtype)
        x[2, n // 2] = np.inf
        x[17, :] = -np.inf
        x[20, 0] = np.nan
        x[31, -1] = 3e4  # a far maximum: the others underflow
        x[42, n // 3] = np.nan  # the upper half of a 16-row group
        x[45, :] = -np.inf
        try:
            _ck.set_isa(isa)
            got = [
                sk.softmax(x, precision=precision),
                sk.log_softmax(x, precision=precision),
                sk.logsumexp(x, precision=precision),
            ]
            inplace = [x.copy(), x.copy()]
            sk.softmax(inplace[0], out=inplace[0], precision=precision)
            sk.log_softmax(inplace[1], out=inplace[1], precision=precision)
        finally:
            _ck.set_isa(saved)
        with oracle_only():
            ref = [sk.softmax(x), sk.log_softmax(x), sk.logsumexp(x)]
        tol = 4.0 if precision == "fast" else 2.0
        for g, r in zip(got, ref, strict=True):
            assert_ulp_close(g, r, tol, f"{isa} n={n}")
        for g, p in zip(got[:2], inplace, strict=True):
            np.testing.assert_array_equal(p, g, err_msg=f"{isa} n={n} in place")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("precision", ["accurate", "fast"])
def test_log_softmax_of_a_lone_finite_entry_is_plus_zero(
    isa: str, dtype: str, precision: str
) -> None:
    """log_softmax of a row whose other entries are all -inf is log 1 = +0 at the
    finite entry, as the oracle and torch give: the float32 engines lift -inf to a
    finite floor before exp, and their tiny rest sum made it -0.0 (short rows, the
    accurate row path, masks, temperatures, axis 0)."""
    saved = _ck.isa()
    for n in (2, 10, 40, 257, 1000, 40_000):
        x = np.full((19, n), -np.inf, dtype=dtype)
        x[np.arange(19), np.arange(19) % n] = np.linspace(-30.0, 30.0, 19)
        x[7, (7 + 1) % n] = x[7, 7 % n]  # two maxima: log(1/2) each
        where = np.ones(x.shape, dtype=bool)
        where[11, :] = False
        where[11, 0] = True
        x[11, :] = 5.0  # every other entry masked out
        try:
            _ck.set_isa(isa)
            got = [
                sk.log_softmax(x, precision=precision),
                sk.log_softmax(x, where=where, precision=precision),
                sk.log_softmax(x, temperature=2.0, precision=precision),
                sk.log_softmax(np.ascontiguousarray(x.T), axis=0, precision=precision).T,
            ]
        finally:
            _ck.set_isa(saved)
        with oracle_only():
            ref = sk.log_softmax(x)
        for k, g in enumerate(got):
            lone = np.isfinite(g) & np.isfinite(ref) & (ref == 0.0)
            assert lone.sum() >= 17, (n, k)
            assert np.all(g[lone] == 0.0) and not np.signbit(g[lone]).any(), (isa, n, k)
            assert g[7, 7 % n] == pytest.approx(-np.log(2.0), rel=1e-6), (n, k)


def _log_softmax_f64(x: np.ndarray, where: np.ndarray | None, temperature: float) -> np.ndarray:
    """float64 log_softmax over the last axis (relative error near 1e-16: a reference
    for float32 results to far below an ulp); masked entries -inf."""
    z = x.astype(np.float64) / temperature
    if where is not None:
        z = np.where(where, z, -np.inf)
    m = np.max(z, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        top = z == m  # the maxima apart: log1p keeps a tiny rest sum
        rest = np.sum(np.where(top, 0.0, np.exp(z - m)), axis=-1, keepdims=True)
        count = np.sum(top, axis=-1, keepdims=True)
        return (z - m) - np.log1p((count - 1) + rest)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", [17, 1000, 4095, 4096, 4097, 9000])
def test_accurate_float32_log_softmax_within_its_bound(isa: str, n: int) -> None:
    """Accurate float32 log_softmax within 0.5 ulp + 1 % of a float64 reference on rows
    around the length up to which the output pass reads the widened entries kept by the
    statistics pass instead of the floats (4096): plain rows, -inf entries, a row
    whose maximum is too large for the plain path, masks, a temperature, ties, a
    dominant entry; and the same bits on one thread and on two."""
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((24, n)) * 7).astype(np.float32)
    x[1, ::3] = -np.inf
    x[2, 5 % n] = 3e30  # beyond the plain path's range: the general loop keeps the entries
    x[3, :] = 1.5  # every entry a maximum
    x[4, 0] = 90.0  # dominant: the rest sum is tiny
    x[5, :] = -np.inf
    x[5, n // 2] = -2.0
    where = rng.random(x.shape) < 0.8
    where[:, 0] = True
    where[5, n // 2] = True  # row 5 keeps its one finite entry
    saved = _ck.isa()
    try:
        _ck.set_isa(isa)
        cases = {"plain": ({}, None, 1.0), "where": ({"where": where}, where, 1.0),
                 "T=0.7": ({"temperature": 0.7}, None, 0.7)}  # fmt: skip
        for name, (kw, w, temp) in cases.items():
            what = f"{isa} n={n} {name}"
            got = sk.log_softmax(x, precision="accurate", **kw)
            one = sk.log_softmax(x, precision="accurate", threads=1, **kw)
            two = sk.log_softmax(x, precision="accurate", threads=2, **kw)
            assert np.array_equal(one, two, equal_nan=True), what
            ref = _log_softmax_f64(x, w, temp)
            assert_ulp_close(got, ref.astype(np.float32), 1.0, what)
            fin = np.isfinite(ref)
            err = np.abs(got[fin] - ref[fin])
            ulp = np.spacing(np.abs(ref[fin].astype(np.float32))).astype(np.float64)
            worst = float(np.max(err / ulp))
            assert worst <= 0.505, (what, worst)
    finally:
        _ck.set_isa(saved)


# ---- out=, fallbacks, errors --------------------------------------------------------


@pytest.mark.parametrize("order", ["C", "F"])
def test_out_receives_the_result(order: str) -> None:
    x = np.random.default_rng(0).standard_normal((6, 9)).astype(np.float32)
    out = np.empty(x.shape, np.float32, order=order)
    res = sk.softmax(x, axis=0, out=out)
    assert res is out
    np.testing.assert_array_equal(out, sk.softmax(x, axis=0))
    res = sk.log_softmax(x, out=out)
    assert res is out
    np.testing.assert_array_equal(out, sk.log_softmax(x))


def test_out_may_be_the_input() -> None:
    x = np.random.default_rng(1).standard_normal((4, 1000))
    expected = sk.softmax(x)
    y = x.copy()
    assert sk.softmax(y, out=y) is y
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("precision", ["accurate", "fast"])
@pytest.mark.parametrize("kind", ["short_rows", "short_rows_in_groups", "rows_of_600"])
def test_large_outputs_are_streamed_out_whole(dtype: str, precision: str, kind: str) -> None:
    """Outputs passed in (``out=``) from 32 MiB on are written with non-temporal
    stores: short rows staged per task (rows over 64 bytes a group of 16 or more rows
    at a time), rows from 2 KiB (fast) or 4 KiB on in place; fresh outputs with
    ordinary stores. The same bits as small calls of the same rows, into a misaligned
    ``out``, in place, allocated, and with flagged rows (+inf, NaN, all -inf) that take
    the general path between the others, at the edges of groups and tasks."""
    rng = np.random.default_rng(8)
    if kind == "short_rows":
        rows, n = (3_000_000, 3) if dtype == "float32" else (480_000, 9)
    elif kind == "short_rows_in_groups":
        rows, n = (220_000, 40) if dtype == "float32" else (220_000, 20)
    else:
        rows, n = (14_400, 600) if dtype == "float32" else (7_200, 600)
    x = (rng.standard_normal((rows, n)) * 5).astype(dtype)
    for r in (0, 1, 15, 16, 17, 31, 255, 256, 257, rows // 2 + 1, rows - 1):
        x[r, r % n] = np.inf
    x[1000, :] = -np.inf
    x[1001, 1] = np.nan
    x[1500:1800, 1:] = -np.inf  # a lone finite entry per row
    for fn in (sk.softmax, sk.log_softmax):
        expected = np.concatenate(
            [fn(x[k : k + 1024], precision=precision) for k in range(0, rows, 1024)]
        )
        buf = np.empty(x.size + 1, dtype=dtype)
        out = buf[1:].reshape(x.shape)  # 4 or 8 bytes past an aligned start
        assert fn(x, precision=precision, out=out) is out
        np.testing.assert_array_equal(out, expected)
        y = x.copy()
        assert fn(y, precision=precision, out=y) is y
        np.testing.assert_array_equal(y, expected)
        np.testing.assert_array_equal(fn(x, precision=precision), expected)


@pytest.mark.parametrize("log", [False, True])
def test_out_overlapping_the_input_is_still_right(log: bool) -> None:
    """An ``out`` that overlaps ``x`` without being it leaves the short path."""
    fn = sk.log_softmax if log else sk.softmax
    buf = np.random.default_rng(2).standard_normal(4 * 1000 + 1000)
    x = buf[:4000].reshape(4, 1000)
    expected = fn(x.copy())
    out = buf[1000:].reshape(4, 1000)  # shifted by one row: rows 1..3 of x are out's 0..2
    assert fn(x, out=out) is out
    np.testing.assert_array_equal(out, expected)


def test_out_on_fallback_path() -> None:
    x = np.array([[1.0, 2.0, 3.0]], dtype=np.float16)
    out = np.empty_like(x)
    assert sk.softmax(x, out=out) is out
    np.testing.assert_array_equal(out, sk.softmax(x))


@pytest.mark.parametrize(
    ("out", "exc", "text"),
    [
        (np.empty((2, 3), np.float64), SoftmaxkitValueError, "shape"),
        (np.empty((3, 3), np.float32), SoftmaxkitValueError, "dtype"),
        ([0.0] * 9, SoftmaxkitTypeError, "NumPy"),
    ],
)
def test_out_errors(out: object, exc: type, text: str) -> None:
    with pytest.raises(exc, match=text):
        sk.softmax(np.zeros((3, 3)), out=out)


def test_out_read_only_is_an_error() -> None:
    out = np.empty((3, 3))
    out.flags.writeable = False
    with pytest.raises(SoftmaxkitValueError, match="read-only"):
        sk.log_softmax(np.zeros((3, 3)), out=out)


@pytest.mark.parametrize(
    ("threads", "exc"),
    [(0, SoftmaxkitValueError), ("2", SoftmaxkitTypeError), (True, SoftmaxkitTypeError)],
)
def test_threads_errors(threads: object, exc: type) -> None:
    with pytest.raises(exc, match="threads"):
        sk.softmax(np.zeros(3), threads=threads)


def test_threads_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOFTMAXKIT_NUM_THREADS", "3")
    assert _dispatch.default_threads() == 3
    monkeypatch.setenv("SOFTMAXKIT_NUM_THREADS", "zero")
    with pytest.raises(SoftmaxkitValueError, match="SOFTMAXKIT_NUM_THREADS"):
        sk.softmax(np.zeros((2, 3)), axis=0)
    monkeypatch.delenv("SOFTMAXKIT_NUM_THREADS")
    assert _dispatch.default_threads() >= 1


@pytest.mark.parametrize("precision", ["accurate", "fast"])
@SETTINGS
@given(case=arrays(), data=st.data(), return_sign=st.booleans())
def test_weighted_logsumexp_matches_oracle(
    precision: str, case: dict[str, object], data: st.DataObject, return_sign: bool
) -> None:
    x = np.asarray(case["x"])
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    kind = data.draw(st.sampled_from(["positive", "signed", "zeros"]))
    b = rng.random(x.shape) + 0.1
    if kind == "signed":
        b = b * rng.choice([-1.0, 1.0], size=x.shape)
    elif kind == "zeros":
        b = np.where(rng.random(x.shape) < 0.4, 0.0, b)
    b = b.astype(x.dtype.newbyteorder("="))
    kw = {"axis": case["axis"], "where": case["where"], "b": b, "return_sign": return_sign}
    got = sk.logsumexp(x, precision=precision, **kw)
    with oracle_only():
        ref = sk.logsumexp(x, precision="accurate", **kw)
    if return_sign:
        assert_ulp_close(got[1], ref[1], 0.0, "sign")
        got, ref = got[0], ref[0]
    g, r = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert np.array_equal(np.isnan(g), np.isnan(r))
    fin = np.isfinite(r)
    assert np.array_equal(g[~fin], r[~fin], equal_nan=True)
    # a signed sum may cancel: compare with its terms' size, log(n) + max|x|
    n = max(int(x.size), 1)
    fx = np.abs(x[np.isfinite(x)])
    mag = np.abs(r[fin]) + np.log(n) + float(np.max(fx, initial=0.0)) + 1.0
    eps = np.finfo(x.dtype).eps
    cancel = 1.0 if kind != "signed" else 1e6
    assert np.all(np.abs(g[fin] - r[fin]) <= 4 * eps * mag * cancel)


def test_uncovered_inputs_fall_back() -> None:
    x = np.array([[0.5, -1.0, 2.0]])
    ints = np.array([[1, 2, 3]])
    assert_ulp_close(sk.softmax(ints), sk.softmax(ints.astype(np.float64)), 0.0)
    t = np.array([[0.2, 0.3, 0.5]])
    got_ce = sk.cross_entropy(x, t, label_smoothing=0.1)
    with oracle_only():
        ref_ce = sk.cross_entropy(x, t, label_smoothing=0.1)
    np.testing.assert_array_equal(got_ce, ref_ce)


# ---- more than 2**31 elements -------------------------------------------------------


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def test_more_than_2_31_elements() -> None:
    # np.zeros maps untouched pages to the kernel's shared zero page, so reading
    # 8.6 GB of zeros needs little real memory; the last row ends past 2**31.
    if os.environ.get("SOFTMAXKIT_SANITIZED"):
        pytest.skip("under AddressSanitizer an 8.6 GB calloc is backed by real memory")
    need = 1 << 30
    avail = _mem_available()
    if avail < need:
        pytest.skip(f"needs about 1 GiB of free memory, the machine has {avail >> 20} MiB")
    n = (1 << 30) + 8
    x = np.zeros((2, n), dtype=np.float32)
    x[1, -1] = 50.0
    x[0, -3] = 1.0
    lse = sk.logsumexp(x)
    np.testing.assert_allclose(lse[0], np.log((n - 1) + np.e), rtol=1e-6)
    np.testing.assert_allclose(lse[1], 50.0 + np.log1p((n - 1) * np.exp(-50.0)), rtol=1e-6)
    total = sk.logsumexp(x, axis=None, precision="fast")
    expect = 50.0 + np.log1p((2 * n - 2 + np.e) * np.exp(-50.0))
    np.testing.assert_allclose(total, expect, rtol=1e-6)
    loss = sk.cross_entropy(x, np.array([n - 3, n - 1]), reduction="none")
    np.testing.assert_allclose(loss, [lse[0] - 1.0, lse[1] - 50.0], rtol=1e-5, atol=1e-12)


# ---- sigmoid family and vector-Jacobian products -----------------------------------


@st.composite
def elementwise(draw: st.DrawFn) -> dict[str, object]:
    dtype = np.dtype(draw(st.sampled_from(["float32", "float64"])))
    shape = tuple(draw(st.lists(st.integers(0, 7), min_size=1, max_size=3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1.0, 10.0, 60.0, 800.0]))
    x = rng.standard_normal(shape) * scale
    if x.size and draw(st.booleans()):
        k = max(1, x.size // 4)
        x.flat[rng.integers(0, x.size, size=k)] = rng.choice([np.inf, -np.inf, np.nan], size=k)
    y = rng.random(shape)
    if draw(st.booleans()):
        y = np.round(y)
    w = rng.random(shape) * 2 if draw(st.booleans()) else None
    pw = rng.random(shape[-1:]) * 3 if draw(st.booleans()) else None
    return {"x": x.astype(dtype), "y": y, "w": w, "pw": pw}


@pytest.mark.parametrize("precision", ["accurate", "fast"])
@SETTINGS
@given(case=elementwise())
def test_sigmoid_family_matches_oracle(precision: str, case: dict[str, object]) -> None:
    x = case["x"]
    for fn in (sk.sigmoid, sk.log_sigmoid):
        got = fn(x, precision=precision)
        with oracle_only():
            ref = fn(x, precision="accurate")
        assert_ulp_close(got, ref, 1.0 if precision == "accurate" else 4.0, fn.__name__)


@pytest.mark.parametrize("precision", ["accurate", "fast"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@SETTINGS
@given(case=elementwise())
def test_bce_matches_oracle(precision: str, reduction: str, case: dict[str, object]) -> None:
    x = np.asarray(case["x"])
    kw = {"weight": case["w"], "pos_weight": case["pw"], "reduction": reduction}
    got = sk.binary_cross_entropy_with_logits(
        x, case["y"], return_grad=True, precision=precision, **kw
    )
    with oracle_only():
        ref = sk.binary_cross_entropy_with_logits(x, case["y"], return_grad=True, **kw)
    if reduction == "none":
        assert_ulp_close(got[0], ref[0], 1.0 if precision == "accurate" else 4.0, "bce")
    else:
        rtol = 1e-5 if x.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got[0], ref[0], rtol=rtol)
        assert np.asarray(got[0]).dtype == np.asarray(ref[0]).dtype
    g, r = np.asarray(got[1]), np.asarray(ref[1])
    assert g.dtype == r.dtype and g.shape == r.shape
    tol = 4e-7 if x.dtype == np.float32 else 1e-15
    atol = tol * float(np.max(np.abs(r[np.isfinite(r)]), initial=0))
    if precision == "fast":
        # The gradient is w ((1 + (pw - 1) y) sigmoid(x) - pw y): the fast sigmoid's few
        # ulps are ulps of those terms, and their difference can be much smaller.
        y = np.abs(np.asarray(case["y"], dtype=np.float64))
        w = 1.0 if case["w"] is None else np.abs(np.asarray(case["w"], dtype=np.float64))
        pw = 1.0 if case["pw"] is None else np.abs(np.asarray(case["pw"], dtype=np.float64))
        terms = np.broadcast_to(w * (1.0 + (pw + 1.0) * y), x.shape)
        if reduction == "mean":
            terms = terms / max(x.size, 1)
        ulps = 4 * float(np.finfo(x.dtype).eps)
        atol = max(atol, ulps * float(np.max(terms[np.isfinite(terms)], initial=0)))
    np.testing.assert_allclose(g, r, rtol=tol, atol=atol)


@pytest.mark.parametrize("precision", ["accurate", "fast"])
@pytest.mark.parametrize("log", [False, True])
@SETTINGS
@given(case=arrays(), data=st.data())
def test_vjps_match_oracle(
    log: bool, precision: str, case: dict[str, object], data: st.DataObject
) -> None:
    x = np.asarray(case["x"])
    if not np.all(np.isfinite(x)):
        x = np.nan_to_num(x, nan=0.0, posinf=3.0, neginf=-3.0)
    axis = case["axis"]
    y = sk.log_softmax(x, axis=axis) if log else sk.softmax(x, axis=axis)
    g = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).standard_normal(x.shape)
    g = g.astype(y.dtype)
    fn = sk.log_softmax_vjp if log else sk.softmax_vjp
    got = fn(y, g, axis=axis, precision=precision)
    with oracle_only():
        ref = fn(y, g, axis=axis, precision="accurate")
    assert got.dtype == ref.dtype and got.shape == ref.shape
    # a difference of products: compare with the size of the terms, not of the result
    red = None if y.ndim == 0 else axis
    if log:
        mag = np.abs(g) + np.exp(y) * np.sum(np.abs(g), axis=red, keepdims=True)
    else:
        mag = np.abs(y) * (np.abs(g) + np.sum(np.abs(y * g), axis=red, keepdims=True))
    eps = np.finfo(y.dtype).eps
    # The oracle forms its sum in plain arithmetic: up to (n - 1) eps of the sum of the
    # magnitudes over the n reduced elements, which mag contains. The kernels' own
    # accuracy is held to an exact reference in test_accurate_vjps_are_near_exact.
    n_red = y.size // max(1, np.sum(y, axis=red, keepdims=True).size)
    assert np.all(np.abs(got - ref) <= (8 + n_red) * eps * mag + np.finfo(y.dtype).tiny)


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("axis", [(0, 1), -1])
def test_accurate_vjps_are_near_exact(log: bool, axis: object) -> None:
    """float64 VJPs over 1500-element reductions, against sums exact to 50 digits."""
    import mpmath as mp

    rng = np.random.default_rng(11)
    x = rng.normal(0, 2.5, (1, 1500, 3))
    if axis == -1:
        x = np.ascontiguousarray(x.reshape(3, 1500))
    y = sk.log_softmax(x, axis=axis) if log else sk.softmax(x, axis=axis)
    g = rng.standard_normal(x.shape)
    got = (sk.log_softmax_vjp if log else sk.softmax_vjp)(y, g, axis=axis)
    # one row per reduction: 3 reductions of 1500 elements
    yc = y if axis == -1 else y.reshape(1500, 3).T
    gc = g if axis == -1 else g.reshape(1500, 3).T
    exact = np.empty_like(yc)
    with mp.workdps(50):
        for c in range(3):
            ys, gs = [mp.mpf(float(v)) for v in yc[c]], [mp.mpf(float(v)) for v in gc[c]]
            if log:
                s = mp.fsum(gs)
                exact[c] = [float(b - mp.exp(a) * s) for a, b in zip(ys, gs, strict=True)]
            else:
                s = mp.fsum(a * b for a, b in zip(ys, gs, strict=True))
                exact[c] = [float(a * (b - s)) for a, b in zip(ys, gs, strict=True)]
    exact = exact if axis == -1 else exact.T.reshape(y.shape)
    red = -1 if axis == -1 else (0, 1)
    if log:
        mag = np.abs(g) + np.exp(y) * np.sum(np.abs(g), axis=red, keepdims=True)
    else:
        mag = np.abs(y) * (np.abs(g) + np.sum(np.abs(y * g), axis=red, keepdims=True))
    assert np.all(np.abs(got - exact) <= 2 * np.finfo(np.float64).eps * mag)


def _ce_two_step(
    x: np.ndarray, t: np.ndarray, w: np.ndarray | None, ign: int, z: float, red: int
) -> tuple[np.ndarray, np.ndarray]:
    """The reduced cross-entropy from the per-row kernel and np.sum, as the C call promises."""
    from softmaxkit import _ckernels

    rows, n = x.shape
    code = 1 if x.dtype == np.float64 else 0
    ignored = t == ign
    w_t = None if w is None else np.where(ignored, 0.0, w[np.where(ignored, 0, t)])
    den_pred = float(np.sum(w_t)) if w_t is not None else float(rows - np.count_nonzero(ignored))
    loss, lse = np.empty(rows), np.empty(rows)
    counted = np.empty(rows, np.uint8)
    g = np.empty_like(x)

    def run(den: float) -> None:
        sc = (1.0 / den if den != 0.0 else 0.0) if red == 1 else 1.0
        _ckernels.cross_entropy(
            x, t, w_t, None, rows, n, code, 1, 2, True, ign, z, sc, loss, lse, counted, g
        )

    run(den_pred)
    cnt = counted.view(bool)
    k = int(np.count_nonzero(cnt))
    den = (float(np.sum(w_t[cnt])) if k != rows else den_pred) if w_t is not None else float(k)
    if red == 1 and den != den_pred:
        run(den)
    if red == 0:
        return loss, g
    total = float(np.sum(loss))
    if red == 2:
        return np.array([total]), g
    return np.array([total / den if (k > 0 and den != 0.0) else 0.0]), g


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("red", [0, 1, 2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("rows", [1, 7, 129, 3000])
def test_cross_entropy_reduced_equals_kernel_then_numpy_sum(
    dtype: type, red: int, weighted: bool, rows: int
) -> None:
    from softmaxkit import _ckernels

    rng = np.random.default_rng(rows * 7 + red)
    n = 37
    x = (rng.standard_normal((rows, n)) * 8).astype(dtype)
    t = rng.integers(0, n, rows).astype(np.int64)
    t[::5] = -100
    x[1 % rows] = -np.inf  # a row that does not count
    w = rng.standard_normal(n) if weighted else None  # negative and zero weights too
    if w is not None:
        w[3] = 0.0
    want_l, want_g = _ce_two_step(x, t, w, -100, 0.01, red)
    loss = np.empty(rows if red == 0 else 1)
    g = np.empty_like(x)
    code = 1 if x.dtype == np.float64 else 0
    _ckernels.cross_entropy_reduced(x, t, w, rows, n, code, 1, 2, -100, 0.01, red, loss, g)
    np.testing.assert_array_equal(loss, want_l)
    np.testing.assert_array_equal(g, want_g)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("red", [0, 1, 2])
@pytest.mark.parametrize("rows", [1, 37, 600])
def test_cross_entropy_reduced_at_addresses_equals_the_buffer_call(
    dtype: type, red: int, rows: int
) -> None:
    """The address entry (softmaxkit.torch's everyday call) is the buffer entry
    without weights or z-loss, with the loss optionally rounded once to x's type."""
    from softmaxkit import _ckernels

    rng = np.random.default_rng(rows + red)
    n = 37
    x = (rng.standard_normal((rows, n)) * 8).astype(dtype)
    t = rng.integers(0, n, rows).astype(np.int64)
    t[::5] = -100
    x[1 % rows] = -np.inf
    x[2 % rows, 3] = np.inf
    code = 1 if x.dtype == np.float64 else 0
    count = rows if red == 0 else 1
    want_l, want_g = np.empty(count), np.empty_like(x)
    _ckernels.cross_entropy_reduced(x, t, None, rows, n, code, 1, 2, -100, 0.0, red, want_l, want_g)
    x0 = x.copy()
    for ltype in (np.float64, dtype):
        loss = np.empty(count, ltype)
        g = np.full_like(x, 7.0)
        _ckernels.cross_entropy_reduced_at(
            x.ctypes.data, t.ctypes.data, rows, n, code, 1, 2, -100, red, loss, g.ctypes.data
        )
        np.testing.assert_array_equal(loss, want_l.astype(ltype))
        np.testing.assert_array_equal(g, want_g)
        loss2 = np.empty(count, ltype)
        _ckernels.cross_entropy_reduced_at(
            x.ctypes.data, t.ctypes.data, rows, n, code, 1, 1, -100, red, loss2, 0
        )
        np.testing.assert_array_equal(loss2, loss)
    np.testing.assert_array_equal(x, x0)


def test_cross_entropy_reduced_at_checks_what_it_can() -> None:
    """Addresses cannot be checked, but the loss buffer, shapes and codes are;
    a bad label names its row as the buffer entry does."""
    from softmaxkit import _ckernels

    x = np.zeros((4, 3), np.float32)
    t = np.array([0, -100, 3, 1], np.int64)
    xa, ta = x.ctypes.data, t.ctypes.data
    with pytest.raises(IndexError) as info:
        _ckernels.cross_entropy_reduced_at(xa, ta, 4, 3, 0, 1, 1, -100, 1, np.empty(1), 0)
    assert info.value.args == (2,)
    t[2] = 1
    cases = [
        ((0, ta, 4, 3, 0, 1, 1, -100, 1, np.empty(1), 0), "bad address"),  # a null address
        ((xa, ta, 0, 3, 0, 1, 1, -100, 1, np.empty(1), 0), "shape"),  # no rows
        ((xa, ta, 4, 3, 2, 1, 1, -100, 1, np.empty(1), 0), "dtype"),  # no such dtype
        ((xa, ta, 4, 3, 0, 1, 1, -100, 3, np.empty(1), 0), "reduction"),  # no such reduction
        ((xa, ta, 4, 3, 0, 1, 1, -100, 1, np.empty(2), 0), "loss: expected 1"),  # two slots
        ((xa, ta, 4, 3, 0, 1, 1, -100, 0, np.empty(4, np.float16), 0), "loss: expected 4"),
        ((xa, ta, 4, 3, 1, 1, 1, -100, 1, np.empty(1, np.float32), 0), "loss: expected 1"),
    ]
    ro = np.empty(1)
    ro.flags.writeable = False
    cases.append(((xa, ta, 4, 3, 0, 1, 1, -100, 1, ro, 0), "read-only"))
    for bad, what in cases:
        with pytest.raises(ValueError, match=what):
            _ckernels.cross_entropy_reduced_at(*bad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("shape", [(1, 1), (37, 10), (3, 1000), (2, 40000)])
def test_softmax_at_address_equals_the_buffer_call(
    dtype: type, log: bool, shape: tuple[int, int]
) -> None:
    """The address entry (softmaxkit.torch's everyday softmax) gives the buffer
    entry's bits, specials included, on one and two threads, and leaves x alone."""
    from softmaxkit import _ckernels

    rows, n = shape
    rng = np.random.default_rng(rows * n + log)
    x = (rng.standard_normal(shape) * 8).astype(dtype)
    if rows > 2:
        x[1] = -np.inf
        x[2, n // 2] = np.inf
        x[0, 0] = np.nan
    code = 1 if x.dtype == np.float64 else 0
    want = np.empty_like(x)
    _ckernels.softmax(x, want, None, rows, n, code, 1, 2, 1.0, log, True)
    x0 = x.copy()
    for threads in (1, 2):
        got = np.full_like(x, 7.0)
        _ckernels.softmax_at(x.ctypes.data, got, rows, n, code, 1, threads, log)
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(x, x0)


def test_softmax_at_checks_what_it_can() -> None:
    """The address cannot be checked; the output buffer, shape, dtype and threads are."""
    from softmaxkit import _ckernels

    x = np.zeros((4, 3), np.float32)
    xa = x.ctypes.data
    ro = np.empty((4, 3), np.float32)
    ro.flags.writeable = False
    cases = [
        ((0, np.empty((4, 3), np.float32), 4, 3, 0, 1, 1, False), "bad address"),
        ((xa, np.empty((4, 3), np.float32), 0, 3, 0, 1, 1, False), "shape"),
        ((xa, np.empty((4, 3), np.float32), 4, 3, 2, 1, 1, False), "dtype"),
        ((xa, np.empty((4, 3), np.float32), 4, 3, 0, 1, 0, False), "thread"),
        ((xa, np.empty((4, 2), np.float32), 4, 3, 0, 1, 1, False), "out: expected 12"),
        ((xa, np.empty((4, 3), np.float64), 4, 3, 0, 1, 1, False), "out: expected 12"),
        ((xa, ro, 4, 3, 0, 1, 1, False), "read-only"),
    ]
    for bad, what in cases:
        with pytest.raises(ValueError, match=what):
            _ckernels.softmax_at(*bad)


def test_cross_entropy_reduced_names_the_bad_row() -> None:
    from softmaxkit import _ckernels

    x = np.zeros((4, 3), np.float32)
    t = np.array([0, -100, 3, 1], np.int64)
    with pytest.raises(IndexError) as info:
        _ckernels.cross_entropy_reduced(x, t, None, 4, 3, 0, 1, 1, -100, 0.0, 1, np.empty(1), None)
    assert info.value.args == (2,)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dominant_maximum_with_a_temperature_keeps_its_tiny_log_probability(dtype: str) -> None:
    """Accurate log_softmax and softmax of rows with one entry far above the rest and a
    temperature (the exact row path): the maximum's log-probability is -log1p(s) with s
    about 1e-50, which must keep the bound. The rest sum is summed apart from the
    maxima; summed next to the maximum's 1 it kept only its low word's precision,
    rounded once per term (3 ulp in float64)."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((40, 130)).astype(dtype)
    x[rng.random(x.shape) < 0.2] = -np.inf
    x[np.arange(40), (np.arange(40) * 37) % 130] = 60.0
    x[5, 7] = x[5, (5 * 37) % 130]  # two maxima
    for fn in (sk.log_softmax, sk.softmax):
        got = fn(x, temperature=0.5)
        with oracle_only():
            ref = fn(x, temperature=0.5)
        assert_ulp_close(got, ref, 1.0 if dtype == "float32" else 2.0, fn.__name__)


def test_bce_gradient_is_rounded_once_where_its_terms_cancel() -> None:
    """float64 accurate BCE: the gradient w ((1 - y) sigmoid(x) - w_+ y sigmoid(-x))
    where the target is near sigmoid(x), so that the two products cancel to a
    thousandth of either. The C core and the array-agnostic oracle form it in
    double-word and round once: within 1 ulp of the exact value (mpmath), where
    the products formed in float64 were up to tens of ulp off."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.prec = 200
    rng = np.random.default_rng(3)
    x = rng.standard_normal(300) * 4
    y = np.clip(1 / (1 + np.exp(-x)) * (1 + rng.standard_normal(300) * 1e-3), 0.0, 1.0)
    pw, w = 1.3, rng.uniform(0.5, 2.0, 300)

    def exact(xi: float, yi: float, wi: float) -> float:
        s = 1 / (1 + mpmath.e ** (-mpmath.mpf(xi)))
        yv = mpmath.mpf(yi)
        return float(mpmath.mpf(wi) * ((1 - yv) * s - mpmath.mpf(pw) * yv * (1 - s)))

    ref = np.array([exact(a, b, c) for a, b, c in zip(x, y, w, strict=True)])
    kw = {"weight": w, "pos_weight": np.array(pw), "reduction": "sum", "return_grad": True}
    got = sk.binary_cross_entropy_with_logits(x, y, **kw)[1]
    with oracle_only():
        oracle = sk.binary_cross_entropy_with_logits(x, y, **kw)[1]
    ulp = np.spacing(np.abs(ref))
    assert np.max(np.abs(got - ref) / ulp) <= 1.0
    assert np.max(np.abs(oracle - ref) / ulp) <= 1.0


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", [3, 40, 300, 5000])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_logsumexp_of_log_probabilities_where_max_and_log1p_cancel(
    isa: str, n: int, masked: bool, dtype: str
) -> None:
    """Accurate logsumexp where max + log1p(...) cancels: rows of log-probabilities,
    whose logsumexp is about 1e-8 (float32) or 1e-16 (float64). The float32 engines'
    float64 exponentials (2^-34 relative) left such results up to millions of ulp off
    (hypothesis found [-2.0682271, -0.13512552, -inf] 2 ulp off), the float64
    engine's sums 2^-63 min(L, 1) absolute (up to 9e12 ulp); the driver sums such
    rows again with the double-word exp and log1p. Short rows (the transposed
    kernel) and long ones (the row path), with and without ``where``, on every
    instruction set, against mpmath: float32 within the documented 0.5 ulp + 1%,
    float64 within 1 ulp or 2^-94 min(L, 1), what double-word sums allow (see
    ``softmaxkit.logsumexp``'s notes)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.prec = 300
    rng = np.random.default_rng(n)
    z = rng.standard_normal((12, n)) * 2
    x = (z - np.log(np.exp(z).sum(axis=1, keepdims=True))).astype(dtype)
    x[0, :2] = [-2.0682271, -0.13512552]
    x[0, 2:] = -np.inf
    where = rng.random(x.shape) > 0.1 if masked else None
    if where is not None:
        where[0] = True
    saved = _ck.isa()
    try:
        _ck.set_isa(isa)
        got = sk.logsumexp(x, axis=-1, where=where)
    finally:
        _ck.set_isa(saved)
    for i in range(x.shape[0]):
        row = x[i] if where is None else x[i][where[i]]
        exact = mpmath.log(mpmath.fsum(mpmath.e ** mpmath.mpf(float(v)) for v in row))
        ulp = float(np.spacing(np.asarray(abs(float(exact)), dtype)))
        err = abs(mpmath.mpf(float(got[i])) - exact)
        if dtype == "float32":
            assert err <= 0.505 * ulp, (i, got[i], exact)
        else:
            big_l = float(exact) - float(row.max())
            assert err <= max(ulp, 2.0**-94 * min(big_l, 1.0)), (i, got[i], exact)
