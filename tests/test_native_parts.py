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

from softmaxkit import _ckernels
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
