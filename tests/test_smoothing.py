"""Label-smoothed cross-entropy of float32 NumPy logits on the C core (``softmaxkit._smoothing``).

``sk.cross_entropy(x, t, label_smoothing=eps)`` on float32 NumPy logits with class
indices runs on the kernel's block statistics plus the two ``_ckernels.smooth``
passes instead of the array-agnostic graph. Held to the contract: loss and
gradient within 0.505 ulp of the exact answer (the same call on the float64 copy,
which the array-agnostic engine computes in double-word arithmetic), the same bits
for every thread count and class axis, and the array-agnostic engine for what the
route does not take (``where``, rows holding +inf or NaN, other dtypes).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit import _dispatch, _smoothing
from tests._native_helpers import ulp_error
from tests._reference import mp_reference_rows, mp_ulp_discrepancy

pytestmark = pytest.mark.skipif(_dispatch._ckernels is None, reason="the C core is not built")

B = _smoothing.BLOCK


def _data(N: int, V: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((N, V)) * 3).astype(np.float32)
    t = rng.integers(0, V, N)
    x[0, 5 % V] = -np.inf  # a -inf logit in a counted row
    x[1, :] = -np.inf  # nothing to count
    x[2, t[2]] = -np.inf  # the target at -inf: loss inf
    t[3] = -100  # ignored
    x[4, t[4]] += 40.0  # dominant target
    x[5, :] = 0.0  # every class tied
    w = (rng.random(V) + 0.1).astype(np.float32)
    return x, t, w


@pytest.fixture
def route(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records every call of the C route's entry (``whole_row_loss``, which finishes
    rows of one block itself) that returned a result, and of ``finish_rows``."""
    seen: list[bool] = []
    for name in ("finish_rows", "whole_row_loss"):
        orig = getattr(_smoothing, name)

        def spy(*a: object, _orig: Any = orig, **k: object) -> object:
            got = _orig(*a, **k)
            if got is not None:
                seen.append(True)
            return got

        monkeypatch.setattr(_smoothing, name, spy)
    return seen


OPTIONS = {
    "mean": {"label_smoothing": 0.1, "ignore_index": -100},
    "none_weight": {
        "label_smoothing": 0.2,
        "weight": True,
        "reduction": "none",
        "ignore_index": -100,
    },
    "sum_z": {"label_smoothing": 0.1, "z_loss": 1e-3, "reduction": "sum", "ignore_index": -100},
}


@pytest.mark.parametrize("opt", sorted(OPTIONS))
@pytest.mark.parametrize(("N", "V"), [(64, 10), (300, 1000), (6, B + 4321)])
def test_within_the_bound_of_the_exact_answer(route: list[bool], opt: str, N: int, V: int) -> None:
    x, t, w = _data(N, V, seed=V % 89)
    kw = dict(OPTIONS[opt])
    if kw.pop("weight", False):
        kw["weight"] = w
    loss, g = sk.cross_entropy(x, t, return_grad=True, **kw)
    assert route, "the C route did not run"
    assert loss.dtype == np.float32 and g.dtype == np.float32
    if "weight" in kw:
        kw["weight"] = w.astype(np.float64)
    loss64, g64 = sk.cross_entropy(x.astype(np.float64), t, return_grad=True, **kw)
    assert np.array_equal(np.isfinite(loss), np.isfinite(loss64))
    assert np.array_equal(np.isnan(g), np.isnan(g64))
    assert ulp_error(loss, loss64, np.float32).max() <= 0.505
    assert ulp_error(g, g64, np.float32).max() <= 0.505


def test_same_bits_for_every_thread_count_and_class_axis() -> None:
    x, t, w = _data(40, 3000, seed=2)
    one = sk.cross_entropy(x, t, label_smoothing=0.1, weight=w, reduction="none",
                           ignore_index=-100, return_grad=True, threads=1)  # fmt: skip
    two = sk.cross_entropy(x, t, label_smoothing=0.1, weight=w, reduction="none",
                           ignore_index=-100, return_grad=True, threads=2)  # fmt: skip
    axis0 = sk.cross_entropy(np.ascontiguousarray(x.T), t, axis=0, label_smoothing=0.1, weight=w,
                             reduction="none", ignore_index=-100, return_grad=True)  # fmt: skip
    for a, b in ((one, two), (one, (axis0[0], axis0[1].T))):
        assert np.array_equal(a[0], b[0], equal_nan=True)
        assert np.array_equal(a[1], b[1], equal_nan=True)


