"""The public ops on CPU torch tensors: the C core through zero-copy NumPy views.

``sk.softmax(t)`` and the rest must give the bits of the same call on NumPy
arrays, as torch tensors of the input's dtype, without touching the input; and
inputs that autograd records through must keep the differentiable engine.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import softmaxkit as sk  # noqa: E402
from softmaxkit import SoftmaxkitError, _torch_dispatch  # noqa: E402

pytestmark = pytest.mark.skipif(
    not sk._dispatch.available(), reason="the C core is not built into this installation"
)


def _np_dtype(x):
    return np.dtype(str(x.dtype).removeprefix("torch."))


OPS = {
    "softmax": lambda x, t, p: sk.softmax(x, precision=p),
    "log_softmax axis 0": lambda x, t, p: sk.log_softmax(x, axis=0, precision=p),
    "softmax where": lambda x, t, p: sk.softmax(x, where=x > -2, precision=p),
    "log_softmax temperature": lambda x, t, p: sk.log_softmax(x, temperature=0.7, precision=p),
    "logsumexp": lambda x, t, p: sk.logsumexp(x, axis=-1, keepdims=True, precision=p),
    "logsumexp b sign": lambda x, t, p: sk.logsumexp(
        x, b=np.linspace(-1, 1, x.shape[-1], dtype=_np_dtype(x)), return_sign=True, precision=p
    ),
    "cross_entropy": lambda x, t, p: sk.cross_entropy(x, t, precision=p),
    "cross_entropy grad": lambda x, t, p: sk.cross_entropy(x, t, return_grad=True, precision=p),
    "cross_entropy none ignore": lambda x, t, p: sk.cross_entropy(
        x, t, reduction="none", ignore_index=3, precision=p
    ),
    "cross_entropy weights": lambda x, t, p: sk.cross_entropy(
        x, t, weight=np.linspace(0.5, 2, x.shape[-1]), precision=p
    ),
    "cross_entropy smoothing": lambda x, t, p: sk.cross_entropy(  # rows without inf
        x[:3], t[:3], label_smoothing=0.1, precision=p
    ),
    "nll_loss": lambda x, t, p: sk.nll_loss(sk.log_softmax(x, precision=p), t, precision=p),
    "sigmoid": lambda x, t, p: sk.sigmoid(x, precision=p),
    "log_sigmoid": lambda x, t, p: sk.log_sigmoid(x, precision=p),
    "bce grad": lambda x, t, p: sk.binary_cross_entropy_with_logits(
        x, (x > 0) * 1.0, return_grad=True, precision=p
    ),
    "softmax_vjp": lambda x, t, p: sk.softmax_vjp(sk.softmax(x, precision=p), x, precision=p),
    "log_softmax_vjp": lambda x, t, p: sk.log_softmax_vjp(
        sk.log_softmax(x, precision=p), x, precision=p
    ),
}


# calls the NumPy path itself gives to the array-agnostic engine (float64 label
# smoothing has no C kernel): the torch route must give the same bits all the same
NUMPY_AGNOSTIC = {("cross_entropy smoothing", "float64")}


def _data(dtype: str, shape: tuple[int, int] = (37, 70)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    x[3, 5] = np.inf
    x[4, :] = -np.inf
    x[6, 2] = 80.0
    t = rng.integers(0, shape[1], shape[0])
    return x, t


def _flat(res):
    return res if isinstance(res, tuple) else (res,)


@pytest.fixture
def c_calls(monkeypatch):
    """Counts the calls that came back from the C core through the torch route."""
    calls = []
    real = _torch_dispatch._tensors

    def counting(res):
        out = real(res)
        if out is not None:
            calls.append(1)
        return out

    monkeypatch.setattr(_torch_dispatch, "_tensors", counting)
    return calls


@pytest.mark.parametrize("precision", ["accurate", "fast"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op", list(OPS))
def test_cpu_tensors_give_the_bits_of_numpy(op, dtype, precision, c_calls):
    x, t = _data(dtype)
    want = _flat(OPS[op](x, t, precision))
    xt = torch.from_numpy(x.copy())
    tt = torch.from_numpy(t.copy())
    got = _flat(OPS[op](xt, tt, precision))
    assert bool(c_calls) != ((op, dtype) in NUMPY_AGNOSTIC), c_calls
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert type(g) is torch.Tensor
        w = np.asarray(w)
        assert g.dtype == getattr(torch, w.dtype.name)
        assert tuple(g.shape) == w.shape
        np.testing.assert_array_equal(g.numpy(), w, strict=True)
        assert g.data_ptr() != xt.data_ptr()
    np.testing.assert_array_equal(xt.numpy(), x)  # the input is untouched


def test_strided_views_and_numpy_labels(c_calls):
    x, t = _data("float32", (50, 40))
    xt = torch.from_numpy(x.copy()).T  # a transposed view: NumPy takes it as it is
    want = sk.log_softmax(x.T, axis=0)
    got = sk.log_softmax(xt, axis=0)
    np.testing.assert_array_equal(got.numpy(), want)
    y = np.arange(40) % 50
    got = sk.cross_entropy(xt, y, reduction="none")  # NumPy labels become torch's first
    np.testing.assert_array_equal(got.numpy(), sk.cross_entropy(x.T, y, reduction="none"))
    assert len(c_calls) == 2


@pytest.mark.parametrize("log", [False, True])
def test_recorded_calls_take_the_torch_layers_autograd_ops(log, c_calls):
    """A CPU tensor that requires grad, grad mode on: softmaxkit.torch's ops (the same
    kernels, their backward in C), so values and gradients are the NumPy calls' bits."""
    x, _ = _data("float64", (8, 30))
    xt = torch.from_numpy(x.copy()).requires_grad_()
    fn, vjp = (sk.log_softmax, sk.log_softmax_vjp) if log else (sk.softmax, sk.softmax_vjp)
    y = fn(xt, axis=0)
    assert type(y.grad_fn).__module__ == "torch.autograd.function", type(y.grad_fn)
    np.testing.assert_array_equal(y.detach().numpy(), fn(x, axis=0))
    g = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
    (gx,) = torch.autograd.grad(y, xt, g)
    np.testing.assert_array_equal(gx.numpy(), vjp(fn(x, axis=0), g.numpy(), axis=0))
    lse = sk.logsumexp(xt, axis=(0, 1))
    (gl,) = torch.autograd.grad(lse, xt)
    np.testing.assert_array_equal(gl.numpy(), sk.logsumexp_vjp(x, np.float64(1.0), axis=(0, 1)))
    assert not c_calls
    small = xt[:3, :5].detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: fn(t, axis=1), (small,))
    with torch.no_grad():  # nothing is recorded: the C core through NumPy views
        z = fn(xt, axis=0)
    assert z.grad_fn is None and len(c_calls) == 1
    np.testing.assert_array_equal(z.numpy(), fn(x, axis=0))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_index", [None, 3])
