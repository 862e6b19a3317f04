"""The C core inside JAX programs (XLA FFI): bitwise parity with NumPy, autodiff, vmap.

Every op with a native kernel runs on CPU JAX arrays as a custom call; its
results must equal the NumPy path bit for bit (same engines, same order of
sums), whatever the thread count, under ``jit`` and ``vmap``; ``check_grads``
must pass in forward and reverse mode to second order and ``jax.hessian`` work.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="jax not installed: pip install softmaxkit[jax]")
import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import softmaxkit as sk  # noqa: E402
import softmaxkit.jax as skj  # noqa: E402
from softmaxkit.jax import _ffi  # noqa: E402

pytestmark = pytest.mark.skipif(
    not skj.available(), reason="built without jaxlib's FFI headers (see README: JAX path)"
)


def test_handlers_built_when_jaxlib_is_installed() -> None:
    # the build finds jaxlib whenever the building Python has it (meson.build)
    if importlib.util.find_spec("jaxlib") is not None:
        assert skj.available()


@pytest.fixture(params=["x32", "x64"])
def x64(request: Any) -> Any:
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", request.param == "x64")
    try:
        yield request.param == "x64"
    finally:
        jax.config.update("jax_enable_x64", old)


def _rng() -> np.random.Generator:
    return np.random.default_rng(7)


def _same(a: Any, b: Any) -> None:
    if isinstance(b, tuple):
        assert isinstance(a, tuple) and len(a) == len(b)
        for u, v in zip(a, b, strict=True):
            _same(u, v)
        return
    a = np.asarray(a)
    assert a.dtype == np.asarray(b).dtype
    np.testing.assert_array_equal(a, b)


def _cases(dt: str) -> list[tuple[str, Any, dict[str, Any]]]:
    rng = _rng()
    x = (rng.standard_normal((3, 5, 9)) * 4).astype(dt)
    x[0, 0, 0] = np.inf
    x[1, 1, :] = -np.inf
    x[2, 2, 3] = np.nan
    xf = np.where(np.isfinite(x), x, 0.5).astype(dt)
    g = rng.standard_normal(x.shape).astype(dt)
    t = rng.integers(0, 9, (3, 5))
    w = rng.random(9).astype(dt)
    m = rng.random(x.shape) > 0.3
    b = (rng.standard_normal(x.shape) + 0.3).astype(dt)
    y = (rng.random(x.shape) > 0.5).astype(dt)
    s = sk.softmax(xf)
    ls = sk.log_softmax(xf)
    return [
        ("softmax", (x,), {}),
        ("softmax", (x,), {"axis": (0, 2), "precision": "fast"}),
        ("softmax", (x,), {"axis": 1, "where": m, "temperature": 0.7}),
        ("log_softmax", (x,), {}),
        ("log_softmax", (x,), {"precision": "fast", "where": m}),
        ("logsumexp", (x,), {"axis": (1, 2), "keepdims": True}),
        ("logsumexp", (xf,), {"b": b, "return_sign": True}),
        ("logsumexp", (xf,), {"b": b, "where": m}),
        ("cross_entropy", (xf, t), {}),
        ("cross_entropy", (xf, t), {"reduction": "none", "precision": "fast"}),
        ("cross_entropy", (xf, t), {"weight": w, "ignore_index": 2, "return_grad": True}),
        ("cross_entropy", (xf, t), {"z_loss": 1e-3, "reduction": "sum", "return_grad": True}),
        ("cross_entropy", (xf, t), {"where": m, "return_grad": True}),
        ("sigmoid", (x,), {}),
        ("log_sigmoid", (x,), {"precision": "fast"}),
        ("binary_cross_entropy_with_logits", (xf, y), {"return_grad": True}),
        ("binary_cross_entropy_with_logits", (xf, y), {"pos_weight": w, "reduction": "none"}),
        ("softmax_vjp", (s, g), {}),
        ("log_softmax_vjp", (ls, g), {}),
    ]


def _jaxify(a: Any) -> Any:
    return jnp.asarray(a) if isinstance(a, np.ndarray) else a


@pytest.mark.parametrize(("dt", "x64"), [("float32", "x32"), ("float64", "x64")], indirect=["x64"])
def test_bitwise_equal_to_numpy_path_under_jit(dt: str, x64: bool) -> None:
    # float32 with x64 off (JAX's default) and float64 with x64 on; float32 data runs
    # the same kernels either way
    for name, args, kw in _cases(dt):
        fn = getattr(sk, name)
        want = fn(*args, **kw)
        jargs = [_jaxify(a) for a in args]
        jkw = {k: _jaxify(v) for k, v in kw.items()}
        # eager calls run a jitted program with the custom call in it
        _same(fn(*jargs, **jkw), want)
        if name in ("cross_entropy", "binary_cross_entropy_with_logits"):
            continue  # the core's target checks under a user's jit: issue 10 section 4
        got = jax.jit(lambda *a, fn=fn, jkw=jkw: fn(*a, **jkw))(*jargs)
        _same(got, want)


def test_subnormal_results_are_not_flushed() -> None:
    # XLA's CPU threads flush subnormals to zero; the handlers compute as NumPy does
    x = np.array([[0.0, -100.0, -90.0, -103.0]], np.float32)
    got = np.asarray(jax.jit(lambda x: sk.softmax(x))(jnp.asarray(x)))
    _same(got, sk.softmax(x))
    assert 0 < got[0, 3] < np.finfo(np.float32).tiny
    b = np.array([[1.0, 1e-39, 1.0]], np.float32)
    got = jax.jit(lambda x, b: sk.logsumexp(x, b=b, axis=1))(jnp.asarray(x[:, :3]), b)
    _same(np.asarray(got), sk.logsumexp(x[:, :3], b=b, axis=1))


def test_compiles_to_one_custom_call() -> None:
    x = jnp.ones((4, 6), jnp.float32)
    hlo = jax.jit(lambda x: sk.log_softmax(x)).lower(x).compile().as_text()
    assert 'custom_call_target="softmaxkit_softmax"' in hlo
    assert hlo.count("custom-call(") == 1


def test_results_do_not_depend_on_threads() -> None:
    x = jnp.asarray(_rng().standard_normal((64, 2048)).astype(np.float32))
    t = jnp.asarray(_rng().integers(0, 2048, 64))
    one = sk.cross_entropy(x, t, return_grad=True, threads=1)
    two = sk.cross_entropy(x, t, return_grad=True, threads=2)
    _same(tuple(np.asarray(a) for a in one), tuple(np.asarray(a) for a in two))
    _same(sk.softmax(x, threads=1), np.asarray(sk.softmax(x, threads=2)))


def test_large_results_equal_the_numpy_path() -> None:
    # results of 4 MiB and more take the handlers' huge-page hint (xla_ffi.c); the
    # values must not change
    rng = _rng()
    xn = (rng.standard_normal((256, 4096)) * 4).astype(np.float32)
    tn = rng.integers(0, 4096, 256)
    x, t = jnp.asarray(xn), jnp.asarray(tn)
    _same(np.asarray(jax.jit(lambda x: skj.softmax(x))(x)), sk.softmax(xn))
    _same(np.asarray(jax.jit(lambda x: skj.log_softmax(x))(x)), sk.log_softmax(xn))
    got = jax.jit(lambda x, t: sk.cross_entropy(x, t, reduction="sum", return_grad=True))(x, t)
    _same(
        tuple(np.asarray(a) for a in got),
        sk.cross_entropy(xn, tn, reduction="sum", return_grad=True),
    )


def test_gradient_of_per_row_losses_is_one_kernel_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    # jax.grad of a reduction of per-row losses (optax's form) folds the cotangent into
    # the kernel's gradient pass: one custom call, no second pass over the gradient
    rng = _rng()
    xn = (rng.standard_normal((128, 1000)) * 4).astype(np.float32)
    tn = rng.integers(0, 1000, 128)
    x, t = jnp.asarray(xn), jnp.asarray(tn)
    f = jax.jit(jax.grad(lambda x, t: skj.softmax_cross_entropy_with_integer_labels(x, t).mean()))
    hlo = f.lower(x, t).compile().as_text()
    assert hlo.count("custom-call(") == 1
    assert "fusion" not in hlo.split("ENTRY")[1].split("custom-call(")[1]
    # the mean's cotangent 1/128 is exact: the NumPy path's mean gradient, bit for bit
    _same(np.asarray(f(x, t)), sk.cross_entropy(xn, tn, return_grad=True)[1])
    c = jnp.asarray(rng.random(128).astype(np.float32))
    got = jax.grad(lambda x: (skj.softmax_cross_entropy_with_integer_labels(x, t) * c).sum())(x)
    g = sk.cross_entropy(xn, tn, reduction="none", return_grad=True)[1]
    np.testing.assert_allclose(np.asarray(got), g * np.asarray(c)[:, None], rtol=2e-7, atol=1e-30)
    # and bitwise the same at any thread count (the count is read when tracing)
    monkeypatch.setenv("SOFTMAXKIT_NUM_THREADS", "1")
    one = jax.grad(lambda x: (skj.softmax_cross_entropy_with_integer_labels(x, t) * c).sum())(x)
    _same(np.asarray(one), np.asarray(got))


def test_vmap_batches_the_custom_call() -> None:
    rng = _rng()
    x = jnp.asarray(rng.standard_normal((3, 4, 6)).astype(np.float32))
    t = jnp.asarray(rng.integers(0, 6, (3, 4)))

    def f(x: Any, t: Any) -> Any:
        return sk.cross_entropy(x, t, return_grad=True)

    loss, grad = jax.vmap(f)(x, t)
    for i in range(3):
        li, gi = f(x[i], t[i])
        _same(np.asarray(loss[i]), np.asarray(li))
        _same(np.asarray(grad[i]), np.asarray(gi))
    jaxpr = str(jax.make_jaxpr(jax.vmap(f))(x, t))
    assert jaxpr.count("ffi_call") == 1 and "while" not in jaxpr and "scan" not in jaxpr
    sm = jax.vmap(jax.vmap(lambda r: skj.softmax(r)))(x)
    _same(np.asarray(sm), np.asarray(skj.softmax(x)))


def _check(f: Any, *args: Any, order: int = 2) -> None:
    # check_grads also calls f on NumPy arrays; mixing them with the JAX arrays the
    # lambdas close over is issue 10 section 4, so convert here
    def g(*a: Any) -> Any:
        return f(*(jnp.asarray(v) for v in a))

    # under jit: each derivative is traced and compiled once instead of op by op
    check_grads(jax.jit(g), args, order=order, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5)


def test_check_grads_both_modes_second_order() -> None:
    jax.config.update("jax_enable_x64", True)  # the session default (conftest); float64 data
    rng = _rng()
    x = jnp.asarray(rng.standard_normal((3, 5)))
    t = jnp.asarray(rng.integers(0, 5, 3))
    w = jnp.asarray(rng.random(5) + 0.5)
    m = jnp.asarray(rng.random((3, 5)) > 0.2).at[:, 0].set(True)
    b = jnp.asarray(rng.random((3, 5)) + 0.1)
    y = jnp.asarray(rng.random((3, 5)))
    _check(lambda x: sk.softmax(x, temperature=1.3), x)
    _check(lambda x: sk.log_softmax(x, where=m, axis=0), x)
    _check(lambda x: sk.logsumexp(x, b=b, axis=1), x, order=1)
    _check(lambda x: skj.logsumexp(x, axis=1, where=m), x, order=1)
    # the losses' engine directly: the core's target checks under jit are section 4's
    cfg = _ffi.Cfg(1, 1, sk._namespace.make_plan(jnp, x, "accurate"))

    def ce(x: Any, w: Any, **kw: Any) -> Any:
        opts = {"ignore_index": None, "z_loss": 0.0, "reduction": "mean", **kw}
        return _ffi.ce_index(x, t, w, None, cfg, want_grad=False, **opts)

    _check(lambda x: ce(x, w, z_loss=0.01), x)
    _check(lambda x: ce(x, None, ignore_index=1, reduction="none"), x, order=1)
    _check(lambda w: ce(x, w), w, order=1)
    pw = jnp.broadcast_to(w, x.shape)
    _check(lambda x: _ffi.bce(x, y, None, pw, cfg, reduction="sum", want_grad=False), x)
    _check(lambda y: skj.sigmoid_binary_cross_entropy(x, y), y, order=1)
    _check(sk.log_sigmoid, x, order=1)
    g = jnp.asarray(rng.standard_normal((3, 5)))
    _check(lambda y, g: sk.log_softmax_vjp(y, g), sk.log_softmax(x), g, order=1)


def test_gradients_use_the_native_vjp() -> None:
    x = jnp.asarray(_rng().standard_normal((4, 7)).astype(np.float32))
    g = jnp.asarray(_rng().standard_normal((4, 7)).astype(np.float32))
    _, pull = jax.vjp(lambda x: sk.log_softmax(x), x)
    (got,) = pull(g)
    _same(np.asarray(got), sk.log_softmax_vjp(np.asarray(sk.log_softmax(x)), np.asarray(g)))
    _, pull = jax.vjp(lambda x: sk.softmax(x), x)
    (got,) = pull(g)
    _same(np.asarray(got), sk.softmax_vjp(np.asarray(sk.softmax(x)), np.asarray(g)))


def test_hessian_of_cross_entropy() -> None:
    x = jnp.asarray(_rng().standard_normal((1, 5)).astype(np.float32))
    t = jnp.asarray([3])
    h = jax.hessian(lambda x: skj.softmax_cross_entropy_with_integer_labels(x, t).sum())(x)
    p = np.asarray(jax.nn.softmax(x))[0]
    np.testing.assert_allclose(np.asarray(h)[0, :, 0, :], np.diag(p) - np.outer(p, p), atol=1e-6)


def test_label_out_of_range_is_a_clear_error_under_jit() -> None:
    x = jnp.zeros((2, 3), jnp.float32)
    f = jax.jit(lambda x, t: sk.cross_entropy(x, t))
    with pytest.raises(Exception, match=r"target 5 out of range \[0, 3\)"):
        jax.block_until_ready(f(x, jnp.asarray([0, 5])))


def test_other_platforms_lower_the_agnostic_path(monkeypatch: Any) -> None:
    monkeypatch.setattr(_ffi, "cpu_only", lambda: False)
    cfg = _ffi.Cfg(1, 1, sk._namespace.make_plan(jnp, jnp.zeros(3, jnp.float32), "accurate"))

    def f(x: Any) -> Any:
        return _ffi.normalize_last(x, None, cfg, log=False, temperature=1.0)

    x = jnp.asarray(_rng().standard_normal((2, 5)).astype(np.float32))
    traced = jax.jit(f).trace(x)
    cpu = traced.lower(lowering_platforms=("cpu",)).as_text()
    assert "softmaxkit_softmax" in cpu
    tpu = traced.lower(lowering_platforms=("tpu",)).as_text()
    assert "softmaxkit_softmax" not in tpu and "exponential" in tpu
    # and the staged program still runs the kernel here
    _same(np.asarray(jax.jit(f)(x)), sk.softmax(np.asarray(x)))


def test_without_handlers_the_agnostic_path_runs(monkeypatch: Any) -> None:
    monkeypatch.setattr(_ffi, "_HANDLERS", None)
    x = _rng().standard_normal((3, 6)).astype(np.float32)
    cfg = _ffi.Cfg(1, 1, sk._namespace.make_plan(jnp, jnp.asarray(x), "accurate"))
    got = jax.jit(lambda x: _ffi.normalize_last(x, None, cfg, log=True, temperature=1.5))(x)
    np.testing.assert_allclose(np.asarray(got), sk.log_softmax(x, temperature=1.5), rtol=1e-6)
    hlo = jax.jit(lambda x: _ffi.normalize_last(x, None, cfg, log=True, temperature=1.5))
    assert "softmaxkit_softmax" not in hlo.lower(x).as_text()


def test_integer_labels_of_another_shape_are_refused_or_broadcast() -> None:
    """Labels of another shape than the logits' batch reached the kernel unchecked: it read
    and wrote past the buffers (garbage losses, then heap corruption). optax broadcasts
    them (take_along_axis); any other shape is a clear error, before and inside the FFI."""
    import optax

    from softmaxkit import SoftmaxkitValueError

    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 6)), jnp.float32)
    one = jnp.array([2])
    np.testing.assert_allclose(
        skj.softmax_cross_entropy_with_integer_labels(x, one),
        optax.softmax_cross_entropy_with_integer_labels(x, one),
        rtol=1e-6,
    )
    for bad in (jnp.arange(6), jnp.arange(3), jnp.zeros((2, 2), jnp.int32)):
        with pytest.raises(SoftmaxkitValueError, match="`labels` has shape"):
            skj.softmax_cross_entropy_with_integer_labels(x, bad)
        with pytest.raises(SoftmaxkitValueError, match="`labels` has shape"):
            jax.grad(lambda a, b=bad: skj.softmax_cross_entropy_with_integer_labels(a, b).sum())(x)
    # the handler itself refuses mismatched operands (a caller of the FFI op directly)
    from softmaxkit.jax._nn import prepare

    _, c, _ = prepare(x, "accurate", "logits")
    with pytest.raises(Exception, match="operand shapes do not match"):
        _ffi.ce_index(
            x, jnp.arange(6, dtype=jnp.int32), None, None, c, ignore_index=None, z_loss=0.0,
            reduction="none", want_grad=False, wrap_labels=True,
        )  # fmt: skip


def test_probability_labels_with_more_axes_broadcast_in_front() -> None:
    """skj.softmax_cross_entropy summed over the wrong axis when the labels had more
    axes than the logits; optax broadcasts them in front."""
    import optax

    logits = jnp.array([1.0, 2.0, 3.0])
    labels = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    got = skj.softmax_cross_entropy(logits, labels)
    want = optax.softmax_cross_entropy(logits, labels)
    assert got.shape == want.shape == (2,)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_logsumexp_weights_promote_and_broadcast_as_jax_nn() -> None:
    """skj.logsumexp(a, b=...) kept a's dtype (float16 with float32 weights) and refused
    weights of more axes; jax.nn promotes both and broadcasts them first."""
    a16 = jnp.array([1.0, 2.0, 3.0], jnp.float16)
    b32 = jnp.array([0.5, 1.0, 2.0], jnp.float32)
    got, want = skj.logsumexp(a16, b=b32), jax.nn.logsumexp(a16, b=b32)
    assert got.dtype == want.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-6)
    a = jnp.array([1.0, 2.0, 3.0])
    b = jnp.array([[1.0, 1.0, 1.0], [0.0, 2.0, 1.0]])
    got, want = skj.logsumexp(a, axis=-1, b=b), jax.nn.logsumexp(a, axis=-1, b=b)
    assert got.shape == want.shape == (2,)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    from softmaxkit import SoftmaxkitValueError

    with pytest.raises(SoftmaxkitValueError, match="`b` has shape"):
        skj.logsumexp(a, b=jnp.ones(4))


@pytest.mark.parametrize("engine", ["native", "agnostic"])
def test_weighted_logsumexp_of_traced_and_0d_input(monkeypatch: Any, engine: str) -> None:
    """logsumexp with ``b`` raised ConcretizationTypeError on the array-agnostic engine
    (0-d input, SOFTMAXKIT_ENGINE=agnostic, other platforms): a constant came from
    ``float()`` of a traced array."""
    from softmaxkit import _dispatch

    monkeypatch.setattr(_dispatch, "FORCE_AGNOSTIC", engine == "agnostic")
    x = jnp.array([1.0, 2.0, 3.0], jnp.float32)
    b = jnp.array([1.0, -2.0, 0.5], jnp.float32)
    lse, sign = sk.logsumexp(x, b=b, return_sign=True)
    want = np.log(abs(np.sum(np.array([1.0, -2.0, 0.5]) * np.exp([1.0, 2.0, 3.0]))))
    assert lse.dtype == jnp.float32 and float(sign) == -1.0
    assert float(lse) == float(np.float32(want))
    jitted = jax.jit(lambda a, w: sk.logsumexp(a, b=w, return_sign=True))(x, b)
    _same(jitted, (lse, sign))
    assert float(sk.logsumexp(x[2], b=b[2], axis=None)) == float(np.float32(3.0 + np.log(0.5)))
    got = jax.jit(lambda a, w: skj.logsumexp(a, b=w))(x[2], b[2])
    assert float(got) == float(np.float32(3.0 + np.log(0.5)))
    # weights near the overflow of the sum: the e * ln 2 correction is used
    big = sk.logsumexp(jnp.array([0.0, 0.0]), b=jnp.array([1e300, 1e300]))
    np.testing.assert_allclose(float(big), np.log(2e300), rtol=1e-15)


@pytest.mark.parametrize("x64", ["x32"], indirect=True)
def test_logsumexp_of_0d_and_empty_input_without_x64_rounds_correctly(x64: bool) -> None:
    """The 0-d / empty branch of skj.logsumexp ran the agnostic engine without the x64
    scope of its plan: float64 work truncated to float32 (1 ulp off), with warnings."""
    import warnings

    rng = np.random.default_rng(3)
    a = (rng.standard_normal(200) * 5).astype(np.float32)
    w = (np.abs(rng.standard_normal(200)) * 5 + 0.01).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = skj.logsumexp(jnp.float32(-5.4425898), b=jnp.float32(3.1630015))
        assert got.dtype == jnp.float32
        assert float(got) == float(np.float32(-4.2910686))  # correctly rounded (x32 gave ...68)
        for ai, wi in zip(a, w, strict=True):
            want = np.float32(np.float64(ai) + np.log(np.float64(wi)))
            assert float(skj.logsumexp(jnp.float32(ai), b=jnp.float32(wi))) == float(want)
        jitted = jax.jit(lambda u, v: skj.logsumexp(u, b=v))(jnp.float32(a[0]), jnp.float32(w[0]))
        assert float(jitted) == float(np.float32(np.float64(a[0]) + np.log(np.float64(w[0]))))
        empty = skj.logsumexp(jnp.zeros((0, 3), jnp.float32), axis=0)
        assert empty.dtype == jnp.float32 and empty.shape == (3,)
        assert bool(jnp.all(empty == -jnp.inf))
        huge = skj.logsumexp(jnp.float32(88.0), b=jnp.float32(3e38))  # warned of an overflow
        assert float(huge) == float(np.float32(88.0 + np.log(np.float64(np.float32(3e38)))))


@pytest.mark.skipif(np.dtype(np.longdouble).itemsize <= 8, reason="long double is double here")
def test_longdouble_numpy_input_is_refused_naming_the_argument() -> None:
    x = np.array([np.longdouble("1e400"), np.longdouble("1e399")])
    with pytest.raises(sk.SoftmaxkitTypeError, match=r"`x` has dtype float.*float64"):
        skj.softmax(x)
    with pytest.raises(sk.SoftmaxkitTypeError, match="`a` has dtype float"):
        skj.logsumexp(x)
    with pytest.raises(sk.SoftmaxkitTypeError, match="`b` has dtype float"):
        skj.logsumexp(np.ones(2), b=x)


@pytest.mark.parametrize("precision", ["accurate", "fast"])
def test_probability_targets_take_one_custom_call(x64: bool, precision: str) -> None:
    """Float32 logits with probability targets (float32, or float64 under x64): one custom
    call (``softmaxkit_prob_cross_entropy``), loss and gradient bitwise the NumPy path's
    in either precision, eagerly, under ``jit``, through ``jax.grad`` (per-row losses
    too) and ``vmap``."""
    rng = _rng()
    x = (rng.standard_normal((2, 12, 30)) * 3).astype(np.float32)
    q = rng.dirichlet(np.full(30, 0.5), (2, 12)).astype(np.float64 if x64 else np.float32)
    xj, qj = jnp.asarray(x), jnp.asarray(q)
    for kw in ({}, {"label_smoothing": 0.1, "z_loss": 1e-3}):
        for red in ("none", "mean", "sum"):
            opts: dict[str, Any] = {"reduction": red, "precision": precision, **kw}
            want = sk.cross_entropy(x, q, return_grad=True, **opts)
            got = sk.cross_entropy(xj, qj, return_grad=True, **opts)
            _same(tuple(np.asarray(v) for v in got), want)

            def f(a: Any, opts: dict[str, Any] = opts) -> Any:
                return sk.cross_entropy(a, qj, **opts)

            _same(np.asarray(jax.jit(f)(xj)), want[0])
            g = jax.grad(lambda a, f=f: jnp.sum(f(a)))(xj)
            if red == "none":  # the gradient of the items' sum
                want = sk.cross_entropy(x, q, return_grad=True, **{**opts, "reduction": "sum"})
            _same(np.asarray(g), want[1])
    f2 = jax.jit(lambda a, b: sk.cross_entropy(a, b, precision=precision))
    hlo = f2.lower(xj, qj).compile().as_text()
    assert 'custom_call_target="softmaxkit_prob_cross_entropy"' in hlo
    v = jax.vmap(lambda a, b: sk.cross_entropy(a, b, return_grad=True, precision=precision))(xj, qj)
    for i in range(2):
        _same((np.asarray(v[0][i]), np.asarray(v[1][i])),
              sk.cross_entropy(x[i], q[i], return_grad=True, precision=precision))  # fmt: skip


def test_probability_targets_the_core_declines_take_the_agnostic_path() -> None:
    """A row the core does not take (a +inf or NaN logit, target mass on a -inf one) flags
    the call, and the array-agnostic implementation answers, under jit too: the NumPy
    path's values."""
    rng = _rng()
    x = rng.standard_normal((4, 9)).astype(np.float32)
    q = rng.dirichlet(np.ones(9), 4).astype(np.float32)
    for pos, val in (((1, 2), np.inf), ((2, 3), np.nan), ((3, 4), -np.inf)):
        xb = x.copy()
        xb[pos] = val
        for precision in ("accurate", "fast"):
            want = sk.cross_entropy(xb, q, reduction="none", precision=precision)
            got = jax.jit(
                lambda a, b, p=precision: sk.cross_entropy(a, b, reduction="none", precision=p)
            )(xb, q)
            np.testing.assert_array_equal(np.asarray(got), want)


