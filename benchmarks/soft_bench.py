"""Cross-entropy with probability targets (soft labels): the soft-labels section of BENCHMARKS.md.

Run from the repository root (unset OPENBLAS_CORETYPE for this command only)::

    env -u OPENBLAS_CORETYPE .venv/bin/python benchmarks/soft_bench.py --out /tmp/soft.md

Distillation and label-smoothing pipelines pass target distributions, not class indices.
Float32 logits, Dirichlet(0.5) targets, mean over the rows, on the CPU:

- NumPy, eager: ``sk.cross_entropy(x, q)`` with and without ``return_grad``, in the
  accurate (0.5 ulp) and fast (3 ulp) modes, against torch's ``F.cross_entropy`` with
  probability targets on ready tensors (the gradient: ``backward`` through autograd);
- JAX, ``jax.jit``: ``jax.grad`` of the mean of ``softmaxkit.jax.softmax_cross_entropy``
  (one XLA FFI custom call) against that of ``optax.softmax_cross_entropy``.

Both libraries use the machine's two cores (torch ``set_num_threads(2)``). Each case is
timed in interleaved rounds (every contender once per round, the order rotated), median
over the rounds; ``x.copy()`` (NumPy) and a compiled ``x + 1`` (JAX) of the same bytes
are the floors.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
from torch_bench import _per_call  # the interleaved timing loop (imports no torch)

SHAPES = ((32, 10), (256, 1000), (512, 32000))
QUICK_SHAPES = ((32, 10), (64, 1000))


def _numpy_rows(shape: tuple[int, int], x: np.ndarray, q: np.ndarray, reps: int) -> list[Any]:
    import torch
    import torch.nn.functional as F

    import softmaxkit as sk

    xt, qt = torch.from_numpy(x), torch.from_numpy(q)
    xg = xt.clone().requires_grad_()

    def torch_step() -> None:
        xg.grad = None
        F.cross_entropy(xg, qt).backward()

    def torch_fwd() -> None:
        with torch.no_grad():
            F.cross_entropy(xt, qt)

    # the same loss, whichever the mode (fast within its 3 ulp)
    ref = float(F.cross_entropy(xt.double(), qt.double()))
    for p in ("accurate", "fast"):
        np.testing.assert_allclose(float(sk.cross_entropy(x, q, precision=p)), ref, rtol=1e-5)
    rows = []
    for case, fns in (
        (
            "loss (mean)",
            {
                "torch": torch_fwd,
                "accurate": lambda: sk.cross_entropy(x, q),
                "fast": lambda: sk.cross_entropy(x, q, precision="fast"),
                "floor": x.copy,
            },
        ),
        (
            "loss + gradient",
            {
                "torch": torch_step,
                "accurate": lambda: sk.cross_entropy(x, q, return_grad=True),
                "fast": lambda: sk.cross_entropy(x, q, return_grad=True, precision="fast"),
                "floor": x.copy,
            },
        ),
    ):
        rows.append({"front": "NumPy", "case": case, "shape": shape, **_per_call(fns, reps)})
    return rows


def _jax_rows(shape: tuple[int, int], x: np.ndarray, q: np.ndarray, reps: int) -> list[Any]:
    import jax
    import jax.numpy as jnp
    import optax

    import softmaxkit.jax as skj

    xj, qj = jnp.asarray(x), jnp.asarray(q)

    def grad_of(loss: Any) -> Any:
        return jax.jit(jax.grad(lambda a, b: loss(a, b).mean()))

    peer = grad_of(optax.softmax_cross_entropy)
    acc = grad_of(skj.softmax_cross_entropy)
    fast = grad_of(lambda a, b: skj.softmax_cross_entropy(a, b, precision="fast"))
    floor = jax.jit(lambda a: a + 1)
    want = np.asarray(peer(xj, qj))
    for f in (acc, fast):
        np.testing.assert_allclose(np.asarray(f(xj, qj)), want, atol=1e-6)
    fns = {
        "torch": lambda: peer(xj, qj).block_until_ready(),
        "accurate": lambda: acc(xj, qj).block_until_ready(),
        "fast": lambda: fast(xj, qj).block_until_ready(),
        "floor": lambda: floor(xj).block_until_ready(),
    }
    got = _per_call(fns, reps)
    return [{"front": "JAX (jit)", "case": "jax.grad of the mean", "shape": shape, **got}]


def measure(reps: int, quick: bool) -> list[dict[str, Any]]:
    import torch

    torch.set_num_threads(2)
    rows: list[dict[str, Any]] = []
    for shape in QUICK_SHAPES if quick else SHAPES:
        rng = np.random.default_rng(5)
        x = (rng.standard_normal(shape) * 3).astype(np.float32)
        q = rng.dirichlet(np.full(shape[1], 0.5), shape[0]).astype(np.float32)
        rows += _numpy_rows(shape, x, q, reps)
        rows += _jax_rows(shape, x, q, reps)
        print(f"  {shape} done", file=sys.stderr, flush=True)
    return rows


def _machine() -> str:
    import jax
    import torch

    from softmaxkit import _ckernels
    from softmaxkit._bench import _cpu_model

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"{_cpu_model()}, {os.cpu_count()} logical cores, load average {load} at the end; "
        f"Python {platform.python_version()}, NumPy {np.__version__}, torch "
        f"{torch.__version__} (2 threads), jax {jax.__version__} (x64 off); softmaxkit C "
        f"kernels: {_ckernels.isa()}"
    )


def _t(v: float) -> str:
    return f"{v * 1e3:.3f}" if v >= 1e-3 else f"{v * 1e3:.4f}"


def render(rows: list[dict[str, Any]], reps: int) -> str:
    out = [
        "## Cross-entropy with probability targets (soft labels, CPU)",
        "",
        f"Machine: {_machine()}.",
        "",
        "Float32 logits, Dirichlet(0.5) targets, mean over the rows. NumPy: "
        "`sk.cross_entropy(x, q)` eagerly, with and without `return_grad`, against torch's "
        "`F.cross_entropy` with probability targets (the gradient through `backward`). "
        "JAX: `jax.jit(jax.grad)` of the mean of `softmaxkit.jax.softmax_cross_entropy` "
        "(one XLA FFI custom call) against `optax.softmax_cross_entropy` (the peer column). "
        "Accurate: every item and gradient element within 0.5 ulp of the exact value (the "
        "row state, float64 table exponentials, cancelling gradient elements formed again "
        "in double-word). Fast: float32 exponentials and terms, float64 sums, the row's "
        "maxima kept apart (items within 3 ulp; gradient elements within 4 × 2^-24 of "
        "their two terms `r A p_j` and `r u_j`). Floor: `x.copy()` (NumPy), a compiled "
        f"`x + 1` (JAX). Milliseconds, median of {reps} interleaved rounds; ratio: the "
        "peer's time over ours (above 1: softmaxkit is faster).",
        "",
        "| front end | case | shape | peer (ms) | accurate (ms) | fast (ms) | floor (ms) "
        "| peer / accurate | peer / fast |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        shape = f"{r['shape'][0]}×{r['shape'][1]}"
        out.append(
            f"| {r['front']} | {r['case']} | {shape} | {_t(r['torch'])} | "
            f"{_t(r['accurate'])} | {_t(r['fast'])} | {_t(r['floor'])} | "
            f"{r['torch'] / r['accurate']:.2f}× | {r['torch'] / r['fast']:.2f}× |"
        )
    out += [
        "",
        "The peer is torch for the NumPy rows and optax for the JAX rows. Where the "
        "accurate mode is slower than the peer, the cost is its contract: the row state "
        "(float32-accurate exponentials) and a second pass with float64 table "
        "exponentials; the fast mode makes one pass of float32 exponentials for the "
        "statistics and, with a gradient, one more over the kept exponentials. At 32×10 "
        "under `jax.jit` XLA runs optax's small graph for little more than the floor's "
        "dispatch, while the custom call adds the C core's cost per row (short rows are "
        "taken one at a time, not several to a vector as the index kernels take them).",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="soft-label cross-entropy against torch and optax")
    ap.add_argument("--reps", type=int, default=7, help="interleaved rounds")
    ap.add_argument("--quick", action="store_true", help="small shapes, 3 rounds (smoke run)")
    ap.add_argument("--out", help="also write the Markdown to this file")
    args = ap.parse_args(argv)
    reps = 3 if args.quick else args.reps
    text = render(measure(reps, args.quick), reps)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
