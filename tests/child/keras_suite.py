"""softmaxkit.keras on one Keras backend, run in a child process by tests/test_keras.py.

The backend is chosen by ``KERAS_BACKEND`` before this module imports Keras
(tensorflow, jax or torch); each runs in its own process. Checked: the losses
equal Keras's own wherever Keras is right (every reduction, sample weights,
``ignore_class``, probabilities and logits), the documented fixes, a small model
trained with ``model.fit`` next to the same model on Keras's loss, saving and
loading a compiled model, the ops and the masked Softmax layer.
"""

from __future__ import annotations

import doctest
import math
import os

import keras
import numpy as np
import pytest
from keras import ops

import softmaxkit as sk
import softmaxkit.keras as skk
from softmaxkit import SoftmaxkitValueError
from softmaxkit.keras import _losses, _ops

BACKEND = keras.backend.backend()
REDUCTIONS = ["sum_over_batch_size", "sum", "mean_with_sample_weight", "none"]


def test_backend_is_the_requested_one():
    assert os.environ.get("KERAS_BACKEND") == BACKEND


def _np(t):
    return np.asarray(ops.convert_to_numpy(t))


def _data(seed=0, n=6, c=5):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((n, c)) * 2).astype("float32")
    labels = rng.integers(0, c, n)
    onehot = np.eye(c, dtype="float32")[labels]
    return logits, labels, onehot


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_losses_equal_keras_where_keras_is_right(reduction):
    logits, labels, onehot = _data()
    sw = np.array([1.0, 3.0, 0.0, 2.0, 1.0, 0.5], "float32")
    probs = sk.softmax(logits)
    y_bin = (np.random.default_rng(1).random(logits.shape) < 0.5).astype("float32")
    pairs = [
        (
            skk.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1, reduction=reduction),
            keras.losses.CategoricalCrossentropy(
                from_logits=True, label_smoothing=0.1, reduction=reduction
            ),
            onehot,
            logits,
        ),
        (
            skk.CategoricalCrossentropy(reduction=reduction),
            keras.losses.CategoricalCrossentropy(reduction=reduction),
            onehot,
            probs,
        ),
        (
            skk.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction),
            labels,
            logits,
        ),
        (
            skk.SparseCategoricalCrossentropy(
                from_logits=True, ignore_class=labels[1], reduction=reduction
            ),
            keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, ignore_class=int(labels[1]), reduction=reduction
            ),
            labels,
            logits,
        ),
        (
            skk.SparseCategoricalCrossentropy(reduction=reduction),
            keras.losses.SparseCategoricalCrossentropy(reduction=reduction),
            labels,
            probs,
        ),
        (
            skk.BinaryCrossentropy(from_logits=True, label_smoothing=0.2, reduction=reduction),
            keras.losses.BinaryCrossentropy(
                from_logits=True, label_smoothing=0.2, reduction=reduction
            ),
            y_bin,
            logits,
        ),
        (
            skk.BinaryCrossentropy(reduction=reduction),
            keras.losses.BinaryCrossentropy(reduction=reduction),
            y_bin,
            sk.sigmoid(logits),
        ),
    ]
    for i, (ours, theirs, y, p) in enumerate(pairs):
        for weight in (None, sw):
            a = _np(ours(y, p, sample_weight=weight))
            b = _np(theirs(y, p, sample_weight=weight))
            np.testing.assert_allclose(a, b, rtol=3e-6, atol=1e-7, err_msg=f"{i} {weight}")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_sample_weight_shapes_as_keras_counts_them(reduction):
    """Rank-1 binary inputs (one loss value per call) with per-item weights were reduced
    as one item (4x Keras's value; mean_with_sample_weight raised a backend error), and
    (N, 1) weights over (N,) losses gave shape (N,) where Keras gives (N, 1)."""
    y = np.array([1.0, 0.0, 1.0, 1.0], "float32")
    x = np.array([0.5, -1.0, 2.0, -0.3], "float32")
    sw = np.array([1.0, 2.0, 3.0, 4.0], "float32")
    y2 = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], "float32")
    x2 = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3], [1.0, 1.0, 1.0], [0.0, -1.0, 3.0]], "float32")
    cases = [
        (skk.BinaryCrossentropy, keras.losses.BinaryCrossentropy, y, x, sw),
        (skk.BinaryCrossentropy, keras.losses.BinaryCrossentropy, y, x, sw[:, None]),
        (skk.CategoricalCrossentropy, keras.losses.CategoricalCrossentropy, y2, x2, sw[:, None]),
        (
            skk.SparseCategoricalCrossentropy,
            keras.losses.SparseCategoricalCrossentropy,
            np.array([0, 1, 2, 0]),
            x2,
            sw[:, None],
        ),
    ]
    for ours, theirs, yy, xx, w in cases:
        a = _np(ours(from_logits=True, reduction=reduction)(yy, xx, sample_weight=w))
        b = _np(theirs(from_logits=True, reduction=reduction)(yy, xx, sample_weight=w))
        assert a.shape == b.shape, (ours.__name__, w.shape, a.shape, b.shape)
        np.testing.assert_allclose(a, b, rtol=3e-6, atol=1e-7, err_msg=f"{ours.__name__} {w.shape}")


