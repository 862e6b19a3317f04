"""Array-namespace resolution and dtype planning.

This is the only module that talks to ``array_api_compat``. It never imports a
framework: a framework's module is looked up in :data:`sys.modules` only when
the caller already holds one of its arrays, so ``import softmaxkit`` stays light.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import array_api_compat as _aac
import numpy as np

from . import _torch_mkl
from ._errors import SoftmaxkitTypeError, SoftmaxkitValueError

__all__ = [
    "Plan",
    "call",
    "check_not_longdouble",
    "device_of",
    "eager_checks",
    "is_concrete",
    "is_jax",
    "is_numpy",
    "is_torch",
    "make_plan",
    "numpy_scalars",
    "resolve",
    "to_out",
]

Array = Any
Namespace = Any

Precision = Literal["accurate", "fast"]

# "agnostic" forces the array-agnostic engine (no native kernels) for every backend;
# "agnostic-dd" also keeps JAX without x64 on float-float arithmetic. Read by _dispatch.
ENV_ENGINE = "SOFTMAXKIT_ENGINE"


def _is_arraylike(obj: object) -> bool:
    return _aac.is_array_api_obj(obj) or hasattr(obj, "__array_namespace__")


# Array types that softmaxkit does not take, with the entry point their users want.
_ENTRY_POINTS = {
    "tensorflow": "softmaxkit.tensorflow (import softmaxkit.tensorflow as sktf)",
    "keras": "softmaxkit.keras",
    "pandas": "the NumPy data of the object (obj.to_numpy())",
    "polars": "the NumPy data of the object (obj.to_numpy())",
    "xarray": "the NumPy data of the object (obj.values)",
    "mlx": "a NumPy copy (np.asarray(obj))",
    "paddle": "a NumPy copy (obj.numpy())",
}

_SCALARS = (bool, int, float, np.generic)


def _plain_leaf(obj: object) -> object:
    """The first leaf of a nested list or tuple (the object itself otherwise)."""
    depth = 0
    while isinstance(obj, (list, tuple)) and obj and depth < 64:
        obj = obj[0]
        depth += 1
    return obj


def unsupported_type_error(obj: object, name: str) -> SoftmaxkitTypeError:
    """The error for an object that is neither an array softmaxkit takes nor plain numbers."""
    t = type(obj)
    lib = t.__module__.split(".")[0]
    where = _ENTRY_POINTS.get(lib)
    what = f"{lib}.{t.__qualname__}" if lib != "builtins" else t.__qualname__
    if where is not None:
        fix = f"use {where}"
    else:
        fix = (
            "pass an array from an Array API library (NumPy, PyTorch, JAX, CuPy, Dask, "
            "array-api-strict) or a nested sequence of numbers"
        )
    msg = (
        f"`{name}` is a {what}, which softmaxkit does not convert silently "
        f"(it would lose its device and gradient); {fix}"
    )
    return SoftmaxkitTypeError(msg)


def _check_plain(obj: object, name: str, *, allow_complex: bool = False) -> None:
    """Accept Python numbers and nested lists/tuples of numbers; reject anything else."""
    leaf = _plain_leaf(obj)
    ok = _SCALARS + ((complex,) if allow_complex else ())
    if isinstance(leaf, ok) or (isinstance(obj, (list, tuple)) and leaf is obj):
        return
    if isinstance(leaf, complex):
        msg = f"`{name}` holds complex numbers; only logsumexp accepts complex input"
        raise SoftmaxkitTypeError(msg)
    raise unsupported_type_error(leaf if leaf is not obj else obj, name)


def _subclass_error(obj: np.ndarray, name: str) -> SoftmaxkitTypeError:
    """The error for a NumPy subclass whose meaning a plain array would lose."""
    if isinstance(obj, np.ma.MaskedArray):
        msg = (
            f"`{name}` is a NumPy masked array, whose mask softmaxkit would drop silently; "
            f"pass its data (`np.ma.getdata({name})`) and leave the masked entries out with "
            f"`where=~np.ma.getmaskarray({name})` (class targets: `ignore_index`)"
        )
    else:
        msg = (
            f"`{name}` is a numpy.matrix, which softmaxkit would return as a plain array; "
            f"pass `np.asarray({name})`"
        )
    return SoftmaxkitTypeError(msg)


def _is_longdouble(dtype: object) -> bool:
    """Whether ``dtype`` is NumPy's extended precision (float96/float128 and complex).

    Where ``long double`` is just ``double`` (Windows, Apple silicon) its dtype is
    float64 and passes.
    """
    if not isinstance(dtype, np.dtype):
        return False
    return (dtype.kind == "f" and dtype.itemsize > 8) or (dtype.kind == "c" and dtype.itemsize > 16)


def check_not_longdouble(dtype: object, name: str) -> None:
    """Refuse NumPy's extended precision: softmaxkit would compute it in float64 silently."""
    if not _is_longdouble(dtype):
        return
    assert isinstance(dtype, np.dtype)
    target = "float64" if dtype.kind == "f" else "complex128"
    msg = (
        f"`{name}` has dtype {dtype.name} (NumPy's extended-precision long double), which "
        f"softmaxkit does not compute in (it would be rounded to double silently); cast it "
        f"first with `{name}.astype(np.{target})`"
    )
    raise SoftmaxkitTypeError(msg)


