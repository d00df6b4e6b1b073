// the f32 fma 8x8 inner loop (tract-linalg fma_mmm_f32_8x8 shape), for the same MAC count
.intel_syntax noprefix
.text
.globl kern_f32
kern_f32:
    vxorps ymm0,ymm0,ymm0
    vxorps ymm1,ymm1,ymm1
    vxorps ymm2,ymm2,ymm2
    vxorps ymm3,ymm3,ymm3
    vxorps ymm4,ymm4,ymm4
    vxorps ymm5,ymm5,ymm5
    vxorps ymm6,ymm6,ymm6
    vxorps ymm7,ymm7,ymm7
1:
    vmovaps ymm8, [rdi]
    vbroadcastss ymm9, [rsi]
    vfmadd231ps ymm0, ymm8, ymm9
    vbroadcastss ymm10, [rsi+4]
    vfmadd231ps ymm1, ymm8, ymm10
    vbroadcastss ymm11, [rsi+8]
    vfmadd231ps ymm2, ymm8, ymm11
    vbroadcastss ymm12, [rsi+12]
    vfmadd231ps ymm3, ymm8, ymm12
    vbroadcastss ymm9, [rsi+16]
    vfmadd231ps ymm4, ymm8, ymm9
    vbroadcastss ymm10, [rsi+20]
    vfmadd231ps ymm5, ymm8, ymm10
    vbroadcastss ymm11, [rsi+24]
    vfmadd231ps ymm6, ymm8, ymm11
    vbroadcastss ymm12, [rsi+28]
    vfmadd231ps ymm7, ymm8, ymm12
    add rdi, 32
    add rsi, 32
    dec rdx
    jnz 1b
    vmovups [rcx], ymm0
    vzeroupper
    ret
.section .note.GNU-stack,"",@progbits