def test_fixes_of_what_keras_gets_wrong():
    # the dominant-logit tail: Keras returns 0 (or -0)
    x = np.array([[0.0, -40.0]], "float32")
    zero = np.array([0])
    tail = float(_np(skk.SparseCategoricalCrossentropy(from_logits=True)(zero, x)))
    assert tail == 4.24835413113866e-18
    assert float(_np(skk.CategoricalCrossentropy(from_logits=True)(np.eye(2)[:1], x))) == tail
    assert float(_np(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(zero, x))) == 0
    # an exact label cast: dtype float16 keeps label 2049 (Keras makes it 2048)
    n = 2100
    logits = np.zeros((1, n), "float32")
    logits[0, 2049] = 10.0
    loss16 = skk.SparseCategoricalCrossentropy(from_logits=True, dtype="float16")
    got = float(_np(loss16(np.array([2049]), logits)))
    want = float(sk.cross_entropy(logits.astype(np.float64), [2049], reduction="none")[0])
    assert got == pytest.approx(want, rel=1e-3)
    keras16 = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float16")
    assert float(_np(keras16(np.array([2049]), logits))) > 5  # the wrong class
    # the class count in smoothing with axis != -1: C is the size of `axis` (4), not 3
    rng = np.random.default_rng(2)
    y = np.eye(4, dtype="float32")[rng.integers(0, 4, (2, 3))].transpose(0, 2, 1)  # (2,4,3)
    z = rng.standard_normal((2, 4, 3)).astype("float32")
    eps = 0.3
    got = _np(
        skk.CategoricalCrossentropy(
            from_logits=True, label_smoothing=eps, axis=1, reduction="none"
        )(y, z)
    )
    q = y * (1 - eps) + eps / 4
    want = -(q * sk.log_softmax(z, axis=1)).sum(axis=1)
    np.testing.assert_allclose(got, want, rtol=2e-6)
    # special values: an all -inf row gives 0, not NaN
    x = np.array([[-np.inf, -np.inf], [1.0, 2.0]], "float32")
    per = _np(
        skk.SparseCategoricalCrossentropy(from_logits=True, reduction="none")(np.array([0, 1]), x)
    )
    assert per[0] == 0.0 and np.isfinite(per).all()


def test_sparse_label_smoothing_and_axis():
    logits, labels, onehot = _data(3)
    eps = 0.2
    got = _np(
        skk.SparseCategoricalCrossentropy(from_logits=True, label_smoothing=eps, reduction="none")(
            labels, logits
        )
    )
    want = _np(
        keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=eps, reduction="none"
        )(onehot, logits)
    )
    np.testing.assert_allclose(got, want, rtol=2e-6)
    moved = np.ascontiguousarray(logits.T)[None]  # (1, C, n): classes on axis 1
    got1 = _np(
        skk.SparseCategoricalCrossentropy(from_logits=True, axis=1, reduction="none")(
            labels[None], moved
        )
    )
    want1 = sk.cross_entropy(logits, labels, reduction="none")
    np.testing.assert_allclose(got1[0], want1, rtol=2e-6)


