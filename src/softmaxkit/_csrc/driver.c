/*
 * The ISA-independent half of the C core: picks the engines for this CPU,
 * splits the work into rows and fixed-size row blocks, runs them on worker
 * threads, and combines block statistics in a fixed order, so that results
 * never depend on the number of threads.
 *
 * Per row (Blanchard, Higham & Higham 2021, blocked):
 *   phase A  for each block b: m_b = max, c_b = sum of exp(x - m_b) over the
 *            maximal entries, s_b = sum over the others (softmax, which needs
 *            only c + s, may take every term into s_b with c_b = 0; engines may
 *            keep exp(x - m_b) in a scratch for phase B);
 *   combine  M = max m_b, c = sum of c_b over blocks with m_b = M,
 *            s = the other s_b plus (c_b + s_b) exp(m_b - M), in block order;
 *            L = log1p((c - 1) + s), R = 1 / (c + s);
 *   phase B  softmax = exp(x - M) R (or stored values times R exp(m_b - M)),
 *            log_softmax = (x - M) - L, logsumexp = M + L,
 *            cross-entropy = L + (M - x_t).
 */
#define _GNU_SOURCE /* sched_getcpu, CPU_SET, pthread_setaffinity_np */
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "skit_internal.h"
#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* ---- instruction-set selection --------------------------------------------- */
static _Atomic(const skit_isa_table *) g_isa = NULL;

static const skit_isa_table *detect_isa(void) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
        return &skit_table_avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &skit_table_avx2;
#endif
    return &skit_table_base;
}

static const skit_isa_table *isa(void) {
    const skit_isa_table *t = atomic_load_explicit(&g_isa, memory_order_acquire);
    if (!t) {
        /* SOFTMAXKIT_ISA=sse2 (say) pins a lower instruction set, e.g. to test the
         * portable engines on a machine that has more */
        const char *env = getenv("SOFTMAXKIT_ISA");
        if (!env || !*env || skit_set_isa(env) != SKIT_OK) atomic_store(&g_isa, detect_isa());
        t = atomic_load_explicit(&g_isa, memory_order_acquire);
    }
    return t;
}

const char *skit_isa(void) { return isa()->name; }

int skit_set_isa(const char *name) {
    const skit_isa_table *cands[3] = {&skit_table_base, NULL, NULL};
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        cands[1] = &skit_table_avx2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
        cands[2] = &skit_table_avx512;
#endif
    if (strcmp(name, "auto") == 0) {
        atomic_store(&g_isa, detect_isa());
        return 0;
    }
    for (int i = 0; i < 3; i++) {
        if (cands[i] && strcmp(cands[i]->name, name) == 0) {
            atomic_store(&g_isa, cands[i]);
            return 0;
        }
    }
    return SKIT_EINVAL;
}

/* ---- a minimal fork-join parallel loop ------------------------------------- */
#define POOL_MAX 63 /* pool workers at most (the caller is one more thread) */
typedef void (*task_fn)(void *ctx, size_t i);

typedef struct {
    task_fn fn;
    void *ctx;
    size_t ntasks, grain;
    size_t scratch_bytes; /* per-thread scratch to allocate (0: none) */
    int nreg;             /* 0 (one thread), or the number of regions (see parallel_for) */
    atomic_int arrive;    /* threads other than the caller that entered pworker */
    pthread_t caller;     /* the thread that posted the job: it owns region 0 */
    atomic_size_t next;
    atomic_int failed;
    /* region k: tasks [front, back), packed as back << 32 | front; its owner takes
     * from the front, the others, once their own region is empty, from the back */
    _Atomic uint64_t reg[POOL_MAX + 1];
} pjob;

/* make this thread's non-temporal stores visible before it reports completion */
static inline void store_fence(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_sfence();
#else
    atomic_thread_fence(memory_order_seq_cst);
#endif
}

/* the calling thread's scratch buffer during a parallel_for (NULL if none) */
static _Thread_local void *tl_scratch = NULL;

/* Per-thread scratch, kept between calls (a fresh 512 KiB buffer per call would
 * cost its page faults every time) and freed when the thread exits. */
static pthread_key_t g_scratch_key;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;
typedef struct {
    void *buf;
    size_t bytes;
} scratch_slot;
static void scratch_free(void *p) {
    scratch_slot *s = (scratch_slot *)p;
    if (s) free(s->buf);
    free(s);
}
static void scratch_key_init(void) { (void)pthread_key_create(&g_scratch_key, scratch_free); }
static void *thread_scratch(size_t bytes) {
    (void)pthread_once(&g_scratch_once, scratch_key_init);
    scratch_slot *s = (scratch_slot *)pthread_getspecific(g_scratch_key);
    if (!s) {
        s = (scratch_slot *)calloc(1, sizeof *s);
        if (!s) return NULL;
        if (pthread_setspecific(g_scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->bytes < bytes) {
        size_t want = (bytes + 63) / 64 * 64;
        void *nb = aligned_alloc(64, want);
        if (!nb) return NULL;
        free(s->buf);
        s->buf = nb;
        s->bytes = want;
    }
    return s->buf;
}

/* The two-level mode's shared scratch: one buffer kept between calls (up to
 * SHARED_KEEP bytes; faulting in megabytes of fresh pages would cost more than
 * the exponentials it saves), taken by one call at a time; a concurrent call,
 * or a larger request, gets its own buffer for the call (*own = 1). */
#define SHARED_KEEP ((size_t)64 << 20)
static pthread_mutex_t g_shared_mu = PTHREAD_MUTEX_INITIALIZER;
static void *g_shared_buf = NULL;
static size_t g_shared_bytes = 0;
static void *shared_scratch(size_t bytes, int *own) {
    size_t want = (bytes + 63) / 64 * 64;
    *own = 1;
    if (want <= SHARED_KEEP && pthread_mutex_trylock(&g_shared_mu) == 0) {
        if (g_shared_bytes < want) {
            void *nb = aligned_alloc(64, want);
            if (!nb) {
                pthread_mutex_unlock(&g_shared_mu);
                return NULL;
            }
            free(g_shared_buf);
            g_shared_buf = nb;
            g_shared_bytes = want;
        }
        *own = 0;
        return g_shared_buf; /* held until shared_scratch_release */
    }
    return aligned_alloc(64, want);
}
static void shared_scratch_release(void *p, int own) {
    if (own) free(p);
    else pthread_mutex_unlock(&g_shared_mu);
}

/* Take up to `grain` tasks of region k, from its front (its owner) or its back
 * (another thread); 0 when it is empty. */
static int region_take(pjob *j, int k, int back, size_t *lo, size_t *hi) {
    uint64_t w = atomic_load_explicit(&j->reg[k], memory_order_relaxed), nw;
    size_t f, b;
    do {
        f = (size_t)(w & 0xffffffffu);
        b = (size_t)(w >> 32);
        if (f >= b) return 0;
        if (back) {
            *lo = b - f > j->grain ? b - j->grain : f;
            *hi = b;
            nw = (uint64_t)*lo << 32 | f;
        } else {
            *lo = f;
            *hi = b - f > j->grain ? f + j->grain : b;
            nw = (uint64_t)b << 32 | *hi;
        }
    } while (!atomic_compare_exchange_weak(&j->reg[k], &w, nw));
    return 1;
}

static void pworker(pjob *j) {
    void *saved = tl_scratch;
    void *buf = NULL;
    if (j->scratch_bytes) {
        buf = thread_scratch(j->scratch_bytes);
        if (!buf) {
            atomic_store(&j->failed, 1);
            return;
        }
    }
    tl_scratch = buf;
    if (j->nreg) {
        int me = pthread_equal(pthread_self(), j->caller) ? 0
                                                            : 1 + atomic_fetch_add(&j->arrive, 1);
        size_t i, end;
        if (me < j->nreg)
            while (region_take(j, me, 0, &i, &end))
                for (; i < end; i++) j->fn(j->ctx, i);
        for (int k = 1; k <= j->nreg; k++) {
            int u = (me + k) % j->nreg;
            while (region_take(j, u, 1, &i, &end))
                for (; i < end; i++) j->fn(j->ctx, i);
        }
        goto done;
    }
    for (;;) {
        size_t i = atomic_fetch_add(&j->next, j->grain);
        if (i >= j->ntasks) break;
        size_t end = i + j->grain < j->ntasks ? i + j->grain : j->ntasks;
        for (; i < end; i++) j->fn(j->ctx, i);
    }
done:
    store_fence();
    tl_scratch = saved;
}

static void pworker_void(void *p) { pworker((pjob *)p); }

static void *pworker_thread(void *p) {
    pworker((pjob *)p);
    return NULL;
}

/* ---- a persistent pool of worker threads --------------------------------------
 * Workers sleep on a condition variable between calls; a call wakes as many as it
 * needs and works along with them. One call uses the pool at a time: a concurrent
 * caller (another Python thread) starts its own threads instead, as every call
 * did before the pool. After fork() the child starts with an empty pool. */
#define POOL_SPIN 2000 /* the caller's pause loop (some microseconds) before it sleeps */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    pthread_mutex_t busy; /* held by the call using the pool */
    int size;             /* workers started */
    _Atomic uint64_t gen; /* bumped for every job */
    int want;             /* workers [0, want) take part in the current job */
    atomic_int active;    /* of those, how many have not finished */
    pjob *job;
    uint64_t born[POOL_MAX]; /* gen when each worker was started */
    pthread_t tid[POOL_MAX];
    /* the workers' affinity was last set (see place_workers) to placed_mask without
     * placed_cpu, for the first placed_n workers */
    int placed, placed_cpu, placed_n;
#if defined(__linux__)
    cpu_set_t placed_mask;
#endif
} g_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
            PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0, NULL, {0}};
static pthread_once_t g_pool_once = PTHREAD_ONCE_INIT;

/* ---- an OpenMP team borrowed from the host framework (skit_set_omp_parallel) -- */
typedef void (*omp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);
static _Atomic(omp_parallel_fn) g_omp = NULL;

static void pool_atfork_child(void) {
    atomic_store(&g_omp, NULL); /* the parent's OpenMP team is not in this process */
    pthread_mutex_init(&g_pool.mu, NULL);
    pthread_cond_init(&g_pool.work, NULL);
    pthread_cond_init(&g_pool.done, NULL);
    pthread_mutex_init(&g_pool.busy, NULL);
    g_pool.size = 0;
    g_pool.placed = 0;
    g_pool.want = 0;
    atomic_store(&g_pool.active, 0);
    g_pool.job = NULL;
    pthread_mutex_init(&g_shared_mu, NULL); /* a parent thread may have held it */
}
static void pool_init(void) { (void)pthread_atfork(NULL, NULL, pool_atfork_child); }

void skit_set_omp_parallel(omp_parallel_fn fn) {
    (void)pthread_once(&g_pool_once, pool_init); /* a fork() child must drop the team */
    atomic_store_explicit(&g_omp, fn, memory_order_release);
}

