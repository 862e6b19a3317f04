"""pytest plugin: run SciPy's own ``test_logsumexp.py`` against softmaxkit.

Loaded with ``-p sk_scipy_plugin`` in a child pytest (see ``tests/test_scipy_suite.py``).
It swaps the module's ``logsumexp``, ``softmax`` and ``log_softmax`` for
softmaxkit's, with SciPy's ``axis=None`` default mapped, and marks every deliberate
divergence (``DIVERGENCES``) as a strict xfail, so a divergence that goes away
fails the run too.
"""

from __future__ import annotations

from typing import Any

import pytest

import softmaxkit as sk

# test name (without parameters) -> why softmaxkit differs on purpose
DIVERGENCES: dict[str, str] = {}


def logsumexp(
    a: Any, axis: Any = None, b: Any = None, keepdims: bool = False, return_sign: bool = False
) -> Any:
    return sk.logsumexp(a, axis=axis, b=b, keepdims=keepdims, return_sign=return_sign)


def softmax(x: Any, axis: Any = None) -> Any:
    return sk.softmax(x, axis=axis)


def log_softmax(x: Any, axis: Any = None) -> Any:
    return sk.log_softmax(x, axis=axis)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    patched = set()
    for item in items:
        mod = getattr(item, "module", None)
        if mod is not None and id(mod) not in patched:
            mod.logsumexp = logsumexp
            mod.softmax = softmax
            mod.log_softmax = log_softmax
            patched.add(id(mod))
        base = item.name.split("[", 1)[0]
        reason = DIVERGENCES.get(base) or DIVERGENCES.get(item.name)
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