def test_probability_target_derivatives() -> None:
    """Forward and reverse mode agree; the Hessian of a row is ``S (diag p - p p^T)``
    (``S`` the target mass); the targets' gradient is ``-log_softmax(x)`` per row."""
    rng = _rng()
    x = jnp.asarray(rng.standard_normal((3, 6)).astype(np.float32))
    q = jnp.asarray(rng.dirichlet(np.ones(6), 3).astype(np.float32))
    f = lambda a: sk.cross_entropy(a, q, reduction="sum")  # noqa: E731
    t = jnp.asarray(rng.standard_normal((3, 6)).astype(np.float32))
    _, fwd = jax.jvp(f, (x,), (t,))
    np.testing.assert_allclose(float(fwd), float(jnp.sum(jax.grad(f)(x) * t)), rtol=1e-6)
    h = jax.hessian(lambda a: sk.cross_entropy(a, q[:1], reduction="sum"))(x[:1])
    p = np.asarray(jax.nn.softmax(x[:1]))[0]
    s = float(np.sum(np.asarray(q[0], np.float64)))
    np.testing.assert_allclose(np.asarray(h)[0, :, 0, :], s * (np.diag(p) - np.outer(p, p)),
                               atol=1e-6)  # fmt: skip
    gq = jax.grad(lambda b: sk.cross_entropy(x, b, reduction="sum"))(q)
    np.testing.assert_allclose(np.asarray(gq), -np.asarray(jax.nn.log_softmax(x)), rtol=1e-6)