def _library(a: object) -> str:
    return type(a).__module__.split(".")[0]


def resolve(
    *objs: object,
    names: tuple[str, ...] | None = None,
    allow_complex: bool = False,
    required: int = 1,
) -> tuple[Namespace, list[Any]]:
    """Find the namespace of the array arguments and convert the rest into it.

    The first argument (the logits or input) fixes the namespace when it is an
    array. NumPy arrays, NumPy scalars, Python scalars and nested lists in the
    other arguments are converted into that namespace, on that array's device,
    so NumPy labels work with JAX or PyTorch logits. When the first argument is
    not an array, the first non-NumPy array fixes the namespace, else NumPy.
    The first ``required`` arguments must not be ``None`` (they are the arrays
    the call works on); ``None`` in the others (optional arrays) passes through
    unchanged. Any other object (a TensorFlow tensor, a
    pandas Series) raises :class:`SoftmaxkitTypeError` naming its type and the
    entry point to use: it is never silently converted.
    """

    def nm(i: int) -> str:
        return names[i] if names else f"argument {i}"

    for i, o in enumerate(objs):
        if o is None and i < required:
            msg = f"`{nm(i)}` is None; pass an array (or a nested sequence of numbers)"
            raise SoftmaxkitTypeError(msg)
        if isinstance(o, (np.ma.MaskedArray, np.matrix)):
            raise _subclass_error(o, nm(i))
        if o is None:
            continue
        check_not_longdouble(getattr(o, "dtype", None), nm(i))
        if _is_arraylike(o):
            continue
        _check_plain(o, nm(i), allow_complex=allow_complex)
    arrays = [o for o in objs if o is not None and _is_arraylike(o)]
    foreign = [a for a in arrays if not _aac.is_numpy_array(a)]
    first = objs[0] if objs else None
    if foreign:
        primary = foreign[0]
        if first is not None and _is_arraylike(first) and _aac.is_numpy_array(first):
            i = next(j for j, o in enumerate(objs) if o is primary)
            msg = (
                f"`{nm(0)}` is a NumPy array but `{nm(i)}` is a {_library(primary)} array; "
                f"the first argument fixes the array library, so convert `{nm(i)}` to NumPy "
                f"or `{nm(0)}` to {_library(primary)}"
            )
            raise SoftmaxkitTypeError(msg)
        try:
            xp = _aac.array_namespace(*foreign)
        except TypeError as exc:
            kinds = sorted({_library(a) for a in foreign})
            msg = (
                "the array arguments come from different array libraries "
                f"({', '.join(kinds)}); convert them to one library first"
            )
            raise SoftmaxkitTypeError(msg) from exc
        dev = device_of(primary)
        for a in foreign[1:]:  # (no device: a traced JAX value, placed by JAX)
            if dev is not None and (other := device_of(a)) is not None and other != dev:
                i = next(j for j, o in enumerate(objs) if o is a)
                j = next(j for j, o in enumerate(objs) if o is primary)
                msg = (
                    f"`{nm(i)}` is on device {other} but `{nm(j)}` is on {dev}; "
                    f"move `{nm(i)}` to {dev} first"
                )
                raise SoftmaxkitValueError(msg)
        if not _torch_mkl.primed() and is_torch(xp):
            _torch_mkl.prime()  # before the engine's first torch.exp (pytorch#188792)
    elif arrays:
        xp = _aac.array_namespace(*arrays)
        dev = None
    else:
        xp = _aac.array_namespace(np.empty(0))
        dev = None
    out: list[Any] = []
    for i, o in enumerate(objs):
        if o is None or (_is_arraylike(o) and not (foreign and _aac.is_numpy_array(o))):
            out.append(o)
            continue
        try:
            if not foreign:
                out.append(xp.asarray(np.asarray(o)))
            else:  # NumPy data keeps its dtype; Python numbers take xp's defaults
                out.append(xp.asarray(o, device=dev))
        except (TypeError, ValueError) as exc:
            msg = (
                f"`{nm(i)}` must be an array or a nested sequence of numbers, "
                f"got {type(o).__name__}"
            )
            raise SoftmaxkitTypeError(msg) from exc
        check_not_longdouble(getattr(out[-1], "dtype", None), nm(i))  # nested np.longdouble
    return xp, out


