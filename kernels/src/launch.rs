//! Typed launchers: one Rust function per kernel, checking sizes before launching.

use crate::ptx;
use cust::error::CudaResult;
use cust::prelude::*;

/// Threads per block for the 1-D elementwise kernels.
const BLOCK: u32 = 256;

/// A CUDA context on device 0 with the kernel modules loaded and one stream.
pub struct Gpu {
    pub stream: Stream,
    elementwise: Module,
    matmul: Module,
    _context: Context,
}

/// Blocks for `n` elements with a grid-stride loop: enough to fill the GPU, no more.
fn grid_for(n: usize) -> u32 {
    (n.div_ceil(BLOCK as usize)).clamp(1, 132 * 16) as u32
}

impl Gpu {
    pub fn new() -> CudaResult<Gpu> {
        let context = cust::quick_init()?;
        let elementwise = Module::from_ptx(ptx::ELEMENTWISE, &[])?;
        let matmul = Module::from_ptx(ptx::MATMUL, &[])?;
        let stream = Stream::new(StreamFlags::NON_BLOCKING, None)?;
        Ok(Gpu { stream, elementwise, matmul, _context: context })
    }

    /// `out[i] = op(x[i])` — twin of `cpu::elementwise::unary` (op codes in the same order).
    pub fn unary_f32(
        &self,
        op: i32,
        p0: f32,
        p1: f32,
        x: &DeviceBuffer<f32>,
        out: &mut DeviceBuffer<f32>,
    ) -> CudaResult<()> {
        assert_eq!(x.len(), out.len(), "unary_f32: input and output lengths differ");
        let f = self.elementwise.get_function("unary_f32")?;
        let (n, stream) = (x.len(), &self.stream);
        unsafe {
            launch!(f<<<grid_for(n), BLOCK, 0, stream>>>(out.as_device_ptr(), x.as_device_ptr(), op, p0, p1, n as i64))
        }
    }

    /// `out[i] = a[i] op b[i]` — twin of `cpu::elementwise::binary` on contiguous operands.
    pub fn binary_f32(
        &self,
        op: i32,
        a: &DeviceBuffer<f32>,
        b: &DeviceBuffer<f32>,
        out: &mut DeviceBuffer<f32>,
    ) -> CudaResult<()> {
        assert!(a.len() == out.len() && b.len() == out.len(), "binary_f32: operand lengths differ");
        let f = self.elementwise.get_function("binary_f32")?;
        let (n, stream) = (out.len(), &self.stream);
        unsafe {
            launch!(f<<<grid_for(n), BLOCK, 0, stream>>>(out.as_device_ptr(), a.as_device_ptr(), b.as_device_ptr(), op, n as i64))
        }
    }

    /// `c = a b` for row-major contiguous `a (m, k)`, `b (k, n)`, `c (m, n)` — twin of
    /// `cpu::matmul::matmul` with batch 1 (kernels/cu/matmul.cu has the tiling).
    pub fn matmul_f32(
        &self,
        a: &DeviceBuffer<f32>,
        b: &DeviceBuffer<f32>,
        c: &mut DeviceBuffer<f32>,
        m: usize,
        n: usize,
        k: usize,
    ) -> CudaResult<()> {
        assert!(
            a.len() == m * k && b.len() == k * n && c.len() == m * n,
            "matmul_f32: buffer sizes do not match (m, n, k)"
        );
        let f = self.matmul.get_function("matmul_f32")?;
        let grid = (n.div_ceil(128) as u32, m.div_ceil(128) as u32, 1);
        let stream = &self.stream;
        unsafe {
            launch!(f<<<grid, 256, 0, stream>>>(a.as_device_ptr(), b.as_device_ptr(), c.as_device_ptr(), m as i32, n as i32, k as i32))
        }
    }
}