int skit_omp_parallel_active(void) {
    return atomic_load_explicit(&g_omp, memory_order_acquire) != NULL;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Workers sleep between jobs after a short watch (worker_spin; spinning longer would
 * take a core from other processes on a shared machine); waking a sleeping one costs
 * some tens of microseconds, which the driver's minimum work per thread
 * (MIN_ELEMS_PER_THREAD) pays for. */
static uint64_t mono_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* A worker done with a job watches for the next one for WORKER_SPIN_NS before it
 * sleeps: calls that follow each other (a loop over batches, a benchmark) then find
 * it awake instead of paying its wake-up. 256x1000 accurate softmax on 2 threads,
 * back to back from Python: 124 -> 92-98 us a call, 64x4000 113 -> 90 us. OpenMP
 * runtimes do the same for longer (libgomp spins some hundreds of microseconds,
 * Intel's 200 ms). */
#define WORKER_SPIN_NS 50000u
static void worker_spin(uint64_t seen) {
    uint64_t end = mono_ns() + WORKER_SPIN_NS;
    for (;;) {
        for (int k = 0; k < 32; k++) {
            if (atomic_load_explicit(&g_pool.gen, memory_order_relaxed) != seen) return;
            cpu_relax();
        }
        if (mono_ns() >= end) return;
    }
}

static void *pool_main(void *arg) {
    int me = (int)(intptr_t)arg;
    pthread_mutex_lock(&g_pool.mu);
    uint64_t seen = g_pool.born[me]; /* a job may have been posted since */
    for (;;) {
        if (atomic_load(&g_pool.gen) == seen) {
            pthread_mutex_unlock(&g_pool.mu);
            worker_spin(seen);
            pthread_mutex_lock(&g_pool.mu);
        }
        while (atomic_load(&g_pool.gen) == seen) pthread_cond_wait(&g_pool.work, &g_pool.mu);
        seen = atomic_load(&g_pool.gen);
        if (me >= g_pool.want) continue;
        pjob *j = g_pool.job;
        pthread_mutex_unlock(&g_pool.mu);
        pworker(j);
        pthread_mutex_lock(&g_pool.mu);
        if (atomic_fetch_sub(&g_pool.active, 1) == 1) pthread_cond_signal(&g_pool.done);
    }
    return NULL;
}

/* A worker woken after the machine has been idle a while is often placed on the CPU of
 * the thread that woke it (the scheduler's wake-affine choice), where the caller is
 * busy with its own share: the two then take turns on one CPU and the call runs at
 * one thread's speed (4096 x 1000 fast softmax on 2 threads, each call after a 50 ms
 * pause: 0.76 ns/elem, against 0.41 in a tight loop). So the workers may run on
 * every CPU the caller may use except the one it is on; set again only when the
 * caller has moved, its own affinity has changed, or there are new workers (one
 * sched_getaffinity a call otherwise). A caller allowed one CPU leaves them as
 * they are. */
static void place_workers(void) {
#if defined(__linux__)
    int cc = sched_getcpu();
    cpu_set_t mine;
    if (cc < 0 || sched_getaffinity(0, sizeof mine, &mine) != 0) return;
    if (g_pool.placed && g_pool.placed_cpu == cc && g_pool.placed_n == g_pool.size &&
        CPU_EQUAL(&mine, &g_pool.placed_mask))
        return;
    cpu_set_t other = mine;
    CPU_CLR(cc, &other);
    if (CPU_COUNT(&other) == 0) return;
    for (int k = 0; k < g_pool.size; k++)
        (void)pthread_setaffinity_np(g_pool.tid[k], sizeof other, &other);
    g_pool.placed = 1;
    g_pool.placed_cpu = cc;
    g_pool.placed_n = g_pool.size;
    g_pool.placed_mask = mine;
#endif
}

/* run j on the caller and `helpers` pool workers; 0 if the pool was busy */
static int pool_run(pjob *j, int helpers) {
    (void)pthread_once(&g_pool_once, pool_init);
    if (pthread_mutex_trylock(&g_pool.busy) != 0) return 0;
    pthread_mutex_lock(&g_pool.mu);
    while (g_pool.size < helpers) {
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        g_pool.born[g_pool.size] = atomic_load(&g_pool.gen);
        int rc = pthread_create(&t, &at, pool_main, (void *)(intptr_t)g_pool.size);
        pthread_attr_destroy(&at);
        if (rc != 0) break;
        g_pool.tid[g_pool.size++] = t;
    }
    if (helpers > g_pool.size) helpers = g_pool.size; /* fewer is fine */
    place_workers();
    g_pool.job = j;
    g_pool.want = helpers;
    atomic_store(&g_pool.active, helpers);
    atomic_fetch_add(&g_pool.gen, 1);
    pthread_cond_broadcast(&g_pool.work);
    pthread_mutex_unlock(&g_pool.mu);
    pworker(j);
    for (int k = 0; k < POOL_SPIN && atomic_load(&g_pool.active) > 0; k++) cpu_relax();
    pthread_mutex_lock(&g_pool.mu);
    while (atomic_load(&g_pool.active) > 0) pthread_cond_wait(&g_pool.done, &g_pool.mu);
    g_pool.job = NULL;
    pthread_mutex_unlock(&g_pool.mu);
    pthread_mutex_unlock(&g_pool.busy);
    return 1;
}

/* Tasks run in contiguous regions, one per thread: the caller owns the first, the
 * others the rest in the order they arrive. Each thread takes `grain` tasks at a time
 * from the front of its own region; once it is empty it takes from the back of
 * another's, so that the threads still finish together. Only which thread runs a
 * task changes: the results do not depend on it. Why regions rather than one shared
 * counter:
 * - Calls that follow each other keep their rows on the same core. With a shared
 *   counter, tasks went to whichever thread asked first, so a call's rows and output
 *   lines sat in the other core's L2 from the call before, and a thread's next rows
 *   were often the other's (session 17, 2 threads, float32 accurate, kbench medians
 *   in ns/elem: softmax 256x1000 0.28-0.29 -> 0.25, log_softmax 256x1000 0.33 ->
 *   0.30, 8x50257 softmax 0.34 -> 0.27-0.28, cross-entropy with its gradient
 *   256x1000 0.31 -> 0.27; on torch's OpenMP team, 256x1000 softmax 78 -> 66 us a
 *   call, against torch's 70). The caller owns region 0 so that which core a region
 *   runs on does not depend on the order in which threads arrive.
 * - Large fresh outputs fault in their own pages. A fresh NumPy output of 4 MiB or
 *   more is backed by 2 MiB transparent huge pages, and the first write to each
 *   faults it in: the kernel zeroes a whole huge page before it takes the page
 *   table's lock, so two threads that touch the same 2 MiB at about the same time
 *   each zero one, and one is thrown away. Handed out alternately, tasks of a few
 *   KiB, or even of 2 MiB, made the threads fault most huge pages together: a 512
 *   MiB softmax output on 2 threads freed 100,000-130,000 such 4 KiB pages during
 *   the call, and none on one thread. */

/* Run fn(ctx, i) for i in [0, ntasks) on up to `threads` threads (the caller
 * included), each with `scratch_bytes` of scratch in tl_scratch, in regions (above),
 * `grain` tasks at a time. Returns SKIT_ENOMEM if a scratch buffer could not be
 * allocated (tasks may then have run only in part). */
static int parallel_for(size_t ntasks, size_t grain, int threads, size_t scratch_bytes,
                        task_fn fn, void *ctx) {
    if (grain == 0) grain = 1;
    size_t chunks = (ntasks + grain - 1) / grain;
    if (threads > POOL_MAX + 1) threads = POOL_MAX + 1;
    if ((size_t)threads > chunks) threads = (int)chunks;
    pjob j;
    j.fn = fn;
    j.ctx = ctx;
    j.ntasks = ntasks;
    j.grain = grain;
    j.nreg = 0;
    atomic_init(&j.arrive, 0);
    j.caller = pthread_self();
    if (threads > 1 && ntasks < ((size_t)1 << 32)) {
        j.nreg = threads;
        for (int k = 0; k < threads; k++) {
            uint64_t lo = ntasks * (size_t)k / (size_t)threads;
            uint64_t hi = ntasks * (size_t)(k + 1) / (size_t)threads;
            atomic_init(&j.reg[k], hi << 32 | lo);
        }
    }
    j.scratch_bytes = scratch_bytes;
    atomic_init(&j.next, 0);
    atomic_init(&j.failed, 0);
    if (threads <= 1) {
        pworker(&j);
        return atomic_load(&j.failed) ? SKIT_ENOMEM : SKIT_OK;
    }
    omp_parallel_fn omp = atomic_load_explicit(&g_omp, memory_order_acquire);
    if (omp) {
        /* fork-join on the team: every member, the caller included, takes tasks
         * from the regions until none are left; returns when all are done */
        omp(pworker_void, &j, (unsigned)threads, 0);
        return atomic_load(&j.failed) ? SKIT_ENOMEM : SKIT_OK;
    }
    if (!pool_run(&j, threads - 1)) {
        pthread_t tid[POOL_MAX];
        int started = 0;
        for (int t = 1; t < threads; t++) {
            if (pthread_create(&tid[started], NULL, pworker_thread, &j) != 0) break;
            started++;
        }
        pworker(&j);
        for (int t = 0; t < started; t++) pthread_join(tid[t], NULL);
    }
    return atomic_load(&j.failed) ? SKIT_ENOMEM : SKIT_OK;
}

/* ---- the row engine -------------------------------------------------------- */
enum { OP_SOFTMAX = 0, OP_LOGSOFTMAX = 1, OP_LSE = 2, OP_CE = 3, OP_STATE = 4 };

#define MIN_ELEMS_PER_THREAD ((size_t)1 << 15)
/* Rows of up to STORE_NB blocks (131072 elements) keep their exponentials for
 * phase B instead of computing them twice; a block whose maximum is more than
 * STORE_REL_MIN below the row's is recomputed (its factor exp(m_b - M) R would
 * leave the range where the scratch's scaling is exact). The choice depends on
 * the data only, never on the thread count. */
#define STORE_NB 4
#define STORE_REL_MIN 64.0
/* Outputs the caller passed in (not fresh_out) from STREAM_BYTES on bypass the caches,
 * when their rows are long enough. Session 14, in-process A/B, 2 threads, float32
 * fast out=, ns/elem: 8 MiB was too low on a machine whose last-level cache holds
 * tens of MiB (4096x1000, 16 MB: 0.36-0.38 streamed, 0.33-0.34 not; 40000x100 staged
 * and streamed 0.52-0.53, 0.43 not; 1000000x10, 40 MB: 0.68-0.71 against 0.61-0.63),
 * while from 48 MB on rows of 1000 gain again (12000x1000 0.35 against 0.39-0.40,
 * 16384x1000 0.35-0.36 against 0.45-0.52). */
#define STREAM_BYTES ((size_t)32 << 20)
#define STREAM_ROW_BYTES ((size_t)4096)
/* fast mode gains from 2 KiB rows on (in-process A/B, 2 threads, float32 out=:
 * 8192x1000 softmax 0.68 -> 0.62 ns/elem, 16384x512 0.80 -> 0.71); the accurate
 * engines' half-vector stores do not (20000x300: 1.08 -> 1.32) */
#define STREAM_ROW_BYTES_FAST ((size_t)2048)

typedef struct {
    const skit_rows *a;
    const skit_engine *E;
    int op;
    void *out; /* softmax / log_softmax output, or the CE gradient (may be NULL) */
    double *lse, *loss;
    uint8_t *counted;
    const int64_t *target;
    const double *weight;
    int has_ignore;
    int64_t ignore;
    double z, gscale;
    size_t block, nb;
    int store;  /* rows of up to STORE_NB blocks keep their exponentials in scratch */
    char *xscr; /* two-level mode with store: one scratch slot per (row, block) */
    size_t pair_off; /* rows taken in pairs (row_pair_task): the odd row's scratch offset */
    int stream; /* non-temporal stores for the output */
    skit_bstat *bs; /* two-level mode: rows * nb block statistics */
    skit_rstat *rs; /* two-level mode: per-row statistics */
    skit_dd *fac;   /* two-level mode: per-row factor of phase B */
    double *st_m, *st_c, *st_shi, *st_slo; /* OP_STATE output / skit_state_apply input */
    size_t ld; /* elements from one row's start to the next (>= n; n unless strided) */
    /* skit_cross_entropy_states: the statistics of every block of the WHOLE row come
     * from the caller (rows x nb_all, global block order), x holds the blocks from
     * class v0 on, and the target logit of each row is ext_xt[r] */
    const double *ext_m, *ext_c, *ext_shi, *ext_slo, *ext_xt;
    size_t nb_all;
    int64_t v0;
    _Atomic int err;
} job;

static inline size_t blen(const job *j, size_t b) {
    size_t start = b * j->block;
    size_t rem = j->a->n - start;
    return rem < j->block ? rem : j->block;
}

static inline const char *xrow(const job *j, size_t r) {
    return (const char *)j->a->x + r * j->ld * j->E->elsize;
}
static inline char *orow(const job *j, size_t r) {
    return j->out ? (char *)j->out + r * j->a->n * j->E->elsize : NULL;
}
static inline const uint8_t *mrow(const job *j, size_t r) {
    return j->a->mask ? j->a->mask + r * j->a->n : NULL;
}

/* Scratch for block b of row r when exponentials are kept: a slot of
 * SCRATCH_SLOT bytes per block, in the thread's scratch (one row at a time) or,
 * in two-level mode, in the job's shared buffer (phases A and B of a block may
 * run on different threads). */
#define SCRATCH_SLOT (SKIT_SCRATCH_ELEMS * 16)
static inline void *blk_scratch(const job *j, size_t r, size_t b) {
    if (j->xscr) return j->xscr + (r * j->nb + b) * SCRATCH_SLOT;
    return (char *)tl_scratch + b * SCRATCH_SLOT + (r & 1) * j->pair_off;
}

/* phase A of block b of row r; next: NULL, or input the thread reads after it (its
 * lines are fetched as the block's are read) */
static void phase_a(const job *j, size_t r, size_t b, skit_bstat *st, const char *next) {
    size_t off = b * j->block;
    const uint8_t *m = mrow(j, r);
    const skit_engine *E = j->E;
    void (*f)(const void *, const uint8_t *, size_t, double, skit_bstat *, void *,
              const void *, const void *) = E->stats;
    if (j->op == OP_SOFTMAX && E->stats_sum) f = E->stats_sum;
    if (j->op == OP_LOGSOFTMAX && j->store) f = E->stats_keepx; /* set: see skit_softmax */
    /* the block's output lines, fetched for phase B while the statistics pass computes
     * (streamed outputs bypass the caches: none). float32 into an output passed in,
     * kbench medians, ns/elem: one thread, accurate softmax 4096x1000 0.607-0.619 ->
     * 0.547-0.573, 256x1000 0.494-0.500 -> 0.479-0.490; 2 threads, 4096x1000 accurate
     * softmax 0.312 -> 0.280-0.287, fast softmax 0.276-0.279 -> 0.239-0.245 */
    char *o = orow(j, r);
    const void *pf = o && j->op != OP_LSE && !j->stream ? o + off * E->elsize : NULL;
    f(xrow(j, r) + off * E->elsize, m ? m + off : NULL, blen(j, b), j->a->temperature, st,
      j->store ? blk_scratch(j, r, b) : NULL, pf, next);
}

static void combine(const job *j, const skit_bstat *bs, skit_rstat *rs, int need_L, int need_R) {
    const skit_engine *E = j->E;
    size_t nb = j->ext_m ? j->nb_all : j->nb; /* the whole row's blocks */
    int nan = 0;
    int64_t k = 0;
    double M = -INFINITY;
    for (size_t b = 0; b < nb; b++) {
        nan |= bs[b].nan;
        k += bs[b].kinf;
        if (bs[b].m > M) M = bs[b].m;
    }
    /* field by field: a memset of the struct compiles to `rep stos`, whose start-up
     * cost was an eighth of a short cross-entropy row's finish */
    rs->c = rs->s = rs->L = rs->R = dd_make(0.0, 0.0);
    rs->M = M;
    rs->k = k;
    rs->fin = 0;
    if (nan) {
        rs->kind = SKIT_ROW_NAN;
        return;
    }
    if (k) {
        rs->kind = SKIT_ROW_POSINF;
        return;
    }
    if (M == -INFINITY) {
        rs->kind = SKIT_ROW_EMPTY;
        return;
    }
    rs->kind = SKIT_ROW_FINITE;
    skit_dd c = dd_make(0.0, 0.0), s = dd_make(0.0, 0.0);
    for (size_t b = 0; b < nb; b++) {
        if (bs[b].m == M) {
            c = dd_add(c, bs[b].c);
            s = dd_add(s, bs[b].s);
        } else if (bs[b].m > -INFINITY) {
            skit_dd f = E->exp1(dd_two_sum(bs[b].m, -M));
            s = dd_add(s, dd_mul(dd_add(bs[b].c, bs[b].s), f));
        }
    }
    rs->c = c;
    rs->s = s;
    skit_dd D = dd_add(c, s);
    if (need_R) rs->R = dd_div(dd_make(1.0, 0.0), D);
    if (need_L) rs->L = E->log1p1(dd_add(dd_add(c, dd_make(-1.0, 0.0)), s));
}

/* w v for a loss term v of weight w, with 0 inf = 0: a term of weight zero adds nothing,
 * even where its loss is infinite (a -inf or masked target logit, or smoothing with
 * eps = 1); NaN stays NaN */
static inline double wmul(double w, double v) { return w == 0.0 && isinf(v) ? 0.0 : w * v; }

static int ce_ignored(const job *j, size_t r) {
    return j->has_ignore && j->target[r] == j->ignore;
}

/* Row-level scalar results and the phase-B factor of softmax-like outputs. */
static double x_at(const job *j, const char *x, size_t i);

/* float32 log_softmax, a row whose rest sum is tiny: the float32 engines lift entries
 * far below the maximum (-inf included) to a floor before exp, so with every other
 * entry -inf the rest comes out about 2^-185 instead of 0, and the maxima -0.0
 * instead of log 1 = +0. Such a row is looked at again: with no entry other than the
 * maxima above -inf, L is 0. */
static void tiny_rest_row(const job *j, size_t r, skit_rstat *rs) {
    const uint8_t *m = mrow(j, r);
    const char *x = xrow(j, r);
    double maxima = dd_value(rs->c), seen = 0.0;
    for (size_t i = 0; i < j->a->n && seen <= maxima; i++)
        seen += (!m || m[i]) && x_at(j, x, i) != -INFINITY;
    if (seen <= maxima) rs->L = dd_make(0.0, 0.0);
}

/* The everyday short cross-entropy row: float32 data, at most SKIT_SMALL_N classes
 * (an engine with the transposed kernel and ce_fin), no z-loss, T = 1, one block, a
 * finite maximum, counted, its target logit above -inf. Such a row is finished by
 * the engine's ce_fin (plain float64, vectorised over rows) on every path that
 * reaches it: the transposed kernel (one call per vector of rows), the row path of
 * the rows it flags, and the parts path (skit_cross_entropy_states); so they agree
 * bit for bit. The general finish below costs about 400 instructions a row
 * (double-word sums and quotients, scalar library calls), more than the transposed
 * kernel's whole work on a row of 10 classes (4096 x 10 with its gradient, one
 * thread: 412 -> 217 us). Longer rows keep it: finished one at a time, a row would
 * wait on ce_fin's vector latency, which costs more than the general finish (4096
 * x 1000: 3.6 -> 4.5 ms). fin_job holds the call's half of the test, fin_ok the
 * row's (*xt: the target logit). */
static int fin_job(const job *j) {
    return j->op == OP_CE && j->E->ce_fin && j->E->small_ce && j->a->n <= SKIT_SMALL_N &&
           j->z == 0.0 && j->a->temperature == 1.0 && (j->ext_m ? j->nb_all : j->nb) == 1;
}

static int fin_ok(const job *j, size_t r, const skit_bstat *bs, double *xt) {
    if (bs->nan || bs->kinf || !(bs->m > -INFINITY) || bs->c.lo != 0.0 || bs->s.lo != 0.0 ||
        ce_ignored(j, r))
        return 0;
    size_t t = (size_t)j->target[r];
    const uint8_t *m = mrow(j, r);
    if (m && !m[t]) return 0;
    double v = j->ext_xt ? j->ext_xt[r] : j->E->scaled(xrow(j, r), t, 1.0).hi;
    if (!(v > -INFINITY)) return 0;
    *xt = v;
    return 1;
}

/* Finish cnt <= SKIT_FIN_MAX rows that passed fin_ok (row[p], its statistics bs[p]
 * and target logit xt[p]) in one ce_fin call: their row statistics and per-row
 * results, and the gradient's factor of each in fac[p]. */
static void fin_rows(const job *j, size_t cnt, const size_t *row, const skit_bstat *const *bs,
                     skit_rstat *const *rs, const double *xt, double *fac) {
    double m[SKIT_FIN_MAX], c[SKIT_FIN_MAX], s[SKIT_FIN_MAX], sc[SKIT_FIN_MAX];
    double lse[SKIT_FIN_MAX], nll[SKIT_FIN_MAX], gt[SKIT_FIN_MAX];
    for (size_t p = 0; p < cnt; p++) {
        m[p] = bs[p]->m;
        c[p] = bs[p]->c.hi;
        s[p] = bs[p]->s.hi;
        sc[p] = (j->weight ? j->weight[row[p]] : 1.0) * j->gscale;
    }
    j->E->ce_fin(cnt, m, c, s, xt, sc, lse, nll, fac, gt);
    for (size_t p = 0; p < cnt; p++) {
        size_t r = row[p];
        skit_rstat *q = rs[p];
        q->kind = SKIT_ROW_FINITE;
        q->k = 0;
        q->M = bs[p]->m;
        q->c = bs[p]->c;
        q->s = bs[p]->s;
        q->L = q->R = dd_make(0.0, 0.0);
        q->fin = 1;
        q->gt = gt[p];
        if (j->lse) j->lse[r] = lse[p];
        j->loss[r] = wmul(j->weight ? j->weight[r] : 1.0, nll[p]);
        j->counted[r] = 1;
    }
}

/* Accurate logsumexp where M + L cancels: M < 0 and L = log1p((c - 1) + s) close to
 * -M, so that the result is small beside L (a row of log-probabilities, whose
 * logsumexp is about 0). Found by hypothesis: the row [-2.0682271, -0.13512552, -inf]
 * gave 1.5952395e-05 where the answer rounds to 1.5952392e-05 (2 ulp). The error of
 * L is absolute, not relative to the result:
 * - float32: the engines' float64 exponentials err by up to 2^-34 relative (AVX-512:
 *   2^-37), so L errs by up to about 2^-34 s / (c + s) <= 2^-34 min(L, 1) / log(2),
 *   under 2^-31 |lse| (2^-7 of a float32 ulp) while |lse| >= min(L, 1) / 4;
 * - float64: the double-word sums leave about 2^-63 min(L, 1) (measured on rows of
 *   log-probabilities), under 2^-60 |lse| while |lse| >= min(L, 1) / 8.
 * Rows below those limits are summed again here with skit_dd_exp_acc and
 * skit_dd_log1p_acc
 * (about 2^-105 and 2^-96 relative), and the result rounded once: float32 results
 * are then rounded once down to about 2^-65 min(L, 1); float64 ones err by about
 * 2^-96 min(L, 1), still more than an ulp below about 2^-43 (see
 * softmaxkit.logsumexp's notes). */
static int lse_cancels(const job *j, double lse, double M) {
    if (j->a->mode != SKIT_ACCURATE) return 0;
    double L = lse - M; /* >= 0 */
    double lim = L < 1.0 ? L : 1.0;
    return L > 0.0 && fabs(lse) < (j->a->dtype == SKIT_F32 ? 0.25 : 0.125) * lim;
}

static double lse_exact(const job *j, size_t r, double M) {
    const char *x = xrow(j, r);
    const uint8_t *mk = mrow(j, r);
    double c = 0.0;
    skit_dd s = dd_make(0.0, 0.0);
    for (size_t i = 0; i < j->a->n; i++) {
        if (mk && !mk[i]) continue;
        skit_dd v = j->E->scaled(x, i, j->a->temperature);
        if (v.hi == -INFINITY) continue;
        if (v.hi == M && v.lo == 0.0) {
            c += 1.0;
            continue;
        }
        s = dd_add(s, skit_dd_exp_acc(dd_sub(v, dd_make(M, 0.0))));
    }
    skit_dd L = skit_dd_log1p_acc(dd_add(dd_make(c - 1.0, 0.0), s));
    return dd_value(dd_add(dd_make(M, 0.0), L));
}

static skit_dd row_finish(const job *j, size_t r, const skit_bstat *bs, skit_rstat *rs) {
    double xt, f1;
    if (fin_job(j) && fin_ok(j, r, bs, &xt)) {
        fin_rows(j, 1, &r, &bs, &rs, &xt, &f1);
        return dd_make(f1, 0.0);
    }
    int need_L = j->op != OP_SOFTMAX && j->op != OP_STATE;
    int need_R = j->op == OP_SOFTMAX || (j->op == OP_CE && j->out);
    combine(j, bs, rs, need_L, need_R);
    if (j->op == OP_LOGSOFTMAX && j->a->dtype == SKIT_F32 && rs->kind == SKIT_ROW_FINITE &&
        rs->L.hi < 0x1p-120)
        tiny_rest_row(j, r, rs);
    skit_dd fac = rs->R;
    if (j->op == OP_STATE) {
        /* the mergeable state: NaN row -> m NaN; +inf row -> (+inf, k, 0); empty -> identity */
        double m = rs->M, c = 0.0, sh = 0.0, sl = 0.0;
        if (rs->kind == SKIT_ROW_NAN) {
            m = NAN;
        } else if (rs->kind == SKIT_ROW_POSINF) {
            m = INFINITY;
            c = (double)rs->k;
        } else if (rs->kind == SKIT_ROW_EMPTY) {
            m = -INFINITY;
        } else {
            skit_dd cs = dd_add(rs->c, dd_make(0.0, 0.0));
            c = cs.hi + cs.lo;
            sh = rs->s.hi;
            sl = rs->s.lo;
        }
        j->st_m[r] = m;
        j->st_c[r] = c;
        j->st_shi[r] = sh;
        j->st_slo[r] = sl;
    }
    if (j->op == OP_LSE || j->op == OP_CE) {
        double lse;
        switch (rs->kind) {
        case SKIT_ROW_NAN: lse = NAN; break;
        case SKIT_ROW_POSINF: lse = INFINITY; break;
        case SKIT_ROW_EMPTY: lse = -INFINITY; break;
        default:
            lse = dd_value(dd_add(dd_make(rs->M, 0.0), rs->L));
            if (j->op == OP_LSE && lse_cancels(j, lse, rs->M)) lse = lse_exact(j, r, rs->M);
        }
        if (j->lse) j->lse[r] = lse;
        if (j->op == OP_CE) {
            int counted = !ce_ignored(j, r) && rs->kind != SKIT_ROW_EMPTY;
            double w = j->weight ? j->weight[r] : 1.0;
            double loss = 0.0;
            if (counted) {
                size_t t = (size_t)j->target[r];
                const uint8_t *m = mrow(j, r);
                skit_dd xt = j->ext_xt ? dd_make(j->ext_xt[r], 0.0)
                                       : j->E->scaled(xrow(j, r), t, j->a->temperature);
                int valid = (!m || m[t]) && xt.hi != -INFINITY;
                double nll;
                if (rs->kind == SKIT_ROW_NAN) {
                    nll = NAN;
                } else if (rs->kind == SKIT_ROW_POSINF) {
                    nll = (valid && xt.hi == INFINITY) ? log((double)rs->k) : INFINITY;
                } else if (!valid) {
                    nll = INFINITY;
                } else {
                    /* x_t - M below -DBL_MAX: the loss overflows (the double-word
                     * difference would be NaN there, and so the loss) */
                    nll = xt.hi - rs->M == -INFINITY
                              ? INFINITY
                              : dd_value(dd_sub(rs->L, dd_sub(xt, dd_make(rs->M, 0.0))));
                }
                double core = j->z != 0.0 ? nll + j->z * lse * lse : nll;
                loss = wmul(w, core);
            }
            j->loss[r] = loss;
            j->counted[r] = (uint8_t)counted;
            if (j->out && rs->kind == SKIT_ROW_FINITE) {
                double g = j->z != 0.0 ? 1.0 + 2.0 * j->z * lse : 1.0;
                fac = dd_mul(fac, dd_make(w * j->gscale * g, 0.0));
            }
        }
    }
    return fac;
}

static void zero_fill(const job *j, size_t r, size_t off, size_t len) {
    memset(orow(j, r) + off * j->E->elsize, 0, len * j->E->elsize);
}

static void store_elem(const job *j, size_t r, size_t i, double v) {
    char *o = orow(j, r) + i * j->E->elsize;
    if (j->E->elsize == 4) {
        float f = (float)v;
        memcpy(o, &f, 4);
    } else {
        memcpy(o, &v, 8);
    }
}

/* Accurate rows scaled by T != 1 whose largest quotient is large. The engines
 * form each x_i / T on its own (float32 data: in float64, one rounding; float64
 * data: as a double-word q_i + l_i, whose low word is itself rounded) and
 * subtract the maximum M of the quotients. The rounding error of a quotient
 * grows with it: about |M| 2^-53 (float32 data) or |M| 2^-106 (float64), which
 * exp turns into a relative error of the result. From |M| = 2^20 (float32) or
 * 2^45 (float64) on it could pass the 1 % of an ulp that the bound leaves
 * (measured: 1.3 ulp at 4e8 in float32), and float64 shifts by M's high word
 * alone, which leaves exp(l_max) in the row: a NaN from about 2^62 on (and see
 * huge_quotient_row for dominant maxima in float64 log_softmax). Such a row is
 * computed here, element by element, from the exact differences
 * x_i - max x, each divided by T in double-word arithmetic. Only softmax and
 * log_softmax take a temperature. */
static double huge_limit(const job *j) { return j->a->dtype == SKIT_F64 ? 0x1p45 : 0x1p20; }

static int huge_quotients(const job *j) {
    return j->a->mode == SKIT_ACCURATE && j->a->temperature != 1.0 &&
           (j->op == OP_SOFTMAX || j->op == OP_LOGSOFTMAX);
}

static int huge_quotient_row(const job *j, const skit_rstat *rs) {
    if (!huge_quotients(j) || rs->kind != SKIT_ROW_FINITE) return 0;
    if (fabs(rs->M) >= huge_limit(j)) return 1;
    /* float64 log_softmax: the maximum keeps its quotient's low word l (|l| <= half
     * an ulp of M) and comes out as l - L with L = l + log1p(s); when log1p(s) is far
     * below l (a dominant maximum: log_softmax(x)_max = -4e-42, say) that difference
     * cancels, so such rows, recognised by |L| <= 2 ulp(M), take the exact path too */
    if (j->a->dtype == SKIT_F64 && j->op == OP_LOGSOFTMAX) {
        double a = fabs(rs->M);
        return fabs(rs->L.hi) <= 2.0 * (nextafter(a, INFINITY) - a);
    }
    return 0;
}

static double x_at(const job *j, const char *x, size_t i) {
    return j->a->dtype == SKIT_F64 ? ((const double *)x)[i] : (double)((const float *)x)[i];
}

/* (x_i - top) / T as a double-word number <= 0, -inf where it passes the largest
 * double (the double-word forms would be NaN there). A difference beyond the
 * largest double (x_i < 0 < top) is formed as x_i / T - top / T: with T > 1 it
 * can be finite, and two terms of opposite signs do not cancel. */
static skit_dd huge_d(double xi, double top, double T) {
    skit_dd t = dd_make(T, 0.0), d;
    if (xi - top == -INFINITY)
        d = dd_sub(dd_div(dd_make(xi, 0.0), t), dd_div(dd_make(top, 0.0), t));
    else
        d = dd_div(dd_two_sum(xi, -top), t);
    return isfinite(d.hi) && isfinite(d.lo) ? d : dd_make(-INFINITY, 0.0);
}

static void huge_row(const job *j, size_t r, skit_rstat *rs) {
    const skit_engine *E = j->E;
    size_t n = j->a->n;
    const uint8_t *m = mrow(j, r);
    const char *x = xrow(j, r);
    double T = j->a->temperature;
    /* T > 0 keeps the order, so the maximum is that of x; each x_i - top is exact
     * as a double-word sum, and its quotient by T is accurate to double-word,
     * where the difference of two rounded quotients would cancel */
    double top = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if ((!m || m[i]) && x_at(j, x, i) > top) top = x_at(j, x, i);
#define HUGE_IN(i) ((!m || m[i]) && x_at(j, x, i) != -INFINITY)
    /* the maxima (d = 0, exp 1 each) are counted apart from the rest sum R, as on every
     * other path: where one entry dominates, R is far below 1, and summed next to it R
     * kept only the 53 bits of the sum's low word, rounded once per term (float64,
     * T = 0.5, a maximum 60 above the rest: log_softmax there 3 ulp off its -4.8e-50) */
    skit_dd R = dd_make(0.0, 0.0);
    double c = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!HUGE_IN(i)) continue;
        skit_dd d = huge_d(x_at(j, x, i), top, T);
        if (d.hi == 0.0 && d.lo == 0.0)
            c += 1.0;
        else
            R = dd_add(R, E->exp1(d));
    }
    skit_dd S = dd_add(dd_make(c, 0.0), R); /* >= 1: a maximum contributes exactly 1 */
    skit_dd L = E->log1p1(dd_add(dd_make(c - 1.0, 0.0), R));
    for (size_t i = 0; i < n; i++) {
        double v = j->op == OP_LOGSOFTMAX ? -INFINITY : 0.0;
        if (HUGE_IN(i)) {
            skit_dd d = huge_d(x_at(j, x, i), top, T);
            if (d.hi == -INFINITY)
                ; /* exp 0, log -inf */
            else if (j->op == OP_LOGSOFTMAX)
                v = dd_value(dd_sub(d, L));
            else
                v = dd_value(dd_div(E->exp1(d), S));
        }
        store_elem(j, r, i, v);
    }
#undef HUGE_IN
    rs->kind = SKIT_ROW_DONE;
}

