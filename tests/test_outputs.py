"""Large outputs reuse the memory of freed ones (softmaxkit._outputs, _outcache)."""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit import _dispatch, _outputs

pytestmark = pytest.mark.skipif(
    _outputs._outcache is None or not _dispatch.available(),
    reason="the output cache is built on POSIX systems with the C core only",
)

ROWS, N = 2048, 4096  # float32: exactly 32 MiB, the smallest output the cache takes


@pytest.fixture
def cache():
    """A cache of 1 GiB kept for 60 s, emptied before and after; settings restored."""
    before = sk.output_cache()
    _outputs._outcache.clear()
    sk.output_cache(max_bytes=1 << 30, release_after=60.0)
    yield
    gc.collect()
    _outputs._outcache.clear()
    sk.output_cache(max_bytes=before["max_bytes"], release_after=before["release_after"])


def _x(dtype=np.float32, rows=ROWS, n=N):
    return (np.random.default_rng(0).standard_normal((rows, n)) * 4).astype(dtype)


def test_small_outputs_stay_numpys(cache):
    x = _x(rows=16)
    hits = sk.output_cache()["hits"] + sk.output_cache()["misses"]
    y = sk.softmax(x)
    assert sk.output_cache()["hits"] + sk.output_cache()["misses"] == hits
    assert y.flags.owndata


@pytest.mark.parametrize("precision", ["accurate", "fast"])
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_reused_memory_gives_the_same_bits(cache, op, precision):
    x = _x()
    fn = getattr(sk, op)
    ref = np.empty_like(x)
    fn(x, precision=precision, out=ref)
    first = fn(x, precision=precision)  # a fresh block
    s0 = sk.output_cache()
    del first
    second = fn(x, precision=precision)  # the same block again, streamed as out= would be
    s1 = sk.output_cache()
    assert s1["hits"] == s0["hits"] + 1
    assert type(second) is np.ndarray and second.flags.owndata and second.base is None
    assert second.flags.c_contiguous and second.flags.writeable
    assert second.ctypes.data % 64 == 0
    np.testing.assert_array_equal(second, ref)
    # a softmax over a non-last axis goes through the general path's rows
    t = fn(np.ascontiguousarray(x.T), axis=0, precision=precision)
    np.testing.assert_array_equal(t.T, ref)


def test_every_large_output_kind_matches_numpy_memory(cache):
    """Cross-entropy gradients, sigmoid outputs, BCE losses and gradients and VJPs from
    kept memory equal the same calls with the cache off, bit for bit."""
    x = _x()
    t = np.random.default_rng(1).integers(0, N, ROWS)
    y01 = np.random.default_rng(2).random(x.shape).astype(np.float32)
    calls = {
        "ce": lambda: sk.cross_entropy(x, t, return_grad=True)[1],
        "ce_mean_smooth": lambda: sk.cross_entropy(x, t, label_smoothing=0.1, return_grad=True)[1],
        "sigmoid": lambda: sk.sigmoid(x),
        "log_sigmoid": lambda: sk.log_sigmoid(x),
        "bce_none": lambda: sk.binary_cross_entropy_with_logits(x, y01, reduction="none"),
        "bce_grad": lambda: sk.binary_cross_entropy_with_logits(x, y01, return_grad=True)[1],
        "softmax_vjp": lambda: sk.softmax_vjp(sk.softmax(x, precision="fast"), y01),
    }
    for name, call in calls.items():
        sk.output_cache(max_bytes=0)
        ref = call()
        sk.output_cache(max_bytes=1 << 30)
        call()
        gc.collect()
        hits = sk.output_cache()["hits"]
        got = call()
        assert sk.output_cache()["hits"] > hits, name
        np.testing.assert_array_equal(got, ref, err_msg=name)


def test_torch_gradients_reuse_kept_memory(cache):
    if os.environ.get("SOFTMAXKIT_SANITIZED"):
        pytest.skip(
            "the sanitizer run imports no torch (its libraries are not instrumented); "
            "this test runs in the ordinary suite"
        )
    torch = pytest.importorskip("torch")
    import softmaxkit.torch as skt

    x = torch.from_numpy(_x()).requires_grad_()
    t = torch.randint(0, N, (ROWS,), generator=torch.Generator().manual_seed(0))
    skt.cross_entropy(x, t).backward()
    ref = x.grad.clone()
    x.grad = None
    gc.collect()
    hits = sk.output_cache()["hits"]
    skt.cross_entropy(x, t).backward()
    assert sk.output_cache()["hits"] > hits
    assert torch.equal(x.grad, ref)


def test_outputs_never_alias_live_arrays(cache):
    x = _x()
    a = sk.softmax(x)
    b = sk.softmax(x)
    assert not np.may_share_memory(a, b)
    a_copy = a.copy()
    b[...] = 7.0
    np.testing.assert_array_equal(a, a_copy)


