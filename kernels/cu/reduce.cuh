// Warp and block reductions shared by the row-wise kernels (norm.cu, softmax.cu).
// A block reduction returns its result to every thread of the block.
#pragma once

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum of `v` over the block (blockDim.x a multiple of 32, at most 1024), returned to every
// thread. Safe to call repeatedly: a second call writes `partial` only after every thread has
// passed the first call's last barrier, and `result` only after all have read it.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[32];
    __shared__ float result;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)(blockDim.x >> 5) ? partial[lane] : 0.0f;
        v = warp_sum(v);
        if (lane == 0) result = v;
    }
    __syncthreads();
    return result;
}

// Max of `v` over the block; same contract as block_sum.
__device__ __forceinline__ float block_max(float v) {
    __shared__ float partial[32];
    __shared__ float result;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_max(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)(blockDim.x >> 5) ? partial[lane] : -INFINITY;
        v = warp_max(v);
        if (lane == 0) result = v;
    }
    __syncthreads();
    return result;
}
