/*
 * softmaxkit._outcache: large output arrays that reuse recently freed memory.
 *
 * A NumPy array of 32 MiB or more is backed by its own mmap, which glibc returns to
 * the kernel when the array is freed; the next output of that size faults every page
 * in again and has the kernel zero it (about half the time of a fast softmax over
 * rows of 40 floats), and on virtual machines that hand freed memory back to their
 * host the faults can cost far more. This module allocates such outputs through a
 * NumPy memory handler (NEP 49) that keeps the blocks of freed outputs for a while
 * (`release_after` seconds, 5 by default, and at most `max_bytes` in all) and hands
 * one back when an output of about its size is asked for: a training or inference
 * loop then writes its outputs into memory it already holds. A background thread
 * releases blocks that were not reused in time, so memory does not stay held after
 * the loop ends. The arrays are ordinary NumPy arrays that own their data.
 *
 * Only arrays made by `empty` use the handler; the rest of the process keeps NumPy's.
 * `aligned_empty` makes arrays whose data are 64-byte aligned, through a second handler.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define NPY_NO_DEPRECATED_API NPY_1_22_API_VERSION
#define NPY_TARGET_VERSION NPY_1_22_API_VERSION
#include <numpy/arrayobject.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* Each block starts with a header line that records its mapping; the data follow it
 * (64-byte aligned). Mappings are whole 2 MiB pages so that the kernel can back them
 * with transparent huge pages. */
#define HDR ((size_t)64)
#define HUGE ((size_t)2 << 20)
#define SLOTS 8

typedef struct {
    char *base;
    size_t cap; /* bytes mapped at base */
    double freed_at;
} slot;

typedef struct {
    size_t cap;
    uint64_t magic;
} header;

#define MAGIC 0x736b74636163686bULL

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake;
static slot cache[SLOTS];
static int ncache;
static size_t cached_bytes;
static size_t max_bytes;      /* 0: nothing is kept */
static double release_after = 5.0;
static int reaper_running;
static unsigned long long n_hits, n_misses, n_released;
/* whether this thread's last allocation reused a kept block */
static _Thread_local int last_reused;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A fresh mapping of at least `need` bytes, 2 MiB aligned, or NULL. */
static char *map_block(size_t need, size_t *cap) {
    size_t c = (need + HUGE - 1) / HUGE * HUGE;
    if (c < need) return NULL; /* overflow */
    size_t span = c + HUGE;
    if (span < c) return NULL;
    char *p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    char *a = (char *)(((uintptr_t)p + HUGE - 1) & ~(uintptr_t)(HUGE - 1));
    if (a > p) munmap(p, (size_t)(a - p));
    size_t tail = (size_t)((p + span) - (a + c));
    if (tail) munmap(a + c, tail);
#ifdef MADV_HUGEPAGE
    madvise(a, c, MADV_HUGEPAGE);
#endif
    *cap = c;
    return a;
}

/* Take a kept block of `need` bytes or a little more (a larger one would hold memory
 * the caller did not ask for), the smallest that fits. Called with the lock held. */
static char *take(size_t need, size_t *cap) {
    int best = -1;
    size_t slack = need / 8 + HUGE;
    for (int i = 0; i < ncache; i++) {
        size_t c = cache[i].cap;
        if (c >= need && c - need <= slack && (best < 0 || c < cache[best].cap)) best = i;
    }
    if (best < 0) return NULL;
    char *p = cache[best].base;
    *cap = cache[best].cap;
    cached_bytes -= cache[best].cap;
    cache[best] = cache[--ncache];
    return p;
}

/* Remove the oldest kept block into `out` (to be unmapped once the lock is released). */
static void pop_oldest(slot *out) {
    int old = 0;
    for (int i = 1; i < ncache; i++)
        if (cache[i].freed_at < cache[old].freed_at) old = i;
    *out = cache[old];
    cached_bytes -= cache[old].cap;
    cache[old] = cache[--ncache];
}

