"""Write BENCHMARKS.md: softmaxkit against numpy, scipy, torch and jax on this machine.

    make bench                    # the full run (about 30-45 minutes)
    python benchmarks/run.py --quick --output /tmp/b.md   # a smoke run

Two parts, one file: the core ops on NumPy arrays (engine: softmaxkit._bench, shared
with the ``softmaxkit bench`` command), then, when torch is installed, softmaxkit.torch
against torch (benchmarks/torch_bench.py: the ops as autograd calls and the linear +
cross-entropy time and memory table). Run it with OPENBLAS_CORETYPE unset (``make
bench`` does), on a quiet machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
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
    ap.add_argument("--no-torch", action="store_true", help="skip the softmaxkit.torch part")
    ap.add_argument(
        "--no-lce", action="store_true", help="skip the linear + cross-entropy table (~10 min)"
    )
    ap.add_argument(
        "--render",
        metavar="JSON",
        help="only re-render the Markdown from the raw results a full run saved",
    )
    args = ap.parse_args(argv)
    output = Path(args.output)
    raw = output.with_name(output.stem + "-raw.json")
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        text = _bench.format_markdown(_bench.report_from_json(saved["core"]))
        if saved.get("torch_markdown"):
            text += "\n\n" + saved["torch_markdown"]
        output.write_text(text + "\n")
        print(f"wrote {output}")
        return 0
    report = _bench.run(lambda msg: print(msg, flush=True), quick=args.quick, repeats=args.repeats)
    text = _bench.format_markdown(report)
    torch_md = ""
    if not args.no_torch and importlib.util.find_spec("torch") is not None:
        # in a fresh process: the first part leaves JAX's thread pool and a heap full of
        # freed gigabyte arrays behind, which should not weigh on the torch timings
        print("softmaxkit.torch vs torch ...", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            part = Path(tmp) / "torch.md"
            cmd = [sys.executable, str(Path(__file__).resolve().parent / "torch_bench.py")]
            cmd += ["--reps", str(args.repeats), "--out", str(part)]
            if args.quick:
                cmd += ["--quick", "--no-lce"]
            elif args.no_lce:
                cmd += ["--no-lce"]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            torch_md = part.read_text()
            text += "\n\n" + torch_md
    saved = {"core": _bench.report_to_json(report), "torch_markdown": torch_md}
    raw.write_text(json.dumps(saved, indent=1) + "\n")
    Path(args.output).write_text(text + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
