"""The ``softmaxkit`` command line (also ``python -m softmaxkit``).

Results go to stdout, messages to stderr. Errors end with exit status 1 (2 for
usage errors) and one line naming what to fix; ``--debug`` shows the traceback.
Colour is used only when stdout is a terminal and ``NO_COLOR`` is unset.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ._errors import SoftmaxkitError

__all__ = ["main"]

PROG = "softmaxkit"
FILE_SUFFIXES = (".npy", ".npz", ".csv", ".tsv", ".txt")


class CliError(Exception):
    """A problem with what the user typed or pointed at; printed as one line."""


# ----------------------------------------------------------------------- input


def _parse_text(text: str, what: str) -> np.ndarray:
    """Numbers separated by spaces or commas; rows by newlines or semicolons."""
    rows = []
    for line in text.replace(";", "\n").splitlines():
        if line.strip().startswith("#"):
            continue
        toks = [t for t in line.replace(",", " ").replace("\t", " ").split() if t]
        if not toks:
            continue
        row = []
        for t in toks:
            try:
                row.append(float(t))
            except ValueError:
                msg = f"{what}: {t!r} is not a number (use numbers such as 2, -0.5, 1e-3, inf)"
                raise CliError(msg) from None
        rows.append(row)
    if not rows:
        msg = f"{what}: no numbers given"
        raise CliError(msg)
    if len(rows) == 1:
        return np.asarray(rows[0])
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        msg = (
            f"{what}: rows have different lengths {sorted(widths)}; give every row as many numbers"
        )
        raise CliError(msg)
    return np.asarray(rows)


def _from_npz(data: Any, key: str | None, what: str, default_keys: Sequence[str]) -> np.ndarray:
    names = list(data.keys())
    if key is None:
        for k in default_keys:
            if k in names:
                key = k
                break
        else:
            if len(names) == 1:
                key = names[0]
            else:
                msg = f"{what}: the .npz file holds {names}; choose one with --key"
                raise CliError(msg)
    if key not in names:
        msg = f"{what}: the .npz file has no array {key!r}; it holds {names}"
        raise CliError(msg)
    return np.asarray(data[key])


def _load_bytes(raw: bytes, what: str, key: str | None, default_keys: Sequence[str]) -> np.ndarray:
    if raw.startswith(b"\x93NUMPY"):
        return np.asarray(np.load(io.BytesIO(raw), allow_pickle=False))
    if raw.startswith(b"PK"):
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            return _from_npz(data, key, what, default_keys)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        msg = f"{what}: input is neither .npy/.npz data nor text numbers"
        raise CliError(msg) from None
    return _parse_text(text, what)


def load_input(
    values: Sequence[str],
    what: str,
    *,
    key: str | None = None,
    default_keys: Sequence[str] = (),
    stdin: Any = None,
) -> np.ndarray:
    """Numbers typed on the command line, a file (.npy .npz .csv .tsv .txt) or stdin (``-``)."""
    vals = [v.strip() for v in values]
    if not vals or vals == ["-"]:
        stream = stdin if stdin is not None else sys.stdin
        if stream is None or (hasattr(stream, "isatty") and stream.isatty()):
            msg = f"{what}: no input; type numbers, name a file, or pipe data in"
            raise CliError(msg)
        raw = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
        if isinstance(raw, str):
            raw = raw.encode()
        return _load_bytes(raw, what, key, default_keys)
    if len(vals) == 1:
        p = Path(vals[0])
        looks_like_file = p.suffix.lower() in FILE_SUFFIXES or os.sep in vals[0]
        if p.is_file() or looks_like_file:
            if not p.is_file():
                msg = f"{what}: file not found: {vals[0]}"
                raise CliError(msg)
            try:
                return _load_bytes(p.read_bytes(), what, key, default_keys)
            except (ValueError, OSError) as exc:
                msg = f"{what}: cannot read {vals[0]}: {exc}"
                raise CliError(msg) from None
    return _parse_text(" ".join(vals), what)


def _fix_negative_numbers(argv: list[str]) -> list[str]:
    """Let ``-0.2``, ``-1e5`` and ``-inf`` through argparse as values, not options."""
    out = []
    for a in argv:
        if a.startswith("-") and len(a) > 1:
            try:
                float(a)
            except ValueError:
                out.append(a)
                continue
            out.append(" " + a)
        else:
            out.append(a)
    return out


# ---------------------------------------------------------------------- output


def _fmt(v: Any, digits: int | None) -> str:
    """One number as text; a complex one as ``a+bj`` (each part formatted alike)."""
    if isinstance(v, (complex, np.complexfloating)):
        re, im = _fmt(v.real, digits), _fmt(v.imag, digits)
        return f"{re}{'' if im.startswith('-') else '+'}{im}j"
    f = float(v)
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    if digits is not None:
        return f"{f:.{digits}g}"
    return str(v)  # NumPy scalars print their shortest round-trip form


def _json_number(v: Any) -> Any:
    if isinstance(v, complex):  # documented in --json's help: {"re": x, "im": y}
        return {"re": _json_number(v.real), "im": _json_number(v.imag)}
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def _jsonable(a: np.ndarray) -> Any:
    if a.ndim == 0:
        return _json_number(a.item())
    return [_jsonable(x) for x in a]


def _positive_int(value: str) -> int:
    """``--digits``: a positive integer (argparse names the option in its error)."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        msg = f"{value.strip()!r} is not a positive integer (significant digits: 1, 2, ...)"
        raise argparse.ArgumentTypeError(msg)
    return n


