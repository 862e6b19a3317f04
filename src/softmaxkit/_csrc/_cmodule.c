/*
 * softmaxkit._ckernels: the thin CPython binding of the C core.
 *
 * The Python layer (softmaxkit._dispatch) has already validated the
 * arguments, moved the reduced axes last, made the data C-contiguous in
 * native byte order and allocated the outputs; this module only checks buffer
 * sizes (so a bug upstream cannot write out of bounds), releases the GIL and
 * maps status codes to exceptions.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "skit.h"

typedef struct {
    Py_buffer view;
    int held;
} buf;

static void release(buf *b) {
    if (b->held) PyBuffer_Release(&b->view);
    b->held = 0;
}

/* Get a C-contiguous buffer of `count` items of the given format ('f', 'd', 'B', 'q').
 * None is accepted (and gives NULL) when `optional`. */
static int get(PyObject *obj, buf *b, int writable, char fmt, Py_ssize_t count, int optional,
               const char *what) {
    b->held = 0;
    if (obj == Py_None) {
        if (optional) return 0;
        PyErr_Format(PyExc_TypeError, "%s must not be None", what);
        return -1;
    }
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &b->view, flags) < 0) return -1;
    b->held = 1;
    const char *f = b->view.format ? b->view.format : "B";
    if (f[0] == '=' || f[0] == '@') f++;
    int ok = f[0] == fmt && f[1] == '\0';
    if (fmt == 'q' && (f[0] == 'l' && f[1] == '\0') && b->view.itemsize == 8) ok = 1;
    if (fmt == 'B' && ((f[0] == '?' && f[1] == '\0'))) ok = 1;
    if (!ok || b->view.len != count * b->view.itemsize) {
        PyErr_Format(PyExc_ValueError,
                     "%s: expected %zd items of format '%c', got %zd of format '%s'", what,
                     count, fmt, b->view.itemsize ? b->view.len / b->view.itemsize : 0, f);
        release(b);
        return -1;
    }
    return 0;
}

static int status_error(int st) {
    if (st == SKIT_ENOMEM) {
        PyErr_NoMemory();
    } else {
        PyErr_Format(PyExc_RuntimeError, "softmaxkit C core failed with status %d", st);
    }
    return -1;
}

/* The call's description without its data (x is set by the caller). */
static void rows_spec(skit_rows *a, Py_ssize_t rows, Py_ssize_t n, int dtype, int mode,
                      int threads, double temperature) {
    a->dtype = dtype;
    a->mode = mode;
    a->threads = threads;
    a->rows = (size_t)rows;
    a->n = (size_t)n;
    a->temperature = temperature;
    a->mask = NULL;
    a->fresh_out = 0;
}

static int parse_rows(skit_rows *a, buf *x, PyObject *xo, Py_ssize_t rows, Py_ssize_t n,
                      int dtype, int mode, int threads, double temperature) {
    rows_spec(a, rows, n, dtype, mode, threads, temperature);
    if (rows < 0 || n < 0 || threads < 1 || (dtype != SKIT_F32 && dtype != SKIT_F64)) {
        PyErr_SetString(PyExc_ValueError, "bad shape, dtype or thread count");
        return -1;
    }
    if (get(xo, x, 0, dtype == SKIT_F32 ? 'f' : 'd', rows * n, 0, "x") < 0) return -1;
    a->x = x->view.buf;
    return 0;
}

PyDoc_STRVAR(softmax_doc, "softmax(x, out, mask, rows, n, dtype, mode, threads, temperature, log, "
                          "fresh=False): fresh, out was allocated for this call (see skit_rows)");

static PyObject *py_softmax(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *oo, *mo;
    Py_ssize_t rows, n;
    int dtype, mode, threads, log, fresh = 0;
    double temperature;
    if (!PyArg_ParseTuple(args, "OOOnniiidp|p", &xo, &oo, &mo, &rows, &n, &dtype, &mode,
                          &threads, &temperature, &log, &fresh))
        return NULL;
    skit_rows a;
    buf x = {0}, o = {0}, m = {0};
    if (parse_rows(&a, &x, xo, rows, n, dtype, mode, threads, temperature) < 0) return NULL;
    a.fresh_out = fresh;
    if (get(oo, &o, 1, dtype == SKIT_F32 ? 'f' : 'd', rows * n, 0, "out") < 0 ||
        get(mo, &m, 0, 'B', rows * n, 1, "mask") < 0) {
        release(&x);
        release(&o);
        return NULL;
    }
    a.mask = m.held ? (const uint8_t *)m.view.buf : NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS st = skit_softmax(&a, o.view.buf, log);
    Py_END_ALLOW_THREADS release(&x);
    release(&o);
    release(&m);
    if (st) return status_error(st), NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(softmax_at_doc,
             "softmax_at(x_addr, out, rows, n, dtype, mode, threads, log): softmax without a "
             "mask or temperature into a fresh out (a buffer or an address), x given by "
             "address; see the comment");

/* The everyday softmax/log_softmax of softmaxkit.torch. x is an ADDRESS: the caller
 * (softmaxkit.torch._engine.softmax_last) has checked that it is a C-contiguous CPU
 * buffer of rows * n items of `dtype`, alive for the call. A tensor's NumPy view
 * costs about 2 us to make and, measured on 2 threads at 8x50257, made the next
 * parallel call 6-15 us slower as well. `out` is a checked buffer allocated for
 * this call, or the ADDRESS of one the caller has allocated like x (a tensor from
 * torch.empty_like: its NumPy twin and torch.from_numpy cost about 0.5 us more). */
static PyObject *py_softmax_at(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long xa;
    PyObject *oo;
    Py_ssize_t rows, n;
    int dtype, mode, threads, log;
    if (!PyArg_ParseTuple(args, "KOnniiip", &xa, &oo, &rows, &n, &dtype, &mode, &threads, &log))
        return NULL;
    if (rows < 1 || n < 1 || threads < 1 || !xa || (dtype != SKIT_F32 && dtype != SKIT_F64)) {
        PyErr_SetString(PyExc_ValueError, "bad address, shape, dtype or thread count");
        return NULL;
    }
    buf o = {0};
    void *out;
    if (PyLong_Check(oo)) {
        out = PyLong_AsVoidPtr(oo);
        if (!out) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "bad out address");
            return NULL;
        }
    } else {
        if (get(oo, &o, 1, dtype == SKIT_F32 ? 'f' : 'd', rows * n, 0, "out") < 0) return NULL;
        out = o.view.buf;
    }
    skit_rows a;
    rows_spec(&a, rows, n, dtype, mode, threads, 1.0);
    a.x = (const void *)(uintptr_t)xa;
    a.fresh_out = 1;
    int st;
    Py_BEGIN_ALLOW_THREADS st = skit_softmax(&a, out, log);
    Py_END_ALLOW_THREADS release(&o);
    if (st) return status_error(st), NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(logsumexp_doc, "logsumexp(x, mask, rows, n, dtype, mode, threads, lse)");

