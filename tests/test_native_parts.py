"""The C core's cross-entropy of a row split into block-aligned parts (vocab parallelism).

``_ckernels.block_states`` gives the statistics of every 32768-element block of a
part; ``_ckernels.cross_entropy_states`` finishes each part from the statistics of
ALL the row's blocks with the same code as ``_ckernels.cross_entropy``. Every
part must get the whole row's loss, logsumexp and count, and its own elements of
the gradient, bit for bit: that is what makes ``softmaxkit.torch.distributed``
exact by construction.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from softmaxkit import _ckernels, _smoothing
from tests._native_helpers import native_isas

B = _ckernels.block_elems()  # 32768


ISAS = native_isas()


def _rows(dtype: type, V: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    N = 12
    x = (rng.standard_normal((N, V)) * 3).astype(dtype)
    t = rng.integers(0, V, N)
    inf = np.inf
    x[1, :] = -inf  # nothing to count
    x[2, [5, (B + 7) % V]] = inf  # two +inf, the target one of them
    t[2] = 5
    x[3, (B + 3) % V] = np.nan
    x[4, :] = 0.0  # every class tied
    x[5, 7] += 60.0  # dominant target: a loss far below one ulp of 1
    t[5] = 7
    x[6, ::2] = -inf
    t[7] = -100  # ignored
    x[8, t[8]] = -inf  # the target at -inf: loss inf
    return x, t


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a, b, equal_nan=True))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("V", "cuts"),
    [
        (3 * B + 1000, [0, B, 3 * B]),  # uneven parts, the last one short
        (3 * B + 1000, [0, 2 * B, 3 * B, 3 * B]),  # an empty part
        (2 * B, [0, B]),
        (1000, [0, 1000]),  # one block, held whole by the first part
        (100, [0, 100]),  # short rows: the whole-row call takes the transposed kernel
        (256, [0, 256]),
        (9, [0, 9]),
    ],
)
def test_parts_are_bitwise_the_whole_row(dtype: type, V: int, cuts: list[int]) -> None:
    x, t = _rows(dtype, V, 0)
    N = x.shape[0]
    code = 0 if dtype == np.float32 else 1
    w = np.random.default_rng(1).random(N) + 0.1  # weights and z-loss on
    z = 1e-3
    loss, lse = np.empty(N), np.empty(N)
    cnt = np.empty(N, np.uint8)
    g = np.empty_like(x)
    _ckernels.cross_entropy(x, t, w, None, N, V, code, 1, 1, True, -100, z, 0.37,
                            loss, lse, cnt, g)  # fmt: skip
    nb = -(-V // B)
    st = [np.zeros((N, nb)) for _ in range(4)]
    bounds = [*cuts, V]
    for a, b in itertools.pairwise(bounds):
        if b > a:
            part = [np.empty((N, -(-(b - a) // B))) for _ in range(4)]
            _ckernels.block_states(np.ascontiguousarray(x[:, a:b]), N, b - a, code, 1, 2, *part)
            for whole, p in zip(st, part, strict=True):
                whole[:, a // B : a // B + p.shape[1]] = p
    xt = x[np.arange(N), np.clip(t, 0, V - 1)].astype(np.float64)
    G = np.empty_like(x)
    for a, b in itertools.pairwise(bounds):
        n = b - a
        l2, s2 = np.empty(N), np.empty(N)
        c2 = np.empty(N, np.uint8)
        g2 = np.empty((N, n), dtype)
        _ckernels.cross_entropy_states(
            np.ascontiguousarray(x[:, a:b]), N, n, code, 1, 2, a if n else 0, nb, n == V,
            *st, xt, t, w, True, -100, z, 0.37, l2, s2, c2, g2,
        )  # fmt: skip
        assert _same(l2, loss) and _same(s2, lse) and _same(c2, cnt), (a, b)
        G[:, a:b] = g2
    assert _same(G, g)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("V", [1, 7, 8, 17, 100, 255, 256])
def test_short_row_cross_entropy_is_the_row_path(V: int, threads: int, isa: str) -> None:
    """float32 rows of up to 256 classes go through a transposed kernel (2 to 16 rows
    per vector by instruction set) that must give the general row path's bits: loss,
    lse, counted flags and gradient, with weights, z-loss, ignored and special rows,
    over several tasks."""
    saved = _ckernels.isa()
    _ckernels.set_isa(isa)
    try:
        _short_rows_check(V, threads)
    finally:
        _ckernels.set_isa(saved)


def _short_rows_check(V: int, threads: int) -> None:
    rng = np.random.default_rng(V)
    N = 600
    x = (rng.standard_normal((N, V)) * 4).astype(np.float32)
    t = rng.integers(0, V, N)
    x[3, :] = -np.inf
    x[5, V // 2] = np.inf
    x[7, V - 1] = np.nan
    x[9, :] = 0.0
    x[11, t[11]] += 70.0  # dominant target
    x[13, :] += 3e7  # a maximum beyond the plain path
    x[17, :: max(1, V // 3)] = -np.inf
    t[19] = -100
    x[21, t[21]] = -np.inf
    x[300:310] *= 1e-30  # tiny logits
    w = rng.random(N) + 0.1
    for z in (0.0, 1e-3):
        loss, lse = np.empty(N), np.empty(N)
        cnt = np.empty(N, np.uint8)
        g = np.empty_like(x)
        _ckernels.cross_entropy(x, t, w, None, N, V, 0, 1, threads, True, -100, z, 0.37,
                                loss, lse, cnt, g)  # fmt: skip
        st = [np.empty((N, 1)) for _ in range(4)]
        _ckernels.block_states(x, N, V, 0, 1, threads, *st)
        xt = x[np.arange(N), np.clip(t, 0, V - 1)].astype(np.float64)
        l2, s2 = np.empty(N), np.empty(N)
        c2 = np.empty(N, np.uint8)
        g2 = np.empty_like(x)
        _ckernels.cross_entropy_states(
            x, N, V, 0, 1, threads, 0, 1, True, *st, xt, t, w, True, -100, z, 0.37,
            l2, s2, c2, g2,
        )  # fmt: skip
        assert _same(l2, loss) and _same(s2, lse) and _same(c2, cnt), z
        assert _same(g2, g), z


def test_parts_reject_misaligned_offsets() -> None:
    x = np.zeros((2, 10), np.float32)
    st = [np.zeros((2, 2)) for _ in range(4)]
    out = [np.empty(2), np.empty(2), np.empty(2, np.uint8)]
    t = np.zeros(2, np.int64)
    with pytest.raises(ValueError, match=f"multiple of {B}"):
        _ckernels.cross_entropy_states(x, 2, 10, 0, 1, 1, 100, 2, False, *st, np.zeros(2), t,
                                       None, True, -100, 0.0, 1.0, *out, None)  # fmt: skip


# ---- label smoothing: block sums and gradient (``_ckernels.smooth``)


def _smooth_ref(x: np.ndarray, m: np.ndarray, w: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """float64 NumPy block sums: sum w (m_b - x) and sum exp(x - m_b) per block."""
    rows, n = x.shape
    nb = m.shape[1]
    gap, ds = np.zeros((rows, nb)), np.zeros((rows, nb))
    with np.errstate(invalid="ignore", over="ignore"):
        for b in range(nb):
            xb = x[:, b * B : (b + 1) * B].astype(np.float64)
            d = xb - m[:, b, None]
            wb = np.ones(xb.shape[1]) if w is None else w[b * B : (b + 1) * B]
            gap[:, b] = -(d * wb).sum(1)
            ds[:, b] = np.exp(d).sum(1)
    return gap, ds


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("weighted", [False, True])
def test_smoothing_block_sums_and_gradient_split_on_block_boundaries(isa, weighted):
    """Each block's sums and each gradient element are the same bits whether the row
    is passed whole or in block-aligned parts, on every engine and thread count; both
    agree with float64 NumPy."""
    rng = np.random.default_rng(5)
    V, rows = 2 * B + 777, 5
    x = (rng.standard_normal((rows, V)) * 3).astype(np.float32)
    x[1, :100] = -np.inf
    x[2, B : 2 * B] = -np.inf  # a block of -inf only: its shift is 0
    w = rng.random(V) + 0.1 if weighted else None
    nb = -(-V // B)
    m = np.array([[x[r, b * B : (b + 1) * B].max() for b in range(nb)] for r in range(rows)])
    m = np.where(np.isfinite(m), m, 0.0).astype(np.float64)
    cur = _ckernels.isa()
    _ckernels.set_isa(isa)
    try:
        outs = []
        for threads in (1, 2):
            gap, ds = np.empty((rows, nb)), np.empty((rows, nb))
            _ckernels.smooth(0, x, rows, V, w, m, None, None, gap, ds, None, threads)
            outs.append((gap, ds))
        assert _same(outs[0][0], outs[1][0]) and _same(outs[0][1], outs[1][1])
        gap, ds = outs[0]
        # the parts [0, B) and [B, V): their blocks' sums are the whole row's
        for c0, c1 in ((0, B), (B, V)):
            part = np.ascontiguousarray(x[:, c0:c1])
            pb = -(-(c1 - c0) // B)
            pm = np.ascontiguousarray(m[:, c0 // B : c0 // B + pb])
            pg, pd = np.empty((rows, pb)), np.empty((rows, pb))
            pw = None if w is None else np.ascontiguousarray(w[c0:c1])
            _ckernels.smooth(0, part, rows, c1 - c0, pw, pm, None, None, pg, pd, None, 1)
            assert _same(pg, gap[:, c0 // B : c0 // B + pb])
            assert _same(pd, ds[:, c0 // B : c0 // B + pb])
        rg, rd = _smooth_ref(x, m, w)
        np.testing.assert_allclose(gap, rg, rtol=1e-13)
        np.testing.assert_allclose(ds, rd, rtol=1e-14)
        # gradient: exp(x - M) f - k w, every element alike wherever it lies
        M = np.where(np.isfinite(x.max(1)), x.max(1), 0.0).astype(np.float64)
        f = rng.random(rows) * 0.1
        k = rng.random(rows) * 1e-5
        g = np.empty((rows, V), np.float32)
        g64 = np.empty((rows, V))
        _ckernels.smooth(1, x, rows, V, w, M, f, k, None, None, g, 2)
        _ckernels.smooth(3, x, rows, V, w, M, f, k, None, None, g64, 1)
        assert _same(g, g64.astype(np.float32))
        for c0, c1 in ((0, B), (B, B + 5), (B + 5, V)):
            part = np.ascontiguousarray(x[:, c0:c1])
            pw = None if w is None else np.ascontiguousarray(w[c0:c1])
            pg = np.empty((rows, c1 - c0), np.float32)
            _ckernels.smooth(1, part, rows, c1 - c0, pw, M, f, k, None, None, pg, 1)
            assert _same(pg, g[:, c0:c1])
        ww = np.ones(V) if w is None else w
        ef = np.exp(x.astype(np.float64) - M[:, None]) * f[:, None]
        kw = k[:, None] * ww
        # within a few float64 roundings of the two terms (their difference may cancel)
        assert np.all(np.abs(g64 - (ef - kw)) <= 1e-15 * (np.abs(ef) + np.abs(kw)))
    finally:
        _ckernels.set_isa(cur)


def test_smoothing_bad_arguments():
    x = np.zeros((2, 3), np.float32)
    m = np.zeros((2, 1))
    with pytest.raises(ValueError, match="bad kind"):
        _ckernels.smooth(2, x, 2, 3, None, m, None, None, np.empty((2, 1)), None, None, 1)
    with pytest.raises(TypeError):  # kind 0 needs gap
        _ckernels.smooth(0, x, 2, 3, None, m, None, None, None, None, None, 1)
    with pytest.raises(ValueError, match="m: expected 2 items"):  # m too short
        _ckernels.smooth(0, x, 2, 3, None, m[:1], None, None, np.empty((2, 1)), None, None, 1)
    f = np.ones(2)
    g = np.empty((2, 3), np.float32)
    with pytest.raises(ValueError, match="gap and dsum must be None for kind 1"):
        _ckernels.smooth(1, x, 2, 3, None, m[:, 0].copy(), f, f, np.empty(2), None, g, 1)
    with pytest.raises(ValueError, match="dsum must be None for kind 4"):
        _ckernels.smooth(4, x, 2, 3, None, m[:, 0].copy(), f, f, None, np.empty(2), g, 1)
    with pytest.raises(ValueError, match="gap: expected 2 items"):  # one gap a row
        _ckernels.smooth(4, x, 2, 3, None, m[:, 0].copy(), f, f, np.empty(3), None, g, 1)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", [1, 15, 17, 1000, B])
def test_smoothing_one_block_rows_in_one_pass_are_the_two_pass_bits(isa: str, n: int) -> None:
    """Kind 4 (5) sums a one-block row's exponentials and writes the gradient from the
    kept values: bitwise kind 0's sum, the factor f / D, then kind 1 (3)."""
    rng = np.random.default_rng(n)
    rows = 6
    x = (rng.standard_normal((rows, n)) * 3).astype(np.float32)
    x[1, :] = -np.inf  # nothing to count: shift 0, D = 0
    x[2, 0] = -np.inf
    x[3, :] = 0.0
    w = rng.random(n) + 0.1
    M = np.where(np.isfinite(x.max(1)), x.max(1), 0.0).astype(np.float64)
    f = rng.random(rows)
    k = rng.random(rows) * 1e-4
    cur = _ckernels.isa()
    _ckernels.set_isa(isa)
    try:
        for wt in (None, w):
            gap, D = np.empty((rows, 1)), np.empty((rows, 1))
            _ckernels.smooth(0, x, rows, n, wt, M[:, None].copy(), None, None, gap, D, None, 1)
            R = np.where(D[:, 0] > 0.0, 1.0 / np.where(D[:, 0] > 0.0, D[:, 0], 1.0), 0.0)
            for two, one, dt in ((1, 4, np.float32), (3, 5, np.float64)):
                want = np.empty((rows, n), dt)
                _ckernels.smooth(two, x, rows, n, wt, M, f * R, k, None, None, want, 1)
                for threads in (1, 2):
                    got = np.empty((rows, n), dt)
                    _ckernels.smooth(one, x, rows, n, wt, M, f, k, None, None, got, threads)
                    assert _same(got, want), (isa, n, one, threads)
                    # the gaps from the same pass: kind 0's bits, the gradient unchanged
                    got_gap = np.full(rows, np.nan)
                    again = np.empty((rows, n), dt)
                    _ckernels.smooth(one, x, rows, n, wt, M, f, k, got_gap, None, again, threads)
                    assert _same(got_gap, gap[:, 0]), (isa, n, one, threads)
                    assert _same(again, want), (isa, n, one, threads)
    finally:
        _ckernels.set_isa(cur)
    wide = np.zeros((1, B + 1), np.float32)
    one = np.ones(1)
    with pytest.raises(ValueError, match="bad kind"):  # one block only
        _ckernels.smooth(4, wide, 1, B + 1, None, one, one, one, None, None, wide.copy(), 1)