def device_of(x: Array) -> Any:
    """The device an array lives on (``None`` for objects without one)."""
    try:
        return _aac.device(x)
    except Exception:
        return None


def is_numpy(xp: Namespace) -> bool:
    return bool(_aac.is_numpy_namespace(xp))


def is_torch(xp: Namespace) -> bool:
    return bool(_aac.is_torch_namespace(xp))


def is_jax(xp: Namespace) -> bool:
    return bool(_aac.is_jax_namespace(xp))


def is_concrete(x: Array) -> bool:
    """Whether the values of ``x`` can be inspected now without forcing a lazy graph.

    Data-dependent checks (class index range, negative probabilities) run only on
    concrete arrays; Dask arrays defer them to their blocks (``_validation.checked``),
    and arrays traced by ``jax.jit`` or ``torch.compile`` skip them.
    """
    if _aac.is_dask_array(x):
        return False
    if _aac.is_jax_array(x):
        jax = sys.modules.get("jax")
        if jax is None:  # pragma: no cover - a jax array implies jax is imported
            return False
        return not isinstance(x, jax.core.Tracer)
    if _aac.is_torch_array(x):
        if str(x.device) == "meta":
            return False
        torch = sys.modules.get("torch")
        compiler = getattr(torch, "compiler", None)
        # under torch.compile a data check would break the graph (fullgraph=True: an error);
        # under torch.func.vmap a tensor's values cannot steer Python control flow
        if compiler is not None and compiler.is_compiling():
            return False
        return not (torch is not None and torch._C._are_functorch_transforms_active())
    return True


@contextlib.contextmanager
def eager_checks(xp: Namespace) -> Iterator[None]:
    """Run data-dependent checks of concrete arrays eagerly, even inside a trace.

    Under ``jax.jit`` every operation is staged into the traced program, also on
    closed-over concrete arrays, so ``bool()`` of a check would meet a tracer.
    ``jax.ensure_compile_time_eval`` evaluates them now instead. Arrays that are
    themselves traced never get here (:func:`is_concrete` is False for them).
    """
    if is_jax(xp):
        jax = sys.modules["jax"]
        with jax.ensure_compile_time_eval():
            yield
    else:
        yield


_NP_DTYPE_NAMES: dict[np.dtype[Any], str] = {}


def _dtype_name(dtype: Any) -> str:
    if isinstance(dtype, np.dtype):  # NumPy's ``dtype.name`` is slow Python: cache it
        got = _NP_DTYPE_NAMES.get(dtype)
        if got is None:
            got = _NP_DTYPE_NAMES[dtype] = dtype.name
        return got
    if isinstance(dtype, type):  # NumPy / JAX scalar types such as numpy.float64
        try:
            return np.dtype(dtype).name
        except TypeError:
            return dtype.__name__
    name = getattr(dtype, "name", None)
    if isinstance(name, str):
        return name
    return str(dtype).rsplit(".", 1)[-1].strip("'>")


