"""The GPU build of every engine that runs on a CUDA device, against the exact reference.

These tests need a CUDA device and run only there (``tools/gpu_check.sh`` runs
this file and ``benchmarks/gpu_bench.py`` in one go on a GPU machine). Without a
CUDA device the whole module skips: the kernels' code is still checked on every
machine by ``test_triton_kernels.py`` (Triton's interpreter, bitwise against the
oracle) and ``test_triton_compile.py`` (the PTX of every kernel), but only a GPU
runs what the GPU compiler made of them: libdevice's float64 ``exp``/``log``,
the hardware's reductions and conversions, XLA's GPU code for the JAX path and
CuPy's kernels for the array-API path.

What is checked, on the device:

* the Triton engine's accurate mode is within 0.5 ulp (+1e-6 for ties, as in
  the interpreter tests) of a long-double reference, in float32, for rows kept
  in registers and rows that take the two-pass (merged state) code; float16 and
  bfloat16 are rounded once (0.5 ulp of their own format);
* the contract's special rows give bitwise the array-agnostic oracle's answers;
* fast mode stays within its documented error (``2 + floor(1.173 |d|)`` ulp per
  term plus the division and the sum);
* cross-entropy (weights, ``ignore_index``, smoothing, z-loss) and BCE (weights,
  ``pos_weight``): losses and gradients within 1 ulp of the C core's correctly
  rounded values (both are within 0.5 ulp of the exact one);
* ``softmaxkit.torch`` on CUDA tensors, eager and under
  ``torch.compile(fullgraph=True)``: the same bits, gradients as on the CPU;
* the JAX path (array-agnostic program compiled by XLA for the GPU) and the
  CuPy path keep the documented bounds (CuPy flushes subnormal float32 results
  to zero in its own float64 -> float32 conversion).

``SOFTMAXKIT_GPU_TEST_DEVICE=cpu`` with ``TRITON_INTERPRET=1`` runs the same
checks on small CPU tensors in Triton's interpreter (a dry run of this file on a
machine without a GPU; the JAX and CuPy parts then skip).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed: pip install softmaxkit[triton]")

DRY = os.environ.get("SOFTMAXKIT_GPU_TEST_DEVICE") == "cpu"
if not DRY and not torch.cuda.is_available():
    # before triton is imported: test_triton_kernels.py needs the interpreter chosen first
    pytest.skip(
        "no CUDA device: the GPU build is checked on a GPU machine (tools/gpu_check.sh)",
        allow_module_level=True,
    )
pytest.importorskip("triton", reason="triton not installed: pip install softmaxkit[triton]")

import softmaxkit as sk  # noqa: E402
import softmaxkit.torch as skt  # noqa: E402
from softmaxkit._triton import _launch as E  # noqa: E402
from softmaxkit.torch import _engine as TE  # noqa: E402
from tests import _reference as R  # noqa: E402
from tests._triton_data import SPECIAL, ce_inputs  # noqa: E402

if DRY and not E.INTERPRETED:
    # the dry run was asked for and cannot run: an error, not a silent skip
    pytest.fail(
        "SOFTMAXKIT_GPU_TEST_DEVICE=cpu needs TRITON_INTERPRET=1 set before triton is imported",
        pytrace=False,
    )

DEV = "cpu" if DRY else "cuda"
INF, NAN = math.inf, math.nan
#: 0.5 ulp, plus the float64 result's own error near a tie (as test_triton_kernels.py)
HALF_ULP = 0.5 + 1e-6

#: row lengths: in registers, at the register limit, two-pass, long two-pass
LENGTHS = [1, 7, 300] if DRY else [1, 7, 1000, 8192, 8193, 50000]
ROWS = 6 if DRY else 48


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise equal, any NaN equal to any NaN, +0 distinct from -0."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    an, bn = np.isnan(a), np.isnan(b)
    fa, fb = np.where(an, 0, a), np.where(bn, 0, b)
    return bool(
        np.array_equal(an, bn) and np.array_equal(fa, fb)
        and np.array_equal(np.signbit(fa), np.signbit(fb))
    )  # fmt: skip


def _rows(n: int, seed: int) -> torch.Tensor:
    """``ROWS`` float32 rows of ``n``: scales from 0.1 to 1000, ties at the maximum, -inf."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.1, 1.0, 4.0, 12.0, 40.0, 1000.0]).repeat(ROWS)[:ROWS, None]
    x = torch.randn(ROWS, n, generator=g) * scale
    if n > 3:
        x[0, : n // 3] = x[0].max()  # a third of the row ties at the maximum
        x[1, 1 : n // 2] = -INF
    return x


def _exact(op: str, x: np.ndarray) -> np.ndarray:
    ref = R.reference(x)
    fn = {"softmax": R.softmax_ref, "log_softmax": R.log_softmax_ref}.get(op, R.logsumexp_ref)
    return fn(ref)


def _launch(op: str, x: torch.Tensor, **kw: object) -> torch.Tensor:
    out = E.logsumexp(x, [1], False, **kw) if op == "logsumexp" else getattr(E, op)(x, [1], **kw)  # type: ignore[arg-type]
    assert out is not None
    return out


OPS = ("softmax", "log_softmax", "logsumexp")


# ------------------------------------------------------------------ normalizers


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("op", OPS)
def test_accurate_float32_within_half_ulp(op: str, n: int) -> None:
    x = _rows(n, seed=n)
    got = _np(_launch(op, x.to(DEV)))
    err = R.ulp_error(got, _exact(op, _np(x)), np.float32)
    assert err.max() <= HALF_ULP, (op, n, float(err.max()))
    # and, being correctly rounded, the C core's bits except within 1e-6 ulp of a tie
    core = getattr(sk, op)(_np(x), axis=-1)
    assert (got != core).mean() < 1e-3


@pytest.mark.parametrize("block", [None, 4], ids=["registers", "two_pass"])
@pytest.mark.parametrize("op", OPS)
def test_special_rows_are_the_oracles(op: str, block: int | None) -> None:
    x = torch.tensor(SPECIAL, dtype=torch.float32)
    got = _np(_launch(op, x.to(DEV), block=block))
    # the array-agnostic engine on the CPU tensor, as the interpreter tests compare
    assert _same(got, _np(getattr(sk, op)(x, axis=-1)))


def test_empty_and_single_rows() -> None:
    e = torch.empty(3, 0, device=DEV)
    assert _launch("softmax", e).shape == (3, 0)
    assert torch.equal(_launch("logsumexp", e).cpu(), torch.full((3,), -INF))
    one = torch.tensor([[2.5], [-INF], [INF], [NAN]], device=DEV)
    assert _np(_launch("softmax", one)).ravel()[:3].tolist() == [1.0, 0.0, 1.0]
    assert np.isnan(_np(_launch("softmax", one))[3, 0])


def _err_in(got: np.ndarray, ref: np.ndarray, p: int, emin: int) -> np.ndarray:
    """``|got - ref|`` in ulps of a format with ``p`` significand bits (ref in longdouble)."""
    t = np.abs(ref.astype(R.LD))
    with np.errstate(divide="ignore"):
        _, ex = np.frexp(t)
    e = np.maximum(np.where(t > 0, ex.astype(np.int64) - 1, emin), emin)
    u = np.ldexp(np.ones_like(t), (e - p + 1).astype(np.int32))
    d = np.abs(got.astype(R.LD) - ref.astype(R.LD))
    same = got.astype(R.LD) == ref.astype(R.LD)
    return np.where(same, 0.0, d / u).astype(np.float64)


@pytest.mark.parametrize("n", [300] if DRY else [1000, 20000])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("op", OPS)
def test_half_precision_rounded_once(op: str, dtype: str, n: int) -> None:
    td = getattr(torch, dtype)
    x = (_rows(n, seed=7) * 0.25).to(td)  # within float16's range
    got = _launch(op, x.to(DEV)).to(torch.float64).cpu().numpy()
    ref = _exact(op, x.to(torch.float32).numpy())
    p, emin = (11, -14) if dtype == "float16" else (8, -126)
    fin = np.isfinite(ref)
    err = _err_in(got[fin], ref[fin], p, emin)
    assert err.max() <= 0.5 + 1e-4, (op, dtype, float(err.max()))


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_fast_mode_within_its_documented_error(op: str) -> None:
    n = 300 if DRY else 8192
    g = torch.Generator().manual_seed(5)
    x = torch.randn(ROWS, n, generator=g) * 3
    fast = _np(_launch(op, x.to(DEV), precision="fast"))
    ref = _exact(op, _np(x))
    if op == "softmax":
        d = np.abs(_np(x) - _np(x).max(axis=1, keepdims=True))
        # per term 2 + floor(1.173 |d|) ulp (ex2.approx), the division 2 and the float32
        # row sum: up to log2(n) ulp of its pairwise (tree) reduction, plus 2
        bound = 2 + np.floor(1.173 * d) + 2 + 2 + math.ceil(math.log2(n))
        err = R.ulp_error(fast, ref, np.float32)
        live = ref > 1e-30  # below that the term is a subnormal-range float32
        assert (err[live] <= bound[live]).all(), float((err - bound)[live].max())
    else:
        # (x - max) - L: the absolute error is that of L, a few ulp of a number near log(n)
        assert np.abs(fast - ref.astype(np.float64)).max() <= 8 * np.spacing(
            np.float32(math.log(n))
        )


# ------------------------------------------------------------------ losses


def _ulp_apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many float32 steps apart two float32 arrays are (NaN with NaN, inf with inf: 0)."""
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    ia = a.view(np.int32).astype(np.int64)
    ib = b.view(np.int32).astype(np.int64)
    ia = np.where(ia < 0, -(ia & 0x7FFFFFFF), ia)
    ib = np.where(ib < 0, -(ib & 0x7FFFFFFF), ib)
    return np.where(same, 0, np.abs(ia - ib))


CE_OPTS = [
    {},
    {"weight": True, "label_smoothing": 0.1, "z_loss": 1e-3},
    {"weight": "signed", "label_smoothing": 0.05},  # negative class weights, as torch allows
]


@pytest.mark.parametrize("C", [40] if DRY else [40, 4097, 50000])
@pytest.mark.parametrize("opts", CE_OPTS, ids=["plain", "weight_smooth_z", "signed_weight"])
def test_cross_entropy_loss_and_grad(opts: dict[str, object], C: int) -> None:
    x, t, w = ce_inputs(C, 14 if DRY else 64)
    if opts.get("weight") == "signed":
        w = w - 1.0
    weight = w if opts.get("weight") else None
    eps = float(opts.get("label_smoothing", 0.0))  # type: ignore[arg-type]
    z = float(opts.get("z_loss", 0.0))  # type: ignore[arg-type]
    dev = [a.to(DEV) if a is not None else None for a in (x, t, weight)]
    res = E.cross_entropy(dev[0], dev[1], dev[2], 1, -100, "none", eps, z, False, True)
    assert res is not None
    loss, grad = (_np(a) for a in res)
    # the reference: softmaxkit.torch's CPU engine (the C core), which, like torch,
    # takes negative class weights (the NumPy API asks for non-negative ones)
    ref_loss, ref_grad = (
        _np(a) for a in TE.cross_entropy_fwd(x, t, weight, 1, -100, "none", eps, z, False, True)
    )
    assert _ulp_apart(loss, ref_loss).max() <= 1
    assert _ulp_apart(grad, ref_grad).max() <= 1
    # the mean: the same per-item losses over the same weighted count
    res_m = E.cross_entropy(dev[0], dev[1], dev[2], 1, -100, "mean", eps, z, False, False)
    assert res_m is not None
    ref_m = TE.cross_entropy_fwd(x[7:], t[7:], weight, 1, -100, "mean", eps, z, False, False)[0]
    res_tail = E.cross_entropy(
        dev[0][7:], dev[1][7:], dev[2], 1, -100, "mean", eps, z, False, False
    )
    assert res_tail is not None
    got, want = float(res_tail[0]), float(ref_m)
    assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=4e-7)


@pytest.mark.parametrize("weights", [False, True])
def test_bce_loss_and_grad(weights: bool) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 300, generator=g) * 12
    x[0, :6] = torch.tensor([0.0, 88.0, -88.0, 1e30, -1e30, 1e-30])
    y = torch.rand(64, 300, generator=g)
    w = torch.rand(300, generator=g) * 2 if weights else None
    pw = torch.rand(300, generator=g) * 3 if weights else None
    res = E.bce_with_logits(
        x.to(DEV), y.to(DEV), None if w is None else w.to(DEV),
        None if pw is None else pw.to(DEV), "none", True,
    )  # fmt: skip
    assert res is not None
    loss, grad = (_np(a) for a in res)
    ref_loss, ref_grad = sk.binary_cross_entropy_with_logits(
        _np(x), _np(y), weight=None if w is None else _np(w),
        pos_weight=None if pw is None else _np(pw), reduction="none", return_grad=True,
    )  # fmt: skip
    assert _ulp_apart(loss, ref_loss).max() <= 1
    assert _ulp_apart(grad, ref_grad).max() <= 1


def test_linear_cross_entropy_tiles_match_full_logits() -> None:
    g = torch.Generator().manual_seed(13)
    N, D, V = (10, 16, 300) if DRY else (300, 64, 20000)
    h = torch.randn(N, D, generator=g)
    W = torch.randn(V, D, generator=g) * 0.3
    t = torch.randint(0, V, (N,), generator=g)
    t[3] = -100
    tiles = {"token_tile": 8, "vocab_tile": 128} if DRY else {}
    loss, gh, gW, _ = E.linear_cross_entropy(h.to(DEV), W.to(DEV), t.to(DEV), **tiles)  # type: ignore[arg-type]
    assert gh is not None and gW is not None
    hh, WW = h.double().requires_grad_(), W.double().requires_grad_()
    full = torch.nn.functional.cross_entropy(hh @ WW.T, t)
    full.backward()
    assert hh.grad is not None and WW.grad is not None
    # float32 GEMMs (no TF32) against float64 ones: float32 rounding of the logits
    assert float(loss) == pytest.approx(full.item(), rel=1e-5)
    torch.testing.assert_close(gh.double().cpu(), hh.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gW.double().cpu(), WW.grad, rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------ the torch layer


def test_torch_layer_on_device_matches_the_cpu_route() -> None:
    g = torch.Generator().manual_seed(17)
    x = torch.randn(33, 1000, generator=g) * 5
    t = torch.randint(0, 1000, (33,), generator=g)
    t[2] = -100
    for fn in (
        lambda a: skt.softmax(a, dim=1),
        lambda a: skt.log_softmax(a, dim=1),
        lambda a: skt.logsumexp(a, dim=1),
    ):
        xc = x.clone().requires_grad_()
        xd = x.to(DEV, copy=True).requires_grad_()
        yc, yd = fn(xc), fn(xd)
        assert _same(_np(yd), _np(yc)) or _ulp_apart(_np(yd), _np(yc)).max() <= 1
        up = torch.linspace(-1, 1, yc.numel()).reshape(yc.shape)
        (gc,) = torch.autograd.grad(yc, xc, up)
        (gd,) = torch.autograd.grad(yd, xd, up.to(DEV))
        torch.testing.assert_close(gd.cpu(), gc, rtol=4e-7, atol=1e-9)
    xc = x.clone().requires_grad_()
    xd = x.to(DEV, copy=True).requires_grad_()
    lc = skt.cross_entropy(xc, t, label_smoothing=0.1)
    ld = skt.cross_entropy(xd, t.to(DEV), label_smoothing=0.1)
    assert ld.item() == pytest.approx(lc.item(), rel=4e-7)
    lc.backward()
    ld.backward()
    assert xc.grad is not None and xd.grad is not None
    assert _ulp_apart(_np(xd.grad), _np(xc.grad)).max() <= 1


def test_torch_layer_loss_errors_and_signed_weights_on_device() -> None:
    from softmaxkit._errors import SoftmaxkitValueError

    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(23))
    bad = torch.tensor([0, 1, 5, 2, 0, 1])  # 5 is out of range for 5 classes
    # the kernel flags the row; the front end words the error (no device-side assert)
    with pytest.raises(SoftmaxkitValueError, match="class index out of range"):
        skt.cross_entropy(x.to(DEV), bad.to(DEV))
    t = torch.tensor([0, 1, 4, 2, -100, 3])
    w = torch.tensor([1.0, -0.5, 0.25, 2.0, -1.5])  # torch takes negative class weights
    lc = skt.cross_entropy(x, t, weight=w)
    ld = skt.cross_entropy(x.to(DEV), t.to(DEV), weight=w.to(DEV))
    ref = torch.nn.functional.cross_entropy(x.double(), t, weight=w.double())
    assert ld.item() == pytest.approx(lc.item(), rel=4e-7)
    assert ld.item() == pytest.approx(ref.item(), rel=1e-6)


@pytest.mark.skipif(DRY, reason="inductor compiles CPU code in the dry run; the GPU run covers it")
# inductor's own code warns (torch.jit.script_method is deprecated in torch 2.11)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torch_compile_fullgraph_on_device() -> None:
    g = torch.Generator().manual_seed(19)
    x = (torch.randn(64, 2000, generator=g) * 3).to(DEV)
    t = torch.randint(0, 2000, (64,), generator=g).to(DEV)

    def step(a: torch.Tensor) -> torch.Tensor:
        return skt.cross_entropy(a, t) + skt.logsumexp(skt.log_softmax(a, dim=1), dim=1).sum()

    comp = torch.compile(step, fullgraph=True)
    a1 = x.clone().requires_grad_()
    a2 = x.clone().requires_grad_()
    l1, l2 = step(a1), comp(a2)
    assert _same(_np(l1), _np(l2))
    l1.backward()
    l2.backward()
    assert a1.grad is not None and a2.grad is not None
    torch.testing.assert_close(a2.grad, a1.grad, rtol=0, atol=0)


# ------------------------------------------------------------------ JAX and CuPy on the GPU


@pytest.mark.skipif(DRY, reason="the JAX GPU path needs a GPU")
@pytest.mark.parametrize("op", OPS)
def test_jax_on_gpu_within_half_ulp(op: str) -> None:
    jax = pytest.importorskip("jax")
    if not any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("this JAX has no GPU backend (install jax[cuda])")
    import softmaxkit.jax as skj

    x = _rows(4000, seed=11)
    xj = jax.device_put(_np(x), jax.devices("gpu")[0])
    got = np.asarray(jax.jit(lambda a: getattr(skj, op)(a, axis=-1))(xj))  # jax.nn: axis=None
    err = R.ulp_error(got, _exact(op, _np(x)), np.float32)
    assert err.max() <= 0.505, (op, float(err.max()))


@pytest.mark.skipif(DRY, reason="CuPy needs a GPU")
@pytest.mark.parametrize("op", OPS)
def test_cupy_within_half_ulp(op: str) -> None:
    cp = pytest.importorskip("cupy")
    x = _rows(4000, seed=12)
    got = getattr(sk, op)(cp.asarray(_np(x)), axis=-1)
    assert type(got).__module__.startswith("cupy")
    got = cp.asnumpy(got)
    ref = _exact(op, _np(x))
    err = R.ulp_error(got, ref, np.float32)
    # CuPy's float64 -> float32 conversion flushes subnormal results to zero (measured
    # on an H200 with CuPy 14.2; README, CuPy): those come out as 0, the rest to 0.505 ulp
    normal = ~(np.abs(ref) < np.finfo(np.float32).tiny)
    assert err[normal].max() <= 0.505, (op, float(err[normal].max()))
    sub = ~normal
    assert ((got[sub] == 0) | (err[sub] <= 0.505)).all()
