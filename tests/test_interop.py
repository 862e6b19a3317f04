"""The core API's edges with other libraries: traced labels, mixed array libraries,
unsupported array types, dtype promotion, NumPy scalars and complex logsumexp."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit import SoftmaxkitTypeError, SoftmaxkitValueError

LOGITS = np.array([[2.0, 1.0, 0.1, -1.0], [0.5, 2.5, 0.3, 0.0], [0.0, 0.0, 0.0, 3.0]])
LABELS = np.array([0, 1, 3])


# ---- labels under tracing ----------------------------------------------------------


@pytest.fixture
def jax_x64():
    jax = pytest.importorskip("jax")
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield jax
    jax.config.update("jax_enable_x64", old)


@pytest.mark.parametrize("kind", ["int", "float_index", "prob", "weight", "bce", "numpy_labels"])
def test_closed_over_labels_under_jit_grad(jax_x64, kind):
    # the labels are the point here: float32 logits in fast mode keep the compile short
    jax = jax_x64
    jnp = jax.numpy
    x = jnp.asarray(LOGITS, dtype=jnp.float32)
    y = jnp.asarray(LABELS)
    fast = {"precision": "fast"}
    yf = jnp.asarray(LABELS, dtype=jnp.float32)
    p = jnp.asarray(np.eye(4)[LABELS] * 0.9 + 0.025, dtype=jnp.float32)
    w = jnp.asarray([1.0, 2.0, 0.5, 1.0], dtype=jnp.float32)
    t = jnp.asarray((LOGITS > 0.5).astype(np.float32))
    f = {
        "int": lambda z: sk.cross_entropy(z, y, **fast),
        "float_index": lambda z: sk.cross_entropy(z, yf, **fast),
        "prob": lambda z: sk.cross_entropy(z, p, **fast),
        "weight": lambda z: sk.cross_entropy(z, y, weight=w, **fast),
        "bce": lambda z: sk.binary_cross_entropy_with_logits(z, t, **fast),
        "numpy_labels": lambda z: sk.cross_entropy(z, LABELS, **fast),
    }[kind]
    g_jit = jax.jit(jax.grad(f))(x)
    g_eager = jax.grad(f)(x)
    np.testing.assert_allclose(np.asarray(g_jit), np.asarray(g_eager), rtol=1e-6, atol=1e-7)
    assert np.all(np.isfinite(np.asarray(g_jit)))


def test_bad_closed_over_labels_still_raise_under_jit(jax_x64):
    # checks run while tracing, so these raise before anything compiles
    jax = jax_x64
    jnp = jax.numpy
    x = jnp.asarray(LOGITS)
    bad = jnp.asarray([0, 1, 4])
    with pytest.raises(SoftmaxkitValueError, match=r"out of range: .*4"):
        jax.jit(jax.grad(lambda z: sk.cross_entropy(z, bad)))(x)
    neg = jnp.asarray(-np.ones(LOGITS.shape))
    with pytest.raises(SoftmaxkitValueError, match="negative probability"):
        jax.jit(lambda z: sk.cross_entropy(z, neg))(x)
    w = jnp.asarray([1.0, -1, 1, 1])
    with pytest.raises(SoftmaxkitValueError, match="`weight` must be finite and >= 0"):
        jax.jit(lambda z: sk.cross_entropy(z, LABELS, weight=w))(x)


def test_traced_labels_are_not_checked_and_do_not_crash(jax_x64):
    jax = jax_x64
    jnp = jax.numpy
    f = jax.jit(lambda z, t: sk.cross_entropy(z, t, reduction="none", precision="fast"))
    loss = np.asarray(f(jnp.asarray(LOGITS, dtype=jnp.float32), jnp.asarray(LABELS)))
    ref = sk.cross_entropy(LOGITS, LABELS, reduction="none")
    np.testing.assert_allclose(loss, ref, rtol=1e-6)


# ---- mixed libraries ---------------------------------------------------------------


def test_numpy_and_list_arguments_join_the_logits_library(backend):
    # the conversion is the point: fast mode keeps the lazy and compiled backends quick
    x = backend.asarray(LOGITS)
    w = np.array([1.0, 2.0, 0.5, 1.0])
    mask = LOGITS > -0.5
    fast = {"precision": "fast"}
    cases = [
        (sk.cross_entropy(x, LABELS, weight=w, **fast), sk.cross_entropy(LOGITS, LABELS, weight=w)),
        (sk.cross_entropy(x, LABELS.tolist(), **fast), sk.cross_entropy(LOGITS, LABELS)),
        (sk.softmax(x, where=mask, **fast), sk.softmax(LOGITS, where=mask)),
        (sk.logsumexp(x, b=w.tolist(), **fast), sk.logsumexp(LOGITS, b=w)),
    ]
    for got, want in cases:
        assert type(got) is type(x) or backend.name == "numpy"
        np.testing.assert_allclose(backend.to_numpy(got), want, rtol=1e-5)


def test_numpy_logits_do_not_adopt_another_library():
    torch = pytest.importorskip("torch")
    with pytest.raises(SoftmaxkitTypeError, match="first argument fixes the array library"):
        sk.cross_entropy(LOGITS, torch.asarray(LABELS))


# ---- no silent conversions ---------------------------------------------------------


class _Foreign:
    """An array-like from a library softmaxkit does not know (it has ``__array__``)."""

    def __init__(self, a):
        self._a = np.asarray(a)

    def __array__(self, dtype=None, copy=None):
        return self._a if dtype is None else self._a.astype(dtype)


@pytest.mark.parametrize(
    "call",
    [
        lambda f: sk.softmax(f),
        lambda f: sk.log_softmax(LOGITS, where=f),
        lambda f: sk.logsumexp(LOGITS, b=f),
        lambda f: sk.cross_entropy(LOGITS, f),
        lambda f: sk.cross_entropy(f, LABELS),
        lambda f: sk.sigmoid(f),
        lambda f: sk.softmax([f, f]),
    ],
)
def test_unknown_array_types_are_refused(call):
    with pytest.raises(SoftmaxkitTypeError, match=r"_Foreign.*not convert silently"):
        call(_Foreign(LOGITS))


def test_tensorflow_tensors_are_refused_in_a_child_process():
    # find_spec, not importorskip: TensorFlow must never load in this process (a later
    # Triton import would abort it)
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow not installed: pip install softmaxkit[tensorflow]")
    code = textwrap.dedent(
        """
        import numpy as np, tensorflow as tf, softmaxkit as sk
        calls = [
            lambda: sk.softmax(tf.constant([1.0, 2.0])),
            lambda: sk.logsumexp(tf.constant([1.0, 2.0])),
            lambda: sk.cross_entropy(np.zeros((2, 3)), tf.constant([0, 1])),
            lambda: sk.softmax(np.zeros(2), where=tf.constant([True, False])),
        ]
        for c in calls:
            try:
                c()
            except sk.SoftmaxkitTypeError as e:
                assert "tensorflow" in str(e) and "softmaxkit.tensorflow" in str(e), e
            else:
                raise SystemExit("no error")
        print("refused", len(calls))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=240, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "refused 4" in run.stdout


