# Type stubs of the C extension (src/softmaxkit/_csrc/_cmodule.c).
from typing import Any

def softmax(
    x: Any,
    out: Any,
    mask: Any,
    rows: int,
    n: int,
    dtype: int,
    mode: int,
    threads: int,
    temperature: float,
    log: bool,
    /,
) -> None: ...
def logsumexp(
    x: Any, mask: Any, rows: int, n: int, dtype: int, mode: int, threads: int, lse: Any, /
) -> None: ...
def logsumexp_b(
    x: Any,
    b: Any,
    mask: Any,
    rows: int,
    n: int,
    dtype: int,
    mode: int,
    threads: int,
    lse: Any,
    sign: Any,
    /,
) -> None: ...
def cross_entropy_reduced(
    x: Any,
    target: Any,
    class_weight: Any,
    rows: int,
    n: int,
    dtype: int,
    mode: int,
    threads: int,
    ignore_index: int,
    z_loss: float,
    reduction: int,
    loss: Any,
    grad: Any,
    /,
) -> None: ...
def cross_entropy(
    x: Any,
    target: Any,
    weight: Any,
    mask: Any,
    rows: int,
    n: int,
    dtype: int,
    mode: int,
    threads: int,
    has_ignore: bool,
    ignore_index: int,
    z_loss: float,
    grad_scale: float,
    loss: Any,
    lse: Any,
    counted: Any,
    grad: Any,
    /,
) -> None: ...
def sigmoid(
    kind: int,
    x: Any,
    y: Any,
    w: Any,
    pw: Any,
    n: int,
    dtype: int,
    mode: int,
    threads: int,
    scale: float,
    out: Any,
    grad: Any,
    /,
) -> None: ...
def vjp(
    islog: bool, y: Any, g: Any, rows: int, n: int, dtype: int, mode: int, threads: int, out: Any, /
) -> None: ...
def state(
    x: Any,
    offset: int,
    ld: int,
    mask: Any,
    rows: int,
    n: int,
    dtype: int,
    mode: int,
    threads: int,
    temperature: float,
    m: Any,
    c: Any,
    s_hi: Any,
    s_lo: Any,
    /,
) -> None: ...
def state_apply(
    x: Any,
    mask: Any,
    rows: int,
    n: int,
    dtype: int,
    mode: int,
    threads: int,
    temperature: float,
    m: Any,
    c: Any,
    s_hi: Any,
    s_lo: Any,
    log: bool,
    out: Any,
    /,
) -> None: ...
def block_elems() -> int: ...
def block_states(
    x: Any,
    rows: int,
    n: int,
    dtype: int,
    mode: int,
    threads: int,
    m: Any,
    c: Any,
    s_hi: Any,
    s_lo: Any,
    /,
) -> None: ...
def cross_entropy_states(
    x: Any,
    rows: int,
    n: int,
    dtype: int,
    mode: int,
    threads: int,
    v0: int,
    nb_all: int,
    whole_row: bool,
    m: Any,
    c: Any,
    s_hi: Any,
    s_lo: Any,
    xt: Any,
    target: Any,
    weight: Any,
    has_ignore: bool,
    ignore_index: int,
    z_loss: float,
    grad_scale: float,
    loss: Any,
    lse: Any,
    counted: Any,
    grad: Any,
    /,
) -> None: ...
def isa() -> str: ...
def set_isa(name: str, /) -> None: ...
def set_omp_parallel(address: int, /) -> bool: ...
def omp_parallel_active() -> bool: ...
def xla_handlers() -> dict[str, object]: ...
