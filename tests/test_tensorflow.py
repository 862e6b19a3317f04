"""softmaxkit.tensorflow: its suite runs in a child process (TensorFlow never loads here).

Importing TensorFlow and then Triton in one process aborts (both bundle LLVM), so
this process must never import TensorFlow. The suite is ``tests/child/tf_suite.py``
(one process, so TensorFlow is imported once); its pytest report is shown on
failure.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.child import run_child_suite


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="tensorflow not installed: pip install softmaxkit[tensorflow]",
)
def test_tensorflow_suite():
    run_child_suite("tf_suite.py", {})
    assert "tensorflow" not in sys.modules