# ---- promotion and NumPy scalars -----------------------------------------------------


@pytest.mark.parametrize(
    ("da", "db", "want"),
    [
        ("int32", "float32", "float64"),
        ("int64", "float32", "float64"),
        ("float32", "int32", "float64"),
        ("float32", "float32", "float32"),
        ("float32", "bool", "float32"),
        ("int64", "int64", "float64"),
    ],
)
def test_integers_promote_to_the_default_float_first(da, db, want):
    a = np.array([2, 1], dtype=da)
    b = np.array([1, -1], dtype=db) if db != "bool" else np.array([True, False])
    res = sk.logsumexp(a, b=b)
    assert res.dtype == np.dtype(want)
    ref = math.log(math.exp(2) - math.exp(1)) if db != "bool" else 2.0
    assert math.isclose(float(res), ref, rel_tol=1e-6)


def test_numpy_zero_d_results_are_numpy_scalars():
    assert type(sk.logsumexp(LOGITS, axis=None)) is np.float64
    assert type(sk.logsumexp(LOGITS[0].astype(np.float32))) is np.float32
    r, s = sk.logsumexp(np.zeros(2), b=np.array([1.0, -2.0]), return_sign=True)
    assert type(r) is np.float64 and type(s) is np.float64
    assert type(sk.cross_entropy(LOGITS, LABELS)) is np.float64
    loss, grad = sk.cross_entropy(LOGITS, LABELS, return_grad=True)
    assert type(loss) is np.float64 and isinstance(grad, np.ndarray)
    assert type(sk.nll_loss(sk.log_softmax(LOGITS), LABELS)) is np.float64
    assert type(sk.binary_cross_entropy_with_logits(LOGITS, LOGITS > 0)) is np.float64
    assert type(sk.softmax(np.float32(3.0), axis=None)) is np.float32
    assert isinstance(sk.logsumexp(LOGITS), np.ndarray)  # not 0-d: stays an array


