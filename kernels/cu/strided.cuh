// A strided view passed to kernels by value: the CUDA side of `launch::Strided`
// (kernels/src/launch/copy.rs, same field order and sizes: 112 bytes).
//
// Element [i0, .., i_{rank-1}] of the view lives at offset + sum_d i_d * strides[d] (in
// elements; a stride of 0 repeats an element: broadcasting). Axes 0..rank are used, axis 0
// outermost; the host has merged axes that are contiguous with each other and dropped
// size-1 axes, so rank is usually 1 or 2.
#pragma once

#define STRIDED_MAX_RANK 6

struct Strided {
    int rank;
    long long offset;
    long long shape[STRIDED_MAX_RANK];
    long long strides[STRIDED_MAX_RANK];
};

// Offset of the i-th element (row-major) of `l`. `I` is the index type: `unsigned` when the
// caller knows the view has fewer than 2^32 elements (32-bit division is several times
// cheaper than 64-bit), else `unsigned long long`. The loop is unrolled with constant axis
// numbers so `l` stays in the parameter space (a dynamic index would copy it to the stack).
// Axis 0 needs no division: i < shape[0] once the inner axes are peeled off.
template <typename I>
__device__ __forceinline__ long long strided_offset(const Strided& l, I i) {
    long long off = l.offset;
#pragma unroll
    for (int d = STRIDED_MAX_RANK - 1; d >= 1; --d) {
        if (d < l.rank) {
            const I s = (I)l.shape[d];
            const I q = i / s;
            off += (long long)(i - q * s) * l.strides[d];
            i = q;
        }
    }
    if (l.rank > 0) off += (long long)i * l.strides[0];
    return off;
}
