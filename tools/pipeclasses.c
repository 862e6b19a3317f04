/*
 * Which execution pipes of this core a 512-bit instruction shares with the fused
 * multiply-adds and with the adds (developer probe, not built by meson; needs
 * AVX-512F and GNU inline assembly):
 *
 *   cc -O2 -mavx512f tools/pipeclasses.c -o /tmp/pipeclasses && /tmp/pipeclasses
 *
 * Each line times one round of a loop in units of one 512-bit FMA's time (the FMA
 * loop alone, 16 independent FMAs a round, reads 16):
 *   - 16 FMAs + 8 X: 16 if X runs beside the FMAs, 24 if each X takes an FMA's time
 *     on the FMA pipes;
 *   - 16 adds + 8 X: the same against the adders;
 *   - 16 FMAs + 16 adds + 8 X: what X costs once both classes are busy (on AMD Zen 4
 *     the FMAs and the adds run on separate pipes: 16 + 16 read 16);
 *   - 8 X alone: X's own throughput.
 * benchmarks/_portfloor.py classes the AVX-512 engine's instructions by these
 * readings (session 28, AMD EPYC family 25 model 17).
 */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

#define R16(OP, B)                                                                     \
    OP(B##0) OP(B##1) OP(B##2) OP(B##3) OP(B##4) OP(B##5) OP(B##6) OP(B##7) OP(B##8)    \
    OP(B##9) OP(B##10) OP(B##11) OP(B##12) OP(B##13) OP(B##14) OP(B##15)
#define FMA(n) "vfmadd231ps %%zmm30, %%zmm31, %%zmm" #n "\n\t"
#define ADD(n) "vaddps %%zmm30, %%zmm31, %%zmm" #n "\n\t"
#define FMAS R16(FMA, )
/* the adds write zmm16-28 (13 registers, 16 adds) */
#define ADDS                                                                           \
    ADD(16) ADD(17) ADD(18) ADD(19) ADD(20) ADD(21) ADD(22) ADD(23) ADD(24) ADD(25)     \
    ADD(26) ADD(27) ADD(28) ADD(16) ADD(17) ADD(18)
/* X writes zmm24-28 (or a mask register); its sources are zmm30 and zmm31 */
#define X8(I) I(24) I(25) I(26) I(27) I(28) I(24) I(25) I(26)
#define CLOB                                                                              \
    "zmm0", "zmm1", "zmm2", "zmm3", "zmm4", "zmm5", "zmm6", "zmm7", "zmm8", "zmm9",       \
        "zmm10", "zmm11", "zmm12", "zmm13", "zmm14", "zmm15", "zmm16", "zmm17", "zmm18",  \
        "zmm19", "zmm20", "zmm21", "zmm22", "zmm23", "zmm24", "zmm25", "zmm26", "zmm27", \
        "zmm28", "k2"

#define I_MUL(n) "vmulps %%zmm30, %%zmm31, %%zmm" #n "\n\t"
#define I_ADD(n) "vaddps %%zmm30, %%zmm31, %%zmm" #n "\n\t"
#define I_ADDM(n) "vaddpd %%zmm30, %%zmm31, %%zmm" #n "%{%%k1%}\n\t"
#define I_MAX(n) "vmaxps %%zmm30, %%zmm31, %%zmm" #n "\n\t"
#define I_CVTW(n) "vcvtps2pd %%ymm30, %%zmm" #n "\n\t"
#define I_CVTN(n) "vcvtpd2ps %%zmm30, %%ymm" #n "\n\t"
#define I_SCALEFPS(n) "vscalefps %%zmm30, %%zmm31, %%zmm" #n "\n\t"
#define I_SCALEFPD(n) "vscalefpd %%zmm30, %%zmm31, %%zmm" #n "\n\t"
#define I_PERMPD(n) "vpermpd %%zmm30, %%zmm31, %%zmm" #n "\n\t"
#define I_PERMPS(n) "vpermps %%zmm30, %%zmm31, %%zmm" #n "\n\t"
#define I_PERMI2PD(n) "vmovaps %%zmm29, %%zmm" #n "\n\tvpermi2pd %%zmm30, %%zmm31, %%zmm" #n "\n\t"
#define I_EXTRACT(n) "vextractf64x4 $1, %%zmm30, %%ymm" #n "\n\t"
#define I_BLENDM(n) "vblendmps %%zmm30, %%zmm31, %%zmm" #n "%{%%k1%}\n\t"
#define I_CMPK(n) "vcmpps $0, %%zmm30, %%zmm31, %%k2\n\t"
#define I_PADDD(n) "vpaddd %%zmm30, %%zmm31, %%zmm" #n "\n\t"
#define I_PSLLQ(n) "vpsllq $52, %%zmm30, %%zmm" #n "\n\t"
#define I_RNDSCALE(n) "vrndscalepd $0, %%zmm30, %%zmm" #n "\n\t"
#define I_PANDQ(n) "vpandq %%zmm30, %%zmm31, %%zmm" #n "\n\t"

static const long ROUNDS = 20000000;

#define CASE(NAME, I)                                                             \
    do {                                                                          \
        double t0 = now();                                                        \
        for (long r = 0; r < ROUNDS; r++) __asm__ volatile(FMAS X8(I) ::: CLOB); \
        double a = now() - t0;                                                    \
        t0 = now();                                                               \
        for (long r = 0; r < ROUNDS; r++) __asm__ volatile(ADDS X8(I) ::: CLOB); \
        double b = now() - t0;                                                    \
        t0 = now();                                                               \
        for (long r = 0; r < ROUNDS; r++)                                         \
            __asm__ volatile(FMAS ADDS X8(I) ::: CLOB);                          \
        double c = now() - t0;                                                    \
        t0 = now();                                                               \
        for (long r = 0; r < ROUNDS; r++) __asm__ volatile(X8(I) ::: CLOB);      \
        double d = now() - t0;                                                    \
        printf("%-12s %9.2f %9.2f %12.2f %9.2f\n", NAME, a / unit, b / unit,      \
               c / unit, d / unit);                                               \
    } while (0)

int main(void) {
    __asm__ volatile("kxnorw %%k1, %%k1, %%k1\n\tvxorps %%zmm29, %%zmm29, %%zmm29" ::
                         : "k1", "zmm29");
    double t0 = now();
    for (long r = 0; r < ROUNDS; r++) __asm__ volatile(FMAS ::: CLOB);
    double unit = (now() - t0) / 16;
    t0 = now();
    for (long r = 0; r < ROUNDS; r++) __asm__ volatile(FMAS ADDS ::: CLOB);
    printf("one 512-bit FMA: %.4f ns; 16 FMAs + 16 adds: %.2f FMA times\n",
           unit / ROUNDS * 1e9, (now() - t0) / unit);
    printf("%-12s %9s %9s %12s %9s\n", "X", "16F + 8X", "16A + 8X", "16F+16A+8X", "8X");
    CASE("vmulps", I_MUL);
    CASE("vaddps", I_ADD);
    CASE("vaddpd{k}", I_ADDM);
    CASE("vmaxps", I_MAX);
    CASE("vcvtps2pd", I_CVTW);
    CASE("vcvtpd2ps", I_CVTN);
    CASE("vscalefps", I_SCALEFPS);
    CASE("vscalefpd", I_SCALEFPD);
    CASE("vpermpd", I_PERMPD);
    CASE("vpermps", I_PERMPS);
    CASE("vpermi2pd", I_PERMI2PD);
    CASE("vextractf", I_EXTRACT);
    CASE("vblendmps", I_BLENDM);
    CASE("vcmpps->k", I_CMPK);
    CASE("vpaddd", I_PADDD);
    CASE("vpsllq", I_PSLLQ);
    CASE("vrndscale", I_RNDSCALE);
    CASE("vpandq", I_PANDQ);
    return 0;
}
