"""Docstrings: every example runs, every public function documents its math and usage."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import pytest

import softmaxkit as sk

# imported only in child processes: TensorFlow must never load in this process (it
# aborts a later Triton import); their doctests run in tests/test_tensorflow.py and
# tests/test_keras.py
CHILD_ONLY = ("softmaxkit.tensorflow", "softmaxkit.keras")


def _modules():
    names = ["softmaxkit"]
    # walk by hand: pkgutil.walk_packages imports every package to recurse into it
    todo = [(sk.__path__, "softmaxkit.")]
    while todo:
        path, prefix = todo.pop()
        for info in pkgutil.iter_modules(path, prefix=prefix):
            if info.name.startswith(CHILD_ONLY):
                continue
            if ".torch" in info.name or "._triton" in info.name or info.name.endswith("__main__"):
                continue  # the torch layer and the Triton engine need torch (and triton)
            names.append(info.name)
            if info.ispkg:
                sub = importlib.import_module(info.name)
                todo.append((sub.__path__, info.name + "."))
    return sorted(names)


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
