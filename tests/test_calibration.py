"""softmaxkit.calibration: definitions by hand, scikit-learn where it overlaps, every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax as sp_log_softmax

import softmaxkit as sk
from softmaxkit import calibration as cal
from tests._helpers import assert_same_library

# Four two-class predictions: two at confidence 0.9 (one right), two at 0.6 (both right).
HAND_P = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
HAND_Y = np.array([0, 1, 0, 0])


def _overconfident(n: int = 600, c: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a model that is right ~70% of the time but ~3x too sharp."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    z = rng.normal(size=(n, c))
    z[np.arange(n), y] += 1.5
    return 3.0 * z, y


class TestHandComputed:
    def test_ece_mce_brier_nll(self, backend):
        z = backend.asarray(np.log(HAND_P))
        y = backend.asarray(HAND_Y)
        e = cal.ece(z, y)
        assert_same_library(e, z)
        # bins: conf 0.9 -> acc 0.5, conf 0.6 -> acc 1.0
        assert float(backend.to_numpy(e)) == pytest.approx((2 * 0.4 + 2 * 0.4) / 4, abs=1e-6)
        assert float(backend.to_numpy(cal.mce(z, y))) == pytest.approx(0.4, abs=1e-6)
        brier = np.mean(np.sum((HAND_P - np.eye(2)[HAND_Y]) ** 2, axis=1))
        assert float(backend.to_numpy(cal.brier_score(z, y))) == pytest.approx(brier, rel=1e-6)
        nll = -np.mean(np.log(HAND_P[np.arange(4), HAND_Y]))
        assert float(backend.to_numpy(cal.nll(z, y))) == pytest.approx(nll, rel=1e-6)

    def test_reliability_bins(self, backend):
        d = cal.reliability_diagram(
            backend.asarray(np.log(HAND_P)), backend.asarray(HAND_Y), n_bins=5
        )
        np.testing.assert_array_equal(d.counts, [0, 0, 2, 0, 2])
        np.testing.assert_allclose(d.confidence[[2, 4]], [0.6, 0.9], rtol=1e-6)
        np.testing.assert_allclose(d.accuracy[[2, 4]], [1.0, 0.5])
        assert np.isnan(d.confidence[0]) and np.isnan(d.accuracy[3])
        np.testing.assert_allclose(d.edges, np.linspace(0, 1, 6))
        assert d.ece == pytest.approx(0.4, abs=1e-6) and d.mce == pytest.approx(0.4, abs=1e-6)
        assert d.to_dict()["confidence"][0] is None

    def test_bins_in_blocks_of_examples(self, backend, monkeypatch):
        # Bins are summed a block of examples at a time (the examples x bins matrices
        # of a whole LM evaluation would take gigabytes); blocks of 2, 3 or 7 examples
        # must give the one-block counts and sums. Against np.bincount, in float64.
        rng = np.random.default_rng(3)
        z = rng.standard_normal((101, 5)) * 2.0
        y = rng.integers(0, 5, 101)
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        conf = p.max(1)
        hit = (p.argmax(1) == y).astype(float)
        idx = np.searchsorted(np.linspace(0, 1, 8)[1:-1], conf, side="left")
        want_counts = np.bincount(idx, minlength=7)
        zb, yb = backend.asarray(z), backend.asarray(y)
        whole = cal.reliability_diagram(zb, yb, n_bins=7)
        np.testing.assert_array_equal(whole.counts, want_counts)
        for block in (14, 21, 49):  # 2, 3 and 7 examples a block
            monkeypatch.setattr(cal, "_BIN_BLOCK", block)
            d = cal.reliability_diagram(zb, yb, n_bins=7)
            np.testing.assert_array_equal(d.counts, want_counts)
            np.testing.assert_allclose(d.confidence, whole.confidence, rtol=1e-6)
            np.testing.assert_allclose(d.accuracy, whole.accuracy, rtol=1e-12)
            sums = np.bincount(idx, weights=hit, minlength=7)
            with np.errstate(invalid="ignore"):
                np.testing.assert_allclose(d.accuracy, sums / want_counts, rtol=1e-12)
            assert d.ece == pytest.approx(whole.ece, rel=1e-6, abs=1e-7)

    def test_bins_are_right_closed_and_one_is_in_the_last_bin(self):
        # sigmoid(0) = 0.5 exactly: with 4 bins it belongs to (0.25, 0.5], not (0.5, 0.75].
        # sigmoid(800) = 1.0 exactly: last bin, not an extra one (torchmetrics#3510).
        z = np.array([0.0, 0.0, 800.0, -800.0])
        y = np.array([1.0, 0.0, 1.0, 0.0])
        d = cal.reliability_diagram(z, y, n_bins=4, activation="sigmoid")
        np.testing.assert_array_equal(d.counts, [1, 2, 0, 1])
        assert d.accuracy[1] == 0.5 and d.accuracy[3] == 1.0 and d.accuracy[0] == 0.0
        assert d.ece == 0.0

    def test_temperature_leaves_accuracy_alone(self):
        z, y = _overconfident()
        before = cal.metrics(z, y)
        after = cal.metrics(z, y, temperature=3.0)
        assert before["accuracy"] == after["accuracy"]
        assert after["ece"] < before["ece"] and after["nll"] < before["nll"]

    def test_equal_mass_bins_hold_equal_counts(self):
        z, y = _overconfident(n=600)
        d = cal.reliability_diagram(z, y, n_bins=10, binning="equal-mass")
        assert d.counts.sum() == 600
        assert np.all(np.abs(d.counts - 60) <= 1)
        assert d.binning == "equal-mass"
        assert d.ece == pytest.approx(float(cal.ece(z, y, n_bins=10, binning="equal-mass")))


class TestAgainstScikitLearn:
    @pytest.mark.parametrize("strategy", ["uniform", "quantile"])
    def test_binary_bins_match_calibration_curve(self, strategy):
        from sklearn.calibration import calibration_curve

        rng = np.random.default_rng(1)
        z = rng.normal(scale=2.0, size=2000)
        y = (rng.random(2000) < 1 / (1 + np.exp(-0.6 * z))).astype(np.int64)
        p = 1 / (1 + np.exp(-z))
        prob_true, prob_pred = calibration_curve(y, p, n_bins=15, strategy=strategy)
        binning = "equal-width" if strategy == "uniform" else "equal-mass"
        d = cal.reliability_diagram(z, y, n_bins=15, binning=binning, activation="sigmoid")
        full = d.counts > 0
        np.testing.assert_allclose(d.accuracy[full], prob_true, rtol=1e-12)
        np.testing.assert_allclose(d.confidence[full], prob_pred, rtol=1e-12)

    def test_brier_and_log_loss(self):
        from sklearn.metrics import brier_score_loss, log_loss

        z, y = _overconfident()
        p = np.exp(sp_log_softmax(z / 1.7, axis=1))
        assert float(cal.brier_score(z, y, temperature=1.7)) == pytest.approx(
            brier_score_loss(y, p, labels=np.arange(5)), rel=1e-12
        )
        assert float(cal.nll(z, y, temperature=1.7)) == pytest.approx(
            log_loss(y, p, labels=np.arange(5)), rel=1e-10
        )
        zb = z[:, 0] - z[:, 1]
        yb = (y == 0).astype(np.int64)
        pb = 1 / (1 + np.exp(-zb))
        assert float(cal.brier_score(zb, yb, activation="sigmoid")) == pytest.approx(
            brier_score_loss(yb, pb), rel=1e-12
        )

    def test_temperature_matches_sklearn(self):
        from sklearn.calibration import _TemperatureScaling

        z, y = _overconfident()
        ref = 1.0 / _TemperatureScaling().fit(z, y).beta_
        assert cal.fit_temperature(z, y) == pytest.approx(ref, rel=1e-7)


class TestFitTemperature:
    def test_optimum_to_full_precision(self):
        z, y = _overconfident(seed=3)

        def f(t: float) -> float:
            return -np.mean(sp_log_softmax(z / t, axis=1)[np.arange(len(y)), y])

        T = cal.fit_temperature(z, y)
        ref = minimize_scalar(f, bounds=(0.5, 10), method="bounded", options={"xatol": 1e-12}).x
        assert pytest.approx(ref, rel=1e-6) == T
        # the slope in beta = 1/T vanishes at the optimum, to rounding
        data = cal._prepare(z, y, -1, "softmax")
        _, g, h = cal._objective(data)(1.0 / T)
        assert abs(g) < 1e-12 * max(1.0, h)

    def test_scale_equivariance(self):
        z, y = _overconfident(seed=4)
        assert cal.fit_temperature(4.0 * z, y) == pytest.approx(4.0 * cal.fit_temperature(z, y))

    @pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
    @pytest.mark.parametrize("scale", [10.0, 1e-150, 1e150, 1e300])
    def test_underconfident_and_extreme_scales(self, activation, scale):
        # T < 1 (logits scaled down: underconfident) used to stop after one Newton
        # step, and roots far from beta = 1 ran out of doublings
        z, y = _overconfident(seed=6)
        if activation == "sigmoid":
            z, y = z[:, 0] - z[:, 1], (y == 0).astype(np.float64)
        t1 = cal.fit_temperature(z, y, activation=activation)
        got = cal.fit_temperature(z / scale, y, activation=activation)
        assert got * scale == pytest.approx(t1, rel=1e-12)
        if scale == 10.0:  # the optimum itself: the slope in beta vanishes there
            data = cal._prepare(z / scale, y, -1, activation)
            _, g, h = cal._objective(data)(1.0 / got)
            assert abs(g) < 1e-12 * max(1.0, h)

    def test_every_backend_agrees(self, backend):
        z, y = _overconfident(n=200, seed=5)
        want = cal.fit_temperature(z, y)
        dtype = "float64" if backend.has_float64 else "float32"
        got = cal.fit_temperature(backend.asarray(z, dtype=dtype), backend.asarray(y))
        assert isinstance(got, float)
        assert got == pytest.approx(want, rel=1e-12 if dtype == "float64" else 1e-5)

    def test_class_axis_and_batch_shape(self):
        z, y = _overconfident(n=120, seed=6)
        z3 = np.moveaxis(z.reshape(12, 10, 5), -1, 0)  # classes first, batch (12, 10)
        got = cal.fit_temperature(z3, y.reshape(12, 10), axis=0)
        assert got == pytest.approx(cal.fit_temperature(z, y), rel=1e-12)

    def test_sigmoid_multilabel(self, backend):
        rng = np.random.default_rng(7)
        z = rng.normal(scale=3.0, size=(300, 4))
        y = (rng.random((300, 4)) < 1 / (1 + np.exp(-z / 2.5))).astype(np.float64)

        def f(t: float) -> float:
            s = z / t
            return float(np.mean(np.logaddexp(0, s) - y * s))

        ref = minimize_scalar(f, bounds=(0.2, 20), method="bounded", options={"xatol": 1e-12}).x
        dtype = "float64" if backend.has_float64 else "float32"
        got = cal.fit_temperature(
            backend.asarray(z, dtype=dtype), backend.asarray(y, dtype=dtype), activation="sigmoid"
        )
        assert got == pytest.approx(ref, rel=1e-6 if dtype == "float64" else 1e-4)
        assert 1.8 < got < 3.5

    def test_all_correct_is_degenerate(self):
        z = np.array([[3.0, 0.0], [0.0, 2.0], [5.0, 1.0]])
        with pytest.raises(sk.SoftmaxkitValueError, match="every example is predicted correctly"):
            cal.fit_temperature(z, np.array([0, 1, 0]))

    def test_worse_than_chance_is_degenerate(self):
        z = np.array([[3.0, 0.0], [0.0, 2.0]])
        with pytest.raises(sk.SoftmaxkitValueError, match="no better than chance"):
            cal.fit_temperature(z, np.array([1, 0]))
        with pytest.raises(sk.SoftmaxkitValueError, match="no better than chance"):
            cal.fit_temperature(np.zeros((3, 4)), np.array([0, 1, 2]))

    def test_sigmoid_separable_is_degenerate(self):
        with pytest.raises(sk.SoftmaxkitValueError, match="every label is predicted correctly"):
            cal.fit_temperature(np.array([2.0, -1.0]), np.array([1, 0]), activation="sigmoid")


class TestBadInput:
    @pytest.mark.parametrize(
        ("labels", "match"),
        [
            (np.array([0, 5]), r"out of range: 5 at index \(1,\).*0\.\.2"),
            (np.array([0, -1]), "out of range"),
            (np.array([0, 1, 2]), r"shape \(2,\)"),
            (np.array([0.0, 1.5]), "integer class indices"),
        ],
    )
    def test_labels(self, labels, match):
        z = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        with pytest.raises(sk.SoftmaxkitValueError, match=match):
            cal.ece(z, labels)

    def test_non_finite_logits(self):
        z = np.array([[1.0, np.nan], [0.0, 1.0]])
        with pytest.raises(sk.SoftmaxkitValueError, match="must be finite"):
            cal.fit_temperature(z, np.array([0, 1]))

    def test_options(self):
        z, y = np.log(HAND_P), HAND_Y
        with pytest.raises(sk.SoftmaxkitValueError, match="n_bins"):
            cal.ece(z, y, n_bins=0)
        # a billion bins once asked for gigabytes of edges and per-example rows
        with pytest.raises(sk.SoftmaxkitValueError, match=r"`n_bins` must lie in 1\.\.1048576"):
            cal.ece(z, y, n_bins=10**9)
        with pytest.raises(sk.SoftmaxkitValueError, match="binning"):
            cal.ece(z, y, binning="quantile")
        with pytest.raises(sk.SoftmaxkitValueError, match="activation"):
            cal.nll(z, y, activation="relu")
        with pytest.raises(sk.SoftmaxkitValueError, match="temperature"):
            cal.nll(z, y, temperature=0.0)
        with pytest.raises(sk.SoftmaxkitValueError, match=r"\[0, 1\]"):
            cal.nll(z, np.full((4, 2), 2.0), activation="sigmoid")
        with pytest.raises(sk.SoftmaxkitValueError, match="no examples"):
            cal.nll(np.zeros((0, 3)), np.zeros(0, dtype=np.int64))

    def test_inputs_not_modified(self):
        z, y = _overconfident(n=50, seed=8)
        z.flags.writeable = False
        y.flags.writeable = False
        zc, yc = z.copy(), y.copy()
        cal.fit_temperature(z, y)
        cal.metrics(z, y, binning="equal-mass")
        np.testing.assert_array_equal(z, zc)
        np.testing.assert_array_equal(y, yc)


def test_metrics_dict_is_consistent():
    z, y = _overconfident(seed=9)
    m = cal.metrics(z, y, temperature=2.0)
    assert m["ece"] == pytest.approx(float(cal.ece(z, y, temperature=2.0)), rel=1e-12)
    assert m["mce"] == pytest.approx(float(cal.mce(z, y, temperature=2.0)), rel=1e-12)
    assert m["nll"] == pytest.approx(float(cal.nll(z, y, temperature=2.0)), rel=1e-12)
    assert m["brier"] == pytest.approx(float(cal.brier_score(z, y, temperature=2.0)), rel=1e-12)
    assert m["accuracy"] == pytest.approx(np.mean(np.argmax(z, 1) == y))
    assert all(math.isfinite(v) for v in m.values())
