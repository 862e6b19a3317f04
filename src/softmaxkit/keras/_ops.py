"""Keras ops and the ``Softmax`` layer on the active backend's softmaxkit path.

Same names and arguments as ``keras.ops.softmax``, ``keras.ops.log_softmax``,
``keras.ops.logsumexp`` and ``keras.layers.Softmax``; the numbers are
softmaxkit's. Nothing here computes a value itself: each call goes to
:mod:`._backends`.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from .._errors import SoftmaxkitTypeError, SoftmaxkitValueError
from ._backends import current, to_tensor

__all__ = ["Softmax", "log_softmax", "logsumexp", "softmax"]

Tensor = Any


def _axes(axis: Any) -> Any:
    """A list of axes as a tuple (``keras.layers.Softmax`` takes a list), else ``axis``."""
    return tuple(axis) if isinstance(axis, list) else axis


def softmax(x: Any, axis: Any = -1) -> Tensor:
    """Softmax over ``axis`` (``keras.ops.softmax``'s arguments, softmaxkit's numbers).

    Parameters
    ----------
    x : tensor
        Logits of the active Keras backend (or anything it converts).
    axis : int, tuple of ints or None, optional
        Default -1; several axes are normalised together (``None``: all), on
        every backend.

    Returns
    -------
    tensor
        Probabilities; rows of ``-inf`` give 0 (Keras: NaN), ``+inf`` entries
        share the mass.

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit.keras as skk
    >>> np.asarray(skk.softmax(np.array([[-np.inf, -np.inf]], "float32")))
    array([[0., 0.]], dtype=float32)
    """
    return current().softmax(to_tensor(x, "x"), _axes(axis))


def log_softmax(x: Any, axis: Any = -1) -> Tensor:
    """Log-softmax over ``axis``; keeps the tiny log-probability of a dominant logit.

    Parameters
    ----------
    x : tensor
        Logits.
    axis : int, tuple of ints or None, optional
        Default -1; as :func:`softmax`.

    Returns
    -------
    tensor
        Log-probabilities (``log_softmax([0, -40])[0]`` is ``-4.248e-18``; Keras
        returns 0 on every backend).

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit.keras as skk
    >>> float(np.asarray(skk.log_softmax(np.array([0.0, -40.0], "float32")))[0])
    -4.24835413113866e-18
    """
    return current().log_softmax(to_tensor(x, "x"), _axes(axis))


def logsumexp(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
    """``log(sum(exp(x)))`` over ``axis`` (default: all axes, as ``keras.ops.logsumexp``).

    Parameters
    ----------
    x : tensor
        Values.
    axis : int, tuple of ints or None, optional
        Axes to reduce; ``None`` reduces all.
    keepdims : bool, optional
        Keep the reduced axes with size 1.

    Returns
    -------
    tensor
        The reduced tensor; float16 sums of many terms do not overflow.

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit.keras as skk
    >>> float(np.asarray(skk.logsumexp(np.zeros(100000, "float16"))))
    11.515625
    """
    # keras.ops.logsumexp takes lists of axes
    return current().logsumexp(to_tensor(x, "x"), _axes(axis), keepdims)


def _mask(mask: object, x: Tensor) -> Tensor:
    """``mask`` as a bool tensor that broadcasts to ``x``'s shape (where both are known)."""
    m = to_tensor(mask, "mask")
    if "string" in str(m.dtype) or "complex" in str(m.dtype):
        msg = f"`mask` must be a boolean tensor (True = keep), got dtype {m.dtype}"
        raise SoftmaxkitTypeError(msg)
    ms, xs = tuple(m.shape), tuple(x.shape)
    if None not in ms and None not in xs:
        try:
            ok = len(ms) <= len(xs) and np.broadcast_shapes(ms, xs) == xs
        except ValueError:
            ok = False
        if not ok:
            msg = f"`mask` has shape {ms}, which does not broadcast to the inputs' shape {xs}"
            raise SoftmaxkitValueError(msg)
    return keras.ops.cast(m, "bool")


@keras.saving.register_keras_serializable(package="softmaxkit")
class Softmax(keras.layers.Layer):
    """Softmax layer (``keras.layers.Softmax``'s arguments); fully masked rows give 0.

    Parameters
    ----------
    axis : int, tuple or list of ints, optional
        The axis (or axes, normalised together) to normalise, default -1.
    **kwargs
        Passed to ``keras.layers.Layer`` (``name``, ``dtype`` ...).

    Notes
    -----
    ``call(inputs, mask=None)``: entries where ``mask`` is False get 0, and a
    row with nothing left is all 0, as in Keras (keras#21149); Keras reaches it
    by adding -1e9 (-3e4 in float16) and zeroing afterwards, softmaxkit by
    excluding the entries, so the other entries' values do not depend on the
    masked ones' size.

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxkit.keras as skk
    >>> layer = skk.Softmax()
    >>> x = np.array([[1.0, 2.0], [3.0, 4.0]], "float32")
    >>> np.asarray(layer(x, mask=np.array([[True, True], [False, False]]))).round(3)
    array([[0.269, 0.731],
           [0.   , 0.   ]], dtype=float32)
    """

    def __init__(self, axis: Any = -1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis = axis
        self.supports_masking = True

    def call(self, inputs: Any, mask: Any = None) -> Tensor:
        x = to_tensor(inputs, "inputs")
        if mask is not None:
            m = _mask(mask, x)
            x = keras.ops.where(m, x, keras.ops.full_like(x, -math.inf))
        return current().softmax(x, _axes(self.axis))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update({"axis": self.axis})
        return config
