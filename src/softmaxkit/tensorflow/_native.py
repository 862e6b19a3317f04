"""The C core inside TensorFlow's XLA: softmaxkit's FFI handlers as custom calls.

TensorFlow bundles its own XLA. Its FFI C API table is exported by
``libtensorflow_cc`` (``xla::ffi::GetXlaFfiApi``), so the handlers that serve
JAX (``_csrc/xla_ffi.c``) are registered with it once, for the host platform.
A call is then one ``XlaCallModule`` op holding a StableHLO module of one
``stablehlo.custom_call`` (typed FFI, attributes as a dictionary). Every
softmaxkit kernel runs inside an XLA computation anyway (eager calls go
through ``tf.function(jit_compile=True)``), so the custom call serves eager,
``tf.function`` and ``jit_compile`` alike, and inside a caller's own XLA
function it is fused in like any op.

The route is taken only where it is sound:

- the handlers were built and registered (a TensorFlow without the exported
  table, or an incompatible FFI version, keeps the TensorFlow-op kernels);
- TensorFlow sees no device but the CPU (the module is compiled for the host);
- float32/float64 tensors of fully known shape, reduced over the last axis
  (softmax, log_softmax, logsumexp, integer-label cross-entropy);
- not while ``tf.saved_model.save`` traces: a SavedModel must reload and run in
  a process that never imports softmaxkit, so saved graphs hold the
  TensorFlow-op kernels.

Results are those of the NumPy path bit for bit (the same engines); subnormal
results are kept (the handlers run with IEEE subnormals), where TensorFlow's
own kernels flush them to zero. Nothing here validates user input.
"""

from __future__ import annotations

import ctypes
import functools
import os
import struct
from typing import Any

import tensorflow as tf

try:
    from .. import _ckernels

    _HAVE = hasattr(_ckernels, "xla_register")
except ImportError:  # pragma: no cover - the C core always builds with the package
    _HAVE = False

__all__ = [
    "available",
    "cross_entropy",
    "eligible",
    "logsumexp",
    "mode_code",
    "softmax",
    "vjp",
]

Tensor = Any

#: ``xla::ffi::GetXlaFfiApi()`` (no arguments, returns ``const XLA_FFI_Api*``).
_API_SYMBOL = "_ZN3xla3ffi12GetXlaFfiApiEv"
#: The ``XlaCallModule`` serialisation version written (9: typed FFI custom calls).
_MODULE_VERSION = 9
_TYPES = {tf.float32: "f32", tf.float64: "f64", tf.int32: "i32", tf.int64: "i64", tf.bool: "i1"}


@functools.lru_cache(maxsize=1)
def _registered() -> bool:
    """Register the handlers with TensorFlow's XLA once; whether that worked."""
    if not _HAVE:
        return False
    lib_path = os.path.join(os.path.dirname(tf.__file__), "libtensorflow_cc.so.2")
    try:
        fn = getattr(ctypes.CDLL(lib_path), _API_SYMBOL)
    except (OSError, AttributeError):
        return False
    fn.restype = ctypes.c_void_p
    fn.argtypes = []
    api = fn()
    if not api:
        return False
    try:
        _ckernels.xla_register(int(api), "Host")
    except RuntimeError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _cpu_only() -> bool:
    return all(d.device_type == "CPU" for d in tf.config.list_logical_devices())


def available() -> bool:
    """Whether the C core can run inside this process's TensorFlow XLA."""
    return _cpu_only() and _registered()


def mode_code(precision: str) -> int:
    """The C core's precision code for a checked ``precision`` (fast 0, accurate 1)."""
    return 1 if precision == "accurate" else 0


def _saving() -> bool:
    from tensorflow.python.saved_model import save_context

    return bool(save_context.in_save_context())


def eligible(x: Tensor, axes: tuple[int, ...]) -> bool:
    """Whether ``x`` reduced over ``axes`` may take the custom-call route now."""
    rank = x.shape.rank
    return (
        x.dtype in (tf.float32, tf.float64)
        and rank is not None
        and rank >= 1
        and tuple(axes) == (rank - 1,)
        and x.shape.is_fully_defined()
        and not _saving()
        and available()
    )


def _tensor_type(shape: tuple[int, ...], dtype: Any) -> str:
    return "tensor<" + "".join(f"{d}x" for d in shape) + _TYPES[dtype] + ">"


def _attr(name: str, v: int | float) -> str:
    if isinstance(v, float):  # the exact bits: MLIR reads a hex literal as the pattern
        bits = struct.unpack("<Q", struct.pack("<d", v))[0]
        return f"{name} = 0x{bits:016X} : f64"
    return f"{name} = {int(v)} : i64"


