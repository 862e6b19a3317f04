/*
 * Scalar double-word exp, expm1 and log1p, in two precisions:
 * - skit_dd_exp, skit_dd_expm1, skit_dd_log1p: about 2^-65 and 2^-57 relative (the
 *   exp's polynomial beyond its linear term is a plain double), measured against
 *   quadruple precision over x in [-50, 0] and a in [0, 5]; about 20 ns a call, once
 *   per row or block (block merging factors, the cross-entropy target's entry);
 * - skit_dd_exp_acc, skit_dd_log1p_acc: about 2^-105 and 2^-96 (a degree-10
 *   polynomial, its four leading coefficients and the table product in double-word);
 *   about 100 ns a call, for the rare logsumexp rows the driver sums again where the
 *   maximum and log1p cancel (lse_exact).
 * Never per element of a large array, so clarity wins over speed here.
 *
 * exp: Tang's table method. x = (64 m + j) ln2/64 + r with |r| <= ln2/128,
 * exp(x) = 2^m * 2^(j/64) * exp(r); 2^(j/64) is a double-word table entry and
 * expm1(r) a Taylor polynomial (degree 6, or 10 for the _acc variant) whose leading
 * term r is carried exactly. log1p: one Newton step on the double-word expm1.
 *
 * References: P. T. P. Tang, ACM TOMS 15(2), 1989; T. J. Dekker, Numer. Math.
 * 18, 1971.
 */
#include "skit_consts.h"
#include "skit_internal.h"

/* The range limits shared by both exponentials: 1 when *out holds exp(x) */
static inline int exp_special(skit_dd x, skit_dd *out) {
    if (isnan(x.hi)) *out = dd_make(x.hi, 0.0);
    else if (x.hi < -760.0) *out = dd_make(0.0, 0.0);
    else if (x.hi > 709.7) *out = dd_make(INFINITY, 0.0);
    else return 0;
    return 1;
}

/* x = k ln2/64 + (*rh + *rl), |*rh| <= ln2/128 (*rl not normalised against *rh);
 * returns k */
static inline double exp_reduce(skit_dd x, double *rh, double *rl) {
    /* nearbyint of the rounded product without the library call: adding and
     * subtracting 1.5 * 2^52 rounds to the nearest integer, ties to even, for
     * |v| < 2^51 (here |v| <= 7.1e4) */
    double v = x.hi * SKIT_DD_INV;
    double k = (v + 0x1.8p52) - 0x1.8p52;
    double r0 = x.hi - k * SKIT_DD_C1; /* exact */
    skit_dd r = dd_two_sum(r0, -k * SKIT_DD_C2);
    *rh = r.hi;
    *rl = r.lo - k * SKIT_DD_C3 + x.lo;
    return k;
}

/* 2^m out */
static inline skit_dd exp_scale(skit_dd out, int m) {
    if (m < -1022 || m > 1023) return dd_make(ldexp(out.hi, m), ldexp(out.lo, m));
    /* 2^m is a normal double: the product is exact or (subnormal) rounded once, as
     * ldexp rounds it, without ldexp's library call */
    union {
        uint64_t u;
        double d;
    } p2 = {.u = (uint64_t)(m + 1023) << 52};
    return dd_make(out.hi * p2.d, out.lo * p2.d);
}

skit_dd skit_dd_exp(skit_dd x) {
    skit_dd sp;
    if (exp_special(x, &sp)) return sp;
    double rh, rl;
    double k = exp_reduce(x, &rh, &rl);
    double q = SKIT_DDP_6;
    q = q * rh + SKIT_DDP_5;
    q = q * rh + SKIT_DDP_4;
    q = q * rh + SKIT_DDP_3;
    q = q * rh + SKIT_DDP_2;
    double plo = rl + rh * rl + (rh * rh) * q;
    long ki = (long)k;
    long j = ki & 63;
    double th = skit_exp2_hi[j], tl = skit_exp2_lo[j];
    double a = th * rh;
    double b = fma(th, rh, -a);
    double rest = tl + th * plo + tl * (rh + plo);
    skit_dd s = dd_fast_two_sum(th, a);
    return exp_scale(dd_fast_two_sum(s.hi, s.lo + (b + rest)), (int)((ki - j) / 64));
}