static void phase_b(const job *j, size_t r, size_t b, const skit_bstat *st, const skit_rstat *rs,
                    skit_dd fac) {
    const skit_engine *E = j->E;
    if (!j->out || j->op == OP_LSE || rs->kind == SKIT_ROW_DONE) return;
    size_t off = b * j->block, len = blen(j, b);
    const uint8_t *m = mrow(j, r);
    const char *x = xrow(j, r) + off * E->elsize;
    char *o = orow(j, r) + off * E->elsize;
    m = m ? m + off : NULL;
    double T = j->a->temperature;
    if (j->op == OP_CE && (ce_ignored(j, r) || rs->kind == SKIT_ROW_EMPTY)) {
        zero_fill(j, r, off, len);
        return;
    }
    if (rs->kind != SKIT_ROW_FINITE) {
        E->special(x, m, len, T, rs, j->op == OP_LOGSOFTMAX, o);
        if (j->op == OP_CE) {
            double w = j->weight ? j->weight[r] : 1.0;
            E->rescale(o, len, dd_make(w * j->gscale, 0.0));
        }
        return;
    }
    if (j->op == OP_LOGSOFTMAX) {
        /* the kept entries, where the block's own statistics came out finite */
        if (j->store && st && st->m > -INFINITY && !st->nan && !st->kinf)
            E->logsub_kept(blk_scratch(j, r, b), len, rs->M, rs->L, o, j->stream);
        else
            E->logsub(x, m, len, T, rs->M, rs->L, o, j->stream);
    } else if (j->store && (!st || st->m == rs->M)) {
        E->fromscratch(blk_scratch(j, r, b), len, fac, o, j->stream);
    } else if (j->store && st->m - rs->M >= -STORE_REL_MIN) {
        /* kept relative to the block's maximum: times exp(m_b - M), double-word */
        skit_dd rel = E->exp1(dd_sub(dd_make(st->m, 0.0), dd_make(rs->M, 0.0)));
        E->fromscratch(blk_scratch(j, r, b), len, dd_mul(fac, rel), o, j->stream);
    } else {
        E->expscale(x, m, len, T, rs->M, fac, o, j->stream);
    }
}

/* CE gradient at the target: w * scale * ((p_t - 1) + 2 z lse p_t), p_t - 1 = -(D - e_t)/D */
static void ce_fix_target(const job *j, size_t r, const skit_rstat *rs) {
    if (!j->out || ce_ignored(j, r) || rs->kind == SKIT_ROW_EMPTY || rs->kind == SKIT_ROW_NAN)
        return;
    size_t t = (size_t)j->target[r];
    if (j->ext_xt) { /* a part of the row: only the part holding the target fixes it */
        if (j->target[r] < j->v0 || j->target[r] - j->v0 >= (int64_t)j->a->n) return;
        t = (size_t)(j->target[r] - j->v0);
    }
    double w = j->weight ? j->weight[r] : 1.0;
    double sc = w * j->gscale;
    if (j->stream) store_fence(); /* the row was written with non-temporal stores */
    if (rs->fin) {
        store_elem(j, r, t, rs->gt);
        return;
    }
    const uint8_t *m = mrow(j, r);
    skit_dd xt = j->E->scaled(xrow(j, r), t, j->a->temperature);
    int valid = (!m || m[t]) && xt.hi != -INFINITY;
    if (rs->kind == SKIT_ROW_POSINF) {
        double pt = (valid && xt.hi == INFINITY) ? 1.0 / (double)rs->k : 0.0;
        store_elem(j, r, t, sc * (pt - 1.0));
        return;
    }
    double g;
    if (!valid) {
        g = -1.0;
    } else if (j->a->dtype == SKIT_F32 && j->z == 0.0) {
        /* float32 data: plain float64 is within a few 2^-53 of (D - e_t) / D, far
         * below a float32 ulp: c >= 1 counts the maxima, so where x_t < M the
         * difference s - e_t (which may cancel) only adds to an integer, and where
         * x_t = M, e_t = 1 and c - 1 is exact (256x10 with its gradient 31 -> 26 us) */
        double et = exp(xt.hi - rs->M);
        double D = (rs->c.hi + rs->s.hi) + (rs->c.lo + rs->s.lo);
        double num = xt.hi == rs->M ? ((rs->c.hi - 1.0) + rs->c.lo) + (rs->s.hi + rs->s.lo)
                                    : (rs->c.hi + rs->c.lo) + ((rs->s.hi - et) + rs->s.lo);
        g = -(num / D);
    } else {
        /* exp(x_t - M) is 0 where the difference is below -DBL_MAX (as a double-word
         * number it would be NaN) */
        skit_dd et = xt.hi - rs->M == -INFINITY ? dd_make(0.0, 0.0)
                                                : j->E->exp1(dd_sub(xt, dd_make(rs->M, 0.0)));
        skit_dd D = dd_add(rs->c, rs->s);
        skit_dd num = xt.hi == rs->M ? dd_add(dd_sub(rs->c, et), rs->s)
                                     : dd_add(rs->c, dd_sub(rs->s, et));
        g = -dd_value(dd_div(num, D));
        if (j->z != 0.0) {
            double lse = dd_value(dd_add(dd_make(rs->M, 0.0), rs->L));
            double pt = dd_value(dd_div(et, D));
            g += 2.0 * j->z * lse * pt;
        }
    }
    store_elem(j, r, t, sc * g);
}

/* a finished row's phase B and target fix */
static void row_out(job *j, size_t r, const skit_bstat *bs, skit_rstat *rs, skit_dd fac) {
    if (huge_quotient_row(j, rs)) huge_row(j, r, rs);
    for (size_t b = 0; b < j->nb; b++) phase_b(j, r, b, &bs[b], rs, fac);
    if (j->op == OP_CE) ce_fix_target(j, r, rs);
}

