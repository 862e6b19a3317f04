"""The C core builds for the other instruction sets it claims: aarch64 (NEON) and none.

The x86-64 engines are exercised by the native tests on this machine. The NEON engine
and the plain-C fallback cannot run here, but they must at least compile without a
warning and link into a shared library with nothing undefined beyond libc, libm and
pthreads, so that a wheel built on such a machine works. These tests compile the same
sources the meson build compiles.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parent.parent / "src" / "softmaxkit" / "_csrc"
SOURCES = ["engines.c", "driver.c", "skit_dd.c"]
FLAGS = ["-std=c17", "-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=fast", "-fPIC"]


def _build(cc: str, tmp_path: Path, extra: list[str]) -> Path:
    lib = tmp_path / "libskit.so"
    cmd = [cc, *FLAGS, *extra, *(str(CSRC / s) for s in SOURCES)]
    cmd += ["-shared", "-Wl,--no-undefined", "-o", str(lib), "-lm", "-lpthread"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    return lib


def _strings(lib: Path) -> str:
    return lib.read_bytes().decode("latin-1")


AARCH64_CC = shutil.which("aarch64-linux-gnu-gcc")


@pytest.mark.skipif(
    AARCH64_CC is None,
    reason="no aarch64 cross compiler (Debian: apt install gcc-aarch64-linux-gnu)",
)
def test_core_builds_for_aarch64_with_neon(tmp_path: Path) -> None:
    assert AARCH64_CC is not None
    lib = _build(AARCH64_CC, tmp_path, [])
    head = lib.read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64
    assert "neon" in _strings(lib)


CC = shutil.which("cc") or shutil.which("gcc")


@pytest.mark.skipif(CC is None, reason="no C compiler on PATH")
def test_engines_compile_as_the_plain_c_fallback(tmp_path: Path) -> None:
    """The engine for other CPUs (generic vector types only), built by hiding the ISA macros.

    Only the engines: on x86-64 the driver also refers to the AVX2/AVX-512 builds.
    """
    assert CC is not None
    hide = ["__SSE2__", "__AVX__", "__AVX2__", "__AVX512F__", "__FMA__", "__aarch64__"]
    obj = tmp_path / "engines.o"
    cmd = [CC, *FLAGS, *(f"-U{m}" for m in hide), "-c", str(CSRC / "engines.c"), "-o", str(obj)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    text = _strings(obj)
    assert "scalar" in text and "skit_table_base" in text
