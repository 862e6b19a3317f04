"""Accuracy of softmaxkit and its peers, in ulps, on the adversarial sets: writes ACCURACY.md.

Run with ``make accuracy`` (or ``python benchmarks/accuracy.py [--quick] [--out FILE]``).
Every method runs in this one process on the same inputs and is compared with the
same reference: the exact value at the given (rounded) inputs, computed in x87
long double with an exact ``x - max`` and an exactly rounded sum, and checked
against 60-digit mpmath by the test suite (``tests/_reference.py``). The sets are
``tests/_datasets.py``: R1-R5 and A1-A12 of the project's reference notes, plus
G1-G3. ``--quick`` uses the test suite's smaller sizes.

A full run takes a few minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.util
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import softmaxkit as sk  # noqa: E402
from softmaxkit import _dispatch  # noqa: E402
from tests import _datasets, _reference  # noqa: E402
from tests._measure import OPS, Case, case  # noqa: E402

Impl = Callable[[str, np.ndarray, "np.ndarray | None"], Any]
DTYPES = ("float32", "float64")


# ----------------------------------------------------------------------------------------
# the methods


def _numpy_shifted(op: str, x: np.ndarray, t: np.ndarray | None) -> np.ndarray:
    """The textbook formulas with the max shift, as NumPy code and most tutorials write them."""
    m = x.max(axis=1, keepdims=True)
    d = x - m
    e = np.exp(d)
    s = e.sum(axis=1, keepdims=True)
    if op == "softmax":
        return e / s
    ls = d - np.log(s)
    if op == "log_softmax":
        return ls
    if op == "logsumexp":
        return (m + np.log(s))[:, 0]
    assert t is not None
    return -np.take_along_axis(ls, t[:, None], axis=1)[:, 0]


def _scipy(op: str, x: np.ndarray, t: np.ndarray | None) -> np.ndarray:
    from scipy import special

    if op == "softmax":
        return special.softmax(x, axis=-1)
    if op == "logsumexp":
        return np.asarray(special.logsumexp(x, axis=-1))
    ls = special.log_softmax(x, axis=-1)
    if op == "log_softmax":
        return ls
    assert t is not None
    return -np.take_along_axis(ls, t[:, None], axis=1)[:, 0]


def _torch(op: str, x: np.ndarray, t: np.ndarray | None) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    xt = torch.from_numpy(np.array(x))
    if op == "softmax":
        out = torch.softmax(xt, dim=-1)
    elif op == "log_softmax":
        out = torch.log_softmax(xt, dim=-1)
    elif op == "logsumexp":
        out = torch.logsumexp(xt, dim=-1)
    else:
        assert t is not None
        out = F.cross_entropy(xt, torch.from_numpy(t), reduction="none")
    return out.numpy()


_JAX_FNS: dict[str, Any] = {}


def _jax(op: str, x: np.ndarray, t: np.ndarray | None) -> np.ndarray:
    import jax
    import jax.numpy as jnp

    if not _JAX_FNS:
        _JAX_FNS["softmax"] = jax.jit(lambda a: jax.nn.softmax(a, axis=-1))
        _JAX_FNS["log_softmax"] = jax.jit(lambda a: jax.nn.log_softmax(a, axis=-1))
        _JAX_FNS["logsumexp"] = jax.jit(lambda a: jax.nn.logsumexp(a, axis=-1))
        _JAX_FNS["cross_entropy"] = jax.jit(
            lambda a, i: (
                -jnp.take_along_axis(jax.nn.log_softmax(a, axis=-1), i[:, None], axis=1)[:, 0]
            )
        )
    xj = jnp.asarray(x)
    if op == "cross_entropy":
        return np.asarray(_JAX_FNS[op](xj, jnp.asarray(t)))
    return np.asarray(_JAX_FNS[op](xj))


def _ours(precision: str, convert: Callable[[np.ndarray], Any] | None = None) -> Impl:
    def impl(op: str, x: np.ndarray, t: np.ndarray | None) -> np.ndarray:
        xa = x if convert is None else convert(x)
        if op == "cross_entropy":
            ta = t if convert is None else convert(t)  # type: ignore[arg-type]
            out = sk.cross_entropy(xa, ta, reduction="none", precision=precision)
        else:
            out = getattr(sk, op)(xa, precision=precision)
        return np.asarray(out.numpy() if hasattr(out, "numpy") and convert else out)

    return impl


def _ours_agnostic(op: str, x: np.ndarray, t: np.ndarray | None) -> np.ndarray:
    from tests.test_accuracy import NUMPY, agnostic_impl

    return np.asarray(agnostic_impl(NUMPY)(op, x, t))


def _torch_convert(a: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.array(a))


# TensorFlow runs in a child process (it must never share one with Triton, and it is
# heavy): the child writes every output of its methods, keyed by the input's digest,
# and the parent measures them like any other method's.
_TF_OUTPUTS: dict[str, np.ndarray] = {}
TF_METHODS = {
    "softmaxkit.tensorflow accurate (eager)": "sktf",
    "tf.nn / tf.math (eager)": "tfnn",
}


def _digest(a: np.ndarray) -> str:
    return hashlib.sha1(a.dtype.str.encode() + repr(a.shape).encode() + a.tobytes()).hexdigest()


def _tf_child(size: str, out: str) -> None:
    """In the child: compute every TF method's outputs on every set and save them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    import softmaxkit.tensorflow as sktf

    fns = {
        "sktf": {
            "softmax": lambda x, t: sktf.softmax(x),
            "log_softmax": lambda x, t: sktf.log_softmax(x),
            "logsumexp": lambda x, t: sktf.reduce_logsumexp(x, axis=-1),
            "cross_entropy": lambda x, t: sktf.sparse_softmax_cross_entropy_with_logits(t, x),
        },
        "tfnn": {
            "softmax": lambda x, t: tf.nn.softmax(x),
            "log_softmax": lambda x, t: tf.nn.log_softmax(x),
            "logsumexp": lambda x, t: tf.math.reduce_logsumexp(x, axis=-1),
            "cross_entropy": lambda x, t: tf.nn.sparse_softmax_cross_entropy_with_logits(t, x),
        },
    }
    res: dict[str, np.ndarray] = {}
    for dtype in DTYPES:
        for ds in _datasets.DATASETS:
            x = ds.make(dtype, size)
            ce_x, ce_t = _datasets.ce_inputs(x, ds.id)
            for op in OPS:
                xi, ti = (ce_x, ce_t) if op == "cross_entropy" else (x, None)
                key = _digest(xi)
                for m, table in fns.items():
                    t_arg = None if ti is None else tf.constant(ti)
                    res[f"{m}|{op}|{key}"] = table[op](tf.constant(xi), t_arg).numpy()
    for x in special_inputs():  # the +inf / NaN rows' table (special_rows)
        for op in SPECIAL_OPS:
            for m, table in fns.items():
                res[f"{m}|{op}|{_digest(x)}"] = table[op](tf.constant(x), None).numpy()
    np.savez(out, **res)


