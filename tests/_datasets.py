"""The adversarial input sets of the accuracy harness, as deterministic generators.

The ids R1-R5 and A1-A12 are those of the project's reference notes on accuracy
(random sets at several scales; dominant logits, underflowing outputs, inexact
``x - max``, ties, infinities). A5, A7 and A9 are not spelled out there; here
they are the remaining cases the notes list among the adversarial inputs: the
gap of 100 (subnormal float32 output), ties, and rows with infinite entries. G1
and G2 are this harness's own additions (a sweep over every gap size; short rows
whose entries span many binades so that ``x - max`` is rarely representable;
rows of many terms that each underflow to a subnormal, where rounding every
term separately would add up to hundreds of ulps; pairs whose tiny results lie
just above the smallest normal number, where a double-word value's low word does
not fit and a result can be rounded twice).

Every set is a 2-D array of rows (the reduction runs over the last axis), drawn
in float64 from a generator seeded by the set's id and then rounded once to the
requested dtype; the references are evaluated at those rounded inputs. Each set
has a ``"full"`` size (the notes' sizes) and a ``"ci"`` size for the test suite.

``A9`` holds the finite part of the infinity cases (rows with ``-inf`` entries,
which must behave as if those entries were absent and are measured in ulps);
:data:`SPECIAL_ROWS` lists the ``+inf`` / NaN rows, which are checked for exact
values instead.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DATASETS",
    "SPECIAL_ROWS",
    "Dataset",
    "by_id",
    "ce_inputs",
    "packed",
    "sigmoid_inputs",
]

Size = str  # "ci" or "full"


def _rng(name: str, dtype: str = "") -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"softmaxkit-accuracy/{name}/{dtype}".encode()))


@dataclass(frozen=True)
class Dataset:
    """One input set: ``make(dtype, size)`` returns a 2-D array of rows."""

    id: str
    description: str
    build: Callable[[str, Size], np.ndarray]
    kind: str  # "random", "adversarial" or "extra"

    def make(self, dtype: str, size: Size = "ci") -> np.ndarray:
        if size not in ("ci", "full"):
            msg = f"size must be 'ci' or 'full', got {size!r}"
            raise ValueError(msg)
        x = np.asarray(self.build(dtype, size), dtype=np.float64)
        with np.errstate(over="ignore"):
            out = x.astype(dtype)
        out.flags.writeable = False
        return out

    def describe(self, dtype: str) -> str:
        gap = _DOMINANT_GAP[dtype]
        return self.description.replace("{gap}", str(gap))


def _normal(name: str, scale: float, offset: float, rows: int, n: int) -> np.ndarray:
    return _rng(name).standard_normal((rows, n)) * scale + offset


def _random_set(
    name: str, scale: float, offset: float, full: tuple[int, int], ci: tuple[int, int]
) -> Callable[[str, Size], np.ndarray]:
    def build(dtype: str, size: Size) -> np.ndarray:
        rows, n = full if size == "full" else ci
        return _normal(name, scale, offset, rows, n)

    return build


def _const(*rows: list[float]) -> Callable[[str, Size], np.ndarray]:
    def build(dtype: str, size: Size) -> np.ndarray:
        return np.array(rows, dtype=np.float64)

    return build


# A4: the gap at which the peers' log_softmax first returns exactly 0 at the maximum
_DOMINANT_GAP = {"float32": 17.0, "float64": 37.0}


def _a1(dtype: str, size: Size) -> np.ndarray:
    return np.array([[0.0] + [-20.0] * 999])


def _a4(dtype: str, size: Size) -> np.ndarray:
    return np.array([[0.0, -_DOMINANT_GAP[dtype]]])


def _a7(dtype: str, size: Size) -> np.ndarray:
    rng = _rng("A7")
    n = 1000
    zeros = np.zeros(n)
    two_max = rng.standard_normal(n)
    two_max[[3, 700]] = 5.0
    half = np.where(np.arange(n) % 2 == 0, 7.0, 6.0)
    ladder = np.repeat([2.0, 1.0, 0.0, -1.0], n // 4)
    return np.stack([zeros, two_max, half, ladder])


def _a8(dtype: str, size: Size) -> np.ndarray:
    return np.array([[10.0] + [0.0] * 999])


def _a9(dtype: str, size: Size) -> np.ndarray:
    rng = _rng("A9")
    n = 64
    rows = []
    for k in range(8):
        r = rng.standard_normal(n) * 5.0
        r[rng.permutation(n)[: 8 * (k + 1) - 1]] = -math.inf  # 7 .. 63 entries at -inf
        rows.append(r)
    tail = np.full(n, -math.inf)
    tail[[5, 9]] = [0.0, -40.0]  # the A2 pair among -inf entries
    rows.append(tail)
    return np.stack(rows)


def _g1(dtype: str, size: Size) -> np.ndarray:
    top = 110.0 if dtype == "float32" else 760.0
    rows = 1024 if size == "full" else 256
    gaps = np.linspace(0.0, top, rows)
    jitter = _rng("G1", dtype).uniform(-0.5, 0.5, rows)
    gaps = np.abs(gaps + jitter)
    return np.stack([np.zeros(rows), -gaps, -gaps - 0.75, -2.0 * gaps], axis=1)


def _g2(dtype: str, size: Size) -> np.ndarray:
    rng = _rng("G2", dtype)
    rows = 4096 if size == "full" else 512
    n = 6
    lo, hi = (-24, 7) if dtype == "float32" else (-53, 9)
    mag = np.exp2(rng.uniform(lo, hi, (rows, n)))
    sign = rng.choice([-1.0, 1.0], (rows, n))
    return sign * mag


def _g3(dtype: str, size: Size) -> np.ndarray:
    # gaps whose exp falls in (or just below) the subnormal range of the dtype
    lo, hi = (86.0, 104.5) if dtype == "float32" else (706.0, 745.5)
    rows = 16 if size == "full" else 8
    gaps = np.linspace(lo, hi, rows)
    n = 1000
    out = np.zeros((rows, n))
    spread = _rng("G3", dtype).uniform(0.0, 1.0, (rows, n - 1))
    out[:, 1:] = -(gaps[:, None] + spread * (np.arange(rows)[:, None] % 2))
    return out


def _g4(dtype: str, size: Size) -> np.ndarray:
    # exp(-g) in the first few binades above the smallest normal number: the result
    # log1p(e^-g) ~ e^-g is normal, but a low word of it would not be
    lo, hi = (84.0, 87.5) if dtype == "float32" else (704.0, 708.5)
    rows = 2048 if size == "full" else 256
    g = _rng("G4", dtype).uniform(lo, hi, rows)
    return np.stack([np.zeros(rows), -g], axis=1)


DATASETS: tuple[Dataset, ...] = (
    Dataset("R1", "N(0, 5²)", _random_set("R1", 5.0, 0.0, (1000, 1000), (128, 1000)), "random"),
    Dataset("R2", "N(0, 1)", _random_set("R2", 1.0, 0.0, (1000, 1000), (128, 1000)), "random"),
    Dataset("R3", "N(0, 20²)", _random_set("R3", 20.0, 0.0, (1000, 1000), (128, 1000)), "random"),
    Dataset(
        "R4", "N(0, 5²) + 1000", _random_set("R4", 5.0, 1000.0, (1000, 1000), (128, 1000)), "random"
    ),
    Dataset(
        "R5",
        "N(0, 1), rows of 10⁶",
        _random_set("R5", 1.0, 0.0, (8, 1_000_000), (1, 1_000_000)),
        "random",
    ),
    Dataset("A1", "[0, −20 × 999]", _a1, "adversarial"),
    Dataset("A2", "[0, −40]", _const([0.0, -40.0]), "adversarial"),
    Dataset("A3", "[0, −20]", _const([0.0, -20.0]), "adversarial"),
    Dataset("A4", "[0, −{gap}]", _a4, "adversarial"),
    Dataset("A5", "[0, −100]", _const([0.0, -100.0]), "adversarial"),
    Dataset("A6", "[0, −90]", _const([0.0, -90.0]), "adversarial"),
    Dataset("A7", "ties: repeated maxima", _a7, "adversarial"),
    Dataset("A8", "[10, 0 × 999]", _a8, "adversarial"),
    Dataset("A9", "−inf entries", _a9, "adversarial"),
    Dataset("A10", "[10⁴, 10⁴ − 30]", _const([1e4, 1e4 - 30.0]), "adversarial"),
    Dataset("A11", "[17.3, −23.46]", _const([17.3, -23.46]), "adversarial"),
    Dataset("A12", "[0, −740]", _const([0.0, -740.0]), "adversarial"),
    Dataset("G1", "gap sweep [0, −g, −g − ¾, −2g]", _g1, "extra"),
    Dataset("G2", "6 entries over 30+ binades", _g2, "extra"),
    Dataset("G3", "[0, −g × 999], e^−g subnormal", _g3, "extra"),
    Dataset("G4", "[0, −g], e^−g just above the normal minimum", _g4, "extra"),
)

_BY_ID = {d.id: d for d in DATASETS}


def by_id(name: str) -> Dataset:
    return _BY_ID[name]


def ce_inputs(x: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Logits and class-index targets for the cross-entropy measurement.

    Two targets matter: the arg-max (the confident correct prediction, whose
    loss is tiny) and any other class. The rows appear twice, first with the
    arg-max of every row as target, then with a seeded random class among the
    row's finite entries; sets of long rows (over 10⁵ entries) are not copied:
    their even rows take the arg-max and odd rows a random class.
    """
    rng = _rng(f"{name}/targets")
    top = np.argmax(x, axis=1)
    finite = np.isfinite(x)
    rand = np.array([rng.choice(np.flatnonzero(f)) for f in finite])
    if x.shape[1] > 100_000:
        t = np.where(np.arange(x.shape[0]) % 2 == 0, top, rand)
        return x, t.astype(np.int64)
    return np.concatenate([x, x]), np.concatenate([top, rand]).astype(np.int64)


