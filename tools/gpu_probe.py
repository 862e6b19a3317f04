"""Diagnostics for one GPU session: what the benchmark alone does not say.

Run on a CUDA machine from the repository root (after the C core is built, as
``tools/gpu_check.sh`` does)::

    python tools/gpu_probe.py OUTDIR [sweep] [profile] [cupy] [header]

* ``sweep``: the accurate normalizer kernels over their launch parameters
  (warps, two-pass block, per-element division or one reciprocal per row),
  each against a device copy of the same bytes and torch, CUDA-event medians;
* ``profile``: where the host time of one small ``softmaxkit.torch`` call goes
  (cProfile over many calls, and the number of kernels each call launches);
* ``cupy``: the array-agnostic engine on CuPy against the exact reference,
  worst element and whether CuPy's float64 -> float32 cast keeps subnormals;
* ``header``: copies jaxlib's XLA FFI C header next to the results.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import shutil
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any


def _times(fns: dict[str, Callable[[], Any]], reps: int = 15) -> dict[str, float]:
    """CUDA-event medians of interleaved rounds: the benchmark's own timing loop."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import gpu_bench

    return gpu_bench._times(fns, reps)


def _sweep_shape(M: int, N: int, blocks: list[int | None], warps: tuple[int, ...]) -> None:
    import torch

    from softmaxkit._triton import _launch as E

    x = torch.randn(M, N, device="cuda") * 4
    y = torch.empty_like(x)
    fns: dict[str, Callable[[], Any]] = {
        "copy": lambda: y.copy_(x),
        "torch softmax": lambda: torch.softmax(x, 1),
        "torch log_softmax": lambda: torch.log_softmax(x, 1),
        "fast softmax (default launch)": lambda: E.softmax(x, [1], precision="fast"),
        "accurate softmax (default launch)": lambda: E.softmax(x, [1]),
        "accurate log_softmax (default launch)": lambda: E.log_softmax(x, [1]),
    }
    for blk in blocks:
        for w in warps:
            for op in ("softmax", "log_softmax"):
                f = getattr(E, op)
                fns[f"{op} block={blk} warps={w}"] = partial(f, x, [1], block=blk, warps=w)
    ms = _times(fns)
    print(f"\n## sweep {M}x{N} float32 (ms, of copy)")
    for k, v in sorted(ms.items(), key=lambda kv: kv[1]):
        print(f"{v:8.3f}  {ms['copy'] / v:5.0%}  {k}")


def _sweep_ce(M: int, C: int, warps: tuple[int, ...]) -> None:
    import torch
    import torch.nn.functional as F

    from softmaxkit._triton import _launch as E

    x = torch.randn(M, C, device="cuda") * 4
    t = torch.randint(0, C, (M,), device="cuda")
    args = (x, t, None, 1, -100, "mean", 0.0, 0.0, False, True)

    def torch_ce() -> None:
        xr = x.detach().requires_grad_()
        F.cross_entropy(xr, t).backward()

    fns: dict[str, Callable[[], Any]] = {
        "torch fwd+bwd": torch_ce,
        "fast (default launch)": partial(E.cross_entropy, *args, precision="fast"),
        "accurate (default launch)": partial(E.cross_entropy, *args),
    }
    for w in warps:
        fns[f"accurate warps={w}"] = partial(E.cross_entropy, *args, warps=w)
    ms = _times(fns)
    print(f"\n## sweep cross-entropy {M}x{C} float32 (ms, vs torch)")
    for k, v in sorted(ms.items(), key=lambda kv: kv[1]):
        print(f"{v:8.3f}  {ms['torch fwd+bwd'] / v:5.2f}x  {k}")


def sweep() -> None:
    import torch

    shapes: list[tuple[int, int, list[int | None], tuple[int, ...]]] = [
        (65536, 128, [None], (1, 2, 4)),
        (8192, 1000, [None], (1, 2, 4)),
        (32768, 2048, [None], (2, 4, 8)),
        (16384, 8192, [None], (8, 16)),
        (16384, 32768, [2048], (2, 4)),
    ]
    for M, N, blocks, warps in shapes:
        _sweep_shape(M, N, blocks, warps)
        torch.cuda.empty_cache()
    for M, C in ((32768, 4096), (8192, 32000), (256, 1000)):
        _sweep_ce(M, C, (2, 4, 8, 16))
        torch.cuda.empty_cache()