/* a row after its phase A: its finish, phase B and target fix */
static void row_rest(job *j, size_t r, const skit_bstat *bs) {
    skit_rstat rs;
    skit_dd fac = row_finish(j, r, bs, &rs);
    row_out(j, r, bs, &rs, fac);
}

/* single-level: one task is one whole row */
static void row_task(void *ctx, size_t r) {
    job *j = (job *)ctx;
    skit_bstat local[8];
    skit_bstat *bs = j->nb <= 8 ? local : (skit_bstat *)malloc(j->nb * sizeof(skit_bstat));
    if (!bs) {
        j->err = SKIT_ENOMEM;
        return;
    }
    for (size_t b = 0; b < j->nb; b++) phase_a(j, r, b, &bs[b], NULL);
    row_rest(j, r, bs);
    if (bs != local) free(bs);
}

/* Rows of up to PAIR_ROW_BYTES, two per task, in the order A(r) A(r+1) finish(r)
 * finish(r+1) B(r) B(r+1). Each pass of a row ends in a chain of dependent steps (the maximum's and
 * the sum's reductions, the finish's division) that the next pass of the same row
 * waits for; here the other row's independent work follows it instead, and the core
 * overlaps the two. One thread, float32 512x500, ns/elem: accurate softmax 0.68 ->
 * 0.61, log_softmax 0.74 -> 0.71, logsumexp 0.53 -> 0.50, cross-entropy with its
 * gradient 0.74 -> 0.69, fast softmax 0.58 -> 0.53; about even at 1000 elements, and
 * slower from 2000 (two rows' kept exponentials no longer fit the L1 cache: with the
 * gradient, 64x4000 0.55 -> 0.58). The two finishes come before either phase B, so
 * that their scalar chains (log1p, a division) overlap each other rather than each
 * holding up its row's phase B (session 18, kbench medians, ns/elem: log_softmax
 * 512x500 one thread 0.584 -> 0.555, 2 threads 0.293 -> 0.277; fast softmax 512x500
 * 0.43-0.44 -> 0.41). Each row's arithmetic is the one row_task does: the results
 * are the same bits. */
#define PAIR_ROW_BYTES ((size_t)4096)
/* a software prefetch of every cache line of [p, p + n) (never faults), into the L2
 * cache (prefetcht2), not L1: a burst of 40 or more prefetcht0 holds the L1's miss
 * buffers, and the loads of the arithmetic between the bursts wait behind them (session
 * 30, AMD Zen 4, kbench, 2 threads, streamed short rows, the builds alternated, best
 * ns/elem: float32 fast softmax 3000000x40 0.50-0.54 -> 0.38-0.40, fast log_softmax
 * 0.53-0.55 -> 0.40-0.42, accurate softmax 0.63-0.64 -> 0.53, accurate log_softmax
 * 0.71-0.72 -> 0.60-0.61, fast softmax 400000x100 0.56-0.57 -> 0.41, float64 fast
 * softmax 3000000x40 1.37 -> 1.06; prefetcht1 the same, prefetchnta as prefetcht0) */
static inline void prefetch_bytes(const void *p, size_t n) {
    for (size_t q = 0; q < n; q += 64) __builtin_prefetch((const char *)p + q, 0, 1);
}
static void row_pair_task(void *ctx, size_t t) {
    job *j = (job *)ctx;
    size_t r = 2 * t;
    if (r + 1 >= j->a->rows) {
        row_task(ctx, r);
        return;
    }
    skit_bstat b0, b1;
    /* the next pair's rows are fetched while this pair's statistics passes read theirs,
     * a line for each line read: the rows a thread takes next follow its own (one region
     * per thread), and the first pass over a row otherwise waits on its misses. Since
     * session 14 they were fetched all at once before each second pass (2 threads,
     * float32 out=, ns/elem: 8192x500 fast softmax 0.35-0.36 -> 0.32-0.33, 4096x1000
     * accurate log_softmax 0.43 -> 0.38-0.39); spread over the first passes instead,
     * they no longer hold up the loads of the pass that issues them (session 17, kbench,
     * 2 threads, medians: 4096x1000 accurate softmax 0.273 -> 0.239, log_softmax 0.300
     * -> 0.258, fast softmax 0.243 -> 0.197, accurate cross-entropy with its gradient
     * 0.310 -> 0.270, 8192x500 fast softmax 0.248 -> 0.234) */
    size_t rows = j->a->rows;
    phase_a(j, r, 0, &b0, r + 2 < rows ? xrow(j, r + 2) : NULL);
    phase_a(j, r + 1, 0, &b1, r + 3 < rows ? xrow(j, r + 3) : NULL);
    skit_rstat s0, s1;
    skit_dd f0 = row_finish(j, r, &b0, &s0);
    skit_dd f1 = row_finish(j, r + 1, &b1, &s1);
    row_out(j, r, &b0, &s0, f0);
    row_out(j, r + 1, &b1, &s1, f1);
}

/* Fast-mode cross-entropy rows of up to this many classes take the accurate
 * engine's transposed kernel, which is faster there than the fast engine's row
 * path (with the gradient, one thread: 4096 x 10 587 -> 206 us, 4096 x 100
 * 711 -> 536, 64 x 10 16.1 -> 7.6; about even from 160 to 256 classes). Fast mode
 * promises a bound, which the accurate results meet. */
#define FAST_CE_SMALL_N 160

/* short rows: a task is SMALL_ROWS rows through the engine's transposed kernel;
 * rows it flags (non-finite maximum) take the general path */
#define SMALL_ROWS 256
/* copy n bytes from src to dst: whole 64-byte lines of dst with non-temporal
 * stores (one 512-bit store per line where the engines in use are the AVX-512
 * ones, else four 128-bit stores), plain copies for the ragged ends (the caller
 * fences) */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_STREAM_LINES512 1
