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
#include <emmintrin.h>
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
/* log_softmax rows whose rest sum is below this go to the general path (driver.c:
 * tiny_rest_row) */
#define TINY_REST_F 0x1p-120f
#define TINY_REST_D 0x1p-120

typedef float vf __attribute__((vector_size(VB)));
typedef int32_t vi __attribute__((vector_size(VB)));
typedef double vd __attribute__((vector_size(VB)));
typedef int64_t vl __attribute__((vector_size(VB)));
typedef uint64_t vu __attribute__((vector_size(VB)));
typedef float vfh __attribute__((vector_size(VB / 2)));
typedef uint8_t vmf __attribute__((vector_size(NF)));
typedef uint8_t vmd __attribute__((vector_size(ND)));

#define INLINE static inline __attribute__((always_inline))

/* halves of a float vector as float vectors of ND lanes, and back, in registers */
#if VB == 64
#define LO_IDX 0, 1, 2, 3, 4, 5, 6, 7
#define HI_IDX 8, 9, 10, 11, 12, 13, 14, 15
#define ALL_IDX 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
#elif VB == 32
#define LO_IDX 0, 1, 2, 3
#define HI_IDX 4, 5, 6, 7
#define ALL_IDX 0, 1, 2, 3, 4, 5, 6, 7
#else
#define LO_IDX 0, 1
#define HI_IDX 2, 3
#define ALL_IDX 0, 1, 2, 3
#endif
#define LO_HALF(v) __builtin_shufflevector((v), (v), LO_IDX)
#define HI_HALF(v) __builtin_shufflevector((v), (v), HI_IDX)
#define JOIN_HALVES(a, b) __builtin_shufflevector((a), (b), ALL_IDX)

/* float <-> double conversions of vector halves. GCC lowers the generic
 * __builtin_convertvector of a half vector two lanes at a time through the
 * stack, so the x86 builds use the one-instruction intrinsics. */
INLINE vd cvt_lo(vf v) {
#if defined(__AVX512F__)
    return (vd)_mm512_cvtps_pd(_mm512_castps512_ps256((__m512)v));
#elif defined(__AVX__)
    return (vd)_mm256_cvtps_pd(_mm256_castps256_ps128((__m256)v));
#elif defined(__SSE2__)
    return (vd)_mm_cvtps_pd((__m128)v);
#else
    return __builtin_convertvector(LO_HALF(v), vd);
#endif
}
INLINE vd cvt_hi(vf v) {
#if defined(__AVX512F__)
    return (vd)_mm512_cvtps_pd(_mm512_extractf32x8_ps((__m512)v, 1));
#elif defined(__AVX__)
    return (vd)_mm256_cvtps_pd(_mm256_extractf128_ps((__m256)v, 1));
#elif defined(__SSE2__)
    return (vd)_mm_cvtps_pd(_mm_movehl_ps((__m128)v, (__m128)v));
#else
    return __builtin_convertvector(HI_HALF(v), vd);
#endif
}
INLINE vfh cvt_half(vd v) {
#if defined(__AVX512F__)
    return (vfh)_mm512_cvtpd_ps((__m512d)v);
#elif defined(__AVX__)
    return (vfh)_mm256_cvtpd_ps((__m256d)v);
#else
    return __builtin_convertvector(v, vfh);
#endif
}
INLINE vf cvt_join(vd a, vd b) {
#if defined(__AVX512F__)
    return (vf)_mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps((__m512d)a)),
                                  _mm512_cvtpd_ps((__m512d)b), 1);
#elif defined(__AVX__)
    return (vf)_mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps((__m256d)a)),
                                    _mm256_cvtpd_ps((__m256d)b), 1);
#elif defined(__SSE2__)
    return (vf)_mm_movelh_ps(_mm_cvtpd_ps((__m128d)a), _mm_cvtpd_ps((__m128d)b));
#else
    return JOIN_HALVES(__builtin_convertvector(a, vfh), __builtin_convertvector(b, vfh));
#endif
}

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
/* The first cnt (< NF) floats at p, lanes beyond from `fill`; and the first cnt
 * lanes of v stored to p. AVX-512 masks the lanes (no bytes beyond p + cnt are
 * touched, and no bounce through a stack buffer); other ISAs copy. */
INLINE vf ldf_part(const float *p, size_t cnt, vf fill) {
#if defined(__AVX512F__)
    return (vf)_mm512_mask_loadu_ps((__m512)fill, (__mmask16)((1u << cnt) - 1u), p);
#else
    memcpy(&fill, p, cnt * sizeof(float));
    return fill;
#endif
}
INLINE void stf_part(float *p, vf v, size_t cnt) {
#if defined(__AVX512F__)
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << cnt) - 1u), (__m512)v);
#else
    memcpy(p, &v, cnt * sizeof(float));
#endif
}
/* ND floats widened to doubles, and back */
INLINE vd ldfd(const float *p) {
#if defined(__AVX512F__)
    return (vd)_mm512_cvtps_pd(_mm256_loadu_ps(p));
#elif defined(__AVX__)
    return (vd)_mm256_cvtps_pd(_mm_loadu_ps(p));
#else
    vfh h;
    memcpy(&h, p, sizeof h);
    return __builtin_convertvector(h, vd);
#endif
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
/* every lane a, -0 included (a - 0 is a; 0 + a would turn -0 into +0) */
INLINE vf splatf(float a) { return a - (vf){0}; }
INLINE vd splatd(double a) { return a - (vd){0}; }

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

/* float32 exp(d + lo) for d in [-128, 0] (callers clamp), |lo| <= ulp(d); degree-6
 * near-minimax polynomial (tools/gen_consts.py).
 * Results below 2^-126 are rounded once into the subnormal range. */
INLINE vf vexpf_s(vf d, vf lo);
INLINE vf vexpf(vf d, vf lo) { return vexpf_s(d, lo) * 0x1p-64f; }
/* the same times 2^64: normal for every d >= -128 */
INLINE vf vexpf_s(vf d, vf lo) {
    const vf magic = splatf(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
    vf t = d * SKIT_LOG2E_F + magic;
    vf k = t - magic;
    vf r = d - k * SKIT_LN2_1_F;
    r = r - k * SKIT_LN2_2_F;
    r = r + lo;
    vf q = splatf(SKIT_EP_4);
    q = q * r + SKIT_EP_3;
    q = q * r + SKIT_EP_2;
    q = q * r + SKIT_EP_1;
    q = q * r + SKIT_EP_0;
    vf p = 1.0f + (r + (r * r) * q);
    vi ki = (vi)t - (vi)magic;
    vf scale = (vf)((ki + (127 + 64)) << 23); /* 2^(k + 64), normal for k >= -190 */
    return p * scale;
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
    VEXPD_SCALE
#if defined(__AVX512F__)
/* p 2^k rounded once, as the product by 2^(k+128) (exact) then by 2^-128 */
#define VEXPD_SCALE return (vd)_mm512_scalef_pd((__m512d)p, (__m512d)k);
#else
#define VEXPD_SCALE                                                     \
    vl ki = (vl)t - (vl)magic;                                          \
    vd scale = (vd)((ki + (1023 + 128)) << 52);                         \
    return (p * scale) * 0x1p-128;
#endif

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

/* float64 exp(d) for d in [-708, 0] or NaN, for results rounded once to float32 (no
 * range handling: callers clamp; see e32a_stats_plain).
 * AVX-512: exp(d) = 2^m 2^(j/16) exp(r), |r| <= ln2/32, with the 16 entries 2^(j/16)
 * in two registers read by one two-source permute and exp(r) = 1 + r + r^2 Q(r) of
 * degree 4 (Q near-minimax, tools/gen_consts.py): at most 2^-37 relative error, and
 * ten vector operations per 8 lanes. d log2(e) is rounded to a multiple of 1/16 by
 * the rounding constant 1.5 2^48, whose sum with it carries 16 (m + j/16) in its low
 * bits (the permute reads j from the low four), and vscalefpd multiplies by 2^m,
 * the floor of that multiple.
 * Elsewhere: a degree-7 near-minimax polynomial on |r| <= ln2/2, no table: at most
 * 2^-34 (6e-11, under a thousandth of a float32 ulp). */
#if defined(__AVX512F__)
/* AVX-512: the table 2^(j/16) (double-word: value = hi + lo, 60-digit rounding by
 * mpmath) lives in four registers. vexpd_tab_hi_s reads both halves by two-source
 * permutes instead of two gathers (expm1(r) on |r| <= ln2/32 by degree 7, error
 * 2^-59 relative); vexpd_p7_plain reads the high half alone. */
static const double skit_exp2_16[32] __attribute__((aligned(64))) = {
    0x1.0000000000000p+0, 0x1.0b5586cf9890fp+0, 0x1.172b83c7d517bp+0, 0x1.2387a6e756238p+0,
    0x1.306fe0a31b715p+0, 0x1.3dea64c123422p+0, 0x1.4bfdad5362a27p+0, 0x1.5ab07dd485429p+0,
    0x1.6a09e667f3bcdp+0, 0x1.7a11473eb0187p+0, 0x1.8ace5422aa0dbp+0, 0x1.9c49182a3f090p+0,
    0x1.ae89f995ad3adp+0, 0x1.c199bdd85529cp+0, 0x1.d5818dcfba487p+0, 0x1.ea4afa2a490dap+0,
    0x0.0p+0, 0x1.8a62e4adc610bp-54, -0x1.19041b9d78a76p-55, 0x1.9b07eb6c70573p-54,
    0x1.6f46ad23182e4p-55, 0x1.ada0911f09ebcp-55, 0x1.d4397afec42e2p-56, 0x1.6324c054647adp-54,
    -0x1.bdd3413b26456p-54, -0x1.41577ee04992fp-55, 0x1.6e9f156864b27p-54, 0x1.c7c46b071f2bep-56,
    0x1.7a1cd345dcc81p-54, 0x1.11065895048ddp-55, 0x1.2ed02d75b3707p-55, -0x1.e9c23179c2893p-54,
};
/* In two steps, so that a loop can reduce the next vector's arguments while it finishes
 * this one's (see e32a_stats_plain): vexpd_p7_red gives the reduced argument r and the
 * scale s, vexpd_p7_fin(r, s) = exp(d). */
INLINE void vexpd_p7_red(vd d, vd *r, vd *s) {
    const vd magic = splatd(0x1.8p+48);
    vd t = d * 0x1.71547652b82fep+0 + magic;
    vd k = t - magic; /* d log2(e) to a multiple of 1/16 */
    *r = d - k * 0x1.62e42fefa39efp-1;
    vd th = (vd)_mm512_permutex2var_pd(_mm512_load_pd(skit_exp2_16), (__m512i)t,
                                       _mm512_load_pd(skit_exp2_16 + 8));
    /* the entry scaled by 2^k while the polynomial is formed (exact: 2^(j/16) 2^k is
     * normal for d >= -708), then one product: the same bits as scaling th * q */
    *s = (vd)_mm512_scalef_pd((__m512d)th, (__m512d)k);
}
INLINE vd vexpd_p7_fin(vd r, vd s) {
    vd q = splatd(SKIT_EX4_2);
    q = q * r + SKIT_EX4_1;
    q = q * r + SKIT_EX4_0;
    q = q * r + 1.0;
    q = q * r + 1.0;
    return s * q;
}
#else
INLINE void vexpd_p7_red(vd d, vd *r, vd *s) {
    const vd magic = splatd(6755399441056767.0); /* 1.5 * 2^52 + 1023 */
    vd t = d * SKIT_LOG2E_D + magic;
    vd k = t - magic;
    *r = d - k * 0x1.62e42fefa39efp-1;
    *s = (vd)((vl)t << 52);
}
/* exp(r) = 1 + (r + r^2 Q(r)), Q of degree 5 in Estrin's order: three independent
 * pairs joined by r^2, four operations deep after r^2 where Horner's rule was eight,
 * for the same count of operations. On a core with few scheduler entries for
 * vector work the long chain stalled the loops (AMD EPYC with AVX2 only, session
 * 37, one thread, kbench medians of five alternated runs: a bare loop of this exp
 * over float32 data 1.98 -> 1.17 ns an element; accurate softmax 256x1000 2.54 ->
 * 2.43, cross-entropy with its gradient 4096x1000 3.20 -> 2.99). The error is the
 * polynomial's 2^-34 plus a few float64 roundings, as before. */
INLINE vd vexpd_p7_fin(vd r, vd s) {
    vd r2 = r * r;
    vd q01 = SKIT_EQ_1 * r + SKIT_EQ_0;
    vd q23 = SKIT_EQ_3 * r + SKIT_EQ_2;
    vd q45 = SKIT_EQ_5 * r + SKIT_EQ_4;
    vd q = (q45 * r2 + q23) * r2 + q01;
    return ((q * r2 + r) + 1.0) * s;
}
#endif
INLINE vd vexpd_p7_plain(vd d) {
    vd r, s;
    vexpd_p7_red(d, &r, &s);
    return vexpd_p7_fin(r, s);
}

/* -|d|, and d itself where d is NaN (its sign and payload kept) */
INLINE vd vnabs_d(vd d) {
#if defined(__AVX512F__)
    return (vd)_mm512_min_pd((__m512d)(-d), (__m512d)d);
#elif defined(__AVX__)
    return (vd)_mm256_min_pd((__m256d)(-d), (__m256d)d);
#elif defined(__SSE2__)
    return (vd)_mm_min_pd((__m128d)(-d), (__m128d)d);
#else
    return seld(d > 0.0, -d, d);
#endif
}

/* max(lo, d), d where d is NaN */
INLINE vd vclamp_low_d(vd d, vd lo) {
#if defined(__AVX512F__)
    return (vd)_mm512_max_pd((__m512d)lo, (__m512d)d);
#elif defined(__AVX__)
    return (vd)_mm256_max_pd((__m256d)lo, (__m256d)d);
#elif defined(__SSE2__)
    return (vd)_mm_max_pd((__m128d)lo, (__m128d)d);
#else
    return seld(d < lo, lo, d);
#endif
}

/* float64 exp(d + lo) for d <= 0 to about 1 ulp (float64 fast mode): 2^(j/256)
 * as a double-word table entry T, expm1(r) by a degree-5 polynomial on
 * |r| <= ln2/512, exp = T_hi + (T_hi expm1(r) + T_lo) */
INLINE vd vexpd_tab_hi_s(vd d, vd lo);
INLINE vd vexpd_tab_hi(vd d, vd lo) { return vexpd_tab_hi_s(d, lo) * 0x1p-128; }
/* the same times 2^128: normal for every d >= -760 */
#if defined(__AVX512F__)
INLINE vd vexpd_tab_hi_s(vd d, vd lo) {
    const vd magic = splatd(6755399441055744.0);
    vd dc = (vd)_mm512_max_pd(_mm512_set1_pd(-760.0), (__m512d)d); /* NaN passes */
    vd t = dc * 0x1.71547652b82fep+4 + magic;
    vd k = t - magic;
    vd r = dc - k * 0x1.62e42fefa0000p-5;
    r = (r - k * 0x1.cf79abc9e3b3ap-44) + lo;
    vd q = splatd(1.0 / 5040.0);
    q = q * r + 1.0 / 720.0;
    q = q * r + 1.0 / 120.0;
    q = q * r + 1.0 / 24.0;
    q = q * r + 1.0 / 6.0;
    q = q * r + 0.5;
    q = r + (r * r) * q;
    __m512i idx = (__m512i)t; /* the permutes read the low 4 bits: j */
    vd th = (vd)_mm512_permutex2var_pd(_mm512_load_pd(skit_exp2_16), idx,
                                       _mm512_load_pd(skit_exp2_16 + 8));
    vd tl = (vd)_mm512_permutex2var_pd(_mm512_load_pd(skit_exp2_16 + 16), idx,
                                       _mm512_load_pd(skit_exp2_16 + 24));
    vl m = ((vl)t - (vl)magic) >> 4;
    vd e = th + (th * q + tl);
    vd scale = (vd)((m + (1023 + 128)) << 52);
    return e * scale;
}
#else
INLINE vd vexpd_tab_hi_s(vd d, vd lo) {
    const vd magic = splatd(6755399441055744.0);
    vd dc = seld(d < -760.0, splatd(-760.0), d);
    vd t = dc * SKIT_T256_INV + magic;
    vd k = t - magic;
    vd r = dc - k * SKIT_T256_C1;
    r = (r - k * SKIT_T256_C2) + lo;
    vd q = r + (r * r) * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0))));
    vl ki = (vl)t - (vl)magic;
    vl j = ki & 255;
    vl m = ki >> 8;
    vd th, tl;
#if defined(__AVX512F__)
    th = (vd)_mm512_i64gather_pd((__m512i)j, skit_exp2_256, 8);
    tl = (vd)_mm512_i64gather_pd((__m512i)j, skit_exp2_256lo, 8);
#elif defined(__AVX2__)
    /* eight scalar loads, not two vgatherqpd: on AMD Zen 3 the gathers took about
     * 0.5 ns an element more (a loop of this lookup alone, one thread: 1.12 against
     * 0.60 ns); the same entries, so the same bits */
    int64_t jj[4] __attribute__((aligned(32)));
    _mm256_store_si256((__m256i *)jj, (__m256i)j);
    th = (vd)_mm256_set_pd(skit_exp2_256[jj[3]], skit_exp2_256[jj[2]], skit_exp2_256[jj[1]],
                           skit_exp2_256[jj[0]]);
    tl = (vd)_mm256_set_pd(skit_exp2_256lo[jj[3]], skit_exp2_256lo[jj[2]],
                           skit_exp2_256lo[jj[1]], skit_exp2_256lo[jj[0]]);
#else
    for (int i = 0; i < ND; i++) {
        th[i] = skit_exp2_256[j[i]];
        tl[i] = skit_exp2_256lo[j[i]];
    }
#endif
    vd e = th + (th * q + tl);
    vd scale = (vd)((m + (1023 + 128)) << 52);
    return e * scale;
}
#endif

/* double-word exp(dh + dl) for dh in [-800, 0]: (*eh + *el) with ~2^-100 error
 * in the normal range (Tang's table method, see skit_dd.c). */
INLINE void vexpdd_s(vd dh, vd dl, vd *eh, vd *el);
/* double-word exp(dh + dl), normal or rounded once into the subnormal range */
INLINE void vexpdd(vd dh, vd dl, vd *eh, vd *el) {
    vexpdd_s(dh, dl, eh, el);
    *eh = *eh * 0x1p-128;
    *el = *el * 0x1p-128;
}
/* the same times 2^128: always normal for dh >= -760, so sums of tiny terms stay exact */
INLINE void vexpdd_s(vd dh, vd dl, vd *eh, vd *el) {
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
    *eh = hi * scale;
    *el = lo * scale;
}

/* int64 lanes of magnitude below 2^51 as doubles, exactly. Below AVX-512DQ there is
 * no vector conversion and GCC converts lane by lane through scalar registers; here
 * the bits of 1.5 * 2^52 + k (k added to those of 1.5 * 2^52) less 1.5 * 2^52. */
INLINE vd small_l2d(vl k) {
#if defined(__AVX512DQ__)
    return __builtin_convertvector(k, vd);
#else
    return (vd)(k + 0x4338000000000000LL) - 0x1.8p52;
#endif
}

/* float64 log1p(a) for a >= 0, about 1.5 ulp (vlog1p_d: a vector of row sums).
 * 1 + a = 2^k f with f in [sqrt(1/2), sqrt(2)), log f by eleven terms of the atanh
 * series, and the rounding error of 1 + a, (a - (w - 1)) / w, added back. */
INLINE vd vlog1p_d(vd a) {
    vd w = 1.0 + a;
    vd corr = (a - (w - 1.0)) / w;
    vl bits = (vl)w;
    /* w >= 1 or NaN: a logical shift (AVX2 has no 64-bit arithmetic one) */
    vl k = (vl)((vu)bits >> 52) - 1023;
    vd f = (vd)((bits & 0x000fffffffffffffLL) | 0x3ff0000000000000LL);
    vl big = f > SKIT_SQRT2;
    f = seld(big, f * 0.5, f);
    k = k - big; /* big is -1 where true */
    vd t = (f - 1.0) / (f + 1.0);
    vd t2 = t * t;
    vd q = splatd(SKIT_AT_11);
    q = q * t2 + SKIT_AT_10;
    q = q * t2 + SKIT_AT_9;
    q = q * t2 + SKIT_AT_8;
    q = q * t2 + SKIT_AT_7;
    q = q * t2 + SKIT_AT_6;
    q = q * t2 + SKIT_AT_5;
    q = q * t2 + SKIT_AT_4;
    q = q * t2 + SKIT_AT_3;
    q = q * t2 + SKIT_AT_2;
    q = q * t2 + SKIT_AT_1;
    vd logf_ = 2.0 * t + (2.0 * t) * (t2 * q);
    vd kd = small_l2d(k);
    return kd * SKIT_LN2_HI + (kd * SKIT_LN2_LO + (logf_ + corr));
}

/* log1p(a) for 0 <= a <= 1, a normal or 0 (or NaN), about 2^-43 relative, for results
 * rounded once to float32 (the sigmoid family of float32 data, a = exp(-|x|) >=
 * exp(-700)). No reduction: t = a / (2 + a) is in [0, 1/3] (two roundings, 2^-52), and
 * log1p(a) = 2 atanh(t) = 2t + 2t s Q(s), s = t^2 <= 1/9, Q of degree 6 near-minimax
 * for the relative error of log1p (tools/gen_consts.py). Small a cost nothing extra:
 * 2t = a (1 - a/2 + ...) keeps a's relative accuracy, where 1 + a would round it away. */
INLINE vd vlog1p_lo(vd a) {
    vd t = a / (2.0 + a);
    vd s = t * t;
    vd q = splatd(SKIT_LA_6);
    q = q * s + SKIT_LA_5;
    q = q * s + SKIT_LA_4;
    q = q * s + SKIT_LA_3;
    q = q * s + SKIT_LA_2;
    q = q * s + SKIT_LA_1;
    q = q * s + SKIT_LA_0;
    vd tt = 2.0 * t;
    return tt + tt * (s * q);
}

/* ---- streaming stores ------------------------------------------------------ *
 * Outputs larger than the caches are written with non-temporal stores: they skip
 * the read-for-ownership of every destination line, so a pass costs one DRAM
 * read and one write, like a copy. They need VB-aligned addresses; the phase-B
 * loops peel a head to get there. */
