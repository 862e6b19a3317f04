"""Where the public ops hand a call to the native C kernels.

Each op function returns the finished result when a native kernel covers the
call and ``None`` otherwise, in which case the caller runs the array-agnostic
implementation (the reference the kernels are tested against).

Covered: NumPy arrays of float32 and float64 (integer and bool inputs are
promoted to float64 first) for softmax, log_softmax, logsumexp (with ``where``
and ``b``), cross-entropy with class-index targets (weights, ignore_index,
z-loss, ``where``, the fused gradient), sigmoid, log_sigmoid, binary
cross-entropy with logits (and its gradient) and the softmax / log_softmax
VJPs, on every axis and memory layout: the reduced axes are moved last and the
data made C-contiguous in native byte order here, so the C core only ever sees
``rows x n`` blocks. Not covered (the array-agnostic path runs): other array
libraries, float16 / bfloat16, label smoothing and probability targets.

Threads: ``threads=None`` uses the ``SOFTMAXKIT_NUM_THREADS`` environment
variable, or else the number of physical cores this process may run on. The
results do not depend on the number of threads.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from typing import Any

import numpy as np

from . import _dask, _jax_dispatch, _outputs
from ._errors import SoftmaxkitTypeError, SoftmaxkitValueError
from ._namespace import ENV_ENGINE, Plan, dtype_name, is_numpy

try:  # the C core; absent only in a broken build, then every call falls back
    from . import _ckernels
except ImportError:  # pragma: no cover - exercised only without a compiled core
    _ckernels = None  # type: ignore[assignment]

# SOFTMAXKIT_ENGINE=agnostic (read once, at import) switches the native kernels off, so
# every call runs the array-agnostic engine: for benchmarks and for checking the oracle.
FORCE_AGNOSTIC = os.environ.get(ENV_ENGINE, "").strip().lower().startswith("agnostic")
if FORCE_AGNOSTIC:
    _ckernels = None  # type: ignore[assignment]

__all__ = [
    "available",
    "check_out",
    "check_threads",
    "cross_entropy",
    "default_threads",
    "log_softmax",
    "logsumexp",
    "quick_bce",
    "quick_cross_entropy",
    "quick_logsumexp",
    "quick_nll_loss",
    "quick_normalize",
    "quick_sigmoid",
    "softmax",
]

Array = Any

ENV_THREADS = "SOFTMAXKIT_NUM_THREADS"
_DTYPES = {"float32": 0, "float64": 1}
SMALL = 1 << 15  # the C core's minimum of elements per thread (driver.c)


def available() -> bool:
    """Whether the native kernels were built into this installation."""
    return _ckernels is not None


@functools.lru_cache(maxsize=1)
def _physical_cores() -> int:
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)
    cores = set()
    for c in cpus:
        path = f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list"
        try:
            with open(path) as fh:
                cores.add(fh.read().strip())
        except OSError:
            cores.add(str(c))
    return max(1, len(cores))


def default_threads() -> int:
    """Threads used when ``threads=None``: ``$SOFTMAXKIT_NUM_THREADS`` or the physical cores."""
    env = os.environ.get(ENV_THREADS)
    if env is not None and env.strip():
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            msg = f"environment variable {ENV_THREADS}={env!r} must be a positive integer"
            raise SoftmaxkitValueError(msg)
        return n
    return _physical_cores()


def check_threads(threads: object) -> int:
    """Validate the ``threads=`` keyword (``None`` picks the default)."""
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        msg = f"`threads` must be a positive integer or None, got {threads!r}"
        raise SoftmaxkitTypeError(msg)
    if threads < 1:
        msg = f"`threads` must be >= 1, got {threads}; use None for the default"
        raise SoftmaxkitValueError(msg)
    # "at most this many": the C core caps it at its pool's size, and results never
    # depend on it, so a huge count is the same request as the C int's largest
    return min(int(threads), 2**31 - 1)


def check_out(x: Array, out: object, plan: Plan) -> np.ndarray | None:
    """Validate ``out=``: a writeable NumPy array with the result's shape and dtype."""
    if out is None:
        return None
    if not is_numpy(plan.xp) or not isinstance(out, np.ndarray):
        msg = (
            "`out` must be a NumPy array and is supported for NumPy inputs only, "
            f"got {type(out).__name__} for a {type(x).__name__} input"
        )
        raise SoftmaxkitTypeError(msg)
    want = np.dtype(dtype_name(plan.out))
    if out.shape != tuple(x.shape) or out.dtype != want:
        msg = (
            f"`out` has shape {out.shape} and dtype {out.dtype}, but the result has shape "
            f"{tuple(x.shape)} and dtype {want}; pass np.empty_like(x, dtype={want.name!r})"
        )
        raise SoftmaxkitValueError(msg)
    if not out.flags.writeable:
        msg = "`out` is read-only; pass a writeable array"
        raise SoftmaxkitValueError(msg)
    return out


def finish_out(result: Array, out: np.ndarray | None) -> Array:
    """Copy a fallback result into ``out`` when one was given."""
    if out is None:
        return result
    np.copyto(out, result)
    return out


# ---- eligibility and layout -----------------------------------------------------


def finite_mean(a: np.ndarray, den: float) -> np.floating:
    """``np.sum(a) / den`` (den > 0), finite wherever the mean is: finite items whose sum
    overflows are summed again times 2^-64 (exact) and the quotient scaled back."""
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(a)
        if np.isfinite(total) or not den > 0 or not np.all(np.isfinite(a)):
            return total / den  # type: ignore[no-any-return]
        return np.ldexp(np.add.reduce(np.ldexp(a, -64)) / den, 64)  # type: ignore[no-any-return]


def _native_input(x: Array, plan: Plan) -> tuple[np.ndarray, int, int] | None:
    """The input as a native-order NumPy array of the kernel dtype, its dtype code and mode."""
    if _ckernels is None or not is_numpy(plan.xp) or not isinstance(x, np.ndarray):
        return None
    name = dtype_name(plan.out)
    code = _DTYPES.get(name)
    if code is None:
        return None
    if plan.mode == "plain":
        mode = 0
    elif (name == "float32" and plan.mode == "wide") or (name == "float64" and plan.mode == "dd"):
        mode = 1
    else:  # pragma: no cover - make_plan never pairs these
        return None
    dt = np.dtype(name)
    if x.dtype != dt:
        # integers, and floats widened exactly (float32 data whose result is float64,
        # as logsumexp's with float64 weights b)
        if x.dtype.kind not in "fiub" or (x.dtype.kind == "f" and x.dtype.itemsize > dt.itemsize):
            return None
        x = x.astype(dt)
    return x, code, mode


