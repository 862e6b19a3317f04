"""The Dask engine: one tree reduction of the mergeable state, bitwise independent of chunking.

Covers the results against the native kernel for several chunkings (special rows
and dominant logits included), the shape of the graph (one pass over the input),
and a memory-limited ``distributed.LocalCluster`` finishing on an array several
times larger than its memory.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import softmaxkit as sk

da = pytest.importorskip("dask.array", reason="dask not installed: pip install dask[array]")
dask = pytest.importorskip("dask")

CHUNKINGS = (6000, 2048, 999, 128)


def _data(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((48, 6000)) * 4).astype(dtype)
    x[::5, 123] += 60.0  # dominant logits: losses of ~1e-24
    x[1, 10] = np.nan
    x[2, [7, 4001]] = np.inf
    x[3, :] = -np.inf
    x[4, 4000:] = -np.inf  # whole chunks of -inf (empty states)
    x[6, 5999] = 80.0  # the maximum in the last chunk only
    t = rng.integers(0, 6000, 48)
    t[::5] = 123
    return x, t


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))


@pytest.fixture(autouse=True)
def _sync_scheduler():
    with dask.config.set(scheduler="synchronous"):
        yield


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bitwise_independent_of_chunking(dtype):
    """Every op gives the same bits for every chunking; lse, log_softmax and CE equal NumPy's.

    The class axis is reduced in canonical tiles of ``TILE`` classes (global
    indices), whatever the chunks. NumPy's kernel sums rows of up to 32768
    classes in one block, so softmax, whose every output carries the relative
    error of the normaliser, may differ from it in the last bit where the exact
    value sits within ~1e-12 of a rounding boundary (both stay correctly
    rounded to 0.5 + 1e-3 ulp); the others are equal here.
    """
    x, t = _data(dtype)
    native = {
        "lse": sk.logsumexp(x),
        "log_softmax": sk.log_softmax(x),
        "softmax": sk.softmax(x),
        "ce": sk.cross_entropy(x, t, reduction="none"),
    }
    first: dict[str, np.ndarray] = {}
    for ch in CHUNKINGS:
        d = da.from_array(x, chunks=(16, ch))
        td = da.from_array(t, chunks=16)
        got = {
            "lse": sk.logsumexp(d),
            "log_softmax": sk.log_softmax(d),
            "softmax": sk.softmax(d),
            "ce": sk.cross_entropy(d, td, reduction="none"),
        }
        for k, v in got.items():
            assert isinstance(v, da.Array), k  # lazy, the caller's array type
            res = v.compute()
            assert res.dtype == np.dtype(dtype), k
            first.setdefault(k, res)
            assert _same(res, first[k]), f"{k} depends on the chunking (class chunks of {ch})"
    for k in ("lse", "log_softmax", "ce"):
        assert _same(first[k], native[k]), k
    sm, want = first["softmax"], native["softmax"]
    fin = np.isfinite(want) & (want > 0)
    assert np.array_equal(np.isnan(sm), np.isnan(want))
    assert _same(sm[~fin], want[~fin])
    ulp = np.spacing(want[fin])
    assert np.max(np.abs(sm[fin] - want[fin]) / ulp) <= 1.0
    assert np.mean(sm[fin] != want[fin]) < 1e-4


def test_short_rows_equal_numpy_softmax_bitwise():
    """Rows of at most one tile are reduced exactly as NumPy's kernel does."""
    x, _ = _data("float32")
    x = x[:, :4000]
    want = sk.softmax(x)
    for ch in (4000, 999, 128):
        assert _same(sk.softmax(da.from_array(x, chunks=(16, ch))).compute(), want)


def test_cross_entropy_options_match_single_array():
    x, t = _data("float32")
    x = x[5:]  # finite rows (label smoothing of +inf/NaN rows is NaN/inf either way)
    t = t[5:].copy()
    t[::3] = -100
    w = np.linspace(0.5, 2.0, x.shape[1])
    cases = [  # (reduction, weight, label_smoothing); weights with smoothing take the oracle
        ("none", w, 0.0),
        ("none", None, 0.1),
        ("sum", None, 0.1),
        ("mean", w, 0.0),
        ("mean", w, 0.1),
    ]
    for red, wt, eps in cases:
        kw = {"ignore_index": -100, "label_smoothing": eps, "z_loss": 1e-4, "reduction": red}
        want = sk.cross_entropy(x, t, weight=wt, **kw)
        got = []
        for ch in (6000, 999, 128) if wt is None or not eps else (6000,):
            wd = None if wt is None else da.from_array(wt, chunks=ch)
            d = da.from_array(x, chunks=(16, ch))
            got.append(sk.cross_entropy(d, da.from_array(t, chunks=16), weight=wd, **kw).compute())
        # smoothing and the means run on other paths for NumPy: equal to a few ulps
        np.testing.assert_allclose(got[0], want, rtol=4e-7, atol=0)
        if red == "none":
            assert all(_same(g, got[0]) for g in got[1:]), (red, eps)


