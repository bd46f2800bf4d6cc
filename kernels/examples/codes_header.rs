//! Prints `codes.cuh` (the op-code enums of `src/codes.rs` as C++), for compiling a .cu
//! file outside cargo: kernels/tools/check-ptx.sh does.

fn main() {
    print!("{}", mamba_kernels::codes::cuda_header());
}
