"""softmaxkit.tensorflow, run in a child process by tests/test_tensorflow.py.

TensorFlow must never load in the main pytest process (a later Triton import
would abort it: both bundle LLVM), so this file is not collected there (its name
does not start with ``test_``) and runs as ``python -m pytest tests/child/tf_suite.py``.

What is checked: the accuracy bound on every TF float dtype (eagerly and under
XLA; TF flushes subnormal results to zero, so those are allowed to be 0 here and
nowhere else), special values and masks against the NumPy core (the contract),
gradients (against TF's where TF is right, finite where TF's are NaN), errors,
and a SavedModel reloaded in a fresh process with its custom gradient.

Every test runs on three routes (the ``route`` fixture): "direct", the default,
where eager calls on CPU tensors run the C core on the tensors' NumPy views
(the softmax family and the sigmoid family) and graphs run it as XLA custom
calls; "native", the custom calls for eager calls too (the direct route turned
off; the sigmoid family then runs as TensorFlow operations); and "tf_ops", the
TensorFlow-op kernels (GPUs, half precision, other axes, dynamic shapes,
SavedModels), forced by turning both off.
"""

from __future__ import annotations

import doctest
import json
import math
import os
import subprocess
import sys
import textwrap

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

import softmaxkit as sk
import softmaxkit.tensorflow as sktf
from softmaxkit import SoftmaxkitTypeError, SoftmaxkitValueError, _ckernels
from softmaxkit.tensorflow import _direct, _functional, _native
from tests import _datasets, _reference
from tests._measure import OPS, packed_case
from tests._reference import ulp_stats

BOUND = {"float32": 0.5 * 1.01, "float64": 1.0}
SPEC = (
    ("A1", 1), ("A2", 1), ("A3", 1), ("A4", 1), ("A5", 1), ("A6", 1), ("A7", 4), ("A8", 1),
    ("A9", 9), ("A10", 1), ("A11", 1), ("A12", 1), ("G1", 8), ("G2", 8), ("G3", 4),
    ("G4", 4), ("R1", 6), ("R3", 6), ("R4", 6),
)  # fmt: skip
WIDTH, ROWS = 512, 64
INF = math.inf
_ELIGIBLE = _native.eligible  # the real test, before any test turns the route off


def _route_off(x, axes):
    return False


def _direct_off(*tensors):
    return False


@pytest.fixture(autouse=True, params=["direct", "native", "tf_ops"])
def route(request, monkeypatch):
    """Run the test as shipped, then without the eager direct route, then on TF ops."""
    if request.param in ("direct", "native"):
        if not hasattr(_ckernels, "xla_register"):
            pytest.skip("built without XLA's FFI header: reinstall with tensorflow present")
        assert _native.available(), "the C core did not register with TensorFlow's XLA"
    if request.param in ("native", "tf_ops"):
        monkeypatch.setattr(_direct, "usable", _direct_off)
    if request.param == "tf_ops":
        monkeypatch.setattr(_native, "eligible", _route_off)
    return request.param


def _ops(precision: str = "accurate") -> dict:
    return {
        "softmax": lambda x, t: sktf.softmax(x, precision=precision),
        "log_softmax": lambda x, t: sktf.log_softmax(x, precision=precision),
        "logsumexp": lambda x, t: sktf.reduce_logsumexp(x, axis=-1, precision=precision),
        "cross_entropy": lambda x, t: sktf.sparse_softmax_cross_entropy_with_logits(
            t, x, precision=precision
        ),
    }


def _check_case(c, outputs: dict) -> list[str]:
    """Normal outputs within the bound; subnormal ones within it or flushed to 0."""
    failures = []
    tiny = np.finfo(c.dtype).tiny
    for op in OPS:
        out = outputs[op]
        want = c.refs[op]
        assert out.dtype == np.dtype(c.dtype), (op, out.dtype)
        st = ulp_stats(out, want, c.dtype, c.compared(op))
        if not st.max_ulp_normal <= BOUND[c.dtype]:
            failures.append(f"{op} {c.dtype}: {st.describe(c.inputs(op)[0])}")
        sub = (np.abs(want) < tiny) & np.isfinite(want)
        err = _reference.ulp_error(out, want, c.dtype)
        wrong = sub & ~(err <= BOUND[c.dtype]) & ~(out == 0)
        if wrong.any():
            failures.append(f"{op} {c.dtype}: a subnormal output neither exact nor flushed")
    return failures


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_accuracy_bound_eager(dtype):
    c = packed_case(dtype, SPEC, WIDTH, ROWS)
    fns = _ops()
    outs = {}
    for op in OPS:
        x, t = c.inputs(op)
        outs[op] = fns[op](tf.constant(x), None if t is None else tf.constant(t)).numpy()
    assert not (f := _check_case(c, outs)), "\n".join(f)


def test_accuracy_bound_xla_float32():
    """One XLA compilation for the four ops (compiling is the cost here)."""
    c = packed_case("float32", SPEC, WIDTH, ROWS)
    fns = _ops()

    @tf.function(jit_compile=True)
    def all_ops(x, xc, t):
        return {
            op: fns[op](xc if op == "cross_entropy" else x, t if op == "cross_entropy" else None)
            for op in OPS
        }

    res = all_ops(tf.constant(c.x), tf.constant(c.ce_x), tf.constant(c.ce_t))
    outs = {k: v.numpy() for k, v in res.items()}
    assert not (f := _check_case(c, outs)), "\n".join(f)


def test_double_word_float64_under_xla():
    """float64 under XLA: the error-free transformations survive the simplifier, and the
    special rows (padded with -inf, which changes nothing) match the core; one compilation."""
    c = packed_case("float64", (("A7", 2), ("G1", 4), ("R3", 2)), 256, 8)
    special = np.full((len(SPECIAL), 256), -np.inf)
    special[:, :3] = SPECIAL
    x = np.concatenate([c.x, special])

    @tf.function(jit_compile=True)
    def lsm(x):
        return sktf.log_softmax(x)

    out = lsm(tf.constant(x)).numpy()
    n = len(c.x)
    st = ulp_stats(out[:n], c.refs["log_softmax"], "float64", c.compared("log_softmax"))
    assert st.max_ulp_normal <= BOUND["float64"], st.describe(c.x)
    np.testing.assert_array_equal(out[n:], sk.log_softmax(special))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_rounded_once(dtype):
    """float16/bfloat16: the float64 result rounded once (0 allowed where it is subnormal)."""
    npdt = np.float16 if dtype == "float16" else ml_dtypes.bfloat16
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((16, 300)) * 4).astype(npdt)
    x[0, :] = 0
    x[1, 0] = 12.0  # a dominant logit
    labels = rng.integers(0, 300, 16)
    x64 = x.astype(np.float64)
    tiny = float(ml_dtypes.finfo(npdt).tiny)
    cases = {
        "softmax": (sktf.softmax(tf.constant(x)), sk.softmax(x64)),
        "log_softmax": (sktf.log_softmax(tf.constant(x)), sk.log_softmax(x64)),
        "logsumexp": (sktf.reduce_logsumexp(tf.constant(x), axis=-1), sk.logsumexp(x64)),
        "ce": (
            sktf.sparse_softmax_cross_entropy_with_logits(tf.constant(labels), tf.constant(x)),
            sk.cross_entropy(x64, labels, reduction="none"),
        ),
    }
    for name, (got, want64) in cases.items():
        g = got.numpy()
        assert g.dtype == npdt, name
        want = want64.astype(npdt)
        ok = (g == want) | ((np.abs(want64) < tiny) & (g == 0))
        assert ok.all(), f"{name}: {g[~ok][:4]} != {want[~ok][:4]}"