def load_tf_outputs(size: str) -> None:
    """Run :func:`_tf_child` in a fresh process (skipped without TensorFlow)."""
    if importlib.util.find_spec("tensorflow") is None:
        return
    with tempfile.TemporaryDirectory() as d:
        out = str(Path(d) / "tf.npz")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--tf-child", size, out]
        subprocess.run(cmd, check=True)
        with np.load(out) as data:
            _TF_OUTPUTS.update({k: data[k] for k in data.files})


def _tf_impl(method: str) -> Impl:
    def impl(op: str, x: np.ndarray, t: np.ndarray | None) -> np.ndarray:
        return _TF_OUTPUTS[f"{method}|{op}|{_digest(x)}"]

    return impl


def methods() -> list[tuple[str, Impl]]:
    native = bool(getattr(_dispatch, "available", lambda: False)())
    path = "native kernels" if native else "array-agnostic path"
    out: list[tuple[str, Impl]] = [
        (f"**softmaxkit accurate** (NumPy, {path})", _ours("accurate")),
        (f"softmaxkit fast (NumPy, {path})", _ours("fast")),
    ]
    if native:
        out.append(("softmaxkit accurate (NumPy, array-agnostic path)", _ours_agnostic))
    out += [
        ("softmaxkit accurate (PyTorch tensors)", _ours("accurate", _torch_convert)),
        ("numpy, shifted formula", _numpy_shifted),
        ("scipy.special", _scipy),
        ("torch", _torch),
        ("jax.nn (jit)", _jax),
    ]
    if _TF_OUTPUTS:
        out += [(label, _tf_impl(m)) for label, m in TF_METHODS.items()]
    return out


