"""Charts of softmax: logits next to probabilities, a temperature sweep, reliability.

Each chart is a small data object that renders five ways:

* :meth:`Chart.figure` — a matplotlib figure (matplotlib is imported only here);
* :meth:`Chart.save` to ``.png`` or ``.svg`` — deterministic bytes: the same data
  gives the same file on every run with the same matplotlib (no dates, a fixed
  SVG hash salt, the bundled DejaVu Sans font);
* ``.html`` — one self-contained page (inline SVG, a data table and the Chart.js
  configuration), no network, no JavaScript needed to see the chart;
* ``.json`` — a Chart.js configuration in the usual ``{"type", "data",
  "options"}`` layout, colours as in the seed texts;
* :meth:`Chart.terminal` (and ``.txt``) — a Unicode bar chart, with ANSI colour
  only when asked for (the CLI asks on a terminal).

Examples
--------
>>> from softmaxkit.plot import logits_chart
>>> chart = logits_chart([1.5, 0.8, -0.2])
>>> chart.chartjs()["data"]["datasets"][1]["data"]
[0.5955, 0.2957, 0.1088]
"""

from __future__ import annotations

import html
import io
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._convert import to_numpy
from ._errors import SoftmaxkitTypeError, SoftmaxkitValueError
from ._softmax import softmax
from ._validation import check_names, check_temperature
from .calibration import ReliabilityDiagram

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "Chart",
    "LogitsChart",
    "ReliabilityChart",
    "TemperatureChart",
    "logits_chart",
    "reliability_chart",
    "temperature_chart",
]

# The seed chart's colours (teal logits, pink probabilities) and a few more.
PALETTE = [(75, 192, 192), (255, 99, 132), (54, 162, 235), (255, 159, 64), (153, 102, 255)]
ANSI = ["\x1b[36m", "\x1b[35m", "\x1b[34m", "\x1b[33m", "\x1b[32m"]
RESET = "\x1b[0m"
EIGHTHS = " ▏▎▍▌▋▊▉"
FORMATS = (".png", ".svg", ".html", ".json", ".txt")


def _rgba(i: int, alpha: float) -> str:
    r, g, b = PALETTE[i % len(PALETTE)]
    return f"rgba({r}, {g}, {b}, {alpha:g})"


def _mpl(i: int, alpha: float) -> tuple[float, float, float, float]:
    r, g, b = PALETTE[i % len(PALETTE)]
    return (r / 255, g / 255, b / 255, alpha)