def _layout(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[list[int], int, int]:
    keep = [i for i in range(len(shape)) if i not in axes]
    perm = keep + list(axes)
    rows = math.prod(shape[i] for i in keep)
    n = math.prod(shape[i] for i in axes)
    return perm, rows, n


def _to_rows(a: np.ndarray, perm: list[int], rows: int, n: int, dtype: Any) -> np.ndarray:
    if perm != sorted(perm):
        a = a.transpose(perm)
    a = a.reshape(rows, n)
    return np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("="))


def _from_rows(r: np.ndarray, shape: tuple[int, ...], perm: list[int]) -> np.ndarray:
    tshape = tuple(shape[i] for i in perm)
    res = r.reshape(tshape)
    if perm != sorted(perm):
        res = res.transpose(np.argsort(perm))
    return res


def _mask_rows(where: Array | None, perm: list[int], rows: int, n: int) -> np.ndarray | None:
    if where is None:
        return None
    return _to_rows(np.asarray(where), perm, rows, n, np.bool_)


# ---- ops ------------------------------------------------------------------------

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)


def quick_normalize(
    x: object,
    axis: object,
    where: object,
    temperature: object,
    precision: object,
    out: object,
    threads: object,
    log: bool,
) -> np.ndarray | None:
    """A shortcut for the most common call, before any general validation.

    Covers a C-contiguous float32/float64 NumPy array normalised over its last
    axis, with no mask, and ``out`` either absent or a writeable C-contiguous
    array of the same shape and dtype that is ``x`` itself or shares no memory
    with it; anything else returns ``None`` and takes the general path, which
    validates and raises the proper errors. This keeps the latency of a small
    call at a few microseconds.
    """
    if type(x) is not np.ndarray:
        if out is not None:  # out= is for NumPy input only: the general path says so
            return None
        return _torch_quick(
            quick_normalize, x, axis, where, temperature, precision, None, threads, log
        )
    if where is not None or _ckernels is None:
        return None
    if out is not None and not (
        type(out) is np.ndarray
        and out.dtype is x.dtype
        and out.shape == x.shape
        and out.flags.c_contiguous
        and out.flags.writeable
        and (out is x or not np.may_share_memory(out, x))
    ):
        return None
    got = _quick_mode(x.dtype, precision)
    if got is None:
        return None
    code, mode = got
    nd = x.ndim
    if type(axis) is not int or nd == 0 or not -nd <= axis < nd or (axis % nd) != nd - 1:
        return None
    if type(temperature) is float or type(temperature) is int:
        t = float(temperature)
        if not (0.0 < t < math.inf):
            return None
    else:
        return None
    nthreads = _quick_threads(threads, x.size)
    if nthreads is None:
        return None
    if not x.flags.c_contiguous:
        return None
    n = x.shape[-1]
    if n == 0 or x.size == 0:
        return None
    if out is not None:
        res, fresh = out, False
    elif x.nbytes < _outputs.BIG:  # the everyday call: no Python frame for the cache's check
        res, fresh = np.empty_like(x), True
    else:
        res, fresh = _outputs.empty_like(x)
    _ckernels.softmax(x, res, None, x.size // n, n, code, mode, nthreads, t, log, fresh)
    return res


def _small_or_kept(x: np.ndarray) -> np.ndarray:
    """A fresh array like the C-contiguous ``x``: NumPy's below the output cache's size
    (checked inline, as a small call's few microseconds notice a call more), else one
    from :mod:`softmaxkit._outputs`."""
    return np.empty_like(x) if x.nbytes < _outputs.BIG else _outputs.empty_like(x)[0]


def _torch_quick(fn: Any, x: object, *args: object) -> Any:
    """A ``quick_*`` shortcut for a CPU torch tensor (NumPy views), or None."""
    if "torch" not in sys.modules:
        return None
    from . import _torch_dispatch

    return _torch_dispatch.quick(fn, x, *args)


def _quick_threads(threads: object, size: int) -> int | None:
    """The thread count of a quick call, or None to take the general path."""
    if threads is None:
        # below this size the C core runs one thread anyway; skip the environment lookup
        return 1 if size < SMALL else default_threads()
    if type(threads) is int and threads >= 1:
        return min(threads, 2**31 - 1)  # as check_threads
    return None


def _quick_mode(dtype: np.dtype, precision: object) -> tuple[int, int] | None:
    """(dtype code, mode) of the C core for a quick call, or None."""
    if dtype is _F32:
        code = 0
    elif dtype is _F64:
        code = 1
    else:
        return None
    if precision == "accurate":
        return code, 1
    if precision == "fast":
        return code, 0
    return None


def quick_logsumexp(
    x: object,
    axis: object,
    b: object,
    where: object,
    keepdims: object,
    return_sign: object,
    precision: object,
    threads: object,
) -> Any:
    """:func:`~softmaxkit.logsumexp` of a C-contiguous float32/float64 NumPy array
    over its last axis or all of it, without ``b``, ``where`` or ``return_sign``,
    in one C call (the general path's arithmetic); anything else returns None."""
    if type(x) is not np.ndarray:
        return _torch_quick(
            quick_logsumexp, x, axis, b, where, keepdims, return_sign, precision, threads
        )
    if b is not None or where is not None or _ckernels is None:
        return None
    if return_sign is not False or (keepdims is not True and keepdims is not False):
        return None
    got = _quick_mode(x.dtype, precision)
    nd = x.ndim
    if got is None or nd == 0 or x.size == 0 or not x.flags.c_contiguous:
        return None
    if axis is None:
        n = x.size
        shape: tuple[int, ...] = (1,) * nd if keepdims else ()
    elif type(axis) is int and -nd <= axis < nd and axis % nd == nd - 1:
        n = x.shape[-1]
        shape = (*x.shape[:-1], 1) if keepdims else x.shape[:-1]
    else:
        return None
    nthreads = _quick_threads(threads, x.size)
    if nthreads is None:
        return None
    rows = x.size // n
    lse = np.empty(rows, np.float64)
    _ckernels.logsumexp(x, None, rows, n, got[0], got[1], nthreads, lse)
    if not shape:
        return x.dtype.type(lse[0])
    return lse.reshape(shape).astype(x.dtype)


def quick_sigmoid(x: object, precision: object, threads: object, log: bool) -> Any:
    """``sigmoid`` / ``log_sigmoid`` of a non-empty C-contiguous float32/float64 NumPy
    array in one C call (the general path's arithmetic); anything else returns None."""
    if type(x) is not np.ndarray:
        return _torch_quick(quick_sigmoid, x, precision, threads, log)
    if _ckernels is None:
        return None
    got = _quick_mode(x.dtype, precision)
    if got is None or x.size == 0 or not x.flags.c_contiguous:
        return None
    nthreads = _quick_threads(threads, x.size)
    if nthreads is None:
        return None
    out = _small_or_kept(x)
    n = x.size
    _ckernels.sigmoid(
        1 if log else 0, x.reshape(n), None, None, None, n, got[0], got[1], nthreads, 1.0,
        out.reshape(n), None,
    )  # fmt: skip
    return out


def quick_bce(
    logits: object,
    target: object,
    weight: object,
    pos_weight: object,
    reduction: object,
    return_grad: object,
    precision: object,
    threads: object,
) -> Any:
    """``binary_cross_entropy_with_logits`` of C-contiguous float32/float64 NumPy
    logits and float targets of the same shape in [0, 1], without weights, in one C
    call (the general path's arithmetic and reductions); anything else, NaN targets
    included, returns None and takes the general path."""
    if type(logits) is not np.ndarray:
        return _torch_quick(
            quick_bce, logits, target, weight, pos_weight, reduction, return_grad, precision,
            threads,
        )  # fmt: skip
    if type(target) is not np.ndarray or _ckernels is None:
        return None
    if weight is not None or pos_weight is not None:
        return None
    if type(reduction) is not str or reduction not in _REDUCTIONS:
        return None
    if return_grad is not True and return_grad is not False:
        return None
    got = _quick_mode(logits.dtype, precision)
    n = logits.size
    if got is None or n == 0 or not logits.flags.c_contiguous:
        return None
    if target.shape != logits.shape or target.dtype not in (_F32, _F64):
        return None
    if not (target.min() >= 0.0 and target.max() <= 1.0):
        return None  # out of range or NaN: the general path decides
    nthreads = _quick_threads(threads, n)
    if nthreads is None:
        return None
    if target.dtype is logits.dtype and target.flags.c_contiguous:
        kind, y = 3, target.reshape(n)  # the kernel widens the targets as it reads them
    else:
        kind, y = 2, np.ascontiguousarray(target, dtype=np.float64).reshape(n)
    grad = None if not return_grad else _small_or_kept(logits)
    g1 = None if grad is None else grad.reshape(n)
    dt = logits.dtype
    if reduction == "none":  # kinds 4, 5: the float64 losses rounded once to dt in the core
        loss = _outputs.empty(logits.shape, dt)[0]
        _ckernels.sigmoid(
            kind + 2, logits.reshape(n), y, None, None, n, got[0], got[1], nthreads, 1.0,
            loss.reshape(n), g1,
        )  # fmt: skip
        res = loss[()]  # 0-d: a scalar, as numpy_scalars
    else:  # the losses summed in the core, in np.sum's order: no float64 array of them
        scale = 1.0 / n if reduction == "mean" else 1.0
        total = _ckernels.bce_reduced(kind, logits.reshape(n), y, n, got[0], got[1], nthreads,
                                      scale, g1)  # fmt: skip
        if reduction == "mean" and not math.isfinite(total):
            # a sum beyond the float range: the mean from the items themselves
            items = np.empty(n, np.float64)
            _ckernels.sigmoid(kind, logits.reshape(n), y, None, None, n, got[0], got[1],
                              nthreads, 1.0, items, None)  # fmt: skip
            value: Any = finite_mean(items, n)
        else:
            value = total if reduction == "sum" else total / n
        with np.errstate(over="ignore"):  # beyond float32's range: inf, a defined answer
            res = dt.type(value)
    return res if grad is None else (res, grad)


def quick_nll_loss(
    log_probs: object,
    target: object,
    axis: object,
    weight: object,
    ignore_index: object,
    reduction: object,
    precision: object,
) -> Any:
    """:func:`~softmaxkit.nll_loss` of C-contiguous float32/float64 NumPy log-probabilities
    (classes last) and int64 labels, without class weights, repeating the array-agnostic
    path's arithmetic step for step (the picked value plus +0.0, as its masked sum
    gives; the item ``-picked``; ``np.sum``'s order in the working dtype; one rounding to
    the output), so the bits are the same: in the C core where that dtype is float64,
    by a NumPy gather for float32 fast mode. Anything else, and labels out of range,
    return None and take the general path."""
    if type(log_probs) is not np.ndarray:
        return _torch_quick(
            quick_nll_loss, log_probs, target, axis, weight, ignore_index, reduction, precision
        )
    if type(target) is not np.ndarray or weight is not None:
        return None
    if type(reduction) is not str or reduction not in _REDUCTIONS:
        return None
    if ignore_index is not None and type(ignore_index) is not int:
        return None
    dt = log_probs.dtype
    if _quick_mode(dt, precision) is None:
        return None
    nd = log_probs.ndim
    if type(axis) is not int or nd == 0 or not -nd <= axis < nd or axis % nd != nd - 1:
        return None
    if target.dtype != _I64 or target.shape != log_probs.shape[:-1]:
        return None
    C = log_probs.shape[-1]
    rows = target.size
    if C == 0 or rows == 0 or rows >= 1 << 24 or not log_probs.flags.c_contiguous:
        return None
    if (
        _ckernels is not None
        and (dt is _F64 or precision == "accurate")
        and (ignore_index is None or -(2**63) <= ignore_index < 2**63)
    ):  # float64 arithmetic: the core's skit_nll
        red = _REDUCTIONS[reduction]
        out = np.empty(rows if red == 0 else 1, dt)
        try:
            _ckernels.nll(log_probs, target, rows, C, 0 if dt is _F32 else 1, ignore_index,
                          red, out)  # fmt: skip
        except IndexError:
            return None  # a label out of range: the general path names it
        return out.reshape(target.shape)[()] if red == 0 else out[0]
    if ignore_index is None:
        if not (target.min() >= 0 and target.max() < C):
            return None
        ignored = None
        t = target
    else:
        ignored = target == ignore_index
        if not (((target >= 0) & (target < C)) | ignored).all():
            return None
        t = np.where(ignored, 0, target)
    work: Any = np.float64 if (dt is _F64 or precision == "accurate") else np.float32
    picked = log_probs.reshape(rows, C)[np.arange(rows), t.reshape(rows)].astype(work)
    item = -(picked + work(0.0))  # as the masked sum: -0.0 comes out +0.0
    if ignored is not None:
        item[ignored.reshape(rows)] = 0.0
    if reduction == "none":
        return item.reshape(target.shape).astype(dt)[()]  # the same values: no overflow
    with np.errstate(over="ignore"):  # overflow to inf is a defined answer (to_out)
        total = np.add.reduce(item)  # np.sum's pairwise sum
        if reduction == "mean":
            den = work(rows if ignored is None else rows - np.count_nonzero(ignored))
            total = finite_mean(item, den) if den != 0 else work(0.0)
        return dt.type(total)


_REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}
_I64 = np.dtype(np.int64)


