// kern_old: the loop with VEX loads (vmovq); kern_new: the patched loop, two K steps per vpmaddwd
.intel_syntax noprefix
.text
// rdi = A (8 rows per k), rsi = B (8 cols per k), rdx = k, rcx = out (8 columns of 8 i32)
.globl kern_old
kern_old:
    vpxor ymm0,ymm0,ymm0
    vpxor ymm1,ymm1,ymm1
    vpxor ymm2,ymm2,ymm2
    vpxor ymm3,ymm3,ymm3
    vpxor ymm4,ymm4,ymm4
    vpxor ymm5,ymm5,ymm5
    vpxor ymm6,ymm6,ymm6
    vpxor ymm7,ymm7,ymm7
1:
    vmovq           xmm8, qword ptr [rdi]
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
    jmp store

.globl kern_new
kern_new:
    vpxor ymm0,ymm0,ymm0
    vpxor ymm1,ymm1,ymm1
    vpxor ymm2,ymm2,ymm2
    vpxor ymm3,ymm3,ymm3
    vpxor ymm4,ymm4,ymm4
    vpxor ymm5,ymm5,ymm5
    vpxor ymm6,ymm6,ymm6
    vpxor ymm7,ymm7,ymm7
    mov             r8, 0x0b030a0209010800
    vmovq           xmm15, r8
    mov             r8, 0x0f070e060d050c04
    vpinsrq         xmm15, xmm15, r8, 1
    mov             r8, rdx
    shr             r8, 1
    jz              3f
2:
    vmovdqu         xmm8, xmmword ptr [rdi]
    vpshufb         xmm8, xmm8, xmm15
    vpmovsxbw       ymm8, xmm8                 // rows: (a_r,k ; a_r,k+1) i16 pairs
    vmovdqu         xmm9, xmmword ptr [rsi]
    vpshufb         xmm9, xmm9, xmm15
    vpmovsxbw       ymm9, xmm9                 // cols: (b_c,k ; b_c,k+1) i16 pairs
    vperm2i128      ymm10, ymm9, ymm9, 0x00    // cols 0-3 in both lanes
    vperm2i128      ymm9, ymm9, ymm9, 0x11     // cols 4-7 in both lanes
    vpshufd         ymm11, ymm10, 0x00
    vpshufd         ymm12, ymm10, 0x55
    vpshufd         ymm13, ymm10, 0xaa
    vpshufd         ymm14, ymm10, 0xff
    vpmaddwd        ymm11, ymm11, ymm8
    vpmaddwd        ymm12, ymm12, ymm8
    vpmaddwd        ymm13, ymm13, ymm8
    vpmaddwd        ymm14, ymm14, ymm8
    vpaddd          ymm0, ymm0, ymm11
    vpaddd          ymm1, ymm1, ymm12
    vpaddd          ymm2, ymm2, ymm13
    vpaddd          ymm3, ymm3, ymm14
    vpshufd         ymm11, ymm9, 0x00
    vpshufd         ymm12, ymm9, 0x55
    vpshufd         ymm13, ymm9, 0xaa
    vpshufd         ymm14, ymm9, 0xff
    vpmaddwd        ymm11, ymm11, ymm8
    vpmaddwd        ymm12, ymm12, ymm8
    vpmaddwd        ymm13, ymm13, ymm8
    vpmaddwd        ymm14, ymm14, ymm8
    vpaddd          ymm4, ymm4, ymm11
    vpaddd          ymm5, ymm5, ymm12
    vpaddd          ymm6, ymm6, ymm13
    vpaddd          ymm7, ymm7, ymm14
    add             rdi, 16
    add             rsi, 16
    dec             r8
    jnz             2b
3:
    and             rdx, 1
    jz              store
4:
    vmovq           xmm8, qword ptr [rdi]
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
    jnz 4b
    jmp store
store:
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