def test_a_block_is_reused_only_by_outputs_of_about_its_size(cache):
    sk.softmax(_x())  # a 32 MiB block kept
    gc.collect()
    hits = sk.output_cache()["hits"]
    y = sk.softmax(_x(rows=ROWS // 2))  # 16 MiB: NumPy's, the block stays
    assert sk.output_cache()["hits"] == hits and sk.output_cache()["blocks"] == 1
    z = sk.softmax(_x(rows=ROWS * 2))  # 64 MiB: larger than the block, a new one
    assert sk.output_cache()["hits"] == hits
    del y, z


def test_max_bytes_bounds_what_is_kept(cache):
    sk.output_cache(max_bytes=40 << 20)  # room for one 32 MiB block
    a, b = sk.softmax(_x()), sk.softmax(_x())
    del a, b
    gc.collect()
    s = sk.output_cache()
    assert s["blocks"] == 1 and s["cached_bytes"] <= 40 << 20
    sk.output_cache(max_bytes=0)  # off: releases what it holds, keeps nothing new
    assert sk.output_cache()["blocks"] == 0
    sk.softmax(_x())
    gc.collect()
    assert sk.output_cache()["cached_bytes"] == 0


def test_unused_blocks_are_released_in_time(cache):
    released = sk.output_cache()["released"]
    sk.softmax(_x())
    gc.collect()
    assert sk.output_cache()["blocks"] == 1
    sk.output_cache(release_after=0.2)  # wakes the release thread, which waits 60 s
    deadline = time.monotonic() + 10
    while sk.output_cache()["blocks"] and time.monotonic() < deadline:
        time.sleep(0.05)
    s = sk.output_cache()
    assert s["blocks"] == 0 and s["cached_bytes"] == 0 and s["released"] == released + 1


def test_kept_arrays_resize_and_pickle(cache):
    y = sk.softmax(_x())
    ref = y.copy()
    y.resize((ROWS * N // 2,), refcheck=False)  # the handler's realloc: shrink in place
    np.testing.assert_array_equal(y, ref.reshape(-1)[: ROWS * N // 2])
    y.resize((ROWS * N * 2,), refcheck=False)  # grow: a new block, zero-filled tail
    np.testing.assert_array_equal(y[: ROWS * N // 2], ref.reshape(-1)[: ROWS * N // 2])
    assert not y[ROWS * N :].any()
    z = pickle.loads(pickle.dumps(sk.softmax(_x())))
    np.testing.assert_array_equal(z, ref)


@pytest.mark.parametrize("native", [True, False], ids=["handler", "python"])
def test_aligned_outputs(cache, native, monkeypatch):
    """aligned_empty: 64-byte aligned data (TensorFlow aborts on less through DLPack) at
    every size, through the aligned handler, the cache from 32 MiB, or over-allocation
    where the module is absent; the arrays resize, pickle and zero-fill like NumPy's."""
    if not native:
        monkeypatch.setattr(_outputs, "_outcache", None)
    for shape, dt in [((), np.float32), ((0,), np.float64), ((3, 0), np.float32),
                      ((7,), np.float32), ((5, 13), np.float64), ((257, 1001), np.float32),
                      ((1100, 1000), np.float64), ((ROWS, N), np.float32)]:  # fmt: skip
        arrs = [_outputs.aligned_empty(shape, dt) for _ in range(5)]
        for a, fresh in arrs:
            assert a.shape == shape and a.dtype == dt and a.flags.c_contiguous
            assert a.flags.writeable and isinstance(fresh, bool)
            assert a.ctypes.data % _outputs.ALIGN == 0, (shape, dt)
            a[...] = 2.5
        held = [a.ctypes.data for a, _ in arrs if a.size]
        assert len(set(held)) == len(held)  # distinct memory
    if native:
        z = _outputs._outcache.aligned_empty((4, 5), np.float64)
        z[...] = np.arange(20).reshape(4, 5)
        z.resize((40,), refcheck=False)  # the handler's realloc keeps the alignment
        assert z.ctypes.data % 64 == 0 and (z[:20] == np.arange(20)).all()
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(z[:20])), np.arange(20))
        o = _outputs._outcache.aligned_empty((9,), object)  # calloc: zero-filled, None
        assert all(v is None for v in o)


def test_zero_filled_allocations_from_kept_memory_read_zero(cache):
    """Object arrays are zero-initialised by the handler's calloc (None after NumPy's
    fill); a reused block, whose bytes are old, must be cleared first."""
    a, _ = _outputs._outcache.empty((ROWS * N // 2,), np.float64)
    a[...] = 1.5
    del a
    gc.collect()
    o, reused = _outputs._outcache.empty((ROWS * N // 2,), object)
    assert reused
    assert o[0] is None and o[-1] is None
    del o


def test_threads_share_the_cache_safely(cache):
    x = _x()
    ref = sk.softmax(x, precision="fast")
    bad = []

    def work():
        for _ in range(4):
            y = sk.softmax(x, precision="fast", threads=1)
            if not np.array_equal(y, ref):
                bad.append(1)

    ts = [threading.Thread(target=work) for _ in range(4)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    assert not bad
    assert sk.output_cache()["blocks"] <= 8


FORK_CHILD = """
import gc, os, sys
import numpy as np
import softmaxkit as sk
sk.output_cache(max_bytes=1 << 30, release_after=60.0)
x = np.ones((2048, 4096), np.float32)
sk.softmax(x, precision="fast")  # kept: the parent's release thread now runs
gc.collect()
pid = os.fork()
if pid == 0:  # the child: its copy of the kept block, and no release thread yet
    hits = sk.output_cache()["hits"]
    y = sk.softmax(x, precision="fast")
    ok = sk.output_cache()["hits"] == hits + 1 and float(y.sum(dtype=np.float64)) == 2048.0
    del y
    gc.collect()
    sk.output_cache(release_after=0.1)  # the child's own release thread empties it
    for _ in range(200):
        if not sk.output_cache()["blocks"]:
            break
        __import__("time").sleep(0.05)
    os._exit(0 if ok and not sk.output_cache()["blocks"] else 3)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="os.fork in a fresh interpreter")
def test_a_forked_child_uses_the_cache():
    """A fresh interpreter (no JAX, whose threads forbid forking) forks while the
    cache holds a block and its release thread runs: the child reuses its copy of the
    block and starts its own release thread."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    out = subprocess.run(
        [sys.executable, "-c", FORK_CHILD], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"max_bytes": -1}, sk.SoftmaxkitValueError, "`max_bytes` must be >= 0"),
        ({"max_bytes": 1.5}, sk.SoftmaxkitTypeError, "`max_bytes` must be an int"),
        ({"max_bytes": True}, sk.SoftmaxkitTypeError, "`max_bytes` must be an int"),
        ({"release_after": -1.0}, sk.SoftmaxkitValueError, "`release_after` must be finite"),
        ({"release_after": float("nan")}, sk.SoftmaxkitValueError, "`release_after`"),
        ({"release_after": "5"}, sk.SoftmaxkitTypeError, "`release_after` must be a number"),
    ],
)
def test_bad_settings_are_named(kwargs, exc, match):
    before = sk.output_cache()
    with pytest.raises(exc, match=match):
        sk.output_cache(**kwargs)
    assert sk.output_cache()["max_bytes"] == before["max_bytes"]


def test_environment_variable_sets_and_checks_the_limit():
    code = "import softmaxkit as sk; print(sk.output_cache()['max_bytes'])"
    env = dict(os.environ, SOFTMAXKIT_OUTPUT_CACHE_MB="64")
    env.pop("LD_PRELOAD", None)  # the sanitized run's runtime: not for a fresh interpreter
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == str(64 << 20), out.stderr
    env["SOFTMAXKIT_OUTPUT_CACHE_MB"] = "lots"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "SOFTMAXKIT_OUTPUT_CACHE_MB='lots' must be a size in MiB >= 0" in out.stderr


def _worker_softmax():
    x = _x()
    before = sk.output_cache()
    y = sk.softmax(x, precision="fast")
    del y
    gc.collect()
    y = sk.softmax(x, precision="fast")
    after = sk.output_cache()
    return after["hits"] - before["hits"], after["misses"] - before["misses"], float(y[0, 0])


def test_dask_distributed_workers_allocate_numpys_way(cache):
    """A worker manages memory by its process's resident size: nothing is kept there."""
    if os.environ.get("SOFTMAXKIT_SANITIZED"):
        pytest.skip(
            "the sanitizer run imports no dask.distributed (its servers and threads are "
            "not what is sanitized); this test runs in the ordinary suite"
        )
    distributed = pytest.importorskip("distributed", reason="pip install distributed")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
            silence_logs=40,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):  # fmt: skip
        hits, misses, first = client.submit(_worker_softmax, pure=False).result()
    assert (hits, misses) == (0, 0)
    assert first == sk.softmax(_x(), precision="fast")[0, 0]
    # the same calls outside a worker do use the cache
    assert _worker_softmax()[0] >= 1


def test_the_default_limit_follows_a_containers_memory_limit(tmp_path):
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    total = _outputs._memory_bytes(())
    assert total > 0
    v2.write_text("max\n")
    v1.write_text("9223372036854771712\n")
    assert _outputs._memory_bytes((str(v2), str(v1))) == total
    v2.write_text(f"{1 << 30}\n")
    assert _outputs._memory_bytes((str(v2), str(v1))) == min(total, 1 << 30)
    assert _outputs._memory_bytes((str(tmp_path / "absent"), str(v2))) == min(total, 1 << 30)
