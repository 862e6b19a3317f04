"""The public mergeable logsumexp state: build, merge in any order, finish, serialise."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit import LogSumExpState
from tests import _reference as R


def _blocks(x: np.ndarray, cuts: list[int], **kw) -> list[LogSumExpState]:
    edges = [0, *cuts, x.shape[1]]
    return [
        LogSumExpState.from_block(x[:, a:b], offset=a, **kw) for a, b in itertools.pairwise(edges)
    ]


def _tree(states: list[LogSumExpState], rng: np.random.Generator) -> LogSumExpState:
    """Merge adjacent or arbitrary pairs at random until one state is left."""
    states = list(states)
    while len(states) > 1:
        i, j = sorted(rng.choice(len(states), 2, replace=False))
        merged = states[j].merge(states[i]) if rng.random() < 0.5 else states[i].merge(states[j])
        states = [s for k, s in enumerate(states) if k not in (i, j)] + [merged]
    return states[0]


def _rows(dtype: str) -> np.ndarray:
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((64, 3000)) * 6).astype(dtype)
    x[::4, 17] += 50.0  # dominant logits: tiny log1p terms
    x[1] -= 300.0  # a very negative maximum (cancellation in m + L)
    x[2, 100:] = -np.inf
    return x


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_any_order_and_grouping_within_the_bound(dtype):
    """Merged in sequence, reversed and in random trees: within the bound of the exact value."""
    x = _rows(dtype)
    rng = np.random.default_rng(0)
    ref = R.reference(x)
    lse_ref = R.logsumexp_ref(ref)
    ls_ref = R.log_softmax_ref(ref)
    t = rng.integers(0, x.shape[1], x.shape[0])
    t[::4] = 17
    t[2] = 5
    ce_ref = R.cross_entropy_ref(ref, t)
    # float32: correctly rounded up to the float64 sums of the blocks (n 2**-53
    # relative: 1e-5 ulp) and the merges (k 2**-62); float64: the native kernel's own
    # 0.75 ulp budget for double-word blocks, plus k 2**-62 relative
    bound = 0.5 + 1e-4 if dtype == "float32" else 0.75
    results = []
    for trial in range(6):
        cuts = sorted(rng.choice(np.arange(1, x.shape[1]), rng.integers(1, 12), replace=False))
        parts = _blocks(x, [int(c) for c in cuts], target=t)
        if trial % 3 == 0:
            st = sk.merge_all(parts)
        elif trial % 3 == 1:
            st = sk.merge_all(parts[::-1])
        else:
            st = _tree(parts, rng)
        lse = st.logsumexp()
        assert lse.dtype == np.dtype(dtype)
        assert R.ulp_error(lse, lse_ref).max() <= bound
        assert R.ulp_error(st.cross_entropy(), ce_ref).max() <= bound
        assert R.ulp_error(st.log_softmax(x), ls_ref).max() <= bound
        results.append(lse)
    if dtype == "float32":  # k 2**-62 is far below float32's half-ulp: the same bits
        assert all(np.array_equal(r, results[0]) for r in results)


def test_count_keeps_the_tiny_loss_that_max_sum_and_logaddexp_lose():
    """V = 32000, target logit 10, the others near -50, 8 blocks: the true loss 4.6e-22."""
    rng = np.random.default_rng(5)
    x = (-50.0 + rng.uniform(-1.0, 1.0, (1, 32000)) + 0.33).astype(np.float32)
    x[0, 1234] = 10.0
    t = np.array([1234])
    mp = pytest.importorskip("mpmath", reason="pip install mpmath")
    mp.mp.dps = 40
    others = np.delete(x[0], 1234).astype(np.float64)
    exact = float(mp.log1p(mp.fsum(mp.exp(mp.mpf(float(v)) - 10) for v in others)))
    assert 4.5e-22 < exact < 4.7e-22
    parts = _blocks(x, list(range(4000, 32000, 4000)), target=t)
    ours = float(sk.merge_all(parts).cross_entropy()[0])
    assert ours == pytest.approx(exact, rel=2**-24)
    assert ours == float(sk.cross_entropy(x, t, reduction="none")[0])
    # the same blocks merged as (max, sum = count + rest) pairs in float64
    m = np.array([float(p.m[0]) for p in parts])
    d = np.array([float(p.c[0]) + float(p.s_hi[0]) for p in parts])
    M = m.max()
    D = float(np.sum(d * np.exp(m - M)))
    assert (M + math.log(D)) - 10.0 == 0.0
    # and as logsumexp scalars merged with logaddexp
    lses = [
        float(sk.logsumexp(x[:, a : a + 4000].astype(np.float64))[0]) for a in range(0, 32000, 4000)
    ]
    assert float(np.logaddexp.reduce(lses)) - 10.0 == 0.0


def test_special_rows_follow_the_contract():
    x = np.array(
        [
            [1.0, np.nan, 2.0, 3.0],
            [np.inf, 0.0, 1.0, np.inf],
            [-np.inf, -np.inf, -np.inf, -np.inf],
            [np.inf, np.nan, 0.0, 0.0],
            [-np.inf, -np.inf, 0.5, -np.inf],
        ]
    )
    t = np.array([0, 3, 1, 0, 2])
    for cuts in ([1], [2], [1, 3], [3]):
        st = sk.merge_all(_blocks(x, cuts, target=t))
        np.testing.assert_array_equal(st.logsumexp(), sk.logsumexp(x))
        np.testing.assert_array_equal(st.log_softmax(x), sk.log_softmax(x))
        np.testing.assert_array_equal(st.softmax(x), sk.softmax(x))
        np.testing.assert_array_equal(st.cross_entropy(), sk.cross_entropy(x, t, reduction="none"))
    # with the sum of the logits (label smoothing): a block holding -inf or +inf
    # merged NaN into it (TwoSum's error term of -inf + finite)
    for cuts in ([1], [2], [1, 3], [3]):
        st = sk.merge_all(_blocks(x, cuts, target=t, sum_x=True))
        for eps in (0.1, 1.0):
            np.testing.assert_array_equal(
                st.cross_entropy(label_smoothing=eps),
                sk.cross_entropy(x, t, reduction="none", label_smoothing=eps),
            )
    # the empty block is the identity, merged on either side (with every part)
    for kw in ({}, {"target": np.zeros(5, np.int64), "sum_x": True}):
        empty = LogSumExpState.from_block(x[:, :0], **kw)
        np.testing.assert_array_equal(empty.logsumexp(), np.full(5, -np.inf))
        whole = LogSumExpState.from_block(x, **kw)
        for st in (empty.merge(whole), whole.merge(empty)):
            assert np.array_equal(st.to_array(), whole.to_array(), equal_nan=True)


def test_serialisation_round_trip_is_bitwise():
    x = _rows("float32")
    t = np.arange(64) % 3000
    st = LogSumExpState.from_block(x, target=t, sum_x=True, entropy=True)
    a = st.to_array()
    assert a.shape == (64, 9)
    assert a.dtype == np.float64
    back = LogSumExpState.from_array(a, target=True, sum_x=True, entropy=True, dtype=np.float32)
    assert back.parts == ("target", "sum_x", "entropy")
    assert np.array_equal(back.to_array(), a)
    np.testing.assert_array_equal(back.logsumexp(), st.logsumexp())
    np.testing.assert_array_equal(
        back.cross_entropy(label_smoothing=0.1), st.cross_entropy(label_smoothing=0.1)
    )
    with pytest.raises(sk.SoftmaxkitValueError, match="last axis has 4 entries"):
        LogSumExpState.from_array(a)


def test_label_smoothing_z_loss_and_entropy():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((16, 700)) * 3
    t = rng.integers(0, 700, 16)
    st = sk.merge_all(_blocks(x, [100, 350, 351], target=t, sum_x=True, entropy=True))
    want = sk.cross_entropy(x, t, reduction="none", label_smoothing=0.2, z_loss=1e-3)
    np.testing.assert_allclose(st.cross_entropy(label_smoothing=0.2, z_loss=1e-3), want, rtol=1e-14)
    p = sk.softmax(x)
    h = -np.sum(p * sk.log_softmax(x), axis=-1)
    np.testing.assert_allclose(st.entropy(), h, rtol=1e-13)
    ent = LogSumExpState.from_block(np.array([[np.inf, 0.0, np.inf], [-np.inf] * 3]), entropy=True)
    np.testing.assert_array_equal(ent.entropy(), [math.log(2.0), 0.0])


def test_other_array_libraries(backend):
    """Blocks of any namespace merge to that library's own single-call logsumexp."""
    x = _rows("float32")[:8, :300]
    xb = backend.asarray(x)
    want = backend.to_numpy(sk.logsumexp(xb))
    parts = [LogSumExpState.from_block(xb[:, a : a + 150]) for a in (0, 150)]
    st = sk.merge_all(parts)
    got = backend.to_numpy(st.logsumexp())
    assert got.dtype == np.float32
    assert np.max(R.ulp_error(got, want)) <= 0.5 + 1e-9