def quick_cross_entropy(
    logits: object,
    target: object,
    axis: object,
    weight: object,
    ignore_index: object,
    label_smoothing: object,
    z_loss: object,
    reduction: object,
    where: object,
    return_grad: object,
    precision: object,
    threads: object,
) -> Any:
    """The everyday :func:`~softmaxkit.cross_entropy` call in one C call.

    Covers C-contiguous float32/float64 NumPy logits with the classes on the last
    axis and int64 NumPy class indices of the batch shape; no class weights, mask
    or label smoothing. The C core checks the labels' range, reduces (NumPy's
    pairwise order: the bits of the general path) and forms the gradient.
    Anything else, and labels out of range, return ``None``: the general path
    then validates and raises the proper errors. A 32x10 call drops from about
    80 us to a few.
    """
    if type(logits) is not np.ndarray:
        return _torch_quick(
            quick_cross_entropy, logits, target, axis, weight, ignore_index, label_smoothing,
            z_loss, reduction, where, return_grad, precision, threads,
        )  # fmt: skip
    if type(target) is not np.ndarray or weight is not None or where is not None:
        return None
    if _ckernels is None:
        return None
    dt = logits.dtype
    if target.dtype is not _I64 and target.ndim == logits.ndim:
        return _quick_prob_ce(
            logits, target, axis, ignore_index, label_smoothing, z_loss, reduction,
            return_grad, precision, threads,
        )  # fmt: skip
    got = _quick_mode(dt, precision)
    if got is None:
        return None
    code, mode = got
    red = _REDUCTIONS.get(reduction) if type(reduction) is str else None
    if red is None or (return_grad is not True and return_grad is not False):
        return None
    if label_smoothing != 0.0 or type(label_smoothing) not in (float, int):
        return None
    if type(z_loss) is not float and type(z_loss) is not int:
        return None
    z = float(z_loss)
    if not 0.0 <= z < math.inf:
        return None
    if ignore_index is not None and not (
        type(ignore_index) is int and -(2**63) <= ignore_index < 2**63
    ):
        return None
    nd = logits.ndim
    if type(axis) is not int or nd == 0 or not -nd <= axis < nd or (axis % nd) != nd - 1:
        return None
    if target.dtype != _I64 or target.shape != logits.shape[:-1]:
        return None
    if not (logits.flags.c_contiguous and target.flags.c_contiguous):
        return None
    n = logits.shape[-1]
    rows = target.size
    if n == 0 or rows == 0:
        return None
    nthreads = _quick_threads(threads, logits.size)
    if nthreads is None:
        return None
    loss = np.empty(rows if red == 0 else 1, np.float64)
    grad = None if not return_grad else _small_or_kept(logits)
    try:
        _ckernels.cross_entropy_reduced(
            logits, target, None, rows, n, code, mode, nthreads, ignore_index, z, red, loss,
            grad,
        )  # fmt: skip
    except IndexError:
        return None  # a label out of range: the general path names it
    res = loss.reshape(target.shape).astype(dt)[()] if red == 0 else dt.type(loss[0])
    return res if grad is None else (res, grad)


