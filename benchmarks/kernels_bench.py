"""The native kernels against torch, kernel to kernel: the ``kernels`` section of BENCHMARKS.md.

Run from the repository root (unset OPENBLAS_CORETYPE for this command only)::

    env -u OPENBLAS_CORETYPE .venv/bin/python benchmarks/kernels_bench.py --out /tmp/k.md

``benchmarks/run.py --only kernels`` runs it in a fresh process and keeps its result in
``benchmarks/results/kernels.md``.

What it measures (2 threads everywhere, nanoseconds per element, median of ``--reps``
interleaved rounds: every implementation of a case runs once per round, in an order
shuffled anew each round, so load changes on this shared machine fall on all of them
alike and no implementation always follows the same one; each turn starts with a 50 ms
pause and one untimed call, then times three loops of about 5 ms (calls under 10**7
elements) or one call, so no implementation runs while another's threads still spin):

- softmax and log_softmax into a preallocated output: torch's kernel (``torch._softmax``
  / ``torch._log_softmax`` with ``out=``) against softmaxkit ``out=`` in the fast and the
  accurate mode, each on the engine the dispatcher picks on this CPU and on the AVX2
  engine forced; the floor is a 2-thread copy of the same bytes (``Tensor.copy_``);
- the same as users call them, allocating the output, against torch and ``x.copy()``;
- logsumexp (the output is one number per row, so the calls allocate);
- cross-entropy forward+backward (loss and the gradient of the mean loss) against
  ``F.cross_entropy(...).backward()``, float32;
- the compute floor: the same kernels on data that stays in cache, one thread, so that a
  missed ratio can be read against what the arithmetic alone costs.

Targets (issue 13): fast, kernel to kernel, at least 1.3x torch's ``out=`` speed, or
within 1.1x of the copy floor where torch already sits near it (long rows: within 1.2x
of the floor in any case); accurate at least 0.8x torch's ``out=`` speed; allocating,
fast at least 2.5x torch or within 1.2x of ``x.copy()``, accurate at least 1.5x torch;
cross-entropy forward+backward at least 8x torch.
"""

from __future__ import annotations

import argparse
import functools
import gc
import itertools
import os
import platform
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

THREADS = 2


