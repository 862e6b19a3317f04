"""Inputs shared by the Triton engine's tests (interpreter and GPU): special rows, CE batches.

Importing this module imports torch but not triton, so the GPU tests can use it
without fixing Triton's interpreter choice for the process.
"""

from __future__ import annotations

import math

import torch

INF, NAN = math.inf, math.nan

#: rows of 6: every special case of the contract, plus ordinary rows around them
SPECIAL = [
    [-INF] * 6,
    [INF, 1.0, INF, -INF, 0.0, 2.0],
    [NAN, 0.0, 1.0, 2.0, 3.0, 4.0],
    [INF, NAN, 0.0, 1.0, -INF, 2.0],
    [0.0, -40.0, -40.0, -40.0, -40.0, -40.0],
    [0.0, -120.0, -200.0, -INF, -300.0, -104.0],
    [3.0, 3.0, 3.0, 3.0, 3.0, 3.0],
    [-INF, -INF, 5.0, -INF, -INF, -INF],
    [1e30, -1e30, 3.0, 3.0, 1e30, -INF],
    [-3e38, -3e38, 3e38, 3e38, 0.0, 1.0],
    [0.5, -1.25, 7.0, 6.999999, 2.0, -0.75],
]


def ce_inputs(C: int, rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float32 logits (the special rows first, the rest N(0, 6^2)), class indices, weights.

    The special rows' other entries sit 500 below their finite maximum (or are
    ``-inf``); the first targets hit ``+inf``, a NaN row and the dominant logit,
    and row 6 is ignored (``-100``). Weights are in [0.5, 1.5).
    """
    g = torch.Generator().manual_seed(C)
    x = torch.randn(rows, C, generator=g) * 6
    x[: len(SPECIAL), :6] = torch.tensor(SPECIAL)
    x[: len(SPECIAL), 6:] = torch.where(
        torch.isfinite(x[: len(SPECIAL), :1]), x[: len(SPECIAL), 6:] - 500, -INF
    )
    t = torch.randint(0, C, (rows,), generator=g)
    t[:6] = torch.tensor([0, 0, 3, 4, 0, 1])  # at +inf, at NaN-row, the dominant, ...
    t[6] = -100
    w = torch.rand(C, generator=g) + 0.5
    return x, t, w
