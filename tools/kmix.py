"""The dynamic instruction mix of one kbench call, per element, and its pipe counts.

Usage: ``python tools/kmix.py OP DTYPE MODE ROWS N`` (as ``tools/kbench.sh``; one
thread). Runs the call three times under callgrind with per-instruction counts,
keeps the instructions of softmaxkit's own functions (the engine's loops and the
driver), and prints per element: the instructions of each function, the mnemonics,
and for the AVX2 engine on AMD Zen 3 the uops per 16 elements on the two FMA pipes
(fused multiply-adds, products, conversions, 128-bit extracts and inserts, variable
blends and permutes, which were measured to share them) and on the two adders (adds
and subtractions): the counts ``benchmarks/_portfloor.py`` sets against the measured
time per FMA-pipe uop. Needs valgrind and objdump.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPS = 3

# one uop on an FMA pipe each (AMD Zen 3, measured: 4 of each beside 8 independent
# FMAs add about 2 cycles); vpermd/vpermps take two
FMA_PIPE = re.compile(
    r"^v(fn?m(add|sub)\d+[ps][sd]|mul[ps][sd]|cvt(ps2pd|pd2ps|dq2p[sd]|tp[sd]2dq|p[sd]2dq)|"
    r"extract[fi]128|insert[fi]128|p?blendv(b|p[sd])|permil|unpck|shufp)"
)
FMA_PIPE_2 = re.compile(r"^vperm(d|ps|pd|q)$")
ADDERS = re.compile(r"^v(add|sub)[ps][sd]$")
SKIP = ("main", "random", "rand", "__", "_dl", "do_lookup", "msort", "strcmp", "0x")


def _dynamic(args: list[str], out: str) -> collections.Counter[tuple[str, int]]:
    env = dict(
        os.environ,
        KBENCH_WRAP=f"valgrind --tool=callgrind --dump-instr=yes --callgrind-out-file={out}",
    )
    subprocess.run(
        [str(HERE / "kbench.sh"), *args, "1", str(REPS)], env=env, check=True, capture_output=True
    )
    cnt: collections.Counter[tuple[str, int]] = collections.Counter()
    names: dict[str, str] = {}
    fn, addr, skip_next = "", 0, False

    def pos(tok: str) -> int:
        if tok == "*":
            return addr
        if tok[0] in "+-":
            return addr + int(tok, 0)
        return int(tok, 0)

    for raw in Path(out).read_text().splitlines():
        m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", raw)
        if m:
            if m.group(3):
                names[m.group(2)] = m.group(3)
            if m.group(1) == "fn":
                fn = names.get(m.group(2), "")
            continue
        if raw.startswith("calls="):
            skip_next = True  # the next line is the call's inclusive cost
            continue
        if not raw or raw[0] not in "+-*0123456789":
            continue
        parts = raw.split()
        addr = pos(parts[0])
        if skip_next:
            skip_next = False
            continue
        if len(parts) >= 3:
            cnt[(fn, addr)] += int(parts[2])
    return cnt


def main() -> None:
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    op, dtype, mode, rows, n = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        cnt = _dynamic([op, dtype, mode, rows, n], f"{tmp}/cg.out")
    binary = Path(os.environ.get("KBENCH_DIR", "/tmp/skit-kbench")) / "kbench"
    dis: dict[int, str] = {}
    listing = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(binary)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in listing.splitlines():
        cols = line.split("\t")
        try:
            a = int(cols[0].strip().rstrip(":"), 16)
        except ValueError:
            continue
        if len(cols) > 1:
            dis[a] = cols[1].split()[0] if cols[1].split() else ""
    els = REPS * int(rows) * int(n)
    mix: collections.Counter[str] = collections.Counter()
    per_fn: collections.Counter[str] = collections.Counter()
    for (fn, a), c in cnt.items():
        if not fn or fn.startswith(SKIP) or a not in dis:
            continue
        mix[dis[a]] += c
        per_fn[fn] += c
    total = sum(mix.values())
    print(f"{op} {dtype} {mode} {rows}x{n}: {total / els:.3f} instructions/elem")
    for fn, c in per_fn.most_common(6):
        print(f"  {fn}: {c / els:.3f}")
    print(
        "  mnemonics/elem: "
        + ", ".join(f"{k} {v / els:.3f}" for k, v in mix.most_common() if v / els >= 0.01)
    )
    fma = sum(v for k, v in mix.items() if FMA_PIPE.match(k)) + 2 * sum(
        v for k, v in mix.items() if FMA_PIPE_2.match(k)
    )
    add = sum(v for k, v in mix.items() if ADDERS.match(k))
    print(f"  per 16 elements: FMA pipes {16 * fma / els:.1f}, adders {16 * add / els:.1f}")


if __name__ == "__main__":
    main()
