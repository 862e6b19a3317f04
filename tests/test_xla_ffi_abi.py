"""The XLA FFI handlers called through XLA's C ABI by hand, without JAX.

The call frames XLA would pass (buffers, named scalar attributes, the metadata
query) are built with ctypes from NumPy arrays, so the handlers of
``_csrc/xla_ffi.c`` run and are checked against the NumPy path without jaxlib.
This is how they are tested under AddressSanitizer (tools/run_sanitized.py):
jaxlib's compiler cannot run with the sanitizer runtime preloaded.
"""

from __future__ import annotations

import ctypes as C
from typing import Any

import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit import _ckernels

pytestmark = pytest.mark.skipif(
    not hasattr(_ckernels, "xla_handlers"),
    reason="built without jaxlib's FFI headers: pip install jax, then reinstall softmaxkit",
)

F32, F64, S32, S64, PRED = 11, 12, 4, 5, 1
_DT = {np.float32: F32, np.float64: F64, np.int32: S32, np.int64: S64, np.bool_: PRED}


class Buffer(C.Structure):
    _fields_ = [
        ("struct_size", C.c_size_t),
        ("ext", C.c_void_p),
        ("dtype", C.c_int),
        ("data", C.c_void_p),
        ("rank", C.c_int64),
        ("dims", C.POINTER(C.c_int64)),
    ]


class Span(C.Structure):
    _fields_ = [("ptr", C.c_char_p), ("len", C.c_size_t)]


class Scalar(C.Structure):
    _fields_ = [("dtype", C.c_int), ("value", C.c_void_p)]


class List(C.Structure):  # XLA_FFI_Args and XLA_FFI_Rets
    _fields_ = [
        ("struct_size", C.c_size_t),
        ("ext", C.c_void_p),
        ("size", C.c_int64),
        ("types", C.POINTER(C.c_int)),
        ("items", C.POINTER(C.c_void_p)),
    ]


class Attrs(C.Structure):
    _fields_ = [
        ("struct_size", C.c_size_t),
        ("ext", C.c_void_p),
        ("size", C.c_int64),
        ("types", C.POINTER(C.c_int)),
        ("names", C.POINTER(C.POINTER(Span))),
        ("attrs", C.POINTER(C.c_void_p)),
    ]


class CallFrame(C.Structure):
    _fields_ = [
        ("struct_size", C.c_size_t),
        ("ext", C.c_void_p),
        ("api", C.c_void_p),
        ("ctx", C.c_void_p),
        ("stage", C.c_int),
        ("args", List),
        ("rets", List),
        ("attrs", Attrs),
        ("future", C.c_void_p),
    ]


class ErrorArgs(C.Structure):
    _fields_ = [
        ("struct_size", C.c_size_t),
        ("ext", C.c_void_p),
        ("message", C.c_char_p),
        ("errc", C.c_int),
    ]


ERROR_CREATE = C.CFUNCTYPE(C.c_void_p, C.POINTER(ErrorArgs))


class Api(C.Structure):  # the fields up to XLA_FFI_Error_Create
    _fields_ = [
        ("struct_size", C.c_size_t),
        ("ext", C.c_void_p),
        ("version", C.c_size_t * 3),  # XLA_FFI_Api_Version: size, ext, two ints
        ("internal", C.c_void_p),
        ("error_create", ERROR_CREATE),
    ]


HANDLER = C.CFUNCTYPE(C.c_void_p, C.POINTER(CallFrame))
C.pythonapi.PyCapsule_GetPointer.restype = C.c_void_p
C.pythonapi.PyCapsule_GetPointer.argtypes = [C.py_object, C.c_char_p]


def _handler(name: str) -> Any:
    cap = _ckernels.xla_handlers()[name]
    return HANDLER(C.pythonapi.PyCapsule_GetPointer(cap, None))


