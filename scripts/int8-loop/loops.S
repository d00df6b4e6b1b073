// The loops scripts/int8-loop/main.c times, each over an 8x8 tile of i32 (f32) accumulators
// in ymm0-7 (ymm c = column c, rows 0-7), with tract-linalg's packing: per k, A's 8 rows then
// B's 8 columns, 8 bytes (f32: 32) each.
//   kern_sse(a, b, k, out)  upstream avx2_mmm_i32_8x8 inner loop: legacy-SSE movq, dirty ymm
//   kern_old(a, b, k, out)  the same loop with a VEX load (vmovq)
//   kern_new(a, b, k, out)  the patched loop: two K steps per vpmaddwd, the single-K body for
//                           an odd K's last step
//   kern_k2(a16, b, k, out) the shipped loop: A in the K-paired i16 packing (PackedI16K2: per
//                           K pair, row r's (a[r,k], a[r,k+1]) as i16, 32 bytes), each row's
//                           pair broadcast from memory, the tile accumulated by rows and
//                           transposed at the end (vendor/tract-linalg/x86_64/fma)
//   kern_f32(a, b, k, out)  the f32 fma 8x8 loop (tract's fma_mmm_f32_8x8 shape)
// rdi = a, rsi = b, rdx = k, rcx = out (64 values, column by column)
.intel_syntax noprefix
.text

.macro ZERO
    .irp c, 0, 1, 2, 3, 4, 5, 6, 7
    vpxor           ymm\c, ymm\c, ymm\c
    .endr
.endm

.macro STORE
    .irp c, 0, 1, 2, 3, 4, 5, 6, 7
    vmovdqu         [rcx + 32 * \c], ymm\c
    .endr
    vzeroupper
    ret
.endm

// columns c0-c3 (B's bytes at off..off+3) of upstream's single-K body, A's row vector in ymm8
.macro FOUR_COLS off, c0, c1, c2, c3
    vpbroadcastb    ymm9, byte ptr [rsi + \off]
    vpbroadcastb    ymm10, byte ptr [rsi + \off + 1]
    vpbroadcastb    ymm11, byte ptr [rsi + \off + 2]
    vpbroadcastb    ymm12, byte ptr [rsi + \off + 3]
    .irp t, 9, 10, 11, 12
    vpmovsxbw       ymm\t, xmm\t
    .endr
    .irp t, 9, 10, 11, 12
    vpmullw         ymm\t, ymm\t, ymm8
    .endr
    .irp t, 9, 10, 11, 12
    vpmovsxwd       ymm\t, xmm\t
    .endr
    vpaddd          ymm\c0, ymm\c0, ymm9
    vpaddd          ymm\c1, ymm\c1, ymm10
    vpaddd          ymm\c2, ymm\c2, ymm11
    vpaddd          ymm\c3, ymm\c3, ymm12
.endm

// one K step of upstream's single-K body; `load` is movq (upstream) or vmovq (patched)
.macro SINGLE_K load
    \load           xmm8, qword ptr [rdi]
    vpmovsxbw       ymm8, xmm8
    FOUR_COLS 0, 0, 1, 2, 3
    FOUR_COLS 4, 4, 5, 6, 7
    add             rdi, 8
    add             rsi, 8
.endm

// the vpshufb mask that interleaves a K pair's two 8-byte rows into xmm15, r8 = K pairs; to 2f
// when there are none
.macro PAIRS_SETUP
    mov             r8, 0x0b030a0209010800
    vmovq           xmm15, r8
    mov             r8, 0x0f070e060d050c04
    vpinsrq         xmm15, xmm15, r8, 1        // bytes 0,8,1,9,...,7,15: interleave k, k+1
    mov             r8, rdx
    shr             r8, 1
    jz              2f
.endm

// columns c0-c3 of a K pair: their (b[c,k], b[c,k+1]) i16 pairs in both lanes of ymm\src
.macro PAIR_COLS src, c0, c1, c2, c3
    vpshufd         ymm11, ymm\src, 0
    vpshufd         ymm12, ymm\src, 85
    vpshufd         ymm13, ymm\src, 170
    vpshufd         ymm14, ymm\src, 255
    .irp t, 11, 12, 13, 14
    vpmaddwd        ymm\t, ymm\t, ymm8
    .endr
    vpaddd          ymm\c0, ymm\c0, ymm11
    vpaddd          ymm\c1, ymm\c1, ymm12
    vpaddd          ymm\c2, ymm\c2, ymm13
    vpaddd          ymm\c3, ymm\c3, ymm14
.endm

.globl kern_sse
kern_sse:
    ZERO
1:
    SINGLE_K movq
    dec             rdx
    jnz             1b
    STORE

.globl kern_old
kern_old:
    ZERO
1:
    SINGLE_K vmovq
    dec             rdx
    jnz             1b
    STORE

