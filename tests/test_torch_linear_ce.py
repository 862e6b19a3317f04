"""softmaxkit.torch.linear_cross_entropy against linear-then-cross-entropy."""

from __future__ import annotations

import math

import pytest

from tests.conftest import active_backends

if "torch" not in active_backends():
    pytest.skip("the torch backend is not requested or not installed", allow_module_level=True)

import torch
import torch.nn.functional as F

import softmaxkit.torch as skt
from softmaxkit import SoftmaxkitError, SoftmaxkitTypeError, SoftmaxkitValueError
from softmaxkit.torch import _linear_ce

# With the small tiles below: several token tiles, three vocabulary tiles of two
# statistics blocks each, with ragged ends.
N, D, V = 300, 16, 2 * 4096 + 1000
# the library's own tile limits (the fixture below shrinks them)
VOCAB_TILE, BLOCK_MAX = _linear_ce.VOCAB_TILE, _linear_ce.BLOCK_MAX


@pytest.fixture(autouse=True)
def small_tiles(monkeypatch):
    """Tiles of 4096 classes in blocks of 2048, so that small problems span several."""
    monkeypatch.setattr(_linear_ce, "VOCAB_TILE", 4096)
    monkeypatch.setattr(_linear_ce, "BLOCK_MAX", 2048)


@pytest.fixture(autouse=True, params=["torch", "numpy"])
def gemm(request, monkeypatch):
    """Every test runs with each library doing the matrix products of CPU tensors."""
    monkeypatch.setattr(_linear_ce, "GEMM", request.param)
    return request.param


def test_the_small_tiles_span_blocks_and_tiles():
    for dtype in (torch.float32, torch.float64):
        T, Vt, Vs = _linear_ce.tiles(N, D, V, dtype)
        assert T < N and Vt == 4096 and Vs == 2048


def test_the_default_gemm_is_torchs_and_numpys_is_cpu_only(monkeypatch):
    # the default keeps NumPy's BLAS (and its per-thread buffers) out of torch processes
    monkeypatch.setattr(_linear_ce, "GEMM", "auto")
    assert _linear_ce._gemm_for(torch.device("cpu"), 8, torch.float32).name == "torch"
    monkeypatch.setattr(_linear_ce, "GEMM", "numpy")
    assert _linear_ce._gemm_for(torch.device("cpu"), 8, torch.float32).name == "numpy"
    assert _linear_ce._gemm_for(torch.device("meta"), 8, torch.float32).name == "torch"


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _problem(dtype=torch.float64, bias=True, n=N, v=V, d=D):
    h = torch.randn(n, d, generator=_gen(0), dtype=dtype)
    W = torch.randn(v, d, generator=_gen(1), dtype=dtype) * 0.7
    b = torch.randn(v, generator=_gen(2), dtype=dtype) if bias else None
    t = torch.randint(0, v, (n,), generator=_gen(3))
    t[::9] = -100
    # a few confident tokens: their target logit dominates the row
    h[1] = W[t[1]] * 40
    return h, W, b, t


def _naive(h, W, b, t, *, z_loss=0.0, **kw):
    logits = F.linear(h, W, b)
    loss = F.cross_entropy(logits, t, **kw)
    if z_loss:
        counted = t != kw.get("ignore_index", -100)
        wt = counted.to(h.dtype)
        if kw.get("weight") is not None:
            wt = wt * kw["weight"][torch.where(counted, t, 0)]
        z = z_loss * torch.logsumexp(logits, 1) ** 2 * wt
        red = kw.get("reduction", "mean")
        loss = loss + (z if red == "none" else z.sum() / (wt.sum() if red == "mean" else 1))
    return loss


OPTIONS = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"label_smoothing": 0.1},
    {"z_loss": 1e-3},
    {"weight": True, "label_smoothing": 0.05, "z_loss": 1e-3},
    {"weight": True, "reduction": "none"},
]


@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("bias", [True, False])
def test_matches_linear_then_cross_entropy_float64(opts, bias):
    h, W, b, t = _problem(bias=bias)
    opts = dict(opts)
    if opts.get("weight"):
        opts["weight"] = torch.rand(V, generator=_gen(5), dtype=torch.float64) + 0.5
    params = [p.requires_grad_() for p in (h, W, b) if p is not None]
    ours = skt.linear_cross_entropy(h, W, t, linear_bias=b, **opts)
    ref = _naive(h, W, b, t, **opts)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    g = torch.rand(ref.shape, generator=_gen(6), dtype=torch.float64)
    for a, r in zip(
        torch.autograd.grad(ours, params, g), torch.autograd.grad(ref, params, g), strict=True
    ):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


