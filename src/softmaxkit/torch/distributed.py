r"""Vocab-parallel cross-entropy over ``torch.distributed``: one collective per forward.

Rank ``r`` of a process group holds a contiguous slice of the classes (slices in
rank order, sizes possibly uneven) and the same class-index targets as every
other rank. Each rank reduces its slice, token by token, to the mergeable state
of Blanchard, Higham & Higham,

* ``m`` the slice maximum, ``c`` the number of logits equal to it and ``s`` the
  sum of the other ``exp(x - m)`` (float64),
* the target logit if the target lies in the slice,
* ``sum_c w_c (m - x_c)`` and ``sum_c w_c`` when label smoothing is on,
* ``sum_c exp(x_c - m) (m - x_c)`` for the entropy, and the slice's top-k,

and ONE all-gather of that state (plus a small header that lets every rank check
that the group agrees on the call) gives every rank the same merged state, merged
in rank order: the loss, ``logsumexp``, z-loss and smoothing with the GLOBAL class
count, the entropy and top-k log-probabilities, and everything the backward pass
needs. The backward of :func:`cross_entropy` runs no collective; the backward of
:func:`linear_cross_entropy` runs the one ``N x D`` all-reduce of the hidden-state
gradient that every vocab-parallel lm-head needs.

Every rank gets bitwise the same loss: all ranks merge the same gathered bytes in
the same order with the same code. Bad input (shards that do not add up to the
declared class count, a target outside the global range, ranks that disagree on
the targets or the options, an exception while a rank computes its state) raises a
:class:`~softmaxkit.SoftmaxkitError` on every rank after the one collective, never
a hang; a rank that dies or skips the collective makes the others fail when the
group's timeout expires.

Determinism, and what it rests on:

* Same bits on every rank: every rank merges the same gathered bytes, in the
  same order, with the same code. This holds by construction.
* Equal to one process BY CONSTRUCTION on block-aligned slices (CPU tensors the
  C kernel takes). The single-process kernel reduces a
  row in blocks of :data:`BLOCK` classes and combines the blocks' ``(max, count,
  rest)`` statistics in block order, in double-word arithmetic. When every slice
  starts on a block boundary (and ends on one unless it ends the row; uneven and
  empty slices are fine), each rank computes the statistics of its own blocks with
  the kernel's code, the one all-gather carries them (16 bytes a block a token for
  float32 logits: max and count in float32, rest in float64; 28 for float64: the
  rest as a double-word pair), and every rank finishes the rows from all blocks,
  in block order, with the kernel's own combine, loss and gradient code
  (``_ckernels.cross_entropy_states``). The sum and mean are formed by the same
  NumPy calls and the same casts. Loss, ``lse`` and gradient are then bitwise
  those of :func:`softmaxkit.torch.cross_entropy` in one process, for any TP
  degree. With label smoothing (float32, float16, bfloat16 logits) each block
  also sends ``sum_c w_c (m_b - x_c)`` and a float64 ``sum_c exp(x_c - m_b)``
  (16 more bytes a block a token), and every rank finishes the rows with the
  one-process smoothing route's own code (``softmaxkit._smoothing``): the
  same bits again, by construction, unless a row holds ``+inf`` or NaN (one
  process then runs the array-API engine, and the ranks merge as below).
* Otherwise (unaligned slices, float64 logits with smoothing) each rank sends one
  state of its slice, merged in rank order in float64. Without smoothing the
  slice's state comes from the C kernel and the rows are finished with the
  kernel's arithmetic from the merged state; the split enters only through that
  state. The float32 kernel sums exponentials accurate to about ``2**-46``
  relative (enough for correctly rounded float32 results), taken relative to each
  block's or slice's own maximum, so the merged sum differs from the one-process
  one at that level, and a float32 result changes when its exact value lies that
  close to a rounding boundary. Measured: no loss differed; about ``5e-6`` of the
  gradient elements differ by 1 ulp from one process at V = 70000 (``2e-5`` when
  the row is one block, whose one-process gradient reuses the exponentials of its
  first pass). With smoothing the state is summed in float64 by torch (about
  ``1e-16`` relative): no loss differed, and gradients agree with one process
  within 1 ulp on the tests' unaligned slices, but that is measured, not
  constructed.

Every message of a call has the same size on every rank, whatever the ranks
hold: the state travels padded to a byte capacity that the group learned from
earlier gathered headers, identically on every rank. Ranks that pass different
numbers of tokens, dtypes or options therefore all raise the same clear error
from the headers (gloo would abort a process that received a larger message than
it expected). A call whose state outgrows the capacity says so in its header, and
every rank gathers once more at the new size; the capacity shrinks back after
eight consecutive calls that needed at most half of it.

This module must never run more than one collective in a forward pass (the
first call on a group, which learns the slice sizes, a call whose slices or
state size grew, and ``precheck=True`` add one, as documented), never raise on
one rank alone between entering a call and its collective, and never import
anything at ``import softmaxkit`` time (it is imported on demand).
"""

from __future__ import annotations

import math
import os
import zlib
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist

from .. import _dispatch, _smoothing
from .._errors import SoftmaxkitTypeError, SoftmaxkitValueError
from . import _checks as chk
from . import _engine as E
from . import _smooth_ce
from ._eager import _is_one

__all__ = [
    "BLOCK",
    "ENV_PRECHECK",
    "DistributedCrossEntropyOutput",
    "cross_entropy",
    "linear_cross_entropy",
]

Tensor = torch.Tensor
F64 = torch.float64

_MAGIC = 0x534B4954_44495354  # "SKITDIST"
_MSG_WORDS = 31  # 248 bytes of error message travel in the header
_NWORDS = 11
_HDR = _NWORDS + _MSG_WORDS  # 42 words: 336 bytes
# header words (_H_WSUM holds the float64 bits of the slice's summed class weights,
# _H_SLOTS the number of block states per token in the payload, _H_NEED the bytes
# of state this rank has to send, which may exceed the group's capacity)
(_H_MAGIC, _H_VLOC, _H_N, _H_OPTS, _H_TGT, _H_W, _H_ERR, _H_V0, _H_WSUM, _H_SLOTS,
 _H_NEED) = range(_NWORDS)  # fmt: skip

# The payload travels padded to a byte capacity that every rank of the group holds
# alike (learned from the same gathered headers), so that every rank's message has
# the same size whatever it holds: gloo aborts a receiving process when a message is
# larger than expected, and ranks that disagree (on the token count, say) must get
# a clean error instead. A call whose state outgrows the capacity says so in its
# header and every rank gathers once more, at the new size; the capacity shrinks
# to the need after _SHRINK_AFTER consecutive calls that needed at most half of it.
_SHRINK_AFTER = 8

BLOCK = E._ckernels.block_elems() if E._ckernels is not None else 32768
"""Classes per block of the C core's rows (``SKIT_BLOCK_ELEMS``).

The single-process kernel reduces each row block by block and combines the block
statistics in block order. When every rank's slice starts on a block boundary
(and ends on one, unless it ends the row), each rank computes the statistics of
its own blocks, the one all-gather carries them, and every rank finishes the row
with the kernel's own combine: the loss, ``lse`` and gradient are then those of
single-process ``softmaxkit.torch.cross_entropy`` bit for bit, by construction.
"""

ENV_PRECHECK = "SOFTMAXKIT_DIST_PRECHECK"
"""Environment variable: set to ``1`` to run every call with ``precheck=True``."""


class DistributedCrossEntropyOutput(NamedTuple):
    """The loss and the per-token extras asked for (``None`` otherwise)."""

    loss: Tensor
    lse: Tensor | None
    entropy: Tensor | None
    topk_logprobs: Tensor | None
    topk_indices: Tensor | None


# --------------------------------------------------------------------------- the group


def _group_info(group: Any) -> tuple[int, int, tuple[Any, ...]]:
    """``(rank, world, key)`` of ``group`` (``None``: the default group)."""
    if not dist.is_available() or not dist.is_initialized():
        msg = (
            "softmaxkit.torch.distributed needs an initialised process group: call "
            "torch.distributed.init_process_group first"
        )
        raise SoftmaxkitValueError(msg)
    try:
        rank = dist.get_rank(group)
        world = dist.get_world_size(group)
    except (RuntimeError, ValueError) as e:
        msg = f"`group` is not a usable process group here: {e}"
        raise SoftmaxkitValueError(msg) from None
    if rank < 0:
        msg = "this process is not a member of `group`; call the op only on the group's ranks"
        raise SoftmaxkitValueError(msg)
    pg = dist.group.WORLD if group is None else group
    ranks = tuple(dist.get_process_group_ranks(pg))
    return rank, world, (getattr(pg, "group_name", ""), ranks)


# The slice sizes of every rank, learned per (group, rank, world, local size) by a
# fixed-size header gather on the first call; every later call sends its states
# with the right offsets (and block states where the slices are block-aligned) in
# one gather. Should the gathered sizes ever contradict the cache, every rank runs
# the gather once more with the sizes it just learned.
_LAYOUT: dict[tuple[Any, ...], list[int]] = {}
# (capacity in bytes, consecutive calls that needed at most half of it), per key
_CAPACITY: dict[tuple[Any, ...], tuple[int, int]] = {}


def _aligned(sizes: list[int]) -> bool:
    """Whether every non-empty slice is a run of whole blocks of the row (see BLOCK)."""
    V, off = sum(sizes), 0
    for sz in sizes:
        if sz and (off % BLOCK or (sz % BLOCK and off + sz != V)):
            return False
        off += sz
    return True


