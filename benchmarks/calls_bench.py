"""The NumPy front end per call at small shapes: the calls section of BENCHMARKS.md.

Run from the repository root (unset OPENBLAS_CORETYPE for this command only)::

    env -u OPENBLAS_CORETYPE .venv/bin/python benchmarks/calls_bench.py

At the sizes of one training or inference step (32x10, 256x1000 float32) the cost
of a call is its validation and dispatch as much as its arithmetic. This times
every everyday call of the public NumPy API (default, accurate mode) against
SciPy's function of the same name and torch's CPU op on a ready tensor (one
torch thread), each the median over interleaved rounds of many calls, with
``x.copy()`` of the logits as the floor of any call that returns a fresh array.
"""

from __future__ import annotations

import argparse
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import scipy.special as ss
from torch_bench import _per_call  # the per-call timing loop (imports no torch)

import softmaxkit as sk
from softmaxkit import _ckernels
from softmaxkit._bench import _cpu_model

_LOAD_BEFORE = os.getloadavg()[0]
SHAPES = ((32, 10), (256, 1000))


def _cases(shape: tuple[int, int]) -> list[tuple[str, dict[str, Callable[[], Any]]]]:
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    t = rng.integers(0, shape[1], size=shape[0])
    y = rng.random(shape, dtype=np.float32)
    lp = sk.log_softmax(x)
    xt, tt, yt = torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(y)
    lpt = torch.from_numpy(lp)
    return [
        (
            "softmax",
            {
                "skt": lambda: sk.softmax(x),
                "scipy": lambda: ss.softmax(x, axis=-1),
                "torch": lambda: torch.softmax(xt, -1),
            },
        ),
        (
            "log_softmax",
            {
                "skt": lambda: sk.log_softmax(x),
                "scipy": lambda: ss.log_softmax(x, axis=-1),
                "torch": lambda: torch.log_softmax(xt, -1),
            },
        ),
        (
            "logsumexp",
            {
                "skt": lambda: sk.logsumexp(x),
                "scipy": lambda: ss.logsumexp(x, axis=-1),
                "torch": lambda: torch.logsumexp(xt, -1),
            },
        ),
        (
            "cross_entropy (mean)",
            {"skt": lambda: sk.cross_entropy(x, t), "torch": lambda: F.cross_entropy(xt, tt)},
        ),
        (
            "nll_loss (mean)",
            {"skt": lambda: sk.nll_loss(lp, t), "torch": lambda: F.nll_loss(lpt, tt)},
        ),
        (
            "cross_entropy + gradient",
            {"skt": lambda: sk.cross_entropy(x, t, return_grad=True)},
        ),
        (
            "sigmoid",
            {
                "skt": lambda: sk.sigmoid(x),
                "scipy": lambda: ss.expit(x),
                "torch": lambda: torch.sigmoid(xt),
            },
        ),
        (
            "log_sigmoid",
            {
                "skt": lambda: sk.log_sigmoid(x),
                "scipy": lambda: ss.log_expit(x),
                "torch": lambda: F.logsigmoid(xt),
            },
        ),
        (
            "BCE with logits (mean)",
            {
                "skt": lambda: sk.binary_cross_entropy_with_logits(x, y),
                "torch": lambda: F.binary_cross_entropy_with_logits(xt, yt),
            },
        ),
        (
            "BCE with logits + gradient",
            {"skt": lambda: sk.binary_cross_entropy_with_logits(x, y, return_grad=True)},
        ),
        ("x.copy() (floor)", {"skt": lambda: x.copy()}),
    ]


def measure(rounds: int, quick: bool) -> list[dict[str, Any]]:
    import torch

    torch.set_num_threads(1)
    rows = []
    for shape in SHAPES[:1] if quick else SHAPES:
        for name, fns in _cases(shape):
            got = _per_call(fns, rounds)
            rows.append({"op": name, "shape": shape, **{k: v * 1e6 for k, v in got.items()}})
    return rows


def _cell(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def _ratio(peer: float | None, ours: float) -> str:
    return "–" if peer is None else f"{peer / ours:.2f}×"


def render(rows: list[dict[str, Any]], rounds: int) -> str:
    import torch

    lines = [
        "## The NumPy front end per call (small shapes)",
        "",
        f"Machine: {_cpu_model()}, {os.cpu_count()} logical "
        f"cores; CPython {platform.python_version()}, NumPy {np.__version__}, SciPy "
        f"{scipy.__version__}, torch {torch.__version__} (one thread, ops on ready "
        f"tensors). softmaxkit: default (accurate) mode, C core engine "
        f"{_ckernels.isa()}. float32; µs per call, median of {rounds} interleaved rounds "
        f"of many calls each (about 20 ms a round and contender). Load average at the "
        f"start: {_LOAD_BEFORE:.2f}.",
        "",
        "Every everyday call (a C-contiguous float32/float64 array, the last axis, no "
        "mask or weights) is planned in a few type checks and handed to the C core in one "
        "call, with the bits and result types of the general path. "
        "Before, at 32×10: cross_entropy 125 µs, logsumexp 36, sigmoid 18, log_sigmoid "
        "15, BCE with logits 50, nll_loss 104 (a loop of the same kind, before the "
        "change). The float32 sigmoid-family kernels also use a 2^-34 float64 "
        "exponential and a 2^-39 log1p (2^-43 since session 25), what one rounding to "
        "float32 needs (one "
        "thread, 256,000 elements, in-process A/B, ns/elem: sigmoid 2.13 -> 1.61, "
        "log_sigmoid 3.72 -> 2.88, BCE with its gradient 7.39 -> 5.62), and BCE's mean "
        "is summed in the core in np.sum's order, with no float64 array of losses. "
        "Since session 11 cross-entropy rows of up to 256 classes are finished eight at "
        "a time in vector float64 instead of one at a time in double-word arithmetic "
        "(the C core alone, one thread, loss and gradient: 32×10 3.2 -> 2.1 µs, 256×10 "
        "21.3 -> 12.6 µs; in-process before/after, 4096×10 with its gradient 412 -> "
        "217 µs), and fast mode's rows of up to 160 classes take the accurate "
        "transposed kernel (it had none: 64×10 16.1 -> 7.6 µs).",
        "",
        "| op | shape | softmaxkit (µs) | SciPy (µs) | torch (µs) | SciPy / softmaxkit "
        "| torch / softmaxkit |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ours = r["skt"]
        lines.append(
            f"| {r['op']} | {r['shape'][0]}×{r['shape'][1]} | {_cell(ours)} | "
            f"{_cell(r.get('scipy'))} | {_cell(r.get('torch'))} | "
            f"{_ratio(r.get('scipy'), ours)} | {_ratio(r.get('torch'), ours)} |"
        )
    lines += [
        "",
        "softmaxkit's sigmoid family computes in float64 and rounds once (0.5 ulp), SciPy's "
        "and torch's in float32; at 256×1000 that arithmetic, not the call, sets its time "
        "(the kernels section). Its `cross_entropy` reduces in NumPy's pairwise order, and "
        "its call with the gradient returns both from one pass.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="softmaxkit's NumPy calls at small shapes")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--quick", action="store_true", help="32x10 only, 3 rounds (smoke run)")
    ap.add_argument("--out", help="also write the Markdown to this file")
    args = ap.parse_args(argv)
    rounds = 3 if args.quick else args.reps
    md = render(measure(rounds, args.quick), rounds)
    print(md)
    if args.out:
        Path(args.out).write_text(md + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
