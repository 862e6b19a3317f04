"""Fresh output arrays for the C core, and the cache that keeps large ones' memory.

An output of 32 MiB or more gets memory of its own from the operating system
(glibc maps such blocks and unmaps them on free), so every call that returns one
first has the kernel fault in and zero each page. On this project's 2-core
AMD EPYC a float32 softmax over 3000000 rows of 40 takes about 0.4 ns per element
into an array passed as ``out=`` and about 0.7-0.9 when it allocates; on virtual
machines that give freed memory back to their host, an allocation right after a
large free can take a second.

Outputs that large are therefore allocated through a NumPy memory handler
(NEP 49, ``softmaxkit._outcache``) that keeps the memory of freed outputs for a
few seconds and hands it to the next output of about the same size: the arrays
are ordinary NumPy arrays that own their data, and the rest of the process keeps
NumPy's allocator. Memory not reused within ``release_after`` seconds is
returned to the system by a background thread.

Settings: :func:`output_cache`, or the ``SOFTMAXKIT_OUTPUT_CACHE_MB`` environment
variable (read at import; ``0`` turns the cache off). Inside a ``dask.distributed``
worker the cache is not used: workers pause, spill and restart by their process's
resident memory, where kept blocks would count as unmanaged memory.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import numpy as np

from ._errors import SoftmaxkitTypeError, SoftmaxkitValueError

try:
    from . import _outcache
except ImportError:  # Windows builds, or a build without the module: NumPy's allocator
    _outcache = None  # type: ignore[assignment]

__all__ = ["ALIGN", "BIG", "ENV_CACHE", "aligned_empty", "empty", "empty_like", "output_cache"]

BIG = 32 << 20
ALIGN = 64
ENV_CACHE = "SOFTMAXKIT_OUTPUT_CACHE_MB"
_GiB = 1 << 30


# a container's memory limit (cgroup v2, then v1), where the system has one
CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def _memory_bytes(limits: tuple[str, ...] = CGROUP_LIMITS) -> int:
    """Physical memory, or the container's memory limit where that is less."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        total = 8 * _GiB
    for path in limits:
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():  # "max" (v2) or a huge number (v1) mean no limit
            total = min(total, int(text))
    return total


