// The AVX-512 VNNI int8 loops of vnni.S: checked against a plain C product for K = 4..64, then
// GMAC/s on one core, hot caches, K = 768 (a CLIP layer's). Run: scripts/int8-loop/run.sh
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
void vnni_8x8(const signed char *, const signed char *, long, int *);
void vnni_16x8(const signed char *, const signed char *, long, int *);
void vnni_peak(long);
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}
// PackedI8K4(r): block kb, row r, byte t at [kb * r * 4 + row * 4 + t]; x is k x rows
static signed char *pack(const signed char *x, long k, int rows) {
  signed char *p = aligned_alloc(64, (k / 4 * rows * 4 + 63) / 64 * 64);
  for (long kk = 0; kk < k; kk++)
    for (int r = 0; r < rows; r++) p[kk / 4 * rows * 4 + r * 4 + kk % 4] = x[kk * rows + r];
  return p;
}
static int check(int rows, void (*f)(const signed char *, const signed char *, long, int *)) {
  for (long k = 4; k <= 64; k += 4) {
    signed char *a = malloc(k * rows), *b = malloc(k * 8);
    for (long i = 0; i < k * rows; i++) a[i] = rand();
    for (long i = 0; i < k * 8; i++) b[i] = rand();
    a[0] = -128; b[0] = -128; a[1] = 127; b[1] = 127;
    signed char *pa = pack(a, k, rows), *pb = pack(b, k, 8);
    int out[128];
    f(pa, pb, k / 4, out);
    for (int c = 0; c < 8; c++)
      for (int r = 0; r < rows; r++) {
        int s = 0;
        for (long kk = 0; kk < k; kk++) s += a[kk * rows + r] * b[kk * 8 + c];
        if (out[c * rows + r] != s) { printf("%dx8 MISMATCH at k=%ld\n", rows, k); return 1; }
      }
    free(a); free(b); free(pa); free(pb);
  }
  return 0;
}
int main(void) {
  if (check(8, vnni_8x8) || check(16, vnni_16x8)) return 1;
  printf("k = 4..64: both VNNI loops equal the C product\n");
  long blocks = 192, reps = 20000;
  signed char *a = aligned_alloc(64, blocks * 64), *b = aligned_alloc(64, blocks * 32);
  for (long i = 0; i < blocks * 64; i++) a[i] = rand();
  for (long i = 0; i < blocks * 32; i++) b[i] = rand();
  int o[128];
  double macs = (double)reps * blocks * 4 * 64 / 1e9; // an 8x8 tile's
  for (int w = 0; w < 3; w++) {
    double t = now(); for (long r = 0; r < reps; r++) vnni_8x8(a, b, blocks, o); double t8 = now() - t;
    t = now(); for (long r = 0; r < reps; r++) vnni_16x8(a, b, blocks, o); double t16 = now() - t;
    t = now(); vnni_peak(reps * blocks / 2); double tp = now() - t; // 512 MACs a step
    printf("GMAC/s: 8x8 ymm %.1f, 16x8 zmm %.1f, VPDPBUSD ceiling %.1f\n", macs / t8, 2 * macs / t16,
           macs / tp);
  }
  return 0;
}