def _print_array(a: np.ndarray, out: TextIO, digits: int | None) -> None:
    if a.ndim == 0:
        out.write(_fmt(a[()], digits) + "\n")
    elif a.ndim == 1:
        out.write(" ".join(_fmt(v, digits) for v in a) + "\n")
    else:
        for row in a.reshape(-1, a.shape[-1]):
            out.write(" ".join(_fmt(v, digits) for v in row) + "\n")


def _use_color(choice: str, stream: TextIO) -> bool:
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return bool(hasattr(stream, "isatty") and stream.isatty())


def _terminal_width() -> int:
    try:
        return max(40, min(120, os.get_terminal_size().columns))
    except OSError:
        return 80


# -------------------------------------------------------------------- commands


def _axis(value: str) -> int | tuple[int, ...] | None:
    if value.strip().lower() == "none":
        return None
    try:
        parts = [int(p) for p in value.split(",") if p.strip()]
    except ValueError:
        msg = f"--axis: {value!r} is not an integer, a comma-separated list, or 'none'"
        raise CliError(msg) from None
    return parts[0] if len(parts) == 1 else tuple(parts)


def cmd_normalize(args: argparse.Namespace, out: TextIO) -> int:
    import softmaxkit as sk

    x = load_input(args.values, "input", key=args.key, default_keys=("logits",))
    axis = _axis(args.axis)
    kw: dict[str, Any] = {"axis": axis, "precision": args.precision}
    if args.command == "logsumexp":
        if args.temperature != 1.0:
            x = x / args.temperature
        y = sk.logsumexp(x, **kw)
    else:
        fn = sk.softmax if args.command == "softmax" else sk.log_softmax
        y = fn(x, temperature=args.temperature, **kw)
    y = np.asarray(y)
    if args.json:
        doc = {
            "op": args.command,
            "axis": axis,
            "temperature": args.temperature,
            "precision": args.precision,
            "dtype": str(y.dtype),
            "shape": list(y.shape),
            "result": _jsonable(y),
        }
        out.write(json.dumps(doc) + "\n")
    else:
        _print_array(y, out, args.digits)
    return 0


