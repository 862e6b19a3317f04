"""softmaxkit.torch: torch parity, the contract where torch differs, autograd, compile, modules."""

from __future__ import annotations

import copy
import doctest
import functools
import importlib
import math
import os
import pickle
import subprocess
import sys

import pytest

from tests.conftest import active_backends

if "torch" not in active_backends():
    pytest.skip("the torch backend is not requested or not installed", allow_module_level=True)

import torch
import torch.nn.functional as F

import softmaxkit.torch as skt
from softmaxkit import SoftmaxkitError, SoftmaxkitTypeError, SoftmaxkitValueError
from softmaxkit.torch import _engine

INF = math.inf


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=dtype)


# ------------------------------------------------------------------ parity with torch


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape_dim", [((7,), 0), ((4, 6), 1), ((4, 6), 0), ((2, 3, 5), -1)])
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_normalizers_match_torch(dtype, shape_dim, op):
    shape, dim = shape_dim
    x = (_randn(*shape, dtype=dtype) * 3).requires_grad_()
    g = _randn(*shape, dtype=dtype, seed=1)
    ours = getattr(skt, op)(x, dim)
    ref = getattr(torch, op)(x, dim)
    tol = {"rtol": 1e-6, "atol": 1e-7} if dtype == torch.float32 else {"rtol": 1e-13, "atol": 1e-15}
    torch.testing.assert_close(ours, ref, **tol)
    (gx,) = torch.autograd.grad(ours, x, g)
    (gr,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(gx, gr, **tol)


@pytest.mark.parametrize("dim", [0, 1, (0, 2), [-1]])
@pytest.mark.parametrize("keepdim", [False, True])
def test_logsumexp_matches_torch(dim, keepdim):
    x = _randn(3, 4, 5).requires_grad_()
    ours = skt.logsumexp(x, dim, keepdim)
    ref = torch.logsumexp(x, dim if not isinstance(dim, list) else tuple(dim), keepdim)
    torch.testing.assert_close(ours, ref)
    g = torch.ones_like(ref)
    torch.testing.assert_close(
        torch.autograd.grad(ours, x, g)[0], torch.autograd.grad(ref, x, g)[0]
    )


CE_OPTIONS = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"label_smoothing": 0.2},
    {"weight": True},
    {"weight": True, "label_smoothing": 0.1, "reduction": "none"},
    {"ignore_index": 2},
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(5,), (6, 5), (3, 5, 2, 2)])
@pytest.mark.parametrize("opts", CE_OPTIONS)
def test_cross_entropy_index_targets_match_torch(dtype, shape, opts):
    opts = dict(opts)
    C = shape[0] if len(shape) == 1 else shape[1]
    if opts.get("weight"):
        opts["weight"] = torch.rand(C, generator=_gen(3), dtype=dtype) + 0.1
    x = (_randn(*shape, dtype=dtype) * 2).requires_grad_()
    tshape = () if len(shape) == 1 else (shape[0], *shape[2:])
    t = torch.randint(0, C, tshape, generator=_gen(2))
    if "ignore_index" not in opts and t.dim():
        t.view(-1)[0] = -100
    ours = skt.cross_entropy(x, t, **opts)
    ref = F.cross_entropy(x, t, **opts)
    torch.testing.assert_close(ours, ref, rtol=2e-6 if dtype == torch.float32 else 1e-12, atol=1e-6)
    g = torch.rand(ref.shape, generator=_gen(4), dtype=dtype)
    torch.testing.assert_close(
        torch.autograd.grad(ours, x, g)[0],
        torch.autograd.grad(ref, x, g)[0],
        rtol=2e-6 if dtype == torch.float32 else 1e-12,
        atol=1e-7,
    )


@pytest.mark.parametrize(
    "opts", [{}, {"label_smoothing": 0.3}, {"reduction": "none"}, {"weight": True}]
)
def test_cross_entropy_probability_targets_match_torch(opts):
    opts = dict(opts)
    if opts.get("weight"):
        opts["weight"] = torch.rand(4, generator=_gen(3), dtype=torch.float64)
    x = _randn(5, 4, 3).requires_grad_()
    p = torch.softmax(_randn(5, 4, 3, seed=7), 1).requires_grad_()
    ours = skt.cross_entropy(x, p, **opts)
    ref = F.cross_entropy(x, p, **opts)
    torch.testing.assert_close(ours, ref)
    g = torch.ones_like(ref)
    for a, b in zip(
        torch.autograd.grad(ours, (x, p), g), torch.autograd.grad(ref, (x, p), g), strict=True
    ):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "opts", [{}, {"reduction": "sum"}, {"reduction": "none"}, {"weight": True}]
)
def test_nll_loss_matches_torch(opts):
    opts = dict(opts)
    if opts.get("weight"):
        opts["weight"] = torch.rand(5, generator=_gen(3), dtype=torch.float64)
    lp = torch.log_softmax(_randn(6, 5, 2), 1).requires_grad_()
    t = torch.randint(0, 5, (6, 2), generator=_gen(1))
    t[0, 0] = -100
    ours = skt.nll_loss(lp, t, **opts)
    ref = F.nll_loss(lp, t, **opts)
    torch.testing.assert_close(ours, ref)
    g = torch.ones_like(ref)
    torch.testing.assert_close(
        torch.autograd.grad(ours, lp, g)[0], torch.autograd.grad(ref, lp, g)[0]
    )


