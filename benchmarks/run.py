"""Write BENCHMARKS.md: softmaxkit against its peers on this machine, one part per front end.

    make bench                                   # every part (the core part alone is 30-45 min)
    python benchmarks/run.py --only torch        # re-measure one part, keep the others' results
    python benchmarks/run.py --render            # re-render BENCHMARKS.md from saved results
    python benchmarks/run.py --quick --output /tmp/b.md   # a smoke run

Each part measures ours and its peers in one process, one run, in interleaved rounds, and
reports medians and ratios. The core part (the ops on NumPy arrays, engine
``softmaxkit._bench``, shared with ``softmaxkit bench``) runs in this process; every
other part is a script in this folder run in a fresh process, which writes a Markdown
section. Each part's result is kept in ``benchmarks/results/`` (``core.json`` for the
core part, ``<part>.md`` for the others), so one part can be re-measured on its own and
BENCHMARKS.md is always the concatenation of the latest run of every part. Run it with
OPENBLAS_CORETYPE unset (``make bench`` does), on a quiet machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from softmaxkit import _bench

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


@dataclass(frozen=True)
class Part:
    """One section of BENCHMARKS.md: a script writing Markdown, and what it needs."""

    name: str
    script: str  # file in benchmarks/ taking --out FILE --reps N [--quick]
    needs: tuple[str, ...]  # importable modules; the part is skipped without them
    quick_args: tuple[str, ...] = ("--quick",)


# The order of the sections in BENCHMARKS.md (the core part always comes first).
PARTS: tuple[Part, ...] = (
    Part("calls", "calls_bench.py", ("scipy", "torch")),
    Part("torch", "torch_bench.py", ("torch",), ("--quick", "--no-lce")),
    Part("kernels", "kernels_bench.py", ("torch",)),
    # skips (exit 0, nothing written, the saved section kept) without a CUDA device
    Part("gpu", "gpu_bench.py", ("torch", "triton")),
    Part("distributed", "distributed_bench.py", ("torch.distributed",)),
    Part("dask", "dask_bench.py", ("dask", "distributed", "scipy"), ("--quick", "--reps", "1")),
    Part("jax", "jax_bench.py", ("jax", "optax")),
    Part("tensorflow", "tensorflow_bench.py", ("tensorflow",)),
    Part("keras", "keras_bench.py", ("keras", "tensorflow", "jax", "torch")),
    Part("soft", "soft_bench.py", ("torch", "jax", "optax")),
    Part("agnostic", "agnostic_bench.py", ("jax",)),
)


def _render(results: Path, output: Path) -> None:
    core = json.loads((results / "core.json").read_text())
    text = _bench.format_markdown(_bench.report_from_json(core))
    for part in PARTS:
        md = results / f"{part.name}.md"
        if md.exists():
            text += "\n\n" + md.read_text().strip()
    output.write_text(text + "\n")
    print(f"wrote {output}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--output", default=str(HERE.parent / "BENCHMARKS.md"))
    ap.add_argument("--quick", action="store_true", help="small shapes (smoke run)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--only",
        metavar="PARTS",
        help="comma-separated parts to re-measure (core, "
        + ", ".join(p.name for p in PARTS)
        + "); the others keep their saved results",
    )
    ap.add_argument("--render", action="store_true", help="only re-render from benchmarks/results/")
    args = ap.parse_args(argv)
    output = Path(args.output)
    if args.render:
        _render(RESULTS, output)
        return 0
    names = {"core", *(p.name for p in PARTS)}
    chosen = set(args.only.split(",")) if args.only else names
    unknown = chosen - names
    if unknown:
        ap.error(f"--only: unknown part(s) {sorted(unknown)}; choose from {sorted(names)}")
    # a quick run writes its results beside its output, never over the saved full results
    results = RESULTS if not args.quick else Path(tempfile.mkdtemp(prefix="skbench-"))
    results.mkdir(exist_ok=True)
    if "core" in chosen:
        report = _bench.run(
            lambda msg: print(msg, flush=True), quick=args.quick, repeats=args.repeats
        )
        (results / "core.json").write_text(
            json.dumps(_bench.report_to_json(report), indent=1) + "\n"
        )
    for part in PARTS:
        if part.name not in chosen:
            continue
        missing = [m for m in part.needs if importlib.util.find_spec(m) is None]
        if missing:
            print(f"part {part.name}: skipped, {', '.join(missing)} not installed", flush=True)
            continue
        # each part in a fresh process: the previous part's thread pools and freed
        # gigabyte arrays must not weigh on its timings
        print(f"part {part.name} ...", flush=True)
        cmd = [sys.executable, str(HERE / part.script), "--out", str(results / f"{part.name}.md")]
        cmd += ["--reps", str(args.repeats)]
        if args.quick:
            cmd += list(part.quick_args)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    if args.quick:
        for f in RESULTS.glob("*"):  # parts not re-run keep their saved results
            if not (results / f.name).exists():
                (results / f.name).write_bytes(f.read_bytes())
    _render(results, output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
