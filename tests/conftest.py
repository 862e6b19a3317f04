"""Shared fixtures: one ``backend`` fixture runs a test on every array library.

Backends are chosen by the environment variable ``SOFTMAXKIT_TEST_BACKENDS``
(comma-separated; ``make test`` sets all of them). Without it, every backend that
imports is used. A backend that was requested but does not import makes
``test_backends.py::test_requested_backends_installed`` fail, so a broken install
can never pass as a run of skips.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

ALL_BACKENDS = ("numpy", "array_api_strict", "torch", "torch_agnostic", "jax", "jax_x32", "dask")
_MODULE = {
    "numpy": "numpy",
    "array_api_strict": "array_api_strict",
    "torch": "torch",
    "torch_agnostic": "torch",
    "jax": "jax",
    "jax_x32": "jax",
    "dask": "dask.array",
}


def requested_backends() -> tuple[str, ...]:
    raw = os.environ.get("SOFTMAXKIT_TEST_BACKENDS", "").strip()
    if not raw:
        return ()
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    unknown = [n for n in names if n not in ALL_BACKENDS]
    if unknown:
        msg = f"unknown backends in SOFTMAXKIT_TEST_BACKENDS: {unknown}; choose from {ALL_BACKENDS}"
        raise pytest.UsageError(msg)
    if "jax" in names and "jax_x32" not in names:
        names = (*names, "jax_x32")
    if "torch" in names and "torch_agnostic" not in names:
        # CPU tensors run the C core (softmaxkit._torch_dispatch); this backend runs
        # the array-agnostic engine on them, the engine GPU tensors and autograd take
        names = (*names, "torch_agnostic")
    return names


def importable(name: str) -> bool:
    try:
        importlib.import_module(_MODULE[name])
    except ImportError:
        return False
    return True


def active_backends() -> tuple[str, ...]:
    req = requested_backends()
    if req:
        return req
    return tuple(n for n in ALL_BACKENDS if importable(n))


@dataclass
class Backend:
    """A test view of one array library: convert NumPy data in and results out."""

    name: str
    xp: Any
    asarray: Callable[..., Any]
    to_numpy: Callable[[Any], np.ndarray]
    has_float64: bool = True
    lazy: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Backend({self.name})"

    def float_dtypes(self) -> tuple[str, ...]:
        return ("float32", "float64") if self.has_float64 else ("float32",)


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


def _make_backend(name: str) -> Backend:
    if name == "numpy":
        import array_api_compat.numpy as xp

        def conv(a: Any, dtype: str | None = None) -> Any:
            arr = np.asarray(a) if dtype is None else np.asarray(a, dtype=dtype)
            return _readonly(arr)

        return Backend(name, xp, conv, np.asarray)
    if name == "array_api_strict":
        import array_api_strict as xps

        def conv_s(a: Any, dtype: str | None = None) -> Any:
            arr = np.asarray(a) if dtype is None else np.asarray(a, dtype=dtype)
            return xps.asarray(arr)

        def back_s(a: Any) -> np.ndarray:
            return np.asarray(a._array) if hasattr(a, "_array") else np.asarray(a)

        return Backend(name, xps, conv_s, back_s)
    if name in ("torch", "torch_agnostic"):
        import array_api_compat.torch as xpt
        import torch

        def conv_t(a: Any, dtype: str | None = None) -> Any:
            arr = np.asarray(a) if dtype is None else np.asarray(a, dtype=dtype)
            return torch.from_numpy(np.array(arr, copy=True))

        def back_t(a: Any) -> np.ndarray:
            return a.detach().cpu().numpy()

        # both run torch's expectations; "torch_agnostic" switches the C route off
        return Backend("torch", xpt, conv_t, back_t, extra={"agnostic": name != "torch"})
    if name in ("jax", "jax_x32"):
        import jax
        import jax.numpy as jnp

        def conv_j(a: Any, dtype: str | None = None) -> Any:
            arr = np.asarray(a) if dtype is None else np.asarray(a, dtype=dtype)
            if name == "jax_x32" and arr.dtype == np.float64:
                arr = arr.astype(np.float32)
            if name == "jax_x32" and arr.dtype == np.int64:
                arr = arr.astype(np.int32)
            return jnp.asarray(arr)

        return Backend(
            name, jnp, conv_j, np.asarray, has_float64=(name == "jax"), extra={"jax": jax}
        )
    if name == "dask":
        import array_api_compat.dask.array as xpd
        import dask.array as da

        def conv_d(a: Any, dtype: str | None = None) -> Any:
            arr = np.asarray(a) if dtype is None else np.asarray(a, dtype=dtype)
            chunks = tuple(max(1, (s + 1) // 2) for s in arr.shape)
            return da.from_array(arr, chunks=chunks or ())

        def back_d(a: Any) -> np.ndarray:
            return np.asarray(a.compute() if hasattr(a, "compute") else a)

        return Backend(name, xpd, conv_d, back_d, lazy=True)
    raise AssertionError(name)  # pragma: no cover


@pytest.fixture(params=active_backends())
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    name = request.param
    if not importable(name):
        pytest.skip(f"{name} is not installed (not requested in SOFTMAXKIT_TEST_BACKENDS)")
    b = _make_backend(name)
    if name in ("jax", "jax_x32"):
        jax = b.extra["jax"]
        old = jax.config.jax_enable_x64
        jax.config.update("jax_enable_x64", name == "jax")
        try:
            yield b
        finally:
            jax.config.update("jax_enable_x64", old)
    elif name == "torch_agnostic":
        from softmaxkit import _torch_dispatch

        _torch_dispatch.ENABLED = False
        try:
            yield b
        finally:
            _torch_dispatch.ENABLED = True
    else:
        yield b


def pytest_configure(config: pytest.Config) -> None:
    # JAX default: x64 on for the main jax backend; the jax_x32 backend switches it off per test.
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
    except ImportError:
        pass
