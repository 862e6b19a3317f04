/*
 * XLA FFI handlers: the C core as custom calls inside compiled JAX programs (CPU).
 *
 * Plain C against XLA's stable FFI C ABI (xla/ffi/api/c_api.h, taken from the
 * installed jaxlib at build time, never copied here). Each handler decodes its
 * call frame (buffers and named scalar attributes), calls one Python-free
 * engine of skit.h on `rows x n` blocks and reports failures as FFI errors.
 * The Python side (softmaxkit.jax._ffi) has already moved the reduced axis
 * last, fixed the dtypes and shapes and chosen the attributes; batch
 * dimensions added by `jax.vmap` (vmap_method="broadcast_all") arrive as
 * leading dimensions and are handled here, as more rows or as independent
 * groups for the reduced losses.
 *
 * What this file must never do: call into Python, keep state between calls,
 * or make results depend on the number of threads (the engines guarantee
 * that). Reductions over rows follow NumPy's pairwise summation so that the
 * JAX results are bitwise those of the NumPy path.
 *
 * Threads: the engines' own persistent pool. Only one softmaxkit custom call
 * at a time uses more than the XLA thread it runs on; a call that finds
 * another in flight (XLA may run independent custom calls concurrently) runs
 * on its calling thread alone, so the process never oversubscribes its cores.
 */
#if defined(__linux__) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE /* madvise's MADV_HUGEPAGE under -std=c17 */
#endif
#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "skit.h"
#include "xla/ffi/api/c_api.h"
#include "skit_xla_ffi.h"

/* XLA's FFI header renamed two things at API 0.4 (jaxlib 0.11) without changing
 * their layout: the call frame's extension list (XLA_FFI_Extension_Base became
 * XLA_FFI_InternalExtension) and the error-message query (Error_GetMessage became
 * Error_GetDetails, which also returns the error code). The handlers build
 * against either header. */
#if XLA_FFI_API_MAJOR > 0 || XLA_FFI_API_MINOR >= 4
typedef XLA_FFI_InternalExtension skit_ffi_extension;
typedef XLA_FFI_Error_GetDetails_Args skit_error_args;
#define SKIT_ERROR_ARGS_SIZE XLA_FFI_Error_GetDetails_Args_STRUCT_SIZE
#define SKIT_ERROR_QUERY XLA_FFI_Error_GetDetails
#else
typedef XLA_FFI_Extension_Base skit_ffi_extension;
typedef XLA_FFI_Error_GetMessage_Args skit_error_args;
#define SKIT_ERROR_ARGS_SIZE XLA_FFI_Error_GetMessage_Args_STRUCT_SIZE
#define SKIT_ERROR_QUERY XLA_FFI_Error_GetMessage
#endif

/* ---- call-frame helpers ---------------------------------------------------- */

static XLA_FFI_Error *ffi_error(const XLA_FFI_Api *api, XLA_FFI_Error_Code code,
                                const char *msg) {
    XLA_FFI_Error_Create_Args a;
    memset(&a, 0, sizeof a);
    a.struct_size = XLA_FFI_Error_Create_Args_STRUCT_SIZE;
    a.message = msg;
    a.errc = code;
    return api->XLA_FFI_Error_Create(&a);
}

/* The metadata query XLA sends when a handler is registered: report the API
 * version these handlers need. They use only the call frame (buffers, scalar
 * attributes, stage) and XLA_FFI_Error_Create, all present since API 0.1, so
 * when the asking XLA is older than the headers they were compiled against
 * (TensorFlow's XLA next to a newer jaxlib), its own minor version is
 * reported and registration succeeds. Returns 1 if it was a metadata query. */
static int metadata_query(XLA_FFI_CallFrame *cf) {
    skit_ffi_extension *ext = cf->extension_start;
    if (ext == NULL || ext->type != XLA_FFI_Extension_Metadata) return 0;
    XLA_FFI_Metadata_Extension *m = (XLA_FFI_Metadata_Extension *)ext;
    int minor = XLA_FFI_API_MINOR;
    if (cf->api != NULL && cf->api->api_version.major_version == XLA_FFI_API_MAJOR &&
        cf->api->api_version.minor_version >= 1 && cf->api->api_version.minor_version < minor)
        minor = cf->api->api_version.minor_version;
    m->metadata->api_version.struct_size = XLA_FFI_Api_Version_STRUCT_SIZE;
    m->metadata->api_version.extension_start = NULL;
    m->metadata->api_version.major_version = XLA_FFI_API_MAJOR;
    m->metadata->api_version.minor_version = minor;
    m->metadata->traits = 0;
    return 1;
}

typedef struct {
    XLA_FFI_CallFrame *cf;
    char msg[160];
    int bad;
} frame;

static void *attr_raw(frame *f, const char *name, XLA_FFI_DataType *dt) {
    const XLA_FFI_Attrs *at = &f->cf->attrs;
    size_t len = strlen(name);
    for (int64_t i = 0; i < at->size; i++) {
        const XLA_FFI_ByteSpan *s = at->names[i];
        if (s->len == len && memcmp(s->ptr, name, len) == 0) {
            if (at->types[i] != XLA_FFI_AttrType_SCALAR) break;
            XLA_FFI_Scalar *sc = (XLA_FFI_Scalar *)at->attrs[i];
            *dt = sc->dtype;
            return sc->value;
        }
    }
    if (!f->bad) snprintf(f->msg, sizeof f->msg, "softmaxkit FFI: missing scalar attribute %s", name);
    f->bad = 1;
    return NULL;
}