.globl kern_new
kern_new:
    ZERO
    PAIRS_SETUP
1:
    vmovdqu         xmm8, xmmword ptr [rdi]    // A: rows 0-7 at k, then at k+1
    vpshufb         xmm8, xmm8, xmm15
    vpmovsxbw       ymm8, xmm8                 // row r: (a[r,k], a[r,k+1]) as i16
    vmovdqu         xmm9, xmmword ptr [rsi]    // B: cols 0-7 at k, then at k+1
    vpshufb         xmm9, xmm9, xmm15
    vpmovsxbw       ymm9, xmm9                 // col c: (b[c,k], b[c,k+1]) as i16
    vperm2i128      ymm10, ymm9, ymm9, 0x00    // cols 0-3 in both lanes
    vperm2i128      ymm9, ymm9, ymm9, 0x11     // cols 4-7 in both lanes
    PAIR_COLS 10, 0, 1, 2, 3
    PAIR_COLS 9, 4, 5, 6, 7
    add             rdi, 16
    add             rsi, 16
    dec             r8
    jnz             1b
2:
    test            rdx, 1
    jz              3f
    SINGLE_K vmovq
3:
    STORE

.macro K2_ROWS
    .irp r, 0, 1, 2, 3, 4, 5, 6, 7
    vpbroadcastd    ymm9, dword ptr [rdi + 4 * \r]
    vpmaddwd        ymm9, ymm9, ymm8
    vpaddd          ymm\r, ymm\r, ymm9
    .endr
.endm

// the 8x8 tile in ymm0-7 transposed in place (ymm8-15 scratch), as avx2_transpose_8x8_i32.j2
.macro TRANSPOSE
    vpunpckldq      ymm8, ymm0, ymm1
    vpunpckhdq      ymm9, ymm0, ymm1
    vpunpckldq      ymm10, ymm2, ymm3
    vpunpckhdq      ymm11, ymm2, ymm3
    vpunpckldq      ymm12, ymm4, ymm5
    vpunpckhdq      ymm13, ymm4, ymm5
    vpunpckldq      ymm14, ymm6, ymm7
    vpunpckhdq      ymm15, ymm6, ymm7
    vpunpcklqdq     ymm0, ymm8, ymm10
    vpunpckhqdq     ymm1, ymm8, ymm10
    vpunpcklqdq     ymm2, ymm9, ymm11
    vpunpckhqdq     ymm3, ymm9, ymm11
    vpunpcklqdq     ymm4, ymm12, ymm14
    vpunpckhqdq     ymm5, ymm12, ymm14
    vpunpcklqdq     ymm6, ymm13, ymm15
    vpunpckhqdq     ymm7, ymm13, ymm15
    vperm2i128      ymm8, ymm0, ymm4, 32
    vperm2i128      ymm9, ymm1, ymm5, 32
    vperm2i128      ymm10, ymm2, ymm6, 32
    vperm2i128      ymm11, ymm3, ymm7, 32
    vperm2i128      ymm12, ymm0, ymm4, 49
    vperm2i128      ymm13, ymm1, ymm5, 49
    vperm2i128      ymm14, ymm2, ymm6, 49
    vperm2i128      ymm15, ymm3, ymm7, 49
    vmovdqa         ymm0, ymm8
    vmovdqa         ymm1, ymm9
    vmovdqa         ymm2, ymm10
    vmovdqa         ymm3, ymm11
    vmovdqa         ymm4, ymm12
    vmovdqa         ymm5, ymm13
    vmovdqa         ymm6, ymm14
    vmovdqa         ymm7, ymm15
.endm

.globl kern_k2
kern_k2:
    ZERO
    PAIRS_SETUP
1:
    vmovdqu         xmm8, xmmword ptr [rsi]    // B: cols 0-7 at k, then at k+1
    vpshufb         xmm8, xmm8, xmm15
    vpmovsxbw       ymm8, xmm8                 // col c: (b[c,k], b[c,k+1]) as i16
    K2_ROWS
    add             rdi, 32
    add             rsi, 16
    dec             r8
    jnz             1b
2:
    test            rdx, 1
    jz              3f
    vmovq           xmm8, qword ptr [rsi]      // B at the last k, zeros above
    vpshufb         xmm8, xmm8, xmm15
    vpmovsxbw       ymm8, xmm8
    K2_ROWS
3:
    TRANSPOSE
    STORE

.globl kern_f32
kern_f32:
    ZERO
1:
    vmovaps         ymm8, [rdi]
    .irp c, 0, 1, 2, 3, 4, 5, 6, 7
    vbroadcastss    ymm9, [rsi + 4 * \c]
    vfmadd231ps     ymm\c, ymm8, ymm9
    .endr
    add             rdi, 32
    add             rsi, 32
    dec             rdx
    jnz             1b
    STORE

.section .note.GNU-stack,"",@progbits