INLINE void stf_nt(float *p, vf v) {
#if defined(__AVX512F__)
    _mm512_stream_ps(p, (__m512)v);
#elif defined(__AVX__)
    _mm256_stream_ps(p, (__m256)v);
#elif defined(__SSE2__)
    _mm_stream_ps(p, (__m128)v);
#else
    stf(p, v);
#endif
}
INLINE void std_nt(double *p, vd v) {
#if defined(__AVX512F__)
    _mm512_stream_pd(p, (__m512d)v);
#elif defined(__AVX__)
    _mm256_stream_pd(p, (__m256d)v);
#elif defined(__SSE2__)
    _mm_stream_pd(p, (__m128d)v);
#else
    std_(p, v);
#endif
}
INLINE void stfx(float *p, vf v, int stream) {
    if (stream)
        stf_nt(p, v);
    else
        stf(p, v);
}
INLINE void stdx(double *p, vd v, int stream) {
    if (stream)
        std_nt(p, v);
    else
        std_(p, v);
}
/* elements before p + k is VB-aligned (p aligned to its element size) */
INLINE size_t head_count(const void *p, size_t elsize, size_t n) {
    size_t mis = (size_t)((uintptr_t)p % VB);
    size_t h = mis ? (VB - mis) / elsize : 0;
    return h < n ? h : n;
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

/* Pad a partial chunk: cnt elements of x (and mask, scratch) from index i into
 * local buffers of W elements, -inf / 0 beyond. */
#define PAD_CHUNK(STYPE, W, i, cnt)                                      \
    STYPE xb[W];                                                          \
    uint8_t mb[W];                                                        \
    for (size_t k_ = 0; k_ < (W); k_++) {                                 \
        xb[k_] = k_ < (cnt) ? x[(i) + k_] : (STYPE)-INFINITY;             \
        mb[k_] = k_ < (cnt) ? (mask ? mask[(i) + k_] : 1) : 0;            \
    }

/* The loop of every phase-B pass: an optional head (to align the output for
 * streaming stores), whole chunks, a tail. FULL(i, o) handles W elements at
 * index i writing to o (streaming if `stream`), PART(i, cnt) a partial chunk. */
#define PHASE_B_LOOP(STYPE, W, FULL, PART)                               \
    size_t i_ = 0;                                                        \
    if (stream) {                                                         \
        size_t h_ = head_count(o, sizeof(STYPE), n);                      \
        while (i_ < h_) {                                                 \
            size_t c_ = h_ - i_ < (W) ? h_ - i_ : (W);                    \
            PART(i_, c_);                                                 \
            i_ += c_;                                                     \
        }                                                                 \
    }                                                                     \
    for (; i_ + 4 * (W) <= n; i_ += 4 * (W)) {                            \
        FULL(i_);                                                         \
        FULL(i_ + (W));                                                   \
        FULL(i_ + 2 * (W));                                               \
        FULL(i_ + 3 * (W));                                               \
    }                                                                     \
    for (; i_ + (W) <= n; i_ += (W)) FULL(i_);                            \
    if (i_ < n) PART(i_, n - i_);

/* =========================== e32f: float32, fast ============================ */
INLINE vf e32f_load(const float *x, const uint8_t *mask, float T) {
    vf v = ldf(x);
    if (T != 1.0f) v = v / T;
    if (mask) v = self(ldmf(mask), v, splatf(-INFINITY));
    return v;
}

/* max and NaN flag over whole chunks; four independent chains */
INLINE void e32f_max_pass(const float *x, const uint8_t *mask, size_t n, float T, vf *mout,
                          vi *nanout) {
    vf m0 = splatf(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
    vi q0 = {0}, q1 = {0}, q2 = {0}, q3 = {0};
    size_t i = 0;
    for (; i + 4 * NF <= n; i += 4 * NF) {
        vf a = e32f_load(x + i, mask ? mask + i : NULL, T);
        vf b = e32f_load(x + i + NF, mask ? mask + i + NF : NULL, T);
        vf c = e32f_load(x + i + 2 * NF, mask ? mask + i + 2 * NF : NULL, T);
        vf d = e32f_load(x + i + 3 * NF, mask ? mask + i + 3 * NF : NULL, T);
        q0 |= a != a;
        q1 |= b != b;
        q2 |= c != c;
        q3 |= d != d;
        m0 = self(a > m0, a, m0);
        m1 = self(b > m1, b, m1);
        m2 = self(c > m2, c, m2);
        m3 = self(d > m3, d, m3);
    }
    for (; i + NF <= n; i += NF) {
        vf a = e32f_load(x + i, mask ? mask + i : NULL, T);
        q0 |= a != a;
        m0 = self(a > m0, a, m0);
    }
    m0 = self(m1 > m0, m1, m0);
    m2 = self(m3 > m2, m3, m2);
    *mout = self(m2 > m0, m2, m0);
    *nanout = q0 | q1 | q2 | q3;
}

typedef struct {
    vf c;
    vd s0, s1;
} sumacc_f;

INLINE vf e32f_exp_vm2(vf v, vf m, sumacc_f *a, vf *scaled) {
    vf d = v - m;
    vf bb = d - v;
    vf lo = (v - (d - bb)) + (-m - bb); /* TwoSum: d + lo == v - m exactly */
    vi low = d < -128.0f;               /* exp underflows to 0 (also -inf and overflowed d) */
    d = self(low, splatf(-128.0f), d);
    lo = (vf)(~low & (vi)lo);
    vf es_ = vexpf_s(d, lo); /* times 2^64: tiny terms are summed unrounded */
    vf e = es_ * 0x1p-64f;
    if (a) {
        vi ismax = (v == m);
        a->c += (vf)(ismax & (vi)splatf(1.0f));
        vf es = (vf)(~ismax & (vi)es_);
        a->s0 += cvt_lo(es);
        a->s1 += cvt_hi(es);
    }
    if (scaled) *scaled = es_;
    return e;
}

INLINE vf e32f_exp_vm(vf v, vf m, sumacc_f *a) { return e32f_exp_vm2(v, m, a, NULL); }

INLINE vf e32f_exp_vec(vf v, float m, sumacc_f *a) { return e32f_exp_vm(v, splatf(m), a); }

/* float32 +inf entries, counted only when the maximum is +inf (rare) */
#define COUNT_POSINF(STYPE, SCALE)                                         \
    for (size_t k = 0; k < n; k++) kinf += (!mask || mask[k]) && (SCALE) == INFINITY;

/* ---- the plain path: no mask, T = 1, a finite row maximum below 2^24 --------
 * The common call, with the fewest instructions per element:
 *   max    one max instruction per vector (NaN ignored here: a NaN makes the sum
 *          NaN, which flags the row);
 *   exp    x' = max(x, lowb), lowb the largest float <= max - 128, so -inf and far
 *          entries become an argument near -128 (their exp, about 2^-185, is far
 *          below every float32 result and the sum's precision) and NaN passes;
 *          d + lo = x' - max exactly (TwoSum), exp(d + lo) 2^64 by the degree-6
 *          polynomial with the scale read from the rounding sum's bits;
 *   sum    maximal entries counted (not summed), the others added in pairs in
 *          float32 and the pair sums accumulated in float64 (a deeper float32
 *          tree costs up to 2 ulp when a few terms dominate the sum);
 *   scale  exp values kept times 2^64 and multiplied by g = f 2^-64 as a float pair
 *          with one rounding (products rounded once into the subnormal range). */

/* max(v, m), m where v is NaN */
INLINE vf vmax_nonan(vf v, vf m) {
#if defined(__AVX512F__)
    return (vf)_mm512_max_ps((__m512)v, (__m512)m);
#elif defined(__AVX__)
    return (vf)_mm256_max_ps((__m256)v, (__m256)m);
#elif defined(__SSE2__)
    return (vf)_mm_max_ps((__m128)v, (__m128)m);
#else
    return self(v > m, v, m);
#endif
}
/* max(v, lowb), v where v is NaN */
INLINE vf vclamp_low(vf v, vf lowb) {
#if defined(__AVX512F__)
    return (vf)_mm512_max_ps((__m512)lowb, (__m512)v);
#elif defined(__AVX__)
    return (vf)_mm256_max_ps((__m256)lowb, (__m256)v);
#elif defined(__SSE2__)
    return (vf)_mm_max_ps((__m128)lowb, (__m128)v);
#else
    return self(v < lowb, lowb, v);
#endif
}

/* exp(d + lo) 2^64 for d in [-131, 0] or NaN, |lo| <= ulp(d). The rounding
 * constant carries the exponent bias, so the scale c = 2^(k + 64) is the sum's low
 * bits shifted into the exponent field, and with a fused multiply-add the result is
 * s c + c, rounded once: the same bits as (1 + s) rounded, then scaled (scaling by
 * a power of two commutes with rounding while the results stay normal, as they do
 * for d >= -131). Until session 28 AVX-512 formed (1 + s) 2^64 and scaled it by
 * vscalefps, which on AMD Zen 4 holds an adder for two FMA times where the shift
 * holds it for one, and the adders bound this loop there (fast softmax 2x8000, one
 * thread, builds alternated, best ns/elem: 0.389-0.432 -> 0.371-0.405). The
 * degree-4 factor q runs in Estrin's order (three fused
 * multiply-adds deep after r^2 instead of four): the exponential is this
 * engine's busiest code, and the shorter chain lets more of it overlap (one
 * thread, in cache, median ns/elem: fast softmax 8x2000 0.40-0.42 -> 0.39-0.40,
 * log_softmax 0.42-0.43 -> 0.41). */
/* vexpf_p in two steps (see e32f_stats_plain): the reduced argument r and kt = t,
 * which carries k in its low bits, then exp from them */
INLINE void vexpf_red(vf d, vf lo, vf *r, vf *kt) {
    const vf magic = splatf(12583103.0f); /* 1.5 * 2^23 + 127 + 64 */
    vf t = d * SKIT_LOG2E_F + magic;
    vf k = t - magic;
    vf q = d - k * SKIT_LN2_1_F;
    q = q - k * SKIT_LN2_2_F;
    *r = q + lo;
    *kt = t;
}
INLINE vf vexpf_fin(vf r, vf kt) {
    vf r2 = r * r;
    vf qa = SKIT_EP_1 * r + SKIT_EP_0;
    vf qb = SKIT_EP_3 * r + SKIT_EP_2;
    qb = SKIT_EP_4 * r2 + qb;
    vf s = r + r2 * (qb * r2 + qa);
    vf sc = (vf)((vi)kt << 23); /* 2^(k + 64) */
#if defined(__AVX512F__) || defined(__FMA__)
    return s * sc + sc; /* one fused multiply-add */
#else
    return (1.0f + s) * sc;
#endif
}
INLINE vf vexpf_p(vf d, vf lo) {
    vf r, kt;
    vexpf_red(d, lo, &r, &kt);
    return vexpf_fin(r, kt);
}

/* the row max ignoring NaN (-inf if there is none) */
static float e32f_rowmax(const float *x, size_t n) {
    vf m0 = splatf(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
    size_t i = 0;
    for (; i + 4 * NF <= n; i += 4 * NF) {
        m0 = vmax_nonan(ldf(x + i), m0);
        m1 = vmax_nonan(ldf(x + i + NF), m1);
        m2 = vmax_nonan(ldf(x + i + 2 * NF), m2);
        m3 = vmax_nonan(ldf(x + i + 3 * NF), m3);
    }
    for (; i + NF <= n; i += NF) m0 = vmax_nonan(ldf(x + i), m0);
#if defined(__AVX512F__)
    if (i < n) m1 = vmax_nonan(ldf_part(x + i, n - i, splatf(-INFINITY)), m1);
#endif
    m0 = vmax_nonan(m1, m0);
    m2 = vmax_nonan(m3, m2);
    m0 = vmax_nonan(m2, m0);
#if defined(__AVX512F__)
    return _mm512_reduce_max_ps((__m512)m0); /* no lane is NaN */
#else
    float m = -INFINITY;
    for (int k = 0; k < NF; k++)
        if (m0[k] > m) m = m0[k];
    for (; i < n; i++)
        if (x[i] > m) m = x[i];
    return m;
#endif
}

/* whether the plain path takes a row with maximum m */
INLINE int e32f_plain_ok(double m) { return fabs(m) < 0x1p24; }

/* the largest float <= m - 128 (exact in double for |m| < 2^24) */
static float e32f_lowb(float m) {
    double want = (double)m - 128.0;
    float f = (float)want;
    if ((double)f > want) f = nextafterf(f, -INFINITY);
    return f;
}

/* exp(x - m) 2^64 on the plain path; *ismax is -1 where x == m */
INLINE vf e32f_pexp(vf v, vf m, vf negm, vf lowb, vi *ismax) {
    v = vclamp_low(v, lowb);
    vf d = v - m;
    vf bb = d - v;
    vf lo = (v - (d - bb)) + (negm - bb);
    *ismax = v == m;
    return vexpf_p(d, lo);
}

/* lanes [0, cnt) of a vector */
INLINE vi lanes_below(size_t cnt) {
    vi idx;
    for (int k = 0; k < NF; k++) idx[k] = k;
    return idx < (int)cnt;
}

/* The statistics loops call this once per 64 bytes or less of the block they read
 * (skit_engine.stats): the output line at byte byte_off of pf, which phase B will
 * write, fetched for writing, so that its stores find it in the L1 cache; and the line
 * at byte byte_off of pfx, the input the thread reads next, fetched for reading (NULL:
 * none). */
INLINE void pf_lines(const void *pf, const void *pfx, size_t byte_off) {
    if (pf) __builtin_prefetch((const char *)pf + byte_off, 1, 3);
    if (pfx) __builtin_prefetch((const char *)pfx + byte_off, 0, 3);
}

/* stats of a block on the plain path (m its maximum); exp(x - m) 2^64 into so
 * unless NULL */
/* count = 0 (softmax, which needs only c + s): every term goes into the rest sum and c
 * is 0 (no compare or masked count per vector) */
INLINE void e32f_stats_plain(const float *x, size_t n, float m, skit_bstat *st, float *so,
                             const void *pf, const void *pfx, int count) {
    const vf mv = splatf(m), negm = splatf(-m), lowb = splatf(e32f_lowb(m));
    vi cnt = {0};
    vd s0 = {0}, s1 = {0};
    size_t i = 0;
#define PEXP_(u, dst)                                                   \
    do {                                                                \
        vi im_;                                                         \
        vf es_ = e32f_pexp(ldf(x + i + (u) * NF), mv, negm, lowb, &im_); \
        if (so) stf(so + i + (u) * NF, es_);                            \
        pf_lines(pf, pfx, (i + (u) * NF) * sizeof(float));                      \
        cnt += im_;                                                     \
        dst = count ? (vf)(~im_ & (vi)es_) : es_;                        \
    } while (0)
    vd s2 = {0}, s3 = {0};
#if defined(__AVX512F__)
    {
        /* The same sums with the maximal entries handled by mask registers: one
         * compare, one masked count and one masked move or add per vector (the
         * vector form spends two more uops per vector on materialised masks).
         * Softmax's sums (count = 0) need none. */
        __m512i below = _mm512_setzero_si512(); /* per lane: entries below the max */
        const __m512i one = _mm512_set1_epi32(1);
        size_t i0 = i;
        /* Software-pipelined, as e32a_stats_plain, by half a step: the reduction of two
         * vectors' arguments comes before the exponentials of two reduced earlier (the
         * same operations in the same order: the same bits) */
        vf r[4], kt[4];
        __mmask16 k[4];
#define RED2(j, u0)                                                                \
    for (int u = (u0); u < (u0) + 2; u++) {                                        \
        vf v = vclamp_low(ldf(x + (j) + u * NF), lowb);                            \
        vf dd = v - mv;                                                            \
        vf bb = dd - v;                                                            \
        vf lo = (v - (dd - bb)) + (negm - bb);                                     \
        vexpf_red(dd, lo, &r[u], &kt[u]);                                          \
        pf_lines(pf, pfx, ((j) + u * NF) * sizeof(float));                         \
        if (count) {                                                               \
            k[u] = _mm512_cmp_ps_mask((__m512)v, (__m512)mv, _CMP_NEQ_UQ);          \
            below = _mm512_mask_add_epi32(below, k[u], below, one);                \
        }                                                                          \
    }
#define FIN2(j, u0, acc)                                                           \
    do {                                                                           \
        __m512 e0 = (__m512)vexpf_fin(r[u0], kt[u0]);                              \
        __m512 e1 = (__m512)vexpf_fin(r[(u0) + 1], kt[(u0) + 1]);                  \
        if (so) {                                                                  \
            stf(so + (j) + (u0) * NF, (vf)e0);                                     \
            stf(so + (j) + ((u0) + 1) * NF, (vf)e1);                               \
        }                                                                          \
        if (count) {                                                               \
            acc = _mm512_maskz_mov_ps(k[u0], e0);                                  \
            acc = _mm512_mask_add_ps(acc, k[(u0) + 1], acc, e1);                   \
        } else {                                                                   \
            acc = _mm512_add_ps(e0, e1);                                           \
        }                                                                          \
    } while (0)
        if (i + 4 * NF <= n) {
            RED2(i, 0)
            for (;; i += 4 * NF) {
                __m512 a, c;
                RED2(i, 2)
                FIN2(i, 0, a);
                s0 += cvt_lo((vf)a);
                s1 += cvt_hi((vf)a);
                int more = i + 8 * NF <= n;
                if (more) RED2(i + 4 * NF, 0)
                FIN2(i, 2, c);
                s2 += cvt_lo((vf)c);
                s3 += cvt_hi((vf)c);
                if (!more) break;
            }
            i += 4 * NF;
        }
#undef RED2
#undef FIN2
        /* cnt holds minus the count of maximal entries per lane */
        cnt += (vi)below - (int32_t)((i - i0) / NF);
    }
#endif
    for (; i + 4 * NF <= n; i += 4 * NF) {
        vf a, b, c, d;
        PEXP_(0, a);
        PEXP_(1, b);
        PEXP_(2, c);
        PEXP_(3, d);
        a = a + b;
        c = c + d;
        s0 += cvt_lo(a);
        s1 += cvt_hi(a);
        s2 += cvt_lo(c);
        s3 += cvt_hi(c);
    }
    s0 += s2;
    s1 += s3;
    vf acc = {0};
    for (; i + NF <= n; i += NF) {
        vf e;
        PEXP_(0, e);
        acc += e;
    }
#undef PEXP_
    if (i < n) {
        size_t r = n - i;
        vi im;
        vf es = e32f_pexp(ldf_part(x + i, r, mv), mv, negm, lowb, &im);
        if (so) stf_part(so + i, es, r);
        vi valid = lanes_below(r);
        cnt += im & valid;
        acc += (vf)((count ? ~im & valid : valid) & (vi)es);
    }
    s0 += cvt_lo(acc);
    s1 += cvt_hi(acc);
#if defined(__AVX512F__)
    double s = _mm512_reduce_add_pd((__m512d)(s0 + s1));
    int64_t c = -(int64_t)_mm512_reduce_add_epi32((__m512i)cnt);
#else
    double s = 0.0;
    int64_t c = 0;
    for (int k = 0; k < ND; k++) s += s0[k] + s1[k];
    for (int k = 0; k < NF; k++) c -= cnt[k];
#endif
    st->m = m;
    st->nan = s != s;
    st->kinf = 0;
    st->c = dd_make(count ? (double)c : 0.0, 0.0);
    st->s = dd_make(s * 0x1p-64, 0.0);
}

INLINE void e32f_stats_k(const void *xv, const uint8_t *mask, size_t n, double Td, skit_bstat *st,
                         void *scratch, const void *pf, const void *pfx, int count) {
    const float *x = (const float *)xv;
    float *so = (float *)scratch;
    float T = (float)Td;
    if (!mask && T == 1.0f) {
        float pm = e32f_rowmax(x, n);
        if (e32f_plain_ok(pm)) {
            e32f_stats_plain(x, n, pm, st, so, pf, pfx, count);
            return;
        }
    }
    size_t r = n % NF, nf = n - r;
    PAD_CHUNK(float, NF, nf, r)
    vf mv;
    vi nv;
    e32f_max_pass(x, mask, nf, T, &mv, &nv);
    if (r) {
        vf a = e32f_load(xb, mb, T);
        nv |= a != a;
        mv = self(a > mv, a, mv);
    }
    float m = -INFINITY;
    int nan = 0;
    for (int k = 0; k < NF; k++) {
        if (mv[k] > m) m = mv[k];
        nan |= nv[k] != 0;
    }
    int64_t kinf = 0;
    if (m == INFINITY && !nan) COUNT_POSINF(float, (T != 1.0f ? x[k] / T : x[k]))
    st->m = m;
    st->nan = nan;
    st->kinf = kinf;
    st->c = dd_make(0.0, 0.0);
    st->s = dd_make(0.0, 0.0);
    if (nan || kinf || m == -INFINITY) return;
    sumacc_f sa = {(vf){0}, (vd){0}, (vd){0}};
    sumacc_f sb = sa;
    size_t i = 0;
    /* the scratch receives exp(x - m) 2^64, as on the plain path */
    for (; i + 2 * NF <= nf; i += 2 * NF) {
        vf e, f;
        (void)e32f_exp_vm2(e32f_load(x + i, mask ? mask + i : NULL, T), splatf(m), &sa, &e);
        (void)e32f_exp_vm2(e32f_load(x + i + NF, mask ? mask + i + NF : NULL, T), splatf(m), &sb,
                           &f);
        pf_lines(pf, pfx, i * sizeof(float));
        pf_lines(pf, pfx, (i + NF) * sizeof(float));
        if (so) {
            stf(so + i, e);
            stf(so + i + NF, f);
        }
    }
    for (; i < nf; i += NF) {
        vf e;
        (void)e32f_exp_vm2(e32f_load(x + i, mask ? mask + i : NULL, T), splatf(m), &sa, &e);
        pf_lines(pf, pfx, i * sizeof(float));
        if (so) stf(so + i, e);
    }
    if (r) {
        vf e;
        (void)e32f_exp_vm2(e32f_load(xb, mb, T), splatf(m), &sa, &e);
        if (so) memcpy(so + nf, &e, r * sizeof(float));
    }
    double c = 0.0, s = 0.0;
    for (int k = 0; k < NF; k++) c += (double)sa.c[k] + (double)sb.c[k];
    for (int k = 0; k < ND; k++) s += sa.s0[k] + sb.s0[k];
    for (int k = 0; k < ND; k++) s += sa.s1[k] + sb.s1[k];
    st->c = dd_make(c, 0.0);
    st->s = dd_make(s * 0x1p-64, 0.0);
}

/* an engine's `stats` (counting the maxima apart) and `stats_sum` (softmax's) from
 * its P##_stats_k */
#define STATS_ENTRIES(P)                                                                  \
    static void P##_stats(const void *xv, const uint8_t *mask, size_t n, double T,        \
                          skit_bstat *st, void *scratch, const void *pf,                  \
                          const void *pfx) {                                              \
        P##_stats_k(xv, mask, n, T, st, scratch, pf, pfx, 1);                             \
    }                                                                                     \
    static void P##_stats_sum(const void *xv, const uint8_t *mask, size_t n, double T,    \
                              skit_bstat *st, void *scratch, const void *pf,              \
                              const void *pfx) {                                          \
        P##_stats_k(xv, mask, n, T, st, scratch, pf, pfx, 0);                             \
    }
STATS_ENTRIES(e32f)

/* e * g with the product rounded once from float64 */
INLINE vf e32f_scale(vf e, double g) { return cvt_join(cvt_lo(e) * g, cvt_hi(e) * g); }

/* e (g1 + g2) with about one rounding: the error of e g1 recovered by a fused
 * multiply-add (ISAs without one take e32f_scale) */
#if defined(__AVX512F__) || (defined(__FMA__) && VB == 32)
#define E32F_HAS_FMA 1
INLINE vf e32f_mul2(vf e, vf g1, vf g2) {
    vf t = e * g1;
#if defined(__AVX512F__)
    vf te = (vf)_mm512_fmsub_ps((__m512)e, (__m512)g1, (__m512)t);
#else
    vf te = (vf)_mm256_fmsub_ps((__m256)e, (__m256)g1, (__m256)t);
#endif
    return t + (te + e * g2);
}
#else
#define E32F_HAS_FMA 0
#endif

/* the float pair g1 + g2 of g when products by it stay in the normal range */
static int e32f_split(double g, float *g1, float *g2) {
    *g1 = (float)g;
    *g2 = (float)(g - (double)*g1);
    return E32F_HAS_FMA && fabsf(*g1) >= 0x1p-100f && fabsf(*g1) <= 0x1p60f;
}

/* out = scratch * f; the scratch holds exp values times 2^64 */
static void e32f_fromscratch(const void *sv, size_t n, skit_dd f, void *outv, int stream) {
    const float *sc = (const float *)sv;
    float *o = (float *)outv;
    double g = f.hi * 0x1p-64;
    float g1, g2;
#if E32F_HAS_FMA
    if (e32f_split(g, &g1, &g2)) {
        const vf g1v = splatf(g1), g2v = splatf(g2);
#define FULL(i) stfx(o + (i), e32f_mul2(ldf(sc + (i)), g1v, g2v), stream)
#define PART(i, cnt)                                         \
    do {                                                     \
        vf r_ = e32f_mul2(ldf_part(sc + (i), cnt, splatf(0.0f)), g1v, g2v); \
        stf_part(o + (i), r_, cnt);                          \
    } while (0)
        PHASE_B_LOOP(float, NF, FULL, PART)
#undef FULL
#undef PART
        return;
    }
#else
    (void)e32f_split(g, &g1, &g2);
#endif
#define FULL(i) stfx(o + (i), e32f_scale(ldf(sc + (i)), g), stream)
#define PART(i, cnt)                                         \
    do {                                                     \
        vf r_ = e32f_scale(ldf_part(sc + (i), cnt, splatf(0.0f)), g); \
        stf_part(o + (i), r_, cnt);                          \
    } while (0)
    PHASE_B_LOOP(float, NF, FULL, PART)
#undef FULL
#undef PART
}

static void e32f_rescale(void *outv, size_t n, skit_dd f) {
    float *o = (float *)outv;
    for (size_t i = 0; i < n; i++) o[i] = (float)((double)o[i] * f.hi);
}

static void e32f_expscale(const void *xv, const uint8_t *mask, size_t n, double Td, double M,
                          skit_dd f, void *outv, int stream) {
    const float *x = (const float *)xv;
    float *o = (float *)outv;
    float T = (float)Td, m = (float)M;
    double g = f.hi;
#if E32F_HAS_FMA
    float g1, g2;
    if (!mask && T == 1.0f && e32f_plain_ok(M) && e32f_split(g * 0x1p-64, &g1, &g2)) {
        const vf g1v = splatf(g1), g2v = splatf(g2);
        const vf mv = splatf(m), negm = splatf(-m), lowb = splatf(e32f_lowb(m));
        vi im_;
#define FULL(i) \
    stfx(o + (i), e32f_mul2(e32f_pexp(ldf(x + (i)), mv, negm, lowb, &im_), g1v, g2v), stream)
#define PART(i, cnt)                                                         \
    do {                                                                     \
        vf r_ = e32f_mul2(e32f_pexp(ldf_part(x + (i), cnt, mv), mv, negm, lowb, &im_), g1v, \
                          g2v);                                              \
        stf_part(o + (i), r_, cnt);                                          \
    } while (0)
        PHASE_B_LOOP(float, NF, FULL, PART)
#undef FULL
#undef PART
        return;
    }
#endif
#define FULL(i)                                                                        \
    stfx(                                                           \
        o + (i),                                                                       \
        e32f_scale(e32f_exp_vec(e32f_load(x + (i), mask ? mask + (i) : NULL, T), m, NULL), g), stream)
#define PART(i, cnt)                                                                   \
    do {                                                                               \
        PAD_CHUNK(float, NF, i, cnt)                                                   \
        vf r_ = e32f_scale(e32f_exp_vec(e32f_load(xb, mb, T), m, NULL), g);            \
        memcpy(o + (i), &r_, (cnt) * sizeof(float));                                   \
    } while (0)
    PHASE_B_LOOP(float, NF, FULL, PART)
#undef FULL
#undef PART
}

INLINE vf e32f_logsub_vec(const float *x, const uint8_t *mask, float T, double M, skit_dd L) {
    vf v = ldf(x);
    if (T != 1.0f) v = v / T;
    vd a = ((cvt_lo(v) - M) - L.hi) - L.lo;
    vd b = ((cvt_hi(v) - M) - L.hi) - L.lo;
    v = cvt_join(a, b);
    if (mask) v = self(ldmf(mask), v, splatf(-INFINITY));
    return v;
}

static void e32f_logsub(const void *xv, const uint8_t *mask, size_t n, double Td, double M,
                        skit_dd L, void *outv, int stream) {
    const float *x = (const float *)xv;
    float *o = (float *)outv;
    float T = (float)Td;
    if (!mask && T == 1.0f) {
        /* (x - C1) - C2 with C1 + C2 = M + L to float32 precision: x - C1 is exact
         * where it cancels (Sterbenz), so the result has at most two roundings. A zero
         * C1 is taken as -0, so that x = -0 at C1 gives +0, as x - x does (a lone -0,
         * L = 0); every other x gives the same either way. */
        skit_dd C = dd_add(dd_make(M, 0.0), L);
        float c1 = (float)C.hi;
        if (c1 == 0.0f) c1 = -0.0f;
        float c2 = (float)((C.hi - (double)c1) + C.lo);
        const vf c1v = splatf(c1), c2v = splatf(c2);
#define FULL(i) stfx(o + (i), (ldf(x + (i)) - c1v) - c2v, stream)
#define PART(i, cnt)                                         \
    do {                                                     \
        vf r_ = (ldf_part(x + (i), cnt, splatf(0.0f)) - c1v) - c2v; \
        stf_part(o + (i), r_, cnt);                          \
    } while (0)
        PHASE_B_LOOP(float, NF, FULL, PART)
#undef FULL
#undef PART
        return;
    }
#define FULL(i) \
    stfx(o + (i), e32f_logsub_vec(x + (i), mask ? mask + (i) : NULL, T, M, L), stream)
#define PART(i, cnt)                                         \
    do {                                                     \
        PAD_CHUNK(float, NF, i, cnt)                         \
        vf r_ = e32f_logsub_vec(xb, mb, T, M, L);            \
        memcpy(o + (i), &r_, (cnt) * sizeof(float));         \
    } while (0)
    PHASE_B_LOOP(float, NF, FULL, PART)
#undef FULL
#undef PART
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

/* Rows of at most SKIT_SMALL_N elements, NF rows at a time with one row per
 * lane (the rows are transposed through a small buffer), so short rows pay no
 * horizontal reductions and no scalar log1p or division. softmax (islog = 0) or
 * log_softmax (islog = 1) without a mask. Rows whose maximum is not finite are
 * flagged in `special` and left to the caller. */
static void e32f_small_t(const void *xv, size_t rows, size_t n, double Td, int islog, void *outv,
                         uint8_t *special) {
    const float *x = (const float *)xv;
    float *o = (float *)outv;
    float T = (float)Td;
    float tb[SKIT_SMALL_N][NF] __attribute__((aligned(64)));
    for (size_t r0 = 0; r0 < rows; r0 += NF) {
        size_t lanes = rows - r0 < NF ? rows - r0 : NF;
        for (size_t l = 0; l < NF; l++) {
            const float *xr = x + (r0 + (l < lanes ? l : 0)) * n;
            for (size_t j = 0; j < n; j++) tb[j][l] = xr[j];
        }
        vf m = splatf(-INFINITY), mb = m;
        vi nan = {0}, ninf = {0};
        size_t j2 = 0;
        for (; j2 + 2 <= n; j2 += 2) { /* two chains: see maxd_cols */
            vf v = ldf(tb[j2]), w = ldf(tb[j2 + 1]);
            if (T != 1.0f) v = v / T, w = w / T;
            nan |= (v != v) | (w != w);
            ninf |= (v == -INFINITY) | (w == -INFINITY);
            m = self(v > m, v, m);
            mb = self(w > mb, w, mb);
        }
        for (; j2 < n; j2++) {
            vf v = ldf(tb[j2]);
            if (T != 1.0f) v = v / T;
            nan |= v != v;
            ninf |= v == -INFINITY;
            m = self(v > m, v, m);
        }
        m = self(mb > m, mb, m);
        vi bad = nan | (m == INFINITY) | (m == -INFINITY);
        for (size_t l = 0; l < lanes; l++) special[r0 + l] = bad[l] != 0;
        m = self(bad, splatf(0.0f), m);
        sumacc_f sa = {(vf){0}, (vd){0}, (vd){0}};
        if (islog) {
            for (size_t j = 0; j < n; j++) {
                vf v = ldf(tb[j]);
                if (T != 1.0f) v = v / T;
                (void)e32f_exp_vm(v, m, &sa);
            }
            vd L0 = vlog1p_d((cvt_lo(sa.c) - 1.0) + sa.s0 * 0x1p-64);
            vd L1 = vlog1p_d((cvt_hi(sa.c) - 1.0) + sa.s1 * 0x1p-64);
            if (islog == 1) { /* a tiny rest: the general path (see e32f_small_plain) */
                bad |= ninf & (JOIN_HALVES(cvt_half(sa.s0 * 0x1p-64), cvt_half(sa.s1 * 0x1p-64)) <
                               TINY_REST_F);
                for (size_t l = 0; l < lanes; l++) special[r0 + l] = bad[l] != 0;
            }
            vd m0 = cvt_lo(m), m1 = cvt_hi(m);
            if (islog == 2) { /* logsumexp: m + L per row, as double */
                vd a0 = m0 + L0, a1 = m1 + L1;
                double *lse = (double *)outv + r0;
                for (size_t l = 0; l < lanes; l++) lse[l] = l < ND ? a0[l] : a1[l - ND];
                continue;
            }
            for (size_t j = 0; j < n; j++) {
                vf v = ldf(tb[j]);
                if (T != 1.0f) v = v / T;
                stf(tb[j], cvt_join((cvt_lo(v) - m0) - L0, (cvt_hi(v) - m1) - L1));
            }
        } else {
            for (size_t j = 0; j < n; j++) {
                vf v = ldf(tb[j]);
                if (T != 1.0f) v = v / T;
                stf(tb[j], e32f_exp_vm(v, m, &sa));
            }
            vd R0 = 1.0 / (cvt_lo(sa.c) + sa.s0 * 0x1p-64);
            vd R1 = 1.0 / (cvt_hi(sa.c) + sa.s1 * 0x1p-64);
            for (size_t j = 0; j < n; j++) {
                vf e = ldf(tb[j]);
                stf(tb[j], cvt_join(cvt_lo(e) * R0, cvt_hi(e) * R1));
            }
        }
        for (size_t l = 0; l < lanes; l++) {
            if (bad[l]) continue;
            float *orow = o + (r0 + l) * n;
            for (size_t j = 0; j < n; j++) orow[j] = tb[j][l];
        }
    }
}

#if (VB == 32 || VB == 64) && defined(__AVX2__)
typedef float v8f __attribute__((vector_size(32)));
/* 8 rows of 8 floats <-> 8 columns, in registers */
INLINE void tr8x8(v8f r[8]) {
    __m256 t0 = _mm256_unpacklo_ps((__m256)r[0], (__m256)r[1]);
    __m256 t1 = _mm256_unpackhi_ps((__m256)r[0], (__m256)r[1]);
    __m256 t2 = _mm256_unpacklo_ps((__m256)r[2], (__m256)r[3]);
    __m256 t3 = _mm256_unpackhi_ps((__m256)r[2], (__m256)r[3]);
    __m256 t4 = _mm256_unpacklo_ps((__m256)r[4], (__m256)r[5]);
    __m256 t5 = _mm256_unpackhi_ps((__m256)r[4], (__m256)r[5]);
    __m256 t6 = _mm256_unpacklo_ps((__m256)r[6], (__m256)r[7]);
    __m256 t7 = _mm256_unpackhi_ps((__m256)r[6], (__m256)r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44);
    __m256 s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44);
    __m256 s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44);
    __m256 s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44);
    __m256 s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = (v8f)_mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = (v8f)_mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = (v8f)_mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = (v8f)_mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = (v8f)_mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = (v8f)_mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = (v8f)_mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = (v8f)_mm256_permute2f128_ps(s3, s7, 0x31);
}