@functools.lru_cache(maxsize=512)
def _artifact(
    target: str,
    ins: tuple[tuple[tuple[int, ...], Any], ...],
    outs: tuple[tuple[tuple[int, ...], Any], ...],
    attrs: tuple[tuple[str, int | float], ...],
) -> bytes:
    """The serialised StableHLO module of one typed-FFI custom call."""
    from tensorflow.compiler.mlir.stablehlo import stablehlo

    arg_t = [_tensor_type(s, d) for s, d in ins]
    res_t = [_tensor_type(s, d) for s, d in outs]
    params = ", ".join(f"%a{i}: {t}" for i, t in enumerate(arg_t))
    operands = ", ".join(f"%a{i}" for i in range(len(arg_t)))
    results = res_t[0] if len(res_t) == 1 else "(" + ", ".join(res_t) + ")"
    config = ", ".join(_attr(k, v) for k, v in attrs)
    if len(res_t) == 1:
        lhs, returned = "%r", "%r"
    else:
        lhs, returned = f"%r:{len(res_t)}", ", ".join(f"%r#{i}" for i in range(len(res_t)))
    text = (
        "module @softmaxkit attributes {mhlo.num_partitions = 1 : i32, "
        "mhlo.num_replicas = 1 : i32} {\n"
        f"  func.func public @main({params}) -> {results} {{\n"
        f"    {lhs} = stablehlo.custom_call @{target}({operands}) "
        f"{{api_version = 4 : i32, backend_config = {{{config}}}}} "
        f": ({', '.join(arg_t)}) -> {results}\n"
        f"    return {returned} : {', '.join(res_t)}\n"
        "  }\n}\n"
    )
    art = stablehlo.serialize_portable_artifact_str(text, stablehlo.get_current_version())
    return bytes(art)


def _call(
    target: str,
    operands: list[Tensor],
    outs: list[tuple[tuple[int, ...], Any]],
    attrs: dict[str, int | float],
) -> list[Tensor]:
    from tensorflow.compiler.tf2xla.ops import gen_xla_ops

    ins = tuple((tuple(int(d) for d in t.shape), t.dtype) for t in operands)
    art = _artifact(target, ins, tuple(outs), tuple(sorted(attrs.items())))
    return list(
        gen_xla_ops.xla_call_module(
            operands,
            version=_MODULE_VERSION,
            module=art,
            Sout=[list(s) for s, _ in outs],
            Tout=[d for _, d in outs],
            dim_args_spec=[],
            platforms=["CPU"],
            function_list=[],
            has_token_input_output=False,
            disabled_checks=[],
        )
    )


def _threads() -> int:
    from .._dispatch import default_threads

    return int(default_threads())


def softmax(x: Tensor, mask: Tensor | None, *, log: bool, mode: int, t: float) -> Tensor:
    """softmax / log_softmax over the last axis (``mask``: x's shape, True = kept)."""
    ops = [x] if mask is None else [x, mask]
    shape = tuple(int(d) for d in x.shape)
    attrs = {
        "log": int(log),
        "mode": mode,
        "threads": _threads(),
        "has_mask": int(mask is not None),
        "temperature": float(t),
    }
    return _call("softmaxkit_softmax", ops, [(shape, x.dtype)], attrs)[0]


def logsumexp(x: Tensor, mask: Tensor | None, *, mode: int) -> Tensor:
    """logsumexp over the last axis, kept as an axis of size 1."""
    ops = [x] if mask is None else [x, mask]
    shape = tuple(int(d) for d in x.shape)
    attrs: dict[str, int | float] = {
        "mode": mode,
        "threads": _threads(),
        "has_b": 0,
        "has_mask": int(mask is not None),
    }
    v = _call("softmaxkit_logsumexp", ops, [(shape[:-1], x.dtype)], attrs)[0]
    return tf.expand_dims(v, -1)


def vjp(y: Tensor, g: Tensor, *, log: bool, mode: int) -> Tensor:
    """The vector-Jacobian product of softmax / log_softmax from its output ``y``."""
    g = tf.cast(g, y.dtype)
    shape = tuple(int(d) for d in y.shape)
    attrs: dict[str, int | float] = {"islog": int(log), "mode": mode, "threads": _threads()}
    return _call("softmaxkit_vjp", [y, g], [(shape, y.dtype)], attrs)[0]


def cross_entropy(
    x: Tensor, labels: Tensor, mask: Tensor | None, ct: Tensor | None, *, mode: int
) -> Tensor:
    """Per-row integer-label cross-entropy; with ``ct`` (a cotangent per row) its gradient.

    A label outside ``[0, C)`` gives a NaN loss and, with ``ct``, a NaN gradient row
    (TensorFlow's behaviour under XLA, where nothing can raise).
    """
    ops = [x, labels] + ([] if mask is None else [mask]) + ([] if ct is None else [ct])
    shape = tuple(int(d) for d in x.shape)
    outs = [(shape[:-1], x.dtype)] + ([] if ct is None else [(shape, x.dtype)])
    attrs = {
        "mode": mode,
        "threads": _threads(),
        "has_ignore": 0,
        "ignore_index": 0,
        "z_loss": 0.0,
        "reduction": 0,
        "want_grad": int(ct is not None),
        "has_weight": 0,
        "has_mask": int(mask is not None),
        "has_ct": int(ct is not None),
        "tdims": len(shape) - 1,
        "wrap_labels": 2,
    }
    res = _call("softmaxkit_cross_entropy", ops, outs, attrs)
    return res[0] if ct is None else res[1]