static PyObject *py_logsumexp(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *mo, *lo;
    Py_ssize_t rows, n;
    int dtype, mode, threads;
    if (!PyArg_ParseTuple(args, "OOnniiiO", &xo, &mo, &rows, &n, &dtype, &mode, &threads, &lo))
        return NULL;
    skit_rows a;
    buf x = {0}, m = {0}, l = {0};
    if (parse_rows(&a, &x, xo, rows, n, dtype, mode, threads, 1.0) < 0) return NULL;
    if (get(mo, &m, 0, 'B', rows * n, 1, "mask") < 0 ||
        get(lo, &l, 1, 'd', rows, 0, "lse") < 0) {
        release(&x);
        release(&m);
        return NULL;
    }
    a.mask = m.held ? (const uint8_t *)m.view.buf : NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS st = skit_logsumexp(&a, (double *)l.view.buf);
    Py_END_ALLOW_THREADS release(&x);
    release(&m);
    release(&l);
    if (st) return status_error(st), NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(logsumexp_b_doc, "logsumexp_b(x, b, mask, rows, n, dtype, mode, threads, lse, sign)");

static PyObject *py_logsumexp_b(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *bo, *mo, *lo, *so;
    Py_ssize_t rows, n;
    int dtype, mode, threads;
    if (!PyArg_ParseTuple(args, "OOOnniiiOO", &xo, &bo, &mo, &rows, &n, &dtype, &mode, &threads,
                          &lo, &so))
        return NULL;
    skit_rows a;
    buf x = {0}, b = {0}, m = {0}, l = {0}, s = {0};
    if (parse_rows(&a, &x, xo, rows, n, dtype, mode, threads, 1.0) < 0) return NULL;
    if (get(bo, &b, 0, 'd', rows * n, 0, "b") < 0 || get(mo, &m, 0, 'B', rows * n, 1, "mask") < 0 ||
        get(lo, &l, 1, 'd', rows, 0, "lse") < 0 || get(so, &s, 1, 'd', rows, 0, "sign") < 0) {
        release(&x), release(&b), release(&m), release(&l), release(&s);
        return NULL;
    }
    a.mask = m.held ? (const uint8_t *)m.view.buf : NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS st = skit_logsumexp_b(&a, (const double *)b.view.buf,
                                                  (double *)l.view.buf, (double *)s.view.buf);
    Py_END_ALLOW_THREADS release(&x), release(&b), release(&m), release(&l), release(&s);
    if (st) return status_error(st), NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(cross_entropy_doc,
             "cross_entropy(x, target, weight, mask, rows, n, dtype, mode, threads, has_ignore, "
             "ignore_index, z_loss, grad_scale, loss, lse, counted, grad)");

static PyObject *py_cross_entropy(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *to, *wo, *mo, *losso, *lseo, *co, *go;
    Py_ssize_t rows, n;
    int dtype, mode, threads, has_ignore;
    long long ignore;
    double z, gscale;
    if (!PyArg_ParseTuple(args, "OOOOnniiipLddOOOO", &xo, &to, &wo, &mo, &rows, &n, &dtype, &mode,
                          &threads, &has_ignore, &ignore, &z, &gscale, &losso, &lseo, &co, &go))
        return NULL;
    skit_rows a;
    buf x = {0}, t = {0}, w = {0}, m = {0}, lb = {0}, sb = {0}, cb = {0}, g = {0};
    if (parse_rows(&a, &x, xo, rows, n, dtype, mode, threads, 1.0) < 0) return NULL;
    if (get(to, &t, 0, 'q', rows, 0, "target") < 0 || get(wo, &w, 0, 'd', rows, 1, "weight") < 0 ||
        get(mo, &m, 0, 'B', rows * n, 1, "mask") < 0 ||
        get(losso, &lb, 1, 'd', rows, 0, "loss") < 0 ||
        get(lseo, &sb, 1, 'd', rows, 0, "lse") < 0 ||
        get(co, &cb, 1, 'B', rows, 0, "counted") < 0 ||
        get(go, &g, 1, dtype == SKIT_F32 ? 'f' : 'd', rows * n, 1, "grad") < 0) {
        release(&x), release(&t), release(&w), release(&m);
        release(&lb), release(&sb), release(&cb), release(&g);
        return NULL;
    }
    const int64_t *tp = (const int64_t *)t.view.buf;
    for (Py_ssize_t r = 0; r < rows; r++) {
        if ((tp[r] < 0 || tp[r] >= n) && !(has_ignore && tp[r] == ignore)) {
            release(&x), release(&t), release(&w), release(&m);
            release(&lb), release(&sb), release(&cb), release(&g);
            PyErr_Format(PyExc_IndexError, "target %lld out of range", (long long)tp[r]);
            return NULL;
        }
    }
    a.mask = m.held ? (const uint8_t *)m.view.buf : NULL;
    int st;
    a.fresh_out = 1; /* every caller allocates the gradient for this call */
    Py_BEGIN_ALLOW_THREADS st = skit_cross_entropy(
        &a, tp, w.held ? (const double *)w.view.buf : NULL, has_ignore, (int64_t)ignore, z, gscale,
        (double *)lb.view.buf, (double *)sb.view.buf, (uint8_t *)cb.view.buf,
        g.held ? g.view.buf : NULL);
    Py_END_ALLOW_THREADS release(&x), release(&t), release(&w), release(&m);
    release(&lb), release(&sb), release(&cb), release(&g);
    if (st) return status_error(st), NULL;
    Py_RETURN_NONE;
}

/* None, or IndexError(row) for a target out of range, or the status's error */
static PyObject *reduced_result(int st, int64_t bad) {
    if (st == SKIT_ERANGE) {
        PyObject *row = PyLong_FromLongLong((long long)bad);
        if (row) {
            PyErr_SetObject(PyExc_IndexError, row);
            Py_DECREF(row);
        }
        return NULL;
    }
    if (st) return status_error(st), NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(cross_entropy_reduced_doc,
             "cross_entropy_reduced(x, target, class_weight, rows, n, dtype, mode, threads, "
             "ignore_index, z_loss, reduction, loss, grad): ignore_index None or an int; "
             "reduction 0 none, 1 mean, 2 sum; IndexError(row) for a target out of range");

static PyObject *py_cross_entropy_reduced(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *to, *wo, *io, *lo, *go;
    Py_ssize_t rows, n;
    int dtype, mode, threads, reduction;
    long long ignore = 0;
    double z;
    if (!PyArg_ParseTuple(args, "OOOnniiiOdiOO", &xo, &to, &wo, &rows, &n, &dtype, &mode,
                          &threads, &io, &z, &reduction, &lo, &go))
        return NULL;
    int has_ignore = io != Py_None;
    if (has_ignore) {
        ignore = PyLong_AsLongLong(io);
        if (ignore == -1 && PyErr_Occurred()) return NULL;
    }
    skit_rows a;
    buf x = {0}, t = {0}, w = {0}, l = {0}, g = {0};
    if (parse_rows(&a, &x, xo, rows, n, dtype, mode, threads, 1.0) < 0) return NULL;
    if (get(to, &t, 0, 'q', rows, 0, "target") < 0 || get(wo, &w, 0, 'd', n, 1, "class_weight") < 0 ||
        get(lo, &l, 1, 'd', reduction == 0 ? rows : 1, 0, "loss") < 0 ||
        get(go, &g, 1, dtype == SKIT_F32 ? 'f' : 'd', rows * n, 1, "grad") < 0) {
        release(&x), release(&t), release(&w), release(&l), release(&g);
        return NULL;
    }
    int st;
    int64_t bad = -1;
    a.fresh_out = 1; /* every caller allocates the gradient for this call */
    Py_BEGIN_ALLOW_THREADS st = skit_cross_entropy_reduced(
        &a, (const int64_t *)t.view.buf, w.held ? (const double *)w.view.buf : NULL, has_ignore,
        (int64_t)ignore, z, reduction, (double *)l.view.buf, g.held ? g.view.buf : NULL, &bad);
    Py_END_ALLOW_THREADS release(&x), release(&t), release(&w), release(&l), release(&g);
    return reduced_result(st, bad);
}

PyDoc_STRVAR(cross_entropy_reduced_at_doc,
             "cross_entropy_reduced_at(x_addr, target_addr, rows, n, dtype, mode, threads, "
             "ignore_index, reduction, loss, grad_addr): cross_entropy_reduced without class "
             "weights or z-loss, for tensors the caller has checked (loss: a buffer, or the "
             "address of a fresh buffer of x's type); see the comment");

/* The everyday training-loop cross-entropy of softmaxkit.torch, where turning
 * each tensor into a NumPy view costs more than the kernel. x and target are
 * ADDRESSES: the caller (softmaxkit.torch._engine.plain_ce) has checked that
 * they are C-contiguous CPU buffers of rows * n items of `dtype` and of rows
 * int64 labels, alive for the call, and that grad_addr (0: no gradient) is a
 * fresh buffer like x. `loss` is still a checked buffer, of float64 or of x's
 * own type (then each value is rounded once from float64, as NumPy's astype). */
static PyObject *py_cross_entropy_reduced_at(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long xa, ta, ga;
    Py_ssize_t rows, n;
    int dtype, mode, threads, reduction;
    long long ignore;
    PyObject *lo;
    if (!PyArg_ParseTuple(args, "KKnniiiLiOK", &xa, &ta, &rows, &n, &dtype, &mode, &threads,
                          &ignore, &reduction, &lo, &ga))
        return NULL;
    if (rows < 1 || n < 1 || threads < 1 || reduction < 0 || reduction > 2 || !xa || !ta ||
        (dtype != SKIT_F32 && dtype != SKIT_F64)) {
        PyErr_SetString(PyExc_ValueError, "bad address, shape, dtype, reduction or thread count");
        return NULL;
    }
    Py_ssize_t count = reduction == 0 ? rows : 1;
    buf l = {0};
    void *lbuf;
    int narrow;
    if (PyLong_Check(lo)) {
        /* an address: count items of x's own type, fresh for this call (the caller's
         * torch.empty_like, which costs less than a NumPy array and its tensor) */
        lbuf = PyLong_AsVoidPtr(lo);
        if (!lbuf) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "bad loss address");
            return NULL;
        }
        narrow = dtype == SKIT_F32;
    } else {
        /* x's own type first (the usual call), then float64 */
        narrow = dtype == SKIT_F32 && get(lo, &l, 1, 'f', count, 0, "loss") == 0;
        if (!narrow) {
            PyErr_Clear();
            if (get(lo, &l, 1, 'd', count, 0, "loss") < 0) return NULL;
        }
        lbuf = l.view.buf;
    }
    double one;
    double *wide = narrow ? (count == 1 ? &one : (double *)malloc(count * sizeof(double)))
                          : (double *)lbuf;
    if (!wide) {
        release(&l);
        return PyErr_NoMemory();
    }
    skit_rows a;
    rows_spec(&a, rows, n, dtype, mode, threads, 1.0);
    a.x = (const void *)(uintptr_t)xa;
    int st;
    int64_t bad = -1;
    a.fresh_out = 1; /* every caller allocates the gradient for this call */
    Py_BEGIN_ALLOW_THREADS st = skit_cross_entropy_reduced(
        &a, (const int64_t *)(uintptr_t)ta, NULL, 1, (int64_t)ignore, 0.0, reduction, wide,
        ga ? (void *)(uintptr_t)ga : NULL, &bad);
    if (st == SKIT_OK && narrow)
        for (Py_ssize_t i = 0; i < count; i++) ((float *)lbuf)[i] = (float)wide[i];
    Py_END_ALLOW_THREADS if (narrow && wide != &one) free(wide);
    release(&l);
    return reduced_result(st, bad);
}

PyDoc_STRVAR(sigmoid_doc, "sigmoid(kind, x, y, w, pw, n, dtype, mode, threads, scale, out, grad): "
                          "kind 0 sigmoid, 1 log_sigmoid, 2 BCE (float64 y), 3 BCE (y in x's type); "
                          "4, 5: 2, 3 with the loss in x's type");

static PyObject *py_sigmoid(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *yo, *wo, *po, *oo, *go;
    Py_ssize_t n;
    int kind, dtype, mode, threads;
    double scale;
    if (!PyArg_ParseTuple(args, "iOOOOniiidOO", &kind, &xo, &yo, &wo, &po, &n, &dtype, &mode,
                          &threads, &scale, &oo, &go))
        return NULL;
    char f = dtype == SKIT_F32 ? 'f' : 'd';
    buf x = {0}, y = {0}, w = {0}, p = {0}, o = {0}, g = {0};
    if (kind < 0 || kind > 5 || n < 0) {
        PyErr_SetString(PyExc_ValueError, "bad kind or size");
        return NULL;
    }
    if (get(xo, &x, 0, f, n, 0, "x") < 0 ||
        get(yo, &y, 0, kind == 3 || kind == 5 ? f : 'd', n, kind < 2, "y") < 0 ||
        get(wo, &w, 0, 'd', n, 1, "w") < 0 || get(po, &p, 0, 'd', n, 1, "pw") < 0 ||
        get(oo, &o, 1, kind == 2 || kind == 3 ? 'd' : f, n, 0, "out") < 0 ||
        get(go, &g, 1, f, n, 1, "grad") < 0) {
        release(&x), release(&y), release(&w), release(&p), release(&o), release(&g);
        return NULL;
    }
    int st;
    Py_BEGIN_ALLOW_THREADS st = skit_sigmoid(
        dtype, mode, kind, x.view.buf, y.held ? y.view.buf : NULL,
        w.held ? (const double *)w.view.buf : NULL, p.held ? (const double *)p.view.buf : NULL,
        (size_t)n, scale, o.view.buf, g.held ? g.view.buf : NULL, threads);
    Py_END_ALLOW_THREADS release(&x), release(&y), release(&w), release(&p), release(&o),
        release(&g);
    if (st) return status_error(st), NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(nll_doc, "nll(x, target, rows, n, dtype, ignore_index, reduction, out): nll_loss "
                      "(float64 arithmetic) into out (x's type; rows items, or one); "
                      "ignore_index None or an int; IndexError(row) for a label out of range");

static PyObject *py_nll(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *to, *io, *oo;
    Py_ssize_t rows, n;
    int dtype, reduction;
    if (!PyArg_ParseTuple(args, "OOnniOiO", &xo, &to, &rows, &n, &dtype, &io, &reduction, &oo))
        return NULL;
    if (rows < 0 || n < 1 || reduction < 0 || reduction > 2 ||
        (dtype != SKIT_F32 && dtype != SKIT_F64)) {
        PyErr_SetString(PyExc_ValueError, "bad shape, dtype or reduction");
        return NULL;
    }
    long long ignore = 0;
    int has_ignore = io != Py_None;
    if (has_ignore) {
        ignore = PyLong_AsLongLong(io);
        if (ignore == -1 && PyErr_Occurred()) return NULL;
    }
    char f = dtype == SKIT_F32 ? 'f' : 'd';
    buf x = {0}, t = {0}, o = {0};
    if (get(xo, &x, 0, f, rows * n, 0, "x") < 0 || get(to, &t, 0, 'q', rows, 0, "target") < 0 ||
        get(oo, &o, 1, f, reduction == 0 ? rows : 1, 0, "out") < 0) {
        release(&x), release(&t), release(&o);
        return NULL;
    }
    int st;
    int64_t bad = -1;
    Py_BEGIN_ALLOW_THREADS st = skit_nll(dtype, x.view.buf, (const int64_t *)t.view.buf, (size_t)rows,
                                         (size_t)n, has_ignore, (int64_t)ignore, reduction,
                                         o.view.buf, &bad);
    Py_END_ALLOW_THREADS release(&x), release(&t), release(&o);
    return reduced_result(st, bad);
}

PyDoc_STRVAR(bce_reduced_doc,
             "bce_reduced(kind, x, y, n, dtype, mode, threads, scale, grad) -> float: the sum "
             "of the BCE-with-logits losses (kind 2: float64 y, 3: y in x's type) in np.sum's "
             "order, and scale times the gradient into grad unless None");

static PyObject *py_bce_reduced(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *yo, *go;
    Py_ssize_t n;
    int kind, dtype, mode, threads;
    double scale;
    if (!PyArg_ParseTuple(args, "iOOniiidO", &kind, &xo, &yo, &n, &dtype, &mode, &threads, &scale,
                          &go))
        return NULL;
    if ((kind != 2 && kind != 3) || n < 0) {
        PyErr_SetString(PyExc_ValueError, "bad kind or size");
        return NULL;
    }
    char f = dtype == SKIT_F32 ? 'f' : 'd';
    buf x = {0}, y = {0}, g = {0};
    if (get(xo, &x, 0, f, n, 0, "x") < 0 || get(yo, &y, 0, kind == 3 ? f : 'd', n, 0, "y") < 0 ||
        get(go, &g, 1, f, n, 1, "grad") < 0) {
        release(&x), release(&y), release(&g);
        return NULL;
    }
    int st;
    double total = 0.0;
    Py_BEGIN_ALLOW_THREADS st = skit_bce_reduced(dtype, mode, kind, x.view.buf, y.view.buf, NULL,
                                                 NULL, (size_t)n, scale, &total,
                                                 g.held ? g.view.buf : NULL, threads);
    Py_END_ALLOW_THREADS release(&x), release(&y), release(&g);
    if (st) return status_error(st), NULL;
    return PyFloat_FromDouble(total);
}

PyDoc_STRVAR(bce_reduced_at_doc,
             "bce_reduced_at(x_addr, y_addr, n, dtype, mode, threads, scale, mean, loss_addr, "
             "grad_addr) -> float | None: bce_reduced's kind 3 on n contiguous elements at "
             "their addresses (targets in x's type, grad_addr 0 for no gradient), and the "
             "loss (the sum, or the sum over n when mean) rounded once into x's type at "
             "loss_addr; the sum, or None (nothing written) when a target lies outside [0, 1] "
             "or is NaN");

/* The everyday torch call: no buffer protocol, the targets' range checked here */
static PyObject *py_bce_reduced_at(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long xa, ya, la, ga;
    Py_ssize_t n;
    int dtype, mode, threads, mean;
    double scale;
    if (!PyArg_ParseTuple(args, "KKniiidpKK", &xa, &ya, &n, &dtype, &mode, &threads, &scale,
                          &mean, &la, &ga))
        return NULL;
    if (n < 1 || threads < 1 || !xa || !ya || !la || (dtype != SKIT_F32 && dtype != SKIT_F64)) {
        PyErr_SetString(PyExc_ValueError, "bad address, size, dtype or thread count");
        return NULL;
    }
    int st = 0, ok;
    double total = 0.0;
    Py_BEGIN_ALLOW_THREADS ok = skit_in_unit_interval(dtype, (const void *)(uintptr_t)ya, (size_t)n);
    if (ok) {
        st = skit_bce_reduced(dtype, mode, 3, (const void *)(uintptr_t)xa,
                              (const void *)(uintptr_t)ya, NULL, NULL, (size_t)n, scale, &total,
                              ga ? (void *)(uintptr_t)ga : NULL, threads);
        /* the general route's mean: the float64 sum over n, then one rounding */
        double v = mean ? total / (double)n : total;
        if (!st && dtype == SKIT_F32) *(float *)(uintptr_t)la = (float)v;
        if (!st && dtype == SKIT_F64) *(double *)(uintptr_t)la = v;
    }
    Py_END_ALLOW_THREADS if (!ok) Py_RETURN_NONE;
    if (st) return status_error(st), NULL;
    return PyFloat_FromDouble(total);
}

PyDoc_STRVAR(one_hot_doc,
             "one_hot(x, rows, n, dtype, index) -> bool: whether every row of x (rows x n, "
             "float32 or float64 by dtype) is one-hot, its class indices written into index "
             "(int64)");

static PyObject *py_one_hot(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *io;
    Py_ssize_t rows, n;
    int dtype;
    if (!PyArg_ParseTuple(args, "OnniO", &xo, &rows, &n, &dtype, &io)) return NULL;
    if (rows < 0 || n < 0 || (dtype != 0 && dtype != 1)) {
        PyErr_SetString(PyExc_ValueError, "bad shape or dtype");
        return NULL;
    }
    buf x = {0}, ix = {0};
    if (get(xo, &x, 0, dtype ? 'd' : 'f', rows * n, 0, "x") < 0) return NULL;
    if (get(io, &ix, 1, 'q', rows, 0, "index") < 0) {
        release(&x);
        return NULL;
    }
    int st;
    Py_BEGIN_ALLOW_THREADS st = skit_one_hot(dtype, x.view.buf, (size_t)rows, (size_t)n,
                                             (int64_t *)ix.view.buf);
    Py_END_ALLOW_THREADS release(&x), release(&ix);
    if (st == SKIT_ERANGE) Py_RETURN_FALSE;
    if (st) return status_error(st), NULL;
    Py_RETURN_TRUE;
}

PyDoc_STRVAR(smooth_doc, "smooth(kind, x, rows, n, w, m, f, k, gap, dsum, grad, threads, w_rows=False): "
                         "label-smoothing block sums (kind 0) or gradient (1: float32, 3: float64; one-block rows "
                         "with their sum: 4, 5, and their gaps when gap is given), float32 rows; with w_rows, "
                         "w holds rows x n weights, each row its own");

/* An optional gradient buffer of `count` float32 items (*grad64 = 0) or float64
 * items (*grad64 = 1, for callers that round once to a narrower type). */
static int get_grad(PyObject *obj, buf *b, Py_ssize_t count, int *grad64) {
    *grad64 = 0;
    if (obj == Py_None) return 0;
    if (get(obj, b, 1, 'f', count, 0, "grad") == 0) return 0;
    PyErr_Clear();
    *grad64 = 1;
    return get(obj, b, 1, 'd', count, 0, "grad (float32 or float64)");
}

/* Sets a ValueError saying that `what` means nothing for this kind; returns 1. */
static int not_here(const char *what, int kind) {
    PyErr_Format(PyExc_ValueError, "%s must be None for kind %d", what, kind);
    return 1;
}

static PyObject *py_smooth(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *wo, *mo, *fo, *ko, *go, *so, *oo;
    Py_ssize_t rows, n;
    int kind, threads, w_rows = 0;
    if (!PyArg_ParseTuple(args, "iOnnOOOOOOOi|p", &kind, &xo, &rows, &n, &wo, &mo, &fo, &ko, &go,
                          &so, &oo, &threads, &w_rows))
        return NULL;
    if (kind < 0 || kind > 5 || kind == 2 || rows < 0 || n < 0 || threads < 1 ||
        (kind >= 4 && n > (Py_ssize_t)skit_block_elems())) {
        PyErr_SetString(PyExc_ValueError, "bad kind, shape or thread count");
        return NULL;
    }
    Py_ssize_t nb = (n + (Py_ssize_t)skit_block_elems() - 1) / (Py_ssize_t)skit_block_elems();
    Py_ssize_t per = kind == 0 ? rows * nb : rows;
    buf x = {0}, w = {0}, m = {0}, f = {0}, k = {0}, g = {0}, s = {0}, o = {0};
    if (get(xo, &x, 0, 'f', rows * n, 0, "x") < 0 ||
        get(wo, &w, 0, 'd', w_rows ? rows * n : n, !w_rows, "w") < 0 ||
        get(mo, &m, 0, 'd', per, 0, "m") < 0 || get(fo, &f, 0, 'd', rows, kind == 0, "f") < 0 ||
        get(ko, &k, 0, 'd', rows, kind == 0, "k") < 0 ||
        get(go, &g, 1, 'd', per, kind != 0, "gap") < 0 ||
        get(so, &s, 1, 'd', per, 1, "dsum") < 0 ||
        ((kind == 1 || kind == 3) && (g.held || s.held) && not_here("gap and dsum", kind)) ||
        (kind >= 4 && s.held && not_here("dsum", kind)) ||
        get(oo, &o, 1, (kind == 3 || kind == 5) ? 'd' : 'f', rows * n, kind == 0, "grad") < 0) {
        release(&x), release(&w), release(&m), release(&f), release(&k), release(&g),
            release(&s), release(&o);
        return NULL;
    }
    int st;
    Py_BEGIN_ALLOW_THREADS st = skit_smooth_ld(
        kind, (const float *)x.view.buf, (size_t)rows, (size_t)n,
        w.held ? (const double *)w.view.buf : NULL, w_rows ? (size_t)n : 0,
        (const double *)m.view.buf,
        f.held ? (const double *)f.view.buf : NULL, k.held ? (const double *)k.view.buf : NULL,
        g.held ? (double *)g.view.buf : NULL, s.held ? (double *)s.view.buf : NULL,
        o.held ? o.view.buf : NULL, threads);
    Py_END_ALLOW_THREADS release(&x), release(&w), release(&m), release(&f), release(&k),
        release(&g), release(&s), release(&o);
    if (st) return status_error(st), NULL;
    Py_RETURN_NONE;
}

/* probability targets: count float32 or float64 values (*q64 set for float64) */
static int get_targets(PyObject *obj, buf *b, Py_ssize_t count, int *q64) {
    *q64 = 0;
    if (get(obj, b, 0, 'f', count, 0, "q") == 0) return 0;
    PyErr_Clear();
    *q64 = 1;
    return get(obj, b, 0, 'd', count, 0, "q (float32 or float64)");
}

PyDoc_STRVAR(prob_ce_doc,
             "prob_ce(x, rows, n, q, w, eps, z, reduction, m, c, s_hi, s_lo, loss, grad, fixed, "
             "threads) -> special: cross-entropy of float32 rows and probability targets (q "
             "float32 or float64) from the rows' state (m, c, s_hi, s_lo), reduced (0 none, 1 mean, 2 sum), with grad (float32 or None) its "
             "gradient, the cancelling elements formed again in double-word (fixed: None or "
             "rows uint8, 0 untouched, 1 mended, 2 mended with the accurate exponential); 0, "
             "or bits: 1 a row is not finite, 2 a target is negative or NaN (nothing usable "
             "written)");

static PyObject *py_prob_ce(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *qo, *wo, *mo, *co, *ho, *lo, *io, *go, *fo;
    Py_ssize_t rows, n;
    double eps, z;
    int reduction, threads;
    if (!PyArg_ParseTuple(args, "OnnOOddiOOOOOOOi", &xo, &rows, &n, &qo, &wo, &eps, &z,
                          &reduction, &mo, &co, &ho, &lo, &io, &go, &fo, &threads))
        return NULL;
    if (rows < 1 || n < 1 || threads < 1 || reduction < 0 || reduction > 2 || !isfinite(eps) ||
        !isfinite(z)) {
        PyErr_SetString(PyExc_ValueError, "bad shape, reduction, option or thread count");
        return NULL;
    }
    buf x = {0}, q = {0}, w = {0}, m = {0}, c = {0}, h = {0}, l = {0}, it = {0}, g = {0}, f = {0};
    int q64 = 0;
    int bad = get(xo, &x, 0, 'f', rows * n, 0, "x") < 0 || get_targets(qo, &q, rows * n, &q64) < 0;
    bad = bad || get(wo, &w, 0, 'd', n, 1, "w") < 0 ||
          get(mo, &m, 0, 'd', rows, 0, "m") < 0 || get(co, &c, 0, 'd', rows, 0, "c") < 0 ||
          get(ho, &h, 0, 'd', rows, 0, "s_hi") < 0 || get(lo, &l, 0, 'd', rows, 0, "s_lo") < 0 ||
          get(io, &it, 1, 'd', reduction == 0 ? rows : 1, 0, "loss") < 0 ||
          get(go, &g, 1, 'f', rows * n, 1, "grad") < 0 ||
          get(fo, &f, 1, 'B', rows, 1, "fixed") < 0;
    if (bad) {
        release(&x), release(&q), release(&w), release(&m), release(&c), release(&h),
            release(&l), release(&it), release(&g), release(&f);
        return NULL;
    }
    int st, special = 0;
    Py_BEGIN_ALLOW_THREADS st = skit_prob_ce(
        (const float *)x.view.buf, (size_t)rows, (size_t)n, q.view.buf, q64,
        w.held ? (const double *)w.view.buf : NULL, eps, z, reduction,
        (const double *)m.view.buf, (const double *)c.view.buf, (const double *)h.view.buf,
        (const double *)l.view.buf,
        (double *)it.view.buf, g.held ? (float *)g.view.buf : NULL,
        f.held ? (uint8_t *)f.view.buf : NULL, &special, threads);
    Py_END_ALLOW_THREADS release(&x), release(&q), release(&w), release(&m), release(&c),
        release(&h), release(&l), release(&it), release(&g), release(&f);
    if (st) return status_error(st), NULL;
    return PyLong_FromLong(special);
}

PyDoc_STRVAR(prob_ce_fast_doc,
             "prob_ce_fast(x, rows, n, q, w, eps, z, reduction, loss, grad, threads) -> int: "
             "prob_ce in fast mode (float32 arithmetic, no row state)");

static PyObject *py_prob_ce_fast(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *qo, *wo, *io, *go;
    Py_ssize_t rows, n;
    double eps, z;
    int reduction, threads;
    if (!PyArg_ParseTuple(args, "OnnOOddiOOi", &xo, &rows, &n, &qo, &wo, &eps, &z, &reduction,
                          &io, &go, &threads))
        return NULL;
    if (rows < 1 || n < 1 || threads < 1 || reduction < 0 || reduction > 2 || !isfinite(eps) ||
        !isfinite(z)) {
        PyErr_SetString(PyExc_ValueError, "bad shape, reduction, option or thread count");
        return NULL;
    }
    buf x = {0}, q = {0}, w = {0}, it = {0}, g = {0};
    int q64 = 0;
    int bad = get(xo, &x, 0, 'f', rows * n, 0, "x") < 0 || get_targets(qo, &q, rows * n, &q64) < 0;
    bad = bad || get(wo, &w, 0, 'd', n, 1, "w") < 0 ||
          get(io, &it, 1, 'd', reduction == 0 ? rows : 1, 0, "loss") < 0 ||
          get(go, &g, 1, 'f', rows * n, 1, "grad") < 0;
    if (bad) {
        release(&x), release(&q), release(&w), release(&it), release(&g);
        return NULL;
    }
    int st, special = 0;
    Py_BEGIN_ALLOW_THREADS st = skit_prob_ce_fast(
        (const float *)x.view.buf, (size_t)rows, (size_t)n, q.view.buf, q64,
        w.held ? (const double *)w.view.buf : NULL, eps, z, reduction, (double *)it.view.buf,
        g.held ? (float *)g.view.buf : NULL, &special, threads);
    Py_END_ALLOW_THREADS release(&x), release(&q), release(&w), release(&it), release(&g);
    if (st) return status_error(st), NULL;
    return PyLong_FromLong(special);
}

PyDoc_STRVAR(smooth_rows_doc,
             "smooth_rows(x, rows, n, target, w, has_ignore, ignore_index, shift, nll, lse, "
             "counted, eps, z, reduction, gap, loss, grad, threads): label-smoothed "
             "cross-entropy of whole one-block float32 rows from their unsmoothed values; "
             "grad float32, float64 (rounded once by the caller) or None (gap then given)");

static PyObject *py_smooth_rows(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *to, *wo, *so, *no, *lo, *co, *go, *oo, *do_;
    Py_ssize_t rows, n;
    long long ignore;
    int has_ignore, reduction, threads;
    double eps, z;
    if (!PyArg_ParseTuple(args, "OnnOOpLOOOOddiOOOi", &xo, &rows, &n, &to, &wo, &has_ignore,
                          &ignore, &so, &no, &lo, &co, &eps, &z, &reduction, &go, &oo, &do_,
                          &threads))
        return NULL;
    if (rows < 0 || n < 1 || n > (Py_ssize_t)skit_block_elems() || threads < 1 ||
        reduction < 0 || reduction > 2) {
        PyErr_SetString(PyExc_ValueError, "bad shape, reduction or thread count");
        return NULL;
    }
    buf x = {0}, t = {0}, w = {0}, sh = {0}, nl = {0}, ls = {0}, c = {0}, g = {0}, o = {0},
        d = {0};
    int grad64 = 0;
    int bad = get(xo, &x, 0, 'f', rows * n, 0, "x") < 0 ||
              get(to, &t, 0, 'q', rows, 0, "target") < 0 ||
              get(wo, &w, 0, 'd', n, 1, "w") < 0 || get(so, &sh, 0, 'd', rows, 0, "shift") < 0 ||
              get(no, &nl, 0, 'd', rows, 0, "nll") < 0 || get(lo, &ls, 0, 'd', rows, 0, "lse") < 0 ||
              get(co, &c, 0, 'B', rows, 0, "counted") < 0 ||
              get(oo, &o, 1, 'd', reduction == 0 ? rows : 1, 0, "loss") < 0;
    if (!bad) bad = get_grad(do_, &d, rows * n, &grad64) < 0;
    /* the gaps are written by the gradient's pass, read otherwise */
    if (!bad) bad = get(go, &g, d.held, 'd', rows, 0, "gap") < 0;
    if (bad) {
        release(&x), release(&t), release(&w), release(&sh), release(&nl), release(&ls),
            release(&c), release(&g), release(&o), release(&d);
        return NULL;
    }
    int st;
    Py_BEGIN_ALLOW_THREADS st = skit_smooth_rows(
        (const float *)x.view.buf, (size_t)rows, (size_t)n, (const int64_t *)t.view.buf,
        w.held ? (const double *)w.view.buf : NULL, has_ignore, (int64_t)ignore,
        (const double *)sh.view.buf, (const double *)nl.view.buf, (const double *)ls.view.buf,
        (const uint8_t *)c.view.buf, eps, z, reduction, (double *)g.view.buf,
        (double *)o.view.buf, d.held ? d.view.buf : NULL, grad64, threads);
    Py_END_ALLOW_THREADS release(&x), release(&t), release(&w), release(&sh), release(&nl),
        release(&ls), release(&c), release(&g), release(&o), release(&d);
    if (st == SKIT_ERANGE) {
        PyErr_SetString(PyExc_IndexError, "target out of range");
        return NULL;
    }
    if (st) return status_error(st), NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(smooth_ce_doc,
             "smooth_ce(x, rows, n, threads, target, w, has_ignore, ignore_index, eps, z, "
             "reduction, loss, grad) -> special: the label-smoothed cross-entropy of float32 "
             "rows of one block; True (nothing written) when a row holds +inf or NaN");

static PyObject *py_smooth_ce(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *to, *wo, *oo, *do_;
    Py_ssize_t rows, n;
    long long ignore;
    int has_ignore, reduction, threads;
    double eps, z;
    if (!PyArg_ParseTuple(args, "OnniOOpLddiOO", &xo, &rows, &n, &threads, &to, &wo, &has_ignore,
                          &ignore, &eps, &z, &reduction, &oo, &do_))
        return NULL;
    if (n < 1 || n > (Py_ssize_t)skit_block_elems() || reduction < 0 || reduction > 2) {
        PyErr_SetString(PyExc_ValueError, "bad shape or reduction");
        return NULL;
    }
    skit_rows a;
    buf x = {0}, t = {0}, w = {0}, o = {0}, d = {0};
    if (parse_rows(&a, &x, xo, rows, n, SKIT_F32, 1, threads, 1.0) < 0) return NULL;
    int grad64 = 0;
    int bad = get(to, &t, 0, 'q', rows, 0, "target") < 0 || get(wo, &w, 0, 'd', n, 1, "w") < 0 ||
              get(oo, &o, 1, 'd', reduction == 0 ? rows : 1, 0, "loss") < 0;
    if (!bad) bad = get_grad(do_, &d, rows * n, &grad64) < 0;
    if (bad) {
        release(&x), release(&t), release(&w), release(&o), release(&d);
        return NULL;
    }
    int st, special = 0;
    Py_BEGIN_ALLOW_THREADS st = skit_smooth_ce(
        &a, (const int64_t *)t.view.buf, w.held ? (const double *)w.view.buf : NULL, has_ignore,
        (int64_t)ignore, eps, z, reduction, (double *)o.view.buf, d.held ? d.view.buf : NULL,
        grad64, &special);
    Py_END_ALLOW_THREADS release(&x), release(&t), release(&w), release(&o), release(&d);
    if (st == SKIT_ERANGE) {
        PyErr_SetString(PyExc_IndexError, "target out of range");
        return NULL;
    }
    if (st) return status_error(st), NULL;
    return PyBool_FromLong(special);
}

PyDoc_STRVAR(vjp_doc, "vjp(islog, y, g, rows, n, dtype, mode, threads, out)");

static PyObject *py_vjp(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *yo, *go, *oo;
    Py_ssize_t rows, n;
    int islog, dtype, mode, threads;
    if (!PyArg_ParseTuple(args, "pOOnniiiO", &islog, &yo, &go, &rows, &n, &dtype, &mode, &threads,
                          &oo))
        return NULL;
    char f = dtype == SKIT_F32 ? 'f' : 'd';
    buf y = {0}, g = {0}, o = {0};
    if (rows < 0 || n < 0) {
        PyErr_SetString(PyExc_ValueError, "bad shape");
        return NULL;
    }
    if (get(yo, &y, 0, f, rows * n, 0, "y") < 0 || get(go, &g, 0, f, rows * n, 0, "g") < 0 ||
        get(oo, &o, 1, f, rows * n, 0, "out") < 0) {
        release(&y), release(&g), release(&o);
        return NULL;
    }
    int st;
    Py_BEGIN_ALLOW_THREADS st = skit_vjp(dtype, mode, islog, y.view.buf, g.view.buf, (size_t)rows,
                                          (size_t)n, o.view.buf, threads);
    Py_END_ALLOW_THREADS release(&y), release(&g), release(&o);
    if (st) return status_error(st), NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(state_doc, "state(x, offset, ld, mask, rows, n, dtype, mode, threads, temperature, m, "
                        "c, s_hi, s_lo): rows of n elements at x[offset + r * ld]");

static PyObject *py_state(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *mo, *o[4];
    Py_ssize_t off, ld, rows, n;
    int dtype, mode, threads;
    double T;
    if (!PyArg_ParseTuple(args, "OnnOnniiidOOOO", &xo, &off, &ld, &mo, &rows, &n, &dtype, &mode,
                          &threads, &T, &o[0], &o[1], &o[2], &o[3]))
        return NULL;
    if (rows < 0 || n < 0 || off < 0 || ld < n || threads < 1 ||
        (dtype != SKIT_F32 && dtype != SKIT_F64)) {
        PyErr_SetString(PyExc_ValueError, "bad shape, stride, dtype or thread count");
        return NULL;
    }
    buf x = {0}, m = {0}, b[4] = {{0}};
    /* the whole buffer x: it must hold the last row's last element */
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT;
    if (PyObject_GetBuffer(xo, &x.view, flags) < 0) return NULL;
    x.held = 1;
    Py_ssize_t isz = dtype == SKIT_F32 ? 4 : 8;
    const char *f = x.view.format ? x.view.format : "B";
    if (f[0] == '=' || f[0] == '@') f++;
    Py_ssize_t need = rows > 0 && n > 0 ? off + (rows - 1) * ld + n : 0;
    if (f[0] != (dtype == SKIT_F32 ? 'f' : 'd') || f[1] != '\0' || x.view.itemsize != isz ||
        x.view.len < need * isz) {
        PyErr_SetString(PyExc_ValueError, "x: wrong format or too small for offset, ld, rows, n");
        release(&x);
        return NULL;
    }
    skit_rows a;
    rows_spec(&a, rows, n, dtype, mode, threads, T);
    a.x = (const char *)x.view.buf + off * isz;
    int bad = get(mo, &m, 0, 'B', rows * n, 1, "mask") < 0;
    for (int i = 0; i < 4 && !bad; i++) bad = get(o[i], &b[i], 1, 'd', rows, 0, "state") < 0;
    if (bad) {
        release(&x), release(&m);
        for (int i = 0; i < 4; i++) release(&b[i]);
        return NULL;
    }
    a.mask = m.held ? (const uint8_t *)m.view.buf : NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS st = skit_state(&a, (size_t)ld, (double *)b[0].view.buf,
                                            (double *)b[1].view.buf, (double *)b[2].view.buf,
                                            (double *)b[3].view.buf);
    Py_END_ALLOW_THREADS release(&x), release(&m);
    for (int i = 0; i < 4; i++) release(&b[i]);
    if (st) return status_error(st), NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(state_apply_doc,
             "state_apply(x, mask, rows, n, dtype, mode, threads, temperature, m, c, s_hi, s_lo, "
             "log, out)");

static PyObject *py_state_apply(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *mo, *o[4], *oo;
    Py_ssize_t rows, n;
    int dtype, mode, threads, islog;
    double T;
    if (!PyArg_ParseTuple(args, "OOnniiidOOOOpO", &xo, &mo, &rows, &n, &dtype, &mode, &threads,
                          &T, &o[0], &o[1], &o[2], &o[3], &islog, &oo))
        return NULL;
    skit_rows a;
    buf x = {0}, m = {0}, b[4] = {{0}}, out = {0};
    if (parse_rows(&a, &x, xo, rows, n, dtype, mode, threads, T) < 0) return NULL;
    int bad = get(mo, &m, 0, 'B', rows * n, 1, "mask") < 0;
    for (int i = 0; i < 4 && !bad; i++) bad = get(o[i], &b[i], 0, 'd', rows, 0, "state") < 0;
    if (!bad) bad = get(oo, &out, 1, dtype == SKIT_F32 ? 'f' : 'd', rows * n, 0, "out") < 0;
    if (bad) {
        release(&x), release(&m), release(&out);
        for (int i = 0; i < 4; i++) release(&b[i]);
        return NULL;
    }
    a.mask = m.held ? (const uint8_t *)m.view.buf : NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS st = skit_state_apply(
        &a, (const double *)b[0].view.buf, (const double *)b[1].view.buf,
        (const double *)b[2].view.buf, (const double *)b[3].view.buf, islog, out.view.buf);
    Py_END_ALLOW_THREADS release(&x), release(&m), release(&out);
    for (int i = 0; i < 4; i++) release(&b[i]);
    if (st) return status_error(st), NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(block_states_doc, "block_states(x, rows, n, dtype, mode, threads, m, c, s_hi, s_lo): "
                               "rows x ceil(n / block_elems()) block statistics each");

static PyObject *py_block_states(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *o[4];
    Py_ssize_t rows, n;
    int dtype, mode, threads;
    if (!PyArg_ParseTuple(args, "OnniiiOOOO", &xo, &rows, &n, &dtype, &mode, &threads, &o[0],
                          &o[1], &o[2], &o[3]))
        return NULL;
    skit_rows a;
    buf x = {0}, b[4] = {{0}};
    if (parse_rows(&a, &x, xo, rows, n, dtype, mode, threads, 1.0) < 0) return NULL;
    Py_ssize_t blk = (Py_ssize_t)skit_block_elems();
    Py_ssize_t nb = (n + blk - 1) / blk;
    int bad = 0;
    for (int i = 0; i < 4 && !bad; i++) bad = get(o[i], &b[i], 1, 'd', rows * nb, 0, "state") < 0;
    if (bad) {
        release(&x);
        for (int i = 0; i < 4; i++) release(&b[i]);
        return NULL;
    }
    int st;
    Py_BEGIN_ALLOW_THREADS st =
        skit_block_states(&a, (double *)b[0].view.buf, (double *)b[1].view.buf,
                          (double *)b[2].view.buf, (double *)b[3].view.buf);
    Py_END_ALLOW_THREADS release(&x);
    for (int i = 0; i < 4; i++) release(&b[i]);
    if (st) return status_error(st), NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(cross_entropy_states_doc,
             "cross_entropy_states(x, rows, n, dtype, mode, threads, v0, nb_all, whole_row, m, c, s_hi, "
             "s_lo, xt, target, weight, has_ignore, ignore_index, z_loss, grad_scale, loss, lse, "
             "counted, grad)");

static PyObject *py_cross_entropy_states(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *so[4], *xto, *to, *wo, *losso, *lseo, *co, *go;
    Py_ssize_t rows, n, v0, nb_all;
    int dtype, mode, threads, has_ignore, whole;
    long long ignore;
    double z, gscale;
    if (!PyArg_ParseTuple(args, "OnniiinnpOOOOOOOpLddOOOO", &xo, &rows, &n, &dtype, &mode,
                          &threads, &v0, &nb_all, &whole, &so[0], &so[1], &so[2], &so[3], &xto,
                          &to, &wo, &has_ignore, &ignore, &z, &gscale, &losso, &lseo, &co, &go))
        return NULL;
    Py_ssize_t blk = (Py_ssize_t)skit_block_elems();
    if (v0 < 0 || nb_all < 1 ||
        (nb_all > 1 && (v0 % blk != 0 || v0 / blk + (n + blk - 1) / blk > nb_all))) {
        PyErr_Format(PyExc_ValueError,
                     "bad part: v0 must be a multiple of %zd (the block) inside the row", blk);
        return NULL;
    }
    skit_rows a;
    buf x = {0}, b[4] = {{0}}, xt = {0}, t = {0}, w = {0}, lb = {0}, sb = {0}, cb = {0}, g = {0};
    if (parse_rows(&a, &x, xo, rows, n, dtype, mode, threads, 1.0) < 0) return NULL;
    int bad = 0;
    for (int i = 0; i < 4 && !bad; i++)
        bad = get(so[i], &b[i], 0, 'd', rows * nb_all, 0, "state") < 0;
    if (!bad)
        bad = get(xto, &xt, 0, 'd', rows, 0, "xt") < 0 || get(to, &t, 0, 'q', rows, 0, "target") < 0 ||
              get(wo, &w, 0, 'd', rows, 1, "weight") < 0 ||
              get(losso, &lb, 1, 'd', rows, 0, "loss") < 0 ||
              get(lseo, &sb, 1, 'd', rows, 0, "lse") < 0 ||
              get(co, &cb, 1, 'B', rows, 0, "counted") < 0 ||
              get(go, &g, 1, dtype == SKIT_F32 ? 'f' : 'd', rows * n, 1, "grad") < 0;
    if (!bad) {
        const int64_t *tp = (const int64_t *)t.view.buf;
        for (Py_ssize_t r = 0; r < rows && !bad; r++) {
            if (tp[r] < 0 && !(has_ignore && tp[r] == ignore)) {
                PyErr_Format(PyExc_IndexError, "target %lld out of range", (long long)tp[r]);
                bad = 1;
            }
        }
    }
    int st = 0;
    if (!bad) {
        Py_BEGIN_ALLOW_THREADS st = skit_cross_entropy_states(
            &a, (int64_t)v0, (size_t)nb_all, whole, (const double *)b[0].view.buf,
            (const double *)b[1].view.buf, (const double *)b[2].view.buf,
            (const double *)b[3].view.buf, (const double *)xt.view.buf,
            (const int64_t *)t.view.buf, w.held ? (const double *)w.view.buf : NULL, has_ignore,
            (int64_t)ignore, z, gscale, (double *)lb.view.buf, (double *)sb.view.buf,
            (uint8_t *)cb.view.buf, g.held ? g.view.buf : NULL);
        Py_END_ALLOW_THREADS
    }
    release(&x), release(&xt), release(&t), release(&w);
    release(&lb), release(&sb), release(&cb), release(&g);
    for (int i = 0; i < 4; i++) release(&b[i]);
    if (bad) return NULL;
    if (st) return status_error(st), NULL;
    Py_RETURN_NONE;
}

static PyObject *py_block_elems(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyLong_FromSize_t(skit_block_elems());
}

static PyObject *py_isa(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyUnicode_FromString(skit_isa());
}

static PyObject *py_set_isa(PyObject *self, PyObject *arg) {
    (void)self;
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name) return NULL;
    if (skit_set_isa(name) != 0) {
        PyErr_Format(PyExc_ValueError, "instruction set %R is not available on this CPU", arg);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* set_omp_parallel(address): the address of a loaded OpenMP runtime's
 * GOMP_parallel (0 goes back to the own pool); returns whether a team is in use */
static PyObject *py_set_omp_parallel(PyObject *self, PyObject *arg) {
    (void)self;
    void *p = PyLong_AsVoidPtr(arg);
    if (!p && PyErr_Occurred()) return NULL;
    skit_set_omp_parallel((void (*)(void (*)(void *), void *, unsigned, unsigned))p);
    return PyBool_FromLong(skit_omp_parallel_active());
}

static PyObject *py_omp_parallel_active(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyBool_FromLong(skit_omp_parallel_active());
}

#ifdef SKIT_XLA_FFI
/* The XLA FFI handlers of xla_ffi.c (built only when jaxlib's headers were found
 * at build time), as PyCapsules for jax.ffi.register_ffi_target. */
#include "skit_xla_ffi.h"

static PyObject *py_xla_handlers(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    static const struct {
        const char *name;
        void *fn;
    } table[] = {
        {"softmaxkit_softmax", (void *)skit_xla_softmax},
        {"softmaxkit_logsumexp", (void *)skit_xla_logsumexp},
        {"softmaxkit_vjp", (void *)skit_xla_vjp},
        {"softmaxkit_cross_entropy", (void *)skit_xla_cross_entropy},
        {"softmaxkit_sigmoid", (void *)skit_xla_sigmoid},
        {"softmaxkit_prob_cross_entropy", (void *)skit_xla_prob_ce},
    };
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        PyObject *c = PyCapsule_New(table[i].fn, NULL, NULL);
        if (!c || PyDict_SetItemString(d, table[i].name, c) < 0) {
            Py_XDECREF(c);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(c);
    }
    return d;
}

static PyObject *py_xla_register(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long addr;
    const char *platform;
    if (!PyArg_ParseTuple(args, "Ks", &addr, &platform)) return NULL;
    if (addr == 0) {
        PyErr_SetString(PyExc_ValueError, "xla_register: the API table address is 0");
        return NULL;
    }
    char msg[512];
    if (skit_xla_register((const void *)(uintptr_t)addr, platform, msg, sizeof msg) != 0) {
        PyErr_SetString(PyExc_RuntimeError, msg);
        return NULL;
    }
    Py_RETURN_NONE;
}
#endif

static PyMethodDef methods[] = {
    {"softmax", py_softmax, METH_VARARGS, softmax_doc},
    {"softmax_at", py_softmax_at, METH_VARARGS, softmax_at_doc},
    {"logsumexp", py_logsumexp, METH_VARARGS, logsumexp_doc},
    {"logsumexp_b", py_logsumexp_b, METH_VARARGS, logsumexp_b_doc},
    {"cross_entropy", py_cross_entropy, METH_VARARGS, cross_entropy_doc},
    {"cross_entropy_reduced", py_cross_entropy_reduced, METH_VARARGS, cross_entropy_reduced_doc},
    {"cross_entropy_reduced_at", py_cross_entropy_reduced_at, METH_VARARGS,
     cross_entropy_reduced_at_doc},
    {"sigmoid", py_sigmoid, METH_VARARGS, sigmoid_doc},
    {"bce_reduced", py_bce_reduced, METH_VARARGS, bce_reduced_doc},
    {"bce_reduced_at", py_bce_reduced_at, METH_VARARGS, bce_reduced_at_doc},
    {"nll", py_nll, METH_VARARGS, nll_doc},
    {"vjp", py_vjp, METH_VARARGS, vjp_doc},
    {"one_hot", py_one_hot, METH_VARARGS, one_hot_doc},
    {"prob_ce", py_prob_ce, METH_VARARGS, prob_ce_doc},
    {"prob_ce_fast", py_prob_ce_fast, METH_VARARGS, prob_ce_fast_doc},
    {"smooth", py_smooth, METH_VARARGS, smooth_doc},
    {"smooth_rows", py_smooth_rows, METH_VARARGS, smooth_rows_doc},
    {"smooth_ce", py_smooth_ce, METH_VARARGS, smooth_ce_doc},
    {"state", py_state, METH_VARARGS, state_doc},
    {"block_elems", py_block_elems, METH_NOARGS, "elements per block of a row"},
    {"block_states", py_block_states, METH_VARARGS, block_states_doc},
    {"cross_entropy_states", py_cross_entropy_states, METH_VARARGS, cross_entropy_states_doc},
    {"state_apply", py_state_apply, METH_VARARGS, state_apply_doc},
    {"isa", py_isa, METH_NOARGS, "Name of the instruction set in use."},
    {"set_isa", py_set_isa, METH_O, "Force an instruction set ('auto' to detect)."},
    {"set_omp_parallel", py_set_omp_parallel, METH_O,
     "Run parallel loops on an OpenMP team: the address of its GOMP_parallel (0: own pool)."},
    {"omp_parallel_active", py_omp_parallel_active, METH_NOARGS,
     "Whether parallel loops run on a borrowed OpenMP team."},
#ifdef SKIT_XLA_FFI
    {"xla_handlers", py_xla_handlers, METH_NOARGS,
     "The XLA FFI handlers as PyCapsules, by target name."},
    {"xla_register", py_xla_register, METH_VARARGS,
     "xla_register(api_address, platform): register the handlers with the XLA whose "
     "XLA_FFI_Api table is at api_address (TensorFlow's)."},
#endif
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot slots[] = {
#ifdef Py_GIL_DISABLED
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_ckernels", "softmaxkit's native CPU kernels.", 0, methods, slots,
};

PyMODINIT_FUNC PyInit__ckernels(void) { return PyModuleDef_Init(&moduledef); }