@pytest.mark.parametrize("special", [np.inf, np.nan])
def test_rows_with_posinf_or_nan_take_the_array_agnostic_engine(
    route: list[bool], special: float
) -> None:
    x, t, _ = _data(20, 30, seed=3)
    x[7, 3] = special
    loss = sk.cross_entropy(x, t, label_smoothing=0.1, reduction="none", ignore_index=-100)
    assert not route
    ref = sk.cross_entropy(x.astype(np.float64), t, label_smoothing=0.1, reduction="none",
                           ignore_index=-100)  # fmt: skip
    assert np.array_equal(np.isnan(loss), np.isnan(ref))
    assert np.array_equal(np.isinf(loss), np.isinf(ref))


def test_where_takes_the_array_agnostic_engine(route: list[bool]) -> None:
    x, t, _ = _data(20, 30, seed=4)
    keep = np.ones(x.shape, bool)
    keep[:, :3] = False
    t = np.where(t < 3, 3, t)
    sk.cross_entropy(x, t, label_smoothing=0.1, where=keep, ignore_index=-100)
    assert not route


def test_fast_precision_takes_it_too(route: list[bool]) -> None:
    x, t, _ = _data(50, 200, seed=5)
    fast = sk.cross_entropy(x, t, label_smoothing=0.1, ignore_index=-100, precision="fast")
    acc = sk.cross_entropy(x, t, label_smoothing=0.1, ignore_index=-100)
    assert len(route) == 2
    assert fast == acc


def test_inputs_are_not_modified() -> None:
    x, t, w = _data(30, 40, seed=6)
    xs, ts, ws = x.copy(), t.copy(), w.copy()
    sk.cross_entropy(x, t, label_smoothing=0.1, weight=w, ignore_index=-100, return_grad=True)
    assert np.array_equal(x, xs) and np.array_equal(t, ts) and np.array_equal(w, ws)


@pytest.mark.parametrize("V", [1, 37, 1000, B])
@pytest.mark.parametrize("weighted", [False, True])
def test_gaps_from_the_gradient_pass_are_the_separate_pass_bits(V: int, weighted: bool) -> None:
    """Whole one-block rows with a gradient take their gap sums from the gradient's
    pass, without one: from the separate pass (``local_blocks``). The loss and lse are
    bitwise the same either way, for every reduction and thread count."""
    x, t, w32 = _data(8, V, V)
    t = np.where(t == -100, t, t % V)
    w = np.ascontiguousarray(w32, dtype=np.float64) if weighted else None
    xt = x[np.arange(8), np.where(t == -100, 0, t)]
    sep = _smoothing.local_blocks(x, w, 1, False)
    for red in ("none", "mean", "sum"):
        got_g = np.empty_like(x)
        got = _smoothing.finish_rows(x, 0, V, sep, xt, t, w, -100, red, 0.1, 1e-3, got_g, 2)
        want = _smoothing.finish_rows(x, 0, V, sep, xt, t, w, -100, red, 0.1, 1e-3, None, 1)
        assert np.array_equal(got[0], want[0], equal_nan=True), red
        assert np.array_equal(got[1], want[1], equal_nan=True), red


@pytest.mark.parametrize("V", [1, 37, 1000, B])
@pytest.mark.parametrize("weighted", [False, True])
def test_one_call_is_the_steps_bits(V: int, weighted: bool) -> None:
    """``whole_row_loss`` (one C call for rows of one block) gives the bits of
    ``local_blocks`` + ``finish_rows`` (the C steps called from Python), loss and
    gradient, with and without a gradient, for every reduction; ``None``, with
    nothing written, when a row holds +inf or NaN."""
    x, t, w32 = _data(8, V, V + 1)
    t = np.where(t == -100, t, t % V)
    w = np.ascontiguousarray(w32, dtype=np.float64) if weighted else None
    xt = x[np.arange(8), np.where(t == -100, 0, t)]
    for red in ("none", "mean", "sum"):
        for with_grad in (False, True):
            g1 = np.empty_like(x) if with_grad else None
            g2 = np.empty_like(x) if with_grad else None
            got = _smoothing.whole_row_loss(x, t, w, -100, red, 0.1, 1e-3, g1, 2)
            blocks = _smoothing.local_blocks(x, w, 1, False)
            want, _ = _smoothing.finish_rows(x, 0, V, blocks, xt, t, w, -100, red, 0.1, 1e-3, g2, 1)
            assert got is not None
            assert np.array_equal(got, want, equal_nan=True), (red, with_grad)
            if g1 is not None:
                assert np.array_equal(g1, g2, equal_nan=True), red
    for special in (np.inf, np.nan):
        xs = x.copy()
        xs[6, 0] = special
        g = np.full_like(x, 7.0)
        assert _smoothing.whole_row_loss(xs, t, w, -100, "mean", 0.1, 0.0, g, 1) is None
        assert (g == 7.0).all()
    with pytest.raises(IndexError, match="target out of range"):
        _smoothing.whole_row_loss(x, np.full(8, V), w, -100, "mean", 0.1, 0.0, None, 1)


