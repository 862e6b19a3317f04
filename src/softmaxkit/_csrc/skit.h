/*
 * softmaxkit C core: the softmax family over rows of float32 / float64 data.
 *
 * Python-free. Every entry point works on `rows` contiguous rows of `n`
 * elements each (row r starts at x + r*n), never writes into its inputs,
 * returns an int status (SKIT_OK on success) and is safe to call from many
 * threads at once. Results do not depend on the number of threads: rows and
 * long-row blocks are fixed units of work whose results are combined in a
 * fixed order.
 *
 * Common parameters
 *   x            input rows, `rows * n` elements, C order
 *   mask         NULL, or `rows * n` bytes: 0 excludes the element (as if -inf)
 *   rows, n      number of rows and row length (n >= 1 unless rows == 0)
 *   temperature  divides x before everything else; 1.0 means no division
 *   mode         SKIT_FAST (input precision) or SKIT_ACCURATE (correctly
 *                rounded in practice: float64 internals for float32 data,
 *                double-word arithmetic for float64 data)
 *   threads      worker threads to use (>= 1)
 */
#ifndef SKIT_H
#define SKIT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { SKIT_OK = 0, SKIT_ENOMEM = 1, SKIT_EINVAL = 2 };
enum { SKIT_FAST = 0, SKIT_ACCURATE = 1 };
enum { SKIT_F32 = 0, SKIT_F64 = 1 };

typedef struct {
    int dtype;           /* SKIT_F32 or SKIT_F64: the type of x and of array outputs */
    int mode;            /* SKIT_FAST or SKIT_ACCURATE */
    int threads;         /* >= 1 */
    size_t rows, n;
    const void *x;
    const uint8_t *mask; /* may be NULL */
    double temperature;
    /* nonzero: the caller allocated the outputs for this call, so their pages are
     * new (faulted in during the call, zeroed by the kernel, which leaves them in the
     * cache) or recycled from the allocator's recent frees: they are written with
     * ordinary stores, never streamed past the caches (which would first have to evict
     * those lines) */
    int fresh_out;
} skit_rows;

/* Run the parallel loops of every later call on an OpenMP runtime's thread team
 * instead of the core's own pool. `omp_parallel` is that runtime's
 * GOMP_parallel(fn, data, num_threads, flags) entry point (libgomp, and the
 * GOMP-compatible entry of LLVM's and Intel's runtimes), found by the caller in
 * a runtime that is already loaded (torch's); NULL goes back to the own pool.
 * A framework whose workers spin between its own parallel regions then shares
 * its cores with softmaxkit instead of competing for them. In a child process
 * after fork() the own pool is used again (the parent's team does not exist
 * there). Results do not depend on which threads run the work. */
void skit_set_omp_parallel(void (*omp_parallel)(void (*)(void *), void *, unsigned, unsigned));

/* Whether the loops currently run on an OpenMP team (1) or the own pool (0). */
int skit_omp_parallel_active(void);

/* softmax (log = 0) or log_softmax (log = 1) of every row into `out`
 * (same type and layout as x; may be x itself for an in-place update). */
int skit_softmax(const skit_rows *a, void *out, int log);

/* logsumexp of every row, in float64, into lse[rows]. */
int skit_logsumexp(const skit_rows *a, double *lse);

/* The mergeable state of every row: m = max, c = number of entries equal to m,
 * s = s_hi + s_lo = sum of exp(x - m) over the other entries (double-word).
 * NaN rows give m = NaN; rows with +inf entries (+inf, their count, 0); rows with
 * nothing left (-inf, 0, 0). Row r starts at x + r * ld (ld >= n elements), so a
 * column block of a wider matrix needs no copy; the mask (if any) stays rows x n. */
int skit_state(const skit_rows *a, size_t ld, double *m, double *c, double *s_hi,
               double *s_lo);

