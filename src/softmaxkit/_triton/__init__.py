"""The Triton engine: GPU kernels of the softmax family for CUDA tensors.

What this package is for: kernels (:mod:`._kernels`) and their launchers
(:mod:`._launch`) that take torch tensors and already validated options and
know no framework layer. ``softmaxkit.torch`` chooses this engine for CUDA
tensors when Triton imports, and for every supported tensor when
``SOFTMAXKIT_ENGINE=triton``; with ``TRITON_INTERPRET=1`` (set before the first
import) the same kernels run on CPU tensors in Triton's interpreter, which is
how they are tested without a GPU. It must never be imported by ``import
softmaxkit`` (it imports torch and triton) and never validate user input.

Install: ``pip install softmaxkit[triton]``.
"""

from __future__ import annotations

from types import ModuleType

__all__ = ["INSTALL_HINT", "engine", "why_not"]

INSTALL_HINT = "triton is not installed: pip install softmaxkit[triton]"

_ENGINE: ModuleType | None = None
_FAILED: str | None = None


def engine() -> ModuleType | None:
    """The launcher module when Triton imports, else ``None`` (the reason in :func:`why_not`)."""
    global _ENGINE, _FAILED
    if _ENGINE is None and _FAILED is None:
        try:
            from . import _launch
        except ImportError as exc:  # triton missing or broken
            _FAILED = f"{INSTALL_HINT} ({exc})"
        else:
            _ENGINE = _launch
    return _ENGINE


def why_not() -> str | None:
    """Why :func:`engine` is ``None`` (``None`` when it is available)."""
    engine()
    return _FAILED