@pytest.mark.parametrize(
    "opts", [{}, {"reduction": "none"}, {"weight": True}, {"pos_weight": True}]
)
def test_bce_with_logits_matches_torch(opts):
    opts = dict(opts)
    if opts.get("weight"):
        opts["weight"] = torch.rand(3, generator=_gen(3), dtype=torch.float64)
    if opts.get("pos_weight"):
        opts["pos_weight"] = torch.rand(3, generator=_gen(4), dtype=torch.float64) * 3
    x = (_randn(4, 3) * 4).requires_grad_()
    y = torch.rand(4, 3, generator=_gen(5), dtype=torch.float64).requires_grad_()
    ours = skt.binary_cross_entropy_with_logits(x, y, **opts)
    ref = F.binary_cross_entropy_with_logits(x, y, **opts)
    torch.testing.assert_close(ours, ref)
    g = torch.ones_like(ref)
    for a, b in zip(
        torch.autograd.grad(ours, (x, y), g), torch.autograd.grad(ref, (x, y), g), strict=True
    ):
        torch.testing.assert_close(a, b)


# ------------------------------------------------- the contract, where torch differs


def test_masked_rows_give_zero_not_nan():
    x = torch.tensor([[-INF, -INF, -INF], [1.0, 2.0, 3.0]], requires_grad=True)
    p = skt.softmax(x, 1)
    assert torch.equal(p[0], torch.zeros(3))
    assert torch.isnan(torch.softmax(x, 1)[0]).all()  # what torch does
    assert torch.equal(skt.log_softmax(x, 1)[0], torch.full((3,), -INF))
    lse = skt.logsumexp(x, 1)
    assert lse[0].item() == -INF
    (g,) = torch.autograd.grad(lse.sum(), x)
    assert torch.equal(g[0], torch.zeros(3))
    assert not torch.isnan(g).any()
    loss = skt.cross_entropy(x, torch.tensor([0, 2]), reduction="none")
    assert loss[0].item() == 0.0
    (gce,) = torch.autograd.grad(skt.cross_entropy(x, torch.tensor([0, 2])), x)
    assert torch.equal(gce[0], torch.zeros(3))


def test_positive_infinity_takes_the_limit():
    x = torch.tensor([[INF, 0.0, INF]])
    torch.testing.assert_close(skt.softmax(x, 1), torch.tensor([[0.5, 0.0, 0.5]]))
    torch.testing.assert_close(
        skt.log_softmax(x, 1), torch.tensor([[-math.log(2), -INF, -math.log(2)]])
    )
    assert skt.logsumexp(x, 1).item() == INF
    assert skt.cross_entropy(x, torch.tensor([0])).item() == pytest.approx(math.log(2))
    assert torch.isnan(torch.softmax(x, 1)).all()


def test_dominant_logit_keeps_its_digits():
    x = torch.tensor([[0.0, -40.0]])
    assert skt.log_softmax(x, 1)[0, 0].item() == pytest.approx(-4.248354e-18, rel=1e-6)
    assert skt.logsumexp(x, 1).item() == pytest.approx(4.248354e-18, rel=1e-6)
    assert skt.cross_entropy(x, torch.tensor([0])).item() == pytest.approx(4.248354e-18, rel=1e-6)
    assert F.cross_entropy(x, torch.tensor([0])).item() == 0.0
    bce = skt.binary_cross_entropy_with_logits(torch.tensor([-40.0]), torch.tensor([0.0]))
    assert bce.item() == pytest.approx(4.248354e-18, rel=1e-6)


def test_mean_over_nothing_is_zero():
    x = _randn(3, 4).requires_grad_()
    t = torch.full((3,), -100)
    loss = skt.cross_entropy(x, t)
    assert loss.item() == 0.0
    assert torch.isnan(F.cross_entropy(x, t))
    (g,) = torch.autograd.grad(loss, x)
    assert torch.equal(g, torch.zeros_like(x))
    assert skt.nll_loss(x, t).item() == 0.0
    assert skt.cross_entropy(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)).item() == 0.0


