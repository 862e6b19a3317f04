"""The array-agnostic engine on JAX under jit, native kernels off: the ``agnostic`` part.

Run from the repository root (unset OPENBLAS_CORETYPE for this command only)::

    env -u OPENBLAS_CORETYPE .venv/bin/python benchmarks/agnostic_bench.py --out /tmp/a.md

The agnostic engine is what every device without a native kernel runs (GPUs, TPUs,
CuPy, Dask, torch off the CPU), so this part measures it where it can be compared
with a peer on this machine: JAX on the CPU, ``jax.jit``, x64 off (JAX's default),
``SOFTMAXKIT_ENGINE=agnostic`` (set before softmaxkit is imported, so no native
kernel or FFI call can take over). Rows: softmaxkit ``softmax`` / ``log_softmax``
in accurate mode (float64 work scoped with ``jax.enable_x64`` inside the call), the
same with the float-float engine it replaced (``SOFTMAXKIT_ENGINE=agnostic-dd``), and
fast mode; each against ``jax.nn.softmax`` / ``jax.nn.log_softmax`` and a floor
(``-x``: one read and one write of the same bytes). All functions alternate in
rounds in one process; the table gives medians, ratios to ``jax.nn``, and the
compiled program's HLO instruction and fusion (kernel) counts.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ["SOFTMAXKIT_ENGINE"] = "agnostic"

TARGETS = {"accurate": 2.5, "fast": 1.5}  # issue 10 §2: ratio to jax.nn under jit


def _hlo_counts(fn: Callable[[Any], Any], x: Any) -> tuple[int, int]:
    """Instructions and fusions (kernels) in the optimised HLO of ``jit(fn)``."""
    import jax

    text = jax.jit(fn).lower(x).compile().as_text()
    body = [ln.strip() for ln in text.splitlines()]
    instr = [ln for ln in body if re.match(r"^(ROOT )?%?[\w.\-]+ = ", ln)]
    fusions = [ln for ln in instr if re.search(r"= \S+ fusion\(", ln)]
    return len(instr), len(fusions)


def _machine() -> str:
    import jax

    from softmaxkit._bench import _cpu_model

    try:
        load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover - no load average on this platform
        load = "n/a"
    return (
        f"{_cpu_model()}, {os.cpu_count()} logical cores, load average {load}; "
        f"Python {platform.python_version()}, jax {jax.__version__} "
        f"({jax.default_backend()})"
    )


def measure(shape: tuple[int, int], reps: int) -> list[dict[str, Any]]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", False)
    import softmaxkit as sk
    from softmaxkit import _dispatch

    assert _dispatch.FORCE_AGNOSTIC, "SOFTMAXKIT_ENGINE=agnostic was not read"

    x = jnp.asarray(np.random.default_rng(0).normal(0.0, 4.0, shape).astype(np.float32))

    def dd(op: Callable[..., Any]) -> Callable[[Any], Any]:
        def f(v: Any) -> Any:
            os.environ["SOFTMAXKIT_ENGINE"] = "agnostic-dd"
            try:
                return op(v)
            finally:
                os.environ["SOFTMAXKIT_ENGINE"] = "agnostic"

        return f

    ops: dict[str, dict[str, Callable[[Any], Any]]] = {
        "softmax": {
            "jax.nn": jax.nn.softmax,
            "softmaxkit accurate": sk.softmax,
            "softmaxkit accurate, float-float (before)": dd(sk.softmax),
            "softmaxkit fast": lambda v: sk.softmax(v, precision="fast"),
            "floor (-x)": jnp.negative,
        },
        "log_softmax": {
            "jax.nn": jax.nn.log_softmax,
            "softmaxkit accurate": sk.log_softmax,
            "softmaxkit accurate, float-float (before)": dd(sk.log_softmax),
            "softmaxkit fast": lambda v: sk.log_softmax(v, precision="fast"),
            "floor (-x)": jnp.negative,
        },
    }
    rows: list[dict[str, Any]] = []
    for op, fns in ops.items():
        compiled = {}
        counts = {}
        for name, f in fns.items():
            counts[name] = _hlo_counts(f, x)  # traced while the engine variable is set
            compiled[name] = jax.jit(f).lower(x).compile()
            compiled[name](x).block_until_ready()
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(reps):
            for name, c in compiled.items():  # alternate, so load changes hit all alike
                t0 = time.perf_counter()
                c(x).block_until_ready()
                times[name].append(time.perf_counter() - t0)
        base = statistics.median(times["jax.nn"])
        for name in fns:
            med = statistics.median(times[name])
            rows.append(
                {
                    "op": op,
                    "impl": name,
                    "ms": med * 1e3,
                    "ratio": med / base,
                    "hlo": counts[name][0],
                    "kernels": counts[name][1],
                }
            )
    return rows


def render(rows: list[dict[str, Any]], shape: tuple[int, int], reps: int) -> str:
    out = [
        "## The array-agnostic engine (JAX under jit, native kernels off)",
        "",
        f"Machine: {_machine()}. Shape {shape} float32, `jax.jit`, x64 off, "
        f"`SOFTMAXKIT_ENGINE=agnostic`; median of {reps} interleaved rounds. The machine "
        "is shared with other jobs, so absolute times move; the ratios are taken within "
        "one round-robin.",
        "",
        "| op | implementation | median ms | × jax.nn | target | HLO instructions | kernels |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        target = ""
        if r["impl"] == "softmaxkit accurate":
            target = f"≤ {TARGETS['accurate']}×"
        elif r["impl"] == "softmaxkit fast":
            target = f"≤ {TARGETS['fast']}×"
        out.append(
            f"| {r['op']} | {r['impl']} | {r['ms']:.2f} | {r['ratio']:.2f} | {target} | "
            f"{r['hlo']} | {r['kernels']} |"
        )
    out += [
        "",
        "Accurate mode computes float32 data in float64, switched on for the call only "
        "(`jax.enable_x64` inside the traced function; the caller's x64 setting is left "
        "as it was), instead of float-float arithmetic in float32. Fast mode works in "
        "float32 with the shift `x - max` made exact by TwoSum (its rounding error "
        "corrects `exp`), which keeps it within 3 ulp. Both are bounded below by the "
        "floor: one read and one write of the array; `jax.nn.softmax` reads it twice "
        "more (max, sum) and evaluates `exp` once in float32.",
    ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="a small shape, for a smoke run")
    ap.add_argument("--out", help="also write the Markdown to this file")
    args = ap.parse_args(argv)
    shape = (64, 1000) if args.quick else (2048, 32000)
    rows = measure(shape, max(3, args.reps))
    text = render(rows, shape, max(3, args.reps))
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
