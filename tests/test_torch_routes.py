"""softmaxkit.torch routes: eager autograd.Function vs torch.library operators, engines, halves.

* Eager calls take ``torch.autograd.Function`` wrappers, compiled ones the
  ``torch.library`` operators; both must give bitwise identical values and
  gradients.
* ``SOFTMAXKIT_ENGINE=agnostic`` runs torch operations instead of the C core,
  under the same contract.
* CPU float16/bfloat16 run the float32 kernels and round once; the result must
  be the correctly rounded value (0.5 ulp in the half type) of the float64
  answer, including where the float32 result is exactly a half-precision
  midpoint (double rounding).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import softmaxkit.torch as skt  # noqa: E402
from softmaxkit import _errors as skt_errors  # noqa: E402
from softmaxkit.torch import _engine, _ops  # noqa: E402

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _x(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * 3).to(dtype)


def _both(eager, op, x):
    """Value and input gradient from the eager route and from the operator route."""
    res = []
    for fn in (eager, op):
        xi = x.detach().clone().requires_grad_()
        out = fn(xi)
        cot = torch.linspace(-1.0, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
        (g,) = torch.autograd.grad(out, xi, cot)
        res.append((out.detach(), g))
    return res


def _bitwise(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a.view(-1).view(torch.uint8), b.contiguous().view(-1).view(torch.uint8))


CASES = {
    "softmax": (lambda x: skt.softmax(x, 1), lambda x: _ops.softmax_op(x, [1])),
    "softmax_dim0": (lambda x: skt.softmax(x, 0), lambda x: _ops.softmax_op(x, [0])),
    "log_softmax": (lambda x: skt.log_softmax(x, 1), lambda x: _ops.log_softmax_op(x, [1])),
    "logsumexp": (lambda x: skt.logsumexp(x, 1), lambda x: _ops.logsumexp_op(x, [1], False)),
    "logsumexp_both": (
        lambda x: skt.logsumexp(x, (0, 1), keepdim=True),
        lambda x: _ops.logsumexp_op(x, [0, 1], True),
    ),
}
T = torch.tensor([0, 4, 2, -100, 1, 3])
W = torch.tensor([0.5, -1.0, 0.0, 2.0, 1.5])
CE = {
    "ce_mean": {},
    "ce_sum": {"reduction": "sum"},
    "ce_none": {"reduction": "none"},
    "ce_sum_weight": {"weight": W, "reduction": "sum"},
    "ce_mean_weight": {"weight": W},
    "ce_none_z": {"reduction": "none", "z_loss": 1e-3},
    "ce_smooth": {"label_smoothing": 0.1},
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", sorted(CASES))
def test_eager_and_operator_routes_are_bitwise_identical(case, dtype):
    (v1, g1), (v2, g2) = _both(*CASES[case], _x(6, 5, dtype=dtype))
    _bitwise(v1, v2)
    _bitwise(g1, g2)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", sorted(CE))
def test_cross_entropy_routes_are_bitwise_identical(case, dtype):
    kw = CE[case]
    w = kw.get("weight")
    opts = (
        w,
        1,
        -100,
        kw.get("reduction", "mean"),
        kw.get("label_smoothing", 0.0),
        kw.get("z_loss", 0.0),
        False,
        True,
    )
    (v1, g1), (v2, g2) = _both(
        lambda x: skt.cross_entropy(x, T, **kw),
        lambda x: _ops.cross_entropy_op(x, T, *opts)[0],
        _x(6, 5, dtype=dtype),
    )
    _bitwise(v1, v2)
    _bitwise(g1, g2)


def test_everyday_cross_entropy_skips_the_general_validation(monkeypatch):
    """``cross_entropy(logits, labels)`` on CPU takes the short route, and only it does."""
    from softmaxkit.torch import _functional

    calls = []
    real = _functional.chk.float_input
    monkeypatch.setattr(
        _functional.chk, "float_input", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    x = _x(6, 5).requires_grad_()
    skt.cross_entropy(x, T).backward()
    skt.cross_entropy(x.detach(), T, reduction="none")
    assert calls == []
    skt.cross_entropy(x, T, label_smoothing=0.1).backward()  # smoothing takes it too
    skt.cross_entropy(x, T, label_smoothing=1)
    assert calls == []
    skt.cross_entropy(x, T, z_loss=1e-4)
    skt.cross_entropy(x.t().contiguous().t(), T)  # not contiguous
    skt.cross_entropy(x, T.to(torch.int32))
    assert len(calls) == 3
    for bad in (1.5, float("nan"), -0.1):  # the general route names the argument
        with pytest.raises(skt_errors.SoftmaxkitValueError, match="label_smoothing"):
            skt.cross_entropy(x, T, label_smoothing=bad)
    # the smoothed short route gives the general route's bits, loss and gradient
    for red in ("mean", "sum", "none"):
        a = _x(6, 5).requires_grad_()
        b = a.detach().t().contiguous().t().requires_grad_()  # the general route
        la = skt.cross_entropy(a, T, label_smoothing=0.1, reduction=red)
        lb = skt.cross_entropy(b, T, label_smoothing=0.1, reduction=red)
        assert torch.equal(la, lb), red
        la.sum().backward()
        lb.sum().backward()
        assert torch.equal(a.grad, b.grad), red
    with pytest.raises(skt_errors.SoftmaxkitValueError, match="out of range: 7 at item 1"):
        skt.cross_entropy(x, torch.tensor([0, 7, 1, 1, 1, 1]))


def _general(x):
    """``x`` with the same values, laid out so that the short routes decline it."""
    return x.detach().t().contiguous().t().requires_grad_(x.requires_grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_everyday_cross_entropy_reads_the_tensors_in_place(monkeypatch, dtype, reduction):
    """Without smoothing the short route hands the C core the tensors' addresses
    (``_engine.plain_ce``): values and gradients (first and second order) are the
    general route's bits, special rows included, and the inputs are not touched."""
    from softmaxkit.torch import _engine as E

    used = []
    real = E.plain_ce
    monkeypatch.setattr(E, "plain_ce", lambda *a: used.append(a[4]) or real(*a))
    x = _x(8, 5, dtype=dtype)
    x[1] = float("-inf")  # nothing to count
    x[2, 3] = float("inf")
    x[3, 0] = float("nan")
    x[4, 2] = float("-inf")  # the target's logit
    t = torch.tensor([0, 4, 3, 1, 2, -100, 1, 3])
    x0, t0 = x.clone(), t.clone()
    a, b = x.clone().requires_grad_(), _general(x.requires_grad_())
    la = skt.cross_entropy(a, t, reduction=reduction)
    lb = skt.cross_entropy(b, t, reduction=reduction)
    _bitwise(la.detach(), lb.detach())
    cot = torch.linspace(-1.0, 2.0, la.numel(), dtype=dtype).reshape(la.shape)
    (ga,) = torch.autograd.grad(la, a, cot, create_graph=True)
    (gb,) = torch.autograd.grad(lb, b, cot, create_graph=True)
    _bitwise(ga.detach(), gb.detach())
    # a double backward through the short route's node
    (hb,) = torch.autograd.grad(gb[~gb.isnan()].sum(), b, allow_unused=True)
    (ha,) = torch.autograd.grad(ga[~ga.isnan()].sum(), a, allow_unused=True)
    assert (ha is None) == (hb is None)
    if ha is not None:
        assert torch.equal(ha.nan_to_num(), hb.nan_to_num())
    with torch.no_grad():
        _bitwise(skt.cross_entropy(x, t, reduction=reduction), la.detach())
    assert used == [True, False]
    assert torch.equal(x.detach().nan_to_num(), x0.nan_to_num()) and torch.equal(t, t0)
    # `loss.backward()` (no cotangent) returns the saved gradient itself
    a.grad = None
    skt.cross_entropy(a, t, reduction=reduction).sum().backward()
    assert torch.equal(a.grad.nan_to_num(), torch.autograd.grad(lb.sum(), b)[0].nan_to_num())


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_gradient_becomes_x_grad_without_a_copy(monkeypatch, label_smoothing):
    """The forward's gradient buffer is handed to autograd, which adopts it as
    ``x.grad`` (a copy would cost as much as the logits); a second backward through
    a retained graph computes it again and accumulates the same bits."""
    from softmaxkit.torch import _engine as E

    made = []
    for name in ("plain_ce", "cross_entropy_fwd"):
        real = getattr(E, name)

        def spy(*a, real=real):
            out = real(*a)
            made.append(out[1].data_ptr() if out[1] is not None else None)
            return out

        monkeypatch.setattr(E, name, spy)
    x = _x(64, 30).requires_grad_()
    t = torch.randint(0, 30, (64,), generator=torch.Generator().manual_seed(1))
    skt.cross_entropy(x, t, label_smoothing=label_smoothing).backward()
    assert x.grad.data_ptr() == made[0]
    first = x.grad.clone()
    x.grad = None
    loss = skt.cross_entropy(x, t, label_smoothing=label_smoothing)
    loss.backward(retain_graph=True)
    _bitwise(x.grad, first)
    loss.backward()
    _bitwise(x.grad, 2 * first)