def cmd_cross_entropy(args: argparse.Namespace, out: TextIO) -> int:
    import softmaxkit as sk

    logits = load_input([args.logits], "LOGITS", key=args.key, default_keys=("logits",))
    target = load_input([args.targets], "TARGETS", key=args.key, default_keys=("labels", "targets"))
    if logits.ndim == 1:  # one row typed inline
        logits = logits[None, :]
        if target.ndim == 1 and target.size == logits.shape[1] and target.size > 1:
            target = target[None, :]
    integral = bool(np.all(np.isfinite(target)) and np.all(target == np.round(target)))
    if target.ndim == logits.ndim - 1 and integral:
        target = target.astype(np.int64)
    loss = sk.cross_entropy(
        logits,
        target,
        axis=args.axis,
        reduction=args.reduction,
        label_smoothing=args.label_smoothing,
        precision=args.precision,
    )
    y = np.asarray(loss)
    if args.json:
        doc = {"op": "cross-entropy", "reduction": args.reduction, "result": _jsonable(y)}
        out.write(json.dumps(doc) + "\n")
    else:
        _print_array(y, out, args.digits)
    return 0


def _labels_opt(value: str | None) -> list[str] | None:
    return None if value is None else [s.strip() for s in value.split(",")]


def cmd_explain(args: argparse.Namespace, out: TextIO) -> int:
    import softmaxkit as sk

    x = load_input(args.values, "input", key=args.key, default_keys=("logits",))
    ex = sk.explain(x, temperature=args.temperature, labels=_labels_opt(args.labels))
    out.write((ex.to_json() if args.json else ex.table(digits=args.digits or 6)) + "\n")
    return 0


def cmd_plot(args: argparse.Namespace, out: TextIO) -> int:
    from . import plot

    x = load_input(args.values, "input", key=args.key, default_keys=("logits",))
    labels = _labels_opt(args.labels)
    chart: plot.Chart
    if args.kind == "temperature":
        temps = [float(t) for t in args.temperatures.split(",")]
        chart = plot.temperature_chart(x, temperatures=temps, labels=labels)
    else:
        chart = plot.logits_chart(x, temperature=args.temperature, labels=labels)
    if args.output:
        path = chart.save(args.output)
        print(f"wrote {path}", file=sys.stderr)
    else:
        out.write(chart.terminal(width=_terminal_width(), color=args.use_color) + "\n")
    return 0


def cmd_calibrate(args: argparse.Namespace, out: TextIO) -> int:
    from . import calibration as cal

    logits = load_input([args.logits], "LOGITS", key=args.logits_key, default_keys=("logits",))
    labels = load_input(
        [args.labels], "LABELS", key=args.labels_key, default_keys=("labels", "targets")
    )
    act = "sigmoid" if args.sigmoid else "softmax"
    if act == "softmax" and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
        labels = labels.astype(np.int64)
    opts = {"n_bins": args.n_bins, "binning": args.binning, "axis": args.axis, "activation": act}
    t = cal.fit_temperature(logits, labels, axis=args.axis, activation=act)
    before = cal.metrics(logits, labels, **opts)
    after = cal.metrics(logits, labels, temperature=t, **opts)
    doc: dict[str, Any] = {"temperature": t}
    for k in ("nll", "ece", "mce", "brier"):
        doc[f"{k}_before"] = before[k]
        doc[f"{k}_after"] = after[k]
    doc.update(
        {
            "accuracy": before["accuracy"],
            "n": int(labels.size),
            "n_bins": args.n_bins,
            "binning": args.binning,
            "activation": act,
        }
    )
    if args.output:
        from .plot import reliability_chart

        d0 = cal.reliability_diagram(logits, labels, **opts)
        d1 = cal.reliability_diagram(logits, labels, temperature=t, **opts)
        path = reliability_chart(d0, d1).save(args.output)
        print(f"wrote {path}", file=sys.stderr)
    if args.json:
        out.write(json.dumps(doc) + "\n")
        return 0
    out.write(f"temperature  {t:.6g}\n")
    out.write(f"{'metric':<9} {'before':>9} {'after':>9}\n")
    for k, name in (("nll", "NLL"), ("ece", "ECE"), ("mce", "MCE"), ("brier", "Brier")):
        out.write(f"{name:<9} {before[k]:9.4f} {after[k]:9.4f}\n")
    out.write(f"{'accuracy':<9} {before['accuracy']:9.4f} {after['accuracy']:9.4f}\n")
    print(
        f"fitted on the same {doc['n']} examples the metrics use; "
        "fit on held-out data to judge a model",
        file=sys.stderr,
    )
    return 0