# ----------------------------------------------------------------------------------------
# measuring


def fmt(v: float) -> str:
    if not math.isfinite(v):
        return "inf" if v > 0 else "nan"
    if v == 0:
        return "0"
    if v < 10:
        return f"{v:.2f}"
    if v < 1000:
        return f"{v:.3g}"
    m, e = f"{v:.1e}".split("e")
    return f"{m}e{int(e)}"


def cell(st: _reference.UlpStats) -> str:
    text = fmt(st.max_ulp)
    if st.max_ulp_normal < 0.5 * st.max_ulp and st.max_ulp > 1:
        text += f" (n {fmt(st.max_ulp_normal)})"
    return text


def run_all(size: str) -> dict[tuple[str, str, str, str], _reference.UlpStats]:
    """``results[(dtype, op, method, dataset)]``."""
    results = {}
    meths = methods()
    for dtype in DTYPES:
        for ds in _datasets.DATASETS:
            t0 = time.perf_counter()
            c = case(ds.id, dtype, size)
            t_ref = time.perf_counter() - t0
            for label, impl in meths:
                for op in OPS:
                    results[(dtype, op, label, ds.id)] = _measure(c, op, impl)
            print(
                f"{dtype} {ds.id:4s} {c.x.shape!s:16s} reference {t_ref:5.1f}s, "
                f"all methods {time.perf_counter() - t0 - t_ref:5.1f}s",
                flush=True,
            )
            case.cache_clear()
    return results


def _measure(c: Case, op: str, impl: Impl) -> _reference.UlpStats:
    x, t = c.inputs(op)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        out = np.asarray(impl(op, x, t))
    if out.dtype != np.dtype(c.dtype):
        out = out.astype(c.dtype)
    return _reference.ulp_stats(out, c.refs[op], c.dtype, c.compared(op))


# ----------------------------------------------------------------------------------------
# sigmoid family and special values


def sigmoid_rows(size: str) -> list[str]:
    import jax
    import jax.numpy as jnp
    import torch
    import torch.nn.functional as F
    from scipy import special

    def jax_bce(x: Any, y: Any) -> Any:
        return jnp.maximum(x, 0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x)))

    peers: list[tuple[str, Callable[..., Any], Callable[..., Any], Callable[..., Any]]] = [
        (
            "**softmaxkit accurate**",
            sk.sigmoid,
            sk.log_sigmoid,
            lambda x, y: sk.binary_cross_entropy_with_logits(x, y, reduction="none"),
        ),
        ("scipy.special (expit, log_expit)", special.expit, special.log_expit, None),  # type: ignore[list-item]
        (
            "torch",
            lambda x: torch.sigmoid(torch.from_numpy(x)).numpy(),
            lambda x: F.logsigmoid(torch.from_numpy(x)).numpy(),
            lambda x, y: F.binary_cross_entropy_with_logits(
                torch.from_numpy(x), torch.from_numpy(y), reduction="none"
            ).numpy(),
        ),
        (
            "jax.nn (jit)",
            lambda x: np.asarray(jax.jit(jax.nn.sigmoid)(jnp.asarray(x))),
            lambda x: np.asarray(jax.jit(jax.nn.log_sigmoid)(jnp.asarray(x))),
            lambda x, y: np.asarray(jax.jit(jax_bce)(jnp.asarray(x), jnp.asarray(y))),
        ),
    ]
    lines = [
        "| method | sigmoid f32 | log_sigmoid f32 | BCE f32 | sigmoid f64 | log_sigmoid f64 | BCE f64 |",
        "|---|---|---|---|---|---|---|",
    ]
    data = {d: _datasets.sigmoid_inputs(d, size) for d in DTYPES}
    refs = {
        d: (
            _reference.sigmoid_ref(data[d][0]),
            _reference.log_sigmoid_ref(data[d][0]),
            _reference.bce_ref(*data[d]),
        )
        for d in DTYPES
    }
    for label, f_sig, f_ls, f_bce in peers:
        cells = []
        for d in DTYPES:
            x, y = data[d]
            for fn, ref, args in (
                (f_sig, refs[d][0], (x,)),
                (f_ls, refs[d][1], (x,)),
                (f_bce, refs[d][2], (x, y)),
            ):
                if fn is None:
                    cells.append("–")
                    continue
                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore")
                    out = np.asarray(fn(*args)).astype(d)
                cells.append(cell(_reference.ulp_stats(out, ref, d)))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