skit_dd skit_dd_exp_acc(skit_dd x) {
    skit_dd sp;
    if (exp_special(x, &sp)) return sp;
    double r1, rl;
    double k = exp_reduce(x, &r1, &rl);
    /* expm1(r) = r + r^2 (1/2 + r (1/6 + r (1/24 + r (1/120 + r t)))) with the four
     * leading coefficients in double-word (a plain 1/6 would err by 2^-78 of the
     * result) and t, from 1/720 to 1/10! (r^11/11! < 2^-108 at |r| <= ln2/128), in
     * plain double */
    skit_dd r = dd_two_sum(r1, rl);
    double rh = r.hi;
    double t = 1.0 / 3628800.0;
    t = t * rh + 1.0 / 362880.0;
    t = t * rh + SKIT_DDP_8;
    t = t * rh + SKIT_DDP_7;
    t = t * rh + SKIT_DDP_6;
    skit_dd q = dd_add(dd_make(0x1.1111111111111p-7, 0x1.1111111111111p-63),
                       dd_mul(r, dd_make(t, 0.0)));
    q = dd_add(dd_make(0x1.5555555555555p-5, 0x1.5555555555555p-59), dd_mul(r, q));
    q = dd_add(dd_make(0x1.5555555555555p-3, 0x1.5555555555555p-57), dd_mul(r, q));
    q = dd_add(dd_make(0.5, 0.0), dd_mul(r, q));
    skit_dd em1 = dd_add(r, dd_mul(dd_mul(r, r), q));
    long ki = (long)k;
    long j = ki & 63;
    /* 2^(j/64) (1 + expm1(r)) = T + T expm1(r), T double-word */
    skit_dd T = dd_make(skit_exp2_hi[j], skit_exp2_lo[j]);
    return exp_scale(dd_add(T, dd_mul(T, em1)), (int)((ki - j) / 64));
}

skit_dd skit_dd_expm1(double x) {
    if (x == 0.0) return dd_make(0.0, 0.0);
    if (fabs(x) < 0x1p-40) {
        /* x + x^2/2 + x^3/6: the next term is below 2^-160 relative */
        return dd_fast_two_sum(x, x * x * (0.5 + x / 6.0));
    }
    skit_dd e = skit_dd_exp(dd_make(x, 0.0));
    return dd_add(e, dd_make(-1.0, 0.0));
}

static skit_dd expm1_acc(double x) {
    if (x == 0.0) return dd_make(0.0, 0.0);
    if (fabs(x) < 0x1p-40) return dd_fast_two_sum(x, x * x * (0.5 + x / 6.0));
    return dd_add(skit_dd_exp_acc(dd_make(x, 0.0)), dd_make(-1.0, 0.0));
}

static skit_dd log1p_with(skit_dd a, skit_dd (*em1)(double)) {
    /* a is (c - 1) + s >= 0 up to rounding; with a temperature c can fall just below 1 */
    if (a.hi == 0.0 && a.lo == 0.0) return dd_make(0.0, 0.0);
    if (!(a.hi > -1.0)) return dd_make(a.hi == -1.0 ? -INFINITY : NAN, 0.0);
    if (isinf(a.hi)) return dd_make(INFINITY, 0.0);
    double l0 = log1p(a.hi);
    skit_dd e = em1(l0);
    /* log1p(a) = l0 - (expm1(l0) - a) / (1 + a) to second order */
    skit_dd diff = dd_sub(e, a);
    double delta = dd_value(diff) / (1.0 + a.hi);
    return dd_fast_two_sum(l0, -delta);
}

skit_dd skit_dd_log1p(skit_dd a) { return log1p_with(a, skit_dd_expm1); }

skit_dd skit_dd_log1p_acc(skit_dd a) { return log1p_with(a, expm1_acc); }

skit_dd skit_dd_log(skit_dd a) {
    /* log(a) = k ln2 + log1p(m - 1) with a = 2^k m, m in [0.5, 1) */
    if (!(a.hi > 0.0)) return dd_make(a.hi == 0.0 ? -INFINITY : NAN, 0.0);
    if (isinf(a.hi)) return dd_make(INFINITY, 0.0);
    int k;
    double mh = frexp(a.hi, &k);
    double ml = ldexp(a.lo, -k);
    if (mh < 0.70710678118654752) { /* keep m - 1 small: m in [sqrt(1/2), sqrt(2)) */
        mh *= 2.0;
        ml *= 2.0;
        k -= 1;
    }
    skit_dd l = skit_dd_log1p(dd_add(dd_make(mh, ml), dd_make(-1.0, 0.0)));
    skit_dd kl = dd_mul(dd_make((double)k, 0.0), dd_make(SKIT_LN2_HI, SKIT_LN2_LO));
    return dd_add(kl, l);
}