def test_matches_naive_float32_within_float32_tolerance():
    h, W, b, t = _problem(dtype=torch.float32)
    params = [p.requires_grad_() for p in (h, W, b)]
    ours = skt.linear_cross_entropy(h, W, t, linear_bias=b)
    ref = _naive(h, W, b, t)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    for a, r in zip(
        torch.autograd.grad(ours, params), torch.autograd.grad(ref, params), strict=True
    ):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-6)


def test_chunk_size_changes_memory_not_results():
    h, W, b, t = _problem(dtype=torch.float32)
    outs = []
    for chunk in (None, 1, _linear_ce.VOCAB_TILE + 5, 10**9):
        hh, WW, bb = (p.detach().clone().requires_grad_() for p in (h, W, b))
        out = skt.linear_cross_entropy(
            hh,
            WW,
            t,
            linear_bias=bb,
            chunk_size=chunk,
            label_smoothing=0.1,
            z_loss=1e-4,
            return_lse=True,
            return_entropy=True,
            topk=3,
        )
        out.loss.backward()
        outs.append(
            (
                out.loss,
                out.lse,
                out.entropy,
                out.topk_logprobs,
                out.topk_indices,
                hh.grad,
                WW.grad,
                bb.grad,
            )
        )
    for other in outs[1:]:
        for a, c in zip(outs[0], other, strict=True):
            assert torch.equal(a, c)


def test_reduction_none_backward_with_per_token_gradients():
    h, W, b, t = _problem()
    params = [p.requires_grad_() for p in (h, W, b)]
    ours = skt.linear_cross_entropy(h, W, t, linear_bias=b, reduction="none", label_smoothing=0.1)
    ref = _naive(h, W, b, t, reduction="none", label_smoothing=0.1)
    g = torch.randn(N, generator=_gen(8), dtype=torch.float64)
    for a, r in zip(
        torch.autograd.grad(ours, params, g), torch.autograd.grad(ref, params, g), strict=True
    ):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


def test_extra_outputs_from_the_same_pass():
    h, W, b, t = _problem()
    out = skt.linear_cross_entropy(
        h, W, t, linear_bias=b, return_lse=True, return_entropy=True, topk=5, reduction="none"
    )
    logits = F.linear(h, W, b)
    lp = torch.log_softmax(logits, 1)
    torch.testing.assert_close(out.lse, torch.logsumexp(logits, 1), rtol=1e-13, atol=1e-13)
    ent = -(lp.exp() * lp).sum(1)
    torch.testing.assert_close(out.entropy, ent, rtol=1e-9, atol=1e-12)
    vals, idx = lp.topk(5, dim=1)
    torch.testing.assert_close(out.topk_logprobs, vals, rtol=1e-12, atol=1e-12)
    assert torch.equal(out.topk_indices, idx)
    torch.testing.assert_close(out.loss, F.cross_entropy(logits, t, reduction="none"))


def test_batched_input_and_ignored_everything():
    h = torch.randn(2, 5, 8, generator=_gen(0), dtype=torch.float64, requires_grad=True)
    W = torch.randn(30, 8, generator=_gen(1), dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 30, (2, 5), generator=_gen(2))
    ours = skt.linear_cross_entropy(h, W, t, reduction="none")
    assert ours.shape == (2, 5)
    torch.testing.assert_close(
        ours, F.cross_entropy((h @ W.T).transpose(1, 2), t, reduction="none")
    )
    loss = skt.linear_cross_entropy(h, W, torch.full((2, 5), -100))
    assert loss.item() == 0.0  # torch: nan
    gh, gW = torch.autograd.grad(loss, (h, W))
    assert not gh.any()
    assert not gW.any()


def test_confident_token_keeps_a_positive_loss():
    W = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    h = torch.tensor([[40.0, 0.0]])
    loss = skt.linear_cross_entropy(h, W, torch.tensor([0]))
    assert loss.item() == pytest.approx(4.248354e-18, rel=1e-6)
    assert F.cross_entropy(h @ W.T, torch.tensor([0])).item() == 0.0