def test_smooth_rows_bad_arguments() -> None:
    """``skit_smooth_rows`` checks its targets, shapes and buffers before any work."""
    rows, n = 3, 5
    x = np.zeros((rows, n), np.float32)
    t = np.array([0, 4, -100])
    f64 = np.zeros(rows)
    c = np.ones(rows, np.uint8)

    def call(**kw: object) -> None:
        a: dict[str, object] = {
            "x": x, "rows": rows, "n": n, "target": t, "w": None, "has_ignore": True,
            "ignore_index": -100, "shift": f64, "nll": f64, "lse": f64, "counted": c,
            "eps": 0.1, "z": 0.0, "reduction": 1, "gap": np.zeros(rows), "loss": np.empty(1),
            "grad": np.empty((rows, n), np.float32), "threads": 1,
        }  # fmt: skip
        a.update(kw)
        _ckernels.smooth_rows(*a.values())

    call()  # well formed
    with pytest.raises(IndexError, match="target out of range"):
        call(target=np.array([0, 5, -100]))
    with pytest.raises(IndexError, match="target out of range"):  # -100 counts only when ignored
        call(has_ignore=False)
    with pytest.raises(ValueError, match="bad shape, reduction"):
        call(reduction=3)
    with pytest.raises(ValueError, match="bad shape, reduction"):  # one block only
        call(n=B + 1)
    with pytest.raises(ValueError, match="float32 or float64"):
        call(grad=np.empty((rows, n), np.float16))
    with pytest.raises(ValueError, match="loss: expected 3 items"):  # "none": one per row
        call(reduction=0)
    with pytest.raises(ValueError, match="gap: expected 3 items"):
        call(gap=np.zeros(2))


