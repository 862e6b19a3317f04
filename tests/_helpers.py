"""Small helpers shared by the tests."""

from __future__ import annotations

from typing import Any

import array_api_compat as aac
import numpy as np

from softmaxkit._namespace import dtype_name


def run(backend: Any, fn: Any, *args: Any, dtype: str | None = None, **kwargs: Any) -> Any:
    """Call ``fn`` on backend arrays made from NumPy ``args``; return NumPy results.

    Float arguments are converted with ``dtype`` when given; integer and bool
    arguments keep their dtype. Every array result is checked to be of the
    backend's array type before it is converted back.
    """
    conv = []
    for a in args:
        if isinstance(a, np.ndarray):
            d = dtype if (dtype is not None and a.dtype.kind == "f") else None
            conv.append(backend.asarray(a, dtype=d))
        else:
            conv.append(a)
    kw = {}
    for k, v in kwargs.items():
        if isinstance(v, np.ndarray):
            d = dtype if (dtype is not None and v.dtype.kind == "f") else None
            kw[k] = backend.asarray(v, dtype=d)
        else:
            kw[k] = v
    out = fn(*conv, **kw)
    return _back(backend, out, conv[0])


def _back(backend: Any, out: Any, first: Any) -> Any:
    if isinstance(out, tuple):
        return tuple(_back(backend, o, first) for o in out)
    assert_same_library(out, first)
    return backend.to_numpy(out)


def assert_same_library(out: Any, ref: Any) -> None:
    """``out`` is an array of the same library (and device) as ``ref``."""
    ns_out = aac.array_namespace(out)
    ns_ref = aac.array_namespace(ref)
    assert ns_out.__name__ == ns_ref.__name__, (type(out), type(ref))
    assert str(aac.device(out)) == str(aac.device(ref))


def dname(a: Any) -> str:
    return dtype_name(a.dtype)


def f32(v: float) -> float:
    """The float32 value nearest to ``v``, as a Python float."""
    return float(np.float32(v))


def rtol_for(a: Any) -> float:
    """A relative tolerance of a few units in the last place of ``a``'s dtype."""
    return 1e-13 if np.asarray(a).dtype == np.float64 else 3e-6