def test_empty_batch_and_all_ignored_reduce_to_zero():
    loss = skk.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)
    assert float(_np(loss(np.array([0, 0]), np.ones((2, 3), "float32")))) == 0.0
    empty = skk.SparseCategoricalCrossentropy(from_logits=True)
    assert float(_np(empty(np.zeros((0,), "int64"), np.ones((0, 3), "float32")))) == 0.0


def test_means_of_losses_near_the_largest_float():
    """float32 losses near the float range: the mean is finite where the sum overflows
    (it was inf), the sum is inf, and every reduction's mean counts as before."""
    x = np.zeros((4, 2), "float32")
    x[:, 1] = 1e38
    y = np.zeros(4, "int64")
    onehot = np.tile(np.array([[1.0, 0.0]], "float32"), (4, 1))
    for red in ("sum_over_batch_size", "mean_with_sample_weight"):
        sparse = skk.SparseCategoricalCrossentropy(from_logits=True, reduction=red)
        dense = skk.CategoricalCrossentropy(from_logits=True, reduction=red)
        half = 1.0 if red == "mean_with_sample_weight" else 0.5  # sum(w l) / n or / sum(w)
        for got, want in (
            (sparse(y, x), 1e38),
            (sparse(y, x, sample_weight=np.full(4, 0.5, "float32")), half * 1e38),
            (dense(onehot, x), 1e38),
        ):
            assert float(_np(got)) == pytest.approx(want, rel=1e-6), red
    bce = skk.BinaryCrossentropy(from_logits=True)
    assert float(_np(bce(np.zeros((4, 1), "float32"), np.full((4, 1), 1e38, "float32")))) == (
        pytest.approx(1e38, rel=1e-6)
    )
    total = skk.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")(y, x)
    assert float(_np(total)) == math.inf


