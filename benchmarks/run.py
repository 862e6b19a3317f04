"""Write BENCHMARKS.md: softmaxkit against numpy, scipy, torch and jax on this machine.

    make bench                    # the full run (about 15-30 minutes)
    python benchmarks/run.py --quick --output /tmp/b.md   # a smoke run

The engine is softmaxkit._bench (shared with the ``softmaxkit bench`` command).
Run it with OPENBLAS_CORETYPE unset (``make bench`` does), on a quiet machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from softmaxkit import _bench


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--output", default=str(Path(__file__).resolve().parent.parent / "BENCHMARKS.md")
    )
    ap.add_argument("--quick", action="store_true", help="shapes divided by 64 (smoke run)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    report = _bench.run(lambda msg: print(msg, flush=True), quick=args.quick, repeats=args.repeats)
    text = _bench.format_markdown(report)
    Path(args.output).write_text(text + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
