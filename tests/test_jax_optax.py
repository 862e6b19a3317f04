"""optax's own classification-loss tests, run against softmaxkit.jax.

The test file shipped in the optax wheel (``optax/losses/_classification_test.py``)
is loaded as a module and its reference to optax's ``_classification`` module is
replaced by one whose four softmax-family losses are softmaxkit.jax's; every
other loss stays optax's (several test classes compare against ours). Each test
case runs as one pytest case, with JAX's default x64 off as in optax's CI. A
case may fail only if it is listed in ``DIVERGENCES`` with its reason.
"""

from __future__ import annotations

import importlib.util
import types
import unittest
from pathlib import Path
from typing import Any

import pytest

optax = pytest.importorskip(
    "optax", reason="optax not installed: pip install softmaxkit[jax] optax"
)
jax = pytest.importorskip("jax")

import softmaxkit.jax as skj  # noqa: E402

OURS = (
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "safe_softmax_cross_entropy",
    "sigmoid_binary_cross_entropy",
)
# The test classes of OURS (PolyLossTest and SigmoidFocalLossTest compare optax's own
# losses against ours in a few cases; they are left out to keep the suite's time).
CLASSES = (
    "SoftmaxCrossEntropyTest",
    "SafeSoftmaxCrossEntropyTest",
    "SoftmaxCrossEntropyWithIntegerLabelsTest",
    "SigmoidCrossEntropyTest",
)
# test id -> why softmaxkit deliberately differs (none so far).
DIVERGENCES: dict[str, str] = {}


def _load() -> types.ModuleType | None:
    path = Path(optax.__file__).parent / "losses" / "_classification_test.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("_optax_classification_test", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    real = mod._classification
    proxy = types.ModuleType("softmaxkit_as_optax_classification")
    for name in dir(real):
        if not name.startswith("__"):
            setattr(proxy, name, getattr(real, name))
    for name in OURS:
        setattr(proxy, name, getattr(skj, name))
    mod._classification = proxy  # type: ignore[attr-defined]
    return mod


_MOD = _load()


def _cases() -> list[Any]:
    if _MOD is None:
        return []
    loader = unittest.TestLoader()
    out = []
    for cls_name in CLASSES:
        cls = getattr(_MOD, cls_name)
        out.extend(loader.loadTestsFromTestCase(cls))
    return out


_CASES = {c.id().split(".", 1)[1]: c for c in _cases()}


def test_optax_test_file_found() -> None:
    assert _MOD is not None, "optax's wheel no longer ships losses/_classification_test.py"
    assert len(_CASES) > 30
    assert set(DIVERGENCES) <= set(_CASES)


@pytest.fixture
def x64_off() -> Any:
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


@pytest.mark.parametrize("case_id", sorted(_CASES))
def test_optax_case(case_id: str, x64_off: Any) -> None:
    result = unittest.TestResult()
    _CASES[case_id].run(result)
    problems = [tb for _, tb in result.failures + result.errors]
    if case_id in DIVERGENCES:
        assert problems, f"{case_id} now passes; remove it from DIVERGENCES"
        return
    assert result.testsRun == 1
    assert not problems, problems[0]
