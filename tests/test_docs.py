"""Docstrings: every example runs, every public function documents its math and usage."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import pytest

import softmaxkit as sk


def _modules():
    names = ["softmaxkit"]
    for info in pkgutil.walk_packages(sk.__path__, prefix="softmaxkit."):
        if ".torch" in info.name or "._triton" in info.name or info.name.endswith("__main__"):
            continue  # the torch layer and the Triton engine need torch (and triton)
        names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"


@pytest.mark.parametrize("name", [n for n in sk.__all__ if callable(getattr(sk, n))])
def test_public_docstrings_have_the_sections(name):
    obj = getattr(sk, name)
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj):
        assert doc, f"{name} has no docstring"
        return
    for section in ("Parameters", "Returns", "Examples"):
        assert f"\n{section}\n" in doc, f"{name} lacks a {section} section"
    assert ">>> " in doc
