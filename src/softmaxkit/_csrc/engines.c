/*
 * The element loops of the softmax family, written once with compiler vector
 * extensions and compiled once per instruction set (see meson.build):
 * SKIT_TABLE names the table of engines this translation unit exports.
 *
 * Four engines, one per (dtype, precision):
 *   e32f  float32, fast:     float32 exp (Cody-Waite + degree-7 polynomial,
 *                            x - max carried exactly by TwoSum into the
 *                            reduced argument), sums in float64.
 *   e32a  float32, accurate: everything in float64 (x - max is exact there,
 *                            table-free exp with about 2^-45 error), one
 *                            final rounding to float32.
 *   e64f  float64, fast:     float64 exp (degree-13 polynomial, TwoSum
 *                            x - max), compensated sums.
 *   e64a  float64, accurate: double-word arithmetic: TwoSum x - max,
 *                            table-driven double-word exp, double-word
 *                            sums, products and quotients.
 *
 * Every loop walks whole vectors; the tail of a block is padded with -inf
 * (which every op ignores) in a small stack buffer.
 */
#include <string.h>

#include "skit_consts.h"
#include "skit_internal.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#define VB 64
#define ISA_NAME "avx512"
#elif defined(__AVX2__)
#include <immintrin.h>
#define VB 32
#define ISA_NAME "avx2"
#elif defined(__aarch64__)
#include <arm_neon.h>
#define VB 16
#define ISA_NAME "neon"
#elif defined(__SSE2__)
#define VB 16
#define ISA_NAME "sse2"
#else
#define VB 16
#define ISA_NAME "scalar"
#endif

#ifndef SKIT_TABLE
#define SKIT_TABLE skit_table_base
#endif

#define NF (VB / 4)
#define ND (VB / 8)

typedef float vf __attribute__((vector_size(VB)));
typedef int32_t vi __attribute__((vector_size(VB)));
typedef double vd __attribute__((vector_size(VB)));
typedef int64_t vl __attribute__((vector_size(VB)));
typedef float vfh __attribute__((vector_size(VB / 2)));
typedef uint8_t vmf __attribute__((vector_size(NF)));
typedef uint8_t vmd __attribute__((vector_size(ND)));

#define INLINE static inline __attribute__((always_inline))

/* ---- loads, stores, selects ------------------------------------------------ */
INLINE vf ldf(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}
INLINE void stf(float *p, vf v) { memcpy(p, &v, sizeof v); }
INLINE vd ldd(const double *p) {
    vd v;
    memcpy(&v, p, sizeof v);
    return v;
}
INLINE void std_(double *p, vd v) { memcpy(p, &v, sizeof v); }
/* ND floats widened to doubles, and back */
INLINE vd ldfd(const float *p) {
    vfh h;
    memcpy(&h, p, sizeof h);
    return __builtin_convertvector(h, vd);
}
INLINE void stdf(float *p, vd v) {
    vfh h = __builtin_convertvector(v, vfh);
    memcpy(p, &h, sizeof h);
}
INLINE vi ldmf(const uint8_t *p) {
    vmf b;
    memcpy(&b, p, sizeof b);
    return __builtin_convertvector(b, vi) != 0;
}
INLINE vl ldmd(const uint8_t *p) {
    vmd b;
    memcpy(&b, p, sizeof b);
    return __builtin_convertvector(b, vl) != 0;
}
INLINE vf self(vi m, vf a, vf b) { return (vf)((m & (vi)a) | (~m & (vi)b)); }
INLINE vd seld(vl m, vd a, vd b) { return (vd)((m & (vl)a) | (~m & (vl)b)); }
INLINE vf splatf(float a) { return (vf){0} + a; }
INLINE vd splatd(double a) { return (vd){0} + a; }

/* ---- error-free transformations on vectors --------------------------------- */
INLINE vd two_sum_v(vd a, vd b, vd *err) {
    vd s = a + b;
    vd bb = s - a;
    *err = (a - (s - bb)) + (b - bb);
    return s;
}
INLINE vd fast_two_sum_v(vd a, vd b, vd *err) {
    vd s = a + b;
    *err = b - (s - a);
    return s;
}
INLINE vd two_prod_v(vd a, vd b, vd *err) {
    vd p = a * b;
#if defined(__AVX512F__)
    *err = (vd)_mm512_fmadd_pd((__m512d)a, (__m512d)b, (__m512d)(-p));
#elif defined(__FMA__) && VB == 32
    *err = (vd)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)(-p));
#elif defined(__aarch64__)
    float64x2_t r = vfmaq_f64((float64x2_t)(-p), (float64x2_t)a, (float64x2_t)b);
    memcpy(err, &r, sizeof r);