def test_exp_reduced_adversarial():
    """The engine's float64 exp (issue 11): relative error below 2**-34 from 0 down to -708
    (reduction ties at (k + 1/2) ln2 and their neighbours, arguments near 0, the last
    normal results), exactly 1 at 0, exactly 0 below -708 and at -inf, NaN kept;
    eagerly and under XLA (where the simplifier must not undo the reduction)."""
    from softmaxkit.tensorflow import _engine

    ln2 = math.log(2)
    k = np.arange(1021.0)  # (k + 1/2) ln2 <= 708
    ties = -(k + 0.5) * ln2
    rng = np.random.default_rng(11)
    d = np.concatenate(
        [
            -rng.uniform(0, 708, 50_000),
            -rng.uniform(0, 1e-6, 500),
            [0.0, -0.0, -1e-300, -5e-324, -(2.0**-60), -(2.0**-30)],
            ties,
            np.nextafter(ties, 0),
            np.nextafter(ties, -INF),
            -k * ln2,
            [-707.9, -708.0, np.nextafter(-708.0, 0)],
        ]
    )
    below = np.array([np.nextafter(-708.0, -INF), -709.0, -745.2, -1e4, -1e300, -INF])
    xla = tf.function(_engine.exp_reduced, jit_compile=True)
    want = np.exp(d.astype(np.longdouble))
    for run in (xla, _engine.exp_reduced):
        got = run(tf.constant(d)).numpy()
        rel = np.abs(got.astype(np.longdouble) / want - 1)
        worst = int(np.argmax(rel))
        assert rel[worst] < 2.0**-34, (d[worst], got[worst], float(rel[worst]))
        assert (got[d == 0] == 1.0).all()
        assert (run(tf.constant(below)).numpy() == 0).all()
        assert np.isnan(run(tf.constant([math.nan, -1.0], tf.float64)).numpy()[0])


def test_float32_tails_near_underflow():
    """Entries near float32's underflow (e**-87.3 is its smallest normal, e**-103.3 half its
    smallest subnormal), ties at the maximum, a masked-out tail: softmax, log_softmax and
    cross-entropy within 0.505 ulp of the float64 core; subnormal results exact or 0 (TF
    flushes them)."""
    tail = [0.0, 0.0, -1.0, -80.0, -87.0, -87.33, -87.34, -88.0, -88.72, -88.73, -95.0]
    tail += [-103.27, -103.28, -104.0, -110.0, -750.0, -INF]
    rng = np.random.default_rng(12)
    x = np.tile(np.array(tail, np.float32), (6, 3))
    x[1] += 40.0  # a shifted row: the same differences
    x[2, :5] = 50.0  # five tied maxima
    x[3] = rng.uniform(-110, 0, x.shape[1]).astype(np.float32)
    x[4] = (rng.standard_normal(x.shape[1]) * 30).astype(np.float32)
    x[5, 3] = 5.0  # one dominant logit over the tails
    labels = np.array([3, 4, 5, 6, 7, 8])
    x64 = x.astype(np.float64)
    tiny = float(np.finfo(np.float32).tiny)
    cases = {
        "softmax": (sktf.softmax(tf.constant(x)), sk.softmax(x64)),
        "log_softmax": (sktf.log_softmax(tf.constant(x)), sk.log_softmax(x64)),
        "ce": (
            sktf.sparse_softmax_cross_entropy_with_logits(tf.constant(labels), tf.constant(x)),
            sk.cross_entropy(x64, labels, reduction="none"),
        ),
    }
    for name, (got, want) in cases.items():
        g = got.numpy()
        st = ulp_stats(g, want, "float32")
        assert st.max_ulp_normal <= BOUND["float32"], f"{name}: {st.describe(x)}"
        err = _reference.ulp_error(g, want, "float32")
        sub = (np.abs(want) < tiny) & np.isfinite(want)
        assert not (sub & ~(err <= BOUND["float32"]) & (g != 0)).any(), name


def test_fast_float64_keeps_tf_exp():
    """precision="fast" on float64 computes in float64 with ``tf.exp``: the engine's own exp
    (2**-34) is only accurate enough for float32 and narrower results. On logits in [0, 1]
    (``x - max`` exact), fast float64 stays within 3 ulp; that exp would give 2**18."""
    rng = np.random.default_rng(13)
    x = rng.uniform(0, 1, (8, 700))
    labels = rng.integers(0, 700, 8)
    dtype = "float64"
    cases = {
        "softmax": (sktf.softmax(tf.constant(x), precision="fast"), sk.softmax(x)),
        "log_softmax": (sktf.log_softmax(tf.constant(x), precision="fast"), sk.log_softmax(x)),
        "ce": (
            sktf.sparse_softmax_cross_entropy_with_logits(
                tf.constant(labels), tf.constant(x), precision="fast"
            ),
            sk.cross_entropy(x, labels, reduction="none"),
        ),
    }
    for name, (got, want) in cases.items():
        st = ulp_stats(got.numpy(), want, dtype)
        assert st.max_ulp_normal <= 3.0, f"{name} {dtype}: {st.describe(x)}"


def test_float16_sums_do_not_overflow():
    z = tf.zeros([100_000], tf.float16)
    assert float(sktf.reduce_logsumexp(z)) == float(np.float16(math.log(1e5)))
    assert float(tf.math.reduce_logsumexp(z)) == INF  # TF's own overflows
    assert float(sktf.softmax(z)[0]) == float(np.float16(1e-5))
    assert float(sktf.log_softmax(z)[0]) == float(np.float16(-math.log(1e5)))


# ------------------------------------------------------------- the contract's rows

SPECIAL = [
    [0.0, -40.0, 1.0],
    [INF, 0.0, 1.0],
    [INF, INF, 0.0],
    [-INF, -INF, -INF],
    [0.0, -INF, 1.0],
    [math.nan, 0.0, 1.0],
    [INF, math.nan, 0.0],
    [3e38, -3e38, 0.0],
]