def test_means_of_losses_near_the_largest_float():
    """A mean of finite float64 losses is finite where their sum overflows (BCE and
    linear_cross_entropy gave inf; every loss of the contract table is covered)."""
    f64 = torch.float64
    x = torch.zeros(4, 2, dtype=f64)
    x[:, 1] = 1e308
    t = torch.zeros(4, dtype=torch.int64)
    big, zeros = torch.full((4,), 1e308, dtype=f64), torch.zeros(4, dtype=f64)
    h, w = torch.full((4, 1), 1e154, dtype=f64), torch.tensor([[0.0], [1e154]], dtype=f64)
    cases = [
        (skt.cross_entropy, (x, t), {}, 1e308),
        (skt.cross_entropy, (x, t), {"weight": torch.tensor([1.0, 2.0], dtype=f64)}, 1e308),
        (skt.cross_entropy, (x, t), {"label_smoothing": 0.1}, 0.95e308),
        (skt.cross_entropy, (x, torch.tensor([[1.0, 0.0]] * 4, dtype=f64)), {}, 1e308),
        (skt.nll_loss, (torch.full((4, 2), -1e308, dtype=f64), t), {}, 1e308),
        (skt.binary_cross_entropy_with_logits, (big, zeros), {}, 1e308),
        (
            skt.binary_cross_entropy_with_logits,
            (big, zeros),
            {"weight": torch.ones(4, dtype=f64)},
            1e308,
        ),
        (skt.linear_cross_entropy, (h, w, t), {}, 1e308),
    ]
    for fn, args, kw, want in cases:
        for grad in (False, True):
            first = args[0].clone().requires_grad_(grad)
            got = fn(first, *args[1:], **kw)
            assert float(got.detach()) == pytest.approx(want, rel=1e-15), (fn.__name__, kw, grad)
    assert float(skt.binary_cross_entropy_with_logits(big, zeros, reduction="sum")) == math.inf


def test_zero_probability_on_minus_inf_logit_contributes_nothing():
    x = torch.tensor([[0.0, -INF, 1.0]])
    p = torch.tensor([[0.5, 0.0, 0.5]])
    loss = skt.cross_entropy(x, p)
    assert math.isfinite(loss.item())
    assert torch.isnan(F.cross_entropy(x, p))
    ref = -(0.5 * torch.log_softmax(torch.tensor([0.0, 1.0]), 0)).sum()
    assert loss.item() == pytest.approx(ref.item())


def test_nan_propagates():
    x = torch.tensor([[0.0, math.nan], [1.0, 2.0]])
    assert torch.isnan(skt.softmax(x, 1)[0]).all()
    assert not torch.isnan(skt.softmax(x, 1)[1]).any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_rounded_once(dtype):
    x = (_randn(8, 300) * 4).to(dtype)
    expect = torch.softmax(x.double(), 1).to(dtype)
    assert torch.equal(skt.softmax(x, 1), expect)
    expect_ls = torch.log_softmax(x.double(), 1).to(dtype)
    assert torch.equal(skt.log_softmax(x, 1), expect_ls)
    big = torch.zeros(100_000, dtype=dtype)
    assert skt.logsumexp(big, 0).item() == pytest.approx(math.log(100_000), rel=1e-2)
    t = torch.randint(0, 300, (8,), generator=_gen(1))
    loss = skt.cross_entropy(x.requires_grad_(), t)
    assert loss.dtype == dtype
    (g,) = torch.autograd.grad(loss, x)
    assert g.dtype == dtype
    ref = F.cross_entropy(x.double(), t)
    assert loss.double().item() == pytest.approx(ref.item(), rel=4e-3)


def test_integer_input_is_promoted_for_normalizers():
    x = torch.tensor([[1, 2, 3]])
    assert skt.softmax(x, 1).dtype == torch.get_default_dtype()
    assert skt.logsumexp(x, 1).dtype == torch.logsumexp(x, 1).dtype


def test_zero_dim_input():
    assert skt.softmax(torch.tensor(3.0), 0).item() == 1.0
    assert skt.log_softmax(torch.tensor(3.0), -1).item() == 0.0
    assert skt.logsumexp(torch.tensor(3.0), 0).item() == 3.0


def test_one_route_decision_honours_the_engine_variable(monkeypatch):
    monkeypatch.delenv(_engine.ENV_ENGINE, raising=False)
    for dt in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        assert _engine.engine_for(torch.zeros(2, dtype=dt)) == "native"
    assert _engine.engine_for(torch.zeros(2, device="meta")) == "agnostic"
    monkeypatch.setenv(_engine.ENV_ENGINE, "agnostic")
    assert _engine.engine_for(torch.zeros(2)) == "agnostic"
    monkeypatch.setenv(_engine.ENV_ENGINE, "native")
    assert _engine.engine_for(torch.zeros(2)) == "native"
    assert _engine.engine_for(torch.zeros(2, device="meta")) == "agnostic"
    monkeypatch.setenv(_engine.ENV_ENGINE, "cuda-magic")
    with pytest.raises(SoftmaxkitValueError, match="SOFTMAXKIT_ENGINE"):
        skt.softmax(torch.zeros(2), 0)