def cmd_sample(args: argparse.Namespace, out: TextIO) -> int:
    import softmaxkit as sk

    x = load_input(args.values, "input", key=args.key, default_keys=("logits",))
    draws = sk.sample(
        x,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        rng=np.random.default_rng(args.seed),
        n=args.n,
        axis=args.axis,
    )
    d = np.asarray(draws)
    if args.counts:
        if x.ndim != 1:
            msg = "--counts needs one row of logits"
            raise CliError(msg)
        p = np.asarray(sk.softmax(x, temperature=args.temperature))
        c = np.bincount(d.ravel(), minlength=x.size)
        if args.json:
            out.write(json.dumps({"counts": c.tolist(), "softmax": p.tolist()}) + "\n")
            return 0
        out.write(f"{'class':>5} {'count':>8} {'freq':>8} {'softmax':>8}\n")
        for i in range(x.size):
            out.write(f"{i:5d} {int(c[i]):8d} {c[i] / d.size:8.4f} {p[i]:8.4f}\n")
        return 0
    if args.json:
        out.write(json.dumps({"samples": d.tolist()}) + "\n")
    else:
        _print_array(d, out, None)
    return 0


class _ProgressBar:
    """A one-line progress bar on stderr (a plain log line per step when not a terminal)."""

    def __init__(self, total: int, ops: set[str], stream: TextIO, width: int = 28) -> None:
        self.total = max(total, 1)
        self.ops = ops
        self.stream = stream
        self.width = width
        self.seen: list[str] = []
        self.tty = stream.isatty()

    def __call__(self, message: str) -> None:
        # messages read "<op> <shape> <dtype>: <implementation>: <time>" while cases run
        label = message.split(":", 1)[0]
        is_case = label.split(" ", 1)[0] in self.ops
        if is_case and label not in self.seen:
            self.seen.append(label)
        done = len(self.seen) - 1 if is_case else len(self.seen)
        total = self.total
        filled = round(self.width * done / total)
        bar = "#" * filled + "." * (self.width - filled)
        text = f"[{bar}] {done}/{total} {message}"
        if self.tty:
            self.stream.write("\r\033[K" + text[: shutil.get_terminal_size().columns - 1])
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def cmd_bench(args: argparse.Namespace, out: TextIO) -> int:
    from . import _bench

    if args.repeats < 1:
        raise CliError("--repeats must be at least 1")
    bar = _ProgressBar(len(_bench.CASES), {c.op for c in _bench.CASES}, sys.stderr)
    try:
        report = _bench.run(bar, quick=args.quick, repeats=args.repeats, peers=not args.no_peers)
    finally:
        bar.close()
    text = _bench.format_markdown(report)
    if args.output:
        Path(args.output).write_text(text + "\n")
        print(f"{PROG} bench: wrote {args.output}", file=sys.stderr)
    out.write(text + "\n")
    return 0


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from ._demo import run_demo

    return run_demo(Path(args.out), out=out, color=args.use_color)


