//! Record a fixed sequence of launches once, then replay it: a CUDA graph on the GPU (one
//! driver call queues the whole sequence, instead of one call per launch), nothing on the CPU,
//! where there is no launch cost to save and the work simply runs again.
//!
//! What a recording touches must stay allocated at the same place while it is replayed: record
//! only work on buffers that live as long as the [`Recorded`] (see `cuda/graph.rs`).

use crate::{Device, Result, Tensor};

/// A recorded sequence of launches (on the GPU).
pub struct Recorded {
    #[cfg(feature = "cuda")]
    graph: crate::cuda::graph::Graph,
}

impl Recorded {
    /// On the GPU, record the launches `work` makes (without running them) and return the
    /// recording; on the CPU, and on the GPU while a profiling session times every launch
    /// (which a recording would hide), `None`: `work` has not run; run it each time instead.
    pub fn capture(device: Device, work: impl FnOnce() -> Result<()>) -> Result<Option<Recorded>> {
        match device {
            Device::Cpu => Ok(None),
            #[cfg(feature = "cuda")]
            Device::Cuda if crate::cuda::gpu("cuda graph")?.profiling() => Ok(None),
            #[cfg(feature = "cuda")]
            Device::Cuda => Ok(Some(Recorded { graph: crate::cuda::graph::Graph::capture(work)? })),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda => {
                drop(work);
                Err(crate::dispatch::no_cuda("cuda graph"))
            }
        }
    }

    /// Queue the recorded launches once more.
    pub fn replay(&self) -> Result<()> {
        #[cfg(feature = "cuda")]
        return self.graph.launch();
        #[cfg(not(feature = "cuda"))]
        Ok(())
    }
}

/// A small f32 tensor that the host writes or reads once per replay: on the GPU through
/// page-locked host memory, so that the copy itself can be one of the recorded launches (a
/// copy from ordinary host memory cannot be recorded, and costs a staging copy besides); on
/// the CPU the tensor itself.
///
/// Per token a decoder `set`s the ids, replays (`upload`, the token's kernels, `download`,
/// all recorded), then `get`s the logits, which waits for the replay.
pub struct HostLink {
    tensor: Tensor,
    #[cfg(feature = "cuda")]
    pinned: Option<std::sync::Mutex<mamba_kernels::cust::memory::LockedBuffer<f32>>>,
}

impl HostLink {
    /// A link to `tensor` (contiguous; f32 on the GPU).
    pub fn new(tensor: &Tensor) -> Result<HostLink> {
        if !tensor.is_contiguous() {
            return crate::error::invalid("host link", "the tensor must be contiguous");
        }
        #[cfg(feature = "cuda")]
        if tensor.device() == Device::Cuda {
            if tensor.dtype() != crate::DType::F32 {
                return Err(crate::cuda::f32_only("host link", tensor.dtype()));
            }
            let op = "host link";
            let pinned = mamba_kernels::cust::memory::LockedBuffer::new(&0.0f32, tensor.numel())
                .map_err(crate::cuda::err(op))?;
            return Ok(HostLink { tensor: tensor.clone(), pinned: Some(std::sync::Mutex::new(pinned)) });
        }
        Ok(HostLink {
            tensor: tensor.clone(),
            #[cfg(feature = "cuda")]
            pinned: None,
        })
    }

    /// Write the host side (on the CPU: the tensor), after any copy still queued (waits for
    /// the GPU: nothing is in flight after the previous `get`, so this costs nothing then).
    pub fn set(&self, values: &[f64]) -> Result<()> {
        #[cfg(feature = "cuda")]
        if let Some(pinned) = &self.pinned {
            crate::cuda::synchronize()?;
            let mut host = pinned.lock().unwrap_or_else(|e| e.into_inner());
            if values.len() != host.len() {
                let why = format!("{} values for a link of {}", values.len(), host.len());
                return crate::error::invalid("host link", why);
            }
            host.iter_mut().zip(values).for_each(|(h, &v)| *h = v as f32);
            return Ok(());
        }
        self.tensor.write_values(values)
    }

    /// Queue the copy host -> tensor (recordable); nothing on the CPU.
    pub fn upload(&self) -> Result<()> {
        self.copy(true)
    }

    /// Queue the copy tensor -> host (recordable); nothing on the CPU.
    pub fn download(&self) -> Result<()> {
        self.copy(false)
    }

    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    fn copy(&self, to_device: bool) -> Result<()> {
        #[cfg(feature = "cuda")]
        if let Some(pinned) = &self.pinned {
            let mut host = pinned.lock().unwrap_or_else(|e| e.into_inner());
            return crate::cuda::copy_pinned(&self.tensor, &mut host, to_device);
        }
        Ok(())
    }

    /// The host side after everything queued so far (waits for the GPU).
    pub fn get(&self) -> Result<Vec<f64>> {
        #[cfg(feature = "cuda")]
        if let Some(pinned) = &self.pinned {
            crate::cuda::synchronize()?;
            let host = pinned.lock().unwrap_or_else(|e| e.into_inner());
            return Ok(host.iter().map(|&v| v as f64).collect());
        }
        self.tensor.to_vec_f64()
    }
}

#[cfg(feature = "cuda")]
impl Drop for HostLink {
    /// A copy still queued may use the page-locked buffer: wait for it before it is freed.
    fn drop(&mut self) {
        if self.pinned.is_some() {
            let _ = crate::cuda::synchronize();
        }
    }
}