def test_automatic_choice_for_cpu_tensors_never_asks_for_triton(monkeypatch):
    # the Triton engine is looked up only for CUDA tensors or when forced: a CPU
    # call must not pay for importing (or even probing) triton
    def boom(forced):
        raise AssertionError("the Triton engine was consulted for a CPU tensor")

    monkeypatch.delenv(_engine.ENV_ENGINE, raising=False)
    monkeypatch.setattr(_engine, "_launchers", boom)
    x = torch.randn(3, 4, generator=_gen(4)).requires_grad_()
    assert _engine.engine_for(x) == "native"
    skt.log_softmax(x, 1).sum().backward()
    skt.cross_entropy(x, torch.tensor([0, 1, 3])).backward()
    skt.binary_cross_entropy_with_logits(x, torch.rand(3, 4, generator=_gen(5))).backward()
    skt.logsumexp(x, 1).sum().backward()


def test_forcing_triton_without_triton_names_the_install(monkeypatch):
    from softmaxkit import _triton

    monkeypatch.setattr(_triton, "_ENGINE", None)
    monkeypatch.setattr(_triton, "_FAILED", f"{_triton.INSTALL_HINT} (No module named 'triton')")
    monkeypatch.setattr(_engine, "_TRITON_TRIED", False)
    monkeypatch.setattr(_engine, "_LAUNCHERS", None)
    monkeypatch.setenv(_engine.ENV_ENGINE, "triton")
    for call in (
        lambda: skt.softmax(torch.zeros(2, 3), 1),
        lambda: skt.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1])),
    ):
        with pytest.raises(SoftmaxkitValueError, match=r"pip install softmaxkit\[triton\]"):
            call()
    monkeypatch.delenv(_engine.ENV_ENGINE)
    assert skt.softmax(torch.zeros(2, 2), 1).tolist() == [[0.5, 0.5], [0.5, 0.5]]


def test_native_engine_reads_tensors_in_place_and_returns_fresh_memory():
    x = torch.arange(6.0).reshape(2, 3)
    for out in (skt.softmax(x, 1), skt.log_softmax(x, 1), skt.logsumexp(x, 1)):
        assert out.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
    xr = x.clone().requires_grad_()
    skt.cross_entropy(xr, torch.tensor([0, 2])).backward()
    assert xr.grad.untyped_storage().data_ptr() != xr.untyped_storage().data_ptr()


def test_non_contiguous_and_read_only_style_inputs_are_not_modified():
    base = _randn(5, 8)
    x = base.t()  # non-contiguous
    keep = x.clone()
    t = torch.randint(0, 5, (8,), generator=_gen(1))
    skt.softmax(x, 1)
    skt.log_softmax(x, 0)
    skt.logsumexp(x, (0, 1))
    skt.cross_entropy(x.requires_grad_(), t, label_smoothing=0.1).backward()
    assert torch.equal(x.detach(), keep)
    torch.testing.assert_close(skt.softmax(x, 0), torch.softmax(keep, 0))


# ------------------------------------------------------------------ autograd checks


def _ce_prob_target():
    return torch.softmax(_randn(4, 5, seed=9), 1)


GRAD_CASES = {
    "softmax": lambda x: skt.softmax(x, 1),
    "softmax_dim0": lambda x: skt.softmax(x, 0),
    "log_softmax": lambda x: skt.log_softmax(x, 1),
    "logsumexp": lambda x: skt.logsumexp(x, 1),
    "logsumexp_all_keepdim": lambda x: skt.logsumexp(x, (0, 1), keepdim=True),
    "cross_entropy": lambda x: skt.cross_entropy(x, torch.tensor([0, 1, -100, 4])),
    "cross_entropy_options": lambda x: skt.cross_entropy(
        x,
        torch.tensor([0, 1, 2, 4]),
        torch.linspace(0.5, 1.5, 5, dtype=torch.float64),
        reduction="none",
        label_smoothing=0.1,
        z_loss=0.05,
    ),
    "cross_entropy_prob": lambda x: skt.cross_entropy(
        x, _ce_prob_target(), label_smoothing=0.2, z_loss=0.01
    ),
    "nll_loss": lambda x: skt.nll_loss(x, torch.tensor([0, 1, 2, 3])),
    "bce_with_logits": lambda x: skt.binary_cross_entropy_with_logits(
        x,
        torch.linspace(0, 1, 20, dtype=torch.float64).reshape(4, 5),
        pos_weight=torch.linspace(0.5, 2, 5, dtype=torch.float64),
        reduction="sum",
    ),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_gradcheck_and_gradgradcheck(name):
    x = _randn(4, 5).requires_grad_()
    f = GRAD_CASES[name]
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


def test_gradcheck_probability_target_and_bce_target():
    x = _randn(3, 4)
    p = torch.softmax(_randn(3, 4, seed=5), 1).requires_grad_()
    assert torch.autograd.gradcheck(lambda q: skt.cross_entropy(x, q, label_smoothing=0.1), (p,))
    y = torch.rand(3, 4, generator=_gen(2), dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: skt.binary_cross_entropy_with_logits(x, t), (y,))


def test_double_backward_first_order_terms_agree():
    # create_graph=True takes the differentiable formula; it must equal the fused gradient
    x = _randn(6, 7).requires_grad_()
    t = torch.tensor([0, 1, 2, 3, -100, 6])
    w = torch.linspace(0.2, 2.0, 7, dtype=torch.float64)
    kw = {"label_smoothing": 0.1, "z_loss": 0.02}
    (g1,) = torch.autograd.grad(skt.cross_entropy(x, t, w, **kw), x)
    (g2,) = torch.autograd.grad(skt.cross_entropy(x, t, w, **kw), x, create_graph=True)
    torch.testing.assert_close(g1, g2.detach(), rtol=1e-13, atol=1e-15)


def test_opcheck_every_operator():
    ops = torch.ops.softmaxkit
    x = _randn(3, 4)
    g = _randn(3, 4, seed=1)
    t = torch.tensor([0, 3, -100])
    w = torch.rand(4, generator=_gen(1), dtype=torch.float64)
    cases = [
        (ops.softmax.default, (x.clone().requires_grad_(), [1])),
        (ops.log_softmax.default, (x.clone().requires_grad_(), [1])),
        (ops.logsumexp.default, (x.clone().requires_grad_(), [0, 1], True)),
        (ops.softmax_backward.default, (torch.softmax(x, 1), g, [1])),
        (ops.log_softmax_backward.default, (torch.log_softmax(x, 1), g, [1])),
        (ops.logsumexp_backward.default, (x, g[:, 0], [1], False)),
        (
            ops.cross_entropy.default,
            (x.clone().requires_grad_(), t, w, 1, -100, "mean", 0.1, 0.0, False, True),
        ),
        (ops.nll_loss.default, (x.clone().requires_grad_(), t, w, 1, -100, "sum")),
        (
            ops.bce_with_logits.default,
            (x.clone().requires_grad_(), torch.sigmoid(g), None, w, "none", True),
        ),
        (
            ops.linear_cross_entropy.default,
            (
                x.clone().requires_grad_(),
                _randn(6, 4, seed=3).requires_grad_(),
                None,
                torch.tensor([0, 5, -100]),
                None,
                -100,
                0.0,
                0.0,
                "sum",
                1,
                2,
                True,
                True,
            ),
        ),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))


