"""This machine's vector-port floor, measured beside the kernels it bounds.

``benchmarks/portfloor.c`` runs 16 independent chains of 512-bit fused multiply-adds
(12 of 256-bit ones, as many as 16 vector registers hold without spilling) on one or
more threads: one uop each on the ports that execute the
softmax kernels' floating-point work, with nothing else to wait for. The time per
FMA is therefore the least time any vector uop can take here, now; the clock of this
shared virtual machine moves from minute to minute, so the floor is measured in the
same interleaved rounds as the kernels it is set against, never quoted from a data
sheet.

A kernel that must issue ``U`` such uops per element cannot take less than ``U``
times that time per element. The uop counts of softmaxkit's hot loops are read from
their object code (``UOPS`` below, with what each is made of); a target below that
floor is out of reach for that instruction stream.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# FMAs per call: about 5-20 ms on this machine, long enough that starting a thread
# (tens of microseconds) is lost in it
FMAS_PER_CALL = 1 << 25

# Vector uops on the two 512-bit floating-point ports (p0 and p5 on this Xeon) per 16
# float32 elements of the AVX-512 engine's hot loops on rows of one block (up to
# 32768 elements) on the plain path (no mask, T = 1), counted in the object code of
# this branch (objdump of libskit_avx512.a: e32f_rowmax, e32f_stats' plain loop of 64
# elements, e32f_fromscratch, e32f_logsub, e32a_stats' plain loop of 16, their softmax forms
# e32f_stats_sum and e32a_stats_sum, e32a_fromscratch,
# e32a_logsub). Loads folded into an operation, stores, eliminated register moves and
# the loop's scalar counter are not counted; `vcvtps2pd`/`vcvtpd2ps` count 2 (2 uops).
_FAST_A = (
    "exp and sum 26.5 (106 per 64 elements: 4 clamps, 20 subtractions for the exact "
    "x − max (TwoSum) and the reduction, 36 FMAs and 4 products for the reduction, the "
    "degree-6 polynomial (Estrin's order) and the scale s c + c, 4 shifts forming "
    "c = 2^(k + 64), "
    "4 compares and 4 masked counts for the maxima, 14 adds (2 of them masked) and 2 "
    "masked moves for the polynomial, the correction and the float32 pair sums, 8 for 4 "
    "widenings, 2 extracts and 4 float64 adds)"
)
# softmax needs only the whole sum: no compares, counts or masked moves for the maxima
_FAST_A_SUM = (
    "exp and sum 24 (96 per 64 elements: 4 clamps, 20 subtractions for the exact "
    "x − max (TwoSum) and the reduction, 36 FMAs and 4 products for the reduction, the "
    "degree-6 polynomial (Estrin's order) and the scale s c + c, 4 shifts forming "
    "c = 2^(k + 64), "
    "14 adds for the polynomial, the correction and the float32 pair sums, 8 for 4 "
    "widenings, 2 extracts and 4 float64 adds)"
)
_ACC_EXP = (
    "clamp 1, widening to float64 5, x − max 2, two float64 exponentials with the "
    "table 2^(j/16) (a two-source permute, the degree-4 polynomial, the product by the "
    "entry and `vscalefpd`) 20"
)
_ACC_COUNT = (
    "the maxima counted apart (one float32 compare, a mask shift and a mask move) and the "
    "rest summed in 2 masked adds 5"
)
_ACC_A = f"exp and sum 33 ({_ACC_EXP}, {_ACC_COUNT})"
# log_softmax rows of up to KEEPX_N elements (driver.c) keep their widened entries for
# the output pass: widened before the clamp (which then takes two float64 maxima
# instead of one float32 one) and stored, so the output pass does not widen again
_ACC_A_KEEP = (
    "exp and sum 34 (widening to float64 5, kept, then clamped 2, x − max 2, two float64 "
    "exponentials with the table 2^(j/16) (a two-source permute, the degree-4 polynomial, "
    f"the product by the entry and `vscalefpd`) 20, {_ACC_COUNT})"
)
_ACC_A_SUM = f"exp and sum 30 ({_ACC_EXP}, every term summed 2)"
UOPS: dict[tuple[str, str], tuple[float, str]] = {
    ("softmax", "fast"): (
        29,
        f"row maximum 1 (`vmaxps`); {_FAST_A_SUM}; the product e·f rounded once 4",
    ),
    ("log_softmax", "fast"): (29.5, f"row maximum 1; {_FAST_A}; (x − M) − L 2"),
    ("softmax", "accurate"): (
        37,
        f"row maximum 1; {_ACC_A_SUM}; the product e·f in float64 rounded once to float32 6",
    ),
    ("log_softmax", "accurate"): (
        43,
        f"row maximum 1; {_ACC_A_KEEP}; x − C − c in float64 from the kept entries (two "
        "subtractions, C + c = M + L) and rounded back 8",
    ),
}
KEEPX_N = 4096
# rows over KEEPX_N elements: the output pass widens the floats again
UOPS_LONG: dict[tuple[str, str], tuple[float, str]] = {
    ("log_softmax", "accurate"): (
        46,
        f"row maximum 1; {_ACC_A}; x − C − c in float64 (two subtractions, C + c = M + L), "
        "widened and rounded back 12",
    ),
}


# The AVX2 engine on AMD Zen 3 (family 25; its 256-bit operations are single uops).
# Which operations share the two FMA pipes was measured on that core (session 22): 4
# of each beside 8 independent FMAs add about 2 cycles for products, `vcvtps2pd`,
# `vcvtpd2ps`, `vextractf128` and variable blends (one FMA-pipe uop each, like a
# product) and at most 0.4 for adds, subtractions, compares, maxima and logic (the other
# two pipes; the adders alone issue 2 per cycle). The counts are per 16 float32
# elements of a whole call (`tools/kmix.py`: callgrind, every instruction of the engine's functions:
# the row maximum, the statistics pass and the output pass; 64 rows of 1000, and 8 of
# 8000 for the long rows): the FMA-pipe uops, or the adders' adds and subtractions where
# those are more. A vector integer operation (shifts, integer adds) is counted on neither
# class, so the floor stays a lower bound.
_Z3_FAST_EXP = (
    "the float32 exponential with the exact x − max folded into its reduction: 20 fused "
    "multiply-adds and 4 products (reduction, degree-6 polynomial, scale)"
)
UOPS_AVX2: dict[tuple[str, str], tuple[float, str]] = {
    ("softmax", "fast"): (
        29,
        f"FMA pipes: {_Z3_FAST_EXP}, 2 products e·f, 2 widenings and 1 extract for the "
        "float64 sums (the adders: 23 adds and subtractions)",
    ),
    ("log_softmax", "fast"): (
        25.5,
        "adders: 25.5 adds and subtractions (the exact x − max, the reduction, the sums, "
        "(x − M) − L); FMA pipes 25: 16 fused multiply-adds, 4 products, 2 widenings, "
        "2 blends for the maxima counted apart, 1 extract",
    ),
    ("softmax", "accurate"): (
        54,
        "FMA pipes: 36 fused multiply-adds (two float64 exponentials per 8 floats: "
        "reduction and the degree-7 polynomial), 8 products (the scale 2^k, e·f), 4 "
        "widenings, 4 roundings back to float32, 2 extracts (the adders: 12)",
    ),
    # every row: the AVX2 engine keeps no widened entries (session 26: reading the
    # floats again costs fewer instructions, though 4 more widenings); since session 27
    # the maxima are counted in float32 and blended to a float whose exponential is 0
    # (2 blends on the FMA pipes, against 4 float64 compares and 4 ands off them)
    ("log_softmax", "accurate"): (
        56,
        "FMA pipes: 36 fused multiply-adds, 4 products, 8 widenings (each pass widens the "
        "floats), 4 roundings back, 2 extracts, 2 blends setting the maxima apart (the "
        "adders: 16)",
    ),
}
UOPS_AVX2_LONG: dict[tuple[str, str], tuple[float, str]] = {}

# The AVX-512 engine on AMD Zen 4 (family 25 with AVX-512). Its 512-bit operations run
# on two FMA pipes and two adders, each operation holding its pipe for two cycles, so a
# 512-bit FMA issues once a cycle: the time per FMA that portfloor.c measures. Which
# class each instruction belongs to was measured with tools/pipeclasses.c (session
# 28): 8 of them beside 16 independent FMAs, beside 16 independent adds, and beside
# both (16 FMAs and 16 adds together take the time of 16: the classes run in
# parallel). On the FMA pipes, one FMA time each: fused multiply-adds, products,
# compares into mask registers and two-source permutes (`vpermi2pd`). On the adders,
# one FMA time each: adds, subtractions, maxima, `vcvtps2pd`, `vcvtpd2ps`, shifts and
# roundings; `vscalefps`/`vscalefpd` two each. Others (one-source permutes, extracts,
# blends, integer adds, logic) run beside both classes but take about half an FMA time
# each from the four pipes together once both are busy. A kernel's time per 16
# elements is therefore at least the FMA-pipe time, the adder time, and half the three
# together; the counts are the object code's (the same loops as UOPS above), and
# operations on mask registers, loads and stores are left out, so this stays a lower
# bound.
_Z4_FAST = (
    "stats loop, per 16: 9 fused multiply-adds and 1 product (reduction, degree-6 "
    "polynomial in Estrin's order, the scale s c + c); on the adders 1 clamp, 5 "
    "subtractions and 1 add for the exact x − max (TwoSum), 2 adds of the reduction, 0.5 "
    "pair sums, 1 shift forming c = 2^(k + 64), 1 widening and 1 float64 add"
)
UOPS_ZEN4: dict[tuple[str, str], tuple[float, str]] = {
    ("softmax", "fast"): (
        14.5,
        f"adders 14.5: the row maximum 1; {_Z4_FAST} (12.5); the product e·f 1 (FMA "
        "pipes 13: 10 in the statistics loop, 3 for e·f rounded once; others 0.5)",
    ),
    ("log_softmax", "fast"): (
        15.5,
        f"adders 15.5: the row maximum 1; {_Z4_FAST}, the pair sums masked for the "
        "maxima counted apart (12.5); (x − M) − L 2 (FMA pipes 11: 10 and 1 compare into "
        "a mask; others 2: masked counts and moves, extracts)",
    ),
    ("softmax", "accurate"): (
        18,
        "FMA pipes 18: two float64 exponentials with the table 2^(j/16), each a "
        "two-source permute, 2 fused multiply-adds of the reduction, 4 of the degree-4 "
        "polynomial and the product by the entry (16), and 2 products e·f (the adders "
        "16: the row maximum, the clamp, 2 widenings, 2 subtractions x − max, 2 of the "
        "reduction, 2 `vscalefpd` (4), 2 sums, 2 roundings back to float32; others 1)",
    ),
    ("log_softmax", "accurate"): (
        21,
        "adders 21: the row maximum, 2 widenings, 2 float64 clamps, 2 subtractions "
        "x − max, 2 of the reduction, 2 `vscalefpd` (4), 2 masked sums of the rest, 4 "
        "subtractions x − C − c from the kept entries and 2 roundings back (FMA pipes "
        "17: the two exponentials 16 and the compare that sets the maxima apart; "
        "others 1)",
    ),
}
UOPS_ZEN4_LONG: dict[tuple[str, str], tuple[float, str]] = {
    ("log_softmax", "accurate"): (
        22,
        "adders 22: as for shorter rows with one float32 clamp, and the output pass "
        "widening the floats again (2 more) (FMA pipes 17; others 2)",
    ),
}
# the counts of each counted engine; other engines get no port floor
COUNTS: dict[str, tuple[dict[tuple[str, str], tuple[float, str]], ...]] = {
    "avx512": (UOPS, UOPS_LONG),
    "avx512-zen4": (UOPS_ZEN4, UOPS_ZEN4_LONG),
    "avx2": (UOPS_AVX2, UOPS_AVX2_LONG),
}
WHAT_IS_COUNTED = {
    "avx512": (
        "vector uops on the two 512-bit floating-point ports (Intel Xeon, Sapphire Rapids "
        "class), read from the object code of the hot loops (loads folded into their "
        "operations, stores, eliminated register moves and the loop counter not counted; "
        "`vcvtps2pd`/`vcvtpd2ps` count 2)"
    ),
    "avx512-zen4": (
        "time on the pipes of AMD Zen 4 in units of one 512-bit FMA (the rate measured "
        "above): the larger of the FMA-pipe time and the adder time, counted from the "
        "object code of the hot loops and classed by `tools/pipeclasses.c` (adds, "
        "subtractions, maxima, conversions: one each on the adders, `vscalefpd`/"
        "`vscalefps` two; fused multiply-adds, products, compares into masks and "
        "two-source permutes: one each on the FMA pipes)"
    ),
    "avx2": (
        "uops on the two FMA pipes of AMD Zen 3 (fused multiply-adds, products, "
        "conversions, extracts and variable blends, measured to share them), or the adds "
        "and subtractions of its two adders where those are more, per 16 elements of a "
        "whole call (callgrind)"
    ),
}


@functools.cache
def _amd_family25(avx512: bool) -> bool:
    """Whether this CPU is an AMD family 25 core with (Zen 4) or without (Zen 3)
    AVX-512."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    amd25 = "AuthenticAMD" in info and "\ncpu family\t: 25\n" in info
    return amd25 and (" avx512f" in info) == avx512