# Measured by hand on this machine (2026-11-29) with the tools named; static, because
# valgrind has no AVX-512 and this VM's perf has no hardware counters.
NOTES = [
    "### Instructions per element, and which engine runs",
    "",
    "The notes below, up to session 18's, were measured on the machine these sessions "
    "ran on until session 19: an Intel Xeon of the Sapphire Rapids class (it reports "
    "`avx512_fp16`; 512-bit operations not double-pumped), 2 cores, 2 MiB L2 each. The "
    "CPU of this run is named at the top of the section and in the next paragraph.",
    "",
    "valgrind cannot run AVX-512 code and `perf stat` has no counters in this VM, so the "
    "AVX2 engine is counted by callgrind over a whole call (`tools/kcount.sh`, per element) "
    "and the AVX-512 engine by the instructions of its hot loop in the object code "
    "(objdump), per element. Before = e945210, after = this branch.",
    "",
    "| kernel | AVX2, callgrind, whole call | AVX-512, phase-A loop | "
    "AVX-512 1 thread in cache, ns/elem |",
    "|---|---|---|---|",
    "| softmax f32 fast 64×4096 | 6.21 → 6.21 | 33 / 16 = 2.1 → same | 0.59 → 0.59 |",
    "| softmax f32 accurate 64×4096 | 12.0 → 8.62 | ≈ 64 / 16 = 4.0 → 51 / 16 = 3.2 | "
    "1.00 → 0.77 |",
    "| log_softmax f32 accurate 64×4096 | 14.1 → 10.7 | (same loop) | 1.06 → 0.81 |",
    "| logsumexp f32 accurate 64×4096 | 10.0 → 6.63 | (same loop) | 0.81 → 0.56 |",
    "| softmax f32 fast 256×40 (short rows) | 8.40 → 8.38 | scalar transposes → 16 rows "
    "per vector | 1.54 → 0.83 |",
    "| softmax f32 fast 1024×10 | 12.5 → 12.4 | (same) | 1.78 → 1.28 |",
    "| softmax f32 accurate 512×40 / 256×40 | 18.1 → 16.5 | — | 1.42 → 1.23 |",
    "| CE fwd+bwd f32 accurate 16×30000 / 8×30000 | 11.9 → 8.52 | (accurate loop) | 1.03 → 0.78 |",
    "| softmax f64 fast 64×4096 | 22.4 → 22.4 | 2 gathers → 2 permutes per 8 | 2.09 → 1.93 |",
    "",
    "The dispatcher keeps the AVX-512 engine for every shape: measured against the AVX2 "
    "engine (one thread, in cache, minimum of 2000 calls, interleaved), AVX-512 was faster "
    "on every shape tried, short rows included (softmax float32 fast 256×40: 0.98 vs "
    "1.40 ns/elem, 1024×10: 1.54 vs 2.00, 16×1000: 0.85 vs 1.02; accurate 256×40: 1.55 vs "
    "2.74; float64 fast 256×40: 2.31 vs 3.88). The AVX2 columns above show the forced "
    "AVX2 engine; the engine that ran is named in every column header.",
    "",
    "Cross-entropy forward+backward returns a fresh gradient as large as x, so the call "
    "cannot cost less than an allocating copy on the same 2 threads (a read of x and a "
    "write of newly faulted pages, each thread faulting its own half: the CE table's "
    "copy column; NumPy's `x.copy()` runs on one thread); its ratio to torch is bounded "
    "by torch / that copy.",
    "",
    "Rows of 40: on one thread softmax through the transposed short-row kernel is "
    "ahead of torch and log_softmax behind (the one-thread table); at 2 threads "
    "3000000×40 (480 MB each way) is bounded by memory. logsumexp of rows up to 64 "
    "elements now goes through the same transposed kernels (it took the per-row path "
    "with a scalar log1p per row): one thread, kbench, float32 fast 100000×10 "
    "21.5 → 1.16 ns/elem, accurate 23.5 → 1.76, 30000×40 fast 5.96 → 0.78, accurate "
    "8.07 → 1.04, float64 fast 100000×10 31.0 → 2.54.",
    "",
    "Session 3: the transposed kernels take rows of up to 256 elements (64 before), "
    "and float32 cross-entropy rows of up to 256 classes go through a transposed kernel "
    "that reproduces the row path's statistics bit for bit; one thread, accurate "
    "softmax 3936×65 3.5 → 1.3–2.0 ns/elem and 2560×100 2.4–3.5 → 1.3–1.9 (noisy "
    "host), cross-entropy with its gradient at 64×100 31 → 18 µs a call. Rows of 2 to "
    "4 blocks of 32768 (every common vocabulary up to 131072) keep their exponentials "
    "between the passes instead of computing them twice: accurate softmax 8×50257 "
    "out=, 2 threads, 1.50 → 0.65 ns/elem.",
    "",
    "Session 9: the sigmoid-family kernels gathered every vector element by element "
    "through padded buffers, and formed both sigmoid(x) and sigmoid(-x) (two vector "
    "divisions) for every kind. Whole vectors are now loaded and stored as vectors, "
    "sigmoid divides once (the numerator chosen before the division, so each lane's "
    "quotient is the one it selected before), log_sigmoid not at all, and BCE twice "
    "only when the gradient is asked for; the results are bitwise the same on every "
    "ISA (checked on 300,000 values with specials, both modes, both dtypes). One "
    "thread, 256,000 elements, ns/elem: float32 sigmoid 9.8 → 1.8, log_sigmoid "
    "13.8 → 3.9, BCE with its gradient 15.2 → 5.7; float64 accurate (double-word) "
    "sigmoid 12.7 → 3.7, log_sigmoid 22.0 → 11.1, BCE 25.0 → 15.3.",
    "",
    "Session 12: the accurate float32 kernels' float64 exponential reads 2^(j/16) from "
    "two registers by one permute and needs a degree-4 polynomial (10 vector operations "
    "per 8 lanes instead of 11, 2^-37 instead of 2^-34); softmax sums every term "
    "instead of counting the maxima apart (log_softmax, logsumexp and cross-entropy "
    "still need the count); log_softmax's output pass subtracts M + L as one double-word "
    "number; rows of up to 4 KiB run two per task, so that each row's reductions and "
    "finish overlap the other row's work; the pool's workers watch 50 µs for the next "
    "call before they sleep. One thread, kbench, first build of the session against its "
    "last, ns/elem: accurate softmax 256×1000 0.60–0.63 → 0.54–0.58, 512×500 "
    "0.69–0.74 → 0.61–0.65, 30000×40 1.08–1.10 → 0.94–0.97; log_softmax 256×1000 "
    "0.69–0.72 → 0.64–0.68; cross-entropy with its gradient 256×1000 0.68–0.71 → "
    "0.62–0.65; 2 threads, accurate softmax 256×1000 0.333–0.338 → 0.258–0.284, "
    "4×50257 0.53–0.57 → 0.27 (a row per thread instead of blocks as tasks).",
    "",
    "Session 13: outputs of 2 MiB or more per thread are written in one contiguous region "
    "per thread (the last tasks taken from the back of another thread's region), where "
    "tasks of a few dozen KiB went to the threads alternately. A fresh NumPy output is "
    "backed by 2 MiB transparent huge pages, and the kernel zeroes a huge page before it "
    "takes the page table's lock: two threads writing the same 2 MiB at once each zeroed "
    "one and threw one away (a 512 MiB softmax output on 2 threads freed 100,000–130,000 "
    "extra 4 KiB pages during the call; now none). Same process, the two schedules "
    "alternated, 2 threads, median ns/elem: allocating softmax 3000000×40 fast 1.48 → "
    "1.19, accurate 1.59 → 1.27; 4096×32768 fast 1.21 → 0.90, accurate 1.28 → 0.95 "
    "(x.copy() 1.25–1.30); cross-entropy forward+backward 6000×30000 fast 1.34 → 1.00, "
    "accurate 1.40 → 1.02; sigmoid 6000×30000 2.01 → 1.73; accurate softmax into a "
    "preallocated 6000×30000 output 0.70 → 0.57; one row of 100,000,000 (its blocks spread "
    "over the threads) fast 1.98 → 1.41, accurate 2.15 → 1.63.",
    "",
    "Session 14: streamed short-row tasks (large outputs passed in, rows of up to 256 "
    "elements) whose rows are over 128 bytes call their transposed kernel on groups of 16 "
    "or more rows (2.5 KiB of input), prefetch each group's input two groups ahead and "
    "stream each group's output out right after it, where one call per 256-row task "
    "computed everything before streaming it all: the next loads and the drain of the "
    "write-combining buffers now overlap the arithmetic. The staged rows go out with one "
    "512-bit non-temporal store per line on the AVX-512 engines (four 128-bit ones "
    "before). Same process, the two builds alternated, float32 fast out=, 2 threads, median "
    "ns/elem: softmax 3000000×40 0.63–0.65 → 0.54–0.56, log_softmax 0.67–0.69 → "
    "0.56–0.58; 400000×100 softmax 0.59–0.64 → 0.52–0.55, log_softmax 0.60–0.61 → "
    "0.53–0.57. Rows of 10 and 20 elements keep one call per task: in groups they lost "
    "(2000000×20 0.53 → 0.60). Rows taken in pairs (up to 4 KiB) prefetch the next pair "
    "while their second passes run (accurate log_softmax 4096×1000 out= 0.43 → 0.38–0.39, "
    "8192×500 0.47–0.54 → 0.44–0.45). Outputs allocated for the call are no longer "
    "streamed: their pages arrive zeroed in the cache (new pages) or were just freed "
    "there, and non-temporal stores first evict them; and outputs passed in stream from "
    "32 MiB instead of 8 (this machine's last-level cache holds tens of MiB). Same "
    "process, builds alternated, float32, 2 threads, median ns/elem: allocating softmax "
    "4096×32768 fast 0.90–0.92 → 0.80–0.81, accurate 0.93–0.94 → 0.81–0.84; 3000000×40 "
    "accurate 1.10–1.16 → 0.94–0.99; 4096×1000 fast 0.37–0.40 → 0.31–0.32; cross-entropy "
    "forward+backward 6000×30000 fast 0.91–0.94 → 0.80–0.81, accurate 0.97–0.98 → "
    "0.85–0.88; softmax 40000×100 out= fast 0.51–0.53 → 0.43, accurate 0.61–0.65 → "
    "0.50–0.54. Calls under 10^7 elements are now timed in loops of about 5 ms instead "
    "of three single calls after each pause.",
    "Session 15: the transposed short-row kernels took each lane's maximum in one chain "
    "of compares and blends (about 6 cycles a column); four chains (float64 lanes) or two "
    "(float32) now keep the vector ports busy. One thread, kbench, the two builds "
    "alternated, median ns/elem: accurate cross-entropy with its gradient 64×100 "
    "1.13–1.16 → 1.03–1.06, accurate softmax 64×100 0.83–0.85 → 0.75, fast softmax "
    "3000×40 0.69 → 0.66–0.69. The fast float32 exponential evaluates its degree-4 factor "
    "in Estrin's order and, on AVX-512, scales by `vscalefps` (the scaled 1 + s formed by "
    "one FMA) instead of a shift and a product: softmax's sum loop issues 96 vector uops "
    "per 64 elements instead of 100. One thread, in cache, median ns/elem: fast softmax "
    "8×2000 0.40–0.42 → 0.39–0.40, log_softmax 0.42–0.43 → 0.41. The same order in the "
    "accurate mode's float64 exponential was slower (accurate softmax 8×2000 0.47 → "
    "0.48–0.49): that loop is bound by the vector ports, not by its chain's latency.",
    "Session 16: the accurate float32 statistics of log_softmax, logsumexp and "
    "cross-entropy (which count the maxima apart from the rest) compare each 16 floats "
    "once, before widening, and split the mask with one shift, where each float64 half "
    "took its own compare and mask move: 33 vector uops per 16 elements instead of 34, "
    "bitwise the same results. One thread, kbench, the two builds alternated, best of "
    "400 calls, ns/elem: log_softmax 256×1000 0.576–0.580 → 0.563–0.568, cross-entropy "
    "with its gradient 256×1000 0.564–0.578 → 0.545–0.552; in L1 (8×2000, median of "
    "3000) logsumexp 0.397–0.421 → 0.385–0.396. Not counting the maxima at all (every "
    "term in one sum, as softmax does) was 5–9% faster still, but the count is part of "
    "the (max, count, rest) statistics that the transposed kernels, the vocabulary-"
    "parallel parts and the mergeable state reproduce bit for bit.",
    "Session 17: every parallel loop of the C core runs in contiguous regions, one per "
    "thread, the caller owning the first; a thread takes from the back of another's "
    "region only once its own is done. Before, only outputs of 2 MiB or more per thread "
    "were split so, and smaller calls took their tasks off one shared counter: from one "
    "call to the next a row went to whichever core asked first, so its input and output "
    "lines sat in the other core's L2 from the call before. kbench, 2 threads, the two "
    "builds alternated, median of 1500 calls, ns/elem (float32 accurate): softmax "
    "256×1000 0.282–0.292 → 0.248–0.249, log_softmax 256×1000 0.332–0.337 → "
    "0.296–0.303, softmax 8×50257 0.338–0.346 → 0.273–0.283, log_softmax 8×50257 "
    "0.297–0.338 → 0.261–0.264, cross-entropy with its gradient 256×1000 0.310–0.314 → "
    "0.272–0.273, softmax 2000×100 0.434–0.457 → 0.374–0.376; on torch's OpenMP team, "
    "from Python, softmax 256×1000 into a preallocated output 78 → 66 µs a call. The "
    "best calls barely moved (0.249 → 0.243 at 256×1000): what went is the spread. The "
    "accurate float32 exponential also scales its table entry by 2^k while the "
    "polynomial is formed, one step off its dependency chain (bitwise the same; about "
    "1% on one thread). Accurate float32 log_softmax rows of up to 4096 elements keep "
    "their entries widened to float64 from the statistics pass, and the output pass "
    "subtracts from those instead of widening the floats again: 43 vector uops per 16 "
    "elements instead of 46, and the same bits on every instruction set (checked "
    "against the build before on 77 data sets: ties, a dominant entry, -inf and NaN "
    "entries, masks, a temperature, 1 and 2 threads). Longer rows read the floats again, "
    "which costs less than the kept entries' traffic once they leave the L1 cache. "
    "kbench, the two builds alternated, median ns/elem: 128×1000 one thread 0.553 → "
    "0.483–0.497, 256×1000 two threads 0.279–0.284 → 0.249–0.257, 4096×1000 two "
    "threads 0.342–0.352 → 0.316–0.334, 64×2000 one thread 0.522 → 0.475; 32×4000 "
    "about even. Last, the statistics pass of every engine fetches the block's output "
    "lines for writing as it goes (one software prefetch per 64 bytes of output), so "
    "that the output pass, which computes little per element, no longer waits on each "
    "line's fetch (bitwise the same). kbench, builds alternated, median ns/elem, "
    "outputs passed in: 4096×1000 on 2 threads accurate softmax 0.312–0.313 → "
    "0.280–0.287, fast softmax 0.276–0.279 → 0.239–0.245, fast log_softmax 0.279–0.281 → "
    "0.234–0.235; one thread accurate softmax 4096×1000 0.607–0.619 → 0.547–0.573, "
    "256×1000 0.494–0.500 → 0.479–0.490; 2 threads 8×50257 0.248–0.258 → 0.246–0.250. "
    "The same loops also fetch the input of the rows the thread takes next (rows of up "
    "to 1024 float32 elements, taken two at a time), a line for each line they read, "
    "where the next pair's rows were fetched all at once before each output pass and "
    "held up the loads of that pass: 4096×1000 on 2 threads, accurate softmax 0.273 → "
    "0.239, accurate log_softmax 0.300 → 0.258, fast softmax 0.243 → 0.197, accurate "
    "cross-entropy with its gradient 0.310 → 0.270; 8192×500 fast softmax 0.248 → "
    "0.234.",
    "Session 18: the fast float32 short-row kernel (rows of 8 to 256 elements, 16 rows "
    "a vector) transposed each 16×8 tile as two 8×8 blocks in 256-bit halves, then "
    "joined or split the halves: 56 shuffles per 128 floats, each way, on the one port "
    "that executes shuffles (1024×40 fast softmax, one thread: about 39% of its time, "
    "0.875 shuffles per element at one a cycle). Rows l and l + 8 now share one "
    "512-bit vector (one 256-bit load and one insert), and both blocks are transposed "
    "together: 24 shuffles per 128 floats, the last step one two-source permute. "
    "Bitwise the same. kbench, the two builds alternated, median ns/elem: one thread "
    "1024×40 softmax 0.577 → 0.487–0.493, log_softmax 0.632 → 0.539–0.562, 1024×10 "
    "softmax 0.91–0.94 → 0.71–0.73, 512×100 0.55–0.56 → 0.45–0.46; 2 threads "
    "3000000×40 softmax 0.500–0.506 → 0.466–0.477, 1000000×10 0.584–0.597 → "
    "0.484–0.504. Rows taken in pairs now finish both rows (log1p, a division) before "
    "either output pass, so that the two scalar chains overlap instead of each holding "
    "up its row's output pass: accurate log_softmax 512×500 one thread 0.584 → 0.555, "
    "2 threads 0.293 → 0.277; fast softmax 512×500 0.43–0.44 → 0.41. Last, the "
    "statistics loops of the accurate and fast float32 modes are software-pipelined: "
    "each step reduces the next vectors' exponential arguments (loads, widening, the "
    "table read and the scale) before it finishes the vectors reduced in the step "
    "before (polynomial, product, sums), so the core finds independent work at the "
    "front of its window instead of chains of about 40 cycles waiting in its "
    "scheduler; the same operations in the same order, so the same bits. One thread, "
    "128×1000, median ns/elem: accurate logsumexp 0.402 → 0.381, accurate softmax "
    "0.439–0.456 → 0.432–0.439, fast softmax 0.356–0.373 → 0.339–0.341, fast "
    "logsumexp 0.328–0.343 → 0.319–0.329; accurate cross-entropy with its gradient "
    "256×1000 0.493–0.503 → 0.479–0.482. Pipelining the fast loop a whole step (four "
    "vectors) ahead spilled its sums to the stack and gained nothing; half a step "
    "(two vectors) is what the registers hold. The short-row kernels' two-column loop "
    "pipelined the same way was 6% slower (1024×40 softmax 0.49 → 0.53) and was left "
    "as it was. Each change was checked bitwise against the build before it: 119 data "
    "sets (lengths 7 to 40000; ties, a dominant entry, -inf and NaN entries, values "
    "near ±1e30, masks, a temperature; fast and accurate; 1 and 2 threads) on the "
    "AVX-512, AVX2 and SSE2 engines, and the same in float64. The accurate float32 "
    "short-row kernels (8 rows a vector of float64 lanes) moved each 8×8 block by "
    "widening its rows and transposing doubles: 64 shuffle-port uops per 128 elements, "
    "each way. They now take 16 columns at a time as floats, one 64-byte row at a time: "
    "the two 8×8 blocks in each vector's halves are transposed together, then each "
    "result's halves are widened (48 uops per 128 elements each way; the same values). "
    "kbench, one thread, median ns/elem: softmax 1024×40 0.745 → 0.704, log_softmax "
    "0.990 → 0.947, cross-entropy with its gradient 1024×100 1.02 → 0.96–0.98; rows of "
    "fewer than 16 elements are unchanged.",
    "",
    "Session 20, on the AMD Zen 3 (AVX2 engine): callgrind counts of whole calls, "
    "instructions per element, 64×1000 float32: fast softmax 7.40, fast log_softmax "
    "7.09, accurate softmax 10.36, accurate log_softmax 12.46 (the maxima counted "
    "apart, the widened entries kept and read back, the output formed in float64). "
    "The AVX2 engine's float64 exponential of the float64 fast mode and of label "
    "smoothing reads 2^(j/256) by two gathers per four lanes; a version without "
    "gathers (vexpd_hi's degree-14 polynomial) measured the same here (float64 fast "
    "softmax 256×1000, one thread, best of 300 calls: 3.19–3.21 ns/elem either way) "
    "and was not kept.",
    "",
    "Session 23, the same machine: that table is now read by eight scalar loads per "
    "four lanes instead of two vgatherqpd (the same entries, so the same bits); a loop "
    "of the lookup alone took 1.12 ns/elem with the gathers and 0.60 with the loads "
    "(one thread). kbench, the two builds alternated, medians: label-smoothed "
    "cross-entropy with its gradient 256×1000, 2 threads, 2.24 → 1.96 ns/elem; float64 "
    "fast softmax 4096×1000, 2 threads, 2.03 → 1.73; float64 fast log_softmax 256×1000, "
    "one thread, 3.88 → 3.44. Tried and not kept: the degree-13 polynomial again, "
    "with a double-word reduction so that it is as accurate as the table (0.74 ulp "
    "against 0.52 at worst in 2·10^6 arguments): 12–14% slower than the gathers; "
    "Estrin's scheme for the accurate float32 kernels' degree-7 polynomial (a chain of "
    "5 operations instead of 8, the same count): 1–3%, within this machine's noise, "
    "and it would change bits; the statistics loop without its software pipelining "
    "(it spills with 16 registers, 70 instructions per 8 floats): 3–10% slower.",
    "",
    "Session 25, the same machine: the float32 sigmoid family. sigmoid takes no "
    "special-case selects any more: with z = exp(max(-|x|, -700)), ±inf give 1/(1 + z) "
    "= 1 and z/(1 + z), which rounds to +0, and a NaN passes through the maximum, the "
    "exponential and the quotient; it also has its own loop, where every vector tested "
    "for targets, weights and the kind. log_sigmoid and BCE skip the selects for the "
    "ends on vectors whose |x| are all finite and at most 2^1000, and BCE without "
    "weights fixes the kind, the weights and the gradient at compile time. "
    "log1p(exp(-|x|)) is now 2 atanh(t) with t = a/(2 + a) ≤ 1/3 and a degree-6 "
    "polynomial in t² (2^-43 relative), where it was reduced to [√½, √2) with a second "
    "division (2^-39). Callgrind, 256×1000, instructions per element: sigmoid 15.8 → "
    "7.0, BCE 33.8 → 17.6, BCE with its gradient 39.5 → 20.9, float64 fast sigmoid 18.3 "
    "→ 9.5. kbench, one thread, the builds alternated, in a slow spell of the host, "
    "best (median) ns/elem: sigmoid 1.87 (2.80) → 1.34 (1.38), BCE with its gradient "
    "7.15 (8.45) → 3.60 (3.84). sigmoid's and BCE's bits are unchanged (88 outputs with "
    "specials on the AVX2, SSE2 and plain C engines, and 2,000,000 random logits); "
    "log_sigmoid differs in 2 of those 2,000,000 float32 outputs, both within 0.5004 "
    "ulp of the exact value, as before. A reciprocal estimate and two Newton steps "
    "instead of the division (as on AVX-512) was 40% slower on this AVX2 core and was "
    "not kept. "
    "BCE with reduction='none' now has the core round each float64 loss to the data's "
    "type as it stores it (kinds 4 and 5 of skit_sigmoid, the same bits), where the "
    "front ends converted a float64 array of losses afterwards: 2 threads, float32, "
    "4,096,000 elements 3.60 → 2.93 ns/elem, 256,000 elements 5.02 → 4.33 (medians of 9 "
    "alternated rounds).",
    "",
    "Session 28, on AMD Zen 4 (family 25 model 17; AVX-512, 512-bit operations "
    "double-pumped, 1 MiB L2 per core): the first machine of these sessions where the "
    "AVX-512 engine and torch's AVX-512 kernels run on an AMD core. Its pipes were "
    "measured with `tools/pipeclasses.c` (the port-floor section): 512-bit FMAs, "
    "products, compares into masks and two-source permutes share the two FMA pipes; "
    "adds, subtractions, maxima, conversions and shifts the two adders, where "
    "`vscalefps`/`vscalefpd` take two FMA times each; the two classes run in parallel. "
    "So the Intel counts do not give a floor here (at the start of this session they "
    "put the floor of fast softmax 64×4096 at 0.51 ns/elem on one thread, above the "
    "0.41 the kernel took): the port-floor table now counts this core's pipes. The fast float32 loop is bound by the adders there, and `vscalefps` "
    "was the costliest of them: the fast exponential now scales by one fused "
    "multiply-add, s c + c with c = 2^(k + 64) from the rounding constant's low bits "
    "(one shift on the adders; the same bits on every engine: 4828 outputs on AVX-512, "
    "AVX2 and SSE2). kbench, one thread, builds alternated, best ns/elem: fast "
    "logsumexp 128×1000 0.379–0.380 → 0.364–0.365, fast softmax 2×8000 0.389–0.432 → "
    "0.371–0.405. Tried and not kept: the same for the accurate float64 exponential "
    "(a table of 2^(j/16) less j·2^48, so that a shift and an integer add replace "
    "`vscalefpd`; the same bits): 1.5% slower on log_softmax 128×1000, that loop being "
    "bound by the FMA pipes and its chains rather than the adders; the reduction's "
    "k = t − magic moved to the FMA pipes (t·1 − magic): no change. Short rows: the "
    "accurate float32 log_softmax of the transposed kernels forms x − m − L as "
    "(x − C) − c with C + c = m + L, as the row path does (two subtractions per element "
    "where an exact x − m and a select took nine); the same bits on those 4828 outputs; "
    "4096×40 one thread 1.208–1.214 → 1.064–1.065, 1024×100 1.127–1.138 → 0.949–1.083. "
    "Both paths now take a zero C as −0, so that a row whose maximum −0 stands alone "
    "gives +0 (x − x), as torch does; the row path gave −0.",
    "",
    "Session 29, the same machine: where the time of a row of 1000 goes, one thread, "
    "kbench. Time per element against row length (500 to 64000, the same total) fits a "
    "fixed cost per row: about 73 ns for accurate logsumexp, 48 ns for fast softmax, "
    "69 ns for fast logsumexp (at 1000 elements 10–16% of the call). Of accurate "
    "logsumexp's, the row's finish (the double-word combine, log1p, the checks) is "
    "about 30 ns: a build that skipped it ran 512×500 in 0.48 ns/elem against 0.54. The "
    "row-maximum pass before the statistics pass costs about 0.045 ns/elem at 256×1000 "
    "(fast softmax 0.405 → 0.361, accurate softmax 0.552 → 0.500 in a build that took a "
    "constant for it, whose results were wrong). Tried and not kept: each pair of rows' "
    "output pass also read the next pair's rows and found their maxima (the same bits: a "
    "zero maximum fell back to the pass), so that the statistics pass needed no pass of "
    "its own: 99% of the rows took it, and 256×1000 and 64×1000, one thread and two, "
    "fast and accurate, softmax and log_softmax, came out within noise of the build "
    "before. The maximum pass is where the row comes from the L2 cache into L1, and that "
    "traffic moved into the output pass instead of going away. Removing two of the "
    "accurate exponential's four polynomial FMAs (a timing build with wrong results) "
    "took accurate logsumexp 256×1000 from 0.468 to 0.419 ns/elem: 70% of those FMAs' "
    "time on the FMA pipes, so that loop is bound by those pipes in part and by its "
    "chains and the row's fixed costs in the rest. The fast float32 log_softmax of a "
    "lone −0 is now +0 as well: its row path took a zero C as −0 like the accurate "
    "ones, but the engines' `splatf`/`splatd` formed a vector as 0 + a, which turns −0 "
    "into +0; they now form a − 0 (the same bits on the 4828 outputs of session 28's "
    "check).",
    "",
    "Session 30, the same machine: the streamed short rows (outputs of 32 MiB or more "
    "passed in) prefetched each group's input two groups ahead with a burst of "
    "`prefetcht0`, one per line, 40 for a group of 16 rows of 40 floats. On this core "
    "those hold the L1 cache's miss buffers, and the kernel's own loads wait behind "
    "them: measured apart with builds that left out one piece each (kbench, 3000000×40 "
    "fast softmax, 2 threads), the whole call took 0.51 ns/elem, the copy through the "
    "stage without the arithmetic 0.25, the arithmetic and the reads without the "
    "stores 0.45, against 0.30–0.34 for the arithmetic in cache: the memory traffic "
    "added to the arithmetic instead of overlapping it. The prefetches now go into the "
    "L2 cache (`prefetcht2`; `prefetcht1` measured the same, `prefetchnta` as "
    "`prefetcht0`, a distance of one group worse, four the same). kbench, 2 threads, "
    "the builds alternated, best ns/elem: float32 3000000×40 fast softmax 0.50–0.54 → "
    "0.38–0.40, fast log_softmax 0.53–0.55 → 0.40–0.42, accurate softmax 0.63–0.64 → "
    "0.53, accurate log_softmax 0.71–0.72 → 0.60–0.61; 400000×100 fast softmax "
    "0.56–0.57 → 0.41; float64 3000000×40 fast softmax 1.37 → 1.06. With the "
    "prefetches in L2, rows over one cache line go in groups (over two before: rows of "
    "20 floats lost in groups then, 0.53 → 0.60): 2000000×20 fast softmax 0.58–0.59 → "
    "0.44–0.46, accurate 0.68 → 0.65–0.67; rows of 10 floats the same either way. Only "
    "prefetches changed: the same bits. The row paths' prefetches (one line for each "
    "line read, never a burst) into L2 instead: no gain at 256×1000 and 4096×32768 "
    "(six alternated rounds), and 4096×1000 accurate softmax slower (best 0.29–0.33 → "
    "0.32–0.37 ns/elem); not kept. Also tried and not kept: the accurate float32 "
    "kernels on rows of up to 40 floats not streamed into an output passed in. kbench, "
    "back-to-back calls, five alternated rounds, best ns/elem, every round lower: "
    "3000000×40 softmax 0.55–0.64 → 0.48–0.50, log_softmax 0.64–0.66 → 0.59–0.60, "
    "2000000×20 softmax 0.65–0.70 → 0.58–0.60 (rows of 64 and 100 faster streamed). "
    "But single calls after a pause, as this table times them, read higher and wider "
    "medians without streaming: from Python, 7 rounds, 3000000×40 accurate softmax "
    "0.584 and 0.685 (two runs) against 0.524 streamed, log_softmax 0.713 and 0.972 "
    "against 0.626 (the best calls 0.48 against 0.52), and a run of this section read "
    "accurate softmax out= 0.863 ns/elem without streaming, 0.649 with.",
    "Session 31, the same machine: outputs of 32 MiB or more (softmax, log_softmax, "
    "gradients) are allocated through a NumPy memory handler (NEP 49, "
    "`softmaxkit._outcache`) that keeps freed outputs' blocks for 5 s (at most 8 "
    "blocks, an eighth of physical memory up to 4 GiB) and hands one to the next output "
    "of about its size; a reused block is resident, so the core writes it as an output "
    "passed in (streamed). glibc maps every block that large afresh and unmaps it on "
    "free, so each allocating call faulted in and zeroed its whole output, and on this "
    "virtual machine an allocation soon after a large free paid the host's reclaim "
    "too. Against the run before (session 30), float32, 2 threads, median ns/elem: "
    "3000000×40 fast softmax allocating 4.715 → 0.433 (into an output passed in "
    "0.431), fast log_softmax 4.700 → 0.435, accurate softmax 0.837 → 0.631; "
    "cross-entropy forward+backward 8192×32000 fast 1.035 → 0.440 (4.3× → 11.6× "
    "torch), accurate 0.900 → 0.477. The arrays own their data as NumPy's do; blocks "
    "not reused in time go back to the system from a background thread. Smaller "
    "outputs stay NumPy's: glibc keeps those in its heap between calls already. The "
    "`x.copy()` column now reads the host's reclaim more often (4096×32768 float64 "
    "29.4 ns/elem, 1.6 before): its fresh gigabyte comes from pages that torch's call "
    "freed seconds before, which this machine has reported to its host by then, where "
    "it used to get the pages that softmaxkit's allocating call had just freed. The "
    "cost moves, it is not added: float64 softmax 4096×32768 in one process, 5 rounds "
    "of fast, accurate, x.copy() and torch in turn, median ns/elem with the cache on "
    "1.52, 2.05, 7.59, 3.99 (x.copy() 1.66–37.3), off 2.49, 3.03, 1.80, 4.51 (fast "
    "1.68–10.05).",
    "Session 32: this section ran on an Intel Xeon again (the virtual machine reports "
    "GenuineIntel family 6 model 167 with `avx512_fp16` and AMX: the Sapphire Rapids "
    "class, 48 KiB of L1d and 2 MiB of L2 per core), where sessions 28 to 31 ran on "
    "AMD Zen 4; the port floors count the Intel ports (p0 and p5) again. No kernel "
    "changed. Against session 31's run on Zen 4 (commit 51e8400), a 2-thread copy of the "
    "same bytes takes 2–3 times as long here (this session's first run: 4096×32768 "
    "float32 0.84 against 0.27 ns/elem, 3000000×40 0.80 against 0.27), so the long and "
    "the short rows are bound by memory for torch as for softmaxkit, and the ratios at "
    "those shapes are lower than on Zen 4. At 256×1000 the kernels reach "
    "about four fifths of their port floor on one thread (kbench, float32, best ns/elem: "
    "accurate softmax 0.676–0.689 against 37 × 0.2406 / 16 = 0.556, fast 0.553 against "
    "0.436); on 2 threads the medians lie 20–25% above the best calls, as two threads "
    "of pure FMA chains here run only 1.69 times as fast as one. The host's load moves "
    "by the minute: from Python, one thread, the same 256×1000 accurate softmax read "
    "0.73–0.76 ns/elem in some processes and 1.0–1.2 in others started within the same "
    "minutes.",
    "Session 37, not this section's machine: the tables above are still session 32's, "
    "because sessions 36 and 37 ran on an AMD EPYC with AVX2 only (no AVX-512, so "
    "nothing to set against torch's AVX-512 kernels). Two changes there, neither in the "
    "AVX-512 engine's arithmetic: (1) the accurate float32 exponential of the AVX2, SSE2 "
    "and plain C engines evaluates its degree-7 polynomial in Estrin's order (4 "
    "operations deep after r² instead of 8, the same count). Session 23 tried this on "
    "Zen 3 and did not keep it (1–3%, within noise, and it changes bits); on this host "
    "it is 3–7%, and the bits it changes stay within the accurate bound (0.50 ulp on "
    "every float32 set of ACCURACY.md, regenerated there). (2) The transposed kernels "
    "of rows up to 256 entries (accurate softmax, log_softmax, logsumexp and "
    "cross-entropy) reduce the next column's argument before finishing this one's "
    "exponential, as the row path does: the same operations in the same order, the same "
    "bits; the AVX-512 build compiles the same loops, not measured. kbench, one thread, "
    "medians of five alternated runs of the two builds, ns/elem: accurate softmax "
    "256×1000 2.54 → 2.43, log_softmax 2.81 → 2.72, logsumexp 8×50257 2.19 → 2.07, "
    "cross-entropy with its gradient 4096×1000 3.20 → 2.99, 64×100 4.64 → 4.15, "
    "256×160 4.34 → 3.76; softmax 64×100 3.96 → 3.52, 256×256 3.91 → 3.45, log_softmax "
    "64×100 4.29 → 4.01. Torch's own kernels there, one thread, allocating: softmax "
    "256×1000 1.98 ns/elem, log_softmax 2.10.",
]


