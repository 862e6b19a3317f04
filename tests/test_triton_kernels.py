"""The Triton kernels, run by Triton's interpreter on CPU tensors, against the oracle.

``TRITON_INTERPRET=1`` is set before the engine is imported, so every kernel of
``softmaxkit._triton`` runs in NumPy, one program after another (about 10-60 ms a
program here): the shapes are small and the block sizes are test parameters
that force the two-pass (long-row) code on short rows.

What is checked:

* accurate mode is bitwise equal to the array-agnostic oracle (float64 inside,
  rounded once, on the same torch tensors) on random and adversarial rows, and
  within 0.5 ulp of a long-double reference: the float64 result of each
  element is within a few float64 ulps of the exact value, so its rounding to
  float32 is correct except within 2**-29 ulp of a tie, where we allow 1e-6 ulp;
* the contract's special rows (all ``-inf``, ``+inf``, NaN, empty rows, the
  dominant-logit tail) take the same values as on every other engine;
* ``softmaxkit.torch`` with ``SOFTMAXKIT_ENGINE=triton`` runs the kernels in
  its forward functions, on the eager route (``torch.autograd.Function``) and
  behind the ``torch.library`` operators alike: values and gradients bitwise
  equal between the routes and to the oracle; float64 and probability targets
  fall back to the C core;
* fast mode (float32 inside) stays within the interpreter's float32 error.
  The GPU's fast mode is less accurate than its interpretation (``ex2.approx``,
  ``div.full``): see ``test_triton_compile.py`` and the README.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

# the interpreter is chosen when a kernel is defined, also for triton.language's own
# jitted functions (tl.sum, tl.max): set it before triton is first imported
os.environ.setdefault("TRITON_INTERPRET", "1")

torch = pytest.importorskip("torch", reason="torch not installed: pip install softmaxkit[triton]")
triton = pytest.importorskip(
    "triton", reason="triton not installed: pip install softmaxkit[triton]"
)

import softmaxkit as sk  # noqa: E402
import softmaxkit.torch as skt  # noqa: E402
from softmaxkit._errors import SoftmaxkitValueError  # noqa: E402
from softmaxkit._triton import _launch as E  # noqa: E402
from softmaxkit.torch import _engine as torch_engine  # noqa: E402
from softmaxkit.torch import _ops  # noqa: E402
from softmaxkit.torch._engine import engine_for  # noqa: E402
from tests import _reference as R  # noqa: E402
from tests._helpers import f32  # noqa: E402
from tests._triton_data import SPECIAL, ce_inputs  # noqa: E402

#: False when triton was imported earlier in this process without the interpreter
#: (its own jitted functions are then compiled-only): the file then reruns itself in
#: a fresh process instead.
FRESH = E.INTERPRETED and type(triton.language.standard.sum).__name__ == "InterpretedFunction"


@pytest.fixture(autouse=True)
def _interpreted(request: pytest.FixtureRequest) -> None:
    if not FRESH and request.node.name != "test_kernels_in_a_fresh_process":
        pytest.skip("triton was imported before TRITON_INTERPRET=1; run in a fresh process")


def test_kernels_in_a_fresh_process() -> None:
    if FRESH:
        return  # the tests below run in this process
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


def test_gpu_checks_dry_run_in_the_interpreter() -> None:
    # tests/test_gpu.py runs on a CUDA machine; here its checks run on small CPU
    # tensors in the interpreter, so CI keeps them working between GPU sessions
    if not FRESH:
        return  # the fresh-process rerun of this file runs it
    env = {**os.environ, "TRITON_INTERPRET": "1", "SOFTMAXKIT_GPU_TEST_DEVICE": "cpu"}
    path = os.path.join(os.path.dirname(__file__), "test_gpu.py")
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert " passed" in res.stdout


INF, NAN = math.inf, math.nan

# rows of 6: every special case of the contract, plus ordinary rows around them


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equal, NaN equal to NaN (any payload), and +0 distinct from -0."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    an, bn = torch.isnan(a), torch.isnan(b)
    if not torch.equal(an, bn):
        return False
    fa = torch.where(an, 0.0, a).to(torch.float64)
    fb = torch.where(bn, 0.0, b).to(torch.float64)
    return torch.equal(fa, fb) and torch.equal(torch.signbit(fa), torch.signbit(fb))


def _oracle(op: str, x: torch.Tensor, axis: int | tuple[int, ...] = -1) -> torch.Tensor:
    """The array-agnostic implementation on the same torch tensor."""
    if op == "softmax":
        return sk.softmax(x, axis=axis)
    if op == "log_softmax":
        return sk.log_softmax(x, axis=axis)
    return sk.logsumexp(x, axis=axis)


def _engine(op: str, x: torch.Tensor, dims: list[int], **kw: object) -> torch.Tensor:
    if op == "logsumexp":
        out = E.logsumexp(x, dims, False, **kw)  # type: ignore[arg-type]
    else:
        out = getattr(E, op)(x, dims, **kw)
    assert out is not None
    return out


OPS = ("softmax", "log_softmax", "logsumexp")


@pytest.mark.parametrize("block", [None, 4], ids=["one_block", "two_pass"])
@pytest.mark.parametrize("op", OPS)
def test_special_rows_match_oracle(op: str, block: int | None) -> None:
    x = torch.tensor(SPECIAL, dtype=torch.float32)
    got = _engine(op, x, [1], block=block)
    assert _same(got, _oracle(op, x))


def test_special_values_of_the_contract() -> None:
    x = torch.tensor(SPECIAL[:5], dtype=torch.float32)
    p = _engine("softmax", x, [1])
    ls = _engine("log_softmax", x, [1])
    lse = _engine("logsumexp", x, [1])
    assert torch.equal(p[0], torch.zeros(6)) and torch.equal(ls[0], torch.full((6,), -INF))
    assert lse[0] == -INF
    assert p[1].tolist() == [0.5, 0.0, 0.5, 0.0, 0.0, 0.0] and lse[1] == INF
    assert ls[1, 0].item() == pytest.approx(-math.log(2)) and ls[1, 1] == -INF
    assert torch.isnan(p[2]).all() and torch.isnan(ls[3]).all() and torch.isnan(lse[2:4]).all()
    tail = 5 * math.exp(-40.0)  # log1p(5 e^-40) = 5 e^-40 to far below float32's ulp
    assert ls[4, 0].item() == f32(-tail) and lse[4].item() == f32(tail)


def test_empty_rows_and_batches() -> None:
    assert _engine("softmax", torch.empty(3, 0), [1]).shape == (3, 0)
    assert _engine("log_softmax", torch.empty(0, 5), [1]).shape == (0, 5)
    assert torch.equal(_engine("logsumexp", torch.empty(3, 0), [1]), torch.full((3,), -INF))
    assert _engine("logsumexp", torch.empty(0, 4), [1]).shape == (0,)
    one = torch.tensor([[2.5], [-INF], [INF]])
    assert _engine("softmax", one, [1]).flatten().tolist() == [1.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("rows", "n", "block"), [(6, 700, None), (3, 600, 256)], ids=["one_block", "two_pass"]
)
@pytest.mark.parametrize("op", OPS)
def test_random_rows_bitwise_and_half_ulp(op: str, rows: int, n: int, block: int | None) -> None:
    g = torch.Generator().manual_seed(rows * n)
    x = torch.randn(rows, n, generator=g) * torch.tensor([0.1, 8.0, 40.0] * 2)[:rows, None]
    x[0, :5] = x[0, 5]  # ties at a value that may be the maximum
    x[-1, 10:40] = -INF
    got = _engine(op, x, [1], block=block)
    assert _same(got, _oracle(op, x))
    ref = R.reference(x.numpy())
    exact = {"softmax": R.softmax_ref, "log_softmax": R.log_softmax_ref}.get(op, R.logsumexp_ref)
    err = R.ulp_error(got.numpy(), exact(ref), np.float32)
    assert err.max() <= 0.5 + 1e-6, err.max()


def test_reduced_dims_are_moved_last() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 5, generator=g) * 5
    for dims in ([0], [0, 2], [1]):
        got = _engine("softmax", x, dims)
        assert _same(got, _oracle("softmax", x, tuple(dims)))
    keep = E.logsumexp(x, [0, 2], True)
    assert keep is not None
    assert _same(keep, sk.logsumexp(x, axis=(0, 2), keepdims=True))


def _round_once(r: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """float64 -> ``dtype`` rounded once (torch's own cast goes through float32 and
    rounds twice): float32 rounded to odd, then to nearest even."""
    f = r.to(torch.float32)
    sticky = (torch.isfinite(f) & (f.to(torch.float64) != r)).to(torch.int32)
    odd = (f.view(torch.int32) | sticky).view(torch.float32)
    return odd.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_rounds_once(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(17)
    rand = torch.randn(4, 6, generator=g) * 6
    x = torch.cat([torch.tensor(SPECIAL), rand]).to(dtype)
    for op in OPS:
        got = _engine(op, x, [1])
        assert got.dtype == dtype
        # the oracle on the exact float64 values of the inputs, rounded once
        assert _same(got, _round_once(_oracle(op, x.to(torch.float64)), dtype))
    t = torch.tensor([0, 0, 3, 4, 0, 1, 2, 5, 0, 3, 1, 4, 2, 5, 0])
    res = E.cross_entropy(x, t, None, 1, -100, "none", 0.1, 0.0, False, True)
    assert res is not None
    ref_loss, ref_grad = sk.cross_entropy(
        x.to(torch.float64), t, axis=1, label_smoothing=0.1, reduction="none", return_grad=True
    )
    assert _same(res[0], _round_once(ref_loss, dtype))
    assert _same(res[1], _round_once(ref_grad, dtype))
    # a value between two bfloat16 numbers, a hair above their midpoint: float32
    # rounds it onto the midpoint, and a second rounding would go to the even one
    v = torch.tensor([[1.0 + 2.0**-8 + 2.0**-30]], dtype=torch.float64)
    assert _round_once(v, torch.bfloat16).item() == 1.0078125
    assert v.to(torch.bfloat16).item() == 1.0  # torch's cast rounds twice


def test_float64_is_left_to_the_torch_path() -> None:
    x = torch.zeros(2, 3, dtype=torch.float64)
    assert E.softmax(x, [1]) is None and not E.supports(x)
    assert E.cross_entropy(x, torch.zeros(2, dtype=torch.long), None, 1, -100, "mean",
                           0.0, 0.0, False, True) is None  # fmt: skip


@pytest.mark.parametrize("op", OPS)
def test_fast_mode_within_float32_error(op: str) -> None:
    # float32 inside: each exp within ~2.5 ulp (NumPy's float32 exp under the
    # interpreter) and the sums within n eps; the GPU's approximate exp is worse
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 300, generator=g) * 6
    got = _engine(op, x, [1], precision="fast")
    ref = R.reference(x.numpy())
    exact = {"softmax": R.softmax_ref, "log_softmax": R.log_softmax_ref}.get(op, R.logsumexp_ref)
    err = R.ulp_error(got.numpy(), exact(ref), np.float32)
    # log_softmax of entries far below the maximum keeps (x - a) exact and errs in L only
    assert err.max() <= 64.0, err.max()
    special = torch.tensor(SPECIAL[:5], dtype=torch.float32)
    fast = _engine(op, special, [1], precision="fast")
    acc = _engine(op, special, [1])
    assert torch.equal(torch.isnan(fast), torch.isnan(acc))
    assert torch.equal(torch.isinf(fast), torch.isinf(acc))


def test_unknown_precision_raises() -> None:
    with pytest.raises(SoftmaxkitValueError, match="precision"):
        E.softmax(torch.zeros(2, 2), [1], precision="exact")


# ------------------------------------------------------------------ cross-entropy

CE_OPTS = [
    {},
    {"weight": True, "label_smoothing": 0.1, "z_loss": 1e-3},
]


@pytest.fixture(params=["short", "long"], ids=["short_batch", "long_batch"])
def batch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways the launcher counts and reduces: small kernels, or torch operations."""
    if request.param == "long":
        monkeypatch.setattr(E, "CE_SHORT_BATCH", 0)
    return str(request.param)


