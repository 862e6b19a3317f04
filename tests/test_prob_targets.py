"""Cross-entropy with probability targets on float32 NumPy logits: the C core's loss path
(``softmaxkit._dispatch._prob_cross_entropy``) against exact values, the array-agnostic
engine it stands in for, and the torch layer that shares it."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import softmaxkit as sk
from softmaxkit import _dispatch
from tests._native_helpers import assert_ulp_close, native_isas, oracle_only, ulp_error
from tests._reference import mp_reference_rows, mp_ulp_discrepancy
from tests.test_smoothing import _mp_grad, _mp_items

pytestmark = pytest.mark.skipif(_dispatch._ckernels is None, reason="the C core is not built")


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each call of the C path gave a result (``True``) or declined (``False``)."""
    seen: list[bool] = []
    orig = _dispatch._prob_cross_entropy
    quick = _dispatch._quick_prob_ce

    def spy(*a: Any, **k: Any) -> Any:
        got = orig(*a, **k)
        seen.append(got is not None)
        return got

    def quick_spy(*a: Any, **k: Any) -> Any:
        got = quick(*a, **k)
        if got is not None:  # else the general path follows, through the other spy
            seen.append(True)
        return got

    monkeypatch.setattr(_dispatch, "_prob_cross_entropy", spy)
    monkeypatch.setattr(_dispatch, "_quick_prob_ce", quick_spy)
    return seen


def _torch() -> Any:
    """torch, for the tests of the torch layer. The sanitizer run (tools/run_sanitized.py)
    imports no torch, whose libraries are not instrumented; those tests run in the
    ordinary suite."""
    if os.environ.get("SOFTMAXKIT_SANITIZED"):
        pytest.skip(
            "the sanitizer run imports no torch (its libraries are not instrumented); "
            "this test runs in the ordinary suite"
        )
    return pytest.importorskip("torch")


def _targets(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    q = rng.dirichlet(np.full(shape[-1], 0.5), shape[:-1]).astype(np.float32)
    q[rng.random(shape) < 0.3] = 0.0  # classes without target mass
    return q


def _check_grad(g: np.ndarray, exact: list[list[Any]], bound: float = 0.501) -> None:
    """Every gradient element within ``bound`` float32 ulp of the exact value (where that
    is a normal float32)."""
    flat = [v for row in exact for v in row]
    normal = np.array([abs(float(v)) >= np.finfo(np.float32).tiny for v in flat])
    got = g.reshape(-1)[normal]
    assert mp_ulp_discrepancy(got, [v for v, ok in zip(flat, normal, strict=True) if ok],
                              np.float32) <= bound  # fmt: skip


def _mp_z_items(x: np.ndarray, q: np.ndarray, w: Any, eps: float, z: float) -> list[Any]:
    import mpmath

    items = _mp_items(x.astype(np.float64), q, w, eps, False)
    if not z:
        return items
    ref = mp_reference_rows(x.astype(np.float64), range(x.shape[0]))
    with mpmath.workdps(ref.dps):
        return [it + z * lse * lse for it, lse in zip(items, ref.logsumexp, strict=True)]


@pytest.mark.parametrize(("N", "V"), [(12, 7), (6, 300), (4, 1000)])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(("eps", "z"), [(0.0, 0.0), (0.1, 0.0), (0.0, 1e-3), (0.2, 1e-2)])
def test_float32_items_are_correctly_rounded(
    N: int, V: int, weighted: bool, eps: float, z: float, taken: list[bool]
) -> None:
    """Each item ``sum_j u_j (L + M - x_j)`` in float64 from non-negative terms, rounded
    once: within 0.5 ulp (plus a hair) of the exact loss, at logit scales 1, 5 and 30,
    with a dominant logit whose loss is tiny, class weights, smoothing and z-loss."""
    for scale in (1.0, 5.0, 30.0):
        rng = np.random.default_rng(N * V + int(weighted) + int(scale))
        x = (rng.standard_normal((N, V)) * scale).astype(np.float32)
        q = _targets(rng, (N, V))
        x[0, 0] = 60.0  # dominant, and all its target mass: the loss is about 1e-26
        q[0] = 0.0
        q[0, 0] = 1.0
        w = rng.random(V) * 2 + 0.1 if weighted else None
        taken.clear()
        loss = sk.cross_entropy(x, q, weight=w, label_smoothing=eps, z_loss=z, reduction="none")
        assert taken == [True] and loss.dtype == np.float32
        exact = _mp_z_items(x, q, w, eps, z)
        assert mp_ulp_discrepancy(loss, exact, np.float32) <= 0.501, scale
        _, g = sk.cross_entropy(x, q, weight=w, label_smoothing=eps, z_loss=z,
                                reduction="sum", return_grad=True)  # fmt: skip
        assert taken[-1] is True and g.dtype == np.float32
        _check_grad(g, _mp_grad(x.astype(np.float64), q, w, eps, z, False))
        if scale == 1.0 and not (eps or z or weighted):
            assert 0 < loss[0] < 1e-20  # kept, where log_softmax would round it to 0


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reductions_layouts_and_the_engine_it_stands_in_for(
    reduction: str, taken: list[bool]
) -> None:
    """A class axis that is not last, more than two dimensions, rows of several blocks
    (the C core's 32768 classes): the same items as the array-agnostic engine (forced
    by a ``where`` that keeps everything) to within an ulp, reductions included; the
    inputs are left as they were."""
    rng = np.random.default_rng(7)
    cases = [
        ((3, 11, 5), 1),  # (N, C, d1), classes on axis 1 as torch lays them out
        ((2, 4, 9), -1),
        ((2, 70000), 1),  # three blocks
    ]
    for shape, axis in cases:
        x = (rng.standard_normal(shape) * 4).astype(np.float32)
        qs = np.moveaxis(_targets(rng, np.moveaxis(x, axis, -1).shape), -1, axis)
        qs = np.ascontiguousarray(qs)
        w = rng.random(shape[axis]) + 0.5
        before = (x.copy(), qs.copy())
        for kw in ({}, {"weight": w, "label_smoothing": 0.05}):
            taken.clear()
            got = sk.cross_entropy(x, qs, axis=axis, reduction=reduction, **kw)
            assert taken == [True]
            ref = sk.cross_entropy(
                x, qs, axis=axis, reduction=reduction, where=np.ones(shape, bool), **kw
            )
            assert taken[-1] is False  # the where mask declines the C path
            assert got.dtype == np.float32 and got.shape == ref.shape
            assert ulp_error(got, ref.astype(np.float64), np.float32).max() <= 1.0, (shape, kw)
        np.testing.assert_array_equal(x, before[0])
        np.testing.assert_array_equal(qs, before[1])


def test_special_logits(taken: list[bool]) -> None:
    """A -inf logit of a class without target mass adds 0 on the C path (the smoothing
    pass skips weights of 0); target mass on a -inf logit (an infinite item), +inf or
    NaN: the C path declines and the array-agnostic engine answers (inf, NaN)."""
    q = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]], np.float32)
    x = np.array([[1.0, 2.0, -np.inf], [0.0, 0.0, 0.0]], np.float32)
    loss = sk.cross_entropy(x, q, reduction="none")
    assert taken == [True]
    np.testing.assert_allclose(loss, [np.log(np.e + np.e**2) - 1.5, np.log(3.0)], rtol=1e-7)
    for bad, want in (([1.0, -np.inf, 0.0], np.inf), ([1.0, np.inf, 0.0], np.inf),
                      ([1.0, np.nan, 0.0], np.nan)):  # fmt: skip
        taken.clear()
        got = sk.cross_entropy(np.array([bad], np.float32), q[:1], reduction="none")[0]
        assert taken == [False]
        assert got == want or (np.isnan(want) and np.isnan(got)), (bad, got)


