"""Resolve oneMKL's lazy kernel choice before torch's threads race on it.

On CPU, torch sends contiguous float32/float64 ``exp``, ``log``, ``log1p``,
``expm1``, ``log2`` ... to oneMKL's vector math library (VML), each intra-op
thread on its own chunk. oneMKL picks each function's kernel (instruction set and
accuracy) on that function's first call. With the oneMKL bundled in the torch
wheels (2024.2) that choice races when the first call runs on several threads at
once: for the length of that one call, one thread can run the low-accuracy kernel
although the high-accuracy one was asked for. Later calls are right, so it shows
only in a fresh process, and only sometimes.

Measured here (torch 2.13.0 CPU, 2 threads, 9202 elements, fresh processes): the
first ``torch.exp`` of float32 data was off by up to 1e-4 relative in about one
process in six, float64 by 3e-9 (float32 accuracy), on the second thread's half.
softmaxkit's array-agnostic engine computes with those operations when it is given
torch tensors, so its float32 sigmoid came out 0.53 ulp off instead of 0.5.

:func:`prime` calls each function softmaxkit uses once, on one element (one
thread, so no race), in both float dtypes, before softmaxkit's first torch
operation in the process. That fixes the kernel choice for the whole process.

References
----------
.. [1] pytorch/pytorch#188792, "CPU float unary ops can silently return
   low-precision results: MKL VML first-call kernel dispatch race".
"""

from __future__ import annotations

import sys
import threading

__all__ = ["prime", "primed"]

_done = False
_lock = threading.Lock()

# the torch operations softmaxkit computes with that oneMKL may run (not exact)
_FUNCTIONS = ("exp", "expm1", "log", "log1p", "log2")


def primed() -> bool:
    """Whether :func:`prime` has run in this process."""
    return _done


def prime() -> None:
    """Call each of torch's oneMKL-backed functions softmaxkit uses once, on one thread.

    A no-op after the first call, when torch is not imported, or when torch was
    built without MKL.
    """
    global _done
    if _done:
        return
    torch = sys.modules.get("torch")
    if torch is None:
        return
    with _lock:
        if _done:
            return
        mkl = getattr(getattr(torch, "backends", None), "mkl", None)
        if mkl is not None and mkl.is_available():
            with torch.no_grad():
                for dtype in (torch.float32, torch.float64):
                    one = torch.ones(1, dtype=dtype)
                    for name in _FUNCTIONS:
                        getattr(torch, name)(one)
        _done = True