def profile() -> None:
    import torch
    import torch.nn.functional as F

    import softmaxkit.torch as skt

    x = torch.randn(32, 10, device="cuda")
    t = torch.randint(0, 10, (32,), device="cuda")

    def ce_skt() -> None:
        xr = x.detach().requires_grad_()
        skt.cross_entropy(xr, t).backward()

    def ce_torch() -> None:
        xr = x.detach().requires_grad_()
        F.cross_entropy(xr, t).backward()

    cases = {
        "skt.cross_entropy fwd+bwd": ce_skt,
        "F.cross_entropy fwd+bwd": ce_torch,
        "skt.softmax": lambda: skt.softmax(x, dim=1),
        "skt.log_softmax": lambda: skt.log_softmax(x, dim=1),
        "torch.softmax": lambda: torch.softmax(x, 1),
    }
    for name, fn in cases.items():
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
        import time

        t0 = time.perf_counter()
        for _ in range(200):
            fn()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) / 200 * 1e6
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        kernels = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        print(f"\n## {name}: {wall:.1f} us per call (wall, host-bound), {len(kernels)} GPU ops")
        for k in kernels:
            print("   ", k[:100])
        if name.startswith("skt"):
            pr = cProfile.Profile()
            pr.enable()
            for _ in range(200):
                fn()
            torch.cuda.synchronize()
            pr.disable()
            s = io.StringIO()
            pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(25)
            print(s.getvalue()[:6000])


def cupy_diag() -> None:
    import cupy as cp
    import numpy as np
    import torch

    import softmaxkit as sk
    from tests import _reference as R

    tiny = cp.asarray(np.array([1e-40, 3e-39, 1.5e-45], dtype=np.float64))
    print("\n## cupy float64 -> float32 of subnormals:", tiny.astype(cp.float32).get().tolist())
    print("   numpy:", np.array([1e-40, 3e-39, 1.5e-45]).astype(np.float32).tolist())
    a = cp.asarray(np.array([1e-30], dtype=np.float64))
    print("   cupy (1e-30 / 1e10) -> f32:", (a / 1e10).astype(cp.float32).get().tolist())
    g = torch.Generator().manual_seed(12)
    scale = torch.tensor([0.1, 1.0, 4.0, 12.0, 40.0, 1000.0]).repeat(8)[:48, None]
    x = (torch.randn(48, 4000, generator=g) * scale).numpy()
    for op in ("softmax", "log_softmax", "logsumexp"):
        got = cp.asnumpy(getattr(sk, op)(cp.asarray(x), axis=-1))
        ref = R.reference(x)
        fn = {"softmax": R.softmax_ref, "log_softmax": R.log_softmax_ref}.get(op, R.logsumexp_ref)
        ex = fn(ref)
        err = R.ulp_error(got, ex, np.float32)
        i = np.unravel_index(int(np.argmax(err)), err.shape)
        print(f"   {op}: max {err.max():.4g} ulp at {i}: got {got[i]!r} ref {float(ex[i])!r}")
        print(
            f"      elements > 0.505 ulp: {(err > 0.505).sum()}, of which ref < 1.2e-38: "
            f"{((err > 0.505) & (np.abs(ex.astype(np.float64)) < 1.2e-38)).sum()}"
        )


def header(out: Path) -> None:
    import jaxlib

    src = Path(jaxlib.__file__).parent / "include" / "xla" / "ffi" / "api" / "c_api.h"
    shutil.copy(src, out / "xla_ffi_c_api_jaxlib.h")
    print("\n## copied", src, "jaxlib", jaxlib.__version__)


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    what = set(sys.argv[2:]) or {"sweep", "profile", "cupy", "header"}
    for name, fn in (
        ("header", lambda: header(out)),
        ("cupy", cupy_diag),
        ("profile", profile),
        ("sweep", sweep),
    ):
        if name in what:
            try:
                fn()
            except Exception as exc:  # report and go on: one session, many probes
                print(f"\n## {name} failed: {exc!r}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