@pytest.fixture
def mended(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """Each call of the C core's ``prob_ce`` with a gradient: its rows' ``fixed`` flags
    (0 left as float64 gave them, 1 mended in double-word, 2 with the accurate
    exponential)."""
    ck = _dispatch._ckernels
    seen: list[np.ndarray] = []
    real = ck.prob_ce

    def spy(*a: Any) -> Any:
        args = list(a)
        if args[13] is not None:
            args[14] = np.full(args[1], 7, np.uint8)
            seen.append(args[14])
        return real(*args)

    monkeypatch.setattr(ck, "prob_ce", spy)
    return seen


@pytest.mark.parametrize("V", [10, 300, 2000])
def test_gradients_of_fitted_targets(V: int, taken: list[bool], mended: list[Any]) -> None:
    """Targets that the logits nearly fit (the softmax of logits 0.05 away, as in
    distillation): ``(sum u) p_j`` and ``u_j`` cancel. Where float64 could no longer hold
    0.5 ulp the elements are formed again in double-word in the core; every element
    stays within 0.5 ulp (plus a hair) of the exact derivative, with and without
    smoothing and z-loss."""
    rng = np.random.default_rng(V)
    N = 6
    x = (rng.standard_normal((N, V)) * 2).astype(np.float32)
    q = sk.softmax(x + (0.05 * rng.standard_normal((N, V))).astype(np.float32))
    total = 0
    for eps, z, red in ((0.0, 0.0, "mean"), (0.1, 1e-3, "sum")):
        taken.clear()
        mended.clear()
        _, g = sk.cross_entropy(x, q, label_smoothing=eps, z_loss=z, reduction=red,
                                return_grad=True)  # fmt: skip
        assert taken == [True] and len(mended) == 1 and set(mended[0]) <= {0, 1, 2}
        exact = _mp_grad(x.astype(np.float64), q, None, eps, z, False)
        if red == "mean":
            exact = [[v / N for v in row] for row in exact]
        _check_grad(g, exact)
        redone = int(np.count_nonzero(mended[0]))
        assert redone < N or V >= 2000  # most rows stay as float64 formed them
        total += redone
    if V >= 2000:  # long rows hold some element that cancels: the DD rows are exercised
        assert total > 0


def test_gradients_that_cancel_to_a_few_ulp_of_their_terms(mended: list[Any]) -> None:
    """Targets fitted to float32's last bits (``x = log q`` rounded): ``(sum u) p_j - u_j``
    falls to a few 2^-24 of ``u_j`` and, for some elements, below 2^-28 of it, where the
    core mends the row with the accurate exponential (``fixed`` 2). Every element stays
    within 0.5 ulp of the exact derivative, with class weights, smoothing and z-loss."""
    rng = np.random.default_rng(21)
    N, V = 4, 600
    q = rng.dirichlet(np.full(V, 2.0), N).astype(np.float32)
    x = np.log(q.astype(np.float64)).astype(np.float32)
    seen = set()
    for w, eps, z in ((None, 0.0, 0.0), (rng.random(V) + 0.5, 0.0, 0.0), (None, 1e-6, 1e-9)):
        mended.clear()
        _, g = sk.cross_entropy(x, q, weight=w, label_smoothing=eps, z_loss=z,
                                reduction="sum", return_grad=True)  # fmt: skip
        seen |= {int(v) for v in mended[0]}
        _check_grad(g, _mp_grad(x.astype(np.float64), q, w, eps, z, False))
    assert 2 in seen


def test_negative_weights_keep_the_double_word_gradient(taken: list[bool]) -> None:
    """With a negative class weight, ``sum_j u_j`` may itself cancel: a gradient is then
    the array-agnostic engine's; the loss alone stays on the C path."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    q = _targets(rng, (5, 8))
    w = rng.random(8) - 0.3
    from softmaxkit import _validation

    with _validation.signed_weights():
        sk.cross_entropy(x, q, weight=w)
        _, g = sk.cross_entropy(x, q, weight=w, return_grad=True)
    assert taken == [True, False] and np.isfinite(g).all()


def test_per_row_weights_of_the_smoothing_passes() -> None:
    """``smooth(..., w_rows=True)``: each row's own weights give, bit for bit, what a
    call for that row alone with those weights shared gives (kinds 0, 1 and 4)."""
    ck = _dispatch._ckernels
    rng = np.random.default_rng(3)
    rows, n = 5, 40
    x = (rng.standard_normal((rows, n)) * 3).astype(np.float32)
    w = rng.random((rows, n))
    m = x.max(axis=1).astype(np.float64)
    f, k = rng.random(rows), rng.random(rows)
    gaps = np.empty((rows, 1))
    ck.smooth(0, x, rows, n, w, m, None, None, gaps, None, None, 1, True)
    g1 = np.empty((rows, n), np.float32)
    ck.smooth(1, x, rows, n, w, m, f, k, None, None, g1, 2, True)
    g4, gaps4 = np.empty((rows, n), np.float32), np.empty(rows)
    ck.smooth(4, x, rows, n, w, m, f, k, gaps4, None, g4, 1, True)
    for r in range(rows):
        one = np.empty((1, 1))
        ck.smooth(0, x[r : r + 1], 1, n, w[r], m[r : r + 1], None, None, one, None, None, 1)
        assert one[0, 0] == gaps[r, 0] == gaps4[r]
        o1 = np.empty((1, n), np.float32)
        ck.smooth(1, x[r : r + 1], 1, n, w[r], m[r : r + 1], f[r : r + 1], k[r : r + 1],
                  None, None, o1, 1)  # fmt: skip
        np.testing.assert_array_equal(o1[0], g1[r])
        o4 = np.empty((1, n), np.float32)
        ck.smooth(4, x[r : r + 1], 1, n, w[r], m[r : r + 1], f[r : r + 1], k[r : r + 1],
                  None, None, o4, 1)  # fmt: skip
        np.testing.assert_array_equal(o4[0], g4[r])
    with pytest.raises(ValueError, match="w"):  # rows x n weights, or it says so
        ck.smooth(0, x, rows, n, w[0], m, None, None, gaps, None, None, 1, True)


def test_the_torch_layer_shares_the_path() -> None:
    """``softmaxkit.torch.cross_entropy`` with probability targets: the NumPy core's
    bits, loss and gradient (through autograd)."""
    torch = _torch()
    import softmaxkit.torch as skt

    rng = np.random.default_rng(11)
    x = (rng.standard_normal((16, 50)) * 3).astype(np.float32)
    q = _targets(rng, (16, 50))
    w = rng.random(50) + 0.5
    for kw in ({}, {"label_smoothing": 0.1}):
        for red in ("none", "mean", "sum"):
            want = sk.cross_entropy(x, q, reduction=red, weight=w, **kw)
            xt = torch.from_numpy(x)
            got = skt.cross_entropy(xt, torch.from_numpy(q), reduction=red,
                                    weight=torch.from_numpy(w).float(), **kw)  # fmt: skip
            # float32 weights as torch takes them: the same values, widened
            want32 = sk.cross_entropy(x, q, reduction=red, weight=w.astype(np.float32), **kw)
            np.testing.assert_array_equal(got.numpy(), want32)
            assert ulp_error(got.numpy(), want.astype(np.float64), np.float32).max() <= 1.0
            if red == "none":
                continue  # its backward scales each row by the incoming gradient
            xg = torch.from_numpy(x.copy()).requires_grad_()
            lg = skt.cross_entropy(xg, torch.from_numpy(q), reduction=red, **kw)
            lg.backward()
            ref_l, ref_g = sk.cross_entropy(x, q, reduction=red, return_grad=True, **kw)
            np.testing.assert_array_equal(lg.detach().numpy(), ref_l)
            np.testing.assert_array_equal(xg.grad.numpy(), ref_g)


def test_one_hot_rows_are_found_in_one_pass() -> None:
    """``one_hot``: exactly one nonzero entry per row and it is 1 (either zero counts as
    0, a subnormal or a second 1 does not), at every offset of the 16-entry groups."""
    ck = _dispatch._ckernels
    for dt, code in ((np.float32, 0), (np.float64, 1)):
        for n in (1, 15, 16, 17, 40, 1000):
            rng = np.random.default_rng(n)
            t = rng.integers(0, n, 9)
            a = np.eye(n, dtype=dt)[t]
            a[0, (t[0] + 1) % n] = -0.0 if n > 1 else a[0, 0]
            idx = np.full(9, -7, np.int64)
            assert ck.one_hot(a, 9, n, code, idx) and (idx == t).all()
            for bad in (np.finfo(dt).smallest_subnormal, 1.0, 0.5, -1.0, np.nan, np.inf):
                b = a.copy()
                j = (t[4] + 3) % n
                if j == t[4]:
                    b[4, j] = 0.5 if bad == 1.0 else bad  # n == 1: the 1 itself changes
                else:
                    b[4, j] = bad
                assert not ck.one_hot(b, 9, n, code, idx), (n, bad)
        assert not ck.one_hot(np.zeros((2, 3), dt), 2, 3, code, np.empty(2, np.int64))


@pytest.mark.parametrize(("eps", "z"), [(0.0, 0.0), (0.1, 1e-3)])
def test_one_hot_targets_take_the_index_kernels(eps: float, z: float) -> None:
    """A one-hot probability target is a class index written out: without class weights
    its loss and gradient are the index kernels' (bit for bit, the gradient at 0.5 ulp
    on the C core); with weights (whose means differ) it stays a probability target."""
    rng = np.random.default_rng(9)
    for shape, axis in (((64, 100), -1), ((6, 10, 4), 1), ((3, 40000), -1)):
        x = (rng.standard_normal(shape) * 3).astype(np.float32)
        C = shape[axis]
        t = rng.integers(0, C, tuple(s for i, s in enumerate(shape) if i != axis % len(shape)))
        onehot = np.moveaxis(np.eye(C, dtype=np.float32)[t], -1, axis)
        for red in ("none", "mean", "sum"):
            kw = {"axis": axis, "reduction": red, "label_smoothing": eps, "z_loss": z}
            lp, gp = sk.cross_entropy(x, onehot, return_grad=True, **kw)
            li, gi = sk.cross_entropy(x, t, return_grad=True, **kw)
            np.testing.assert_array_equal(lp, li)
            np.testing.assert_array_equal(gp, gi)
        w = rng.random(C) + 0.5
        lw = sk.cross_entropy(x, onehot, axis=axis, weight=w)
        items = sk.cross_entropy(x, t, axis=axis, weight=w, reduction="none")
        np.testing.assert_allclose(lw, items.mean(), rtol=2e-6)  # the mean over items


def test_one_hot_targets_in_the_torch_layer() -> None:
    """The same on torch tensors, with the gradient through autograd; class weights keep
    torch's probability-target mean (over the items), which differs from the index one."""
    torch = _torch()
    import torch.nn.functional as F

    import softmaxkit.torch as skt

    rng = np.random.default_rng(12)
    x = torch.from_numpy((rng.standard_normal((32, 10)) * 3).astype(np.float32))
    t = torch.from_numpy(rng.integers(0, 10, 32))
    onehot = F.one_hot(t, 10).float()
    for kw in ({}, {"label_smoothing": 0.1}):
        xa = x.clone().requires_grad_()
        xb = x.clone().requires_grad_()
        la = skt.cross_entropy(xa, onehot, **kw)
        lb = skt.cross_entropy(xb, t, **kw)
        la.backward()
        lb.backward()
        assert torch.equal(la, lb) and torch.equal(xa.grad, xb.grad)
    w = torch.rand(10) + 0.5
    got = skt.cross_entropy(x, onehot, weight=w)
    torch.testing.assert_close(got, F.cross_entropy(x, onehot, weight=w), rtol=2e-6, atol=0)
    assert not torch.allclose(got, F.cross_entropy(x, t, weight=w))  # the other mean


