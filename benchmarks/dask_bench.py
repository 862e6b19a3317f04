"""softmaxkit on Dask beyond memory, and the merge accuracy: the dask section of BENCHMARKS.md.

Run from the repository root (unset OPENBLAS_CORETYPE for this command only)::

    env -u OPENBLAS_CORETYPE .venv/bin/python benchmarks/dask_bench.py --out /tmp/dask.md

Two parts:

1. A ``distributed.LocalCluster`` of 2 workers x 1.5 GB (one thread each) and a
   lazily generated float32 array (``da.random.default_rng(0).standard_normal``,
   chunks of 500 x 25000) larger than the cluster's memory. Interleaved rounds
   time ``softmaxkit.logsumexp`` (the state tree), SciPy's ``logsumexp`` in
   array-API mode (``SCIPY_ARRAY_API=1``) on the same Dask array, softmaxkit's
   previous array-agnostic graph, and a plain Dask two-pass ``max`` then
   ``log(sum(exp(x - max)))``; softmax is timed into a null sink as one graph
   and as two computes (the state, then the map). Peak worker memory and spilled
   bytes are sampled from the scheduler every 0.25 s. Accuracy: the first 200
   rows of every result against the native kernel and against a longdouble
   reference exact to far below float32's ulp.
2. Merge accuracy at a million float32 elements: the (max, count, sum) state
   merged over 64 blocks, a (max, sum) merge in float64, ``np.logaddexp.reduce``
   of float32 values, and the 4.6e-22 loss of a dominant logit over 8 blocks.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("SCIPY_ARRAY_API", "1")  # before scipy is imported anywhere

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import softmaxkit as sk  # noqa: E402
from tests import _reference  # noqa: E402

GB = 1e9
HEAD = 200  # rows checked for accuracy


class NullSink:
    """A ``da.store`` target that drops what it is given (measures the compute only)."""

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


class MemorySampler:
    """Peak worker memory and spilled bytes from the scheduler, sampled in a thread."""

    def __init__(self, client: Any, every: float = 0.25) -> None:
        self.client = client
        self.every = every
        self.peak = 0.0
        self.spilled = 0.0

    def _sample(self) -> None:
        info = self.client.scheduler_info(n_workers=-1)["workers"].values()
        for w in info:
            m = w.get("metrics", {})
            self.peak = max(self.peak, float(m.get("memory", 0)))
            spill = m.get("spilled_bytes", {})
            disk = spill.get("disk", 0) if isinstance(spill, dict) else spill
            self.spilled = max(self.spilled, float(disk))

    def __enter__(self) -> MemorySampler:
        self._run = True

        def loop() -> None:
            while self._run:
                with contextlib.suppress(Exception):  # a busy scheduler: try again
                    self._sample()
                time.sleep(self.every)

        self._t = threading.Thread(target=loop, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._run = False
        self._t.join()


def _agnostic_logsumexp(x: Any) -> Any:
    """softmaxkit's previous Dask graph: the array-agnostic path (several reductions)."""
    from softmaxkit._agnostic import _normalize
    from softmaxkit._namespace import call, make_plan, resolve

    xp, (xa,) = resolve(x)
    plan = make_plan(xp, xa, "accurate")
    static = {"axes": (1,), "keepdims": False, "return_sign": False, "plan": plan}
    return call(xp, _normalize.logsumexp, {"x": xa, "b": None, "where": None}, static)


def _plain_two_pass(x: Any) -> Any:
    import dask.array as da

    m = x.max(axis=1, keepdims=True)
    return (da.log(da.exp(x - m).sum(axis=1, keepdims=True)) + m)[:, 0]


