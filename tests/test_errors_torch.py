"""softmaxkit.torch on bad or unusual input: an error of softmaxkit's family, or torch's answer.

Regression tests from a fuzz of the torch front end: each case once leaked an
internal exception (AttributeError, RuntimeError, OverflowError, a TypeError from
``register_buffer``), dropped a gradient silently, returned a dtype torch does not,
or rejected a call that torch answers.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tests.conftest import active_backends

if "torch" not in active_backends():
    pytest.skip("the torch backend is not requested or not installed", allow_module_level=True)

import torch
import torch.nn.functional as F

import softmaxkit as sk
import softmaxkit.torch as skt
from softmaxkit import SoftmaxkitError, SoftmaxkitTypeError, SoftmaxkitValueError


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


X = torch.randn(4, 5, generator=_gen(0))
T = torch.tensor([0, 1, 4, 2])
P = torch.softmax(torch.randn(4, 5, generator=_gen(1)), 1)
Y = torch.rand(4, 5, generator=_gen(2))
H = torch.randn(6, 4, generator=_gen(3))
W = torch.randn(10, 4, generator=_gen(4))
TL = torch.tensor([1, 2, 3, 0, 5, 9])


def _raises(kind, match, fn, *args, **kwargs):
    with pytest.raises(kind, match=match) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, SoftmaxkitError)
    return info.value


# ----------------------------------------------------------------- dtype= arguments


@pytest.mark.parametrize("fn", [skt.softmax, skt.log_softmax])
@pytest.mark.parametrize("dtype", ["float32", np.float32, np.dtype("float64"), 3])
def test_dtype_not_a_torch_dtype(fn, dtype):
    # was an AttributeError ('str' object has no attribute 'is_floating_point')
    _raises(SoftmaxkitTypeError, "`dtype` must be a torch.dtype", fn, X, 1, dtype=dtype)


@pytest.mark.parametrize("fn", [skt.softmax, skt.log_softmax])
@pytest.mark.parametrize("x", [X, torch.arange(6).reshape(2, 3)])
def test_dtype_python_float_is_float64(fn, x):
    ref = getattr(torch, fn.__name__)(x, 1, dtype=float)
    got = fn(x, 1, dtype=float)
    assert got.dtype == ref.dtype == torch.float64
    torch.testing.assert_close(got, ref)


# -------------------------------------------------------------------- ignore_index


@pytest.mark.parametrize(
    ("fn", "x"),
    [(skt.cross_entropy, X), (skt.nll_loss, torch.log_softmax(X, 1))],
)
@pytest.mark.parametrize("ign", [np.int64(2), np.int32(2), torch.tensor(2)])
def test_ignore_index_integer_like(fn, x, ign):
    ref = getattr(F, fn.__name__)(x, T, ignore_index=ign)
    torch.testing.assert_close(fn(x, T, ignore_index=ign), ref)
    for bad in (2.0, None, "2", True):  # still not an int
        _raises(SoftmaxkitTypeError, "`ignore_index` must be an int", fn, x, T, ignore_index=bad)


def test_ignore_index_integer_like_linear_ce():
    got = skt.linear_cross_entropy(H, W, TL, ignore_index=np.int64(5))
    torch.testing.assert_close(got, F.cross_entropy(H @ W.T, TL, ignore_index=5))


@pytest.mark.parametrize(
    "call",
    [
        lambda ign: skt.cross_entropy(X, T, ignore_index=ign),  # the everyday route
        lambda ign: skt.cross_entropy(X, T, ignore_index=ign, reduction="none"),
        lambda ign: skt.cross_entropy(X, P, ignore_index=ign),
        lambda ign: skt.cross_entropy(X.half(), T, ignore_index=ign),
        lambda ign: skt.CrossEntropyLoss(ignore_index=ign)(X, T),
        lambda ign: skt.nll_loss(X, T, ignore_index=ign),
        lambda ign: skt.linear_cross_entropy(H, W, TL, ignore_index=ign),
    ],
)
@pytest.mark.parametrize("ign", [2**63, -(2**63) - 1, 2**70])
def test_ignore_index_beyond_int64(call, ign):
    # was an OverflowError from the C core's argument conversion
    _raises(SoftmaxkitValueError, "`ignore_index` must fit in a signed 64-bit", call, ign)


# ------------------------------------------------------------ targets torch accepts


@pytest.mark.parametrize("fn", [skt.cross_entropy, skt.nll_loss])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("target", [torch.tensor([3]), torch.tensor([3], dtype=torch.int32)])
def test_single_sample_target_of_shape_one(fn, reduction, target):
    # torch takes a (1,) target for a (C,) input (and returns a 0-d "none" loss)
    ref_fn = getattr(F, fn.__name__)
    ref = ref_fn(X[0], target.long(), reduction=reduction)
    x = X[0].clone().requires_grad_()
    got = fn(x, target, reduction=reduction)
    assert got.shape == ref.shape == ()
    torch.testing.assert_close(got, ref)
    # torch's backward fails on this form; its gradient is that of the 0-d target
    xr = X[0].clone().requires_grad_()
    ref_fn(xr, target.reshape(()).long(), reduction=reduction).backward()
    got.backward()
    torch.testing.assert_close(x.grad, xr.grad)
    for bad in (torch.tensor([3, 1]), torch.tensor([[3]])):  # only (1,) is taken
        _raises(SoftmaxkitValueError, "`target` holds class indices", fn, X[0], bad)


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", [(), []])
def test_logsumexp_0d_empty_dim(dim, keepdim):
    x = torch.tensor(1.5, dtype=torch.float64)
    got = skt.logsumexp(x, dim, keepdim=keepdim)
    ref = torch.logsumexp(x, dim, keepdim=keepdim)
    assert got.shape == ref.shape == ()
    torch.testing.assert_close(got, ref)
    _raises(SoftmaxkitValueError, "selects no dimension", skt.logsumexp, X, dim)  # 0-d only


# ------------------------------------------------------------- dtypes of the result


@pytest.mark.parametrize(
    ("x_dtype", "w_dtype"),
    [
        (torch.float32, torch.float64),
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float64),
    ],
)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_probability_targets_promote_with_weight(x_dtype, w_dtype, reduction):
    x, p = X.to(x_dtype), P.to(x_dtype)
    w = torch.arange(1.0, 6.0, dtype=w_dtype)
    ref = F.cross_entropy(x, p, w, reduction=reduction)
    got = skt.cross_entropy(x, p, w, reduction=reduction)
    assert got.dtype == ref.dtype == w_dtype
    torch.testing.assert_close(got, ref, rtol=1e-2, atol=1e-3)
    # class indices (torch raises) keep the logits' dtype, the weights cast to it
    assert skt.cross_entropy(x, T, w, reduction=reduction).dtype == x_dtype


# ------------------------------------------------------------------ gradients


@pytest.mark.parametrize("x_grad", [False, True])
def test_nll_loss_weight_requiring_grad(x_grad):
    # torch raises; the weight's gradient was dropped without a word
    x = torch.log_softmax(X, 1).requires_grad_(x_grad)
    w = torch.rand(5, generator=_gen(5), requires_grad=True)
    _raises(SoftmaxkitValueError, "`weight`.*detach it", skt.nll_loss, x, T, w)
    with torch.no_grad():
        torch.testing.assert_close(skt.nll_loss(x, T, w), F.nll_loss(x, T, w))
    torch.testing.assert_close(skt.nll_loss(x, T, w.detach()), F.nll_loss(x, T, w.detach()))


# ---------------------------------------------------------------- BCE broadcasting


@pytest.mark.parametrize("name", ["weight", "pos_weight"])
@pytest.mark.parametrize("shape", [(2, 4, 5), (3, 1, 1), (1, 4, 5)])
def test_bce_weight_broadcasting_past_the_input(name, shape):
    # broadcast_shapes accepted these, then a RuntimeError came from expand()
    _raises(
        SoftmaxkitValueError,
        f"`{name}` has shape .* does not broadcast to input's",
        skt.binary_cross_entropy_with_logits,
        X,
        Y,
        **{name: torch.ones(shape)},
    )
    for fits in [(5,), (4, 1), (1, 5), (4, 5), ()]:
        arr = torch.rand(fits, generator=_gen(6))
        got = skt.binary_cross_entropy_with_logits(X, Y, **{name: arr})
        torch.testing.assert_close(got, F.binary_cross_entropy_with_logits(X, Y, **{name: arr}))


# --------------------------------------------------------------- linear_cross_entropy


@pytest.mark.parametrize("topk", [11, 20, 2**40])
def test_linear_ce_topk_beyond_classes(topk):
    # was a RuntimeError from a reshape ("shape '[6, 20]' is invalid ...")
    _raises(
        SoftmaxkitValueError,
        r"`topk` must lie in \[0, 10\]",
        skt.linear_cross_entropy,
        H,
        W,
        TL,
        topk=topk,
    )
    out = skt.linear_cross_entropy(H, W, TL, topk=10)  # all classes is fine
    vals, idx = torch.log_softmax(H @ W.T, 1).topk(10, dim=1)
    torch.testing.assert_close(out.topk_logprobs, vals)
    assert torch.equal(out.topk_indices, idx)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_linear_ce_float_target_names_target(dtype):
    err = _raises(
        SoftmaxkitValueError,
        "`target` must hold integer class indices",
        skt.linear_cross_entropy,
        H,
        W,
        TL.to(dtype),
    )
    assert "probability" in str(err)


# ------------------------------------------------------------------------ modules


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda v: skt.CrossEntropyLoss(v), "weight"),
        (lambda v: skt.NLLLoss(v), "weight"),
        (lambda v: skt.BCEWithLogitsLoss(v), "weight"),
        (lambda v: skt.BCEWithLogitsLoss(pos_weight=v), "pos_weight"),
        (lambda v: skt.LinearCrossEntropyLoss(4, 5, weight=v), "weight"),
    ],
)
@pytest.mark.parametrize("value", [[1.0] * 5, np.ones(5), "uniform"])
def test_module_tensor_options_not_tensors(make, name, value):
    # was torch's TypeError from register_buffer
    _raises(SoftmaxkitTypeError, f"`{name}` must be a torch.Tensor", make, value)
    w = torch.arange(1.0, 6.0)
    assert getattr(make(w), name) is w  # a tensor is kept as it is, as torch's modules do


# ------------------------------------------- the public API with arrays on two devices

_META_CASES = [
    ("cross_entropy", lambda: sk.cross_entropy(X, T.to("meta")), "`target` is on device meta"),
    ("nll_loss", lambda: sk.nll_loss(X, T.to("meta")), "`target` is on device meta"),
    (
        "bce",
        lambda: sk.binary_cross_entropy_with_logits(X, Y.to("meta")),
        "`target` is on device meta",
    ),
    (
        "softmax where",
        lambda: sk.softmax(X, where=torch.ones(4, 5, dtype=torch.bool, device="meta")),
        "`where` is on device meta but `x` is on cpu",
    ),
    ("logsumexp b", lambda: sk.logsumexp(X, b=Y.to("meta")), "`b` is on device meta"),
]


@pytest.mark.parametrize(
    ("call", "match"), [(c, m) for _, c, m in _META_CASES], ids=[n for n, _, _ in _META_CASES]
)
def test_public_api_names_an_array_on_another_device(call, match):
    # was torch's RuntimeError from deep inside the array-agnostic engine
    _raises(SoftmaxkitValueError, match, call)


# --------------------------------------- data checks under torch.func transforms
# They were skipped under grad and vmap: a class index out of range gave a zero
# gradient, a NaN weight a NaN gradient, a target of 2.0 a loss.

_T_BAD = torch.tensor([0, 1, 5, 1])
_FUNC_CASES = [
    (
        "grad ce index",
        lambda: torch.func.grad(lambda a: skt.cross_entropy(a, _T_BAD))(X),
        "class index out of range: 5 at index",
    ),
    (
        "vmap nll 0-d target",
        lambda: torch.func.vmap(lambda a: skt.nll_loss(a, torch.tensor(7)))(X),
        "class index out of range: 7;",
    ),
    (
        "vmap batched targets",
        lambda: torch.func.vmap(skt.cross_entropy)(X[:, None], torch.tensor([[0], [1], [9], [1]])),
        r"class index out of range: 9 at index \(2, 0\)",
    ),
    (
        "grad negative probabilities",
        lambda: torch.func.grad(lambda a: skt.cross_entropy(a, -P))(X),
        "negative probability",
    ),
    (
        "grad bce target",
        lambda: torch.func.grad(lambda a: skt.binary_cross_entropy_with_logits(a, Y + 1))(X),
        r"must lie in \[0, 1\]",
    ),
    (
        "grad nan weight",
        lambda: torch.func.grad(
            lambda a: skt.cross_entropy(a, T, torch.tensor([1.0, np.nan, 1.0, 1.0, 1.0]))
        )(X),
        "`weight` must be finite",
    ),
    (
        "vmap public op negative weight",
        lambda: torch.func.vmap(lambda a: sk.cross_entropy(a, torch.tensor(1), weight=-Y[0]))(X),
        "`weight` must be finite and >= 0",
    ),
]


@pytest.mark.parametrize(
    ("call", "match"), [(c, m) for _, c, m in _FUNC_CASES], ids=[n for n, _, _ in _FUNC_CASES]
)
def test_data_checks_run_under_torch_func(call, match):
    _raises(SoftmaxkitValueError, match, call)


def test_torch_func_takes_torch_weights():
    """Inside a transform the layer still takes any finite weight, as torch does."""
    w = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0])
    got = torch.func.grad(lambda a: skt.cross_entropy(a, T, w))(X)
    torch.testing.assert_close(got, torch.func.grad(lambda a: F.cross_entropy(a, T, w))(X))
    got = torch.func.vmap(lambda a: skt.nll_loss(a, torch.tensor(1), w))(X)
    torch.testing.assert_close(got, torch.func.vmap(lambda a: F.nll_loss(a, torch.tensor(1), w))(X))
    pw = torch.tensor([-0.5, 1.0, 2.0, 0.0, 1.0])
    got = torch.func.grad(lambda a: skt.binary_cross_entropy_with_logits(a, Y, w, pos_weight=pw))(X)
    want = torch.func.grad(lambda a: F.binary_cross_entropy_with_logits(a, Y, w, pos_weight=pw))(X)
    torch.testing.assert_close(got, want)


def test_probability_targets_refuse_a_class_ignore_index():
    # torch raises too; it was ignored
    _raises(
        SoftmaxkitValueError,
        "`ignore_index`=2 names a class",
        skt.cross_entropy,
        X,
        P,
        ignore_index=2,
    )
    torch.testing.assert_close(skt.cross_entropy(X, P, ignore_index=-1), F.cross_entropy(X, P))


def test_overflowing_float32_loss_is_inf_without_a_warning():
    x = torch.tensor([[1e38, 1e38, -1e38]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = skt.cross_entropy(
            x, torch.tensor([2]), torch.tensor([1.0, 2.0, 3.0]), reduction="none"
        )
    assert torch.isinf(got).all()


# --------------------------------------------------------- linear_cross_entropy


def test_linear_ce_no_features():
    # D = 0: every logit is 0 (was torch's reshape error)
    got = skt.linear_cross_entropy(torch.randn(3, 0), torch.randn(5, 0), torch.tensor([0, 1, 2]))
    torch.testing.assert_close(got, torch.tensor(np.log(5.0), dtype=torch.float32))


def test_linear_ce_names_a_non_finite_weight():
    w = torch.tensor([1.0, np.nan, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    _raises(
        SoftmaxkitValueError,
        "`weight` must be finite",
        skt.linear_cross_entropy,
        H,
        W,
        TL,
        weight=w,
    )


def test_linear_ce_float64_smoothed_sum_gradients():
    # the smoothing term's eps / V was rounded to float32 in the gradient
    h = H.double().requires_grad_()
    w = W.double().requires_grad_()
    skt.linear_cross_entropy(h, w, TL, reduction="sum", label_smoothing=0.2).backward()
    gh, gw = h.grad, w.grad
    h.grad = w.grad = None
    F.cross_entropy(h @ w.T, TL, reduction="sum", label_smoothing=0.2).backward()
    torch.testing.assert_close(gh, h.grad, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(gw, w.grad, rtol=1e-13, atol=1e-15)