# Pause before each implementation's turn in a round: torch's OpenMP workers keep
# spinning for milliseconds after its last call and would take the 2 cores from
# whatever runs next (and a just-finished implementation's threads from torch).
SETTLE_S = 0.05
# Calls under 10**7 elements are timed in loops of about this long (see _median_ns).
LOOP_S = 0.005


def _median_ns(fns: dict[str, Callable[[], Any]], reps: int, elems: int) -> dict[str, float]:
    """Median ns/elem: ``reps`` rounds, in each every implementation in turn after a
    pause; calls under 10**7 elements get one untimed call first (which wakes the
    thread pool) and are then timed as three loops of about ``LOOP_S`` each (the mean
    call of each loop is one sample), as a loop of one op runs them: single calls of a
    few hundred microseconds, timed one by one right after the pause, read the
    machine's wake-up rather than the kernel (session 14, the same build: softmax
    256×1000 float32 fast out=, 0.447 ns/elem as single calls, 0.336 in loops).
    The order is shuffled in every round (seeded): on this virtual machine the first large
    allocation after torch's allocating call can take a second of system time, whichever
    library makes it, and a fixed order would always hand that cost to the same one.
    Each implementation's best round is returned too, under ``"<name>|best"``."""
    loops: dict[str, int] = {}
    for k, f in fns.items():  # warm-up: first-touch page faults, thread pools, caches
        f()
        t0 = time.perf_counter()
        f()
        loops[k] = max(1, min(1000, round(LOOP_S / max(time.perf_counter() - t0, 1e-7))))
    small = elems < 10_000_000  # large calls take >= 10 ms: a wake-up is lost in them
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    shuffle = random.Random(elems).shuffle
    for _ in range(reps):
        shuffle(order)
        for k in order:
            f = fns[k]
            time.sleep(SETTLE_S)
            if small:
                f()
            calls = loops[k] if small else 1
            for _ in range(3 if small else 1):
                t0 = time.perf_counter()
                for _ in range(calls):
                    f()
                times[k].append((time.perf_counter() - t0) / calls)
    res = {k: statistics.median(v) * 1e9 / elems for k, v in times.items()}
    res.update({f"{k}|best": min(v) * 1e9 / elems for k, v in times.items()})  # for the notes
    return res