# ---- complex logsumexp ----------------------------------------------------------------


def _ref_complex(z, b=None, axis=None):
    import mpmath

    mpmath.mp.dps = 40
    z = np.asarray(z)
    b = np.ones_like(z) if b is None else np.broadcast_to(b, z.shape)
    total = mpmath.fsum(
        mpmath.mpc(bi) * mpmath.exp(mpmath.mpc(zi)) for zi, bi in zip(z, b, strict=True)
    )
    return complex(mpmath.log(total))


def test_complex_logsumexp_matches_a_high_precision_reference():
    rng = np.random.default_rng(7)
    for _ in range(20):
        z = rng.normal(0, 30, 6) + 1j * rng.uniform(-20, 20, 6)
        got = sk.logsumexp(z)
        want = _ref_complex(z)
        assert -math.pi < got.imag <= math.pi
        assert abs(got - want) <= 4e-16 * max(1.0, abs(want))
        got32 = sk.logsumexp(z.astype(np.complex64))
        assert got32.dtype == np.complex64
        assert abs(complex(got32) - want) <= 2e-7 * max(1.0, abs(want))
    # a tiny sum next to a dominant term keeps its real part (log1p, not log(1 + s))
    got = sk.logsumexp(np.array([0.0 + 0.5j, -40.0 + 0.5j]))
    assert math.isclose(got.real, math.exp(-40), rel_tol=1e-14)
    assert math.isclose(got.imag, 0.5, rel_tol=1e-15)


def test_complex_logsumexp_branch_sign_and_weights():
    z = np.array([1 + 1j, 2 - 1j, -2 + 3j])
    res, sgn = sk.logsumexp(z, return_sign=True)
    total = np.sum(np.exp(z))
    assert np.isrealobj(res)
    np.testing.assert_allclose(sgn, total / abs(total), rtol=1e-15)
    np.testing.assert_allclose(sgn * np.exp(res), total, rtol=1e-15)
    # weights may be complex, or complex weights may meet real x
    b = np.array([1j, -1.0, 0.5 + 0.5j])
    np.testing.assert_allclose(sk.logsumexp(z, b=b), _ref_complex(z, b), rtol=1e-15)
    xr = np.array([0.0, 0.0])
    np.testing.assert_allclose(
        sk.logsumexp(xr, b=np.array([1j, 1.0])), math.log(2) / 2 + 0.25j * math.pi
    )
    # the imaginary part stays in (-pi, pi] where the angles add past pi
    w = sk.logsumexp(np.array([3.0j, 3.1j]), axis=None)
    assert -math.pi < w.imag <= math.pi
    np.testing.assert_allclose(w, np.log(np.exp(3.0j) + np.exp(3.1j)), rtol=1e-15)
    # masked entries and zero weights are left out
    m = sk.logsumexp(z, where=np.array([True, False, True]))
    np.testing.assert_allclose(m, _ref_complex(z[[0, 2]]), rtol=1e-15)


def test_complex_logsumexp_on_backends(backend):
    if backend.name in ("array_api_strict", "dask") and backend.lazy is None:
        pytest.skip("unreachable")
    z = np.array([[1 + 1j, 2 - 1j, -2 + 3j], [0.5j, -1 - 0.5j, 700 + 0j]])
    dt = "complex128" if backend.has_float64 else "complex64"
    got = backend.to_numpy(sk.logsumexp(backend.asarray(z, dtype=dt), axis=-1))
    want = np.array([_ref_complex(r) for r in z])
    tol = 1e-14 if backend.has_float64 else 2e-6
    np.testing.assert_allclose(got, want, rtol=tol)