static int64_t attr_i(frame *f, const char *name) {
    XLA_FFI_DataType dt;
    void *v = attr_raw(f, name, &dt);
    if (v == NULL) return 0;
    switch (dt) {
        case XLA_FFI_DataType_S64: return *(int64_t *)v;
        case XLA_FFI_DataType_S32: return *(int32_t *)v;
        case XLA_FFI_DataType_PRED:
        case XLA_FFI_DataType_U8: return *(uint8_t *)v;
        default: break;
    }
    if (!f->bad) snprintf(f->msg, sizeof f->msg, "softmaxkit FFI: attribute %s is not an integer", name);
    f->bad = 1;
    return 0;
}

static double attr_f(frame *f, const char *name) {
    XLA_FFI_DataType dt;
    void *v = attr_raw(f, name, &dt);
    if (v == NULL) return 0.0;
    if (dt == XLA_FFI_DataType_F64) return *(double *)v;
    if (dt == XLA_FFI_DataType_F32) return *(float *)v;
    if (!f->bad) snprintf(f->msg, sizeof f->msg, "softmaxkit FFI: attribute %s is not a float", name);
    f->bad = 1;
    return 0.0;
}

static XLA_FFI_Buffer *arg(frame *f, int64_t i) {
    if (i >= f->cf->args.size || f->cf->args.types[i] != XLA_FFI_ArgType_BUFFER) {
        if (!f->bad) snprintf(f->msg, sizeof f->msg, "softmaxkit FFI: argument %lld missing", (long long)i);
        f->bad = 1;
        return NULL;
    }
    return (XLA_FFI_Buffer *)f->cf->args.args[i];
}

static XLA_FFI_Buffer *ret(frame *f, int64_t i) {
    if (i >= f->cf->rets.size || f->cf->rets.types[i] != XLA_FFI_RetType_BUFFER) {
        if (!f->bad) snprintf(f->msg, sizeof f->msg, "softmaxkit FFI: result %lld missing", (long long)i);
        f->bad = 1;
        return NULL;
    }
    return (XLA_FFI_Buffer *)f->cf->rets.rets[i];
}

static size_t prod(const XLA_FFI_Buffer *b, int64_t from, int64_t to) {
    size_t p = 1;
    for (int64_t i = from; i < to; i++) p *= (size_t)b->dims[i];
    return p;
}

static size_t count(const XLA_FFI_Buffer *b) { return prod(b, 0, b->rank); }

static int float_code(XLA_FFI_DataType dt) {
    if (dt == XLA_FFI_DataType_F32) return SKIT_F32;
    if (dt == XLA_FFI_DataType_F64) return SKIT_F64;
    return -1;
}

static double load(const XLA_FFI_Buffer *b, size_t i) {
    switch (b->dtype) {
        case XLA_FFI_DataType_F32: return ((const float *)b->data)[i];
        case XLA_FFI_DataType_F64: return ((const double *)b->data)[i];
        default: return NAN;
    }
}

static void store(int code, void *out, size_t i, double v) {
    if (code == SKIT_F32)
        ((float *)out)[i] = (float)v;
    else
        ((double *)out)[i] = v;
}

static XLA_FFI_Error *finish(frame *f, int st) {
    if (f->bad) return ffi_error(f->cf->api, XLA_FFI_Error_Code_INVALID_ARGUMENT, f->msg);
    if (st == SKIT_ENOMEM)
        return ffi_error(f->cf->api, XLA_FFI_Error_Code_RESOURCE_EXHAUSTED,
                         "softmaxkit FFI: out of memory");
    if (st != SKIT_OK)
        return ffi_error(f->cf->api, XLA_FFI_Error_Code_INTERNAL,
                         "softmaxkit FFI: the C core failed");
    return NULL;
}

static void fail(frame *f, const char *msg) {
    if (!f->bad) snprintf(f->msg, sizeof f->msg, "softmaxkit FFI: %s", msg);
    f->bad = 1;
}

/* ---- output buffers -------------------------------------------------------------
 * XLA allocates a fresh result buffer for every call; a large one is a new
 * anonymous mapping whose first write faults in every 4 KiB page (on a
 * (2048, 32000) float32 result that costs more than the kernel itself). The
 * NumPy path does not pay this: NumPy asks the kernel for transparent huge
 * pages on every allocation of 4 MiB or more. The handlers do the same for their
 * large results before writing them. The hint changes neither contents nor
 * ownership (the memory stays XLA's; it only selects the page size of the
 * pages not yet touched), and it is ignored where huge pages are off. */
#define HUGE_HINT_BYTES ((size_t)1 << 22)
static void prefer_huge_pages(void *p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (p == NULL || bytes < HUGE_HINT_BYTES) return;
    long ps = sysconf(_SC_PAGESIZE); /* 4 KiB on x86-64; 16 or 64 KiB on some Arm kernels */
    uintptr_t a = (uintptr_t)p, page = ps > 0 ? (uintptr_t)ps : 4096;
    uintptr_t lo = (a + page - 1) & ~(page - 1), hi = (a + bytes) & ~(page - 1);
    if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
#else
    (void)p, (void)bytes;
#endif
}