def test_dominant_entry_gradient_on_every_route(taken: list[bool]) -> None:
    """A logit 60 above the rest holding all the target mass: its gradient ``-(1 - p)``
    is about -4.4e-26, formed from the row's rest, on the C path and on the
    array-agnostic engine (a ``where`` mask that keeps everything) alike; float64's
    ``S p - u`` gave 0 on both."""
    rng = np.random.default_rng(85)
    x = rng.standard_normal((3, 7)).astype(np.float32)
    x[0, 0] = 60.0
    q = _targets(rng, (3, 7))
    q[0] = 0.0
    q[0, 0] = 1.0
    exact = _mp_grad(x.astype(np.float64), q, None, 0.0, 0.0, False)
    for kw in ({}, {"where": np.ones(x.shape, bool)}):
        _, g = sk.cross_entropy(x, q, reduction="sum", return_grad=True, **kw)
        assert -5e-26 < g[0, 0] < -4e-26
        _check_grad(g, exact)
    assert taken == [True, False]


def test_the_quick_path_gives_the_general_paths_bits(taken: list[bool]) -> None:
    """``quick_cross_entropy`` on probability targets (C-contiguous float32 logits, the
    classes last): the bits of the general path, which a Fortran-ordered copy of the
    same logits takes; one-hot rows the index kernels' bits; what it declines (class
    weights, a bad target or option) goes to the general path, which names the error."""
    from softmaxkit import SoftmaxkitValueError

    rng = np.random.default_rng(31)
    x = (rng.standard_normal((2, 16, 12)) * 3).astype(np.float32)
    q = _targets(rng, x.shape)
    xf = np.asfortranarray(x)
    for qq in (q, q.astype(np.float64)):
        for kw in ({}, {"label_smoothing": 0.1, "z_loss": 1e-3}):
            for red in ("none", "mean", "sum"):
                for grad in (False, True):
                    got = sk.cross_entropy(x, qq, reduction=red, return_grad=grad, **kw)
                    want = sk.cross_entropy(xf, qq, reduction=red, return_grad=grad, **kw)
                    for a, b in zip(got if grad else (got,), want if grad else (want,),
                                    strict=True):  # fmt: skip
                        assert type(a) is type(b) and a.dtype == b.dtype
                        np.testing.assert_array_equal(a, b)
    onehot = np.eye(12, dtype=np.float32)[rng.integers(0, 12, (2, 16))]
    lp, gp = sk.cross_entropy(x, onehot, return_grad=True)
    li, gi = sk.cross_entropy(x, onehot.argmax(-1), return_grad=True)
    assert lp == li and np.array_equal(gp, gi)
    bad = q.copy()
    bad[1, 3, 4] = -0.5
    with pytest.raises(SoftmaxkitValueError, match="negative probability"):
        sk.cross_entropy(x, bad)
    with pytest.raises(SoftmaxkitValueError, match="label_smoothing"):
        sk.cross_entropy(x, q, label_smoothing=1.5)
    assert taken.count(True) == len(taken) and len(taken) >= 24