class Call:
    """One call frame: NumPy arrays in and out, attributes by name."""

    def __init__(self, args: list[np.ndarray], rets: list[np.ndarray], attrs: dict[str, Any]):
        self.keep: list[Any] = []
        self.errors: list[str] = []

        def bufs(arrays: list[np.ndarray]) -> List:
            items = (C.c_void_p * len(arrays))()
            for i, a in enumerate(arrays):
                dims = (C.c_int64 * max(1, a.ndim))(*a.shape)
                b = Buffer(C.sizeof(Buffer), None, _DT[a.dtype.type], a.ctypes.data, a.ndim, dims)
                self.keep += [dims, b]
                items[i] = C.addressof(b)
            types = (C.c_int * len(arrays))(*[1] * len(arrays))
            self.keep += [items, types]
            return List(C.sizeof(List), None, len(arrays), types, items)

        names = sorted(attrs)
        spans = (C.POINTER(Span) * len(names))()
        vals = (C.c_void_p * len(names))()
        for i, k in enumerate(names):
            v = attrs[k]
            if isinstance(v, float):
                cv: Any = C.c_double(v)
                sc = Scalar(F64, C.cast(C.pointer(cv), C.c_void_p))
            else:
                cv = C.c_int64(int(v))
                sc = Scalar(S64, C.cast(C.pointer(cv), C.c_void_p))
            sp = Span(k.encode(), len(k))
            self.keep += [cv, sc, sp]
            spans[i] = C.pointer(sp)
            vals[i] = C.addressof(sc)
        atypes = (C.c_int * len(names))(*[3] * len(names))
        self.keep += [spans, vals, atypes]

        def create(a: Any) -> int:
            self.errors.append(a.contents.message.decode())
            return 1  # an opaque non-null error

        self.cb = ERROR_CREATE(create)
        self.api = Api(C.sizeof(Api), None, (C.c_size_t * 3)(), None, self.cb)
        self.frame = CallFrame(
            C.sizeof(CallFrame), None, C.addressof(self.api), None, 3,
            bufs(args), bufs(rets),
            Attrs(C.sizeof(Attrs), None, len(names), atypes, spans, vals), None,
        )  # fmt: skip

    def run(self, name: str) -> Any:
        return _handler(name)(C.byref(self.frame))


