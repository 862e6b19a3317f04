"""Measuring an implementation of the softmax family against the reference.

A :class:`Case` is one dataset at one dtype with its reference values for the
four row operations (softmax, log_softmax, logsumexp, index cross-entropy). An
implementation is any function ``impl(op, x, target)`` taking NumPy inputs and
returning NumPy outputs (``target`` is ``None`` except for cross-entropy); the
test suite and ``benchmarks/accuracy.py`` wrap softmaxkit's paths and the peers
in that form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from . import _datasets, _reference

__all__ = ["OPS", "Case", "Impl", "case", "measure", "packed_case", "row_range"]

OPS = ("softmax", "log_softmax", "logsumexp", "cross_entropy")

Impl = Callable[[str, np.ndarray, "np.ndarray | None"], Any]


@dataclass
class Case:
    """A dataset at a dtype, with the inputs and reference values of every op."""

    id: str
    dtype: str
    x: np.ndarray  # rows
    ce_x: np.ndarray  # cross-entropy logits (rows of x, see datasets.ce_inputs)
    ce_t: np.ndarray  # cross-entropy class indices
    refs: dict[str, np.ndarray] = field(default_factory=dict)  # longdouble
    pristine: tuple[np.ndarray, np.ndarray] | None = None  # copies of x, ce_x: see intact()

    def inputs(self, op: str) -> tuple[np.ndarray, np.ndarray | None]:
        if op == "cross_entropy":
            return self.ce_x, self.ce_t
        return self.x, None

    def intact(self) -> bool:
        """Whether the inputs still hold the values the references were computed for
        (backend arrays may share their memory)."""
        if self.pristine is None:
            return True
        return all(
            np.array_equal(a, b, equal_nan=True)
            for a, b in zip((self.x, self.ce_x), self.pristine, strict=True)
        )

    def compared(self, op: str) -> np.ndarray | None:
        """Outputs that are compared in ulps: all but the ``-inf`` entries of the input."""
        if op in ("softmax", "log_softmax"):
            return np.isfinite(self.x)
        return None


def _build(name: str, dtype: str, x: np.ndarray, ce: tuple[np.ndarray, np.ndarray]) -> Case:
    ref = _reference.reference(x)
    ce_x, ce_t = ce
    ref_ce = ref if ce_x is x else _reference.reference(ce_x)
    refs = {
        "softmax": _reference.softmax_ref(ref),
        "log_softmax": _reference.log_softmax_ref(ref),
        "logsumexp": _reference.logsumexp_ref(ref),
        "cross_entropy": _reference.cross_entropy_ref(ref_ce, ce_t),
    }
    return Case(name, dtype, x, ce_x, ce_t, refs, (x.copy(), ce_x.copy()))


@lru_cache(maxsize=64)
def case(name: str, dtype: str, size: str = "ci") -> Case:
    """The :class:`Case` of dataset ``name`` (cached: references are computed once)."""
    x = _datasets.by_id(name).make(dtype, size)
    return _build(name, dtype, x, _datasets.ce_inputs(x, name))


@lru_cache(maxsize=8)
def packed_case(dtype: str, spec: tuple[tuple[str, int], ...], width: int, rows: int) -> Case:
    """A :class:`Case` of several sets packed into one array (see :func:`datasets.packed`)."""
    x = _datasets.packed(dtype, spec, width, rows)
    name = "+".join(n for n, _ in spec)
    return _build(name, dtype, x, _datasets.ce_inputs(x, name))


def measure(c: Case, op: str, impl: Impl, *, mask: np.ndarray | None = None) -> _reference.UlpStats:
    """Run ``impl`` on the case's inputs for ``op`` and summarise its ulp errors."""
    x, t = c.inputs(op)
    out = np.asarray(impl(op, x, t))
    want = c.refs[op]
    if out.shape != want.shape:
        msg = f"{op} on {c.id}: result shape {out.shape}, expected {want.shape}"
        raise AssertionError(msg)
    if out.dtype != np.dtype(c.dtype):
        msg = f"{op} on {c.id}: result dtype {out.dtype}, expected {c.dtype}"
        raise AssertionError(msg)
    sel = c.compared(op)
    if mask is not None:
        sel = mask if sel is None else (sel & mask)
    return _reference.ulp_stats(out, want, c.dtype, sel)


def row_range(c: Case, op: str) -> np.ndarray:
    """``max - min`` over the finite entries of each input row, shaped like the op's output."""
    x, _ = c.inputs(op)
    xf = x.astype(np.float64)
    fin = np.isfinite(xf)
    hi = np.where(fin, xf, -np.inf).max(axis=1)
    lo = np.where(fin, xf, np.inf).min(axis=1)
    r = hi - lo
    if op in ("softmax", "log_softmax"):
        return np.broadcast_to(r[:, None], x.shape)
    return r