def test_the_torch_layers_plain_route_gives_the_general_bits() -> None:
    """``softmaxkit.torch.cross_entropy`` with contiguous float32 ``(N, C)`` logits and
    probability targets takes a short route (``_plain_prob_ce``): the general route's
    bits (which a non-contiguous view of the same logits takes), loss and gradient,
    with smoothing and z-loss; a negative target is named on both."""
    torch = _torch()
    import softmaxkit.torch as skt
    from softmaxkit import SoftmaxkitValueError
    from softmaxkit.torch import _functional

    rng = np.random.default_rng(41)
    x = torch.from_numpy((rng.standard_normal((24, 13)) * 3).astype(np.float32))
    q = torch.from_numpy(_targets(rng, (24, 13)))
    xs = x.t().contiguous().t()  # the same values, not contiguous: the general route
    assert _functional._plain_prob_ce(xs, q, None, -100, "mean", 0.0, 0.0) is None
    for kw in ({}, {"label_smoothing": 0.1, "z_loss": 1e-3}):
        for red in ("none", "mean", "sum"):
            assert _functional._plain_prob_ce(x, q, None, -100, red, 0.0, 0.0) is not None
            a = x.clone().requires_grad_()
            b = xs.clone().t().contiguous().t().requires_grad_()
            la = skt.cross_entropy(a, q, reduction=red, **kw)
            lb = skt.cross_entropy(b, q, reduction=red, **kw)
            assert torch.equal(la, lb)
            la.sum().backward()
            lb.sum().backward()
            assert torch.equal(a.grad, b.grad)
            assert torch.equal(skt.cross_entropy(x, q, reduction=red, **kw), lb.detach())
    bad = q.clone()
    bad[3, 5] = -0.25
    for xx in (x, xs):
        with pytest.raises(SoftmaxkitValueError, match="non-negative probabilities"):
            skt.cross_entropy(xx, bad)


