"""The backends requested for this run are really installed, and results keep their type."""

from __future__ import annotations

import numpy as np
import pytest

import softmaxkit as sk
from tests._helpers import assert_same_library
from tests.conftest import importable, requested_backends


@pytest.mark.parametrize("name", requested_backends() or ["numpy"])
def test_requested_backends_installed(name):
    assert importable(name), (
        f"backend {name!r} was requested in SOFTMAXKIT_TEST_BACKENDS but does not import; "
        "install it (make install) instead of letting its tests skip"
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda x, t: sk.softmax(x),
        lambda x, t: sk.log_softmax(x, axis=0),
        lambda x, t: sk.logsumexp(x, keepdims=True),
        lambda x, t: sk.cross_entropy(x, t, reduction="none"),
        lambda x, t: sk.cross_entropy(x, t, return_grad=True)[1],
        lambda x, t: sk.sigmoid(x),
        lambda x, t: sk.log_sigmoid(x),
        lambda x, t: sk.softmax_vjp(sk.softmax(x), x),
    ],
)
def test_result_has_callers_type_dtype_and_device(backend, call):
    for dtype in backend.float_dtypes():
        x = backend.asarray(np.array([[0.5, -1.0, 2.0], [1.0, 1.0, -3.0]]), dtype=dtype)
        t = backend.asarray(np.array([2, 0]))
        out = call(x, t)
        assert_same_library(out, x)
        assert out.dtype == x.dtype