@pytest.mark.parametrize("isa", ISAS)
def test_smooth_rows_float64_gradient_is_the_float32_one_unrounded(isa: str) -> None:
    """The float64 gradient (for callers that round once to a half type) rounds to the
    float32 one, and the loss does not depend on the gradient's dtype or the threads."""
    rng = np.random.default_rng(5)
    rows, n = 40, 300
    x = (rng.standard_normal((rows, n)) * 4).astype(np.float32)
    t = rng.integers(0, n, rows)
    t[3] = -100
    w = rng.random(n) + 0.05
    blocks = _smoothing.local_blocks(x, w, 1, False)
    xt = x[np.arange(rows), np.where(t == -100, 0, t)]
    cur = _ckernels.isa()
    _ckernels.set_isa(isa)
    try:
        for red in ("mean", "sum", "none"):
            g32 = np.empty((rows, n), np.float32)
            g64 = np.empty((rows, n))
            l32, _ = _smoothing.finish_rows(x, 0, n, blocks, xt, t, w, -100, red, 0.1, 1e-4, g32, 1)
            l64, _ = _smoothing.finish_rows(x, 0, n, blocks, xt, t, w, -100, red, 0.1, 1e-4, g64, 2)
            assert _same(l32, l64), (isa, red)
            assert _same(g64.astype(np.float32), g32), (isa, red)
            assert not g64[3].any()  # the ignored row
    finally:
        _ckernels.set_isa(cur)