def test_class_axis_not_last_and_keepdims():
    x, _ = _data("float64")
    xt = np.ascontiguousarray(x.T)
    d = da.from_array(xt, chunks=(1000, 16))
    assert _same(sk.logsumexp(d, axis=0).compute(), sk.logsumexp(xt, axis=0))
    assert _same(sk.logsumexp(d, axis=0, keepdims=True).compute(), sk.logsumexp(xt, axis=0)[None])
    assert _same(sk.log_softmax(d, axis=0).compute(), sk.log_softmax(xt, axis=0))
    lse, sign = sk.logsumexp(d, axis=0, return_sign=True)
    want_lse, want_sign = sk.logsumexp(xt, axis=0, return_sign=True)
    assert _same(lse.compute(), want_lse)
    assert _same(sign.compute(), want_sign)


def _layers_reading(graph_array, source) -> int:
    hlg = graph_array.__dask_graph__()
    deps = hlg.dependencies
    return sum(1 for name, d in deps.items() if source.name in d)


def test_one_pass_over_the_input():
    """logsumexp and cross-entropy read each chunk once; softmax twice (state, then map)."""
    x = da.random.default_rng(0).standard_normal((64, 4000), chunks=(32, 500), dtype=np.float32)
    assert _layers_reading(sk.logsumexp(x), x) == 1
    t = da.zeros(64, dtype=np.int64, chunks=32)
    assert _layers_reading(sk.cross_entropy(x, t), x) == 1
    assert _layers_reading(sk.softmax(x), x) == 2


def test_out_of_core_two_computes_with_the_state():
    """The state is computed once (tiny), then softmax streams from it."""
    x, _ = _data("float32")
    d = da.from_array(x, chunks=(16, 999))
    st = sk.LogSumExpState.from_block(d).compute()
    assert isinstance(st.m, np.ndarray)
    assert st.m.shape == (48,)
    y = st.softmax(d)
    assert isinstance(y, da.Array)
    assert _same(y.compute(), sk.softmax(d).compute())  # the same bits as one graph
    assert _same(st.log_softmax(d).compute(), sk.log_softmax(x))
    assert _same(st.logsumexp(), sk.logsumexp(x))


def _block(block_info=None):
    """A lazily generated float32 block, the same wherever and whenever it is computed."""
    info = block_info[None]
    shape = info["chunk-shape"]
    i, j = info["chunk-location"]
    rng = np.random.default_rng(1000 * i + j)
    out = rng.random(shape, dtype=np.float32)
    out *= 30.0
    out -= 15.0
    return out