def _bar(value: float, scale: float, width: int) -> str:
    """A left-aligned bar of ``value / scale * width`` cells, in eighths of a cell."""
    if not math.isfinite(value) or scale <= 0 or value <= 0:
        return ""
    eighths = round(min(value / scale, 1.0) * width * 8)
    return "█" * (eighths // 8) + EIGHTHS[eighths % 8].strip()


def _signed_bars(values: Sequence[float], width: int) -> list[str]:
    """Bars around a zero column: negative values grow left, positive right."""
    finite = [v for v in values if math.isfinite(v)]
    lo = min([0.0, *finite])
    hi = max([0.0, *finite])
    span = (hi - lo) or 1.0
    left = round(width * (-lo) / span)
    right = width - left
    out = []
    for v in values:
        if not math.isfinite(v):
            mark = "+inf →" if v > 0 else ("← -inf" if v < 0 else "nan")
            out.append(" " * left + "│" + mark)
            continue
        if v >= 0:
            out.append(" " * left + "│" + _bar(v, hi or 1.0, right))
        else:
            n = round(-v / span * width)
            out.append(" " * (left - n) + "█" * n + "│")
    return [s.ljust(width + 1) for s in out]


def _num(v: float, digits: int = 4) -> float | None:
    return round(float(v), digits) if math.isfinite(v) else None


class Chart(ABC):
    """Base class: one chart, several renderings."""

    title: str

    @abstractmethod
    def figure(self) -> Figure:
        """Draw the chart with matplotlib."""

    @abstractmethod
    def chartjs(self) -> dict[str, Any]:
        """The chart as a Chart.js configuration (the seeds' format)."""

    @abstractmethod
    def terminal(self, width: int = 72, color: bool = False) -> str:
        """The chart as Unicode text for a terminal."""

    @abstractmethod
    def table_rows(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows of the data table shown next to the chart in HTML."""

    # -- files ---------------------------------------------------------------

    def to_bytes(self, fmt: str) -> bytes:
        """The chart as PNG or SVG bytes, identical on every run (same matplotlib)."""
        import matplotlib

        if fmt not in ("png", "svg"):
            msg = f"`fmt` must be 'png' or 'svg', got {fmt!r}"
            raise SoftmaxkitValueError(msg)
        rc: dict[str, Any] = {
            "svg.hashsalt": "softmaxkit",
            "font.family": "DejaVu Sans",
            "svg.fonttype": "path",
        }
        with matplotlib.rc_context(rc):  # type: ignore[arg-type]
            fig = self.figure()
            buf = io.BytesIO()
            meta: dict[str, Any] = {"Software": None} if fmt == "png" else {"Date": None}
            fig.savefig(buf, format=fmt, dpi=120, metadata=meta)
        return buf.getvalue()

    def to_html(self) -> str:
        """A self-contained HTML page: inline SVG chart, data table, Chart.js config."""
        svg = self.to_bytes("svg").decode("utf-8")
        svg = svg[svg.index("<svg") :]
        head, rows = self.table_rows()
        th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
        )
        config = json.dumps(self.chartjs(), indent=2).replace("</", "<\\/")
        title = html.escape(self.title)
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{title}</title>\n"
            '<meta name="generator" content="softmaxkit">\n'
            "<style>\n"
            "body{font-family:'DejaVu Sans',Arial,sans-serif;margin:2em auto;max-width:60em;"
            "color:#222}\n"
            "figure{margin:0}figure svg{max-width:100%;height:auto}\n"
            "table{border-collapse:collapse;margin-top:1em}"
            "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}\n"
            "</style>\n</head>\n<body>\n"
            f"<h1>{title}</h1>\n"
            f'<figure id="chart">\n{svg}\n</figure>\n'
            f"<table>\n<thead><tr>{th}</tr></thead>\n<tbody>{body}</tbody>\n</table>\n"
            "<p>The Chart.js configuration of this chart (for pages that load Chart.js):</p>\n"
            f'<script type="application/json" id="chartjs-config">\n{config}\n</script>\n'
            "</body>\n</html>\n"
        )

    def save(self, path: str | Path) -> Path:
        """Write the chart; the suffix picks the format (.png .svg .html .json .txt)."""
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix not in FORMATS:
            msg = (
                f"cannot write a chart to {str(p)!r}: the file name must end in one of "
                f"{', '.join(FORMATS)}"
            )
            raise SoftmaxkitValueError(msg)
        if suffix in (".png", ".svg"):
            p.write_bytes(self.to_bytes(suffix[1:]))
        elif suffix == ".html":
            p.write_text(self.to_html(), encoding="utf-8")
        elif suffix == ".json":
            p.write_text(json.dumps(self.chartjs(), indent=2) + "\n", encoding="utf-8")
        else:
            p.write_text(self.terminal() + "\n", encoding="utf-8")
        return p

    def __str__(self) -> str:
        return self.terminal()


def _rotation(labels: Sequence[str]) -> int:
    """Tick label rotation: upright unless long labels would collide."""
    return 0 if sum(len(s) + 2 for s in labels) <= 60 else 90


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


# ------------------------------------------------------------ logits vs probs


@dataclass(frozen=True)
class LogitsChart(Chart):
    """Logits next to their softmax probabilities (the seeds' chart)."""

    labels: tuple[str, ...]
    logits: np.ndarray
    probabilities: np.ndarray
    temperature: float = 1.0
    title: str = "Logits vs. Softmax Probabilities"

    def figure(self) -> Figure:
        fig = _new_figure(8.0, 4.0)
        ax_l, ax_p = fig.subplots(1, 2)
        x = np.arange(len(self.labels))
        shown = np.where(np.isfinite(self.logits), self.logits, np.nan)
        ax_l.bar(x, shown, color=_mpl(0, 0.6), edgecolor=_mpl(0, 1.0), linewidth=1)
        ax_l.axhline(0.0, color="#444", linewidth=0.8)
        ax_l.margins(y=0.12)
        ax_l.set_title("Logits")
        ax_l.set_ylabel("Logit")
        ax_p.bar(x, self.probabilities, color=_mpl(1, 0.6), edgecolor=_mpl(1, 1.0), linewidth=1)
        ax_p.set_ylim(0, 1.1)
        ax_p.set_yticks(np.linspace(0, 1, 6))
        t = "" if self.temperature == 1.0 else f" (T = {self.temperature:g})"
        ax_p.set_title(f"Softmax probabilities{t}")
        ax_p.set_ylabel("Probability")
        for ax in (ax_l, ax_p):
            ax.set_xticks(x, self.labels, rotation=_rotation(self.labels))
            ax.set_xlabel("Classes")
            ax.grid(axis="y", alpha=0.3)
            ax.set_axisbelow(True)
        for xi, v in zip(x, self.logits, strict=False):
            if math.isfinite(v):
                ax_l.annotate(
                    f"{v:.3g}",
                    (xi, v),
                    xytext=(0, 3 if v >= 0 else -3),
                    textcoords="offset points",
                    ha="center",
                    va="bottom" if v >= 0 else "top",
                    fontsize=8,
                )
        for xi, v in zip(x, self.probabilities, strict=False):
            if round(float(v), 3) == 0 and len(x) > 4:
                continue  # many "0.000" labels would only collide
            ax_p.annotate(
                f"{v:.3f}",
                (xi, v),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8,
            )
        fig.suptitle(self.title)
        return fig

    def chartjs(self) -> dict[str, Any]:
        return {
            "type": "bar",
            "data": {
                "labels": list(self.labels),
                "datasets": [
                    {
                        "label": "Logits",
                        "data": [_num(v) for v in self.logits],
                        "backgroundColor": _rgba(0, 0.6),
                        "borderColor": _rgba(0, 1),
                        "borderWidth": 1,
                        "yAxisID": "y",
                    },
                    {
                        "label": "Softmax Probabilities",
                        "data": [_num(v) for v in self.probabilities],
                        "backgroundColor": _rgba(1, 0.6),
                        "borderColor": _rgba(1, 1),
                        "borderWidth": 1,
                        "yAxisID": "y1",
                    },
                ],
            },
            "options": {
                "scales": {
                    "y": {"beginAtZero": True, "title": {"display": True, "text": "Logit"}},
                    "y1": {
                        "beginAtZero": True,
                        "max": 1,
                        "position": "right",
                        "grid": {"drawOnChartArea": False},
                        "title": {"display": True, "text": "Probability"},
                    },
                    "x": {"title": {"display": True, "text": "Classes"}},
                },
                "plugins": {
                    "legend": {"display": True},
                    "title": {"display": True, "text": self.title},
                },
            },
        }

    def terminal(self, width: int = 72, color: bool = False) -> str:
        lab_w = max(5, *(len(s) for s in self.labels))
        bar_w = max(8, (width - lab_w - 24) // 2)
        lbars = _signed_bars([float(v) for v in self.logits], bar_w)
        c0, c1, rs = (ANSI[0], ANSI[1], RESET) if color else ("", "", "")
        t = "" if self.temperature == 1.0 else f" (T = {self.temperature:g})"
        lines = [
            f"{self.title}{t}",
            f"{'':{lab_w}}  {'logit':>8} {'':{bar_w + 1}}  {'prob':>6}",
        ]
        for name, v, lb, p in zip(
            self.labels, self.logits, lbars, self.probabilities, strict=False
        ):
            pb = _bar(float(p), 1.0, bar_w)
            lines.append(
                f"{name:<{lab_w}}  {float(v):8.4g} {c0}{lb}{rs}  {float(p):6.4f} │{c1}{pb}{rs}"
            )
        return "\n".join(lines)

    def table_rows(self) -> tuple[list[str], list[list[str]]]:
        rows = [
            [n, f"{float(v):.6g}", f"{float(p):.6g}"]
            for n, v, p in zip(self.labels, self.logits, self.probabilities, strict=False)
        ]
        return ["class", "logit", "probability"], rows


def _row(logits: Any, labels: Sequence[str] | None) -> tuple[np.ndarray, tuple[str, ...]]:
    try:
        x = to_numpy(logits) if not isinstance(logits, list | tuple) else np.asarray(logits, float)
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        msg = f"`logits` must be one row of numbers to chart, got {type(logits).__name__}"
        raise SoftmaxkitTypeError(msg) from exc
    if x.ndim != 1 or x.size == 0:
        msg = f"`logits` must be one non-empty row of numbers to chart, got shape {x.shape}"
        raise SoftmaxkitValueError(msg)
    if labels is None:
        return x, tuple(f"Class {i + 1}" for i in range(x.size))
    return x, check_names(labels, "labels", x.size, "logit")


def logits_chart(
    logits: Any,
    /,
    *,
    labels: Sequence[str] | None = None,
    temperature: float = 1.0,
    title: str = "Logits vs. Softmax Probabilities",
) -> LogitsChart:
    """Chart one row of logits next to ``softmax(logits / temperature)``.

    Parameters
    ----------
    logits : array-like, 1-D
        One row of logits (any array library).
    labels : sequence of str, optional
        Class names (default ``"Class 1"``, ...).
    temperature : float, optional
        Temperature of the softmax.
    title : str, optional
        Chart title.

    Returns
    -------
    LogitsChart

    Examples
    --------
    >>> from softmaxkit.plot import logits_chart
    >>> print(logits_chart([2.0, 1.0, 0.1]).terminal(width=60))
    Logits vs. Softmax Probabilities
                logit                    prob
    Class 1         2 │██████████████  0.6590 │█████████▎
    Class 2         1 │███████         0.2424 │███▍
    Class 3       0.1 │▊               0.0986 │█▍
    """
    x, names = _row(logits, labels)
    t = check_temperature(temperature)
    p = softmax(x, temperature=t)
    return LogitsChart(names, x, p, t, title)


# ------------------------------------------------------------ temperature sweep


@dataclass(frozen=True)
class TemperatureChart(Chart):
    """Softmax probabilities of one row of logits at several temperatures."""

    labels: tuple[str, ...]
    logits: np.ndarray
    temperatures: tuple[float, ...]
    probabilities: np.ndarray  # (n_temperatures, n_classes)
    title: str = "Softmax probabilities across temperatures"

    def figure(self) -> Figure:
        fig = _new_figure(8.0, 4.0)
        ax = fig.subplots()
        n_t = len(self.temperatures)
        x = np.arange(len(self.labels))
        w = 0.8 / n_t
        for i, (t, p) in enumerate(zip(self.temperatures, self.probabilities, strict=False)):
            ax.bar(
                x - 0.4 + w * (i + 0.5),
                p,
                width=w,
                color=_mpl(i, 0.6),
                edgecolor=_mpl(i, 1.0),
                linewidth=1,
                label=f"T = {t:g}",
            )
        ax.set_xticks(x, self.labels, rotation=_rotation(self.labels))
        ax.set_ylim(0, 1)
        ax.set_xlabel("Classes")
        ax.set_ylabel("Probability")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.legend(title="Temperature")
        ax.set_title(self.title)
        return fig

    def chartjs(self) -> dict[str, Any]:
        return {
            "type": "bar",
            "data": {
                "labels": list(self.labels),
                "datasets": [
                    {
                        "label": f"T = {t:g}",
                        "data": [_num(v) for v in p],
                        "backgroundColor": _rgba(i, 0.6),
                        "borderColor": _rgba(i, 1),
                        "borderWidth": 1,
                    }
                    for i, (t, p) in enumerate(
                        zip(self.temperatures, self.probabilities, strict=False)
                    )
                ],
            },
            "options": {
                "scales": {
                    "y": {
                        "beginAtZero": True,
                        "max": 1,
                        "title": {"display": True, "text": "Probability"},
                    },
                    "x": {"title": {"display": True, "text": "Classes"}},
                },
                "plugins": {
                    "legend": {"display": True},
                    "title": {"display": True, "text": self.title},
                },
            },
        }

    def terminal(self, width: int = 72, color: bool = False) -> str:
        lab_w = max(5, *(len(s) for s in self.labels))
        bar_w = max(8, width - lab_w - 12)
        lines = [self.title]
        for i, (t, p) in enumerate(zip(self.temperatures, self.probabilities, strict=False)):
            c, rs = (ANSI[i % len(ANSI)], RESET) if color else ("", "")
            lines.append(f"T = {t:g}")
            for name, v in zip(self.labels, p, strict=False):
                lines.append(
                    f"  {name:<{lab_w}} {float(v):6.4f} │{c}{_bar(float(v), 1.0, bar_w)}{rs}"
                )
        return "\n".join(lines)

    def table_rows(self) -> tuple[list[str], list[list[str]]]:
        head = ["class", *(f"T = {t:g}" for t in self.temperatures)]
        rows = [
            [
                name,
                *(f"{float(self.probabilities[j, i]):.6g}" for j in range(len(self.temperatures))),
            ]
            for i, name in enumerate(self.labels)
        ]
        return head, rows


def temperature_chart(
    logits: Any,
    /,
    *,
    temperatures: Sequence[float] = (0.5, 1.0, 2.0, 5.0),
    labels: Sequence[str] | None = None,
    title: str = "Softmax probabilities across temperatures",
) -> TemperatureChart:
    """Chart ``softmax(logits / T)`` for several temperatures ``T``.

    Low temperatures sharpen the distribution towards the argmax, high ones
    flatten it towards uniform; the ranking never changes.

    Parameters
    ----------
    logits : array-like, 1-D
        One row of logits.
    temperatures : sequence of float, optional
        Positive temperatures (default 0.5, 1, 2, 5).
    labels : sequence of str, optional
        Class names.
    title : str, optional
        Chart title.

    Returns
    -------
    TemperatureChart

    Examples
    --------
    >>> from softmaxkit.plot import temperature_chart
    >>> temperature_chart([2.0, 1.0, 0.1], temperatures=[1, 100]).probabilities.round(3)
    array([[0.659, 0.242, 0.099],
           [0.337, 0.333, 0.33 ]])
    """
    x, names = _row(logits, labels)
    if isinstance(temperatures, str | bytes) or not isinstance(temperatures, Iterable):
        msg = (
            "`temperatures` must be a sequence of positive temperatures, "
            f"got {type(temperatures).__name__}"
        )
        raise SoftmaxkitTypeError(msg)
    ts = tuple(check_temperature(t) for t in temperatures)
    if not ts:
        msg = "`temperatures` is empty; pass at least one positive temperature"
        raise SoftmaxkitValueError(msg)
    probs = np.stack([softmax(x, temperature=t) for t in ts])
    return TemperatureChart(names, x, ts, probs, title)


# ------------------------------------------------------------ reliability


@dataclass(frozen=True)
class ReliabilityChart(Chart):
    """Reliability diagrams with confidence histograms, one panel per diagram."""

    diagrams: tuple[ReliabilityDiagram, ...]
    names: tuple[str, ...]
    title: str = "Reliability diagram"

    def figure(self) -> Figure:
        n = len(self.diagrams)
        fig = _new_figure(4.6 * n, 5.6)
        axes = fig.subplots(2, n, squeeze=False, height_ratios=[1, 3], sharex=True)
        for j, (d, name) in enumerate(zip(self.diagrams, self.names, strict=False)):
            hist, rel = axes[0, j], axes[1, j]
            lo, hi = d.edges[:-1], d.edges[1:]
            width = hi - lo
            frac = d.counts / max(d.n, 1)
            hist.bar(lo, frac, width=width, align="edge", color=_mpl(2, 0.6), edgecolor="white")
            hist.set_ylabel("Share of\npredictions")
            hist.set_title(f"{name}: ECE {100 * d.ece:.2f}%")
            full = d.counts > 0
            acc = np.where(full, d.accuracy, 0.0)
            conf = np.where(full, d.confidence, 0.0)
            rel.bar(
                lo[full],
                acc[full],
                width=width[full],
                align="edge",
                color=_mpl(2, 0.8),
                edgecolor="#1d4f73",
                linewidth=0.8,
                label="Accuracy" if d.confidence_kind == "top-label" else "Fraction positive",
            )
            gap_lo = np.minimum(acc, conf)[full]
            gap_h = np.abs(conf - acc)[full]
            rel.bar(
                lo[full],
                gap_h,
                bottom=gap_lo,
                width=width[full],
                align="edge",
                facecolor="none",
                edgecolor=(0.85, 0.15, 0.25, 1.0),
                hatch="///",
                linewidth=0.8,
                label="Gap to confidence",
            )
            rel.plot([0, 1], [0, 1], linestyle="--", color="#555", label="Perfect calibration")
            rel.set_xlim(0, 1)
            rel.set_ylim(0, 1)
            rel.set_aspect("equal")
            rel.set_xlabel(
                "Confidence (top-label)" if d.confidence_kind == "top-label" else "P(y = 1)"
            )
            rel.set_ylabel("Accuracy" if d.confidence_kind == "top-label" else "Fraction positive")
            rel.legend(loc="upper left", fontsize=8)
            rel.text(
                0.97,
                0.04,
                f"ECE {100 * d.ece:.2f}%\nMCE {100 * d.mce:.2f}%\nT = {d.temperature:.3g}",
                transform=rel.transAxes,
                ha="right",
                va="bottom",
                fontsize=9,
                bbox={"facecolor": "white", "edgecolor": "#bbb", "alpha": 0.9},
            )
        fig.suptitle(self.title)
        return fig

    def chartjs(self) -> dict[str, Any]:
        d0 = self.diagrams[0]
        labels = [f"{lo:.2f}-{hi:.2f}" for lo, hi in zip(d0.edges[:-1], d0.edges[1:], strict=False)]
        mids = [
            round(float((lo + hi) / 2), 4)
            for lo, hi in zip(d0.edges[:-1], d0.edges[1:], strict=False)
        ]
        datasets: list[dict[str, Any]] = []
        for j, (d, name) in enumerate(zip(self.diagrams, self.names, strict=False)):
            datasets.append(
                {
                    "type": "bar",
                    "label": f"Accuracy ({name})",
                    "data": [_num(v) for v in d.accuracy],
                    "backgroundColor": _rgba(2 + j, 0.6),
                    "borderColor": _rgba(2 + j, 1),
                    "borderWidth": 1,
                }
            )
            datasets.append(
                {
                    "type": "line",
                    "label": f"Mean confidence ({name})",
                    "data": [_num(v) for v in d.confidence],
                    "borderColor": _rgba(1, 1),
                    "backgroundColor": _rgba(1, 0.6),
                    "borderWidth": 1,
                    "spanGaps": True,
                }
            )
        datasets.append(
            {
                "type": "line",
                "label": "Perfect calibration",
                "data": mids,
                "borderColor": "rgba(85, 85, 85, 1)",
                "borderDash": [6, 4],
                "borderWidth": 1,
                "pointRadius": 0,
            }
        )
        return {
            "type": "bar",
            "data": {"labels": labels, "datasets": datasets},
            "options": {
                "scales": {
                    "y": {
                        "beginAtZero": True,
                        "max": 1,
                        "title": {"display": True, "text": "Accuracy"},
                    },
                    "x": {"title": {"display": True, "text": "Confidence bin"}},
                },
                "plugins": {
                    "legend": {"display": True},
                    "title": {"display": True, "text": self.title},
                },
            },
        }

    def terminal(self, width: int = 72, color: bool = False) -> str:
        bar_w = max(10, width - 40)
        c, rs = (ANSI[2], RESET) if color else ("", "")
        lines = [self.title]
        for d, name in zip(self.diagrams, self.names, strict=False):
            lines.append(
                f"{name}: ECE {100 * d.ece:.2f}%  MCE {100 * d.mce:.2f}%  "
                f"(T = {d.temperature:.4g}, n = {d.n}, {d.binning})"
            )
            lines.append(f"  {'bin':>11} {'count':>6} {'conf':>6} {'acc':>6}  acc bar, ┃ = conf")
            for i in range(len(d.counts)):
                if d.counts[i] == 0:
                    continue
                bar = list(_bar(float(d.accuracy[i]), 1.0, bar_w).ljust(bar_w))
                k = min(bar_w - 1, int(float(d.confidence[i]) * bar_w))
                bar[k] = "┃"
                lines.append(
                    f"  {d.edges[i]:.2f}-{d.edges[i + 1]:.2f} {int(d.counts[i]):6d} "
                    f"{d.confidence[i]:6.3f} {d.accuracy[i]:6.3f}  {c}{''.join(bar)}{rs}"
                )
        return "\n".join(line.rstrip() for line in lines)

    def table_rows(self) -> tuple[list[str], list[list[str]]]:
        head = ["diagram", "bin", "count", "mean confidence", "accuracy"]
        rows = []
        for d, name in zip(self.diagrams, self.names, strict=False):
            for i in range(len(d.counts)):
                conf = "" if d.counts[i] == 0 else f"{d.confidence[i]:.4f}"
                acc = "" if d.counts[i] == 0 else f"{d.accuracy[i]:.4f}"
                rows.append(
                    [name, f"({d.edges[i]:.3f}, {d.edges[i + 1]:.3f}]", str(d.counts[i]), conf, acc]
                )
        return head, rows


def reliability_chart(
    *diagrams: ReliabilityDiagram,
    names: Sequence[str] | None = None,
    title: str = "Reliability diagram",
) -> ReliabilityChart:
    """Chart one or more reliability diagrams side by side (e.g. before and after).

    Each panel shows the share of predictions per confidence bin on top (the
    histogram that reliability diagrams otherwise hide) and, below, the accuracy
    per bin against the diagonal, with the gap to the mean confidence hatched
    (Guo et al. 2017, Fig. 1).

    Parameters
    ----------
    *diagrams : ReliabilityDiagram
        From :func:`softmaxkit.calibration.reliability_diagram`.
    names : sequence of str, optional
        Panel names (default "Before", "After" for two diagrams).
    title : str, optional
        Figure title.

    Returns
    -------
    ReliabilityChart

    References
    ----------
    .. [1] C. Guo et al., "On calibration of modern neural networks", ICML 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit.calibration import reliability_diagram
    >>> from softmaxkit.plot import reliability_chart
    >>> logits = np.log(np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]]))
    >>> d = reliability_diagram(logits, np.array([0, 1, 0, 0]), n_bins=5)
    >>> print(reliability_chart(d).terminal(width=50))
    Reliability diagram
    Model: ECE 40.00%  MCE 40.00%  (T = 1, n = 4, equal-width)
              bin  count   conf    acc  acc bar, ┃ = conf
        0.40-0.60      2  0.600  1.000  ██████┃███
        0.80-1.00      2  0.900  0.500  █████   ┃
    """
    if not diagrams:
        msg = "pass at least one ReliabilityDiagram"
        raise SoftmaxkitValueError(msg)
    for d in diagrams:
        if not isinstance(d, ReliabilityDiagram):
            msg = (
                "reliability_chart takes ReliabilityDiagram objects from "
                f"softmaxkit.calibration.reliability_diagram, got {type(d).__name__}"
            )
            raise SoftmaxkitValueError(msg)
    if names is None:
        names = ("Before", "After") if len(diagrams) == 2 else ("Model",) * len(diagrams)
        if len(diagrams) > 2:
            names = tuple(f"Model {i + 1}" for i in range(len(diagrams)))
    names = check_names(names, "names", len(diagrams), "diagram")
    return ReliabilityChart(tuple(diagrams), names, title)