def _mp_items(
    x: np.ndarray, target: np.ndarray, w: np.ndarray | None, eps: float, index: bool
) -> list[Any]:
    """Exact per-item losses (mpmath, 60 digits) of float64 logits: with class indices
    ``w_t (1 - eps) (-log p_t) + eps / k sum_j w_j (-log p_j)``, with probabilities
    ``sum_j w_j q_j (-log p_j)``, ``q = (1 - eps) p + eps / k`` (zero mass adds 0)."""
    import mpmath

    ref = mp_reference_rows(x, range(x.shape[0]))
    C = x.shape[1]
    ws = [1.0] * C if w is None else [float(v) for v in w]
    items = []
    with mpmath.workdps(ref.dps):
        e = mpmath.mpf(eps)
        for i, ls in enumerate(ref.log_softmax):
            if index:
                t = int(target[i])
                terms = [mpmath.mpf(wj) * -lj for wj, lj in zip(ws, ls, strict=True) if wj != 0]
                item = ws[t] * (1 - e) * -ls[t] + e / C * mpmath.fsum(terms)
            else:
                qs = [(1 - e) * mpmath.mpf(float(v)) + e / C for v in target[i]]
                pairs = zip(ws, qs, ls, strict=True)
                item = mpmath.fsum(mpmath.mpf(wj) * q * -lj for wj, q, lj in pairs if wj * q != 0)
            items.append(item)
    return items


@pytest.mark.parametrize(("N", "V"), [(12, 7), (6, 300)])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("eps", [0.1, 0.25])
def test_float64_smoothed_items_are_correctly_rounded(
    N: int, V: int, weighted: bool, eps: float
) -> None:
    """Float64 smoothed index-target items are formed in double-word and rounded
    once: within 0.5 ulp (plus a hair) of the exact value, not the 1.3-2.3 ulp of a
    float64 sum of rounded products. Zero class weights (one at a -inf logit) add 0."""
    rng = np.random.default_rng(V + N)
    x = rng.standard_normal((N, V)) * np.array([1.0, 5.0, 30.0])[np.arange(N) % 3, None]
    t = rng.integers(0, V, N)
    w = rng.random(V) * 2 + 0.1 if weighted else None
    if w is not None:
        w[1] = 0.0
        x[0, 1] = -np.inf
        t[0] = 2
    loss = sk.cross_entropy(x, t, weight=w, label_smoothing=eps, reduction="none")
    assert loss.dtype == np.float64
    assert mp_ulp_discrepancy(loss, _mp_items(x, t, w, eps, True), np.float64) <= 0.501


@pytest.mark.parametrize(("N", "V"), [(12, 7), (6, 300)])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_float64_probability_target_items_are_correctly_rounded(
    N: int, V: int, weighted: bool, eps: float
) -> None:
    """Float64 probability-target items (``sum_j w_j q_j (-log p_j)``) in double-word,
    rounded once; a class without target mass adds exactly 0, even at a -inf logit."""
    rng = np.random.default_rng(V * N)
    x = rng.standard_normal((N, V)) * np.array([1.0, 5.0, 30.0])[np.arange(N) % 3, None]
    q = rng.dirichlet(np.full(V, 0.5), N)
    q[rng.random((N, V)) < 0.3] = 0.0
    q[:, 0] = 0.0
    q[:, 1] += 1e-3  # no row without mass
    q /= q.sum(axis=1, keepdims=True)
    if eps == 0.0:
        x[0, 0] = -np.inf  # zero mass at a -inf logit: adds 0
    w = rng.random(V) * 2 + 0.1 if weighted else None
    loss = sk.cross_entropy(x, q, weight=w, label_smoothing=eps, reduction="none")
    assert loss.dtype == np.float64 and np.isfinite(loss).all()
    assert mp_ulp_discrepancy(loss, _mp_items(x, q, w, eps, False), np.float64) <= 0.501


