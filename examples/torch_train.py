"""Train one small classifier twice, with softmaxkit's and with torch's cross-entropy.

Both runs start from the same seed, see the same mini-batches and use the same
optimiser; only the loss module differs (``softmaxkit.torch.CrossEntropyLoss``
versus ``torch.nn.CrossEntropyLoss``). The script prints both loss curves side by
side, the largest relative gap between them and the test accuracy of each model,
and exits with status 1 if the curves disagree by more than ``--tolerance``.

The data are scikit-learn's bundled handwritten digits (8x8 images, 10 classes;
no download) when scikit-learn is installed, otherwise generated Gaussian
clusters.

Run::

    python examples/torch_train.py            # about ten seconds on a laptop CPU
    python examples/torch_train.py --plot curves.png
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

import softmaxkit.torch as skt


def load_data(seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        g = torch.Generator().manual_seed(seed)
        centers = torch.randn(10, 64, generator=g) * 2.0
        y = torch.randint(0, 10, (1800,), generator=g)
        x = centers[y] + torch.randn(1800, 64, generator=g)
        return x, y, "generated Gaussian clusters (scikit-learn not installed)"
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    return x, y, "scikit-learn digits (1797 images, 10 classes)"


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def train(
    loss_fn: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seed: int,
    epochs: int,
    batch: int,
) -> tuple[list[float], nn.Module]:
    model = make_model(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(seed + 1)
    curve = []
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=order)
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            curve.append(loss.item())
    return curve, model


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label-smoothing", type=float, default=0.05)
    ap.add_argument("--tolerance", type=float, default=1e-3, help="largest relative gap allowed")
    ap.add_argument(
        "--plot", metavar="PNG", help="save both curves to this file (needs matplotlib)"
    )
    args = ap.parse_args(argv)

    x, y, source = load_data(args.seed)
    split = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))
    test, tr = split[:300], split[300:]
    kw = {"epochs": args.epochs, "batch": args.batch, "seed": args.seed}
    ours, m_ours = train(
        skt.CrossEntropyLoss(label_smoothing=args.label_smoothing), x[tr], y[tr], **kw
    )
    ref, m_ref = train(
        nn.CrossEntropyLoss(label_smoothing=args.label_smoothing), x[tr], y[tr], **kw
    )

    gaps = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(ours, ref, strict=True)]
    print(f"data: {source}; {len(ours)} steps of batch {args.batch}")
    print(f"{'step':>6} {'softmaxkit':>12} {'torch':>12}")
    for s in sorted({0, len(ours) // 4, len(ours) // 2, 3 * len(ours) // 4, len(ours) - 1}):
        print(f"{s:>6} {ours[s]:>12.6f} {ref[s]:>12.6f}")
    worst = max(gaps)
    print(f"largest relative gap between the curves: {worst:.2e} (tolerance {args.tolerance:.0e})")
    print(
        f"test accuracy: softmaxkit {accuracy(m_ours, x[test], y[test]):.3f}, "
        f"torch {accuracy(m_ref, x[test], y[test]):.3f}"
    )
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(ref, label="torch.nn.CrossEntropyLoss", lw=2.5, alpha=0.6)
        ax.plot(ours, label="softmaxkit.torch.CrossEntropyLoss", lw=1, ls="--")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_yscale("log")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")
    if worst > args.tolerance:
        print("the curves disagree", file=sys.stderr)
        return 1
    print("the curves agree")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