def _core(x, labels, q, where, temperature):
    """The NumPy core's values (the loss at a temperature from its log_softmax)."""
    lsm = sk.log_softmax(x, where=where, temperature=temperature)
    nothing_left = ~np.isfinite(lsm).any(axis=-1) & ~np.isnan(lsm).any(axis=-1)
    picked = -np.take_along_axis(lsm, labels[:, None], axis=-1)[:, 0]
    with np.errstate(invalid="ignore"):
        dense = np.where(q == 0, 0.0, q * -lsm.astype(np.float64)).sum(axis=-1)
    out = {
        "softmax": sk.softmax(x, where=where, temperature=temperature),
        "log_softmax": lsm,
        "logsumexp": sk.logsumexp(x, where=where) if temperature == 1.0 else None,
        "sparse": sk.cross_entropy(x, labels, where=where, reduction="none"),
        "dense": sk.cross_entropy(x, q, where=where, reduction="none"),
    }
    if temperature != 1.0:
        out["sparse"] = np.where(nothing_left, 0, picked).astype(x.dtype)
        out["dense"] = np.where(nothing_left, 0, dense).astype(x.dtype)
    return out


def _ours(x, labels, q, where, temperature):
    kw = {"where": where, "temperature": temperature}
    return {
        "softmax": sktf.softmax(x, **kw),
        "log_softmax": sktf.log_softmax(x, **kw),
        "logsumexp": sktf.reduce_logsumexp(x, axis=-1, where=where) if temperature == 1.0 else None,
        "sparse": sktf.sparse_softmax_cross_entropy_with_logits(labels, x, **kw),
        "dense": sktf.softmax_cross_entropy_with_logits(q, x, **kw),
    }


@pytest.mark.parametrize(
    ("dtype", "mode"), [("float32", "eager"), ("float64", "eager"), ("float32", "xla")]
)
def test_special_rows_match_the_core(dtype, mode):
    """Every special row gives the NumPy core's value: eagerly and under XLA, bitwise."""
    x = np.array(SPECIAL, dtype=dtype)
    labels = np.array([0, 0, 2, 1, 0, 1, 0, 0])
    q = np.zeros_like(x)
    q[np.arange(len(x)), labels] = 1.0
    want = _core(x, labels, q, None, 1.0)
    fn = _ours if mode == "eager" else tf.function(_ours, jit_compile=True)
    got = fn(tf.constant(x), tf.constant(labels), tf.constant(q), None, 1.0)
    for k, w in want.items():
        if w is None:
            continue
        g = got[k].numpy()
        np.testing.assert_array_equal(g, w, err_msg=f"{k} {dtype} {mode}")


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_where_and_temperature_match_the_core(temperature):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((6, 9)) * 3).astype(np.float32)
    where = rng.random((6, 9)) < 0.6
    where[0] = False  # a fully masked row
    labels = np.argmax(np.where(where, x, -np.inf), axis=1)
    q = sk.softmax(rng.standard_normal((6, 9)).astype(np.float32), where=where)
    want = _core(x, labels, q, where, temperature)
    got = _ours(
        tf.constant(x), tf.constant(labels), tf.constant(q), tf.constant(where), temperature
    )
    for k, w in want.items():
        if w is None:
            continue
        g = got[k].numpy()
        rtol = 1e-6 if k == "dense" else 0
        np.testing.assert_allclose(g, w, rtol=rtol, atol=0, err_msg=k)
    assert (got["softmax"].numpy()[0] == 0).all()
    assert got["sparse"].numpy()[0] == 0.0


def test_sigmoid_family_bound():
    for dtype in ("float32", "float64"):
        x, y = _datasets.sigmoid_inputs(dtype)
        xt, yt = tf.constant(x), tf.constant(y)
        cases = (
            ("sigmoid", sktf.sigmoid(xt), _reference.sigmoid_ref(x)),
            ("log_sigmoid", sktf.log_sigmoid(xt), _reference.log_sigmoid_ref(x)),
            ("bce", sktf.sigmoid_cross_entropy_with_logits(yt, xt), _reference.bce_ref(x, y)),
        )
        for name, got, want in cases:
            st = ulp_stats(got.numpy(), want, dtype)
            assert st.max_ulp_normal <= BOUND[dtype], f"{name} {dtype}: {st.describe()}"


