"""predict, top_k and Gumbel-max sampling: exact decisions, and draws whose frequencies
match softmax(logits / T) by a chi-square test, with each library's own generator."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax as sp_softmax
from scipy.stats import chisquare

import softmaxkit as sk
from tests._helpers import assert_same_library

LOGITS = np.array([2.0, 1.0, 0.1, -1.0, 0.5])
N_DRAWS = 20_000


def _rng_for(backend, seed: int):
    """The generator a user of this library would pass."""
    if backend.name == "torch":
        import torch

        return torch.Generator().manual_seed(seed)
    if backend.name.startswith("jax"):
        return backend.extra["jax"].random.key(seed)
    return np.random.default_rng(seed)


def _frequencies_match(draws: np.ndarray, probs: np.ndarray) -> float:
    """The chi-square p-value of the draws against ``probs`` over the classes that can occur."""
    counts = np.bincount(draws, minlength=probs.size)
    assert np.all(counts[probs == 0] == 0), "a filtered class was drawn"
    live = probs > 0
    return float(chisquare(counts[live], probs[live] * draws.size).pvalue)


def _filtered(probs: np.ndarray, keep: list[int]) -> np.ndarray:
    out = np.zeros_like(probs)
    out[keep] = probs[keep]
    return out / out.sum()


@pytest.mark.parametrize(
    ("options", "kept"),
    [
        ({}, [0, 1, 2, 3, 4]),
        ({"temperature": 0.7}, [0, 1, 2, 3, 4]),
        ({"temperature": 2.0, "top_k": 3}, [0, 1, 4]),
        ({"top_p": 0.8}, [0, 1, 4]),  # p = .50 .18 .07 .03 .11 (T=1)
        ({"min_p": 0.2}, [0, 1, 4]),
    ],
)
def test_frequencies_match_softmax(backend, options, kept):
    probs = _filtered(sp_softmax(LOGITS / options.get("temperature", 1.0)), kept)
    x = backend.asarray(LOGITS)
    draws = sk.sample(x, rng=_rng_for(backend, 1234), n=N_DRAWS, **options)
    assert_same_library(draws, x)
    d = backend.to_numpy(draws)
    assert d.shape == (N_DRAWS,)
    assert _frequencies_match(d, probs) > 1e-3


def test_reproducible_with_a_seed(backend):
    x = backend.asarray(LOGITS)
    a = backend.to_numpy(sk.sample(x, rng=_rng_for(backend, 7), n=200))
    b = backend.to_numpy(sk.sample(x, rng=_rng_for(backend, 7), n=200))
    c = backend.to_numpy(sk.sample(x, rng=_rng_for(backend, 8), n=200))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    if backend.name in ("numpy", "torch"):  # an integer seed makes that library's generator
        s1 = backend.to_numpy(sk.sample(x, rng=3, n=50))
        np.testing.assert_array_equal(s1, backend.to_numpy(sk.sample(x, rng=3, n=50)))


def test_rows_are_independent_distributions():
    rng = np.random.default_rng(5)
    z = np.array([[3.0, 0.0, 0.0], [0.0, 0.0, 3.0], [-np.inf, 1.0, 1.0]])
    draws = sk.sample(z, rng=rng, n=N_DRAWS, temperature=1.5)
    assert draws.shape == (N_DRAWS, 3)
    for row in range(3):
        assert _frequencies_match(draws[:, row], sp_softmax(z[row] / 1.5)) > 1e-3


def test_class_axis_and_single_draw():
    z = np.array([[5.0, -5.0], [-5.0, 5.0], [0.0, 0.0]])  # classes on axis 0
    draws = sk.sample(z, axis=0, rng=np.random.default_rng(0))
    assert draws.shape == (2,)
    many = sk.sample(z, axis=0, rng=np.random.default_rng(0), n=1000)
    assert np.mean(many[:, 0] == 0) > 0.99 and np.mean(many[:, 1] == 1) > 0.99


def test_infinite_logits_sample_uniformly_among_them():
    z = np.array([np.inf, 0.0, np.inf, 5.0])
    d = sk.sample(z, rng=np.random.default_rng(2), n=4000)
    assert set(np.unique(d)) == {0, 2}
    assert _frequencies_match(d, np.array([0.5, 0, 0.5, 0])) > 1e-3


def test_ties_at_the_top_k_cut_are_kept():
    d = sk.sample(np.array([1.0, 2.0, 1.0, 0.0]), top_k=2, rng=np.random.default_rng(3), n=3000)
    assert set(np.unique(d)) == {0, 1, 2}


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"temperature": 0.0}, sk.SoftmaxkitValueError, "predict"),
        ({"top_k": 0}, sk.SoftmaxkitValueError, "top_k"),
        ({"top_p": 0.0}, sk.SoftmaxkitValueError, r"top_p.*\(0, 1\]"),
        ({"min_p": 1.5}, sk.SoftmaxkitValueError, "min_p"),
        ({"n": -1}, sk.SoftmaxkitValueError, "`n`"),
        ({"rng": "seed"}, sk.SoftmaxkitTypeError, "rng"),
    ],
)
def test_bad_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sk.sample(LOGITS, **kwargs)


def test_bad_rows():
    with pytest.raises(sk.SoftmaxkitValueError, match="NaN"):
        sk.sample(np.array([0.0, np.nan]), rng=0)
    with pytest.raises(sk.SoftmaxkitValueError, match="all -inf"):
        sk.sample(np.array([[0.0, 1.0], [-np.inf, -np.inf]]), rng=0)


def test_jax_needs_a_key():
    jnp = pytest.importorskip("jax.numpy")
    with pytest.raises(sk.SoftmaxkitValueError, match=r"jax\.random\.key"):
        sk.sample(jnp.asarray(LOGITS))


class TestDecisions:
    def test_predict_is_argmax(self, backend):
        z = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 2.5], [-np.inf, 0.0, np.inf]])
        x = backend.asarray(z)
        got = sk.predict(x)
        assert_same_library(got, x)
        np.testing.assert_array_equal(backend.to_numpy(got), [0, 1, 2])
        np.testing.assert_array_equal(backend.to_numpy(sk.predict(x, axis=0)), [0, 1, 2])

    def test_top_k_matches_torch_topk(self, backend):
        z = np.array([[0.1, 2.0, 1.0, 2.0, -3.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
        x = backend.asarray(z)
        vals, idx = sk.top_k(x, 3)
        assert_same_library(vals, x)
        np.testing.assert_array_equal(backend.to_numpy(idx), [[1, 3, 2], [0, 1, 2]])
        np.testing.assert_array_equal(backend.to_numpy(vals), [[2.0, 2.0, 1.0], [5.0, 4.0, 3.0]])
        torch = pytest.importorskip("torch")
        tv, _ = torch.topk(torch.from_numpy(z), 3)
        np.testing.assert_array_equal(backend.to_numpy(vals), tv.numpy())

    def test_boolean_scores_and_numpy_k(self, backend):
        # the Array API ranks no booleans (array-api-strict raised in argmax/argsort),
        # and k from NumPy arithmetic was refused as "not an integer"
        x = backend.asarray(np.array([[False, True, True], [True, False, False]]))
        np.testing.assert_array_equal(backend.to_numpy(sk.predict(x)), [1, 0])
        vals, idx = sk.top_k(x, np.int64(2))
        assert_same_library(vals, x)
        assert backend.to_numpy(vals).dtype == np.bool_
        np.testing.assert_array_equal(backend.to_numpy(vals), [[True, True], [True, False]])
        np.testing.assert_array_equal(backend.to_numpy(idx), [[1, 2], [0, 1]])

    def test_errors(self):
        with pytest.raises(sk.SoftmaxkitTypeError, match="`k` must be an integer"):
            sk.top_k(np.zeros(3), 2.0)
        with pytest.raises(sk.SoftmaxkitValueError, match="NaN"):
            sk.predict(np.array([0.0, np.nan]))
        with pytest.raises(sk.SoftmaxkitValueError, match=r"1\.\.3"):
            sk.top_k(np.zeros(3), 4)
        with pytest.raises(sk.SoftmaxkitValueError, match="no classes"):
            sk.predict(np.zeros((2, 0)))