def _x(shape: tuple[int, ...], dt: Any, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * 3).astype(dt)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_normalize_lse_vjp_match_numpy(dt: Any) -> None:
    x = _x((5, 37), dt)
    m = np.random.default_rng(1).random(x.shape) > 0.3
    for log in (0, 1):
        out = np.empty_like(x)
        attrs = {"log": log, "mode": 1, "threads": 2, "has_mask": 1, "temperature": 1.5}
        assert Call([x, m], [out], attrs).run("softmaxkit_softmax") is None
        fn = sk.log_softmax if log else sk.softmax
        np.testing.assert_array_equal(out, fn(x, where=m, temperature=1.5))
    b = _x(x.shape, dt, 2)
    lse, sign = np.empty(5, dt), np.empty(5, dt)
    attrs = {"mode": 0, "threads": 1, "has_b": 1, "has_mask": 0}
    assert Call([x, b], [lse, sign], attrs).run("softmaxkit_logsumexp") is None
    want = sk.logsumexp(x, b=b, return_sign=True, precision="fast")
    np.testing.assert_array_equal(lse, want[0])
    np.testing.assert_array_equal(sign, want[1])
    y, g, out = sk.softmax(x), _x(x.shape, dt, 3), np.empty_like(x)
    assert Call([y, g], [out], {"islog": 0, "mode": 1, "threads": 2}).run("softmaxkit_vjp") is None
    np.testing.assert_array_equal(out, sk.softmax_vjp(y, g))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_cross_entropy_and_bce_match_numpy(dt: Any) -> None:
    x = _x((2, 6, 11), dt)  # two vmap groups of six rows
    t = np.random.default_rng(4).integers(0, 11, (2, 6)).astype(np.int32)
    w = np.random.default_rng(5).random(11).astype(dt)
    loss, grad = np.empty(2, dt), np.empty_like(x)
    attrs = {
        "mode": 1, "threads": 2, "has_ignore": 1, "ignore_index": 3, "z_loss": 0.01,
        "reduction": 2, "want_grad": 1, "has_weight": 1, "has_mask": 0, "tdims": 1,
        "wrap_labels": 0, "has_ct": 0,
    }  # fmt: skip
    assert Call([x, t, w], [loss, grad], attrs).run("softmaxkit_cross_entropy") is None
    for i in range(2):
        kw = {"weight": w, "ignore_index": 3, "z_loss": 0.01, "return_grad": True}
        want = sk.cross_entropy(x[i], t[i].astype(np.int64), **kw)
        np.testing.assert_array_equal(loss[i], want[0])
        np.testing.assert_array_equal(grad[i], want[1])
    y = (np.random.default_rng(6).random(x.shape) > 0.5).astype(dt)
    out, g = np.empty(2, dt), np.empty_like(x)
    attrs = {
        "kind": 2, "mode": 0, "threads": 1, "has_w": 0, "has_pw": 0,
        "reduction": 1, "want_grad": 1, "xdims": 2,
    }  # fmt: skip
    assert Call([x, y], [out, g], attrs).run("softmaxkit_sigmoid") is None
    for i in range(2):
        want = sk.binary_cross_entropy_with_logits(
            x[i], y[i], reduction="sum", return_grad=True, precision="fast"
        )
        np.testing.assert_array_equal(out[i], want[0])
        np.testing.assert_array_equal(g[i], want[1])


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_cross_entropy_cotangent_scales_each_row(dt: Any) -> None:
    """has_ct: the per-row cotangent scales each row's loss and gradient (exact scalings here)."""
    x = _x((5, 9), dt)
    t = np.array([0, 8, 3, 3, 1], np.int64)
    ct = np.array([1.0, 2.0, 0.0, -1.0, 0.5], dt)
    loss, grad = np.empty(5, dt), np.empty_like(x)
    attrs = {
        "mode": 1, "threads": 1, "has_ignore": 0, "ignore_index": 0, "z_loss": 0.0,
        "reduction": 0, "want_grad": 1, "has_weight": 0, "has_mask": 0, "tdims": 1,
        "wrap_labels": 0, "has_ct": 1,
    }  # fmt: skip
    assert Call([x, t, ct], [loss, grad], attrs).run("softmaxkit_cross_entropy") is None
    want, wgrad = sk.cross_entropy(x, t, reduction="none", return_grad=True)
    np.testing.assert_array_equal(loss, want * ct)
    np.testing.assert_array_equal(grad, wgrad * ct[:, None])


@pytest.mark.parametrize("mode", [1, 0], ids=["accurate", "fast"])
@pytest.mark.parametrize("qt", [np.float32, np.float64])
def test_probability_target_cross_entropy_matches_numpy(qt: Any, mode: int) -> None:
    """softmaxkit_prob_cross_entropy: two vmap groups, every reduction, with and without
    the gradient, the NumPy path's bits in either mode (``mode`` 0: skit_prob_ce_fast);
    a group holding a row the core does not take (+inf) or a negative target flags it
    (1, 2) and writes zeros; bad shapes are errors."""
    precision = "fast" if mode == 0 else "accurate"
    rng = np.random.default_rng(9)
    x = _x((2, 6, 11), np.float32)
    q = rng.dirichlet(np.ones(11), (2, 6)).astype(qt)
    for red, name in ((0, "none"), (1, "mean"), (2, "sum")):
        for want_grad in (0, 1):
            loss = np.empty((2, 6) if red == 0 else 2, np.float32)
            grad = np.empty_like(x)
            flag = np.full(2, 7, np.int32)
            attrs = {"mode": mode, "threads": 2, "eps": 0.1, "z_loss": 0.01,
                     "reduction": red, "want_grad": want_grad, "xdims": 2}  # fmt: skip
            rets = [loss, grad, flag] if want_grad else [loss, flag]
            assert Call([x, q], rets, attrs).run("softmaxkit_prob_cross_entropy") is None
            assert not flag.any()
            for i in range(2):
                kw = {"label_smoothing": 0.1, "z_loss": 0.01, "reduction": name}
                want = sk.cross_entropy(x[i], q[i], return_grad=True, precision=precision, **kw)
                np.testing.assert_array_equal(loss[i], want[0])
                if want_grad:
                    np.testing.assert_array_equal(grad[i], want[1])
    xb, qb = x.copy(), q.copy()
    xb[0, 2, 3] = np.inf
    qb[1, 4, 5] = -0.5
    loss, grad, flag = np.ones(2, np.float32), np.ones_like(x), np.zeros(2, np.int32)
    attrs = {"mode": mode, "threads": 1, "eps": 0.0, "z_loss": 0.0, "reduction": 1,
             "want_grad": 1, "xdims": 2}  # fmt: skip
    assert Call([xb, qb], [loss, grad, flag], attrs).run("softmaxkit_prob_cross_entropy") is None
    assert list(flag) == [1, 2] and not loss.any() and not grad.any()
    call = Call([x, q[:, :5]], [loss, grad, flag], attrs)
    assert call.run("softmaxkit_prob_cross_entropy") is not None
    assert "operand shapes" in call.errors[0]