@pytest.mark.parametrize("precision", ["accurate", "fast"])
def test_target_derivatives_at_classes_without_mass(precision: str) -> None:
    """The targets' derivative is ``-log_softmax(x)`` at classes whose target is 0 too (the
    array-agnostic loss left those classes out, so their derivative came out 0, which
    optax's own gradient check caught once ``skj.softmax_cross_entropy`` took the custom
    call); through ``sk.cross_entropy`` and ``skj.softmax_cross_entropy``, forward and
    reverse mode, against optax."""
    import optax

    x = jnp.array([[10.0, 1.0, -2.0], [1.0, 4.0, 0.2]], jnp.float32)
    q = jnp.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], jnp.float32)
    tq = jnp.array([[0.3, -0.2, 0.1], [0.05, 0.2, -0.1]], jnp.float32)
    tx = jnp.full_like(x, 0.1)
    x64 = np.asarray(x, np.float64)
    want = np.log(np.sum(np.exp(x64), axis=-1, keepdims=True)) - x64  # float64: JAX's
    # float32 log_softmax loses the dominant entry's digits
    fns = (
        lambda a, b: sk.cross_entropy(a, b, reduction="none", precision=precision),
        lambda a, b: skj.softmax_cross_entropy(a, b, precision=precision),
    )
    for f in fns:
        np.testing.assert_allclose(
            np.asarray(jax.grad(lambda b, f=f: jnp.sum(f(x, b)))(q)), want, rtol=1e-6
        )
        _, tan = jax.jvp(f, (x, q), (tx, tq))
        _, peer = jax.jvp(optax.softmax_cross_entropy, (x, q), (tx, tq))
        np.testing.assert_allclose(np.asarray(tan), np.asarray(peer), rtol=1e-5, atol=1e-6)