def dtype_kind(xp: Namespace, dtype: Any) -> str:
    """Classify a dtype: "float", "half", "int", "bool", "complex" or "other"."""
    name = _dtype_name(dtype)
    if name in ("float16", "bfloat16", "half"):
        return "half"
    if name in ("float32", "float64", "float", "double"):
        return "float"
    if name == "bool":
        return "bool"
    try:
        if xp.isdtype(dtype, "complex floating"):
            return "complex"
        if xp.isdtype(dtype, "integral"):
            return "int"
        if xp.isdtype(dtype, "real floating"):
            return "float"
    except Exception:
        return "other"
    return "other"


def _info_dtypes(xp: Namespace, device: Any) -> dict[str, Any]:
    try:
        info = xp.__array_namespace_info__()
        return dict(info.dtypes(device=device, kind="real floating"))
    except Exception:
        return {"float32": xp.float32, "float64": xp.float64}


def has_float64(xp: Namespace, device: Any) -> bool:
    if is_jax(xp):
        jax = sys.modules["jax"]
        return bool(jax.config.jax_enable_x64)
    return "float64" in _info_dtypes(xp, device)


def default_float(xp: Namespace, device: Any) -> Any:
    if is_jax(xp):
        return xp.float64 if has_float64(xp, device) else xp.float32
    try:
        return xp.__array_namespace_info__().default_dtypes(device=device)["real floating"]
    except Exception:
        return xp.float64


def default_int(xp: Namespace, device: Any) -> Any:
    if is_jax(xp):
        return xp.int64 if has_float64(xp, device) else xp.int32
    try:
        return xp.__array_namespace_info__().default_dtypes(device=device)["integral"]
    except Exception:
        return xp.int64


@dataclass(frozen=True)
class Plan:
    """How to compute one op on one input.

    ``work`` is the dtype the arithmetic runs in and ``out`` the dtype returned.
    ``mode`` is ``"wide"`` when ``work`` carries enough extra bits that plain
    arithmetic rounds correctly into ``out`` (float32 data computed in float64),
    ``"dd"`` when the accurate mode must emulate extra precision with
    double-word arithmetic (float64 data, or float32 data on a backend without
    float64), and ``"plain"`` for ``precision="fast"``.
    """

    xp: Namespace
    work: Any
    out: Any
    mode: Literal["wide", "dd", "plain"]
    device: Any
    x64: bool = False  # JAX without x64: float64 work is switched on inside the call only


#: (significand bits, largest exponent) of the output formats narrower than their work dtype
_NARROW_FORMATS = {"float32": (24, 127), "float16": (11, 15), "bfloat16": (8, 127)}


def to_out(v: Array, plan: Plan) -> Array:
    """``v`` (``plan.work``) rounded once to ``plan.out``; overflow gives ``±inf`` silently.

    A magnitude of at least ``(2 - 2**-p) * 2**emax`` (the largest finite value
    plus half its ulp) rounds to infinity: the tie goes to the even neighbour,
    infinity. Such values are made infinite before the cast, so NumPy's cast
    raises no overflow warning: an overflowing result is a defined answer of the
    contract, not an error.
    """
    xp = plan.xp
    fmt = _NARROW_FORMATS.get(dtype_name(plan.out))
    if plan.out == plan.work or fmt is None:
        return xp.astype(v, plan.out)  # a copy: v may be the caller's array
    thr = math.ldexp(2.0 - 2.0 ** -fmt[0], fmt[1])
    inf = xp.asarray(math.inf, dtype=plan.work, device=plan.device)
    big = xp.abs(v) >= thr
    return xp.astype(xp.where(big, xp.where(v > 0, inf, -inf), v), plan.out)


_VALID_PRECISION = ("accurate", "fast")


def check_precision(precision: object) -> Precision:
    if precision not in _VALID_PRECISION:
        msg = f"`precision` must be 'accurate' or 'fast', got {precision!r}"
        raise SoftmaxkitValueError(msg)
    return precision  # type: ignore[return-value]