def _min_ns(fns: dict[str, Callable[[], Any]], reps: int, elems: int) -> dict[str, float]:
    for f in fns.values():
        f()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(reps):
        for k, f in fns.items():
            f()
            t0 = time.perf_counter()
            f()
            best[k] = min(best[k], time.perf_counter() - t0)
    return {k: v * 1e9 / elems for k, v in best.items()}


def _with_isa(ck: Any, isa: str, f: Callable[[], Any]) -> Callable[[], Any]:
    def call() -> Any:
        saved = ck.isa()
        ck.set_isa(isa)
        try:
            return f()
        finally:
            ck.set_isa(saved)

    return call


def _isas(ck: Any) -> list[str]:
    """The dispatcher's pick first, then AVX2 if this CPU has it and it is another."""
    auto = ck.isa()
    out = [auto]
    saved = auto
    try:
        ck.set_isa("avx2")
        if auto != "avx2":
            out.append("avx2")
    except ValueError:
        pass
    finally:
        ck.set_isa(saved)
    return out


def normalizer_cases(
    op: str, shape: tuple[int, int], dtype: str, reps: int, isas: list[str], pf: Any = None
) -> dict[str, float]:
    import torch

    import softmaxkit as sk
    from softmaxkit import _dispatch

    ck = _dispatch._ckernels
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape, dtype=np.float32) * 3).astype(dtype)
    out = np.empty_like(x)
    xt, ot = torch.from_numpy(x), torch.from_numpy(out)
    fn = sk.softmax if op == "softmax" else sk.log_softmax
    prim = torch._softmax if op == "softmax" else torch._log_softmax
    public = torch.softmax if op == "softmax" else torch.log_softmax
    fns: dict[str, Callable[[], Any]] = {
        "torch out=": lambda: prim(xt, -1, False, out=ot),
        "copy 2 threads": lambda: ot.copy_(xt),
    }
    for isa in isas:
        for prec in ("fast", "accurate"):
            call = functools.partial(fn, x, precision=prec, out=out, threads=THREADS)
            fns[f"skt {prec} out= [{isa}]"] = _with_isa(ck, isa, call) if isa != isas[0] else call
    fns["torch"] = lambda: public(xt, -1)
    fns["skt fast"] = lambda: fn(x, precision="fast", threads=THREADS)
    fns["skt accurate"] = lambda: fn(x, precision="accurate", threads=THREADS)
    fns["x.copy()"] = lambda: x.copy()
    if pf is not None and pf.available:
        fns["ports"] = pf.call(THREADS)
    res = _median_ns(fns, reps, x.size)
    if "ports" in res:  # ns per vector uop, the threads together
        res["ports"] = pf.ns_per_uop(res["ports"] * x.size * 1e-9)
    return res