def _default_max_bytes() -> int:
    env = os.environ.get(ENV_CACHE)
    if env is not None and env.strip():
        try:
            mb = float(env)
        except ValueError:
            mb = -1.0
        if not (0 <= mb < math.inf):
            msg = f"environment variable {ENV_CACHE}={env!r} must be a size in MiB >= 0"
            raise SoftmaxkitValueError(msg)
        return int(mb * (1 << 20))
    return min(4 * _GiB, _memory_bytes() // 8)


if _outcache is not None:
    _outcache.configure(_default_max_bytes(), 5.0)


def _in_dask_worker() -> bool:
    """Whether this thread runs a ``dask.distributed`` worker's task."""
    dist = sys.modules.get("distributed")
    if dist is None:
        return False
    try:
        dist.get_worker()
    except Exception:  # ValueError outside a worker; anything else: not one we know
        return False
    return True


def empty(shape: tuple[int, ...], dtype: Any) -> tuple[np.ndarray, bool]:
    """A C-contiguous array for the C core to fill, and whether its pages are new.

    The flag is the core's ``fresh`` argument: new pages fault in during the call
    (the core then writes with ordinary stores); memory the cache reused is
    resident already, like an ``out=`` array, so large outputs may be streamed."""
    dt = np.dtype(dtype)
    if _outcache is None or math.prod(shape) * dt.itemsize < BIG or _in_dask_worker():
        return np.empty(shape, dt), True
    arr, reused = _outcache.empty(shape, dt)
    return arr, not reused


def empty_like(x: np.ndarray) -> tuple[np.ndarray, bool]:
    """:func:`empty` with ``x``'s shape and dtype (``x`` C-contiguous)."""
    return empty(x.shape, x.dtype)


def aligned_empty(shape: tuple[int, ...], dtype: Any) -> tuple[np.ndarray, bool]:
    """:func:`empty` whose data are ``ALIGN`` (64) byte aligned, and whether its pages are new.

    For memory that a framework takes over without a copy and requires so aligned:
    TensorFlow aborts the process on a DLPack tensor that is not. NumPy's allocator
    aligns to 16 bytes; the cache's blocks (32 MiB and up) are 64-byte aligned."""
    dt = np.dtype(dtype)
    nbytes = math.prod(shape) * dt.itemsize
    if nbytes >= BIG:
        arr, fresh = empty(shape, dt)
        if arr.ctypes.data % ALIGN == 0:
            return arr, fresh
    if _outcache is not None:
        return _outcache.aligned_empty(shape, dt), True
    raw = np.empty(nbytes + ALIGN, np.uint8)  # builds without the module
    off = -raw.ctypes.data % ALIGN
    return np.ndarray(shape, dt, raw, off), True


def output_cache(
    *, max_bytes: int | None = None, release_after: float | None = None
) -> dict[str, Any]:
    """Configure the memory kept for large outputs, and report on it.

    Outputs of 32 MiB or more (softmax, log-softmax, gradients) are allocated
    through a cache that keeps the memory of freed outputs and hands it to the
    next output of about the same size, so that a loop of calls does not fault in
    and zero every page of every output again.

    Parameters
    ----------
    max_bytes : int, optional
        Most memory kept in all (up to 8 blocks); ``0`` turns the cache off and
        releases what it holds. Default: ``SOFTMAXKIT_OUTPUT_CACHE_MB``, or an
        eighth of physical memory (of the container's limit, where a cgroup sets
        a lower one), at most 4 GiB.
    release_after : float, optional
        Seconds a freed block is kept for reuse before it is returned to the
        system (default 5).

    Returns
    -------
    dict
        ``max_bytes``, ``release_after``, ``blocks`` and ``cached_bytes`` (kept
        now), and the counters ``hits`` (outputs that reused kept memory),
        ``misses`` and ``released`` (blocks returned to the system). Without the
        native module (Windows) the cache is absent and ``max_bytes`` is 0.

    Notes
    -----
    A freed output's block is reused by an output of at least its size less
    1/8 and 2 MiB, so a reused block wastes at most that. Tasks on a
    ``dask.distributed`` worker allocate NumPy's way: the worker manages its memory
    by the process's resident size, and kept blocks would count against it. The time saved is the
    kernel's first touch of each page: on a 2-core AMD EPYC (Zen 4), float32
    softmax of 3000000×40 allocating its output took 0.7-0.9 ns per element
    fresh and about 0.45 with reused memory (``out=``: 0.4).

    References
    ----------
    .. [1] NumPy Enhancement Proposal 49, "Data allocation strategies",
       https://numpy.org/neps/nep-0049.html

    Examples
    --------
    >>> import softmaxkit as sk
    >>> settings = sk.output_cache()
    >>> sorted(settings)[:3]
    ['blocks', 'cached_bytes', 'hits']
    """
    if max_bytes is not None and (
        isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer))
    ):
        raise SoftmaxkitTypeError(f"`max_bytes` must be an int or None, got {max_bytes!r}")
    if max_bytes is not None and max_bytes < 0:
        raise SoftmaxkitValueError(f"`max_bytes` must be >= 0, got {max_bytes}; 0 turns it off")
    if release_after is not None:
        if isinstance(release_after, bool) or not isinstance(
            release_after, (int, float, np.integer, np.floating)
        ):
            msg = f"`release_after` must be a number of seconds or None, got {release_after!r}"
            raise SoftmaxkitTypeError(msg)
        if not (0 <= float(release_after) < math.inf):
            msg = f"`release_after` must be finite and >= 0 seconds, got {release_after!r}"
            raise SoftmaxkitValueError(msg)
    if _outcache is None:
        return {
            "max_bytes": 0,
            "release_after": 0.0,
            "blocks": 0,
            "cached_bytes": 0,
            "hits": 0,
            "misses": 0,
            "released": 0,
        }
    _outcache.configure(
        -1 if max_bytes is None else min(int(max_bytes), 2**62),
        -1.0 if release_after is None else float(release_after),
    )
    return dict(_outcache.stats())
