"""Where the public ops hand a call to a native kernel.

Each function returns the finished result when a native kernel covers the call
(NumPy arrays on the CPU in float32/float64), and ``None`` otherwise, in which
case the caller runs the array-agnostic implementation. Until the C core is
built into the package no kernel covers any call, so every function returns
``None`` and the array-agnostic path (the reference implementation) runs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["log_softmax", "softmax"]

Array = Any


def softmax(
    x: Array, axes: tuple[int, ...], where: Array | None, temperature: float, plan: Any
) -> Array | None:
    return None


def log_softmax(
    x: Array, axes: tuple[int, ...], where: Array | None, temperature: float, plan: Any
) -> Array | None:
    return None