@pytest.mark.parametrize("block", [None, 16], ids=["one_block", "two_pass"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", CE_OPTS, ids=["plain", "weight_smooth_z"])
def test_cross_entropy_loss_and_grad_match_oracle(
    opts: dict[str, object], reduction: str, block: int | None, batch: str
) -> None:
    x, t, w = ce_inputs(40, 14)
    weight = w if opts.get("weight") else None
    eps = float(opts.get("label_smoothing", 0.0))  # type: ignore[arg-type]
    z = float(opts.get("z_loss", 0.0))  # type: ignore[arg-type]
    res = E.cross_entropy(x, t, weight, 1, -100, reduction, eps, z, False, True, block=block)
    assert res is not None
    loss, grad = res
    ref_loss, ref_grad = sk.cross_entropy(
        x, t, axis=1, weight=weight, ignore_index=-100, label_smoothing=eps, z_loss=z,
        reduction=reduction, return_grad=True,
    )  # fmt: skip
    assert _same(loss, ref_loss)
    assert _same(grad, ref_grad)


def test_cross_entropy_mean_skips_rows_of_minus_inf(batch: str) -> None:
    # the all -inf row is not counted: the mean's denominator drops and the
    # gradient is rescaled (the launcher's second pass)
    x = torch.tensor([[-INF, -INF, -INF], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    t = torch.tensor([1, 2, 0])
    res = E.cross_entropy(x, t, None, 1, -100, "mean", 0.0, 0.0, False, True)
    assert res is not None
    ref_loss, ref_grad = sk.cross_entropy(x, t, axis=1, return_grad=True)
    assert _same(res[0], ref_loss) and _same(res[1], ref_grad)
    assert torch.equal(res[1][0], torch.zeros(3))
    everything_ignored = E.cross_entropy(x, torch.full((3,), -100), None, 1, -100, "mean",
                                         0.0, 0.0, False, True)  # fmt: skip
    assert everything_ignored is not None
    assert everything_ignored[0].item() == 0.0 and not everything_ignored[1].any()


def test_cross_entropy_index_out_of_range_is_flagged(batch: str) -> None:
    x = torch.zeros(3, 4)
    for t in ([0, 4, 1], [0, -1, 1]):
        with pytest.raises(IndexError):
            E.cross_entropy(x, torch.tensor(t), None, 1, -100, "mean", 0.0, 0.0, False, True)
        with pytest.raises(IndexError):  # a clamped weight lookup before the kernel
            E.cross_entropy(x, torch.tensor(t), torch.ones(4), 1, -100, "sum", 0.1, 0.0,
                            False, False)  # fmt: skip
    res = E.cross_entropy(x, torch.tensor([0, -100, 3]), None, 1, -100, "mean", 0.0, 0.0,
                          False, True)  # fmt: skip
    assert res is not None and res[0].item() == pytest.approx(math.log(4))


def test_cross_entropy_tiny_loss_keeps_its_digits() -> None:
    res = E.cross_entropy(torch.tensor([[0.0, -40.0]]), torch.tensor([0]), None, 1, -100,
                          "sum", 0.0, 0.0, False, True)  # fmt: skip
    assert res is not None
    assert res[0].item() == f32(4.248354255291589e-18)
    assert res[1][0, 0].item() == f32(-4.248354255291589e-18)


# ------------------------------------------------------------------------- BCE


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("weights", [False, True])
def test_bce_loss_and_grad_match_oracle(weights: bool, reduction: str) -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(30, 40, generator=g) * 20
    x[0, :6] = torch.tensor([INF, -INF, NAN, -40.0, 40.0, 0.0])
    y = torch.rand(30, 40, generator=g)
    y[0, :6] = torch.tensor([1.0, 0.0, 0.5, 0.0, 1.0, 0.5])
    y[1, :3] = torch.tensor([0.0, 1.0, NAN])
    w = torch.rand(30, 40, generator=g) if weights else None
    pw = torch.rand(40, generator=g) * 3 if weights else None
    res = E.bce_with_logits(x, y, w, pw, reduction, True)
    assert res is not None
    ref = sk.binary_cross_entropy_with_logits(
        x, y, weight=w, pos_weight=pw, reduction=reduction, return_grad=True
    )
    assert _same(res[0], ref[0]) and _same(res[1], ref[1])


# ---------------------------------------------------------- through softmaxkit.torch


@pytest.fixture
def triton_forced(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """``SOFTMAXKIT_ENGINE=triton``; counts the launches that ran a kernel (not ``None``)."""
    monkeypatch.setenv("SOFTMAXKIT_ENGINE", "triton")
    calls: dict[str, int] = {}
    for name in ("softmax", "log_softmax", "logsumexp", "cross_entropy", "bce_with_logits"):

        def spy(*a: object, _fn: object = getattr(E, name), _name: str = name) -> object:
            out = _fn(*a)  # type: ignore[operator]
            if out is not None:
                calls[_name] = calls.get(_name, 0) + 1
            return out

        monkeypatch.setattr(E, name, spy)
    return calls


def test_engine_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.zeros(2)
    monkeypatch.delenv("SOFTMAXKIT_ENGINE", raising=False)
    assert engine_for(x) == "native"  # CPU tensors keep the C core by default
    for name in ("native", "agnostic"):
        monkeypatch.setenv("SOFTMAXKIT_ENGINE", name)
        assert engine_for(x) == name
    monkeypatch.setenv("SOFTMAXKIT_ENGINE", "triton")
    assert engine_for(x) == "triton" and torch_engine._LAUNCHERS is E
    monkeypatch.setattr(E, "INTERPRETED", False)
    with pytest.raises(SoftmaxkitValueError, match="TRITON_INTERPRET=1"):
        skt.softmax(torch.zeros(2, 3), dim=1)


def _routes(fn, x: torch.Tensor, *, cot: bool = True):  # type: ignore[no-untyped-def]
    """Value and input gradient of ``fn(route, x)`` on the eager and on the operator route."""
    res = []
    for route in ("eager", "ops"):
        xi = x.detach().clone().requires_grad_()
        out = fn(route, xi)
        up = torch.linspace(-1.0, 1.5, out.numel()).reshape(out.shape).to(out.dtype)
        (g,) = torch.autograd.grad(out, xi, up if cot else None)
        res.append((out.detach(), g))
    return res


def test_torch_layer_normalizers_run_the_kernels(triton_forced: dict[str, int]) -> None:
    x = torch.tensor(SPECIAL, dtype=torch.float32)
    assert _same(skt.softmax(x, dim=1), sk.softmax(x, axis=1))
    assert _same(skt.log_softmax(x, dim=1), sk.log_softmax(x, axis=1))
    assert _same(skt.logsumexp(x, dim=1), sk.logsumexp(x, axis=1))
    y = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(2))
    assert _same(skt.logsumexp(y, dim=(0, 2), keepdim=True),
                 sk.logsumexp(y, axis=(0, 2), keepdims=True))  # fmt: skip
    assert _same(_ops.softmax_op(y, [1]), sk.softmax(y, axis=1))
    assert triton_forced == {"softmax": 2, "log_softmax": 1, "logsumexp": 2}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_layer_normalizer_gradients_on_both_routes(
    triton_forced: dict[str, int], monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype
) -> None:
    g = torch.Generator().manual_seed(21)
    x = (torch.randn(3, 9, generator=g) * 3).to(dtype)
    x[0, 2] = -INF
    ops = {
        "softmax": (lambda r, a: skt.softmax(a, 1) if r == "eager" else _ops.softmax_op(a, [1])),
        "log_softmax": (
            lambda r, a: skt.log_softmax(a, 1) if r == "eager" else _ops.log_softmax_op(a, [1])
        ),
        "logsumexp": (
            lambda r, a: skt.logsumexp(a, 1) if r == "eager" else _ops.logsumexp_op(a, [1], False)
        ),
    }
    for name, fn in ops.items():
        (v_e, g_e), (v_o, g_o) = _routes(fn, x)
        assert triton_forced.pop(name) == 2  # both forwards ran the kernel
        # the eager route (autograd.Function) and the operators: bitwise the same
        assert _same(v_e, v_o) and _same(g_e, g_o)
        if dtype == torch.float32:
            assert _same(v_e, _oracle(name, x, 1))
        else:
            assert _same(v_e, _round_once(_oracle(name, x.to(torch.float64), 1), dtype))
        # backward runs the engine it would run without Triton: the same gradient
        monkeypatch.delenv("SOFTMAXKIT_ENGINE")
        (_, g_n), _ = _routes(fn, x)
        monkeypatch.setenv("SOFTMAXKIT_ENGINE", "triton")
        if dtype == torch.float32:
            torch.testing.assert_close(g_e, g_n, rtol=2e-7, atol=1e-7)
        else:
            torch.testing.assert_close(g_e, g_n, rtol=0.0, atol=0.0)


def test_torch_layer_loss_gradients_on_both_routes(triton_forced: dict[str, int]) -> None:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(4, 7, 3, generator=g) * 4  # class dim 1
    t = torch.randint(0, 7, (4, 3), generator=g)
    t[0, 0] = -100
    w = torch.rand(7, generator=g) + 0.5

    def ce(route: str, a: torch.Tensor) -> torch.Tensor:
        if route == "eager":
            return 2.0 * skt.cross_entropy(a, t, w, label_smoothing=0.05, z_loss=1e-3)
        loss, _ = _ops.cross_entropy_op(a, t, w, 1, -100, "mean", 0.05, 1e-3, False, True)
        return 2.0 * loss

    (l_e, g_e), (l_o, g_o) = _routes(ce, x, cot=False)
    assert triton_forced.pop("cross_entropy") == 2
    ref_loss, ref_grad = sk.cross_entropy(
        x, t, axis=1, weight=w, ignore_index=-100, label_smoothing=0.05, z_loss=1e-3,
        return_grad=True,
    )  # fmt: skip
    assert _same(l_e, 2.0 * ref_loss) and _same(l_o, l_e)
    assert _same(g_e, 2.0 * ref_grad) and _same(g_o, g_e)

    xb = torch.randn(5, 6, generator=g) * 10
    yb = torch.rand(5, 6, generator=g)
    pw = torch.rand(6, generator=g) * 3

    def bce(route: str, a: torch.Tensor) -> torch.Tensor:
        if route == "eager":
            return skt.binary_cross_entropy_with_logits(a, yb, pos_weight=pw, reduction="sum")
        return _ops.bce_with_logits_op(a, yb, None, pw, "sum", True)[0]

    (l_e, g_e), (l_o, g_o) = _routes(bce, xb, cot=False)
    assert triton_forced.pop("bce_with_logits") == 2
    ref_b = sk.binary_cross_entropy_with_logits(
        xb, yb, pos_weight=pw, reduction="sum", return_grad=True
    )
    assert _same(l_e, ref_b[0]) and _same(g_e, ref_b[1])
    assert _same(l_o, l_e) and _same(g_o, g_e)
    assert not triton_forced


def test_uncovered_calls_fall_back(
    triton_forced: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # float64 and probability targets have no kernel: they run as without Triton
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 5, generator=g, dtype=torch.float64)
    p = torch.softmax(torch.randn(3, 5, generator=g), 1)
    xf = x.float()

    def calls() -> list[torch.Tensor]:
        return [skt.softmax(x, 1), skt.logsumexp(x, 1), skt.cross_entropy(xf, p)]

    forced = calls()
    assert not triton_forced
    with pytest.raises(SoftmaxkitValueError, match="class index out of range"):
        skt.cross_entropy(xf, torch.tensor([0, 5, 1]))
    monkeypatch.delenv("SOFTMAXKIT_ENGINE")
    for a, b in zip(forced, calls(), strict=True):
        assert _same(a, b)


# ------------------------------------------------------------ linear + cross-entropy


def test_linear_cross_entropy_tiles_match_full_logits() -> None:
    g = torch.Generator().manual_seed(13)
    N, D, V = 10, 16, 300
    h = torch.randn(N, D, generator=g)
    W = torch.randn(V, D, generator=g)
    b = torch.randn(V, generator=g)
    t = torch.randint(0, V, (N,), generator=g)
    t[3] = -100
    w = torch.rand(V, generator=g) + 0.5
    loss, gh, gW, gb = E.linear_cross_entropy(
        h, W, t, bias=b, weight=w, reduction="mean", token_tile=8, vocab_tile=128
    )
    assert gh is not None and gW is not None and gb is not None
    hh, WW, bb = (a.clone().requires_grad_() for a in (h, W, b))
    ref = sk.cross_entropy(
        (hh @ WW.T + bb).detach().double(), t, axis=1, weight=w.double(), ignore_index=-100
    )
    # float32 GEMMs on both sides, in different tilings: a few float32 ulps
    assert loss.item() == pytest.approx(float(ref), rel=1e-6)
    full = torch.nn.functional.cross_entropy(hh @ WW.T + bb, t, w)
    full.backward()
    assert hh.grad is not None and WW.grad is not None and bb.grad is not None
    torch.testing.assert_close(gh, hh.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gW, WW.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gb, bb.grad, rtol=1e-5, atol=1e-6)
    none, *_ = E.linear_cross_entropy(h, W, t, reduction="none", token_tile=8, vocab_tile=128)
    assert none.shape == (N,) and none[3].item() == 0.0