INLINE v8f ld8f(const float *p) {
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}
INLINE void st8f(float *p, v8f v) { memcpy(p, &v, sizeof v); }

#if VB == 64
/* Two 8x8 blocks side by side, one in each 256-bit half of r[0..8), transposed
 * together: 24 shuffles for 128 floats, where two tr8x8 and the joins or splits
 * between halves took 56. Shuffles issue on one port only, so the transposes were
 * the short-row kernel's largest cost (1024x40 fast softmax, one thread: about 39%
 * of its time). The last step (lanes 0 and 2 of one vector with lanes 0 and 2 of
 * another, in that order) is one two-source permute. */
INLINE void tr8x8x2(__m512 r[8]) {
    const __m512i lo = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
    const __m512i hi = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
    __m512 t[8], s[8];
    for (int k = 0; k < 8; k += 2) {
        t[k] = _mm512_unpacklo_ps(r[k], r[k + 1]);
        t[k + 1] = _mm512_unpackhi_ps(r[k], r[k + 1]);
    }
    for (int k = 0; k < 8; k += 4)
        for (int i = 0; i < 2; i++) {
            s[k + 2 * i] = _mm512_shuffle_ps(t[k + i], t[k + i + 2], 0x44);
            s[k + 2 * i + 1] = _mm512_shuffle_ps(t[k + i], t[k + i + 2], 0xEE);
        }
    for (int c = 0; c < 4; c++) {
        r[c] = _mm512_permutex2var_ps(s[c], lo, s[c + 4]);
        r[c + 4] = _mm512_permutex2var_ps(s[c], hi, s[c + 4]);
    }
}
#endif

/* columns [jb, jb + 8) of NF rows (row stride n) into tb[jb..jb+7]: 8x8 blocks
 * transposed in registers (AVX-512: row l and row l + 8 share a vector, and the
 * two blocks are transposed together) */
INLINE void load_cols8(const float *x, size_t n, size_t jb, vf *tb) {
#if VB == 64
    __m512 r[8];
    for (int l = 0; l < 8; l++)
        r[l] = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(x + (size_t)l * n + jb)),
                                  _mm256_loadu_ps(x + (size_t)(l + 8) * n + jb), 1);
    tr8x8x2(r);
    for (int c = 0; c < 8; c++) tb[jb + c] = (vf)r[c];
#else
    v8f r[8];
    for (int l = 0; l < 8; l++) r[l] = ld8f(x + (size_t)l * n + jb);
    tr8x8(r);
    for (int c = 0; c < 8; c++) tb[jb + c] = r[c];
#endif
}
/* tb[jb..jb+7] back into columns [jb, jb + 8) of the rows not flagged bad */
INLINE void store_cols8(float *o, size_t n, size_t jb, const vf *tb, vi bad) {
#if VB == 64
    __m512 r[8];
    for (int c = 0; c < 8; c++) r[c] = (__m512)tb[jb + c];
    tr8x8x2(r);
    for (int l = 0; l < 8; l++) {
        if (!bad[l]) _mm256_storeu_ps(o + (size_t)l * n + jb, _mm512_castps512_ps256(r[l]));
        if (!bad[l + 8]) _mm256_storeu_ps(o + (size_t)(l + 8) * n + jb, _mm512_extractf32x8_ps(r[l], 1));
    }
#else
    v8f r[8];
    for (int c = 0; c < 8; c++) r[c] = tb[jb + c];
    tr8x8(r);
    for (int l = 0; l < 8; l++)
        if (!bad[l]) st8f(o + (size_t)l * n + jb, r[l]);
#endif
}

/* The plain small-row path (T = 1, 8 <= n <= SKIT_SMALL_N): NF rows at a time,
 * one row per lane, the rows transposed in registers (8x8 blocks; a last
 * partial block overlaps the one before), then the plain path's arithmetic on
 * columns, so per-row maxima, sums, 1/D and log1p are all vertical. */
static void e32f_small_plain(const float *x, size_t rows, size_t n, int islog, void *outv,
                             uint8_t *special) {
    vf tb[SKIT_SMALL_N];
    for (size_t r0 = 0; r0 < rows; r0 += NF) {
        const float *xg = x + r0 * n;
        float *og = islog == 2 ? NULL : (float *)outv + r0 * n;
        size_t jb = 0;
        for (; jb + 8 <= n; jb += 8) load_cols8(xg, n, jb, tb);
        if (jb < n) load_cols8(xg, n, n - 8, tb);
        vf m = splatf(-INFINITY), mb = m;
        vi ninf = {0}; /* lanes holding a -inf */
        size_t j2 = 0;
        for (; j2 + 2 <= n; j2 += 2) { /* two chains: see maxd_cols */
            m = vmax_nonan(tb[j2], m);
            mb = vmax_nonan(tb[j2 + 1], mb);
            ninf |= (tb[j2] == -INFINITY) | (tb[j2 + 1] == -INFINITY);
        }
        if (j2 < n) {
            m = vmax_nonan(tb[j2], m);
            ninf |= tb[j2] == -INFINITY;
        }
        m = vmax_nonan(mb, m);
        vi bad = ~((m < 0x1p24f) & (m > -0x1p24f));
        m = self(bad, splatf(0.0f), m);
        const vf negm = -m, lowb = m - 130.0f; /* <= m - 128 and >= m - 131 for |m| < 2^24 */
        vi cnt = {0};
        vd s0 = {0}, s1 = {0};
        size_t j = 0;
        for (; j + 2 <= n; j += 2) {
            vi i0, i1;
            vf e0 = e32f_pexp(tb[j], m, negm, lowb, &i0);
            vf e1 = e32f_pexp(tb[j + 1], m, negm, lowb, &i1);
            vf a;
            if (!islog) { /* softmax needs only c + s: every term summed, c = 0 */
                tb[j] = e0;
                tb[j + 1] = e1;
                a = e0 + e1;
            } else {
                cnt += i0 + i1;
                a = (vf)(~i0 & (vi)e0) + (vf)(~i1 & (vi)e1);
            }
            s0 += cvt_lo(a);
            s1 += cvt_hi(a);
        }
        if (j < n) {
            vi i0;
            vf e0 = e32f_pexp(tb[j], m, negm, lowb, &i0);
            vf a = e0;
            if (!islog) {
                tb[j] = e0;
            } else {
                cnt += i0;
                a = (vf)(~i0 & (vi)e0);
            }
            s0 += cvt_lo(a);
            s1 += cvt_hi(a);
        }
        vf cf = __builtin_convertvector(-cnt, vf);
        vd c0 = cvt_lo(cf), c1 = cvt_hi(cf);
        s0 = s0 * 0x1p-64;
        s1 = s1 * 0x1p-64;
        bad |= (vi)JOIN_HALVES(cvt_half(s0), cvt_half(s1)) != (vi)JOIN_HALVES(cvt_half(s0), cvt_half(s1));
        /* log_softmax rows with a tiny rest (other entries -inf, say) take the general
         * path, which tells an empty rest from a tiny one (the sign of log_softmax's 0);
         * only rows holding a -inf can have an empty rest */
        if (islog == 1) bad |= ninf & (JOIN_HALVES(cvt_half(s0), cvt_half(s1)) < TINY_REST_F);
        if (islog) {
            vd L0 = vlog1p_d((c0 - 1.0) + s0), L1 = vlog1p_d((c1 - 1.0) + s1);
            if (islog == 2) { /* logsumexp: m + L per row, as double */
                double *lse = (double *)outv + r0;
                std_(lse, cvt_lo(m) + L0);
                std_(lse + ND, cvt_hi(m) + L1);
                for (int l = 0; l < NF; l++) special[r0 + l] = bad[l] != 0;
                continue;
            }
            /* C = m + L as a double pair (TwoSum): where x - c1 cancels, the result
             * is c2, which must keep L's relative accuracy (L can be ~1e-12) */
            vd E0, E1;
            vd C0 = two_sum_v(cvt_lo(m), L0, &E0), C1 = two_sum_v(cvt_hi(m), L1, &E1);
            vf c1v = cvt_join(C0, C1);
            vf c2v = cvt_join((C0 - cvt_lo(c1v)) + E0, (C1 - cvt_hi(c1v)) + E1);
            for (j = 0; j < n; j++) tb[j] = (tb[j] - c1v) - c2v;
        } else {
            vd g0 = (1.0 / (c0 + s0)) * 0x1p-64, g1 = (1.0 / (c1 + s1)) * 0x1p-64;
            vf g1v = cvt_join(g0, g1);
            vf g2v = cvt_join(g0 - cvt_lo(g1v), g1 - cvt_hi(g1v));
            for (j = 0; j < n; j++) tb[j] = e32f_mul2(tb[j], g1v, g2v);
        }
        for (int l = 0; l < NF; l++) special[r0 + l] = bad[l] != 0;
        for (jb = 0; jb + 8 <= n; jb += 8) store_cols8(og, n, jb, tb, bad);
        if (jb < n) store_cols8(og, n, n - 8, tb, bad);
    }
}
#endif