static size_t nbytes(const XLA_FFI_Buffer *b) {
    size_t es = b->dtype == XLA_FFI_DataType_F64 ? 8 : b->dtype == XLA_FFI_DataType_F32 ? 4 : 1;
    return count(b) * es;
}

/* ---- the floating-point environment ----------------------------------------------
 * XLA runs its CPU threads with subnormals flushed to zero (FTZ/DAZ on x86, FZ on
 * Arm). The engines compute subnormal results like every other IEEE result, as on
 * the NumPy path, so each handler clears those modes for its duration and restores
 * them after. Worker threads the pool creates during a call inherit the cleared state. */
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
typedef unsigned int fpstate;
static fpstate fp_enter(void) {
    fpstate s = _mm_getcsr();
    _mm_setcsr(s & ~0x8040u); /* FTZ (bit 15) and DAZ (bit 6) off */
    return s;
}
static void fp_leave(fpstate s) { _mm_setcsr(s); }
#elif defined(__aarch64__)
typedef uint64_t fpstate;
static fpstate fp_enter(void) {
    fpstate s;
    __asm__ volatile("mrs %0, fpcr" : "=r"(s));
    fpstate t = s & ~((fpstate)1 << 24); /* FZ off */
    __asm__ volatile("msr fpcr, %0" : : "r"(t));
    return s;
}
static void fp_leave(fpstate s) { __asm__ volatile("msr fpcr, %0" : : "r"(s)); }
#else
typedef int fpstate;
static fpstate fp_enter(void) { return 0; }
static void fp_leave(fpstate s) { (void)s; }
#endif

/* ---- threads ------------------------------------------------------------------ */

static atomic_int g_in_flight;

static int take_threads(int64_t want) {
    if (want <= 1) return 1;
    int expected = 0;
    if (atomic_compare_exchange_strong(&g_in_flight, &expected, 1)) return (int)want;
    return 1; /* another softmaxkit call holds the pool: stay on this thread */
}

static void give_threads(int got) {
    if (got > 1) atomic_store(&g_in_flight, 0);
}

#define ENTER(cfp)                                    \
    if (metadata_query(cfp)) return NULL;             \
    if ((cfp)->stage != XLA_FFI_ExecutionStage_EXECUTE) return NULL; \
    frame F;                                          \
    F.cf = (cfp);                                     \
    F.bad = 0;                                        \
    F.msg[0] = '\0'

/* ---- softmax / log_softmax ----------------------------------------------------
 * args: x [, mask (pred, x's shape)]; ret: out (x's type and shape)
 * attrs: log, mode, threads, has_mask (i64), temperature (f64) */
static XLA_FFI_Error *softmax_impl(XLA_FFI_CallFrame *cf) {
    ENTER(cf);
    int64_t log = attr_i(&F, "log"), mode = attr_i(&F, "mode"), want = attr_i(&F, "threads");
    int64_t has_mask = attr_i(&F, "has_mask");
    double temp = attr_f(&F, "temperature");
    XLA_FFI_Buffer *x = arg(&F, 0), *m = has_mask ? arg(&F, 1) : NULL, *o = ret(&F, 0);
    if (F.bad) return finish(&F, SKIT_OK);
    int code = float_code(x->dtype);
    if (code < 0 || o->dtype != x->dtype || x->rank < 1) fail(&F, "softmax takes float32/float64");
    if (F.bad) return finish(&F, SKIT_OK);
    skit_rows a = {0};
    a.dtype = code;
    a.mode = (int)mode;
    a.n = (size_t)x->dims[x->rank - 1];
    a.rows = a.n ? count(x) / a.n : 0;
    a.x = x->data;
    a.mask = m ? (const uint8_t *)m->data : NULL;
    a.temperature = temp;
    if (a.rows == 0 || a.n == 0) return NULL;
    prefer_huge_pages(o->data, nbytes(o));
    a.threads = take_threads(want);
    int st = skit_softmax(&a, o->data, (int)log);
    give_threads(a.threads);
    return finish(&F, st);
}

/* ---- logsumexp ------------------------------------------------------------------
 * args: x [, b (x's type and shape)] [, mask (pred)]; rets: lse (x's type, x's
 * shape without the last axis) [, sign (same, only with b)]
 * attrs: mode, threads, has_b, has_mask */