def lse_cases(shape: tuple[int, int], dtype: str, reps: int, isas: list[str]) -> dict[str, float]:
    import torch

    import softmaxkit as sk
    from softmaxkit import _dispatch

    ck = _dispatch._ckernels
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape, dtype=np.float32) * 3).astype(dtype)
    xt = torch.from_numpy(x)
    fns: dict[str, Callable[[], Any]] = {"torch": lambda: torch.logsumexp(xt, -1)}
    for isa in isas:
        for prec in ("fast", "accurate"):
            call = functools.partial(sk.logsumexp, x, precision=prec, threads=THREADS)
            fns[f"skt {prec} [{isa}]"] = _with_isa(ck, isa, call) if isa != isas[0] else call
    res = _median_ns(fns, reps, x.size)
    return res


def ce_cases(shape: tuple[int, int], reps: int) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    import softmaxkit as sk

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32) * 2
    t = rng.integers(0, shape[1], size=shape[0])
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)

    def torch_ce() -> Any:
        xg = xt.detach().requires_grad_(True)
        F.cross_entropy(xg, tt).backward()
        return xg.grad

    fns: dict[str, Callable[[], Any]] = {"torch": torch_ce}
    for prec in ("fast", "accurate"):
        fns[f"skt {prec}"] = functools.partial(
            sk.cross_entropy, x, t, precision=prec, return_grad=True, threads=THREADS
        )
    fns["x.copy()"] = lambda: x.copy()
    fns["alloc copy"] = lambda: alloc_copy(x, THREADS)
    res = _median_ns(fns, reps, x.size)
    return res


