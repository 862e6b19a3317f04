"""softmaxkit for JAX: optax's losses and jax.nn's softmax family on the C core.

``import softmaxkit.jax as skj`` gives, with optax's names, argument order and
semantics, ``skj.softmax_cross_entropy``,
``skj.softmax_cross_entropy_with_integer_labels``,
``skj.safe_softmax_cross_entropy`` and ``skj.sigmoid_binary_cross_entropy``;
and with jax.nn's, ``skj.softmax``, ``skj.log_softmax``, ``skj.logsumexp``,
``skj.sigmoid`` and ``skj.log_sigmoid``. Every function also takes a
keyword-only ``precision`` ("accurate", the default, or "fast").

On CPU the work runs in softmaxkit's C kernels as XLA FFI custom calls, inside
``jax.jit`` programs, batched by ``jax.vmap`` and differentiated by
``jax.grad``, ``jax.jvp`` and ``jax.hessian``; results are bitwise those of
the NumPy path. On other platforms the same program runs the array-agnostic
implementation. The handlers are compiled when softmaxkit is built with jaxlib
importable (see the README); without them everything still works, on the
array-agnostic path. ``softmaxkit.softmax(jax_array)`` and the other core
functions use the same kernels.

Deliberate differences from jax.nn and optax (the softmaxkit contract):
``+inf`` logits share the probability instead of giving NaN, and tiny
log-probabilities of dominant logits are kept instead of rounding to 0.
For ``softmax_cross_entropy_with_integer_labels``, a label beyond the classes
gives a NaN loss as in optax, but a zero gradient for that row.

>>> import jax
>>> import jax.numpy as jnp
>>> import softmaxkit.jax as skj
>>> logits = jnp.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]], dtype=jnp.float32)
>>> labels = jnp.array([0, 1])
>>> [round(float(v), 4) for v in skj.softmax_cross_entropy_with_integer_labels(logits, labels)]
[0.417, 0.22]
>>> loss = lambda x: skj.softmax_cross_entropy_with_integer_labels(x, labels).sum()
>>> [[round(float(g), 3) for g in row] for row in jax.grad(loss)(logits)]
[[-0.341, 0.242, 0.099], [0.109, -0.198, 0.089]]
"""

from ._core import available
from ._nn import log_sigmoid, log_softmax, logsumexp, sigmoid, softmax
from ._optax import (
    safe_softmax_cross_entropy,
    sigmoid_binary_cross_entropy,
    softmax_cross_entropy,
    softmax_cross_entropy_with_integer_labels,
)

__all__ = [
    "available",
    "log_sigmoid",
    "log_softmax",
    "logsumexp",
    "safe_softmax_cross_entropy",
    "sigmoid",
    "sigmoid_binary_cross_entropy",
    "softmax",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
]