#else
    /* Dekker's product with Veltkamp splitting (no fused multiply-add here) */
    const vd split = splatd(134217729.0);
    vd ca = split * a, cb = split * b;
    vd ah = ca - (ca - a), al = a - ah;
    vd bh = cb - (cb - b), bl = b - bh;
    *err = ((ah * bh - p) + ah * bl + al * bh) + al * bl;
#endif
    return p;
}

/* ---- vector exponentials --------------------------------------------------- */

/* float32 exp(d + lo) for d in [-128, 0] (callers clamp), |lo| <= ulp(d).
 * Results below 2^-126 are rounded once into the subnormal range. */
INLINE vf vexpf(vf d, vf lo) {
    const vf magic = splatf(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
    vf t = d * SKIT_LOG2E_F + magic;
    vf k = t - magic;
    vf r = d - k * SKIT_LN2_1_F;
    r = r - k * SKIT_LN2_2_F;
    r = r + lo;
    vf q = splatf(SKIT_EF_7);
    q = q * r + SKIT_EF_6;
    q = q * r + SKIT_EF_5;
    q = q * r + SKIT_EF_4;
    q = q * r + SKIT_EF_3;
    q = q * r + SKIT_EF_2;
    vf p = 1.0f + (r + (r * r) * q);
    vi ki = (vi)t - (vi)magic;
    vf scale = (vf)((ki + (127 + 64)) << 23); /* 2^(k + 64), normal for k >= -190 */
    return (p * scale) * 0x1p-64f;
}

/* float64 exp(d + lo) for d in [-800, 0] (callers clamp); Taylor degree DEG.
 * Results below 2^-1022 are rounded once into the subnormal range. */
#define VEXPD_BODY(DEG_TERMS)                                           \
    const vd magic = splatd(6755399441055744.0); /* 1.5 * 2^52 */       \
    vd dc = seld(d < -760.0, splatd(-760.0), d);                        \
    vd t = dc * SKIT_LOG2E_D + magic;                                   \
    vd k = t - magic;                                                   \
    vd r = dc - k * SKIT_LN2_1_D;                                       \
    r = r - k * SKIT_LN2_2_D;                                           \
    r = r + lo;                                                         \
    DEG_TERMS                                                           \
    vd p = 1.0 + (r + (r * r) * q);                                     \
    vl ki = (vl)t - (vl)magic;                                          \
    vd scale = (vd)((ki + (1023 + 128)) << 52);                         \
    return (p * scale) * 0x1p-128;

INLINE vd vexpd_hi(vd d, vd lo) {
    VEXPD_BODY(vd q = splatd(SKIT_ED_14); q = q * r + SKIT_ED_13; q = q * r + SKIT_ED_12;
               q = q * r + SKIT_ED_11; q = q * r + SKIT_ED_10; q = q * r + SKIT_ED_9;
               q = q * r + SKIT_ED_8; q = q * r + SKIT_ED_7; q = q * r + SKIT_ED_6;
               q = q * r + SKIT_ED_5; q = q * r + SKIT_ED_4; q = q * r + SKIT_ED_3;
               q = q * r + SKIT_ED_2;)
}

/* about 2^-45 relative error: enough for one final rounding to float32 */
INLINE vd vexpd_lo(vd d, vd lo) {
    VEXPD_BODY(vd q = splatd(SKIT_ED_11); q = q * r + SKIT_ED_10; q = q * r + SKIT_ED_9;
               q = q * r + SKIT_ED_8; q = q * r + SKIT_ED_7; q = q * r + SKIT_ED_6;
               q = q * r + SKIT_ED_5; q = q * r + SKIT_ED_4; q = q * r + SKIT_ED_3;
               q = q * r + SKIT_ED_2;)
}

/* double-word exp(dh + dl) for dh in [-800, 0]: (*eh + *el) with ~2^-100 error
 * in the normal range (Tang's table method, see skit_dd.c). */
INLINE void vexpdd(vd dh, vd dl, vd *eh, vd *el) {
    const vd magic = splatd(6755399441055744.0);
    vl low = dh < -760.0;
    dh = seld(low, splatd(-760.0), dh);
    dl = seld(low, splatd(0.0), dl);
    vd t = dh * SKIT_DD_INV + magic;
    vd k = t - magic;
    vd r0 = dh - k * SKIT_DD_C1;
    vd re;
    vd rh = two_sum_v(r0, -(k * SKIT_DD_C2), &re);
    vd rl = re - k * SKIT_DD_C3 + dl;
    vd q = splatd(SKIT_DDP_6);
    q = q * rh + SKIT_DDP_5;
    q = q * rh + SKIT_DDP_4;
    q = q * rh + SKIT_DDP_3;
    q = q * rh + SKIT_DDP_2;
    vd plo = rl + rh * rl + (rh * rh) * q;
    vl ki = (vl)t - (vl)magic;
    vl j = ki & 63;
    vl m = ki >> 6;
    vd th, tl;
    for (int i = 0; i < ND; i++) {
        th[i] = skit_exp2_hi[j[i]];
        tl[i] = skit_exp2_lo[j[i]];
    }
    vd b;
    vd a = two_prod_v(th, rh, &b);
    vd rest = tl + th * plo + tl * (rh + plo);
    vd e;
    vd s = fast_two_sum_v(th, a, &e);
    e = e + (b + rest);
    vd lo;
    vd hi = fast_two_sum_v(s, e, &lo);
    vd scale = (vd)((m + (1023 + 128)) << 52);
    *eh = (hi * scale) * 0x1p-128;
    *el = (lo * scale) * 0x1p-128;
}

/* ---- scalar helpers shared by the engines ---------------------------------- */
static skit_dd log1p1_plain(skit_dd a) {
    return dd_make(log1p(a.hi) + a.lo / (1.0 + a.hi), 0.0);
}
static skit_dd exp1_dd(skit_dd d) { return skit_dd_exp(d); }
static skit_dd log1p1_dd(skit_dd a) { return skit_dd_log1p(a); }

#define SPECIAL_BODY(STYPE, SCALE)                                                     \
    const STYPE *xp = (const STYPE *)x;                                                \
    STYPE *op = (STYPE *)out;                                                          \
    STYPE fill = rs->kind == SKIT_ROW_NAN ? (STYPE)NAN : (islog ? (STYPE)-INFINITY : 0); \
    STYPE pin = islog ? (STYPE)(-log((double)rs->k)) : (STYPE)(1.0 / (double)rs->k);     \
    for (size_t i = 0; i < n; i++) {                                                   \
        STYPE v = fill;                                                                \
        if (rs->kind == SKIT_ROW_POSINF && (!mask || mask[i]) && SCALE == INFINITY)    \
            v = pin;                                                                   \
        op[i] = v;                                                                     \
    }

/* =========================== e32f: float32, fast ============================ */
typedef struct {
    vf m;
    vi nan, kinf;
} maxacc_f;

INLINE vf e32f_load(const float *x, const uint8_t *mask, float T) {
    vf v = ldf(x);
    if (T != 1.0f) v = v / T;
    if (mask) v = self(ldmf(mask), v, splatf(-INFINITY));
    return v;
}

INLINE void e32f_max_chunk(const float *x, const uint8_t *mask, float T, maxacc_f *a) {
    vf v = e32f_load(x, mask, T);
    a->nan |= (v != v);
    a->kinf -= (v == INFINITY);
    a->m = self(v > a->m, v, a->m);
}

typedef struct {
    vf c;
    vd s0, s1;
} sumacc_f;

INLINE vf e32f_exp_chunk(const float *x, const uint8_t *mask, float T, float m, float lowcut,
                         sumacc_f *a) {
    (void)lowcut;
    vf v = e32f_load(x, mask, T);
    vf d = v - m;
    vf bb = d - v;
    vf lo = (v - (d - bb)) + (-m - bb); /* TwoSum: d + lo == v - m exactly */
    vi low = d < -128.0f;               /* exp underflows to 0 (also -inf and overflowed d) */
    d = self(low, splatf(-128.0f), d);
    lo = (vf)(~low & (vi)lo);
    vf e = vexpf(d, lo);
    vi ismax = (v == m);
    a->c += (vf)(ismax & (vi)splatf(1.0f));
    vf es = (vf)(~ismax & (vi)e);
    vfh h0, h1;
    memcpy(&h0, &es, sizeof h0);
    memcpy(&h1, (char *)&es + sizeof h0, sizeof h1);
    a->s0 += __builtin_convertvector(h0, vd);
    a->s1 += __builtin_convertvector(h1, vd);
    return e;
}

static void e32f_stats(const void *xv, const uint8_t *mask, size_t n, double Td, skit_bstat *st,
                       void *store) {
    const float *x = (const float *)xv;
    float *so = (float *)store;
    float T = (float)Td;
    float xb[NF];
    uint8_t mb[NF];
    size_t i, r = n % NF, nf = n - r;
    if (r) {
        for (size_t k = 0; k < NF; k++) {
            xb[k] = k < r ? x[nf + k] : -INFINITY;
            mb[k] = k < r ? (mask ? mask[nf + k] : 1) : 0;
        }
    }
    maxacc_f ma = {splatf(-INFINITY), (vi){0}, (vi){0}};
    for (i = 0; i < nf; i += NF) e32f_max_chunk(x + i, mask ? mask + i : NULL, T, &ma);
    if (r) e32f_max_chunk(xb, mask ? mb : NULL, T, &ma);
    float m = -INFINITY;
    int nan = 0;
    int64_t kinf = 0;
    for (int k = 0; k < NF; k++) {
        if (ma.m[k] > m) m = ma.m[k];
        nan |= ma.nan[k] != 0;
        kinf += ma.kinf[k];
    }
    st->m = m;
    st->nan = nan;
    st->kinf = kinf;
    st->c = dd_make(0.0, 0.0);
    st->s = dd_make(0.0, 0.0);
    if (nan || kinf || m == -INFINITY) return;
    float lowcut = m - 128.0f;
    sumacc_f sa = {(vf){0}, (vd){0}, (vd){0}};
    for (i = 0; i < nf; i += NF) {
        vf e = e32f_exp_chunk(x + i, mask ? mask + i : NULL, T, m, lowcut, &sa);
        if (so) stf(so + i, e);
    }
    if (r) {
        vf e = e32f_exp_chunk(xb, mask ? mb : NULL, T, m, lowcut, &sa);
        if (so) memcpy(so + nf, &e, r * sizeof(float));
    }
    double c = 0.0, s = 0.0;
    for (int k = 0; k < NF; k++) c += sa.c[k];
    for (int k = 0; k < ND; k++) s += sa.s0[k];
    for (int k = 0; k < ND; k++) s += sa.s1[k];
    st->c = dd_make(c, 0.0);
    st->s = dd_make(s, 0.0);
}

/* the product in float64, so the factor adds no rounding of its own */
static void e32f_rescale(void *outv, size_t n, skit_dd f) {
    float *o = (float *)outv;
    double g = f.hi;
    size_t i = 0;
    for (; i + ND <= n; i += ND) stdf(o + i, ldfd(o + i) * g);
    for (; i < n; i++) o[i] = (float)((double)o[i] * g);
}

static void e32f_expscale(const void *xv, const uint8_t *mask, size_t n, double Td, double M,
                          skit_dd f, void *outv) {
    const float *x = (const float *)xv;
    float *o = (float *)outv;
    float T = (float)Td, m = (float)M, g = (float)f.hi;
    float lowcut = m - 128.0f;
    sumacc_f sa = {(vf){0}, (vd){0}, (vd){0}};
    float xb[NF];
    uint8_t mb[NF];
    size_t i, r = n % NF, nf = n - r;
    for (i = 0; i < nf; i += NF)
        stf(o + i, e32f_exp_chunk(x + i, mask ? mask + i : NULL, T, m, lowcut, &sa) * g);
    if (r) {
        for (size_t k = 0; k < NF; k++) {
            xb[k] = k < r ? x[nf + k] : -INFINITY;
            mb[k] = k < r ? (mask ? mask[nf + k] : 1) : 0;
        }
        vf e = e32f_exp_chunk(xb, mask ? mb : NULL, T, m, lowcut, &sa) * g;
        memcpy(o + nf, &e, r * sizeof(float));
    }
}

INLINE void e32f_logsub_chunk(const float *x, const uint8_t *mask, float T, double M, skit_dd L,
                              float *o) {
    vf v = ldf(x);
    if (T != 1.0f) v = v / T;
    vfh h0, h1;
    memcpy(&h0, &v, sizeof h0);
    memcpy(&h1, (char *)&v + sizeof h0, sizeof h1);
    vd a = (__builtin_convertvector(h0, vd) - M) - L.hi;
    vd b = (__builtin_convertvector(h1, vd) - M) - L.hi;
    h0 = __builtin_convertvector(a, vfh);
    h1 = __builtin_convertvector(b, vfh);
    memcpy(&v, &h0, sizeof h0);
    memcpy((char *)&v + sizeof h0, &h1, sizeof h1);
    if (mask) v = self(ldmf(mask), v, splatf(-INFINITY));
    stf(o, v);
}

static void e32f_logsub(const void *xv, const uint8_t *mask, size_t n, double Td, double M,
                        skit_dd L, void *outv) {
    const float *x = (const float *)xv;
    float *o = (float *)outv;
    float T = (float)Td;
    size_t i, r = n % NF, nf = n - r;
    for (i = 0; i < nf; i += NF) e32f_logsub_chunk(x + i, mask ? mask + i : NULL, T, M, L, o + i);
    if (r) {
        float xb[NF], ob[NF];
        uint8_t mb[NF];
        for (size_t k = 0; k < NF; k++) {
            xb[k] = k < r ? x[nf + k] : -INFINITY;
            mb[k] = k < r ? (mask ? mask[nf + k] : 1) : 0;
        }
        e32f_logsub_chunk(xb, mask ? mb : NULL, T, M, L, ob);
        memcpy(o + nf, ob, r * sizeof(float));
    }
}

static skit_dd e32f_scaled(const void *x, size_t i, double T) {
    float v = ((const float *)x)[i];
    if (T != 1.0) v = v / (float)T;
    return dd_make(v, 0.0);
}

static void e32f_special(const void *x, const uint8_t *mask, size_t n, double T,
                         const skit_rstat *rs, int islog, void *out) {
    SPECIAL_BODY(float, (T != 1.0 ? xp[i] / (float)T : xp[i]))
}

static const skit_engine e32f = {
    4,           e32f_stats, e32f_expscale, e32f_rescale, e32f_logsub,
    e32f_scaled, exp1_dd,    log1p1_plain,  e32f_special, 1,
};

/* ========================= e32a: float32, accurate ========================== */
typedef struct {
    vd m;
    vl nan, kinf;
} maxacc_d;

INLINE vd e32a_load(const float *x, const uint8_t *mask, double T) {
    vd v = ldfd(x);
    if (T != 1.0) v = v / T;
    if (mask) v = seld(ldmd(mask), v, splatd(-INFINITY));
    return v;
}

INLINE void maxd_update(vd v, maxacc_d *a) {
    a->nan |= (v != v);
    a->kinf -= (v == INFINITY);
    a->m = seld(v > a->m, v, a->m);
}

typedef struct {
    vd c, s;
} sumacc_d;

INLINE vd e32a_exp_chunk(const float *x, const uint8_t *mask, double T, double m, sumacc_d *a) {
    vd v = e32a_load(x, mask, T);
    vd e = vexpd_lo(v - m, (vd){0});
    vl ismax = (v == m);
    a->c += (vd)(ismax & (vl)e);
    a->s += (vd)(~ismax & (vl)e);
    return e;
}

#define TAIL_PREP(STYPE, W)                                        \
    STYPE xb[W];                                                   \
    uint8_t mb[W];                                                 \
    size_t i, r = n % (W), nf = n - r;                             \
    if (r) {                                                       \
        for (size_t k = 0; k < (W); k++) {                         \
            xb[k] = k < r ? x[nf + k] : (STYPE)-INFINITY;          \
            mb[k] = k < r ? (mask ? mask[nf + k] : 1) : 0;         \
        }                                                          \
    }

INLINE void finish_max_d(const maxacc_d *ma, skit_bstat *st) {
    double m = -INFINITY;
    int nan = 0;
    int64_t kinf = 0;
    for (int k = 0; k < ND; k++) {
        if (ma->m[k] > m) m = ma->m[k];
        nan |= ma->nan[k] != 0;
        kinf += ma->kinf[k];
    }
    st->m = m;
    st->nan = nan;
    st->kinf = kinf;
    st->c = dd_make(0.0, 0.0);
    st->s = dd_make(0.0, 0.0);
}

static void e32a_stats(const void *xv, const uint8_t *mask, size_t n, double T, skit_bstat *st,
                       void *store) {
    (void)store;
    const float *x = (const float *)xv;
    TAIL_PREP(float, ND)
    maxacc_d ma = {splatd(-INFINITY), (vl){0}, (vl){0}};
    for (i = 0; i < nf; i += ND) maxd_update(e32a_load(x + i, mask ? mask + i : NULL, T), &ma);
    if (r) maxd_update(e32a_load(xb, mask ? mb : NULL, T), &ma);
    finish_max_d(&ma, st);
    if (st->nan || st->kinf || st->m == -INFINITY) return;
    double m = st->m;
    sumacc_d sa = {(vd){0}, (vd){0}};
    for (i = 0; i < nf; i += ND) e32a_exp_chunk(x + i, mask ? mask + i : NULL, T, m, &sa);
    if (r) e32a_exp_chunk(xb, mask ? mb : NULL, T, m, &sa);
    double c = 0.0, s = 0.0;
    for (int k = 0; k < ND; k++) {
        c += sa.c[k];
        s += sa.s[k];
    }
    st->c = dd_make(c, 0.0);
    st->s = dd_make(s, 0.0);
}

static void e32a_expscale(const void *xv, const uint8_t *mask, size_t n, double T, double M,
                          skit_dd f, void *outv) {
    const float *x = (const float *)xv;
    float *o = (float *)outv;
    TAIL_PREP(float, ND)
    for (i = 0; i < nf; i += ND) {
        vd v = e32a_load(x + i, mask ? mask + i : NULL, T);
        stdf(o + i, vexpd_lo(v - M, (vd){0}) * f.hi);
    }
    if (r) {
        float ob[ND];
        vd v = e32a_load(xb, mask ? mb : NULL, T);
        stdf(ob, vexpd_lo(v - M, (vd){0}) * f.hi);
        memcpy(o + nf, ob, r * sizeof(float));
    }
}

static void e32a_rescale(void *outv, size_t n, skit_dd f) {
    float *o = (float *)outv;
    for (size_t i = 0; i < n; i++) o[i] = (float)((double)o[i] * f.hi);
}

static void e32a_logsub(const void *xv, const uint8_t *mask, size_t n, double T, double M,
                        skit_dd L, void *outv) {
    const float *x = (const float *)xv;
    float *o = (float *)outv;
    TAIL_PREP(float, ND)
    for (i = 0; i < nf; i += ND) {
        vd v = e32a_load(x + i, mask ? mask + i : NULL, T);
        stdf(o + i, ((v - M) - L.hi) - L.lo);
    }
    if (r) {
        float ob[ND];
        vd v = e32a_load(xb, mask ? mb : NULL, T);
        stdf(ob, ((v - M) - L.hi) - L.lo);
        memcpy(o + nf, ob, r * sizeof(float));
    }
}

static skit_dd e32a_scaled(const void *x, size_t i, double T) {
    double v = ((const float *)x)[i];
    if (T != 1.0) v = v / T;
    return dd_make(v, 0.0);
}

static void e32a_special(const void *x, const uint8_t *mask, size_t n, double T,
                         const skit_rstat *rs, int islog, void *out) {
    SPECIAL_BODY(float, (T != 1.0 ? (double)xp[i] / T : (double)xp[i]))
}

static const skit_engine e32a = {
    4,           e32a_stats, e32a_expscale, e32a_rescale, e32a_logsub,
    e32a_scaled, exp1_dd,    log1p1_plain,  e32a_special, 0,
};

/* =========================== e64f: float64, fast ============================ */
INLINE vd e64_load(const double *x, const uint8_t *mask, double T) {
    vd v = ldd(x);
    if (T != 1.0) v = v / T;
    if (mask) v = seld(ldmd(mask), v, splatd(-INFINITY));
    return v;
}

typedef struct {
    vd c, s, serr;
} sumacc_dc;

INLINE vd e64f_exp_chunk(const double *x, const uint8_t *mask, double T, double m, double lowcut,
                         sumacc_dc *a) {
    (void)lowcut;
    vd v = e64_load(x, mask, T);
    vd lo;
    vd d = two_sum_v(v, splatd(-m), &lo);
    vl low = d < -800.0; /* exp underflows to 0 (also -inf and overflowed d) */
    d = seld(low, splatd(-800.0), d);
    lo = (vd)(~low & (vl)lo);
    vd e = vexpd_hi(d, lo);
    vl ismax = (v == m);
    a->c += (vd)(ismax & (vl)e);
    vd es = (vd)(~ismax & (vl)e);
    vd err;
    a->s = two_sum_v(a->s, es, &err);
    a->serr += err;
    return e;
}

static void e64f_stats(const void *xv, const uint8_t *mask, size_t n, double T, skit_bstat *st,
                       void *store) {
    const double *x = (const double *)xv;
    double *so = (double *)store;
    TAIL_PREP(double, ND)
    maxacc_d ma = {splatd(-INFINITY), (vl){0}, (vl){0}};
    for (i = 0; i < nf; i += ND) maxd_update(e64_load(x + i, mask ? mask + i : NULL, T), &ma);
    if (r) maxd_update(e64_load(xb, mask ? mb : NULL, T), &ma);
    finish_max_d(&ma, st);
    if (st->nan || st->kinf || st->m == -INFINITY) return;
    double m = st->m, lowcut = m - 800.0;
    sumacc_dc sa = {(vd){0}, (vd){0}, (vd){0}};
    for (i = 0; i < nf; i += ND) {
        vd e = e64f_exp_chunk(x + i, mask ? mask + i : NULL, T, m, lowcut, &sa);
        if (so) std_(so + i, e);
    }
    if (r) {
        vd e = e64f_exp_chunk(xb, mask ? mb : NULL, T, m, lowcut, &sa);
        if (so) memcpy(so + nf, &e, r * sizeof(double));
    }
    double c = 0.0;
    skit_dd s = dd_make(0.0, 0.0);
    for (int k = 0; k < ND; k++) {
        c += sa.c[k];
        s = dd_add(s, dd_make(sa.s[k], sa.serr[k]));
    }
    st->c = dd_make(c, 0.0);
    st->s = s;
}

static void e64f_expscale(const void *xv, const uint8_t *mask, size_t n, double T, double M,
                          skit_dd f, void *outv) {
    const double *x = (const double *)xv;
    double *o = (double *)outv;
    double lowcut = M - 800.0;
    sumacc_dc sa = {(vd){0}, (vd){0}, (vd){0}};
    TAIL_PREP(double, ND)
    for (i = 0; i < nf; i += ND)
        std_(o + i, e64f_exp_chunk(x + i, mask ? mask + i : NULL, T, M, lowcut, &sa) * f.hi);
    if (r) {
        vd e = e64f_exp_chunk(xb, mask ? mb : NULL, T, M, lowcut, &sa) * f.hi;
        memcpy(o + nf, &e, r * sizeof(double));
    }
}

INLINE vd dd_mul_round(vd eh, vd el, skit_dd f) {
    vd pe;
    vd p = two_prod_v(eh, splatd(f.hi), &pe);
    return p + (pe + (eh * f.lo + el * f.hi));
}

/* o * (f.hi + f.lo) with one rounding */
static void e64f_rescale(void *outv, size_t n, skit_dd f) {
    double *o = (double *)outv;
    size_t i = 0;
    for (; i + ND <= n; i += ND) std_(o + i, dd_mul_round(ldd(o + i), (vd){0}, f));
    for (; i < n; i++) o[i] = dd_value(dd_mul(dd_make(o[i], 0.0), f));
}

INLINE vd logsub_dd(vd v, vd vlo, double M, skit_dd L) {
    /* ((v + vlo) - M) - L with one final rounding */
    vd e1;
    vd d = two_sum_v(v, splatd(-M), &e1);
    vd e2;
    vd s = two_sum_v(d, splatd(-L.hi), &e2);
    return s + (e2 + ((e1 + vlo) - L.lo));
}

static void e64f_logsub(const void *xv, const uint8_t *mask, size_t n, double T, double M,
                        skit_dd L, void *outv) {
    const double *x = (const double *)xv;
    double *o = (double *)outv;
    TAIL_PREP(double, ND)
    const vd ninf = splatd(-INFINITY);
    for (i = 0; i < nf; i += ND) {
        vd v = e64_load(x + i, mask ? mask + i : NULL, T);
        std_(o + i, seld(v == -INFINITY, ninf, logsub_dd(v, (vd){0}, M, L)));
    }
    if (r) {
        vd v = e64_load(xb, mask ? mb : NULL, T);
        vd w = seld(v == -INFINITY, ninf, logsub_dd(v, (vd){0}, M, L));
        memcpy(o + nf, &w, r * sizeof(double));
    }
}

static skit_dd e64f_scaled(const void *x, size_t i, double T) {
    double v = ((const double *)x)[i];
    if (T != 1.0) v = v / T;
    return dd_make(v, 0.0);
}

static void e64_special(const void *x, const uint8_t *mask, size_t n, double T,
                        const skit_rstat *rs, int islog, void *out) {
    SPECIAL_BODY(double, (T != 1.0 ? xp[i] / T : xp[i]))
}

static const skit_engine e64f = {
    8,           e64f_stats, e64f_expscale, e64f_rescale, e64f_logsub,
    e64f_scaled, exp1_dd,    log1p1_plain,  e64_special,  1,
};

/* ========================= e64a: float64, accurate ========================== */

/* x / T as a double-word number (exact remainder by a fused multiply-add) */
INLINE vd e64a_load(const double *x, const uint8_t *mask, double T, vd *lo) {
    vd v = ldd(x);
    vd l = (vd){0};
    if (T != 1.0) {
        vd q = v / T;
        vd pe;
        vd p = two_prod_v(q, splatd(T), &pe);
        vd rem = (v - p) - pe;
        l = seld(q - q == 0.0, rem / T, (vd){0}); /* 0 where q is inf or NaN */
        v = q;
    }
    if (mask) {
        vl mm = ldmd(mask);
        v = seld(mm, v, splatd(-INFINITY));
        l = seld(mm, l, (vd){0});
    }
    *lo = l;
    return v;
}

typedef struct {
    vd c, sh, sl;
} sumacc_dd;

INLINE void e64a_exp(vd v, vd vlo, double m, vd *eh, vd *el) {
    vd e1;
    vd d = two_sum_v(v, splatd(-m), &e1);
    vl low = d < -800.0; /* exp underflows to 0 (also -inf and overflowed d) */
    d = seld(low, splatd(-800.0), d);
    vd t = (vd)(~low & (vl)(e1 + vlo));
    vd dl;
    vd dh = fast_two_sum_v(d, t, &dl);
    vexpdd(dh, dl, eh, el);
}

INLINE void e64a_exp_chunk(const double *x, const uint8_t *mask, double T, double m,
                           sumacc_dd *a) {
    vd vlo;
    vd v = e64a_load(x, mask, T, &vlo);
    vd eh, el;
    e64a_exp(v, vlo, m, &eh, &el);
    /* a maximal entry counts 1 in c and its exp(x_lo) - 1 (0 unless T != 1) in s */
    vl ismax = (v == m);
    a->c += (vd)(ismax & (vl)splatd(1.0));
    vd hs = seld(ismax, eh - 1.0, eh);
    vd err;
    a->sh = two_sum_v(a->sh, hs, &err);
    a->sl += err + el;
}

INLINE void e64a_max_chunk(const double *x, const uint8_t *mask, double T, maxacc_d *a) {
    vd lo;
    maxd_update(e64a_load(x, mask, T, &lo), a);
}

static void e64a_stats(const void *xv, const uint8_t *mask, size_t n, double T, skit_bstat *st,
                       void *store) {
    (void)store;
    const double *x = (const double *)xv;
    TAIL_PREP(double, ND)
    maxacc_d ma = {splatd(-INFINITY), (vl){0}, (vl){0}};
    for (i = 0; i < nf; i += ND) e64a_max_chunk(x + i, mask ? mask + i : NULL, T, &ma);
    if (r) e64a_max_chunk(xb, mask ? mb : NULL, T, &ma);
    finish_max_d(&ma, st);
    if (st->nan || st->kinf || st->m == -INFINITY) return;
    double m = st->m;
    sumacc_dd sa = {(vd){0}, (vd){0}, (vd){0}};
    for (i = 0; i < nf; i += ND) e64a_exp_chunk(x + i, mask ? mask + i : NULL, T, m, &sa);
    if (r) e64a_exp_chunk(xb, mask ? mb : NULL, T, m, &sa);
    double c = 0.0;
    skit_dd s = dd_make(0.0, 0.0);
    for (int k = 0; k < ND; k++) {
        c += sa.c[k];
        s = dd_add(s, dd_make(sa.sh[k], sa.sl[k]));
    }
    st->c = dd_make(c, 0.0);
    st->s = s;
}


static void e64a_expscale(const void *xv, const uint8_t *mask, size_t n, double T, double M,
                          skit_dd f, void *outv) {
    const double *x = (const double *)xv;
    double *o = (double *)outv;
    TAIL_PREP(double, ND)
    for (i = 0; i < nf; i += ND) {
        vd vlo, eh, el;
        vd v = e64a_load(x + i, mask ? mask + i : NULL, T, &vlo);
        e64a_exp(v, vlo, M, &eh, &el);
        std_(o + i, dd_mul_round(eh, el, f));
    }
    if (r) {
        vd vlo, eh, el;
        vd v = e64a_load(xb, mask ? mb : NULL, T, &vlo);
        e64a_exp(v, vlo, M, &eh, &el);
        vd w = dd_mul_round(eh, el, f);
        memcpy(o + nf, &w, r * sizeof(double));
    }
}

static void e64a_rescale(void *outv, size_t n, skit_dd f) {
    double *o = (double *)outv;
    size_t i = 0;
    for (; i + ND <= n; i += ND) std_(o + i, dd_mul_round(ldd(o + i), (vd){0}, f));
    for (; i < n; i++) o[i] = dd_value(dd_mul(dd_make(o[i], 0.0), f));
}

static void e64a_logsub(const void *xv, const uint8_t *mask, size_t n, double T, double M,
                        skit_dd L, void *outv) {
    const double *x = (const double *)xv;
    double *o = (double *)outv;
    const vd ninf = splatd(-INFINITY);
    TAIL_PREP(double, ND)
    for (i = 0; i < nf; i += ND) {
        vd vlo;
        vd v = e64a_load(x + i, mask ? mask + i : NULL, T, &vlo);
        std_(o + i, seld(v == -INFINITY, ninf, logsub_dd(v, vlo, M, L)));
    }
    if (r) {
        vd vlo;
        vd v = e64a_load(xb, mask ? mb : NULL, T, &vlo);
        vd w = seld(v == -INFINITY, ninf, logsub_dd(v, vlo, M, L));
        memcpy(o + nf, &w, r * sizeof(double));
    }
}

static skit_dd e64a_scaled(const void *x, size_t i, double T) {
    double v = ((const double *)x)[i];
    if (T == 1.0) return dd_make(v, 0.0);
    double q = v / T;
    if (!isfinite(q)) return dd_make(q, 0.0);
    double rem = fma(-q, T, v);
    return dd_make(q, rem / T);
}

static const skit_engine e64a = {
    8,           e64a_stats, e64a_expscale, e64a_rescale, e64a_logsub,
    e64a_scaled, exp1_dd,    log1p1_dd,     e64_special,  0,
};

const skit_isa_table SKIT_TABLE = {ISA_NAME, {{&e32f, &e32a}, {&e64f, &e64a}}};
