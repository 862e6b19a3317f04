#!/bin/sh
# Build tools/kbench.c against the C core (same flags as meson.build) and run it.
# SOFTMAXKIT_ISA=sse2 pins the baseline engines. See tools/kbench.c.
set -e
here=$(cd "$(dirname "$0")" && pwd)
src=$here/../src/softmaxkit/_csrc
out=${KBENCH_DIR:-/tmp/skit-kbench}
mkdir -p "$out"
flags="-O3 -g -ffp-contract=fast -fno-strict-aliasing -std=c17"
if [ ! -x "$out/kbench" ] || [ -n "$(find "$src" "$here/kbench.c" -newer "$out/kbench" -name '*.[ch]')" ]; then
  cc $flags -c "$src/engines.c" -o "$out/base.o"
  cc $flags -mavx2 -mfma -DSKIT_TABLE=skit_table_avx2 -c "$src/engines.c" -o "$out/avx2.o"
  cc $flags -mavx512f -mavx512dq -mavx512vl -mavx2 -mfma -DSKIT_TABLE=skit_table_avx512 \
    -c "$src/engines.c" -o "$out/avx512.o"
  cc $flags -c "$src/driver.c" -o "$out/driver.o"
  cc $flags -c "$src/skit_dd.c" -o "$out/dd.o"
  cc $flags "$here/kbench.c" "$out"/base.o "$out"/avx2.o "$out"/avx512.o "$out"/driver.o \
    "$out"/dd.o -lpthread -lm -o "$out/kbench"
fi
exec ${KBENCH_WRAP:-} "$out/kbench" "$@"