def test_minus_inf_bias_masks_classes():
    h, W, _, t = _problem(v=50, n=20)
    b = torch.zeros(50, dtype=torch.float64)
    b[40:] = -math.inf
    t = torch.where(t >= 40, t % 40, t)
    W.requires_grad_()
    loss = skt.linear_cross_entropy(h, W, t, linear_bias=b)
    ref = _naive(h, W, b, t)
    torch.testing.assert_close(loss, ref)
    (gW,) = torch.autograd.grad(loss, W)
    assert torch.isfinite(gW).all()
    assert not gW[40:].any()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_are_no_less_accurate_than_torch(dtype):
    h, W, b, t = _problem(dtype=torch.float64, n=64, v=3000, d=32)
    h[1] = h[1] / 40  # keep logits in float16 range
    exact_params = [p.clone().requires_grad_() for p in (h, W, b)]
    exact = _naive(*exact_params, t)
    exact_grads = torch.autograd.grad(exact, exact_params)

    def err(fn):
        params = [p.to(dtype).requires_grad_() for p in (h, W, b)]
        loss = fn(*params)
        grads = torch.autograd.grad(loss, params)
        e_loss = abs(loss.double().item() - exact.item())
        e_grads = [
            ((g.double() - r).norm() / r.norm()).item()
            for g, r in zip(grads, exact_grads, strict=True)
        ]
        return e_loss, e_grads

    ours_loss, ours_grads = err(
        lambda hh, WW, bb: skt.linear_cross_entropy(hh, WW, t, linear_bias=bb)
    )
    torch_loss, torch_grads = err(lambda hh, WW, bb: F.cross_entropy(F.linear(hh, WW, bb), t))
    assert ours_loss <= torch_loss + 1e-6
    for o, r in zip(ours_grads, torch_grads, strict=True):
        assert o <= r * 1.01 + 1e-6


def test_inputs_are_not_modified():
    h, W, b, t = _problem(dtype=torch.float32)
    keep = [p.clone() for p in (h, W, b, t)]
    params = [p.requires_grad_() for p in (h, W, b)]
    skt.linear_cross_entropy(h, W, t, linear_bias=b, label_smoothing=0.1).backward()
    for p, k in zip((h, W, b, t), keep, strict=True):
        assert torch.equal(p.detach(), k)
    assert all(p.grad is not None for p in params)


def test_double_backward_is_refused_clearly():
    h, W, b, t = _problem(n=8, v=20)
    h.requires_grad_()
    loss = skt.linear_cross_entropy(h, W, t)
    with pytest.raises(SoftmaxkitValueError, match="double backward"):
        torch.autograd.grad(loss, h, create_graph=True)


def test_second_backward_through_a_retained_graph_recomputes():
    h, W, b, t = _problem(n=40, v=50)
    W.requires_grad_()
    loss = skt.linear_cross_entropy(h, W, t, label_smoothing=0.1) * 3.0
    (g1,) = torch.autograd.grad(loss, W, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, W)
    torch.testing.assert_close(g1, g2, rtol=1e-13, atol=1e-15)


def test_gradcheck():
    h, W, b, t = _problem(n=6, v=7, d=3)
    params = tuple(p.requires_grad_() for p in (h, W, b))
    assert torch.autograd.gradcheck(
        lambda hh, WW, bb: skt.linear_cross_entropy(
            hh, WW, t, linear_bias=bb, label_smoothing=0.1, z_loss=0.01
        ),
        params,
    )
    assert torch.autograd.gradcheck(
        lambda hh, WW, bb: skt.linear_cross_entropy(hh, WW, t, linear_bias=bb, reduction="none"),
        params,
    )