/* softmax (log = 0) or log_softmax (log = 1) of every row from a given state of
 * the whole (possibly larger) row, as skit_state returns or a merge of such
 * states: exp(x - m) / (c + s), or (x - m) - log1p((c - 1) + s). */
int skit_state_apply(const skit_rows *a, const double *m, const double *c, const double *s_hi,
                     const double *s_lo, int log, void *out);

/* logsumexp with weights: lse[r] = log|sum_i b_i exp(x_i)| and sign[r] its sign,
 * over the entries the mask keeps (the caller also masks out b == 0); b is float64
 * with x's layout. +inf entries give +inf with the sign of their summed weights
 * (NaN if those cancel), rows with nothing kept -inf and sign 0, NaN rows NaN. */
int skit_logsumexp_b(const skit_rows *a, const double *b, double *lse, double *sign);

/* Cross-entropy with class-index targets.
 *   target[rows]   class index of each row, in [0, n), or ignore_index
 *   weight         NULL or weight[rows]: the weight of each row's target class
 *   has_ignore, ignore_index   rows whose target equals it are skipped
 *   z_loss         adds z_loss * lse^2 per row
 *   loss[rows]     per-row loss (0 for rows that are not counted), float64
 *   lse[rows]      per-row logsumexp, float64
 *   counted[rows]  1 where the row counts towards a mean
 *   grad           NULL, or `rows * n` elements of x's type: receives
 *                  grad_scale * d(loss_r)/d(x_r) for counted rows, 0 elsewhere
 */
int skit_cross_entropy(const skit_rows *a, const int64_t *target, const double *weight,
                       int has_ignore, int64_t ignore_index, double z_loss, double grad_scale,
                       double *loss, double *lse, uint8_t *counted, void *grad);

/* Cross-entropy with class-index targets, reduced with torch's semantics, in one
 * call (what a framework's loss needs per training step, with nothing left to
 * do in the caller):
 *   target[rows]   class indices in [0, n), or ignore_index where has_ignore;
 *                  SKIT_ERANGE when one is neither (*bad_row = its row)
 *   class_weight   NULL or class_weight[n]: the weight of each class
 *   reduction      0 "none", 1 "mean", 2 "sum"
 *   loss           "none": loss[rows] per-row losses (float64); otherwise
 *                  loss[0] = the sum, or the weighted mean (sum / summed weights
 *                  of the counted rows; 0 when nothing counts)
 *   grad           NULL, or `rows * n` elements of x's type: the gradient of
 *                  that result (scaled by 1 / the divisor for "mean")
 * Sums follow NumPy's pairwise order (np.sum of the float64 per-row values), so
 * the result equals the one of skit_cross_entropy followed by np.sum, bit for bit.
 * A row whose logits are all -inf does not count (loss 0, gradient 0). */
enum { SKIT_ERANGE = 3 };

/* NumPy's pairwise summation of n contiguous float64 values (np.add.reduce, as in
 * numpy/_core/src/umath/loops_utils.h): every reduction of the core that must
 * round as np.sum does on the NumPy path uses it. */
double skit_pairwise_sum(const double *a, size_t n);
/* skit_pairwise_sum(a, n) / den for den > 0, finite wherever the mean is: finite items
 * whose sum overflows are summed again times 2^-64 and the quotient scaled back */
double skit_pairwise_mean(const double *a, size_t n, double den);

int skit_cross_entropy_reduced(const skit_rows *a, const int64_t *target,
                               const double *class_weight, int has_ignore, int64_t ignore_index,
                               double z_loss, int reduction, double *loss, void *grad,
                               int64_t *bad_row);

/* Elements per block of a row (SKIT_BLOCK_ELEMS): the unit of skit_block_states. */
size_t skit_block_elems(void);

/* Statistics of every block of SKIT_BLOCK_ELEMS (32768) elements of every row
 * (temperature 1, no mask): m, c, s_hi, s_lo as skit_state gives them for a row
 * holding only that block; rows x ceil(n / 32768) entries each, row-major. */
