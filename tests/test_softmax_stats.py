"""softmax_stats: logsumexp, entropy and top-k log-probabilities of plain arrays in one pass."""

from __future__ import annotations

import math

import numpy as np
import pytest

import softmaxkit as sk
from tests import _reference as R


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_against_the_reference(dtype):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((32, 5000)) * 5).astype(dtype)
    x[::3, 9] += 45.0  # dominant logits: entropies of ~1e-16
    st = sk.softmax_stats(x, topk=5)
    ref = R.reference(x)
    bound = 0.5 + 1e-4 if dtype == "float32" else 0.75
    assert st.lse.dtype == np.dtype(dtype)
    assert R.ulp_error(st.lse, R.logsumexp_ref(ref)).max() <= bound
    p, lp = R.softmax_ref(ref), R.log_softmax_ref(ref)
    h_ref = -np.sum(p * lp, axis=1)
    np.testing.assert_allclose(
        st.entropy.astype(np.float64),
        h_ref.astype(np.float64),
        rtol=1e-6 if dtype == "float32" else 1e-12,
    )
    # the top-k: the indices of top_k, and exactly log_softmax's values there
    np.testing.assert_array_equal(st.topk_indices, sk.top_k(x, 5).indices)
    want = np.take_along_axis(sk.log_softmax(x), st.topk_indices, axis=1)
    np.testing.assert_array_equal(st.topk_logprobs, want)


def test_special_rows_and_axis():
    x = np.array([[1.0, np.inf, np.inf, 0.0], [-np.inf] * 4, [0.0, -40.0, -40.0, -40.0]])
    st = sk.softmax_stats(x.T, axis=0, topk=2)
    np.testing.assert_array_equal(st.lse[:2], [np.inf, -np.inf])
    np.testing.assert_array_equal(st.entropy[:2], [math.log(2.0), 0.0])
    np.testing.assert_array_equal(st.topk_logprobs[:, 0], [-math.log(2.0)] * 2)
    # a dominant logit: H = log D - T / D keeps the tiny entropy (about 40 * 3 e^-40)
    h = float(st.entropy[2])
    assert h == pytest.approx(3 * math.exp(-40.0) * 41.0, rel=1e-12)
    nan = sk.softmax_stats(np.array([[np.nan, 1.0]]))
    assert np.isnan(nan.lse[0]) and np.isnan(nan.entropy[0])


def test_array_api_namespace():
    xps = pytest.importorskip("array_api_strict", reason="pip install array-api-strict")
    x = np.random.default_rng(4).standard_normal((4, 50))
    st = sk.softmax_stats(xps.asarray(x), topk=3)
    assert isinstance(st.lse, type(xps.asarray(x)))
    want = sk.softmax_stats(x, topk=3)
    np.testing.assert_allclose(np.asarray(st.lse._array), want.lse, rtol=1e-15)
    np.testing.assert_allclose(np.asarray(st.entropy._array), want.entropy, rtol=1e-13)
    np.testing.assert_array_equal(np.asarray(st.topk_indices._array), want.topk_indices)


def test_bad_arguments():
    x = np.zeros((2, 3))
    with pytest.raises(sk.SoftmaxkitValueError, match=r"0\.\.3"):
        sk.softmax_stats(x, topk=4)
    with pytest.raises(sk.SoftmaxkitTypeError, match="`topk` must be an integer"):
        sk.softmax_stats(x, topk=1.5)
    with pytest.raises(sk.SoftmaxkitTypeError, match="single int"):
        sk.softmax_stats(x, axis=None)
    assert sk.softmax_stats(x, entropy=False).entropy is None
    # an integer from NumPy arithmetic was refused as "not an integer"
    np.testing.assert_array_equal(
        sk.softmax_stats(x, topk=np.int64(2)).topk_indices, sk.softmax_stats(x, topk=2).topk_indices
    )
