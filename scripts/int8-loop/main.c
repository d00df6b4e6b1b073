// The inner loop of tract-linalg's AVX2 int8 kernel (avx2_mmm_i32_8x8), as upstream has it
// (legacy-SSE movq), with VEX loads, with two K steps per vpmaddwd (vendor/tract-linalg's first
// patch), and over A's K-paired i16 packing (the shipped one), against the f32 fma 8x8 loop (all
// in loops.S): GMAC/s on one core, hot caches, after checking the four int8 loops against a
// plain C product. Run: scripts/int8-loop/run.sh
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
void kern_sse(const signed char *, const signed char *, long, int *);
void kern_old(const signed char *, const signed char *, long, int *);
void kern_new(const signed char *, const signed char *, long, int *);
void kern_k2(const short *, const signed char *, long, int *);
void kern_f32(const float *, const float *, long, float *);
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}
// A (k steps of 8 rows) in the K-paired i16 packing: pair p, row r at [p * 16 + r * 2 + k % 2]
static short *pack_k2(const signed char *a, long k) {
  short *p = aligned_alloc(64, ((k + 1) / 2 * 32 + 63) / 64 * 64);
  memset(p, 0, (k + 1) / 2 * 32);
  for (long kk = 0; kk < k; kk++)
    for (int r = 0; r < 8; r++) p[kk / 2 * 16 + r * 2 + kk % 2] = a[kk * 8 + r];
  return p;
}
int main(void) {
  for (long k = 1; k < 40; k++) {
    signed char *a = malloc(k * 8 + 16), *b = malloc(k * 8 + 16);
    for (long i = 0; i < k * 8; i++) { a[i] = rand(); b[i] = rand(); }
    a[0] = -128; b[0] = -128;
    int o0[64], o1[64], o2[64], o3[64], ref[64];
    short *a16 = pack_k2(a, k);
    kern_sse(a, b, k, o0);
    kern_old(a, b, k, o1);
    kern_new(a, b, k, o2);
    kern_k2(a16, b, k, o3);
    free(a16);
    for (int c = 0; c < 8; c++)
      for (int r = 0; r < 8; r++) {
        int s = 0;
        for (long kk = 0; kk < k; kk++) s += a[kk * 8 + r] * b[kk * 8 + c];
        ref[c * 8 + r] = s;
      }
    if (memcmp(o0, ref, 256) || memcmp(o1, ref, 256) || memcmp(o2, ref, 256) || memcmp(o3, ref, 256)) { printf("MISMATCH at k=%ld\n", k); return 1; }
    free(a); free(b);
  }
  printf("k = 1..39: the four int8 loops equal the C product\n");
  long k = 768, reps = 4000;
  signed char *a = aligned_alloc(64, k * 8), *b = aligned_alloc(64, k * 8);
  float *fa = aligned_alloc(64, k * 32), *fb = aligned_alloc(64, k * 32), fo[64];
  int o[64];
  short *a16;
  for (long i = 0; i < k * 8; i++) { a[i] = i; b[i] = i * 3; fa[i] = i * 1e-3f; fb[i] = 1e-3f; }
  a16 = pack_k2(a, k);
  double macs = (double)reps * k * 64 / 1e9;
  for (int w = 0; w < 3; w++) {
    double t = now();
    for (int r = 0; r < reps / 20; r++) kern_sse(a, b, k, o);
    double legacy = now() - t;
    t = now(); for (int r = 0; r < reps; r++) kern_old(a, b, k, o); double vex = now() - t;
    t = now(); for (int r = 0; r < reps; r++) kern_new(a, b, k, o); double pairs = now() - t;
    t = now(); for (int r = 0; r < reps; r++) kern_k2(a16, b, k, o); double k2 = now() - t;
    t = now(); for (int r = 0; r < reps; r++) kern_f32(fa, fb, k, fo); double f32 = now() - t;
    printf("GMAC/s: int8 legacy movq %.2f, int8 vmovq %.2f, int8 vpmaddwd pairs %.2f, "
           "int8 i16 K-paired A %.2f, f32 fma %.2f\n",
           macs / 20 / legacy, macs / vex, macs / pairs, macs / k2, macs / f32);
  }
  return 0;
}