def packed(dtype: str, spec: tuple[tuple[str, int], ...], width: int, rows: int) -> np.ndarray:
    """Rows of several sets in one ``(rows, width)`` array, padded with ``-inf``.

    ``spec`` lists ``(id, k)``: the first ``k`` rows (CI size) of each set.
    Padding entries are absent from every row sum, so each packed row has the
    same exact softmax as the original on its own entries. Backends that compile
    per shape (JAX) measure many sets in one compilation this way. Rows left
    over are filled with N(0, 5²) data.
    """
    out = np.full((rows, width), -math.inf)
    r = 0
    for name, k in spec:
        x = np.asarray(by_id(name).make(dtype, "ci"), dtype=np.float64)[:k, :width]
        take = min(x.shape[0], rows - r)
        out[r : r + take, : x.shape[1]] = x[:take]
        r += take
    if r < rows:
        out[r:] = _normal(f"pack/{dtype}", 5.0, 0.0, rows - r, width)
    res = out.astype(dtype)
    res.flags.writeable = False
    return res


def sigmoid_inputs(dtype: str, size: Size = "ci") -> tuple[np.ndarray, np.ndarray]:
    """Logits and targets for sigmoid, log_sigmoid and BCE with logits ("S1").

    An even sweep over the whole range where the results are representable (to
    past the subnormal range: |x| up to 110 in float32, 760 in float64), N(0, 10²)
    logits, tiny ones around 0, and ±|x| where exp(-|x|) is just above the smallest
    normal number; targets uniform in [0, 1] with exact 0s and 1s.
    """
    rng = _rng("S1", dtype)
    top = 110.0 if dtype == "float32" else 760.0
    k = 20_001 if size == "full" else 4001
    # exp(-|x|) in the first binades above the smallest normal number (see G4)
    lo, hi = (84.0, 88.0) if dtype == "float32" else (704.0, 709.5)
    band = rng.uniform(lo, hi, k // 10)
    x = np.concatenate(
        [
            np.linspace(-top, top, k),
            rng.standard_normal(k) * 10.0,
            rng.standard_normal(k // 10) * 1e-6,
            band,
            -band,
        ]
    )
    y = rng.uniform(0.0, 1.0, x.size)
    y[::7] = 0.0
    y[::11] = 1.0
    xs, ys = x.astype(dtype), y.astype(dtype)
    xs.flags.writeable = False
    ys.flags.writeable = False
    return xs, ys


# Rows with +inf or NaN entries and their exact results under the contract (issue 2):
# +inf entries share the mass, NaN propagates. (input, softmax, log_softmax, logsumexp), exact
# values that are rounded once to the dtype measured.
SPECIAL_ROWS: tuple[tuple[list[float], list[float], list[float], float], ...] = (
    ([math.inf, 0.0], [1.0, 0.0], [0.0, -math.inf], math.inf),
    ([math.inf, 3.0, math.inf], [0.5, 0.0, 0.5], [-math.log(2), -math.inf, -math.log(2)], math.inf),
    ([-math.inf, -math.inf], [0.0, 0.0], [-math.inf, -math.inf], -math.inf),
    ([-math.inf, 0.0], [0.0, 1.0], [-math.inf, 0.0], 0.0),
    ([math.nan, 0.0], [math.nan, math.nan], [math.nan, math.nan], math.nan),
    ([math.nan, math.inf], [math.nan, math.nan], [math.nan, math.nan], math.nan),
    ([3e38, -3e38], [1.0, 0.0], [0.0, -6e38], 3e38),  # -6e38 overflows in float32
    ([1.7e308, -1.7e308], [1.0, 0.0], [0.0, -math.inf], 1.7e308),  # x - max overflows
)
