"""The one exception family raised by softmaxkit.

Every error a user can trigger with bad input is a :class:`SoftmaxkitError`.
Value problems (shapes, ranges, options) are also :class:`ValueError`; type
problems (non-numeric or complex arrays, integer where a float is needed) are
also :class:`TypeError`, so ``except ValueError`` keeps working for code written
against NumPy or PyTorch.
"""

from __future__ import annotations

__all__ = ["SoftmaxkitError", "SoftmaxkitTypeError", "SoftmaxkitValueError"]


class SoftmaxkitError(Exception):
    """Base class of every error softmaxkit raises on bad input."""

    # TensorFlow's AutoGraph rebuilds an exception that leaves converted code (a
    # tf.function) from its type and message, and one whose constructor it does not
    # know as a StagingError, neither softmaxkit's nor a ValueError/TypeError. It lets
    # exceptions with this attribute through unchanged.
    ag_pass_through = True


class SoftmaxkitValueError(SoftmaxkitError, ValueError):
    """An argument has the right type but an unusable value, shape or range."""


class SoftmaxkitTypeError(SoftmaxkitError, TypeError):
    """An argument has a type or dtype softmaxkit cannot work with."""
