#!/usr/bin/env bash
# One prepared GPU session (a CUDA machine with torch, triton, jax and cupy installed):
# build the C core for this machine's Python, run tests/test_gpu.py, then the GPU
# benchmark. Everything it writes goes to $OUT (default /tmp/softmaxkit-gpu):
#   device.txt     the GPU, driver and package versions
#   build.log      the meson/ninja build of the C core
#   test_gpu.log   pytest tests/test_gpu.py
#   gpu.md         the gpu section of BENCHMARKS.md (benchmarks/gpu_bench.py --out)
#   bench.log      the benchmark's own output
#   extra_tests.log  EXTRA_TESTS (test files run with JAX_PLATFORMS=cpu), when set
#   probe.log      tools/gpu_probe.py, when PROBE names its parts ("sweep profile cupy header")
# Usage, from the repository root: [PROBE=...] [BENCH=0] tools/gpu_check.sh [--quick]
# Missing pure-Python dependencies (array-api-compat) can be put in .whl/ as wheels.
set -u
OUT=${OUT:-/tmp/softmaxkit-gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
QUICK=${1:-}

if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/skdeps .whl/*.whl && export PYTHONPATH=/tmp/skdeps
fi
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    $PY - <<'PY'
import platform, importlib
print("python", platform.python_version())
for m in ("numpy", "torch", "triton", "jax", "jaxlib", "cupy", "array_api_compat"):
    try:
        print(m, importlib.import_module(m).__version__)
    except Exception as e:  # report, do not stop
        print(m, "unavailable:", e)
PY
} >"$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

t0=$(date +%s)
rm -rf /tmp/skbuild
if ! { $PY -m mesonbuild.mesonmain setup /tmp/skbuild --buildtype=release \
        && ninja -C /tmp/skbuild; } >"$OUT/build.log" 2>&1; then
    echo "build with the XLA FFI handlers failed; retrying without them" | tee -a "$OUT/build.log"
    rm -rf /tmp/skbuild
    { $PY -m mesonbuild.mesonmain setup /tmp/skbuild --buildtype=release -Dxla_ffi=disabled \
        && ninja -C /tmp/skbuild; } >>"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
fi
cp /tmp/skbuild/src/softmaxkit/_ckernels*.so src/softmaxkit/
echo "build: $(( $(date +%s) - t0 )) s"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"

t0=$(date +%s)
timeout "${TEST_TIMEOUT:-240}" $PY -m pytest tests/test_gpu.py -q -p no:cacheprovider -rA \
    >"$OUT/test_gpu.log" 2>&1
echo "tests: rc=$? in $(( $(date +%s) - t0 )) s"
grep -E "passed|failed|error" "$OUT/test_gpu.log" | tail -3
grep -E "^(FAILED|ERROR)" "$OUT/test_gpu.log" | head -20

if [ -n "${EXTRA_TESTS:-}" ]; then  # more test files, JAX on the CPU (the XLA FFI handlers)
    t0=$(date +%s)
    JAX_PLATFORMS=cpu timeout 150 $PY -m pytest $EXTRA_TESTS -q -p no:cacheprovider \
        >"$OUT/extra_tests.log" 2>&1
    echo "extra tests: rc=$? in $(( $(date +%s) - t0 )) s"
    tail -3 "$OUT/extra_tests.log"
fi
if [ -n "${PROBE:-}" ]; then
    t0=$(date +%s)
    timeout "${PROBE_TIMEOUT:-240}" $PY tools/gpu_probe.py "$OUT" $PROBE >"$OUT/probe.log" 2>&1
    echo "probe: rc=$? in $(( $(date +%s) - t0 )) s"
fi
[ "${BENCH:-1}" = 0 ] && exit 0
t0=$(date +%s)
timeout "${BENCH_TIMEOUT:-270}" $PY benchmarks/gpu_bench.py --out "$OUT/gpu.md" $QUICK \
    >"$OUT/bench.log" 2>&1
echo "bench: rc=$? in $(( $(date +%s) - t0 )) s"
tail -60 "$OUT/bench.log"