def alloc_copy(x: np.ndarray, threads: int) -> np.ndarray:
    """A copy of ``x`` into a fresh array, ``threads`` threads each copying (and so
    faulting in) its own contiguous part: the least a call that returns a fresh
    array as large as ``x`` can cost on that many threads."""
    out = np.empty_like(x)
    src, dst = x.reshape(-1), out.reshape(-1)
    cuts = [x.size * k // threads for k in range(threads + 1)]
    helpers = [
        threading.Thread(target=np.copyto, args=(dst[a:b], src[a:b]))
        for a, b in itertools.pairwise(cuts[1:])
    ]
    for h in helpers:
        h.start()
    np.copyto(dst[: cuts[1]], src[: cuts[1]])
    for h in helpers:
        h.join()
    return out


def sigmoid_cases(shape: tuple[int, int], reps: int) -> dict[str, float]:
    """The sigmoid family as users call it (allocating), float32, against torch."""
    import torch
    import torch.nn.functional as F

    import softmaxkit as sk

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32) * 4
    y = (rng.random(shape) < 0.5).astype(np.float32)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    xg = xt.clone().requires_grad_()

    def torch_bce_step() -> Any:
        xg.grad = None
        F.binary_cross_entropy_with_logits(xg, yt).backward()

    fns: dict[str, Callable[[], Any]] = {
        "torch sigmoid": lambda: torch.sigmoid(xt),
        "skt sigmoid": lambda: sk.sigmoid(x, threads=THREADS),
        "torch log_sigmoid": lambda: F.logsigmoid(xt),
        "skt log_sigmoid": lambda: sk.log_sigmoid(x, threads=THREADS),
        "torch BCE": lambda: F.binary_cross_entropy_with_logits(xt, yt, reduction="none"),
        "skt BCE": lambda: sk.binary_cross_entropy_with_logits(
            x, y, reduction="none", threads=THREADS
        ),
        "torch BCE fwd+bwd": torch_bce_step,
        "skt BCE fwd+bwd": lambda: sk.binary_cross_entropy_with_logits(
            x, y, return_grad=True, threads=THREADS
        ),
        "x.copy()": lambda: x.copy(),
    }
    return _median_ns(fns, reps, x.size)


def _floor_one(
    op: str, shape: tuple[int, int], dtype: str, reps: int, pf: Any = None
) -> dict[str, float]:
    import torch

    import softmaxkit as sk

    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape, dtype=np.float32) * 3).astype(dtype)
    out = np.empty_like(x)
    xt, ot = torch.from_numpy(x), torch.from_numpy(out)
    prim = torch._softmax if op == "softmax" else torch._log_softmax
    fn = sk.softmax if op == "softmax" else sk.log_softmax
    fns: dict[str, Callable[[], Any]] = {"torch": lambda: prim(xt, -1, False, out=ot)}
    for prec in ("fast", "accurate"):
        fns[prec] = functools.partial(fn, x, precision=prec, out=out, threads=1)
    res = _min_ns(fns, reps, x.size)
    if pf is not None and pf.available:  # fewer rounds: each call takes milliseconds
        res["ports"] = pf.ns_per_uop(_min_ns({"p": pf.call(1)}, 5, 1)["p"] * 1e-9)
    return res


FLOOR_CASES = (
    ("softmax", (256, 1000), "float32"),
    ("softmax", (64, 4096), "float32"),
    ("softmax", (8192, 40), "float32"),
    ("softmax", (32768, 10), "float32"),
    ("log_softmax", (256, 1000), "float32"),
    ("log_softmax", (8192, 40), "float32"),
    ("softmax", (64, 4096), "float64"),
    ("softmax", (8192, 40), "float64"),
)


def compute_floor(
    reps: int, pf: Any = None
) -> list[tuple[str, str, str, float, float, float, float | None]]:
    """ns/elem on one thread in L2 (torch's team set to one thread for the whole
    section): torch out=, skt fast out=, skt accurate out=, and this machine's time
    per vector uop on one thread, measured between them (None without the
    calibration); and the fixed cost of one call (a 1x16 softmax), in
    microseconds, last."""
    import torch

    import softmaxkit as sk

    rows = []
    torch.set_num_threads(1)
    try:
        for op, shape, dtype in FLOOR_CASES:
            r = _floor_one(op, shape, dtype, reps, pf)
            rows.append(
                (op, f"{shape[0]}×{shape[1]}", dtype, r["torch"], r["fast"], r["accurate"],
                 r.get("ports"))
            )  # fmt: skip
        x = np.zeros((1, 16), np.float32)
        out = np.empty_like(x)
        xt, ot = torch.from_numpy(x), torch.from_numpy(out)
        fixed = _min_ns(
            {
                "torch": lambda: torch._softmax(xt, -1, False, out=ot),
                "fast": lambda: sk.softmax(x, precision="fast", out=out, threads=1),
                "accurate": lambda: sk.softmax(x, precision="accurate", out=out, threads=1),
            },
            reps,
            1000,
        )
        rows.append(
            ("call", "1×16", "float32", fixed["torch"], fixed["fast"], fixed["accurate"], None)
        )
    finally:
        torch.set_num_threads(THREADS)
    return rows


def _f(v: float) -> str:
    return f"{v:.3f}"


def _reclaim_note() -> str:
    """A sentence when the kernel's DAMON monitor pages memory out (it makes the costs of
    fresh gigabyte outputs erratic: allocating columns and x.copy())."""
    base = Path("/sys/kernel/mm/damon/admin/kdamonds/0")
    try:
        on = (base / "state").read_text().strip() == "on"
        actions = {p.read_text().strip() for p in base.glob("contexts/*/schemes/*/action")}
    except OSError:
        return ""
    if not on or "pageout" not in actions:
        return ""
    return (
        " This virtual machine's kernel runs DAMON with a `pageout` scheme (kdamond reclaims "
        "memory it sees as cold), so the cost of faulting in fresh outputs of hundreds of "
        "megabytes varies from round to round: an allocating column or `x.copy()` may show "
        "an outlier several times what the same call takes alone (session 11: 3000000×40 "
        "fast allocating took 15.2 ns/elem in one run and 1.4–1.6 alone; its `x.copy()` "
        "13.7 in another)."
    )