def test_blocks_more_than_the_largest_float_apart(backend):
    """A block whose maximum is more than the largest float below another's weighs 0 after the
    merge, and entries that far below the maximum finish at -inf / 0: the merged
    results equal the single calls, with no overflow on the way (tests turn
    warnings into errors)."""
    dt = np.float64 if backend.has_float64 else np.float32  # JAX with x64 off: float32
    scale = float(np.finfo(dt).max) / float(np.finfo(np.float64).max)
    x = (np.array([[1.7e308, 1.0, -1.7e308, -1.6e308, 1e308, -2.0]]) * scale).astype(dt)
    t = np.array([3])
    xb = backend.asarray(x)
    states = [
        LogSumExpState.from_block(
            backend.asarray(x[:, a : a + 2]), target=backend.asarray(t), offset=a
        )
        for a in (0, 2, 4)
    ]
    st = sk.merge_all(states)
    np.testing.assert_array_equal(backend.to_numpy(st.logsumexp()), x[:, 0])
    np.testing.assert_array_equal(backend.to_numpy(st.cross_entropy()), [math.inf])
    ls = backend.to_numpy(st.log_softmax(xb))
    np.testing.assert_array_equal(ls, backend.to_numpy(sk.log_softmax(xb)))
    assert ls[0, 2] == -math.inf and ls[0, 0] == 0.0
    np.testing.assert_array_equal(
        backend.to_numpy(st.softmax(xb)), [[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    )


def test_bad_arguments_raise_clear_errors():
    x = np.zeros((2, 3))
    a = LogSumExpState.from_block(x)
    with pytest.raises(sk.SoftmaxkitTypeError, match="LogSumExpState"):
        sk.merge(a, x)  # type: ignore[arg-type]
    with pytest.raises(sk.SoftmaxkitValueError, match="different parts"):
        a.merge(LogSumExpState.from_block(x, entropy=True))
    with pytest.raises(sk.SoftmaxkitValueError, match="different shapes"):
        a.merge(LogSumExpState.from_block(np.zeros((3, 3))))
    with pytest.raises(sk.SoftmaxkitValueError, match="no target logit"):
        a.cross_entropy()
    with pytest.raises(sk.SoftmaxkitValueError, match="sum_x=True"):
        LogSumExpState.from_block(x, target=np.array([0, 1])).cross_entropy(label_smoothing=0.1)
    with pytest.raises(sk.SoftmaxkitValueError, match="entropy=True"):
        a.entropy()
    with pytest.raises(sk.SoftmaxkitValueError, match="offset"):
        LogSumExpState.from_block(x, offset=-1)
    with pytest.raises(sk.SoftmaxkitTypeError, match="integer class indices"):
        LogSumExpState.from_block(x, target=np.array([0.5, 1.0]))
    with pytest.raises(sk.SoftmaxkitValueError, match="one class index per row"):
        LogSumExpState.from_block(x, target=np.array([0, 1, 2]))
    with pytest.raises(sk.SoftmaxkitValueError, match="same rows"):
        a.log_softmax(np.zeros((3, 3)))
    with pytest.raises(sk.SoftmaxkitValueError, match="at least one state"):
        sk.merge_all([])


@pytest.mark.parametrize("threads", [1, 2])
def test_native_kernels_on_long_rows_equal_the_single_call(threads):
    """Rows of several C-core blocks (and the two-level threaded path) give NumPy's bits.

    softmax is the exception: ``sk.softmax`` keeps the exponentials of rows of up
    to 4 blocks, relative to each block's maximum, and scales them by
    ``R exp(m_b - M)``, while ``state.softmax`` (a block of any extent) forms
    ``exp(x - M) R``. Both are correctly rounded, so they may differ in the last
    bit where the exact value is within the kernels' error of a rounding
    boundary: at most 1 ulp, on a small fraction of the entries.
    """
    rng = np.random.default_rng(8)
    for dtype in ("float32", "float64"):
        x = (rng.standard_normal((3, 100_000)) * 3).astype(dtype)
        x[1, 70_000] = np.inf
        st = LogSumExpState.from_block(x, threads=threads)
        np.testing.assert_array_equal(st.logsumexp(), sk.logsumexp(x))
        np.testing.assert_array_equal(st.log_softmax(x, threads=threads), sk.log_softmax(x))
        got, want = st.softmax(x, threads=threads), sk.softmax(x)
        pos = want > 0
        np.testing.assert_array_equal(got[~pos], want[~pos])
        ulps = np.abs(got[pos] - want[pos]) / np.spacing(want[pos])
        assert ulps.max() <= 1.0
        assert np.mean(ulps > 0) < 1e-3
        one = x[:, :30_000]  # rows of one block: the same bits
        np.testing.assert_array_equal(LogSumExpState.from_block(one).softmax(one), sk.softmax(one))


@pytest.mark.parametrize("target_chunks", [None, 3, 1])
def test_dask_target_chunked_unlike_the_logits_rows(target_chunks):
    """from_block on Dask raised a raw ValueError when the target's chunks did not match
    the logits' row chunks (NumPy targets arrive with chunks of their own)."""
    da = pytest.importorskip("dask.array")
    x = np.random.default_rng(0).standard_normal((6, 50))
    lab = np.array([1, 2, 3, 4, 5, 6])
    xd = da.from_array(x, chunks=(4, 7))
    tgt = lab if target_chunks is None else da.from_array(lab, chunks=target_chunks)
    st = LogSumExpState.from_block(xd, target=tgt).compute()
    want = sk.cross_entropy(x, lab, reduction="none")
    np.testing.assert_allclose(st.cross_entropy(), want, rtol=1e-15)
    np.testing.assert_array_equal(st.logsumexp(), sk.logsumexp(x))


def test_target_outside_every_merged_block_is_an_error():
    """A target no block held gave lse - 0 (3.4076 for [1, 2, 3]) where sk.cross_entropy
    raises; negative targets were taken as 'in another block'."""
    x = np.array([[1.0, 2.0, 3.0]])
    with pytest.raises(sk.SoftmaxkitValueError, match=r"`target` holds negative.*>= 0"):
        LogSumExpState.from_block(x, target=np.array([-1]))
    with pytest.raises(sk.SoftmaxkitValueError, match="in no block merged"):
        LogSumExpState.from_block(x, target=np.array([5])).cross_entropy()
    left = LogSumExpState.from_block(x[:, :2], target=np.array([2]))
    with pytest.raises(sk.SoftmaxkitValueError, match="in no block merged"):
        left.cross_entropy()  # the block holding class 2 is not merged in yet
    right = LogSumExpState.from_block(x[:, 2:], target=np.array([2]), offset=2)
    want = sk.cross_entropy(x, np.array([2]), reduction="none")
    np.testing.assert_array_equal(left.merge(right).cross_entropy(), want)
    np.testing.assert_array_equal(right.merge(left).cross_entropy(), want)
    # a held logit of zero (either sign) is a target logit, not "not held"
    for z in (0.0, -0.0):
        xz = np.array([[z, 2.0, 3.0]])
        st = LogSumExpState.from_block(xz[:, :1], target=np.array([0])).merge(
            LogSumExpState.from_block(xz[:, 1:], target=np.array([0]), offset=1)
        )
        np.testing.assert_array_equal(
            st.cross_entropy(), sk.cross_entropy(xz, np.array([0]), reduction="none")
        )
    # the mark survives serialisation; rows without classes stay 0 and not an error
    back = LogSumExpState.from_array(left.to_array(), target=True)
    with pytest.raises(sk.SoftmaxkitValueError, match="in no block merged"):
        back.cross_entropy()
    empty = LogSumExpState.from_block(x[:, :0], target=np.array([4]))
    np.testing.assert_array_equal(empty.cross_entropy(), [0.0])


def test_target_outside_every_block_of_lazy_fields_is_nan():
    da = pytest.importorskip("dask.array")
    x = np.array([[1.0, 2.0, 3.0], [0.5, 0.25, 4.0]])
    st = LogSumExpState.from_block(da.from_array(x, chunks=(1, 2)), target=np.array([5, 2]))
    got = st.cross_entropy().compute()
    assert np.isnan(got[0])
    assert got[1] == sk.cross_entropy(x[1:], np.array([2]), reduction="none")[0]
    # Dask blocks placed with `offset` (it was refused)
    part = LogSumExpState.from_block(
        da.from_array(x[:, 1:], chunks=(1, 1)), target=[2, 2], offset=1
    )
    whole = LogSumExpState.from_block(x[:, :1], target=np.array([2, 2])).merge(part.compute())
    np.testing.assert_array_equal(
        whole.cross_entropy(), sk.cross_entropy(x, np.array([2, 2]), reduction="none")
    )


def test_zero_d_block_and_bad_result_dtype_name_their_argument():
    """A 0-d block was reported as "`logits` is 0-d; cross-entropy needs ..."; a bad
    `dtype` of from_array failed only at the first finisher, with NumPy's TypeError."""
    with pytest.raises(sk.SoftmaxkitValueError, match=r"^`x` is 0-d; a block of logits"):
        LogSumExpState.from_block(np.array(1.0))
    st = LogSumExpState.from_block(np.zeros((2, 3)))
    with pytest.raises(sk.SoftmaxkitValueError, match=r"^`x` is 0-d"):
        st.softmax(np.array(1.0))
    a = st.to_array()
    with pytest.raises(sk.SoftmaxkitTypeError, match="`dtype` must be a floating-point"):
        LogSumExpState.from_array(a, dtype="banana")
    with pytest.raises(sk.SoftmaxkitTypeError, match=r"`dtype` must be float16.*got int32"):
        LogSumExpState.from_array(a, dtype=np.int32)
    back = LogSumExpState.from_array(a, dtype="float32")
    assert back.dtype == np.float32 and back.logsumexp().dtype == np.float32


def test_one_row_results_are_numpy_scalars():
    """A 1-d block's finishers returned 0-d arrays; sk.logsumexp returns numpy.float64."""
    x = np.array([1.0, 2.0, 5.0], np.float32)
    st = LogSumExpState.from_block(x, target=np.array(2), entropy=True)
    for got, want in (
        (st.logsumexp(), sk.logsumexp(x)),
        (st.cross_entropy(), sk.cross_entropy(x, np.array(2))),
        (st.entropy(), None),
    ):
        assert isinstance(got, np.float32) and not isinstance(got, np.ndarray)
        if want is not None:
            assert type(want) is type(got)
            assert got == want
    assert isinstance(LogSumExpState.from_block(x[None]).logsumexp(), np.ndarray)