@pytest.mark.parametrize("mode", ["eager", "xla"])
def test_sigmoid_limits_and_gradients(mode):
    x = tf.constant([INF, -INF, INF, -INF, -40.0, 40.0, 0.3])
    y = tf.constant([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.25])

    def f(x, y):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            tape.watch(y)
            a = sktf.sigmoid_cross_entropy_with_logits(y, x)
            b = sktf.weighted_cross_entropy_with_logits(y, x, 2.0)
            c = sktf.log_sigmoid(x)
        return a, b, c, tape.gradient(a, x), tape.gradient(b, x), tape.gradient(c, x)

    fn = f if mode == "eager" else tf.function(f, jit_compile=True)
    a, b, c, ga, gb, gc = (t.numpy() for t in fn(x, y))
    np.testing.assert_array_equal(a[:4], [0.0, 0.0, INF, INF])
    np.testing.assert_array_equal(b[:4], [0.0, 0.0, INF, INF])
    assert a[4] == np.float32(4.248354e-18) and b[5] == np.float32(8.496708e-18)
    # TF's gradients are the right limits here: equal to them
    np.testing.assert_array_equal(ga[:4], [0.0, 0.0, 1.0, -1.0])
    np.testing.assert_array_equal(gb[:4], [0.0, 0.0, 1.0, -2.0])
    np.testing.assert_array_equal(gc[:4], [0.0, 1.0, 0.0, 1.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        ref = tf.nn.sigmoid_cross_entropy_with_logits(y, x)
    np.testing.assert_allclose(ga[4:], tape.gradient(ref, x).numpy()[4:], rtol=1e-6)


# -------------------------------------------------------------------- gradients


def test_gradients_equal_tensorflow_on_ordinary_data():
    rng = np.random.default_rng(1)
    x = tf.constant((rng.standard_normal((8, 50)) * 2).astype(np.float32))
    g = tf.constant(rng.standard_normal((8, 50)).astype(np.float32))
    labels = tf.constant(rng.integers(0, 50, 8))
    q = tf.constant(sk.softmax(rng.standard_normal((8, 50)).astype(np.float32)))
    pairs = (
        (
            lambda v: tf.reduce_sum(sktf.softmax(v) * g),
            lambda v: tf.reduce_sum(tf.nn.softmax(v) * g),
        ),
        (
            lambda v: tf.reduce_sum(sktf.log_softmax(v) * g),
            lambda v: tf.reduce_sum(tf.nn.log_softmax(v) * g),
        ),
        (
            lambda v: tf.reduce_sum(sktf.reduce_logsumexp(v, axis=1) * g[:, 0]),
            lambda v: tf.reduce_sum(tf.math.reduce_logsumexp(v, axis=1) * g[:, 0]),
        ),
        (
            lambda v: tf.reduce_sum(
                sktf.sparse_softmax_cross_entropy_with_logits(labels, v) * g[:, 1]
            ),
            lambda v: tf.reduce_sum(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels, v) * g[:, 1]
            ),
        ),
        (
            lambda v: tf.reduce_sum(sktf.softmax_cross_entropy_with_logits(q, v) * g[:, 2]),
            lambda v: tf.reduce_sum(tf.nn.softmax_cross_entropy_with_logits(q, v) * g[:, 2]),
        ),
    )

    def values_and_grads(fns, v):
        out = []
        for f in fns:
            with tf.GradientTape() as tape:
                tape.watch(v)
                a = f(v)
            out.append((a, tape.gradient(a, v)))
        return out

    ours = [p[0] for p in pairs]
    theirs = values_and_grads([p[1] for p in pairs], x)
    xla = tf.function(lambda v: values_and_grads(ours, v), jit_compile=True)  # one compilation
    for got in (values_and_grads(ours, x), xla(x)):
        for i, ((a, ga), (b, gb)) in enumerate(zip(got, theirs, strict=True)):
            np.testing.assert_allclose(float(a), float(b), rtol=2e-6, err_msg=str(i))
            np.testing.assert_allclose(ga.numpy(), gb.numpy(), rtol=2e-5, atol=1e-7, err_msg=str(i))
    # dense CE: the gradient with respect to the labels is -log_softmax, as in TF
    with tf.GradientTape() as tape:
        tape.watch(q)
        a = tf.reduce_sum(sktf.softmax_cross_entropy_with_logits(q, x))
    np.testing.assert_allclose(tape.gradient(a, q).numpy(), -sk.log_softmax(x.numpy()), rtol=1e-6)


def test_gradients_finite_at_masked_rows_and_infinities():
    x = tf.constant([[-INF, -INF, -INF], [INF, 0.0, 1.0], [INF, INF, 0.0], [0.0, -INF, 1.0]])
    labels = tf.constant([0, 0, 1, 2])
    q = tf.one_hot(labels, 3)
    fns = {
        "softmax": lambda v: tf.reduce_sum(sktf.softmax(v) * tf.constant([1.0, 2.0, 3.0])),
        "log_softmax": lambda v: tf.reduce_sum(
            tf.where(tf.math.is_finite(sktf.log_softmax(v)), sktf.log_softmax(v), 0.0)
        ),
        "logsumexp": lambda v: tf.reduce_sum(
            tf.where(tf.math.is_finite(sktf.reduce_logsumexp(v, axis=1)), 1.0, 0.0)
            * sktf.reduce_logsumexp(v, axis=1)
        ),
        "sparse": lambda v: tf.reduce_sum(sktf.sparse_softmax_cross_entropy_with_logits(labels, v)),
        "dense": lambda v: tf.reduce_sum(sktf.softmax_cross_entropy_with_logits(q, v)),
    }

    def grads(v):
        out = {}
        for name, f in fns.items():
            with tf.GradientTape() as tape:
                tape.watch(v)
                val = f(v)
            out[name] = tape.gradient(val, v)
        return out

    for got in (grads(x), tf.function(grads, jit_compile=True)(x)):
        for name, grad in got.items():
            assert np.isfinite(grad.numpy()).all(), f"{name}: {grad.numpy()}"
    with tf.GradientTape() as tape:
        tape.watch(x)
        ce = sktf.sparse_softmax_cross_entropy_with_logits(labels, x)
    grad = tape.gradient(ce, x).numpy()
    np.testing.assert_array_equal(grad[0], [0.0, 0.0, 0.0])  # nothing left: not counted
    np.testing.assert_array_equal(grad[1], [0.0, 0.0, 0.0])  # the limit of p - onehot
    np.testing.assert_array_equal(grad[2], [0.5, -0.5, 0.0])


def test_masked_rows_by_tf_where_keep_finite_gradients():
    """The usual masking idiom: tf.where(mask, x, -inf) then the loss (TF: NaN loss)."""
    v = tf.Variable([[1.0, 2.0, 3.0], [0.5, 0.1, 0.2]])
    mask = tf.constant([[True, True, True], [False, False, False]])
    with tf.GradientTape() as tape:
        logits = tf.where(mask, v, -INF)
        loss = tf.reduce_mean(sktf.sparse_softmax_cross_entropy_with_logits([2, 0], logits))
    grad = tape.gradient(loss, v).numpy()
    assert np.isfinite(float(loss)) and np.isfinite(grad).all()
    np.testing.assert_array_equal(grad[1], 0.0)


# -------------------------------------------------------------------------- errors


def test_bad_arguments_raise_softmaxkit_errors():
    x = tf.constant([[0.0, 1.0, 2.0]])
    with pytest.raises(SoftmaxkitValueError, match=r"\[0, 3\)"):
        sktf.sparse_softmax_cross_entropy_with_logits(tf.constant([3]), x)
    with pytest.raises(SoftmaxkitValueError, match="labels"):
        sktf.sparse_softmax_cross_entropy_with_logits(tf.constant([-1]), x)
    with pytest.raises(SoftmaxkitTypeError, match="integer"):
        sktf.sparse_softmax_cross_entropy_with_logits(tf.constant([1.0]), x)
    with pytest.raises(SoftmaxkitValueError, match="shape"):
        sktf.sparse_softmax_cross_entropy_with_logits(tf.constant([[1]]), x)
    with pytest.raises(SoftmaxkitValueError, match="non-negative"):
        sktf.softmax_cross_entropy_with_logits(tf.constant([[0.5, -0.5, 1.0]]), x)
    with pytest.raises(SoftmaxkitTypeError, match="boolean"):
        sktf.softmax(x, where=tf.constant([[1, 0, 1]]))
    with pytest.raises(SoftmaxkitValueError, match="broadcast"):
        sktf.softmax(x, where=tf.constant([True, False]))
    with pytest.raises(SoftmaxkitValueError, match="temperature"):
        sktf.softmax(x, temperature=0.0)
    with pytest.raises(SoftmaxkitValueError, match="precision"):
        sktf.log_softmax(x, precision="exact")
    with pytest.raises(SoftmaxkitValueError, match="axis"):
        sktf.softmax(x, axis=2)
    with pytest.raises(SoftmaxkitTypeError, match="complex"):
        sktf.softmax(tf.constant([1 + 2j]))
    # integer logits are promoted to float32 (tf.nn.softmax raises)
    assert sktf.softmax(tf.constant([1, 2])).dtype == tf.float32
    # `name` is checked in every mode (eagerly no name scope is entered)
    for f in (sktf.softmax, sktf.reduce_logsumexp, sktf.sigmoid):
        with pytest.raises(SoftmaxkitTypeError, match="`name` must be a string"):
            f(x, name=3)
        with pytest.raises(SoftmaxkitTypeError, match="`name` must be a string"):
            tf.function(lambda v, f=f: f(v, name=b"n"))(x)
    with pytest.raises(SoftmaxkitTypeError, match="`name` must be a string"):
        sktf.sigmoid_cross_entropy_with_logits(labels=x, logits=x, name=1.5)
    assert sktf.softmax(x, name="") is not None  # "" means the default, as in tf.nn


def test_bad_labels_give_nan_under_xla():
    x = tf.constant([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]])

    @tf.function(jit_compile=True)
    def f(labels):
        with tf.GradientTape() as tape:
            tape.watch(x)
            ce = sktf.sparse_softmax_cross_entropy_with_logits(labels, x)
        return ce, tape.gradient(ce, x)

    ce, grad = (t.numpy() for t in f(tf.constant([3, 0])))
    assert math.isnan(ce[0]) and np.isnan(grad[0]).all()
    np.testing.assert_allclose(ce[1], sk.cross_entropy(x.numpy()[1:], [0], reduction="none"))
    assert np.isfinite(grad[1]).all()


