// The 16x6 AVX2 int8 loops of wide.S against the shipped 8x8 loop (kern_k2, loops.S): checked
// against a plain C product for K = 1..40, then GMAC/s on one core, hot caches, K = 768 (a
// CLIP layer's), five interleaved rounds. Run: scripts/int8-loop/run.sh
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
void kern_k2(const short *, const signed char *, long, int *);
void wide_16x6(const short *, const short *, long, int *);
void wide_16x6_i8b(const short *, const signed char *, long, int *);
void wide_peak(long);
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}
// x is k x r (x[kk * r + i]); K-paired i16: pair p, row i at [p * r * 2 + i * 2 + kk % 2],
// K padded to even with zeros
static short *pack_k2(const signed char *x, long k, int r) {
  long n = (k + 1) / 2 * r * 2;
  short *p = aligned_alloc(64, (n * 2 + 63) / 64 * 64);
  memset(p, 0, n * 2);
  for (long kk = 0; kk < k; kk++)
    for (int i = 0; i < r; i++) p[kk / 2 * r * 2 + i * 2 + kk % 2] = x[kk * r + i];
  return p;
}
int main(void) {
  for (long k = 1; k <= 40; k++) {
    long ke = (k + 1) / 2 * 2;
    signed char *a = malloc(k * 16), *b = calloc(ke * 6 + 16, 1);
    for (long i = 0; i < k * 16; i++) a[i] = rand();
    for (long i = 0; i < k * 6; i++) b[i] = rand();
    a[0] = -128; b[0] = -128; a[1] = 127; b[1] = -128;
    short *a16 = pack_k2(a, k, 16), *b16 = pack_k2(b, k, 6);
    int o1[96], o2[96];
    wide_16x6(a16, b16, ke, o1);
    wide_16x6_i8b(a16, b, ke, o2);
    for (int c = 0; c < 6; c++)
      for (int r = 0; r < 16; r++) {
        int s = 0;
        for (long kk = 0; kk < k; kk++) s += a[kk * 16 + r] * b[kk * 6 + c];
        if (o1[c * 16 + r] != s || o2[c * 16 + r] != s) { printf("MISMATCH at k=%ld\n", k); return 1; }
      }
    free(a); free(b); free(a16); free(b16);
  }
  printf("k = 1..40: both 16x6 loops equal the C product\n");
  long k = 768, reps = 4000;
  signed char *a8 = aligned_alloc(64, k * 8), *b8 = aligned_alloc(64, k * 8);
  signed char *a = aligned_alloc(64, k * 16), *b = aligned_alloc(64, k * 6 + 64);
  for (long i = 0; i < k * 8; i++) { a8[i] = i; b8[i] = i * 3; }
  for (long i = 0; i < k * 16; i++) a[i] = i;
  for (long i = 0; i < k * 6; i++) b[i] = i * 3;
  short *ak2 = pack_k2(a8, k, 8), *a16 = pack_k2(a, k, 16), *b16 = pack_k2(b, k, 6);
  int o[96];
  double g8 = (double)reps * k * 64 / 1e9, g16 = (double)reps * k * 96 / 1e9;
  for (int w = 0; w < 5; w++) {
    double t = now(); for (int r = 0; r < reps; r++) kern_k2(ak2, b8, k, o); double t8 = now() - t;
    t = now(); for (int r = 0; r < reps; r++) wide_16x6(a16, b16, k, o); double t16 = now() - t;
    t = now(); for (int r = 0; r < reps; r++) wide_16x6_i8b(a16, b, k, o); double ti8 = now() - t;
    t = now(); for (int r = 0; r < reps; r++) wide_peak(k); double tp = now() - t;
    printf("GMAC/s: shipped 8x8 %.1f, 16x6 i16 B %.1f, 16x6 i8 B via the stack %.1f, "
           "vpmaddwd ceiling %.1f\n", g8 / t8, g16 / t16, g16 / ti8, g16 / tp);
  }
  return 0;
}
