"""The public surface: names, signatures, the exception family, imports, devices."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import softmaxkit as sk
from tests._helpers import run

OPS_WITH_AXIS = [
    sk.softmax,
    sk.log_softmax,
    sk.logsumexp,
    sk.cross_entropy,
    sk.nll_loss,
    sk.softmax_vjp,
    sk.log_softmax_vjp,
    sk.logsumexp_vjp,
]
ARRAY_ARGS = {
    "softmax": ["x"],
    "log_softmax": ["x"],
    "logsumexp": ["x"],
    "cross_entropy": ["logits", "target"],
    "nll_loss": ["log_probs", "target"],
    "sigmoid": ["x"],
    "log_sigmoid": ["x"],
    "binary_cross_entropy_with_logits": ["logits", "target"],
    "softmax_vjp": ["y", "g"],
    "log_softmax_vjp": ["y", "g"],
    "logsumexp_vjp": ["x", "g"],
}


def test_all_lists_exactly_the_public_names():
    public = {n for n in dir(sk) if not n.startswith("_")}
    modules = {n for n in public if inspect.ismodule(getattr(sk, n))}
    assert set(sk.__all__) - {"__version__"} == public - modules
    assert len(sk.__all__) == len(set(sk.__all__))


@pytest.mark.parametrize("name", sorted(ARRAY_ARGS))
def test_arrays_positional_only_options_keyword_only(name):
    sig = inspect.signature(getattr(sk, name))
    params = list(sig.parameters.values())
    positional = [p.name for p in params if p.kind is p.POSITIONAL_ONLY]
    assert positional == ARRAY_ARGS[name]
    rest = [p for p in params if p.kind is not p.POSITIONAL_ONLY]
    assert all(p.kind is p.KEYWORD_ONLY for p in rest)
    assert sig.parameters["precision"].default == "accurate"


@pytest.mark.parametrize("fn", OPS_WITH_AXIS, ids=lambda f: f.__name__)
def test_axis_defaults_to_last(fn):
    assert inspect.signature(fn).parameters["axis"].default == -1


def test_exception_family():
    assert issubclass(sk.SoftmaxkitValueError, sk.SoftmaxkitError)
    assert issubclass(sk.SoftmaxkitValueError, ValueError)
    assert issubclass(sk.SoftmaxkitTypeError, sk.SoftmaxkitError)
    assert issubclass(sk.SoftmaxkitTypeError, TypeError)


def test_import_loads_no_framework():
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        import softmaxkit as sk
        x = np.array([[2.0, 1.0, 0.1]])
        sk.softmax(x); sk.log_softmax(x); sk.logsumexp(x)
        sk.cross_entropy(x, np.array([0]), return_grad=True)
        sk.binary_cross_entropy_with_logits(x, np.ones_like(x))
        heavy = {"torch", "jax", "jaxlib", "dask", "matplotlib", "scipy", "array_api_strict"}
        loaded = sorted(heavy & set(sys.modules))
        print(",".join(loaded))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"import softmaxkit loaded {out}"


def test_version():
    assert isinstance(sk.__version__, str)
    assert sk.__version__.count(".") >= 2


def test_python_sequences_become_numpy():
    y = sk.softmax([2.0, 1.0, 0.1])
    assert isinstance(y, np.ndarray)
    np.testing.assert_allclose(y.sum(), 1.0)
    ce = sk.cross_entropy([[2.0, 1.0, 0.1]], [0])
    assert isinstance(ce, np.float64)  # a 0-d result is a NumPy scalar, as from np.sum


def test_torch_inputs_are_not_modified():
    torch = pytest.importorskip("torch")
    x = torch.tensor([[1.0, -torch.inf, 3.0], [torch.inf, 0.0, torch.nan]])
    t = torch.tensor([0, 1])
    before = x.clone()
    for fn in (sk.softmax, sk.log_softmax, sk.logsumexp):
        fn(x)
    sk.cross_entropy(x, t, return_grad=True, label_smoothing=0.1)
    assert torch.equal(torch.nan_to_num(x), torch.nan_to_num(before))


def test_device_is_propagated_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    dev = xps.Device("device1")
    x = xps.asarray([[1.0, 2.0, 3.0], [0.0, -xps.inf, 1.0]], device=dev)
    t = xps.asarray([0, 2], device=dev)
    for out in (
        sk.softmax(x),
        sk.log_softmax(x, precision="fast"),
        sk.logsumexp(x),
        sk.cross_entropy(x, t),
        sk.sigmoid(x),
    ):
        assert out.device == dev


def test_torch_meta_device_stays_lazy():
    torch = pytest.importorskip("torch")
    x = torch.empty((4, 5), device="meta")
    t = torch.empty((4,), dtype=torch.int64, device="meta")
    assert sk.softmax(x).device.type == "meta"
    assert sk.cross_entropy(x, t, reduction="none").shape == (4,)


def test_precision_modes_agree_closely(backend):
    rng = np.random.default_rng(3)
    x = rng.normal(0, 4, (8, 33))
    acc = run(backend, sk.log_softmax, x, precision="accurate")
    fast = run(backend, sk.log_softmax, x, precision="fast")
    np.testing.assert_allclose(acc, fast, rtol=1e-5, atol=1e-6)


def test_temperature_scales_logits(backend):
    x = np.array([[1.5, 0.8, -0.2]])
    a = run(backend, sk.softmax, x, temperature=2.0)
    b = run(backend, sk.softmax, x / 2.0)
    np.testing.assert_allclose(a, b, rtol=1e-6)


_LONGDOUBLE = np.dtype(np.longdouble).itemsize > 8  # long double is double on some platforms


@pytest.mark.skipif(not _LONGDOUBLE, reason="numpy.longdouble is float64 on this platform")
@pytest.mark.parametrize("name", sorted(ARRAY_ARGS))
def test_longdouble_input_is_refused_naming_the_argument(name):
    """float128 input was computed in float64 and returned as float128: logsumexp of
    [1e400, 1e399] gave inf, softmax [0.5, 0.5]."""
    fn = getattr(sk, name)
    x = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    args = {
        "logits": x,
        "x": x,
        "y": sk.softmax(x),
        "log_probs": sk.log_softmax(x),
        "g": np.ones_like(x),
    }
    if name in ("cross_entropy", "nll_loss"):
        args["target"] = np.array([0, 2])
    elif name == "binary_cross_entropy_with_logits":
        args["target"] = np.ones_like(x) / 2
    if name == "logsumexp_vjp":
        args["g"] = np.ones(2)
    for arg in ARRAY_ARGS[name]:
        if name in ("cross_entropy", "nll_loss") and arg == "target":
            continue  # class indices are integers
        bad = [args[a].astype(np.longdouble) if a == arg else args[a] for a in ARRAY_ARGS[name]]
        before = bad[ARRAY_ARGS[name].index(arg)].copy()
        with pytest.raises(sk.SoftmaxkitTypeError, match=rf"`{arg}` has dtype float\d+.*float64"):
            fn(*bad)
        np.testing.assert_array_equal(bad[ARRAY_ARGS[name].index(arg)], before)


@pytest.mark.skipif(not _LONGDOUBLE, reason="numpy.longdouble is float64 on this platform")
def test_longdouble_scalars_lists_weights_and_complex_are_refused():
    big = np.array([np.longdouble("1e400"), np.longdouble("1e399")])
    with pytest.raises(sk.SoftmaxkitTypeError, match="`x` has dtype float"):
        sk.logsumexp(big)
    with pytest.raises(sk.SoftmaxkitTypeError, match="`x` has dtype float"):
        sk.softmax([np.longdouble(1.0), np.longdouble(2.0)])
    with pytest.raises(sk.SoftmaxkitTypeError, match="`x` has dtype float"):
        sk.logsumexp(np.longdouble(2.0))
    with pytest.raises(sk.SoftmaxkitTypeError, match="`b` has dtype float"):
        sk.logsumexp(np.ones(2), b=big)
    with pytest.raises(sk.SoftmaxkitTypeError, match=r"`x` has dtype complex.*complex128"):
        sk.logsumexp(big.astype(np.clongdouble))
    with pytest.raises(sk.SoftmaxkitTypeError, match="`target` has dtype float"):
        sk.cross_entropy(np.ones((1, 2)), np.array([[0.5, 0.5]], np.longdouble))
    with pytest.raises(sk.SoftmaxkitTypeError, match="`x` has dtype float"):
        sk.LogSumExpState.from_block(big)
    for dt in ("float16", "float32", "float64", "complex64", "complex128"):  # unaffected
        assert sk.logsumexp(np.array([1.0, 2.0], dt)).dtype == np.dtype(dt)
