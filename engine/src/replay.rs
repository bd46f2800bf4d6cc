//! Record a fixed sequence of launches once, then replay it: a CUDA graph on the GPU (one
//! driver call queues the whole sequence, instead of one call per launch), nothing on the CPU,
//! where there is no launch cost to save and the work simply runs again.
//!
//! What a recording touches must stay allocated at the same place while it is replayed: record
//! only work on buffers that live as long as the [`Recorded`] (see `cuda/graph.rs`).

use crate::{Device, Result};

/// A recorded sequence of launches (on the GPU).
pub struct Recorded {
    #[cfg(feature = "cuda")]
    graph: crate::cuda::graph::Graph,
}

impl Recorded {
    /// On the GPU, record the launches `work` makes (without running them) and return the
    /// recording; on the CPU, `None`: run `work` itself each time instead.
    pub fn capture(device: Device, work: impl FnOnce() -> Result<()>) -> Result<Option<Recorded>> {
        match device {
            Device::Cpu => Ok(None),
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