def test_the_loss_is_the_same_with_a_gradient_and_without() -> None:
    """Both take ``L`` from the row state and the gap from the same pass: one loss, bit
    for bit, whether or not a gradient is asked for (items and reductions, a dominant
    row among them, with smoothing, z-loss and class weights)."""
    rng = np.random.default_rng(51)
    x = (rng.standard_normal((64, 300)) * 4).astype(np.float32)
    q = _targets(rng, x.shape)
    x[0, 0] = 60.0
    q[0] = 0.0
    q[0, 0] = 1.0
    w = rng.random(300) + 0.5
    for kw in ({}, {"label_smoothing": 0.1, "z_loss": 1e-3}, {"weight": w}):
        for red in ("none", "mean", "sum"):
            alone = sk.cross_entropy(x, q, reduction=red, **kw)
            with_grad, _ = sk.cross_entropy(x, q, reduction=red, return_grad=True, **kw)
            np.testing.assert_array_equal(alone, with_grad)


def test_long_rows_and_minus_infinity_with_a_gradient(taken: list[bool]) -> None:
    """Rows of three blocks (70000 classes: the exponentials are formed again for the
    output instead of kept) and a -inf logit without target mass: loss and gradient as
    the array-agnostic engine gives them (a ``where`` that keeps everything), the -inf
    logit's gradient 0."""
    rng = np.random.default_rng(61)
    x = (rng.standard_normal((2, 70000)) * 3).astype(np.float32)
    q = _targets(rng, x.shape)
    x[1, 5] = -np.inf
    q[1, 5] = 0.0
    for kw in ({}, {"label_smoothing": 0.0, "z_loss": 1e-3}):
        taken.clear()
        loss, g = sk.cross_entropy(x, q, reduction="sum", return_grad=True, **kw)
        ref_l, ref_g = sk.cross_entropy(x, q, reduction="sum", return_grad=True,
                                        where=np.ones(x.shape, bool), **kw)  # fmt: skip
        assert taken == [True, False]
        assert ulp_error(np.asarray(loss), np.asarray(ref_l, np.float64), np.float32).max() <= 1
        assert ulp_error(g, ref_g.astype(np.float64), np.float32).max() <= 1
        assert g[1, 5] == 0.0


