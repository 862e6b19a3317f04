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


def test_report_round_trips_through_json_and_explains_the_floors() -> None:
    import json

    import numpy as np

    case = _bench.Case("softmax", (64, 1024), "float32")
    report = _bench.run(None, cases=[case], repeats=3, peers=True)
    names = {r.impl for r in report["results"]}
    assert {"memcpy", "memcpy alloc", "softmaxkit fast out="} <= names
    # every implementation of the case ran the same number of interleaved rounds
    assert len({len(r.times) for r in report["results"] if r.times}) == 1
    saved = json.loads(json.dumps(_bench.report_to_json(report)))
    again = _bench.report_from_json(saved)
    assert _bench.format_markdown(again) == _bench.format_markdown(report)
    text = _bench.format_markdown(report)
    assert "### What these floors allow" in text
    ns = report["floor"]["softmaxkit fast softmax, in cache, 1 thread"]
    cores = report["machine"]["physical cores used"]
    floor = 64 * 1024 * ns * 1e-9 / cores
    assert f"| softmax 64x1024 float32 | {_bench._fmt_time(floor)} |" in text
    assert np.isfinite(ns) and ns > 0
