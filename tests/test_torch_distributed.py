"""softmaxkit.torch.distributed on 2 and 4 gloo ranks spawned by the test.

Each world size is one set of rank processes (tests/_dist_worker.py) that runs
every check and reports; the tests below assert on the reports. Rendezvous is a
FileStore in a temporary directory; gloo talks over the loopback interface only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="torch not installed: pip install softmaxkit[torch]")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():  # pragma: no cover
    pytest.skip("this torch build has no torch.distributed", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 240  # seconds for one world's whole run (the ranks' own group timeout is 60 s)


def _run_world(world: int, tmp: Path) -> list[dict[str, Any]]:
    env = dict(os.environ)
    env["GLOO_SOCKET_IFNAME"] = "lo"
    env["MASTER_ADDR"] = "127.0.0.1"
    env["OMP_NUM_THREADS"] = "1"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests._dist_worker",
                str(r),
                str(world),
                str(tmp / "store"),
                str(tmp / f"rank{r}.json"),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(world)
    ]
    logs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=RUN_TIMEOUT)
            logs.append(out.decode(errors="replace"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for r, p in enumerate(procs):
        assert p.returncode == 0, f"rank {r} exited with {p.returncode}:\n{logs[r][-4000:]}"
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(world)]


HDR = 42 * 8  # the header every rank sends in every gather


@pytest.fixture(scope="module", params=[2, 4])
def reports(request: Any, tmp_path_factory: Any) -> list[dict[str, Any]]:
    return _run_world(request.param, tmp_path_factory.mktemp(f"tp{request.param}"))


def _ce_keys(rep: dict[str, Any]) -> list[str]:
    return [k for k in rep if k.startswith("ce/")]


@pytest.mark.slow
def test_one_collective_forward_none_backward(reports: list[dict[str, Any]]) -> None:
    for rep in reports:
        for k in _ce_keys(rep):
            fwd, bwd = rep[k]["fwd"], rep[k]["bwd"]
            # the first call on a group learns the slice sizes (one header gather, once)
            first = k == _ce_keys(rep)[0]
            assert len(fwd) == (2 if first else 1), (k, fwd)
            assert {name for name, _ in fwd} <= {"all_gather_single", "all_gather_into_tensor"}
            assert bwd == [], (k, bwd)
        # top-k makes the state larger than the group's capacity: the first such call
        # sends its header padded to the old capacity, flags the overflow, and every
        # rank gathers once more at the new size; the next call needs one gather
        grow = [b for _, b in rep["extras"]["grow_calls"]]
        assert grow == [HDR + 96 * 36, HDR + 96 * ((3 + 2 * 4) * 8 + 3 * 4)], grow
        assert len(rep["extras"]["calls"]) == 1


@pytest.mark.slow
def test_bytes_per_token(reports: list[dict[str, Any]]) -> None:
    # per token: max, count, target logit in float32, rest, smoothing gap, entropy word in
    # float64 (36 bytes), plus a 336-byte header, sent by each rank
    for rep in reports:
        for i, k in enumerate(_ce_keys(rep)):
            sizes = [nbytes for _, nbytes in rep[k]["fwd"]]
            # the first call learns the slice sizes from a 336-byte header gather
            assert sizes == ([HDR] if i == 0 else []) + [96 * 36 + HDR], (k, sizes)


@pytest.mark.slow
def test_same_bits_on_every_rank(reports: list[dict[str, Any]]) -> None:
    for k in _ce_keys(reports[0]):
        losses = [rep[k]["loss"] for rep in reports]
        assert all(lo == losses[0] for lo in losses), k


@pytest.mark.slow
def test_bitwise_equal_to_one_process(reports: list[dict[str, Any]]) -> None:
    for rep in reports:
        for k in _ce_keys(rep):
            r = rep[k]
            assert r["loss_eq_tp1"] == 1.0, k
            # these slices are not block-aligned: the rows are finished with the kernel's
            # arithmetic from the rank-order merged state (without smoothing); here the
            # row is ONE block, whose gradient the single-process kernel (and TP=1) forms
            # from exponentials of a faster polynomial kept from its first pass, so a few
            # elements differ by 1 ulp (measured: 5e-5 of them)
            assert r["grad_eq_tp1"] >= 0.999, k
            if "loss_eq_skt" in r:
                assert r["loss_eq_skt"] == 1.0, k
                # the single-process native gradient is within 1 ulp of ours (which is
                # correctly rounded from float64; the native one is off in ~3e-4 of elements)
                assert r["grad_ulp_skt"] <= 1.0, k
            if not k.startswith("ce/none"):
                assert r["loss_vs_f64"] < 1e-6, k


@pytest.mark.slow
def test_extras_from_the_same_collective(reports: list[dict[str, Any]]) -> None:
    for rep in reports:
        ex = rep["extras"]
        for key in ("lse_eq", "ent_eq", "top_eq", "topi_eq"):
            assert ex[key] == 1.0, key
        assert ex["lse_vs_torch"] < 1e-5
        assert ex["topi_vs_torch"] == 1.0


@pytest.mark.slow
def test_linear_cross_entropy(reports: list[dict[str, Any]]) -> None:
    for rep in reports:
        for i, (name, r) in enumerate(rep["linear"].items()):
            # the first call learns the slice sizes from a 336-byte header gather
            assert [b for _, b in r["fwd"][:-1]] == ([HDR] if i == 0 else []), (name, r["fwd"])
            assert [n for n, _ in r["bwd"]] == ["all_reduce"], (name, r["bwd"])
            # the single-process engine exponentiates in float32: agree to its accuracy
            assert r["loss_rel"] < 1e-5, name
            for g in ("gW_rel", "gb_rel", "gh_rel"):
                assert r[g] < 1e-5, (name, g)
    for name in reports[0]["linear"]:
        assert len({rep["linear"][name]["loss"] for rep in reports}) == 1


@pytest.mark.slow
def test_dtensor_shard_last_dim(reports: list[dict[str, Any]]) -> None:
    for rep in reports:
        d = rep["dtensor"]
        assert "error" not in d, d
        assert d["loss_eq"] == 1.0 and d["grad_eq"] == 1.0
        assert d["grad_is_dtensor"] == "DTensor"
        assert d["replicated_target_ok"]
        assert d["linear"]["loss_rel"] < 1e-6 and d["linear"]["gW_rel"] < 1e-6


@pytest.mark.slow
def test_bad_input_raises_on_every_rank(reports: list[dict[str, Any]]) -> None:
    words = {
        "sizes": "add up",
        "weight_len": "weight",
        "target_range": "out of range",
        "target_mismatch": "different targets",
        "option_mismatch": "different options",
        "local_failure": "simulated allocation failure",
    }
    for rep in reports:
        for label, word in words.items():
            msg = rep["errors"][label]
            assert msg.startswith("SoftmaxkitError"), (rep["rank"], label, msg)
            assert word in msg, (rep["rank"], label, msg)
        assert rep["after_errors_ok"]


@pytest.mark.slow
def test_exact_block_aligned_bitwise_equal_to_one_process(reports: list[dict[str, Any]]) -> None:
    """Block-aligned uneven slices: loss and gradient ARE single-process skt.cross_entropy's.

    Each rank sends the C kernel's statistics of its own 32768-class blocks and every
    rank finishes the rows with the kernel's own combine, so this holds by
    construction; the data has dominant, tied, +inf, -inf, NaN and ignored rows.
    """
    for rep in reports:
        ex = rep["exact"]
        assert ex["lse_eq_skt"] == 1.0
        assert ex["topk_eq_tp1"] == 1.0
        for name, r in ex.items():
            if not isinstance(r, dict):
                continue
            for key in ("loss_eq_skt", "grad_eq_skt", "loss_eq_tp1", "grad_eq_tp1"):
                assert r[key] == 1.0, (rep["rank"], name, key, r[key])
            assert r["bwd"] == [], (name, r["bwd"])
    for name in [k for k, v in reports[0]["exact"].items() if isinstance(v, dict)]:
        assert len({str(rep["exact"][name]["loss"]) for rep in reports}) == 1, name


@pytest.mark.slow
def test_smoothing_with_posinf_and_nan_rows_merges_the_rank_states(
    reports: list[dict[str, Any]],
) -> None:
    """Smoothing with +inf/NaN rows: one process runs the array-API engine, the ranks
    the rank-order merge (smoothing words rebuilt from the blocks' gap sums)."""
    for rep in reports:
        limits_agree, loss_rel, grad_abs, _ = rep["exact"]["smooth_adversarial"]
        assert limits_agree
        assert loss_rel < 1e-6
        assert grad_abs < 1e-6
    losses = [str(rep["exact"]["smooth_adversarial"][3]) for rep in reports]
    assert len(set(losses)) == 1  # every rank the same bits


@pytest.mark.slow
def test_exact_one_collective_and_bytes(reports: list[dict[str, Any]]) -> None:
    """The first call learns the layout (2 gathers), then ONE gather: 20 + 16 B a block a token."""
    for rep in reports:
        ex = rep["exact"]
        world = len(ex["sizes"])
        slots = max(-(-s // 32768) for s in ex["sizes"])
        names = [k for k, v in ex.items() if isinstance(v, dict)]
        cap = 0
        for i, name in enumerate(names):
            fwd = [b for _, b in ex[name]["fwd"]]
            f64 = name.startswith("f64")
            # per slot: m, c, s_hi (+ s_lo for float64; + gap and exp sums with smoothing)
            per_slot = 28 if f64 else 32 if name.startswith("smooth") else 16
            need = 20 * ((24 if f64 else 20) + per_slot * slots)
            if i == 0:  # new slices: a gather at the old layout, then one at the new
                assert len(fwd) == 2 and fwd[-1] == HDR + need, (name, world, fwd)
            elif need > cap:  # the state outgrew the capacity: padded, then at its size
                assert fwd == [HDR + cap, HDR + need], (name, world, fwd, cap)
            else:  # one gather, padded to the capacity
                assert fwd == [HDR + cap], (name, world, fwd, cap)
            cap = max(cap, need) if i else need


@pytest.mark.slow
def test_mismatched_ranks_raise_cleanly(reports: list[dict[str, Any]]) -> None:
    """Different token counts or dtypes: a clear error on every rank, no gloo abort.

    With ``precheck=True`` (or SOFTMAXKIT_DIST_PRECHECK=1) from a header gather;
    without it from the state gather itself, whose messages are padded to the
    group's capacity so that they have one size on every rank.
    """
    pad = HDR + 96 * 36  # the capacity of the fresh group's first calls (96 tokens)
    for rep in reports:
        pc = rep["precheck"]
        assert [b for _, b in pc["calls"]] == [HDR, pad], pc["calls"]
        assert [b for _, b in pc["plain_calls"]] == [pad], pc["plain_calls"]
        assert pc["same"] == 1.0
        for label in ("option", "env", "fewer", "more"):
            assert pc[label].startswith("SoftmaxkitError"), (label, pc[label])
            assert "different numbers of tokens" in pc[label], (label, pc[label])
        assert [b for _, b in pc["fewer_calls"]] == [pad], pc["fewer_calls"]
        assert pc["dtype"].startswith("SoftmaxkitError"), pc["dtype"]
        assert "different options" in pc["dtype"], pc["dtype"]
        # all ranks outgrow the capacity: two gathers once, then one
        big = HDR + 192 * 36
        assert [b for _, b in pc["grow_calls"]] == [pad, big], pc["grow_calls"]
        assert [b for _, b in pc["grown_calls"]] == [big], pc["grown_calls"]
        assert pc["grow_same"] == 1.0
        # eight calls that need at most half the capacity (the 96-token one and seven
        # of 10 tokens) are padded to it, then it shrinks to the need
        assert pc["shrink_sizes"] == [big] * 7 + [HDR + 10 * 36] * 2, pc["shrink_sizes"]
        assert pc["small_same"] == 1.0
        assert pc["after_ok"]


@pytest.mark.slow
def test_dead_rank_fails_within_timeout(reports: list[dict[str, Any]]) -> None:
    for rep in reports[:-1]:
        assert rep["dead"] != "no error", rep["dead"]
        assert rep["dead_s"] < 2.0 + 15.0, rep["dead_s"]  # the group's 2 s timeout, plus slack


def test_docstring_examples() -> None:
    import doctest
    import importlib

    if dist.is_initialized():  # pragma: no cover - the examples start their own group
        pytest.skip("a process group is already initialised in this process")
    mod = importlib.import_module("softmaxkit.torch.distributed")
    res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0
    assert res.failed == 0


def test_clear_errors_before_any_collective() -> None:
    import softmaxkit.torch.distributed as sktd
    from softmaxkit import SoftmaxkitError

    x = torch.zeros(4, 3)
    with pytest.raises(SoftmaxkitError, match="integer class indices"):
        sktd.cross_entropy(x, torch.zeros(4))
    with pytest.raises(SoftmaxkitError, match="shape"):
        sktd.cross_entropy(x, torch.zeros(5, dtype=torch.int64))
    with pytest.raises(SoftmaxkitError, match="local_weight"):
        sktd.linear_cross_entropy(x, torch.zeros(3, 2), torch.zeros(4, dtype=torch.int64))
    if not dist.is_initialized():
        with pytest.raises(SoftmaxkitError, match="init_process_group"):
            sktd.cross_entropy(x, torch.zeros(4, dtype=torch.int64))


def test_special_rows_match_one_process() -> None:
    """+inf, -inf and NaN rows, dominant logits: the contract of softmaxkit.torch.cross_entropy."""
    import tempfile

    import softmaxkit.torch as skt
    import softmaxkit.torch.distributed as sktd

    if dist.is_initialized():  # pragma: no cover
        pytest.skip("a process group is already initialised in this process")
    inf = float("inf")
    x = torch.tensor(
        [
            [0.0, -40.0, 1.0, 2.0],  # ordinary
            [inf, 0.0, inf, 1.0],  # two +inf logits, target among them: loss log 2
            [inf, 0.0, 1.0, 2.0],  # one +inf logit, target elsewhere: loss inf
            [-inf, -inf, -inf, -inf],  # nothing: not counted
            [0.0, -40.0, -45.0, -60.0],  # dominant target: a tiny loss
            [3.0, 3.0, 3.0, -inf],  # ties at the maximum, a -inf logit
        ]
    )
    t = torch.tensor([2, 2, 3, 1, 0, 1])
    with tempfile.TemporaryDirectory() as d:
        dist.init_process_group("gloo", store=dist.FileStore(f"{d}/store", 1), rank=0, world_size=1)
        try:
            for kw in ({"reduction": "none"}, {"reduction": "none", "z_loss": 1e-3}):
                xa = x.clone().requires_grad_()
                a = sktd.cross_entropy(xa, t, **kw)
                (ga,) = torch.autograd.grad(a[[0, 1, 3, 4, 5]].sum(), xa)
                xb = x.clone().requires_grad_()
                b = skt.cross_entropy(xb, t, **kw)
                (gb,) = torch.autograd.grad(b[[0, 1, 3, 4, 5]].sum(), xb)
                assert torch.equal(a, b), (a, b)
                assert torch.equal(ga, gb), (ga, gb)  # one rank holds every block: exact
            assert float(a.detach()[4]) > 0.0  # 4.2e-18, not 0
            nan = x.clone()
            nan[0, 1] = float("nan")
            assert torch.isnan(sktd.cross_entropy(nan, t, reduction="none")[0])
        finally:
            dist.destroy_process_group()


def test_one_rank_float64_and_odd_token_counts() -> None:
    """float64 logits with smoothing or entropy (the logits were overwritten by exp(x - m)
    and the loss wrong), and one rank with an odd number of tokens (its message's slices
    could not be viewed as int64)."""
    import tempfile

    import torch.nn.functional as F

    import softmaxkit.torch as skt
    import softmaxkit.torch.distributed as sktd

    if dist.is_initialized():  # pragma: no cover
        pytest.skip("a process group is already initialised in this process")
    g = torch.Generator().manual_seed(3)
    with tempfile.TemporaryDirectory() as d:
        dist.init_process_group("gloo", store=dist.FileStore(f"{d}/store", 1), rank=0, world_size=1)
        try:
            for dtype in (torch.float32, torch.float64):
                for n in (1, 2, 3, 5, 7):
                    x = torch.randn(n, 11, generator=g, dtype=dtype) * 3
                    t = torch.randint(0, 11, (n,), generator=g)
                    before = x.clone()
                    for kw in ({}, {"label_smoothing": 0.1}):
                        got = sktd.cross_entropy(x, t, **kw)
                        assert torch.equal(x, before), "the logits were modified"
                        one = skt.cross_entropy(x, t, **kw)
                        if dtype == torch.float64 and kw:
                            # one process rounds each float64 smoothed item once (double-word);
                            # the merged state sums the smoothing term in float64 by torch
                            ulp = torch.finfo(dtype).eps * abs(float(one))
                            assert abs(float(got) - float(one)) <= ulp, (n, float(got), float(one))
                        else:
                            assert torch.equal(got, one), (dtype, n, kw)
                        ref = F.cross_entropy(x.double(), t, **kw)
                        assert float(got) == pytest.approx(float(ref), rel=1e-6)
                    ent = sktd.cross_entropy(x, t, reduction="none", return_entropy=True).entropy
                    assert torch.equal(x, before)
                    p = torch.softmax(x.double(), 1)
                    want = -(p * torch.log_softmax(x.double(), 1)).sum(1)
                    torch.testing.assert_close(ent.double(), want, rtol=1e-6, atol=0)
        finally:
            dist.destroy_process_group()


def test_means_of_losses_near_the_largest_float() -> None:
    """A mean of finite float64 losses whose sum overflows is their mean, as in one
    process (the distributed means summed first: inf)."""
    import tempfile

    import softmaxkit.torch.distributed as sktd

    if dist.is_initialized():  # pragma: no cover
        pytest.skip("a process group is already initialised in this process")
    x = torch.zeros(4, 2, dtype=torch.float64)
    x[:, 1] = 1e308
    t = torch.zeros(4, dtype=torch.int64)
    h = torch.full((4, 1), 1e154, dtype=torch.float64)
    w = torch.tensor([[0.0], [1e154]], dtype=torch.float64)
    with tempfile.TemporaryDirectory() as d:
        dist.init_process_group("gloo", store=dist.FileStore(f"{d}/store", 1), rank=0, world_size=1)
        try:
            for kw in ({}, {"weight": torch.tensor([1.0, 2.0], dtype=torch.float64)}):
                assert float(sktd.cross_entropy(x, t, **kw)) == pytest.approx(1e308, rel=1e-15)
                got = sktd.linear_cross_entropy(h, w, t, **kw)
                assert float(got) == pytest.approx(1e308, rel=1e-15), kw
            assert float(sktd.cross_entropy(x, t, reduction="sum")) == float("inf")
        finally:
            dist.destroy_process_group()
