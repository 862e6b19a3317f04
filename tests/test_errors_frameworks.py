"""Bad input to the framework front ends: a softmaxkit error naming the argument.

softmaxkit.jax runs here. TensorFlow and Keras must not be imported by the main
pytest run (see tests/child), so their cases run in a fresh interpreter: this
file again, with ``SOFTMAXKIT_ERRORS_CHILD`` set to ``tensorflow`` or ``keras``.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

import softmaxkit as sk

CHILD = os.environ.get("SOFTMAXKIT_ERRORS_CHILD")
X = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]], np.float32)
P = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]], np.float32)


def _raises(kind, match, fn, *args, **kwargs):
    with pytest.raises(kind, match=match) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, sk.SoftmaxkitError), type(info.value)
    return info.value


if CHILD is None:
    from tests.child import run_child_suite

    @pytest.mark.slow
    @pytest.mark.parametrize(
        ("child", "module", "backend"),
        [
            ("tensorflow", "tensorflow", ""),
            ("keras", "keras", "tensorflow"),
            ("keras", "keras", "jax"),
        ],
    )
    def test_framework_errors_in_child(child, module, backend):
        if importlib.util.find_spec(module) is None or (
            backend and importlib.util.find_spec(backend) is None
        ):
            extra = "tensorflow" if module == "tensorflow" else "keras"
            pytest.skip(
                f"{module} on {backend} not installed: pip install softmaxkit[{extra}] {backend}"
            )
        env = {"SOFTMAXKIT_ERRORS_CHILD": child}
        if backend:
            env["KERAS_BACKEND"] = backend
        run_child_suite("../test_errors_frameworks.py", env)

    # ---- softmaxkit.jax ---------------------------------------------------------------

    jax = pytest.importorskip("jax", reason="jax not installed: pip install softmaxkit[jax]")
    import jax.numpy as jnp

    import softmaxkit.jax as skj

    XJ = jnp.asarray(X)
    PJ = jnp.asarray(P)
    _PROB_LOSSES = [
        skj.softmax_cross_entropy,
        skj.safe_softmax_cross_entropy,
        skj.sigmoid_binary_cross_entropy,
    ]

    @pytest.mark.parametrize("fn", _PROB_LOSSES)
    @pytest.mark.parametrize("shape", [(2, 4), (4,), (3, 3)])
    def test_jax_labels_that_do_not_broadcast(fn, shape):
        _raises(ValueError, "`labels` has shape", fn, XJ, jnp.ones(shape) / 3)
        _raises(ValueError, "`labels` has shape", jax.jit(fn), XJ, jnp.ones(shape) / 3)

    @pytest.mark.parametrize("fn", _PROB_LOSSES)
    def test_jax_complex_labels(fn):
        # the cast to the logits' dtype used to drop the imaginary part silently
        _raises(TypeError, "`labels` must be real", fn, XJ, PJ.astype(jnp.complex64))

    @pytest.mark.parametrize("fn", _PROB_LOSSES)
    def test_jax_broadcast_labels_still_work(fn):
        a = fn(XJ, jnp.ones(3) / 3)
        b = fn(XJ, jnp.broadcast_to(jnp.ones(3) / 3, (2, 3)))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert a.dtype == jnp.float32

    def test_jax_safe_softmax_cross_entropy_0d():
        fn = skj.safe_softmax_cross_entropy
        _raises(ValueError, "0-d.*class axis", fn, jnp.float32(1.0), jnp.float32(1.0))

    @pytest.mark.parametrize(
        "fn",
        [
            skj.softmax,
            skj.log_softmax,
            skj.logsumexp,
            lambda x, where: skj.softmax_cross_entropy(x, PJ, where=where),
            lambda x, where: skj.softmax_cross_entropy_with_integer_labels(
                x, jnp.array([0, 1]), where=where
            ),
        ],
    )
    @pytest.mark.parametrize("dtype", [jnp.float32, jnp.int32])
    def test_jax_where_must_be_boolean(fn, dtype):
        # jax.nn rejects a non-boolean mask; it used to be cast (0.5 -> True) silently
        _raises(TypeError, "`where` must be a boolean", fn, XJ, where=jnp.ones((2, 3), dtype))
        ok = fn(XJ, where=np.ones((2, 3), bool))
        assert ok.dtype == jnp.float32

    @pytest.mark.parametrize("axis", [None, [1], 1.0, np.int64(1)])
    def test_jax_integer_labels_axis_type(axis):
        fn = skj.softmax_cross_entropy_with_integer_labels
        _raises(TypeError, "`axis` must be an int or a tuple", fn, XJ, jnp.array([0, 1]), axis=axis)


# ---- softmaxkit.tensorflow (child process) ------------------------------------------------

if CHILD == "tensorflow":
    import tensorflow as tf

    import softmaxkit.tensorflow as sktf

    XT = tf.constant(X)
    PT = tf.constant(P)
    LT = tf.constant([0, 1])
    SPARSE = sktf.sparse_softmax_cross_entropy_with_logits
    DENSE = sktf.softmax_cross_entropy_with_logits
    SIGMOID = sktf.sigmoid_cross_entropy_with_logits
    WEIGHTED = sktf.weighted_cross_entropy_with_logits

    def _in_function(call):
        def body(x):
            return call(x)

        return tf.function(body)

    @pytest.mark.parametrize("jit", [False, True])
    @pytest.mark.parametrize(
        ("call", "kind", "match"),
        [
            (lambda x: sktf.softmax(x, axis=5), ValueError, "`axis=5`"),
            (lambda x: sktf.log_softmax(x, precision="x"), ValueError, "`precision`"),
            (lambda x: sktf.reduce_logsumexp(x, keepdims=1), TypeError, "`keepdims`"),
            (lambda x: SPARSE(tf.constant([0, 1, 2]), x), ValueError, "`labels` has shape"),
            (lambda x: DENSE(tf.ones((2, 4)), x), ValueError, "`labels` has shape"),
            (lambda x: SIGMOID(tf.ones((2, 4)), x), ValueError, "`labels` has shape"),
            (lambda x: sktf.sigmoid(tf.strings.as_string(x)), TypeError, "`x` has dtype"),
        ],
    )
    def test_tf_errors_leave_tf_function_unchanged(call, kind, match, jit):
        # AutoGraph used to re-raise softmaxkit errors as a StagingError
        fn = _in_function(call)
        if jit:
            fn = tf.function(fn.python_function, jit_compile=True)
        _raises(kind, match, fn, XT)

    def test_tf_valid_call_in_tf_function_unchanged():
        got = _in_function(lambda x: sktf.softmax(x) * 2.0)(XT)
        np.testing.assert_array_equal(got.numpy(), sktf.softmax(XT).numpy() * 2.0)

    @pytest.mark.parametrize(
        "bad",
        [None, tf.ragged.constant([[0], [1]]), tf.sparse.from_dense(tf.constant([0, 1]))],
    )
    @pytest.mark.parametrize(
        "call",
        [
            lambda lab: SPARSE(lab, XT),
            lambda lab: DENSE(lab, XT),
            lambda lab: SIGMOID(lab, XT),
            lambda lab: WEIGHTED(lab, XT, 2.0),
        ],
    )
    def test_tf_labels_that_are_not_tensors(call, bad):
        _raises(TypeError, "`labels` must be a tensor", call, bad)

    def test_tf_ragged_where():
        where = tf.ragged.constant([[True], [False, True]])
        _raises(TypeError, "`where` must be a tensor.*ragged", sktf.softmax, XT, where=where)

    @pytest.mark.parametrize(
        ("pos_weight", "kind", "match"),
        [
            ("x", TypeError, "`pos_weight` must be a real"),
            (tf.constant(2.0, tf.complex64), TypeError, "`pos_weight` must be a real"),
            (tf.ones(4), ValueError, "`pos_weight` has shape"),
            (tf.ones((4, 2, 3)), ValueError, "`pos_weight` has shape"),
        ],
    )
    def test_tf_bad_pos_weight(pos_weight, kind, match):
        _raises(kind, match, WEIGHTED, PT, XT, pos_weight)

    @pytest.mark.parametrize("pos_weight", [2, 2.0, [1.0, 2.0, 3.0], tf.ones((2, 1))])
    def test_tf_pos_weight_that_broadcasts(pos_weight):
        got = WEIGHTED(PT, XT, pos_weight)
        want = tf.nn.weighted_cross_entropy_with_logits(PT, XT, tf.cast(pos_weight, tf.float32))
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)

    def test_tf_dense_axis_none_is_last_axis():
        # tf.nn.softmax_cross_entropy_with_logits reads axis=None as -1
        got = DENSE(PT, XT, axis=None)
        np.testing.assert_array_equal(got.numpy(), DENSE(PT, XT).numpy())
        _raises(TypeError, "`axis` must be a single int", DENSE, PT, XT, axis=(0, 1))

    @pytest.mark.parametrize("axis", [[0, 1], [1]])
    def test_tf_reduce_logsumexp_axis_list(axis):
        got = sktf.reduce_logsumexp(XT, axis=axis)
        want = sktf.reduce_logsumexp(XT, axis=tuple(axis))
        np.testing.assert_array_equal(got.numpy(), want.numpy())

    def test_tf_sparse_labels_of_unknown_rank():
        spec = [tf.TensorSpec(None, tf.int32), tf.TensorSpec([None, 3], tf.float32)]
        fn = tf.function(lambda lab, x: SPARSE(lab, x), input_signature=spec)
        np.testing.assert_allclose(fn(LT, XT).numpy(), SPARSE(LT, XT).numpy(), rtol=1e-6)


# ---- softmaxkit.keras (child process, one per backend) -------------------------------------

if CHILD == "keras":
    import keras

    import softmaxkit.keras as skk

    LOSSES = [
        skk.CategoricalCrossentropy,
        skk.SparseCategoricalCrossentropy,
        skk.BinaryCrossentropy,
    ]
    LABELS = {
        skk.CategoricalCrossentropy: P,
        skk.SparseCategoricalCrossentropy: np.array([0, 1]),
        skk.BinaryCrossentropy: P,
    }

    @pytest.mark.parametrize("cls", LOSSES)
    @pytest.mark.parametrize("axis", ["a", None, 1.5, (0, 1)])
    def test_keras_loss_axis_type(cls, axis):
        # int(axis) used to raise a bare ValueError/TypeError, or truncate 1.5 to 1
        _raises(TypeError, "`axis` must be an int", cls, from_logits=True, axis=axis)

    @pytest.mark.parametrize("ignore_class", ["x", 1.5])
    def test_keras_ignore_class_type(ignore_class):
        cls = skk.SparseCategoricalCrossentropy
        _raises(TypeError, "`ignore_class` must be an int", cls, ignore_class=ignore_class)

    @pytest.mark.parametrize("cls", LOSSES)
    @pytest.mark.parametrize(
        "kw", [{"from_logits": True}, {"from_logits": False}, {"label_smoothing": 0.1}]
    )
    def test_keras_loss_axis_out_of_range(cls, kw):
        loss = cls(axis=5, **kw)
        _raises(ValueError, "`axis=5` is out of range", loss, LABELS[cls], X)

    @pytest.mark.parametrize("cls", LOSSES)
    def test_keras_loss_np_int_axis(cls):
        got = cls(from_logits=True, axis=np.int64(-1))(LABELS[cls], X)
        want = cls(from_logits=True)(LABELS[cls], X)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

    def test_keras_sparse_string_labels():
        loss = skk.SparseCategoricalCrossentropy(from_logits=True)
        _raises(TypeError, "`y_true` must", loss, np.array(["a", "b"]), X)

    @pytest.mark.parametrize("fn", [skk.softmax, skk.log_softmax, skk.logsumexp])
    def test_keras_ops_non_tensor(fn):
        _raises(TypeError, "`x` must be a tensor", fn, None)

    def test_keras_logsumexp_axis_list():
        got = skk.logsumexp(X, axis=[0, 1])
        np.testing.assert_array_equal(np.asarray(got), np.asarray(skk.logsumexp(X, axis=(0, 1))))

    @pytest.mark.parametrize(
        ("mask", "kind", "match"),
        [
            (np.ones((3, 3), bool), ValueError, "`mask` has shape"),
            (np.ones((1, 2, 3), bool), ValueError, "`mask` has shape"),
        ],
    )
    def test_keras_softmax_layer_mask(mask, kind, match):
        _raises(kind, match, skk.Softmax(), X, mask=mask)

    def test_keras_softmax_layer_row_mask_still_works():
        got = skk.Softmax()(X, mask=np.array([[True], [False]]))
        want = keras.ops.where(np.array([[True], [False]]), skk.softmax(X), 0.0)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)