def _quick_prob_ce(
    logits: np.ndarray,
    target: np.ndarray,
    axis: object,
    ignore_index: object,
    label_smoothing: object,
    z_loss: object,
    reduction: object,
    return_grad: object,
    precision: object,
    threads: object,
) -> Any:
    """:func:`quick_cross_entropy` for probability targets: C-contiguous float32 logits
    with the classes last and float32/float64 targets of their shape, >= 0; label
    smoothing and z-loss, no class weights or mask. The calls of the general path
    (:func:`_prob_rows`, or the index kernels for one-hot rows without smoothing), so
    its bits; None for anything else. A 32x10 call drops from about 200 us to 20."""
    if logits.dtype is not _F32 or target.dtype not in (_F32, _F64) or ignore_index is not None:
        return None
    if precision != "accurate" and precision != "fast":
        return None
    red = _REDUCTIONS.get(reduction) if type(reduction) is str else None
    if red is None or (return_grad is not True and return_grad is not False):
        return None
    if not (isinstance(label_smoothing, (float, int)) and isinstance(z_loss, (float, int))):
        return None
    if type(label_smoothing) is bool or type(z_loss) is bool:
        return None
    eps, z = float(label_smoothing), float(z_loss)
    if not (0.0 <= eps <= 1.0 and 0.0 <= z < math.inf):
        return None
    nd = logits.ndim
    if type(axis) is not int or nd == 0 or not -nd <= axis < nd or (axis % nd) != nd - 1:
        return None
    if target.shape != logits.shape:
        return None
    if not (logits.flags.c_contiguous and target.flags.c_contiguous):
        return None
    n = logits.shape[-1]
    rows = logits.size // n if n else 0
    if n == 0 or rows == 0:
        return None
    nthreads = _quick_threads(threads, logits.size)
    if nthreads is None:
        return None
    idx = np.empty(rows, np.int64)
    if _ckernels.one_hot(target, rows, n, 0 if target.dtype is _F32 else 1, idx):
        if eps:
            return None  # the smoothed index kernels: the general path
        return quick_cross_entropy(
            logits, idx.reshape(logits.shape[:-1]), axis, None, None, 0.0, z_loss, reduction,
            None, return_grad, precision, threads,
        )  # fmt: skip
    got = _prob_rows(
        logits.reshape(rows, n), target.reshape(rows, n), rows, n, None, eps, z, str(reduction),
        return_grad is True, nthreads, precision == "fast",
    )  # fmt: skip
    if got is None:
        return None
    item, grad = got
    res = item.reshape(logits.shape[:-1]).astype(_F32)[()] if red == 0 else _F32.type(item)
    return res if grad is None else (res, grad.reshape(logits.shape))