static XLA_FFI_Error *logsumexp_impl(XLA_FFI_CallFrame *cf) {
    ENTER(cf);
    int64_t mode = attr_i(&F, "mode"), want = attr_i(&F, "threads");
    int64_t has_b = attr_i(&F, "has_b"), has_mask = attr_i(&F, "has_mask");
    int64_t k = 0;
    XLA_FFI_Buffer *x = arg(&F, k++);
    XLA_FFI_Buffer *b = has_b ? arg(&F, k++) : NULL;
    XLA_FFI_Buffer *m = has_mask ? arg(&F, k++) : NULL;
    XLA_FFI_Buffer *lo = ret(&F, 0), *so = has_b ? ret(&F, 1) : NULL;
    if (F.bad) return finish(&F, SKIT_OK);
    int code = float_code(x->dtype);
    if (code < 0 || lo->dtype != x->dtype || x->rank < 1) fail(&F, "logsumexp takes float32/float64");
    if (F.bad) return finish(&F, SKIT_OK);
    skit_rows a = {0};
    a.dtype = code;
    a.mode = (int)mode;
    a.n = (size_t)x->dims[x->rank - 1];
    a.rows = prod(x, 0, x->rank - 1);
    a.x = x->data;
    a.mask = m ? (const uint8_t *)m->data : NULL;
    a.temperature = 1.0;
    if (a.rows == 0) return NULL;
    if (a.n == 0) { /* empty sums: log 0 = -inf, sign 0 */
        for (size_t r = 0; r < a.rows; r++) store(code, lo->data, r, -INFINITY);
        if (so != NULL)
            for (size_t r = 0; r < a.rows; r++) store(code, so->data, r, 0.0);
        return NULL;
    }
    size_t total = a.rows * a.n;
    double *lse = malloc(a.rows * sizeof(double) * 2);
    double *b64 = has_b ? malloc(total * sizeof(double)) : NULL;
    uint8_t *keep = has_b ? malloc(total) : NULL;
    if (lse == NULL || (has_b && (b64 == NULL || keep == NULL))) {
        free(lse), free(b64), free(keep);
        return finish(&F, SKIT_ENOMEM);
    }
    double *sgn = lse + a.rows;
    int st;
    a.threads = take_threads(want);
    if (!has_b) {
        st = skit_logsumexp(&a, lse);
    } else {
        /* entries with b == 0 are left out, whatever x holds there (SciPy's convention) */
        for (size_t i = 0; i < total; i++) {
            b64[i] = load(b, i);
            keep[i] = (uint8_t)(b64[i] != 0 && (a.mask == NULL || a.mask[i]));
        }
        a.mask = keep;
        st = skit_logsumexp_b(&a, b64, lse, sgn);
    }
    give_threads(a.threads);
    if (st == SKIT_OK) {
        for (size_t r = 0; r < a.rows; r++) store(code, lo->data, r, lse[r]);
        if (so != NULL)
            for (size_t r = 0; r < a.rows; r++) store(code, so->data, r, sgn[r]);
    }
    free(lse), free(b64), free(keep);
    return finish(&F, st);
}

/* ---- softmax / log_softmax vector-Jacobian products ------------------------------
 * args: y, g (same type and shape); ret: out; attrs: islog, mode, threads */
static XLA_FFI_Error *vjp_impl(XLA_FFI_CallFrame *cf) {
    ENTER(cf);
    int64_t islog = attr_i(&F, "islog"), mode = attr_i(&F, "mode"), want = attr_i(&F, "threads");
    XLA_FFI_Buffer *y = arg(&F, 0), *g = arg(&F, 1), *o = ret(&F, 0);
    if (F.bad) return finish(&F, SKIT_OK);
    int code = float_code(y->dtype);
    if (code < 0 || g->dtype != y->dtype || o->dtype != y->dtype || y->rank < 1 ||
        count(g) != count(y))
        fail(&F, "vjp takes y and g of one float type and shape");
    if (F.bad) return finish(&F, SKIT_OK);
    size_t n = (size_t)y->dims[y->rank - 1];
    size_t rows = n ? count(y) / n : 0;
    if (rows == 0 || n == 0) return NULL;
    prefer_huge_pages(o->data, nbytes(o));
    int threads = take_threads(want);
    int st = skit_vjp(code, (int)mode, (int)islog, y->data, g->data, rows, n, o->data, threads);
    give_threads(threads);
    return finish(&F, st);
}

/* ---- cross-entropy with class-index targets ---------------------------------------
 * args: x (..., rows.., n), target (s32/s64, x's shape without the last axis)
 *       [, weight (n,) or (groups.., n): class weights, any float type] [, mask (pred)]
 *       [, ct (any float type, target's shape; reduction 0 only): a cotangent per
 *       row folded into the gradient's factor, so that a reverse-mode gradient
 *       w_t ct (p - onehot) is written in the kernel's one pass instead of being
 *       scaled by a second pass over the result]
 * rets: loss (x's type: target's shape for reduction 0 ("none"), the group
 *       shape otherwise) [, grad (x's type and shape)]
 * attrs: mode, threads, has_ignore, ignore_index, z_loss (f64), reduction
 *        (0 none, 1 sum, 2 mean), want_grad, has_weight, has_mask, has_ct, tdims (the
 *        rank of one group's target: leading dimensions beyond it are vmap's
 *        groups, each reduced on its own), wrap_labels (1, optax's indexing: a
 *        negative target counts from the end, one still out of range gives a NaN
 *        loss and a zero gradient row instead of an error; 2, TensorFlow's under
 *        XLA: any target out of [0, n) gives a NaN loss and a NaN gradient row).
 * The steps and the order of every sum are those of softmaxkit._dispatch. */