def test_eager_sums_known_safe_equal_the_traced_selects(monkeypatch):
    """Eager losses in host memory far below the range's end skip the overflow-safe
    selects (one dispatch each): the same bits as with them, every reduction, weights,
    masks; near the range's end, or with a NaN, the selects still run."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((16, 7)) * 4).astype("float32")
    y = rng.integers(0, 7, 16)
    w = rng.random(16).astype("float32")
    yb = (rng.random((16, 7)) < 0.5).astype("float32")
    seen = []
    real = _losses._safe_now

    def spy(v):
        seen.append(real(v))
        return seen[-1]

    def losses():
        out = []
        for red in REDUCTIONS:
            for kw in ({}, {"sample_weight": w}):
                for loss in (
                    skk.SparseCategoricalCrossentropy(from_logits=True, reduction=red),
                    skk.SparseCategoricalCrossentropy(
                        from_logits=True, reduction=red, ignore_class=3
                    ),
                    skk.BinaryCrossentropy(from_logits=True, reduction=red),
                ):
                    yy = yb if isinstance(loss, skk.BinaryCrossentropy) else y
                    out.append(_np(loss(yy, x, **kw)))
        return out

    monkeypatch.setattr(_losses, "_safe_now", spy)
    fast = losses()
    assert seen and all(seen)  # every reduced call knew its sum safe
    monkeypatch.setattr(_losses, "_safe_now", lambda v: False)
    slow = losses()
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not real(ops.convert_to_tensor(np.array([1e38, 1.0], "float32")))
    assert not real(ops.convert_to_tensor(np.array([np.nan, 1.0], "float32")))
    assert real(ops.convert_to_tensor(np.zeros((0,), "float32")))


def test_bad_labels_raise_eagerly():
    with pytest.raises((SoftmaxkitValueError, ValueError)):
        skk.SparseCategoricalCrossentropy(from_logits=True)(
            np.array([3]), np.zeros((1, 3), "float32")
        )
    with pytest.raises(SoftmaxkitValueError, match="reduction"):
        skk.CategoricalCrossentropy(reduction="auto")
    with pytest.raises(SoftmaxkitValueError, match="label_smoothing"):
        skk.BinaryCrossentropy(label_smoothing=1.5)


def test_ops_and_the_masked_softmax_layer():
    x = np.array([[1.0, 2.0, 3.0], [-np.inf, -np.inf, -np.inf], [0.0, -40.0, 1.0]], "float32")
    np.testing.assert_array_equal(_np(skk.softmax(x)), sk.softmax(x))
    np.testing.assert_array_equal(_np(skk.log_softmax(x)), sk.log_softmax(x))
    np.testing.assert_array_equal(_np(skk.logsumexp(x, axis=1)), sk.logsumexp(x, axis=1))
    assert float(_np(skk.logsumexp(np.zeros(100000, "float16")))) == 11.515625
    y = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], "float32")
    mask = np.array([[True, False, True], [False, False, False]])
    ours = _np(skk.Softmax()(y, mask=mask))
    theirs = _np(keras.layers.Softmax()(y, mask=mask))
    np.testing.assert_array_equal(ours[1], 0.0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    layer = skk.Softmax(axis=0, name="sm")
    assert skk.Softmax.from_config(layer.get_config()).axis == 0


def _model(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8,))
    h = keras.layers.Dense(16, activation="tanh")(inputs)
    out = keras.layers.Dense(4)(h)
    return keras.Model(inputs, out)


def test_fit_matches_keras_and_the_model_saves_and_loads(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8)).astype("float32")
    y = rng.integers(0, 4, 64)
    histories = []
    models = []
    for loss in (
        skk.SparseCategoricalCrossentropy(from_logits=True),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ):
        m = _model(7)
        m.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
        h = m.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
        histories.append(h.history["loss"])
        models.append(m)
    np.testing.assert_allclose(histories[0], histories[1], rtol=1e-5)
    assert histories[0][-1] < histories[0][0]
    for wa, wb in zip(models[0].get_weights(), models[1].get_weights(), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-6)
    # serialisation: get_config round trip and a compiled model saved and loaded
    loss = skk.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1, axis=-1)
    again = skk.CategoricalCrossentropy.from_config(loss.get_config())
    assert again.get_config() == loss.get_config()
    path = str(tmp_path / "m.keras")
    models[0].save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.loss, skk.SparseCategoricalCrossentropy)
    assert loaded.loss.get_config() == models[0].loss.get_config()
    np.testing.assert_allclose(
        loaded.evaluate(x, y, verbose=0), models[0].evaluate(x, y, verbose=0), rtol=1e-6
    )


def test_doctests():
    for mod in (skk, _losses, _ops):
        res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert res.failed == 0, f"{res.failed} doctest(s) failed in {mod.__name__}"


def test_mixed_precision_layer_output_gives_exact_loss():
    """Under mixed_float16 the loss computes in float32 from float16 logits, wide inside."""
    logits = np.array([[0.0, -20.0, -30.0]], "float16")
    got = float(_np(skk.SparseCategoricalCrossentropy(from_logits=True)(np.array([0]), logits)))
    want = math.log1p(math.exp(-20.0) + math.exp(-30.0))
    assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("reduction", [*REDUCTIONS, "mean"])
def test_ignore_class_with_column_sample_weight_equals_keras(from_logits, reduction):
    """A (B, 1) sample_weight with ignore_class: the (B,) ignore mask times the (B, 1)
    weights broadcast to (B, B) (twice Keras's sum here; 'none' gave shape (3, 3))."""
    x = np.array([[2.0, 0.0, -1.0], [0.5, 1.0, 0.0], [0.0, 0.0, 3.0]], "float32")
    y = x if from_logits else sk.softmax(x, axis=-1)
    lab = np.array([0, 2, 1])
    sw = np.array([[1.0], [2.0], [3.0]], "float32")
    kw = {"from_logits": from_logits, "ignore_class": 2, "reduction": reduction}
    for w in (sw, sw[:, 0]):
        a = _np(skk.SparseCategoricalCrossentropy(**kw)(lab, y, sample_weight=w))
        b = _np(keras.losses.SparseCategoricalCrossentropy(**kw)(lab, y, sample_weight=w))
        assert a.shape == b.shape, (w.shape, a.shape, b.shape)
        np.testing.assert_allclose(a, b, rtol=3e-6, atol=1e-7, err_msg=str(w.shape))


def _traced(fn):
    """``fn`` compiled as the active backend compiles a training step."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    import torch

    return torch.compile(fn, backend="eager")


@pytest.mark.parametrize("labels", [[3, 0], [-1, 0]])
def test_out_of_range_labels_with_probabilities(labels):
    """from_logits=False used to give -0 for label 3 or -1 (TF, JAX; torch: -0 for -1 and
    a raw RuntimeError for 3); now the error the logits route gives, naming `y_true`."""
    p = np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]], "float32")
    lab = np.array(labels)
    loss = skk.SparseCategoricalCrossentropy(reduction="none")
    with pytest.raises(SoftmaxkitValueError, match=r"`y_true` must hold class indices in \[0, 3\)"):
        loss(lab, p)
    with pytest.raises(SoftmaxkitValueError, match="`y_true`"):
        skk.SparseCategoricalCrossentropy(ignore_class=labels[0] + 7)(lab, p)
    # the ignored class may lie outside [0, C)
    ignored = _np(
        skk.SparseCategoricalCrossentropy(ignore_class=labels[0], reduction="none")(lab, p)
    )
    np.testing.assert_allclose(ignored, [0.0, -math.log(0.1)], rtol=1e-6)
    # traced: no values to check, so the item's loss is NaN (as the logits route on TF)
    got = _np(
        _traced(lambda a, b: loss(a, b))(ops.convert_to_tensor(lab), ops.convert_to_tensor(p))
    )
    assert math.isnan(got[0]), got
    assert got[1] == pytest.approx(-math.log(0.1), rel=1e-6)
    ok = _np(_traced(lambda a, b: loss(a, b))(ops.convert_to_tensor(np.array([2, 0])), p))
    np.testing.assert_allclose(ok, [-math.log(0.5), -math.log(0.1)], rtol=1e-6)


@pytest.mark.parametrize("labels", [[3, 0], [-1, 0]])
def test_out_of_range_labels_with_logits_name_y_true(labels):
    """The logits route raised each backend's own message (torch's named `target` and an
    internal ignore_index sentinel); now the one the probabilities route gives."""
    x = np.array([[2.0, 0.0, -1.0], [0.5, 1.0, 0.0]], "float32")
    loss = skk.SparseCategoricalCrossentropy(from_logits=True)
    with pytest.raises(SoftmaxkitValueError, match=r"`y_true` must hold class indices in \[0, 3\)"):
        loss(np.array(labels), x)


@pytest.mark.parametrize("from_logits", [True, False])
def test_fractional_float_labels_raise(from_logits):
    """Float labels are cast to int32, which truncated 1.5 to class 1 silently."""
    x = np.array([[2.0, 0.0, -1.0], [0.5, 1.0, 0.0]], "float32")
    loss = skk.SparseCategoricalCrossentropy(from_logits=from_logits, reduction="none")
    with pytest.raises(SoftmaxkitValueError, match=r"whole class indices; y_true\[1\] is 1.5"):
        loss(np.array([0.0, 1.5], "float32"), x if from_logits else x / x.sum(1, keepdims=True))
    whole = _np(loss(np.array([0.0, 2.0], "float32"), x if from_logits else np.abs(x) + 0.1))
    assert np.isfinite(whole).all()


@pytest.mark.parametrize("reduction", [*REDUCTIONS, "mean"])
def test_low_precision_loss_dtype_equals_keras(reduction):
    """dtype='bfloat16' gave float32 on the torch backend for every reduction but 'none'
    (the infinities of the overflow-safe mean were Python floats, promoted by torch)."""
    x = np.array([[2.0, 0.0, -1.0], [0.5, 1.0, 0.0]], "float32")
    lab = np.array([1, 0])
    onehot = np.eye(3, dtype="float32")[lab]
    sw = np.array([1.0, 2.0], "float32")
    pairs = [
        (skk.SparseCategoricalCrossentropy, keras.losses.SparseCategoricalCrossentropy, lab),
        (skk.CategoricalCrossentropy, keras.losses.CategoricalCrossentropy, onehot),
        (skk.BinaryCrossentropy, keras.losses.BinaryCrossentropy, onehot),
    ]
    for dtype in ("bfloat16", "float16"):
        for ours, theirs, y in pairs:
            for w in (None, sw):
                kw = {"from_logits": True, "reduction": reduction, "dtype": dtype}
                a = ours(**kw)(y, x, sample_weight=w)
                b = theirs(**kw)(y, x, sample_weight=w)
                got, want = (keras.backend.standardize_dtype(t.dtype) for t in (a, b))
                assert got == want == dtype, (ours.__name__, dtype, w is None, got, want)
                np.testing.assert_allclose(
                    _np(ops.cast(a, "float32")), _np(ops.cast(b, "float32")), rtol=2e-2
                )


def test_scalar_sample_weight_under_mean_with_sample_weight_is_the_mean():
    """A deliberate divergence (module docstring): a scalar weight weighs every item alike,
    so the mean is the plain mean; Keras 3.15 divides by the scalar and returns the sum."""
    x = np.array([[2.0, 0.0, -1.0], [0.5, 1.0, 0.0], [0.0, 0.0, 3.0]], "float32")
    lab = np.array([0, 2, 1])
    red = "mean_with_sample_weight"
    per = _np(skk.SparseCategoricalCrossentropy(from_logits=True, reduction="none")(lab, x))
    loss = skk.SparseCategoricalCrossentropy(from_logits=True, reduction=red)
    for w in (2.0, 1.0, np.float32(0.5), np.array([2.0], "float32"), np.full(3, 2.0, "float32")):
        assert float(_np(loss(lab, x, sample_weight=w))) == pytest.approx(per.mean(), rel=1e-6)
    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=red)
    theirs = float(_np(keras_loss(lab, x, sample_weight=2.0)))
    assert theirs == pytest.approx(per.sum(), rel=1e-6)  # if Keras fixes it, drop the note


@pytest.mark.parametrize("axis", [(1, 2), (0, 2), (-2, -1), (2, 1), (1,), [1, 2], None])
def test_softmax_over_several_axes(axis):
    """A tuple axis raised "`dim` must be an int" on the torch backend (TF and JAX took
    it); a list (keras.layers.Softmax's documented form) is taken on every backend, and
    axis=None is every axis as in keras.ops.softmax (the TF backend took the last)."""
    x = np.random.default_rng(4).standard_normal((2, 3, 4)).astype("float32")
    ref_axis = None if axis is None else tuple(axis)
    want = sk.softmax(x.astype(np.float64), axis=ref_axis)
    want_log = sk.log_softmax(x.astype(np.float64), axis=ref_axis)
    np.testing.assert_allclose(_np(skk.softmax(x, axis=axis)), want, rtol=2e-6, atol=1e-8)
    np.testing.assert_allclose(_np(skk.log_softmax(x, axis=axis)), want_log, rtol=2e-6, atol=1e-7)
    if axis is not None:
        np.testing.assert_allclose(_np(skk.Softmax(axis=axis)(x)), want, rtol=2e-6, atol=1e-8)
        if 0 not in {a % 3 for a in ref_axis}:  # the first item fully masked: all 0
            mask = np.ones((2, 3, 4), bool)
            mask[0] = False
            masked = _np(skk.Softmax(axis=axis)(x, mask=mask))
            np.testing.assert_allclose(masked, np.where(mask, want, 0.0), rtol=2e-6, atol=1e-8)
    if axis is None or all(a >= 0 for a in axis):  # Keras's own tuple route: no negatives
        keras_axis = None if axis is None else tuple(axis)
        theirs = _np(keras.ops.softmax(x, axis=keras_axis))
        np.testing.assert_allclose(_np(skk.softmax(x, axis=axis)), theirs, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("axis", "match"),
    [((1, 1), "`axis=.*repeats"), ((3,), "`axis=3` is out of range"), ((), "`axis=\\(\\)`")],
)
def test_softmax_bad_axes_name_axis(axis, match):
    x = np.zeros((2, 3, 4), "float32")
    for fn in (skk.softmax, skk.log_softmax):
        with pytest.raises(SoftmaxkitValueError, match=match):
            fn(x, axis=axis)
