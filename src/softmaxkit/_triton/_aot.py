"""Compile the Triton kernels for NVIDIA GPUs without a GPU, and lint what comes out.

What this module is for: ahead-of-time builds of every kernel in
:mod:`._kernels` with the toolchain bundled in the pip ``triton`` wheel
(``triton.compile`` of an ``ASTSource`` for a ``GPUTarget``; ``ptxas`` and
``cuobjdump`` ship with it, no driver is needed), and two checks on the result:

* an accurate-mode kernel must contain no approximate single-precision
  instruction (``ex2.approx.f32``, ``lg2.approx``, ``rcp.approx.f32``,
  ``div.full.f32``, ...): those would break the 0.5-ulp contract on the GPU even
  though the interpreter (NumPy) computes them exactly. libdevice's float64
  routines seed with ``rcp.approx.ftz.f64`` and refine it, which is allowed;
* no kernel may spill registers (``LOCAL`` memory in ``cuobjdump -res-usage``).

It must never run a kernel and never be imported by the engine (it is a test
and maintenance tool). Run ``python -m softmaxkit._triton._aot`` to print the
report as JSON; set ``TRITON_CACHE_DIR`` to reuse builds between runs, and do not
set ``TRITON_INTERPRET`` (interpreted kernels cannot be compiled).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import _launch as L

__all__ = ["FORBIDDEN_ACCURATE", "Build", "builds", "check_all", "compile_one", "main"]

#: Approximate single/half-precision instructions; none may appear in accurate mode.
FORBIDDEN_ACCURATE = re.compile(
    r"\b(?:(?:ex2|lg2|rcp|rsqrt|sqrt|sin|cos|tanh|div)\.approx(?:\.ftz)?\.(?:f32|f16|bf16)"
    r"|div\.full(?:\.ftz)?\.f32)\b"
)
_ANY_APPROX = re.compile(r"\b(?:\w+\.approx(?:\.\w+)*|div\.full(?:\.\w+)*)")


@dataclass(frozen=True)
class Build:
    """One specialisation of one kernel for one GPU architecture."""

    kernel: str
    signature: tuple[tuple[str, str], ...]
    constexprs: tuple[tuple[str, Any], ...]
    num_warps: int
    arch: int

    @property
    def accurate(self) -> bool:
        return bool(dict(self.constexprs).get("ACCURATE", True))  # float64-only kernels

    @property
    def label(self) -> str:
        keys = ", ".join(f"{k}={v}" for k, v in self.constexprs)
        return f"{self.kernel}[{keys}] {self.signature[0][1][1:]} sm_{self.arch}"


def _norm(mode: int, block: int, one: bool, acc: bool, arch: int, dt: str = "fp32") -> Build:
    sig = (("X", f"*{dt}"), ("Y", f"*{dt}"), ("n", "i32"))
    cx = (("MODE", mode), ("BLOCK", block), ("ONE_BLOCK", one), ("ACCURATE", acc))
    return Build("norm_kernel", sig, cx, L.norm_warps(block, one, mode, acc), arch)


def _ce(block: int, one: bool, acc: bool, arch: int) -> Build:
    sig = (
        ("X", "*fp32"),
        ("T", "*i64"),
        ("Wt", "*fp64"),
        ("P", "*fp64"),
        ("S", "*fp64"),
        ("LOSS", "*fp64"),
        ("CNT", "*fp64"),
        ("G", "*fp32"),
        ("C", "i32"),
        ("ignore_index", "i64"),
    )
    cx = (
        ("HAS_W", True),
        ("HAS_EPS", True),
        ("HAS_Z", True),
        ("NEED_GRAD", True),
        ("BLOCK", block),
        ("ONE_BLOCK", one),
        ("ACCURATE", acc),
    )
    return Build("ce_kernel", sig, cx, L.warps_for(block), arch)


def _ce_small(arch: int) -> list[Build]:
    """The single-program count and finish kernels of short cross-entropy batches."""
    count = (
        ("T", "*i64"),
        ("Wt", "*fp64"),
        ("S", "*fp64"),
        ("N", "i32"),
        ("C", "i32"),
        ("ignore_index", "i64"),
    )
    finish = (
        ("ITEM", "*fp64"),
        ("CNT", "*fp64"),
        ("S", "*fp64"),
        ("OUT", "*bf16"),
        ("FLAGS", "*fp64"),
        ("N", "i32"),
    )
    return [
        Build(
            "ce_count_kernel", count, (("HAS_W", True), ("MEAN", True), ("BLOCK", 1024)), 4, arch
        ),
        Build("ce_finish_kernel", finish, (("REDUCE", 2), ("BLOCK", 1024)), 4, arch),
    ]


def _bce(acc: bool, arch: int) -> Build:
    sig = (
        ("X", "*fp32"),
        ("Yt", "*fp32"),
        ("Wb", "*fp32"),
        ("PW", "*fp32"),
        ("P", "*fp64"),
        ("LOSS", "*fp64"),
        ("G", "*fp32"),
        ("N", "i32"),
    )
    cx = (
        ("HAS_W", True),
        ("HAS_PW", True),
        ("NEED_GRAD", True),
        ("BLOCK", 1024),
        ("ACCURATE", acc),
    )
    return Build("bce_kernel", sig, cx, L.warps_for(L.ELEM_BLOCK), arch)


def _lce(name: str, acc: bool, arch: int) -> Build:
    sig: tuple[tuple[str, str], ...] = (("Z", "*fp32"), ("T", "*i64"), ("S", "*fp64"))
    if name == "lce_grad_kernel":
        sig += (("R", "*fp64"),)
    sig += (("v0", "i32"), ("v1", "i32"), ("ld", "i32"))
    block = L.LOOP_BLOCK["accurate" if acc else "fast"]
    return Build(name, sig, (("BLOCK", block), ("ACCURATE", acc)), L.warps_for(block), arch)


def builds(archs: tuple[int, ...] = (80, 90), fast_archs: tuple[int, ...] = (90,)) -> list[Build]:
    """Every kernel, in the specialisations the launchers use with the most code in them.

    Accurate mode is built for every architecture in ``archs``, fast mode for
    ``fast_archs`` (its instructions do not depend on the architecture; the
    build checks its registers). Block sizes are the launchers' defaults.
    """
    out: list[Build] = []
    for acc, targets in ((True, archs), (False, fast_archs)):
        prec = "accurate" if acc else "fast"
        one_max, ce_max, loop = L.ONE_BLOCK_MAX[prec], L.CE_ONE_BLOCK_MAX[prec], L.LOOP_BLOCK[prec]
        for arch in targets:
            out += [
                _norm(0, one_max, True, acc, arch),
                _norm(1, loop, False, acc, arch),
                _norm(2, one_max, True, acc, arch),
                _ce(ce_max, True, acc, arch),
                _ce(loop, False, acc, arch),
                _bce(acc, arch),
                _lce("lce_stats_kernel", acc, arch),
                _lce("lce_grad_kernel", acc, arch),
            ]
            if acc:
                out += _ce_small(arch)
            if acc:  # 4096-element register rows launch with fewer warps (norm_warps)
                out += [_norm(0, 4096, True, acc, arch), _norm(1, 4096, True, acc, arch)]
            if acc:  # the bfloat16 store: rounding to odd, then to nearest even on the bits
                out.append(_norm(1, one_max, True, acc, arch, "bf16"))
    return out


def _tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def compile_one(b: Build) -> dict[str, Any]:
    """Compile one build; return its label, registers, spills and approximate instructions."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from . import _kernels as K

    fn = getattr(K, b.kernel)
    sig: dict[str, str] = dict(b.signature)
    sig.update({k: "constexpr" for k, _ in b.constexprs})
    src = ASTSource(fn, sig, constexprs=dict(b.constexprs))
    ck = triton.compile(
        src,
        target=GPUTarget("cuda", b.arch, 32),
        options={"num_warps": b.num_warps, "enable_fp_fusion": not b.accurate},
    )
    ptx: str = ck.asm["ptx"]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "k.cubin"
        path.write_bytes(ck.asm["cubin"])
        res = subprocess.run(
            [_tool("cuobjdump"), "-res-usage", str(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    usage = dict(re.findall(r"\b(REG|STACK|LOCAL|SHARED):(\d+)", res))
    return {
        **asdict(b),
        "label": b.label,
        "accurate": b.accurate,
        "registers": int(usage.get("REG", -1)),
        "stack": int(usage.get("STACK", -1)),
        "local": int(usage.get("LOCAL", -1)),
        "approx": sorted(set(_ANY_APPROX.findall(ptx))),
        "forbidden": sorted(set(FORBIDDEN_ACCURATE.findall(ptx))),
        "ptx_lines": ptx.count("\n"),
    }


def check_all(workers: int = 2) -> list[dict[str, Any]]:
    """Compile every build (``workers`` processes) and return the reports."""
    bs = builds()
    if workers <= 1:
        return [compile_one(b) for b in bs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(compile_one, bs))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("unset TRITON_INTERPRET: interpreted kernels cannot be compiled", file=sys.stderr)
        return 2
    workers = int(args[0]) if args else 2
    print(json.dumps(check_all(workers), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