static XLA_FFI_Error *cross_entropy_impl(XLA_FFI_CallFrame *cf) {
    ENTER(cf);
    int64_t mode = attr_i(&F, "mode"), want = attr_i(&F, "threads");
    int64_t has_ignore = attr_i(&F, "has_ignore"), ignore = attr_i(&F, "ignore_index");
    double z = attr_f(&F, "z_loss");
    int64_t red = attr_i(&F, "reduction"), want_grad = attr_i(&F, "want_grad");
    int64_t has_w = attr_i(&F, "has_weight"), has_mask = attr_i(&F, "has_mask");
    int64_t tdims = attr_i(&F, "tdims"), wrap = attr_i(&F, "wrap_labels");
    int64_t has_ct = attr_i(&F, "has_ct");
    int64_t k = 0;
    XLA_FFI_Buffer *x = arg(&F, k++), *t = arg(&F, k++);
    XLA_FFI_Buffer *w = has_w ? arg(&F, k++) : NULL;
    XLA_FFI_Buffer *m = has_mask ? arg(&F, k++) : NULL;
    XLA_FFI_Buffer *ct = has_ct ? arg(&F, k++) : NULL;
    XLA_FFI_Buffer *lo = ret(&F, 0), *go = want_grad ? ret(&F, 1) : NULL;
    if (F.bad) return finish(&F, SKIT_OK);
    int code = float_code(x->dtype);
    if (code < 0 || lo->dtype != x->dtype || x->rank < 1 || t->rank != x->rank - 1 ||
        tdims < 0 || tdims > t->rank ||
        (t->dtype != XLA_FFI_DataType_S32 && t->dtype != XLA_FFI_DataType_S64) ||
        (w != NULL && float_code(w->dtype) < 0) ||
        (ct != NULL && (float_code(ct->dtype) < 0 || count(ct) != count(t) || red != 0)))
        fail(&F, "cross_entropy: bad operand types or shapes");
    if (F.bad) return finish(&F, SKIT_OK);
    size_t n = (size_t)x->dims[x->rank - 1];
    size_t groups = prod(t, 0, t->rank - tdims), rows = prod(t, t->rank - tdims, t->rank);
    /* every buffer the loops index must have the size they assume: the targets are the
     * logits' leading dimensions (labels of another shape read and wrote past the
     * buffers: garbage losses, then heap corruption), and so on */
    int shapes_ok = 1;
    for (int64_t i = 0; i < t->rank; i++) shapes_ok &= t->dims[i] == x->dims[i];
    if (m != NULL) shapes_ok &= count(m) == count(x);
    if (go != NULL) shapes_ok &= go->dtype == x->dtype && count(go) == count(x);
    if (w != NULL) shapes_ok &= count(w) == (w->rank > 1 ? groups * n : n);
    shapes_ok &= count(lo) == (red == 0 ? count(t) : groups);
    if (!shapes_ok) {
        fail(&F, "cross_entropy: operand shapes do not match the logits'");
        return finish(&F, SKIT_OK);
    }
    if (groups == 0) return NULL;
    if (n == 0 && rows > 0) {
        fail(&F, "cross_entropy: no classes, so no target index is in range");
        return finish(&F, SKIT_OK);
    }
    if (rows == 0) { /* an empty batch: sum 0, mean 0, as the NumPy path */
        if (red != 0)
            for (size_t gi = 0; gi < groups; gi++) store(code, lo->data, gi, 0.0);
        return NULL;
    }
    int64_t *tt = malloc(rows * sizeof(int64_t));
    double *buf = malloc(rows * sizeof(double) * 4);
    uint8_t *cnt = malloc(rows * 2);
    if (tt == NULL || buf == NULL || cnt == NULL) {
        free(tt), free(buf), free(cnt);
        return finish(&F, SKIT_ENOMEM);
    }
    double *wt = buf, *loss = buf + rows, *lse = buf + 2 * rows, *tmp = buf + 3 * rows;
    uint8_t *bad = cnt + rows; /* rows whose (wrapped) target is out of range */
    /* the ignore value the engine skips: the caller's, or for bad rows alone a sentinel */
    int64_t skip = has_ignore ? ignore : INT64_MIN;
    size_t esz = code == SKIT_F32 ? 4 : 8;
    int st = SKIT_OK;
    if (go != NULL) prefer_huge_pages(go->data, nbytes(go));
    int threads = take_threads(want);
    for (size_t gi = 0; gi < groups && st == SKIT_OK; gi++) {
        skit_rows a = {0};
        a.dtype = code;
        a.mode = (int)mode;
        a.threads = threads;
        a.rows = rows;
        a.n = n;
        a.x = (const char *)x->data + gi * rows * n * esz;
        a.mask = m ? (const uint8_t *)m->data + gi * rows * n : NULL;
        a.temperature = 1.0;
        size_t wbase = (w != NULL && w->rank > 1) ? gi * n : 0;
        double den_pred = 0.0;
        size_t nkept = 0, nbad = 0;
        for (size_t r = 0; r < rows; r++) {
            size_t i = gi * rows + r;
            int64_t v = t->dtype == XLA_FFI_DataType_S32 ? ((const int32_t *)t->data)[i]
                                                          : ((const int64_t *)t->data)[i];
            bad[r] = 0;
            if (wrap && !(has_ignore && v == ignore)) {
                if (v < 0 && wrap == 1) v += (int64_t)n;
                if (v < 0 || (uint64_t)v >= n) {
                    bad[r] = 1;
                    nbad++;
                    v = skip;
                }
            }
            tt[r] = v;
            int ign = (has_ignore || nbad) && v == skip;
            if (!ign && (v < 0 || (uint64_t)v >= n)) {
                char msg[96];
                snprintf(msg, sizeof msg, "target %lld out of range [0, %zu)", (long long)v, n);
                fail(&F, msg);
                st = SKIT_EINVAL;
                break;
            }
            if (w != NULL) wt[r] = ign ? 0.0 : load(w, wbase + (size_t)(ign ? 0 : v));
            if (ct != NULL) wt[r] = ign ? 0.0 : (w != NULL ? wt[r] : 1.0) * load(ct, i);
            if (!ign) nkept++;
        }
        if (st != SKIT_OK) break;
        den_pred = w != NULL ? skit_pairwise_sum(wt, rows) : (double)nkept;
        void *grad = go ? (char *)go->data + gi * rows * n * esz : NULL;
        double scale = red != 2 ? 1.0 : (den_pred > 0 ? 1.0 / den_pred : 0.0);
        int use_skip = has_ignore || nbad;
        /* with ct the row factors are w_t ct: the losses come out scaled too, and a
         * caller that passes ct reads only the gradient */
        const double *rw = (w != NULL || ct != NULL) ? wt : NULL;
        st = skit_cross_entropy(&a, tt, rw, use_skip, skip, z, scale, loss, lse, cnt, grad);
        if (st != SKIT_OK) break;
        double den;
        if (w != NULL) {
            size_t c = 0;
            for (size_t r = 0; r < rows; r++)
                if (cnt[r]) tmp[c++] = wt[r];
            den = skit_pairwise_sum(tmp, c);
        } else {
            size_t c = 0;
            for (size_t r = 0; r < rows; r++) c += cnt[r] != 0;
            den = (double)c;
        }
        if (grad != NULL && red == 2 && den != den_pred) {
            /* rows with nothing left to count changed the mean's divisor */
            st = skit_cross_entropy(&a, tt, rw, use_skip, skip, z,
                                    den > 0 ? 1.0 / den : 0.0, loss, lse, cnt, grad);
            if (st != SKIT_OK) break;
        }
        if (nbad)
            for (size_t r = 0; r < rows; r++) {
                if (!bad[r]) continue;
                loss[r] = NAN;
                if (grad != NULL && wrap == 2) /* TensorFlow's: the whole row NaN */
                    for (size_t j = 0; j < n; j++) store(code, grad, r * n + j, NAN);
            }
        if (red == 0) {
            for (size_t r = 0; r < rows; r++) store(code, lo->data, gi * rows + r, loss[r]);
        } else {
            /* a mean finite wherever it is, even where the sum overflows */
            double v = red == 1 ? skit_pairwise_sum(loss, rows)
                                : (den > 0 ? skit_pairwise_mean(loss, rows, den) : 0.0);
            store(code, lo->data, gi, v);
        }
    }
    give_threads(threads);
    free(tt), free(buf), free(cnt);
    return finish(&F, st);
}