def test_empty_inputs():
    assert sktf.softmax(tf.zeros([2, 0])).shape == (2, 0)
    np.testing.assert_array_equal(sktf.reduce_logsumexp(tf.zeros([2, 0]), axis=1), [-INF, -INF])
    ce = sktf.sparse_softmax_cross_entropy_with_logits(tf.zeros([0], tf.int32), tf.zeros([0, 4]))
    assert ce.shape == (0,)
    # gradients of empty inputs are empty tensors, as tf.nn's, not None (unconnected)
    x = tf.zeros([2, 0, 4])
    q = tf.zeros([2, 0, 4])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, q])
        sparse = sktf.sparse_softmax_cross_entropy_with_logits(tf.zeros([2, 0], tf.int64), x)
        dense = sktf.softmax_cross_entropy_with_logits(q, x)
    assert sparse.shape == dense.shape == (2, 0)
    assert tape.gradient(sparse, x).shape == (2, 0, 4)
    gq, gx = tape.gradient(dense, [q, x])
    assert gq.shape == gx.shape == (2, 0, 4)


def test_doctests():
    for mod in (sktf, _functional):
        res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert res.failed == 0, f"{res.failed} doctest(s) failed in {mod.__name__}"


# --------------------------------------------------------------------- SavedModel

_RELOAD = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    m = tf.saved_model.load(sys.argv[1])
    x = tf.constant([[0.0, -40.0, -1.0], [-float("inf")] * 3, [2.0, 1.0, 0.5]])
    labels = tf.constant([0, 1, 2])
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = m.loss(x, labels)
    grad = tape.gradient(loss, x)
    print(json.dumps({"loss": loss.numpy().tolist(), "grad": grad.numpy().tolist(),
                      "lsm": m.lsm(x).numpy().tolist()}))
    """
)


def test_savedmodel_reloaded_in_a_fresh_process(tmp_path):
    """Value and custom gradient survive saving; the reload runs without softmaxkit code."""

    class M(tf.Module):
        @tf.function(
            input_signature=[tf.TensorSpec([None, 3], tf.float32), tf.TensorSpec([None], tf.int32)]
        )
        def loss(self, x, labels):
            return sktf.sparse_softmax_cross_entropy_with_logits(labels, x)

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
        def lsm(self, x):
            return sktf.log_softmax(x)

    path = str(tmp_path / "model")
    tf.saved_model.save(M(), path)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    # the fresh process imports TensorFlow only: the graph holds the whole computation
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _RELOAD, path], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    x = np.array([[0.0, -40.0, -1.0], [-INF] * 3, [2.0, 1.0, 0.5]], np.float32)
    labels = np.array([0, 1, 2])
    want = sk.cross_entropy(x, labels, reduction="none")
    np.testing.assert_array_equal(np.array(got["loss"], np.float32), want)
    _, g = sk.cross_entropy(x, labels, reduction="sum", return_grad=True)
    np.testing.assert_allclose(np.array(got["grad"], np.float32), g, rtol=1e-6, atol=1e-30)
    np.testing.assert_array_equal(np.array(got["lsm"], np.float32), sk.log_softmax(x))


_RELOAD_STATIC = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    m = tf.saved_model.load(sys.argv[1])
    x = tf.constant([[0.0, -40.0, -1.0], [-float("inf")] * 3, [2.0, 1.0, 0.5]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = m.loss(x, tf.constant([0, 1, 2]))
    grad = tape.gradient(loss, x)
    print(json.dumps({"loss": loss.numpy().tolist(), "grad": grad.numpy().tolist(),
                      "sm": m.sm(x).numpy().tolist()}))
    """
)


def test_savedmodel_with_static_shapes_holds_no_custom_call(tmp_path):
    """Functions traced on the custom-call route are traced again while saving, on the
    TensorFlow-op route, so the SavedModel runs where softmaxkit is not installed."""
    spec = tf.TensorSpec([3, 3], tf.float32)

    class M(tf.Module):
        @tf.function(input_signature=[spec, tf.TensorSpec([3], tf.int32)])
        def loss(self, x, labels):
            return sktf.sparse_softmax_cross_entropy_with_logits(labels, x)

        @tf.function(input_signature=[spec], jit_compile=True)
        def sm(self, x):
            return sktf.softmax(x)

    m = M()
    x = np.array([[0.0, -40.0, -1.0], [-INF] * 3, [2.0, 1.0, 0.5]], np.float32)
    labels = np.array([0, 1, 2], np.int32)
    before = m.loss(tf.constant(x), tf.constant(labels)).numpy()  # traced, maybe natively
    path = str(tmp_path / "model")
    tf.saved_model.save(m, path)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _RELOAD_STATIC, path], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_array_equal(np.array(got["loss"], np.float32), before)
    np.testing.assert_array_equal(np.array(got["sm"], np.float32), sk.softmax(x))
    _, g = sk.cross_entropy(x, labels, reduction="sum", return_grad=True)
    np.testing.assert_allclose(np.array(got["grad"], np.float32), g, rtol=1e-6, atol=1e-30)


# ------------------------------------------------------------- the custom-call route


def _library_ops(fn, *specs) -> set[str]:
    """Every op type in a traced function's graph and in the functions it calls."""
    gd = fn.get_concrete_function(*specs).graph.as_graph_def()
    ops = {n.op for n in gd.node}
    for f in gd.library.function:
        ops |= {n.op for n in f.node_def}
    return ops


def test_custom_call_route_is_taken_where_sound(route):
    x = tf.zeros((4, 5))
    assert _ELIGIBLE(x, (1,))
    assert _ELIGIBLE(tf.zeros((4, 5), tf.float64), (1,))
    assert not _ELIGIBLE(tf.zeros((4, 5), tf.float16), (1,))  # rounded once from float64
    assert not _ELIGIBLE(x, (0,))  # the handlers reduce the last axis
    assert not _ELIGIBLE(tf.zeros((2, 3, 4)), (1, 2))
    from tensorflow.python.saved_model import save_context

    with save_context.save_context(tf.saved_model.SaveOptions()):
        assert not _ELIGIBLE(x, (1,))  # a SavedModel must not need softmaxkit to run
    seen = []
    tf.function(lambda v: seen.append(_ELIGIBLE(v, (1,)))).get_concrete_function(
        tf.TensorSpec([None, 5])
    )
    assert seen == [False]  # unknown sizes: the module is written for static shapes
    fns = (
        lambda v: sktf.softmax(v),
        lambda v: sktf.log_softmax(v),
        lambda v: sktf.reduce_logsumexp(v, axis=-1),
        lambda v: sktf.sparse_softmax_cross_entropy_with_logits(tf.zeros([4], tf.int32), v),
    )
    for f in fns:
        ops = _library_ops(tf.function(f, jit_compile=True), tf.TensorSpec([4, 5]))
        assert ("XlaCallModule" in ops) == (route != "tf_ops"), sorted(ops)
    if hasattr(_ckernels, "xla_register"):
        with pytest.raises(ValueError, match="address is 0"):
            _ckernels.xla_register(0, "Host")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("precision", ["accurate", "fast"])