static void e32f_small(const void *xv, size_t rows, size_t n, double Td, int islog, void *outv,
                       uint8_t *special) {
#if (VB == 32 || VB == 64) && defined(__AVX2__)
    if (Td == 1.0 && n >= 8) {
        size_t whole = rows - rows % NF;
        e32f_small_plain((const float *)xv, whole, n, islog, outv, special);
        if (whole == rows) return;
        xv = (const float *)xv + whole * n;
        outv = islog == 2 ? (void *)((double *)outv + whole) : (void *)((float *)outv + whole * n);
        special += whole;
        rows -= whole;
    }
#endif
    e32f_small_t(xv, rows, n, Td, islog, outv, special);
}

/* ---- probability targets in fast mode: float32 arithmetic, one row at a time ---- */

/* The smoothed, weighted targets u = w (a q + b) of the NF classes from i: q float32,
 * or float64 with q64 (checked before it is narrowed, so a negative too small for
 * float32 is still seen), w float32 or NULL; *bad gets every lane whose target is
 * negative or NaN */
INLINE vf e32f_prob_u(const void *q, int q64, const float *w, size_t i, vf a, vf b, vi *bad) {
    vf qv;
    if (q64) {
        vd lo = ldd((const double *)q + i), hi = ldd((const double *)q + i + ND);
        vl neg = ~((lo >= 0.0) & (hi >= 0.0));
        *bad |= (vi)neg; /* a lane of either half: the test only asks whether any is set */
        qv = cvt_join(lo, hi);
    } else {
        qv = ldf((const float *)q + i);
        *bad |= ~(qv >= 0.0f);
    }
    vf u = qv * a + b;
    return w ? u * ldf(w + i) : u;
}

/* one vector of the first pass: the exponentials exp(x - m) 2^64 (stored to eo unless
 * NULL) with the maxima's apart, u, and u (m - x) (0 where u is 0, so a -inf logit with
 * no target mass adds nothing); lanes outside `valid` give 0 */
INLINE void e32f_prob_one(const float *x, const void *q, int q64, const float *w, size_t i,
                          vi valid, vf mv, vf negm, vf lowb, vf a, vf b, float *eo, vi *cnt,
                          vi *nan, vi *bad, vf *re, vf *ru, vf *rt) {
    vf xv = ldf(x + i);
    vi im;
    vf e = e32f_pexp(xv, mv, negm, lowb, &im);
    if (eo) stf(eo + i, e);
    im &= valid;
    *cnt += im;
    *nan |= (xv != xv) & valid;
    *re = (vf)(~im & valid & (vi)e);
    vf u = (vf)((vi)e32f_prob_u(q, q64, w, i, a, b, bad) & valid);
    *ru = u;
    *rt = (vf)((vi)(u * (mv - xv)) & (u != 0.0f));
}

/* Cross-entropy with probability targets over one row of n float32 logits x, fast
 * mode. Kind 0: res[0] = m, the row's maximum; res[1] = c, the count of its maxima;
 * res[2] = s, the sum of exp(x_j - m) over the other entries; res[3] = sum_j u_j;
 * res[4] = sum_j u_j (m - x_j) (float32 terms, float64 sums); with e != NULL, e_j =
 * exp(x_j - m) 2^64 there. Returns bit 1 when the row is not the fast path's (a NaN,
 * +inf, no finite maximum, |m| >= 2^24) and bit 2 when a target is negative or NaN.
 * Kind 1: e_j = e_j f - u_j k in place (the gradient). */
static int e32f_prob(int kind, const float *x, const void *q, int q64, const float *w, size_t n,
                     float af, float bf, float f, float k, double *res, float *e) {
    const vf a = splatf(af), b = splatf(bf);
    const size_t nf = n - n % NF, r = n - nf;
    vi ignore = {0};
    /* the tail through padded copies: logits 0, targets 0, weights 0 */
    float xb[NF] = {0}, wb[NF] = {0}, eb[NF] = {0};
    double qb[NF] = {0};
    float qfb[NF] = {0};
    const void *qt = q64 ? (const void *)qb : (const void *)qfb;
    if (r) {
        memcpy(xb, x + nf, r * sizeof(float));
        if (q64) memcpy(qb, (const double *)q + nf, r * sizeof(double));
        else memcpy(qfb, (const float *)q + nf, r * sizeof(float));
        if (w) memcpy(wb, w + nf, r * sizeof(float));
    }
    if (kind == 1) {
        const vf fv = splatf(f), kv = splatf(k);
        size_t i = 0;
        for (; i < nf; i += NF) {
            vf u = e32f_prob_u(q, q64, w, i, a, b, &ignore);
            stf(e + i, ldf(e + i) * fv - u * kv);
        }
        if (r) {
            memcpy(eb, e + nf, r * sizeof(float));
            vf u = e32f_prob_u(qt, q64, w ? wb : NULL, 0, a, b, &ignore);
            stf_part(e + nf, ldf(eb) * fv - u * kv, r);
        }
        return 0;
    }
    const float m = e32f_rowmax(x, n);
    if (!e32f_plain_ok(m)) return 1; /* -inf only, +inf, or beyond the plain path */
    const vf mv = splatf(m), negm = splatf(-m), lowb = splatf(e32f_lowb(m));
    vi all = {0}, cnt = {0}, nan = {0}, bad = {0};
    all = ~all;
    vd s0 = {0}, s1 = {0}, u0 = {0}, u1 = {0}, g0 = {0}, g1 = {0};
    size_t i = 0;
    for (; i + 2 * NF <= nf; i += 2 * NF) {
        vf ea, ua, ta, eb2, ub, tb;
        e32f_prob_one(x, q, q64, w, i, all, mv, negm, lowb, a, b, e, &cnt, &nan, &bad, &ea, &ua,
                      &ta);
        e32f_prob_one(x, q, q64, w, i + NF, all, mv, negm, lowb, a, b, e, &cnt, &nan, &bad, &eb2,
                      &ub, &tb);
        ea += eb2, ua += ub, ta += tb;
        s0 += cvt_lo(ea), s1 += cvt_hi(ea);
        u0 += cvt_lo(ua), u1 += cvt_hi(ua);
        g0 += cvt_lo(ta), g1 += cvt_hi(ta);
    }
    if (i < nf) {
        vf ea, ua, ta;
        e32f_prob_one(x, q, q64, w, i, all, mv, negm, lowb, a, b, e, &cnt, &nan, &bad, &ea, &ua,
                      &ta);
        s0 += cvt_lo(ea), s1 += cvt_hi(ea);
        u0 += cvt_lo(ua), u1 += cvt_hi(ua);
        g0 += cvt_lo(ta), g1 += cvt_hi(ta);
    }
    if (r) { /* the padded lanes are masked out */
        vf ea, ua, ta;
        e32f_prob_one(xb, qt, q64, w ? wb : NULL, 0, lanes_below(r), mv, negm, lowb, a, b,
                      e ? eb : NULL, &cnt, &nan, &bad, &ea, &ua, &ta);
        if (e) memcpy(e + nf, eb, r * sizeof(float));
        s0 += cvt_lo(ea), s1 += cvt_hi(ea);
        u0 += cvt_lo(ua), u1 += cvt_hi(ua);
        g0 += cvt_lo(ta), g1 += cvt_hi(ta);
    }
    double c = 0.0, s = 0.0, su = 0.0, gap = 0.0;
    int flags = 0;
    for (int l = 0; l < NF; l++) {
        c -= (double)cnt[l];
        flags |= nan[l] ? 1 : 0;
        flags |= bad[l] ? 2 : 0;
    }
    for (int l = 0; l < ND; l++) {
        s += s0[l] + s1[l];
        su += u0[l] + u1[l];
        gap += g0[l] + g1[l];
    }
    res[0] = m, res[1] = c, res[2] = s * 0x1p-64, res[3] = su, res[4] = gap;
    return flags;
}


/* ======================= shared by the float64-lane engines ================= */
INLINE void maxd_pass_step(vd v, vd *m, vl *q) {
    *q |= v != v;
    *m = seld(v > *m, v, *m);
}

/* The per-lane maximum of the columns tb[0..n) of a transposed block (NaN never
 * wins; *nan flags the lanes that hold one, and *ninf, unless NULL, those that hold
 * a -inf), in four independent chains: one chain
 * waits a compare and a blend per column (about 6 cycles), four keep the vector
 * ports busy (64 x 100 float32, one thread, median ns/elem: accurate cross-entropy
 * with its gradient 1.13-1.16 -> 1.03-1.06, accurate softmax 0.83-0.85 -> 0.75).
 * The maximum does not depend on the order. */
