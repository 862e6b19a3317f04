/*
 * Internal interface between the ISA-independent driver (driver.c) and the
 * per-instruction-set engines (engines.c, compiled once per ISA), plus scalar
 * double-word arithmetic shared by both.
 */
#ifndef SKIT_INTERNAL_H
#define SKIT_INTERNAL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "skit.h"

#define SKIT_CAT_(a, b) a##b
#define SKIT_CAT(a, b) SKIT_CAT_(a, b)

/* ---- double-word numbers: value = hi + lo, |lo| <= ulp(hi)/2 -------------- */
typedef struct {
    double hi, lo;
} skit_dd;

static inline skit_dd dd_make(double hi, double lo) {
    skit_dd r = {hi, lo};
    return r;
}

static inline skit_dd dd_two_sum(double a, double b) {
    double s = a + b;
    double bb = s - a;
    return dd_make(s, (a - (s - bb)) + (b - bb));
}

static inline skit_dd dd_fast_two_sum(double a, double b) {
    double s = a + b;
    return dd_make(s, b - (s - a));
}

static inline skit_dd dd_add(skit_dd a, skit_dd b) {
    skit_dd s = dd_two_sum(a.hi, b.hi);
    return dd_fast_two_sum(s.hi, s.lo + (a.lo + b.lo));
}

static inline skit_dd dd_neg(skit_dd a) { return dd_make(-a.hi, -a.lo); }

static inline skit_dd dd_sub(skit_dd a, skit_dd b) { return dd_add(a, dd_neg(b)); }

static inline skit_dd dd_mul(skit_dd a, skit_dd b) {
    double p = a.hi * b.hi;
    double e = fma(a.hi, b.hi, -p);
    e += a.hi * b.lo + a.lo * b.hi;
    return dd_fast_two_sum(p, e);
}

static inline skit_dd dd_div(skit_dd a, skit_dd b) {
    double q = a.hi / b.hi;
    double r = fma(-q, b.hi, a.hi);
    r = (r + a.lo) - q * b.lo;
    return dd_fast_two_sum(q, r / b.hi);
}

static inline double dd_value(skit_dd a) { return a.hi + a.lo; }

/* Scalar double-word exp, expm1 and log1p (skit_dd.c). */
skit_dd skit_dd_exp(skit_dd x);
skit_dd skit_dd_expm1(double x);
skit_dd skit_dd_log1p(skit_dd a);
/* the same to about 2^-105 (exp) and 2^-96 (log1p), for rare rows (skit_dd.c) */
skit_dd skit_dd_exp_acc(skit_dd x);
skit_dd skit_dd_log1p_acc(skit_dd a);
skit_dd skit_dd_log(skit_dd a);

/* ---- statistics of one block of a row ------------------------------------- */
typedef struct {
    double m;     /* max of the valid scaled entries (-inf if none); not NaN */
    int nan;      /* a valid entry is NaN */
    int64_t kinf; /* number of valid +inf entries */
    skit_dd c;    /* sum of exp(x - m) over the entries equal to m (their count when T = 1) */
    skit_dd s;    /* sum of exp(x - m) over the other valid entries */
} skit_bstat;

enum {
    SKIT_ROW_FINITE = 0,
    SKIT_ROW_NAN = 1,
    SKIT_ROW_POSINF = 2,
    SKIT_ROW_EMPTY = 3,
    SKIT_ROW_DONE = 4 /* written in full by the driver's exact path (huge_row) */
};

typedef struct {
    int kind;
    int64_t k;    /* +inf rows: number of +inf entries */
    double M;     /* the row max (finite rows) */
    skit_dd c, s; /* combined count and rest at M */
    skit_dd L;    /* log(c + s) = log1p((c - 1) + s) */
    skit_dd R;    /* 1 / (c + s) */
    int fin;      /* finished by the engine's ce_fin: gt is the gradient's target entry */
    double gt;
} skit_rstat;