def _normalize(
    x: Array,
    axes: tuple[int, ...],
    where: Array | None,
    temperature: float,
    plan: Plan,
    out: np.ndarray | None,
    threads: int | None,
    log: bool,
) -> Array | None:
    if where is None and temperature == 1.0 and out is None and _dask.covers(x, plan, axes):
        return _dask.normalize(x, axes[0], plan, log=log, threads=1)
    if not is_numpy(plan.xp):  # JAX arrays: the C core as XLA custom calls
        return _jax_dispatch.normalize(x, axes, where, temperature, plan, threads, log)
    got = _native_input(x, plan)
    if got is None:
        return None
    xa, code, mode = got
    shape = tuple(xa.shape)
    perm, rows, n = _layout(shape, axes)
    if n == 0 or rows == 0:
        return None
    nthreads = check_threads(threads)
    x2 = _to_rows(xa, perm, rows, n, xa.dtype)
    m2 = _mask_rows(where, perm, rows, n)
    direct = (
        out is not None
        and perm == sorted(perm)
        and out.flags.c_contiguous
        and out.dtype.isnative
        and (out is x or not np.may_share_memory(out, x2))
    )
    if direct and out is not None:
        o2, fresh = out.reshape(rows, n), False
    else:
        o2, fresh = _outputs.empty((rows, n), xa.dtype)
    _ckernels.softmax(x2, o2, m2, rows, n, code, mode, nthreads, float(temperature), log, fresh)
    if direct:
        return out
    res = _from_rows(o2, shape, perm)
    if out is not None:
        np.copyto(out, res)
        return out
    return res


def softmax(
    x: Array,
    axes: tuple[int, ...],
    where: Array | None,
    temperature: float,
    plan: Plan,
    *,
    out: np.ndarray | None = None,
    threads: int | None = None,
) -> Array | None:
    return _normalize(x, axes, where, temperature, plan, out, threads, log=False)


def log_softmax(
    x: Array,
    axes: tuple[int, ...],
    where: Array | None,
    temperature: float,
    plan: Plan,
    *,
    out: np.ndarray | None = None,
    threads: int | None = None,
) -> Array | None:
    return _normalize(x, axes, where, temperature, plan, out, threads, log=True)


def logsumexp(
    x: Array,
    axes: tuple[int, ...],
    b: Array | None,
    where: Array | None,
    keepdims: bool,
    return_sign: bool,
    plan: Plan,
    *,
    threads: int | None = None,
) -> Array | tuple[Array, Array] | None:
    if b is None and where is None and _dask.covers(x, plan, axes):
        return _dask.logsumexp(x, axes[0], keepdims, return_sign, plan, threads=1)
    if not is_numpy(plan.xp):
        return _jax_dispatch.logsumexp(x, axes, b, where, keepdims, return_sign, plan, threads)
    got = _native_input(x, plan)
    if got is None or not (b is None or isinstance(b, np.ndarray)):
        return None
    xa, code, mode = got
    shape = tuple(xa.shape)
    perm, rows, n = _layout(shape, axes)
    if n == 0 or rows == 0:
        return None
    nthreads = check_threads(threads)
    x2 = _to_rows(xa, perm, rows, n, xa.dtype)
    lse = np.empty(rows, np.float64)
    sgn: np.ndarray | None = None
    if b is None:
        m2 = _mask_rows(where, perm, rows, n)
        _ckernels.logsumexp(x2, m2, rows, n, code, mode, nthreads, lse)
    else:
        # entries with b == 0 are left out, whatever x holds there (SciPy's convention)
        b2 = _to_rows(np.broadcast_to(b, shape), perm, rows, n, np.float64)
        keep = b2 != 0
        m2 = _mask_rows(where, perm, rows, n)
        keep = keep if m2 is None else keep & m2
        sgn = np.empty(rows, np.float64)
        _ckernels.logsumexp_b(x2, b2, keep, rows, n, code, mode, nthreads, lse, sgn)
        if not return_sign:
            lse = np.where(sgn < 0, np.nan, lse)
    kept = tuple(1 if i in axes else s for i, s in enumerate(shape))
    red = tuple(s for i, s in enumerate(shape) if i not in axes)
    res_shape = kept if keepdims else red
    dt = xa.dtype
    res = lse.reshape(res_shape).astype(dt)
    if not return_sign:
        return res
    if sgn is None:
        sgn = np.where(lse == -np.inf, 0.0, 1.0)
        sgn = np.where(np.isnan(lse), np.nan, sgn)
    return res, sgn.reshape(res_shape).astype(dt)