int skit_block_states(const skit_rows *a, double *m, double *c, double *s_hi, double *s_lo);

/* skit_cross_entropy for a part of every row: x holds classes v0 .. v0 + n - 1
 * (v0 a multiple of 32768; n a multiple of 32768 unless the part ends the row)
 * and m, c, s_hi, s_lo (rows x nb_all, as skit_block_states gives them) hold the
 * statistics of ALL nb_all blocks of the row; xt[r] is the target's logit (any
 * value where the row is ignored); whole_row says the part is the whole row.
 * loss, lse and counted are those of the whole row, bitwise as skit_cross_entropy
 * gives them; grad (NULL or rows x n) gets the part's elements of
 * skit_cross_entropy's gradient, bitwise. With nb_all = 1 the state may also be
 * any state of the whole row (a merge of parts' states; v0 then any offset): the
 * row is finished from it with the same arithmetic. */
int skit_cross_entropy_states(const skit_rows *a, int64_t v0, size_t nb_all, int whole_row,
                              const double *m, const double *c, const double *s_hi,
                              const double *s_lo, const double *xt, const int64_t *target,
                              const double *weight, int has_ignore, int64_t ignore_index,
                              double z_loss, double grad_scale, double *loss, double *lse,
                              uint8_t *counted, void *grad);

/* Label-smoothed cross-entropy helpers on float32 rows (rows x n, C-contiguous),
 * float64 arithmetic with the table exponential (about 1 ulp):
 *   kind 0: for every block b of SKIT_BLOCK_ELEMS classes of every row r, with
 *           m = m[r * nb + b] (nb = ceil(n / 32768); the block's maximum, or 0 for
 *           a block of -inf only): gap[r * nb + b] = sum_c w_c (m - x_c) and,
 *           unless dsum is NULL, dsum[r * nb + b] = sum_c exp(x_c - m) (w NULL:
 *           weights 1);
 *   kind 1: grad[r][c] = exp(x_c - m[r]) f[r] - k[r] w_c, rounded once to float32
 *           (kind 3: grad holds float64, for callers that round once to a narrower type);
 *   kind 4: rows of one block (n <= 32768), m[r] the row's maximum (0 if -inf only):
 *           kind 0's D = dsum of the row, then kind 1 with f[r] * (D > 0 ? 1 / D : 0)
 *           in place of f[r], the exponentials of the sum kept for the output; the
 *           same bits as those two calls (kind 5: grad holds float64). Unless gap is
 *           NULL, gap[r] also receives kind 0's gap of the row from the same pass,
 *           bit for bit (one pass fewer for callers that need both).
 * gap and dsum must be NULL for kinds 1 and 3, dsum NULL for kinds 4 and 5.
 * A block's sums depend only on its own elements, and every element of kind 1 is
 * formed alike wherever it lies, so a split of the classes on block boundaries
 * gives the same bits. */
int skit_smooth(int kind, const float *x, size_t rows, size_t n, const double *w,
                const double *m, const double *f, const double *k, double *gap, double *dsum,
                void *grad, int threads);

/* skit_smooth with weights of their own for every row: row r's are w[r * w_ld ...]
 * (w_ld >= n; 0: the n weights every row shares, as skit_smooth). With a row's class
 * probabilities times the class weights as its weights, kind 0's gap is the sum
 * sum_c u_c (m - x_c) and kind 1 the gradient exp(x - m) f - k u of a cross-entropy
 * with probability targets (softmaxkit._dispatch). */
int skit_smooth_ld(int kind, const float *x, size_t rows, size_t n, const double *w, size_t w_ld,
                   const double *m, const double *f, const double *k, double *gap, double *dsum,
                   void *grad, int threads);

