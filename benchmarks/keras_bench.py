"""softmaxkit.keras against Keras's own losses, eagerly: the keras section of BENCHMARKS.md.

Run from the repository root (unset OPENBLAS_CORETYPE for this command only)::

    env -u OPENBLAS_CORETYPE .venv/bin/python benchmarks/keras_bench.py

Each Keras backend (tensorflow, jax, torch) runs in a child process of its own, as
``KERAS_BACKEND`` must be set before Keras is imported. In each, float32 logits of
32x10 and 256x1000 on the CPU, µs per eager call of the loss object (default
reduction), Keras's loss against softmaxkit's in interleaved rounds (median):
``SparseCategoricalCrossentropy`` and ``CategoricalCrossentropy`` from logits (one-hot
labels, as Keras users pass them, and soft labels), ``BinaryCrossentropy`` from
logits; on the torch backend, whose ``fit`` runs eagerly, also the loss with its
gradient (``backward``). Compiled training steps (``jax.jit``, ``tf.function``) trace
these calls once; their cost is in the jax and tensorflow sections.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BACKENDS = ("tensorflow", "jax", "torch")
SHAPES = ((32, 10), (256, 1000))


def _calls(theirs: Any, ours: Any, y: Any, x: Any, *, grad: bool) -> dict[str, Any]:
    """The two losses' calls on ``(y, x)``; with ``grad``, each with its backward (torch)."""
    if not grad:
        return {"keras": lambda: theirs(y, x), "skk": lambda: ours(y, x)}
    xt = x.clone().requires_grad_()

    def step(f: Any) -> None:
        xt.grad = None
        f(y, xt).backward()

    return {"keras": lambda: step(theirs), "skk": lambda: step(ours)}


def _child(backend: str, rounds: int) -> list[dict[str, Any]]:
    """The measurements on one backend (this process must not have imported Keras)."""
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    from torch_bench import _per_call  # the same timing loop (imports no torch)

    import softmaxkit.keras as skk

    rows: list[dict[str, Any]] = []
    for shape in SHAPES:
        rng = np.random.default_rng(2)
        n, c = shape
        x = keras.ops.convert_to_tensor((rng.standard_normal(shape) * 3).astype("float32"))
        idx = rng.integers(0, c, n)
        sparse = keras.ops.convert_to_tensor(idx)
        onehot = keras.ops.convert_to_tensor(np.eye(c, dtype="float32")[idx])
        soft = keras.ops.convert_to_tensor(rng.dirichlet(np.full(c, 0.5), n).astype("float32"))
        binary = keras.ops.convert_to_tensor((rng.random(shape) < 0.5).astype("float32"))
        cases = [
            ("SparseCategoricalCrossentropy", "SparseCategoricalCrossentropy", sparse),
            ("CategoricalCrossentropy, one-hot", "CategoricalCrossentropy", onehot),
            ("CategoricalCrossentropy, soft labels", "CategoricalCrossentropy", soft),
            ("BinaryCrossentropy", "BinaryCrossentropy", binary),
        ]
        for label, cls, y in cases:
            theirs = getattr(keras.losses, cls)(from_logits=True)
            ours = getattr(skk, cls)(from_logits=True)
            t = _per_call(_calls(theirs, ours, y, x, grad=False), rounds)
            rows.append({"backend": backend, "case": label, "shape": shape, **t})
            if backend == "torch" and cls != "BinaryCrossentropy":
                t = _per_call(_calls(theirs, ours, y, x, grad=True), rounds)
                case = label + ", with gradient"
                rows.append({"backend": backend, "case": case, "shape": shape, **t})
    return rows


def measure(rounds: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for backend in BACKENDS:
        out = subprocess.run(
            [sys.executable, str(Path(__file__)), "--child", backend, "--rounds", str(rounds)],
            check=True,
            capture_output=True,
            text=True,
            cwd=HERE,
        ).stdout
        rows += json.loads(out.strip().splitlines()[-1])
    return rows


def _version(*dists: str) -> str:
    import importlib.metadata as md

    for d in dists:
        try:
            return md.version(d)
        except md.PackageNotFoundError:
            continue
    return "not installed"


def _versions() -> str:
    from softmaxkit._bench import _cpu_model

    vers = (
        f"keras {_version('keras')}, tensorflow {_version('tensorflow-cpu', 'tensorflow')}, "
        f"jax {_version('jax')}, torch {_version('torch')}"
    )
    return (
        f"{_cpu_model()}, {os.cpu_count()} logical cores; Python {sys.version.split()[0]}, {vers}"
    )


def render(rows: list[dict[str, Any]], rounds: int) -> str:
    us = 1e6
    lines = [
        "## Keras 3 losses (softmaxkit.keras vs keras.losses, eager)",
        "",
        f"Machine: {_versions()}. float32 logits, CPU, eager calls of the loss object "
        "(default reduction, `from_logits=True`); µs per call, median of "
        f"{rounds} interleaved rounds of about 20 ms each, in one process per backend. "
        "softmaxkit reduces eagerly in a few operations where the sum is known to be far "
        "inside the float range (the overflow-safe selects run otherwise), and on the torch "
        "backend one-hot labels take the class-index kernels. ratio = skk / keras (below 1: "
        "faster). On JAX, CategoricalCrossentropy runs one XLA FFI custom call (the "
        "probability-target kernels of the NumPy path). Slower than Keras: soft labels on "
        "torch at 256×1000 (the row state and one C pass whose float64 exponentials are "
        "rounded once, with the gradient's cancelling elements formed again in double-word, "
        "against Keras's one float32 pass; README, Speed), and BinaryCrossentropy at "
        "256×1000 on JAX and torch, about even with Keras and up to 1.2× (each element's "
        "loss in float64, rounded once, against Keras's float32 operations).",
        "",
        "| backend | loss | shape | keras (µs) | skk (µs) | ratio |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        shape = f"{r['shape'][0]}×{r['shape'][1]}"
        lines.append(
            f"| {r['backend']} | {r['case']} | {shape} | {r['keras'] * us:.0f} | "
            f"{r['skk'] * us:.0f} | {r['skk'] / r['keras']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="softmaxkit.keras vs keras.losses, eager")
    ap.add_argument("--reps", type=int, default=7, help="interleaved rounds")
    ap.add_argument("--quick", action="store_true", help="3 rounds (smoke run)")
    ap.add_argument("--out", help="also write the Markdown to this file")
    ap.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=7, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.rounds)))
        return 0
    rounds = 3 if args.quick else args.reps
    text = render(measure(rounds), rounds)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