def test_custom_calls_equal_the_numpy_path(dtype, precision, route):
    """The custom calls are the NumPy path's engines: the same bits, eager and under XLA,
    special rows, masks and temperature included; gradients too."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((40, 37)) * 5).astype(dtype)
    x[:8, :3] = np.array(SPECIAL, dtype)
    x[:8, 3:] = -np.inf
    labels = rng.integers(0, 37, 40)
    where = rng.random((40, 37)) < 0.8
    g = rng.standard_normal((40, 37)).astype(dtype)
    kw = {"precision": precision}

    def run(v, lab, w, gg):
        out = {}
        for name, f in (("softmax", sktf.softmax), ("log_softmax", sktf.log_softmax)):
            with tf.GradientTape() as tape:
                tape.watch(v)
                y = f(v, **kw)
            out[name] = y
            out[name + " grad"] = tape.gradient(y, v, output_gradients=gg)
            out[name + " where"] = f(v, where=w, **kw)
            out[name + " t"] = f(v, temperature=0.7, **kw)
        with tf.GradientTape() as tape:
            tape.watch(v)
            ce = sktf.sparse_softmax_cross_entropy_with_logits(lab, v, **kw)
        out["ce"] = ce
        out["ce grad"] = tape.gradient(ce, v, output_gradients=gg[:, 0])
        out["ce where"] = sktf.sparse_softmax_cross_entropy_with_logits(lab, v, where=w, **kw)
        with tf.GradientTape() as tape:
            tape.watch(v)
            lse = sktf.reduce_logsumexp(v, axis=-1, **kw)
        out["lse"] = lse
        out["lse grad"] = tape.gradient(lse, v, output_gradients=gg[:, 1])
        out["lse where"] = sktf.reduce_logsumexp(v, axis=-1, where=w, **kw)
        return out

    xla = tf.function(run, jit_compile=True)
    args = (tf.constant(x), tf.constant(labels), tf.constant(where), tf.constant(g))
    core = {
        "softmax": sk.softmax(x, precision=precision),
        "log_softmax": sk.log_softmax(x, precision=precision),
        "softmax where": sk.softmax(x, where=where, precision=precision),
        "log_softmax where": sk.log_softmax(x, where=where, precision=precision),
        "softmax t": sk.softmax(x, temperature=0.7, precision=precision),
        "log_softmax t": sk.log_softmax(x, temperature=0.7, precision=precision),
        "ce": sk.cross_entropy(x, labels, reduction="none", precision=precision),
        "ce where": sk.cross_entropy(x, labels, where=where, reduction="none", precision=precision),
        "lse": sk.logsumexp(x, axis=-1, precision=precision),
        "lse where": sk.logsumexp(x, axis=-1, where=where, precision=precision),
    }
    core["softmax grad"] = sk.softmax_vjp(core["softmax"], g, precision=precision)
    core["log_softmax grad"] = sk.log_softmax_vjp(core["log_softmax"], g, precision=precision)
    _, p_minus_onehot = sk.cross_entropy(
        x, labels, reduction="sum", return_grad=True, precision=precision
    )
    ce_grad = (p_minus_onehot.astype(np.float64) * g[:, :1]).astype(dtype)
    for got in (run(*args), xla(*args)):
        for k, want in core.items():
            out = got[k].numpy()
            if route != "tf_ops":
                np.testing.assert_array_equal(out, want, err_msg=k)
            else:  # the TF-op kernels: same bound, subnormals flushed, own fast mode
                # (a gradient y (g - y.g) or g - p sum(g) may cancel: its error is absolute,
                # eps times the row's sum of |g| (about 30 here))
                eps = np.finfo(dtype).eps
                atol = float(64 * eps if k.endswith("grad") else np.finfo(dtype).tiny)
                rtol = 1e-5 if precision == "fast" else 1e-6
                np.testing.assert_allclose(out, want, rtol=rtol, atol=atol, err_msg=k)
        # d logsumexp = g softmax: the probabilities are rounded to x's type first;
        # the native CE gradient folds each row's cotangent in before its one rounding
        p = sk.softmax(x, precision=precision).astype(np.float64)
        lse_grad = np.where(p == 0, 0.0, p * g[:, 1:2]).astype(dtype)
        for k, want in (("lse grad", lse_grad), ("ce grad", ce_grad)):
            np.testing.assert_allclose(
                got[k].numpy(),
                want,
                rtol=2e-6 if dtype == "float32" else 1e-14,
                atol=1e-30,
                err_msg=k,
            )


def _four_ops(v, lab, gg, **kw):
    """softmax, log_softmax, logsumexp and the sparse CE of ``v`` with their gradients
    (a tape watching ``v``; ``gg`` the output gradient)."""
    out = {}
    fns = (
        ("softmax", lambda u: sktf.softmax(u, **kw), gg),
        ("log_softmax", lambda u: sktf.log_softmax(u, **kw), gg),
        ("lse", lambda u: sktf.reduce_logsumexp(u, axis=-1, **kw), gg[..., 0]),
        ("ce", lambda u: sktf.sparse_softmax_cross_entropy_with_logits(lab, u, **kw), gg[..., 1]),
    )
    for name, f, og in fns:
        out[name + " no tape"] = f(v)
        with tf.GradientTape() as tape:
            tape.watch(v)
            y = f(v)
        out[name] = y
        out[name + " grad"] = tape.gradient(y, v, output_gradients=og)
    return out


def test_eager_calls_take_the_direct_route(route, monkeypatch):
    """Eagerly, on the CPU, the C core runs on the tensors' memory: no XLA custom call is
    built or run (with the direct route off, the same calls trace custom calls)."""
    built = []
    real = _native._call

    def spy(target, *args, **kwargs):
        built.append(target)
        return real(target, *args, **kwargs)

    monkeypatch.setattr(_native, "_call", spy)
    rng = np.random.default_rng(3)
    x = tf.constant(rng.standard_normal((3, 29)).astype(np.float32))  # a shape used nowhere else
    lab = tf.constant(rng.integers(0, 29, 3))
    gg = tf.constant(rng.standard_normal((3, 29)).astype(np.float32))
    out = _four_ops(x, lab, gg)
    assert all(v is not None for v in out.values())
    if route == "direct":
        assert built == []
        with tf.GradientTape():
            assert _direct.recording()
        assert not _direct.recording()
        assert _direct.usable(x) and not _direct.usable(x, lab.numpy())  # tensors only
    elif route == "native":
        assert set(built) >= {"softmaxkit_softmax", "softmaxkit_cross_entropy"}, built
    else:
        assert built == []
    traced = []
    tf.function(lambda v: traced.append(_direct.usable(v))).get_concrete_function(
        tf.TensorSpec([3, 29])
    )
    assert traced == [False]  # graphs never take it


@pytest.mark.parametrize("route", ["direct"], indirect=True)  # it turns the route off itself
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("precision", ["accurate", "fast"])
def test_direct_route_equals_the_custom_calls(dtype, precision, route, monkeypatch):
    """Bitwise the custom-call route's results: values with and without a tape, gradients,
    a rank-3 input, a variable, special rows, masks, temperature, fast and accurate."""
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((2, 9, 23)) * 6).astype(dtype)
    x[0, :8, :3] = np.array(SPECIAL, dtype)
    x[0, :8, 3:] = -np.inf
    x[1, 0, :] = np.array(1e-42 if dtype == "float32" else 1e-320, dtype)  # subnormals
    lab = tf.constant(rng.integers(0, 23, (2, 9)).astype(np.int32))
    gg = tf.constant(rng.standard_normal((2, 9, 23)).astype(dtype))
    where = tf.constant(rng.random((2, 9, 23)) < 0.7)
    kw = {"precision": precision}

    def everything():
        v = tf.constant(x)
        out = _four_ops(v, lab, gg, **kw)
        var = tf.Variable(x)
        with tf.GradientTape() as tape:  # a variable is watched without tape.watch
            y = sktf.log_softmax(var, temperature=0.3, **kw)
        out["variable"] = y
        out["variable grad"] = tape.gradient(y, var, output_gradients=gg)
        out["softmax where"] = sktf.softmax(v, where=where, **kw)
        out["log_softmax t"] = sktf.log_softmax(v, temperature=2.5, **kw)
        out["lse where keepdims"] = sktf.reduce_logsumexp(v, axis=-1, where=where, keepdims=True)
        out["ce where"] = sktf.sparse_softmax_cross_entropy_with_logits(lab, v, where=where)
        return {k: t.numpy() for k, t in out.items()}

    direct = everything()
    monkeypatch.setattr(_direct, "usable", _direct_off)
    custom = everything()
    assert direct.keys() == custom.keys()
    for k in direct:
        assert direct[k].dtype == custom[k].dtype and direct[k].shape == custom[k].shape, k
        np.testing.assert_array_equal(direct[k], custom[k], err_msg=k)
    for name in ("softmax", "log_softmax", "lse", "ce"):
        np.testing.assert_array_equal(direct[name], direct[name + " no tape"], err_msg=name)


@pytest.mark.parametrize("route", ["direct"], indirect=True)
def test_direct_results_own_their_memory(route):
    """The direct route's results are tensors on the core's output arrays (DLPack, no
    copy): 64-byte aligned as TensorFlow requires (it aborts the process otherwise),
    alive as long as the tensor is, never memory another result or the input shares."""
    import gc

    rng = np.random.default_rng(21)
    shapes = [(3, 7), (1, 1), (5,), (300, 1000), (2, 0, 4)]
    for shape in shapes:
        xs = rng.standard_normal(shape).astype(np.float32)
        x = tf.constant(xs)
        lab = tf.constant(rng.integers(0, max(shape[-1], 1), shape[:-1]))
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            outs = {
                "softmax": sktf.softmax(x),
                "log_softmax": sktf.log_softmax(x, precision="fast"),
                "lse": sktf.reduce_logsumexp(x, axis=-1),
                "sigmoid": sktf.sigmoid(x),
                "bce": sktf.sigmoid_cross_entropy_with_logits(labels=tf.sigmoid(x), logits=x),
            }
            if shape[-1]:
                outs["ce"] = sktf.sparse_softmax_cross_entropy_with_logits(lab, x)
        for k in list(outs):
            outs[k + " grad"] = tape.gradient(outs[k], x)
        del tape
        want = {k: np.array(v.numpy(), copy=True) for k, v in outs.items()}
        gc.collect()
        junk = [sktf.softmax(tf.constant(rng.standard_normal(shape).astype(np.float32)))
                for _ in range(4)]  # fmt: skip
        addrs = set()
        for k, v in outs.items():
            view = v._numpy()
            np.testing.assert_array_equal(view, want[k], err_msg=f"{shape} {k}")
            if isinstance(view, np.ndarray) and view.size:  # 0-d: a NumPy scalar
                assert view.ctypes.data % 64 == 0, (shape, k)
                assert view.ctypes.data not in addrs, (shape, k)
                addrs.add(view.ctypes.data)
        np.testing.assert_array_equal(x.numpy(), xs)  # the input is untouched
        del junk


@pytest.mark.parametrize("route", ["direct"], indirect=True)  # calls both routes' functions
def test_direct_cross_entropy_out_of_range_labels_as_under_xla(route):
    """Labels the eager checks reject never reach the route; if they did, they would get
    TensorFlow's XLA behaviour, as on the custom calls: a NaN loss and a NaN gradient row."""
    x = tf.constant(np.random.default_rng(5).standard_normal((4, 6)).astype(np.float32))
    lab = tf.constant([1, 6, -1, 0])
    ct = tf.constant([1.0, 2.0, 3.0, 0.5])
    loss = _direct.cross_entropy(x, lab, None, None, mode=1).numpy()
    grad = _direct.cross_entropy(x, lab, None, ct, mode=1).numpy()
    xla_loss = tf.function(
        lambda v: _native.cross_entropy(v, lab, None, None, mode=1), jit_compile=True
    )(x).numpy()
    xla_grad = tf.function(
        lambda v: _native.cross_entropy(v, lab, None, ct, mode=1), jit_compile=True
    )(x).numpy()
    np.testing.assert_array_equal(loss, xla_loss)
    np.testing.assert_array_equal(grad, xla_grad)
    assert np.isnan(loss[1:3]).all() and np.isfinite(loss[[0, 3]]).all()
    assert np.isnan(grad[1:3]).all() and np.isfinite(grad[[0, 3]]).all()