BAD = [
    (
        lambda h, W, t: skt.linear_cross_entropy(h, W[:, :3], t),
        SoftmaxkitValueError,
        "linear_weight",
    ),
    (lambda h, W, t: skt.linear_cross_entropy(h, W.float(), t), SoftmaxkitTypeError, "dtype"),
    (lambda h, W, t: skt.linear_cross_entropy(h, W, t[:3]), SoftmaxkitValueError, "shape"),
    (
        lambda h, W, t: skt.linear_cross_entropy(h, W, t.double()),
        SoftmaxkitValueError,
        "probability",
    ),
    (lambda h, W, t: skt.linear_cross_entropy(h, W, t + 100), SoftmaxkitValueError, "out of range"),
    (
        lambda h, W, t: skt.linear_cross_entropy(h, W, t, chunk_size=0),
        SoftmaxkitValueError,
        "chunk_size",
    ),
    (lambda h, W, t: skt.linear_cross_entropy(h, W, t, topk=-1), SoftmaxkitValueError, "topk"),
    (
        lambda h, W, t: skt.linear_cross_entropy(
            h, W, t, linear_bias=torch.zeros(3, dtype=torch.float64)
        ),
        SoftmaxkitValueError,
        "linear_bias",
    ),
    (
        lambda h, W, t: skt.linear_cross_entropy(h, W, t, weight=torch.ones(3)),
        SoftmaxkitValueError,
        "weight",
    ),
    (lambda h, W, t: skt.linear_cross_entropy(h, W, t.to("meta")), SoftmaxkitValueError, "device"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_input(case):
    h, W, _, t = _problem(n=8, v=20)
    t = t.clamp(min=0)
    fn, exc, words = BAD[case]
    with pytest.raises(exc, match=words) as info:
        fn(h, W, t)
    assert isinstance(info.value, SoftmaxkitError)


def test_tied_maxima_within_and_across_tiles():
    h, W, b, t = _problem(bias=False, n=40)
    W[3] = W[3] / W[3].norm() * 6  # longer than every other row
    W[7] = W[3]
    W[_linear_ce.VOCAB_TILE + 2] = W[3]  # the same logit in the next tile
    h[0] = W[3] * 30  # token 0: three tied maxima
    h[2] = 0.0  # token 2: every logit equal
    t[0], t[2] = 3, 11
    W.requires_grad_()
    out = skt.linear_cross_entropy(h, W, t, reduction="none", return_lse=True)
    ref = _naive(h, W, None, t, reduction="none")
    torch.testing.assert_close(out.loss, ref, rtol=1e-13, atol=1e-13)
    assert out.loss[0].item() == pytest.approx(math.log(3), rel=1e-12)
    assert out.lse[2].item() == pytest.approx(math.log(V), rel=1e-14)
    g = torch.autograd.grad(out.loss.sum(), W)[0]
    gr = torch.autograd.grad(ref.sum(), W)[0]
    torch.testing.assert_close(g, gr, rtol=1e-10, atol=1e-12)


def test_half_weights_are_widened_in_blocks_without_changing_results(monkeypatch):
    h, W, b, t = _problem(dtype=torch.bfloat16, n=40)
    monkeypatch.setattr(_linear_ce, "WIDEN_ELEMENTS", 1000 * D)  # 1000-row blocks
    outs = []
    for chunk in (None, 1):
        hh, WW = h.clone().requires_grad_(), W.clone().requires_grad_()
        loss = skt.linear_cross_entropy(hh, WW, t, linear_bias=b, chunk_size=chunk)
        loss.backward()
        outs.append((loss, hh.grad, WW.grad))
    for a, c in zip(*outs, strict=True):
        assert torch.equal(a, c)
    ref = _naive(h.float(), W.float(), b.float(), t)
    assert abs(outs[0][0].float().item() - ref.item()) <= 0.0625 / 2  # half a bfloat16 ulp at 12


def test_torch_thread_count_is_restored():
    before = torch.get_num_threads()
    h, W, b, t = _problem(dtype=torch.float32, n=40)
    skt.linear_cross_entropy(h.requires_grad_(), W, t, linear_bias=b).backward()
    assert torch.get_num_threads() == before


def test_negative_and_zero_class_weights_follow_torch():
    g = torch.Generator().manual_seed(11)
    h = torch.randn(40, 8, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(300, 8, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 300, (40,), generator=g)
    w = torch.randn(300, generator=g, dtype=torch.float64)
    w[:50] = 0.0
    for red in ("mean", "sum", "none"):
        got = skt.linear_cross_entropy(h, W, t, weight=w, reduction=red)
        want = torch.nn.functional.cross_entropy(h @ W.T, t, weight=w, reduction=red)
        torch.testing.assert_close(got, want)
        for a, b in zip(
            torch.autograd.grad(got.sum(), (h, W)),
            torch.autograd.grad(want.sum(), (h, W)),
            strict=True,
        ):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "shape", [(2048, 512, 32768), (4096, 1024, 65536), (8, 64, 50257), (100_000, 4096, 256_000)]
)
def test_tiles_adapt_and_bound_the_held_logits(shape, monkeypatch):
    monkeypatch.setattr(_linear_ce, "VOCAB_TILE", VOCAB_TILE)
    monkeypatch.setattr(_linear_ce, "BLOCK_MAX", BLOCK_MAX)
    N, D, V = shape
    T, Vt, Vs = _linear_ce.tiles(N, D, V, torch.float32)
    held = T * V * 4
    budget = min(_linear_ce.HOLD_MAX_BYTES, max(_linear_ce.HOLD_MIN_BYTES, (N + V) * D))
    assert (1 <= T <= N and T % 16 == 0) or T == N
    t_min = _linear_ce.TOKENS_MIN
    assert held <= budget or T == 16 or (t_min >= T and held <= _linear_ce.HOLD_MAX_BYTES)
    assert min(N, t_min) <= T or (t_min * V * 4 > _linear_ce.HOLD_MAX_BYTES)
    assert 512 <= Vt <= _linear_ce.VOCAB_TILE or Vt == V
    # statistics blocks stay near 2 MiB; a tile is a whole number of them (or all of V)
    assert (512 <= Vs <= 8192 and Vs % 256 == 0) or Vs == V
    assert Vt % Vs == 0 or Vt == V
    assert T * Vt * 4 <= max(_linear_ce.GEMM_BYTES, T * Vs * 4)
