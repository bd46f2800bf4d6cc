//! The caching allocator. `cuMemAlloc`/`cuMemFree` cost tens of microseconds and
//! synchronise the device, and a training step allocates the same few hundred sizes
//! every time, so freed blocks go to a free list keyed by their (rounded) size and the
//! next request of that size takes one back.
//!
//! Rounding: up to 1 MiB, to a multiple of 512 B; above, to a multiple of 2 MiB. A block
//! is handed out whole; nothing is split or merged, so the cache can only hold memory,
//! never fragment a block. On out-of-memory the free lists are returned to the driver
//! and the allocation tried once more.
//!
//! Reuse is safe without events because the engine launches everything on one stream:
//! a kernel that still reads a freed block runs before any later kernel that writes its
//! new owner. The ledger counts tensor bytes (what is live); `reserved()` here counts
//! what the driver has given us (live + cached).

use mamba_kernels::cust::{
    error::{CudaError, CudaResult},
    memory::{cuda_free, cuda_malloc, DevicePointer},
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const SMALL: usize = 1 << 20;

/// Bytes rounded up to the block size class that serves them.
pub fn block_size(bytes: usize) -> usize {
    let bytes = bytes.max(1);
    if bytes <= SMALL {
        bytes.next_multiple_of(512)
    } else {
        bytes.next_multiple_of(2 << 20)
    }
}

/// A device allocation of `block` bytes, returned to the cache when dropped.
#[derive(Debug)]
pub struct Block {
    pub ptr: DevicePointer<u8>,
    pub block: usize,
}

// SAFETY: a device address is plain data; the driver calls it is used with are thread-safe.
unsafe impl Send for Block {}
unsafe impl Sync for Block {}

struct Cache {
    /// Free blocks by size, as raw device addresses.
    free: Mutex<HashMap<usize, Vec<u64>>>,
    reserved: AtomicUsize,
    cached: AtomicUsize,
}

static CACHE: std::sync::LazyLock<Cache> = std::sync::LazyLock::new(|| Cache {
    free: Mutex::new(HashMap::new()),
    reserved: AtomicUsize::new(0),
    cached: AtomicUsize::new(0),
});

/// A block of at least `bytes` bytes (contents undefined).
pub fn alloc(bytes: usize) -> CudaResult<Block> {
    let block = block_size(bytes);
    let reused = CACHE.free.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&block).and_then(|v| v.pop());
    if let Some(raw) = reused {
        CACHE.cached.fetch_sub(block, Ordering::Relaxed);
        return Ok(Block { ptr: DevicePointer::from_raw(raw), block });
    }
    // SAFETY: a fresh allocation of `block` bytes; freed in `release` or `empty_cache`.
    let ptr = match unsafe { cuda_malloc::<u8>(block) } {
        Ok(p) => p,
        Err(CudaError::OutOfMemory) => {
            empty_cache()?;
            unsafe { cuda_malloc::<u8>(block)? }
        }
        Err(e) => return Err(e),
    };
    CACHE.reserved.fetch_add(block, Ordering::Relaxed);
    Ok(Block { ptr, block })
}

impl Drop for Block {
    fn drop(&mut self) {
        CACHE.cached.fetch_add(self.block, Ordering::Relaxed);
        CACHE.free.lock().unwrap_or_else(|e| e.into_inner()).entry(self.block).or_default().push(self.ptr.as_raw());
    }
}

/// Give every cached block back to the driver (after the stream has finished with them).
pub fn empty_cache() -> CudaResult<()> {
    super::gpu_raw()?.stream.synchronize()?;
    let mut free = CACHE.free.lock().unwrap_or_else(|e| e.into_inner());
    for (block, ptrs) in free.drain() {
        for raw in ptrs {
            // SAFETY: `raw` came from cuda_malloc and no Block owns it any more.
            unsafe { cuda_free(DevicePointer::<u8>::from_raw(raw))? };
            CACHE.reserved.fetch_sub(block, Ordering::Relaxed);
            CACHE.cached.fetch_sub(block, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Bytes obtained from the driver (live blocks plus cached ones).
pub fn reserved() -> usize {
    CACHE.reserved.load(Ordering::Relaxed)
}

/// Bytes sitting in the free lists.
pub fn cached() -> usize {
    CACHE.cached.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::block_size;

    #[test]
    fn sizes_round_to_their_class() {
        assert_eq!(block_size(0), 512);
        assert_eq!(block_size(513), 1024);
        assert_eq!(block_size(1 << 20), 1 << 20);
        assert_eq!(block_size((1 << 20) + 1), 2 << 20);
        assert_eq!(block_size(5 << 20), 6 << 20);
    }
}