def test_recorded_cross_entropy_takes_the_torch_layers_op(dtype, reduction, ignore_index):
    x, t = _data(dtype, (40, 9))
    t[::4] = 3
    xt = torch.from_numpy(x.copy()).requires_grad_()
    kw = {"reduction": reduction, "ignore_index": ignore_index}
    loss = sk.cross_entropy(xt, torch.from_numpy(t), **kw)
    assert type(loss.grad_fn).__module__ == "torch.autograd.function", type(loss.grad_fn)
    want, want_grad = sk.cross_entropy(x, t, return_grad=True, **kw)
    np.testing.assert_array_equal(loss.detach().numpy(), want, strict=True)
    cot = torch.ones_like(loss)
    (g,) = torch.autograd.grad(loss, xt, cot)
    np.testing.assert_array_equal(g.numpy(), want_grad)
    if ignore_index is not None:  # every label ignored: the contract's empty mean
        every = torch.full((40,), 3)
        got = sk.cross_entropy(xt, every, **kw)
        np.testing.assert_array_equal(
            got.detach().numpy(), sk.cross_entropy(x, every.numpy(), **kw), strict=True
        )


def test_other_recorded_calls_keep_the_differentiable_engine(c_calls):
    x, _ = _data("float64", (8, 30))
    xt = torch.from_numpy(x.copy()).requires_grad_()
    mask = torch.from_numpy(x > -2)
    y = sk.softmax(xt, where=mask)  # no autograd op of the torch layer takes `where`
    assert type(y.grad_fn).__module__ != "torch.autograd.function" and not c_calls
    g = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
    (gx,) = torch.autograd.grad(y, xt, g)
    want = sk.softmax_vjp(sk.softmax(x, where=x > -2), g.numpy())  # 0 where masked
    # (autograd through the engine's operations: not one rounding, hence the tolerance)
    np.testing.assert_allclose(gx.numpy(), want, rtol=1e-13, atol=1e-16)
    small = xt[:3, :5].detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: sk.log_softmax(t, temperature=0.5), (small,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_tensors_keep_their_dtype(dtype, c_calls):
    x = torch.randn(4, 9).to(dtype)
    y = sk.softmax(x)
    assert y.dtype == dtype and not c_calls


@pytest.mark.parametrize("recorded", [False, True])
@pytest.mark.parametrize("label", [4, -1, -100])
def test_a_bad_label_is_named(recorded, label):
    """Also -100, torch's default ignore_index, which softmaxkit's default (None) does
    not ignore: the recorded shortcut must not let softmaxkit.torch's op skip it."""
    x = torch.zeros(3, 4, requires_grad=recorded)
    with pytest.raises(SoftmaxkitError, match="target"):
        sk.cross_entropy(x, torch.tensor([0, label, 1]))