# ---- precision="fast": one C call in float32 arithmetic (skit_prob_ce_fast) ----------

FAST_ITEM_BOUND = 3.0  # ulp: the fast mode's bound (tests/test_accuracy.py)
FAST_GRAD_BOUND = 4 * 2.0**-24  # of the gradient's two terms, r (A p_j + u_j)


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """What each call of the C core's ``prob_ce_fast`` answered (0: it took every row)."""
    ck = _dispatch._ckernels
    seen: list[int] = []
    real = ck.prob_ce_fast

    def spy(*a: Any) -> Any:
        got = real(*a)
        seen.append(got)
        return got

    monkeypatch.setattr(ck, "prob_ce_fast", spy)
    return seen


def _grad_terms(x: np.ndarray, q: np.ndarray, w: Any, eps: float, z: float) -> np.ndarray:
    """``|A| p_j + |u_j|`` per element in float64 (``A = sum_j u_j + 2 z lse``, negative
    for a z-loss of a negative lse): the size of the two terms whose difference the
    gradient is."""
    xs = x.astype(np.float64)
    m = xs.max(axis=-1, keepdims=True)
    e = np.exp(xs - m)
    d = e.sum(axis=-1, keepdims=True)
    u = (1 - eps) * q.astype(np.float64) + eps / x.shape[-1]
    if w is not None:
        u = u * np.asarray(w)
    a = u.sum(axis=-1, keepdims=True) + 2 * z * (m + np.log(d))
    return np.asarray(np.abs(a) * e / d + np.abs(u))


@pytest.mark.parametrize(("N", "V"), [(5, 1), (5, 3), (5, 17), (12, 7), (6, 300), (4, 1000)])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(("eps", "z"), [(0.0, 0.0), (0.1, 0.0), (0.2, 1e-2)])
def test_fast_items_and_gradients_within_their_bounds(
    N: int, V: int, weighted: bool, eps: float, z: float, fast_calls: list[int]
) -> None:
    """``precision="fast"``: float32 exponentials, float32 terms and float64 sums in one C
    call per batch. Every item within the fast mode's 3 ulp of the exact loss (the
    maximum's count kept apart from the rest, so a dominant logit's tiny loss keeps its
    digits), and every gradient element within 4 * 2^-24 of its two terms ``r A p_j``
    and ``r u_j`` (where they cancel, only the accurate mode keeps the digits), at logit
    scales 1, 5 and 30, rows of every tail length, weights, smoothing and z-loss."""
    tiny = float(np.finfo(np.float32).tiny)
    for scale in (1.0, 5.0, 30.0):
        rng = np.random.default_rng(N * V + int(weighted) + int(scale))
        x = (rng.standard_normal((N, V)) * scale).astype(np.float32)
        q = _targets(rng, (N, V))
        if V > 1:
            x[0, 0] = 60.0  # dominant with all the target mass: a loss of about 1e-26
            q[0] = 0.0
            q[0, 0] = 1.0
        w = rng.random(V) * 2 + 0.1 if weighted else None
        kw: dict[str, Any] = {"weight": w, "label_smoothing": eps, "z_loss": z}
        fast_calls.clear()
        loss = sk.cross_entropy(x, q, reduction="none", precision="fast", **kw)
        assert fast_calls == [0] and loss.dtype == np.float32
        assert mp_ulp_discrepancy(loss, _mp_z_items(x, q, w, eps, z), np.float32) <= (
            FAST_ITEM_BOUND
        )
        if V > 1 and scale == 1.0 and not (eps or z or weighted):
            assert 0 < loss[0] < 1e-20
        _, g = sk.cross_entropy(x, q, reduction="sum", return_grad=True, precision="fast", **kw)
        assert fast_calls == [0, 0] and g.dtype == np.float32
        exact = np.array(
            [[float(v) for v in row] for row in _mp_grad(x.astype(np.float64), q, w, eps, z, False)]
        )
        err = np.abs(g - exact) - tiny  # below the normal range: absolute
        assert np.all(err <= FAST_GRAD_BOUND * _grad_terms(x, q, w, eps, z)), scale