@pytest.mark.parametrize("route", ["direct"], indirect=True)  # it turns the route off itself
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("precision", ["accurate", "fast"])
def test_direct_sigmoid_family(dtype, precision, route, monkeypatch):
    """Eager sigmoid, log_sigmoid and the BCE losses on the direct route: values bitwise
    the NumPy core's (subnormals kept); every gradient (logits, labels, pos_weight) that of
    the TF-op route, whose formulas the backward shares, within an ulp of the derivative
    in the logits (the C kernel's, rounded once, against the TF-op engine's)."""
    x, y = _datasets.sigmoid_inputs(dtype)
    x, y = x[:4000].copy(), y[:4000].copy()
    x[:3] = np.array([-INF, INF, -745.0 if dtype == "float64" else -100.0], dtype)
    pw = np.array(2.5, dtype)
    kw = {"precision": precision}
    core = {
        "sigmoid": sk.sigmoid(x, **kw),
        "log_sigmoid": sk.log_sigmoid(x, **kw),
        "bce": sk.binary_cross_entropy_with_logits(x, y, reduction="none", **kw),
        "wbce": sk.binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction="none", **kw),
    }
    og = np.random.default_rng(2).standard_normal(x.shape).astype(dtype)

    def run():
        xt, yt, pt, gt = tf.constant(x), tf.constant(y), tf.constant(pw), tf.constant(og)
        out = {}
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([xt, yt, pt])
            out["sigmoid"] = sktf.sigmoid(xt, **kw)
            out["log_sigmoid"] = sktf.log_sigmoid(xt, **kw)
            out["bce"] = sktf.sigmoid_cross_entropy_with_logits(yt, xt, **kw)
            out["wbce"] = sktf.weighted_cross_entropy_with_logits(yt, xt, pt, **kw)
        for k in ("sigmoid", "log_sigmoid", "bce", "wbce"):
            out[k + " no tape"] = {
                "sigmoid": lambda: sktf.sigmoid(xt, **kw),
                "log_sigmoid": lambda: sktf.log_sigmoid(xt, **kw),
                "bce": lambda: sktf.sigmoid_cross_entropy_with_logits(yt, xt, **kw),
                "wbce": lambda: sktf.weighted_cross_entropy_with_logits(yt, xt, pt, **kw),
            }[k]()
            srcs = [xt, yt, pt] if k == "wbce" else [xt, yt] if k == "bce" else [xt]
            grads = tape.gradient(out[k], srcs, output_gradients=gt)
            for name, gr in zip(("x", "y", "pw")[: len(srcs)], grads, strict=True):
                out[f"{k} d{name}"] = gr
        return {k: v.numpy() for k, v in out.items()}

    direct = run()
    for k, want in core.items():
        np.testing.assert_array_equal(direct[k], want, err_msg=k)
        np.testing.assert_array_equal(direct[k + " no tape"], want, err_msg=k)
    monkeypatch.setattr(_direct, "usable", _direct_off)
    ops = run()
    for k, got in direct.items():
        if k in core or k.endswith("no tape"):
            continue
        want = ops[k]
        assert got.dtype == want.dtype and got.shape == want.shape, k
        if k.endswith("dx"):  # the C kernel's derivative against the TF-op engine's
            # accurate: each within an ulp of the exact one, then times the cotangent (in
            # float64 that product is rounded once more); fast: p - y in the input
            # precision, whose cancellation leaves an error of a few eps * |cotangent|
            err = _reference.ulp_error(got, want.astype(np.float64), dtype)
            if precision == "accurate":
                ok = err <= (1.0 if dtype == "float32" else 2.0)
            else:
                ok = np.abs(got - want) <= 8 * np.finfo(dtype).eps * np.abs(og)
            ok |= (got == want) | (np.abs(want) < np.finfo(dtype).tiny)
            assert ok.all(), (k, err[~ok][:5], got[~ok][:5], want[~ok][:5])
        else:
            np.testing.assert_array_equal(got, want, err_msg=k)