def test_errors_and_metadata() -> None:
    x = _x((3, 4), np.float32)
    t = np.array([0, 9, 1], np.int64)
    attrs = {
        "mode": 1, "threads": 1, "has_ignore": 0, "ignore_index": 0, "z_loss": 0.0,
        "reduction": 0, "want_grad": 0, "has_weight": 0, "has_mask": 0, "tdims": 1,
        "has_ct": 0,
    }  # fmt: skip
    call = Call([x, t], [np.empty(3, np.float32)], {**attrs, "wrap_labels": 0})
    assert call.run("softmaxkit_cross_entropy") is not None
    assert call.errors == ["softmaxkit FFI: target 9 out of range [0, 4)"]
    # optax's indexing: -1 is the last class, 9 gives NaN and a zero gradient row
    loss, grad = np.empty(3, np.float32), np.empty_like(x)
    t = np.array([-1, 9, 1], np.int64)
    call = Call([x, t], [loss, grad], {**attrs, "wrap_labels": 1, "want_grad": 1})
    assert call.run("softmaxkit_cross_entropy") is None
    want, wgrad = sk.cross_entropy(x, np.array([3, 0, 1]), reduction="none", return_grad=True)
    np.testing.assert_array_equal(loss[[0, 2]], want[[0, 2]])
    assert np.isnan(loss[1]) and not grad[1].any()
    np.testing.assert_array_equal(grad[[0, 2]], wgrad[[0, 2]])
    call = Call([x], [np.empty_like(x)], {"log": 0})  # attributes missing
    assert call.run("softmaxkit_softmax") is not None
    assert "missing scalar attribute" in call.errors[0]
    empty = np.empty((3, 0), np.float64)
    lse = np.zeros(3, np.float64)
    attrs = {"mode": 1, "threads": 1, "has_b": 0, "has_mask": 0}
    assert Call([empty], [lse], attrs).run("softmaxkit_logsumexp") is None
    np.testing.assert_array_equal(lse, -np.inf)


class Metadata(C.Structure):
    _fields_ = [
        ("struct_size", C.c_size_t),
        ("v_size", C.c_size_t),
        ("v_ext", C.c_void_p),
        ("major", C.c_int),
        ("minor", C.c_int),
        ("traits", C.c_uint32),
        ("state_type_id", C.c_int64),
    ]


class MetadataExt(C.Structure):
    _fields_ = [
        ("struct_size", C.c_size_t),
        ("type", C.c_int),
        ("next", C.c_void_p),
        ("metadata", C.POINTER(Metadata)),
    ]


def test_metadata_query_reports_the_api_version() -> None:
    md = Metadata(C.sizeof(Metadata), 0, None, -1, -1, 7, 0)
    ext = MetadataExt(C.sizeof(MetadataExt), 1, None, C.pointer(md))
    call = Call([], [], {})
    call.frame.ext = C.addressof(ext)
    for name in _ckernels.xla_handlers():
        md.major = md.minor = -1
        assert call.run(name) is None
        assert md.major == 0 and md.minor >= 1  # the version of the headers it was built with
        assert md.traits == 0 and md.v_size > 0