def _zen3() -> bool:
    """Zen 3: the pipes the AVX2 counts were measured on, and where portfloor.c times
    256-bit FMAs."""
    return _amd_family25(avx512=False)


def _zen4() -> bool:
    return _amd_family25(avx512=True)


def _key(engine: str) -> str:
    return "avx512-zen4" if engine == "avx512" and _zen4() else engine


def counted(engine: str) -> bool:
    """Whether ``engine``'s uops are counted for the CPU this runs on."""
    if engine == "avx2":
        return _zen3()
    return engine in COUNTS


def counts(engine: str) -> tuple[dict[tuple[str, str], tuple[float, str]], ...]:
    """(UOPS, UOPS_LONG) of a counted engine, for the CPU this runs on."""
    return COUNTS[_key(engine)]


def what_is_counted(engine: str) -> str:
    """What the counts of a counted engine measure, for the CPU this runs on."""
    return WHAT_IS_COUNTED[_key(engine)]


def uops(op: str, prec: str, n: int, engine: str = "avx512") -> float:
    """Uops (FMA times) per 16 elements that bound ``engine``'s loops for rows of n
    elements, on the CPU this runs on."""
    short, long_ = counts(engine)
    if n > KEEPX_N and (op, prec) in long_:
        return long_[(op, prec)][0]
    return short[(op, prec)][0]