__attribute__((target("avx512f"))) static size_t stream_lines512(char *dst, const char *src,
                                                                 size_t k, size_t n) {
    for (; k + 64 <= n; k += 64)
        _mm512_stream_si512((__m512i *)(dst + k), _mm512_loadu_si512((const void *)(src + k)));
    return k;
}
#endif
static void stream_copy(char *dst, const char *src, size_t n) {
#if defined(__x86_64__)
    size_t head = (64 - ((uintptr_t)dst & 63)) & 63;
    if (head > n) head = n;
    memcpy(dst, src, head);
    size_t k = head;
#if defined(HAVE_STREAM_LINES512)
    if (isa() == &skit_table_avx512) k = stream_lines512(dst, src, k, n);
#endif
    for (; k + 64 <= n; k += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(src + k));
        __m128i b = _mm_loadu_si128((const __m128i *)(src + k + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(src + k + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(src + k + 48));
        _mm_stream_si128((__m128i *)(dst + k), a);
        _mm_stream_si128((__m128i *)(dst + k + 16), b);
        _mm_stream_si128((__m128i *)(dst + k + 32), c);
        _mm_stream_si128((__m128i *)(dst + k + 48), d);
    }
    memcpy(dst + k, src + k, n - k);
#else
    memcpy(dst, src, n);
#endif
}

/* a streamed short-row task with rows over STAGE_SPLIT_ROWB bytes calls its
 * engine on groups of STAGE_ROWS rows (one vector of rows), doubled until a group
 * holds STAGE_BYTES of input (see small_task) */
#define STAGE_ROWS 16
#define STAGE_BYTES 2560
#define STAGE_SPLIT_ROWB 64

static void small_task(void *ctx, size_t t) {
    job *j = (job *)ctx;
    size_t r0 = t * SMALL_ROWS;
    size_t cnt = j->a->rows - r0 < SMALL_ROWS ? j->a->rows - r0 : SMALL_ROWS;
    uint8_t special[SMALL_ROWS];
    if (j->op == OP_LSE)
        j->E->small(xrow(j, r0), cnt, j->a->n, j->a->temperature, 2, j->lse + r0, special);
    else if (j->stream && tl_scratch) {
        /* staged in this thread's scratch, then streamed out: the output's lines are
         * written whole and never read for ownership */
        size_t rowb = j->a->n * j->E->elsize;
        char *stage = (char *)tl_scratch;
        /* Rows longer than a cache line go a group at a time: each group's input is
         * prefetched two groups ahead and its output streamed out right after it, so
         * that the next loads and the drain of the write-combining buffers overlap the
         * arithmetic (3000000 x 40 float32 fast, 2 threads: 0.65 -> 0.56 ns/elem,
         * 400000 x 100 0.57 -> 0.54). Rows of a line or less are read well by the
         * hardware's prefetchers, and there the smaller calls cost more than they save:
         * the whole task is one call. Until session 30 that held up to two lines, when
         * the prefetches went into L1 (2000000 x 20: 0.53 -> 0.60 in groups then);
         * into L2 (prefetch_bytes), groups win there too (kbench, 2 threads, best
         * ns/elem: fast softmax 2000000 x 20 0.58-0.59 -> 0.44-0.46, accurate
         * 0.68 -> 0.65-0.67; rows of 10 floats the same either way).
         * Prefetches past the input's end are harmless (they never fault). */
        size_t grp = SMALL_ROWS;
        if (rowb > STAGE_SPLIT_ROWB)
            for (grp = STAGE_ROWS; grp * rowb < STAGE_BYTES && grp < SMALL_ROWS;) grp *= 2;
        for (size_t s0 = 0; s0 < cnt; s0 += grp) {
            size_t sc = cnt - s0 < grp ? cnt - s0 : grp;
            if (grp < SMALL_ROWS)
                prefetch_bytes((const void *)((uintptr_t)xrow(j, r0 + s0) + 2 * grp * rowb),
                               sc * rowb);
            j->E->small(xrow(j, r0 + s0), sc, j->a->n, j->a->temperature,
                        j->op == OP_LOGSOFTMAX, stage + s0 * rowb, special + s0);
            size_t i = s0;
            while (i < s0 + sc) {
                if (special[i]) {
                    i++;
                    continue;
                }
                size_t e = i + 1;
                while (e < s0 + sc && !special[e]) e++;
                stream_copy(orow(j, r0 + i), stage + i * rowb, (e - i) * rowb);
                i = e;
            }
        }
    } else
        j->E->small(xrow(j, r0), cnt, j->a->n, j->a->temperature, j->op == OP_LOGSOFTMAX,
                    orow(j, r0), special);
    if (huge_quotients(j)) { /* the transposed kernels do not see the row maximum */
        /* |max x / T| >= lim  <=>  some x >= lim T, or every x <= -lim T (branch-free,
         * so that the compiler vectorises it; NaN rows are flagged already) */
        double c = huge_limit(j) * j->a->temperature;
        int any = 1;
        if (j->a->dtype == SKIT_F32 && j->ld == j->a->n) {
            /* first the whole task at once: nothing near +-c, nothing to look at */
            const float *xf = (const float *)xrow(j, r0);
            float cf = (float)c;
            if ((double)cf > c) cf = nextafterf(cf, 0.0f); /* cf <= c: a superset */
            int near = 0;
            for (size_t k = 0; k < cnt * j->a->n; k++) near |= (xf[k] >= cf) | (xf[k] <= -cf);
            any = near;
        }
        for (size_t i = 0; i < cnt && any; i++) {
            if (special[i]) continue;
            const char *x = xrow(j, r0 + i);
            int hi = 0, lo = 1;
            if (j->a->dtype == SKIT_F32) {
                const float *xf = (const float *)x;
                for (size_t k = 0; k < j->a->n; k++) {
                    hi |= (double)xf[k] >= c;
                    lo &= (double)xf[k] <= -c;
                }
            } else {
                for (size_t k = 0; k < j->a->n; k++) {
                    hi |= x_at(j, x, k) >= c;
                    lo &= x_at(j, x, k) <= -c;
                }
            }
            special[i] = (uint8_t)(hi | lo);
        }
    }
    for (size_t i = 0; i < cnt; i++)
        if (special[i]) row_task(j, r0 + i);
    if (j->op == OP_LSE && j->a->mode == SKIT_ACCURATE && j->a->dtype == SKIT_F32)
        for (size_t i = 0; i < cnt; i++) {
            /* |lse| >= 1/4 never cancels (see lse_cancels): most rows stop here */
            double v = j->lse[r0 + i];
            if (special[i] || !(fabs(v) < 0.25)) continue;
            const char *x = xrow(j, r0 + i);
            double M = -INFINITY;
            for (size_t k = 0; k < j->a->n; k++) {
                double e = j->E->scaled(x, k, j->a->temperature).hi;
                M = e > M ? e : M;
            }
            if (lse_cancels(j, v, M)) j->lse[r0 + i] = lse_exact(j, r0 + i, M);
        }
}

/* short cross-entropy rows: a task is SMALL_ROWS rows through the engine's
 * transposed kernel, which forms each row's statistics exactly as phase A does;
 * the callback finishes the row as row_task would (loss, lse, the gradient's
 * factor), then the target entry is fixed. Flagged rows take the general path. */
typedef struct {
    job *j;
    size_t r0;
    skit_rstat rs[SMALL_ROWS];
} small_ce_ctx;

static void small_ce_rows(void *ctx, size_t i0, size_t cnt, const uint8_t *skip,
                          const double *m, const double *c, const double *s, double *f) {
    small_ce_ctx *k = (small_ce_ctx *)ctx;
    job *j = k->j;
    const int fin = fin_job(j);
    skit_bstat bs[SKIT_FIN_MAX];
    const skit_bstat *fbs[SKIT_FIN_MAX];
    skit_rstat *frs[SKIT_FIN_MAX];
    size_t lane[SKIT_FIN_MAX], row[SKIT_FIN_MAX], q = 0;
    double fx[SKIT_FIN_MAX], fac[SKIT_FIN_MAX];
    for (size_t l = 0; l < cnt; l++) {
        f[l] = 0.0;
        if (skip[l]) continue;
        size_t r = k->r0 + i0 + l;
        bs[l].m = m[l];
        bs[l].nan = 0;
        bs[l].kinf = 0;
        bs[l].c = dd_make(c[l], 0.0);
        bs[l].s = dd_make(s[l], 0.0);
        if (fin && fin_ok(j, r, &bs[l], &fx[q])) { /* finished below, all at once */
            lane[q] = l;
            row[q] = r;
            fbs[q] = &bs[l];
            frs[q] = &k->rs[i0 + l];
            q++;
            continue;
        }
        skit_dd fr = row_finish(j, r, &bs[l], &k->rs[i0 + l]);
        f[l] = ce_ignored(j, r) ? 0.0 : fr.hi; /* an ignored row's gradient is +0 */
    }
    if (!q) return;
    fin_rows(j, q, row, fbs, frs, fx, fac);
    for (size_t p = 0; p < q; p++) f[lane[p]] = fac[p];
}

static void small_ce_task(void *ctx, size_t t) {
    job *j = (job *)ctx;
    small_ce_ctx k;
    k.j = j;
    k.r0 = t * SMALL_ROWS;
    size_t cnt = j->a->rows - k.r0 < SMALL_ROWS ? j->a->rows - k.r0 : SMALL_ROWS;
    uint8_t special[SMALL_ROWS];
    j->E->small_ce(xrow(j, k.r0), cnt, j->a->n, small_ce_rows, &k, orow(j, k.r0), special);
    for (size_t i = 0; i < cnt; i++) {
        if (special[i]) row_task(j, k.r0 + i);
        else ce_fix_target(j, k.r0 + i, &k.rs[i]);
    }
}

/* two-level: tasks are (row, block) pairs */
static void block_a_task(void *ctx, size_t i) {
    job *j = (job *)ctx;
    phase_a(j, i / j->nb, i % j->nb, &j->bs[i], NULL);
}
static void block_b_task(void *ctx, size_t i) {
    job *j = (job *)ctx;
    size_t r = i / j->nb;
    phase_b(j, r, i % j->nb, &j->bs[i], &j->rs[r], j->fac[r]);
}

static int run(job *j) {
    const skit_rows *a = j->a;
    if (a->rows == 0 || a->n == 0) return SKIT_OK;
    if (a->threads < 1) return SKIT_EINVAL;
    j->block = SKIT_BLOCK_ELEMS;
    j->nb = (a->n + j->block - 1) / j->block;
    j->err = SKIT_OK;
    if (j->nb > STORE_NB) j->store = 0; /* longer rows recompute their exponentials */
    j->stream = j->out && !a->fresh_out && a->rows * a->n * j->E->elsize >= STREAM_BYTES &&
                a->n * j->E->elsize >=
                    (a->mode == SKIT_FAST ? STREAM_ROW_BYTES_FAST : STREAM_ROW_BYTES);
    size_t total = a->rows * a->n;
    int threads = a->threads;
    size_t cap = total / MIN_ELEMS_PER_THREAD;
    if ((size_t)threads > cap) threads = cap ? (int)cap : 1;
    /* Rows of several blocks: a row per task while every thread gets as many, or there
     * are enough of them for the last few to even out; otherwise blocks are the tasks
     * (two-level mode: phase A of all blocks, the rows' finish, phase B of all blocks).
     * The two-level mode pays a second parallel region and keeps the exponentials in a
     * shared buffer beyond the caches: accurate softmax on 2 threads, 4x50257 109 ->
     * 79 us and 6x50257 174-193 -> 122 us as a row per task. */
    size_t rows_ = a->rows, th_ = (size_t)threads;
    if (j->nb > 1 && threads > 1 && (rows_ < th_ || (rows_ < 4 * th_ && rows_ % th_ != 0))) {
        size_t ntask = a->rows * j->nb;
        j->bs = (skit_bstat *)malloc(ntask * sizeof(skit_bstat));
        j->rs = (skit_rstat *)malloc(a->rows * sizeof(skit_rstat));
        j->fac = (skit_dd *)malloc(a->rows * sizeof(skit_dd));
        if (!j->bs || !j->rs || !j->fac) {
            free(j->bs);
            free(j->rs);
            free(j->fac);
            return SKIT_ENOMEM;
        }
        int own = 0;
        if (j->store) {
            j->xscr = (char *)shared_scratch(ntask * SCRATCH_SLOT, &own);
            if (!j->xscr) {
                free(j->bs);
                free(j->rs);
                free(j->fac);
                return SKIT_ENOMEM;
            }
        }
        int st = parallel_for(ntask, 1, threads, 0, block_a_task, j);
        for (size_t r = 0; r < a->rows; r++) {
            j->fac[r] = row_finish(j, r, j->bs + r * j->nb, &j->rs[r]);
            if (huge_quotient_row(j, &j->rs[r])) huge_row(j, r, &j->rs[r]);
        }
        if (st == SKIT_OK && j->out && j->op != OP_LSE)
            st = parallel_for(ntask, 1, threads, 0, block_b_task, j);
        if (j->op == OP_CE)
            for (size_t r = 0; r < a->rows; r++) ce_fix_target(j, r, &j->rs[r]);
        if (j->xscr) shared_scratch_release(j->xscr, own);
        free(j->bs);
        free(j->rs);
        free(j->fac);
        return st;
    }
    size_t scratch = j->store ? j->nb * SCRATCH_SLOT : 0;
    const int short_ce = j->op == OP_CE && !a->mask && a->temperature == 1.0 &&
                         a->n <= SKIT_SMALL_N && j->ld == a->n && !j->ext_m;
    if (short_ce && a->mode == SKIT_FAST && !j->E->small_ce && a->n <= FAST_CE_SMALL_N &&
        isa()->eng[a->dtype][SKIT_ACCURATE]->small_ce)
        j->E = isa()->eng[a->dtype][SKIT_ACCURATE]; /* see FAST_CE_SMALL_N */
    if (short_ce && j->E->small_ce) {
        size_t ntask = (a->rows + SMALL_ROWS - 1) / SMALL_ROWS;
        int st = parallel_for(ntask, 1, threads, scratch, small_ce_task, j);
        return st ? st : j->err;
    }
    if (j->E->small && !a->mask && a->n <= SKIT_SMALL_N &&
        (j->op == OP_SOFTMAX || j->op == OP_LOGSOFTMAX || (j->op == OP_LSE && j->lse))) {
        size_t ntask = (a->rows + SMALL_ROWS - 1) / SMALL_ROWS;
        /* outputs larger than the caches: staged and streamed (see small_task) */
        j->stream = j->out && j->op != OP_LSE && !a->fresh_out &&
                    a->rows * a->n * j->E->elsize >= STREAM_BYTES;
        if (j->stream) scratch = SMALL_ROWS * a->n * j->E->elsize;
        int st = parallel_for(ntask, 1, threads, scratch, small_task, j);
        return st ? st : j->err;
    }
    /* rows per grab: about 64 KiB of input, so tiny rows do not thrash the region words */
    size_t rowbytes = a->n * j->E->elsize;
    size_t grain = rowbytes >= 65536 ? 1 : 65536 / rowbytes;
    if (rowbytes <= PAIR_ROW_BYTES && a->rows >= 2) {
        if (j->store) {
            j->pair_off = (a->n * j->E->scratch_per_elem + 4095) / 4096 * 4096 + 256;
            scratch += j->pair_off;
        }
        grain = grain >= 2 ? grain / 2 : 1;
        int st = parallel_for((a->rows + 1) / 2, grain, threads, scratch, row_pair_task, j);
        return st ? st : j->err;
    }
    int st = parallel_for(a->rows, grain, threads, scratch, row_task, j);
    return st ? st : j->err;
}

static int setup(job *j, const skit_rows *a) {
    memset(j, 0, sizeof *j);
    if (!a || (a->dtype != SKIT_F32 && a->dtype != SKIT_F64) ||
        (a->mode != SKIT_FAST && a->mode != SKIT_ACCURATE) || !(a->temperature > 0.0))
        return SKIT_EINVAL;
    j->a = a;
    j->E = isa()->eng[a->dtype][a->mode];
    j->ld = a->n;
    return SKIT_OK;
}

/* log_softmax rows of up to this many elements keep their widened entries (8 bytes
 * each) for the output pass where the engine has the functions (AVX-512 only, see
 * engines.c: E32A_KEEPX); longer rows read their floats again, which costs less than
 * the kept entries' traffic once they no longer fit the L1 cache (AVX-512 on an Intel
 * Xeon, one thread, float32, kbench, ns/elem, reading again -> keeping: 128x1000 0.553
 * -> 0.491, 64x2000 0.526 -> 0.473, 32x4000 0.502 -> 0.484, 16x8000 0.492 -> 0.502,
 * 4x50257 0.49-0.50 -> 0.52-0.54) */
#define KEEPX_N ((size_t)4096)

int skit_softmax(const skit_rows *a, void *out, int log) {
    job j;
    int st = setup(&j, a);
    if (st) return st;
    j.op = log ? OP_LOGSOFTMAX : OP_SOFTMAX;
    j.out = out;
    /* softmax keeps its exponentials for phase B; log_softmax, where the engine can, the
     * widened entries (E->stats_keepx, E->logsub_kept) of rows of up to KEEPX_N */
    j.store = !log || (j.E->stats_keepx && j.E->logsub_kept && a->n <= KEEPX_N);
    return run(&j);
}

int skit_logsumexp(const skit_rows *a, double *lse) {
    job j;
    int st = setup(&j, a);
    if (st) return st;
    j.op = OP_LSE;
    j.lse = lse;
    return run(&j);
}

int skit_state(const skit_rows *a, size_t ld, double *m, double *c, double *s_hi,
               double *s_lo) {
    job j;
    int st = setup(&j, a);
    if (st) return st;
    if (ld < a->n) return SKIT_EINVAL;
    j.ld = ld;
    j.op = OP_STATE;
    j.st_m = m;
    j.st_c = c;
    j.st_shi = s_hi;
    j.st_slo = s_lo;
    return run(&j);
}

/* phase B of one row from a state given by the caller (skit_state_apply) */
static void apply_row_task(void *ctx, size_t r) {
    job *j = (job *)ctx;
    skit_rstat rs;
    memset(&rs, 0, sizeof rs);
    double m = j->st_m[r];
    if (m != m) {
        rs.kind = SKIT_ROW_NAN;
    } else if (m == INFINITY) {
        rs.kind = SKIT_ROW_POSINF;
        rs.k = (int64_t)j->st_c[r];
        if (rs.k < 1) rs.k = 1;
    } else if (m == -INFINITY) {
        rs.kind = SKIT_ROW_EMPTY;
    } else {
        rs.kind = SKIT_ROW_FINITE;
        rs.M = m;
        rs.c = dd_make(j->st_c[r], 0.0);
        rs.s = dd_two_sum(j->st_shi[r], j->st_slo[r]);
        skit_dd D = dd_add(rs.c, rs.s);
        if (j->op == OP_SOFTMAX) rs.R = dd_div(dd_make(1.0, 0.0), D);
        else rs.L = j->E->log1p1(dd_add(dd_add(rs.c, dd_make(-1.0, 0.0)), rs.s));
    }
    for (size_t b = 0; b < j->nb; b++) phase_b(j, r, b, NULL, &rs, rs.R);
}

int skit_state_apply(const skit_rows *a, const double *m, const double *c, const double *s_hi,
                     const double *s_lo, int log, void *out) {
    job j;
    int st = setup(&j, a);
    if (st) return st;
    if (a->rows == 0 || a->n == 0) return SKIT_OK;
    if (a->threads < 1) return SKIT_EINVAL;
    j.op = log ? OP_LOGSOFTMAX : OP_SOFTMAX;
    j.out = out;
    j.st_m = (double *)m;
    j.st_c = (double *)c;
    j.st_shi = (double *)s_hi;
    j.st_slo = (double *)s_lo;
    j.block = SKIT_BLOCK_ELEMS;
    j.nb = (a->n + j.block - 1) / j.block;
    j.store = 0;
    j.err = SKIT_OK;
    j.stream = !a->fresh_out && a->rows * a->n * j.E->elsize >= STREAM_BYTES &&
               a->n * j.E->elsize >= STREAM_ROW_BYTES;
    size_t cap = a->rows * a->n / MIN_ELEMS_PER_THREAD;
    int threads = a->threads;
    if ((size_t)threads > cap) threads = cap ? (int)cap : 1;
    size_t rowbytes = a->n * j.E->elsize;
    size_t grain = rowbytes >= 65536 ? 1 : 65536 / rowbytes;
    st = parallel_for(a->rows, grain, threads, 0, apply_row_task, &j);
    if (j.stream) store_fence();
    return st ? st : j.err;
}

/* ---- cross-entropy of a row split into parts (vocab-parallel) ------------------
 * A part is a run of whole blocks of the row (block = SKIT_BLOCK_ELEMS elements,
 * counted from the row's start). skit_block_states gives the statistics of every
 * block of a part; skit_cross_entropy_states takes those of ALL the row's blocks
 * and finishes the row with the same combine, row_finish, phase_b and
 * ce_fix_target as skit_cross_entropy, so every part gets the loss, logsumexp
 * and (for its own elements) the gradient of the whole row bit for bit. */
static void bstat_task(void *ctx, size_t i) {
    job *j = (job *)ctx;
    skit_bstat st;
    phase_a(j, i / j->nb, i % j->nb, &st, NULL);
    double m = st.m, c = dd_value(st.c), sh = st.s.hi, sl = st.s.lo;
    if (st.nan) {
        m = NAN;
        c = sh = sl = 0.0;
    } else if (st.kinf) {
        m = INFINITY;
        c = (double)st.kinf;
        sh = sl = 0.0;
    }
    j->st_m[i] = m;
    j->st_c[i] = c;
    j->st_shi[i] = sh;
    j->st_slo[i] = sl;
}

size_t skit_block_elems(void) { return SKIT_BLOCK_ELEMS; }

int skit_block_states(const skit_rows *a, double *m, double *c, double *s_hi, double *s_lo) {
    job j;
    int st = setup(&j, a);
    if (st) return st;
    if (a->rows == 0 || a->n == 0) return SKIT_OK;
    if (a->threads < 1 || a->temperature != 1.0 || a->mask) return SKIT_EINVAL;
    j.op = OP_STATE;
    j.block = SKIT_BLOCK_ELEMS;
    j.nb = (a->n + j.block - 1) / j.block;
    j.st_m = m;
    j.st_c = c;
    j.st_shi = s_hi;
    j.st_slo = s_lo;
    size_t bl = a->n < j.block ? a->n : j.block;
    size_t grain = bl * j.E->elsize >= 65536 ? 1 : 65536 / (bl * j.E->elsize);
    int threads = a->threads;
    size_t cap = a->rows * a->n / MIN_ELEMS_PER_THREAD;
    if ((size_t)threads > cap) threads = cap ? (int)cap : 1;
    return parallel_for(a->rows * j.nb, grain, threads, 0, bstat_task, &j);
}

static void ext_row_task(void *ctx, size_t r) {
    job *j = (job *)ctx;
    size_t nb = j->nb_all;
    skit_bstat local[8];
    skit_bstat *bs = nb <= 8 ? local : (skit_bstat *)malloc(nb * sizeof(skit_bstat));
    if (!bs) {
        j->err = SKIT_ENOMEM;
        return;
    }
    for (size_t b = 0; b < nb; b++) {
        size_t k = r * nb + b;
        double m = j->ext_m[k];
        bs[b].m = m;
        bs[b].nan = 0;
        bs[b].kinf = 0;
        bs[b].c = dd_make(j->ext_c[k], 0.0);
        bs[b].s = dd_make(j->ext_shi[k], j->ext_slo[k]);
        if (m != m) {
            bs[b].m = -INFINITY;
            bs[b].nan = 1;
        } else if (m == INFINITY) {
            bs[b].kinf = (int64_t)j->ext_c[k];
        }
        if (bs[b].nan || bs[b].kinf) bs[b].c = bs[b].s = dd_make(0.0, 0.0);
    }
    if (j->store) { /* as skit_cross_entropy: rows of few blocks keep their exponentials */
        skit_bstat again;
        for (size_t b = 0; b < j->nb; b++) phase_a(j, r, b, &again, NULL);
    }
    skit_rstat rs;
    skit_dd fac = row_finish(j, r, bs, &rs);
    size_t g0 = nb > 1 ? (size_t)j->v0 / j->block : 0; /* the first local block's index */
    for (size_t b = 0; b < j->nb; b++) phase_b(j, r, b, &bs[g0 + b], &rs, fac);
    ce_fix_target(j, r, &rs);
    if (bs != local) free(bs);
}

int skit_cross_entropy_states(const skit_rows *a, int64_t v0, size_t nb_all, int whole_row,
                              const double *m, const double *c, const double *s_hi,
                              const double *s_lo, const double *xt, const int64_t *target,
                              const double *weight, int has_ignore, int64_t ignore_index,
                              double z_loss, double grad_scale, double *loss, double *lse,
                              uint8_t *counted, void *grad) {
    job j;
    int st = setup(&j, a);
    if (st) return st;
    if (a->threads < 1 || a->temperature != 1.0 || a->mask || v0 < 0 || nb_all < 1 ||
        (nb_all > 1 && v0 % (int64_t)SKIT_BLOCK_ELEMS != 0))
        return SKIT_EINVAL;
    if (a->rows == 0) return SKIT_OK;
    j.op = OP_CE;
    j.target = target;
    j.weight = weight;
    j.has_ignore = has_ignore;
    j.ignore = ignore_index;
    j.z = z_loss;
    j.gscale = grad_scale;
    j.loss = loss;
    j.lse = lse;
    j.counted = counted;
    j.out = a->n ? grad : NULL;
    j.block = SKIT_BLOCK_ELEMS;
    j.nb = (a->n + j.block - 1) / j.block;
    if (nb_all > 1 && (size_t)(v0 / (int64_t)j.block) + j.nb > nb_all) return SKIT_EINVAL;
    j.ext_m = m;
    j.ext_c = c;
    j.ext_shi = s_hi;
    j.ext_slo = s_lo;
    j.ext_xt = xt;
    j.nb_all = nb_all;
    j.v0 = v0;
    j.err = SKIT_OK;
    /* skit_cross_entropy keeps the exponentials of one-block rows for the gradient */
    j.store = j.out != NULL &&
              ((nb_all == 1 && whole_row && j.nb == 1) || (nb_all > 1 && nb_all <= STORE_NB));
    j.stream = 0;
    size_t work = a->rows * (a->n ? a->n : 1);
    int threads = a->threads;
    size_t cap = work / MIN_ELEMS_PER_THREAD;
    if ((size_t)threads > cap) threads = cap ? (int)cap : 1;
    size_t rowbytes = (a->n ? a->n : 1) * j.E->elsize;
    size_t grain = rowbytes >= 65536 ? 1 : 65536 / rowbytes;
    size_t scratch = j.store ? j.nb * SCRATCH_SLOT : 0;
    st = parallel_for(a->rows, grain, threads, scratch, ext_row_task, &j);
    return st ? st : j.err;
}

int skit_cross_entropy(const skit_rows *a, const int64_t *target, const double *weight,
                       int has_ignore, int64_t ignore_index, double z_loss, double grad_scale,
                       double *loss, double *lse, uint8_t *counted, void *grad) {
    job j;
    int st = setup(&j, a);
    if (st) return st;
    j.op = OP_CE;
    j.target = target;
    j.weight = weight;
    j.has_ignore = has_ignore;
    j.ignore = ignore_index;
    j.z = z_loss;
    j.gscale = grad_scale;
    j.loss = loss;
    j.lse = lse;
    j.counted = counted;
    j.out = grad;
    j.store = grad != NULL;
    return run(&j);
}

/* blocks of at most 128 summed with eight accumulators, halves at multiples of 8;
 * -0.0 as the start of short runs, so a sum of negative zeros stays -0.0 as in NumPy */
double skit_pairwise_sum(const double *a, size_t n) {
    if (n < 8) {
        double res = -0.0;
        for (size_t i = 0; i < n; i++) res += a[i];
        return res;
    }
    if (n <= 128) {
        double r[8];
        size_t i;
        for (int k = 0; k < 8; k++) r[k] = a[k];
        for (i = 8; i < n - (n % 8); i += 8)
            for (int k = 0; k < 8; k++) r[k] += a[i + k];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += a[i];
        return res;
    }
    size_t n2 = n / 2;
    n2 -= n2 % 8;
    return skit_pairwise_sum(a, n2) + skit_pairwise_sum(a + n2, n - n2);
}

double skit_pairwise_mean(const double *a, size_t n, double den) {
    double total = skit_pairwise_sum(a, n);
    if (isfinite(total) || !(den > 0.0)) return total / den;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i])) return total / den; /* an infinite or NaN item: its answer */
    double *s = (double *)malloc((n ? n : 1) * sizeof(double));
    if (!s) return total / den;
    for (size_t i = 0; i < n; i++) s[i] = ldexp(a[i], -64); /* exact for such items */
    double q = skit_pairwise_sum(s, n) / den;
    free(s);
    return ldexp(q, 64);
}