/* ---- sigmoid family ----------------------------------------------------------------
 * kind 0 sigmoid, 1 log_sigmoid: args x; ret out (x's type and shape).
 * kind 2 binary cross-entropy with logits: args x, y [, w] [, pw] (any float
 * type, x's shape); rets loss (x's type; x's shape for reduction 0, the group
 * shape otherwise) [, grad]. attrs: kind, mode, threads, has_w, has_pw,
 * reduction, want_grad, xdims (the rank of one group: leading dimensions
 * beyond it are vmap's groups). */
static XLA_FFI_Error *sigmoid_impl(XLA_FFI_CallFrame *cf) {
    ENTER(cf);
    int64_t kind = attr_i(&F, "kind"), mode = attr_i(&F, "mode"), want = attr_i(&F, "threads");
    XLA_FFI_Buffer *x = arg(&F, 0), *o = ret(&F, 0);
    if (F.bad) return finish(&F, SKIT_OK);
    int code = float_code(x->dtype);
    if (code < 0 || o->dtype != x->dtype) fail(&F, "sigmoid takes float32/float64");
    if (F.bad) return finish(&F, SKIT_OK);
    size_t total = count(x);
    if (kind != 2) {
        if (total == 0) return NULL;
        prefer_huge_pages(o->data, nbytes(o));
        int threads = take_threads(want);
        int st = skit_sigmoid(code, (int)mode, (int)kind, x->data, NULL, NULL, NULL, total, 1.0,
                              o->data, NULL, threads);
        give_threads(threads);
        return finish(&F, st);
    }
    int64_t has_w = attr_i(&F, "has_w"), has_pw = attr_i(&F, "has_pw");
    int64_t red = attr_i(&F, "reduction"), want_grad = attr_i(&F, "want_grad");
    int64_t xdims = attr_i(&F, "xdims");
    int64_t k = 1;
    XLA_FFI_Buffer *y = arg(&F, k++);
    XLA_FFI_Buffer *w = has_w ? arg(&F, k++) : NULL;
    XLA_FFI_Buffer *pw = has_pw ? arg(&F, k++) : NULL;
    XLA_FFI_Buffer *go = want_grad ? ret(&F, 1) : NULL;
    if (F.bad) return finish(&F, SKIT_OK);
    if (xdims < 0 || xdims > x->rank || count(y) != total || (w && count(w) != total) ||
        (pw && count(pw) != total))
        fail(&F, "binary cross-entropy: operands must have the logits' shape");
    if (F.bad) return finish(&F, SKIT_OK);
    size_t groups = prod(x, 0, x->rank - xdims), n = prod(x, x->rank - xdims, x->rank);
    if (groups == 0) return NULL;
    if (n == 0) {
        if (red != 0)
            for (size_t gi = 0; gi < groups; gi++) store(code, o->data, gi, 0.0);
        return NULL;
    }
    double *buf = malloc(n * sizeof(double) * 4);
    if (buf == NULL) return finish(&F, SKIT_ENOMEM);
    double *loss = buf, *y64 = buf + n, *w64 = buf + 2 * n, *p64 = buf + 3 * n;
    size_t esz = code == SKIT_F32 ? 4 : 8;
    int st = SKIT_OK;
    prefer_huge_pages(o->data, nbytes(o));
    if (go != NULL) prefer_huge_pages(go->data, nbytes(go));
    int threads = take_threads(want);
    for (size_t gi = 0; gi < groups && st == SKIT_OK; gi++) {
        size_t base = gi * n;
        for (size_t i = 0; i < n; i++) {
            y64[i] = load(y, base + i);
            if (w) w64[i] = load(w, base + i);
            if (pw) p64[i] = load(pw, base + i);
        }
        double scale = red == 2 ? 1.0 / (double)n : 1.0;
        void *grad = go ? (char *)go->data + base * esz : NULL;
        st = skit_sigmoid(code, (int)mode, 2, (const char *)x->data + base * esz, y64,
                          w ? w64 : NULL, pw ? p64 : NULL, n, scale, loss, grad, threads);
        if (st != SKIT_OK) break;
        if (red == 0) {
            for (size_t i = 0; i < n; i++) store(code, o->data, base + i, loss[i]);
        } else {
            double s = red == 1 ? skit_pairwise_sum(loss, n)
                                : skit_pairwise_mean(loss, n, (double)n);
            store(code, o->data, gi, s);
        }
    }
    give_threads(threads);
    free(buf);
    return finish(&F, st);
}