def _mp_grad(
    x: np.ndarray, target: np.ndarray, w: np.ndarray | None, eps: float, z: float, index: bool
) -> list[list[Any]]:
    """Exact gradients (mpmath, 60 digits) of the summed items of float64 logits: with
    class indices ``w_t [(1 - eps)(p_j - [j = t]) + 2 z lse p_j] + eps / k (W p_j - w_j)``,
    with probabilities ``S p_j - w_j q_j + 2 z lse p_j`` (``S = sum_j w_j q_j``)."""
    import mpmath

    ref = mp_reference_rows(x, range(x.shape[0]))
    C = x.shape[1]
    ws = [mpmath.mpf(1)] * C if w is None else [mpmath.mpf(float(v)) for v in w]
    rows = []
    with mpmath.workdps(ref.dps):
        e, zz, W = mpmath.mpf(eps), mpmath.mpf(z), mpmath.fsum(ws)
        for i, (p, lse) in enumerate(zip(ref.softmax, ref.logsumexp, strict=True)):
            if index:
                t = int(target[i])
                rows.append([ws[t] * ((1 - e) * (p[j] - (j == t)) + 2 * zz * lse * p[j])
                             + e / C * (W * p[j] - ws[j]) for j in range(C)])  # fmt: skip
            else:
                wq = [ws[j] * ((1 - e) * mpmath.mpf(float(target[i, j])) + e / C) for j in range(C)]
                S = mpmath.fsum(wq)
                rows.append([(S + 2 * zz * lse) * p[j] - wq[j] for j in range(C)])
    return rows


@pytest.mark.parametrize(("N", "V"), [(12, 7), (6, 300)])
@pytest.mark.parametrize(
    ("index", "eps", "z", "weighted", "reduction"),
    [
        (True, 0.1, 0.0, False, "sum"),
        (True, 0.25, 0.0, True, "sum"),
        (True, 0.1, 1e-2, True, "mean"),
        (False, 0.0, 0.0, False, "sum"),
        (False, 0.1, 1e-3, True, "sum"),
        (False, 0.0, 0.0, True, "mean"),
    ],
)
def test_float64_gradients_are_correctly_rounded(
    N: int, V: int, index: bool, eps: float, z: float, weighted: bool, reduction: str
) -> None:
    """Float64 gradients of smoothed / z-loss index-target and probability-target CE are
    formed in double-word (``(A - B_j) p_j - B_j (1 - p_j)``, the 1 / den of "mean"
    folded in) and rounded once: within 0.5 ulp (plus a hair) of the exact derivative
    wherever that is normal, not the tens to thousands of ulp of ``A p_j - B_j`` in
    float64. Zero class weights included."""
    import mpmath

    rng = np.random.default_rng(N * V + int(index))
    x = rng.standard_normal((N, V)) * np.array([1.0, 5.0, 30.0])[np.arange(N) % 3, None]
    w = rng.random(V) * 2 + 0.1 if weighted else None
    if w is not None:
        w[rng.random(V) < 0.3] = 0.0
    target = rng.integers(0, V, N) if index else rng.dirichlet(np.full(V, 0.5), N)
    _, g = sk.cross_entropy(x, target, weight=w, label_smoothing=eps, z_loss=z,
                            reduction=reduction, return_grad=True)  # fmt: skip
    assert g.dtype == np.float64
    exact = _mp_grad(x, target, w, eps, z, index)
    if reduction == "mean":  # the divisor as formed: the summed target weights, or N
        den = float(np.sum(w[target])) if index and w is not None else float(N)
        with mpmath.workdps(60):
            exact = [[v / den for v in row] for row in exact]
    flat = [v for row in exact for v in row]
    normal = [abs(float(v)) >= np.finfo(np.float64).tiny for v in flat]
    got = g.reshape(-1)[np.array(normal)]
    assert mp_ulp_discrepancy(got, [v for v, n in zip(flat, normal, strict=True) if n],
                              np.float64) <= 0.501  # fmt: skip