/* Cross-entropy of float32 logits x (rows x n, C-contiguous, rows, n >= 1) and
 * probability targets q (rows x n, float32 or float64 with q64), class weights w
 * (NULL or n values >= 0), label smoothing eps and z-loss z, from the rows' state (m
 * the maxima, c their count, s_hi + s_lo the rest; L = log1p(c - 1 + s)). Each row's
 * weights u_j = w_j ((1 - eps) q_j + eps / n) are formed in scratch, and
 *   item[r] = L sum_j u_j + sum_j u_j (m - x_j) + z lse^2,    lse = m + L
 * (the smoothing pass's gap: every term >= 0; the same with a gradient or without);
 * reduction 0: loss[r] = item[r], 1: loss[0] = their mean (skit_pairwise_mean), 2:
 * their sum (NumPy's pairwise order). With grad (NULL: the loss only), the gradient
 * of that loss:
 *   g_j = exp(x_j - m) f - u_j / den,   f = (sum u + 2 z lse) / (den D),
 * den = rows for the mean (else 1), D the same pass's sum of exponentials, in float64
 * rounded once to float32; a row holding an element with |g_j| < 2^-16 u_j / den,
 * where those terms cancel, has such elements formed again in double-word (fixed[r] =
 * 1; 2 where the accurate exponential was needed; 0 for a row left as it was; fixed
 * may be NULL). *special has bit 1 set when a row's maximum or item is not finite (a
 * row of -inf only, +inf, NaN, target mass on a -inf logit: the caller takes another
 * path) and bit 2 when a target is negative or NaN (the caller names it); what was
 * written is then not the answer. */
int skit_prob_ce(const float *x, size_t rows, size_t n, const void *q, int q64, const double *w,
                 double eps, double z, int reduction, const double *m, const double *c,
                 const double *s_hi, const double *s_lo, double *loss, float *grad,
                 uint8_t *fixed, int *special, int threads);

/* skit_prob_ce in fast mode (precision="fast"): float32 exponentials and arithmetic,
 * float64 sums, no row state asked of the caller (the engine's max and sums), no mend;
 * the same answer bits and reductions. */
int skit_prob_ce_fast(const float *x, size_t rows, size_t n, const void *q, int q64,
                      const double *w, double eps, double z, int reduction, double *loss,
                      float *grad, int *special, int threads);

/* Label-smoothed cross-entropy of whole float32 rows of one block (rows x n, every
 * class present, n <= SKIT_BLOCK_ELEMS), finished from the row values that
 * skit_cross_entropy_states gives (nll = lse - x_t, lse, counted) and the rows'
 * shifts (their maxima, 0 for a row of -inf only), with label smoothing eps,
 * z-loss z and class weights w (n float64 values, NULL for ones); targets in
 * [0, n) or ignore_index (has_ignore). With grad (rows x n; float32 rounded once,
 * or float64 with grad64 for a caller that rounds once to a narrower type): the
 * gradient of the reduced loss (kind 4/5 of skit_smooth, then the target entries),
 * and gap[r] = sum_c w_c (shift_r - x_c) from the same pass; without grad, gap
 * must hold those sums (kind 0's). loss: rows items for reduction 0 ("none"), else
 * loss[0] = their sum (2) or torch's weighted mean (1: over the counted rows'
 * target weights; 0 when they sum to 0). Every per-row expression is
 * softmaxkit._smoothing's, and the sums are NumPy's pairwise order. Returns
 * SKIT_ERANGE for a target out of range. */
int skit_smooth_rows(const float *x, size_t rows, size_t n, const int64_t *target,
                     const double *w, int has_ignore, int64_t ignore_index, const double *shift,
                     const double *nll, const double *lse, const uint8_t *counted, double eps,
                     double z, int reduction, double *gap, double *loss, void *grad, int grad64,
                     int threads);