@pytest.mark.slow
def test_local_cluster_beyond_memory():
    """2 workers x 200 MB finish logsumexp and cross-entropy of a 1.2 GB array (3x).

    The class chunks (20000) are not multiples of the 4096-class tile, so the
    merge nodes carry raw edges: at most 16 x 4095 classes x 50 rows x 4 bytes,
    13 MB a node. A worker peaks near 125 MiB of its 190 MiB budget here; with
    250-row blocks the edges alone reached 65 MB a node and a loaded CI machine
    saw the nanny restart a worker.
    """
    distributed = pytest.importorskip("distributed", reason="pip install distributed")
    rows, n, rch, cch = 3000, 100_000, 50, 20_000  # 1.2 GB of float32, 4 MB chunks
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            memory_limit="200MB",
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=40,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        before = set(client.scheduler_info()["workers"])
        x = da.map_blocks(
            _block,
            dtype=np.float32,
            chunks=((rch,) * (rows // rch), (cch,) * (n // cch)),
            meta=np.empty((0, 0), np.float32),
        )
        assert x.nbytes >= 3 * 2 * 200e6
        t = da.from_array(np.arange(rows) % n, chunks=rch)
        lse, ce = dask.compute(
            sk.logsumexp(x), sk.cross_entropy(x, t, reduction="none"), scheduler=client
        )
        after = set(client.scheduler_info()["workers"])
    assert before == after  # no worker was killed and restarted
    # the first row block, regenerated here, against the native kernel
    first = np.concatenate(
        [
            _block({None: {"chunk-shape": (rch, cch), "chunk-location": (0, j)}})
            for j in range(n // cch)
        ],
        axis=1,
    )
    assert _same(lse[:rch], sk.logsumexp(first))
    assert _same(ce[:rch], sk.cross_entropy(first, np.arange(rch) % n, reduction="none"))
    assert np.isfinite(lse).all()
    assert math.isfinite(float(ce.sum()))


def test_lazy_edge_cases():
    """Ignored targets count nothing; empty axes and integer logits follow the contract."""
    x = np.random.default_rng(0).standard_normal((4, 10))
    t = da.from_array(np.array([0, 9, 3, -5]), chunks=2)
    d = da.from_array(x, chunks=(2, 3))
    ce = sk.cross_entropy(d, t, reduction="none", ignore_index=-5).compute()
    assert ce[3] == 0.0
    assert _same(ce[:3], sk.cross_entropy(x[:3], np.array([0, 9, 3]), reduction="none"))
    empty = da.from_array(np.zeros((3, 0)))
    assert _same(sk.logsumexp(empty).compute(), np.full(3, -np.inf))
    assert sk.softmax(empty).compute().shape == (3, 0)
    ints = da.from_array(np.arange(6).reshape(2, 3), chunks=(1, 2))
    assert _same(sk.logsumexp(ints).compute(), sk.logsumexp(np.arange(6).reshape(2, 3)))


_X = np.random.default_rng(1).standard_normal((6, 10))
_LAZY_BAD = {
    "index out of range": (
        lambda d: sk.cross_entropy(d, da.from_array(np.array([0, 1, 2, 3, 12, 5]), chunks=2)),
        r"`target` has a class index out of range: 12 at index \(4,\); valid indices are 0..9",
    ),
    "index out of range, ignore_index": (
        lambda d: sk.nll_loss(
            d, da.from_array(np.array([0, -1, 2, -100, 4, 5]), chunks=3), ignore_index=-100
        ),
        r"out of range: -1 at index \(1,\); valid indices are 0..9 \(or ignore_index=-100\)",
    ),
    "non-integer float index": (
        lambda d: sk.cross_entropy(d, da.from_array(np.array([0.0, 1, 2, 3, 4, 5.5]), chunks=2)),
        r"non-integer values \(5.5 at index \(5,\)\)",
    ),
    "NaN index": (
        lambda d: sk.cross_entropy(d, da.from_array(np.array([0.0, 1, np.nan, 3, 4, 5]), chunks=2)),
        r"contains NaN or inf \(nan at index \(2,\)\)",
    ),
    "negative probability": (
        lambda d: sk.cross_entropy(
            d, da.from_array(np.where(np.arange(60).reshape(6, 10) == 47, -0.5, 0.1), chunks=(2, 5))
        ),
        r"`target` has a negative probability \(-0.5 at index \(4, 7\)\)",
    ),
    "negative class weight": (
        lambda d: sk.cross_entropy(
            d, np.arange(6), weight=da.from_array(np.r_[np.ones(8), -1.0, 1.0], chunks=4)
        ),
        r"`weight` must be finite and >= 0, got -1.0 at index \(8,\)",
    ),
    "BCE target above 1": (
        lambda d: sk.binary_cross_entropy_with_logits(
            d, da.from_array(np.where(np.arange(60).reshape(6, 10) == 58, 2.0, 0.5), chunks=(2, 5))
        ),
        r"`target` must lie in \[0, 1\], got 2.0 at index \(5, 8\)",
    ),
    "BCE pos_weight infinite": (
        lambda d: sk.binary_cross_entropy_with_logits(
            d, np.full((6, 10), 0.5), pos_weight=da.from_array(np.r_[np.ones(9), np.inf], chunks=5)
        ),
        r"`pos_weight` must be finite and >= 0, got inf at index \(9,\)",
    ),
}


@pytest.mark.parametrize("case", list(_LAZY_BAD))
def test_lazy_data_checks_raise_at_compute(case):
    """The data checks of eager arrays run on each Dask block as it is computed: the call
    stays lazy, and ``.compute()`` raises the eager error with the index in the whole array
    (a bad class index gave an infinite loss, a non-integer one was truncated)."""
    call, msg = _LAZY_BAD[case]
    lazy = call(da.from_array(_X, chunks=(2, 5)))  # builds the graph without raising
    with pytest.raises(sk.SoftmaxkitValueError, match=msg):
        lazy.compute()


def test_lazy_data_checks_leave_good_inputs_alone():
    """Checked blocks pass their values through: the results equal the eager ones."""
    d = da.from_array(_X, chunks=(2, 5))
    t = np.array([0.0, 1, 2, 3, 4, 5])
    p = np.full((6, 10), 0.1)
    w = np.linspace(0.5, 2.0, 10)
    got = [
        sk.cross_entropy(d, da.from_array(t, chunks=2), weight=da.from_array(w, chunks=5)),
        sk.cross_entropy(d, da.from_array(p, chunks=(2, 5)), reduction="none"),
        sk.binary_cross_entropy_with_logits(d, da.from_array(p, chunks=(3, 5)), reduction="sum"),
    ]
    want = [
        sk.cross_entropy(_X, t, weight=w),
        sk.cross_entropy(_X, p, reduction="none"),
        sk.binary_cross_entropy_with_logits(_X, p, reduction="sum"),
    ]
    for g, w_ in zip(got, want, strict=True):
        np.testing.assert_allclose(g.compute(), w_, rtol=1e-15, atol=0)
