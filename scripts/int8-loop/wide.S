// AVX2 int8 loops over a 16x6 tile (scripts/int8-loop/wide.c times them against the shipped
// 8x8 loop, kern_k2 in loops.S). i32 accumulators in ymm0-11, column-major: ymm(2c) = column
// c, rows 0-7; ymm(2c+1) = column c, rows 8-15 (the layout of tract's fma_mmm_f32_16x6).
// A (16 rows) in the K-paired i16 packing: per K pair, row r's (a[r,k], a[r,k+1]) at 4r, 64 B.
// One vpmaddwd adds 16 products (exact: |-128 x -128 x 2| fits an i32 lane).
//   wide_16x6(a16, b16, k, out)  B (6 columns) also K-paired i16: per K pair, column c's
//                                (b[c,k], b[c,k+1]) at 4c, 24 B; each pair broadcast from
//                                memory. Per K pair: 2 + 6 loads, 12 vpmaddwd, 12 vpaddd
//                                (192 multiply-adds), where the 8x8 does 9 loads, 3 shuffles,
//                                8 vpmaddwd and 8 vpaddd for 128.
//   wide_16x6_i8b(a16, b8, k, out) B in the plain i8 packing (per k, 6 bytes), the one tract's
//                                im2col and QSumB write: each K pair's 12 bytes interleaved and
//                                widened once, stored to the stack and broadcast from there.
//   wide_peak(k)                 independent vpmaddwd + vpaddd only: the core's ceiling.
// rdi = a, rsi = b, rdx = k (even), rcx = out (96 values, column by column)
.intel_syntax noprefix
.text

.macro ZERO12
    .irp c, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
    vpxor           ymm\c, ymm\c, ymm\c
    .endr
.endm

.macro STORE12
    .irp c, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
    vmovdqu         [rcx + 32 * \c], ymm\c
    .endr
    vzeroupper
    ret
.endm

// column c (accumulators lo, hi): its pair broadcast from [base + 4c], times A's two halves
.macro COL base, c, lo, hi
    vpbroadcastd    ymm14, dword ptr [\base + 4 * \c]
    vpmaddwd        ymm15, ymm12, ymm14
    vpaddd          ymm\lo, ymm\lo, ymm15
    vpmaddwd        ymm15, ymm13, ymm14
    vpaddd          ymm\hi, ymm\hi, ymm15
.endm

.macro COLS6 base
    COL \base, 0, 0, 1
    COL \base, 1, 2, 3
    COL \base, 2, 4, 5
    COL \base, 3, 6, 7
    COL \base, 4, 8, 9
    COL \base, 5, 10, 11
.endm

.globl wide_16x6
wide_16x6:
    ZERO12
    mov             r8, rdx
    shr             r8, 1
1:
    vmovdqa         ymm12, [rdi]               // rows 0-7 at k, k+1
    vmovdqa         ymm13, [rdi + 32]          // rows 8-15
    COLS6 rsi
    add             rdi, 64
    add             rsi, 24
    dec             r8
    jnz             1b
    STORE12

.globl wide_16x6_i8b
wide_16x6_i8b:
    ZERO12
    lea             r9, [rsp - 32]             // red zone
    mov             r8, rdx
    shr             r8, 1
1:
    vmovq           xmm14, qword ptr [rsi]     // columns 0-5 at k, 0-1 at k+1
    vpinsrd         xmm14, xmm14, dword ptr [rsi + 8], 2   // columns 2-5 at k+1
    vpshufb         xmm14, xmm14, [rip + interleave6]
    vpmovsxbw       ymm14, xmm14               // column c: (b[c,k], b[c,k+1]) as i16
    vmovdqu         [r9], ymm14
    vmovdqa         ymm12, [rdi]
    vmovdqa         ymm13, [rdi + 32]
    COLS6 r9
    add             rdi, 64
    add             rsi, 12
    dec             r8
    jnz             1b
    STORE12

.globl wide_peak
wide_peak:
    ZERO12
    shr             rdi, 1
1:
    .irp c, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
    vpmaddwd        ymm15, ymm13, ymm14
    vpaddd          ymm\c, ymm\c, ymm15
    .endr
    dec             rdi
    jnz             1b
    vzeroupper
    ret

.p2align 4
interleave6: .byte 0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11, 12, 12, 12, 12

.section .note.GNU-stack,"",@progbits