# ------------------------------------------------------------------------ compile


def test_compile_traces_without_graph_breaks():
    import torch._dynamo as dynamo

    x = _randn(6, 5, dtype=torch.float32).requires_grad_()
    t = torch.tensor([0, 1, 2, 3, 4, -100])
    W = _randn(9, 5, dtype=torch.float32, seed=4).requires_grad_()

    def f(x, t, W):
        ls = skt.log_softmax(x, 1)
        return (
            skt.cross_entropy(x, t, label_smoothing=0.1)
            + skt.logsumexp(x, 1).sum()
            + skt.softmax(x, 1)[:, 0].sum()
            + skt.nll_loss(ls, t)
            + skt.binary_cross_entropy_with_logits(x, torch.sigmoid(x.detach()))
            + skt.linear_cross_entropy(x, W, t)
        )

    dynamo.reset()
    explain = dynamo.explain(f)(x, t, W)
    assert explain.graph_break_count == 0
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    out_c = compiled(x, t, W)
    gc = torch.autograd.grad(out_c, (x, W))
    out_e = f(x, t, W)
    ge = torch.autograd.grad(out_e, (x, W))
    torch.testing.assert_close(out_c, out_e)
    for a, b in zip(gc, ge, strict=True):
        torch.testing.assert_close(a, b)


def test_compile_with_dynamic_shapes_and_float_options():
    """dynamic=True, a label-smoothing schedule (a float that changes between calls) and a
    compiled CrossEntropyLoss: math.isfinite in the float checks broke the graph."""
    import torch._dynamo as dynamo

    x = _randn(6, 5, dtype=torch.float32)
    t = torch.tensor([0, 1, 2, 3, 4, -100])
    dynamo.reset()
    f = torch.compile(
        lambda a, b: skt.cross_entropy(a, b), fullgraph=True, dynamic=True, backend="aot_eager"
    )
    torch.testing.assert_close(f(x, t), skt.cross_entropy(x, t), rtol=0, atol=0)
    g = torch.compile(
        lambda a, b, e, z: skt.cross_entropy(a, b, label_smoothing=e, z_loss=z),
        fullgraph=True,
        backend="aot_eager",
    )
    for e in (0.0, 0.1, 0.25):
        want = skt.cross_entropy(x, t, label_smoothing=e, z_loss=1e-4)
        torch.testing.assert_close(g(x, t, e, 1e-4), want, rtol=0, atol=0)
    # under fullgraph dynamo re-raises it as its own Unsupported, with our message
    with pytest.raises(Exception, match=r"`label_smoothing` must lie in \[0, 1\]"):
        g(x, t, 1.5, 0.0)
    m = torch.compile(
        skt.CrossEntropyLoss(label_smoothing=0.1), fullgraph=True, dynamic=True, backend="aot_eager"
    )
    torch.testing.assert_close(m(x, t), skt.cross_entropy(x, t, label_smoothing=0.1))


# ------------------------------------------------------------------------ modules