def cluster_part(rows: int, n: int, reps: int, lines: list[str], with_before: bool) -> None:
    import dask.array as da
    import distributed
    from scipy import special

    chunks = (500, 25_000)
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            memory_limit="1.5GB",
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=40,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        x = da.random.default_rng(0).standard_normal((rows, n), chunks=chunks, dtype=np.float32)
        methods: dict[str, Callable[[], Any]] = {
            "softmaxkit `logsumexp` (state tree)": lambda: sk.logsumexp(x),
            "SciPy `logsumexp`, array API": lambda: special.logsumexp(x, axis=1),
            "plain Dask two-pass (max, then sum exp)": lambda: _plain_two_pass(x),
        }
        if with_before:
            methods["softmaxkit before (array-agnostic graph)"] = lambda: _agnostic_logsumexp(x)
        # warm-up: the workers import softmaxkit, SciPy and the random generator once
        small = x[:500, :50_000]
        sk.logsumexp(small).compute()
        special.logsumexp(small, axis=1).compute()
        _plain_two_pass(small).compute()
        times: dict[str, list[float]] = {k: [] for k in methods}
        mem: dict[str, tuple[float, float]] = {}
        tasks: dict[str, int] = {}
        results: dict[str, np.ndarray] = {}
        for _ in range(reps):
            for name, make in methods.items():
                graph = make()
                tasks[name] = len(graph.__dask_graph__())
                client.run(lambda: __import__("gc").collect())
                with MemorySampler(client) as ms:
                    t0 = time.perf_counter()
                    res = graph.compute()
                    times[name].append(time.perf_counter() - t0)
                p, s = mem.get(name, (0.0, 0.0))
                mem[name] = (max(p, ms.peak), max(s, ms.spilled))
                results[name] = np.asarray(res)[:HEAD]
        # softmax: one graph into a null sink, and two computes (state, then map)
        sm: dict[str, tuple[float, float, float]] = {}
        for name in ("one graph", "two computes"):
            with MemorySampler(client) as ms:
                t0 = time.perf_counter()
                if name == "one graph":
                    da.store(sk.softmax(x), NullSink(), lock=False)
                else:
                    st = sk.LogSumExpState.from_block(x).compute()
                    da.store(st.softmax(x), NullSink(), lock=False)
                sm[name] = (time.perf_counter() - t0, ms.peak, ms.spilled)
        head = x[:HEAD].compute()
    ref_native = sk.logsumexp(head)
    # the longdouble reference in batches of rows (it holds several copies of them)
    exact = np.concatenate(
        [
            _reference.logsumexp_ref(_reference.reference(head[i : i + 25]))
            for i in range(0, HEAD, 25)
        ]
    )
    size = rows * n * 4 / GB
    lines += [
        f"### Dask: {size:.1f} GB of float32 on 2 workers x 1.5 GB "
        f"({size / 3.0:.1f}x the cluster's memory)",
        "",
        f"`{rows} x {n}` float32, chunks `{chunks[0]} x {chunks[1]}` "
        f"({chunks[0] * chunks[1] * 4 / 1e6:.0f} MB, {n // chunks[1]} along the class axis), "
        "generated lazily; reduction over the class axis. Median of "
        f"{reps} interleaved rounds; memory is the largest worker memory the scheduler "
        "reported (sampled every 0.25 s), spill the most bytes on disk. Accuracy over the "
        f"first {HEAD} rows: equal bits to the native NumPy kernel, and the largest error in "
        "float32 ulps against a longdouble reference exact to far below them.",
        "",
        "| method | time | vs softmaxkit | peak worker memory | spilled | tasks "
        "| = native kernel | max ulp | results off by >= 0.5 ulp |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = statistics.median(times["softmaxkit `logsumexp` (state tree)"])
    for name in methods:
        t = statistics.median(times[name])
        r = results[name].astype(np.float32)
        eq = float(np.mean(r == ref_native)) * 100
        err = _reference.ulp_error(r, exact)
        off = float(np.mean(err > 0.5)) * 100
        p, s = mem[name]
        lines.append(
            f"| {name} | {t:.1f} s | {t / base:.2f}x | {p / GB:.2f} GB | {s / GB:.2f} GB "
            f"| {tasks[name]} | {eq:.1f}% | {err.max():.2f} | {off:.1f}% |"
        )
    lines += [
        "",
        "softmax of the same array, written to a null sink (output as large as the input):",
        "",
        "| softmax | time | peak worker memory | spilled |",
        "|---|---|---|---|",
    ]
    for name, (t, p, s) in sm.items():
        what = (
            "`sk.softmax(x)`, one graph (state tree and map)"
            if name == "one graph"
            else "`LogSumExpState.from_block(x).compute()`, then `st.softmax(x)`"
        )
        lines.append(f"| {what} | {t:.1f} s | {p / GB:.2f} GB | {s / GB:.2f} GB |")
    lines.append("")


def merge_part(lines: list[str]) -> None:
    rng = np.random.default_rng(11)
    n = 1_000_000
    x = (rng.standard_normal((4, n)) * 4).astype(np.float32)
    exact = _reference.logsumexp_ref(_reference.reference(x))
    blocks = np.array_split(np.arange(n), 64)
    ours = sk.merge_all(sk.LogSumExpState.from_block(x[:, b]) for b in blocks).logsumexp()
    m = np.stack([x[:, b].max(axis=1).astype(np.float64) for b in blocks], 1)
    d = np.stack(
        [np.exp(x[:, b].astype(np.float64) - m[:, i : i + 1]).sum(1) for i, b in enumerate(blocks)],
        1,
    )
    M = m.max(1)
    maxsum = (M + np.log((d * np.exp(m - M[:, None])).sum(1))).astype(np.float32)
    lae = np.logaddexp.reduce(x, axis=1)
    lse_blocks = np.stack([sk.logsumexp(x[:, b]) for b in blocks], 1)
    lae_blocks = np.logaddexp.reduce(lse_blocks, axis=1)

    def u(v: np.ndarray) -> str:
        return f"{_reference.ulp_error(np.asarray(v, np.float32), exact).max():.2f}"

    # the dominant logit: V = 32000, target 10, the others near -50, 8 blocks
    y = (-50.0 + rng.uniform(-1.0, 1.0, (1, 32000)) + 0.33).astype(np.float32)
    y[0, 1234] = 10.0
    t = np.array([1234])
    cuts = range(0, 32000, 4000)
    st = sk.merge_all(
        sk.LogSumExpState.from_block(y[:, a : a + 4000], target=t, offset=a) for a in cuts
    )
    loss_ours = float(st.cross_entropy()[0])
    ym = np.array([float(y[0, a : a + 4000].max()) for a in cuts])
    yd = np.array(
        [np.exp(y[0, a : a + 4000].astype(np.float64) - ym[i]).sum() for i, a in enumerate(cuts)]
    )
    YM = ym.max()
    loss_maxsum = float(YM + np.log(np.sum(yd * np.exp(ym - YM)))) - 10.0
    loss_lae = (
        float(
            np.logaddexp.reduce(
                [float(sk.logsumexp(y[:, a : a + 4000].astype(np.float64))[0]) for a in cuts]
            )
        )
        - 10.0
    )
    loss_native = float(sk.cross_entropy(y, t, reduction="none")[0])
    lines += [
        "### Merging logsumexp states: accuracy",
        "",
        f"Four rows of {n:,} float32 logits (normal, sd 4): the largest error in float32 ulps "
        "against the exact value.",
        "",
        "| method | max ulp |",
        "|---|---|",
        f"| (max, count, sum) state, 64 blocks merged (`sk.merge_all`) | {u(ours)} |",
        f"| (max, sum) pairs in float64, 64 blocks | {u(maxsum)} |",
        f"| `np.logaddexp.reduce` over the 1e6 float32 values | {u(lae)} |",
        f"| `np.logaddexp.reduce` over 64 block logsumexps (float32) | {u(lae_blocks)} |",
        f"| `sk.logsumexp` in one call | {u(sk.logsumexp(x))} |",
        "",
        "A dominant logit (V = 32000, target logit 10, the others near -50), 8 blocks: "
        "the cross-entropy loss.",
        "",
        "| method | loss |",
        "|---|---|",
        f"| (max, count, sum) state merged | {loss_ours:.6e} |",
        f"| `sk.cross_entropy` in one call | {loss_native:.6e} |",
        f"| (max, sum) pairs merged in float64 | {loss_maxsum:.6e} |",
        f"| block logsumexps merged with `np.logaddexp` (float64) | {loss_lae:.6e} |",
        "",
    ]


def section(reps: int, quick: bool, rows: int | None = None, with_before: bool = True) -> str:
    import dask
    import distributed
    import scipy

    n = 200_000
    if rows is None:
        rows = 800 if quick else 5000
    load = Path("/proc/loadavg").read_text().split()[0]
    from softmaxkit import _dispatch

    lines = [
        "## Dask and the mergeable state",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"softmaxkit kernels `{_dispatch._ckernels.isa() if _dispatch._ckernels else 'none'}`; "
        f"dask {dask.__version__}, distributed {distributed.__version__}, "
        f"scipy {scipy.__version__}, numpy {np.__version__}; load average at start {load} "
        "(other jobs shared the machine: timings are indicative).",
        "",
    ]
    cluster_part(rows, n, reps, lines, with_before)
    merge_part(lines)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="also write the Markdown here")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="a 0.6 GB array (smoke run)")
    ap.add_argument("--rows", type=int, help="rows of 200000 float32 (default 5000: 4 GB)")
    ap.add_argument(
        "--no-before", action="store_true", help="skip softmaxkit's previous (slow) graph"
    )
    args = ap.parse_args(argv)
    text = section(min(args.reps, 3), args.quick, args.rows, not args.no_before)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