def _build() -> Path | None:
    """The calibration library, compiled once into a temporary folder (None when
    there is no C compiler or no AVX2/AVX-512 to measure)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    out = Path(tempfile.mkdtemp(prefix="skit-portfloor-")) / "portfloor.so"
    for flags in (["-mavx512f"], ["-mavx2", "-mfma"]):
        cmd = [cc, "-O2", *flags, "-shared", "-fPIC", "-pthread", str(HERE / "portfloor.c")]
        done = subprocess.run([*cmd, "-o", str(out)], capture_output=True, check=False)
        if done.returncode == 0 and _runs(out):
            return out
    return None


def _runs(lib: Path) -> bool:
    """Whether this CPU executes the library's instructions (a child process takes
    the SIGILL when it does not)."""
    code = (
        "import ctypes, sys; lib = ctypes.CDLL(sys.argv[1]); "
        "lib.portfloor_run.restype = ctypes.c_float; "
        "lib.portfloor_run(ctypes.c_long(10), ctypes.c_int(1))"
    )
    import sys

    done = subprocess.run([sys.executable, "-c", code, str(lib)], capture_output=True, check=False)
    return done.returncode == 0


class PortFloor:
    """``ns_per_uop(threads)``: a callable for the timing rounds (it runs
    ``FMAS_PER_CALL`` FMAs spread over ``threads`` threads) and the factor that turns
    its time in seconds into nanoseconds per vector uop of those threads together."""

    def __init__(self) -> None:
        path = _build()
        self.available = path is not None
        self.isa = ""
        self.bits = 0
        if path is None:
            return
        self._lib = ctypes.CDLL(str(path))
        self._lib.portfloor_run.restype = ctypes.c_float
        self._lib.portfloor_run.argtypes = [ctypes.c_long, ctypes.c_int]
        self.isa = ctypes.c_char_p.in_dll(self._lib, "portfloor_isa").value.decode()
        self.per_round = ctypes.c_int.in_dll(self._lib, "portfloor_fmas_per_round").value
        self.bits = 512 if self.isa == "avx512" else 256

    def call(self, threads: int):  # type: ignore[no-untyped-def]
        """A no-argument callable running ``FMAS_PER_CALL`` FMAs on ``threads`` threads
        (``FMAS_PER_CALL`` is a multiple of every count of FMAs per round and thread
        the library runs: 12 or 16, times 1 to 8 threads, up to a few parts in 10^7)."""
        rounds = FMAS_PER_CALL // (self.per_round * threads)
        lib = self._lib

        def run() -> float:
            r = float(lib.portfloor_run(rounds, threads))
            if r < 0:
                msg = "portfloor: could not start its threads"
                raise RuntimeError(msg)
            return r

        return run

    @staticmethod
    def ns_per_uop(seconds_per_call: float) -> float:
        return seconds_per_call * 1e9 / FMAS_PER_CALL