def _module_cases():
    w = torch.rand(5, generator=_gen(1))
    return [
        (skt.Softmax(dim=1), torch.nn.Softmax(dim=1), "Softmax(dim=1)"),
        (skt.LogSoftmax(dim=-1), torch.nn.LogSoftmax(dim=-1), "LogSoftmax(dim=-1)"),
        (skt.CrossEntropyLoss(), torch.nn.CrossEntropyLoss(), "CrossEntropyLoss()"),
        (
            skt.CrossEntropyLoss(w, label_smoothing=0.1),
            torch.nn.CrossEntropyLoss(w, label_smoothing=0.1),
            "CrossEntropyLoss(label_smoothing=0.1)",
        ),
        (
            skt.NLLLoss(w, reduction="sum"),
            torch.nn.NLLLoss(w, reduction="sum"),
            "NLLLoss(reduction='sum')",
        ),
    ]


@pytest.mark.parametrize("case", range(5))
def test_modules_behave_like_torch_modules(case):
    ours, theirs, text = _module_cases()[case]
    assert repr(ours) == text
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = _randn(4, 5, dtype=torch.float32)
    args = (
        (x,) if isinstance(ours, (skt.Softmax, skt.LogSoftmax)) else (x, torch.tensor([0, 1, 2, 4]))
    )
    if isinstance(ours, skt.NLLLoss):
        args = (torch.log_softmax(x, 1), args[1])
    torch.testing.assert_close(ours(*args), theirs(*args))
    clone = pickle.loads(pickle.dumps(ours))
    torch.testing.assert_close(clone(*args), ours(*args))
    torch.testing.assert_close(copy.deepcopy(ours)(*args), ours(*args))
    fresh = type(ours)(**({"dim": ours.dim} if hasattr(ours, "dim") else {}))
    if "weight" in ours.state_dict():
        fresh.register_buffer("weight", torch.zeros(5))
        fresh.load_state_dict(ours.state_dict())
        assert torch.equal(fresh.weight, ours.weight)
        assert ours.double().weight.dtype == torch.float64


def test_cross_entropy_module_sees_a_weight_set_after_construction():
    """The module's short route reads ``weight`` whether it is a buffer set later, a
    Parameter that replaced the buffer, or cleared again; each call equals torch's."""
    x = _randn(6, 5, dtype=torch.float32)
    t = torch.tensor([0, 1, 2, 4, 3, 0])
    w = torch.tensor([0.5, -1.0, 2.0, 0.0, 3.0])
    ours, theirs = skt.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    torch.testing.assert_close(ours(x, t), theirs(x, t))
    ours.weight = w.clone()
    theirs.weight = w.clone()
    torch.testing.assert_close(ours(x, t), theirs(x, t))
    assert not torch.allclose(ours(x, t), torch.nn.functional.cross_entropy(x, t))
    ours.weight = torch.nn.Parameter(w.clone(), requires_grad=False)
    assert "weight" not in ours._buffers
    torch.testing.assert_close(ours(x, t), theirs(x, t))
    del ours.weight
    ours.register_buffer("weight", None)
    torch.testing.assert_close(ours(x, t), torch.nn.functional.cross_entropy(x, t))


def test_bce_module_buffers_and_repr():
    pw = torch.tensor([1.0, 2.0, 3.0])
    ours = skt.BCEWithLogitsLoss(pos_weight=pw, reduction="sum")
    theirs = torch.nn.BCEWithLogitsLoss(pos_weight=pw, reduction="sum")
    assert repr(ours) == "BCEWithLogitsLoss(reduction='sum')"
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["pos_weight"]
    x = _randn(2, 3, dtype=torch.float32)
    y = torch.rand(2, 3, generator=_gen(1))
    torch.testing.assert_close(ours(x, y), theirs(x, y))
    torch.testing.assert_close(pickle.loads(pickle.dumps(ours))(x, y), ours(x, y))


def test_linear_cross_entropy_module_state_dict_like_torch():
    torch.manual_seed(0)
    ours = skt.LinearCrossEntropyLoss(8, 20, bias=True, weight=torch.ones(20))
    theirs = torch.nn.LinearCrossEntropyLoss(8, 20, bias=True, weight=torch.ones(20))
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = _randn(5, 8, dtype=torch.float32)
    t = torch.randint(0, 20, (5,), generator=_gen(1))
    torch.testing.assert_close(ours(x, t), theirs(x, t))
    clone = pickle.loads(pickle.dumps(ours))
    torch.testing.assert_close(clone(x, t), ours(x, t))
    assert "LinearCrossEntropyLoss(" in repr(ours)


# ------------------------------------------------------------------------ bad input


