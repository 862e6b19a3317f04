"""The installed ``softmaxkit`` command, run in a subprocess as a user would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit import calibration as cal

BIN = Path(sys.executable).parent / "softmaxkit"


def sk_cli(*args: str, stdin: bytes | None = None, cwd: Path | None = None, env=None):
    exe = str(BIN) if BIN.exists() else shutil.which("softmaxkit")
    assert exe, "the softmaxkit command is not installed (pip install -e . / make install)"
    e = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR",)}
    e.update(env or {})
    return subprocess.run(
        [exe, *args], input=stdin, capture_output=True, cwd=cwd, env=e, timeout=300
    )


def out(r) -> str:
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


def test_softmax_numbers():
    r = sk_cli("softmax", "2", "1", "0.1")
    vals = [float(v) for v in out(r).split()]
    e = np.exp([2.0, 1.0, 0.1])
    np.testing.assert_allclose(vals, e / e.sum(), rtol=1e-14)
    assert r.stderr == b""


def test_negative_numbers_and_digits():
    assert out(sk_cli("log-softmax", "2", "1", "0.1", "--digits", "4")).split() == [
        "-0.417",
        "-1.417",
        "-2.317",
    ]
    assert out(sk_cli("softmax", "-1e5", "0", "--digits", "3")).split() == ["0", "1"]
    assert out(sk_cli("logsumexp", "-inf", "-inf")).strip() == "-inf"


def test_json_axis_temperature_precision():
    doc = json.loads(
        out(sk_cli("softmax", "1 2; 3 5", "--axis", "0", "--temperature", "2", "--json"))
    )
    assert doc["op"] == "softmax" and doc["axis"] == 0 and doc["shape"] == [2, 2]
    want = np.exp(np.array([[1, 2], [3, 5]]) / 2)
    want = want / want.sum(axis=0)
    np.testing.assert_allclose(doc["result"], want, rtol=1e-14)
    fast = json.loads(out(sk_cli("logsumexp", "0", "0", "--precision", "fast", "--json")))
    assert fast["precision"] == "fast" and fast["result"] == pytest.approx(np.log(2))
    inf = json.loads(out(sk_cli("log-softmax", "inf", "0", "--json")))
    assert inf["result"] == [0.0, "-inf"]


def test_stdin_and_files(tmp_path):
    assert out(sk_cli("logsumexp", stdin=b"0 0\n")).strip() == str(np.log(2.0))
    assert out(sk_cli("logsumexp", "-", stdin=b"0, 0")).strip() == str(np.log(2.0))
    x = np.array([[2.0, 1.0, 0.1], [0.0, 0.0, 0.0]], dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", logits=x, other=x)
    np.savetxt(tmp_path / "x.csv", x, delimiter=",")
    for name in ("x.npy", "x.npz", "x.csv"):
        lines = out(sk_cli("softmax", str(tmp_path / name), "--digits", "3")).splitlines()
        assert lines == ["0.659 0.242 0.0986", "0.333 0.333 0.333"]
    piped = out(sk_cli("softmax", "--digits", "3", stdin=(tmp_path / "x.npy").read_bytes()))
    assert piped.splitlines()[0] == "0.659 0.242 0.0986"
    # float32 in, float32 out: printed in float32's shortest form
    assert out(sk_cli("log-softmax", str(tmp_path / "x.npy"))).split()[0] == "-0.41703"


def test_cross_entropy():
    assert float(out(sk_cli("cross-entropy", "2,1,0.1", "0"))) == pytest.approx(0.4170300)
    r = sk_cli("cross-entropy", "2 1 0.1; 0.5 2.5 0.3", "0 1", "--reduction", "none", "--json")
    np.testing.assert_allclose(json.loads(out(r))["result"], [0.41703, 0.2200], atol=1e-4)
    soft = out(sk_cli("cross-entropy", "2,1,0.1", "0.5,0.5,0"))
    assert float(soft) == pytest.approx(0.5 * 0.41703 + 0.5 * 1.41703, rel=1e-5)


def test_explain_and_plot(tmp_path):
    table = out(sk_cli("explain", "1.5", "0.8", "-0.2"))
    assert "0.595497" in table and "exp(x-max)" in table
    doc = json.loads(out(sk_cli("explain", "1000", "0", "--json")))
    assert doc["naive_probabilities"][0] == "nan" and doc["probabilities"] == [1.0, 0.0]
    chart = out(sk_cli("plot", "1.5", "0.8", "-0.2"))
    assert "Logits vs. Softmax Probabilities" in chart and "\x1b[" not in chart
    colored = out(sk_cli("--color", "always", "plot", "1.5", "0.8", "-0.2"))
    assert "\x1b[36m" in colored
    for ext in ("png", "svg", "html", "json"):
        r = sk_cli("plot", "1.5", "0.8", "-0.2", "-o", str(tmp_path / f"c.{ext}"))
        assert r.returncode == 0 and r.stdout == b""
        assert b"wrote" in r.stderr and (tmp_path / f"c.{ext}").stat().st_size > 100
    cfg = json.loads((tmp_path / "c.json").read_text())
    assert cfg["data"]["datasets"][1]["data"] == [0.5955, 0.2957, 0.1088]
    temps = out(sk_cli("plot", "2", "1", "--kind", "temperature", "--temperatures", "1,10"))
    assert "T = 10" in temps


def _calibration_files(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    z = rng.normal(size=(400, 4))
    z[np.arange(400), y] += 1.2
    z *= 2.5
    np.save(tmp_path / "logits.npy", z)
    np.save(tmp_path / "labels.npy", y)
    return tmp_path / "logits.npy", tmp_path / "labels.npy", z, y


def test_calibrate(tmp_path):
    lz, ly, z, y = _calibration_files(tmp_path)
    doc = json.loads(out(sk_cli("calibrate", str(lz), str(ly), "--json")))
    keys = {f"{m}_{w}" for m in ("nll", "ece", "mce", "brier") for w in ("before", "after")}
    assert keys | {"temperature"} <= set(doc)
    t = cal.fit_temperature(z, y)
    assert doc["temperature"] == pytest.approx(t, rel=1e-12)
    assert doc["ece_before"] == pytest.approx(float(cal.ece(z, y)), rel=1e-12)
    assert doc["ece_after"] == pytest.approx(float(cal.ece(z, y, temperature=t)), rel=1e-12)
    assert doc["nll_after"] < doc["nll_before"]
    text = sk_cli("calibrate", str(lz), str(ly), "-o", str(tmp_path / "d.png"))
    assert text.stdout.decode().startswith("temperature")
    assert (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"
    np.savez(tmp_path / "val.npz", logits=z, labels=y)
    npz = json.loads(
        out(sk_cli("calibrate", str(tmp_path / "val.npz"), str(tmp_path / "val.npz"), "--json"))
    )
    assert npz["temperature"] == doc["temperature"]


def test_sample():
    a = out(sk_cli("sample", "2", "1", "0.1", "--seed", "0", "-n", "50"))
    assert a == out(sk_cli("sample", "2", "1", "0.1", "--seed", "0", "-n", "50"))
    assert set(a.split()) <= {"0", "1", "2"} and len(a.split()) == 50
    top = out(sk_cli("sample", "2", "1", "0.1", "-0.5", "--top-k", "2", "--seed", "1", "-n", "200"))
    assert set(top.split()) == {"0", "1"}
    counts = json.loads(
        out(sk_cli("sample", "2", "1", "0.1", "-n", "20000", "--seed", "0", "--counts", "--json"))
    )
    freq = np.array(counts["counts"]) / 20000
    np.testing.assert_allclose(freq, counts["softmax"], atol=0.015)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("softmax", "2", "x1"), "'x1' is not a number"),
        (("softmax", "missing.npy"), "file not found: missing.npy"),
        (("softmax", "1", "2", "--axis", "3"), "axis=3"),
        (("softmax", "1", "2", "--temperature", "0"), "temperature"),
        (("cross-entropy", "2,1,0.1", "3"), "out of range"),
        (("cross-entropy", "1 2; 3 4", "0 1 1"), "shape"),
        (("sample", "1", "2", "--top-p", "1.5"), "top_p"),
        (("explain", "1 2; 3 4"), "one non-empty row"),
        (("plot", "1", "2", "-o", "chart.gif"), ".png"),
    ],
)
def test_errors_are_one_line_without_traceback(tmp_path, args, message):
    r = sk_cli(*args, cwd=tmp_path)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert r.stdout == b""
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert message in err
    assert err.startswith(f"softmaxkit {args[0]}: error:")


def test_calibrate_errors(tmp_path):
    lz, ly, z, y = _calibration_files(tmp_path)
    np.save(tmp_path / "bad.npy", np.full(400, 7))
    r = sk_cli("calibrate", str(lz), str(tmp_path / "bad.npy"))
    assert r.returncode == 1 and "labels must lie in 0..3" in r.stderr.decode()
    np.save(tmp_path / "right.npy", np.argmax(z, axis=1))
    r = sk_cli("calibrate", str(lz), str(tmp_path / "right.npy"))
    assert r.returncode == 1 and "no finite temperature" in r.stderr.decode()


def test_debug_shows_the_traceback(tmp_path):
    r = sk_cli("--debug", "softmax", "missing.npy", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" in r.stderr.decode()


def test_help_has_examples():
    for args in ((), ("softmax",), ("calibrate",), ("sample",), ("plot",), ("demo",), ("bench",)):
        r = sk_cli(*args, "--help")
        text = out(r)
        assert "examples:" in text and "softmaxkit" in text
    r = sk_cli()
    assert r.returncode == 2 and b"usage:" in r.stderr


def test_python_dash_m():
    r = subprocess.run(
        [sys.executable, "-m", "softmaxkit", "softmax", "0", "0"], capture_output=True, timeout=120
    )
    assert r.stdout.decode().split() == ["0.5", "0.5"]


@pytest.mark.slow
def test_demo(tmp_path):
    r = sk_cli("demo", "--out", str(tmp_path / "charts"), cwd=tmp_path)
    text = out(r)
    assert "Summary" in text and "the seed is wrong" in text
    assert "softmaxkit model" in text and "LogisticRegression" in text
    assert "ECE" in text and "\x1b[" not in text
    files = sorted(p.name for p in (tmp_path / "charts").iterdir())
    assert (
        "reliability_before_after.png" in files and "example_logits_vs_probabilities.html" in files
    )
    assert len(files) == 12
    ece = next(ln for ln in text.splitlines() if ln.startswith("ECE (15 bins)")).split()
    assert float(ece[-1]) < float(ece[-2])  # temperature scaling lowers the test ECE


def test_bench_prints_the_ratio_table_with_progress(tmp_path):
    report = tmp_path / "bench.md"
    r = sk_cli("bench", "--quick", "--no-peers", "--repeats", "1", "-o", str(report))
    text = out(r)
    assert "## Targets (issue 3)" in text and "memcpy" in text
    assert report.read_text().strip() == text.strip()
    progress = r.stderr.decode().splitlines()
    assert any(line.startswith("[#") and "/" in line for line in progress)
    bad = sk_cli("bench", "--repeats", "0")
    assert bad.returncode == 1 and "--repeats" in bad.stderr.decode()


def test_complex_results_print_as_text_and_json(tmp_path):
    """Complex input: --json printed a traceback (complex is not JSON serializable),
    --digits dropped the imaginary part with a ComplexWarning."""
    np.save(tmp_path / "c.npy", np.array([[1 + 1j, 2], [0.5, -3j]]))
    want = np.log(np.sum(np.exp(np.array([[1 + 1j, 2], [0.5, -3j]])), axis=-1))
    r = sk_cli("logsumexp", str(tmp_path / "c.npy"), "--json")
    doc = json.loads(out(r))
    assert r.stderr == b""
    assert doc["dtype"] == "complex128" and doc["shape"] == [2]
    got = [complex(v["re"], v["im"]) for v in doc["result"]]
    np.testing.assert_allclose(got, want, rtol=1e-14)
    r = sk_cli("logsumexp", str(tmp_path / "c.npy"), "--digits", "3")
    assert r.stderr == b""
    assert out(r).split() == [f"{w.real:.3g}{w.imag:+.3g}j" for w in want]
    full = out(sk_cli("logsumexp", str(tmp_path / "c.npy"))).split()
    exact = sk.logsumexp(np.load(tmp_path / "c.npy"))
    np.testing.assert_array_equal([complex(v) for v in full], exact)  # all digits needed


@pytest.mark.parametrize("value", ["-1", "0", "two"])
def test_digits_must_be_a_positive_integer(value):
    """--digits -1 gave "Format specifier missing precision" (not naming the option);
    --digits 0 printed one digit."""
    r = sk_cli("softmax", "1", "2", "--digits", value)
    assert r.returncode == 2 and r.stdout == b""
    err = r.stderr.decode()
    assert "Traceback" not in err
    assert "argument --digits:" in err and "positive integer" in err
