"""Label-smoothed cross-entropy on the C core (``softmaxkit.torch._smooth_ce``).

With ``label_smoothing > 0`` a CPU float32/float16/bfloat16 cross-entropy with class
indices runs on the kernel's block statistics plus two float64 passes
(``_ckernels.smooth``) instead of the array-API engine. These tests hold it to the
contract: the loss within the float32 bound of the exact answer (the float64
computation of the same call), the gradient too, half types rounded once, and
the array-API engine's limits (rows with +inf or NaN take that engine).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import softmaxkit.torch as skt  # noqa: E402
from softmaxkit import SoftmaxkitError  # noqa: E402
from softmaxkit.torch import _engine, _smooth_ce  # noqa: E402
from tests._native_helpers import ulp_error  # noqa: E402

pytestmark = pytest.mark.skipif(_engine._ckernels is None, reason="the C core is not built")

B = _smooth_ce.BLOCK
inf = float("inf")


def _data(N, V, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, V, generator=g, dtype=torch.float64) * 3
    t = torch.randint(0, V, (N,), generator=g)
    x[0, 5 % V] = -inf  # a -inf logit in a counted row
    x[1, :] = -inf  # nothing to count
    x[2, t[2]] = -inf  # the target at -inf: loss inf
    t[3] = -100  # ignored
    x[4, t[4]] += 40.0  # dominant target: a loss far below one ulp of 1
    x[5, :] = 0.0  # every class tied
    w = torch.rand(V, generator=g, dtype=torch.float64) + 0.1
    return x.to(dtype), t, w


def _run(x, t, **kw):
    xi = x.detach().clone().requires_grad_()
    loss = skt.cross_entropy(xi, t, **kw)
    # ones: a product with the saved gradient would round a second time
    (g,) = torch.autograd.grad(loss, xi, torch.ones_like(loss))
    return loss.detach(), g


OPTIONS = {
    "mean": {"label_smoothing": 0.1},
    "none_weight": {"label_smoothing": 0.2, "weight": "w", "reduction": "none"},
    "sum_z": {"label_smoothing": 0.1, "z_loss": 1e-3, "reduction": "sum"},
    "negative_weight": {"label_smoothing": 0.3, "weight": "wneg"},
    "ignore_class": {"label_smoothing": 0.1, "ignore_index": 3, "reduction": "none"},
}


def _kw(name, w, dtype):
    """The options of ``name``; weights derived from ``w`` in its own dtype, then cast
    exactly (float32 or half values), so that every run sees the same numbers."""
    kw = dict(OPTIONS[name])
    if kw.get("weight") == "w":
        kw["weight"] = w.to(dtype)
    elif kw.get("weight") == "wneg":
        kw["weight"] = (w - 0.6).to(dtype)
    return kw


def _targets(t, kw):
    ign = kw.get("ignore_index")
    return t if ign is None else torch.where(t == -100, ign, t)


@pytest.fixture
def route(monkeypatch):
    """Records what the kernel route returned (None: it declined) on every call."""
    seen = []
    orig = _smooth_ce.cross_entropy

    def spy(*a, **k):
        r = orig(*a, **k)
        seen.append(r is not None)
        return r

    monkeypatch.setattr(_smooth_ce, "cross_entropy", spy)
    return seen


@pytest.mark.parametrize("opt", sorted(OPTIONS))
@pytest.mark.parametrize(("N", "V"), [(64, 10), (300, 1000), (7, 2 * B + 4321)])
def test_float32_within_the_bound_of_the_exact_answer(route, opt, N, V):
    x, t, w = _data(N, V, seed=V % 97)
    w = w.float()
    kw = _kw(opt, w, torch.float32)
    t = _targets(t, kw)
    loss, g = _run(x.float(), t, **kw)
    assert route == [True]
    kw64 = _kw(opt, w, torch.float64)
    loss64, g64 = _run(x.float().double(), t, **kw64)  # the same inputs, exactly
    assert np.array_equal(np.isfinite(loss.numpy()), np.isfinite(loss64.numpy()))
    assert np.array_equal(np.isnan(g.numpy()), np.isnan(g64.numpy()))
    assert ulp_error(loss.numpy(), loss64.numpy(), np.float32).max() <= 0.505
    assert ulp_error(g.numpy(), g64.numpy(), np.float32).max() <= 0.505


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("opt", ["mean", "none_weight", "sum_z"])
def test_half_types_are_rounded_once(route, half, opt):
    x, t, w = _data(200, 300, seed=3, dtype=half)
    w = w.to(half)
    loss, g = _run(x, t, **_kw(opt, w, half))
    assert route == [True]
    kw64 = _kw(opt, w, torch.float64)
    loss64, g64 = _run(x.double(), t, **kw64)
    assert torch.equal(loss, loss64.to(half))
    assert torch.equal(g, g64.to(half))


def test_class_dimension_not_last(route):
    x, t, w = _data(6 * 5, 40, seed=4)
    x4 = x.reshape(6, 5, 40).permute(0, 2, 1).contiguous()  # (N, C, d)
    t4 = t.reshape(6, 5)
    loss, g = _run(x4, t4, label_smoothing=0.15, weight=w.float(), reduction="none")
    ref_loss, ref_g = _run(x, t, label_smoothing=0.15, weight=w.float(), reduction="none")
    assert route == [True, True]
    assert torch.equal(loss, ref_loss.reshape(6, 5))
    assert torch.equal(g, ref_g.reshape(6, 5, 40).permute(0, 2, 1))


def test_gradient_where_smoothing_cancels_the_softmax():
    """Where ``a p_j`` and ``(eps / V) w_j`` nearly cancel the element is tiny, and
    only float64 exponentials summed without the kernel's float32-grade error keep
    it within 0.5 ulp of the exact value (longdouble reference)."""
    g0 = torch.Generator().manual_seed(0)
    N, V, eps = 8, 70000, 0.1
    x = torch.randn(N, V, generator=g0) * 3
    t = torch.randint(0, V, (N,), generator=g0)
    _, g = _run(x, t, label_smoothing=eps)
    X = x.numpy().astype(np.longdouble)
    P = np.exp(X - X.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    onehot = np.zeros_like(P)
    onehot[np.arange(N), t.numpy()] = 1
    G = ((1 - np.longdouble(eps)) * (P - onehot) + np.longdouble(eps) / V * (P * V - 1)) / N
    spacing = np.spacing(np.abs(G).astype(np.float32)).astype(np.longdouble)
    err = np.abs(g.numpy().astype(np.longdouble) - G) / spacing
    cancels = np.abs(G) < 1e-3 * np.longdouble(eps) / V / N  # a thousand-fold cancellation
    assert bool(cancels.any())
    assert float(err.max()) <= 0.501


@pytest.mark.parametrize("special", ["posinf", "nan"])
def test_rows_with_posinf_or_nan_take_the_array_api_engine(route, special):
    x, t, w = _data(20, 30, seed=5)
    x[7, 3] = inf if special == "posinf" else float("nan")
    loss, g = _run(x.float(), t, label_smoothing=0.1, reduction="none")
    assert route == [False]
    ref_loss, ref_g = _run(x.double(), t, label_smoothing=0.1, reduction="none")
    assert torch.equal(torch.isnan(loss), torch.isnan(ref_loss))
    assert torch.equal(torch.isinf(loss), torch.isinf(ref_loss))


def test_bad_target_is_a_clear_error():
    x, t, _ = _data(10, 30, seed=6)
    t[4] = 30
    with pytest.raises(SoftmaxkitError, match="out of range"):
        skt.cross_entropy(x.float(), t, label_smoothing=0.1)


def test_inputs_are_not_modified():
    x, t, w = _data(40, 50, seed=7)
    x = x.float()
    xs, ts, ws = x.clone(), t.clone(), w.clone()
    _run(x, t, label_smoothing=0.1, weight=w.float())
    assert torch.equal(x, xs) and torch.equal(t, ts) and torch.equal(w, ws)