INLINE vd maxd_cols(const double (*tb)[ND], size_t n, vl *nan, vl *ninf) {
    vd m0 = splatd(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
    vl q0 = {0}, q1 = {0}, f = {0};
    size_t j = 0;
    for (; j + 4 <= n; j += 4) {
        vd a = ldd(tb[j]), b = ldd(tb[j + 1]), c = ldd(tb[j + 2]), d = ldd(tb[j + 3]);
        maxd_pass_step(a, &m0, &q0);
        maxd_pass_step(b, &m1, &q1);
        maxd_pass_step(c, &m2, &q0);
        maxd_pass_step(d, &m3, &q1);
        if (ninf) f |= (a == -INFINITY) | (b == -INFINITY) | (c == -INFINITY) | (d == -INFINITY);
    }
    for (; j < n; j++) {
        vd a = ldd(tb[j]);
        maxd_pass_step(a, &m0, &q0);
        if (ninf) f |= a == -INFINITY;
    }
    m0 = seld(m1 > m0, m1, m0);
    m2 = seld(m3 > m2, m3, m2);
    *nan |= q0 | q1;
    if (ninf) *ninf |= f;
    return seld(m2 > m0, m2, m0);
}

#define MAXD_PASS(LOAD)                                                             \
    vd m0 = splatd(-INFINITY), m1 = m0, m2 = m0, m3 = m0;                           \
    vl q0 = {0}, q1 = {0}, q2 = {0}, q3 = {0};                                      \
    size_t i = 0;                                                                   \
    for (; i + 4 * ND <= nf; i += 4 * ND) {                                         \
        maxd_pass_step(LOAD(x + i, mask ? mask + i : NULL, T), &m0, &q0);           \
        maxd_pass_step(LOAD(x + i + ND, mask ? mask + i + ND : NULL, T), &m1, &q1); \
        maxd_pass_step(LOAD(x + i + 2 * ND, mask ? mask + i + 2 * ND : NULL, T), &m2, &q2); \
        maxd_pass_step(LOAD(x + i + 3 * ND, mask ? mask + i + 3 * ND : NULL, T), &m3, &q3); \
    }                                                                               \
    for (; i < nf; i += ND) maxd_pass_step(LOAD(x + i, mask ? mask + i : NULL, T), &m0, &q0); \
    if (r) maxd_pass_step(LOAD(xb, mb, T), &m1, &q1);                               \
    m0 = seld(m1 > m0, m1, m0);                                                     \
    m2 = seld(m3 > m2, m3, m2);                                                     \
    m0 = seld(m2 > m0, m2, m0);                                                     \
    q0 |= q1 | q2 | q3;                                                             \
    double m = -INFINITY;                                                           \
    int nan = 0;                                                                    \
    for (int k = 0; k < ND; k++) {                                                  \
        if (m0[k] > m) m = m0[k];                                                   \
        nan |= q0[k] != 0;                                                          \
    }

/* Transpose ND vectors of ND doubles in registers (a square block of ND rows by ND
 * columns becomes ND columns by ND rows). */
INLINE void trd(vd *v) {
#if VB == 16
    vd a = v[0], b = v[1];
    v[0] = __builtin_shufflevector(a, b, 0, 2);
    v[1] = __builtin_shufflevector(a, b, 1, 3);
#elif VB == 32
    vd t0 = __builtin_shufflevector(v[0], v[1], 0, 4, 2, 6);
    vd t1 = __builtin_shufflevector(v[0], v[1], 1, 5, 3, 7);
    vd t2 = __builtin_shufflevector(v[2], v[3], 0, 4, 2, 6);
    vd t3 = __builtin_shufflevector(v[2], v[3], 1, 5, 3, 7);
    v[0] = __builtin_shufflevector(t0, t2, 0, 1, 4, 5);
    v[1] = __builtin_shufflevector(t1, t3, 0, 1, 4, 5);
    v[2] = __builtin_shufflevector(t0, t2, 2, 3, 6, 7);
    v[3] = __builtin_shufflevector(t1, t3, 2, 3, 6, 7);
#else /* VB == 64: pairs, then 2x2 blocks, then 4x4 blocks */
    vd t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = __builtin_shufflevector(v[i], v[i + 1], 0, 8, 2, 10, 4, 12, 6, 14);
        t[i + 1] = __builtin_shufflevector(v[i], v[i + 1], 1, 9, 3, 11, 5, 13, 7, 15);
    }
    for (int i = 0; i < 8; i += 4)
        for (int k = 0; k < 2; k++) {
            u[i + k] = __builtin_shufflevector(t[i + k], t[i + k + 2], 0, 1, 8, 9, 4, 5, 12, 13);
            u[i + k + 2] =
                __builtin_shufflevector(t[i + k], t[i + k + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        }
    for (int k = 0; k < 4; k++) {
        v[k] = __builtin_shufflevector(u[k], u[k + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        v[k + 4] = __builtin_shufflevector(u[k], u[k + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
#endif
}

#if VB == 64
/* Float32 rows in float64 lanes (AVX-512, ND = 8 rows): 16 columns at a time, moved
 * as floats. Row l's 16 floats are one vector, whose halves are two 8x8 blocks that
 * tr8x8x2 transposes together; each result holds column c in its low half and column
 * c + 8 in its high half, which are then widened. Per 128 elements 48 shuffle-port
 * uops, against 64 for two blocks of 8 doubles transposed after widening (trd), each
 * way. The values are the same: widening is exact, and the division by T and the
 * rounding back to float32 are the same operations on the same numbers. */
INLINE void e32_load16_d(const float *x, size_t n, size_t j, double (*tb)[ND], double T) {
    __m512 r[8];
    for (int l = 0; l < 8; l++) r[l] = _mm512_loadu_ps(x + (size_t)l * n + j);
    tr8x8x2(r);
    for (int c = 0; c < 8; c++) {
        vd lo = (vd)_mm512_cvtps_pd(_mm512_castps512_ps256(r[c]));
        vd hi = (vd)_mm512_cvtps_pd(_mm512_extractf32x8_ps(r[c], 1));
        if (T != 1.0) lo = lo / T, hi = hi / T;
        std_(tb[j + c], lo);
        std_(tb[j + 8 + c], hi);
    }
}
/* columns [j, j + 16) of tb (times f where scale), rounded to float32, into the 8 rows */
INLINE void e32_store16_d(float *o, size_t n, size_t j, const double (*tb)[ND], vd f, int scale) {
    __m512 r[8];
    for (int c = 0; c < 8; c++) {
        vd a = ldd(tb[j + c]), b = ldd(tb[j + 8 + c]);
        if (scale) a = a * f, b = b * f;
        r[c] = _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps((__m512d)a)),
                                  _mm512_cvtpd_ps((__m512d)b), 1);
    }
    tr8x8x2(r);
    for (int l = 0; l < 8; l++) _mm512_storeu_ps(o + (size_t)l * n + j, r[l]);
}
/* in SMALL_D_BODY: the whole 16-column blocks of a full group of float32 rows */
#define SMALL_LOAD16(STYPE, xg, j16, cond)                                               \
    if (sizeof(STYPE) == 4)                                                             \
        for (; (cond) && j16 + 16 <= nv; j16 += 16)                                     \
            e32_load16_d((const float *)(const void *)(xg), n, j16, tb, T);
#define SMALL_STORE16(STYPE, og, j16, cond)                                              \
    if (sizeof(STYPE) == 4)                                                             \
        for (; (cond) && j16 + 16 <= nv; j16 += 16)                                     \
            e32_store16_d((float *)(void *)(og), n, j16, (const double(*)[ND])tb,       \
                          splatd(1.0), 0);
#else
#define SMALL_LOAD16(STYPE, xg, j16, cond)
#define SMALL_STORE16(STYPE, og, j16, cond)
#endif

/* The float64-lane version of e32f_small, ND rows at a time; LOADT converts the
 * storage type. EXPV_LOOP(tb, n, m, acc) accumulates the exponentials of columns
 * 0..n-1 of tb (the engine's exponential with its count of maxima) in column order;
 * EXPS_LOOP(tb, n, m, acc) replaces those columns by their exponentials, summed into
 * acc in column order. Either may use tb[n] as scratch. */
#define SMALL_D_BODY(STYPE, ACC_T, ACC_INIT, EXPV_LOOP, EXPS_LOOP, CS, LDROW, STROW)      \
    const STYPE *x = (const STYPE *)xv;                                                 \
    STYPE *o = (STYPE *)outv;                                                           \
    double tb[SKIT_SMALL_N + 1][ND] __attribute__((aligned(64))); /* + EXPS_LOOP's pad */ \
    const size_t nv = n - n % ND; /* columns moved by in-register transposes */         \
    for (size_t r0 = 0; r0 < rows; r0 += ND) {                                          \
        size_t lanes = rows - r0 < ND ? rows - r0 : ND;                                 \
        const int full = lanes == ND;                                                   \
        size_t j16 = 0;                                                                 \
        SMALL_LOAD16(STYPE, x + r0 * n, j16, full)                                      \
        for (size_t j = j16; full && j < nv; j += ND) {                                 \
            vd blk[ND];                                                                 \
            for (size_t l = 0; l < ND; l++) blk[l] = LDROW(x + (r0 + l) * n + j);       \
            trd(blk);                                                                   \
            for (size_t k = 0; k < ND; k++)                                             \
                std_(tb[j + k], T != 1.0 ? blk[k] / T : blk[k]);                        \
        }                                                                               \
        for (size_t l = 0; l < ND; l++) {                                               \
            const STYPE *xr = x + (r0 + (l < lanes ? l : 0)) * n;                       \
            for (size_t j = full ? nv : 0; j < n; j++)                                  \
                tb[j][l] = T != 1.0 ? (double)xr[j] / T : (double)xr[j];                \
        }                                                                               \
        vl nan = {0}, ninf = {0};                                                       \
        vd m = maxd_cols((const double(*)[ND])tb, n, &nan,                             \
                         sizeof(STYPE) == 4 && islog == 1 ? &ninf : NULL);              \
        vl bad = nan | (m == INFINITY) | (m == -INFINITY);                              \
        for (size_t l = 0; l < lanes; l++) special[r0 + l] = bad[l] != 0;               \
        m = seld(bad, splatd(0.0), m);                                                  \
        ACC_T sa = ACC_INIT;                                                            \
        vd c_, s_;                                                                      \
        if (islog) {                                                                    \
            EXPV_LOOP(tb, n, m, &sa);                                                   \
            CS(sa, c_, s_);                                                             \
            if (sizeof(STYPE) == 4 && islog == 1) { /* see e32f_small_plain */          \
                bad |= ninf & (s_ < TINY_REST_D);                                       \
                for (size_t l = 0; l < lanes; l++) special[r0 + l] = bad[l] != 0;       \
            }                                                                           \
            vd L = vlog1p_d((c_ - 1.0) + s_);                                           \
            if (islog == 2) { /* logsumexp: m + L per row, as double */                \
                vd a_ = m + L;                                                          \
                for (size_t l = 0; l < lanes; l++) ((double *)outv)[r0 + l] = a_[l];    \
                continue;                                                               \
            }                                                                           \
            if (sizeof(STYPE) == 4) {                                                   \
                /* x - m - L as (x - C) - c, C + c = m + L exactly (the row path's     \
                 * e32a_logsub): two subtractions per element, within 2^-50 relative   \
                 * before the one rounding to float32; -inf gives -inf (C is finite) */ \
                vd Cl_, Ch_ = two_sum_v(m, L, &Cl_);                                    \
                Ch_ = seld(Ch_ == 0.0, -splatd(0.0), Ch_); /* as e32a_logsub */         \
                for (size_t j = 0; j < n; j++) std_(tb[j], (ldd(tb[j]) - Ch_) - Cl_);   \
            } else {                                                                    \
                for (size_t j = 0; j < n; j++) {                                        \
                    vd e1;                                                              \
                    vd v = ldd(tb[j]);                                                  \
                    vd d = two_sum_v(v, -m, &e1);                                       \
                    vd r = (d - L) + e1;                                                \
                    std_(tb[j], seld(d == -INFINITY, splatd(-INFINITY), r));            \
                }                                                                       \
            }                                                                           \
        } else {                                                                        \
            EXPS_LOOP(tb, n, m, &sa);                                                   \
            CS(sa, c_, s_);                                                             \
            vd D = c_ + s_;                                                             \
            vd R = 1.0 / D;                                                             \
            vd Rl = ((1.0 - R * D) - R * ((c_ - D) + s_)) * R;                          \
            for (size_t j = 0; j < n; j++) {                                            \
                vd e = ldd(tb[j]);                                                      \
                vd pe;                                                                  \
                vd p = two_prod_v(e, R, &pe);                                           \
                std_(tb[j], p + (pe + e * Rl));                                         \
            }                                                                           \
        }                                                                               \
        int anybad = 0;                                                                 \
        for (size_t l = 0; l < lanes; l++) anybad |= bad[l] != 0;                       \
        const int vout = full && !anybad;                                               \
        size_t j16s = 0;                                                                \
        SMALL_STORE16(STYPE, o + r0 * n, j16s, vout)                                    \
        for (size_t j = j16s; vout && j < nv; j += ND) {                                \
            vd blk[ND];                                                                 \
            for (size_t k = 0; k < ND; k++) blk[k] = ldd(tb[j + k]);                    \
            trd(blk);                                                                   \
            for (size_t l = 0; l < ND; l++) STROW(o + (r0 + l) * n + j, blk[l]);        \
        }                                                                               \
        for (size_t l = 0; l < lanes; l++) {                                            \
            if (bad[l]) continue;                                                       \
            STYPE *orow = o + (r0 + l) * n;                                             \
            for (size_t j = vout ? nv : 0; j < n; j++) orow[j] = (STYPE)tb[j][l];       \
        }                                                                               \
    }

#define CS_PLAIN(acc, cv, sv) \
    do {                      \
        cv = (acc).c;         \
        sv = (acc).s;         \
    } while (0)
#define CS_COMP(acc, cv, sv)                        \
    do {                                            \
        cv = (acc).c;                               \
        sv = ((acc).s + (acc).serr) * 0x1p-128;     \
    } while (0)

/* ========================= e32a: float32, accurate ========================== */
INLINE vd e32a_load(const float *x, const uint8_t *mask, double T) {
    vd v = ldfd(x);
    if (T != 1.0) v = v / T;
    if (mask) v = seld(ldmd(mask), v, splatd(-INFINITY));
    return v;
}

typedef struct {
    vd c, s;
} sumacc_d;

INLINE vd e32a_exp_vm(vd v, vd m, sumacc_d *a) {
    /* exp below 2^-1000 is far below every float32 result; -inf gives -700 */
    vd e = vexpd_p7_plain(vclamp_low_d(v - m, splatd(-700.0)));
    if (a) {
        vl ismax = (v == m);
        a->c += (vd)(ismax & (vl)e);
        a->s += (vd)(~ismax & (vl)e);
    }
    return e;
}

INLINE vd e32a_exp_vec(vd v, double m, sumacc_d *a) { return e32a_exp_vm(v, splatd(m), a); }

/* e32a_exp_vm for softmax, which needs only c + s: every term into s, c left 0 */
INLINE vd e32a_exp_vs(vd v, vd m, sumacc_d *a) {
    vd e = vexpd_p7_plain(vclamp_low_d(v - m, splatd(-700.0)));
    a->s += e;
    return e;
}

static int e32_has_nan(const float *x, size_t n) {
    for (size_t k = 0; k < n; k++)
        if (x[k] != x[k]) return 1;
    return 0;
}

/* The accurate plain path (no mask, T = 1, |max| < 2^24): the floats are clamped
 * to lowb = the largest float <= m - 128 before widening (one max per NF lanes),
 * so d = x - m is in [-131, 0] or NaN and exp needs no range handling: one-constant
 * reduction (k ln2 rounded by at most 190 ulp(ln2)/2, 2^-46 relative), the
 * degree-7 polynomial in Horner form, and 2^k from the rounding sum's bits (the
 * exponent bias is in the rounding constant). Entries below lowb contribute
 * about 2^-185 each instead of less: far below every float32 result and below
 * 2^-53 of the sum, which is at least 1. */

/* The two widened halves a, b of the floats v (clamped), with exponentials ea, eb:
 * each e into its rest sum (s0, s1) where v != m (NaN included), and the count of
 * such lanes. AVX-512 compares the NF floats once (a != mv exactly where v != m,
 * the widening being exact) and splits the mask with one shift: one compare and
 * one mask move instead of one per half (the accurate log_softmax's sum loop 34 ->
 * 33 vector uops per 16 elements); *cnt counts by a mask popcount. Elsewhere each
 * half is compared in float64 and *cntv counts -1 per lane. */
#if defined(__AVX512F__)
INLINE void e32a_acc_rest(vf v, vf mf, vd a, vd b, vd mv, vd ea, vd eb, vd *s0, vd *s1,
                          size_t *cnt, vl *cntv) {
    (void)a, (void)b, (void)mv, (void)cntv;
    __mmask16 k = _mm512_cmp_ps_mask((__m512)v, (__m512)mf, _CMP_NEQ_UQ);
    *s0 = (vd)_mm512_mask_add_pd((__m512d)*s0, (__mmask8)k, (__m512d)*s0, (__m512d)ea);
    *s1 = (vd)_mm512_mask_add_pd((__m512d)*s1, (__mmask8)(k >> 8), (__m512d)*s1, (__m512d)eb);
    *cnt += (size_t)__builtin_popcount((unsigned)k);
}
#else
INLINE void e32a_acc_rest(vf v, vf mf, vd a, vd b, vd mv, vd ea, vd eb, vd *s0, vd *s1,
                          size_t *cnt, vl *cntv) {
    (void)v, (void)mf, (void)cnt;
    vl na = a != mv, nb = b != mv;
    *s0 += (vd)(na & (vl)ea);
    *s1 += (vd)(nb & (vl)eb);
    *cntv += na + nb;
}
#endif

/* e32a_stats_plain's first step on the NF floats at x + i: v (unclamped where keepx),
 * a and b its halves widened and clamped, (ra, sa) and (rb, sb) their exponentials'
 * reduced arguments and scales (vexpd_p7_red) */
INLINE void e32a_plain_red(const float *x, size_t i, double *so, int keepx, vf lowb, vd lowbd,
                           vd mv, vf *v, vd *a, vd *b, vd *ra, vd *sa, vd *rb, vd *sb) {
    if (keepx) {
        /* widened first and kept, then clamped in float64 (the same values: the
         * widening is exact); v stays unclamped, which != m exactly where the
         * clamped value does, since lowb < m */
        *v = ldf(x + i);
        *a = cvt_lo(*v);
        *b = cvt_hi(*v);
        std_(so + i, *a);
        std_(so + i + ND, *b);
        *a = vclamp_low_d(*a, lowbd);
        *b = vclamp_low_d(*b, lowbd);
    } else {
        *v = vclamp_low(ldf(x + i), lowb);
        *a = cvt_lo(*v);
        *b = cvt_hi(*v);
    }
    vexpd_p7_red(*a - mv, ra, sa);
    vexpd_p7_red(*b - mv, rb, sb);
}

/* its second step: the exponentials, kept unless keepx, and summed */
INLINE void e32a_plain_fin(size_t i, double *so, int count, int keepx, vf mf, vd mv, vf v, vd a,
                           vd b, vd ra, vd sa, vd rb, vd sb, vd *s0, vd *s1, size_t *rest,
                           vl *rv) {
    vd ea = vexpd_p7_fin(ra, sa), eb = vexpd_p7_fin(rb, sb);
    if (so && !keepx) {
        std_(so + i, ea);
        std_(so + i + ND, eb);
    }
    if (count) {
        e32a_acc_rest(v, mf, a, b, mv, ea, eb, s0, s1, rest, rv);
    } else {
        *s0 += ea;
        *s1 += eb;
    }
}

/* The first r (< NF) of the NF terms (ea, eb) into the sums (s0, s1): a tail vector's
 * padding lanes left out */
INLINE void e32a_add_first(vd *s0, vd *s1, vd ea, vd eb, size_t r) {
    vl lo_in, hi_in;
    for (int k = 0; k < ND; k++) {
        lo_in[k] = (size_t)k < r ? -1 : 0;
        hi_in[k] = (size_t)(k + ND) < r ? -1 : 0;
    }
    *s0 += (vd)(lo_in & (vl)ea);
    *s1 += (vd)(hi_in & (vl)eb);
}

#if defined(__AVX__) && !defined(__AVX512F__)
/* The counted statistics (log_softmax, logsumexp, cross-entropy without its kept
 * exponentials) on AVX2: the maxima are found and counted in float32, one compare
 * and one integer subtraction per 8 floats, and replaced by one blend before the
 * widening with a float `lift` about 709.1 below m, whose exponential the loop
 * computes as exactly +0: d = lift - m rounds to k = -1023 in vexpd_p7_red, whose
 * scale 2^k has a zero exponent field, so e = q * 0. The float64 loop then sums every
 * lane with plain adds, as softmax's does, and adds +0 where the masked adds of
 * e32a_acc_rest add +0: the same sums bit for bit, for two float64 compares, two ands
 * and two integer adds fewer per 8 floats, and without keeping both widened halves
 * live across the pipelined step. Callgrind, accurate float32 log_softmax 256x1000:
 * 11.1 -> 10.0 instructions per element; kbench, one thread, best of the alternated
 * builds, ns/elem: 256x1000 0.998 -> 0.946, 8x50257 0.954 -> 0.902, logsumexp
 * 256x1000 0.839 -> 0.785. */
INLINE vf e32a_lift_max(vf raw, vi ismax, vf lowb, vf lift) {
    return (vf)_mm256_blendv_ps(_mm256_max_ps((__m256)lowb, (__m256)raw), (__m256)lift,
                                (__m256)ismax);
}

INLINE void e32a_cm_red(const float *x, size_t i, vf lowb, vf lift, vf mf, vd mv, vi *cm,
                        vd *ra, vd *sa, vd *rb, vd *sb) {
    vf raw = ldf(x + i);
    vi ismax = (vi)(raw == mf);
    *cm -= ismax;
    vf v = e32a_lift_max(raw, ismax, lowb, lift);
    vexpd_p7_red(cvt_lo(v) - mv, ra, sa);
    vexpd_p7_red(cvt_hi(v) - mv, rb, sb);
}

/* 0 (nothing done) where no float lifts to k = -1023: |m| near 2^24, where the floats
 * m - 709.1 rounds between are 2 apart */
static int e32a_stats_plain_cm(const float *x, size_t n, float m, skit_bstat *st,
                               const void *pf, const void *pfx) {
    const float liftf = (float)((double)m - 709.1);
    const double dl = (double)liftf - (double)m;
    if (!(dl >= -709.35 && dl <= -708.85)) return 0; /* d log2(e) in [-1023.4, -1022.6] */
    const vf lift = splatf(liftf);
    const vf lowb = splatf(e32f_lowb(m));
    const vd mv = splatd((double)m);
    const vf mf = splatf(m);
    vd s0 = {0}, s1 = {0};
    vi cm = {0};
    size_t i = 0;
    /* software-pipelined as e32a_stats_plain */
    if (n >= NF) {
        vd ra, sa, rb, sb;
        pf_lines(pf, pfx, 0);
        e32a_cm_red(x, 0, lowb, lift, mf, mv, &cm, &ra, &sa, &rb, &sb);
        for (; i + 2 * NF <= n; i += NF) {
            vd ra2, sa2, rb2, sb2;
            pf_lines(pf, pfx, (i + NF) * sizeof(float));
            e32a_cm_red(x, i + NF, lowb, lift, mf, mv, &cm, &ra2, &sa2, &rb2, &sb2);
            s0 += vexpd_p7_fin(ra, sa);
            s1 += vexpd_p7_fin(rb, sb);
            ra = ra2, sa = sa2, rb = rb2, sb = sb2;
        }
        s0 += vexpd_p7_fin(ra, sa);
        s1 += vexpd_p7_fin(rb, sb);
        i += NF;
    }
    if (i < n) {
        /* the padding equals m: neither counted nor summed */
        size_t r = n - i;
        vf raw = ldf_part(x + i, r, mf);
        vi ismax = (vi)(raw == mf);
        cm -= ismax & lanes_below(r);
        vf v = e32a_lift_max(raw, ismax, lowb, lift);
        vd ea = vexpd_p7_plain(cvt_lo(v) - mv), eb = vexpd_p7_plain(cvt_hi(v) - mv);
        e32a_add_first(&s0, &s1, ea, eb, r);
    }
    s0 += s1;
    double s = 0.0;
    size_t c = 0;
    for (int k = 0; k < ND; k++) s += s0[k];
    for (int k = 0; k < NF; k++) c += (size_t)cm[k];
    st->m = m;
    st->nan = s != s; /* a NaN the float maximum skipped */
    st->kinf = 0;
    st->c = dd_make((double)c, 0.0);
    st->s = dd_make(s, 0.0);
    return 1;
}
#endif

/* count = 0 (softmax, which needs only the whole sum c + s): every term goes into the
 * rest, with plain vector adds instead of a compare, a masked add and a count per
 * vector; c is 0 */
INLINE void e32a_stats_plain(const float *x, size_t n, float m, skit_bstat *st, double *so,
                             const void *pf, const void *pfx, int count, int keepx) {
#if defined(__AVX__) && !defined(__AVX512F__)
    if (count && !keepx && !so && e32a_stats_plain_cm(x, n, m, st, pf, pfx)) return;
#endif
    const vf lowb = splatf(e32f_lowb(m));
    const vd lowbd = splatd((double)e32f_lowb(m));
    const vd mv = splatd((double)m);
    const vf mf = splatf(m);
    vd s0 = {0}, s1 = {0};
    vl rv = {0};
    size_t rest = 0, i = 0;
    /* Software-pipelined: each step reduces the next vector's arguments (the loads, the
     * widening, the table read and the scale) before it finishes this one's (the
     * polynomial, the product and the sums), so the core finds independent work at the
     * front of its window instead of a chain of about 40 cycles per vector waiting in
     * its scheduler. The same operations on every element, summed in the same order:
     * the same bits. */
    if (n >= NF) {
        vf v;
        vd a, b, ra, sa, rb, sb;
        pf_lines(pf, pfx, 0);
        e32a_plain_red(x, 0, so, keepx, lowb, lowbd, mv, &v, &a, &b, &ra, &sa, &rb, &sb);
        for (; i + 2 * NF <= n; i += NF) {
            vf v2;
            vd a2, b2, ra2, sa2, rb2, sb2;
            pf_lines(pf, pfx, (i + NF) * sizeof(float));
            e32a_plain_red(x, i + NF, so, keepx, lowb, lowbd, mv, &v2, &a2, &b2, &ra2, &sa2,
                           &rb2, &sb2);
            e32a_plain_fin(i, so, count, keepx, mf, mv, v, a, b, ra, sa, rb, sb, &s0, &s1,
                           &rest, &rv);
            v = v2, a = a2, b = b2, ra = ra2, sa = sa2, rb = rb2, sb = sb2;
        }
        e32a_plain_fin(i, so, count, keepx, mf, mv, v, a, b, ra, sa, rb, sb, &s0, &s1, &rest,
                       &rv);
        i += NF;
    }
    if (i < n) {
        size_t r = n - i;
        vf v = vclamp_low(ldf_part(x + i, r, splatf(m)), lowb);
        vd a = cvt_lo(v), b = cvt_hi(v);
        vd ea = vexpd_p7_plain(a - mv), eb = vexpd_p7_plain(b - mv);
        if (so) {
            /* the tail's r values: the unclamped widened floats, or the exponentials */
            vd ka = ea, kb = eb;
            if (keepx) {
                vf u = ldf_part(x + i, r, splatf(m));
                ka = cvt_lo(u);
                kb = cvt_hi(u);
            }
#if defined(__AVX512F__)
            unsigned k_ = (1u << r) - 1u;
            _mm512_mask_storeu_pd(so + i, (__mmask8)(k_ & 0xffu), (__m512d)ka);
            _mm512_mask_storeu_pd(so + i + ND, (__mmask8)(k_ >> 8), (__m512d)kb);
#else
            double eb_[NF];
            std_(eb_, ka);
            std_(eb_ + ND, kb);
            memcpy(so + i, eb_, r * sizeof(double));
#endif
        }
        if (count) {
            /* the padding equals m: it is never counted in the rest */
            e32a_acc_rest(v, mf, a, b, mv, ea, eb, &s0, &s1, &rest, &rv);
        } else { /* the padding's terms (1) are left out */
            e32a_add_first(&s0, &s1, ea, eb, r);
        }
    }
    s0 += s1;
    double s = 0.0;
    for (int k = 0; k < ND; k++) {
        s += s0[k];
        rest -= (size_t)rv[k];
    }
    st->m = m;
    st->nan = s != s; /* a NaN the float maximum skipped */
    st->kinf = 0;
    st->c = dd_make(count ? (double)(n - rest) : 0.0, 0.0);
    st->s = dd_make(s, 0.0);
}

/* keepx (log_softmax): the scratch keeps each entry as the output pass reads it (the
 * float widened, scaled by 1 / T and masked as e32a_load gives it) instead of its
 * exponential, so that e32a_logsub_kept need not widen the floats again. It is filled
 * whenever the block's statistics come out finite (m > -inf, no NaN, no +inf). */
INLINE void e32a_stats_kx(const void *xv, const uint8_t *mask, size_t n, double T,
                          skit_bstat *st, void *scratch, const void *pf, const void *pfx,
                          int count, int keepx) {
    const float *x = (const float *)xv;
    double *so = (double *)scratch;
    size_t r = n % ND, nf = n - r;
    PAD_CHUNK(float, ND, nf, r)
    double mx;
    int anynan;
    if (!mask && T == 1.0) {
        /* The maximum of the floats themselves (exact in double), NF lanes at a time.
         * It skips NaN: a NaN with a finite maximum makes the sum below NaN; with
         * no finite maximum, the row is scanned for one. */
        float fm = e32f_rowmax(x, n);
        if (e32f_plain_ok(fm)) {
            e32a_stats_plain(x, n, fm, st, so, pf, pfx, count, keepx);
            return;
        }
        mx = (double)fm;
        anynan = isinf(mx) && e32_has_nan(x, n);
    } else {
        MAXD_PASS(e32a_load)
        mx = m;
        anynan = nan;
    }
    const double m = mx;
    const int nan = anynan;
    size_t i;
    int64_t kinf = 0;
    if (m == INFINITY && !nan) COUNT_POSINF(float, (T != 1.0 ? (double)x[k] / T : (double)x[k]))
    st->m = m;
    st->nan = nan;
    st->kinf = kinf;
    st->c = dd_make(0.0, 0.0);
    st->s = dd_make(0.0, 0.0);
    if (nan || kinf || m == -INFINITY) return;
    sumacc_d sa = {(vd){0}, (vd){0}}, sb = sa;
    for (i = 0; i + 2 * ND <= nf; i += 2 * ND) {
        vd u = e32a_load(x + i, mask ? mask + i : NULL, T);
        vd w = e32a_load(x + i + ND, mask ? mask + i + ND : NULL, T);
        vd e = e32a_exp_vec(u, m, &sa);
        vd f = e32a_exp_vec(w, m, &sb);
        pf_lines(pf, pfx, i * sizeof(float));
        if (so) {
            std_(so + i, keepx ? u : e);
            std_(so + i + ND, keepx ? w : f);
        }
    }
    for (; i < nf; i += ND) {
        vd u = e32a_load(x + i, mask ? mask + i : NULL, T);
        vd e = e32a_exp_vec(u, m, &sa);
        pf_lines(pf, pfx, i * sizeof(float));
        if (so) std_(so + i, keepx ? u : e);
    }
    if (r) {
        vd u = e32a_load(xb, mb, T);
        vd e = e32a_exp_vec(u, m, &sa);
        if (so) std_(so + nf, keepx ? u : e);
    }
    double c = 0.0, s = 0.0;
    for (int k = 0; k < ND; k++) {
        c += sa.c[k] + sb.c[k];
        s += sa.s[k] + sb.s[k];
    }
    if (s != s) { /* a NaN the float maximum skipped (every term is finite otherwise) */
        st->nan = 1;
        return;
    }
    st->c = dd_make(c, 0.0);
    st->s = dd_make(s, 0.0);
}

INLINE void e32a_stats_k(const void *xv, const uint8_t *mask, size_t n, double T, skit_bstat *st,
                         void *scratch, const void *pf, const void *pfx, int count) {
    e32a_stats_kx(xv, mask, n, T, st, scratch, pf, pfx, count, 0);
}
STATS_ENTRIES(e32a)
#if defined(__AVX512F__)
/* log_softmax keeps its widened entries on AVX-512 only, where that saves vector uops
 * (43 against 46 per 16 elements). The AVX2 and SSE2 engines read the floats again,
 * which costs fewer instructions there (session 26, AVX2 on AMD Zen 3, callgrind
 * 256x1000: 12.46 -> 11.18 per element; kbench, one thread, the two builds alternated,
 * best of 400 calls, ns/elem: 256x1000 1.04 -> 1.00, 64x2000 1.00-1.02 -> 0.98, 512x500
 * 1.16 -> 1.12, medians 8-15% lower). */
static void e32a_stats_keepx(const void *xv, const uint8_t *mask, size_t n, double T,
                             skit_bstat *st, void *scratch, const void *pf, const void *pfx) {
    e32a_stats_kx(xv, mask, n, T, st, scratch, pf, pfx, 1, 1);
}
#define E32A_KEEPX e32a_stats_keepx, e32a_logsub_kept
#else
#define E32A_KEEPX NULL, NULL
#endif

/* store ND floats (half a vector) */
INLINE void stfh(float *p, vd v, int stream) {
    vfh h = cvt_half(v);
#if defined(__AVX512F__)
    if (stream) {
        _mm256_stream_ps(p, (__m256)h);
        return;
    }
#elif defined(__AVX__)
    if (stream) {
        _mm_stream_ps(p, (__m128)h);
        return;
    }
#endif
    (void)stream;
    memcpy(p, &h, sizeof h);
}

static void e32a_fromscratch(const void *sv, size_t n, skit_dd f, void *outv, int stream) {
    const double *sc = (const double *)sv;
    float *o = (float *)outv;
#define FULL(i) stfh(o + (i), ldd(sc + (i)) * f.hi, stream)
#define PART(i, cnt)                                         \
    do {                                                     \
        double b_[ND] = {0};                                 \
        float r_[ND];                                        \
        memcpy(b_, sc + (i), (cnt) * sizeof(double));        \
        stfh(r_, ldd(b_) * f.hi, 0);                         \
        memcpy(o + (i), r_, (cnt) * sizeof(float));          \
    } while (0)
    PHASE_B_LOOP(float, ND, FULL, PART)
#undef FULL
#undef PART
}

static void e32a_rescale(void *outv, size_t n, skit_dd f) {
    float *o = (float *)outv;
    for (size_t i = 0; i < n; i++) o[i] = (float)((double)o[i] * f.hi);
}

/* e32a_expscale's loop without a mask or a temperature, as e32a_logsub_plain */
INLINE void e32a_expscale_plain(const float *x, size_t n, double M, double f, float *o,
                                int stream) {
#define FULL(i) stfh(o + (i), e32a_exp_vec(ldfd(x + (i)), M, NULL) * f, stream)
#define PART(i, cnt)                                            \
    do {                                                        \
        float b_[ND];                                           \
        float r_[ND];                                           \
        for (size_t k_ = 0; k_ < ND; k_++) b_[k_] = -INFINITY;  \
        memcpy(b_, x + (i), (cnt) * sizeof(float));             \
        stfh(r_, e32a_exp_vec(ldfd(b_), M, NULL) * f, 0);       \
        memcpy(o + (i), r_, (cnt) * sizeof(float));             \
    } while (0)
    PHASE_B_LOOP(float, ND, FULL, PART)
#undef FULL
#undef PART
}

static void e32a_expscale(const void *xv, const uint8_t *mask, size_t n, double T, double M,
                          skit_dd f, void *outv, int stream) {
    const float *x = (const float *)xv;
    float *o = (float *)outv;
    if (!mask && T == 1.0) {
        if (stream)
            e32a_expscale_plain(x, n, M, f.hi, o, 1);
        else
            e32a_expscale_plain(x, n, M, f.hi, o, 0);
        return;
    }
#define FULL(i) \
    stfh(o + (i), e32a_exp_vec(e32a_load(x + (i), mask ? mask + (i) : NULL, T), M, NULL) * f.hi, stream)
#define PART(i, cnt)                                                   \
    do {                                                               \
        PAD_CHUNK(float, ND, i, cnt)                                   \
        float r_[ND];                                                  \
        stfh(r_, e32a_exp_vec(e32a_load(xb, mb, T), M, NULL) * f.hi, 0); \
        memcpy(o + (i), r_, (cnt) * sizeof(float));                    \
    } while (0)
    PHASE_B_LOOP(float, ND, FULL, PART)
#undef FULL
#undef PART
}

/* e32a_logsub's loop without a mask or a temperature, inlined with `stream` constant:
 * no per-vector tests of the three (about 15 -> 6 instructions per 4 elements) */
INLINE void e32a_logsub_plain(const float *x, size_t n, double Ch, double Cl, float *o,
                              int stream) {
#define FULL(i) stfh(o + (i), (ldfd(x + (i)) - Ch) - Cl, stream)
#define PART(i, cnt)                                \
    do {                                            \
        float b_[ND] = {0};                         \
        float r_[ND];                               \
        memcpy(b_, x + (i), (cnt) * sizeof(float)); \
        stfh(r_, (ldfd(b_) - Ch) - Cl, 0);          \
        memcpy(o + (i), r_, (cnt) * sizeof(float)); \
    } while (0)
    PHASE_B_LOOP(float, ND, FULL, PART)
#undef FULL
#undef PART
}

/* (x - M) - L as (x - C) - c with C + c = M + L (double-word, one rounding of c): two
 * subtractions per element instead of three. Where the result is near 0, x is within
 * an ulp of C and x - C is exact; elsewhere each step errs by 2^-53 of the result. */
/* C + c = M + L for e32a_logsub and e32a_logsub_kept, (x - C) - c their output; a
 * zero C taken as -0, so that x = -0 at C gives +0, as x - x does */
INLINE void e32a_logsub_c(double M, skit_dd L, double *Ch, double *Cl) {
    const skit_dd C0 = dd_two_sum(M, L.hi);
    *Ch = C0.hi == 0.0 ? -0.0 : C0.hi;
    *Cl = C0.lo + L.lo;
}

static void e32a_logsub(const void *xv, const uint8_t *mask, size_t n, double T, double M,
                        skit_dd L, void *outv, int stream) {
    const float *x = (const float *)xv;
    float *o = (float *)outv;
    double Ch, Cl;
    e32a_logsub_c(M, L, &Ch, &Cl);
    if (!mask && T == 1.0) {
        if (stream)
            e32a_logsub_plain(x, n, Ch, Cl, o, 1);
        else
            e32a_logsub_plain(x, n, Ch, Cl, o, 0);
        return;
    }
#define FULL(i) stfh(o + (i), (e32a_load(x + (i), mask ? mask + (i) : NULL, T) - Ch) - Cl, stream)
#define PART(i, cnt)                                     \
    do {                                                 \
        PAD_CHUNK(float, ND, i, cnt)                     \
        float r_[ND];                                    \
        stfh(r_, (e32a_load(xb, mb, T) - Ch) - Cl, 0);   \
        memcpy(o + (i), r_, (cnt) * sizeof(float));      \
    } while (0)
    PHASE_B_LOOP(float, ND, FULL, PART)
#undef FULL
#undef PART
}

#if defined(__AVX512F__)
/* e32a_logsub from the entries e32a_stats_keepx kept (already widened, scaled and
 * masked): the same arithmetic on the same values, so the same bits, without the
 * widening (log_softmax's vector uops per 16 elements 46 -> 43 on AVX-512) */
static void e32a_logsub_kept(const void *sv, size_t n, double M, skit_dd L, void *outv,
                             int stream) {
    const double *sc = (const double *)sv;
    float *o = (float *)outv;
    double Ch, Cl;
    e32a_logsub_c(M, L, &Ch, &Cl);
#define FULL(i) stfh(o + (i), (ldd(sc + (i)) - Ch) - Cl, stream)
#define PART(i, cnt)                                  \
    do {                                              \
        double b_[ND] = {0};                          \
        float r_[ND];                                 \
        memcpy(b_, sc + (i), (cnt) * sizeof(double)); \
        stfh(r_, (ldd(b_) - Ch) - Cl, 0);             \
        memcpy(o + (i), r_, (cnt) * sizeof(float));   \
    } while (0)
    PHASE_B_LOOP(float, ND, FULL, PART)
#undef FULL
#undef PART
}

#endif

static skit_dd e32a_scaled(const void *x, size_t i, double T) {
    double v = ((const float *)x)[i];
    if (T != 1.0) v = v / T;
    return dd_make(v, 0.0);
}

static void e32a_special(const void *x, const uint8_t *mask, size_t n, double T,
                         const skit_rstat *rs, int islog, void *out) {
    SPECIAL_BODY(float, (T != 1.0 ? (double)xp[i] / T : (double)xp[i]))
}

/* softmax's exponentials in e32a_small: e32a_exp_vs on every column in order,
 * software-pipelined as e32a_stats_plain (the next column reduced before this one's
 * exponential is finished; tb[n], set to m, is reduced and never finished): the same
 * operations and the same sum, so the same bits. Session 37, AMD EPYC AVX2, one
 * thread, kbench medians of five alternated runs, accurate float32 ns/elem: softmax
 * 64x100 3.96 -> 3.52, 256x256 3.91 -> 3.45; with e32a_small_expv, log_softmax
 * 64x100 4.29 -> 4.01, logsumexp 64x100 3.51 -> 3.26. */
INLINE void e32a_small_exps(double (*tb)[ND], size_t n, vd m, sumacc_d *a) {
    const vd lo = splatd(-700.0);
    std_(tb[n], m);
    vd r, s;
    vexpd_p7_red(vclamp_low_d(ldd(tb[0]) - m, lo), &r, &s);
    for (size_t j = 0; j < n; j++) {
        vd r2, s2;
        vexpd_p7_red(vclamp_low_d(ldd(tb[j + 1]) - m, lo), &r2, &s2);
        vd e = vexpd_p7_fin(r, s);
        a->s += e;
        std_(tb[j], e);
        r = r2, s = s2;
    }
}

/* the same for log_softmax: e32a_exp_vm on every column in order, nothing stored */
INLINE void e32a_small_expv(double (*tb)[ND], size_t n, vd m, sumacc_d *a) {
    const vd lo = splatd(-700.0);
    std_(tb[n], m);
    vd v = ldd(tb[0]), r, s;
    vexpd_p7_red(vclamp_low_d(v - m, lo), &r, &s);
    for (size_t j = 0; j < n; j++) {
        vd v2 = ldd(tb[j + 1]), r2, s2;
        vexpd_p7_red(vclamp_low_d(v2 - m, lo), &r2, &s2);
        vd e = vexpd_p7_fin(r, s);
        vl ismax = (v == m);
        a->c += (vd)(ismax & (vl)e);
        a->s += (vd)(~ismax & (vl)e);
        v = v2, r = r2, s = s2;
    }
}

#define STFH0(p, v) stfh((p), (v), 0)
static void e32a_small(const void *xv, size_t rows, size_t n, double T, int islog, void *outv,
                       uint8_t *special) {
    SMALL_D_BODY(float, sumacc_d, ((sumacc_d){(vd){0}, (vd){0}}), e32a_small_expv,
                 e32a_small_exps, CS_PLAIN, ldfd, STFH0)
}

/* Cross-entropy rows of n <= SKIT_SMALL_N elements, ND rows at a time (one row per
 * lane). Each lane repeats e32a_stats_plain exactly: the float maximum (NaN skipped),
 * entries clamped to lowb before the exponential, and the rest summed in its order:
 * element j goes to accumulator j mod 2 ND (the two half-vectors of its chunks), the
 * accumulators are paired (k, k + ND) and added in k order from 0. So the statistics,
 * hence the loss, are the row path's bits, and out = exp(x - m) f is fromscratch's. */
/* One output vector of the label-smoothing gradient: e f - k w, rounded once to
 * float32 (out64: stored as float64), cnt < NF lanes for a row's tail. Kinds 1 and
 * 2 of e32a_smooth share it so that the same expression gives the same bits. */
INLINE void smooth_store(int out64, void *outv, size_t i, size_t cnt, vd e0, vd e1, vd fv, vd kv,
                         vd w0, vd w1) {
    vd r0 = e0 * fv - kv * w0, r1 = e1 * fv - kv * w1;
    if (out64) { /* for a caller that rounds it once to a narrower type */
        double *od = (double *)outv + i;
        if (cnt == NF) {
            std_(od, r0);
            std_(od + ND, r1);
        } else {
            double ob[NF];
            std_(ob, r0);
            std_(ob + ND, r1);
            memcpy(od, ob, cnt * sizeof(double));
        }
        return;
    }
    vf r = cvt_join(r0, r1);
    if (cnt == NF)
        stf((float *)outv + i, r);
    else
        stf_part((float *)outv + i, r, cnt);
}

/* Label smoothing over n float32 logits (see skit_smooth), float64 arithmetic with
 * the table exponential (about 1 ulp):
 *   kind 0: *gap = sum_c w_c (m - x_c) (unless gap is NULL) and *dsum = sum_c
 *           exp(x_c - m) (compensated; unless dsum is NULL), w NULL meaning weights
 *           1; with keep != NULL the exponentials are also stored there (n rounded
 *           up to NF doubles);
 *   kind 1: out_c = exp(x_c - m) f - k w_c;
 *   kind 2: out_c = keep_c f - k w_c, keep from kind 0 with the same m: the same
 *           bits as kind 1.
 * out is float32 rounded once, or float64 with out64. The tail runs the same
 * vector code on a padded vector, so every element is treated alike wherever it
 * lies, and the sums' order depends only on n. */
/* one vector of e32a_smooth's loop: the NF elements at i, or the first cnt of them
 * (full = 0: a row's tail, padded); the sums in (g0, g1) and (s0, c0, s1, c1) */
INLINE void e32a_smooth_step(int kind, int out64, const float *x, const double *w, size_t i,
                             size_t cnt, int full, vd mv, vd fv, vd kv, vf fill, int sum_gap,
                             int sum_exp, double *keep, void *outv, vd *g0, vd *g1, vd *s0,
                             vd *s1, vd *c0, vd *c1) {
    const vd zero = {0};
    vd w0 = splatd(1.0), w1 = w0;
    if (w && full) {
        w0 = ldd(w + i);
        w1 = ldd(w + i + ND);
    } else if (w) {
        double wb[NF];
        memset(wb, 0, sizeof wb);
        memcpy(wb, w + i, cnt * sizeof(double));
        w0 = ldd(wb);
        w1 = ldd(wb + ND);
    }
    if (kind == 2) {
        smooth_store(out64, outv, i, cnt, ldd(keep + i), ldd(keep + i + ND), fv, kv, w0, w1);
        return;
    }
    vf v = full ? ldf(x + i) : ldf_part(x + i, cnt, fill);
    vd d0 = cvt_lo(v) - mv, d1 = cvt_hi(v) - mv;
    if (kind == 1) {
        vd e0 = vexpd_tab_hi(d0, zero), e1 = vexpd_tab_hi(d1, zero);
        smooth_store(out64, outv, i, cnt, e0, e1, fv, kv, w0, w1);
        return;
    }
    vl k0, k1;
    if (!full) {
        for (int l = 0; l < ND; l++) {
            k0[l] = (size_t)l < cnt ? -1 : 0;
            k1[l] = (size_t)(l + ND) < cnt ? -1 : 0;
        }
    }
    if (sum_gap) {
        vd t0 = w0 * d0, t1 = w1 * d1;
        if (w) { /* a class of weight 0 adds nothing, even at a -inf logit (0 inf) */
            t0 = seld(w0 == zero, zero, t0);
            t1 = seld(w1 == zero, zero, t1);
        }
        if (!full) t0 = seld(k0, t0, zero), t1 = seld(k1, t1, zero);
        *g0 += t0, *g1 += t1;
    }
    if (sum_exp) {
        vd e0 = vexpd_tab_hi(d0, zero), e1 = vexpd_tab_hi(d1, zero);
        if (keep) {
            std_(keep + i, e0);
            std_(keep + i + ND, e1);
        }
        if (!full) e0 = seld(k0, e0, zero), e1 = seld(k1, e1, zero);
        vd err;
        *s0 = two_sum_v(*s0, e0, &err), *c0 += err;
        *s1 = two_sum_v(*s1, e1, &err), *c1 += err;
    }
}

INLINE void e32a_smooth_body(int kind, int out64, const void *xv, const double *w, size_t n,
                             double m, double f, double k, double *gap, double *dsum,
                             double *keep, void *outv) {
    const float *x = (const float *)xv;
    const vd zero = {0}, mv = splatd(m), fv = splatd(f), kv = splatd(k);
    const vf fill = splatf((float)m);
    vd g0 = zero, g1 = zero, s0 = zero, s1 = zero, c0 = zero, c1 = zero;
    const int sg = gap != NULL, se = dsum != NULL;
    size_t i = 0;
    for (; i + NF <= n; i += NF)
        e32a_smooth_step(kind, out64, x, w, i, NF, 1, mv, fv, kv, fill, sg, se, keep, outv, &g0,
                         &g1, &s0, &s1, &c0, &c1);
    if (i < n)
        e32a_smooth_step(kind, out64, x, w, i, n - i, 0, mv, fv, kv, fill, sg, se, keep, outv,
                         &g0, &g1, &s0, &s1, &c0, &c1);
    if (kind == 0) {
        vd g = g0 + g1, hi = s0, lo = (c0 + c1);
        vd err;
        hi = two_sum_v(hi, s1, &err);
        lo += err;
        double gs = 0.0, sh = 0.0, sl = 0.0;
        for (int l = 0; l < ND; l++) {
            gs += g[l];
            double t = sh + hi[l], bb = t - sh;
            sl += ((sh - (t - bb)) + (hi[l] - bb)) + lo[l];
            sh = t;
        }
        if (gap) *gap = -gs;
        if (dsum) *dsum = sh + sl;
    }
}

/* The passes skit_smooth makes, each with its case fixed at compile time (no tests
 * of the kind, the weights or the sums per vector; session 29, kbench, one thread,
 * label-smoothed cross-entropy with its gradient 256x1000: see BENCHMARKS.md), and
 * the rest through the general loop: the same arithmetic in the same order either way */
static void e32a_smooth(int kind, int out64, const void *xv, const double *w, size_t n, double m,
                        double f, double k, double *gap, double *dsum, double *keep,
                        void *outv) {
    if (kind == 0 && gap && dsum && keep) { /* kinds 4 and 5: the sums and kept exponentials */
        if (w)
            e32a_smooth_body(0, 0, xv, w, n, m, f, k, gap, dsum, keep, NULL);
        else
            e32a_smooth_body(0, 0, xv, NULL, n, m, f, k, gap, dsum, keep, NULL);
    } else if (kind == 2 && !out64) { /* kind 4's output */
        if (w)
            e32a_smooth_body(2, 0, NULL, w, n, m, f, k, NULL, NULL, keep, outv);
        else
            e32a_smooth_body(2, 0, NULL, NULL, n, m, f, k, NULL, NULL, keep, outv);
    } else {
        e32a_smooth_body(kind, out64, xv, w, n, m, f, k, gap, dsum, keep, outv);
    }
}

/* The everyday cross-entropy finish of float32 rows (driver.c: fin_ok): for each
 * of cnt rows, from its maximum m, the count c of its maxima, the rest sum s (the
 * stats' plain path), its target logit xt and the gradient's scale sc (weight
 * times 1/N or 1):
 *   lse  = m + log1p((c - 1) + s),
 *   loss = log1p((c - 1) + s) + (m - xt)   (two terms >= 0: nothing cancels),
 *   fac  = sc / (c + s)                     (the gradient is exp(x - m) fac),
 *   gt   = -sc (D - e_t) / D, D = c + s, e_t = exp(xt - m): the gradient's target
 *          entry, with D - e_t formed as (c - 1) + s where xt = m and as
 *          c + (s - e_t) elsewhere (c >= 1 is an integer, so the difference that
 *          may cancel only adds to it).
 * In float64 throughout, each within a few 2^-52 of its exact value, far below
 * the float32 ulp every result is rounded to (the vector log1p, and the exp the
 * stats use). Rows are independent lanes of ND-wide vectors, so a row gets the
 * same bits alone (the row path) as with others (the transposed kernel). */
static void ce_fin_f32(size_t cnt, const double *m, const double *c, const double *s,
                       const double *xt, const double *sc, double *lse, double *nll,
                       double *fac, double *gt) {
    for (size_t i = 0; i < cnt; i += ND) {
        const size_t k = cnt - i < ND ? cnt - i : ND;
        double in[5][ND], res[4][ND];
        for (size_t l = 0; l < ND; l++) { /* padding: a row of one entry */
            in[0][l] = l < k ? m[i + l] : 0.0;
            in[1][l] = l < k ? c[i + l] : 1.0;
            in[2][l] = l < k ? s[i + l] : 0.0;
            in[3][l] = l < k ? xt[i + l] : 0.0;
            in[4][l] = l < k ? sc[i + l] : 0.0;
        }
        const vd mv = ldd(in[0]), cv = ldd(in[1]), sv = ldd(in[2]), xv = ldd(in[3]);
        const vd scv = ldd(in[4]);
        const vd L = vlog1p_d((cv - 1.0) + sv), D = cv + sv;
        const vd et = vexpd_p7_plain(vclamp_low_d(xv - mv, splatd(-700.0)));
        const vd num = seld(xv == mv, (cv - 1.0) + sv, cv + (sv - et));
        std_(res[0], mv + L);
        std_(res[1], L + (mv - xv));
        std_(res[2], scv / D);
        std_(res[3], -(num / D) * scv);
        for (size_t l = 0; l < k; l++) {
            lse[i + l] = res[0][l];
            nll[i + l] = res[1][l];
            fac[i + l] = res[2][l];
            gt[i + l] = res[3][l];
        }
    }
}

static void e32a_small_ce(const void *xv, size_t rows, size_t n, skit_row_cb cb, void *ctx,
                          void *outv, uint8_t *special) {
    const float *x = (const float *)xv;
    float *o = (float *)outv;
    double tb[SKIT_SMALL_N + 1][ND] __attribute__((aligned(64))); /* + the padding */
    const size_t nv = n - n % ND;
    for (size_t r0 = 0; r0 < rows; r0 += ND) {
        size_t lanes = rows - r0 < ND ? rows - r0 : ND;
        const int full = lanes == ND;
        size_t j = 0;
#if VB == 64
        for (; full && j + 16 <= nv; j += 16) e32_load16_d(x + r0 * n, n, j, tb, 1.0);
#endif
        for (; full && j < nv; j += ND) {
            vd blk[ND];
            for (size_t l = 0; l < ND; l++) blk[l] = ldfd(x + (r0 + l) * n + j);
            trd(blk);
            for (size_t k = 0; k < ND; k++) std_(tb[j + k], blk[k]);
        }
        for (size_t l = 0; l < ND; l++) {
            const float *xr = x + (r0 + (l < lanes ? l : 0)) * n;
            for (size_t j = full ? nv : 0; j < n; j++) tb[j][l] = (double)xr[j];
        }
        vl nan_ = {0};
        vd m = maxd_cols((const double(*)[ND])tb, n, &nan_, NULL); /* NaN never wins */
        vl bad = ~((m < 0x1p24) & (m > -0x1p24));
        m = seld(bad, splatd(0.0), m);
        double lb[ND];
        for (size_t l = 0; l < ND; l++) lb[l] = (double)e32f_lowb((float)m[l]);
        const vd lowb = ldd(lb);
        vd acc[2 * ND];
        for (size_t k = 0; k < 2 * ND; k++) acc[k] = splatd(0.0);
        vl rest = {0};
        /* Software-pipelined as e32a_stats_plain: each step reduces the next column's
         * argument before it finishes this one's exponential (tb[n] is a padding
         * column equal to m, reduced and never finished). The same operations on
         * every element, summed in the same order: the same bits. Session 37, AMD
         * EPYC AVX2, one thread, with the Estrin exp above, cross-entropy with its
         * gradient, ns/elem: 64x100 4.64 -> 4.15, 256x160 4.34 -> 3.76. */
        std_(tb[n], m);
#define SMALL_CE_RED(j, R, S, NE)                         \
    do {                                                  \
        vd a_ = vclamp_low_d(ldd(tb[j]), lowb);           \
        NE = a_ != m;                                     \
        vexpd_p7_red(a_ - m, &R, &S);                     \
    } while (0)
#define SMALL_CE_FIN(j, k, R, S, NE)                      \
    do {                                                  \
        vd e_ = vexpd_p7_fin(R, S);                       \
        acc[k] += (vd)(NE & (vl)e_);                      \
        rest -= NE;                                       \
        std_(tb[j], e_);                                  \
    } while (0)
        vd pr, ps;
        vl pne;
        SMALL_CE_RED(0, pr, ps, pne);
        size_t j0 = 0;
        for (; j0 + 2 * ND <= n; j0 += 2 * ND) {
#pragma GCC unroll 16
            for (size_t k = 0; k < 2 * ND; k++) {
                vd nr, ns;
                vl nne;
                SMALL_CE_RED(j0 + k + 1, nr, ns, nne);
                SMALL_CE_FIN(j0 + k, k, pr, ps, pne);
                pr = nr, ps = ns, pne = nne;
            }
        }
        for (size_t k = 0; j0 + k < n; k++) {
            vd nr, ns;
            vl nne;
            SMALL_CE_RED(j0 + k + 1, nr, ns, nne);
            SMALL_CE_FIN(j0 + k, k, pr, ps, pne);
            pr = nr, ps = ns, pne = nne;
        }
#undef SMALL_CE_RED
#undef SMALL_CE_FIN
        double f[ND], mb[ND], cb_[ND], sb[ND];
        uint8_t sk[ND];
        vl skip = bad;
        for (size_t l = 0; l < ND; l++) {
            f[l] = 0.0;
            if (l >= lanes) continue;
            double s = 0.0;
            for (size_t k = 0; k < ND; k++) s += acc[k][l] + acc[k + ND][l];
            if (!bad[l] && s != s) skip[l] = -1;
            special[r0 + l] = sk[l] = skip[l] != 0;
            mb[l] = m[l];
            cb_[l] = (double)(n - (size_t)rest[l]);
            sb[l] = s;
        }
        cb(ctx, r0, lanes, sk, mb, cb_, sb, f);
        if (!o) continue;
        const vd fv = ldd(f);
        int anyskip = 0;
        for (size_t l = 0; l < lanes; l++) anyskip |= skip[l] != 0;
        const int vout = full && !anyskip;
        size_t js = 0;
#if VB == 64
        for (; vout && js + 16 <= nv; js += 16)
            e32_store16_d(o + r0 * n, n, js, (const double(*)[ND])tb, fv, 1);
#endif
        for (size_t j = js; vout && j < nv; j += ND) {
            vd blk[ND];
            for (size_t k = 0; k < ND; k++) blk[k] = ldd(tb[j + k]) * fv;
            trd(blk);
            for (size_t l = 0; l < ND; l++) STFH0(o + (r0 + l) * n + j, blk[l]);
        }
        for (size_t l = 0; l < lanes; l++) {
            if (skip[l]) continue;
            float *orow = o + (r0 + l) * n;
            for (size_t j = vout ? nv : 0; j < n; j++) orow[j] = (float)(tb[j][l] * f[l]);
        }
    }
}


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

INLINE vd e64f_exp_vm(vd v, vd m, sumacc_dc *a) {
    vd lo;
    vd d = two_sum_v(v, -m, &lo);
    vl low = d < -800.0; /* exp underflows to 0 (also -inf and overflowed d) */
    d = seld(low, splatd(-800.0), d);
    lo = (vd)(~low & (vl)lo);
    vd es_ = vexpd_tab_hi_s(d, lo); /* times 2^128: tiny terms are summed unrounded */
    vd e = es_ * 0x1p-128;
    if (a) {
        vl ismax = (v == m);
        a->c += (vd)(ismax & (vl)e);
        vd es = (vd)(~ismax & (vl)es_);
        vd err;
        a->s = two_sum_v(a->s, es, &err);
        a->serr += err;
    }
    return e;
}

INLINE vd e64f_exp_vec(vd v, double m, sumacc_dc *a) { return e64f_exp_vm(v, splatd(m), a); }

/* a double-word sum kept in units of 2^-128 back to units of 1, rounding once */
static skit_dd e64a_unscale_fwd(skit_dd a) {
    double hi = a.hi * 0x1p-128;
    double rem = a.hi - hi * 0x1p128; /* exact */
    return dd_make(hi, (rem + a.lo) * 0x1p-128);
}

#define STATS_HEAD_D(STYPE)                                       \
    const STYPE *x = (const STYPE *)xv;                           \
    size_t r = n % ND, nf = n - r;                                \
    PAD_CHUNK(STYPE, ND, nf, r)                                   \
    MAXD_PASS(e64_load)                                           \
    int64_t kinf = 0;                                             \
    if (m == INFINITY && !nan) COUNT_POSINF(double, (T != 1.0 ? x[k] / T : x[k])) \
    st->m = m;                                                    \
    st->nan = nan;                                                \
    st->kinf = kinf;                                              \
    st->c = dd_make(0.0, 0.0);                                    \
    st->s = dd_make(0.0, 0.0);                                    \
    if (nan || kinf || m == -INFINITY) return;

static void e64f_stats(const void *xv, const uint8_t *mask, size_t n, double T, skit_bstat *st,
                       void *scratch, const void *pf, const void *pfx) {
    double *so = (double *)scratch;
    STATS_HEAD_D(double)
    sumacc_dc sa = {(vd){0}, (vd){0}, (vd){0}}, sb = sa;
    for (i = 0; i + 2 * ND <= nf; i += 2 * ND) {
        vd e = e64f_exp_vec(e64_load(x + i, mask ? mask + i : NULL, T), m, &sa);
        vd f = e64f_exp_vec(e64_load(x + i + ND, mask ? mask + i + ND : NULL, T), m, &sb);
        pf_lines(pf, pfx, i * sizeof(double));
        pf_lines(pf, pfx, (i + ND) * sizeof(double));
        if (so) {
            std_(so + i, e);
            std_(so + i + ND, f);
        }
    }
    for (; i < nf; i += ND) {
        vd e = e64f_exp_vec(e64_load(x + i, mask ? mask + i : NULL, T), m, &sa);
        pf_lines(pf, pfx, i * sizeof(double));
        if (so) std_(so + i, e);
    }
    if (r) {
        vd e = e64f_exp_vec(e64_load(xb, mb, T), m, &sa);
        if (so) std_(so + nf, e);
    }
    double c = 0.0;
    skit_dd s = dd_make(0.0, 0.0);
    for (int k = 0; k < ND; k++) {
        c += sa.c[k] + sb.c[k];
        s = dd_add(s, dd_make(sa.s[k], sa.serr[k]));
        s = dd_add(s, dd_make(sb.s[k], sb.serr[k]));
    }
    st->c = dd_make(c, 0.0);
    st->s = e64a_unscale_fwd(s);
}

/* (eh + el) * (f.hi + f.lo) rounded once */
INLINE vd dd_mul_round(vd eh, vd el, skit_dd f) {
    vd pe;
    vd p = two_prod_v(eh, splatd(f.hi), &pe);
    return p + (pe + (eh * f.lo + el * f.hi));
}

static void e64f_fromscratch(const void *sv, size_t n, skit_dd f, void *outv, int stream) {
    const double *sc = (const double *)sv;
    double *o = (double *)outv;
#define FULL(i) stdx(o + (i), dd_mul_round(ldd(sc + (i)), (vd){0}, f), stream)
#define PART(i, cnt)                                          \
    do {                                                      \
        double b_[ND] = {0};                                  \
        memcpy(b_, sc + (i), (cnt) * sizeof(double));         \
        vd r_ = dd_mul_round(ldd(b_), (vd){0}, f);            \
        memcpy(o + (i), &r_, (cnt) * sizeof(double));         \
    } while (0)
    PHASE_B_LOOP(double, ND, FULL, PART)
#undef FULL
#undef PART
}

static void e64f_rescale(void *outv, size_t n, skit_dd f) {
    e64f_fromscratch(outv, n, f, outv, 0);
}

static void e64f_expscale(const void *xv, const uint8_t *mask, size_t n, double T, double M,
                          skit_dd f, void *outv, int stream) {
    const double *x = (const double *)xv;
    double *o = (double *)outv;
#define FULL(i)                                                                                \
    stdx(                                                                  \
        o + (i),                                                                               \
        dd_mul_round(e64f_exp_vec(e64_load(x + (i), mask ? mask + (i) : NULL, T), M, NULL), (vd){0}, f), stream)
#define PART(i, cnt)                                                                          \
    do {                                                                                      \
        PAD_CHUNK(double, ND, i, cnt)                                                         \
        vd r_ = dd_mul_round(e64f_exp_vec(e64_load(xb, mb, T), M, NULL), (vd){0}, f);         \
        memcpy(o + (i), &r_, (cnt) * sizeof(double));                                         \
    } while (0)
    PHASE_B_LOOP(double, ND, FULL, PART)
#undef FULL
#undef PART
}

INLINE vd logsub_dd(vd v, vd vlo, double M, skit_dd L) {
    /* ((v + vlo) - M) - L with one final rounding; -inf stays -inf */
    vd e1;
    vd d = two_sum_v(v, splatd(-M), &e1);
    vd e2;
    vd s = two_sum_v(d, splatd(-L.hi), &e2);
    vd res = s + (e2 + ((e1 + vlo) - L.lo));
    return seld((v == -INFINITY) | (d == -INFINITY), splatd(-INFINITY), res);
}

static void e64f_logsub(const void *xv, const uint8_t *mask, size_t n, double T, double M,
                        skit_dd L, void *outv, int stream) {
    const double *x = (const double *)xv;
    double *o = (double *)outv;
#define FULL(i) \
    stdx(o + (i), logsub_dd(e64_load(x + (i), mask ? mask + (i) : NULL, T), (vd){0}, M, L), stream)
#define PART(i, cnt)                                                 \
    do {                                                             \
        PAD_CHUNK(double, ND, i, cnt)                                \
        vd r_ = logsub_dd(e64_load(xb, mb, T), (vd){0}, M, L);       \
        memcpy(o + (i), &r_, (cnt) * sizeof(double));                \
    } while (0)
    PHASE_B_LOOP(double, ND, FULL, PART)
#undef FULL
#undef PART
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

#define E64F_SMALL_EXPV(tb, n, m, a) \
    for (size_t j = 0; j < (n); j++) (void)e64f_exp_vm(ldd((tb)[j]), (m), (a))
#define E64F_SMALL_EXPS(tb, n, m, a) \
    for (size_t j = 0; j < (n); j++) std_((tb)[j], e64f_exp_vm(ldd((tb)[j]), (m), (a)))
static void e64f_small(const void *xv, size_t rows, size_t n, double T, int islog, void *outv,
                       uint8_t *special) {
    SMALL_D_BODY(double, sumacc_dc, ((sumacc_dc){(vd){0}, (vd){0}, (vd){0}}), E64F_SMALL_EXPV,
                 E64F_SMALL_EXPS, CS_COMP, ldd, std_)
}


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
    vexpdd_s(dh, dl, eh, el); /* scaled by 2^128, see e64a_unscale */
}

/* a double-word value computed in units of 2^-128 back to units of 1, rounding once */
static skit_dd e64a_unscale(skit_dd a) {
    double hi = a.hi * 0x1p-128;
    double rem = a.hi - hi * 0x1p128; /* exact */
    return dd_make(hi, (rem + a.lo) * 0x1p-128);
}

INLINE void e64a_exp_chunk(const double *x, const uint8_t *mask, double T, double m,
                           sumacc_dd *a, double *sh, double *sl) {
    vd vlo;
    vd v = e64a_load(x, mask, T, &vlo);
    vd eh, el;
    e64a_exp(v, vlo, m, &eh, &el);
    /* a maximal entry counts 1 in c and its exp(x_lo) - 1 (0 unless T != 1) in s */
    vl ismax = (v == m);
    a->c += (vd)(ismax & (vl)splatd(1.0));
    vd hs = seld(ismax, eh - 0x1p128, eh);
    vd err;
    a->sh = two_sum_v(a->sh, hs, &err);
    a->sl += err + el;
    if (sh) {
        std_(sh, eh);
        std_(sl, el);
    }
}

/* scratch layout: exp high parts at [0, SKIT_SCRATCH_ELEMS), low parts after */
#define E64A_LO(p) ((double *)(p) + SKIT_SCRATCH_ELEMS)

static void e64a_stats(const void *xv, const uint8_t *mask, size_t n, double T, skit_bstat *st,
                       void *scratch, const void *pf, const void *pfx) {
    double *sh = (double *)scratch;
    STATS_HEAD_D(double)
    double *sl = sh ? E64A_LO(sh) : NULL;
    sumacc_dd sa = {(vd){0}, (vd){0}, (vd){0}}, sb = sa;
    for (i = 0; i + 2 * ND <= nf; i += 2 * ND) {
        e64a_exp_chunk(x + i, mask ? mask + i : NULL, T, m, &sa, sh ? sh + i : NULL,
                       sl ? sl + i : NULL);
        e64a_exp_chunk(x + i + ND, mask ? mask + i + ND : NULL, T, m, &sb,
                       sh ? sh + i + ND : NULL, sl ? sl + i + ND : NULL);
        pf_lines(pf, pfx, i * sizeof(double));
        pf_lines(pf, pfx, (i + ND) * sizeof(double));
    }
    for (; i < nf; i += ND) {
        e64a_exp_chunk(x + i, mask ? mask + i : NULL, T, m, &sa, sh ? sh + i : NULL,
                       sl ? sl + i : NULL);
        pf_lines(pf, pfx, i * sizeof(double));
    }
    if (r) e64a_exp_chunk(xb, mb, T, m, &sa, sh ? sh + nf : NULL, sl ? sl + nf : NULL);
    double c = 0.0;
    skit_dd s = dd_make(0.0, 0.0);
    for (int k = 0; k < ND; k++) {
        c += sa.c[k] + sb.c[k];
        /* Adding a lane that holds an exact zero would leave s as it is (s is a
         * normalised sum of non-negative terms), so it is skipped: on short rows
         * most lanes of sb, and of sa's tail, are empty, and each double-word
         * addition is a chain of about 30 cycles. */
        if (sa.sh[k] != 0.0 || sa.sl[k] != 0.0) s = dd_add(s, dd_make(sa.sh[k], sa.sl[k]));
        if (sb.sh[k] != 0.0 || sb.sl[k] != 0.0) s = dd_add(s, dd_make(sb.sh[k], sb.sl[k]));
    }
    st->c = dd_make(c, 0.0);
    st->s = e64a_unscale(s);
}

/* (eh + el) f for exponentials held times 2^128: the product rounded in the scaled
 * range (normal), then scaled down, which is exact unless the result is subnormal */
INLINE vd e64a_mul_down(vd eh, vd el, skit_dd f) {
    vd pe;
    vd p = two_prod_v(eh, splatd(f.hi), &pe);
    vd ql;
    vd qh = fast_two_sum_v(p, pe + (eh * f.lo + el * f.hi), &ql);
    vd r = (qh + ql) * 0x1p-128; /* exact scaling for normal results */
    /* subnormal results: round (qh + ql) 2^-128 once onto the subnormal grid */
    vd rs = qh * 0x1p-128;
    vd rem = (qh - rs * 0x1p128) + ql;
    vd adj = seld(rem > 0x1p-947, splatd(0x1p-1074),
                  seld(rem < -0x1p-947, splatd(-0x1p-1074), (vd){0}));
    vl sub = (rs < 0x1p-1022) & (rs > -0x1p-1022);
    return seld(sub, rs + adj, r);
}

static void e64a_fromscratch(const void *sv, size_t n, skit_dd f, void *outv, int stream) {
    const double *sh = (const double *)sv;
    const double *sl = E64A_LO(sv);
    double *o = (double *)outv;
#define FULL(i) stdx(o + (i), e64a_mul_down(ldd(sh + (i)), ldd(sl + (i)), f), stream)
#define PART(i, cnt)                                          \
    do {                                                      \
        double hb_[ND] = {0}, lb_[ND] = {0};                  \
        memcpy(hb_, sh + (i), (cnt) * sizeof(double));        \
        memcpy(lb_, sl + (i), (cnt) * sizeof(double));        \
        vd r_ = e64a_mul_down(ldd(hb_), ldd(lb_), f);          \
        memcpy(o + (i), &r_, (cnt) * sizeof(double));         \
    } while (0)
    PHASE_B_LOOP(double, ND, FULL, PART)
#undef FULL
#undef PART
}

static void e64a_rescale(void *outv, size_t n, skit_dd f) {
    double *o = (double *)outv;
    size_t i = 0;
    for (; i + ND <= n; i += ND) std_(o + i, dd_mul_round(ldd(o + i), (vd){0}, f));
    for (; i < n; i++) o[i] = dd_value(dd_mul(dd_make(o[i], 0.0), f));
}

INLINE vd e64a_expscale_vec(const double *x, const uint8_t *mask, double T, double M, skit_dd f) {
    vd vlo, eh, el;
    vd v = e64a_load(x, mask, T, &vlo);
    e64a_exp(v, vlo, M, &eh, &el);
    return e64a_mul_down(eh, el, f);
}

static void e64a_expscale(const void *xv, const uint8_t *mask, size_t n, double T, double M,
                          skit_dd f, void *outv, int stream) {
    const double *x = (const double *)xv;
    double *o = (double *)outv;
#define FULL(i) \
    stdx(o + (i), e64a_expscale_vec(x + (i), mask ? mask + (i) : NULL, T, M, f), stream)
#define PART(i, cnt)                                         \
    do {                                                     \
        PAD_CHUNK(double, ND, i, cnt)                        \
        vd r_ = e64a_expscale_vec(xb, mb, T, M, f);          \
        memcpy(o + (i), &r_, (cnt) * sizeof(double));        \
    } while (0)
    PHASE_B_LOOP(double, ND, FULL, PART)
#undef FULL
#undef PART
}

INLINE vd e64a_logsub_vec(const double *x, const uint8_t *mask, double T, double M, skit_dd L) {
    vd vlo;
    vd v = e64a_load(x, mask, T, &vlo);
    return logsub_dd(v, vlo, M, L);
}

static void e64a_logsub(const void *xv, const uint8_t *mask, size_t n, double T, double M,
                        skit_dd L, void *outv, int stream) {
    const double *x = (const double *)xv;
    double *o = (double *)outv;
#define FULL(i) \
    stdx(o + (i), e64a_logsub_vec(x + (i), mask ? mask + (i) : NULL, T, M, L), stream)
#define PART(i, cnt)                                         \
    do {                                                     \
        PAD_CHUNK(double, ND, i, cnt)                        \
        vd r_ = e64a_logsub_vec(xb, mb, T, M, L);            \
        memcpy(o + (i), &r_, (cnt) * sizeof(double));        \
    } while (0)
    PHASE_B_LOOP(double, ND, FULL, PART)
#undef FULL
#undef PART
}

static skit_dd e64a_scaled(const void *x, size_t i, double T) {
    double v = ((const double *)x)[i];
    if (T == 1.0) return dd_make(v, 0.0);
    double q = v / T;
    if (!isfinite(q)) return dd_make(q, 0.0);
    double rem = fma(-q, T, v);
    return dd_make(q, rem / T);
}

/* ==================== sigmoid family and VJPs (all engines) ================= *
 * Elementwise on ND float64 lanes: float32 data is computed in float64 (in both
 * modes) and rounded once; float64 data in float64 (fast) or double-word
 * arithmetic (accurate). The formulas are those of the array-agnostic path:
 * z = exp(-|x|) never overflows, sigmoid = 1/(1+z) or z/(1+z), log_sigmoid =
 * min(x,0) - log1p(z), and BCE sums two non-negative softplus terms. */

#define LD32(p) ldfd(p)
#define LD64(p) ldd(p)
#define ST32(p, v) stfh((p), (v), 0)
#define ST64(p, v) std_((p), (v))

/* 1 / d for d in [1, 2] to within 2^-52 (a few float64 ulps), for results rounded to
 * float32. AVX-512: vrcp14pd and two Newton steps (each squares the error: 2^-14 ->
 * 2^-28 -> 2^-56), five pipelined uops instead of a division, whose 512-bit form
 * occupies its port for about 16 cycles per 8 lanes; elsewhere the division. */
INLINE vd vrecip12(vd d) {
#if defined(__AVX512F__)
    vd r = (vd)_mm512_rcp14_pd((__m512d)d);
    r = r + r * (1.0 - d * r);
    return r + r * (1.0 - d * r);
#else
    return 1.0 / d;
#endif
}

/* one element chunk of the sigmoid family but sigmoid itself, float64 working precision */
INLINE void sig_chunk_d_(int kind, vd x, vd y, vd w, vd pw, int has_w, int hi_prec, double scale,
                         vd *loss, vd *grad, int ord) {
    const vd inf = splatd(INFINITY), nan = splatd(NAN), zero = splatd(0.0);
    /* ord: every lane is known to hold a finite |x| <= 2^1000, so the selects for the
     * ends below are the identity and are left out (the same bits) */
    vl fin = ord ? (vl){0} - 1 : (x - x) == 0.0;
    vl isnan_ = ord ? (vl){0} : x != x;
    vd xs = ord ? x : seld(fin, x, zero);
    vd na = seld(xs < 0.0, xs, -xs); /* -|xs| */
    /* float32 data: exp and log1p to 2^-34 or better are enough for one rounding to
     * float32. sigmoid, log_sigmoid and the BCE loss are monotone in z or sums of
     * non-negative terms (nothing cancels); BCE's gradient, a difference, is within
     * 2^-34 of its larger term. Below -700 the float32 results no longer see z. */
    vd z = hi_prec ? vexpd_hi(na, zero) : vexpd_p7_plain(vclamp_low_d(na, splatd(-700.0)));
    vd D = 1.0 + z;
    /* sigmoid(x) = 1/D for x >= 0, z/D below: one division with the numerator chosen
     * first (each lane's quotient is the one it would select); sigmoid(-x) the other */
    vl pos = xs >= 0.0;
    vd lz = hi_prec ? vlog1p_d(z) : vlog1p_lo(z);
    if (kind == 1) {
        vd v = seld(xs < 0.0, xs, zero) - lz;
        if (!ord) v = seld(x == -INFINITY, -inf, seld(x == INFINITY, zero, v));
        *loss = ord ? v : seld(isnan_, nan, v);
        return;
    }
    /* logits beyond 2^1000: the softplus terms (about |x|) are scaled by 2^-64 so
     * that weighted products past the largest double stay finite; the loss is
     * scaled back last (an infinity only where the loss itself overflows) */
    vl huge = ord ? (vl){0} : (xs > 0x1p1000) | (xs < -0x1p1000);
    vd k = seld(huge, splatd(0x1p-64), splatd(1.0));
    vd sp_pos = (seld(xs > 0.0, xs, zero) + lz) * k;  /* softplus(x) */
    vd sp_neg = (seld(xs < 0.0, -xs, zero) + lz) * k; /* softplus(-x) */
    vd c_neg = 1.0 - y;
    vd c_pos = pw * y;
    vd tot = c_pos * sp_neg + c_neg * sp_pos;
    if (has_w) tot = w * tot;
    if (!ord) {
        tot = tot * seld(huge, splatd(0x1p64), splatd(1.0));
        vl wz = has_w ? (w == 0.0) : (vl){0};
        vd at_pinf = seld((c_neg == 0.0) | wz, zero, inf);
        vd at_ninf = seld((c_pos == 0.0) | wz, zero, inf);
        tot = seld(x == INFINITY, at_pinf, seld(x == -INFINITY, at_ninf, tot));
    }
    *loss = seld(isnan_ | (y != y), nan, tot);
    if (grad) {
        vd sp, sn;
        if (hi_prec) {
            sp = seld(pos, splatd(1.0), z) / D; /* sigmoid(x) */
            sn = seld(pos, z, splatd(1.0)) / D; /* sigmoid(-x) */
        } else { /* float32 data: one reciprocal for both (a few float64 ulps) */
            vd rD = vrecip12(D);
            sp = seld(pos, splatd(1.0), z) * rD;
            sn = seld(pos, z, splatd(1.0)) * rD;
        }
        if (!ord) {
            sp = seld(x == INFINITY, splatd(1.0), seld(x == -INFINITY, zero, sp));
            sn = seld(x == INFINITY, zero, seld(x == -INFINITY, splatd(1.0), sn));
        }
        vd g = c_neg * sp - c_pos * sn;
        if (has_w) g = w * g;
        *grad = (ord ? g : seld(isnan_, nan, g)) * scale;
    }
}


/* all lanes of x finite with |x| <= 2^1000 (NaN fails the comparison) */
INLINE int vall_ord_d(vd x) {
#if defined(__AVX512F__)
    return _mm512_cmp_pd_mask((__m512d)vnabs_d(x), _mm512_set1_pd(-0x1p1000), _CMP_GE_OQ) == 0xFF;
#else
    vl o = vnabs_d(x) >= -0x1p1000;
#if defined(__AVX__)
    return _mm256_movemask_pd((__m256d)o) == 0xF;
#elif defined(__SSE2__)
    return _mm_movemask_pd((__m128d)o) == 0x3;
#else
    for (int i = 0; i < ND; i++)
        if (!o[i]) return 0;
    return 1;
#endif
#endif
}

/* one element chunk of the sigmoid family, float64 working precision */
INLINE void sig_chunk_d(int kind, vd x, vd y, vd w, vd pw, int has_w, int hi_prec, double scale,
                        vd *loss, vd *grad) {
    const vd zero = splatd(0.0);
    if (kind == 0) {
        /* sigmoid needs no special cases: with z = exp(max(-|x|, -700)) (-760 and below
         * give 0 at float64 data), +-inf give 1/(1 + z) = 1 and z/(1 + z) = +0 after
         * rounding, and a NaN passes through the maximum, exp and the quotient. Float32
         * data: exp to 2^-34 and the numerator times 1/D within 2^-52 (two roundings of
         * a few float64 ulps), far below the float32 ulp. */
        vd na = vnabs_d(x);
        vd z = hi_prec ? vexpd_hi(na, zero) : vexpd_p7_plain(vclamp_low_d(na, splatd(-700.0)));
        vd D = 1.0 + z;
        vd num = seld(x >= 0.0, splatd(1.0), z);
        *loss = hi_prec ? num / D : num * vrecip12(D);
        return;
    }
    /* the everyday vector (finite logits of ordinary size) skips the selects for the
     * ends; the same bits either way */
    if (vall_ord_d(x)) sig_chunk_d_(kind, x, y, w, pw, has_w, hi_prec, scale, loss, grad, 1);
    else sig_chunk_d_(kind, x, y, w, pw, has_w, hi_prec, scale, loss, grad, 0);
}

/* double-word log1p(z) for 0 <= z <= 1: a Newton step on the double-word exp */
INLINE void vlog1p_dd(vd zh, vd zl, vd *lh, vd *ll) {
    vd l0 = vlog1p_d(zh);
    vd eh, el;
    vexpdd(l0, (vd){0}, &eh, &el);
    vd diff = ((eh - 1.0) - zh) + (el - zl); /* expm1(l0) - z; eh - 1 is exact */
    vd delta = diff / (1.0 + zh);
    vl small = zh < 0x1p-50; /* log1p(z) = z - z^2/2 to far below an ulp */
    vd e;
    vd h = fast_two_sum_v(l0, -delta, &e);
    *lh = seld(small, zh, h);
    *ll = seld(small, zl - 0.5 * (zh * zh), e);
}

/* (ah + al) / (bh + bl) as a double-word quotient */
INLINE vd vdd_div(vd ah, vd al, vd bh, vd bl, vd *lo) {
    vd q = ah / bh;
    vd pe;
    vd p = two_prod_v(q, bh, &pe);
    vd r = (((ah - p) - pe) + al) - q * bl;
    return fast_two_sum_v(q, r / bh, lo);
}

/* the double-word version for float64 accurate */
/* w (h + l) rounded once, h + l a double-word value (w = 1 unless has_w) */
INLINE vd weighted_round(vd h, vd l, vd w, int has_w) {
    if (!has_w) return h + l;
    vd e;
    vd t = two_prod_v(w, h, &e);
    return t + (e + w * l);
}

INLINE void sig_chunk_dd(int kind, vd x, vd y, vd w, vd pw, int has_w, double scale, vd *loss,
                         vd *grad) {
    const vd inf = splatd(INFINITY), nan = splatd(NAN), zero = splatd(0.0);
    vl fin = (x - x) == 0.0;
    vl isnan_ = x != x;
    vd xs = seld(fin, x, zero);
    vd na = seld(xs < 0.0, xs, -xs);
    vd zh, zl;
    vexpdd(na, zero, &zh, &zl);
    vd Dl;
    vd Dh = two_sum_v(splatd(1.0), zh, &Dl);
    Dl = Dl + zl;
    /* as in sig_chunk_d: the numerator of each lane's quotient chosen before dividing */
    vl pos = xs >= 0.0;
    vd one = splatd(1.0);
    if (kind == 0) {
        vd ql;
        vd qh = vdd_div(seld(pos, one, zh), seld(pos, zero, zl), Dh, Dl, &ql);
        vd sp = qh + ql;
        sp = seld(x == INFINITY, one, seld(x == -INFINITY, zero, sp));
        *loss = seld(isnan_, nan, sp);
        return;
    }
    vd lh, ll;
    vlog1p_dd(zh, zl, &lh, &ll);
    if (kind == 1) {
        vd e;
        vd h = two_sum_v(seld(xs < 0.0, xs, zero), -lh, &e);
        vd v = h + (e - ll);
        v = seld(x == -INFINITY, -inf, seld(x == INFINITY, zero, v));
        *loss = seld(isnan_, nan, v);
        return;
    }
    vd e1, e2;
    vd ph = two_sum_v(seld(xs > 0.0, xs, zero), lh, &e1);
    vd pl = e1 + ll; /* softplus(x) */
    vd nh = two_sum_v(seld(xs < 0.0, -xs, zero), lh, &e2);
    vd nl = e2 + ll; /* softplus(-x) */
    /* logits beyond 2^1000 (log1p(z) is 0 there): the softplus terms are scaled by
     * 2^-64 (exactly) so that the products below stay finite where the loss does
     * not overflow, and their error terms are not inf - inf; scaled back last */
    vl huge = (xs > 0x1p1000) | (xs < -0x1p1000);
    vd k = seld(huge, splatd(0x1p-64), splatd(1.0));
    ph = ph * k, pl = pl * k, nh = nh * k, nl = nl * k;
    vd c_neg = 1.0 - y;
    vd c_pos = pw * y;
    vd q1e, q2e;
    vd q1 = two_prod_v(c_pos, nh, &q1e);
    vd q2 = two_prod_v(c_neg, ph, &q2e);
    vd se;
    vd sum = two_sum_v(q1, q2, &se);
    vd lo = se + q1e + q2e + c_pos * nl + c_neg * pl;
    vd tot = weighted_round(sum, lo, w, has_w);
    tot = tot * seld(huge, splatd(0x1p64), splatd(1.0));
    vl wz = has_w ? (w == 0.0) : (vl){0};
    vd at_pinf = seld((c_neg == 0.0) | wz, zero, inf);
    vd at_ninf = seld((c_pos == 0.0) | wz, zero, inf);
    tot = seld(x == INFINITY, at_pinf, seld(x == -INFINITY, at_ninf, tot));
    *loss = seld(isnan_ | (y != y), nan, tot);
    if (grad) {
        vd pl_, nl_;
        vd ph_ = vdd_div(seld(pos, one, zh), seld(pos, zero, zl), Dh, Dl, &pl_);
        vd nh_ = vdd_div(seld(pos, zh, one), seld(pos, zl, zero), Dh, Dl, &nl_);
        /* (1 - y) sigmoid(x) - pw y sigmoid(-x) in double-word: the two products
         * cancel where sigmoid(x) is near y (x = 1.609, y = 0.8317: a 545th of either
         * is left), so 1 - y, pw y and the two sigmoids keep their low words and the
         * difference is rounded once (formed in double, it was 28 ulp off) */
        const vl ends = (x == INFINITY) | (x == -INFINITY);
        ph_ = seld(x == INFINITY, one, seld(x == -INFINITY, zero, ph_));
        nh_ = seld(x == INFINITY, zero, seld(x == -INFINITY, one, nh_));
        pl_ = seld(ends, zero, pl_);
        nl_ = seld(ends, zero, nl_);
        vd cnl, cpl;
        vd cnh = two_sum_v(one, -y, &cnl);
        vd cph = two_prod_v(pw, y, &cpl);
        vd ae, be, ge;
        vd a = two_prod_v(cnh, ph_, &ae);
        vd b = two_prod_v(cph, nh_, &be);
        vd gh = two_sum_v(a, -b, &ge);
        vd gl = ge + ((ae + (cnh * pl_ + cnl * ph_)) - (be + (cph * nl_ + cpl * nh_)));
        vd g = weighted_round(gh, gl, w, has_w);
        *grad = seld(isnan_, nan, g) * scale;
    }
}

/* kind: 0 sigmoid, 1 log_sigmoid (loss = the output, in x's type), 2 BCE (loss in
 * float64, grad in x's type or NULL). y, w, pw: float64 arrays of n (NULL: absent).
 * Whole vectors are loaded and stored as vectors; the last partial one goes through
 * padded buffers. CHUNK reads xv_, yv_, wv_, pv_ and sets lossv, gradv. */
#define SIG_BODY(STYPE, LOADV, STOREV, CHUNK)                                            \
    const STYPE *x = (const STYPE *)xv;                                                  \
    const int loss64 = kind == 2 || kind == 3; /* a float64 loss; else in STYPE */       \
    if (kind >= 4) kind -= 2;                                                            \
    const int y_own = kind == 3; /* BCE with targets in the data's type */               \
    if (kind == 3) kind = 2;                                                             \
    const double *yd = (const double *)yv;                                               \
    const STYPE *ys = (const STYPE *)yv;                                                 \
    const vd one_ = splatd(1.0), zero_ = splatd(0.0);                                    \
    size_t i = 0;                                                                        \
    for (; i + ND <= n; i += ND) {                                                       \
        vd xv_ = LOADV(x + i);                                                           \
        vd yv_ = !yv ? zero_ : y_own ? LOADV(ys + i) : ldd(yd + i);                      \
        vd wv_ = w ? ldd(w + i) : one_;                                                  \
        vd pv_ = pw ? ldd(pw + i) : one_;                                                \
        vd lossv, gradv = zero_;                                                         \
        CHUNK;                                                                           \
        if (loss64) std_((double *)out + i, lossv);                                      \
        else STOREV((STYPE *)out + i, lossv);                                            \
        if (kind == 2 && grad) STOREV((STYPE *)grad + i, gradv);                         \
    }                                                                                    \
    if (i < n) {                                                                         \
        size_t c = n - i;                                                                \
        STYPE xb[ND];                                                                    \
        double yb[ND], wb[ND], pb[ND];                                                   \
        for (size_t k = 0; k < ND; k++) {                                                \
            xb[k] = k < c ? x[i + k] : 0;                                                \
            yb[k] = yv && k < c ? (y_own ? (double)ys[i + k] : yd[i + k]) : 0.0;         \
            wb[k] = w && k < c ? w[i + k] : 1.0;                                         \
            pb[k] = pw && k < c ? pw[i + k] : 1.0;                                       \
        }                                                                                \
        vd xv_ = LOADV(xb), yv_ = ldd(yb), wv_ = ldd(wb), pv_ = ldd(pb);                 \
        vd lossv, gradv = zero_;                                                         \
        CHUNK;                                                                           \
        if (loss64) {                                                                    \
            memcpy((double *)out + i, &lossv, c * sizeof(double));                       \
        } else {                                                                         \
            STYPE ob[ND];                                                                \
            STOREV(ob, lossv);                                                           \
            memcpy((STYPE *)out + i, ob, c * sizeof(STYPE));                             \
        }                                                                                \
        if (kind == 2 && grad) {                                                         \
            STYPE gb[ND];                                                                \
            STOREV(gb, gradv);                                                           \
            memcpy((STYPE *)grad + i, gb, c * sizeof(STYPE));                            \
        }                                                                                \
    }

/* each engine's loop as an always-inline function, so that the callers below fix the
 * kind, the absent targets and weights and the gradient's presence at compile time:
 * sigmoid, log_sigmoid and the everyday BCE (no weights) then test none of them on
 * every vector */
#define SIG_FN(NAME, STYPE, LOADV, STOREV, CHUNK)                                        \
    INLINE void NAME(int kind, const void *xv, const void *yv, const double *w,          \
                     const double *pw, size_t n, double scale, void *out, void *grad) {  \
        SIG_BODY(STYPE, LOADV, STOREV, CHUNK)                                            \
    }
SIG_FN(sig_f32_k, float, LD32, ST32,
       sig_chunk_d(kind, xv_, yv_, wv_, pv_, w != NULL, 0, scale, &lossv,
                   grad ? &gradv : NULL))
SIG_FN(sig_f64f_k, double, LD64, ST64,
       sig_chunk_d(kind, xv_, yv_, wv_, pv_, w != NULL, 1, scale, &lossv,
                   grad ? &gradv : NULL))
SIG_FN(sig_f64a_k, double, LD64, ST64,
       sig_chunk_dd(kind, xv_, yv_, wv_, pv_, w != NULL, scale, &lossv, grad ? &gradv : NULL))

/* sigmoid and log_sigmoid (kinds 0 and 1: no targets, weights or gradient), and BCE
 * without weights (kinds 2 to 5: targets in float64 or in the data's type, the loss in
 * float64 or in the data's type) with and without the gradient, as constant arguments;
 * every other call as it comes */
#define SIG_CALL_K(FN, K)                                                                \
    if (kind == K) {                                                                     \
        if (grad) FN(K, xv, yv, NULL, NULL, n, scale, out, grad);                        \
        else FN(K, xv, yv, NULL, NULL, n, scale, out, NULL);                             \
        return;                                                                          \
    }
#define SIG_CALLS(FN)                                                                    \
    if (kind == 0 || kind == 1) {                                                        \
        if (kind == 0) FN(0, xv, NULL, NULL, NULL, n, scale, out, NULL);                 \
        else FN(1, xv, NULL, NULL, NULL, n, scale, out, NULL);                           \
        return;                                                                          \
    }                                                                                    \
    if (!w && !pw) {                                                                     \
        SIG_CALL_K(FN, 2)                                                                \
        SIG_CALL_K(FN, 3)                                                                \
        SIG_CALL_K(FN, 4)                                                                \
        SIG_CALL_K(FN, 5)                                                                \
    }                                                                                    \
    FN(kind, xv, yv, w, pw, n, scale, out, grad);

static void sig_f32(int kind, const void *xv, const void *yv, const double *w, const double *pw,
                    size_t n, double scale, void *out, void *grad) {
    SIG_CALLS(sig_f32_k)
}
static void sig_f64f(int kind, const void *xv, const void *yv, const double *w, const double *pw,
                     size_t n, double scale, void *out, void *grad) {
    SIG_CALLS(sig_f64f_k)
}
static void sig_f64a(int kind, const void *xv, const void *yv, const double *w, const double *pw,
                     size_t n, double scale, void *out, void *grad) {
    SIG_CALLS(sig_f64a_k)
}

/* VJPs of softmax (islog = 0: y * (g - sum(y g))) and log_softmax
 * (islog = 1: g - exp(y) sum(g)) over rows; reductions in float64 (compensated
 * for float64 accurate), elementwise work in float64. */
#define VJP_BODY(STYPE, LOADV, STOREV, COMP)                                              \
    const STYPE *y = (const STYPE *)yv;                                                  \
    const STYPE *g = (const STYPE *)gv;                                                  \
    STYPE *o = (STYPE *)outv;                                                            \
    for (size_t r = 0; r < rows; r++) {                                                  \
        const STYPE *yr = y + r * n, *gr = g + r * n;                                    \
        STYPE *orow = o + r * n;                                                         \
        vd acc = (vd){0}, err = (vd){0};                                                 \
        size_t nf = n - n % ND, i;                                                       \
        STYPE yb[ND], gb[ND];                                                            \
        for (size_t k = 0; k < ND; k++) {                                                \
            yb[k] = nf + k < n ? yr[nf + k] : 0;                                         \
            gb[k] = nf + k < n ? gr[nf + k] : 0;                                         \
        }                                                                                \
        for (i = 0; i <= nf; i += ND) {                                                  \
            if (i == nf && nf == n) break;                                               \
            vd yv_ = i < nf ? LOADV(yr + i) : LOADV(yb);                                 \
            vd gv_ = i < nf ? LOADV(gr + i) : LOADV(gb);                                 \
            vd t = gv_, te = (vd){0};                                                    \
            if (!islog) t = COMP ? two_prod_v(yv_, gv_, &te) : yv_ * gv_;                \
            if (COMP) {                                                                  \
                vd e;                                                                    \
                acc = two_sum_v(acc, t, &e);                                             \
                err += e + te;                                                           \
            } else {                                                                     \
                acc += t;                                                                \
            }                                                                            \
        }                                                                                \
        skit_dd tot = dd_make(0.0, 0.0);                                                 \
        for (int k = 0; k < ND; k++) tot = dd_add(tot, dd_make(acc[k], err[k]));         \
        double th = tot.hi, tl = tot.lo;                                                 \
        for (i = 0; i + ND <= n; i += ND) {                                              \
            vd yv_ = LOADV(yr + i), gv_ = LOADV(gr + i), v;                              \
            if (islog) {                                                                 \
                vd e = vexpd_hi(seld(yv_ > 0.0, (vd){0}, yv_), (vd){0});                 \
                v = gv_ - e * th;                                                        \
            } else {                                                                     \
                vd dl;                                                                   \
                vd dh = two_sum_v(gv_, splatd(-th), &dl);                                \
                v = yv_ * dh + yv_ * (dl - tl);                                          \
            }                                                                            \
            STOREV(orow + i, v);                                                         \
            if (islog)                                                                   \
                for (int k = 0; k < ND; k++)                                             \
                    if (yv_[k] > 0.0) orow[i + k] = (STYPE)(gv_[k] - exp(yv_[k]) * th);   \
        }                                                                                \
        for (; i < n; i++) {                                                             \
            double yi = (double)yr[i], gi = (double)gr[i], v;                            \
            if (islog) {                                                                 \
                v = gi - exp(yi) * th;                                                   \
            } else {                                                                     \
                skit_dd d = dd_add(dd_make(gi, 0.0), dd_make(-th, -tl));                 \
                v = yi * d.hi + yi * d.lo;                                               \
            }                                                                            \
            orow[i] = (STYPE)v;                                                          \
        }                                                                                \
    }

static void vjp_f32(int islog, const void *yv, const void *gv, size_t rows, size_t n,
                    void *outv) {
    VJP_BODY(float, ldfd, ST32, 0)
}
static void vjp_f64f(int islog, const void *yv, const void *gv, size_t rows, size_t n,
                     void *outv) {
    VJP_BODY(double, ldd, ST64, 0)
}
static void vjp_f64a(int islog, const void *yv, const void *gv, size_t rows, size_t n,
                     void *outv) {
    VJP_BODY(double, ldd, ST64, 1)
}


/* Weighted sums sum_i b_i exp(x_i - M) over the valid entries of a block (for
 * logsumexp with b): float64 for float32 data and for float64 fast, double-word
 * (exact products and compensated sums) for float64 accurate. */
#define WSUM_BODY(STYPE, LOADV, COMP, EXPV)                                             \
    const STYPE *x = (const STYPE *)xv;                                                 \
    vd acc = (vd){0}, err = (vd){0};                                                    \
    for (size_t i = 0; i < n; i += ND) {                                                \
        size_t c = n - i < ND ? n - i : ND;                                             \
        STYPE xb[ND];                                                                   \
        double bb[ND];                                                                  \
        for (size_t k = 0; k < ND; k++) {                                               \
            int ok = k < c && (!mask || mask[i + k]);                                   \
            xb[k] = ok ? x[i + k] : (STYPE)-INFINITY;                                   \
            bb[k] = ok ? b[i + k] : 0.0;                                                \
        }                                                                               \
        vd v = LOADV(xb), bv = ldd(bb);                                                 \
        vd eh, el = (vd){0};                                                            \
        EXPV;                                                                           \
        bv = seld(v == -INFINITY, (vd){0}, bv);                                         \
        if (COMP) {                                                                     \
            vd pe, e;                                                                   \
            vd p = two_prod_v(bv, eh, &pe);                                             \
            acc = two_sum_v(acc, p, &e);                                                \
            err += e + pe + bv * el;                                                    \
        } else {                                                                        \
            acc += bv * eh;                                                             \
        }                                                                               \
    }                                                                                   \
    skit_dd tot = dd_make(0.0, 0.0);                                                    \
    for (int k = 0; k < ND; k++) tot = dd_add(tot, dd_make(acc[k], err[k]));            \
    return tot;

static skit_dd wsum_f32(const void *xv, const double *b, const uint8_t *mask, size_t n,
                        double M) {
    WSUM_BODY(float, ldfd, 0, eh = vexpd_lo(seld(v - M < -760.0, splatd(-760.0), v - M), (vd){0}))
}
static skit_dd wsum_f64f(const void *xv, const double *b, const uint8_t *mask, size_t n,
                         double M) {
    WSUM_BODY(double, ldd, 1, eh = e64f_exp_vec(v, M, NULL))
}
static skit_dd wsum_f64a_s(const void *xv, const double *b, const uint8_t *mask, size_t n,
                           double M) {
    WSUM_BODY(double, ldd, 1, e64a_exp(v, (vd){0}, M, &eh, &el))
}
static skit_dd wsum_f64a(const void *xv, const double *b, const uint8_t *mask, size_t n,
                         double M) {
    return e64a_unscale(wsum_f64a_s(xv, b, mask, n, M));
}

static const skit_engine e32f = {
    4,       e32f_stats,  e32f_expscale, e32f_fromscratch, e32f_rescale, e32f_logsub,
    e32f_scaled, exp1_dd, log1p1_plain, e32f_special,   4, e32f_small,
    sig_f32,
    vjp_f32,
    wsum_f32,
    NULL,
    NULL,
    NULL,
    e32f_stats_sum,
    NULL,
    NULL,
    e32f_prob,
};

static const skit_engine e32a = {
    4,       e32a_stats,  e32a_expscale, e32a_fromscratch, e32a_rescale, e32a_logsub,
    e32a_scaled, exp1_dd, log1p1_plain, e32a_special,   8, e32a_small,
    sig_f32,
    vjp_f32,
    wsum_f32,
    e32a_small_ce,
    e32a_smooth,
    ce_fin_f32,
    e32a_stats_sum,
    E32A_KEEPX,
    NULL,
};

static const skit_engine e64f = {
    8,       e64f_stats,  e64f_expscale, e64f_fromscratch, e64f_rescale, e64f_logsub,
    e64f_scaled, exp1_dd, log1p1_plain, e64_special,    8, e64f_small,
    sig_f64f,
    vjp_f64f,
    wsum_f64f,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
};

static const skit_engine e64a = {
    8,       e64a_stats,  e64a_expscale, e64a_fromscratch, e64a_rescale, e64a_logsub,
    e64a_scaled, exp1_dd, log1p1_dd,    e64_special,    16, NULL,
    sig_f64a,
    vjp_f64a,
    wsum_f64a,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
};

const skit_isa_table SKIT_TABLE = {ISA_NAME, {{&e32f, &e32a}, {&e64f, &e64a}}};
