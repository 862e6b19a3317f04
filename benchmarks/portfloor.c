/*
 * The vector-port floor of this machine, measured: chains of independent fused
 * multiply-adds, as wide as the widest vectors the CPU has (512 bits with
 * AVX-512F, else 256 with AVX2 and FMA). Each FMA is one uop on a port that the
 * softmax kernels' floating-point work also needs, and 16 independent chains keep
 * both such ports of a core busy whatever the FMA latency, so the time per FMA is
 * the time per vector uop the kernels can at best reach. Built by
 * benchmarks/_portfloor.py with the system C compiler; not part of the library.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stddef.h>

#if defined(__AVX512F__)
#include <immintrin.h>
typedef __m512 vec;
#define SPLAT(v) _mm512_set1_ps(v)
#define FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define ADD(a, b) _mm512_add_ps(a, b)
#define LANE0(v) _mm512_cvtss_f32(v)
const char *portfloor_isa = "avx512";
/* 32 vector registers: 16 chains and the two constants stay in registers */
#define CHAINS 16
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
typedef __m256 vec;
#define SPLAT(v) _mm256_set1_ps(v)
#define FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define ADD(a, b) _mm256_add_ps(a, b)
#define LANE0(v) _mm256_cvtss_f32(v)
const char *portfloor_isa = "avx2";
/* 16 vector registers: 12 chains and the two constants. With 16 chains the compiler
 * kept three of them on the stack, and each of those waited on a store and a reload
 * every round: the loop ran at about 1.15 FMAs per cycle instead of 2 (AMD Zen 3,
 * session 22), and the floor it measured was 1.75 times too high. Twelve chains still
 * cover the FMA latency (4 cycles) on both ports (8 in flight). */
#define CHAINS 12
#else
#error "portfloor.c needs AVX-512F or AVX2 with FMA"
#endif

/* FMAs per round of `chains` (portfloor_run's caller divides its FMA count by it) */
const int portfloor_fmas_per_round = CHAINS;

/* rounds x CHAINS dependent-free FMAs; the result keeps the compiler from dropping them */
static float chains(long rounds) {
    vec a[CHAINS];
    for (int k = 0; k < CHAINS; k++) a[k] = SPLAT(1.0f + 0.01f * (float)k);
    const vec m = SPLAT(0.999999f), c = SPLAT(1e-7f);
    for (long i = 0; i < rounds; i++) {
#pragma GCC unroll 16
        for (int k = 0; k < CHAINS; k++) a[k] = FMA(a[k], m, c);
    }
    vec s = a[0];
    for (int k = 1; k < CHAINS; k++) s = ADD(s, a[k]);
    return LANE0(s);
}

typedef struct {
    long rounds;
    float out;
} job;

static void *worker(void *p) {
    job *j = (job *)p;
    j->out = chains(j->rounds);
    return NULL;
}

/* the i-th CPU this process may run on (-1 if there are fewer) */
static int nth_cpu(const cpu_set_t *allowed, int i) {
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, allowed) && i-- == 0) return c;
    return -1;
}

/* CHAINS * rounds FMAs on each of `threads` threads (1 to 8), all at once, thread t on
 * the t-th CPU this process may use (a new thread otherwise starts beside its
 * parent and moves only after some milliseconds); returns a value derived from
 * every result, or -1 if a thread could not be started */
float portfloor_run(long rounds, int threads) {
    pthread_t th[8];
    job jobs[8];
    int started = 1, ok = 1;
    if (threads < 1 || threads > 8) return -1.0f;
    cpu_set_t allowed, one;
    int pin = sched_getaffinity(0, sizeof allowed, &allowed) == 0 &&
              CPU_COUNT(&allowed) >= threads;
    for (int t = 0; t < threads; t++) jobs[t].rounds = rounds;
    for (; started < threads; started++) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        if (pin) {
            CPU_ZERO(&one);
            CPU_SET(nth_cpu(&allowed, started), &one);
            pthread_attr_setaffinity_np(&attr, sizeof one, &one);
        }
        int err = pthread_create(&th[started], &attr, worker, &jobs[started]);
        pthread_attr_destroy(&attr);
        if (err) {
            ok = 0;
            break;
        }
    }
    if (pin) { /* this thread on the first CPU while it works, then as before */
        CPU_ZERO(&one);
        CPU_SET(nth_cpu(&allowed, 0), &one);
        sched_setaffinity(0, sizeof one, &one);
    }
    worker(&jobs[0]);
    if (pin) sched_setaffinity(0, sizeof allowed, &allowed);
    float s = jobs[0].out;
    for (int t = 1; t < started; t++) {
        pthread_join(th[t], NULL);
        s += jobs[t].out;
    }
    return ok ? s : -1.0f;
}