def test_fast_mode_agrees_across_routes_threads_and_layouts(fast_calls: list[int]) -> None:
    """The quick route (C-contiguous, classes last) and the general one (a Fortran-ordered
    copy; the classes on another axis) give the same bits, which do not depend on the
    thread count; float64 targets too; the inputs are left as they were; a long row
    (70000 classes) is one pass with no block limit."""
    rng = np.random.default_rng(71)
    x = (rng.standard_normal((3, 40, 37)) * 3).astype(np.float32)
    q = _targets(rng, x.shape)
    before = (x.copy(), q.copy())
    for qq in (q, q.astype(np.float64)):
        for red in ("none", "mean", "sum"):
            kw: dict[str, Any] = {"reduction": red, "precision": "fast", "return_grad": True,
                                  "label_smoothing": 0.05, "z_loss": 1e-4}  # fmt: skip
            one = sk.cross_entropy(x, qq, threads=1, **kw)
            two = sk.cross_entropy(x, qq, threads=2, **kw)
            fort = sk.cross_entropy(np.asfortranarray(x), qq, **kw)
            moved = sk.cross_entropy(np.moveaxis(x, -1, 0), np.moveaxis(qq, -1, 0), axis=0, **kw)
            for got in (two, fort, (moved[0], np.moveaxis(moved[1], 0, -1))):
                np.testing.assert_array_equal(got[0], one[0])
                np.testing.assert_array_equal(got[1], one[1])
    np.testing.assert_array_equal(x, before[0])
    np.testing.assert_array_equal(q, before[1])
    assert fast_calls and not any(fast_calls)
    xl = (rng.standard_normal((2, 70000)) * 3).astype(np.float32)
    ql = _targets(rng, xl.shape)
    fast_calls.clear()
    loss, g = sk.cross_entropy(xl, ql, reduction="none", return_grad=True, precision="fast")
    acc, ga = sk.cross_entropy(xl, ql, reduction="none", return_grad=True)
    assert fast_calls == [0]
    assert ulp_error(loss, acc.astype(np.float64), np.float32).max() <= FAST_ITEM_BOUND
    terms = _grad_terms(xl, ql, None, 0.0, 0.0)
    assert np.all(np.abs(g - ga) <= FAST_GRAD_BOUND * terms + float(np.finfo(np.float32).tiny))


def test_fast_mode_special_rows_and_bad_targets(fast_calls: list[int], taken: list[bool]) -> None:
    """A -inf logit without target mass adds nothing and gets a gradient of 0 in the fast
    call; a row it does not take (+inf, NaN, target mass on a -inf logit, a maximum of
    2^24 or more) is answered by the array-agnostic engine, as in accurate mode; a
    negative target is named, float64 ones too small for float32 included."""
    from softmaxkit import SoftmaxkitValueError

    q = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]], np.float32)
    x = np.array([[1.0, 2.0, -np.inf], [0.0, 0.0, 0.0]], np.float32)
    loss, g = sk.cross_entropy(x, q, reduction="none", return_grad=True, precision="fast")
    assert fast_calls == [0] and taken == [True]
    np.testing.assert_allclose(loss, [np.log(np.e + np.e**2) - 1.5, np.log(3.0)], rtol=3e-7)
    assert g[0, 2] == 0.0 and np.isfinite(g).all()
    cases = (([1.0, -np.inf, 0.0], np.inf), ([1.0, np.inf, 0.0], np.inf),
             ([1.0, np.nan, 0.0], np.nan), ([3e7, 1.0, 0.0], None))  # fmt: skip
    for bad, want in cases:
        xb = np.array([bad], np.float32)
        fast_calls.clear()
        taken.clear()
        got = sk.cross_entropy(xb, q[:1], reduction="none", precision="fast")[0]
        assert fast_calls and fast_calls[-1] & 1 and taken[-1] is False
        if want is None:  # the maximum beyond the fast path: the accurate value
            assert got == sk.cross_entropy(xb, q[:1], reduction="none")[0]
        else:
            assert got == want or (np.isnan(want) and np.isnan(got)), (bad, got)
    neg = q.copy()
    neg[1, 2] = -0.5
    with pytest.raises(SoftmaxkitValueError, match="negative probability"):
        sk.cross_entropy(x, neg, precision="fast")
    tiny_neg = q.astype(np.float64)
    tiny_neg[0, 2] = -1e-50  # -0.0 as a float32
    for grad in (False, True):
        with pytest.raises(SoftmaxkitValueError, match="negative probability"):
            sk.cross_entropy(x, tiny_neg, precision="fast", return_grad=grad)