def test_masked_classes_without_target_mass_add_zero_on_every_route() -> None:
    """``skj.softmax_cross_entropy``: a ``-inf`` logit of a class without target mass adds
    0 (optax: NaN) on the custom-call route (float32, one class axis) and on the
    log-softmax route (``where=``, two class axes, float64 under x64 aside), with finite
    gradients; the loss is optax's ``safe_softmax_cross_entropy``'s."""
    import optax

    x = jnp.array([[0.0, -jnp.inf, 1.0], [2.0, 0.5, -1.0]], jnp.float32)
    q = jnp.array([[0.5, 0.0, 0.5], [0.2, 0.3, 0.5]], jnp.float32)
    want = np.asarray(optax.safe_softmax_cross_entropy(x, q))
    assert np.isnan(np.asarray(optax.softmax_cross_entropy(x, q))[0])
    routes = (
        lambda a: skj.softmax_cross_entropy(a, q),  # the custom call
        lambda a: skj.softmax_cross_entropy(a, q, where=jnp.ones(a.shape, bool)),
        lambda a: skj.softmax_cross_entropy(a[:, None, :], q[:, None, :], axis=(1, 2)),
    )
    for f in routes:
        np.testing.assert_allclose(np.asarray(f(x)), want, rtol=1e-6)
        g = jax.grad(lambda a, f=f: jnp.sum(f(a)))(x)
        assert bool(jnp.all(jnp.isfinite(g))) and float(g[0, 1]) == 0.0