def test_everyday_cross_entropy_declines_what_it_cannot_read_in_place(monkeypatch):
    """Layouts whose memory is not the values (negated views, sparse tensors) and
    non-contiguous labels take the general route, which handles or names them."""
    from softmaxkit.torch import _engine as E

    used = []
    real = E.plain_ce
    monkeypatch.setattr(E, "plain_ce", lambda *a: used.append(1) or real(*a))
    x = _x(6, 5)
    t2 = torch.stack([T, T], 1)[:, 0]  # strided labels
    assert not t2.is_contiguous()
    _bitwise(skt.cross_entropy(x, t2), skt.cross_entropy(x, T))
    neg = torch._neg_view(x)
    _bitwise(skt.cross_entropy(neg, T), skt.cross_entropy(-x, T))
    _bitwise(skt.softmax(neg, 1), skt.softmax(-x, 1))
    assert used == [1, 1]  # the references only
    for bad, name in ((x.to_sparse(), "input"), (T.to_sparse(), "target")):
        args = (bad, T) if name == "input" else (x, bad)
        with pytest.raises(skt_errors.SoftmaxkitTypeError, match=f"`{name}` has layout"):
            skt.cross_entropy(*args)
    with pytest.raises(skt_errors.SoftmaxkitTypeError, match="`input` has layout"):
        skt.softmax(x.to_sparse(), 1)


