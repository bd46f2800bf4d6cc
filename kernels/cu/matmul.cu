// Matrix product C = A B (f32, row-major, contiguous): the CUDA twin of
// engine/src/cpu/matmul.rs (`matmul`, batch 1). No cuBLAS: a classic tiled SGEMM.
//
// Napkin math at M = N = K = 4096: 2 M N K = 137.4 GFLOP; the H100's non-tensor f32 rate
// (cuBLAS reaches 51.1 TFLOP/s) makes it compute bound: ~2.7 ms at cuBLAS speed, while the
// bytes (3 x 64 MiB once) would take ~70 us.
//
// Version 1 (this one): each 256-thread block computes a 128 x 128 tile of C, marching
// over K in steps of 8. Per step the block stages A's 128 x 8 slice (transposed, so a
// thread's 8 rows are contiguous) and B's 8 x 128 slice in shared memory with one 16-byte
// load per thread each; every thread then accumulates an 8 x 8 sub-tile of C in registers
// from 8 + 8 values per k (64 FMAs per 16 shared-memory reads). Edges are handled by
// bounds-checked scalar loads and stores, so any M, N, K work.
// Launch: grid (ceil(N/128), ceil(M/128)), block 256.

#define BM 128
#define BN 128
#define BK 8
#define TM 8
#define TN 8

extern "C" __global__ void __launch_bounds__(256) matmul_f32(const float* __restrict__ A, const float* __restrict__ B,
                                                             float* __restrict__ C, int M, int N, int K) {
    __shared__ float As[BK * BM];  // As[k][m]: A's tile, transposed
    __shared__ float Bs[BK * BN];  // Bs[k][n]
    const int tid = threadIdx.x;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const int thread_row = tid / (BN / TN), thread_col = tid % (BN / TN);  // 16 x 16 threads
    // Which 4 consecutive elements this thread stages: A tile 128 x 8 = 256 float4, B tile 8 x 128 = 256 float4.
    const int a_row = tid / (BK / 4), a_col = (tid % (BK / 4)) * 4;
    const int b_row = tid / (BN / 4), b_col = (tid % (BN / 4)) * 4;
    const bool a_vec = (K % 4) == 0, b_vec = (N % 4) == 0;  // 16-byte aligned rows

    float acc[TM][TN] = {};
    float reg_m[TM], reg_n[TN];
    for (int k0 = 0; k0 < K; k0 += BK) {
        {
            const int r = row0 + a_row, c = k0 + a_col;
            float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
            if (a_vec && r < M && c + 3 < K) {
                v = *reinterpret_cast<const float4*>(&A[(long long)r * K + c]);
            } else if (r < M) {
                const float* p = &A[(long long)r * K];
                v.x = c < K ? p[c] : 0.f;
                v.y = c + 1 < K ? p[c + 1] : 0.f;
                v.z = c + 2 < K ? p[c + 2] : 0.f;
                v.w = c + 3 < K ? p[c + 3] : 0.f;
            }
            As[(a_col + 0) * BM + a_row] = v.x;
            As[(a_col + 1) * BM + a_row] = v.y;
            As[(a_col + 2) * BM + a_row] = v.z;
            As[(a_col + 3) * BM + a_row] = v.w;
        }
        {
            const int r = k0 + b_row, c = col0 + b_col;
            float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
            if (b_vec && r < K && c + 3 < N) {
                v = *reinterpret_cast<const float4*>(&B[(long long)r * N + c]);
            } else if (r < K) {
                const float* p = &B[(long long)r * N];
                v.x = c < N ? p[c] : 0.f;
                v.y = c + 1 < N ? p[c + 1] : 0.f;
                v.z = c + 2 < N ? p[c + 2] : 0.f;
                v.w = c + 3 < N ? p[c + 3] : 0.f;
            }
            *reinterpret_cast<float4*>(&Bs[b_row * BN + b_col]) = v;
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BK; ++k) {
#pragma unroll
            for (int i = 0; i < TM; ++i) reg_m[i] = As[k * BM + thread_row * TM + i];
#pragma unroll
            for (int j = 0; j < TN; ++j) reg_n[j] = Bs[k * BN + thread_col * TN + j];
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(reg_m[i], reg_n[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int r = row0 + thread_row * TM + i;
        if (r >= M) break;
#pragma unroll
        for (int j = 0; j < TN; j += 4) {
            const int c = col0 + thread_col * TN + j;
            float* p = &C[(long long)r * N + c];
            if (b_vec && c + 3 < N) {
                *reinterpret_cast<float4*>(p) = make_float4(acc[i][j], acc[i][j + 1], acc[i][j + 2], acc[i][j + 3]);
            } else {
                for (int q = 0; q < 4 && c + q < N; ++q) p[q] = acc[i][j + q];
            }
        }
    }
}