BAD = [
    (lambda: skt.softmax([1.0, 2.0], 0), SoftmaxkitTypeError, "torch.Tensor"),
    (lambda: skt.softmax(torch.zeros(2, 3), 2), SoftmaxkitValueError, "out of range"),
    (lambda: skt.softmax(torch.zeros(2, 3), None), SoftmaxkitTypeError, "dim"),
    (lambda: skt.softmax(torch.zeros(2, dtype=torch.complex64), 0), SoftmaxkitTypeError, "complex"),
    (lambda: skt.logsumexp(torch.zeros(2, 3), (1, 1)), SoftmaxkitValueError, "repeats"),
    (
        lambda: skt.cross_entropy(torch.zeros(2, 3, dtype=torch.int64), torch.tensor([0, 1])),
        SoftmaxkitTypeError,
        "floating-point",
    ),
    (
        lambda: skt.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1, 2])),
        SoftmaxkitValueError,
        "shape",
    ),
    (
        lambda: skt.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 3])),
        SoftmaxkitValueError,
        "out of range",
    ),
    (
        lambda: skt.cross_entropy(torch.zeros(2, 3), torch.tensor([0, -1])),
        SoftmaxkitValueError,
        "out of range",
    ),
    (
        lambda: skt.cross_entropy(
            torch.zeros(2, 3), torch.tensor([[0.5, 0.6, -0.1], [1.0, 0.0, 0.0]])
        ),
        SoftmaxkitValueError,
        "negative",
    ),
    (
        lambda: skt.cross_entropy(torch.zeros(2, 3), torch.zeros(2, 2)),
        SoftmaxkitValueError,
        "probabilities",
    ),
    (
        lambda: skt.cross_entropy(torch.zeros(2, 3), torch.tensor([True, False])),
        SoftmaxkitTypeError,
        "integer",
    ),
    (
        lambda: skt.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1], device="meta")),
        SoftmaxkitValueError,
        "device",
    ),
    (
        lambda: skt.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), torch.ones(4)),
        SoftmaxkitValueError,
        "weight",
    ),
    (
        lambda: skt.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), reduction="avg"),
        SoftmaxkitValueError,
        "reduction",
    ),
    (
        lambda: skt.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), label_smoothing=1.5),
        SoftmaxkitValueError,
        "label_smoothing",
    ),
    (
        lambda: skt.cross_entropy(torch.zeros(()), torch.tensor(0)),
        SoftmaxkitValueError,
        "class dimension",
    ),
    (lambda: skt.nll_loss(torch.zeros(2, 3), torch.zeros(2, 3)), SoftmaxkitTypeError, "integer"),
    (
        lambda: skt.nll_loss(torch.zeros(2, 3), torch.tensor([5, 0])),
        SoftmaxkitValueError,
        "out of range",
    ),
    (
        lambda: skt.binary_cross_entropy_with_logits(torch.zeros(2, 3), torch.zeros(3)),
        SoftmaxkitValueError,
        "shape",
    ),
    (
        lambda: skt.binary_cross_entropy_with_logits(torch.zeros(2), torch.tensor([0.5, 1.5])),
        SoftmaxkitValueError,
        "[0, 1]",
    ),
    (
        lambda: skt.binary_cross_entropy_with_logits(
            torch.zeros(2, 3), torch.zeros(2, 3), pos_weight=torch.ones(2)
        ),
        SoftmaxkitValueError,
        "pos_weight",
    ),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_input_raises_a_clear_softmaxkit_error(case):
    fn, exc, words = BAD[case]
    with pytest.raises(exc, match=words.replace("[", r"\[").replace("]", r"\]")) as info:
        fn()
    assert isinstance(info.value, SoftmaxkitError)


def test_weight_gradient_is_refused_clearly():
    w = torch.ones(3, requires_grad=True)
    with pytest.raises(SoftmaxkitValueError, match="weight"):
        skt.cross_entropy(torch.zeros(2, 3, requires_grad=True), torch.tensor([0, 1]), w)


# ------------------------------------------------------------------ packaging, docs


def test_import_softmaxkit_does_not_import_torch():
    code = "import sys, softmaxkit; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "module",
    [
        "softmaxkit.torch",
        "softmaxkit.torch._functional",
        "softmaxkit.torch._modules",
        "softmaxkit.torch._linear_ce",
    ],
)
def test_docstring_examples(module):
    mod = importlib.import_module(module)
    res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0
    assert res.failed == 0


def test_public_surface():
    defined = {
        n
        for n, v in vars(skt).items()
        if not n.startswith("_") and getattr(v, "__module__", "").startswith("softmaxkit.torch")
    }
    assert defined == set(skt.__all__)
    for name in skt.__all__:
        assert getattr(skt, name).__doc__


