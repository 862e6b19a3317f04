"""Run the native-kernel tests against a C core built with AddressSanitizer + UBSan.

Usage: ``python tools/run_sanitized.py BUILD_DIR [pytest args...]`` where
BUILD_DIR is a meson build of this project configured with
``-Db_sanitize=address,undefined`` (``make sanitize`` does both steps).

The tests run twice: on the engines this CPU selects, then on the portable
baseline engines (``SOFTMAXKIT_ISA=sse2``). The sanitized extension is staged next
to a copy of the pure-Python sources in a temporary package directory that shadows
the editable install, and the tests run in a child process with the ASan runtime
preloaded (the Python interpreter itself is not instrumented). Any finding aborts
the process, so the run fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# test_xla_ffi_abi.py drives the XLA FFI handlers through their C ABI without JAX:
# jaxlib's compiler aborts with the sanitizer runtime preloaded, so JAX itself cannot run here.
TESTS = [
    "tests/test_native.py",
    "tests/test_native_accuracy.py",
    "tests/test_xla_ffi_abi.py",
    "tests/test_state.py",
    "tests/test_native_parts.py",
    "tests/test_smoothing.py",  # the label-smoothing C calls from NumPy (no torch)
    "tests/test_outputs.py",  # the output cache's memory handler (_outcache)
    "tests/test_prob_targets.py",  # probability targets: skit_prob_ce, skit_one_hot
]

CHILD = """
import sys
# drop the editable install's import hook so the staged package is the one imported
sys.meta_path[:] = [f for f in sys.meta_path if "Mesonpy" not in type(f).__name__]
sys.path.insert(0, {stage!r})
import softmaxkit, softmaxkit._ckernels as k
assert softmaxkit.__file__.startswith({stage!r}), softmaxkit.__file__
print("sanitized C core:", k.__file__, "isa", k.isa(), flush=True)
import pytest
sys.exit(pytest.main({args!r}))
"""


def runtime(name: str) -> str:
    cc = os.environ.get("CC", "cc")
    out = subprocess.run([cc, f"-print-file-name={name}"], capture_output=True, text=True)
    path = out.stdout.strip()
    if not path or not Path(path).exists():
        sys.exit(f"cannot find the sanitizer runtime {name} (asked {cc})")
    return path


def main() -> int:
    build = Path(sys.argv[1]).resolve()
    extra = sys.argv[2:]
    so = sorted((build / "src" / "softmaxkit").glob("_ckernels*.so"))
    if not so:
        sys.exit(f"no sanitized _ckernels module under {build}; run `make sanitize`")
    with tempfile.TemporaryDirectory(prefix="skit-asan-") as tmp:
        pkg = Path(tmp) / "softmaxkit"
        shutil.copytree(
            ROOT / "src" / "softmaxkit", pkg, ignore=shutil.ignore_patterns("_csrc", "*.build")
        )
        shutil.copy2(so[0], pkg / so[0].name)
        for extra_so in (build / "src" / "softmaxkit").glob("_outcache*.so"):
            shutil.copy2(extra_so, pkg / extra_so.name)
        env = dict(os.environ)
        env["LD_PRELOAD"] = runtime("libasan.so")
        env["ASAN_OPTIONS"] = "detect_leaks=0:halt_on_error=1:abort_on_error=1"
        env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
        env["SOFTMAXKIT_SANITIZED"] = "1"
        # the C core is what is sanitized, and it serves NumPy arrays; jaxlib's compiler
        # aborts under the sanitizer runtime, so backend-parametrised tests run on NumPy
        env["SOFTMAXKIT_TEST_BACKENDS"] = "numpy"
        args = ["-q", "-p", "no:cacheprovider", *TESTS, *extra]
        code = CHILD.format(stage=tmp, args=args)
        status = subprocess.call([sys.executable, "-c", code], cwd=ROOT, env=env)
        if status == 0 and not extra:
            # once more on the portable engines (baseline x86-64 / SSE2), which this
            # CPU would otherwise not run outside the instruction-set test
            env["SOFTMAXKIT_ISA"] = "sse2"
            status = subprocess.call([sys.executable, "-c", code], cwd=ROOT, env=env)
        return status


if __name__ == "__main__":
    sys.exit(main())
