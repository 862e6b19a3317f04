"""Invariants (hypothesis) and gradients (finite differences, torch and JAX autograd)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import softmaxkit as sk
from tests._helpers import run
from tests.conftest import active_backends

# Hypothesis draws a new shape per example; JAX would compile each one, so the
# property tests run on the eager backends and JAX gets fixed-shape tests below.
# Only the requested ones (SOFTMAXKIT_TEST_BACKENDS); conftest fails the run when a
# requested backend does not import, so none of these is silently missing.
EAGER = [n for n in ("numpy", "torch", "array_api_strict") if n in active_backends()]

finite = st.floats(-60, 60, allow_nan=False, allow_infinity=False, width=32)
shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=7)


def _backend(name):
    from tests.conftest import _make_backend

    return _make_backend(name)


needs_eager = pytest.mark.skipif(
    not EAGER, reason="none of numpy, torch, array_api_strict is among the requested backends"
)


@pytest.fixture(params=EAGER)
def eager(request):
    return _backend(request.param)


@needs_eager
@settings(max_examples=40, deadline=None)
@given(x=hnp.arrays(np.float64, shapes, elements=finite), data=st.data())
def test_softmax_sums_to_one_and_is_bounded(x, data):
    for name in EAGER:
        b = _backend(name)
        axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
        for dtype in ("float32", "float64"):
            y = run(b, sk.softmax, x, dtype=dtype, axis=axis)
            eps = np.finfo(y.dtype).eps
            assert np.all((y >= 0) & (y <= 1))
            total = y.astype(np.float64).sum(axis=axis)
            np.testing.assert_allclose(total, 1.0, atol=x.shape[axis] * eps)


@needs_eager
@settings(max_examples=40, deadline=None)
@given(
    k=hnp.arrays(np.int64, shapes, elements=st.integers(-400, 400)),
    c=st.integers(-1000, 1000),
    precision=st.sampled_from(["accurate", "fast"]),
)
def test_shift_invariance_is_exact(k, c, precision):
    # dyadic inputs so that x + c is exact: the shifted rows must give identical bits
    x = k / 8.0
    for name in EAGER:
        b = _backend(name)
        for fn in (sk.softmax, sk.log_softmax):
            a = run(b, fn, x, precision=precision)
            s = run(b, fn, x + c, precision=precision)
            np.testing.assert_array_equal(a, s)


@needs_eager
@settings(max_examples=40, deadline=None)
@given(x=hnp.arrays(np.float64, shapes, elements=finite))
def test_log_softmax_is_x_minus_logsumexp(x):
    for name in EAGER:
        b = _backend(name)
        ls = run(b, sk.log_softmax, x)
        lse = run(b, sk.logsumexp, x, keepdims=True)
        assert np.all(lse >= x.max(axis=-1, keepdims=True))
        # x - lse rounds once more; compare within a unit of the larger magnitude
        tol = 4 * np.finfo(np.float64).eps * np.maximum(np.abs(x), np.abs(lse))
        assert np.all(np.abs(ls - (x - lse)) <= tol + 1e-300)


@needs_eager
@settings(max_examples=40, deadline=None)
@given(
    x=hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=finite),
    data=st.data(),
)
def test_index_target_equals_one_hot(x, data):
    n, c = x.shape
    t = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    onehot = np.eye(c)[t]
    for name in EAGER:
        b = _backend(name)
        a, ga = run(b, sk.cross_entropy, x, t, reduction="none", return_grad=True)
        h, gh = run(b, sk.cross_entropy, x, onehot, reduction="none", return_grad=True)
        np.testing.assert_allclose(a, h, rtol=1e-13, atol=1e-300)
        np.testing.assert_allclose(ga, gh, rtol=1e-12, atol=1e-15)


@settings(max_examples=25, deadline=None)
@given(x=hnp.arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(2, 9)), elements=finite))
def test_permutation_equivariance(x):
    perm = np.arange(x.shape[1])[::-1]
    y = sk.softmax(x)
    yp = sk.softmax(x[:, perm])
    np.testing.assert_allclose(yp, y[:, perm], rtol=2 * np.finfo(np.float64).eps)


# ----------------------------------------------------------------------------------------
# Gradients


def _fd(f, x, h=1e-6):
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        xp_, xm = x.copy(), x.copy()
        xp_[i] += h
        xm[i] -= h
        g[i] = (f(xp_) - f(xm)) / (2 * h)
    return g


CE_OPTIONS = [
    {},
    {"weight": np.array([1.0, 2.0, 0.5, 3.0])},
    {"label_smoothing": 0.2},
    {"z_loss": 1e-2},
    {"weight": np.array([1.0, 2.0, 0.5, 3.0]), "label_smoothing": 0.3, "z_loss": 1e-3},
    {"ignore_index": 2},
    {"reduction": "sum"},
    {"reduction": "none"},
]


@pytest.mark.parametrize("opts", CE_OPTIONS, ids=lambda o: ",".join(o) or "plain")
def test_cross_entropy_grad_matches_finite_differences(opts):
    rng = np.random.default_rng(5)
    x = rng.normal(0, 2, (5, 4))
    t = np.array([0, 1, 2, 3, 2])

    def f(v):
        return float(np.sum(sk.cross_entropy(v, t, **opts)))

    _, g = sk.cross_entropy(x, t, return_grad=True, **opts)
    np.testing.assert_allclose(g, _fd(f, x), rtol=1e-6, atol=1e-8)


def test_soft_target_grad_matches_finite_differences():
    rng = np.random.default_rng(6)
    x = rng.normal(0, 2, (4, 5))
    p = rng.dirichlet(np.ones(5), 4)
    w = rng.uniform(0.5, 2, 5)
    opts = {"weight": w, "label_smoothing": 0.1, "z_loss": 1e-2}
    _, g = sk.cross_entropy(x, p, return_grad=True, **opts)
    np.testing.assert_allclose(
        g, _fd(lambda v: float(sk.cross_entropy(v, p, **opts)), x), rtol=1e-6, atol=1e-8
    )


def test_bce_grad_matches_finite_differences():
    rng = np.random.default_rng(7)
    x = rng.normal(0, 3, (3, 4))
    y = rng.uniform(0, 1, (3, 4))
    opts = {"weight": rng.uniform(0.5, 2, (3, 4)), "pos_weight": np.array([1.0, 2.0, 3.0, 0.5])}
    _, g = sk.binary_cross_entropy_with_logits(x, y, return_grad=True, **opts)
    fd = _fd(lambda v: float(sk.binary_cross_entropy_with_logits(v, y, **opts)), x)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("opts", CE_OPTIONS[:3] + CE_OPTIONS[5:], ids=lambda o: ",".join(o))
def test_cross_entropy_loss_and_grad_match_torch(opts):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(8)
    x = rng.normal(0, 3, (6, 4))
    t = np.array([0, 1, 2, 3, 2, 2])
    topts = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in opts.items()}
    tx = torch.from_numpy(x).requires_grad_(True)
    tl = F.cross_entropy(tx, torch.from_numpy(t), **topts)
    tl.sum().backward()
    loss, g = sk.cross_entropy(x, t, return_grad=True, **opts)
    np.testing.assert_allclose(loss, tl.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(g, tx.grad.numpy(), rtol=1e-11, atol=1e-15)


def test_bce_matches_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(9)
    x = rng.normal(0, 3, (5, 3))
    y = rng.uniform(0, 1, (5, 3))
    pw = np.array([0.5, 1.0, 4.0])
    tx = torch.from_numpy(x).requires_grad_(True)
    ty, tpw = torch.from_numpy(y), torch.from_numpy(pw)
    tl = F.binary_cross_entropy_with_logits(tx, ty, pos_weight=tpw)
    tl.backward()
    loss, g = sk.binary_cross_entropy_with_logits(x, y, pos_weight=pw, return_grad=True)
    np.testing.assert_allclose(loss, tl.item(), rtol=1e-12)
    np.testing.assert_allclose(g, tx.grad.numpy(), rtol=1e-11, atol=1e-15)


def test_vjps_match_torch_autograd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    x = rng.normal(0, 3, (4, 6))
    g = rng.normal(0, 1, (4, 6))
    tx = torch.from_numpy(x).requires_grad_(True)
    for sk_fn, vjp, t_fn in (
        (sk.softmax, sk.softmax_vjp, torch.softmax),
        (sk.log_softmax, sk.log_softmax_vjp, torch.log_softmax),
    ):
        tx.grad = None
        (t_fn(tx, -1) * torch.from_numpy(g)).sum().backward()
        ours = vjp(sk_fn(x), g)
        np.testing.assert_allclose(ours, tx.grad.numpy(), rtol=1e-10, atol=1e-14)
    tx.grad = None
    gl = rng.normal(0, 1, 4)
    (torch.logsumexp(tx, -1) * torch.from_numpy(gl)).sum().backward()
    np.testing.assert_allclose(sk.logsumexp_vjp(x, gl), tx.grad.numpy(), rtol=1e-12)


def test_torch_autograd_through_agnostic_path():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    x = torch.from_numpy(rng.normal(0, 3, (3, 5))).requires_grad_(True)
    top = x.data[0].max()
    x.data[0, 1] = top  # a tie at the maximum must not break the gradient
    x.data[0, 3] = top
    g = torch.from_numpy(rng.normal(0, 1, (3, 5)))
    for ours, ref in ((sk.softmax, torch.softmax), (sk.log_softmax, torch.log_softmax)):
        (a,) = torch.autograd.grad((ours(x) * g).sum(), x)
        (b,) = torch.autograd.grad((ref(x, -1) * g).sum(), x)
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    (a,) = torch.autograd.grad(sk.logsumexp(x).sum(), x)
    (b,) = torch.autograd.grad(torch.logsumexp(x, -1).sum(), x)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("x64", [True, False], ids=["x64", "x32"])
def test_jax_grad_through_agnostic_path(x64):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", x64)
    try:
        rng = np.random.default_rng(12)
        x = rng.normal(0, 2, (4, 5))
        x[2] = -np.inf  # a fully masked row: gradient 0, not NaN
        t = np.array([1, 0, 3, 4])
        xj = jnp.asarray(x)
        tj = jnp.asarray(t)
        grad = jax.grad(lambda v: sk.cross_entropy(v, tj))(xj)
        _, ours = sk.cross_entropy(x, t, return_grad=True)
        g = np.asarray(grad)
        assert np.all(np.isfinite(g))
        tol = 1e-12 if x64 else 2e-6
        np.testing.assert_allclose(g, ours, rtol=tol, atol=tol)
        rows = [[True] * 5, [True] * 5, [False] * 5, [True, False, True, False, True]]
        where = jnp.asarray(np.array(rows))
        gl = jax.grad(lambda v: jnp.sum(sk.logsumexp(v, where=where)))(jnp.where(where, xj, 0.0))
        assert np.all(np.isfinite(np.asarray(gl)))
        np.testing.assert_array_equal(np.asarray(gl)[2], np.zeros(5))
    finally:
        jax.config.update("jax_enable_x64", old)