def cross_entropy(
    logits: Array,
    target: Array,
    *,
    axis: int,
    target_is_index: bool,
    weight: Array | None,
    ignore_index: int | None,
    label_smoothing: float,
    z_loss: float,
    reduction: str,
    where: Array | None,
    return_grad: bool,
    plan: Plan,
    threads: int | None = None,
) -> Array | tuple[Array, Array] | None:
    if not target_is_index or where is not None or return_grad:
        pass
    elif _dask.covers(logits, plan, (axis,)) and (weight is None or label_smoothing == 0.0):
        # (class weights on the smoothing term need sum_c w_c x_c: the array-agnostic path)
        return _dask.cross_entropy(
            logits,
            target,
            axis=axis,
            weight=weight,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            z_loss=z_loss,
            reduction=reduction,
            plan=plan,
            threads=1,
        )
    if not is_numpy(plan.xp):
        return _jax_dispatch.cross_entropy(
            logits,
            target,
            axis=axis,
            target_is_index=target_is_index,
            weight=weight,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            z_loss=z_loss,
            reduction=reduction,
            where=where,
            return_grad=return_grad,
            plan=plan,
            threads=threads,
        )
    if not target_is_index:
        idx = None if weight is not None or where is not None else one_hot_index(target, axis)
        if idx is not None:
            return cross_entropy(
                logits, idx, axis=axis, target_is_index=True, weight=None, ignore_index=None,
                label_smoothing=label_smoothing, z_loss=z_loss, reduction=reduction,
                where=None, return_grad=return_grad, plan=plan, threads=threads,
            )  # fmt: skip
        return _prob_cross_entropy(
            logits, target, axis, weight, label_smoothing, z_loss, reduction, where,
            return_grad, plan, threads,
        )  # fmt: skip
    if label_smoothing != 0.0:
        return _smoothed_cross_entropy(
            logits, target, axis, weight, ignore_index, label_smoothing, z_loss, reduction,
            where, return_grad, plan, threads,
        )  # fmt: skip
    ce = _ce_rows(logits, target, weight, axis, plan)
    if ce is None:
        return None
    xa, code, mode, shape, perm, rows, n, x2 = ce
    nthreads = check_threads(threads)
    m2 = _mask_rows(where, perm, rows, n)
    t = np.ascontiguousarray(np.asarray(target).reshape(rows), dtype=np.int64)
    ignored = np.zeros(rows, bool) if ignore_index is None else t == ignore_index
    t_safe = np.where(ignored, 0, t)
    if weight is not None:
        w_t = np.asarray(weight, dtype=np.float64)[t_safe]
        w_t = np.ascontiguousarray(np.where(ignored, 0.0, w_t))
        den_pred = float(np.sum(w_t))
    else:
        w_t = None
        den_pred = float(rows - np.count_nonzero(ignored))
    loss = np.empty(rows, np.float64)
    lse = np.empty(rows, np.float64)
    counted = np.empty(rows, np.uint8)
    grad = _outputs.empty((rows, n), xa.dtype)[0] if return_grad else None

    def run(scale: float) -> None:
        _ckernels.cross_entropy(
            x2,
            t,
            w_t,
            m2,
            rows,
            n,
            code,
            mode,
            nthreads,
            ignore_index is not None,
            0 if ignore_index is None else int(ignore_index),
            float(z_loss),
            scale,
            loss,
            lse,
            counted,
            grad,
        )

    def scale_for(den: float) -> float:
        if reduction != "mean":
            return 1.0
        return 1.0 / den if den > 0 else 0.0

    run(scale_for(den_pred))
    cnt = counted.astype(bool)
    den = float(np.sum(w_t[cnt])) if w_t is not None else float(np.count_nonzero(cnt))
    if return_grad and reduction == "mean" and den != den_pred:
        run(scale_for(den))  # rows with nothing left to count changed the mean's divisor
    dt = xa.dtype
    batch = tuple(s for i, s in enumerate(shape) if i != axis)
    if reduction == "none":
        res = loss.reshape(batch).astype(dt)
    elif reduction == "sum":
        res = np.asarray(np.sum(loss), dtype=dt)
    else:
        res = np.asarray(finite_mean(loss, den) if den > 0 else 0.0, dtype=dt)
    if not return_grad:
        return res
    assert grad is not None
    return res, _from_rows(grad, shape, perm)


def _ce_rows(
    logits: Array, target: Array, weight: Array | None, axis: int, plan: Plan
) -> tuple[np.ndarray, int, int, tuple[int, ...], list[int], int, int, np.ndarray] | None:
    """The C core's view of a cross-entropy call: ``(xa, code, mode, shape, perm, rows,
    n, x2)`` with ``x2`` the logits as ``rows x n`` rows, or ``None`` when the arrays
    are not NumPy's or the call is empty."""
    got = _native_input(logits, plan)
    if got is None or not isinstance(target, np.ndarray):
        return None
    if weight is not None and not isinstance(weight, np.ndarray):
        return None
    xa, code, mode = got
    shape = tuple(xa.shape)
    perm, rows, n = _layout(shape, (axis,))
    if n == 0 or rows == 0:
        return None
    return xa, code, mode, shape, perm, rows, n, _to_rows(xa, perm, rows, n, xa.dtype)


def _smoothed_cross_entropy(
    logits: Array,
    target: Array,
    axis: int,
    weight: Array | None,
    ignore_index: int | None,
    eps: float,
    z_loss: float,
    reduction: str,
    where: Array | None,
    return_grad: bool,
    plan: Plan,
    threads: int | None,
) -> Array | tuple[Array, Array] | None:
    """Label-smoothed cross-entropy of float32 NumPy logits on the C core
    (:mod:`softmaxkit._smoothing`), or ``None`` for the array-agnostic path (other
    dtypes, ``where``, or a row holding +inf or NaN)."""
    from . import _smoothing  # imports this module

    ce = None if where is not None else _ce_rows(logits, target, weight, axis, plan)
    if ce is None or ce[1] != _DTYPES["float32"]:
        return None
    xa, _, _, shape, perm, rows, n, x2 = ce
    nthreads = check_threads(threads)
    w = None if weight is None else np.ascontiguousarray(weight, dtype=np.float64)
    t = np.ascontiguousarray(np.asarray(target).reshape(rows), dtype=np.int64)
    grad = _outputs.empty((rows, n), np.float32)[0] if return_grad else None
    r = _smoothing.whole_row_loss(x2, t, w, ignore_index, reduction, eps, z_loss, grad, nthreads)
    if r is None:
        return None
    dt = xa.dtype
    if reduction == "none":
        res = r.reshape(tuple(s for i, s in enumerate(shape) if i != axis)).astype(dt)
    else:
        res = np.asarray(r, dtype=dt)
    if grad is None:
        return res
    return res, _from_rows(grad, shape, perm)


