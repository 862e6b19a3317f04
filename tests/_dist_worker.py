"""One rank of the vocab-parallel checks (run by tests/test_torch_distributed.py).

Usage: python -m tests._dist_worker RANK WORLD STORE_FILE OUT_JSON

Runs every check on this rank and writes its findings to OUT_JSON; the test
process asserts on them. Only 127.0.0.1-free FileStore rendezvous is used.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from typing import Any

import torch
import torch.distributed as dist

import softmaxkit.torch as skt
import softmaxkit.torch.distributed as sktd
from softmaxkit import SoftmaxkitError

V = 1003
N = 96


def sizes_for(world: int) -> list[int]:
    """Uneven slices in rank order."""
    if world == 1:
        return [V]
    if world == 2:
        return [520, V - 520]
    return [300, 251, 200, V - 751]


class Counter:
    """Counts torch.distributed collectives and their bytes (monkeypatched)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.saved: dict[str, Any] = {}

    def __enter__(self) -> Counter:
        for name in (
            "all_gather_single",
            "all_gather_into_tensor",
            "all_reduce",
            "all_gather",
            "broadcast",
            "reduce_scatter_tensor",
            "all_to_all_single",
        ):
            fn = getattr(dist, name, None)
            if fn is None:
                continue
            self.saved[name] = fn

            def wrap(*a: Any, _fn: Any = fn, _name: str = name, **k: Any) -> Any:
                t = a[1] if _name.startswith("all_gather") and len(a) > 1 else a[0]
                nb = t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0
                self.calls.append((_name, nb))
                return _fn(*a, **k)

            setattr(dist, name, wrap)
        return self

    def __exit__(self, *exc: Any) -> None:
        for name, fn in self.saved.items():
            setattr(dist, name, fn)


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of elements with identical bits (NaN == NaN)."""
    a, b = a.detach().reshape(-1), b.detach().reshape(-1)
    if a.numel() == 0:
        return 1.0
    same = (a == b) | (torch.isnan(a) & torch.isnan(b))
    return float(same.to(torch.float64).mean())


def data(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, V, generator=g) * 3
    x[::9, 5] += 40.0  # dominant logits: tiny losses
    x[4, :] = -float("inf")  # a row with nothing: not counted
    t = torch.randint(0, V, (N,), generator=g)
    t[::9] = 5
    t[::13] = -100
    w = torch.rand(V, generator=g) + 0.05
    return x, t, w


CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("plain", {}),
    ("sum", {"reduction": "sum"}),
    ("none", {"reduction": "none"}),
    ("weight", {"weight": "w"}),
    ("negweight", {"weight": "wneg"}),
    ("smooth", {"label_smoothing": 0.1}),
    ("zloss", {"z_loss": 1e-3}),
    ("all", {"weight": "w", "label_smoothing": 0.2, "z_loss": 1e-4}),
]


def f64_reference(
    x: torch.Tensor,
    t: torch.Tensor,
    *,
    weight: Any = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """The loss in float64 from its definition (rows with nothing are not counted)."""
    x64 = x.double()
    lse = torch.logsumexp(x64, 1)
    ign = t == -100
    ts = torch.where(ign, 0, t)
    w = torch.ones(x.shape[1], dtype=torch.float64) if weight is None else weight.double()
    wt = w[ts]
    eps = label_smoothing
    nll = lse - x64.gather(1, ts[:, None])[:, 0]
    item = wt * ((1 - eps) * nll + z_loss * lse * lse)
    if eps:
        item = item + eps / x.shape[1] * (w[None, :] * (lse[:, None] - x64)).sum(1)
    counted = ~ign & torch.isfinite(lse)
    item = torch.where(counted, item, 0.0)
    if reduction == "none":
        return item
    if reduction == "sum":
        return item.sum()
    return item.sum() / torch.where(counted, wt, 0.0).sum()


def main() -> None:
    rank, world, store_file, out_json = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    store = dist.FileStore(store_file, world)
    t_start = time.monotonic()
    dist.init_process_group(
        "gloo", store=store, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60)
    )
    res: dict[str, Any] = {"rank": rank, "world": world, "init_s": time.monotonic() - t_start}
    singles = [dist.new_group([r]) for r in range(world)]  # every rank creates every group
    me = singles[rank]
    sz = sizes_for(world)
    v0 = sum(sz[:rank])
    sl = slice(v0, v0 + sz[rank])

    res["t0"] = time.monotonic() - t_start
    # ---- cross_entropy: against one process (ours at TP=1 and skt.cross_entropy)
    for seed in (0,):
        x, t, w = data(seed)
        ws = {"w": w, "wneg": w - 0.4}
        for name, kw0 in CONFIGS if world == 2 else CONFIGS[3:5] + CONFIGS[-1:]:
            kw = {k: (ws[v] if k == "weight" else v) for k, v in kw0.items()}
            xl = x[:, sl].clone().requires_grad_()
            with Counter() as cf:
                out = sktd.cross_entropy(xl, t, **kw)
            with Counter() as cb:
                (gl,) = torch.autograd.grad(out.sum(), xl)
            # the same op on one rank holding every class
            xf = x.clone().requires_grad_()
            one = sktd.cross_entropy(xf, t, group=me, **kw)
            (gf,) = torch.autograd.grad(one.sum(), xf)
            # float64 truth
            ref = f64_reference(x, t, **kw)
            key = f"ce/{name}/{seed}"
            r: dict[str, Any] = {
                "fwd": cf.calls,
                "bwd": cb.calls,
                "loss": out.double().reshape(-1).tolist(),
                "loss_eq_tp1": bits_equal(out, one),
                "grad_eq_tp1": bits_equal(gl, gf[:, sl]),
            }
            if name != "negweight":  # skt.cross_entropy wants weights >= 0
                xs = x.clone().requires_grad_()
                sk = skt.cross_entropy(xs, t, **kw)
                (gs,) = torch.autograd.grad(sk.sum(), xs)
                r["loss_eq_skt"] = bits_equal(out, sk)
                d = (gl.double() - gs[:, sl].double()).abs()
                ulp = torch.finfo(torch.float32).eps * gs[:, sl].double().abs().clamp(min=1e-30)
                fin = torch.isfinite(d)
                r["grad_eq_skt"] = bits_equal(gl, gs[:, sl])
                r["grad_ulp_skt"] = float((d[fin] / ulp[fin]).max()) if bool(fin.any()) else 0.0
            rel = (out.detach().double() - ref).abs() / ref.abs().clamp(min=1e-300)
            r["loss_vs_f64"] = float(rel.max())
            res[key] = r

    res["t1"] = time.monotonic() - t_start
    # ---- extras: lse, entropy, top-k in the same collective
    x, t, w = data(2)
    xl = x[:, sl].contiguous()
    with Counter() as cx0:  # a larger state than the group's capacity: it grows once
        sktd.cross_entropy(xl, t, return_lse=True, return_entropy=True, topk=4)
    with Counter() as cx:
        ex = sktd.cross_entropy(xl, t, return_lse=True, return_entropy=True, topk=4)
    e1 = sktd.cross_entropy(x, t, group=me, return_lse=True, return_entropy=True, topk=4)
    res["extras"] = {
        "grow_calls": cx0.calls,
        "calls": cx.calls,
        "lse_eq": bits_equal(ex.lse, e1.lse),
        "ent_eq": bits_equal(ex.entropy, e1.entropy),
        "top_eq": bits_equal(ex.topk_logprobs, e1.topk_logprobs),
        "topi_eq": bits_equal(ex.topk_indices[8:], e1.topk_indices[8:]),  # row 4: all -inf ties
        "lse_vs_torch": float(
            (ex.lse.double() - torch.logsumexp(x.double(), 1))[torch.isfinite(ex.lse)].abs().max()
        ),
        "topi_vs_torch": bits_equal(ex.topk_indices[8:], x[8:].topk(4, 1).indices),
    }

    res["t2"] = time.monotonic() - t_start
    # ---- linear_cross_entropy: vocab-sharded lm-head
    g = torch.Generator().manual_seed(3)
    D = 24
    h = torch.randn(N, D, generator=g)
    W = torch.randn(V, D, generator=g)
    bias = torch.randn(V, generator=g) * 0.1
    tt = torch.randint(0, V, (N,), generator=g)
    tt[::11] = -100
    lin = {}
    lin_cfgs: list[tuple[str, dict[str, Any]]] = [
        ("smooth_z", {"label_smoothing": 0.1, "z_loss": 1e-3}),
        ("plain", {}),
    ]
    for name, kw in lin_cfgs[: 2 if world == 2 else 1]:
        hl = h.clone().requires_grad_()
        Wl = W[sl].clone().requires_grad_()
        bl = bias[sl].clone().requires_grad_()
        with Counter() as cf:
            lo = sktd.linear_cross_entropy(hl, Wl, tt, local_bias=bl, **kw)
        with Counter() as cb:
            lo.backward()
        hs = h.clone().requires_grad_()
        Ws = W.clone().requires_grad_()
        bs = bias.clone().requires_grad_()
        ls = skt.linear_cross_entropy(hs, Ws, tt, linear_bias=bs, **kw)
        ls.backward()
        lin[name] = {
            "fwd": cf.calls,
            "bwd": cb.calls,
            "loss_rel": float(abs(lo.double() - ls.double()) / abs(ls.double())),
            "gW_rel": float((Wl.grad - Ws.grad[sl]).abs().max() / Ws.grad.abs().max()),
            "gb_rel": float((bl.grad - bs.grad[sl]).abs().max() / bs.grad.abs().max()),
            "gh_rel": float((hl.grad - hs.grad).abs().max() / hs.grad.abs().max()),
            "loss": float(lo),
        }
    res["linear"] = lin

    res["t3"] = time.monotonic() - t_start
    # ---- DTensor sharded on the class dimension
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import Replicate, Shard, distribute_tensor

        mesh = init_device_mesh("cpu", (world,))
        x, t, w = data(4)
        dx = distribute_tensor(x, mesh, [Shard(1)]).requires_grad_()
        dl = sktd.cross_entropy(dx, t, weight=w, label_smoothing=0.1)
        dl.backward()
        xf = x.clone().requires_grad_()
        ref = sktd.cross_entropy(xf, t, group=me, weight=w, label_smoothing=0.1)
        ref.backward()
        dt = distribute_tensor(t, mesh, [Replicate()])
        dl2 = sktd.cross_entropy(dx.detach(), dt)
        # a column-parallel lm-head: the projection's rows sharded Shard(0)
        Wd = distribute_tensor(W, mesh, [Shard(0)]).requires_grad_()
        ld = sktd.linear_cross_entropy(h, Wd, tt)
        ld.backward()
        Wf = W.clone().requires_grad_()
        lf = sktd.linear_cross_entropy(h, Wf, tt, group=me)
        lf.backward()
        lin_d = {
            "loss_rel": float(abs(ld.double() - lf.double()) / abs(lf.double())),
            "gW_rel": float((Wd.grad.full_tensor() - Wf.grad).abs().max() / Wf.grad.abs().max()),
        }
        res["dtensor"] = {
            "linear": lin_d,
            "loss_eq": bits_equal(dl, ref),
            "grad_eq": bits_equal(dx.grad.full_tensor(), xf.grad),
            "grad_is_dtensor": type(dx.grad).__name__,
            "replicated_target_ok": bool(torch.isfinite(dl2)),
        }
    except Exception as e:  # reported, the test fails on it
        res["dtensor"] = {"error": f"{type(e).__name__}: {e}"}

    res["t4"] = time.monotonic() - t_start
    res["exact"] = exact_checks(rank, world, me)
    res["precheck"] = precheck_checks(rank, world)

    res["t4b"] = time.monotonic() - t_start
    # ---- bad input: a clear error on every rank, never a hang
    x, t, w = data(0)
    xl = x[:, sl].contiguous()
    errs: dict[str, str] = {}

    def expect(label: str, fn: Any) -> None:
        t0 = time.monotonic()
        try:
            fn()
            errs[label] = "no error"
        except SoftmaxkitError as e:
            errs[label] = f"SoftmaxkitError ({time.monotonic() - t0:.2f}s): {e}"
        except Exception as e:
            errs[label] = f"OTHER {type(e).__name__}: {e}"

    expect("sizes", lambda: sktd.cross_entropy(xl, t, num_classes=V + 1))
    expect("weight_len", lambda: sktd.cross_entropy(xl, t, weight=w[:-2]))
    bad = t.clone()
    bad[3] = V
    expect("target_range", lambda: sktd.cross_entropy(xl, bad))
    other = t.clone()
    if rank == world - 1:
        other[0] = (other[0] + 1) % V
    expect("target_mismatch", lambda: sktd.cross_entropy(xl, other))
    expect("option_mismatch", lambda: sktd.cross_entropy(xl, t, label_smoothing=0.1 * (rank == 0)))
    expect(
        "local_failure",
        lambda: (
            _raise_inside(xl, t) if rank == world - 1 else sktd.cross_entropy(xl, t, z_loss=1e-3)
        ),
    )
    # a valid call still works afterwards (nothing left half-done)
    after = sktd.cross_entropy(xl, t)
    res["after_errors_ok"] = bool(torch.isfinite(after))
    res["errors"] = errs

    res["t5"] = time.monotonic() - t_start
    # ---- a rank that never reaches the collective: the others fail within the timeout
    short = dist.new_group(list(range(world)), timeout=datetime.timedelta(seconds=2))
    t0 = time.monotonic()
    if rank == world - 1:
        res["dead"] = "skipped"
        time.sleep(3.5)
    else:
        try:
            sktd.cross_entropy(xl, t, group=short)
            res["dead"] = "no error"
        except Exception as e:
            res["dead"] = f"{type(e).__name__} after {time.monotonic() - t0:.1f}s"
    res["dead_s"] = time.monotonic() - t0
    res["total_s"] = time.monotonic() - t_start
    with open(out_json, "w") as f:
        json.dump(res, f)
    # the short group is broken now; leave without a final collective on it
    dist.destroy_process_group()


# ---- exact mode: block-aligned slices give single-process results by construction

B = sktd.BLOCK
VX = 3 * B + 1000  # four blocks of the C core, the last one short
NX = 20


def exact_sizes(world: int) -> list[int]:
    """Uneven slices on block boundaries (an empty one at 4 ranks)."""
    if world == 1:
        return [VX]
    if world == 2:
        return [B, VX - B]
    return [B, 2 * B, 0, VX - 3 * B]


def exact_data(adversarial: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(NX, VX, generator=g) * 3
    t = torch.randint(0, VX, (NX,), generator=g)
    inf = float("inf")
    x[0, 7] += 60.0  # a dominant target logit: loss ~1e-18
    t[0] = 7
    x[1, [5, B + 5, 2 * B + 5, 3 * B + 5]] = 30.0  # tied maxima in four blocks
    t[1] = B + 5
    x[2, :] = -inf  # nothing to count
    x[3, : 2 * B] = -inf  # the first two blocks empty
    t[3] = 2 * B + 17
    t[4] = -100  # ignored
    x[5, 2 * B + 3] = 80.0  # the maximum in another block than the target
    if adversarial:
        x[6, [9, 2 * B + 9]] = inf  # two +inf, the target one of them: loss log 2
        t[6] = 9
        x[7, B + 1] = inf  # +inf elsewhere: loss inf
        x[8, 3 * B + 2] = float("nan")  # NaN: loss NaN
        x[9, t[9]] = -inf  # the target at -inf: loss inf
    w = torch.rand(VX, generator=g) + 0.05
    return x, t, w


def exact_checks(rank: int, world: int, me: Any) -> dict[str, Any]:
    sz = exact_sizes(world)
    v0 = sum(sz[:rank])
    sl = slice(v0, v0 + sz[rank])
    out: dict[str, Any] = {"sizes": sz}
    cases: list[tuple[str, bool, torch.dtype, dict[str, Any]]] = [
        ("mean", False, torch.float32, {}),
        ("sum", False, torch.float32, {"reduction": "sum"}),
        ("weight_z", False, torch.float32, {"weight": "w", "z_loss": 1e-3}),
        ("none_adversarial", True, torch.float32, {"reduction": "none"}),
        (
            "none_adv_weight_z",
            True,
            torch.float32,
            {"reduction": "none", "weight": "w", "z_loss": 1e-2},
        ),
        ("f64_weight", False, torch.float64, {"weight": "w"}),
        ("bf16_adversarial", True, torch.bfloat16, {"reduction": "none", "z_loss": 1e-3}),
        # label smoothing: the kernel route's block gap and exp sums travel too
        ("smooth", False, torch.float32, {"label_smoothing": 0.1}),
        (
            "smooth_weight_z",
            False,
            torch.float32,
            {"label_smoothing": 0.2, "weight": "w", "z_loss": 1e-3, "reduction": "none"},
        ),
        ("smooth_bf16", False, torch.bfloat16, {"label_smoothing": 0.1, "reduction": "sum"}),
    ]
    for name, adv, dt, kw0 in cases:
        x, t, w = exact_data(adv)
        x = x.to(dt)
        kw = {k: (w if v == "w" else v) for k, v in kw0.items()}
        xl = x[:, sl].clone().requires_grad_()
        with Counter() as cf:
            lo = sktd.cross_entropy(xl, t, **kw)
        with Counter() as cb:
            (gl,) = torch.autograd.grad(lo.sum(), xl)
        xs = x.clone().requires_grad_()
        sk = skt.cross_entropy(xs, t, **kw)
        (gs,) = torch.autograd.grad(sk.sum(), xs)
        xf = x.clone().requires_grad_()
        one = sktd.cross_entropy(xf, t, group=me, **kw)
        (gf,) = torch.autograd.grad(one.sum(), xf)
        out[name] = {
            "fwd": cf.calls,
            "bwd": cb.calls,
            "loss_eq_skt": bits_equal(lo, sk),
            "grad_eq_skt": bits_equal(gl, gs[:, sl]),
            "loss_eq_tp1": bits_equal(lo, one),
            "grad_eq_tp1": bits_equal(gl, gf[:, sl]),
            "loss": lo.double().reshape(-1).tolist(),
        }
    # smoothing with +inf and NaN rows: one process runs the array-API engine and the
    # ranks merge their states (rebuilt from the blocks' gap sums): the same limits,
    # and values agreeing to float32 accuracy
    x, t, w = exact_data(True)
    xl = x[:, sl].clone().requires_grad_()
    lo = sktd.cross_entropy(xl, t, label_smoothing=0.1, weight=w, reduction="none")
    (gl,) = torch.autograd.grad(lo.sum(), xl)
    xs = x.clone().requires_grad_()
    sk = skt.cross_entropy(xs, t, label_smoothing=0.1, weight=w, reduction="none")
    (gs,) = torch.autograd.grad(sk.sum(), xs)
    fin = torch.isfinite(sk)
    gfin = torch.isfinite(gs[:, sl])
    out["smooth_adversarial"] = [
        bool(torch.equal(torch.isnan(lo), torch.isnan(sk)))
        and bool(torch.equal(torch.isinf(lo), torch.isinf(sk)))
        and bool(torch.equal(gfin, torch.isfinite(gl))),
        float(((lo - sk).abs() / sk.abs().clamp(min=1e-30))[fin].max()),
        float((gl - gs[:, sl]).abs()[gfin].max()) if bool(gfin.any()) else 0.0,
        lo.detach().double().tolist(),
    ]
    # lse from the same collective: the single-process kernel's lse, bit for bit
    x, t, _ = exact_data(True)
    ex = sktd.cross_entropy(x[:, sl].contiguous(), t, return_lse=True, topk=3)
    lse1 = skt.logsumexp(x, dim=-1)
    out["lse_eq_skt"] = bits_equal(ex.lse, lse1)
    ex1 = sktd.cross_entropy(x, t, group=me, return_lse=True, topk=3)
    out["topk_eq_tp1"] = bits_equal(ex.topk_logprobs, ex1.topk_logprobs)
    return out


def _attempt(fn: Any) -> str:
    t0 = time.monotonic()
    try:
        fn()
        return "no error"
    except SoftmaxkitError as e:
        return f"SoftmaxkitError ({time.monotonic() - t0:.2f}s): {e}"
    except Exception as e:
        return f"OTHER {type(e).__name__}: {e}"


def precheck_checks(rank: int, world: int) -> dict[str, Any]:
    """Ranks that disagree on the token count (or dtype) get a clean error on every rank.

    With ``precheck=True`` from a header gather; without it from the headers of the
    state gather, whose messages are padded to the group's capacity so that every
    rank's has the same size (gloo aborts a process that receives a larger one). A
    fresh group, so that its capacity starts from this function's calls.
    """
    import os

    grp = dist.new_group(list(range(world)))
    x, t, _ = data(0)
    sz = sizes_for(world)
    v0 = sum(sz[:rank])
    xl = x[:, v0 : v0 + sz[rank]].contiguous()
    out: dict[str, Any] = {}
    with Counter() as c:
        a = sktd.cross_entropy(xl, t, precheck=True, group=grp)
    with Counter() as c1:
        b = sktd.cross_entropy(xl, t, group=grp)
    out["calls"] = c.calls
    out["plain_calls"] = c1.calls
    out["same"] = bits_equal(a, b)
    n = N - 1 if rank == world - 1 else N  # the last rank lost a token
    out["option"] = _attempt(lambda: sktd.cross_entropy(xl[:n], t[:n], precheck=True, group=grp))

    def env() -> None:
        os.environ[sktd.ENV_PRECHECK] = "1"
        try:
            sktd.cross_entropy(xl[:n], t[:n], group=grp)
        finally:
            del os.environ[sktd.ENV_PRECHECK]

    out["env"] = _attempt(env)
    # no precheck: the padded state gather carries the mismatch to every rank
    with Counter() as cm:
        out["fewer"] = _attempt(lambda: sktd.cross_entropy(xl[:n], t[:n], group=grp))
    out["fewer_calls"] = cm.calls
    # one rank's state outgrows the capacity while the others' fit
    x2, t2 = torch.cat([xl, xl]), torch.cat([t, t])
    if rank == world - 1:
        out["more"] = _attempt(lambda: sktd.cross_entropy(x2, t2, group=grp))
    else:
        out["more"] = _attempt(lambda: sktd.cross_entropy(xl, t, group=grp))
    out["dtype"] = _attempt(
        lambda: sktd.cross_entropy(xl.double() if rank == 0 else xl, t, group=grp)
    )
    # every rank's state outgrows the capacity: one more gather, once
    with Counter() as cg:
        big = sktd.cross_entropy(x2, t2, reduction="none", group=grp)
    with Counter() as cg2:
        big2 = sktd.cross_entropy(x2, t2, reduction="none", group=grp)
    small = sktd.cross_entropy(xl, t, reduction="none", group=grp)
    out["grow_calls"] = cg.calls
    out["grown_calls"] = cg2.calls
    out["grow_same"] = bits_equal(big, torch.cat([small, small])) * bits_equal(big, big2)
    # smaller calls: padded to the capacity, which shrinks after eight of them
    sizes = []
    for _ in range(9):
        with Counter() as cs:
            sm = sktd.cross_entropy(xl[:10], t[:10], reduction="none", group=grp)
        sizes += [b for _, b in cs.calls]
    out["shrink_sizes"] = sizes
    out["small_same"] = bits_equal(sm, small[:10])
    out["after_ok"] = bool(torch.isfinite(sktd.cross_entropy(xl, t, group=grp)))
    return out


def _raise_inside(xl: torch.Tensor, t: torch.Tensor) -> Any:
    """Make this rank's state computation fail inside the call (others must hear of it)."""
    orig = sktd._slice_state, sktd._kernel_rows

    def boom(*a: Any, **k: Any) -> None:
        raise MemoryError("simulated allocation failure while reducing the slice")

    sktd._slice_state = sktd._kernel_rows = boom  # type: ignore[assignment]
    try:
        return sktd.cross_entropy(xl, t, z_loss=1e-3)
    finally:
        sktd._slice_state, sktd._kernel_rows = orig  # type: ignore[assignment]


if __name__ == "__main__":
    main()
