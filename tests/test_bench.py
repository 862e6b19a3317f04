"""The benchmark engine runs end to end and reports what it measured."""

from __future__ import annotations

from softmaxkit import _bench


def test_bench_engine_smoke() -> None:
    cases = [
        _bench.Case("softmax", (16, 256), "float32"),
        _bench.Case("ce_fwd_bwd", (8, 100), "float64"),
        _bench.Case("latency", (10,), "float32"),
    ]
    seen: list[str] = []
    report = _bench.run(seen.append, cases=cases, repeats=2, peers=False)
    assert {r.impl for r in report["results"]} >= {"softmaxkit fast", "softmaxkit accurate"}
    assert all(r.times and r.median > 0 for r in report["results"])
    text = _bench.format_markdown(report)
    assert "## Machine" in text and "softmax 16x256 float32" in text
    assert "10-element softmax (accurate) ≤ 5 µs" in text
    assert seen, "progress was never reported"
