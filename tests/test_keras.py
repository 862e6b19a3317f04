"""softmaxkit.keras on each Keras backend, each in its own child process.

Keras picks its backend once per process (``KERAS_BACKEND``), and the TensorFlow
backend must never load in the main pytest process (a later Triton import would
abort it), so ``tests/child/keras_suite.py`` runs once per backend in a fresh
interpreter; its pytest report is shown on failure.
"""

from __future__ import annotations

import importlib.util

import pytest

from tests.child import run_child_suite

_MODULE = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("keras") is None,
    reason="keras not installed: pip install softmaxkit[keras]",
)
@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_keras_suite(backend):
    if importlib.util.find_spec(_MODULE[backend]) is None:
        pytest.skip(f"{backend} not installed: pip install softmaxkit[keras] {backend}")
    run_child_suite("keras_suite.py", {"KERAS_BACKEND": backend})
