"""Run the C core's parallel loops on torch's own OpenMP thread team.

torch's CPU operators run on an OpenMP team whose workers keep spinning for a
while after each parallel region, so that the next torch operator starts at
once. The C core's own pool watches for 50 µs and then sleeps. On a machine with few cores a
softmaxkit call right after a torch operator then has its workers compete with
torch's spinning ones: measured on 2 cores, a 256×1000 softmax took 259 µs with
the own pool against 150 µs on one thread alone.

:func:`share_team` finds the OpenMP runtime torch has already loaded (GNU
``libgomp``, or the GOMP-compatible entry of LLVM's and Intel's runtimes) and
hands its ``GOMP_parallel`` entry point to the core (``skit_set_omp_parallel``).
The core's loops then run on torch's team: its spinning workers pick the tasks
up at once, and softmaxkit never holds more threads than torch does. Which
threads run a task never changes a result (rows and blocks are fixed units
combined in a fixed order). After ``fork()`` the child goes back to the own
pool, since the parent's team does not exist there.

Set ``SOFTMAXKIT_TORCH_THREADS=own`` before importing :mod:`softmaxkit.torch` to
keep the own pool.

This module must never load an OpenMP runtime of its own: it only looks one up
among the libraries torch loaded (``RTLD_NOLOAD``).
"""

from __future__ import annotations

import ctypes
import os
import sys

import torch

__all__ = ["ENV_THREADS", "share_team"]

ENV_THREADS = "SOFTMAXKIT_TORCH_THREADS"

# sonames of OpenMP runtimes that export GOMP_parallel, by platform
_RUNTIMES = {
    "linux": ("libgomp.so.1", "libomp.so", "libiomp5.so"),
    "darwin": ("libomp.dylib", "libiomp5.dylib"),
}


def _gomp_parallel() -> int | None:
    """The address of ``GOMP_parallel`` in an OpenMP runtime already loaded, or None."""
    noload = getattr(os, "RTLD_NOLOAD", None)
    if noload is None:  # pragma: no cover - Windows: no dlopen
        return None
    names = _RUNTIMES.get("darwin" if sys.platform == "darwin" else sys.platform, ())
    for name in names:
        try:
            lib = ctypes.CDLL(name, mode=noload | os.RTLD_LOCAL)
        except OSError:
            continue
        fn = getattr(lib, "GOMP_parallel", None)
        if fn is not None:
            addr = ctypes.cast(fn, ctypes.c_void_p).value
            if addr:
                return int(addr)
    return None


def share_team() -> bool:
    """Make the C core run its parallel loops on torch's OpenMP team, if torch has one.

    Returns
    -------
    bool
        Whether the core now uses torch's team. False when torch was built
        without OpenMP, no loaded runtime exports ``GOMP_parallel``, the C core
        is not built, or ``SOFTMAXKIT_TORCH_THREADS=own`` is set.
    """
    if os.environ.get(ENV_THREADS, "").strip().lower() == "own":
        return False
    try:
        from .. import _ckernels
    except ImportError:  # pragma: no cover - a broken build runs the agnostic engine
        return False
    if not getattr(torch._C, "has_openmp", False):
        return False
    addr = _gomp_parallel()
    if addr is None:
        return False
    return bool(_ckernels.set_omp_parallel(addr))