/* ---- cross-entropy with probability targets ------------------------------------
 * args: x (float32), q (float32 or float64, x's shape); rets: loss (float32: x's shape
 * without the last axis for reduction 0, else one value per group), [grad (float32,
 * x's shape) with want_grad], special (int32, one per group: skit_prob_ce's bits; the
 * caller takes another path where it is not 0, and loss and grad are then zeros)
 * attrs: mode (SKIT_FAST: skit_prob_ce_fast), threads, eps, z_loss (f64), reduction (0
 * none, 1 mean, 2 sum), want_grad, xdims (x's rank as traced: leading axes beyond it are
 * vmap's groups) */
static XLA_FFI_Error *prob_ce_impl(XLA_FFI_CallFrame *cf) {
    ENTER(cf);
    int64_t mode = attr_i(&F, "mode");
    int64_t want = attr_i(&F, "threads"), red = attr_i(&F, "reduction");
    int64_t want_grad = attr_i(&F, "want_grad"), xdims = attr_i(&F, "xdims");
    double eps = attr_f(&F, "eps"), z = attr_f(&F, "z_loss");
    XLA_FFI_Buffer *x = arg(&F, 0), *q = arg(&F, 1), *lo = ret(&F, 0);
    XLA_FFI_Buffer *go = want_grad ? ret(&F, 1) : NULL, *so = ret(&F, want_grad ? 2 : 1);
    if (F.bad) return finish(&F, SKIT_OK);
    if (x->dtype != XLA_FFI_DataType_F32 || float_code(q->dtype) < 0 || x->rank < 1 ||
        xdims < 1 || xdims > x->rank || red < 0 || red > 2 || lo->dtype != x->dtype ||
        so->dtype != XLA_FFI_DataType_S32 || (go != NULL && go->dtype != x->dtype))
        fail(&F, "prob_cross_entropy: bad operand types");
    if (F.bad) return finish(&F, SKIT_OK);
    size_t n = (size_t)x->dims[x->rank - 1];
    size_t groups = prod(x, 0, x->rank - xdims), rows = prod(x, x->rank - xdims, x->rank - 1);
    int shapes_ok = q->rank == x->rank && count(so) == groups;
    for (int64_t i = 0; shapes_ok && i < x->rank; i++) shapes_ok &= q->dims[i] == x->dims[i];
    if (go != NULL) shapes_ok &= count(go) == count(x);
    shapes_ok &= count(lo) == (red == 0 ? groups * rows : groups);
    if (!shapes_ok) {
        fail(&F, "prob_cross_entropy: operand shapes do not match the logits'");
        return finish(&F, SKIT_OK);
    }
    for (size_t gi = 0; gi < groups; gi++) ((int32_t *)so->data)[gi] = 0;
    if (groups == 0) return NULL;
    if (rows == 0 || n == 0) { /* nothing to take: the caller's other path */
        for (size_t gi = 0; gi < groups; gi++) ((int32_t *)so->data)[gi] = 1;
        return NULL;
    }
    double *buf = malloc(rows * 5 * sizeof(double));
    if (buf == NULL) return finish(&F, SKIT_ENOMEM);
    double *m = buf, *c = buf + rows, *sh = buf + 2 * rows, *sl = buf + 3 * rows;
    double *loss = buf + 4 * rows;
    size_t qsz = q->dtype == XLA_FFI_DataType_F64 ? 8 : 4;
    if (go != NULL) prefer_huge_pages(go->data, nbytes(go));
    int threads = take_threads(want), st = SKIT_OK;
    for (size_t gi = 0; gi < groups && st == SKIT_OK; gi++) {
        const float *xg = (const float *)x->data + gi * rows * n;
        const void *qg = (const char *)q->data + gi * rows * n * qsz;
        float *gg = go ? (float *)go->data + gi * rows * n : NULL;
        int special = 0;
        if (mode == SKIT_FAST) {
            st = skit_prob_ce_fast(xg, rows, n, qg, q->dtype == XLA_FFI_DataType_F64, NULL, eps,
                                   z, (int)red, loss, gg, &special, threads);
        } else {
            skit_rows a = {0};
            a.dtype = SKIT_F32;
            a.mode = SKIT_ACCURATE;
            a.threads = threads;
            a.rows = rows;
            a.n = n;
            a.x = xg;
            a.temperature = 1.0;
            st = skit_state(&a, n, m, c, sh, sl);
            if (st == SKIT_OK)
                st = skit_prob_ce(xg, rows, n, qg, q->dtype == XLA_FFI_DataType_F64, NULL, eps, z,
                                  (int)red, m, c, sh, sl, loss, gg, NULL, &special, threads);
        }
        if (st != SKIT_OK) break;
        ((int32_t *)so->data)[gi] = special;
        size_t nl = red == 0 ? rows : 1;
        float *lg = (float *)lo->data + gi * nl;
        for (size_t r = 0; r < nl; r++) lg[r] = special ? 0.0f : (float)loss[r]; /* rounded once */
        if (special && gg != NULL) memset(gg, 0, rows * n * sizeof(float));
    }
    give_threads(threads);
    free(buf);
    return finish(&F, st);
}

