"""Every Triton kernel compiled for sm_80 and sm_90 on the CPU, and its code linted.

The pip ``triton`` wheel carries the NVIDIA toolchain (``ptxas``, ``cuobjdump``,
libdevice), so ``softmaxkit._triton._aot`` builds each kernel without a GPU or
driver. The test fails when

* an accurate-mode kernel contains an approximate single-precision instruction
  (``ex2.approx.f32``, ``lg2.approx``, ``rcp.approx.f32``, ``div.full.f32``, ...):
  the interpreter computes those exactly, so only the generated code can show
  that the GPU build keeps the 0.5-ulp contract;
* any kernel spills registers to local memory, or does not compile.

The fast-mode builds must contain ``ex2.approx.f32`` (what their documented error
bound assumes), which also shows that the lint finds such instructions. The
builds run in a child process (kernels defined under ``TRITON_INTERPRET=1``
cannot be compiled) and are cached in ``build/triton-cache``: about 45 s cold
on two cores, a few seconds warm.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# find_spec, not import: importing triton here, at collection, would define its own
# jitted functions before test_triton_kernels.py asks for the interpreter
if importlib.util.find_spec("triton") is None:
    pytest.skip("triton not installed: pip install softmaxkit[triton]", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "triton-cache"


@pytest.fixture(scope="module")
def reports() -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(CACHE)
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # launchers pass it per kernel
    CACHE.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        [sys.executable, "-m", "softmaxkit._triton._aot", "2"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    out: list[dict[str, Any]] = json.loads(res.stdout)
    return out


@pytest.mark.slow
def test_every_kernel_builds_for_both_architectures(reports: list[dict[str, Any]]) -> None:
    from softmaxkit._triton import _kernels

    built = {(r["kernel"], r["arch"], r["accurate"]) for r in reports}
    # the count and finish kernels of short cross-entropy batches are float64-only
    float64_only = {"ce_count_kernel", "ce_finish_kernel"}
    for name in _kernels.__all__:
        for arch in (80, 90):
            assert (name, arch, True) in built, (name, arch)
        assert name in float64_only or (name, 90, False) in built, name


@pytest.mark.slow
def test_accurate_kernels_have_no_approximate_instructions(
    reports: list[dict[str, Any]],
) -> None:
    bad = {r["label"]: r["forbidden"] for r in reports if r["accurate"] and r["forbidden"]}
    assert not bad


@pytest.mark.slow
def test_fast_kernels_use_the_approximate_exponential(reports: list[dict[str, Any]]) -> None:
    for r in reports:
        if not r["accurate"]:
            assert "ex2.approx.f32" in r["approx"], r["label"]
            assert r["forbidden"], r["label"]


@pytest.mark.slow
def test_no_kernel_spills_registers(reports: list[dict[str, Any]]) -> None:
    spills = {r["label"]: (r["local"], r["stack"]) for r in reports if r["local"] or r["stack"]}
    assert not spills
    assert all(0 < r["registers"] <= 255 for r in reports)
    # a program's warps must fit one SM's 64K registers, or the launch fails
    too_big = {
        r["label"]: r["registers"] * r["num_warps"] * 32
        for r in reports
        if r["registers"] * r["num_warps"] * 32 > 65536
    }
    assert not too_big