static void *reaper(void *arg) {
    (void)arg;
    slot drop[SLOTS];
    pthread_mutex_lock(&lock);
    for (;;) {
        int nd = 0;
        double t = now_s(), next = 0.0;
        for (int i = 0; i < ncache;) {
            if (cache[i].freed_at + release_after <= t) {
                drop[nd++] = cache[i];
                cached_bytes -= cache[i].cap;
                n_released++;
                cache[i] = cache[--ncache];
            } else {
                double d = cache[i].freed_at + release_after;
                if (next == 0.0 || d < next) next = d;
                i++;
            }
        }
        if (nd) {
            pthread_mutex_unlock(&lock);
            for (int i = 0; i < nd; i++) munmap(drop[i].base, drop[i].cap);
            pthread_mutex_lock(&lock);
            continue; /* the cache may have changed meanwhile */
        }
        if (ncache == 0) break;
        struct timespec ts;
        double s = next + 1e-3;
        ts.tv_sec = (time_t)s;
        ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
        if (ts.tv_nsec >= 1000000000L) ts.tv_nsec = 999999999L;
        pthread_cond_timedwait(&wake, &lock, &ts);
    }
    reaper_running = 0;
    pthread_mutex_unlock(&lock);
    return NULL;
}

/* Called with the lock held, after a block was kept. */
static void ensure_reaper(void) {
    if (reaper_running) return;
    pthread_t th;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 64 << 10);
    if (pthread_create(&th, &at, reaper, NULL) == 0) reaper_running = 1;
    pthread_attr_destroy(&at);
}

static void *oc_malloc(void *ctx, size_t size) {
    (void)ctx;
    size_t need = size + HDR, cap = 0;
    if (need < size) return NULL;
    pthread_mutex_lock(&lock);
    char *p = take(need, &cap);
    if (p)
        n_hits++;
    else
        n_misses++;
    if (ncache && !reaper_running) ensure_reaper(); /* e.g. in a child after fork */
    pthread_mutex_unlock(&lock);
    last_reused = p != NULL;
    if (!p) p = map_block(need, &cap);
    if (!p) return NULL;
    header *h = (header *)p;
    h->cap = cap;
    h->magic = MAGIC;
    return p + HDR;
}

static header *head_of(void *ptr) { return (header *)((char *)ptr - HDR); }

static void oc_free(void *ctx, void *ptr, size_t size) {
    (void)ctx;
    (void)size;
    if (!ptr) return;
    header *h = head_of(ptr);
    char *base = (char *)h;
    size_t cap = h->cap;
    slot drop[SLOTS + 1];
    int nd = 0;
    pthread_mutex_lock(&lock);
    if (cap <= max_bytes) {
        while (ncache > 0 && (ncache == SLOTS || cached_bytes + cap > max_bytes))
            pop_oldest(&drop[nd++]);
        cache[ncache].base = base;
        cache[ncache].cap = cap;
        cache[ncache].freed_at = now_s();
        ncache++;
        cached_bytes += cap;
        ensure_reaper();
    } else {
        drop[nd].base = base;
        drop[nd++].cap = cap;
    }
    n_released += (unsigned long long)nd;
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < nd; i++) munmap(drop[i].base, drop[i].cap);
}

static void *oc_calloc(void *ctx, size_t nelem, size_t elsize) {
    if (elsize && nelem > SIZE_MAX / elsize) return NULL;
    size_t size = nelem * elsize;
    void *p = oc_malloc(ctx, size);
    /* a fresh mapping reads as zeros already; a reused block does not */
    if (p && last_reused) memset(p, 0, size);
    return p;
}

static void *oc_realloc(void *ctx, void *ptr, size_t new_size) {
    if (!ptr) return oc_malloc(ctx, new_size);
    header *h = head_of(ptr);
    size_t have = h->cap - HDR;
    if (new_size <= have && new_size + HDR + HUGE > h->cap / 2) return ptr;
    void *q = oc_malloc(ctx, new_size);
    if (!q) return NULL;
    memcpy(q, ptr, have < new_size ? have : new_size);
    oc_free(ctx, ptr, 0);
    return q;
}