/* The first row whose target is neither a class in [0, n) nor the ignored index, or -1. */
static int64_t first_bad_target(const int64_t *target, size_t rows, size_t n, int has_ignore,
                                int64_t ignore_index) {
    for (size_t r = 0; r < rows; r++) {
        int64_t t = target[r];
        if ((t < 0 || (uint64_t)t >= n) && !(has_ignore && t == ignore_index)) return (int64_t)r;
    }
    return -1;
}

/* nll_loss of rows of n log-probabilities (x's type) as the array-agnostic path forms
 * it: item = -(x_t + 0.0) (its masked sum turns -0.0 into +0.0), +0.0 for ignored
 * rows. reduction 0: out[rows] in x's type; 1 (mean) / 2 (sum): out[0] in x's type,
 * the float64 items summed in NumPy's pairwise order, the mean divided by the count
 * of rows not ignored (0 when none), rounded once (to +-inf past the largest float). */
int skit_nll(int dtype, const void *x, const int64_t *target, size_t rows, size_t n,
             int has_ignore, int64_t ignore_index, int reduction, void *out, int64_t *bad_row) {
    if ((dtype != SKIT_F32 && dtype != SKIT_F64) || reduction < 0 || reduction > 2 || !n)
        return SKIT_EINVAL;
    has_ignore = has_ignore != 0;
    int64_t bad = first_bad_target(target, rows, n, has_ignore, ignore_index);
    if (bad >= 0) {
        if (bad_row) *bad_row = bad;
        return SKIT_ERANGE;
    }
    double local[512];
    double *item = reduction == 0 ? NULL : rows <= 512 ? local : (double *)malloc(rows * 8);
    if (reduction != 0 && !item) return SKIT_ENOMEM;
    size_t counted = 0;
    for (size_t r = 0; r < rows; r++) {
        int ign = has_ignore && target[r] == ignore_index;
        size_t k = r * n + (ign ? 0 : (size_t)target[r]);
        double v = dtype == SKIT_F32 ? (double)((const float *)x)[k] : ((const double *)x)[k];
        v = ign ? 0.0 : -(v + 0.0);
        counted += !ign;
        if (reduction == 0) {
            if (dtype == SKIT_F32) ((float *)out)[r] = (float)v; /* exact: a float's value */
            else ((double *)out)[r] = v;
        } else {
            item[r] = v;
        }
    }
    if (reduction == 0) return SKIT_OK;
    double total = reduction == 1 ? (counted ? skit_pairwise_mean(item, rows, (double)counted) : 0.0)
                                  : skit_pairwise_sum(item, rows);
    if (item != local) free(item);
    if (dtype == SKIT_F32) {
        const double big = 0x1.ffffffp+127; /* the largest float plus half its ulp */
        float f = fabs(total) >= big ? (total > 0 ? INFINITY : -INFINITY) : (float)total;
        *(float *)out = f;
    } else {
        *(double *)out = total;
    }
    return SKIT_OK;
}

int skit_cross_entropy_reduced(const skit_rows *a, const int64_t *target,
                               const double *class_weight, int has_ignore, int64_t ignore_index,
                               double z_loss, int reduction, double *loss, void *grad,
                               int64_t *bad_row) {
    if (!a || reduction < 0 || reduction > 2) return SKIT_EINVAL;
    size_t rows = a->rows, n = a->n;
    has_ignore = has_ignore != 0;
    int64_t bad = first_bad_target(target, rows, n, has_ignore, ignore_index);
    if (bad >= 0) {
        if (bad_row) *bad_row = bad;
        return SKIT_ERANGE;
    }
    /* one block: per-row weights, losses, logsumexps, counted flags */
    size_t extra = class_weight ? 2 : 1;
    double *buf = (double *)malloc((rows ? rows : 1) * (extra + 2) * sizeof(double) + rows + 1);
    if (!buf) return SKIT_ENOMEM;
    double *w_t = class_weight ? buf : NULL;
    double *rl = reduction == 0 ? loss : buf + (extra - 1) * rows;
    double *lse = buf + extra * rows;
    double *tmp = buf + (extra + 1) * rows; /* the counted rows' weights */
    uint8_t *counted = (uint8_t *)(buf + (extra + 2) * rows);
    double den_pred;
    if (w_t) {
        for (size_t r = 0; r < rows; r++)
            w_t[r] = (has_ignore && target[r] == ignore_index) ? 0.0 : class_weight[target[r]];
        den_pred = skit_pairwise_sum(w_t, rows);
    } else {
        size_t ign = 0;
        for (size_t r = 0; r < rows; r++) ign += has_ignore && target[r] == ignore_index;
        den_pred = (double)(rows - ign);
    }
    double scale = reduction == 1 ? (den_pred != 0.0 ? 1.0 / den_pred : 0.0) : 1.0;
    int st = skit_cross_entropy(a, target, w_t, has_ignore, ignore_index, z_loss, scale, rl, lse, counted,
                                grad);
    if (st) {
        free(buf);
        return st;
    }
    size_t n_counted = 0;
    for (size_t r = 0; r < rows; r++) n_counted += counted[r] != 0;
    double den;
    if (w_t && n_counted != rows) {
        size_t k = 0;
        for (size_t r = 0; r < rows; r++)
            if (counted[r]) tmp[k++] = w_t[r];
        den = skit_pairwise_sum(tmp, k);
    } else {
        den = w_t ? den_pred : (double)n_counted;
    }
    if (grad && reduction == 1 && den != den_pred) {
        /* rows with nothing to count (all -inf) changed the divisor: redo the gradient */
        double sc = den != 0.0 ? 1.0 / den : 0.0;
        st = skit_cross_entropy(a, target, w_t, has_ignore, ignore_index, z_loss, sc, rl, lse, counted,
                                grad);
        if (st) {
            free(buf);
            return st;
        }
    }
    if (reduction != 0) {
        if (reduction == 2) loss[0] = skit_pairwise_sum(rl, rows);
        else loss[0] = (n_counted > 0 && den != 0.0) ? skit_pairwise_mean(rl, rows, den) : 0.0;
    }
    free(buf);
    return SKIT_OK;
}

/* ---- elementwise sigmoid family and the VJPs --------------------------------- */
#define ELEM_CHUNK ((size_t)1 << 14)

typedef struct {
    const skit_engine *E;
    int kind;
    const char *x, *y;
    const double *w, *pw;
    size_t n;
    double scale;
    char *out, *grad;
    size_t out_size; /* bytes per output element */
    size_t y_size;   /* bytes per target */
} sigjob;

static void sig_task(void *ctx, size_t t) {
    sigjob *j = (sigjob *)ctx;
    size_t i = t * ELEM_CHUNK;
    size_t cnt = j->n - i < ELEM_CHUNK ? j->n - i : ELEM_CHUNK;
    size_t es = j->E->elsize;
    j->E->sigmoid(j->kind, j->x + i * es, j->y ? j->y + i * j->y_size : NULL, j->w ? j->w + i : NULL,
                  j->pw ? j->pw + i : NULL, cnt, j->scale, j->out + i * j->out_size,
                  j->grad ? j->grad + i * es : NULL);
}

int skit_sigmoid(int dtype, int mode, int kind, const void *x, const void *y, const double *w,
                 const double *pw, size_t n, double scale, void *out, void *grad, int threads) {
    if ((dtype != SKIT_F32 && dtype != SKIT_F64) || (mode != SKIT_FAST && mode != SKIT_ACCURATE) ||
        kind < 0 || kind > 5 || threads < 1)
        return SKIT_EINVAL;
    sigjob j;
    j.E = isa()->eng[dtype][mode];
    j.kind = kind;
    j.x = (const char *)x;
    j.y = (const char *)y;
    j.w = w;
    j.pw = pw;
    j.n = n;
    j.scale = scale;
    j.out = (char *)out;
    j.grad = (char *)grad;
    j.out_size = kind == 2 || kind == 3 ? sizeof(double) : j.E->elsize;
    j.y_size = kind == 3 || kind == 5 ? j.E->elsize : sizeof(double);
    size_t ntask = (n + ELEM_CHUNK - 1) / ELEM_CHUNK;
    size_t cap = n / MIN_ELEMS_PER_THREAD;
    if ((size_t)threads > cap) threads = cap ? (int)cap : 1;
    return parallel_for(ntask, 1, threads, 0, sig_task, &j);
}

/* ---- BCE with logits reduced in the core ---------------------------------------
 * The sum of the float64 per-element losses in NumPy's pairwise order (the bits of
 * np.sum over skit_sigmoid's kind-2 output) without storing them: the pairwise tree
 * is cut a few levels down into spans that the threads take, each span summed as
 * np.sum sums it, with its leaves of at most 128 losses formed in a stack buffer,
 * and the span sums joined along the same tree. */
typedef struct {
    size_t start, len;
} bce_span;

static void bce_split(size_t start, size_t n, int depth, bce_span *out, size_t *cnt) {
    if (depth == 0 || n <= 128) {
        out[*cnt].start = start;
        out[*cnt].len = n;
        (*cnt)++;
        return;
    }
    size_t n2 = n / 2;
    n2 -= n2 % 8;
    bce_split(start, n2, depth - 1, out, cnt);
    bce_split(start + n2, n - n2, depth - 1, out, cnt);
}

static double bce_join(size_t n, int depth, const double *part, size_t *k) {
    if (depth == 0 || n <= 128) return part[(*k)++];
    size_t n2 = n / 2;
    n2 -= n2 % 8;
    double a = bce_join(n2, depth - 1, part, k);
    return a + bce_join(n - n2, depth - 1, part, k);
}

typedef struct {
    sigjob s;
    const bce_span *spans;
    double *part;
} bcejob;

static double bce_pairwise(const bcejob *j, size_t start, size_t n) {
    if (n <= 128) {
        const sigjob *s = &j->s;
        size_t es = s->E->elsize;
        double buf[128];
        s->E->sigmoid(s->kind, s->x + start * es, s->y ? s->y + start * s->y_size : NULL,
                      s->w ? s->w + start : NULL, s->pw ? s->pw + start : NULL, n, s->scale, buf,
                      s->grad ? s->grad + start * es : NULL);
        return skit_pairwise_sum(buf, n);
    }
    size_t n2 = n / 2;
    n2 -= n2 % 8;
    double a = bce_pairwise(j, start, n2);
    return a + bce_pairwise(j, start + n2, n - n2);
}

static void bce_task(void *ctx, size_t t) {
    bcejob *j = (bcejob *)ctx;
    j->part[t] = bce_pairwise(j, j->spans[t].start, j->spans[t].len);
}

int skit_bce_reduced(int dtype, int mode, int kind, const void *x, const void *y, const double *w,
                     const double *pw, size_t n, double scale, double *total, void *grad,
                     int threads) {
    if ((dtype != SKIT_F32 && dtype != SKIT_F64) || (mode != SKIT_FAST && mode != SKIT_ACCURATE) ||
        (kind != 2 && kind != 3) || threads < 1 || !y || !total)
        return SKIT_EINVAL;
    bcejob j;
    j.s.E = isa()->eng[dtype][mode];
    j.s.kind = kind;
    j.s.x = (const char *)x;
    j.s.y = (const char *)y;
    j.s.w = w;
    j.s.pw = pw;
    j.s.n = n;
    j.s.scale = scale;
    j.s.out = NULL;
    j.s.grad = (char *)grad;
    j.s.out_size = sizeof(double);
    j.s.y_size = kind == 3 ? j.s.E->elsize : sizeof(double);
    /* 2^depth spans of about 16384 or more elements (the tree halves at multiples of 8) */
    int depth = 0;
    while (depth < 6 && (n >> (depth + 1)) >= 16384) depth++;
    bce_span spans[64];
    double part[64];
    size_t cnt = 0;
    bce_split(0, n, depth, spans, &cnt);
    j.spans = spans;
    j.part = part;
    size_t cap = n / MIN_ELEMS_PER_THREAD;
    if ((size_t)threads > cap) threads = cap ? (int)cap : 1;
    int st = parallel_for(cnt, 1, threads, 0, bce_task, &j);
    if (st) return st;
    size_t k = 0;
    *total = n ? bce_join(n, depth, part, &k) : 0.0;
    return SKIT_OK;
}

/* no branch per element: the compiler vectorises the two compares and the and */
#define SKIT_UNIT_LOOP(T)                                                                 \
    do {                                                                                  \
        const T *v = (const T *)y;                                                        \
        int ok = 1;                                                                       \
        for (size_t i = 0; i < n; i++) ok &= (v[i] >= (T)0) & (v[i] <= (T)1);             \
        return ok;                                                                        \
    } while (0)

int skit_in_unit_interval(int dtype, const void *y, size_t n) {
    if (dtype == SKIT_F32) SKIT_UNIT_LOOP(float);
    SKIT_UNIT_LOOP(double);
}
#undef SKIT_UNIT_LOOP

/* A row is one-hot when exactly one entry is nonzero and that entry is 1. Zeros (+0
 * and -0) are found 16 at a time by OR-ing the magnitudes' bits, a loop the compiler
 * vectorises; only a group holding a nonzero bit is looked at entry by entry. */
#define SKIT_ONE_HOT_ROW(T, U, MAG, ONE)                                                  \
    do {                                                                                  \
        const U *p = (const U *)x + r * n;                                                \
        int64_t at = -1;                                                                  \
        size_t i = 0;                                                                     \
        for (; i < n; i += 16) {                                                          \
            size_t len = n - i < 16 ? n - i : 16;                                         \
            U any = 0;                                                                    \
            for (size_t k = 0; k < len; k++) any |= p[i + k] & (MAG);                     \
            if (!any) continue;                                                           \
            for (size_t k = 0; k < len; k++) {                                            \
                if (!(p[i + k] & (MAG))) continue;                                        \
                if (at >= 0 || p[i + k] != (ONE)) return SKIT_ERANGE;                     \
                at = (int64_t)(i + k);                                                    \
            }                                                                             \
        }                                                                                 \
        if (at < 0) return SKIT_ERANGE;                                                   \
        index[r] = at;                                                                    \
    } while (0)

int skit_one_hot(int dtype, const void *x, size_t rows, size_t n, int64_t *index) {
    if ((dtype != SKIT_F32 && dtype != SKIT_F64) || (!x && rows && n) || (!index && rows))
        return SKIT_EINVAL;
    for (size_t r = 0; r < rows; r++) {
        if (dtype == SKIT_F32)
            SKIT_ONE_HOT_ROW(float, uint32_t, 0x7fffffffu, 0x3f800000u);
        else
            SKIT_ONE_HOT_ROW(double, uint64_t, 0x7fffffffffffffffull, 0x3ff0000000000000ull);
    }
    return SKIT_OK;
}
#undef SKIT_ONE_HOT_ROW

typedef struct {
    const skit_engine *E;
    int kind;
    const float *x;
    size_t rows, n, nb, grain;
    const double *w, *m, *f, *k;
    size_t w_ld; /* elements from one row's weights to the next (0: shared by the rows) */
    double *gap, *dsum;
    void *grad;
} smoothjob;

