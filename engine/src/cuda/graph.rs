//! CUDA graphs: record a fixed sequence of launches once, replay it with one driver call.
//! A token of generation is ~75 launches that each cost the CPU a few microseconds to queue;
//! replayed as a graph they cost one launch (the driver hands the whole chain to the GPU).
//!
//! A graph keeps the device addresses it was recorded with, so everything it touches must
//! stay allocated, at the same place, for as long as the graph is replayed: the caller
//! records only launches on buffers it owns for the graph's lifetime (the decoder's weights,
//! states and scratch), and changes inputs by writing into those buffers between replays.
//! cust 0.3 has no graph API; these are the driver's own calls through its raw bindings.

use super::{err, gpu};
use crate::error::{Error, Result};
use crate::Device;
use mamba_kernels::cust::sys as cu;

const OP: &str = "cuda graph";

/// A recorded and instantiated sequence of launches on the engine's stream.
pub struct Graph {
    graph: cu::CUgraph,
    exec: cu::CUgraphExec,
}

fn check(what: &str, r: cu::CUresult) -> Result<()> {
    if r == cu::cudaError_enum::CUDA_SUCCESS {
        return Ok(());
    }
    Err(Error::Device { op: OP, device: Device::Cuda, msg: format!("{what} failed: {r:?}") })
}

impl Graph {
    /// Record every launch `record` makes on the engine's stream (nothing runs), then
    /// instantiate the graph. `record` must not synchronise or read back from the device.
    pub fn capture(record: impl FnOnce() -> Result<()>) -> Result<Graph> {
        let stream = gpu(OP)?.stream.as_inner();
        let mode = cu::CUstreamCaptureMode_enum::CU_STREAM_CAPTURE_MODE_RELAXED;
        // SAFETY: the engine's stream is live for the process; the capture ends below, or in
        // the guard's drop if `record` panics (else the stream would stay capturing).
        check("cuStreamBeginCapture", unsafe { cu::cuStreamBeginCapture_v2(stream, mode) })?;
        let mut capturing = Capturing { stream, ended: false };
        let recorded = record();
        capturing.ended = true;
        let mut graph = std::ptr::null_mut();
        // SAFETY: ends the capture begun above; `graph` receives a new graph (or stays null).
        let ended = check("cuStreamEndCapture", unsafe { cu::cuStreamEndCapture(stream, &mut graph) });
        if let Err(e) = recorded.and(ended) {
            destroy(graph);
            return Err(e);
        }
        let mut exec = std::ptr::null_mut();
        // SAFETY: instantiates the valid graph made above.
        if let Err(e) = check("cuGraphInstantiate", unsafe { cu::cuGraphInstantiateWithFlags(&mut exec, graph, 0) }) {
            destroy(graph);
            return Err(e);
        }
        Ok(Graph { graph, exec })
    }

    /// Queue the whole recorded sequence on the engine's stream.
    pub fn launch(&self) -> Result<()> {
        let stream = gpu(OP)?.stream.as_inner();
        // SAFETY: `exec` is a live instantiated graph; the buffers it uses outlive it (module docs).
        check("cuGraphLaunch", unsafe { cu::cuGraphLaunch(self.exec, stream) })
    }
}

/// A graph made by cuStreamEndCapture and owned by no one else, destroyed (if any).
fn destroy(g: cu::CUgraph) {
    if !g.is_null() {
        // SAFETY: see above; destroyed once.
        unsafe { cu::cuGraphDestroy(g) };
    }
}

/// Ends a capture that `record` left by panicking.
struct Capturing {
    stream: cu::CUstream,
    ended: bool,
}

impl Drop for Capturing {
    fn drop(&mut self) {
        if !self.ended {
            let mut graph = std::ptr::null_mut();
            // SAFETY: the capture begun in `Graph::capture` on this stream is still open.
            unsafe { cu::cuStreamEndCapture(self.stream, &mut graph) };
            destroy(graph);
        }
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // A replay may still run: wait for it before freeing what it uses.
        let _ = gpu(OP).map(|g| g.stream.synchronize().map_err(err(OP)));
        // SAFETY: both were made in `capture` and are destroyed once, here.
        unsafe {
            cu::cuGraphExecDestroy(self.exec);
            cu::cuGraphDestroy(self.graph);
        }
    }
}
