"""softmaxkit.torch runs the C core's parallel loops on torch's OpenMP team.

The team changes who runs a task, never a result: every op is compared bit for
bit with the own pool and with one thread. A forked child must fall back to the
own pool (the parent's team does not exist there) instead of hanging.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed: pip install softmaxkit[torch]")

import softmaxkit as sk  # noqa: E402
import softmaxkit.torch as skt  # noqa: E402
from softmaxkit import _ckernels  # noqa: E402
from softmaxkit.torch import _openmp  # noqa: E402

HAS_OPENMP = bool(getattr(torch._C, "has_openmp", False)) and sys.platform.startswith("linux")
needs_team = pytest.mark.skipif(
    not HAS_OPENMP, reason="this torch build has no OpenMP team to share (not Linux/OpenMP)"
)


@pytest.fixture
def own_pool():
    """Switch to the own pool for the test, then back to torch's team."""
    _ckernels.set_omp_parallel(0)
    try:
        yield
    finally:
        _openmp.share_team()


@needs_team
def test_import_shares_torchs_team() -> None:
    assert _ckernels.omp_parallel_active()


def _ops(x: np.ndarray) -> list[np.ndarray]:
    t = np.arange(x.shape[0]) % x.shape[1]
    return [
        sk.softmax(x, threads=3),
        sk.log_softmax(x, threads=3),
        sk.logsumexp(x, threads=3),
        sk.softmax(x, precision="fast", threads=3),
        np.asarray(sk.cross_entropy(x, t, threads=3)),
    ]


@needs_team
@pytest.mark.parametrize("shape", [(512, 1000), (3, 70000), (40000, 12)])
def test_team_results_equal_own_pool_bitwise(shape: tuple[int, int], own_pool: None) -> None:
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(shape) * 6).astype(np.float32)
    x[0, :5] = [np.inf, -np.inf, 88.0, 88.0, -1e30]
    own = _ops(x)
    one = [sk.softmax(x, threads=1), sk.log_softmax(x, threads=1)]
    _openmp.share_team()
    assert _ckernels.omp_parallel_active()
    team = _ops(x)
    for a, b in zip(own, team, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(one[0], team[0])
    np.testing.assert_array_equal(one[1], team[1])


@needs_team
def test_torch_ops_on_team_equal_one_thread() -> None:
    x = torch.randn(2048, 1000, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 1000, (2048,))
    loss = skt.cross_entropy(x, y)
    (g,) = torch.autograd.grad(loss, x)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loss1 = skt.cross_entropy(x, y)
        (g1,) = torch.autograd.grad(loss1, x)
    finally:
        torch.set_num_threads(n)
    assert torch.equal(loss, loss1)
    assert torch.equal(g, g1)


_FORK_SCRIPT = """
import os, sys
import numpy as np, torch
import softmaxkit as sk, softmaxkit.torch as skt
from softmaxkit import _ckernels
skt.softmax(torch.randn(4096, 1000), dim=1)  # the parent's team has run our loops
assert _ckernels.omp_parallel_active()
x = np.random.default_rng(1).standard_normal((4096, 1000)).astype(np.float32)
want = sk.softmax(x, threads=2)
pid = os.fork()
if pid == 0:
    ok = (not _ckernels.omp_parallel_active()) and np.array_equal(sk.softmax(x, threads=2), want)
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@needs_team
def test_forked_child_uses_own_pool_and_finishes() -> None:
    """In a fresh process (forking the test process would fork JAX's threads too)."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", _FORK_SCRIPT], capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        pytest.fail("softmax in a forked child hung")
    assert out.returncode == 0, out.stderr


def test_env_keeps_own_pool() -> None:
    code = "import softmaxkit.torch, softmaxkit._ckernels as k; print(k.omp_parallel_active())"
    env = dict(os.environ, **{_openmp.ENV_THREADS: "own"})
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