SPECIAL_OPS = ("softmax", "log_softmax", "logsumexp")


def special_inputs() -> list[np.ndarray]:
    """The +inf / NaN rows representable in float32, each as a (1, n) float32 array."""
    f32_max = float(np.finfo(np.float32).max)
    return [
        np.array([row], dtype=np.float32)
        for row, *_ in _datasets.SPECIAL_ROWS
        if all(not math.isfinite(v) or abs(v) <= f32_max for v in row)
    ]


def special_rows() -> list[str]:
    """What each method returns on the +inf / NaN rows (float32)."""
    meths = [
        (label, impl)
        for label, impl in methods()
        if label.startswith("**softmaxkit accurate**")
        or not label.lstrip("*").startswith("softmaxkit")
    ]
    head = "| input (float32) | " + " | ".join(label for label, _ in meths) + " |"
    lines = [head, "|---" * (len(meths) + 1) + "|"]

    def show(a: np.ndarray) -> str:
        return "[" + ", ".join(f"{float(v):.3g}" for v in np.ravel(a)) + "]"

    for x in special_inputs():
        cells = []
        for _, impl in meths:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                outs = [impl(op, x, None) for op in SPECIAL_OPS]
            cells.append("; ".join(show(o) for o in outs))
        lines.append(f"| {show(x)} | " + " | ".join(cells) + " |")
    return lines


# ----------------------------------------------------------------------------------------
# the report


def machine() -> list[str]:
    import jax
    import scipy
    import torch

    from softmaxkit._bench import _cpu_model

    cpu = _cpu_model()
    flags = ""
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
        flags = ", ".join(f for f in ("avx2", "fma", "avx512f") if f" {f}" in text)
    except OSError:
        pass
    lines = [
        f"- Machine: {cpu} ({os.cpu_count()} logical CPUs; {flags}), {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}",
        f"- Libraries: softmaxkit {sk.__version__}, NumPy {np.__version__}, SciPy {scipy.__version__}, "
        f"PyTorch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), JAX {jax.__version__} "
        "(x64 enabled, CPU)",
        f"- Reference: numpy.longdouble with {np.finfo(np.longdouble).nmant + 1}-bit significand, "
        "mpmath-checked (tests/_reference.py)",
        f"- Generated {datetime.date.today().isoformat()} by `make accuracy`",
    ]
    lines.extend(_tf_note())
    return lines


def _tf_note() -> list[str]:
    if not _TF_OUTPUTS:
        return []
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("tensorflow-cpu")
    except PackageNotFoundError:
        v = version("tensorflow")
    return [
        f"- TensorFlow {v}, eager, run in a child process; TF flushes subnormal results to "
        "zero (its `(n X)` values are the ones to read)"
    ]


