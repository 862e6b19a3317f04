#define _POSIX_C_SOURCE 199309L
/*
 * Developer probe of the C core (not built by meson): ns per element of one op
 * on data that stays in cache, one call of `threads` threads: best and median
 * of `reps` calls.
 *
 *   tools/kbench.sh OP DTYPE MODE ROWS N [THREADS] [REPS]
 *   OP: softmax | log_softmax | lse | ce | ce_grad | bce | bce_grad | sigmoid
 *
 * Under `valgrind --tool=callgrind` the instruction count per element is the
 * repeatable measure on a shared machine (use REPS = 1).
 *
 * KBENCH_EVICT=KIB writes and reads a buffer of that many KiB before each timed
 * call, so that the call finds its code and data out of L1/L2, as a small call in a
 * training step does after the model's layers (4096 evicts this machine's 2 MiB L2).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/softmaxkit/_csrc/skit.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double u = *(const double *)a, v = *(const double *)b;
    return (u > v) - (u < v);
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s OP DTYPE MODE ROWS N [THREADS] [REPS]\n", argv[0]);
        return 2;
    }
    const char *op = argv[1];
    int dtype = strcmp(argv[2], "float64") == 0;
    int mode = strcmp(argv[3], "accurate") == 0;
    size_t rows = strtoull(argv[4], NULL, 10), n = strtoull(argv[5], NULL, 10);
    int threads = argc > 6 ? atoi(argv[6]) : 1;
    int reps = argc > 7 ? atoi(argv[7]) : 20;
    if (reps < 1) reps = 1;
    size_t tot = rows * n, es = dtype ? 8 : 4;
    void *x = malloc(tot * es), *o = malloc(tot * es);
    double *lse = malloc(rows * 8), *loss = malloc(rows * 8);
    uint8_t *cnt = malloc(rows);
    int64_t *tg = malloc(rows * 8);
    srand(1);
    for (size_t i = 0; i < tot; i++) {
        double v = 4.0 * ((double)rand() / RAND_MAX - 0.5);
        if (dtype)
            ((double *)x)[i] = v;
        else
            ((float *)x)[i] = (float)v;
    }
    for (size_t r = 0; r < rows; r++) tg[r] = (int64_t)(r * 7919 % n);
    memset(o, 0, tot * es);
    skit_rows a = {dtype, mode, threads, rows, n, x, NULL, 1.0};
    double best = 1e30;
    double *ts = malloc(sizeof(double) * (size_t)reps); /* reps >= 1 */
    const char *ev = getenv("KBENCH_EVICT");
    size_t evn = ev ? strtoull(ev, NULL, 10) * 1024 : 0;
    unsigned char *evb = evn ? malloc(evn) : NULL;
    if (evn && !evb) {
        fprintf(stderr, "KBENCH_EVICT: cannot allocate %zu bytes\n", evn);
        return 2;
    }
    volatile unsigned evsink = 0;
    for (int k = 0; k < reps; k++) {
        if (evb) {
            memset(evb, k & 0xff, evn);
            unsigned acc = 0;
            for (size_t i = 0; i < evn; i += 64) acc += evb[i];
            evsink += acc;
        }
        double t0 = now();
        int st = 0;
        if (!strcmp(op, "softmax"))
            st = skit_softmax(&a, o, 0);
        else if (!strcmp(op, "log_softmax"))
            st = skit_softmax(&a, o, 1);
        else if (!strcmp(op, "lse"))
            st = skit_logsumexp(&a, lse);
        else if (!strcmp(op, "ce"))
            st = skit_cross_entropy(&a, tg, NULL, 0, 0, 0.0, 1.0, loss, lse, cnt, NULL);
        else if (!strcmp(op, "ce_grad"))
            st = skit_cross_entropy(&a, tg, NULL, 0, 0, 0.0, 1.0, loss, lse, cnt, o);
        else if (!strcmp(op, "smooth_ce") && !dtype) { /* label_smoothing=0.1, mean, grad */
            int special = 0;
            st = skit_smooth_ce(&a, tg, NULL, 0, 0, 0.1, 0.0, 1, loss, o, 0, &special);
        } else if (!strcmp(op, "smooth_exp") && !dtype) { /* kind 1: e f - k, no sums */
            for (size_t r = 0; r < rows; r++) lse[r] = 2.0, loss[r] = 0.5;
            st = skit_smooth(1, (const float *)x, rows, n, NULL, lse, loss, loss, NULL, NULL, o,
                             threads);
        } else if (!strcmp(op, "smooth_k4") && !dtype) { /* the gradient pass of smooth_ce */
            for (size_t r = 0; r < rows; r++) lse[r] = 2.0, loss[r] = 0.5;
            st = skit_smooth(4, (const float *)x, rows, n, NULL, lse, loss, loss, lse, NULL, o,
                             threads);
        }
        else if (!strcmp(op, "bce") || !strcmp(op, "bce_grad")) { /* targets in x's type */
            double total = 0.0;
            st = skit_bce_reduced(dtype, mode, 3, x, x, NULL, NULL, tot, 1.0 / (double)tot,
                                  &total, op[3] ? o : NULL, threads);
        } else if (!strcmp(op, "sigmoid"))
            st = skit_sigmoid(dtype, mode, 0, x, NULL, NULL, NULL, tot, 1.0, o, NULL, threads);
        else
            return 2;
        double t = now() - t0;
        if (st) return 1;
        if (t < best) best = t;
        ts[k] = t;
    }
    qsort(ts, (size_t)reps, sizeof(double), cmp_double);
    printf("%s %s %s %zux%zu threads=%d isa=%s: %.3f ns/elem (median %.3f)\n", op, argv[2], argv[3],
           rows, n, threads, skit_isa(), best * 1e9 / (double)tot, ts[reps / 2] * 1e9 / (double)tot);
    return 0;
}
