#!/bin/sh
# Instructions per element of one kbench call, counted by callgrind (repeatable on a
# shared machine): tools/kcount.sh OP DTYPE MODE ROWS N. Subtracts a zero-row run's count.
set -e
here=$(cd "$(dirname "$0")" && pwd)
"$here/kbench.sh" "$1" "$2" "$3" 1 1 1 1 >/dev/null
ir() {
  f=$(mktemp)
  KBENCH_WRAP="valgrind --tool=callgrind --callgrind-out-file=$f" "$here/kbench.sh" "$@" >/dev/null 2>&1
  callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
  rm -f "$f"
}
a=$(ir "$1" "$2" "$3" "$4" "$5" 1 1)
b=$(ir "$1" "$2" "$3" "$4" "$5" 1 2)
echo "$1 $2 $3 $4x$5: $(echo "($b - $a) / ($4 * $5)" | bc -l | cut -c1-6) instructions/elem"