/* Elements per block of a row (rows up to this length are one block and keep
 * their exponentials in a per-thread scratch between the two phases: at most 16
 * bytes per element, so 512 KiB), and the scratch length in elements. */
#define SKIT_BLOCK_ELEMS ((size_t)1 << 15)
#define SKIT_SCRATCH_ELEMS (SKIT_BLOCK_ELEMS + 64)
#define SKIT_SMALL_N 256

/* One engine: the element loops for one (dtype, mode) on one instruction set.
 * `stream` selects non-temporal stores for outputs larger than the caches. */
/* the factors f[0..cnt) of rows i0.. of a short-row cross-entropy call from their
 * statistics (rows with skip[l] set take none: f[l] = 0) */
typedef void (*skit_row_cb)(void *ctx, size_t i0, size_t cnt, const uint8_t *skip,
                            const double *m, const double *c, const double *s, double *f);

/* rows the everyday cross-entropy finish (ce_fin) takes per call, at most */
#define SKIT_FIN_MAX 8

typedef struct {
    size_t elsize;
    /* stats of one block; if scratch != NULL also keeps exp(x - m_block) there; pf:
     * NULL, or the block's output, which phase B writes once the row's statistics are
     * known: the loops touch its lines for writing as they go (one software prefetch per
     * 64 bytes of output), so that phase B's stores find them in the L1 cache; pfx:
     * NULL, or input the thread reads next, whose lines the loops fetch at the same
     * offsets as they go */
    void (*stats)(const void *x, const uint8_t *mask, size_t n, double T, skit_bstat *st,
                  void *scratch, const void *pf, const void *pfx);
    /* out = exp(x - M) * f over a block (f double-word: the row's 1/D and scale) */
    void (*expscale)(const void *x, const uint8_t *mask, size_t n, double T, double M, skit_dd f,
                     void *out, int stream);
    /* out = scratch * f over a block whose exponentials the stats pass kept */
    void (*fromscratch)(const void *scratch, size_t n, skit_dd f, void *out, int stream);
    /* out *= f in place */
    void (*rescale)(void *out, size_t n, skit_dd f);
    /* out = (x - M) - L over a block */
    void (*logsub)(const void *x, const uint8_t *mask, size_t n, double T, double M, skit_dd L,
                   void *out, int stream);
    /* the scaled value x_i / T as a double-word number */
    skit_dd (*scaled)(const void *x, size_t i, double T);
    /* exp of a double-word argument <= 0, double-word accurate */
    skit_dd (*exp1)(skit_dd d);
    /* log1p of a double-word argument in the engine's precision */
    skit_dd (*log1p1)(skit_dd a);
    /* +inf/NaN/empty rows: fill a block of softmax (islog = 0) or log_softmax (islog = 1) */
    void (*special)(const void *x, const uint8_t *mask, size_t n, double T, const skit_rstat *rs,
                    int islog, void *out);
    size_t scratch_per_elem; /* bytes of scratch per element */
    /* softmax (islog = 0) / log_softmax (1) of rows of n <= SKIT_SMALL_N elements
     * without a mask, several rows per vector, or their logsumexp (2: out is one
     * double per row); rows with a non-finite maximum are flagged in special[] and
     * not written (NULL: the engine has no such path) */
    void (*small)(const void *x, size_t rows, size_t n, double T, int islog, void *out,
                  uint8_t *special);
    /* sigmoid (kind 0), log_sigmoid (1) into out, or binary cross-entropy with logits
     * (2: float64 loss into out, gradient times scale into grad unless NULL; y is
     * float64; 3: the same with y in the data's own type) */
    void (*sigmoid)(int kind, const void *x, const void *y, const double *w, const double *pw,
                    size_t n, double scale, void *out, void *grad);
    /* softmax (islog = 0) or log_softmax (islog = 1) vector-Jacobian products over rows */
    void (*vjp)(int islog, const void *y, const void *g, size_t rows, size_t n, void *out);
    /* sum of b_i exp(x_i - M) over the entries the mask keeps (double-word) */
    skit_dd (*wsum)(const void *x, const double *b, const uint8_t *mask, size_t n, double M);
    /* cross-entropy rows of n <= SKIT_SMALL_N elements (T = 1, no mask), several rows
     * per vector: each row's maximum, count and rest bit for bit as `stats` forms them
     * on its plain path, then f = cb(ctx, i, m, c, s) and, if out != NULL, out =
     * exp(x - m) f as `fromscratch` writes it; cb takes the rows of one vector at a
     * time. Rows `stats` would not take on its plain path, or holding a NaN, are
     * flagged in special[], skipped by cb and not written (NULL: the engine has no
     * such path). */
    void (*small_ce)(const void *x, size_t rows, size_t n, skit_row_cb cb, void *ctx, void *out,
                     uint8_t *special);
    /* label smoothing over n elements (kind 0: block sums into *gap, *dsum, the
     * exponentials into keep; kind 1: out = exp(x - m) f - k w; kind 2: out = keep f
     * - k w), float32 out or float64 with out64; see skit_smooth (NULL: the engine
     * has no such path) */
    void (*smooth)(int kind, int out64, const void *x, const double *w, size_t n, double m,
                   double f, double k, double *gap, double *dsum, double *keep, void *out);
    /* the everyday cross-entropy finish of cnt <= SKIT_FIN_MAX finite rows from their
     * maximum m, count c of the maxima, rest sum s, target logit xt and gradient scale
     * sc: lse, the loss, the gradient's factor and its target entry (driver.c:
     * fin_ok; NULL: the engine has none) */
    void (*ce_fin)(size_t cnt, const double *m, const double *c, const double *s,
                   const double *xt, const double *sc, double *lse, double *nll, double *fac,
                   double *gt);
    /* `stats` for softmax alone, which needs only c + s: c may be 0 with every term in
     * s (NULL: softmax takes `stats`) */
    void (*stats_sum)(const void *x, const uint8_t *mask, size_t n, double T, skit_bstat *st,
                      void *scratch, const void *pf, const void *pfx);
    /* `stats` for log_softmax that keeps each entry as `logsub` reads it (widened,
     * scaled and masked) in the scratch, whenever the block's statistics come out
     * finite, and `logsub` from those kept entries (NULL: log_softmax keeps nothing) */
    void (*stats_keepx)(const void *x, const uint8_t *mask, size_t n, double T, skit_bstat *st,
                        void *scratch, const void *pf, const void *pfx);
    void (*logsub_kept)(const void *scratch, size_t n, double M, skit_dd L, void *out,
                        int stream);
    /* cross-entropy with probability targets over one float32 row in fast mode (float32
     * arithmetic; the targets q float32 or float64 with q64, w float32 or NULL, u_j =
     * w_j (a q_j + b)): kind 0 writes the row's maximum m, the count of its maxima, the
     * rest sum of exp(x - m), sum u_j and sum u_j (m - x_j) to res[0..5), and exp(x -
     * m) 2^64 to e unless NULL, and returns bit 1 for a row it does not take (NaN,
     * +inf, no finite maximum) and bit 2 for a target < 0 or NaN; kind 1 writes e_j f
     * - u_j k over e in place (NULL: the engine has no such path) */
    int (*prob_fast)(int kind, const float *x, const void *q, int q64, const float *w,
                     size_t n, float a, float b, float f, float k, double *res, float *e);
} skit_engine;

typedef struct {
    const char *name;
    const skit_engine *eng[2][2]; /* [dtype][mode] */
} skit_isa_table;

extern const skit_isa_table skit_table_base;
#if defined(__x86_64__) || defined(_M_X64)
extern const skit_isa_table skit_table_avx2;
extern const skit_isa_table skit_table_avx512;
#endif

#endif