static PyDataMem_Handler handler = {
    "softmaxkit_output_cache",
    1,
    {NULL, oc_malloc, oc_calloc, oc_realloc, oc_free},
};

static PyObject *handler_capsule;

static void init_wake(void) {
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&wake, &ca);
    pthread_condattr_destroy(&ca);
}

/* fork: the child has no reaper thread (the next allocation or free starts one); the
 * kept blocks are its own copy-on-write copies */
static void at_prepare(void) { pthread_mutex_lock(&lock); }
static void at_parent(void) { pthread_mutex_unlock(&lock); }
static void at_child(void) {
    pthread_mutex_unlock(&lock);
    init_wake();
    reaper_running = 0;
}

/* ---- 64-byte aligned arrays (for frameworks that require it) -----------------
 * TensorFlow takes a NumPy array's memory as a tensor through DLPack without a
 * copy, but it aborts the process on memory that is not aligned to 64 bytes, and
 * NumPy's own allocator aligns to 16. A second handler allocates 64-byte aligned
 * memory from the C heap, and asks for transparent huge pages from 4 MiB on as
 * NumPy's does. */
#define ALIGN ((size_t)64)
#define HUGE_HINT ((size_t)4 << 20)

static void *al_malloc(void *ctx, size_t size) {
    (void)ctx;
    void *p = NULL;
    /* round up: aligned_alloc wants a multiple of the alignment, and 0 bytes is legal */
    size_t n = (size + ALIGN - 1) & ~(ALIGN - 1);
    if (n < size) return NULL;
    if (posix_memalign(&p, ALIGN, n ? n : ALIGN) != 0) return NULL;
#ifdef MADV_HUGEPAGE
    if (n >= HUGE_HINT) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        uintptr_t a = ((uintptr_t)p + page - 1) & ~(uintptr_t)(page - 1);
        if (a < (uintptr_t)p + n) (void)madvise((void *)a, (uintptr_t)p + n - a, MADV_HUGEPAGE);
    }
#endif
    return p;
}

static void *al_calloc(void *ctx, size_t nelem, size_t elsize) {
    if (elsize && nelem > SIZE_MAX / elsize) return NULL;
    size_t size = nelem * elsize;
    void *p = al_malloc(ctx, size);
    if (p) memset(p, 0, size);
    return p;
}

static void *al_realloc(void *ctx, void *ptr, size_t new_size) {
    void *q = realloc(ptr, new_size ? new_size : 1);
    if (!q || ((uintptr_t)q & (ALIGN - 1)) == 0) return q;
    void *r = al_malloc(ctx, new_size);
    if (r) memcpy(r, q, new_size);
    free(q);
    return r;
}

static void al_free(void *ctx, void *ptr, size_t size) {
    (void)ctx;
    (void)size;
    free(ptr);
}

static PyDataMem_Handler aligned_handler = {
    "softmaxkit_aligned",
    1,
    {NULL, al_malloc, al_calloc, al_realloc, al_free},
};

static PyObject *aligned_capsule;

/* PyArray_Empty with `cap` as the data handler for this one array */
static PyObject *empty_with(PyObject *cap, PyObject *shape, PyArray_Descr *descr) {
    PyArray_Dims dims = {NULL, 0};
    if (!PyArray_IntpConverter(shape, &dims)) {
        Py_DECREF(descr);
        return NULL;
    }
    PyObject *old = PyDataMem_SetHandler(cap);
    if (!old) {
        PyDimMem_FREE(dims.ptr);
        Py_DECREF(descr);
        return NULL;
    }
    /* PyArray_Empty steals the reference to descr */
    PyObject *arr = PyArray_Empty(dims.len, dims.ptr, descr, 0);
    PyObject *back = PyDataMem_SetHandler(old);
    Py_DECREF(old);
    Py_XDECREF(back);
    PyDimMem_FREE(dims.ptr);
    if (arr && !back) Py_CLEAR(arr);
    return arr;
}