def test_bce_short_route_leaves_negated_views_and_other_devices_to_the_checks():
    """The everyday BCE route read a negated view's memory (a RuntimeError from
    .numpy()) and a target on another device (a bare TypeError)."""
    x = _x(6, 5)
    y = torch.rand(6, 5, generator=torch.Generator().manual_seed(1))
    for xx, yy, xr, yr in (
        (torch._neg_view(x), y, -x, y),
        (x, torch._neg_view(-y), x, y),
    ):
        for red in ("none", "mean"):
            _bitwise(
                skt.binary_cross_entropy_with_logits(xx, yy, reduction=red),
                skt.binary_cross_entropy_with_logits(xr, yr, reduction=red),
            )
        xg = xx.detach().clone().requires_grad_() if not xx.is_neg() else None
        if xg is not None:
            skt.binary_cross_entropy_with_logits(xg, yy).backward()
    with pytest.raises(skt_errors.SoftmaxkitValueError, match="`target` is on meta"):
        skt.binary_cross_entropy_with_logits(x, y.to("meta"))


@pytest.mark.parametrize("log", [False, True])
def test_softmax_engine_reads_a_negated_view_as_its_values(log):
    """The engine behind the operators hands the C core an address: a negated view
    (whose memory holds -x) called straight through the operator gives the values'
    softmax, not the memory's."""
    from softmaxkit.torch import _ops

    op = _ops.log_softmax_op if log else _ops.softmax_op
    x = _x(6, 300)
    neg = torch._neg_view(x)
    assert neg.is_neg()
    _bitwise(op(neg, [1]), op(-x, [1]))