@pytest.mark.parametrize(
    "call",
    [
        lambda z: sk.softmax(z),
        lambda z: sk.log_softmax(z),
        lambda z: sk.cross_entropy(z[None], np.array([0])),
        lambda z: sk.sigmoid(z),
        lambda z: sk.softmax([1j, 2.0]),
    ],
)
def test_complex_input_is_refused_outside_logsumexp(call):
    with pytest.raises(SoftmaxkitTypeError, match="complex"):
        call(np.array([1 + 1j, 2.0 + 0j]))


# ---- SciPy's own test file -------------------------------------------------------------


def test_scipy_logsumexp_suite_passes():
    """SciPy's ``special/tests/test_logsumexp.py`` (from the installed wheel) against us.

    It runs in a child pytest with SciPy's conftest; ``tests/peer_suites/
    sk_scipy_plugin.py`` maps SciPy's ``axis=None`` default and lists the deliberate
    divergences (none today) as strict xfails.
    """
    scipy = pytest.importorskip("scipy")
    import os
    from pathlib import Path

    path = Path(scipy.__file__).parent / "special" / "tests" / "test_logsumexp.py"
    if not path.exists():
        pytest.skip("this SciPy wheel ships without its tests")
    env = dict(os.environ)
    here = Path(__file__).parent / "peer_suites"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(here), env.get("PYTHONPATH")]))
    env.pop("SCIPY_ARRAY_API", None)
    cmd = [
        sys.executable, "-m", "pytest", str(path), "-q", "-p", "no:cacheprovider",
        "-p", "sk_scipy_plugin", "-W", "ignore::pytest.PytestRemovedIn10Warning",
        "--rootdir", str(path.parent),
    ]  # fmt: skip
    run = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env=env, cwd=str(path.parent), check=False
    )
    tail = run.stdout[-4000:]
    assert run.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail, tail


# ---- float64 scoped to the call on JAX without x64 ---------------------------------------


def test_jax_without_x64_computes_float32_in_scoped_float64():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    from softmaxkit._namespace import make_plan

    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    try:
        x = jnp.asarray(np.array([[0.0, -40.0, 3.5], [1.0, 1.0, -np.inf]], dtype=np.float32))
        plan = make_plan(jnp, x, "accurate")
        assert plan.mode == "wide" and plan.x64
        f = jax.jit(lambda v: sk.log_softmax(v))
        got = f(x)
        assert got.dtype == jnp.float32
        assert not jax.config.jax_enable_x64  # the scope did not leak
        assert jnp.asarray(1.0).dtype == jnp.float32
        want = sk.log_softmax(np.asarray(x))
        np.testing.assert_array_equal(np.asarray(got), want)  # correctly rounded: bitwise
        g = jax.jit(jax.grad(lambda v: sk.logsumexp(v).sum()))(x)
        assert g.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(g)))
    finally:
        jax.config.update("jax_enable_x64", old)


def test_engine_variable_switches_the_native_kernels_off():
    code = (
        "import numpy as np, softmaxkit as sk\n"
        "from softmaxkit import _dispatch\n"
        "assert _dispatch.FORCE_AGNOSTIC and not _dispatch.available()\n"
        "x = np.random.default_rng(1).normal(0, 3, (4, 50))\n"
        "print(sk.softmax(x).tobytes().hex())\n"
    )
    import os

    env = dict(os.environ, SOFTMAXKIT_ENGINE="agnostic")
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    x = np.random.default_rng(1).normal(0, 3, (4, 50))
    # the oracle and the native kernel agree bitwise on correctly rounded float64 results
    # except in rare ties; compare within 1 ulp
    got = np.frombuffer(bytes.fromhex(run.stdout.strip()), dtype=np.float64).reshape(4, 50)
    np.testing.assert_array_max_ulp(got, sk.softmax(x), maxulp=1)
