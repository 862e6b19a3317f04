"""A worked softmax example for any logits: every intermediate number, and what the
naive formulas would have given.

The textbook walk-through (exponentiate, add up, divide) becomes a data
structure: the shift by the maximum, the shifted exponentials and their sum, the
probabilities and log-probabilities, the log-sum-exp, and beside them the naive
``exp(x) / sum(exp(x))`` and ``log(softmax(x))``, with notes on where those fail
(``exp`` overflowing to ``inf``, a probability underflowing to 0 so its logarithm
is ``-inf``) while the stable forms stay finite.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._convert import to_numpy
from ._errors import SoftmaxkitValueError
from ._logsumexp import logsumexp
from ._namespace import dtype_kind, resolve
from ._softmax import log_softmax, softmax
from ._validation import check_names, check_temperature

__all__ = ["Explanation", "explain"]


def _fmt(v: float, digits: int = 6) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    return f"{v:.{digits}g}"


def _jsonable(v: float) -> float | str:
    return float(v) if math.isfinite(v) else _fmt(v)


@dataclass(frozen=True)
class Explanation:
    """Every step of ``softmax(logits / T)`` for one row of logits.

    Attributes are NumPy arrays of the computation dtype (float64 unless the
    logits were float32 or narrower, in which case float32, so the naive
    formulas fail where they would in that precision).
    """

    labels: tuple[str, ...]
    logits: np.ndarray
    temperature: float
    scaled: np.ndarray  #: logits / T
    max: float  #: the shift, max(logits / T)
    shifted: np.ndarray  #: logits / T - max  (all <= 0)
    exp_shifted: np.ndarray  #: exp(shifted), all in (0, 1]
    sum_shifted: float  #: sum of exp_shifted, in [1, n]
    probabilities: np.ndarray  #: softmax, from softmaxkit
    log_probabilities: np.ndarray  #: log_softmax, from softmaxkit
    logsumexp: float  #: max + log(sum_shifted)
    naive_exp: np.ndarray  #: exp(logits / T) without the shift
    naive_sum: float
    naive_probabilities: np.ndarray  #: naive_exp / naive_sum
    naive_log_probabilities: np.ndarray  #: log(probabilities)
    dtype: str
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary; non-finite numbers become ``"inf"``, ``"-inf"``, ``"nan"``."""

        def arr(a: np.ndarray) -> list[float | str]:
            return [_jsonable(float(v)) for v in a]

        return {
            "labels": list(self.labels),
            "logits": arr(self.logits),
            "temperature": self.temperature,
            "dtype": self.dtype,
            "max": _jsonable(self.max),
            "shifted": arr(self.shifted),
            "exp_shifted": arr(self.exp_shifted),
            "sum_shifted": _jsonable(self.sum_shifted),
            "probabilities": arr(self.probabilities),
            "log_probabilities": arr(self.log_probabilities),
            "logsumexp": _jsonable(self.logsumexp),
            "naive_exp": arr(self.naive_exp),
            "naive_sum": _jsonable(self.naive_sum),
            "naive_probabilities": arr(self.naive_probabilities),
            "naive_log_probabilities": arr(self.naive_log_probabilities),
            "notes": list(self.notes),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self, digits: int = 6) -> str:
        """The worked example as a plain-text table."""
        t = "" if self.temperature == 1.0 else f"/{_fmt(self.temperature)}"
        cols = [
            ("class", list(self.labels)),
            (f"x{t}", [_fmt(v, digits) for v in self.scaled]),
            (f"x{t}-max", [_fmt(v, digits) for v in self.shifted]),
            ("exp(x-max)", [_fmt(v, digits) for v in self.exp_shifted]),
            ("softmax", [_fmt(v, digits) for v in self.probabilities]),
            ("log_softmax", [_fmt(v, digits) for v in self.log_probabilities]),
            (f"naive exp(x{t})", [_fmt(v, digits) for v in self.naive_exp]),
            ("naive softmax", [_fmt(v, digits) for v in self.naive_probabilities]),
            ("log(softmax)", [_fmt(v, digits) for v in self.naive_log_probabilities]),
        ]
        widths = [max(len(h), *(len(c) for c in cells)) for h, cells in cols]
        lines = ["  ".join(h.rjust(w) for (h, _), w in zip(cols, widths, strict=False))]
        lines.append("  ".join("-" * w for w in widths))
        for i in range(len(self.labels)):
            lines.append(
                "  ".join(cells[i].rjust(w) for (_, cells), w in zip(cols, widths, strict=False))
            )
        lines.append("")
        lines.append(f"max (the shift)          = {_fmt(self.max, digits)}")
        lines.append(f"sum exp(x - max)         = {_fmt(self.sum_shifted, digits)}")
        lines.append(
            f"logsumexp = max + log(sum) = {_fmt(self.logsumexp, digits)}"
            f"   (naive sum exp(x) = {_fmt(self.naive_sum, digits)})"
        )
        lines.append(f"computed in {self.dtype}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def explain(
    logits: Any,
    /,
    *,
    temperature: float = 1.0,
    labels: list[str] | tuple[str, ...] | None = None,
) -> Explanation:
    r"""Work through ``softmax(logits / T)`` step by step, and show where naive code fails.

    .. math::

        m = \max_j \frac{x_j}{T},\qquad
        p_i = \frac{e^{x_i/T - m}}{\sum_j e^{x_j/T - m}},\qquad
        \log p_i = \Bigl(\frac{x_i}{T} - m\Bigr) - \log\sum_j e^{x_j/T - m}

    Shifting by the maximum changes nothing mathematically (the factor
    ``e^{-m}`` cancels) but keeps every exponent at or below 0, so nothing
    overflows and the largest term is exactly 1. The naive ``exp(x)`` overflows
    above ``x ≈ 709.78`` (float64; ``88.72`` in float32) and makes the naive
    softmax NaN; and ``log(softmax(x))`` is ``-inf`` once a probability
    underflows to 0, where ``log_softmax`` is still finite.

    Parameters
    ----------
    logits : array-like, 1-D
        One row of logits (any array library; converted to NumPy for display).
    temperature : float, optional
        Divide the logits by ``T > 0`` first.
    labels : sequence of str, optional
        Class names; default ``"Class 1"``, ``"Class 2"``, ...

    Returns
    -------
    Explanation
        Every intermediate array; ``str()`` renders the table, ``to_dict()`` the data.

    See Also
    --------
    softmax, log_softmax, logsumexp

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham, N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit as sk
    >>> ex = sk.explain([1.5, 0.8, -0.2])
    >>> ex.naive_exp.round(3), round(ex.naive_sum, 3)
    (array([4.482, 2.226, 0.819]), 7.526)
    >>> ex.probabilities.round(4)
    array([0.5955, 0.2957, 0.1088])
    >>> big = sk.explain([1000.0, 0.0])
    >>> big.naive_probabilities, big.probabilities
    (array([nan,  0.]), array([1., 0.]))
    >>> big.naive_log_probabilities, big.log_probabilities
    (array([  0., -inf]), array([    0., -1000.]))
    """
    xp, (xa,) = resolve(logits, names=("logits",))
    kind = dtype_kind(xp, xa.dtype)
    if kind not in ("float", "half", "int", "bool"):
        msg = f"`logits` must be real numbers, got dtype {xa.dtype}"
        raise SoftmaxkitValueError(msg)
    x_in = to_numpy(xa)
    if x_in.ndim != 1 or x_in.size == 0:
        msg = (
            f"`logits` must be one non-empty row of numbers to explain, got shape {x_in.shape}; "
            "pick a row first"
        )
        raise SoftmaxkitValueError(msg)
    t = check_temperature(temperature)
    dt = np.float32 if x_in.dtype in (np.float16, np.float32) else np.float64
    x = x_in.astype(dt)
    n = x.size
    if labels is None:
        names = tuple(f"Class {i + 1}" for i in range(n))
    else:
        names = check_names(labels, "labels", n, "logit")
    with np.errstate(all="ignore"):
        scaled: np.ndarray = np.divide(x, t, dtype=dt) if t != 1.0 else x.copy()
        m = np.max(scaled)
        shifted = scaled - m if np.isfinite(m) else np.where(scaled == m, 0.0, -np.inf).astype(dt)
        exp_shifted = np.exp(shifted)
        sum_shifted = np.sum(exp_shifted)
        naive_exp = np.exp(scaled)
        naive_sum = np.sum(naive_exp)
        naive_p = naive_exp / naive_sum
    p = softmax(x, temperature=t)
    lp = log_softmax(x, temperature=t)
    lse = float(np.asarray(logsumexp(scaled)))
    with np.errstate(divide="ignore"):
        log_of_p = np.log(p)
    notes = _notes(scaled, naive_exp, naive_p, p, lp, log_of_p, dt)
    return Explanation(
        labels=names,
        logits=x,
        temperature=t,
        scaled=scaled,
        max=float(m),
        shifted=shifted,
        exp_shifted=exp_shifted,
        sum_shifted=float(sum_shifted),
        probabilities=p,
        log_probabilities=lp,
        logsumexp=lse,
        naive_exp=naive_exp,
        naive_sum=float(naive_sum),
        naive_probabilities=naive_p,
        naive_log_probabilities=log_of_p,
        dtype=np.dtype(dt).name,
        notes=notes,
    )