def report(
    results: dict[tuple[str, str, str, str], _reference.UlpStats], size: str, elapsed: float
) -> str:
    meths = [label for label, _ in methods()]
    lines = [
        "# Accuracy of softmaxkit and its peers",
        "",
        "Maximum error in **ulps** against the exact value of each function at the given",
        "(rounded) inputs, on the adversarial sets of `tests/_datasets.py`. The ulp of a value",
        "`t` is `2**(max(floor(log2|t|), emin) - p + 1)` (subnormal spacing below the normal",
        "range), so a correctly rounded result is within 0.5 ulp. The documented bounds of the",
        "accurate mode are 0.5 ulp + 1 % for float32 and 1 ulp for float64; the test suite",
        "(`tests/test_accuracy.py`) asserts them on every backend.",
        "",
        "`(n X)` after a number: the maximum over outputs whose exact value is in the normal",
        "range, where that is much smaller, i.e. the large error is on subnormal outputs (XLA",
        "flushes subnormal results to zero; the log(sum) formulas round them away).",
        "Cross-entropy (index targets, per item) is measured on every row twice: with the",
        "arg-max as target (a confident correct prediction, whose loss is tiny) and with a",
        "random class; for R5 the even rows take the arg-max, the odd rows a random class.",
        "",
        *machine(),
        f"- Sizes: {'test-suite (--quick)' if size == 'ci' else 'full'}; run time {elapsed:.0f} s",
        "",
        "## Datasets",
        "",
        "| id | rows | float32 | float64 |",
        "|---|---|---|---|",
    ]
    for ds in _datasets.DATASETS:
        x = ds.make("float32", size)
        lines.append(
            f"| {ds.id} | {x.shape[0]} × {x.shape[1]} | {ds.describe('float32')} | {ds.describe('float64')} |"
        )
    lines += ["", "A9's +inf / NaN rows are compared exactly (last section).", ""]
    titles = {
        "softmax": "softmax",
        "log_softmax": "log_softmax",
        "logsumexp": "logsumexp",
        "cross_entropy": "cross-entropy (index targets)",
    }
    ids = [d.id for d in _datasets.DATASETS]
    lines += summary(results, meths, ids, titles)
    for dtype in DTYPES:
        for op in OPS:
            lines += [f"## {titles[op]}, {dtype}", ""]
            lines.append("| method | " + " | ".join(ids) + " |")
            lines.append("|---" * (len(ids) + 1) + "|")
            for label in meths:
                row = [cell(results[(dtype, op, label, i)]) for i in ids]
                lines.append(f"| {label} | " + " | ".join(row) + " |")
            lines.append("")
        lines += [
            f"### Largest absolute error of log_softmax, {dtype} (units of 2^-{24 if dtype == 'float32' else 53})",
            "",
        ]
        lines.append("| method | " + " | ".join(ids) + " |")
        lines.append("|---" * (len(ids) + 1) + "|")
        unit = 2.0 ** (-24 if dtype == "float32" else -53)
        for label in meths:
            row = [fmt(results[(dtype, "log_softmax", label, i)].max_abs / unit) for i in ids]
            lines.append(f"| {label} | " + " | ".join(row) + " |")
        lines.append("")
    lines += ["## sigmoid, log_sigmoid, binary cross-entropy with logits (set S1)", ""]
    lines += sigmoid_rows(size)
    lines += [
        "",
        "## Special values (float32): softmax; log_softmax; logsumexp",
        "",
        "softmaxkit follows its contract (issue 2): +inf entries share the mass, a NaN makes its",
        "row NaN, and an all -inf row gives 0 / -inf / -inf.",
        "",
    ]
    lines += special_rows()
    lines.append("")
    return "\n".join(lines)


def summary(
    results: dict[tuple[str, str, str, str], _reference.UlpStats],
    meths: list[str],
    ids: list[str],
    titles: dict[str, str],
) -> list[str]:
    """The worst case of each method over all the sets: the table for the README."""
    lines = [
        "## Summary: worst case over all sets (max ulp)",
        "",
        "| method | "
        + " | ".join(f"{titles[op].split(' ')[0]} {d[5:]}" for d in DTYPES for op in OPS)
        + " |",
        "|---" * (len(OPS) * len(DTYPES) + 1) + "|",
    ]
    for label in meths:
        cells = []
        for dtype in DTYPES:
            for op in OPS:
                worst = max(
                    (results[(dtype, op, label, i)] for i in ids), key=lambda st: st.max_ulp
                )
                normal = max(results[(dtype, op, label, i)].max_ulp_normal for i in ids)
                text = fmt(worst.max_ulp)
                if normal < 0.5 * worst.max_ulp and worst.max_ulp > 1:
                    text += f" (n {fmt(normal)})"
                cells.append(text)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--tf-child":
        _tf_child(argv[1], argv[2])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="test-suite sizes (fast)")
    ap.add_argument("--out", default=str(ROOT / "ACCURACY.md"), help="output file")
    args = ap.parse_args(argv)
    _reference.check_longdouble()
    import jax

    jax.config.update("jax_enable_x64", True)
    size = "ci" if args.quick else "full"
    t0 = time.perf_counter()
    load_tf_outputs(size)
    results = run_all(size)
    text = report(results, size, time.perf_counter() - t0)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