@pytest.mark.parametrize("log", [False, True])
def test_everyday_softmax_skips_the_general_validation(monkeypatch, log):
    """``softmax(x, dim=-1)`` on a contiguous CPU float32/float64 tensor with no gradient
    takes the short route, with the general route's bits; everything else does not."""
    from softmaxkit.torch import _functional

    fn = skt.log_softmax if log else skt.softmax
    calls = []
    real = _functional.chk.float_input
    monkeypatch.setattr(
        _functional.chk, "float_input", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    for dtype in (torch.float32, torch.float64):
        x = _x(7, 300, dtype=dtype)
        x[2, 5] = float("inf")
        x[3, :] = -float("inf")
        x[4, 0] = float("nan")
        fast = [fn(x, -1), fn(x, 1), fn(x[0], 0)]
        assert calls == []
        with torch.no_grad():
            fast.append(fn(x.clone().requires_grad_(), -1))
        assert calls == []
        general = [
            _engine.softmax_fwd(x, [1], log),
            fn(x, 1, dtype=dtype),  # dtype= takes the general route
            _engine.softmax_fwd(x[0], [0], log),
            fn(x.clone().requires_grad_(), -1).detach(),  # autograd
        ]
        assert len(calls) == 2
        calls.clear()
        for a, b in zip(fast, general, strict=True):
            _bitwise(a, b)
    fn(_x(3, 4, dtype=torch.float16), -1)  # halves, other dims, non-contiguous: general
    fn(_x(3, 4), 0)
    fn(_x(4, 3).t(), -1)
    assert len(calls) == 3


def test_bce_and_nll_routes_are_bitwise_identical():
    y = torch.rand(6, 5, generator=torch.Generator().manual_seed(3))
    w = torch.linspace(-1, 1, 5)
    (v1, g1), (v2, g2) = _both(
        lambda x: skt.binary_cross_entropy_with_logits(x, y, w, reduction="sum"),
        lambda x: _ops.bce_with_logits_op(x, y, w, None, "sum", True)[0],
        _x(6, 5),
    )
    _bitwise(v1, v2)
    _bitwise(g1, g2)
    (v1, g1), (v2, g2) = _both(
        lambda x: skt.nll_loss(x, T, W),
        lambda x: _ops.nll_loss_op(x, T, W, 1, -100, "mean"),
        _x(6, 5),
    )
    _bitwise(v1, v2)
    _bitwise(g1, g2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_everyday_bce_short_route(monkeypatch, dtype, reduction):
    """``binary_cross_entropy_with_logits(logits, targets)`` on CPU skips the general
    validation and the torch conversions (``_engine._plain_bce``), with the general
    route's bits (value, input and target gradients) and the NumPy front end's; a
    target outside [0, 1] still gets the general route's error."""
    import numpy as np

    import softmaxkit as sk
    from softmaxkit.torch import _functional

    calls, short = [], []
    real_check = _functional.chk.float_input
    monkeypatch.setattr(
        _functional.chk, "float_input", lambda *a, **k: calls.append(1) or real_check(*a, **k)
    )
    real_plain = _engine._plain_bce
    monkeypatch.setattr(
        _engine,
        "_plain_bce",
        lambda *a: (lambda r: short.append(r is not None) or r)(real_plain(*a)),
    )
    g = torch.Generator().manual_seed(4)
    y = torch.rand(6, 5, generator=g, dtype=torch.float64).to(dtype)
    y[0, :2] = torch.tensor([0.0, 1.0], dtype=dtype)
    x = _x(6, 5, dtype=dtype)
    x[1, :2] = torch.tensor([float("inf"), -float("inf")], dtype=dtype)
    res = []
    for a, b in ((x, y), (_general(x), _general(y))):  # short route, then the general one
        a = a.detach().clone().requires_grad_()
        b = b.detach().clone().requires_grad_()
        loss = skt.binary_cross_entropy_with_logits(a, b, reduction=reduction)
        loss.sum().backward()
        res.append((loss.detach(), a.grad, b.grad))
    # neither took the general checks; the engine's short route declined the second
    # (not contiguous), which went the general way inside the engine
    assert calls == [] and short == [True, False]
    skt.binary_cross_entropy_with_logits(x, y, torch.ones(5, dtype=dtype))  # weights: checked
    assert calls == [1]
    for u, v in zip(res[0], res[1], strict=True):
        _bitwise(u, v)
    want = sk.binary_cross_entropy_with_logits(x.numpy(), y.numpy(), reduction=reduction)
    assert np.array_equal(res[0][0].numpy(), np.asarray(want))
    for bad in (1.5, float("nan"), -0.1):
        yb = y.clone()
        yb[2, 3] = bad
        with pytest.raises(skt_errors.SoftmaxkitValueError, match=r"`target` must lie in"):
            skt.binary_cross_entropy_with_logits(x, yb, reduction=reduction)


def test_agnostic_engine_matches_native_under_the_contract(monkeypatch):
    x = _x(7, 9, dtype=torch.float64)
    x[0, 3] = float("inf")
    x[1] = -float("inf")
    t = torch.tensor([3, 0, 1, 8, -100, 2, 4])
    w = torch.linspace(-2, 2, 9, dtype=torch.float64)
    funcs = [
        lambda a: skt.softmax(a, 1),
        lambda a: skt.log_softmax(a, 0),
        lambda a: skt.logsumexp(a, 1),
        lambda a: skt.cross_entropy(a, t, w),
        lambda a: skt.cross_entropy(a, t, reduction="none", z_loss=0.01),
    ]
    native = [f(x) for f in funcs]
    monkeypatch.setenv(_engine.ENV_ENGINE, "agnostic")
    assert _engine.engine_for(x) == "agnostic"
    for f, want in zip(funcs, native, strict=True):
        torch.testing.assert_close(f(x), want, rtol=4e-16, atol=0, equal_nan=True)


def test_weighted_mean_follows_torch_for_negative_and_zero_weights():
    x = _x(5, 4, seed=4).requires_grad_()
    t = torch.tensor([0, 1, 2, 3, 1])
    for w in (torch.tensor([1.0, -2.0, 0.5, 0.0]), torch.tensor([0.0, 0.0, 3.0, -1.0])):
        got = skt.cross_entropy(x, t, w)
        want = torch.nn.functional.cross_entropy(x, t, w)
        torch.testing.assert_close(got, want)
        (g1,) = torch.autograd.grad(got, x)
        (g2,) = torch.autograd.grad(want, x)
        torch.testing.assert_close(g1, g2)
    # weights summing to 0 over the batch: the empty mean, 0 (torch: inf or NaN)
    w0 = torch.tensor([1.0, -1.0, 0.0, 0.0])
    assert skt.cross_entropy(x, torch.tensor([0, 1, 0, 1, 2]), w0).item() == 0.0


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("log", [False, True])
def test_half_precision_is_rounded_once_from_the_exact_answer(half, log):
    # many short rows: some float32 results land exactly on half-precision midpoints
    x = torch.cat(
        [
            _x(100_000, 7, dtype=half, seed=1),
            torch.zeros(8, 7, dtype=half),
            torch.arange(56, dtype=half).reshape(8, 7) / 4,
        ]
    )
    got = (skt.log_softmax if log else skt.softmax)(x, 1)
    oracle = (skt.log_softmax if log else skt.softmax)(x.double(), 1).to(half)
    assert torch.equal(got, oracle)
    # the double-rounding guard was exercised on this data (float32 results on midpoints)
    r32 = _engine._native_normalize(x.float(), log)
    assert bool(_engine._half_midpoints(r32, half).any())


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=str)
def test_half_logsumexp_and_cross_entropy_are_rounded_once(half):
    x = _x(500, 11, dtype=half, seed=2)
    t = torch.randint(0, 11, (500,), generator=torch.Generator().manual_seed(2))
    assert torch.equal(skt.logsumexp(x, 1), skt.logsumexp(x.double(), 1).to(half))
    want = skt.cross_entropy(x.double(), t, reduction="none").to(half)
    assert torch.equal(skt.cross_entropy(x, t, reduction="none"), want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_outputs_equal_the_same_rows_computed_in_small_pieces(dtype):
    """Outputs of 4 MiB or more come from NumPy's allocator (huge pages), smaller ones
    from torch's: the values and gradients are those of the same rows in small calls."""
    rows, n = 1200, 1001  # 4.6 MiB in float32: above the threshold; 100-row pieces below
    x = _x(rows, n, dtype=dtype, seed=3)
    t = torch.randint(0, n, (rows,), generator=torch.Generator().manual_seed(4))
    y = torch.rand(rows, n, generator=torch.Generator().manual_seed(5), dtype=dtype)
    cot = _x(rows, n, dtype=dtype, seed=6)

    def run(xs, ts, ys, cs):
        out = {}
        xi = xs.detach().clone().requires_grad_()
        skt.cross_entropy(xi, ts, reduction="sum").backward()  # the everyday route
        out["ce"] = xi.grad
        xi = xs.detach().clone().requires_grad_()
        skt.binary_cross_entropy_with_logits(xi, ys, reduction="sum").backward()
        out["bce"] = xi.grad
        for name in ("softmax", "log_softmax"):
            xi = xs.detach().clone().requires_grad_()
            v = getattr(skt, name)(xi, -1)
            (g,) = torch.autograd.grad(v, xi, cs)
            out[name], out[name + " grad"] = v.detach(), g
        return out

    whole = run(x, t, y, cot)
    pieces = [run(x[i : i + 100], t[i : i + 100], y[i : i + 100], cot[i : i + 100])
              for i in range(0, rows, 100)]  # fmt: skip
    for key, value in whole.items():
        assert value.dtype == dtype and value.is_contiguous(), key
        torch.testing.assert_close(
            value, torch.cat([p[key] for p in pieces]), rtol=0, atol=0, msg=key
        )
    # softmax over the first dimension (the reshaping route) against the transposed call
    xi = x.detach().clone().requires_grad_()
    v = skt.softmax(xi, 0)
    (g,) = torch.autograd.grad(v, xi, cot)
    xt = x.t().contiguous().requires_grad_()
    vt = skt.softmax(xt, -1)
    (gt,) = torch.autograd.grad(vt, xt, cot.t().contiguous())
    torch.testing.assert_close(v, vt.t(), rtol=0, atol=0)
    torch.testing.assert_close(g, gt.t(), rtol=0, atol=0)


_MKL_CHILD = r"""
import collections, sys
import numpy as np
import torch

first = {}
def recorder(name, fn):
    def wrapped(t, *a, **k):
        first.setdefault((name, str(t.dtype)), t.numel())
        return fn(t, *a, **k)
    return wrapped
for name in ("exp", "expm1", "log", "log1p", "log2"):
    setattr(torch, name, recorder(name, getattr(torch, name)))

import softmaxkit as sk
from softmaxkit import _torch_dispatch
if sys.argv[1] == "front end":
    import softmaxkit.torch  # noqa: F401
_torch_dispatch.ENABLED = False  # the array-agnostic engine, in torch operations
x = np.linspace(-30.0, 30.0, 9202).astype(np.float32)
t = torch.from_numpy(x.copy())
got = [sk.sigmoid(t).numpy(), sk.log_softmax(t).numpy(), sk.logsumexp(t).numpy()]
# float64 references, far inside the float32 bound (a raced oneMKL kernel has float32
# accuracy: 3e-9 relative in float64, 1e-4 in float32, which several of these 9202
# values near a rounding midpoint turn into more than 0.505 ulp)
d = x.astype(np.float64)
m = d.max()
lse = m + np.log(np.sum(np.exp(d - m)))
want = [1.0 / (1.0 + np.exp(-d)), d - lse, lse]
for g, w in zip(got, want):
    ulps = np.abs(g.astype(np.float64) - w) / np.spacing(np.abs(w).astype(np.float32))
    assert ulps.max() <= 0.505, f"{ulps.max()} ulp against float64"  # the documented bound
print(sorted((k, v) for k, v in first.items()))
"""


@pytest.mark.parametrize("how", ["agnostic engine", "front end"])
def test_onemkl_kernel_choice_is_made_on_one_thread(how):
    """Before softmaxkit's first torch.exp/log... in a process, each was called once on
    one element: oneMKL's lazy kernel choice races when the first call runs on
    several threads, and one thread may then run a low-accuracy kernel for the whole
    call (pytorch#188792; float32 sigmoid was 0.53 ulp off in one fresh process of
    about six). A one-element call runs on one thread, so the choice is made right.
    """
    import ast
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _MKL_CHILD, how], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]  # the child checks the float32 bound
    if not torch.backends.mkl.is_available():
        return  # no oneMKL, no kernel choice to settle: prime() calls nothing
    first = dict(ast.literal_eval(out.stdout.strip().splitlines()[-1]))
    assert ("exp", "torch.float32") in first or ("exp", "torch.float64") in first, first
    late = {k: n for k, n in first.items() if n != 1}
    assert not late, f"first calls on more than one element: {late}"