def _notes(
    scaled: np.ndarray,
    naive_exp: np.ndarray,
    naive_p: np.ndarray,
    p: np.ndarray,
    lp: np.ndarray,
    log_of_p: np.ndarray,
    dt: type,
) -> tuple[str, ...]:
    out = []
    limit = math.log(float(np.finfo(dt).max))
    over = np.isposinf(naive_exp) & np.isfinite(scaled)
    if over.any():
        i = int(np.argmax(over))
        out.append(
            f"exp({_fmt(float(scaled[i]))}) overflows to inf in {np.dtype(dt).name} (above "
            f"{limit:.2f}), so the naive softmax is {_fmt(float(naive_p[i]))} there; "
            "the shifted exponentials are all <= 1"
        )
    under = np.isneginf(log_of_p) & np.isfinite(lp)
    if under.any():
        i = int(np.argmax(under))
        out.append(
            f"softmax underflows to 0 for class {i + 1}, so log(softmax) is -inf; "
            f"log_softmax keeps {_fmt(float(lp[i]))}"
        )
    if np.isnan(scaled).any():
        out.append("a NaN logit makes the whole row NaN: there is no meaningful distribution")
    elif np.isposinf(scaled).any():
        k = int(np.isposinf(scaled).sum())
        out.append(
            f"{k} logit(s) are +inf: the limit puts probability 1/{k} on each of them "
            "(the naive formula gives inf/inf = nan)"
        )
    return tuple(out)
