// upstream tract-linalg 0.23.9 avx2_mmm_i32_8x8 inner loop: legacy-SSE movq while ymm0-7 are dirty
.intel_syntax noprefix
.text
.globl kern_sse
kern_sse:
    vpxor ymm0,ymm0,ymm0
    vpxor ymm1,ymm1,ymm1
    vpxor ymm2,ymm2,ymm2
    vpxor ymm3,ymm3,ymm3
    vpxor ymm4,ymm4,ymm4
    vpxor ymm5,ymm5,ymm5
    vpxor ymm6,ymm6,ymm6
    vpxor ymm7,ymm7,ymm7
1:
    movq            xmm8, qword ptr [rdi]
    vpmovsxbw       ymm8, xmm8
    vpbroadcastb    ymm9, byte ptr [rsi]
    vpbroadcastb    ymm10, byte ptr [rsi + 1]
    vpbroadcastb    ymm11, byte ptr [rsi + 2]
    vpbroadcastb    ymm12, byte ptr [rsi + 3]
    vpmovsxbw       ymm9, xmm9
    vpmovsxbw       ymm10, xmm10
    vpmovsxbw       ymm11, xmm11
    vpmovsxbw       ymm12, xmm12
    vpmullw         ymm9, ymm9, ymm8
    vpmullw         ymm10, ymm10, ymm8
    vpmullw         ymm11, ymm11, ymm8
    vpmullw         ymm12, ymm12, ymm8
    vpmovsxwd       ymm9, xmm9
    vpmovsxwd       ymm10, xmm10
    vpmovsxwd       ymm11, xmm11
    vpmovsxwd       ymm12, xmm12
    vpaddd          ymm0, ymm0, ymm9
    vpaddd          ymm1, ymm1, ymm10
    vpaddd          ymm2, ymm2, ymm11
    vpaddd          ymm3, ymm3, ymm12
    vpbroadcastb    ymm9, byte ptr [rsi + 4]
    vpbroadcastb    ymm10, byte ptr [rsi + 5]
    vpbroadcastb    ymm11, byte ptr [rsi + 6]
    vpbroadcastb    ymm12, byte ptr [rsi + 7]
    vpmovsxbw       ymm9, xmm9
    vpmovsxbw       ymm10, xmm10
    vpmovsxbw       ymm11, xmm11
    vpmovsxbw       ymm12, xmm12
    vpmullw         ymm9, ymm9, ymm8
    vpmullw         ymm10, ymm10, ymm8
    vpmullw         ymm11, ymm11, ymm8
    vpmullw         ymm12, ymm12, ymm8
    vpmovsxwd       ymm9, xmm9
    vpmovsxwd       ymm10, xmm10
    vpmovsxwd       ymm11, xmm11
    vpmovsxwd       ymm12, xmm12
    vpaddd          ymm4, ymm4, ymm9
    vpaddd          ymm5, ymm5, ymm10
    vpaddd          ymm6, ymm6, ymm11
    vpaddd          ymm7, ymm7, ymm12
    add rsi, 8
    add rdi, 8
    dec rdx
    jnz 1b
    jmp store_sse

store_sse:
    vmovdqu [rcx], ymm0
    vmovdqu [rcx+32], ymm1
    vmovdqu [rcx+64], ymm2
    vmovdqu [rcx+96], ymm3
    vmovdqu [rcx+128], ymm4
    vmovdqu [rcx+160], ymm5
    vmovdqu [rcx+192], ymm6
    vmovdqu [rcx+224], ymm7
    vzeroupper
    ret
.section .note.GNU-stack,"",@progbits
