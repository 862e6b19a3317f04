"""The numerical contract, one test per line of the README's contract table, on every backend."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import softmaxkit as sk
from tests._helpers import f32, rtol_for, run

INF = math.inf
NAN = math.nan


class TestDominantLogit:
    """log_softmax, logsumexp and cross-entropy keep the tiny value (peers return 0)."""

    def test_log_softmax_keeps_tiny_value(self, backend):
        y = run(backend, sk.log_softmax, np.array([0.0, -40.0]), dtype="float32")
        assert y.dtype == np.float32
        assert y[0] == np.float32(-4.248354255291589e-18)
        assert y[1] == np.float32(-40.0)

    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    def test_logsumexp_and_ce(self, backend, dtype):
        if dtype not in backend.float_dtypes():
            pytest.skip(f"{backend.name} has no {dtype}")
        tiny = 4.248354255291589e-18
        want = f32(tiny) if dtype == "float32" else tiny
        lse = run(backend, sk.logsumexp, np.array([0.0, -40.0]), dtype=dtype)
        assert float(lse) == want
        ce = run(backend, sk.cross_entropy, np.array([[0.0, -40.0]]), np.array([0]), dtype=dtype)
        assert float(ce) == want

    def test_float64_subnormal_output(self, backend):
        if not backend.has_float64:
            pytest.skip("float64 needed")
        if backend.name == "jax":
            pytest.skip("XLA on the CPU flushes subnormal results to zero")
        y = run(backend, sk.log_softmax, np.array([0.0, -740.0]), dtype="float64")
        assert y[0] == -math.exp(-740.0)  # a subnormal, exactly rounded


class TestFullyMaskedRow:
    def _cases(self):
        x = np.array([[1.0, 2.0, 3.0], [-INF, -INF, -INF]])
        where = np.array([[True, False, True], [True, True, True]])
        return x, where

    def test_all_masked_by_where(self, backend):
        x = np.array([[1.0, 2.0], [3.0, 4.0]])
        where = np.array([[True, True], [False, False]])
        sm = run(backend, sk.softmax, x, where=where)
        ls = run(backend, sk.log_softmax, x, where=where)
        lse = run(backend, sk.logsumexp, x, where=where)
        np.testing.assert_array_equal(sm[1], [0.0, 0.0])
        np.testing.assert_array_equal(ls[1], [-INF, -INF])
        assert lse[1] == -INF
        assert np.all(np.isfinite(sm[0])) and abs(sm[0].sum() - 1) < 1e-12

    def test_all_minus_inf(self, backend):
        x, _ = self._cases()
        sm = run(backend, sk.softmax, x)
        ls = run(backend, sk.log_softmax, x)
        lse = run(backend, sk.logsumexp, x)
        np.testing.assert_array_equal(sm[1], [0.0, 0.0, 0.0])
        np.testing.assert_array_equal(ls[1], [-INF, -INF, -INF])
        assert lse[1] == -INF

    def test_cross_entropy_row_is_zero_and_not_counted(self, backend):
        x = np.array([[1.0, 2.0, 3.0], [-INF, -INF, -INF], [0.5, 0.5, 0.5]])
        t = np.array([2, 1, 0])
        none = run(backend, sk.cross_entropy, x, t, reduction="none")
        assert none[1] == 0.0
        mean = run(backend, sk.cross_entropy, x, t)
        np.testing.assert_allclose(mean, (none[0] + none[2]) / 2, rtol=rtol_for(mean))
        loss, grad = run(backend, sk.cross_entropy, x, t, return_grad=True)
        assert np.all(np.isfinite(grad))
        np.testing.assert_array_equal(grad[1], [0.0, 0.0, 0.0])

    def test_cross_entropy_where_masks_row(self, backend):
        x = np.array([[1.0, 2.0], [3.0, 4.0]])
        where = np.array([[True, True], [False, False]])
        loss, grad = run(
            backend,
            sk.cross_entropy,
            x,
            np.array([0, 1]),
            where=where,
            reduction="none",
            return_grad=True,
        )
        assert loss[1] == 0.0
        np.testing.assert_array_equal(grad[1], [0.0, 0.0])

    def test_logsumexp_vjp_zero_not_nan(self, backend):
        x = np.array([[0.0, 0.0], [-INF, -INF]])
        g = run(backend, sk.logsumexp_vjp, x, np.array([1.0, 1.0]))
        np.testing.assert_array_equal(g, [[0.5, 0.5], [0.0, 0.0]])


class TestPositiveInfinity:
    def test_single_inf_is_one_hot(self, backend):
        x = np.array([INF, 0.0, 1.0])
        np.testing.assert_array_equal(run(backend, sk.softmax, x), [1.0, 0.0, 0.0])
        np.testing.assert_array_equal(run(backend, sk.log_softmax, x), [0.0, -INF, -INF])
        assert float(run(backend, sk.logsumexp, x)) == INF

    def test_several_inf_share_equally(self, backend):
        x = np.array([INF, INF, 0.0, -INF])
        np.testing.assert_array_equal(run(backend, sk.softmax, x), [0.5, 0.5, 0.0, 0.0])
        ls = run(backend, sk.log_softmax, x)
        np.testing.assert_array_equal(ls[:2], [ls.dtype.type(-math.log(2))] * 2)
        np.testing.assert_array_equal(ls[2:], [-INF, -INF])

    def test_cross_entropy_limits(self, backend):
        x = np.array([[INF, 0.0, INF], [INF, 0.0, INF]])
        ce = run(backend, sk.cross_entropy, x, np.array([0, 1]), reduction="none")
        assert ce[0] == ce.dtype.type(math.log(2))
        assert ce[1] == INF


class TestNaN:
    def test_nan_makes_row_nan(self, backend):
        x = np.array([[NAN, 0.0, 1.0], [0.0, 1.0, 2.0], [NAN, INF, -INF]])
        for fn in (sk.softmax, sk.log_softmax):
            y = run(backend, fn, x)
            assert np.all(np.isnan(y[0])) and np.all(np.isnan(y[2]))
            assert not np.any(np.isnan(y[1]))
        lse = run(backend, sk.logsumexp, x)
        assert np.isnan(lse[0]) and np.isnan(lse[2]) and np.isfinite(lse[1])
        ce = run(backend, sk.cross_entropy, x, np.array([1, 1, 1]), reduction="none")
        assert np.isnan(ce[0]) and np.isfinite(ce[1])

    def test_masked_nan_is_ignored(self, backend):
        x = np.array([NAN, 0.0, 0.0])
        where = np.array([False, True, True])
        np.testing.assert_array_equal(run(backend, sk.softmax, x, where=where), [0.0, 0.5, 0.5])


class TestEmpty:
    def test_empty_axis(self, backend):
        x = np.zeros((3, 0))
        sm = run(backend, sk.softmax, x)
        assert sm.shape == (3, 0)
        assert run(backend, sk.log_softmax, x).shape == (3, 0)
        lse = run(backend, sk.logsumexp, x)
        np.testing.assert_array_equal(lse, [-INF] * 3)

    def test_empty_batch(self, backend):
        x = np.zeros((0, 4))
        assert run(backend, sk.softmax, x).shape == (0, 4)
        assert run(backend, sk.logsumexp, x).shape == (0,)
        ce = run(backend, sk.cross_entropy, x, np.zeros((0,), dtype=np.int64))
        assert float(ce) == 0.0

    def test_mean_over_zero_counted_items_is_zero(self, backend):
        x = np.array([[1.0, 2.0], [3.0, 4.0]])
        t = np.array([-100, -100])
        ce = run(backend, sk.cross_entropy, x, t, ignore_index=-100)
        assert float(ce) == 0.0
        loss, grad = run(backend, sk.cross_entropy, x, t, ignore_index=-100, return_grad=True)
        np.testing.assert_array_equal(grad, np.zeros((2, 2)))
        lp = np.log(np.full((2, 2), 0.5))
        assert float(run(backend, sk.nll_loss, lp, t, ignore_index=-100)) == 0.0
        bce = run(backend, sk.binary_cross_entropy_with_logits, np.zeros((0, 3)), np.zeros((0, 3)))
        assert float(bce) == 0.0


class TestLowPrecisionAndPromotion:
    def test_float16_logsumexp_does_not_overflow(self, backend):
        if backend.name == "array_api_strict":
            pytest.skip("array-api-strict has no float16")
        y = run(backend, sk.logsumexp, np.zeros(100_000, dtype=np.float16))
        assert y.dtype == np.float16
        assert float(y) == float(np.float16(math.log(100_000)))

    def test_float16_softmax_rounded_once(self, backend):
        if backend.name == "array_api_strict":
            pytest.skip("array-api-strict has no float16")
        y = run(backend, sk.softmax, np.zeros(100_000, dtype=np.float16))
        assert y.dtype == np.float16
        assert np.all(y == np.float16(1e-5))

    def test_bfloat16_has_no_sum_saturation(self, backend):
        x = _bfloat16_zeros(backend, 100_000)
        if x is None:
            pytest.skip(f"{backend.name} has no bfloat16")
        y = sk.softmax(x)
        assert "bfloat16" in str(y.dtype)
        vals = backend.to_numpy(backend.xp.astype(y, backend.xp.float32))
        ml_dtypes = pytest.importorskip("ml_dtypes")
        want = float(np.array(1e-5, dtype=np.float32).astype(ml_dtypes.bfloat16).astype(np.float32))
        assert np.all(vals == want)

    @pytest.mark.parametrize("dtype", ["int32", "int64", "bool"])
    def test_integer_and_bool_promote_to_default_float(self, backend, dtype):
        x = backend.asarray(np.array([0, 1, 1]).astype(dtype))
        y = sk.softmax(x)
        info = backend.xp.__array_namespace_info__()
        want = info.default_dtypes()["real floating"]
        assert y.dtype == want
        np.testing.assert_allclose(backend.to_numpy(y).sum(), 1.0, rtol=1e-6)


def _bfloat16_zeros(backend, n):
    if backend.name == "torch":
        import torch

        return torch.zeros(n, dtype=torch.bfloat16)
    if backend.name in ("jax", "jax_x32"):
        import jax.numpy as jnp

        return jnp.zeros(n, dtype=jnp.bfloat16)
    if backend.name == "numpy":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        return np.zeros(n, dtype=ml_dtypes.bfloat16)
    return None


class TestBinaryCrossEntropy:
    @pytest.mark.parametrize(("x", "y"), [(-40.0, 0.0), (40.0, 1.0)])
    def test_exact_for_large_abs_logits(self, backend, x, y):
        loss = run(
            backend,
            sk.binary_cross_entropy_with_logits,
            np.array([x]),
            np.array([y]),
            dtype="float32",
        )
        assert float(loss) == f32(4.248354255291589e-18)

    def test_float64_tail(self, backend):
        if not backend.has_float64 or backend.name == "jax":
            pytest.skip("needs float64 with subnormal support")
        loss = run(
            backend,
            sk.binary_cross_entropy_with_logits,
            np.array([-100.0]),
            np.array([0.0]),
            dtype="float64",
        )
        assert float(loss) == pytest.approx(3.720075976020836e-44, rel=1e-15)

    def test_infinite_logits_take_limits(self, backend):
        x = np.array([INF, -INF, INF, -INF, NAN])
        y = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
        loss = run(backend, sk.binary_cross_entropy_with_logits, x, y, reduction="none")
        np.testing.assert_array_equal(loss[:4], [0.0, 0.0, INF, INF])
        assert np.isnan(loss[4])
        _, grad = run(
            backend,
            sk.binary_cross_entropy_with_logits,
            x[:2],
            y[:2],
            reduction="none",
            return_grad=True,
        )
        np.testing.assert_array_equal(grad, [0.0, 0.0])

    def test_matches_definition(self, backend):
        rng = np.random.default_rng(1)
        x = rng.normal(0, 3, (5, 4))
        y = rng.uniform(0, 1, (5, 4))
        pw = np.array([1.0, 2.0, 0.5, 3.0])
        w = rng.uniform(0.5, 2, (5, 4))
        loss = run(
            backend,
            sk.binary_cross_entropy_with_logits,
            x,
            y,
            weight=w,
            pos_weight=pw,
            reduction="none",
        )
        sig = 1 / (1 + np.exp(-x))
        want = -w * (pw * y * np.log(sig) + (1 - y) * np.log1p(-sig))
        np.testing.assert_allclose(loss, want, rtol=rtol_for(loss))


class TestMeansOfHugeLosses:
    """A mean of finite losses is finite even where their sum overflows (it was inf:
    the losses were summed, then divided)."""

    @pytest.mark.parametrize("precision", ["accurate", "fast"])
    def test_means_near_the_largest_float(self, backend, precision):
        if not backend.has_float64:
            pytest.skip("a float32-only backend cannot hold losses near 1e308")
        x = np.zeros((4, 2))
        x[:, 1] = 1e308
        t = np.zeros(4, np.int64)
        kw = {"precision": precision}
        cases = [
            (sk.cross_entropy, (x, t), {}, 1e308),
            (sk.cross_entropy, (x, t), {"weight": np.array([1.0, 2.0])}, 1e308),
            (sk.cross_entropy, (x, t), {"label_smoothing": 0.1}, 0.95e308),
            (sk.cross_entropy, (x, np.tile([[1.0, 0.0]], (4, 1))), {}, 1e308),
            (sk.nll_loss, (np.full((4, 2), -1e308), t), {}, 1e308),
            (sk.binary_cross_entropy_with_logits, (np.full(4, 1e308), np.zeros(4)), {}, 1e308),
            (
                sk.binary_cross_entropy_with_logits,
                (np.full(4, 1e308), np.zeros(4)),
                {"weight": np.ones(4)},
                1e308,
            ),
        ]
        for fn, args, extra, want in cases:
            got = run(backend, fn, *args, **kw, **extra)
            assert float(got) == pytest.approx(want, rel=1e-15), (fn.__name__, extra)
        # the sum itself overflows: inf, a defined answer
        assert float(run(backend, sk.cross_entropy, x, t, reduction="sum", **kw)) == INF


class TestWeightedLogsumexp:
    """logsumexp with weights b: SciPy's convention for NaN and infinite weights, and the
    exact value where the weighted sum overflows (NaN, with sign -1, before)."""

    @pytest.mark.parametrize("precision", ["accurate", "fast"])
    def test_nonfinite_and_huge_weights(self, backend, precision):
        cases = [
            ([0.0, 0.0], [1e308, 1e308], math.log(2.0) + math.log(1e308), 1.0),
            ([2.0, 1.0], [1.0, INF], INF, 1.0),
            ([2.0, 1.0], [-INF, 1.0], INF, -1.0),
            ([2.0, 1.0], [INF, -INF], NAN, NAN),
            ([2.0, 1.0, 0.1], [1.0, NAN, 1.0], NAN, NAN),
            ([2.0, -INF], [1.0, INF], NAN, NAN),  # inf * exp(-inf): inf * 0
            ([5.0, 3.0, 1.0], [-1.7e308, -1.6e308, -1e308], None, -1.0),
        ]
        for x, b, want, want_sign in cases:
            huge = any(math.isfinite(v) and abs(v) > 1e38 for v in b)
            if huge and not backend.has_float64:
                continue  # weights beyond float32 (they would be infinite there)
            x, b = np.array(x), np.array(b)
            got, sgn = run(backend, sk.logsumexp, x, b=b, return_sign=True, precision=precision)
            if want is None:  # log|sum|, the weights scaled by 2^-1000 exactly
                want = math.log(abs(float(np.sum(b * 2.0**-1000 * np.exp(x))))) + 1000 * math.log(2)
            if math.isnan(want):
                assert np.isnan(got) and np.isnan(sgn), (x, b, got, sgn)
            else:
                assert float(got) == pytest.approx(want, rel=1e-15), (x, b)
                assert float(sgn) == want_sign, (x, b)


class TestSoftTargets:
    def test_zero_probability_on_minus_inf_logit(self, backend):
        x = np.array([[-INF, 0.0, 1.0]])
        p = np.array([[0.0, 0.5, 0.5]])
        ce = run(backend, sk.cross_entropy, x, p)
        lse = math.log(1 + math.e)
        assert float(ce) == pytest.approx(0.5 * lse + 0.5 * (lse - 1), rel=rtol_for(ce))
        _, grad = run(backend, sk.cross_entropy, x, p, return_grad=True)
        assert np.all(np.isfinite(grad)) and grad[0, 0] == 0.0

    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    @pytest.mark.parametrize("precision", ["accurate", "fast"])
    def test_zero_weight_meets_an_infinite_loss(self, backend, dtype, precision):
        # 0 * inf = 0: a term of weight zero (1 - eps with eps = 1, a class weight of
        # 0) adds nothing where its loss is infinite (a -inf or masked logit); these
        # gave NaN where the class-probability form gives the finite answer
        x = np.array([[1.0, 2.0, 3.0]])
        xm = np.array([[1.0, 2.0, -INF]])
        w0 = np.array([1.0, 1.0, 0.0])
        keep = np.array([True, True, False])
        kw = {"reduction": "none", "return_grad": True, "dtype": dtype, "precision": precision}
        cases = [
            (x, np.array([2]), {"where": keep, "label_smoothing": 1.0}),
            (xm, np.array([2]), {"label_smoothing": 1.0}),
            (xm, np.array([0]), {"weight": w0, "label_smoothing": 0.1}),
            (xm, np.array([2]), {"weight": w0}),
            (x, np.array([2]), {"weight": w0, "where": keep}),
        ]
        lse2 = math.log(math.e + math.e**2)
        soft = np.array([[0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3]])
        want = [
            lse2 - 1.5,  # uniform over the two classes left
            INF,  # smoothing puts mass on the -inf logit
            float(run(backend, sk.cross_entropy, xm, soft, weight=w0, reduction="none")[0]),
            0.0,
            0.0,
        ]
        for (xx, t, extra), exp in zip(cases, want, strict=True):
            loss, grad = run(backend, sk.cross_entropy, xx, t, **kw, **extra)
            assert float(loss[0]) == pytest.approx(exp, rel=rtol_for(loss) * 4), extra
            assert np.all(np.isfinite(grad)), extra

    def test_int_target_equals_one_hot(self, backend):
        rng = np.random.default_rng(2)
        x = rng.normal(0, 2, (6, 5))
        t = rng.integers(0, 5, 6)
        onehot = np.eye(5)[t]
        a = run(backend, sk.cross_entropy, x, t, reduction="none")
        b = run(backend, sk.cross_entropy, x, onehot, reduction="none")
        np.testing.assert_allclose(a, b, rtol=rtol_for(a))


class TestTorchConventions:
    """Weighted mean, label smoothing and z-loss follow PyTorch / T5X."""

    x = np.array([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0], [0.0, 0.0, 0.0], [2.5, 1.5, -0.5]])
    t = np.array([0, 1, 2, 2])
    w = np.array([1.0, 2.0, 3.0])

    def _reference(self, eps=0.0, w=None, soft=None):
        torch = pytest.importorskip("torch")
        F = torch.nn.functional
        x = torch.from_numpy(self.x)
        tgt = torch.from_numpy(self.t) if soft is None else torch.from_numpy(soft)
        wt = None if w is None else torch.from_numpy(w)
        return float(F.cross_entropy(x, tgt, weight=wt, label_smoothing=eps))

    def test_weighted_mean(self, backend):
        got = run(backend, sk.cross_entropy, self.x, self.t, weight=self.w)
        np.testing.assert_allclose(got, self._reference(w=self.w), rtol=rtol_for(got))

    @pytest.mark.parametrize("eps", [0.1, 1.0])
    def test_label_smoothing(self, backend, eps):
        got = run(backend, sk.cross_entropy, self.x, self.t, label_smoothing=eps)
        np.testing.assert_allclose(got, self._reference(eps=eps), rtol=rtol_for(got))
        got_w = run(backend, sk.cross_entropy, self.x, self.t, weight=self.w, label_smoothing=eps)
        np.testing.assert_allclose(got_w, self._reference(eps=eps, w=self.w), rtol=rtol_for(got_w))

    def test_soft_target_weighted_mean_divides_by_n(self, backend):
        p = np.eye(3)[self.t] * 0.8 + 0.2 / 3
        got = run(backend, sk.cross_entropy, self.x, p, weight=self.w)
        np.testing.assert_allclose(got, self._reference(w=self.w, soft=p), rtol=rtol_for(got))

    def test_z_loss(self, backend):
        z = 1e-2
        plain = run(backend, sk.cross_entropy, self.x, self.t, reduction="none")
        with_z = run(backend, sk.cross_entropy, self.x, self.t, z_loss=z, reduction="none")
        lse = np.log(np.exp(self.x).sum(axis=1))
        np.testing.assert_allclose(with_z, plain + z * lse**2, rtol=rtol_for(with_z))


class TestSeedExamples:
    """The worked examples of the seed texts (checked: the seeds' log-softmax of 0.1 is wrong)."""

    def test_softmax_examples(self, backend):
        a = run(backend, sk.softmax, np.array([2.0, 1.0, 0.1]))
        np.testing.assert_allclose(np.round(a, 3), [0.659, 0.242, 0.099], atol=1e-6)
        b = run(backend, sk.softmax, np.array([1.5, 0.8, -0.2]))
        # The seed prints 0.596 for the first entry because it divides exponentials
        # already rounded to 3 decimals (4.482 / 7.526); the exact value is 0.59550.
        np.testing.assert_allclose(b, [0.5954973, 0.2957152, 0.1087875], atol=5e-7)
        np.testing.assert_allclose(np.round(b, 3), [0.595, 0.296, 0.109], atol=1e-6)

    def test_log_softmax_example(self, backend):
        y = run(backend, sk.log_softmax, np.array([2.0, 1.0, 0.1]))
        # the seed prints -2.417 for the last entry; 0.1 - logsumexp = -2.317
        np.testing.assert_allclose(y, [-0.4170300, -1.4170300, -2.3170300], atol=5e-7)


class TestTemperatureEdges:
    """Temperature scaling keeps the special-value rules and the exactness of the max."""

    def test_infinite_and_huge_logits(self, backend):
        x = np.array([[INF, 0.0, 1.0], [1.0, -INF, 2.0], [1e30, -1e30, 0.0]])
        sm = run(backend, sk.softmax, x, temperature=0.5)
        np.testing.assert_array_equal(sm[0], [1.0, 0.0, 0.0])
        np.testing.assert_array_equal(sm[2], [1.0, 0.0, 0.0])
        assert sm[1, 1] == 0.0
        ls = run(backend, sk.log_softmax, x, temperature=2.5)
        assert ls[0, 0] == 0.0
        assert np.all(np.isfinite(ls[1, [0, 2]]))

    def test_quotient_overflow_is_an_infinity(self, backend):
        if not backend.has_float64:
            pytest.skip("needs float64")
        sm = run(backend, sk.softmax, np.array([1e308, -1e308, 0.0]), temperature=0.5)
        np.testing.assert_array_equal(sm, [1.0, 0.0, 0.0])

    def test_huge_quotients_with_an_inexact_temperature(self, backend):
        """|x / T| >= 2^52 with T not a power of two: the quotients' low parts are whole
        numbers or more, so the shift must be the maximum's full double-word value (it
        once left exp(low part) in the row: NaN from about 2^62 on)."""
        if not backend.has_float64:
            pytest.skip(f"{backend.name} has no float64 (x64 disabled): the float32 case is below")
        import mpmath

        rows = [
            [3e38, -3e38, 0.0],
            [1e17, 1e17 + 16, 0.0],
            [2.0**62, 2.0**62 - 1024, 1.0],
            [-1e30, -1e30 * (1 - 2.0**-52), 5.0],
            [1e20, 1e20, -1e20],
        ]
        x = np.array(rows)
        for t in (0.7, 3.0):
            sm = run(backend, sk.softmax, x, temperature=t)
            ls = run(backend, sk.log_softmax, x, temperature=t)
            with mpmath.workdps(400):  # lse can be 1e-149: no cancellation in 1 + it
                for i, row in enumerate(rows):
                    q = [mpmath.mpf(v) / mpmath.mpf(t) for v in row]
                    top = max(q)
                    lse = mpmath.log(sum(mpmath.exp(v - top) for v in q))
                    for k, v in enumerate(q):
                        want_ls = float(v - top - lse)
                        want_sm = float(mpmath.exp(v - top - lse))
                        assert sm[i, k] == want_sm or abs(sm[i, k] - want_sm) <= np.spacing(
                            want_sm
                        ), (row, t, k, sm[i, k], want_sm)
                        assert ls[i, k] == want_ls or abs(ls[i, k] - want_ls) <= abs(
                            np.spacing(want_ls)
                        ), (row, t, k, ls[i, k], want_ls)

    def test_dominant_maximum_keeps_its_tail_under_a_temperature(self, backend):
        """log_softmax of a dominant maximum under T = 0.3 is -5.68e-42, not 0: the
        maximum's own quotient x/T has a low word near 1e-15, which must not be left
        in the shift (the difference of the two would cancel the tail)."""
        if not backend.has_float64:
            # the lost tail was a float64 double-word effect; float32 keeps no low word
            pytest.skip(f"{backend.name} has no float64 (x64 disabled)")
        import mpmath

        x = np.array([24.43473421949654, -4.1128569803540636, -4.5896071136410574, -6.3124])
        t = 0.3
        ls = run(backend, sk.log_softmax, x, temperature=t)
        with mpmath.workdps(200):
            q = [mpmath.mpf(v) / mpmath.mpf(t) for v in x]
            want = float(-mpmath.log1p(sum(mpmath.exp(v - q[0]) for v in q[1:])))
        assert want == pytest.approx(-5.67e-42, rel=1e-2)
        assert abs(ls[0] - want) <= np.spacing(abs(want)), (ls[0], want)

    def test_large_float32_logits_with_an_inexact_temperature(self, backend):
        """float32 logits near 2^28, a few ulps apart, T not a power of two: the shifted
        values come from the exact differences (x_i - max x) / T, not from two rounded
        quotients (whose difference was 1.3 ulp off at 4e8)."""
        import mpmath

        from tests._reference import ulp_error

        rng = np.random.default_rng(5)
        rows = []
        for _ in range(12):
            base = np.float32(2.0 ** int(rng.integers(22, 30)) * rng.uniform(1, 2))
            steps = rng.integers(1, 6, 4)
            rows.append([base] + [base - k * np.spacing(base) for k in steps] + [np.float32(0)])
        x = np.array(rows, np.float32)
        for t in (0.7, 0.3):
            outs = {
                "softmax": run(backend, sk.softmax, x, temperature=t),
                "log_softmax": run(backend, sk.log_softmax, x, temperature=t),
            }
            with mpmath.workdps(60):
                ref = {"softmax": np.zeros(x.shape), "log_softmax": np.zeros(x.shape)}
                for i, row in enumerate(x):
                    q = [mpmath.mpf(float(v)) / mpmath.mpf(t) for v in row]
                    top = max(q)
                    lse = mpmath.log(sum(mpmath.exp(v - top) for v in q))
                    for k, v in enumerate(q):
                        ref["log_softmax"][i, k] = float(v - top - lse)
                        ref["softmax"][i, k] = float(mpmath.exp(v - top - lse))
            for op, out in outs.items():
                want = ref[op]
                normal = np.abs(want) >= np.finfo(np.float32).tiny
                err = ulp_error(out.astype(np.float32), want, "float32")
                assert float(np.max(np.where(normal, err, 0.0))) <= 0.505, (op, t)

    def test_maximal_entries_shift_to_exactly_zero(self, backend):
        one = run(backend, sk.log_softmax, np.array([[1.7]]), temperature=2.5)
        assert one[0, 0] == 0.0
        ties = run(backend, sk.log_softmax, np.array([1.7, 1.7]), temperature=2.5)
        np.testing.assert_array_equal(ties, [ties.dtype.type(-math.log(2))] * 2)


def _near_the_top(backend: Any, values: list[float]) -> tuple[np.ndarray, float]:
    """``values`` (given for float64) rescaled to the top of the backend's widest float
    (float32 on JAX with x64 off), and the relative tolerance of that dtype."""
    dt = np.float64 if backend.has_float64 else np.float32
    scale = float(np.finfo(dt).max) / float(np.finfo(np.float64).max)
    return np.array(values, np.float64) * scale, (1e-14 if dt == np.float64 else 2e-6)


class TestOverflowingDifferences:
    """Differences beyond the largest float of the backend's widest dtype (float32
    where x64 is off): the limits, with no NaN or warning on the way."""

    def test_cross_entropy_beyond_the_largest_float_is_inf(self, backend):
        """x_t - max x below -max: the loss is +inf and the target's gradient -1
        (the double-word difference is NaN there; the C core once returned NaN)."""
        x, rtol = _near_the_top(backend, [-1.3e308, 1.05e308, 6.3e307, -1.7e308])
        x = x[None, :]
        dt = "float64" if backend.has_float64 else "float32"
        losses = [
            float(run(backend, sk.cross_entropy, x, np.array([t]), dtype=dt, reduction="none")[0])
            for t in range(4)
        ]
        assert losses[0] == INF and losses[3] == INF
        assert losses[1] == 0.0
        assert losses[2] == pytest.approx(x[0, 1] - x[0, 2], rel=rtol)
        _, g = run(
            backend, sk.cross_entropy, x, np.array([0]), dtype=dt, reduction="sum", return_grad=True
        )
        np.testing.assert_array_equal(g, [[-1.0, 1.0, 0.0, 0.0]])

    def test_log_softmax_beyond_the_largest_float_is_minus_inf(self, backend):
        """Entries more than the largest float below the maximum give -inf (and 0 in
        softmax); a temperature above 1 brings their log-probability back into range,
        and it is then finite and accurate."""
        x, rtol = _near_the_top(backend, [-1.3e308, 1.05e308, 6.3e307, -1.7e308, 1e300])
        x = x[None, :]
        dt = "float64" if backend.has_float64 else "float32"
        for t in (1.0, 0.7, 3.0):
            ls = run(backend, sk.log_softmax, x, dtype=dt, temperature=t)[0]
            sm = run(backend, sk.softmax, x, dtype=dt, temperature=t)[0]
            top = float(np.finfo(dt).max)
            want = [float(x[0, k]) / t - float(x[0, 1]) / t for k in (0, 2, 3, 4)]
            want = [w if w >= -top else -INF for w in want]
            assert ls[1] == 0.0, (t, ls)
            np.testing.assert_allclose(ls[[0, 2, 3, 4]], want, rtol=rtol, err_msg=str(t))
            assert (t > 1.0) == np.isfinite(ls[0])
            np.testing.assert_array_equal(sm, [0.0, 1.0, 0.0, 0.0, 0.0])

    def test_bce_of_logits_near_the_top_of_the_range(self, backend):
        """Weighted binary cross-entropy of logits near the largest float: the weighted
        products pass it on the way but the loss is finite where it fits (the C core
        gave NaN, the double-word engine NaN from about 1e300 in float64)."""
        x, rtol = _near_the_top(
            backend, [-2.84e307, -1e300, 1e303, -1.7e308, 1.7e308, -5e307, -1.7e308, 1.7e308]
        )
        dt = "float64" if backend.has_float64 else "float32"
        y = np.array([0.999, 1.0, 0.5, 1.0, 0.0, 0.7, 1.0, 0.0])
        w = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.25, 0.0])
        xs = x.astype(dt).astype(np.float64)
        ys = y.astype(dt).astype(np.float64)
        want = [3 * ys[0] * -xs[0], 3 * -xs[1], 0.5 * xs[2], INF, xs[4], 3 * ys[5] * -xs[5]]
        want += [0.25 * 3 * -xs[6], 0.0]
        for precision in ("accurate", "fast"):
            loss = run(
                backend,
                sk.binary_cross_entropy_with_logits,
                x,
                y,
                dtype=dt,
                weight=w,
                pos_weight=np.array(3.0),
                reduction="none",
                precision=precision,
            )
            np.testing.assert_allclose(loss, want, rtol=rtol, err_msg=precision)


class TestGradientAtConfidentTarget:
    def test_one_minus_p_keeps_its_digits(self, backend):
        for dtype in backend.float_dtypes():
            _, g = run(
                backend,
                sk.cross_entropy,
                np.array([[0.0, -40.0]]),
                np.array([0]),
                dtype=dtype,
                reduction="none",
                return_grad=True,
            )
            tiny = g.dtype.type(4.248354255291589e-18)
            np.testing.assert_array_equal(g, [[-tiny, tiny]])


def test_byte_swapped_input_gives_native_byte_order():
    x = np.array([[1.0, 2.0, 3.0]], dtype=">f8")
    for precision in ("accurate", "fast"):
        for fn in (sk.softmax, sk.log_softmax, sk.logsumexp, sk.sigmoid):
            y = fn(x, precision=precision)
            assert y.dtype == np.dtype("float64")
            assert y.dtype.isnative
    assert sk.softmax(x.astype(">f4")).dtype == np.dtype("float32")