/* ---- the exported handlers: each runs with IEEE subnormals (see fp_enter) ---------- */

#define SKIT_HANDLER(name)                                   \
    XLA_FFI_Error *skit_xla_##name(XLA_FFI_CallFrame *cf) {  \
        fpstate saved = fp_enter();                          \
        XLA_FFI_Error *err = name##_impl(cf);                \
        fp_leave(saved);                                     \
        return err;                                          \
    }

SKIT_HANDLER(softmax)
SKIT_HANDLER(logsumexp)
SKIT_HANDLER(vjp)
SKIT_HANDLER(cross_entropy)
SKIT_HANDLER(sigmoid)
SKIT_HANDLER(prob_ce)

/* ---- registration with an XLA found at run time ---------------------------------- */

int skit_xla_register(const void *api_ptr, const char *platform, char *msg, size_t msglen) {
    const XLA_FFI_Api *api = (const XLA_FFI_Api *)api_ptr;
    static const struct {
        const char *name;
        XLA_FFI_Handler *fn;
    } table[] = {
        {"softmaxkit_softmax", skit_xla_softmax},
        {"softmaxkit_logsumexp", skit_xla_logsumexp},
        {"softmaxkit_vjp", skit_xla_vjp},
        {"softmaxkit_cross_entropy", skit_xla_cross_entropy},
        {"softmaxkit_sigmoid", skit_xla_sigmoid},
        {"softmaxkit_prob_cross_entropy", skit_xla_prob_ce},
    };
    if (api == NULL || api->struct_size < offsetof(XLA_FFI_Api, XLA_FFI_Handler_Register) +
                                              sizeof api->XLA_FFI_Handler_Register ||
        api->api_version.major_version != XLA_FFI_API_MAJOR || api->api_version.minor_version < 1) {
        snprintf(msg, msglen, "XLA's FFI API (version %d.%d) is not one these handlers speak (%d.x)",
                 api ? api->api_version.major_version : -1,
                 api ? api->api_version.minor_version : -1, XLA_FFI_API_MAJOR);
        return -1;
    }
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        XLA_FFI_Handler_Register_Args a;
        memset(&a, 0, sizeof a);
        a.struct_size = XLA_FFI_Handler_Register_Args_STRUCT_SIZE;
        a.name.ptr = table[i].name;
        a.name.len = strlen(table[i].name);
        a.platform.ptr = platform;
        a.platform.len = strlen(platform);
        a.bundle.execute = table[i].fn;
        XLA_FFI_Error *err = api->XLA_FFI_Handler_Register(&a);
        if (err != NULL) {
            skit_error_args g;
            memset(&g, 0, sizeof g);
            g.struct_size = SKIT_ERROR_ARGS_SIZE;
            g.error = err;
            api->SKIT_ERROR_QUERY(&g);
            snprintf(msg, msglen, "%s", g.message ? g.message : "registration failed");
            XLA_FFI_Error_Destroy_Args d;
            memset(&d, 0, sizeof d);
            d.struct_size = XLA_FFI_Error_Destroy_Args_STRUCT_SIZE;
            d.error = err;
            api->XLA_FFI_Error_Destroy(&d);
            return -1;
        }
    }
    return 0;
}
