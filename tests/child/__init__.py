"""Suites that must run in a child process (TensorFlow, Keras).

Their files are not named ``test_*.py``, so the main pytest run never collects
(and never imports) them; ``tests/test_tensorflow.py`` and ``tests/test_keras.py``
run each in a fresh interpreter with :func:`run_child_suite` and fail with the
child's own pytest report.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["run_child_suite"]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def run_child_suite(name: str, env: dict[str, str], timeout: float = 600.0) -> None:
    """Run ``tests/child/<name>`` under pytest in a fresh process; raise with its report."""
    full_env = dict(os.environ)
    full_env.update(env)
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(HERE / name),
        "-q",
        "-p",
        "no:cacheprovider",
        # TensorFlow and Keras warn at import about their own dependencies
        "-W",
        "ignore::DeprecationWarning",
        "-W",
        "ignore::FutureWarning",
        "-W",
        "ignore::UserWarning",
    ]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        report = proc.stdout[-12000:] + "\n--- stderr ---\n" + proc.stderr[-4000:]
        msg = f"child suite {name} ({env or 'default env'}) failed:\n{report}"
        raise AssertionError(msg)
