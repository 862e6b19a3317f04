"""softmaxkit.torch against torch's own OpInfo samples: values and input gradients.

Every sample torch's test suite uses for the six ops of the softmax family
(``torch.testing._internal.common_methods_invocations.op_db``) in float32 and
float64 is run through torch and through ``softmaxkit.torch`` with the same
arguments. All must match (torch's tolerances for the dtype), except the
contract divergences listed in ``DIVERGENT`` by sample name with the reason.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip(
    "expecttest", reason="torch's OpInfo samples need expecttest: pip install expecttest"
)

import softmaxkit.torch as skt  # noqa: E402

pytestmark = pytest.mark.slow  # importing op_db takes several seconds

OPS = {
    "softmax": skt.softmax,
    "log_softmax": skt.log_softmax,
    "logsumexp": skt.logsumexp,
    "nn.functional.cross_entropy": skt.cross_entropy,
    "nn.functional.nll_loss": skt.nll_loss,
    "nn.functional.binary_cross_entropy_with_logits": skt.binary_cross_entropy_with_logits,
}

# sample name -> why softmaxkit deliberately answers differently (torch returns NaN there)
DIVERGENT: dict[str, str] = {}


def _samples():
    from torch.testing._internal.common_methods_invocations import op_db

    out = []
    for op in op_db:
        if op.name not in OPS:
            continue
        for dtype in (torch.float32, torch.float64):
            for i, s in enumerate(op.sample_inputs("cpu", dtype, requires_grad=True)):
                name = f"{op.name}{'.' + op.variant_test_name if op.variant_test_name else ''}"
                out.append((f"{name}-{str(dtype)[6:]}-{i}", op, s))
    return out


def _detached(a):
    if isinstance(a, torch.Tensor):
        return a.detach().clone()
    if isinstance(a, (list, tuple)):
        return type(a)(_detached(b) for b in a)
    return a


def _run(fn, sample):
    x = sample.input.detach().clone().requires_grad_(sample.input.is_floating_point())
    args = _detached(tuple(sample.args))
    kwargs = {k: _detached(v) for k, v in sample.kwargs.items()}
    out = fn(x, *args, **kwargs)
    grad = None
    if x.requires_grad and out.requires_grad:
        cot = torch.linspace(-1.0, 2.0, out.numel(), dtype=out.dtype).reshape(out.shape)
        (grad,) = torch.autograd.grad(out, x, cot, allow_unused=True)
    return out.detach(), grad


def _same(a, b):
    if a is None or b is None:
        return (a is None or not a.any()) and (b is None or not b.any())
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    try:
        torch.testing.assert_close(a, b, equal_nan=True)
    except AssertionError:
        return False
    return True


def test_every_opinfo_sample_matches_torch_except_listed_divergences():
    samples = _samples()
    assert len(samples) == 302  # torch 2.13's sample count for these ops in float32 and float64
    mismatched = []
    for name, op, s in samples:
        want_val, want_grad = _run(op.op, s)
        got_val, got_grad = _run(OPS[op.name], s)
        if not (_same(want_val, got_val) and _same(want_grad, got_grad)):
            mismatched.append(name)
    unexpected = sorted(set(mismatched) - set(DIVERGENT))
    assert not unexpected, f"{len(unexpected)} of {len(samples)} samples differ: {unexpected}"
    stale = sorted(set(DIVERGENT) - set(mismatched))
    assert not stale, f"listed as divergent but now matching: {stale}"