def _cpu_note(isas: list[str]) -> str:
    """What this CPU offers the engines, read from /proc/cpuinfo."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"The engine that ran: `{isas[0]}`."
    first = info.split("\n\n")[0]
    fields = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in first.splitlines())}
    flags = set(fields.get("flags", "").split())
    ext = sorted(f for f in flags if f.startswith("avx512"))
    who = (
        f"{fields.get('vendor_id', '?')} family {fields.get('cpu family', '?')} model "
        f"{fields.get('model', '?')}"
    )
    if ext:
        return (
            f"This CPU ({who}) reports {', '.join(f'`{f}`' for f in ext)}; the engine that "
            f"ran is `{isas[0]}`."
        )
    zen3 = fields.get("vendor_id") == "AuthenticAMD" and fields.get("cpu family") == "25"
    return (
        f"This CPU ({who}"
        + (", AMD Zen 3" if zen3 and fields.get("model") in {"1", "33", "80"} else "")
        + f") has no AVX-512: the dispatcher runs the `{isas[0]}` engine, torch its AVX2 "
        "kernels, and the AVX-512 columns and counts of earlier runs cannot be measured "
        "here. "
        + (
            "The port-floor section counts the AVX2 engine's uops on this core's pipes "
            "(session 22), and the one-thread table gives each kernel's compute time."
            if zen3
            else "No uop counts exist for this CPU, so no port floor is set against this "
            "run's misses; the one-thread table gives each kernel's compute time instead."
        )
    )


def _best_rounds(r: dict[str, float], key: str) -> str:
    """The best round of an allocating column beside torch's and x.copy()'s best."""
    return (
        f" Best of the rounds: {r[key + '|best']:.3f} (torch {r['torch|best']:.3f}, x.copy() "
        f"{r['x.copy()|best']:.3f})."
    )


def _reporting_note() -> str:
    """A sentence when this (virtual) machine reports freed memory to its host at once."""
    base = Path("/sys/module/page_reporting/parameters")
    try:
        order = int((base / "page_reporting_order").read_text())
        delay = int((base / "min_free_ms").read_text())
        kib = int((base / "reported_kib").read_text())
    except (OSError, ValueError):
        return ""
    if kib <= 0:
        return ""
    return (
        f" This virtual machine reports freed memory to its host (free page reporting, "
        f"blocks of 2^{order} pages, once free for {delay} ms; {kib / 2**20:.0f} GiB so far "
        "since boot), and the host takes those pages back: the next allocation that reuses "
        "them faults on the host too, up to a second of system time for 480 MB. So the "
        "allocating columns and `x.copy()` move from round to round with what the call "
        "before freed (session 13, 3000000×40 float32 softmax: 152 MiB reported during "
        "torch's allocating call, then 1.1 s of system time in the next allocating call, "
        "5.9 ns/elem against 1.3 in the other rounds). The notes on missed allocating "
        "targets give each implementation's best round beside the median."
    )


def _port_section(
    pf: Any, two: list[tuple[str, float]], one: list[float], engine: str
) -> list[str]:
    """The measured vector-port floor and the uop counts it multiplies."""
    from _portfloor import FMAS_PER_CALL, KEEPX_N, counted, counts, what_is_counted

    out = ["### The vector-port floor of this machine, measured", ""]
    if not pf.available or not two:
        return [*out, "No C compiler, or no AVX2/AVX-512: not measured in this run.", ""]
    two_med = statistics.median(v for _, v in two)
    rates = f"{two_med:.4f} ns per uop on 2 threads together"
    if one:
        one_med = statistics.median(one)
        rates += f", {one_med:.4f} on one thread (2-thread speed-up {one_med / two_med:.2f}×)"
    out += [
        f"`benchmarks/portfloor.c` ({pf.isa}) runs {FMAS_PER_CALL:,} fused multiply-adds "
        f"in {pf.per_round} independent chains of {pf.bits}-bit vectors (as many as the "
        "vector registers hold beside the two constants: until session 22 the 256-bit "
        "build ran 16, kept three on the stack and measured 1.75 times too slow a rate): "
        "one uop each on the two "
        "ports that execute fused multiply-adds on this core, with nothing to wait for. "
        "Its time per FMA is the least time any FMA-port uop takes here, now; on this "
        "shared virtual machine it "
        "moves (such chains took 0.13 to 0.43 ns per FMA on one thread within one "
        "session, under other load), so it is measured in the same interleaved rounds as "
        "each case above (2 threads, each pinned to its own CPU) and between the "
        f"one-thread calls. Medians: {rates}.",
        "",
        "| case (2 threads) | ns per vector uop |",
        "|---|---:|",
    ]
    out += [f"| {c} | {v:.4f} |" for c, v in two]
    if not counted(engine):
        return [
            *out,
            "",
            f"The `{engine}` engine that ran here has no uop count for this CPU, so this "
            "rate times a count would not be a floor for it. No port floor is set against "
            "this run's misses.",
            "",
        ]
    short, long_ = counts(engine)
    out += [
        "",
        f"Pipe time per 16 float32 elements (in FMA times) of the `{engine}` engine on rows of up to 32768 "
        f"elements (one block): {what_is_counted(engine)}:",
        "",
        "| op | precision | FMA times / 16 | of which | floor, 2 threads (ns/elem) |",
        "|---|---|---:|---|---:|",
    ]
    for (op, prec), (u, what) in short.items():
        out.append(f"| {op} | {prec} | {u:g} | {what} | {u / 16 * two_med:.3f} |")
    for (op, prec), (u, what) in long_.items():
        out.append(
            f"| {op} | {prec}, rows over {KEEPX_N} | {u:g} | {what} | {u / 16 * two_med:.3f} |"
        )
    out += [
        "",
        "Each missed target below states whether it lies under this floor (with the "
        "uop rate of its own rounds): a target under it cannot be met by a kernel that "
        "issues these operations, whatever its scheduling. The operations are the "
        "contract's: the exact difference x − max and the float64 sum hold the fast "
        "mode's 3-ulp bound on wide rows (BHH's 2(max − min)u term); the float64 "
        "exponential and one rounding hold the accurate mode's 0.5 ulp.",
        "",
    ]
    return out


def _port_floor(
    op: str, prec: str, n: int, ns_uop: float | None, target: float, engine: str
) -> str:
    """The vector-port floor of softmaxkit's kernel for this case against the
    largest time per element that would meet the target (for the engines whose uops
    are counted on this CPU)."""
    from _portfloor import counted, counts, uops

    if not counted(engine):
        return (
            f" The `{engine}` engine ran; its uops are not counted for this CPU, so no "
            "port floor: not shown out of reach."
        )
    if ns_uop is None:
        return " No C compiler or AVX2 here: the port floor was not measured."
    if n <= 256 or (op, prec) not in counts(engine)[0]:
        return " Rows this short run the transposed kernels, whose uops are not counted here."
    u = uops(op, prec, n, engine)
    floor = u / 16 * ns_uop
    verdict = (
        "the target lies below it: out of reach for this instruction stream"
        if target < floor
        else f"the target lies above it: not shown out of reach ({target / floor:.2f}× the floor)"
    )
    return (
        f" Port floor: {u:g} FMA times per 16 elements × {ns_uop:.4f} ns per FMA (measured in "
        f"the same rounds) = {floor:.3f} ns/elem; {verdict}."
    )


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", help="write the Markdown section here")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small shapes (smoke run)")
    args = ap.parse_args()

    import torch
    from _portfloor import PortFloor, counted, uops

    from softmaxkit import _dispatch
    from softmaxkit._bench import _cpu_model

    torch.set_num_threads(THREADS)
    ck = _dispatch._ckernels
    isas = _isas(ck)
    pf = PortFloor()
    if args.quick:
        shapes = [(256, 4096), (256, 1000), (20000, 40), (20000, 10)]
        ce_shapes = [(256, 8000)]
        sig_shapes = [(256, 1000)]
    else:
        shapes = [(4096, 32768), (4096, 1000), (256, 1000), (3_000_000, 40), (1_000_000, 10)]
        ce_shapes = [(6000, 30000), (8192, 32000)]
        sig_shapes = [(4096, 1000), (256, 1000)]
    reps = args.reps
    load0 = os.getloadavg()

    lines = [
        "## Native kernels vs torch, kernel to kernel",
        "",
        f"Machine: {_cpu_model()}, {os.cpu_count()} logical cores; torch {torch.__version__} "
        f"(CPU capability {torch.backends.cpu.get_cpu_capability()}), "
        f"{THREADS} threads for every implementation. softmaxkit engines: "
        f"`{isas[0]}` is the dispatcher's pick on this CPU"
        + (f", `{isas[1]}` forced for comparison" if len(isas) > 1 else "")
        + f". Load average at start {load0[0]:.2f}; this machine is shared, so the lead "
        "re-runs this part in a quiet window. Nanoseconds per element, median of "
        f"{reps} interleaved rounds, in an order shuffled anew each round; each turn starts "
        f"with a {SETTLE_S * 1000:.0f} ms pause and one untimed call (torch's OpenMP workers "
        "spin for milliseconds after a call and would otherwise take the cores from the next "
        "implementation); calls under 10^7 elements are then timed as three loops of about "
        f"{LOOP_S * 1000:.0f} ms each (the loop's mean call is one sample), larger ones one "
        "call at a time. The shuffle matters for the allocating columns: on this virtual "
        "machine the first fresh allocation of hundreds of megabytes after torch's allocating "
        "call pays up to a second of system time, whichever library makes it (session 13, "
        "3000000×40 float32, 2 threads: x.copy() right after `torch.softmax` 4.3–10.8 ns/elem "
        "in 3 of 5 rounds, 1.4 otherwise; in session 12's fixed order softmaxkit's fast "
        "allocating call always came right after torch's and read 5.6)."
        + (_reporting_note() or _reclaim_note()),
        "",
    ]
    verdicts: list[tuple[str, str, str]] = []
    misses: list[str] = []
    port_rows: list[tuple[str, float]] = []
    for op in ("softmax", "log_softmax"):
        for dtype in ("float32", "float64"):
            lines += [
                f"### {op}, {dtype}",
                "",
                "| shape | torch out= | copy 2 thr | "
                + " | ".join(f"skt fast out= [{i}] | skt acc out= [{i}]" for i in isas)
                + " | torch alloc | skt fast alloc | skt acc alloc | x.copy() |",
                "|---|" + "---:|" * (6 + 2 * len(isas)),
            ]
            for shape in shapes:
                print(f"{op} {shape} {dtype}", file=sys.stderr, flush=True)
                r = normalizer_cases(op, shape, dtype, reps, isas, pf)
                ns_uop = r.get("ports")
                if ns_uop is not None:
                    port_rows.append((f"{op} {shape[0]}×{shape[1]} {dtype}", ns_uop))
                gc.collect()
                cells = [_f(r["torch out="]), _f(r["copy 2 threads"])]
                for isa in isas:
                    cells += [_f(r[f"skt fast out= [{isa}]"]), _f(r[f"skt accurate out= [{isa}]"])]
                cells += [_f(r["torch"]), _f(r["skt fast"]), _f(r["skt accurate"])]
                cells += [_f(r["x.copy()"])]
                sname = f"{shape[0]}×{shape[1]}"
                lines.append(f"| {sname} | " + " | ".join(cells) + " |")
                if dtype != "float32":
                    continue
                # the targets are judged on float32, the engine the dispatcher picks
                tout, cp = r["torch out="], r["copy 2 threads"]
                fast, acc = r[f"skt fast out= [{isas[0]}]"], r[f"skt accurate out= [{isas[0]}]"]
                near = tout <= 1.1 * cp
                ok = tout / fast >= 1.3 or (near and fast <= 1.1 * cp)
                goal = max(tout / 1.3, 1.1 * cp if near else 0.0)
                if shape[1] >= 32768:
                    ok = ok or fast <= 1.2 * cp
                    goal = max(goal, 1.2 * cp)
                case = f"{op} {sname}"
                verdicts.append(
                    (
                        case,
                        f"fast out=: {tout / fast:.2f}× torch, {fast / cp:.2f}× copy",
                        _verdict(ok),
                    )
                )
                if not ok:
                    misses.append(
                        f"- {case}, fast out=: {fast:.3f} ns/elem against torch {tout:.3f} "
                        f"(target {tout / 1.3:.3f}) and a copy floor of {cp:.3f} "
                        f"({(8 if dtype == 'float32' else 16) / cp:.1f} GB/s for read + write)"
                        + (
                            f"; the target is {tout / 1.3 / cp:.2f}× that copy and softmaxkit "
                            f"{fast / cp:.2f}× (torch {tout / cp:.2f}×)"
                            if tout / 1.3 < 1.1 * cp
                            else ""
                        )
                        + "."
                        + _port_floor(op, "fast", shape[1], ns_uop, goal, isas[0])
                    )
                ok = tout / acc >= 0.8
                verdicts.append((case, f"accurate out=: {tout / acc:.2f}× torch", _verdict(ok)))
                if not ok:
                    misses.append(
                        f"- {case}, accurate out=: {acc:.3f} ns/elem against torch {tout:.3f} "
                        f"(target {tout / 0.8:.3f})."
                        + _port_floor(op, "accurate", shape[1], ns_uop, tout / 0.8, isas[0])
                    )
                ta, fa, aa, xc = r["torch"], r["skt fast"], r["skt accurate"], r["x.copy()"]
                ok = ta / fa >= 2.5 or fa <= 1.2 * xc
                verdicts.append(
                    (
                        case,
                        f"fast alloc: {ta / fa:.2f}× torch, {fa / xc:.2f}× x.copy()",
                        _verdict(ok),
                    )
                )
                if not ok:
                    misses.append(
                        f"- {case}, fast allocating: {fa:.3f} ns/elem against torch {ta:.3f} "
                        f"and x.copy() {xc:.3f} (target {max(ta / 2.5, 1.2 * xc):.3f})."
                        + _best_rounds(r, "skt fast")
                        + _port_floor(
                            op, "fast", shape[1], ns_uop, max(ta / 2.5, 1.2 * xc), isas[0]
                        )
                    )
                ok = ta / aa >= 1.5
                verdicts.append((case, f"accurate alloc: {ta / aa:.2f}× torch", _verdict(ok)))
                if not ok:
                    misses.append(
                        f"- {case}, accurate allocating: {aa:.3f} ns/elem against torch {ta:.3f} "
                        f"(target {ta / 1.5:.3f})."
                        + _best_rounds(r, "skt accurate")
                        + _port_floor(op, "accurate", shape[1], ns_uop, ta / 1.5, isas[0])
                    )
            lines.append("")
    for dtype in ("float32", "float64"):
        lines += [
            f"### logsumexp, {dtype}",
            "",
            "| shape | torch | "
            + " | ".join(f"skt fast [{i}] | skt acc [{i}]" for i in isas)
            + " |",
            "|---|" + "---:|" * (1 + 2 * len(isas)),
        ]
        for shape in shapes:
            print(f"logsumexp {shape} {dtype}", file=sys.stderr, flush=True)
            r = lse_cases(shape, dtype, reps, isas)
            cells = [_f(r["torch"])]
            for isa in isas:
                cells += [_f(r[f"skt fast [{isa}]"]), _f(r[f"skt accurate [{isa}]"])]
            lines.append(f"| {shape[0]}×{shape[1]} | " + " | ".join(cells) + " |")
            if dtype == "float32":
                case = f"logsumexp {shape[0]}×{shape[1]}"
                tr, fa, aa = r["torch"], r[f"skt fast [{isas[0]}]"], r[f"skt accurate [{isas[0]}]"]
                verdicts.append((case, f"fast: {tr / fa:.2f}× torch", _verdict(tr / fa >= 1.3)))
                verdicts.append((case, f"accurate: {tr / aa:.2f}× torch", _verdict(tr / aa >= 0.8)))
        lines.append("")
    lines += [
        "### cross-entropy forward+backward, float32",
        "",
        "Loss and the gradient of the mean loss; torch is `F.cross_entropy(x, t).backward()`, "
        "softmaxkit `cross_entropy(x, t, return_grad=True)`; both allocate the gradient.",
        "",
        "| shape | torch | skt fast | skt accurate | x.copy() | copy, 2 threads, allocating "
        "| torch / fast | torch / accurate |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for shape in ce_shapes:
        print(f"cross-entropy {shape}", file=sys.stderr, flush=True)
        r = ce_cases(shape, reps)
        tr, fa, aa, xc = r["torch"], r["skt fast"], r["skt accurate"], r["x.copy()"]
        ac, acb = r["alloc copy"], r["alloc copy|best"]
        lines.append(
            f"| {shape[0]}×{shape[1]} | {_f(tr)} | {_f(fa)} | {_f(aa)} | {_f(xc)} | {_f(ac)} | "
            f"{tr / fa:.2f}× | {tr / aa:.2f}× |"
        )
        gc.collect()
        case = f"CE fwd+bwd {shape[0]}×{shape[1]}"
        for name, v in (("fast", fa), ("accurate", aa)):
            ok = tr / v >= 8
            verdicts.append((case, f"{name}: {tr / v:.2f}× torch", _verdict(ok)))
            if not ok:
                misses.append(
                    f"- {case}, {name}: {v:.3f} ns/elem against torch {tr:.3f} (target "
                    f"{tr / 8:.3f}); one read of x and one write of a fresh gradient cost at "
                    f"least an allocating copy on {THREADS} threads: {acb:.3f} ns/elem in its "
                    f"best round (median {ac:.3f}), {tr / acb:.1f}× below torch."
                )
    lines += [
        "",
        "### Sigmoid family, float32, as users call them",
        "",
        "Allocating calls, accurate mode: `torch.sigmoid`, `F.logsigmoid`, "
        "`F.binary_cross_entropy_with_logits` (`reduction='none'`; fwd+bwd: the mean loss "
        "and its gradient through autograd) against `softmaxkit.sigmoid`, `log_sigmoid`, "
        "`binary_cross_entropy_with_logits` (fwd+bwd: `return_grad=True`). softmaxkit "
        "computes in float64 and rounds once (0.5 ulp), torch in float32. BCE reads its "
        "float32 targets as they are (widened in the kernel, no copy).",
        "",
        "| shape | op | torch | skt | torch / skt | x.copy() |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for shape in sig_shapes:
        print(f"sigmoid family {shape}", file=sys.stderr, flush=True)
        r = sigmoid_cases(shape, reps)
        for op in ("sigmoid", "log_sigmoid", "BCE", "BCE fwd+bwd"):
            tr, sr = r[f"torch {op}"], r[f"skt {op}"]
            lines.append(
                f"| {shape[0]}×{shape[1]} | {op} | {_f(tr)} | {_f(sr)} | {tr / sr:.2f}× | "
                f"{_f(r['x.copy()'])} |"
            )
        gc.collect()
    lines += ["", "### Compute floor: one thread, data in L2", ""]
    lines += [
        "Into a preallocated output, one thread for both (torch's team set to one thread "
        "for this table), minimum of many calls: what the arithmetic costs per element "
        "with DRAM and thread pools out of the way. Two threads can at best halve it. The "
        "last row is the fixed cost of one call (a 1×16 softmax) in microseconds: "
        "softmaxkit's is its Python front end (validation and the plan). The port floors "
        "are the kernels' uops per element (the next section) times this machine's time "
        "per vector uop on one thread, measured between the calls; rows of 40 and 10 run "
        "the transposed kernels, not counted, and where an engine without counts for this "
        "CPU ran, no port floor is given.",
        "",
        "| op | shape | dtype | torch out= | skt fast out= | skt accurate out= | "
        "port floor fast | port floor accurate |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    one_thread: list[float] = []
    is_counted = counted(isas[0])
    for fop, sname, dtype, tv, fv, av, ns_uop in compute_floor(200 if not args.quick else 20, pf):
        if fop == "call":
            lines.append(
                f"| one call, µs | {sname} | {dtype} | {_f(tv)} | {_f(fv)} | {_f(av)} | – | – |"
            )
            continue
        pfl = ["–", "–"]
        if ns_uop is not None:
            one_thread.append(ns_uop)
            if dtype == "float32" and int(sname.split("×")[1]) > 256 and is_counted:
                n = int(sname.split("×")[1])
                pfl = [_f(uops(fop, p, n, isas[0]) / 16 * ns_uop) for p in ("fast", "accurate")]
        lines.append(
            f"| {fop} | {sname} | {dtype} | {_f(tv)} | {_f(fv)} | {_f(av)} | "
            + " | ".join(pfl)
            + " |"
        )
    lines += ["", *_port_section(pf, port_rows, one_thread, isas[0])]
    lines += ["", *NOTES[:2], _cpu_note(isas), "", *NOTES[2:]]
    lines += ["", "### Targets (float32, the dispatcher's engine)", ""]
    lines += ["| case | measured | target |", "|---|---|---|"]
    lines += [f"| {c} | {m} | {v} |" for c, m, v in verdicts]
    if misses:
        lines += ["", "Missed targets, against their floors:", "", *misses]
    load1 = os.getloadavg()
    lines += [
        "",
        f"Load average at the end {load1[0]:.2f}; {platform.python_implementation()} "
        f"{platform.python_version()}, numpy {np.__version__}.",
    ]
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
