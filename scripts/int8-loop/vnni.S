// The inner loops of tract-linalg's AVX-512 VNNI int8 kernels, as scripts/int8-loop/vnni.c times
// them, with PackedI8K4 packing (per K=4 block: A's rows then B's columns, 4 K-bytes each):
//   vnni_8x8(a, b, blocks, out)   avx512vnni_mmm_i32_8x8: ymm n = column n (8 rows); A's 32
//                                 bytes +128, each of B's 8 columns broadcast, 8 ymm VPDPBUSD
//   vnni_16x8(a, b, blocks, out)  avx512vnni_mmm_i32_16x8 (vendor/tract-linalg, new): zmm n =
//                                 column n (16 rows); A's 64 bytes +128, 8 zmm VPDPBUSD
//   vnni_peak(blocks)             16 independent ymm VPDPBUSD a step, no loads: the core's ceiling
// Both remove the +128 bias (128 * sum_k B[n]) after the loop, as the kernels do.
// rdi = a, rsi = b, rdx = K=4 blocks, rcx = out (column by column: 8 x 8 or 8 x 16 i32)
.intel_syntax noprefix
.text

.macro PRE
    mov             r8d, 0x01010101
    vpbroadcastd    ymm11, r8d
    mov             r8d, 0x80808080
    vpbroadcastd    zmm12, r8d
    vpxor           ymm10, ymm10, ymm10
    .irp c, 0, 1, 2, 3, 4, 5, 6, 7
    vpxord          zmm\c, zmm\c, zmm\c
    .endr
.endm

.macro UNBIAS
    vpslld          ymm10, ymm10, 7
    .irp n, 0, 1, 2, 3, 4, 5, 6, 7
    mov             r8d, \n
    vpbroadcastd    zmm14, r8d
    vpermd          zmm15, zmm14, zmm10
    vpsubd          zmm\n, zmm\n, zmm15
    .endr
.endm

.globl vnni_8x8
vnni_8x8:
    PRE
.p2align 6
1:
    vmovdqu         ymm8, [rdi]
    vpaddb          ymm8, ymm8, ymm12
    vmovdqu         ymm9, [rsi]
    vpdpbusd        ymm10, ymm11, ymm9
    .irp n, 0, 1, 2, 3, 4, 5, 6, 7
    vpbroadcastd    ymm13, dword ptr [rsi + \n * 4]
    vpdpbusd        ymm\n, ymm8, ymm13
    .endr
    add             rdi, 32
    add             rsi, 32
    dec             rdx
    jnz             1b
    UNBIAS
    .irp c, 0, 1, 2, 3, 4, 5, 6, 7
    vmovdqu         [rcx + 32 * \c], ymm\c
    .endr
    vzeroupper
    ret

.globl vnni_16x8
vnni_16x8:
    PRE
.p2align 6
1:
    vmovdqu32       zmm8, [rdi]
    vpaddb          zmm8, zmm8, zmm12
    vmovdqu         ymm9, [rsi]
    vpdpbusd        ymm10, ymm11, ymm9
    .irp n, 0, 1, 2, 3, 4, 5, 6, 7
    vpbroadcastd    zmm13, dword ptr [rsi + \n * 4]
    vpdpbusd        zmm\n, zmm8, zmm13
    .endr
    add             rdi, 64
    add             rsi, 32
    dec             rdx
    jnz             1b
    UNBIAS
    .irp c, 0, 1, 2, 3, 4, 5, 6, 7
    vmovdqu32       [rcx + 64 * \c], zmm\c
    .endr
    vzeroupper
    ret

.globl vnni_peak
vnni_peak:
    PRE
.p2align 6
1:
    .irp r, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
    vpdpbusd        ymm\r, ymm11, ymm12
    .endr
    dec             rdi
    jnz             1b
    vzeroupper
    ret
.section .note.GNU-stack,"",@progbits