static void smooth_task(void *ctx, size_t t) {
    smoothjob *j = (smoothjob *)ctx;
    size_t r0 = t * j->grain;
    size_t r1 = j->rows - r0 < j->grain ? j->rows : r0 + j->grain;
    const int out64 = j->kind == 3 || j->kind == 5;
    const size_t es = out64 ? sizeof(double) : sizeof(float);
    for (size_t r = r0; r < r1; r++) {
        const float *xr = j->x + r * j->n;
        const double *wr = j->w ? j->w + r * j->w_ld : NULL;
        void *gr = j->kind ? (char *)j->grad + r * j->n * es : NULL;
        if (j->kind == 1 || j->kind == 3) {
            j->E->smooth(1, out64, xr, wr, j->n, j->m[r], j->f[r], j->k[r], NULL, NULL, NULL, gr);
        } else if (j->kind == 4 || j->kind == 5) {
            /* one block: the exponentials of the sum kept for the output, and the
             * factor formed as the caller forms it from kind 0's sum (row_scale);
             * the row's gap (kind 0's, bit for bit) from the same pass when asked */
            double *keep = (double *)tl_scratch, D = 0.0;
            j->E->smooth(0, 0, xr, wr, j->n, j->m[r], 0.0, 0.0, j->gap ? j->gap + r : NULL, &D,
                         keep, NULL);
            double R = D > 0.0 ? 1.0 / D : 0.0;
            double f = j->f[r] * R;
            j->E->smooth(2, out64, NULL, wr, j->n, 0.0, f, j->k[r], NULL, NULL, keep, gr);
        } else {
            for (size_t b = 0; b < j->nb; b++) {
                size_t c0 = b * SKIT_BLOCK_ELEMS;
                size_t len = j->n - c0 < SKIT_BLOCK_ELEMS ? j->n - c0 : SKIT_BLOCK_ELEMS;
                size_t at = r * j->nb + b;
                j->E->smooth(0, 0, xr + c0, wr ? wr + c0 : NULL, len, j->m[at], 0.0, 0.0,
                             j->gap + at, j->dsum ? j->dsum + at : NULL, NULL, NULL);
            }
        }
    }
}

int skit_smooth(int kind, const float *x, size_t rows, size_t n, const double *w,
                const double *m, const double *f, const double *k, double *gap, double *dsum,
                void *grad, int threads) {
    return skit_smooth_ld(kind, x, rows, n, w, 0, m, f, k, gap, dsum, grad, threads);
}

int skit_smooth_ld(int kind, const float *x, size_t rows, size_t n, const double *w, size_t w_ld,
                   const double *m, const double *f, const double *k, double *gap, double *dsum,
                   void *grad, int threads) {
    if (kind < 0 || kind > 5 || kind == 2 || threads < 1 || !x || !m) return SKIT_EINVAL;
    if (w_ld != 0 && (!w || w_ld < n)) return SKIT_EINVAL;
    if (kind == 0 ? !gap : (!f || !k || !grad)) return SKIT_EINVAL;
    if ((kind == 1 || kind == 3) && (gap || dsum)) return SKIT_EINVAL; /* nothing to sum */
    if (kind >= 4 && dsum) return SKIT_EINVAL;
    if (kind >= 4 && n > SKIT_BLOCK_ELEMS) return SKIT_EINVAL;
    if (rows == 0 || n == 0) return SKIT_OK;
    smoothjob j;
    j.E = isa()->eng[SKIT_F32][SKIT_ACCURATE];
    if (!j.E->smooth) j.E = skit_table_base.eng[SKIT_F32][SKIT_ACCURATE];
    j.kind = kind;
    j.x = x;
    j.rows = rows;
    j.n = n;
    j.nb = (n + SKIT_BLOCK_ELEMS - 1) / SKIT_BLOCK_ELEMS;
    j.w = w, j.m = m, j.f = f, j.k = k;
    j.w_ld = w_ld;
    j.gap = gap, j.dsum = dsum, j.grad = grad;
    size_t rowbytes = n * sizeof(float);
    j.grain = rowbytes >= 65536 ? 1 : 65536 / rowbytes;
    size_t cap = rows * n / MIN_ELEMS_PER_THREAD;
    if ((size_t)threads > cap) threads = cap ? (int)cap : 1;
    /* kinds 4 and 5 keep a row's exponentials: n rounded up to a vector, float64 */
    size_t scratch = kind >= 4 ? (n + 64) * sizeof(double) : 0;
    return parallel_for((rows + j.grain - 1) / j.grain, 1, threads, scratch, smooth_task, &j);
}

/* ---- probability targets: the gradient's cancelling rows in double-word -------- */

/* A double-word value rounded once to float32: hi rounded to odd against lo (the
 * neighbour towards lo where hi's last bit is even), then to nearest; 53 bits hold
 * float32's 24 with the two the second rounding needs. */
static inline float dd_to_f32(skit_dd a) {
    union {
        double d;
        uint64_t u;
    } b = {.d = a.hi};
    if (a.lo != 0.0 && a.hi != 0.0 && isfinite(a.hi) && !(b.u & 1))
        b.u += ((a.lo > 0.0) == (a.hi > 0.0)) ? 1 : (uint64_t)-1;
    return (float)b.d;
}

typedef struct {
    const skit_engine *E;
    const float *x;
    size_t rows, n, nb, grain;
    const void *q; /* rows x n targets, float32 or float64 (q64) */
    int q64;
    const double *w;
    const double *m, *c, *s_hi, *s_lo; /* the rows' state */
    double eps, z, scale;
    skit_dd sc, one_m_eps, ev;
    double *item;
    float *grad;
    uint8_t *fixed;
    atomic_int special; /* a row the caller takes elsewhere */
} probjob;

static inline double pj_q(const probjob *j, size_t r, size_t i) {
    return j->q64 ? ((const double *)j->q)[r * j->n + i] : (double)((const float *)j->q)[r * j->n + i];
}

/* u_j = w_j ((1 - eps) q_j + eps / n), double-word */
static inline skit_dd pj_u(const probjob *j, size_t r, size_t i) {
    skit_dd u = dd_mul(j->one_m_eps, dd_make(pj_q(j, r, i), 0.0));
    if (j->eps != 0.0) u = dd_add(u, j->ev);
    return j->w ? dd_mul(u, dd_make(j->w[i], 0.0)) : u;
}

/* |g_j| < 2^-16 scale u_j: an element whose float64 terms cancelled */
static inline int pj_flagged(const probjob *j, const double *u, const float *gr, size_t i) {
    return fabs((double)gr[i]) < 0x1p-16 * j->scale * u[i];
}

/* The flagged elements of row r formed again in double-word and rounded once: with
 * D = c + s (c maxima, s the rest of the exponentials), p_j = e_j / D, A = S + 2 z lse
 * and S = sum u_j,
 *   g_j = scale ((A - u_j) p_j - u_j (1 - p_j)),
 * whose products carry no cancellation of their own: 1 - p_j is (c - 1 + s) / D at a
 * maximum and 1 - p_j elsewhere (p_j < 1/2 there). The other elements keep float64's
 * value, good to a few 2^-53 of scale u_j, which is at most 2^-37 of theirs. Returns 1
 * when an element came out below 2^-28 of scale u_j: there ex = skit_dd_exp's 2^-65
 * in D and e_j could reach 2^-37 of g_j, and the caller mends the row again with
 * skit_dd_exp_acc (2^-105). */
static int pj_mend(const probjob *j, size_t r, double M, const double *u,
                   skit_dd (*ex)(skit_dd)) {
    const size_t n = j->n;
    const float *xr = j->x + r * n;
    float *gr = j->grad + r * n;
    double cnt = 0.0;
    skit_dd s = dd_make(0.0, 0.0), S = dd_make(0.0, 0.0);
    for (size_t i = 0; i < n; i++) {
        if ((double)xr[i] == M) cnt += 1.0;
        else s = dd_add(s, ex(dd_make((double)xr[i] - M, 0.0))); /* exact difference */
        S = dd_add(S, pj_u(j, r, i));
    }
    const skit_dd rest = dd_add(dd_make(cnt - 1.0, 0.0), s);
    const skit_dd D = dd_add(dd_make(cnt, 0.0), s);
    const skit_dd inv = dd_div(dd_make(1.0, 0.0), D);
    skit_dd A = S;
    if (j->z != 0.0) {
        skit_dd lse = dd_add(dd_make(M, 0.0), skit_dd_log1p_acc(rest));
        A = dd_add(S, dd_mul(dd_make(2.0 * j->z, 0.0), lse));
    }
    const skit_dd om_max = dd_mul(rest, inv);
    const double lim = 0x1p-28 * j->scale;
    int tiny = 0;
    for (size_t i = 0; i < n; i++) {
        if (!pj_flagged(j, u, gr, i)) continue;
        skit_dd ui = pj_u(j, r, i), p, om;
        if ((double)xr[i] == M) {
            p = inv;
            om = om_max;
        } else {
            p = dd_mul(ex(dd_make((double)xr[i] - M, 0.0)), inv);
            om = dd_sub(dd_make(1.0, 0.0), p);
        }
        skit_dd g = dd_mul(dd_sub(dd_mul(dd_sub(A, ui), p), dd_mul(ui, om)), j->sc);
        tiny |= fabs(g.hi) < lim * ui.hi;
        gr[i] = dd_to_f32(g);
    }
    return tiny;
}

static void prob_task(void *ctx, size_t t) {
    probjob *j = (probjob *)ctx;
    const skit_engine *E = j->E;
    const size_t n = j->n;
    size_t r0 = t * j->grain;
    size_t r1 = j->rows - r0 < j->grain ? j->rows : r0 + j->grain;
    double *u = (double *)tl_scratch;
    double *keep = u + n; /* one block with a gradient: its exponentials */
    const double a = 1.0 - j->eps, b = j->eps / (double)n;
    for (size_t r = r0; r < r1; r++) {
        const float *xr = j->x + r * n;
        int ok = 1;
        for (size_t i = 0; i < n; i++) {
            u[i] = pj_q(j, r, i);
            ok &= u[i] >= 0.0; /* NaN fails */
        }
        if (!ok) { /* the caller names the bad target */
            atomic_fetch_or(&j->special, 2);
            continue;
        }
        if (j->eps != 0.0)
            for (size_t i = 0; i < n; i++) u[i] = u[i] * a + b;
        if (j->w)
            for (size_t i = 0; i < n; i++) u[i] *= j->w[i];
        const double M = j->m[r];
        if (!isfinite(M)) { /* -inf only, +inf or NaN: the caller's other path */
            atomic_fetch_or(&j->special, 1);
            continue;
        }
        const double Su = skit_pairwise_sum(u, n);
        /* L from the row state, whatever else is asked: the same items with a gradient
         * and without (D below holds rest only to 2^-53 of D, the state to 2^-37 of
         * itself, which is what L needs where a dominant maximum holds the mass) */
        const double L = log1p((j->c[r] - 1.0) + j->s_hi[r] + j->s_lo[r]);
        double gap = 0.0, D = 0.0;
        if (j->grad && j->nb == 1) {
            E->smooth(0, 0, xr, u, n, M, 0.0, 0.0, &gap, &D, keep, NULL);
        } else {
            for (size_t c0 = 0; c0 < n; c0 += SKIT_BLOCK_ELEMS) {
                size_t len = n - c0 < SKIT_BLOCK_ELEMS ? n - c0 : SKIT_BLOCK_ELEMS;
                double g = 0.0, d = 0.0;
                E->smooth(0, 0, xr + c0, u + c0, len, M, 0.0, 0.0, &g, j->grad ? &d : NULL,
                          NULL, NULL);
                gap += g, D += d;
            }
        }
        const double lse = M + L;
        double item = L * Su + gap;
        if (j->z != 0.0) item += j->z * lse * lse;
        j->item[r] = item;
        if (!isfinite(item)) { /* 0 inf at a -inf logit and the like */
            atomic_fetch_or(&j->special, 1);
            continue;
        }
        if (!j->grad) continue;
        float *gr = j->grad + r * n;
        const double num = j->z != 0.0 ? Su + 2.0 * j->z * lse : Su;
        const double f = j->scale * num * (D > 0.0 ? 1.0 / D : 0.0);
        if (j->nb == 1) {
            E->smooth(2, 0, NULL, u, n, 0.0, f, j->scale, NULL, NULL, keep, gr);
        } else {
            for (size_t c0 = 0; c0 < n; c0 += SKIT_BLOCK_ELEMS) {
                size_t len = n - c0 < SKIT_BLOCK_ELEMS ? n - c0 : SKIT_BLOCK_ELEMS;
                E->smooth(1, 0, xr + c0, u + c0, len, M, f, j->scale, NULL, NULL, NULL, gr + c0);
            }
        }
        int bad = 0;
        for (size_t i = 0; i < n; i++) bad |= pj_flagged(j, u, gr, i);
        uint8_t how = 0;
        if (bad) {
            how = 1;
            /* the accurate pass mends what is still flagged: the elements the first left
             * below 2^-16 (its tiny ones among them); those it lifted above were good to
             * about 2^-49 of their value */
            if (pj_mend(j, r, M, u, skit_dd_exp)) {
                pj_mend(j, r, M, u, skit_dd_exp_acc);
                how = 2;
            }
        }
        if (j->fixed) j->fixed[r] = how;
    }
}

int skit_prob_ce(const float *x, size_t rows, size_t n, const void *q, int q64, const double *w,
                 double eps, double z, int reduction, const double *m, const double *c,
                 const double *s_hi, const double *s_lo, double *loss, float *grad,
                 uint8_t *fixed, int *special, int threads) {
    if (threads < 1 || !x || !q || !m || !c || !s_hi || !s_lo || !loss || !special)
        return SKIT_EINVAL;
    if (reduction < 0 || reduction > 2) return SKIT_EINVAL;
    *special = 0;
    if (rows == 0 || n == 0) return SKIT_EINVAL;
    probjob j;
    j.E = isa()->eng[SKIT_F32][SKIT_ACCURATE];
    if (!j.E->smooth) j.E = skit_table_base.eng[SKIT_F32][SKIT_ACCURATE];
    j.x = x, j.rows = rows, j.n = n, j.q = q, j.q64 = q64 != 0, j.w = w;
    j.m = m, j.c = c, j.s_hi = s_hi, j.s_lo = s_lo;
    j.nb = (n + SKIT_BLOCK_ELEMS - 1) / SKIT_BLOCK_ELEMS;
    j.eps = eps, j.z = z;
    const double den = reduction == 1 ? (double)rows : 1.0;
    j.sc = dd_div(dd_make(1.0, 0.0), dd_make(den, 0.0));
    j.scale = j.sc.hi;
    j.one_m_eps = dd_two_sum(1.0, -eps);
    j.ev = dd_div(dd_make(eps, 0.0), dd_make((double)n, 0.0));
    double *items = loss;
    if (reduction != 0) {
        items = (double *)malloc(rows * sizeof(double));
        if (!items) return SKIT_ENOMEM;
    }
    j.item = items, j.grad = grad, j.fixed = fixed;
    atomic_init(&j.special, 0);
    size_t rowbytes = n * sizeof(float);
    j.grain = rowbytes >= 65536 ? 1 : 65536 / rowbytes;
    size_t cap = rows * n / MIN_ELEMS_PER_THREAD;
    if ((size_t)threads > cap) threads = cap ? (int)cap : 1;
    size_t scratch = (n + (grad && j.nb == 1 ? n + 64 : 0)) * sizeof(double);
    int st = parallel_for((rows + j.grain - 1) / j.grain, 1, threads, scratch, prob_task, &j);
    *special = atomic_load(&j.special);
    if (st == SKIT_OK && !*special && reduction != 0)
        loss[0] = reduction == 1 ? skit_pairwise_mean(items, rows, den)
                                 : skit_pairwise_sum(items, rows);
    if (reduction != 0) free(items);
    return st;
}

/* ---- probability targets in fast mode ------------------------------------------ */

typedef struct {
    const skit_engine *E;
    const float *x;
    size_t rows, n, grain;
    const void *q;
    int q64;
    const float *w; /* float32 copy of the class weights, or NULL */
    float a, b;     /* u_j = w_j (a q_j + b) */
    double z, scale;
    double *item;
    float *grad;
    atomic_int special;
} fastprobjob;

static void fast_prob_task(void *ctx, size_t t) {
    fastprobjob *j = (fastprobjob *)ctx;
    const size_t n = j->n;
    size_t r0 = t * j->grain;
    size_t r1 = j->rows - r0 < j->grain ? j->rows : r0 + j->grain;
    const size_t qsz = j->q64 ? sizeof(double) : sizeof(float);
    for (size_t r = r0; r < r1; r++) {
        const float *xr = j->x + r * n;
        const void *qr = (const char *)j->q + r * n * qsz;
        float *gr = j->grad ? j->grad + r * n : NULL;
        double st[5];
        int bits = j->E->prob_fast(0, xr, qr, j->q64, j->w, n, j->a, j->b, 0.0f, 0.0f, st, gr);
        if (bits) {
            atomic_fetch_or(&j->special, bits & 2 ? 2 : 1);
            continue;
        }
        const double M = st[0], c = st[1], s = st[2], Su = st[3];
        const double L = log1p((c - 1.0) + s), lse = M + L;
        double item = L * Su + st[4];
        if (j->z != 0.0) item += j->z * lse * lse;
        j->item[r] = item;
        if (!isfinite(item)) { /* target mass on a -inf logit and the like */
            atomic_fetch_or(&j->special, 1);
            continue;
        }
        if (!gr) continue;
        const double A = j->z != 0.0 ? Su + 2.0 * j->z * lse : Su;
        const double f = j->scale * A / (c + s) * 0x1p-64; /* the kept e carry 2^64 */
        j->E->prob_fast(1, xr, qr, j->q64, j->w, n, j->a, j->b, (float)f, (float)j->scale, NULL,
                        gr);
    }
}

