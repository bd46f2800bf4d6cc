// The PTX of the tensor-core kernels (matmul_bf16.cu, matmul_tf32.cu, ssd.cu) and of the scan's
// copies (scan.cu): one small wrapper
// per instruction. kernels/tools/emu/cuda_emu.h and mma_emu.h have CPU twins of every one, so
// the emulators run the kernels' own logic (under CUDA_EMU this header is empty).
#pragma once
#ifndef CUDA_EMU
// The block's dynamic shared memory, and a pointer into it as a shared-space address.
__device__ __forceinline__ unsigned char* dyn_smem() {
    extern __shared__ __align__(128) unsigned char smem_[];
    return smem_;
}
__device__ __forceinline__ unsigned smem_addr(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
// 16 bytes global -> shared, bypassing L1; only the first src_bytes (0..16) are read, the
// rest of the 16 are zero-filled.
__device__ __forceinline__ void cp_async_16(unsigned dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
// 4 bytes global -> shared through L1 (the scan's per-step values; only 4-byte aligned);
// src_bytes 0 reads nothing and zero-fills.
__device__ __forceinline__ void cp_async_4(unsigned dst, const void* src, int src_bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Wait until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// Four 8 x 8 b16 matrices: lanes 8j..8j+7 give the row addresses of matrix j (16 bytes
// each); lane l gets in r[j] the elements (l / 4, 2 (l % 4) + {0, 1}) of matrix j, or with
// .trans those of its transpose, (2 (l % 4) + {0, 1}, l / 4) of the stored matrix.
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
// c (16 x 8, f32) += a (16 x 16) b (16 x 8), bf16 in: mma.sync m16n8k16 with the PTX ISA's
// fragments (lane l, g = l / 4, t = l % 4; each register holds two bf16, the lower index in
// the low half): a[0] (g, 2t..2t+1), a[1] (g + 8, 2t..), a[2] (g, 2t + 8..), a[3] (g + 8,
// 2t + 8..); b0 (k 2t..2t+1, n g), b1 (k 2t + 8.., n g); c[0..1] (g, 2t..), c[2..3] (g + 8, 2t..).
__device__ __forceinline__ void mma_bf16(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// Two f32 rounded to bf16 (nearest, ties to even), lo in the low half.
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
// 32 bits from shared memory at a shared-space address.
__device__ __forceinline__ float lds_f32(unsigned addr) {
    float v;
    asm volatile("ld.shared.f32 %0, [%1];\n" : "=f"(v) : "r"(addr));
    return v;
}
// a rounded to tf32 (10 mantissa bits, to nearest, ties away from zero), as an f32.
__device__ __forceinline__ float tf32_round(float a) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(a));
    return __uint_as_float(r);
}
// (c0..c3) += A (16 x 8) B (8 x 8), tf32 in, f32 accumulation (fragments above).
__device__ __forceinline__ void mma_tf32(float& c0, float& c1, float& c2, float& c3, float a0, float a1, float a2,
                                         float a3, float b0, float b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(c0), "+f"(c1), "+f"(c2), "+f"(c3)
        : "r"(__float_as_uint(a0)), "r"(__float_as_uint(a1)), "r"(__float_as_uint(a2)), "r"(__float_as_uint(a3)),
          "r"(__float_as_uint(b0)), "r"(__float_as_uint(b1)));
}
__device__ __forceinline__ float bits_f32(unsigned u) { return __uint_as_float(u); }
#endif