def one_hot_index(target: Array, axis: int) -> np.ndarray | None:
    """The class indices of a NumPy probability target that is one-hot along ``axis``
    (every entry 0 or 1, one 1 per item), or ``None``.

    Such a target is a class index written out: its loss, sum_j q_j (-log p_j), is
    ``-log p_t`` and its gradient ``p - onehot``, so the class-index kernels (with a
    gradient, at 0.5 ulp) serve it. Without class weights only: with them the mean of
    index targets divides by the targets' weights and that of probabilities by the
    item count. Keras's CategoricalCrossentropy takes its labels so."""
    if not isinstance(target, np.ndarray) or target.dtype.kind != "f" or target.size == 0:
        return None
    dt = target.dtype  # (dtype.name costs more than the C pass at small sizes)
    code = 0 if dt is _F32 else 1 if dt is _F64 else None  # native float32 / float64
    if (
        _ckernels is not None
        and code is not None
        and axis % target.ndim == target.ndim - 1
        and target.flags.c_contiguous
    ):  # one pass of the C core, which stops at the first row that is not one-hot
        n = target.shape[-1]
        idx = np.empty(target.size // n, np.int64)
        ok = _ckernels.one_hot(target, idx.size, n, code, idx)
        return idx.reshape(target.shape[:-1]) if ok else None
    if not bool(np.all(np.count_nonzero(target, axis=axis) == 1)):  # two passes in all
        return None
    idx = np.argmax(target, axis=axis)
    hit = np.take_along_axis(target, np.expand_dims(idx, axis), axis=axis)
    return idx if bool(np.all(hit == 1)) else None


def _prob_cross_entropy(
    logits: Array,
    target: Array,
    axis: int,
    weight: Array | None,
    eps: float,
    z_loss: float,
    reduction: str,
    where: Array | None,
    return_grad: bool,
    plan: Plan,
    threads: int | None,
) -> Array | tuple[Array, Array] | None:
    """Cross-entropy of float32 NumPy logits and probability targets on the C core, or
    ``None`` for the array-agnostic path (other dtypes, ``where``, a logit that is not
    finite, items past the float64 range; a gradient with negative class weights).

    With ``M`` the row maximum, ``c`` its count and ``s`` the rest of the sum of
    exponentials (the row state), ``L = log1p(c - 1 + s)``, and each row's smoothed,
    weighted targets ``u_j = w_j ((1 - eps) q_j + eps / C)``, formed row by row in the
    core's scratch (``skit_prob_ce``, which checks the targets as it reads them) as the
    weights of a label-smoothing pass, the item is

        sum_j u_j (L + M - x_j) = L sum_j u_j + sum_j u_j (M - x_j)

    in float64: every term is non-negative for non-negative weights, and ``M - x_j`` is
    exact for float32 data; then it is rounded once (at most 0.4987 ulp on the test
    sets), the same bits with a gradient and without.

    The gradient of element ``k`` is ``exp(x_k - M) f - r u_k`` with ``f = r (sum_j u_j
    + 2 z lse) / D`` and ``r`` the reduction's scale, in float64 and rounded once, ``D``
    the same pass's sum of exponentials (its table exponential is good to about 2^-59;
    the row state's float32-accurate one, 2^-37, left up to 2.9 ulp), the exponentials
    kept for the output. Where the model fits its targets the two terms cancel (98.7% of
    the elements of a batch whose targets are the softmax of logits 0.05 away agree to
    an eighth); float64 holds the result to a few 2^-53 of ``r u_k``, so the core forms
    the elements with ``|g_k| < 2^-16 r u_k`` again in double-word, while the row is in
    cache, as ``r ((A - u_k) p_k - u_k (1 - p_k))`` with ``A = sum_j u_j + 2 z lse``: no
    factor cancels, ``1 - p_k`` at a maximum being the row's rest over ``D``. So a
    dominant maximum holding the target mass gets ``-(1 - p_k)`` (about -4.4e-26 for a
    logit 60 above the rest), which ``num / D - u_k`` rounds to 0. Of a 1000-class batch
    so fitted, about a quarter of the rows hold such elements; of Dirichlet soft labels,
    0.4%. A row with an element below 2^-28 of ``r u_k`` is mended once more with the
    accurate double-word exponential (2^-105 against skit_dd_exp's 2^-65).

    On the project's 2-core AMD EPYC (AVX2), 256x1000 float32: per-item losses 0.54 ms
    (11.5 ms on the array-agnostic engine); loss and gradient 1.1-1.2 ms with Dirichlet
    targets and 2.1 ms with fitted ones, where separate passes with the double-word rows
    on that engine took 3.3 and 8.6 ms (torch's unrounded float32 kernel: 0.9 ms).

    ``precision="fast"`` (``mode`` 0) takes ``skit_prob_ce_fast`` instead: no row state,
    one pass of float32 exponentials per row (float64 sums, the maxima's count kept
    apart from the rest) and, with a gradient, one more over the kept exponentials;
    items within 3 ulp, gradient elements within 4 * 2^-24 of ``r (|A| p_k + u_k)``.
    Session 41, same host, 256x1000 with its gradient: 0.61 ms (torch: 2.4 ms in that
    run, the machine slower than in the figures above)."""
    if where is not None:
        return None
    if return_grad and weight is not None and not bool(np.all(np.asarray(weight) >= 0)):
        return None  # S = sum_j u_j may cancel: the double-word engine
    ce = _ce_rows(logits, target, weight, axis, plan)
    if ce is None or ce[1] != _DTYPES["float32"]:
        return None
    xa, _, mode, shape, perm, rows, n, x2 = ce
    t = np.asarray(target)
    q_dt = t.dtype if t.dtype.name in ("float32", "float64") else np.float64
    q = _to_rows(t, perm, rows, n, q_dt)  # the core reads float32 or float64 targets
    w = None if weight is None else np.ascontiguousarray(weight, dtype=np.float64)
    got = _prob_rows(
        x2, q, rows, n, w, eps, z_loss, reduction, return_grad, check_threads(threads), mode == 0
    )
    if got is None:
        return None
    item, grad = got
    dt = xa.dtype
    if reduction == "none":
        res = item.reshape(tuple(s for i, s in enumerate(shape) if i != axis)).astype(dt)
    else:
        res = np.asarray(item, dtype=dt)
    if grad is None:
        return res
    return res, _from_rows(grad, shape, perm)


def _prob_rows(
    x2: np.ndarray,
    q: np.ndarray,
    rows: int,
    n: int,
    w: np.ndarray | None,
    eps: float,
    z_loss: float,
    reduction: str,
    return_grad: bool,
    nthreads: int,
    fast: bool = False,
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """:func:`_prob_cross_entropy` on ``rows x n`` float32 logits ``x2`` and targets
    ``q`` (float32 or float64): the items (``"none"``) or their reduction in float64,
    and the float32 gradient; ``None`` where the general path answers, or where a
    target is negative or NaN (the core checks them as it reads them: the callers'
    validation then names the entry). ``fast``: ``precision="fast"``, one C call
    (``skit_prob_ce_fast``) in float32 arithmetic."""
    red = _REDUCTIONS[reduction]
    item = np.empty(rows if red == 0 else 1)
    grad = _outputs.empty((rows, n), np.float32)[0] if return_grad else None
    if fast:
        if _ckernels.prob_ce_fast(x2, rows, n, q, w, eps, z_loss, red, item, grad, nthreads):
            return None
        return (item.reshape(()) if red else item), grad
    st = list(np.empty((4, rows)))  # the rows' maxima, their count and the rest
    _ckernels.state(x2, 0, n, None, rows, n, 0, 1, nthreads, 1.0, *st)
    m, c, s_hi, s_lo = st
    if _ckernels.prob_ce(
        x2, rows, n, q, w, eps, z_loss, red, m, c, s_hi, s_lo, item, grad, None, nthreads
    ):
        # a row that is not finite, or a target < 0 or NaN (which its validation names)
        return None
    return (item.reshape(()) if red else item), grad


# ---- sigmoid family and vector-Jacobian products ---------------------------------


def _flat(a: np.ndarray, dtype: Any) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("=")).reshape(-1)


def sigmoid(x: Array, plan: Plan, *, log: bool, threads: int | None = None) -> Array | None:
    """``sigmoid`` (``log=False``) or ``log_sigmoid`` (``log=True``) elementwise."""
    if not is_numpy(plan.xp):
        return _jax_dispatch.sigmoid(x, plan, log=log, threads=threads)
    got = _native_input(x, plan)
    if got is None:
        return None
    xa, code, mode = got
    if xa.size == 0:
        return None
    x1 = _flat(xa, xa.dtype)
    out = _outputs.empty(x1.shape, x1.dtype)[0]
    _ckernels.sigmoid(
        1 if log else 0,
        x1,
        None,
        None,
        None,
        x1.size,
        code,
        mode,
        check_threads(threads),
        1.0,
        out,
        None,
    )
    return out.reshape(xa.shape)


def binary_cross_entropy_with_logits(
    logits: Array,
    target: Array,
    weight: Array | None,
    pos_weight: Array | None,
    reduction: str,
    return_grad: bool,
    plan: Plan,
    threads: int | None = None,
) -> Array | tuple[Array, Array] | None:
    if not is_numpy(plan.xp):
        return _jax_dispatch.binary_cross_entropy_with_logits(
            logits, target, weight, pos_weight, reduction, return_grad, plan, threads
        )
    got = _native_input(logits, plan)
    if got is None:
        return None
    if not all(a is None or isinstance(a, np.ndarray) for a in (target, weight, pos_weight)):
        return None
    xa, code, mode = got
    n = xa.size
    if n == 0:
        return None
    shape = xa.shape
    x1 = _flat(xa, xa.dtype)
    y1 = _flat(np.broadcast_to(target, shape), np.float64)
    w1 = None if weight is None else _flat(np.broadcast_to(weight, shape), np.float64)
    p1 = None if pos_weight is None else _flat(np.broadcast_to(pos_weight, shape), np.float64)
    scale = 1.0 / n if reduction == "mean" else 1.0
    dt = xa.dtype
    none = reduction == "none"  # kind 4: the losses rounded once to dt in the core
    loss = _outputs.empty((n,), dt if none else np.float64)[0]
    grad = _outputs.empty((n,), x1.dtype)[0] if return_grad else None
    _ckernels.sigmoid(
        4 if none else 2, x1, y1, w1, p1, n, code, mode, check_threads(threads), scale, loss, grad
    )
    if none:
        res = loss.reshape(shape)
    elif reduction == "sum":
        res = np.asarray(np.sum(loss), dtype=dt)
    else:
        res = np.asarray(finite_mean(loss, n), dtype=dt)
    if grad is None:
        return res
    return res, grad.reshape(shape)


def vjp(
    y: Array,
    g: Array,
    axes: tuple[int, ...],
    plan: Plan,
    *,
    log: bool,
    threads: int | None = None,
) -> Array | None:
    """``softmax_vjp`` (``log=False``) or ``log_softmax_vjp`` (``log=True``)."""
    if not is_numpy(plan.xp):
        return _jax_dispatch.vjp(y, g, axes, plan, log=log, threads=threads)
    got = _native_input(y, plan)
    if got is None or not isinstance(g, np.ndarray):
        return None
    ya, code, mode = got
    if g.dtype.newbyteorder("=") != ya.dtype.newbyteorder("="):
        return None
    shape = tuple(ya.shape)
    perm, rows, n = _layout(shape, axes)
    if n == 0 or rows == 0:
        return None
    y2 = _to_rows(ya, perm, rows, n, ya.dtype)
    g2 = _to_rows(g, perm, rows, n, ya.dtype)
    out = _outputs.empty((rows, n), y2.dtype)[0]
    _ckernels.vjp(log, y2, g2, rows, n, code, mode, check_threads(threads), out)
    return _from_rows(out, shape, perm)