/* The whole label-smoothed cross-entropy of float32 rows of one block (a: float32,
 * no mask, temperature 1, 1 <= n <= SKIT_BLOCK_ELEMS): skit_block_states, then
 * skit_cross_entropy_states on the whole rows, then (without grad) skit_smooth
 * kind 0's gaps, then skit_smooth_rows; the same calls, in the same order, as
 * softmaxkit._smoothing makes them, so the same bits. *special = 1 (and nothing
 * written) when a row holds +inf or NaN, whose limits the caller takes elsewhere.
 * Returns SKIT_ERANGE for a target out of range. */
int skit_smooth_ce(const skit_rows *a, const int64_t *target, const double *w, int has_ignore,
                   int64_t ignore_index, double eps, double z, int reduction, double *loss,
                   void *grad, int grad64, int *special);

/* Elementwise over n contiguous elements of x (dtype's type):
 *   kind 0: out = sigmoid(x); kind 1: out = log_sigmoid(x) (out in x's type);
 *   kind 2: binary cross-entropy with logits, float64 per-element loss into out,
 *           and, unless grad is NULL, scale * d(loss)/dx into grad (x's type).
 *   kind 3: kind 2 with y in x's type (float32 targets need no widened copy);
 *   kinds 4 and 5: kinds 2 and 3 with the loss rounded once to x's type (out in x's
 *           type: the bits of kind 2's float64 loss converted afterwards).
 * y (targets), w (weights), pw (positive weights): float64 arrays of n, or NULL
 * (y is required for kinds 2 to 5). */
int skit_sigmoid(int dtype, int mode, int kind, const void *x, const void *y, const double *w,
                 const double *pw, size_t n, double scale, void *out, void *grad, int threads);

/* nll_loss of `rows` rows of n log-probabilities (dtype's type) and int64 labels in
 * [0, n) (or ignore_index where has_ignore; SKIT_ERANGE and *bad_row otherwise), as the
 * array-agnostic path forms it in float64: per row -(x_t + 0.0), +0.0 where ignored;
 * reduction 0: out[rows], 1: out[0] = the mean over rows not ignored (0 when none),
 * 2: out[0] = the sum (NumPy's pairwise order); out in dtype's type, rounded once. */
int skit_nll(int dtype, const void *x, const int64_t *target, size_t rows, size_t n,
             int has_ignore, int64_t ignore_index, int reduction, void *out, int64_t *bad_row);

/* Binary cross-entropy with logits (kind 2: float64 y; 3: y in x's type), reduced:
 * *total = the sum of the float64 per-element losses in NumPy's pairwise order (the
 * bits of np.sum over skit_sigmoid's loss output), none of them stored; grad as for
 * skit_sigmoid. n = 0 gives 0.0, as np.sum of an empty array. */
int skit_bce_reduced(int dtype, int mode, int kind, const void *x, const void *y, const double *w,
                     const double *pw, size_t n, double scale, double *total, void *grad,
                     int threads);

/* Whether every one of the n targets of dtype's type lies in [0, 1] (a NaN does not):
 * the check the everyday BCE call makes before skit_bce_reduced. */
int skit_in_unit_interval(int dtype, const void *y, size_t n);

/* The class index of each of `rows` rows of n float32/float64 values (row-major) that
 * are one-hot: exactly one entry nonzero, and it is 1. SKIT_ERANGE at the first row
 * that is not (index is then written in part); an empty row is not one-hot. */
int skit_one_hot(int dtype, const void *x, size_t rows, size_t n, int64_t *index);

/* Vector-Jacobian products over rows: islog = 0 gives y * (g - sum(y g)) (softmax),
 * islog = 1 gives g - exp(y) sum(g) (log_softmax); y, g, out of dtype's type. */
int skit_vjp(int dtype, int mode, int islog, const void *y, const void *g, size_t rows, size_t n,
             void *out, int threads);

/* Name of the instruction set the kernels run with ("avx512", "avx2", "sse2", "neon", "scalar"). */
const char *skit_isa(void);

/* Force an instruction set by name (for tests); returns 0 if it is available here. */
int skit_set_isa(const char *name);

#ifdef __cplusplus
}
#endif
#endif
