"""Vocab-parallel cross-entropy on gloo (CPU): the ``distributed`` section of BENCHMARKS.md.

Run from the repository root (unset OPENBLAS_CORETYPE for this command only)::

    env -u OPENBLAS_CORETYPE .venv/bin/python benchmarks/distributed_bench.py --out /tmp/d.md

Three implementations of the same loss, logits sharded over the classes:

* ``softmaxkit``: ``softmaxkit.torch.distributed.cross_entropy`` (one all-gather of a
  float64 per-token state);
* ``DTensor loss_parallel``: ``F.cross_entropy`` on a ``Shard(1)`` DTensor inside
  ``torch.distributed.tensor.parallel.loss_parallel()``;
* ``Megatron-style``: a vocab-parallel cross-entropy written here in the manner of
  Megatron-LM's (max all-reduce, then sum all-reduces of the target logit and of the
  exponentials, all in float32; the softmax is saved for a collective-free backward).

Part 1 times forward + backward on 2 ranks (interleaved rounds, medians) and counts
the collectives and their bytes per forward and backward. Part 2 runs each method at
TP = 1, 2 and 4 on the same data and reports the fraction of per-token losses, mean
losses and gradient elements whose bits change with the TP degree, against one
process (``softmaxkit.torch.cross_entropy``) and against float64 rounded once.
Each world is a set of processes rendezvousing through a FileStore; gloo talks over
the loopback interface only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
METHODS = ("softmaxkit", "DTensor loss_parallel", "Megatron-style")


# ------------------------------------------------------------------ rank side


def _data(n: int, v: int, seed: int = 0) -> tuple[Any, Any]:
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, v, generator=g) * 3
    t = torch.randint(0, v, (n,), generator=g)
    rows = torch.arange(0, n, 8)
    x[rows, t[rows]] += 40.0  # a dominant target logit: a tiny loss
    t[3::16] = -100
    return x, t


def _megatron_fn() -> Any:
    import torch
    import torch.distributed as dist

    class VocabParallelCE(torch.autograd.Function):
        """Megatron-style: 3 float32 all-reduces forward, softmax saved, no backward collective."""

        @staticmethod
        def forward(ctx: Any, xl: Any, t: Any, v0: int, group: Any) -> Any:  # type: ignore[override]
            m = xl.amax(1)
            dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
            z = xl - m[:, None]
            inside = (t >= v0) & (t < v0 + xl.shape[1])
            col = torch.where(inside, t - v0, torch.zeros_like(t))
            pred = torch.where(inside, z.gather(1, col[:, None])[:, 0], 0.0)
            dist.all_reduce(pred, group=group)
            e = z.exp_()
            se = e.sum(1)
            dist.all_reduce(se, group=group)
            loss = torch.log(se) - pred
            e.div_(se[:, None])
            ctx.save_for_backward(e, inside, col)
            return loss

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:  # type: ignore[override]
            sm, inside, col = ctx.saved_tensors
            grad = sm.clone()
            cur = grad.gather(1, col[:, None])[:, 0]
            grad.scatter_(1, col[:, None], torch.where(inside, cur - 1.0, cur)[:, None])
            return grad * g[:, None], None, None, None

    def run(xl: Any, t: Any, v0: int, group: Any = None) -> Any:
        ign = t == -100
        ts = torch.where(ign, torch.zeros_like(t), t)
        per = VocabParallelCE.apply(xl, ts, v0, group)
        per = torch.where(ign, 0.0, per)
        return per.sum() / (~ign).sum().clamp(min=1)

    return run


class _Count:
    """Counts torch.distributed calls and their payload bytes (ours, Megatron-style)."""

    NAMES = ("all_gather_single", "all_gather_into_tensor", "all_reduce", "all_gather")

    def __enter__(self) -> _Count:
        import torch.distributed as dist

        self.calls: list[tuple[str, int]] = []
        self.saved = {}
        for name in self.NAMES:
            fn = getattr(dist, name, None)
            if fn is None:
                continue
            self.saved[name] = fn

            def wrap(*a: Any, _fn: Any = fn, _name: str = name, **k: Any) -> Any:
                ten = a[1] if _name.startswith("all_gather") else a[0]
                self.calls.append((_name, ten.numel() * ten.element_size()))
                return _fn(*a, **k)

            setattr(dist, name, wrap)
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch.distributed as dist

        for name, fn in self.saved.items():
            setattr(dist, name, fn)


SMOOTH = 0.1  # the label smoothing of the smoothed bits table (softmaxkit only)


def _methods(world: int, rank: int, x: Any, t: Any, eps: float = 0.0) -> dict[str, Any]:
    """``name -> fn()`` returning ``(mean loss, local logits leaf)`` for one fwd.

    With label smoothing ``eps`` only softmaxkit runs: DTensor's ``loss_parallel``
    fails in forward with it, and the Megatron-style reference has none.
    """
    import torch.nn.functional as F
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard
    from torch.distributed.tensor.parallel import loss_parallel

    import softmaxkit.torch.distributed as sktd

    V = x.shape[1]
    vr = V // world
    sl = slice(rank * vr, (rank + 1) * vr)
    mesh = init_device_mesh("cpu", (world,))
    mega = _megatron_fn()

    def ours() -> Any:
        xl = x[:, sl].clone().requires_grad_()
        return sktd.cross_entropy(xl, t, label_smoothing=eps), xl

    if eps:
        return {"softmaxkit": ours}

    def dtensor() -> Any:
        xl = x[:, sl].clone().requires_grad_()
        dx = DTensor.from_local(xl, mesh, [Shard(1)], run_check=False)
        with loss_parallel():
            loss = F.cross_entropy(dx, t, ignore_index=-100)
        return loss, xl

    def megatron() -> Any:
        xl = x[:, sl].clone().requires_grad_()
        return mega(xl, t, rank * vr), xl

    return {"softmaxkit": ours, "DTensor loss_parallel": dtensor, "Megatron-style": megatron}


def _backward(loss: Any) -> None:
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor.parallel import loss_parallel

    if isinstance(loss, DTensor):
        with loss_parallel():
            loss.backward()
    else:
        loss.backward()


def _profile_collectives(fn: Any) -> tuple[int, int, list[int]]:
    """(forward gloo collectives, backward ones, forward payload bytes) from the profiler."""
    from torch.profiler import ProfilerActivity, profile

    def gloo(prof: Any) -> list[Any]:
        return [e for e in prof.events() if e.name.startswith("gloo:")]

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as pf:
        loss, _xl = fn()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as pb:
        _backward(loss)
    fwd = gloo(pf)
    nbytes = []
    for e in fwd:
        shapes = [s for s in (e.input_shapes or []) if s]
        n = 1
        for d in shapes[0] if shapes else []:
            n *= d
        nbytes.append(n)
    return len(fwd), len(gloo(pb)), nbytes


def rank_main(
    mode: str, rank: int, world: int, store: str, out: str, n: int, v: int, reps: int
) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        store=dist.FileStore(store, world),
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=120),
    )
    x, t = _data(n, v)
    fns = _methods(world, rank, x, t, SMOOTH if mode == "sbits" else 0.0)
    res: dict[str, Any] = {}
    if mode == "time":
        for name, fn in fns.items():  # warm-up, and the collectives of one call
            loss, _ = fn()
            _backward(loss)
            with _Count() as cf:
                loss, _ = fn()
            with _Count() as cb:
                _backward(loss)
            nf, nb, prof_bytes = _profile_collectives(fn)
            res[name] = {
                "fwd_calls": cf.calls,
                "bwd_calls": cb.calls,
                "prof_fwd": nf,
                "prof_bwd": nb,
                "prof_elems": prof_bytes,
                "times": [],
            }
        for _ in range(reps):
            for name, fn in fns.items():  # alternate, so load changes hit all alike
                dist.barrier()
                t0 = time.perf_counter()
                loss, _ = fn()
                _backward(loss)
                res[name]["times"].append(time.perf_counter() - t0)
        if rank == 0:
            Path(out).write_text(json.dumps(res))
    else:
        saved = {}
        for name, fn in fns.items():
            loss, xl = fn()
            _backward(loss)
            full = loss.full_tensor() if hasattr(loss, "full_tensor") else loss
            saved[name] = {"loss": full.detach(), "grad": xl.grad.detach()}
        torch.save(saved, f"{out}.rank{rank}")
    dist.barrier()
    dist.destroy_process_group()


# ---------------------------------------------------------------- parent side


def _spawn(mode: str, world: int, n: int, v: int, reps: int, tmp: Path) -> Path:
    out = tmp / f"{mode}{world}_{n}_{v}.json"
    store = tmp / f"store{mode}{world}_{n}_{v}"  # a fresh FileStore for every spawn
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--rank",
                mode,
                str(r),
                str(world),
                str(store),
                str(out),
                str(n),
                str(v),
                str(reps),
            ],
            env=env,
        )
        for r in range(world)
    ]
    for p in procs:
        if p.wait(timeout=1200) != 0:
            raise RuntimeError(f"a {mode} rank of world {world} failed")
    return out


def _bits_table(tmp: Path, n: int, v: int, eps: float = 0.0) -> list[dict[str, Any]]:
    import torch

    import softmaxkit.torch as skt

    x, t = _data(n, v)
    xs = x.clone().requires_grad_()
    ref_loss = skt.cross_entropy(xs, t, label_smoothing=eps)
    ref_loss.backward()
    ref_grad = xs.grad
    # float64, rounded once. At the target, p_t - 1 = -(sum of the other p_j): no
    # cancellation (torch's own float64 gradient loses it on the dominant tokens).
    x64 = x.double()
    counted = t != -100
    ts = torch.where(counted, t, 0)
    lp = torch.log_softmax(x64, 1)
    p = lp.exp()
    rows = torch.arange(n)
    others = p.clone()
    others[rows, ts] = 0.0
    g64 = p.clone()
    g64[rows, ts] = -others.sum(1)
    den = counted.sum()
    g64 = torch.where(counted[:, None], g64, 0.0) / den
    nll = -lp[rows, ts]
    cr_loss = (torch.where(counted, nll, 0.0).sum() / den).float()
    cr_grad = g64.float()
    methods = ("softmaxkit",) if eps else METHODS
    if eps:  # the exact answer from the float64 copy (double-word engine), rounded once
        x64 = x.double().requires_grad_()
        l64 = skt.cross_entropy(x64, t, label_smoothing=eps)
        l64.backward()
        assert x64.grad is not None
        cr_loss, cr_grad = l64.detach().float(), x64.grad.float()
    per_tp: dict[int, dict[str, Any]] = {}
    for world in (1, 2, 4):
        out = _spawn("sbits" if eps else "bits", world, n, v, 1, tmp)
        parts = [torch.load(f"{out}.rank{r}") for r in range(world)]
        per_tp[world] = {
            m: {
                "loss": parts[0][m]["loss"],
                "grad": torch.cat([p[m]["grad"] for p in parts], 1),
                "same_loss_all_ranks": all(
                    torch.equal(p[m]["loss"], parts[0][m]["loss"]) for p in parts
                ),
            }
            for m in methods
        }

    def diff(a: Any, b: Any) -> float:
        return float((a != b).double().mean())

    rows = []
    for m in methods:
        r: dict[str, Any] = {"method": m}
        for world in (2, 4):
            r[f"loss_tp{world}"] = diff(per_tp[world][m]["loss"], per_tp[1][m]["loss"])
            r[f"grad_tp{world}"] = diff(per_tp[world][m]["grad"], per_tp[1][m]["grad"])
        r["ranks_agree"] = all(per_tp[w][m]["same_loss_all_ranks"] for w in (1, 2, 4))
        r["loss_vs_skt"] = max(diff(per_tp[w][m]["loss"], ref_loss.detach()) for w in (1, 2, 4))
        r["grad_vs_skt"] = max(diff(per_tp[w][m]["grad"], ref_grad) for w in (1, 2, 4))
        r["loss_vs_cr"] = max(diff(per_tp[w][m]["loss"], cr_loss.detach()) for w in (1, 2, 4))
        r["grad_vs_cr"] = max(diff(per_tp[w][m]["grad"], cr_grad) for w in (1, 2, 4))
        rows.append(r)
    return rows


def _machine() -> str:
    from softmaxkit._bench import _cpu_model

    load = os.getloadavg()
    return (
        f"{_cpu_model() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"load average {load[0]:.1f} at the start"
    )


def section(reps: int = 5, quick: bool = False) -> str:
    import torch

    n, v = (256, 8000) if quick else (1024, 32000)
    bn, bv = (128, 8000) if quick else (256, 32000)
    an, av = (16, 4 * 32768) if quick else (64, 4 * 32768)  # block-aligned at TP = 2 and 4
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        timing = json.loads(_spawn("time", 2, n, v, reps, tmp).read_text())
        bits = _bits_table(tmp, bn, bv)
        abits = _bits_table(tmp, an, av)
        sbits = _bits_table(tmp, an, av, SMOOTH)
    base = statistics.median(timing["softmaxkit"]["times"])
    lines = [
        "## Vocab-parallel cross-entropy (torch.distributed, gloo on CPU)",
        "",
        f"Machine: {_machine()}; torch {torch.__version__}, gloo over loopback, one thread "
        "per rank. The machine is shared with other jobs, so times are indicative.",
        "",
        f"### Forward + backward, 2 ranks, N = {n} tokens, V = {v} classes (float32, "
        f"{v // 2} per rank), mean over counted tokens; median of {reps} interleaved rounds",
        "",
        "| method | time (ms) | vs softmaxkit | collectives fwd | collectives bwd "
        "| bytes sent per rank fwd | B/token |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in METHODS:
        r = timing[m]
        med = statistics.median(r["times"])
        if r["fwd_calls"] or r["bwd_calls"]:
            nf, nb = len(r["fwd_calls"]), len(r["bwd_calls"])
            by = sum(b for _, b in r["fwd_calls"])
            how = ""
        else:  # DTensor's functional collectives bypass torch.distributed's Python API
            nf, nb = r["prof_fwd"], r["prof_bwd"]
            by = sum(r["prof_elems"]) * 4
            how = " (profiler)"
        lines.append(
            f"| {m} | {med * 1e3:.1f} | {med / base:.2f}x | {nf}{how} | {nb} | {by:,} | "
            f"{by / n:.1f} |"
        )
    lines += [
        "",
        "These slices (16000 classes) are not block-aligned, so softmaxkit's forward sends "
        "one state per rank: 36 bytes per token (max, count and target logit in float32; the "
        "rest of the sum of exponentials, a smoothing word and an entropy word in float64) "
        "plus a 336-byte header that lets every rank check the call; the Megatron-style and "
        "DTensor forwards send 3 float32 words per token in 3 blocking all-reduces. "
        "Without label smoothing softmaxkit reduces its slice with the C kernel and finishes "
        "loss and gradient with the kernel's arithmetic in the forward pass (the backward "
        "only scales the kept gradient). Block-aligned slices send 20 bytes per token plus "
        "16 per 32768-class block held (third table).",
        "",
        f"### Bits across TP = 1, 2, 4 (N = {bn}, V = {bv} float32, logits x3, a +40 logit "
        "on every 8th token, 1/16 of targets ignored; mean loss and its gradient)",
        "",
        "Fraction of values whose bits differ from the same method at TP = 1, and (worst over "
        "TP) from one process of `softmaxkit.torch.cross_entropy` and from float64 rounded "
        "once to float32 (correctly rounded).",
        "",
        "| method | loss TP2 | loss TP4 | grad TP2 | grad TP4 | same loss on all ranks "
        "| loss vs skt | grad vs skt | loss vs CR | grad vs CR |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    head = lines[-2:]
    for r in bits:
        lines.append(_bits_row(r))
    lines += [
        "",
        f"### Block-aligned slices: bits across TP = 1, 2, 4 (N = {an}, V = {av} = 4 x 32768 "
        "float32, otherwise as above)",
        "",
        "At TP = 2 and 4 every slice is a run of whole 32768-class blocks of the C kernel, "
        "so softmaxkit exchanges the kernel's block statistics and finishes every row with "
        "the kernel's own combine: equal to one process by construction (the other methods "
        "are unchanged).",
        "",
        *head,
    ]
    for r in abits:
        lines.append(_bits_row(r))
    lines += [
        "",
        f"### The same with label smoothing {SMOOTH} (softmaxkit only)",
        "",
        "Each block also sends its `Σ_c (m_b − x_c)` and float64 `Σ_c exp(x_c − m_b)` (16 "
        "more bytes a block a token), and every rank finishes the rows with the one-process "
        "smoothing code (`softmaxkit._smoothing`): equal to one process by construction. "
        "DTensor's `loss_parallel` fails in forward with label smoothing, and Megatron's "
        "scales it by the local vocabulary size (Megatron #737, #7464), so neither is in "
        'this table. "CR" is the float64 answer of the double-word engine rounded once.',
        "",
        *head,
    ]
    for r in sbits:
        lines.append(_bits_row(r))
    return "\n".join(lines)


def _bits_row(r: dict[str, Any]) -> str:
    return (
        f"| {r['method']} | {r['loss_tp2']:.3g} | {r['loss_tp4']:.3g} | {r['grad_tp2']:.3g} "
        f"| {r['grad_tp4']:.3g} | {'yes' if r['ranks_agree'] else 'no'} "
        f"| {r['loss_vs_skt']:.3g} | {r['grad_vs_skt']:.3g} | {r['loss_vs_cr']:.3g} "
        f"| {r['grad_vs_cr']:.3g} |"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--rank":
        mode, rank, world, store, out, n, v, reps = argv[1:9]
        rank_main(mode, int(rank), int(world), store, out, int(n), int(v), int(reps))
        return 0
    ap = argparse.ArgumentParser(description="vocab-parallel cross-entropy on gloo")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small shapes (smoke run)")
    ap.add_argument("--out", help="also write the Markdown to this file")
    args = ap.parse_args(argv)
    text = section(args.reps, args.quick)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