def test_training_example_curves_agree(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(root, "examples", "torch_train.py")
    out = subprocess.run(
        [sys.executable, script, "--epochs", "4"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "the curves agree" in out.stdout


@pytest.mark.parametrize(
    "case", ["smoothing", "weight", "int32 target", "plain", "bce", "bce weight"]
)
def test_gradients_of_a_retained_graph_are_the_callers_own(case):
    """torch.autograd.grad twice through a retained graph: two tensors with the same
    values, neither sharing memory with the other or with the graph (the forward's
    gradient was returned itself each time, so g1.mul_() changed g2 and broke the
    next backward)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 5, generator=g, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3])
    y = torch.rand(4, 5, generator=g)
    calls = {
        "smoothing": lambda: skt.cross_entropy(x, t, label_smoothing=0.1),
        "weight": lambda: skt.cross_entropy(x, t, weight=torch.rand(5, generator=g)),
        "int32 target": lambda: skt.cross_entropy(x, t.int()),
        "plain": lambda: skt.cross_entropy(x, t),
        "bce": lambda: skt.binary_cross_entropy_with_logits(x, y),
        "bce weight": lambda: skt.binary_cross_entropy_with_logits(x, y, weight=y),
    }
    loss = calls[case]()
    (g1,) = torch.autograd.grad(loss, x, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, x, retain_graph=True)
    assert g1.data_ptr() != g2.data_ptr()
    assert torch.equal(g1, g2)
    g1.mul_(0.5)
    (g3,) = torch.autograd.grad(loss, x)
    assert torch.equal(g3, g2)


# torch.func.hessian's forward mode scripts a helper inside torch itself
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torch_func_transforms_compose_with_every_op():
    """vmap, grad, jacrev and hessian over the six ops, against torch's own (they raised:
    the C core cannot read a transform's wrapper tensors, and the autograd Functions are
    not written for functorch; such calls now run the public ops in torch operations)."""
    from torch.func import grad, hessian, jacrev, vmap

    F = torch.nn.functional
    x = _randn(4, 6, dtype=torch.float64)
    t = torch.tensor([0, 5, 2, 3])
    y = torch.rand(4, 6, generator=_gen(2), dtype=torch.float64)
    w = torch.rand(6, generator=_gen(3), dtype=torch.float64)
    close = functools.partial(torch.testing.assert_close, rtol=1e-13, atol=1e-15)
    close(vmap(lambda r: skt.softmax(r, -1))(x), torch.softmax(x, -1))
    close(vmap(lambda r: skt.log_softmax(r, 0))(x), torch.log_softmax(x, -1))
    close(vmap(lambda r: skt.logsumexp(r, 0))(x), torch.logsumexp(x, -1))
    close(vmap(skt.cross_entropy)(x, t), F.cross_entropy(x, t, reduction="none"))
    for kw in ({}, {"weight": w, "label_smoothing": 0.1}):
        close(
            grad(lambda a, kw=kw: skt.cross_entropy(a, t, **kw))(x),
            grad(lambda a, kw=kw: F.cross_entropy(a, t, **kw))(x),
        )
    close(
        grad(lambda a: skt.nll_loss(torch.log_softmax(a, 1), t, w))(x),
        grad(lambda a: F.nll_loss(torch.log_softmax(a, 1), t, w))(x),
    )
    close(
        grad(lambda a: skt.binary_cross_entropy_with_logits(a, y, pos_weight=w))(x),
        grad(lambda a: F.binary_cross_entropy_with_logits(a, y, pos_weight=w))(x),
    )
    close(
        jacrev(lambda r: skt.log_softmax(r, -1))(x[0]),
        jacrev(lambda r: torch.log_softmax(r, -1))(x[0]),
    )
    close(
        hessian(lambda r: skt.logsumexp(r, 0))(x[0]), hessian(lambda r: torch.logsumexp(r, 0))(x[0])
    )
    close(grad(lambda a: vmap(lambda r: skt.logsumexp(r, 0))(a).sum())(x), torch.softmax(x, -1))


def test_result_dtype_follows_torchs_promotion_of_the_target():
    """A float64 target with float32 logits gives a float64 loss, as in torch (BCE and
    class-probability cross-entropy; the logits' dtype was kept); weights do not promote."""
    F = torch.nn.functional
    x = _randn(3, 4, dtype=torch.float32).requires_grad_()
    y64 = torch.rand(3, 4, generator=_gen(7), dtype=torch.float64)
    p64 = torch.softmax(_randn(3, 4, dtype=torch.float64, seed=8), 1)
    pairs = [
        (lambda f: f.binary_cross_entropy_with_logits(x, y64)),
        (lambda f: f.binary_cross_entropy_with_logits(x.half(), y64.float())),
        (lambda f: f.binary_cross_entropy_with_logits(x, y64.float(), weight=y64[0])),
        (lambda f: f.cross_entropy(x, p64)),
        (lambda f: f.cross_entropy(x.half(), p64.float(), reduction="none")),
    ]
    for k, call in enumerate(pairs):
        ours, theirs = call(skt), call(F)
        assert ours.dtype == theirs.dtype
        tol = 2e-3 if k in (1, 4) else 1e-6  # torch rounds the half logits' terms in half
        torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol)
        (g_ours,) = torch.autograd.grad(ours.sum(), x)
        (g_theirs,) = torch.autograd.grad(theirs.sum(), x)
        assert g_ours.dtype == g_theirs.dtype == torch.float32
        torch.testing.assert_close(g_ours, g_theirs, rtol=tol * 10, atol=tol)