def _nblocks(size: int) -> int:
    return -(-size // BLOCK)


def _offsets(sizes: list[int]) -> list[int]:
    return [sum(sizes[:r]) for r in range(len(sizes))]


def _env_precheck() -> bool:
    return os.environ.get(ENV_PRECHECK, "").strip() not in ("", "0")


def _dense(t: Tensor) -> Tensor:
    """A copy of ``t`` with its own row-major storage, offset 0 (so that it can be
    viewed as any dtype whose size divides its rows' bytes)."""
    return t.clone(memory_format=torch.contiguous_format)


def _all_gather(buf: Tensor, world: int, group: Any) -> Tensor:
    """The one collective: every rank's ``buf`` (bytes) stacked in rank order, ``(world, len)``."""
    out = buf.new_empty(world * buf.numel())
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(out, buf, group=group)
    return out.view(world, buf.numel())


def _crc(*parts: object) -> int:
    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF


def _tensor_hash(t: Tensor | None) -> int:
    """A cheap order-sensitive fingerprint of a tensor's bits (0 for ``None``)."""
    if t is None:
        return 0
    a = t.detach().reshape(-1)
    if a.is_floating_point():
        a = a.to(F64).view(torch.int64)
    else:
        a = a.to(torch.int64)
    mult = torch.arange(a.numel(), dtype=torch.int64, device=a.device) * 2 + 1
    h = int((a * mult).sum()) & 0x7FFFFFFFFFFFFFFF
    return h ^ (a.numel() << 1)


def _pack_header(words: list[int], msg: str) -> Tensor:
    h = torch.zeros(_HDR, dtype=torch.int64)
    h[: len(words)] = torch.tensor(words, dtype=torch.int64)
    raw = msg.encode()[: _MSG_WORDS * 8]
    raw = raw + b"\0" * (_MSG_WORDS * 8 - len(raw))
    h[_NWORDS:] = torch.frombuffer(bytearray(raw), dtype=torch.int64)
    return h


def _header_msg(h: Tensor) -> str:
    raw = h[_NWORDS:].contiguous().numpy().tobytes()
    return raw.rstrip(b"\0").decode(errors="replace")


# --------------------------------------------------------------------- local state


class _Opts(NamedTuple):
    ignore_index: int
    eps: float
    z: float
    reduction: str
    topk: int
    entropy: bool
    num_classes: int | None

    @property
    def smooth(self) -> bool:
        return self.eps > 0.0


def _fields(o: _Opts) -> int:
    """Float64 words of state per token: m, c, s, x_t, W, sum w(m-x), q [, 2k].

    The smoothing and entropy words are always there, so that ranks that disagree
    on those options still exchange equal-sized buffers (and learn of the
    disagreement from the header instead of breaking the transport).
    """
    return 7 + 2 * o.topk


# float64 temporaries of the elementwise passes stay below this many elements
BLOCK_ELEMENTS = 1 << 20


def _row_blocks(n: int, V: int) -> list[tuple[int, int]]:
    """Token ranges whose float64 working copies hold about ``BLOCK_ELEMENTS`` values."""
    rows = max(1, BLOCK_ELEMENTS // max(V, 1))
    return [(i, min(n, i + rows)) for i in range(0, n, rows)]


def _slice_state(
    x: Tensor, t: Tensor, v0: int, w_loc: Tensor | None, o: _Opts, out: Tensor
) -> None:
    """Reduce logits ``x`` (tokens x local classes) into ``out`` (tokens x fields), float64.

    Finite rows carry ``c = 1`` and ``s`` = the rest ``(c - 1) + s``: only that sum
    matters downstream, and the split keeps a tiny ``s`` exact when a single logit is
    at the maximum (as in ``softmaxkit.torch.linear_cross_entropy``).
    """
    V = x.shape[1]
    out.zero_()
    if V == 0:
        out[:, 0] = -math.inf
        if o.topk:
            out[:, 7 : 7 + o.topk] = -math.inf
            out[:, 7 + o.topk :] = -1.0
        return
    xw = x if x.dtype in (torch.float32, F64) else x.to(torch.float32)
    m, arg = xw.max(1)
    m64 = m.to(F64)
    nan = torch.isnan(m64)
    fin = torch.isfinite(m64)
    posinf = m64 == math.inf
    shift = torch.where(fin, m64, 0.0)
    # exp(x - m) in float64: their sum S counts each maximum as exactly 1. S >= 2 means
    # (c - 1) + s >= 1 downstream, where the split is immaterial; S < 2 means a single
    # maximum, and s is then summed without it so that a tiny s keeps its digits.
    # out of place: for float64 logits xw.to(F64) is the caller's own tensor
    e = (xw.to(F64) - shift[:, None]).exp_()
    S = e.sum(1)
    s = S - 1.0
    low = torch.nonzero(fin & (S < 2.0))[:, 0]
    if low.numel():
        sub = e.index_select(0, low)
        sub.scatter_(1, arg.index_select(0, low)[:, None], 0.0)
        s[low] = sub.sum(1)
    c = torch.where(fin, 1.0, 0.0)
    if bool(posinf.any()):
        c = torch.where(posinf, (xw == math.inf).sum(1).to(F64), c)
    out[:, 0] = torch.where(nan, math.nan, m64)
    out[:, 1] = c
    out[:, 2] = torch.where(fin, s, 0.0)
    inside = (t >= v0) & (t < v0 + V)
    col = torch.where(inside, t - v0, torch.zeros_like(t))
    xt = xw.gather(1, col[:, None])[:, 0].to(F64)
    out[:, 3] = torch.where(inside, xt, 0.0)
    if o.smooth:
        # sum_c w_c (m - x_c) = m W - sum_c w_c x_c, all in float64
        w = torch.ones(V, dtype=F64, device=x.device) if w_loc is None else w_loc
        if bool(torch.isinf(xw).any()):
            x64 = xw.to(F64)
            gap = torch.where(w[None, :] == 0, 0.0, w[None, :] * (shift[:, None] - x64)).sum(1)
        elif w_loc is None:
            gap = shift * float(V) - xw.sum(1, dtype=F64)
        else:
            gap = shift * w.sum() - xw.to(F64) @ w
        out[:, 4] = w.sum()
        out[:, 5] = gap
    if o.entropy:
        d = xw.to(F64) - shift[:, None]
        q = torch.where(e == 0, 0.0, e * -d)
        out[:, 6] = torch.where(fin, q.sum(1), 0.0)
    if o.topk:
        k = min(o.topk, V)
        out[:, 7 : 7 + o.topk] = -math.inf
        out[:, 7 + o.topk :] = -1.0
        tv, ti = xw.topk(k, dim=1)
        out[:, 7 : 7 + k] = tv.to(F64)
        out[:, 7 + o.topk : 7 + o.topk + k] = (ti + v0).to(F64)


class _Merged(NamedTuple):
    M: Tensor
    C: Tensor
    S: Tensor
    xt: Tensor
    lse: Tensor
    L1: Tensor
    smooth: Tensor | None  # sum_c w_c (lse - x_c)
    entropy: Tensor | None
    topv: Tensor | None
    topi: Tensor | None


def _merge_mcs(states: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Merge the ``(m, c, s)`` columns of ``states`` in order (NaN maxima win)."""
    n = states[0].shape[0]
    dev = states[0].device
    M = torch.full((n,), -math.inf, dtype=F64, device=dev)
    C = torch.zeros(n, dtype=F64, device=dev)
    S = torch.zeros(n, dtype=F64, device=dev)
    nan = torch.zeros(n, dtype=torch.bool, device=dev)
    for st in states:
        m, c, s = st[:, 0], st[:, 1], st[:, 2]
        nan = nan | torch.isnan(m)
        m = torch.where(torch.isnan(m), -math.inf, m)
        newM = torch.maximum(M, m)
        safe = torch.where(torch.isfinite(newM), newM, 0.0)
        old_max = newM == M
        new_max = m == newM
        old = torch.where(old_max, S, torch.exp(M - safe) * (C + S))
        new = torch.where(new_max, s, torch.exp(m - safe) * (c + s))
        # +inf maxima: only the counts matter (the sums stay 0)
        S = torch.where(torch.isposinf(newM), 0.0, old + new)
        C = torch.where(old_max, C, 0.0) + torch.where(new_max, c, 0.0)
        M = newM
    return torch.where(nan, math.nan, M), C, S


def _merge_local(states: list[Tensor], o: _Opts) -> Tensor:
    """One state from the states of consecutive vocabulary tiles of a slice, in order."""
    if len(states) == 1:
        return states[0]
    M, C, S = _merge_mcs(states)
    out = torch.zeros_like(states[0])
    out[:, 0], out[:, 1], out[:, 2] = M, C, S
    fin = torch.isfinite(M)
    Ms = torch.where(fin, M, 0.0)
    xt = torch.zeros_like(M)
    W = torch.zeros_like(M)
    gap = torch.zeros_like(M)
    q = torch.zeros_like(M)
    for st in states:
        m = st[:, 0]
        mfin = torch.isfinite(m)
        ms = torch.where(mfin, m, 0.0)
        xt = xt + st[:, 3]
        if o.smooth:
            W = W + st[:, 4]
            gap = gap + (torch.where(st[:, 4] == 0, 0.0, st[:, 4] * (Ms - ms)) + st[:, 5])
        if o.entropy:
            live = mfin & fin
            f = torch.exp(torch.where(live, m - Ms, -math.inf))
            q = q + torch.where(live, f * ((Ms - m) * (st[:, 1] + st[:, 2]) + st[:, 6]), 0.0)
    out[:, 3], out[:, 4], out[:, 5], out[:, 6] = xt, W, gap, q
    if o.topk:
        k = o.topk
        v = torch.cat([st[:, 7 : 7 + k] for st in states], 1)
        i = torch.cat([st[:, 7 + k : 7 + 2 * k] for st in states], 1)
        tv, pos = v.topk(k, dim=1)
        out[:, 7 : 7 + k] = tv
        out[:, 7 + k : 7 + 2 * k] = i.gather(1, pos)
    return out


def _merge(states: Tensor, owner: Tensor, o: _Opts) -> _Merged:
    """Merge the gathered states ``(world, tokens, fields)`` in rank order."""
    world, n, _ = states.shape
    dev = states.device
    M, C, S = _merge_mcs([states[r] for r in range(world)])
    ar = torch.arange(n, device=dev)
    xt = states[owner.clamp(0, world - 1), ar, 3]
    fin = torch.isfinite(M)
    L1 = torch.log1p(torch.where(fin, (C - 1.0) + S, 0.0))
    lse = torch.where(fin, M + L1, M)
    j = 4
    smooth = entropy = topv = topi = None
    Msafe = torch.where(fin, M, 0.0)
    if o.smooth:
        Wr, gap = states[:, :, j], states[:, :, j + 1]
        m_r = states[:, :, 0]
        lift = torch.where(Wr == 0, 0.0, Wr * (Msafe[None, :] - m_r))
        acc = torch.zeros(n, dtype=F64, device=dev)
        W = torch.zeros(n, dtype=F64, device=dev)
        for r in range(world):
            acc = acc + (torch.where(torch.isfinite(m_r[r]), lift[r], 0.0) + gap[r])
            W = W + Wr[r]
        smooth = torch.where(fin, acc + W * L1, torch.where(torch.isnan(M), M, math.inf))
    j += 2
    if o.entropy:
        q = states[:, :, j]
        m_r, c_r, s_r = states[:, :, 0], states[:, :, 1], states[:, :, 2]
        acc = torch.zeros(n, dtype=F64, device=dev)
        for r in range(world):
            live = torch.isfinite(m_r[r]) & fin
            f = torch.exp(torch.where(live, m_r[r] - Msafe, -math.inf))
            acc = acc + torch.where(live, f * ((Msafe - m_r[r]) * (c_r[r] + s_r[r]) + q[r]), 0.0)
        entropy = torch.where(fin, L1 + acc / (C + S), torch.where(torch.isnan(M), M, 0.0))
    j += 1
    if o.topk:
        k = o.topk
        v = states[:, :, j : j + k].permute(1, 0, 2).reshape(n, world * k)
        i = states[:, :, j + k : j + 2 * k].permute(1, 0, 2).reshape(n, world * k)
        kk = min(k, o.num_classes if o.num_classes is not None else world * k)
        topv, pos = v.topk(kk, dim=1)
        topi = i.gather(1, pos).to(torch.int64)
    return _Merged(M, C, S, xt, lse, L1, smooth, entropy, topv, topi)


def _token_losses(mg: _Merged, t: Tensor, counted: Tensor, w_t: Tensor, V: int, o: _Opts) -> Tensor:
    """Per-token float64 losses (0 where not counted), as the single-device op forms them."""
    M, xt = mg.M, mg.xt
    nll = (M - xt) + mg.L1
    nll = torch.where(xt == -math.inf, math.inf, nll)
    pinf = torch.isposinf(M)
    nll = torch.where(pinf, torch.where(xt == math.inf, torch.log(mg.C), math.inf), nll)
    nll = torch.where(torch.isnan(M), math.nan, nll)
    core = (1.0 - o.eps) * nll if o.eps else nll
    if o.z:
        core = core + o.z * mg.lse * mg.lse
    item = w_t * core
    if o.eps:
        assert mg.smooth is not None
        item = item + (o.eps / V) * mg.smooth
    return torch.where(counted, item, 0.0)


# ------------------------------------------------------------------- the one gather


class _Call(NamedTuple):
    rank: int
    world: int
    V: int
    offsets: list[int]
    merged: _Merged
    owner: Tensor
    collectives: int
    blocks: np.ndarray | None  # (tokens, blocks of the row, 4): m, c, s_hi, s_lo; exact mode


# the fields of a block state: m, c, s_hi, s_lo and, with label smoothing on the
# kernel route, the block's gap sum_c w_c (m - x_c) and float64 sum exp(x_c - m)
_BLOCK_FIELDS = 6


def _block_section(x: Tensor, slots: int, smooth: bool = False) -> list[tuple[int, torch.dtype]]:
    """The block-state fields that travel, ``(field, wire dtype)``, for ``slots`` slots.

    ``m`` travels in the logits' precision (a logit, or +-inf, NaN), ``c`` (a count
    below 2**15) in float32, ``s_hi`` in float64; ``s_lo`` only for float64 logits
    (the float32 kernel sums in plain float64: its ``s_lo`` is 0, checked); with
    ``smooth`` (float32 and narrower logits) the gap and exp sums, float64.
    """
    f64 = x.dtype == F64
    fields = [(0, F64 if f64 else torch.float32), (1, torch.float32), (2, F64)]
    if f64:
        fields.append((3, F64))
    if smooth:
        fields += [(4, F64), (5, F64)]
    return fields


class _Round(NamedTuple):
    hdrs: Tensor  # (world, _HDR) int64
    need: int  # payload bytes of this call (the same on every rank once checked)
    overflow: bool  # the payload did not fit the capacity: gather again, at ``need``
    states: Tensor | None
    blocks: Tensor | None


def _state_round(
    x: Tensor,
    t: Tensor,
    weight: Tensor | None,
    o: _Opts,
    group: Any,
    world: int,
    v0: int,
    opts_hash: int,
    compute: Any,
    blocks_fn: Any,
    slots: int,
    cap: int | None,
    smooth_blocks: bool = False,
) -> _Round:
    """Compute the local state (never raising) and run the one all-gather.

    The message is the header and the payload padded to ``cap`` bytes (``None``:
    exactly the payload, which every rank then knows to be of equal size). A
    payload larger than ``cap`` is not sent (zeros stand in) and the round reports
    ``overflow``. The gathered headers are checked (the same error on every rank)
    before any payload is read. Otherwise returns the states ``(world, n, fields)``
    float64 (the max, count and rest columns left at 0 when block states travel:
    they are rebuilt from those) and, with ``slots > 0``, the block states
    ``(world, n, slots, _BLOCK_FIELDS)`` float64 (``blocks_fn(v0)`` gives this
    rank's, field by field; the gap and exp sums only with ``smooth_blocks``).
    """
    n = t.numel()
    F = _fields(o)
    exact = slots > 0 and blocks_fn is not None  # max, count, rest come from the blocks
    payload = torch.zeros((n, F), dtype=F64, device=x.device)
    bfields = _block_section(x, slots, smooth_blocks)
    bparts = [torch.zeros((n, slots), dtype=d) for _, d in bfields]
    err, msg = 0, ""
    try:
        compute(v0, payload, exact)
        got = blocks_fn(v0) if exact else ()
        nbl = got[0].shape[1] if got else 0
        if nbl <= slots:  # more blocks: this rank's slice changed; a new layout follows
            if x.dtype != F64 and got and bool(np.any(got[3])):
                msg = "the float32 kernel returned a double-word block sum (internal error)"
                raise SoftmaxkitValueError(msg)
            if got:
                for dst, (fi, _) in zip(bparts, bfields, strict=True):
                    dst[:, :nbl] = torch.from_numpy(got[fi]).to(dst.dtype)
    except Exception as e:  # reported to every rank through the header
        err, msg = 1, f"{type(e).__name__}: {e}"
        payload.zero_()
        for dst in bparts:
            dst.zero_()
    wsum = float(payload[0, 4]) if n else 0.0
    wbits = int(torch.tensor([wsum], dtype=F64).view(torch.int64)[0])
    # on the wire: the header, the float64 words (rest unless block states travel,
    # smoothing gap, entropy word, top-k), then max, count (unless block states
    # travel) and target logit in the logits' precision (exact there), then the
    # block states, then zeros up to the capacity
    sdt = F64 if x.dtype == F64 else torch.float32
    bcols = [5, 6, *range(7, F)] if exact else [2, 5, 6, *range(7, F)]
    scols = [3] if exact else [0, 1, 3]
    big = payload[:, bcols].contiguous()
    small = payload[:, scols].to(sdt)
    pieces = [big, small, *bparts]
    need = sum(p.numel() * p.element_size() for p in pieces)
    size = need if cap is None else cap
    words = [_MAGIC, x.shape[-1], n, opts_hash, _tensor_hash(t), _tensor_hash(weight), err, v0]
    hdr = _pack_header([*words, wbits, slots, need], msg).to(x.device)
    if need <= size:
        raw = [p.contiguous().view(torch.uint8).reshape(-1) for p in pieces]
        pad = size - need
    else:
        raw, pad = [], size
    wire = [hdr.view(torch.uint8), *raw]
    if pad:
        wire.append(torch.zeros(pad, dtype=torch.uint8, device=x.device))
    out = _all_gather(torch.cat(wire), world, group)
    hb = _HDR * 8
    # each slice copied into its own dense buffer (a copy contiguous() would make for
    # 2 ranks or more): with one rank the slice already counts as contiguous, but its
    # row stride and offset are the message's, which need not be multiples of 8 bytes
    hdrs = _dense(out[:, :hb]).view(torch.int64).cpu()
    _check_headers(hdrs, dist.get_rank(group), world, n)
    if need > size:  # every rank's need is this one (checked): all gather again
        return _Round(hdrs, need, True, None, None)
    cuts = [hb]
    for p in pieces:
        cuts.append(cuts[-1] + p.numel() * p.element_size())

    def part(i: int, dt: torch.dtype, shape: tuple[int, ...]) -> Tensor:
        return _dense(out[:, cuts[i] : cuts[i + 1]]).view(dt).reshape(world, *shape)

    bigs = part(0, F64, (n, len(bcols)))
    smalls = part(1, sdt, (n, len(scols))).to(F64)
    states = torch.zeros((world, n, F), dtype=F64, device=x.device)
    states[:, :, bcols] = bigs
    states[:, :, scols] = smalls
    wsums = hdrs[:, _H_WSUM].contiguous().view(F64).to(x.device)
    states[:, :, 4] = wsums[:, None]
    blocks = None
    if exact:
        blocks = torch.zeros((world, n, slots, _BLOCK_FIELDS), dtype=F64)
        for i, (fi, d) in enumerate(bfields):
            blocks[..., fi] = part(2 + i, d, (n, slots)).to(F64)
    return _Round(hdrs, need, False, states, blocks)


def _check_headers(hdrs: Tensor, rank: int, world: int, n: int) -> None:
    """Raise the same error on every rank when the gathered headers disagree."""
    for r in range(world):
        if int(hdrs[r, _H_MAGIC]) != _MAGIC:
            msg = (
                f"rank {r} of the group is not in the same softmaxkit vocab-parallel call "
                "(a different collective); every rank of `group` must call the op with the "
                "same targets and options"
            )
            raise SoftmaxkitValueError(msg)
    counts = [int(hdrs[r, _H_N]) for r in range(world)]
    if len(set(counts)) > 1:
        msg = (
            f"the ranks of `group` passed different numbers of tokens: {counts} (rank "
            "order); every rank must pass the same tokens (targets) with its own slice "
            "of the classes"
        )
        raise SoftmaxkitValueError(msg)
    for r in range(world):
        if int(hdrs[r, _H_ERR]):
            text = _header_msg(hdrs[r])
            who = "this rank" if r == rank else f"rank {r}"
            msg = f"{who} failed while reducing its slice of the classes: {text}"
            raise SoftmaxkitValueError(msg)
    for col, what in (
        (_H_OPTS, "options (ignore_index, label_smoothing, z_loss, reduction, topk, ...)"),
        (_H_TGT, "targets"),
        (_H_W, "class weights"),
        (_H_SLOTS, "class layouts (a rank re-sharded the classes on the same group?)"),
        (_H_NEED, "state layouts (dtypes or class layouts)"),
    ):
        vals = {int(hdrs[r, col]) for r in range(world)}
        if len(vals) > 1:
            msg = (
                f"the ranks of `group` passed different {what}; targets, class weights and "
                "options must be the same on every rank of the group (is `group` the "
                "tensor-parallel group that shards the classes?)"
            )
            raise SoftmaxkitValueError(msg)


def _precheck(
    x: Tensor, t: Tensor, weight: Tensor | None, group: Any, world: int, opts_hash: int
) -> list[int]:
    """The optional first collective: headers only (a size independent of the call).

    It learns every rank's slice size on a group's first call, and checks the call
    before any payload travels (``precheck=True``). Returns every rank's slice size.
    """
    n = t.numel()
    words = [_MAGIC, x.shape[-1], n, opts_hash, _tensor_hash(t), _tensor_hash(weight), 0, 0, 0, 0]
    hdr = _pack_header(words, "").to(x.device)
    hdrs = _all_gather(hdr, world, group).cpu()
    rank = dist.get_rank(group)
    _check_headers(hdrs, rank, world, n)
    return [int(hdrs[r, _H_VLOC]) for r in range(world)]


def _rank_mcs(blocks: Tensor, nbl: int, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """One rank's ``(m, c, s)`` from its ``nbl`` block states ``(n, slots, 4)``."""
    if nbl == 0:
        z = torch.zeros(n, dtype=F64)
        return z - math.inf, z, z.clone()
    sts = [torch.stack([blocks[:, b, 0], blocks[:, b, 1], blocks[:, b, 2] + blocks[:, b, 3]], 1)
           for b in range(nbl)]  # fmt: skip
    return _merge_mcs(sts)


def _run_collective(
    x: Tensor,
    t: Tensor,
    weight: Tensor | None,
    o: _Opts,
    group: Any,
    compute_for: Any,
    blocks_for: Any,
    precheck: bool,
    kind: str,
    exact_wanted: bool = False,
    smooth_blocks: bool = False,
) -> _Call:
    """Gather the states once (after a header gather on a group's first call).

    The payload's size must be the same on every rank, so it depends only on what
    every rank holds alike: the token count, the options, the dtype and the slice
    sizes learned by the group's previous gather (``_LAYOUT``, updated on every
    rank from the same gathered headers). For ``kind == "ce"`` and block-aligned
    slices it carries block states (``blocks_for``; zeros where ``None``). When the
    gathered sizes differ from the cached ones (a rank changed its slice), every
    rank gathers again with the new layout.

    The message is the header and the payload padded to the group's capacity
    (``_CAPACITY``, the same on every rank), so ranks that disagree on the token
    count, the dtype or the options send messages of one size and all raise the
    same error from the headers. A payload larger than the capacity is flagged in
    the header and every rank gathers again at its size (one extra collective each
    time the capacity grows).
    """
    rank, world, gkey = _group_info(group)
    Vr = x.shape[-1]
    n = t.numel()
    key = (gkey, world, kind)
    opts_hash = _crc(o, str(x.dtype), world)
    collectives = 0
    layout = [Vr] if world == 1 else _LAYOUT.get(key)
    if layout is None or precheck or _env_precheck():
        # the group's first call (or a checked call): every rank's slice size from a
        # fixed-size header gather, which also catches different token counts
        layout = _precheck(x, t, weight, group, world, opts_hash)
        collectives += 1

    def slots_for(sizes: list[int]) -> int:
        if kind != "ce" or n == 0 or not _aligned(sizes):
            return 0
        if world == 1 and not exact_wanted:
            return 0  # one rank: no payload to keep alike, keep the float64 state
        return max(_nblocks(sz) for sz in sizes)

    # the payload's capacity: learned from the gathered headers like the layout, so
    # the same on every rank; None (the group's first call, or a round that follows
    # a new layout or an overflow) sends exactly the payload, whose size every rank
    # then knows to be the same (the headers that preceded it were checked)
    cap, low = _CAPACITY.get(key, (None, 0)) if world > 1 else (None, 0)
    for _attempt in range(4):
        v0 = _offsets(layout)[rank]
        slots = slots_for(layout)
        rnd = _state_round(
            x, t, weight, o, group, world, v0, opts_hash, compute_for(x),
            None if blocks_for is None else blocks_for(x), slots, cap, smooth_blocks,
        )  # fmt: skip
        collectives += 1
        hdrs = rnd.hdrs
        sizes = [int(hdrs[r, _H_VLOC]) for r in range(world)]
        offsets = _offsets(sizes)
        V = sum(sizes)
        _check_layout(V, weight, o, sizes)
        _LAYOUT[key] = sizes
        if not rnd.overflow and cap is not None and 2 * rnd.need <= cap:
            low += 1  # a small call: after _SHRINK_AFTER in a row, shrink to it
            cap, low = (rnd.need, 0) if low >= _SHRINK_AFTER else (cap, low)
        elif rnd.overflow or cap is None:
            cap, low = rnd.need, 0
        else:
            low = 0
        if world > 1:
            _CAPACITY[key] = (cap, low)
        if sizes == layout and not rnd.overflow:
            break
        # every rank sees the same headers, so all go round again: at the new layout
        # (whose payload size every rank computes alike) or at the grown capacity
        layout, cap = sizes, None
    states, blocks = rnd.states, rnd.blocks
    assert states is not None
    _check_targets(t, V, o.ignore_index)
    full = None
    if blocks is not None and blocks_for is not None:
        # the row's blocks in global order, and each rank's (m, c, s) for the extras
        nb_all = _nblocks(V)
        full = np.zeros((n, nb_all, _BLOCK_FIELDS))
        for r in range(world):
            nbl = _nblocks(sizes[r])
            if nbl:
                b0 = offsets[r] // BLOCK
                full[:, b0 : b0 + nbl] = blocks[r, :, :nbl].numpy()
            m, c, s_ = _rank_mcs(blocks[r], nbl, n)
            states[r, :, 0], states[r, :, 1], states[r, :, 2] = m, c, s_
        if smooth_blocks:
            _smoothing_words(states, blocks, sizes, offsets, weight, V)
    ends = torch.tensor([offsets[r] + sizes[r] for r in range(world)], device=t.device)
    owner = torch.searchsorted(ends, t, right=True)
    merged = _merge(states, owner, o)
    return _Call(rank, world, V, offsets, merged, owner, collectives, full)


def _smoothing_words(
    states: Tensor,
    blocks: Tensor,
    sizes: list[int],
    offsets: list[int],
    weight: Tensor | None,
    V: int,
) -> None:
    """Each rank's ``W`` and ``sum_c w_c (m_r - x_c)`` (state words 4 and 5) rebuilt
    from its blocks' gap sums, for the rank-order merge when the kernel route does
    not finish the rows (a +inf or NaN logit): ``sum_b [g_b + W_b (m_r - m_b)]``."""
    wn = None if weight is None else weight.detach().to(F64).cpu().numpy()
    Wb = torch.from_numpy(_smoothing.block_weights(wn, V))
    for r in range(len(sizes)):
        nbl = _nblocks(sizes[r])
        b0 = offsets[r] // BLOCK
        m_r = states[r, :, 0]
        shift_r = torch.where(torch.isfinite(m_r), m_r, 0.0)
        gap = torch.zeros_like(m_r)
        W = torch.zeros_like(m_r)
        for b in range(nbl):
            mb = blocks[r, :, b, 0]
            sh_b = torch.where(torch.isfinite(mb), mb, 0.0)
            gap = gap + (blocks[r, :, b, 4] + Wb[b0 + b] * (shift_r - sh_b))
            W = W + Wb[b0 + b]
        states[r, :, 4], states[r, :, 5] = W, gap


def _check_layout(V: int, weight: Tensor | None, o: _Opts, sizes: list[int]) -> None:
    if o.num_classes is not None and o.num_classes != V:
        msg = (
            f"the class slices of the ranks have sizes {sizes}, which add up to {V}, "
            f"not num_classes={o.num_classes}; each rank must pass its own contiguous slice"
        )
        raise SoftmaxkitValueError(msg)
    if weight is not None and weight.shape[0] != V:
        msg = (
            f"`weight` has {weight.shape[0]} entries but the class slices of the ranks "
            f"have sizes {sizes}, which add up to {V}; pass the full (global) weight vector "
            "on every rank"
        )
        raise SoftmaxkitValueError(msg)
    if V == 0:
        msg = "every rank's slice of the classes is empty; there must be at least one class"
        raise SoftmaxkitValueError(msg)


def _check_targets(t: Tensor, V: int, ign: int) -> None:
    bad = ((t < 0) | (t >= V)) & (t != ign)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0, 0])
        msg = (
            f"`target` has a class index out of range: {int(t[i])} at token {i}; the "
            f"classes of all ranks together are 0..{V - 1} (or ignore_index={ign})"
        )
        raise SoftmaxkitValueError(msg)


# ---------------------------------------------------------------------- validation


def _unwrap_dtensor(
    x: Any, name: str, shard_dim: int | None
) -> tuple[Tensor, Any, int | None, bool]:
    """``(local tensor, group, global class count, was_dtensor)`` of a DTensor or a tensor.

    A DTensor must be sharded on ``shard_dim`` (the classes; counted from the end
    when negative) or, with ``shard_dim=None``, replicated, on a 1-D mesh.
    """
    try:
        from torch.distributed.tensor import DTensor, Replicate, Shard
    except ImportError:  # pragma: no cover - torch without DTensor
        return x, None, None, False
    if not isinstance(x, DTensor):
        return x, None, None, False
    mesh = x.device_mesh
    pl = x.placements
    if mesh.ndim != 1:
        msg = (
            f"`{name}` is a DTensor on a {mesh.ndim}-D mesh; pass a DTensor on the 1-D "
            "tensor-parallel mesh (or its local tensor with group=)"
        )
        raise SoftmaxkitValueError(msg)
    sd = None if shard_dim is None else shard_dim % x.ndim
    if sd is not None and isinstance(pl[0], Shard) and pl[0].dim % x.ndim == sd:
        return x.to_local(), mesh.get_group(), int(x.shape[sd]), True
    if isinstance(pl[0], Replicate):
        return x.to_local(), mesh.get_group(), None, True
    want = f"Shard({shard_dim}) (sharded on the classes)" if sd is not None else "Replicate()"
    msg = f"`{name}` is a DTensor with placements {pl}; it must be {want}"
    raise SoftmaxkitValueError(msg)


def _common(
    target: Any,
    weight: Any,
    ignore_index: Any,
    label_smoothing: Any,
    z_loss: Any,
    reduction: Any,
    topk: Any,
    return_entropy: Any,
    num_classes: Any,
    device: torch.device,
    batch_shape: tuple[int, ...],
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor | None, _Opts]:
    t = chk.tensor_arg(target, "target")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        msg = (
            f"`target` must hold integer class indices, got {t.dtype} (probability targets "
            "are not supported vocab-parallel)"
        )
        raise SoftmaxkitTypeError(msg)
    if tuple(t.shape) != batch_shape:
        msg = (
            f"`target` has shape {tuple(t.shape)} but the logits need one class index per "
            f"token: shape {batch_shape}"
        )
        raise SoftmaxkitValueError(msg)
    if t.device != device:
        msg = f"`target` is on {t.device} but the logits are on {device}; move them to one device"
        raise SoftmaxkitValueError(msg)
    w = None
    if weight is not None:
        w = chk.tensor_arg(weight, "weight")
        if w.dim() != 1 or not w.is_floating_point():
            msg = (
                "`weight` must be a 1-D floating tensor of per-class weights, got "
                f"{w.dtype} of shape {tuple(w.shape)}"
            )
            raise SoftmaxkitValueError(msg)
        if w.device != device:
            msg = f"`weight` is on {w.device} but the logits are on {device}"
            raise SoftmaxkitValueError(msg)
        if w.requires_grad and torch.is_grad_enabled():
            msg = "gradients with respect to `weight` are not supported (nor in torch); detach it"
            raise SoftmaxkitValueError(msg)
        w = w.detach().to(dtype).to(F64)  # as softmaxkit.torch: weights in the logits' dtype
    nc = None if num_classes is None else chk.int_arg(num_classes, "num_classes")
    k = chk.int_arg(topk, "topk")
    if k < 0:
        msg = f"`topk` must be >= 0, got {k}"
        raise SoftmaxkitValueError(msg)
    o = _Opts(
        chk.int_arg(ignore_index, "ignore_index"),
        chk.check_label_smoothing(label_smoothing),
        chk.check_nonneg_float(z_loss, "z_loss"),
        chk.check_reduction(reduction),
        k,
        bool(return_entropy),
        nc,
    )
    return t.reshape(-1).to(torch.int64), w, o


def _w_slice(w: Tensor | None, v0: int, Vr: int) -> Tensor | None:
    """This rank's weights; zero-padded when a guessed offset runs past the end.

    A wrong guess is corrected after the collective (every rank then gathers
    again), and a weight vector of the wrong length raises on every rank there.
    """
    if w is None:
        return None
    out = w.new_zeros(Vr)
    lo, hi = max(v0, 0), min(v0 + Vr, w.shape[0])
    if hi > lo:
        out[lo - v0 : hi - v0] = w[lo:hi]
    return out


# ------------------------------------------------------------------ cross_entropy


def _grad_logits(
    x: Tensor,
    t: Tensor,
    v0: int,
    mg: _Merged,
    w_loc: Tensor | None,
    w_t: Tensor,
    W: float | Tensor,
    V: int,
    o: _Opts,
    row_scale: Tensor,
) -> Tensor:
    """``d loss / d local logits`` from the merged state, elementwise, no collective.

    Each element is ``s_i [a_i p_ij - (eps / V) w_j]`` with ``p_ij = exp(x_ij - lse_i)``
    formed in float64 and rounded once to the logits' dtype; it depends on the other
    ranks only through ``lse_i``. At the target, ``1 - p_t`` is formed without
    cancellation from the merged count and rest.
    """
    n, Vr = x.shape
    if Vr == 0:  # an empty slice of the classes: nothing to differentiate here
        return x.new_empty((n, 0))
    lse, M = mg.lse, mg.M
    eps, z = o.eps, o.z
    fin = torch.isfinite(lse)
    lse_safe = torch.where(fin, lse, 0.0)
    a = w_t * ((1.0 - eps) + 2.0 * z * lse_safe)
    if eps:
        a = a + (eps / V) * W
    sa = a * row_scale
    G = x.to(F64).sub_(lse_safe[:, None]).exp_()  # p on finite rows
    if not bool(fin.all()):  # +inf rows share their mass; NaN rows stay NaN; empty rows 0
        pinf = torch.isposinf(M)
        pk = (x == math.inf).to(F64) / torch.where(pinf, mg.C, 1.0)[:, None]
        G = torch.where(fin[:, None], G, torch.where(pinf[:, None], pk, 0.0))
        G = torch.where(torch.isnan(M)[:, None], math.nan, G)
    inside = (t >= v0) & (t < v0 + Vr)
    col = torch.where(inside, t - v0, torch.zeros_like(t))
    p_t = G.gather(1, col[:, None])[:, 0]
    G.mul_(sa[:, None])
    if eps:
        wl = torch.ones(Vr, dtype=F64, device=x.device) if w_loc is None else w_loc
        G.sub_(((eps / V) * row_scale)[:, None] * wl[None, :])
    # 1 - p_t without cancellation: the target's 1 comes out of the count when it is
    # the maximum, its term out of the rest otherwise
    D = mg.C + mg.S
    e_t = torch.exp(
        torch.where(torch.isfinite(mg.xt) & fin, mg.xt - torch.where(fin, M, 0.0), -math.inf)
    )
    one_minus = torch.where(mg.xt == M, ((mg.C - 1.0) + mg.S) / D, (mg.C + (mg.S - e_t)) / D)
    one_minus = torch.where(fin, one_minus, 1.0 - p_t)
    g_t = w_t * (-(1.0 - eps) * one_minus + 2.0 * z * lse_safe * p_t)
    if eps:
        wt_c = torch.ones(n, dtype=F64, device=x.device) if w_loc is None else w_loc[col]
        g_t = g_t + (eps / V) * (W * p_t - wt_c)
    g_t = torch.where(torch.isnan(M), math.nan, g_t * row_scale)
    G.scatter_(1, col[:, None], torch.where(inside, g_t, G.gather(1, col[:, None])[:, 0])[:, None])
    return G.to(x.dtype)


def _native_ok(x: Tensor) -> bool:
    """Whether the C kernel takes ``x`` (and its block states can be computed)."""
    return (
        E._ckernels is not None
        and E.engine_for(x) == E.NATIVE
        and x.dtype in (torch.float32, F64, torch.float16, torch.bfloat16)
    )


def _exact_eligible(x: Tensor, o: _Opts) -> bool:
    """Whether single-process ``softmaxkit.torch.cross_entropy`` runs the C kernel here.

    Then block-aligned slices give its results bit for bit (see BLOCK). With label
    smoothing it runs ``_smooth_ce`` instead (see ``_smooth_route``).
    """
    return o.eps == 0.0 and _native_ok(x)


def _kernel_rows(x: Tensor) -> tuple[np.ndarray, int]:
    """``x`` (tokens x classes) as the C kernel reads it, and its dtype code."""
    xd = x.detach()
    if xd.dtype in (torch.float16, torch.bfloat16):
        xd = xd.to(torch.float32)  # as softmaxkit.torch.cross_entropy does
    return np.ascontiguousarray(xd.numpy()), (1 if xd.dtype == F64 else 0)


def _block_states(x: Tensor) -> tuple[np.ndarray, ...]:
    """This rank's block states (tokens x blocks): m, c, s_hi, s_lo."""
    xn, code = _kernel_rows(x)
    rows, n = xn.shape
    out = tuple(np.zeros((rows, _nblocks(n))) for _ in range(4))
    if rows and n:
        E._ckernels.block_states(xn, rows, n, code, 1, E._threads(rows * n), *out)
    return out


def _kernel_ce(
    x: Tensor, t: Tensor, w: Tensor | None, o: _Opts, call: _Call, need_grad: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Loss, float64 lse and gradient as ``softmaxkit.torch.cross_entropy``'s C path forms them.

    The same kernel code finishes every row, the same NumPy reductions form the
    ``sum`` and ``mean``, and the same casts give the result dtype. From the
    gathered block states (block-aligned slices) the rows are finished exactly as
    the single-process kernel finishes them, so everything matches it bit for bit.
    Otherwise the rows are finished from the rank-order merge of the slices'
    states, with the same arithmetic; only that merged state can differ from the
    kernel's, in its last float64 bits.
    """
    xn, code = _kernel_rows(x)
    rows, n = xn.shape
    v0 = call.offsets[call.rank] if n else 0
    whole = call.world == 1 or n == call.V
    if call.blocks is not None:
        st = [np.ascontiguousarray(call.blocks[:, :, i]) for i in range(4)]
    else:
        mg = call.merged
        fin = torch.isfinite(mg.M)
        S = torch.where(fin, mg.S, 0.0)
        st = [a.reshape(rows, 1).contiguous().numpy() for a in (mg.M, mg.C, S, torch.zeros_like(S))]
    tn = np.ascontiguousarray(t.numpy(), dtype=np.int64)
    ign = o.ignore_index
    if w is not None:
        ignored = tn == ign
        wn = w.numpy()
        wt = np.where(ignored, 0.0, wn[np.where(ignored, 0, tn)])
        den_pred = float(np.sum(wt))
        w_t: np.ndarray | None = wt
    else:
        w_t = None
        den_pred = float(rows - np.count_nonzero(tn == ign))
    xt = np.ascontiguousarray(call.merged.xt.numpy())
    loss = np.empty(rows)
    lse = np.empty(rows)
    counted = np.empty(rows, np.uint8)
    gn = np.empty((rows, n), xn.dtype) if need_grad else None
    threads = E._threads(rows * max(n, 1))

    def run(scale: float) -> None:
        E._ckernels.cross_entropy_states(
            xn, rows, n, code, 1, threads, v0, st[0].shape[1], whole, st[0], st[1], st[2], st[3],
            xt, tn, w_t, True, ign, o.z, scale, loss, lse, counted, gn,
        )  # fmt: skip

    def scale_for(den: float) -> float:
        if o.reduction != "mean":
            return 1.0
        return 1.0 / den if den != 0.0 else 0.0

    run(scale_for(den_pred))
    n_counted = int(np.count_nonzero(counted))
    if w_t is not None:
        den = float(np.sum(w_t[counted.view(bool)])) if n_counted != rows else den_pred
    else:
        den = float(n_counted)
    if gn is not None and o.reduction == "mean" and den != den_pred:
        run(scale_for(den))  # rows with nothing to count (all -inf) changed the divisor
    if n_counted == 0:
        den = 0.0
    if o.reduction == "none":
        r = loss
    elif o.reduction == "sum":
        with np.errstate(over="ignore"):  # a sum beyond the float range: inf, the answer
            r = np.asarray(np.sum(loss))
    else:
        mean = _dispatch.finite_mean(loss, den) if n_counted > 0 and den != 0.0 else 0.0
        r = np.asarray(mean, np.float64)
    np_out = E._NP_DTYPE.get(x.dtype)
    res = (
        torch.from_numpy(r.astype(np_out))
        if np_out is not None
        else torch.from_numpy(r).to(x.dtype)
    )
    grad = None
    if gn is not None:
        grad = torch.from_numpy(gn)
        if grad.dtype != x.dtype:
            grad = grad.to(x.dtype)
    return res, torch.from_numpy(lse), grad


def _smooth_route(x: Tensor, o: _Opts) -> bool:
    """Whether single-process ``softmaxkit.torch.cross_entropy`` takes the smoothing
    kernel route for these logits (it does for rows without +inf/NaN): decided from
    what every rank holds alike, so that the payload layout agrees."""
    return o.eps > 0.0 and not o.entropy and _smooth_ce.kernel_dtype(x)


def _smooth_kernel_ce(
    x: Tensor, t: Tensor, w: Tensor | None, o: _Opts, call: _Call, need_grad: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Loss, float64 lse and gradient of label-smoothed rows as one process forms them.

    ``softmaxkit._smoothing.finish_rows`` from the gathered statistics of ALL
    the row's blocks (block-aligned slices), with this rank's classes for the
    gradient: the same function of the same block values as in one process, so the
    same bits by construction.
    """
    assert call.blocks is not None
    xn, _ = _kernel_rows(x)
    rows, n = xn.shape
    v0 = call.offsets[call.rank] if n else 0
    tn = np.ascontiguousarray(t.numpy(), dtype=np.int64)
    wn = None if w is None else w.detach().to(F64).contiguous().numpy()
    blocks = tuple(call.blocks[:, :, i] for i in range(_BLOCK_FIELDS))
    # float32 gradients directly, half types through float64 (rounded once), as one
    # process does
    gn = None
    if need_grad:
        gn = np.empty((rows, n), np.float32 if x.dtype == torch.float32 else np.float64)
    r, lse = _smoothing.finish_rows(
        xn, v0, call.V, blocks, call.merged.xt.numpy(), tn, wn, o.ignore_index, o.reduction,
        o.eps, o.z, gn, E._threads(rows * max(n, 1)),
    )  # fmt: skip
    loss = torch.from_numpy(np.array(r, copy=True)).to(x.dtype)
    g = None if gn is None else torch.from_numpy(gn).to(x.dtype)
    return loss, torch.from_numpy(lse), g


class _CE(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, t: Tensor, w: Tensor | None, o: _Opts, group: Any, precheck: bool
    ) -> Any:
        Vr = x.shape[-1]
        xd = x.detach()
        kernel = _exact_eligible(xd, o)
        smooth_k = _smooth_route(xd, o)

        def compute_for(xx: Tensor) -> Any:
            def compute(v0: int, out: Tensor, exact: bool) -> None:
                w_loc = _w_slice(w, v0, Vr)
                if (kernel and not o.entropy) or (smooth_k and exact):
                    if not exact and Vr and xd.shape[0]:
                        # the slice's (max, count, rest) from the C kernel itself
                        xn, code = _kernel_rows(xd)
                        rows = xn.shape[0]
                        m, c, sh, sl = (np.empty(rows) for _ in range(4))
                        E._ckernels.state(
                            xn, 0, Vr, None, rows, Vr, code, 1, E._threads(rows * Vr), 1.0,
                            m, c, sh, sl,
                        )  # fmt: skip
                        out[:, 0] = torch.from_numpy(m)
                        out[:, 1] = torch.from_numpy(c)
                        out[:, 2] = torch.from_numpy(sh + sl)
                    elif not exact:
                        out[:, 0] = -math.inf
                    # the block states (or the state above) carry max, count and
                    # rest: the target logit and the top-k are all that is left
                    inside = (t >= v0) & (t < v0 + Vr)
                    col = torch.where(inside, t - v0, torch.zeros_like(t))
                    if Vr:
                        xt = xd.gather(1, col[:, None])[:, 0].to(F64)
                        out[:, 3] = torch.where(inside, xt, 0.0)
                    if o.topk:
                        k = min(o.topk, Vr)
                        out[:, 7 : 7 + o.topk] = -math.inf
                        out[:, 7 + o.topk :] = -1.0
                        if k:
                            tv, ti = xd.topk(k, dim=1)
                            out[:, 7 : 7 + k] = tv.to(F64)
                            out[:, 7 + o.topk : 7 + o.topk + k] = (ti + v0).to(F64)
                    return
                for i0, i1 in _row_blocks(xd.shape[0], Vr):
                    _slice_state(xd[i0:i1], t[i0:i1], v0, w_loc, o, out[i0:i1])

            return compute

        def blocks_for(xx: Tensor) -> Any:
            if smooth_k:  # with each block's gap and exp sums (softmaxkit._smoothing)

                def smooth_blocks(v0: int) -> tuple[np.ndarray, ...]:
                    xn, _ = _kernel_rows(xd)
                    wl = _w_slice(w, v0, Vr)
                    wn = None if wl is None else wl.to(F64).contiguous().numpy()
                    threads = E._threads(xn.size)
                    return _smoothing.local_blocks(xn, wn, threads, True)

                return smooth_blocks
            return lambda v0: _block_states(xd)

        call = _run_collective(
            xd, t, w, o, group, compute_for, blocks_for if _native_ok(xd) else None,
            precheck, "ce", kernel or smooth_k, smooth_k,
        )  # fmt: skip
        mg = call.merged
        # with smoothing, the kernel route of one process takes rows without +inf/NaN
        smooth_fin = (
            smooth_k and call.blocks is not None and bool(np.all(call.blocks[:, :, 0] < math.inf))
        )
        ctx.kernel = kernel or smooth_fin
        ctx.collectives = call.collectives
        acc = F64 if x.dtype == F64 else torch.float32
        if kernel or smooth_fin:
            if smooth_fin:
                loss, lse64, grad = _smooth_kernel_ce(xd, t, w, o, call, ctx.needs_input_grad[0])
            else:
                loss, lse64, grad = _kernel_ce(xd, t, w, o, call, ctx.needs_input_grad[0])
            ctx.save_for_backward(grad if grad is not None else x.new_empty(0))
            ctx.reduction = o.reduction
            lse = lse64.to(acc)
            ent = mg.entropy.to(acc) if mg.entropy is not None else x.new_empty(0)
            if mg.topv is not None and mg.topi is not None:
                lp, ti = (mg.topv - lse64[:, None]).to(acc), mg.topi
            else:
                lp, ti = x.new_empty(0), t.new_empty(0)
            ctx.mark_non_differentiable(lse, ent, lp, ti)
            return loss, lse, ent, lp, ti
        V = call.V
        v0 = call.offsets[call.rank]
        ignored = t == o.ignore_index
        t_safe = torch.where(ignored, torch.zeros_like(t), t)
        w_t = torch.ones(t.shape, dtype=F64, device=x.device) if w is None else w[t_safe]
        counted = ~ignored & ~torch.isneginf(mg.M)  # NaN rows count (and give NaN)
        item = _token_losses(mg, t_safe, counted, w_t, V, o)
        den = torch.where(counted, w_t, 0.0).sum()
        loss = E.reduce_items(item, den, o.reduction).to(x.dtype)
        ctx.save_for_backward(x, t_safe)
        ctx.state = (mg, w, w_t, counted, den, v0, V, o)
        lse = mg.lse.to(acc)
        ent = mg.entropy.to(acc) if mg.entropy is not None else x.new_empty(0)
        if mg.topv is not None and mg.topi is not None:
            lp = (mg.topv - mg.lse[:, None]).to(acc)
            ti = mg.topi
        else:
            lp, ti = x.new_empty(0), t.new_empty(0)
        ctx.mark_non_differentiable(lse, ent, lp, ti)
        return loss, lse, ent, lp, ti

    @staticmethod
    def backward(ctx: Any, g: Tensor, *_: Any) -> Any:  # type: ignore[override]
        if ctx.kernel:
            # as softmaxkit.torch.cross_entropy: the kernel's gradient times g
            (saved,) = ctx.saved_tensors
            if ctx.reduction != "none" and _is_one(g):
                return saved, None, None, None, None, None
            gk = g.unsqueeze(-1) if ctx.reduction == "none" else g
            return saved * gk, None, None, None, None, None
        x, t_safe = ctx.saved_tensors
        mg, w, w_t, counted, den, v0, V, o = ctx.state
        if o.reduction == "none":
            scale = g.to(F64).reshape(-1)
        else:
            scale = g.to(F64).expand(t_safe.shape)
            if o.reduction == "mean":
                scale = scale * torch.where(den > 0, 1.0 / torch.where(den > 0, den, 1.0), 0.0)
        scale = torch.where(counted, scale, 0.0)
        Vr = x.shape[-1]
        w_loc = None if w is None else w[v0 : v0 + Vr]
        W = float(V) if w is None else w.sum()
        x2 = x.detach().reshape(t_safe.numel(), Vr)
        G = torch.empty_like(x2)
        for i0, i1 in _row_blocks(x2.shape[0], Vr):
            sub = _Merged(*(None if f is None else f[i0:i1] for f in mg))  # type: ignore[arg-type]
            G[i0:i1] = _grad_logits(
                x2[i0:i1], t_safe[i0:i1], v0, sub, w_loc, w_t[i0:i1], W, V, o, scale[i0:i1]
            )
        return G.reshape(x.shape), None, None, None, None, None


def cross_entropy(
    local_logits: Tensor,
    target: Tensor,
    *,
    group: Any = None,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
    num_classes: int | None = None,
    return_lse: bool = False,
    return_entropy: bool = False,
    topk: int = 0,
    precheck: bool = False,
) -> Any:
    r"""Cross-entropy of logits whose classes are sharded over the ranks of ``group``.

    Rank ``r`` passes its slice ``x[..., v0_r : v0_r + V_r]`` of the logits (class
    dimension LAST, slices in rank order, sizes may differ); every rank passes the
    same global class indices ``target``. The result is, on every rank, the loss of
    :func:`softmaxkit.torch.cross_entropy` on the full logits:

    .. math:: \ell = w_t\bigl[(1 - \varepsilon)(\operatorname{lse}(x) - x_t)
              + z\,\operatorname{lse}(x)^2\bigr]
              + \frac{\varepsilon}{V}\sum_c w_c\,(\operatorname{lse}(x) - x_c)

    with ``V`` the GLOBAL class count, from one all-gather of a per-token state
    (see the module docstring). The gradient of the local logits needs no
    collective.

    Parameters
    ----------
    local_logits : Tensor of shape (..., V_r) or DTensor
        This rank's slice of the logits, or a DTensor sharded ``Shard(-1)`` on a
        1-D mesh (then ``group`` comes from the mesh).
    target : Tensor of shape (...)
        Global class indices, identical on every rank (a replicated DTensor is fine).
    group : ProcessGroup, optional
        The tensor-parallel group (default: the default group).
    weight : Tensor of shape (V,), optional
        Per-class weights over ALL classes, identical on every rank; any finite
        values (negative ones too, as torch accepts). ``"mean"`` divides by the
        summed weights of the counted tokens.
    ignore_index : int, optional
        Tokens with this target have loss 0, gradient 0 and are not counted.
    label_smoothing : float in [0, 1], optional
        Target ``(1 - eps) onehot + eps / V`` with the global ``V``.
    z_loss : float, optional
        Adds ``z_loss * lse**2`` per token (PaLM).
    reduction : {"mean", "sum", "none"}, optional
        A ``"mean"`` over no counted token is 0.
    num_classes : int, optional
        The global class count; when given, slices that do not add up to it raise
        on every rank (a DTensor gives it implicitly).
    return_lse, return_entropy : bool, optional
        Also return each token's ``logsumexp`` and the entropy of its predicted
        distribution, from the same collective.
    topk : int, optional
        Also return each token's ``topk`` largest log-probabilities and their
        global class indices (``topk`` values and indices per rank travel in the
        same collective).
    precheck : bool, optional
        Run a second, fixed-size all-gather of the call's header first, so that
        the call is checked (token counts, targets, options, slices) before any
        state travels. Not needed for safety: without it the state travels
        padded to the group's capacity, so mismatched ranks still send messages
        of one size and all raise the same error (the group's first call always
        runs this gather, as it learns the slice sizes). Must be the same on
        every rank; ``SOFTMAXKIT_DIST_PRECHECK=1`` turns it on for every call.

    Returns
    -------
    Tensor or DistributedCrossEntropyOutput
        The loss (the same bits on every rank), or a named tuple ``(loss, lse,
        entropy, topk_logprobs, topk_indices)`` when an extra is asked for.

    Raises
    ------
    SoftmaxkitValueError
        On every rank, after the collective: slices that do not add up to
        ``num_classes`` or to ``weight``'s length, a target outside the global
        range, ranks that disagree on targets, weights or options, or an error on
        any rank while it reduced its slice.

    See Also
    --------
    softmaxkit.torch.cross_entropy, linear_cross_entropy

    Notes
    -----
    Every rank merges the same gathered bytes in the same order with the same
    code, so the loss and every extra are bitwise identical across the ranks.
    When every slice is a run of whole :data:`BLOCK`-class blocks of the row (the
    last may end the row; sizes may differ, slices may be empty), the ranks
    exchange the C kernel's per-block statistics (with label smoothing, also
    each block's gap and exponential sums) and the loss, ``lse`` and gradient
    are those of single-process :func:`softmaxkit.torch.cross_entropy` bit for
    bit, by construction (see the module docstring; with smoothing, for float32
    and narrower logits and rows without ``+inf`` or NaN). Other slices exchange
    one float64 state per rank; the merged state then depends on the split in
    its last bits, so a float32
    result can differ from the single-process one by 1 ulp when its exact value
    lies that close to a rounding boundary (measured: no loss, and 5e-6 to 2e-5
    of the gradient elements). The first call on a group learns every rank's
    slice size from a fixed-size header gather (which also catches ranks passing
    different numbers of tokens); every later call runs ONE gather, and a call
    whose slice sizes differ from the previous call's on the group runs one more.

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham, N. J. Higham, "Accurately computing the
       log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021.
    .. [2] M. Shoeybi et al., "Megatron-LM: training multi-billion parameter
       language models using model parallelism", arXiv:1909.08053, 2019.

    Examples
    --------
    A group of one rank holds all classes (the multi-rank tests spawn processes):

    >>> import os, tempfile, torch, torch.distributed as dist
    >>> import softmaxkit.torch.distributed as sktd
    >>> store = dist.FileStore(tempfile.mktemp(), 1)
    >>> dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    >>> x = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
    >>> sktd.cross_entropy(x, torch.tensor([0, 1]))
    tensor(0.3185)
    >>> dist.destroy_process_group()
    """
    x, g2, nc, _ = _unwrap_dtensor(local_logits, "local_logits", -1)
    if g2 is not None:
        group = g2
        if num_classes is None:
            num_classes = nc
    t_in, _, _, _ = _unwrap_dtensor(target, "target", None)
    w_in = weight
    if weight is not None:
        w_in, _, _, _ = _unwrap_dtensor(weight, "weight", None)
    x = chk.float_input(x, "local_logits", promote_int=False)
    if x.dim() < 1:
        msg = "`local_logits` must have shape (..., V_r) with the classes last, got a 0-d tensor"
        raise SoftmaxkitValueError(msg)
    t, w, o = _common(
        t_in,
        w_in,
        ignore_index,
        label_smoothing,
        z_loss,
        reduction,
        topk,
        return_entropy,
        num_classes,
        x.device,
        tuple(x.shape[:-1]),
        x.dtype,
    )
    Vr = x.shape[-1]
    x2 = x.reshape(math.prod(x.shape[:-1]), Vr)
    loss, lse, ent, lp, ti = _CE.apply(x2, t, w, o, group, bool(precheck))
    batch = tuple(x.shape[:-1])
    if o.reduction == "none":
        loss = loss.reshape(batch)
    if not (return_lse or return_entropy or o.topk):
        return loss
    return DistributedCrossEntropyOutput(
        loss,
        lse.reshape(batch) if return_lse else None,
        ent.reshape(batch) if return_entropy else None,
        lp.reshape((*batch, lp.shape[-1])) if o.topk else None,
        ti.reshape((*batch, ti.shape[-1])) if o.topk else None,
    )


# ------------------------------------------------------------ linear_cross_entropy

TOKEN_CHUNK = 256  # tokens per tile, as in softmaxkit.torch.linear_cross_entropy
VOCAB_CHUNK = 8192  # classes per tile: the local logits exist one 256 x 8192 tile at a time


def _acc(dtype: torch.dtype) -> torch.dtype:
    return F64 if dtype == F64 else torch.float32


def _vocab_tiles(Vr: int) -> list[tuple[int, int]]:
    return [(u, min(Vr, u + VOCAB_CHUNK)) for u in range(0, max(Vr, 1), VOCAB_CHUNK)]


def _logit_tile(hc: Tensor, W: Tensor, b: Tensor | None, u0: int, u1: int) -> Tensor:
    """Logits of one tile, tokens x classes, in the accumulator dtype."""
    acc = hc.dtype
    z = hc @ W[u0:u1].to(acc).t()
    if b is not None:
        z = z + b[u0:u1].to(acc)
    return z


class _LCE(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        h: Tensor,
        W: Tensor,
        b: Tensor | None,
        t: Tensor,
        w: Tensor | None,
        o: _Opts,
        group: Any,
        precheck: bool,
    ) -> Any:
        N = h.shape[0]
        Vr = W.shape[0]
        acc = _acc(h.dtype)
        hd, Wd = h.detach(), W.detach()
        bd = None if b is None else b.detach()

        def compute_for(_x: Tensor) -> Any:
            def compute(v0: int, out: Tensor, exact: bool) -> None:
                w_loc = _w_slice(w, v0, Vr)
                F = out.shape[1]
                for i0 in range(0, N, TOKEN_CHUNK):
                    i1 = min(N, i0 + TOKEN_CHUNK)
                    hc = hd[i0:i1].to(acc)
                    tiles = []
                    for u0, u1 in _vocab_tiles(Vr):
                        z = _logit_tile(hc, Wd, bd, u0, u1)
                        st = torch.empty((i1 - i0, F), dtype=F64, device=h.device)
                        wl = None if w_loc is None else w_loc[u0:u1]
                        _slice_state(z, t[i0:i1], v0 + u0, wl, o, st)
                        tiles.append(st)
                    out[i0:i1] = _merge_local(tiles, o)

            return compute

        # the header carries the local class count: a (1, V_r) stand-in for the logits
        stand_in = h.new_empty((1, Vr))
        call = _run_collective(stand_in, t, w, o, group, compute_for, None, precheck, "lce")
        mg = call.merged
        V = call.V
        v0 = call.offsets[call.rank]
        ignored = t == o.ignore_index
        t_safe = torch.where(ignored, torch.zeros_like(t), t)
        w_t = torch.ones(t.shape, dtype=F64, device=h.device) if w is None else w[t_safe]
        counted = ~ignored & ~torch.isneginf(mg.M)  # NaN rows count (and give NaN)
        item = _token_losses(mg, t_safe, counted, w_t, V, o)
        den = torch.where(counted, w_t, 0.0).sum()
        loss = E.reduce_items(item, den, o.reduction).to(h.dtype)
        ctx.save_for_backward(h, W, b, t_safe)
        ctx.state = (mg, w, w_t, counted, den, v0, V, o, group)
        ctx.has_bias = b is not None
        acc = _acc(h.dtype)
        lse = mg.lse.to(acc)
        ent = mg.entropy.to(acc) if mg.entropy is not None else h.new_empty(0)
        if mg.topv is not None and mg.topi is not None:
            lp, ti = (mg.topv - mg.lse[:, None]).to(acc), mg.topi
        else:
            lp, ti = h.new_empty(0), t.new_empty(0)
        ctx.mark_non_differentiable(lse, ent, lp, ti)
        return loss, lse, ent, lp, ti

    @staticmethod
    def backward(ctx: Any, g: Tensor, *_: Any) -> Any:  # type: ignore[override]
        h, W, b, t_safe = ctx.saved_tensors
        mg, w, w_t, counted, den, v0, V, o, group = ctx.state
        if o.reduction == "none":
            scale = g.to(F64).reshape(-1)
        else:
            scale = g.to(F64).expand(t_safe.shape)
            if o.reduction == "mean":
                scale = scale * torch.where(den > 0, 1.0 / torch.where(den > 0, den, 1.0), 0.0)
        scale = torch.where(counted, scale, 0.0)
        N = h.shape[0]
        Vr = W.shape[0]
        acc = _acc(h.dtype)
        w_loc = None if w is None else _w_slice(w, v0, Vr)
        Wsum = float(V) if w is None else w.sum()
        hd, Wd = h.detach(), W.detach()
        bd = None if b is None else b.detach()
        gh = torch.zeros((N, h.shape[1]), dtype=acc, device=h.device)
        gW = torch.zeros(Wd.shape, dtype=acc, device=h.device)
        gb = torch.zeros(Vr, dtype=acc, device=h.device) if b is not None else None
        for i0 in range(0, N, TOKEN_CHUNK):
            i1 = min(N, i0 + TOKEN_CHUNK)
            hc = hd[i0:i1].to(acc)
            sub = _Merged(*(None if f is None else f[i0:i1] for f in mg))  # type: ignore[arg-type]
            for u0, u1 in _vocab_tiles(Vr):
                z = _logit_tile(hc, Wd, bd, u0, u1)
                wl = None if w_loc is None else w_loc[u0:u1]
                G = _grad_logits(
                    z, t_safe[i0:i1], v0 + u0, sub, wl, w_t[i0:i1], Wsum, V, o, scale[i0:i1]
                )
                gh[i0:i1].addmm_(G, Wd[u0:u1].to(acc))
                gW[u0:u1].addmm_(G.t(), hc)
                if gb is not None:
                    gb[u0:u1] += G.sum(0)
        # the one collective of the backward: dh = sum over ranks of G_r W_r
        _rank, world, _ = _group_info(group)
        if world > 1:
            dist.all_reduce(gh, group=group)
        return (
            gh.to(h.dtype),
            gW.to(W.dtype),
            None if gb is None else gb.to(b.dtype),
            None,
            None,
            None,
            None,
            None,
        )


def linear_cross_entropy(
    input: Tensor,
    local_weight: Tensor,
    target: Tensor,
    *,
    group: Any = None,
    local_bias: Tensor | None = None,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
    num_classes: int | None = None,
    return_lse: bool = False,
    return_entropy: bool = False,
    topk: int = 0,
    precheck: bool = False,
) -> Any:
    r"""Cross-entropy of ``input @ W.T + b`` for a vocab-sharded lm-head, without the logits.

    Rank ``r`` holds rows ``v0_r : v0_r + V_r`` of the output projection
    (``local_weight``, and ``local_bias``), in rank order; ``input`` (the hidden
    states) and ``target`` are the same on every rank. The local logits exist only
    ``256`` tokens at a time; the per-token state of :func:`cross_entropy` travels
    in ONE all-gather in the forward pass, and the backward pass runs the one
    ``N x D`` all-reduce of the hidden-state gradient
    (``dh = sum_r G_r W_r``); the weight and bias gradients stay local.

    .. math::

        \ell_i = w_{t_i}igl[(1 - arepsilon)(\operatorname{lse}_i - z_{i t_i})
                 + \zeta\,\operatorname{lse}_i^2igr]
                 + rac{arepsilon}{V}\sum_c w_c(\operatorname{lse}_i - z_{ic}),
        \qquad z = h W^	op + b

    Parameters
    ----------
    input : Tensor of shape (..., D)
        Hidden states, identical on every rank of ``group``.
    local_weight : Tensor of shape (V_r, D)
        This rank's rows of the projection.
    target : Tensor of shape (...)
        Global class indices, identical on every rank.
    group, weight, ignore_index, label_smoothing, z_loss, reduction, num_classes
        As in :func:`cross_entropy`.
    return_lse, return_entropy, topk, precheck
        As in :func:`cross_entropy`.
    local_bias : Tensor of shape (V_r,), optional
        This rank's slice of the projection's bias.

    A DTensor ``local_weight`` sharded ``Shard(0)`` (the rows of a column-parallel
    lm-head) and a ``Shard(0)`` bias are accepted too (``group`` then comes from the
    mesh); ``input`` and ``target`` may be replicated DTensors.

    Returns
    -------
    Tensor or DistributedCrossEntropyOutput
        As :func:`cross_entropy`.

    See Also
    --------
    cross_entropy, softmaxkit.torch.linear_cross_entropy

    Notes
    -----
    The backward pass recomputes the local logits (one more matrix product than
    the forward) because the normaliser is known only after the collective. The
    gradients of ``input`` are summed over ranks by ``torch.distributed``'s
    all-reduce, so their last bits depend on the number of ranks (as in every
    vocab-parallel lm-head); the loss, the weight and bias gradients do not,
    beyond the float64 rounding described in :func:`cross_entropy`.

    Examples
    --------
    >>> import tempfile, torch, torch.distributed as dist
    >>> import softmaxkit.torch.distributed as sktd
    >>> dist.init_process_group("gloo", store=dist.FileStore(tempfile.mktemp(), 1),
    ...                         rank=0, world_size=1)
    >>> h = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> W = torch.tensor([[2.0, 0.5], [1.0, 2.5], [0.1, 0.3]])
    >>> sktd.linear_cross_entropy(h, W, torch.tensor([0, 1]))
    tensor(0.3185)
    >>> dist.destroy_process_group()
    """
    Wd, g2, nc, _ = _unwrap_dtensor(local_weight, "local_weight", 0)
    if g2 is not None:
        group = g2
        if num_classes is None:
            num_classes = nc
    hin, _, _, _ = _unwrap_dtensor(input, "input", None)
    bin_ = None if local_bias is None else _unwrap_dtensor(local_bias, "local_bias", 0)[0]
    tin, _, _, _ = _unwrap_dtensor(target, "target", None)
    win = None if weight is None else _unwrap_dtensor(weight, "weight", None)[0]
    x = chk.float_input(hin, promote_int=False)
    Wt = chk.float_input(Wd, "local_weight", promote_int=False)
    local_bias, target, weight = bin_, tin, win
    if x.dim() < 1 or Wt.dim() != 2 or Wt.shape[1] != x.shape[-1]:
        msg = (
            f"`local_weight` must have shape (V_r, D) with D = input.shape[-1], got "
            f"{tuple(Wt.shape)} for input {tuple(x.shape)}"
        )
        raise SoftmaxkitValueError(msg)
    for name, other in (("local_weight", Wt), ("local_bias", local_bias)):
        if other is None:
            continue
        chk.tensor_arg(other, name)
        if other.dtype != x.dtype or other.device != x.device:
            msg = f"`{name}` must have input's dtype and device ({x.dtype}, {x.device})"
            raise SoftmaxkitTypeError(msg)
    if local_bias is not None and tuple(local_bias.shape) != (Wt.shape[0],):
        msg = f"`local_bias` must have shape ({Wt.shape[0]},), got {tuple(local_bias.shape)}"
        raise SoftmaxkitValueError(msg)
    t, w, o = _common(
        target,
        weight,
        ignore_index,
        label_smoothing,
        z_loss,
        reduction,
        topk,
        return_entropy,
        num_classes,
        x.device,
        tuple(x.shape[:-1]),
        x.dtype,
    )
    D = x.shape[-1]
    loss, lse, ent, lp, ti = _LCE.apply(
        x.reshape(-1, D), Wt, local_bias, t, w, o, group, bool(precheck)
    )
    batch = tuple(x.shape[:-1])
    if o.reduction == "none":
        loss = loss.reshape(batch)
    if not (return_lse or return_entropy or o.topk):
        return loss
    return DistributedCrossEntropyOutput(
        loss,
        lse.reshape(batch) if return_lse else None,
        ent.reshape(batch) if return_entropy else None,
        lp.reshape((*batch, lp.shape[-1])) if o.topk else None,
        ti.reshape((*batch, ti.shape[-1])) if o.topk else None,
    )