def make_plan(xp: Namespace, x: Array, precision: object, *, name: str = "x") -> Plan:
    """Choose working and output dtypes for a floating-point computation on ``x``."""
    prec = check_precision(precision)
    dev = device_of(x)
    dtype = getattr(x, "dtype", None)
    check_not_longdouble(dtype, name)
    kind = dtype_kind(xp, dtype)
    if kind == "complex":
        msg = f"`{name}` is complex ({_dtype_name(dtype)}); softmaxkit works on real numbers only"
        raise SoftmaxkitTypeError(msg)
    if kind == "other":
        msg = (
            f"`{name}` has dtype {dtype}, which is not numeric; "
            "pass an array of floats (or integers, which are promoted)"
        )
        raise SoftmaxkitTypeError(msg)
    f64 = has_float64(xp, dev)
    out = default_float(xp, dev) if kind in ("int", "bool") else dtype
    if isinstance(out, np.dtype) and not out.isnative:
        out = out.newbyteorder("=")  # results come in native byte order, as from ufuncs
    out_name = _dtype_name(out)
    if prec == "fast":
        work = xp.float64 if out_name == "float64" else xp.float32
        return Plan(xp, work, out, "plain", dev)
    if out_name == "float64":
        return Plan(xp, xp.float64, out, "dd", dev)
    if f64:
        return Plan(xp, xp.float64, out, "wide", dev)
    if is_jax(xp) and _x64_scope_available():
        # float64 exists on every JAX device but is off by default: scope it to this call
        # (``jax.enable_x64`` inside :func:`call`) instead of emulating it with float-float
        return Plan(xp, xp.float64, out, "wide", dev, x64=True)
    if out_name == "float32":
        return Plan(xp, xp.float32, out, "dd", dev)
    # half precision on a backend without float64: float32 still has 13+ spare bits
    return Plan(xp, xp.float32, out, "wide", dev)


def dtype_name(dtype: Any) -> str:
    """A short, library-independent name of a dtype (``"float32"``, ``"bfloat16"`` ...)."""
    return _dtype_name(dtype)


def numpy_scalars(xp: Namespace, res: Any) -> Any:
    """NumPy results that are 0-d become NumPy scalars, as from NumPy's own reductions.

    ``np.sum(a)`` and ``scipy.special.logsumexp(a)`` return ``numpy.float64``,
    not a 0-d array; so do softmaxkit's reductions on NumPy input. Tuples
    (``return_sign``, ``return_grad``) are converted entry by entry.
    """
    if not is_numpy(xp):
        return res
    if isinstance(res, tuple):
        return tuple(numpy_scalars(xp, r) for r in res)
    if isinstance(res, np.ndarray) and res.ndim == 0:
        return res[()]
    return res


def _x64_scope_available() -> bool:
    jax = sys.modules.get("jax")
    if jax is None or not callable(getattr(jax, "enable_x64", None)):
        return False
    if os.environ.get(ENV_ENGINE, "").strip().lower() == "agnostic-dd":
        return False  # the float-float engine, kept reachable for comparison
    backend = getattr(jax, "default_backend", lambda: "cpu")()
    return backend in ("cpu", "gpu", "cuda", "rocm")  # TPUs emulate float64 slowly


@lru_cache(maxsize=512)
def _jitted(fn: Callable[..., Any], static: tuple[tuple[str, Any], ...]) -> Callable[..., Any]:
    jax = sys.modules["jax"]
    kwargs = dict(static)

    def run(arrays: dict[str, Any]) -> Any:
        return fn(**arrays, **kwargs)

    return jax.jit(run)  # type: ignore[no-any-return]


def call(
    xp: Namespace, fn: Callable[..., Any], arrays: dict[str, Any], static: dict[str, Any]
) -> Any:
    """Run an array-agnostic implementation.

    On JAX the whole computation is compiled once per static configuration with
    ``jax.jit`` (eager JAX would dispatch and compile a few hundred small ops one
    by one); inside a user's ``jit`` this simply traces into it. Elsewhere the
    function runs as is.
    """
    if is_jax(xp):
        plan = static.get("plan")
        if isinstance(plan, Plan) and plan.x64:
            jax = sys.modules["jax"]
            with jax.enable_x64(True):
                return _call_jax(fn, arrays, static)
        return _call_jax(fn, arrays, static)
    return fn(**arrays, **static)


def _call_jax(fn: Callable[..., Any], arrays: dict[str, Any], static: dict[str, Any]) -> Any:
    try:
        key = tuple(sorted(static.items()))
        hash(key)
    except TypeError:  # pragma: no cover - every static argument is hashable
        return fn(**arrays, **static)
    return _jitted(fn, key)(arrays)