@st.composite
def _prob_cases(draw: st.DrawFn) -> dict[str, Any]:
    rows = draw(st.integers(1, 6))
    n = draw(st.sampled_from([1, 2, 7, 8, 9, 16, 17, 31, 100, 1500]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "wide", "ties", "offset", "dominant"]))
    x = rng.standard_normal((rows, n)) * {"wide": 30.0, "ties": 2.0}.get(kind, 3.0)
    if kind == "ties":
        x = np.round(x)
    elif kind == "offset":
        x = x + 1000.0
    elif kind == "dominant":
        x[:, 0] = 60.0
    q = rng.dirichlet(np.full(n, 0.5), rows)
    q[rng.random((rows, n)) < draw(st.sampled_from([0.0, 0.3, 0.9]))] = 0.0
    special = draw(st.sampled_from([None, "neginf", "posinf", "nan"]))
    if special:
        r, c = int(rng.integers(rows)), int(rng.integers(n))
        x[r, c] = {"neginf": -np.inf, "posinf": np.inf, "nan": np.nan}[special]
        if special == "neginf" and draw(st.booleans()):
            q[r, c] = 0.0  # a masked class: the fast call takes the row
    return {
        "x": x.astype(np.float32),
        "q": q.astype(draw(st.sampled_from([np.float32, np.float64]))),
        "weight": rng.random(n) + 0.1 if draw(st.booleans()) else None,
        "label_smoothing": draw(st.sampled_from([0.0, 0.1])),
        "z_loss": draw(st.sampled_from([0.0, 1e-3])),
        "reduction": draw(st.sampled_from(["none", "mean", "sum"])),
    }


@pytest.mark.parametrize("isa", native_isas())
@pytest.mark.parametrize("precision", ["accurate", "fast"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_prob_cases(), return_grad=st.booleans())
def test_probability_targets_against_the_oracle(
    isa: str, precision: str, case: dict[str, Any], return_grad: bool
) -> None:
    """Generated rows (tails of every length, ties, an offset of 1000, a dominant logit,
    one -inf, +inf or NaN logit, targets with and without zeros, float32/float64, class
    weights, smoothing, z-loss, every reduction) on each instruction set this machine
    runs, against the array-agnostic engine (the C core switched off): the same special
    values; the accurate mode within an ulp; the fast mode within its 3 ulp (items, 4
    for a reduction of them) and 4 * 2^-24 of the gradient's two terms."""
    ck = _dispatch._ckernels
    saved = ck.isa()
    x, q = case["x"], case["q"]
    kw = {k: case[k] for k in ("weight", "label_smoothing", "z_loss", "reduction")}
    ck.set_isa(isa)
    try:
        got = sk.cross_entropy(x, q, return_grad=return_grad, precision=precision, **kw)
    finally:
        ck.set_isa(saved)
    with oracle_only():
        ref = sk.cross_entropy(x, q, return_grad=return_grad, precision="accurate", **kw)
    loss_g, loss_r = (got[0], ref[0]) if return_grad else (got, ref)
    bound = 1.0 if precision == "accurate" else FAST_ITEM_BOUND + (kw["reduction"] != "none")
    assert_ulp_close(loss_g, loss_r, bound, "loss")
    if not return_grad:
        return
    g, r = np.asarray(got[1]), np.asarray(ref[1])
    assert g.dtype == r.dtype == np.float32
    assert np.array_equal(np.isnan(g), np.isnan(r))
    fin = np.isfinite(r) & np.isfinite(x)
    rows_ok = np.all(np.isfinite(x), axis=-1, keepdims=True) & fin
    if precision == "accurate":
        assert_ulp_close(g[fin], r[fin], 1.0, "gradient")
        return
    scale = 1.0 / x.shape[0] if kw["reduction"] == "mean" else 1.0
    with np.errstate(all="ignore"):  # the rows left out below hold inf or NaN
        terms = scale * _grad_terms(x, q, kw["weight"], kw["label_smoothing"], kw["z_loss"])
    tiny = float(np.finfo(np.float32).tiny)
    err = np.abs(g.astype(np.float64) - r)
    assert np.all(err[rows_ok] <= FAST_GRAD_BOUND * 1.5 * terms[rows_ok] + tiny)
