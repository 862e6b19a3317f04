"""Bad input: a clear error of softmaxkit's family that names the argument, never a crash."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import softmaxkit as sk

X = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
T = np.array([0, 1])


def _raises(kind, match, fn, *args, **kwargs):
    with pytest.raises(kind, match=match) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, sk.SoftmaxkitError)
    return info.value


@pytest.mark.parametrize(
    ("args", "kwargs", "kind", "match"),
    [
        ((np.array(["a", "b"]),), {}, TypeError, "`x`.*not numeric"),
        ((X.astype(complex),), {}, TypeError, "`x` is complex"),
        ((X,), {"axis": 2}, ValueError, r"`axis=2` is out of range.*\[-2, 1\]"),
        ((X,), {"axis": (0, -2)}, ValueError, "repeats an axis"),
        ((X,), {"axis": [0]}, TypeError, "use a tuple"),
        ((X,), {"axis": 1.0}, TypeError, "`axis` must be an integer"),
        ((X,), {"axis": ()}, ValueError, "selects no axis"),
        ((np.float64(1.0),), {}, ValueError, "0-d array; use axis=None"),
        ((X,), {"temperature": 0.0}, ValueError, "`temperature` must be positive"),
        ((X,), {"temperature": -1}, ValueError, "`temperature` must be positive"),
        ((X,), {"temperature": float("nan")}, ValueError, "`temperature`"),
        ((X,), {"temperature": float("inf")}, ValueError, "`temperature`"),
        ((X,), {"temperature": "hot"}, TypeError, "`temperature` must be a positive real"),
        ((X,), {"precision": "exact"}, ValueError, "`precision` must be 'accurate' or 'fast'"),
        ((X,), {"where": np.ones((2, 3))}, TypeError, "`where` must be a boolean array"),
        ((X,), {"where": np.ones((3, 3), bool)}, ValueError, "`where` has shape"),
    ],
)
def test_softmax_family_arguments(args, kwargs, kind, match):
    for fn in (sk.softmax, sk.log_softmax):
        _raises(kind, match, fn, *args, **kwargs)


def test_logsumexp_arguments():
    _raises(TypeError, "`keepdims` must be True or False", sk.logsumexp, X, keepdims=1)
    _raises(TypeError, "`return_sign`", sk.logsumexp, X, return_sign="yes")
    _raises(ValueError, "`b` has shape", sk.logsumexp, X, b=np.ones(4))
    _raises(
        TypeError,
        "`b` must be a real or complex array",
        sk.logsumexp,
        X,
        b=np.array(["a", "b", "c"]),
    )


@pytest.mark.parametrize(
    ("target", "kwargs", "kind", "match"),
    [
        (np.array([0, 3]), {}, ValueError, r"out of range: 3 at index \(1,\); valid .* 0\.\.2"),
        (np.array([-1, 0]), {}, ValueError, "class index out of range"),
        (np.array([-5, 0]), {"ignore_index": -100}, ValueError, "or ignore_index=-100"),
        (np.array([0, 1, 2]), {}, ValueError, r"shape \(3,\).*\(2,\)"),
        (np.array([0.0, np.nan]), {}, ValueError, "NaN or inf"),
        (np.array([0.0, 1.5]), {}, ValueError, "non-integer"),
        (np.array([True, False]), {}, TypeError, "boolean"),
        (np.array(["a", "b"]), {}, TypeError, "`target`"),
        (np.ones((2, 4)) / 4, {}, ValueError, "probabilities with shape"),
        (np.array([[1.2, -0.2, 0.0], [0, 1, 0]]), {}, ValueError, "negative probability"),
        (np.array([[1.0, 0, 0], [np.nan, 1, 0]]), {}, ValueError, "contains NaN"),
        (np.eye(3)[[0, 1]], {"ignore_index": 0}, ValueError, "class-index targets only"),
        (T, {"reduction": "avg"}, ValueError, "`reduction` must be one of"),
        (T, {"label_smoothing": 1.5}, ValueError, r"`label_smoothing` must lie in \[0, 1\]"),
        (T, {"label_smoothing": -0.1}, ValueError, "`label_smoothing`"),
        (T, {"z_loss": -1e-4}, ValueError, "`z_loss`"),
        (T, {"weight": np.ones(2)}, ValueError, r"`weight` must have shape \(3,\)"),
        (T, {"weight": np.array([1.0, -1.0, 1.0])}, ValueError, "`weight` must be finite and >= 0"),
        (T, {"axis": None}, TypeError, "single int"),
        (T, {"return_grad": 1}, TypeError, "`return_grad`"),
        (T, {"ignore_index": 1.5}, TypeError, "`ignore_index`"),
    ],
)
def test_cross_entropy_arguments(target, kwargs, kind, match):
    _raises(kind, match, sk.cross_entropy, X, target, **kwargs)


def test_nll_loss_arguments():
    lp = sk.log_softmax(X)
    _raises(ValueError, "class index out of range", sk.nll_loss, lp, np.array([0, 7]))
    _raises(ValueError, "`weight` must have shape", sk.nll_loss, lp, T, weight=np.ones(5))


def test_bce_arguments():
    y = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 1.0]])
    _raises(
        ValueError, r"`target` must lie in \[0, 1\]", sk.binary_cross_entropy_with_logits, X, y * 2
    )
    _raises(ValueError, "`target` has shape", sk.binary_cross_entropy_with_logits, X, np.ones(4))
    _raises(ValueError, "would enlarge", sk.binary_cross_entropy_with_logits, X[0], np.ones((2, 3)))
    _raises(
        ValueError,
        "`pos_weight` must be finite and >= 0",
        sk.binary_cross_entropy_with_logits,
        X,
        y,
        pos_weight=np.array([1.0, -2.0, 1.0]),
    )
    _raises(
        ValueError,
        "`weight` has shape",
        sk.binary_cross_entropy_with_logits,
        X,
        y,
        weight=np.ones(5),
    )


def test_bce_enlarging_weights():
    for name in ("weight", "pos_weight"):
        _raises(
            ValueError,
            f"`{name}` has shape \\(2, 3\\), which would enlarge",
            sk.binary_cross_entropy_with_logits,
            X[0],
            X[0] * 0,
            **{name: np.ones((2, 3))},
        )


def test_thread_counts_beyond_a_c_int_are_the_largest_request():
    # "at most this many threads": results never depend on the count
    for threads in (2**31, 2**40):
        np.testing.assert_array_equal(sk.softmax(X, threads=threads), sk.softmax(X))
        np.testing.assert_array_equal(sk.log_softmax(X, threads=threads), sk.log_softmax(X))
        np.testing.assert_array_equal(sk.logsumexp(X, threads=threads), sk.logsumexp(X))
        assert sk.cross_entropy(X, T, threads=threads) == sk.cross_entropy(X, T)
        y = X * 0
        assert sk.binary_cross_entropy_with_logits(
            X, y, threads=threads
        ) == sk.binary_cross_entropy_with_logits(X, y)
    _raises(ValueError, "`threads` must be >= 1", sk.logsumexp, X.astype(complex), threads=0)


def test_indices_beyond_int64():
    for v in (2**63, 2**64, -(2**63) - 1):
        _raises(
            ValueError,
            "`ignore_index` must fit in a signed 64-bit",
            sk.cross_entropy,
            X,
            T,
            ignore_index=v,
        )
    _raises(
        ValueError,
        "`offset` must fit in a signed 64-bit",
        sk.LogSumExpState.from_block,
        X,
        target=T,
        offset=2**64,
    )


def test_state_arguments():
    _raises(TypeError, "`states` must be an iterable", sk.merge_all, 3)
    a = sk.LogSumExpState.from_block(X.astype(np.float32))
    b = sk.LogSumExpState.from_block(X)
    _raises(TypeError, "different array libraries or dtypes", sk.merge, a, b)
    _raises(TypeError, "different array libraries or dtypes", sk.merge, b, a)


def test_vjp_arguments():
    y = sk.softmax(X)
    _raises(ValueError, "`g` has shape", sk.softmax_vjp, y, np.ones(3))
    _raises(ValueError, "`g` has shape", sk.logsumexp_vjp, X, np.ones(3))


def test_mixing_libraries_is_an_error():
    torch = pytest.importorskip("torch")
    jnp = pytest.importorskip("jax.numpy")
    _raises(
        TypeError,
        "different array libraries",
        sk.cross_entropy,
        torch.zeros(2, 3),
        torch.zeros(2, dtype=torch.int64),
        weight=jnp.ones(3),
    )
    # NumPy logits fix NumPy: a torch target is not silently moved to NumPy
    _raises(
        TypeError,
        "convert `target` to NumPy",
        sk.cross_entropy,
        np.zeros((2, 3)),
        torch.zeros(2, dtype=torch.int64),
    )


def test_lists_of_strings_are_rejected():
    _raises(TypeError, "`x`", sk.softmax, ["a", "b"])


_REQUIRED = [
    ("softmax", lambda a: sk.softmax(a), "`x` is None"),
    ("log_softmax", lambda a: sk.log_softmax(a), "`x` is None"),
    ("logsumexp", lambda a: sk.logsumexp(a), "`x` is None"),
    ("sigmoid", lambda a: sk.sigmoid(a), "`x` is None"),
    ("cross_entropy logits", lambda a: sk.cross_entropy(a, T), "`logits` is None"),
    ("cross_entropy target", lambda a: sk.cross_entropy(X, a), "`target` is None"),
    ("nll_loss target", lambda a: sk.nll_loss(X, a), "`target` is None"),
    ("bce target", lambda a: sk.binary_cross_entropy_with_logits(X, a), "`target` is None"),
    ("softmax_vjp g", lambda a: sk.softmax_vjp(X, a), "`g` is None"),
    ("sample", lambda a: sk.sample(a), "`logits` is None"),
    ("predict", lambda a: sk.predict(a), "`logits` is None"),
    ("top_k", lambda a: sk.top_k(a, 1), "`logits` is None"),
    ("explain", lambda a: sk.explain(a), "`logits` is None"),
    ("softmax_stats", lambda a: sk.softmax_stats(a), "`logits` is None"),
    ("state", lambda a: sk.LogSumExpState.from_block(a), "`x` is None"),
]


@pytest.mark.parametrize(
    ("call", "match"), [(c, m) for _, c, m in _REQUIRED], ids=[n for n, _, _ in _REQUIRED]
)
def test_none_for_a_required_array_names_it(call, match):
    # None used to reach `.dtype` / `.shape` and leak an AttributeError
    _raises(TypeError, match, call, None)


@pytest.mark.parametrize(
    "call",
    [
        lambda a: sk.softmax(a),
        lambda a: sk.logsumexp(a),
        lambda a: sk.sample(a, rng=0),
        lambda a: sk.cross_entropy(a, T),
    ],
    ids=["softmax", "logsumexp", "sample", "cross_entropy"],
)
def test_masked_arrays_and_matrices_are_refused_not_flattened(call):
    m = np.ma.masked_array(X, mask=[[False, True, False], [False, False, False]])
    snapshot = m.copy()
    # the mask would have been dropped: a silently wrong answer for the masked entry
    err = _raises(TypeError, "masked array.*where=~np.ma.getmaskarray", call, m)
    assert "`x`" in str(err) or "`logits`" in str(err)
    np.testing.assert_array_equal(np.ma.getmaskarray(m), np.ma.getmaskarray(snapshot))
    # np.matrix came back as a plain ndarray (sample raised a matrix.any TypeError)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # NumPy's, on np.matrix
        mat = np.asmatrix(X)
    _raises(TypeError, r"numpy\.matrix.*np\.asarray", call, mat)


def test_masked_target_is_refused_and_the_fix_works():
    t = np.ma.masked_array(T, mask=[False, True])
    _raises(TypeError, "`target` is a NumPy masked array.*ignore_index", sk.cross_entropy, X, t)
    # the fix the message names: the data, with the masked entries ignored
    fixed = np.where(np.ma.getmaskarray(t), -100, np.ma.getdata(t))
    got = sk.cross_entropy(X, fixed, ignore_index=-100)
    np.testing.assert_allclose(got, sk.cross_entropy(X[:1], T[:1]))


def test_where_is_the_masked_array_fix():
    m = np.ma.masked_array(X, mask=[[False, True, False], [False, False, False]])
    got = sk.softmax(np.ma.getdata(m), where=~np.ma.getmaskarray(m))
    assert got[0, 1] == 0.0
    np.testing.assert_allclose(got[0, [0, 2]], sk.softmax(X[0, [0, 2]]))


def test_sample_negative_seed():
    _raises(ValueError, "`rng` as an integer seed must be 0 or more", sk.sample, X, rng=-1)


@pytest.mark.parametrize("labels", [b"abc", 3, 2.5])
def test_explain_labels_must_be_a_sequence_of_names(labels):
    # numbers leaked "object is not iterable"; bytes became labels "97", "98", "99"
    _raises(
        TypeError,
        "`labels` must be a sequence of names, one per logit",
        sk.explain,
        X[0],
        labels=labels,
    )