def test_half_precision_ties_rounded_once():
    """TF casts float64 to float16/bfloat16 through float32: a result just off a
    half-precision midpoint landed on it and then went to even (-8.03125 here where
    -8.0234375 is right; about 1 float16 result in 8000)."""
    x = np.array(
        [[3.458984375, -0.13037109375, 0.68798828125, 6.046875, -1.9013671875]], np.float16
    )
    assert sktf.log_softmax(tf.constant(x)).numpy()[0, 4] == np.float16(-8.0234375)
    ce = sktf.sparse_softmax_cross_entropy_with_logits(tf.constant([4]), tf.constant(x))
    assert ce.numpy()[0] == np.float16(8.0234375)
    xla = tf.function(lambda v: sktf.log_softmax(v), jit_compile=True)
    assert xla(tf.constant(x)).numpy()[0, 4] == np.float16(-8.0234375)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_narrow_rounds_once(dtype):
    """_xp.narrow against the nearest half-precision value: just off every midpoint
    of a random sample, on both sides, with both signs, eagerly and under XLA."""
    from softmaxkit.tensorflow._xp import narrow

    npdt = np.float16 if dtype == "float16" else ml_dtypes.bfloat16
    rng = np.random.default_rng(3)
    lo = rng.standard_normal(3000).astype(npdt).astype(np.float64)
    lo = lo[np.isfinite(lo)]
    up = np.nextafter(lo.astype(npdt), npdt(np.inf)).astype(np.float64)
    mid = (lo + up) / 2  # exact in float64
    off = np.abs(mid) * 2.0**-40
    v = np.concatenate([mid + off, mid - off, mid])
    k = mid.size
    for f in (narrow, tf.function(narrow, jit_compile=True)):
        got = f(tf.constant(v), getattr(tf, dtype)).numpy().astype(np.float64)
        np.testing.assert_array_equal(got[:k], up)  # just above a midpoint: the upper one
        np.testing.assert_array_equal(got[k : 2 * k], lo)
        # exact midpoints: ties to even, as TF's own cast
        np.testing.assert_array_equal(got[2 * k :], tf.cast(mid, getattr(tf, dtype)).numpy())


@pytest.mark.parametrize(
    ("shape", "jit"), [([None, 7], True), ([None, None], False), ([4, None], True)]
)
def test_float64_graphs_with_unknown_sizes(shape, jit, route):
    """float64 under tf.function with unknown sizes (as Keras retraces a partial last
    batch): the double-word engine's table lookup and the class indices took the
    static shape (a ValueError or TypeError)."""
    if route != "tf_ops":
        # the routes coincide here: the custom calls need static sizes, and graphs have
        # no eager direct route; check that rather than compile the same graphs again
        seen: list[bool] = []
        tf.function(
            lambda v: seen.append(_ELIGIBLE(v, (1,))),
            input_signature=[tf.TensorSpec(shape, tf.float64)],
        ).get_concrete_function()
        assert seen == [False]
        return
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 7)) * 3
    lab = np.array([1, 2, 6, 0])
    p = rng.dirichlet(np.ones(7), 4)
    calls = {
        "softmax": (lambda v: sktf.softmax(v), sk.softmax(x)),
        "log_softmax": (lambda v: sktf.log_softmax(v), sk.log_softmax(x)),
        "logsumexp": (lambda v: sktf.reduce_logsumexp(v, axis=-1), sk.logsumexp(x)),
        "sparse": (
            lambda v: sktf.sparse_softmax_cross_entropy_with_logits(tf.constant(lab), v),
            sk.cross_entropy(x, lab, reduction="none"),
        ),
        "dense": (
            lambda v: sktf.softmax_cross_entropy_with_logits(tf.constant(p), v),
            sk.cross_entropy(x, p, reduction="none"),
        ),
        "sigmoid": (lambda v: sktf.sigmoid(v), sk.sigmoid(x)),
    }
    for name, (f, want) in calls.items():
        g = tf.function(f, input_signature=[tf.TensorSpec(shape, tf.float64)], jit_compile=jit)
        np.testing.assert_allclose(g(tf.constant(x)).numpy(), want, rtol=5e-16, err_msg=name)