static PyObject *py_aligned_empty(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *shape;
    PyArray_Descr *descr = NULL;
    if (!PyArg_ParseTuple(args, "OO&", &shape, PyArray_DescrConverter, &descr)) return NULL;
    return empty_with(aligned_capsule, shape, descr);
}

static PyObject *py_empty(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *shape;
    PyArray_Descr *descr = NULL;
    if (!PyArg_ParseTuple(args, "OO&", &shape, PyArray_DescrConverter, &descr)) return NULL;
    last_reused = 0;
    PyObject *arr = empty_with(handler_capsule, shape, descr);
    if (!arr) return NULL;
    /* reused: whether the block was in memory already (then writes need no faults) */
    int reused = last_reused;
    return Py_BuildValue("(NO)", arr, reused ? Py_True : Py_False);
}

/* Release the oldest kept blocks until at most `keep` bytes are kept; with the lock
 * held on entry, released on return (the blocks are unmapped after it). */
static void release_over_unlock(size_t keep) {
    slot drop[SLOTS];
    int nd = 0;
    while (ncache > 0 && cached_bytes > keep) pop_oldest(&drop[nd++]);
    n_released += (unsigned long long)nd;
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < nd; i++) munmap(drop[i].base, drop[i].cap);
}

static PyObject *py_configure(PyObject *self, PyObject *args) {
    (void)self;
    long long mb;
    double after;
    if (!PyArg_ParseTuple(args, "Ld", &mb, &after)) return NULL;
    pthread_mutex_lock(&lock);
    if (mb >= 0) max_bytes = (size_t)mb;
    if (after >= 0) release_after = after;
    release_over_unlock(max_bytes);
    Py_RETURN_NONE;
}

static PyObject *py_clear(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    pthread_mutex_lock(&lock);
    release_over_unlock(0);
    Py_RETURN_NONE;
}

static PyObject *py_stats(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    pthread_mutex_lock(&lock);
    PyObject *d = Py_BuildValue(
        "{s:K,s:n,s:K,s:d,s:K,s:K,s:K}", "max_bytes", (unsigned long long)max_bytes,
        "blocks", (Py_ssize_t)ncache, "cached_bytes", (unsigned long long)cached_bytes,
        "release_after", release_after, "hits", n_hits, "misses", n_misses, "released",
        n_released);
    pthread_mutex_unlock(&lock);
    return d;
}

static PyMethodDef methods[] = {
    {"empty", py_empty, METH_VARARGS,
     "empty(shape, dtype) -> (array, reused): a C-contiguous array from the cache's "
     "handler; reused tells whether its memory was a kept block."},
    {"aligned_empty", py_aligned_empty, METH_VARARGS,
     "aligned_empty(shape, dtype) -> array: a C-contiguous array whose data are 64-byte "
     "aligned (NumPy's allocator aligns to 16)."},
    {"configure", py_configure, METH_VARARGS,
     "configure(max_bytes, release_after): a negative value leaves that setting."},
    {"clear", py_clear, METH_NOARGS, "clear(): release every kept block now."},
    {"stats", py_stats, METH_NOARGS, "stats() -> dict of the settings and counters."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_outcache", "Large output arrays that reuse freed memory.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__outcache(void) {
    import_array();
    static int once;
    if (!once) {
        init_wake();
        pthread_atfork(at_prepare, at_parent, at_child);
        handler_capsule = PyCapsule_New(&handler, "mem_handler", NULL);
        if (!handler_capsule) return NULL;
        aligned_capsule = PyCapsule_New(&aligned_handler, "mem_handler", NULL);
        if (!aligned_capsule) return NULL;
        once = 1;
    }
    return PyModule_Create(&moduledef);
}