# ---------------------------------------------------------------------- parser


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {ln}" for ln in lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=textwrap.dedent(
            """\
            The softmax family done right, from the command line: exact softmax,
            log-softmax, logsumexp and cross-entropy; worked examples; charts;
            temperature scaling; sampling.

            Input: numbers as arguments (rows separated by ';'), a .npy/.npz/.csv/.txt
            file, or '-' / a pipe for stdin."""
        ),
        epilog=_examples(
            "softmaxkit softmax 2 1 0.1",
            "softmaxkit explain 1.5 0.8 -0.2",
            "softmaxkit plot 1.5 0.8 -0.2 -o chart.png",
            "softmaxkit calibrate val_logits.npy val_labels.npy --json",
            "softmaxkit sample 2 1 0.1 --temperature 0.7 --seed 0 -n 10",
            "softmaxkit demo",
        ),
        formatter_class=_Formatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour output (default: only on a terminal, and not with NO_COLOR set)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_: str, examples: Sequence[str], fn: Callable[..., int]) -> Any:
        p = sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=_examples(*examples),
            formatter_class=_Formatter,
        )
        p.set_defaults(func=fn)
        return p

    def values(p: Any) -> None:
        p.add_argument(
            "values", nargs="*", metavar="VALUES", help="numbers, a file, or '-' for stdin"
        )
        p.add_argument("--key", help="array to use from an .npz file")

    def digits(p: Any) -> None:
        p.add_argument(
            "--digits",
            type=_positive_int,
            help="significant digits to print, a positive integer (default: all needed); "
            "complex results print as a+bj",
        )

    for name, what in (
        ("softmax", "probabilities that sum to one along an axis"),
        ("log-softmax", "log-probabilities, finite where log(softmax) would be -inf"),
        ("logsumexp", "log of the sum of exponentials, without overflow"),
    ):
        p = add(
            name,
            f"{name}: {what}",
            (
                f"softmaxkit {name} 2 1 0.1",
                f"softmaxkit {name} '1 2 3; 4 5 6' --axis 0",
                f"softmaxkit {name} logits.npy --json",
                f"python -c 'print(1, 2, 3)' | softmaxkit {name} --temperature 2",
            ),
            cmd_normalize,
        )
        values(p)
        p.add_argument("--axis", default="-1", help="axis, comma-separated axes, or 'none'")
        p.add_argument("--temperature", type=float, default=1.0, help="divide the inputs by T")
        p.add_argument("--precision", choices=("accurate", "fast"), default="accurate")
        p.add_argument(
            "--json",
            action="store_true",
            help="print JSON (a complex number, from logsumexp of complex input, as "
            '{"re": x, "im": y})',
        )
        digits(p)

    p = add(
        "cross-entropy",
        "softmax cross-entropy of logits against class indices or probabilities",
        (
            "softmaxkit cross-entropy '2,1,0.1' 0",
            "softmaxkit cross-entropy '2 1 0.1; 0.5 2.5 0.3' '0 1' --reduction none",
            "softmaxkit cross-entropy logits.npy labels.npy --json",
        ),
        cmd_cross_entropy,
    )
    p.add_argument("logits", metavar="LOGITS", help="numbers ('a,b,c; d,e,f') or a file")
    p.add_argument("targets", metavar="TARGETS", help="class indices or probabilities, or a file")
    p.add_argument("--axis", type=int, default=-1, help="the class axis (default -1)")
    p.add_argument("--reduction", choices=("mean", "sum", "none"), default="mean")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--precision", choices=("accurate", "fast"), default="accurate")
    p.add_argument("--key", help="array to use from .npz files")
    p.add_argument("--json", action="store_true", help="print JSON")
    digits(p)

    p = add(
        "explain",
        "show every step of softmax for one row, and where the naive formulas fail",
        (
            "softmaxkit explain 1.5 0.8 -0.2",
            "softmaxkit explain 1000 0 -800",
            "softmaxkit explain 2 1 0.1 --temperature 2 --labels cat,dog,bird",
        ),
        cmd_explain,
    )
    values(p)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--labels", help="comma-separated class names")
    p.add_argument("--json", action="store_true", help="print JSON")
    digits(p)

    p = add(
        "plot",
        "chart logits next to softmax probabilities (or across temperatures)",
        (
            "softmaxkit plot 1.5 0.8 -0.2",
            "softmaxkit plot 1.5 0.8 -0.2 -o chart.png   # also .svg .html .json (Chart.js)",
            "softmaxkit plot 2 1 0.1 --kind temperature --temperatures 0.5,1,2,5",
        ),
        cmd_plot,
    )
    values(p)
    p.add_argument("-o", "--output", help="write .png, .svg, .html, .json or .txt instead")
    p.add_argument("--kind", choices=("logits", "temperature"), default="logits")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--temperatures", default="0.5,1,2,5", help="for --kind temperature")
    p.add_argument("--labels", help="comma-separated class names")

    p = add(
        "calibrate",
        "fit a temperature on held-out logits and labels; NLL, ECE, MCE, Brier before/after",
        (
            "softmaxkit calibrate val_logits.npy val_labels.npy",
            "softmaxkit calibrate val.npz val.npz --json   # arrays 'logits' and 'labels'",
            "softmaxkit calibrate logits.npy labels.npy -o diagram.png --n-bins 10",
            "softmaxkit calibrate tags_logits.npy tags.npy --sigmoid   # multi-label",
        ),
        cmd_calibrate,
    )
    p.add_argument("logits", metavar="LOGITS", help="file of logits (n, classes)")
    p.add_argument("labels", metavar="LABELS", help="file of class indices (n,)")
    p.add_argument("--axis", type=int, default=-1, help="the class axis (default -1)")
    p.add_argument("--n-bins", type=int, default=15, help="bins for ECE/MCE (default 15)")
    p.add_argument("--binning", choices=("equal-width", "equal-mass"), default="equal-width")
    p.add_argument("--sigmoid", action="store_true", help="binary / multi-label logits")
    p.add_argument("--logits-key", help="array in an .npz LOGITS file (default 'logits')")
    p.add_argument("--labels-key", help="array in an .npz LABELS file (default 'labels')")
    p.add_argument("-o", "--output", help="write the reliability diagram (.png .svg .html ...)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add(
        "sample",
        "draw classes from softmax(logits / T) (Gumbel-max), with top-k / top-p / min-p",
        (
            "softmaxkit sample 2 1 0.1 --seed 0 -n 10",
            "softmaxkit sample 2 1 0.1 -0.5 --temperature 0.7 --top-p 0.9 --seed 1 -n 5",
            "softmaxkit sample 2 1 0.1 -n 10000 --seed 0 --counts",
        ),
        cmd_sample,
    )
    values(p)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--min-p", type=float)
    p.add_argument("--seed", type=int, help="make the draws reproducible")
    p.add_argument("-n", type=int, help="draws per row (default 1)")
    p.add_argument("--axis", type=int, default=-1, help="the class axis (default -1)")
    p.add_argument("--counts", action="store_true", help="tabulate draws against softmax")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add(
        "bench",
        "time softmaxkit against NumPy, SciPy, PyTorch, JAX and a memcpy; print the ratio table",
        (
            "softmaxkit bench --quick            # small shapes, about a minute",
            "softmaxkit bench -o BENCHMARKS.md   # the full run (15-30 minutes)",
            "softmaxkit bench --quick --no-peers",
        ),
        cmd_bench,
    )
    p.add_argument("--quick", action="store_true", help="shapes divided by 64 (a smoke run)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per implementation")
    p.add_argument("--no-peers", action="store_true", help="time softmaxkit and memcpy only")
    p.add_argument("-o", "--output", help="also write the markdown report to this file")

    p = add(
        "demo",
        "train a softmax classifier on scikit-learn's digits, calibrate it, chart it",
        ("softmaxkit demo", "softmaxkit demo --out /tmp/charts"),
        cmd_demo,
    )
    p.add_argument(
        "--out", default="softmaxkit-demo", help="folder for the charts (default softmaxkit-demo)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(_fix_negative_numbers(args_in))
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    for name in ("values",):
        if hasattr(args, name):
            setattr(args, name, [v.strip() for v in getattr(args, name)])
    args.use_color = _use_color(args.color, sys.stdout)
    try:
        return int(args.func(args, sys.stdout))
    except (CliError, SoftmaxkitError) as exc:
        if args.debug:
            raise
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        if args.debug:
            raise
        print(
            f"{PROG} {args.command}: error: {exc}; install it (pip install 'softmaxkit[plot]')",
            file=sys.stderr,
        )
        return 1
    except (OSError, ValueError) as exc:
        if args.debug:
            raise
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # pragma: no cover - e.g. `softmaxkit ... | head`
        return 0