int skit_prob_ce_fast(const float *x, size_t rows, size_t n, const void *q, int q64,
                      const double *w, double eps, double z, int reduction, double *loss,
                      float *grad, int *special, int threads) {
    if (threads < 1 || !x || !q || !loss || !special) return SKIT_EINVAL;
    if (reduction < 0 || reduction > 2) return SKIT_EINVAL;
    *special = 0;
    if (rows == 0 || n == 0) return SKIT_EINVAL;
    fastprobjob j;
    j.E = isa()->eng[SKIT_F32][SKIT_FAST];
    if (!j.E->prob_fast) j.E = skit_table_base.eng[SKIT_F32][SKIT_FAST];
    j.x = x, j.rows = rows, j.n = n, j.q = q, j.q64 = q64 != 0;
    j.a = (float)(1.0 - eps), j.b = (float)(eps / (double)n);
    j.z = z;
    const double den = reduction == 1 ? (double)rows : 1.0;
    j.scale = 1.0 / den;
    float *w32 = NULL;
    double *items = loss;
    if (w) {
        w32 = (float *)malloc(n * sizeof(float));
        if (!w32) return SKIT_ENOMEM;
        for (size_t i = 0; i < n; i++) w32[i] = (float)w[i];
    }
    if (reduction != 0) {
        items = (double *)malloc(rows * sizeof(double));
        if (!items) {
            free(w32);
            return SKIT_ENOMEM;
        }
    }
    j.w = w32, j.item = items, j.grad = grad;
    atomic_init(&j.special, 0);
    size_t rowbytes = n * sizeof(float);
    j.grain = rowbytes >= 65536 ? 1 : 65536 / rowbytes;
    size_t cap = rows * n / MIN_ELEMS_PER_THREAD;
    if ((size_t)threads > cap) threads = cap ? (int)cap : 1;
    int st = parallel_for((rows + j.grain - 1) / j.grain, 1, threads, 0, fast_prob_task, &j);
    *special = atomic_load(&j.special);
    if (st == SKIT_OK && !*special && reduction != 0)
        loss[0] = reduction == 1 ? skit_pairwise_mean(items, rows, den)
                                 : skit_pairwise_sum(items, rows);
    if (reduction != 0) free(items);
    free(w32);
    return st;
}

/* ---- label smoothing: whole rows of one block, finished in C ------------------ */

/* skit_smooth_rows on arguments already checked */
static int smooth_rows(const float *x, size_t rows, size_t n, const int64_t *target,
                       const double *w, int has_ignore, int64_t ignore_index, const double *shift,
                       const double *nll, const double *lse, const uint8_t *counted, double eps,
                       double z, int reduction, double *gap, double *loss, void *grad, int grad64,
                       int threads) {
    /* w_t, the items (in loss for reduction 0), and for the gradient f, k, g_t */
    size_t per = grad ? 5 : 2;
    double *buf = (double *)malloc((rows ? rows : 1) * per * sizeof(double));
    if (!buf) return SKIT_ENOMEM;
    double *w_t = buf, *items = reduction == 0 ? loss : buf + rows;
    for (size_t r = 0; r < rows; r++) {
        int ign = has_ignore && target[r] == ignore_index;
        w_t[r] = counted[r] ? (w ? w[ign ? 0 : target[r]] : 1.0) : 0.0;
    }
    const double den = rows ? skit_pairwise_sum(w_t, rows) : 0.0; /* NumPy: a sum of nothing is +0 */
    const double scale = reduction == 1 ? (den != 0.0 ? 1.0 / den : 0.0) : 1.0;
    const double V = (double)n, ev = eps / V;
    const double W = w ? skit_pairwise_sum(w, n) : V; /* the block's weight sum: the row's */
    if (grad && rows) {
        double *f = buf + 2 * rows, *k = buf + 3 * rows, *gt = buf + 4 * rows;
        for (size_t r = 0; r < rows; r++) {
            int live = counted[r] != 0;
            int ign = has_ignore && target[r] == ignore_index;
            double lse_s = live ? lse[r] : 0.0;
            double a = w_t[r] * ((1.0 - eps) + 2.0 * z * lse_s) + ev * W;
            f[r] = live ? a * scale : 0.0;
            k[r] = live ? ev * scale : 0.0;
            /* 1 - p_t from the unsmoothed loss, without cancellation */
            double p_t = exp(-nll[r]), one_minus = -expm1(-nll[r]);
            double wt_c = w ? (ign ? 0.0 : w[target[r]]) : w_t[r];
            double g = w_t[r] * (-(1.0 - eps) * one_minus + 2.0 * z * lse_s * p_t);
            g = (g + ev * (W * p_t - wt_c)) * scale;
            gt[r] = live ? g : 0.0;
        }
        int st = skit_smooth(grad64 ? 5 : 4, x, rows, n, w, shift, f, k, gap, NULL, grad, threads);
        if (st) {
            free(buf);
            return st;
        }
        for (size_t r = 0; r < rows; r++) {
            if (has_ignore && target[r] == ignore_index) continue;
            size_t at = r * n + (size_t)target[r];
            if (grad64) ((double *)grad)[at] = gt[r];
            else ((float *)grad)[at] = (float)gt[r]; /* rounded once */
        }
    }
    for (size_t r = 0; r < rows; r++) {
        double smooth = 0.0 + (gap[r] + W * (lse[r] - shift[r]));
        double item = wmul(w_t[r], wmul(1.0 - eps, nll[r]) + z * lse[r] * lse[r]) + ev * smooth;
        items[r] = counted[r] ? item : 0.0;
    }
    if (reduction != 0) {
        if (reduction == 2) loss[0] = rows ? skit_pairwise_sum(items, rows) : 0.0;
        else loss[0] = den != 0.0 ? skit_pairwise_mean(items, rows, den) : 0.0;
    }
    free(buf);
    return SKIT_OK;
}

int skit_smooth_rows(const float *x, size_t rows, size_t n, const int64_t *target,
                     const double *w, int has_ignore, int64_t ignore_index, const double *shift,
                     const double *nll, const double *lse, const uint8_t *counted, double eps,
                     double z, int reduction, double *gap, double *loss, void *grad, int grad64,
                     int threads) {
    if (!x || !target || !shift || !nll || !lse || !counted || !gap || !loss) return SKIT_EINVAL;
    if (reduction < 0 || reduction > 2 || n == 0 || n > SKIT_BLOCK_ELEMS || threads < 1)
        return SKIT_EINVAL;
    if (first_bad_target(target, rows, n, has_ignore, ignore_index) >= 0) return SKIT_ERANGE;
    return smooth_rows(x, rows, n, target, w, has_ignore, ignore_index, shift, nll, lse, counted,
                       eps, z, reduction, gap, loss, grad, grad64, threads);
}

int skit_smooth_ce(const skit_rows *a, const int64_t *target, const double *w, int has_ignore,
                   int64_t ignore_index, double eps, double z, int reduction, double *loss,
                   void *grad, int grad64, int *special) {
    if (!a || !target || !loss || !special || a->dtype != SKIT_F32 || a->mask ||
        a->temperature != 1.0 || a->n == 0 || a->n > SKIT_BLOCK_ELEMS || a->threads < 1)
        return SKIT_EINVAL;
    const size_t rows = a->rows, n = a->n;
    const float *x = (const float *)a->x;
    *special = 0;
    if (first_bad_target(target, rows, n, has_ignore, ignore_index) >= 0) return SKIT_ERANGE;
    /* m, c, s_hi, s_lo, xt, nll, lse, shift, gap: rows each; then counted */
    double *buf = (double *)malloc((rows ? rows : 1) * (9 * sizeof(double) + 1));
    if (!buf) return SKIT_ENOMEM;
    double *m = buf, *c = m + rows, *s_hi = c + rows, *s_lo = s_hi + rows, *xt = s_lo + rows;
    double *nll = xt + rows, *lse = nll + rows, *shift = lse + rows, *gap = shift + rows;
    uint8_t *counted = (uint8_t *)(gap + rows);
    int st = skit_block_states(a, m, c, s_hi, s_lo);
    for (size_t r = 0; r < rows && !st; r++) {
        if (!(m[r] < INFINITY)) { /* +inf or NaN: the caller's array-API route */
            *special = 1;
            free(buf);
            return SKIT_OK;
        }
        int ign = has_ignore && target[r] == ignore_index;
        xt[r] = (double)x[r * n + (ign ? 0 : (size_t)target[r])];
        shift[r] = isfinite(m[r]) ? m[r] : 0.0;
    }
    if (!st)
        st = skit_cross_entropy_states(a, 0, 1, 1, m, c, s_hi, s_lo, xt, target, NULL, has_ignore,
                                       ignore_index, 0.0, 1.0, nll, lse, counted, NULL);
    if (!st && !grad) /* the gradient's pass forms the gaps; without it, their own pass */
        st = skit_smooth(0, x, rows, n, w, shift, NULL, NULL, gap, NULL, NULL, a->threads);
    if (!st)
        st = smooth_rows(x, rows, n, target, w, has_ignore, ignore_index, shift, nll, lse, counted,
                         eps, z, reduction, gap, loss, grad, grad64, a->threads);
    free(buf);
    return st;
}

typedef struct {
    const skit_engine *E;
    int islog;
    const char *y, *g;
    char *out;
    size_t rows, n, grain;
} vjpjob;

static void vjp_task(void *ctx, size_t t) {
    vjpjob *j = (vjpjob *)ctx;
    size_t r0 = t * j->grain;
    size_t cnt = j->rows - r0 < j->grain ? j->rows - r0 : j->grain;
    size_t off = r0 * j->n * j->E->elsize;
    j->E->vjp(j->islog, j->y + off, j->g + off, cnt, j->n, j->out + off);
}

int skit_vjp(int dtype, int mode, int islog, const void *y, const void *g, size_t rows, size_t n,
             void *out, int threads) {
    if ((dtype != SKIT_F32 && dtype != SKIT_F64) || (mode != SKIT_FAST && mode != SKIT_ACCURATE) ||
        threads < 1)
        return SKIT_EINVAL;
    if (rows == 0 || n == 0) return SKIT_OK;
    vjpjob j;
    j.E = isa()->eng[dtype][mode];
    j.islog = islog;
    j.y = (const char *)y;
    j.g = (const char *)g;
    j.out = (char *)out;
    j.rows = rows;
    j.n = n;
    size_t rowbytes = n * j.E->elsize;
    j.grain = rowbytes >= 65536 ? 1 : 65536 / rowbytes;
    size_t cap = rows * n / MIN_ELEMS_PER_THREAD;
    if ((size_t)threads > cap) threads = cap ? (int)cap : 1;
    return parallel_for((rows + j.grain - 1) / j.grain, 1, threads, 0, vjp_task, &j);
}

/* ---- logsumexp with weights b ------------------------------------------------ */
typedef struct {
    const skit_rows *a;
    const skit_engine *E;
    const double *b;
    double *lse, *sign;
    size_t block, nb;
    _Atomic int err;
} lsebjob;

/* sum_i (b_i 2^-e) exp(x_i - M) of a row, block by block (the scaling exact, except for
 * weights 2^768 times below the largest, which it may round: far below the sum's ulp) */
static skit_dd lseb_wsum(const lsebjob *j, const char *x, const double *b, const uint8_t *m,
                         double M, int e) {
    const skit_engine *E = j->E;
    size_t n = j->a->n;
    double *bs = NULL;
    if (e) {
        bs = (double *)malloc(n * sizeof(double));
        if (!bs) return dd_make(NAN, 0.0);
        for (size_t i = 0; i < n; i++) bs[i] = ldexp(b[i], -e);
        b = bs;
    }
    skit_dd tot = dd_make(0.0, 0.0);
    for (size_t q = 0; q < j->nb; q++) {
        size_t off = q * j->block, len = n - off < j->block ? n - off : j->block;
        tot = dd_add(tot, E->wsum(x + off * E->elsize, b + off, m ? m + off : NULL, len, M));
    }
    free(bs);
    return tot;
}

static void lseb_row(void *ctx, size_t r) {
    lsebjob *j = (lsebjob *)ctx;
    const skit_engine *E = j->E;
    size_t n = j->a->n;
    const char *x = (const char *)j->a->x + r * n * E->elsize;
    const uint8_t *m = j->a->mask ? j->a->mask + r * n : NULL;
    const double *b = j->b + r * n;
    int nan = 0;
    int64_t kinf = 0;
    double M = -INFINITY;
    for (size_t q = 0; q < j->nb; q++) {
        size_t off = q * j->block, len = n - off < j->block ? n - off : j->block;
        skit_bstat st;
        E->stats(x + off * E->elsize, m ? m + off : NULL, len, 1.0, &st, NULL, NULL, NULL);
        nan |= st.nan;
        kinf += st.kinf;
        if (st.m > M) M = st.m;
    }
    double lse, sign;
    if (nan) {
        lse = sign = NAN;
    } else if (kinf) {
        double binf = 0.0;
        for (size_t i = 0; i < n; i++) {
            double v = E->elsize == 4 ? (double)((const float *)x)[i] : ((const double *)x)[i];
            if ((!m || m[i]) && v == INFINITY) binf += b[i];
        }
        lse = binf == 0.0 ? NAN : INFINITY;
        sign = binf > 0.0 ? 1.0 : binf < 0.0 ? -1.0 : NAN;
    } else if (M == -INFINITY) {
        lse = -INFINITY;
        sign = 0.0;
    } else {
        /* the weights of the entries that count (kept, above -inf): NaN or infinite
         * ones decide the row as in SciPy (b exp(x - M) is then NaN or infinite), and
         * the largest finite one sets a scale should the sum overflow */
        double bmax = 0.0, binf = 0.0;
        int bnan = 0;
        for (size_t i = 0; i < n; i++) {
            if (m && !m[i]) continue;
            double v = E->elsize == 4 ? (double)((const float *)x)[i] : ((const double *)x)[i];
            double bi = b[i];
            if (bi != bi) bnan = 1;
            else if (isinf(bi)) binf += v > -INFINITY ? bi : NAN; /* inf 0: NaN */
            else if (fabs(bi) > bmax) bmax = fabs(bi);
        }
        if (bnan || binf != binf) {
            lse = sign = NAN;
        } else if (binf != 0.0) {
            lse = INFINITY;
            sign = binf > 0.0 ? 1.0 : -1.0;
        } else {
            skit_dd tot = lseb_wsum(j, x, b, m, M, 0);
            int e = 0;
            if (!isfinite(tot.hi)) {
                /* the weighted sum overflows while every term is finite: sum the weights
                 * times 2^-e, the largest near 2^768, and add e ln 2 to the logarithm.
                 * (The accurate float64 sums hold their exponentials times 2^128: n terms
                 * of at most 2^768 2^128 stay finite, so the largest weight was above
                 * 2^768 and e > 0.) */
                e = ilogb(bmax) - 768;
                tot = lseb_wsum(j, x, b, m, M, e);
            }
            if (tot.hi == 0.0) {
                lse = -INFINITY;
                sign = 0.0;
            } else {
                sign = tot.hi > 0.0 ? 1.0 : -1.0;
                skit_dd at = tot.hi > 0.0 ? tot : dd_neg(tot);
                skit_dd L = j->a->mode == SKIT_ACCURATE ? skit_dd_log(at)
                                                         : dd_make(log(dd_value(at)), 0.0);
                if (e) /* ln 2 as a double-word constant, times e (exact in the pair) */
                    L = dd_add(L, dd_mul(dd_make(0x1.62e42fefa39efp-1, 0x1.abc9e3b39803fp-56),
                                         dd_make((double)e, 0.0)));
                lse = dd_value(dd_add(dd_make(M, 0.0), L));
            }
        }
    }
    j->lse[r] = lse;
    j->sign[r] = sign;
}

int skit_logsumexp_b(const skit_rows *a, const double *b, double *lse, double *sign) {
    if (!a || (a->dtype != SKIT_F32 && a->dtype != SKIT_F64) ||
        (a->mode != SKIT_FAST && a->mode != SKIT_ACCURATE) || a->threads < 1)
        return SKIT_EINVAL;
    if (a->rows == 0 || a->n == 0) return SKIT_OK;
    lsebjob j;
    j.a = a;
    j.E = isa()->eng[a->dtype][a->mode];
    j.b = b;
    j.lse = lse;
    j.sign = sign;
    j.block = SKIT_BLOCK_ELEMS;
    j.nb = (a->n + j.block - 1) / j.block;
    atomic_init(&j.err, 0);
    int threads = a->threads;
    size_t cap = a->rows * a->n / MIN_ELEMS_PER_THREAD;
    if ((size_t)threads > cap) threads = cap ? (int)cap : 1;
    size_t rowbytes = a->n * j.E->elsize;
    return parallel_for(a->rows, rowbytes >= 65536 ? 1 : 65536 / rowbytes, threads, 0, lseb_row,
                        &j);
}
