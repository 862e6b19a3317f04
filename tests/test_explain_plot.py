"""explain() and the charts: values checked by hand, deterministic files, and the HTML
page rendered by headless Chromium."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit import calibration as cal
from softmaxkit import plot


class TestExplain:
    def test_seed_worked_example(self):
        ex = sk.explain([1.5, 0.8, -0.2])
        np.testing.assert_allclose(ex.naive_exp, [math.exp(1.5), math.exp(0.8), math.exp(-0.2)])
        assert round(ex.naive_sum, 3) == 7.526
        assert ex.max == 1.5
        np.testing.assert_allclose(ex.shifted, [0.0, -0.7, -1.7], atol=1e-15)
        assert ex.sum_shifted == pytest.approx(1 + math.exp(-0.7) + math.exp(-1.7))
        # 0.59549..., which rounds to 0.595 (the seed's 0.596 divides rounded exponentials)
        want = math.exp(1.5) / (math.exp(1.5) + math.exp(0.8) + math.exp(-0.2))
        assert ex.probabilities[0] == pytest.approx(want, rel=1e-15)
        assert round(float(ex.probabilities[0]), 3) == 0.595
        np.testing.assert_allclose(np.exp(ex.log_probabilities), ex.probabilities, rtol=1e-15)
        assert ex.logsumexp == pytest.approx(math.log(ex.naive_sum), rel=1e-15)
        assert ex.notes == ()
        assert "0.595497" in ex.table()

    def test_seed_log_softmax_and_second_example(self):
        np.testing.assert_array_equal(
            sk.explain([2.0, 1.0, 0.1]).log_probabilities.round(3), [-0.417, -1.417, -2.317]
        )
        np.testing.assert_array_equal(
            sk.explain([2.0, 1.0, 0.5]).probabilities.round(3), [0.629, 0.231, 0.140]
        )

    def test_naive_failures_are_shown(self):
        ex = sk.explain([1000.0, 0.0, -800.0])
        assert np.isposinf(ex.naive_exp[0]) and np.isnan(ex.naive_probabilities[0])
        np.testing.assert_array_equal(ex.probabilities, [1.0, 0.0, 0.0])
        np.testing.assert_array_equal(ex.log_probabilities, [0.0, -1000.0, -1800.0])
        assert np.isneginf(ex.naive_log_probabilities[1])
        assert any("overflows" in n for n in ex.notes)
        assert any("log(softmax) is -inf" in n for n in ex.notes)
        d = json.loads(ex.to_json())
        assert d["naive_exp"][0] == "inf" and d["naive_probabilities"][0] == "nan"

    def test_float32_overflows_earlier(self):
        ex = sk.explain(np.array([100.0, 0.0], dtype=np.float32))
        assert ex.dtype == "float32" and np.isposinf(ex.naive_exp[0])
        assert "88.72" in ex.notes[0]

    def test_temperature_labels_and_backends(self, backend):
        ex = sk.explain(backend.asarray(np.array([2.0, 1.0, 0.1])), temperature=2.0, labels="abc")
        np.testing.assert_allclose(ex.probabilities, sk.softmax(np.array([1.0, 0.5, 0.05])))
        assert ex.labels == ("a", "b", "c")

    def test_bad_input(self):
        with pytest.raises(sk.SoftmaxkitValueError, match="one non-empty row"):
            sk.explain(np.zeros((2, 2)))
        with pytest.raises(sk.SoftmaxkitValueError, match="has 2 names for 3 logits"):
            sk.explain([1.0, 2.0, 3.0], labels=["a", "b"])


def _charts() -> list[plot.Chart]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    z = rng.normal(size=(300, 4))
    z[np.arange(300), y] += 1.0
    z *= 3
    d0 = cal.reliability_diagram(z, y)
    d1 = cal.reliability_diagram(z, y, temperature=cal.fit_temperature(z, y))
    return [
        plot.logits_chart([1.5, 0.8, -0.2]),
        plot.temperature_chart([1.5, 0.8, -0.2]),
        plot.reliability_chart(d0, d1),
    ]


class TestCharts:
    def test_chartjs_in_the_seed_format(self):
        cfg = plot.logits_chart([1.5, 0.8, -0.2]).chartjs()
        assert cfg["type"] == "bar"
        assert cfg["data"]["labels"] == ["Class 1", "Class 2", "Class 3"]
        logits, probs = cfg["data"]["datasets"]
        assert logits["label"] == "Logits" and logits["data"] == [1.5, 0.8, -0.2]
        assert logits["backgroundColor"] == "rgba(75, 192, 192, 0.6)"
        assert probs["label"] == "Softmax Probabilities"
        assert probs["data"] == [0.5955, 0.2957, 0.1088]
        assert probs["borderColor"] == "rgba(255, 99, 132, 1)"
        assert cfg["options"]["plugins"]["title"]["text"] == "Logits vs. Softmax Probabilities"
        assert cfg["options"]["scales"]["x"]["title"]["text"] == "Classes"
        json.dumps(cfg, allow_nan=False)

    def test_png_and_svg_bytes_are_deterministic(self, tmp_path):
        chart = _charts()[2]
        for fmt in ("png", "svg"):
            assert chart.to_bytes(fmt) == chart.to_bytes(fmt)
        # ... and across processes (hash seeds, font caches, dates)
        code = (
            "import sys; from softmaxkit import plot; "
            "sys.stdout.buffer.write(plot.logits_chart([1.5, 0.8, -0.2]).to_bytes(sys.argv[1]))"
        )
        for fmt in ("png", "svg"):
            runs = [
                subprocess.run(
                    [sys.executable, "-c", code, fmt],
                    capture_output=True,
                    check=True,
                    env={**os.environ, "PYTHONHASHSEED": str(seed)},
                ).stdout
                for seed in (1, 2)
            ]
            assert runs[0] == runs[1] == plot.logits_chart([1.5, 0.8, -0.2]).to_bytes(fmt)

    def test_save_by_suffix(self, tmp_path):
        chart = plot.logits_chart([2.0, 1.0, 0.1])
        for ext in ("png", "svg", "html", "json", "txt"):
            p = chart.save(tmp_path / f"c.{ext}")
            assert p.stat().st_size > 100
        assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert json.loads((tmp_path / "c.json").read_text())["type"] == "bar"
        with pytest.raises(sk.SoftmaxkitValueError, match=r"\.png"):
            chart.save(tmp_path / "c.gif")

    def test_html_is_self_contained(self):
        for chart in _charts():
            page = chart.to_html()
            assert "<svg" in page and 'id="chartjs-config"' in page
            # nothing is fetched: no external scripts, styles, images or fonts
            for ref in ("<script src", "<link", 'src="http', 'href="http', "url(http", "@import"):
                assert ref not in page

    def test_terminal_chart(self):
        text = plot.logits_chart([1.5, 0.8, -0.2]).terminal(width=60)
        lines = text.splitlines()
        assert lines[0] == "Logits vs. Softmax Probabilities"
        assert "0.5955" in lines[2] and "█" in lines[2]
        assert lines[4].index("█") < lines[4].index("│")  # the negative logit grows left
        assert "\x1b[" not in text
        assert "\x1b[36m" in plot.logits_chart([1.5, 0.8, -0.2]).terminal(color=True)
        rel = _charts()[2].terminal()
        assert "Before" in rel and "After" in rel and "┃" in rel

    def test_matplotlib_is_imported_only_when_drawing(self):
        code = (
            "import sys, numpy as np, softmaxkit, softmaxkit.plot as p, softmaxkit.calibration; "
            "c = p.logits_chart([1.0, 2.0]); c.chartjs(); c.terminal(); "
            "assert 'matplotlib' not in sys.modules; c.to_bytes('png'); "
            "assert 'matplotlib' in sys.modules"
        )
        subprocess.run([sys.executable, "-c", code], check=True)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_html_renders_in_headless_chromium(tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("SOFTMAXKIT_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required (make test installs Debian's chromium) but missing")
        pytest.skip("no chromium on this machine (make test installs it)")
    page = tmp_path / "chart.html"
    plot.logits_chart([1.5, 0.8, -0.2]).save(page)
    shot = tmp_path / "shot.png"
    base = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert '<figure id="chart">' in dom and "<svg" in dom
    subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1000,700", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.is_file(), "chromium wrote no screenshot"
    from matplotlib.image import imread

    img = (imread(shot)[..., :3] * 255).round().astype(int)
    # The bars' colours as blended onto white: teal logits, pink probabilities.
    teal = np.array([75, 192, 192]) * 0.6 + 255 * 0.4
    pink = np.array([255, 99, 132]) * 0.6 + 255 * 0.4
    for colour in (teal, pink):
        close = np.all(np.abs(img - colour) <= 6, axis=-1)
        assert close.sum() > 2000, f"no bars of colour {colour} in the rendered page"


def test_reliability_chart_errors():
    with pytest.raises(sk.SoftmaxkitValueError, match="at least one"):
        plot.reliability_chart()
    with pytest.raises(sk.SoftmaxkitValueError, match="ReliabilityDiagram"):
        plot.reliability_chart(np.zeros(3))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "kind", "match"),
    [
        # each leaked a TypeError/ValueError from deep inside (not iterable, no len(), float())
        (lambda: plot.logits_chart([1.0, 2.0], labels=3), TypeError, "`labels` must be a sequence"),
        (lambda: plot.logits_chart([1.0, 2.0], labels=[1]), ValueError, "has 1 names for 2 logits"),
        (lambda: plot.logits_chart("ab"), TypeError, "`logits` must be one row of numbers"),
        (lambda: plot.temperature_chart([1.0, 2.0], temperatures=2.0), TypeError, "`temperatures`"),
        (
            lambda: plot.temperature_chart([1.0, 2.0], temperatures="12"),
            TypeError,
            "`temperatures`",
        ),
        (
            lambda: plot.reliability_chart(_DIAGRAM, names=1.5),
            TypeError,
            "`names` must be a sequence of names, one per diagram",
        ),
        (
            lambda: plot.reliability_chart(_DIAGRAM, names=("a", "b")),
            ValueError,
            "has 2 names for 1 diagrams",
        ),
    ],
)
def test_chart_arguments(call, kind, match):
    with pytest.raises(kind, match=match) as info:
        call()
    assert isinstance(info.value, sk.SoftmaxkitError)


def test_chart_labels_become_strings():
    # numbers as labels were kept as numbers and broke the terminal chart's layout
    chart = plot.logits_chart([1.0, 2.0], labels=[10, 20])
    assert chart.labels == ("10", "20")
    assert "10" in chart.terminal()


_DIAGRAM = cal.reliability_diagram(np.log([[0.9, 0.1], [0.6, 0.4]]), np.array([0, 1]))


def test_chart_files_land_where_asked(tmp_path: Path):
    target = tmp_path / "sub"
    target.mkdir()
    p = plot.temperature_chart([2.0, 1.0], temperatures=[1, 2]).save(target / "t.svg")
    assert p.read_text().lstrip().startswith("<?xml")
