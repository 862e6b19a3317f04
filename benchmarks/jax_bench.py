"""softmaxkit.jax against jax.nn and optax under jax.jit: the JAX section of BENCHMARKS.md.

Run from the repository root (unset OPENBLAS_CORETYPE for this command only)::

    env -u OPENBLAS_CORETYPE .venv/bin/python benchmarks/jax_bench.py --out /tmp/jax.md

Everything runs compiled with ``jax.jit``, with JAX's default x64 off, float32 data:
softmax and log_softmax against ``jax.nn``, the gradient of the mean integer-label
cross-entropy against ``jax.grad`` of ``optax.softmax_cross_entropy_with_integer_labels``,
in softmaxkit's accurate (0.5 ulp) and fast (3 ulp) modes, and that of the mean soft-label
cross-entropy (``softmaxkit.jax.softmax_cross_entropy``) against ``optax.softmax_cross_entropy``. On CPU softmaxkit runs its
C kernels as XLA FFI custom calls inside the compiled program. Each case is timed in
interleaved rounds (every implementation once per round, in turn), median over the
rounds; small shapes repeat the call within a sample. The floor is one elementwise pass
over the same bytes (``x + 1``) compiled by XLA.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

SHAPES = ((2048, 32000), (32, 10))
QUICK_SHAPES = ((256, 4096), (32, 10))


def _median_times(fns: dict[str, Callable[[], Any]], reps: int, inner: int) -> dict[str, float]:
    """Median wall time per call of each function, and (keys ``cpu:<name>``) the
    median CPU time per call of this process (user + system, all threads)."""
    for f in fns.values():  # compile and warm up
        f()
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            c0 = time.process_time()
            t0 = time.perf_counter()
            for _ in range(inner):
                f()
            times[k].append((time.perf_counter() - t0) / inner)
            cpu[k].append((time.process_time() - c0) / inner)
    res = {k: statistics.median(v) for k, v in times.items()}
    res.update({f"cpu:{k}": statistics.median(v) for k, v in cpu.items()})
    return res


def measure(shapes: tuple[tuple[int, int], ...], reps: int) -> list[dict[str, Any]]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import softmaxkit.jax as skj

    jax.config.update("jax_enable_x64", False)
    rows = []
    rng = np.random.default_rng(0)
    for shape in shapes:
        n, c = shape
        x = jax.device_put(jnp.asarray(rng.standard_normal(shape, dtype=np.float32) * 4))
        t = jax.device_put(jnp.asarray(rng.integers(0, c, n), dtype=jnp.int32))
        inner = 1 if n * c >= 1 << 20 else 2000

        def timed(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
            return lambda: fn(*args).block_until_ready()

        floor = jax.jit(lambda x: x + 1.0)
        for op in ("softmax", "log_softmax"):
            peer = jax.jit(getattr(jax.nn, op))
            acc = jax.jit(lambda x, op=op: getattr(skj, op)(x))
            fast = jax.jit(lambda x, op=op: getattr(skj, op)(x, precision="fast"))
            np.testing.assert_allclose(np.asarray(acc(x)), np.asarray(peer(x)), atol=1e-5)
            res = _median_times(
                {
                    "peer": timed(peer, x),
                    "accurate": timed(acc, x),
                    "fast": timed(fast, x),
                    "floor": timed(floor, x),
                },
                reps,
                inner,
            )
            rows.append({"op": op, "peer_name": f"jax.nn.{op}", "shape": shape, **res})

        def ce_grad(loss: Callable[..., Any]) -> Any:
            return jax.jit(jax.grad(lambda xx, tt: loss(xx, tt).mean()))

        peer = ce_grad(optax.softmax_cross_entropy_with_integer_labels)
        acc = ce_grad(skj.softmax_cross_entropy_with_integer_labels)
        fast = ce_grad(
            lambda x, t: skj.softmax_cross_entropy_with_integer_labels(x, t, precision="fast")
        )
        np.testing.assert_allclose(np.asarray(acc(x, t)), np.asarray(peer(x, t)), atol=1e-6)
        res = _median_times(
            {
                "peer": timed(peer, x, t),
                "accurate": timed(acc, x, t),
                "fast": timed(fast, x, t),
                "floor": timed(floor, x),
            },
            reps,
            inner,
        )
        rows.append(
            {
                "op": "CE gradient (mean)",
                "peer_name": "jax.grad(optax ... _with_integer_labels)",
                "shape": shape,
                **res,
            }
        )
        # soft labels (probability targets): jax.grad of the mean, optax's graph against
        # softmaxkit.jax's (one custom call: the row state and the fused pass, or in fast
        # mode one float32 pass and the gradient's)
        q = jnp.asarray(rng.dirichlet(np.ones(c), n).astype(np.float32))

        def soft_grad(loss: Callable[..., Any]) -> Any:
            return jax.jit(jax.grad(lambda xx, qq: loss(xx, qq).mean()))

        peer = soft_grad(optax.softmax_cross_entropy)
        acc = soft_grad(skj.softmax_cross_entropy)
        fast = soft_grad(lambda a, b: skj.softmax_cross_entropy(a, b, precision="fast"))
        for f in (acc, fast):
            np.testing.assert_allclose(np.asarray(f(x, q)), np.asarray(peer(x, q)), atol=1e-6)
        res = _median_times(
            {
                "peer": timed(peer, x, q),
                "accurate": timed(acc, x, q),
                "fast": timed(fast, x, q),
                "floor": timed(floor, x),
            },
            reps,
            inner,
        )
        rows.append(
            {
                "op": "CE gradient, soft labels (mean)",
                "peer_name": "jax.grad(optax.softmax_cross_entropy)",
                "shape": shape,
                **res,
            }
        )
        print(f"  {shape} done", file=sys.stderr, flush=True)
    return rows


def _machine() -> str:
    import jax

    from softmaxkit import _ckernels
    from softmaxkit._bench import _cpu_model

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"{_cpu_model()}, {os.cpu_count()} logical cores, load average {load} at the end; "
        f"Python {platform.python_version()}, jax {jax.__version__} (x64 off), "
        f"softmaxkit C kernels: {_ckernels.isa()} through XLA FFI custom calls"
    )


def render(rows: list[dict[str, Any]], reps: int) -> str:
    out = [
        "## softmaxkit.jax vs jax.nn and optax (CPU, jax.jit)",
        "",
        f"Machine: {_machine()}.",
        "",
        "Everything is compiled with `jax.jit`, float32, JAX's default x64 off. On CPU "
        "softmaxkit runs its C kernels as XLA FFI custom calls inside the compiled "
        "program (results bitwise equal to the NumPy path). CE gradient: `jax.grad` of the "
        "mean integer-label cross-entropy (optax vs `softmaxkit.jax`, whose kernel returns "
        "loss and gradient in one pass). Floor: one elementwise XLA pass over the same "
        f"bytes (`x + 1`). Median of {reps} interleaved rounds; small shapes average "
        "2000 calls per sample. Ratios are softmaxkit's time over the peer's "
        "(targets: accurate ≤ 1.0×, fast ≤ 0.7×, (32, 10) no slower than jax.nn.softmax). "
        "The CPU columns are the same ratios of the process's CPU time per call (user + "
        "system, every thread): on a shared machine they move far less with the load "
        "than wall time does.",
        "",
        "Every implementation writes its result into a fresh buffer from XLA, so the "
        "kernel's zeroing of the new pages (a write of the result's bytes) is part of "
        "every column, the floor's included. softmaxkit's handlers ask for transparent "
        "huge pages for results of 4 MiB or more, as NumPy's allocator does (124 page "
        "faults per (2048, 32000) float32 result instead of 64000). When the machine's "
        "memory is nearly full, the kernel compacts memory to find huge pages (THP defrag "
        "`madvise`) and the hint can cost more than it saves, for NumPy's own arrays too: "
        "on this shared machine the large-shape ratios of one run to the next move with "
        "the other tenants' memory use as well as with the load.",
        "",
    ]
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        out += [
            f"**Measured at load average {load:.1f} on {os.cpu_count()} logical cores**: the "
            "floor shows how starved every implementation was; re-run on a quiet machine "
            "before reading the large-shape ratios.",
            "",
        ]
    out += [
        "| op | shape | peer | peer | accurate | fast | floor | accurate / peer | fast / peer "
        "| CPU: accurate / peer | CPU: fast / peer |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def fmt(s: float) -> str:
        return f"{s * 1e3:.2f} ms" if s >= 1e-3 else f"{s * 1e6:.1f} µs"

    for r in rows:
        out.append(
            f"| {r['op']} | {r['shape'][0]}×{r['shape'][1]} | {r['peer_name']} | "
            f"{fmt(r['peer'])} | {fmt(r['accurate'])} | {fmt(r['fast'])} | {fmt(r['floor'])} | "
            f"{r['accurate'] / r['peer']:.2f}× | {r['fast'] / r['peer']:.2f}× | "
            f"{r['cpu:accurate'] / r['cpu:peer']:.2f}× | {r['cpu:fast'] / r['cpu:peer']:.2f}× |"
        )
    out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="also write the Markdown section here")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="small shapes (smoke run)")
    args = ap.parse_args(argv)
    rows = measure(QUICK_SHAPES if args.quick else SHAPES, max(1, args.reps))
    text = render(rows, args.reps)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
