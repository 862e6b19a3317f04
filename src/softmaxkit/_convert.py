"""Moving small results out of any array library, for printing and plotting.

The applied toolkit (calibration summaries, explanations, charts, the CLI) ends in
numbers a person reads, so it needs host copies of small arrays. This module does
that for every supported library without importing any of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["to_numpy"]


def to_numpy(a: Any) -> np.ndarray:
    """A NumPy copy (or view) of an array from any supported library.

    Torch tensors are detached and moved to the CPU, CuPy arrays copied from the
    device, Dask arrays computed, array-api-strict arrays unwrapped; JAX and
    NumPy arrays convert directly.
    """
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # torch
        return np.asarray(a.detach().cpu().numpy())
    if hasattr(a, "compute") and hasattr(a, "dask"):  # dask
        return np.asarray(a.compute())
    if type(a).__module__.startswith("cupy"):
        return np.asarray(a.get())
    inner = getattr(a, "_array", None)  # array-api-strict wraps a NumPy array
    if isinstance(inner, np.ndarray):
        return inner
    return np.asarray(a)
